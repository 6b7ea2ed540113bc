//! Command queue consumption: every command, with the architecture's
//! legality checks, the configuration-cache and TLB invalidations (applied
//! at CMD_SYNC by default), and the responses to page requests and stalls.

use crate::config::StallModel;
use crate::device::StallOutcome;
use crate::log::{CmdOutcome, DeviceResponse, LoggedCommand, PriGroup, ResponseCode};
use crate::smmu::State;
use smmuv3::regs::{CMDQ_CONS, CR0, GERROR};
use smmuv3::{CmdqError, Command, CommandKind, ResumeAction, SyncCs, CMDQ_ENTRY_BYTES};

impl State {
    /// Consumes commands from CMDQ_CONS up to CMDQ_PROD, stopping at the
    /// first illegal one (CMDQ_CONS.ERR = ILL, GERROR.CMDQ_ERR) until
    /// software acknowledges GERRORN. Bounded by the queue size.
    pub(crate) fn process_cmdq(&mut self) {
        // Throttled: commands are consumed only in `step`.
        if self.cfg.cmdq_throttle.is_none() {
            self.consume_cmdq(None);
        }
    }

    /// Consumes at most `budget` commands (all available if `None`). A
    /// throttled CMD_SYNC first waits at the head of the queue for a seeded
    /// number of steps.
    pub(crate) fn consume_cmdq(&mut self, mut budget: Option<u32>) {
        let max = self.cfg.cmdqs;
        loop {
            if budget == Some(0) {
                return;
            }
            if !self.cr0_has(CR0::CMDQEN) || self.gerror_active(GERROR::CMDQ_ERR) {
                return;
            }
            let prod = self.cmdq.prod_ptr(max);
            let cons = self.cmdq.cons_ptr(max);
            if prod.is_empty(cons) {
                return;
            }
            let pa = self.cmdq.addr() + cons.entry_offset(CMDQ_ENTRY_BYTES) as u64;
            let cmd: Command = match self.mem.read_obj(pa) {
                Ok(c) => c,
                Err(_) => {
                    self.stop_cmdq(CmdqError::Abt);
                    return;
                }
            };
            if let (Some(t), Ok(CommandKind::Sync { .. })) = (self.cfg.cmdq_throttle, cmd.decode())
            {
                let at = cons.raw();
                let left = match self.sync_wait {
                    Some((c, left)) if c == at => left,
                    _ => self.below(t.sync_delay_steps as u64 + 1) as u32,
                };
                if left > 0 {
                    self.sync_wait = Some((at, left - 1));
                    return;
                }
                self.sync_wait = None;
            }
            if let Some(b) = budget.as_mut() {
                *b -= 1;
            }
            let outcome = self.execute(&cmd);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.log.push(LoggedCommand {
                seq,
                raw: cmd,
                kind: cmd.decode(),
                outcome: outcome.unwrap_or(CmdOutcome::Illegal),
            });
            if outcome.is_none() {
                self.stop_cmdq(CmdqError::Ill);
                return;
            }
            // Advance CONS, keeping the ERR field as it was.
            let err = self.cmdq.cons & (CMDQ_CONS::ERR.mask << CMDQ_CONS::ERR.shift);
            self.cmdq.cons = cons.advance(1).raw() | err;
        }
    }

    fn stop_cmdq(&mut self, err: CmdqError) {
        self.cmdq.cons = err.insert_into_cons(self.cmdq.cons);
        self.raise_gerror(GERROR::CMDQ_ERR);
    }

