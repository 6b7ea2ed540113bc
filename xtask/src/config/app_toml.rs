//! `app.toml` as written: the serde types of the app file, before any
//! check.

use super::*;

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

pub(super) fn yes() -> bool {
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
