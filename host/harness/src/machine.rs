//! The simulated machine: the kernel's portable core, task threads and the
//! CPU token.
//!
//! Each task is a host thread running its real entry function. The "CPU" is
//! a token in the shared state: only the thread of `token` runs task code;
//! every other task thread is blocked inside a system call (or has not
//! started). A system call locks the state, lets the core
//! (`kern::syscalls::Kernel`) handle it exactly as the AArch64 kernel would,
//! performs the between-steps work (injected actions, device interrupts,
//! virtual time), picks the next task and hands it the token. Because the
//! core only touches task memory through the region table, and every
//! harness task has one region mapping virtual = host addresses, the core
//! copies messages and leases between the threads' own buffers.
//!
//! A restart (`Platform::reset_task_memory`) retires the task's thread —
//! it is blocked in a system call; when it wakes it unwinds with a private
//! marker, dropping everything the old incarnation owned — and starts a
//! fresh thread at the task's entry.
//!
//! The workspace builds `dev` with `panic = "abort"` (binaries like
//! `trace`), where nothing can unwind. Then a retired thread parks forever
//! instead of unwinding, and a task's panic is turned into `sys_panic` from
//! inside the panic hook (as the image's panic handler does), which never
//! returns. Tests build with unwinding and get the full behaviour.

use crate::rng::{ChoiceKind, Chooser};
use crate::trace::{Decoded, Decoder, Event, LeaseSummary, Trace, What};
use crate::{Outcome, Report};
use abi::{
    is_dead_code, FaultKind, Generation, LeaseDesc, Sysnum, TaskId, MAX_MESSAGE, RC_OK, REGION_READ,
};
use kern::config::{IrqDesc, TaskDesc};
use kern::syscalls::{Kernel, Platform};
use kern::task::{Task, TaskState};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use userlib::host::HostKernel;

/// A task's entry function.
pub(crate) type Entry = Arc<dyn Fn() + Send + Sync>;

/// A device hook: called between steps with (step, now in ms); returns the
/// interrupt lines it raises.
pub(crate) type IrqSource = Box<dyn FnMut(u64, u64) -> Vec<u32> + Send>;

/// An annotation source: polled when a task enters the kernel (its notes
/// are put on that task's lifeline: they happened while it ran) and
/// between steps after the device hooks (notes of no task).
pub(crate) type NoteSource = Box<dyn FnMut() -> Vec<String> + Send>;

/// An injected action with task names resolved to indices.
#[derive(Clone, Debug)]
pub(crate) enum Act {
    Fault(usize, FaultKind, usize),
    Restart(usize),
    Irq(u32),
    Post(usize, u32),
}

/// Everything the builder resolved.
pub(crate) struct Setup {
    pub seed: u64,
    /// An explicit choice sequence instead of the seed (replay, explorer).
    pub script: Option<Vec<u32>>,
    /// Actions whose step is a choice: (first step, last step, action).
    pub floating: Vec<(u64, u64, Act)>,
    pub names: Vec<String>,
    pub descs: Vec<&'static TaskDesc>,
    pub entries: Vec<Entry>,
    pub irqs: &'static [IrqDesc],
    /// Sorted by step; equal steps keep their order.
    pub actions: Vec<(u64, Act)>,
    pub decoders: Vec<Option<Arc<dyn Decoder>>>,
    pub irq_sources: Vec<IrqSource>,
    pub note_sources: Vec<NoteSource>,
    pub max_steps: u64,
    pub clock_jitter_ms: u64,
    pub wall_timeout: Duration,
}

/// Unwinds a retired task thread. Never seen outside this module.
struct Retired;
/// Unwinds out of `Platform::shutdown` back to the harness.
struct ShutdownSignal;

/// Most idle-loop iterations (time jumps, deliveries) without any task
/// becoming runnable before the run counts as stuck.
const MAX_IDLE_SPINS: u32 = 10_000;

