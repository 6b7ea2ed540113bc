//! Kernel arch isolation cases: EL0-visible system registers are per task
//! (TPIDR_EL0, saved in `SavedState.tpidr_el0`) or trapped by the EL0
//! access controls the kernel sets at boot (docs/kernel.md, "EL0-visible
//! registers").

use super::rogue_faults;
use test_support::{case, echo::*, ensure};
use userlib::*;

fn tpidr_el0() -> u64 {
    let v: u64;
    // SAFETY: reads this task's own thread register.
    unsafe { core::arch::asm!("mrs {}, tpidr_el0", out(reg) v, options(nomem, nostack)) };
    v
}

fn set_tpidr_el0(v: u64) {
    // SAFETY: TPIDR_EL0 is this task's own register; nothing in this
    // task uses it for thread-local storage.
    unsafe { core::arch::asm!("msr tpidr_el0, {}", in(reg) v, options(nomem, nostack)) };
}

/// The rogue's (TPIDR_EL0, TPIDRRO_EL0).
fn rogue_tls(rogue: TaskId) -> Result<(u64, u64), &'static str> {
    let mut r = [0u8; 16];
    let (rc, n) = sys_send(rogue, TLS_READ, &[], &mut r, &[]);
    ensure(
        rc == 0 && n == 16,
        "rogue did not report its thread registers",
    )?;
    let w = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap_or([0; 8]));
    Ok((w(0), w(8)))
}

fn fresh_rogue() -> Result<TaskId, &'static str> {
    let rogue = sys_lookup_slot("test-echo").ok_or("no rogue slot")?;
    Ok(sys_refresh_task_id(rogue))
}

pub fn registers(mut ok: bool) -> bool {
    ok &= case("isolation_tpidr_el0_per_task", || {
        const MINE: u64 = 0x7E57_0000_0000_0001;
        const THEIRS: u64 = 0x0BAD_0000_0000_0002;
        let rogue = fresh_rogue()?;
        set_tpidr_el0(MINE);
        // The rogue never wrote its own: it must not see ours.
        let (tp, _) = rogue_tls(rogue)?;
        ensure(tp != MINE, "another task read our TPIDR_EL0")?;
        ensure(tp == 0, "a task's TPIDR_EL0 does not start at 0")?;
        let (rc, _) = sys_send(rogue, TLS_WRITE, &THEIRS.to_le_bytes(), &mut [], &[]);
        ensure(rc == 0, "rogue did not set its TPIDR_EL0")?;
        ensure(
            tpidr_el0() == MINE,
            "another task's TPIDR_EL0 write reached us",
        )?;
        let (tp, _) = rogue_tls(rogue)?;
        ensure(tp == THEIRS, "a task's TPIDR_EL0 did not survive a switch")?;
        // A restart starts from 0, not from the previous generation's.
        rogue_faults(UNDEFINED, &[])?;
        let (tp, _) = rogue_tls(fresh_rogue()?)?;
        ensure(tp == 0, "TPIDR_EL0 survived a restart")?;
        ensure(tpidr_el0() == MINE, "our TPIDR_EL0 changed")
    });
    ok &= case("isolation_tpidrro_el0_zero", || {
        let mine: u64;
        // SAFETY: reads the EL0 read-only thread register.
        unsafe { core::arch::asm!("mrs {}, tpidrro_el0", out(reg) mine, options(nomem, nostack)) };
        let (_, theirs) = rogue_tls(fresh_rogue()?)?;
        ensure(mine == 0 && theirs == 0, "TPIDRRO_EL0 carries a value")
    });
    ok &= case("isolation_el0_pmu_denied", || rogue_faults(PMU_READ, &[]));
    ok &= case("isolation_el0_physical_timer_denied", || {
        rogue_faults(PHYS_TIMER_READ, &[])?;
        rogue_faults(PHYS_COUNTER_READ, &[])
    });
    ok &= case("isolation_el0_virtual_timer_denied", || {
        rogue_faults(VIRT_TIMER_READ, &[])
    });
    ok &= case("isolation_el0_debug_channel_denied", || {
        rogue_faults(DCC_WRITE, &[])
    });
    ok
}
