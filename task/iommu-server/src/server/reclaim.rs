//! Owners: reclaiming a dead VM's objects.

use super::*;

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// Reclaims everything a dead VM owned: its contexts are unbound, its
    /// streams go abort, its domains are destroyed. `vm` names the
    /// generation that died: objects the VM's next generation already
    /// created (it may have restarted before the death was pulled) are not
    /// touched. No client can ask for it (it is not an operation): the
    /// death watch (`death.rs`) runs it for each death the supervisor
    /// logged, and for the resync after the log overflowed.
    pub fn reclaim_dead(&mut self, vm: TaskId) -> Reclaimed {
        let mut r = Reclaimed::default();
        for si in 0..MAX_STREAMS {
            let Some(st) = self.streams[si] else { continue };
            // Streams are the VM's by static assignment (index); only an
            // attachment to a domain of the dead generation is reclaimed.
            let dead_attachment = st
                .attached
                .and_then(|d| self.dom(d))
                .is_some_and(|d| d.owner == vm);
            if st.owner as usize != vm.index() || !dead_attachment {
                continue;
            }
            r.binds += self.unbind_all(si).unwrap_or(0);
            #[allow(unused_mut)]
            let mut gone = crate::strtab::abort_ste();
            // Test-only mutant (explore-mutant-i4): the dead owner's
            // stream left in bypass.
            #[cfg(feature = "explore-mutant-i4")]
            gone.set_config(smmuv3::StreamConfig::Bypass);
            if self.smmu.write_ste(st.sid, &gone).is_err() {
                self.fail_closed(si);
            } else {
                self.release_old(st.attached, st.sid, UpdateKind::NoChange);
                if let Some(s) = self.stream_mut(si) {
                    s.attached = None;
                }
            }
            // Either way the stream aborts now: its own attachment's
            // groups are answered INVALID (its binds' by their unbinds).
            self.fault_aborted(st.sid);
            r.streams += 1;
        }
        // Nested domains first (they hold their parents).
        for pass in 0..2 {
            for i in 0..MAX_DOMAINS {
                let Some(d) = self.dom(i) else { continue };
                let nested = matches!(d.inner, Inner::Nested { .. });
                if d.owner == vm && (pass == 1 || nested) && self.destroy_idx(i).is_ok() {
                    r.domains += 1;
                }
            }
        }
        r
    }
}
