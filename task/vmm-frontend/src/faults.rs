//! Page requests and stalls in the guest's names: fetch (SID -> vSID, host
//! -> guest PASID, cookies passed through), the delivered set, respond.

use super::*;

impl Frontend {
    /// A fault record in guest names, or None when it names nothing of the
    /// guest's (a host PASID it no longer maps).
    pub fn guest_fault(&self, r: &papi::FaultRecord) -> Option<api::GuestFault> {
        let i = self
            .streams
            .iter()
            .position(|s| matches!(s, Some(s) if s.psid == r.sid.0))?;
        let s = self.stream(i);
        let pasid = if r.flags.contains(papi::FaultFlags::PASID_VALID) {
            match s.mode {
                Mode::GuestTable { .. } => r.pasid.0,
                _ => self.guest_pasid(r.pasid.0)?,
            }
        } else {
            0
        };
        Some(api::GuestFault {
            cookie: r.cookie,
            vsid: api::VirtStreamId(s.vsid),
            pasid: api::GuestPasid(pasid),
            kind: r.kind,
            group: r.group,
            addr: r.addr,
            perm: r.perm,
            flags: r.flags,
        })
    }

    pub fn fetch_faults(
        &mut self,
        out: &Leased<Write, api::GuestFault>,
    ) -> Result<papi::FetchOutcome, E> {
        let Some(prq) = self.prq() else {
            return Err(E::Unsupported);
        };
        let free = self.delivered.iter().filter(|c| c.is_none()).count();
        let max = out.len().min(MAX_FETCH).min(free);
        if max == 0 {
            return Ok(papi::FetchOutcome { count: 0, lost: 0 });
        }
        let mut buf = [<papi::FaultRecordWire as zerocopy::FromZeros>::new_zeroed(); MAX_FETCH];
        let o = prq.fetch_faults(&mut buf[..max]).map_err(|_| E::Again)?;
        let mut count = 0;
        let mut refuse: [Option<papi::Cookie>; MAX_FETCH] = [None; MAX_FETCH];
        for w in buf[..(o.count as usize).min(max)].iter() {
            let Some(r) = <papi::FaultRecord as idl_runtime::Fixed>::from_wire(w) else {
                continue;
            };
            match self.guest_fault(&r) {
                Some(g) => {
                    if out.write(count, &g).is_err() {
                        // The guest went away mid-call: its delivered
                        // faults are answered by the death reclaim.
                        self.note_delivered(&r);
                        continue;
                    }
                    count += 1;
                    self.note_delivered(&r);
                }
                None => {
                    if !refuse.contains(&Some(r.cookie)) {
                        if let Some(f) = refuse.iter_mut().find(|c| c.is_none()) {
                            *f = Some(r.cookie);
                        }
                    }
                }
            }
        }
        // Groups of a PASID the guest no longer holds: answered Invalid
        // here, never shown with a host PASID.
        for c in refuse.iter().flatten() {
            let e = idl_runtime::Fixed::to_wire(&papi::ResponseEntry {
                cookie: *c,
                response: papi::FaultResponse::Invalid,
            });
            let _ = prq.respond(&[e]);
        }
        Ok(papi::FetchOutcome {
            count: count as u32,
            lost: o.lost,
        })
    }

    pub(crate) fn note_delivered(&mut self, r: &papi::FaultRecord) {
        if self.is_delivered(r.cookie) {
            return;
        }
        let pasid = if r.flags.contains(papi::FaultFlags::PASID_VALID) {
            r.pasid.0
        } else {
            0
        };
        if let Some(s) = self.delivered.iter_mut().find(|d| d.is_none()) {
            *s = Some(Delivered {
                cookie: r.cookie,
                psid: r.sid.0,
                pasid,
            });
        }
    }

    pub(crate) fn is_delivered(&self, c: papi::Cookie) -> bool {
        self.delivered.iter().flatten().any(|d| d.cookie == c)
    }

    pub fn respond(
        &mut self,
        responses: &Leased<Read, papi::ResponseEntry>,
    ) -> Result<papi::RespondOutcome, E> {
        let Some(prq) = self.prq() else {
            return Err(E::Unsupported);
        };
        let n = responses.len().min(MAX_FETCH);
        let mut wires = [idl_runtime::Fixed::to_wire(&papi::ResponseEntry {
            cookie: papi::Cookie(0),
            response: papi::FaultResponse::Invalid,
        }); MAX_FETCH];
        let mut k = 0;
        let mut stop = papi::RespondStatus::Complete;
        while k < n {
            let r = responses.read(k).map_err(|_| E::Invalid)?;
            if !matches!(
                r.response,
                papi::FaultResponse::Success | papi::FaultResponse::Invalid
            ) {
                stop = papi::RespondStatus::NotAllowed;
                break;
            }
            if !self.is_delivered(r.cookie) {
                stop = papi::RespondStatus::UnknownCookie;
                break;
            }
            wires[k] = idl_runtime::Fixed::to_wire(&r);
            k += 1;
        }
        if k == 0 {
            return Ok(papi::RespondOutcome {
                done: 0,
                status: stop,
            });
        }
        let o = prq.respond(&wires[..k]).map_err(|_| E::Again)?;
        // Answered ones are done; one prq-server no longer knows (revoked
        // by a drain meanwhile: answered Invalid there) is done too.
        let gone = match o.status {
            papi::RespondStatus::UnknownCookie => (o.done as usize + 1).min(k),
            _ => (o.done as usize).min(k),
        };
        for w in &wires[..gone] {
            if let Some(r) = <papi::ResponseEntry as idl_runtime::Fixed>::from_wire(w) {
                self.forget_delivered(r.cookie);
            }
        }
        let status = if o.status == papi::RespondStatus::Complete && k < n {
            stop
        } else {
            o.status
        };
        Ok(papi::RespondOutcome {
            done: o.done,
            status,
        })
    }

    pub(crate) fn forget_delivered(&mut self, c: papi::Cookie) {
        for d in self.delivered.iter_mut() {
            if matches!(d, Some(x) if x.cookie == c) {
                *d = None;
            }
        }
    }
}
