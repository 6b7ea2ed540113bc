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
//! [`FaultServer`] wraps the generated trait's implementation
//! ([`IdlServer`]) and adds these steps around the operations; [`serve`]
//! is the receive loop that uses it. Without a `prq-server` task slot it
//! is the plain server.

use crate::cmdq::Waiter;
use crate::dma::DmaMemory;
use crate::error::Error;
use crate::idl::IdlServer;
use crate::server::{IommuServer, PageResponse, MAX_RESPONSES};
use idl_runtime::{Leased, Read, Write};
use iommu_server_api as api;
use prq_server_api::{self as prq, PrqClient};
use smmuv3::regs::{offset, CR0, IRQ_CTRL};
use smmuv3::{Mmio, PriResponse, ResumeAction};
use userlib::TaskId;

/// The notification prq-server posts when responses wait.
pub const PRQ_RESPONSES_BIT: u32 = 1 << 4;
/// Fault-capable domains remembered (domain id → fault-capable).
const MAX_DOMAINS: usize = 64;
/// Responses per pull / drain step (the interface's lease maximum).
const BATCH: usize = 64;

/// State of the fault link.
pub struct FaultLink {
    prq: Option<PrqClient>,
    /// `seq` of the last hand-over issued (acknowledged on the next pull).
    issued: u32,
    fault_capable: [(u32, bool); MAX_DOMAINS],
    pub responses_issued: u32,
    pub batches: u32,
    /// (sid, pasid) routes set by a first bind: a detach unbinds every
    /// context of the stream, so it drains each of them.
    bound: [Option<(u32, u32)>; MAX_BOUND],
}

/// PASID routes remembered for detach; a bind beyond it is still routed,
/// its drain then happens only through its own unbind (logged).
const MAX_BOUND: usize = 64;

impl Default for FaultLink {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultLink {
    /// Finds prq-server in this task's slots (none: no fault path).
    pub fn new() -> Self {
        Self {
            prq: userlib::sys_lookup_slot("prq-server").map(PrqClient::new),
            issued: 0,
            fault_capable: [(0, false); MAX_DOMAINS],
            responses_issued: 0,
            batches: 0,
            bound: [None; MAX_BOUND],
        }
    }

    pub fn present(&self) -> bool {
        self.prq.is_some()
    }

    fn remember(&mut self, domain: u32, fc: bool) {
        let i = self
            .fault_capable
            .iter()
            .position(|(d, _)| *d == domain || *d == 0)
            .unwrap_or((domain as usize) % MAX_DOMAINS);
        self.fault_capable[i] = (domain, fc);
    }

    fn is_fault_capable(&self, domain: u32) -> bool {
        self.fault_capable
            .iter()
            .any(|&(d, fc)| d == domain && d != 0 && fc)
    }

