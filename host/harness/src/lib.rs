//! The IPC-level host harness: real task code, on host coroutines, under
//! the kernel's own IPC semantics.
//!
//! - **Same code.** Task entry functions (`supervisor::run`, servers written
//!   against `userlib` or generated IDL stubs) run unchanged; their system
//!   calls reach `kern::syscalls::Kernel`, the portable core the AArch64
//!   kernel runs. Priorities, send/receive/reply, leases, notifications,
//!   generations, dead codes and task-slot checks all come from that code.
//! - **One CPU.** Each task runs on a stackful coroutine; exactly one runs
//!   at a time, the others are suspended in a system call. A machine's
//!   coroutines share one worker thread. See `machine` for how.
//! - **Deterministic.** The seed decides every choice the machine leaves
//!   open: which of several runnable equal-priority tasks runs, when a due
//!   timer or interrupt is taken, how far the virtual clock moves per step.
//!   One seed gives one interleaving and a byte-identical [`Trace`].
//! - **Faults and restarts.** A panic in task code (or `sys_panic`) faults
//!   the task; the real supervisor restarts it; the old coroutine is
//!   unwound and a new one runs the entry again. Tests inject kills, restarts,
//!   posts and interrupts at chosen steps ([`Action`]) and plug devices in
//!   ([`Harness::irq_source`]).
//! - **Bounded.** Every run stops after `max_steps` kernel entries (and a
//!   wall-clock limit against a task spinning without system calls), so a
//!   bug fails a test instead of hanging it.
//!
//! Host limits: every task has one `host` region spanning the address
//! space (virtual = host address), so memory isolation is not modelled —
//! a task that touches a wild pointer crashes the harness, not itself.
//! Assert in the test body, not in task code: a panic in task code is a
//! task fault, exactly as on the target.

pub mod death_scenarios;
pub mod explore;
mod machine;
pub mod pasid_scenarios;
pub mod prq;
pub mod prq_scenarios;
mod rng;
pub use rng::{decode as decode_choices, encode as encode_choices, Choice, ChoiceKind};
pub mod scenarios;
pub mod smmu;
mod svg;
pub mod trace;
pub mod vmm;
pub mod vmm_scenarios;

pub use abi::{FaultKind, TaskId};
pub use kern::config::{CAP_MEMORY_QUERY, CAP_SHUTDOWN, CAP_TASK_CONTROL};
pub use trace::{Decoded, Decoder, Event, LeaseSummary, Trace, What};

use abi::{REGION_READ, REGION_WRITE};
use kern::config::{IrqDesc, PhysSource, RegionDesc, TaskDesc};
use machine::{Act, Entry, IrqSource, Lent, NoteSource, Setup};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default bound on kernel entries per run.
pub const DEFAULT_MAX_STEPS: u64 = 20_000;
/// Priority the built-in supervisor runs at (the highest).
pub const SUPERVISOR_PRIORITY: u8 = 0;
/// The lowest priority the build accepts (as xtask's app.toml check).
pub const LOWEST_PRIORITY: u8 = 15;

/// One task of a harness machine.
#[derive(Clone)]
pub struct TaskSpec {
    name: String,
    priority: u8,
    entry: Entry,
    slots: Vec<String>,
    /// Lower-priority peers it may only post to (see [`TaskSpec::posts`]).
    posts: Vec<String>,
    capabilities: u32,
    start: bool,
    regions: Vec<(String, Option<usize>, usize, u32)>,
    irqs: Vec<(u32, u32)>,
}

impl TaskSpec {
    /// A task called `name` at `priority` (0 is the highest) running `entry`.
    /// A task's entry never returns on the target; if it returns here, the
    /// task blocks for good in a receive that nothing completes.
    pub fn new(name: &str, priority: u8, entry: impl Fn() + Send + Sync + 'static) -> Self {
        TaskSpec {
            name: name.to_string(),
            priority,
            entry: Arc::new(entry),
            slots: Vec::new(),
            posts: Vec::new(),
            capabilities: 0,
            start: true,
            regions: Vec::new(),
            irqs: Vec::new(),
        }
    }