thread_local! {
    /// The port of the task this thread runs, for the panic hook.
    static PORT: RefCell<Option<Arc<TaskPort>>> = const { RefCell::new(None) };
    /// Set while this thread executes harness/kernel code: a panic there is
    /// a harness (or kernel) bug, not a task fault.
    static IN_HARNESS: Cell<bool> = const { Cell::new(false) };
    /// The last panic message seen by the hook on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks this thread as running harness code for the guard's lifetime.
struct InHarness(bool);
impl InHarness {
    fn enter() -> Self {
        InHarness(IN_HARNESS.with(|f| f.replace(true)))
    }
}
impl Drop for InHarness {
    fn drop(&mut self) {
        IN_HARNESS.with(|f| f.set(self.0));
    }
}

/// Stops a retired thread for good.
fn retire() -> ! {
    #[cfg(panic = "unwind")]
    {
        panic::resume_unwind(Box::new(Retired))
    }
    #[cfg(not(panic = "unwind"))]
    loop {
        thread::park();
    }
}

fn payload_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic payload)".to_string()
    }
}

/// Routes panics on task threads into the task-fault path; every other
/// panic goes to the hook that was installed before.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let port = PORT.with(|p| p.borrow().clone());
            let in_harness = IN_HARNESS.with(|f| f.get());
            // Same text as the image's panic handler hands to sys_panic,
            // on one line.
            let msg = format!("panic: {info}").replace('\n', " ");
            LAST_PANIC.with(|l| *l.borrow_mut() = Some(msg.clone()));
            match port {
                Some(port) if !in_harness => {
                    if cfg!(panic = "unwind") {
                        // The thread wrapper catches the unwind and calls
                        // sys_panic; the message is in LAST_PANIC.
                        return;
                    }
                    // Nothing can unwind: fault the task from here, like the
                    // image's panic handler. This does not return.
                    let args = [msg.as_ptr() as usize, msg.len(), 0, 0, 0, 0, 0];
                    port.enter(Sysnum::Panic, args);
                    retire();
                }
                _ => previous(info),
            }
        }));
    });
}

/// What a blocked task thread is told when it wakes.
enum Resume {
    /// Run on: the task's x0..x5.
    Run([usize; 6]),
    /// This thread's incarnation is over (restart, or the run ended).
    Retire,
}

/// The `HostKernel` of one task thread (one incarnation of one task).
pub(crate) struct TaskPort {
    shared: Arc<Shared>,
    index: usize,
    epoch: u64,
}

impl HostKernel for TaskPort {
    fn syscall(&self, num: Sysnum, args: [usize; 7]) -> [usize; 6] {
        if thread::panicking() {
            // Destructors of an incarnation that is unwinding (retired, or
            // dying of a panic) cannot reach the kernel: on the target that
            // task would already be stopped. Answer as if every peer were
            // gone.
            return [abi::dead_code(Generation(0)) as usize, 0, 0, 0, 0, 0];
        }
        self.enter(num, args)
    }
}

impl TaskPort {
    fn enter(&self, num: Sysnum, args: [usize; 7]) -> [usize; 6] {
        match self.shared.enter(self.index, self.epoch, num, args) {
            Resume::Run(r) => r,
            Resume::Retire => retire(),
        }
    }
}

/// A host stand-in for the machine under the core.
struct HostPlatform {
    now: u64,
    deadline: Option<u64>,
    irq_enabled: BTreeMap<u32, bool>,
    descs: Vec<&'static TaskDesc>,
    /// Tasks the core reset since the harness last looked (their threads
    /// must be replaced).
    resets: Vec<usize>,
    /// Who is acting: the task whose system call the core is handling, or
    /// None for the harness itself (boot, injected actions).
    cause: Option<TaskId>,
    booting: bool,
    trace: Trace,
    step: u64,
    line: Vec<u8>,
    console: String,
    finished: bool,
    done: Arc<Done>,
}

impl HostPlatform {
    fn push(&mut self, what: What) {
        self.trace.events.push(Event {
            step: self.step,
            time_ms: self.now,
            what,
        });
    }

    fn flush_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        self.console.push_str(&text);
        self.console.push('\n');
        self.push(What::Log { text });
    }

    /// Ends the run with `outcome` and hands the report to `Harness::run`.
    fn finish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        if !self.line.is_empty() {
            self.flush_line();
        }
        self.finished = true;
        let report = Report {
            outcome,
            trace: self.trace.clone(),
            steps: self.step,
            now_ms: self.now,
            console: self.console.clone(),
            choices: Vec::new(),
            end_state: 0,
        };
        let mut slot = self.done.report.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(report);
        self.done.cv.notify_all();
    }
}

