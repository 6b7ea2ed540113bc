//! Observation: turning the tasks' state changes into trace events.

use super::state::State;
use crate::trace::{Decoded, LeaseSummary, What};
use abi::{is_dead_code, Generation, LeaseDesc, Sysnum, TaskId, MAX_MESSAGE, RC_OK, REGION_READ};
use kern::task::TaskState;

/// A task's scheduling facts before a kernel operation, to see what it did.
#[derive(Clone)]
pub(super) struct Snap {
    pub(super) state: TaskState,
    pub(super) generation: Generation,
    pub(super) deadline: Option<u64>,
}

impl State {
    pub(super) fn snapshot(&self) -> Vec<Snap> {
        self.k
            .tasks
            .iter()
            .map(|t| Snap {
                state: t.state,
                generation: t.generation,
                deadline: t.timer_deadline,
            })
            .collect()
    }

    /// Reads task memory for the trace.
    pub(super) fn read(&self, t: usize, va: usize, len: usize) -> Vec<u8> {
        let n = len.min(MAX_MESSAGE);
        if n == 0 {
            return Vec::new();
        }
        match self.k.tasks[t].translate(va, n, REGION_READ) {
            // SAFETY: `translate` found the range inside one of the task's
            // readable regions; on the host those are the task coroutine's own
            // memory at the same address (the `host` region maps virtual =
            // host). The task is blocked in a system call or waiting for
            // the CPU token while the harness holds the state lock, and
            // these are buffers it passed to the kernel, so they are live
            // and nothing writes them meanwhile.
            Some(pa) => unsafe { std::slice::from_raw_parts(pa as *const u8, n) }.to_vec(),
            None => Vec::new(),
        }
    }

    pub(super) fn leases(&self, t: usize) -> Vec<LeaseSummary> {
        let (table, count) = (self.k.tasks[t].save.arg(5), self.k.tasks[t].save.arg(6));
        let size = std::mem::size_of::<LeaseDesc>();
        (0..count.min(abi::MAX_LEASES))
            .filter_map(|k| {
                let pa = self.k.tasks[t].translate(table + k * size, size, REGION_READ)?;
                // SAFETY: as in `read`: the sender's lease table, checked to
                // lie in its readable memory, live while it waits; read
                // unaligned because it is just the sender's bytes.
                let d: LeaseDesc = unsafe { std::ptr::read_unaligned(pa as *const LeaseDesc) };
                Some(LeaseSummary {
                    attributes: d.attributes,
                    len: d.len,
                })
            })
            .collect()
    }

    fn decoded(
        &self,
        server: usize,
        op: u16,
        request: Option<(&[u8], &[LeaseSummary])>,
        reply: Option<(u32, &[u8])>,
    ) -> Option<Decoded> {
        let d = self.decoders.get(server)?.as_ref()?;
        let operation = d.operation(op).unwrap_or_else(|| format!("op{op}"));
        let text = match (request, reply) {
            (Some((b, leases)), _) => d.request_leased(op, b, leases),
            (None, Some((code, b))) => d.reply(op, code, b),
            (None, None) => None,
        };
        Some(Decoded {
            interface: d.interface().to_string(),
            operation,
            text,
        })
    }

    /// Events that only the call itself explains (the caller's own result).
    pub(super) fn observe_call(
        &mut self,
        c: usize,
        num: Sysnum,
        args: [usize; 7],
        before: &[Snap],
    ) {
        let me = self.id(c);
        let state = self.k.tasks[c].state;
        if matches!(state, TaskState::Faulted { .. })
            || self.k.tasks[c].generation != before[c].generation
        {
            return;
        }
        let x = |st: &Self, i: usize| st.k.tasks[c].save.arg(i);
        match num {
            Sysnum::Send if state == TaskState::Runnable => {
                // Answered at once: only a dead code does that.
                let target = TaskId(args[0] as u32);
                if let Some(g) = is_dead_code(x(self, 0) as u32) {
                    self.plat.push(What::DeadCode {
                        task: me,
                        peer: target.with_generation(g),
                        call: num,
                    });
                }
            }
            Sysnum::Recv if state == TaskState::Runnable => {
                let code = x(self, 0) as u32;
                if let Some(g) = is_dead_code(code) {
                    let peer = TaskId(args[3] as u32).with_generation(g);
                    self.plat.push(What::DeadCode {
                        task: me,
                        peer,
                        call: num,
                    });
                } else if TaskId(x(self, 1) as u32) == TaskId::KERNEL {
                    let bits = x(self, 2) as u32;
                    self.plat.push(What::Notification { task: me, bits });
                }
                // A message taken at once shows up as its sender's change.
            }
            Sysnum::Reply => {
                let to = TaskId(args[0] as u32);
                let delivered = to.index() < self.k.tasks.len()
                    && before[to.index()].state == TaskState::InReply(me)
                    && self.k.tasks[to.index()].state != TaskState::InReply(me);
                if !delivered {
                    self.plat.push(What::ReplyDropped {
                        from: me,
                        to,
                        code: args[1] as u32,
                    });
                }
            }
            Sysnum::BorrowRead | Sysnum::BorrowWrite | Sysnum::BorrowInfo => {
                let code = x(self, 0) as u32;
                let result = if code != RC_OK {
                    Err(code)
                } else if num == Sysnum::BorrowInfo {
                    Ok(x(self, 2))
                } else {
                    Ok(x(self, 1))
                };
                let lender = TaskId(args[0] as u32);
                self.plat.push(What::Borrow {
                    server: me,
                    lender,
                    call: num,
                    index: args[1],
                    offset: args[2],
                    result,
                });
            }
            Sysnum::Post => {
                let code = x(self, 0) as u32;
                self.plat.push(What::Post {
                    from: me,
                    to: TaskId(args[0] as u32),
                    bits: args[1] as u32,
                    code,
                });
            }
            Sysnum::SetTimer => {
                let deadline = (args[0] != 0).then_some(args[1] as u64);
                self.plat.push(What::TimerSet {
                    task: me,
                    deadline,
                    bits: args[2] as u32,
                });
                if deadline.is_some() && self.k.tasks[c].timer_deadline.is_none() {
                    let bits = self.k.tasks[c].timer_bits;
                    self.plat.push(What::TimerFired { task: me, bits });
                }
            }
            Sysnum::IrqControl => {
                self.plat.push(What::IrqControl {
                    task: me,
                    mask: args[0] as u32,
                    enable: args[1] != 0,
                });
            }
            Sysnum::RefreshTaskId => {
                self.plat.push(What::Refresh {
                    task: me,
                    peer: TaskId(x(self, 0) as u32),
                });
            }
            _ => {}
        }
    }

