//! Group slots and the indices over them: the free-slot stack, the hash
//! of partial groups by key, the hash of routes by (stream, PASID), owner
//! entries by task index; freeing and answering a slot.

use super::*;

impl<M: Mmio, Q: QueueMemory, const G: usize, const R: usize, const O: usize> Prq<M, Q, G, R, O> {
    pub(super) fn alloc(&mut self, key: Key, owner: TaskId) -> Option<usize> {
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

    pub(super) fn bucket_of(key: &Key) -> usize {
        (key_hash(key) % G as u64) as usize
    }

    /// Enters partial slot `i` in the partial-group index.
    pub(super) fn partial_link(&mut self, i: usize) {
        let b = Self::bucket_of(&self.slots[i].key);
        self.pnext[i] = self.pbucket[b];
        self.pbucket[b] = i as u16;
    }

    /// Takes slot `i` out of the partial-group index (when it is there).
    pub(super) fn partial_unlink(&mut self, i: usize) {
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
    pub(super) fn partial_of(&self, key: &Key) -> Option<usize> {
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

    pub(super) fn route_bucket(sid: u32, pasid: u32) -> usize {
        (att_hash(sid, pasid) % R as u64) as usize
    }

    pub(super) fn route_link(&mut self, k: usize, sid: u32, pasid: u32) {
        let b = Self::route_bucket(sid, pasid);
        self.rnext[k] = self.rbucket[b];
        self.rbucket[b] = k as u16;
    }

    /// Removes route `k` (table, index and journal).
    pub(super) fn route_remove(&mut self, k: usize) {
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
    pub(super) fn route_index(&self, sid: u32, pasid: u32) -> Option<usize> {
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
    pub(super) fn owner_index(&self, task: usize) -> Option<usize> {
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
    pub(super) fn evict_partial(&mut self) -> bool {
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
    pub(super) fn release(&mut self, i: usize) {
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

    pub(super) fn push_resp(&mut self, i: usize) {
        // Cannot overflow: a slot is in the ring at most once.
        let at = (self.rhead + self.rlen) % G;
        self.resp_ring[at] = i as u16;
        self.rlen += 1;
    }

    /// Decides slot `i`'s answer and queues it for iommu-server.
    pub(super) fn answer(&mut self, i: usize, resp: Resp) {
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
}
