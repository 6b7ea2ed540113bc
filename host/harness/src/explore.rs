//! Schedule exploration: bounded exhaustive search and random sweeps over
//! the machine's choice points, with the end-of-run invariants checked
//! after every schedule (docs/exploration.md).
//!
//! The machine takes every open decision from one [`crate::Chooser`]-style
//! source (a seed, or an explicit sequence continued with 0s), and records
//! each decision with its range. That makes stateless search simple: run a
//! prefix, read the recorded choice points past it, and push one new
//! prefix for every alternative of every new point that stays inside the
//! bound. Each schedule is produced exactly once (the prefixes form a
//! tree), and any schedule is replayed from its values alone.
//!
//! The bound is CHESS-style preemption bounding, counting every costly
//! non-default decision: a preemption (another equal-priority task while
//! the last one could go on), a due timer or interrupt held back, a
//! floating kill taken before its last step. Free choices (who runs after
//! the last task blocked) are all explored. `depth` limits branching to
//! the first N choice points; the clock-jitter points are left at 0 unless
//! asked for (they multiply the tree without new orders of IPC).

use crate::prq::{PrqRig, PrqRun};
use crate::{Action, ChoiceKind, Harness, Outcome, Report};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How a run's decisions are taken.
#[derive(Clone, Debug)]
pub enum Sched {
    Seed(u64),
    Script(Vec<u32>),
}

impl Sched {
    fn apply(&self, h: Harness) -> Harness {
        match self {
            Sched::Seed(_) => h,
            Sched::Script(v) => h.choices(v.clone()),
        }
    }
    fn seed(&self) -> u64 {
        match self {
            Sched::Seed(s) => *s,
            Sched::Script(_) => 1,
        }
    }
}

/// One explored run.
pub struct Verdict {
    pub report: Report,
    /// The machine's end state combined with what the devices saw.
    pub end_state: u64,
    /// What broke: the scenario's own checks (its shutdown status) or an
    /// end-of-run invariant.
    pub violation: Option<String>,
}

/// A scenario the explorer can run under any schedule.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    /// Default bound for `cargo xtask explore <name>` (preemptions, depth).
    pub bound: (u32, usize),
    pub run: fn(&Sched) -> Verdict,
}

/// `own_checks`: the scripts' verdict (shutdown status) counts too. A
/// target that kills a VM at a chosen step leaves it out: the restarted
/// VM runs a script written for a fresh machine (its stream is still
/// attached: `attach` answers Busy), so only the invariants and a clean
/// shutdown are judged there.
fn prq_verdict(r: PrqRun, own_checks: bool) -> Verdict {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.report.end_state.hash(&mut h);
    format!("{:?}", r.bus.smmu.device_responses()).hash(&mut h);
    let mut errs = Vec::new();
    let ended_ok = match r.report.outcome {
        Outcome::Shutdown(0) => true,
        Outcome::Shutdown(_) => !own_checks,
        _ => false,
    };
    if !ended_ok {
        let failed: Vec<&str> = r
            .report
            .console
            .lines()
            .filter(|l| l.contains("FAILED"))
            .collect();
        errs.push(format!(
            "ended {:?} after {} steps {}",
            r.report.outcome,
            r.report.steps,
            failed.join(" | ")
        ));
    }
    if let Err(e) = r.invariants() {
        errs.push(e.replace('\n', " | "));
    }
    Verdict {
        end_state: h.finish(),
        violation: (!errs.is_empty()).then(|| errs.join("; ")),
        report: r.report,
    }
}

fn prq(rig: PrqRig, s: &Sched) -> Verdict {
    prq_verdict(rig.run_with(s.seed(), |h| s.apply(h)), true)
}

fn prq_kill(rig: PrqRig, s: &Sched, task: &str, window: (u64, u64)) -> Verdict {
    let task = task.to_string();
    prq_verdict(
        rig.run_with(s.seed(), move |h| {
            s.apply(h)
                .at_some_step(window.0, window.1, Action::Kill(task))
        }),
        false,
    )
}

