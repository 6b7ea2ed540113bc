//! The kernel console, polled. Tasks log through the `log` system call, so
//! only the kernel touches it and lines never interleave. Which UART it is
//! comes from the board file (`console = { kind = ..., base = ... }`),
//! through the generated `kern::config::Board`.
//!
//! Neither driver programs baud rate, clocks or pins: the firmware that
//! loaded the image (QEMU, U-Boot) left the UART enabled, and the kernel
//! only writes bytes.

use crate::config::{Console as ConsoleDesc, ConsoleKind};

use super::lpuart::Lpuart;

/// Arm PL011 (PrimeCell UART, DDI 0183): DR at 0x00, FR at 0x18.
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

/// The board's console UART.
pub enum Console {
    Pl011(Pl011),
    Lpuart(Lpuart),
}

impl Console {
    pub fn new(desc: ConsoleDesc) -> Self {
        match desc.kind {
            ConsoleKind::Pl011 => Console::Pl011(Pl011::new(desc.base)),
            ConsoleKind::Lpuart => Console::Lpuart(Lpuart::new(desc.base)),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        match self {
            Console::Pl011(u) => u.write(bytes),
            Console::Lpuart(u) => u.write(bytes),
        }
    }
}
