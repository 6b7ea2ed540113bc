//! The command log (every command the SMMU consumed, in order, decoded) and
//! the PRI bookkeeping, with query helpers for tests.

use crate::smmu::Smmu;
use smmuv3::{Command, CommandKind, Opcode, PriResponse, ReservedEncoding, ResumeAction};

/// A page request group: what one PRI_RESP answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PriGroup {
    pub sid: u32,
    pub ssid: Option<u32>,
    /// Page request group index (9 bits).
    pub prgi: u16,
}

/// What the SMMU did with a consumed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdOutcome {
    /// Executed.
    Done,
    /// CERROR_ILL: consumption stopped at this command (it is logged once
    /// per attempt; CMDQ_CONS still points at it).
    Illegal,
    /// A PRI_RESP for no outstanding group, or a RESUME for no stalled
    /// transaction: the architecture ignores it, the log flags it (a
    /// double or stray response is a driver bug).
    NoMatch,
}

/// One consumed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedCommand {
    /// Position in the global order of consumption (0, 1, 2, ...).
    pub seq: u64,
    /// The 16 bytes as read from the queue.
    pub raw: Command,
    /// Its decoded form.
    pub kind: Result<CommandKind, ReservedEncoding>,
    pub outcome: CmdOutcome,
}

impl LoggedCommand {
    /// The opcode, if known.
    pub fn opcode(&self) -> Option<Opcode> {
        self.raw.opcode().ok()
    }
}

/// Why the SMMU answered a page request group itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPriReason {
    /// The PRI queue was full.
    Overflow,
    /// CR0.PRIQEN was 0.
    QueueDisabled,
    /// Writing the PRI queue memory failed.
    QueueAbort,
}

/// A PRG response the SMMU generated without a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoPriResponse {
    pub group: PriGroup,
    pub resp: PriResponse,
    pub reason: AutoPriReason,
}

impl Smmu {
    /// Every command consumed so far, in order.
    pub fn commands(&self) -> Vec<LoggedCommand> {
        self.lock().log.clone()
    }

    /// Forgets the command log (the sequence numbers keep counting).
    pub fn clear_command_log(&self) {
        self.lock().log.clear();
    }

    /// The logged commands whose decoded form satisfies `pred`.
    pub fn commands_where(&self, pred: impl Fn(&CommandKind) -> bool) -> Vec<LoggedCommand> {
        self.lock()
            .log
            .iter()
            .filter(|c| c.kind.as_ref().is_ok_and(&pred))
            .copied()
            .collect()
    }

    /// How many consumed commands had opcode `op` (illegal attempts
    /// included).
    pub fn count_opcode(&self, op: Opcode) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|c| c.opcode() == Some(op))
            .count()
    }

    /// The responses (executed PRI_RESP commands, matched or not) sent for
    /// `group`, in order. "Exactly one SUCCESS" is
    /// `pri_responses(g) == [PriResponse::Success]`.
    pub fn pri_responses(&self, group: PriGroup) -> Vec<PriResponse> {
        self.lock()
            .log
            .iter()
            .filter(|c| c.outcome != CmdOutcome::Illegal)
            .filter_map(|c| match c.kind {
                Ok(CommandKind::PriResp {
                    sid,
                    ssid,
                    prgi,
                    resp,
                }) if sid == group.sid && ssid == group.ssid && prgi == group.prgi => Some(resp),
                _ => None,
            })
            .collect()
    }

    /// The RESUME actions sent for (`sid`, `stag`), in order.
    pub fn resumes(&self, sid: u32, stag: u16) -> Vec<ResumeAction> {
        self.lock()
            .log
            .iter()
            .filter(|c| c.outcome != CmdOutcome::Illegal)
            .filter_map(|c| match c.kind {
                Ok(CommandKind::Resume {
                    sid: s,
                    stag: t,
                    action,
                }) if s == sid && t == stag => Some(action),
                _ => None,
            })
            .collect()
    }

    /// Commands flagged [`CmdOutcome::NoMatch`] (stray or duplicate
    /// responses).
    pub fn unmatched_responses(&self) -> Vec<LoggedCommand> {
        self.lock()
            .log
            .iter()
            .filter(|c| c.outcome == CmdOutcome::NoMatch)
            .copied()
            .collect()
    }

    /// Page request groups whose Last reached the PRI queue and that no
    /// PRI_RESP has answered yet.
    pub fn pending_pri_groups(&self) -> Vec<PriGroup> {
        self.lock().pri_pending.keys().copied().collect()
    }

    /// Responses the SMMU generated itself (for dropped Last requests).
    pub fn auto_pri_responses(&self) -> Vec<AutoPriResponse> {
        self.lock().auto_pri.clone()
    }

    /// Page requests lost (queue full, disabled or unbacked).
    pub fn pri_lost(&self) -> u64 {
        self.lock().pri_lost
    }
}