/// iommu-server killed at a chosen step while a VM maps a batch: whatever
/// the step, every DMA either lands in the page the VM mapped or aborts
/// (I4: never a bypass, never a stale or foreign page), and the VM's
/// calls return their result or `ServerDied`/`NotFound`, never anything
/// else. The VM reports through its shutdown status.
fn iommu_restart_mid_batch(s: &Sched) -> Verdict {
    use crate::smmu::{ram_pa, rw, IommuRig, Vm, IOVA, SID_A};
    use iommu_server_api as api;
    use iommu_server_api::IommuError;
    use smmuv3_model::{DmaError, SmmuConfig};
    let h = IommuRig::new(SmmuConfig::new())
        .strict(false)
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let c = &vm.iommu;
            let mut ok = true;
            let fine = |e: &IommuError| matches!(e, IommuError::ServerDied | IommuError::NotFound);
            let d = c.create_s2_domain(false);
            ok &= d.as_ref().err().is_none_or(fine);
            let d = d.unwrap_or(api::DomainId(0));
            let a = c.attach(api::StreamId(SID_A), d);
            ok &= a.as_ref().err().is_none_or(fine);
            for k in 0..4u64 {
                let m = c.map(d, IOVA + k * 0x1000, vm.ram.page(1 + k), 0x1000, rw());
                ok &= m.as_ref().err().is_none_or(fine);
            }
            for k in 0..4u64 {
                let r = vm.dma.write(SID_A, None, IOVA + k * 0x1000, b"x");
                let good = r == Ok(vm.ram.page(1 + k))
                    || matches!(r, Err(DmaError::Aborted) | Err(DmaError::Fault { .. }));
                if !good {
                    userlib::log!("FAILED I4: DMA {k} {:?} (RAM at {:#x})", r, ram_pa(0));
                }
                ok &= good;
            }
            userlib::sys_shutdown(if ok { 0 } else { 1 })
        })
        .harness(s.seed());
    let report = s
        .apply(h)
        .at_some_step(1, 60, Action::kill("iommu-server"))
        .run();
    let violation = (report.outcome != Outcome::Shutdown(0)).then(|| {
        let failed: Vec<&str> = report
            .console
            .lines()
            .filter(|l| l.contains("FAILED"))
            .collect();
        format!("ended {:?}: {}", report.outcome, failed.join(" | "))
    });
    Verdict {
        end_state: report.end_state,
        violation,
        report,
    }
}

/// Two VMs (the rig gives them priorities 3 and 4), each with a fault-capable domain on its
/// own stream, each raising a group and answering it by cookie, in any
/// order against each other: each gets only its own record (I2) and its
/// device one Success (I1). The second to finish shuts down with both
/// verdicts.
fn two_vms_answering() -> PrqRig {
    use crate::prq::PrqVm;
    use crate::smmu::{SID_A, SID_B};
    use iommu_server_api::StreamId;
    use prq_server_api::{FaultResponse, RespondStatus};
    use smmuv3_model::SmmuConfig;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    // Finished VMs in the low byte, failures above.
    let done = Arc::new(AtomicU32::new(0));
    // Groups raised so far (both VMs).
    let raised = Arc::new(AtomicU32::new(0));
    let script = move |sid: u32, prgi: u16, done: Arc<AtomicU32>, raised: Arc<AtomicU32>| {
        move |vm: PrqVm| {
            let mut ok = true;
            let d = vm.iommu.create_s2_domain(true);
            ok &= d.is_ok();
            let d = d.unwrap_or(iommu_server_api::DomainId(0));
            ok &= vm.iommu.attach(StreamId(sid), d).is_ok();
            vm.group(sid, None, prgi, 1);
            raised.fetch_add(1, Ordering::SeqCst);
            let (recs, _) = vm.fetch();
            let mine = recs.len() == 1 && recs[0].sid.0 == sid && recs[0].group == prgi;
            if !mine {
                userlib::log!("FAILED own record only: got {:?}", recs);
            }
            ok &= mine;
            if let Some(r) = recs.first() {
                let a = vm.respond(&[(r.cookie, FaultResponse::Success)]);
                ok &= a.status == RespondStatus::Complete;
            }
            let got = vm.wait_answer(sid, None, prgi, 1);
            ok &= got == [0b10];
            // Once the other VM's group is raised too, nothing more may
            // arrive here (a record of it would be I2's business).
            vm.wait_until(|| raised.load(Ordering::SeqCst) == 2);
            let (more, _) = vm.fetch();
            if !more.is_empty() {
                userlib::log!("FAILED nothing foreign: got {:?}", more);
                ok = false;
            }
            let prev = done.fetch_add(1 + if ok { 0 } else { 0x100 }, Ordering::SeqCst);
            let now = prev + 1 + if ok { 0 } else { 0x100 };
            if now & 0xff == 2 {
                userlib::sys_shutdown(if now >> 8 == 0 { 0 } else { 1 });
            }
            loop {
                userlib::sys_recv_notification(0);
            }
        }
    };
    PrqRig::new(SmmuConfig::new())
        .vm(
            "vm1",
            &[SID_A],
            script(SID_A, 1, done.clone(), raised.clone()),
        )
        .vm("vm2", &[SID_B], script(SID_B, 2, done, raised))
}

