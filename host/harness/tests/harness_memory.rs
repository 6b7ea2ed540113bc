//! Memory per run is bounded: a sweep of 10^6 schedules must not grow
//! with the number of runs (docs/exploration.md, "10^6 schedules").
//!
//! A counting global allocator measures the bytes live after a warm-up and
//! again after many more runs; what the runs leave behind must stay below a
//! few bytes per run. The harness once leaked each run's task descriptors,
//! names, slot and region tables, interrupt table and anonymous regions
//! (measured with this test: 1 299 bytes per `owner-died` schedule, 4 682
//! per plain run with its 4 KiB region), and the prq rigs kept every
//! rig's stream owners in a process-wide map: this test failed then.
//!
//! One test in this binary on purpose: the counter is process-wide.

use harness::explore::{find, run_target, Sched};
use harness::scenarios::{demo_client, echo_server};
use harness::{Harness, TaskSpec, CAP_SHUTDOWN};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

/// Bytes currently allocated through the global allocator.
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` with the same arguments; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes left live per run over `runs` runs of `one`, after `warm` runs
/// that fill the harness's pools (worker thread, coroutine stacks).
fn growth_per_run(warm: u64, runs: u64, one: impl Fn(u64)) -> f64 {
    for i in 0..warm {
        one(i);
    }
    let before = LIVE.load(Ordering::Relaxed);
    for i in warm..warm + runs {
        one(i);
    }
    let after = LIVE.load(Ordering::Relaxed);
    (after - before) as f64 / runs as f64
}

#[test]
fn harness_memory_per_run_is_bounded() {
    // Two tasks with slots and a 4 KiB region the harness allocates.
    let plain = growth_per_run(10, 200, |seed| {
        Harness::new(seed)
            .task(TaskSpec::new("echo", 1, echo_server))
            .task(
                TaskSpec::new("client", 2, demo_client)
                    .slots(&["echo"])
                    .caps(CAP_SHUTDOWN)
                    .region("dma", 4096, abi::REGION_READ | abi::REGION_WRITE),
            )
            .run()
            .expect_shutdown(0);
    });
    // A schedule of an explore target: the real servers on the SMMU model,
    // the invariants checked, as `cargo xtask explore --random` runs it.
    let t = find("owner-died").expect("target owner-died");
    let explore = growth_per_run(5, 60, |seed| {
        let v = run_target(t, &Sched::Seed(seed));
        assert!(v.violation.is_none(), "{:?}", v.violation);
    });
    println!("bytes left live per run: plain {plain:.1}, owner-died {explore:.1}");
    assert!(
        plain < 32.0 && explore < 32.0,
        "memory grows with the runs: {plain:.1} bytes per plain run, {explore:.1} per owner-died schedule"
    );
}
