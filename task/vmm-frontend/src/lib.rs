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

    /// Unbinds every user of bind `bi` in iommu-server (each unbind
    /// returns after the drain) and forgets it.
    fn unbind_all(&mut self, bi: usize) -> Result<(), E> {
        let Some(b) = self.binds[bi] else {
            return Ok(());
        };
        let s = self.stream(b.stream as usize);
        let host = self
            .host_pasid(b.guest)
            .map(|h| h.pasid)
            .unwrap_or(aapi::Pasid(0));
        let iommu = self.iommu();
        for _ in 0..=b.users {
            match iommu.unbind(iapi::StreamId(s.psid), host, false) {
                Ok(iapi::UnbindOutcome::StillBound) => continue,
                Ok(_) => break,
                Err(e) => return Err(iommu_err(e)),
            }
        }
        self.binds[bi] = None;
        self.forget_drained(s.psid, Some(host.0));
        Ok(())
    }

    /// The drain of (psid, PASID) — every PASID with None — answered and
    /// revoked the groups delivered from it: forget their cookies.
    fn forget_drained(&mut self, psid: u32, pasid: Option<u32>) {
        for d in self.delivered.iter_mut() {
            if matches!(d, Some(x) if x.psid == psid && pasid.is_none_or(|p| p == x.pasid)) {
                *d = None;
            }
        }
    }

    /// Takes stream `i` off whatever it was attached to (binds dropped
    /// and drained by iommu-server's detach), destroys its nested domain.
    fn detach_stream(&mut self, i: usize) -> Result<(), E> {
        let s = self.stream(i);
        let iommu = self.iommu();
        if s.mode != Mode::Abort {
            match iommu.detach(iapi::StreamId(s.psid)) {
                Ok(_) | Err(IommuError::NotFound) => {}
                Err(e) => return Err(iommu_err(e)),
            }
        }
        for b in self.binds.iter_mut() {
            if matches!(b, Some(b) if b.stream as usize == i) {
                *b = None;
            }
        }
        self.forget_drained(s.psid, None);
        if let Mode::GuestTable { domain, .. } = s.mode {
            let _ = iommu.destroy_domain(domain);
        }
        if let Some(st) = self.streams[i].as_mut() {
            st.mode = Mode::Abort;
        }
        Ok(())
    }

    /// Moves stream `i` to `domain` (attach, or replace when attached).
    fn put_on(&mut self, i: usize, domain: iapi::DomainId) -> Result<(), E> {
        let s = self.stream(i);
        let iommu = self.iommu();
        let sid = iapi::StreamId(s.psid);
        if s.mode == Mode::Abort {
            iommu.attach(sid, domain).map_err(iommu_err)?;
        } else {
            iommu.replace(sid, domain).map_err(iommu_err)?;
            // A replace answers the old domain's groups of the stream
            // (prq-server revokes their cookies).
            self.forget_drained(s.psid, Some(0));
        }
        Ok(())
    }

    // ---- operations -------------------------------------------------------

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

    pub fn alloc_pasid(&mut self, guest: u32) -> Result<(), E> {
        self.ready()?;
        if guest == 0 || (guest as u64) >> self.pasid_bits() != 0 {
            return Err(E::Invalid);
        }
        if self.pasid_idx(guest).is_some() {
            return Err(E::AlreadyExists);
        }
        let slot = self
            .pasids
            .iter()
            .position(|p| p.is_none())
            .ok_or(E::NoSpace)?;
        let alloc = self.alloc().ok_or(E::Unsupported)?;
        let host = alloc.alloc().map_err(alloc_err)?;
        self.pasids[slot] = Some(PasidMap { guest, host });
        Ok(())
    }

    /// Frees a guest PASID: pasid-alloc makes the host PASID defunct at
    /// once (no new bind), this VM's binds of it are unbound (each after
    /// its drain), and pasid-alloc returns it to the pool only after
    /// iommu-server reported it drained.
    pub fn free_pasid(&mut self, guest: u32) -> Result<(), E> {
        let pi = self.pasid_idx(guest).ok_or(E::NotFound)?;
        let host = self.pasids[pi].ok_or(E::NotFound)?.host;
        let alloc = self.alloc().ok_or(E::Unsupported)?;
        match alloc.free(host) {
            // NotFound: already defunct or reclaimed (a pasid-alloc
            // restart): the mapping is stale either way.
            Ok(()) | Err(PasidAllocError::NotFound) => {}
            Err(e) => return Err(alloc_err(e)),
        }
        for bi in 0..MAX_BINDS {
            if matches!(self.binds[bi], Some(b) if b.guest == guest) {
                // iommu-server's defunct drain may have unbound it already
                // (then NotBound); a failure leaves it to that drain.
                let _ = self.unbind_all(bi);
                self.binds[bi] = None;
            }
        }
        // Every bind of it is drained (here or by iommu-server's defunct
        // drain): its delivered groups were answered there.
        for i in 0..MAX_STREAMS {
            if let Some(st) = self.streams[i] {
                self.forget_drained(st.psid, Some(host.pasid.0));
            }
        }
        self.pasids[pi] = None;
        Ok(())
    }

    pub fn set_ste(&mut self, vsid: u32, mode: api::GuestSteMode) -> Result<(), E> {
        let i = self.stream_idx(vsid)?;
        let s = self.stream(i);
        let has_binds = self
            .binds
            .iter()
            .any(|b| matches!(b, Some(b) if b.stream as usize == i));
        match mode {
            api::GuestSteMode::Abort => self.detach_stream(i),
            api::GuestSteMode::S2Only => {
                if has_binds {
                    return Err(E::Busy);
                }
                let s2 = self.ready()?;
                if s.mode == Mode::S2Only {
                    return Ok(());
                }
                self.put_on(i, s2)?;
                if let Mode::GuestTable { domain, .. } = s.mode {
                    let _ = self.iommu().destroy_domain(domain);
                }
                self.set_mode(i, Mode::S2Only);
                Ok(())
            }
            api::GuestSteMode::Nested {
                fault_capable,
                cd_max_bits,
                cd_table_ipa,
            } => {
                let s2 = self.ready()?;
                if cd_max_bits > self.pasid_bits() {
                    return Err(E::Invalid);
                }
                let table = CD_BYTES << cd_max_bits;
                if cd_table_ipa != 0
                    && (cd_table_ipa % CD_BYTES != 0 || !self.in_ram(cd_table_ipa, table))
                {
                    return Err(E::Invalid);
                }
                if has_binds {
                    return Err(E::Busy);
                }
                if cd_table_ipa == 0 {
                    // Host-side CDs: the stream sits on the S2 domain and
                    // `bind` installs the guest's contexts.
                    if !matches!(s.mode, Mode::S2Only | Mode::Binds { .. }) {
                        self.put_on(i, s2)?;
                        if let Mode::GuestTable { domain, .. } = s.mode {
                            let _ = self.iommu().destroy_domain(domain);
                        }
                    }
                    self.set_mode(
                        i,
                        Mode::Binds {
                            fault_capable,
                            cd_max_bits,
                        },
                    );
                    return Ok(());
                }
                let vste = iapi::NestedSte {
                    cd_table_ipa,
                    s1cdmax: cd_max_bits,
                    s1fmt: iapi::CdTableFormat::Linear,
                    s1dss: iapi::SubstreamDefault::Terminate,
                };
                let iommu = self.iommu();
                let d = iommu
                    .create_nested_domain(s2, vste, fault_capable)
                    .map_err(iommu_err)?;
                if let Err(e) = self.put_on(i, d) {
                    let _ = iommu.destroy_domain(d);
                    return Err(e);
                }
                if let Mode::GuestTable { domain, .. } = s.mode {
                    let _ = iommu.destroy_domain(domain);
                }
                self.set_mode(
                    i,
                    Mode::GuestTable {
                        fault_capable,
                        cd_max_bits,
                        cd_table_ipa,
                        domain: d,
                    },
                );
                Ok(())
            }
        }
    }

    fn set_mode(&mut self, i: usize, mode: Mode) {
        if let Some(s) = self.streams[i].as_mut() {
            s.mode = mode;
        }
    }

    pub fn bind(
        &mut self,
        vsid: u32,
        guest: u32,
        cd: iapi::CdConfig,
        fault_capable: bool,
    ) -> Result<u32, E> {
        let i = self.stream_idx(vsid)?;
        let Mode::Binds {
            fault_capable: stream_fc,
            cd_max_bits,
        } = self.stream(i).mode
        else {
            // Abort / S2Only have no contexts; a guest-owned CD table holds
            // its own.
            return Err(E::Invalid);
        };
        let host = self.host_pasid(guest).ok_or(E::NotFound)?;
        if (guest as u64) >> cd_max_bits != 0 {
            return Err(E::Invalid);
        }
        // The guest's stage-1 table must be its own RAM (stage 2 would
        // fault anyway; say so now).
        if !self.in_ram(cd.ttb0 & !(PAGE - 1), PAGE) {
            return Err(E::Invalid);
        }
        let existing = self.bind_idx(i, guest);
        let slot = match existing {
            Some(b) => b,
            None => self
                .binds
                .iter()
                .position(|b| b.is_none())
                .ok_or(E::NoSpace)?,
        };
        let users = self
            .iommu()
            .bind(
                iapi::StreamId(self.stream(i).psid),
                host,
                cd,
                fault_capable && stream_fc,
            )
            .map_err(iommu_err)?;
        self.binds[slot] = Some(Bind {
            stream: i as u8,
            guest,
            users,
        });
        Ok(users)
    }

    pub fn unbind(
        &mut self,
        vsid: u32,
        guest: u32,
        uses_stop_marker: bool,
    ) -> Result<iapi::UnbindOutcome, E> {
        let i = self.stream_idx(vsid)?;
        let host = self.host_pasid(guest).ok_or(E::NotFound)?;
        let Some(bi) = self.bind_idx(i, guest) else {
            return Ok(iapi::UnbindOutcome::NotBound);
        };
        let out = self
            .iommu()
            .unbind(
                iapi::StreamId(self.stream(i).psid),
                host.pasid,
                uses_stop_marker,
            )
            .map_err(iommu_err)?;
        match out {
            iapi::UnbindOutcome::StillBound => {
                if let Some(b) = self.binds[bi].as_mut() {
                    b.users = b.users.saturating_sub(1);
                }
            }
            _ => {
                self.binds[bi] = None;
                self.forget_drained(self.stream(i).psid, Some(host.pasid.0));
            }
        }
        Ok(out)
    }

    /// Checks one guest command and rewrites it for iommu-server: the
    /// stream stays virtual (iommu-server translates the VM's vSIDs and
    /// forces its VMID), the SubstreamID becomes the host PASID on a
    /// stream whose contexts `bind` installed (on a guest-owned CD table
    /// it is the guest's own index, checked against its size).
    pub fn check_command(&self, words: [u64; 2]) -> Result<Command, api::InvalidateRefusal> {
        use api::InvalidateRefusal as R;
        let c = Command::from_words(words);
        let kind = c.decode().map_err(|_| R::Opcode)?;
        let ssid_of = |vsid: u32, ssid: u32| -> Result<u32, R> {
            let i = self.stream_idx(vsid).map_err(|_| R::Stream)?;
            if ssid == 0 {
                return Ok(0);
            }
            match self.stream(i).mode {
                Mode::GuestTable { cd_max_bits, .. } => {
                    if (ssid as u64) >> cd_max_bits == 0 {
                        Ok(ssid)
                    } else {
                        Err(R::Pasid)
                    }
                }
                _ => self.host_pasid(ssid).map(|h| h.pasid.0).ok_or(R::Pasid),
            }
        };
        let stream = |vsid: u32| self.stream_idx(vsid).map(|_| ()).map_err(|_| R::Stream);
        let ranged = |out: Command, s: &smmuv3::cmd::TlbiScope| {
            if s.tg == 0 {
                out
            } else {
                out.with_range(s.num, s.scale, s.tg, s.ttl)
            }
        };
        Ok(match kind {
            CommandKind::TlbiNhAll { .. } => Command::tlbi_nh_all(0),
            CommandKind::TlbiNhAsid { asid, .. } => Command::tlbi_nh_asid(0, asid),
            CommandKind::TlbiNhVa { asid, scope, .. } => {
                ranged(Command::tlbi_nh_va(0, asid, scope.addr, scope.leaf), &scope)
            }
            CommandKind::TlbiNhVaa { scope, .. } => {
                ranged(Command::tlbi_nh_vaa(0, scope.addr, scope.leaf), &scope)
            }
            CommandKind::CfgiCd { sid, ssid, leaf } => {
                // SSec names the Secure stream table: never a VM's (and
                // ILLEGAL on a Non-secure queue, IHI 0070 §4.1.6).
                if c.ssec() {
                    return Err(R::Field);
                }
                Command::cfgi_cd(sid, ssid_of(sid, ssid)?, leaf)
            }
            CommandKind::CfgiCdAll { sid } => {
                if c.ssec() {
                    return Err(R::Field);
                }
                stream(sid)?;
                Command::cfgi_cd_all(sid)
            }
            CommandKind::AtcInv {
                sid,
                ssid,
                addr,
                size,
                global,
            } => {
                if !self.caps.is_some_and(|c| c.ats) {
                    return Err(R::Unsupported);
                }
                let ssid = match ssid {
                    Some(s) => Some(ssid_of(sid, s)?),
                    None => {
                        stream(sid)?;
                        None
                    }
                };
                Command::atc_inv(sid, ssid, addr, size, global)
            }
            _ => return Err(R::Opcode),
        })
    }

    pub fn invalidate(
        &mut self,
        cmds: &Leased<Read, api::GuestCmd>,
    ) -> Result<api::GuestInvalidateOutcome, E> {
        let s2 = self.ready()?;
        let n = cmds.len();
        if n == 0 || n > MAX_BATCH {
            return Err(E::Invalid);
        }
        let mut out = [iapi::SmmuCmd { words: [0; 2] }; MAX_BATCH];
        let mut k = 0;
        let mut refusal = api::InvalidateRefusal::None;
        while k < n {
            let w = cmds.read(k).map_err(|_| E::Invalid)?;
            match self.check_command(w.words) {
                Ok(c) => out[k] = iapi::SmmuCmd { words: c.words() },
                Err(r) => {
                    refusal = r;
                    break;
                }
            }
            k += 1;
        }
        if k == 0 {
            return Ok(api::GuestInvalidateOutcome {
                done: 0,
                status: iapi::InvalidateStatus::Rejected,
                refusal,
            });
        }
        let wires: [<iapi::SmmuCmd as idl_runtime::Fixed>::Wire; MAX_BATCH] =
            core::array::from_fn(|j| idl_runtime::Fixed::to_wire(&out[j]));
        let r = self
            .iommu()
            .invalidate(s2, &wires[..k])
            .map_err(iommu_err)?;
        let (status, refusal) = match r.status {
            iapi::InvalidateStatus::Complete if k < n => {
                (iapi::InvalidateStatus::Rejected, refusal)
            }
            iapi::InvalidateStatus::Rejected => (
                iapi::InvalidateStatus::Rejected,
                api::InvalidateRefusal::Server,
            ),
            s => (s, api::InvalidateRefusal::None),
        };
        Ok(api::GuestInvalidateOutcome {
            done: r.done,
            status,
            refusal,
        })
    }

    /// A fault record in guest names, or None when it names nothing of the
    /// guest's (a host PASID it no longer maps).
    pub fn guest_fault(&self, r: &papi::FaultRecord) -> Option<api::GuestFault> {
        let i = self
            .streams
            .iter()
            .position(|s| matches!(s, Some(s) if s.psid == r.sid.0))?;
        let s = self.stream(i);
        let pasid = if r.flags.contains(papi::FaultFlags::PASID_VALID) {
            match s.mode {
                Mode::GuestTable { .. } => r.pasid.0,
                _ => self.guest_pasid(r.pasid.0)?,
            }
        } else {
            0
        };
        Some(api::GuestFault {
            cookie: r.cookie,
            vsid: api::VirtStreamId(s.vsid),
            pasid: api::GuestPasid(pasid),
            kind: r.kind,
            group: r.group,
            addr: r.addr,
            perm: r.perm,
            flags: r.flags,
        })
    }

    pub fn fetch_faults(
        &mut self,
        out: &Leased<Write, api::GuestFault>,
    ) -> Result<papi::FetchOutcome, E> {
        let Some(prq) = self.prq() else {
            return Err(E::Unsupported);
        };
        let free = self.delivered.iter().filter(|c| c.is_none()).count();
        let max = out.len().min(MAX_FETCH).min(free);
        if max == 0 {
            return Ok(papi::FetchOutcome { count: 0, lost: 0 });
        }
        let mut buf = [<papi::FaultRecordWire as zerocopy::FromZeros>::new_zeroed(); MAX_FETCH];
        let o = prq.fetch_faults(&mut buf[..max]).map_err(|_| E::Again)?;
        let mut count = 0;
        let mut refuse: [Option<papi::Cookie>; MAX_FETCH] = [None; MAX_FETCH];
        for w in buf[..(o.count as usize).min(max)].iter() {
            let Some(r) = <papi::FaultRecord as idl_runtime::Fixed>::from_wire(w) else {
                continue;
            };
            match self.guest_fault(&r) {
                Some(g) => {
                    if out.write(count, &g).is_err() {
                        // The guest went away mid-call: its delivered
                        // faults are answered by the death reclaim.
                        self.note_delivered(&r);
                        continue;
                    }
                    count += 1;
                    self.note_delivered(&r);
                }
                None => {
                    if !refuse.contains(&Some(r.cookie)) {
                        if let Some(f) = refuse.iter_mut().find(|c| c.is_none()) {
                            *f = Some(r.cookie);
                        }
                    }
                }
            }
        }
        // Groups of a PASID the guest no longer holds: answered Invalid
        // here, never shown with a host PASID.
        for c in refuse.iter().flatten() {
            let e = idl_runtime::Fixed::to_wire(&papi::ResponseEntry {
                cookie: *c,
                response: papi::FaultResponse::Invalid,
            });
            let _ = prq.respond(&[e]);
        }
        Ok(papi::FetchOutcome {
            count: count as u32,
            lost: o.lost,
        })
    }

    fn note_delivered(&mut self, r: &papi::FaultRecord) {
        if self.is_delivered(r.cookie) {
            return;
        }
        let pasid = if r.flags.contains(papi::FaultFlags::PASID_VALID) {
            r.pasid.0
        } else {
            0
        };
        if let Some(s) = self.delivered.iter_mut().find(|d| d.is_none()) {
            *s = Some(Delivered {
                cookie: r.cookie,
                psid: r.sid.0,
                pasid,
            });
        }
    }

    fn is_delivered(&self, c: papi::Cookie) -> bool {
        self.delivered.iter().flatten().any(|d| d.cookie == c)
    }

    pub fn respond(
        &mut self,
        responses: &Leased<Read, papi::ResponseEntry>,
    ) -> Result<papi::RespondOutcome, E> {
        let Some(prq) = self.prq() else {
            return Err(E::Unsupported);
        };
        let n = responses.len().min(MAX_FETCH);
        let mut wires = [idl_runtime::Fixed::to_wire(&papi::ResponseEntry {
            cookie: papi::Cookie(0),
            response: papi::FaultResponse::Invalid,
        }); MAX_FETCH];
        let mut k = 0;
        let mut stop = papi::RespondStatus::Complete;
        while k < n {
            let r = responses.read(k).map_err(|_| E::Invalid)?;
            if !matches!(
                r.response,
                papi::FaultResponse::Success | papi::FaultResponse::Invalid
            ) {
                stop = papi::RespondStatus::NotAllowed;
                break;
            }
            if !self.is_delivered(r.cookie) {
                stop = papi::RespondStatus::UnknownCookie;
                break;
            }
            wires[k] = idl_runtime::Fixed::to_wire(&r);
            k += 1;
        }
        if k == 0 {
            return Ok(papi::RespondOutcome {
                done: 0,
                status: stop,
            });
        }
        let o = prq.respond(&wires[..k]).map_err(|_| E::Again)?;
        // Answered ones are done; one prq-server no longer knows (revoked
        // by a drain meanwhile: answered Invalid there) is done too.
        let gone = match o.status {
            papi::RespondStatus::UnknownCookie => (o.done as usize + 1).min(k),
            _ => (o.done as usize).min(k),
        };
        for w in &wires[..gone] {
            if let Some(r) = <papi::ResponseEntry as idl_runtime::Fixed>::from_wire(w) {
                self.forget_delivered(r.cookie);
            }
        }
        let status = if o.status == papi::RespondStatus::Complete && k < n {
            stop
        } else {
            o.status
        };
        Ok(papi::RespondOutcome {
            done: o.done,
            status,
        })
    }

    fn forget_delivered(&mut self, c: papi::Cookie) {
        for d in self.delivered.iter_mut() {
            if matches!(d, Some(x) if x.cookie == c) {
                *d = None;
            }
        }
    }

    /// An event in guest names: StreamID → vSID, SubstreamID → guest PASID
    /// (dropped, SSV clear, when it names no guest PASID), and the words
    /// that carry host physical addresses (FetchAddr of F_STE_FETCH,
    /// F_CD_FETCH, F_WALK_EABT, F_VMS_FETCH) cleared. None: not one of
    /// this VM's streams.
    pub fn guest_event(&self, sid: u32, words: [u64; 4]) -> Option<VEvent> {
        let i = self
            .streams
            .iter()
            .position(|s| matches!(s, Some(s) if s.psid == sid))?;
        let s = self.stream(i);
        let mut e = Event::from_words(words);
        e.set_sid(s.vsid);
        if let Some(ssid) = e.substream() {
            let g = match s.mode {
                Mode::GuestTable { .. } => Some(ssid),
                _ => self.guest_pasid(ssid),
            };
            match g {
                Some(g) => {
                    e.set_ssid(g);
                }
                None => {
                    e.set_ssv(false).set_ssid(0);
                }
            }
        }
        let id = e.raw_event_id();
        let mut w = e.words();
        // F_STE_FETCH 0x03, F_CD_FETCH 0x09, F_WALK_EABT 0x0b, F_VMS_FETCH
        // 0x25 carry a physical FetchAddr in word 3; C_BAD_STE 0x04 etc.
        // carry nothing beyond word 1. Translation-class faults keep
        // InputAddr (a guest IOVA) and IPA (a guest address).
        match id {
            0x10..=0x13 => {}
            0x03 | 0x09 | 0x0b | 0x25 => w[3] = 0,
            _ => {
                w[2] = 0;
                w[3] = 0;
            }
        }
        Some(VEvent {
            vsid: s.vsid,
            event_id: id,
            words: w,
        })
    }

    /// Moves events from prq-server into the virtual event queue: when it
    /// is full a new event is dropped and counted LOST (the oldest stay, as
    /// the SMMU's own queue keeps them). Returns whether any event waits.
    pub fn pull_events(&mut self) -> bool {
        let Some(prq) = self.prq() else {
            return self.ev_len > 0;
        };
        for _ in 0..8 {
            let mut buf = [<papi::EventRecordWire as zerocopy::FromZeros>::new_zeroed(); 32];
            let Ok(o) = prq.fetch_events(&mut buf) else {
                break;
            };
            self.ev_lost = self.ev_lost.saturating_add(o.lost);
            for w in buf[..(o.count as usize).min(32)].iter() {
                let Some(r) = <papi::EventRecord as idl_runtime::Fixed>::from_wire(w) else {
                    continue;
                };
                let Some(ev) = self.guest_event(r.sid.0, r.words) else {
                    continue;
                };
                if self.ev_len == self.depth {
                    self.ev_lost = self.ev_lost.saturating_add(1);
                } else {
                    self.events[(self.ev_head + self.ev_len) % self.depth] = ev;
                    self.ev_len += 1;
                }
            }
            if (o.count as usize) < 32 {
                break;
            }
        }
        self.ev_len > 0
    }

    pub fn fetch_events(
        &mut self,
        out: &Leased<Write, api::GuestEvent>,
    ) -> Result<papi::FetchOutcome, E> {
        self.pull_events();
        let max = out.len().min(self.ev_len);
        for k in 0..max {
            let e = self.events[(self.ev_head + k) % self.depth];
            let g = api::GuestEvent {
                vsid: api::VirtStreamId(e.vsid),
                event_id: e.event_id,
                words: e.words,
            };
            if out.write(k, &g).is_err() {
                return Err(E::Invalid);
            }
        }
        self.ev_head = (self.ev_head + max) % self.depth;
        self.ev_len -= max;
        let lost = core::mem::take(&mut self.ev_lost);
        Ok(papi::FetchOutcome {
            count: max as u32,
            lost,
        })
    }

    // ---- server restarts ---------------------------------------------------

    /// After a request failed with `Again`: learns whether a server behind
    /// the frontend restarted (its generation changed) and drops what the
    /// old incarnation held. A restarted iommu-server starts fail-closed
    /// (every STE abort, no domain): the stage-2 domain is made again at
    /// the next request, the streams are at abort, binds and guest-table
    /// domains are gone. A restarted pasid-alloc starts empty and
    /// iommu-server removes every PASID bind when it sees it: the guest
    /// PASIDs and binds are gone. For the guest it is a reset of what that
    /// server held: its next requests get NotFound / a stream at abort.
    pub fn refresh_peers(&mut self) {
        let p = self.peers.0;
        let now = userlib::sys_refresh_task_id(p.iommu);
        if now != p.iommu {
            self.iommu_lost(now);
        }
        if let Some(a) = p.pasids {
            let now = userlib::sys_refresh_task_id(a);
            if now != a {
                self.pasid_alloc_lost(now);
            }
        }
        if let Some(q) = p.prq {
            // prq-server recovers its queues from its journal: cookies
            // stay valid; only its id changes.
            self.peers.0.prq = Some(userlib::sys_refresh_task_id(q));
        }
    }

    /// iommu-server's incarnation the frontend knew is gone; `next` is the
    /// one to talk to.
    fn iommu_lost(&mut self, next: TaskId) {
        trace!(Vmm::IommuRestart, next.0);
        self.peers.0.iommu = next;
        self.s2 = None;
        self.vsids_set = false;
        self.caps = None;
        self.binds = [None; MAX_BINDS];
        for st in self.streams.iter_mut().flatten() {
            st.mode = Mode::Abort;
        }
    }

    /// pasid-alloc's incarnation the frontend knew is gone.
    fn pasid_alloc_lost(&mut self, next: TaskId) {
        self.peers.0.pasids = Some(next);
        self.pasids = [None; MAX_PASIDS];
        self.binds = [None; MAX_BINDS];
    }

    // ---- guest death ------------------------------------------------------

    /// Pulls the supervisor's death log; when the guest died (or the log
    /// overflowed and the guest is not the incarnation known), reclaims.
    pub fn pull_deaths(&mut self) {
        let Some(sup) = self.peers.0.supervisor.map(SupervisorClient::new) else {
            return;
        };
        for _ in 0..64 {
            let Ok(r) = sup.next_death(self.deaths_seen) else {
                return;
            };
            match r.kind {
                DeathKind::None => return,
                DeathKind::Died => {
                    if r.task == self.guest {
                        self.reset_guest();
                    }
                    // A server behind the frontend died: what it held is
                    // gone (see `refresh_peers`); its next incarnation is
                    // the one to talk to.
                    if r.task == self.peers.0.iommu {
                        self.iommu_lost(next_incarnation(r.task));
                    }
                    if Some(r.task) == self.peers.0.pasids {
                        self.pasid_alloc_lost(next_incarnation(r.task));
                    }
                }
                DeathKind::Overflowed => {
                    let now = sup.current_task(self.guest.index() as u16);
                    if now.is_ok_and(|t| t != self.guest) {
                        self.reset_guest();
                    }
                }
            }
            if r.next == self.deaths_seen {
                return;
            }
            self.deaths_seen = r.next;
        }
    }

    /// The guest is gone: its delivered faults are answered Invalid, its
    /// binds unbound (each after its drain), its PASIDs freed (returned to
    /// the pool by pasid-alloc once drained), its streams put to abort and
    /// its event queue emptied. The stage-2 domain and the RAM mapping
    /// stay (they are the VM's, not the guest's). Then the frontend expects
    /// the guest's next incarnation.
    pub fn reset_guest(&mut self) {
        if let Some(prq) = self.prq() {
            for c in self.delivered.iter_mut() {
                if let Some(Delivered { cookie, .. }) = c.take() {
                    let e = idl_runtime::Fixed::to_wire(&papi::ResponseEntry {
                        cookie,
                        response: papi::FaultResponse::Invalid,
                    });
                    // A revoked cookie (drained meanwhile) is UnknownCookie:
                    // it was answered by the drain.
                    let _ = prq.respond(&[e]);
                }
            }
        }
        self.delivered = [None; MAX_DELIVERED];
        for bi in 0..MAX_BINDS {
            let _ = self.unbind_all(bi);
            self.binds[bi] = None;
        }
        if let Some(alloc) = self.alloc() {
            for p in self.pasids.iter().flatten() {
                let _ = alloc.free(p.host);
            }
        }
        self.pasids = [None; MAX_PASIDS];
        for i in 0..MAX_STREAMS {
            if self.streams[i].is_some() {
                let _ = self.detach_stream(i);
                self.set_mode(i, Mode::Abort);
            }
        }
        self.ev_head = 0;
        self.ev_len = 0;
        self.ev_lost = 0;
        // The next incarnation: a request from it no longer resets.
        self.guest = next_incarnation(self.guest);
    }

    /// A request from `caller`, the guest: a newer incarnation than the
    /// one known means the old one died (its death may not have been
    /// pulled yet): reclaim first.
    pub fn check_guest(&mut self, caller: TaskId) -> bool {
        if caller.index() != self.guest.index() {
            return false;
        }
        if caller != self.guest {
            self.pull_deaths();
            if caller != self.guest {
                self.reset_guest();
                self.guest = caller;
            }
        }
        true
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
