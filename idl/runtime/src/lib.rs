//! Support code for the IPC stubs generated from `idl/*.idol.ron`.
//!
//! The generator (crate `idl`) emits, per interface, types, a client stub, a
//! server trait and a dispatch function. Everything those have in common
//! lives here, once, so that generated code stays short and readable:
//!
//! - [`Fixed`]: the zerocopy wire form of a fixed-size type (little-endian,
//!   alignment 1, no padding), with a *checked* decode: enum tags, `bool`s
//!   and flag bits are validated, never transmuted.
//! - [`PostcardMax`]: the largest postcard encoding of a type, so that every
//!   buffer is a stack array sized at compile time (no heap anywhere).
//! - [`Reject`] and the pure decoding helpers used by each interface's
//!   `dispatch_decode` (message size, contents, leases, reply capacity).
//! - [`Leased`]: a server's bounded handle on a lease of the caller.
//! - [`IdlError`] and the client-side call helpers: death of the server is
//!   turned into the interface error's `ServerDied` variant after refreshing
//!   the server's `TaskId`; idempotent operations are retried once.
//! - reply helpers that answer with code 0 + payload, or the error's code.
//!
//! Nothing here panics on input from the other side of a message.

#![cfg_attr(not(any(test, feature = "std")), no_std)]

use core::cell::Cell;
use core::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
pub use userlib::{
    is_dead_code, sys_borrow_info, sys_reply, sys_reply_fault, sys_send, Lease, LeaseInfo,
    RecvMessage, ReplyFaultReason, TaskId, LEASE_READ, LEASE_WRITE,
};
use zerocopy::little_endian as le;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

#[cfg(any(test, feature = "std"))]
pub mod testing;

pub use abi::{MAX_LEASES, MAX_MESSAGE};

// ---------------------------------------------------------------------------
// Wire forms
// ---------------------------------------------------------------------------

/// A type with a fixed-size zerocopy wire form.
///
/// `Wire` is a plain-old-data struct of little-endian fields with alignment
/// 1 and no padding, so any byte string of the right length is a `Wire`
/// value; [`Fixed::from_wire`] then checks what the bytes *mean* (enum tags,
/// `bool`s, flag bits) and returns `None` for anything not valid.
pub trait Fixed: Sized {
    type Wire: FromBytes + IntoBytes + Immutable + KnownLayout + Unaligned + Copy;
    fn to_wire(&self) -> Self::Wire;
    fn from_wire(wire: &Self::Wire) -> Option<Self>;
}

/// The wire form of `T` (for lease buffers on the client side).
pub type WireOf<T> = <T as Fixed>::Wire;

/// Size in bytes of `T`'s wire form.
pub const fn wire_size<T: Fixed>() -> usize {
    core::mem::size_of::<T::Wire>()
}

/// Integer primitives: every wire value is valid. Arrays are allowed only of
/// these, so an array's decode cannot fail half-way.
pub trait Plain: Fixed + Copy {
    fn from_plain(wire: &Self::Wire) -> Self;
}

macro_rules! fixed_int {
    ($($t:ty => $w:ty),* $(,)?) => {$(
        impl Fixed for $t {
            type Wire = $w;
            fn to_wire(&self) -> $w {
                <$w>::from(*self)
            }
            fn from_wire(wire: &$w) -> Option<$t> {
                Some(<$t>::from(*wire))
            }
        }
        impl Plain for $t {
            fn from_plain(wire: &$w) -> $t {
                <$t>::from(*wire)
            }
        }
    )*};
}

fixed_int! {
    u8 => u8,
    i8 => i8,
    u16 => le::U16,
    u32 => le::U32,
    u64 => le::U64,
    i16 => le::I16,
    i32 => le::I32,
    i64 => le::I64,
}

