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
//!
//! The verdict of a run: the scenario's own device-level checks, I1 and I2
//! ([`PrqRun::invariants`]), I3 ([`i3_at_device`] and pasid-alloc's
//! message check `smmu::check_i3`), I4 ([`i4_at_device`]) and I6
//! ([`i6_partials_discarded`]); I5 is the two-VM targets' scripts.

use crate::pasid_scenarios::ReuseLog;
use crate::prq::{FaultLog, PrqRig, PrqRun};
use crate::smmu::{ram_pa, RAM_SIZE};
use crate::{Action, Choice, ChoiceKind, Harness, Outcome, Report};
use smmuv3_model::{Access, PriGroup, PriOutcome, Smmu};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
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

/// I4 at the device, after any run: the SMMU model is asked to translate
/// for every stream the rigs use and for one nobody owns, at an IOVA the
/// VMs map and at one nobody maps. A stream that translates must land in a
/// VM's RAM (a bypass gives PA = IOVA, outside all of them); the stream
/// nobody owns must abort; GBPA.ABORT must be set (with translation off
/// the SMMU would otherwise pass transactions through). The probes come
/// after the end state was taken; they leave only event records behind.
pub fn i4_at_device(smmu: &Arc<Smmu>) -> Vec<String> {
    use crate::smmu::{GUEST_IPA, IOVA, SID_A, SID_B};
    /// No rig maps it, no RAM is there.
    const PROBE_IOVA: u64 = 0x7000_0000;
    /// Owned by nobody in any rig (inside the stream table or not, it must
    /// abort).
    const UNOWNED_SID: u32 = 0x11;
    let in_ram = |pa: u64| (0..8).any(|k| (ram_pa(k)..ram_pa(k) + RAM_SIZE as u64).contains(&pa));
    let dev = smmuv3_model::Device::new(smmu.clone());
    let mut errs = Vec::new();
    // The rigs' streams (0x20: the storm's first device).
    for sid in [SID_A, SID_B, 0x20, UNOWNED_SID] {
        for iova in [IOVA, GUEST_IPA, 0x40_0000, PROBE_IOVA] {
            match dev.translate(sid, None, iova, Access::READ) {
                Ok(pa) if sid == UNOWNED_SID => errs.push(format!(
                    "I4: stream {sid:#x}, owned by nobody, translated IOVA {iova:#x} to {pa:#x}"
                )),
                Ok(pa) if !in_ram(pa) => errs.push(format!(
                    "I4: stream {sid:#x} IOVA {iova:#x} reached PA {pa:#x}, outside every VM's RAM (bypass)"
                )),
                _ => {}
            }
        }
    }
    let abort = smmuv3::regs::GBPA::ABORT.mask << smmuv3::regs::GBPA::ABORT.shift;
    if smmuv3::Mmio::read32(&**smmu, smmuv3::regs::offset::GBPA) & abort == 0 {
        errs.push("I4: GBPA.ABORT clear (translation off would bypass)".into());
    }
    errs
}

/// I3 at the device, from what the new owner of a PASID recorded the
/// moment it got the PASID back ([`crate::pasid_scenarios::Reuse`]): no
/// group of the old binding still pending, no DMA through the old binding
/// landing (then, and after the new owner used the PASID), no response of
/// the old binding reaching the device after the reuse.
pub fn i3_at_device(reuses: &ReuseLog) -> Vec<String> {
    let mut errs = Vec::new();
    for r in reuses.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let (p, g, s) = (r.pasid, r.generation, r.old_stream);
        if !r.pending.is_empty() {
            errs.push(format!(
                "I3: PASID {p:#x} handed out again (generation {g}) while the device still waited on its old binding's groups {:?}",
                r.pending
            ));
        }
        if let Some(Ok(pa)) = r.old_dma {
            errs.push(format!(
                "I3: PASID {p:#x} handed out again (generation {g}) while a DMA through its old binding (stream {s:#x}) landed at {pa:#x}"
            ));
        }
        if let Some(Ok(pa)) = r.old_dma_later {
            errs.push(format!(
                "I3: PASID {p:#x} in use by its new owner while a DMA through its old binding (stream {s:#x}) landed at {pa:#x}"
            ));
        }
        if !r.responses_after.is_empty() {
            errs.push(format!(
                "I3: responses of PASID {p:#x}'s old binding (stream {s:#x}) reached the device after it was handed out again: {:?}",
                r.responses_after
            ));
        }
    }
    errs
}

