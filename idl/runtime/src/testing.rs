//! Host-only helpers for the generated `idl_*` tests, and a loopback kernel
//! that runs a generated client against a generated `dispatch` in one
//! thread, without the IPC harness.

use std::boxed::Box;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

use serde::de::DeserializeOwned;
use serde::Serialize;
use userlib::host::HostKernel;
use userlib::{Generation, LeaseDesc, Sysnum};
use zerocopy::{FromBytes, IntoBytes};

use crate::{Access, Fixed, LeaseInfo, PostcardMax, RecvMessage, ReplyFaultReason, TaskId};

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
/// refused with reply-fault (the real kernel would fault the client instead).
pub const FAULTED: u32 = 0xFFFF_FEFF;

/// Index of the server task in the loopback kernel.
pub const SERVER_INDEX: usize = 1;
/// The client as the server sees it.
pub const CLIENT: TaskId = TaskId::new(2, Generation(0));

type Server = Box<dyn FnMut(&RecvMessage, &[u8]) + Send>;

#[derive(Default)]
struct State {
    generation: u8,
    deaths_pending: u32,
    leases: Vec<LeaseDesc>,
    reply: Option<(u32, Vec<u8>)>,
    faults: Vec<ReplyFaultReason>,
    sends: u32,
}

/// One client and one server in one thread: a `send` runs the server's
/// dispatch closure right away, which answers through `reply` or
/// `reply_fault`; leases are served from the client's memory while the send
/// is in progress. Deaths of the server can be injected.
pub struct LoopbackKernel {
    server: Mutex<Option<Server>>,
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
            state: Mutex::new(State::default()),
        });
        userlib::host::install(k.clone());
        k
    }

    /// The server's id (current generation).
    pub fn server_id(&self) -> TaskId {
        TaskId::new(SERVER_INDEX, Generation(self.state().generation))
    }

    /// The next `n` sends find the server dead: each is answered with a dead
    /// code and the server's generation moves on.
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

    /// Delivers notification bits to the server.
    pub fn notify(&self, bits: u32) {
        let msg = RecvMessage {
            sender: TaskId::KERNEL,
            operation: bits,
            message_len: 0,
            reply_capacity: 0,
            lease_count: 0,
        };
        self.run_server(&msg, &[]);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
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
        server(msg, buf);
        match self.server.lock() {
            Ok(mut g) => *g = Some(server),
            Err(p) => *p.into_inner() = Some(server),
        }
    }

    fn lease(&self, index: usize) -> Option<LeaseDesc> {
        self.state().leases.get(index).copied()
    }

    fn send(&self, args: [usize; 7]) -> [usize; 6] {
        let target = TaskId(args[0] as u16);
        let operation = (args[0] >> 16) as u32;
        {
            let mut st = self.state();
            st.sends += 1;
            if st.deaths_pending > 0 {
                st.deaths_pending -= 1;
                st.generation = Generation(st.generation).next().0;
                return [
                    userlib::dead_code(Generation(st.generation)) as usize,
                    0,
                    0,
                    0,
                    0,
                    0,
                ];
            }
            if target.index() != SERVER_INDEX || target.generation().0 != st.generation {
                return [
                    userlib::dead_code(Generation(st.generation)) as usize,
                    0,
                    0,
                    0,
                    0,
                    0,
                ];
            }
        }
        let (msg_ptr, msg_len) = (args[1] as *const u8, args[2]);
        let (reply_ptr, reply_cap) = (args[3] as *mut u8, args[4]);
        let (lease_ptr, lease_count) = (args[5] as *const LeaseDesc, args[6]);
        let message: Vec<u8> = if msg_len == 0 {
            Vec::new()
        } else {
            // SAFETY: the client passed (ptr, len) of a live `&[u8]` to
            // `sys_send`, which is still running (we are inside it).
            unsafe { std::slice::from_raw_parts(msg_ptr, msg_len) }.to_vec()
        };
        let leases: Vec<LeaseDesc> = if lease_count == 0 {
            Vec::new()
        } else {
            // SAFETY: `&[Lease]` is `repr(transparent)` over `LeaseDesc`, and
            // the client's slice is live for the duration of the send.
            unsafe { std::slice::from_raw_parts(lease_ptr, lease_count) }.to_vec()
        };
        {
            let mut st = self.state();
            st.leases = leases;
            st.reply = None;
        }
        let msg = RecvMessage {
            sender: CLIENT,
            operation,
            message_len: message.len(),
            reply_capacity: reply_cap,
            lease_count,
        };
        self.run_server(&msg, &message);
        let mut st = self.state();
        st.leases.clear();
        match st.reply.take() {
            Some((code, bytes)) => {
                let n = bytes.len().min(reply_cap);
                if n > 0 {
                    // SAFETY: (reply_ptr, reply_cap) is the client's live
                    // `&mut [u8]` reply buffer and n <= reply_cap.
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), reply_ptr, n) };
                }
                [code as usize, n, 0, 0, 0, 0]
            }
            None => [FAULTED as usize, 0, 0, 0, 0, 0],
        }
    }

    fn borrow(&self, args: [usize; 7], write: bool) -> [usize; 6] {
        let bad = [abi::RC_BAD_LEASE as usize, 0, 0, 0, 0, 0];
        let (index, offset, ptr, len) = (args[1], args[2], args[3], args[4]);
        let Some(desc) = self.lease(index) else {
            return bad;
        };
        let need = if write {
            userlib::LEASE_WRITE
        } else {
            userlib::LEASE_READ
        };
        if desc.attributes & need == 0 {
            return bad;
        }
        let avail = (desc.len as usize).saturating_sub(offset);
        if offset > desc.len as usize {
            return bad;
        }
        let n = len.min(avail);
        if n > 0 {
            let lent = (desc.base as usize + offset) as *mut u8;
            if write {
                // SAFETY: the lease covers [base, base+len) of the client's
                // live buffer (send in progress); offset+n <= len; the
                // server's source is a live slice of n bytes.
                unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, lent, n) };
            } else {
                // SAFETY: as above, reading the client's buffer into the
                // server's live destination slice of at least n bytes.
                unsafe { std::ptr::copy_nonoverlapping(lent as *const u8, ptr as *mut u8, n) };
            }
        }
        [0, n, 0, 0, 0, 0]
    }
}

