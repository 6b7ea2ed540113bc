//! Context descriptors (CD, 64 bytes) and level 1 CD table descriptors.

use crate::attrs::{AddrSize, Cacheability, Shareability, Tg0, Tg1};
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A context descriptor: the stage 1 configuration of one (stream,
/// substream). 8 little-endian 64-bit words.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct Cd {
    words: [U64; 8],
}

entry_words!(Cd, 8);

impl Cd {
    // ---- word 0 ----
    uint_field!(
        /// T0SZ: the TTB0 region is 2^(64 - T0SZ) bytes.
        T0SZ, t0sz, set_t0sz, u8, 0, 5, 0
    );
    enum_field!(
        /// TG0: TTB0 granule.
        TG0, tg0, set_tg0, Tg0, 0, 7, 6
    );
    enum_field!(
        /// IR0: inner cacheability of TTB0 walks.
        IR0, ir0, set_ir0, Cacheability, 0, 9, 8
    );
    enum_field!(
        /// OR0: outer cacheability of TTB0 walks.
        OR0, or0, set_or0, Cacheability, 0, 11, 10
    );
    enum_field!(
        /// SH0: shareability of TTB0 walks.
        SH0, sh0, set_sh0, Shareability, 0, 13, 12
    );
    flag_field!(
        /// EPD0: TTB0 walks disabled (translation fault).
        EPD0, epd0, set_epd0, 0, 14
    );
    flag_field!(
        /// ENDI: tables are big-endian.
        ENDI, endi, set_endi, 0, 15
    );
    uint_field!(
        /// T1SZ: the TTB1 region is the top 2^(64 - T1SZ) bytes.
        T1SZ, t1sz, set_t1sz, u8, 0, 21, 16
    );
    enum_field!(
        /// TG1: TTB1 granule (TCR.TG1 encoding).
        TG1, tg1, set_tg1, Tg1, 0, 23, 22
    );
    enum_field!(
        /// IR1.
        IR1, ir1, set_ir1, Cacheability, 0, 25, 24
    );
    enum_field!(
        /// OR1.
        OR1, or1, set_or1, Cacheability, 0, 27, 26
    );
    enum_field!(
        /// SH1.
        SH1, sh1, set_sh1, Shareability, 0, 29, 28
    );
    flag_field!(
        /// EPD1: TTB1 walks disabled.
        EPD1, epd1, set_epd1, 0, 30
    );
    flag_field!(
        /// V: the CD is valid (otherwise C_BAD_CD).
        V, v, set_v, 0, 31
    );
    enum_field!(
        /// IPS: intermediate (stage 1 output) address size.
        IPS, ips, set_ips, AddrSize, 0, 34, 32
    );
    flag_field!(
        /// AFFD: Access flag fault disable.
        AFFD, affd, set_affd, 0, 35
    );
    flag_field!(
        /// WXN: writable implies execute-never.
        WXN, wxn, set_wxn, 0, 36
    );
    flag_field!(
        /// UWXN: unprivileged writable implies privileged execute-never.
        UWXN, uwxn, set_uwxn, 0, 37
    );
    uint_field!(
        /// TBI: top-byte ignore, bit 0 for TTB0, bit 1 for TTB1.
        TBI, tbi, set_tbi, u8, 0, 39, 38
    );
    flag_field!(
        /// PAN: privileged access never.
        PAN, pan, set_pan, 0, 40
    );
    flag_field!(
        /// AA64: AArch64 tables (the only format used here).
        AA64, aa64, set_aa64, 0, 41
    );
    flag_field!(
        /// HD: hardware dirty-state update.
        HD, hd, set_hd, 0, 42
    );
    flag_field!(
        /// HA: hardware Access flag update.
        HA, ha, set_ha, 0, 43
    );
    flag_field!(
        /// S: stage 1 faults stall (unless STE.S1STALLD).
        S, s, set_s, 0, 44
    );
    flag_field!(
        /// R: stage 1 faults are recorded in the event queue.
        R, r, set_r, 0, 45
    );
    flag_field!(
        /// A: abort (rather than RAZ/WI) terminated transactions.
        A, a, set_a, 0, 46
    );
    flag_field!(
        /// ASET: ASID set (IHI 0070 §5.4). 0: the ASID is in the set shared
        /// with PE processes — matching broadcast TLB invalidations from the
        /// CPUs apply to entries from this CD. 1: non-shared — an
        /// SMMU-local address space that such broadcast invalidations by
        /// ASID need not reach; SMMU commands must invalidate it.
        ASET, aset, set_aset, 0, 47
    );
    uint_field!(
        /// ASID.
        ASID, asid, set_asid, u16, 0, 63, 48
    );

