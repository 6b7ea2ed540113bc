//! Task of the `dump_*` case. Its first incarnation records more trace
//! events than its ring holds (so the oldest are overwritten), then panics
//! on purpose: userlib's panic handler prints the ring on the console, and
//! the runner checks with `cargo xtask dump`'s decoder that the dump lists
//! the last events in order (xtask/src/dump.rs, `check_case`). The
//! supervisor restarts it; the second incarnation ends the image.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod run {
    use test_support::finish;
    use trace::{events::TestDump, trace};
    use userlib::*;

    /// Declaration order in qemu/apps/dump.toml (supervisor, test-dump).
    const SELF_INDEX: usize = 1;
    /// More than the ring holds: the first ones are overwritten.
    const STEPS: u32 = trace::CAPACITY as u32 + 6;

    pub fn run() -> ! {
        let me = sys_refresh_task_id(TaskId::new(SELF_INDEX, Generation(0)));
        if me.generation().0 == 0 {
            for i in 0..STEPS {
                trace!(TestDump::Step, i, i ^ 0x5a5a);
            }
            trace!(TestDump::Panicking, STEPS);
            panic!("dump test: panicking on purpose after {} steps", STEPS);
        }
        // Restarted: the dump was printed by the first incarnation; the
        // runner judges it. A clean exit ends the image.
        finish(true)
    }
}

userlib::task_main!(run::run);
