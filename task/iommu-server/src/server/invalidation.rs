//! Guest invalidation commands: vSIDs, validation and issue.

use super::*;

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// Sets the virtual StreamID a VM's guest uses for its stream (guest
    /// invalidation commands name vSIDs). Default: vSID = pSID.
    pub fn set_vsid(&mut self, caller: TaskId, sid: u32, vsid: u32) -> Result<()> {
        let si = self.stream_idx(caller, sid)?;
        let owner = self.stream(si).owner;
        let clash =
            self.streams.iter().enumerate().any(
                |(i, s)| matches!(s, Some(s) if i != si && s.owner == owner && s.vsid == vsid),
            );
        if clash {
            return Err(Error::AlreadyExists);
        }
        if let Some(s) = self.stream_mut(si) {
            s.vsid = vsid;
        }
        Ok(())
    }

    /// The physical StreamID of the caller's vSID.
    pub(super) fn psid(&self, caller: TaskId, vsid: u32) -> Option<u32> {
        self.streams
            .iter()
            .flatten()
            .find(|s| s.owner as usize == caller.index() && s.vsid == vsid)
            .map(|s| s.sid)
    }

    /// Checks one guest command and rewrites it for the hardware: only
    /// TLBI_NH_{ALL,ASID,VA,VAA}, CFGI_CD, CFGI_CD_ALL and ATC_INV; VMID
    /// forced to `vmid`; vSID translated through the caller's streams;
    /// every other field rebuilt from the decoded command (no stray bits).
    pub fn validate_guest_command(
        &self,
        caller: TaskId,
        vmid: u16,
        cmd: &Command,
    ) -> Result<Command> {
        let kind = cmd.decode().map_err(|_| Error::Invalid)?;
        let ril = self.smmu.features.ril;
        let ranged = |c: Command, s: &smmuv3::cmd::TlbiScope| -> Result<Command> {
            if s.tg == 0 {
                Ok(c)
            } else if ril {
                Ok(c.with_range(s.num, s.scale, s.tg, s.ttl))
            } else {
                Err(Error::Invalid)
            }
        };
        let psid = |vsid: u32| self.psid(caller, vsid).ok_or(Error::NotFound);
        let ssid_ok = |ssid: u32| (ssid as u64) < (1u64 << self.smmu.features.ssid_bits);
        match kind {
            CommandKind::TlbiNhAll { .. } => Ok(Command::tlbi_nh_all(vmid)),
            CommandKind::TlbiNhAsid { asid, .. } => Ok(Command::tlbi_nh_asid(vmid, asid)),
            CommandKind::TlbiNhVa { asid, scope, .. } => ranged(
                Command::tlbi_nh_va(vmid, asid, scope.addr, scope.leaf),
                &scope,
            ),
            CommandKind::TlbiNhVaa { scope, .. } => {
                ranged(Command::tlbi_nh_vaa(vmid, scope.addr, scope.leaf), &scope)
            }
            CommandKind::CfgiCd { sid, ssid, leaf } if ssid_ok(ssid) => {
                Ok(Command::cfgi_cd(psid(sid)?, ssid, leaf))
            }
            CommandKind::CfgiCdAll { sid } => Ok(Command::cfgi_cd_all(psid(sid)?)),
            CommandKind::AtcInv {
                sid,
                ssid,
                addr,
                size,
                global,
            } if ssid.is_none_or(ssid_ok) && self.smmu.features.ats => {
                Ok(Command::atc_inv(psid(sid)?, ssid, addr, size, global))
            }
            _ => Err(Error::Invalid),
        }
    }

    /// Issues a VM's guest invalidation batch under its vIOMMU (the S2
    /// domain `viommu`, whose VMID is forced into every command). Commands
    /// are validated in order; the valid prefix is issued with one SYNC
    /// per [`BATCH_MAX`] commands, and a SYNC before each ATC_INV that
    /// follows other commands. Returns how many were done and, if not
    /// all, why the next one was refused.
    pub fn invalidate(
        &mut self,
        caller: TaskId,
        viommu: DomainId,
        cmds: &[Command],
    ) -> (u32, Result<()>) {
        let vmid = match self
            .domain_idx(caller, viommu)
            .map(|i| self.dom(i).map(|d| d.inner))
        {
            Ok(Some(Inner::S2 { vmid, .. })) => vmid,
            Ok(_) => return (0, Err(Error::Invalid)),
            Err(e) => return (0, Err(e)),
        };
        if cmds.len() > MAX_INVALIDATION {
            return (0, Err(Error::Invalid));
        }
        let mut out = [Command::zeroed(); MAX_INVALIDATION];
        let mut n = 0;
        let mut refused = Ok(());
        for c in cmds {
            match self.validate_guest_command(caller, vmid, c) {
                Ok(v) => {
                    out[n] = v;
                    n += 1;
                }
                Err(e) => {
                    refused = Err(e);
                    break;
                }
            }
        }
        if n == 0 {
            return (0, refused);
        }
        // An ATC_INV must not start before the TLB invalidations ahead of
        // it have completed (IHI 0070 §4.5.1: TLBI, SYNC, ATC_INV, SYNC),
        // so the batch is cut before each ATC_INV that follows another
        // command: every piece ends with its own CMD_SYNC.
        let mut base = 0;
        while base < n {
            let mut end = base + 1;
            let starts_piece = |i: usize| is_atc_inv(&out[i]) && !is_atc_inv(&out[i - 1]);
            while end < n && !starts_piece(end) {
                end += 1;
            }
            match self.smmu.issue(&out[base..end]) {
                Ok(()) => {}
                Err(IssueFailure::Refused(f)) => {
                    return ((base + f.index) as u32, Err(Error::HardwareError))
                }
                // The piece's guarantees are not met (an ATC invalidation
                // timed out, or the fetch kept aborting): none of it counts
                // as done. The interface reports which from the last fault
                // (`AtcTimeout` / `CommandError`).
                Err(IssueFailure::Incomplete(_)) => {
                    return (base as u32, Err(Error::HardwareError))
                }
                Err(IssueFailure::Timeout) => return (base as u32, Err(Error::Timeout)),
            }
            base = end;
        }
        (n as u32, refused)
    }
}

