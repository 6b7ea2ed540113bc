//! The simulated machine: the kernel's portable core, task coroutines and
//! the CPU.
//!
//! Each task runs its real entry function on a stackful coroutine of its
//! own (`corosensei`); all coroutines of a machine run on one worker
//! thread, and "the CPU" is which coroutine that thread is running. A
//! system call suspends the task's coroutine with the call. The worker,
//! back on its own stack, locks the state, lets the core
//! (`kern::syscalls::Kernel`) handle the call exactly as the AArch64 kernel
//! would, performs the between-steps work (injected actions, device
//! interrupts, virtual time), picks the next task and resumes that task's
//! coroutine with its registers. A step is therefore a stack switch, not an
//! OS context switch. Because the core only touches task memory through the
//! region table, and every harness task has one region mapping virtual =
//! host addresses, the core copies messages and leases between the tasks'
//! own buffers (a suspended coroutine's stack stays where it is).
//!
//! A restart (`Platform::reset_task_memory`) retires the task's coroutine:
//! right after the step that reset it, the worker resumes it with
//! [`Resume::Retire`], it unwinds out of the system call it was suspended
//! in with a private marker, dropping everything the old incarnation owned,
//! and a fresh coroutine starts at the task's entry when the task is first
//! chosen to run. Finished coroutines give their stacks back to a pool of
//! the worker thread, so neither a restart nor a new run maps a stack once
//! the pool is warm.
//!
//! The worker thread is kept across runs (one per thread calling
//! `Harness::run`), so a run starts no thread. It exists for the wall-clock
//! limit: task code spinning without system calls cannot be interrupted,
//! so the caller waits for the report with a timeout, finishes the run
//! itself when it expires, and abandons that worker (it retires its
//! coroutines when the spinning task next enters the kernel, and exits).
//!
//! The workspace builds `dev` and `release` with `panic = "abort"`
//! (binaries like `trace`), where nothing can unwind. Then a retired
//! coroutine is leaked instead of unwound, a task's panic is turned into
//! `sys_panic` from inside the panic hook (as the image's panic handler
//! does) and that coroutine never runs again, and each run gets a worker
//! of its own (a shutdown parks it for good). The hook of that panic never
//! returns, so the standard library counts the worker thread as panicking
//! from then on: a second task panic in the same run aborts the process.
//! Tests and the explorer (`fuzz` profile) build with unwinding and get the
//! full behaviour.

use crate::rng::{ChoiceKind, Chooser};
use crate::trace::{Decoded, Decoder, Event, LeaseSummary, Trace, What};
use crate::{Outcome, Report};
use abi::{
    is_dead_code, FaultKind, Generation, LeaseDesc, Sysnum, TaskId, MAX_MESSAGE, RC_OK, REGION_READ,
};
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use kern::config::{IrqDesc, TaskDesc};
use kern::syscalls::{Kernel, Platform};
use kern::task::{Task, TaskState};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::thread;
use std::time::Duration;
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

/// Unwinds a retired task coroutine. Never seen outside this module.
struct Retired;
/// Unwinds out of `Platform::shutdown` back to the worker.
struct ShutdownSignal;

/// Most idle-loop iterations (time jumps, deliveries) without any task
/// becoming runnable before the run counts as stuck.
const MAX_IDLE_SPINS: u32 = 10_000;

/// Stack of each task coroutine: what a spawned thread gets by default
/// (task code ran on such threads before). Mapped lazily, so only the
/// pages a task touches cost memory.
const TASK_STACK: usize = 2 << 20;

/// Stacks kept for reuse per worker thread (a machine has at most
/// `abi::MAX_TASKS` coroutines alive, plus one being replaced).
const STACK_POOL: usize = 40;

/// With unwinding, a worker serves its caller's runs one after another.
/// Without, a shutdown parks the worker for good, so each run has its own.
const REUSE_WORKER: bool = cfg!(panic = "unwind");

/// What a suspended task coroutine is resumed with.
enum Resume {
    /// Run on: the task's x0..x5 (the result of its system call).
    Run([usize; 6]),
    /// This incarnation is over (restart, or the run ended): unwind.
    Retire,
}

/// What a task coroutine suspends with: a system call.
struct Call(Sysnum, [usize; 7]);

