//! Free before unbind: the drain of defunct PASIDs (ARCHITECTURE.md §7,
//! docs/pasids.md).
//!
//! A VM may free a PASID while it is still bound. pasid-alloc then marks it
//! defunct at once (no new bind passes `owner_of`) and tells this server
//! (notification `PASID_DEFUNCT_BIT`); pasid-alloc ranks above this server
//! and never sends to it, so the server pulls: `next_defunct` names the
//! oldest defunct PASID, the server unbinds every bind of it on every
//! stream (CD cleared with CFGI_CD, TLBI by ASID, ATC_INV where ATS
//! exists, each step synced, then prq-server's drain of the PASID's page
//! requests — every group answered INVALID once, delivered cookies
//! revoked: [`IommuServer::unbind_idx`], the same steps as a VM's last
//! unbind), and only then calls `mark_drained`, which returns the PASID
//! to the pool.
//! A later unbind by the old owner finds nothing (`NotBound`).
//!
//! If an unbind or its drain fails (a timeout, an SMMU error: the stream
//! is then made to abort; prq-server not answering), the PASID is not
//! reported drained; it stays defunct and is retried at the next pull. A server that restarts mid-drain starts from
//! a freshly initialised SMMU (every stream aborts) and pulls when it
//! starts, so the PASID is still reported drained only by a server that
//! holds no bind of it.

use super::*;
use pasid_alloc_api::{PasidAllocClient, PasidHandle};

/// Defunct PASIDs drained per pull: bounds the time one notification holds
/// the server; pasid-alloc keeps the rest and the next pull continues.
pub const DRAIN_PER_PULL: usize = 16;

/// What one pull did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefunctDrain {
    /// PASIDs reported drained.
    pub drained: u32,
    /// Binds removed on the way.
    pub unbound: u32,
    /// Whether a PASID could not be drained (it stays defunct).
    pub failed: bool,
}

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// Removes every bind of host PASID `pasid`, on every stream, whoever
    /// asked for it (only pasid-alloc's defunct list leads here). Returns
    /// how many binds went; the first failure stops nothing (every bind is
    /// tried) but is returned.
    pub fn unbind_pasid(&mut self, pasid: u32) -> Result<u32> {
        if pasid == 0 {
            // PASID 0 is the stream's own context, never pasid-alloc's.
            return Err(Error::Invalid);
        }
        let mut n = 0;
        let mut first_err = None;
        for ci in 0..MAX_CONTEXTS {
            if matches!(self.contexts[ci], Some(c) if c.pasid == pasid) {
                match self.unbind_idx(ci, true, Some(false)) {
                    Ok(_) => n += 1,
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Records the pasid-alloc incarnation this server is about to ask.
    /// pasid-alloc keeps its table in task state: a restarted pasid-alloc
    /// has every PASID free in generation 0 and may hand out a PASID this
    /// server still has bound. So when its generation changes, every bind
    /// of a PASID ≠ 0 is removed first (their ownership can no longer be
    /// checked: fail closed). Returns how many binds went.
    pub fn pasid_alloc_seen(&mut self, id: TaskId) -> u32 {
        let changed = self.pasid_alloc.is_some_and(|old| old != id);
        self.pasid_alloc = Some(id);
        if !changed {
            return 0;
        }
        trace!(Iommu::PasidAllocRestart, id.0);
        let mut n = 0;
        for ci in 0..MAX_CONTEXTS {
            if matches!(self.contexts[ci], Some(c) if c.pasid != 0) {
                // A failed unbind made its stream abort (fail closed).
                let _ = self.unbind_idx(ci, true, Some(false));
                n += 1;
            }
        }
        n
    }

    /// Whether any bind of `pasid` remains (tests, diagnostics).
    pub fn pasid_bound(&self, pasid: u32) -> bool {
        self.contexts.iter().flatten().any(|c| c.pasid == pasid)
    }

    /// Pulls defunct PASIDs from pasid-alloc and drains them, oldest
    /// first, at most [`DRAIN_PER_PULL`]. Stops at the first PASID that
    /// could not be drained, or when pasid-alloc cannot be asked.
    pub fn drain_defunct(&mut self, alloc: &PasidAllocClient) -> DefunctDrain {
        let mut r = DefunctDrain::default();
        for _ in 0..DRAIN_PER_PULL {
            let h: PasidHandle = match alloc.next_defunct() {
                Ok(Some(h)) => h,
                Ok(None) | Err(_) => break,
            };
            match self.unbind_pasid(h.pasid.0) {
                Ok(n) => r.unbound += n,
                Err(_) => {
                    r.failed = true;
                    break;
                }
            }
            // NotFound: someone reported it first (a previous incarnation
            // of this server whose reply was lost); either way it is no
            // longer defunct, and no bind of it is left here.
            match alloc.mark_drained(h) {
                Ok(()) => r.drained += 1,
                Err(_) => break,
            }
        }
        r
    }
}