    // ---- word 1 ----
    flag_field!(
        /// NSCFG0: TTB0 walks are Non-secure (Secure streams).
        NSCFG0, nscfg0, set_nscfg0, 1, 0
    );
    flag_field!(
        /// HAD0: hierarchical attributes disabled for TTB0.
        HAD0, had0, set_had0, 1, 1
    );
    addr_field!(
        /// TTB0: translation table base 0, bits \[51:4\]; an IPA when
        /// stage 2 is enabled.
        TTB0, ttb0, set_ttb0, 1, 51, 4
    );

    uint_field!(
        /// HWU0 (HWU059..HWU062): hardware use of TTB0 descriptor bits 59..62.
        HWU0, hwu0, set_hwu0, u8, 1, 63, 60
    );

    // ---- word 2 ----
    flag_field!(
        /// NSCFG1.
        NSCFG1, nscfg1, set_nscfg1, 2, 0
    );
    flag_field!(
        /// HAD1.
        HAD1, had1, set_had1, 2, 1
    );
    addr_field!(
        /// TTB1: translation table base 1, bits \[51:4\].
        TTB1, ttb1, set_ttb1, 2, 51, 4
    );

    uint_field!(
        /// HWU1 (HWU159..HWU162): hardware use of TTB1 descriptor bits 59..62.
        HWU1, hwu1, set_hwu1, u8, 2, 63, 60
    );

    // ---- word 3 ----
    uint_field!(
        /// MAIR0: MAIR_ELx attributes 0..3.
        MAIR0, mair0, set_mair0, u32, 3, 31, 0
    );
    uint_field!(
        /// MAIR1: MAIR_ELx attributes 4..7.
        MAIR1, mair1, set_mair1, u32, 3, 63, 32
    );

    // ---- word 4 ----
    uint_field!(
        /// AMAIR0.
        AMAIR0, amair0, set_amair0, u32, 4, 31, 0
    );
    uint_field!(
        /// AMAIR1.
        AMAIR1, amair1, set_amair1, u32, 4, 63, 32
    );

    /// The whole MAIR (MAIR1:MAIR0), as a CPU's MAIR_ELx.
    pub fn mair(&self) -> u64 {
        self.word(Self::MAIR0.word)
    }

    /// Sets the whole MAIR (MAIR1:MAIR0).
    pub fn set_mair(&mut self, mair: u64) -> &mut Self {
        self.set_word(Self::MAIR0.word, mair)
    }
}

/// A level 1 CD table descriptor (8 bytes) of a 2-level CD table.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct L1CdDesc {
    words: [U64; 1],
}

entry_words!(L1CdDesc, 1);

impl L1CdDesc {
    flag_field!(
        /// V: the level 2 table exists (a CD fetch through V = 0 aborts the
        /// transaction with C_BAD_SUBSTREAMID, §5.3).
        V, v, set_v, 0, 0
    );
    addr_field!(
        /// L2Ptr: address of the leaf CD table, bits \[51:12\].
        L2PTR, l2ptr, set_l2ptr, 0, 51, 12
    );

    /// A valid descriptor pointing at a leaf table.
    pub fn new(l2ptr: u64) -> Self {
        let mut d = Self::zeroed();
        d.set_l2ptr(l2ptr).set_v(true);
        d
    }
}

/// A stage 1 context as a driver (host or guest) describes it: one TTB0
/// translation regime, 4K/16K/64K granule, write-back inner-shareable
/// walks, TTB1 disabled, AArch64 tables. [`S1Context::cd`] is the one CD
/// builder (iommu-server's S1 domains and nested binds, a guest's own CD
/// table); [`S1Context::tcr`] / [`S1Context::from_tcr`] convert to and from
/// the TCR_EL1-style form an interface carries ([`crate::tcr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S1Context {
    /// TTB0: the level-0/1 table (an IPA when stage 2 is enabled).
    pub ttb0: u64,
    /// T0SZ: 2^(64 - T0SZ) bytes of input addresses.
    pub t0sz: u8,
    pub tg0: Tg0,
    /// IPS: the stage 1 output size.
    pub ips: AddrSize,
    /// MAIR (MAIR1:MAIR0), as MAIR_EL1.
    pub mair: u64,
    pub asid: u16,
    /// CD.R: stage 1 faults are recorded as events.
    pub record_faults: bool,
    /// CD.S: stage 1 faults stall (only where the SMMU stalls; an SMMU with
    /// IDR0.STALL_MODEL = 0b10 needs it set, one without stall support
    /// needs it clear).
    pub stall: bool,
}

