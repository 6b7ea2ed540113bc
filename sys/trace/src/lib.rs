//! Per-task trace rings.
//!
//! Each task that links this crate records its recent protocol events with
//! [`trace!`] into one ring of small typed [`Entry`]s, built on the
//! `ringbuf` crate's single-threaded ring (`LocalRb`): static storage, no
//! heap.
//!
//! **Overflow rule: the oldest entry is overwritten** (the read index skips it), so
//! the ring always holds the last [`CAPACITY`] events, which is what one
//! wants after a fault. [`Entry::seq`] is a per-task counter (wrapping at
//! 2^16) so a reader that sees only the raw storage can still order the
//! entries and tell how many were overwritten between two it sees.
//!
//! In an image the entries live in the `#[no_mangle]` static `TRACE_RING`:
//! a plain `#[repr(C)]` array of [`CAPACITY`] entries, slot `i % CAPACITY`
//! holding the `i`-th event (ringbuf's indices, which sit in another
//! static, index it that way). So a reader that has only those bytes — the
//! kernel's hex dump when the task faults, or `cargo xtask dump` reading a
//! running image's memory — finds the ring by that symbol in the task's ELF
//! and orders it with [`decode`], without ringbuf's private layout.
//! On the host (the harness runs several task instances on threads of one
//! process) each thread has its own ring instead, so two task instances never
//! share one.
//!
//! Cost: recording is a store of 12 bytes plus ringbuf's index update; never
//! call it from the kernel's IPC path or a map/unmap inner loop.

#![cfg_attr(target_os = "none", no_std)]

use ringbuf::{
    storage::Storage,
    traits::{Consumer, Observer, Producer},
    LocalRb,
};

/// How many entries each task's ring keeps.
pub const CAPACITY: usize = 64;

/// Bytes of one [`Entry`] in memory.
pub const ENTRY_BYTES: usize = 12;

/// One recorded event: 12 bytes, fixed layout so a debugger can decode it.
/// A slot whose `code` is 0 holds no event (the ring's storage starts
/// zeroed, and no event has code 0).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Entry {
    /// The task's event code (each task defines its own `#[repr(u16)]` enum).
    pub code: u16,
    /// Sequence number of this event in the task (wrapping).
    pub seq: u16,
    /// First argument (meaning per event code).
    pub a: u32,
    /// Second argument (meaning per event code).
    pub b: u32,
}

impl Entry {
    /// An empty slot.
    pub const EMPTY: Entry = Entry {
        code: 0,
        seq: 0,
        a: 0,
        b: 0,
    };

    /// The entry stored little-endian at the start of `raw` (AArch64 is
    /// little-endian), or `None` when `raw` is shorter than an entry.
    pub fn from_le_bytes(raw: &[u8]) -> Option<Entry> {
        let r = raw.get(..ENTRY_BYTES)?;
        Some(Entry {
            code: u16::from_le_bytes([r[0], r[1]]),
            seq: u16::from_le_bytes([r[2], r[3]]),
            a: u32::from_le_bytes([r[4], r[5], r[6], r[7]]),
            b: u32::from_le_bytes([r[8], r[9], r[10], r[11]]),
        })
    }
}

/// The events of a ring's raw storage (`TRACE_RING`'s bytes, slot `i`
/// holding an event whose index is `i` modulo the slot count), oldest
/// first, copied into `out`; returns how many (at most `out.len()`). Empty
/// slots (code 0) are skipped. The newest event is the one the next slot
/// does not continue (that slot is empty or its `seq` is not one more);
/// the oldest is in the slot after it. Trailing bytes short of an entry are
/// ignored.
pub fn decode(raw: &[u8], out: &mut [Entry]) -> usize {
    let slots = raw.len() / ENTRY_BYTES;
    if slots == 0 {
        return 0;
    }
    let at = |i: usize| {
        let off = (i % slots) * ENTRY_BYTES;
        Entry::from_le_bytes(&raw[off..]).unwrap_or_default()
    };
    // The newest: a used slot the next one does not continue. If every
    // slot is used and each continues the one before (impossible for a
    // real ring: seq wraps at 2^16, far beyond CAPACITY), slot 0 is taken
    // as the oldest rather than guessed.
    let newest = (0..slots)
        .find(|&i| {
            let (e, n) = (at(i), at(i + 1));
            e.code != 0 && (n.code == 0 || n.seq != e.seq.wrapping_add(1))
        })
        .unwrap_or(slots - 1);
    let mut n = 0;
    for e in (1..=slots).map(|k| at(newest + k)).filter(|e| e.code != 0) {
        let Some(slot) = out.get_mut(n) else { break };
        *slot = e;
        n += 1;
    }
    n
}

/// The ring plus the sequence counter, over storage `S`.
struct Ring<S: Storage<Item = Entry>> {
    rb: LocalRb<S>,
    seq: u16,
}

