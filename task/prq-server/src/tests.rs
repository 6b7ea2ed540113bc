//! Host tests of the fault state machine on a fake register page and
//! memory (the harness tests run it against the SMMUv3 model).

use crate::mem::{QueueMemory, PRIQ_OFF, REGION_SIZE};
use crate::prq::{Config, FaultOut, Key, Prq, Resp, RespondStop, ResponseOut, GROUP_PAGES};
use smmuv3::regs::offset;
use smmuv3::{Mmio, PriEntry, QueuePtr, PRIQ_ENTRY_BYTES};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;
use userlib::{Generation, TaskId};

#[derive(Clone, Default)]
struct Regs(Rc<RefCell<HashMap<usize, u32>>>);

impl Mmio for Regs {
    fn read32(&self, off: usize) -> u32 {
        assert!(off >= offset::PAGE1, "page-0 read {off:#x}");
        *self.0.borrow().get(&off).unwrap_or(&0)
    }
    fn write32(&self, off: usize, v: u32) {
        assert!(off >= offset::PAGE1, "page-0 write {off:#x}");
        self.0.borrow_mut().insert(off, v);
    }
    fn read64(&self, _: usize) -> u64 {
        0
    }
    fn write64(&self, _: usize, _: u64) {}
}

#[derive(Clone)]
struct Mem(Rc<RefCell<Vec<u64>>>);

impl QueueMemory for Mem {
    fn base_pa(&self) -> u64 {
        0x5000_0000
    }
    fn size(&self) -> usize {
        REGION_SIZE
    }
    fn read64(&self, off: usize) -> u64 {
        self.0.borrow()[off / 8]
    }
    fn write64(&self, off: usize, v: u64) {
        self.0.borrow_mut()[off / 8] = v;
    }
    // Coherent host memory: nothing to invalidate.
    fn refresh(&self, _: usize, _: usize) {}
}

const LOG2: u32 = 4;
const VM: TaskId = TaskId::new(4, Generation(0));

struct Rig {
    regs: Regs,
    mem: Mem,
}

impl Rig {
    fn new() -> Self {
        Rig {
            regs: Regs::default(),
            mem: Mem(Rc::new(RefCell::new(vec![0; REGION_SIZE / 8]))),
        }
    }
    fn prq(&self) -> Prq<Regs, Mem> {
        Prq::new(
            self.regs.clone(),
            self.mem.clone(),
            &Config {
                streams: &[(0x10, 4)],
                evtq_log2: 3,
                priq_log2: LOG2,
            },
        )
    }
    /// The SMMU writing one PRI entry.
    fn raise(&self, sid: u32, prgi: u16, addr: u64, last: bool) {
        let prod = QueuePtr::from_raw(LOG2, self.regs.read32(offset::PRIQ_PROD));
        let mut e = PriEntry::new(sid, None, prgi, addr);
        e.set_read(true).set_last(last);
        let off = PRIQ_OFF + prod.entry_offset(PRIQ_ENTRY_BYTES);
        self.mem.write64(off, e.word(0));
        self.mem.write64(off + 8, e.word(1));
        self.regs.write32(offset::PRIQ_PROD, prod.advance(1).raw());
    }
}

fn empty_out() -> [FaultOut; 64] {
    [FaultOut {
        cookie: 0,
        key: Key::default(),
        page: Default::default(),
        last: false,
    }; 64]
}

fn empty_resp() -> [ResponseOut; 64] {
    [ResponseOut {
        key: Key::default(),
        resp: Resp::Invalid,
    }; 64]
}

#[test]
fn a_group_larger_than_kept_is_answered_invalid_and_never_delivered() {
    let r = Rig::new();
    let mut p = r.prq();
    p.set_route(0x10, 0, VM, true).unwrap();
    for i in 0..=GROUP_PAGES as u64 {
        r.raise(0x10, 1, 0x1000 * (i + 1), i == GROUP_PAGES as u64);
    }
    let mut out = empty_out();
    assert_eq!(p.fetch_faults(VM, &mut out), (0, 0));
    let mut resp = empty_resp();
    let (n, _, seq) = p.take_responses(0, &mut resp);
    assert_eq!((n, resp[0].resp, resp[0].key.tag), (1, Resp::Invalid, 1));
    assert_eq!(seq, 1);
}