impl Fixed for bool {
    type Wire = u8;
    fn to_wire(&self) -> u8 {
        *self as u8
    }
    fn from_wire(wire: &u8) -> Option<bool> {
        match *wire {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

impl Fixed for () {
    type Wire = ();
    fn to_wire(&self) {}
    fn from_wire(_: &()) -> Option<()> {
        Some(())
    }
}

impl Fixed for TaskId {
    type Wire = le::U32;
    fn to_wire(&self) -> le::U32 {
        le::U32::new(self.0)
    }
    fn from_wire(wire: &le::U32) -> Option<TaskId> {
        Some(TaskId(wire.get()))
    }
}

impl<T: Plain, const N: usize> Fixed for [T; N] {
    type Wire = [T::Wire; N];
    fn to_wire(&self) -> [T::Wire; N] {
        core::array::from_fn(|i| self[i].to_wire())
    }
    fn from_wire(wire: &[T::Wire; N]) -> Option<[T; N]> {
        Some(core::array::from_fn(|i| T::from_plain(&wire[i])))
    }
}

/// Upper bound of a type's postcard encoding, in bytes.
pub trait PostcardMax {
    const MAX_SIZE: usize;
}

macro_rules! postcard_max {
    ($($t:ty => $n:expr),* $(,)?) => {$(
        impl PostcardMax for $t {
            const MAX_SIZE: usize = $n;
        }
    )*};
}

// Varints: 7 bits per byte.
postcard_max! {
    () => 0,
    bool => 1,
    u8 => 1,
    i8 => 1,
    u16 => 3,
    i16 => 3,
    u32 => 5,
    i32 => 5,
    u64 => 10,
    i64 => 10,
    TaskId => 5,
}

impl<T: PostcardMax> PostcardMax for Option<T> {
    const MAX_SIZE: usize = 1 + T::MAX_SIZE;
}

impl<T: PostcardMax, const N: usize> PostcardMax for [T; N] {
    const MAX_SIZE: usize = N * T::MAX_SIZE;
}

/// Largest of `sizes` (for buffer sizes in constant context).
pub const fn max_of(sizes: &[usize]) -> usize {
    let mut m = 0;
    let mut i = 0;
    while i < sizes.len() {
        if sizes[i] > m {
            m = sizes[i];
        }
        i += 1;
    }
    m
}

/// A fieldless enum or flag set whose postcard form is its integer
/// representation (not serde's variant index), so that both encodings carry
/// the same numbers.
pub trait Repr: Sized + Copy {
    type Int: Copy + Serialize + DeserializeOwned;
    fn to_repr(self) -> Self::Int;
    fn from_repr(v: Self::Int) -> Option<Self>;
}

/// `Serialize` body for a [`Repr`] type.
pub fn serialize_repr<T: Repr, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    v.to_repr().serialize(s)
}

/// `Deserialize` body for a [`Repr`] type: an unknown value is an error.
pub fn deserialize_repr<'de, T: Repr, D: serde::Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let v = <T::Int as serde::Deserialize>::deserialize(d)?;
    T::from_repr(v)
        .ok_or_else(|| <D::Error as serde::de::Error>::custom("unknown enum tag or flag bits"))
}

/// `#[serde(with = "idl_runtime::task_id_serde")]` for `TaskId` fields (the
/// ABI crate has no serde dependency).
pub mod task_id_serde {
    use super::TaskId;

