//! `cargo xtask …`: dist, run, test, bench, sizes, gdb, trace, fuzz, mutants, explore.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xtask::qemu::{self, Outcome};
use xtask::ws::Workspace;
use xtask::{bench, dist, dump, explore, gdb, manifest, mutants, prereq, runner, sizes};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, boot and test the image",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the image: tasks, kernel table, kernel → target/dist/<app>/
    Dist {
        /// The app file (default app.toml; with --board alone, the
        /// board-portable boards/apps/bringup.toml)
        #[arg(long)]
        app: Option<PathBuf>,
        /// Build it for boards/<BOARD>.toml instead of the app's board
        #[arg(long)]
        board: Option<String>,
    },
    /// Build the image and boot it under QEMU, console on stdout
    Run {
        #[arg(long, default_value = "app.toml")]
        app: PathBuf,
        /// Kill QEMU after this many seconds
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Host tests and QEMU image tests (qemu/apps/*.toml)
    Test {
        /// Run only tests whose name contains this (QEMU cases are `qemu::<case>`)
        filter: Option<String>,
        /// List the test names instead of running them
        #[arg(long)]
        list: bool,
    },
    /// Instruction-count benchmarks and image sizes → target/bench/results.json
    Bench {
        /// Also boot Debian's arm64 Linux on the same QEMU and measure its
        /// SMMUv3 driver through VFIO (side by side, with ratios); downloads
        /// ~100 MB once (xtask/src/linux_peer.rs)
        #[arg(long)]
        linux: bool,
    },
    /// Per-task and kernel sizes of an image
    Sizes {
        #[arg(long, default_value = "app.toml")]
        app: PathBuf,
    },
    /// Run a harness scenario and render its message trace as a sequence
    /// diagram (SVG + text) into target/trace/ (or --out)
    Trace {
        /// Scenario name; `cargo xtask trace --list` shows them
        scenario: Option<String>,
        #[arg(long)]
        list: bool,
        #[arg(long, default_value = "target/trace")]
        out: PathBuf,
    },
    /// Feed random and mutated messages to a server's dispatch, or (target
    /// `kernel`) random system calls from several tasks to the kernel's
    /// portable core, for a bounded time; any panic or (kernel) broken
    /// task-table invariant is a failure. A short pass of each is part of
    /// `test`
    Fuzz {
        /// The dispatch to fuzz; `cargo xtask fuzz --list` shows them
        target: Option<String>,
        #[arg(long)]
        list: bool,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Apply deliberate bugs to the SMMU driver one at a time and check the
    /// named test catches each (docs/iommu-server.md, "Mutations")
    Mutants {
        /// Run only mutations whose name contains this
        filter: Option<String>,
        /// List the mutations and their tests
        #[arg(long)]
        list: bool,
    },
    /// Explore schedules of the harness's fault-path scenarios with the
    /// invariants checked after each: every schedule within a preemption
    /// bound, or N seeded ones (docs/exploration.md)
    Explore {
        /// Target; `cargo xtask explore --list` shows them and their bounds
        target: Option<String>,
        #[arg(long)]
        list: bool,
        /// Costly decisions allowed (preemptions, delayed events, kills)
        #[arg(long)]
        preemptions: Option<u32>,
        /// Branch only at the first N choice points
        #[arg(long)]
        depth: Option<usize>,
        /// Stop after this many schedules
        #[arg(long)]
        max: Option<u64>,
        /// Also branch on clock-jitter points
        #[arg(long)]
        jitter: bool,
        /// N seeded schedules spread over the targets (or the one named)
        #[arg(long)]
        random: Option<u64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Time limit of a random sweep
        #[arg(long)]
        seconds: Option<u64>,
        /// Rerun one schedule: `<target>:<choices>` as a violation printed it
        #[arg(long)]
        replay: Option<String>,
        /// Check the explorer catches each deliberately broken task variant (I1-I6)
        #[arg(long)]
        mutants: bool,
    },
    /// Decode the per-task trace rings (docs/tracing.md): those the kernel
    /// printed when a task faulted or it stopped (from a saved console
    /// log, or by booting the app until it exits or times out), or those
    /// of a running image read through QEMU's monitor (`--running`,
    /// `--live-at`)
    Dump {
        #[arg(long, default_value = "app.toml")]
        app: PathBuf,
        /// Only this task's ring
        #[arg(long)]
        task: Option<String>,
        /// Decode this saved console log instead of booting the app
        #[arg(long)]
        log: Option<PathBuf>,
        /// Read the rings of the image `cargo xtask run --app APP` is
        /// running now (through its monitor socket,
        /// target/dist/<app>/monitor.sock); it keeps running
        #[arg(long, conflicts_with = "log")]
        running: bool,
        /// Boot the app and read its running rings when a console line
        /// contains this text, then stop it
        #[arg(long, conflicts_with_all = ["log", "running"])]
        live_at: Option<String>,
    },
    /// Boot halted with a gdb stub on :1234 and write a gdb script
    Gdb {
        #[arg(long, default_value = "app.toml")]
        app: PathBuf,
        /// The task whose symbols the script loads (tasks share addresses)
        #[arg(long)]
        task: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ws = Workspace::locate();
    match run(&ws, cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs a host binary of the workspace (`cargo run --release -p P --bin B -- args`).
fn cargo_run_bin(
    ws: &Workspace,
    package: &str,
    bin: &str,
    args: &[String],
) -> Result<ExitCode, String> {
    cargo_run_bin_profile(ws, "release", package, bin, args)
}

/// As [`cargo_run_bin`] with a named cargo profile.
fn cargo_run_bin_profile(
    ws: &Workspace,
    profile: &str,
    package: &str,
    bin: &str,
    args: &[String],
) -> Result<ExitCode, String> {
    let status = ws
        .cargo()
        .args([
            "run",
            "--quiet",
            "--profile",
            profile,
            "-p",
            package,
            "--bin",
            bin,
            "--",
        ])
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    Ok(exit_code(status.success()))
}

fn run(ws: &Workspace, cmd: Cmd) -> Result<ExitCode, String> {
    match cmd {
        Cmd::Trace {
            scenario,
            list,
            out,
        } => {
            let mut args = Vec::new();
            match (list, scenario) {
                (true, _) | (false, None) => args.push("--list".to_string()),
                (false, Some(s)) => {
                    let out = if out.is_absolute() {
                        out
                    } else {
                        ws.root.join(out)
                    };
                    args.push(s);
                    args.push(out.display().to_string());
                }
            }
            cargo_run_bin(ws, "harness", "trace", &args)
        }
        Cmd::Fuzz {
            target,
            list,
            seconds,
            seed,
        } => {
            let args = match (list, target) {
                (true, _) | (false, None) => vec!["--list".to_string()],
                (false, Some(t)) => vec![t, seconds.to_string(), seed.to_string()],
            };
            // The `fuzz` profile: unwinding panics and overflow checks, so
            // that a crash is reported with its input (Cargo.toml).
            cargo_run_bin_profile(ws, "fuzz", "fuzz", "fuzz", &args)
        }
        Cmd::Dist { app, board } => {
            let d = match board {
                Some(b) => {
                    let app = app.unwrap_or_else(|| PathBuf::from(dist::BRINGUP_APP));
                    dist::dist_for_board(ws, &ws.app_path(&app), &b)?
                }
                None => {
                    let app = app.unwrap_or_else(|| PathBuf::from("app.toml"));
                    dist::dist(ws, &ws.app_path(&app))?
                }
            };
            println!(
                "dist: {} ({} bytes; kernel .text {} bytes; {} tasks)",
                ws.show(&d.image),
                d.image_size,
                d.kernel_text_size,
                d.app.tasks.len()
            );
            println!(
                "dist: {} ({} bytes, flat: load at {:#x}, entry {:#x})",
                ws.show(&d.image_bin),
                d.image_bin_size,
                d.load_address,
                d.entry
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { app, timeout } => {
            let path = ws.app_path(&app);
            let a = dist::load_app(ws, &path)?;
            prereq::ensure_qemu(a.board.qemu()?)?;
            let d = dist::dist(ws, &path)?;
            // The monitor on a socket: `cargo xtask dump --running` reads
            // the trace rings of this running image through it.
            let socket = d.dir.join("monitor.sock");
            let _ = std::fs::remove_file(&socket);
            let monitor = format!("unix:{},server=on,wait=off", socket.display());
            let cmd = qemu::command(
                a.board.qemu()?,
                &d.image,
                qemu::ICOUNT_RUN,
                &["-monitor", &monitor],
            );
            eprintln!("run: {}", qemu::show(&cmd));
            let r = qemu::run(cmd, Some(Duration::from_secs(timeout)), true)?;
            match r.outcome {
                Outcome::Exited(c) => {
                    if c != 0 {
                        eprintln!("run: QEMU exited with status {c}");
                    }
                    Ok(ExitCode::from(u8::try_from(c).unwrap_or(1)))
                }
                Outcome::Signaled(s) => {
                    eprintln!("run: QEMU was killed by signal {s}");
                    Ok(ExitCode::FAILURE)
                }
                Outcome::TimedOut(t) => {
                    eprintln!(
                        "run: timed out after {} s; QEMU's process group was killed",
                        t.as_secs()
                    );
                    // As timeout(1) does.
                    Ok(ExitCode::from(124))
                }
                // `run` has no watch: QEMU is never stopped early here.
                Outcome::Stopped => Ok(ExitCode::FAILURE),
            }
        }
        Cmd::Test { filter, list } => runner::test(ws, filter.as_deref(), list).map(exit_code),
        Cmd::Mutants { filter, list } => {
            if list {
                for m in mutants::MUTATIONS {
                    println!("{}: {} {} {}", m.name, m.package, m.target, m.test);
                }
                return Ok(ExitCode::SUCCESS);
            }
            mutants::run(ws, filter.as_deref()).map(exit_code)
        }
        Cmd::Explore {
            target,
            list,
            preemptions,
            depth,
            max,
            jitter,
            random,
            seed,
            seconds,
            replay,
            mutants,
        } => {
            // Nothing named: list the targets.
            let list =
                list || (target.is_none() && random.is_none() && replay.is_none() && !mutants);
            let r = explore::Request {
                target,
                list,
                preemptions,
                depth,
                max,
                jitter,
                random,
                seed,
                seconds,
                replay,
                mutants,
            };
            explore::run(ws, &r).map(exit_code)
        }
        Cmd::Bench { linux } => bench::bench(ws, linux).map(exit_code),
        Cmd::Sizes { app } => {
            let d = dist::dist(ws, &ws.app_path(&app))?;
            sizes::print(&manifest::read(&d.manifest)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dump {
            app,
            task,
            log,
            running,
            live_at,
        } => {
            if let Some(p) = log {
                let console: Vec<String> = std::fs::read_to_string(&p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                    .lines()
                    .map(str::to_string)
                    .collect();
                let what = format!("{} (did a task fault?)", p.display());
                print!(
                    "{}",
                    dump::render_all(&dump::parse(&console), task.as_deref(), &what)?
                );
                return Ok(ExitCode::SUCCESS);
            }
            let path = ws.app_path(&app);
            let a = dist::load_app(ws, &path)?;
            if let Some(t) = &task {
                if a.task_index(t).is_none() {
                    return Err(format!("--task: unknown task \"{t}\" in {}", a.file));
                }
            }
            let d = dist::dist(ws, &path)?;
            let socket = d.dir.join("monitor.sock");
            if running {
                let rings = dump::live_rings(&d)?;
                let dumps = dump::read_live(&socket, &rings, &d.dir)?;
                print!(
                    "{}",
                    dump::render_all(&dumps, task.as_deref(), "the running image")?
                );
                return Ok(ExitCode::SUCCESS);
            }
            prereq::ensure_qemu(a.board.qemu()?)?;
            let _ = std::fs::remove_file(&socket);
            let monitor = format!("unix:{},server=on,wait=off", socket.display());
            let cmd = qemu::command(
                a.board.qemu()?,
                &d.image,
                qemu::ICOUNT_RUN,
                &["-monitor", &monitor],
            );
            eprintln!("dump: {}", qemu::show(&cmd));
            let mut live = None;
            let mut watch = |line: &str| {
                let at = live_at.as_deref()?;
                if live.is_some() || !line.contains(at) {
                    return None;
                }
                live =
                    Some(dump::live_rings(&d).and_then(|r| dump::read_live(&socket, &r, &d.dir)));
                Some(format!(
                    "read the running rings at {at:?}: stopping the image"
                ))
            };
            let run = qemu::run_watch(cmd, Some(runner::QEMU_TIMEOUT), false, &mut watch)?;
            eprintln!("dump: image {}", run.outcome);
            let printed = dump::parse(&run.console);
            if !printed.is_empty() || live.is_none() {
                println!("-- rings the kernel printed:");
                match dump::render_all(&printed, task.as_deref(), "the console") {
                    Ok(s) => print!("{s}"),
                    Err(e) => println!("{e}"),
                }
            }
            if let Some(l) = live {
                println!("-- rings of the running image:");
                print!(
                    "{}",
                    dump::render_all(&l?, task.as_deref(), "the running image")?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gdb { app, task } => {
            let path = ws.app_path(&app);
            let a = dist::load_app(ws, &path)?;
            if let Some(t) = &task {
                if a.task_index(t).is_none() {
                    return Err(format!("--task: unknown task \"{t}\" in {}", a.file));
                }
            }
            prereq::ensure_qemu(a.board.qemu()?)?;
            let d = dist::dist(ws, &path)?;
            let script = gdb::write_script(&d, task.as_deref())?;
            let port = format!("tcp::{}", gdb::PORT);
            let cmd = qemu::command(
                a.board.qemu()?,
                &d.image,
                qemu::ICOUNT_RUN,
                &["-S", "-gdb", &port],
            );
            eprintln!("gdb: {}", qemu::show(&cmd));
            eprintln!("gdb: QEMU is halted at reset; attach from another terminal with:");
            eprintln!("       gdb-multiarch -x {}", script.display());
            eprintln!(
                "     (Debian: apt-get install gdb-multiarch; plain gdb cannot debug AArch64)"
            );
            if task.is_none() {
                eprintln!("     (no --task given: the script loads kernel symbols only; it lists each task's add-symbol-file line)");
            }
            let r = qemu::run(cmd, None, true)?;
            match r.outcome {
                Outcome::Exited(c) => Ok(ExitCode::from(u8::try_from(c).unwrap_or(1))),
                other => {
                    eprintln!("gdb: QEMU {other}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
