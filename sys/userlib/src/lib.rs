//! Task-side system calls and runtime.
//!
//! Every system call goes through one primitive, [`raw_syscall`]: an `svc`
//! on AArch64, or a call into the host harness's kernel when built for the
//! host. So the typed wrappers below — and all task code above them — are
//! the same code in the image and in the harness.

#![cfg_attr(target_os = "none", no_std)]

pub use abi::{
    dead_code, is_dead_code, FaultKind, Generation, LeaseDesc, ReplyFaultReason, Sysnum, TaskId,
    LEASE_READ, LEASE_WRITE, RC_OK,
};

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod arch;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use arch::raw_syscall;

#[cfg(not(target_os = "none"))]
pub mod host;
#[cfg(not(target_os = "none"))]
pub use host::raw_syscall;

pub use abi;

pub mod cache;
pub mod fmt;

/// What `recv` returned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RecvMessage {
    /// The sender, or `TaskId::KERNEL` for a notification.
    pub sender: TaskId,
    /// The operation number, or the notification bits that fired.
    pub operation: u32,
    /// Length of the message as sent (may exceed the buffer: the copy is
    /// truncated and the server must refuse it).
    pub message_len: usize,
    /// How many bytes the sender can take as a reply.
    pub reply_capacity: usize,
    /// How many leases came with the message.
    pub lease_count: usize,
}

impl RecvMessage {
    pub fn is_notification(&self) -> bool {
        self.sender == TaskId::KERNEL
    }
}

/// A lease to lend with `send`: a buffer the server may read and/or write
/// through the kernel while the sender waits for the reply.
///
/// `repr(transparent)`: a `&[Lease]` is the lease table the kernel reads, so
/// its layout is exactly `[LeaseDesc]`.
#[derive(Copy, Clone, Debug)]
#[repr(transparent)]
pub struct Lease<'a> {
    // Read by the kernel through the table pointer, never by Rust code here.
    #[allow(dead_code)]
    desc: LeaseDesc,
    _buf: core::marker::PhantomData<&'a mut [u8]>,
}

impl<'a> Lease<'a> {
    pub fn read_only(buf: &'a [u8]) -> Self {
        Self::raw(LEASE_READ, buf.as_ptr() as usize, buf.len())
    }
    pub fn write_only(buf: &'a mut [u8]) -> Self {
        Self::raw(LEASE_WRITE, buf.as_mut_ptr() as usize, buf.len())
    }
    pub fn read_write(buf: &'a mut [u8]) -> Self {
        Self::raw(
            LEASE_READ | LEASE_WRITE,
            buf.as_mut_ptr() as usize,
            buf.len(),
        )
    }
    /// A lease of any address range, `'static` because it borrows nothing
    /// Rust knows of. Safe: the kernel checks a lease against the lender's
    /// own memory whenever a server uses it, and faults the lender
    /// (`BadLease`) if it names memory the lender does not own. The
    /// isolation tests lend wild ranges with it.
    pub fn from_raw(attributes: u32, base: usize, len: usize) -> Lease<'static> {
        Lease::raw(attributes, base, len)
    }
    fn raw(attributes: u32, base: usize, len: usize) -> Self {
        Lease {
            desc: LeaseDesc {
                attributes,
                _reserved: 0,
                base: base as u64,
                len: len as u64,
            },
            _buf: core::marker::PhantomData,
        }
    }
}

