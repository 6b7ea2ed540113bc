//! Panics as soon as it starts: the supervisor must restart it, but with a
//! growing hold-off, or it would take the machine.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn run() -> ! {
    userlib::sys_panic(b"crashing on start, as designed")
}

userlib::task_main!(run);
