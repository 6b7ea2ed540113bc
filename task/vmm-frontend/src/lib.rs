//! vmm-frontend: one VM's virtual SMMU (docs/vmm-frontend.md).
//!
//! One instance per VM. It serves `VmmFrontend` (idl/vmm-frontend.idol.ron)
//! to its guest — the only task that may call it — in the guest's names
//! (virtual StreamIDs, guest PASIDs), and is the VM's only path to
//! iommu-server, pasid-alloc and prq-server, which know it as the VM (its
//! `[[streams]]` say `vm = "vmm-frontend-<x>"`). The guest never learns a
//! physical StreamID, a host PASID or a VMID: every reply and record built
//! here is in guest names (see [`Frontend::guest_fault`] and
//! [`Frontend::guest_event`]).
//!
//! What it holds (all bounded, no heap):
//! - the VM's stage-2 domain, created at start with the whole RAM window
//!   mapped (IPA `ram_ipa` → PA `ram_pa`); if a server is not up yet, it
//!   is retried at the first request that needs it;
//! - its streams: vSID ↔ pSID from app.toml, each in a guest mode (abort,
//!   stage 2 only, nested with host-side CDs installed by `bind`, or
//!   nested over the guest's own CD table);
//! - guest PASID → host PASID ([`MAX_PASIDS`]; host PASIDs from pasid-alloc,
//!   never the identity), and the binds made with them ([`MAX_BINDS`]);
//! - the cookies of fault groups delivered to the guest ([`MAX_DELIVERED`]),
//!   so a guest's death answers them Invalid;
//! - the virtual event queue (fixed depth ≤ [`MAX_VEVENTQ`]; when full, a
//!   new event is dropped and counted LOST, the guest is told on its next
//!   fetch).
//!
//! Guest death: the supervisor posts [`DEATH_BIT`]; the frontend pulls the
//! death log and, when its guest died, reclaims everything the guest made
//! ([`Frontend::reset_guest`]). A request from a guest incarnation the
//! frontend has not seen yet does the same first (the restarted guest
//! always starts clean).

#![no_std]

mod death;
mod events;
mod faults;
mod invalidate;
mod pasids;
mod streams;

#[cfg(test)]
extern crate std;

use idl_runtime::{Leased, Read, Write};
use iommu_server_api::{self as iapi, IommuClient, IommuError};
use pasid_alloc_api::{self as aapi, PasidAllocClient, PasidAllocError, PasidHandle};
use prq_server_api::{self as papi, PrqClient};
use smmuv3::{Command, CommandKind, Event};
use supervisor_api::{DeathKind, SupervisorClient};
use trace::{events::Vmm, trace};
use userlib::TaskId;
use vmm_frontend_api::{self as api, VmmFrontendError as E};

/// Streams one VM may have.
pub const MAX_STREAMS: usize = 8;
/// Guest PASIDs one VM may hold at once (its quota here; pasid-alloc's
/// quota applies too).
pub const MAX_PASIDS: usize = 16;
/// (stream, guest PASID) binds one VM may have.
pub const MAX_BINDS: usize = 32;
/// Fault groups delivered to the guest and not yet answered. When full,
/// `fetch_faults` delivers nothing until the guest answers some.
pub const MAX_DELIVERED: usize = 64;
/// Fault records per `fetch_faults` (the lease's max).
pub const MAX_FETCH: usize = 64;
/// Deepest virtual event queue.
pub const MAX_VEVENTQ: usize = 64;
/// Commands per invalidation batch (the lease's max; iommu-server's too).
pub const MAX_BATCH: usize = 64;
/// Pages per iommu-server `map` call (its limit).
const MAP_CHUNK_PAGES: u64 = 512;
const PAGE: u64 = 0x1000;
/// The IPA the guest sees its RAM at in the image: below QEMU edu's
/// 28-bit DMA reach (so stage-2-only DMA can name it) and below
/// iommu-server's MSI window at 0x0800_0000 for RAM up to 64 MiB. The
/// guest learns it with `ram`; IPA ≠ PA, so the guest never needs a PA.
pub const IMAGE_RAM_IPA: u64 = 0x0400_0000;
/// Bytes per context descriptor (a guest's linear CD table entry).
const CD_BYTES: u64 = 64;

