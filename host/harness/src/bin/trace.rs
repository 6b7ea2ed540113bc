//! `trace <scenario> <out-dir> [--seed N]`: runs one of the harness's
//! scenarios and writes `<out-dir>/<scenario>.txt` and `<scenario>.svg`.
//! `trace --list` names the scenarios. Exit status 0 when the run ended as
//! the scenario expects, 1 when it did not (the files are written anyway:
//! they are how you see why), 2 on bad usage.

use harness::scenarios::{find, SCENARIOS};
use harness::Outcome;
use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: trace <scenario> <out-dir> [--seed N]   |   trace --list");
    eprintln!(
        "scenarios: {}",
        SCENARIOS
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        let width = SCENARIOS.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in SCENARIOS {
            println!("{:<width$} {}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    let mut seed = 1u64;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--seed" {
            match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => seed = v,
                None => return usage(),
            }
        } else {
            positional.push(a.clone());
        }
    }
    let [name, dir] = positional.as_slice() else {
        return usage();
    };
    let Some(scenario) = find(name) else {
        eprintln!("trace: no scenario {name:?}");
        return usage();
    };
    let report = (scenario.build)(seed).run();
    let dir = PathBuf::from(dir);
    let write = |ext: &str, body: String| -> Result<PathBuf, String> {
        let p = dir.join(format!("{name}.{ext}"));
        std::fs::write(&p, body)
            .map_err(|e| format!("trace: cannot write {}: {e}", p.display()))?;
        Ok(p)
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("trace: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let mut text = report.trace.text();
    text.push_str(&format!(
        "outcome: {:?} after {} steps, {} ms\n",
        report.outcome, report.steps, report.now_ms
    ));
    for (ext, body) in [("txt", text), ("svg", report.trace.svg())] {
        match write(ext, body) {
            Ok(p) => println!("wrote {}", p.display()),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    if report.outcome == Outcome::Shutdown(scenario.status) {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "trace: {name} ended with {:?}, expected Shutdown({})",
            report.outcome, scenario.status
        );
        ExitCode::from(1)
    }
}
