//! A system-call fuzzer over the kernel's portable core (`cargo xtask fuzz
//! kernel`).
//!
//! It drives `kern::syscalls::Kernel` — the code the AArch64 kernel runs —
//! the way the exception entry does: the running task's registers get a
//! system-call number and arguments, then `Kernel::syscall`; between calls
//! the "hardware" raises interrupts, moves time (timer ticks), and takes
//! data aborts from the running task. Six tasks with real, separate memory
//! (text, stack, data, a DMA region, an MMIO region) issue random system
//! calls: valid and invalid numbers, task ids of every generation, pointers
//! into their own memory, other windows, the kernel's own addresses and
//! values that wrap, lengths from 0 to huge, lease tables with wild bases,
//! any notification bits. The supervisor mostly does its real job (restart
//! what faulted) so that machines live long.
//!
//! After every event the task table is checked (`check`): no lost wakeup,
//! no task blocked on a stale or nonexistent id, the scheduling invariant,
//! no armed timer missed, generations equal to the restarts the platform
//! saw, no write outside a task's writable regions (guard bytes), text
//! never written, and the console output of one call within the bound
//! docs/kernel.md states. A panic of the core is a failure. Seeded and
//! reproducible: a failure names the seed, the machine and the step.
//!
//! Unlike the IPC harness (which gives every task one region spanning the
//! host address space), each task here owns exactly its regions, so the
//! core's range checks are what stand between a wild pointer and the host
//! process.

use crate::Rng;
use abi::{
    layout, LeaseDesc, Sysnum, TaskControl, TaskId, MAX_LEASES, REGION_DEVICE, REGION_DMA,
    REGION_EXECUTE, REGION_READ, REGION_WRITE, SUPERVISOR_FAULT_BIT,
};
use kern::config::{
    IrqDesc, PhysSource, RegWindow, RegionDesc, StaticPtr, TaskDesc, CAP_MEMORY_QUERY,
    CAP_SHUTDOWN, CAP_TASK_CONTROL,
};
use kern::syscalls::{Kernel, Platform, LOG_MAX_BYTES, LOG_MAX_LINES, PANIC_MAX_BYTES};
use kern::task::{region_pa, zeroed_on_restart, Task, TaskState};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Guard bytes on each side of every region's backing memory.
const GUARD: usize = 64;
const GUARD_BYTE: u8 = 0xE7;
const TEXT_BYTE: u8 = 0xC3;
/// Physical address of the fake MMIO region: never backed, so a kernel that
/// dereferenced it would crash the fuzzer.
const MMIO_PA: usize = 0x0dea_d000;

/// One task of the fuzz machine.
struct Spec {
    name: &'static str,
    priority: u8,
    slots: &'static [u16],
    caps: u32,
    start: bool,
    /// Holds an MMIO region (what decides who an SError is charged to).
    mmio: bool,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "supervisor",
        priority: 0,
        slots: &[],
        caps: CAP_TASK_CONTROL | CAP_SHUTDOWN,
        start: true,
        mmio: false,
    },
    Spec {
        name: "driver",
        priority: 1,
        slots: &[],
        caps: CAP_MEMORY_QUERY,
        start: true,
        mmio: true,
    },
    Spec {
        name: "server",
        priority: 2,
        slots: &[1],
        caps: 0,
        start: true,
        mmio: true,
    },
    Spec {
        name: "client-a",
        priority: 3,
        slots: &[1, 2],
        caps: 0,
        start: true,
        mmio: true,
    },
    Spec {
        name: "client-b",
        priority: 3,
        slots: &[1, 2],
        caps: 0,
        start: true,
        mmio: false,
    },
    Spec {
        name: "late",
        priority: 4,
        slots: &[0, 1, 2, 3],
        caps: CAP_SHUTDOWN,
        start: false,
        mmio: false,
    },
];

/// Interrupts: (intid, owner, bits).
const IRQS: &[(u32, u16, u32)] = &[(40, 1, 1 << 1), (41, 1, 1 << 2), (42, 2, 1 << 5)];

/// A second machine: two servers of equal priority (ties in receive and
/// scheduling), a middle task that is both client and server, interrupts
/// on three tasks with a bit shared by two owners.
const SPECS_B: &[Spec] = &[
    Spec {
        name: "supervisor",
        priority: 0,
        slots: &[],
        caps: CAP_TASK_CONTROL | CAP_SHUTDOWN,
        start: true,
        mmio: false,
    },
    Spec {
        name: "srv-a",
        priority: 1,
        slots: &[],
        caps: CAP_MEMORY_QUERY,
        start: true,
        mmio: true,
    },
    Spec {
        name: "srv-b",
        priority: 1,
        slots: &[],
        caps: 0,
        start: true,
        mmio: true,
    },
    Spec {
        name: "mid",
        priority: 2,
        slots: &[1, 2],
        caps: 0,
        start: true,
        mmio: false,
    },
    Spec {
        name: "cli-a",
        priority: 3,
        slots: &[1, 2, 3],
        caps: 0,
        start: true,
        mmio: false,
    },
    Spec {
        name: "cli-b",
        priority: 3,
        slots: &[0, 1, 2, 3],
        caps: CAP_SHUTDOWN,
        start: true,
        mmio: true,
    },
];
const IRQS_B: &[(u32, u16, u32)] = &[
    (40, 1, 1 << 1),
    (41, 2, 1 << 1),
    (42, 3, 1 << 7),
    (43, 2, 1 << 30),
];

/// Interrupt lines of a machine: (intid, owner, bits).
type Irqs = &'static [(u32, u16, u32)];

/// The machines the fuzzer alternates between.
const TOPOLOGIES: &[(&[Spec], Irqs)] = &[(SPECS, IRQS), (SPECS_B, IRQS_B)];

/// Sizes of the regions every task has, in table order.
const TEXT: usize = 0x1000;
const STACK: usize = 0x2000;
const DATA: usize = 0x1000;
const MEM: usize = 0x2000;
const MMIO: usize = 0x1000;

/// Task window addresses (the same for every task, as on the target).
const STACK_VA: usize = layout::TASK_DATA - STACK;
const MEM_VA: usize = layout::TASK_REGIONS;
const MMIO_VA: usize = layout::TASK_REGIONS + 0x20_0000;

/// Backing memory of one region, with its guards.
struct Backing {
    /// Start of the allocation (guard included).
    base: *mut u8,
    size: usize,
}

impl Backing {
    fn new(size: usize) -> Backing {
        let v: &'static mut [u8] = Box::leak(vec![GUARD_BYTE; size + 2 * GUARD].into_boxed_slice());
        // Page alignment is not needed on the host; the kernel reaches the
        // region at `pa` exactly as on the target.
        Backing {
            base: v.as_mut_ptr(),
            size,
        }
    }
    fn pa(&self) -> usize {
        self.base as usize + GUARD
    }
    // The memory is not owned by `self`: it is the leaked backing the
    // kernel reaches by address; `&self` only names it.
    #[allow(clippy::mut_from_ref)]
    fn bytes(&self) -> &mut [u8] {
        // SAFETY: leaked allocation of `size + 2 * GUARD` bytes; the fuzzer
        // is single-threaded and the kernel is not running meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.size + 2 * GUARD) }
    }
}

/// The static part of the machine: built once per process and leaked, as
/// the image's tables are statics.
pub struct World {
    descs: &'static [TaskDesc],
    irqs: &'static [IrqDesc],
    /// Per task: text, stack, data, mem backings.
    mem: Vec<[Backing; 4]>,
}

impl World {
    /// Topology `which` of [`TOPOLOGIES`].
    pub fn new(which: usize) -> World {
        let (specs, irqs) = TOPOLOGIES[which];
        let mut descs = Vec::new();
        let mut mem = Vec::new();
        for s in specs {
            let b = [
                Backing::new(TEXT),
                Backing::new(STACK),
                Backing::new(DATA),
                Backing::new(MEM),
            ];
            let st = |b: &Backing| PhysSource::Static(StaticPtr(b.pa() as *const u8));
            let regions = vec![
                RegionDesc {
                    name: "text",
                    va: layout::TASK_TEXT,
                    size: TEXT,
                    attributes: REGION_READ | REGION_EXECUTE,
                    phys: st(&b[0]),
                },
                RegionDesc {
                    name: "stack",
                    va: STACK_VA,
                    size: STACK,
                    attributes: REGION_READ | REGION_WRITE,
                    phys: st(&b[1]),
                },
                RegionDesc {
                    name: "data",
                    va: layout::TASK_DATA,
                    size: DATA,
                    attributes: REGION_READ | REGION_WRITE,
                    phys: st(&b[2]),
                },
                RegionDesc {
                    name: "mem",
                    va: MEM_VA,
                    size: MEM,
                    attributes: REGION_READ | REGION_WRITE | REGION_DMA,
                    phys: st(&b[3]),
                },
            ];
            let mut regions = regions;
            if s.mmio {
                regions.push(RegionDesc {
                    name: "mmio",
                    va: MMIO_VA,
                    size: MMIO,
                    attributes: REGION_READ | REGION_WRITE | REGION_DEVICE,
                    phys: PhysSource::Fixed(MMIO_PA),
                });
            }
            descs.push(TaskDesc {
                name: s.name,
                priority: s.priority,
                entry: layout::TASK_TEXT,
                stack_top: layout::TASK_DATA,
                task_slots: s.slots,
                // The driver (index 1, above the clients) may post to
                // client-a without a slot, as prq-server posts its callers.
                post_slots: if s.name == "driver" { &[3] } else { &[] },
                // And has one register window, over four words of host
                // memory standing in for device registers.
                reg_windows: if s.name == "driver" {
                    let regs: &'static mut [u32; 4] = Box::leak(Box::new([0; 4]));
                    Box::leak(Box::new([RegWindow {
                        name: "regs",
                        base: regs.as_mut_ptr() as usize,
                        offsets: &[0, 4, 8, 12],
                    }]))
                } else {
                    &[]
                },
                regions: Box::leak(regions.into_boxed_slice()),
                capabilities: s.caps,
                start: s.start,
                vm_guest: None,
            });
            mem.push(b);
        }
        let irqs: Vec<IrqDesc> = irqs
            .iter()
            .map(|&(intid, task, notification)| IrqDesc {
                intid,
                task,
                notification,
                edge: false,
            })
            .collect();
        World {
            descs: Box::leak(descs.into_boxed_slice()),
            irqs: Box::leak(irqs.into_boxed_slice()),
            mem,
        }
    }