use crate::prq_scenarios as ps;

/// The exploration targets (`cargo xtask explore --list`).
pub const TARGETS: &[Target] = &[
    Target {
        name: "replace",
        about: "replace with queued, delivered and partial groups (I1 at the device)",
        bound: (4, 100_000),
        run: |s| prq(ps::replace(), s),
    },
    Target {
        name: "unbind-drain",
        about: "unbind + drain racing queued/delivered/partial groups and a stop marker",
        bound: (4, 100_000),
        run: |s| prq(ps::unbind_drain(), s),
    },
    Target {
        name: "unbind-race",
        about: "a device task raising 24 groups while the VM answers some and unbinds (no stop marker)",
        bound: (2, 100_000),
        run: |s| prq(ps::unbind_race(), s),
    },
    Target {
        name: "owner-died",
        about: "a VM dying holding a delivered and a queued group",
        bound: (4, 100_000),
        run: |s| prq(ps::owner_died(), s),
    },
    Target {
        name: "vm-killed",
        about: "a VM killed at a chosen step of its fault script (steps 1..=130); the rest stays exactly-once",
        bound: (3, 100_000),
        run: |s| prq_kill(ps::fault_respond(), s, "vm", (1, 130)),
    },
    Target {
        name: "prq-restart",
        about: "prq-server restarted with delivered, queued and answered-not-issued groups",
        bound: (4, 100_000),
        run: |s| prq(ps::restart(), s),
    },
    Target {
        name: "two-vms-cookies",
        about: "two VMs: another VM's cookie refused, the owner's answer goes through",
        bound: (4, 100_000),
        run: |s| prq(ps::foreign_cookie(), s),
    },
    Target {
        name: "two-vms-answering",
        about: "two VMs (priorities 3 and 4), each raising a group on its stream and answering it by cookie, in any order",
        bound: (4, 100_000),
        run: |s| prq(two_vms_answering(), s),
    },
    Target {
        name: "iommu-restart-batch",
        about: "iommu-server killed at a chosen step (1..=60) while a VM maps a batch: DMA lands or aborts (I4)",
        bound: (2, 100_000),
        run: iommu_restart_mid_batch,
    },
];

pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The bound of an exhaustive search.
#[derive(Clone, Debug)]
pub struct Bound {
    pub preemptions: u32,
    pub depth: usize,
    /// Also branch on clock-jitter points.
    pub jitter: bool,
    /// Stop after this many schedules (not exhausted then).
    pub max_schedules: u64,
}

/// A violation with its one-line replay string.
#[derive(Clone, Debug)]
pub struct Found {
    pub replay: String,
    pub what: String,
}

