//! The kernel console: a PL011, polled. Tasks log through the `log` system
//! call, so only the kernel touches it and lines never interleave.

pub struct Pl011 {
    base: usize,
}

const DR: usize = 0x00;
const FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

impl Pl011 {
    pub fn new(base: usize) -> Self {
        Pl011 { base }
    }
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: the board's UART registers, mapped device memory for the
            // kernel; FR and DR are 32-bit registers.
            unsafe {
                while core::ptr::read_volatile((self.base + FR) as *const u32) & FR_TXFF != 0 {}
                core::ptr::write_volatile((self.base + DR) as *mut u32, b as u32);
            }
        }
    }
}
