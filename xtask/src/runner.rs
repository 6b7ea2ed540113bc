//! `test`: host tests (libtest, every workspace library) and QEMU image tests
//! (`qemu/apps/*.toml`) in one run, one filter, one closing line
//! `N passed, M failed`.
//!
//! A QEMU case passes iff a console line says `TEST <case> ok` and none says
//! `TEST <case> FAIL`. A case never reported fails; if the image did not exit
//! 0 (or timed out), the reason says so.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::config::App;
use crate::dist::{dist, load_app};
use crate::prereq;
use crate::qemu::{self, Outcome};
use crate::ws::Workspace;

/// Per image.
pub const QEMU_TIMEOUT: Duration = Duration::from_secs(60);
/// Console lines shown for a failing image.
const TAIL: usize = 40;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.passed += o.passed;
        self.failed += o.failed;
    }
}

/// The QEMU name of a case, as listed and as matched by the filter.
pub fn qemu_name(case: &str) -> String {
    format!("qemu::{case}")
}

fn selected(filter: Option<&str>, name: &str) -> bool {
    filter.is_none_or(|f| name.contains(f))
}

/// Sums libtest's `test result: ok. 3 passed; 0 failed; …` lines.
pub fn parse_result_line(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut c = Counts::default();
    for part in rest.split([';', '.']) {
        let mut w = part.split_whitespace();
        if let (Some(n), Some(what)) = (w.next(), w.next()) {
            match (n.parse::<usize>(), what) {
                (Ok(n), "passed") => c.passed = n,
                (Ok(n), "failed") => c.failed = n,
                _ => {}
            }
        }
    }
    Some(c)
}

fn host_cargo_args(packages: &[String]) -> Vec<String> {
    // Library unit tests and integration tests. Binaries with `test =
    // false` (the kernel and the tasks: target-only `no_main`) are left out
    // by `--tests`. (`--test '*'` would be stricter but is an error when no
    // selected package has an integration test.)
    let mut args: Vec<String> = ["test", "--lib", "--tests", "--no-fail-fast"]
        .map(String::from)
        .to_vec();
    for p in packages {
        args.push("-p".into());
        args.push(p.clone());
    }
    args
}

