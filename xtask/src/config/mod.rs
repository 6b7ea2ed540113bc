//! `app.toml` and `boards/<board>.toml`: parsing, and every check the build
//! makes before anything is compiled.
//!
//! Parsing is serde with `deny_unknown_fields`, so a misspelt key is an error
//! that names it. Validation then turns the raw files into an [`App`]: task
//! indices fixed by declaration order, task slots resolved to indices,
//! regions given their virtual addresses, interrupts resolved to INTIDs.
//! Every error names the file and the field (`app.toml: tasks.foo.mmio: …`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use abi::layout;
use indexmap::IndexMap;
use serde::Deserialize;

mod devices;
mod vms;

use devices::{same_vm, validate_devices};
use vms::validate_vms;

/// 4 KiB: the granule of every mapping.
pub const PAGE: u64 = 0x1000;
/// 2 MiB: one level-2 entry; each region after data starts on one.
pub const SLOT: u64 = 0x20_0000;
/// Highest priority number (lowest priority).
pub const LOWEST_PRIORITY: i64 = 15;

pub const TASK_TEXT: u64 = layout::TASK_TEXT as u64;
pub const TASK_DATA: u64 = layout::TASK_DATA as u64;
pub const TASK_REGIONS: u64 = layout::TASK_REGIONS as u64;
pub const TASK_END: u64 = layout::TASK_END as u64;
pub const MAX_IMAGE: u64 = layout::MAX_IMAGE as u64;

// ---------------------------------------------------------------- raw files

/// `app.toml` as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AppToml {
    pub name: String,
    pub board: String,
    #[serde(default)]
    pub kernel: KernelToml,
    #[serde(default)]
    pub expect: ExpectToml,
    /// Ordered: declaration order is task index order.
    pub tasks: IndexMap<String, TaskToml>,
    #[serde(default)]
    pub streams: Vec<StreamToml>,
    /// The device table: PCI functions assigned to VMs (docs/devices.md).
    #[serde(default)]
    pub devices: Vec<DeviceToml>,
    /// The host PASID space served by the pasid-alloc task.
    pub pasids: Option<PasidsToml>,
    /// `[smmu]`: per-app overrides of the board's SMMU facts.
    #[serde(default)]
    pub smmu: SmmuToml,
}

/// `[smmu]`: `force-non-coherent = true` runs the SMMU tasks in their
/// non-coherent mode on a coherent board (cleaning is correct there too,
/// only slower): the QEMU proof that the mode's attributes and cache
/// maintenance are legal. The opposite override does not exist — on a
/// non-coherent SMMU it would be unsafe.
#[derive(Deserialize, Debug, Default, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SmmuToml {
    #[serde(default)]
    pub force_non_coherent: bool,
}

/// `[pasids]`: PASIDs `1 .. 2^bits` (0 is reserved), `quota` per VM.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PasidsToml {
    pub bits: u8,
    pub quota: u32,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KernelToml {
    #[serde(default = "default_kernel_stack")]
    pub stack_size: u64,
}

fn default_kernel_stack() -> u64 {
    16384
}

