//! The explorer (`harness::explore`): a replay string reproduces its
//! schedule exactly; every small target is exhausted at its bound with no
//! violation; a short seeded sweep over all targets finds none either.
//! The mutants that show the checker catches broken code are in
//! `harness_explore_mutants.rs` (`cargo xtask explore --mutants`).

use harness::explore::{exhaust, find, replay, replay_string, sweep, Bound, Sched, TARGETS};

fn bound(k: u32) -> Bound {
    Bound {
        preemptions: k,
        depth: usize::MAX,
        jitter: false,
        max_schedules: 20_000,
    }
}

#[test]
fn harness_explore_replay_string_reproduces_the_identical_trace() {
    // A seeded run (every choice random, with clock jitter and a floating
    // kill), replayed from its recorded decisions alone.
    for name in ["vm-killed", "unbind-drain", "iommu-restart-batch"] {
        let t = find(name).unwrap();
        for seed in [3, 11] {
            let a = harness::explore::run_target(t, &Sched::Seed(seed));
            let line = replay_string(t, &a.report);
            assert!(!line.contains('\n'), "one line: {line}");
            let (_, b) = replay(&line).unwrap();
            assert_eq!(a.report.trace.text(), b.report.trace.text(), "{line}");
            assert_eq!(a.report.outcome, b.report.outcome);
            assert_eq!(a.end_state, b.end_state);
            assert_eq!(a.report.replay(), b.report.replay());
        }
    }
    // A schedule of the search (a kill at the 44th decision), twice.
    let (_, a) = replay("vm-killed:z43.1").unwrap();
    let (_, b) = replay("vm-killed:z43.1").unwrap();
    assert_eq!(a.report.trace.text(), b.report.trace.text());
    assert!(a.report.trace.text().contains("kill vm"));
    // Different decisions give a different run.
    let (_, c) = replay("vm-killed:z20.1").unwrap();
    assert_ne!(a.report.trace.text(), c.report.trace.text());
}

#[test]
fn harness_explore_every_target_exhausted_at_one_preemption_without_violation() {
    for t in TARGETS {
        let s = exhaust(t, &bound(1));
        assert!(s.exhausted, "{}: not exhausted in {}", t.name, s.schedules);
        assert!(s.schedules >= 2, "{}: nothing to explore", t.name);
        assert_eq!(s.violating_schedules, 0, "{}: {:?}", t.name, s.violations);
    }
}

#[test]
fn harness_explore_bound_grows_the_search() {
    let t = find("unbind-drain").unwrap();
    // Bound 0 still takes every free choice (who runs after a task
    // blocked): only preemptions and delays cost.
    let (a, b) = (exhaust(t, &bound(0)), exhaust(t, &bound(2)));
    let one = exhaust(t, &bound(1));
    assert!(a.schedules >= 1 && a.schedules < one.schedules && one.schedules < b.schedules);
    assert_eq!(b.violating_schedules, 0, "{:?}", b.violations);
}

#[test]
fn harness_explore_random_slice_over_every_target() {
    for t in TARGETS {
        let s = sweep(t, 1000, 10, None);
        assert_eq!(s.schedules, 10);
        assert_eq!(s.violating_schedules, 0, "{}: {:?}", t.name, s.violations);
    }
}

#[test]
fn harness_explore_free_before_unbind_records_the_reuse_at_the_device() {
    // The I3 verdict reads what the new owner saw when the PASID came
    // back: it must have come back, with nothing of the old binding left.
    use harness::pasid_scenarios::{free_before_unbind_faults, ReuseLog};
    for seed in [1, 7] {
        let reuses = ReuseLog::default();
        free_before_unbind_faults(reuses.clone()).run(seed).check();
        let l = reuses.lock().unwrap();
        assert_eq!(l.len(), 1, "{l:?}");
        let r = &l[0];
        assert_eq!((r.pasid, r.generation), (1, 1));
        assert!(r.pending.is_empty(), "{r:?}");
        assert!(matches!(r.old_dma, Some(Err(_))), "{r:?}");
        assert!(matches!(r.old_dma_later, Some(Err(_))), "{r:?}");
        assert!(r.responses_after.is_empty(), "{r:?}");
        drop(l);
        assert!(harness::explore::i3_at_device(&reuses).is_empty());
    }
}

#[test]
fn harness_explore_i4_and_i6_verdicts_catch_what_they_claim() {
    use harness::explore::{i4_at_device, i6_partials_discarded};
    use harness::prq::FaultLog;
    use harness::smmu::{Bus, SID_A};
    use iommu_server_api::StreamId;
    use pasid_alloc_api::Pasid;
    use prq_server_api::{Cookie, FaultFlags, FaultKind, FaultPerm, FaultRecord};
    use smmuv3_model::{PriGroup, PriOutcome::*, SmmuConfig};

    // I4: an SMMU out of reset (SMMUEN = 0, GBPA.ABORT = 0) passes
    // transactions through: the probe sees PA = IOVA.
    let bus = Bus::new(SmmuConfig::new(), vec![SID_A]);
    let e = i4_at_device(&bus.smmu).join("\n");
    assert!(e.contains("outside every VM's RAM (bypass)"), "{e}");
    assert!(e.contains("GBPA.ABORT clear"), "{e}");

    // I6: group 1's two pages were queued, its Last discarded by an
    // overflow; a new group 1 then completed with one page.
    let g = PriGroup {
        sid: SID_A,
        ssid: None,
        prgi: 1,
    };
    let rec = |cookie: u64, addr: u64| {
        (
            "vm".to_string(),
            FaultRecord {
                cookie: Cookie(cookie),
                sid: StreamId(SID_A),
                pasid: Pasid(0),
                kind: FaultKind::PageRequest,
                group: 1,
                addr,
                perm: FaultPerm::READ,
                flags: FaultFlags::empty(),
            },
        )
    };
    let mut l = FaultLog {
        requests: vec![
            (g, 0x1000, false, Queued),
            (g, 0x2000, false, Queued),
            (g, 0x5000, true, Overflow),
            (g, 0x7000, true, Queued),
        ],
        ..FaultLog::default()
    };
    l.delivered = vec![rec(9, 0x7000)];
    assert_eq!(i6_partials_discarded(&l), Vec::<String>::new());
    l.delivered = vec![rec(9, 0x1000), rec(9, 0x2000), rec(9, 0x7000)];
    let e = i6_partials_discarded(&l);
    assert!(
        e.len() == 1 && e[0].starts_with("I6: vm got group"),
        "{e:?}"
    );
    // The dead group alone, too.
    l.delivered = vec![rec(3, 0x1000)];
    assert_eq!(i6_partials_discarded(&l).len(), 1);
}
