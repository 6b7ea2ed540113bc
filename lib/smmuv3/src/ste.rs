//! Stream table entries (STE, 64 bytes) and level 1 stream table
//! descriptors.

use crate::attrs::{AddrSize, Cacheability, Shareability, Tg0};
use crate::entry::EntryField;
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

spec_enum! {
    /// STE.Config: what happens to the stream's transactions. 0b001..0b011
    /// are reserved and behave as 0b000 (abort, no event recorded; IHI 0070
    /// §5.2 Config), so decoding them gives `Err` but they are not ILLEGAL.
    pub enum StreamConfig as "STE.Config" {
        /// Abort every transaction; no event is recorded.
        Abort = 0b000,
        /// Stage 1 and stage 2 bypass.
        Bypass = 0b100,
        /// Stage 1 translates, stage 2 bypass.
        S1Trans = 0b101,
        /// Stage 1 bypass, stage 2 translates.
        S2Trans = 0b110,
        /// Both stages translate (nested).
        Nested = 0b111,
    }
}

impl StreamConfig {
    /// Stage 1 translates.
    pub const fn s1_enabled(self) -> bool {
        matches!(self, StreamConfig::S1Trans | StreamConfig::Nested)
    }
    /// Stage 2 translates.
    pub const fn s2_enabled(self) -> bool {
        matches!(self, StreamConfig::S2Trans | StreamConfig::Nested)
    }
}

spec_enum! {
    /// STE.S1Fmt: layout of the CD table (used when S1CDMax > 0).
    pub enum S1Fmt as "STE.S1Fmt" {
        /// One linear array of 2^S1CDMax CDs.
        Linear = 0b00,
        /// 2-level: L1 indexed by SSID\[n:6\], 4 KiB leaf tables of 64 CDs.
        TwoLevel4K = 0b01,
        /// 2-level: L1 indexed by SSID\[n:10\], 64 KiB leaf tables of 1024 CDs.
        TwoLevel64K = 0b10,
    }
}

impl S1Fmt {
    /// log2 of the number of CDs in one leaf table (2-level formats only).
    pub const fn leaf_bits(self) -> Option<u32> {
        match self {
            S1Fmt::Linear => None,
            S1Fmt::TwoLevel4K => Some(6),
            S1Fmt::TwoLevel64K => Some(10),
        }
    }
}

spec_enum! {
    /// STE.S1DSS: what happens to transactions *without* a SubstreamID when
    /// S1CDMax > 0 (IHI 0070 §5.2; IGNORED when S1CDMax = 0).
    pub enum S1Dss as "STE.S1DSS" {
        /// Terminate them: abort, F_STREAM_DISABLED recorded.
        Terminate = 0b00,
        /// Stage 1 bypass for them (as STE.Config = 0b1x0; no CD fetch).
        Bypass = 0b01,
        /// Translate them with CD 0, which is then unavailable to
        /// transactions *with* a SubstreamID: one selecting SubstreamID 0
        /// is terminated with F_STREAM_DISABLED (not C_BAD_SUBSTREAMID).
        /// Their ATC entries carry no PASID, so CMD_ATC_INV for CD 0 uses
        /// SSV = 0 (§4.5.1).
        Ssid0 = 0b10,
    }
}

spec_enum! {
    /// STE.EATS: ATS handling.
    pub enum Eats as "STE.EATS" {
        /// ATS translation requests are aborted.
        Abort = 0b00,
        /// Full ATS.
        Trans = 0b01,
        /// Split-stage ATS (stage 1 only in the ATS response).
        S1Chk = 0b10,
    }
}

spec_enum! {
    /// STE.STRW: the translation regime (StreamWorld) of stage 1.
    pub enum Strw as "STE.STRW" {
        /// NS-EL1 (TLB entries tagged with ASID and S2VMID).
        El1 = 0b00,
        /// EL3 (Secure streams only).
        El3 = 0b01,
        /// EL2 (tagged without ASID; needs IDR0.HYP).
        El2 = 0b10,
        /// EL2-E2H (tagged with ASID; needs IDR0.HYP and CR2.E2H).
        El2E2h = 0b11,
    }
}

