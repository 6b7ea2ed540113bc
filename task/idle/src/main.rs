//! The idle task: lowest priority, so it runs only when every other task is
//! blocked, and then waits for an interrupt. (The kernel can also idle on its
//! own; an idle task keeps that path out of the common case and makes idle
//! time visible as a task.)
#![cfg_attr(target_os = "none", no_std, no_main)]

// The task runtime (entry point, panic handler) comes from userlib.
#[cfg(target_os = "none")]
use userlib as _;

#[cfg(target_os = "none")]
#[export_name = "main"]
fn main() -> ! {
    loop {
        // SAFETY: WFI at EL0 is permitted (SCTLR_EL2.nTWI) and only waits.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("idle is a task: it runs in the image");
    std::process::exit(2);
}
