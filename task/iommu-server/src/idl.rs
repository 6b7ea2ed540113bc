//! The interface (`idl/iommu-server.idol.ron`, crate `iommu-server-api`)
//! served by [`IommuServer`]: [`IdlServer`] implements the generated
//! `IommuServer` trait, and [`serve`] is the task's receive loop (the
//! generated `run_server`), which `main.rs` calls after probe and init and
//! the host harness can call unchanged. Every message the server takes or
//! sends is generated from the interface file; nothing here encodes one.
//!
//! How the interface maps onto the server:
//! - `attach` refuses an attached stream (Busy, use `replace`); `replace`
//!   is the server's one-STE-update replace (NotFound when not attached);
//!   both, and `detach`, report the old domain, the kind of STE update
//!   and the fault duty (`AttachOutcome`);
//! - `bind` takes a `PasidHandle`: PASID 0 (the stream's own context) is
//!   the stream owner's; any other PASID is checked with pasid-alloc's
//!   `owner_of` (owner and generation): another task's is NotPermitted,
//!   an older generation's, a free or a defunct one NotFound — without a
//!   pasid-alloc task slot the bind is refused (NotPermitted, fail closed);
//! - defunct PASIDs (freed before unbind) are pulled from pasid-alloc on
//!   its notification, at start and before each PASID bind, and drained
//!   (`server/defunct.rs`);
//! - `CdConfig.tcr` is TCR_EL1-style; T0SZ, TG0, IPS are used, IRGN0 /
//!   ORGN0 / SH0 must be write-back inner-shareable (the server's walk
//!   attributes), EPD0 must be 0, EPD1 must be 1, any other bit refuses;
//! - errors map one to one ([`Error::api`]): `Reserved` is AddrInUse
//!   (EADDRINUSE), `HardwareError` Io (EIO), `Timeout` TimedOut.
//!
//! The fault path (`crate::faults`): when the task has a `prq-server`
//! slot, [`serve`] connects to it and hands the queues over; the server
//! then routes attach / replace / first bind, drains every removed
//! context (so `unbind` replies `Drained` only after prq-server's drain),
//! and on prq-server's notification ([`crate::faults::PRQ_RESPONSES_BIT`])
//! pulls `take_responses` and issues PRI_RESP / RESUME (a pull:
//! prq-server ranks above this server and may not send to it).

use crate::cmdq::Waiter;
use crate::dma::DmaMemory;
use crate::error::Error;
use crate::pages::PAGE_SIZE;
use crate::pgtable::Prot;
use crate::server::{
    AttachResult, DomainId, GuestContext, IommuServer, NestedConfig, UnmapMode, MAX_INVALIDATION,
    MAX_MAP_PAGES,
};
use crate::update::UpdateKind;
use idl_runtime::{Leased, Read, Write};
use iommu_server_api as api;
use pasid_alloc_api::{PasidAllocClient, PasidHandle, PasidOwner};
use smmuv3::{Command, Event, Mmio, S1Dss, S1Fmt};
use userlib::{RecvMessage, TaskId};

/// The interface's view of a server error.
pub fn api_error(e: Error) -> api::IommuError {
    e.api()
}

/// Event records per `fetch_events` (the lease's `max`).
pub const MAX_FETCH: usize = 16;

/// TCR_EL1 fields `CdConfig.tcr` may carry: the architecture's, in
/// lib/smmuv3 (re-exported for existing users).
pub use smmuv3::tcr;

/// A guest context from the interface's CdConfig.
pub fn guest_context(cd: &api::CdConfig, record_faults: bool) -> Result<GuestContext, Error> {
    // Only write-back inner-shareable walks (the server's), TTB0 only.
    let c = smmuv3::S1Context::from_tcr(cd.ttb0, cd.tcr, cd.mair, cd.asid)
        .map_err(|_| Error::Invalid)?;
    Ok(GuestContext {
        ttb0: c.ttb0,
        mair: c.mair,
        asid: c.asid,
        t0sz: c.t0sz,
        tg0: c.tg0,
        ips: c.ips,
        record_faults,
    })
}