spec_enum! {
    /// STE.SHCFG: shareability override.
    pub enum Shcfg as "STE.SHCFG" {
        NonShareable = 0b00,
        /// Use the incoming shareability.
        UseIncoming = 0b01,
        OuterShareable = 0b10,
        InnerShareable = 0b11,
    }
}

spec_enum! {
    /// STE.PRIVCFG: privilege override.
    pub enum PrivCfg as "STE.PRIVCFG" {
        UseIncoming = 0b00,
        Unprivileged = 0b10,
        Privileged = 0b11,
    }
}

spec_enum! {
    /// STE.INSTCFG: instruction/data override.
    pub enum InstCfg as "STE.INSTCFG" {
        UseIncoming = 0b00,
        Data = 0b10,
        Instruction = 0b11,
    }
}

/// A stream table entry: 8 little-endian 64-bit words.
///
/// Update rule (PROTOCOL-FACTS): if only one word's used bits change,
/// write it in place; otherwise clear V, write the other words, then word 0,
/// with CFGI_STE + SYNC after each step.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct Ste {
    words: [U64; 8],
}

entry_words!(Ste, 8);

impl Ste {
    // ---- word 0 ----
    flag_field!(
        /// V: the entry is valid (otherwise C_BAD_STE).
        V, v, set_v, 0, 0
    );
    enum_field!(
        /// Config.
        CONFIG, config, set_config, StreamConfig, 0, 3, 1
    );
    enum_field!(
        /// S1Fmt: CD table format.
        S1FMT, s1fmt, set_s1fmt, S1Fmt, 0, 5, 4
    );
    addr_field!(
        /// S1ContextPtr: address of the CD (table), an IPA when stage 2 is
        /// enabled. Bits \[51:6\].
        S1CONTEXTPTR, s1_context_ptr, set_s1_context_ptr, 0, 51, 6
    );
    uint_field!(
        /// S1CDMax: log2 of the number of CDs (0 = one CD, no substreams).
        S1CDMAX, s1cdmax, set_s1cdmax, u8, 0, 63, 59
    );

    // ---- word 1 ----
    enum_field!(
        /// S1DSS: default substream behaviour.
        S1DSS, s1dss, set_s1dss, S1Dss, 1, 1, 0
    );
    enum_field!(
        /// S1CIR: inner cacheability of CD table accesses.
        S1CIR, s1cir, set_s1cir, Cacheability, 1, 3, 2
    );
    enum_field!(
        /// S1COR: outer cacheability of CD table accesses.
        S1COR, s1cor, set_s1cor, Cacheability, 1, 5, 4
    );
    enum_field!(
        /// S1CSH: shareability of CD table accesses.
        S1CSH, s1csh, set_s1csh, Shareability, 1, 7, 6
    );
    uint_field!(
        /// S2HWU59..S2HWU62: hardware use of stage 2 descriptor bits 59..62.
        S2HWU, s2hwu, set_s2hwu, u8, 1, 11, 8
    );
    flag_field!(
        /// DRE: destructive read enable.
        DRE, dre, set_dre, 1, 12
    );
    uint_field!(
        /// CONT: contiguous hint.
        CONT, cont, set_cont, u8, 1, 16, 13
    );
    flag_field!(
        /// DCP: directed cache prefetch.
        DCP, dcp, set_dcp, 1, 17
    );
    flag_field!(
        /// PPAR: PRG response PASID required (PRI responses carry the PASID).
        PPAR, ppar, set_ppar, 1, 18
    );
    flag_field!(
        /// MEV: merge events.
        MEV, mev, set_mev, 1, 19
    );
    flag_field!(
        /// S2FWB: stage 2 forced write-back.
        S2FWB, s2fwb, set_s2fwb, 1, 25
    );
    flag_field!(
        /// S1MPAM.
        S1MPAM, s1mpam, set_s1mpam, 1, 26
    );
    flag_field!(
        /// S1STALLD: stage 1 stall disable (CD.S is ignored when set).
        S1STALLD, s1stalld, set_s1stalld, 1, 27
    );
    enum_field!(
        /// EATS: ATS enable.
        EATS, eats, set_eats, Eats, 1, 29, 28
    );
    enum_field!(
        /// STRW: StreamWorld.
        STRW, strw, set_strw, Strw, 1, 31, 30
    );
    uint_field!(
        /// MemAttr override.
        MEMATTR, memattr, set_memattr, u8, 1, 35, 32
    );
    flag_field!(
        /// MTCFG: use MemAttr.
        MTCFG, mtcfg, set_mtcfg, 1, 36
    );
    uint_field!(
        /// ALLOCCFG: allocation hints override.
        ALLOCCFG, alloccfg, set_alloccfg, u8, 1, 40, 37
    );
    enum_field!(
        /// SHCFG: shareability override.
        SHCFG, shcfg, set_shcfg, Shcfg, 1, 45, 44
    );
    uint_field!(
        /// NSCFG: security override (Secure streams).
        NSCFG, nscfg, set_nscfg, u8, 1, 47, 46
    );
    enum_field!(
        /// PRIVCFG: privilege override.
        PRIVCFG, privcfg, set_privcfg, PrivCfg, 1, 49, 48
    );
    enum_field!(
        /// INSTCFG: instruction/data override.
        INSTCFG, instcfg, set_instcfg, InstCfg, 1, 51, 50
    );

