//! The stream table: linear, or 2-level with level 2 tables allocated on
//! demand (for each stream of the static map at boot). Every STE the
//! server creates starts as V = 1, Config = abort; an L1 descriptor without
//! a level 2 table (Span = 0) also terminates the stream's transactions
//! (C_BAD_STREAMID). Nothing ever bypasses.

use crate::dma::DmaMemory;
use crate::error::{Error, Result};
use crate::pages::{PageAlloc, Pages, MAX_ORDER, PAGE_SHIFT};
use smmuv3::regs::STRTAB_BASE_CFG;
use smmuv3::{L1StreamDesc, Ste, StreamConfig, STE_BYTES};

/// StreamID bits resolved by a level 2 table (256 STEs, 16 KiB), as Linux.
pub const SPLIT: u32 = 8;

/// How the table is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// 2^log2size STEs in one array.
    Linear { log2size: u32 },
    /// 2^(log2size - split) L1 descriptors, each for 2^split STEs.
    TwoLevel { log2size: u32, split: u32 },
}

/// The abort STE: valid, Config = abort (the fail-closed default).
pub fn abort_ste() -> Ste {
    let mut s = Ste::zeroed();
    s.set_v(true).set_config(StreamConfig::Abort);
    s
}

/// The smallest order whose run holds `bytes`.
fn order_for(bytes: usize) -> Option<u8> {
    let pages = bytes.div_ceil(1 << PAGE_SHIFT).max(1);
    let order = pages.next_power_of_two().trailing_zeros();
    (order <= MAX_ORDER as u32).then_some(order as u8)
}

/// Bits needed to index `max_sid` (at least 1).
fn bits_for(max_sid: u32) -> u32 {
    (32 - max_sid.leading_zeros()).max(1)
}

/// The stream table.
#[derive(Clone, Debug)]
pub struct StreamTable {
    pub layout: Layout,
    /// The linear table or the L1 table.
    pub base: Pages,
}

impl StreamTable {
    /// Chooses the layout: 2-level when the SMMU has it and SIDSIZE exceeds
    /// [`SPLIT`], else linear just large enough for `max_sid` (SIDs past
    /// the table are out of range for the SMMU: C_BAD_STREAMID, abort).
    pub fn new(
        mem: &impl DmaMemory,
        alloc: &mut PageAlloc,
        sid_bits: u32,
        two_level: bool,
        max_sid: u32,
    ) -> Result<Self> {
        if bits_for(max_sid) > sid_bits && max_sid != 0 {
            return Err(Error::Unsupported);
        }
        let (layout, bytes) = if two_level && sid_bits > SPLIT {
            // The L1 table must fit one allocation: cap LOG2SIZE (SIDs above
            // it are out of range), but cover every configured stream.
            let max_l1_bits = MAX_ORDER as u32 + PAGE_SHIFT - 3;
            let log2size = sid_bits.min(SPLIT + max_l1_bits);
            if bits_for(max_sid) > log2size {
                return Err(Error::NoSpace);
            }
            (
                Layout::TwoLevel {
                    log2size,
                    split: SPLIT,
                },
                8usize << (log2size - SPLIT),
            )
        } else {
            let log2size = bits_for(max_sid).min(sid_bits);
            (Layout::Linear { log2size }, STE_BYTES << log2size)
        };
        let order = order_for(bytes).ok_or(Error::NoSpace)?;
        let base = alloc.alloc(order)?;
        mem.zero(base.off, base.bytes());
        if let Layout::Linear { log2size } = layout {
            let abort = abort_ste().words();
            for i in 0..(1usize << log2size) {
                for (w, v) in abort.iter().enumerate() {
                    mem.write64(base.off + i * STE_BYTES + w * 8, *v);
                }
            }
        }
        mem.publish();
        Ok(Self { layout, base })
    }

    /// STRTAB_BASE (with RA).
    pub fn base_value(&self) -> u64 {
        smmuv3::regs::strtab_base(self.base.pa, true).value
    }

    /// STRTAB_BASE_CFG.
    pub fn cfg_value(&self) -> u32 {
        match self.layout {
            Layout::Linear { log2size } => {
                (STRTAB_BASE_CFG::FMT::Linear + STRTAB_BASE_CFG::LOG2SIZE.val(log2size)).value
            }
            Layout::TwoLevel { log2size, split } => {
                (STRTAB_BASE_CFG::FMT::TwoLevel
                    + STRTAB_BASE_CFG::LOG2SIZE.val(log2size)
                    + STRTAB_BASE_CFG::SPLIT.val(split))
                .value
            }
        }
    }

    /// True when `sid` is inside the table's range.
    pub fn covers(&self, sid: u32) -> bool {
        let bits = match self.layout {
            Layout::Linear { log2size } | Layout::TwoLevel { log2size, .. } => log2size,
        };
        bits >= 32 || sid < (1u32 << bits)
    }

