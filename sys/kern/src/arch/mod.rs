//! AArch64 at EL2 with VHE (HCR_EL2.E2H = TGE = 1): tasks run at EL0 in the
//! EL2&0 translation regime, each with its own TTBR0_EL2 and ASID.
//!
//! Address space (39-bit VA, 4 KiB granule, walks start at level 1):
//! - L1[0] (0–1 GiB, devices) and L1[1] (1–2 GiB, RAM) are the kernel's
//!   identity map, shared by every table, privileged-only (AP=00, UXN): EL0
//!   can never touch kernel memory or MMIO it was not given.
//! - L1[128] (`abi::layout::TASK_TEXT` …) is the task's own window: text,
//!   data+stack, then its MMIO and memory regions, mapped non-global (nG)
//!   so they are tagged with the task's ASID.
//!
//! The kernel reaches task memory through its identity map after checking
//! the task's region table, never through the task's own mapping.

mod gic;
mod lpuart;
mod mmu;
mod selfcheck;
mod sysreg;
mod uart;

use crate::config::Config;
use crate::syscalls::{Kernel, Platform};
use crate::task::{SavedState, Task};
use core::arch::{asm, global_asm};

use sysreg::{
    isb, Readable, Writeable, CNTFRQ_EL0, CNTHP_CTL_EL2, CNTPCT_EL0, CNTVOFF_EL2, ESR_EL2, FAR_EL2,
    HCR_EL2, ID_AA64PFR0_EL1, TPIDRRO_EL0,
};

/// Stops speculative execution until everything before it has resolved:
/// called after a task's address range has been checked and before the
/// kernel dereferences it (see `Kernel::user`), so a mispredicted range
/// check cannot make the kernel load from an address it would refuse.
/// `DSB NSH; ISB` rather than `SB` so it runs on every Armv8.1 CPU. The
/// `asm!` is also a compiler memory barrier, so no load is moved above it.
#[inline(always)]
pub fn speculation_barrier() {
    // SAFETY: barriers have no operands and change no memory.
    unsafe { asm!("dsb nsh", "isb", options(nostack, preserves_flags)) };
}

/// See `crate::clamp_to_region`. The offset `off = va - lo` wraps to a
/// value above `size` when `va < lo`; `len <= size - off` (evaluated only
/// when `off <= size`, else the flags are forced to "higher") keeps the end
/// inside without an overflowing add. CSEL then picks the address or 0, and
/// CSDB stops any later instruction from using a predicted result of the
/// CMP/CCMP/CSEL: a dereference after it sees the architectural value.
#[inline(always)]
pub fn clamp_to_region(va: usize, len: usize, lo: usize, size: usize, base: usize) -> usize {
    let pa: usize;
    // SAFETY: arithmetic on registers and a barrier hint; no memory access.
    unsafe {
        asm!(
            "sub  {off}, {va}, {lo}",
            "sub  {room}, {size}, {off}",
            "add  {pa}, {base}, {off}",
            "cmp  {off}, {size}",
            "ccmp {len}, {room}, #2, ls",
            "csel {pa}, {pa}, xzr, ls",
            "csdb",
            va = in(reg) va,
            lo = in(reg) lo,
            size = in(reg) size,
            len = in(reg) len,
            base = in(reg) base,
            off = out(reg) _,
            room = out(reg) _,
            pa = out(reg) pa,
            options(pure, nomem, nostack),
        );
    }
    pa
}

// Boot: the loader enters at `_start` (the board's load-address) at EL2 with
// the MMU off, x0 = DTB. Set the stack, zero .bss (it holds task data and
// page tables, which must start zeroed), then enter Rust. Entered at another
// exception level (a boot loader that dropped to EL1), `start` says so on
// the console and parks: none of this touches an EL2 register.
global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    "    ldr  x9, =__kernel_stack_top",
    "    mov  sp, x9",
    "    ldr  x9, =__sbss",
    "    ldr  x10, =__ebss",
    "1:  cmp  x9, x10",
    "    b.hs 2f",
    "    stp  xzr, xzr, [x9], #16",
    "    b    1b",
    "2:  bl   kernel_entry",
    "9:  wfe",
    "    b    9b",
);

