//! The image's register frame: SMMU page 0, and page 1 when the app gives
//! it to this task. They are two separate app.toml peripherals
//! (`smmu-page0`, `smmu-page1`) mapped wherever the kernel placed them, so
//! the frame keeps one base per page. Without page 1 (the design gives it
//! to prq-server), page 1 registers read as 0 and writes are dropped; the
//! driver then leaves the event queue off.

use smmuv3::regs::offset::{PAGE1, PAGE_SIZE};
use smmuv3::Mmio;

/// SMMU registers through two page mappings.
#[derive(Debug)]
pub struct SmmuFrame {
    page0: usize,
    page1: Option<usize>,
}

impl SmmuFrame {
    /// # Safety
    /// `page0` (and `page1` if given) is the VA of the SMMU's register page
    /// 0 (1), mapped as Device memory, readable and writable, 64 KiB long
    /// and 64 KiB aligned, for as long as the value exists; no Rust
    /// reference covers those ranges.
    pub const unsafe fn new(page0: usize, page1: Option<usize>) -> Self {
        Self { page0, page1 }
    }

    /// True when page 1 (the queue PROD/CONS registers) is reachable.
    pub fn has_page1(&self) -> bool {
        self.page1.is_some()
    }

    fn addr(&self, offset: usize, size: usize) -> Option<usize> {
        if !offset.is_multiple_of(size) || offset + size > 2 * PAGE_SIZE {
            return None;
        }
        if offset >= PAGE1 {
            self.page1.map(|b| b + offset - PAGE1)
        } else {
            Some(self.page0 + offset)
        }
    }
}

impl Mmio for SmmuFrame {
    fn read32(&self, offset: usize) -> u32 {
        match self.addr(offset, 4) {
            // SAFETY: `new`'s contract: a mapped, aligned device page with
            // no references into it; `addr` keeps the access inside it.
            Some(a) => unsafe { core::ptr::read_volatile(a as *const u32) },
            None => 0,
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        if let Some(a) = self.addr(offset, 4) {
            // SAFETY: as in `read32`; the page is writable.
            unsafe { core::ptr::write_volatile(a as *mut u32, value) }
        }
    }

    fn read64(&self, offset: usize) -> u64 {
        match self.addr(offset, 8) {
            // SAFETY: as in `read32`; the driver issues 64-bit accesses
            // only to the 64-bit registers (`Mmio`'s contract).
            Some(a) => unsafe { core::ptr::read_volatile(a as *const u64) },
            None => 0,
        }
    }

    fn write64(&self, offset: usize, value: u64) {
        if let Some(a) = self.addr(offset, 8) {
            // SAFETY: as in `read64`; the page is writable.
            unsafe { core::ptr::write_volatile(a as *mut u64, value) }
        }
    }
}