    /// Runs one command; `None` = illegal (CERROR_ILL).
    fn execute(&mut self, cmd: &Command) -> Option<CmdOutcome> {
        use CommandKind as K;
        let kind = cmd.decode().ok()?;
        let c = self.cfg.clone();
        let ssid_ok = |ssid: Option<u32>| match ssid {
            None => true,
            Some(s) => c.ssidsize > 0 && s >> c.ssidsize == 0,
        };
        let stall_cmds_ok = c.stall_model != StallModel::TerminateOnly;
        let legal = match kind {
            K::PrefetchConfig { ssid, .. } | K::PrefetchAddr { ssid, .. } => ssid_ok(ssid),
            K::CfgiSte { .. } | K::CfgiSteRange { .. } | K::CfgiAll | K::CfgiCdAll { .. } => true,
            K::CfgiCd { ssid, .. } => c.ssidsize == 0 && ssid == 0 || ssid_ok(Some(ssid)),
            K::TlbiNhAll { .. }
            | K::TlbiNhAsid { .. }
            | K::TlbiNhVa { .. }
            | K::TlbiNhVaa { .. } => c.s1p,
            K::TlbiEl2All | K::TlbiEl2Asid { .. } | K::TlbiEl2Va { .. } | K::TlbiEl2Vaa { .. } => {
                c.hyp
            }
            // Only the Secure command queue may issue EL3 invalidations.
            K::TlbiEl3All | K::TlbiEl3Va { .. } => false,
            K::TlbiS12Vmall { .. } | K::TlbiS2Ipa { .. } => c.s2p,
            K::TlbiNsnhAll => true,
            K::AtcInv { ssid, .. } => c.ats && ssid_ok(ssid),
            K::PriResp { ssid, .. } => c.pri && ssid_ok(ssid),
            K::Resume { .. } | K::StallTerm { .. } => stall_cmds_ok,
            K::Sync { cs, msi_addr, .. } => {
                (cs != SyncCs::Sev || c.sev) && (msi_addr == 0 || c.msi || cs != SyncCs::Irq)
            }
        };
        if !legal {
            return None;
        }
        Some(match kind {
            K::PrefetchConfig { .. } | K::PrefetchAddr { .. } | K::AtcInv { .. } => {
                CmdOutcome::Done
            }
            K::CfgiSte { .. }
            | K::CfgiSteRange { .. }
            | K::CfgiAll
            | K::CfgiCd { .. }
            | K::CfgiCdAll { .. }
            | K::TlbiNhAll { .. }
            | K::TlbiNhAsid { .. }
            | K::TlbiNhVa { .. }
            | K::TlbiNhVaa { .. }
            | K::TlbiEl2All
            | K::TlbiEl2Asid { .. }
            | K::TlbiEl2Va { .. }
            | K::TlbiEl2Vaa { .. }
            | K::TlbiEl3All
            | K::TlbiEl3Va { .. }
            | K::TlbiS12Vmall { .. }
            | K::TlbiS2Ipa { .. }
            | K::TlbiNsnhAll => {
                if c.defer_invalidation_to_sync {
                    self.deferred.push(kind);
                } else {
                    self.apply_invalidation(&kind);
                }
                CmdOutcome::Done
            }
            K::PriResp {
                sid,
                ssid,
                prgi,
                resp,
            } => {
                let g = PriGroup { sid, ssid, prgi };
                // The device gets the response whether or not the SMMU saw
                // the group's Last (a stray response is still sent).
                self.device_responses.push(DeviceResponse {
                    group: g,
                    code: ResponseCode::from_cmd_resp(resp.raw()),
                    pasid: ssid,
                    auto: None,
                });
                match self.pri_pending.get_mut(&g) {
                    Some(n) => {
                        *n -= 1;
                        if *n == 0 {
                            self.pri_pending.remove(&g);
                        }
                        CmdOutcome::Done
                    }
                    None => CmdOutcome::NoMatch,
                }
            }
            K::Resume { sid, stag, action } => match self.stalls.remove(&(sid, stag)) {
                Some(txn) => {
                    let outcome = match action {
                        // Retry runs the translation again with whatever
                        // configuration and tables are current.
                        ResumeAction::Retry => StallOutcome::Retried(
                            self.translate(txn.sid, txn.ssid, txn.iova, txn.access),
                        ),
                        ResumeAction::Term | ResumeAction::Abort => {
                            StallOutcome::Terminated(action)
                        }
                    };
                    self.stall_outcomes.insert((sid, stag), outcome);
                    CmdOutcome::Done
                }
                None => CmdOutcome::NoMatch,
            },
            K::StallTerm { sid } => {
                // §4.7.2: only after the STE makes every new transaction
                // terminate (and its CFGI + SYNC completed), as the SMMU
                // sees it. Otherwise the outcome is UNPREDICTABLE; the
                // model takes the unhelpful choice: nothing is terminated.
                if !self.ste_terminates_all(sid) {
                    return Some(CmdOutcome::Unpredictable);
                }
                let stags: Vec<(u32, u16)> = self
                    .stalls
                    .range((sid, 0)..=(sid, u16::MAX))
                    .map(|(k, _)| *k)
                    .collect();
                for k in stags {
                    self.stalls.remove(&k);
                    self.stall_outcomes.insert(k, StallOutcome::StallTerm);
                }
                CmdOutcome::Done
            }
            K::Sync {
                cs,
                msi_addr,
                msi_data,
            } => {
                // Everything before the SYNC is now complete.
                for k in std::mem::take(&mut self.deferred) {
                    self.apply_invalidation(&k);
                }
                match cs {
                    SyncCs::None => {}
                    SyncCs::Sev => self.sev_count += 1,
                    SyncCs::Irq if msi_addr != 0 => {
                        if self.mem.write_u32(msi_addr, msi_data).is_ok() {
                            self.msi_writes.push((msi_addr, msi_data));
                        } else {
                            self.raise_gerror(GERROR::MSI_CMDQ_ABT_ERR);
                        }
                    }
                    SyncCs::Irq => self.irqs.cmd_sync = true,
                }
                CmdOutcome::Done
            }
        })
    }

