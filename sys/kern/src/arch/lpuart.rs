//! NXP i.MX LPUART (low-power UART) as found on i.MX7ULP, i.MX8ULP, i.MX93
//! and i.MX95, polled, transmit only.
//!
//! Register facts (offsets, bit) from NXP's public Linux driver,
//! drivers/tty/serial/fsl_lpuart.c: the 32-bit register block is BAUD 0x00,
//! STAT 0x04, CTRL 0x08, DATA 0x0C, and on the i.MX7ULP/8ULP family
//! (`reg_off = IMX_REG_OFF`, 0x10: VERID, PARAM, GLOBAL and PINCFG come
//! first) it starts at +0x10. i.MX95's `lpuart` nodes are compatible with
//! "fsl,imx8ulp-lpuart" (imx95.dtsi), so STAT is at 0x14 and DATA at 0x1C.
//! STAT.TDRE (bit 23) is 1 while the transmit buffer / FIFO has room.
//!
//! The UART is left as the firmware configured it (baud rate, clock, pins,
//! CTRL.TE): U-Boot on the i.MX95 EVK uses lpuart1 as its console.

pub struct Lpuart {
    base: usize,
}

/// The 32-bit register block's offset inside the LPUART page.
const REG_OFF: usize = 0x10;
const STAT: usize = REG_OFF + 0x04;
const DATA: usize = REG_OFF + 0x0C;
/// STAT.TDRE: transmit data register empty.
const STAT_TDRE: u32 = 1 << 23;

impl Lpuart {
    pub fn new(base: usize) -> Self {
        Lpuart { base }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // A real serial terminal needs CR before LF (QEMU's stdio
            // console does not, so the PL011 sends bytes unchanged).
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
    }

    fn put(&mut self, b: u8) {
        // SAFETY: the board's LPUART registers, mapped device memory for
        // the kernel (the build checks the base lies in a kernel-devices
        // range); STAT and DATA are 32-bit registers.
        unsafe {
            while core::ptr::read_volatile((self.base + STAT) as *const u32) & STAT_TDRE == 0 {}
            core::ptr::write_volatile((self.base + DATA) as *mut u32, b as u32);
        }
    }
}
