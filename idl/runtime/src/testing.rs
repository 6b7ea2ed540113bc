//! Host-only helpers for the generated `idl_*` tests, and a loopback kernel
//! that runs a generated client against a generated `dispatch` in one
//! thread, without the IPC harness, on the kernel's own IPC core.

use std::boxed::Box;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

use abi::{REGION_READ, REGION_WRITE};
use kern::config::{PhysSource, RegionDesc, TaskDesc};
use kern::syscalls::{Kernel, Platform};
use kern::task::{Task, TaskState};

use serde::de::DeserializeOwned;
use serde::Serialize;
use userlib::host::HostKernel;
use userlib::{Generation, Sysnum};
use zerocopy::{FromBytes, IntoBytes};

use crate::{
    Access, Fixed, LeaseInfo, PostcardMax, RecvMessage, ReplyFaultReason, TaskId, MAX_MESSAGE,
};

/// The zerocopy bytes of `v`, as a client sends them.
pub fn fixed_bytes<T: Fixed>(v: &T) -> Vec<u8> {
    v.to_wire().as_bytes().to_vec()
}

/// The postcard bytes of `v`, as a client sends them; panics (a test
/// failure) if they exceed `T::MAX_SIZE`.
pub fn postcard_bytes<T: Serialize + PostcardMax>(v: &T) -> Vec<u8> {
    let mut buf = std::vec![0u8; T::MAX_SIZE];
    match postcard::to_slice(v, &mut buf) {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => panic!("postcard encoding exceeds MAX_SIZE {}: {e:?}", T::MAX_SIZE),
    }
}

/// `v` survives its zerocopy wire form.
pub fn assert_fixed_round_trip<T: Fixed + PartialEq + Debug>(v: &T) {
    let bytes = fixed_bytes(v);
    assert_eq!(bytes.len(), crate::wire_size::<T>());
    let wire = match T::Wire::read_from_bytes(&bytes) {
        Ok(w) => w,
        Err(_) => panic!("wire form of {v:?} does not read back"),
    };
    assert_eq!(T::from_wire(&wire).as_ref(), Some(v));
}

/// `v` survives postcard, within `T::MAX_SIZE`.
pub fn assert_postcard_round_trip<
    T: Serialize + DeserializeOwned + PostcardMax + PartialEq + Debug,
>(
    v: &T,
) {
    let bytes = postcard_bytes(v);
    assert!(bytes.len() <= T::MAX_SIZE);
    match postcard::from_bytes::<T>(&bytes) {
        Ok(back) => assert_eq!(&back, v),
        Err(e) => panic!("postcard form of {v:?} does not decode: {e:?}"),
    }
}

/// A lease as the kernel would describe it.
pub fn lease_info(access: Access, len: usize) -> LeaseInfo {
    LeaseInfo {
        attributes: access.attributes(),
        len,
    }
}

/// Code the loopback kernel returns to a client whose message the server
/// refused with reply-fault, or did not answer (the real kernel would fault
/// the client, or leave it blocked). Below the dead codes
/// (`0xFC00_0000 | generation`), so it never reads as "server died".
pub const FAULTED: u32 = 0xFBFF_FEFF;

/// Index of the server task in the loopback kernel.
pub const SERVER_INDEX: usize = 1;
/// Index of the client task (the thread that installed the kernel).
pub const CLIENT_INDEX: usize = 2;
/// The client as the server sees it.
pub const CLIENT: TaskId = TaskId::new(CLIENT_INDEX, Generation(0));

type Server = Box<dyn FnMut(&RecvMessage, &[u8]) + Send>;

/// What the loopback adds to the kernel core: injected deaths and what a
/// test reads back.
#[derive(Default)]
struct State {
    deaths_pending: u32,
    faults: Vec<ReplyFaultReason>,
    sends: u32,
    /// The server's dispatch is running: system calls come from the server.
    in_server: bool,
}

/// The machine the core runs on: no console, no time, no interrupts.
struct LoopPlatform;

impl Platform for LoopPlatform {
    fn console(&mut self, _bytes: &[u8]) {}
    fn irq_enable(&mut self, _intid: u32, _enable: bool) {}
    fn now_ms(&self) -> u64 {
        0
    }
    fn set_deadline(&mut self, _deadline: Option<u64>) {}
    fn shutdown(&mut self, status: u32) -> ! {
        panic!("loopback: the kernel core shut down the machine ({status})")
    }
    fn reset_task_memory(&mut self, _task: &Task) {}
}