// FP/SIMD state is switched lazily. The kernel is built for the soft-float
// target, so it never touches these registers itself; a task's FP state
// stays in the registers until another task uses FP, which traps (CPTR_EL2
// FPEN=0b01) and swaps. The IPC path between tasks that do not use FP
// therefore saves none of the 528 bytes.
global_asm!(
    ".section .text.fp, \"ax\"",
    ".arch_extension fp",
    ".arch_extension simd",
    // x0 = SavedState to save into.
    ".global __fp_save",
    "__fp_save:",
    "    mrs  x1, fpsr",
    "    mrs  x2, fpcr",
    "    stp  x1, x2, [x0, #272]",
    "    add  x1, x0, #288",
    "    stp  q0, q1, [x1, #0]",
    "    stp  q2, q3, [x1, #32]",
    "    stp  q4, q5, [x1, #64]",
    "    stp  q6, q7, [x1, #96]",
    "    stp  q8, q9, [x1, #128]",
    "    stp  q10, q11, [x1, #160]",
    "    stp  q12, q13, [x1, #192]",
    "    stp  q14, q15, [x1, #224]",
    "    stp  q16, q17, [x1, #256]",
    "    stp  q18, q19, [x1, #288]",
    "    stp  q20, q21, [x1, #320]",
    "    stp  q22, q23, [x1, #352]",
    "    stp  q24, q25, [x1, #384]",
    "    stp  q26, q27, [x1, #416]",
    "    stp  q28, q29, [x1, #448]",
    "    stp  q30, q31, [x1, #480]",
    "    ret",
    // x0 = SavedState to load from.
    ".global __fp_load",
    "__fp_load:",
    "    ldp  x1, x2, [x0, #272]",
    "    msr  fpsr, x1",
    "    msr  fpcr, x2",
    "    add  x1, x0, #288",
    "    ldp  q0, q1, [x1, #0]",
    "    ldp  q2, q3, [x1, #32]",
    "    ldp  q4, q5, [x1, #64]",
    "    ldp  q6, q7, [x1, #96]",
    "    ldp  q8, q9, [x1, #128]",
    "    ldp  q10, q11, [x1, #160]",
    "    ldp  q12, q13, [x1, #192]",
    "    ldp  q14, q15, [x1, #224]",
    "    ldp  q16, q17, [x1, #256]",
    "    ldp  q18, q19, [x1, #288]",
    "    ldp  q20, q21, [x1, #320]",
    "    ldp  q22, q23, [x1, #352]",
    "    ldp  q24, q25, [x1, #384]",
    "    ldp  q26, q27, [x1, #416]",
    "    ldp  q28, q29, [x1, #448]",
    "    ldp  q30, q31, [x1, #480]",
    "    ret",
);

extern "C" {
    fn __fp_save(s: *mut SavedState);
    fn __fp_load(s: *const SavedState);
}

/// CPTR_EL2 (E2H layout) FPEN values.
const CPTR_FP_ON: u64 = 0b11 << 20;
const CPTR_FP_TRAP_EL0: u64 = 0b01 << 20;