    pub fn serialize<S: serde::Serializer>(v: &TaskId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(v.0)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TaskId, D::Error> {
        <u32 as serde::Deserialize>::deserialize(d).map(TaskId)
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What every generated error enum provides.
pub trait IdlError: Copy {
    /// The server died (or restarted) before answering; the client's
    /// `TaskId` has been refreshed. Also what a server answers when a server
    /// it depends on died while handling the request.
    const SERVER_DIED: Self;
    /// The message could not be encoded or the reply not decoded: a bug on
    /// the server's side (or the generator's), never bad client input.
    const PROTOCOL: Self;
    /// Response code on the wire (never 0, never a kernel dead code).
    fn code(self) -> u32;
    /// Error for a non-zero response code; unknown codes are `PROTOCOL`.
    fn from_code(code: u32) -> Self;
}

fn error_from_code<E: IdlError>(code: u32) -> E {
    if is_dead_code(code).is_some() {
        E::SERVER_DIED
    } else {
        E::from_code(code)
    }
}

// ---------------------------------------------------------------------------
// Server side: pure decoding
// ---------------------------------------------------------------------------

/// Why a message was refused outright. The syscall wrapper answers it with
/// `sys_reply_fault(sender, reason)`; `what` is for logs and fuzzing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub reason: ReplyFaultReason,
    pub what: &'static str,
}

impl Reject {
    pub const fn new(reason: ReplyFaultReason, what: &'static str) -> Reject {
        Reject { reason, what }
    }
    pub const UNKNOWN_OPERATION: Reject =
        Reject::new(ReplyFaultReason::UndefinedOperation, "unknown operation");
    pub const TRUNCATED: Reject = Reject::new(
        ReplyFaultReason::BadMessageSize,
        "message longer than the receive buffer",
    );
    pub const WRONG_SIZE: Reject = Reject::new(
        ReplyFaultReason::BadMessageSize,
        "message length does not match the operation",
    );
    pub const TOO_LONG: Reject = Reject::new(
        ReplyFaultReason::BadMessageSize,
        "message longer than the operation's largest encoding",
    );
    pub const TRAILING: Reject = Reject::new(
        ReplyFaultReason::BadMessageSize,
        "bytes after the encoded arguments",
    );
    pub const BAD_CONTENTS: Reject = Reject::new(
        ReplyFaultReason::BadMessageContents,
        "bad enum tag, bool or flag bits in the arguments",
    );
    pub const LEASE_COUNT: Reject = Reject::new(
        ReplyFaultReason::BadLeases,
        "wrong number of leases for the operation",
    );
    pub const LEASE_ACCESS: Reject = Reject::new(
        ReplyFaultReason::BadLeases,
        "lease lacks the read/write access the operation needs",
    );
    pub const LEASE_STRIDE: Reject = Reject::new(
        ReplyFaultReason::BadLeases,
        "lease length is not a whole number of entries",
    );
    pub const LEASE_LENGTH: Reject = Reject::new(
        ReplyFaultReason::BadLeases,
        "lease holds fewer or more entries than allowed",
    );
    pub const REPLY_TOO_SMALL: Reject = Reject::new(
        ReplyFaultReason::ReplyBufferTooSmall,
        "reply buffer smaller than the largest reply",
    );
    pub const NOT_ALLOWED: Reject = Reject::new(
        ReplyFaultReason::AccessViolation,
        "caller not allowed to use this operation",
    );
}

/// Decodes zerocopy-encoded arguments: exact length, then checked contents.
pub fn decode_fixed<T: Fixed>(bytes: &[u8]) -> Result<T, Reject> {
    let wire = T::Wire::read_from_bytes(bytes).map_err(|_| Reject::WRONG_SIZE)?;
    T::from_wire(&wire).ok_or(Reject::BAD_CONTENTS)
}

/// Decodes postcard-encoded arguments: bounded length, whole message used.
pub fn decode_postcard<T: DeserializeOwned + PostcardMax>(bytes: &[u8]) -> Result<T, Reject> {
    if bytes.len() > T::MAX_SIZE {
        return Err(Reject::TOO_LONG);
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok(_) => Err(Reject::TRAILING),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(Reject::WRONG_SIZE),
        Err(_) => Err(Reject::BAD_CONTENTS),
    }
}

/// The access a lease must grant.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    pub const fn attributes(self) -> u32 {
        match self {
            Access::Read => LEASE_READ,
            Access::Write => LEASE_WRITE,
            Access::ReadWrite => LEASE_READ | LEASE_WRITE,
        }
    }
}

/// A checked lease: its index in the message and its length in bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeaseSlot {
    pub index: usize,
    pub len: usize,
}

/// The message must come with exactly `count` leases.
pub fn expect_leases(leases: &[LeaseInfo], count: usize) -> Result<(), Reject> {
    if leases.len() == count {
        Ok(())
    } else {
        Err(Reject::LEASE_COUNT)
    }
}

/// Checks lease `index` against the operation: access, whole entries of
/// `T`, and between `min` and `max` entries.
pub fn check_lease<T: Fixed>(
    leases: &[LeaseInfo],
    index: usize,
    access: Access,
    min: usize,
    max: usize,
) -> Result<LeaseSlot, Reject> {
    let info = leases.get(index).ok_or(Reject::LEASE_COUNT)?;
    let need = access.attributes();
    if info.attributes & need != need {
        return Err(Reject::LEASE_ACCESS);
    }
    let size = wire_size::<T>();
    if size == 0 || info.len % size != 0 {
        return Err(Reject::LEASE_STRIDE);
    }
    let count = info.len / size;
    if count < min || count > max {
        return Err(Reject::LEASE_LENGTH);
    }
    Ok(LeaseSlot {
        index,
        len: info.len,
    })
}

