//! iommu-server's duties on the fault path, as one piece (docs/faults.md).
//!
//! prq-server owns the event and PRI queues (memory, page 1, interrupts)
//! and ranks above this server: it never sends here. This server:
//! - programs the queues' base registers (page 0) from prq-server's
//!   `queue_layout` and enables them (CR0.EVTQEN / PRIQEN, IRQ_CTRL);
//! - routes faults: attach / replace of the stream's own context and the
//!   first bind of a PASID call `set_route` (the owner is the caller; a
//!   replace answers the old domain's groups INVALID in prq-server);
//! - detach and the last unbind call `drain` and issue what it returns
//!   before replying (unbind replies `Drained` only after that);
//! - on prq-server's notification pulls `take_responses` and issues
//!   PRI_RESP / RESUME, one CMD_SYNC per `MAX_RESPONSES` commands,
//!   acknowledging each hand-over with its `seq` on the next pull.
//!
//! The link ([`FaultLink`]) is a field of [`IommuServer`]; each step is
//! called by the server at the one place its edge happens: `set_route` in
//! attach / replace and the first bind, `drain` in `unbind_idx` (the last
//! unbind, and so detach, the defunct-PASID drain, reclaim and a
//! pasid-alloc restart), the stream's own drain and STALL_TERM when its
//! STE goes abort (detach, reclaim). [`crate::serve`] connects the link
//! when the task has a `prq-server` slot; without one every step is a
//! no-op and the server is the plain server.

use crate::cmdq::Waiter;
use crate::dma::DmaMemory;
use crate::error::Error;
use crate::server::{IommuServer, PageResponse, MAX_RESPONSES};
use iommu_server_api as api;
use prq_server_api::{self as prq, PrqClient};
use smmuv3::regs::{offset, CR0, IRQ_CTRL};
use smmuv3::{Mmio, PriResponse, ResumeAction};
use trace::{events::Iommu, trace};
use userlib::TaskId;

/// The notification prq-server posts when responses wait.
pub const PRQ_RESPONSES_BIT: u32 = 1 << 4;
/// Responses per pull / drain step (the interface's lease maximum).
const BATCH: usize = 64;

/// State of the fault link, a field of [`IommuServer`] (`fault`): which
/// prq-server to ask and the hand-over sequence. Which domains and binds
/// are fault-capable is the server's own knowledge (`Domain::fault_capable`,
/// `GuestContext::record_faults`), not a copy kept here.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultLink {
    /// prq-server as last seen (none: no fault path; every step is a no-op).
    prq: Option<TaskId>,
    /// `seq` of the last hand-over issued (acknowledged on the next pull).
    issued: u32,
    /// Responses issued as PRI_RESP / RESUME, and their CMD_SYNC batches.
    pub responses_issued: u32,
    pub batches: u32,
    /// GERROR.EVENTQ_ABT_ERR acknowledged and reported to prq-server.
    pub event_aborts: u32,
}

impl FaultLink {
    pub const fn new() -> Self {
        Self {
            prq: None,
            issued: 0,
            responses_issued: 0,
            batches: 0,
            event_aborts: 0,
        }
    }