/// prq-server posts this when the frontend's fault or event queue became
/// non-empty (prq-server's `OWNER_BIT`).
pub const PRQ_BIT: u32 = 1 << 5;
/// The supervisor posts this when a task died (`supervisor::DEATH_BIT`).
pub const DEATH_BIT: u32 = 1 << 7;
/// The frontend posts its guest this when faults or events wait (the
/// guest's notification bit for its vIOMMU, like an MSI of the vSMMU).
pub const GUEST_BIT: u32 = 1 << 0;

/// A VM's static configuration (app.toml via `VMS`/`VSIDS`/`STREAMS`, or
/// the harness).
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    /// Task index of the guest (its only caller).
    pub guest: u16,
    /// Guest RAM: host physical base and size (page multiples).
    pub ram_pa: u64,
    pub ram_size: u64,
    /// The IPA the guest sees its RAM at (`ram`).
    pub ram_ipa: u64,
    /// Virtual event queue depth (1..=[`MAX_VEVENTQ`]).
    pub event_depth: u16,
    /// The VM's streams: (physical StreamID, virtual StreamID).
    pub streams: &'a [(u32, u32)],
    /// Report caching mode (every change needs an invalidation). Set by
    /// default; only turned off where hardware nesting makes it needless.
    pub caching_mode: bool,
}