// Exception vectors. Only the "lower EL, AArch64" entries are expected; an
// exception taken from the kernel itself is a kernel bug and stops the
// machine with a report.
//
// On entry from EL0: SP_EL2 points at the current task's SavedState
// (`__resume_task` leaves it there). Save everything there, switch SP to the
// top of the kernel stack, run Rust with (kind), which ends by jumping to
// `__resume_task` with the SavedState of the task to run next.
global_asm!(
    ".section .text.vectors, \"ax\"",
    ".balign 2048",
    ".global __vectors",
    "__vectors:",
    // Current EL with SP_EL0: unused.
    ".balign 0x80",
    "    mov x0, #0",
    "    b kernel_exception_entry",
    ".balign 0x80",
    "    mov x0, #1",
    "    b kernel_exception_entry",
    ".balign 0x80",
    "    mov x0, #2",
    "    b kernel_exception_entry",
    ".balign 0x80",
    "    mov x0, #3",
    "    b kernel_exception_entry",
    // Current EL with SP_ELx: the kernel faulted (or an IRQ while it ran,
    // which cannot happen: it runs masked).
    ".balign 0x80",
    "    mov x0, #4",
    "    b kernel_exception_entry",
    ".balign 0x80",
    "    mov x0, #5",
    "    b kernel_exception_entry",
    ".balign 0x80",
    "    mov x0, #6",
    "    b kernel_exception_entry",
    ".balign 0x80",
    "    mov x0, #7",
    "    b kernel_exception_entry",
    // Lower EL, AArch64: system calls, faults, interrupts. While a task
    // runs, SP_EL2 points at its SavedState (`__resume_task`): x0, x1 go
    // straight there.
    ".balign 0x80",
    "    stp x0, x1, [sp]",
    "    mov x0, #0",
    "    b el0_entry",
    ".balign 0x80",
    "    stp x0, x1, [sp]",
    "    mov x0, #1",
    "    b el0_entry",
    ".balign 0x80",
    "    stp x0, x1, [sp]",
    "    mov x0, #1",
    "    b el0_entry",
    ".balign 0x80",
    "    stp x0, x1, [sp]",
    "    mov x0, #3",
    "    b el0_entry",
    // Lower EL, AArch32: never used (tasks are AArch64).
    ".balign 0x80",
    "    mov x0, #12",
    "    b kernel_exception_entry",
    ".balign 0x80",
    "    mov x0, #13",
    "    b kernel_exception_entry",
    ".balign 0x80",
    "    mov x0, #14",
    "    b kernel_exception_entry",
    ".balign 0x80",
    "    mov x0, #15",
    "    b kernel_exception_entry",
    "",
    // x0 = kind (0 sync, 1 irq/fiq, 3 serror); SP = the current task's
    // SavedState, its x0, x1 already stored.
    "el0_entry:",
    "    stp  x2, x3, [sp, #16]",
    "    stp  x4, x5, [sp, #32]",
    "    stp  x6, x7, [sp, #48]",
    "    stp  x8, x9, [sp, #64]",
    "    stp  x10, x11, [sp, #80]",
    "    stp  x12, x13, [sp, #96]",
    "    stp  x14, x15, [sp, #112]",
    "    stp  x16, x17, [sp, #128]",
    "    stp  x18, x19, [sp, #144]",
    "    stp  x20, x21, [sp, #160]",
    "    stp  x22, x23, [sp, #176]",
    "    stp  x24, x25, [sp, #192]",
    "    stp  x26, x27, [sp, #208]",
    "    stp  x28, x29, [sp, #224]",
    "    mrs  x2, sp_el0",
    "    stp  x30, x2, [sp, #240]",
    "    mrs  x2, elr_el2",
    "    mrs  x3, spsr_el2",
    "    stp  x2, x3, [sp, #256]",
    "    mrs  x2, tpidr_el0",
    "    str  x2, [sp, #800]",
    // The kernel keeps nothing on its stack between exceptions: it starts
    // afresh at the top each time.
    "    ldr  x1, =__kernel_stack_top",
    "    mov  sp, x1",
    // `send` and `reply_recv` to the IPC entry, which tries the fast
    // paths; everything else to `el0_exception`. x8 (the task's, the
    // system-call number if this is an SVC) is tested first, so other
    // entries pay two compares; then the exception class and the kind.
    "    cmp  w8, #{send}",
    "    ccmp w8, #{reply_recv}, #4, ne",
    "    b.ne 1f",
    "    mrs  x1, esr_el2",
    "    lsr  x1, x1, #26",
    "    cmp  x1, #0x15",
    "    ccmp x0, #0, #0, eq",
    "    b.eq el0_ipc",
    "1:  b    el0_exception",
    // x0 = the SavedState of the task to run, whose table is installed.
    // SP is left pointing at it for the next exception from EL0.
    ".global __resume_task",
    "__resume_task:",
    "    mov  sp, x0",
    "    ldp  x2, x3, [x0, #256]",
    "    msr  elr_el2, x2",
    "    msr  spsr_el2, x3",
    "    ldr  x2, [x0, #800]",
    "    msr  tpidr_el0, x2",
    "    ldp  x30, x2, [x0, #240]",
    "    msr  sp_el0, x2",
    "    ldp  x2, x3, [x0, #16]",
    "    ldp  x4, x5, [x0, #32]",
    "    ldp  x6, x7, [x0, #48]",
    "    ldp  x8, x9, [x0, #64]",
    "    ldp  x10, x11, [x0, #80]",
    "    ldp  x12, x13, [x0, #96]",
    "    ldp  x14, x15, [x0, #112]",
    "    ldp  x16, x17, [x0, #128]",
    "    ldp  x18, x19, [x0, #144]",
    "    ldp  x20, x21, [x0, #160]",
    "    ldp  x22, x23, [x0, #176]",
    "    ldp  x24, x25, [x0, #192]",
    "    ldp  x26, x27, [x0, #208]",
    "    ldp  x28, x29, [x0, #224]",
    "    ldp  x0, x1, [x0, #0]",
    "    eret",
    "",
    // x0 = kind. Nothing here may use the stack before switching to the
    // fault stack: the exception may be a kernel stack overflow into the
    // guard page.
    "kernel_exception_entry:",
    // A synchronous fault from a boot self-check probe (`selfcheck`): disarm,
    // record the syndrome, and return to the probe's caller with x0 = 1.
    // The probes are leaf routines, so x30 still holds their return address.
    "    cmp  x0, #4",
    "    b.ne 1f",
    "    adrp x1, __probe_armed",
    "    ldr  x2, [x1, :lo12:__probe_armed]",
    "    cbz  x2, 1f",
    "    str  xzr, [x1, :lo12:__probe_armed]",
    "    mrs  x2, esr_el2",
    "    adrp x1, __probe_esr",
    "    str  x2, [x1, :lo12:__probe_esr]",
    // The stack probe moved SP: put the caller's back.
    "    adrp x1, __probe_saved_sp",
    "    ldr  x2, [x1, :lo12:__probe_saved_sp]",
    "    cbz  x2, 2f",
    "    mov  sp, x2",
    "    str  xzr, [x1, :lo12:__probe_saved_sp]",
    "2:  msr  elr_el2, x30",
    "    mov  x0, #1",
    "    eret",
    // Fatal: report from the dedicated fault stack.
    "1:  ldr  x1, =__kernel_fault_stack_top",
    "    mov  sp, x1",
    "    mrs  x1, esr_el2",
    "    mrs  x2, elr_el2",
    "    mrs  x3, far_el2",
    "    b    kernel_exception",
    ".ltorg",
    send = const abi::Sysnum::Send as u32,
    reply_recv = const abi::Sysnum::ReplyRecv as u32,
);

