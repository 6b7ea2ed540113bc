//! The virtual event queue: events of the VM's streams in guest names,
//! fixed depth, LOST counted.

use super::*;

impl Frontend {
    /// An event in guest names: StreamID → vSID, SubstreamID → guest PASID
    /// (dropped, SSV clear, when it names no guest PASID), and the words
    /// that carry host physical addresses (FetchAddr of F_STE_FETCH,
    /// F_CD_FETCH, F_WALK_EABT, F_VMS_FETCH) cleared. None: not one of
    /// this VM's streams.
    pub fn guest_event(&self, sid: u32, words: [u64; 4]) -> Option<VEvent> {
        let i = self
            .streams
            .iter()
            .position(|s| matches!(s, Some(s) if s.psid == sid))?;
        let s = self.stream(i);
        let mut e = Event::from_words(words);
        e.set_sid(s.vsid);
        if let Some(ssid) = e.substream() {
            let g = match s.mode {
                Mode::GuestTable { .. } => Some(ssid),
                _ => self.guest_pasid(ssid),
            };
            match g {
                Some(g) => {
                    e.set_ssid(g);
                }
                None => {
                    e.set_ssv(false).set_ssid(0);
                }
            }
        }
        let id = e.raw_event_id();
        let mut w = e.words();
        // F_STE_FETCH 0x03, F_CD_FETCH 0x09, F_WALK_EABT 0x0b, F_VMS_FETCH
        // 0x25 carry a physical FetchAddr in word 3; C_BAD_STE 0x04 etc.
        // carry nothing beyond word 1. Translation-class faults keep
        // InputAddr (a guest IOVA) and IPA (a guest address).
        match id {
            0x10..=0x13 => {}
            0x03 | 0x09 | 0x0b | 0x25 => w[3] = 0,
            _ => {
                w[2] = 0;
                w[3] = 0;
            }
        }
        Some(VEvent {
            vsid: s.vsid,
            event_id: id,
            words: w,
        })
    }

    /// Moves events from prq-server into the virtual event queue: when it
    /// is full a new event is dropped and counted LOST (the oldest stay, as
    /// the SMMU's own queue keeps them). Returns whether any event waits.
    pub fn pull_events(&mut self) -> bool {
        let Some(prq) = self.prq() else {
            return self.ev_len > 0;
        };
        for _ in 0..8 {
            let mut buf = [<papi::EventRecordWire as zerocopy::FromZeros>::new_zeroed(); 32];
            let Ok(o) = prq.fetch_events(&mut buf) else {
                break;
            };
            self.ev_lost = self.ev_lost.saturating_add(o.lost);
            for w in buf[..(o.count as usize).min(32)].iter() {
                let Some(r) = <papi::EventRecord as idl_runtime::Fixed>::from_wire(w) else {
                    continue;
                };
                let Some(ev) = self.guest_event(r.sid.0, r.words) else {
                    continue;
                };
                if self.ev_len == self.depth {
                    self.ev_lost = self.ev_lost.saturating_add(1);
                } else {
                    self.events[(self.ev_head + self.ev_len) % self.depth] = ev;
                    self.ev_len += 1;
                }
            }
            if (o.count as usize) < 32 {
                break;
            }
        }
        self.ev_len > 0
    }

    pub fn fetch_events(
        &mut self,
        out: &Leased<Write, api::GuestEvent>,
    ) -> Result<papi::FetchOutcome, E> {
        self.pull_events();
        let max = out.len().min(self.ev_len);
        for k in 0..max {
            let e = self.events[(self.ev_head + k) % self.depth];
            let g = api::GuestEvent {
                vsid: api::VirtStreamId(e.vsid),
                event_id: e.event_id,
                words: e.words,
            };
            if out.write(k, &g).is_err() {
                return Err(E::Invalid);
            }
        }
        self.ev_head = (self.ev_head + max) % self.depth;
        self.ev_len -= max;
        let lost = core::mem::take(&mut self.ev_lost);
        Ok(papi::FetchOutcome {
            count: max as u32,
            lost,
        })
    }

    // ---- server restarts ---------------------------------------------------
}