    /// Fresh contents for a new machine: guards, a text pattern, random
    /// stack/data/memory (the kernel zeroes what it must at start).
    fn reset(&self, r: &mut Rng) {
        for b in &self.mem {
            for (k, back) in b.iter().enumerate() {
                let bytes = back.bytes();
                bytes.fill(GUARD_BYTE);
                let inner = &mut bytes[GUARD..GUARD + back.size];
                if k == 0 {
                    inner.fill(TEXT_BYTE);
                } else {
                    inner.iter_mut().for_each(|x| *x = r.next_u64() as u8);
                }
            }
        }
        // The "device registers" behind register windows start at zero in
        // every machine, as after a device reset: a machine is a function
        // of its seed alone (the fast-path differential runs one seed
        // twice on the same world).
        for w in self.descs.iter().flat_map(|d| d.reg_windows) {
            for &off in w.offsets {
                // SAFETY: `base + off` is one of the four leaked words of
                // this world's window (`World::new`), aligned, and no
                // machine runs meanwhile.
                unsafe { std::ptr::write_volatile((w.base + off as usize) as *mut u32, 0) };
            }
        }
    }

    /// Task `t`'s writable memory (stack, data, mem), appended to `out`.
    fn snapshot(&self, t: usize, out: &mut Vec<u8>) {
        out.clear();
        for back in &self.mem[t][1..] {
            out.extend_from_slice(&back.bytes()[GUARD..GUARD + back.size]);
        }
    }

    /// Guards intact and text unchanged, for every task.
    fn check_memory(&self) -> Result<(), String> {
        for (t, b) in self.mem.iter().enumerate() {
            for (k, back) in b.iter().enumerate() {
                let bytes = back.bytes();
                let (lo, rest) = bytes.split_at(GUARD);
                let (inner, hi) = rest.split_at(back.size);
                if lo.iter().chain(hi).any(|x| *x != GUARD_BYTE) {
                    return Err(format!(
                        "a write outside task {t}'s region {k} (guard bytes changed)"
                    ));
                }
                if k == 0 && inner.iter().any(|x| *x != TEXT_BYTE) {
                    return Err(format!("task {t}'s read-only text was written"));
                }
            }
        }
        Ok(())
    }
}

/// Unwinds out of `Platform::shutdown`.
struct ShutdownSignal;

/// The host stand-in for the machine under the core.
struct FuzzPlatform {
    now: u64,
    deadline: Option<u64>,
    /// The machine's interrupts and the enabled state of each.
    irqs: &'static [IrqDesc],
    enabled: Vec<bool>,
    /// (Re)starts seen per task.
    resets: Vec<u64>,
    /// Generation each task had at boot (0, unless a test starts a task
    /// near the end of the generation space).
    gen_base: Vec<u32>,
    descs: &'static [TaskDesc],
    /// Console bytes since the last event began.
    console: usize,
    /// The whole console of this machine (kept short: last few KiB).
    tail: Vec<u8>,
    /// Whether the core may take its IPC fast paths (see `differential`).
    fast: bool,
    /// Calls a fast path handled.
    fast_taken: u64,
    /// Half the calls are well-formed IPC (see `ipc_call`).
    ipc_heavy: bool,
}

