//! The validated model: what the build uses once every check passed.

use super::*;

/// Capabilities beyond IPC (`kern::config::CAP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    TaskControl,
    Shutdown,
    /// May ask the kernel whether a task owns some DMA memory (the IOMMU
    /// driver checks that a VM maps only its own memory).
    MemoryQuery,
}

impl Cap {
    pub const ALL: [Cap; 3] = [Cap::TaskControl, Cap::Shutdown, Cap::MemoryQuery];

    pub fn name(self) -> &'static str {
        match self {
            Cap::TaskControl => "task-control",
            Cap::Shutdown => "shutdown",
            Cap::MemoryQuery => "memory-query",
        }
    }

    /// The constant's path in the generated kernel table.
    pub fn kern_const(self) -> &'static str {
        match self {
            Cap::TaskControl => "kern::config::CAP_TASK_CONTROL",
            Cap::Shutdown => "kern::config::CAP_SHUTDOWN",
            Cap::MemoryQuery => "kern::config::CAP_MEMORY_QUERY",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Cap> {
        Cap::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// Where a region's physical memory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A board peripheral at a fixed physical address.
    Mmio { peripheral: String, base: u64 },
    /// A zeroed page-aligned static in the kernel image.
    Memory,
    /// A VM's RAM (its guest's `ram` region): a fixed carve-out at the top
    /// of board RAM, so its physical address is known at build time
    /// (app_config's `VMS`) and the frontend can have it mapped. The kernel
    /// zeroes it at every restart of the guest, like any memory region.
    VmRam { base: u64 },
}

/// A region after text and data.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub va: u64,
    pub size: u64,
    /// `abi::REGION_*` bits.
    pub attributes: u32,
    pub backing: Backing,
}

/// A validated register window.
#[derive(Debug, Clone)]
pub struct RegWindow {
    pub name: String,
    pub peripheral: String,
    /// Physical base of the peripheral.
    pub base: u64,
    /// (register name, byte offset from `base`).
    pub regs: Vec<(String, u32)>,
}

/// An interrupt owned by a task.
#[derive(Debug, Clone)]
pub struct TaskIrq {
    pub name: String,
    pub intid: u32,
    pub notification: u32,
    pub edge: bool,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub index: usize,
    pub name: String,
    /// Cargo package (and binary) name.
    pub crate_name: String,
    pub priority: u8,
    pub stack_size: u64,
    pub start: bool,
    /// Indices of the tasks it may send/post to.
    pub slots: Vec<usize>,
    /// Indices of the tasks it may only post to.
    pub posts: Vec<usize>,
    pub caps: Vec<Cap>,
    pub windows: Vec<RegWindow>,
    /// MMIO regions in declaration order, then memory regions.
    pub regions: Vec<Region>,
    pub irqs: Vec<TaskIrq>,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub sid: u32,
    pub vm: usize,
    /// The guest's name for it (a VM's frontend's streams only).
    pub vsid: Option<u32>,
}

/// A VM: its frontend (virtual SMMU) and its guest (vCPUs).
#[derive(Debug, Clone)]
pub struct Vm {
    pub frontend: usize,
    pub guest: usize,
    /// Physical base and size of the guest's `ram` region.
    pub ram_base: u64,
    pub ram_size: u64,
    pub event_queue_depth: u16,
}

/// A validated `[[devices]]` entry, its BARs placed.
#[derive(Debug, Clone)]
pub struct Device {
    /// bus << 8 | device << 3 | function.
    pub bdf: u16,
    pub owner: usize,
    pub sid: u32,
    /// vendor | device << 16; 0: not checked.
    pub id: u32,
    /// (bus address, size) per BAR; size 0 = none.
    pub bars: [(u64, u64); 6],
}

impl Device {
    /// The owner's region name of BAR `i`: `pci-bb-dd-f-bar<i>`.
    pub fn bar_region(&self, i: usize) -> String {
        format!(
            "pci-{:02x}-{:02x}-{}-bar{i}",
            self.bdf >> 8,
            (self.bdf >> 3) & 0x1f,
            self.bdf & 7
        )
    }
}

/// A validated image description.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    /// The app file as named to the user (for messages).
    pub file: String,
    pub board: BoardToml,
    pub board_file: String,
    pub kernel_stack_size: u64,
    pub tasks: Vec<Task>,
    pub streams: Vec<Stream>,
    /// VMs in frontend declaration order.
    pub vms: Vec<Vm>,
    /// `[[devices]]`, in declaration order.
    pub devices: Vec<Device>,
    /// The ECAM peripheral's name when the image has a device table.
    pub pci_ecam: Option<String>,
    pub cases: Vec<String>,
    pub bench: bool,
    /// `[expect] boot-flat`: the runner boots `image.bin`, not the ELF.
    pub boot_flat: bool,
    /// `[pasids]` (bits, quota); (0, 0) without it: an empty space.
    pub pasids: (u8, u32),
    /// The mode the SMMU tasks run in: the board's `smmu-coherent`, unless
    /// `[smmu] force-non-coherent`; `false` for an app that does not drive
    /// the SMMU (the safe mode; nothing uses it).
    pub smmu_coherent: bool,
    /// `[smmu] force-non-coherent` was given (the bench names its figures
    /// `noncoherent_*`).
    pub smmu_forced_non_coherent: bool,
}

/// The widest PASID space (PCIe and SMMUv3: 20 bits).
pub const MAX_PASID_BITS: u8 = 20;

impl App {
    /// Index of a task by name.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }
}