/// The generated trait on a borrowed server (the server itself stays
/// where its owner built it: in the image, inside `main`'s frame).
pub struct IdlServer<'a, M: Mmio, D: DmaMemory, W: Waiter> {
    pub server: &'a mut IommuServer<M, D, W>,
}

impl<'a, M: Mmio, D: DmaMemory, W: Waiter> IdlServer<'a, M, D, W> {
    pub fn new(server: &'a mut IommuServer<M, D, W>) -> Self {
        Self { server }
    }

    /// Checks that `caller` holds `pasid` in its generation (pasid-alloc):
    /// only the owner's allocated PASID in its current generation passes.
    /// Another task's PASID is NotPermitted; a handle of an older
    /// generation, a free PASID, and the caller's own defunct (freed)
    /// PASID are NotFound; outside the space is Invalid. Without
    /// pasid-alloc (no slot, or it cannot answer) NotPermitted: fail closed.
    fn check_pasid(&mut self, caller: TaskId, pasid: PasidHandle) -> Result<(), Error> {
        if pasid.pasid.0 == 0 {
            return Ok(());
        }
        let Some(alloc) = self.pasid_alloc() else {
            return Err(Error::NotPermitted);
        };
        let current = |generation: pasid_alloc_api::PasidGen| generation == pasid.generation;
        match PasidAllocClient::new(alloc).owner_of(pasid.pasid) {
            Ok(PasidOwner::Allocated { owner, generation }) if current(generation) => {
                if owner == caller {
                    Ok(())
                } else {
                    Err(Error::NotPermitted)
                }
            }
            Ok(PasidOwner::Defunct { owner, generation })
                if current(generation) && owner != caller =>
            {
                Err(Error::NotPermitted)
            }
            Ok(_) => Err(Error::NotFound),
            Err(pasid_alloc_api::PasidAllocError::Invalid) => Err(Error::Invalid),
            Err(_) => Err(Error::NotPermitted),
        }
    }

    /// Drains the PASIDs pasid-alloc holds defunct (`server/defunct.rs`),
    /// if this task may ask it.
    pub fn pull_defunct(&mut self) -> crate::server::DefunctDrain {
        match self.pasid_alloc() {
            Some(a) => self.server.drain_defunct(&PasidAllocClient::new(a)),
            None => Default::default(),
        }
    }

    /// Pulls the supervisor's death log (`server/death.rs`), if this task
    /// may ask the supervisor, until it is empty.
    pub fn pull_deaths(&mut self) {
        let Some(sup) = userlib::sys_lookup_slot("supervisor") else {
            return;
        };
        let sup = supervisor_api::SupervisorClient::new(sup);
        let alloc = self.pasid_alloc().map(PasidAllocClient::new);
        loop {
            // Current ids come from the supervisor: the kernel answers
            // `refresh_task_id` only for tasks in this task's slots.
            let current = |t: TaskId| sup.current_task(t.index() as u16).unwrap_or(t);
            let p = self.server.pull_deaths(&sup, alloc.as_ref(), current);
            if p.deaths > 0 || p.resynced {
                userlib::log!(
                    "iommu-server: {} deaths{}: {} streams abort, {} binds, {} domains, {} PASIDs defunct",
                    p.deaths,
                    if p.resynced { " (log overflowed: resynced)" } else { "" },
                    p.reclaimed.streams,
                    p.reclaimed.binds,
                    p.reclaimed.domains,
                    p.pasids
                );
            }
            if !p.more {
                break;
            }
        }
    }

    /// pasid-alloc's current id, if this task may ask it; a new incarnation
    /// first costs every PASID bind (`IommuServer::pasid_alloc_seen`).
    fn pasid_alloc(&mut self) -> Option<TaskId> {
        let id = userlib::sys_lookup_slot("pasid-alloc")?;
        let purged = self.server.pasid_alloc_seen(id);
        if purged > 0 {
            userlib::log!(
                "iommu-server: pasid-alloc restarted: {} PASID binds removed",
                purged
            );
        }
        Some(id)
    }

