//! Deaths and restarts around the frontend: its guest (reclaim
//! everything the guest made), iommu-server and pasid-alloc (what they
//! held is gone), read from the supervisor's death log.

use super::*;

impl Frontend {
    /// After a request failed with `Again`: learns whether a server behind
    /// the frontend restarted (its generation changed) and drops what the
    /// old incarnation held. A restarted iommu-server starts fail-closed
    /// (every STE abort, no domain): the stage-2 domain is made again at
    /// the next request, the streams are at abort, binds and guest-table
    /// domains are gone. A restarted pasid-alloc starts empty and
    /// iommu-server removes every PASID bind when it sees it: the guest
    /// PASIDs and binds are gone. For the guest it is a reset of what that
    /// server held: its next requests get NotFound / a stream at abort.
    pub fn refresh_peers(&mut self) {
        let p = self.peers.0;
        let now = userlib::sys_refresh_task_id(p.iommu);
        if now != p.iommu {
            self.iommu_lost(now);
        }
        if let Some(a) = p.pasids {
            let now = userlib::sys_refresh_task_id(a);
            if now != a {
                self.pasid_alloc_lost(now);
            }
        }
        if let Some(q) = p.prq {
            // prq-server recovers its queues from its journal: cookies
            // stay valid; only its id changes.
            self.peers.0.prq = Some(userlib::sys_refresh_task_id(q));
        }
    }

    /// iommu-server's incarnation the frontend knew is gone; `next` is the
    /// one to talk to.
    pub(crate) fn iommu_lost(&mut self, next: TaskId) {
        trace!(Vmm::IommuRestart, next.0);
        self.peers.0.iommu = next;
        self.s2 = None;
        self.vsids_set = false;
        self.caps = None;
        self.binds = [None; MAX_BINDS];
        for st in self.streams.iter_mut().flatten() {
            st.mode = Mode::Abort;
        }
    }

    /// pasid-alloc's incarnation the frontend knew is gone.
    pub(crate) fn pasid_alloc_lost(&mut self, next: TaskId) {
        self.peers.0.pasids = Some(next);
        self.pasids = [None; MAX_PASIDS];
        self.binds = [None; MAX_BINDS];
    }

    // ---- guest death ------------------------------------------------------

    /// Pulls the supervisor's death log; when the guest died (or the log
    /// overflowed and the guest is not the incarnation known), reclaims.
    pub fn pull_deaths(&mut self) {
        let Some(sup) = self.peers.0.supervisor.map(SupervisorClient::new) else {
            return;
        };
        for _ in 0..64 {
            let Ok(r) = sup.next_death(self.deaths_seen) else {
                return;
            };
            match r.kind {
                DeathKind::None => return,
                DeathKind::Died => {
                    if r.task == self.guest {
                        self.reset_guest();
                    }
                    // A server behind the frontend died: what it held is
                    // gone (see `refresh_peers`); its next incarnation is
                    // the one to talk to.
                    if r.task == self.peers.0.iommu {
                        self.iommu_lost(next_incarnation(r.task));
                    }
                    if Some(r.task) == self.peers.0.pasids {
                        self.pasid_alloc_lost(next_incarnation(r.task));
                    }
                }
                DeathKind::Overflowed => {
                    let now = sup.current_task(self.guest.index() as u16);
                    if now.is_ok_and(|t| t != self.guest) {
                        self.reset_guest();
                    }
                }
            }
            if r.next == self.deaths_seen {
                return;
            }
            self.deaths_seen = r.next;
        }
    }

    /// The guest is gone: its delivered faults are answered Invalid, its
    /// binds unbound (each after its drain), its PASIDs freed (returned to
    /// the pool by pasid-alloc once drained), its streams put to abort and
    /// its event queue emptied. The stage-2 domain and the RAM mapping
    /// stay (they are the VM's, not the guest's). Then the frontend expects
    /// the guest's next incarnation.
    pub fn reset_guest(&mut self) {
        if let Some(prq) = self.prq() {
            for c in self.delivered.iter_mut() {
                if let Some(Delivered { cookie, .. }) = c.take() {
                    let e = idl_runtime::Fixed::to_wire(&papi::ResponseEntry {
                        cookie,
                        response: papi::FaultResponse::Invalid,
                    });
                    // A revoked cookie (drained meanwhile) is UnknownCookie:
                    // it was answered by the drain.
                    let _ = prq.respond(&[e]);
                }
            }
        }
        self.delivered = [None; MAX_DELIVERED];
        for bi in 0..MAX_BINDS {
            let _ = self.unbind_all(bi);
            self.binds[bi] = None;
        }
        if let Some(alloc) = self.alloc() {
            for p in self.pasids.iter().flatten() {
                let _ = alloc.free(p.host);
            }
        }
        self.pasids = [None; MAX_PASIDS];
        for i in 0..MAX_STREAMS {
            if self.streams[i].is_some() {
                let _ = self.detach_stream(i);
                self.set_mode(i, Mode::Abort);
            }
        }
        self.ev_head = 0;
        self.ev_len = 0;
        self.ev_lost = 0;
        // The next incarnation: a request from it no longer resets.
        self.guest = next_incarnation(self.guest);
    }

    /// A request from `caller`, the guest: a newer incarnation than the
    /// one known means the old one died (its death may not have been
    /// pulled yet): reclaim first.
    pub fn check_guest(&mut self, caller: TaskId) -> bool {
        if caller.index() != self.guest.index() {
            return false;
        }
        if caller != self.guest {
            self.pull_deaths();
            if caller != self.guest {
                self.reset_guest();
                self.guest = caller;
            }
        }
        true
    }
}