/// The caller must be able to take the operation's largest reply.
pub fn expect_reply_capacity(capacity: usize, needed: usize) -> Result<(), Reject> {
    if capacity >= needed {
        Ok(())
    } else {
        Err(Reject::REPLY_TOO_SMALL)
    }
}

// ---------------------------------------------------------------------------
// Server side: lease handles
// ---------------------------------------------------------------------------

/// Access markers for [`Leased`].
pub struct Read;
pub struct Write;
pub struct ReadWrite;
pub trait CanRead {}
pub trait CanWrite {}
impl CanRead for Read {}
impl CanRead for ReadWrite {}
impl CanWrite for Write {}
impl CanWrite for ReadWrite {}

/// Why a lease access failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LeaseError {
    /// Index or range past the end of the lease.
    OutOfBounds,
    /// An entry read from the lease does not decode (bad tag, bool, flags).
    BadContents,
    /// The kernel refused the copy: the lender died or the lease is gone.
    Unavailable,
}

/// A server's handle on one lease of the current message, as entries of
/// `T`: every access is bounds-checked before the kernel is asked, and
/// entries read are decoded with [`Fixed::from_wire`].
pub struct Leased<A, T> {
    lender: TaskId,
    index: usize,
    len: usize,
    _marker: PhantomData<fn() -> (A, T)>,
}

impl<A, T: Fixed> Leased<A, T> {
    pub fn new(lender: TaskId, slot: LeaseSlot) -> Self {
        Leased {
            lender,
            index: slot.index,
            len: slot.len,
            _marker: PhantomData,
        }
    }
    pub fn lender(&self) -> TaskId {
        self.lender
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        match wire_size::<T>() {
            0 => 0,
            size => self.len / size,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn byte_len(&self) -> usize {
        self.len
    }
    fn range(&self, offset: usize, len: usize) -> Result<(), LeaseError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(LeaseError::OutOfBounds),
        }
    }
    fn entry_offset(&self, i: usize) -> Result<usize, LeaseError> {
        if i < self.len() {
            Ok(i * wire_size::<T>())
        } else {
            Err(LeaseError::OutOfBounds)
        }
    }
}

impl<A: CanRead, T: Fixed> Leased<A, T> {
    /// Copies bytes at `offset` into `dest` (all of it, or an error).
    pub fn read_bytes(&self, offset: usize, dest: &mut [u8]) -> Result<(), LeaseError> {
        self.range(offset, dest.len())?;
        match userlib::sys_borrow_read(self.lender, self.index, offset, dest) {
            Ok(n) if n == dest.len() => Ok(()),
            _ => Err(LeaseError::Unavailable),
        }
    }
    /// Entry `i`, undecoded.
    pub fn read_wire(&self, i: usize) -> Result<T::Wire, LeaseError> {
        let offset = self.entry_offset(i)?;
        let mut wire = T::Wire::new_zeroed();
        self.read_bytes(offset, wire.as_mut_bytes())?;
        Ok(wire)
    }
    /// Entry `i`, decoded and checked.
    pub fn read(&self, i: usize) -> Result<T, LeaseError> {
        let wire = self.read_wire(i)?;
        T::from_wire(&wire).ok_or(LeaseError::BadContents)
    }
    /// Entries from `start` into `dest` (one copy); returns how many.
    pub fn read_wires(&self, start: usize, dest: &mut [T::Wire]) -> Result<usize, LeaseError> {
        let n = dest.len().min(self.len().saturating_sub(start));
        if n == 0 {
            return Ok(0);
        }
        let offset = self.entry_offset(start)?;
        let bytes = dest[..n].as_mut_bytes();
        self.read_bytes(offset, bytes)?;
        Ok(n)
    }
}