// Probes for the boot self-check of the kernel's memory protection
// (`selfcheck`). Each arms `__probe_armed`, makes one access to x0, disarms
// and returns 0; if the access faults, `kernel_exception_entry` returns 1 to
// the caller instead and leaves the syndrome in `__probe_esr`.
global_asm!(
    ".section .text.probe, \"ax\"",
    ".global __probe_read",
    "__probe_read:",
    "    adrp x9, __probe_armed",
    "    mov  x10, #1",
    "    str  x10, [x9, :lo12:__probe_armed]",
    "    ldrb w10, [x0]",
    "    str  xzr, [x9, :lo12:__probe_armed]",
    "    mov  x0, #0",
    "    ret",
    // Writes back the byte it reads: harmless should the write land. (The
    // caller tells a refused write from a refused read by ESR.WnR.)
    ".global __probe_write",
    "__probe_write:",
    "    adrp x9, __probe_armed",
    "    mov  x10, #1",
    "    str  x10, [x9, :lo12:__probe_armed]",
    "    ldrb w10, [x0]",
    "    strb w10, [x0]",
    "    str  xzr, [x9, :lo12:__probe_armed]",
    "    mov  x0, #0",
    "    ret",
    // Branches to x0, which holds a `ret`: returns x0 (non-zero, not 1) if
    // the fetch is allowed, with the probe still armed (the caller disarms).
    ".global __probe_exec",
    "__probe_exec:",
    "    adrp x9, __probe_armed",
    "    mov  x10, #1",
    "    str  x10, [x9, :lo12:__probe_armed]",
    "    br   x0",
    // Runs a function prologue's push with SP = x0, as a kernel call chain
    // deeper than the stack would: with x0 at the stack's bottom the push
    // lands in the guard page.
    ".global __probe_push",
    "__probe_push:",
    "    adrp x9, __probe_saved_sp",
    "    mov  x10, sp",
    "    str  x10, [x9, :lo12:__probe_saved_sp]",
    "    mov  sp, x0",
    "    adrp x9, __probe_armed",
    "    mov  x10, #1",
    "    str  x10, [x9, :lo12:__probe_armed]",
    "    stp  x29, x30, [sp, #-16]!",
    "    str  xzr, [x9, :lo12:__probe_armed]",
    "    ldp  x29, x30, [sp], #16",
    "    adrp x9, __probe_saved_sp",
    "    ldr  x10, [x9, :lo12:__probe_saved_sp]",
    "    mov  sp, x10",
    "    str  xzr, [x9, :lo12:__probe_saved_sp]",
    "    mov  x0, #0",
    "    ret",
    ".section .bss.probe, \"aw\", %nobits",
    ".balign 8",
    ".global __probe_armed",
    "__probe_armed: .skip 8",
    ".global __probe_esr",
    "__probe_esr: .skip 8",
    "__probe_saved_sp: .skip 8",
);

// The SavedState layout the assembly above relies on.
const _: () = {
    assert!(core::mem::offset_of!(SavedState, x) == 0);
    assert!(core::mem::offset_of!(SavedState, sp) == 248);
    assert!(core::mem::offset_of!(SavedState, pc) == 256);
    assert!(core::mem::offset_of!(SavedState, pstate) == 264);
    assert!(core::mem::offset_of!(SavedState, fpsr) == 272);
    assert!(core::mem::offset_of!(SavedState, fpcr) == 280);
    assert!(core::mem::offset_of!(SavedState, q) == 288);
    assert!(core::mem::offset_of!(SavedState, tpidr_el0) == 800);
    assert!(core::mem::offset_of!(Task, save) == 0);
};

/// The machine as the portable core sees it.
pub struct Machine {
    uart: uart::Console,
    gic: gic::Gic,
    timer_intid: u32,
    /// Counter ticks per millisecond.
    ticks_per_ms: u64,
    /// The task whose FP/SIMD state is in the registers (null: none).
    fp_owner: *mut SavedState,
    /// Whether CPTR_EL2 currently lets EL0 use FP/SIMD (else it traps):
    /// true only while `fp_owner` runs. A flag rather than the register
    /// value so the switch test is one compare with `fp_owner` and one
    /// with this.
    fp_enabled: bool,
    /// The static task table and each task's trace ring (same index), for
    /// printing rings when a task faults or the kernel stops.
    task_descs: &'static [crate::config::TaskDesc],
    trace_rings: &'static [Option<crate::config::TraceRing>],
}

impl Machine {
    /// Prints task `index`'s trace ring (docs/tracing.md) if it has one.
    /// With `skip_empty`, a ring no event was ever recorded in is not
    /// printed (the kernel-stop dump lists only rings with events).
    #[inline(never)]
    fn print_trace_ring(&mut self, index: usize, skip_empty: bool) {
        let (Some(desc), Some(Some(ring))) =
            (self.task_descs.get(index), self.trace_rings.get(index))
        else {
            return;
        };
        let Some(pa) = crate::trace_ring_pa(desc, ring) else {
            return;
        };
        // SAFETY: `trace_ring_pa` checked that the range lies inside one
        // of the task's kernel-owned memory regions (a page-aligned static
        // of the image, reachable through the identity map); the task is
        // stopped (faulted) or the kernel is stopping, so nothing writes it
        // while it is read.
        let bytes = unsafe { core::slice::from_raw_parts(pa as *const u8, ring.size) };
        if skip_empty && bytes.iter().all(|&b| b == 0) {
            return;
        }
        crate::print_trace_ring(self, desc.name, bytes);
    }

    /// Every task's trace ring that holds events: the kernel is stopping.
    fn print_all_trace_rings(&mut self) {
        for i in 0..self.task_descs.len() {
            self.print_trace_ring(i, true);
        }
    }
}

