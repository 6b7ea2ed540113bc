//! I/O page tables the server builds in its DMA memory: stage 2 for a VM's
//! S2 domain, stage 1 for a server-managed S1 domain. VMSAv8-64, 4 KiB
//! granule, 4 KiB pages only, a 39-bit input space (T0SZ / S2T0SZ = 25)
//! walked from level 1 with a single 4 KiB root table (no concatenation).
//!
//! Tables are allocated from the [`PageAlloc`] on demand and zeroed before
//! they are linked; they are freed only when the whole table is destroyed
//! (an unmap leaves empty tables behind, so no walk-cache invalidation of
//! table entries is ever needed).

use crate::dma::DmaMemory;
use crate::error::{Error, Result};
use crate::pages::{PageAlloc, Pages, PAGE_SIZE};
use smmuv3::pgtable::{decode_leaf, level_index, S2Desc, LAST_LEVEL};
// The descriptor encoders are the architecture's (lib/smmuv3), shared with
// guests that build their own stage 1 tables.
pub use smmuv3::pgtable::{leaf, Prot, Stage, MAIR_IDX_DEVICE};

/// Input address bits of every table built here.
pub const IAS_BITS: u32 = 39;
/// T0SZ / S2T0SZ for [`IAS_BITS`].
pub const TSZ: u8 = (64 - IAS_BITS) as u8;
/// The level the walk starts at (STE.S2SL0 = 1; stage 1 with T0SZ 25).
pub const START_LEVEL: u8 = 1;
/// One past the highest input address.
pub const IAS_END: u64 = 1 << IAS_BITS;

/// A translation table: its stage and its root (level 1) table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTable {
    pub stage: Stage,
    pub root: Pages,
}

/// What [`PageTable::unmap_range`] removed: `count` pages, the lowest at
/// `first`, the highest at `last` (both 0 when none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmapped {
    pub count: u32,
    pub first: u64,
    pub last: u64,
}

/// The pieces of `[iova, iova + pages * 4 KiB)` inside one 2 MiB (one level
/// 3 table each): (start, pages).
fn chunks(iova: u64, pages: u32) -> impl Iterator<Item = (u64, usize)> {
    const SPAN: u64 = 1 << 21;
    let end = iova + pages as u64 * PAGE_SIZE as u64;
    let mut a = iova;
    core::iter::from_fn(move || {
        if a >= end {
            return None;
        }
        let stop = ((a | (SPAN - 1)) + 1).min(end);
        let piece = (a, ((stop - a) / PAGE_SIZE as u64) as usize);
        a = stop;
        Some(piece)
    })
}

/// A page-aligned input address inside the table's range.
pub fn valid_iova(iova: u64) -> bool {
    iova.is_multiple_of(PAGE_SIZE as u64) && iova < IAS_END
}

impl PageTable {
    /// An empty table (one zeroed root page).
    pub fn new(mem: &impl DmaMemory, alloc: &mut PageAlloc, stage: Stage) -> Result<Self> {
        let root = alloc.alloc(0)?;
        mem.zero(root.off, PAGE_SIZE);
        mem.publish();
        Ok(Self { stage, root })
    }

    /// Region offset of the table a table descriptor points at.
    fn next_table(mem: &impl DmaMemory, raw: u64, level: u8) -> Option<usize> {
        let d = S2Desc(raw);
        if !d.is_table(level) {
            return None;
        }
        mem.offset_of(d.table_addr())
    }

    /// Region offset of the level 3 descriptor for `iova`, if its tables
    /// exist.
    fn leaf_slot(&self, mem: &impl DmaMemory, iova: u64) -> Option<usize> {
        let mut table = self.root.off;
        for level in START_LEVEL..LAST_LEVEL {
            let raw = mem.read64(table + level_index(iova, level) * 8);
            table = Self::next_table(mem, raw, level)?;
        }
        Some(table + level_index(iova, LAST_LEVEL) * 8)
    }

    /// The mapping of `iova`, if any.
    pub fn lookup(&self, mem: &impl DmaMemory, iova: u64) -> Option<(u64, Prot)> {
        let slot = self.leaf_slot(mem, iova)?;
        decode_leaf(self.stage, mem.read64(slot))
    }