/// The kernel's portable core (`kern::syscalls::Kernel`, the code the
/// AArch64 kernel and the IPC harness run) over three tasks: a supervisor
/// that never runs (index 0, where the core reports faults), the server
/// (1) and the client (2). Every task has one region spanning the host
/// address space, as in the harness, so the core copies between real host
/// buffers.
struct Core {
    k: Kernel<'static>,
    p: LoopPlatform,
    /// The server's receive buffer (leaked, `MAX_MESSAGE` bytes).
    recv_buf: usize,
}

impl Core {
    fn new() -> Core {
        let host: &'static [RegionDesc] = Box::leak(Box::new([RegionDesc {
            name: "host",
            va: 0,
            size: usize::MAX,
            attributes: REGION_READ | REGION_WRITE,
            phys: PhysSource::Fixed(0),
        }]));
        let desc = |name, priority, slots: &'static [u16], start| -> &'static TaskDesc {
            Box::leak(Box::new(TaskDesc {
                name,
                priority,
                entry: 0,
                stack_top: 0,
                task_slots: slots,
                post_slots: &[],
                reg_windows: &[],
                regions: host,
                capabilities: 0,
                start,
                vm_guest: None,
            }))
        };
        let tasks: &'static mut [Task] = Box::leak(Box::new([
            Task::new(desc("supervisor", 0, &[], false)),
            Task::new(desc("server", 1, &[], true)),
            Task::new(desc("client", 2, &[SERVER_INDEX as u16], true)),
        ]));
        let recv_buf = Box::leak(std::vec![0u8; MAX_MESSAGE].into_boxed_slice()).as_mut_ptr();
        let mut c = Core {
            k: Kernel::new(tasks, &[]),
            p: LoopPlatform,
            recv_buf: recv_buf as usize,
        };
        c.k.boot(&mut c.p);
        c.server_recv();
        c
    }

    /// Task `t` makes system call `num`; returns its return registers.
    fn call(&mut self, t: usize, num: Sysnum, args: [usize; 7]) -> [usize; 6] {
        let s = &mut self.k.tasks[t].save;
        for (x, a) in s.x.iter_mut().zip(args) {
            *x = a as u64;
        }
        s.x[7] = 0;
        s.x[8] = num as u64;
        self.k.current = t;
        self.k.syscall(&mut self.p);
        let x = &self.k.tasks[t].save.x;
        [x[0], x[1], x[2], x[3], x[4], x[5]].map(|v| v as usize)
    }

    /// The server waits in an open receive for messages and every
    /// notification bit (what a generated server loop does).
    fn server_recv(&mut self) {
        let args = [
            self.recv_buf,
            MAX_MESSAGE,
            u32::MAX as usize,
            TaskId::ANY.0 as usize,
            0,
            0,
            0,
        ];
        self.call(SERVER_INDEX, Sysnum::Recv, args);
    }

    /// The message the core delivered to the server, if its receive
    /// completed.
    fn server_message(&self) -> Option<(RecvMessage, Vec<u8>)> {
        let t = &self.k.tasks[SERVER_INDEX];
        if t.state != TaskState::Runnable {
            return None;
        }
        let r = |i: usize| t.save.arg(i);
        let msg = RecvMessage {
            sender: TaskId(r(1) as u32),
            operation: r(2) as u32,
            message_len: r(3),
            reply_capacity: r(4),
            lease_count: r(5),
        };
        let n = msg.message_len.min(MAX_MESSAGE);
        // SAFETY: `recv_buf` is this core's leaked buffer of MAX_MESSAGE
        // bytes; the core wrote the message into it and nothing else
        // writes it while the core's lock is held.
        let bytes = unsafe { std::slice::from_raw_parts(self.recv_buf as *const u8, n) };
        Some((msg, bytes.to_vec()))
    }

    /// After the server's dispatch: a server the core faulted is restarted
    /// (what the supervisor does); it then receives again.
    fn server_done(&mut self) {
        if matches!(self.k.tasks[SERVER_INDEX].state, TaskState::Faulted { .. }) {
            // Tests restart the server a handful of times, far from
            // `Generation::LAST`.
            let _ = self.k.restart(&mut self.p, SERVER_INDEX);
        }
        self.server_recv();
    }
}

/// One client and one server in one thread, with send / receive / reply /
/// reply-fault / borrow done by the kernel's own portable IPC core
/// (`kern::syscalls`), so the rules (dead codes and generations, reply
/// truncation, lease attributes and bounds, reply-fault faulting the
/// client) are the kernel's, not a copy of them.
///
/// A client `send` runs in the core; the message lands in the server's
/// receive, and the loopback then calls the server's dispatch closure,
/// whose `reply`, `reply_fault` and `borrow_*` calls go to the core as the
/// server's; then the server receives again. Server deaths can be injected
/// (the core restarts the server: a new generation, senders get dead
/// codes). What the core would leave blocked or faulted is turned into
/// [`FAULTED`] for the client, which stays usable: a server that does not
/// reply, or that reply-faults the client. The loopback models only IPC:
/// other system calls (timers, interrupts, memory queries, and a receive
/// or send made inside the server's dispatch) return zeroes.
pub struct LoopbackKernel {
    server: Mutex<Option<Server>>,
    core: Mutex<Core>,
    state: Mutex<State>,
}

