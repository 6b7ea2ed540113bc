//! Command queue entries (16 bytes): opcodes, typed constructors, field
//! getters and a full decode into [`CommandKind`].

use crate::entry::ReservedEncoding;
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

spec_enum! {
    /// Command opcodes (Command word 0 \[7:0\]).
    ///
    /// CFGI_ALL has no opcode of its own: it is CFGI_STE_RANGE (0x04) with
    /// Range = 31 ([`Command::cfgi_all`]).
    pub enum Opcode as "CMD.Opcode" {
        PrefetchConfig = 0x01,
        PrefetchAddr = 0x02,
        CfgiSte = 0x03,
        /// CFGI_STE_RANGE, and CFGI_ALL when Range = 31.
        CfgiSteRange = 0x04,
        CfgiCd = 0x05,
        CfgiCdAll = 0x06,
        TlbiNhAll = 0x10,
        TlbiNhAsid = 0x11,
        TlbiNhVa = 0x12,
        TlbiNhVaa = 0x13,
        TlbiEl3All = 0x18,
        TlbiEl3Va = 0x1a,
        TlbiEl2All = 0x20,
        TlbiEl2Asid = 0x21,
        TlbiEl2Va = 0x22,
        TlbiEl2Vaa = 0x23,
        TlbiS12Vmall = 0x28,
        TlbiS2Ipa = 0x2a,
        TlbiNsnhAll = 0x30,
        AtcInv = 0x40,
        PriResp = 0x41,
        Resume = 0x44,
        StallTerm = 0x45,
        Sync = 0x46,
    }
}

impl Opcode {
    /// The architecture's name of the command.
    pub const fn name(self) -> &'static str {
        match self {
            Opcode::PrefetchConfig => "CMD_PREFETCH_CONFIG",
            Opcode::PrefetchAddr => "CMD_PREFETCH_ADDR",
            Opcode::CfgiSte => "CMD_CFGI_STE",
            Opcode::CfgiSteRange => "CMD_CFGI_STE_RANGE",
            Opcode::CfgiCd => "CMD_CFGI_CD",
            Opcode::CfgiCdAll => "CMD_CFGI_CD_ALL",
            Opcode::TlbiNhAll => "CMD_TLBI_NH_ALL",
            Opcode::TlbiNhAsid => "CMD_TLBI_NH_ASID",
            Opcode::TlbiNhVa => "CMD_TLBI_NH_VA",
            Opcode::TlbiNhVaa => "CMD_TLBI_NH_VAA",
            Opcode::TlbiEl3All => "CMD_TLBI_EL3_ALL",
            Opcode::TlbiEl3Va => "CMD_TLBI_EL3_VA",
            Opcode::TlbiEl2All => "CMD_TLBI_EL2_ALL",
            Opcode::TlbiEl2Asid => "CMD_TLBI_EL2_ASID",
            Opcode::TlbiEl2Va => "CMD_TLBI_EL2_VA",
            Opcode::TlbiEl2Vaa => "CMD_TLBI_EL2_VAA",
            Opcode::TlbiS12Vmall => "CMD_TLBI_S12_VMALL",
            Opcode::TlbiS2Ipa => "CMD_TLBI_S2_IPA",
            Opcode::TlbiNsnhAll => "CMD_TLBI_NSNH_ALL",
            Opcode::AtcInv => "CMD_ATC_INV",
            Opcode::PriResp => "CMD_PRI_RESP",
            Opcode::Resume => "CMD_RESUME",
            Opcode::StallTerm => "CMD_STALL_TERM",
            Opcode::Sync => "CMD_SYNC",
        }
    }
}

