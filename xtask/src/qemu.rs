//! Booting an image under QEMU: the command line from the board file, a
//! timeout that kills the whole process group, the console captured (and
//! optionally streamed).

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::Qemu;

/// `-icount` for functional runs: virtual time runs ahead while the guest
/// waits in WFI (edu's 100 ms DMA completes at once), deterministic enough.
pub const ICOUNT_RUN: &str = "shift=auto,sleep=off";
/// `-icount` for benchmarks: with `shift=0` one guest instruction is one
/// nanosecond of virtual time, and with `-cpu max` CNTFRQ is 1 GHz, so one
/// CNTVCT tick is exactly one instruction (measured: a 3 000-instruction loop
/// reads 3 005 ticks, identically on every run).
pub const ICOUNT_BENCH: &str = "shift=0,sleep=off";

/// The QEMU command line for an image.
pub fn command(q: &Qemu, image: &Path, icount: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(&q.binary);
    c.args([
        "-M",
        &q.machine,
        "-cpu",
        &q.cpu,
        "-m",
        &q.memory,
        "-nographic",
        "-kernel",
    ])
    .arg(image)
    .args(&q.args)
    .args(["-icount", icount])
    .args(extra);
    c
}

/// The QEMU command line that boots a flat image the way a boot loader
/// would: the bytes at `load` (generic loader, raw) and CPU 0's PC at
/// `entry`, at the highest EL the machine has (EL2 on `virtualization=on`).
pub fn command_flat(
    q: &Qemu,
    bin: &Path,
    load: u64,
    entry: u64,
    icount: &str,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(&q.binary);
    c.args([
        "-M",
        &q.machine,
        "-cpu",
        &q.cpu,
        "-m",
        &q.memory,
        "-nographic",
        "-device",
    ])
    .arg(format!(
        "loader,file={},addr={load:#x},force-raw=on",
        bin.display()
    ))
    .args(["-device", &format!("loader,addr={entry:#x},cpu-num=0")])
    .args(&q.args)
    .args(["-icount", icount])
    .args(extra);
    c
}

/// The command as a shell line, for messages.
pub fn show(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    /// Killed by a signal we did not send.
    Signaled(i32),
    TimedOut(Duration),
    /// Stopped by us because the console showed the run could not succeed
    /// (see [`run_watch`]).
    Stopped,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(c) => write!(f, "exited with status {c}"),
            Outcome::Signaled(s) => write!(f, "killed by signal {s}"),
            Outcome::TimedOut(d) => write!(f, "timed out after {} s", d.as_secs()),
            Outcome::Stopped => write!(f, "stopped early (see the console)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Run {
    pub outcome: Outcome,
    /// Console (QEMU's stdout) lines, `\r` stripped.
    pub console: Vec<String>,
    /// QEMU's own messages (stderr).
    pub errors: Vec<String>,
}

impl Run {
    /// The last `n` lines of console and QEMU messages, for failure reports.
    pub fn tail(&self, n: usize) -> Vec<&str> {
        let all: Vec<&str> = self
            .console
            .iter()
            .chain(self.errors.iter())
            .map(String::as_str)
            .collect();
        all[all.len().saturating_sub(n)..].to_vec()
    }
}

mod sys {
    use std::os::raw::{c_int, c_ulong};
    extern "C" {
        pub fn kill(pid: c_int, sig: c_int) -> c_int;
        pub fn prctl(option: c_int, ...) -> c_int;
        pub fn geteuid() -> u32;
    }
    pub const SIGKILL: c_int = 9;
    pub const PR_SET_PDEATHSIG: c_int = 1;
    pub const SIGKILL_UL: c_ulong = 9;
}

/// The effective user id (0 = root).
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { sys::geteuid() }
}

/// SIGKILL to the process group led by `pid` (one we created).
fn kill_group(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions; the negative pid names
    // the process group created for our child.
    unsafe {
        sys::kill(-pid, sys::SIGKILL);
    }
}

fn split_lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

/// Runs `cmd` in its own process group with no stdin. `timeout: None` waits
/// for ever (gdb sessions). With `echo`, output is streamed as it comes.
/// QEMU also dies with us (`PR_SET_PDEATHSIG`), so an interrupted xtask
/// never leaves a machine running.
pub fn run(cmd: Command, timeout: Option<Duration>, echo: bool) -> Result<Run, String> {
    run_watch(cmd, timeout, echo, &mut |_| None)
}

