//! `bench`: boots every `qemu/apps/*.toml` with `[expect] bench = true` under
//! instruction counting, collects `BENCH <name> <value> <unit>` console lines,
//! adds the demo image's kernel `.text` and file sizes, prints them against
//! the goals and writes `target/bench/results.json`. With `--linux` it then
//! runs Linux's own SMMUv3 driver on the same QEMU (`linux_peer`) and adds
//! `linux_*` figures, `*_ratio` entries and a side-by-side table.
//!
//! Clock: `-icount shift=0,sleep=off` with `-cpu max` (CNTFRQ = 1 GHz) makes
//! one CNTVCT tick exactly one guest instruction, the same on every run — so
//! a benchmark reads the counter before and after and reports instructions.
//! Wall time is never used.

use std::fmt::Write as _;
use std::time::Duration;

use crate::dist::{dist, load_app};
use crate::linux_peer;
use crate::prereq;
use crate::qemu::{self, Outcome};
use crate::ws::{write_if_changed, Workspace};

/// Benchmarks run slower under `shift=0`; give them longer than tests.
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Goals: (name as reported, at most, unit). A benchmark image reports the
/// IPC cost as `BENCH ipc_one_way <n> instructions`. The iommu-server's
/// (client round trip, warm minimum) are Linux's SMMUv3 driver's own cost
/// for the same work on the same QEMU (issue 14; docs/iommu-server.md,
/// "Cost"): map 256 KiB with the IOMMU core, unmap 256 KiB with its one
/// range TLBI + SYNC, `arm_smmu_attach_dev`; and flat per page: 512 pages
/// cost at most 8.5 x 64 pages (the ratio is reported in hundredths).
pub const GOALS: [(&str, f64, &str); 14] = [
    // Issue 11 item 6: one-way send, and the call round trip (send +
    // reply_recv + return), every check kept (docs/kernel.md "Cost of IPC").
    ("ipc_one_way", 200.0, "instructions"),
    ("ipc_round_trip", 500.0, "instructions"),
    ("kernel_text", 65536.0, "bytes"),
    // The demo's flat image.bin (loadable bytes only).
    ("image_bin_size", 262144.0, "bytes"),
    ("smmu_map64_round_trip", 4556.0, "instructions"),
    ("smmu_unmap64_round_trip", 7098.0, "instructions"),
    ("smmu_attach_round_trip", 5786.0, "instructions"),
    ("smmu_map512_per_map64_x100", 850.0, "ratio"),
    ("smmu_unmap512_per_unmap64_x100", 850.0, "ratio"),
    // pasid-alloc (qemu/apps/bench-pasid.toml): its table's word, and the
    // work of each operation in the server (`pasid_server_op_<op>`).
    ("pasid_bytes_per_pasid", 8.0, "bytes"),
    // Flat: alloc / free / owner_of with 2^16 PASIDs held cost at most
    // 10 % more than with one (the worst of the three, in hundredths).
    // Before `pasid_server_op`, which would otherwise cover it.
    ("pasid_server_op_at_65536_per_at_1_x100", 110.0, "ratio"),
    ("pasid_server_op", 300.0, "instructions"),
    // Issue 7: IPC round trips per batch of up to 64 fault groups.
    ("prq_storm_round_trips_per_batch", 3.0, "round-trips"),
    // Issue 11 item 7 (qemu/apps/bench-prq-server.toml): the per-fault
    // cost from prq-server's intake to the PRI_RESP command written is
    // flat: with 1 / 8 / 64 VMs and 1 / 1 024 / 4 096 pending groups the
    // largest costs at most 1.2 x the smallest (in hundredths).
    ("prq_fault_path_max_per_min_x100", 120.0, "ratio"),
];

/// Goals that are floors: (name, at least, unit). The storm's batching
/// (issue 7, docs/faults.md "Figures"): each round trip carries at least
/// 16 groups.
pub const GOALS_MIN: [(&str, f64, &str); 1] = [("prq_storm_groups_per_round_trip", 16.0, "groups")];

