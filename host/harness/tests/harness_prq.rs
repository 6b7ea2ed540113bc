//! prq-server on the SMMUv3 model with the real iommu-server: every edge
//! of the fault path (`harness::prq_scenarios`), each over 50 seeds, each
//! run ending with the invariant check (I1 exactly one response per group
//! at the device, I2 records only to the stream's owner; `harness::prq`).

use harness::prq::PrqRig;
use harness::prq_scenarios as s;

const SEEDS: u64 = 50;

fn for_seeds(rig: fn() -> PrqRig) {
    for seed in 0..SEEDS {
        rig().run(seed).check();
    }
}

#[test]
fn harness_prq_fault_respond() {
    for_seeds(s::fault_respond);
}

#[test]
fn harness_prq_no_handler() {
    for_seeds(s::no_handler);
}

#[test]
fn harness_prq_replace() {
    for_seeds(s::replace);
}

#[test]
fn harness_prq_detach() {
    for_seeds(s::detach);
}

#[test]
fn harness_prq_foreign_cookie() {
    for_seeds(s::foreign_cookie);
}

#[test]
fn harness_prq_overflow() {
    for_seeds(s::overflow);
}

#[test]
fn harness_prq_owner_queue_full() {
    for_seeds(s::owner_queue_full);
}

#[test]
fn harness_prq_unbind_drain() {
    for_seeds(s::unbind_drain);
}

#[test]
fn harness_prq_restart() {
    for_seeds(s::restart);
}

#[test]
fn harness_prq_events() {
    for_seeds(s::events);
}

#[test]
fn harness_prq_stall() {
    for_seeds(s::stall);
}

#[test]
fn harness_prq_owner_died() {
    for_seeds(s::owner_died);
}

/// Owner death is pushed: a VM faults holding a delivered and a queued
/// group; with prq-server the supervisor's only death watcher, both are
/// answered InvalidRequest once at the device (the run's I1 check), and
/// after the death prq-server got nothing but the supervisor's death bit:
/// no PRI or event interrupt, no call from a VM, only iommu-server taking
/// the responses; it pulled the log with `next_death`.
#[test]
fn harness_prq_owner_died_pushed() {
    use harness::trace::What;
    for seed in 0..SEEDS {
        let run = s::owner_died_pushed().run(seed);
        run.check();
        let t = &run.report.trace;
        let prq = t.index_of("prq-server").unwrap();
        let sup = t.index_of("supervisor").unwrap();
        let died = t
            .whats()
            .position(|w| matches!(w, What::Fault { task, .. } if t.name(*task) == "vm1"))
            .unwrap_or_else(|| panic!("seed {seed}: vm1 never faulted"));
        let (mut pulls, mut deaths) = (0, 0);
        for w in t.whats().skip(died) {
            match w {
                What::Notification { task, bits } if task.index() == prq => {
                    assert_eq!(
                        *bits,
                        prq_server::DEATH_BIT,
                        "seed {seed}: prq-server notified {bits:#x} after the death"
                    );
                    deaths += 1;
                }
                What::Interrupt { task, intid, .. } if task.index() == prq => {
                    panic!("seed {seed}: interrupt {intid} to prq-server after the death")
                }
                What::Message {
                    from, to, decoded, ..
                } if to.index() == prq => {
                    let op = decoded.as_ref().map(|d| d.operation.as_str());
                    assert!(
                        t.name(*from) == "iommu-server" && op == Some("take_responses"),
                        "seed {seed}: {} called prq-server ({op:?}) after the death",
                        t.name(*from)
                    );
                }
                What::Message { from, to, .. } if from.index() == prq && to.index() == sup => {
                    pulls += 1
                }
                _ => {}
            }
        }
        assert!(
            deaths >= 1 && pulls >= 1,
            "seed {seed}: death bits {deaths}, next_death calls {pulls}"
        );
    }
}

