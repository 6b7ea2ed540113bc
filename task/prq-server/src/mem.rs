//! prq-server's one memory region (`prq-queues`, DMA memory the SMMU
//! writes): the event queue, the PRI queue and the journal, at fixed
//! offsets.
//!
//! The journal is the part of prq-server's state that must survive a
//! restart of the task (the region is static memory, not the task's
//! stack): one record per outstanding fault group. See [`crate::prq`]
//! for what it holds and how a new incarnation uses it.

/// The region as the task reaches it (the image's `DmaPtr`, the harness's
/// model memory).
pub trait QueueMemory {
    /// Physical address of offset 0 (what the SMMU's queue base registers
    /// hold).
    fn base_pa(&self) -> u64;
    /// Bytes.
    fn size(&self) -> usize;
    /// A 64-bit load at byte offset `off` (8-aligned, in bounds; else 0).
    fn read64(&self, off: usize) -> u64;
    /// A 64-bit store (8-aligned, in bounds; else dropped).
    fn write64(&self, off: usize, value: u64);
    /// Orders the queue loads that follow after the PROD read before them
    /// (a barrier on hardware; nothing on the host).
    fn acquire(&self) {}
    /// Makes the `len` bytes at `off` that the SMMU wrote (queue entries)
    /// visible to the next loads: nothing on a coherent SMMU; on a
    /// non-coherent one clean-and-invalidate each line (DC CIVAC), then
    /// DSB. Called after [`QueueMemory::acquire`], before reading an
    /// entry. The journal and routes are the CPU's alone and need none.
    fn refresh(&self, off: usize, len: usize);
}

/// Event queue: up to 128 entries of 32 bytes.
pub const EVTQ_OFF: usize = 0;
/// PRI queue: up to 256 entries of 16 bytes.
pub const PRIQ_OFF: usize = 0x1000;
/// Journal header (magic, hand-over number, incarnation), then one
/// record of [`JOURNAL_WORDS`] words per group slot.
pub const JOURNAL_OFF: usize = 0x2000;
pub const JOURNAL_SLOTS_OFF: usize = JOURNAL_OFF + 0x10;
pub const JOURNAL_WORDS: usize = 3;
/// Routes: one record of two words per route slot (valid, fault-capable,
/// owner; sid, pasid), from the first page after the group records.
pub const fn routes_off(groups: usize) -> usize {
    page_up(JOURNAL_SLOTS_OFF + groups * JOURNAL_WORDS * 8)
}

/// The region size a server with `groups` slots and `routes` routes needs.
pub const fn region_size(groups: usize, routes: usize) -> usize {
    routes_off(groups) + page_up(routes * 16)
}

const fn page_up(x: usize) -> usize {
    (x + 0xfff) & !0xfff
}

/// The production server's (`Prq`'s default sizes) route records.
pub const ROUTES_OFF: usize = routes_off(crate::prq::MAX_GROUPS);
/// The region size the production task needs (app.toml's `prq-queues`).
pub const REGION_SIZE: usize = region_size(crate::prq::MAX_GROUPS, crate::prq::MAX_ROUTES);
// The layout app.toml and journals of earlier builds were made for.
const _: () = assert!(ROUTES_OFF == 0x3000 && REGION_SIZE == 0x4000);
/// Marks a journal that a previous incarnation initialised ("PRQJRNL1").
pub const JOURNAL_MAGIC: u64 = 0x314c_4e52_4a51_5250;

/// The largest queues the layout holds.
pub const MAX_EVTQ_LOG2: u32 = 7;
pub const MAX_PRIQ_LOG2: u32 = 8;

/// A [`QueueMemory`] over a plain mapped range (the image's DMA region).
#[derive(Debug)]
pub struct DmaPtr {
    va: usize,
    pa: u64,
    size: usize,
    /// The D-cache line to maintain by, when the SMMU is not coherent.
    line: Option<usize>,
}

impl DmaPtr {
    /// # Safety
    /// `va..va + size` is mapped readable and writable for as long as the
    /// value exists, is physically contiguous at `pa`, 8-byte aligned, and
    /// no Rust reference covers it (the SMMU writes it behind the
    /// compiler's back, so every access here is volatile).
    pub const unsafe fn new(va: usize, pa: u64, size: usize) -> Self {
        Self {
            va,
            pa,
            size,
            line: None,
        }
    }

    /// The same region for a non-coherent SMMU (boards/*.toml
    /// `smmu-coherent = false`): [`QueueMemory::refresh`] invalidates.
    /// This task never stores to a queue entry, and the kernel cleans the
    /// zeros it writes at (re)start out of its cache (DMA regions), so no
    /// dirty line of ours can ever overwrite an entry the SMMU wrote.
    pub fn non_coherent(mut self) -> Self {
        self.line = Some(userlib::cache::dcache_line());
        self
    }

    fn ok(&self, off: usize) -> bool {
        off.is_multiple_of(8) && off.checked_add(8).is_some_and(|e| e <= self.size)
    }
}

impl QueueMemory for DmaPtr {
    fn base_pa(&self) -> u64 {
        self.pa
    }

    fn size(&self) -> usize {
        self.size
    }

    fn read64(&self, off: usize) -> u64 {
        if !self.ok(off) {
            return 0;
        }
        // SAFETY: `new`'s contract: mapped, aligned, no references; `ok`
        // keeps the access inside the range.
        unsafe { core::ptr::read_volatile((self.va + off) as *const u64) }
    }

    fn write64(&self, off: usize, value: u64) {
        if self.ok(off) {
            // SAFETY: as in `read64`; the range is writable.
            unsafe { core::ptr::write_volatile((self.va + off) as *mut u64, value) }
        }
    }

    fn acquire(&self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
    }

    fn refresh(&self, off: usize, len: usize) {
        let Some(line) = self.line else {
            return;
        };
        if off.checked_add(len).is_none_or(|e| e > self.size) {
            return;
        }
        userlib::cache::clean_invalidate_range(self.va + off, len, line);
        dsb();
    }
}

/// DSB SY: the maintenance above completes before the loads that follow.
fn dsb() {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    // SAFETY: a barrier only orders memory accesses; allowed at EL0.
    unsafe {
        core::arch::asm!("dsb sy", options(nostack, preserves_flags))
    };
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;
    use userlib::cache::host::Op;

    /// Non-coherent: `refresh` clean-invalidates exactly the entry's
    /// lines; stores (journal, routes) maintain nothing. Coherent: nothing.
    #[test]
    fn non_coherent_refresh_invalidates_the_entry_lines() {
        let mut buf = vec![0u64; REGION_SIZE / 8];
        let va = buf.as_mut_ptr() as usize;
        // SAFETY: `buf` is REGION_SIZE bytes, 8-byte aligned, outlives `m`
        // and `c`, and is only accessed through them.
        let m = unsafe { DmaPtr::new(va, 0x5000_0000, REGION_SIZE) }.non_coherent();
        // SAFETY: as above.
        let c = unsafe { DmaPtr::new(va, 0x5000_0000, REGION_SIZE) };
        let _ = userlib::cache::host_log();
        m.refresh(PRIQ_OFF + 0x30, 16);
        let want: Vec<(Op, usize)> = vec![(Op::CleanInvalidate, (va + PRIQ_OFF + 0x30) & !63)];
        assert_eq!(userlib::cache::host_log(), want);
        m.refresh(REGION_SIZE - 8, 16); // out of the region: nothing
        m.write64(JOURNAL_OFF, 1);
        c.refresh(PRIQ_OFF, 16);
        assert!(userlib::cache::host_log().is_empty());
        drop(buf);
    }
}
