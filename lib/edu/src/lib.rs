//! QEMU's `edu` PCI device: a small DMA engine, the one DMA-capable device
//! QEMU's `virt` offers behind its SMMUv3. This crate finds it on PCI bus 0
//! through ECAM, places its BAR0, enables it and runs DMAs.
//!
//! Facts (QEMU `hw/misc/edu.c`, measured in SMMUV3-ON-QEMU.md): vendor 0x1234,
//! device 0x11e8; BAR0 is 1 MiB; registers 0x80 source, 0x88 destination,
//! 0x90 count, 0x98 command (bit 0 run, bit 1 direction: 1 = buffer → RAM,
//! bit 2 raise an interrupt); its internal 4 KiB buffer is at device address
//! 0x40000. A DMA completes 100 ms of *virtual* time after it is started.
//! By default edu masks DMA addresses to 28 bits: use small IOVAs.
//!
//! The caller supplies where ECAM and a BAR window are mapped, and how to
//! wait; nothing here knows about tasks or system calls.

#![no_std]

/// Vendor and device id of edu, as the first config-space word reads.
pub const EDU_ID: u32 = 0x11e8_1234;
/// edu's identification register (BAR0 + 0): major 1, minor 0, 0xed.
pub const EDU_IDENT: u32 = 0x0100_00ed;
/// The device address of edu's internal buffer.
pub const EDU_BUFFER: u64 = 0x4_0000;
/// Bytes in edu's internal buffer.
pub const EDU_BUFFER_LEN: usize = 4096;

const REG_SRC: usize = 0x80;
const REG_DST: usize = 0x88;
const REG_COUNT: usize = 0x90;
const REG_CMD: usize = 0x98;
const CMD_RUN: u64 = 1 << 0;
const CMD_TO_RAM: u64 = 1 << 1;

/// A mapped window: where this task reaches it and where the bus sees it.
#[derive(Copy, Clone, Debug)]
pub struct Window {
    pub va: usize,
    pub pa: usize,
    pub size: usize,
}

/// Why edu could not be used.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EduError {
    /// No 1234:11e8 function on bus 0.
    NotFound,
    /// BAR0 does not fit (size or alignment) the given window.
    BarDoesNotFit,
    /// The identification register does not read 0x010000ed.
    WrongIdentity,
    /// A DMA longer than edu's buffer.
    TooLong,
    /// The DMA did not complete within the wait budget.
    Timeout,
}

/// The edu device, enabled, with BAR0 at `regs`.
pub struct Edu {
    regs: usize,
    /// Its requester id: bus << 8 | device << 3 | function, which is its
    /// StreamID behind the SMMU on `virt`.
    pub sid: u32,
}

fn r32(a: usize) -> u32 {
    // SAFETY: callers pass addresses inside the ECAM or BAR windows the
    // caller of `Edu::find` vouched for (mapped device memory).
    unsafe { core::ptr::read_volatile(a as *const u32) }
}

fn w32(a: usize, v: u32) {
    // SAFETY: as in `r32`.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}

impl Edu {
    /// Scans bus 0 (function 0 of each device) for edu, places BAR0 at the
    /// start of `bars`, and enables memory decoding and bus mastering.
    ///
    /// # Safety
    /// `ecam.va` must map bus 0's configuration space (1 MiB) and `bars.va`
    /// a PCI memory window (device memory) that nothing else uses.
    pub unsafe fn find(ecam: Window, bars: Window) -> Result<Edu, EduError> {
        for dev in 0..32usize {
            let cfg = ecam.va + (dev << 15);
            if r32(cfg) != EDU_ID {
                continue;
            }
            // Decoding off while BAR0 is sized and placed.
            w32(cfg + 0x04, 0);
            w32(cfg + 0x10, 0xffff_ffff);
            let size = (!(r32(cfg + 0x10) & !0xf)).wrapping_add(1) as usize;
            if size == 0 || size > bars.size || !bars.pa.is_multiple_of(size) {
                return Err(EduError::BarDoesNotFit);
            }
            w32(cfg + 0x10, bars.pa as u32);
            // Memory space + bus master.
            w32(cfg + 0x04, 0x6);
            let edu = Edu {
                regs: bars.va,
                sid: (dev << 3) as u32,
            };
            if r32(edu.regs) != EDU_IDENT {
                return Err(EduError::WrongIdentity);
            }
            return Ok(edu);
        }
        Err(EduError::NotFound)
    }

    /// edu whose BAR0 the platform has already placed, enabled and mapped
    /// at `regs` (on an image with a device table pci-server does that:
    /// docs/devices.md); `sid` is its StreamID. Checks the identification
    /// register. Bus mastering is the caller's to turn on (through
    /// pci-server).
    ///
    /// # Safety
    /// `regs` must map edu's BAR0 (1 MiB of device memory) in this task.
    pub unsafe fn at(regs: usize, sid: u32) -> Result<Edu, EduError> {
        let edu = Edu { regs, sid };
        if r32(edu.regs) != EDU_IDENT {
            return Err(EduError::WrongIdentity);
        }
        Ok(edu)
    }

    /// Reads the identification register (BAR0 + 0): `EDU_IDENT` while edu
    /// answers at `regs`.
    pub fn ident(&self) -> u32 {
        r32(self.regs)
    }

    fn w64(&self, off: usize, v: u64) {
        // SAFETY: inside BAR0 (1 MiB), mapped per `find`'s contract; edu's
        // DMA registers take 64-bit writes.
        unsafe { core::ptr::write_volatile((self.regs + off) as *mut u64, v) }
    }

    /// Starts a DMA of `len` bytes between `addr` (a bus address: an IOVA
    /// behind the SMMU) and edu's buffer — `to_ram`: buffer → `addr`, else
    /// `addr` → buffer — then waits: `wait()` is called between polls (sleep
    /// there: under `-icount sleep=off` idle time costs no wall time) until
    /// it returns false.
    pub fn dma(
        &self,
        addr: u64,
        len: usize,
        to_ram: bool,
        mut wait: impl FnMut() -> bool,
    ) -> Result<(), EduError> {
        if len > EDU_BUFFER_LEN {
            return Err(EduError::TooLong);
        }
        let (src, dst) = if to_ram {
            (EDU_BUFFER, addr)
        } else {
            (addr, EDU_BUFFER)
        };
        self.w64(REG_SRC, src);
        self.w64(REG_DST, dst);
        self.w64(REG_COUNT, len as u64);
        self.w64(REG_CMD, CMD_RUN | if to_ram { CMD_TO_RAM } else { 0 });
        loop {
            if r32(self.regs + REG_CMD) as u64 & CMD_RUN == 0 {
                return Ok(());
            }
            if !wait() {
                return Err(EduError::Timeout);
            }
        }
    }
}
