//! `cargo xtask dump`: the per-task trace rings (docs/tracing.md) decoded.
//!
//! Two sources, one decoder (`trace::decode` orders a ring's raw bytes):
//!
//! - **The console.** When the kernel faults a task (a panic, a data abort,
//!   any fault) it prints the task's ring as hex lines; when the kernel
//!   itself stops (panic, exception) it prints every ring that holds
//!   events. [`parse`] finds those blocks.
//! - **A running image.** QEMU runs with its monitor on a Unix socket;
//!   [`read_live`] stops the CPU, saves each ring's physical memory
//!   (`pmemsave`), lets it run on, and decodes the bytes. The physical
//!   address of a ring is its task's data region in the kernel image
//!   (`__task_data_<i>`, exported by the generated table) plus the ring's
//!   offset in that region (`TRACE_RING` in the task ELF).
//!
//! Event names come from the task's event table (`trace::events`).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use trace::Entry;

use crate::config::TASK_DATA;
use crate::dist::Dist;
use crate::elf::Elf;

/// One task's ring, decoded (oldest first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dump {
    pub task: String,
    pub entries: Vec<Entry>,
    /// Whether the whole ring was seen (the `end` line, or a live read).
    pub complete: bool,
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Decodes a ring's raw bytes.
pub fn decode(task: &str, raw: &[u8], complete: bool) -> Dump {
    let mut out = vec![Entry::default(); raw.len() / trace::ENTRY_BYTES];
    let n = trace::decode(raw, &mut out);
    out.truncate(n);
    Dump {
        task: task.to_string(),
        entries: out,
        complete,
    }
}

/// Every ring the kernel printed in `console`, in console order (a task
/// that faulted twice appears twice). The kernel's lines:
/// `kern: trace <task> begin <size>`, `kern: trace <task> <offset hex>
/// <bytes hex>` (all-zero lines left out), `kern: trace <task> end`.
pub fn parse(console: &[String]) -> Vec<Dump> {
    let mut out = Vec::new();
    // The block being read: task, raw bytes.
    let mut open: Option<(String, Vec<u8>)> = None;
    for line in console {
        let Some(rest) = line.trim_end().strip_prefix("kern: trace ") else {
            continue;
        };
        let mut w = rest.split(' ');
        let (Some(task), Some(what)) = (w.next(), w.next()) else {
            continue;
        };
        match (what, w.next()) {
            ("begin", Some(size)) => {
                if let Some((t, raw)) = open.take() {
                    out.push(decode(&t, &raw, false));
                }
                if let Ok(size) = size.parse::<usize>() {
                    // A ring is a few hundred bytes; refuse nonsense.
                    if size <= 1 << 16 {
                        open = Some((task.to_string(), vec![0; size]));
                    }
                }
            }
            ("end", None) => {
                if let Some((t, raw)) = open.take_if(|(t, _)| t == task) {
                    out.push(decode(&t, &raw, true));
                }
            }
            (off, Some(hex)) => {
                let Some((t, raw)) = open.as_mut() else {
                    continue;
                };
                let (Ok(off), Some(bytes)) = (usize::from_str_radix(off, 16), hex_bytes(hex))
                else {
                    continue;
                };
                if t == task {
                    if let Some(dst) = raw.get_mut(off..off + bytes.len()) {
                        dst.copy_from_slice(&bytes);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some((t, raw)) = open {
        out.push(decode(&t, &raw, false));
    }
    out
}

/// The event's name in `task`'s table, or its number.
pub fn event_name(task: &str, code: u16) -> String {
    trace::events::name(task, code)
        .map(str::to_string)
        .unwrap_or_else(|| format!("event#{code}"))
}

/// Human-readable text of one dump.
pub fn render(d: &Dump) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} events, oldest first{}",
        d.task,
        d.entries.len(),
        if d.complete { "" } else { " (cut off)" }
    );
    for e in &d.entries {
        let _ = writeln!(
            s,
            "  #{:<5} {:<18} a={:#x} b={:#x}",
            e.seq,
            event_name(&d.task, e.code),
            e.a,
            e.b
        );
    }
    s
}

/// Renders `dumps` (only `task`'s with a name); `what` says where they
/// came from, for the error when there is none.
pub fn render_all(dumps: &[Dump], task: Option<&str>, what: &str) -> Result<String, String> {
    let picked: Vec<&Dump> = dumps
        .iter()
        .filter(|d| task.is_none_or(|t| d.task == t))
        .collect();
    if picked.is_empty() {
        return Err(match task {
            Some(t) => format!("no trace ring of {t} in {what}"),
            None => format!("no trace ring in {what}"),
        });
    }
    Ok(picked.into_iter().map(render).collect())
}

/// Where one task's ring is in the machine's physical memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveRing {
    pub task: String,
    pub pa: u64,
    pub size: u64,
}

/// The physical address of every task's ring in image `d` (tasks without
/// a ring are left out): the kernel image holds each task's data region
/// as the static `__task_data_<i>` (identity-mapped: its address is
/// physical), and the ring lies at its offset from `TASK_DATA` in it.
pub fn live_rings(d: &Dist) -> Result<Vec<LiveRing>, String> {
    let bytes =
        std::fs::read(&d.image).map_err(|e| format!("cannot read {}: {e}", d.image.display()))?;
    let elf = Elf::parse(&bytes).map_err(|e| format!("{}: {e}", d.image.display()))?;
    let mut out = Vec::new();
    for (i, t) in d.app.tasks.iter().enumerate() {
        let Some((va, size)) = d.tasks[i].trace_ring else {
            continue;
        };
        let sym = format!("__task_data_{i}");
        let data = elf.symbol(&sym)?.ok_or_else(|| {
            format!(
                "{}: no symbol {sym} (the data region of {})",
                d.image.display(),
                t.name
            )
        })?;
        out.push(LiveRing {
            task: t.name.clone(),
            pa: data.value + (va - TASK_DATA),
            size,
        });
    }
    Ok(out)
}

/// A connection to QEMU's human monitor (HMP) on a Unix socket.
struct Monitor {
    s: UnixStream,
}

impl Monitor {
    const PROMPT: &'static str = "(qemu) ";

    fn connect(path: &Path) -> Result<Monitor, String> {
        let s = UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to QEMU's monitor {}: {e}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| format!("monitor: {e}"))?;
        let mut m = Monitor { s };
        m.until_prompt()?;
        Ok(m)
    }

    /// Reads until the prompt; returns what came before it.
    fn until_prompt(&mut self) -> Result<String, String> {
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).ends_with(Self::PROMPT) {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("monitor: no prompt within 10 s".into());
            }
            match self.s.read(&mut buf) {
                Ok(0) => return Err("monitor: connection closed".into()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("monitor: {e}")),
            }
        }
        Ok(String::from_utf8_lossy(&got).into_owned())
    }

    /// Runs one command; returns its output (the echo and prompt included).
    fn command(&mut self, cmd: &str) -> Result<String, String> {
        self.s
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("monitor: {e}"))?;
        self.until_prompt()
    }
}