spec_enum! {
    /// CMD_PRI_RESP.Resp: the page request group response sent to the
    /// device, under the architecture's names (IHI 0070 §4.5.2; PCIe
    /// Response Codes in brackets). An ordinary "no" — no handler, detach,
    /// replace, unbind, owner death — is [`PriResponse::InvalidRequest`];
    /// [`PriResponse::ResponseFailure`] makes the device stop using PRI.
    pub enum PriResponse as "CMD_PRI_RESP.Resp" {
        /// ResponseFailure [Response Failure]: permanent non-paging error
        /// (for example ATS or PRI disabled for the device); the device
        /// stops issuing page requests.
        ResponseFailure = 0b00,
        /// InvalidRequest [Invalid Request]: page-in unsuccessful for one
        /// or more pages of the group.
        InvalidRequest = 0b01,
        /// Success: the group was paged in; the device retries the
        /// translation. (0b11 is Reserved: the command is ILLEGAL.)
        Success = 0b10,
    }
}

spec_enum! {
    /// CMD_RESUME's Action (Ac, word 0 bit 12) and Abort (Ab, bit 13)
    /// parameters as one 2-bit value Ab:Ac (IHI 0070 §4.7.1). Ac = 1
    /// retries and Ab is IGNORED ([`Command::resume_action`] decodes Ab:Ac
    /// = 0b11 as `Retry`); Ac = 0 terminates, with RAZ/WI when Ab = 0 and
    /// an abort when Ab = 1 — or always an abort when IDR0.TERM_MODEL = 1.
    pub enum ResumeAction as "CMD_RESUME.Action" {
        /// Ac = 0 (Terminate), Ab = 0: complete with RAZ/WI semantics
        /// (an abort when IDR0.TERM_MODEL = 1).
        Term = 0b00,
        /// Ac = 1 (Retry): the transaction is retried as though it had just
        /// arrived.
        Retry = 0b01,
        /// Ac = 0 (Terminate), Ab = 1: terminate with an abort to the
        /// device.
        Abort = 0b10,
    }
}

spec_enum! {
    /// CMD_SYNC.CS: completion signal.
    pub enum SyncCs as "CMD_SYNC.CS" {
        /// No signal (software polls CMDQ_CONS).
        None = 0b00,
        /// Interrupt (wired cmd-sync line or MSI to MSIAddress).
        Irq = 0b01,
        /// Send a WFE wake-up event.
        Sev = 0b10,
    }
}

/// A command queue entry: 2 little-endian 64-bit words.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct Command {
    words: [U64; 2],
}

entry_words!(Command, 2);

impl Command {
    // ---- word 0 (common) ----
    uint_field!(
        /// Opcode, raw (see [`Command::opcode`]).
        OPCODE, raw_opcode, set_raw_opcode, u8, 0, 7, 0
    );
    flag_field!(
        /// ATC_INV Global: invalidate global (all-SSID) ATC entries too.
        ATC_GLOBAL, global, set_global, 0, 9
    );
    flag_field!(
        /// SSec: the StreamID is Secure (Secure command queue only).
        SSEC, ssec, set_ssec, 0, 10
    );
    flag_field!(
        /// SSV: the SubstreamID field is valid.
        SSV, ssv, set_ssv, 0, 11
    );
    uint_field!(
        /// SubstreamID (20 bits) of CFGI_CD, ATC_INV, PRI_RESP, PREFETCH_*.
        SSID, ssid, set_ssid, u32, 0, 31, 12
    );
    uint_field!(
        /// StreamID of CFGI_*, ATC_INV, PRI_RESP, RESUME, STALL_TERM, PREFETCH_*.
        SID, sid, set_sid, u32, 0, 63, 32
    );
    uint_field!(
        /// TLBI range NUM: (NUM + 1) x 2^SCALE granules (IDR3.RIL).
        TLBI_NUM, num, set_num, u8, 0, 16, 12
    );
    uint_field!(
        /// TLBI range SCALE.
        TLBI_SCALE, scale, set_scale, u8, 0, 24, 20
    );
    uint_field!(
        /// TLBI VMID.
        VMID, vmid, set_vmid, u16, 0, 47, 32
    );
    uint_field!(
        /// TLBI ASID.
        ASID, asid, set_asid, u16, 0, 63, 48
    );
    uint_field!(
        /// CMD_RESUME Ab:Ac (bit 13 Abort, bit 12 Action); see
        /// [`ResumeAction`] and [`Command::resume_action`].
        RESUME_ACTION, resume_action_raw, set_resume_action_raw, u8, 0, 13, 12
    );
    enum_field!(
        /// CMD_SYNC CS.
        SYNC_CS, sync_cs, set_sync_cs, SyncCs, 0, 13, 12
    );
    uint_field!(
        /// CMD_SYNC MSH: MSI shareability.
        SYNC_MSH, msh, set_msh, u8, 0, 23, 22
    );
    uint_field!(
        /// CMD_SYNC MSIAttr: MSI memory type.
        SYNC_MSIATTR, msi_attr, set_msi_attr, u8, 0, 27, 24
    );
    uint_field!(
        /// CMD_SYNC MSIData: the 32-bit value written to MSIAddress.
        SYNC_MSIDATA, msi_data, set_msi_data, u32, 0, 63, 32
    );