impl<S: Storage<Item = Entry>> Ring<S> {
    #[inline(always)]
    fn record(&mut self, code: u16, a: u32, b: u32) {
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        // Overflow rule: the oldest entry is overwritten. (Not ringbuf's
        // `push_overwrite`: it pops the oldest through `occupied_slices`,
        // which doubled the cost of an event once the ring is full.)
        if self.rb.is_full() {
            // SAFETY: skipping the oldest item without moving it out is
            // sound because `Entry` is `Copy` (it has no drop to miss), and
            // the ring is full, so there is an item to skip.
            unsafe { self.rb.advance_read_index(1) };
        }
        // Cannot fail: there is room now.
        let _ = self.rb.try_push(Entry { code, seq, a, b });
    }

    fn copy_out(&self, out: &mut [Entry]) -> usize {
        let mut n = 0;
        for (slot, e) in out.iter_mut().zip(self.rb.iter()) {
            *slot = *e;
            n += 1;
        }
        n
    }
}

#[cfg(target_os = "none")]
mod store {
    use super::{Entry, Ring, CAPACITY};
    use core::{cell::UnsafeCell, mem::MaybeUninit};
    use ringbuf::{storage::Storage, LocalRb};

    /// The ring's entries, zeroed (`.bss`) until recorded: slot `i %
    /// CAPACITY` holds the `i`-th event of this incarnation.
    #[repr(C)]
    pub struct Entries(UnsafeCell<[Entry; CAPACITY]>);

    // SAFETY: a task is one thread of execution with no interrupts delivered
    // into it (notifications arrive through `recv`), so the ring is never
    // accessed concurrently; the kernel only reads it while the task is
    // stopped (faulted), and a debugger reads it with the machine stopped.
    unsafe impl Sync for Entries {}

    /// The stable symbol `cargo xtask` looks up in the task's ELF: its
    /// address and size go into the kernel's task table.
    #[no_mangle]
    #[used]
    pub static TRACE_RING: Entries = Entries(UnsafeCell::new([Entry::EMPTY; CAPACITY]));

    /// ringbuf storage that is `TRACE_RING` (a zero-sized handle: the ring
    /// keeps only its two indices, in `STATE`).
    pub struct Static;

    // SAFETY: `as_mut_ptr` always names `TRACE_RING`, a static of
    // `CAPACITY` entries that no other code writes; `len` never changes;
    // the handle owns no item, so it does not alias its contents.
    unsafe impl Storage for Static {
        type Item = Entry;
        #[inline(always)]
        fn len(&self) -> usize {
            CAPACITY
        }
        #[inline(always)]
        fn as_mut_ptr(&self) -> *mut MaybeUninit<Entry> {
            TRACE_RING.0.get().cast()
        }
    }

    /// `None` until the first event: `LocalRb` has no `const` constructor,
    /// and `None` lets the state live in `.bss` with no start-up code.
    struct Cell(UnsafeCell<Option<Ring<Static>>>);

    // SAFETY: as for `Entries`.
    unsafe impl Sync for Cell {}

    static STATE: Cell = Cell(UnsafeCell::new(None));

    #[inline(always)]
    pub fn with<R>(f: impl FnOnce(&mut Ring<Static>) -> R) -> R {
        // SAFETY: see the `Sync` impl: single-threaded, and `with` is never
        // re-entered (the closures passed below do not call `trace!`).
        let slot = unsafe { &mut *STATE.0.get() };
        f(slot.get_or_insert_with(|| Ring {
            // SAFETY: indices 0, 0: an empty ring, so no item must be
            // initialised (the zeroed slots are valid `Entry`s anyway).
            rb: unsafe { LocalRb::from_raw_parts(Static, 0, 0) },
            seq: 0,
        }))
    }
}

#[cfg(not(target_os = "none"))]
mod store {
    use super::{Entry, Ring, CAPACITY};
    use ringbuf::{storage::Array, LocalRb};
    use std::cell::RefCell;

    std::thread_local! {
        static TRACE_RING: RefCell<Ring<Array<Entry, CAPACITY>>> = RefCell::new(Ring {
            rb: LocalRb::default(),
            seq: 0,
        });
    }

    pub fn with<R>(f: impl FnOnce(&mut Ring<Array<Entry, CAPACITY>>) -> R) -> R {
        TRACE_RING.with(|r| f(&mut r.borrow_mut()))
    }
}

/// Records one event in this task's ring. Use [`trace!`].
#[inline(always)]
pub fn record(code: u16, a: u32, b: u32) {
    store::with(|r| r.record(code, a, b))
}

/// Copies this task's ring, oldest first, into `out`; returns how many
/// entries were copied (at most `CAPACITY` and `out.len()`).
pub fn snapshot(out: &mut [Entry]) -> usize {
    store::with(|r| r.copy_out(out))
}

