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
//!
//! Where each part lives: `worker` (the worker thread, driving one run's
//! coroutines, the caller's wait under the wall-clock limit), `coro` (task
//! coroutines, their stacks, the panic hook), `platform` (the host
//! `Platform` under the core: console, clock, shutdown, resets, the
//! report), `state` (the run's state and a system call handed to the core),
//! `schedule` (between steps: actions, timers and interrupts taken now or
//! later, the next task — the choice points), `inject` (injected kills,
//! faults, restarts, posts), `devices` (device hooks, notes, interrupt
//! lines, timers), `observe` (state changes turned into trace events).

mod coro;
mod devices;
mod inject;
mod lent;
mod observe;
mod platform;
mod schedule;
mod state;
mod worker;

use crate::rng::Chooser;
use crate::trace::{Decoder, Trace};
use crate::{Outcome, Report};
use abi::FaultKind;
use coro::install_panic_hook;
use kern::config::{IrqDesc, TaskDesc};
use kern::syscalls::Kernel;
use kern::task::Task;
pub(crate) use lent::Lent;
use platform::HostPlatform;
use state::State;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use worker::{submit, wait, Shared};

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
    /// What `descs` and `irqs` point into: freed after the run.
    pub lent: Lent,
}

/// Runs one configured machine to its end.
pub(crate) fn run(setup: Setup) -> Report {
    install_panic_hook();
    let n = setup.descs.len();
    // The core borrows its task table for `'static`, as in the image. It
    // is handed back (freed) once the run's state is gone, with the
    // descriptors it points to: a sweep of 10^6 runs would otherwise keep
    // every table (~1 KB per task).
    let mut lent = setup.lent;
    let tasks: &'static mut [Task] = lent.lend(setup.descs.iter().map(|d| Task::new(d)).collect());
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
    // without unwinding), the table and descriptors stay leaked.
    if let Ok(m) = Arc::try_unwrap(shared) {
        drop(m);
        // SAFETY: what was lent is reached only through the state just
        // dropped (the core's table and descriptors, the platform's
        // descriptors) and by task code, whose coroutines the worker retired
        // before it let go of the state; the report holds copies (names as
        // `String`s, message bytes), not references into it.
        unsafe { lent.free() };
    }
    report
}