impl Platform for Machine {
    fn console(&mut self, bytes: &[u8]) {
        self.uart.write(bytes);
    }
    fn irq_enable(&mut self, intid: u32, enable: bool) {
        self.gic.set_enabled(intid, enable);
    }
    fn now_ms(&self) -> u64 {
        CNTPCT_EL0.get() / self.ticks_per_ms
    }
    fn set_deadline(&mut self, deadline: Option<u64>) {
        match deadline {
            Some(ms) => {
                // CNTHP_* is the EL2 physical timer (PPI 26 on virt); its
                // compare value is in counter ticks.
                sysreg::set_cnthp_cval(ms.saturating_mul(self.ticks_per_ms));
                CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET);
            }
            None => CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR),
        }
        isb();
    }
    fn shutdown(&mut self, status: u32) -> ! {
        shutdown(status)
    }
    fn task_faulted(&mut self, index: usize) {
        self.print_trace_ring(index, false);
    }
    fn reset_task_memory(&mut self, task: &Task) {
        // A restarted task's FP registers start from its zeroed save area,
        // not from whatever its previous generation left in the registers.
        if core::ptr::eq(self.fp_owner, &task.save) {
            self.fp_owner = core::ptr::null_mut();
        }
        // Zero stack, data and memory regions (`zeroed_on_restart`):
        // .bss and stack start clean, and nothing of the previous
        // generation survives.
        for d in task
            .desc
            .regions
            .iter()
            .filter(|r| crate::task::zeroed_on_restart(r))
        {
            let pa = crate::task::region_pa(d);
            // SAFETY: these regions are kernel-owned statics of `size`
            // bytes, reachable at `pa` through the identity map, and the task
            // is not running while the kernel runs.
            unsafe { core::ptr::write_bytes(pa as *mut u8, 0, d.size) };
            if d.attributes & (abi::REGION_UNCACHED | abi::REGION_DMA) != 0 {
                // The task sees this memory non-cacheable, or a device may
                // read and write it without snooping the caches (a
                // non-coherent SMMU's tables and queues): push the zeros
                // out of the kernel's cacheable view. Otherwise a dirty
                // zero line could later be evicted over a queue entry
                // the device wrote, or the device read stale memory.
                clean_invalidate_dcache(pa, d.size);
            }
        }
    }
}

/// Cleans and invalidates the data cache over `[pa, pa + len)` to the point
/// of coherency, then waits for it.
fn clean_invalidate_dcache(pa: usize, len: usize) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    // CTR_EL0.DminLine (bits 19:16): log2 of the smallest D-cache line in words.
    let line = 4usize << ((ctr >> 16) & 0xf);
    let mut a = pa & !(line - 1);
    while a < pa + len {
        // SAFETY: a cache maintenance by address on memory the kernel maps;
        // it changes no data.
        unsafe { asm!("dc civac, {}", in(reg) a, options(nostack)) };
        a += line;
    }
    // SAFETY: a barrier has no operands.
    unsafe { asm!("dsb sy", options(nostack)) };
}

/// Whether the board has a semihosting host (`kern::config::Board`), set
/// first thing at boot. Without one `HLT #0xF000` is an undefined
/// instruction, whose exception would call `shutdown` again.
static SEMIHOSTING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Stops the machine. Status 0 uses PSCI SYSTEM_OFF (QEMU exits 0); any
/// other status uses semihosting SYS_EXIT so the exit code reaches the host
/// (QEMU runs with `-semihosting`) on a board that has it, then PSCI.
pub fn shutdown(status: u32) -> ! {
    if status != 0 && SEMIHOSTING.load(core::sync::atomic::Ordering::Relaxed) {
        // ADP_Stopped_ApplicationExit with the status as subcode.
        let block: [u64; 2] = [0x20026, status as u64];
        // SAFETY: semihosting SYS_EXIT (0x18) reads the two-word block; it
        // does not return when semihosting is enabled.
        unsafe {
            asm!("hlt #0xf000", in("w0") 0x18u32, in("x1") &block as *const _ as u64, options(nostack));
        }
    }
    // SAFETY: PSCI SYSTEM_OFF through SMC (QEMU virt with virtualization=on
    // uses the SMC conduit); does not return.
    unsafe { asm!("smc #0", in("x0") 0x8400_0008u64, options(nostack)) };
    loop {
        // SAFETY: waiting forever has no effects.
        unsafe { asm!("wfe", options(nostack)) };
    }
}

/// Written once at boot (`start`) before any exception from EL0 can be
/// taken; only `globals` reads it, after that. Not an `Option`: the IPC
/// path then knows the task table's length as a constant instead of
/// testing the discriminant at every index check.
static mut KERNEL: core::mem::MaybeUninit<Kernel<'static>> = core::mem::MaybeUninit::uninit();
/// The kernel image's 4 KiB tables (see `mmu`).
static mut KERNEL_L3: [mmu::Page; mmu::KERNEL_L3_PAGES] =
    [const { mmu::Page::ZERO }; mmu::KERNEL_L3_PAGES];
static mut MACHINE: Option<Machine> = None;