/// With `--linux` (xtask/src/linux_peer.rs): (ratio name, project figure,
/// Linux figure). A ratio is project / Linux, both the warm minimum over 24
/// iterations on the same QEMU; the project's includes its IPC round trip,
/// Linux's is the whole VFIO ioctl (system call, VFIO bookkeeping, page
/// pinning, IOMMU core, SMMUv3 driver and io-pgtable).
pub const LINUX_PAIRS: [(&str, &str, &str); 5] = [
    ("map64_ratio", "smmu_map64_round_trip", "linux_map64_ioctl"),
    (
        "unmap64_ratio",
        "smmu_unmap64_round_trip",
        "linux_unmap64_ioctl",
    ),
    (
        "attach_ratio",
        "smmu_attach_round_trip",
        "linux_attach_ioctls",
    ),
    (
        "map512_ratio",
        "smmu_map512_round_trip",
        "linux_map512_ioctl",
    ),
    (
        "unmap512_ratio",
        "smmu_unmap512_round_trip",
        "linux_unmap512_ioctl",
    ),
];

/// With `--linux`, against Linux's SMMUv3 driver + io-pgtable + IOMMU core
/// alone (from the peer's profile boot: the same iteration's instructions
/// in those functions, VFIO's iova_to_phys walks excluded) — the
/// comparison issue 14's goals are about.
pub const LINUX_DRIVER_PAIRS: [(&str, &str, &str); 5] = [
    (
        "map64_driver_ratio",
        "smmu_map64_round_trip",
        "linux_map64_driver_core",
    ),
    (
        "unmap64_driver_ratio",
        "smmu_unmap64_round_trip",
        "linux_unmap64_driver_core",
    ),
    (
        "attach_driver_ratio",
        "smmu_attach_round_trip",
        "linux_attach_driver_core",
    ),
    (
        "map512_driver_ratio",
        "smmu_map512_round_trip",
        "linux_map512_driver_core",
    ),
    (
        "unmap512_driver_ratio",
        "smmu_unmap512_round_trip",
        "linux_unmap512_driver_core",
    ),
];

/// Goals of the `--linux` ratios: the project costs no more than Linux.
pub const LINUX_GOALS: [(&str, f64, &str); 10] = [
    ("map64_ratio", 1.0, "ratio"),
    ("unmap64_ratio", 1.0, "ratio"),
    ("attach_ratio", 1.0, "ratio"),
    ("map512_ratio", 1.0, "ratio"),
    ("unmap512_ratio", 1.0, "ratio"),
    ("map64_driver_ratio", 1.0, "ratio"),
    ("unmap64_driver_ratio", 1.0, "ratio"),
    ("attach_driver_ratio", 1.0, "ratio"),
    ("map512_driver_ratio", 1.0, "ratio"),
    ("unmap512_driver_ratio", 1.0, "ratio"),
];

/// Figures only the host harness can count (QEMU has no PRI): the storm
/// of `harness_prq_storm` (1 000 groups from 4 devices on the SMMUv3
/// model, real prq-server and iommu-server code), which prints `BENCH`
/// lines — worst over its 50 seeds.
const HARNESS_BENCHES: [(&str, &str, &str); 1] = [("harness", "harness_prq", "harness_prq_storm")];

#[derive(Debug, Clone)]
pub struct BenchResult {
    pub name: String,
    pub value: String,
    pub unit: String,
    /// The app file (or image) that reported it.
    pub source: String,
}

/// The goal a result is held to: the goal of the same name, or of a name
/// it extends (`ipc_one_way_send` is held to `ipc_one_way`'s).
fn goal_for(name: &str) -> Option<(f64, &'static str)> {
    let norm = name.replace('-', "_");
    GOALS
        .iter()
        .chain(LINUX_GOALS.iter())
        .find(|(g, _, _)| norm == *g || norm.strip_prefix(g).is_some_and(|r| r.starts_with('_')))
        .map(|&(_, v, u)| (v, u))
}

