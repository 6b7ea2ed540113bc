//! System-register access, in two kinds:
//!
//! - Reads, and writes that cannot break memory safety or isolation, go
//!   through the `aarch64-cpu` crate (its accessors are safe functions):
//!   counters, syndrome registers, the EL2 timer, the ID registers.
//! - Writes that can — translation (TTBR0/TCR/MAIR/SCTLR), the exception
//!   model (HCR, VBAR), what EL0 may touch (CPTR, CNTHCTL, MDCR, MDSCR,
//!   PMUSERENR) — are `unsafe fn`s
//!   here, one per register, each stating what its caller must guarantee.
//!   They are written with `asm!` without `nomem`, so the compiler keeps
//!   them ordered against the kernel's own memory accesses (table writes
//!   before the TTBR write, for instance).
//!
//! The crate's field definitions name HCR_EL2's bits; its SCTLR_EL2,
//! TCR_EL2, CPTR_EL2 and CNTHCTL_EL2 describe the E2H = 0 layouts, which
//! this kernel (E2H = 1) does not use, so those values are spelled out
//! where they are built (`mmu`, `start`), with comments naming the fields.
//!
//! There is deliberately no generic "write any register" helper.

use core::arch::asm;

pub use aarch64_cpu::registers::{
    Readable, Writeable, CNTFRQ_EL0, CNTHP_CTL_EL2, CNTPCT_EL0, CNTVOFF_EL2, ESR_EL2, FAR_EL2,
    HCR_EL2, ID_AA64PFR0_EL1, SCTLR_EL2, TPIDRRO_EL0,
};

/// Instruction synchronisation barrier.
#[inline(always)]
pub fn isb() {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Writes one system register by name. Private, and it expands to a bare
/// `asm!`: every use needs its own `unsafe` block and SAFETY line.
macro_rules! msr {
    ($name:literal, $v:expr) => {
        asm!(concat!("msr ", $name, ", {}"), in(reg) $v, options(nostack))
    };
}

/// Sets the EL2 timer's compare value (counter ticks). Safe: the compare
/// value only decides when the kernel's own timer interrupt fires.
#[inline(always)]
pub fn set_cnthp_cval(ticks: u64) {
    // SAFETY: the EL2 timer's compare value; no memory or EL0 effect.
    unsafe { msr!("cnthp_cval_el2", ticks) };
}

/// # Safety
/// `v` must keep the kernel's exception model: E2H = TGE = 1 (EL0 is the
/// host's EL0, exceptions from it are taken to EL2), RW = 1.
pub unsafe fn set_hcr_el2(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("hcr_el2", v) };
}

/// # Safety
/// Enabling FP/SIMD at EL0 (FPEN = 0b11) is allowed only while the FP
/// registers hold the current task's own state (see `fp_switch`).
#[inline(always)]
pub unsafe fn set_cptr_el2(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("cptr_el2", v) };
}

/// # Safety
/// `v` must not grant EL0 access to the physical timer or counter the
/// kernel relies on (EL0PTEN/EL0PCTEN = 0).
pub unsafe fn set_cnthctl_el2(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("cnthctl_el2", v) };
}

/// # Safety
/// `v` must be the address of the kernel's vector table (2 KiB aligned).
pub unsafe fn set_vbar_el2(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("vbar_el2", v) };
}

/// # Safety
/// `v` must name a complete translation table that maps the kernel as the
/// kernel map does (the running code, its stack and data), with an ASID no
/// other table uses; the table writes must be visible (DSB) before.
#[inline(always)]
pub unsafe fn set_ttbr0_el2(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("ttbr0_el2", v) };
}

/// # Safety
/// Only before the MMU is on, or with the attribute indices every live
/// table uses unchanged.
pub unsafe fn set_mair_el2(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("mair_el2", v) };
}

/// # Safety
/// Only before the MMU is on: the tables are built for this layout.
pub unsafe fn set_tcr_el2(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("tcr_el2", v) };
}

/// # Safety
/// Turning on the MMU requires valid tables in TTBR0_EL2 mapping the code
/// that runs next at its current address (the identity map).
pub unsafe fn set_sctlr_el2(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("sctlr_el2", v) };
}

