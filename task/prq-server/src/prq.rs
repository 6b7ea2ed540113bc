//! The fault path: intake from the PRI and event queues, groups, routes,
//! per-owner bounded queues, cookies, responses, drain, owner death and
//! restart recovery. No heap: every table has a fixed size and every
//! queue an overflow rule (listed on [`Prq`]).
//!
//! The table sizes are [`Prq`]'s const parameters (group slots, routes,
//! owners), defaulting to the production values below; the benchmark
//! image (`qemu/bench-prq-server`) builds larger ones. Every step a fault
//! takes from intake to its response is O(1) in those sizes and in what
//! the tables hold (docs/faults.md, "Figures"): a free-slot stack, a
//! hash of partial groups by key, a hash of routes by (stream, PASID),
//! owner entries by task index, per-task held counts (the owners'
//! shares) and a list of the slots handed to iommu-server. Scans over
//! the whole table remain only on control paths (route changes, drain,
//! owner death, overflow recovery, a full table, restart, `stats`).

use crate::mem::{
    QueueMemory, EVTQ_OFF, JOURNAL_MAGIC, JOURNAL_OFF, JOURNAL_SLOTS_OFF, JOURNAL_WORDS,
    MAX_EVTQ_LOG2, MAX_PRIQ_LOG2, PRIQ_OFF,
};
use smmuv3::regs::{self, offset};
use smmuv3::{Event, Mmio, PriEntry, QueuePtr, EVENTQ_ENTRY_BYTES, PRIQ_ENTRY_BYTES};
use trace::{events::Prq as Ev, trace};
use userlib::TaskId;

/// Task indices an owner can have (the kernel's task table).
const TASKS: usize = userlib::abi::MAX_TASKS;
/// "No slot / no route" in the index links below.
const NONE: u16 = u16::MAX;

/// Outstanding fault groups (partial, queued, delivered, answered, handed
/// to iommu-server and not yet acknowledged). When every slot is taken, a
/// partial group is forgotten (see `evict_partial`); with none, intake
/// stops reading the hardware queues (their CONS stays put) until iommu-server takes
/// responses: the PRI queue then fills and overflows as IHI 0070 §8.1
/// defines (the SMMU answers discarded Lasts itself), a stalled
/// transaction's record waits in the event queue.
pub const MAX_GROUPS: usize = 128;
/// Requests kept per group. A group with more is delivered to nobody: its
/// Last is answered INVALID at once (the device may split the work into
/// smaller groups and ask again).
pub const GROUP_PAGES: usize = 8;
/// Routes (attachments with an owner).
pub const MAX_ROUTES: usize = 64;
/// Owners (VM tasks) with a fault or event queue.
pub const MAX_OWNERS: usize = 8;
/// Groups waiting in one owner's queue for `fetch_faults`. A group that
/// finds it full is answered INVALID at once and counted in the owner's
/// `lost` (never silently dropped).
pub const OWNER_QUEUE: usize = 64;
/// Event records waiting for one owner's `fetch_events`. A record that
/// finds it full is dropped and counted in the owner's `lost`.
pub const OWNER_EVENTS: usize = 16;
/// Hardware PROD re-reads a drain makes while waiting for the
/// attachment's stop marker.
pub const DRAIN_POLLS: u32 = 16;

/// How an owner (or an edge) answered a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resp {
    Success,
    Invalid,
    Failure,
}

impl Resp {
    fn raw(self) -> u64 {
        match self {
            Resp::Success => 0,
            Resp::Invalid => 1,
            Resp::Failure => 2,
        }
    }
    fn from_raw(v: u64) -> Self {
        match v {
            0 => Resp::Success,
            2 => Resp::Failure,
            _ => Resp::Invalid,
        }
    }
}

/// What names a group at the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Key {
    pub sid: u32,
    /// The PASID when the request carried one (SSV).
    pub ssid: Option<u32>,
    /// A stalled transaction (tag = STAG) rather than a page request
    /// group (tag = PRG index).
    pub stall: bool,
    pub tag: u16,
}

/// One requested page of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Page {
    pub addr: u64,
    /// FaultPerm bits: READ 1, WRITE 2, EXEC 4, PRIV 8.
    pub perm: u8,
}

/// Life of a group slot. Each transition is one journal store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Free,
    /// Requests without Last so far.
    Partial,
    /// Complete, in its owner's queue.
    Queued,
    /// Fetched by its owner (who holds its cookie).
    Delivered,
    /// Answer decided, waiting for iommu-server's `take_responses`.
    Answered,
    /// Handed to iommu-server in hand-over `seq`, not yet acknowledged.
    Handed,
}

impl State {
    fn raw(self) -> u64 {
        self as u64
    }
    fn from_raw(v: u64) -> Self {
        match v {
            1 => State::Partial,
            2 => State::Queued,
            3 => State::Delivered,
            4 => State::Answered,
            5 => State::Handed,
            _ => State::Free,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub state: State,
    pub key: Key,
    pub owner: TaskId,
    /// Bumped every time the slot is freed: a cookie names (slot, gen).
    pub gen: u32,
    pub resp: Resp,
    pub seq: u32,
    /// Partial group whose route went away (detach, replace, unbind, owner
    /// death): its Last is answered INVALID on arrival, charged to nobody.
    pub orphan: bool,
    /// More than [`GROUP_PAGES`] requests.
    pub truncated: bool,
    pub n: u8,
    pub pages: [Page; GROUP_PAGES],
}

impl Slot {
    const EMPTY: Slot = Slot {
        state: State::Free,
        key: Key {
            sid: 0,
            ssid: None,
            stall: false,
            tag: 0,
        },
        owner: TaskId(0),
        gen: 1,
        resp: Resp::Invalid,
        seq: 0,
        orphan: false,
        truncated: false,
        n: 0,
        pages: [Page { addr: 0, perm: 0 }; GROUP_PAGES],
    };
}

#[derive(Clone, Copy, Debug)]
struct Route {
    sid: u32,
    pasid: u32,
    owner: TaskId,
    fault_capable: bool,
}

/// An event record as delivered (the interface's EventRecord).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventRec {
    pub sid: u32,
    pub event_id: u8,
    pub words: [u64; 4],
}

#[derive(Clone, Copy, Debug)]
struct Owner {
    /// Task index, or `None` for a free entry.
    task: Option<usize>,
    queue: [u16; OWNER_QUEUE],
    head: usize,
    len: usize,
    lost_faults: u32,
    events: [EventRec; OWNER_EVENTS],
    ehead: usize,
    elen: usize,
    lost_events: u32,
}

impl Owner {
    const EMPTY: Owner = Owner {
        task: None,
        queue: [0; OWNER_QUEUE],
        head: 0,
        len: 0,
        lost_faults: 0,
        events: [EventRec {
            sid: 0,
            event_id: 0,
            words: [0; 4],
        }; OWNER_EVENTS],
        ehead: 0,
        elen: 0,
        lost_events: 0,
    };
}

/// A response for iommu-server to issue (the interface's ResponseCmd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseOut {
    pub key: Key,
    pub resp: Resp,
}