#[test]
fn a_restart_hands_out_again_what_was_never_acknowledged_and_nothing_twice() {
    let r = Rig::new();
    let mut p = r.prq();
    p.set_route(0x10, 0, VM, true).unwrap();
    r.raise(0x10, 1, 0x1000, true);
    r.raise(0x10, 2, 0x2000, true);
    let mut out = empty_out();
    assert_eq!(p.fetch_faults(VM, &mut out).0, 2);
    let c1 = out[0].cookie;
    assert_eq!(
        p.respond(VM, &[(c1, Resp::Success)]),
        (1, RespondStop::Complete)
    );
    let mut resp = empty_resp();
    // Handed out in hand-over 1; the reply is "lost" (restart follows).
    assert_eq!(p.take_responses(0, &mut resp).0, 1);
    drop(p);
    let mut p = r.prq();
    assert_eq!(p.incarnation, 2);
    // iommu-server never got hand-over 1: issued = 0.
    let (n, more, seq) = p.take_responses(0, &mut resp);
    assert_eq!((n, more), (2, false));
    let mut got: Vec<(u16, Resp)> = resp[..n].iter().map(|r| (r.key.tag, r.resp)).collect();
    got.sort_by_key(|g| g.0);
    // Group 1's Success again (never issued), group 2 (delivered, lost
    // with the old incarnation) Invalid.
    assert_eq!(got, [(1, Resp::Success), (2, Resp::Invalid)]);
    // The old cookie is refused; acknowledging frees everything.
    assert_eq!(
        p.respond(VM, &[(out[1].cookie, Resp::Success)]),
        (0, RespondStop::UnknownCookie)
    );
    assert_eq!(p.take_responses(seq, &mut resp).0, 0);
    let s = p.stats();
    assert_eq!(
        (s.queued_responses, s.delivered_groups, s.queued_groups),
        (0, 0, 0)
    );
    // Routes survived: a new group is delivered.
    r.raise(0x10, 3, 0x3000, true);
    assert_eq!(p.fetch_faults(VM, &mut out), (1, 1));
}

#[test]
fn an_acknowledged_hand_over_is_not_repeated_after_a_restart() {
    let r = Rig::new();
    let mut p = r.prq();
    r.raise(0x10, 1, 0x1000, true); // no route: Invalid at once
    let mut resp = empty_resp();
    let (n, _, seq) = p.take_responses(0, &mut resp);
    assert_eq!(n, 1);
    drop(p);
    let mut p = r.prq();
    assert_eq!(p.take_responses(seq, &mut resp).0, 0);
}

#[test]
fn another_tasks_or_a_forged_cookie_is_refused_and_changes_nothing() {
    let r = Rig::new();
    let mut p = r.prq();
    p.set_route(0x10, 0, VM, true).unwrap();
    r.raise(0x10, 1, 0x1000, true);
    let mut out = empty_out();
    p.fetch_faults(VM, &mut out);
    let c = out[0].cookie;
    let other = TaskId::new(5, Generation(0));
    for (who, cookie) in [(other, c), (VM, c + (1 << 16)), (VM, c ^ 1), (VM, 0)] {
        assert_eq!(
            p.respond(who, &[(cookie, Resp::Success)]),
            (0, RespondStop::UnknownCookie)
        );
    }
    assert_eq!(
        p.respond(VM, &[(c, Resp::Failure)]),
        (0, RespondStop::NotAllowed)
    );
    assert_eq!(p.stats().queued_responses, 0);
    assert_eq!(
        p.respond(VM, &[(c, Resp::Invalid)]),
        (1, RespondStop::Complete)
    );
}

