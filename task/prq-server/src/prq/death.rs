//! Drain (unbind / detach) and owner death: an attachment's or a dead
//! owner's groups answered, its routes removed.

use super::*;

impl<M: Mmio, Q: QueueMemory, const G: usize, const R: usize, const O: usize> Prq<M, Q, G, R, O> {
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
}