impl LoopbackKernel {
    /// Installs a loopback kernel on this thread with `server` (typically a
    /// closure calling a generated `dispatch`).
    pub fn install(
        server: impl FnMut(&RecvMessage, &[u8]) + Send + 'static,
    ) -> Arc<LoopbackKernel> {
        let k = Arc::new(LoopbackKernel {
            server: Mutex::new(Some(Box::new(server))),
            core: Mutex::new(Core::new()),
            state: Mutex::new(State::default()),
        });
        userlib::host::install(k.clone());
        k
    }

    /// The server's id (current generation).
    pub fn server_id(&self) -> TaskId {
        self.core().k.id_of(SERVER_INDEX)
    }

    /// The next `n` sends find the server dead: before each, the core
    /// restarts the server (its generation moves on), so the send is
    /// answered with a dead code.
    pub fn kill_server(&self, n: u32) {
        self.state().deaths_pending = n;
    }

    /// Reply-faults seen so far.
    pub fn faults(&self) -> Vec<ReplyFaultReason> {
        self.state().faults.clone()
    }

    /// Sends that reached the kernel (including ones answered dead).
    pub fn sends(&self) -> u32 {
        self.state().sends
    }

    /// Posts notification bits to the server (the core wakes its receive)
    /// and runs its dispatch.
    pub fn notify(&self, bits: u32) {
        self.core().k.post(SERVER_INDEX, bits);
        self.pump();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        match self.core.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Runs the server's dispatch on what the core delivered to it, until
    /// it waits again.
    fn pump(&self) {
        loop {
            let Some((msg, bytes)) = self.core().server_message() else {
                return;
            };
            self.run_server(&msg, &bytes);
            self.core().server_done();
        }
    }

    fn run_server(&self, msg: &RecvMessage, buf: &[u8]) {
        // Taken out while it runs: its replies re-enter this kernel.
        let taken = match self.server.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        let Some(mut server) = taken else {
            panic!("loopback: the server sent to itself");
        };
        self.state().in_server = true;
        server(msg, buf);
        self.state().in_server = false;
        match self.server.lock() {
            Ok(mut g) => *g = Some(server),
            Err(p) => *p.into_inner() = Some(server),
        }
    }

    fn send(&self, args: [usize; 7]) -> [usize; 6] {
        {
            let mut st = self.state();
            st.sends += 1;
            if st.deaths_pending > 0 {
                st.deaths_pending -= 1;
                drop(st);
                let mut c = self.core();
                let Core { k, p, .. } = &mut *c;
                let _ = k.restart(p, SERVER_INDEX);
                c.server_recv();
            }
        }
        let r = self.core().call(CLIENT_INDEX, Sysnum::Send, args);
        self.pump();
        let mut c = self.core();
        let client = &mut c.k.tasks[CLIENT_INDEX];
        match client.state {
            // Answered: a reply, or a dead code.
            TaskState::Runnable => {
                let x = &client.save.x;
                [x[0], x[1], 0, 0, 0, 0].map(|v| v as usize)
            }
            // Reply-faulted (or faulted by the core for its arguments), or
            // never answered: the client carries on with FAULTED.
            TaskState::Faulted { .. } | TaskState::InReply(_) => {
                client.state = TaskState::Runnable;
                [FAULTED as usize, 0, 0, 0, 0, 0]
            }
            other => panic!("loopback: client left in {other:?} after send ({r:?})"),
        }
    }

    /// A server-side call that goes to the core as the server's.
    fn as_server(&self, num: Sysnum, args: [usize; 7]) -> [usize; 6] {
        self.core().call(SERVER_INDEX, num, args)
    }
}

impl HostKernel for LoopbackKernel {
    fn syscall(&self, num: Sysnum, args: [usize; 7]) -> [usize; 6] {
        let in_server = self.state().in_server;
        match (num, in_server) {
            (Sysnum::Send, false) => self.send(args),
            (Sysnum::RefreshTaskId, _) => {
                let t = if in_server {
                    SERVER_INDEX
                } else {
                    CLIENT_INDEX
                };
                let r = self.core().call(t, num, args);
                [r[0], 0, 0, 0, 0, 0]
            }
            (Sysnum::Reply, true) => {
                self.as_server(num, args);
                [0; 6]
            }
            (Sysnum::ReplyFault, true) => {
                let reason = ReplyFaultReason::from_u32(args[1] as u32);
                self.state()
                    .faults
                    .push(reason.unwrap_or(ReplyFaultReason::BadMessageContents));
                self.as_server(num, args);
                [0; 6]
            }
            (Sysnum::BorrowInfo | Sysnum::BorrowRead | Sysnum::BorrowWrite, true) => {
                let r = self.as_server(num, args);
                if r[0] as u32 == abi::RC_OK {
                    r
                } else {
                    [r[0], 0, 0, 0, 0, 0]
                }
            }
            _ => [0; 6],
        }
    }
}

#[cfg(test)]
mod tests {
    //! The loopback's IPC is the kernel core's: these check rules that live
    //! only in `kern::syscalls`, not in this file.
    use super::*;
    use userlib::{sys_borrow_read, sys_borrow_write, sys_reply, sys_reply_fault, sys_send, Lease};