/// Boots the kernel with the generated configuration and the task table
/// storage. Never returns: it drops to the first task.
///
/// # Safety
/// Call once, from `kernel_entry`, with the MMU off.
pub unsafe fn start(
    cfg: Config,
    tasks: &'static mut [Task],
    pt_pool: &'static mut [mmu::Page],
) -> ! {
    let board = cfg.board;
    SEMIHOSTING.store(board.semihosting, core::sync::atomic::Ordering::Relaxed);
    let mut m = Machine {
        uart: uart::Console::new(board.console),
        gic: gic::Gic::new(board.gicd_base, board.gicr_base),
        timer_intid: board.timer_intid,
        ticks_per_ms: (CNTFRQ_EL0.get() / 1000).max(1),
        fp_owner: core::ptr::null_mut(),
        fp_enabled: false,
        task_descs: cfg.tasks,
        trace_rings: cfg.trace_rings,
    };
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects at any EL.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack)) };
    let el = (el >> 2) & 3;
    if el != 2 {
        m.console(b"kern: entered at EL");
        crate::print_dec(&mut m, el);
        m.console(b" on ");
        m.console(board.name.as_bytes());
        m.console(b": this kernel runs at EL2 with VHE; boot it from a loader that stays at EL2 (docs/porting.md). Stopped.\n");
        loop {
            // SAFETY: parking this CPU has no effects.
            unsafe { asm!("wfe", options(nostack)) };
        }
    }
    m.console(b"kern: booting on ");
    m.console(board.name.as_bytes());
    m.console(b", ");
    crate::print_dec(&mut m, tasks.len() as u64);
    m.console(b" tasks, CurrentEL=2 (VHE)\n");

    // SAFETY: boot, MMU off, nothing runs at EL0 yet. Each write below
    // keeps the contract its setter states.
    unsafe {
        // EL2 host configuration: E2H+TGE make EL0 the host's EL0 (EL2&0
        // regime); RW: lower ELs are AArch64.
        sysreg::set_hcr_el2(
            (HCR_EL2::E2H::EnableOsAtEl2
                + HCR_EL2::TGE::EnableTrapGeneralExceptionsToEl2
                + HCR_EL2::RW::EL1IsAarch64)
                .value,
        );
        isb();
        // CPTR_EL2 in its E2H layout: FP/SIMD traps at EL0 until a task
        // uses it (lazy switching, see `__fp_save`); SVE, SME, trace and
        // the activity monitors stay trapped (their enable fields are 0).
        sysreg::set_cptr_el2(CPTR_FP_TRAP_EL0);
        // Counter access from EL0: virtual counter readable (benchmarks),
        // no timer access (EL0PTEN, EL0VTEN = 0) and no physical counter.
        // E2H layout of CNTHCTL_EL2: EL0VCTEN is bit 1.
        sysreg::set_cnthctl_el2(1 << 1);
        // EL0-visible state no task owns: the read-only thread pointer
        // (tasks could read whatever the loader left), the performance
        // monitors and activity monitors (their EL0 enables reset to
        // UNKNOWN values), and the debug communication channel (a register
        // pair every task could write and read: MDSCR_EL1.TDCC traps it).
        // MDCR_EL2: TPM (6), TPMCR (5), TDA (9), TDOSA (10), TDRA (11) trap
        // EL0 PMU and debug-register accesses to the kernel as well;
        // HPMN (the counters' partition) is kept.
        sysreg::set_pmuserenr_el0(0);
        if ID_AA64PFR0_EL1.get() >> 44 & 0xf != 0 {
            sysreg::set_amuserenr_el0(0);
        }
        sysreg::set_mdscr_el1(1 << 12);
        sysreg::set_mdcr_el2(
            sysreg::mdcr_el2() | (1 << 5) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11),
        );
        let vectors: u64;
        asm!("adr {}, __vectors", out(reg) vectors, options(nomem, nostack));
        sysreg::set_vbar_el2(vectors);
    }
    TPIDRRO_EL0.set(0);
    CNTVOFF_EL2.set(0);
    isb();

    let image = mmu::ImageLayout::of_image();
    // SAFETY: the one call, at boot, with the MMU off; `KERNEL_L3` is used
    // nowhere else.
    let mapped = unsafe {
        let kernel_l3 = &mut *core::ptr::addr_of_mut!(KERNEL_L3);
        mmu::init(board, cfg.tasks, tasks, pt_pool, kernel_l3, &image)
    };
    let kernel_ttbr0 = match mapped {
        Ok(t) => t,
        Err(msg) => {
            m.console(b"kern: bad configuration: ");
            m.console(msg.as_bytes());
            m.console(b"\n");
            shutdown(crate::EXIT_BAD_CONFIG);
        }
    };
    // From here on the kernel never touches memory EL0 can reach: it
    // reaches task memory through its own privileged map (after checking
    // the task's regions). Every exception taken to EL2 sets PAN again
    // (SCTLR_EL2.SPAN = 0).
    sysreg::set_pan();
    if !selfcheck::run(
        &mut m,
        &image,
        kernel_ttbr0,
        tasks,
        board.ram_base + board.ram_size,
    ) {
        m.console(b"kern: memory protection self-check failed: stopping\n");
        shutdown(crate::EXIT_KERNEL_FAULT);
    }
    // The kernel map stays in every task's table (no separate kernel
    // table): say so on a CPU that does not promise that EL0 cannot read
    // privileged-only memory speculatively (ID_AA64PFR0_EL1.CSV3).
    if ID_AA64PFR0_EL1.get() >> 60 == 0 {
        m.console(b"kern: warning: CPU does not report CSV3; kernel memory mapped in task tables may leak through speculation\n");
    }
    // The board names the first redistributor frame; use this CPU's.
    let gicr_limit = board
        .kernel_devices
        .iter()
        .find(|&&(b, s)| (b..b + s).contains(&board.gicr_base))
        .map_or(board.gicr_base, |&(b, s)| b + s);
    if let Err(aff) = m.gic.find_redistributor(gicr_limit) {
        m.console(b"kern: no GIC redistributor for this CPU (affinity ");
        crate::print_hex(&mut m, aff);
        m.console(b") from the board's gic.redistributor on: check the board file\n");
        shutdown(crate::EXIT_BAD_CONFIG);
    }
    m.gic.init();
    for irq in cfg.irqs {
        m.gic.configure(irq.intid, irq.edge);
    }
    m.gic.configure(m.timer_intid, false);
    m.gic.set_enabled(m.timer_intid, true);

    // SAFETY: single-threaded boot; these statics are only touched by the
    // kernel, which is not reentrant.
    unsafe {
        MACHINE = Some(m);
        (*core::ptr::addr_of_mut!(KERNEL)).write(Kernel::new(tasks, cfg.irqs));
    }
    // SAFETY: boot is single-threaded and these are the only references.
    let (k, m) = unsafe { globals() };
    k.boot(m);
    let next = run_next(k, m);
    // SAFETY: `next` is a SavedState of a task whose table is now installed.
    unsafe {
        asm!("mov x0, {}", "b __resume_task", in(reg) next, options(noreturn));
    }
}

