//! GICv3: distributor, this CPU's redistributor, and the system-register CPU
//! interface. All interrupts are Group 1, routed to CPU 0.

use super::sysreg::{self, isb, ICC_SRE_EL2};
use aarch64_cpu::registers::ReadWriteable;

pub struct Gic {
    gicd: usize,
    gicr: usize,
}

// Distributor.
const GICD_CTLR: usize = 0x0000;
const GICD_IGROUPR: usize = 0x0080;
const GICD_ISENABLER: usize = 0x0100;
const GICD_ICENABLER: usize = 0x0180;
const GICD_IPRIORITYR: usize = 0x0400;
const GICD_ICFGR: usize = 0x0C00;
const GICD_IROUTER: usize = 0x6000;
// Redistributor: RD frame, then SGI frame at +64 KiB (then, with
// GICR_TYPER.VLPIS, the VLPI and a reserved frame: 256 KiB in all).
const GICR_TYPER: usize = 0x0008;
const GICR_TYPER_VLPIS: u64 = 1 << 1;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_WAKER: usize = 0x0014;
const SGI: usize = 0x1_0000;
const GICR_IGROUPR0: usize = SGI + 0x0080;
const GICR_ISENABLER0: usize = SGI + 0x0100;
const GICR_ICENABLER0: usize = SGI + 0x0180;
const GICR_IPRIORITYR: usize = SGI + 0x0400;
const GICR_ICFGR1: usize = SGI + 0x0C04;

const SPURIOUS: u32 = 1020;

impl Gic {
    pub fn new(gicd: usize, gicr: usize) -> Self {
        Gic { gicd, gicr }
    }

    fn rd(&self, a: usize) -> u32 {
        // SAFETY: an address inside the GIC frames given by the board,
        // mapped as device memory for the kernel; 32-bit register.
        unsafe { core::ptr::read_volatile(a as *const u32) }
    }
    fn wr(&self, a: usize, v: u32) {
        // SAFETY: as in `rd`.
        unsafe { core::ptr::write_volatile(a as *mut u32, v) }
    }

    /// Finds this CPU's redistributor: walks the frames from the board's
    /// `gic.redistributor` (the first frame, as the device tree gives it)
    /// until GICR_TYPER's affinity is this CPU's MPIDR affinity, up to the
    /// last frame or `limit` (the end of the kernel's mapping). QEMU's
    /// single CPU has the first frame; on the i.MX95 it is CPU 0's when the
    /// boot loader left the kernel on CPU 0. Err: this CPU's affinity
    /// (Aff3.Aff2.Aff1.Aff0), none found.
    pub fn find_redistributor(&mut self, limit: usize) -> Result<(), u64> {
        let mpidr: u64;
        // SAFETY: reading MPIDR_EL1 has no side effects.
        unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
        let aff = (mpidr & 0xFF_FFFF) | ((mpidr >> 32) & 0xFF) << 24;
        let mut frame = self.gicr;
        while frame + 0x2_0000 <= limit {
            // SAFETY: a redistributor RD frame inside the kernel's device
            // mapping (`limit`); GICR_TYPER is a 64-bit read-only register.
            let typer = unsafe { core::ptr::read_volatile((frame + GICR_TYPER) as *const u64) };
            if typer >> 32 == aff {
                self.gicr = frame;
                return Ok(());
            }
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            frame += if typer & GICR_TYPER_VLPIS != 0 {
                0x4_0000
            } else {
                0x2_0000
            };
        }
        Err(aff)
    }

    pub fn init(&mut self) {
        // Affinity routing on, Group 1 enabled (single security state view
        // on QEMU virt without EL3: ARE=bit4, EnableGrp1=bit1, Grp0=bit0).
        self.wr(self.gicd + GICD_CTLR, (1 << 4) | (1 << 1) | 1);
        // Wake this CPU's redistributor.
        let w = self.rd(self.gicr + GICR_WAKER);
        self.wr(self.gicr + GICR_WAKER, w & !(1 << 1));
        while self.rd(self.gicr + GICR_WAKER) & (1 << 2) != 0 {}
        self.wr(self.gicr + GICR_IGROUPR0, 0xFFFF_FFFF);
        // CPU interface: system registers enabled, all priorities pass,
        // Group 1 on.
        ICC_SRE_EL2.modify(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
        isb();
        sysreg::set_icc_pmr_el1(0xFF);
        sysreg::set_icc_bpr1_el1(0);
        sysreg::set_icc_igrpen1_el1(1);
        isb();
    }

    /// Sets group, priority, trigger and routing of an interrupt (disabled).
    pub fn configure(&mut self, intid: u32, edge: bool) {
        let n = intid as usize;
        self.set_enabled(intid, false);
        let (cfg, prio) = if n < 32 {
            (self.gicr + GICR_ICFGR1, self.gicr + GICR_IPRIORITYR)
        } else {
            let g = self.gicd + GICD_IGROUPR + (n / 32) * 4;
            self.wr(g, self.rd(g) | 1 << (n % 32));
            // SAFETY: IROUTER<n> is a 64-bit register of the distributor.
            unsafe { core::ptr::write_volatile((self.gicd + GICD_IROUTER + n * 8) as *mut u64, 0) };
            (
                self.gicd + GICD_ICFGR + (n / 16) * 4,
                self.gicd + GICD_IPRIORITYR,
            )
        };
        if n >= 16 {
            let shift = (n % 16) * 2;
            let v = self.rd(cfg) & !(0b11 << shift);
            self.wr(cfg, v | if edge { 0b10 << shift } else { 0 });
        }
        let pa = prio + (n & !3);
        let shift = (n % 4) * 8;
        let v = self.rd(pa) & !(0xFF << shift);
        self.wr(pa, v | 0x80 << shift);
    }

    pub fn set_enabled(&mut self, intid: u32, enable: bool) {
        let n = intid as usize;
        let a = match (n < 32, enable) {
            (true, true) => self.gicr + GICR_ISENABLER0,
            (true, false) => self.gicr + GICR_ICENABLER0,
            (false, true) => self.gicd + GICD_ISENABLER + (n / 32) * 4,
            (false, false) => self.gicd + GICD_ICENABLER + (n / 32) * 4,
        };
        self.wr(a, 1 << (n % 32));
    }

    /// Acknowledges the highest-priority pending interrupt, if any.
    pub fn acknowledge(&mut self) -> Option<u32> {
        let intid = sysreg::icc_iar1_el1() as u32 & 0xFF_FFFF;
        (intid < SPURIOUS).then_some(intid)
    }

    pub fn end_of_interrupt(&mut self, intid: u32) {
        sysreg::set_icc_eoir1_el1(intid as u64);
    }
}
