//! Owner death through the supervisor's death log
//! (`harness::death_scenarios`), each over 50 seeds, each run ending with
//! the fault path's invariant check (I1: exactly one response per group at
//! the device; I2: records only to the stream's owner).

use harness::death_scenarios as s;

#[test]
fn harness_death_vm_fault_reclaims() {
    for seed in 0..50 {
        s::vm_fault_reclaims().run(seed).check();
    }
}

#[test]
fn harness_death_vm_with_pasid_reused_after_drain() {
    for seed in 0..50 {
        s::vm_with_pasid_dies().run(seed).check();
    }
}

#[test]
fn harness_death_log_overflow_resync_reclaims_lost_deaths_pasids() {
    for seed in 0..8 {
        s::death_log_overflow_resync(seed).check();
    }
}