/// # Safety
/// The kernel is single-threaded and not reentrant; the returned references
/// must not outlive the current exception.
unsafe fn globals() -> (&'static mut Kernel<'static>, &'static mut Machine) {
    // SAFETY: per the function contract, no other reference exists; both
    // statics were written by `start` before the first exception from EL0
    // (and before its own call).
    unsafe {
        let k = (*core::ptr::addr_of_mut!(KERNEL)).assume_init_mut();
        let m = (*core::ptr::addr_of_mut!(MACHINE))
            .as_mut()
            .unwrap_unchecked();
        (k, m)
    }
}

/// Makes sure some task can run (waiting for interrupts if none can),
/// installs its translation table and returns its SavedState pointer. The
/// scheduling decision itself was made by whoever changed the runnable set.
/// Inline: on the IPC path the task to run is runnable already, and what
/// is left is the FP trap setting and the TTBR0 write.
#[inline(always)]
fn run_next(k: &mut Kernel<'static>, m: &mut Machine) -> *mut SavedState {
    if !k.tasks[k.current].is_runnable() {
        wait_for_runnable(k, m);
    }
    install(k, m)
}

/// Installs `k.current` (runnable) on the CPU: the FP trap setting and its
/// translation table; returns its SavedState pointer for `__resume_task`.
#[inline(always)]
fn install(k: &mut Kernel<'static>, m: &mut Machine) -> *mut SavedState {
    let t = &mut k.tasks[k.current];
    let p = &mut t.save as *mut SavedState;
    // The usual case on the IPC path: neither task uses FP, so FP stays
    // trapped and nothing is written.
    if core::ptr::eq(m.fp_owner, p) || m.fp_enabled {
        set_fp_enabled(m, core::ptr::eq(m.fp_owner, p));
    }
    // SAFETY: `ttbr0` is the task's table built at boot (it maps the kernel
    // exactly as the kernel map does, with the task's own ASID); `p` is the
    // task's SavedState, which `__resume_task` leaves in SP_EL2 for the
    // exception entry code to store into. No ISB
    // after the TTBR0 write: until the `eret` (context synchronising) the
    // kernel touches only its own global mappings, identical in every table.
    unsafe {
        sysreg::set_ttbr0_el2(t.ttbr0);
    }
    p
}

/// Lets EL0 use FP/SIMD (`on`) or traps it, writing CPTR_EL2 only on a
/// change.
#[inline(never)]
fn set_fp_enabled(m: &mut Machine, on: bool) {
    if on != m.fp_enabled {
        let cptr = if on { CPTR_FP_ON } else { CPTR_FP_TRAP_EL0 };
        // SAFETY: FP is enabled at EL0 only for the task whose state is in
        // the registers (`fp_owner`, the caller's test).
        unsafe { sysreg::set_cptr_el2(cptr) };
        m.fp_enabled = on;
    }
}

/// Until some task is runnable: schedule, and if nothing can run, wait
/// for an interrupt and handle it.
#[inline(never)]
fn wait_for_runnable(k: &mut Kernel<'static>, m: &mut Machine) {
    while !k.tasks[k.current].is_runnable() {
        if !k.schedule(m) {
            // Nothing runnable: wait with interrupts masked; WFI still wakes
            // on a pending interrupt, which we then handle here.
            // SAFETY: waiting has no effects.
            unsafe { asm!("wfi", options(nostack)) };
            handle_irqs(k, m);
        }
    }
}

/// The current task used FP/SIMD while another task's state was in the
/// registers: swap, then let it retry the instruction.
fn fp_switch(k: &mut Kernel<'static>, m: &mut Machine) {
    let me = &mut k.tasks[k.current].save as *mut SavedState;
    // FP must be enabled at EL2 to move the registers; the kernel itself is
    // soft-float, so nothing else touches them meanwhile.
    // SAFETY: the registers are about to hold this task's state; until the
    // swap below completes only the kernel runs.
    unsafe { sysreg::set_cptr_el2(CPTR_FP_ON) };
    m.fp_enabled = true;
    isb();
    // SAFETY: both pointers name SavedState records in the static task
    // table; the layout matches the offsets the routines use (asserted
    // above).
    unsafe {
        if !m.fp_owner.is_null() {
            __fp_save(m.fp_owner);
        }
        __fp_load(me);
    }
    m.fp_owner = me;
}