    // ---- word 2 ----
    uint_field!(
        /// S2VMID: VMID of stage 2 (and the VMID tag of NS-EL1 stage 1).
        S2VMID, s2vmid, set_s2vmid, u16, 2, 15, 0
    );
    uint_field!(
        /// S2T0SZ: stage 2 input (IPA) size is 64 - S2T0SZ bits.
        S2T0SZ, s2t0sz, set_s2t0sz, u8, 2, 37, 32
    );
    uint_field!(
        /// S2SL0: stage 2 starting level (4K: 0 = level 2, 1 = level 1,
        /// 2 = level 0).
        S2SL0, s2sl0, set_s2sl0, u8, 2, 39, 38
    );
    enum_field!(
        /// S2IR0: inner cacheability of stage 2 walks.
        S2IR0, s2ir0, set_s2ir0, Cacheability, 2, 41, 40
    );
    enum_field!(
        /// S2OR0: outer cacheability of stage 2 walks.
        S2OR0, s2or0, set_s2or0, Cacheability, 2, 43, 42
    );
    enum_field!(
        /// S2SH0: shareability of stage 2 walks.
        S2SH0, s2sh0, set_s2sh0, Shareability, 2, 45, 44
    );
    enum_field!(
        /// S2TG: stage 2 granule.
        S2TG, s2tg, set_s2tg, Tg0, 2, 47, 46
    );
    enum_field!(
        /// S2PS: stage 2 output (physical) address size.
        S2PS, s2ps, set_s2ps, AddrSize, 2, 50, 48
    );
    flag_field!(
        /// S2AA64: stage 2 uses AArch64 tables (must be 1 here: QEMU
        /// asserts on 0).
        S2AA64, s2aa64, set_s2aa64, 2, 51
    );
    flag_field!(
        /// S2ENDI: stage 2 tables are big-endian.
        S2ENDI, s2endi, set_s2endi, 2, 52
    );
    flag_field!(
        /// S2AFFD: stage 2 Access flag fault disable.
        S2AFFD, s2affd, set_s2affd, 2, 53
    );
    flag_field!(
        /// S2PTW: protected table walk (stage 1 walks to Device memory fault).
        S2PTW, s2ptw, set_s2ptw, 2, 54
    );
    flag_field!(
        /// S2HD: stage 2 hardware dirty-state update.
        S2HD, s2hd, set_s2hd, 2, 55
    );
    flag_field!(
        /// S2HA: stage 2 hardware Access flag update.
        S2HA, s2ha, set_s2ha, 2, 56
    );
    flag_field!(
        /// S2S: stage 2 faults stall.
        S2S, s2s, set_s2s, 2, 57
    );
    flag_field!(
        /// S2R: stage 2 faults are recorded.
        S2R, s2r, set_s2r, 2, 58
    );

