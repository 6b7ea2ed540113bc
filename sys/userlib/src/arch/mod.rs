//! AArch64 EL0 side: the `svc` primitive, the task entry point and the panic
//! handler.

use abi::Sysnum;
use core::arch::{asm, global_asm};

/// Issues system call `num` with up to seven arguments; returns x0..x5.
#[inline(always)]
pub fn raw_syscall(num: Sysnum, args: [usize; 7]) -> [usize; 6] {
    let (mut r0, mut r1, mut r2, mut r3, mut r4, mut r5) =
        (args[0], args[1], args[2], args[3], args[4], args[5]);
    // SAFETY: `svc #0` enters the kernel, which reads x0..x7/x8 and writes
    // x0..x7 only; memory named by the arguments is checked by the kernel
    // against this task's regions, and the borrows behind the pointers are
    // live for the duration of the call (the caller holds them).
    unsafe {
        asm!(
            "svc #0",
            inout("x0") r0,
            inout("x1") r1,
            inout("x2") r2,
            inout("x3") r3,
            inout("x4") r4,
            inout("x5") r5,
            inout("x6") args[6] => _,
            inout("x7") 0usize => _,
            in("x8") num as usize,
            options(nostack),
        );
    }
    [r0, r1, r2, r3, r4, r5]
}

/// The virtual counter (CNTVCT_EL0); the kernel enables EL0 access.
#[inline(always)]
pub fn counter() -> u64 {
    let v: u64;
    // SAFETY: reading CNTVCT_EL0 has no side effects; `isb` orders it after
    // the preceding instructions so measurements are not hoisted.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

// Task entry. The kernel starts (and restarts) a task here with SP at the top
// of its data region, which it has zeroed. `.data` is copied from its load
// image in text, so a restarted task starts from its initial values.
global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    adrp x0, __sdata",
    "    add  x0, x0, :lo12:__sdata",
    "    adrp x1, __edata",
    "    add  x1, x1, :lo12:__edata",
    "    adrp x2, __sidata",
    "    add  x2, x2, :lo12:__sidata",
    "1:  cmp  x0, x1",
    "    b.hs 2f",
    "    ldr  x3, [x2], #8",
    "    str  x3, [x0], #8",
    "    b    1b",
    "2:  bl   main",
    "    b    .",
);

/// Reports the panic to the kernel, which prints it with the task's trace
/// ring (docs/tracing.md). No `core::fmt` here: formatting the message
/// would pull the formatting machinery into every task, panics being in
/// every task (about 1-4 KiB each, docs/kernel.md "Footprint"). A message
/// without arguments (`panic!("text")`, `expect("text")`) is sent as is;
/// one with arguments is not formatted, and the location (file:line) says
/// where it came from.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut buf = crate::fmt::Buf::<160>::new();
    buf.push(b"panic: ");
    match info.message().as_str() {
        Some(text) => buf.push(text.as_bytes()),
        None => buf.push(b"(message with arguments, not formatted)"),
    }
    if let Some(at) = info.location() {
        buf.push(b" at ");
        buf.push(at.file().as_bytes());
        buf.push(b":");
        buf.push_decimal(at.line());
    }
    crate::sys_panic(buf.as_bytes())
}