/// A call from a newer incarnation of an owner (the kernel stamps the
/// caller's id) says the older one is dead: its old cookie is refused,
/// and the old incarnation's delivered group is answered INVALID and its
/// route removed, without any death report.
#[test]
fn a_newer_incarnations_call_retires_the_older_ones_groups() {
    let r = Rig::new();
    let mut p = r.prq();
    p.set_route(0x10, 0, VM, true).unwrap();
    r.raise(0x10, 1, 0x1000, true);
    let mut out = empty_out();
    p.fetch_faults(VM, &mut out);
    let c = out[0].cookie;
    let restarted = TaskId::new(4, Generation(1));
    assert_eq!(
        p.respond(restarted, &[(c, Resp::Success)]),
        (0, RespondStop::UnknownCookie)
    );
    let s = p.stats();
    assert_eq!((s.delivered_groups, s.queued_responses), (0, 1));
    let mut resp = empty_resp();
    let (n, _, _) = p.take_responses(0, &mut resp);
    assert_eq!((n, resp[0].resp), (1, Resp::Invalid));
    // The route went with it: a new group is answered at once.
    r.raise(0x10, 2, 0x1000, true);
    p.intake();
    assert_eq!(p.stats().queued_responses, 1);
    // An older incarnation's late call changes nothing.
    assert_eq!(
        p.respond(VM, &[(c, Resp::Invalid)]),
        (0, RespondStop::UnknownCookie)
    );
}

/// Raises `n` entries in chunks the 16-entry queue holds, reading after
/// each chunk.
fn feed(r: &Rig, p: &mut Prq<Regs, Mem>, entries: &[(u32, u16, bool)]) {
    for chunk in entries.chunks(8) {
        for &(sid, prgi, last) in chunk {
            r.raise(sid, prgi, 0x1000, last);
        }
        p.intake();
    }
}

#[test]
fn partial_groups_alone_cannot_stop_intake() {
    use crate::prq::MAX_GROUPS;
    let r = Rig::new();
    let mut p = r.prq();
    p.set_route(0x10, 0, VM, true).unwrap();
    // A device that never sends Last fills the table with partial groups.
    let partials: Vec<_> = (0..MAX_GROUPS as u16 + 8)
        .map(|g| (0x30, g, false))
        .collect();
    feed(&r, &mut p, &partials);
    assert_eq!(p.stats().partial_groups, MAX_GROUPS as u32);
    assert!(p.stats.partial_evictions >= 8);
    // Another device's group still gets through.
    feed(&r, &mut p, &[(0x10, 1, true)]);
    let mut out = empty_out();
    assert_eq!(p.fetch_faults(VM, &mut out).0, 1);
}

#[test]
fn owners_that_never_fetch_cannot_take_the_whole_table() {
    use crate::prq::MAX_GROUPS;
    let r = Rig::new();
    let mut p = r.prq();
    let hog = TaskId::new(6, Generation(0));
    let hog2 = TaskId::new(7, Generation(0));
    p.set_route(0x10, 0, VM, true).unwrap();
    p.set_route(0x11, 0, hog, true).unwrap();
    p.set_route(0x12, 0, hog2, true).unwrap();
    // Two hogs' devices raise far more groups than the table holds; their
    // owners never fetch (their two queues alone would hold the whole
    // table). Answers are taken: iommu-server keeps up.
    let mut resp = empty_resp();
    let mut issued = 0;
    for round in 0..6u16 {
        for sid in [0x11, 0x12] {
            let g: Vec<_> = (0..60u16)
                .map(|k| (sid, (round * 60 + k) % 512, true))
                .collect();
            feed(&r, &mut p, &g);
            let (_, _, seq) = p.take_responses(issued, &mut resp);
            if seq != 0 {
                issued = seq;
            }
        }
    }
    let held = p.stats().queued_groups;
    assert!(held < MAX_GROUPS as u32, "hogs hold {held}");
    // iommu-server acknowledges its last hand-over (its next pull).
    let (_, _, seq) = p.take_responses(issued, &mut resp);
    p.take_responses(seq.max(issued), &mut resp);
    // The other owner is still served.
    feed(&r, &mut p, &[(0x10, 7, true)]);
    let mut out = empty_out();
    assert_eq!(p.fetch_faults(VM, &mut out).0, 1);
    // The hog is told what it lost.
    let (_, lost) = p.fetch_faults(hog, &mut out);
    assert!(lost > 0);
}

#[test]
fn the_server_state_fits_a_small_task() {
    // The image keeps the state in main's frame: app.toml's stack for
    // prq-server must hold it (docs/faults.md).
    let n = core::mem::size_of::<Prq<Regs, Mem>>();
    std::eprintln!("Prq state: {n} bytes");
    assert!(n < 32 * 1024, "{n} bytes");
}