impl Platform for HostPlatform {
    fn console(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.flush_line();
            } else {
                self.line.push(b);
            }
        }
    }
    fn irq_enable(&mut self, intid: u32, enable: bool) {
        self.irq_enabled.insert(intid, enable);
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn set_deadline(&mut self, deadline: Option<u64>) {
        self.deadline = deadline;
    }
    fn shutdown(&mut self, status: u32) -> ! {
        self.push(What::Shutdown { status });
        self.finish(Outcome::Shutdown(status));
        #[cfg(panic = "unwind")]
        {
            panic::resume_unwind(Box::new(ShutdownSignal))
        }
        // Nothing can unwind: the report is out; this thread (holding the
        // state lock) stops here and `Harness::run` returns without it.
        #[cfg(not(panic = "unwind"))]
        loop {
            thread::park();
        }
    }
    fn reset_task_memory(&mut self, task: &Task) {
        let Some(i) = self.descs.iter().position(|d| std::ptr::eq(*d, task.desc)) else {
            // Only descriptors the harness built exist in its task table.
            return;
        };
        self.resets.push(i);
        let id = TaskId::new(i, task.generation);
        let what = if self.booting {
            What::Start { task: id }
        } else {
            What::Restart {
                task: id,
                by: self.cause,
            }
        };
        self.push(what);
    }
}

/// Where the finished run's report is handed over.
struct Done {
    report: Mutex<Option<Report>>,
    cv: Condvar,
}

/// A task's scheduling facts before a kernel operation, to see what it did.
#[derive(Clone)]
struct Snap {
    state: TaskState,
    generation: Generation,
    deadline: Option<u64>,
}

struct State {
    /// The portable core with the task table. It keeps scheduling state of
    /// its own between calls, so it lives as long as the run (the table is
    /// leaked to give it the `'static` borrow the image's table has).
    k: Kernel<'static>,
    plat: HostPlatform,
    /// Every open decision of the run comes from here.
    chooser: Chooser,
    floating: Vec<(u64, u64, Act)>,
    /// The task whose thread may run task code.
    token: Option<usize>,
    /// Incarnation of each task's thread; bumped when it is replaced.
    epochs: Vec<u64>,
    entries: Vec<Entry>,
    threads: Vec<JoinHandle<()>>,
    actions: VecDeque<(u64, Act)>,
    decoders: Vec<Option<Arc<dyn Decoder>>>,
    irq_sources: Vec<IrqSource>,
    note_sources: Vec<NoteSource>,
    /// Raised interrupt lines not yet delivered (latched, like the GIC's
    /// pending state; delivered once enabled).
    pending_irqs: BTreeSet<u32>,
    /// Operation of each task's outstanding message, to decode its reply.
    last_op: Vec<u16>,
    max_steps: u64,
    clock_jitter_ms: u64,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// One per task: a thread waits on its task's own, so a step wakes
    /// only the next task's thread instead of every task thread.
    cvs: Vec<Condvar>,
    done: Arc<Done>,
}

impl Shared {
    /// Wakes every task thread (the run ended, threads were retired).
    fn wake_all(&self) {
        self.cvs.iter().for_each(Condvar::notify_all);
    }

