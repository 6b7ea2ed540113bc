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
mod mmu;
mod uart;

use crate::config::Config;
use crate::syscalls::{Kernel, Platform};
use crate::task::{SavedState, Task};
use core::arch::{asm, global_asm};

/// System registers.
macro_rules! read_sysreg {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading a system register has no memory effects.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
        v
    }};
}
macro_rules! write_sysreg {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: callers write architecturally valid values to registers
        // the kernel owns at EL2; each write site states why it is needed.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nostack)) };
    }};
}
pub(crate) use read_sysreg;
pub(crate) use write_sysreg;

fn isb() {
    // SAFETY: a barrier has no operands.
    unsafe { asm!("isb", options(nostack)) };
}

// Boot: the loader enters at `_start` (link address 0x4020_0000) at EL2 with
// the MMU off, x0 = DTB. Set the stack, zero .bss (it holds task data and
// page tables, which must start zeroed), then enter Rust.
global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    "    mrs  x9, CurrentEL",
    "    cmp  x9, #(2 << 2)",
    "    b.ne 9f",
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
// On entry from EL0: TPIDR_EL2 points at the current task's SavedState.
// Save everything there, call Rust with (kind), restore whichever task
// TPIDR_EL2 points at afterwards, and eret.
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
    // Lower EL, AArch64: system calls, faults, interrupts.
    ".balign 0x80",
    "    str x0, [sp, #-16]!",
    "    mov x0, #0",
    "    b el0_entry",
    ".balign 0x80",
    "    str x0, [sp, #-16]!",
    "    mov x0, #1",
    "    b el0_entry",
    ".balign 0x80",
    "    str x0, [sp, #-16]!",
    "    mov x0, #1",
    "    b el0_entry",
    ".balign 0x80",
    "    str x0, [sp, #-16]!",
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
    // x0 = kind (0 sync, 1 irq/fiq, 3 serror); the task's x0 is on the stack.
    "el0_entry:",
    "    str  x1, [sp, #8]",
    "    mrs  x1, tpidr_el2",
    "    stp  x2, x3, [x1, #16]",
    "    stp  x4, x5, [x1, #32]",
    "    stp  x6, x7, [x1, #48]",
    "    stp  x8, x9, [x1, #64]",
    "    stp  x10, x11, [x1, #80]",
    "    stp  x12, x13, [x1, #96]",
    "    stp  x14, x15, [x1, #112]",
    "    stp  x16, x17, [x1, #128]",
    "    stp  x18, x19, [x1, #144]",
    "    stp  x20, x21, [x1, #160]",
    "    stp  x22, x23, [x1, #176]",
    "    stp  x24, x25, [x1, #192]",
    "    stp  x26, x27, [x1, #208]",
    "    stp  x28, x29, [x1, #224]",
    "    ldp  x2, x3, [sp], #16",
    "    stp  x2, x3, [x1, #0]",
    "    mrs  x2, sp_el0",
    "    stp  x30, x2, [x1, #240]",
    "    mrs  x2, elr_el2",
    "    mrs  x3, spsr_el2",
    "    stp  x2, x3, [x1, #256]",
    "    bl   el0_exception",
    // x0 = the SavedState to resume (also now in TPIDR_EL2).
    ".global __resume_task",
    "__resume_task:",
    "    ldp  x2, x3, [x0, #256]",
    "    msr  elr_el2, x2",
    "    msr  spsr_el2, x3",
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
    "kernel_exception_entry:",
    "    mrs  x1, esr_el2",
    "    mrs  x2, elr_el2",
    "    mrs  x3, far_el2",
    "    b    kernel_exception",
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
    assert!(core::mem::offset_of!(Task, save) == 0);
};

/// The machine as the portable core sees it.
pub struct Machine {
    uart: uart::Pl011,
    gic: gic::Gic,
    timer_intid: u32,
    /// Counter ticks per millisecond.
    ticks_per_ms: u64,
    /// The task whose FP/SIMD state is in the registers (null: none).
    fp_owner: *mut SavedState,
    /// Current CPTR_EL2 value, to skip redundant writes.
    cptr: u64,
}