    /// Peers it may only post notifications to (app.toml `posts`), at any
    /// priority (prq-server → VMs and iommu-server: the servers rank above
    /// their callers and never send to them). They become the kernel
    /// table's `post_slots`, checked by the same core as the image's: a
    /// send to one of them faults the sender (`SlotViolation`).
    pub fn posts(mut self, names: &[&str]) -> Self {
        self.posts.extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// The peers it may send and post to (app.toml `task-slots`). Each must
    /// have a strictly higher priority, as the image build requires.
    pub fn slots(mut self, names: &[&str]) -> Self {
        self.slots.extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// `CAP_*` bits (app.toml `caps`).
    pub fn caps(mut self, capabilities: u32) -> Self {
        self.capabilities |= capabilities;
        self
    }

    /// Not started at boot (app.toml `start = false`).
    pub fn stopped(mut self) -> Self {
        self.start = false;
        self
    }

    /// A zeroed memory region the task finds with `sys_region_info(name)`.
    /// It is not reset by a restart (like DMA memory in the image); it is
    /// freed when the run ends.
    pub fn region(mut self, name: &str, size: usize, attributes: u32) -> Self {
        self.regions
            .push((name.to_string(), None, size, attributes));
        self
    }

    /// A region over memory the caller provides — e.g. queue memory a
    /// device model shares with its driver. The caller keeps `[base,
    /// base + size)` alive and valid for the whole run; the harness never
    /// touches it itself (only task code, and the core if a task uses it
    /// as an IPC buffer).
    pub fn region_at(mut self, name: &str, base: usize, size: usize, attributes: u32) -> Self {
        self.regions
            .push((name.to_string(), Some(base), size, attributes));
        self
    }

    /// A region naming memory of a device model — e.g. RAM in an SMMU
    /// model's `PhysMem` — rather than host memory: `sys_region_info(name)`
    /// reports `[pa, pa + size)` as both its virtual and its physical
    /// range, the way the image reports a DMA region, and task code reaches
    /// the bytes only through the model, never by dereferencing the address
    /// (nothing of the host is mapped there). The harness never touches it.
    pub fn model_region(mut self, name: &str, pa: u64, size: usize, attributes: u32) -> Self {
        self.regions
            .push((name.to_string(), Some(pa as usize), size, attributes));
        self
    }

    /// An interrupt line it owns, delivered as notification `bits`.
    pub fn irq(mut self, intid: u32, bits: u32) -> Self {
        self.irqs.push((intid, bits));
        self
    }
}

/// Something a test injects between two steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fault the task as if it crashed (kind `Panic`, detail 0): the
    /// supervisor sees it and restarts it.
    Kill(String),
    /// Fault the task with a chosen kind and detail.
    Fault(String, FaultKind, usize),
    /// Restart the task directly (as task control would), new generation.
    Restart(String),
    /// Raise an interrupt line (delivered when its owner has it enabled).
    Irq(u32),
    /// Post notification bits to a task, as the kernel would.
    Post(String, u32),
}

impl Action {
    pub fn kill(task: &str) -> Self {
        Action::Kill(task.to_string())
    }
    pub fn restart(task: &str) -> Self {
        Action::Restart(task.to_string())
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A task called `sys_shutdown`, or the supervisor faulted (status
    /// `kern::EXIT_SUPERVISOR_FAULT`).
    Shutdown(u32),
    /// Every task is blocked and nothing is pending: no timer, no
    /// deliverable interrupt, no action left.
    Idle,
    /// The step limit was reached (a livelock, or a test that needs more).
    StepLimit(u64),
    /// Harness or kernel code panicked (a bug there, not in a task).
    KernelPanic(String),
    /// A task ran for too long (wall clock) without a system call.
    WallTimeout,
}

/// The result of [`Harness::run`].
#[derive(Clone, Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub trace: Trace,
    /// Kernel entries made.
    pub steps: u64,
    /// Virtual time at the end.
    pub now_ms: u64,
    /// Everything written to the console.
    pub console: String,
    /// Every decision the run took, in order (see [`Harness::choices`]).
    pub choices: Vec<Choice>,
    /// A hash of the machine's end state (outcome, console, task states).
    pub end_state: u64,
}

impl Report {
    /// The run's decisions as a one-line replay string: giving it to
    /// [`Harness::choices`] (after [`decode_choices`]) reruns this schedule.
    pub fn replay(&self) -> String {
        encode_choices(&self.choices.iter().map(|c| c.value).collect::<Vec<_>>())
    }

