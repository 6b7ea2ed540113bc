//! Per-task trace rings.
//!
//! Each task that links this crate records its recent protocol events with
//! [`trace!`] into one ring of small typed [`Entry`]s, built on the
//! `ringbuf` crate's single-threaded ring (`LocalRb`) over a fixed array:
//! static storage, no heap.
//!
//! **Overflow rule: the oldest entry is overwritten** (`push_overwrite`), so
//! the ring always holds the last [`CAPACITY`] events, which is what one
//! wants after a fault. [`Entry::seq`] is a per-task counter (wrapping at
//! 2^16) so a reader that sees only the raw storage can still order the
//! entries and tell how many were overwritten between two it sees.
//!
//! In an image the ring is the `#[no_mangle]` static `TRACE_RING`, one per
//! task binary, so a debugger finds it by that symbol in the task's ELF.
//! On the host (the harness runs several task instances on threads of one
//! process) each thread has its own ring instead, so two task instances never
//! share one.
//!
//! Cost: recording is a store of 12 bytes plus ringbuf's index update; never
//! call it from the kernel's IPC path or a map/unmap inner loop.

#![cfg_attr(target_os = "none", no_std)]

use ringbuf::{storage::Array, traits::Consumer, traits::RingBuffer, LocalRb};

/// How many entries each task's ring keeps.
pub const CAPACITY: usize = 64;

/// One recorded event: 12 bytes, fixed layout so a debugger can decode it.
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

type Rb = LocalRb<Array<Entry, CAPACITY>>;

/// The ring plus the sequence counter.
struct Ring {
    rb: Rb,
    seq: u16,
}

impl Ring {
    fn new() -> Self {
        Ring {
            rb: Rb::default(),
            seq: 0,
        }
    }

    #[inline(always)]
    fn record(&mut self, code: u16, a: u32, b: u32) {
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        // Overflow rule: the oldest entry is overwritten (it is returned and
        // dropped here).
        let _ = self.rb.push_overwrite(Entry { code, seq, a, b });
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
    use super::Ring;
    use core::cell::UnsafeCell;

    /// `None` until the first event: `LocalRb` has no `const` constructor,
    /// and `None` lets the ring live in `.bss` with no start-up code.
    pub struct Cell(UnsafeCell<Option<Ring>>);

    // SAFETY: a task is one thread of execution with no interrupts delivered
    // into it (notifications arrive through `recv`), so the ring is never
    // accessed concurrently; the kernel never touches it.
    unsafe impl Sync for Cell {}

    /// The task's ring; the stable symbol a debugger looks up.
    #[no_mangle]
    #[used]
    pub static TRACE_RING: Cell = Cell(UnsafeCell::new(None));

    #[inline(always)]
    pub fn with<R>(f: impl FnOnce(&mut Ring) -> R) -> R {
        // SAFETY: see the `Sync` impl: single-threaded, and `with` is never
        // re-entered (the closures passed below do not call `trace!`).
        let slot = unsafe { &mut *TRACE_RING.0.get() };
        f(slot.get_or_insert_with(Ring::new))
    }
}

#[cfg(not(target_os = "none"))]
mod store {
    use super::Ring;
    use std::cell::RefCell;

    std::thread_local! {
        static TRACE_RING: RefCell<Ring> = RefCell::new(Ring::new());
    }

    pub fn with<R>(f: impl FnOnce(&mut Ring) -> R) -> R {
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
