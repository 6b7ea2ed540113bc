//! A trace as an SVG sequence diagram: one lifeline per task, one row per
//! event — arrows for messages, replies, borrows, posts and dead codes;
//! notes for faults, restarts, notifications, timers, interrupts and logs.
//! Hand-written SVG so docs can embed diagrams from real runs without a
//! rendering dependency.

use crate::trace::{push_call, Trace, What};
use abi::{Sysnum, TaskId};
use std::fmt::Write;

const COL: i64 = 170;
const LEFT: i64 = 160;
const TOP: i64 = 60;
const ROW: i64 = 22;
/// Longest label drawn (longer ones end in `…`; the text trace has them
/// whole). Room for a decoded call with five arguments.
const LABEL_MAX: usize = 84;
/// Width of a character of the 11 px monospace font, rounded up.
const CHAR_W: i64 = 7;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c if (c as u32) < 0x20 => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn cut(s: &str) -> String {
    if s.chars().count() <= LABEL_MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(LABEL_MAX - 1).collect();
        t.push('…');
        t
    }
}

fn x_of(i: usize) -> i64 {
    LEFT + i as i64 * COL
}

struct Svg {
    body: String,
}

impl Svg {
    fn arrow(&mut self, from: usize, to: usize, y: i64, label: &str, class: &str) {
        let (x1, x2) = (x_of(from), x_of(to));
        let label = esc(&cut(label));
        if from == to {
            let _ = writeln!(
                self.body,
                r#"<path class="{class}" d="M{x1},{} h30 v{} h-30" marker-end="url(#head)"/><text class="lbl" x="{}" y="{}">{label}</text>"#,
                y - 6,
                8,
                x1 + 34,
                y
            );
            return;
        }
        let mid = (x1 + x2) / 2;
        let _ = writeln!(
            self.body,
            r#"<line class="{class}" x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" marker-end="url(#head)"/><text class="lbl" x="{mid}" y="{}" text-anchor="middle">{label}</text>"#,
            y - 4
        );
    }

    fn note(&mut self, task: usize, y: i64, text: &str, class: &str) {
        let x = x_of(task);
        let text = esc(&cut(text));
        let w = CHAR_W * text.chars().count() as i64 + 12;
        let _ = writeln!(
            self.body,
            r#"<rect class="{class}" x="{}" y="{}" width="{w}" height="{}" rx="3"/><text class="nt" x="{x}" y="{}" text-anchor="middle">{text}</text>"#,
            x - w / 2,
            y - 13,
            ROW - 4,
            y
        );
    }

    fn mark(&mut self, task: usize, y: i64, text: &str, class: &str) {
        let x = x_of(task);
        let _ = writeln!(
            self.body,
            r#"<circle class="{class}" cx="{x}" cy="{}" r="4"/><text class="{class}t" x="{}" y="{}">{}</text>"#,
            y - 4,
            x + 8,
            y,
            esc(&cut(text))
        );
    }

    fn across(&mut self, n: usize, y: i64, text: &str, class: &str) {
        let _ = writeln!(
            self.body,
            r#"<line class="{class}" x1="{}" y1="{}" x2="{}" y2="{}"/><text class="{class}t" x="{}" y="{}">{}</text>"#,
            LEFT - 40,
            y - 4,
            x_of(n.saturating_sub(1)) + 40,
            y - 4,
            LEFT - 40,
            y - 8,
            esc(&cut(text))
        );
    }
}

/// Which lifeline a console line belongs to: the kernel prefixes task
/// output with `[name]`.
fn log_owner(t: &Trace, text: &str) -> Option<usize> {
    let name = text.strip_prefix('[')?.split(']').next()?;
    t.index_of(name)
}