/// The floor a result is held to (names as in [`goal_for`]).
fn goal_min_for(name: &str) -> Option<f64> {
    let norm = name.replace('-', "_");
    GOALS_MIN
        .iter()
        .find(|(g, _, _)| norm == *g || norm.strip_prefix(g).is_some_and(|r| r.starts_with('_')))
        .map(|&(_, v, _)| v)
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Hand-written JSON: a flat list of records needs no serde_json.
pub fn to_json(results: &[BenchResult], failures: &[String]) -> String {
    let mut o = String::from("{\n  \"results\": [\n");
    for (i, r) in results.iter().enumerate() {
        let value = if r.value.parse::<f64>().is_ok() {
            r.value.clone()
        } else {
            json_str(&r.value)
        };
        let goal = match (goal_for(&r.name), goal_min_for(&r.name)) {
            (Some((g, _)), _) => {
                let met = r.value.parse::<f64>().is_ok_and(|v| v <= g);
                format!(", \"goal_max\": {g}, \"met\": {met}")
            }
            (None, Some(g)) => {
                let met = r.value.parse::<f64>().is_ok_and(|v| v >= g);
                format!(", \"goal_min\": {g}, \"met\": {met}")
            }
            (None, None) => String::new(),
        };
        let _ = writeln!(
            o,
            "    {{\"name\": {}, \"value\": {value}, \"unit\": {}, \"source\": {}{goal}}}{}",
            json_str(&r.name),
            json_str(&r.unit),
            json_str(&r.source),
            if i + 1 < results.len() { "," } else { "" }
        );
    }
    o.push_str("  ],\n  \"failures\": [");
    o.push_str(
        &failures
            .iter()
            .map(|f| json_str(f))
            .collect::<Vec<_>>()
            .join(", "),
    );
    o.push_str("]\n}\n");
    o
}

/// Returns whether every benchmark image ran to a clean exit.
pub fn bench(ws: &Workspace, linux: bool) -> Result<bool, String> {
    let started = std::time::Instant::now();
    let mut qemu_binary = None;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    // (app file, kernel .text) of the last benchmark image, in case the demo
    // image does not build.
    let mut bench_kernel: Option<(String, u64)> = None;

    for path in ws.test_apps()? {
        let shown = ws.show(&path);
        let app = match load_app(ws, &path) {
            Ok(a) => a,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        if !app.bench {
            continue;
        }
        let q = app.board.qemu()?;
        prereq::ensure_qemu(q)?;
        qemu_binary.get_or_insert_with(|| q.binary.clone());
        println!("bench: {shown}: building image {:?}", app.name);
        let d = match dist(ws, &path) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{shown}: {e}"));
                continue;
            }
        };
        bench_kernel = Some((shown.clone(), d.kernel_text_size));
        let cmd = qemu::command(q, &d.image, qemu::ICOUNT_BENCH, &[]);
        println!("bench: {shown}: {}", qemu::show(&cmd));
        let run = qemu::run(cmd, Some(BENCH_TIMEOUT), false)?;
        let before = results.len();
        for line in &run.console {
            if let Some((name, value, unit)) = qemu::bench_marker(line) {
                // The same benchmark with the SMMU tasks forced into their
                // non-coherent mode (qemu/apps/bench-smmu-noncoherent.toml):
                // its own names, no goal of its own.
                let name = if app.smmu_forced_non_coherent {
                    format!("noncoherent_{name}")
                } else {
                    name.to_string()
                };
                results.push(BenchResult {
                    name,
                    value: value.into(),
                    unit: unit.into(),
                    source: shown.clone(),
                });
            }
        }
        if run.outcome != Outcome::Exited(0) || results.len() == before {
            let why = if results.len() == before {
                format!("{shown}: reported no BENCH line; image {}", run.outcome)
            } else {
                format!("{shown}: image {}", run.outcome)
            };
            println!("bench: {why}");
            for l in run.tail(20) {
                println!("  {l}");
            }
            failures.push(why);
        }
    }

    for (pkg, test, name) in HARNESS_BENCHES {
        let source = format!("host/{pkg}/tests/{test}.rs ({name})");
        println!("bench: {source}");
        let out = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .current_dir(&ws.root)
            .args([
                "test", "-q", "-p", pkg, "--test", test, "--", "--exact", name,
            ])
            .args(["--nocapture"])
            .output()
            .map_err(|e| format!("cannot run cargo test: {e}"))?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let before = results.len();
        for line in text.lines() {
            if let Some((n, v, u)) = qemu::bench_marker(line) {
                results.push(BenchResult {
                    name: n.into(),
                    value: v.into(),
                    unit: u.into(),
                    source: source.clone(),
                });
            }
        }
        if !out.status.success() || results.len() == before {
            failures.push(format!("{source}: failed or reported no BENCH line"));
        }
    }

    // Sizes of the demo image.
    let demo = ws.root.join("app.toml");
    match dist(ws, &demo) {
        Ok(d) => {
            let src = format!("{} (kernel image)", ws.show(&demo));
            results.push(BenchResult {
                name: "kernel_text".into(),
                value: d.kernel_text_size.to_string(),
                unit: "bytes".into(),
                source: src.clone(),
            });
            results.push(BenchResult {
                name: "image_size".into(),
                value: d.image_size.to_string(),
                unit: "bytes".into(),
                source: src.clone(),
            });
            results.push(BenchResult {
                name: "image_bin_size".into(),
                value: d.image_bin_size.to_string(),
                unit: "bytes".into(),
                source: format!("{} (image.bin, the flat loadable image)", ws.show(&demo)),
            });
        }
        Err(e) => {
            println!("bench: app.toml: {e}");
            failures.push(format!("app.toml: {e}"));
            // The kernel's text barely depends on the table: report the
            // benchmark image's, saying so.
            if let Some((file, size)) = bench_kernel {
                results.push(BenchResult {
                    name: "kernel_text".into(),
                    value: size.to_string(),
                    unit: "bytes".into(),
                    source: format!("{file} (kernel image; app.toml did not build)"),
                });
            }
        }
    }

    let mut linux_time = None;
    if linux {
        let bin = qemu_binary.unwrap_or_else(|| "qemu-system-aarch64".into());
        match linux_peer::run(ws, &bin) {
            Ok(run) => {
                linux_time = Some((run.prepare, run.boot, run.profile));
                let source = format!(
                    "linux-peer (Debian {}, VFIO type1, qemu/linux-peer/init.c)",
                    linux_peer::KVER
                );
                for f in run.figures {
                    results.push(BenchResult {
                        name: f.name,
                        value: f.value.to_string(),
                        unit: "instructions".into(),
                        source: source.clone(),
                    });
                }
                let (ratios, missing) = linux_ratios(&results);
                results.extend(ratios);
                failures.extend(missing);
            }
            Err(e) => {
                println!("bench: linux peer: {e}");
                failures.push(format!("linux peer: {e}"));
            }
        }
    }

    println!();
    println!(
        "{:<34} {:>12} {:<14} {:>10}  status",
        "benchmark", "value", "unit", "goal ≤"
    );
    for r in &results {
        let (goal, status) = match (goal_for(&r.name), goal_min_for(&r.name)) {
            (Some((g, _)), _) => (
                format!("{g}"),
                if r.value.parse::<f64>().is_ok_and(|v| v <= g) {
                    "met"
                } else {
                    "MISSED"
                },
            ),
            (None, Some(g)) => (
                format!("≥ {g}"),
                if r.value.parse::<f64>().is_ok_and(|v| v >= g) {
                    "met"
                } else {
                    "MISSED"
                },
            ),
            (None, None) => ("-".into(), ""),
        };
        println!(
            "{:<34} {:>12} {:<14} {:>10}  {}",
            r.name, r.value, r.unit, goal, status
        );
    }
    let linux_goals: &[(&str, f64, &str)] = if linux { &LINUX_GOALS } else { &[] };
    for &(g, v, u) in GOALS.iter().chain(linux_goals) {
        // By name (a goal also covers the names that extend it): the
        // --linux ratios share one value and unit.
        let covers = |n: &str| {
            let n = n.replace('-', "_");
            n == g || n.strip_prefix(g).is_some_and(|r| r.starts_with('_'))
        };
        if !results.iter().any(|r| covers(&r.name)) {
            println!("{g:<34} {:>12} {u:<14} {v:>10}  not measured", "-");
        }
    }
    if linux {
        side_by_side(&results);
    }
    for f in &failures {
        println!("failed: {f}");
    }
    if let Some((prepare, boot, profile)) = linux_time {
        println!(
            "\nlinux peer: {:.1} s to prepare (tools, kernel, initramfs), {:.1} s to boot and measure, \
             {:.1} s to profile; whole bench {:.1} s",
            prepare.as_secs_f64(),
            boot.as_secs_f64(),
            profile.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }

    let out = ws.target.join("bench/results.json");
    write_if_changed(&out, to_json(&results, &failures).as_bytes())?;
    println!("\nwrote {}", out.display());
    Ok(failures.is_empty())
}

/// The `--linux` ratios (project / Linux) of [`LINUX_PAIRS`] and
/// [`LINUX_DRIVER_PAIRS`], and a failure for each pair not measured.
pub fn linux_ratios(results: &[BenchResult]) -> (Vec<BenchResult>, Vec<String>) {
    let num = |n: &str| {
        results
            .iter()
            .find(|r| r.name == n)
            .and_then(|r| r.value.parse::<f64>().ok())
    };
    let (mut ratios, mut missing) = (Vec::new(), Vec::new());
    for (ratio, ours, theirs) in LINUX_PAIRS.into_iter().chain(LINUX_DRIVER_PAIRS) {
        match (num(ours), num(theirs)) {
            (Some(a), Some(b)) if b > 0.0 => ratios.push(BenchResult {
                name: ratio.into(),
                value: format!("{:.3}", a / b),
                unit: "ratio".into(),
                source: format!("{ours} / {theirs}"),
            }),
            _ => missing.push(format!("{ratio}: {ours} or {theirs} not measured")),
        }
    }
    (ratios, missing)
}

/// The `--linux` table: both sides and the ratio per operation.
fn side_by_side(results: &[BenchResult]) {
    let get = |n: &str| {
        results
            .iter()
            .find(|r| r.name == n)
            .map_or("-".to_string(), |r| r.value.clone())
    };
    println!();
    println!(
        "{:<14} {:>8} {:>12} {:>7} {:>15} {:>7} {:>9}",
        "operation", "project", "Linux ioctl", "ratio", "Linux drv+core", "ratio", "drv only"
    );
    let ops = [
        "map 256 KiB",
        "unmap 256 KiB",
        "attach",
        "map 2 MiB",
        "unmap 2 MiB",
    ];
    for (i, op) in ops.iter().enumerate() {
        let (ratio, ours, theirs) = LINUX_PAIRS[i];
        let (dratio, _, dtheirs) = LINUX_DRIVER_PAIRS[i];
        let donly = dtheirs.replace("_driver_core", "_driver");
        println!(
            "{op:<14} {:>8} {:>12} {:>7} {:>15} {:>7} {:>9}",
            get(ours),
            get(theirs),
            get(ratio),
            get(dtheirs),
            get(dratio),
            get(&donly)
        );
    }
    println!(
        "project: the client's round trip, IPC included. Linux: Debian {} (iommu.strict=1):\n  \
         ioctl = the whole VFIO ioctl by CNTVCT (system call, VFIO, page pinning, IOMMU core,\n  \
         driver); drv+core = SMMUv3 driver + io-pgtable + IOMMU core instructions in the same\n  \
         operation (profile boot), VFIO's iova_to_phys walks excluded; drv only = without the\n  \
         core. attach = GROUP_SET_CONTAINER + SET_IOMMU. Minimum of 24 iterations (profile:\n  \
         the last, warm one).",
        linux_peer::KVER
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output() {
        let r = vec![
            BenchResult {
                name: "ipc_one_way".into(),
                value: "250".into(),
                unit: "instructions".into(),
                source: "qemu/apps/bench.toml".into(),
            },
            BenchResult {
                name: "weird".into(),
                value: "x\"y".into(),
                unit: "u".into(),
                source: "s".into(),
            },
        ];
        let j = to_json(&r, &["boom".into()]);
        assert!(j.contains("{\"name\": \"ipc_one_way\", \"value\": 250, \"unit\": \"instructions\", \"source\": \"qemu/apps/bench.toml\", \"goal_max\": 200, \"met\": false},"));
        assert!(j.contains("\"value\": \"x\\\"y\""));
        assert!(j.contains("\"failures\": [\"boom\"]"));
        assert_eq!(goal_for("ipc-one-way"), Some((200.0, "instructions")));
        assert_eq!(goal_for("ipc_one_way_send"), Some((200.0, "instructions")));
        assert_eq!(goal_for("ipc_one_wayward"), None);
        assert_eq!(goal_for("ipc_round_trip"), Some((500.0, "instructions")));
        assert_eq!(goal_for("ipc_reply_then_next_recv"), None);
        // Floors: `goal_min`, met when at least the goal.
        let storm = |v: &str| BenchResult {
            name: "prq_storm_groups_per_round_trip".into(),
            value: v.into(),
            unit: "groups".into(),
            source: "s".into(),
        };
        assert!(to_json(&[storm("20.8")], &[]).contains("\"goal_min\": 16, \"met\": true}"));
        assert!(to_json(&[storm("15")], &[]).contains("\"goal_min\": 16, \"met\": false}"));
        assert_eq!(
            goal_for("prq_fault_path_max_per_min_x100"),
            Some((120.0, "ratio"))
        );
        assert_eq!(goal_for("prq_fault_path_vms1_pending1"), None);
    }

    #[test]
    fn linux_ratio_entries() {
        let r = |name: &str, value: &str| BenchResult {
            name: name.into(),
            value: value.into(),
            unit: "instructions".into(),
            source: "s".into(),
        };
        let results = vec![
            r("smmu_map64_round_trip", "3000"),
            r("linux_map64_ioctl", "60000"),
            r("linux_map64_driver_core", "4000"),
            r("smmu_unmap64_round_trip", "3500"),
            r("linux_unmap64_ioctl", "0"),
        ];
        let (ratios, missing) = linux_ratios(&results);
        let got: Vec<(&str, &str)> = ratios
            .iter()
            .map(|x| (x.name.as_str(), x.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [("map64_ratio", "0.050"), ("map64_driver_ratio", "0.750")]
        );
        assert_eq!(missing.len(), 8);
        assert!(missing[0].starts_with("unmap64_ratio:"), "{missing:?}");
        // The ratios are held to <= 1 and keep clear of the smmu_* goals.
        assert_eq!(goal_for("map64_driver_ratio"), Some((1.0, "ratio")));
        assert_eq!(goal_for("attach_ratio"), Some((1.0, "ratio")));
        assert_eq!(
            goal_for("smmu_map64_round_trip"),
            Some((4556.0, "instructions"))
        );
        assert!(to_json(&ratios, &[]).contains(
            "{\"name\": \"map64_ratio\", \"value\": 0.050, \"unit\": \"ratio\", \"source\": \"smmu_map64_round_trip / linux_map64_ioctl\", \"goal_max\": 1, \"met\": true}"
        ));
    }
}
