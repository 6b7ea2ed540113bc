//! Context descriptor tables the server owns: one CD for a server-managed
//! S1 domain, and per stream the table of PASID contexts bound on it.
//!
//! Layout follows the hardware: linear when the table has at most 64 CDs
//! (one page) or the SMMU lacks IDR0.CD2L, else 2-level with 4 KiB leaf
//! tables of 64 CDs allocated on demand. The addresses written into the
//! STE (S1ContextPtr) and into L1 descriptors are what the SMMU fetches
//! from: physical addresses, or — for a nested stream, whose CD fetches go
//! through stage 2 — IPAs in the S2 domain's context window, where the
//! server maps exactly these pages.

use crate::dma::DmaMemory;
use crate::error::{Error, Result};
use crate::pages::{PageAlloc, Pages, MAX_ORDER, PAGE_SIZE};
use smmuv3::{L1CdDesc, S1Fmt, CD_BYTES};

/// log2 of the CDs per leaf table (4 KiB / 64 B).
pub const LEAF_BITS: u32 = 6;

/// A CD table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CdTable {
    /// The linear table or the L1 table.
    pub root: Pages,
    /// STE.S1CDMax: log2 of the number of CDs.
    pub s1cdmax: u8,
    pub fmt: S1Fmt,
    /// What the SMMU calls region offset 0: the region's PA, or the
    /// context window's base IPA.
    pub smmu_base: u64,
}

impl CdTable {
    /// An empty table for 2^s1cdmax CDs.
    pub fn new(
        mem: &impl DmaMemory,
        alloc: &mut PageAlloc,
        s1cdmax: u8,
        two_level: bool,
        smmu_base: u64,
    ) -> Result<Self> {
        let (fmt, bytes) = if s1cdmax as u32 > LEAF_BITS && two_level {
            (S1Fmt::TwoLevel4K, 8usize << (s1cdmax as u32 - LEAF_BITS))
        } else {
            (S1Fmt::Linear, CD_BYTES << s1cdmax)
        };
        let pages = bytes.div_ceil(PAGE_SIZE).next_power_of_two();
        let order = pages.trailing_zeros();
        if order > MAX_ORDER as u32 {
            return Err(Error::NoSpace);
        }
        let root = alloc.alloc(order as u8)?;
        mem.zero(root.off, root.bytes());
        mem.publish();
        Ok(Self {
            root,
            s1cdmax,
            fmt,
            smmu_base,
        })
    }

    /// The SMMU's address of region offset `off`.
    pub fn smmu_addr(&self, off: usize) -> u64 {
        self.smmu_base + off as u64
    }

    /// STE.S1ContextPtr.
    pub fn context_ptr(&self) -> u64 {
        self.smmu_addr(self.root.off)
    }

    /// True if `ssid` is inside the table.
    pub fn covers(&self, ssid: u32) -> bool {
        (ssid as u64) < (1u64 << self.s1cdmax)
    }

    fn l1_off(&self, ssid: u32) -> usize {
        self.root.off + (ssid >> LEAF_BITS) as usize * 8
    }

    fn leaf_of(&self, mem: &impl DmaMemory, ssid: u32) -> Option<usize> {
        let d = L1CdDesc::from_words([mem.read64(self.l1_off(ssid))]);
        if !d.v() {
            return None;
        }
        let off = d.l2ptr().checked_sub(self.smmu_base)? as usize;
        (off + PAGE_SIZE <= mem.size()).then_some(off)
    }

    /// Region offset of `ssid`'s CD, if its leaf exists.
    pub fn cd_off(&self, mem: &impl DmaMemory, ssid: u32) -> Option<usize> {
        if !self.covers(ssid) {
            return None;
        }
        match self.fmt {
            S1Fmt::TwoLevel4K | S1Fmt::TwoLevel64K => {
                let leaf = self.leaf_of(mem, ssid)?;
                Some(leaf + (ssid as usize & ((1 << LEAF_BITS) - 1)) * CD_BYTES)
            }
            S1Fmt::Linear => Some(self.root.off + ssid as usize * CD_BYTES),
        }
    }

