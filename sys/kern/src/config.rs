//! The shape of the static configuration that `cargo xtask dist` generates
//! from app.toml and the board file. The generated file (`kernel_config.rs`,
//! included by the kernel binary) defines exactly these items:
//!
//! ```ignore
//! pub static BOARD: kern::config::Board = ...;
//! pub static TASKS: [kern::config::TaskDesc; N] = [...];
//! pub static IRQS: [kern::config::IrqDesc; M] = [...];
//! pub static TRACE_RINGS: [Option<kern::config::TraceRing>; N] = [...];
//! pub const PAGE_TABLE_PAGES: usize = ...; // pages for all task tables
//! pub const KERNEL_STACK_SIZE: usize = ...; // app.toml [kernel] stack-size
//! ```
//!
//! Nothing in here is computed at run time: the build checked it.

/// Where the physical memory behind a region comes from.
#[derive(Copy, Clone, Debug)]
pub enum PhysSource {
    /// A fixed physical address (device MMIO from the board file).
    Fixed(usize),
    /// A page-aligned static inside the kernel image: the task's text (its
    /// linked image, included read-only), its data/stack, or one of its
    /// memory regions. The kernel's own mapping of it is privileged-only.
    Static(StaticPtr),
}

/// A raw pointer to a static, shareable in a `static` table.
#[derive(Copy, Clone, Debug)]
pub struct StaticPtr(pub *const u8);
// SAFETY: the pointer names a static that lives for the whole run; the
// kernel is single-threaded and accesses it only through its own mappings.
unsafe impl Sync for StaticPtr {}
// SAFETY: as above; no thread ever owns it.
unsafe impl Send for StaticPtr {}

/// One mapping in a task's address space.
#[derive(Copy, Clone, Debug)]
pub struct RegionDesc {
    /// Name from app.toml (`text`, `data`, or the region's own name), for
    /// `region_info` lookups.
    pub name: &'static str,
    /// Virtual address in the task (page aligned; 2 MiB aligned for
    /// regions after data).
    pub va: usize,
    /// Size in bytes (a multiple of 4 KiB).
    pub size: usize,
    /// `abi::REGION_*` bits.
    pub attributes: u32,
    pub phys: PhysSource,
}

/// Capabilities beyond IPC.
pub const CAP_TASK_CONTROL: u32 = 1 << 0;
pub const CAP_SHUTDOWN: u32 = 1 << 1;
/// May ask whether another task owns a range of DMA memory
/// (`Sysnum::PhysOwned`).
pub const CAP_MEMORY_QUERY: u32 = 1 << 2;

/// One task of the static task table.
#[derive(Copy, Clone, Debug)]
pub struct TaskDesc {
    pub name: &'static str,
    /// 0 is the highest priority. A task may only send to tasks of strictly
    /// higher priority (smaller number): the build checks it.
    pub priority: u8,
    /// Entry point (virtual).
    pub entry: usize,
    /// Initial stack pointer (virtual): the end of the stack region, which
    /// lies below the data region with an unmapped guard page under it.
    pub stack_top: usize,
    /// Indices of the tasks this one may send to / post to.
    pub task_slots: &'static [u16],
    /// Indices of the tasks this one may only post to (app.toml `posts`):
    /// lower-priority peers a server notifies but never sends to. A post
    /// capability never grants send.
    pub post_slots: &'static [u16],
    /// Register windows (app.toml `registers`): device registers the
    /// kernel reads and writes for the task (`Sysnum::RegRead` /
    /// `RegWrite`); never mapped into the task.
    pub reg_windows: &'static [RegWindow],
    /// Mappings: text, stack, data (indices 0, 1, 2), then the task's other
    /// regions. The kernel zeroes stack and data at every (re)start.
    pub regions: &'static [RegionDesc],
    /// `CAP_*` bits.
    pub capabilities: u32,
    /// Start at boot (otherwise only when the supervisor starts it).
    pub start: bool,
    /// A VM's frontend (app.toml `vm = { guest = … }`): the index of its
    /// guest task. The VM is the frontend and its guest together, so the
    /// guest's DMA memory counts as the frontend's for
    /// `Sysnum::PhysOwned` (iommu-server maps the guest's RAM into the
    /// VM's stage 2 at the frontend's request, and nothing else). `None`
    /// for every other task.
    pub vm_guest: Option<u16>,
}