    /// Number of tables a [`PageTable::map`] of `iova` would allocate.
    pub fn tables_needed(&self, mem: &impl DmaMemory, iova: u64) -> usize {
        let mut table = self.root.off;
        for level in START_LEVEL..LAST_LEVEL {
            let raw = mem.read64(table + level_index(iova, level) * 8);
            match Self::next_table(mem, raw, level) {
                Some(t) => table = t,
                None => return (LAST_LEVEL - level) as usize,
            }
        }
        0
    }

    /// Maps the 4 KiB page at `iova` to `pa`. The caller has checked
    /// alignment and range. Fails with AlreadyExists if the page is mapped
    /// and NoSpace if a table cannot be allocated (then nothing is mapped;
    /// tables allocated on the way stay, empty).
    pub fn map(
        &mut self,
        mem: &impl DmaMemory,
        alloc: &mut PageAlloc,
        iova: u64,
        pa: u64,
        prot: Prot,
    ) -> Result<()> {
        let mut table = self.root.off;
        for level in START_LEVEL..LAST_LEVEL {
            let slot = table + level_index(iova, level) * 8;
            let raw = mem.read64(slot);
            table = match Self::next_table(mem, raw, level) {
                Some(t) => t,
                None if raw & S2Desc::VALID.mask() != 0 => {
                    // A block or a table outside our memory: never written
                    // by this module.
                    return Err(Error::HardwareError);
                }
                None => {
                    let t = alloc.alloc(0)?;
                    mem.zero(t.off, PAGE_SIZE);
                    // The new table must be seen zeroed before it is linked.
                    mem.publish();
                    mem.write64(slot, S2Desc::table(t.pa).raw());
                    t.off
                }
            };
        }
        let slot = table + level_index(iova, LAST_LEVEL) * 8;
        if mem.read64(slot) & S2Desc::VALID.mask() != 0 {
            return Err(Error::AlreadyExists);
        }
        mem.write64(slot, leaf(self.stage, pa, prot));
        mem.publish();
        Ok(())
    }

    /// Unmaps the page at `iova`; true if it was mapped. The caller
    /// invalidates the TLBs.
    pub fn unmap(&mut self, mem: &impl DmaMemory, iova: u64) -> bool {
        match self.leaf_slot(mem, iova) {
            Some(slot) if mem.read64(slot) & S2Desc::VALID.mask() != 0 => {
                mem.write64(slot, 0);
                mem.publish();
                true
            }
            _ => false,
        }
    }

    /// Region offset of the level 3 table covering `iova`, if its tables
    /// exist (one walk of levels 1 and 2).
    fn l3_table(&self, mem: &impl DmaMemory, iova: u64) -> Option<usize> {
        let mut table = self.root.off;
        for level in START_LEVEL..LAST_LEVEL {
            let raw = mem.read64(table + level_index(iova, level) * 8);
            table = Self::next_table(mem, raw, level)?;
        }
        Some(table)
    }

    /// Whether any page of `[iova, iova + pages * 4 KiB)` is mapped (the
    /// range is inside the table: checked by the caller). Walks the upper
    /// levels once per 2 MiB, then scans the leaf run.
    pub fn any_mapped(&self, mem: &impl DmaMemory, iova: u64, pages: u32) -> bool {
        chunks(iova, pages).any(|(a, n)| match self.l3_table(mem, a) {
            Some(t) => mem.any_set(t + level_index(a, LAST_LEVEL) * 8, n, S2Desc::VALID.mask()),
            None => false,
        })
    }

    /// Upper bound of the tables a [`PageTable::map_range`] of the range
    /// allocates: the missing tables on the way to each 2 MiB chunk's
    /// level 3 table (a shared level 2 table counted once per chunk).
    pub fn tables_needed_range(&self, mem: &impl DmaMemory, iova: u64, pages: u32) -> usize {
        chunks(iova, pages)
            .map(|(a, _)| self.tables_needed(mem, a))
            .sum()
    }