fn is_atc_inv(c: &Command) -> bool {
    c.opcode() == Ok(smmuv3::Opcode::AtcInv)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{Error, IommuServer, ServerConfig};
    use smmuv3::{CmdqError, Command, Opcode};
    use userlib::abi::Generation;
    use userlib::TaskId;

    /// A guest batch whose ATC_INV cannot be completed (CERROR_ATC_INV_SYNC):
    /// the TLBI ahead of it is done and synced on its own, the ATC_INV is
    /// not counted, and the fault says why (the interface's `AtcTimeout`).
    #[test]
    fn atc_inv_after_its_own_sync_and_not_counted_when_it_times_out() {
        let mem = HostMem::new(0x4010_0000, 0x40000);
        let f = FakeSmmu::with_idrs(mem.clone(), QEMU_IDR0 | 1 << 10, QEMU_IDR1, QEMU_IDR5);
        let vm = TaskId::new(3, Generation(0));
        let cfg = ServerConfig {
            streams: &[(0x10, 3)],
            event_queue: false,
            ..ServerConfig::default()
        };
        let mut s = IommuServer::new(f.clone(), mem, SpinWaiter, &cfg).unwrap();
        let d = s.alloc_s2_domain(vm, false).unwrap();
        f.take_log();
        f.st.borrow_mut().atc_sync_fails = 1;
        let cmds = [
            Command::tlbi_nh_all(0),
            Command::atc_inv(0x10, None, 0, 52, false),
        ];
        assert_eq!(s.invalidate(vm, d, &cmds), (1, Err(Error::HardwareError)));
        assert_eq!(
            s.last_command_fault().map(|c| c.err),
            Some(CmdqError::AtcInvSync)
        );
        let ops: std::vec::Vec<_> = f.take_log().iter().map(|c| c.opcode().unwrap()).collect();
        assert_eq!(
            ops,
            [
                Opcode::TlbiNhAll,
                Opcode::Sync,
                Opcode::AtcInv,
                Opcode::Sync
            ]
        );
        // Without the fault, the whole batch counts.
        assert_eq!(s.invalidate(vm, d, &cmds), (2, Ok(())));
    }
}