    /// Wakes the thread that holds the CPU token now (every thread if the
    /// run is over).
    fn wake(&self, g: &State) {
        match g.token {
            Some(t) if !g.plat.finished => self.cvs[t].notify_all(),
            _ => self.wake_all(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Harness code never panics while holding the lock outside a
        // `catch_unwind`, but a poisoned lock must not hide the report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A system call of task `i` (incarnation `epoch`), which holds the token.
    fn enter(self: &Arc<Self>, i: usize, epoch: u64, num: Sysnum, args: [usize; 7]) -> Resume {
        let _h = InHarness::enter();
        let mut g = self.lock();
        if g.plat.finished || g.epochs[i] != epoch {
            return Resume::Retire;
        }
        if g.token != Some(i) {
            let name = g.plat.trace.tasks[i].clone();
            g.plat.finish(Outcome::KernelPanic(format!(
                "harness: task {name} made a system call without holding the CPU"
            )));
            self.wake_all();
            return Resume::Retire;
        }
        let st = &mut *g;
        let r = panic::catch_unwind(AssertUnwindSafe(|| st.syscall(self, i, num, args)));
        if let Err(p) = r {
            st.unwound(p);
        }
        self.wake(&g);
        self.wait_turn(g, i, epoch)
    }

    /// Blocks until task `i` holds the token (or the thread is retired).
    fn wait_turn(&self, mut g: MutexGuard<'_, State>, i: usize, epoch: u64) -> Resume {
        loop {
            if g.plat.finished || g.epochs[i] != epoch {
                return Resume::Retire;
            }
            if g.token == Some(i) {
                let x = &g.k.tasks[i].save.x;
                return Resume::Run([x[0], x[1], x[2], x[3], x[4], x[5]].map(|v| v as usize));
            }
            g = self.cvs[i].wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn wait_done(&self, timeout: Duration) -> Option<Report> {
        let until = Instant::now() + timeout;
        let mut g = self.done.report.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = g.take() {
                return Some(r);
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            g = self
                .done
                .cv
                .wait_timeout(g, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The body of every task thread.
fn task_thread(port: Arc<TaskPort>, entry: Entry) {
    userlib::host::install(port.clone());
    PORT.with(|p| *p.borrow_mut() = Some(port.clone()));
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        let first = {
            let g = port.shared.lock();
            port.shared.wait_turn(g, port.index, port.epoch)
        };
        if let Resume::Retire = first {
            retire();
        }
        entry();
        // A task has nothing to return to. Like a task with no more work,
        // block in a receive that nothing can complete.
        loop {
            userlib::sys_recv_notification(0);
        }
    }));
    if let Err(p) = r {
        if p.is::<Retired>() {
            return;
        }
        // Task code panicked and has unwound: report it the way the image's
        // panic handler does. The task is faulted; this call returns only by
        // unwinding once the thread is retired.
        let msg = LAST_PANIC
            .with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| payload_text(&*p));
        let _ = panic::catch_unwind(AssertUnwindSafe(|| {
            userlib::sys_panic(msg.as_bytes());
        }));
    }
}

impl State {
    /// A hash of what the run ended with: the outcome, the console, and
    /// each task's state and generation (not the step count or time, so
    /// two schedules reaching the same place count once).
    fn end_state(&self, report: &Report) -> u64 {
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

    fn id(&self, i: usize) -> TaskId {
        TaskId::new(i, self.k.tasks[i].generation)
    }

    fn with_kernel<R>(
        &mut self,
        f: impl FnOnce(&mut Kernel<'static>, &mut HostPlatform) -> R,
    ) -> R {
        f(&mut self.k, &mut self.plat)
    }

    /// After a panic unwound out of harness or kernel code.
    fn unwound(&mut self, p: Box<dyn Any + Send>) {
        if p.is::<ShutdownSignal>() {
            return; // the report is already out
        }
        let msg = LAST_PANIC
            .with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| payload_text(&*p));
        self.plat.finish(Outcome::KernelPanic(msg));
    }

    fn boot(&mut self, shared: &Arc<Shared>) {
        self.plat.booting = true;
        self.with_kernel(|k, p| k.boot(p));
        self.plat.booting = false;
        self.after_step(shared);
    }

    fn syscall(&mut self, shared: &Arc<Shared>, i: usize, num: Sysnum, args: [usize; 7]) {
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
        self.after_step(shared);
    }

    // ---------------------------------------------------------------------
    // Between steps
    // ---------------------------------------------------------------------

    /// Everything between one kernel entry and the next task running:
    /// replace restarted threads, injected actions, devices, time, and the
    /// choice of the next task.
    fn after_step(&mut self, shared: &Arc<Shared>) {
        self.spawn_resets(shared);
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
                self.spawn_resets(shared);
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
                self.spawn_resets(shared);
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
        self.spawn_resets(shared);

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
                self.spawn_resets(shared);
            } else if !self.floating.is_empty() {
                // Likewise a floating action whose window is still open.
                let (_, _, a) = self.floating.remove(0);
                self.apply(a);
                self.spawn_resets(shared);
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

    /// Starts a fresh thread for every task the core reset; the old thread
    /// (if any) retires when it wakes.
    fn spawn_resets(&mut self, shared: &Arc<Shared>) {
        if self.plat.resets.is_empty() {
            return;
        }
        for i in std::mem::take(&mut self.plat.resets) {
            self.epochs[i] += 1;
            self.last_op[i] = 0;
            let port = Arc::new(TaskPort {
                shared: shared.clone(),
                index: i,
                epoch: self.epochs[i],
            });
            let entry = self.entries[i].clone();
            let name = format!(
                "{}#{}",
                self.plat.trace.tasks[i], self.k.tasks[i].generation.0
            );
            match thread::Builder::new()
                .name(name)
                .spawn(move || task_thread(port, entry))
            {
                Ok(h) => self.threads.push(h),
                Err(e) => {
                    self.plat.finish(Outcome::KernelPanic(format!(
                        "harness: cannot start a task thread: {e}"
                    )));
                    return;
                }
            }
        }
        // Wake retired threads so they unwind now.
        shared.wake_all();
    }

    fn apply(&mut self, a: Act) {
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

    /// Polls the device hooks; true if a deliverable interrupt is pending
    /// afterwards.
    fn poll_sources(&mut self) -> bool {
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
    fn poll_notes(&mut self, task: Option<usize>) {
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

    fn raise(&mut self, intid: u32) {
        if self.k.irqs.iter().any(|i| i.intid == intid) {
            self.pending_irqs.insert(intid);
        } else {
            self.plat.push(What::Injected {
                text: format!("irq {intid} has no owner: dropped"),
            });
        }
    }

    /// Pending lines whose owner has them enabled.
    fn deliverable(&self) -> Vec<u32> {
        self.pending_irqs
            .iter()
            .copied()
            .filter(|i| self.plat.irq_enabled.get(i).copied().unwrap_or(false))
            .collect()
    }

    fn deliver_irq(&mut self, intid: u32) {
        self.pending_irqs.remove(&intid);
        if let Some(d) = self.k.irqs.iter().find(|i| i.intid == intid) {
            let (task, bits) = (self.id(d.task as usize), d.notification);
            self.plat.push(What::Interrupt { intid, task, bits });
        }
        let before = self.snapshot();
        self.with_kernel(|k, p| k.interrupt(p, intid));
        self.observe(&before, None, None);
    }

    fn fire_timers(&mut self) {
        let before = self.snapshot();
        self.with_kernel(|k, p| k.timer_tick(p));
        self.observe(&before, None, None);
    }

    // ---------------------------------------------------------------------
    // Observation: turning state changes into trace events
    // ---------------------------------------------------------------------

    fn snapshot(&self) -> Vec<Snap> {
        self.k
            .tasks
            .iter()
            .map(|t| Snap {
                state: t.state,
                generation: t.generation,
                deadline: t.timer_deadline,
            })
            .collect()
    }

    /// Reads task memory for the trace.
    fn read(&self, t: usize, va: usize, len: usize) -> Vec<u8> {
        let n = len.min(MAX_MESSAGE);
        if n == 0 {
            return Vec::new();
        }
        match self.k.tasks[t].translate(va, n, REGION_READ) {
            // SAFETY: `translate` found the range inside one of the task's
            // readable regions; on the host those are the task thread's own
            // memory at the same address (the `host` region maps virtual =
            // host). The task is blocked in a system call or waiting for
            // the CPU token while the harness holds the state lock, and
            // these are buffers it passed to the kernel, so they are live
            // and nothing writes them meanwhile.
            Some(pa) => unsafe { std::slice::from_raw_parts(pa as *const u8, n) }.to_vec(),
            None => Vec::new(),
        }
    }

    fn leases(&self, t: usize) -> Vec<LeaseSummary> {
        let (table, count) = (self.k.tasks[t].save.arg(5), self.k.tasks[t].save.arg(6));
        let size = std::mem::size_of::<LeaseDesc>();
        (0..count.min(abi::MAX_LEASES))
            .filter_map(|k| {
                let pa = self.k.tasks[t].translate(table + k * size, size, REGION_READ)?;
                // SAFETY: as in `read`: the sender's lease table, checked to
                // lie in its readable memory, live while it waits; read
                // unaligned because it is just the sender's bytes.
                let d: LeaseDesc = unsafe { std::ptr::read_unaligned(pa as *const LeaseDesc) };
                Some(LeaseSummary {
                    attributes: d.attributes,
                    len: d.len,
                })
            })
            .collect()
    }

    fn decoded(
        &self,
        server: usize,
        op: u16,
        request: Option<(&[u8], &[LeaseSummary])>,
        reply: Option<(u32, &[u8])>,
    ) -> Option<Decoded> {
        let d = self.decoders.get(server)?.as_ref()?;
        let operation = d.operation(op).unwrap_or_else(|| format!("op{op}"));
        let text = match (request, reply) {
            (Some((b, leases)), _) => d.request_leased(op, b, leases),
            (None, Some((code, b))) => d.reply(op, code, b),
            (None, None) => None,
        };
        Some(Decoded {
            interface: d.interface().to_string(),
            operation,
            text,
        })
    }

    /// Events that only the call itself explains (the caller's own result).
    fn observe_call(&mut self, c: usize, num: Sysnum, args: [usize; 7], before: &[Snap]) {
        let me = self.id(c);
        let state = self.k.tasks[c].state;
        if matches!(state, TaskState::Faulted { .. })
            || self.k.tasks[c].generation != before[c].generation
        {
            return;
        }
        let x = |st: &Self, i: usize| st.k.tasks[c].save.arg(i);
        match num {
            Sysnum::Send if state == TaskState::Runnable => {
                // Answered at once: only a dead code does that.
                let target = TaskId(args[0] as u32);
                if let Some(g) = is_dead_code(x(self, 0) as u32) {
                    self.plat.push(What::DeadCode {
                        task: me,
                        peer: target.with_generation(g),
                        call: num,
                    });
                }
            }
            Sysnum::Recv if state == TaskState::Runnable => {
                let code = x(self, 0) as u32;
                if let Some(g) = is_dead_code(code) {
                    let peer = TaskId(args[3] as u32).with_generation(g);
                    self.plat.push(What::DeadCode {
                        task: me,
                        peer,
                        call: num,
                    });
                } else if TaskId(x(self, 1) as u32) == TaskId::KERNEL {
                    let bits = x(self, 2) as u32;
                    self.plat.push(What::Notification { task: me, bits });
                }
                // A message taken at once shows up as its sender's change.
            }
            Sysnum::Reply => {
                let to = TaskId(args[0] as u32);
                let delivered = to.index() < self.k.tasks.len()
                    && before[to.index()].state == TaskState::InReply(me)
                    && self.k.tasks[to.index()].state != TaskState::InReply(me);
                if !delivered {
                    self.plat.push(What::ReplyDropped {
                        from: me,
                        to,
                        code: args[1] as u32,
                    });
                }
            }
            Sysnum::BorrowRead | Sysnum::BorrowWrite | Sysnum::BorrowInfo => {
                let code = x(self, 0) as u32;
                let result = if code != RC_OK {
                    Err(code)
                } else if num == Sysnum::BorrowInfo {
                    Ok(x(self, 2))
                } else {
                    Ok(x(self, 1))
                };
                let lender = TaskId(args[0] as u32);
                self.plat.push(What::Borrow {
                    server: me,
                    lender,
                    call: num,
                    index: args[1],
                    offset: args[2],
                    result,
                });
            }
            Sysnum::Post => {
                let code = x(self, 0) as u32;
                self.plat.push(What::Post {
                    from: me,
                    to: TaskId(args[0] as u32),
                    bits: args[1] as u32,
                    code,
                });
            }
            Sysnum::SetTimer => {
                let deadline = (args[0] != 0).then_some(args[1] as u64);
                self.plat.push(What::TimerSet {
                    task: me,
                    deadline,
                    bits: args[2] as u32,
                });
                if deadline.is_some() && self.k.tasks[c].timer_deadline.is_none() {
                    let bits = self.k.tasks[c].timer_bits;
                    self.plat.push(What::TimerFired { task: me, bits });
                }
            }
            Sysnum::IrqControl => {
                self.plat.push(What::IrqControl {
                    task: me,
                    mask: args[0] as u32,
                    enable: args[1] != 0,
                });
            }
            Sysnum::RefreshTaskId => {
                self.plat.push(What::Refresh {
                    task: me,
                    peer: TaskId(x(self, 0) as u32),
                });
            }
            _ => {}
        }
    }

    /// Events read off the tasks' state changes: deliveries, replies, dead
    /// codes, notifications, faults, timers.
    fn observe(
        &mut self,
        before: &[Snap],
        call: Option<(usize, Sysnum, [usize; 7])>,
        fault_message: Option<String>,
    ) {
        // Restarted tasks are left out: their Restart event says it all.
        let same: Vec<usize> = (0..self.k.tasks.len())
            .filter(|&t| self.k.tasks[t].generation == before[t].generation)
            .collect();
        // Causes before effects: faults, then fired timers, then what the
        // tasks got.
        for &t in &same {
            if let (false, TaskState::Faulted { kind, detail }) = (
                matches!(before[t].state, TaskState::Faulted { .. }),
                self.k.tasks[t].state,
            ) {
                let message = match call {
                    Some((c, Sysnum::Panic, _)) if c == t => fault_message.clone(),
                    _ => None,
                };
                self.plat.push(What::Fault {
                    task: self.id(t),
                    kind,
                    detail,
                    message,
                });
            }
        }
        for &t in &same {
            // A timer that disappeared without being reset fired (the
            // caller's own SetTimer is `observe_call`'s business).
            let own_set = matches!(call, Some((c, Sysnum::SetTimer, _)) if c == t);
            let faulted = matches!(self.k.tasks[t].state, TaskState::Faulted { .. });
            if !own_set
                && !faulted
                && before[t].deadline.is_some()
                && self.k.tasks[t].timer_deadline.is_none()
            {
                let bits = self.k.tasks[t].timer_bits;
                self.plat.push(What::TimerFired {
                    task: self.id(t),
                    bits,
                });
            }
        }
        for &t in &same {
            let me = self.id(t);
            let save = &self.k.tasks[t].save;
            match (before[t].state, self.k.tasks[t].state) {
                (TaskState::InReply(s), TaskState::Runnable) => {
                    let code = save.arg(0) as u32;
                    if let Some(g) = is_dead_code(code) {
                        self.plat.push(What::DeadCode {
                            task: me,
                            peer: s.with_generation(g),
                            call: Sysnum::Send,
                        });
                    } else {
                        let (len, ptr, cap) = (save.arg(1), save.arg(3), save.arg(4));
                        let bytes = self.read(t, ptr, len.min(cap));
                        let op = self.last_op[t];
                        let decoded = self.decoded(s.index(), op, None, Some((code, &bytes)));
                        self.plat.push(What::Reply {
                            from: s,
                            to: me,
                            op,
                            code,
                            len,
                            bytes,
                            decoded,
                        });
                    }
                }
                (TaskState::InSend(s), TaskState::Runnable) => {
                    if let Some(g) = is_dead_code(save.arg(0) as u32) {
                        self.plat.push(What::DeadCode {
                            task: me,
                            peer: s.with_generation(g),
                            call: Sysnum::Send,
                        });
                    }
                }
                (TaskState::InRecv(from), TaskState::Runnable) => {
                    let code = save.arg(0) as u32;
                    if TaskId(save.arg(1) as u32) == TaskId::KERNEL && code == RC_OK {
                        let bits = save.arg(2) as u32;
                        self.plat.push(What::Notification { task: me, bits });
                    } else if let (Some(g), Some(f)) = (is_dead_code(code), from) {
                        self.plat.push(What::DeadCode {
                            task: me,
                            peer: f.with_generation(g),
                            call: Sysnum::Recv,
                        });
                    }
                }
                (prev, TaskState::InReply(to)) if prev != TaskState::InReply(to) => {
                    let (op, ptr, len) = ((save.arg(0) >> 32) as u16, save.arg(1), save.arg(2));
                    let bytes = self.read(t, ptr, len);
                    let leases = self.leases(t);
                    self.last_op[t] = op;
                    let decoded = self.decoded(to.index(), op, Some((&bytes, &leases)), None);
                    self.plat.push(What::Message {
                        from: me,
                        to,
                        op,
                        len,
                        bytes,
                        leases,
                        decoded,
                    });
                }
                _ => {}
            }
        }
    }
}

/// Runs one configured machine to its end.
pub(crate) fn run(setup: Setup) -> Report {
    install_panic_hook();
    let n = setup.descs.len();
    let tasks: &'static mut [Task] = Box::leak(setup.descs.iter().map(|d| Task::new(d)).collect());
    let done = Arc::new(Done {
        report: Mutex::new(None),
        cv: Condvar::new(),
    });
    let plat = HostPlatform {
        now: 0,
        deadline: None,
        irq_enabled: BTreeMap::new(),
        descs: setup.descs,
        resets: Vec::new(),
        cause: None,
        booting: false,
        trace: Trace {
            tasks: setup.names,
            events: Vec::new(),
        },
        step: 0,
        line: Vec::new(),
        console: String::new(),
        finished: false,
        done: done.clone(),
    };
    let state = State {
        k: Kernel::new(tasks, setup.irqs),
        plat,
        chooser: match setup.script {
            Some(s) => Chooser::scripted(s),
            None => Chooser::seeded(setup.seed),
        },
        floating: setup.floating,
        token: None,
        epochs: vec![0; n],
        entries: setup.entries,
        threads: Vec::new(),
        actions: setup.actions.into_iter().collect(),
        decoders: setup.decoders,
        irq_sources: setup.irq_sources,
        note_sources: setup.note_sources,
        pending_irqs: BTreeSet::new(),
        last_op: vec![0; n],
        max_steps: setup.max_steps,
        clock_jitter_ms: setup.clock_jitter_ms,
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        cvs: (0..n).map(|_| Condvar::new()).collect(),
        done,
    });
    {
        let _h = InHarness::enter();
        let mut g = shared.lock();
        let st = &mut *g;
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| st.boot(&shared))) {
            st.unwound(p);
        }
    }
    shared.wake_all();

    match shared.wait_done(setup.wall_timeout) {
        Some(mut report) => {
            // The decisions taken and the machine's end state. Without
            // unwinding, a shutdown parks holding the lock: then there is
            // no record (replay needs an unwinding build: tests, `fuzz`).
            let g = if cfg!(panic = "unwind") {
                Some(shared.lock())
            } else {
                shared.state.try_lock().ok()
            };
            if let Some(g) = g {
                report.choices = g.chooser.record.clone();
                report.end_state = g.end_state(&report);
            }
            // With unwinding, retire every thread and wait for it, so no
            // incarnation outlives the run. Without, a thread may hold the
            // state lock forever (shutdown parks in place): leave them all.
            if cfg!(panic = "unwind") {
                let handles = std::mem::take(&mut shared.lock().threads);
                shared.wake_all();
                for h in handles {
                    let _ = h.join();
                }
            }
            report
        }
        None => {
            // Some task ran without making system calls for too long. Its
            // thread holds the token, not the lock (unless the harness
            // itself is stuck): finish with what was recorded.
            let report = match shared.state.try_lock() {
                Ok(mut g) => {
                    g.plat.push(What::Injected {
                        text: "wall-clock timeout".into(),
                    });
                    g.plat.finish(Outcome::WallTimeout);
                    drop(g);
                    shared.wake_all();
                    shared.wait_done(Duration::from_secs(1))
                }
                Err(_) => None,
            };
            report.unwrap_or(Report {
                outcome: Outcome::WallTimeout,
                trace: Trace::default(),
                steps: 0,
                now_ms: 0,
                console: String::new(),
                choices: Vec::new(),
                end_state: 0,
            })
        }
    }
}