/// Sends `message` with `operation` to `target` and waits for the reply.
/// Returns `(code, reply_len)`; a code from [`is_dead_code`] means the
/// target restarted (or died) and `target`'s generation is stale.
pub fn sys_send(
    target: TaskId,
    operation: u16,
    message: &[u8],
    reply: &mut [u8],
    leases: &[Lease<'_>],
) -> (u32, usize) {
    let r = raw_syscall(
        Sysnum::Send,
        [
            target.0 as usize | (operation as usize) << 32,
            message.as_ptr() as usize,
            message.len(),
            reply.as_mut_ptr() as usize,
            reply.len(),
            leases.as_ptr() as usize,
            leases.len(),
        ],
    );
    (r[0] as u32, r[1])
}

/// Receives a message or a notification. `from` is `TaskId::ANY` for an open
/// receive, or one task for a closed receive. Err(dead code) when a closed
/// receive names a task that died.
pub fn sys_recv(buf: &mut [u8], notification_mask: u32, from: TaskId) -> Result<RecvMessage, u32> {
    let r = raw_syscall(
        Sysnum::Recv,
        [
            buf.as_mut_ptr() as usize,
            buf.len(),
            notification_mask as usize,
            from.0 as usize,
            0,
            0,
            0,
        ],
    );
    recv_result(r)
}

/// What `recv` (or `reply_recv`) returned in x0..x5.
#[inline(always)]
fn recv_result(r: [usize; 6]) -> Result<RecvMessage, u32> {
    if r[0] as u32 != RC_OK {
        return Err(r[0] as u32);
    }
    Ok(RecvMessage {
        sender: TaskId(r[1] as u32),
        operation: r[2] as u32,
        message_len: r[3],
        reply_capacity: r[4],
        lease_count: r[5],
    })
}

/// Open receive.
pub fn sys_recv_open(buf: &mut [u8], notification_mask: u32) -> RecvMessage {
    match sys_recv(buf, notification_mask, TaskId::ANY) {
        Ok(m) => m,
        // An open receive never names a dead sender; the kernel never
        // returns an error for it.
        Err(_) => RecvMessage {
            sender: TaskId::KERNEL,
            operation: 0,
            message_len: 0,
            reply_capacity: 0,
            lease_count: 0,
        },
    }
}

/// Waits only for notifications in `mask`; returns the bits that fired.
pub fn sys_recv_notification(mask: u32) -> u32 {
    // A closed receive from the kernel id accepts no message, only
    // notifications.
    match sys_recv(&mut [], mask, TaskId::KERNEL) {
        Ok(m) => m.operation,
        Err(_) => 0,
    }
}

/// Answers `sender`. A reply to a task that has died meanwhile is dropped by
/// the kernel: replying never fails.
pub fn sys_reply(sender: TaskId, code: u32, message: &[u8]) {
    raw_syscall(
        Sysnum::Reply,
        [
            sender.0 as usize,
            code as usize,
            message.as_ptr() as usize,
            message.len(),
            0,
            0,
            0,
        ],
    );
}

/// Answers `sender` (as [`sys_reply`]) and receives the next message (as
/// [`sys_recv`]) in one kernel entry: the server loop's fast path.
pub fn sys_reply_recv(
    sender: TaskId,
    code: u32,
    message: &[u8],
    buf: &mut [u8],
    notification_mask: u32,
    from: TaskId,
) -> Result<RecvMessage, u32> {
    let r = raw_syscall(
        Sysnum::ReplyRecv,
        [
            sender.0 as usize | (code as usize) << 32,
            message.as_ptr() as usize,
            message.len(),
            buf.as_mut_ptr() as usize,
            buf.len(),
            notification_mask as usize,
            from.0 as usize,
        ],
    );
    recv_result(r)
}

/// Refuses `sender`'s message outright: the kernel faults the sender.
pub fn sys_reply_fault(sender: TaskId, reason: ReplyFaultReason) {
    raw_syscall(
        Sysnum::ReplyFault,
        [sender.0 as usize, reason as usize, 0, 0, 0, 0, 0],
    );
}

/// Copies from `lender`'s lease `index` at `offset` into `dest`.
/// Ok(bytes copied) or Err(code): `RC_BAD_LEASE`, or a dead code.
pub fn sys_borrow_read(
    lender: TaskId,
    index: usize,
    offset: usize,
    dest: &mut [u8],
) -> Result<usize, u32> {
    let r = raw_syscall(
        Sysnum::BorrowRead,
        [
            lender.0 as usize,
            index,
            offset,
            dest.as_mut_ptr() as usize,
            dest.len(),
            0,
            0,
        ],
    );
    if r[0] as u32 == RC_OK {
        Ok(r[1])
    } else {
        Err(r[0] as u32)
    }
}

/// Copies `src` into `lender`'s lease `index` at `offset`.
pub fn sys_borrow_write(
    lender: TaskId,
    index: usize,
    offset: usize,
    src: &[u8],
) -> Result<usize, u32> {
    let r = raw_syscall(
        Sysnum::BorrowWrite,
        [
            lender.0 as usize,
            index,
            offset,
            src.as_ptr() as usize,
            src.len(),
            0,
            0,
        ],
    );
    if r[0] as u32 == RC_OK {
        Ok(r[1])
    } else {
        Err(r[0] as u32)
    }
}

/// Attributes and length of a lease.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub attributes: u32,
    pub len: usize,
}

pub fn sys_borrow_info(lender: TaskId, index: usize) -> Result<LeaseInfo, u32> {
    let r = raw_syscall(
        Sysnum::BorrowInfo,
        [lender.0 as usize, index, 0, 0, 0, 0, 0],
    );
    if r[0] as u32 == RC_OK {
        Ok(LeaseInfo {
            attributes: r[1] as u32,
            len: r[2],
        })
    } else {
        Err(r[0] as u32)
    }
}

