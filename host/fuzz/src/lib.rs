//! A bounded, seeded fuzzer for the servers' generated message decoding.
//!
//! Each target is an interface's `dispatch_decode`: the pure function every
//! server runs on each message before any of its own code (operation number,
//! argument bytes, reply capacity, lease descriptions). It must never panic
//! and must either decode or say which reply-fault the sender gets. Inputs
//! are random, or mutations of inputs that decoded (so the search reaches
//! past the length checks into the field decoders). Not coverage-guided —
//! no nightly toolchain needed — but seeded and reproducible: a failure
//! prints the seed and the input.
//!
//! The `kernel` target ([`kernel`]) is different: random system calls from
//! several tasks against the kernel's portable core.

pub mod kernel;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};
use userlib::LeaseInfo;

/// A fuzz target: name and the decode function, reduced to accepted or not.
pub struct Target {
    pub name: &'static str,
    pub decode: fn(u32, &[u8], usize, &[LeaseInfo]) -> bool,
    /// Operation numbers to try (a few past the last to hit "unknown").
    pub ops: u32,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "iommu-server",
        decode: |op, b, cap, l| iommu_server_api::dispatch_decode(op, b, cap, l).is_ok(),
        ops: 24,
    },
    Target {
        name: "prq-server",
        decode: |op, b, cap, l| prq_server_api::dispatch_decode(op, b, cap, l).is_ok(),
        ops: 24,
    },
    Target {
        name: "pasid-alloc",
        decode: |op, b, cap, l| pasid_alloc_api::dispatch_decode(op, b, cap, l).is_ok(),
        ops: 24,
    },
    Target {
        name: "vmm-frontend",
        decode: |op, b, cap, l| vmm_frontend_api::dispatch_decode(op, b, cap, l).is_ok(),
        ops: 24,
    },
];

/// The name of the system-call fuzzer over the kernel's core ([`kernel`]).
pub const KERNEL_TARGET: &str = "kernel";
/// The kernel's IPC fast paths against its general paths
/// (`kernel::differential`): seeds in turn until the time is up.
pub const KERNEL_FAST_PATHS_TARGET: &str = "kernel-fast-paths";

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// xorshift64*: small, seedable, good enough to spread inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// One generated input.
#[derive(Clone, Debug)]
pub struct Input {
    pub op: u32,
    pub bytes: Vec<u8>,
    pub reply_capacity: usize,
    pub leases: Vec<(u32, usize)>,
}

/// Outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub runs: u64,
    pub accepted: u64,
    /// The input that panicked, if any.
    pub crash: Option<Input>,
}

fn random_input(r: &mut Rng, ops: u32, corpus: &[Input]) -> Input {
    // Half the time mutate something that decoded.
    if !corpus.is_empty() && r.below(2) == 0 {
        let mut i = corpus[r.below(corpus.len() as u64) as usize].clone();
        match r.below(5) {
            0 if !i.bytes.is_empty() => {
                let k = r.below(i.bytes.len() as u64) as usize;
                i.bytes[k] ^= 1 << r.below(8);
            }
            1 if !i.bytes.is_empty() => {
                let k = r.below(i.bytes.len() as u64) as usize;
                i.bytes[k] = r.next_u64() as u8;
            }
            2 => {
                let n = r.below(i.bytes.len() as u64 + 1) as usize;
                i.bytes.truncate(n);
            }
            3 => i.bytes.push(r.next_u64() as u8),
            _ => {
                i.reply_capacity = r.below(1100) as usize;
                if let Some(l) = i.leases.first_mut() {
                    l.0 = r.below(4) as u32;
                    l.1 = r.below(1 << 16) as usize;
                }
            }
        }
        return i;
    }
    let len = match r.below(4) {
        0 => r.below(8),
        1 => r.below(64),
        2 => r.below(300),
        _ => r.below(1100),
    } as usize;
    let bytes = (0..len).map(|_| r.next_u64() as u8).collect();
    let nleases = r.below(4) as usize;
    Input {
        op: r.below(ops as u64 + 4) as u32,
        bytes,
        reply_capacity: if r.below(4) == 0 {
            r.below(64) as usize
        } else {
            1024
        },
        leases: (0..nleases)
            .map(|_| (r.below(4) as u32, r.below(1 << 14) as usize))
            .collect(),
    }
}

/// Runs `target` for at most `runs` inputs or `time`, whichever ends first.
pub fn fuzz(target: &Target, seed: u64, runs: u64, time: Duration) -> Report {
    let mut r = Rng::new(seed);
    let mut corpus: Vec<Input> = Vec::new();
    let mut rep = Report::default();
    let start = Instant::now();
    while rep.runs < runs && start.elapsed() < time {
        let input = random_input(&mut r, target.ops, &corpus);
        let leases: Vec<LeaseInfo> = input
            .leases
            .iter()
            .map(|&(attributes, len)| LeaseInfo { attributes, len })
            .collect();
        let decode = target.decode;
        let res = catch_unwind(AssertUnwindSafe(|| {
            decode(input.op, &input.bytes, input.reply_capacity, &leases)
        }));
        rep.runs += 1;
        match res {
            Ok(true) => {
                rep.accepted += 1;
                if corpus.len() < 256 {
                    corpus.push(input);
                } else {
                    let k = r.below(256) as usize;
                    corpus[k] = input;
                }
            }
            Ok(false) => {}
            Err(_) => {
                rep.crash = Some(input);
                break;
            }
        }
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short, deterministic pass over every target in the normal test run
    /// (the long runs are `cargo xtask fuzz`).
    #[test]
    fn fuzz_smoke_every_dispatch_never_panics() {
        for t in TARGETS {
            let rep = fuzz(t, 7, 20_000, Duration::from_secs(20));
            assert!(
                rep.crash.is_none(),
                "{}: dispatch_decode panicked on {:?}",
                t.name,
                rep.crash
            );
            assert!(
                rep.accepted > 0,
                "{}: no generated input ever decoded: the fuzzer is not reaching the decoders",
                t.name
            );
        }
    }
}