/// The death log overflows while prq-server is down
/// (`death_log_overflow_while_down`): back, it pulls `Overflowed`, walks
/// once over its owners with the supervisor's `current_task`, and the dead
/// owner's route is gone (a group on its stream answered at once). The
/// trace shows the walk ran: prq-server asked `current_task`. (The group
/// would stay queued for the dead incarnation without the walk: nothing
/// else tells prq-server of that death.)
#[test]
fn harness_prq_death_log_overflow_while_down() {
    use harness::trace::What;
    for seed in 0..6 {
        let run = s::death_log_overflow_while_down(seed);
        let t = &run.report.trace;
        let routed = t
            .events
            .iter()
            .find(|e| matches!(&e.what, What::Log { text } if text.contains("vm1: routed")))
            .map(|e| e.step);
        assert!(
            routed.is_some_and(|st| st < s::PRQ_KILL_STEPS.0),
            "seed {seed}: vm1 routed at step {routed:?}, after the kills"
        );
        run.check();
        // The supervisor's messages are not decoded in these rigs: by number.
        let current_task = supervisor_api::SupervisorOp::CurrentTask as u16;
        let asked = t.messages().iter().any(|(from, to, op)| {
            from == "prq-server" && to == "supervisor" && *op == current_task
        });
        assert!(asked, "seed {seed}: prq-server never resynced");
    }
}

/// What prq-server does per fault does not depend on how many owners it
/// holds: the same fault rounds with 1 and with 4 VMs holding routes
/// (`owners_at_rest`) give, between `faults: begin` and `faults: end`,
/// the same count of prq-server's system calls (the trace's events of it:
/// receives, replies, posts, lease copies, interrupt control, refreshes,
/// sends), the same count of kernel entries of the whole machine, and no
/// `sys_refresh_task_id` at all; posts reach only the
/// faulting VM and iommu-server. (Before deaths were pushed, every
/// notification refreshed each owner: 4 system calls per notification
/// with 4 owners.)
#[test]
fn harness_prq_per_fault_cost_does_not_grow_with_owners() {
    use harness::trace::{Trace, What};
    fn count(t: &Trace, seed: u64, owners: usize) -> (usize, u64) {
        let prq = t.index_of("prq-server").unwrap();
        let at = |line: &str| {
            t.events
                .iter()
                .position(|e| matches!(&e.what, What::Log { text } if text.contains(line)))
                .unwrap_or_else(|| panic!("seed {seed}, {owners} owners: no {line:?}"))
        };
        let (b, e) = (at("faults: begin"), at("faults: end"));
        let mut calls = 0;
        for ev in &t.events[b..e] {
            let mine = match &ev.what {
                What::Refresh { task, .. } if task.index() == prq => {
                    panic!("seed {seed}, {owners} owners: prq-server refreshed a task id")
                }
                What::Post { from, to, .. } if from.index() == prq => {
                    let n = t.name(*to);
                    assert!(
                        n == "vm" || n == "iommu-server",
                        "seed {seed}, {owners} owners: prq-server posted {n}"
                    );
                    true
                }
                What::Notification { task, .. } | What::IrqControl { task, .. } => {
                    task.index() == prq
                }
                What::Message { from, .. } => from.index() == prq,
                What::Reply { from, .. } => from.index() == prq,
                What::Borrow { server, .. } => server.index() == prq,
                _ => false,
            };
            calls += mine as usize;
        }
        (calls, t.events[e].step - t.events[b].step)
    }
    for seed in 0..10 {
        let one = s::owners_at_rest(1).run(seed);
        one.check();
        let four = s::owners_at_rest(4).run(seed);
        four.check();
        let (c1, steps1) = count(&one.report.trace, seed, 1);
        let (c4, steps4) = count(&four.report.trace, seed, 4);
        if seed == 0 {
            eprintln!(
                "{} faults: prq-server system calls {c1} (1 owner) / {c4} (4 owners); kernel entries {steps1} / {steps4}",
                s::REST_ROUNDS
            );
        }
        assert_eq!(c1, c4, "seed {seed}: prq-server's calls, 1 vs 4 owners");
        assert_eq!(steps1, steps4, "seed {seed}: kernel entries, 1 vs 4 owners");
    }
}