type TaskYielder = Yielder<Resume, Call>;
type TaskCoro = Coroutine<Resume, Call, (), DefaultStack>;

thread_local! {
    /// The yielder of the task coroutine this thread is running; null while
    /// the thread runs harness or kernel code (a panic there is a harness
    /// or kernel bug, not a task fault).
    static YIELDER: Cell<*const TaskYielder> = const { Cell::new(std::ptr::null()) };
    /// Set by the panic hook when task code panicked (as opposed to an
    /// unwind the coroutine library starts to destroy a coroutine).
    static TASK_PANICKED: Cell<bool> = const { Cell::new(false) };
    /// The last panic message seen by the hook on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Stacks of finished coroutines, for the next ones on this thread.
    static STACKS: RefCell<Vec<DefaultStack>> = const { RefCell::new(Vec::new()) };
    /// This thread's worker: where its runs are sent.
    static WORKER: RefCell<Option<Sender<Arc<Shared>>>> = const { RefCell::new(None) };
}

fn in_task() -> bool {
    !YIELDER.with(Cell::get).is_null()
}

/// Stops a retired incarnation: unwinds its coroutine to the task body.
fn retire() -> ! {
    #[cfg(panic = "unwind")]
    {
        panic::resume_unwind(Box::new(Retired))
    }
    // Without unwinding the worker never resumes a coroutine to retire it
    // (it leaks it instead), so this is not reached.
    #[cfg(not(panic = "unwind"))]
    std::process::abort()
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

/// Routes panics in task coroutines into the task-fault path; every other
/// panic goes to the hook that was installed before.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            // Same text as the image's panic handler hands to sys_panic,
            // on one line.
            let msg = format!("panic: {info}").replace('\n', " ");
            LAST_PANIC.with(|l| *l.borrow_mut() = Some(msg.clone()));
            if !in_task() {
                previous(info);
                return;
            }
            if cfg!(panic = "unwind") {
                // The task body catches the unwind and calls sys_panic; the
                // message is in LAST_PANIC.
                TASK_PANICKED.with(|f| f.set(true));
                return;
            }
            // Nothing can unwind: fault the task from here, like the image's
            // panic handler. The worker never resumes this coroutine again.
            let args = [msg.as_ptr() as usize, msg.len(), 0, 0, 0, 0, 0];
            enter(Sysnum::Panic, args);
            retire();
        }));
    });
}

/// The `HostKernel` of the worker thread: a system call suspends the
/// running task coroutine until the worker resumes it with the result.
struct CoroPort;

impl HostKernel for CoroPort {
    fn syscall(&self, num: Sysnum, args: [usize; 7]) -> [usize; 6] {
        if cfg!(panic = "unwind") && thread::panicking() {
            // Destructors of an incarnation that is unwinding (retired, or
            // dying of a panic) cannot reach the kernel: on the target that
            // task would already be stopped. Answer as if every peer were
            // gone. (An unwinding coroutine never suspends, so the thread's
            // panic count is this coroutine's.)
            return [abi::dead_code(Generation(0)) as usize, 0, 0, 0, 0, 0];
        }
        enter(num, args)
    }
}

/// Suspends the running task coroutine with a system call; returns its
/// result when the worker resumes it.
fn enter(num: Sysnum, args: [usize; 7]) -> [usize; 6] {
    let y = YIELDER.with(Cell::get);
    assert!(
        !y.is_null(),
        "harness: system call {num:?} outside a task (device hooks and test code cannot make one)"
    );
    YIELDER.with(|c| c.set(std::ptr::null()));
    // SAFETY: `YIELDER` is non-null only while the coroutine whose body
    // stored it runs (the body clears it before every switch away and sets
    // it again when it is resumed), and this code runs on that coroutine's
    // stack; the `Yielder` lives as long as the coroutine's body.
    let r = unsafe { &*y }.suspend(Call(num, args));
    YIELDER.with(|c| c.set(y));
    match r {
        Resume::Run(x) => x,
        Resume::Retire => retire(),
    }
}