/// Why a TCR does not describe an [`S1Context`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcrError {
    /// A bit outside [`crate::tcr::ALLOWED`], EPD0 set or EPD1 clear.
    Bits,
    /// Walk attributes other than write-back inner-shareable.
    Attributes,
    /// A reserved TG0 or IPS encoding.
    Reserved,
}

impl S1Context {
    /// The context's TCR_EL1-style value (TTB0 fields, EPD1, IPS).
    pub fn tcr(&self) -> u64 {
        use crate::tcr::*;
        (self.t0sz as u64 & T0SZ_MASK)
            | Cacheability::WriteBackAlloc.raw() << IRGN0_SHIFT
            | Cacheability::WriteBackAlloc.raw() << ORGN0_SHIFT
            | Shareability::InnerShareable.raw() << SH0_SHIFT
            | self.tg0.raw() << TG0_SHIFT
            | EPD1
            | self.ips.raw() << IPS_SHIFT
    }

    /// The context a TCR describes, with the other CD fields given. Only
    /// what [`S1Context::cd`] can express is accepted: TTB0 enabled, TTB1
    /// disabled, write-back (read/write-allocate) inner-shareable walks.
    pub fn from_tcr(ttb0: u64, tcr: u64, mair: u64, asid: u16) -> Result<Self, TcrError> {
        use crate::tcr::*;
        if tcr & !ALLOWED != 0 || tcr & EPD0 != 0 || tcr & EPD1 == 0 {
            return Err(TcrError::Bits);
        }
        let wb = Cacheability::WriteBackAlloc.raw();
        if field(tcr, IRGN0_SHIFT) != wb
            || field(tcr, ORGN0_SHIFT) != wb
            || field(tcr, SH0_SHIFT) != Shareability::InnerShareable.raw()
        {
            return Err(TcrError::Attributes);
        }
        Ok(Self {
            ttb0,
            t0sz: (tcr & T0SZ_MASK) as u8,
            tg0: Tg0::from_raw(field(tcr, TG0_SHIFT)).map_err(|_| TcrError::Reserved)?,
            ips: AddrSize::from_raw((tcr >> IPS_SHIFT) & 7).map_err(|_| TcrError::Reserved)?,
            mair,
            asid,
            record_faults: false,
            stall: false,
        })
    }

    /// The valid CD of this context. A = 1: terminated transactions abort
    /// rather than read as zero (QEMU's model requires it).
    pub fn cd(&self) -> Cd {
        let mut cd = Cd::zeroed();
        cd.set_t0sz(self.t0sz)
            .set_tg0(self.tg0)
            .set_ir0(Cacheability::WriteBackAlloc)
            .set_or0(Cacheability::WriteBackAlloc)
            .set_sh0(Shareability::InnerShareable)
            .set_epd1(true)
            .set_v(true)
            .set_ips(self.ips)
            .set_aa64(true)
            .set_s(self.stall)
            .set_r(self.record_faults)
            .set_a(true)
            .set_asid(self.asid)
            .set_ttb0(self.ttb0)
            .set_mair(self.mair);
        cd
    }

    /// The context a valid AArch64 CD describes (the inverse of
    /// [`S1Context::cd`] for what it writes); None for an invalid CD, a
    /// reserved encoding, or walk attributes it does not write.
    pub fn from_cd(cd: &Cd) -> Option<Self> {
        if !cd.v() || !cd.aa64() || cd.epd0() || !cd.epd1() {
            return None;
        }
        let mut c = Self::from_tcr(cd.ttb0(), cd.tcr().ok()?, cd.mair(), cd.asid()).ok()?;
        c.record_faults = cd.r();
        c.stall = cd.s();
        Some(c)
    }
}

impl Cd {
    /// The CD's TTB0 translation control in TCR_EL1 positions
    /// ([`crate::tcr`]); an error for a reserved encoding.
    pub fn tcr(&self) -> Result<u64, crate::ReservedEncoding> {
        use crate::tcr::*;
        Ok((self.t0sz() as u64 & T0SZ_MASK)
            | if self.epd0() { EPD0 } else { 0 }
            | self.ir0()?.raw() << IRGN0_SHIFT
            | self.or0()?.raw() << ORGN0_SHIFT
            | self.sh0()?.raw() << SH0_SHIFT
            | self.tg0()?.raw() << TG0_SHIFT
            | if self.epd1() { EPD1 } else { 0 }
            | self.ips()?.raw() << IPS_SHIFT)
    }
}
