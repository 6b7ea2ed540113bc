//! The driver's view of its DMA memory: one physically contiguous region
//! the SMMU reads (stream table, CD tables, page tables, command queue) and
//! writes (event queue), reached by the CPU through a mapping.
//!
//! In the image the region is app.toml's `smmu-tables` (`sys_region_info`
//! gives its VA and PA); the host harness backs it with its model's
//! physical memory. Everything the driver stores there goes through the
//! [`DmaMemory`] trait as naturally aligned 64-bit accesses, which is also
//! the single-copy atomicity the STE/CD update protocol relies on.
//!
//! # Coherency
//!
//! Whether the SMMU's table walks and queue accesses snoop the CPU's
//! caches is a board fact (boards/*.toml `smmu-coherent`, checked against
//! IDR0.COHACC at start). On a non-coherent SMMU (IHI 0070 §3.15) the
//! region stays mapped Normal write-back in the task — so the kernel's own
//! cacheable view of it never disagrees — and every implementation of
//! [`DmaMemory`] keeps it correct in one place, its stores:
//!
//! - every store *cleans* the line it wrote to the point of coherency
//!   (DC CVAC; runs clean each line once, after its last store), and
//!   [`DmaMemory::publish`] — which the driver already calls before every
//!   CMDQ_PROD write, so before each CFGI/TLBI/SYNC — is a DSB that waits
//!   for those cleans. No driver path can store to SMMU-visible memory
//!   without cleaning, because there is no other way to store;
//! - before reading what the SMMU wrote (event records), the reader calls
//!   [`DmaMemory::refresh`]: DC CIVAC over the entries (clean first, so a
//!   dirty line can never be lost; EL0 cannot execute DC IVAC), then DSB.
//!
//! The SMMU is told to access the region Non-cacheable in that mode (CR1
//! and the STE/CD walk attributes, [`DmaMemory::coherent`]).

/// One DMA region: `size` bytes at physical address `base_pa`.
///
/// Offsets are in bytes from the start of the region. Implementations must
/// not panic: an access outside the region (a driver bug) reads 0 and
/// writes nothing.
pub trait DmaMemory {
    /// Physical address of byte 0 (what the SMMU is told).
    fn base_pa(&self) -> u64;
    /// Size in bytes.
    fn size(&self) -> usize;
    /// 64-bit little-endian load at `off` (8-byte aligned).
    fn read64(&self, off: usize) -> u64;
    /// 64-bit little-endian store at `off` (8-byte aligned), single-copy
    /// atomic.
    fn write64(&self, off: usize, value: u64);
    /// Makes every store so far visible to the SMMU before the next
    /// register write (a `dsb` on AArch64).
    fn publish(&self);
    /// Orders later loads from the region after an earlier register read
    /// (reading event records after EVENTQ_PROD).
    fn acquire(&self) {
        self.publish()
    }
    /// Whether the SMMU accesses this memory coherently with the CPU's
    /// caches. When false, every store cleans its line (see the module
    /// doc) and the driver programs Non-cacheable walk/queue attributes.
    fn coherent(&self) -> bool;
    /// Makes `len` bytes at `off` that the SMMU wrote visible to the CPU's
    /// next loads: nothing when coherent, else clean-and-invalidate each
    /// line (DC CIVAC) and wait (DSB). Call after [`DmaMemory::acquire`].
    fn refresh(&self, off: usize, len: usize);

    /// Zeroes `len` bytes at `off` (both 8-byte multiples).
    fn zero(&self, off: usize, len: usize) {
        let mut o = off;
        while o < off + len {
            self.write64(o, 0);
            o += 8;
        }
    }

    /// Whether any of the `n` 64-bit words at `off` has a bit of `mask`
    /// set (is any descriptor of a run valid).
    fn any_set(&self, off: usize, n: usize, mask: u64) -> bool {
        (0..n).any(|i| self.read64(off + 8 * i) & mask != 0)
    }

