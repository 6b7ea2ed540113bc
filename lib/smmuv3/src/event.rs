//! Event queue records (32 bytes).

use crate::entry::ReservedEncoding;
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

spec_enum! {
    /// Event record type (word 0 \[7:0\]).
    pub enum EventId as "EVENT.ID" {
        /// F_UUT: unsupported upstream transaction.
        FUut = 0x01,
        /// C_BAD_STREAMID: StreamID out of range or no L2 table for it.
        CBadStreamId = 0x02,
        /// F_STE_FETCH: external abort fetching the STE.
        FSteFetch = 0x03,
        /// C_BAD_STE: invalid (V = 0) or illegal STE.
        CBadSte = 0x04,
        /// F_BAD_ATS_TREQ: ATS translation request not allowed.
        FBadAtsTreq = 0x05,
        /// F_STREAM_DISABLED: with substreams enabled (S1CDMax > 0), a
        /// transaction without a SubstreamID when STE.S1DSS = Terminate, or
        /// one *with* SubstreamID 0 when STE.S1DSS = Ssid0 (§5.2).
        FStreamDisabled = 0x06,
        /// F_TRANSL_FORBIDDEN: ATS-translated transaction not allowed.
        FTranslForbidden = 0x07,
        /// C_BAD_SUBSTREAMID: a SubstreamID out of range of S1CDMax, one
        /// supplied to a stream without stage 1 (STE.Config = 0b1x0), or a
        /// CD fetch through an L1CD with V = 0 or an out-of-range L2Ptr
        /// (§5.2, §5.3, §7.3.9).
        CBadSubstreamId = 0x08,
        /// F_CD_FETCH: external abort fetching a CD or L1 CD descriptor.
        FCdFetch = 0x09,
        /// C_BAD_CD: invalid (V = 0) or illegal CD.
        CBadCd = 0x0a,
        /// F_WALK_EABT: external abort during a translation table walk.
        FWalkEabt = 0x0b,
        /// F_TRANSLATION: no valid descriptor, or address outside the range.
        FTranslation = 0x10,
        /// F_ADDR_SIZE: output address larger than IPS/S2PS.
        FAddrSize = 0x11,
        /// F_ACCESS: Access flag is 0.
        FAccess = 0x12,
        /// F_PERMISSION: access not permitted by the descriptor.
        FPermission = 0x13,
        /// F_TLB_CONFLICT.
        FTlbConflict = 0x20,
        /// F_CFG_CONFLICT.
        FCfgConflict = 0x21,
        /// E_PAGE_REQUEST: speculative page request hint.
        EPageRequest = 0x24,
        /// F_VMS_FETCH.
        FVmsFetch = 0x25,
    }
}

impl EventId {
    /// The architecture's name of the event.
    pub const fn name(self) -> &'static str {
        match self {
            EventId::FUut => "F_UUT",
            EventId::CBadStreamId => "C_BAD_STREAMID",
            EventId::FSteFetch => "F_STE_FETCH",
            EventId::CBadSte => "C_BAD_STE",
            EventId::FBadAtsTreq => "F_BAD_ATS_TREQ",
            EventId::FStreamDisabled => "F_STREAM_DISABLED",
            EventId::FTranslForbidden => "F_TRANSL_FORBIDDEN",
            EventId::CBadSubstreamId => "C_BAD_SUBSTREAMID",
            EventId::FCdFetch => "F_CD_FETCH",
            EventId::CBadCd => "C_BAD_CD",
            EventId::FWalkEabt => "F_WALK_EABT",
            EventId::FTranslation => "F_TRANSLATION",
            EventId::FAddrSize => "F_ADDR_SIZE",
            EventId::FAccess => "F_ACCESS",
            EventId::FPermission => "F_PERMISSION",
            EventId::FTlbConflict => "F_TLB_CONFLICT",
            EventId::FCfgConflict => "F_CFG_CONFLICT",
            EventId::EPageRequest => "E_PAGE_REQUEST",
            EventId::FVmsFetch => "F_VMS_FETCH",
        }
    }

    /// A translation fault that may stall (F_TRANSLATION, F_ADDR_SIZE,
    /// F_ACCESS, F_PERMISSION).
    pub const fn is_stallable(self) -> bool {
        matches!(
            self,
            EventId::FTranslation | EventId::FAddrSize | EventId::FAccess | EventId::FPermission
        )
    }
}