impl Default for KernelToml {
    fn default() -> Self {
        KernelToml {
            stack_size: default_kernel_stack(),
        }
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectToml {
    #[serde(default)]
    pub cases: Vec<String>,
    #[serde(default)]
    pub bench: bool,
    /// Boot the test image from its flat `image.bin` (QEMU's generic loader
    /// at the load address, PC = entry) instead of the ELF: proves the
    /// flashable form boots.
    #[serde(default)]
    pub boot_flat: bool,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskToml {
    #[serde(rename = "crate")]
    pub crate_name: Option<String>,
    /// Signed so that a negative number gets our message, not serde's.
    pub priority: i64,
    pub stack_size: u64,
    #[serde(default = "yes")]
    pub start: bool,
    #[serde(default)]
    pub task_slots: Vec<String>,
    /// Tasks it may post notifications to but never send to (any priority):
    /// a server notifying the lower-priority tasks that call it.
    #[serde(default)]
    pub posts: Vec<String>,
    #[serde(default)]
    pub caps: Vec<String>,
    /// Register windows: registers of a board peripheral the kernel reads
    /// and writes for the task (never mapped into it).
    #[serde(default)]
    pub registers: Vec<RegWindowToml>,
    #[serde(default)]
    pub mmio: Vec<String>,
    #[serde(default)]
    pub memory: Vec<MemoryToml>,
    #[serde(default)]
    pub interrupts: IndexMap<String, u32>,
    /// Makes this task a VM's frontend (its virtual SMMU): `guest` names the
    /// task standing for the VM's vCPUs, whose `ram` DMA region is the
    /// VM's RAM.
    pub vm: Option<VmToml>,
}

/// `[tasks.<frontend>] vm = { guest = "...", event-queue-depth = N }`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VmToml {
    pub guest: String,
    /// Records of the VM's virtual event queue (the frontend's; overflow
    /// drops the newest and counts it LOST).
    #[serde(default = "default_event_queue_depth")]
    pub event_queue_depth: u16,
}

fn default_event_queue_depth() -> u16 {
    16
}

/// The crate that serves a VM's virtual SMMU: a task running it must have
/// a `vm` table, and only such a task may.
pub const VMM_FRONTEND_CRATE: &str = "vmm-frontend";
/// The guest's DMA region that is the VM's RAM.
pub const VM_RAM_REGION: &str = "ram";
/// The most records a virtual event queue may hold (vmm-frontend's
/// `MAX_VEVENTQ`: its queue is a fixed array of that size).
pub const MAX_EVENT_QUEUE_DEPTH: u16 = 64;

fn yes() -> bool {
    true
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegWindowToml {
    /// The window's name (`sys_reg_lookup`).
    pub name: String,
    /// A board peripheral with a `register-set`.
    pub peripheral: String,
    /// Register names of that set, in the order the task indexes them.
    pub regs: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemoryToml {
    pub name: String,
    pub size: u64,
    #[serde(default)]
    pub dma: bool,
    #[serde(default)]
    pub cache: Cache,
}

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    /// Normal memory, write-back cacheable.
    #[default]
    Wb,
    /// Normal memory, non-cacheable (non-coherent DMA masters).
    Nc,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StreamToml {
    pub sid: u32,
    pub vm: String,
    /// The StreamID the VM's guest names it by (only on a stream of a VM's
    /// frontend); the physical one when absent.
    pub vsid: Option<u32>,
}

/// `[[devices]]`: one PCI function assigned to a VM.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceToml {
    /// "bb:dd.f" (hex bus and device, function 0-7).
    pub function: String,
    /// The task that drives it: its BARs are mapped into that task only.
    pub owner: String,
    /// "vvvv:dddd": the vendor and device id pci-server checks at boot.
    pub id: Option<String>,
    /// Size of each memory BAR from BAR0 (0: not implemented); pci-server
    /// checks the probed sizes at boot.
    #[serde(default)]
    pub bars: Vec<u64>,
}

/// `[pci]` of a board: the PCIe host bridge's windows and how requester
/// ids become StreamIDs.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PciToml {
    /// What kind of root complex it is. Only a generic ECAM host bridge
    /// (QEMU's gpex) is driven by pci-server; any other kind is described
    /// (so its facts live in the board file) but an app with `[[devices]]`
    /// refuses to build on it.
    #[serde(default)]
    pub host_bridge: HostBridge,
    /// The ECAM peripheral (1 MiB per bus from bus 0): `host-bridge = "ecam"`.
    pub ecam: Option<String>,
    /// The configuration window of a non-ECAM root complex (on the
    /// DesignWare RC it is reached through the iATU, not by bus/device/
    /// function offsets).
    pub config: Option<String>,
    /// The peripheral BARs are placed in.
    pub bar_window: String,
    /// The PCI (bus) address of the BAR window's first byte, where the
    /// root complex translates (i.MX95: CPU 0x9_1000_0000 is PCI
    /// 0x1000_0000). Absent: bus address = CPU address (QEMU virt).
    pub bar_window_pci_base: Option<u64>,
    /// The device tree's `iommu-map` of the root complex: requester id
    /// (masked with `iommu-map-mask`) → StreamID. Empty: the identity
    /// (QEMU virt has no iommu-map).
    #[serde(default)]
    pub iommu_map: Vec<IommuMapEntry>,
    /// `iommu-map-mask`: RID bits that select the entry (all bits if absent).
    pub iommu_map_mask: Option<u16>,
}

/// One `iommu-map` entry: RIDs `rid-base .. rid-base + length` map to
/// StreamIDs `sid-base ..`.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IommuMapEntry {
    pub rid_base: u16,
    pub sid_base: u32,
    pub length: u32,
}

/// `[pci] host-bridge`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostBridge {
    /// Generic ECAM (PCI Firmware spec; QEMU gpex): pci-server drives it.
    #[default]
    Ecam,
    /// Synopsys DesignWare root complex as integrated on i.MX95: needs its
    /// DBI/iATU, PHY, clocks and link training set up and its RID→StreamID
    /// LUT programmed before any config access. Not built.
    Designware,
}

impl HostBridge {
    pub fn name(self) -> &'static str {
        match self {
            HostBridge::Ecam => "ecam",
            HostBridge::Designware => "designware",
        }
    }
}

impl PciToml {
    /// The peripheral holding configuration space (the ECAM or the
    /// non-ECAM config window): pci-server's alone.
    pub fn config_space(&self) -> &str {
        self.ecam
            .as_deref()
            .or(self.config.as_deref())
            .unwrap_or_default()
    }

    /// The StreamID of requester id `rid` (`iommu-map` semantics: the
    /// masked RID selects the entry), `None` if no entry covers it.
    pub fn stream_id(&self, rid: u16) -> Option<u32> {
        if self.iommu_map.is_empty() {
            return Some(u32::from(rid));
        }
        let masked = rid & self.iommu_map_mask.unwrap_or(0xffff);
        self.iommu_map.iter().find_map(|e| {
            let off = u32::from(masked).checked_sub(u32::from(e.rid_base))?;
            (off < e.length).then_some(e.sid_base + off)
        })
    }
}

/// `boards/<board>.toml` as written.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BoardToml {
    pub name: String,
    pub ram: Range,
    #[serde(default)]
    pub kernel_devices: Vec<Range>,
    /// Where the boot loader puts the image and jumps: the kernel's link
    /// address (2 MiB aligned, inside `ram`).
    pub load_address: u64,
    /// The kernel's console UART.
    pub console: Console,
    /// A semihosting host is attached (QEMU `-semihosting`): a non-zero
    /// exit status reaches it. No default meaning "yes": on hardware the
    /// semihosting call would be an undefined instruction.
    #[serde(default)]
    pub semihosting: bool,
    pub gic: Gic,
    pub timer: Timer,
    #[serde(default)]
    pub peripherals: IndexMap<String, Peripheral>,
    #[serde(default)]
    pub interrupts: IndexMap<String, Interrupt>,
    /// The SMMU's IDR1.SSIDSIZE (substream ID bits); 0 when not stated.
    /// An app whose tasks use the SMMU may not size its PASID space above it.
    #[serde(default)]
    pub smmu_ssid_bits: u8,
    /// Whether the SMMU's table walks, structure fetches and queue
    /// accesses snoop the CPU's caches (the firmware's `dma-coherent`):
    /// `false` makes iommu-server and prq-server clean what they write and
    /// invalidate what they read (docs/porting.md). No default: an app
    /// whose tasks drive the SMMU refuses to build on a board that does
    /// not say.
    #[serde(default)]
    pub smmu_coherent: Option<bool>,
    /// The PCIe host bridge, if the board has one a device table can use.
    pub pci: Option<PciToml>,
    /// How to run it under QEMU; absent for a board that is hardware only.
    pub qemu: Option<Qemu>,
}