    /// Panics with the end of the trace unless the run ended as `expected`.
    pub fn expect(&self, expected: Outcome) -> &Self {
        if self.outcome != expected {
            panic!(
                "harness run ended with {:?}, expected {:?}, after {} steps\nreplay (Harness::choices): {}\n--- end of trace ---\n{}",
                self.outcome,
                expected,
                self.steps,
                self.replay(),
                self.trace.tail_text(60)
            );
        }
        self
    }

    pub fn expect_shutdown(&self, status: u32) -> &Self {
        self.expect(Outcome::Shutdown(status))
    }

    pub fn expect_idle(&self) -> &Self {
        self.expect(Outcome::Idle)
    }
}

/// Builds and runs one harness machine.
pub struct Harness {
    seed: u64,
    script: Option<Vec<u32>>,
    floating: Vec<(u64, u64, Action)>,
    tasks: Vec<TaskSpec>,
    actions: Vec<(u64, Action)>,
    decoders: Vec<(String, Arc<dyn Decoder>)>,
    irq_sources: Vec<IrqSource>,
    note_sources: Vec<NoteSource>,
    max_steps: u64,
    clock_jitter_ms: u64,
    wall_timeout: Duration,
    /// Invariant checks run on the report at the end of [`Harness::run`].
    end_checks: Vec<EndCheck>,
}

/// A check of a finished run: `Err(why)` fails the run (it panics with why
/// and the end of the trace).
pub type EndCheck = Arc<dyn Fn(&Report) -> Result<(), String> + Send + Sync>;

impl Harness {
    /// A machine whose task 0 is the real supervisor (`supervisor::run`,
    /// priority 0, task-control and shutdown capabilities), as in app.toml.
    pub fn new(seed: u64) -> Self {
        let sup = TaskSpec::new("supervisor", SUPERVISOR_PRIORITY, || supervisor::run())
            .caps(CAP_TASK_CONTROL | CAP_SHUTDOWN);
        Self::without_supervisor(seed).task(sup)
    }

    /// A machine with no built-in task: the first task added is task 0 and
    /// receives the kernel's fault notifications (and its own fault stops
    /// the machine).
    pub fn without_supervisor(seed: u64) -> Self {
        Harness {
            seed,
            script: None,
            floating: Vec::new(),
            tasks: Vec::new(),
            actions: Vec::new(),
            decoders: Vec::new(),
            irq_sources: Vec::new(),
            note_sources: Vec::new(),
            max_steps: DEFAULT_MAX_STEPS,
            clock_jitter_ms: 1,
            wall_timeout: Duration::from_secs(60),
            end_checks: Vec::new(),
        }
    }

    /// The death watchers the built-in supervisor may post (app.toml: the
    /// supervisor's `posts`; `supervisor::WATCHERS` names who it looks for).
    pub fn supervisor_posts(mut self, names: &[&str]) -> Self {
        if let Some(t) = self.tasks.first_mut().filter(|t| t.name == "supervisor") {
            t.posts.extend(names.iter().map(|s| s.to_string()));
        }
        self
    }

    /// The built-in supervisor (the real code, `supervisor::run_with`) with
    /// another restart hold-off: a quick re-fault waits `min_ms`, doubling
    /// up to `max_ms`. For a test that must keep a task down for a while
    /// (the death-log overflow); every other run uses the image's policy.
    pub fn supervisor_holdoff(mut self, min_ms: u64, max_ms: u64) -> Self {
        if let Some(t) = self.tasks.first_mut().filter(|t| t.name == "supervisor") {
            t.entry =
                Arc::new(move || supervisor::run_with(supervisor::Holdoff { min_ms, max_ms }));
        }
        self
    }

    pub fn task(mut self, spec: TaskSpec) -> Self {
        self.tasks.push(spec);
        self
    }

    /// Injects `action` once `step` kernel entries have happened (0: at boot,
    /// before any task runs). If every task blocks before that step, the
    /// action happens then.
    pub fn at_step(mut self, step: u64, action: Action) -> Self {
        self.actions.push((step, action));
        self
    }

    /// Decodes messages received by `task` (and their replies) in traces.
    pub fn decoder(mut self, task: &str, decoder: impl Decoder + 'static) -> Self {
        self.decoders.push((task.to_string(), Arc::new(decoder)));
        self
    }

