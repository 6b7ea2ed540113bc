//! Configuration-space access and the register offsets the filter knows.

/// Offsets in a type 0 configuration header (PCI Local Bus 3.0 §6.1).
pub mod off {
    pub const ID: u16 = 0x00;
    pub const COMMAND: u16 = 0x04;
    pub const STATUS: u16 = 0x06;
    pub const CLASS: u16 = 0x08;
    pub const HEADER_TYPE: u16 = 0x0e;
    pub const BAR0: u16 = 0x10;
    pub const ROM: u16 = 0x30;
    pub const CAP_PTR: u16 = 0x34;
    /// End of the standard header; capabilities live in 0x40..0x100.
    pub const HEADER_END: u16 = 0x40;
    /// Start of PCIe extended configuration space.
    pub const EXTENDED: u16 = 0x100;
    /// The size of one function's configuration space under ECAM.
    pub const SPACE: u16 = 0x1000;
}

/// Command register bits (PCI Local Bus 3.0 §6.2.2).
pub mod cmd {
    pub const IO: u16 = 1 << 0;
    pub const MEMORY: u16 = 1 << 1;
    pub const BUS_MASTER: u16 = 1 << 2;
    /// The only bits an owner may change.
    pub const OWNER_BITS: u16 = MEMORY | BUS_MASTER;
}

/// Status register: bit 4, a capability list is present.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// Capability ids the filter refuses writes into (PCI Local Bus 3.0
/// Appendix H; PCIe Base 4.0 §7.9.3 for SR-IOV).
pub mod capid {
    pub const MSI: u8 = 0x05;
    pub const MSIX: u8 = 0x11;
    /// Extended capability id of SR-IOV.
    pub const EXT_SRIOV: u16 = 0x0010;
}

/// Access to functions' configuration spaces. `size` is 1, 2 or 4 and
/// `offset` is aligned to it and below 4096 (callers check); `bdf` is
/// bus << 8 | device << 3 | function.
pub trait ConfigSpace {
    /// An absent function reads all-ones.
    fn read(&mut self, bdf: u16, offset: u16, size: u8) -> u32;
    /// A write to an absent function is dropped.
    fn write(&mut self, bdf: u16, offset: u16, size: u8, value: u32);
}

/// The ECAM window as mapped into this task: 1 MiB per bus from bus 0.
pub struct Ecam {
    va: usize,
    buses: usize,
}

impl Ecam {
    /// # Safety
    /// `va` must map `size` bytes of ECAM (device memory) starting at
    /// bus 0, used by nothing else in this task.
    pub unsafe fn new(va: usize, size: usize) -> Ecam {
        Ecam {
            va,
            buses: size >> 20,
        }
    }

    fn addr(&self, bdf: u16, offset: u16) -> Option<usize> {
        let bus = usize::from(bdf >> 8);
        (bus < self.buses && offset < off::SPACE)
            .then(|| self.va + (usize::from(bdf) << 12) + usize::from(offset))
    }
}

impl ConfigSpace for Ecam {
    fn read(&mut self, bdf: u16, offset: u16, size: u8) -> u32 {
        let Some(a) = self.addr(bdf, offset) else {
            return u32::MAX;
        };
        // SAFETY: `a` lies in the mapped ECAM window (`addr` checked the
        // bus against the window and the offset against the function's 4
        // KiB), aligned to `size` (the callers' contract); ECAM takes byte,
        // halfword and word accesses.
        unsafe {
            match size {
                1 => u32::from(core::ptr::read_volatile(a as *const u8)),
                2 => u32::from(core::ptr::read_volatile(a as *const u16)),
                _ => core::ptr::read_volatile(a as *const u32),
            }
        }
    }

    fn write(&mut self, bdf: u16, offset: u16, size: u8, value: u32) {
        let Some(a) = self.addr(bdf, offset) else {
            return;
        };
        // SAFETY: as in `read`.
        unsafe {
            match size {
                1 => core::ptr::write_volatile(a as *mut u8, value as u8),
                2 => core::ptr::write_volatile(a as *mut u16, value as u16),
                _ => core::ptr::write_volatile(a as *mut u32, value),
            }
        }
    }
}

/// "bb:dd.f" of a routing id, for logs.
pub struct Bdf(pub u16);

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.0 >> 8,
            (self.0 >> 3) & 0x1f,
            self.0 & 7
        )
    }
}
