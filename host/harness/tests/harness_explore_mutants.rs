//! The checker is tested too: each test-only mutant (cargo features
//! `explore-mutant-i1` … `-i6` of this crate, forwarded to prq-server,
//! pasid-alloc or iommu-server; never on by default) is found by the
//! exhaustive search, and the replay string it prints reproduces the
//! violation. Run with `cargo xtask explore --mutants` (this file is empty
//! without the features).
#![cfg(any(
    feature = "explore-mutant-i1",
    feature = "explore-mutant-i2",
    feature = "explore-mutant-i3",
    feature = "explore-mutant-i4",
    feature = "explore-mutant-i5",
    feature = "explore-mutant-i6"
))]

use harness::explore::{exhaust, find, replay, Bound};

fn caught(target: &str, k: u32, needle: &str) -> (u64, u64) {
    let t = find(target).unwrap();
    let s = exhaust(
        t,
        &Bound {
            preemptions: k,
            depth: usize::MAX,
            jitter: false,
            max_schedules: 20_000,
        },
    );
    assert!(
        s.violating_schedules > 0,
        "{target}: mutant survived {} schedules",
        s.schedules
    );
    let f = &s.violations[0];
    println!(
        "{target}: caught in {} of {} schedules: {}\nreplay: {}",
        s.violating_schedules, s.schedules, f.what, f.replay
    );
    assert!(f.what.contains(needle), "{}", f.what);
    assert!(!f.replay.contains('\n'), "one line: {}", f.replay);
    let (_, v) = replay(&f.replay).unwrap();
    assert_eq!(
        v.violation.as_deref(),
        Some(f.what.as_str()),
        "replay differs"
    );
    (s.violating_schedules, s.schedules)
}

/// I1: a dead owner's groups never answered.
#[cfg(feature = "explore-mutant-i1")]
#[test]
fn harness_explore_mutant_i1_dead_owner_groups_unanswered_is_caught() {
    caught("owner-died", 1, "I1");
    // The same death told by the supervisor's log alone.
    caught("owner-died-pushed", 1, "I1");
    // Restarting the VM at a chosen step: only the restarts that land
    // while it holds a group show it, so it takes the search to find them.
    // (A kill, `vm-killed`, does not show it: the supervisor's death log
    // has iommu-server reclaim the stream, which answers the groups too.)
    let (bad, all) = caught("vm-restarted", 1, "I1");
    assert!(bad < all, "every restart point showed it: {bad} of {all}");
}

/// I2: a group routed by PASID alone reaches another stream's owner.
#[cfg(feature = "explore-mutant-i2")]
#[test]
fn harness_explore_mutant_i2_group_to_another_streams_owner_is_caught() {
    caught("two-vms-answering", 2, "I2");
}

/// I5: a cookie accepted from a VM that does not own it.
#[cfg(feature = "explore-mutant-i5")]
#[test]
fn harness_explore_mutant_i5_foreign_cookie_accepted_is_caught() {
    caught("two-vms-cookies", 1, "foreign cookie refused");
}

/// I3: pasid-alloc returns a freed PASID to the pool at once, before
/// iommu-server's drain. The new owner finds, at the device, the old
/// binding's groups still pending and its DMA still landing; pasid-alloc's
/// message check (`smmu::check_i3`) fails the run too.
#[cfg(feature = "explore-mutant-i3")]
#[test]
fn harness_explore_mutant_i3_pasid_reused_before_its_drain_is_caught() {
    caught("free-before-unbind", 1, "I3: PASID 0x1 handed out again");
}

/// I4: iommu-server leaves a dead owner's stream in bypass. A DMA on it
/// lands at PA = IOVA (the script's check at the device).
#[cfg(feature = "explore-mutant-i4")]
#[test]
fn harness_explore_mutant_i4_dead_owners_stream_in_bypass_is_caught() {
    caught("vm-fault-reclaims", 1, "I4");
}

/// I6: prq-server keeps a partial group across a PRI queue overflow; the
/// PRG index's next group gets the dead group's pages.
#[cfg(feature = "explore-mutant-i6")]
#[test]
fn harness_explore_mutant_i6_partial_kept_across_overflow_is_caught() {
    caught("pri-overflow", 1, "I6: vm got group");
}