    // ---- word 1 ----
    flag_field!(
        /// Leaf: only leaf entries changed (CFGI_STE/CFGI_CD: only the
        /// STE/CD, not L1 descriptors; TLBI: only last-level entries).
        LEAF, leaf, set_leaf, 1, 0
    );
    uint_field!(
        /// CFGI_STE_RANGE Range: invalidates 2^(Range+1) StreamIDs from
        /// SID aligned down; 31 = all (CFGI_ALL).
        CFGI_RANGE, range, set_range, u8, 1, 4, 0
    );
    uint_field!(
        /// TLBI TTL: level hint.
        TLBI_TTL, ttl, set_ttl, u8, 1, 9, 8
    );
    uint_field!(
        /// TLBI TG: granule of a range invalidation (0 = not a range).
        TLBI_TG, tg, set_tg, u8, 1, 11, 10
    );
    addr_field!(
        /// Address \[63:12\] of TLBI_*_VA(A), ATC_INV, PREFETCH_ADDR.
        ADDR, addr, set_addr, 1, 63, 12
    );
    addr_field!(
        /// TLBI_S2_IPA address \[51:12\].
        IPA, ipa, set_ipa, 1, 51, 12
    );
    uint_field!(
        /// ATC_INV Size: log2 of the number of 4 KiB pages.
        ATC_SIZE, atc_size, set_atc_size, u8, 1, 5, 0
    );
    uint_field!(
        /// CMD_PRI_RESP PRGI (page request group index, 9 bits).
        PRI_PRGI, prgi, set_prgi, u16, 1, 8, 0
    );
    enum_field!(
        /// CMD_PRI_RESP Resp.
        PRI_RESP, pri_response, set_pri_response, PriResponse, 1, 13, 12
    );
    uint_field!(
        /// CMD_RESUME STAG.
        RESUME_STAG, stag, set_stag, u16, 1, 15, 0
    );
    addr_field!(
        /// CMD_SYNC MSIAddress \[51:2\].
        SYNC_MSIADDR, msi_addr, set_msi_addr, 1, 51, 2
    );
    uint_field!(
        /// CMD_PREFETCH_ADDR Size: log2 of the number of 4 KiB pages.
        PREFETCH_SIZE, prefetch_size, set_prefetch_size, u8, 1, 4, 0
    );

    /// The opcode, decoded.
    pub fn opcode(&self) -> Result<Opcode, ReservedEncoding> {
        Opcode::from_raw(self.raw_opcode() as u64)
    }

    fn with_op(op: Opcode) -> Self {
        let mut c = Self::zeroed();
        c.set_raw_opcode(op.raw() as u8);
        c
    }