/// How the guest configured one of its streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Abort,
    S2Only,
    /// Nested, the contexts installed per guest PASID with `bind`.
    Binds {
        fault_capable: bool,
        cd_max_bits: u8,
    },
    /// Nested over the guest's own CD table (a nested domain).
    GuestTable {
        fault_capable: bool,
        cd_max_bits: u8,
        cd_table_ipa: u64,
        domain: iapi::DomainId,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct Stream {
    pub psid: u32,
    pub vsid: u32,
    pub mode: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasidMap {
    pub guest: u32,
    pub host: PasidHandle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bind {
    pub stream: u8,
    pub guest: u32,
    pub users: u32,
}

/// A fault group delivered to the guest and not answered yet: its cookie
/// and attachment (a drain of the attachment answers and revokes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub cookie: papi::Cookie,
    pub psid: u32,
    /// Host PASID (0: none).
    pub pasid: u32,
}

/// One event in the virtual event queue, already in guest names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VEvent {
    pub vsid: u32,
    pub event_id: u8,
    pub words: [u64; 4],
}

/// Servers the frontend calls.
#[derive(Clone, Copy, Debug)]
pub struct Peers {
    pub iommu: TaskId,
    pub pasids: Option<TaskId>,
    pub prq: Option<TaskId>,
    pub supervisor: Option<TaskId>,
}

/// A VM's frontend state. `Debug` is its full state dump.
#[derive(Debug)]
pub struct Frontend {
    pub guest: TaskId,
    pub ram_pa: u64,
    pub ram_size: u64,
    pub ram_ipa: u64,
    pub depth: usize,
    pub caching_mode: bool,
    pub caps: Option<iapi::IommuCaps>,
    pub s2: Option<iapi::DomainId>,
    /// iommu-server knows every vSID (guest commands name them).
    pub vsids_set: bool,
    pub streams: [Option<Stream>; MAX_STREAMS],
    pub pasids: [Option<PasidMap>; MAX_PASIDS],
    pub binds: [Option<Bind>; MAX_BINDS],
    pub delivered: [Option<Delivered>; MAX_DELIVERED],
    pub events: [VEvent; MAX_VEVENTQ],
    pub ev_head: usize,
    pub ev_len: usize,
    pub ev_lost: u32,
    /// The death log's cursor.
    pub deaths_seen: u32,
    peers: PeersDbg,
}

/// Peers, not part of the state dump's meaning (ids only).
#[derive(Clone, Copy, Debug)]
struct PeersDbg(Peers);

fn iommu_err(e: IommuError) -> E {
    match e {
        IommuError::NotPermitted => E::NotPermitted,
        IommuError::NotFound => E::NotFound,
        IommuError::Invalid | IommuError::AddrInUse => E::Invalid,
        IommuError::Busy => E::Busy,
        IommuError::NoSpace => E::NoSpace,
        IommuError::AlreadyExists => E::AlreadyExists,
        IommuError::Unsupported => E::Unsupported,
        // A server restarting, a timeout or a refused command: the guest
        // may retry; nothing of the host's state is named.
        _ => E::Again,
    }
}

fn alloc_err(e: PasidAllocError) -> E {
    match e {
        PasidAllocError::NoSpace => E::NoSpace,
        PasidAllocError::NotFound => E::NotFound,
        PasidAllocError::NotPermitted => E::NotPermitted,
        PasidAllocError::Invalid => E::Invalid,
        _ => E::Again,
    }
}

impl Frontend {
    /// A frontend for `cfg`; nothing is asked of the servers yet.
    pub fn new(cfg: &Config<'_>, peers: Peers) -> Self {
        let mut streams = [None; MAX_STREAMS];
        for (s, &(psid, vsid)) in streams.iter_mut().zip(cfg.streams) {
            *s = Some(Stream {
                psid,
                vsid,
                mode: Mode::Abort,
            });
        }
        Frontend {
            guest: TaskId::new(cfg.guest as usize, userlib::Generation(0)),
            ram_pa: cfg.ram_pa,
            ram_size: cfg.ram_size,
            ram_ipa: cfg.ram_ipa,
            depth: (cfg.event_depth as usize).clamp(1, MAX_VEVENTQ),
            caching_mode: cfg.caching_mode,
            caps: None,
            s2: None,
            vsids_set: false,
            streams,
            pasids: [None; MAX_PASIDS],
            binds: [None; MAX_BINDS],
            delivered: [None; MAX_DELIVERED],
            events: [VEvent {
                vsid: 0,
                event_id: 0,
                words: [0; 4],
            }; MAX_VEVENTQ],
            ev_head: 0,
            ev_len: 0,
            ev_lost: 0,
            deaths_seen: 0,
            peers: PeersDbg(peers),
        }
    }

    fn iommu(&self) -> IommuClient {
        IommuClient::new(self.peers.0.iommu)
    }

    fn prq(&self) -> Option<PrqClient> {
        self.peers.0.prq.map(PrqClient::new)
    }

    fn alloc(&self) -> Option<PasidAllocClient> {
        self.peers.0.pasids.map(PasidAllocClient::new)
    }

    /// Start-up: skips the deaths logged before this incarnation, learns
    /// its guest's incarnation, then (`ready`) tells iommu-server the
    /// vSIDs, learns the SMMU's capabilities, creates the stage-2 domain and
    /// maps the RAM window. Streams start at abort (a restarted frontend
    /// finds them reclaimed by iommu-server). Failures are retried by
    /// [`Self::ready`] at the next request.
    pub fn start(&mut self) {
        if let Some(sup) = self.peers.0.supervisor.map(SupervisorClient::new) {
            // Deaths before this incarnation are not ours to reclaim.
            while let Ok(r) = sup.next_death(self.deaths_seen) {
                if r.kind == DeathKind::None || r.next == self.deaths_seen {
                    break;
                }
                self.deaths_seen = r.next;
            }
        }
        self.guest = userlib::sys_refresh_task_id(self.guest);
        let _ = self.ready();
    }

    /// The stage-2 domain with the RAM window mapped (and iommu-server
    /// told the vSIDs, the capabilities known), made now if start-up could
    /// not.
    fn ready(&mut self) -> Result<iapi::DomainId, E> {
        let iommu = self.iommu();
        if !self.vsids_set {
            for s in self.streams.iter().flatten() {
                iommu
                    .set_vsid(iapi::StreamId(s.psid), s.vsid)
                    .map_err(iommu_err)?;
            }
            self.vsids_set = true;
        }
        if self.caps.is_none() {
            self.caps = Some(iommu.hw_info().map_err(iommu_err)?);
        }
        if let Some(d) = self.s2 {
            return Ok(d);
        }
        let d = iommu.create_s2_domain(false).map_err(iommu_err)?;
        let mut off = 0;
        while off < self.ram_size {
            let len = (self.ram_size - off).min(MAP_CHUNK_PAGES * PAGE);
            let perms = iapi::MapPerms::READ | iapi::MapPerms::WRITE;
            if let Err(e) = iommu.map(d, self.ram_ipa + off, self.ram_pa + off, len, perms) {
                let _ = iommu.destroy_domain(d);
                return Err(iommu_err(e));
            }
            off += len;
        }
        self.s2 = Some(d);
        Ok(d)
    }

    /// The vIOMMU's PASID width: the SMMU's SubstreamID width.
    fn pasid_bits(&self) -> u8 {
        self.caps.map(|c| c.ssid_bits).unwrap_or(0).min(20)
    }

    fn stream_idx(&self, vsid: u32) -> Result<usize, E> {
        self.streams
            .iter()
            .position(|s| matches!(s, Some(s) if s.vsid == vsid))
            .ok_or(E::NotFound)
    }

    fn stream(&self, i: usize) -> Stream {
        // Indices come from `stream_idx` or a bind record: always a stream.
        self.streams[i].unwrap_or(Stream {
            psid: u32::MAX,
            vsid: u32::MAX,
            mode: Mode::Abort,
        })
    }

    fn pasid_idx(&self, guest: u32) -> Option<usize> {
        self.pasids
            .iter()
            .position(|p| matches!(p, Some(p) if p.guest == guest))
    }

    fn host_pasid(&self, guest: u32) -> Option<PasidHandle> {
        self.pasid_idx(guest)
            .and_then(|i| self.pasids[i])
            .map(|p| p.host)
    }

    fn guest_pasid(&self, host: u32) -> Option<u32> {
        self.pasids
            .iter()
            .flatten()
            .find(|p| p.host.pasid.0 == host)
            .map(|p| p.guest)
    }

    fn bind_idx(&self, stream: usize, guest: u32) -> Option<usize> {
        self.binds
            .iter()
            .position(|b| matches!(b, Some(b) if b.stream as usize == stream && b.guest == guest))
    }

    /// The RAM window holds `[ipa, ipa + len)`.
    fn in_ram(&self, ipa: u64, len: u64) -> bool {
        ipa >= self.ram_ipa && len <= self.ram_size && ipa - self.ram_ipa <= self.ram_size - len
    }

    pub fn caps(&mut self) -> Result<api::GuestCaps, E> {
        self.ready()?;
        let c = self.caps.ok_or(E::Again)?;
        Ok(api::GuestCaps {
            pasid_bits: self.pasid_bits(),
            pri: c.pri,
            stall: c.stall,
            // Without hardware nesting the frontend shadows nothing, but it
            // still only learns of a change by an invalidation: caching mode.
            caching_mode: self.caching_mode || !c.nesting,
            max_batch: c.max_batch.min(MAX_BATCH as u16),
        })
    }

    pub fn ram(&mut self) -> Result<api::GuestRam, E> {
        Ok(api::GuestRam {
            ipa: self.ram_ipa,
            size: self.ram_size,
        })
    }
}

/// The incarnation the kernel gives `t` when it restarts.
fn next_incarnation(t: TaskId) -> TaskId {
    TaskId::new(
        t.index(),
        userlib::Generation(t.generation().0.wrapping_add(1)),
    )
}

/// The generated server trait on a frontend, with a hook run after each
/// message (the harness publishes state dumps with it).
pub struct Server<'a, F: FnMut(&Frontend)> {
    pub fe: &'a mut Frontend,
    pub after: F,
}

