//! The run's state under the lock, and how a task's system call is handed
//! to the core.

use super::coro::{payload_text, LAST_PANIC};
use super::platform::{HostPlatform, ShutdownSignal};
use super::{Act, Entry, IrqSource, NoteSource};
use crate::rng::{ChoiceKind, Chooser};
use crate::trace::{Decoder, What};
use crate::{Outcome, Report};
use abi::{Sysnum, TaskId};
use kern::syscalls::Kernel;
use std::any::Any;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

pub(super) struct State {
    /// The portable core with the task table. It keeps scheduling state of
    /// its own between calls, so it lives as long as the run (the table is
    /// leaked to give it the `'static` borrow the image's table has).
    pub(super) k: Kernel<'static>,
    pub(super) plat: HostPlatform,
    /// Every open decision of the run comes from here.
    pub(super) chooser: Chooser,
    pub(super) floating: Vec<(u64, u64, Act)>,
    /// The task whose coroutine runs next (and, until then, ran last).
    pub(super) token: Option<usize>,
    /// Tasks whose incarnation was replaced during this step, in order: the
    /// worker retires their coroutines and starts fresh ones.
    pub(super) respawn: Vec<usize>,
    pub(super) entries: Vec<Entry>,
    pub(super) actions: VecDeque<(u64, Act)>,
    pub(super) decoders: Vec<Option<Arc<dyn Decoder>>>,
    pub(super) irq_sources: Vec<IrqSource>,
    pub(super) note_sources: Vec<NoteSource>,
    /// Raised interrupt lines not yet delivered (latched, like the GIC's
    /// pending state; delivered once enabled).
    pub(super) pending_irqs: BTreeSet<u32>,
    /// Operation of each task's outstanding message, to decode its reply.
    pub(super) last_op: Vec<u16>,
    pub(super) max_steps: u64,
    pub(super) clock_jitter_ms: u64,
}

impl State {
    /// A hash of what the run ended with: the outcome, the console, and
    /// each task's state and generation (not the step count or time, so
    /// two schedules reaching the same place count once).
    pub(super) fn end_state(&self, report: &Report) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{:?}", report.outcome).hash(&mut h);
        report.console.hash(&mut h);
        for t in self.k.tasks.iter() {
            format!("{:?}", t.state).hash(&mut h);
            t.generation.0.hash(&mut h);
        }
        h.finish()
    }

    pub(super) fn id(&self, i: usize) -> TaskId {
        TaskId::new(i, self.k.tasks[i].generation)
    }

    pub(super) fn with_kernel<R>(
        &mut self,
        f: impl FnOnce(&mut Kernel<'static>, &mut HostPlatform) -> R,
    ) -> R {
        f(&mut self.k, &mut self.plat)
    }

    /// After a panic unwound out of harness or kernel code.
    pub(super) fn unwound(&mut self, p: Box<dyn Any + Send>) {
        if p.is::<ShutdownSignal>() {
            return; // the report is already out
        }
        let msg = LAST_PANIC
            .with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| payload_text(&*p));
        self.plat.finish(Outcome::KernelPanic(msg));
    }

    pub(super) fn boot(&mut self) {
        self.plat.booting = true;
        self.with_kernel(|k, p| k.boot(p));
        self.plat.booting = false;
        self.after_step();
    }

    pub(super) fn syscall(&mut self, i: usize, num: Sysnum, args: [usize; 7]) {
        self.plat.step += 1;
        if self.plat.step > self.max_steps {
            let limit = self.max_steps;
            self.plat.push(What::StepLimit { limit });
            self.plat.finish(Outcome::StepLimit(limit));
            return;
        }
        let jitter = self.clock_jitter_ms;
        self.plat.now += self
            .chooser
            .pick(ChoiceKind::Jitter, (jitter + 1) as u32, true, |r| {
                r.below(jitter + 1) as u32
            }) as u64;
        let s = &mut self.k.tasks[i].save;
        s.x[..7]
            .iter_mut()
            .zip(args)
            .for_each(|(x, a)| *x = a as u64);
        s.x[7] = 0;
        s.x[8] = num as u64;
        self.k.current = i;
        let fault_message = (num == Sysnum::Panic).then(|| {
            let bytes = self.read(i, args[0], args[1].min(160));
            String::from_utf8_lossy(&bytes).into_owned()
        });
        // What the task made devices do since its last kernel entry.
        self.poll_notes(Some(i));
        let before = self.snapshot();
        self.plat.cause = Some(self.id(i));
        self.with_kernel(|k, p| k.syscall(p));
        self.plat.cause = None;
        self.observe_call(i, num, args, &before);
        self.observe(&before, Some((i, num, args)), fault_message);
        self.after_step();
    }
}
