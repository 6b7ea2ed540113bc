//! The supervisor (task/supervisor, unchanged) with a restart policy that
//! never holds off: the generations test restarts one task 130 times, which
//! the real doubling hold-off (capped at 5 s) would stretch to minutes.
//! Only qemu/apps/generations.toml uses it; every other image runs
//! `supervisor` with its real policy.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn run() -> ! {
    supervisor::run_with(supervisor::Holdoff {
        min_ms: 0,
        max_ms: 0,
    })
}

userlib::task_main!(run);
