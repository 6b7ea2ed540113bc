//! `cargo xtask fuzz <target> --seconds N [--seed S]` runs this.
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") || args.is_empty() {
        println!("{}", fuzz::KERNEL_TARGET);
        println!("{}", fuzz::KERNEL_FAST_PATHS_TARGET);
        for t in fuzz::TARGETS {
            println!("{}", t.name);
        }
        return;
    }
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    if args[0] == fuzz::KERNEL_TARGET {
        kernel(seconds, seed);
        return;
    }
    if args[0] == fuzz::KERNEL_FAST_PATHS_TARGET {
        kernel_fast_paths(seconds, seed);
        return;
    }
    let Some(target) = fuzz::target(&args[0]) else {
        eprintln!(
            "fuzz: unknown target {:?}; `cargo xtask fuzz --list` lists them",
            args[0]
        );
        std::process::exit(2);
    };
    // Silence the default panic message: a panic is reported below with its input.
    std::panic::set_hook(Box::new(|_| {}));
    let rep = fuzz::fuzz(target, seed, u64::MAX, Duration::from_secs(seconds));
    println!(
        "fuzz {}: {} inputs in {} s, {} decoded, seed {}",
        target.name, rep.runs, seconds, rep.accepted, seed
    );
    if let Some(c) = rep.crash {
        println!(
            "PANIC on op {} reply_capacity {} leases {:?} bytes {:02x?}",
            c.op, c.reply_capacity, c.leases, c.bytes
        );
        std::process::exit(1);
    }
}

/// The system-call fuzzer over the kernel's portable core.
fn kernel(seconds: u64, seed: u64) {
    // Panics are reported with the failing machine and step below (the
    // kernel's shutdown also unwinds, by design).
    std::panic::set_hook(Box::new(|_| {}));
    let rep = fuzz::kernel::fuzz(seed, u64::MAX, Duration::from_secs(seconds));
    println!(
        "fuzz kernel: {} events ({} system calls) in {} s over {} machines ({} shut down, {} quiesced); {} task faults, {} restarts; seed {}",
        rep.events,
        rep.syscalls,
        seconds,
        rep.machines,
        rep.shutdowns,
        rep.quiesced,
        rep.faults,
        rep.restarts,
        seed
    );
    if let Some(f) = rep.failure {
        println!("FAILURE {f}");
        std::process::exit(1);
    }
}

/// The IPC fast paths against the general paths: one seeded machine run
/// twice per seed (`fuzz::kernel::differential`), seeds from `seed` on
/// until `seconds` have passed.
fn kernel_fast_paths(seconds: u64, seed: u64) {
    std::panic::set_hook(Box::new(|_| {}));
    let start = std::time::Instant::now();
    let (mut seeds, mut taken) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(seconds) {
        match fuzz::kernel::differential(seed + seeds, 4000) {
            Ok(n) => taken += n,
            Err(e) => {
                println!("FAILURE {e}");
                std::process::exit(1);
            }
        }
        seeds += 1;
    }
    println!(
        "fuzz kernel-fast-paths: {seeds} seeds of 4000 events from seed {seed} in {seconds} s, {taken} calls taken by a fast path, the two machines identical after every event"
    );
}