/// I6 at the device's side of the PRI queue (IHI 0070 §8.1): a group whose
/// Last the queue discarded (the SMMU answered it itself) is dead, and its
/// pages queued before the overflow must not reach anyone — alone or mixed
/// into a later group that reuses its PRG index. The device's requests
/// are split into instances per (stream, PASID, PRG index) at every Last;
/// every group an owner fetched (its records, by cookie) must be pages of
/// one instance whose Last reached the queue.
pub fn i6_partials_discarded(l: &FaultLog) -> Vec<String> {
    // Per group key: the instance being built (queued pages), and the
    // finished instances whose Last was queued.
    let mut open: BTreeMap<PriGroup, BTreeSet<u64>> = BTreeMap::new();
    let mut whole: BTreeMap<PriGroup, Vec<BTreeSet<u64>>> = BTreeMap::new();
    for &(g, addr, last, out) in &l.requests {
        let cur = open.entry(g).or_default();
        if out == PriOutcome::Queued {
            cur.insert(addr);
        }
        if last {
            let inst = std::mem::take(cur);
            if out == PriOutcome::Queued {
                whole.entry(g).or_default().push(inst);
            }
        }
    }
    let mut fetched: BTreeMap<(String, u64, PriGroup), BTreeSet<u64>> = BTreeMap::new();
    for (vm, r) in &l.delivered {
        if r.kind != prq_server_api::FaultKind::PageRequest {
            continue;
        }
        let ssid = r
            .flags
            .contains(prq_server_api::FaultFlags::PASID_VALID)
            .then_some(r.pasid.0);
        let g = PriGroup {
            sid: r.sid.0,
            ssid,
            prgi: r.group,
        };
        fetched
            .entry((vm.clone(), r.cookie.0, g))
            .or_default()
            .insert(r.addr);
    }
    let mut errs = Vec::new();
    for ((vm, _, g), pages) in &fetched {
        let one = whole
            .get(g)
            .is_some_and(|v| v.iter().any(|inst| pages.is_subset(inst)));
        if !one {
            errs.push(format!(
                "I6: {vm} got group {g:?} with pages {pages:x?}: not one group the device completed (a partial an overflow discarded was kept?)"
            ));
        }
    }
    errs
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
    errs.extend(i6_partials_discarded(&r.log.lock()));
    errs.extend(i4_at_device(&r.bus.smmu));
    Verdict {
        end_state: h.finish(),
        violation: (!errs.is_empty()).then(|| errs.join("; ")),
        report: r.report,
    }
}

/// The first line of a panic's message.
fn panic_line(p: &(dyn std::any::Any + Send)) -> String {
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into());
    msg.lines().next().unwrap_or("").to_string()
}

