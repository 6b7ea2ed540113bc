//! The host stand-in for the machine under the core (`kern::syscalls::Platform`):
//! console, interrupt enables, clock, deadline, shutdown and task resets, and
//! the trace and report of the run.

use crate::trace::{Event, Trace, What};
use crate::{Outcome, Report};
use abi::TaskId;
use kern::config::TaskDesc;
use kern::syscalls::Platform;
use kern::task::Task;
use std::collections::BTreeMap;
#[cfg(panic = "unwind")]
use std::panic;
use std::sync::mpsc::Sender;
#[cfg(not(panic = "unwind"))]
use std::thread;

/// Unwinds out of `Platform::shutdown` back to the worker.
pub(super) struct ShutdownSignal;

/// A host stand-in for the machine under the core.
pub(super) struct HostPlatform {
    pub(super) now: u64,
    pub(super) deadline: Option<u64>,
    pub(super) irq_enabled: BTreeMap<u32, bool>,
    pub(super) descs: Vec<&'static TaskDesc>,
    /// Tasks the core reset since the harness last looked (their
    /// coroutines must be replaced).
    pub(super) resets: Vec<usize>,
    /// Who is acting: the task whose system call the core is handling, or
    /// None for the harness itself (boot, injected actions).
    pub(super) cause: Option<TaskId>,
    pub(super) booting: bool,
    pub(super) trace: Trace,
    pub(super) step: u64,
    pub(super) line: Vec<u8>,
    pub(super) console: String,
    pub(super) finished: bool,
    /// The finished run's report, until the worker (or, after a wall-clock
    /// timeout, the caller) takes it.
    pub(super) report: Option<Report>,
    /// Where the report goes to `Harness::run`.
    pub(super) done: Sender<Report>,
}

impl HostPlatform {
    pub(super) fn push(&mut self, what: What) {
        self.trace.events.push(Event {
            step: self.step,
            time_ms: self.now,
            what,
        });
    }

    fn flush_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        self.console.push_str(&text);
        self.console.push('\n');
        self.push(What::Log { text });
    }

    /// Ends the run with `outcome`; the report waits in `self.report`.
    pub(super) fn finish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        if !self.line.is_empty() {
            self.flush_line();
        }
        self.finished = true;
        self.report = Some(Report {
            outcome,
            trace: Trace {
                tasks: self.trace.tasks.clone(),
                events: std::mem::take(&mut self.trace.events),
            },
            steps: self.step,
            now_ms: self.now,
            console: std::mem::take(&mut self.console),
            choices: Vec::new(),
            end_state: 0,
        });
    }
}

impl Platform for HostPlatform {
    fn console(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.flush_line();
            } else {
                self.line.push(b);
            }
        }
    }
    fn irq_enable(&mut self, intid: u32, enable: bool) {
        self.irq_enabled.insert(intid, enable);
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn set_deadline(&mut self, deadline: Option<u64>) {
        self.deadline = deadline;
    }
    fn shutdown(&mut self, status: u32) -> ! {
        self.push(What::Shutdown { status });
        self.finish(Outcome::Shutdown(status));
        #[cfg(panic = "unwind")]
        {
            panic::resume_unwind(Box::new(ShutdownSignal))
        }
        // Nothing can unwind: hand the report over from here; this worker
        // (holding the state lock) stops here for good.
        #[cfg(not(panic = "unwind"))]
        {
            if let Some(r) = self.report.take() {
                let _ = self.done.send(r);
            }
            loop {
                thread::park();
            }
        }
    }
    fn reset_task_memory(&mut self, task: &Task) {
        let Some(i) = self.descs.iter().position(|d| std::ptr::eq(*d, task.desc)) else {
            // Only descriptors the harness built exist in its task table.
            return;
        };
        self.resets.push(i);
        let id = TaskId::new(i, task.generation);
        let what = if self.booting {
            What::Start { task: id }
        } else {
            What::Restart {
                task: id,
                by: self.cause,
            }
        };
        self.push(what);
    }
}