    /// Runs an attach-like request, recording its cost in counter ticks.
    fn timed_attach(
        &mut self,
        f: impl FnOnce(&mut IommuServer<M, D, W>) -> Result<AttachResult, Error>,
    ) -> Result<api::AttachOutcome, api::IommuError> {
        let t0 = crate::now();
        let r = f(self.server);
        self.server.last_attach_instr = crate::now().wrapping_sub(t0);
        r.map(|a| attach_outcome(&a)).map_err(api_error)
    }
}

/// The task's receive loop: enables the interrupts the server services
/// (`ServerConfig::gerror_bit` / `eventq_bit`) and serves the interface
/// forever with the generated `run_server` (decode, caller check by role,
/// the trait below, reply). Notifications go to `handle_notification`,
/// which services GERROR and the event queue and re-enables those
/// interrupts. The image's `main` calls this after probe and init; the
/// host harness calls it on a server built over its SMMU model.
pub fn serve<M: Mmio, D: DmaMemory, W: Waiter>(server: &mut IommuServer<M, D, W>) -> ! {
    if server.irq_bits != 0 {
        userlib::sys_irq_control(server.irq_bits, true);
    }
    // The fault path is there when prq-server is: queues handed over,
    // routes and drains from here on.
    server.connect_faults();
    // PASIDs left defunct while this server was not running (a restart
    // mid-drain) are drained before anything else is served.
    let mut s = IdlServer::new(server);
    s.pull_defunct();
    api::run_server(&mut s)
}

/// One received message or notification, as [`serve`] handles it (for a
/// harness that runs its own loop).
pub fn handle<M: Mmio, D: DmaMemory, W: Waiter>(
    server: &mut IommuServer<M, D, W>,
    msg: &RecvMessage,
    buf: &[u8],
) {
    api::dispatch(&mut IdlServer::new(server), msg, buf);
}

/// The loop of a server that could not start (no SMMU, a refused probe,
/// init failed): every well-formed request is answered `why` (Io,
/// TimedOut, …) so no client blocks forever; malformed ones get the
/// generated reply-fault as usual.
/// This task's incarnation number for [`ServerConfig::incarnation`]: its own
/// generation + 1, found through its name in the app's task names (0 when
/// it is not listed). A restarted server so never hands out a handle an
/// earlier incarnation gave.
pub fn own_incarnation(task_names: &[&str]) -> u16 {
    match task_names.iter().position(|n| *n == "iommu-server") {
        Some(i) => {
            let me = userlib::sys_refresh_task_id(TaskId::new(i, userlib::Generation(0)));
            // Handles carry 16 bits of incarnation: after 65 535 restarts
            // of this server they repeat (docs/kernel.md, "Generations").
            (me.generation().0 as u16).wrapping_add(1).max(1)
        }
        None => 0,
    }
}

pub fn serve_unavailable(why: Error) -> ! {
    let mut buf = [0u8; api::IommuOp::RECV_BUF_SIZE];
    loop {
        let msg = userlib::sys_recv_open(&mut buf, 0);
        answer_unavailable(&msg, &buf, why);
    }
}

/// One message of [`serve_unavailable`].
pub fn answer_unavailable(msg: &RecvMessage, buf: &[u8], why: Error) {
    if msg.is_notification() {
        return;
    }
    if idl_runtime::receive(msg, buf, api::dispatch_decode).is_some() {
        // An error reply carries no payload, whatever the operation's Ok type.
        idl_runtime::reply_fixed::<(), api::IommuError>(msg.sender, Err(why.api()));
    }
}

fn pages_of(len: u64) -> Result<u32, api::IommuError> {
    if len == 0
        || !len.is_multiple_of(PAGE_SIZE as u64)
        || len / PAGE_SIZE as u64 > MAX_MAP_PAGES as u64
    {
        return Err(api::IommuError::Invalid);
    }
    Ok((len / PAGE_SIZE as u64) as u32)
}

fn dom(d: api::DomainId) -> DomainId {
    DomainId(d.0)
}

