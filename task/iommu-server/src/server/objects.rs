//! The server's objects: reserved windows, domain handles and kinds,
//! the static configuration, and the records kept per stream, domain and
//! bound context.

use crate::pgtable::IAS_END;
use crate::update::UpdateKind;
use smmuv3::{AddrSize, S1Dss, S1Fmt, Tg0};

use super::FaultDuty;

/// The MSI window, reserved in every domain from its creation: IOVA
/// `[0x0800_0000, 0x0810_0000)` (1 MiB, Linux's MSI_IOVA_BASE). QEMU's virt
/// has no MSI-capable SMMU (IDR0.MSI = 0), but a guest's vIOMMU and a real
/// board with a GIC ITS doorbell need the range kept free, so mapping into
/// it is refused with [`Error::Reserved`] on every board.
pub const MSI_WINDOW: Window = Window {
    base: 0x0800_0000,
    size: 0x10_0000,
};

/// The context window of every S2 domain: IPA `[0x7F_C000_0000,
/// 0x80_0000_0000)`, the top 1 GiB of the 39-bit IPA space. When PASID
/// contexts are bound on a stream, its STE becomes nested and the SMMU
/// fetches the server's CD table through stage 2: the server maps exactly
/// those table pages here, read-only, at `base + (region offset)`.
pub const CTX_WINDOW: Window = Window {
    base: IAS_END - 0x4000_0000,
    size: 0x4000_0000,
};

/// An address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub base: u64,
    pub size: u64,
}

impl Window {
    /// True when `[addr, addr + len)` overlaps the window.
    pub const fn overlaps(&self, addr: u64, len: u64) -> bool {
        addr < self.base + self.size && addr + len > self.base
    }
}

/// A domain handle: slot index, the slot's generation and the server's
/// incarnation, so a stale handle — to a destroyed domain, or from before
/// the server restarted — is [`Error::NotFound`], never another domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DomainId(pub u32);

impl DomainId {
    pub(super) fn new(slot: usize, gen: u8, incarnation: u16) -> Self {
        DomainId((incarnation as u32) << 16 | (gen as u32) << 8 | slot as u32)
    }
    pub(super) fn slot(self) -> usize {
        (self.0 & 0xff) as usize
    }
    pub(super) fn gen(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub(super) fn incarnation(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// What kind of domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainKind {
    /// Stage 2: a VM's IPA space (VMID, page table built by the server).
    S2,
    /// Stage 1 managed by the server (ASID, page table built by the
    /// server), with VMID 0.
    S1,
    /// Nested: the guest's CD table (an IPA) over a parent S2 domain.
    Nested,
}

/// The guest's stage 1 configuration of a nested domain (its vSTE):
/// STE.S1ContextPtr (an IPA under the parent's stage 2), S1CDMax, S1Fmt,
/// S1DSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedConfig {
    pub cd_table_ipa: u64,
    pub s1cdmax: u8,
    pub s1fmt: S1Fmt,
    pub s1dss: S1Dss,
}

/// A guest's stage 1 context for one (stream, PASID): the CD fields the
/// caller chooses. TTB0 is an IPA (the stream is nested under the VM's S2
/// domain). The server adds V, A, AA64, EPD1 (no TTB1) and write-back,
/// inner-shareable walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestContext {
    pub ttb0: u64,
    pub mair: u64,
    pub asid: u16,
    pub t0sz: u8,
    pub tg0: Tg0,
    pub ips: AddrSize,
    /// CD.R: record stage 1 faults as events.
    pub record_faults: bool,
}

/// When unmapped pages stop being reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapMode {
    /// Invalidate before replying.
    Strict,
    /// Leave the TLBs alone; the caller must [`IommuServer::flush`] before
    /// reusing the pages (Linux's lazy mode). Until then the device may
    /// still reach them through stale translations.
    Deferred,
}

