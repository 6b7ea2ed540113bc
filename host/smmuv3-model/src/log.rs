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
    /// Executed, but in a state where the architecture makes the effect
    /// UNPREDICTABLE, and the model did nothing: CMD_STALL_TERM while the
    /// SMMU's STE for the stream does not terminate every transaction
    /// (§4.7.2). A driver bug.
    Unpredictable,
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
    /// Writing the PRI queue memory failed, or GERROR.PRIQ_ABT_ERR was
    /// active.
    QueueAbort,
}

/// The PRG Response Message code a device receives (§8.3), under the
/// architecture's names. CMD_PRI_RESP.Resp encodes them as 0b00
/// ResponseFailure, 0b01 InvalidRequest, 0b10 Success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseCode {
    /// 0b0000: the pages are available; the device retries.
    Success,
    /// 0b0001: one or more pages do not exist or lack permissions.
    InvalidRequest,
    /// 0b1111: a permanent failure; the device stops issuing page requests.
    ResponseFailure,
}

impl ResponseCode {
    /// Decodes CMD_PRI_RESP.Resp (the numeric field, whatever lib/smmuv3
    /// calls its values). 0b11 is reserved (the command is CERROR_ILL and
    /// never gets here); it maps to ResponseFailure.
    pub fn from_cmd_resp(raw: u64) -> Self {
        match raw {
            0b10 => ResponseCode::Success,
            0b01 => ResponseCode::InvalidRequest,
            _ => ResponseCode::ResponseFailure,
        }
    }

    /// The CMD_PRI_RESP.Resp encoding of this code.
    pub fn cmd_resp(self) -> u64 {
        match self {
            ResponseCode::ResponseFailure => 0b00,
            ResponseCode::InvalidRequest => 0b01,
            ResponseCode::Success => 0b10,
        }
    }

    /// The same code as lib/smmuv3's `PriResponse` (by encoding).
    pub fn pri_response(self) -> PriResponse {
        PriResponse::from_raw(self.cmd_resp()).unwrap_or_else(|_| unreachable!())
    }
}

/// One PRG response as the device received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceResponse {
    /// The group it answers (StreamID, the PASID of the request or of the
    /// command, PRG index).
    pub group: PriGroup,
    pub code: ResponseCode,
    /// The PASID prefix on the response, if any.
    pub pasid: Option<u32>,
    /// `None`: sent by a CMD_PRI_RESP; otherwise why the SMMU answered
    /// by itself.
    pub auto: Option<AutoPriReason>,
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

    /// Every PRG response devices received, in order: CMD_PRI_RESP commands
    /// (matched or not) and the SMMU's automatic responses.
    pub fn device_responses(&self) -> Vec<DeviceResponse> {
        self.lock().device_responses.clone()
    }

    /// The responses the device received for page request group (`sid`,
    /// `prgi`), whichever PASID they carried. "Exactly once at the device"
    /// is `device_group_responses(sid, prgi).len() == 1`.
    pub fn device_group_responses(&self, sid: u32, prgi: u16) -> Vec<DeviceResponse> {
        self.lock()
            .device_responses
            .iter()
            .filter(|r| r.group.sid == sid && r.group.prgi == prgi)
            .copied()
            .collect()
    }

    /// Page requests lost (queue full, disabled or unbacked).
    pub fn pri_lost(&self) -> u64 {
        self.lock().pri_lost
    }
}