impl Platform for FuzzPlatform {
    fn console(&mut self, bytes: &[u8]) {
        self.console += bytes.len();
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 8192 {
            self.tail.drain(..4096);
        }
    }
    fn irq_enable(&mut self, intid: u32, enable: bool) {
        if let Some(i) = self.irqs.iter().position(|d| d.intid == intid) {
            self.enabled[i] = enable;
        }
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn set_deadline(&mut self, deadline: Option<u64>) {
        self.deadline = deadline;
    }
    fn shutdown(&mut self, status: u32) -> ! {
        let _ = status;
        std::panic::resume_unwind(Box::new(ShutdownSignal))
    }
    fn ipc_fast_paths(&self) -> bool {
        self.fast
    }
    fn ipc_fast_path_taken(&mut self) {
        self.fast_taken += 1;
    }
    fn reset_task_memory(&mut self, task: &Task) {
        let i = self
            .descs
            .iter()
            .position(|d| std::ptr::eq(d, task.desc))
            .expect("a task of this machine");
        self.resets[i] += 1;
        // What the AArch64 platform does, through the same policy.
        for r in task.desc.regions.iter().filter(|r| zeroed_on_restart(r)) {
            // SAFETY: the fuzzer's regions are leaked allocations of `size`
            // bytes at `region_pa`, and no task runs meanwhile.
            unsafe { std::ptr::write_bytes(region_pa(r) as *mut u8, 0, r.size) };
        }
    }
}

/// Outcome of a kernel fuzz run.
#[derive(Debug, Default)]
pub struct Report {
    /// Events applied (system calls, interrupts, ticks, aborts).
    pub events: u64,
    pub syscalls: u64,
    /// Machines booted; each ends by shutdown, quiescence or its step cap.
    pub machines: u64,
    pub shutdowns: u64,
    /// Machines where every task was blocked with nothing left to wake them.
    pub quiesced: u64,
    pub faults: u64,
    pub restarts: u64,
    /// Per system call number: how often it returned without faulting.
    pub ok_by_sysnum: [u64; Sysnum::COUNT as usize],
    /// Calls an IPC fast path handled.
    pub fast_path_calls: u64,
    /// The first failure: what broke, where, and the last events.
    pub failure: Option<String>,
}

/// Most events per machine before a fresh one is booted.
const MACHINE_STEPS: u64 = 4000;

/// Bound on console bytes of one event for a task named `name`: a `log`
/// (LOG_MAX_LINES prefixed lines plus the marker line) or a `panic` line,
/// plus the fault report of the caller. docs/kernel.md states it.
fn console_bound(name: &str) -> usize {
    let prefix = name.len() + 3; // "[name] "
    let log = (LOG_MAX_LINES + 1) * (prefix + 1) + LOG_MAX_BYTES + 21;
    let panic = prefix + 7 + PANIC_MAX_BYTES + 1;
    // "kern: task NAME faulted: KIND 0x…\n" (the longest kind is 31 bytes).
    let fault = 11 + name.len() + 10 + 31 + 1 + 18 + 1;
    log.max(panic) + fault
}

/// Runs machines for at most `events` events or `time`, whichever ends
/// first.
pub fn fuzz(seed: u64, events: u64, time: Duration) -> Report {
    fuzz_with(seed, events, time, &mut Run::default())
}

/// How a fuzz run drives the core besides the seed: with or without the IPC
/// fast paths, and whether it keeps a digest of the machine after every
/// event.
#[derive(Default)]
struct Run {
    general_paths_only: bool,
    ipc_heavy: bool,
    digests: Option<Vec<u64>>,
}

fn fuzz_with(seed: u64, events: u64, time: Duration, run: &mut Run) -> Report {
    install_panic_hook();
    let worlds: Vec<World> = (0..TOPOLOGIES.len()).map(World::new).collect();
    fuzz_in(&worlds, seed, events, time, run)
}

fn fuzz_in(worlds: &[World], seed: u64, events: u64, time: Duration, run: &mut Run) -> Report {
    let mut r = Rng::new(seed);
    let mut rep = Report::default();
    let start = Instant::now();
    while rep.events < events && start.elapsed() < time && rep.failure.is_none() {
        let which = r.below(worlds.len() as u64) as usize;
        run_machine(&worlds[which], which, &mut r, &mut rep, events, seed, run);
    }
    rep
}

/// The fast paths against the general paths: the same seeded run twice,
/// once as the kernel runs (fast paths on) and once with the general IPC
/// paths alone; after every event the whole machine — every task's
/// registers, state, generation, notifications, timer, receive buffer, the
/// running task and every byte of every task's memory — must be the same
/// in both. Ok(calls the fast paths handled), or the first event where the
/// two differ.
pub fn differential(seed: u64, events: u64) -> Result<u64, String> {
    let mut fast = Run {
        general_paths_only: false,
        ipc_heavy: true,
        digests: Some(Vec::new()),
    };
    let mut general = Run {
        general_paths_only: true,
        ipc_heavy: true,
        digests: Some(Vec::new()),
    };
    // The same worlds for both runs: the kernel addresses in the task
    // records (receive buffers) are then the same too.
    install_panic_hook();
    let worlds: Vec<World> = (0..TOPOLOGIES.len()).map(World::new).collect();
    let a = fuzz_in(&worlds, seed, events, Duration::MAX, &mut fast);
    let b = fuzz_in(&worlds, seed, events, Duration::MAX, &mut general);
    if let Some(f) = a.failure.or(b.failure) {
        return Err(f);
    }
    if b.fast_path_calls != 0 {
        return Err("a fast path ran while they were off".into());
    }
    let da = fast.digests.unwrap_or_default();
    let db = general.digests.unwrap_or_default();
    if let Some(i) = (0..da.len().max(db.len())).find(|&i| da.get(i) != db.get(i)) {
        return Err(format!(
            "seed {seed}: after event {i} the machine with the IPC fast paths differs from the one with the general paths only"
        ));
    }
    Ok(a.fast_path_calls)
}

/// A digest of everything an event can change: every task's record (but
/// its static descriptor) and memory, and the running task.
/// Memory is folded in every fourth event only (it is 20 KiB a task, and
/// a difference in it stays until overwritten); registers and states every
/// event.
fn digest(k: &Kernel, world: &World, scratch: &mut Vec<u8>, memory: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.current.hash(&mut h);
    for (i, t) in k.tasks.iter().enumerate() {
        t.save.x.hash(&mut h);
        (t.save.sp, t.save.pc, t.save.pstate, t.save.tpidr_el0).hash(&mut h);
        format!("{:?}", t.state).hash(&mut h);
        (t.generation.0, t.notifications, t.notification_mask).hash(&mut h);
        (t.timer_deadline, t.timer_bits, t.senders).hash(&mut h);
        (t.recv_buf, t.recv_len).hash(&mut h);
        if !memory {
            continue;
        }
        // Memory by words, folded cheaply.
        world.snapshot(i, scratch);
        let mut m = 0u64;
        for w in scratch.chunks_exact(8) {
            let w = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            m = (m.rotate_left(5) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        m.hash(&mut h);
    }
    h.finish()
}

#[allow(clippy::too_many_arguments)]
fn run_machine(
    world: &World,
    topology: usize,
    r: &mut Rng,
    rep: &mut Report,
    cap: u64,
    seed: u64,
    run: &mut Run,
) {
    world.reset(r);
    rep.machines += 1;
    let machine = rep.machines;
    let mut tasks: Vec<Task> = world.descs.iter().map(Task::new).collect();
    let mut k = Kernel::new(&mut tasks, world.irqs);
    let mut p = FuzzPlatform {
        now: 0,
        deadline: None,
        irqs: world.irqs,
        enabled: vec![false; world.irqs.len()],
        resets: vec![0; world.descs.len()],
        gen_base: vec![0; world.descs.len()],
        descs: world.descs,
        console: 0,
        tail: Vec::new(),
        fast: !run.general_paths_only,
        fast_taken: 0,
        ipc_heavy: run.ipc_heavy,
    };
    let mut history: Vec<String> = Vec::new();
    let fail = |rep: &mut Report, step: u64, why: String, history: &[String], p: &FuzzPlatform| {
        let tail = String::from_utf8_lossy(&p.tail);
        let tail: Vec<&str> = tail.lines().rev().take(6).collect();
        rep.failure = Some(format!(
            "seed {seed}, machine {machine} (topology {topology}), step {step}: {why}\nlast events:\n  {}\nconsole tail:\n  {}",
            history.join("\n  "),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
        ));
    };
    IN_CORE.with(|f| f.set(true));
    let booted = catch_unwind(AssertUnwindSafe(|| k.boot(&mut p)));
    IN_CORE.with(|f| f.set(false));
    if let Err(e) = booted {
        fail(
            rep,
            0,
            format!("boot panicked: {}", panic_text(&*e)),
            &history,
            &p,
        );
        return;
    }
    // The tasks' own data: random, so that a copy to the wrong place
    // changes something (zeros onto zeros would go unseen).
    for b in &world.mem {
        for back in &b[1..] {
            back.bytes()[GUARD..GUARD + back.size]
                .iter_mut()
                .for_each(|x| *x = r.next_u64() as u8);
        }
    }
    // Isolation oracle: a task's memory may change only through an event
    // that names it (below); checked every few events against snapshots.
    let mut snaps: Vec<Vec<u8>> = vec![Vec::new(); world.descs.len()];
    for (t, s) in snaps.iter_mut().enumerate() {
        world.snapshot(t, s);
    }
    let mut may_write: u64 = 0;
    let mut scratch = Vec::new();
    for step in 0..MACHINE_STEPS {
        if rep.events >= cap {
            return;
        }
        rep.events += 1;
        p.console = 0;
        let runnable = k.tasks[k.current].is_runnable();
        let ev = if runnable {
            choose_event(&k, &p, r)
        } else {
            match idle_event(&k, &p, r) {
                Some(ev) => ev,
                None => {
                    rep.quiesced += 1;
                    return;
                }
            }
        };
        let cur = k.current;
        let name = k.tasks[cur].desc.name;
        if matches!(ev, Event::Syscall(..)) && r.below(4) == 0 {
            // The caller wrote some of its own memory since its last call.
            let back = &world.mem[cur][1 + r.below(3) as usize];
            let at = GUARD + r.below((back.size - 64) as u64) as usize;
            back.bytes()[at..at + 64]
                .iter_mut()
                .for_each(|x| *x = r.next_u64() as u8);
        }
        history.push(ev.describe(&k));
        if history.len() > 8 {
            history.remove(0);
        }
        let faulted_before = count_faulted(&k);
        let resets_before: u64 = p.resets.iter().sum();
        IN_CORE.with(|f| f.set(true));
        let res = catch_unwind(AssertUnwindSafe(|| ev.apply(&mut k, &mut p)));
        IN_CORE.with(|f| f.set(false));
        match res {
            Ok(()) => {}
            Err(e) => {
                if e.is::<ShutdownSignal>() {
                    rep.shutdowns += 1;
                    return;
                }
                fail(
                    rep,
                    step,
                    format!("the kernel panicked: {}", panic_text(&*e)),
                    &history,
                    &p,
                );
                return;
            }
        }
        if let Event::Syscall(n, _) = ev {
            rep.syscalls += 1;
            if !matches!(k.tasks[cur].state, TaskState::Faulted { .. }) {
                if let Some(s) = Sysnum::from_u32(n) {
                    rep.ok_by_sysnum[s as usize] += 1;
                }
            }
        }
        rep.faults += count_faulted(&k).saturating_sub(faulted_before) as u64;
        rep.restarts += p.resets.iter().sum::<u64>() - resets_before;
        if p.console > console_bound(name) {
            fail(
                rep,
                step,
                format!(
                    "one event printed {} console bytes (bound {})",
                    p.console,
                    console_bound(name)
                ),
                &history,
                &p,
            );
            return;
        }
        may_write |= ev.may_write(cur);
        if step % 4 == 3 {
            for (t, snap) in snaps.iter_mut().enumerate() {
                world.snapshot(t, &mut scratch);
                if scratch != *snap {
                    if may_write & (1 << t) == 0 {
                        let why = format!(
                            "{}'s memory changed, but no event since the last check could write it",
                            k.tasks[t].desc.name
                        );
                        fail(rep, step, why, &history, &p);
                        return;
                    }
                    std::mem::swap(snap, &mut scratch);
                }
            }
            may_write = 0;
        }
        let checked = check(&k, &p).and_then(|()| {
            if step % 16 == 0 {
                world.check_memory()
            } else {
                Ok(())
            }
        });
        if let Err(why) = checked {
            fail(rep, step, why, &history, &p);
            return;
        }
        rep.fast_path_calls += std::mem::take(&mut p.fast_taken);
        if let Some(d) = run.digests.as_mut() {
            d.push(digest(&k, world, &mut scratch, step % 4 == 3));
        }
    }
    if let Err(why) = world.check_memory() {
        fail(rep, MACHINE_STEPS, why, &history, &p);
    }
}

fn count_faulted(k: &Kernel) -> usize {
    k.tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Faulted { .. }))
        .count()
}

thread_local! {
    /// Message and location of the last panic on this thread.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// Set while the fuzzer runs the core: a panic there is reported with
    /// the failing machine, not printed.
    static IN_CORE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records where a panic happened (the report names it) instead of printing
/// it; the kernel's shutdown unwinds silently.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().is::<ShutdownSignal>() {
                return;
            }
            if !IN_CORE.with(|f| f.get()) {
                return previous(info);
            }
            let text = format!("{info}").replace('\n', " ");
            // Printed at once too: the standard library's debug checks
            // (a null slice, overlapping copies) abort instead of unwinding,
            // and then this line is all that is left.
            // (Straight to stderr: libtest's capture would lose it.)
            let _ = writeln!(std::io::stderr(), "fuzz: the kernel panicked: {text}");
            LAST_PANIC.with(|l| *l.borrow_mut() = Some(text));
        }))
    });
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = LAST_PANIC.with(|l| l.borrow_mut().take()) {
        return s;
    }
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic payload)".to_string()
    }
}

/// One thing that happens to the machine.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// The running task's system call: number (x8) and x0..x7.
    Syscall(u32, [usize; 8]),
    /// An interrupt line fires (an enabled one, or one nobody owns).
    Irq(u32),
    /// Time moves by this many ms; the timer interrupt is taken if due.
    Time(u64),
    /// The running task takes a data abort at this address.
    Abort(usize),
    /// An SError is taken while the running task runs (ESR).
    SError(usize),
}

impl Event {
    fn describe(&self, k: &Kernel) -> String {
        let who = k.tasks[k.current].desc.name;
        match self {
            Event::Syscall(n, a) => {
                let name = Sysnum::from_u32(*n).map_or(format!("#{n}"), |s| format!("{s:?}"));
                format!("{who}: {name}({a:#x?})").replace('\n', "")
            }
            Event::Irq(i) => format!("irq {i} (running {who})"),
            Event::Time(ms) => format!("time +{ms} ms (running {who})"),
            Event::Abort(a) => format!("{who}: data abort at {a:#x}"),
            Event::SError(e) => format!("SError {e:#x} (running {who})"),
        }
    }

    /// The tasks whose memory this event may change (a bit per index): the
    /// caller's own buffers; the receiver of a send, the client of a reply,
    /// the lender of a borrow_write (x0 names them); the task a restart
    /// zeroes. Interrupts, time, aborts and SErrors write no task memory.
    /// (Writes by the fuzzer itself, into the caller's memory before its
    /// call, are covered by the caller's bit.)
    fn may_write(&self, caller: usize) -> u64 {
        let Event::Syscall(n, a) = *self else {
            return 0;
        };
        let named = |id: usize| 1u64 << (TaskId(id as u32).index() % 64);
        let extra = match Sysnum::from_u32(n) {
            Some(Sysnum::Send | Sysnum::Reply | Sysnum::ReplyRecv | Sysnum::BorrowWrite) => {
                named(a[0])
            }
            Some(Sysnum::TaskControl) if a[0] == TaskControl::Restart as usize => 1 << (a[1] % 64),
            _ => 0,
        };
        1 << caller | extra
    }

