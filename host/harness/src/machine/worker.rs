//! The worker thread that drives a machine's coroutines, one run at a time,
//! and the caller's side: handing a run over and waiting for its report
//! under the wall-clock limit.

use super::coro::{
    new_coroutine, payload_text, retire_coroutine, Call, CoroPort, Resume, TaskCoro, LAST_PANIC,
};
use super::state::State;
use crate::trace::What;
use crate::{Outcome, Report};
use corosensei::CoroutineResult;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// With unwinding, a worker serves its caller's runs one after another.
/// Without, a shutdown parks the worker for good, so each run has its own.
const REUSE_WORKER: bool = cfg!(panic = "unwind");

thread_local! {
    /// This thread's worker: where its runs are sent.
    static WORKER: RefCell<Option<Sender<Arc<Shared>>>> = const { RefCell::new(None) };
}

/// A run's state, shared by the worker that drives it and the caller that
/// waits for it (which finishes it itself after a wall-clock timeout).
pub(crate) struct Shared {
    pub(super) state: Mutex<State>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Harness code never panics while holding the lock outside a
        // `catch_unwind`, but a poisoned lock must not hide the report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// report (with the decisions taken and the end state), or None when the
/// caller already took it (wall-clock timeout).
fn drive(shared: &Shared) -> Option<Report> {
    let mut coros: Vec<Option<TaskCoro>> = Vec::new();
    {
        let mut g = shared.lock();
        coros.resize_with(g.k.tasks.len(), || None);
        let st = &mut *g;
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| st.boot())) {
            st.unwound(p);
        }
    }
    loop {
        let (t, regs) = {
            let mut g = shared.lock();
            respawn(&mut g, &mut coros);
            if g.plat.finished {
                break;
            }
            match g.token.filter(|&t| coros[t].is_some()) {
                Some(t) => {
                    let x = &g.k.tasks[t].save.x;
                    (t, [x[0], x[1], x[2], x[3], x[4], x[5]].map(|v| v as usize))
                }
                None => {
                    g.plat.finish(Outcome::KernelPanic(
                        "harness: the chosen task has no coroutine".into(),
                    ));
                    break;
                }
            }
        };
        let Some(c) = coros[t].as_mut() else { break };
        let r = panic::catch_unwind(AssertUnwindSafe(|| c.resume(Resume::Run(regs))));
        let mut g = shared.lock();
        if g.plat.finished {
            // The caller gave up waiting (wall-clock timeout).
            break;
        }
        match r {
            Ok(CoroutineResult::Yield(Call(num, args))) => {
                let st = &mut *g;
                let r = panic::catch_unwind(AssertUnwindSafe(|| st.syscall(t, num, args)));
                if let Err(p) = r {
                    st.unwound(p);
                }
            }
            Ok(CoroutineResult::Return(())) => {
                let name = g.plat.trace.tasks[t].clone();
                g.plat.finish(Outcome::KernelPanic(format!(
                    "harness: task {name}'s coroutine ended while it was running"
                )));
            }
            Err(p) => {
                let msg = LAST_PANIC
                    .with(|l| l.borrow_mut().take())
                    .unwrap_or_else(|| payload_text(&*p));
                g.plat.finish(Outcome::KernelPanic(msg));
            }
        }
    }
    let report = {
        let mut g = shared.lock();
        let mut report = g.plat.report.take();
        if let Some(r) = &mut report {
            r.choices = std::mem::take(&mut g.chooser.record);
            r.end_state = g.end_state(r);
        }
        report
    };
    // No incarnation outlives the run: every one unwinds before `run`
    // returns, in task order.
    for c in coros.into_iter().flatten() {
        retire_coroutine(c);
    }
    report
}

/// Replaces the coroutines of the tasks the core reset during the step.
pub(super) fn respawn(g: &mut State, coros: &mut [Option<TaskCoro>]) {
    for i in std::mem::take(&mut g.respawn) {
        if let Some(old) = coros[i].take() {
            retire_coroutine(old);
        }
        match new_coroutine(g.entries[i].clone()) {
            Ok(c) => coros[i] = Some(c),
            Err(e) => {
                g.plat.finish(Outcome::KernelPanic(format!(
                    "harness: cannot map a task stack: {e}"
                )));
                return;
            }
        }
    }
}

/// The worker thread: drives the runs its caller sends, one at a time.
pub(super) fn worker(jobs: Receiver<Arc<Shared>>) {
    userlib::host::install(Arc::new(CoroPort));
    while let Ok(shared) = jobs.recv() {
        let r = panic::catch_unwind(AssertUnwindSafe(|| drive(&shared)));
        let (report, done) = {
            let mut g = shared.lock();
            let report = match r {
                Ok(report) => report,
                // A bug in the worker's own code: still answer.
                Err(p) => {
                    g.plat.finish(Outcome::KernelPanic(payload_text(&*p)));
                    g.plat.report.take()
                }
            };
            (report, g.plat.done.clone())
        };
        // The caller holds the last reference: what the run owned is
        // dropped on its side once it is done with it.
        drop(shared);
        // Cache maintenance the tasks recorded on this thread (read only by
        // unit tests of the tasks, on threads of their own): not kept.
        let _ = userlib::cache::host_log();
        if let Some(report) = report {
            let _ = done.send(report);
        }
        if !REUSE_WORKER {
            return;
        }
    }
}

/// Hands `shared` to this thread's worker, starting one if there is none.
pub(super) fn submit(shared: Arc<Shared>) -> Result<(), String> {
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        if let Some(tx) = w.as_ref() {
            if tx.send(shared.clone()).is_ok() {
                return Ok(());
            }
        }
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("harness-worker".into())
            .spawn(move || worker(rx))
            .map_err(|e| format!("harness: cannot start the worker thread: {e}"))?;
        tx.send(shared)
            .map_err(|_| "harness: the worker thread is gone".to_string())?;
        *w = REUSE_WORKER.then_some(tx);
        Ok(())
    })
}

/// Forgets this thread's worker (it is stuck in task code, or gone).
fn abandon_worker() {
    WORKER.with(|w| w.borrow_mut().take());
}

/// Waits for the worker's report, or finishes the run after `limit`.
pub(super) fn wait(
    shared: &Shared,
    reports: &Receiver<Report>,
    limit: Duration,
    bare: impl Fn(Outcome) -> Report,
) -> Report {
    match reports.recv_timeout(limit) {
        Ok(report) => report,
        Err(RecvTimeoutError::Disconnected) => {
            abandon_worker();
            bare(Outcome::KernelPanic(
                "harness: the worker thread died".into(),
            ))
        }
        Err(RecvTimeoutError::Timeout) => {
            // Some task ran without making system calls for too long. The
            // worker is inside its coroutine, not holding the lock (unless
            // the harness itself is stuck): finish with what was recorded.
            // The worker finds the run over when the task next enters the
            // kernel, retires its coroutines and exits; this thread gets a
            // new worker for its next run.
            abandon_worker();
            let report = match shared.state.try_lock() {
                Ok(mut g) if !g.plat.finished => {
                    g.plat.push(What::Injected {
                        text: "wall-clock timeout".into(),
                    });
                    g.plat.finish(Outcome::WallTimeout);
                    g.plat.report.take()
                }
                // It finished meanwhile: its report is on the way.
                Ok(g) => {
                    drop(g);
                    reports.recv_timeout(Duration::from_secs(1)).ok()
                }
                Err(_) => None,
            };
            report.unwrap_or_else(|| bare(Outcome::WallTimeout))
        }
    }
}
