//! Data cache maintenance by virtual address from EL0, for tasks whose DMA
//! memory a device reads and writes without snooping the CPU's caches (a
//! non-coherent SMMU's tables and queues).
//!
//! The kernel runs tasks at EL0 under HCR_EL2.{E2H,TGE} = {1,1}, where the
//! EL0 controls are SCTLR_EL2's: UCI (bit 26) lets EL0 execute DC CVAC,
//! DC CIVAC, DC CVAU and IC IVAU, UCT (bit 15) lets it read CTR_EL0; the
//! kernel sets both (sys/kern/src/arch/mmu.rs). DC IVAC (invalidate
//! without cleaning) is not executable at EL0 at all; [`clean_invalidate`]
//! serves instead — it never discards a store. A maintenance operation at
//! EL0 on an address the task cannot read faults like a load, so a task
//! can only clean or invalidate its own memory, and neither operation
//! changes what any observer reads from it.
//!
//! On the host (the harness) they only record what they were asked to do
//! (this thread's [`host_log`]), so a host test can check that an image's
//! DMA-memory type maintains every line it stores to; the harness's memory
//! model implements the DMA traits itself.

/// CTR_EL0.DminLine in bytes: the smallest data cache line of every cache
/// level, so stepping by it reaches every line of a range.
pub fn dcache_line() -> usize {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    {
        let ctr: u64;
        // SAFETY: reading CTR_EL0 has no side effects; EL0 may read it
        // (SCTLR_EL2.UCT = 1).
        unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
        4 << ((ctr >> 16) & 0xf)
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    {
        64
    }
}

/// DC CVAC: writes the line holding `va` to the point of coherency if it
/// is dirty (it stays cached). Complete it with a DSB before telling the
/// device.
#[inline(always)]
pub fn clean(va: usize) {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    // SAFETY: cache maintenance changes no memory contents; EL0 may
    // execute it (SCTLR_EL2.UCI = 1); an address the task cannot read
    // faults like a load would.
    unsafe {
        core::arch::asm!("dc cvac, {}", in(reg) va, options(nostack, preserves_flags))
    };
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    host::record(host::Op::Clean, va);
}

/// DC CIVAC: cleans the line holding `va` to the point of coherency, then
/// drops it, so the next load reads memory (what a device wrote).
#[inline(always)]
pub fn clean_invalidate(va: usize) {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    // SAFETY: as in `clean`; the line is written back before it is
    // dropped, so no store is lost.
    unsafe {
        core::arch::asm!("dc civac, {}", in(reg) va, options(nostack, preserves_flags))
    };
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    host::record(host::Op::CleanInvalidate, va);
}

/// Cleans every line of `[va, va + len)`, stepping by `line` (a power of
/// two, at most [`dcache_line`]).
#[inline]
pub fn clean_range(va: usize, len: usize, line: usize) {
    let mut a = va & !(line - 1);
    while a < va + len {
        clean(a);
        a += line;
    }
}

/// Cleans and invalidates every line of `[va, va + len)`.
#[inline]
pub fn clean_invalidate_range(va: usize, len: usize, line: usize) {
    let mut a = va & !(line - 1);
    while a < va + len {
        clean_invalidate(a);
        a += line;
    }
}

/// The host's record of maintenance operations, per thread.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub mod host {
    use std::cell::RefCell;

    /// A maintenance operation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Op {
        Clean,
        CleanInvalidate,
    }

    thread_local! {
        static LOG: RefCell<Vec<(Op, usize)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record(op: Op, va: usize) {
        LOG.with(|l| l.borrow_mut().push((op, va)));
    }

    /// Takes this thread's record so far (oldest first).
    pub fn take() -> Vec<(Op, usize)> {
        LOG.with(|l| core::mem::take(&mut *l.borrow_mut()))
    }
}

/// This thread's recorded operations (host only): see [`host`].
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub use host::take as host_log;