    /// What the exception entry does for this event.
    fn apply(self, k: &mut Kernel, p: &mut FuzzPlatform) {
        match self {
            Event::Syscall(n, a) => {
                let s = &mut k.tasks[k.current].save;
                for (i, v) in a.iter().enumerate() {
                    s.x[i] = *v as u64;
                }
                s.x[8] = n as u64;
                k.syscall(p);
            }
            Event::Irq(intid) => {
                k.interrupt(p, intid);
                k.schedule(p);
            }
            Event::Time(ms) => {
                p.now += ms;
                if p.deadline.is_some_and(|d| d <= p.now) {
                    k.timer_tick(p);
                }
                k.schedule(p);
            }
            Event::Abort(addr) => {
                let c = k.current;
                k.fault(p, c, abi::FaultKind::MemoryAccess, addr);
                k.schedule(p);
            }
            Event::SError(esr) => {
                k.serror(p, esr);
                k.schedule(p);
            }
        }
    }
}

/// Nothing runs: what wakes the machine (time to the next deadline or an
/// enabled interrupt), or None if nothing ever will.
fn idle_event(k: &Kernel, p: &FuzzPlatform, r: &mut Rng) -> Option<Event> {
    let _ = k;
    let irqs: Vec<u32> = p
        .irqs
        .iter()
        .zip(&p.enabled)
        .filter(|(_, &e)| e)
        .map(|(d, _)| d.intid)
        .collect();
    match (p.deadline, irqs.is_empty()) {
        (Some(d), true) => Some(Event::Time(d.saturating_sub(p.now).max(1))),
        (Some(d), false) if r.below(2) == 0 => Some(Event::Time(d.saturating_sub(p.now).max(1))),
        (_, false) => Some(Event::Irq(irqs[r.below(irqs.len() as u64) as usize])),
        (None, true) => None,
    }
}

fn choose_event(k: &Kernel, p: &FuzzPlatform, r: &mut Rng) -> Event {
    match r.below(100) {
        0..=5 => {
            // Enabled lines mostly; sometimes one nobody owns, or a
            // disabled one (a level line seen late).
            let i = r.below(p.irqs.len() as u64 + 1) as usize;
            Event::Irq(p.irqs.get(i).map_or(77, |d| d.intid))
        }
        6..=9 => Event::Time(r.below(40)),
        10 if k.current != 0 || r.below(50) == 0 => {
            if r.below(10) == 0 {
                Event::SError(0xbe00_0000 | r.below(1 << 20) as usize)
            } else {
                Event::Abort(r.next_u64() as usize)
            }
        }
        _ => {
            if k.current == 0 && r.below(200) != 0 {
                supervisor_call(k, r)
            } else if p.ipc_heavy && r.below(2) == 0 {
                ipc_call(k, r)
            } else {
                random_call(k, p, r)
            }
        }
    }
}

/// A well-formed IPC call, as servers and clients make them: answer a
/// waiting client and receive again, receive, or send to a slot with up
/// to `MAX_LEASES` leases — the calls the IPC fast paths take when the
/// peer is ready — with buffers of any length in the caller's memory.
fn ipc_call(k: &Kernel, r: &mut Rng) -> Event {
    let me = k.id_of(k.current);
    let mut a = [0usize; 8];
    let client = (0..k.tasks.len()).find(|&i| k.tasks[i].state == TaskState::InReply(me));
    match (client, r.below(3)) {
        (Some(c), 0 | 1) => {
            a[0] = k.id_of(c).0 as usize | (r.below(4) as usize) << 32;
            (a[1], a[2]) = good_range(r);
            (a[3], a[4]) = good_range(r);
            a[5] = bits(r, k.irqs) as usize;
            a[6] = TaskId::ANY.0 as usize;
            Event::Syscall(Sysnum::ReplyRecv as u32, a)
        }
        (_, 0) => {
            (a[0], a[1]) = good_range(r);
            a[2] = bits(r, k.irqs) as usize;
            a[3] = TaskId::ANY.0 as usize;
            Event::Syscall(Sysnum::Recv as u32, a)
        }
        _ => {
            let Some(t) = slot_id(k, r) else {
                return Event::Time(1);
            };
            a[0] = t | (r.below(4) as usize) << 32;
            (a[1], a[2]) = good_range(r);
            (a[3], a[4]) = good_range(r);
            let nl = r.below(MAX_LEASES as u64 + 1) as usize;
            a[5] = put_leases(k, r, nl);
            a[6] = nl;
            Event::Syscall(Sysnum::Send as u32, a)
        }
    }
}

/// The supervisor's real job: restart what faulted, then wait for the next
/// fault notification.
fn supervisor_call(k: &Kernel, r: &mut Rng) -> Event {
    let faulted =
        (0..k.tasks.len()).find(|&i| matches!(k.tasks[i].state, TaskState::Faulted { .. }));
    let stopped = (1..k.tasks.len()).find(|&i| k.tasks[i].state == TaskState::Stopped);
    let mut a = [0usize; 8];
    if let Some(i) = faulted.or(stopped.filter(|_| r.below(8) == 0)) {
        a[0] = TaskControl::Restart as usize;
        a[1] = i;
        return Event::Syscall(Sysnum::TaskControl as u32, a);
    }
    if r.below(4) == 0 {
        a[0] = r.below(3) as usize;
        a[1] = r.below(8) as usize;
        return Event::Syscall(Sysnum::TaskControl as u32, a);
    }
    a[0] = STACK_VA;
    a[1] = 64;
    a[2] = SUPERVISOR_FAULT_BIT as usize;
    a[3] = TaskId::KERNEL.0 as usize;
    Event::Syscall(Sysnum::Recv as u32, a)
}

/// A task id: mostly current generations, some stale, some nonsense.
fn task_id(k: &Kernel, r: &mut Rng) -> usize {
    let n = k.tasks.len();
    match r.below(10) {
        0 => TaskId::KERNEL.0 as usize,
        1 => TaskId::ANY.0 as usize,
        2 => r.next_u64() as usize,
        3 => TaskId::new(r.below(64) as usize, generation(r)).0 as usize,
        4 => {
            let i = r.below(n as u64) as usize;
            k.id_of(i).with_generation(generation(r)).0 as usize
        }
        _ => k.id_of(r.below(n as u64) as usize).0 as usize,
    }
}

/// A generation: mostly small (near the ones tasks have), some at the
/// 6-bit boundary the old ABI wrapped at, some at the top of the space.
fn generation(r: &mut Rng) -> abi::Generation {
    abi::Generation(match r.below(4) {
        0 => 64 + r.below(64) as u32,
        1 => abi::Generation::LAST.0 - r.below(2) as u32,
        _ => r.below(64) as u32,
    })
}

/// A peer the caller has business with: a task waiting for its reply (for
/// reply, reply_fault and borrow), else any id.
fn partner(k: &Kernel, r: &mut Rng) -> usize {
    let me = k.id_of(k.current);
    let waiting: Vec<usize> = (0..k.tasks.len())
        .filter(|&i| k.tasks[i].state == TaskState::InReply(me))
        .collect();
    if !waiting.is_empty() && r.below(5) != 0 {
        k.id_of(waiting[r.below(waiting.len() as u64) as usize]).0 as usize
    } else {
        task_id(k, r)
    }
}

/// A (pointer, length) pair wholly inside the caller's writable memory.
fn good_range(r: &mut Rng) -> (usize, usize) {
    let (va, size) = match r.below(4) {
        0 | 1 => (STACK_VA, STACK),
        2 => (layout::TASK_DATA, DATA),
        _ => (MEM_VA, MEM),
    };
    let len = match r.below(4) {
        0 => 0,
        1 => r.below(16) as usize,
        _ => r.below(300) as usize,
    };
    (va + r.below((size - len) as u64 + 1) as usize, len)
}

/// A slot of the running task (an id it may send and post to), if it has
/// any.
fn slot_id(k: &Kernel, r: &mut Rng) -> Option<usize> {
    let slots = k.tasks[k.current].desc.task_slots;
    if slots.is_empty() {
        return None;
    }
    Some(
        k.id_of(slots[r.below(slots.len() as u64) as usize] as usize)
            .0 as usize,
    )
}

/// A (pointer, length) pair: anything from well-formed to wild.
fn range(r: &mut Rng) -> (usize, usize) {
    if r.below(3) == 0 {
        return good_range(r);
    }
    let (va, size) = match r.below(16) {
        0..=5 => (STACK_VA, STACK),
        6..=7 => (layout::TASK_DATA, DATA),
        8..=9 => (MEM_VA, MEM),
        10 => (layout::TASK_TEXT, TEXT),
        11 => (MMIO_VA, MMIO),
        12 => (0, 0),
        13 => (usize::MAX - r.below(64) as usize, 0),
        14 => (0x4020_0000, 0x1000), // kernel RAM on the target
        _ => (r.next_u64() as usize, 0),
    };
    let off = match r.below(6) {
        0 => 0,
        1 => size.saturating_sub(r.below(16) as usize),
        _ => r.below(size as u64 + 1) as usize,
    };
    let ptr = va.wrapping_add(off);
    let len = match r.below(10) {
        0 => 0,
        1 => size.saturating_sub(off),
        2 => size.saturating_sub(off) + 1 + r.below(8) as usize,
        3 => usize::MAX - r.below(8) as usize,
        4 => r.next_u64() as usize,
        5 => r.below(2000) as usize,
        _ => r.below(300) as usize,
    };
    (ptr, len)
}