/// The interface's form of an attach / replace / detach result.
pub fn attach_outcome(a: &AttachResult) -> api::AttachOutcome {
    api::AttachOutcome {
        old: api::DomainId(a.old.map(|d| d.0).unwrap_or(0)),
        update: match a.update {
            UpdateKind::NoChange => api::SteUpdate::NoChange,
            UpdateKind::Hitless => api::SteUpdate::Hitless,
            UpdateKind::Breaking => api::SteUpdate::BreakBeforeMake,
        },
        fault_duty: a.fault_duty.is_some(),
    }
}

/// The server's nested configuration from the interface's vSTE.
pub fn nested_config(v: &api::NestedSte) -> NestedConfig {
    NestedConfig {
        cd_table_ipa: v.cd_table_ipa,
        s1cdmax: v.s1cdmax,
        s1fmt: match v.s1fmt {
            api::CdTableFormat::Linear => S1Fmt::Linear,
            api::CdTableFormat::TwoLevel4K => S1Fmt::TwoLevel4K,
            api::CdTableFormat::TwoLevel64K => S1Fmt::TwoLevel64K,
        },
        s1dss: match v.s1dss {
            api::SubstreamDefault::Terminate => S1Dss::Terminate,
            api::SubstreamDefault::Bypass => S1Dss::Bypass,
            api::SubstreamDefault::Ssid0 => S1Dss::Ssid0,
        },
    }
}