/// One delivered request (the interface's FaultRecord, cookie included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultOut {
    pub cookie: u64,
    pub key: Key,
    pub page: Page,
    pub last: bool,
}

/// The route or owner table is full ([`MAX_ROUTES`], [`MAX_OWNERS`], or
/// the instance's own sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablesFull;

/// Why a respond batch stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespondStop {
    Complete,
    UnknownCookie,
    NotAllowed,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub partial_groups: u32,
    pub queued_groups: u32,
    pub delivered_groups: u32,
    pub queued_responses: u32,
    pub hw_overflows: u32,
    pub stop_markers: u32,
    pub evtq_overflows: u32,
    /// Event-queue write aborts reported by iommu-server (GERROR.EVENTQ_ABT_ERR).
    pub evtq_aborts: u32,
    pub pri_read: u32,
    pub events_read: u32,
    /// Partial groups discarded by PRI overflow recovery (never answered:
    /// the SMMU answered their Last).
    pub overflow_discards: u32,
    /// Groups found outstanding by this incarnation at start (answered
    /// INVALID or re-queued from the journal).
    pub recovered: u32,
    /// Partial groups forgotten because the group table was full.
    pub partial_evictions: u32,
}

/// Static configuration.
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    /// The app's stream → VM (task index) map: events of a stream go to
    /// its VM.
    pub streams: &'a [(u32, u16)],
    /// log2 of the event queue entries (<= 7).
    pub evtq_log2: u32,
    /// log2 of the PRI queue entries (<= 8).
    pub priq_log2: u32,
}

/// The queues as the consumer tracks them.
#[derive(Clone, Copy, Debug)]
struct HwQueue {
    cons: QueuePtr,
}

/// The fault server's state. Queue overflow rules, in one place:
/// - PRI queue (hardware): §8.1 recovery in [`Prq::intake_pri`];
/// - event queue (hardware): §7.4, acknowledged on first consumption;
///   every owner's next `fetch_events` reports `lost` += 1 (the SMMU does
///   not say whose records it discarded);
/// - group table: a partial group is forgotten, else intake stops (see
///   [`MAX_GROUPS`]);
/// - owner fault queue: INVALID at once + `lost` ([`OWNER_QUEUE`]; under
///   table pressure already at the owner's share, see `over_share`);
/// - owner event ring: drop newest + `lost` ([`OWNER_EVENTS`]);
/// - response queue: a ring over slot numbers, so it cannot overflow
///   (each slot is in it at most once).
///
/// Sizes: `G` group slots (at most 65 535: a cookie names a slot in 16
/// bits), `R` routes, `O` owners (fewer than 255); the queue region must
/// hold [`crate::mem::region_size`]`(G, R)` bytes.
pub struct Prq<
    M: Mmio,
    Q: QueueMemory,
    const G: usize = MAX_GROUPS,
    const R: usize = MAX_ROUTES,
    const O: usize = MAX_OWNERS,
> {
    pub mmio: M,
    pub mem: Q,
    streams_buf: [(u32, u16); MAX_ROUTES],
    nstreams: usize,
    evtq_log2: u32,
    priq_log2: u32,
    priq: HwQueue,
    evtq: HwQueue,
    pub slots: [Slot; G],
    /// Free slots: `free_list[..free]`, a stack.
    free: usize,
    free_list: [u16; G],
    /// Partial groups by key: bucket heads (hash of the key) and each
    /// slot's next slot in its bucket.
    pbucket: [u16; G],
    pnext: [u16; G],
    routes: [Option<Route>; R],
    /// Routes by (stream, PASID): bucket heads and next route.
    rbucket: [u16; R],
    rnext: [u16; R],
    owners: [Owner; O],
    /// Owner entry + 1 of each task index (0: none), and entries in use.
    owner_at: [u8; TASKS],
    nowners: usize,
    /// Queued or delivered groups per task index (any generation): the
    /// owners' shares (`over_share`).
    held: [u32; TASKS],
    /// Per task index, the newest generation seen + 1 (0: none): an owner
    /// id or a caller of a newer generation says every older incarnation
    /// of the task is dead (`seen_alive`).
    newest: [u32; TASKS],
    /// Slots in state Handed, in hand-over order.
    handed: [u16; G],
    nhanded: usize,
    resp_ring: [u16; G],
    rhead: usize,
    rlen: usize,
    take_seq: u32,
    pub incarnation: u16,
    pub stats: Stats,
    /// Owners (task indices) to notify, and whether iommu-server is owed a
    /// notification.
    notify_owners: u64,
    notify_iommu: bool,
    /// A drain waiting for (sid, pasid)'s stop marker, and whether it came.
    drain_marker: Option<(u32, u32)>,
    marker_seen: bool,
    /// Stop markers read recently (a drain that starts after the interrupt
    /// handler consumed the marker still finds it). The oldest is
    /// overwritten: that drain then polls and orphans partial groups.
    markers: [Option<(u32, u32)>; MARKERS],
    next_marker: usize,
    /// The last PRI intake read up to the PROD it saw.
    pri_reached: bool,
}

/// Recent stop markers remembered.
pub const MARKERS: usize = 8;

/// A cookie: slot (16 bits), slot generation (24), incarnation (16).
fn cookie_of(slot: usize, gen: u32, inc: u16) -> u64 {
    slot as u64 | ((gen as u64 & 0xff_ffff) << 16) | ((inc as u64) << 40)
}

/// A multiplicative hash of a group's key (Fibonacci hashing: the high
/// bits of the product).
fn key_hash(key: &Key) -> u64 {
    let x = key.sid as u64
        ^ (key.ssid.map_or(0, |p| p as u64 + 1) << 20)
        ^ ((key.tag as u64) << 41)
        ^ ((key.stall as u64) << 58);
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
}

/// The same for a route's (stream, PASID).
fn att_hash(sid: u32, pasid: u32) -> u64 {
    (sid as u64 ^ (pasid as u64) << 32).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
}

impl<M: Mmio, Q: QueueMemory> Prq<M, Q> {
    /// The production server (the default sizes); see [`Prq::sized`].
    pub fn new(mmio: M, mem: Q, cfg: &Config<'_>) -> Self {
        Self::sized(mmio, mem, cfg)
    }
}

