//! Panics as soon as it starts: the supervisor must restart it, but with a
//! growing hold-off, or it would take the machine.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[export_name = "main"]
fn main() -> ! {
    userlib::sys_panic(b"crashing on start, as designed")
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("test-crashloop is a task: it runs inside a QEMU test image");
    std::process::exit(2);
}