impl<F: FnMut(&Frontend)> Server<'_, F> {
    /// Publishes the state after a request; an `Again` first checks
    /// whether a server restarted (see [`Frontend::refresh_peers`]).
    fn done<T>(&mut self, op: Vmm, r: Result<T, E>) -> Result<T, E> {
        if let Err(e) = &r {
            trace!(Vmm::Refused, op, *e as u32);
        }
        if matches!(r, Err(E::Again)) {
            self.fe.refresh_peers();
        }
        (self.after)(self.fe);
        r
    }
}

impl<F: FnMut(&Frontend)> api::VmmFrontendServer for Server<'_, F> {
    fn notification_mask(&self) -> u32 {
        PRQ_BIT | DEATH_BIT
    }

    fn handle_notification(&mut self, bits: u32) {
        if bits & DEATH_BIT != 0 {
            self.fe.pull_deaths();
        }
        if bits & PRQ_BIT != 0 {
            // Events go into the virtual queue now (its depth applies);
            // faults stay in prq-server's queue for the guest's fetch.
            // Either way the guest is told.
            self.fe.pull_events();
            userlib::sys_post(self.fe.guest, GUEST_BIT);
        }
        (self.after)(self.fe);
    }

    fn check_caller(&mut self, caller: TaskId, allowed: &'static [api::VmmFrontendCaller]) -> bool {
        allowed.contains(&api::VmmFrontendCaller::Guest) && self.fe.check_guest(caller)
    }

    fn caps(&mut self, _caller: TaskId) -> Result<api::GuestCaps, E> {
        let r = self.fe.caps();
        self.done(Vmm::Caps, r)
    }

    fn ram(&mut self, _caller: TaskId) -> Result<api::GuestRam, E> {
        self.fe.ram()
    }

    fn alloc_pasid(&mut self, _caller: TaskId, pasid: api::GuestPasid) -> Result<(), E> {
        trace!(Vmm::AllocPasid, pasid.0);
        let r = self.fe.alloc_pasid(pasid.0);
        self.done(Vmm::AllocPasid, r)
    }

    fn free_pasid(&mut self, _caller: TaskId, pasid: api::GuestPasid) -> Result<(), E> {
        trace!(Vmm::FreePasid, pasid.0);
        let r = self.fe.free_pasid(pasid.0);
        self.done(Vmm::FreePasid, r)
    }

    fn set_ste(
        &mut self,
        _caller: TaskId,
        vsid: api::VirtStreamId,
        mode: api::GuestSteMode,
    ) -> Result<(), E> {
        let code = match mode {
            api::GuestSteMode::Abort => 0,
            api::GuestSteMode::S2Only => 1,
            api::GuestSteMode::Nested { .. } => 2,
        };
        trace!(Vmm::SetSte, vsid.0, code);
        let r = self.fe.set_ste(vsid.0, mode);
        self.done(Vmm::SetSte, r)
    }

    fn bind(
        &mut self,
        _caller: TaskId,
        vsid: api::VirtStreamId,
        pasid: api::GuestPasid,
        cd: iapi::CdConfig,
        fault_capable: bool,
    ) -> Result<u32, E> {
        trace!(Vmm::Bind, vsid.0, pasid.0);
        let r = self.fe.bind(vsid.0, pasid.0, cd, fault_capable);
        self.done(Vmm::Bind, r)
    }

    fn unbind(
        &mut self,
        _caller: TaskId,
        vsid: api::VirtStreamId,
        pasid: api::GuestPasid,
        uses_stop_marker: bool,
    ) -> Result<iapi::UnbindOutcome, E> {
        trace!(Vmm::Unbind, vsid.0, pasid.0);
        let r = self.fe.unbind(vsid.0, pasid.0, uses_stop_marker);
        self.done(Vmm::Unbind, r)
    }

    fn invalidate(
        &mut self,
        _caller: TaskId,
        cmds: Leased<Read, api::GuestCmd>,
    ) -> Result<api::GuestInvalidateOutcome, E> {
        trace!(Vmm::Invalidate, cmds.len());
        let r = self.fe.invalidate(&cmds);
        self.done(Vmm::Invalidate, r)
    }

    fn fetch_faults(
        &mut self,
        _caller: TaskId,
        out: Leased<Write, api::GuestFault>,
    ) -> Result<papi::FetchOutcome, E> {
        trace!(Vmm::FetchFaults, out.len());
        let r = self.fe.fetch_faults(&out);
        self.done(Vmm::FetchFaults, r)
    }

    fn respond(
        &mut self,
        _caller: TaskId,
        responses: Leased<Read, papi::ResponseEntry>,
    ) -> Result<papi::RespondOutcome, E> {
        trace!(Vmm::Respond, responses.len());
        let r = self.fe.respond(&responses);
        self.done(Vmm::Respond, r)
    }

    fn fetch_events(
        &mut self,
        _caller: TaskId,
        out: Leased<Write, api::GuestEvent>,
    ) -> Result<papi::FetchOutcome, E> {
        let r = self.fe.fetch_events(&out);
        self.done(Vmm::FetchEvents, r)
    }
}