/// # Safety
/// `v` must keep EL0 from the performance monitors and debug registers
/// (TPM, TPMCR, TDA, TDOSA, TDRA set).
pub unsafe fn set_mdcr_el2(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("mdcr_el2", v) };
}

/// Reads MDCR_EL2 (HPMN, the number of counters the PMU has, is kept).
pub fn mdcr_el2() -> u64 {
    let v: u64;
    // SAFETY: reading a system register has no memory effects.
    unsafe { asm!("mrs {}, mdcr_el2", out(reg) v, options(nomem, nostack)) };
    v
}

/// # Safety
/// `v` must keep TDCC set (EL0 may not use the debug communication channel,
/// a register pair shared by every task).
pub unsafe fn set_mdscr_el1(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("mdscr_el1", v) };
}

/// # Safety
/// `v` must be 0 unless the kernel switches the PMU per task (it does not).
pub unsafe fn set_pmuserenr_el0(v: u64) {
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("pmuserenr_el0", v) };
}

/// # Safety
/// `v` must be 0 unless the kernel switches the activity monitors per task
/// (it does not); only on CPUs that implement FEAT_AMUv1.
pub unsafe fn set_amuserenr_el0(v: u64) {
    // AMUSERENR_EL0 by encoding (S3_3_C13_C2_3): the assembler knows it only
    // with the AMU extension enabled.
    // SAFETY: the caller keeps this function's contract (above).
    unsafe { msr!("s3_3_c13_c2_3", v) };
}

/// Sets PSTATE.PAN: privileged accesses to memory EL0 can reach fault.
#[inline(always)]
pub fn set_pan() {
    // SAFETY: setting PAN only removes the kernel's access to EL0-accessible
    // mappings, which it never uses (it reaches task memory through its own
    // privileged map). `msr pan, #1` by encoding, for assemblers without
    // the PAN extension enabled.
    unsafe { asm!(".inst 0xd500419f", options(nomem, nostack)) };
}

/// PSTATE.PAN (bit 22 of the PAN register).
pub fn pan() -> bool {
    let v: u64;
    // SAFETY: reading a system register has no memory effects.
    unsafe { asm!("mrs {}, s3_0_c4_c2_3", out(reg) v, options(nomem, nostack)) };
    v & (1 << 22) != 0
}

// GICv3 CPU interface. These steer which interrupts reach this CPU and
// acknowledge them; none reaches memory or changes what EL0 may access, so
// they are safe functions.

/// ICC_SRE_EL2 (the crate's accessor): system-register interface enables.
pub use aarch64_cpu::registers::ICC_SRE_EL2;

/// Sets the CPU interface's priority mask.
pub fn set_icc_pmr_el1(v: u64) {
    // SAFETY: the interrupt priority mask at the GIC CPU interface; no memory or EL0 effect.
    unsafe { msr!("icc_pmr_el1", v) };
}

/// Sets the Group 1 binary point.
pub fn set_icc_bpr1_el1(v: u64) {
    // SAFETY: the interrupt binary point at the GIC CPU interface; no memory or EL0 effect.
    unsafe { msr!("icc_bpr1_el1", v) };
}

/// Enables or disables Group 1 interrupts at the CPU interface.
pub fn set_icc_igrpen1_el1(v: u64) {
    // SAFETY: the Group 1 interrupt enable at the GIC CPU interface; no memory or EL0 effect.
    unsafe { msr!("icc_igrpen1_el1", v) };
}

/// Acknowledges the highest-priority pending Group 1 interrupt (INTID).
pub fn icc_iar1_el1() -> u64 {
    let v: u64;
    // SAFETY: acknowledging changes only the GIC's state for that
    // interrupt (pending → active), not memory.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// Ends (deactivates) an interrupt.
pub fn set_icc_eoir1_el1(v: u64) {
    // SAFETY: an end-of-interrupt at the GIC CPU interface; no memory or EL0 effect.
    unsafe { msr!("icc_eoir1_el1", v) };
}