impl BoardToml {
    /// How to run this board under QEMU, or why it cannot be.
    pub fn qemu(&self) -> Result<&Qemu, String> {
        self.qemu.as_ref().ok_or_else(|| {
            format!(
                "board {} has no [qemu]: its image runs on hardware only (load image.bin at {:#x}, docs/porting.md)",
                self.name, self.load_address
            )
        })
    }
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Range {
    pub base: u64,
    pub size: u64,
}

/// A board peripheral a task may be given.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Peripheral {
    pub base: u64,
    pub size: u64,
    /// Set where the range is not a page of its own but an alias of
    /// another peripheral: on QEMU 10 the SMMU's page 1 aliases page 0, so
    /// mapping it would hand out CR0, STRTAB_BASE and the command queue.
    /// Only a task that maps the aliased peripheral itself may map it (it
    /// gains nothing); any other task reaches its registers through a
    /// register window.
    pub aliases: Option<String>,
    /// The register names a register window over it may use
    /// ([`REGISTER_SETS`]).
    pub register_set: Option<String>,
}

impl Peripheral {
    pub fn range(&self) -> Range {
        Range {
            base: self.base,
            size: self.size,
        }
    }
}

/// Register sets a board peripheral can declare: name, then (register,
/// byte offset from the peripheral's base). The offsets come from
/// `lib/smmuv3`'s register map (the one definition), relative to the page.
pub fn register_set(name: &str) -> Option<Vec<(&'static str, u32)>> {
    use smmuv3::regs::offset as o;
    let page1 = |off: usize| (off - o::PAGE1) as u32;
    match name {
        "smmuv3-page1" => Some(vec![
            ("EVENTQ_PROD", page1(o::EVENTQ_PROD)),
            ("EVENTQ_CONS", page1(o::EVENTQ_CONS)),
            ("PRIQ_PROD", page1(o::PRIQ_PROD)),
            ("PRIQ_CONS", page1(o::PRIQ_CONS)),
        ]),
        _ => None,
    }
}

/// Most register windows per task, and registers per window.
pub const MAX_REG_WINDOWS: usize = 4;
pub const MAX_WINDOW_REGS: usize = 16;

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Console {
    pub kind: ConsoleKind,
    pub base: u64,
}

/// `console.kind`: the UART model (`kern::config::ConsoleKind`).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ConsoleKind {
    /// Arm PL011.
    Pl011,
    /// NXP i.MX LPUART (i.MX7ULP/8ULP/93/95 register layout).
    Lpuart,
}

impl ConsoleKind {
    /// The variant's path in the generated kernel table.
    pub fn kern_const(self) -> &'static str {
        match self {
            ConsoleKind::Pl011 => "kern::config::ConsoleKind::Pl011",
            ConsoleKind::Lpuart => "kern::config::ConsoleKind::Lpuart",
        }
    }
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Gic {
    pub version: u32,
    pub distributor: u64,
    pub redistributor: u64,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Timer {
    pub intid: u32,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Interrupt {
    pub intid: u32,
    pub trigger: Trigger,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Edge,
    Level,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Qemu {
    pub binary: String,
    pub min_version: String,
    pub machine: String,
    pub cpu: String,
    pub memory: String,
    #[serde(default)]
    pub args: Vec<String>,
}

// ---------------------------------------------------------- validated model

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

    fn parse(s: &str) -> Option<Cap> {
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

// ------------------------------------------------------------------ loading

/// Reads and validates an app file; its board is `<workspace>/boards/<board>.toml`.
/// `display` is how the app file is named in messages.
pub fn load(app_path: &Path, display: &str, boards_dir: &Path) -> Result<App, String> {
    load_for_board(app_path, display, boards_dir, None)
}

/// [`load`], with the app's `board` replaced by `board` when given
/// (`cargo xtask dist --board`). The image is then named
/// `<app>-<board>`, so it is built beside the app's own.
pub fn load_for_board(
    app_path: &Path,
    display: &str,
    boards_dir: &Path,
    board: Option<&str>,
) -> Result<App, String> {
    let src = std::fs::read_to_string(app_path)
        .map_err(|e| format!("{display}: cannot read {}: {e}", app_path.display()))?;
    parse_for_board(display, &src, board, |board| {
        let path = boards_dir.join(format!("{board}.toml"));
        let shown = format!("boards/{board}.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some((shown, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{shown}: cannot read {}: {e}", path.display())),
        }
    })
}

/// Parses and validates app text. `board_source(name)` returns the board
/// file's display name and text, `None` when there is no such board.
pub fn parse(
    file: &str,
    src: &str,
    board_source: impl FnOnce(&str) -> Result<Option<(String, String)>, String>,
) -> Result<App, String> {
    parse_for_board(file, src, None, board_source)
}

/// [`parse`], with the app's `board` replaced by `board` when given; the
/// image is then named `<app>-<board>`.
pub fn parse_for_board(
    file: &str,
    src: &str,
    board: Option<&str>,
    board_source: impl FnOnce(&str) -> Result<Option<(String, String)>, String>,
) -> Result<App, String> {
    let mut raw: AppToml = toml::from_str(src).map_err(|e| toml_error(file, e))?;
    if let Some(b) = board {
        raw.name = format!("{}-{b}", raw.name);
        raw.board = b.to_string();
    }
    check_name(file, "name", &raw.name)?;
    check_name(file, "board", &raw.board)?;
    let Some((board_file, board_src)) = board_source(&raw.board)? else {
        return Err(format!(
            "{file}: board: unknown board \"{}\" (no file boards/{}.toml)",
            raw.board, raw.board
        ));
    };
    let board: BoardToml = toml::from_str(&board_src).map_err(|e| toml_error(&board_file, e))?;
    validate_board(&board_file, &raw.board, &board)?;
    validate(file, raw, board, board_file)
}

fn toml_error(file: &str, e: toml::de::Error) -> String {
    format!("{file}: {}", e.to_string().trim_end())
}

/// Names that end up in file names and generated code.
fn check_name(file: &str, field: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{file}: {field}: \"{name}\" is not a valid name (use letters, digits, '-' and '_')"
        ))
    }
}