/// The body of every task coroutine.
fn task_body(y: &TaskYielder, first: Resume, entry: Entry) {
    YIELDER.with(|c| c.set(y));
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
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
        if !p.is::<Retired>() {
            if !TASK_PANICKED.with(|f| f.replace(false)) {
                // Not a task panic: the coroutine library unwinding a
                // coroutine it drops. Let it through.
                YIELDER.with(|c| c.set(std::ptr::null()));
                panic::resume_unwind(p);
            }
            // Task code panicked and has unwound: report it the way the
            // image's panic handler does. The task is faulted; this call
            // returns only by unwinding once the incarnation is retired.
            let msg = LAST_PANIC
                .with(|l| l.borrow_mut().take())
                .unwrap_or_else(|| payload_text(&*p));
            drop(p);
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                userlib::sys_panic(msg.as_bytes());
            }));
            if let Err(p) = r {
                if !p.is::<Retired>() {
                    YIELDER.with(|c| c.set(std::ptr::null()));
                    panic::resume_unwind(p);
                }
            }
        }
    }
    YIELDER.with(|c| c.set(std::ptr::null()));
}

/// A coroutine for a fresh incarnation running `entry`, on a pooled stack.
fn new_coroutine(entry: Entry) -> std::io::Result<TaskCoro> {
    let stack = match STACKS.with(|s| s.borrow_mut().pop()) {
        Some(s) => s,
        None => DefaultStack::new(TASK_STACK)?,
    };
    Ok(Coroutine::with_stack(stack, move |y, first| {
        task_body(y, first, entry)
    }))
}

/// Ends an incarnation: unwinds its coroutine (dropping what it owned) and
/// keeps its stack for the next one.
fn retire_coroutine(mut c: TaskCoro) {
    if !cfg!(panic = "unwind") {
        // Nothing can unwind: leave the incarnation suspended for good, as
        // a parked thread would be.
        std::mem::forget(c);
        return;
    }
    if !c.done() {
        match panic::catch_unwind(AssertUnwindSafe(|| c.resume(Resume::Retire))) {
            Ok(CoroutineResult::Return(())) | Err(_) => {}
            // It made a system call instead of unwinding (task code caught
            // the marker): dropping it forces the unwind.
            Ok(CoroutineResult::Yield(_)) => {
                drop(c);
                return;
            }
        }
    }
    if c.done() {
        let stack = c.into_stack();
        STACKS.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < STACK_POOL {
                s.push(stack);
            }
        });
    }
}

/// A host stand-in for the machine under the core.
struct HostPlatform {
    now: u64,
    deadline: Option<u64>,
    irq_enabled: BTreeMap<u32, bool>,
    descs: Vec<&'static TaskDesc>,
    /// Tasks the core reset since the harness last looked (their
    /// coroutines must be replaced).
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
    /// The finished run's report, until the worker (or, after a wall-clock
    /// timeout, the caller) takes it.
    report: Option<Report>,
    /// Where the report goes to `Harness::run`.
    done: Sender<Report>,
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

