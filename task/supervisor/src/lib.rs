//! The supervisor: the only task with the `task-control` capability. It
//! learns from the kernel that a task faulted (notification bit 0), and
//! restarts it with a new generation — at once the first time, then with a
//! doubling hold-off while it keeps faulting soon after each restart, so a
//! task that crashes on start cannot eat the machine.
//!
//! It also keeps the death log (docs/pasids.md "Owner death"): each death
//! (the dead incarnation's `TaskId`) goes into a bounded ring, and the
//! watchers (the tasks its app.toml `posts` name, [`WATCHERS`]) are posted
//! [`DEATH_BIT`]; they pull the log with `next_death`
//! (idl/supervisor.idol.ron). The supervisor is the highest-priority task:
//! it never sends, it only replies, so serving the log never blocks it on a
//! lower-priority task.

#![cfg_attr(target_os = "none", no_std)]

use supervisor_api as api;
use userlib::{log, TaskId};

/// Kernel notification: some task faulted.
pub const FAULT_BIT: u32 = userlib::abi::SUPERVISOR_FAULT_BIT;
/// Our timer: a held-off restart is due.
pub const TIMER_BIT: u32 = 1 << 1;

/// First hold-off after a quick re-fault, and the cap.
pub const MIN_HOLDOFF_MS: u64 = 10;
pub const MAX_HOLDOFF_MS: u64 = 5_000;
/// A fault this long after the restart counts as a fresh fault (hold-off
/// resets).
pub const STABLE_MS: u64 = 1_000;

pub const MAX_TASKS: usize = 64;

/// Restart policy state per task. Pure logic, so the policy is unit tested
/// on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub last_restart: Option<u64>,
    /// Current hold-off in ms (u32: with `retired` the record stays 40
    /// bytes; the supervisor's stack holds 64 of them).
    pub holdoff: u32,
    /// Restart due at this time (held off).
    pub due: Option<u64>,
    /// The kernel refused to restart it (its generations are exhausted):
    /// it stays faulted for good and is neither logged nor retried again.
    pub retired: bool,
}

/// First hold-off after a quick re-fault, and the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holdoff {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Holdoff {
    /// Every real image's policy ([`MIN_HOLDOFF_MS`], [`MAX_HOLDOFF_MS`]).
    pub const IMAGE: Holdoff = Holdoff {
        min_ms: MIN_HOLDOFF_MS,
        max_ms: MAX_HOLDOFF_MS,
    };
}

pub struct Policy {
    pub records: [Record; MAX_TASKS],
    pub holdoff: Holdoff,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::with_holdoff(Holdoff::IMAGE)
    }
}

impl Policy {
    pub fn with_holdoff(holdoff: Holdoff) -> Self {
        Policy {
            records: [Record::default(); MAX_TASKS],
            holdoff,
        }
    }

    /// A fault of task `i` was seen at `now`: when should it restart?
    pub fn on_fault(&mut self, i: usize, now: u64) -> u64 {
        let r = &mut self.records[i];
        if r.due.is_some() {
            return r.due.unwrap_or(now);
        }
        let quick = matches!(r.last_restart, Some(t) if now.saturating_sub(t) < STABLE_MS);
        r.holdoff = if quick {
            (r.holdoff as u64 * 2)
                .clamp(self.holdoff.min_ms, self.holdoff.max_ms)
                .min(u32::MAX as u64) as u32
        } else {
            0
        };
        let due = now + r.holdoff as u64;
        r.due = Some(due);
        due
    }

    /// The kernel refused to restart task `i` (generations exhausted):
    /// nothing is due for it any more.
    pub fn retired(&mut self, i: usize) {
        let r = &mut self.records[i];
        r.due = None;
        r.retired = true;
    }

    /// Task `i` was restarted at `now`.
    pub fn restarted(&mut self, i: usize, now: u64) {
        let r = &mut self.records[i];
        r.last_restart = Some(now);
        r.due = None;
    }

