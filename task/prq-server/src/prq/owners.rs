//! The owners' side: `fetch_faults` and `fetch_events` from the owner
//! queues, and `respond` by cookie.

use super::*;

impl<M: Mmio, Q: QueueMemory, const G: usize, const R: usize, const O: usize> Prq<M, Q, G, R, O> {
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

    pub(super) fn pop_owner(&mut self, k: usize) {
        let o = &mut self.owners[k];
        o.head = (o.head + 1) % OWNER_QUEUE;
        o.len -= 1;
    }

    pub(super) fn slot_of_cookie(&self, caller: TaskId, cookie: u64) -> Option<usize> {
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
}