    /// Programs EVENTQ_BASE / PRIQ_BASE from prq-server's layout and turns
    /// both queues and their interrupts on (queues off while the bases
    /// change, as the architecture requires).
    pub fn enable_queues<M: Mmio, D: DmaMemory, W: Waiter>(
        &mut self,
        server: &mut IommuServer<M, D, W>,
    ) -> Result<(), Error> {
        let Some(prq) = &self.prq else {
            return Err(Error::Unsupported);
        };
        let l = prq.queue_layout().map_err(|_| Error::Unsupported)?;
        let m = &server.smmu.mmio;
        let cr0 = m.read32(offset::CR0);
        let off = cr0 & !(CR0::EVTQEN::SET.value | CR0::PRIQEN::SET.value);
        set_and_wait(m, offset::CR0, offset::CR0ACK, off)?;
        let pri = server.smmu.features.pri;
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

    /// Issues `cmds` (responses from prq-server) as PRI_RESP / RESUME
    /// under one CMD_SYNC.
    fn issue<M: Mmio, D: DmaMemory, W: Waiter>(
        &mut self,
        server: &mut IommuServer<M, D, W>,
        cmds: &[prq::ResponseCmdWire],
    ) -> Result<(), Error> {
        let Some(p) = &self.prq else {
            return Err(Error::Unsupported);
        };
        let me = p.task_id();
        let mut out = [PageResponse::Resume {
            sid: 0,
            stag: 0,
            action: ResumeAction::Term,
        }; BATCH];
        let mut n = 0;
        for w in cmds {
            let Some(c) = <prq::ResponseCmd as idl_runtime::Fixed>::from_wire(w) else {
                continue;
            };
            out[n] = page_response(&c);
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        // `page_response` takes up to MAX_RESPONSES commands under one
        // SYNC: a 64-entry hand-over is two of them.
        for chunk in out[..n].chunks(MAX_RESPONSES) {
            server.page_response(me, chunk)?;
            self.batches += 1;
        }
        self.responses_issued += n as u32;
        Ok(())
    }

    /// Pulls and issues every queued response.
    pub fn pump<M: Mmio, D: DmaMemory, W: Waiter>(&mut self, server: &mut IommuServer<M, D, W>) {
        let Some(p) = &self.prq else { return };
        let p = PrqClient::new(p.task_id());
        self.pump_with(&p, server);
        // Keep the id the stub refreshed (a restarted prq-server).
        self.prq = Some(PrqClient::new(p.task_id()));
    }

    fn pump_with<M: Mmio, D: DmaMemory, W: Waiter>(
        &mut self,
        p: &PrqClient,
        server: &mut IommuServer<M, D, W>,
    ) {
        // Bounded: at most as many pulls as prq-server has group slots.
        for _ in 0..256 {
            let mut buf = [<prq::ResponseCmdWire as zerocopy::FromZeros>::new_zeroed(); BATCH];
            let t = match p.take_responses(self.issued, &mut buf) {
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
                if let Err(e) = self.issue(server, &buf[..n]) {
                    userlib::log!(
                        "iommu-server: issuing {} fault responses failed: {:?}",
                        n,
                        e
                    );
                }
                self.issued = t.seq;
            }
            if !t.more {
                // The last hand-over is acknowledged by the next pull (the
                // next notification): one round trip per batch.
                return;
            }
        }
    }

    /// Drains (sid, pasid) and issues the answers (detach, last unbind).
    pub fn drain<M: Mmio, D: DmaMemory, W: Waiter>(
        &mut self,
        server: &mut IommuServer<M, D, W>,
        sid: u32,
        pasid: u32,
        uses_stop_marker: bool,
    ) -> Result<(), Error> {
        let Some(p) = &self.prq else { return Ok(()) };
        let p = PrqClient::new(p.task_id());
        let r = self.drain_with(&p, server, sid, pasid, uses_stop_marker);
        self.prq = Some(PrqClient::new(p.task_id()));
        r
    }

    fn drain_with<M: Mmio, D: DmaMemory, W: Waiter>(
        &mut self,
        p: &PrqClient,
        server: &mut IommuServer<M, D, W>,
        sid: u32,
        pasid: u32,
        uses_stop_marker: bool,
    ) -> Result<(), Error> {
        let att = prq::Attachment {
            sid: api::StreamId(sid),
            pasid: pasid_alloc_api::Pasid(pasid),
        };
        for _ in 0..256 {
            let mut buf = [<prq::ResponseCmdWire as zerocopy::FromZeros>::new_zeroed(); BATCH];
            let d = p
                .drain(att, uses_stop_marker, self.issued, &mut buf)
                .map_err(|_| Error::Timeout)?;
            let n = (d.responses as usize).min(BATCH);
            self.issue(server, &buf[..n])?;
            if n > 0 {
                self.issued = d.seq;
            }
            if d.complete {
                return Ok(());
            }
            if n == 0 {
                // prq-server's table is full of other answers: issue them
                // so it can read on to the snapshot.
                self.pump_with(p, server);
            }
        }
        Err(Error::Timeout)
    }

    fn remember_bind(&mut self, sid: u32, pasid: u32) {
        if let Some(b) = self.bound.iter_mut().find(|b| b.is_none()) {
            *b = Some((sid, pasid));
        } else {
            userlib::log!(
                "iommu-server: more than {} PASID routes; ({}, {}) not drained by detach",
                MAX_BOUND,
                sid,
                pasid
            );
        }
    }

    fn forget_bind(&mut self, sid: u32, pasid: u32) {
        for b in self.bound.iter_mut() {
            if *b == Some((sid, pasid)) {
                *b = None;
            }
        }
    }

    /// Drains the stream's own attachment and every PASID bound on it.
    fn drain_stream<M: Mmio, D: DmaMemory, W: Waiter>(
        &mut self,
        server: &mut IommuServer<M, D, W>,
        sid: u32,
    ) -> Result<(), Error> {
        let mut first = self.drain(server, sid, 0, false);
        for k in 0..MAX_BOUND {
            if let Some((s, p)) = self.bound[k] {
                if s == sid {
                    let r = self.drain(server, sid, p, false);
                    if first.is_ok() {
                        first = r;
                    }
                    self.bound[k] = None;
                }
            }
        }
        first
    }

    fn route(&self, sid: u32, pasid: u32, owner: TaskId, fc: bool) {
        if let Some(p) = &self.prq {
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
        }
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

/// The generated trait with the fault duties added around the operations.
pub struct FaultServer<'a, M: Mmio, D: DmaMemory, W: Waiter> {
    pub inner: IdlServer<'a, M, D, W>,
    pub link: FaultLink,
}

impl<M: Mmio, D: DmaMemory, W: Waiter> api::IommuServer for FaultServer<'_, M, D, W> {
    fn notification_mask(&self) -> u32 {
        self.inner.notification_mask()
            | if self.link.present() {
                PRQ_RESPONSES_BIT
            } else {
                0
            }
    }

    fn handle_notification(&mut self, bits: u32) {
        if bits & PRQ_RESPONSES_BIT != 0 {
            self.link.pump(self.inner.server);
        }
        let rest = bits & !PRQ_RESPONSES_BIT;
        if rest != 0 {
            self.inner.handle_notification(rest);
        }
    }

    fn check_caller(&mut self, caller: TaskId, allowed: &'static [api::IommuCaller]) -> bool {
        self.inner.check_caller(caller, allowed)
    }

    fn hw_info(&mut self, caller: TaskId) -> Result<api::IommuCaps, api::IommuError> {
        self.inner.hw_info(caller)
    }

    fn create_s2_domain(
        &mut self,
        caller: TaskId,
        fault_capable: bool,
    ) -> Result<api::DomainId, api::IommuError> {
        let r = self.inner.create_s2_domain(caller, fault_capable);
        if let Ok(d) = r {
            self.link.remember(d.0, fault_capable);
        }
        r
    }

    fn destroy_domain(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
    ) -> Result<(), api::IommuError> {
        self.inner.destroy_domain(caller, domain)
    }

    fn map(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        iova: u64,
        pa: u64,
        len: u64,
        perms: api::MapPerms,
    ) -> Result<(), api::IommuError> {
        self.inner.map(caller, domain, iova, pa, len, perms)
    }

    fn unmap(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        iova: u64,
        len: u64,
    ) -> Result<u64, api::IommuError> {
        self.inner.unmap(caller, domain, iova, len)
    }

    fn attach(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        domain: api::DomainId,
    ) -> Result<api::AttachOutcome, api::IommuError> {
        let r = self.inner.attach(caller, sid, domain);
        if r.is_ok() {
            let fc = self.link.is_fault_capable(domain.0);
            self.link.route(sid.0, 0, caller, fc);
        }
        r
    }

    fn replace(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        domain: api::DomainId,
    ) -> Result<api::AttachOutcome, api::IommuError> {
        let r = self.inner.replace(caller, sid, domain);
        if r.is_ok() {
            // The new route answers the old domain's groups INVALID in
            // prq-server; issue them now.
            let fc = self.link.is_fault_capable(domain.0);
            self.link.route(sid.0, 0, caller, fc);
            self.link.pump(self.inner.server);
        }
        r
    }

    fn detach(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
    ) -> Result<api::AttachOutcome, api::IommuError> {
        let r = self.inner.detach(caller, sid);
        if r.is_ok() {
            // Detach unbound every context of the stream too.
            if let Err(e) = self.link.drain_stream(self.inner.server, sid.0) {
                userlib::log!("iommu-server: drain after detach of {}: {:?}", sid.0, e);
            }
            // IHI 0070 §4.7.2: with the STE aborting and its CFGI + SYNC
            // complete, terminate whatever the stream still has stalled
            // (transactions whose records the drain did not find).
            if self.link.present() && self.inner.server.smmu.features.stall {
                let cmd = [smmuv3::Command::stall_term(sid.0)];
                if self.inner.server.smmu.issue(&cmd).is_err() {
                    userlib::log!("iommu-server: STALL_TERM of {} failed", sid.0);
                }
            }
        }
        r
    }

    fn bind(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        pasid: pasid_alloc_api::PasidHandle,
        cd: api::CdConfig,
        fault_capable: bool,
    ) -> Result<u32, api::IommuError> {
        let r = self.inner.bind(caller, sid, pasid, cd, fault_capable);
        if r == Ok(1) {
            self.link.route(sid.0, pasid.pasid.0, caller, fault_capable);
            self.link.remember_bind(sid.0, pasid.pasid.0);
        }
        r
    }

    fn unbind(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        pasid: pasid_alloc_api::Pasid,
        uses_stop_marker: bool,
    ) -> Result<api::UnbindOutcome, api::IommuError> {
        let r = self.inner.unbind(caller, sid, pasid, uses_stop_marker);
        if r == Ok(api::UnbindOutcome::Drained) {
            self.link.forget_bind(sid.0, pasid.0);
            // The CD is gone and invalidated: only now drain, and reply
            // Drained only when the drain completed.
            self.link
                .drain(self.inner.server, sid.0, pasid.0, uses_stop_marker)
                .map_err(|e| e.api())?;
        }
        r
    }

    fn invalidate(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        cmds: Leased<Read, api::SmmuCmd>,
    ) -> Result<api::InvalidateOutcome, api::IommuError> {
        self.inner.invalidate(caller, domain, cmds)
    }

    fn owner_died(
        &mut self,
        caller: TaskId,
        vm: TaskId,
    ) -> Result<api::ReclaimCounts, api::IommuError> {
        self.inner.owner_died(caller, vm)
    }

    fn create_s1_domain(
        &mut self,
        caller: TaskId,
        fault_capable: bool,
    ) -> Result<api::DomainId, api::IommuError> {
        let r = self.inner.create_s1_domain(caller, fault_capable);
        if let Ok(d) = r {
            self.link.remember(d.0, fault_capable);
        }
        r
    }

    fn create_nested_domain(
        &mut self,
        caller: TaskId,
        parent: api::DomainId,
        vste: api::NestedSte,
        fault_capable: bool,
    ) -> Result<api::DomainId, api::IommuError> {
        let r = self
            .inner
            .create_nested_domain(caller, parent, vste, fault_capable);
        if let Ok(d) = r {
            self.link.remember(d.0, fault_capable);
        }
        r
    }

    fn unmap_deferred(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        iova: u64,
        len: u64,
    ) -> Result<u64, api::IommuError> {
        self.inner.unmap_deferred(caller, domain, iova, len)
    }

    fn flush(&mut self, caller: TaskId, domain: api::DomainId) -> Result<(), api::IommuError> {
        self.inner.flush(caller, domain)
    }

    fn set_vsid(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        vsid: u32,
    ) -> Result<(), api::IommuError> {
        self.inner.set_vsid(caller, sid, vsid)
    }

    fn bind_users(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        pasid: pasid_alloc_api::Pasid,
    ) -> Result<u32, api::IommuError> {
        self.inner.bind_users(caller, sid, pasid)
    }

    fn fetch_events(
        &mut self,
        caller: TaskId,
        out: Leased<Write, api::SmmuEvent>,
    ) -> Result<api::EventsFetched, api::IommuError> {
        self.inner.fetch_events(caller, out)
    }

    fn info(&mut self, caller: TaskId) -> Result<api::IommuInfo, api::IommuError> {
        self.inner.info(caller)
    }
}

/// The receive loop with the fault path: enables the server's interrupts,
/// hands the queues over to prq-server's memory (when the app has a
/// prq-server), then serves with [`FaultServer`].
pub fn serve<M: Mmio, D: DmaMemory, W: Waiter>(server: &mut IommuServer<M, D, W>) -> ! {
    if server.irq_bits != 0 {
        userlib::sys_irq_control(server.irq_bits, true);
    }
    let mut link = FaultLink::new();
    if link.present() {
        match link.enable_queues(server) {
            Ok(()) => userlib::log!("iommu-server: event and PRI queues handed to prq-server"),
            Err(e) => userlib::log!("iommu-server: prq-server queues not enabled: {:?}", e),
        }
    }
    let mut s = FaultServer {
        inner: IdlServer::new(server),
        link,
    };
    api::run_server(&mut s)
}