    fn set_substream(&mut self, ssid: Option<u32>) -> &mut Self {
        match ssid {
            Some(s) => self.set_ssv(true).set_ssid(s),
            None => self.set_ssv(false).set_ssid(0),
        }
    }

    /// The SubstreamID when SSV is set.
    pub fn substream(&self) -> Option<u32> {
        self.ssv().then(|| self.ssid())
    }

    /// CMD_RESUME's action. Every Ab:Ac value is legal: with Ac = 1 the
    /// Abort bit is IGNORED, so 0b11 is a retry.
    pub fn resume_action(&self) -> ResumeAction {
        match self.resume_action_raw() {
            r if r & 1 != 0 => ResumeAction::Retry,
            0b10 => ResumeAction::Abort,
            _ => ResumeAction::Term,
        }
    }

    /// Sets CMD_RESUME's Ab:Ac.
    pub fn set_resume_action(&mut self, action: ResumeAction) -> &mut Self {
        self.set_resume_action_raw(action.raw() as u8)
    }

    // ---- constructors ----

    /// CMD_PREFETCH_CONFIG.
    pub fn prefetch_config(sid: u32, ssid: Option<u32>) -> Self {
        let mut c = Self::with_op(Opcode::PrefetchConfig);
        c.set_sid(sid).set_substream(ssid);
        c
    }

    /// CMD_PREFETCH_ADDR of 2^size pages at `addr`.
    pub fn prefetch_addr(sid: u32, ssid: Option<u32>, addr: u64, size: u8) -> Self {
        let mut c = Self::with_op(Opcode::PrefetchAddr);
        c.set_sid(sid)
            .set_substream(ssid)
            .set_addr(addr)
            .set_prefetch_size(size);
        c
    }

    /// CMD_CFGI_STE: invalidate the cached STE of `sid` (and with
    /// `leaf = false`, the L1 descriptor leading to it).
    pub fn cfgi_ste(sid: u32, leaf: bool) -> Self {
        let mut c = Self::with_op(Opcode::CfgiSte);
        c.set_sid(sid).set_leaf(leaf);
        c
    }

    /// CMD_CFGI_STE_RANGE: invalidate 2^(range+1) STEs from `sid` aligned
    /// down (range 0..=30; 31 is [`Command::cfgi_all`]).
    pub fn cfgi_ste_range(sid: u32, range: u8) -> Self {
        let mut c = Self::with_op(Opcode::CfgiSteRange);
        c.set_sid(sid).set_range(range);
        c
    }

    /// CMD_CFGI_ALL (CFGI_STE_RANGE with Range = 31).
    pub fn cfgi_all() -> Self {
        Self::cfgi_ste_range(0, 31)
    }

    /// CMD_CFGI_CD: invalidate the cached CD (sid, ssid) (and with
    /// `leaf = false`, the L1 CD descriptor).
    pub fn cfgi_cd(sid: u32, ssid: u32, leaf: bool) -> Self {
        let mut c = Self::with_op(Opcode::CfgiCd);
        c.set_sid(sid).set_ssid(ssid).set_leaf(leaf);
        c
    }

    /// CMD_CFGI_CD_ALL: invalidate every cached CD of `sid`.
    pub fn cfgi_cd_all(sid: u32) -> Self {
        let mut c = Self::with_op(Opcode::CfgiCdAll);
        c.set_sid(sid);
        c
    }

    /// CMD_TLBI_NH_ALL: every stage 1 (NS-EL1) entry of `vmid`.
    pub fn tlbi_nh_all(vmid: u16) -> Self {
        let mut c = Self::with_op(Opcode::TlbiNhAll);
        c.set_vmid(vmid);
        c
    }

    /// CMD_TLBI_NH_ASID: non-global stage 1 entries of (`vmid`, `asid`).
    pub fn tlbi_nh_asid(vmid: u16, asid: u16) -> Self {
        let mut c = Self::with_op(Opcode::TlbiNhAsid);
        c.set_vmid(vmid).set_asid(asid);
        c
    }

