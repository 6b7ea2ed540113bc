//! The server: objects (streams, domains, bound contexts), their owners,
//! and every operation a client may ask for, each checked against the
//! kernel-provided sender id before anything changes.
//!
//! State lives in [`IommuServer`] (no statics), so the harness can run
//! several instances. Every table is a fixed array with a stated bound;
//! a full table is [`Error::NoSpace`].
//!
//! One file per duty, each an `impl` block of [`IommuServer`]:
//! - `objects`: public value types (handles, kinds, configuration, windows);
//! - `roles`: who may ask what;
//! - `entries`: STE / CD construction;
//! - `domains`: allocation and destruction;
//! - `attach`: attach, replace, detach;
//! - `map`: map, unmap, flush;
//! - `bind`: PASID contexts in the server's CD tables;
//! - `invalidation`: validated guest commands;
//! - `faults`: the fault duties (PRI_RESP / RESUME for prq-server, the
//!   event queue reader and its ring, and the hooks that call the fault
//!   link, `crate::faults`, at each edge: attach / replace, first bind,
//!   last unbind, a stream going abort);
//! - `reclaim`: a dead VM's objects;
//! - `defunct`: PASIDs freed before unbind, drained for pasid-alloc;
//! - this file: the state, construction, lookups and diagnostics.

mod attach;
mod bind;
mod death;
mod defunct;
mod domains;
mod entries;
mod faults;
mod invalidation;
mod map;
mod objects;
mod reclaim;
mod roles;

pub use death::{DeathPull, DEATHS_PER_PULL, DEATH_BIT};
pub use defunct::{DefunctDrain, DRAIN_PER_PULL};
pub use faults::{EventRing, FaultDuty, PageResponse, EVENT_RING, MAX_RESPONSES};
pub use objects::*;
pub use roles::{names, Roles};

use crate::cdtab::CdTable;
use crate::cmdq::{IssueFailure, Waiter, BATCH_MAX};
use crate::dma::DmaMemory;
use crate::driver::{Features, InitConfig, Smmu};
use crate::error::{Error, Result};
use crate::pages::{Pages, PAGE_SIZE};
use crate::pgtable::{valid_iova, PageTable, Prot, Stage, IAS_END, START_LEVEL, TSZ};
use crate::update::UpdateKind;
use smmuv3::pgtable::s2sl0_for_level;
use smmuv3::regs::GERROR;
use smmuv3::{
    AddrSize, Cd, Command, CommandKind, Event, Mmio, PriResponse, ResumeAction, S1Dss, S1Fmt,
    Shcfg, Ste, StreamConfig, Strw, Tg0,
};
use trace::{events::Iommu, trace};
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
/// VM memory windows the server can check mapped PAs against.
pub const MAX_VM_WINDOWS: usize = 16;
/// Tasks the caller roles are resolved for (the kernel's limit).
pub const MAX_TASKS: usize = 64;

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
    /// pasid-alloc as last seen (`defunct.rs`): a new incarnation has
    /// forgotten every PASID, so the binds made under the old one go.
    pasid_alloc: Option<TaskId>,
    /// The supervisor's death log cursor (`death.rs`): the first death
    /// not yet reclaimed.
    pub(crate) death_cursor: u32,
    /// The link to prq-server (`crate::faults`): absent until
    /// [`IommuServer::connect_faults`] finds one.
    pub(crate) fault: crate::faults::FaultLink,
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
            pasid_alloc: None,
            death_cursor: 0,
            fault: crate::faults::FaultLink::new(),
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

    // ------------------------------------------------------------ info

    /// Services the SMMU's interrupts (GERROR, event queue); returns the
    /// active GERROR bits found.
    pub fn service_interrupts(&mut self) -> u32 {
        let g = self.smmu.handle_gerror();
        let abt = GERROR::EVENTQ_ABT_ERR.mask << GERROR::EVENTQ_ABT_ERR.shift;
        if g & abt != 0 {
            // Acknowledged above; only this server reads GERROR (page 0),
            // so prq-server learns of the lost records from here.
            self.fault_event_records_lost();
        }
        self.intake_events();
        g
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
    /// from it. For test images only ([`crate::startup::prove_command_recovery`]):
    /// on real hardware it raises a global error. Returns the refused
    /// command as reported.
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

#[derive(Clone, Copy, Debug)]
struct StreamState {
    sid: u32,
    owner: u16,
    vsid: u32,
    attached: Option<usize>,
    /// The server-owned CD table of bound contexts (STE nested).
    ctx: Option<CdTable>,
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
    /// A strict invalidation of this domain did not complete (its TLBI
    /// batch timed out or was refused) after its entries were cleared:
    /// the device may still reach the old pages through the TLB. Owed
    /// until a whole-domain invalidation's SYNC completes
    /// ([`IommuServer::settle`]), which every later map, unmap, flush and
    /// attach of the domain does first.
    owed: bool,
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

const DEAD_STREAM: StreamState = StreamState {
    sid: u32::MAX,
    owner: u16::MAX,
    vsid: u32::MAX,
    attached: None,
    ctx: None,
};