    fn server_id(k: &LoopbackKernel) -> TaskId {
        k.server_id()
    }

    #[test]
    fn loopback_reply_longer_than_buffer_is_cut_and_full_length_reported() {
        let k = LoopbackKernel::install(|m, _| sys_reply(m.sender, 7, &[0xAB; 16]));
        let mut reply = [0u8; 4];
        let (code, len) = sys_send(server_id(&k), 1, &[], &mut reply, &[]);
        assert_eq!(code, 7);
        // The core reports the full length; the stub refuses the cut reply.
        assert_eq!(len, 16);
        assert_eq!(reply, [0xAB; 4]);
    }

    #[test]
    fn loopback_leases_follow_the_core_rules() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let k = LoopbackKernel::install(move |m, _| {
            let mut buf = [0u8; 8];
            let read = sys_borrow_read(m.sender, 0, 2, &mut buf);
            let write_ro = sys_borrow_write(m.sender, 0, 0, &[1, 2]);
            let past_end = sys_borrow_read(m.sender, 0, 9, &mut buf);
            let no_such = sys_borrow_read(m.sender, 1, 0, &mut buf);
            s.lock()
                .unwrap()
                .push((read, buf, write_ro, past_end, no_such));
            sys_reply(m.sender, 0, &[]);
        });
        let lent = [1u8, 2, 3, 4, 5];
        let (code, _) = sys_send(server_id(&k), 1, &[], &mut [], &[Lease::read_only(&lent)]);
        assert_eq!(code, 0);
        let (read, buf, write_ro, past_end, no_such) = seen.lock().unwrap()[0];
        assert_eq!(read, Ok(3), "cut at the lease's end");
        assert_eq!(&buf[..3], &[3, 4, 5]);
        assert_eq!(write_ro, Err(abi::RC_BAD_LEASE), "a read-only lease");
        assert_eq!(past_end, Err(abi::RC_BAD_LEASE));
        assert_eq!(no_such, Err(abi::RC_BAD_LEASE));
    }

    #[test]
    fn loopback_dead_server_gives_dead_code_with_new_generation() {
        let k = LoopbackKernel::install(|m, _| sys_reply(m.sender, 0, &[]));
        let old = server_id(&k);
        k.kill_server(1);
        let (code, _) = sys_send(old, 1, &[], &mut [], &[]);
        let new = server_id(&k);
        assert_ne!(new, old);
        assert_eq!(code, userlib::dead_code(new.generation()));
        // The new incarnation serves; the old id stays dead.
        assert_eq!(sys_send(new, 1, &[], &mut [], &[]).0, 0);
        assert_eq!(sys_send(old, 1, &[], &mut [], &[]).0, code);
    }

    #[test]
    fn loopback_reply_fault_and_silence_give_faulted_and_the_client_goes_on() {
        let k = LoopbackKernel::install(|m, _| match m.operation {
            1 => sys_reply_fault(m.sender, ReplyFaultReason::BadMessageSize),
            2 => {}
            _ => sys_reply(m.sender, 3, &[]),
        });
        let id = server_id(&k);
        assert_eq!(sys_send(id, 1, &[], &mut [], &[]).0, FAULTED);
        assert_eq!(sys_send(id, 2, &[], &mut [], &[]).0, FAULTED);
        assert_eq!(sys_send(id, 3, &[], &mut [], &[]).0, 3);
        assert_eq!(k.faults(), std::vec![ReplyFaultReason::BadMessageSize]);
        assert_eq!(k.sends(), 3);
    }

    #[test]
    fn loopback_notifications_reach_the_server_through_the_core() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let k = LoopbackKernel::install(move |m, _| {
            g.lock().unwrap().push((m.sender, m.operation));
        });
        k.notify(0b101);
        assert_eq!(*got.lock().unwrap(), [(TaskId::KERNEL, 0b101)]);
    }
}
