//! System calls, IPC and scheduling: the portable core.
//!
//! This module knows nothing about the CPU. It works on the task table and
//! the saved registers, and reaches the hardware only through [`Platform`].
//! The AArch64 kernel and the host harness both drive this same code, so the
//! IPC semantics they give cannot drift apart.

use crate::config::{IrqDesc, CAP_MEMORY_QUERY, CAP_SHUTDOWN, CAP_TASK_CONTROL};
use crate::task::{region_pa, Task, TaskState};
use abi::{
    dead_code, FaultKind, LeaseDesc, Sysnum, TaskControl, TaskId, LEASE_READ, LEASE_WRITE,
    MAX_LEASES, RC_BAD_LEASE, RC_NO_SUCH, RC_OK, REGION_READ, REGION_WRITE, SUPERVISOR_FAULT_BIT,
};

mod fast;

/// What the core needs from the machine it runs on.
pub trait Platform {
    /// Writes console bytes (the UART, or the harness's log).
    fn console(&mut self, bytes: &[u8]);
    /// Enables or disables an interrupt at the controller.
    fn irq_enable(&mut self, intid: u32, enable: bool);
    /// Milliseconds since boot.
    fn now_ms(&self) -> u64;
    /// Programs the kernel timer to fire at `deadline` ms (None: no timer).
    fn set_deadline(&mut self, deadline: Option<u64>);
    /// Stops the machine with an exit status.
    fn shutdown(&mut self, status: u32) -> !;
    /// Reinitialises a task's memory for a (re)start: zero its data region.
    fn reset_task_memory(&mut self, task: &Task);
    /// Task `index` was just faulted (reported on the console, not yet
    /// restarted): print what the platform keeps of it (the image prints
    /// the task's trace ring, docs/tracing.md). Nothing by default.
    fn task_faulted(&mut self, _index: usize) {}
    /// Whether the IPC fast paths (`Kernel::send_fast`,
    /// `Kernel::reply_recv_fast`) may run. Always in the kernel (the
    /// constant folds away); the fuzzer turns them off to check that the
    /// general paths alone reach exactly the same machine states.
    fn ipc_fast_paths(&self) -> bool {
        true
    }
    /// A fast path handled a call (the fuzzer counts them). Nothing by
    /// default.
    fn ipc_fast_path_taken(&mut self) {}
    /// A 32-bit load from a register of a task's register window, at its
    /// kernel address (the build checked it is one of the window's
    /// registers; the kernel maps device ranges identity, privileged-only).
    fn reg_read32(&mut self, pa: usize) -> u32 {
        // SAFETY: `pa` is a register of a window from the static task
        // table, which the build placed inside a board peripheral that the
        // kernel maps (Device memory), 4-aligned. On the host the harness
        // names its own memory (or overrides this).
        unsafe { core::ptr::read_volatile(pa as *const u32) }
    }
    /// A 32-bit store to a register of a task's register window.
    fn reg_write32(&mut self, pa: usize, value: u32) {
        // SAFETY: as in `reg_read32`.
        unsafe { core::ptr::write_volatile(pa as *mut u32, value) }
    }
}

/// The kernel's state: the task table and the static interrupt table.
pub struct Kernel<'t> {
    pub tasks: &'t mut [Task],
    pub irqs: &'static [IrqDesc],
    /// Index of the running task.
    pub current: usize,
    /// Tasks made runnable since the last scheduling decision.
    woken: Woken,
}

/// What changed in the runnable set since the last scheduling decision.
///
/// The scheduler relies on one invariant: while a task runs, no runnable
/// task has a strictly higher priority (anything that wakes a task goes
/// through [`Kernel::wake`] and is rescheduled before returning to EL0). So
/// when exactly one task was woken, comparing it with the current task
/// decides — no scan of the table. That is the IPC fast path: a client's
/// send wakes its (higher-priority) server, which runs next.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Woken {
    None,
    One(usize),
    Many,
}

/// The supervisor is task 0 by construction (the build checks it).
pub const SUPERVISOR: usize = 0;

/// The kernel address [`Kernel::user`] gives an empty range: non-null and
/// aligned for any copy, never dereferenced (nothing is read or written
/// through a zero-length range).
pub const EMPTY: usize = core::mem::align_of::<u64>();

/// Most bytes of text one `log` call prints (more is dropped, with a
/// marker). Above `userlib::log!`'s 192-byte buffer.
pub const LOG_MAX_BYTES: usize = 256;
/// Most lines one `log` call prints (more are dropped, with a marker).
pub const LOG_MAX_LINES: usize = 4;
/// The marker line printed after a cut `log`.
pub const LOG_TRUNCATED: &[u8] = b"(kern: log truncated)";
/// Most bytes of a `panic` message printed.
pub const PANIC_MAX_BYTES: usize = 160;

impl<'t> Kernel<'t> {
    /// The kernel over a task table whose tasks are all `Stopped`, as
    /// `Task::new` makes them (their `senders` sets start empty);
    /// [`Kernel::boot`] starts them.
    pub fn new(tasks: &'t mut [Task], irqs: &'static [IrqDesc]) -> Self {
        Kernel {
            tasks,
            irqs,
            current: 0,
            woken: Woken::Many,
        }
    }

    /// Sets task `i`'s state, keeping the receivers' `senders` sets equal
    /// to the states. Every state change goes through here.
    #[inline(always)]
    fn set_state(&mut self, i: usize, state: TaskState) {
        let bit = 1u64 << (i % abi::MAX_TASKS);
        if let TaskState::InSend(r) = self.tasks[i].state {
            self.tasks[r.index()].senders &= !bit;
        }
        if let TaskState::InSend(r) = state {
            self.tasks[r.index()].senders |= bit;
        }
        self.tasks[i].state = state;
    }

    /// Whether every task's `senders` set matches the task states (the
    /// fuzzer checks it after every event).
    pub fn state_sets_consistent(&self) -> bool {
        let n = self.tasks.len();
        let senders_of = |r: usize| {
            (0..n)
                .filter(|&i| matches!(self.tasks[i].state, TaskState::InSend(x) if x.index() == r))
                .fold(0u64, |m, i| m | 1 << i)
        };
        self.tasks
            .iter()
            .enumerate()
            .all(|(i, t)| t.senders == senders_of(i))
    }

    /// Starts every task marked `start`.
    pub fn boot<P: Platform>(&mut self, p: &mut P) {
        let n = self.tasks.len().min(abi::MAX_TASKS);
        for i in 0..n {
            let pri = self.tasks[i].priority();
            self.tasks[i].rivals = (0..n)
                .filter(|&j| j != i && self.tasks[j].priority() <= pri)
                .fold(0, |m, j| m | 1 << j);
        }
        for i in 0..self.tasks.len() {
            if self.tasks[i].desc.start {
                self.reinit(p, i);
            }
        }
        self.schedule(p);
    }

