//! Fault duties: page responses on behalf of prq-server, and the event
//! queue reader (intake, routing into the bounded ring, fetch by owner).
//! Everything the fault path needs from this server is here, so it can
//! move to prq-server as one piece.

use super::*;

/// Event records held for the VMs (see [`EventRing`]).
pub const EVENT_RING: usize = 32;

/// Responses per page_response request.
pub const MAX_RESPONSES: usize = 32;

/// A duty to answer the old domain's pending faults of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultDuty {
    pub domain: DomainId,
    pub sid: u32,
}

/// A response prq-server asks the server to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageResponse {
    Pri {
        sid: u32,
        ssid: Option<u32>,
        prgi: u16,
        resp: PriResponse,
    },
    Resume {
        sid: u32,
        stag: u16,
        action: ResumeAction,
    },
}

/// Event records kept for their owners. Bounded at [`EVENT_RING`];
/// overflow rule: the oldest record is dropped and counted as lost for
/// its stream (reported to the owner at the next fetch).
#[derive(Clone, Copy, Debug)]
pub struct EventRing {
    buf: [(usize, Event); EVENT_RING],
    len: usize,
    /// Records dropped by the overflow rule, per stream index, until its
    /// owner's next fetch.
    lost: [u32; MAX_STREAMS],
    /// Records for streams outside the static map (dropped).
    pub unrouted: u32,
}

impl EventRing {
    pub(super) fn new() -> Self {
        Self {
            buf: [(0, Event::zeroed()); EVENT_RING],
            len: 0,
            lost: [0; MAX_STREAMS],
            unrouted: 0,
        }
    }
}

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// PRI_RESP / RESUME on behalf of prq-server (no one else may ask),
    /// one SYNC per batch. Unsupported when the SMMU has no PRI queue /
    /// no stall model.
    pub fn page_response(&mut self, caller: TaskId, resps: &[PageResponse]) -> Result<u32> {
        if !self.role(caller).prq_server {
            return Err(Error::NotPermitted);
        }
        if resps.len() > MAX_RESPONSES {
            return Err(Error::Invalid);
        }
        let mut cmds = [Command::zeroed(); MAX_RESPONSES];
        for (i, r) in resps.iter().enumerate() {
            let known = |sid: u32| self.streams.iter().flatten().any(|s| s.sid == sid);
            cmds[i] = match *r {
                PageResponse::Pri {
                    sid,
                    ssid,
                    prgi,
                    resp,
                } => {
                    if !self.smmu.features.pri {
                        return Err(Error::Unsupported);
                    }
                    if !known(sid) || prgi >> smmuv3::PRGI_BITS != 0 {
                        return Err(Error::Invalid);
                    }
                    Command::pri_resp(sid, ssid, prgi, resp)
                }
                PageResponse::Resume { sid, stag, action } => {
                    if !self.smmu.features.stall {
                        return Err(Error::Unsupported);
                    }
                    if !known(sid) {
                        return Err(Error::Invalid);
                    }
                    Command::resume(sid, stag, action)
                }
            };
        }
        self.smmu.issue(&cmds[..resps.len()]).map_err(issue_err)?;
        Ok(resps.len() as u32)
    }

    // ------------------------------------------------------------ events

    /// Moves records from the hardware queue into the ring.
    pub fn intake_events(&mut self) -> u32 {
        let mut staged = [Event::zeroed(); 32];
        let mut total = 0;
        loop {
            let mut n = 0;
            // Drain in chunks so the ring's routing can borrow self.
            let got = {
                let smmu = &mut self.smmu;
                let mut k = 0;
                if let Some(q) = &mut smmu.evtq {
                    // Read at most `staged.len()` records per pass.
                    k = drain_some(q, &smmu.mmio, &smmu.mem, &mut staged);
                }
                k
            };
            while n < got {
                self.route_event(staged[n]);
                n += 1;
            }
            total += got as u32;
            if got < staged.len() {
                break;
            }
        }
        total
    }

    pub(super) fn route_event(&mut self, e: Event) {
        let Some(si) = self
            .streams
            .iter()
            .position(|s| matches!(s, Some(s) if s.sid == e.sid()))
        else {
            self.events.unrouted += 1;
            return;
        };
        let r = &mut self.events;
        if r.len == EVENT_RING {
            let (lost_stream, _) = r.buf[0];
            r.buf.copy_within(1.., 0);
            r.len -= 1;
            r.lost[lost_stream] += 1;
        }
        r.buf[r.len] = (si, e);
        r.len += 1;
    }

    /// Hands the caller the records of its streams (oldest first, at most
    /// `out.len()`); returns (count, records lost since the last fetch).
    pub fn fetch_events(&mut self, caller: TaskId, out: &mut [Event]) -> (usize, u32) {
        self.intake_events();
        let mine =
            |s: &Option<StreamState>| matches!(s, Some(s) if s.owner as usize == caller.index());
        let mut n = 0;
        let mut keep = 0;
        for i in 0..self.events.len {
            let (si, e) = self.events.buf[i];
            if n < out.len() && mine(&self.streams[si]) {
                out[n] = e;
                n += 1;
            } else {
                self.events.buf[keep] = (si, e);
                keep += 1;
            }
        }
        self.events.len = keep;
        let mut lost = 0;
        for (si, s) in self.streams.iter().enumerate() {
            if mine(s) {
                lost += core::mem::take(&mut self.events.lost[si]);
            }
        }
        (n, lost)
    }
}