/// Reads `rings` from the running QEMU whose monitor listens on `socket`:
/// stops the CPU (so no task writes a ring while it is copied), saves each
/// ring into `scratch` with `pmemsave`, lets the machine run on, and
/// decodes them.
pub fn read_live(socket: &Path, rings: &[LiveRing], scratch: &Path) -> Result<Vec<Dump>, String> {
    let mut m = Monitor::connect(socket)?;
    m.command("stop")?;
    let mut saved = Vec::new();
    let mut failure = None;
    for (i, r) in rings.iter().enumerate() {
        let file = scratch.join(format!("live-ring-{i}.bin"));
        let _ = std::fs::remove_file(&file);
        let Some(path) = file.to_str().filter(|p| !p.contains('"')) else {
            failure = Some(format!(
                "{}: path unusable in a monitor command",
                file.display()
            ));
            break;
        };
        match m.command(&format!("pmemsave {:#x} {} \"{path}\"", r.pa, r.size)) {
            Ok(_) => saved.push((r, file)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // Resume whatever happened.
    m.command("cont")?;
    if let Some(e) = failure {
        return Err(e);
    }
    saved
        .into_iter()
        .map(|(r, file)| {
            let raw = std::fs::read(&file).map_err(|e| {
                format!(
                    "pmemsave of {}'s ring at {:#x} wrote no {}: {e}",
                    r.task,
                    r.pa,
                    file.display()
                )
            })?;
            if raw.len() as u64 != r.size {
                return Err(format!(
                    "pmemsave of {}'s ring: {} bytes, expected {}",
                    r.task,
                    raw.len(),
                    r.size
                ));
            }
            Ok(decode(&r.task, &raw, true))
        })
        .collect()
}

/// The console line on which the runner reads a `dump_live_*` image's rings.
pub const LIVE_READY: &str = "] live: ready";

/// The `dump_*` QEMU cases, judged by the runner from the console and the
/// live read (the task whose ring is checked is dead or blocked and cannot
/// judge it). `None`: not a dump case.
pub fn check_case(
    case: &str,
    console: &[String],
    live: Option<&Result<Vec<Dump>, String>>,
) -> Option<Result<(), String>> {
    let cap = trace::CAPACITY as u32;
    match case {
        // test-dump, incarnation 0: Step 0..STEPS (a = i, b = i ^ 0x5a5a),
        // then Panicking (a = STEPS), with STEPS = CAPACITY + 6: exactly
        // the last CAPACITY events, in order, the oldest overwritten.
        "dump_panic_lists_last_events_in_order" => {
            let steps = cap + 6;
            let want = (0..=steps)
                .map(|i| {
                    if i < steps {
                        ("Step", i as u16, i, i ^ 0x5a5a)
                    } else {
                        ("Panicking", i as u16, steps, 0)
                    }
                })
                .skip((steps + 1 - cap) as usize)
                .collect();
            Some(check_printed(console, 0, want))
        }
        // Incarnation 1: Step (a = 1000 + i, b = i) for i < 20, then
        // Faulting (a = 0x10, the unmapped address it reads).
        "dump_fault_lists_last_events_in_order" => {
            let steps = 20u32;
            let want = (0..=steps)
                .map(|i| {
                    if i < steps {
                        ("Step", i as u16, 1000 + i, i)
                    } else {
                        ("Faulting", i as u16, 0x10, 0)
                    }
                })
                .collect();
            Some(check_printed(console, 1, want))
        }
        // Incarnation 2, read live: Live (a = i, b = !i) for i < 5.
        "dump_live_lists_events_of_running_image" => {
            let want: Vec<_> = (0..5u32).map(|i| ("Live", i as u16, i, !i)).collect();
            Some(match live {
                None => Err("the running image was not read (no `live: ready` line)".into()),
                Some(Err(e)) => Err(format!("live read failed: {e}")),
                Some(Ok(dumps)) => match dumps.iter().find(|d| d.task == "test-dump") {
                    None => Err("no ring of test-dump in the live read".into()),
                    Some(d) => same(d, want),
                },
            })
        }
        _ => None,
    }
}

type Want = Vec<(&'static str, u16, u32, u32)>;

/// The `nth` ring test-dump's faults printed must be `want`.
fn check_printed(console: &[String], nth: usize, want: Want) -> Result<(), String> {
    let dumps: Vec<Dump> = parse(console)
        .into_iter()
        .filter(|d| d.task == "test-dump")
        .collect();
    let Some(d) = dumps.get(nth) else {
        return Err(format!(
            "{} rings of test-dump printed, expected at least {}",
            dumps.len(),
            nth + 1
        ));
    };
    if !d.complete {
        return Err("the printed ring was cut off".into());
    }
    same(d, want)
}

fn same(d: &Dump, want: Want) -> Result<(), String> {
    let got: Vec<(String, u16, u32, u32)> = d
        .entries
        .iter()
        .map(|e| (event_name(&d.task, e.code), e.seq, e.a, e.b))
        .collect();
    let want: Vec<(String, u16, u32, u32)> = want
        .into_iter()
        .map(|(n, s, a, b)| (n.to_string(), s, a, b))
        .collect();
    if got != want {
        return Err(format!(
            "ring differs: got {} entries, first {:?}, last {:?}; want {}, first {:?}, last {:?}",
            got.len(),
            got.first(),
            got.last(),
            want.len(),
            want.first(),
            want.last()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw storage a task's ring holds after events `(code, a, b)`
    /// (slot = event index % CAPACITY), printed the way the kernel does.
    fn kernel_lines(task: &str, events: &[(u16, u32, u32)]) -> Vec<String> {
        let size = trace::CAPACITY * trace::ENTRY_BYTES;
        let mut raw = vec![0u8; size];
        for (i, (code, a, b)) in events.iter().enumerate() {
            let off = (i % trace::CAPACITY) * trace::ENTRY_BYTES;
            raw[off..off + 2].copy_from_slice(&code.to_le_bytes());
            raw[off + 2..off + 4].copy_from_slice(&(i as u16).to_le_bytes());
            raw[off + 4..off + 8].copy_from_slice(&a.to_le_bytes());
            raw[off + 8..off + 12].copy_from_slice(&b.to_le_bytes());
        }
        let mut v = vec![format!("kern: trace {task} begin {size}")];
        for (i, chunk) in raw.chunks(48).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
                v.push(format!("kern: trace {task} {:04x} {hex}", i * 48));
            }
        }
        v.push(format!("kern: trace {task} end"));
        v
    }

    fn panic_events(skip: Option<u32>) -> Vec<(u16, u32, u32)> {
        let steps = trace::CAPACITY as u32 + 6;
        (0..=steps)
            .map(|i| {
                if i < steps {
                    (1, i, i ^ 0x5a5a)
                } else {
                    (2, steps, 0)
                }
            })
            .map(|e| if Some(e.1) == skip { (1, 7777, 0) } else { e })
            .collect()
    }

    fn fault_events() -> Vec<(u16, u32, u32)> {
        let mut v: Vec<_> = (0..20).map(|i| (1, 1000 + i, i)).collect();
        v.push((3, 0x10, 0));
        v
    }

    #[test]
    fn parses_kernel_printed_rings_and_names_events() {
        let mut c = kernel_lines("prq-server", &[(4, 0x10, 0), (6, 0x20, 1)]);
        c.insert(1, "[iommu-server] hello".into());
        c.extend(kernel_lines("vmm-frontend", &[(9, 2, 5)]));
        c.pop(); // cut off: no end line
        let d = parse(&c);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].task, "prq-server");
        assert!(d[0].complete);
        assert_eq!(
            d[0].entries,
            vec![
                Entry {
                    code: 4,
                    seq: 0,
                    a: 0x10,
                    b: 0
                },
                Entry {
                    code: 6,
                    seq: 1,
                    a: 0x20,
                    b: 1
                },
            ]
        );
        assert!(!d[1].complete);
        assert_eq!(d[1].entries.len(), 1);
        assert_eq!(event_name("prq-server", 4), "CookieIssued");
        assert_eq!(event_name("vmm-frontend", 9), "Refused");
        assert_eq!(event_name("idle", 1), "event#1");
        let r = render_all(&d, Some("prq-server"), "the console").unwrap();
        assert!(r.contains("CookieIssued"), "{r}");
        assert!(r.contains("DrainStart"), "{r}");
        assert!(render_all(&d, Some("idle"), "the console").is_err());
    }

    #[test]
    fn the_dump_cases_accept_the_exact_tail_and_refuse_a_gap() {
        let panic = "dump_panic_lists_last_events_in_order";
        let fault = "dump_fault_lists_last_events_in_order";
        let mut good = kernel_lines("test-dump", &panic_events(None));
        good.extend(kernel_lines("test-dump", &fault_events()));
        assert_eq!(check_case(panic, &good, None), Some(Ok(())));
        assert_eq!(check_case(fault, &good, None), Some(Ok(())));
        // One event changed in the middle of the tail.
        let mut bad = kernel_lines("test-dump", &panic_events(Some(60)));
        bad.extend(kernel_lines("test-dump", &fault_events()));
        assert!(matches!(check_case(panic, &bad, None), Some(Err(_))));
        // The fault's ring is missing.
        let only_panic = kernel_lines("test-dump", &panic_events(None));
        assert!(matches!(check_case(fault, &only_panic, None), Some(Err(_))));
        assert!(matches!(check_case(panic, &[], None), Some(Err(_))));
        assert_eq!(check_case("ipc_ping_pong", &[], None), None);
    }

    #[test]
    fn the_live_case_needs_the_live_ring() {
        let live = "dump_live_lists_events_of_running_image";
        let events: Vec<_> = (0..5u32).map(|i| (4u16, i, !i)).collect();
        let d = parse(&kernel_lines("test-dump", &events));
        assert_eq!(check_case(live, &[], Some(&Ok(d.clone()))), Some(Ok(())));
        let short = parse(&kernel_lines("test-dump", &events[..4]));
        assert!(matches!(
            check_case(live, &[], Some(&Ok(short))),
            Some(Err(_))
        ));
        assert!(matches!(check_case(live, &[], None), Some(Err(_))));
        assert!(matches!(
            check_case(live, &[], Some(&Err("x".into()))),
            Some(Err(_))
        ));
    }
}