    /// Stores `first`, `first + step`, `first + 2 * step`, ... into the
    /// `n` 64-bit words at `off` (leaf descriptors of consecutive output
    /// addresses).
    fn write_run(&self, off: usize, n: usize, first: u64, step: u64) {
        let mut v = first;
        for i in 0..n {
            self.write64(off + 8 * i, v);
            v = v.wrapping_add(step);
        }
    }

    /// Zeroes those of the `n` 64-bit words at `off` that have a bit of
    /// `mask` set; returns how many, and the index of the first and of the
    /// last (0, 0 when none).
    fn clear_set(&self, off: usize, n: usize, mask: u64) -> (usize, usize, usize) {
        let (mut count, mut first, mut last) = (0, 0, 0);
        for i in 0..n {
            if self.read64(off + 8 * i) & mask != 0 {
                self.write64(off + 8 * i, 0);
                if count == 0 {
                    first = i;
                }
                last = i;
                count += 1;
            }
        }
        (count, first, last)
    }

    /// The region offset of physical address `pa`, if it lies inside.
    fn offset_of(&self, pa: u64) -> Option<usize> {
        let off = pa.checked_sub(self.base_pa())?;
        (off < self.size() as u64).then_some(off as usize)
    }

    /// True when `[pa, pa + len)` overlaps the region.
    fn overlaps(&self, pa: u64, len: u64) -> bool {
        let base = self.base_pa();
        let end = base + self.size() as u64;
        let Some(last) = pa.checked_add(len) else {
            return true;
        };
        pa < end && last > base
    }
}

impl<T: DmaMemory + ?Sized> DmaMemory for &T {
    fn base_pa(&self) -> u64 {
        (**self).base_pa()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
    fn read64(&self, off: usize) -> u64 {
        (**self).read64(off)
    }
    fn write64(&self, off: usize, value: u64) {
        (**self).write64(off, value)
    }
    fn publish(&self) {
        (**self).publish()
    }
    fn acquire(&self) {
        (**self).acquire()
    }
    fn coherent(&self) -> bool {
        (**self).coherent()
    }
    fn refresh(&self, off: usize, len: usize) {
        (**self).refresh(off, len)
    }
    fn zero(&self, off: usize, len: usize) {
        (**self).zero(off, len)
    }
    fn any_set(&self, off: usize, n: usize, mask: u64) -> bool {
        (**self).any_set(off, n, mask)
    }
    fn write_run(&self, off: usize, n: usize, first: u64, step: u64) {
        (**self).write_run(off, n, first, step)
    }
    fn clear_set(&self, off: usize, n: usize, mask: u64) -> (usize, usize, usize) {
        (**self).clear_set(off, n, mask)
    }
}

/// The image's DMA region: mapped at `va` in this task, at `pa` for the
/// SMMU.
#[derive(Debug)]
pub struct DmaPtr {
    va: usize,
    pa: u64,
    size: usize,
    /// The D-cache line to clean by, when the SMMU is not coherent.
    line: Option<usize>,
}

impl DmaPtr {
    /// Wraps the region.
    ///
    /// # Safety
    /// For as long as the value exists: `[va, va + size)` is mapped
    /// readable and writable in this task, is the CPU view of the physical
    /// range `[pa, pa + size)`, is 8-byte aligned, and no Rust reference
    /// covers it (every access goes through this value's volatile accesses).
    pub const unsafe fn new(va: usize, pa: u64, size: usize) -> Self {
        Self {
            va,
            pa,
            size,
            line: None,
        }
    }

    /// The same region for a non-coherent SMMU: every store cleans its
    /// line, [`DmaMemory::refresh`] cleans and invalidates. The line size
    /// is CTR_EL0.DminLine, the smallest data cache line of any cache
    /// level, so a stride of it reaches every line.
    pub fn non_coherent(mut self) -> Self {
        self.line = Some(userlib::cache::dcache_line());
        self
    }