/// A kernel-mediated register window: the task may access exactly these
/// 32-bit registers, each at `base + offsets[i]`, through the kernel. Used
/// where the page that holds them cannot be given to the task because it
/// also holds (or aliases) registers the task must not reach — on QEMU 10
/// the SMMU's page 1 aliases page 0 (CR0, STRTAB_BASE, the command queue).
#[derive(Copy, Clone, Debug)]
pub struct RegWindow {
    /// Name from app.toml, for `Sysnum::RegLookup`.
    pub name: &'static str,
    /// Physical (= kernel, identity-mapped, privileged-only Device) address
    /// of the peripheral the offsets are relative to.
    pub base: usize,
    /// Byte offsets of the registers (4-aligned, inside the peripheral: the
    /// build checks both).
    pub offsets: &'static [u32],
}

/// An interrupt owned by a task, delivered as notification bits.
#[derive(Copy, Clone, Debug)]
pub struct IrqDesc {
    /// GIC INTID (SPI ≥ 32; PPIs other than the kernel timer allowed).
    pub intid: u32,
    /// Owning task index.
    pub task: u16,
    /// Notification bits posted to the owner when it fires.
    pub notification: u32,
    /// Edge-triggered (true) or level-sensitive.
    pub edge: bool,
}

/// The kernel console's UART model (board file `console.kind`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConsoleKind {
    /// Arm PL011 (QEMU `virt`).
    Pl011,
    /// NXP i.MX LPUART with 32-bit registers after the 0x10-byte
    /// VERID/PARAM/GLOBAL/PINCFG header (i.MX7ULP/8ULP/93/95).
    Lpuart,
}

/// The kernel console: which UART, and where (board file `console`).
#[derive(Copy, Clone, Debug)]
pub struct Console {
    pub kind: ConsoleKind,
    /// Physical (= kernel, identity-mapped Device) base of its registers;
    /// the build checks it lies in a `kernel-devices` range.
    pub base: usize,
}

/// The board facts the kernel itself needs.
#[derive(Copy, Clone, Debug)]
pub struct Board {
    pub name: &'static str,
    pub console: Console,
    /// Whether a semihosting host is attached (QEMU `-semihosting`): only
    /// then does `shutdown` with a non-zero status use SYS_EXIT. On a board
    /// without one the `HLT` would be an undefined instruction.
    pub semihosting: bool,
    pub gicd_base: usize,
    pub gicr_base: usize,
    /// PPI of the EL2 physical timer (26 on virt).
    pub timer_intid: u32,
    /// RAM range, mapped privileged-only for the kernel.
    pub ram_base: usize,
    pub ram_size: usize,
    /// Device ranges the kernel maps privileged-only (console UART, GIC).
    pub kernel_devices: &'static [(usize, usize)],
}

/// Page alignment for the statics the generated table defines (task text
/// blobs, data, memory regions): the kernel maps them into tasks with 4 KiB
/// pages, so they must start on a page.
#[repr(C, align(4096))]
pub struct PageAligned<T>(pub T);

/// Where a task's trace ring lies (docs/tracing.md): the `TRACE_RING`
/// static of its ELF, which the build found inside the task's data region.
/// The kernel prints its bytes when the task faults or the kernel stops.
#[derive(Copy, Clone, Debug)]
pub struct TraceRing {
    /// Virtual address in the task.
    pub va: usize,
    /// Size in bytes.
    pub size: usize,
}

/// The complete static configuration, as the kernel consumes it.
#[derive(Copy, Clone)]
pub struct Config {
    pub board: &'static Board,
    pub tasks: &'static [TaskDesc],
    pub irqs: &'static [IrqDesc],
    /// Per task (same index as `tasks`): its trace ring, if it has one.
    pub trace_rings: &'static [Option<TraceRing>],
}
