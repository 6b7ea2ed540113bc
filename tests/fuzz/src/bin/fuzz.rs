//! `cargo xtask fuzz <target> --seconds N [--seed S]` runs this.
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") || args.is_empty() {
        for t in fuzz::TARGETS {
            println!("{}", t.name);
        }
        return;
    }
    let Some(target) = fuzz::target(&args[0]) else {
        eprintln!(
            "fuzz: unknown target {:?}; `cargo xtask fuzz --list` lists them",
            args[0]
        );
        std::process::exit(2);
    };
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
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