    /// Earliest pending restart, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.records.iter().filter_map(|r| r.due).min()
    }
}

/// Deaths the log holds. A watcher more than this many deaths behind gets
/// `Overflowed` and resyncs.
pub const DEATH_LOG: usize = 16;

/// Tasks told about deaths, by name, if the supervisor may post them (its
/// app.toml `posts`; a name it may not post is simply not a watcher):
/// iommu-server, pci-server (bus mastering off on a dead owner's
/// functions; docs/devices.md), and the VM frontends (each reclaims its
/// guest's state when the guest dies; docs/vmm-frontend.md). The supervisor
/// has no task names, so the frontends it looks for are these names.
pub const WATCHERS: [&str; 8] = [
    "iommu-server",
    "pci-server",
    "vmm-frontend",
    "vmm-frontend-a",
    "vmm-frontend-b",
    "vmm-frontend-c",
    "vmm-frontend-d",
    "vmm-frontend-e",
];

/// The notification bit a watcher is posted when a death was logged (the
/// same bit in every watcher: iommu-server's `server::DEATH_BIT`; its
/// other bits are 0x2, 0x4, 0x8, 0x10 (prq-server) and 0x40 (pasid-alloc)).
pub const DEATH_BIT: u32 = 1 << 7;

/// The bounded death log: sequence numbers `next - len .. next`, the oldest
/// overwritten first. Pure logic, unit tested on the host.
#[derive(Clone, Debug)]
pub struct DeathLog {
    ring: [TaskId; DEATH_LOG],
    /// Sequence number the next death gets.
    next: u32,
}

impl Default for DeathLog {
    fn default() -> Self {
        DeathLog {
            ring: [TaskId(0); DEATH_LOG],
            next: 0,
        }
    }
}

impl DeathLog {
    /// Records that incarnation `task` died.
    pub fn push(&mut self, task: TaskId) {
        self.ring[self.next as usize % DEATH_LOG] = task;
        self.next = self.next.wrapping_add(1);
    }

    /// Oldest sequence number still held.
    pub fn oldest(&self) -> u32 {
        self.next.saturating_sub(DEATH_LOG as u32)
    }

    /// The answer to `next_death(since)`; `me` fills `task` when no death is
    /// named. Invalid for a cursor beyond `next` (never handed out).
    pub fn at(&self, since: u32, me: TaskId) -> Result<api::DeathRecord, api::SupervisorError> {
        let (kind, task, next) = if since > self.next {
            return Err(api::SupervisorError::Invalid);
        } else if since == self.next {
            (api::DeathKind::None, me, self.next)
        } else if since < self.oldest() {
            (api::DeathKind::Overflowed, me, self.oldest())
        } else {
            (
                api::DeathKind::Died,
                self.ring[since as usize % DEATH_LOG],
                since + 1,
            )
        };
        Ok(api::DeathRecord {
            kind,
            seq: since,
            task,
            next,
        })
    }
}

/// The supervisor's state: restart policy, death log, watchers.
pub struct Supervisor {
    pub policy: Policy,
    pub deaths: DeathLog,
    watchers: [Option<TaskId>; WATCHERS.len()],
    /// Every name of `WATCHERS` was looked up.
    all_watchers: bool,
    me: TaskId,
}

impl Supervisor {
    fn new(holdoff: Holdoff) -> Self {
        // iommu-server at boot; the frontends on first need (a death to
        // post, or a call from one): a boot without them costs no lookups,
        // so the schedules of apps without VMs stay as they were.
        let mut watchers = [None; WATCHERS.len()];
        watchers[0] = userlib::sys_lookup_slot(WATCHERS[0]);
        Supervisor {
            policy: Policy::with_holdoff(holdoff),
            deaths: DeathLog::default(),
            watchers,
            all_watchers: false,
            me: TaskId::new(0, userlib::Generation(0)),
        }
    }

    /// Looks up the watchers not looked up at boot (once).
    fn look_up_watchers(&mut self) {
        if self.all_watchers {
            return;
        }
        for (w, name) in self.watchers.iter_mut().zip(WATCHERS).skip(1) {
            *w = userlib::sys_lookup_slot(name);
        }
        self.all_watchers = true;
    }

