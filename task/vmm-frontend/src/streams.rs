//! Stream configuration: set_ste (abort, stage 2 only, nested), binds
//! and unbinds, and what they share (moving a stream between domains,
//! unbinding every user of a bind, forgetting drained state).

use super::*;

impl Frontend {
    /// Unbinds every user of bind `bi` in iommu-server (each unbind
    /// returns after the drain) and forgets it.
    pub(crate) fn unbind_all(&mut self, bi: usize) -> Result<(), E> {
        let Some(b) = self.binds[bi] else {
            return Ok(());
        };
        let s = self.stream(b.stream as usize);
        let host = self
            .host_pasid(b.guest)
            .map(|h| h.pasid)
            .unwrap_or(aapi::Pasid(0));
        let iommu = self.iommu();
        for _ in 0..=b.users {
            match iommu.unbind(iapi::StreamId(s.psid), host, false) {
                Ok(iapi::UnbindOutcome::StillBound) => continue,
                Ok(_) => break,
                Err(e) => return Err(iommu_err(e)),
            }
        }
        self.binds[bi] = None;
        self.forget_drained(s.psid, Some(host.0));
        Ok(())
    }

    /// The drain of (psid, PASID) — every PASID with None — answered and
    /// revoked the groups delivered from it: forget their cookies.
    pub(crate) fn forget_drained(&mut self, psid: u32, pasid: Option<u32>) {
        for d in self.delivered.iter_mut() {
            if matches!(d, Some(x) if x.psid == psid && pasid.is_none_or(|p| p == x.pasid)) {
                *d = None;
            }
        }
    }

    /// Takes stream `i` off whatever it was attached to (binds dropped
    /// and drained by iommu-server's detach), destroys its nested domain.
    pub(crate) fn detach_stream(&mut self, i: usize) -> Result<(), E> {
        let s = self.stream(i);
        let iommu = self.iommu();
        if s.mode != Mode::Abort {
            match iommu.detach(iapi::StreamId(s.psid)) {
                Ok(_) | Err(IommuError::NotFound) => {}
                Err(e) => return Err(iommu_err(e)),
            }
        }
        for b in self.binds.iter_mut() {
            if matches!(b, Some(b) if b.stream as usize == i) {
                *b = None;
            }
        }
        self.forget_drained(s.psid, None);
        if let Mode::GuestTable { domain, .. } = s.mode {
            let _ = iommu.destroy_domain(domain);
        }
        if let Some(st) = self.streams[i].as_mut() {
            st.mode = Mode::Abort;
        }
        Ok(())
    }

    /// Moves stream `i` to `domain` (attach, or replace when attached).
    pub(crate) fn put_on(&mut self, i: usize, domain: iapi::DomainId) -> Result<(), E> {
        let s = self.stream(i);
        let iommu = self.iommu();
        let sid = iapi::StreamId(s.psid);
        if s.mode == Mode::Abort {
            iommu.attach(sid, domain).map_err(iommu_err)?;
        } else {
            iommu.replace(sid, domain).map_err(iommu_err)?;
            // A replace answers the old domain's groups of the stream
            // (prq-server revokes their cookies).
            self.forget_drained(s.psid, Some(0));
        }
        Ok(())
    }

    // ---- operations -------------------------------------------------------

