//! Attach, replace and detach of a stream.

use super::*;

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// Attaches the caller's stream to the caller's domain, or replaces the
    /// domain it is attached to with one STE update (hitless whenever a
    /// single STE word's used bits change: S1 → S1, nested → nested on the
    /// same parent, S2 ↔ nested on the same S2, abort → any; an S2 → S2
    /// replace changes VMID and S2TTB and is break-before-make, reported
    /// in [`AttachResult::update`]). Busy while PASID contexts are bound.
    pub fn attach(&mut self, caller: TaskId, sid: u32, id: DomainId) -> Result<AttachResult> {
        let r = self.attach_inner(caller, sid, id);
        match &r {
            Ok(a) => trace!(
                Iommu::Attach,
                sid,
                a.update as u32 | (a.old.is_some() as u32) << 8
            ),
            Err(e) => trace!(Iommu::AttachRefused, sid, *e as u32),
        }
        r
    }

    fn attach_inner(&mut self, caller: TaskId, sid: u32, id: DomainId) -> Result<AttachResult> {
        let si = self.stream_idx(caller, sid)?;
        let di = self.domain_idx(caller, id)?;
        let st = *self.stream(si);
        if st.attached == Some(di) {
            return Ok(AttachResult {
                old: Some(id),
                update: UpdateKind::NoChange,
                fault_duty: None,
            });
        }
        if st.ctx.is_some() {
            return Err(Error::Busy);
        }
        let target = self.ste_for(di)?;
        // Stale TLB entries of a failed strict unmap would serve this
        // stream too.
        self.settle(di)?;
        let result = self.smmu.write_ste(sid, &target);
        let update = match result {
            Ok(u) => u,
            Err(e) => {
                self.fail_closed(si);
                return Err(e);
            }
        };
        if let Some(s) = self.stream_mut(si) {
            s.attached = Some(di);
        }
        if let Some(d) = self.dom_mut(di) {
            d.users += 1;
        }
        let r = self.release_old(st.attached, sid, update);
        self.fault_attached(di, sid, r.old.is_some());
        Ok(r)
    }

    /// Detaches the caller's stream: its bound contexts are dropped (as by
    /// their last unbind, each drained in prq-server), then its STE goes
    /// back to abort (never bypass) and the stream's own attachment is
    /// drained (and its stalls terminated).
    pub fn detach(&mut self, caller: TaskId, sid: u32) -> Result<AttachResult> {
        let si = self.stream_idx(caller, sid)?;
        if self.stream(si).attached.is_none() {
            return Err(Error::NotFound);
        }
        self.unbind_all(si)?;
        let st = *self.stream(si);
        let update = match self.smmu.write_ste(sid, &crate::strtab::abort_ste()) {
            Ok(u) => u,
            Err(e) => {
                self.fail_closed(si);
                return Err(e);
            }
        };
        if let Some(s) = self.stream_mut(si) {
            s.attached = None;
        }
        let r = self.release_old(st.attached, sid, update);
        self.fault_aborted(sid);
        trace!(Iommu::Detach, sid);
        Ok(r)
    }

    pub(super) fn release_old(
        &mut self,
        old: Option<usize>,
        sid: u32,
        update: UpdateKind,
    ) -> AttachResult {
        let mut r = AttachResult {
            old: None,
            update,
            fault_duty: None,
        };
        if let Some(o) = old {
            let id = self.id_of(o);
            r.old = Some(id);
            if let Some(d) = self.dom_mut(o) {
                d.users = d.users.saturating_sub(1);
                if d.fault_capable {
                    r.fault_duty = Some(FaultDuty { domain: id, sid });
                }
            }
        }
        r
    }

    /// After a failed STE write the entry may be half-written: make it
    /// abort again (best effort) and forget the attachment.
    pub(super) fn fail_closed(&mut self, si: usize) {
        let st = *self.stream(si);
        let _ = self.smmu.write_ste(st.sid, &crate::strtab::abort_ste());
        if let Some(o) = st.attached {
            if let Some(d) = self.dom_mut(o) {
                d.users = d.users.saturating_sub(1);
            }
        }
        if let Some(s) = self.stream_mut(si) {
            s.attached = None;
        }
    }
}
