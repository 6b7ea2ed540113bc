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
