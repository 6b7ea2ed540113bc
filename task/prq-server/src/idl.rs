//! The interface (`idl/prq-server.idol.ron`, crate `prq-server-api`) on
//! [`Prq`], and the receive loop [`serve`], which `main.rs` calls and the
//! host harness calls unchanged.
//!
//! Who may call what is checked by role: iommu-server and the supervisor
//! are found by name in the app's task names; a VM (vmm-frontend) is a
//! task that owns a stream in the static map or is named `vmm-frontend…`.
//! Ownership of cookies is checked against the sender id (generation
//! included): a restarted VM holds none of its predecessor's cookies.
//!
//! Notifications: prq-server ranks above its callers and sends only to
//! the supervisor (which ranks above everyone and only replies); it posts
//! `owner_bit` to a VM whose fault or event queue became non-empty and
//! `iommu_bit` to iommu-server when responses are queued.
//!
//! Owner death is pushed (docs/faults.md "Owner death"): the supervisor
//! logs every death and posts `death_bit` to its watchers (app.toml: the
//! supervisor `posts` prq-server); prq-server then pulls the log with
//! `next_death` and runs [`Prq::owner_died`] for each dead incarnation.
//! Nothing about deaths runs per fault: a notification or call without
//! `death_bit` costs no system call for it, whatever the number of owners.
//! - Log overflow (`Overflowed`: more than the supervisor's 16 deaths since
//!   the cursor): one walk over what prq-server holds, asking the
//!   supervisor's `current_task` for each owner (a lower generation is
//!   dead), then on from the log's oldest entry.
//! - A restarted prq-server (its journal kept routes) starts its cursor at
//!   0 and pulls once before serving: old deaths replay (`owner_died` of a
//!   dead incarnation is generation-exact and idempotent), or the log
//!   overflowed and the walk runs, once.
//! - A fault of an owner that died before its death is pulled: the group
//!   is queued and the owner's name posted, which reaches the task's
//!   current incarnation (a post names the id `sys_lookup_slot` gives, so
//!   never a stale one): the faulted incarnation itself (the kernel clears
//!   a task's notifications when it restarts it) or the restarted one,
//!   whose `fetch_faults` answers the old incarnation's groups INVALID and
//!   shows it none. The death, pulled next, answers the rest.

use crate::mem::QueueMemory;
use crate::prq::{FaultOut, Key, Prq, Resp, RespondStop, ResponseOut};
use idl_runtime::{Leased, Read, Write};
use prq_server_api as api;
use smmuv3::Mmio;
use supervisor_api::{DeathKind, SupervisorClient};
use userlib::TaskId;

/// Lease sizes the server works with (the interface's maxima).
pub const MAX_LEASE: usize = 64;
pub const MAX_EVENTS: usize = 32;
/// Death-log entries handled per pull: bounds the time one pull holds the
/// server (the supervisor's log holds 16); the cursor keeps the rest and
/// the notification handler pulls again.
pub const DEATHS_PER_PULL: usize = 16;

/// Static facts the task is given (app.toml / the harness).
#[derive(Clone, Copy, Debug)]
pub struct Roles<'a> {
    pub task_names: &'a [&'a str],
    pub streams: &'a [(u32, u16)],
    /// Notification bits of the PRIQ and EVTQ interrupts (this task's).
    pub priq_bit: u32,
    pub evtq_bit: u32,
    /// Posted to a VM with new faults or events.
    pub owner_bit: u32,
    /// Posted to iommu-server when responses wait (`take_responses`).
    pub iommu_bit: u32,
    /// Posted by the supervisor when it logged a death
    /// (`supervisor::DEATH_BIT`); 0 when this task is no death watcher.
    pub death_bit: u32,
}

/// The generated trait over the server state.
pub struct IdlPrq<'a, 'r, M: Mmio, Q: QueueMemory> {
    pub prq: &'a mut Prq<M, Q>,
    pub roles: Roles<'r>,
    /// The supervisor (the death log), when this task has its slot.
    pub supervisor: Option<TaskId>,
    /// The first death-log sequence number not handled yet.
    pub death_cursor: u32,
}

impl<M: Mmio, Q: QueueMemory> IdlPrq<'_, '_, M, Q> {
    fn index_of(&self, name: &str) -> Option<usize> {
        self.roles.task_names.iter().position(|n| *n == name)
    }

    fn is_vm(&self, t: TaskId) -> bool {
        self.roles
            .streams
            .iter()
            .any(|&(_, v)| v as usize == t.index())
            || self
                .roles
                .task_names
                .get(t.index())
                .is_some_and(|n| n.starts_with("vmm-frontend"))
    }