/// [`run`], calling `watch` on every complete console line; when it returns
/// a reason, QEMU is stopped at once, the reason is added to the console as
/// `xtask: <reason>`, and the outcome is [`Outcome::Stopped`].
pub fn run_watch(
    mut cmd: Command,
    timeout: Option<Duration>,
    echo: bool,
    watch: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Run, String> {
    let shown = show(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes one async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            sys::prctl(sys::PR_SET_PDEATHSIG, sys::SIGKILL_UL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    let pid = child.id() as i32;

    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    let mut readers = Vec::new();
    let outs: [(bool, Option<Box<dyn Read + Send>>); 2] = [
        (
            false,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            true,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    for (is_err, pipe) in outs {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((is_err, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);

    let start = Instant::now();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut timed_out = false;
    let mut closed = false;
    let mut watched = 0usize;
    let mut stopped: Option<String> = None;
    loop {
        // Look at the console lines completed since last time.
        while stopped.is_none() {
            let Some(nl) = out[watched..].iter().position(|b| *b == b'\n') else {
                break;
            };
            let line = String::from_utf8_lossy(&out[watched..watched + nl])
                .trim_end_matches('\r')
                .to_string();
            watched += nl + 1;
            stopped = watch(&line);
        }
        if stopped.is_some() {
            break;
        }
        let wait = match timeout {
            Some(t) => match t.checked_sub(start.elapsed()) {
                Some(left) => left.min(Duration::from_millis(100)),
                None => {
                    timed_out = true;
                    break;
                }
            },
            None => Duration::from_millis(100),
        };
        if closed {
            // Both pipes are closed: QEMU is exiting (or closed them early
            // and still runs — the timeout covers that too).
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) => std::thread::sleep(wait.min(Duration::from_millis(20))),
                Err(e) => {
                    kill_group(pid);
                    return Err(format!("waiting for `{shown}`: {e}"));
                }
            }
            continue;
        }
        match rx.recv_timeout(wait) {
            Ok((is_err, chunk)) => take(echo, &mut out, &mut err, is_err, chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => closed = true,
        }
    }
    if timed_out || stopped.is_some() {
        kill_group(pid);
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{shown}`: {e}"))?;
    for r in readers {
        let _ = r.join();
    }
    while let Ok((is_err, chunk)) = rx.try_recv() {
        take(echo, &mut out, &mut err, is_err, chunk);
    }
    if let Some(why) = &stopped {
        out.extend_from_slice(format!("\nxtask: {why}\n").as_bytes());
    }
    let outcome = if stopped.is_some() {
        Outcome::Stopped
    } else if timed_out {
        Outcome::TimedOut(timeout.unwrap_or_default())
    } else if let Some(code) = status.code() {
        Outcome::Exited(code)
    } else {
        Outcome::Signaled(status.signal().unwrap_or(0))
    };
    Ok(Run {
        outcome,
        console: split_lines(&out),
        errors: split_lines(&err),
    })
}

/// Keeps (and with `echo`, shows) a chunk of QEMU's output.
fn take(echo: bool, out: &mut Vec<u8>, err: &mut Vec<u8>, is_err: bool, chunk: Vec<u8>) {
    if echo {
        if is_err {
            let _ = std::io::stderr().write_all(&chunk);
        } else {
            let mut so = std::io::stdout();
            let _ = so.write_all(&chunk);
            let _ = so.flush();
        }
    }
    if is_err { err } else { out }.extend_from_slice(&chunk);
}

/// Parses `TEST <case> ok|FAIL` markers anywhere in a line (the kernel may
/// prefix task output with the task's name). Returns (case, passed).
pub fn test_markers(line: &str) -> Vec<(&str, bool)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0] == "TEST")
        .filter_map(|w| match w[2] {
            "ok" => Some((w[1], true)),
            "FAIL" => Some((w[1], false)),
            _ => None,
        })
        .collect()
}

/// Parses a `BENCH <name> <value> <unit>` line. Returns (name, value, unit).
pub fn bench_marker(line: &str) -> Option<(&str, &str, &str)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "BENCH")?;
    match words.get(at + 1..at + 4) {
        Some([name, value, unit]) if value.parse::<f64>().is_ok() => Some((name, value, unit)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(test_markers("TEST ipc_ping ok"), vec![("ipc_ping", true)]);
        assert_eq!(test_markers("[demo] TEST ipc_ping FAIL: bad"), vec![]);
        assert_eq!(
            test_markers("[demo] TEST ipc_ping FAIL"),
            vec![("ipc_ping", false)]
        );
        assert_eq!(test_markers("TEST ipc ok"), vec![("ipc", true)]);
        assert_eq!(test_markers("TEST ipc okay"), vec![]);
        assert_eq!(test_markers("nothing"), vec![]);
        assert_eq!(
            bench_marker("[bench] BENCH ipc_one_way 212 instructions"),
            Some(("ipc_one_way", "212", "instructions"))
        );
        assert_eq!(bench_marker("BENCH x y z"), None);
        assert_eq!(bench_marker("BENCH x 1"), None);
    }

    #[test]
    fn runs_with_timeout_and_capture() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hello; echo oops >&2; exit 3"]);
        let r = run(c, Some(Duration::from_secs(10)), false).unwrap();
        assert_eq!(r.outcome, Outcome::Exited(3));
        assert_eq!(r.console, vec!["hello"]);
        assert_eq!(r.errors, vec!["oops"]);

        // A child that ignores its end: the group (shell and sleep) is killed.
        let mut c = Command::new("sh");
        c.args(["-c", "echo start; sleep 30; echo never"]);
        let t0 = Instant::now();
        let r = run(c, Some(Duration::from_millis(300)), false).unwrap();
        assert!(matches!(r.outcome, Outcome::TimedOut(_)));
        assert_eq!(r.console, vec!["start"]);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