impl<A: CanWrite, T: Fixed> Leased<A, T> {
    /// Copies `src` into the lease at `offset` (all of it, or an error).
    pub fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), LeaseError> {
        self.range(offset, src.len())?;
        match userlib::sys_borrow_write(self.lender, self.index, offset, src) {
            Ok(n) if n == src.len() => Ok(()),
            _ => Err(LeaseError::Unavailable),
        }
    }
    /// Stores entry `i`.
    pub fn write(&self, i: usize, value: &T) -> Result<(), LeaseError> {
        self.write_wire(i, &value.to_wire())
    }
    pub fn write_wire(&self, i: usize, wire: &T::Wire) -> Result<(), LeaseError> {
        let offset = self.entry_offset(i)?;
        self.write_bytes(offset, wire.as_bytes())
    }
    /// Stores `src` from entry `start` on (one copy).
    pub fn write_wires(&self, start: usize, src: &[T::Wire]) -> Result<(), LeaseError> {
        if src.is_empty() {
            return Ok(());
        }
        let offset = self.entry_offset(start)?;
        self.write_bytes(offset, src.as_bytes())
    }
}

// ---------------------------------------------------------------------------
// Server side: the thin syscall layer
// ---------------------------------------------------------------------------

/// The received bytes of `msg`, refusing a message the buffer truncated.
pub fn message_bytes<'a>(msg: &RecvMessage, buf: &'a [u8]) -> Result<&'a [u8], Reject> {
    buf.get(..msg.message_len).ok_or(Reject::TRUNCATED)
}

/// Asks the kernel for the attributes and length of every lease of `msg`.
/// A lease the kernel cannot describe (the sender died meanwhile) counts as
/// missing: the fault then goes to a dead task, which the kernel drops.
pub fn collect_leases<'a>(
    msg: &RecvMessage,
    out: &'a mut [LeaseInfo; MAX_LEASES],
) -> Result<&'a [LeaseInfo], Reject> {
    if msg.lease_count > MAX_LEASES {
        return Err(Reject::LEASE_COUNT);
    }
    for (i, slot) in out.iter_mut().enumerate().take(msg.lease_count) {
        *slot = sys_borrow_info(msg.sender, i).map_err(|_| Reject::LEASE_COUNT)?;
    }
    Ok(&out[..msg.lease_count])
}

/// Signature of every interface's `dispatch_decode`.
pub type DecodeFn<R> = fn(u32, &[u8], usize, &[LeaseInfo]) -> Result<R, Reject>;

/// Decodes `msg` with `decode`; on a reject, faults the sender and returns
/// `None`.
pub fn receive<R>(msg: &RecvMessage, buf: &[u8], decode: DecodeFn<R>) -> Option<R> {
    let mut infos = [LeaseInfo {
        attributes: 0,
        len: 0,
    }; MAX_LEASES];
    let decoded = message_bytes(msg, buf).and_then(|bytes| {
        let leases = collect_leases(msg, &mut infos)?;
        decode(msg.operation, bytes, msg.reply_capacity, leases)
    });
    match decoded {
        Ok(r) => Some(r),
        Err(reject) => {
            sys_reply_fault(msg.sender, reject.reason);
            None
        }
    }
}

/// Refuses the message outright (the kernel faults the sender).
pub fn reply_fault(to: TaskId, reject: Reject) {
    sys_reply_fault(to, reject.reason);
}

/// Reply code and payload length for a zerocopy-encoded result.
pub fn encode_fixed_reply<T: Fixed, E: IdlError>(
    result: &Result<T, E>,
    out: &mut [u8],
) -> (u32, usize) {
    match result {
        Ok(v) => {
            let wire = v.to_wire();
            let bytes = wire.as_bytes();
            match out.get_mut(..bytes.len()) {
                Some(dest) => {
                    dest.copy_from_slice(bytes);
                    (0, bytes.len())
                }
                None => (E::PROTOCOL.code(), 0),
            }
        }
        Err(e) => (e.code(), 0),
    }
}

/// Reply code and payload length for a postcard-encoded result.
pub fn encode_postcard_reply<T: Serialize, E: IdlError>(
    result: &Result<T, E>,
    out: &mut [u8],
) -> (u32, usize) {
    match result {
        Ok(v) => match postcard::to_slice(v, out) {
            Ok(bytes) => (0, bytes.len()),
            Err(_) => (E::PROTOCOL.code(), 0),
        },
        Err(e) => (e.code(), 0),
    }
}

