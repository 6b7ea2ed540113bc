//! What a run did, as structured events, and its text rendering.
//!
//! Every event carries the step (the number of kernel entries so far) and
//! the virtual time. Tasks are named by `TaskId`, so an event says which
//! generation of a task it concerns: `server#1` is the server after its first
//! restart. Nothing in a trace depends on wall time or thread timing, so one
//! seed gives byte-identical traces. (Only fault details that are addresses
//! — memory faults, bad syscall arguments — are host addresses and may
//! differ between processes.)

use abi::{FaultKind, Sysnum, TaskId, LEASE_READ, LEASE_WRITE};
use std::fmt::Write;

/// Decodes the messages of one server's interface for traces.
///
/// Registered per receiving task (`Harness::decoder`); generated IDL code
/// can implement it from its `dispatch_decode`. Every method may decline
/// (`None`): the trace then shows the operation number and hex bytes.
pub trait Decoder: Send + Sync {
    /// Interface name, e.g. `Echo`.
    fn interface(&self) -> &str;
    /// Operation name for `op`.
    fn operation(&self, op: u16) -> Option<String>;
    /// The request's arguments as text.
    fn request(&self, _op: u16, _bytes: &[u8]) -> Option<String> {
        None
    }
    /// The reply (code and bytes) of operation `op` as text.
    fn reply(&self, _op: u16, _code: u32, _bytes: &[u8]) -> Option<String> {
        None
    }
    /// The request's arguments as text, knowing the leases that came with
    /// it (what a generated `dispatch_decode` checks). By default the
    /// leases are ignored and [`Decoder::request`] answers.
    fn request_leased(&self, op: u16, bytes: &[u8], _leases: &[LeaseSummary]) -> Option<String> {
        self.request(op, bytes)
    }
}

/// A decoder's view of one message or reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub interface: String,
    pub operation: String,
    /// Decoded arguments or reply, if the decoder understood them.
    pub text: Option<String>,
}

/// One lease lent with a message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeaseSummary {
    pub attributes: u32,
    pub len: u64,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// The task started at boot.
    Start {
        task: TaskId,
    },
    /// The task was restarted; `task` carries the new generation. `by` is
    /// the task whose system call restarted it (the supervisor), or None
    /// when the harness did (`Action::Restart`).
    Restart {
        task: TaskId,
        by: Option<TaskId>,
    },
    /// A message reached its receiver.
    Message {
        from: TaskId,
        to: TaskId,
        op: u16,
        /// Length as sent; `bytes` holds at most `abi::MAX_MESSAGE` of it.
        len: usize,
        bytes: Vec<u8>,
        leases: Vec<LeaseSummary>,
        decoded: Option<Decoded>,
    },
    /// A reply reached its client.
    Reply {
        from: TaskId,
        to: TaskId,
        op: u16,
        code: u32,
        /// Length as the server sent it (may exceed what the client took).
        len: usize,
        bytes: Vec<u8>,
        decoded: Option<Decoded>,
    },
    /// A reply to a task that was not waiting for it was dropped.
    ReplyDropped {
        from: TaskId,
        to: TaskId,
        code: u32,
    },
    /// `task`'s `call` ended with a dead code: `peer` restarted or died and
    /// is now at the generation carried by `peer`.
    DeadCode {
        task: TaskId,
        peer: TaskId,
        call: Sysnum,
    },
    /// A server copied to or from a lease (`call` is one of the borrows).
    Borrow {
        server: TaskId,
        lender: TaskId,
        call: Sysnum,
        index: usize,
        offset: usize,
        /// Bytes copied (lease length for `BorrowInfo`), or the error code.
        result: Result<usize, u32>,
    },
    Post {
        from: TaskId,
        to: TaskId,
        bits: u32,
        code: u32,
    },
    /// A `recv` ended with notification bits.
    Notification {
        task: TaskId,
        bits: u32,
    },
    TimerSet {
        task: TaskId,
        deadline: Option<u64>,
        bits: u32,
    },
    TimerFired {
        task: TaskId,
        bits: u32,
    },
    /// An interrupt was delivered to its owner.
    Interrupt {
        intid: u32,
        task: TaskId,
        bits: u32,
    },
    IrqControl {
        task: TaskId,
        mask: u32,
        enable: bool,
    },
    /// `sys_refresh_task_id` told `task` the current id of `peer`.
    Refresh {
        task: TaskId,
        peer: TaskId,
    },
    Fault {
        task: TaskId,
        kind: FaultKind,
        detail: usize,
        message: Option<String>,
    },
    /// One console line (task logs are prefixed `[name]` by the kernel).
    Log {
        text: String,
    },
    /// Something the test injected (actions, device interrupts).
    Injected {
        text: String,
    },
    /// An annotation from a note source (`Harness::note_source`), e.g. a
    /// command a device model executed. `task` is the task that ran when
    /// it happened (its lifeline in diagrams), None between steps.
    Note {
        task: Option<TaskId>,
        text: String,
    },
    Shutdown {
        status: u32,
    },
    StepLimit {
        limit: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub step: u64,
    pub time_ms: u64,
    pub what: What,
}

