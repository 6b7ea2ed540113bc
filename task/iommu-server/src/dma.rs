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