    /// True when `ssid` needs a leaf table first.
    pub fn needs_leaf(&self, mem: &impl DmaMemory, ssid: u32) -> bool {
        self.fmt != S1Fmt::Linear && self.covers(ssid) && self.leaf_of(mem, ssid).is_none()
    }

    /// Links a zeroed leaf page for `ssid` (the caller has made it
    /// reachable for the SMMU and issues CFGI_CD with Leaf = 0 + SYNC).
    pub fn install_leaf(&mut self, mem: &impl DmaMemory, ssid: u32, leaf: Pages) {
        mem.publish();
        let d = L1CdDesc::new(self.smmu_addr(leaf.off));
        mem.write64(self.l1_off(ssid), d.word(0));
        mem.publish();
    }

    /// Calls `f` with every page of the table (root run, then leaves).
    pub fn for_each_page(&self, mem: &impl DmaMemory, alloc: &PageAlloc, mut f: impl FnMut(Pages)) {
        f(self.root);
        if self.fmt == S1Fmt::Linear {
            return;
        }
        for i in 0..(1u32 << (self.s1cdmax as u32 - LEAF_BITS)) {
            if let Some(off) = self.leaf_of(mem, i << LEAF_BITS) {
                if let Some(p) = alloc.run_at(off, 0) {
                    f(p);
                }
            }
        }
    }

    /// Frees the table and its leaves.
    pub fn destroy(self, mem: &impl DmaMemory, alloc: &mut PageAlloc) {
        if self.fmt != S1Fmt::Linear {
            for i in 0..(1u32 << (self.s1cdmax as u32 - LEAF_BITS)) {
                if let Some(off) = self.leaf_of(mem, i << LEAF_BITS) {
                    mem.write64(self.l1_off(i << LEAF_BITS), 0);
                    if let Some(p) = alloc.run_at(off, 0) {
                        alloc.free(p);
                    }
                }
            }
        }
        alloc.free(self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::HostMem;

    #[test]
    fn linear_single_cd() {
        let mem = HostMem::new(0x4000_0000, 0x8000);
        let mut a = PageAlloc::new(mem.base_pa(), mem.size());
        let t = CdTable::new(&mem, &mut a, 0, true, mem.base_pa()).unwrap();
        assert_eq!(t.fmt, S1Fmt::Linear);
        assert_eq!(t.cd_off(&mem, 0), Some(t.root.off));
        assert_eq!(t.cd_off(&mem, 1), None);
        assert_eq!(t.context_ptr(), t.root.pa);
        t.destroy(&mem, &mut a);
        assert_eq!(a.free_pages(), 8);
    }

    #[test]
    fn two_level_leaves_on_demand_with_ipa_addresses() {
        let mem = HostMem::new(0x4000_0000, 0x10000);
        let mut a = PageAlloc::new(mem.base_pa(), mem.size());
        let window = 0x7f_c000_0000;
        let mut t = CdTable::new(&mem, &mut a, 10, true, window).unwrap();
        assert_eq!(t.fmt, S1Fmt::TwoLevel4K);
        assert_eq!(t.root.order, 0, "16 L1 descriptors");
        assert!(t.needs_leaf(&mem, 100));
        assert_eq!(t.cd_off(&mem, 100), None);
        let leaf = a.alloc(0).unwrap();
        t.install_leaf(&mem, 100, leaf);
        assert!(!t.needs_leaf(&mem, 64));
        assert_eq!(t.cd_off(&mem, 100), Some(leaf.off + 36 * 64));
        let d = L1CdDesc::from_words([mem.read64(t.root.off + 8)]);
        assert!(d.v());
        assert_eq!(d.l2ptr(), window + leaf.off as u64, "an IPA in the window");
        assert_eq!(t.context_ptr(), window + t.root.off as u64);
        let mut seen = 0;
        t.for_each_page(&mem, &a, |_| seen += 1);
        assert_eq!(seen, 2);
        t.destroy(&mem, &mut a);
        assert_eq!(a.free_pages(), 16);
    }
}