    fn l1_off(&self, sid: u32, split: u32) -> usize {
        self.base.off + (sid >> split) as usize * 8
    }

    /// Region offset of `sid`'s STE, if it exists.
    pub fn ste_off(&self, mem: &impl DmaMemory, sid: u32) -> Option<usize> {
        if !self.covers(sid) {
            return None;
        }
        match self.layout {
            Layout::Linear { .. } => Some(self.base.off + sid as usize * STE_BYTES),
            Layout::TwoLevel { split, .. } => {
                let d = L1StreamDesc::from_words([mem.read64(self.l1_off(sid, split))]);
                if d.span() == 0 {
                    return None;
                }
                let l2 = mem.offset_of(d.l2ptr())?;
                let idx = (sid & ((1 << split) - 1)) as usize;
                (idx < d.num_stes() as usize).then_some(l2 + idx * STE_BYTES)
            }
        }
    }

    /// Makes `sid`'s STE exist (2-level: allocates its level 2 table, all
    /// abort, and links it). Returns true if an L1 descriptor was written
    /// (the caller then issues CFGI_STE with Leaf = 0 + SYNC when the SMMU
    /// is live).
    pub fn ensure(
        &mut self,
        mem: &impl DmaMemory,
        alloc: &mut PageAlloc,
        sid: u32,
    ) -> Result<bool> {
        if !self.covers(sid) {
            return Err(Error::Invalid);
        }
        let Layout::TwoLevel { split, .. } = self.layout else {
            return Ok(false);
        };
        if self.ste_off(mem, sid).is_some() {
            return Ok(false);
        }
        let order = order_for(STE_BYTES << split).ok_or(Error::NoSpace)?;
        let l2 = alloc.alloc(order)?;
        let abort = abort_ste().words();
        for i in 0..(1usize << split) {
            for (w, v) in abort.iter().enumerate() {
                mem.write64(l2.off + i * STE_BYTES + w * 8, *v);
            }
        }
        // The STEs must be seen before the descriptor that makes them
        // reachable.
        mem.publish();
        mem.write64(
            self.l1_off(sid, split),
            L1StreamDesc::new(l2.pa, split).word(0),
        );
        mem.publish();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::HostMem;

    #[test]
    fn two_level_for_qemu_sizes() {
        let mem = HostMem::new(0x4000_0000, 0x20000);
        let mut a = PageAlloc::new(mem.base_pa(), mem.size());
        let mut t = StreamTable::new(&mem, &mut a, 16, true, 0x10).unwrap();
        assert_eq!(
            t.layout,
            Layout::TwoLevel {
                log2size: 16,
                split: 8
            }
        );
        assert_eq!(t.cfg_value(), 1 << 16 | 8 << 6 | 16);
        assert_eq!(t.ste_off(&mem, 0x10), None, "no L2 yet: C_BAD_STREAMID");
        assert!(t.ensure(&mem, &mut a, 0x10).unwrap());
        assert!(!t.ensure(&mem, &mut a, 0x08).unwrap(), "same L2 table");
        let off = t.ste_off(&mem, 0x10).unwrap();
        let ste = Ste::from_words(core::array::from_fn(|i| mem.read64(off + 8 * i)));
        assert_eq!(ste, abort_ste());
        let off8 = t.ste_off(&mem, 0x08).unwrap();
        assert_eq!(off - off8, 8 * STE_BYTES);
        // The L2 table is 16 KiB aligned (its size).
        let l2 = mem.base_pa() + (off - 0x10 * STE_BYTES) as u64;
        assert_eq!(l2 % 0x4000, 0);
        assert_eq!(a.free_pages(), 32 - 1 - 4);
        assert_eq!(t.ensure(&mem, &mut a, 0x1_0000), Err(Error::Invalid));
    }

    #[test]
    fn linear_when_small_or_no_two_level() {
        let mem = HostMem::new(0x4000_0000, 0x20000);
        let mut a = PageAlloc::new(mem.base_pa(), mem.size());
        let t = StreamTable::new(&mem, &mut a, 16, false, 0x10).unwrap();
        assert_eq!(t.layout, Layout::Linear { log2size: 5 });
        assert_eq!(t.cfg_value(), 5);
        let off = t.ste_off(&mem, 0x1f).unwrap();
        assert_eq!(
            Ste::from_words(core::array::from_fn(|i| mem.read64(off + 8 * i))),
            abort_ste()
        );
        assert_eq!(t.ste_off(&mem, 0x20), None);
        assert_eq!(
            StreamTable::new(&mem, &mut a, 4, true, 0x10).unwrap_err(),
            Error::Unsupported,
            "a configured SID wider than SIDSIZE"
        );
    }
}
