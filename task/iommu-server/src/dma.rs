//! The driver's view of its DMA memory: one physically contiguous region
//! the SMMU reads (stream table, CD tables, page tables, command queue) and
//! writes (event queue), reached by the CPU through a mapping.
//!
//! In the image the region is app.toml's `smmu-tables` (`sys_region_info`
//! gives its VA and PA); the host harness backs it with its model's
//! physical memory. Everything the driver stores there goes through the
//! [`DmaMemory`] trait as naturally aligned 64-bit accesses, which is also
//! the single-copy atomicity the STE/CD update protocol relies on.

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
        Self { va, pa, size }
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
            unsafe { core::ptr::write_volatile(p, value.to_le()) }
        }
    }

    fn publish(&self) {
        barrier();
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