    pub fn set_ste(&mut self, vsid: u32, mode: api::GuestSteMode) -> Result<(), E> {
        let i = self.stream_idx(vsid)?;
        let s = self.stream(i);
        let has_binds = self
            .binds
            .iter()
            .any(|b| matches!(b, Some(b) if b.stream as usize == i));
        match mode {
            api::GuestSteMode::Abort => self.detach_stream(i),
            api::GuestSteMode::S2Only => {
                if has_binds {
                    return Err(E::Busy);
                }
                let s2 = self.ready()?;
                if s.mode == Mode::S2Only {
                    return Ok(());
                }
                self.put_on(i, s2)?;
                if let Mode::GuestTable { domain, .. } = s.mode {
                    let _ = self.iommu().destroy_domain(domain);
                }
                self.set_mode(i, Mode::S2Only);
                Ok(())
            }
            api::GuestSteMode::Nested {
                fault_capable,
                cd_max_bits,
                cd_table_ipa,
            } => {
                let s2 = self.ready()?;
                if cd_max_bits > self.pasid_bits() {
                    return Err(E::Invalid);
                }
                let table = CD_BYTES << cd_max_bits;
                if cd_table_ipa != 0
                    && (cd_table_ipa % CD_BYTES != 0 || !self.in_ram(cd_table_ipa, table))
                {
                    return Err(E::Invalid);
                }
                if has_binds {
                    return Err(E::Busy);
                }
                if cd_table_ipa == 0 {
                    // Host-side CDs: the stream sits on the S2 domain and
                    // `bind` installs the guest's contexts.
                    if !matches!(s.mode, Mode::S2Only | Mode::Binds { .. }) {
                        self.put_on(i, s2)?;
                        if let Mode::GuestTable { domain, .. } = s.mode {
                            let _ = self.iommu().destroy_domain(domain);
                        }
                    }
                    self.set_mode(
                        i,
                        Mode::Binds {
                            fault_capable,
                            cd_max_bits,
                        },
                    );
                    return Ok(());
                }
                let vste = iapi::NestedSte {
                    cd_table_ipa,
                    s1cdmax: cd_max_bits,
                    s1fmt: iapi::CdTableFormat::Linear,
                    s1dss: iapi::SubstreamDefault::Terminate,
                };
                let iommu = self.iommu();
                let d = iommu
                    .create_nested_domain(s2, vste, fault_capable)
                    .map_err(iommu_err)?;
                if let Err(e) = self.put_on(i, d) {
                    let _ = iommu.destroy_domain(d);
                    return Err(e);
                }
                if let Mode::GuestTable { domain, .. } = s.mode {
                    let _ = iommu.destroy_domain(domain);
                }
                self.set_mode(
                    i,
                    Mode::GuestTable {
                        fault_capable,
                        cd_max_bits,
                        cd_table_ipa,
                        domain: d,
                    },
                );
                Ok(())
            }
        }
    }

    pub(crate) fn set_mode(&mut self, i: usize, mode: Mode) {
        if let Some(s) = self.streams[i].as_mut() {
            s.mode = mode;
        }
    }

    pub fn bind(
        &mut self,
        vsid: u32,
        guest: u32,
        cd: iapi::CdConfig,
        fault_capable: bool,
    ) -> Result<u32, E> {
        let i = self.stream_idx(vsid)?;
        let Mode::Binds {
            fault_capable: stream_fc,
            cd_max_bits,
        } = self.stream(i).mode
        else {
            // Abort / S2Only have no contexts; a guest-owned CD table holds
            // its own.
            return Err(E::Invalid);
        };
        let host = self.host_pasid(guest).ok_or(E::NotFound)?;
        if (guest as u64) >> cd_max_bits != 0 {
            return Err(E::Invalid);
        }
        // The guest's stage-1 table must be its own RAM (stage 2 would
        // fault anyway; say so now).
        if !self.in_ram(cd.ttb0 & !(PAGE - 1), PAGE) {
            return Err(E::Invalid);
        }
        let existing = self.bind_idx(i, guest);
        let slot = match existing {
            Some(b) => b,
            None => self
                .binds
                .iter()
                .position(|b| b.is_none())
                .ok_or(E::NoSpace)?,
        };
        let users = self
            .iommu()
            .bind(
                iapi::StreamId(self.stream(i).psid),
                host,
                cd,
                fault_capable && stream_fc,
            )
            .map_err(iommu_err)?;
        self.binds[slot] = Some(Bind {
            stream: i as u8,
            guest,
            users,
        });
        Ok(users)
    }

    pub fn unbind(
        &mut self,
        vsid: u32,
        guest: u32,
        uses_stop_marker: bool,
    ) -> Result<iapi::UnbindOutcome, E> {
        let i = self.stream_idx(vsid)?;
        let host = self.host_pasid(guest).ok_or(E::NotFound)?;
        let Some(bi) = self.bind_idx(i, guest) else {
            return Ok(iapi::UnbindOutcome::NotBound);
        };
        let out = self
            .iommu()
            .unbind(
                iapi::StreamId(self.stream(i).psid),
                host.pasid,
                uses_stop_marker,
            )
            .map_err(iommu_err)?;
        match out {
            iapi::UnbindOutcome::StillBound => {
                if let Some(b) = self.binds[bi].as_mut() {
                    b.users = b.users.saturating_sub(1);
                }
            }
            _ => {
                self.binds[bi] = None;
                self.forget_drained(self.stream(i).psid, Some(host.pasid.0));
            }
        }
        Ok(out)
    }
}
