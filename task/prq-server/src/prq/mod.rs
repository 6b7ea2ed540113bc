//! The fault path: intake from the PRI and event queues, groups, routes,
//! per-owner bounded queues, cookies, responses, drain, owner death and
//! restart recovery. No heap: every table has a fixed size and every
//! queue an overflow rule (listed on [`Prq`]).
//!
//! This module holds the types, the state ([`Prq`]) and its counters; the
//! operations are in one submodule per responsibility, each an `impl Prq`
//! block:
//! - `init`: building the state in place, starting or recovering the journal;
//! - `recovery`: the journal records and restart recovery;
//! - `slots`: group slots, the partial-group and route indices, answering;
//! - `routing`: a complete group to its owner's queue, routes, attachments;
//! - `intake`: the PRI and event queues;
//! - `owners`: `fetch_faults`, `respond`, `fetch_events`;
//! - `responses`: hand-overs to iommu-server (`take_responses`);
//! - `death`: drain (unbind / detach) and owner death.
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

mod death;
mod init;
mod intake;
mod owners;
mod recovery;
mod responses;
mod routing;
mod slots;

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

    /// The EVENTQ_BASE / PRIQ_BASE values for the page-0 owner.
    pub fn layout(&self) -> (u64, u64) {
        let pa = self.mem.base_pa();
        (
            regs::queue_base(pa + EVTQ_OFF as u64, self.evtq_log2, true),
            regs::queue_base(pa + PRIQ_OFF as u64, self.priq_log2, true),
        )
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
