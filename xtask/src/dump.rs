//! `cargo xtask dump`: the per-task trace rings (docs/tracing.md) decoded.
//!
//! A task that panics prints its ring on the console (userlib's panic
//! handler: `[task] trace: begin`, one `trace: <seq> <code> <a> <b>` line
//! per entry, oldest first, `trace: end`). This module finds those blocks
//! in a console (a saved log, or the console of an image this command
//! boots) and names each event code with the task's event table
//! (`trace::events`). Reading the rings of a running image through QEMU's
//! gdb stub is not built.

use std::fmt::Write as _;

/// One entry as printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u16,
    pub code: u16,
    pub a: u32,
    pub b: u32,
}

/// One task's ring as printed when it panicked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dump {
    pub task: String,
    pub entries: Vec<Entry>,
    /// Whether the `trace: end` line was seen (else the dump was cut off).
    pub complete: bool,
}

fn num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_entry(text: &str) -> Option<Entry> {
    let mut it = text.split_whitespace();
    let seq = u16::try_from(num(it.next()?)?).ok()?;
    let code = u16::try_from(num(it.next()?)?).ok()?;
    let a = u32::try_from(num(it.next()?)?).ok()?;
    let b = u32::try_from(num(it.next()?)?).ok()?;
    it.next().is_none().then_some(Entry { seq, code, a, b })
}

/// Every ring dump in `console`, in console order (a task that panicked
/// twice appears twice).
pub fn parse(console: &[String]) -> Vec<Dump> {
    let mut out: Vec<Dump> = Vec::new();
    // Index in `out` of each task's open dump.
    let mut open: Vec<(String, usize)> = Vec::new();
    for line in console {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((task, text)) = rest.split_once("] ") else {
            continue;
        };
        let Some(body) = text.strip_prefix("trace: ") else {
            continue;
        };
        let slot = open.iter().position(|(t, _)| t == task);
        match (body, slot) {
            ("begin", s) => {
                if let Some(s) = s {
                    open.remove(s);
                }
                out.push(Dump {
                    task: task.to_string(),
                    entries: Vec::new(),
                    complete: false,
                });
                open.push((task.to_string(), out.len() - 1));
            }
            ("end", Some(s)) => {
                out[open[s].1].complete = true;
                open.remove(s);
            }
            (_, Some(s)) => {
                if let Some(e) = parse_entry(body) {
                    out[open[s].1].entries.push(e);
                }
            }
            _ => {}
        }
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

/// Renders the dumps of `console` (only `task`'s with a name).
pub fn render_console(console: &[String], task: Option<&str>) -> Result<String, String> {
    let dumps: Vec<Dump> = parse(console)
        .into_iter()
        .filter(|d| task.is_none_or(|t| d.task == t))
        .collect();
    if dumps.is_empty() {
        return Err(match task {
            Some(t) => format!("no trace ring of {t} in the console (did it panic?)"),
            None => "no trace ring in the console (no task panicked)".to_string(),
        });
    }
    Ok(dumps.iter().map(render).collect())
}

/// The `dump_*` QEMU cases, judged by the runner from the console (the
/// task that printed the dump is dead and cannot judge it). `None`: not a
/// dump case.
pub fn check_case(case: &str, console: &[String]) -> Option<Result<(), String>> {
    match case {
        "dump_panic_lists_last_events_in_order" => Some(check_panic_dump(console)),
        _ => None,
    }
}

/// test-dump recorded Step 0..STEPS (a = i, b = i ^ 0x5a5a), then
/// Panicking (a = STEPS), with STEPS = CAPACITY + 6: the ring must list
/// exactly the last CAPACITY events, in order, the oldest overwritten.
fn check_panic_dump(console: &[String]) -> Result<(), String> {
    let cap = trace::CAPACITY as u32;
    let steps = cap + 6;
    let dumps: Vec<Dump> = parse(console)
        .into_iter()
        .filter(|d| d.task == "test-dump")
        .collect();
    let [d] = dumps.as_slice() else {
        return Err(format!("{} dumps of test-dump, expected 1", dumps.len()));
    };
    if !d.complete {
        return Err("the dump was cut off".into());
    }
    let total = steps + 1;
    let first = total - cap;
    let want: Vec<(String, u16, u32, u32)> = (first..total)
        .map(|seq| {
            if seq < steps {
                ("Step".to_string(), seq as u16, seq, seq ^ 0x5a5a)
            } else {
                ("Panicking".to_string(), seq as u16, steps, 0)
            }
        })
        .collect();
    let got: Vec<(String, u16, u32, u32)> = d
        .entries
        .iter()
        .map(|e| (event_name(&d.task, e.code), e.seq, e.a, e.b))
        .collect();
    if got != want {
        return Err(format!(
            "dump differs: got {} entries, first {:?}, last {:?}; want first {:?}, last {:?}",
            got.len(),
            got.first(),
            got.last(),
            want.first(),
            want.last()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_blocks_per_task_and_names_events() {
        let c = lines(&[
            "[prq-server] trace: begin",
            "[iommu-server] hello",
            "[prq-server] trace: 3 4 0x10 0x0",
            "[prq-server] trace: 4 6 0x20 0x1",
            "[prq-server] trace: end",
            "[vmm-frontend] trace: begin",
            "[vmm-frontend] trace: 0 9 0x2 0x5",
        ]);
        let d = parse(&c);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].task, "prq-server");
        assert!(d[0].complete);
        assert_eq!(
            d[0].entries,
            vec![
                Entry {
                    seq: 3,
                    code: 4,
                    a: 0x10,
                    b: 0
                },
                Entry {
                    seq: 4,
                    code: 6,
                    a: 0x20,
                    b: 1
                },
            ]
        );
        assert!(!d[1].complete);
        assert_eq!(event_name("prq-server", 4), "CookieIssued");
        assert_eq!(event_name("vmm-frontend", 9), "Refused");
        assert_eq!(event_name("idle", 1), "event#1");
        let r = render_console(&c, Some("prq-server")).unwrap();
        assert!(r.contains("CookieIssued"), "{r}");
        assert!(r.contains("DrainStart"), "{r}");
        assert!(render_console(&c, Some("idle")).is_err());
    }

    fn panic_console(skip_one: bool) -> Vec<String> {
        let cap = trace::CAPACITY as u32;
        let steps = cap + 6;
        let mut c = vec!["[test-dump] trace: begin".to_string()];
        for seq in steps + 1 - cap..steps + 1 {
            if skip_one && seq == steps - 3 {
                continue;
            }
            let (code, a, b) = if seq < steps {
                (1, seq, seq ^ 0x5a5a)
            } else {
                (2, steps, 0)
            };
            c.push(format!("[test-dump] trace: {seq} {code} {a:#x} {b:#x}"));
        }
        c.push("[test-dump] trace: end".into());
        c
    }

    #[test]
    fn the_dump_case_accepts_the_exact_tail_and_refuses_a_gap() {
        assert_eq!(
            check_case(
                "dump_panic_lists_last_events_in_order",
                &panic_console(false)
            ),
            Some(Ok(()))
        );
        assert!(matches!(
            check_case(
                "dump_panic_lists_last_events_in_order",
                &panic_console(true)
            ),
            Some(Err(_))
        ));
        assert!(matches!(
            check_case("dump_panic_lists_last_events_in_order", &[]),
            Some(Err(_))
        ));
        assert_eq!(check_case("ipc_ping_pong", &[]), None);
    }
}
