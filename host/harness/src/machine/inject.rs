//! Injected actions (kill, fault, restart, interrupt, post) and the
//! incarnations the core reset.

use super::state::State;
use super::Act;
use crate::trace::What;
use abi::FaultKind;

impl State {
    /// Queues a fresh incarnation for every task the core reset; the worker
    /// retires the old coroutine and starts the new one after this step.
    pub(super) fn spawn_resets(&mut self) {
        for i in std::mem::take(&mut self.plat.resets) {
            self.last_op[i] = 0;
            self.respawn.push(i);
        }
    }

    pub(super) fn apply(&mut self, a: Act) {
        let text = match &a {
            Act::Fault(t, FaultKind::Panic, 0) => format!("kill {}", self.plat.trace.tasks[*t]),
            Act::Fault(t, kind, detail) => {
                format!(
                    "fault {}: {} {detail:#x}",
                    self.plat.trace.tasks[*t],
                    kern::fault_name(*kind)
                )
            }
            Act::Restart(t) => format!("restart {}", self.plat.trace.tasks[*t]),
            Act::Irq(intid) => format!("raise irq {intid}"),
            Act::Post(t, bits) => format!("post {bits:#x} to {}", self.plat.trace.tasks[*t]),
        };
        self.plat.push(What::Injected { text });
        let before = self.snapshot();
        match a {
            Act::Fault(t, kind, detail) => self.with_kernel(|k, p| k.fault(p, t, kind, detail)),
            Act::Restart(t) => self.with_kernel(|k, p| {
                // A refused restart (generations exhausted) leaves the task
                // as it is; the snapshot diff shows that.
                let _ = k.restart(p, t);
            }),
            Act::Irq(intid) => self.raise(intid),
            Act::Post(t, bits) => self.with_kernel(|k, _| k.post(t, bits)),
        }
        self.observe(&before, None, None);
    }
}