#[test]
fn a_drain_is_complete_only_once_the_queue_was_read_past_its_snapshot() {
    use crate::prq::MAX_GROUPS;
    let r = Rig::new();
    let mut p = r.prq();
    p.set_route(0x10, 0, VM, true).unwrap();
    // Unrouted groups, answered at once, fill the table (iommu-server has
    // not taken them yet).
    let noise: Vec<_> = (0..MAX_GROUPS as u16).map(|g| (0x30, g, true)).collect();
    feed(&r, &mut p, &noise);
    assert_eq!(p.stats().queued_responses, MAX_GROUPS as u32);
    r.raise(0x10, 1, 0x1000, true);
    let mut out = empty_resp();
    let (n, _, complete, _) = p.drain(0x10, 0, false, 0, &mut out);
    assert_eq!((n, complete), (0, false));
    // iommu-server issues what waits (its pump), then drains again.
    let mut issued = 0;
    loop {
        let (k, more, seq) = p.take_responses(issued, &mut out);
        if k > 0 {
            issued = seq;
        }
        if !more {
            break;
        }
    }
    let (n, _, complete, _) = p.drain(0x10, 0, false, issued, &mut out);
    assert_eq!((n, complete), (1, true));
    assert_eq!((out[0].key.tag, out[0].resp), (1, Resp::Invalid));
}

/// GERROR.EVENTQ_ABT_ERR (reported by iommu-server): the records written
/// up to PROD are delivered, and every VM owning a stream — one that never
/// had a record too — reports `lost` once, on its next fetch_events.
#[test]
fn an_event_queue_abort_reports_lost_to_every_stream_owner_once() {
    use crate::mem::EVTQ_OFF;
    use crate::prq::EventRec;
    use smmuv3::{Event, EventId, EVENTQ_ENTRY_BYTES};
    const VM2: TaskId = TaskId::new(5, Generation(0));
    let r = Rig::new();
    let mut p = Prq::new(
        r.regs.clone(),
        r.mem.clone(),
        &Config {
            streams: &[(0x10, 4), (0x20, 5)],
            evtq_log2: 3,
            priq_log2: LOG2,
        },
    );
    // One record for 0x10 written before the abort (§7.2.2: valid up to PROD).
    let e = Event::new(EventId::FTranslation, 0x10, None);
    let prod = QueuePtr::from_raw(3, r.regs.read32(offset::EVENTQ_PROD));
    let off = EVTQ_OFF + prod.entry_offset(EVENTQ_ENTRY_BYTES);
    for (k, w) in e.words().iter().enumerate() {
        r.mem.write64(off + 8 * k, *w);
    }
    r.regs.write32(offset::EVENTQ_PROD, prod.advance(1).raw());
    assert_eq!(p.event_records_lost(1), 1);
    let mut out = [EventRec::default(); 32];
    let (n, lost) = p.fetch_events(VM, &mut out);
    assert_eq!((n, lost, out[0].sid, out[0].event_id), (1, 1, 0x10, 0x10));
    assert_eq!(p.fetch_events(VM, &mut out), (0, 0));
    assert_eq!(p.fetch_events(VM2, &mut out), (0, 1));
    assert_eq!(p.fetch_events(VM2, &mut out), (0, 0));
    // A task owning no stream hears nothing.
    let other = TaskId::new(6, Generation(0));
    assert_eq!(p.fetch_events(other, &mut out), (0, 0));
}

