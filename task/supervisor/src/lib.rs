//! The supervisor: the only task with the `task-control` capability. It
//! learns from the kernel that a task faulted (notification bit 0), and
//! restarts it with a new generation — at once the first time, then with a
//! doubling hold-off while it keeps faulting soon after each restart, so a
//! task that crashes on start cannot eat the machine.

#![cfg_attr(target_os = "none", no_std)]

use userlib::log;

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
    pub holdoff: u64,
    /// Restart due at this time (held off).
    pub due: Option<u64>,
}

pub struct Policy {
    pub records: [Record; MAX_TASKS],
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            records: [Record::default(); MAX_TASKS],
        }
    }
}

impl Policy {
    /// A fault of task `i` was seen at `now`: when should it restart?
    pub fn on_fault(&mut self, i: usize, now: u64) -> u64 {
        let r = &mut self.records[i];
        if r.due.is_some() {
            return r.due.unwrap_or(now);
        }
        let quick = matches!(r.last_restart, Some(t) if now.saturating_sub(t) < STABLE_MS);
        r.holdoff = if quick {
            (r.holdoff * 2).clamp(MIN_HOLDOFF_MS, MAX_HOLDOFF_MS)
        } else {
            0
        };
        let due = now + r.holdoff;
        r.due = Some(due);
        due
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

/// The supervisor's loop.
pub fn run() -> ! {
    let mut policy = Policy::default();
    loop {
        userlib::sys_recv_notification(FAULT_BIT | TIMER_BIT);
        let now = userlib::sys_get_timer();
        // Note every faulted task (several may have faulted at once).
        let mut i = 0;
        while let Some(f) = userlib::sys_next_faulted(i) {
            if policy.records[f].due.is_none() {
                if let Ok(st) = userlib::sys_task_status(f) {
                    let due = policy.on_fault(f, now);
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
        // Restart whatever is due.
        for f in 0..MAX_TASKS {
            if matches!(policy.records[f].due, Some(d) if d <= now) {
                userlib::sys_task_restart(f);
                policy.restarted(f, now);
            }
        }
        userlib::sys_set_timer(policy.next_due(), TIMER_BIT);
    }
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
}