    /// A device hook, polled between steps with (step, now in ms); the lines
    /// it returns are raised (e.g. an SMMU model's `take_irqs()`).
    pub fn irq_source(mut self, source: impl FnMut(u64, u64) -> Vec<u32> + Send + 'static) -> Self {
        self.irq_sources.push(Box::new(source));
        self
    }

    /// An annotation hook (e.g. the commands an SMMU model executed),
    /// recorded as [`What::Note`] events. It is polled whenever a task
    /// enters the kernel — its notes go on that task's lifeline, since they
    /// happened while it ran — and between steps after the device hooks
    /// (notes of no task). Return nothing when there is nothing new.
    pub fn note_source(mut self, source: impl FnMut() -> Vec<String> + Send + 'static) -> Self {
        self.note_sources.push(Box::new(source));
        self
    }

    /// Takes every open decision from `values` instead of the seed, then
    /// 0 (the default: the last task goes on, due events happen now,
    /// floating actions wait to their last step). A [`Report::replay`]
    /// string decoded gives the same schedule again.
    pub fn choices(mut self, values: Vec<u32>) -> Self {
        self.script = Some(values);
        self
    }

    /// Injects `action` at a step that is itself a choice, somewhere in
    /// `from..=until` (at `until` at the latest): the explorer tries every
    /// step of the window.
    pub fn at_some_step(mut self, from: u64, until: u64, action: Action) -> Self {
        self.floating.push((from, until.max(from), action));
        self
    }

    pub fn max_steps(mut self, steps: u64) -> Self {
        self.max_steps = steps;
        self
    }

    /// The virtual clock advances by 0..=`ms` (seeded) per step.
    pub fn clock_jitter(mut self, ms: u64) -> Self {
        self.clock_jitter_ms = ms;
        self
    }

    pub fn wall_timeout(mut self, limit: Duration) -> Self {
        self.wall_timeout = limit;
        self
    }

    /// Runs the machine until shutdown, idle, or a limit.
    ///
    /// Panics if the configuration is one the image build would reject
    /// (unknown or lower-priority slot, duplicate names or interrupts).
    pub fn run(self) -> Report {
        let checks = self.end_checks.clone();
        let report = machine::run(self.setup());
        for c in &checks {
            if let Err(why) = c(&report) {
                panic!(
                    "end-of-run check failed: {why}\n--- end of trace ---\n{}",
                    report.trace.tail_text(60)
                );
            }
        }
        report
    }

    /// Adds an invariant check of the finished run (e.g. I3 on every run
    /// with pasid-alloc: [`smmu::check_i3`]).
    pub fn end_check(
        mut self,
        check: impl Fn(&Report) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.end_checks.push(Arc::new(check));
        self
    }