    pub fn id_of(&self, index: usize) -> TaskId {
        TaskId::new(index, self.tasks[index].generation)
    }

    /// Resets a task to its entry point with fresh memory.
    fn reinit<P: Platform>(&mut self, p: &mut P, i: usize) {
        p.reset_task_memory(&self.tasks[i]);
        let t = &mut self.tasks[i];
        t.save = crate::task::SavedState::ZERO;
        t.save.pc = t.desc.entry as u64;
        t.save.sp = t.desc.stack_top as u64;
        t.save.pstate = crate::arch_consts::PSTATE_EL0;
        t.notifications = 0;
        t.notification_mask = 0;
        t.timer_deadline = None;
        self.wake(i);
    }

    /// Makes task `i` runnable and records it for the scheduler.
    #[inline(always)]
    fn wake(&mut self, i: usize) {
        self.set_state(i, TaskState::Runnable);
        self.woken = match self.woken {
            Woken::None => Woken::One(i),
            Woken::One(j) if j == i => Woken::One(i),
            _ => Woken::Many,
        };
    }

    /// Handles the system call the current task made; afterwards the caller
    /// should run `self.current` (the scheduler may have changed it).
    ///
    /// Returns true when one of the IPC fast paths handled the call: then
    /// `self.current` is runnable and was chosen without the scheduler
    /// (the caller may skip its runnable test).
    #[inline(always)]
    pub fn syscall<P: Platform>(&mut self, p: &mut P) -> bool {
        if self.ipc_fast(p) {
            return true;
        }
        let c = self.current;
        self.syscall_general(p, c);
        false
    }

    /// Task `c`'s system call by the general paths (any call; the fast
    /// paths are only a shortcut for some), then the scheduler. Out of
    /// line: one copy, and the exception handlers that call it do not
    /// carry its register saves.
    #[inline(never)]
    pub fn syscall_general<P: Platform>(&mut self, p: &mut P, c: usize) {
        let num = self.tasks[c].save.sysnum();
        // The IPC calls first, by compare and branch: cheaper than the jump
        // table of `dispatch` on the path every message takes.
        let r = if num == Sysnum::Send as u32 {
            self.send(c)
        } else if num == Sysnum::ReplyRecv as u32 {
            self.reply_recv(p, c)
        } else if num == Sysnum::Recv as u32 {
            self.recv(c)
        } else if num == Sysnum::Reply as u32 {
            self.reply(p, c)
        } else {
            match Sysnum::from_u32(num) {
                Some(s) => self.dispatch(p, c, s),
                None => Err(Fault(FaultKind::BadSyscall, num as usize)),
            }
        };
        if let Err(Fault(kind, detail)) = r {
            self.fault(p, c, kind, detail);
        }
        self.schedule(p);
    }