    /// Maps `pages` pages from `iova` to consecutive pages from `pa`: one
    /// walk per 2 MiB chunk, then the chunk's leaf descriptors in one run,
    /// one barrier at the end. The caller has checked alignment, range,
    /// that no page is mapped ([`PageTable::any_mapped`]) and that the
    /// tables fit ([`PageTable::tables_needed_range`]); NoSpace can then
    /// only come from a concurrent allocation, and leaves the chunks
    /// before it mapped (the caller's all-or-nothing check is done first).
    pub fn map_range(
        &mut self,
        mem: &impl DmaMemory,
        alloc: &mut PageAlloc,
        iova: u64,
        pa: u64,
        pages: u32,
        prot: Prot,
    ) -> Result<()> {
        let template = leaf(self.stage, 0, prot);
        for (a, n) in chunks(iova, pages) {
            let table = self.l3_table_or_alloc(mem, alloc, a)?;
            let out = pa + (a - iova);
            mem.write_run(
                table + level_index(a, LAST_LEVEL) * 8,
                n,
                template | (out & S2Desc::OUTPUT_ADDR.mask()),
                PAGE_SIZE as u64,
            );
        }
        mem.publish();
        Ok(())
    }

    /// The level 3 table covering `iova`, allocating (zeroed, published
    /// before it is linked) the missing tables on the way.
    fn l3_table_or_alloc(
        &mut self,
        mem: &impl DmaMemory,
        alloc: &mut PageAlloc,
        iova: u64,
    ) -> Result<usize> {
        let mut table = self.root.off;
        for level in START_LEVEL..LAST_LEVEL {
            let slot = table + level_index(iova, level) * 8;
            let raw = mem.read64(slot);
            table = match Self::next_table(mem, raw, level) {
                Some(t) => t,
                // A block or a table outside our memory: never written by
                // this module.
                None if raw & S2Desc::VALID.mask() != 0 => return Err(Error::HardwareError),
                None => {
                    let t = alloc.alloc(0)?;
                    mem.zero(t.off, PAGE_SIZE);
                    mem.publish();
                    mem.write64(slot, S2Desc::table(t.pa).raw());
                    t.off
                }
            };
        }
        Ok(table)
    }

    /// Unmaps every mapped page of `[iova, iova + pages * 4 KiB)`; returns
    /// how many were mapped and the first and last of them (the span the
    /// caller invalidates). One walk per 2 MiB chunk, one barrier.
    pub fn unmap_range(&mut self, mem: &impl DmaMemory, iova: u64, pages: u32) -> Unmapped {
        let mut r = Unmapped {
            count: 0,
            first: 0,
            last: 0,
        };
        for (a, n) in chunks(iova, pages) {
            let Some(t) = self.l3_table(mem, a) else {
                continue;
            };
            let (k, f, l) =
                mem.clear_set(t + level_index(a, LAST_LEVEL) * 8, n, S2Desc::VALID.mask());
            if k > 0 {
                if r.count == 0 {
                    r.first = a + (f * PAGE_SIZE) as u64;
                }
                r.last = a + (l * PAGE_SIZE) as u64;
                r.count += k as u32;
            }
        }
        if r.count > 0 {
            mem.publish();
        }
        r
    }

    /// Frees every table (not the mapped pages: they are the VM's).
    pub fn destroy(self, mem: &impl DmaMemory, alloc: &mut PageAlloc) {
        Self::free_level(mem, alloc, self.root.off, START_LEVEL);
    }

