//! Map, unmap (strict or deferred) and flush of S1 / S2 domains.

use super::*;

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// Whether the caller may map physical `[pa, pa + len)`: never the
    /// server's own tables, never beyond the output address size, and —
    /// per the configuration — inside one of the caller's memory windows
    /// and/or the caller's DMA memory as the kernel knows it.
    pub(super) fn pa_allowed(&self, caller: TaskId, pa: u64, len: u64) -> bool {
        if self.smmu.mem.overlaps(pa, len) {
            return false;
        }
        let oas = self.smmu.features.oas.bits();
        if (pa + len - 1) >> oas != 0 {
            return false;
        }
        let vm = caller.index();
        let in_window = match &self.vm_memory {
            None => true,
            Some((w, n)) => w[..*n]
                .iter()
                .any(|w| w.vm as usize == vm && pa >= w.pa && pa + len <= w.pa + w.size),
        };
        in_window && (!self.memory_query || phys_owned(caller, pa, len))
    }

    /// Pays domain `di`'s owed invalidation, if any: the whole domain
    /// (TLBI_S12_VMALL for S2 — stage 1 entries of nested streams under
    /// its VMID included —, TLBI_NH_ASID for S1, TLBI_NH_ALL under the
    /// parent's VMID for nested) + SYNC. The debt is cleared only once
    /// that SYNC completed; otherwise the error is returned and the
    /// caller's operation must not proceed.
    pub(super) fn settle(&mut self, di: usize) -> Result<()> {
        let d = *self.dom(di).ok_or(Error::NotFound)?;
        if !d.owed {
            return Ok(());
        }
        let cmd = match d.inner {
            Inner::S2 { vmid, .. } => Command::tlbi_s12_vmall(vmid),
            Inner::S1 { asid, .. } => Command::tlbi_nh_asid(0, asid),
            Inner::Nested { parent, .. } => Command::tlbi_nh_all(self.vmid_of(parent).unwrap_or(0)),
        };
        self.smmu.issue(&[cmd]).map_err(issue_err)?;
        if let Some(d) = self.dom_mut(di) {
            d.owed = false;
        }
        Ok(())
    }

    /// Records that domain `di` is owed an invalidation (see `owed`).
    pub(super) fn owe(&mut self, di: usize) {
        if let Some(d) = self.dom_mut(di) {
            d.owed = true;
        }
    }

    pub(super) fn paging(&self, i: usize) -> Result<(PageTable, Option<u16>, Option<u16>)> {
        match self.dom(i).map(|d| d.inner) {
            Some(Inner::S2 { vmid, pt }) => Ok((pt, Some(vmid), None)),
            Some(Inner::S1 { asid, pt, .. }) => Ok((pt, None, Some(asid))),
            Some(Inner::Nested { .. }) => Err(Error::Invalid),
            None => Err(Error::NotFound),
        }
    }

    /// Maps `pages` 4 KiB pages at `iova` to `pa` in the caller's S1 or S2
    /// domain. All or nothing: a page already mapped is AlreadyExists, any
    /// page in a reserved window Reserved, a PA outside the caller's memory
    /// (or inside the server's tables) NotPermitted, not enough table pages
    /// NoSpace — each checked before anything is written. No invalidation
    /// is needed: the SMMU does not cache invalid entries.
    pub fn map(
        &mut self,
        caller: TaskId,
        id: DomainId,
        iova: u64,
        pa: u64,
        pages: u32,
        prot: Prot,
    ) -> Result<()> {
        let di = self.domain_idx(caller, id)?;
        let (mut pt, vmid, _) = self.paging(di)?;
        let len = self.check_range(iova, pages)?;
        if !pa.is_multiple_of(PAGE_SIZE as u64)
            || pa.checked_add(len).is_none()
            || (!prot.read && !prot.write)
        {
            return Err(Error::Invalid);
        }
        if MSI_WINDOW.overlaps(iova, len) || (vmid.is_some() && CTX_WINDOW.overlaps(iova, len)) {
            return Err(Error::Reserved);
        }
        if !self.pa_allowed(caller, pa, len) {
            return Err(Error::NotPermitted);
        }
        let mem = &self.smmu.mem;
        let mut tables = 0;
        for p in 0..pages as u64 {
            let a = iova + p * PAGE_SIZE as u64;
            if pt.lookup(mem, a).is_some() {
                return Err(Error::AlreadyExists);
            }
            // Upper bound: count each 2 MiB chunk's missing tables once.
            if p == 0 || a.is_multiple_of(0x20_0000) {
                tables += pt.tables_needed(mem, a);
            }
        }
        if tables > self.smmu.alloc.free_pages() {
            return Err(Error::NoSpace);
        }
        // A new mapping needs no invalidation of its own, but stale
        // entries of an unmap that failed to invalidate could shadow it.
        self.settle(di)?;
        for p in 0..pages as u64 {
            let off = p * PAGE_SIZE as u64;
            pt.map(
                &self.smmu.mem,
                &mut self.smmu.alloc,
                iova + off,
                pa + off,
                prot,
            )?;
        }
        Ok(())
    }

    pub(super) fn check_range(&self, iova: u64, pages: u32) -> Result<u64> {
        if pages == 0 || pages > MAX_MAP_PAGES || !valid_iova(iova) {
            return Err(Error::Invalid);
        }
        let len = pages as u64 * PAGE_SIZE as u64;
        if iova + len > IAS_END {
            return Err(Error::Invalid);
        }
        Ok(len)
    }

    /// Unmaps `pages` pages at `iova` (unmapped pages inside the range are
    /// skipped); returns how many were mapped. Strict: one batch of
    /// TLBI_S2_IPA (S2) or TLBI_NH_VA (S1) per page — or one
    /// TLBI_S12_VMALL / TLBI_NH_ASID when more than a batch — plus
    /// TLBI_NH_ALL for a nesting parent, and one CMD_SYNC, before the reply.
    /// If that invalidation fails (timeout, refused), the error is returned
    /// and the domain stays owed a whole-domain invalidation, which the
    /// next map / unmap / flush / attach of it issues first: a retry that
    /// finds nothing mapped still invalidates before it returns Ok(0).
    pub fn unmap(
        &mut self,
        caller: TaskId,
        id: DomainId,
        iova: u64,
        pages: u32,
        mode: UnmapMode,
    ) -> Result<u32> {
        let di = self.domain_idx(caller, id)?;
        let (mut pt, vmid, asid) = self.paging(di)?;
        let len = self.check_range(iova, pages)?;
        if MSI_WINDOW.overlaps(iova, len) || (vmid.is_some() && CTX_WINDOW.overlaps(iova, len)) {
            return Err(Error::Reserved);
        }
        // A failed strict unmap before this one: pay it first, so a retry
        // that finds nothing left to unmap still invalidates.
        self.settle(di)?;
        let nest = vmid.is_some() && self.is_nest_parent(di);
        let per_batch = if nest { BATCH_MAX - 1 } else { BATCH_MAX };
        let mut cmds = [Command::zeroed(); BATCH_MAX];
        let mut n = 0;
        let mut count = 0u32;
        for p in 0..pages as u64 {
            let a = iova + p * PAGE_SIZE as u64;
            if pt.unmap(&self.smmu.mem, a) {
                count += 1;
                if n < per_batch {
                    cmds[n] = match vmid {
                        Some(v) => Command::tlbi_s2_ipa(v, a, true),
                        None => Command::tlbi_nh_va(0, asid.unwrap_or(0), a, true),
                    };
                }
                n += 1;
            }
        }
        if count == 0 {
            return Ok(0);
        }
        if mode == UnmapMode::Deferred {
            if let Some(d) = self.dom_mut(di) {
                d.needs_flush = true;
            }
            return Ok(count);
        }
        if n > per_batch {
            cmds[0] = match vmid {
                Some(v) => Command::tlbi_s12_vmall(v),
                None => Command::tlbi_nh_asid(0, asid.unwrap_or(0)),
            };
            n = 1;
        }
        if nest {
            cmds[n] = Command::tlbi_nh_all(vmid.unwrap_or(0));
            n += 1;
        }
        if let Err(f) = self.smmu.issue(&cmds[..n]) {
            // The entries are gone but the TLBs may still hold them: the
            // invalidation stays owed until a SYNC completes it.
            self.owe(di);
            return Err(issue_err(f));
        }
        Ok(count)
    }

    /// Completes deferred unmaps: invalidates the whole domain
    /// (TLBI_S12_VMALL for S2, TLBI_NH_ASID for S1) + SYNC.
    pub fn flush(&mut self, caller: TaskId, id: DomainId) -> Result<()> {
        let di = self.domain_idx(caller, id)?;
        let (_, vmid, asid) = self.paging(di)?;
        let cmd = match vmid {
            Some(v) => Command::tlbi_s12_vmall(v),
            None => Command::tlbi_nh_asid(0, asid.unwrap_or(0)),
        };
        self.smmu.issue(&[cmd]).map_err(issue_err)?;
        // The whole domain is invalidated: this pays an owed invalidation
        // too.
        if let Some(d) = self.dom_mut(di) {
            d.needs_flush = false;
            d.owed = false;
        }
        Ok(())
    }
}

/// Whether the kernel says `task`'s DMA memory covers `[pa, pa + len)`.
fn phys_owned(task: TaskId, pa: u64, len: u64) -> bool {
    match (usize::try_from(pa), usize::try_from(len)) {
        (Ok(pa), Ok(len)) => userlib::sys_phys_owned(task, pa, len),
        _ => false,
    }
}