    fn dispatch<P: Platform>(&mut self, p: &mut P, c: usize, s: Sysnum) -> Result<(), Fault> {
        let a = |k: &Self, i: usize| k.tasks[c].save.arg(i);
        match s {
            // `syscall` takes the four IPC calls before it gets here, by
            // compare and branch. Naming them again would only put a second
            // inlined copy of each into the kernel (several KiB of the
            // image); should `syscall` ever stop filtering them, the caller
            // faults with BadSyscall instead of anything happening quietly.
            Sysnum::Send | Sysnum::Recv | Sysnum::Reply | Sysnum::ReplyRecv => {
                Err(Fault(FaultKind::BadSyscall, s as usize))
            }
            Sysnum::ReplyFault => {
                let target = TaskId(a(self, 0) as u32);
                let reason = a(self, 1);
                if abi::ReplyFaultReason::from_u32(reason as u32).is_none() {
                    return Err(Fault(FaultKind::BadSyscallArgs, reason));
                }
                let me = self.id_of(c);
                let t = self.live_index(target)?;
                if let Some(t) = t {
                    if matches!(self.tasks[t].state, TaskState::InReply(x) if x == me) {
                        self.fault(p, t, FaultKind::FromServer, reason);
                    }
                }
                Ok(())
            }
            Sysnum::BorrowRead | Sysnum::BorrowWrite | Sysnum::BorrowInfo => self.borrow(p, c, s),
            Sysnum::Post => {
                let target = TaskId(a(self, 0) as u32);
                let bits = a(self, 1) as u32;
                self.check_post(c, target)?;
                // Bits the kernel delivers to the target (its interrupts,
                // the supervisor's fault bit) cannot be posted: otherwise a
                // client of a driver could fake the driver's interrupt.
                let reserved = bits & self.kernel_bits(target.index());
                if reserved != 0 {
                    return Err(Fault(FaultKind::NotPermitted, reserved as usize));
                }
                if self.tasks[target.index()].generation != target.generation() {
                    let g = self.tasks[target.index()].generation;
                    self.tasks[c].save.set_ret(0, dead_code(g) as usize);
                    return Ok(());
                }
                self.post(target.index(), bits);
                self.tasks[c].save.set_ret(0, RC_OK as usize);
                Ok(())
            }
            Sysnum::IrqControl => {
                let mask = a(self, 0) as u32;
                let enable = a(self, 1) != 0;
                // Refuse before touching anything: a mask with one foreign
                // bit changes no interrupt, not even the caller's own.
                let owned = self.irq_bits(c);
                if mask & !owned != 0 {
                    return Err(Fault(FaultKind::NotPermitted, mask as usize));
                }
                for irq in self
                    .irqs
                    .iter()
                    .filter(|i| i.task as usize == c && i.notification & mask != 0)
                {
                    p.irq_enable(irq.intid, enable);
                }
                Ok(())
            }
            Sysnum::SetTimer => {
                let t = &mut self.tasks[c];
                t.timer_deadline = if t.save.arg(0) != 0 {
                    Some(t.save.arg(1) as u64)
                } else {
                    None
                };
                t.timer_bits = t.save.arg(2) as u32;
                self.timer_tick(p);
                Ok(())
            }
            Sysnum::GetTimer => {
                let now = p.now_ms();
                let t = &mut self.tasks[c];
                t.save.set_ret(0, now as usize);
                t.save.set_ret(1, t.timer_deadline.unwrap_or(0) as usize);
                t.save.set_ret(2, t.timer_deadline.is_some() as usize);
                t.save.set_ret(3, t.timer_bits as usize);
                Ok(())
            }
            Sysnum::Panic => {
                let (ptr, len) = (a(self, 0), a(self, 1).min(PANIC_MAX_BYTES));
                self.log_line(p, c, b"PANIC: ");
                if let Some(msg) = self.user_bytes(c, ptr, len) {
                    p.console(msg);
                }
                p.console(b"\n");
                Err(Fault(FaultKind::Panic, 0))
            }
            Sysnum::RefreshTaskId => {
                let id = TaskId(a(self, 0) as u32);
                if id.index() >= self.tasks.len() {
                    return Err(Fault(FaultKind::BadSyscallArgs, id.0 as usize));
                }
                // Only itself and its task-slots: a task cannot learn the
                // identity of a task it was not given (as `lookup_slot`).
                if id.index() != c {
                    self.check_post(c, id)?;
                }
                let fresh = self.id_of(id.index());
                self.tasks[c].save.set_ret(0, fresh.0 as usize);
                Ok(())
            }
            Sysnum::Log => {
                // One byte past the cap is read (room for a final newline);
                // only what is read must be the task's.
                let (ptr, len) = (a(self, 0), a(self, 1));
                let read = len.min(LOG_MAX_BYTES + 1);
                let text = self
                    .user_bytes(c, ptr, read)
                    .ok_or(Fault(FaultKind::BadSyscallArgs, ptr))?;
                self.log(p, c, text, read == len);
                Ok(())
            }
            Sysnum::RegionInfo => {
                let (ptr, len) = (a(self, 0), a(self, 1));
                let name = self
                    .user_bytes(c, ptr, len)
                    .ok_or(Fault(FaultKind::BadSyscallArgs, ptr))?;
                let t = &mut self.tasks[c];
                match t.desc.regions.iter().find(|r| r.name.as_bytes() == name) {
                    Some(r) => {
                        let (va, rpa, size, attrs) = (r.va, region_pa(r), r.size, r.attributes);
                        t.save.set_ret(0, RC_OK as usize);
                        t.save.set_ret(1, va);
                        t.save.set_ret(2, rpa);
                        t.save.set_ret(3, size);
                        t.save.set_ret(4, attrs as usize);
                    }
                    None => t.save.set_ret(0, RC_NO_SUCH as usize),
                }
                Ok(())
            }
            Sysnum::LookupSlot => {
                let (ptr, len) = (a(self, 0), a(self, 1));
                let name = self
                    .user_bytes(c, ptr, len)
                    .ok_or(Fault(FaultKind::BadSyscallArgs, ptr))?;
                let d = self.tasks[c].desc;
                let found = d
                    .task_slots
                    .iter()
                    .chain(d.post_slots)
                    .map(|&i| i as usize)
                    .find(|&i| i < self.tasks.len() && self.tasks[i].desc.name.as_bytes() == name);
                let id = found.map(|i| self.id_of(i));
                let s = &mut self.tasks[c].save;
                match id {
                    Some(id) => {
                        s.set_ret(0, RC_OK as usize);
                        s.set_ret(1, id.0 as usize);
                    }
                    None => s.set_ret(0, RC_NO_SUCH as usize),
                }
                Ok(())
            }
            Sysnum::PhysOwned => {
                if self.tasks[c].desc.capabilities & CAP_MEMORY_QUERY == 0 {
                    return Err(Fault(FaultKind::NotPermitted, s as usize));
                }
                let (id, pa, len) = (TaskId(a(self, 0) as u32), a(self, 1), a(self, 2));
                let owned = match self.live_index(id)? {
                    Some(t) => vm_owns(self.tasks, t, pa, len),
                    None => false,
                };
                let s = &mut self.tasks[c].save;
                s.set_ret(0, RC_OK as usize);
                s.set_ret(1, owned as usize);
                Ok(())
            }
            Sysnum::RegLookup => {
                let (ptr, len) = (a(self, 0), a(self, 1));
                let name = self
                    .user_bytes(c, ptr, len)
                    .ok_or(Fault(FaultKind::BadSyscallArgs, ptr))?;
                let t = &mut self.tasks[c];
                let found = t
                    .desc
                    .reg_windows
                    .iter()
                    .enumerate()
                    .find(|(_, w)| w.name.as_bytes() == name)
                    .map(|(i, w)| (i, w.offsets.len()));
                match found {
                    Some((i, n)) => {
                        t.save.set_ret(0, RC_OK as usize);
                        t.save.set_ret(1, i);
                        t.save.set_ret(2, n);
                    }
                    None => t.save.set_ret(0, RC_NO_SUCH as usize),
                }
                Ok(())
            }
            Sysnum::RegRead | Sysnum::RegWrite => {
                let pa = self.reg_address(c, a(self, 0), a(self, 1))?;
                if s == Sysnum::RegRead {
                    let v = p.reg_read32(pa);
                    self.tasks[c].save.set_ret(1, v as usize);
                } else {
                    p.reg_write32(pa, a(self, 2) as u32);
                }
                self.tasks[c].save.set_ret(0, RC_OK as usize);
                Ok(())
            }
            Sysnum::TaskControl => {
                if self.tasks[c].desc.capabilities & CAP_TASK_CONTROL == 0 {
                    return Err(Fault(FaultKind::NotPermitted, s as usize));
                }
                self.task_control(p, c)
            }
            Sysnum::Shutdown => {
                if self.tasks[c].desc.capabilities & CAP_SHUTDOWN == 0 {
                    return Err(Fault(FaultKind::NotPermitted, s as usize));
                }
                let status = a(self, 0) as u32;
                p.shutdown(status)
            }
        }
    }

    /// Checks `[va, va+len)` against task `t`'s regions; the kernel address.
    ///
    /// An empty range is always valid and comes back as [`EMPTY`], a
    /// non-null, aligned address that is never dereferenced: whatever the
    /// task passed as the pointer (0 included), the kernel never builds a
    /// slice or a copy from a null pointer.
    #[inline(always)]
    pub fn user(&self, t: usize, va: usize, len: usize, attrs: u32) -> Option<usize> {
        if len == 0 {
            return Some(EMPTY);
        }
        let task = &self.tasks[t];
        // Fast path: IPC buffers are almost always on the stack (region 1 by
        // construction, as in `Task::translate`). The range check is
        // branchless and ends in CSDB (`clamp_to_region`): under a
        // mispredicted check the address is 0, never one outside the
        // region, so no barrier is needed before the caller dereferences it.
        // Region 1 is read from its copy in the task record (`Task::r1`).
        let d = &task.r1;
        if d.attributes & attrs == attrs {
            let pa = crate::clamp_to_region(va, len, d.va, d.size, d.pa);
            if pa != 0 {
                return Some(pa);
            }
        }
        // Any other region: the general lookup, then a full speculation
        // barrier (on both outcomes) before the caller dereferences `pa`.
        let pa = task.translate(va, len, attrs);
        crate::speculation_barrier();
        pa
    }