    fn setup(self) -> Setup {
        let names: Vec<String> = self.tasks.iter().map(|t| t.name.clone()).collect();
        assert!(!names.is_empty(), "harness: no tasks");
        assert!(
            names.len() <= abi::MAX_TASKS,
            "harness: more than {} tasks",
            abi::MAX_TASKS
        );
        let index = |what: &str, name: &str| -> usize {
            names
                .iter()
                .position(|n| n == name)
                .unwrap_or_else(|| panic!("harness: {what} names unknown task {name:?}"))
        };
        for (i, n) in names.iter().enumerate() {
            assert!(
                index("a name", n) == i,
                "harness: two tasks are called {n:?}"
            );
        }
        // The run's `'static` descriptor tables, freed after it.
        let mut lent = Lent::default();
        let mut descs = Vec::new();
        let mut irqs = Vec::new();
        for (i, t) in self.tasks.iter().enumerate() {
            assert!(
                t.priority <= LOWEST_PRIORITY,
                "harness: {}: priority {} is out of range",
                t.name,
                t.priority
            );
            let mut slots = Vec::new();
            for s in &t.slots {
                let target = index(&format!("{}'s task-slots", t.name), s);
                // The image build's priority rule: send only upward.
                assert!(
                    self.tasks[target].priority < t.priority,
                    "harness: {}: slot {s:?} has priority {}, not strictly higher than {}",
                    t.name,
                    self.tasks[target].priority,
                    t.priority
                );
                slots.push(target as u16);
            }
            let mut posts = Vec::new();
            for s in &t.posts {
                posts.push(index(&format!("{}'s posts", t.name), s) as u16);
            }
            let mut regions = vec![RegionDesc {
                name: "host",
                va: 0,
                size: usize::MAX,
                attributes: REGION_READ | REGION_WRITE,
                phys: PhysSource::Fixed(0),
            }];
            for (name, at, size, attributes) in &t.regions {
                // Lent to the run: the descriptor table is `'static`, as in
                // the image, and a region outlives every incarnation of its
                // task.
                let base = match at {
                    Some(base) => *base,
                    None => lent.lend(vec![0u8; *size].into_boxed_slice()).as_mut_ptr() as usize,
                };
                regions.push(RegionDesc {
                    name: lent.lend(name.clone().into_boxed_str()),
                    va: base,
                    size: *size,
                    attributes: *attributes,
                    phys: PhysSource::Fixed(base),
                });
            }
            for &(intid, notification) in &t.irqs {
                assert!(
                    !irqs.iter().any(|d: &IrqDesc| d.intid == intid),
                    "harness: interrupt {intid} has two owners"
                );
                irqs.push(IrqDesc {
                    intid,
                    task: i as u16,
                    notification,
                    edge: true,
                });
            }
            let name: &'static str = lent.lend(t.name.clone().into_boxed_str());
            let task_slots: &'static [u16] = lent.lend(slots.into_boxed_slice());
            let post_slots: &'static [u16] = lent.lend(posts.into_boxed_slice());
            let regions: &'static [RegionDesc] = lent.lend(regions.into_boxed_slice());
            let desc: &'static TaskDesc = lent.lend(Box::new(TaskDesc {
                name,
                priority: t.priority,
                // The core stores these in the saved pc/sp; a host
                // coroutine has its own, so they only identify the task.
                entry: i,
                stack_top: 0,
                task_slots,
                post_slots,
                reg_windows: &[],
                regions,
                capabilities: t.capabilities,
                start: t.start,
                vm_guest: None,
            }));
            descs.push(desc);
        }
        let resolve = |a: &Action| -> Act {
            match a {
                Action::Kill(t) => Act::Fault(index("Kill", t), FaultKind::Panic, 0),
                Action::Fault(t, kind, detail) => Act::Fault(index("Fault", t), *kind, *detail),
                Action::Restart(t) => Act::Restart(index("Restart", t)),
                Action::Irq(intid) => Act::Irq(*intid),
                Action::Post(t, bits) => Act::Post(index("Post", t), *bits),
            }
        };
        let floating = self
            .floating
            .iter()
            .map(|(f, u, a)| (*f, *u, resolve(a)))
            .collect();
        let mut actions: Vec<(u64, Act)> = self
            .actions
            .iter()
            .map(|(step, a)| {
                let act = match a {
                    Action::Kill(t) => Act::Fault(index("Kill", t), FaultKind::Panic, 0),
                    Action::Fault(t, kind, detail) => Act::Fault(index("Fault", t), *kind, *detail),
                    Action::Restart(t) => Act::Restart(index("Restart", t)),
                    Action::Irq(intid) => Act::Irq(*intid),
                    Action::Post(t, bits) => Act::Post(index("Post", t), *bits),
                };
                (*step, act)
            })
            .collect();
        actions.sort_by_key(|(step, _)| *step);
        let mut decoders: Vec<Option<Arc<dyn Decoder>>> = vec![None; names.len()];
        for (t, d) in self.decoders {
            decoders[index("a decoder", &t)] = Some(d);
        }
        Setup {
            seed: self.seed,
            script: self.script,
            floating,
            entries: self.tasks.iter().map(|t| t.entry.clone()).collect(),
            names,
            descs,
            irqs: lent.lend(irqs.into_boxed_slice()),
            actions,
            decoders,
            irq_sources: self.irq_sources,
            note_sources: self.note_sources,
            max_steps: self.max_steps,
            clock_jitter_ms: self.clock_jitter_ms,
            wall_timeout: self.wall_timeout,
            lent,
        }
    }
}

/// A shared log that task code appends to and the test reads afterwards.
/// Only one task runs at a time, so its order is the run's order.
#[derive(Clone, Default)]
pub struct Probe(Arc<Mutex<Vec<String>>>);

impl Probe {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&self, s: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.into());
    }
    pub fn get(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
