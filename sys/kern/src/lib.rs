//! The kernel.
//!
//! Principles, in the order they win when they conflict:
//! 1. **Static configuration.** Tasks, their memory, their peers
//!    (`task-slots`), their interrupts and their capabilities are fixed by
//!    app.toml at build time. The kernel has no heap and creates nothing at
//!    run time; the build rejects configurations that break the rules.
//! 2. **Authority is explicit and checked at run time.** A task reaches only
//!    the memory and MMIO app.toml gives it (its own translation table and
//!    ASID), sends only to its task-slots, and the kernel stamps the sender's
//!    identity (index + generation) on every message.
//! 3. **Small and portable.** Everything a task can do without the kernel is
//!    a task. The IPC core (`syscalls`) has no CPU code in it, so the host
//!    harness runs the very same code; `arch` is the only AArch64 part.
//!
//! The kernel runs at EL2 with VHE (so VMs can later run at EL1 without a
//! rewrite); tasks run at EL0. It is not reentrant: interrupts are masked
//! while it runs and taken only from EL0 or when idle.

#![cfg_attr(not(test), no_std)]

pub mod config;
pub mod syscalls;
pub mod task;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod arch;

use abi::FaultKind;
use syscalls::Platform;

/// Stops speculation past a successful check of a task's address range
/// (`Kernel::user`): see `arch::speculation_barrier`. Nothing on the host.
#[inline(always)]
pub fn speculation_barrier() {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    arch::speculation_barrier();
}