    /// Task `t`'s readable bytes `[va, va+len)`, or None if they are not all
    /// its own. The one place a user buffer becomes a slice.
    ///
    /// The lifetime is not tied to `self`: task regions are statics that live
    /// for the whole run (the build allocates them; the host harness and the
    /// fuzzer leak theirs), and the kernel uses the slice before it returns
    /// to any task.
    pub fn user_bytes(&self, t: usize, va: usize, len: usize) -> Option<&'static [u8]> {
        let pa = self.user(t, va, len, REGION_READ)?;
        // SAFETY: `user` checked that the range lies in one of `t`'s readable
        // regions, which the kernel reaches at `pa` for the whole run; for an
        // empty range `pa` is `EMPTY`, non-null and aligned, valid for a
        // zero-length slice.
        Some(unsafe { core::slice::from_raw_parts(pa as *const u8, len) })
    }

    /// The notification bits the kernel itself posts to task `t`: its
    /// interrupts' bits, and the fault bit if it is the supervisor. No task
    /// may post them (see `Sysnum::Post`).
    pub fn kernel_bits(&self, t: usize) -> u32 {
        let sup = if t == SUPERVISOR {
            SUPERVISOR_FAULT_BIT
        } else {
            0
        };
        sup | self.irq_bits(t)
    }

    /// The notification bits of the interrupts task `t` owns.
    fn irq_bits(&self, t: usize) -> u32 {
        self.irqs
            .iter()
            .filter(|i| i.task as usize == t)
            .fold(0, |m, i| m | i.notification)
    }

    /// Resolves a TaskId: Ok(Some(index)) if it names the live generation,
    /// Ok(None) if it is stale, Err if the index does not exist.
    fn live_index(&self, id: TaskId) -> Result<Option<usize>, Fault> {
        let i = id.index();
        if i >= self.tasks.len() {
            return Err(Fault(FaultKind::BadSyscallArgs, id.0 as usize));
        }
        Ok((self.tasks[i].generation == id.generation()).then_some(i))
    }

    /// Capability check: `target` must be in `c`'s task-slots.
    /// The post capability: task-slots and post-only `post_slots`.
    fn check_post(&self, c: usize, target: TaskId) -> Result<(), Fault> {
        let i = target.index();
        if i < self.tasks.len() && self.tasks[c].post_mask & (1 << i) != 0 {
            Ok(())
        } else {
            Err(Fault(FaultKind::SlotViolation, i))
        }
    }

    /// The kernel address of register `index` of task `c`'s register
    /// window `window`; anything else faults the caller (`NotPermitted`,
    /// detail: the window index, or the register index with bit 16 set).
    fn reg_address(&self, c: usize, window: usize, index: usize) -> Result<usize, Fault> {
        let w = self.tasks[c]
            .desc
            .reg_windows
            .get(window)
            .ok_or(Fault(FaultKind::NotPermitted, window))?;
        let off = w
            .offsets
            .get(index)
            .ok_or(Fault(FaultKind::NotPermitted, index | 1 << 16))?;
        Ok(w.base + *off as usize)
    }

    fn check_slot(&self, c: usize, target: TaskId) -> Result<(), Fault> {
        let i = target.index();
        if i < self.tasks.len() && self.tasks[c].slot_mask & (1 << i) != 0 {
            Ok(())
        } else {
            Err(Fault(FaultKind::SlotViolation, i))
        }
    }

    #[inline(always)]
    fn send(&mut self, c: usize) -> Result<(), Fault> {
        let s = &self.tasks[c].save;
        let target = TaskId(s.arg(0) as u32);
        let (msg, msg_len, rep, rep_len, leases, nleases) =
            (s.arg(1), s.arg(2), s.arg(3), s.arg(4), s.arg(5), s.arg(6));
        self.check_slot(c, target)?;
        // Validate everything the send names now, so that a bad argument
        // faults the sender rather than surfacing later in the server.
        let Some(msg_pa) = self.user(c, msg, msg_len.min(abi::MAX_MESSAGE + 1), REGION_READ) else {
            return Err(Fault(FaultKind::BadSyscallArgs, msg));
        };
        if msg_len > abi::MAX_MESSAGE {
            return Err(Fault(FaultKind::BadSyscallArgs, msg_len));
        }
        // The reply buffer is checked when the reply is copied (a bad one
        // faults this task then): one region lookup less on the IPC path.
        let _ = (rep, rep_len);
        if nleases > MAX_LEASES
            || self
                .user(
                    c,
                    leases,
                    nleases * core::mem::size_of::<LeaseDesc>(),
                    REGION_READ,
                )
                .is_none()
        {
            return Err(Fault(FaultKind::BadSyscallArgs, leases));
        }
        let t = match self.live_index(target)? {
            Some(t) => t,
            None => {
                let g = self.tasks[target.index()].generation;
                let s = &mut self.tasks[c].save;
                s.set_ret(0, dead_code(g) as usize);
                s.set_ret(1, 0);
                return Ok(());
            }
        };
        let me = self.id_of(c);
        match self.tasks[t].state {
            TaskState::InRecv(None) => self.deliver(c, t, Some(msg_pa)),
            TaskState::InRecv(Some(from)) if from == me => self.deliver(c, t, Some(msg_pa)),
            _ => self.set_state(c, TaskState::InSend(target)),
        }
        Ok(())
    }

    /// Copies sender `s`'s message into receiver `r`'s buffer and completes
    /// `r`'s receive. `r` is in `recv`; `s` is runnable or in `InSend(r)`.
    /// `msg_pa`: the sender's message, if the caller already checked it.
    /// Out of line: the common delivery is `send_fast`'s; the five callers
    /// here (a send that is not fast, a receive finding a queued sender)
    /// share one copy.
    #[inline(never)]
    fn deliver(&mut self, s: usize, r: usize, msg_pa: Option<usize>) {
        let ss = &self.tasks[s].save;
        let (msg, msg_len, op, rep_cap, nleases) = (
            ss.arg(1),
            ss.arg(2),
            (ss.arg(0) >> 32) as u16,
            ss.arg(4),
            ss.arg(6),
        );
        let n = msg_len.min(self.tasks[r].recv_len);
        // The sender's range was checked when it sent, the receiver's when
        // it called recv; regions are static, so both are still valid.
        let src = match msg_pa {
            Some(pa) => Some(pa),
            None => self.user(s, msg, n, REGION_READ),
        };
        if let Some(src) = src {
            // SAFETY: both ranges lie in regions of their tasks that the
            // kernel reaches at these addresses. The destination was checked
            // writable (recv), and distinct tasks' writable regions never
            // share memory (the build gives each its own static or
            // carve-out); the only memory tasks share is the text of
            // instances of one crate, which is never writable. So the
            // ranges do not overlap.
            unsafe { copy_bytes(src, self.tasks[r].recv_buf, n) };
        }
        let sid = self.id_of(s);
        recv_returns(&mut self.tasks[r].save, sid, op, msg_len, rep_cap, nleases);
        self.wake(r);
        let rid = self.id_of(r);
        if msg_pa.is_some() {
            // From `send`: the sender is the running task, in no receiver's
            // `senders` set, so `set_state` has nothing to clear.
            self.tasks[s].state = TaskState::InReply(rid);
        } else {
            self.set_state(s, TaskState::InReply(rid));
        }
    }

    fn recv(&mut self, c: usize) -> Result<(), Fault> {
        let s = &self.tasks[c].save;
        let (buf, buf_len, mask, from) =
            (s.arg(0), s.arg(1), s.arg(2) as u32, TaskId(s.arg(3) as u32));
        self.recv_from(c, buf, buf_len, mask, from)
    }

    /// `Reply` then `Recv` in one kernel entry (x0 = caller | code << 32,
    /// x1/x2 the reply; x3..x6 `Recv`'s x0..x3): exactly the two calls in
    /// turn, so every check of each still applies. A
    /// reply the kernel refuses faults the caller before it receives; a
    /// reply that is dropped (the client died or stopped waiting) does not
    /// stop the receive, as with two calls.
    #[inline(always)]
    fn reply_recv<P: Platform>(&mut self, p: &mut P, c: usize) -> Result<(), Fault> {
        let s = &self.tasks[c].save;
        let (target, code) = (TaskId(s.arg(0) as u32), s.arg(0) >> 32);
        let (ptr, len) = (s.arg(1), s.arg(2));
        let (buf, buf_len, mask, from) =
            (s.arg(3), s.arg(4), s.arg(5) as u32, TaskId(s.arg(6) as u32));
        self.reply_to(p, c, target, code, ptr, len)?;
        self.recv_from(c, buf, buf_len, mask, from)
    }

    #[inline(always)]
    fn recv_from(
        &mut self,
        c: usize,
        buf: usize,
        buf_len: usize,
        mask: u32,
        from: TaskId,
    ) -> Result<(), Fault> {
        let Some(buf_pa) = self.user(c, buf, buf_len, REGION_READ | REGION_WRITE) else {
            return Err(Fault(FaultKind::BadSyscallArgs, buf));
        };
        self.tasks[c].recv_buf = buf_pa;
        self.tasks[c].recv_len = buf_len;
        // Notifications first: a server that is flooded with messages still
        // sees its interrupts.
        let pending = self.tasks[c].notifications & mask;
        if pending != 0 {
            self.complete_notification(c, pending);
            return Ok(());
        }
        let me = self.id_of(c);
        if from == TaskId::KERNEL {
            // Notifications only.
        } else if from == TaskId::ANY {
            // Highest-priority waiting sender; ties go to the lowest index
            // after the receiver, so equal senders are served in turn. Only
            // the tasks in `InSend` to this one are looked at (usually none).
            let after = (u64::MAX << (c % abi::MAX_TASKS)) << 1;
            let mut best: Option<(usize, u8)> = None;
            let senders = self.tasks[c].senders;
            for set in [senders & after, senders & !after] {
                let mut m = set;
                while m != 0 {
                    let i = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let t = &self.tasks[i];
                    if matches!(t.state, TaskState::InSend(x) if x == me)
                        && best.is_none_or(|(_, p)| t.priority() < p)
                    {
                        best = Some((i, t.priority()));
                    }
                }
            }
            let best = best.map(|(i, _)| i);
            if let Some(sdr) = best {
                self.set_state(c, TaskState::InRecv(None));
                self.deliver(sdr, c, None);
                return Ok(());
            }
        } else {
            match self.live_index(from)? {
                None => {
                    let g = self.tasks[from.index()].generation;
                    self.tasks[c].save.set_ret(0, dead_code(g) as usize);
                    return Ok(());
                }
                Some(sdr) => {
                    if matches!(self.tasks[sdr].state, TaskState::InSend(x) if x == me) {
                        self.set_state(c, TaskState::InRecv(Some(from)));
                        self.deliver(sdr, c, None);
                        return Ok(());
                    }
                }
            }
        }
        self.tasks[c].notification_mask = mask;
        let from = if from == TaskId::ANY {
            None
        } else {
            Some(from)
        };
        self.set_state(c, TaskState::InRecv(from));
        Ok(())
    }

    /// Ends task `i`'s receive with notification `bits` (and clears them).
    fn complete_notification(&mut self, i: usize, bits: u32) {
        let t = &mut self.tasks[i];
        t.notifications &= !bits;
        let s = &mut t.save;
        s.set_ret(0, RC_OK as usize);
        s.set_ret(1, TaskId::KERNEL.0 as usize);
        s.set_ret(2, bits as usize);
        s.set_ret(3, 0);
        s.set_ret(4, 0);
        s.set_ret(5, 0);
        t.notification_mask = 0;
        self.wake(i);
    }

    /// Sets notification bits on task `t`, waking it if it waits for them.
    pub fn post(&mut self, t: usize, bits: u32) {
        let task = &mut self.tasks[t];
        task.notifications |= bits;
        if let TaskState::InRecv(_) = task.state {
            let pending = task.notifications & task.notification_mask;
            if pending != 0 {
                self.complete_notification(t, pending);
            }
        }
    }

    fn reply<P: Platform>(&mut self, p: &mut P, c: usize) -> Result<(), Fault> {
        let s = &self.tasks[c].save;
        let (target, code, ptr, len) = (TaskId(s.arg(0) as u32), s.arg(1), s.arg(2), s.arg(3));
        self.reply_to(p, c, target, code, ptr, len)
    }

    #[inline(always)]
    fn reply_to<P: Platform>(
        &mut self,
        p: &mut P,
        c: usize,
        target: TaskId,
        code: usize,
        ptr: usize,
        len: usize,
    ) -> Result<(), Fault> {
        if len > abi::MAX_MESSAGE {
            return Err(Fault(FaultKind::BadSyscallArgs, ptr));
        }
        let Some(src) = self.user(c, ptr, len, REGION_READ) else {
            return Err(Fault(FaultKind::BadSyscallArgs, ptr));
        };
        let me = self.id_of(c);
        // A reply to a task that died, restarted or is not waiting on us is
        // dropped: replying never fails, so a server cannot be hurt by a
        // client that went away.
        let Some(t) = self.live_index(target)? else {
            return Ok(());
        };
        if !matches!(self.tasks[t].state, TaskState::InReply(x) if x == me) {
            return Ok(());
        }
        let (rep, cap) = (
            self.tasks[t].save.arg(3),
            self.tasks[t].save.arg(4).min(abi::MAX_MESSAGE),
        );
        // A reply longer than the client's buffer is cut; the client learns
        // the full length and its stub refuses the truncated reply.
        let n = len.min(cap);
        let Some(dst) = self.user(t, rep, n, REGION_READ | REGION_WRITE) else {
            // The client named a reply buffer it does not own: its fault,
            // found now because send does not check it (see `send`).
            self.fault(p, t, FaultKind::BadSyscallArgs, rep);
            return Ok(());
        };
        // `src` covers `len` bytes and `n <= len`: no second check. (For
        // `len == 0` it is `EMPTY` and nothing is copied.)
        // SAFETY: checked ranges in the two tasks' regions, as in `deliver`.
        unsafe { copy_bytes(src, dst, n) };
        let ts = &mut self.tasks[t].save;
        ts.set_ret(0, code);
        ts.set_ret(1, len);
        self.wake(t);
        Ok(())
    }

    fn borrow<P: Platform>(&mut self, p: &mut P, c: usize, s: Sysnum) -> Result<(), Fault> {
        let sv = &self.tasks[c].save;
        let (lender, index, offset, buf, len) = (
            TaskId(sv.arg(0) as u32),
            sv.arg(1),
            sv.arg(2),
            sv.arg(3),
            sv.arg(4),
        );
        let me = self.id_of(c);
        let l = match self.live_index(lender)? {
            Some(l) if matches!(self.tasks[l].state, TaskState::InReply(x) if x == me) => l,
            _ => {
                // The lender died or stopped waiting: its leases are gone.
                let g = self.tasks[lender.index()].generation;
                self.tasks[c].save.set_ret(0, dead_code(g) as usize);
                return Ok(());
            }
        };
        let (table, count) = (self.tasks[l].save.arg(5), self.tasks[l].save.arg(6));
        if index >= count {
            self.tasks[c].save.set_ret(0, RC_BAD_LEASE as usize);
            return Ok(());
        }
        let desc_va = table + index * core::mem::size_of::<LeaseDesc>();
        let Some(desc_pa) = self.user(l, desc_va, core::mem::size_of::<LeaseDesc>(), REGION_READ)
        else {
            return Err(Fault(FaultKind::BadSyscallArgs, desc_va));
        };
        // SAFETY: checked to lie in the lender's readable memory; read
        // unaligned-tolerant because it is the lender's bytes.
        let d: LeaseDesc = unsafe { core::ptr::read_unaligned(desc_pa as *const LeaseDesc) };
        let (base, llen) = (d.base as usize, d.len as usize);
        if s == Sysnum::BorrowInfo {
            let t = &mut self.tasks[c].save;
            t.set_ret(0, RC_OK as usize);
            t.set_ret(1, d.attributes as usize);
            t.set_ret(2, llen);
            return Ok(());
        }
        let (need_lease, need_lender, need_mine) = if s == Sysnum::BorrowRead {
            (LEASE_READ, REGION_READ, REGION_WRITE)
        } else {
            (LEASE_WRITE, REGION_WRITE, REGION_READ)
        };
        if d.attributes & need_lease == 0 || offset > llen {
            self.tasks[c].save.set_ret(0, RC_BAD_LEASE as usize);
            return Ok(());
        }
        let n = len.min(llen - offset);
        let Some(mine) = self.user(c, buf, n, need_mine | REGION_READ) else {
            return Err(Fault(FaultKind::BadSyscallArgs, buf));
        };
        // `base` is the lender's number: the sum may wrap, and a lease that
        // wraps names memory the lender does not own.
        let theirs = base
            .checked_add(offset)
            .and_then(|va| self.user(l, va, n, need_lender));
        let Some(theirs) = theirs else {
            // The lender lent memory it does not own: its defect, not the
            // server's. Fault the lender; the server sees it dead.
            let g = self.tasks[l].generation;
            self.fault(p, l, FaultKind::BadLease, base);
            self.tasks[c].save.set_ret(0, dead_code(g) as usize);
            return Ok(());
        };
        if n > 0 {
            let (src, dst) = if s == Sysnum::BorrowRead {
                (theirs, mine)
            } else {
                (mine, theirs)
            };
            // SAFETY: both ranges were checked against their tasks' regions.
            // The destination is writable (`need_mine` / `need_lender`
            // include REGION_WRITE for the side written), and distinct
            // tasks' writable regions never share memory; the only shared
            // memory (one crate's text, mapped by each instance) is never
            // writable. So the ranges do not overlap.
            unsafe { copy_bytes(src, dst, n) };
        }
        let t = &mut self.tasks[c].save;
        t.set_ret(0, RC_OK as usize);
        t.set_ret(1, n);
        Ok(())
    }

    fn task_control<P: Platform>(&mut self, p: &mut P, c: usize) -> Result<(), Fault> {
        let (op, idx) = (self.tasks[c].save.arg(0), self.tasks[c].save.arg(1));
        let n = self.tasks.len();
        match op as u32 {
            x if x == TaskControl::Status as u32 => {
                if idx >= n {
                    self.tasks[c].save.set_ret(0, RC_NO_SUCH as usize);
                    return Ok(());
                }
                let (state, g) = (self.tasks[idx].state, self.tasks[idx].generation);
                let (kind, detail) = match state {
                    TaskState::Faulted { kind, detail } => (kind as usize, detail),
                    _ => (0, 0),
                };
                let s = &mut self.tasks[c].save;
                s.set_ret(0, RC_OK as usize);
                s.set_ret(1, state.code() as usize);
                s.set_ret(2, g.0 as usize);
                s.set_ret(3, kind);
                s.set_ret(4, detail);
            }
            x if x == TaskControl::Restart as u32 => {
                if idx >= n || idx == SUPERVISOR {
                    self.tasks[c].save.set_ret(0, RC_NO_SUCH as usize);
                    return Ok(());
                }
                let rc = match self.restart(p, idx) {
                    Ok(()) => RC_OK,
                    Err(GenerationsExhausted) => abi::RC_GENERATIONS_EXHAUSTED,
                };
                self.tasks[c].save.set_ret(0, rc as usize);
            }
            x if x == TaskControl::NextFaulted as u32 => {
                let found =
                    (idx..n).find(|&i| matches!(self.tasks[i].state, TaskState::Faulted { .. }));
                let s = &mut self.tasks[c].save;
                match found {
                    Some(i) => {
                        s.set_ret(0, RC_OK as usize);
                        s.set_ret(1, i);
                    }
                    None => s.set_ret(0, RC_NO_SUCH as usize),
                }
            }
            _ => return Err(Fault(FaultKind::BadSyscallArgs, op)),
        }
        Ok(())
    }

    /// Restarts task `t` with a new generation. Everyone blocked on it learns
    /// through a dead code carrying the new generation.
    ///
    /// A task in its last generation is not restarted (it is left exactly
    /// as it is, normally faulted): generations are never reused, so no
    /// `TaskId` ever names two incarnations (docs/kernel.md, "Generations").
    pub fn restart<P: Platform>(
        &mut self,
        p: &mut P,
        t: usize,
    ) -> Result<(), GenerationsExhausted> {
        let g = self.tasks[t]
            .generation
            .next()
            .ok_or(GenerationsExhausted)?;
        self.tasks[t].generation = g;
        for irq in self.irqs.iter().filter(|i| i.task as usize == t) {
            p.irq_enable(irq.intid, false);
        }
        self.reinit(p, t);
        for i in 0..self.tasks.len() {
            let blocked_on_t = match self.tasks[i].state {
                TaskState::InSend(x) | TaskState::InReply(x) | TaskState::InRecv(Some(x)) => {
                    x.index() == t
                }
                _ => false,
            };
            if blocked_on_t {
                let s = &mut self.tasks[i].save;
                s.set_ret(0, dead_code(g) as usize);
                s.set_ret(1, 0);
                self.wake(i);
            }
        }
        self.timer_tick(p);
        Ok(())
    }

    /// Stops task `t` and tells the supervisor.
    pub fn fault<P: Platform>(&mut self, p: &mut P, t: usize, kind: FaultKind, detail: usize) {
        crate::print_fault(p, self.tasks[t].desc.name, kind, detail);
        p.task_faulted(t);
        if t == SUPERVISOR {
            // Nobody can restart the supervisor: the system is broken.
            p.console(b"kern: supervisor faulted; stopping\n");
            p.shutdown(crate::EXIT_SUPERVISOR_FAULT);
        }
        self.fault_no_sched(t, kind, detail);
    }

    fn fault_no_sched(&mut self, t: usize, kind: FaultKind, detail: usize) {
        self.set_state(t, TaskState::Faulted { kind, detail });
        self.tasks[t].timer_deadline = None;
        self.post(SUPERVISOR, SUPERVISOR_FAULT_BIT);
    }

    /// An SError (asynchronous external abort) was taken from EL0.
    ///
    /// It is asynchronous: it reports an access that completed with an
    /// error some time earlier, not the instruction that was interrupted.
    /// The kernel therefore does not blame whoever happens to run. It
    /// charges the running task only if that task holds device MMIO (a
    /// posted write to a device is how a task causes one, and it is taken
    /// while the writer still runs unless the writer blocked since). If the
    /// running task has no MMIO, or is the supervisor, nothing can be
    /// charged with it and the error may be uncontained: the kernel reports
    /// it and stops the machine ([`crate::EXIT_SERROR`]).
    pub fn serror<P: Platform>(&mut self, p: &mut P, esr: usize) {
        let c = self.current;
        let has_mmio = self.tasks[c]
            .desc
            .regions
            .iter()
            .any(|r| r.attributes & abi::REGION_DEVICE != 0);
        if has_mmio && c != SUPERVISOR {
            self.fault(p, c, FaultKind::SError, esr);
            return;
        }
        p.console(b"kern: SError while task ");
        p.console(self.tasks[c].desc.name.as_bytes());
        p.console(b" ran, which cannot have caused it; esr ");
        crate::print_hex(p, esr as u64);
        p.console(b"; stopping\n");
        p.shutdown(crate::EXIT_SERROR);
    }

    /// Fires expired task timers and programs the next deadline.
    pub fn timer_tick<P: Platform>(&mut self, p: &mut P) {
        let now = p.now_ms();
        let mut next: Option<u64> = None;
        for i in 0..self.tasks.len() {
            if let Some(d) = self.tasks[i].timer_deadline {
                if d <= now {
                    self.tasks[i].timer_deadline = None;
                    let bits = self.tasks[i].timer_bits;
                    self.post(i, bits);
                } else {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
        }
        p.set_deadline(next);
    }

    /// An interrupt fired: post its owner and mask it until the owner
    /// re-enables it (so a level interrupt cannot storm a task that is busy).
    pub fn interrupt<P: Platform>(&mut self, p: &mut P, intid: u32) {
        if let Some(irq) = self.irqs.iter().find(|i| i.intid == intid) {
            p.irq_enable(intid, false);
            self.post(irq.task as usize, irq.notification);
        }
    }

    /// Picks the highest-priority runnable task; among equals, the first at
    /// or after the current one. None: nothing can run.
    pub fn pick(&self) -> Option<usize> {
        // Scan from the current task round the table: the tasks from the
        // current one to the end, then those before it. Two slice walks
        // rather than one wrapping index: no bounds check or wrap per task.
        let cur = self.current.min(self.tasks.len());
        let (before, from_cur) = self.tasks.split_at(cur);
        let mut best: Option<(usize, u8)> = None;
        let mut consider = |i: usize, t: &Task| {
            if t.is_runnable() && best.is_none_or(|(_, p)| t.priority() < p) {
                best = Some((i, t.priority()));
            }
        };
        for (i, t) in from_cur.iter().enumerate() {
            consider(cur + i, t);
        }
        for (i, t) in before.iter().enumerate() {
            consider(i, t);
        }
        best.map(|(i, _)| i)
    }

    /// Sets `current` to the task to run next. Returns false if nothing can
    /// run. A running task keeps the CPU against equals: they take turns
    /// only when it blocks.
    ///
    /// The decisions that need no scan are made here, inline on the IPC
    /// path; the rest is [`Kernel::schedule_scan`].
    #[inline(always)]
    pub fn schedule<P: Platform>(&mut self, _p: &mut P) -> bool {
        let woken = core::mem::replace(&mut self.woken, Woken::None);
        let cur = self.current;
        let cur_pri = self.tasks[cur].priority();
        let cur_runs = self.tasks[cur].is_runnable();
        // See `Woken` for why one woken task needs no scan.
        if let Woken::One(w) = woken {
            let t = &self.tasks[w];
            if t.is_runnable() {
                if cur_runs {
                    if t.priority() < cur_pri {
                        self.current = w;
                    }
                    return true;
                }
                if t.priority() <= cur_pri {
                    self.current = w;
                    return true;
                }
                // The running task blocked and woke a lower-priority one
                // (a server's reply to its client): that one is the best
                // runnable task unless one of its rivals (the tasks of its
                // priority or better) is runnable too; only then scan.
                let mut m = t.rivals;
                let mut contested = false;
                while m != 0 {
                    let i = m.trailing_zeros() as usize;
                    m &= m - 1;
                    if self.tasks[i].is_runnable() {
                        contested = true;
                        break;
                    }
                }
                if !contested {
                    self.current = w;
                    return true;
                }
            }
        } else if woken == Woken::None && cur_runs {
            return true;
        }
        self.schedule_scan(cur_runs, cur_pri)
    }

    /// The rest of [`Kernel::schedule`]: a scan of the table.
    #[inline(never)]
    fn schedule_scan(&mut self, cur_runs: bool, cur_pri: u8) -> bool {
        match self.pick() {
            Some(b) => {
                if !cur_runs || self.tasks[b].priority() < cur_pri {
                    self.current = b;
                }
                true
            }
            None => false,
        }
    }

    /// Prints a task's `log` text: one console line per text line, each
    /// prefixed with the task name, at most [`LOG_MAX_BYTES`] bytes and
    /// [`LOG_MAX_LINES`] lines; anything beyond is dropped and a marker line
    /// says so. This bounds the work one `log` does with interrupts masked
    /// (see docs/kernel.md).
    /// `complete`: `text` is all the task passed (else it was cut already).
    fn log<P: Platform>(&self, p: &mut P, c: usize, text: &[u8], complete: bool) {
        // A final newline ends the last line; it is not an empty line.
        let text = match text.strip_suffix(b"\n") {
            Some(t) if complete => t,
            _ => text,
        };
        let mut truncated = !complete || text.len() > LOG_MAX_BYTES;
        let mut rest = &text[..text.len().min(LOG_MAX_BYTES)];
        let mut lines = 0;
        loop {
            if lines == LOG_MAX_LINES {
                truncated = true;
                break;
            }
            let (line, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            self.log_line(p, c, line);
            p.console(b"\n");
            lines += 1;
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
        if truncated {
            self.log_line(p, c, LOG_TRUNCATED);
            p.console(b"\n");
        }
    }

    /// Writes `[name] ` then `text` to the console.
    fn log_line<P: Platform>(&self, p: &mut P, c: usize, text: &[u8]) {
        p.console(b"[");
        p.console(self.tasks[c].desc.name.as_bytes());
        p.console(b"] ");
        p.console(text);
    }
}

/// Whether task `t`'s VM owns DMA memory covering physical `[pa, pa + len)`:
/// the task's own DMA regions, and for a VM's frontend its guest's
/// (`TaskDesc::vm_guest`). Only the frontend gains: the guest's own answer
/// is its own memory.
fn vm_owns(tasks: &[Task], t: usize, pa: usize, len: usize) -> bool {
    phys_owned(&tasks[t], pa, len)
        || match tasks[t].desc.vm_guest {
            Some(g) => tasks
                .get(g as usize)
                .is_some_and(|g| phys_owned(g, pa, len)),
            None => false,
        }
}

/// Whether `t`'s DMA-capable regions cover physical `[pa, pa + len)` (one
/// region must hold it all: regions are separate allocations).
fn phys_owned(t: &Task, pa: usize, len: usize) -> bool {
    let Some(end) = pa.checked_add(len) else {
        return false;
    };
    len > 0
        && t.desc.regions.iter().any(|r| {
            let start = region_pa(r);
            r.attributes & abi::REGION_DMA != 0 && pa >= start && end <= start + r.size
        })
}

/// Copies `n` bytes between two tasks' memory (kernel addresses). Messages
/// are small and usually word-aligned, so copy words inline rather than
/// calling the generic memcpy on the IPC path.
///
/// # Safety
/// `src` and `dst` must be valid for `n` bytes and must not overlap.
#[inline(always)]
unsafe fn copy_bytes(src: usize, dst: usize, n: usize) {
    if n > 64 || (src | dst) & 7 != 0 {
        // SAFETY: per the function contract.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, n) };
        return;
    }
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: aligned (checked above) and within the `n` bytes.
        unsafe { *((dst + i) as *mut u64) = *((src + i) as *const u64) };
        i += 8;
    }
    while i < n {
        // SAFETY: within the `n` bytes.
        unsafe { *((dst + i) as *mut u8) = *((src + i) as *const u8) };
        i += 1;
    }
}

/// What a receive returns for a message (x0..x5): OK, the sender, the
/// operation, the length as sent, the reply capacity, the lease count.
#[inline(always)]
fn recv_returns(
    rs: &mut crate::task::SavedState,
    sender: TaskId,
    op: u16,
    msg_len: usize,
    rep_cap: usize,
    nleases: usize,
) {
    rs.set_ret(0, RC_OK as usize);
    rs.set_ret(1, sender.0 as usize);
    rs.set_ret(2, op as usize);
    rs.set_ret(3, msg_len);
    rs.set_ret(4, rep_cap);
    rs.set_ret(5, nleases);
}

/// A fault of the calling task: its kind and detail.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Fault(pub FaultKind, pub usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PhysSource, RegionDesc, StaticPtr, TaskDesc};

    fn region(name: &'static str, pa: usize, size: usize, dma: bool) -> RegionDesc {
        RegionDesc {
            name,
            va: 0x1000_0000,
            size,
            attributes: abi::REGION_READ
                | abi::REGION_WRITE
                | if dma { abi::REGION_DMA } else { 0 },
            phys: PhysSource::Static(StaticPtr(pa as *const u8)),
        }
    }

    fn desc(
        name: &'static str,
        regions: Vec<RegionDesc>,
        vm_guest: Option<u16>,
    ) -> &'static TaskDesc {
        std::boxed::Box::leak(std::boxed::Box::new(TaskDesc {
            name,
            priority: 1,
            entry: 0,
            stack_top: 0,
            task_slots: &[],
            post_slots: &[],
            reg_windows: &[],
            regions: std::boxed::Box::leak(regions.into_boxed_slice()),
            capabilities: 0,
            start: true,
            vm_guest,
        }))
    }

    /// A VM is its frontend and its guest: the frontend's query covers the
    /// guest's DMA memory (and its own), the guest's covers only its own,
    /// and a third task's memory is nobody else's.
    #[test]
    fn phys_owned_covers_the_vms_guest_ram() {
        let tasks = [
            Task::new(desc(
                "vmm-frontend-a",
                vec![region("own", 0x4100_0000, 0x2000, true)],
                Some(1),
            )),
            Task::new(desc(
                "guest-a",
                vec![
                    region("ram", 0x4200_0000, 0x10_0000, true),
                    region("scratch", 0x4300_0000, 0x1000, false),
                ],
                None,
            )),
            Task::new(desc(
                "guest-b",
                vec![region("ram", 0x4400_0000, 0x10_0000, true)],
                None,
            )),
        ];
        // The frontend: its guest's RAM, whole or in part, and its own.
        assert!(vm_owns(&tasks, 0, 0x4200_0000, 0x10_0000));
        assert!(vm_owns(&tasks, 0, 0x4208_0000, 0x1000));
        assert!(vm_owns(&tasks, 0, 0x4100_1000, 0x1000));
        // Not past the end, not across two regions, not the guest's
        // non-DMA memory, not another VM's RAM, not an empty range.
        assert!(!vm_owns(&tasks, 0, 0x420f_f000, 0x2000));
        assert!(!vm_owns(&tasks, 0, 0x4300_0000, 0x1000));
        assert!(!vm_owns(&tasks, 0, 0x4400_0000, 0x1000));
        assert!(!vm_owns(&tasks, 0, 0x4200_0000, 0));
        assert!(!vm_owns(&tasks, 0, usize::MAX - 0xfff, 0x2000));
        // The guest owns its RAM, not its frontend's memory.
        assert!(vm_owns(&tasks, 1, 0x4200_0000, 0x1000));
        assert!(!vm_owns(&tasks, 1, 0x4100_0000, 0x1000));
        // Another guest: only its own.
        assert!(!vm_owns(&tasks, 2, 0x4200_0000, 0x1000));
        assert!(vm_owns(&tasks, 2, 0x4400_0000, 0x1000));
    }

    /// A guest index outside the table (never generated) grants nothing.
    #[test]
    fn phys_owned_ignores_a_missing_guest() {
        let tasks = [Task::new(desc("f", vec![], Some(7)))];
        assert!(!vm_owns(&tasks, 0, 0x4000_0000, 0x1000));
    }
}
/// [`Kernel::restart`] of a task in [`abi::Generation::LAST`]: refused, the
/// task stays as it is (`TaskControl::Restart` answers
/// [`abi::RC_GENERATIONS_EXHAUSTED`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GenerationsExhausted;