/// The record of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Task names by index.
    pub tasks: Vec<String>,
    pub events: Vec<Event>,
}

impl Trace {
    /// `name#generation`.
    pub fn who(&self, id: TaskId) -> String {
        match self.tasks.get(id.index()) {
            Some(n) => format!("{}#{}", n, id.generation().0),
            None => format!("task{}#{}", id.index(), id.generation().0),
        }
    }

    /// Index of the task called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t == name)
    }

    /// The events, as `What`s, in order.
    pub fn whats(&self) -> impl DoubleEndedIterator<Item = &What> {
        self.events.iter().map(|e| &e.what)
    }

    /// Message events as `(sender name, receiver name, operation)`.
    pub fn messages(&self) -> Vec<(String, String, u16)> {
        self.whats()
            .filter_map(|w| match w {
                What::Message { from, to, op, .. } => Some((self.name(*from), self.name(*to), *op)),
                _ => None,
            })
            .collect()
    }

    /// The plain name of a task (no generation).
    pub fn name(&self, id: TaskId) -> String {
        self.tasks
            .get(id.index())
            .cloned()
            .unwrap_or_else(|| format!("task{}", id.index()))
    }

    /// The console output, one line per log event.
    pub fn logs(&self) -> Vec<&str> {
        self.whats()
            .filter_map(|w| match w {
                What::Log { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// One line describing `what` (without step and time).
    pub fn describe(&self, what: &What) -> String {
        let w = |id: TaskId| self.who(id);
        match what {
            What::Start { task } => format!("start     {}", w(*task)),
            What::Restart { task, by } => format!(
                "restart   {} (by {})",
                w(*task),
                by.map(w).unwrap_or_else(|| "the harness".to_string())
            ),
            What::Message {
                from,
                to,
                op,
                len,
                bytes,
                leases,
                decoded,
            } => {
                let mut s = format!("send      {} -> {}  ", w(*from), w(*to));
                push_call(&mut s, *op, decoded, bytes, *len);
                if !leases.is_empty() {
                    s.push_str("  leases [");
                    for (i, l) in leases.iter().enumerate() {
                        if i > 0 {
                            s.push_str(", ");
                        }
                        let _ = write!(s, "{} {}", lease_access(l.attributes), l.len);
                    }
                    s.push(']');
                }
                s
            }
            What::Reply {
                from,
                to,
                op,
                code,
                len,
                bytes,
                decoded,
            } => {
                let mut s = format!("reply     {} -> {}  ", w(*from), w(*to));
                match decoded {
                    Some(d) => {
                        let _ = write!(s, "{}.{} -> ", d.interface, d.operation);
                        match &d.text {
                            Some(t) => s.push_str(t),
                            None => push_code_bytes(&mut s, *code, bytes, *len),
                        }
                    }
                    None => {
                        let _ = write!(s, "op {op} -> ");
                        push_code_bytes(&mut s, *code, bytes, *len);
                    }
                }
                s
            }
            What::ReplyDropped { from, to, code } => {
                format!(
                    "dropped   {} -> {}  code {code:#x}: not waiting for it",
                    w(*from),
                    w(*to)
                )
            }
            What::DeadCode { task, peer, call } => format!(
                "dead      {}: {} restarted, now generation {} (during {:?})",
                w(*task),
                self.name(*peer),
                peer.generation().0,
                call
            ),
            What::Borrow {
                server,
                lender,
                call,
                index,
                offset,
                result,
            } => {
                let verb = match call {
                    Sysnum::BorrowRead => "read",
                    Sysnum::BorrowWrite => "write",
                    _ => "info",
                };
                let r = match result {
                    Ok(n) => format!("{n} bytes"),
                    Err(c) => format!("error {c:#x}"),
                };
                format!(
                    "borrow    {} <- {} lease {index} {verb} @{offset}: {r}",
                    w(*server),
                    w(*lender)
                )
            }
            What::Post {
                from,
                to,
                bits,
                code,
            } => {
                let mut s = format!("post      {} -> {}  bits {bits:#x}", w(*from), w(*to));
                if *code != 0 {
                    let _ = write!(s, " -> code {code:#x}");
                }
                s
            }
            What::Notification { task, bits } => format!("notified  {} bits {bits:#x}", w(*task)),
            What::TimerSet {
                task,
                deadline,
                bits,
            } => match deadline {
                Some(d) => format!("timer     {} armed for {d} ms, bits {bits:#x}", w(*task)),
                None => format!("timer     {} disarmed", w(*task)),
            },
            What::TimerFired { task, bits } => {
                format!("timer     {} fired, bits {bits:#x}", w(*task))
            }
            What::Interrupt { intid, task, bits } => {
                format!("irq       {intid} -> {} bits {bits:#x}", w(*task))
            }
            What::IrqControl { task, mask, enable } => format!(
                "irqctl    {} {} {mask:#x}",
                w(*task),
                if *enable { "enables" } else { "disables" }
            ),
            What::Refresh { task, peer } => format!(
                "refresh   {}: {} is {}",
                w(*task),
                self.name(*peer),
                w(*peer)
            ),
            What::Fault {
                task,
                kind,
                detail,
                message,
            } => {
                let mut s = format!(
                    "FAULT     {}: {} {detail:#x}",
                    w(*task),
                    kern::fault_name(*kind)
                );
                if let Some(m) = message {
                    let _ = write!(s, " \"{m}\"");
                }
                s
            }
            What::Log { text } => format!("log       {text}"),
            What::Injected { text } => format!("inject    {text}"),
            What::Note {
                task: Some(task),
                text,
            } => format!("note      {}: {text}", w(*task)),
            What::Note { task: None, text } => format!("note      {text}"),
            What::Shutdown { status } => format!("shutdown  status {status}"),
            What::StepLimit { limit } => format!("LIMIT     step limit {limit} reached"),
        }
    }

    /// One event per line: step, virtual time, description.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "tasks: {}", self.tasks.join(", "));
        for e in &self.events {
            let _ = writeln!(
                s,
                "{:>6} {:>6}ms  {}",
                e.step,
                e.time_ms,
                self.describe(&e.what)
            );
        }
        s
    }

    /// The last `n` lines of [`Trace::text`], for failure messages.
    pub fn tail_text(&self, n: usize) -> String {
        let t = self.text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// An SVG sequence diagram of the run.
    pub fn svg(&self) -> String {
        crate::svg::render(self)
    }
}

fn lease_access(attributes: u32) -> &'static str {
    match (attributes & LEASE_READ != 0, attributes & LEASE_WRITE != 0) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        (false, false) => "-",
    }
}

/// `Interface.op(args)` or `op N [hex]`.
pub(crate) fn push_call(
    s: &mut String,
    op: u16,
    decoded: &Option<Decoded>,
    bytes: &[u8],
    len: usize,
) {
    match decoded {
        Some(d) => {
            let _ = write!(s, "{}.{}(", d.interface, d.operation);
            match &d.text {
                Some(t) => s.push_str(t),
                None => push_hex(s, bytes, len),
            }
            s.push(')');
        }
        None => {
            let _ = write!(s, "op {op} ");
            push_hex(s, bytes, len);
        }
    }
}

fn push_code_bytes(s: &mut String, code: u32, bytes: &[u8], len: usize) {
    if code == 0 {
        s.push_str("ok ");
    } else {
        let _ = write!(s, "code {code:#x} ");
    }
    push_hex(s, bytes, len);
}

/// Hex bytes, at most 32 shown; the full length when cut or different.
pub(crate) fn push_hex(s: &mut String, bytes: &[u8], len: usize) {
    const SHOWN: usize = 32;
    s.push('[');
    for (i, b) in bytes.iter().take(SHOWN).enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    if bytes.len() > SHOWN || len != bytes.len() {
        let _ = write!(s, " ..{len} bytes");
    }
    s.push(']');
}