    fn free_level(mem: &impl DmaMemory, alloc: &mut PageAlloc, table: usize, level: u8) {
        if level < LAST_LEVEL {
            for i in 0..PAGE_SIZE / 8 {
                let raw = mem.read64(table + i * 8);
                if let Some(next) = Self::next_table(mem, raw, level) {
                    Self::free_level(mem, alloc, next, level + 1);
                }
            }
        }
        if let Some(p) = alloc.run_at(table, 0) {
            alloc.free(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::HostMem;
    use smmuv3::pgtable::{S1Ap, S1Desc, S2Ap};

    #[test]
    fn map_lookup_unmap_s2() {
        let mem = HostMem::new(0x4000_0000, 16 * PAGE_SIZE);
        let mut alloc = PageAlloc::new(mem.base_pa(), mem.size());
        let mut pt = PageTable::new(&mem, &mut alloc, Stage::S2).unwrap();
        assert_eq!(pt.tables_needed(&mem, 0x10_0000), 2);
        pt.map(&mem, &mut alloc, 0x10_0000, 0x4123_4000, Prot::RW)
            .unwrap();
        assert_eq!(alloc.free_pages(), 16 - 3);
        assert_eq!(pt.tables_needed(&mem, 0x10_1000), 0);
        assert_eq!(pt.lookup(&mem, 0x10_0000), Some((0x4123_4000, Prot::RW)));
        assert_eq!(
            pt.map(&mem, &mut alloc, 0x10_0000, 0x4000_0000, Prot::RO),
            Err(Error::AlreadyExists)
        );
        pt.map(&mem, &mut alloc, 0x10_1000, 0x4555_5000, Prot::RO)
            .unwrap();
        assert_eq!(pt.lookup(&mem, 0x10_1000), Some((0x4555_5000, Prot::RO)));
        // The descriptors are the architecture's: walk by hand.
        let l1 = S2Desc(mem.read64(pt.root.off));
        assert!(l1.is_table(1));
        let l2 = S2Desc(mem.read64(mem.offset_of(l1.table_addr()).unwrap()));
        assert!(l2.is_table(2));
        let l3off = mem.offset_of(l2.table_addr()).unwrap();
        let pte = S2Desc(mem.read64(l3off + 0x100 * 8));
        assert!(pte.is_leaf(3) && pte.af());
        assert_eq!(pte.s2ap(), S2Ap::ReadWrite);
        assert!(pt.unmap(&mem, 0x10_0000));
        assert!(!pt.unmap(&mem, 0x10_0000));
        assert_eq!(pt.lookup(&mem, 0x10_0000), None);
        pt.destroy(&mem, &mut alloc);
        assert_eq!(alloc.free_pages(), 16);
    }

    proptest::proptest! {
        /// Random maps and unmaps agree with a plain map of pages, and
        /// destroying the table returns every table page.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u64..64, 0u64..3, proptest::bool::ANY), 1..200)) {
            extern crate std;
            use std::collections::BTreeMap;
            let mem = HostMem::new(0x4000_0000, 64 * PAGE_SIZE);
            let mut alloc = PageAlloc::new(mem.base_pa(), mem.size());
            let mut pt = PageTable::new(&mem, &mut alloc, Stage::S2).unwrap();
            let mut reference = BTreeMap::new();
            for (page, region, map) in ops {
                // Pages spread over three 1 GiB regions and several 2 MiB
                // tables.
                let iova = (region << 30) | ((page * 0x3_3000) & 0x3fff_f000);
                let pa = 0x8000_0000 + page * 0x1000;
                if map {
                    let r = pt.map(&mem, &mut alloc, iova, pa, Prot::RW);
                    if let std::collections::btree_map::Entry::Vacant(e) = reference.entry(iova) {
                        proptest::prop_assert_eq!(r, Ok(()));
                        e.insert(pa);
                    } else {
                        proptest::prop_assert_eq!(r, Err(Error::AlreadyExists));
                    }
                } else {
                    proptest::prop_assert_eq!(pt.unmap(&mem, iova), reference.remove(&iova).is_some());
                }
            }
            for (iova, pa) in &reference {
                proptest::prop_assert_eq!(pt.lookup(&mem, *iova), Some((*pa, Prot::RW)));
            }
            pt.destroy(&mem, &mut alloc);
            proptest::prop_assert_eq!(alloc.free_pages(), 64);
        }
    }

    proptest::proptest! {
        /// The range operations agree with the page-by-page ones: the same
        /// descriptors, the same tables, the same answer to "mapped?", and
        /// an unmap that reports exactly the pages it removed.
        #[test]
        fn range_ops_match_page_ops(
            start in 0u64..1200,
            pages in 1u32..700,
            holes in proptest::collection::vec(0u64..700, 0..8),
            s1 in proptest::bool::ANY,
        ) {
            let stage = if s1 { Stage::S1 } else { Stage::S2 };
            let iova = 0x4000_0000 - 0x20_0000 + start * 0x1000;
            let pa = 0x8_0000_0000 + start * 0x1000;
            let mem = HostMem::new(0x4000_0000, 16 * PAGE_SIZE);
            let mut alloc = PageAlloc::new(mem.base_pa(), mem.size());
            let mut pt = PageTable::new(&mem, &mut alloc, stage).unwrap();
            let mem2 = HostMem::new(0x4000_0000, 16 * PAGE_SIZE);
            let mut alloc2 = PageAlloc::new(mem2.base_pa(), mem2.size());
            let mut by_page = PageTable::new(&mem2, &mut alloc2, stage).unwrap();
            let need = pt.tables_needed_range(&mem, iova, pages);
            proptest::prop_assert!(!pt.any_mapped(&mem, iova, pages));
            pt.map_range(&mem, &mut alloc, iova, pa, pages, Prot::RW).unwrap();
            proptest::prop_assert!(16 - 1 - alloc.free_pages() <= need);
            for p in 0..pages as u64 {
                by_page.map(&mem2, &mut alloc2, iova + p * 0x1000, pa + p * 0x1000, Prot::RW).unwrap();
            }
            for p in 0..pages as u64 {
                let a = iova + p * 0x1000;
                proptest::prop_assert_eq!(pt.lookup(&mem, a), by_page.lookup(&mem2, a));
                proptest::prop_assert_eq!(
                    mem.read64(pt.leaf_slot(&mem, a).unwrap()),
                    leaf(stage, pa + p * 0x1000, Prot::RW)
                );
                proptest::prop_assert!(pt.any_mapped(&mem, a, 1));
            }
            proptest::prop_assert!(!pt.any_mapped(&mem, iova + pages as u64 * 0x1000, 1));
            proptest::prop_assert!(!pt.any_mapped(&mem, iova - 0x1000, 1));
            proptest::prop_assert_eq!(alloc.free_pages(), alloc2.free_pages());
            // Holes, then one unmap over everything (and a page beyond).
            let mut left = pages;
            for h in holes.iter().filter(|h| **h < pages as u64) {
                if pt.unmap(&mem, iova + h * 0x1000) {
                    left -= 1;
                }
            }
            let mapped: std::vec::Vec<u64> = (0..pages as u64)
                .map(|p| iova + p * 0x1000)
                .filter(|a| pt.lookup(&mem, *a).is_some())
                .collect();
            let r = pt.unmap_range(&mem, iova, pages + 1);
            proptest::prop_assert_eq!(r.count, left);
            if left > 0 {
                proptest::prop_assert_eq!(r.first, mapped[0]);
                proptest::prop_assert_eq!(r.last, *mapped.last().unwrap());
            }
            proptest::prop_assert!(!pt.any_mapped(&mem, iova, pages));
            proptest::prop_assert_eq!(pt.unmap_range(&mem, iova, pages).count, 0);
        }
    }

    #[test]
    fn exec_and_device_attributes() {
        let mem = HostMem::new(0x4000_0000, 8 * PAGE_SIZE);
        let mut alloc = PageAlloc::new(mem.base_pa(), mem.size());
        for stage in [Stage::S1, Stage::S2] {
            let mut pt = PageTable::new(&mem, &mut alloc, stage).unwrap();
            let dev = Prot {
                device: true,
                ..Prot::RW
            };
            let x = Prot {
                exec: true,
                ..Prot::RO
            };
            pt.map(&mem, &mut alloc, 0x1000, 0x9000_0000, dev).unwrap();
            pt.map(&mem, &mut alloc, 0x2000, 0x9000_1000, x).unwrap();
            assert_eq!(pt.lookup(&mem, 0x1000), Some((0x9000_0000, dev)));
            assert_eq!(pt.lookup(&mem, 0x2000), Some((0x9000_1000, x)));
            pt.destroy(&mem, &mut alloc);
        }
        assert_eq!(Prot::from_bits(Prot::RW.bits()), Some(Prot::RW));
        assert_eq!(Prot::from_bits(0), None);
        assert_eq!(Prot::from_bits(4), None, "exec alone grants no access");
        assert_eq!(Prot::from_bits(16), None);
    }

    #[test]
    fn s1_permissions_and_exhaustion() {
        let mem = HostMem::new(0x8000_0000, 2 * PAGE_SIZE);
        let mut alloc = PageAlloc::new(mem.base_pa(), mem.size());
        let mut pt = PageTable::new(&mem, &mut alloc, Stage::S1).unwrap();
        assert_eq!(
            pt.map(&mem, &mut alloc, 0x1000, 0x9000_0000, Prot::RO),
            Err(Error::NoSpace),
            "needs two tables, one page left"
        );
        assert_eq!(pt.lookup(&mem, 0x1000), None);
        let raw = leaf(Stage::S1, 0x9000_0000, Prot::RO);
        assert_eq!(S1Desc(raw).ap(), S1Ap::RoAny);
        assert!(S1Desc(raw).ng());
        assert_eq!(S1Desc(leaf(Stage::S1, 0, Prot::WO)).ap(), S1Ap::RwAny);
        assert!(valid_iova(IAS_END - 0x1000) && !valid_iova(IAS_END) && !valid_iova(0x10));
    }
}