    /// Ends the run with `outcome`; the report waits in `self.report`.
    fn finish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        if !self.line.is_empty() {
            self.flush_line();
        }
        self.finished = true;
        self.report = Some(Report {
            outcome,
            trace: Trace {
                tasks: self.trace.tasks.clone(),
                events: std::mem::take(&mut self.trace.events),
            },
            steps: self.step,
            now_ms: self.now,
            console: std::mem::take(&mut self.console),
            choices: Vec::new(),
            end_state: 0,
        });
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
        // Nothing can unwind: hand the report over from here; this worker
        // (holding the state lock) stops here for good.
        #[cfg(not(panic = "unwind"))]
        {
            if let Some(r) = self.report.take() {
                let _ = self.done.send(r);
            }
            loop {
                thread::park();
            }
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
    /// The task whose coroutine runs next (and, until then, ran last).
    token: Option<usize>,
    /// Tasks whose incarnation was replaced during this step, in order: the
    /// worker retires their coroutines and starts fresh ones.
    respawn: Vec<usize>,
    entries: Vec<Entry>,
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

/// A run's state, shared by the worker that drives it and the caller that
/// waits for it (which finishes it itself after a wall-clock timeout).
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Harness code never panics while holding the lock outside a
        // `catch_unwind`, but a poisoned lock must not hide the report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs one machine on this (worker) thread until it finishes; returns its
/// report (with the decisions taken and the end state), or None when the
/// caller already took it (wall-clock timeout).
fn drive(shared: &Shared) -> Option<Report> {
    let mut coros: Vec<Option<TaskCoro>> = Vec::new();
    {
        let mut g = shared.lock();
        coros.resize_with(g.k.tasks.len(), || None);
        let st = &mut *g;
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| st.boot())) {
            st.unwound(p);
        }
    }
    loop {
        let (t, regs) = {
            let mut g = shared.lock();
            respawn(&mut g, &mut coros);
            if g.plat.finished {
                break;
            }
            match g.token.filter(|&t| coros[t].is_some()) {
                Some(t) => {
                    let x = &g.k.tasks[t].save.x;
                    (t, [x[0], x[1], x[2], x[3], x[4], x[5]].map(|v| v as usize))
                }
                None => {
                    g.plat.finish(Outcome::KernelPanic(
                        "harness: the chosen task has no coroutine".into(),
                    ));
                    break;
                }
            }
        };
        let Some(c) = coros[t].as_mut() else { break };
        let r = panic::catch_unwind(AssertUnwindSafe(|| c.resume(Resume::Run(regs))));
        let mut g = shared.lock();
        if g.plat.finished {
            // The caller gave up waiting (wall-clock timeout).
            break;
        }
        match r {
            Ok(CoroutineResult::Yield(Call(num, args))) => {
                let st = &mut *g;
                let r = panic::catch_unwind(AssertUnwindSafe(|| st.syscall(t, num, args)));
                if let Err(p) = r {
                    st.unwound(p);
                }
            }
            Ok(CoroutineResult::Return(())) => {
                let name = g.plat.trace.tasks[t].clone();
                g.plat.finish(Outcome::KernelPanic(format!(
                    "harness: task {name}'s coroutine ended while it was running"
                )));
            }
            Err(p) => {
                let msg = LAST_PANIC
                    .with(|l| l.borrow_mut().take())
                    .unwrap_or_else(|| payload_text(&*p));
                g.plat.finish(Outcome::KernelPanic(msg));
            }
        }
    }
    let report = {
        let mut g = shared.lock();
        let mut report = g.plat.report.take();
        if let Some(r) = &mut report {
            r.choices = std::mem::take(&mut g.chooser.record);
            r.end_state = g.end_state(r);
        }
        report
    };
    // No incarnation outlives the run: every one unwinds before `run`
    // returns, in task order.
    for c in coros.into_iter().flatten() {
        retire_coroutine(c);
    }
    report
}

/// Replaces the coroutines of the tasks the core reset during the step.
fn respawn(g: &mut State, coros: &mut [Option<TaskCoro>]) {
    for i in std::mem::take(&mut g.respawn) {
        if let Some(old) = coros[i].take() {
            retire_coroutine(old);
        }
        match new_coroutine(g.entries[i].clone()) {
            Ok(c) => coros[i] = Some(c),
            Err(e) => {
                g.plat.finish(Outcome::KernelPanic(format!(
                    "harness: cannot map a task stack: {e}"
                )));
                return;
            }
        }
    }
}

/// The worker thread: drives the runs its caller sends, one at a time.
fn worker(jobs: Receiver<Arc<Shared>>) {
    userlib::host::install(Arc::new(CoroPort));
    while let Ok(shared) = jobs.recv() {
        let r = panic::catch_unwind(AssertUnwindSafe(|| drive(&shared)));
        let (report, done) = {
            let mut g = shared.lock();
            let report = match r {
                Ok(report) => report,
                // A bug in the worker's own code: still answer.
                Err(p) => {
                    g.plat.finish(Outcome::KernelPanic(payload_text(&*p)));
                    g.plat.report.take()
                }
            };
            (report, g.plat.done.clone())
        };
        // The caller holds the last reference: what the run owned is
        // dropped on its side once it is done with it.
        drop(shared);
        // Cache maintenance the tasks recorded on this thread (read only by
        // unit tests of the tasks, on threads of their own): not kept.
        let _ = userlib::cache::host_log();
        if let Some(report) = report {
            let _ = done.send(report);
        }
        if !REUSE_WORKER {
            return;
        }
    }
}

/// Hands `shared` to this thread's worker, starting one if there is none.
fn submit(shared: Arc<Shared>) -> Result<(), String> {
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        if let Some(tx) = w.as_ref() {
            if tx.send(shared.clone()).is_ok() {
                return Ok(());
            }
        }
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("harness-worker".into())
            .spawn(move || worker(rx))
            .map_err(|e| format!("harness: cannot start the worker thread: {e}"))?;
        tx.send(shared)
            .map_err(|_| "harness: the worker thread is gone".to_string())?;
        *w = REUSE_WORKER.then_some(tx);
        Ok(())
    })
}