impl HostKernel for LoopbackKernel {
    fn syscall(&self, num: Sysnum, args: [usize; 7]) -> [usize; 6] {
        match num {
            Sysnum::Send => self.send(args),
            Sysnum::Reply => {
                let (code, ptr, len) = (args[1] as u32, args[2] as *const u8, args[3]);
                let bytes = if len == 0 {
                    Vec::new()
                } else {
                    // SAFETY: the server passed a live `&[u8]` to `sys_reply`.
                    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
                };
                self.state().reply = Some((code, bytes));
                [0; 6]
            }
            Sysnum::ReplyFault => {
                let reason = ReplyFaultReason::from_u32(args[1] as u32);
                self.state()
                    .faults
                    .push(reason.unwrap_or(ReplyFaultReason::BadMessageContents));
                [0; 6]
            }
            Sysnum::BorrowInfo => match self.lease(args[1]) {
                Some(d) => [0, d.attributes as usize, d.len as usize, 0, 0, 0],
                None => [abi::RC_BAD_LEASE as usize, 0, 0, 0, 0, 0],
            },
            Sysnum::BorrowRead => self.borrow(args, false),
            Sysnum::BorrowWrite => self.borrow(args, true),
            Sysnum::RefreshTaskId => {
                let id = TaskId(args[0] as u16);
                if id.index() == SERVER_INDEX {
                    [self.server_id().0 as usize, 0, 0, 0, 0, 0]
                } else {
                    [id.0 as usize, 0, 0, 0, 0, 0]
                }
            }
            _ => [0; 6],
        }
    }
}
