//! Routing a complete group to its owner's queue (with the share rule),
//! setting routes, and answering every group of an attachment.

use super::*;

impl<M: Mmio, Q: QueueMemory, const G: usize, const R: usize, const O: usize> Prq<M, Q, G, R, O> {
    pub(super) fn owner_mut(&mut self, task: usize, create: bool) -> Option<&mut Owner> {
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

    pub(super) fn route(&self, sid: u32, ssid: Option<u32>) -> Option<Route> {
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

    pub(super) fn att_of(key: &Key) -> (u32, u32) {
        (key.sid, key.ssid.unwrap_or(0))
    }

    /// A complete group (Last seen, or a stall): route it.
    pub(super) fn complete(&mut self, i: usize) {
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
    pub(super) fn over_share(&self, task: usize) -> bool {
        if self.free >= G / 4 {
            return false;
        }
        let owners = self.nowners.max(1);
        self.held.get(task).copied().unwrap_or(0) as usize >= G / (2 * owners)
    }

    pub(super) fn add_page(&mut self, i: usize, page: Page) {
        let s = &mut self.slots[i];
        if (s.n as usize) < GROUP_PAGES {
            s.pages[s.n as usize] = page;
            s.n += 1;
        } else {
            s.truncated = true;
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

    /// Answers INVALID every group of (sid, pasid) that is queued or
    /// delivered (cookie revoked), and orphans its partial groups (their
    /// Last is answered INVALID on arrival). Returns groups answered.
    pub(super) fn answer_attachment(&mut self, sid: u32, pasid: u32, forget_partials: bool) -> u32 {
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
    pub(super) fn unqueue(&mut self, i: usize) {
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
}