    fn is_watcher(&self, caller: TaskId) -> bool {
        self.watchers
            .iter()
            .flatten()
            .any(|w| w.index() == caller.index())
    }

    /// Posts every watcher (post only: never blocks). A watcher that died
    /// meanwhile is posted under its new id.
    fn post_watchers(&mut self) {
        self.look_up_watchers();
        for w in self.watchers.iter_mut().flatten() {
            if userlib::abi::is_dead_code(userlib::sys_post(*w, DEATH_BIT)).is_some() {
                *w = userlib::sys_refresh_task_id(*w);
                userlib::sys_post(*w, DEATH_BIT);
            }
        }
    }

    /// Faults and due restarts.
    fn on_notification(&mut self) {
        let now = userlib::sys_get_timer();
        // Note every faulted task (several may have faulted at once).
        let mut i = 0;
        let mut died = false;
        while let Some(f) = userlib::sys_next_faulted(i) {
            let r = self.policy.records[f];
            if r.due.is_none() && !r.retired {
                if let Ok(st) = userlib::sys_task_status(f) {
                    let due = self.policy.on_fault(f, now);
                    self.deaths.push(TaskId::new(f, st.generation));
                    died = true;
                    log!(
                        "task {} (generation {}) faulted: {:?} {:#x}; restart in {} ms",
                        f,
                        st.generation.0,
                        st.fault,
                        st.detail,
                        due - now
                    );
                }
            }
            i = f + 1;
        }
        if died {
            self.post_watchers();
        }
        // Restart whatever is due.
        for f in 0..MAX_TASKS {
            if matches!(self.policy.records[f].due, Some(d) if d <= now) {
                match userlib::sys_task_restart(f) {
                    Ok(()) => self.policy.restarted(f, now),
                    Err(why) => {
                        // Generations exhausted: restarting it again would
                        // reuse a TaskId, so it stays faulted (docs/kernel.md,
                        // "Generations"). Its death was logged when it faulted.
                        self.policy.retired(f);
                        log!("task {} not restarted: {:?}; it stays faulted", f, why);
                    }
                }
            }
        }
        userlib::sys_set_timer(self.policy.next_due(), TIMER_BIT);
    }
}

impl api::SupervisorServer for Supervisor {
    fn notification_mask(&self) -> u32 {
        FAULT_BIT | TIMER_BIT
    }

    fn handle_notification(&mut self, _bits: u32) {
        self.on_notification();
    }

    fn check_caller(&mut self, caller: TaskId, allowed: &'static [api::SupervisorCaller]) -> bool {
        if !self.is_watcher(caller) {
            self.look_up_watchers();
        }
        allowed.iter().any(|a| match a {
            // Every watcher may pull the log (each keeps its own cursor).
            api::SupervisorCaller::IommuServer
            | api::SupervisorCaller::PciServer
            | api::SupervisorCaller::VmmFrontend => self.is_watcher(caller),
        })
    }

    fn next_death(
        &mut self,
        _caller: TaskId,
        since: u32,
    ) -> Result<api::DeathRecord, api::SupervisorError> {
        self.deaths.at(since, self.me)
    }

    fn current_task(
        &mut self,
        _caller: TaskId,
        index: u16,
    ) -> Result<TaskId, api::SupervisorError> {
        let i = index as usize;
        match userlib::sys_task_status(i) {
            Ok(st) if i < MAX_TASKS => Ok(TaskId::new(i, oldest_alive(st))),
            _ => Err(api::SupervisorError::Invalid),
        }
    }
}

