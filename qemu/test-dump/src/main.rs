//! Task of the `dump_*` cases (qemu/apps/dump.toml, docs/tracing.md). Each
//! incarnation records known trace events, then:
//!
//! 0. panics on purpose after more events than its ring holds (so the
//!    oldest are overwritten): the kernel prints its ring;
//! 1. reads an unmapped address (a data abort, a hardware fault that runs
//!    no task code): the kernel prints its ring;
//! 2. says `live: ready` and blocks for good: the runner reads its ring from
//!    the running machine through QEMU's monitor, then stops the image.
//!
//! The runner decodes the console and the live read with `cargo xtask
//! dump`'s code and checks that each lists the last events in order
//! (xtask/src/dump.rs, `check_case`). The supervisor restarts the task
//! after each fault; a restart zeroes its memory, ring included.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod run {
    use trace::{events::TestDump, trace};
    use userlib::*;

    /// Declaration order in qemu/apps/dump.toml (supervisor, test-dump).
    const SELF_INDEX: usize = 1;
    /// More than the ring holds: the first ones are overwritten.
    const STEPS: u32 = trace::CAPACITY as u32 + 6;
    /// Events before the data abort (fewer than the ring holds).
    const FAULT_STEPS: u32 = 20;
    /// The address read in incarnation 1: page 0, mapped in no task.
    const UNMAPPED: usize = 0x10;
    /// Events before the live read.
    const LIVE_STEPS: u32 = 5;

    pub fn run() -> ! {
        let me = sys_refresh_task_id(TaskId::new(SELF_INDEX, Generation(0)));
        match me.generation().0 {
            0 => {
                for i in 0..STEPS {
                    trace!(TestDump::Step, i, i ^ 0x5a5a);
                }
                trace!(TestDump::Panicking, STEPS);
                panic!("dump test: panicking on purpose after {} steps", STEPS);
            }
            1 => {
                for i in 0..FAULT_STEPS {
                    trace!(TestDump::Step, 1000 + i, i);
                }
                trace!(TestDump::Faulting, UNMAPPED);
                // SAFETY: not sound as Rust, on purpose: nothing is mapped
                // at page 0 in any task, so the load faults (data abort)
                // before it returns, and the kernel stops this task.
                let v = unsafe { core::ptr::read_volatile(UNMAPPED as *const u32) };
                panic!("dump test: the read of {:#x} returned {:#x}", UNMAPPED, v);
            }
            _ => {
                for i in 0..LIVE_STEPS {
                    trace!(TestDump::Live, i, !i);
                }
                log!("live: ready");
                // Block for good (no notification bit is waited for): the
                // runner reads the ring of the running image, then stops it.
                loop {
                    sys_recv_notification(0);
                }
            }
        }
    }
}

userlib::task_main!(run::run);
