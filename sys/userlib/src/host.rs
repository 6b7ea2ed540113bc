//! Host backend: on the host, a system call is a call into the harness's
//! kernel, which the harness installs on each task thread before running the
//! task's code. Nothing else in userlib knows the difference.

use abi::Sysnum;
use std::cell::RefCell;
use std::sync::Arc;

/// What the host harness implements: the kernel's system-call semantics.
pub trait HostKernel: Send + Sync {
    /// Performs `num` for the calling task thread. May block the thread (a
    /// send waits for its reply). A call that stops the task for good (panic,
    /// a fault) does not return: the harness unwinds the thread.
    fn syscall(&self, num: Sysnum, args: [usize; 7]) -> [usize; 6];
}

thread_local! {
    static KERNEL: RefCell<Option<Arc<dyn HostKernel>>> = const { RefCell::new(None) };
}

/// Binds the current thread to a harness kernel.
pub fn install(kernel: Arc<dyn HostKernel>) {
    KERNEL.with(|k| *k.borrow_mut() = Some(kernel));
}

/// Issues a system call to the harness kernel bound to this thread.
pub fn raw_syscall(num: Sysnum, args: [usize; 7]) -> [usize; 6] {
    let k = KERNEL.with(|k| k.borrow().clone());
    match k {
        Some(k) => k.syscall(num, args),
        // Task code called outside a harness task thread: a test bug, not
        // a task bug, so say exactly that.
        None => panic!("userlib: system call {num:?} outside a harness task thread"),
    }
}
