//! Building the state: the tables written in place (`init_at`), then
//! the journal started or recovered.

use super::*;

impl<M: Mmio, Q: QueueMemory, const G: usize, const R: usize, const O: usize> Prq<M, Q, G, R, O> {
    /// Builds the state. With a journal a previous incarnation left, it
    /// recovers (see [`Prq::recover`]); otherwise it initialises the
    /// journal and the queues' PROD/CONS (the queues are off until
    /// iommu-server enables them after `queue_layout`). The sizes are the
    /// type's (`Prq::<M, Q, G, R, O>::sized`); [`Prq::new`] is the
    /// production one.
    pub fn sized(mmio: M, mem: Q, cfg: &Config<'_>) -> Self {
        let mut s = core::mem::MaybeUninit::<Self>::uninit();
        // SAFETY: `s` is valid for writes and aligned; `init_at` writes
        // every field (its exhaustiveness check says so).
        unsafe {
            Self::init_at(s.as_mut_ptr(), mmio, mem, cfg);
            s.assume_init()
        }
    }

    /// [`Prq::sized`] in place at `p`, for instances too large to pass
    /// through a stack frame by value (the benchmark's 6 144 slots): the
    /// tables are written element by element, so no temporary of their
    /// size is made.
    ///
    /// # Safety
    /// `p` is valid for writes of `Self` and aligned. Afterwards `*p` is
    /// initialised (whatever it held before is overwritten, not dropped).
    pub unsafe fn init_at(p: *mut Self, mmio: M, mem: Q, cfg: &Config<'_>) {
        use core::ptr::addr_of_mut;
        #[allow(clippy::let_unit_value)]
        let () = Self::SIZES_OK;
        /// Writes `n` copies of `v` from `at`.
        ///
        /// # Safety
        /// `at..at + n` is valid for writes.
        unsafe fn fill<T: Copy>(at: *mut T, n: usize, v: impl Fn(usize) -> T) {
            for k in 0..n {
                // SAFETY: the caller's range.
                unsafe { at.add(k).write(v(k)) };
            }
        }
        let nstreams = cfg.streams.len().min(MAX_ROUTES);
        let evtq_log2 = cfg.evtq_log2.clamp(1, MAX_EVTQ_LOG2);
        let priq_log2 = cfg.priq_log2.clamp(1, MAX_PRIQ_LOG2);
        // SAFETY: every pointer below is a field of `*p` (valid for writes
        // by the caller's contract) and each array is written over its
        // whole length.
        unsafe {
            addr_of_mut!((*p).mmio).write(mmio);
            addr_of_mut!((*p).mem).write(mem);
            let streams = addr_of_mut!((*p).streams_buf) as *mut (u32, u16);
            fill(streams, MAX_ROUTES, |k| {
                if k < nstreams {
                    cfg.streams[k]
                } else {
                    (0, 0)
                }
            });
            addr_of_mut!((*p).nstreams).write(nstreams);
            addr_of_mut!((*p).evtq_log2).write(evtq_log2);
            addr_of_mut!((*p).priq_log2).write(priq_log2);
            addr_of_mut!((*p).priq).write(HwQueue {
                cons: QueuePtr::new(priq_log2),
            });
            addr_of_mut!((*p).evtq).write(HwQueue {
                cons: QueuePtr::new(evtq_log2),
            });
            fill(addr_of_mut!((*p).slots) as *mut Slot, G, |_| Slot::EMPTY);
            addr_of_mut!((*p).free).write(G);
            // Popped from the end: the lowest slot first.
            fill(addr_of_mut!((*p).free_list) as *mut u16, G, |k| {
                (G - 1 - k) as u16
            });
            fill(addr_of_mut!((*p).pbucket) as *mut u16, G, |_| NONE);
            fill(addr_of_mut!((*p).pnext) as *mut u16, G, |_| NONE);
            fill(addr_of_mut!((*p).routes) as *mut Option<Route>, R, |_| None);
            fill(addr_of_mut!((*p).rbucket) as *mut u16, R, |_| NONE);
            fill(addr_of_mut!((*p).rnext) as *mut u16, R, |_| NONE);
            fill(addr_of_mut!((*p).owners) as *mut Owner, O, |_| Owner::EMPTY);
            addr_of_mut!((*p).owner_at).write([0; TASKS]);
            addr_of_mut!((*p).nowners).write(0);
            addr_of_mut!((*p).held).write([0; TASKS]);
            addr_of_mut!((*p).newest).write([0; TASKS]);
            fill(addr_of_mut!((*p).handed) as *mut u16, G, |_| 0);
            addr_of_mut!((*p).nhanded).write(0);
            fill(addr_of_mut!((*p).resp_ring) as *mut u16, G, |_| 0);
            addr_of_mut!((*p).rhead).write(0);
            addr_of_mut!((*p).rlen).write(0);
            addr_of_mut!((*p).take_seq).write(0);
            addr_of_mut!((*p).incarnation).write(1);
            addr_of_mut!((*p).stats).write(Stats::default());
            addr_of_mut!((*p).notify_owners).write(0);
            addr_of_mut!((*p).notify_iommu).write(false);
            addr_of_mut!((*p).drain_marker).write(None);
            addr_of_mut!((*p).marker_seen).write(false);
            addr_of_mut!((*p).markers).write([None; MARKERS]);
            addr_of_mut!((*p).next_marker).write(0);
            addr_of_mut!((*p).pri_reached).write(true);
        }
        // Exhaustiveness: this pattern names every field, so a field added
        // to `Prq` fails to compile here until it is written above.
        #[allow(dead_code)]
        fn every_field_written<
            M: Mmio,
            Q: QueueMemory,
            const G: usize,
            const R: usize,
            const O: usize,
        >(
            s: &Prq<M, Q, G, R, O>,
        ) {
            let Prq {
                mmio: _,
                mem: _,
                streams_buf: _,
                nstreams: _,
                evtq_log2: _,
                priq_log2: _,
                priq: _,
                evtq: _,
                slots: _,
                free: _,
                free_list: _,
                pbucket: _,
                pnext: _,
                routes: _,
                rbucket: _,
                rnext: _,
                owners: _,
                owner_at: _,
                nowners: _,
                held: _,
                newest: _,
                handed: _,
                nhanded: _,
                resp_ring: _,
                rhead: _,
                rlen: _,
                take_seq: _,
                incarnation: _,
                stats: _,
                notify_owners: _,
                notify_iommu: _,
                drain_marker: _,
                marker_seen: _,
                markers: _,
                next_marker: _,
                pri_reached: _,
            } = s;
        }
        // SAFETY: every field is initialised above.
        let s = unsafe { &mut *p };
        s.start();
    }

    /// The journal: recovered when a previous incarnation left one, else
    /// initialised with the queues' PROD/CONS.
    pub(super) fn start(&mut self) {
        let s = self;
        if s.mem.read64(JOURNAL_OFF) == JOURNAL_MAGIC {
            s.recover();
        } else {
            for i in 0..G {
                s.persist(i);
            }
            for k in 0..R {
                s.persist_route(k);
            }
            s.persist_header();
            s.mem.write64(JOURNAL_OFF, JOURNAL_MAGIC);
            for r in [
                offset::PRIQ_PROD,
                offset::PRIQ_CONS,
                offset::EVENTQ_PROD,
                offset::EVENTQ_CONS,
            ] {
                s.mmio.write32(r, 0);
            }
        }
    }
}