fn handle_irqs(k: &mut Kernel<'static>, m: &mut Machine) {
    while let Some(intid) = m.gic.acknowledge() {
        if intid == m.timer_intid {
            k.timer_tick(m);
        } else {
            k.interrupt(m, intid);
        }
        m.gic.end_of_interrupt(intid);
    }
    k.schedule(m);
}

/// The scheduler after a task fault or an SError, out of line: not the
/// IPC path, and one copy of the (inlined) scheduler for both.
#[inline(never)]
fn schedule_after_fault(k: &mut Kernel<'static>, m: &mut Machine) {
    k.schedule(m);
}

/// Called from `el0_entry` for `send` and `reply_recv`, with the task's
/// registers saved: the IPC fast paths, else the general path. A function
/// of its own so that only these calls carry the fast paths' register
/// saves (the other entries keep `el0_exception`'s few).
#[no_mangle]
extern "C" fn el0_ipc() -> ! {
    // SAFETY: as in `el0_exception`.
    let (k, m) = unsafe { globals() };
    let next = if k.ipc_fast(m) {
        // A fast path chose a runnable task: no runnable test.
        install(k, m)
    } else {
        let c = k.current;
        k.syscall_general(m, c);
        run_next(k, m)
    };
    // SAFETY: as in `el0_exception`.
    unsafe { asm!("mov x0, {}", "b __resume_task", in(reg) next, options(noreturn)) }
}

/// Called from `el0_entry` with the task's registers saved.
#[no_mangle]
extern "C" fn el0_exception(kind: u64) -> ! {
    // SAFETY: we are in the kernel, entered from EL0; nothing else holds
    // these references.
    let (k, m) = unsafe { globals() };
    if kind == 1 {
        handle_irqs(k, m);
    } else if kind == 0 {
        let esr = ESR_EL2.get();
        let ec = (esr >> 26) & 0x3f;
        let c = k.current;
        // SVC from AArch64 (but `send` and `reply_recv`: `el0_ipc`).
        if ec == 0x15 {
            k.syscall_general(m, c);
        } else if ec == 0x07 {
            // FP/SIMD access trapped by CPTR_EL2: lazy switch.
            fp_switch(k, m);
        } else {
            let far = FAR_EL2.get() as usize;
            let (kind, detail) = match ec {
                0x24 => (abi::FaultKind::MemoryAccess, far),
                0x20 => (abi::FaultKind::InstructionAccess, far),
                0x22 | 0x26 => (abi::FaultKind::Alignment, esr as usize),
                _ => (abi::FaultKind::IllegalInstruction, esr as usize),
            };
            k.fault(m, c, kind, detail);
            // One scheduler call for this and the SError below: it is
            // inlined, so each call site is a copy of it.
            schedule_after_fault(k, m);
        }
    } else {
        // SError from EL0: the core decides whom it is charged to.
        k.serror(m, ESR_EL2.get() as usize);
        schedule_after_fault(k, m);
    }
    let next = run_next(k, m);
    // SAFETY: `next` is the SavedState of the task whose table `run_next`
    // installed; `__resume_task` does not return (the next exception from
    // EL0 starts the kernel stack afresh).
    unsafe { asm!("mov x0, {}", "b __resume_task", in(reg) next, options(noreturn)) }
}

/// An exception taken while the kernel itself ran: a kernel bug.
#[no_mangle]
extern "C" fn kernel_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    // SAFETY: we are stopping; the UART is the only thing we touch, and the
    // base is the board's UART, already mapped (or the MMU is off).
    let m = unsafe { (*core::ptr::addr_of_mut!(MACHINE)).as_mut() };
    if let Some(m) = m {
        let guard = mmu::ImageLayout::of_image().guard as u64;
        if kind == 4 && (guard..guard + 4096).contains(&far) {
            crate::say(m, b"kern: KERNEL STACK OVERFLOW (guard page hit)\n");
        }
        crate::say(m, b"kern: KERNEL EXCEPTION kind=");
        crate::print_dec(m, kind);
        crate::say(m, b" esr=");
        crate::print_hex(m, esr);
        crate::say(m, b" elr=");
        crate::print_hex(m, elr);
        crate::say(m, b" far=");
        crate::print_hex(m, far);
        crate::say(m, b"\n");
        m.print_all_trace_rings();
    }
    shutdown(crate::EXIT_KERNEL_FAULT)
}

pub use mmu::Page;

/// A panic inside the kernel: report and stop.
pub fn kernel_panic() -> ! {
    // SAFETY: as in `kernel_exception`.
    if let Some(m) = unsafe { (*core::ptr::addr_of_mut!(MACHINE)).as_mut() } {
        crate::say(m, b"kern: KERNEL PANIC\n");
        m.print_all_trace_rings();
    }
    shutdown(crate::EXIT_KERNEL_FAULT)
}
