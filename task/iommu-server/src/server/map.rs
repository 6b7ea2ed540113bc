//! Map, unmap (strict or deferred) and flush of S1 / S2 domains.

use super::*;
use crate::pgtable::Unmapped;
use smmuv3::RangePieces;

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
        // All or nothing: every check before anything is written. One
        // walk per 2 MiB for each of them, not one per page.
        let mem = &self.smmu.mem;
        if pt.any_mapped(mem, iova, pages) {
            return Err(Error::AlreadyExists);
        }
        if pt.tables_needed_range(mem, iova, pages) > self.smmu.alloc.free_pages() {
            return Err(Error::NoSpace);
        }
        // A new mapping needs no invalidation of its own, but stale
        // entries of an unmap that failed to invalidate could shadow it.
        self.settle(di)?;
        pt.map_range(&self.smmu.mem, &mut self.smmu.alloc, iova, pa, pages, prot)
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
    /// skipped); returns how many were mapped. Strict: range TLBI_S2_IPA
    /// (S2) or TLBI_NH_VA (S1) over the span unmapped (see
    /// `unmap_tlbis`), plus TLBI_NH_ALL for a nesting parent, and one
    /// CMD_SYNC, before the reply.
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
        let gone = pt.unmap_range(&self.smmu.mem, iova, pages);
        if gone.count == 0 {
            return Ok(0);
        }
        if mode == UnmapMode::Deferred {
            if let Some(d) = self.dom_mut(di) {
                d.needs_flush = true;
            }
            return Ok(gone.count);
        }
        let nest = vmid.is_some() && self.is_nest_parent(di);
        let mut cmds = [Command::zeroed(); BATCH_MAX];
        let mut n = self.unmap_tlbis(&gone, vmid, asid, nest, &mut cmds);
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
        Ok(gone.count)
    }

    /// The TLB invalidations for the span `[gone.first, gone.last]` of an
    /// unmap, into `cmds`; returns how many. With range invalidation
    /// (IDR3.RIL) one TLBI_S2_IPA / TLBI_NH_VA per range piece (two at
    /// most for a request's 512 pages; a one-page piece as a plain
    /// command: NUM = SCALE = 0 needs a level hint). Without it one per
    /// page of the span, or the whole VMID / ASID when the span is more
    /// than a batch. Pages of the span that were not mapped are
    /// invalidated too, which is harmless. Leaf: tables are never freed
    /// by an unmap, so no table entry changed.
    fn unmap_tlbis(
        &self,
        gone: &Unmapped,
        vmid: Option<u16>,
        asid: Option<u16>,
        nest: bool,
        cmds: &mut [Command; BATCH_MAX],
    ) -> usize {
        let per_batch = if nest { BATCH_MAX - 1 } else { BATCH_MAX };
        let span = (gone.last - gone.first) / PAGE_SIZE as u64 + 1;
        let one = |a: u64| match vmid {
            Some(v) => Command::tlbi_s2_ipa(v, a, true),
            None => Command::tlbi_nh_va(0, asid.unwrap_or(0), a, true),
        };
        let whole = |cmds: &mut [Command; BATCH_MAX]| {
            cmds[0] = match vmid {
                Some(v) => Command::tlbi_s12_vmall(v),
                None => Command::tlbi_nh_asid(0, asid.unwrap_or(0)),
            };
            1
        };
        let mut n = 0;
        if self.smmu.features.ril {
            for p in RangePieces::new(span) {
                // Never more pieces than a batch (a request's span needs
                // two at most; this bound keeps it true for any span).
                if n == per_batch {
                    return whole(cmds);
                }
                let a = gone.first + p.offset * PAGE_SIZE as u64;
                cmds[n] = if p.granules() == 1 {
                    one(a)
                } else {
                    // TG = 1 (4 KiB), TTL = 0: leaves at any level.
                    one(a).with_range(p.num, p.scale, 1, 0)
                };
                n += 1;
            }
        } else if span <= per_batch as u64 {
            for i in 0..span {
                cmds[n] = one(gone.first + i * PAGE_SIZE as u64);
                n += 1;
            }
        } else {
            n = whole(cmds);
        }
        n
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

#[cfg(test)]
mod tests {
    use crate::pgtable::Prot;
    use crate::testutil::*;
    use crate::{IommuServer, ServerConfig, UnmapMode};
    use smmuv3::regs::offset;
    use smmuv3::CommandKind;
    use userlib::abi::Generation;
    use userlib::TaskId;

    fn server(ril: bool) -> (FakeSmmu, IommuServer<FakeSmmu, HostMem, SpinWaiter>) {
        let mem = HostMem::new(0x4010_0000, 0x40000);
        let f = FakeSmmu::new(mem.clone());
        if !ril {
            // IDR3 without RIL (bit 10).
            f.st.borrow_mut().regs.insert(offset::IDR3, 0x1014);
        }
        let cfg = ServerConfig {
            streams: &[(0x10, 3)],
            event_queue: false,
            ..ServerConfig::default()
        };
        let s = IommuServer::new(f.clone(), mem, SpinWaiter, &cfg).unwrap();
        (f, s)
    }

    const PA: u64 = 0x8000_0000;

    fn kinds(f: &FakeSmmu) -> std::vec::Vec<CommandKind> {
        f.take_log().iter().map(|c| c.decode().unwrap()).collect()
    }

    /// With IDR3.RIL: the span unmapped (gaps included) in range pieces,
    /// a single page as a plain command; S1 domains by TLBI_NH_VA.
    #[test]
    fn unmap_invalidates_the_span_by_range() {
        let (f, mut s) = server(true);
        let vm = TaskId::new(3, Generation(0));
        for s1 in [false, true] {
            let d = if s1 {
                s.alloc_s1_domain(vm, false).unwrap()
            } else {
                s.alloc_s2_domain(vm, false).unwrap()
            };
            // Pages 1..=3 and 70 of a 100-page range: span 70 pages.
            s.map(vm, d, 0x10_1000, PA, 3, Prot::RW).unwrap();
            s.map(vm, d, 0x10_0000 + 70 * 0x1000, PA, 1, Prot::RW)
                .unwrap();
            f.take_log();
            assert_eq!(s.unmap(vm, d, 0x10_0000, 100, UnmapMode::Strict), Ok(4));
            let l = kinds(&f);
            // 70 = 64 + 6 (two pieces), then SYNC.
            assert_eq!(l.len(), 3, "{l:?}");
            let mut at = 0x10_1000;
            for k in &l[..2] {
                let scope = match *k {
                    CommandKind::TlbiS2Ipa { scope, .. } if !s1 => scope,
                    CommandKind::TlbiNhVa { scope, .. } if s1 => scope,
                    ref other => panic!("{other:?}"),
                };
                assert_eq!(scope.addr, at);
                assert!(scope.leaf && scope.tg == 1 && scope.ttl == 0);
                at += scope.range().1;
            }
            assert_eq!(at, 0x10_0000 + 71 * 0x1000);
            assert!(matches!(l[2], CommandKind::Sync { .. }));
            // One page: a plain command (NUM = SCALE = 0 with TTL = 0 is
            // reserved).
            s.map(vm, d, 0x20_0000, PA, 1, Prot::RW).unwrap();
            f.take_log();
            assert_eq!(s.unmap(vm, d, 0x20_0000, 1, UnmapMode::Strict), Ok(1));
            let l = kinds(&f);
            assert_eq!(l.len(), 2);
            let tg = match l[0] {
                CommandKind::TlbiS2Ipa { scope, .. } | CommandKind::TlbiNhVa { scope, .. } => {
                    scope.tg
                }
                ref other => panic!("{other:?}"),
            };
            assert_eq!(tg, 0);
        }
    }

    /// Without IDR3.RIL: one TLBI per page of the span, or the whole VMID
    /// when the span is more than a batch.
    #[test]
    fn unmap_without_ril_goes_page_by_page_or_whole_vmid() {
        let (f, mut s) = server(false);
        let vm = TaskId::new(3, Generation(0));
        let d = s.alloc_s2_domain(vm, false).unwrap();
        s.map(vm, d, 0x10_0000, PA, 5, Prot::RW).unwrap();
        f.take_log();
        assert_eq!(s.unmap(vm, d, 0x10_0000, 5, UnmapMode::Strict), Ok(5));
        let l = kinds(&f);
        assert_eq!(l.len(), 6);
        for (i, k) in l[..5].iter().enumerate() {
            assert!(
                matches!(k, CommandKind::TlbiS2Ipa { scope, .. } if scope.addr == 0x10_0000 + i as u64 * 0x1000 && scope.tg == 0)
            );
        }
        s.map(vm, d, 0x10_0000, PA, 65, Prot::RW).unwrap();
        f.take_log();
        assert_eq!(s.unmap(vm, d, 0x10_0000, 65, UnmapMode::Strict), Ok(65));
        let l = kinds(&f);
        assert_eq!(l.len(), 2);
        assert!(matches!(l[0], CommandKind::TlbiS12Vmall { .. }));
    }
}