    /// CMD_TLBI_NH_VA: stage 1 entries of (`vmid`, `asid`) (and global ones)
    /// for `addr`.
    pub fn tlbi_nh_va(vmid: u16, asid: u16, addr: u64, leaf: bool) -> Self {
        let mut c = Self::with_op(Opcode::TlbiNhVa);
        c.set_vmid(vmid)
            .set_asid(asid)
            .set_addr(addr & Self::ADDR.mask())
            .set_leaf(leaf);
        c
    }

    /// CMD_TLBI_NH_VAA: stage 1 entries of `vmid`, any ASID, for `addr`.
    pub fn tlbi_nh_vaa(vmid: u16, addr: u64, leaf: bool) -> Self {
        let mut c = Self::with_op(Opcode::TlbiNhVaa);
        c.set_vmid(vmid)
            .set_addr(addr & Self::ADDR.mask())
            .set_leaf(leaf);
        c
    }

    /// CMD_TLBI_EL3_ALL.
    pub fn tlbi_el3_all() -> Self {
        Self::with_op(Opcode::TlbiEl3All)
    }

    /// CMD_TLBI_EL3_VA.
    pub fn tlbi_el3_va(addr: u64, leaf: bool) -> Self {
        let mut c = Self::with_op(Opcode::TlbiEl3Va);
        c.set_addr(addr & Self::ADDR.mask()).set_leaf(leaf);
        c
    }

    /// CMD_TLBI_EL2_ALL.
    pub fn tlbi_el2_all() -> Self {
        Self::with_op(Opcode::TlbiEl2All)
    }

    /// CMD_TLBI_EL2_ASID (EL2-E2H entries of `asid`).
    pub fn tlbi_el2_asid(asid: u16) -> Self {
        let mut c = Self::with_op(Opcode::TlbiEl2Asid);
        c.set_asid(asid);
        c
    }

    /// CMD_TLBI_EL2_VA.
    pub fn tlbi_el2_va(asid: u16, addr: u64, leaf: bool) -> Self {
        let mut c = Self::with_op(Opcode::TlbiEl2Va);
        c.set_asid(asid)
            .set_addr(addr & Self::ADDR.mask())
            .set_leaf(leaf);
        c
    }

    /// CMD_TLBI_EL2_VAA.
    pub fn tlbi_el2_vaa(addr: u64, leaf: bool) -> Self {
        let mut c = Self::with_op(Opcode::TlbiEl2Vaa);
        c.set_addr(addr & Self::ADDR.mask()).set_leaf(leaf);
        c
    }

    /// CMD_TLBI_S12_VMALL: every stage 1 and stage 2 entry of `vmid`.
    pub fn tlbi_s12_vmall(vmid: u16) -> Self {
        let mut c = Self::with_op(Opcode::TlbiS12Vmall);
        c.set_vmid(vmid);
        c
    }

    /// CMD_TLBI_S2_IPA: stage 2 entries of `vmid` for `ipa`. Combined
    /// (nested) entries are not required to be invalidated: follow with
    /// TLBI_NH_ALL or TLBI_S12_VMALL.
    pub fn tlbi_s2_ipa(vmid: u16, ipa: u64, leaf: bool) -> Self {
        let mut c = Self::with_op(Opcode::TlbiS2Ipa);
        c.set_vmid(vmid)
            .set_ipa(ipa & Self::IPA.mask())
            .set_leaf(leaf);
        c
    }

    /// CMD_TLBI_NSNH_ALL: every Non-secure, non-hypervisor entry.
    pub fn tlbi_nsnh_all() -> Self {
        Self::with_op(Opcode::TlbiNsnhAll)
    }

