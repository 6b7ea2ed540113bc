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
// Redistributor: RD frame, then SGI frame at +64 KiB.
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
