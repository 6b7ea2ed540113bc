//! Device hooks, notes, interrupt lines and timers.

use super::state::State;
use crate::trace::What;

impl State {
    /// Polls the device hooks; true if a deliverable interrupt is pending
    /// afterwards.
    pub(super) fn poll_sources(&mut self) -> bool {
        let (step, now) = (self.plat.step, self.plat.now);
        let mut raised = Vec::new();
        for s in &mut self.irq_sources {
            raised.extend(s(step, now));
        }
        for intid in raised {
            self.raise(intid);
        }
        self.poll_notes(None);
        !self.deliverable().is_empty()
    }

    /// Records the notes of every note source, on `task`'s lifeline.
    pub(super) fn poll_notes(&mut self, task: Option<usize>) {
        if self.note_sources.is_empty() {
            return;
        }
        let task = task.map(|t| self.id(t));
        let mut texts = Vec::new();
        for s in &mut self.note_sources {
            texts.extend(s());
        }
        for text in texts {
            self.plat.push(What::Note { task, text });
        }
    }

    pub(super) fn raise(&mut self, intid: u32) {
        if self.k.irqs.iter().any(|i| i.intid == intid) {
            self.pending_irqs.insert(intid);
        } else {
            self.plat.push(What::Injected {
                text: format!("irq {intid} has no owner: dropped"),
            });
        }
    }

    /// Pending lines whose owner has them enabled.
    pub(super) fn deliverable(&self) -> Vec<u32> {
        self.pending_irqs
            .iter()
            .copied()
            .filter(|i| self.plat.irq_enabled.get(i).copied().unwrap_or(false))
            .collect()
    }

    pub(super) fn deliver_irq(&mut self, intid: u32) {
        self.pending_irqs.remove(&intid);
        if let Some(d) = self.k.irqs.iter().find(|i| i.intid == intid) {
            let (task, bits) = (self.id(d.task as usize), d.notification);
            self.plat.push(What::Interrupt { intid, task, bits });
        }
        let before = self.snapshot();
        self.with_kernel(|k, p| k.interrupt(p, intid));
        self.observe(&before, None, None);
    }

    pub(super) fn fire_timers(&mut self) {
        let before = self.snapshot();
        self.with_kernel(|k, p| k.timer_tick(p));
        self.observe(&before, None, None);
    }
}