    /// Turns a TLBI_*_VA(A) / TLBI_S2_IPA command into a range invalidation
    /// of (num + 1) x 2^scale granules of size `tg` (1 = 4K, 2 = 16K,
    /// 3 = 64K), with level hint `ttl` (needs IDR3.RIL).
    pub fn with_range(mut self, num: u8, scale: u8, tg: u8, ttl: u8) -> Self {
        self.set_num(num).set_scale(scale).set_tg(tg).set_ttl(ttl);
        self
    }

    /// CMD_ATC_INV: invalidate 2^size pages at `addr` in the device's ATC
    /// for `sid` (and `ssid`; `global` also hits global entries).
    pub fn atc_inv(sid: u32, ssid: Option<u32>, addr: u64, size: u8, global: bool) -> Self {
        let mut c = Self::with_op(Opcode::AtcInv);
        c.set_sid(sid)
            .set_substream(ssid)
            .set_global(global)
            .set_addr(addr & Self::ADDR.mask())
            .set_atc_size(size);
        c
    }

    /// CMD_PRI_RESP: answer page request group `prgi` of (`sid`, `ssid`).
    pub fn pri_resp(sid: u32, ssid: Option<u32>, prgi: u16, resp: PriResponse) -> Self {
        let mut c = Self::with_op(Opcode::PriResp);
        c.set_sid(sid)
            .set_substream(ssid)
            .set_prgi(prgi)
            .set_pri_response(resp);
        c
    }

    /// CMD_RESUME: resume (retry) or terminate the stalled transaction
    /// (`sid`, `stag`).
    pub fn resume(sid: u32, stag: u16, action: ResumeAction) -> Self {
        let mut c = Self::with_op(Opcode::Resume);
        c.set_sid(sid).set_stag(stag).set_resume_action(action);
        c
    }

    /// CMD_STALL_TERM: terminate every stalled transaction of `sid`.
    pub fn stall_term(sid: u32) -> Self {
        let mut c = Self::with_op(Opcode::StallTerm);
        c.set_sid(sid);
        c
    }

    /// CMD_SYNC with completion signal `cs` and no MSI.
    pub fn sync(cs: SyncCs) -> Self {
        let mut c = Self::with_op(Opcode::Sync);
        c.set_sync_cs(cs);
        c
    }

    /// CMD_SYNC with CS = IRQ signalled by writing `msi_data` (32 bits) to
    /// `msi_addr` (needs IDR0.MSI).
    pub fn sync_msi(msi_addr: u64, msi_data: u32, msh: u8, msi_attr: u8) -> Self {
        let mut c = Self::sync(SyncCs::Irq);
        c.set_msi_addr(msi_addr)
            .set_msi_data(msi_data)
            .set_msh(msh)
            .set_msi_attr(msi_attr);
        c
    }