    /// Events read off the tasks' state changes: deliveries, replies, dead
    /// codes, notifications, faults, timers.
    pub(super) fn observe(
        &mut self,
        before: &[Snap],
        call: Option<(usize, Sysnum, [usize; 7])>,
        fault_message: Option<String>,
    ) {
        // Restarted tasks are left out: their Restart event says it all.
        let same: Vec<usize> = (0..self.k.tasks.len())
            .filter(|&t| self.k.tasks[t].generation == before[t].generation)
            .collect();
        // Causes before effects: faults, then fired timers, then what the
        // tasks got.
        for &t in &same {
            if let (false, TaskState::Faulted { kind, detail }) = (
                matches!(before[t].state, TaskState::Faulted { .. }),
                self.k.tasks[t].state,
            ) {
                let message = match call {
                    Some((c, Sysnum::Panic, _)) if c == t => fault_message.clone(),
                    _ => None,
                };
                self.plat.push(What::Fault {
                    task: self.id(t),
                    kind,
                    detail,
                    message,
                });
            }
        }
        for &t in &same {
            // A timer that disappeared without being reset fired (the
            // caller's own SetTimer is `observe_call`'s business).
            let own_set = matches!(call, Some((c, Sysnum::SetTimer, _)) if c == t);
            let faulted = matches!(self.k.tasks[t].state, TaskState::Faulted { .. });
            if !own_set
                && !faulted
                && before[t].deadline.is_some()
                && self.k.tasks[t].timer_deadline.is_none()
            {
                let bits = self.k.tasks[t].timer_bits;
                self.plat.push(What::TimerFired {
                    task: self.id(t),
                    bits,
                });
            }
        }
        for &t in &same {
            let me = self.id(t);
            let save = &self.k.tasks[t].save;
            match (before[t].state, self.k.tasks[t].state) {
                (TaskState::InReply(s), TaskState::Runnable) => {
                    let code = save.arg(0) as u32;
                    if let Some(g) = is_dead_code(code) {
                        self.plat.push(What::DeadCode {
                            task: me,
                            peer: s.with_generation(g),
                            call: Sysnum::Send,
                        });
                    } else {
                        let (len, ptr, cap) = (save.arg(1), save.arg(3), save.arg(4));
                        let bytes = self.read(t, ptr, len.min(cap));
                        let op = self.last_op[t];
                        let decoded = self.decoded(s.index(), op, None, Some((code, &bytes)));
                        self.plat.push(What::Reply {
                            from: s,
                            to: me,
                            op,
                            code,
                            len,
                            bytes,
                            decoded,
                        });
                    }
                }
                (TaskState::InSend(s), TaskState::Runnable) => {
                    if let Some(g) = is_dead_code(save.arg(0) as u32) {
                        self.plat.push(What::DeadCode {
                            task: me,
                            peer: s.with_generation(g),
                            call: Sysnum::Send,
                        });
                    }
                }
                (TaskState::InRecv(from), TaskState::Runnable) => {
                    let code = save.arg(0) as u32;
                    if TaskId(save.arg(1) as u32) == TaskId::KERNEL && code == RC_OK {
                        let bits = save.arg(2) as u32;
                        self.plat.push(What::Notification { task: me, bits });
                    } else if let (Some(g), Some(f)) = (is_dead_code(code), from) {
                        self.plat.push(What::DeadCode {
                            task: me,
                            peer: f.with_generation(g),
                            call: Sysnum::Recv,
                        });
                    }
                }
                (prev, TaskState::InReply(to)) if prev != TaskState::InReply(to) => {
                    let (op, ptr, len) = ((save.arg(0) >> 32) as u16, save.arg(1), save.arg(2));
                    let bytes = self.read(t, ptr, len);
                    let leases = self.leases(t);
                    self.last_op[t] = op;
                    let decoded = self.decoded(to.index(), op, Some((&bytes, &leases)), None);
                    self.plat.push(What::Message {
                        from: me,
                        to,
                        op,
                        len,
                        bytes,
                        leases,
                        decoded,
                    });
                }
                _ => {}
            }
        }
    }
}