/// Answers with a zerocopy-encoded result.
pub fn reply_fixed<T: Fixed, E: IdlError>(to: TaskId, result: Result<T, E>) {
    match result {
        Ok(v) => sys_reply(to, 0, v.to_wire().as_bytes()),
        Err(e) => sys_reply(to, e.code(), &[]),
    }
}

/// Answers with a postcard-encoded result, using `buf` (sized for the
/// operation's largest reply) as scratch.
pub fn reply_postcard<T: Serialize, E: IdlError>(to: TaskId, result: Result<T, E>, buf: &mut [u8]) {
    let (code, len) = encode_postcard_reply(&result, buf);
    sys_reply(to, code, &buf[..len]);
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// Decodes a zerocopy reply: code 0 and exactly the wire size, or an error.
pub fn decode_fixed_reply<T: Fixed, E: IdlError>(code: u32, bytes: &[u8]) -> Result<T, E> {
    if code != 0 {
        return Err(error_from_code(code));
    }
    let wire = T::Wire::read_from_bytes(bytes).map_err(|_| E::PROTOCOL)?;
    T::from_wire(&wire).ok_or(E::PROTOCOL)
}

/// Decodes a postcard reply: code 0 and exactly one encoding, or an error.
pub fn decode_postcard_reply<T: DeserializeOwned, E: IdlError>(
    code: u32,
    bytes: &[u8],
) -> Result<T, E> {
    if code != 0 {
        return Err(error_from_code(code));
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        _ => Err(E::PROTOCOL),
    }
}

/// Sends one request. On a dead code the server's `TaskId` is refreshed and,
/// for an idempotent operation, the request is sent once more to the new
/// instance. Returns `(code, reply_len)` of the last attempt.
pub fn send(
    task: &Cell<TaskId>,
    operation: u16,
    message: &[u8],
    reply: &mut [u8],
    leases: &[Lease<'_>],
    idempotent: bool,
) -> (u32, usize) {
    let mut attempts = if idempotent { 2 } else { 1 };
    loop {
        let (code, len) = sys_send(task.get(), operation, message, reply, leases);
        if is_dead_code(code).is_none() {
            return (code, len);
        }
        task.set(userlib::sys_refresh_task_id(task.get()));
        attempts -= 1;
        if attempts == 0 {
            return (code, len);
        }
    }
}

/// The kernel reported a reply longer than the buffer: an error code still
/// counts, a success cannot be decoded.
fn oversized_reply<T, E: IdlError>(code: u32) -> Result<T, E> {
    if code != 0 {
        Err(error_from_code(code))
    } else {
        Err(E::PROTOCOL)
    }
}

/// A whole call with zerocopy encoding.
pub fn call_fixed<A: Fixed, R: Fixed, E: IdlError>(
    task: &Cell<TaskId>,
    operation: u16,
    args: &A,
    leases: &[Lease<'_>],
    idempotent: bool,
) -> Result<R, E> {
    let message = args.to_wire();
    let mut reply = R::Wire::new_zeroed();
    let (code, len) = send(
        task,
        operation,
        message.as_bytes(),
        reply.as_mut_bytes(),
        leases,
        idempotent,
    );
    match reply.as_bytes().get(..len) {
        Some(bytes) => decode_fixed_reply(code, bytes),
        None => oversized_reply(code),
    }
}

/// A whole call with postcard encoding; `message` and `reply` are stack
/// buffers of the operation's largest encodings.
#[allow(clippy::too_many_arguments)]
pub fn call_postcard<A: Serialize, R: DeserializeOwned, E: IdlError>(
    task: &Cell<TaskId>,
    operation: u16,
    args: &A,
    message: &mut [u8],
    reply: &mut [u8],
    leases: &[Lease<'_>],
    idempotent: bool,
) -> Result<R, E> {
    let len = match postcard::to_slice(args, message) {
        Ok(bytes) => bytes.len(),
        Err(_) => return Err(E::PROTOCOL),
    };
    let (code, reply_len) = send(task, operation, &message[..len], reply, leases, idempotent);
    match reply.get(..reply_len) {
        Some(bytes) => decode_postcard_reply(code, bytes),
        None => oversized_reply(code),
    }
}

/// Client-side lease constructors over wire entries.
pub fn lease_read<W: IntoBytes + Immutable>(entries: &[W]) -> Lease<'_> {
    Lease::read_only(entries.as_bytes())
}

pub fn lease_write<W: IntoBytes + FromBytes>(entries: &mut [W]) -> Lease<'_> {
    Lease::write_only(entries.as_mut_bytes())
}

pub fn lease_read_write<W: IntoBytes + FromBytes>(entries: &mut [W]) -> Lease<'_> {
    Lease::read_write(entries.as_mut_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use userlib::{dead_code, Generation};

    #[derive(Copy, Clone, Debug, PartialEq)]
    #[repr(u32)]
    enum E {
        Invalid = 22,
        ServerDied = 0x1_0000,
        Protocol = 0x1_0001,
    }

    impl IdlError for E {
        const SERVER_DIED: E = E::ServerDied;
        const PROTOCOL: E = E::Protocol;
        fn code(self) -> u32 {
            self as u32
        }
        fn from_code(code: u32) -> E {
            match code {
                22 => E::Invalid,
                0x1_0000 => E::ServerDied,
                _ => E::Protocol,
            }
        }
    }

    fn info(attributes: u32, len: usize) -> LeaseInfo {
        LeaseInfo { attributes, len }
    }

    #[test]
    fn idl_runtime_fixed_decode_checks_size_and_contents() {
        assert_eq!(decode_fixed::<u32>(&[1, 0, 0, 0]), Ok(1));
        assert_eq!(decode_fixed::<u32>(&[1, 0, 0]), Err(Reject::WRONG_SIZE));
        assert_eq!(
            decode_fixed::<u32>(&[1, 0, 0, 0, 0]),
            Err(Reject::WRONG_SIZE)
        );
        assert_eq!(decode_fixed::<bool>(&[1]), Ok(true));
        assert_eq!(decode_fixed::<bool>(&[2]), Err(Reject::BAD_CONTENTS));
        assert_eq!(decode_fixed::<()>(&[]), Ok(()));
        assert_eq!(decode_fixed::<[u16; 2]>(&[1, 0, 2, 0]), Ok([1, 2]));
        assert_eq!(
            decode_fixed::<TaskId>(&[0x78, 0x56, 0x34, 0x12]),
            Ok(TaskId(0x1234_5678))
        );
    }

    #[test]
    fn idl_runtime_postcard_decode_checks_size_and_contents() {
        assert_eq!(decode_postcard::<Option<u8>>(&[1, 7]), Ok(Some(7)));
        assert_eq!(decode_postcard::<Option<u8>>(&[1]), Err(Reject::WRONG_SIZE));
        assert_eq!(
            decode_postcard::<Option<u8>>(&[1, 7, 0]),
            Err(Reject::TOO_LONG)
        );
        assert_eq!(
            decode_postcard::<Option<u16>>(&[0, 0]),
            Err(Reject::TRAILING)
        );
        assert_eq!(
            decode_postcard::<Option<u8>>(&[2, 7]),
            Err(Reject::BAD_CONTENTS)
        );
        assert_eq!(decode_postcard::<bool>(&[3]), Err(Reject::BAD_CONTENTS));
    }

    #[test]
    fn idl_runtime_lease_checks() {
        let rw = LEASE_READ | LEASE_WRITE;
        assert_eq!(expect_leases(&[info(rw, 4)], 1), Ok(()));
        assert_eq!(expect_leases(&[], 1), Err(Reject::LEASE_COUNT));
        let ok = check_lease::<u32>(&[info(LEASE_READ, 8)], 0, Access::Read, 1, 2);
        assert_eq!(ok, Ok(LeaseSlot { index: 0, len: 8 }));
        let bad = |i: LeaseInfo, access| check_lease::<u32>(&[i], 0, access, 1, 2);
        assert_eq!(
            bad(info(LEASE_WRITE, 8), Access::Read),
            Err(Reject::LEASE_ACCESS)
        );
        assert_eq!(
            bad(info(LEASE_READ, 8), Access::ReadWrite),
            Err(Reject::LEASE_ACCESS)
        );
        assert_eq!(
            bad(info(rw, 8), Access::Write),
            Ok(LeaseSlot { index: 0, len: 8 })
        );
        assert_eq!(
            bad(info(LEASE_READ, 6), Access::Read),
            Err(Reject::LEASE_STRIDE)
        );
        assert_eq!(
            bad(info(LEASE_READ, 12), Access::Read),
            Err(Reject::LEASE_LENGTH)
        );
        assert_eq!(
            bad(info(LEASE_READ, 0), Access::Read),
            Err(Reject::LEASE_LENGTH)
        );
        assert_eq!(
            check_lease::<u32>(&[], 0, Access::Read, 0, 1),
            Err(Reject::LEASE_COUNT)
        );
        assert_eq!(expect_reply_capacity(3, 4), Err(Reject::REPLY_TOO_SMALL));
    }

    #[test]
    fn idl_runtime_truncated_message_and_lease_count() {
        let msg = RecvMessage {
            sender: TaskId(3),
            operation: 1,
            message_len: 9,
            reply_capacity: 0,
            lease_count: MAX_LEASES + 1,
        };
        assert_eq!(message_bytes(&msg, &[0; 8]), Err(Reject::TRUNCATED));
        assert_eq!(message_bytes(&msg, &[0; 12]).map(|b| b.len()), Ok(9));
        let mut infos = [info(0, 0); MAX_LEASES];
        assert_eq!(collect_leases(&msg, &mut infos), Err(Reject::LEASE_COUNT));
    }

    #[test]
    fn idl_runtime_reply_codes() {
        let mut buf = [0u8; 8];
        assert_eq!(encode_fixed_reply::<u32, E>(&Ok(5), &mut buf), (0, 4));
        assert_eq!(decode_fixed_reply::<u32, E>(0, &buf[..4]), Ok(5));
        assert_eq!(decode_fixed_reply::<u32, E>(0, &buf[..3]), Err(E::Protocol));
        assert_eq!(
            encode_fixed_reply::<u32, E>(&Ok(5), &mut buf[..2]),
            (E::Protocol as u32, 0)
        );
        assert_eq!(
            encode_fixed_reply::<u32, E>(&Err(E::Invalid), &mut buf),
            (22, 0)
        );
        assert_eq!(decode_fixed_reply::<u32, E>(22, &[]), Err(E::Invalid));
        assert_eq!(decode_fixed_reply::<u32, E>(1234, &[]), Err(E::Protocol));
        assert_eq!(
            decode_fixed_reply::<u32, E>(dead_code(Generation(9)), &[]),
            Err(E::ServerDied)
        );
        assert_eq!(decode_fixed_reply::<bool, E>(0, &[2]), Err(E::Protocol));
        assert_eq!(
            encode_postcard_reply::<Option<u8>, E>(&Ok(Some(3)), &mut buf),
            (0, 2)
        );
        assert_eq!(
            decode_postcard_reply::<Option<u8>, E>(0, &buf[..2]),
            Ok(Some(3))
        );
        assert_eq!(
            decode_postcard_reply::<Option<u8>, E>(0, &[1, 3, 0]),
            Err(E::Protocol)
        );
        assert_eq!(
            encode_postcard_reply::<u64, E>(&Ok(u64::MAX), &mut buf[..3]),
            (E::Protocol as u32, 0)
        );
    }

    #[test]
    fn idl_runtime_postcard_max_bounds() {
        for v in [0u64, 1, 127, 128, u64::MAX] {
            let mut buf = [0u8; 16];
            let n = postcard::to_slice(&v, &mut buf)
                .map(|b| b.len())
                .unwrap_or(99);
            assert!(n <= <u64 as PostcardMax>::MAX_SIZE);
        }
        let mut buf = [0u8; 16];
        let n = postcard::to_slice(&u32::MAX, &mut buf)
            .map(|b| b.len())
            .unwrap_or(99);
        assert_eq!(n, <u32 as PostcardMax>::MAX_SIZE);
        assert_eq!(max_of(&[3, 9, 2]), 9);
        assert_eq!(max_of(&[]), 0);
    }
}
