//! iommu-server's side: responses handed over in numbered hand-overs,
//! acknowledged (freed) or handed out again.

use super::*;

impl<M: Mmio, Q: QueueMemory, const G: usize, const R: usize, const O: usize> Prq<M, Q, G, R, O> {
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

    /// iommu-server issued every hand-over up to `issued`: those slots are
    /// freed; later hand-overs never reached it (a previous incarnation
    /// died before its reply) and are queued again.
    ///
    /// Walks the handed slots only (in hand-over order), so its cost is
    /// that of the last hand-overs, not of the table.
    pub(super) fn acknowledge(&mut self, issued: u32) {
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

    pub(super) fn next_seq(&mut self) -> u32 {
        self.take_seq = self.take_seq.wrapping_add(1).max(1);
        self.persist_header();
        self.take_seq
    }
}
