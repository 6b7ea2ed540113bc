//! Task coroutines: each incarnation of a task runs its entry function on a
//! stackful coroutine; a system call suspends it, the worker resumes it with
//! the result, a retired incarnation unwinds. Also the panic hook that turns
//! a task's panic into its fault.

use super::Entry;
use abi::{Generation, Sysnum};
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::thread;
use userlib::host::HostKernel;

/// Unwinds a retired task coroutine. Never seen outside this module.
struct Retired;

/// Stack of each task coroutine: what a spawned thread gets by default
/// (task code ran on such threads before). Mapped lazily, so only the
/// pages a task touches cost memory.
const TASK_STACK: usize = 2 << 20;

/// Stacks kept for reuse per worker thread (a machine has at most
/// `abi::MAX_TASKS` coroutines alive, plus one being replaced).
const STACK_POOL: usize = 40;

/// What a suspended task coroutine is resumed with.
pub(super) enum Resume {
    /// Run on: the task's x0..x5 (the result of its system call).
    Run([usize; 6]),
    /// This incarnation is over (restart, or the run ended): unwind.
    Retire,
}

/// What a task coroutine suspends with: a system call.
pub(super) struct Call(pub(super) Sysnum, pub(super) [usize; 7]);

type TaskYielder = Yielder<Resume, Call>;
pub(super) type TaskCoro = Coroutine<Resume, Call, (), DefaultStack>;

thread_local! {
    /// The yielder of the task coroutine this thread is running; null while
    /// the thread runs harness or kernel code (a panic there is a harness
    /// or kernel bug, not a task fault).
    static YIELDER: Cell<*const TaskYielder> = const { Cell::new(std::ptr::null()) };
    /// Set by the panic hook when task code panicked (as opposed to an
    /// unwind the coroutine library starts to destroy a coroutine).
    static TASK_PANICKED: Cell<bool> = const { Cell::new(false) };
    /// The last panic message seen by the hook on this thread.
    pub(super) static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Stacks of finished coroutines, for the next ones on this thread.
    static STACKS: RefCell<Vec<DefaultStack>> = const { RefCell::new(Vec::new()) };
}

fn in_task() -> bool {
    !YIELDER.with(Cell::get).is_null()
}

/// Stops a retired incarnation: unwinds its coroutine to the task body.
fn retire() -> ! {
    #[cfg(panic = "unwind")]
    {
        panic::resume_unwind(Box::new(Retired))
    }
    // Without unwinding the worker never resumes a coroutine to retire it
    // (it leaks it instead), so this is not reached.
    #[cfg(not(panic = "unwind"))]
    std::process::abort()
}

pub(super) fn payload_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic payload)".to_string()
    }
}

/// Routes panics in task coroutines into the task-fault path; every other
/// panic goes to the hook that was installed before.
pub(super) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            // Same text as the image's panic handler hands to sys_panic,
            // on one line.
            let msg = format!("panic: {info}").replace('\n', " ");
            LAST_PANIC.with(|l| *l.borrow_mut() = Some(msg.clone()));
            if !in_task() {
                previous(info);
                return;
            }
            if cfg!(panic = "unwind") {
                // The task body catches the unwind and calls sys_panic; the
                // message is in LAST_PANIC.
                TASK_PANICKED.with(|f| f.set(true));
                return;
            }
            // Nothing can unwind: fault the task from here, like the image's
            // panic handler. The worker never resumes this coroutine again.
            let args = [msg.as_ptr() as usize, msg.len(), 0, 0, 0, 0, 0];
            enter(Sysnum::Panic, args);
            retire();
        }));
    });
}

/// The `HostKernel` of the worker thread: a system call suspends the
/// running task coroutine until the worker resumes it with the result.
pub(super) struct CoroPort;