/// The result of attach / replace / detach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachResult {
    /// The domain the stream was attached to before.
    pub old: Option<DomainId>,
    /// How the STE changed.
    pub update: UpdateKind,
    /// Set when the old domain was fault-capable: its pending fault groups
    /// of this stream must now be answered INVALID (by prq-server; until it
    /// exists, by the caller).
    pub fault_duty: Option<FaultDuty>,
}

/// A VM's physical memory, for checking the PAs it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmWindow {
    pub vm: u16,
    pub pa: u64,
    pub size: u64,
}

/// Static configuration.
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig<'a> {
    /// (StreamID, task index of the VM it is assigned to).
    pub streams: &'a [(u32, u16)],
    /// Task names by index (the image's `TASK_NAMES`, generated from
    /// app.toml). When given, callers are checked by name: `supervisor`,
    /// `prq-server`, and VMs = tasks named `vmm-frontend[-…]` or owning a
    /// stream (never a system task's name). Empty: the indices below
    /// decide and a VM is a task that owns a stream.
    pub task_names: &'a [&'a str],
    /// Without `task_names`: task index of prq-server (the only task that
    /// may ask for PRI_RESP / RESUME); None: nobody may.
    pub prq_server: Option<u16>,
    /// Without `task_names`: task index allowed to reclaim a dead VM's
    /// objects (the supervisor, task 0).
    pub supervisor: u16,
    /// Upper bound on PASID bits per stream (the CD table size), below
    /// IDR1.SSIDSIZE.
    pub max_pasid_bits: u8,
    /// CMD_SYNC raises the cmd-sync interrupt.
    pub sync_irq: bool,
    /// Run the event queue (needs SMMU page 1).
    pub event_queue: bool,
    /// Distinguishes this server incarnation's domain handles from an
    /// earlier one's (the image passes its own generation + 1; tests 0), so
    /// a VM holding a handle from before a server restart gets NotFound.
    pub incarnation: u16,
    /// Each VM's memory: a mapped PA must lie in one of the mapping VM's
    /// windows (the harness's mechanism). None: not checked here. The
    /// server's own DMA region is refused either way.
    pub vm_memory: Option<&'a [VmWindow]>,
    /// Ask the kernel (`sys_phys_owned`, capability `memory-query`) whether
    /// the caller's DMA memory covers a mapped PA (the image's mechanism).
    /// Without the capability the first map faults this task.
    pub memory_query: bool,
    /// Notification bit of the GERROR interrupt (0: none).
    pub gerror_bit: u32,
    /// Notification bit of the event queue interrupt (0: none).
    pub eventq_bit: u32,
}

impl Default for ServerConfig<'_> {
    fn default() -> Self {
        Self {
            streams: &[],
            task_names: &[],
            prq_server: None,
            supervisor: 0,
            max_pasid_bits: 20,
            sync_irq: false,
            event_queue: true,
            vm_memory: None,
            memory_query: false,
            incarnation: 0,
            gerror_bit: 0,
            eventq_bit: 0,
        }
    }
}

/// What `reclaim` took down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub streams: u32,
    pub binds: u32,
    pub domains: u32,
}

/// What `info` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    pub idr0: u32,
    pub idr1: u32,
    pub idr3: u32,
    pub idr5: u32,
    pub gbpa: u32,
    pub cr0: u32,
    /// STRTAB_BASE_CFG.
    pub strtab_cfg: u32,
    pub pages_total: u32,
    pub pages_free: u32,
    pub commands: u32,
    pub syncs: u32,
    /// Refused commands recovered from, and the last one's opcode and
    /// CMDQ_CONS.ERR (0 if none).
    pub cmd_recovered: u32,
    pub last_refused_opcode: u8,
    pub last_refused_err: u8,
    pub gerrors_seen: u32,
    pub events_read: u32,
    pub domains: u16,
    pub contexts: u16,
    /// Counter ticks of the last STE update (see [`crate::now`]).
    pub ste_update_instr: u64,
    /// Counter ticks of the last attach / replace / detach request.
    pub attach_instr: u64,
}
