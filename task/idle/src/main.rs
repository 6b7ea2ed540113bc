//! The idle task: lowest priority, so it runs only when every other task is
//! blocked, and then waits for an interrupt. (The kernel can also idle on its
//! own; an idle task keeps that path out of the common case and makes idle
//! time visible as a task.)
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn run() -> ! {
    loop {
        // SAFETY: WFI at EL0 is permitted (SCTLR_EL2.nTWI) and only waits.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}

userlib::task_main!(run);