    /// Cleans every line of `[off, off + len)` (inside the region).
    #[inline]
    fn clean(&self, off: usize, len: usize) {
        if let Some(line) = self.line {
            userlib::cache::clean_range(self.va + off, len, line);
        }
    }

    fn ptr(&self, off: usize) -> Option<*mut u64> {
        (off.is_multiple_of(8) && off.checked_add(8)? <= self.size)
            .then(|| (self.va + off) as *mut u64)
    }

    /// The first of `n` words at `off`, if all of them lie inside.
    fn run(&self, off: usize, n: usize) -> Option<*mut u64> {
        let end = n.checked_mul(8)?.checked_add(off)?;
        (off.is_multiple_of(8) && end <= self.size).then(|| (self.va + off) as *mut u64)
    }
}

impl DmaMemory for DmaPtr {
    fn base_pa(&self) -> u64 {
        self.pa
    }

    fn size(&self) -> usize {
        self.size
    }

    fn read64(&self, off: usize) -> u64 {
        match self.ptr(off) {
            // SAFETY: `new`'s contract makes the region mapped, aligned and
            // free of references; `ptr` checked the access lies inside.
            // Volatile: the SMMU writes this memory behind the compiler.
            Some(p) => u64::from_le(unsafe { core::ptr::read_volatile(p) }),
            None => 0,
        }
    }

    fn write64(&self, off: usize, value: u64) {
        if let Some(p) = self.ptr(off) {
            // SAFETY: as in `read64`; the region is writable. Volatile: the
            // SMMU reads this memory behind the compiler.
            unsafe { core::ptr::write_volatile(p, value.to_le()) };
            self.clean(off, 8);
        }
    }

    fn publish(&self) {
        // Also completes the cleans of earlier stores (DSB after DC CVAC).
        barrier();
    }

    fn coherent(&self) -> bool {
        self.line.is_none()
    }

    fn refresh(&self, off: usize, len: usize) {
        let Some(line) = self.line else {
            return;
        };
        let Some(end) = off.checked_add(len).filter(|&e| e <= self.size) else {
            return;
        };
        userlib::cache::clean_invalidate_range(self.va + off, end - off, line);
        barrier();
    }

    fn zero(&self, off: usize, len: usize) {
        let Some(p) = self.run(off, len / 8) else {
            return;
        };
        for i in 0..len / 8 {
            // SAFETY: `run` checked that all words lie inside the region,
            // which `new`'s contract makes mapped, writable and
            // reference-free.
            unsafe { core::ptr::write_volatile(p.add(i), 0) };
        }
        self.clean(off, len);
    }

    // The run operations check the bounds once for the whole run (the
    // page-table fast paths), then touch each word like read64/write64.
    fn any_set(&self, off: usize, n: usize, mask: u64) -> bool {
        let Some(p) = self.run(off, n) else {
            return (0..n).any(|i| self.read64(off + 8 * i) & mask != 0);
        };
        // SAFETY: `run` checked that all `n` words lie inside the region,
        // which `new`'s contract makes mapped, aligned and reference-free.
        (0..n).any(|i| u64::from_le(unsafe { core::ptr::read_volatile(p.add(i)) }) & mask != 0)
    }

    fn write_run(&self, off: usize, n: usize, first: u64, step: u64) {
        let Some(p) = self.run(off, n) else {
            return;
        };
        let mut v = first;
        for i in 0..n {
            // SAFETY: as in `any_set`; the region is writable.
            unsafe { core::ptr::write_volatile(p.add(i), v.to_le()) };
            v = v.wrapping_add(step);
        }
        self.clean(off, 8 * n);
    }