/// Sets notification bits of `target`. Returns a dead code if `target` is stale.
/// `target` must be in this task's task-slots, and `bits` must not include
/// bits the kernel posts to it (its interrupts' bits, the supervisor's fault
/// bit): either faults this task.
pub fn sys_post(target: TaskId, bits: u32) -> u32 {
    raw_syscall(
        Sysnum::Post,
        [target.0 as usize, bits as usize, 0, 0, 0, 0, 0],
    )[0] as u32
}

/// Enables or disables the interrupts this task owns that map to `mask`.
/// An interrupt is disabled by the kernel when it fires; re-enable it after
/// handling. A `mask` with a bit of no interrupt of this task faults it and
/// changes nothing.
pub fn sys_irq_control(mask: u32, enable: bool) {
    raw_syscall(
        Sysnum::IrqControl,
        [mask as usize, enable as usize, 0, 0, 0, 0, 0],
    );
}

/// Arms (or disarms, with `None`) this task's timer: at `deadline` ms the
/// kernel posts `bits`.
pub fn sys_set_timer(deadline: Option<u64>, bits: u32) {
    let (armed, d) = match deadline {
        Some(d) => (1, d as usize),
        None => (0, 0),
    };
    raw_syscall(Sysnum::SetTimer, [armed, d, bits as usize, 0, 0, 0, 0]);
}

/// Milliseconds since boot.
pub fn sys_get_timer() -> u64 {
    raw_syscall(Sysnum::GetTimer, [0; 7])[0] as u64
}

/// Sleeps for `ms` milliseconds using notification bit `bit`.
pub fn sleep_for(ms: u64, bit: u32) {
    let deadline = sys_get_timer() + ms;
    sys_set_timer(Some(deadline), bit);
    while sys_get_timer() < deadline {
        sys_recv_notification(bit);
    }
}

/// Faults this task with a message. Never returns.
pub fn sys_panic(msg: &[u8]) -> ! {
    raw_syscall(
        Sysnum::Panic,
        [msg.as_ptr() as usize, msg.len(), 0, 0, 0, 0, 0],
    );
    // The kernel never resumes a task that panicked; if a host harness
    // returns here, stop this thread of execution for good.
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The same task with its current generation. `id` must be this task or
/// one in its task-slots (anything else faults this task).
pub fn sys_refresh_task_id(id: TaskId) -> TaskId {
    TaskId(raw_syscall(Sysnum::RefreshTaskId, [id.0 as usize, 0, 0, 0, 0, 0, 0])[0] as u32)
}

/// Writes `text` to the console; the kernel prefixes the task's name. At
/// most 256 bytes in 4 lines are printed per call; the rest is dropped with
/// a marker line (docs/kernel.md).
pub fn sys_log(text: &[u8]) {
    raw_syscall(
        Sysnum::Log,
        [text.as_ptr() as usize, text.len(), 0, 0, 0, 0, 0],
    );
}

/// A region of memory or MMIO that app.toml gives this task.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// Where the task reaches it.
    pub va: usize,
    /// Where hardware reaches it (for DMA programming).
    pub pa: usize,
    pub size: usize,
    pub attributes: u32,
}

/// Looks up one of this task's regions by its app.toml name.
pub fn sys_region_info(name: &str) -> Option<RegionInfo> {
    let r = raw_syscall(
        Sysnum::RegionInfo,
        [name.as_ptr() as usize, name.len(), 0, 0, 0, 0, 0],
    );
    if r[0] as u32 == RC_OK {
        Some(RegionInfo {
            va: r[1],
            pa: r[2],
            size: r[3],
            attributes: r[4] as u32,
        })
    } else {
        None
    }
}

/// The TaskId (current generation) of the peer named `name`, if it is one
/// of this task's `task-slots` or post-only `posts`.
pub fn sys_lookup_slot(name: &str) -> Option<TaskId> {
    let r = raw_syscall(
        Sysnum::LookupSlot,
        [name.as_ptr() as usize, name.len(), 0, 0, 0, 0, 0],
    );
    (r[0] as u32 == RC_OK).then_some(TaskId(r[1] as u32))
}

/// A register window of this task (app.toml `registers`): its index and
/// how many registers it holds, or None if the task has no window `name`.
pub fn sys_reg_lookup(name: &str) -> Option<(usize, usize)> {
    let r = raw_syscall(
        Sysnum::RegLookup,
        [name.as_ptr() as usize, name.len(), 0, 0, 0, 0, 0],
    );
    (r[0] as u32 == RC_OK).then_some((r[1], r[2]))
}