    /// Decodes the whole command; fails on an unknown opcode or a reserved
    /// encoding (both are CERROR_ILL for the SMMU).
    pub fn decode(&self) -> Result<CommandKind, ReservedEncoding> {
        let tlbi = |c: &Self, addr: u64| TlbiScope {
            addr,
            leaf: c.leaf(),
            num: c.num(),
            scale: c.scale(),
            tg: c.tg(),
            ttl: c.ttl(),
        };
        Ok(match self.opcode()? {
            Opcode::PrefetchConfig => CommandKind::PrefetchConfig {
                sid: self.sid(),
                ssid: self.substream(),
            },
            Opcode::PrefetchAddr => CommandKind::PrefetchAddr {
                sid: self.sid(),
                ssid: self.substream(),
                addr: self.addr(),
                size: self.prefetch_size(),
            },
            Opcode::CfgiSte => CommandKind::CfgiSte {
                sid: self.sid(),
                leaf: self.leaf(),
            },
            Opcode::CfgiSteRange if self.range() == 31 => CommandKind::CfgiAll,
            Opcode::CfgiSteRange => CommandKind::CfgiSteRange {
                sid: self.sid(),
                range: self.range(),
            },
            Opcode::CfgiCd => CommandKind::CfgiCd {
                sid: self.sid(),
                ssid: self.ssid(),
                leaf: self.leaf(),
            },
            Opcode::CfgiCdAll => CommandKind::CfgiCdAll { sid: self.sid() },
            Opcode::TlbiNhAll => CommandKind::TlbiNhAll { vmid: self.vmid() },
            Opcode::TlbiNhAsid => CommandKind::TlbiNhAsid {
                vmid: self.vmid(),
                asid: self.asid(),
            },
            Opcode::TlbiNhVa => CommandKind::TlbiNhVa {
                vmid: self.vmid(),
                asid: self.asid(),
                scope: tlbi(self, self.addr()),
            },
            Opcode::TlbiNhVaa => CommandKind::TlbiNhVaa {
                vmid: self.vmid(),
                scope: tlbi(self, self.addr()),
            },
            Opcode::TlbiEl3All => CommandKind::TlbiEl3All,
            Opcode::TlbiEl3Va => CommandKind::TlbiEl3Va {
                scope: tlbi(self, self.addr()),
            },
            Opcode::TlbiEl2All => CommandKind::TlbiEl2All,
            Opcode::TlbiEl2Asid => CommandKind::TlbiEl2Asid { asid: self.asid() },
            Opcode::TlbiEl2Va => CommandKind::TlbiEl2Va {
                asid: self.asid(),
                scope: tlbi(self, self.addr()),
            },
            Opcode::TlbiEl2Vaa => CommandKind::TlbiEl2Vaa {
                scope: tlbi(self, self.addr()),
            },
            Opcode::TlbiS12Vmall => CommandKind::TlbiS12Vmall { vmid: self.vmid() },
            Opcode::TlbiS2Ipa => CommandKind::TlbiS2Ipa {
                vmid: self.vmid(),
                scope: tlbi(self, self.ipa()),
            },
            Opcode::TlbiNsnhAll => CommandKind::TlbiNsnhAll,
            Opcode::AtcInv => CommandKind::AtcInv {
                sid: self.sid(),
                ssid: self.substream(),
                addr: self.addr(),
                size: self.atc_size(),
                global: self.global(),
            },
            Opcode::PriResp => CommandKind::PriResp {
                sid: self.sid(),
                ssid: self.substream(),
                prgi: self.prgi(),
                resp: self.pri_response()?,
            },
            Opcode::Resume => CommandKind::Resume {
                sid: self.sid(),
                stag: self.stag(),
                action: self.resume_action(),
            },
            Opcode::StallTerm => CommandKind::StallTerm { sid: self.sid() },
            Opcode::Sync => CommandKind::Sync {
                cs: self.sync_cs()?,
                msi_addr: self.msi_addr(),
                msi_data: self.msi_data(),
            },
        })
    }
}

/// One piece of a range invalidation (IHI 0070 §4.4.1.1): `(num + 1) x
/// 2^scale` granules starting `offset` granules after the range's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RangePiece {
    pub offset: u64,
    pub num: u8,
    pub scale: u8,
}

impl RangePiece {
    /// Granules covered.
    pub const fn granules(&self) -> u64 {
        (self.num as u64 + 1) << self.scale
    }
}

/// Splits `granules` granules into range invalidations, largest first:
/// each piece is `(NUM + 1) x 2^SCALE` granules with NUM in 0..=31 (5 bits)
/// and SCALE in 0..=31 (5 bits, the width when SMMU_IDR5.DS == 0). A piece
/// takes the top five significant bits of what is left, so a count of up
/// to 2^10 granules needs at most two pieces (a count below 2^36, at most
/// eight; above that every piece is the largest one, 2^36 granules).
/// A one-granule piece (NUM = SCALE = 0) is valid only with a level hint
/// (TTL != 0): with TTL = 0 the combination is reserved (CERROR_ILL), so a
/// caller without the hint issues it as a non-range command instead.
#[derive(Clone, Copy, Debug)]
pub struct RangePieces {
    offset: u64,
    left: u64,
}