fn range_str(base: u64, size: u64) -> String {
    format!("{:#x}..{:#x}", base, base.saturating_add(size))
}

/// Parses "9.2" or "10.0.2" into a comparable triple.
pub fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let mut parts = s.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

fn validate_board(file: &str, wanted: &str, b: &BoardToml) -> Result<(), String> {
    if b.name != wanted {
        return Err(format!(
            "{file}: name: \"{}\" does not match the file name (expected \"{wanted}\")",
            b.name
        ));
    }
    let page_range = |field: &str, r: &Range| -> Result<(), String> {
        if r.size == 0 {
            return Err(format!("{file}: {field}: size must not be zero"));
        }
        if !r.base.is_multiple_of(PAGE) || !r.size.is_multiple_of(PAGE) {
            return Err(format!(
                "{file}: {field}: {} is not 4 KiB aligned",
                range_str(r.base, r.size)
            ));
        }
        if r.base.checked_add(r.size).is_none() {
            return Err(format!(
                "{file}: {field}: range overflows the address space"
            ));
        }
        Ok(())
    };
    page_range("ram", &b.ram)?;
    for (i, r) in b.kernel_devices.iter().enumerate() {
        page_range(&format!("kernel-devices[{i}]"), r)?;
    }
    // The kernel maps its devices with one 1 GiB table and RAM with
    // another (sys/kern/src/arch/mmu.rs), both below the task window.
    const GIB: u64 = 1 << 30;
    let task_window_gib = abi::layout::TASK_TEXT as u64 / GIB;
    let gib_of = |r: &Range| (r.base / GIB == (r.base + r.size - 1) / GIB).then_some(r.base / GIB);
    let ram_gib = gib_of(&b.ram).filter(|g| *g < task_window_gib);
    let Some(ram_gib) = ram_gib else {
        return Err(format!(
            "{file}: ram: {} must lie within one GiB below {:#x} (the kernel maps RAM with one 1 GiB table)",
            range_str(b.ram.base, b.ram.size),
            abi::layout::TASK_TEXT
        ));
    };
    let dev_gib = b.kernel_devices.first().and_then(gib_of);
    for (i, r) in b.kernel_devices.iter().enumerate() {
        let g = gib_of(r);
        if g.is_none() || g != dev_gib || g >= Some(task_window_gib) || g == Some(ram_gib) {
            return Err(format!(
                "{file}: kernel-devices[{i}]: {}: all kernel devices must lie in one GiB, below {:#x} and apart from RAM's (the kernel maps them with one 1 GiB table)",
                range_str(r.base, r.size),
                abi::layout::TASK_TEXT
            ));
        }
    }
    // The kernel starts on a 2 MiB boundary (kernel.x: its L3 tables start
    // there) and runs from RAM it maps itself.
    const KERNEL_ALIGN: u64 = 0x20_0000;
    let ram_end = b.ram.base + b.ram.size;
    if !b.load_address.is_multiple_of(KERNEL_ALIGN)
        || b.load_address < b.ram.base
        || b.load_address >= ram_end
    {
        return Err(format!(
            "{file}: load-address: {:#x} must be 2 MiB aligned and inside ram ({})",
            b.load_address,
            range_str(b.ram.base, b.ram.size)
        ));
    }
    let in_kernel_devices = |base: u64, size: u64| {
        b.kernel_devices
            .iter()
            .any(|k| base >= k.base && base + size <= k.base + k.size)
    };
    if !in_kernel_devices(b.console.base, PAGE) {
        return Err(format!(
            "{file}: console.base: {:#x} lies in no kernel-devices range (the kernel maps its console there)",
            b.console.base
        ));
    }
    for (field, base) in [
        ("gic.distributor", b.gic.distributor),
        ("gic.redistributor", b.gic.redistributor),
    ] {
        if !in_kernel_devices(base, 0x2_0000) {
            return Err(format!(
                "{file}: {field}: {base:#x} (+128 KiB) lies in no kernel-devices range (the kernel maps the GIC there)"
            ));
        }
    }
    if b.gic.version != 3 {
        return Err(format!(
            "{file}: gic.version: {} is not supported (only GICv3)",
            b.gic.version
        ));
    }
    for (name, p) in &b.peripherals {
        check_name(file, &format!("peripherals.{name}"), name)?;
        page_range(&format!("peripherals.{name}"), &p.range())?;
        if let Some(a) = &p.aliases {
            if a == name || !b.peripherals.contains_key(a) {
                return Err(format!(
                    "{file}: peripherals.{name}.aliases: \"{a}\" is not another peripheral"
                ));
            }
        }
        if let Some(set) = &p.register_set {
            let Some(regs) = register_set(set) else {
                return Err(format!(
                    "{file}: peripherals.{name}.register-set: unknown register set \"{set}\" (known: \"smmuv3-page1\")"
                ));
            };
            if let Some((r, off)) = regs.iter().find(|(_, off)| u64::from(*off) + 4 > p.size) {
                return Err(format!(
                    "{file}: peripherals.{name}.register-set: {r} at {off:#x} lies outside the peripheral"
                ));
            }
            // The kernel reaches the registers through its own mapping.
            let inside = b
                .kernel_devices
                .iter()
                .any(|k| p.base >= k.base && p.base + p.size <= k.base + k.size);
            if !inside {
                return Err(format!(
                    "{file}: peripherals.{name}: has a register-set but lies in no kernel-devices range (the kernel accesses its registers)"
                ));
            }
        }
    }
    for (i, (a_name, a)) in b.peripherals.iter().enumerate() {
        for (b_name, other) in b.peripherals.iter().take(i) {
            if a.base < other.base + other.size && other.base < a.base + a.size {
                return Err(format!(
                    "{file}: peripherals.{a_name}: {} overlaps peripherals.{b_name} ({})",
                    range_str(a.base, a.size),
                    range_str(other.base, other.size)
                ));
            }
        }
    }
    let mut by_intid: BTreeMap<u32, &str> = BTreeMap::new();
    for (name, irq) in &b.interrupts {
        check_name(file, &format!("interrupts.{name}"), name)?;
        if !(16..1020).contains(&irq.intid) {
            return Err(format!(
                "{file}: interrupts.{name}.intid: {} is not a PPI or SPI (16..1020)",
                irq.intid
            ));
        }
        if irq.intid == b.timer.intid {
            return Err(format!(
                "{file}: interrupts.{name}.intid: {} is the kernel's timer",
                irq.intid
            ));
        }
        if let Some(prev) = by_intid.insert(irq.intid, name) {
            return Err(format!(
                "{file}: interrupts.{name}.intid: {} is also interrupts.{prev}",
                irq.intid
            ));
        }
    }
    if let Some(q) = &b.qemu {
        if parse_version(&q.min_version).is_none() {
            return Err(format!(
                "{file}: qemu.min-version: \"{}\" is not a version like \"9.2\"",
                q.min_version
            ));
        }
    }
    if let Some(pci) = &b.pci {
        validate_pci(file, b, pci)?;
    }
    Ok(())
}

