//! Owner death: reclaiming a dead VM's objects when the supervisor says so
//! (docs/pasids.md "Owner death").
//!
//! The supervisor ranks above every server and never sends. When a task
//! faults it logs the dead incarnation (`TaskId`: index and generation) in a
//! bounded log and posts this server [`DEATH_BIT`] (app.toml: the
//! supervisor `posts` iommu-server). The server pulls the log with
//! `next_death` (idl/supervisor.idol.ron; the supervisor only replies, so
//! this never waits on a lower-priority task) and for each death:
//!
//! 1. runs [`IommuServer::reclaim_dead`] — generation-exact: its streams go
//!    abort (never bypass), every bind is unbound with prq-server's drain
//!    (each group answered INVALID once), its domains are destroyed; objects
//!    of the VM's next incarnation are not touched;
//! 2. then tells pasid-alloc (`owner_died`): the dead incarnation's PASIDs
//!    become defunct, pasid-alloc posts the defunct bit and the defunct
//!    drain (`defunct.rs`) calls `mark_drained` for them. Their binds were
//!    already drained in step 1, so no PASID reaches the pool while bound
//!    (and Defunct → Free only ever happens through `mark_drained`, which
//!    only this server calls after its own unbind + drain).
//!
//! Overflow: when the cursor is older than the log holds, the answer is
//! `Overflowed`; the server then resyncs and continues from the log's
//! oldest entry. The supervisor's `current_task(index)` names the oldest
//! incarnation of a task that may still be alive (every lower generation is
//! dead; the kernel's `refresh_task_id` would fault this server for a task
//! outside its slots). The resync
//! 1. reclaims every domain owner below that, as for a logged death;
//! 2. tells pasid-alloc, for every VM task, that every incarnation below it
//!    died (`owner_died` of the generation just below covers all older
//!    ones: generations never wrap). This reaches the PASIDs of a dead VM
//!    that held no domain, which step 1 cannot find.
//!
//! A restarted iommu-server starts at cursor 0: old deaths replay
//! harmlessly (a fresh server holds nothing of them; `owner_died` of a dead
//! incarnation is idempotent).

use super::*;
use supervisor_api::{DeathKind, SupervisorClient};

/// The supervisor's notification: a death was logged. The supervisor posts
/// the same bit (`supervisor::DEATH_BIT`).
pub const DEATH_BIT: u32 = 1 << 7;

/// Log entries handled per pull: bounds the time one pull holds the
/// server. The cursor keeps the rest; the caller pulls again while `more`.
pub const DEATHS_PER_PULL: usize = 16;

/// What one pull did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeathPull {
    /// Deaths (log entries) handled.
    pub deaths: u32,
    /// Whether the log had overflowed (a resync ran).
    pub resynced: bool,
    /// Totals of the reclaims run.
    pub reclaimed: Reclaimed,
    /// PASIDs pasid-alloc made defunct.
    pub pasids: u32,
    /// Whether deaths remain in the log (stopped at [`DEATHS_PER_PULL`]).
    pub more: bool,
}

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// Distinct owners of domains whose incarnation is no longer current
    /// (`current` maps an id to the kernel's current id of that task).
    /// Fills `out`, returns how many.
    pub fn stale_owners(
        &self,
        current: impl Fn(TaskId) -> TaskId,
        out: &mut [TaskId; MAX_DOMAINS],
    ) -> usize {
        let mut n = 0;
        for i in 0..MAX_DOMAINS {
            let Some(d) = self.dom(i) else { continue };
            let dead = current(d.owner).generation() > d.owner.generation();
            if dead && !out[..n].contains(&d.owner) {
                out[n] = d.owner;
                n += 1;
            }
        }
        n
    }

    /// The PASID half of the resync: for every VM task, pasid-alloc learns
    /// that every incarnation below the oldest one that may be alive died
    /// (`owner_died` of the generation just below; pasid-alloc takes it
    /// for all older ones too). Their binds were reclaimed first (the
    /// domain owners in `pull_deaths`), and a bind needs a domain, so
    /// nothing of theirs is still bound. Returns the PASIDs made defunct.
    fn resync_pasids(
        &self,
        alloc: &pasid_alloc_api::PasidAllocClient,
        current: &impl Fn(TaskId) -> TaskId,
    ) -> u32 {
        let mut n = 0;
        for i in 0..MAX_TASKS {
            let first = TaskId::new(i, userlib::Generation(0));
            if !self.is_vm(first) {
                continue;
            }
            let g = current(first).generation().0;
            if g == 0 {
                continue;
            }
            // Failure (pasid-alloc restarting): the restarted one has
            // forgotten every PASID anyway.
            if let Ok(k) = alloc.owner_died(first.with_generation(userlib::Generation(g - 1))) {
                n += k;
            }
        }
        n
    }

    /// Reclaims `vm` and tells pasid-alloc, in that order (see the module
    /// doc).
    fn reclaim_death(
        &mut self,
        vm: TaskId,
        pasids: Option<&pasid_alloc_api::PasidAllocClient>,
        p: &mut DeathPull,
    ) {
        trace!(Iommu::DeathSeen, vm.0);
        let r = self.reclaim_dead(vm);
        p.reclaimed.streams += r.streams;
        p.reclaimed.binds += r.binds;
        p.reclaimed.domains += r.domains;
        if let Some(a) = pasids {
            // Failure (pasid-alloc restarting) leaves its PASIDs allocated to
            // a dead incarnation: a restarted pasid-alloc has forgotten them
            // anyway (`pasid_alloc_seen`).
            if let Ok(k) = a.owner_died(vm) {
                p.pasids += k;
            }
        }
    }

    /// Pulls the supervisor's death log from the cursor and reclaims each
    /// death. `current` is the kernel's current id of a task (for the
    /// resync after an overflow).
    pub fn pull_deaths(
        &mut self,
        sup: &SupervisorClient,
        pasids: Option<&pasid_alloc_api::PasidAllocClient>,
        current: impl Fn(TaskId) -> TaskId,
    ) -> DeathPull {
        let mut p = DeathPull::default();
        for _ in 0..DEATHS_PER_PULL {
            let Ok(rec) = sup.next_death(self.death_cursor) else {
                // Invalid (a cursor from a previous supervisor: it never
                // restarts, a fault of it stops the machine) or a dead
                // supervisor: start over from the beginning, resyncing.
                self.death_cursor = 0;
                return p;
            };
            match rec.kind {
                DeathKind::None => return p,
                DeathKind::Died => {
                    self.reclaim_death(rec.task, pasids, &mut p);
                    p.deaths += 1;
                }
                DeathKind::Overflowed => {
                    p.resynced = true;
                    let mut stale = [TaskId(0); MAX_DOMAINS];
                    let n = self.stale_owners(&current, &mut stale);
                    for &vm in &stale[..n] {
                        self.reclaim_death(vm, pasids, &mut p);
                    }
                    if let Some(a) = pasids {
                        p.pasids += self.resync_pasids(a, &current);
                    }
                }
            }
            self.death_cursor = rec.next;
        }
        p.more = true;
        p
    }
}