impl HostKernel for CoroPort {
    fn syscall(&self, num: Sysnum, args: [usize; 7]) -> [usize; 6] {
        if cfg!(panic = "unwind") && thread::panicking() {
            // Destructors of an incarnation that is unwinding (retired, or
            // dying of a panic) cannot reach the kernel: on the target that
            // task would already be stopped. Answer as if every peer were
            // gone. (An unwinding coroutine never suspends, so the thread's
            // panic count is this coroutine's.)
            return [abi::dead_code(Generation(0)) as usize, 0, 0, 0, 0, 0];
        }
        enter(num, args)
    }
}

/// Suspends the running task coroutine with a system call; returns its
/// result when the worker resumes it.
fn enter(num: Sysnum, args: [usize; 7]) -> [usize; 6] {
    let y = YIELDER.with(Cell::get);
    assert!(
        !y.is_null(),
        "harness: system call {num:?} outside a task (device hooks and test code cannot make one)"
    );
    YIELDER.with(|c| c.set(std::ptr::null()));
    // SAFETY: `YIELDER` is non-null only while the coroutine whose body
    // stored it runs (the body clears it before every switch away and sets
    // it again when it is resumed), and this code runs on that coroutine's
    // stack; the `Yielder` lives as long as the coroutine's body.
    let r = unsafe { &*y }.suspend(Call(num, args));
    YIELDER.with(|c| c.set(y));
    match r {
        Resume::Run(x) => x,
        Resume::Retire => retire(),
    }
}

/// The body of every task coroutine.
fn task_body(y: &TaskYielder, first: Resume, entry: Entry) {
    YIELDER.with(|c| c.set(y));
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        if let Resume::Retire = first {
            retire();
        }
        entry();
        // A task has nothing to return to. Like a task with no more work,
        // block in a receive that nothing can complete.
        loop {
            userlib::sys_recv_notification(0);
        }
    }));
    if let Err(p) = r {
        if !p.is::<Retired>() {
            if !TASK_PANICKED.with(|f| f.replace(false)) {
                // Not a task panic: the coroutine library unwinding a
                // coroutine it drops. Let it through.
                YIELDER.with(|c| c.set(std::ptr::null()));
                panic::resume_unwind(p);
            }
            // Task code panicked and has unwound: report it the way the
            // image's panic handler does. The task is faulted; this call
            // returns only by unwinding once the incarnation is retired.
            let msg = LAST_PANIC
                .with(|l| l.borrow_mut().take())
                .unwrap_or_else(|| payload_text(&*p));
            drop(p);
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                userlib::sys_panic(msg.as_bytes());
            }));
            if let Err(p) = r {
                if !p.is::<Retired>() {
                    YIELDER.with(|c| c.set(std::ptr::null()));
                    panic::resume_unwind(p);
                }
            }
        }
    }
    YIELDER.with(|c| c.set(std::ptr::null()));
}

/// A coroutine for a fresh incarnation running `entry`, on a pooled stack.
pub(super) fn new_coroutine(entry: Entry) -> std::io::Result<TaskCoro> {
    let stack = match STACKS.with(|s| s.borrow_mut().pop()) {
        Some(s) => s,
        None => DefaultStack::new(TASK_STACK)?,
    };
    Ok(Coroutine::with_stack(stack, move |y, first| {
        task_body(y, first, entry)
    }))
}

/// Ends an incarnation: unwinds its coroutine (dropping what it owned) and
/// keeps its stack for the next one.
pub(super) fn retire_coroutine(mut c: TaskCoro) {
    if !cfg!(panic = "unwind") {
        // Nothing can unwind: leave the incarnation suspended for good, as
        // a parked thread would be.
        std::mem::forget(c);
        return;
    }
    if !c.done() {
        match panic::catch_unwind(AssertUnwindSafe(|| c.resume(Resume::Retire))) {
            Ok(CoroutineResult::Return(())) | Err(_) => {}
            // It made a system call instead of unwinding (task code caught
            // the marker): dropping it forces the unwind.
            Ok(CoroutineResult::Yield(_)) => {
                drop(c);
                return;
            }
        }
    }
    if c.done() {
        let stack = c.into_stack();
        STACKS.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < STACK_POOL {
                s.push(stack);
            }
        });
    }
}