    fn clear_set(&self, off: usize, n: usize, mask: u64) -> (usize, usize, usize) {
        let Some(p) = self.run(off, n) else {
            return (0, 0, 0);
        };
        let (mut count, mut first, mut last) = (0, 0, 0);
        for i in 0..n {
            // SAFETY: as in `write_run`.
            let v = u64::from_le(unsafe { core::ptr::read_volatile(p.add(i)) });
            if v & mask != 0 {
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(p.add(i), 0) };
                if count == 0 {
                    first = i;
                }
                last = i;
                count += 1;
            }
        }
        if count > 0 {
            self.clean(off + 8 * first, 8 * (last - first + 1));
        }
        (count, first, last)
    }
}

/// A full system barrier: stores to DMA memory complete before later
/// register writes, and register reads before later loads.
#[inline]
pub fn barrier() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `dsb sy` only orders memory accesses; it is allowed at EL0
    // and has no other effect.
    unsafe {
        core::arch::asm!("dsb sy", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;
    use userlib::cache::host::Op;

    /// Lines (VA, 64-byte aligned) of `[va, va + len)`.
    fn lines(va: usize, len: usize) -> Vec<usize> {
        (va & !63..va + len).step_by(64).collect()
    }

    fn cleaned(log: &[(Op, usize)]) -> Vec<usize> {
        let mut v: Vec<usize> = log
            .iter()
            .filter(|(op, _)| *op == Op::Clean)
            .map(|(_, va)| va & !63)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The image's non-coherent DMA memory cleans every line it stores
    /// to, through every store operation the driver has; the coherent one
    /// none; `refresh` clean-invalidates exactly the lines asked for.
    #[test]
    fn non_coherent_dmaptr_cleans_every_line_it_stores_to() {
        let mut buf = vec![0u64; 1024];
        let va = buf.as_mut_ptr() as usize;
        // SAFETY: `buf` is 8 KiB, 8-byte aligned, outlives `m`, and is only
        // accessed through `m` below.
        let m = unsafe { DmaPtr::new(va, 0x4000_0000, 8192) }.non_coherent();
        assert!(!m.coherent());
        let _ = userlib::cache::host_log();

        m.write64(0x48, 1);
        assert_eq!(cleaned(&userlib::cache::host_log()), lines(va + 0x48, 8));
        m.write_run(0x100, 20, 0x1000, 0x1000);
        assert_eq!(cleaned(&userlib::cache::host_log()), lines(va + 0x100, 160));
        m.zero(0x400, 0x100);
        assert_eq!(
            cleaned(&userlib::cache::host_log()),
            lines(va + 0x400, 0x100)
        );
        // clear_set: only the span of cleared words.
        m.write_run(0x800, 32, 1, 0);
        let _ = userlib::cache::host_log();
        m.write64(0x800, 0);
        m.write64(0x808, 0);
        let _ = userlib::cache::host_log();
        assert_eq!(m.clear_set(0x800, 32, 1), (30, 2, 31));
        assert_eq!(
            cleaned(&userlib::cache::host_log()),
            lines(va + 0x810, 30 * 8)
        );
        // A store outside the region stores and cleans nothing.
        m.write64(8192, 1);
        assert!(userlib::cache::host_log().is_empty());
        // Reads clean nothing; refresh clean-invalidates its lines.
        let _ = m.read64(0x48);
        assert!(userlib::cache::host_log().is_empty());
        m.refresh(0x1000, 32);
        assert_eq!(
            userlib::cache::host_log(),
            lines(va + 0x1000, 32)
                .into_iter()
                .map(|a| (Op::CleanInvalidate, a))
                .collect::<Vec<_>>()
        );

        // SAFETY: as above.
        let c = unsafe { DmaPtr::new(va, 0x4000_0000, 8192) };
        assert!(c.coherent());
        c.write64(0x48, 2);
        c.write_run(0x100, 20, 0, 0);
        c.zero(0x400, 0x100);
        c.refresh(0x1000, 32);
        assert!(userlib::cache::host_log().is_empty());
        drop(buf);
    }
}