impl<M: Mmio, Q: QueueMemory, const G: usize, const R: usize, const O: usize> Prq<M, Q, G, R, O> {
    /// The sizes this instance can work with, checked at build time.
    const SIZES_OK: () = assert!(
        G > 0 && G < NONE as usize && R > 0 && R < NONE as usize && O > 0 && O < 255,
        "prq-server: table sizes out of range"
    );
    /// Where this instance's route records start in the region.
    const ROUTES_OFF: usize = crate::mem::routes_off(G);

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
    fn start(&mut self) {
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

    /// The EVENTQ_BASE / PRIQ_BASE values for the page-0 owner.
    pub fn layout(&self) -> (u64, u64) {
        let pa = self.mem.base_pa();
        (
            regs::queue_base(pa + EVTQ_OFF as u64, self.evtq_log2, true),
            regs::queue_base(pa + PRIQ_OFF as u64, self.priq_log2, true),
        )
    }

    // ------------------------------------------------------------ journal

    fn persist_header(&self) {
        self.mem.write64(
            JOURNAL_OFF + 8,
            self.take_seq as u64 | (self.incarnation as u64) << 32,
        );
    }

    /// Writes slot `i`'s journal record: words 1 and 2 first, word 0 (the
    /// state) last, so a record is never seen in a new state with old
    /// contents.
    fn persist(&self, i: usize) {
        let s = &self.slots[i];
        let off = JOURNAL_SLOTS_OFF + i * JOURNAL_WORDS * 8;
        let w1 = s.key.sid as u64 | (s.key.ssid.unwrap_or(0) as u64) << 32;
        self.mem.write64(off + 8, w1);
        // Word 2: the sequence number and the owner's 32-bit TaskId.
        self.mem
            .write64(off + 16, s.seq as u64 | (s.owner.0 as u64) << 32);
        let w0 = s.state.raw()
            | (s.key.stall as u64) << 3
            | (s.key.ssid.is_some() as u64) << 4
            | s.resp.raw() << 5
            | (s.key.tag as u64) << 8
            | ((s.gen & 0xff_ffff) as u64) << 24;
        self.mem.write64(off, w0);
    }

    /// Writes route slot `k`'s record (word 1 first, the valid word last).
    fn persist_route(&self, k: usize) {
        let off = Self::ROUTES_OFF + k * 16;
        match self.routes[k] {
            Some(r) => {
                self.mem
                    .write64(off + 8, r.sid as u64 | (r.pasid as u64) << 32);
                self.mem.write64(
                    off,
                    1 | (r.fault_capable as u64) << 1 | (r.owner.0 as u64) << 16,
                );
            }
            None => self.mem.write64(off, 0),
        }
    }

    /// A restarted incarnation: reads the journal and makes every group
    /// the previous one held answered exactly once:
    /// - partial groups are forgotten (never answered: only a Last is;
    ///   when their Last arrives it is a group of its own and handled);
    /// - queued and delivered groups are answered INVALID (their page
    ///   addresses were in the lost memory; delivered cookies carry the
    ///   old incarnation and are refused), and each owner is told `lost`;
    /// - answered groups are queued again for iommu-server;
    /// - groups handed to iommu-server stay handed: its next
    ///   `take_responses(issued)` says whether it issued them.
    ///
    /// Routes are kept as they were (iommu-server set them; it does not
    /// set them again). The hardware queues go on from their CONS
    /// registers.
    fn recover(&mut self) {
        for k in 0..R {
            let off = Self::ROUTES_OFF + k * 16;
            let w0 = self.mem.read64(off);
            let w1 = self.mem.read64(off + 8);
            self.routes[k] = (w0 & 1 != 0).then_some(Route {
                sid: w1 as u32,
                pasid: (w1 >> 32) as u32,
                owner: TaskId((w0 >> 16) as u32),
                fault_capable: w0 & 2 != 0,
            });
            if let Some(r) = self.routes[k] {
                self.route_link(k, r.sid, r.pasid);
                let t = r.owner.index();
                if t < TASKS {
                    let g = r.owner.generation().0 + 1;
                    self.newest[t] = self.newest[t].max(g);
                }
            }
        }
        let h = self.mem.read64(JOURNAL_OFF + 8);
        self.take_seq = h as u32;
        self.incarnation = ((h >> 32) as u16).wrapping_add(1).max(1);
        self.persist_header();
        self.free = 0;
        for i in 0..G {
            let off = JOURNAL_SLOTS_OFF + i * JOURNAL_WORDS * 8;
            let w0 = self.mem.read64(off);
            let w1 = self.mem.read64(off + 8);
            let w2 = self.mem.read64(off + 16);
            let s = &mut self.slots[i];
            s.state = State::from_raw(w0 & 7);
            s.key = Key {
                sid: w1 as u32,
                ssid: (w0 >> 4 & 1 != 0).then_some((w1 >> 32) as u32),
                stall: w0 >> 3 & 1 != 0,
                tag: (w0 >> 8) as u16,
            };
            s.resp = Resp::from_raw(w0 >> 5 & 3);
            s.owner = TaskId((w2 >> 32) as u32);
            s.gen = ((w0 >> 24) as u32 & 0xff_ffff).max(1);
            s.seq = w2 as u32;
            match s.state {
                State::Free => {
                    self.free_list[self.free] = i as u16;
                    self.free += 1;
                }
                State::Partial => {
                    self.stats.recovered += 1;
                    self.release(i);
                }
                State::Queued | State::Delivered => {
                    self.stats.recovered += 1;
                    let owner = self.slots[i].owner;
                    // Held until `answer` below lets go of it.
                    self.held[owner.index()] += 1;
                    if let Some(o) = self.owner_mut(owner.index(), true) {
                        o.lost_faults += 1;
                        self.notify_owners |= 1 << (owner.index() % 64);
                    }
                    self.answer(i, Resp::Invalid);
                }
                State::Answered => {
                    self.stats.recovered += 1;
                    self.push_resp(i);
                    self.notify_iommu = true;
                }
                State::Handed => {
                    self.stats.recovered += 1;
                    self.handed[self.nhanded] = i as u16;
                    self.nhanded += 1;
                }
            }
        }
        let p = self.mmio.read32(offset::PRIQ_CONS);
        self.priq.cons = QueuePtr::from_raw(self.priq_log2, p);
        let e = self.mmio.read32(offset::EVENTQ_CONS);
        self.evtq.cons = QueuePtr::from_raw(self.evtq_log2, e);
    }

    // ------------------------------------------------------------ slots

    fn alloc(&mut self, key: Key, owner: TaskId) -> Option<usize> {
        if self.free == 0 {
            return None;
        }
        self.free -= 1;
        let i = self.free_list[self.free] as usize;
        let s = &mut self.slots[i];
        s.state = State::Partial;
        s.key = key;
        s.owner = owner;
        s.resp = Resp::Invalid;
        s.seq = 0;
        s.orphan = false;
        s.truncated = false;
        s.n = 0;
        self.persist(i);
        self.partial_link(i);
        Some(i)
    }

    // ------------------------------------------------------------ indices

    fn bucket_of(key: &Key) -> usize {
        (key_hash(key) % G as u64) as usize
    }

    /// Enters partial slot `i` in the partial-group index.
    fn partial_link(&mut self, i: usize) {
        let b = Self::bucket_of(&self.slots[i].key);
        self.pnext[i] = self.pbucket[b];
        self.pbucket[b] = i as u16;
    }

    /// Takes slot `i` out of the partial-group index (when it is there).
    fn partial_unlink(&mut self, i: usize) {
        let b = Self::bucket_of(&self.slots[i].key);
        let mut at = self.pbucket[b];
        let mut prev = NONE;
        while at != NONE {
            if at as usize == i {
                let next = self.pnext[i];
                if prev == NONE {
                    self.pbucket[b] = next;
                } else {
                    self.pnext[prev as usize] = next;
                }
                self.pnext[i] = NONE;
                return;
            }
            prev = at;
            at = self.pnext[at as usize];
        }
    }

    /// The partial group of `key`, if any.
    fn partial_of(&self, key: &Key) -> Option<usize> {
        let mut at = self.pbucket[Self::bucket_of(key)];
        while at != NONE {
            let s = &self.slots[at as usize];
            if s.state == State::Partial && s.key == *key {
                return Some(at as usize);
            }
            at = self.pnext[at as usize];
        }
        None
    }

    fn route_bucket(sid: u32, pasid: u32) -> usize {
        (att_hash(sid, pasid) % R as u64) as usize
    }

    fn route_link(&mut self, k: usize, sid: u32, pasid: u32) {
        let b = Self::route_bucket(sid, pasid);
        self.rnext[k] = self.rbucket[b];
        self.rbucket[b] = k as u16;
    }

    /// Removes route `k` (table, index and journal).
    fn route_remove(&mut self, k: usize) {
        let Some(r) = self.routes[k] else { return };
        let b = Self::route_bucket(r.sid, r.pasid);
        let mut at = self.rbucket[b];
        let mut prev = NONE;
        while at != NONE {
            if at as usize == k {
                if prev == NONE {
                    self.rbucket[b] = self.rnext[k];
                } else {
                    self.rnext[prev as usize] = self.rnext[k];
                }
                break;
            }
            prev = at;
            at = self.rnext[at as usize];
        }
        self.rnext[k] = NONE;
        self.routes[k] = None;
        self.persist_route(k);
    }

    /// The route slot of (sid, pasid).
    fn route_index(&self, sid: u32, pasid: u32) -> Option<usize> {
        let mut at = self.rbucket[Self::route_bucket(sid, pasid)];
        while at != NONE {
            if matches!(self.routes[at as usize], Some(r) if r.sid == sid && r.pasid == pasid) {
                return Some(at as usize);
            }
            at = self.rnext[at as usize];
        }
        None
    }

    /// The owner entry of task index `task`.
    fn owner_index(&self, task: usize) -> Option<usize> {
        match self.owner_at.get(task) {
            Some(&k) if k != 0 => Some(k as usize - 1),
            _ => None,
        }
    }

    /// The group table is full: forgets one partial group, if any, so
    /// that partial groups alone (a device that never sends Last) cannot
    /// stop intake for everyone. Safe for exactly-once: no response is owed
    /// for a group without Last; when its Last comes it is a group of its
    /// own (without the forgotten requests) and is answered once.
    fn evict_partial(&mut self) -> bool {
        match self.slots.iter().position(|s| s.state == State::Partial) {
            Some(i) => {
                self.stats.partial_evictions += 1;
                self.release(i);
                true
            }
            None => false,
        }
    }

    /// Frees slot `i` (no answer) and retires its generation.
    fn release(&mut self, i: usize) {
        match self.slots[i].state {
            State::Free => return,
            State::Partial => self.partial_unlink(i),
            _ => {}
        }
        let s = &mut self.slots[i];
        s.state = State::Free;
        s.gen = (s.gen + 1) & 0xff_ffff;
        if s.gen == 0 {
            s.gen = 1;
        }
        self.free_list[self.free] = i as u16;
        self.free += 1;
        self.persist(i);
    }

    fn push_resp(&mut self, i: usize) {
        // Cannot overflow: a slot is in the ring at most once.
        let at = (self.rhead + self.rlen) % G;
        self.resp_ring[at] = i as u16;
        self.rlen += 1;
    }

    /// Decides slot `i`'s answer and queues it for iommu-server.
    fn answer(&mut self, i: usize, resp: Resp) {
        let s = &mut self.slots[i];
        if matches!(s.state, State::Queued | State::Delivered) {
            let t = s.owner.index();
            self.held[t] = self.held[t].saturating_sub(1);
        }
        let s = &mut self.slots[i];
        s.state = State::Answered;
        s.resp = resp;
        s.gen = (s.gen + 1) & 0xff_ffff;
        if s.gen == 0 {
            s.gen = 1;
        }
        self.persist(i);
        self.push_resp(i);
        self.notify_iommu = true;
        trace!(Ev::Answered, i, resp.raw());
    }

    // ------------------------------------------------------------ owners

    fn owner_mut(&mut self, task: usize, create: bool) -> Option<&mut Owner> {
        if let Some(k) = self.owner_index(task) {
            return Some(&mut self.owners[k]);
        }
        // Only a task index can own (the map has one entry per index).
        if !create || task >= TASKS {
            return None;
        }
        // Creating an entry is the one scan (once per owner).
        let k = self.owners.iter().position(|o| o.task.is_none())?;
        self.owners[k] = Owner::EMPTY;
        self.owners[k].task = Some(task);
        self.owner_at[task] = k as u8 + 1;
        self.nowners += 1;
        Some(&mut self.owners[k])
    }

    fn route(&self, sid: u32, ssid: Option<u32>) -> Option<Route> {
        // A request without PASID is the attachment with PASID 0; a
        // request with PASID 0 (reserved) matches nothing.
        let pasid = match ssid {
            None => 0,
            Some(0) => return None,
            Some(p) => p,
        };
        if cfg!(feature = "explore-mutant-i2") {
            // Test-only mutant (explore-mutant-i2): the stream ignored, so
            // a group may reach another stream's owner.
            return self
                .routes
                .iter()
                .flatten()
                .find(|r| r.pasid == pasid)
                .copied();
        }
        self.route_index(sid, pasid).and_then(|k| self.routes[k])
    }

    fn att_of(key: &Key) -> (u32, u32) {
        (key.sid, key.ssid.unwrap_or(0))
    }

    /// A complete group (Last seen, or a stall): route it.
    fn complete(&mut self, i: usize) {
        self.partial_unlink(i);
        let s = self.slots[i];
        if s.orphan || s.truncated {
            return self.answer(i, Resp::Invalid);
        }
        let Some(r) = self.route(s.key.sid, s.key.ssid) else {
            return self.answer(i, Resp::Invalid);
        };
        if !r.fault_capable {
            return self.answer(i, Resp::Invalid);
        }
        let task = r.owner.index();
        let over_share = self.over_share(task);
        let Some(o) = self.owner_mut(task, true) else {
            return self.answer(i, Resp::Invalid);
        };
        if o.len == OWNER_QUEUE || over_share {
            o.lost_faults += 1;
            self.notify_owners |= 1 << (task % 64);
            return self.answer(i, Resp::Invalid);
        }
        let at = (o.head + o.len) % OWNER_QUEUE;
        o.queue[at] = i as u16;
        o.len += 1;
        self.slots[i].owner = r.owner;
        self.slots[i].state = State::Queued;
        self.held[task] += 1;
        self.persist(i);
        self.notify_owners |= 1 << (task % 64);
        trace!(Ev::GroupQueued, i, task);
    }

    /// Isolation between owners: while fewer than a quarter of the group
    /// slots are free, an owner already holding (queued or delivered) its
    /// share — half the table split between the owners — gets no more; its
    /// group is answered INVALID and counted lost, as for a full queue. An
    /// owner that neither fetches nor answers thus cannot stop intake for
    /// the others.
    fn over_share(&self, task: usize) -> bool {
        if self.free >= G / 4 {
            return false;
        }
        let owners = self.nowners.max(1);
        self.held.get(task).copied().unwrap_or(0) as usize >= G / (2 * owners)
    }

    fn add_page(&mut self, i: usize, page: Page) {
        let s = &mut self.slots[i];
        if (s.n as usize) < GROUP_PAGES {
            s.pages[s.n as usize] = page;
            s.n += 1;
        } else {
            s.truncated = true;
        }
    }

    // ------------------------------------------------------------ intake

    /// One PRI queue entry.
    fn pri_entry(&mut self, e: &PriEntry) {
        self.stats.pri_read += 1;
        let ssid = e.substream();
        if let Some(p) = ssid {
            if e.is_stop_marker() {
                // Counted and dropped: the SMMU never answers one.
                self.stats.stop_markers += 1;
                if self.drain_marker == Some((e.sid(), p)) {
                    self.marker_seen = true;
                } else {
                    self.markers[self.next_marker] = Some((e.sid(), p));
                    self.next_marker = (self.next_marker + 1) % MARKERS;
                }
                return;
            }
        }
        let key = Key {
            sid: e.sid(),
            ssid,
            stall: false,
            tag: e.prgi(),
        };
        let page = Page {
            addr: e.page_addr(),
            perm: e.read() as u8
                | (e.write() as u8) << 1
                | (e.exec() as u8) << 2
                | (e.privileged() as u8) << 3,
        };
        let i = match self.partial_of(&key) {
            Some(i) => i,
            None => match self.alloc(key, TaskId(0)) {
                Some(i) => i,
                // Not reached: intake checks for a free slot first.
                None => return,
            },
        };
        self.add_page(i, page);
        if e.last() {
            trace!(Ev::GroupComplete, key.sid, key.ssid.unwrap_or(u32::MAX));
            self.complete(i);
        }
    }

    /// Reads the PRI queue up to PROD (or until the group table is full),
    /// with IHI 0070 §8.1's overflow recovery: when PROD.OVFLG differs from
    /// our OVACKFLG, every partial group without a Last up to PROD is
    /// discarded unanswered (the SMMU auto-answered its Last; its PRG index
    /// may already name another group), then one CONS write moves RD and
    /// sets OVACKFLG = OVFLG. Returns entries read.
    pub fn intake_pri(&mut self) -> u32 {
        let prod = QueuePtr::from_raw(self.priq_log2, self.mmio.read32(offset::PRIQ_PROD));
        self.mem.acquire();
        let overflow = prod.overflow() != self.priq.cons.overflow();
        let mut n = 0;
        while !prod.is_empty(self.priq.cons) {
            if self.free == 0 && !self.evict_partial() {
                break;
            }
            let off = PRIQ_OFF + self.priq.cons.entry_offset(PRIQ_ENTRY_BYTES);
            // A non-coherent SMMU wrote memory, not our cache.
            self.mem.refresh(off, PRIQ_ENTRY_BYTES);
            let w = [self.mem.read64(off), self.mem.read64(off + 8)];
            self.pri_entry(&PriEntry::from_words(w));
            self.priq.cons = self.priq.cons.advance(1);
            n += 1;
        }
        let reached = prod.is_empty(self.priq.cons);
        self.pri_reached = reached;
        if overflow && reached {
            self.stats.hw_overflows += 1;
            for i in 0..G {
                // Test-only mutant (explore-mutant-i6): partials kept.
                let keep = cfg!(feature = "explore-mutant-i6");
                if self.slots[i].state == State::Partial && !self.slots[i].key.stall && !keep {
                    self.stats.overflow_discards += 1;
                    self.release(i);
                }
            }
            self.priq.cons = self.priq.cons.with_overflow(prod.overflow());
        }
        if n > 0 || (overflow && reached) {
            self.mmio.write32(offset::PRIQ_CONS, self.priq.cons.raw());
        }
        n
    }

    /// Reads the event queue up to PROD: stall records become groups of
    /// one; other records go to the VM owning the stream. Overflow per
    /// §7.4: records were discarded (never stall records); acknowledged on
    /// this first consumption, every owner is told `lost`.
    pub fn intake_events(&mut self) -> u32 {
        let prod = QueuePtr::from_raw(self.evtq_log2, self.mmio.read32(offset::EVENTQ_PROD));
        self.mem.acquire();
        let mut n = 0;
        while !prod.is_empty(self.evtq.cons) {
            let off = EVTQ_OFF + self.evtq.cons.entry_offset(EVENTQ_ENTRY_BYTES);
            self.mem.refresh(off, EVENTQ_ENTRY_BYTES);
            let e = Event::from_words(core::array::from_fn(|k| self.mem.read64(off + 8 * k)));
            if e.stall() {
                if self.free == 0 && !self.evict_partial() {
                    // The record stays; the transaction stays stalled.
                    break;
                }
                self.stall_event(&e);
            } else {
                self.route_event(&e);
            }
            self.stats.events_read += 1;
            self.evtq.cons = self.evtq.cons.advance(1);
            n += 1;
        }
        let overflow = prod.overflow() != self.evtq.cons.overflow();
        if overflow {
            self.stats.evtq_overflows += 1;
            self.evtq.cons = self.evtq.cons.with_overflow(prod.overflow());
            self.every_owner_lost_events();
        }
        if n > 0 || overflow {
            self.mmio.write32(offset::EVENTQ_CONS, self.evtq.cons.raw());
        }
        n
    }

    /// Records the SMMU lost without OVFLG (GERROR.EVENTQ_ABT_ERR,
    /// acknowledged by iommu-server, the page-0 owner, which calls here
    /// once per abort). §7.2.2: the records up to PROD are valid, so they
    /// are read first; the lost ones were never written, so nobody can say
    /// whose they were: every VM that owns a stream or has an owner entry
    /// reports `lost` on its next `fetch_events` (saturating; no queue
    /// grows). Returns the records read.
    pub fn event_records_lost(&mut self, aborts: u32) -> u32 {
        let n = self.intake_events();
        self.stats.evtq_aborts = self.stats.evtq_aborts.saturating_add(aborts.max(1));
        self.every_owner_lost_events();
        n
    }

    /// Lost event records nobody can attribute: `lost` + 1 for every owner
    /// entry and every VM owning a stream (an entry is made for it if the
    /// table has room; without room, the VM has no events to lose yet
    /// either, as `route_event` would drop its records the same way).
    fn every_owner_lost_events(&mut self) {
        for k in 0..self.nstreams {
            let task = self.streams_buf[k].1 as usize;
            let _ = self.owner_mut(task, true);
        }
        for o in self.owners.iter_mut() {
            if let Some(t) = o.task {
                o.lost_events = o.lost_events.saturating_add(1);
                self.notify_owners |= 1 << (t % 64);
            }
        }
    }

    fn stall_event(&mut self, e: &Event) {
        let key = Key {
            sid: e.sid(),
            ssid: e.substream(),
            stall: true,
            tag: e.stag(),
        };
        let perm = if e.rnw() { 1 } else { 2 } | (e.ind() as u8) << 2 | (e.pnu() as u8) << 3;
        if let Some(i) = self.alloc(key, TaskId(0)) {
            self.add_page(
                i,
                Page {
                    addr: e.input_addr(),
                    perm,
                },
            );
            self.complete(i);
        }
    }

    fn route_event(&mut self, e: &Event) {
        let sid = e.sid();
        let Some(&(_, task)) = self.streams_buf[..self.nstreams]
            .iter()
            .find(|(s, _)| *s == sid)
        else {
            // A stream no VM owns: nobody to tell (the log has the count).
            return;
        };
        let task = task as usize;
        let Some(o) = self.owner_mut(task, true) else {
            return;
        };
        if o.elen == OWNER_EVENTS {
            o.lost_events += 1;
        } else {
            let at = (o.ehead + o.elen) % OWNER_EVENTS;
            o.events[at] = EventRec {
                sid,
                event_id: e.raw_event_id(),
                words: e.words(),
            };
            o.elen += 1;
        }
        self.notify_owners |= 1 << (task % 64);
    }

    /// Both queues (the interrupt handler).
    pub fn intake(&mut self) {
        self.intake_events();
        self.intake_pri();
    }

    // ------------------------------------------------------------ owners' side

    /// Moves whole groups from `caller`'s queue into `out` and marks them
    /// delivered. Returns (records, lost since the last fetch).
    pub fn fetch_faults(&mut self, caller: TaskId, out: &mut [FaultOut]) -> (usize, u32) {
        self.seen_alive(caller);
        self.intake();
        let inc = self.incarnation;
        let Some(k) = self.owner_index(caller.index()) else {
            return (0, 0);
        };
        let mut w = 0;
        loop {
            let o = &self.owners[k];
            if o.len == 0 {
                break;
            }
            let i = o.queue[o.head] as usize;
            let s = self.slots[i];
            if s.owner != caller {
                // Queued for an earlier incarnation of this task (its
                // death was not reported yet): never shown to this one.
                self.pop_owner(k);
                self.answer(i, Resp::Invalid);
                continue;
            }
            let n = s.n as usize;
            if w + n > out.len() {
                break;
            }
            for (j, p) in s.pages[..n].iter().enumerate() {
                out[w + j] = FaultOut {
                    cookie: cookie_of(i, s.gen, inc),
                    key: s.key,
                    page: *p,
                    last: j + 1 == n,
                };
            }
            w += n;
            let cookie = cookie_of(i, s.gen, inc);
            trace!(Ev::CookieIssued, cookie, cookie >> 32);
            self.pop_owner(k);
            self.slots[i].state = State::Delivered;
            self.persist(i);
        }
        let lost = core::mem::take(&mut self.owners[k].lost_faults);
        (w, lost)
    }

    fn pop_owner(&mut self, k: usize) {
        let o = &mut self.owners[k];
        o.head = (o.head + 1) % OWNER_QUEUE;
        o.len -= 1;
    }

    fn slot_of_cookie(&self, caller: TaskId, cookie: u64) -> Option<usize> {
        let i = (cookie & 0xffff) as usize;
        let gen = (cookie >> 16) as u32 & 0xff_ffff;
        let inc = (cookie >> 40) as u16;
        let s = self.slots.get(i)?;
        (inc == self.incarnation
            && cookie >> 56 == 0
            && s.gen == gen
            && s.state == State::Delivered
            // Test-only mutant (explore-mutant-i5): the sender check gone;
            // `cargo xtask explore --mutants` shows the explorer catches it.
            && (cfg!(feature = "explore-mutant-i5") || s.owner == caller))
            .then_some(i)
    }

    /// Answers delivered groups by cookie, in order. Returns how many were
    /// accepted and why it stopped.
    pub fn respond(&mut self, caller: TaskId, entries: &[(u64, Resp)]) -> (u32, RespondStop) {
        self.seen_alive(caller);
        for (n, &(cookie, resp)) in entries.iter().enumerate() {
            if resp == Resp::Failure {
                trace!(Ev::RespondRefused, cookie, 2);
                return (n as u32, RespondStop::NotAllowed);
            }
            let Some(i) = self.slot_of_cookie(caller, cookie) else {
                trace!(Ev::RespondRefused, cookie, 1);
                return (n as u32, RespondStop::UnknownCookie);
            };
            self.answer(i, resp);
        }
        (entries.len() as u32, RespondStop::Complete)
    }

    /// Moves `caller`'s (a VM's) event records into `out`.
    pub fn fetch_events(&mut self, caller: TaskId, out: &mut [EventRec]) -> (usize, u32) {
        self.seen_alive(caller);
        self.intake();
        let Some(o) = self.owner_mut(caller.index(), false) else {
            return (0, 0);
        };
        let mut n = 0;
        while o.elen > 0 && n < out.len() {
            out[n] = o.events[o.ehead];
            o.ehead = (o.ehead + 1) % OWNER_EVENTS;
            o.elen -= 1;
            n += 1;
        }
        (n, core::mem::take(&mut o.lost_events))
    }

    // ------------------------------------------------------------ iommu-server's side

    /// Answers INVALID every group of (sid, pasid) that is queued or
    /// delivered (cookie revoked), and orphans its partial groups (their
    /// Last is answered INVALID on arrival). Returns groups answered.
    fn answer_attachment(&mut self, sid: u32, pasid: u32, forget_partials: bool) -> u32 {
        let mut n = 0;
        for i in 0..G {
            let s = self.slots[i];
            if Self::att_of(&s.key) != (sid, pasid) {
                continue;
            }
            match s.state {
                State::Queued | State::Delivered => {
                    if s.state == State::Queued {
                        self.unqueue(i);
                    }
                    self.answer(i, Resp::Invalid);
                    n += 1;
                }
                State::Partial if forget_partials => self.release(i),
                State::Partial => self.slots[i].orphan = true,
                _ => {}
            }
        }
        n
    }

    /// Removes slot `i` from whichever owner queue holds it.
    fn unqueue(&mut self, i: usize) {
        for o in self.owners.iter_mut() {
            let mut kept = [0u16; OWNER_QUEUE];
            let mut m = 0;
            for j in 0..o.len {
                let v = o.queue[(o.head + j) % OWNER_QUEUE];
                if v as usize != i {
                    kept[m] = v;
                    m += 1;
                }
            }
            if m != o.len {
                o.queue = kept;
                o.head = 0;
                o.len = m;
            }
        }
    }

    /// Routes (sid, pasid) to `owner`. Replacing a route answers the old
    /// route's groups INVALID (see `answer_attachment`): nothing raised
    /// under the old domain is charged to the new one.
    pub fn set_route(
        &mut self,
        sid: u32,
        pasid: u32,
        owner: TaskId,
        fault_capable: bool,
    ) -> Result<(), TablesFull> {
        self.seen_alive(owner);
        self.intake();
        let existing = self.route_index(sid, pasid);
        if existing.is_some() {
            self.answer_attachment(sid, pasid, false);
        } else if fault_capable && self.owner_mut(owner.index(), true).is_none() {
            return Err(TablesFull);
        }
        let slot = match existing {
            Some(k) => k,
            None => self
                .routes
                .iter()
                .position(|r| r.is_none())
                .ok_or(TablesFull)?,
        };
        self.routes[slot] = Some(Route {
            sid,
            pasid,
            owner,
            fault_capable,
        });
        if existing.is_none() {
            self.route_link(slot, sid, pasid);
        }
        self.persist_route(slot);
        Ok(())
    }

    /// Unbind / detach: removes the route, consumes the PRI queue to a
    /// snapshot of PROD (with `uses_stop_marker`: until the attachment's
    /// stop marker, re-reading PROD at most [`DRAIN_POLLS`] times), answers
    /// every group of the attachment INVALID and hands the attachment's
    /// answers over in `out` (hand-over `seq`, acknowledged like
    /// `take_responses`'). Returns (responses written, cookies revoked,
    /// complete, seq).
    pub fn drain(
        &mut self,
        sid: u32,
        pasid: u32,
        uses_stop_marker: bool,
        issued: u32,
        out: &mut [ResponseOut],
    ) -> (usize, u32, bool, u32) {
        trace!(Ev::DrainStart, sid, pasid);
        self.acknowledge(issued);
        while let Some(k) = self.route_index(sid, pasid) {
            self.route_remove(k);
        }
        self.drain_marker = uses_stop_marker.then_some((sid, pasid));
        self.marker_seen = false;
        for m in self.markers.iter_mut() {
            if *m == Some((sid, pasid)) {
                *m = None;
                self.marker_seen = true;
            }
        }
        let mut polls = 0;
        loop {
            self.intake_events();
            self.intake_pri();
            if !uses_stop_marker || self.marker_seen || polls >= DRAIN_POLLS {
                break;
            }
            polls += 1;
        }
        self.drain_marker = None;
        let marker = uses_stop_marker && self.marker_seen;
        let revoked = self
            .slots
            .iter()
            .filter(|s| s.state == State::Delivered && Self::att_of(&s.key) == (sid, pasid))
            .count() as u32;
        // Partial groups: with the stop marker seen, the device sends
        // nothing more for the PASID, so a partial group never completes
        // (the device expects no response): forgotten. Without it, its Last
        // may still come: it finds no route and is answered then.
        self.answer_attachment(sid, pasid, marker);
        // Move the attachment's answers to `out`; keep the others queued.
        let mut w = 0;
        let mut kept = [0u16; G];
        let mut m = 0;
        let has_any = (0..self.rlen).any(|j| {
            let i = self.resp_ring[(self.rhead + j) % G] as usize;
            Self::att_of(&self.slots[i].key) == (sid, pasid)
        });
        // The lease is a hand-over like take_responses': kept until
        // iommu-server acknowledges its seq.
        let seq = if has_any && !out.is_empty() {
            self.next_seq()
        } else {
            0
        };
        for j in 0..self.rlen {
            let i = self.resp_ring[(self.rhead + j) % G] as usize;
            let s = self.slots[i];
            if w < out.len() && Self::att_of(&s.key) == (sid, pasid) {
                out[w] = ResponseOut {
                    key: s.key,
                    resp: s.resp,
                };
                w += 1;
                let sl = &mut self.slots[i];
                sl.state = State::Handed;
                sl.seq = seq;
                self.persist(i);
                self.handed[self.nhanded] = i as u16;
                self.nhanded += 1;
            } else {
                kept[m] = i as u16;
                m += 1;
            }
        }
        self.resp_ring[..m].copy_from_slice(&kept[..m]);
        self.rhead = 0;
        self.rlen = m;
        // Complete only when the queue was read past the snapshot of PROD
        // (a full group table can stop intake short of it: the caller then
        // issues what it holds, which frees slots, and calls again) and
        // every answer of the attachment was handed over.
        let complete = self.pri_reached
            && !self.resp_ring[..m]
                .iter()
                .any(|&i| Self::att_of(&self.slots[i as usize].key) == (sid, pasid));
        trace!(Ev::DrainDone, w, revoked | (complete as u32) << 31);
        (w, revoked, complete, seq)
    }

    /// Hands queued responses to iommu-server. Hand-overs up to `issued`
    /// are acknowledged (freed); later ones it never received (a previous
    /// incarnation died before replying) are queued again. Returns
    /// (written, more, seq).
    pub fn take_responses(&mut self, issued: u32, out: &mut [ResponseOut]) -> (usize, bool, u32) {
        self.intake();
        self.acknowledge(issued);
        if self.rlen == 0 || out.is_empty() {
            return (0, false, 0);
        }
        let seq = self.next_seq();
        let mut w = 0;
        while self.rlen > 0 && w < out.len() {
            let i = self.resp_ring[self.rhead] as usize;
            self.rhead = (self.rhead + 1) % G;
            self.rlen -= 1;
            let s = &mut self.slots[i];
            out[w] = ResponseOut {
                key: s.key,
                resp: s.resp,
            };
            s.state = State::Handed;
            s.seq = seq;
            self.persist(i);
            self.handed[self.nhanded] = i as u16;
            self.nhanded += 1;
            w += 1;
        }
        trace!(Ev::ResponsesTaken, w, seq);
        (w, self.rlen > 0, seq)
    }

    /// Every owner task id prq-server holds something for (routes and
    /// queued / delivered groups), at most [`MAX_ROUTES`] distinct ones.
    pub fn owner_ids(&self, out: &mut [TaskId; MAX_ROUTES]) -> usize {
        let mut n = 0;
        let routes = self.routes.iter().flatten().map(|r| r.owner);
        let slots = self
            .slots
            .iter()
            .filter(|s| matches!(s.state, State::Queued | State::Delivered))
            .map(|s| s.owner);
        for id in routes.chain(slots) {
            if n < MAX_ROUTES && !out[..n].contains(&id) {
                out[n] = id;
                n += 1;
            }
        }
        n
    }

    /// iommu-server issued every hand-over up to `issued`: those slots are
    /// freed; later hand-overs never reached it (a previous incarnation
    /// died before its reply) and are queued again.
    ///
    /// Walks the handed slots only (in hand-over order), so its cost is
    /// that of the last hand-overs, not of the table.
    fn acknowledge(&mut self, issued: u32) {
        let n = core::mem::take(&mut self.nhanded);
        for j in 0..n {
            let i = self.handed[j] as usize;
            if self.slots[i].state == State::Handed {
                if self.slots[i].seq <= issued {
                    self.release(i);
                } else {
                    self.slots[i].state = State::Answered;
                    self.persist(i);
                    self.push_resp(i);
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.take_seq = self.take_seq.wrapping_add(1).max(1);
        self.persist_header();
        self.take_seq
    }

    /// `id` is a live incarnation (a caller: the kernel stamps its id; or
    /// an owner iommu-server routes to). The first time a generation of
    /// a task index is newer than every one seen, each older incarnation
    /// prq-server holds something for is dead (generations only grow):
    /// `owner_died` of each. That catches a task restarted without a
    /// death in the supervisor's log (task control used directly) and a
    /// death not yet pulled. O(1) per call; the walk runs once per new
    /// incarnation, not per fault.
    pub fn seen_alive(&mut self, id: TaskId) {
        let t = id.index();
        if t >= TASKS {
            return;
        }
        let g = id.generation().0 + 1;
        let prev = self.newest[t];
        if g <= prev {
            return;
        }
        self.newest[t] = g;
        if prev == 0 {
            return;
        }
        let mut ids = [TaskId(0); MAX_ROUTES];
        let n = self.owner_ids(&mut ids);
        for &old in &ids[..n] {
            if old.index() == t && old.generation() < id.generation() {
                self.owner_died(old);
            }
        }
    }

    /// The VM task `vm` (this incarnation of it: index and generation)
    /// went away: its routes removed, its groups answered INVALID, its
    /// partial groups orphaned, its events dropped. A later incarnation's
    /// routes are not touched.
    pub fn owner_died(&mut self, vm: TaskId) -> u32 {
        if cfg!(feature = "explore-mutant-i1") {
            // Test-only mutant: the dead owner's groups are forgotten, not
            // answered (`cargo xtask explore --mutants`).
            return 0;
        }
        self.intake();
        let task = vm.index();
        let mut atts = [(0u32, 0u32); R];
        let mut na = 0;
        for k in 0..R {
            if let Some(x) = self.routes[k] {
                if x.owner == vm {
                    atts[na] = (x.sid, x.pasid);
                    na += 1;
                    self.route_remove(k);
                }
            }
        }
        let mut n = 0;
        for &(sid, pasid) in &atts[..na] {
            n += self.answer_attachment(sid, pasid, false);
        }
        // Groups of the VM not under a current route (queued under an old
        // route of a stream since re-routed): by owner.
        for i in 0..G {
            let s = self.slots[i];
            if s.owner == vm && matches!(s.state, State::Queued | State::Delivered) {
                if s.state == State::Queued {
                    self.unqueue(i);
                }
                self.answer(i, Resp::Invalid);
                n += 1;
            }
        }
        if let Some(k) = self.owner_index(task) {
            // The entry is the task index's, not the incarnation's: a later
            // incarnation's groups may be queued in it (a death learnt late,
            // or replayed after a restart of this server) and its routes
            // use it. Then it stays (their queue and `lost` counts), only
            // the events go; otherwise it is freed, and nothing is owed to
            // the task index any more (no post to it).
            let later = self.owners[k].len > 0
                || self
                    .routes
                    .iter()
                    .flatten()
                    .any(|r| r.owner.index() == task);
            if later {
                let o = &mut self.owners[k];
                o.ehead = 0;
                o.elen = 0;
            } else {
                self.owners[k] = Owner::EMPTY;
                self.owner_at[task] = 0;
                self.nowners -= 1;
                self.notify_owners &= !(1 << (task % 64));
            }
        }
        trace!(Ev::OwnerDied, task, n);
        n
    }

    /// Current counters.
    pub fn stats(&mut self) -> Stats {
        let mut st = self.stats;
        st.partial_groups = self.count(State::Partial);
        st.queued_groups = self.count(State::Queued);
        st.delivered_groups = self.count(State::Delivered);
        st.queued_responses = self.rlen as u32;
        st
    }

    fn count(&self, state: State) -> u32 {
        self.slots.iter().filter(|s| s.state == state).count() as u32
    }

    /// Notifications owed: (owner task indices as a bit set, iommu-server).
    pub fn take_notifications(&mut self) -> (u64, bool) {
        (
            core::mem::take(&mut self.notify_owners),
            core::mem::take(&mut self.notify_iommu),
        )
    }
}
