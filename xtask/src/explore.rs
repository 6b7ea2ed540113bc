//! `cargo xtask explore`: schedule exploration of the host harness
//! (docs/exploration.md). The search itself lives in the harness
//! (`harness::explore`, binary `explore`); this runs it in the `fuzz`
//! profile — optimised, and panics unwind, which the harness needs to
//! retire the coroutines of killed tasks — and runs the mutant tests.

use crate::ws::Workspace;

/// What to explore.
pub struct Request {
    pub target: Option<String>,
    pub list: bool,
    pub preemptions: Option<u32>,
    pub depth: Option<usize>,
    pub max: Option<u64>,
    pub jitter: bool,
    pub random: Option<u64>,
    pub seed: u64,
    pub seconds: Option<u64>,
    pub replay: Option<String>,
    pub mutants: bool,
}

/// The explorer binary's arguments for `r` (`out` is target/explore).
pub fn args(r: &Request, out: &str) -> Vec<String> {
    let mut a = Vec::new();
    if r.list {
        a.push("--list".into());
        return a;
    }
    if let Some(s) = &r.replay {
        a.extend(["--replay".into(), s.clone()]);
        return a;
    }
    if let Some(t) = &r.target {
        a.push(t.clone());
    }
    if let Some(n) = r.random {
        a.extend([
            "--random".into(),
            n.to_string(),
            "--seed".into(),
            r.seed.to_string(),
        ]);
        if let Some(s) = r.seconds {
            a.extend(["--seconds".into(), s.to_string()]);
        }
    } else {
        if let Some(k) = r.preemptions {
            a.extend(["--preemptions".into(), k.to_string()]);
        }
        if let Some(d) = r.depth {
            a.extend(["--depth".into(), d.to_string()]);
        }
        if let Some(m) = r.max {
            a.extend(["--max".into(), m.to_string()]);
        }
        if r.jitter {
            a.push("--jitter".into());
        }
    }
    a.extend(["--out".into(), out.into()]);
    a
}

/// Runs the request; true when nothing broke (for `--mutants`: when the
/// explorer caught every mutant).
pub fn run(ws: &Workspace, r: &Request) -> Result<bool, String> {
    if r.mutants {
        // Each mutant is a cargo feature of the harness (task code under
        // `cfg(feature)`), so it is its own build of the test.
        let mut ok = true;
        for &(f, what) in crate::mutants::EXPLORE_MUTANTS {
            println!("explore: mutant {f} ({what})");
            let status = ws
                .cargo()
                .args([
                    "test",
                    "-p",
                    "harness",
                    "--features",
                    f,
                    "--test",
                    "harness_explore_mutants",
                    "--",
                    "--nocapture",
                ])
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            ok &= status.success();
        }
        return Ok(ok);
    }
    let out = ws.root.join("target").join("explore");
    let status = ws
        .cargo()
        .args([
            "run",
            "--quiet",
            "--profile",
            "fuzz",
            "-p",
            "harness",
            "--bin",
            "explore",
            "--",
        ])
        .args(args(r, &out.display().to_string()))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    Ok(status.success())
}