fn host_list(ws: &Workspace, filter: Option<&str>) -> Result<Vec<String>, String> {
    let packages = ws.host_test_packages()?;
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = ws.cargo();
    cmd.args(host_cargo_args(&packages))
        .args(["--", "--list", "--format", "terse"]);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo test --list failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

fn host_run(ws: &Workspace, filter: Option<&str>) -> Result<Counts, String> {
    let packages = ws.host_test_packages()?;
    if packages.is_empty() {
        println!("host: no workspace library to test");
        return Ok(Counts::default());
    }
    println!("host: cargo test -p {}", packages.join(" -p "));
    let mut cmd = ws.cargo();
    cmd.args(host_cargo_args(&packages)).stdout(Stdio::piped());
    if let Some(f) = filter {
        cmd.args(["--", f]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let mut counts = Counts::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            println!("{line}");
            if let Some(c) = parse_result_line(&line) {
                counts += c;
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo test: {e}"))?;
    if !status.success() && counts.failed == 0 {
        // It failed before any test could: a build error, counted as one.
        println!("host: cargo test failed ({status}) before reporting a failed test");
        counts.failed += 1;
    }
    Ok(counts)
}

/// A test app file and its validated contents (or why they are not valid).
type TestApp = (PathBuf, Result<App, String>);

/// Every test app.
fn test_apps(ws: &Workspace) -> Result<Vec<TestApp>, String> {
    Ok(ws
        .test_apps()?
        .into_iter()
        .map(|p| {
            let app = load_app(ws, &p);
            (p, app)
        })
        .collect())
}

/// Judges one image's console: (case, Ok(()) or Err(reason)).
/// `live`: the trace rings read from the running image (`dump_live_*`
/// cases), if it was read.
pub fn judge(
    cases: &[String],
    console: &[String],
    outcome: Outcome,
    live: Option<&Result<Vec<crate::dump::Dump>, String>>,
) -> Vec<(String, Result<(), String>)> {
    let mut seen: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for line in console {
        for (case, ok) in qemu::test_markers(line) {
            let e = seen.entry(case).or_default();
            if ok {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
    }
    cases
        .iter()
        .map(|c| {
            // A dump case is judged from the console by the runner: the
            // task that printed its ring is dead.
            if let Some(r) = crate::dump::check_case(c, console, live) {
                return (c.clone(), r);
            }
            let r = match seen.get(c.as_str()) {
                Some((_, true)) => Err("reported FAIL".to_string()),
                Some((true, false)) => Ok(()),
                _ if outcome == Outcome::Exited(0) => Err("not reported".to_string()),
                _ => Err(format!("not reported; image {outcome}")),
            };
            (c.clone(), r)
        })
        .collect()
}

fn qemu_run(ws: &Workspace, filter: Option<&str>) -> Result<Counts, String> {
    let mut counts = Counts::default();
    let mut ready: BTreeMap<(String, String), Result<(), String>> = BTreeMap::new();
    for (path, app) in test_apps(ws)? {
        let shown = ws.show(&path);
        let app = match app {
            Ok(a) => a,
            Err(e) => {
                println!("qemu {shown} ... FAILED ({e})");
                counts.failed += 1;
                continue;
            }
        };
        let cases: Vec<String> = app
            .cases
            .iter()
            .filter(|c| selected(filter, &qemu_name(c)))
            .cloned()
            .collect();
        if cases.is_empty() {
            continue;
        }
        let fail_all = |counts: &mut Counts, why: &str| {
            for c in &cases {
                println!("qemu {c} ... FAILED ({why})");
                counts.failed += 1;
            }
        };
        let q = match app.board.qemu() {
            Ok(q) => q,
            Err(e) => {
                println!("qemu: {shown}: {e}");
                fail_all(&mut counts, "not a QEMU board");
                continue;
            }
        };
        let prereq = ready
            .entry((q.binary.clone(), q.min_version.clone()))
            .or_insert_with(|| prereq::ensure_qemu(q));
        if let Err(e) = prereq {
            println!("qemu: {e}");
            fail_all(&mut counts, "QEMU unavailable");
            continue;
        }
        println!("qemu: {shown}: building image {:?}", app.name);
        let d = match dist(ws, &path) {
            Ok(d) => d,
            Err(e) => {
                println!("qemu: {shown}: {e}");
                fail_all(&mut counts, "dist failed");
                continue;
            }
        };
        // An image with a `dump_live_*` case runs with QEMU's monitor on a
        // socket; its rings are read when a task says `live: ready`
        // (whatever the filter selected: the image waits for that read).
        let live_case = app.cases.iter().any(|c| c.starts_with("dump_live_"));
        let socket = d.dir.join("monitor.sock");
        let _ = std::fs::remove_file(&socket);
        let monitor = format!("unix:{},server=on,wait=off", socket.display());
        let extra: Vec<&str> = if live_case {
            vec!["-monitor", &monitor]
        } else {
            vec![]
        };
        let cmd = if app.boot_flat {
            qemu::command_flat(
                q,
                &d.image_bin,
                d.load_address,
                d.entry,
                qemu::ICOUNT_RUN,
                &extra,
            )
        } else {
            qemu::command(q, &d.image, qemu::ICOUNT_RUN, &extra)
        };
        println!("qemu: {shown}: {}", qemu::show(&cmd));
        let mut live: Option<Result<Vec<crate::dump::Dump>, String>> = None;
        let mut faults = runner_fault_watch();
        let mut watch = |line: &str| {
            if live_case && live.is_none() && line.ends_with(crate::dump::LIVE_READY) {
                live = Some(
                    crate::dump::live_rings(&d)
                        .and_then(|rings| crate::dump::read_live(&socket, &rings, &d.dir)),
                );
                return Some("trace rings read from the running image: stopping it".into());
            }
            faults(line)
        };
        let run = match qemu::run_watch(cmd, Some(QEMU_TIMEOUT), false, &mut watch) {
            Ok(r) => r,
            Err(e) => {
                println!("qemu: {shown}: {e}");
                fail_all(&mut counts, "QEMU did not start");
                continue;
            }
        };
        let verdicts = judge(&cases, &run.console, run.outcome, live.as_ref());
        let mut any_failed = false;
        for (case, r) in &verdicts {
            match r {
                Ok(()) => {
                    println!("qemu {case} ... ok");
                    counts.passed += 1;
                }
                Err(why) => {
                    println!("qemu {case} ... FAILED ({why})");
                    counts.failed += 1;
                    any_failed = true;
                }
            }
        }
        if run.outcome != Outcome::Exited(0) {
            println!("qemu: {shown}: image {}", run.outcome);
        }
        if any_failed {
            println!("---- console of {shown} (last {TAIL} lines) ----");
            for l in run.tail(TAIL) {
                println!("{l}");
            }
            println!("----");
        }
    }
    Ok(counts)
}

/// Stops an image as soon as a task that has reported test cases faults:
/// the supervisor would restart it and it would run its cases again until
/// the timeout. (Other tasks fault on purpose in the isolation and restart
/// tests; those are fine.)
pub fn runner_fault_watch() -> impl FnMut(&str) -> Option<String> {
    let mut reporters: Vec<String> = Vec::new();
    move |line: &str| {
        if let Some(rest) = line.strip_prefix('[') {
            if let Some((name, text)) = rest.split_once("] ") {
                if text.starts_with("TEST ") && !reporters.iter().any(|r| r == name) {
                    reporters.push(name.to_string());
                }
            }
        }
        let rest = line.strip_prefix("kern: task ")?;
        let (name, _) = rest.split_once(" faulted:")?;
        reporters
            .iter()
            .any(|r| r == name)
            .then(|| format!("{name} reported test cases and then faulted: stopping the image"))
    }
}

/// `cargo xtask test [FILTER] [--list]`. Returns whether everything passed.
pub fn test(ws: &Workspace, filter: Option<&str>, list: bool) -> Result<bool, String> {
    if list {
        for name in host_list(ws, filter)? {
            println!("{name}: test");
        }
        for name in crate::boards::list(ws, filter)? {
            println!("{name}: test");
        }
        for (path, app) in test_apps(ws)? {
            match app {
                Ok(app) => {
                    for c in &app.cases {
                        let name = qemu_name(c);
                        if selected(filter, &name) {
                            println!("{name}: test");
                        }
                    }
                }
                Err(e) => eprintln!("{}: {e}", ws.show(&path)),
            }
        }
        return Ok(true);
    }
    ws.ensure_target()?;
    let mut counts = host_run(ws, filter)?;
    // Every board file builds an image (`board::<name>`).
    counts += crate::boards::run(ws, filter)?;
    counts += qemu_run(ws, filter)?;
    println!("{} passed, {} failed", counts.passed, counts.failed);
    Ok(counts.failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summaries() {
        assert_eq!(
            parse_result_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"),
            Some(Counts { passed: 12, failed: 0 })
        );
        assert_eq!(
            parse_result_line(
                "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some(Counts {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(parse_result_line("test foo ... ok"), None);
    }

    #[test]
    fn stops_when_a_reporting_task_faults() {
        let mut w = runner_fault_watch();
        assert_eq!(w("kern: task rogue faulted: memory access 0x0"), None);
        assert_eq!(w("[runner] TEST a ok"), None);
        assert_eq!(w("kern: task rogue faulted: panic 0x0"), None);
        assert_eq!(
            w("kern: task runner faulted: memory access 0x0"),
            Some("runner reported test cases and then faulted: stopping the image".into())
        );
    }

    #[test]
    fn judges_cases() {
        let cases: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let console: Vec<String> = ["[t] TEST a ok", "TEST b ok", "TEST b FAIL", "noise TEST c"]
            .map(String::from)
            .to_vec();
        let v = judge(&cases, &console, Outcome::Exited(0), None);
        assert_eq!(v[0].1, Ok(()));
        assert_eq!(v[1].1, Err("reported FAIL".into()));
        assert_eq!(v[2].1, Err("not reported".into()));
        assert_eq!(v[3].1, Err("not reported".into()));
        let v = judge(
            &cases,
            &console,
            Outcome::TimedOut(Duration::from_secs(60)),
            None,
        );
        assert_eq!(v[0].1, Ok(()));
        assert_eq!(
            v[3].1,
            Err("not reported; image timed out after 60 s".into())
        );
        let v = judge(&cases, &console, Outcome::Exited(1), None);
        assert_eq!(
            v[2].1,
            Err("not reported; image exited with status 1".into())
        );
    }

    #[test]
    fn filters_by_substring() {
        assert!(selected(None, "qemu::x"));
        assert!(selected(Some("ipc"), "qemu::ipc_ping"));
        assert!(selected(Some("qemu"), "qemu::ipc_ping"));
        assert!(!selected(Some("smmu"), "qemu::ipc_ping"));
    }
}