    pub fn present(&self) -> bool {
        self.prq.is_some()
    }
}

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// Connects the fault path when this task has a `prq-server` slot:
    /// remembers it and hands the event and PRI queues over. Returns
    /// whether there is a fault path.
    pub fn connect_faults(&mut self) -> bool {
        // The app's task names say whether a prq-server exists at all;
        // only then is the slot looked up (an app without one makes no
        // extra system call).
        if !self.has_prq_server_task() {
            return false;
        }
        let Some(id) = userlib::sys_lookup_slot("prq-server") else {
            return false;
        };
        self.fault.prq = Some(id);
        match self.enable_fault_queues() {
            Ok(()) => userlib::log!("iommu-server: event and PRI queues handed to prq-server"),
            Err(e) => userlib::log!("iommu-server: prq-server queues not enabled: {:?}", e),
        }
        true
    }

    /// The fault link's state (counters, whether prq-server is there).
    pub fn fault_link(&self) -> &FaultLink {
        &self.fault
    }

    /// Programs EVENTQ_BASE / PRIQ_BASE from prq-server's layout and turns
    /// both queues and their interrupts on (queues off while the bases
    /// change, as the architecture requires).
    fn enable_fault_queues(&mut self) -> Result<(), Error> {
        let Some(prq) = self.fault.prq.map(PrqClient::new) else {
            return Err(Error::Unsupported);
        };
        let l = prq.queue_layout().map_err(|_| Error::Unsupported)?;
        self.fault.prq = Some(prq.task_id());
        let m = &self.smmu.mmio;
        let cr0 = m.read32(offset::CR0);
        let off = cr0 & !(CR0::EVTQEN::SET.value | CR0::PRIQEN::SET.value);
        set_and_wait(m, offset::CR0, offset::CR0ACK, off)?;
        let pri = self.smmu.features.pri;
        if l.eventq_base != 0 {
            m.write64(offset::EVENTQ_BASE, l.eventq_base);
        }
        if pri && l.priq_base != 0 {
            m.write64(offset::PRIQ_BASE, l.priq_base);
        }
        let on =
            off | if l.eventq_base != 0 {
                CR0::EVTQEN::SET.value
            } else {
                0
            } | if pri && l.priq_base != 0 {
                CR0::PRIQEN::SET.value
            } else {
                0
            };
        set_and_wait(m, offset::CR0, offset::CR0ACK, on)?;
        let irq = m.read32(offset::IRQ_CTRL)
            | IRQ_CTRL::EVENTQ_IRQEN::SET.value
            | if pri {
                IRQ_CTRL::PRIQ_IRQEN::SET.value
            } else {
                0
            };
        set_and_wait(m, offset::IRQ_CTRL, offset::IRQ_CTRLACK, irq)
    }

    /// Issues `cmds` (responses from prq-server) as PRI_RESP / RESUME,
    /// one CMD_SYNC per [`MAX_RESPONSES`] commands.
    fn issue_fault_responses(
        &mut self,
        me: TaskId,
        cmds: &[prq::ResponseCmdWire],
    ) -> Result<(), Error> {
        let mut out = [PageResponse::Resume {
            sid: 0,
            stag: 0,
            action: ResumeAction::Term,
        }; BATCH];
        let mut n = 0;
        for w in cmds.iter().take(BATCH) {
            let Some(c) = <prq::ResponseCmd as idl_runtime::Fixed>::from_wire(w) else {
                continue;
            };
            out[n] = page_response(&c);
            n += 1;
        }
        for chunk in out[..n].chunks(MAX_RESPONSES) {
            self.page_response(me, chunk)?;
            self.fault.batches += 1;
        }
        self.fault.responses_issued += n as u32;
        Ok(())
    }

    /// Pulls and issues every queued response (prq-server's notification;
    /// also after a replace, whose new route answered the old domain's
    /// groups).
    pub fn pump_fault_responses(&mut self) {
        let Some(p) = self.fault.prq.map(PrqClient::new) else {
            return;
        };
        self.pump_with(&p);
        // Keep the id the stub refreshed (a restarted prq-server).
        self.fault.prq = Some(p.task_id());
    }

    fn pump_with(&mut self, p: &PrqClient) {
        // Bounded: at most as many pulls as prq-server has group slots.
        for _ in 0..256 {
            let mut buf = [<prq::ResponseCmdWire as zerocopy::FromZeros>::new_zeroed(); BATCH];
            let t = match p.take_responses(self.fault.issued, &mut buf) {
                Ok(t) => t,
                // prq-server restarted under the call (the stub now names
                // the new incarnation): ask again; what it handed out and
                // we never received is still unacknowledged there.
                Err(prq::PrqError::ServerDied) => continue,
                Err(_) => return,
            };
            let n = (t.count as usize).min(BATCH);
            if n > 0 {
                // Acknowledged on the next pull whatever the outcome: a
                // refused batch is a driver bug to log, not to repeat.
                if let Err(e) = self.issue_fault_responses(p.task_id(), &buf[..n]) {
                    userlib::log!(
                        "iommu-server: issuing {} fault responses failed: {:?}",
                        n,
                        e
                    );
                }
                self.fault.issued = t.seq;
            }
            if !t.more {
                // The last hand-over is acknowledged by the next pull (the
                // next notification): one round trip per batch.
                return;
            }
        }
    }

    /// Tells prq-server that event records were lost without OVFLG
    /// (GERROR.EVENTQ_ABT_ERR, just acknowledged: IHI 0070 §7.2.2; QEMU
    /// raises it for a full queue). No-op without a fault path.
    pub(crate) fn fault_event_records_lost(&mut self) {
        let Some(p) = self.fault.prq.map(PrqClient::new) else {
            return;
        };
        self.fault.event_aborts = self.fault.event_aborts.wrapping_add(1);
        if let Err(e) = p.event_records_lost(1) {
            userlib::log!("iommu-server: event_records_lost failed: {:?}", e);
        }
    }

    /// Routes (sid, pasid) to `owner` in prq-server: attach / replace of
    /// the stream's own context (pasid 0) and the first bind of a PASID.
    pub(crate) fn fault_route(&mut self, sid: u32, pasid: u32, owner: TaskId, fc: bool) {
        let Some(p) = self.fault.prq.map(PrqClient::new) else {
            return;
        };
        let att = prq::Attachment {
            sid: api::StreamId(sid),
            pasid: pasid_alloc_api::Pasid(pasid),
        };
        if let Err(e) = p.set_route(att, owner, fc) {
            userlib::log!(
                "iommu-server: set_route({}, {}) failed: {:?}",
                sid,
                pasid,
                e
            );
        }
        self.fault.prq = Some(p.task_id());
    }

    /// Drains (sid, pasid) in prq-server and issues the INVALID answers it
    /// returns (every group of the attachment: queued, delivered, partial;
    /// delivered cookies are revoked there). Called once the context is
    /// gone from the hardware (CD cleared and invalidated, or the STE
    /// aborting): the last unbind, a detach, a defunct PASID's drain, a
    /// reclaim. Ok without a fault path.
    pub(crate) fn fault_drain(
        &mut self,
        sid: u32,
        pasid: u32,
        stop_marker: bool,
    ) -> Result<(), Error> {
        let Some(p) = self.fault.prq.map(PrqClient::new) else {
            return Ok(());
        };
        trace!(Iommu::Drain, sid, pasid);
        let r = self.drain_with(&p, sid, pasid, stop_marker);
        if let Err(e) = r {
            trace!(Iommu::DrainFailed, sid, e as u32);
        }
        if self.fault.prq != Some(p.task_id()) {
            trace!(Iommu::PrqRestart, p.task_id().0);
        }
        self.fault.prq = Some(p.task_id());
        r
    }

    fn drain_with(
        &mut self,
        p: &PrqClient,
        sid: u32,
        pasid: u32,
        stop_marker: bool,
    ) -> Result<(), Error> {
        let att = prq::Attachment {
            sid: api::StreamId(sid),
            pasid: pasid_alloc_api::Pasid(pasid),
        };
        for _ in 0..256 {
            let mut buf = [<prq::ResponseCmdWire as zerocopy::FromZeros>::new_zeroed(); BATCH];
            let d = p
                .drain(att, stop_marker, self.fault.issued, &mut buf)
                .map_err(|_| Error::Timeout)?;
            let n = (d.responses as usize).min(BATCH);
            self.issue_fault_responses(p.task_id(), &buf[..n])?;
            if n > 0 {
                self.fault.issued = d.seq;
            }
            if d.complete {
                return Ok(());
            }
            if n == 0 {
                // prq-server's table is full of other answers: issue them
                // so it can read on to the snapshot.
                self.pump_with(p);
            }
        }
        Err(Error::Timeout)
    }

    /// A stream whose STE now aborts (detach, reclaim): drains its own
    /// attachment (PASID 0; its bound PASIDs were drained by their
    /// unbinds) and, IHI 0070 §4.7.2, with the STE aborting and its
    /// CFGI + SYNC complete, terminates whatever it still has stalled
    /// (transactions whose records the drain did not find).
    pub(crate) fn fault_stream_aborted(&mut self, sid: u32) -> Result<(), Error> {
        if !self.fault.present() {
            return Ok(());
        }
        let r = self.fault_drain(sid, 0, false);
        if self.smmu.features.stall {
            let cmd = [smmuv3::Command::stall_term(sid)];
            if self.smmu.issue(&cmd).is_err() {
                userlib::log!("iommu-server: STALL_TERM of {} failed", sid);
            }
        }
        r
    }
}

