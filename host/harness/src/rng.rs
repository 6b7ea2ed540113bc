//! The harness's only source of choice: SplitMix64 from the run's seed.
//!
//! Reproducibility is all that matters here (one seed = one interleaving on
//! every machine), so a tiny, fully specified generator beats a dependency.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0). The modulo bias is irrelevant
    /// for the tiny ranges the harness draws from.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_rng_is_reproducible() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::new(42);
        assert!(a.iter().all(|&x| x == r.next_u64()));
        let mut other = Rng::new(43);
        assert_ne!(a[0], other.next_u64());
        assert!((0..100).all(|_| r.below(3) < 3));
    }
}

/// What a choice point decides (for the replay string and for the
/// explorer's preemption bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChoiceKind {
    /// Which runnable task of the best priority runs next. Value 0 is the
    /// task that ran last, when it is a candidate (no preemption).
    Task,
    /// Whether a due timer fires now (0) or later (1).
    Timer,
    /// Whether a deliverable interrupt line is delivered now (0) or later (1).
    Irq,
    /// How far the virtual clock moves this step (0..=jitter ms).
    Jitter,
    /// Whether a floating injected action (a kill somewhere in a window)
    /// happens now (1) or not yet (0).
    Inject,
}

/// One decision taken during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Choice {
    pub kind: ChoiceKind,
    /// The alternatives there were (`value < range`, `range >= 2`).
    pub range: u32,
    pub value: u32,
    /// True when a non-zero value costs one unit of the explorer's
    /// preemption bound (a preemption, a delayed event, a jitter, an
    /// injection); false for a free choice (the last task blocked, so any
    /// equal-priority successor is a plain context switch).
    pub costs: bool,
}

/// The machine's one source of choice: a seed, or an explicit sequence
/// (a replay string or the explorer's prefix) continued with 0s, the
/// default that neither preempts nor delays. Every decision is recorded,
/// so a seeded run can be replayed from its recorded values alone.
#[derive(Clone, Debug)]
pub struct Chooser {
    rng: Option<Rng>,
    script: Vec<u32>,
    pos: usize,
    pub record: Vec<Choice>,
}

impl Chooser {
    pub fn seeded(seed: u64) -> Self {
        Chooser {
            rng: Some(Rng::new(seed)),
            script: Vec::new(),
            pos: 0,
            record: Vec::new(),
        }
    }

    pub fn scripted(script: Vec<u32>) -> Self {
        Chooser {
            rng: None,
            script,
            pos: 0,
            record: Vec::new(),
        }
    }

    /// A decision among `range` alternatives. `seeded` maps the seed's
    /// generator to a value (it is called even when `range` < 2 in seeded
    /// mode, so seeded runs draw exactly what they always drew). A range
    /// below 2 is no choice and is not recorded.
    pub fn pick(
        &mut self,
        kind: ChoiceKind,
        range: u32,
        costs: bool,
        seeded: impl FnOnce(&mut Rng) -> u32,
    ) -> u32 {
        let value = match &mut self.rng {
            Some(r) => seeded(r),
            None if range < 2 => 0,
            None => {
                let v = self.script.get(self.pos).copied().unwrap_or(0);
                self.pos += 1;
                // A replayed value out of range (a script for another
                // scenario) is clamped: the run stays defined.
                v.min(range - 1)
            }
        };
        if range >= 2 {
            self.record.push(Choice {
                kind,
                range,
                value,
                costs,
            });
        }
        value
    }
}

/// The one-line replay form of a choice sequence: values separated by
/// `.`, runs of zeros written `zN` (e.g. `1.z12.2`).
pub fn encode(values: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut zeros = 0usize;
    for &v in values {
        if v == 0 {
            zeros += 1;
            continue;
        }
        if zeros > 0 {
            out.push(if zeros == 1 {
                "0".into()
            } else {
                format!("z{zeros}")
            });
            zeros = 0;
        }
        out.push(v.to_string());
    }
    // Trailing zeros are the default: left out.
    if out.is_empty() {
        "-".into()
    } else {
        out.join(".")
    }
}

/// Parses [`encode`]'s form.
pub fn decode(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    if s == "-" || s.is_empty() {
        return Ok(out);
    }
    for part in s.split('.') {
        if let Some(n) = part.strip_prefix('z') {
            let n: usize = n.parse().map_err(|_| format!("bad run {part:?}"))?;
            out.extend(std::iter::repeat_n(0, n));
        } else {
            out.push(part.parse().map_err(|_| format!("bad choice {part:?}"))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod choice_tests {
    use super::*;

    #[test]
    fn harness_choice_encoding_round_trips() {
        for v in [vec![], vec![0, 0, 1], vec![3, 0, 0, 0, 2, 0, 1], vec![0]] {
            let s = encode(&v);
            let mut back = decode(&s).unwrap();
            let mut want = v.clone();
            while want.last() == Some(&0) {
                want.pop();
            }
            while back.last() == Some(&0) {
                back.pop();
            }
            assert_eq!(back, want, "{s}");
        }
        assert!(decode("x").is_err());
    }
}