spec_enum! {
    /// Event CLASS: which access faulted.
    pub enum EventClass as "EVENT.CLASS" {
        /// CD fetch (stage 2 fault on the CD or L1 CD descriptor address).
        Cd = 0b00,
        /// Translation table walk (stage 2 fault on a stage 1 table address).
        Ttd = 0b01,
        /// The input address itself.
        In = 0b10,
    }
}

/// An event record: 4 little-endian 64-bit words.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct Event {
    words: [U64; 4],
}

entry_words!(Event, 4);

impl Event {
    // ---- word 0 ----
    uint_field!(
        /// Event type, raw (see [`Event::event_id`]).
        EVENT_ID, raw_event_id, set_raw_event_id, u8, 0, 7, 0
    );
    flag_field!(
        /// SSV: SubstreamID valid.
        SSV, ssv, set_ssv, 0, 11
    );
    uint_field!(
        /// SubstreamID.
        SSID, ssid, set_ssid, u32, 0, 31, 12
    );
    uint_field!(
        /// StreamID.
        SID, sid, set_sid, u32, 0, 63, 32
    );

    // ---- word 1 ----
    uint_field!(
        /// STAG: stall tag, for CMD_RESUME (when Stall = 1).
        STAG, stag, set_stag, u16, 1, 15, 0
    );
    flag_field!(
        /// Stall: the transaction is held until CMD_RESUME / CMD_STALL_TERM.
        STALL, stall, set_stall, 1, 31
    );
    flag_field!(
        /// PnU: privileged (1) or unprivileged.
        PNU, pnu, set_pnu, 1, 33
    );
    flag_field!(
        /// InD: instruction (1) or data.
        IND, ind, set_ind, 1, 34
    );
    flag_field!(
        /// RnW: read (1) or write.
        RNW, rnw, set_rnw, 1, 35
    );
    flag_field!(
        /// NSIPA: the faulting IPA is Non-secure.
        NSIPA, nsipa, set_nsipa, 1, 38
    );
    flag_field!(
        /// S2: the fault happened at stage 2.
        S2, s2, set_s2, 1, 39
    );
    enum_field!(
        /// CLASS.
        CLASS, class, set_class, EventClass, 1, 41, 40
    );
    flag_field!(
        /// TTRnW: the faulting table access was a read (1) or an update.
        TTRNW, ttrnw, set_ttrnw, 1, 44
    );

    // ---- word 2 ----
    uint_field!(
        /// InputAddr: the transaction's input address.
        INPUT_ADDR, input_addr, set_input_addr, u64, 2, 63, 0
    );

    // ---- word 3 ----
    addr_field!(
        /// IPA \[51:12\] of a stage 2 translation-class fault.
        IPA, ipa, set_ipa, 3, 51, 12
    );
    addr_field!(
        /// FetchAddr \[51:3\] of F_STE_FETCH / F_CD_FETCH / F_WALK_EABT.
        FETCH_ADDR, fetch_addr, set_fetch_addr, 3, 51, 3
    );

    /// The event type, decoded.
    pub fn event_id(&self) -> Result<EventId, ReservedEncoding> {
        EventId::from_raw(self.raw_event_id() as u64)
    }

    /// An event of type `id` for `sid` (and `ssid`).
    pub fn new(id: EventId, sid: u32, ssid: Option<u32>) -> Self {
        let mut e = Self::zeroed();
        e.set_raw_event_id(id.raw() as u8).set_sid(sid);
        if let Some(s) = ssid {
            e.set_ssv(true).set_ssid(s);
        }
        e
    }

    /// The SubstreamID when SSV is set.
    pub fn substream(&self) -> Option<u32> {
        self.ssv().then(|| self.ssid())
    }
}