/// Kernel address of the caller's va, if it is in stack/data/mem.
fn own_bytes<'a>(k: &Kernel, va: usize, len: usize) -> Option<&'a mut [u8]> {
    let pa = k.tasks[k.current].translate(va, len, REGION_READ | REGION_WRITE)?;
    // SAFETY: `translate` found the range in one of the current task's
    // writable regions, which are the fuzzer's own leaked allocations; the
    // kernel is not running meanwhile.
    Some(unsafe { std::slice::from_raw_parts_mut(pa as *mut u8, len) })
}

/// Writes `text` at a random place in the caller's stack; its address.
fn put_text(k: &Kernel, r: &mut Rng, text: &[u8]) -> usize {
    let off = r.below((STACK - text.len()) as u64) as usize;
    let va = STACK_VA + off;
    if let Some(b) = own_bytes(k, va, text.len()) {
        b.copy_from_slice(text);
    }
    va
}

/// Writes a lease table of `n` entries in the caller's stack; its address.
fn put_leases(k: &Kernel, r: &mut Rng, n: usize) -> usize {
    let size = std::mem::size_of::<LeaseDesc>();
    let n = n.min(MAX_LEASES + 2);
    let off = r.below((STACK - n * size) as u64) as usize;
    let va = STACK_VA + off;
    let Some(b) = own_bytes(k, va, n * size) else {
        return va;
    };
    for i in 0..n {
        let (base, len) = if r.below(2) == 0 {
            good_range(r)
        } else {
            range(r)
        };
        let d = LeaseDesc {
            attributes: r.below(4) as u32,
            _reserved: 0,
            base: if r.below(8) == 0 {
                u64::MAX - r.below(32)
            } else {
                base as u64
            },
            len: if r.below(8) == 0 {
                r.next_u64()
            } else {
                (len % 0x3000) as u64
            },
        };
        // SAFETY: LeaseDesc is plain old data (repr(C), integers only).
        let raw = unsafe { std::slice::from_raw_parts(&d as *const LeaseDesc as *const u8, size) };
        b[i * size..(i + 1) * size].copy_from_slice(raw);
    }
    va
}

fn bits(r: &mut Rng, irqs: &[IrqDesc]) -> u32 {
    match r.below(5) {
        0 => r.next_u64() as u32,
        1 => 1 << r.below(32),
        2 => irqs[r.below(irqs.len() as u64) as usize].notification,
        3 => u32::MAX,
        _ => (r.next_u64() as u32) & 0xff,
    }
}

fn random_call(k: &Kernel, p: &FuzzPlatform, r: &mut Rng) -> Event {
    let me = k.id_of(k.current);
    let serving = k.tasks.iter().any(|t| t.state == TaskState::InReply(me));
    // A task with clients waiting mostly serves them (reply, borrow), as a
    // server does: that is where copies between tasks happen.
    const SERVE: [Sysnum; 8] = [
        Sysnum::Reply,
        Sysnum::Reply,
        Sysnum::Reply,
        Sysnum::ReplyRecv,
        Sysnum::BorrowRead,
        Sysnum::BorrowWrite,
        Sysnum::BorrowInfo,
        Sysnum::ReplyFault,
    ];
    let n = if serving && r.below(3) != 0 {
        SERVE[r.below(SERVE.len() as u64) as usize] as u32
    } else if r.below(25) == 0 {
        match r.below(3) {
            0 => Sysnum::COUNT + r.below(4) as u32,
            1 => r.next_u64() as u32,
            _ => u32::MAX,
        }
    } else {
        r.below(Sysnum::COUNT as u64) as u32
    };
    let mut a = [0usize; 8];
    for v in a.iter_mut() {
        *v = r.next_u64() as usize;
    }
    let Some(s) = Sysnum::from_u32(n) else {
        return Event::Syscall(n, a);
    };
    // Half the calls are well-formed in every argument but (sometimes)
    // one, so that calls get past their first check and deep into the core.
    let good = r.below(2) == 0;
    let rg = |r: &mut Rng| {
        if good && r.below(10) != 0 {
            good_range(r)
        } else {
            range(r)
        }
    };
    let tid = |r: &mut Rng| match slot_id(k, r) {
        Some(id) if good && r.below(10) != 0 => id,
        _ => task_id(k, r),
    };
    let names: [&[u8]; 8] = [
        b"stack", b"mem", b"mmio", b"text", b"data", b"server", b"driver", b"",
    ];
    let name = |r: &mut Rng| {
        let t = names[r.below(names.len() as u64) as usize];
        if r.below(6) == 0 {
            range(r)
        } else {
            (put_text(k, r, t), t.len())
        }
    };
    match s {
        Sysnum::Send => {
            a[0] = tid(r) | (r.below(1 << 16) as usize) << 32;
            (a[1], a[2]) = rg(r);
            (a[3], a[4]) = rg(r);
            // No leases half the time: the common message.
            let nl = if r.below(2) == 0 {
                0
            } else {
                r.below(MAX_LEASES as u64 + 3) as usize
            };
            a[5] = if !good && r.below(6) == 0 {
                range(r).0
            } else {
                put_leases(k, r, nl)
            };
            a[6] = if !good && r.below(10) == 0 {
                r.next_u64() as usize
            } else {
                nl
            };
        }
        Sysnum::Recv => {
            (a[0], a[1]) = rg(r);
            a[2] = bits(r, k.irqs) as usize;
            a[3] = match r.below(4) {
                0 | 1 => TaskId::ANY.0 as usize,
                2 => TaskId::KERNEL.0 as usize,
                _ => task_id(k, r),
            };
        }
        Sysnum::Reply => {
            a[0] = partner(k, r);
            a[1] = r.next_u64() as usize;
            (a[2], a[3]) = rg(r);
        }
        // Reply's arguments packed (target | code << 32), then Recv's.
        Sysnum::ReplyRecv => {
            a[0] = partner(k, r) & 0xffff_ffff | (r.next_u64() as usize) << 32;
            (a[1], a[2]) = rg(r);
            (a[3], a[4]) = rg(r);
            a[5] = bits(r, k.irqs) as usize;
            a[6] = match r.below(4) {
                0 | 1 => TaskId::ANY.0 as usize,
                2 => TaskId::KERNEL.0 as usize,
                _ => task_id(k, r),
            };
        }
        Sysnum::ReplyFault => {
            a[0] = partner(k, r);
            a[1] = r.below(8) as usize;
        }
        Sysnum::BorrowRead | Sysnum::BorrowWrite | Sysnum::BorrowInfo => {
            a[0] = partner(k, r);
            a[1] = r.below(MAX_LEASES as u64 + 2) as usize;
            a[2] = match r.below(4) {
                0 => r.next_u64() as usize,
                1 => usize::MAX - r.below(64) as usize,
                _ => r.below(0x3000) as usize,
            };
            (a[3], a[4]) = rg(r);
        }
        Sysnum::Post => {
            a[0] = tid(r);
            a[1] = bits(r, k.irqs) as usize;
        }
        Sysnum::IrqControl => {
            a[0] = bits(r, k.irqs) as usize;
            a[1] = r.below(2) as usize;
        }
        Sysnum::SetTimer => {
            a[0] = r.below(3) as usize;
            a[1] = match r.below(4) {
                0 => r.next_u64() as usize,
                _ => (p.now + r.below(100)) as usize,
            };
            a[2] = bits(r, k.irqs) as usize;
        }
        Sysnum::Log | Sysnum::Panic => {
            if r.below(3) == 0 {
                (a[0], a[1]) = rg(r);
            } else {
                // Text with many newlines (the bound of `log`).
                let len = r.below(1200) as usize;
                let text: Vec<u8> = (0..len)
                    .map(|_| if r.below(3) == 0 { b'\n' } else { b'a' })
                    .collect();
                a[0] = put_text(k, r, &text);
                a[1] = len;
            }
        }
        Sysnum::RegionInfo | Sysnum::LookupSlot | Sysnum::RegLookup => (a[0], a[1]) = name(r),
        // The fuzzed tasks have no register windows: every access must
        // fault the caller and touch nothing.
        Sysnum::RegRead | Sysnum::RegWrite => {
            a[0] = r.below(4) as usize;
            a[1] = r.below(20) as usize;
            a[2] = r.next_u64() as usize;
        }
        Sysnum::RefreshTaskId => a[0] = tid(r),
        Sysnum::GetTimer => {}
        Sysnum::TaskControl => {
            a[0] = r.below(4) as usize;
            a[1] = r.below(8) as usize;
        }
        Sysnum::PhysOwned => {
            a[0] = task_id(k, r);
            let t = &k.tasks[r.below(k.tasks.len() as u64) as usize];
            let reg = &t.desc.regions[r.below(t.desc.regions.len() as u64) as usize];
            (a[1], a[2]) = match r.below(3) {
                0 => range(r),
                _ => (
                    region_pa(reg) + r.below(reg.size as u64) as usize,
                    r.below(reg.size as u64 + 16) as usize,
                ),
            };
        }
        Sysnum::Shutdown => {
            // Rare: it ends the machine.
            if r.below(20) != 0 {
                return random_call(k, p, r);
            }
            a[0] = r.below(3) as usize;
        }
    }
    Event::Syscall(n, a)
}