pub fn render(t: &Trace) -> String {
    let n = t.tasks.len().max(1);
    let rows = t.events.len() as i64;
    // Notes and marks are drawn to the right of the last lifeline.
    let width = x_of(n - 1) + 40 + LABEL_MAX as i64 * CHAR_W;
    let height = TOP + (rows + 2) * ROW;
    let mut s = Svg {
        body: String::new(),
    };
    for (k, e) in t.events.iter().enumerate() {
        let y = TOP + (k as i64 + 1) * ROW;
        let _ = writeln!(
            s.body,
            r#"<text class="step" x="6" y="{y}">{} · {}ms</text>"#,
            e.step, e.time_ms
        );
        let ix = |id: &TaskId| id.index();
        match &e.what {
            What::Start { task } => {
                s.note(ix(task), y, &format!("start {}", t.who(*task)), "start")
            }
            What::Restart { task, by } => {
                let by = by.map(|b| t.name(b)).unwrap_or_else(|| "harness".into());
                s.note(
                    ix(task),
                    y,
                    &format!("restart → {} (by {by})", t.who(*task)),
                    "start",
                )
            }
            What::Message {
                from,
                to,
                op,
                len,
                bytes,
                leases,
                decoded,
            } => {
                let mut l = String::new();
                push_call(&mut l, *op, decoded, bytes, *len);
                if !leases.is_empty() {
                    let _ = write!(
                        l,
                        " +{} lease{}",
                        leases.len(),
                        if leases.len() > 1 { "s" } else { "" }
                    );
                }
                s.arrow(ix(from), ix(to), y, &l, "msg")
            }
            What::Reply {
                from,
                to,
                code,
                bytes,
                decoded,
                ..
            } => {
                let l = match decoded.as_ref().and_then(|d| d.text.clone()) {
                    Some(text) => text,
                    None if *code == 0 => format!("ok {}B", bytes.len()),
                    None => format!("code {code:#x}"),
                };
                s.arrow(ix(from), ix(to), y, &l, "rep")
            }
            What::ReplyDropped { from, to, code } => s.arrow(
                ix(from),
                ix(to),
                y,
                &format!("reply {code:#x} dropped"),
                "drop",
            ),
            What::DeadCode { task, peer, .. } => s.arrow(
                ix(peer),
                ix(task),
                y,
                &format!("dead: {} is gen {}", t.name(*peer), peer.generation().0),
                "dead",
            ),
            What::Borrow {
                server,
                lender,
                call,
                index,
                offset,
                result,
            } => {
                let r = match result {
                    Ok(n) => format!("{n}B"),
                    Err(c) => format!("err {c:#x}"),
                };
                let (verb, from, to) = match call {
                    Sysnum::BorrowRead => ("read", ix(lender), ix(server)),
                    Sysnum::BorrowWrite => ("write", ix(server), ix(lender)),
                    _ => ("info", ix(lender), ix(server)),
                };
                s.arrow(
                    from,
                    to,
                    y,
                    &format!("lease {index} {verb} @{offset}: {r}"),
                    "lease",
                )
            }
            What::Post { from, to, bits, .. } => {
                s.arrow(ix(from), ix(to), y, &format!("post {bits:#x}"), "post")
            }
            What::Notification { task, bits } => {
                s.mark(ix(task), y, &format!("notified {bits:#x}"), "ev")
            }
            What::TimerSet { task, deadline, .. } => {
                let l = deadline
                    .map(|d| format!("timer @{d}ms"))
                    .unwrap_or_else(|| "timer off".into());
                s.mark(ix(task), y, &l, "ev")
            }
            What::TimerFired { task, bits } => {
                s.mark(ix(task), y, &format!("timer fired {bits:#x}"), "ev")
            }
            What::Interrupt { intid, task, bits } => {
                s.mark(ix(task), y, &format!("irq {intid} → {bits:#x}"), "irq")
            }
            What::IrqControl { task, mask, enable } => s.mark(
                ix(task),
                y,
                &format!("irq {} {mask:#x}", if *enable { "on" } else { "off" }),
                "ev",
            ),
            What::Refresh { task, peer } => {
                s.mark(ix(task), y, &format!("refresh → {}", t.who(*peer)), "ev")
            }
            What::Fault {
                task, kind, detail, ..
            } => s.note(
                ix(task),
                y,
                &format!("FAULT {} {detail:#x}", kern::fault_name(*kind)),
                "fault",
            ),
            What::Log { text } => match log_owner(t, text) {
                Some(i) => s.mark(i, y, text, "log"),
                None => s.across(n, y, text, "log"),
            },
            What::Injected { text } => s.across(n, y, &format!("inject: {text}"), "inj"),
            What::Note {
                task: Some(task),
                text,
            } => s.mark(ix(task), y, text, "note"),
            What::Note { task: None, text } => s.across(n, y, text, "note"),
            What::Shutdown { status } => s.across(n, y, &format!("shutdown {status}"), "end"),
            What::StepLimit { limit } => s.across(n, y, &format!("step limit {limit}"), "end"),
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">"#
    );
    out.push_str(concat!(
        "<defs><marker id=\"head\" markerWidth=\"8\" markerHeight=\"8\" refX=\"7\" refY=\"4\" orient=\"auto\">",
        "<path d=\"M0,0 L8,4 L0,8 z\" fill=\"context-stroke\"/></marker></defs>\n",
        "<style>",
        ".life{stroke:#999;stroke-dasharray:4 4}",
        ".msg{stroke:#000;stroke-width:1.4}",
        ".rep{stroke:#555;stroke-dasharray:6 3}",
        ".drop{stroke:#aaa;stroke-dasharray:2 3}",
        ".dead{stroke:#c00;stroke-dasharray:6 3}",
        ".lease{stroke:#07a;stroke-dasharray:1 3;stroke-width:1.6}",
        ".post{stroke:#05c}",
        ".lbl{fill:#111}",
        ".nt{fill:#000}",
        ".start{fill:#dfd;stroke:#393}",
        ".fault{fill:#fdd;stroke:#c00}",
        ".ev{fill:#05c}.evt{fill:#05c}",
        ".irq{fill:#a50}.irqt{fill:#a50}",
        ".log{fill:#888;stroke:#888}.logt{fill:#777;font-style:italic}",
        ".inj{stroke:#e80}.injt{fill:#c60}",
        ".note{fill:#7a3;stroke:#7a3}.notet{fill:#4a7a1a}",
        ".end{stroke:#000;stroke-width:2}.endt{fill:#000;font-weight:bold}",
        ".step{fill:#999;font-size:9px}",
        ".head{fill:#eef;stroke:#336}",
        "</style>\n",
    ));
    let _ = writeln!(
        out,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    for (i, name) in t.tasks.iter().enumerate() {
        let x = x_of(i);
        let _ = writeln!(
            out,
            r#"<line class="life" x1="{x}" y1="{}" x2="{x}" y2="{}"/><rect class="head" x="{}" y="14" width="{}" height="24" rx="4"/><text x="{x}" y="30" text-anchor="middle" font-weight="bold">{}</text>"#,
            TOP - 20,
            height - 10,
            x - COL / 2 + 10,
            COL - 20,
            esc(name)
        );
    }
    out.push_str(&s.body);
    out.push_str("</svg>\n");
    out
}