/// Reads up to `out.len()` event records.
fn drain_some(
    q: &mut crate::evtq::EventQueue,
    mmio: &impl Mmio,
    mem: &impl DmaMemory,
    out: &mut [Event],
) -> usize {
    let mut n = 0;
    q.drain_bounded(mmio, mem, out.len() as u32, |e| {
        out[n] = e;
        n += 1;
    });
    n
}

// ------------------------------------------------------------ fault link hooks
//
// The edges of the fault path, called where they happen; each uses the
// server's own knowledge (the domain's `fault_capable`, the context's
// `record_faults`). Without a fault path (`crate::faults::FaultLink`
// absent) each is a no-op.

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// The stream now serves domain `di` (attach, or replace when
    /// `replaced`): its own page requests go to the domain's owner. A
    /// replace's new route answers the old domain's groups of the stream
    /// INVALID in prq-server (nothing is charged to the new domain); they
    /// are issued before the reply.
    pub(super) fn fault_attached(&mut self, di: usize, sid: u32, replaced: bool) {
        let Some(d) = self.dom(di).copied() else {
            return;
        };
        self.fault_route(sid, 0, d.owner, d.fault_capable);
        if replaced {
            self.pump_fault_responses();
        }
    }

    /// Context (stream `si`, `pasid`) is gone from the hardware: drain it.
    /// A PASID-0 context was the stream's own: when the stream stays
    /// attached its requests go back to the attached domain's owner.
    pub(super) fn fault_unbound(&mut self, si: usize, pasid: u32, stop_marker: bool) -> Result<()> {
        if !self.fault.present() {
            return Ok(());
        }
        let st = *self.stream(si);
        let r = self.fault_drain(st.sid, pasid, stop_marker);
        if pasid == 0 {
            if let Some(di) = st.attached {
                if let Some(d) = self.dom(di).copied() {
                    self.fault_route(st.sid, 0, d.owner, d.fault_capable);
                }
            }
        }
        r
    }

    /// Stream `sid`'s STE aborts (detach, reclaim): its own attachment is
    /// drained and its stalls terminated (logged on failure: the STE
    /// already aborts, and the stream's state is gone either way).
    pub(super) fn fault_aborted(&mut self, sid: u32) {
        if let Err(e) = self.fault_stream_aborted(sid) {
            userlib::log!("iommu-server: drain of stream {} failed: {:?}", sid, e);
        }
    }
}