/// The task table's invariants.
fn check(k: &Kernel, p: &FuzzPlatform) -> Result<(), String> {
    let n = k.tasks.len();
    if k.current >= n {
        return Err(format!("current task {} is out of range", k.current));
    }
    // Each task's senders set (what an open receive visits) matches the
    // task states.
    if !k.state_sets_consistent() {
        return Err("the tasks' senders sets disagree with the task states".into());
    }
    let name = |i: usize| k.tasks[i].desc.name;
    let blocked_on = |i: usize, x: abi::TaskId| -> Result<usize, String> {
        let j = x.index();
        if j >= n {
            return Err(format!("{} is blocked on nonexistent task {x:?}", name(i)));
        }
        if k.tasks[j].generation != x.generation() {
            return Err(format!(
                "{} is blocked on a stale id {x:?} of {} (now generation {})",
                name(i),
                name(j),
                k.tasks[j].generation.0
            ));
        }
        Ok(j)
    };
    for (i, t) in k.tasks.iter().enumerate() {
        match t.state {
            TaskState::InSend(x) => {
                let j = blocked_on(i, x)?;
                let me = k.id_of(i);
                match k.tasks[j].state {
                    TaskState::InRecv(None) => {
                        return Err(format!(
                            "lost wakeup: {} waits to send to {}, which is in an open receive",
                            name(i),
                            name(j)
                        ))
                    }
                    TaskState::InRecv(Some(f)) if f == me => {
                        return Err(format!(
                            "lost wakeup: {} waits to send to {}, which receives from it",
                            name(i),
                            name(j)
                        ))
                    }
                    _ => {}
                }
                // (A closed receive from itself is allowed: only
                // notifications can end it, as with `from = KERNEL`.)
                if k.tasks[i].slot_mask & (1 << j) == 0 {
                    return Err(format!(
                        "{} sends to {} outside its task-slots",
                        name(i),
                        name(j)
                    ));
                }
            }
            TaskState::InReply(x) => {
                if blocked_on(i, x)? == i {
                    return Err(format!("{} waits for its own reply", name(i)));
                }
            }
            TaskState::InRecv(from) => {
                // `Some(KERNEL)`: notifications only.
                if let Some(x) = from.filter(|&x| x != TaskId::KERNEL) {
                    blocked_on(i, x)?;
                }
                if t.notifications & t.notification_mask != 0 {
                    return Err(format!(
                        "lost wakeup: {} waits in recv for bits {:#x} and has {:#x} pending",
                        name(i),
                        t.notification_mask,
                        t.notifications
                    ));
                }
                let buf_ok = t.recv_buf == kern::syscalls::EMPTY
                    || t.desc.regions.iter().any(|r| {
                        r.attributes & REGION_WRITE != 0
                            && r.attributes & REGION_DEVICE == 0
                            && t.recv_buf >= region_pa(r)
                            && t.recv_buf < region_pa(r) + r.size
                    });
                if !buf_ok {
                    return Err(format!(
                        "{}'s receive buffer {:#x} is not in its writable memory",
                        name(i),
                        t.recv_buf
                    ));
                }
            }
            TaskState::Faulted { .. } => {
                if i == kern::syscalls::SUPERVISOR {
                    return Err("the supervisor is faulted and the machine runs on".into());
                }
                if t.timer_deadline.is_some() {
                    return Err(format!("faulted {} has an armed timer", name(i)));
                }
            }
            TaskState::Runnable | TaskState::Stopped => {}
        }
        // Generation = restarts: a start at boot does not bump it, every
        // start by the supervisor does.
        let starts = p.resets[i];
        let want = p.gen_base[i] + starts.saturating_sub(t.desc.start as u64) as u32;
        if t.generation.0 != want {
            return Err(format!(
                "{} has generation {} after {} starts",
                name(i),
                t.generation.0,
                starts
            ));
        }
        if let Some(d) = t.timer_deadline {
            if p.deadline.is_none_or(|pd| pd > d) {
                return Err(format!(
                    "{}'s timer at {d} ms is armed but the platform deadline is {:?}",
                    name(i),
                    p.deadline
                ));
            }
        }
    }
    // Scheduling: the running task is runnable whenever anything is, and
    // nothing runnable outranks it.
    let best = k
        .tasks
        .iter()
        .filter(|t| t.is_runnable())
        .map(|t| t.desc.priority)
        .min();
    let cur = &k.tasks[k.current];
    match best {
        Some(b) if !cur.is_runnable() => {
            return Err(format!(
                "{} is current but not runnable while a priority-{b} task is",
                cur.desc.name
            ))
        }
        Some(b) if b < cur.desc.priority => {
            return Err(format!(
                "{} (priority {}) runs while a priority-{b} task is runnable",
                cur.desc.name, cur.desc.priority
            ))
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::{FaultKind, RC_NO_SUCH, RC_OK};

    const DRIVER: usize = 1;
    const SERVER: usize = 2;
    const CLIENT: usize = 3;
    const CLIENT_B: usize = 4;
    const LATE: usize = 5;

    /// A booted fuzz machine for one targeted test.
    fn machine(f: impl FnOnce(&World, &mut Kernel, &mut FuzzPlatform)) {
        install_panic_hook();
        let world = World::new(0);
        world.reset(&mut Rng::new(1));
        let mut tasks: Vec<Task> = world.descs.iter().map(Task::new).collect();
        let mut k = Kernel::new(&mut tasks, world.irqs);
        let mut p = FuzzPlatform {
            now: 0,
            deadline: None,
            irqs: world.irqs,
            enabled: vec![false; world.irqs.len()],
            resets: vec![0; world.descs.len()],
            gen_base: vec![0; world.descs.len()],
            descs: world.descs,
            console: 0,
            tail: Vec::new(),
            fast: true,
            fast_taken: 0,
            ipc_heavy: false,
        };
        k.boot(&mut p);
        f(&world, &mut k, &mut p);
        // The tests pick who calls, not the scheduler: let it choose before
        // the table is checked.
        if let Some(b) = k.pick() {
            k.current = b;
        }
        check(&k, &p).unwrap();
        world.check_memory().unwrap();
    }

    /// Task `t` makes system call `s`; its x0..x5 afterwards.
    fn call(k: &mut Kernel, p: &mut FuzzPlatform, t: usize, s: Sysnum, a: &[usize]) -> [usize; 6] {
        k.current = t;
        let mut args = [0usize; 8];
        args[..a.len()].copy_from_slice(a);
        Event::Syscall(s as u32, args).apply(k, p);
        let x = &k.tasks[t].save.x;
        [x[0], x[1], x[2], x[3], x[4], x[5]].map(|v| v as usize)
    }

    fn fault_of(k: &Kernel, t: usize) -> Option<FaultKind> {
        match k.tasks[t].state {
            TaskState::Faulted { kind, .. } => Some(kind),
            _ => None,
        }
    }

    fn console(p: &FuzzPlatform) -> String {
        String::from_utf8_lossy(&p.tail).into_owned()
    }

    /// Zero-length buffers, with a null or a wild pointer, in every call
    /// that takes a user buffer. The tests are built with the standard
    /// library's debug checks, which abort on a slice or a copy from a null
    /// pointer (what the kernel did before).
    #[test]
    fn kern_zero_length_buffers_are_empty_not_null() {
        machine(|_, k, p| {
            for ptr in [0usize, 1, usize::MAX, 0x4020_0000] {
                p.tail.clear();
                call(k, p, CLIENT, Sysnum::Log, &[ptr, 0]);
                assert_eq!(console(p), "[client-a] \n");
                let r = call(k, p, CLIENT, Sysnum::RegionInfo, &[ptr, 0]);
                assert_eq!(r[0], RC_NO_SUCH as usize);
                let r = call(k, p, CLIENT, Sysnum::LookupSlot, &[ptr, 0]);
                assert_eq!(r[0], RC_NO_SUCH as usize);
                // An empty message, reply buffer and lease table.
                let srv = k.id_of(SERVER).0 as usize;
                call(
                    k,
                    p,
                    SERVER,
                    Sysnum::Recv,
                    &[ptr, 0, 0, TaskId::ANY.0 as usize],
                );
                call(k, p, CLIENT, Sysnum::Send, &[srv, ptr, 0, ptr, 0, ptr, 0]);
                let r = k.tasks[SERVER].save.x;
                assert_eq!((r[0], r[1], r[3]), (0, k.id_of(CLIENT).0 as u64, 0));
                let me = k.id_of(CLIENT).0 as usize;
                call(k, p, SERVER, Sysnum::BorrowRead, &[me, 0, 0, ptr, 0]);
                call(k, p, SERVER, Sysnum::Reply, &[me, 7, ptr, 0]);
                assert_eq!(k.tasks[CLIENT].save.x[0], 7);
                assert!(fault_of(k, CLIENT).is_none() && fault_of(k, SERVER).is_none());
            }
            call(k, p, CLIENT, Sysnum::Panic, &[0, 0]);
            assert_eq!(fault_of(k, CLIENT), Some(FaultKind::Panic));
        });
    }

    /// `ReplyRecv` is `Reply` then `Recv` in one call: the client gets its
    /// reply, the server takes the next waiting message at once, into the
    /// buffer and length it named in x3/x4 (not x0/x1 as `Recv`), cut to
    /// that length. A reply from memory the server does not own faults it
    /// before it receives anything.
    /// The IPC fast paths change nothing but the instruction count: over
    /// seeded fuzz runs, the machine with them and the machine with the
    /// general paths only are identical after every event (registers,
    /// states, memory), and the fast paths did handle calls.
    #[test]
    fn kern_fast_paths_reach_the_same_states_as_the_general_paths() {
        let mut taken = 0;
        for seed in 1..=3 {
            match differential(seed, 4000) {
                Ok(n) => taken += n,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(taken >= 500, "the fast paths handled only {taken} calls");
    }

    #[test]
    fn kern_reply_recv_is_reply_then_recv() {
        machine(|w, k, p| {
            let put = |t: usize, off: usize, b: &[u8]| {
                w.mem[t][1].bytes()[GUARD + off..GUARD + off + b.len()].copy_from_slice(b);
                STACK_VA + off
            };
            let get = |t: usize, off: usize, n: usize| {
                w.mem[t][1].bytes()[GUARD + off..GUARD + off + n].to_vec()
            };
            let srv = k.id_of(SERVER).0 as usize;
            let any = TaskId::ANY.0 as usize;
            call(k, p, SERVER, Sysnum::Recv, &[STACK_VA, 16, 0, any]);
            let m = put(CLIENT, 0, b"hello");
            call(
                k,
                p,
                CLIENT,
                Sysnum::Send,
                &[srv, m, 5, STACK_VA + 64, 8, 0, 0],
            );
            assert_eq!(get(SERVER, 0, 5), b"hello");
            let m = put(CLIENT_B, 0, b"world!");
            call(
                k,
                p,
                CLIENT_B,
                Sysnum::Send,
                &[srv | 3 << 32, m, 6, STACK_VA + 64, 8, 0, 0],
            );
            assert_eq!(k.tasks[CLIENT_B].state, TaskState::InSend(k.id_of(SERVER)));
            let me = k.id_of(CLIENT).0 as usize;
            let rep = put(SERVER, 128, b"ok");
            // Reply to CLIENT (code 5), then receive into 3 bytes at +32.
            let r = call(
                k,
                p,
                SERVER,
                Sysnum::ReplyRecv,
                &[me | 5 << 32, rep, 2, STACK_VA + 32, 3, 0, any],
            );
            assert_eq!(k.tasks[CLIENT].state, TaskState::Runnable);
            assert_eq!(&k.tasks[CLIENT].save.x[..2], &[5, 2]);
            assert_eq!(get(CLIENT, 64, 2), b"ok");
            let b = k.id_of(CLIENT_B).0 as usize;
            assert_eq!(r, [RC_OK as usize, b, 3, 6, 8, 0]);
            assert_eq!(get(SERVER, 32, 4), b"wor\0");
            assert_eq!(k.tasks[CLIENT_B].state, TaskState::InReply(k.id_of(SERVER)));
            // A reply from memory the server does not own: it is faulted and
            // receives nothing; its client still waits.
            call(
                k,
                p,
                SERVER,
                Sysnum::ReplyRecv,
                &[b, 0x10, 8, STACK_VA, 16, 0, any],
            );
            assert_eq!(fault_of(k, SERVER), Some(FaultKind::BadSyscallArgs));
            assert_eq!(k.tasks[CLIENT_B].state, TaskState::InReply(k.id_of(SERVER)));
        });
    }

    /// Puts one lease in `t`'s stack; the table's address.
    fn lease_table(w: &World, t: usize, d: LeaseDesc) -> usize {
        let size = std::mem::size_of::<LeaseDesc>();
        // SAFETY: LeaseDesc is plain integers; the stack backing is ours.
        unsafe {
            let raw = std::slice::from_raw_parts(&d as *const LeaseDesc as *const u8, size);
            w.mem[t][1].bytes()[GUARD..GUARD + size].copy_from_slice(raw);
        }
        STACK_VA
    }

    /// A lease whose base plus the server's offset wraps: the lender named
    /// memory it does not own, so it is faulted (BadLease) and the server
    /// gets the dead code — no overflow panic, nothing copied.
    #[test]
    fn kern_lease_base_plus_offset_wrap_faults_the_lender() {
        machine(|w, k, p| {
            let table = lease_table(
                w,
                CLIENT,
                LeaseDesc {
                    attributes: abi::LEASE_READ | abi::LEASE_WRITE,
                    _reserved: 0,
                    base: u64::MAX - 15,
                    len: 64,
                },
            );
            let srv = k.id_of(SERVER).0 as usize;
            let buf = STACK_VA + 0x1000;
            call(
                k,
                p,
                SERVER,
                Sysnum::Recv,
                &[buf, 64, 0, TaskId::ANY.0 as usize],
            );
            call(k, p, CLIENT, Sysnum::Send, &[srv, buf, 0, buf, 8, table, 1]);
            assert_eq!(k.tasks[CLIENT].state, TaskState::InReply(k.id_of(SERVER)));
            for s in [Sysnum::BorrowRead, Sysnum::BorrowWrite] {
                let me = k.id_of(CLIENT);
                let r = call(k, p, SERVER, s, &[me.0 as usize, 0, 32, buf, 16]);
                assert_eq!(fault_of(k, CLIENT), Some(FaultKind::BadLease));
                assert_eq!(abi::is_dead_code(r[0] as u32), Some(me.generation()));
                assert!(fault_of(k, SERVER).is_none());
                // Restart the lender and lend again for the second call.
                call(
                    k,
                    p,
                    0,
                    Sysnum::TaskControl,
                    &[TaskControl::Restart as usize, CLIENT],
                );
                let srv = k.id_of(SERVER).0 as usize;
                lease_table(
                    w,
                    CLIENT,
                    LeaseDesc {
                        attributes: abi::LEASE_READ | abi::LEASE_WRITE,
                        _reserved: 0,
                        base: u64::MAX - 15,
                        len: 64,
                    },
                );
                call(
                    k,
                    p,
                    SERVER,
                    Sysnum::Recv,
                    &[buf, 64, 0, TaskId::ANY.0 as usize],
                );
                call(k, p, CLIENT, Sysnum::Send, &[srv, buf, 0, buf, 8, table, 1]);
            }
        });
    }

    /// One `log` of 1024 newlines prints 4 lines and the marker, not 1024.
    #[test]
    fn kern_log_is_bounded_per_call() {
        machine(|w, k, p| {
            let text = STACK_VA + 0x100;
            w.mem[CLIENT][1].bytes()[GUARD + 0x100..GUARD + 0x100 + 1024].fill(b'\n');
            p.console = 0;
            call(k, p, CLIENT, Sysnum::Log, &[text, 1024]);
            assert_eq!(
                console(p),
                "[client-a] \n[client-a] \n[client-a] \n[client-a] \n[client-a] (kern: log truncated)\n"
            );
            assert!(p.console <= console_bound("client-a"));
            // A long single line is cut at LOG_MAX_BYTES.
            w.mem[CLIENT][1].bytes()[GUARD + 0x100..GUARD + 0x100 + 1024].fill(b'x');
            p.tail.clear();
            call(k, p, CLIENT, Sysnum::Log, &[text, 1024]);
            let out = console(p);
            let first = out.lines().next().unwrap();
            assert_eq!(first.len(), "[client-a] ".len() + LOG_MAX_BYTES);
            assert!(out.ends_with("[client-a] (kern: log truncated)\n"));
            // Exactly LOG_MAX_BYTES and a final newline: not cut.
            w.mem[CLIENT][1].bytes()[GUARD + 0x100 + LOG_MAX_BYTES] = b'\n';
            p.tail.clear();
            call(k, p, CLIENT, Sysnum::Log, &[text, LOG_MAX_BYTES + 1]);
            assert_eq!(console(p).lines().count(), 1, "{}", console(p));
            // One byte more is cut, and says so.
            p.tail.clear();
            call(k, p, CLIENT, Sysnum::Log, &[text, LOG_MAX_BYTES + 2]);
            assert!(console(p).ends_with("[client-a] (kern: log truncated)\n"));
            assert!(fault_of(k, CLIENT).is_none());
        });
    }

    /// A task with a slot to a driver cannot post the driver's interrupt
    /// bits (nor the supervisor's fault bit); other bits still work.
    #[test]
    fn kern_post_cannot_fake_an_interrupt() {
        machine(|_, k, p| {
            let drv = k.id_of(DRIVER).0 as usize;
            let r = call(k, p, SERVER, Sysnum::Post, &[drv, 1 << 3]);
            assert_eq!(r[0], RC_OK as usize);
            assert_eq!(k.tasks[DRIVER].notifications & (1 << 3), 1 << 3);
            call(k, p, SERVER, Sysnum::Post, &[drv, 1 << 1 | 1 << 4]);
            assert_eq!(fault_of(k, SERVER), Some(FaultKind::NotPermitted));
            assert_eq!(k.tasks[DRIVER].notifications & (1 << 1 | 1 << 4), 0);
            // The supervisor's fault bit ("late" has the supervisor in its
            // slots).
            call(
                k,
                p,
                0,
                Sysnum::TaskControl,
                &[TaskControl::Restart as usize, LATE],
            );
            k.tasks[0].notifications = 0;
            let sup = k.id_of(0).0 as usize;
            call(
                k,
                p,
                LATE,
                Sysnum::Post,
                &[sup, SUPERVISOR_FAULT_BIT as usize],
            );
            assert_eq!(fault_of(k, LATE), Some(FaultKind::NotPermitted));
            // (The supervisor's bit is set now: by the kernel, for the fault.)
            // The real interrupt still arrives.
            k.interrupt(p, 40);
            assert_eq!(k.tasks[DRIVER].notifications & (1 << 1), 1 << 1);
        });
    }

    /// A mask with one foreign bit enables nothing, not even the caller's
    /// own interrupt.
    #[test]
    fn kern_irq_control_refuses_before_enabling() {
        machine(|_, k, p| {
            call(k, p, DRIVER, Sysnum::IrqControl, &[1 << 1 | 1 << 5, 1]);
            assert_eq!(fault_of(k, DRIVER), Some(FaultKind::NotPermitted));
            assert_eq!(p.enabled, vec![false; p.irqs.len()]);
            call(
                k,
                p,
                0,
                Sysnum::TaskControl,
                &[TaskControl::Restart as usize, DRIVER],
            );
            call(k, p, DRIVER, Sysnum::IrqControl, &[1 << 1 | 1 << 2, 1]);
            assert!(fault_of(k, DRIVER).is_none());
            assert_eq!(p.enabled, vec![true, true, false]);
        });
    }

    /// A post-only peer (`post_slots`): post allowed, send faults; a task
    /// in neither list: post faults.
    #[test]
    fn kern_post_only_grants_post_not_send() {
        machine(|_, k, p| {
            let a = k.id_of(CLIENT).0 as usize;
            let r = call(k, p, DRIVER, Sysnum::Post, &[a, 1 << 8]);
            assert_eq!(r[0], RC_OK as usize);
            assert!(fault_of(k, DRIVER).is_none());
            assert_ne!(k.tasks[CLIENT].notifications & 1 << 8, 0);
            // lookup and refresh name it too (prq-server reaps dead owners).
            let r = call(k, p, DRIVER, Sysnum::RefreshTaskId, &[a]);
            assert_eq!(r[0], a);
            call(k, p, DRIVER, Sysnum::Send, &[a, 0, 0, 0, 0, 0, 0]);
            assert_eq!(fault_of(k, DRIVER), Some(FaultKind::SlotViolation));
            call(
                k,
                p,
                0,
                Sysnum::TaskControl,
                &[TaskControl::Restart as usize, DRIVER],
            );
            let b = k.id_of(CLIENT_B).0 as usize;
            call(k, p, DRIVER, Sysnum::Post, &[b, 1 << 8]);
            assert_eq!(fault_of(k, DRIVER), Some(FaultKind::SlotViolation));
            assert_eq!(k.tasks[CLIENT_B].notifications & 1 << 8, 0);
        });
    }

    /// A register window: the kernel reads and writes exactly the window's
    /// registers for its task; another index, another window or a task
    /// without windows faults (`NotPermitted`) and writes nothing.
    #[test]
    fn kern_reg_window_only_its_registers() {
        machine(|w, k, p| {
            let win = &w.descs[DRIVER].reg_windows[0];
            let word = |i: usize| {
                // SAFETY: the window's base is a leaked [u32; 4].
                unsafe { core::ptr::read_volatile((win.base as *const u32).add(i)) }
            };
            k.current = DRIVER;
            let name = put_text(k, &mut Rng::new(5), b"regs");
            let r = call(k, p, DRIVER, Sysnum::RegLookup, &[name, 4]);
            assert_eq!((r[0], r[1], r[2]), (RC_OK as usize, 0, 4));
            call(k, p, DRIVER, Sysnum::RegWrite, &[0, 2, 0xabcd]);
            assert!(fault_of(k, DRIVER).is_none());
            assert_eq!(word(2), 0xabcd);
            let r = call(k, p, DRIVER, Sysnum::RegRead, &[0, 2]);
            assert_eq!((r[0], r[1]), (RC_OK as usize, 0xabcd));
            call(k, p, DRIVER, Sysnum::RegWrite, &[0, 4, 1]);
            assert_eq!(fault_of(k, DRIVER), Some(FaultKind::NotPermitted));
            call(
                k,
                p,
                0,
                Sysnum::TaskControl,
                &[TaskControl::Restart as usize, DRIVER],
            );
            call(k, p, DRIVER, Sysnum::RegWrite, &[1, 0, 1]);
            assert_eq!(fault_of(k, DRIVER), Some(FaultKind::NotPermitted));
            call(k, p, SERVER, Sysnum::RegRead, &[0, 0]);
            assert_eq!(fault_of(k, SERVER), Some(FaultKind::NotPermitted));
            assert_eq!([word(0), word(1), word(2), word(3)], [0, 0, 0xabcd, 0]);
        });
    }

    /// `refresh_task_id` answers for the caller and its task-slots only.
    #[test]
    fn kern_refresh_task_id_only_self_and_slots() {
        machine(|_, k, p| {
            let stale = TaskId::new(DRIVER, abi::Generation(0)).0 as usize;
            call(
                k,
                p,
                0,
                Sysnum::TaskControl,
                &[TaskControl::Restart as usize, DRIVER],
            );
            let r = call(k, p, CLIENT, Sysnum::RefreshTaskId, &[stale]);
            assert_eq!(r[0], k.id_of(DRIVER).0 as usize);
            let me = TaskId::new(CLIENT, abi::Generation(0)).0 as usize;
            let r = call(k, p, CLIENT, Sysnum::RefreshTaskId, &[me]);
            assert_eq!(r[0], me);
            // client-b is not in client-a's slots.
            let other = k.id_of(CLIENT_B).0 as usize;
            call(k, p, CLIENT, Sysnum::RefreshTaskId, &[other]);
            assert_eq!(fault_of(k, CLIENT), Some(FaultKind::SlotViolation));
        });
    }

    /// An SError is charged to the running task only if it holds MMIO;
    /// otherwise the machine stops (it cannot be attributed).
    #[test]
    fn kern_serror_charged_only_to_an_mmio_holder() {
        machine(|_, k, p| {
            k.current = DRIVER;
            Event::SError(0xbf00_0000).apply(k, p);
            assert_eq!(fault_of(k, DRIVER), Some(FaultKind::SError));
            assert!(console(p).contains("kern: task driver faulted: SError"));
            k.current = CLIENT_B;
            let r = catch_unwind(AssertUnwindSafe(|| Event::SError(0xbf00_0000).apply(k, p)));
            assert!(r.is_err_and(|e| e.is::<ShutdownSignal>()));
            assert!(console(p).contains("kern: SError while task client-b ran"));
        });
    }

    /// Restart `t` as the supervisor does; the code it gets.
    fn restart(k: &mut Kernel, p: &mut FuzzPlatform, t: usize) -> u32 {
        call(
            k,
            p,
            0,
            Sysnum::TaskControl,
            &[TaskControl::Restart as usize, t],
        )[0] as u32
    }

    /// Issue 8 item 5: a task restarted 100 times (more than the old 6-bit
    /// generation held) keeps distinct ids, and a send to its first
    /// incarnation's id is refused with the current generation every time.
    #[test]
    fn kern_generations_past_64_restarts_stay_distinct() {
        machine(|_, k, p| {
            let first = k.id_of(SERVER);
            let mut seen = std::collections::HashSet::from([first]);
            for n in 1..=130u32 {
                assert_eq!(restart(k, p, SERVER), RC_OK);
                let now = k.id_of(SERVER);
                assert_eq!(now.generation(), abi::Generation(n));
                assert!(seen.insert(now), "id {now:?} came back after {n} restarts");
                let r = call(
                    k,
                    p,
                    CLIENT,
                    Sysnum::Send,
                    &[first.0 as usize, STACK_VA, 0, STACK_VA, 0, STACK_VA, 0],
                );
                assert_eq!(abi::is_dead_code(r[0] as u32), Some(now.generation()));
                assert!(fault_of(k, CLIENT).is_none());
            }
        });
    }

    /// The exhaustion rule: a task in `Generation::LAST` that faults is not
    /// restarted (`RC_GENERATIONS_EXHAUSTED`): it stays faulted with its
    /// generation, nothing of it is reset, and every id it ever had stays
    /// refused — no generation is ever reused.
    #[test]
    fn kern_restart_after_the_last_generation_is_refused() {
        machine(|_, k, p| {
            let base = abi::Generation::LAST.0 - 1;
            k.tasks[SERVER].generation = abi::Generation(base);
            p.gen_base[SERVER] = base;
            let old = k.id_of(SERVER);
            assert_eq!(restart(k, p, SERVER), RC_OK);
            let last = k.id_of(SERVER);
            assert_eq!(last.generation(), abi::Generation::LAST);
            assert_ne!(last, TaskId::KERNEL);
            assert_ne!(last, TaskId::ANY);
            // The last incarnation faults; the supervisor's restart is refused.
            call(k, p, SERVER, Sysnum::Panic, &[0, 0]);
            assert_eq!(fault_of(k, SERVER), Some(FaultKind::Panic));
            let resets = p.resets[SERVER];
            assert_eq!(restart(k, p, SERVER), abi::RC_GENERATIONS_EXHAUSTED);
            assert_eq!(restart(k, p, SERVER), abi::RC_GENERATIONS_EXHAUSTED);
            assert_eq!(p.resets[SERVER], resets, "a refused restart reset the task");
            assert_eq!(fault_of(k, SERVER), Some(FaultKind::Panic));
            assert_eq!(k.id_of(SERVER), last);
            // Status still reports the last generation and the fault.
            let st = call(
                k,
                p,
                0,
                Sysnum::TaskControl,
                &[TaskControl::Status as usize, SERVER],
            );
            assert_eq!(st[0] as u32, RC_OK);
            assert_eq!(st[2] as u32, abi::Generation::LAST.0);
            assert_eq!(st[3] as u32, FaultKind::Panic as u32);
            // An older id is refused with the (unchanged) last generation.
            let r = call(
                k,
                p,
                CLIENT,
                Sysnum::Send,
                &[old.0 as usize, STACK_VA, 0, STACK_VA, 0, STACK_VA, 0],
            );
            assert_eq!(abi::is_dead_code(r[0] as u32), Some(abi::Generation::LAST));
            assert!(fault_of(k, CLIENT).is_none());
        });
    }

    /// A restart zeroes stack, data and memory regions; text is left alone.
    #[test]
    fn kern_restart_zeroes_memory_regions() {
        machine(|w, k, p| {
            for b in &w.mem[CLIENT][1..] {
                b.bytes()[GUARD..GUARD + b.size].fill(0x5a);
            }
            call(
                k,
                p,
                0,
                Sysnum::TaskControl,
                &[TaskControl::Restart as usize, CLIENT],
            );
            for b in &w.mem[CLIENT][1..] {
                assert!(b.bytes()[GUARD..GUARD + b.size].iter().all(|x| *x == 0));
            }
        });
    }

    /// The bounded smoke pass `cargo xtask test` runs; the long runs are
    /// `cargo xtask fuzz kernel`.
    #[test]
    fn fuzz_kernel_smoke_never_panics_and_table_stays_consistent() {
        let rep = fuzz(3, 60_000, Duration::from_secs(60));
        if let Some(f) = &rep.failure {
            panic!("{f}");
        }
        println!("{rep:?}");
        // The fuzzer must reach deep: every call completed normally somewhere,
        // tasks faulted and were restarted, machines ended in several ways.
        for (i, ok) in rep.ok_by_sysnum.iter().enumerate() {
            let s = Sysnum::from_u32(i as u32).unwrap();
            if s != Sysnum::Panic && s != Sysnum::Shutdown {
                assert!(*ok > 0, "{s:?} never completed: {rep:?}");
            }
        }
        assert!(rep.faults > 100 && rep.restarts > 100, "{rep:?}");
        assert!(rep.machines > 1, "{rep:?}");
    }
}