/// Reads register `index` of register window `window` (the kernel does the
/// 32-bit load). A window or index this task does not have faults it.
pub fn sys_reg_read(window: usize, index: usize) -> u32 {
    raw_syscall(Sysnum::RegRead, [window, index, 0, 0, 0, 0, 0])[1] as u32
}

/// Writes register `index` of register window `window` (the kernel does
/// the 32-bit store). A window or index this task does not have faults it.
pub fn sys_reg_write(window: usize, index: usize, value: u32) {
    raw_syscall(
        Sysnum::RegWrite,
        [window, index, value as usize, 0, 0, 0, 0],
    );
}

/// Whether `task` (current generation) owns DMA-capable memory covering
/// physical `[pa, pa + len)`. Requires the `memory-query` capability. A
/// stale `task` id or a range that wraps answers false.
pub fn sys_phys_owned(task: TaskId, pa: usize, len: usize) -> bool {
    let r = raw_syscall(Sysnum::PhysOwned, [task.0 as usize, pa, len, 0, 0, 0, 0]);
    r[0] as u32 == RC_OK && r[1] == 1
}

/// Status of a task, for the supervisor.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    pub state: u32,
    pub generation: Generation,
    pub fault: FaultKind,
    pub detail: usize,
}

/// Task control: requires the `task-control` capability.
pub fn sys_task_status(index: usize) -> Result<TaskStatus, u32> {
    let r = raw_syscall(
        Sysnum::TaskControl,
        [abi::TaskControl::Status as usize, index, 0, 0, 0, 0, 0],
    );
    if r[0] as u32 != RC_OK {
        return Err(r[0] as u32);
    }
    Ok(TaskStatus {
        state: r[1] as u32,
        generation: Generation(r[2] as u32),
        fault: FaultKind::from_u32(r[3] as u32).unwrap_or(FaultKind::None),
        detail: r[4],
    })
}

/// Why the kernel did not restart a task.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RestartRefused {
    /// The task is in `Generation::LAST`: it is never restarted again, so
    /// no generation (no `TaskId`) is ever reused.
    GenerationsExhausted,
    /// No such task, or the supervisor itself.
    NoSuchTask,
    /// Any other code (not one the kernel gives today).
    Other(u32),
}

/// Restarts task `index` with a new generation.
pub fn sys_task_restart(index: usize) -> Result<(), RestartRefused> {
    let rc = raw_syscall(
        Sysnum::TaskControl,
        [abi::TaskControl::Restart as usize, index, 0, 0, 0, 0, 0],
    )[0] as u32;
    match rc {
        RC_OK => Ok(()),
        abi::RC_GENERATIONS_EXHAUSTED => Err(RestartRefused::GenerationsExhausted),
        abi::RC_NO_SUCH => Err(RestartRefused::NoSuchTask),
        other => Err(RestartRefused::Other(other)),
    }
}

/// Index of the first faulted task at or after `start`.
pub fn sys_next_faulted(start: usize) -> Option<usize> {
    let r = raw_syscall(
        Sysnum::TaskControl,
        [abi::TaskControl::NextFaulted as usize, start, 0, 0, 0, 0, 0],
    );
    if r[0] as u32 == RC_OK {
        Some(r[1])
    } else {
        None
    }
}

/// Stops the machine with `status` (requires the `shutdown` capability).
pub fn sys_shutdown(status: u32) -> ! {
    raw_syscall(Sysnum::Shutdown, [status as usize, 0, 0, 0, 0, 0, 0]);
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The virtual counter (CNTVCT_EL0), readable at EL0. Under QEMU
/// `-icount shift=0` with `-cpu max` (1 GHz counter) one tick is one guest
/// instruction, which is what the benchmarks count.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use arch::counter;

/// The entry point of a task binary: `userlib::task_main!(path::to::run);`
/// where `run` is `fn() -> !`. In the image it becomes the `main` that
/// userlib's start-up code calls; built for the host (where tasks run only
/// through their libraries, in the harness) the binary just says so.
#[macro_export]
macro_rules! task_main {
    ($run:path) => {
        #[cfg(target_os = "none")]
        #[export_name = "main"]
        fn main() -> ! {
            $run()
        }

        #[cfg(not(target_os = "none"))]
        fn main() {
            eprintln!(
                "{} is a task: it runs in an image built by `cargo xtask`, or through its library in the host harness",
                env!("CARGO_PKG_NAME")
            );
            std::process::exit(2);
        }
    };
}