/// Finds the servers in this task's slots (iommu-server is required).
pub fn peers() -> Option<Peers> {
    Some(Peers {
        iommu: userlib::sys_lookup_slot("iommu-server")?,
        pasids: userlib::sys_lookup_slot("pasid-alloc"),
        prq: userlib::sys_lookup_slot("prq-server"),
        supervisor: userlib::sys_lookup_slot("supervisor"),
    })
}

/// The task's loop: start-up, then the generated receive loop.
pub fn serve(fe: &mut Frontend) -> ! {
    serve_with(fe, |_| {})
}

/// [`serve`] with a hook after each message.
pub fn serve_with(fe: &mut Frontend, after: impl FnMut(&Frontend)) -> ! {
    fe.start();
    let mut s = Server { fe, after };
    (s.after)(s.fe);
    api::run_server(&mut s)
}

/// This VM's entry of the app's `VMS` (frontend index, guest index, RAM
/// PA, RAM size, event queue depth): the one whose guest is in this task's
/// post slots (each frontend may post only its own guest).
pub fn own_vm(
    vms: &'static [(u16, u16, u64, u64, u16)],
    task_names: &[&str],
) -> Option<&'static (u16, u16, u64, u64, u16)> {
    vms.iter().find(|v| {
        task_names
            .get(v.1 as usize)
            .and_then(|n| userlib::sys_lookup_slot(n))
            .is_some_and(|id| id.index() == v.1 as usize)
    })
}

/// The streams of VM `frontend` from the app's `STREAMS` (StreamID, task
/// index) and `VSIDS` (StreamID, vSID; default vSID = pSID), into `out`.
pub fn vm_streams(
    frontend: u16,
    streams: &[(u32, u16)],
    vsids: &[(u32, u32)],
    out: &mut [(u32, u32); MAX_STREAMS],
) -> usize {
    let mut n = 0;
    for &(sid, vm) in streams {
        if vm == frontend && n < MAX_STREAMS {
            let vsid = vsids
                .iter()
                .find(|v| v.0 == sid)
                .map(|v| v.1)
                .unwrap_or(sid);
            out[n] = (sid, vsid);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests;

/// The app's static facts (`build.rs`).
#[allow(dead_code)]
pub mod app_config {
    include!(concat!(env!("OUT_DIR"), "/app_config.rs"));
}
