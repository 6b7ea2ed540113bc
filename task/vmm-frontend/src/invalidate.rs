//! The guest's invalidation commands: each checked against the allowed
//! kinds and the VM's own streams and PASIDs, rewritten to physical names
//! (docs/vmm-frontend.md, the validation table), issued as one batch.

use super::*;

impl Frontend {
    /// Checks one guest command and rewrites it for iommu-server: the
    /// stream stays virtual (iommu-server translates the VM's vSIDs and
    /// forces its VMID), the SubstreamID becomes the host PASID on a
    /// stream whose contexts `bind` installed (on a guest-owned CD table
    /// it is the guest's own index, checked against its size).
    pub fn check_command(&self, words: [u64; 2]) -> Result<Command, api::InvalidateRefusal> {
        use api::InvalidateRefusal as R;
        let c = Command::from_words(words);
        let kind = c.decode().map_err(|_| R::Opcode)?;
        let ssid_of = |vsid: u32, ssid: u32| -> Result<u32, R> {
            let i = self.stream_idx(vsid).map_err(|_| R::Stream)?;
            if ssid == 0 {
                return Ok(0);
            }
            match self.stream(i).mode {
                Mode::GuestTable { cd_max_bits, .. } => {
                    if (ssid as u64) >> cd_max_bits == 0 {
                        Ok(ssid)
                    } else {
                        Err(R::Pasid)
                    }
                }
                _ => self.host_pasid(ssid).map(|h| h.pasid.0).ok_or(R::Pasid),
            }
        };
        let stream = |vsid: u32| self.stream_idx(vsid).map(|_| ()).map_err(|_| R::Stream);
        let ranged = |out: Command, s: &smmuv3::cmd::TlbiScope| {
            if s.tg == 0 {
                out
            } else {
                out.with_range(s.num, s.scale, s.tg, s.ttl)
            }
        };
        Ok(match kind {
            CommandKind::TlbiNhAll { .. } => Command::tlbi_nh_all(0),
            CommandKind::TlbiNhAsid { asid, .. } => Command::tlbi_nh_asid(0, asid),
            CommandKind::TlbiNhVa { asid, scope, .. } => {
                ranged(Command::tlbi_nh_va(0, asid, scope.addr, scope.leaf), &scope)
            }
            CommandKind::TlbiNhVaa { scope, .. } => {
                ranged(Command::tlbi_nh_vaa(0, scope.addr, scope.leaf), &scope)
            }
            CommandKind::CfgiCd { sid, ssid, leaf } => {
                // SSec names the Secure stream table: never a VM's (and
                // ILLEGAL on a Non-secure queue, IHI 0070 §4.1.6).
                if c.ssec() {
                    return Err(R::Field);
                }
                Command::cfgi_cd(sid, ssid_of(sid, ssid)?, leaf)
            }
            CommandKind::CfgiCdAll { sid } => {
                if c.ssec() {
                    return Err(R::Field);
                }
                stream(sid)?;
                Command::cfgi_cd_all(sid)
            }
            CommandKind::AtcInv {
                sid,
                ssid,
                addr,
                size,
                global,
            } => {
                if !self.caps.is_some_and(|c| c.ats) {
                    return Err(R::Unsupported);
                }
                let ssid = match ssid {
                    Some(s) => Some(ssid_of(sid, s)?),
                    None => {
                        stream(sid)?;
                        None
                    }
                };
                Command::atc_inv(sid, ssid, addr, size, global)
            }
            _ => return Err(R::Opcode),
        })
    }

    pub fn invalidate(
        &mut self,
        cmds: &Leased<Read, api::GuestCmd>,
    ) -> Result<api::GuestInvalidateOutcome, E> {
        let s2 = self.ready()?;
        let n = cmds.len();
        if n == 0 || n > MAX_BATCH {
            return Err(E::Invalid);
        }
        let mut out = [iapi::SmmuCmd { words: [0; 2] }; MAX_BATCH];
        let mut k = 0;
        let mut refusal = api::InvalidateRefusal::None;
        while k < n {
            let w = cmds.read(k).map_err(|_| E::Invalid)?;
            match self.check_command(w.words) {
                Ok(c) => out[k] = iapi::SmmuCmd { words: c.words() },
                Err(r) => {
                    refusal = r;
                    break;
                }
            }
            k += 1;
        }
        if k == 0 {
            return Ok(api::GuestInvalidateOutcome {
                done: 0,
                status: iapi::InvalidateStatus::Rejected,
                refusal,
            });
        }
        let wires: [<iapi::SmmuCmd as idl_runtime::Fixed>::Wire; MAX_BATCH] =
            core::array::from_fn(|j| idl_runtime::Fixed::to_wire(&out[j]));
        let r = self
            .iommu()
            .invalidate(s2, &wires[..k])
            .map_err(iommu_err)?;
        let (status, refusal) = match r.status {
            iapi::InvalidateStatus::Complete if k < n => {
                (iapi::InvalidateStatus::Rejected, refusal)
            }
            iapi::InvalidateStatus::Rejected => (
                iapi::InvalidateStatus::Rejected,
                api::InvalidateRefusal::Server,
            ),
            s => (s, api::InvalidateRefusal::None),
        };
        Ok(api::GuestInvalidateOutcome {
            done: r.done,
            status,
            refusal,
        })
    }
}
