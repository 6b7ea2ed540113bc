//! The server: objects (streams, domains, bound contexts), their owners,
//! and every operation a client may ask for, each checked against the
//! kernel-provided sender id before anything changes.
//!
//! State lives in [`IommuServer`] (no statics), so the harness can run
//! several instances. Every table is a fixed array with a stated bound;
//! a full table is [`Error::NoSpace`].

use crate::cdtab::CdTable;
use crate::cmdq::{IssueFailure, Waiter, BATCH_MAX};
use crate::dma::DmaMemory;
use crate::driver::{Features, InitConfig, Smmu};
use crate::error::{Error, Result};
use crate::pages::{Pages, PAGE_SIZE};
use crate::pgtable::{valid_iova, PageTable, Prot, Stage, IAS_END, START_LEVEL, TSZ};
use crate::update::UpdateKind;
use smmuv3::pgtable::{mair, s2sl0_for_level};
use smmuv3::{
    AddrSize, Cacheability, Cd, Command, CommandKind, Event, Mmio, PriResponse, ResumeAction,
    S1Dss, S1Fmt, Shareability, Shcfg, Ste, StreamConfig, Strw, Tg0,
};
use userlib::TaskId;

/// Streams in the static map.
pub const MAX_STREAMS: usize = 32;
/// Live domains.
pub const MAX_DOMAINS: usize = 32;
/// Bound (stream, PASID) contexts.
pub const MAX_CONTEXTS: usize = 64;
/// Pages per map / unmap request (2 MiB).
pub const MAX_MAP_PAGES: u32 = 512;
/// Commands per guest invalidation batch.
pub const MAX_INVALIDATION: usize = 64;
/// Responses per page_response request.
pub const MAX_RESPONSES: usize = 32;
/// Event records held for the VMs (see [`EventRing`]).
pub const EVENT_RING: usize = 32;
/// VM memory windows the server can check mapped PAs against.
pub const MAX_VM_WINDOWS: usize = 16;
/// Tasks the caller roles are resolved for (the kernel's limit).
pub const MAX_TASKS: usize = 64;

/// Task names with a role in this server's interface (`TASK_NAMES`).
pub mod names {
    pub const SUPERVISOR: &str = "supervisor";
    pub const PRQ_SERVER: &str = "prq-server";
    /// One frontend per VM: `vmm-frontend`, or `vmm-frontend-<anything>`.
    pub const VMM_FRONTEND: &str = "vmm-frontend";
    /// Names that are never a VM, whatever `[[streams]]` says.
    pub const SYSTEM: &[&str] = &[
        "supervisor",
        "prq-server",
        "pasid-alloc",
        "iommu-server",
        "idle",
    ];
}

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
    fn new(slot: usize, gen: u8, incarnation: u16) -> Self {
        DomainId((incarnation as u32) << 16 | (gen as u32) << 8 | slot as u32)
    }
    fn slot(self) -> usize {
        (self.0 & 0xff) as usize
    }
    fn gen(self) -> u8 {
        (self.0 >> 8) as u8
    }
    fn incarnation(self) -> u16 {
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

/// A duty to answer the old domain's pending faults of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultDuty {
    pub domain: DomainId,
    pub sid: u32,
}

/// A response prq-server asks the server to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageResponse {
    Pri {
        sid: u32,
        ssid: Option<u32>,
        prgi: u16,
        resp: PriResponse,
    },
    Resume {
        sid: u32,
        stag: u16,
        action: ResumeAction,
    },
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

/// What a task may ask of this server, resolved once from the names (or
/// indices) of [`ServerConfig`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub supervisor: bool,
    pub prq_server: bool,
    pub vm: bool,
}

impl Roles {
    /// The role table for `cfg` (index = task index).
    pub fn table(cfg: &ServerConfig<'_>) -> [Roles; MAX_TASKS] {
        let mut t = [Roles::default(); MAX_TASKS];
        let owns_stream = |i: usize| cfg.streams.iter().any(|&(_, vm)| vm as usize == i);
        if cfg.task_names.is_empty() {
            if let Some(r) = t.get_mut(cfg.supervisor as usize) {
                r.supervisor = true;
            }
            if let Some(r) = cfg.prq_server.and_then(|p| t.get_mut(p as usize)) {
                r.prq_server = true;
            }
            for (i, r) in t.iter_mut().enumerate() {
                r.vm = owns_stream(i);
            }
            return t;
        }
        for (i, (r, name)) in t.iter_mut().zip(cfg.task_names).enumerate() {
            let frontend = *name == names::VMM_FRONTEND
                || name
                    .strip_prefix(names::VMM_FRONTEND)
                    .is_some_and(|rest| rest.starts_with('-'));
            *r = Roles {
                supervisor: *name == names::SUPERVISOR,
                prq_server: *name == names::PRQ_SERVER,
                vm: !names::SYSTEM.contains(name) && (frontend || owns_stream(i)),
            };
        }
        t
    }
}

#[derive(Clone, Copy, Debug)]
struct StreamState {
    sid: u32,
    owner: u16,
    vsid: u32,
    attached: Option<usize>,
    /// The server-owned CD table of bound contexts (STE nested).
    ctx: Option<CdTable>,
    events_lost: u32,
}

#[derive(Clone, Copy, Debug)]
enum Inner {
    S2 { vmid: u16, pt: PageTable },
    S1 { asid: u16, pt: PageTable, cd: Pages },
    Nested { parent: usize, cfg: NestedConfig },
}

#[derive(Clone, Copy, Debug)]
struct Domain {
    owner: TaskId,
    fault_capable: bool,
    users: u16,
    children: u16,
    inner: Inner,
    needs_flush: bool,
}

#[derive(Clone, Copy, Debug)]
struct DomainSlot {
    gen: u8,
    dom: Option<Domain>,
}

#[derive(Clone, Copy, Debug)]
struct Context {
    stream: usize,
    pasid: u32,
    users: u16,
    ctx: GuestContext,
}

/// Event records kept for their owners. Bounded at [`EVENT_RING`];
/// overflow rule: the oldest record is dropped and counted as lost for
/// its stream (reported to the owner at the next fetch).
#[derive(Clone, Copy, Debug)]
pub struct EventRing {
    buf: [(usize, Event); EVENT_RING],
    len: usize,
    /// Records for streams outside the static map (dropped).
    pub unrouted: u32,
}

impl EventRing {
    fn new() -> Self {
        Self {
            buf: [(0, Event::zeroed()); EVENT_RING],
            len: 0,
            unrouted: 0,
        }
    }
}

/// The iommu-server.
pub struct IommuServer<M: Mmio, D: DmaMemory, W: Waiter> {
    pub smmu: Smmu<M, D, W>,
    roles: [Roles; MAX_TASKS],
    pasid_bits: u32,
    vm_memory: Option<([VmWindow; MAX_VM_WINDOWS], usize)>,
    memory_query: bool,
    /// See [`ServerConfig::incarnation`].
    incarnation: u16,
    /// Notification bits of the interrupts this server services.
    pub irq_bits: u32,
    /// Counter ticks of the last attach / replace / detach (set by the
    /// interface layer, which sees the whole request).
    pub last_attach_instr: u64,
    streams: [Option<StreamState>; MAX_STREAMS],
    domains: [DomainSlot; MAX_DOMAINS],
    contexts: [Option<Context>; MAX_CONTEXTS],
    events: EventRing,
}

