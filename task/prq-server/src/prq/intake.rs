//! Intake: the PRI queue (with IHI 0070 §8.1 overflow recovery) and the
//! event queue (§7.4 overflow; stall records become groups of one).

use super::*;

impl<M: Mmio, Q: QueueMemory, const G: usize, const R: usize, const O: usize> Prq<M, Q, G, R, O> {
    /// One PRI queue entry.
    pub(super) fn pri_entry(&mut self, e: &PriEntry) {
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
    pub(super) fn every_owner_lost_events(&mut self) {
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

    pub(super) fn stall_event(&mut self, e: &Event) {
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

    pub(super) fn route_event(&mut self, e: &Event) {
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
}