fn set_and_wait(m: &impl Mmio, reg: usize, ack: usize, v: u32) -> Result<(), Error> {
    m.write32(reg, v);
    for _ in 0..10_000 {
        if m.read32(ack) == v {
            return Ok(());
        }
    }
    Err(Error::Timeout)
}

/// The command for one response: PRI_RESP with the architecture's
/// encoding (IHI 0070 CMD_PRI_RESP.Resp: 0b00 ResponseFailure, 0b01
/// InvalidRequest, 0b10 Success) or RESUME (Success → Retry, otherwise
/// Term: the transaction is terminated).
pub fn page_response(c: &prq::ResponseCmd) -> PageResponse {
    match c.kind {
        prq::FaultKind::PageRequest => {
            let code = match c.response {
                prq::FaultResponse::Failure => 0b00,
                prq::FaultResponse::Invalid => 0b01,
                prq::FaultResponse::Success => 0b10,
            };
            PageResponse::Pri {
                sid: c.sid.0,
                ssid: c.pasid_valid.then_some(c.pasid.0),
                prgi: c.group,
                // 0..=2 are all defined encodings.
                resp: PriResponse::from_raw(code).unwrap_or_else(|_| unreachable!()),
            }
        }
        prq::FaultKind::Stall => PageResponse::Resume {
            sid: c.sid.0,
            stag: c.group,
            action: match c.response {
                prq::FaultResponse::Success => ResumeAction::Retry,
                _ => ResumeAction::Term,
            },
        },
    }
}

/// The receive loop. The fault path is no longer a separate loop: the
/// server connects to prq-server itself whenever its task has a
/// `prq-server` slot ([`IommuServer::connect_faults`], called by
/// [`crate::serve`]). Kept so callers written for the old entry still work.
pub fn serve<M: Mmio, D: DmaMemory, W: Waiter>(server: &mut IommuServer<M, D, W>) -> ! {
    crate::serve(server)
}