    /// Posts what the last operation owes: faults/events to owners,
    /// responses to iommu-server (the slot lookup names the current
    /// incarnation).
    fn notify(&mut self) {
        let (owners, iommu) = self.prq.take_notifications();
        for t in 0..64 {
            if owners & (1 << t) != 0 {
                if let Some(name) = self.roles.task_names.get(t) {
                    post(name, self.roles.owner_bit);
                }
            }
        }
        if iommu {
            post("iommu-server", self.roles.iommu_bit);
        }
    }
}

impl<M: Mmio, Q: QueueMemory> IdlPrq<'_, '_, M, Q> {
    /// Handles the death log from the cursor, at most [`DEATHS_PER_PULL`]
    /// entries: each dead incarnation is `owner_died`; an overflow runs
    /// [`IdlPrq::resync`]. Returns whether entries remain.
    fn pull_deaths(&mut self) -> bool {
        let Some(sup) = self.supervisor.map(SupervisorClient::new) else {
            return false;
        };
        for _ in 0..DEATHS_PER_PULL {
            let Ok(rec) = sup.next_death(self.death_cursor) else {
                // Invalid (a cursor the log never handed out) or no
                // answer: start over; the next pull replays or resyncs.
                self.death_cursor = 0;
                return false;
            };
            match rec.kind {
                DeathKind::None => return false,
                DeathKind::Died => self.owner_gone(rec.task),
                DeathKind::Overflowed => self.resync(&sup),
            }
            self.death_cursor = rec.next;
        }
        true
    }

    /// Every death since the cursor (the notification handler, a start).
    fn pull_all_deaths(&mut self) {
        while self.pull_deaths() {}
    }

    /// Death-log overflow: deaths were lost, so every owner prq-server
    /// holds something for is checked once with the supervisor's
    /// `current_task` (the oldest incarnation that may be alive; every
    /// lower generation is dead, including a task faulted and not yet
    /// restarted). Runs only on an overflow, never per fault.
    fn resync(&mut self, sup: &SupervisorClient) {
        let mut ids = [TaskId(0); crate::prq::MAX_ROUTES];
        let n = self.prq.owner_ids(&mut ids);
        for &id in &ids[..n] {
            if id.index() >= self.roles.task_names.len() {
                continue;
            }
            if let Ok(now) = sup.current_task(id.index() as u16) {
                if now.generation() > id.generation() {
                    self.owner_gone(id);
                }
            }
        }
    }

    /// `vm` (this incarnation) died: its groups answered, its routes gone.
    fn owner_gone(&mut self, vm: TaskId) {
        let k = self.prq.owner_died(vm);
        if k > 0 {
            userlib::log!(
                "prq-server: owner {} (generation {}) died: {} groups answered",
                // All as u32: one integer formatter in the image.
                vm.index() as u32,
                vm.generation().0,
                k as u32
            );
        }
    }
}

/// Posts `bits` to `name` when it is in this task's slots (the kernel
/// faults a post outside them). A task prq-server may not post to learns
/// of its faults, events and responses by calling (polling) instead.
fn post(name: &str, bits: u32) {
    if let Some(id) = userlib::sys_lookup_slot(name) {
        userlib::sys_post(id, bits);
    }
}

fn resp_out(r: &ResponseOut) -> api::ResponseCmd {
    api::ResponseCmd {
        sid: iommu_server_api::StreamId(r.key.sid),
        pasid: pasid_alloc_api::Pasid(r.key.ssid.unwrap_or(0)),
        pasid_valid: r.key.ssid.is_some(),
        kind: if r.key.stall {
            api::FaultKind::Stall
        } else {
            api::FaultKind::PageRequest
        },
        group: r.key.tag,
        response: match r.resp {
            Resp::Success => api::FaultResponse::Success,
            Resp::Invalid => api::FaultResponse::Invalid,
            Resp::Failure => api::FaultResponse::Failure,
        },
    }
}

fn fault_record(f: &FaultOut) -> api::FaultRecord {
    let k: Key = f.key;
    let mut flags = api::FaultFlags::empty();
    if k.ssid.is_some() {
        flags = flags | api::FaultFlags::PASID_VALID;
    }
    if f.last {
        flags = flags | api::FaultFlags::LAST_PAGE;
    }
    api::FaultRecord {
        cookie: api::Cookie(f.cookie),
        sid: iommu_server_api::StreamId(k.sid),
        pasid: pasid_alloc_api::Pasid(k.ssid.unwrap_or(0)),
        kind: if k.stall {
            api::FaultKind::Stall
        } else {
            api::FaultKind::PageRequest
        },
        group: k.tag,
        addr: f.page.addr,
        perm: api::FaultPerm::from_bits(f.page.perm).unwrap_or(api::FaultPerm::empty()),
        flags,
    }
}