impl Platform for Machine {
    fn console(&mut self, bytes: &[u8]) {
        self.uart.write(bytes);
    }
    fn irq_enable(&mut self, intid: u32, enable: bool) {
        self.gic.set_enabled(intid, enable);
    }
    fn now_ms(&self) -> u64 {
        read_sysreg!("cntpct_el0") / self.ticks_per_ms
    }
    fn set_deadline(&mut self, deadline: Option<u64>) {
        match deadline {
            Some(ms) => {
                // CNTHP_* is the EL2 physical timer (PPI 26 on virt); its
                // compare value is in counter ticks.
                write_sysreg!("cnthp_cval_el2", ms.saturating_mul(self.ticks_per_ms));
                write_sysreg!("cnthp_ctl_el2", 1);
            }
            None => write_sysreg!("cnthp_ctl_el2", 0),
        }
        isb();
    }
    fn shutdown(&mut self, status: u32) -> ! {
        shutdown(status)
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
            if d.attributes & abi::REGION_UNCACHED != 0 {
                // The task (and its device) see this memory non-cacheable:
                // push the zeros out of the kernel's cacheable view.
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

/// Stops the machine. Status 0 uses PSCI SYSTEM_OFF (QEMU exits 0); any
/// other status uses semihosting SYS_EXIT so the exit code reaches the host
/// (QEMU runs with `-semihosting`), then PSCI as a fallback.
pub fn shutdown(status: u32) -> ! {
    if status != 0 {
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

static mut KERNEL: Option<Kernel<'static>> = None;
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
    let mut m = Machine {
        uart: uart::Pl011::new(board.uart_base),
        gic: gic::Gic::new(board.gicd_base, board.gicr_base),
        timer_intid: board.timer_intid,
        ticks_per_ms: (read_sysreg!("cntfrq_el0") / 1000).max(1),
        fp_owner: core::ptr::null_mut(),
        cptr: CPTR_FP_TRAP_EL0,
    };
    m.console(b"kern: booting on ");
    m.console(board.name.as_bytes());
    m.console(b", ");
    crate::print_dec(&mut m, tasks.len() as u64);
    m.console(b" tasks, CurrentEL=2 (VHE)\n");

    // EL2 host configuration: E2H+TGE make EL0 the host's EL0 (EL2&0
    // regime); RW: lower ELs are AArch64.
    write_sysreg!("hcr_el2", (1 << 34) | (1 << 27) | (1 << 31));
    isb();
    // CPTR_EL2 in its E2H layout: FP/SIMD traps at EL0 until a task uses it
    // (lazy switching, see `__fp_save`).
    write_sysreg!("cptr_el2", CPTR_FP_TRAP_EL0);
    // Counter access from EL0: virtual counter readable (benchmarks), no
    // timer access. E2H layout of CNTHCTL_EL2: EL0VCTEN is bit 1.
    write_sysreg!("cnthctl_el2", 1 << 1);
    write_sysreg!("cntvoff_el2", 0);
    // SAFETY: vector table symbol from the global_asm above.
    let vectors: u64;
    unsafe { asm!("adr {}, __vectors", out(reg) vectors, options(nomem, nostack)) };
    write_sysreg!("vbar_el2", vectors);
    isb();

    if let Err(msg) = mmu::init(board, cfg.tasks, tasks, pt_pool) {
        m.console(b"kern: bad configuration: ");
        m.console(msg.as_bytes());
        m.console(b"\n");
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
        KERNEL = Some(Kernel::new(tasks, cfg.irqs));
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
    // SAFETY: per the function contract, no other reference exists.
    unsafe {
        let k = (*core::ptr::addr_of_mut!(KERNEL))
            .as_mut()
            .unwrap_unchecked();
        let m = (*core::ptr::addr_of_mut!(MACHINE))
            .as_mut()
            .unwrap_unchecked();
        (k, m)
    }
}

/// Makes sure some task can run (waiting for interrupts if none can),
/// installs its translation table and returns its SavedState pointer. The
/// scheduling decision itself was made by whoever changed the runnable set.
fn run_next(k: &mut Kernel<'static>, m: &mut Machine) -> *mut SavedState {
    while !k.tasks[k.current].is_runnable() {
        if !k.schedule(m) {
            // Nothing runnable: wait with interrupts masked; WFI still wakes
            // on a pending interrupt, which we then handle here.
            // SAFETY: waiting has no effects.
            unsafe { asm!("wfi", options(nostack)) };
            handle_irqs(k, m);
        }
    }
    let t = &mut k.tasks[k.current];
    let p = &mut t.save as *mut SavedState;
    let cptr = if core::ptr::eq(m.fp_owner, p) {
        CPTR_FP_ON
    } else {
        CPTR_FP_TRAP_EL0
    };
    if cptr != m.cptr {
        write_sysreg!("cptr_el2", cptr);
        m.cptr = cptr;
    }
    write_sysreg!("ttbr0_el2", t.ttbr0);
    isb();
    write_sysreg!("tpidr_el2", p as u64);
    p
}

/// The current task used FP/SIMD while another task's state was in the
/// registers: swap, then let it retry the instruction.
fn fp_switch(k: &mut Kernel<'static>, m: &mut Machine) {
    let me = &mut k.tasks[k.current].save as *mut SavedState;
    // FP must be enabled at EL2 to move the registers; the kernel itself is
    // soft-float, so nothing else touches them meanwhile.
    write_sysreg!("cptr_el2", CPTR_FP_ON);
    m.cptr = CPTR_FP_ON;
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

/// Called from `el0_entry` with the task's registers saved.
#[no_mangle]
extern "C" fn el0_exception(kind: u64) -> *mut SavedState {
    // SAFETY: we are in the kernel, entered from EL0; nothing else holds
    // these references.
    let (k, m) = unsafe { globals() };
    if kind == 1 {
        handle_irqs(k, m);
    } else if kind == 0 {
        let esr = read_sysreg!("esr_el2");
        let ec = (esr >> 26) & 0x3f;
        let c = k.current;
        match ec {
            // SVC from AArch64.
            0x15 => k.syscall(m),
            // FP/SIMD access trapped by CPTR_EL2: lazy switch.
            0x07 => fp_switch(k, m),
            _ => {
                let far = read_sysreg!("far_el2") as usize;
                let (kind, detail) = match ec {
                    0x24 => (abi::FaultKind::MemoryAccess, far),
                    0x20 => (abi::FaultKind::InstructionAccess, far),
                    0x22 | 0x26 => (abi::FaultKind::Alignment, esr as usize),
                    _ => (abi::FaultKind::IllegalInstruction, esr as usize),
                };
                k.fault(m, c, kind, detail);
                k.schedule(m);
            }
        }
    } else {
        // SError from EL0: the core decides whom it is charged to.
        k.serror(m, read_sysreg!("esr_el2") as usize);
        k.schedule(m);
    }
    run_next(k, m)
}

/// An exception taken while the kernel itself ran: a kernel bug.
#[no_mangle]
extern "C" fn kernel_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    // SAFETY: we are stopping; the UART is the only thing we touch, and the
    // base is the board's UART, already mapped (or the MMU is off).
    let m = unsafe { (*core::ptr::addr_of_mut!(MACHINE)).as_mut() };
    if let Some(m) = m {
        m.console(b"kern: KERNEL EXCEPTION kind=");
        crate::print_dec(m, kind);
        m.console(b" esr=");
        crate::print_hex(m, esr);
        m.console(b" elr=");
        crate::print_hex(m, elr);
        m.console(b" far=");
        crate::print_hex(m, far);
        m.console(b"\n");
    }
    shutdown(crate::EXIT_KERNEL_FAULT)
}

pub use mmu::Page;

/// A panic inside the kernel: report and stop.
pub fn kernel_panic() -> ! {
    // SAFETY: as in `kernel_exception`.
    if let Some(m) = unsafe { (*core::ptr::addr_of_mut!(MACHINE)).as_mut() } {
        m.console(b"kern: KERNEL PANIC\n");
    }
    shutdown(crate::EXIT_KERNEL_FAULT)
}