impl RangePieces {
    pub const fn new(granules: u64) -> Self {
        Self {
            offset: 0,
            left: granules,
        }
    }
}

impl Iterator for RangePieces {
    type Item = RangePiece;
    fn next(&mut self) -> Option<RangePiece> {
        if self.left == 0 {
            return None;
        }
        let bits = 64 - self.left.leading_zeros();
        // SCALE must fit its 5 bits: above 2^36 granules the piece is
        // the largest expressible one (NUM = SCALE = 31).
        let scale = bits.saturating_sub(5).min(31);
        let num = ((self.left >> scale) - 1).min(31) as u8;
        let piece = RangePiece {
            offset: self.offset,
            num,
            scale: scale as u8,
        };
        self.offset += piece.granules();
        self.left -= piece.granules();
        Some(piece)
    }
}

/// The address operand of a TLBI: a single address, or (TG != 0) a range
/// of (NUM + 1) x 2^SCALE granules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlbiScope {
    /// VA or IPA, 4 KiB aligned.
    pub addr: u64,
    /// Only last-level entries need invalidating.
    pub leaf: bool,
    pub num: u8,
    pub scale: u8,
    /// 0 = not a range; 1 = 4K, 2 = 16K, 3 = 64K granule.
    pub tg: u8,
    /// Level hint.
    pub ttl: u8,
}

impl TlbiScope {
    /// The byte range the command covers: `[addr, addr + len)`; a non-range
    /// command covers whatever entry contains `addr` (length 1 here).
    pub fn range(&self) -> (u64, u64) {
        if self.tg == 0 {
            return (self.addr, 1);
        }
        let granule_shift = match self.tg {
            1 => 12,
            2 => 14,
            _ => 16,
        };
        let len = ((self.num as u64) + 1) << (self.scale as u32 + granule_shift);
        (self.addr, len)
    }
}

/// A decoded command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandKind {
    PrefetchConfig {
        sid: u32,
        ssid: Option<u32>,
    },
    PrefetchAddr {
        sid: u32,
        ssid: Option<u32>,
        addr: u64,
        size: u8,
    },
    CfgiSte {
        sid: u32,
        leaf: bool,
    },
    CfgiSteRange {
        sid: u32,
        range: u8,
    },
    /// CFGI_STE_RANGE with Range = 31.
    CfgiAll,
    CfgiCd {
        sid: u32,
        ssid: u32,
        leaf: bool,
    },
    CfgiCdAll {
        sid: u32,
    },
    TlbiNhAll {
        vmid: u16,
    },
    TlbiNhAsid {
        vmid: u16,
        asid: u16,
    },
    TlbiNhVa {
        vmid: u16,
        asid: u16,
        scope: TlbiScope,
    },
    TlbiNhVaa {
        vmid: u16,
        scope: TlbiScope,
    },
    TlbiEl3All,
    TlbiEl3Va {
        scope: TlbiScope,
    },
    TlbiEl2All,
    TlbiEl2Asid {
        asid: u16,
    },
    TlbiEl2Va {
        asid: u16,
        scope: TlbiScope,
    },
    TlbiEl2Vaa {
        scope: TlbiScope,
    },
    TlbiS12Vmall {
        vmid: u16,
    },
    TlbiS2Ipa {
        vmid: u16,
        scope: TlbiScope,
    },
    TlbiNsnhAll,
    AtcInv {
        sid: u32,
        ssid: Option<u32>,
        addr: u64,
        size: u8,
        global: bool,
    },
    PriResp {
        sid: u32,
        ssid: Option<u32>,
        prgi: u16,
        resp: PriResponse,
    },
    Resume {
        sid: u32,
        stag: u16,
        action: ResumeAction,
    },
    StallTerm {
        sid: u32,
    },
    Sync {
        cs: SyncCs,
        msi_addr: u64,
        msi_data: u32,
    },
}