    /// Makes a CFGI or TLBI take effect.
    pub(crate) fn apply_invalidation(&mut self, kind: &CommandKind) {
        use CommandKind as K;
        let cds_too = self.cfg.cfgi_ste_invalidates_cds;
        let split = self.strtab_split();
        match *kind {
            K::CfgiSte { sid, leaf } => {
                self.ste_cache.remove(&sid);
                // Leaf = 0 also drops the L1STD that located the STE.
                if !leaf {
                    self.l1std_cache.remove(&(sid as u64 >> split));
                }
                if cds_too {
                    self.cd_cache.retain(|(s, _), _| *s != sid);
                    self.l1cd_cache.retain(|(s, _), _| *s != sid);
                }
            }
            K::CfgiSteRange { sid, range } => {
                // §4.3.2: STEs, the L1STDs walked to them, and the CDs and
                // L1CDs cached through them.
                let n = 1u64 << (range as u32 + 1);
                let lo = sid as u64 & !(n - 1);
                let hit = |s: u32| (s as u64).wrapping_sub(lo) < n;
                self.ste_cache.retain(|s, _| !hit(*s));
                self.cd_cache.retain(|(s, _), _| !hit(*s));
                self.l1cd_cache.retain(|(s, _), _| !hit(*s));
                let (l1_lo, l1_hi) = (lo >> split, (lo + n - 1) >> split);
                self.l1std_cache.retain(|i, _| *i < l1_lo || *i > l1_hi);
            }
            K::CfgiAll => {
                self.ste_cache.clear();
                self.cd_cache.clear();
                self.l1std_cache.clear();
                self.l1cd_cache.clear();
            }
            K::CfgiCd { sid, ssid, leaf } => {
                self.cd_cache.remove(&(sid, ssid));
                // Leaf = 0 also drops the L1CD that located the CD. Which
                // L1CD that is depends on the STE's S1Fmt, so drop every
                // L1CD of the stream (over-invalidation is allowed).
                if !leaf {
                    self.l1cd_cache.retain(|(s, _), _| *s != sid);
                }
            }
            K::CfgiCdAll { sid } => {
                self.cd_cache.retain(|(s, _), _| *s != sid);
                self.l1cd_cache.retain(|(s, _), _| *s != sid);
            }
            _ => {
                self.tlb.invalidate(kind, self.cfg.ril);
                self.walk.invalidate(kind, self.cfg.ril);
            }
        }
    }
}