/// Records `event` (a `#[repr(u16)]` enum value or a `u16`) with up to two
/// arguments, each converted with `as u32` (so pass integers or enums).
#[macro_export]
macro_rules! trace {
    ($ev:expr) => {
        $crate::record($ev as u16, 0, 0)
    };
    ($ev:expr, $a:expr) => {
        $crate::record($ev as u16, $a as u32, 0)
    };
    ($ev:expr, $a:expr, $b:expr) => {
        $crate::record($ev as u16, $a as u32, $b as u32)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Copy, Clone)]
    #[repr(u16)]
    enum Ev {
        One = 1,
        Two = 2,
    }

    #[test]
    fn entry_is_12_bytes_c_layout() {
        assert_eq!(core::mem::size_of::<Entry>(), 12);
        assert_eq!(core::mem::offset_of!(Entry, code), 0);
        assert_eq!(core::mem::offset_of!(Entry, seq), 2);
        assert_eq!(core::mem::offset_of!(Entry, a), 4);
        assert_eq!(core::mem::offset_of!(Entry, b), 8);
    }

    #[test]
    fn records_in_order_with_args() {
        trace!(Ev::One, 7u8, 9u64);
        trace!(Ev::Two);
        trace!(3u16, 1);
        let mut out = [Entry::default(); CAPACITY];
        let n = snapshot(&mut out);
        assert_eq!(
            &out[..n],
            &[
                Entry {
                    code: 1,
                    seq: 0,
                    a: 7,
                    b: 9
                },
                Entry {
                    code: 2,
                    seq: 1,
                    a: 0,
                    b: 0
                },
                Entry {
                    code: 3,
                    seq: 2,
                    a: 1,
                    b: 0
                },
            ]
        );
    }

    #[test]
    fn overflow_overwrites_oldest() {
        let total = CAPACITY as u32 + 10;
        for i in 0..total {
            trace!(Ev::One, i);
        }
        let mut out = [Entry::default(); CAPACITY + 5];
        let n = snapshot(&mut out);
        assert_eq!(n, CAPACITY);
        // The first 10 were overwritten; the rest are there, oldest first.
        for (k, e) in out[..n].iter().enumerate() {
            assert_eq!(e.a, 10 + k as u32);
            assert_eq!(e.seq, 10 + k as u16);
        }
    }

    /// Raw storage as a task's `TRACE_RING` holds it after `total`
    /// events with code 1, a = event index.
    fn raw_after(total: u32) -> Vec<u8> {
        let mut raw = vec![0u8; CAPACITY * ENTRY_BYTES];
        for i in 0..total {
            let off = (i as usize % CAPACITY) * ENTRY_BYTES;
            raw[off..off + 2].copy_from_slice(&1u16.to_le_bytes());
            raw[off + 2..off + 4].copy_from_slice(&(i as u16).to_le_bytes());
            raw[off + 4..off + 8].copy_from_slice(&i.to_le_bytes());
        }
        raw
    }

    #[test]
    fn decode_orders_raw_storage_oldest_first() {
        let mut out = [Entry::default(); CAPACITY];
        // Empty, partly filled, exactly full, wrapped, and wrapped past the
        // 16-bit sequence counter.
        for total in [0u32, 5, CAPACITY as u32, CAPACITY as u32 + 7, 70_000] {
            let n = decode(&raw_after(total), &mut out);
            let first = total.saturating_sub(CAPACITY as u32);
            assert_eq!(n as u32, total - first, "total {total}");
            for (k, e) in out[..n].iter().enumerate() {
                assert_eq!(e.a, first + k as u32, "total {total}");
                assert_eq!(e.seq, (first + k as u32) as u16);
            }
        }
        // A short `out` takes the oldest; no storage, no entry.
        assert_eq!(decode(&raw_after(10), &mut out[..3]), 3);
        assert_eq!(out[2].a, 2);
        assert_eq!(decode(&[0u8; 11], &mut out), 0);
    }

    #[test]
    fn threads_have_separate_rings() {
        trace!(Ev::Two, 1);
        let other = std::thread::spawn(|| {
            let mut out = [Entry::default(); 4];
            snapshot(&mut out)
        })
        .join()
        .unwrap();
        assert_eq!(other, 0);
    }
}