fn issue_err(f: IssueFailure) -> Error {
    Error::from(f)
}

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// Probes and initialises the SMMU (fail closed, see `Smmu::init`) and
    /// takes the static stream→VM map. Not inlined: its temporaries then
    /// live in its own stack frame, gone before the caller serves.
    #[inline(never)]
    pub fn new(mmio: M, mem: D, waiter: W, cfg: &ServerConfig<'_>) -> Result<Self> {
        if cfg.streams.len() > MAX_STREAMS || cfg.task_names.len() > MAX_TASKS {
            return Err(Error::NoSpace);
        }
        let mut sids = [0u32; MAX_STREAMS];
        for (i, (sid, _)) in cfg.streams.iter().enumerate() {
            if sids[..i].contains(sid) {
                return Err(Error::Invalid);
            }
            sids[i] = *sid;
        }
        let vm_memory = match cfg.vm_memory {
            Some(w) if w.len() > MAX_VM_WINDOWS => return Err(Error::NoSpace),
            Some(w) => {
                let mut a = [VmWindow {
                    vm: 0,
                    pa: 0,
                    size: 0,
                }; MAX_VM_WINDOWS];
                a[..w.len()].copy_from_slice(w);
                Some((a, w.len()))
            }
            None => None,
        };
        let init = InitConfig {
            sids: &sids[..cfg.streams.len()],
            sync_irq: cfg.sync_irq,
            event_queue: cfg.event_queue,
        };
        let smmu = Smmu::init(mmio, mem, waiter, &init)?;
        let mut streams = [None; MAX_STREAMS];
        for (i, (sid, vm)) in cfg.streams.iter().enumerate() {
            streams[i] = Some(StreamState {
                sid: *sid,
                owner: *vm,
                vsid: *sid,
                attached: None,
                ctx: None,
                events_lost: 0,
            });
        }
        let pasid_bits = smmu.features.ssid_bits.min(cfg.max_pasid_bits as u32);
        Ok(Self {
            smmu,
            roles: Roles::table(cfg),
            pasid_bits,
            vm_memory,
            memory_query: cfg.memory_query,
            incarnation: cfg.incarnation,
            irq_bits: cfg.gerror_bit | if cfg.event_queue { cfg.eventq_bit } else { 0 },
            last_attach_instr: 0,
            streams,
            domains: [DomainSlot { gen: 1, dom: None }; MAX_DOMAINS],
            contexts: [None; MAX_CONTEXTS],
            events: EventRing::new(),
        })
    }

    /// The probed features.
    pub fn features(&self) -> &Features {
        &self.smmu.features
    }

    // ------------------------------------------------------------ lookups

    /// The caller's stream `sid`. A SID outside the static map, or
    /// assigned to another VM, is NotPermitted (the same answer, so a VM
    /// learns nothing about others' assignments).
    fn stream_idx(&self, caller: TaskId, sid: u32) -> Result<usize> {
        self.streams
            .iter()
            .position(
                |s| matches!(s, Some(s) if s.sid == sid && s.owner as usize == caller.index()),
            )
            .ok_or(Error::NotPermitted)
    }

    fn stream(&self, i: usize) -> &StreamState {
        // Indices come from stream_idx / stored attachments: always live.
        self.streams[i].as_ref().unwrap_or(&DEAD_STREAM)
    }

    fn stream_mut(&mut self, i: usize) -> Option<&mut StreamState> {
        self.streams[i].as_mut()
    }

    /// The caller's domain `id`: NotFound if it does not exist (or the
    /// handle is stale), NotPermitted if it is another task's.
    fn domain_idx(&self, caller: TaskId, id: DomainId) -> Result<usize> {
        let slot = id.slot();
        let s = self.domains.get(slot).ok_or(Error::NotFound)?;
        let d = s
            .dom
            .as_ref()
            .filter(|_| s.gen == id.gen() && id.incarnation() == self.incarnation)
            .ok_or(Error::NotFound)?;
        if d.owner != caller {
            return Err(Error::NotPermitted);
        }
        Ok(slot)
    }

    fn dom(&self, i: usize) -> Option<&Domain> {
        self.domains.get(i)?.dom.as_ref()
    }

    fn dom_mut(&mut self, i: usize) -> Option<&mut Domain> {
        self.domains.get_mut(i)?.dom.as_mut()
    }

    fn id_of(&self, i: usize) -> DomainId {
        DomainId::new(i, self.domains[i].gen, self.incarnation)
    }

    fn vmid_of(&self, i: usize) -> Option<u16> {
        match self.dom(i)?.inner {
            Inner::S2 { vmid, .. } => Some(vmid),
            Inner::Nested { parent, .. } => self.vmid_of(parent),
            Inner::S1 { .. } => None,
        }
    }

    fn context_idx(&self, stream: usize, pasid: u32) -> Option<usize> {
        self.contexts
            .iter()
            .position(|c| matches!(c, Some(c) if c.stream == stream && c.pasid == pasid))
    }

    fn contexts_on(&self, stream: usize) -> usize {
        self.contexts
            .iter()
            .flatten()
            .filter(|c| c.stream == stream)
            .count()
    }

    /// True when an S2 domain serves as a nesting parent (nested children
    /// or streams with bound contexts): its unmaps must also flush the
    /// combined stage 1 + 2 entries.
    fn is_nest_parent(&self, i: usize) -> bool {
        self.dom(i).is_some_and(|d| d.children > 0)
            || self
                .streams
                .iter()
                .flatten()
                .any(|s| s.attached == Some(i) && s.ctx.is_some())
    }

    // ------------------------------------------------------------ entries

    fn s2_fields(&self, ste: &mut Ste, vmid: u16, pt: &PageTable) {
        let oas = self.smmu.features.oas.bits().min(48);
        let ps = AddrSize::from_bits(oas).unwrap_or(AddrSize::Bits40);
        ste.set_s2vmid(vmid)
            .set_s2t0sz(TSZ)
            .set_s2sl0(s2sl0_for_level(START_LEVEL).unwrap_or(1))
            .set_s2ir0(Cacheability::WriteBackAlloc)
            .set_s2or0(Cacheability::WriteBackAlloc)
            .set_s2sh0(Shareability::InnerShareable)
            .set_s2tg(Tg0::Granule4K)
            .set_s2ps(ps)
            // Never 0: QEMU asserts on AArch32 stage 2 tables.
            .set_s2aa64(true)
            .set_s2r(true)
            .set_s2ttb(pt.root.pa);
    }

    fn s1_fields(ste: &mut Ste, ctx_ptr: u64, s1cdmax: u8, fmt: S1Fmt, dss: S1Dss) {
        ste.set_s1fmt(fmt)
            .set_s1_context_ptr(ctx_ptr)
            .set_s1cdmax(s1cdmax)
            .set_s1dss(dss)
            .set_s1cir(Cacheability::WriteBackAlloc)
            .set_s1cor(Cacheability::WriteBackAlloc)
            .set_s1csh(Shareability::InnerShareable)
            .set_strw(Strw::El1);
    }

    fn ste_base(config: StreamConfig) -> Ste {
        let mut s = Ste::zeroed();
        s.set_v(true)
            .set_config(config)
            .set_shcfg(Shcfg::UseIncoming);
        s
    }

    /// The STE that attaches a stream to domain `i` (no bound contexts).
    fn ste_for(&self, i: usize) -> Result<Ste> {
        let d = self.dom(i).ok_or(Error::NotFound)?;
        Ok(match d.inner {
            Inner::S2 { vmid, pt } => {
                let mut s = Self::ste_base(StreamConfig::S2Trans);
                self.s2_fields(&mut s, vmid, &pt);
                s
            }
            Inner::S1 { cd, .. } => {
                let mut s = Self::ste_base(StreamConfig::S1Trans);
                Self::s1_fields(&mut s, cd.pa, 0, S1Fmt::Linear, S1Dss::Terminate);
                s.set_s2vmid(0);
                s
            }
            Inner::Nested { parent, cfg } => {
                let Some(Domain {
                    inner: Inner::S2 { vmid, pt },
                    ..
                }) = self.dom(parent).copied()
                else {
                    return Err(Error::NotFound);
                };
                let mut s = Self::ste_base(StreamConfig::Nested);
                self.s2_fields(&mut s, vmid, &pt);
                Self::s1_fields(&mut s, cfg.cd_table_ipa, cfg.s1cdmax, cfg.s1fmt, cfg.s1dss);
                s
            }
        })
    }

    /// The nested STE of a stream with bound contexts, on S2 domain `i`.
    fn ste_with_contexts(&self, i: usize, table: &CdTable, pasid0_bound: bool) -> Result<Ste> {
        let Some(Domain {
            inner: Inner::S2 { vmid, pt },
            ..
        }) = self.dom(i).copied()
        else {
            return Err(Error::Invalid);
        };
        let dss = match (table.s1cdmax, pasid0_bound) {
            (0, _) => S1Dss::Terminate,
            (_, true) => S1Dss::Ssid0,
            (_, false) => S1Dss::Bypass,
        };
        let mut s = Self::ste_base(StreamConfig::Nested);
        self.s2_fields(&mut s, vmid, &pt);
        Self::s1_fields(&mut s, table.context_ptr(), table.s1cdmax, table.fmt, dss);
        Ok(s)
    }

    fn validate_context(&self, c: &GuestContext) -> Result<()> {
        let f = &self.smmu.features;
        let gran_ok = match c.tg0 {
            Tg0::Granule4K => f.idr5 & (1 << 4) != 0,
            Tg0::Granule16K => f.idr5 & (1 << 5) != 0,
            Tg0::Granule64K => f.idr5 & (1 << 6) != 0,
        };
        if !gran_ok
            || !(16..=39).contains(&c.t0sz)
            || c.ips.bits() > f.oas.bits()
            || (c.asid as u32) >> f.asid_bits != 0
            || c.ttb0 & !Cd::TTB0.mask() != 0
            || c.ttb0 >> c.ips.bits() != 0
        {
            return Err(Error::Invalid);
        }
        Ok(())
    }

    fn build_cd(c: &GuestContext) -> Cd {
        let mut cd = Cd::zeroed();
        cd.set_t0sz(c.t0sz)
            .set_tg0(c.tg0)
            .set_ir0(Cacheability::WriteBackAlloc)
            .set_or0(Cacheability::WriteBackAlloc)
            .set_sh0(Shareability::InnerShareable)
            .set_epd1(true)
            .set_v(true)
            .set_ips(c.ips)
            .set_aa64(true)
            .set_r(c.record_faults)
            // A = 1: terminated transactions abort (QEMU's TERM_MODEL
            // requires it).
            .set_a(true)
            .set_asid(c.asid)
            .set_ttb0(c.ttb0)
            .set_mair(c.mair);
        cd
    }

    // ------------------------------------------------------------ domains

    fn free_domain_slot(&self) -> Result<usize> {
        self.domains
            .iter()
            .position(|s| s.dom.is_none())
            .ok_or(Error::NoSpace)
    }

    fn alloc_tag(&self, bits: u32, s2: bool) -> Result<u16> {
        let max = (1u32 << bits.min(16)) - 1;
        (1..=max)
            .map(|v| v as u16)
            .find(|&v| {
                !self.domains.iter().any(|s| match s.dom.map(|d| d.inner) {
                    Some(Inner::S2 { vmid, .. }) => s2 && vmid == v,
                    Some(Inner::S1 { asid, .. }) => !s2 && asid == v,
                    _ => false,
                })
            })
            .ok_or(Error::NoSpace)
    }

    fn insert_domain(&mut self, slot: usize, d: Domain) -> DomainId {
        self.domains[slot].dom = Some(d);
        self.id_of(slot)
    }

    /// A stage 2 domain for the caller (a VM): a fresh VMID, an empty S2
    /// table, the MSI and context windows reserved from the start.
    pub fn alloc_s2_domain(&mut self, caller: TaskId, fault_capable: bool) -> Result<DomainId> {
        if !self.smmu.features.s2 {
            return Err(Error::Unsupported);
        }
        let slot = self.free_domain_slot()?;
        let vmid = self.alloc_tag(self.smmu.features.vmid_bits, true)?;
        let pt = PageTable::new(&self.smmu.mem, &mut self.smmu.alloc, Stage::S2)?;
        Ok(self.insert_domain(
            slot,
            Domain {
                owner: caller,
                fault_capable,
                users: 0,
                children: 0,
                inner: Inner::S2 { vmid, pt },
                needs_flush: false,
            },
        ))
    }

    /// A server-managed stage 1 domain: a fresh ASID (VMID 0), an empty S1
    /// table and its CD (written now: no stream can see it yet).
    pub fn alloc_s1_domain(&mut self, caller: TaskId, fault_capable: bool) -> Result<DomainId> {
        if !self.smmu.features.s1 {
            return Err(Error::Unsupported);
        }
        let slot = self.free_domain_slot()?;
        let asid = self.alloc_tag(self.smmu.features.asid_bits, false)?;
        let cd_page = self.smmu.alloc_zeroed(0)?;
        let pt = match PageTable::new(&self.smmu.mem, &mut self.smmu.alloc, Stage::S1) {
            Ok(pt) => pt,
            Err(e) => {
                self.smmu.alloc.free(cd_page);
                return Err(e);
            }
        };
        let ips =
            AddrSize::from_bits(self.smmu.features.oas.bits().min(48)).unwrap_or(AddrSize::Bits40);
        let cd = Self::build_cd(&GuestContext {
            ttb0: pt.root.pa,
            mair: mair::mair([
                mair::NORMAL_WB,
                mair::DEVICE_NGNRE,
                mair::NORMAL_NC,
                0,
                0,
                0,
                0,
                0,
            ]),
            asid,
            t0sz: TSZ,
            tg0: Tg0::Granule4K,
            ips,
            record_faults: true,
        });
        for (i, w) in cd.words().iter().enumerate() {
            self.smmu.mem.write64(cd_page.off + 8 * i, *w);
        }
        self.smmu.mem.publish();
        Ok(self.insert_domain(
            slot,
            Domain {
                owner: caller,
                fault_capable,
                users: 0,
                children: 0,
                inner: Inner::S1 {
                    asid,
                    pt,
                    cd: cd_page,
                },
                needs_flush: false,
            },
        ))
    }

    /// A nested domain: the guest's CD table (at an IPA) over the caller's
    /// S2 domain `parent`.
    pub fn alloc_nested_domain(
        &mut self,
        caller: TaskId,
        parent: DomainId,
        cfg: NestedConfig,
        fault_capable: bool,
    ) -> Result<DomainId> {
        let p = self.domain_idx(caller, parent)?;
        if !matches!(self.dom(p).map(|d| d.inner), Some(Inner::S2 { .. })) {
            return Err(Error::Invalid);
        }
        let f = &self.smmu.features;
        if !f.nested() {
            return Err(Error::Unsupported);
        }
        if cfg.s1cdmax as u32 > f.ssid_bits {
            return Err(if f.ssid_bits == 0 {
                Error::Unsupported
            } else {
                Error::Invalid
            });
        }
        match cfg.s1fmt {
            S1Fmt::Linear => {}
            _ if !f.cd_two_level => return Err(Error::Unsupported),
            _ => {}
        }
        if cfg.cd_table_ipa & 0x3f != 0 || cfg.cd_table_ipa >= IAS_END {
            return Err(Error::Invalid);
        }
        // The IPA is translated by the parent's stage 2, whose every
        // mapping passed `pa_allowed`; only the context window leads to
        // memory that is not the VM's (the server's CD tables).
        if CTX_WINDOW.overlaps(cfg.cd_table_ipa, 64) {
            return Err(Error::NotPermitted);
        }
        let slot = self.free_domain_slot()?;
        if let Some(d) = self.dom_mut(p) {
            d.children += 1;
        }
        Ok(self.insert_domain(
            slot,
            Domain {
                owner: caller,
                fault_capable,
                users: 0,
                children: 0,
                inner: Inner::Nested { parent: p, cfg },
                needs_flush: false,
            },
        ))
    }

    /// Destroys an unused domain: Busy while streams are attached or
    /// nested domains use it as parent. Its TLB entries are invalidated
    /// (TLBI_S12_VMALL / TLBI_NH_ASID / TLBI_NH_ALL + SYNC) before its
    /// tables are freed and its VMID or ASID can be reused.
    pub fn destroy_domain(&mut self, caller: TaskId, id: DomainId) -> Result<()> {
        let i = self.domain_idx(caller, id)?;
        self.destroy_idx(i)
    }

    fn destroy_idx(&mut self, i: usize) -> Result<()> {
        let d = *self.dom(i).ok_or(Error::NotFound)?;
        if d.users > 0 || d.children > 0 {
            return Err(Error::Busy);
        }
        let inv = match d.inner {
            Inner::S2 { vmid, .. } => Command::tlbi_s12_vmall(vmid),
            Inner::S1 { asid, .. } => Command::tlbi_nh_asid(0, asid),
            Inner::Nested { parent, .. } => Command::tlbi_nh_all(self.vmid_of(parent).unwrap_or(0)),
        };
        self.smmu.issue(&[inv]).map_err(issue_err)?;
        match d.inner {
            Inner::S2 { pt, .. } => pt.destroy(&self.smmu.mem, &mut self.smmu.alloc),
            Inner::S1 { pt, cd, .. } => {
                pt.destroy(&self.smmu.mem, &mut self.smmu.alloc);
                self.smmu.alloc.free(cd);
            }
            Inner::Nested { parent, .. } => {
                if let Some(p) = self.dom_mut(parent) {
                    p.children = p.children.saturating_sub(1);
                }
            }
        }
        let s = &mut self.domains[i];
        s.dom = None;
        s.gen = match s.gen.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        Ok(())
    }

    // ------------------------------------------------------------ attach

    /// Attaches the caller's stream to the caller's domain, or replaces the
    /// domain it is attached to with one STE update (hitless whenever a
    /// single STE word's used bits change: S1 → S1, nested → nested on the
    /// same parent, S2 ↔ nested on the same S2, abort → any; an S2 → S2
    /// replace changes VMID and S2TTB and is break-before-make, reported
    /// in [`AttachResult::update`]). Busy while PASID contexts are bound.
    pub fn attach(&mut self, caller: TaskId, sid: u32, id: DomainId) -> Result<AttachResult> {
        let si = self.stream_idx(caller, sid)?;
        let di = self.domain_idx(caller, id)?;
        let st = *self.stream(si);
        if st.attached == Some(di) {
            return Ok(AttachResult {
                old: Some(id),
                update: UpdateKind::NoChange,
                fault_duty: None,
            });
        }
        if st.ctx.is_some() {
            return Err(Error::Busy);
        }
        let target = self.ste_for(di)?;
        let result = self.smmu.write_ste(sid, &target);
        let update = match result {
            Ok(u) => u,
            Err(e) => {
                self.fail_closed(si);
                return Err(e);
            }
        };
        if let Some(s) = self.stream_mut(si) {
            s.attached = Some(di);
        }
        if let Some(d) = self.dom_mut(di) {
            d.users += 1;
        }
        Ok(self.release_old(st.attached, sid, update))
    }

    /// Detaches the caller's stream: its bound contexts are dropped (as by
    /// their last unbind), then its STE goes back to abort (never bypass).
    pub fn detach(&mut self, caller: TaskId, sid: u32) -> Result<AttachResult> {
        let si = self.stream_idx(caller, sid)?;
        if self.stream(si).attached.is_none() {
            return Err(Error::NotFound);
        }
        self.unbind_all(si)?;
        let st = *self.stream(si);
        let update = match self.smmu.write_ste(sid, &crate::strtab::abort_ste()) {
            Ok(u) => u,
            Err(e) => {
                self.fail_closed(si);
                return Err(e);
            }
        };
        if let Some(s) = self.stream_mut(si) {
            s.attached = None;
        }
        Ok(self.release_old(st.attached, sid, update))
    }

    fn release_old(&mut self, old: Option<usize>, sid: u32, update: UpdateKind) -> AttachResult {
        let mut r = AttachResult {
            old: None,
            update,
            fault_duty: None,
        };
        if let Some(o) = old {
            let id = self.id_of(o);
            r.old = Some(id);
            if let Some(d) = self.dom_mut(o) {
                d.users = d.users.saturating_sub(1);
                if d.fault_capable {
                    r.fault_duty = Some(FaultDuty { domain: id, sid });
                }
            }
        }
        r
    }

    /// After a failed STE write the entry may be half-written: make it
    /// abort again (best effort) and forget the attachment.
    fn fail_closed(&mut self, si: usize) {
        let st = *self.stream(si);
        let _ = self.smmu.write_ste(st.sid, &crate::strtab::abort_ste());
        if let Some(o) = st.attached {
            if let Some(d) = self.dom_mut(o) {
                d.users = d.users.saturating_sub(1);
            }
        }
        if let Some(s) = self.stream_mut(si) {
            s.attached = None;
        }
    }

    // ------------------------------------------------------------ map

    /// Whether the caller may map physical `[pa, pa + len)`: never the
    /// server's own tables, never beyond the output address size, and —
    /// per the configuration — inside one of the caller's memory windows
    /// and/or the caller's DMA memory as the kernel knows it.
    fn pa_allowed(&self, caller: TaskId, pa: u64, len: u64) -> bool {
        if self.smmu.mem.overlaps(pa, len) {
            return false;
        }
        let oas = self.smmu.features.oas.bits();
        if (pa + len - 1) >> oas != 0 {
            return false;
        }
        let vm = caller.index();
        let in_window = match &self.vm_memory {
            None => true,
            Some((w, n)) => w[..*n]
                .iter()
                .any(|w| w.vm as usize == vm && pa >= w.pa && pa + len <= w.pa + w.size),
        };
        in_window && (!self.memory_query || phys_owned(caller, pa, len))
    }

    fn paging(&self, i: usize) -> Result<(PageTable, Option<u16>, Option<u16>)> {
        match self.dom(i).map(|d| d.inner) {
            Some(Inner::S2 { vmid, pt }) => Ok((pt, Some(vmid), None)),
            Some(Inner::S1 { asid, pt, .. }) => Ok((pt, None, Some(asid))),
            Some(Inner::Nested { .. }) => Err(Error::Invalid),
            None => Err(Error::NotFound),
        }
    }

    /// Maps `pages` 4 KiB pages at `iova` to `pa` in the caller's S1 or S2
    /// domain. All or nothing: a page already mapped is AlreadyExists, any
    /// page in a reserved window Reserved, a PA outside the caller's memory
    /// (or inside the server's tables) NotPermitted, not enough table pages
    /// NoSpace — each checked before anything is written. No invalidation
    /// is needed: the SMMU does not cache invalid entries.
    pub fn map(
        &mut self,
        caller: TaskId,
        id: DomainId,
        iova: u64,
        pa: u64,
        pages: u32,
        prot: Prot,
    ) -> Result<()> {
        let di = self.domain_idx(caller, id)?;
        let (mut pt, vmid, _) = self.paging(di)?;
        let len = self.check_range(iova, pages)?;
        if !pa.is_multiple_of(PAGE_SIZE as u64)
            || pa.checked_add(len).is_none()
            || (!prot.read && !prot.write)
        {
            return Err(Error::Invalid);
        }
        if MSI_WINDOW.overlaps(iova, len) || (vmid.is_some() && CTX_WINDOW.overlaps(iova, len)) {
            return Err(Error::Reserved);
        }
        if !self.pa_allowed(caller, pa, len) {
            return Err(Error::NotPermitted);
        }
        let mem = &self.smmu.mem;
        let mut tables = 0;
        for p in 0..pages as u64 {
            let a = iova + p * PAGE_SIZE as u64;
            if pt.lookup(mem, a).is_some() {
                return Err(Error::AlreadyExists);
            }
            // Upper bound: count each 2 MiB chunk's missing tables once.
            if p == 0 || a.is_multiple_of(0x20_0000) {
                tables += pt.tables_needed(mem, a);
            }
        }
        if tables > self.smmu.alloc.free_pages() {
            return Err(Error::NoSpace);
        }
        for p in 0..pages as u64 {
            let off = p * PAGE_SIZE as u64;
            pt.map(
                &self.smmu.mem,
                &mut self.smmu.alloc,
                iova + off,
                pa + off,
                prot,
            )?;
        }
        Ok(())
    }

    fn check_range(&self, iova: u64, pages: u32) -> Result<u64> {
        if pages == 0 || pages > MAX_MAP_PAGES || !valid_iova(iova) {
            return Err(Error::Invalid);
        }
        let len = pages as u64 * PAGE_SIZE as u64;
        if iova + len > IAS_END {
            return Err(Error::Invalid);
        }
        Ok(len)
    }

    /// Unmaps `pages` pages at `iova` (unmapped pages inside the range are
    /// skipped); returns how many were mapped. Strict: one batch of
    /// TLBI_S2_IPA (S2) or TLBI_NH_VA (S1) per page — or one
    /// TLBI_S12_VMALL / TLBI_NH_ASID when more than a batch — plus
    /// TLBI_NH_ALL for a nesting parent, and one CMD_SYNC, before the reply.
    pub fn unmap(
        &mut self,
        caller: TaskId,
        id: DomainId,
        iova: u64,
        pages: u32,
        mode: UnmapMode,
    ) -> Result<u32> {
        let di = self.domain_idx(caller, id)?;
        let (mut pt, vmid, asid) = self.paging(di)?;
        let len = self.check_range(iova, pages)?;
        if MSI_WINDOW.overlaps(iova, len) || (vmid.is_some() && CTX_WINDOW.overlaps(iova, len)) {
            return Err(Error::Reserved);
        }
        let nest = vmid.is_some() && self.is_nest_parent(di);
        let per_batch = if nest { BATCH_MAX - 1 } else { BATCH_MAX };
        let mut cmds = [Command::zeroed(); BATCH_MAX];
        let mut n = 0;
        let mut count = 0u32;
        for p in 0..pages as u64 {
            let a = iova + p * PAGE_SIZE as u64;
            if pt.unmap(&self.smmu.mem, a) {
                count += 1;
                if n < per_batch {
                    cmds[n] = match vmid {
                        Some(v) => Command::tlbi_s2_ipa(v, a, true),
                        None => Command::tlbi_nh_va(0, asid.unwrap_or(0), a, true),
                    };
                }
                n += 1;
            }
        }
        if count == 0 {
            return Ok(0);
        }
        if mode == UnmapMode::Deferred {
            if let Some(d) = self.dom_mut(di) {
                d.needs_flush = true;
            }
            return Ok(count);
        }
        if n > per_batch {
            cmds[0] = match vmid {
                Some(v) => Command::tlbi_s12_vmall(v),
                None => Command::tlbi_nh_asid(0, asid.unwrap_or(0)),
            };
            n = 1;
        }
        if nest {
            cmds[n] = Command::tlbi_nh_all(vmid.unwrap_or(0));
            n += 1;
        }
        self.smmu.issue(&cmds[..n]).map_err(issue_err)?;
        Ok(count)
    }

    /// Completes deferred unmaps: invalidates the whole domain
    /// (TLBI_S12_VMALL for S2, TLBI_NH_ASID for S1) + SYNC.
    pub fn flush(&mut self, caller: TaskId, id: DomainId) -> Result<()> {
        let di = self.domain_idx(caller, id)?;
        let (_, vmid, asid) = self.paging(di)?;
        let cmd = match vmid {
            Some(v) => Command::tlbi_s12_vmall(v),
            None => Command::tlbi_nh_asid(0, asid.unwrap_or(0)),
        };
        self.smmu.issue(&[cmd]).map_err(issue_err)?;
        if let Some(d) = self.dom_mut(di) {
            d.needs_flush = false;
        }
        Ok(())
    }

    // ------------------------------------------------------------ bind

    /// Binds a guest stage 1 context to (stream, PASID): the stream must be
    /// attached to the caller's S2 domain; its STE becomes nested over that
    /// S2 with a server-owned CD table (mapped read-only in the domain's
    /// context window). A second bind of the same pair with the same
    /// context only counts a user; with a different context it is
    /// AlreadyExists. Returns the users count. PASID ≠ 0 on an SMMU without
    /// substreams is Unsupported.
    pub fn bind(&mut self, caller: TaskId, sid: u32, pasid: u32, ctx: GuestContext) -> Result<u16> {
        let si = self.stream_idx(caller, sid)?;
        if !self.smmu.features.nested() {
            return Err(Error::Unsupported);
        }
        if pasid != 0 && self.smmu.features.ssid_bits == 0 {
            return Err(Error::Unsupported);
        }
        if pasid as u64 >= 1u64 << self.pasid_bits {
            return Err(Error::Invalid);
        }
        self.validate_context(&ctx)?;
        // TTB0 is an IPA under the VM's stage 2 (see alloc_nested_domain).
        if CTX_WINDOW.overlaps(ctx.ttb0, PAGE_SIZE as u64) {
            return Err(Error::NotPermitted);
        }
        let st = *self.stream(si);
        let di = st.attached.ok_or(Error::Invalid)?;
        let Some(Inner::S2 { pt, .. }) = self.dom(di).map(|d| d.inner) else {
            return Err(Error::Invalid);
        };
        if let Some(ci) = self.context_idx(si, pasid) {
            let c = self.contexts[ci].as_mut().ok_or(Error::NotFound)?;
            if c.ctx != ctx {
                return Err(Error::AlreadyExists);
            }
            c.users = c.users.checked_add(1).ok_or(Error::NoSpace)?;
            return Ok(c.users);
        }
        let ci = self
            .contexts
            .iter()
            .position(|c| c.is_none())
            .ok_or(Error::NoSpace)?;

        // Allocate everything first (the only failures that leave no trace).
        let mut pt = pt;
        let new_table = st.ctx.is_none();
        let mut table = match st.ctx {
            Some(t) => t,
            None => CdTable::new(
                &self.smmu.mem,
                &mut self.smmu.alloc,
                self.pasid_bits as u8,
                self.smmu.features.cd_two_level,
                CTX_WINDOW.base,
            )?,
        };
        let mut mapped = [0u64; 33];
        let mut nmapped = 0;
        let mut leaf = None;
        let prepared = (|| -> Result<()> {
            if new_table {
                for k in 0..(1usize << table.root.order) {
                    let off = table.root.off + k * PAGE_SIZE;
                    self.map_ctx_page(&mut pt, off)?;
                    mapped[nmapped] = off as u64;
                    nmapped += 1;
                }
            }
            if table.needs_leaf(&self.smmu.mem, pasid) {
                let p = self.smmu.alloc_zeroed(0)?;
                leaf = Some(p);
                self.map_ctx_page(&mut pt, p.off)?;
                mapped[nmapped] = p.off as u64;
                nmapped += 1;
            }
            Ok(())
        })();
        if let Err(e) = prepared {
            for off in &mapped[..nmapped] {
                pt.unmap(&self.smmu.mem, CTX_WINDOW.base + off);
            }
            if let Some(p) = leaf {
                self.smmu.alloc.free(p);
            }
            if new_table {
                table.destroy(&self.smmu.mem, &mut self.smmu.alloc);
            }
            return Err(e);
        }

        // Hardware-visible steps. Failures here are timeouts or SMMU
        // errors; the stream is then made to abort.
        let r = (|| -> Result<()> {
            if let Some(p) = leaf {
                table.install_leaf(&self.smmu.mem, pasid, p);
                if !new_table {
                    self.smmu
                        .issue(&[Command::cfgi_cd(sid, pasid, false)])
                        .map_err(issue_err)?;
                }
            }
            let off = table.cd_off(&self.smmu.mem, pasid).ok_or(Error::Invalid)?;
            let cd = Self::build_cd(&ctx);
            self.smmu
                .write_cd(off, &cd, &[Command::cfgi_cd(sid, pasid, true)])?;
            let pasid0 = pasid == 0 || self.context_idx(si, 0).is_some();
            let target = self.ste_with_contexts(di, &table, pasid0)?;
            self.smmu.write_ste(sid, &target)?;
            Ok(())
        })();
        if let Some(s) = self.stream_mut(si) {
            s.ctx = Some(table);
        }
        self.contexts[ci] = Some(Context {
            stream: si,
            pasid,
            users: 1,
            ctx,
        });
        if let Err(e) = r {
            // Undo through the normal path (clears the CD, restores the S2
            // STE or aborts).
            let _ = self.unbind_idx(ci, true);
            return Err(e);
        }
        Ok(1)
    }

    /// Maps one server table page into an S2 table's context window.
    fn map_ctx_page(&mut self, pt: &mut PageTable, off: usize) -> Result<()> {
        let pa = self.smmu.mem.base_pa() + off as u64;
        pt.map(
            &self.smmu.mem,
            &mut self.smmu.alloc,
            CTX_WINDOW.base + off as u64,
            pa,
            Prot::RO,
        )
    }

    /// Drops one user of (stream, PASID). The last one clears the CD
    /// (V = 0 first; CFGI_CD + SYNC per step), then issues TLBI_NH_ASID,
    /// ATC_INV and one CMD_SYNC; the stream's last context also returns its
    /// STE to plain S2 (hitless) and unmaps and frees the CD table.
    /// Returns the users left. After a successful return with 0 users, the
    /// hardware holds nothing of the context (prq-server's drain is the
    /// next step of the unbind protocol).
    pub fn unbind(&mut self, caller: TaskId, sid: u32, pasid: u32) -> Result<u16> {
        let si = self.stream_idx(caller, sid)?;
        let ci = self.context_idx(si, pasid).ok_or(Error::NotFound)?;
        self.unbind_idx(ci, false)
    }

    fn unbind_idx(&mut self, ci: usize, all: bool) -> Result<u16> {
        let c = self.contexts[ci].ok_or(Error::NotFound)?;
        if !all && c.users > 1 {
            if let Some(c) = self.contexts[ci].as_mut() {
                c.users -= 1;
                return Ok(c.users);
            }
        }
        let st = *self.stream(c.stream);
        let sid = st.sid;
        let table = st.ctx.ok_or(Error::NotFound)?;
        let di = st.attached.ok_or(Error::NotFound)?;
        let vmid = self.vmid_of(di).unwrap_or(0);
        let mut first_err = None;
        if let Some(off) = table.cd_off(&self.smmu.mem, c.pasid) {
            if let Err(e) =
                self.smmu
                    .write_cd(off, &Cd::zeroed(), &[Command::cfgi_cd(sid, c.pasid, true)])
            {
                first_err.get_or_insert(e);
            }
        }
        let ssid = (table.s1cdmax > 0).then_some(c.pasid);
        let inv = [
            Command::tlbi_nh_asid(vmid, c.ctx.asid),
            Command::atc_inv(sid, ssid, 0, 52, false),
        ];
        // ATC_INV is an illegal command on an SMMU without ATS (QEMU
        // accepts it as a no-op); there is no ATC to invalidate then.
        let n = if self.smmu.features.ats { 2 } else { 1 };
        if let Err(f) = self.smmu.issue(&inv[..n]) {
            first_err.get_or_insert(issue_err(f));
        }
        self.contexts[ci] = None;
        if self.contexts_on(c.stream) == 0 {
            // Back to plain S2, then take the table away.
            let target = self.ste_for(di);
            let r = target.and_then(|t| self.smmu.write_ste(sid, &t));
            if let Err(e) = r {
                first_err.get_or_insert(e);
                self.fail_closed(c.stream);
            }
            if let Some(Inner::S2 { mut pt, vmid }) = self.dom(di).map(|d| d.inner) {
                let mut cmds = [Command::zeroed(); BATCH_MAX];
                let mut n = 0;
                let mem = &self.smmu.mem;
                table.for_each_page(mem, &self.smmu.alloc, |p| {
                    for k in 0..(1usize << p.order) {
                        let ipa = CTX_WINDOW.base + (p.off + k * PAGE_SIZE) as u64;
                        pt.unmap(mem, ipa);
                        if n < BATCH_MAX - 1 {
                            cmds[n] = Command::tlbi_s2_ipa(vmid, ipa, true);
                            n += 1;
                        } else {
                            cmds[0] = Command::tlbi_s12_vmall(vmid);
                        }
                    }
                });
                if let Err(f) = self.smmu.issue(&cmds[..n]) {
                    first_err.get_or_insert(issue_err(f));
                }
            }
            table.destroy(&self.smmu.mem, &mut self.smmu.alloc);
            if let Some(s) = self.stream_mut(c.stream) {
                s.ctx = None;
            }
        } else if c.pasid == 0 && table.s1cdmax > 0 {
            // Transactions without PASID no longer use CD 0.
            let r = self
                .ste_with_contexts(di, &table, false)
                .and_then(|t| self.smmu.write_ste(sid, &t));
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }

    /// Drops every context bound on stream `si`; returns how many.
    fn unbind_all(&mut self, si: usize) -> Result<u32> {
        let mut n = 0;
        for ci in 0..MAX_CONTEXTS {
            if matches!(self.contexts[ci], Some(c) if c.stream == si) {
                self.unbind_idx(ci, true)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Users of a bound (stream, PASID), for tests and the frontend.
    pub fn bind_users(&self, caller: TaskId, sid: u32, pasid: u32) -> Result<u16> {
        let si = self.stream_idx(caller, sid)?;
        let ci = self.context_idx(si, pasid).ok_or(Error::NotFound)?;
        Ok(self.contexts[ci].map(|c| c.users).unwrap_or(0))
    }

    // ------------------------------------------------------------ guest commands

    /// Sets the virtual StreamID a VM's guest uses for its stream (guest
    /// invalidation commands name vSIDs). Default: vSID = pSID.
    pub fn set_vsid(&mut self, caller: TaskId, sid: u32, vsid: u32) -> Result<()> {
        let si = self.stream_idx(caller, sid)?;
        let owner = self.stream(si).owner;
        let clash =
            self.streams.iter().enumerate().any(
                |(i, s)| matches!(s, Some(s) if i != si && s.owner == owner && s.vsid == vsid),
            );
        if clash {
            return Err(Error::AlreadyExists);
        }
        if let Some(s) = self.stream_mut(si) {
            s.vsid = vsid;
        }
        Ok(())
    }

    /// The physical StreamID of the caller's vSID.
    fn psid(&self, caller: TaskId, vsid: u32) -> Option<u32> {
        self.streams
            .iter()
            .flatten()
            .find(|s| s.owner as usize == caller.index() && s.vsid == vsid)
            .map(|s| s.sid)
    }

    /// Checks one guest command and rewrites it for the hardware: only
    /// TLBI_NH_{ALL,ASID,VA,VAA}, CFGI_CD, CFGI_CD_ALL and ATC_INV; VMID
    /// forced to `vmid`; vSID translated through the caller's streams;
    /// every other field rebuilt from the decoded command (no stray bits).
    pub fn validate_guest_command(
        &self,
        caller: TaskId,
        vmid: u16,
        cmd: &Command,
    ) -> Result<Command> {
        let kind = cmd.decode().map_err(|_| Error::Invalid)?;
        let ril = self.smmu.features.ril;
        let ranged = |c: Command, s: &smmuv3::cmd::TlbiScope| -> Result<Command> {
            if s.tg == 0 {
                Ok(c)
            } else if ril {
                Ok(c.with_range(s.num, s.scale, s.tg, s.ttl))
            } else {
                Err(Error::Invalid)
            }
        };
        let psid = |vsid: u32| self.psid(caller, vsid).ok_or(Error::NotFound);
        let ssid_ok = |ssid: u32| (ssid as u64) < (1u64 << self.smmu.features.ssid_bits);
        match kind {
            CommandKind::TlbiNhAll { .. } => Ok(Command::tlbi_nh_all(vmid)),
            CommandKind::TlbiNhAsid { asid, .. } => Ok(Command::tlbi_nh_asid(vmid, asid)),
            CommandKind::TlbiNhVa { asid, scope, .. } => ranged(
                Command::tlbi_nh_va(vmid, asid, scope.addr, scope.leaf),
                &scope,
            ),
            CommandKind::TlbiNhVaa { scope, .. } => {
                ranged(Command::tlbi_nh_vaa(vmid, scope.addr, scope.leaf), &scope)
            }
            CommandKind::CfgiCd { sid, ssid, leaf } if ssid_ok(ssid) => {
                Ok(Command::cfgi_cd(psid(sid)?, ssid, leaf))
            }
            CommandKind::CfgiCdAll { sid } => Ok(Command::cfgi_cd_all(psid(sid)?)),
            CommandKind::AtcInv {
                sid,
                ssid,
                addr,
                size,
                global,
            } if ssid.is_none_or(ssid_ok) && self.smmu.features.ats => {
                Ok(Command::atc_inv(psid(sid)?, ssid, addr, size, global))
            }
            _ => Err(Error::Invalid),
        }
    }

    /// Issues a VM's guest invalidation batch under its vIOMMU (the S2
    /// domain `viommu`, whose VMID is forced into every command). Commands
    /// are validated in order; the valid prefix is issued with one SYNC
    /// per [`BATCH_MAX`] commands. Returns how many were done and, if not
    /// all, why the next one was refused.
    pub fn invalidate(
        &mut self,
        caller: TaskId,
        viommu: DomainId,
        cmds: &[Command],
    ) -> (u32, Result<()>) {
        let vmid = match self
            .domain_idx(caller, viommu)
            .map(|i| self.dom(i).map(|d| d.inner))
        {
            Ok(Some(Inner::S2 { vmid, .. })) => vmid,
            Ok(_) => return (0, Err(Error::Invalid)),
            Err(e) => return (0, Err(e)),
        };
        if cmds.len() > MAX_INVALIDATION {
            return (0, Err(Error::Invalid));
        }
        let mut out = [Command::zeroed(); MAX_INVALIDATION];
        let mut n = 0;
        let mut refused = Ok(());
        for c in cmds {
            match self.validate_guest_command(caller, vmid, c) {
                Ok(v) => {
                    out[n] = v;
                    n += 1;
                }
                Err(e) => {
                    refused = Err(e);
                    break;
                }
            }
        }
        if n == 0 {
            return (0, refused);
        }
        match self.smmu.issue(&out[..n]) {
            Ok(()) => (n as u32, refused),
            Err(IssueFailure::Refused(f)) => (f.index as u32, Err(Error::HardwareError)),
            Err(IssueFailure::Timeout) => (0, Err(Error::Timeout)),
        }
    }

    /// PRI_RESP / RESUME on behalf of prq-server (no one else may ask),
    /// one SYNC per batch. Unsupported when the SMMU has no PRI queue /
    /// no stall model.
    pub fn page_response(&mut self, caller: TaskId, resps: &[PageResponse]) -> Result<u32> {
        if !self.role(caller).prq_server {
            return Err(Error::NotPermitted);
        }
        if resps.len() > MAX_RESPONSES {
            return Err(Error::Invalid);
        }
        let mut cmds = [Command::zeroed(); MAX_RESPONSES];
        for (i, r) in resps.iter().enumerate() {
            let known = |sid: u32| self.streams.iter().flatten().any(|s| s.sid == sid);
            cmds[i] = match *r {
                PageResponse::Pri {
                    sid,
                    ssid,
                    prgi,
                    resp,
                } => {
                    if !self.smmu.features.pri {
                        return Err(Error::Unsupported);
                    }
                    if !known(sid) || prgi >> smmuv3::PRGI_BITS != 0 {
                        return Err(Error::Invalid);
                    }
                    Command::pri_resp(sid, ssid, prgi, resp)
                }
                PageResponse::Resume { sid, stag, action } => {
                    if !self.smmu.features.stall {
                        return Err(Error::Unsupported);
                    }
                    if !known(sid) {
                        return Err(Error::Invalid);
                    }
                    Command::resume(sid, stag, action)
                }
            };
        }
        self.smmu.issue(&cmds[..resps.len()]).map_err(issue_err)?;
        Ok(resps.len() as u32)
    }

    // ------------------------------------------------------------ events

    /// Moves records from the hardware queue into the ring.
    pub fn intake_events(&mut self) -> u32 {
        let mut staged = [Event::zeroed(); 32];
        let mut total = 0;
        loop {
            let mut n = 0;
            // Drain in chunks so the ring's routing can borrow self.
            let got = {
                let smmu = &mut self.smmu;
                let mut k = 0;
                if let Some(q) = &mut smmu.evtq {
                    // Read at most `staged.len()` records per pass.
                    k = drain_some(q, &smmu.mmio, &smmu.mem, &mut staged);
                }
                k
            };
            while n < got {
                self.route_event(staged[n]);
                n += 1;
            }
            total += got as u32;
            if got < staged.len() {
                break;
            }
        }
        total
    }

    fn route_event(&mut self, e: Event) {
        let Some(si) = self
            .streams
            .iter()
            .position(|s| matches!(s, Some(s) if s.sid == e.sid()))
        else {
            self.events.unrouted += 1;
            return;
        };
        let r = &mut self.events;
        if r.len == EVENT_RING {
            let (lost_stream, _) = r.buf[0];
            r.buf.copy_within(1.., 0);
            r.len -= 1;
            if let Some(s) = self.streams[lost_stream].as_mut() {
                s.events_lost += 1;
            }
        }
        let r = &mut self.events;
        r.buf[r.len] = (si, e);
        r.len += 1;
    }

    /// Hands the caller the records of its streams (oldest first, at most
    /// `out.len()`); returns (count, records lost since the last fetch).
    pub fn fetch_events(&mut self, caller: TaskId, out: &mut [Event]) -> (usize, u32) {
        self.intake_events();
        let mine =
            |s: &Option<StreamState>| matches!(s, Some(s) if s.owner as usize == caller.index());
        let mut n = 0;
        let mut keep = 0;
        for i in 0..self.events.len {
            let (si, e) = self.events.buf[i];
            if n < out.len() && mine(&self.streams[si]) {
                out[n] = e;
                n += 1;
            } else {
                self.events.buf[keep] = (si, e);
                keep += 1;
            }
        }
        self.events.len = keep;
        let mut lost = 0;
        for s in self.streams.iter_mut().flatten() {
            if s.owner as usize == caller.index() {
                lost += core::mem::take(&mut s.events_lost);
            }
        }
        (n, lost)
    }

    /// Services the SMMU's interrupts (GERROR, event queue); returns the
    /// active GERROR bits found.
    pub fn service_interrupts(&mut self) -> u32 {
        let g = self.smmu.handle_gerror();
        self.intake_events();
        g
    }

    // ------------------------------------------------------------ owners

    /// Reclaims everything a dead VM owned: its contexts are unbound, its
    /// streams go abort, its domains are destroyed. Only the supervisor may
    /// ask. `vm` names the generation that died: objects the VM's next
    /// generation already created (it may have restarted before this
    /// request arrived) are not touched.
    pub fn reclaim(&mut self, caller: TaskId, vm: TaskId) -> Result<Reclaimed> {
        if !self.role(caller).supervisor {
            return Err(Error::NotPermitted);
        }
        let mut r = Reclaimed::default();
        for si in 0..MAX_STREAMS {
            let Some(st) = self.streams[si] else { continue };
            // Streams are the VM's by static assignment (index); only an
            // attachment to a domain of the dead generation is reclaimed.
            let dead_attachment = st
                .attached
                .and_then(|d| self.dom(d))
                .is_some_and(|d| d.owner == vm);
            if st.owner as usize != vm.index() || !dead_attachment {
                continue;
            }
            r.binds += self.unbind_all(si).unwrap_or(0);
            if self
                .smmu
                .write_ste(st.sid, &crate::strtab::abort_ste())
                .is_err()
            {
                self.fail_closed(si);
            } else {
                self.release_old(st.attached, st.sid, UpdateKind::NoChange);
                if let Some(s) = self.stream_mut(si) {
                    s.attached = None;
                }
            }
            r.streams += 1;
        }
        // Nested domains first (they hold their parents).
        for pass in 0..2 {
            for i in 0..MAX_DOMAINS {
                let Some(d) = self.dom(i) else { continue };
                let nested = matches!(d.inner, Inner::Nested { .. });
                if d.owner == vm && (pass == 1 || nested) && self.destroy_idx(i).is_ok() {
                    r.domains += 1;
                }
            }
        }
        Ok(r)
    }

    /// The domain the caller's stream is attached to (NotPermitted if the
    /// stream is not the caller's).
    pub fn attached(&self, caller: TaskId, sid: u32) -> Result<Option<DomainId>> {
        let si = self.stream_idx(caller, sid)?;
        Ok(self.stream(si).attached.map(|i| self.id_of(i)))
    }

    /// Checks that `id` is one of the caller's S2 domains (a vIOMMU for
    /// guest invalidations).
    pub fn check_viommu(&self, caller: TaskId, id: DomainId) -> Result<()> {
        let i = self.domain_idx(caller, id)?;
        match self.dom(i).map(|d| d.inner) {
            Some(Inner::S2 { .. }) => Ok(()),
            _ => Err(Error::Invalid),
        }
    }

    /// The last command the SMMU refused.
    pub fn last_command_fault(&self) -> Option<crate::cmdq::CmdFault> {
        self.smmu.cmdq.stats.last_fault
    }

    /// What `caller` may ask (see [`Roles::table`]).
    pub fn role(&self, caller: TaskId) -> Roles {
        self.roles.get(caller.index()).copied().unwrap_or_default()
    }

    /// True when `caller` is a VM (the interface's `vmm-frontend`).
    pub fn is_vm(&self, caller: TaskId) -> bool {
        self.role(caller).vm
    }

    /// True when `caller` is the supervisor.
    pub fn is_supervisor(&self, caller: TaskId) -> bool {
        self.role(caller).supervisor
    }

    /// True when `caller` is prq-server.
    pub fn is_prq_server(&self, caller: TaskId) -> bool {
        self.role(caller).prq_server
    }

    /// PASID bits per stream this server supports (0: no substreams).
    pub fn pasid_bits(&self) -> u32 {
        self.pasid_bits
    }

    // ------------------------------------------------------------ info

    /// What the server knows about the SMMU and itself.
    pub fn info(&self) -> Info {
        let f = &self.smmu.features;
        let (gbpa, cr0) = self.smmu.control_regs();
        let q = &self.smmu.cmdq.stats;
        Info {
            idr0: f.idr0,
            idr1: f.idr1,
            idr3: f.idr3,
            idr5: f.idr5,
            gbpa,
            cr0,
            strtab_cfg: self.smmu.strtab.cfg_value(),
            pages_total: self.smmu.alloc.capacity() as u32,
            pages_free: self.smmu.alloc.free_pages() as u32,
            commands: q.commands,
            syncs: q.syncs,
            cmd_recovered: q.recovered,
            last_refused_opcode: q.last_fault.map(|f| f.opcode).unwrap_or(0),
            last_refused_err: q.last_fault.map(|f| f.err.raw() as u8).unwrap_or(0),
            gerrors_seen: self.smmu.gerrors_seen,
            events_read: self.smmu.evtq.as_ref().map(|q| q.read).unwrap_or(0),
            domains: self.domains.iter().filter(|s| s.dom.is_some()).count() as u16,
            contexts: self.contexts.iter().flatten().count() as u16,
            ste_update_instr: self.smmu.last_ste_update_instr,
            attach_instr: self.last_attach_instr,
        }
    }

    /// Issues one illegal command (opcode 0) and checks the queue recovers
    /// from it: run once at boot, so every boot proves the recovery path on
    /// the real (modelled) SMMU. Returns the refused command as reported.
    pub fn self_test_illegal_command(&mut self) -> Result<crate::cmdq::CmdFault> {
        let cmds = [
            Command::tlbi_nsnh_all(),
            Command::zeroed(),
            Command::tlbi_nsnh_all(),
        ];
        match self.smmu.issue(&cmds) {
            Err(IssueFailure::Refused(f)) if f.index == 1 && f.opcode == 0 => {
                // The queue must still work.
                self.smmu.issue(&[]).map_err(issue_err)?;
                Ok(f)
            }
            Err(IssueFailure::Timeout) => Err(Error::Timeout),
            _ => Err(Error::HardwareError),
        }
    }

    /// The STE of `sid` as it is in memory (tests and diagnostics).
    pub fn ste(&self, sid: u32) -> Option<Ste> {
        self.smmu.read_ste(sid)
    }
}

const DEAD_STREAM: StreamState = StreamState {
    sid: u32::MAX,
    owner: u16::MAX,
    vsid: u32::MAX,
    attached: None,
    ctx: None,
    events_lost: 0,
};

/// Whether the kernel says `task`'s DMA memory covers `[pa, pa + len)`.
fn phys_owned(task: TaskId, pa: u64, len: u64) -> bool {
    match (usize::try_from(pa), usize::try_from(len)) {
        (Ok(pa), Ok(len)) => userlib::sys_phys_owned(task, pa, len),
        _ => false,
    }
}

/// Reads up to `out.len()` event records.
fn drain_some(
    q: &mut crate::evtq::EventQueue,
    mmio: &impl Mmio,
    mem: &impl DmaMemory,
    out: &mut [Event],
) -> usize {
    let mut n = 0;
    q.drain_bounded(mmio, mem, out.len() as u32, |e| {
        out[n] = e;
        n += 1;
    });
    n
}