/// The verdict of a run that panicked after the machine stopped: an
/// end-of-run check of the harness failed (`Harness::end_check`, e.g.
/// `smmu::check_i3` on pasid-alloc's messages, in every rig with
/// pasid-alloc). Its report is lost with the panic; a scripted schedule
/// is replayed by its prefix alone (the rest are 0s by definition), so the
/// prefix stands in for its choices. Nothing is branched on from it.
fn panicked(s: &Sched, p: &(dyn std::any::Any + Send), mut errs: Vec<String>) -> Verdict {
    use std::hash::{Hash, Hasher};
    let line = panic_line(p);
    let choices = match s {
        Sched::Script(v) => v
            .iter()
            .map(|&value| Choice {
                kind: ChoiceKind::Task,
                range: value + 1,
                value,
                costs: false,
            })
            .collect(),
        Sched::Seed(_) => Vec::new(),
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    line.hash(&mut h);
    errs.push(match s {
        Sched::Seed(seed) => format!("the run panicked (seed {seed}): {line}"),
        Sched::Script(_) => format!("the run panicked: {line}"),
    });
    Verdict {
        report: Report {
            outcome: Outcome::KernelPanic(line),
            trace: Default::default(),
            steps: 0,
            now_ms: 0,
            console: String::new(),
            choices,
            end_state: h.finish(),
        },
        end_state: h.finish(),
        violation: Some(errs.join("; ")),
    }
}

/// Runs `t` under `s`; a panic after the machine stopped (a failed
/// end-of-run check) is a violation, not the end of the search.
pub fn run_target(t: &Target, s: &Sched) -> Verdict {
    match catch_unwind(AssertUnwindSafe(|| (t.run)(s))) {
        Ok(v) => v,
        Err(p) => panicked(s, &*p, Vec::new()),
    }
}

/// Free before unbind with pending faults and a second VM waiting for the
/// PASID: the script's checks, the invariants, and I3 at the device from
/// what the new owner saw when the PASID came back ([`i3_at_device`]),
/// also when pasid-alloc's message check (`smmu::check_i3`) failed the run.
fn free_before_unbind(s: &Sched) -> Verdict {
    let reuses = ReuseLog::default();
    let rig = crate::pasid_scenarios::free_before_unbind_faults(reuses.clone());
    let r = catch_unwind(AssertUnwindSafe(|| rig.run_with(s.seed(), |h| s.apply(h))));
    let i3 = i3_at_device(&reuses);
    match r {
        Ok(run) => {
            let mut v = prq_verdict(run, true);
            if !i3.is_empty() {
                let mut all = i3;
                all.extend(v.violation.take());
                v.violation = Some(all.join("; "));
            }
            v
        }
        Err(p) => panicked(s, &*p, i3),
    }
}

fn prq(rig: PrqRig, s: &Sched) -> Verdict {
    prq_verdict(rig.run_with(s.seed(), |h| s.apply(h)), true)
}

/// `action` (a kill or a restart) at a chosen step in `window`.
fn prq_kill(rig: PrqRig, s: &Sched, action: Action, window: (u64, u64)) -> Verdict {
    prq_verdict(
        rig.run_with(s.seed(), move |h| {
            s.apply(h).at_some_step(window.0, window.1, action)
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
    let mut rig = IommuRig::new(SmmuConfig::new())
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
        });
    let bus = rig.bus();
    let h = rig.harness(s.seed());
    let report = s
        .apply(h)
        .at_some_step(1, 60, Action::kill("iommu-server"))
        .run();
    let mut errs = Vec::new();
    if report.outcome != Outcome::Shutdown(0) {
        let failed: Vec<&str> = report
            .console
            .lines()
            .filter(|l| l.contains("FAILED"))
            .collect();
        errs.push(format!(
            "ended {:?}: {}",
            report.outcome,
            failed.join(" | ")
        ));
    }
    errs.extend(i4_at_device(&bus.smmu));
    Verdict {
        end_state: report.end_state,
        violation: (!errs.is_empty()).then(|| errs.join("; ")),
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

use crate::death_scenarios as ds;
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
        name: "owner-died-pushed",
        about: "a VM faulting holding a delivered and a queued group, prq-server the only death watcher: answered through the death log alone",
        bound: (4, 100_000),
        run: |s| prq(ps::owner_died_pushed(), s),
    },
    Target {
        name: "vm-killed",
        about: "a VM killed at a chosen step of its fault script (steps 1..=130); the rest stays exactly-once",
        bound: (3, 100_000),
        run: |s| prq_kill(ps::fault_respond(), s, Action::kill("vm"), (1, 130)),
    },
    Target {
        name: "vm-restarted",
        about: "a VM restarted directly (task control, no death log: prq-server sees it at the new incarnation's first call) at a chosen step 1..=130 of its fault script",
        bound: (3, 100_000),
        run: |s| prq_kill(ps::fault_respond(), s, Action::restart("vm"), (1, 130)),
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
        name: "free-before-unbind",
        about: "a VM frees its bound PASID with a delivered and a queued group; a second VM gets the PASID only after the drain (I3 at the device)",
        bound: (4, 100_000),
        run: free_before_unbind,
    },
    Target {
        name: "vm-fault-reclaims",
        about: "a VM faults holding an attached stream and delivered, queued and partial groups; its stream aborts (I4), every group answered once",
        bound: (5, 100_000),
        run: |s| prq(ds::vm_fault_reclaims(), s),
    },
    Target {
        name: "vm-dies-with-pasid",
        about: "a VM faults holding its bound PASID with pending groups; its next incarnation gets the PASID back only after the drain (I3)",
        bound: (5, 100_000),
        run: |s| prq(ds::vm_with_pasid_dies(), s),
    },
    Target {
        name: "pri-overflow",
        about: "a PRI queue overflow with a partial group; the partial is discarded, its PRG index reused by a new group (I6)",
        bound: (6, 100_000),
        run: |s| prq(ps::overflow(), s),
    },
    Target {
        name: "owner-queue-full",
        about: "an owner's fault queue full: the next group INVALID at once and the owner told lost (I6)",
        bound: (2, 100_000),
        run: |s| prq(ps::owner_queue_full(), s),
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
    Ok((t, run_target(t, &Sched::Script(v))))
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
        let v = run_target(t, &Sched::Script(prefix.clone()));
        acc.add(t, &v);
        if v.report.steps == 0 {
            // A panicked run: its choices were not recorded.
            continue;
        }
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
        let v = run_target(t, &Sched::Seed(seed));
        acc.add(t, &v);
    }
    acc.done()
}
