//! Between steps: injected and floating actions, devices and time, and the
//! choice of the next task — every open decision goes through the run's
//! choice source (`crate::rng::Chooser`).

use super::state::State;
use crate::rng::ChoiceKind;
use crate::trace::What;
use crate::Outcome;
use kern::task::TaskState;

/// Most idle-loop iterations (time jumps, deliveries) without any task
/// becoming runnable before the run counts as stuck.
const MAX_IDLE_SPINS: u32 = 10_000;

impl State {
    /// Everything between one kernel entry and the next task running:
    /// queue restarted incarnations, injected actions, devices, time, and the
    /// choice of the next task.
    pub(super) fn after_step(&mut self) {
        self.spawn_resets();
        while self
            .actions
            .front()
            .is_some_and(|(at, _)| *at <= self.plat.step)
        {
            if self.plat.finished {
                return;
            }
            if let Some((_, a)) = self.actions.pop_front() {
                self.apply(a);
                self.spawn_resets();
            }
        }
        // Floating actions: the step at which each happens inside its
        // window is a choice (0: not yet); at its last step it happens.
        let mut k = 0;
        while k < self.floating.len() {
            let (from, until, _) = self.floating[k];
            let step = self.plat.step;
            let now = step >= until
                || (step >= from
                    && self.chooser.pick(ChoiceKind::Inject, 2, true, |r| {
                        (r.below(until - step + 1) == 0) as u32
                    }) == 1);
            if now && !self.plat.finished {
                let (_, _, a) = self.floating.remove(k);
                self.apply(a);
                self.spawn_resets();
            } else {
                k += 1;
            }
        }
        self.poll_sources();
        // A timer or an interrupt that is due may be taken now or a little
        // later: the seed decides, as the exact instant of an asynchronous
        // event relative to the tasks' steps is not something tasks may
        // depend on.
        if self.plat.deadline.is_some_and(|d| d <= self.plat.now)
            && self
                .chooser
                .pick(ChoiceKind::Timer, 2, true, |r| if r.coin() { 0 } else { 1 })
                == 0
        {
            self.fire_timers();
        }
        for intid in self.deliverable() {
            if self
                .chooser
                .pick(ChoiceKind::Irq, 2, true, |r| if r.coin() { 0 } else { 1 })
                == 0
            {
                self.deliver_irq(intid);
            }
        }
        self.spawn_resets();

        let mut spins = 0;
        loop {
            if self.plat.finished {
                return;
            }
            if let Some(next) = self.choose() {
                // Let the core settle its own bookkeeping of woken tasks,
                // then run the seeded choice (a top-priority task, so the
                // core's invariant holds).
                self.with_kernel(|k, p| k.schedule(p));
                self.k.current = next;
                self.token = Some(next);
                return;
            }
            // Nothing can run: let whatever is pending happen, as the idle
            // kernel would wait for the next interrupt.
            spins += 1;
            if spins > MAX_IDLE_SPINS {
                let limit = self.max_steps;
                self.plat.push(What::Injected {
                    text: "idle loop never made a task runnable".into(),
                });
                self.plat.finish(Outcome::StepLimit(limit));
                return;
            }
            if let Some(&intid) = self.deliverable().first() {
                self.deliver_irq(intid);
            } else if let Some(d) = self.plat.deadline {
                self.plat.now = self.plat.now.max(d);
                self.fire_timers();
            } else if let Some((_, a)) = self.actions.pop_front() {
                // Every task is blocked before the action's step came: do
                // it now rather than never.
                self.apply(a);
                self.spawn_resets();
            } else if !self.floating.is_empty() {
                // Likewise a floating action whose window is still open.
                let (_, _, a) = self.floating.remove(0);
                self.apply(a);
                self.spawn_resets();
            } else if !self.poll_sources() {
                self.plat.finish(Outcome::Idle);
                return;
            }
        }
    }

    /// Seeded choice among the runnable tasks of the best priority.
    ///
    /// The kernel keeps the CPU on the running task against equals, but any
    /// interrupt handled by a higher-priority task hands the CPU to the next
    /// equal in turn, so on the target every equal-priority order is
    /// reachable; the seed picks one.
    fn choose(&mut self) -> Option<usize> {
        let best = self
            .k
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Runnable)
            .map(|t| t.priority())
            .min()?;
        let cands: Vec<usize> = (0..self.k.tasks.len())
            .filter(|&i| {
                self.k.tasks[i].state == TaskState::Runnable && self.k.tasks[i].priority() == best
            })
            .collect();
        // Alternative 0 is the task that ran last when it can go on (the
        // kernel's own choice: no preemption); choosing another then costs
        // one preemption. When it cannot, any successor is free.
        let last = self.token.filter(|t| cands.contains(t));
        let mut order = cands.clone();
        if let Some(t) = last {
            order.retain(|&c| c != t);
            order.insert(0, t);
        }
        let n = cands.len();
        let v = self
            .chooser
            .pick(ChoiceKind::Task, n as u32, last.is_some(), |r| {
                // The seeded pick is drawn over `cands` as it always was.
                let p = if n == 1 {
                    0
                } else {
                    r.below(n as u64) as usize
                };
                order.iter().position(|&c| c == cands[p]).unwrap_or(0) as u32
            });
        Some(order[v as usize])
    }
}
