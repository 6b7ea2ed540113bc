//! The one narrow register interface the driver uses, its real-hardware
//! implementation, and typed helpers on top of it.

use crate::regs::{offset, Reg32, Reg64};
use tock_registers::fields::FieldValue;
use tock_registers::{LocalRegisterCopy, RegisterLongName};

/// Access to the SMMU's register frame. `offset` is in bytes from the SMMU
/// base; page 1 registers (EVENTQ_PROD/CONS, PRIQ_PROD/CONS) are at
/// `0x10000 +` their page offset (see [`offset`]).
///
/// Access widths, as hardware (and QEMU 10.0) require:
/// - Use [`Mmio::read32`]/[`Mmio::write32`] for every 32-bit register,
///   **including the ID registers** (a 64-bit read of IDR0 returns 0 on
///   QEMU).
/// - [`Mmio::read64`]/[`Mmio::write64`] are valid only on the 64-bit
///   registers STRTAB_BASE, CMDQ_BASE, EVENTQ_BASE, PRIQ_BASE and the
///   GERROR/EVENTQ/PRIQ_IRQ_CFG0 registers ([`offset::REGS_64BIT`]).
///   Those may also be accessed as two 32-bit halves.
/// - Offsets are naturally aligned to the access size.
pub trait Mmio {
    /// 32-bit load.
    fn read32(&self, offset: usize) -> u32;
    /// 32-bit store.
    fn write32(&self, offset: usize, value: u32);
    /// 64-bit load (64-bit registers only).
    fn read64(&self, offset: usize) -> u64;
    /// 64-bit store (64-bit registers only).
    fn write64(&self, offset: usize, value: u64);
}

impl<T: Mmio + ?Sized> Mmio for &T {
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        (**self).read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        (**self).write64(offset, value)
    }
}

/// Typed register access on any [`Mmio`]: registers are named by the
/// constants in [`crate::regs`], values are tock-registers field values.
pub trait MmioExt: Mmio {
    /// Reads a 32-bit register.
    fn read_reg<R: RegisterLongName>(&self, reg: Reg32<R>) -> LocalRegisterCopy<u32, R> {
        LocalRegisterCopy::new(self.read32(reg.offset()))
    }
    /// Writes a 32-bit register: every field not named in `value` is 0.
    fn write_reg<R: RegisterLongName>(&self, reg: Reg32<R>, value: FieldValue<u32, R>) {
        self.write32(reg.offset(), value.value)
    }
    /// Read-modify-write of a 32-bit register.
    fn modify_reg<R: RegisterLongName>(&self, reg: Reg32<R>, value: FieldValue<u32, R>) {
        let mut v = self.read_reg(reg);
        v.modify(value);
        self.write32(reg.offset(), v.get())
    }
    /// Reads a 64-bit register with one 64-bit load.
    fn read_reg64<R: RegisterLongName>(&self, reg: Reg64<R>) -> LocalRegisterCopy<u64, R> {
        LocalRegisterCopy::new(self.read64(reg.offset()))
    }
    /// Writes a 64-bit register with one 64-bit store.
    fn write_reg64<R: RegisterLongName>(&self, reg: Reg64<R>, value: FieldValue<u64, R>) {
        self.write64(reg.offset(), value.value)
    }
}

impl<T: Mmio + ?Sized> MmioExt for T {}

/// The real register frame, accessed with volatile loads and stores.
#[derive(Debug)]
pub struct MmioPtr {
    base: usize,
}

impl MmioPtr {
    /// Wraps the register frame mapped at virtual address `base`.
    ///
    /// # Safety
    /// For as long as the returned value (or anything derived from it)
    /// exists, the caller guarantees that:
    /// - `base` is the address of an SMMUv3 register frame mapped in the
    ///   current address space as Device memory, readable and writable,
    ///   [`offset::FRAME_SIZE`] bytes long (or at least covering every
    ///   offset that will be passed to the accessors);
    /// - `base` is aligned to 64 KiB (so every register is naturally
    ///   aligned);
    /// - no Rust reference covers that range (all accesses go through
    ///   volatile operations, here or elsewhere).
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    /// The base address.
    pub const fn base(&self) -> usize {
        self.base
    }

    fn addr(&self, offset: usize, size: usize) -> usize {
        debug_assert!(
            offset.is_multiple_of(size),
            "misaligned SMMU register access"
        );
        debug_assert!(
            offset + size <= offset::FRAME_SIZE,
            "offset outside the SMMU frame"
        );
        self.base + offset
    }
}

impl Mmio for MmioPtr {
    fn read32(&self, offset: usize) -> u32 {
        let p = self.addr(offset, 4) as *const u32;
        // SAFETY: `new`'s contract makes `base..base+FRAME_SIZE` a mapped,
        // aligned device frame with no Rust references into it; `addr`
        // checks (in debug builds) that the access lies inside and is
        // aligned. Volatile because the register has side effects.
        unsafe { core::ptr::read_volatile(p) }
    }

    fn write32(&self, offset: usize, value: u32) {
        let p = self.addr(offset, 4) as *mut u32;
        // SAFETY: as in `read32`; the frame is writable by `new`'s contract.
        unsafe { core::ptr::write_volatile(p, value) }
    }

    fn read64(&self, offset: usize) -> u64 {
        debug_assert!(
            offset::is_64bit(offset),
            "64-bit access to a 32-bit register"
        );
        let p = self.addr(offset, 8) as *const u64;
        // SAFETY: as in `read32`; the offset names a 64-bit register, for
        // which the architecture allows single-copy-atomic 64-bit accesses.
        unsafe { core::ptr::read_volatile(p) }
    }

    fn write64(&self, offset: usize, value: u64) {
        debug_assert!(
            offset::is_64bit(offset),
            "64-bit access to a 32-bit register"
        );
        let p = self.addr(offset, 8) as *mut u64;
        // SAFETY: as in `read64`; the frame is writable by `new`'s contract.
        unsafe { core::ptr::write_volatile(p, value) }
    }
}
