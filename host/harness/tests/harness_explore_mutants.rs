//! The checker is tested too: each test-only mutant of prq-server (cargo
//! features `explore-mutant-i1`, `explore-mutant-i5` of this crate, never
//! on by default) is found by the exhaustive search, and the replay
//! string it prints reproduces the violation. Run with `cargo xtask
//! explore --mutants` (this file is empty without the features).
#![cfg(any(
    feature = "explore-mutant-i1",
    feature = "explore-mutant-i2",
    feature = "explore-mutant-i5"
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
    println!("{target}: caught: {}\n  replay: {}", f.what, f.replay);
    assert!(f.what.contains(needle), "{}", f.what);
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
    // Killing the VM at a chosen step: only the kills that land while it
    // holds a group show it, so it takes the search to find them.
    let (bad, all) = caught("vm-killed", 1, "I1");
    assert!(bad < all, "every kill point showed it: {bad} of {all}");
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