/// Forgets this thread's worker (it is stuck in task code, or gone).
fn abandon_worker() {
    WORKER.with(|w| w.borrow_mut().take());
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

    fn boot(&mut self) {
        self.plat.booting = true;
        self.with_kernel(|k, p| k.boot(p));
        self.plat.booting = false;
        self.after_step();
    }

    fn syscall(&mut self, i: usize, num: Sysnum, args: [usize; 7]) {
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

    // ---------------------------------------------------------------------
    // Between steps
    // ---------------------------------------------------------------------

    /// Everything between one kernel entry and the next task running:
    /// queue restarted incarnations, injected actions, devices, time, and the
    /// choice of the next task.
    fn after_step(&mut self) {
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

    /// Queues a fresh incarnation for every task the core reset; the worker
    /// retires the old coroutine and starts the new one after this step.
    fn spawn_resets(&mut self) {
        for i in std::mem::take(&mut self.plat.resets) {
            self.last_op[i] = 0;
            self.respawn.push(i);
        }
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
            // readable regions; on the host those are the task coroutine's own
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
    // The core borrows its task table for `'static`, as in the image. It
    // is handed back (freed) once the run's state is gone: a sweep of 10^6
    // runs would otherwise keep every table (~1 KB per task).
    let table: *mut [Task] = Box::into_raw(setup.descs.iter().map(|d| Task::new(d)).collect());
    // SAFETY: `table` is a fresh allocation; this is the only reference made
    // from it, and it is given to the core only (see the end of `run`).
    let tasks: &'static mut [Task] = unsafe { &mut *table };
    let (done, reports) = mpsc::channel();
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
        report: None,
        done,
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
        respawn: Vec::new(),
        entries: setup.entries,
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
    });
    let bare = |outcome| Report {
        outcome,
        trace: Trace::default(),
        steps: 0,
        now_ms: 0,
        console: String::new(),
        choices: Vec::new(),
        end_state: 0,
    };
    if let Err(e) = submit(shared.clone()) {
        return bare(Outcome::KernelPanic(e));
    }
    let report = wait(&shared, &reports, setup.wall_timeout, bare);
    // The worker dropped its reference before sending the report; if one
    // is left (a worker abandoned after a timeout, or parked in a shutdown
    // without unwinding), the table stays leaked.
    if let Ok(m) = Arc::try_unwrap(shared) {
        drop(m);
        // SAFETY: the only reference to the table was the core's, inside
        // the state just dropped (the worker's coroutines, which never see
        // it, are all retired); `table` came from `Box::into_raw` above.
        drop(unsafe { Box::from_raw(table) });
    }
    report
}

/// Waits for the worker's report, or finishes the run after `limit`.
fn wait(
    shared: &Shared,
    reports: &Receiver<Report>,
    limit: Duration,
    bare: impl Fn(Outcome) -> Report,
) -> Report {
    match reports.recv_timeout(limit) {
        Ok(report) => report,
        Err(RecvTimeoutError::Disconnected) => {
            abandon_worker();
            bare(Outcome::KernelPanic(
                "harness: the worker thread died".into(),
            ))
        }
        Err(RecvTimeoutError::Timeout) => {
            // Some task ran without making system calls for too long. The
            // worker is inside its coroutine, not holding the lock (unless
            // the harness itself is stuck): finish with what was recorded.
            // The worker finds the run over when the task next enters the
            // kernel, retires its coroutines and exits; this thread gets a
            // new worker for its next run.
            abandon_worker();
            let report = match shared.state.try_lock() {
                Ok(mut g) if !g.plat.finished => {
                    g.plat.push(What::Injected {
                        text: "wall-clock timeout".into(),
                    });
                    g.plat.finish(Outcome::WallTimeout);
                    g.plat.report.take()
                }
                // It finished meanwhile: its report is on the way.
                Ok(g) => {
                    drop(g);
                    reports.recv_timeout(Duration::from_secs(1)).ok()
                }
                Err(_) => None,
            };
            report.unwrap_or_else(|| bare(Outcome::WallTimeout))
        }
    }
}
