//! The IPC fast paths of `send` and `reply_recv` (seL4's "fastpath"
//! idea, in the portable core): every check of the general paths, none of
//! their bookkeeping, and nothing changed when any condition fails (the
//! general path then runs). docs/kernel.md "Cost of IPC" says what they
//! skip and how the fuzzer shows they reach the same states.

use super::{copy_bytes, recv_returns, Kernel, Platform, Woken};
use crate::task::TaskState;
use abi::{LeaseDesc, Sysnum, TaskId, MAX_LEASES, REGION_READ, REGION_WRITE};

impl Kernel<'_> {
    /// The IPC fast paths alone: true if one handled the current task's
    /// call (`self.current` is then the runnable task to run, chosen
    /// without the scheduler); false, with nothing changed, otherwise.
    /// The AArch64 entry code sends `send` and `reply_recv` here first.
    #[inline(always)]
    pub fn ipc_fast<P: Platform>(&mut self, p: &mut P) -> bool {
        if !p.ipc_fast_paths() {
            return false;
        }
        let c = self.current;
        let num = self.tasks[c].save.sysnum();
        let fast = if num == Sysnum::Send as u32 {
            self.send_fast(c)
        } else if num == Sysnum::ReplyRecv as u32 {
            self.reply_recv_fast(c)
        } else {
            false
        };
        if fast {
            p.ipc_fast_path_taken();
        }
        fast
    }

    /// The fast path of `send` (seL4's "fastpath" idea): the common case —
    /// a live target waiting in a receive this sender may satisfy, of
    /// priority at least the sender's, so it runs next — done with every
    /// check of [`Kernel::send`] and [`Kernel::deliver`] (task slot,
    /// message range with the CSDB clamp, length bound, lease count and
    /// lease table range, generation, receiver state) but without the
    /// general bookkeeping: no `senders`
    /// set changes (neither task is in one), no `Woken` record and no
    /// scheduler run (the receiver is the best runnable task: the sender
    /// was, and the receiver is at least as urgent).
    ///
    /// Returns false, having changed nothing, whenever any condition does
    /// not hold; the general path then handles the call (and faults the
    /// sender or blocks it, exactly as without the fast path).
    #[inline(always)]
    fn send_fast(&mut self, c: usize) -> bool {
        let s = &self.tasks[c].save;
        let target = TaskId(s.arg(0) as u32);
        let (msg, msg_len, nleases) = (s.arg(1), s.arg(2), s.arg(6));
        let t = target.index();
        if self.woken != Woken::None
            || nleases > MAX_LEASES
            || msg_len > abi::MAX_MESSAGE
            || t >= self.tasks.len()
            || self.tasks[c].slot_mask & (1 << t) == 0
            || self.tasks[t].generation != target.generation()
        {
            return false;
        }
        let me = self.id_of(c);
        let r = &self.tasks[t];
        let waiting = match r.state {
            TaskState::InRecv(None) => true,
            TaskState::InRecv(Some(from)) => from == me,
            _ => false,
        };
        if !waiting || r.priority() > self.tasks[c].priority() {
            return false;
        }
        let Some(src) = self.user(c, msg, msg_len, REGION_READ) else {
            return false;
        };
        // The lease table, as `send` checks it (the leases themselves are
        // checked against the lender's memory at each borrow).
        let leases = self.tasks[c].save.arg(5);
        let table = nleases * core::mem::size_of::<LeaseDesc>();
        if self.user(c, leases, table, REGION_READ).is_none() {
            return false;
        }
        let n = msg_len.min(self.tasks[t].recv_len);
        // SAFETY: as in `deliver`: `src` was checked now, the receiver's
        // buffer when it called recv; distinct tasks' writable regions do
        // not overlap.
        unsafe { copy_bytes(src, self.tasks[t].recv_buf, n) };
        let op = (self.tasks[c].save.arg(0) >> 32) as u16;
        let rep_cap = self.tasks[c].save.arg(4);
        recv_returns(&mut self.tasks[t].save, me, op, msg_len, rep_cap, nleases);
        // Neither task is in a `senders` set (the receiver is in recv, the
        // sender running): plain state writes keep the sets right.
        self.tasks[t].state = TaskState::Runnable;
        self.tasks[c].state = TaskState::InReply(target);
        self.current = t;
        true
    }

    /// The fast path of `reply_recv`: the reply reaches a live client
    /// waiting for it, and the open receive that follows finds nothing (no
    /// sender queued, no notification pending), so the server blocks and
    /// the client runs next — when no task that could outrank the client
    /// (its `rivals`, the server aside) is runnable. Every check of
    /// [`Kernel::reply_to`] and [`Kernel::recv_from`] is made first
    /// (reply length bound, both buffer ranges with the CSDB clamp, the
    /// client's reply buffer, generation, client state); on any failure
    /// nothing has changed and the general path runs (which faults whom it
    /// must, in the same order as ever).
    #[inline(always)]
    fn reply_recv_fast(&mut self, c: usize) -> bool {
        let s = &self.tasks[c].save;
        let target = TaskId(s.arg(0) as u32);
        let code = s.arg(0) >> 32;
        let (ptr, len) = (s.arg(1), s.arg(2));
        let (buf, buf_len, mask, from) =
            (s.arg(3), s.arg(4), s.arg(5) as u32, TaskId(s.arg(6) as u32));
        let t = target.index();
        if self.woken != Woken::None
            || from != TaskId::ANY
            || len > abi::MAX_MESSAGE
            || t >= self.tasks.len()
            || self.tasks[t].generation != target.generation()
            || self.tasks[c].senders != 0
            || self.tasks[c].notifications & mask != 0
        {
            return false;
        }
        let me = self.id_of(c);
        if !matches!(self.tasks[t].state, TaskState::InReply(x) if x == me) {
            return false;
        }
        // Who runs next: the client, unless a task that could outrank it
        // other than this server (which blocks) is runnable.
        if self.tasks[t].priority() > self.tasks[c].priority() {
            let mut m = self.tasks[t].rivals & !(1u64 << (c % abi::MAX_TASKS));
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                if self.tasks[i].is_runnable() {
                    return false;
                }
            }
        }
        let Some(src) = self.user(c, ptr, len, REGION_READ) else {
            return false;
        };
        let (rep, cap) = (
            self.tasks[t].save.arg(3),
            self.tasks[t].save.arg(4).min(abi::MAX_MESSAGE),
        );
        let n = len.min(cap);
        let Some(dst) = self.user(t, rep, n, REGION_READ | REGION_WRITE) else {
            return false;
        };
        let Some(buf_pa) = self.user(c, buf, buf_len, REGION_READ | REGION_WRITE) else {
            return false;
        };
        // SAFETY: checked ranges in the two tasks' regions, as in `reply_to`.
        unsafe { copy_bytes(src, dst, n) };
        let ts = &mut self.tasks[t].save;
        ts.set_ret(0, code);
        ts.set_ret(1, len);
        // The client (in `InReply`) and the server (running, then in an
        // open receive) are in no `senders` set.
        self.tasks[t].state = TaskState::Runnable;
        let sv = &mut self.tasks[c];
        sv.recv_buf = buf_pa;
        sv.recv_len = buf_len;
        sv.notification_mask = mask;
        sv.state = TaskState::InRecv(None);
        self.current = t;
        true
    }
}
