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