impl<M: Mmio, D: DmaMemory, W: Waiter> api::IommuServer for IdlServer<'_, M, D, W> {
    fn notification_mask(&self) -> u32 {
        self.server.irq_bits
            | crate::startup::PASID_DEFUNCT_BIT
            | crate::server::DEATH_BIT
            | if self.server.fault_link().present() {
                crate::faults::PRQ_RESPONSES_BIT
            } else {
                0
            }
    }

    fn handle_notification(&mut self, bits: u32) {
        if bits & crate::faults::PRQ_RESPONSES_BIT != 0 && self.server.fault_link().present() {
            self.server.pump_fault_responses();
        }
        if bits & crate::server::DEATH_BIT != 0 {
            self.pull_deaths();
        }
        if bits & crate::startup::PASID_DEFUNCT_BIT != 0 {
            self.pull_defunct();
        }
        let g = self.server.service_interrupts();
        if g != 0 {
            userlib::log!("iommu-server: GERROR {:#x} reported and acknowledged", g);
        }
        // Only bits this task owns: enabling another faults the task.
        let mine = bits & self.server.irq_bits;
        if mine != 0 {
            userlib::sys_irq_control(mine, true);
        }
    }

    fn check_caller(&mut self, caller: TaskId, allowed: &'static [api::IommuCaller]) -> bool {
        let role = self.server.role(caller);
        allowed.iter().any(|a| match a {
            api::IommuCaller::VmmFrontend => role.vm,
        })
    }

    fn hw_info(&mut self, _caller: TaskId) -> Result<api::IommuCaps, api::IommuError> {
        let f = self.server.features();
        Ok(api::IommuCaps {
            ssid_bits: self.server.pasid_bits() as u8,
            pri: f.pri,
            stall: f.stall,
            ats: f.ats,
            nesting: f.nested(),
            max_batch: MAX_INVALIDATION as u16,
        })
    }

    fn create_s2_domain(
        &mut self,
        caller: TaskId,
        fault_capable: bool,
    ) -> Result<api::DomainId, api::IommuError> {
        self.server
            .alloc_s2_domain(caller, fault_capable)
            .map(|d| api::DomainId(d.0))
            .map_err(api_error)
    }

    fn destroy_domain(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
    ) -> Result<(), api::IommuError> {
        self.server
            .destroy_domain(caller, dom(domain))
            .map_err(api_error)
    }

    fn map(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        iova: u64,
        pa: u64,
        len: u64,
        perms: api::MapPerms,
    ) -> Result<(), api::IommuError> {
        let pages = pages_of(len)?;
        let prot = Prot::from_bits(perms.bits() as u32).ok_or(api::IommuError::Invalid)?;
        self.server
            .map(caller, dom(domain), iova, pa, pages, prot)
            .map_err(api_error)
    }

    fn unmap(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        iova: u64,
        len: u64,
    ) -> Result<u64, api::IommuError> {
        let pages = pages_of(len)?;
        self.server
            .unmap(caller, dom(domain), iova, pages, UnmapMode::Strict)
            .map(|n| n as u64 * PAGE_SIZE as u64)
            .map_err(api_error)
    }

    fn attach(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        domain: api::DomainId,
    ) -> Result<api::AttachOutcome, api::IommuError> {
        self.timed_attach(|s| {
            if s.attached(caller, sid.0)?.is_some() {
                return Err(Error::Busy);
            }
            s.attach(caller, sid.0, dom(domain))
        })
    }

    fn replace(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        domain: api::DomainId,
    ) -> Result<api::AttachOutcome, api::IommuError> {
        self.timed_attach(|s| {
            if s.attached(caller, sid.0)?.is_none() {
                return Err(Error::NotFound);
            }
            s.attach(caller, sid.0, dom(domain))
        })
    }

    fn detach(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
    ) -> Result<api::AttachOutcome, api::IommuError> {
        self.timed_attach(|s| s.detach(caller, sid.0))
    }

    fn bind(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        pasid: PasidHandle,
        cd: api::CdConfig,
        fault_capable: bool,
    ) -> Result<u32, api::IommuError> {
        // The stream check comes first (a foreign stream is NotPermitted
        // whatever the PASID), then what the SMMU can do (a PASID on an SMMU
        // without substreams is Unsupported, whoever holds it), then the
        // PASID's owner.
        self.server.attached(caller, sid.0).map_err(api_error)?;
        let ctx = guest_context(&cd, fault_capable).map_err(api_error)?;
        if pasid.pasid.0 != 0 && self.server.pasid_bits() == 0 {
            return Err(api::IommuError::Unsupported);
        }
        if pasid.pasid.0 != 0 {
            // Without a post-only slot pasid-alloc cannot notify this
            // server: drain here too, so freed PASIDs do not wait for the
            // next notification to return to the pool (safety does not
            // depend on it: pasid-alloc reuses none before `mark_drained`).
            self.pull_defunct();
        }
        self.check_pasid(caller, pasid).map_err(api_error)?;
        self.server
            .bind(caller, sid.0, pasid.pasid.0, ctx)
            .map(|u| u as u32)
            .map_err(api_error)
    }

    fn unbind(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        pasid: pasid_alloc_api::Pasid,
        uses_stop_marker: bool,
    ) -> Result<api::UnbindOutcome, api::IommuError> {
        // The last unbind drains in prq-server before it returns 0.
        match self
            .server
            .unbind_marked(caller, sid.0, pasid.0, uses_stop_marker)
        {
            Ok(0) => Ok(api::UnbindOutcome::Drained),
            Ok(_) => Ok(api::UnbindOutcome::StillBound),
            Err(Error::NotFound) => Ok(api::UnbindOutcome::NotBound),
            Err(e) => Err(api_error(e)),
        }
    }

    fn invalidate(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        cmds: Leased<Read, api::SmmuCmd>,
    ) -> Result<api::InvalidateOutcome, api::IommuError> {
        // The vIOMMU (S2 domain) itself: a bad one refuses the whole call.
        self.server
            .check_viommu(caller, dom(domain))
            .map_err(api_error)?;
        let mut out = [Command::zeroed(); MAX_INVALIDATION];
        let n = cmds.len().min(MAX_INVALIDATION);
        for (i, c) in out.iter_mut().take(n).enumerate() {
            let w = cmds.read(i).map_err(|_| api::IommuError::Invalid)?;
            *c = Command::from_words(w.words);
        }
        let (done, r) = self.server.invalidate(caller, dom(domain), &out[..n]);
        let status = match r {
            Ok(()) => api::InvalidateStatus::Complete,
            Err(Error::Timeout) => return Err(api::IommuError::TimedOut),
            Err(Error::HardwareError) => match self.server.last_command_fault() {
                Some(f) if f.err == smmuv3::CmdqError::AtcInvSync => {
                    api::InvalidateStatus::AtcTimeout
                }
                _ => api::InvalidateStatus::CommandError,
            },
            Err(_) => api::InvalidateStatus::Rejected,
        };
        Ok(api::InvalidateOutcome { done, status })
    }

    fn create_s1_domain(
        &mut self,
        caller: TaskId,
        fault_capable: bool,
    ) -> Result<api::DomainId, api::IommuError> {
        self.server
            .alloc_s1_domain(caller, fault_capable)
            .map(|d| api::DomainId(d.0))
            .map_err(api_error)
    }

    fn create_nested_domain(
        &mut self,
        caller: TaskId,
        parent: api::DomainId,
        vste: api::NestedSte,
        fault_capable: bool,
    ) -> Result<api::DomainId, api::IommuError> {
        self.server
            .alloc_nested_domain(caller, dom(parent), nested_config(&vste), fault_capable)
            .map(|d| api::DomainId(d.0))
            .map_err(api_error)
    }

    fn unmap_deferred(
        &mut self,
        caller: TaskId,
        domain: api::DomainId,
        iova: u64,
        len: u64,
    ) -> Result<u64, api::IommuError> {
        let pages = pages_of(len)?;
        self.server
            .unmap(caller, dom(domain), iova, pages, UnmapMode::Deferred)
            .map(|n| n as u64 * PAGE_SIZE as u64)
            .map_err(api_error)
    }

    fn flush(&mut self, caller: TaskId, domain: api::DomainId) -> Result<(), api::IommuError> {
        self.server.flush(caller, dom(domain)).map_err(api_error)
    }

    fn set_vsid(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        vsid: u32,
    ) -> Result<(), api::IommuError> {
        self.server.set_vsid(caller, sid.0, vsid).map_err(api_error)
    }

    fn bind_users(
        &mut self,
        caller: TaskId,
        sid: api::StreamId,
        pasid: pasid_alloc_api::Pasid,
    ) -> Result<u32, api::IommuError> {
        self.server
            .bind_users(caller, sid.0, pasid.0)
            .map(u32::from)
            .map_err(api_error)
    }

    fn fetch_events(
        &mut self,
        caller: TaskId,
        out: Leased<Write, api::SmmuEvent>,
    ) -> Result<api::EventsFetched, api::IommuError> {
        let mut ev = [Event::zeroed(); MAX_FETCH];
        let max = out.len().min(MAX_FETCH);
        let (n, lost) = self.server.fetch_events(caller, &mut ev[..max]);
        for (i, e) in ev[..n].iter().enumerate() {
            // Bounds were checked against the lease's length; a failure
            // means the client went away, and its records with it.
            if out.write(i, &api::SmmuEvent { words: e.words() }).is_err() {
                return Err(api::IommuError::Invalid);
            }
        }
        Ok(api::EventsFetched {
            count: n as u32,
            lost,
        })
    }

    fn info(&mut self, _caller: TaskId) -> Result<api::IommuInfo, api::IommuError> {
        let i = self.server.info();
        Ok(api::IommuInfo {
            idr0: i.idr0,
            idr1: i.idr1,
            idr3: i.idr3,
            idr5: i.idr5,
            gbpa: i.gbpa,
            cr0: i.cr0,
            strtab_cfg: i.strtab_cfg,
            pages_total: i.pages_total,
            pages_free: i.pages_free,
            commands: i.commands,
            syncs: i.syncs,
            cmd_recovered: i.cmd_recovered,
            last_refused_opcode: i.last_refused_opcode,
            last_refused_err: i.last_refused_err,
            gerrors_seen: i.gerrors_seen,
            events_read: i.events_read,
            domains: i.domains,
            contexts: i.contexts,
            ste_update_instr: i.ste_update_instr,
            attach_instr: i.attach_instr,
        })
    }
}
