//! Boot self-check of the kernel's own memory protection.
//!
//! After the MMU and PAN are on, the kernel makes one access of each kind it
//! must not be able to make, through the probe routines in `arch/mod.rs`,
//! and checks that the hardware refused it with the expected fault (class
//! and fault status, from ESR_EL2). A probe that faults returns to the
//! check instead of stopping the machine. Two control probes must succeed,
//! so a probe that "faults" for another reason is caught too.
//!
//! The probes take only synchronous exceptions at EL2: no device sees
//! anything, so they run on every boot, and a kernel whose protection is
//! missing refuses to start. Each result is one console line carrying the
//! `TEST <case> ok|FAIL` marker the QEMU test runner matches
//! (qemu/apps/isolation.toml lists the cases).

use super::mmu::ImageLayout;
use super::sysreg::{self, Readable};
use super::Machine;
use crate::syscalls::Platform;
use crate::task::{region_pa, Task};

extern "C" {
    fn __probe_read(addr: usize) -> u64;
    fn __probe_write(addr: usize) -> u64;
    fn __probe_exec(addr: usize) -> u64;
    fn __probe_push(sp: usize) -> u64;
    static mut __probe_armed: u64;
    static __probe_esr: u64;
}

const PAGE: usize = 4096;

/// `ret`: what an exec probe finds at its target.
const RET: u32 = 0xd65f_03c0;
/// In .rodata.
static RET_RODATA: u32 = RET;
/// In .data.
static mut RET_DATA: u32 = RET;

/// Exception classes (ESR_EL2.EC) of faults taken from EL2 itself.
const EC_IABT_SAME_EL: u64 = 0x21;
const EC_DABT_SAME_EL: u64 = 0x25;

#[derive(Clone, Copy)]
enum Fsc {
    Translation,
    Permission,
}

#[derive(Clone, Copy)]
enum Access {
    Read,
    Write,
    Exec,
    /// A push (store pair, pre-decrement) with SP = the address.
    Push,
}

/// Runs one probe; `Ok(())` if it completed, `Err(esr)` if it faulted.
fn probe(access: Access, addr: usize) -> Result<(), u64> {
    // SAFETY: the probe routines touch only `addr` (a write stores back the
    // byte just read there; an exec target holds `ret`), and a fault returns
    // through `kernel_exception_entry` to us with x0 = 1. They follow the C
    // ABI otherwise (x9–x11 are caller-saved).
    let r = unsafe {
        match access {
            Access::Read => __probe_read(addr),
            Access::Write => __probe_write(addr),
            Access::Exec => __probe_exec(addr),
            Access::Push => __probe_push(addr),
        }
    };
    // SAFETY: the probe flags are only touched by the probes and the
    // exception entry, both on this CPU and finished by now.
    unsafe {
        let armed = &raw mut __probe_armed;
        if r == 1 {
            return Err(core::ptr::read_volatile(&raw const __probe_esr));
        }
        // An exec probe whose target ran returns with the flag still set.
        core::ptr::write_volatile(armed, 0);
    }
    Ok(())
}

/// The probe must fault with class `ec` and fault status `fsc`.
fn refused(access: Access, addr: usize, ec: u64, fsc: Fsc) -> bool {
    match probe(access, addr) {
        Ok(()) => false,
        Err(esr) => {
            let status = esr & 0x3c;
            let want = match fsc {
                Fsc::Translation => 0x04,
                Fsc::Permission => 0x0c,
            };
            // A data abort on a write probe must be the write (WnR, bit 6).
            let wnr_ok = !matches!(access, Access::Write | Access::Push) || esr & (1 << 6) != 0;
            esr >> 26 & 0x3f == ec && status == want && wnr_ok
        }
    }
}

fn report(m: &mut Machine, case: &str, ok: bool) -> bool {
    m.console(b"kern: self-check TEST ");
    m.console(case.as_bytes());
    m.console(if ok { b" ok\n" } else { b" FAIL\n" });
    ok
}

/// Runs every check; false if any failed. `kernel_ttbr0` is the kernel's
/// own table, installed on entry and on return.
pub fn run(
    m: &mut Machine,
    image: &ImageLayout,
    kernel_ttbr0: u64,
    tasks: &[Task],
    ram_end: usize,
) -> bool {
    let ro = &raw const RET_RODATA as usize;
    let rw = &raw mut RET_DATA as usize;
    let text = __probe_read as *const () as usize;
    let mut ok = true;

    // Controls: reading kernel text and rodata works.
    ok &= report(
        m,
        "isolation_kernel_probe_control",
        probe(Access::Read, text).is_ok() && probe(Access::Read, ro).is_ok(),
    );
    ok &= report(
        m,
        "isolation_kernel_text_read_only",
        refused(Access::Write, text, EC_DABT_SAME_EL, Fsc::Permission),
    );
    ok &= report(
        m,
        "isolation_kernel_rodata_read_only",
        refused(Access::Write, ro, EC_DABT_SAME_EL, Fsc::Permission),
    );
    // Data, rodata, and RAM outside the image (first page of the 2 MiB
    // block after it, a block mapping) are never executable.
    let after = (image.rw.1 + (2 << 20) - 1) & !((2 << 20) - 1);
    ok &= report(
        m,
        "isolation_kernel_data_not_executable",
        refused(Access::Exec, rw, EC_IABT_SAME_EL, Fsc::Permission)
            && refused(Access::Exec, ro, EC_IABT_SAME_EL, Fsc::Permission)
            && (after >= ram_end || refused(Access::Exec, after, EC_IABT_SAME_EL, Fsc::Permission)),
    );
    ok &= report(
        m,
        "isolation_kernel_stack_guard_unmapped",
        refused(Access::Read, image.guard, EC_DABT_SAME_EL, Fsc::Translation),
    );
    // The kernel stack running over its bottom faults in the guard page
    // (rather than writing the .bss below it); the control push, 16 bytes
    // up, lands in the stack's own deepest (unused) 16 bytes.
    let bottom = image.guard + PAGE;
    ok &= report(
        m,
        "isolation_kernel_stack_overflow_faults",
        refused(Access::Push, bottom, EC_DABT_SAME_EL, Fsc::Translation)
            && probe(Access::Push, bottom + 16).is_ok(),
    );

    // PAN: with a task's table installed, its text (mapped for EL0) is out
    // of the kernel's reach at its task address, while the same memory
    // stays reachable through the kernel's own map. SCTLR_EL2.SPAN (bit 23)
    // must be 0 so every exception taken to EL2 sets PAN again.
    let pan = match tasks
        .first()
        .and_then(|t| t.desc.regions.first().map(|r| (t, r)))
    {
        Some((t, r)) => {
            let spans = sysreg::SCTLR_EL2.get() & (1 << 23) != 0;
            // SAFETY: the task's table maps the kernel exactly as the kernel
            // map does (global entries), so the running code and its stack
            // stay mapped; the kernel's own table is reinstated below.
            unsafe { sysreg::set_ttbr0_el2(t.ttbr0) };
            sysreg::isb();
            let denied = refused(Access::Read, r.va, EC_DABT_SAME_EL, Fsc::Permission);
            let control = probe(Access::Read, region_pa(r)).is_ok();
            // SAFETY: the kernel's own table, built by `mmu::init`.
            unsafe { sysreg::set_ttbr0_el2(kernel_ttbr0) };
            sysreg::isb();
            sysreg::pan() && !spans && denied && control
        }
        None => false,
    };
    ok &= report(m, "isolation_kernel_pan_blocks_task_memory", pan);
    ok
}