impl<M: Mmio, Q: QueueMemory> api::PrqServer for IdlPrq<'_, '_, M, Q> {
    fn notification_mask(&self) -> u32 {
        let death = if self.supervisor.is_some() {
            self.roles.death_bit
        } else {
            0
        };
        self.roles.priq_bit | self.roles.evtq_bit | death
    }

    fn handle_notification(&mut self, bits: u32) {
        // Deaths first: a group read below finds the dead owner's routes
        // gone (answered at once, nothing posted to it).
        if bits & self.roles.death_bit != 0 {
            self.pull_all_deaths();
        }
        self.prq.intake();
        let mine = bits & (self.roles.priq_bit | self.roles.evtq_bit);
        if mine != 0 {
            userlib::sys_irq_control(mine, true);
        }
        self.notify();
    }

    fn check_caller(&mut self, caller: TaskId, allowed: &'static [api::PrqCaller]) -> bool {
        allowed.iter().any(|a| match a {
            api::PrqCaller::VmmFrontend => self.is_vm(caller),
            api::PrqCaller::IommuServer => self.index_of("iommu-server") == Some(caller.index()),
            api::PrqCaller::Supervisor => self.index_of("supervisor") == Some(caller.index()),
        })
    }

    fn fetch_faults(
        &mut self,
        caller: TaskId,
        out: Leased<Write, api::FaultRecord>,
    ) -> Result<api::FetchOutcome, api::PrqError> {
        let mut buf = [FaultOut {
            cookie: 0,
            key: Key::default(),
            page: Default::default(),
            last: false,
        }; MAX_LEASE];
        let max = out.len().min(MAX_LEASE);
        let (n, lost) = self.prq.fetch_faults(caller, &mut buf[..max]);
        let mut r = Ok(api::FetchOutcome {
            count: n as u32,
            lost,
        });
        for (i, f) in buf[..n].iter().enumerate() {
            // The lease was checked against its length; failing here means
            // the client went away: its groups stay delivered, answered
            // when its death is reported.
            if out.write(i, &fault_record(f)).is_err() {
                r = Err(api::PrqError::Invalid);
                break;
            }
        }
        self.notify();
        r
    }