/// A benchmark-sized instance (`Prq::init_at`, const sizes 6 144 / 64 /
/// 64): groups of 64 streams arriving interleaved are kept apart by the
/// partial-group index, each owner (found by task index) gets its own,
/// 2 048 more are delivered, and every group is answered exactly once
/// through the handed list, leaving every slot free again.
#[test]
fn a_large_instance_keeps_interleaved_groups_apart_and_answers_each_once() {
    use crate::mem::region_size;
    use crate::prq::State;
    use std::boxed::Box;
    const G: usize = 6144;
    const N: usize = 64;
    const Q: u32 = 8;
    let regs = Regs::default();
    let mem = Mem(Rc::new(RefCell::new(vec![0; region_size(G, N) / 8])));
    let mut place = Box::<Prq<Regs, Mem, G, N, N>>::new_uninit();
    let cfg = Config {
        streams: &[],
        evtq_log2: 3,
        priq_log2: Q,
    };
    // SAFETY: the box is valid for writes and aligned; `init_at`
    // initialises it.
    let mut p = unsafe {
        Prq::init_at(place.as_mut_ptr(), regs.clone(), mem.clone(), &cfg);
        place.assume_init()
    };
    let raise = |sid: u32, prgi: u16, addr: u64, last: bool| {
        let prod = QueuePtr::from_raw(Q, regs.read32(offset::PRIQ_PROD));
        let mut e = PriEntry::new(sid, None, prgi, addr);
        e.set_read(true).set_last(last);
        let off = PRIQ_OFF + prod.entry_offset(PRIQ_ENTRY_BYTES);
        mem.write64(off, e.word(0));
        mem.write64(off + 8, e.word(1));
        regs.write32(offset::PRIQ_PROD, prod.advance(1).raw());
    };
    let vm = |k: usize| TaskId::new(k, Generation(0));
    for k in 0..N {
        p.set_route(0x10 + k as u32, 0, vm(k), true).unwrap();
    }
    // Two pages per group, the streams interleaved.
    for k in 0..N {
        raise(0x10 + k as u32, 3, 0x1000 * (k as u64 + 1), false);
    }
    for k in 0..N {
        raise(0x10 + k as u32, 3, 0x10_0000 + 0x1000 * k as u64, true);
    }
    p.intake();
    let mut out = empty_out();
    let mut cookies = Vec::new();
    for k in 0..N {
        assert_eq!(p.fetch_faults(vm(k), &mut out), (2, 0), "owner {k}");
        assert_eq!(out[0].key.sid, 0x10 + k as u32);
        assert_eq!(out[0].page.addr, 0x1000 * (k as u64 + 1));
        assert_eq!(out[1].page.addr, 0x10_0000 + 0x1000 * k as u64);
        assert_eq!(out[0].cookie, out[1].cookie);
        cookies.push((k, out[0].cookie));
    }
    // 2 048 more single-page groups, delivered.
    for b in 0..32u16 {
        for k in 0..N {
            raise(0x10 + k as u32, 10 + b, 0x2000, true);
        }
        p.intake();
        for k in 0..N {
            assert_eq!(p.fetch_faults(vm(k), &mut out), (1, 0));
            cookies.push((k, out[0].cookie));
        }
    }
    assert_eq!(p.stats().delivered_groups, 64 + 2048);
    // Answered in batches, each hand-over acknowledged by the next take.
    let mut resp = empty_resp();
    let mut issued = 0;
    let mut answered = std::collections::HashSet::new();
    for chunk in cookies.chunks(64) {
        for &(k, c) in chunk {
            assert_eq!(
                p.respond(vm(k), &[(c, Resp::Success)]).1,
                RespondStop::Complete
            );
        }
        let (n, more, seq) = p.take_responses(issued, &mut resp);
        assert_eq!((n, more), (64, false));
        for r in &resp[..n] {
            assert!(answered.insert((r.key.sid, r.key.tag)), "answered twice");
        }
        issued = seq;
    }
    assert_eq!(answered.len(), 64 + 2048);
    assert_eq!(p.take_responses(issued, &mut resp).0, 0);
    assert!(p.slots.iter().all(|s| s.state == State::Free));
    // A cookie answered before is refused now.
    let (k, c) = cookies[0];
    assert_eq!(
        p.respond(vm(k), &[(c, Resp::Success)]),
        (0, RespondStop::UnknownCookie)
    );
}

/// A death learnt late or replayed (a restarted prq-server reads the
/// supervisor's log from its start) is generation-exact: the owner entry
/// is the task index's, and a later incarnation's queued group in it
/// stays, fetchable by that incarnation.
#[test]
fn a_replayed_death_leaves_the_next_incarnations_groups() {
    let r = Rig::new();
    let mut p = r.prq();
    let next = TaskId::new(4, Generation(1));
    p.set_route(0x10, 0, VM, true).unwrap();
    // iommu-server routes the stream to the next incarnation.
    p.set_route(0x10, 0, next, true).unwrap();
    r.raise(0x10, 1, 0x1000, true);
    p.intake();
    assert_eq!(p.stats().queued_groups, 1);
    assert_eq!(p.owner_died(VM), 0);
    let mut out = empty_out();
    assert_eq!(p.fetch_faults(next, &mut out).0, 1);
    assert_eq!(p.respond(next, &[(out[0].cookie, Resp::Success)]).0, 1);
}