/// `base + (va - lo)` if `[va, va + len)` lies inside `[lo, lo + size)`,
/// else 0. `lo + size` must not wrap (regions are static and far below the
/// top of the address space). Used by `Kernel::user` on a task's buffer.
///
/// On AArch64 the comparison, the select and a `CSDB` are one `asm!` block,
/// so the compiler cannot turn the select into a branch: the result is a
/// *data* dependency of the real comparison, and CSDB forbids any later
/// instruction to consume a predicted value or predicted flags of it. A
/// mispredicted check therefore yields 0 (unmapped in the kernel's map)
/// rather than an address outside the region: the Arm pattern against
/// bounds-check bypass (Spectre v1), without the cost of `DSB; ISB`.
#[inline(always)]
pub fn clamp_to_region(va: usize, len: usize, lo: usize, size: usize, base: usize) -> usize {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    {
        arch::clamp_to_region(va, len, lo, size, base)
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    {
        // `off` wraps to at least 2^64 - lo > size when va < lo.
        let off = va.wrapping_sub(lo);
        if off <= size && len <= size - off {
            base + off
        } else {
            0
        }
    }
}

/// Exit status when the supervisor itself faults.
pub const EXIT_SUPERVISOR_FAULT: u32 = 100;
/// Exit status when the kernel itself takes an exception.
pub const EXIT_KERNEL_FAULT: u32 = 101;
/// Exit status when the generated configuration does not fit the kernel.
pub const EXIT_BAD_CONFIG: u32 = 102;
/// Exit status for an SError no task can be charged with (docs/kernel.md).
pub const EXIT_SERROR: u32 = 103;

/// Architecture facts the portable core needs.
pub mod arch_consts {
    /// SPSR for entering a task: EL0t, interrupts unmasked.
    pub const PSTATE_EL0: u64 = 0;
}

/// Writes `bytes` to the console, for the reporting helpers below. Fault
/// reporting is not a fast path, and it is kept small: `black_box` keeps
/// the compiler (opt-level 3, and LTO sees the one `Platform` of the
/// image) from unrolling the UART's byte loop over each constant string,
/// which cost 16 bytes of text per character printed.
#[inline(never)]
pub fn say(p: &mut dyn Platform, bytes: &[u8]) {
    p.console(core::hint::black_box(bytes));
}

/// Writes `n` in hex to the console.
pub fn print_hex(p: &mut dyn Platform, n: u64) {
    let mut buf = [0u8; 18];
    buf[0] = b'0';
    buf[1] = b'x';
    // An opaque trip count: not unrolled (see `say`).
    for i in 0..core::hint::black_box(16) {
        let d = ((n >> ((15 - i) * 4)) & 0xf) as u8;
        buf[2 + i] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
    }
    say(p, &buf);
}

/// Writes `n` in decimal to the console.
pub fn print_dec(p: &mut dyn Platform, mut n: u64) {
    let mut buf = [0u8; 20];
    // An opaque start: the loop is not unrolled (see `say`).
    let mut i = core::hint::black_box(buf.len());
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    say(p, &buf[i..]);
}

/// Reports a task fault on the console.
pub fn print_fault(p: &mut dyn Platform, name: &str, kind: FaultKind, detail: usize) {
    say(p, b"kern: task ");
    say(p, name.as_bytes());
    say(p, b" faulted: ");
    say(p, fault_name(kind).as_bytes());
    say(p, b" ");
    print_hex(p, detail as u64);
    say(p, b"\n");
}

/// Bytes per line of a printed trace ring.
pub const TRACE_LINE_BYTES: usize = 48;

/// Prints a task's trace ring (its raw `TRACE_RING` bytes,
/// docs/tracing.md) for `cargo xtask dump` to decode:
///
/// ```text
/// kern: trace <task> begin <size>
/// kern: trace <task> <offset> <hex bytes, up to 48>
/// kern: trace <task> end
/// ```
///
/// Offsets are hex; a line whose bytes are all zero (slots never written)
/// is left out, and the reader zero-fills it. Plain bytes, no decoding in
/// the kernel: the event names are the task's, not the kernel's.
// Kept small rather than fast, like the helpers above (`say`).
#[inline(never)]
pub fn print_trace_ring(p: &mut dyn Platform, name: &str, ring: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let head = |p: &mut dyn Platform| {
        say(p, b"kern: trace ");
        say(p, name.as_bytes());
        say(p, b" ");
    };
    head(p);
    say(p, b"begin ");
    print_dec(p, ring.len() as u64);
    say(p, b"\n");
    let mut off = 0;
    for line in ring.chunks(TRACE_LINE_BYTES) {
        if line.iter().any(|&b| b != 0) {
            head(p);
            for k in (0..core::hint::black_box(4)).rev() {
                say(p, &[HEX[(off >> (4 * k)) & 0xf]]);
            }
            say(p, b" ");
            for &b in line {
                say(p, &[HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
            }
            say(p, b"\n");
        }
        off += line.len();
    }
    head(p);
    say(p, b"end\n");
}

/// The kernel address of a task's trace ring: `[va, va + size)` must lie in
/// one of the task's kernel-owned memory regions (its data region, by the
/// build's check); `None` otherwise. Reads only the static task table.
pub fn trace_ring_pa(desc: &config::TaskDesc, ring: &config::TraceRing) -> Option<usize> {
    let end = ring.va.checked_add(ring.size)?;
    desc.regions.iter().find_map(|r| {
        let static_mem = matches!(r.phys, config::PhysSource::Static(_));
        (static_mem && ring.va >= r.va && end <= r.va.checked_add(r.size)?)
            .then(|| task::region_pa(r) + (ring.va - r.va))
    })
}

pub fn fault_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::None => "none",
        FaultKind::MemoryAccess => "memory access",
        FaultKind::InstructionAccess => "instruction access",
        FaultKind::IllegalInstruction => "illegal instruction",
        FaultKind::Panic => "panic",
        FaultKind::BadSyscallArgs => "bad syscall arguments",
        FaultKind::BadSyscall => "bad syscall number",
        FaultKind::SlotViolation => "send outside task-slots",
        FaultKind::FromServer => "refused by server (reply-fault)",
        FaultKind::NotPermitted => "capability not granted",
        FaultKind::BadLease => "bad lease",
        FaultKind::Alignment => "alignment",
        FaultKind::SError => "SError (asynchronous abort)",
    }
}

#[cfg(test)]
mod tests {
    use super::clamp_to_region;

    /// The obvious, branchy form of the check `clamp_to_region` makes.
    fn reference(va: usize, len: usize, lo: usize, size: usize, base: usize) -> usize {
        match va.checked_add(len) {
            Some(end) if va >= lo && end <= lo + size => base + (va - lo),
            _ => 0,
        }
    }

    /// A console that keeps what is written.
    struct Console(Vec<u8>);

    impl crate::syscalls::Platform for Console {
        fn console(&mut self, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
        }
        fn irq_enable(&mut self, _: u32, _: bool) {}
        fn now_ms(&self) -> u64 {
            0
        }
        fn set_deadline(&mut self, _: Option<u64>) {}
        fn shutdown(&mut self, status: u32) -> ! {
            panic!("shutdown {status}")
        }
        fn reset_task_memory(&mut self, _: &crate::task::Task) {}
    }

    #[test]
    fn kern_trace_ring_printed_as_hex_lines_without_zero_lines() {
        let mut ring = [0u8; 120];
        ring[0] = 0x01;
        ring[11] = 0xab;
        // Bytes 48..96 stay zero: that line is left out.
        ring[119] = 0xff;
        let mut c = Console(Vec::new());
        super::print_trace_ring(&mut c, "t", &ring);
        let text = String::from_utf8(c.0).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "kern: trace t begin 120");
        let want0 = format!(
            "kern: trace t 0000 01{}ab{}",
            "00".repeat(10),
            "00".repeat(36)
        );
        assert_eq!(lines[1], want0);
        let want2 = format!("kern: trace t 0060 {}ff", "00".repeat(23));
        assert_eq!(lines[2], want2);
        assert_eq!(lines[3], "kern: trace t end");
    }

    #[test]
    fn kern_trace_ring_pa_only_inside_kernel_owned_memory() {
        use crate::config::{PhysSource, RegionDesc, StaticPtr, TaskDesc, TraceRing};
        static DATA: [u8; 0x2000] = [0; 0x2000];
        let regions: &'static [RegionDesc] = Box::leak(Box::new([
            RegionDesc {
                name: "mmio",
                va: 0x10_0000,
                size: 0x1000,
                attributes: abi::REGION_DEVICE,
                phys: PhysSource::Fixed(0x900_0000),
            },
            RegionDesc {
                name: "data",
                va: 0x20_0000,
                size: 0x2000,
                attributes: abi::REGION_READ | abi::REGION_WRITE,
                phys: PhysSource::Static(StaticPtr(DATA.as_ptr())),
            },
        ]));
        let desc = TaskDesc {
            name: "t",
            priority: 1,
            entry: 0,
            stack_top: 0,
            task_slots: &[],
            post_slots: &[],
            reg_windows: &[],
            regions,
            capabilities: 0,
            start: true,
            vm_guest: None,
        };
        let ring = |va, size| TraceRing { va, size };
        let base = DATA.as_ptr() as usize;
        assert_eq!(
            super::trace_ring_pa(&desc, &ring(0x20_0100, 768)),
            Some(base + 0x100)
        );
        assert_eq!(
            super::trace_ring_pa(&desc, &ring(0x20_1d00, 768)),
            Some(base + 0x1d00)
        );
        // One byte past the region, MMIO, nowhere, or wrapping: refused.
        assert_eq!(super::trace_ring_pa(&desc, &ring(0x20_1d01, 768)), None);
        assert_eq!(super::trace_ring_pa(&desc, &ring(0x10_0000, 16)), None);
        assert_eq!(super::trace_ring_pa(&desc, &ring(0x30_0000, 16)), None);
        assert_eq!(super::trace_ring_pa(&desc, &ring(usize::MAX, 2)), None);
    }

    #[test]
    fn kern_clamp_to_region_matches_range_check() {
        let (lo, size, base) = (0x20_0010_0000usize, 0x1000usize, 0x4100_0000usize);
        let vas = [
            0,
            1,
            lo - 1,
            lo,
            lo + 1,
            lo + size - 8,
            lo + size - 1,
            lo + size,
            lo + size + 1,
            usize::MAX - 7,
            usize::MAX,
        ];
        let lens = [
            1,
            7,
            8,
            size - 1,
            size,
            size + 1,
            usize::MAX - lo,
            usize::MAX,
        ];
        for &va in &vas {
            for &len in &lens {
                assert_eq!(
                    clamp_to_region(va, len, lo, size, base),
                    reference(va, len, lo, size, base),
                    "va {va:#x} len {len:#x}"
                );
            }
        }
        // In range: the kernel address; one byte out at either end: 0.
        assert_eq!(clamp_to_region(lo + 16, 8, lo, size, base), base + 16);
        assert_eq!(clamp_to_region(lo + size - 8, 9, lo, size, base), 0);
        assert_eq!(clamp_to_region(lo - 1, 2, lo, size, base), 0);
        // A length that wraps the address space is refused.
        assert_eq!(clamp_to_region(lo + 8, usize::MAX, lo, size, base), 0);
    }
}