    fn respond(
        &mut self,
        caller: TaskId,
        responses: Leased<Read, api::ResponseEntry>,
    ) -> Result<api::RespondOutcome, api::PrqError> {
        let mut buf = [(0u64, Resp::Invalid); MAX_LEASE];
        let n = responses.len().min(MAX_LEASE);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let e = responses.read(i).map_err(|_| api::PrqError::Invalid)?;
            *b = (
                e.cookie.0,
                match e.response {
                    api::FaultResponse::Success => Resp::Success,
                    api::FaultResponse::Invalid => Resp::Invalid,
                    api::FaultResponse::Failure => Resp::Failure,
                },
            );
        }
        let (done, stop) = self.prq.respond(caller, &buf[..n]);
        self.notify();
        Ok(api::RespondOutcome {
            done,
            status: match stop {
                RespondStop::Complete => api::RespondStatus::Complete,
                RespondStop::UnknownCookie => api::RespondStatus::UnknownCookie,
                RespondStop::NotAllowed => api::RespondStatus::NotAllowed,
            },
        })
    }

    fn fetch_events(
        &mut self,
        caller: TaskId,
        out: Leased<Write, api::EventRecord>,
    ) -> Result<api::FetchOutcome, api::PrqError> {
        let mut buf = [crate::prq::EventRec::default(); MAX_EVENTS];
        let max = out.len().min(MAX_EVENTS);
        let (n, lost) = self.prq.fetch_events(caller, &mut buf[..max]);
        for (i, e) in buf[..n].iter().enumerate() {
            let rec = api::EventRecord {
                sid: iommu_server_api::StreamId(e.sid),
                event_id: e.event_id,
                words: e.words,
            };
            if out.write(i, &rec).is_err() {
                return Err(api::PrqError::Invalid);
            }
        }
        self.notify();
        Ok(api::FetchOutcome {
            count: n as u32,
            lost,
        })
    }

    fn set_route(
        &mut self,
        _caller: TaskId,
        att: api::Attachment,
        owner: TaskId,
        fault_capable: bool,
    ) -> Result<(), api::PrqError> {
        if fault_capable && !self.is_vm(owner) {
            return Err(api::PrqError::Invalid);
        }
        let r = self
            .prq
            .set_route(att.sid.0, att.pasid.0, owner, fault_capable)
            .map_err(|_| api::PrqError::Again);
        self.notify();
        r
    }

    fn drain(
        &mut self,
        _caller: TaskId,
        att: api::Attachment,
        uses_stop_marker: bool,
        issued: u32,
        out: Leased<Write, api::ResponseCmd>,
    ) -> Result<api::DrainOutcome, api::PrqError> {
        let mut buf = [ResponseOut {
            key: Key::default(),
            resp: Resp::Invalid,
        }; MAX_LEASE];
        let max = out.len().min(MAX_LEASE);
        let (n, revoked, complete, seq) = self.prq.drain(
            att.sid.0,
            att.pasid.0,
            uses_stop_marker,
            issued,
            &mut buf[..max],
        );
        for (i, r) in buf[..n].iter().enumerate() {
            if out.write(i, &resp_out(r)).is_err() {
                return Err(api::PrqError::Invalid);
            }
        }
        self.notify();
        Ok(api::DrainOutcome {
            responses: n as u32,
            revoked,
            complete,
            seq,
        })
    }

    fn take_responses(
        &mut self,
        _caller: TaskId,
        issued: u32,
        out: Leased<Write, api::ResponseCmd>,
    ) -> Result<api::TakeOutcome, api::PrqError> {
        let mut buf = [ResponseOut {
            key: Key::default(),
            resp: Resp::Invalid,
        }; MAX_LEASE];
        let max = out.len().min(MAX_LEASE);
        let (n, more, seq) = self.prq.take_responses(issued, &mut buf[..max]);
        for (i, r) in buf[..n].iter().enumerate() {
            // A failed write: iommu-server's lease went away (it died);
            // the hand-over stays unacknowledged and is handed out again.
            if out.write(i, &resp_out(r)).is_err() {
                return Err(api::PrqError::Invalid);
            }
        }
        self.notify();
        Ok(api::TakeOutcome {
            count: n as u32,
            more,
            seq,
        })
    }

    fn event_records_lost(&mut self, _caller: TaskId, aborts: u32) -> Result<(), api::PrqError> {
        // Only iommu-server may call (the generated caller check); any
        // count means "at least one abort": records were lost.
        self.prq.event_records_lost(aborts);
        self.notify();
        Ok(())
    }

    fn owner_died(&mut self, _caller: TaskId, vm: TaskId) -> Result<u32, api::PrqError> {
        let n = self.prq.owner_died(vm);
        self.notify();
        Ok(n)
    }

    fn queue_layout(&mut self, _caller: TaskId) -> Result<api::QueueLayout, api::PrqError> {
        let (e, p) = self.prq.layout();
        Ok(api::QueueLayout {
            eventq_base: e,
            priq_base: p,
        })
    }

    fn stats(&mut self, _caller: TaskId) -> Result<api::PrqStats, api::PrqError> {
        let s = self.prq.stats();
        Ok(api::PrqStats {
            partial_groups: s.partial_groups,
            queued_groups: s.queued_groups,
            delivered_groups: s.delivered_groups,
            queued_responses: s.queued_responses,
            hw_overflows: s.hw_overflows,
            stop_markers: s.stop_markers,
        })
    }
}

/// The task's receive loop: enables the queue interrupts, reads what is
/// already queued (a restarted incarnation), then serves forever.
pub fn serve<M: Mmio, Q: QueueMemory>(prq: &mut Prq<M, Q>, roles: Roles<'_>) -> ! {
    let bits = roles.priq_bit | roles.evtq_bit;
    if bits != 0 {
        userlib::sys_irq_control(bits, true);
    }
    // The death log's reader: the supervisor, when the app gives its slot
    // (the supervisor `posts` this task `death_bit`).
    let supervisor = if roles.death_bit != 0 {
        userlib::sys_lookup_slot("supervisor")
    } else {
        None
    };
    let recovered = prq.incarnation > 1;
    let mut s = IdlPrq {
        prq,
        roles,
        supervisor,
        death_cursor: 0,
    };
    if recovered {
        // A restarted incarnation: deaths posted while it was down were
        // lost with its notifications, and its journal kept the routes.
        // One pull from the log's start: old deaths replay harmlessly, or
        // the log overflowed and `resync` checks every owner, once.
        s.pull_all_deaths();
    }
    s.prq.intake();
    s.notify();
    api::run_server(&mut s)
}
