//! Guest PASIDs: each mapped to a host PASID from pasid-alloc (never the
//! identity); free unbinds and drains before the host PASID is given up.

use super::*;

impl Frontend {
    pub fn alloc_pasid(&mut self, guest: u32) -> Result<(), E> {
        self.ready()?;
        if guest == 0 || (guest as u64) >> self.pasid_bits() != 0 {
            return Err(E::Invalid);
        }
        if self.pasid_idx(guest).is_some() {
            return Err(E::AlreadyExists);
        }
        let slot = self
            .pasids
            .iter()
            .position(|p| p.is_none())
            .ok_or(E::NoSpace)?;
        let alloc = self.alloc().ok_or(E::Unsupported)?;
        let host = alloc.alloc().map_err(alloc_err)?;
        self.pasids[slot] = Some(PasidMap { guest, host });
        Ok(())
    }

    /// Frees a guest PASID: pasid-alloc makes the host PASID defunct at
    /// once (no new bind), this VM's binds of it are unbound (each after
    /// its drain), and pasid-alloc returns it to the pool only after
    /// iommu-server reported it drained.
    pub fn free_pasid(&mut self, guest: u32) -> Result<(), E> {
        let pi = self.pasid_idx(guest).ok_or(E::NotFound)?;
        let host = self.pasids[pi].ok_or(E::NotFound)?.host;
        let alloc = self.alloc().ok_or(E::Unsupported)?;
        match alloc.free(host) {
            // NotFound: already defunct or reclaimed (a pasid-alloc
            // restart): the mapping is stale either way.
            Ok(()) | Err(PasidAllocError::NotFound) => {}
            Err(e) => return Err(alloc_err(e)),
        }
        for bi in 0..MAX_BINDS {
            if matches!(self.binds[bi], Some(b) if b.guest == guest) {
                // iommu-server's defunct drain may have unbound it already
                // (then NotBound); a failure leaves it to that drain.
                let _ = self.unbind_all(bi);
                self.binds[bi] = None;
            }
        }
        // Every bind of it is drained (here or by iommu-server's defunct
        // drain): its delivered groups were answered there.
        for i in 0..MAX_STREAMS {
            if let Some(st) = self.streams[i] {
                self.forget_drained(st.psid, Some(host.pasid.0));
            }
        }
        self.pasids[pi] = None;
        Ok(())
    }
}
