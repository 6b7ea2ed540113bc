//! The journal in the `prq-queues` region and restart recovery: every
//! slot and route change is persisted; a new incarnation reads it back.

use super::*;

impl<M: Mmio, Q: QueueMemory, const G: usize, const R: usize, const O: usize> Prq<M, Q, G, R, O> {
    pub(super) fn persist_header(&self) {
        self.mem.write64(
            JOURNAL_OFF + 8,
            self.take_seq as u64 | (self.incarnation as u64) << 32,
        );
    }

    /// Writes slot `i`'s journal record: words 1 and 2 first, word 0 (the
    /// state) last, so a record is never seen in a new state with old
    /// contents.
    pub(super) fn persist(&self, i: usize) {
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
    pub(super) fn persist_route(&self, k: usize) {
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
    pub(super) fn recover(&mut self) {
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
}