/// The storm's figures, counted from each run's trace: IPC round trips
/// per batch of up to 64 groups (goal <= 3) and groups per round trip
/// (goal >= 16), over the fault path's three calls (fetch_faults, respond,
/// take_responses).
#[test]
fn harness_prq_storm() {
    use harness::prq_scenarios::STORM_GROUPS;
    // Worst over the seeds, for `cargo xtask bench` (it runs this test and
    // reads the BENCH lines).
    let (mut worst_batch, mut worst_trip) = (0f64, f64::MAX);
    for seed in 0..SEEDS {
        let run = s::storm().run(seed);
        run.check();
        let text = run.report.trace.text();
        let sends = |op: &str| {
            text.lines()
                .filter(|l| l.contains(" send ") && l.contains(op))
                .count()
        };
        let (f, r, t) = (
            sends("Prq.fetch_faults("),
            sends("Prq.respond("),
            sends("Prq.take_responses("),
        );
        let batches = STORM_GROUPS.div_ceil(64) as usize;
        let trips = f + r + t;
        let per_batch = trips as f64 / batches as f64;
        let per_trip = STORM_GROUPS as f64 / trips as f64;
        if seed == 0 {
            eprintln!(
                "storm: {STORM_GROUPS} groups, 4 devices, {batches} batches: fetch_faults {f}, respond {r}, take_responses {t}: {per_batch:.2} round trips per batch, {per_trip:.1} groups per round trip"
            );
        }
        assert!(
            per_batch <= 3.0,
            "seed {seed}: {per_batch} round trips per batch"
        );
        assert!(
            per_trip >= 16.0,
            "seed {seed}: {per_trip} groups per round trip"
        );
        worst_batch = worst_batch.max(per_batch);
        worst_trip = worst_trip.min(per_trip);
    }
    eprintln!("BENCH prq_storm_round_trips_per_batch {worst_batch:.2} round-trips");
    eprintln!("BENCH prq_storm_groups_per_round_trip {worst_trip:.1} groups");
}

#[test]
fn harness_prq_unbind_race() {
    for_seeds(s::unbind_race);
}

#[test]
fn harness_prq_detach_pasids() {
    for_seeds(s::detach_pasids);
}

#[test]
fn harness_prq_event_overflow() {
    for_seeds(s::event_overflow);
}

#[test]
fn harness_prq_stall_teardown() {
    for_seeds(s::stall_teardown);
}

/// The checker itself: a group its owner never answers, and a record
/// fetched by a VM that does not own the stream, are both reported.
#[test]
fn prq_invariant_check_reports_an_unanswered_group() {
    use harness::prq::PrqVm;
    use harness::smmu::SID_A;
    use iommu_server_api::StreamId;
    let run = PrqRig::new(smmuv3_model::SmmuConfig::new())
        .vm("vm", &[SID_A], |vm: PrqVm| {
            let d = vm
                .iommu
                .create_s2_domain(true)
                .unwrap_or(iommu_server_api::DomainId(0));
            let _ = vm.iommu.attach(StreamId(SID_A), d);
            vm.group(SID_A, None, 1, 1);
            let _ = vm.fetch();
            // Never answered.
            userlib::sys_shutdown(0)
        })
        .run(1);
    run.report.expect_shutdown(0);
    let e = run
        .invariants()
        .expect_err("an unanswered group must be reported");
    assert!(e.contains("I1") && e.contains("prgi: 1"), "{e}");
}

/// S1STALLD = 1 for a stream whose domain is not fault-capable (stall and
/// terminate model), never under a forced stall model.
#[test]
fn harness_prq_stall_disabled() {
    for_seeds(|| s::stall_disabled(false));
    for_seeds(|| s::stall_disabled(true));
}

#[test]
fn harness_prq_event_abort() {
    for_seeds(s::event_abort);
}