/// `[pci]`: the windows name peripherals of the right kind, the
/// `iommu-map` entries do not overlap.
fn validate_pci(file: &str, b: &BoardToml, pci: &PciToml) -> Result<(), String> {
    let (want, other) = match pci.host_bridge {
        HostBridge::Ecam => (("ecam", &pci.ecam), ("config", &pci.config)),
        HostBridge::Designware => (("config", &pci.config), ("ecam", &pci.ecam)),
    };
    let kind = pci.host_bridge.name();
    let Some(name) = want.1 else {
        return Err(format!(
            "{file}: pci.{}: required with host-bridge = \"{kind}\"",
            want.0
        ));
    };
    if other.1.is_some() {
        return Err(format!(
            "{file}: pci.{}: not used with host-bridge = \"{kind}\"",
            other.0
        ));
    }
    for (field, p) in [(want.0, name), ("bar-window", &pci.bar_window)] {
        if !b.peripherals.contains_key(p) {
            return Err(format!("{file}: pci.{field}: \"{p}\" is not a peripheral"));
        }
    }
    let mask = pci.iommu_map_mask.unwrap_or(0xffff);
    for (i, e) in pci.iommu_map.iter().enumerate() {
        let end = u32::from(e.rid_base) + e.length;
        if e.length == 0 || end > 0x1_0000 || e.sid_base.checked_add(e.length).is_none() {
            return Err(format!(
                "{file}: pci.iommu-map[{i}]: length {} does not fit the RID or StreamID space",
                e.length
            ));
        }
        if e.rid_base & !mask != 0 {
            return Err(format!(
                "{file}: pci.iommu-map[{i}]: rid-base {:#x} has bits outside iommu-map-mask {mask:#x}",
                e.rid_base
            ));
        }
        for (j, o) in pci.iommu_map.iter().enumerate().take(i) {
            let o_end = u32::from(o.rid_base) + o.length;
            if u32::from(e.rid_base) < o_end && u32::from(o.rid_base) < end {
                return Err(format!(
                    "{file}: pci.iommu-map[{i}]: RIDs overlap pci.iommu-map[{j}]"
                ));
            }
        }
    }
    Ok(())
}