    // ---- word 3 ----
    addr_field!(
        /// S2TTB: stage 2 translation table base, bits \[51:4\].
        S2TTB, s2ttb, set_s2ttb, 3, 51, 4
    );

    /// Mask, per word, of the bits the SMMU reads for this entry's
    /// configuration: the basis of the "one word changes → update in place"
    /// rule. Fields of a disabled stage are not used; an invalid or abort
    /// entry uses only V and Config.
    pub fn used_bits(&self) -> [u64; 8] {
        let mut used = [0u64; 8];
        let mut add = |f: EntryField| used[f.word] |= f.mask();
        add(Self::V);
        if !self.v() {
            return used;
        }
        add(Self::CONFIG);
        let cfg = match self.config() {
            Ok(c) => c,
            Err(_) => return used,
        };
        if matches!(cfg, StreamConfig::Abort) {
            return used;
        }
        for f in [
            Self::SHCFG,
            Self::MTCFG,
            Self::MEMATTR,
            Self::ALLOCCFG,
            Self::PRIVCFG,
            Self::INSTCFG,
            Self::EATS,
            Self::MEV,
        ] {
            add(f);
        }
        if cfg.s1_enabled() {
            for f in [
                Self::S1FMT,
                Self::S1CONTEXTPTR,
                Self::S1CDMAX,
                Self::S1DSS,
                Self::S1CIR,
                Self::S1COR,
                Self::S1CSH,
                Self::S1STALLD,
                Self::STRW,
            ] {
                add(f);
            }
        }
        if cfg.s2_enabled() || (cfg.s1_enabled() && self.strw() == Ok(Strw::El1)) {
            add(Self::S2VMID);
        }
        if cfg.s2_enabled() {
            for f in [
                Self::S2T0SZ,
                Self::S2SL0,
                Self::S2IR0,
                Self::S2OR0,
                Self::S2SH0,
                Self::S2TG,
                Self::S2PS,
                Self::S2AA64,
                Self::S2ENDI,
                Self::S2AFFD,
                Self::S2PTW,
                Self::S2HD,
                Self::S2HA,
                Self::S2S,
                Self::S2R,
                Self::S2TTB,
                Self::S2FWB,
                Self::S2HWU,
            ] {
                add(f);
            }
        }
        used
    }
}

/// A level 1 stream table descriptor (8 bytes) of a 2-level stream table.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct L1StreamDesc {
    words: [U64; 1],
}

entry_words!(L1StreamDesc, 1);

impl L1StreamDesc {
    uint_field!(
        /// Span: the level 2 table holds 2^(Span-1) STEs; 0 = invalid
        /// (no level 2 table). At most STRTAB_BASE_CFG.SPLIT + 1.
        SPAN, span, set_span, u8, 0, 4, 0
    );
    addr_field!(
        /// L2Ptr: address of the level 2 table, bits \[51:6\].
        L2PTR, l2ptr, set_l2ptr, 0, 51, 6
    );

    /// A descriptor pointing at a level 2 table of `1 << split` STEs.
    pub fn new(l2ptr: u64, split: u32) -> Self {
        let mut d = Self::zeroed();
        d.set_l2ptr(l2ptr).set_span((split + 1) as u8);
        d
    }

    /// Number of STEs the level 2 table holds (0 when Span = 0).
    pub fn num_stes(&self) -> u32 {
        match self.span() {
            0 => 0,
            s => 1 << (s - 1),
        }
    }
}