/// Declares a task's event codes: a `#[repr(u16)]` enum (code 0 is kept
/// for "no entry") and `name(code)` for decoders.
#[macro_export]
macro_rules! events {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $v:ident = $c:literal,)* }) => {
        $(#[$m])*
        #[repr(u16)]
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        $vis enum $name { $($(#[$vm])* $v = $c,)* }
        impl $name {
            /// The event's name, for decoders; `None` for an unknown code.
            pub fn name(code: u16) -> Option<&'static str> {
                match code { $($c => Some(stringify!($v)),)* _ => None }
            }
        }
    };
}

/// Every task's event codes in one place, so a decoder (`cargo xtask
/// dump`, a test) names them without the task's code. Arguments `a, b`
/// are given per event.
pub mod events {
    events! {
        /// prq-server.
        pub enum Prq {
            /// A PRI group completed (Last seen): a = StreamID, b = SubstreamID
            /// (or u32::MAX without one).
            GroupComplete = 1,
            /// The group was queued for its owner: a = slot, b = owner task index.
            GroupQueued = 2,
            /// A slot was answered (by its owner, a refusal or a drain): a =
            /// slot, b = response code (PRI_RESP: 0 success, 1 invalid, 0xf failure).
            Answered = 3,
            /// A cookie went to an owner in fetch_faults: a = low 32 bits,
            /// b = high 32 bits.
            CookieIssued = 4,
            /// A respond entry refused: a = cookie low 32 bits, b = 1 unknown
            /// cookie, 2 response not allowed.
            RespondRefused = 5,
            /// Drain started: a = StreamID, b = PASID.
            DrainStart = 6,
            /// Drain step done: a = responses handed over, b = cookies revoked
            /// | complete << 31.
            DrainDone = 7,
            /// Responses handed to iommu-server: a = count, b = hand-over seq.
            ResponsesTaken = 8,
            /// An owner died: a = task index, b = groups answered.
            OwnerDied = 9,
        }
    }

    events! {
        /// iommu-server.
        pub enum Iommu {
            /// Attach or replace done: a = StreamID, b = update kind
            /// (0 no change, 1 hitless, 2 break-before-make) | replaced << 8.
            Attach = 1,
            /// Attach refused: a = StreamID, b = error (Error as u32).
            AttachRefused = 2,
            /// Detach done: a = StreamID.
            Detach = 3,
            /// Bind done: a = StreamID, b = PASID.
            Bind = 4,
            /// Bind refused: a = StreamID, b = error.
            BindRefused = 5,
            /// A context left the hardware (last unbind): a = StreamID, b = PASID.
            Unbind = 6,
            /// prq-server drain asked: a = StreamID, b = PASID.
            Drain = 7,
            /// Drain failed: a = StreamID, b = error.
            DrainFailed = 8,
            /// A new pasid-alloc incarnation seen: a = its task id (raw),
            /// b = binds removed.
            PasidAllocRestart = 9,
            /// A death from the supervisor's log reclaimed: a = task id (raw).
            DeathSeen = 10,
            /// A new prq-server incarnation seen by a drain: a = its task id (raw).
            PrqRestart = 11,
        }
    }

    events! {
        /// vmm-frontend.
        pub enum Vmm {
            /// Guest set an STE: a = virtual StreamID, b = mode (0 abort, 1 S2 only, 2 nested).
            SetSte = 1,
            /// Guest bind: a = virtual StreamID, b = guest PASID.
            Bind = 2,
            /// Guest unbind: a = virtual StreamID, b = guest PASID.
            Unbind = 3,
            /// Guest invalidation batch: a = commands in the lease.
            Invalidate = 4,
            /// Guest page responses: a = entries in the lease.
            Respond = 5,
            /// Guest fault fetch: a = room in the lease.
            FetchFaults = 6,
            /// Guest PASID allocation: a = guest PASID.
            AllocPasid = 7,
            /// Guest PASID free: a = guest PASID.
            FreePasid = 8,
            /// The guest operation just recorded was refused: a = its code
            /// (this enum), b = error (VmmFrontendError as u32).
            Refused = 9,
            /// iommu-server restart seen: a = its new task id (raw).
            IommuRestart = 10,
            /// Guest capability query (recorded only when refused).
            Caps = 11,
            /// Guest event fetch (recorded only when refused).
            FetchEvents = 12,
        }
    }

    events! {
        /// test-dump (the `dump_*` QEMU case).
        pub enum TestDump {
            /// One step: a = step number, b = a ^ 0x5a5a.
            Step = 1,
            /// About to panic on purpose: a = steps recorded.
            Panicking = 2,
            /// About to read an unmapped address on purpose: a = the address.
            Faulting = 3,
            /// Recorded before the running image is read: a = i, b = !i.
            Live = 4,
        }
    }

    /// The event name of `code` in task `task`'s ring, for the tasks that
    /// record events; `None` for another task or an unknown code.
    pub fn name(task: &str, code: u16) -> Option<&'static str> {
        match task {
            "prq-server" => Prq::name(code),
            "iommu-server" => Iommu::name(code),
            "vmm-frontend" => Vmm::name(code),
            "test-dump" => TestDump::name(code),
            _ => None,
        }
    }
}