fn validate(file: &str, raw: AppToml, board: BoardToml, board_file: String) -> Result<App, String> {
    if raw.kernel.stack_size == 0 || !raw.kernel.stack_size.is_multiple_of(16) {
        return Err(format!(
            "{file}: kernel.stack-size: {} must be a non-zero multiple of 16",
            raw.kernel.stack_size
        ));
    }
    if raw.tasks.is_empty() {
        return Err(format!("{file}: tasks: the image has no tasks"));
    }
    if raw.tasks.len() > abi::MAX_TASKS {
        return Err(format!(
            "{file}: tasks: {} tasks, at most {} are allowed",
            raw.tasks.len(),
            abi::MAX_TASKS
        ));
    }

    // Capabilities first: the supervisor must be known before interrupts
    // are checked against its fault bit.
    let mut supervisor: Option<&str> = None;
    for (index, (name, t)) in raw.tasks.iter().enumerate() {
        let field = format!("tasks.{name}.caps");
        let mut seen = Vec::new();
        for c in &t.caps {
            let Some(cap) = Cap::parse(c) else {
                return Err(format!(
                    "{file}: {field}: unknown capability \"{c}\" (known: \"task-control\", \"shutdown\")"
                ));
            };
            if seen.contains(&cap) {
                return Err(format!("{file}: {field}: \"{c}\" is listed twice"));
            }
            seen.push(cap);
            if cap == Cap::TaskControl {
                if let Some(first) = supervisor {
                    return Err(format!(
                        "{file}: {field}: \"task-control\" is already given to task \"{first}\" (there is exactly one supervisor)"
                    ));
                }
                if index != 0 {
                    return Err(format!(
                        "{file}: {field}: the task with \"task-control\" (the supervisor) must be declared first (task index 0)"
                    ));
                }
                supervisor = Some(name);
            }
        }
    }
    let Some(supervisor_name) = supervisor else {
        return Err(format!(
            "{file}: tasks: no task has the \"task-control\" capability (the supervisor, declared first)"
        ));
    };
    // The supervisor outranks every task (so it runs as soon as a fault is
    // reported) and never sends: a send could block it on a server that it
    // is the one to restart.
    let sup = &raw.tasks[0];
    if sup.priority != 0 {
        return Err(format!(
            "{file}: tasks.{supervisor_name}.priority: the supervisor must have priority 0 (the highest), not {}",
            sup.priority
        ));
    }
    if !sup.task_slots.is_empty() {
        return Err(format!(
            "{file}: tasks.{supervisor_name}.task-slots: the supervisor must have no task-slots (it acts through task control and never sends)"
        ));
    }

    let devices = validate_devices(file, &raw, &board, &board_file)?;

    let mut tasks = Vec::new();
    let mut mmio_owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut irq_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (index, (name, t)) in raw.tasks.iter().enumerate() {
        let at = |field: &str| format!("{file}: tasks.{name}{field}");
        check_name(file, &format!("tasks.{name}"), name)?;
        let crate_name = t.crate_name.clone().unwrap_or_else(|| name.clone());
        check_name(file, &format!("tasks.{name}.crate"), &crate_name)?;
        if !(0..=LOWEST_PRIORITY).contains(&t.priority) {
            return Err(format!(
                "{}: {} is out of range (0 = highest ..= {LOWEST_PRIORITY})",
                at(".priority"),
                t.priority
            ));
        }
        if t.stack_size == 0 || !t.stack_size.is_multiple_of(16) || t.stack_size > MAX_IMAGE {
            return Err(format!(
                "{}: {} must be a non-zero multiple of 16, at most {MAX_IMAGE:#x}",
                at(".stack-size"),
                t.stack_size
            ));
        }

        let mut regions = Vec::new();
        let mut region_names: BTreeSet<&str> = BTreeSet::new();
        for p in &t.mmio {
            let Some(r) = board.peripherals.get(p) else {
                return Err(format!(
                    "{}: unknown peripheral \"{p}\" (not in {board_file})",
                    at(".mmio")
                ));
            };
            if let Some(a) = &r.aliases {
                if !t.mmio.contains(a) {
                    return Err(format!(
                        "{}: peripheral \"{p}\" aliases \"{a}\" on this board ({board_file}): only a task that maps \"{a}\" may map it; use a register window (`registers`)",
                        at(".mmio")
                    ));
                }
            }
            if let Some(owner) = mmio_owner.insert(p, name) {
                return Err(format!(
                    "{}: peripheral \"{p}\" is already given to task \"{owner}\"",
                    at(".mmio")
                ));
            }
            region_names.insert(p);
            regions.push(Region {
                name: p.clone(),
                va: 0,
                size: r.size,
                attributes: abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DEVICE,
                backing: Backing::Mmio {
                    peripheral: p.clone(),
                    base: r.base,
                },
            });
        }
        for (i, m) in t.memory.iter().enumerate() {
            let field = at(&format!(".memory[{i}]"));
            check_name(file, &format!("tasks.{name}.memory[{i}].name"), &m.name)?;
            if m.name == "text" || m.name == "data" {
                return Err(format!(
                    "{field}.name: \"{}\" is reserved for the task's own image",
                    m.name
                ));
            }
            if !region_names.insert(&m.name) {
                return Err(format!(
                    "{field}.name: region \"{}\" is defined twice in this task",
                    m.name
                ));
            }
            if m.size == 0 {
                return Err(format!("{field}.size: must not be zero"));
            }
            if !m.size.is_multiple_of(PAGE) {
                return Err(format!(
                    "{field}.size: {:#x} is not a multiple of 4 KiB",
                    m.size
                ));
            }
            let mut attributes = abi::REGION_READ | abi::REGION_WRITE;
            if m.dma {
                attributes |= abi::REGION_DMA;
            }
            if m.cache == Cache::Nc {
                attributes |= abi::REGION_UNCACHED;
            }
            regions.push(Region {
                name: m.name.clone(),
                va: 0,
                size: m.size,
                attributes,
                backing: Backing::Memory,
            });
        }
        // The BAR windows of its assigned PCI functions (exactly those
        // pages; nobody else maps them).
        for d in devices.iter().filter(|d| d.owner == index) {
            for (b, &(base, size)) in d.bars.iter().enumerate() {
                if size == 0 {
                    continue;
                }
                let name = d.bar_region(b);
                if regions.iter().any(|r| r.name == name) {
                    return Err(format!(
                        "{}: region \"{name}\" is defined twice in this task",
                        at("")
                    ));
                }
                regions.push(Region {
                    name,
                    va: 0,
                    size,
                    attributes: abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DEVICE,
                    backing: Backing::Mmio {
                        peripheral: board
                            .pci
                            .as_ref()
                            .map(|p| p.bar_window.clone())
                            .unwrap_or_default(),
                        base,
                    },
                });
            }
        }
        // Virtual addresses: each region at the next 2 MiB boundary.
        let mut cursor = TASK_REGIONS;
        for (i, r) in regions.iter_mut().enumerate() {
            let va = cursor.div_ceil(SLOT) * SLOT;
            let end = va.saturating_add(r.size);
            if end > TASK_END {
                let field = if i < t.mmio.len() {
                    ".mmio".to_string()
                } else if i < t.mmio.len() + t.memory.len() {
                    format!(".memory[{}]", i - t.mmio.len())
                } else {
                    " (a device BAR)".to_string()
                };
                return Err(format!(
                    "{}: region \"{}\" would end at {end:#x}, past the task window's end {TASK_END:#x}",
                    at(&field),
                    r.name
                ));
            }
            r.va = va;
            cursor = end;
        }

        let is_supervisor = Some(name.as_str()) == supervisor;
        let mut irqs: Vec<TaskIrq> = Vec::new();
        for (irq_name, &bits) in &t.interrupts {
            let field = at(&format!(".interrupts.{irq_name}"));
            let Some(irq) = board.interrupts.get(irq_name) else {
                return Err(format!(
                    "{}: unknown interrupt \"{irq_name}\" (not in {board_file})",
                    at(".interrupts")
                ));
            };
            if let Some(owner) = irq_owner.insert(irq_name, name) {
                return Err(format!(
                    "{}: interrupt \"{irq_name}\" is already owned by task \"{owner}\"",
                    at(".interrupts")
                ));
            }
            if bits == 0 {
                return Err(format!("{field}: notification bits must not be 0"));
            }
            if is_supervisor && bits & abi::SUPERVISOR_FAULT_BIT != 0 {
                return Err(format!(
                    "{field}: bit 0 is reserved on the supervisor for fault notifications"
                ));
            }
            if let Some(other) = irqs.iter().find(|o| o.notification & bits != 0) {
                return Err(format!(
                    "{field}: bits {:#x} are also used by interrupt \"{}\"",
                    other.notification & bits,
                    other.name
                ));
            }
            irqs.push(TaskIrq {
                name: irq_name.clone(),
                intid: irq.intid,
                notification: bits,
                edge: irq.trigger == Trigger::Edge,
            });
        }

        let mut windows: Vec<RegWindow> = Vec::new();
        if t.registers.len() > MAX_REG_WINDOWS {
            return Err(format!(
                "{}: {} windows, at most {MAX_REG_WINDOWS}",
                at(".registers"),
                t.registers.len()
            ));
        }
        for (i, w) in t.registers.iter().enumerate() {
            let field = at(&format!(".registers[{i}]"));
            check_name(file, &format!("tasks.{name}.registers[{i}].name"), &w.name)?;
            if windows.iter().any(|o| o.name == w.name) {
                return Err(format!("{field}.name: \"{}\" is defined twice", w.name));
            }
            let Some(p) = board.peripherals.get(&w.peripheral) else {
                return Err(format!(
                    "{field}.peripheral: unknown peripheral \"{}\" (not in {board_file})",
                    w.peripheral
                ));
            };
            let Some(set) = p.register_set.as_deref().and_then(register_set) else {
                return Err(format!(
                    "{field}.peripheral: \"{}\" has no register-set in {board_file}",
                    w.peripheral
                ));
            };
            if w.regs.is_empty() || w.regs.len() > MAX_WINDOW_REGS {
                return Err(format!(
                    "{field}.regs: {} registers (1..={MAX_WINDOW_REGS})",
                    w.regs.len()
                ));
            }
            let mut regs: Vec<(String, u32)> = Vec::new();
            for r in &w.regs {
                let Some(&(_, off)) = set.iter().find(|(n, _)| n == r) else {
                    let known: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
                    return Err(format!(
                        "{field}.regs: \"{r}\" is not a register of \"{}\" (known: {})",
                        w.peripheral,
                        known.join(", ")
                    ));
                };
                if regs.iter().any(|(n, _)| n == r) {
                    return Err(format!("{field}.regs: \"{r}\" is listed twice"));
                }
                regs.push((r.clone(), off));
            }
            windows.push(RegWindow {
                name: w.name.clone(),
                peripheral: w.peripheral.clone(),
                base: p.base,
                regs,
            });
        }

        tasks.push(Task {
            index,
            name: name.clone(),
            crate_name,
            priority: t.priority as u8,
            stack_size: t.stack_size,
            start: t.start,
            slots: Vec::new(),
            posts: Vec::new(),
            windows,
            caps: Cap::ALL
                .into_iter()
                .filter(|c| t.caps.iter().any(|n| n == c.name()))
                .collect(),
            regions,
            irqs,
        });
    }

    // Task slots: only to known, strictly higher-priority tasks.
    for (index, (name, t)) in raw.tasks.iter().enumerate() {
        let field = format!("{file}: tasks.{name}.task-slots");
        let mut slots = Vec::new();
        for s in &t.task_slots {
            if s == name {
                return Err(format!("{field}: a task cannot have a slot to itself"));
            }
            let Some(target) = raw.tasks.get_index_of(s) else {
                return Err(format!("{field}: unknown task \"{s}\""));
            };
            if slots.contains(&target) {
                return Err(format!("{field}: \"{s}\" is listed twice"));
            }
            let (mine, theirs) = (tasks[index].priority, tasks[target].priority);
            if theirs >= mine {
                return Err(format!(
                    "{field}: \"{s}\" has priority {theirs}, not strictly higher than this task's {mine} (a task may only send to smaller priority numbers)"
                ));
            }
            slots.push(target);
        }
        tasks[index].slots = slots;

        // Post-only peers: any priority (a server notifies the tasks that
        // call it); never a send capability.
        let field = format!("{file}: tasks.{name}.posts");
        let mut posts = Vec::new();
        for s in &t.posts {
            if s == name {
                return Err(format!("{field}: a task cannot post to itself"));
            }
            let Some(target) = raw.tasks.get_index_of(s) else {
                return Err(format!("{field}: unknown task \"{s}\""));
            };
            if posts.contains(&target) {
                return Err(format!("{field}: \"{s}\" is listed twice"));
            }
            if tasks[index].slots.contains(&target) {
                return Err(format!(
                    "{field}: \"{s}\" is also in task-slots (a slot already grants post)"
                ));
            }
            posts.push(target);
        }
        tasks[index].posts = posts;
    }

    // A peripheral behind a register window is reached through the kernel
    // only: no task may also map it.
    for t in &tasks {
        for w in &t.windows {
            if let Some(owner) = mmio_owner.get(w.peripheral.as_str()) {
                return Err(format!(
                    "{file}: tasks.{}.registers: peripheral \"{}\" is mapped by task \"{owner}\" (a register window's peripheral must not be mapped)",
                    t.name, w.peripheral
                ));
            }
        }
    }

    let mut streams = Vec::new();
    let mut sids: BTreeSet<u32> = BTreeSet::new();
    for (i, s) in raw.streams.iter().enumerate() {
        if !sids.insert(s.sid) {
            return Err(format!(
                "{file}: streams[{i}].sid: stream {:#x} is assigned twice",
                s.sid
            ));
        }
        let Some(vm) = raw.tasks.get_index_of(&s.vm) else {
            return Err(format!(
                "{file}: streams[{i}].vm: unknown task \"{}\"",
                s.vm
            ));
        };
        streams.push(Stream {
            sid: s.sid,
            vm,
            vsid: s.vsid,
        });
    }
    // A function and its stream belong to the same VM: the stream is
    // derived from the device table when `[[streams]]` does not name it,
    // and checked when it does.
    for (i, d) in devices.iter().enumerate() {
        match streams.iter().find(|s| s.sid == d.sid) {
            None => streams.push(Stream {
                sid: d.sid,
                vm: d.owner,
                vsid: None,
            }),
            Some(s) if same_vm(&raw, s.vm, d.owner) => {}
            Some(s) => {
                return Err(format!(
                    "{file}: devices[{i}].owner: \"{}\" owns function {}, but its stream {:#x} is assigned to \"{}\" in [[streams]] (a function and its stream have the same VM)",
                    raw.tasks.get_index(d.owner).map(|(n, _)| n.as_str()).unwrap_or("?"),
                    raw.devices[i].function,
                    d.sid,
                    raw.tasks.get_index(s.vm).map(|(n, _)| n.as_str()).unwrap_or("?"),
                ));
            }
        }
    }
    // The ECAM belongs to pci-server alone and the BAR window to nobody
    // (each assigned BAR is mapped into its owner): a task holding either
    // could re-program or reach every function on the bus.
    let pci_ecam = match &board.pci {
        None => None,
        Some(pci) => {
            let holders: Vec<&Task> = tasks
                .iter()
                .filter(|t| {
                    t.regions.iter().any(|r| {
                        matches!(&r.backing, Backing::Mmio { .. }) && r.name == pci.config_space()
                    })
                })
                .collect();
            match holders.as_slice() {
                [] if !devices.is_empty() => {
                    return Err(format!(
                        "{file}: devices: no task runs pci-server with mmio = [\"{}\"] to own the configuration space",
                        pci.config_space()
                    ))
                }
                [] => {}
                [t] if t.crate_name == "pci-server" => {}
                [t, ..] => {
                    return Err(format!(
                        "{file}: tasks.{}.mmio: \"{}\" (the configuration space) belongs to pci-server only (docs/devices.md)",
                        t.name,
                        pci.config_space()
                    ))
                }
            }
            if let Some(owner) = mmio_owner.get(pci.bar_window.as_str()) {
                return Err(format!(
                    "{file}: tasks.{owner}.mmio: \"{}\" (the whole BAR window) may not be mapped: each owner gets its functions' BARs through [[devices]] (docs/devices.md)",
                    pci.bar_window
                ));
            }
            (!devices.is_empty()).then(|| pci.config_space().to_string())
        }
    };

    // Coherency is a board fact the SMMU's driver cannot learn safely by
    // itself (IDR0.COHACC describes the SMMU, not the integration):
    // refuse to build an SMMU-driving app on a board that does not say.
    let drives_smmu = raw
        .tasks
        .values()
        .any(|t| t.mmio.iter().any(|m| m == "smmu-page0"));
    let smmu_coherent = match (drives_smmu, board.smmu_coherent) {
        (false, _) => false,
        (true, Some(c)) => c && !raw.smmu.force_non_coherent,
        (true, None) => {
            return Err(format!(
                "{board_file}: smmu-coherent: not stated, and {file} drives the SMMU: say `smmu-coherent = true` if the SMMU's table walks and queue accesses snoop the CPU caches (the firmware's dma-coherent), else false (docs/porting.md)"
            ))
        }
    };

    let vms = validate_vms(file, &raw, &mut tasks, &streams, &board)?;

    let pasids = match raw.pasids {
        None => (0, 0),
        Some(p) => {
            let Some(alloc) = tasks
                .iter()
                .find(|t| t.name == "pasid-alloc" || t.crate_name == "pasid-alloc")
            else {
                return Err(format!(
                    "{file}: pasids: no task runs pasid-alloc to serve the PASID space"
                ));
            };
            if p.bits > MAX_PASID_BITS {
                return Err(format!(
                    "{file}: pasids.bits: {} is above {MAX_PASID_BITS} (PASIDs are 20 bits)",
                    p.bits
                ));
            }
            let smmu_user = raw
                .tasks
                .values()
                .any(|t| t.mmio.iter().any(|m| m == "smmu-page0"));
            if smmu_user && p.bits > board.smmu_ssid_bits {
                return Err(format!(
                    "{file}: pasids.bits: {} is above the SMMU's SSIDSIZE ({} in {board_file}: smmu-ssid-bits)",
                    p.bits, board.smmu_ssid_bits
                ));
            }
            // The table (8 bytes per PASID: pasid_alloc::BYTES_PER_PASID)
            // lives on the task's stack.
            let need = (8u64 << p.bits) + 4096;
            if alloc.stack_size < need {
                return Err(format!(
                    "{file}: tasks.{}.stack-size: {} cannot hold the 2^{} PASID table ({need} bytes needed)",
                    alloc.name, alloc.stack_size, p.bits
                ));
            }
            (p.bits, p.quota)
        }
    };

    let mut cases: Vec<String> = Vec::new();
    for (i, c) in raw.expect.cases.iter().enumerate() {
        if c.is_empty() || c.chars().any(char::is_whitespace) {
            return Err(format!(
                "{file}: expect.cases[{i}]: \"{c}\" is not a valid case name (non-empty, no spaces)"
            ));
        }
        if cases.contains(c) {
            return Err(format!(
                "{file}: expect.cases[{i}]: \"{c}\" is listed twice"
            ));
        }
        cases.push(c.clone());
    }

    Ok(App {
        name: raw.name,
        file: file.to_string(),
        board,
        board_file,
        kernel_stack_size: raw.kernel.stack_size,
        tasks,
        streams,
        vms,
        devices,
        pci_ecam,
        cases,
        bench: raw.expect.bench,
        boot_flat: raw.expect.boot_flat,
        pasids,
        smmu_coherent,
        smmu_forced_non_coherent: raw.smmu.force_non_coherent,
    })
}

/// Human-readable region attributes ("READ|WRITE|DMA").
pub fn attr_names(attributes: u32) -> String {
    let mut s = String::new();
    for (bit, name) in [
        (abi::REGION_READ, "READ"),
        (abi::REGION_WRITE, "WRITE"),
        (abi::REGION_EXECUTE, "EXECUTE"),
        (abi::REGION_DEVICE, "DEVICE"),
        (abi::REGION_DMA, "DMA"),
        (abi::REGION_UNCACHED, "UNCACHED"),
    ] {
        if attributes & bit != 0 {
            if !s.is_empty() {
                s.push('|');
            }
            s.push_str(name);
        }
    }
    if s.is_empty() {
        let _ = write!(s, "{attributes:#x}");
    }
    s
}

#[cfg(test)]
mod tests;