/// What a search or sweep saw.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub schedules: u64,
    pub distinct_end_states: u64,
    pub steps: u64,
    pub elapsed: Duration,
    /// Every schedule within the bound was run.
    pub exhausted: bool,
    pub violations: Vec<Found>,
    pub violating_schedules: u64,
    /// The end states themselves, so sweeps split over threads can count
    /// the distinct ones of the whole sweep.
    pub end_states: BTreeSet<u64>,
}

impl Summary {
    pub fn steps_per_s(&self) -> f64 {
        self.steps as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn schedules_per_s(&self) -> f64 {
        self.schedules as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The replay string of a run: `<target>:<choices>` (see
/// [`crate::decode_choices`]).
pub fn replay_string(t: &Target, r: &Report) -> String {
    format!("{}:{}", t.name, r.replay())
}

/// Runs the schedule a replay string names.
pub fn replay(s: &str) -> Result<(&'static Target, Verdict), String> {
    let (name, choices) = s
        .split_once(':')
        .ok_or_else(|| format!("replay string {s:?} has no ':'"))?;
    let t = find(name).ok_or_else(|| format!("no target {name:?}"))?;
    let v = crate::decode_choices(choices)?;
    Ok((t, (t.run)(&Sched::Script(v))))
}

struct Acc {
    sum: Summary,
    ends: BTreeSet<u64>,
    start: Instant,
}

impl Acc {
    fn new() -> Self {
        Acc {
            sum: Summary::default(),
            ends: BTreeSet::new(),
            start: Instant::now(),
        }
    }
    fn add(&mut self, t: &Target, v: &Verdict) {
        self.sum.schedules += 1;
        self.sum.steps += v.report.steps;
        self.ends.insert(v.end_state);
        if let Some(what) = &v.violation {
            self.sum.violating_schedules += 1;
            // Keep the first few; a broken invariant usually breaks in
            // many schedules at once.
            if self.sum.violations.len() < 10 {
                self.sum.violations.push(Found {
                    replay: replay_string(t, &v.report),
                    what: what.clone(),
                });
            }
        }
    }
    fn done(mut self) -> Summary {
        self.sum.distinct_end_states = self.ends.len() as u64;
        self.sum.end_states = self.ends;
        self.sum.elapsed = self.start.elapsed();
        self.sum
    }
}

/// Every schedule of `t` within `b`, depth first.
pub fn exhaust(t: &Target, b: &Bound) -> Summary {
    let mut acc = Acc::new();
    let mut stack: Vec<Vec<u32>> = vec![Vec::new()];
    let mut exhausted = true;
    while let Some(prefix) = stack.pop() {
        if acc.sum.schedules >= b.max_schedules {
            exhausted = false;
            break;
        }
        let v = (t.run)(&Sched::Script(prefix.clone()));
        acc.add(t, &v);
        let ch = &v.report.choices;
        // Cost of the prefix up to each point.
        let mut cost = 0u32;
        let mut costs = Vec::with_capacity(ch.len());
        for c in ch {
            costs.push(cost);
            if c.costs && c.value != 0 {
                cost += 1;
            }
        }
        let end = ch.len().min(b.depth);
        for i in (prefix.len()..end).rev() {
            let c = ch[i];
            if c.kind == ChoiceKind::Jitter && !b.jitter {
                continue;
            }
            let need = costs[i] + c.costs as u32;
            if need > b.preemptions {
                continue;
            }
            for alt in (1..c.range).rev() {
                let mut p: Vec<u32> = ch[..i].iter().map(|c| c.value).collect();
                p.push(alt);
                stack.push(p);
            }
        }
    }
    let mut s = acc.done();
    s.exhausted = exhausted;
    s
}

/// `n` seeded schedules from `first_seed` on (seeds keep the scenario's
/// clock jitter and pick every choice at random).
pub fn sweep(t: &Target, first_seed: u64, n: u64, time_limit: Option<Duration>) -> Summary {
    let mut acc = Acc::new();
    for seed in first_seed..first_seed + n {
        if time_limit.is_some_and(|l| acc.start.elapsed() >= l) {
            break;
        }
        let v = (t.run)(&Sched::Seed(seed));
        acc.add(t, &v);
    }
    acc.done()
}