/// The oldest generation of a task that may still be alive (the answer of
/// `current_task`): its generation while it runs; the next one while it is
/// faulted (dead, its restart pending or refused). Every incarnation below
/// the answer is dead — what a watcher's resync after `Overflowed` needs,
/// including a death whose log entry it lost while the task is not yet
/// restarted. Generations never wrap, so "below" is exact; after the last
/// generation the answer is the all-ones one no incarnation ever has.
pub fn oldest_alive(st: userlib::TaskStatus) -> userlib::Generation {
    if st.state == userlib::abi::TaskStateCode::Faulted as u32 {
        userlib::Generation(st.generation.0 + 1)
    } else {
        st.generation
    }
}

/// The supervisor's loop: notifications (faults, the restart timer) and
/// `next_death` calls, which it only replies to.
pub fn run() -> ! {
    run_with(Holdoff::IMAGE)
}

/// [`run`] with another restart hold-off. Only tests use it: the
/// generations image (qemu/apps/generations.toml) restarts a task 130 times
/// and cannot wait out the real hold-off; the harness's death-log overflow
/// keeps iommu-server down with a long one.
pub fn run_with(holdoff: Holdoff) -> ! {
    let mut s = Supervisor::new(holdoff);
    api::run_server(&mut s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_first_fault_restarts_at_once() {
        let mut p = Policy::default();
        assert_eq!(p.on_fault(3, 100), 100);
        p.restarted(3, 100);
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn supervisor_quick_refaults_back_off_and_cap() {
        let mut p = Policy::default();
        let mut now = 0;
        let mut holdoffs = Vec::new();
        for _ in 0..12 {
            let due = p.on_fault(1, now);
            holdoffs.push(due - now);
            p.restarted(1, due);
            now = due + 1;
        }
        assert_eq!(&holdoffs[..4], &[0, 10, 20, 40]);
        assert_eq!(*holdoffs.last().unwrap(), MAX_HOLDOFF_MS);
        // After running stably, a fault restarts at once again.
        now += STABLE_MS;
        assert_eq!(p.on_fault(1, now), now);
    }

    /// A task the kernel refused to restart (generations exhausted) is
    /// retired: nothing is due for it, and a later notification does not
    /// log its death again (`on_notification` skips retired records).
    #[test]
    fn supervisor_retired_task_is_not_restarted_again() {
        let mut p = Policy::default();
        let due = p.on_fault(7, 100);
        assert_eq!(p.next_due(), Some(due));
        p.retired(7);
        assert_eq!(p.next_due(), None);
        assert!(p.records[7].retired);
        assert_eq!(p.records[7].due, None);
    }

    fn t(i: usize, g: u32) -> TaskId {
        TaskId::new(i, userlib::Generation(g))
    }

    #[test]
    fn supervisor_death_log_in_order_then_none() {
        let me = t(0, 0);
        let mut l = DeathLog::default();
        assert_eq!(l.at(0, me).unwrap().kind, api::DeathKind::None);
        l.push(t(4, 0));
        l.push(t(5, 2));
        let a = l.at(0, me).unwrap();
        assert_eq!((a.kind, a.task, a.next), (api::DeathKind::Died, t(4, 0), 1));
        let b = l.at(1, me).unwrap();
        assert_eq!((b.kind, b.task, b.next), (api::DeathKind::Died, t(5, 2), 2));
        let c = l.at(2, me).unwrap();
        assert_eq!((c.kind, c.next), (api::DeathKind::None, 2));
        assert_eq!(l.at(3, me), Err(api::SupervisorError::Invalid));
    }

    #[test]
    fn supervisor_death_log_overflow_forces_resync() {
        let me = t(0, 0);
        let mut l = DeathLog::default();
        for k in 0..(DEATH_LOG as u32 + 3) {
            l.push(t(3, k));
        }
        let o = l.at(0, me).unwrap();
        assert_eq!((o.kind, o.next), (api::DeathKind::Overflowed, 3));
        let d = l.at(3, me).unwrap();
        assert_eq!((d.kind, d.task, d.next), (api::DeathKind::Died, t(3, 3), 4));
        let last = l.at(DEATH_LOG as u32 + 2, me).unwrap();
        assert_eq!(last.task, t(3, DEATH_LOG as u32 + 2));
    }
}
