//! Transaction translation: stream table and CD table walks with their
//! configuration cache, STE/CD validation, stage 1 / stage 2 / nested
//! VMSAv8-64 walks (4 KiB granule) with the IOTLB, and fault reporting
//! (record, stall, terminate).

use crate::config::StallModel;
use crate::device::{Access, DmaError};
use crate::smmu::State;
use crate::tlb::{Regime, S1Perm, S2Perm, TlbEntry, WalkEntry, WalkKey};
use smmuv3::pgtable::{
    level_index, level_shift, s1_start_level, s2_concatenated_tables, s2_start_level, start_index,
    S1Desc, S2Desc, LAST_LEVEL,
};
use smmuv3::regs::{CR0, CR2, GBPA, STRTAB_BASE_CFG};
use smmuv3::{
    AddrSize, Cd, Event, EventClass, EventId, L1CdDesc, L1StreamDesc, S1Dss, S1Fmt, Ste,
    StreamConfig, Strw, Tg0, Tg1,
};

/// A stalled transaction, held until CMD_RESUME or CMD_STALL_TERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StalledTxn {
    pub sid: u32,
    pub ssid: Option<u32>,
    pub iova: u64,
    pub access: Access,
}

/// A translation-class fault, before the record/stall decision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fault {
    pub id: EventId,
    pub s2: bool,
    pub class: EventClass,
    /// The IPA whose stage 2 translation faulted (S2 faults).
    pub ipa: u64,
    /// The PA of the failing fetch (F_WALK_EABT).
    pub fetch: Option<u64>,
}

impl Fault {
    fn s1(id: EventId, class: EventClass) -> Self {
        Self {
            id,
            s2: false,
            class,
            ipa: 0,
            fetch: None,
        }
    }
    fn s2(id: EventId, class: EventClass, ipa: u64) -> Self {
        Self {
            id,
            s2: true,
            class,
            ipa,
            fetch: None,
        }
    }
}

/// Why translation stopped.
pub(crate) enum Stop {
    /// Silent abort: STE.Config = abort, GBPA.ABORT, or an unrecorded
    /// invalid StreamID.
    Abort,
    /// A configuration error or fetch abort (C_*, F_STE_FETCH, F_CD_FETCH,
    /// F_STREAM_DISABLED): always recorded, never stalls.
    Config { id: EventId, fetch: Option<u64> },
    /// A translation fault (recording and stalling depend on CD/STE).
    Fault(Fault),
}

/// What the STE and CD say about reporting faults of each stage.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Policy {
    s1_record: bool,
    s1_stall: bool,
    s2_record: bool,
    s2_stall: bool,
}

/// Stage 2 parameters from an STE.
#[derive(Clone, Copy, Debug)]
struct S2Ctx {
    ia_bits: u32,
    start_level: u8,
    ttb: u64,
    oa_bits: u32,
    affd: bool,
    ptw: bool,
    vmid: u16,
}

/// Stage 1 parameters from a CD.
#[derive(Clone, Copy, Debug)]
struct S1Ctx {
    cd: Cd,
    oa_bits: u32,
}

/// A stage 1 leaf, checked.
struct S1Leaf {
    out_base: u64,
    size_log2: u32,
    perm: S1Perm,
    global: bool,
}

/// A stage 2 leaf, checked.
struct S2Leaf {
    out_base: u64,
    size_log2: u32,
    perm: S2Perm,
}

fn addr_bits(a: Result<AddrSize, smmuv3::ReservedEncoding>, oas: AddrSize) -> u32 {
    a.map(AddrSize::bits).unwrap_or(52).min(oas.bits())
}

/// Whether a starting-level table address (CD.TTBx, STE.S2TTB) is outside
/// `pa_bits` (the effective IPS / S2PS), or outside 48 bits: the model
/// walks 4 KiB granules without DS, where a larger base is ILLEGAL too
/// (IHI 0070 §5.4 TTB0, §5.2 S2TTB).
fn ttb_out_of_range(ttb: u64, pa_bits: u32) -> bool {
    ttb >> pa_bits.min(48) != 0
}

impl State {
    fn stall_allowed(&self) -> bool {
        self.cfg.stall_model != StallModel::TerminateOnly
    }

    /// Translates one access of a transaction; records events and holds
    /// stalled transactions as the architecture says.
    pub(crate) fn translate(
        &mut self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<u64, DmaError> {
        let mut pol = Policy::default();
        self.seen_sids.insert(sid);
        if let Some(ss) = ssid {
            self.seen_ssids.insert((sid, ss));
        }
        if self.cfg.eager_config_cache {
            // The SMMU may fetch or drop anything reachable at any time;
            // doing some of it right before a transaction makes the races
            // a driver must close (missing CFGI) likely to show.
            self.speculate();
        }
        match self.translate_inner(sid, ssid, iova, access, &mut pol) {
            Ok(pa) => Ok(pa),
            Err(Stop::Abort) => Err(DmaError::Aborted),
            Err(Stop::Config { id, fetch }) => {
                let mut ev = self.event(id, sid, ssid, iova, access);
                if let Some(f) = fetch {
                    ev.set_fetch_addr(f & Event::FETCH_ADDR.mask());
                }
                let recorded = self.record_event(&ev);
                Err(DmaError::Fault { id, recorded })
            }
            Err(Stop::Fault(f)) => Err(self.report_fault(sid, ssid, iova, access, f, pol)),
        }
    }

    fn event(&self, id: EventId, sid: u32, ssid: Option<u32>, iova: u64, a: Access) -> Event {
        let mut ev = Event::new(id, sid, ssid);
        ev.set_rnw(!a.write)
            .set_pnu(a.privileged)
            .set_ind(a.instruction)
            .set_input_addr(iova);
        ev
    }

    /// Records (or not) and stalls (or not) a translation fault.
    fn report_fault(
        &mut self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        a: Access,
        f: Fault,
        pol: Policy,
    ) -> DmaError {
        let (record, stall) = if f.s2 {
            (pol.s2_record, pol.s2_stall)
        } else {
            (pol.s1_record, pol.s1_stall)
        };
        let stall = stall && f.id.is_stallable() && self.stall_allowed();
        let mut ev = self.event(f.id, sid, ssid, iova, a);
        ev.set_s2(f.s2).set_class(f.class);
        if let Some(fa) = f.fetch {
            ev.set_fetch_addr(fa & Event::FETCH_ADDR.mask());
        } else if f.s2 {
            ev.set_ipa(f.ipa & Event::IPA.mask());
        }
        if f.class == EventClass::Ttd {
            ev.set_ttrnw(true);
        }
        if stall {
            let stag = self.alloc_stag(sid);
            ev.set_stall(true).set_stag(stag);
            // The transaction stays stalled whether or not its record fits
            // in the event queue now: stall records wait for room (§7.2).
            self.stalls.insert(
                (sid, stag),
                StalledTxn {
                    sid,
                    ssid,
                    iova,
                    access: a,
                },
            );
            self.record_stall_event(&ev);
            return DmaError::Stalled { stag };
        }
        let recorded = record && self.record_event(&ev);
        DmaError::Fault { id: f.id, recorded }
    }

    fn alloc_stag(&mut self, sid: u32) -> u16 {
        loop {
            let s = self.next_stag;
            self.next_stag = self.next_stag.wrapping_add(1);
            if !self.stalls.contains_key(&(sid, s)) {
                return s;
            }
        }
    }

    fn translate_inner(
        &mut self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        a: Access,
        pol: &mut Policy,
    ) -> Result<u64, Stop> {
        if !self.cr0_has(CR0::SMMUEN) {
            return if GBPA::ABORT.read(self.gbpa) != 0 {
                Err(Stop::Abort)
            } else {
                Ok(iova)
            };
        }
        let bad_ssid = Stop::Config {
            id: EventId::CBadSubstreamId,
            fetch: None,
        };
        let ste = self.get_ste(sid)?;
        let config = ste.config().map_err(|_| Stop::Abort)?;
        match config {
            StreamConfig::Abort => return Err(Stop::Abort),
            StreamConfig::Bypass => {
                return if ssid.is_some() {
                    Err(bad_ssid)
                } else {
                    Ok(iova)
                };
            }
            _ => {}
        }
        if ssid.is_some_and(|s| self.cfg.ssidsize == 0 || s >> self.cfg.ssidsize != 0) {
            return Err(bad_ssid);
        }
        let s2 = config.s2_enabled().then(|| self.s2_ctx(&ste));
        if s2.is_some() {
            pol.s2_record = ste.s2r();
            // StallForced requires S2S = 1 (`ste_is_legal`).
            pol.s2_stall = ste.s2s();
        }

        // Which CD (if any) stage 1 uses.
        let cd_key: Option<u32> = if config.s1_enabled() {
            let max = self.s1cdmax(&ste) as u32;
            match ssid {
                None if max == 0 => Some(0),
                None => match ste.s1dss() {
                    Ok(S1Dss::Terminate) | Err(_) => {
                        return Err(Stop::Config {
                            id: EventId::FStreamDisabled,
                            fetch: None,
                        })
                    }
                    Ok(S1Dss::Bypass) => None,
                    Ok(S1Dss::Ssid0) => Some(0),
                },
                Some(_) if max == 0 => return Err(bad_ssid),
                Some(s) if s >> max != 0 => return Err(bad_ssid),
                Some(0) if ste.s1dss() == Ok(S1Dss::Ssid0) => return Err(bad_ssid),
                Some(s) => Some(s),
            }
        } else {
            if ssid.is_some() {
                return Err(bad_ssid);
            }
            None
        };

        let s1 = match cd_key {
            Some(key) => {
                let cd = self.get_cd(sid, key, &ste, s2.as_ref())?;
                pol.s1_record = cd.r();
                pol.s1_stall = match self.cfg.stall_model {
                    StallModel::StallForced => true,
                    StallModel::StallAndTerminate => cd.s() && !ste.s1stalld(),
                    StallModel::TerminateOnly => false,
                };
                Some(S1Ctx {
                    cd,
                    oa_bits: addr_bits(cd.ips(), self.cfg.oas),
                })
            }
            None => None,
        };

        // IOTLB.
        let (regime, asid) = match &s1 {
            Some(ctx) => {
                let asid = ctx.cd.asid() & self.cfg.asid_mask();
                match ste.strw() {
                    Ok(Strw::El2E2h) if CR2::E2H.read(self.cr2) != 0 => {
                        (Regime::El2E2h, Some(asid))
                    }
                    Ok(Strw::El2) | Ok(Strw::El2E2h) => (Regime::El2, None),
                    _ => (
                        Regime::El1 {
                            vmid: ste.s2vmid() & self.cfg.vmid_mask(),
                        },
                        Some(asid),
                    ),
                }
            }
            None => (
                Regime::S2 {
                    vmid: ste.s2vmid() & self.cfg.vmid_mask(),
                },
                None,
            ),
        };
        if let Some(e) = self.tlb.lookup(regime, asid, iova) {
            let off = iova - e.in_base;
            if let Some(p) = e.s1 {
                if !p.allows(a) {
                    return Err(Stop::Fault(Fault::s1(EventId::FPermission, EventClass::In)));
                }
            }
            if let Some(p) = e.s2 {
                if !p.allows(a) {
                    return Err(Stop::Fault(Fault::s2(
                        EventId::FPermission,
                        EventClass::In,
                        e.ipa_base + off,
                    )));
                }
            }
            return Ok(e.out_base + off);
        }

        // Walk.
        let entry = match (&s1, &s2) {
            (Some(ctx), s2) => {
                let wkey = WalkKey::S1 { regime, asid };
                let leaf = self.walk_s1(ctx, s2.as_ref(), iova, a, wkey)?;
                let ipa = leaf.out_base | (iova & ((1u64 << leaf.size_log2) - 1));
                let (pa, size_log2, s2perm) = match s2 {
                    Some(s2) => {
                        let l2 = self.walk_s2(s2, ipa, a, EventClass::In)?;
                        let pa = l2.out_base | (ipa & ((1u64 << l2.size_log2) - 1));
                        (pa, leaf.size_log2.min(l2.size_log2), Some(l2.perm))
                    }
                    None => (ipa, leaf.size_log2, None),
                };
                let mask = (1u64 << size_log2) - 1;
                TlbEntry {
                    regime,
                    asid: if leaf.global { None } else { asid },
                    in_base: iova & !mask,
                    size_log2,
                    out_base: pa & !mask,
                    ipa_base: ipa & !mask,
                    s1: Some(leaf.perm),
                    s2: s2perm,
                    s2_device: false,
                }
            }
            (None, Some(s2)) => {
                let l2 = self.walk_s2(s2, iova, a, EventClass::In)?;
                let mask = (1u64 << l2.size_log2) - 1;
                TlbEntry {
                    regime,
                    asid: None,
                    in_base: iova & !mask,
                    size_log2: l2.size_log2,
                    out_base: l2.out_base,
                    ipa_base: iova & !mask,
                    s1: None,
                    s2: Some(l2.perm),
                    s2_device: false,
                }
            }
            // S1DSS = bypass on a stage-1-only stream.
            (None, None) => return Ok(iova),
        };
        self.tlb.insert(entry);
        Ok(entry.out_base + (iova - entry.in_base))
    }

    fn s2_ctx(&self, ste: &Ste) -> S2Ctx {
        // Validated in `validate_ste`.
        let start_level = s2_start_level(ste.s2sl0()).unwrap_or(1);
        S2Ctx {
            ia_bits: 64 - ste.s2t0sz() as u32,
            start_level,
            ttb: ste.s2ttb(),
            oa_bits: addr_bits(ste.s2ps(), self.cfg.oas),
            affd: ste.s2affd(),
            ptw: ste.s2ptw(),
            vmid: ste.s2vmid() & self.cfg.vmid_mask(),
        }
    }

    // ---------------------------------------------------------------
    // Stream table

    /// The STE for `sid`, from the configuration cache or memory.
    fn get_ste(&mut self, sid: u32) -> Result<Ste, Stop> {
        let bad_ste = Stop::Config {
            id: EventId::CBadSte,
            fetch: None,
        };
        if let Some(ste) = self.ste_cache.get(&sid).copied() {
            // Only eager caching puts invalid entries here.
            return if self.ste_is_legal(&ste) {
                Ok(ste)
            } else {
                Err(bad_ste)
            };
        }
        let addr = self.ste_addr(sid)?;
        let ste: Ste = self.mem.read_obj(addr).map_err(|_| Stop::Config {
            id: EventId::FSteFetch,
            fetch: Some(addr),
        })?;
        let legal = self.ste_is_legal(&ste);
        // An implementation may cache what it fetched, valid or not
        // (§3.21.3); the lenient model caches valid entries only.
        if legal || self.cfg.eager_config_cache {
            self.ste_cache.insert(sid, ste);
        }
        if legal {
            Ok(ste)
        } else {
            Err(bad_ste)
        }
    }

    /// The STE for `sid` from the cache, or fetched (and cached as
    /// [`State::get_ste`] would), valid or not; `None` if unreachable or
    /// the fetch failed. Records nothing.
    pub(crate) fn get_ste_any(&mut self, sid: u32) -> Option<Ste> {
        if let Some(s) = self.ste_cache.get(&sid) {
            return Some(*s);
        }
        let addr = self.ste_addr(sid).ok()?;
        let ste: Ste = self.mem.read_obj(addr).ok()?;
        if self.cfg.eager_config_cache || self.ste_is_legal(&ste) {
            self.ste_cache.insert(sid, ste);
        }
        Some(ste)
    }

    /// Where the STE of `sid` is (through the L1STD), recording nothing.
    pub(crate) fn ste_addr_quiet(&mut self, sid: u32) -> Option<u64> {
        self.ste_addr(sid).ok()
    }

    /// The CD (`sid`, `ssid`) of a valid stage-1 STE through the cache,
    /// fetched and cached if absent; records nothing.
    pub(crate) fn get_cd_quiet(&mut self, sid: u32, ssid: u32, ste: &Ste) -> Option<Cd> {
        let s2 = ste
            .config()
            .ok()
            .filter(|c| c.s2_enabled())
            .map(|_| self.s2_ctx(ste));
        self.get_cd(sid, ssid, ste, s2.as_ref()).ok()
    }

    /// The STE the SMMU would use for `sid` if it is valid and legal,
    /// without recording anything (STE.PPAR checks, CMD_STALL_TERM).
    pub(crate) fn ste_for_check(&mut self, sid: u32) -> Option<Ste> {
        if !self.cr0_has(CR0::SMMUEN) {
            return None;
        }
        self.get_ste(sid).ok()
    }

    /// True if every new transaction of `sid` terminates without stalling:
    /// the STE the SMMU uses is Config = abort, or invalid/ILLEGAL (or the
    /// StreamID is out of range), or the SMMU is off with GBPA.ABORT.
    pub(crate) fn ste_terminates_all(&mut self, sid: u32) -> bool {
        if !self.cr0_has(CR0::SMMUEN) {
            return GBPA::ABORT.read(self.gbpa) != 0;
        }
        match self.get_ste(sid) {
            Ok(ste) => matches!(ste.config(), Ok(StreamConfig::Abort) | Err(_)),
            Err(Stop::Config { id, .. }) => id != EventId::FSteFetch,
            Err(_) => true,
        }
    }

    /// STRTAB_BASE_CFG.SPLIT as used for 2-level tables.
    pub(crate) fn strtab_split(&self) -> u32 {
        let cfg = self.strtab_base_cfg;
        let log2size = STRTAB_BASE_CFG::LOG2SIZE.read(cfg).min(self.cfg.sidsize);
        STRTAB_BASE_CFG::SPLIT.read(cfg).min(log2size)
    }

    /// Address of the STE for `sid` (walking the level 1 table if 2-level).
    fn ste_addr(&mut self, sid: u32) -> Result<u64, Stop> {
        // An invalid StreamID is recorded only with CR2.RECINVSID.
        let bad_sid = if CR2::RECINVSID.read(self.cr2) != 0 {
            Stop::Config {
                id: EventId::CBadStreamId,
                fetch: None,
            }
        } else {
            Stop::Abort
        };
        let cfg = self.strtab_base_cfg;
        let log2size = STRTAB_BASE_CFG::LOG2SIZE.read(cfg).min(self.cfg.sidsize);
        if (sid as u64) >> log2size != 0 {
            return Err(bad_sid);
        }
        let base = self.strtab_addr();
        let fmt = STRTAB_BASE_CFG::FMT.read(cfg);
        if fmt == STRTAB_BASE_CFG::FMT::Linear.value >> STRTAB_BASE_CFG::FMT.shift {
            return Ok(base + sid as u64 * Ste::BYTES as u64);
        }
        let two_level = STRTAB_BASE_CFG::FMT::TwoLevel.value >> STRTAB_BASE_CFG::FMT.shift;
        if fmt != two_level || !self.cfg.two_level_strtab {
            return Err(bad_sid);
        }
        let split = STRTAB_BASE_CFG::SPLIT.read(cfg).min(log2size);
        let l1_index = sid as u64 >> split;
        let l1_addr = base + l1_index * L1StreamDesc::BYTES as u64;
        let l1: L1StreamDesc = match self.l1std_cache.get(&l1_index) {
            Some(l1) => *l1,
            None => {
                let l1: L1StreamDesc = self.mem.read_obj(l1_addr).map_err(|_| Stop::Config {
                    id: EventId::FSteFetch,
                    fetch: Some(l1_addr),
                })?;
                // Only eager caching keeps L1STDs (valid or not).
                if self.cfg.eager_config_cache {
                    self.l1std_cache.insert(l1_index, l1);
                }
                l1
            }
        };
        let l2_index = sid as u64 & ((1u64 << split) - 1);
        if l1.span() as u32 > split + 1 || l2_index >= l1.num_stes() as u64 {
            return Err(bad_sid);
        }
        Ok(l1.l2ptr() + l2_index * Ste::BYTES as u64)
    }

    /// STE.S1CDMax as the SMMU uses it: IGNORED (one CD) when
    /// IDR1.SSIDSIZE = 0 (IHI 0070 §5.2).
    pub(crate) fn s1cdmax(&self, ste: &Ste) -> u8 {
        if self.cfg.ssidsize == 0 {
            0
        } else {
            ste.s1cdmax()
        }
    }

    /// STE checks that make an entry C_BAD_STE.
    pub(crate) fn ste_is_legal(&self, ste: &Ste) -> bool {
        if !ste.v() {
            return false;
        }
        // Config 0b001..0b011: reserved, behaves as 0b000 (abort, no
        // event; IHI 0070 §5.2), so not ILLEGAL.
        let Ok(config) = ste.config() else {
            return true;
        };
        let c = &self.cfg;
        if config.s1_enabled() {
            if !c.s1p || self.s1cdmax(ste) as u32 > c.ssidsize {
                return false;
            }
            if self.s1cdmax(ste) > 0 {
                match ste.s1fmt() {
                    Ok(S1Fmt::Linear) => {}
                    Ok(S1Fmt::TwoLevel4K) | Ok(S1Fmt::TwoLevel64K) if c.two_level_cd => {}
                    _ => return false,
                }
                if ste.s1dss().is_err() {
                    return false;
                }
            }
            match ste.strw() {
                Ok(Strw::El1) => {}
                Ok(Strw::El2) | Ok(Strw::El2E2h) if c.hyp => {}
                _ => return false,
            }
            // SteIllegal(): S1STALLD = 1 needs STALL_MODEL = 0b00.
            if ste.s1stalld() && c.stall_model != StallModel::StallAndTerminate {
                return false;
            }
        }
        if config.s2_enabled() {
            if !c.s2p || !ste.s2aa64() || ste.s2endi() || ste.s2tg() != Ok(Tg0::Granule4K) {
                return false;
            }
            let Some(level) = s2_start_level(ste.s2sl0()) else {
                return false;
            };
            let t0sz = ste.s2t0sz();
            if !(16..=39).contains(&t0sz) || s2_concatenated_tables(t0sz, level).is_none() {
                return false;
            }
            if ste.s2s() && c.stall_model == StallModel::TerminateOnly {
                return false;
            }
            // SteIllegal(): stall forced (STALL_MODEL = 0b10) but S2S = 0.
            if !ste.s2s() && c.stall_model == StallModel::StallForced {
                return false;
            }
            // IDR0.HTTU = 0: S2HA / S2HD are ILLEGAL (§5.2 S2HA, S2HD).
            if ste.s2ha() || ste.s2hd() {
                return false;
            }
            // SteIllegal() (STES2TTBOutOfRange): S2TTB outside the
            // effective S2PS, or (4 KiB granule, no S2DS) outside 48 bits.
            if ttb_out_of_range(ste.s2ttb(), addr_bits(ste.s2ps(), c.oas)) {
                return false;
            }
        }
        // SteIllegal(): 8-bit VMIDs and S2VMID[15:8] != 0, where S2VMID is
        // not IGNORED (stage 2 on, or stage 1 in StreamWorld NS-EL1).
        let vmid_used =
            config.s2_enabled() || (config.s1_enabled() && c.s2p && ste.strw() == Ok(Strw::El1));
        if vmid_used && !c.vmid16 && ste.s2vmid() >> 8 != 0 {
            return false;
        }
        true
    }

    // ---------------------------------------------------------------
    // CD table

    /// Reads configuration memory at `addr` (an IPA when stage 2 is on).
    fn read_cfg<T: zerocopy::FromBytes + zerocopy::IntoBytes>(
        &mut self,
        addr: u64,
        s2: Option<&S2Ctx>,
    ) -> Result<T, Stop> {
        let pa = match s2 {
            Some(s2) => {
                let l = self.walk_s2(s2, addr, Access::READ, EventClass::Cd)?;
                l.out_base | (addr & ((1u64 << l.size_log2) - 1))
            }
            None => addr,
        };
        self.mem.read_obj(pa).map_err(|_| Stop::Config {
            id: EventId::FCdFetch,
            fetch: Some(pa),
        })
    }

    /// The CD (`sid`, `ssid`) from the configuration cache or memory.
    fn get_cd(&mut self, sid: u32, ssid: u32, ste: &Ste, s2: Option<&S2Ctx>) -> Result<Cd, Stop> {
        let bad_cd = Stop::Config {
            id: EventId::CBadCd,
            fetch: None,
        };
        if let Some(cd) = self.cd_cache.get(&(sid, ssid)).copied() {
            // Only eager caching puts invalid entries here.
            return if self.cd_is_legal(&cd, ste) {
                Ok(cd)
            } else {
                Err(bad_cd)
            };
        }
        let base = ste.s1_context_ptr();
        let cd_addr = if self.s1cdmax(ste) == 0 {
            base
        } else {
            match ste.s1fmt().ok().and_then(S1Fmt::leaf_bits) {
                None => base + ssid as u64 * Cd::BYTES as u64,
                Some(leaf_bits) => {
                    let l1_index = ssid as u64 >> leaf_bits;
                    let l1_addr = base + l1_index * L1CdDesc::BYTES as u64;
                    let l1: L1CdDesc = match self.l1cd_cache.get(&(sid, l1_index)) {
                        Some(l1) => *l1,
                        None => {
                            let l1: L1CdDesc = self.read_cfg(l1_addr, s2)?;
                            if self.cfg.eager_config_cache {
                                self.l1cd_cache.insert((sid, l1_index), l1);
                            }
                            l1
                        }
                    };
                    if !l1.v() {
                        return Err(Stop::Config {
                            id: EventId::CBadSubstreamId,
                            fetch: None,
                        });
                    }
                    let idx = ssid as u64 & ((1u64 << leaf_bits) - 1);
                    l1.l2ptr() + idx * Cd::BYTES as u64
                }
            }
        };
        let cd: Cd = self.read_cfg(cd_addr, s2)?;
        let legal = self.cd_is_legal(&cd, ste);
        if legal || self.cfg.eager_config_cache {
            self.cd_cache.insert((sid, ssid), cd);
        }
        if legal {
            Ok(cd)
        } else {
            Err(bad_cd)
        }
    }

    /// CD checks that make an entry C_BAD_CD. The model walks AArch64
    /// tables with 4 KiB granules only; other granules are C_BAD_CD here.
    fn cd_is_legal(&self, cd: &Cd, ste: &Ste) -> bool {
        // A reserved IPS (0b111) is not ILLEGAL: it behaves as a supported
        // size capped to OAS (§5.4 IPS; `addr_bits`), as does S2PS (§5.2).
        if !cd.v() || !cd.aa64() || cd.endi() {
            return false;
        }
        if cd.s() && self.cfg.stall_model == StallModel::TerminateOnly {
            return false;
        }
        // CdIllegal(): stalls disabled for the stream but enabled for the
        // CD; stall forced (STALL_MODEL = 0b10) but CD.S = 0.
        if cd.s() && ste.s1stalld() {
            return false;
        }
        if !cd.s() && self.cfg.stall_model == StallModel::StallForced {
            return false;
        }
        // CdIllegal(): IDR0.TERM_MODEL = 1 (the model has no RAZ/WI
        // termination), so CD.A = 0 is ILLEGAL.
        if !cd.a() {
            return false;
        }
        // CdIllegal(): 8-bit ASIDs and ASID[15:8] != 0, unless the
        // StreamWorld (any-EL2 without E2H) ignores the ASID.
        let el2 = match ste.strw() {
            Ok(Strw::El2) => true,
            Ok(Strw::El2E2h) => CR2::E2H.read(self.cr2) == 0,
            _ => false,
        };
        if !el2 && !self.cfg.asid16 && cd.asid() >> 8 != 0 {
            return false;
        }
        // CdIllegal(): IDR0.HTTU = 0 (HTTU is not implemented), so HA or HD
        // set is ILLEGAL (§5.4 HA, HD).
        if cd.ha() || cd.hd() {
            return false;
        }
        // CdIllegal() (CDTTBxOutOfRange): a TTBx in use outside the
        // effective IPS is ILLEGAL (§5.4 TTB0, TTB1).
        let ips_bits = addr_bits(cd.ips(), self.cfg.oas);
        if !cd.epd0()
            && (cd.tg0() != Ok(Tg0::Granule4K)
                || s1_start_level(cd.t0sz()).is_none()
                || ttb_out_of_range(cd.ttb0(), ips_bits))
        {
            return false;
        }
        if !cd.epd1()
            && (cd.tg1() != Ok(Tg1::Granule4K)
                || s1_start_level(cd.t1sz()).is_none()
                || ttb_out_of_range(cd.ttb1(), ips_bits))
        {
            return false;
        }
        true
    }

    // ---------------------------------------------------------------
    // Walks

    /// Stage 1 walk of `va`, checked for access flag and permissions.
    fn walk_s1(
        &mut self,
        ctx: &S1Ctx,
        s2: Option<&S2Ctx>,
        va: u64,
        a: Access,
        wkey: WalkKey,
    ) -> Result<S1Leaf, Stop> {
        let cd = &ctx.cd;
        let translation = || Stop::Fault(Fault::s1(EventId::FTranslation, EventClass::In));
        // TTB0 covers the bottom 2^(64-T0SZ) bytes, TTB1 the top 2^(64-T1SZ).
        // A TxSZ of 0 (possible only in a disabled half) covers nothing here.
        let in_region = |v: u64, tsz: u8| tsz != 0 && v.checked_shr(64 - tsz as u32) == Some(0);
        let (ttb, tsz, disabled) = if in_region(va, cd.t0sz()) {
            (cd.ttb0(), cd.t0sz(), cd.epd0())
        } else if in_region(!va, cd.t1sz()) {
            (cd.ttb1(), cd.t1sz(), cd.epd1())
        } else {
            return Err(translation());
        };
        if disabled {
            return Err(translation());
        }
        let ia_bits = 64 - tsz as u32;
        let mut level = s1_start_level(tsz).ok_or_else(translation)?;
        let oa_limit = |addr: u64| addr >> ctx.oa_bits != 0;
        // A TTBx outside IPS makes the CD ILLEGAL (`cd_is_legal`): no walk.
        debug_assert!(!oa_limit(ttb));
        let mut table = ttb;
        let mut first = true;
        // Hierarchical attributes collected from table descriptors.
        let (mut no_el0, mut ro, mut uxn_t, mut pxn_t) = (false, false, false, false);
        let walk_cache = self.cfg.walk_cache;
        if walk_cache {
            if let Some(e) = self.walk.lookup(wkey, va) {
                level = e.level + 1;
                table = e.table;
                first = false;
                (no_el0, ro, uxn_t, pxn_t) = e.attrs;
            }
        }
        loop {
            let idx = if first {
                start_index(va, level, ia_bits)
            } else {
                level_index(va, level)
            };
            first = false;
            let desc_ipa = table + idx as u64 * 8;
            let desc_pa = match s2 {
                Some(s2) => {
                    let l = self.walk_s2(s2, desc_ipa, Access::READ, EventClass::Ttd)?;
                    l.out_base | (desc_ipa & ((1u64 << l.size_log2) - 1))
                }
                None => desc_ipa,
            };
            let raw = self.mem.read_u64(desc_pa).map_err(|_| {
                Stop::Fault(Fault {
                    id: EventId::FWalkEabt,
                    s2: false,
                    class: EventClass::Ttd,
                    ipa: 0,
                    fetch: Some(desc_pa),
                })
            })?;
            let d = S1Desc(raw);
            if d.is_table(level) {
                if !cd.had0() {
                    no_el0 |= d.ap_table() & 0b01 != 0;
                    ro |= d.ap_table() & 0b10 != 0;
                    uxn_t |= d.uxn_table();
                    pxn_t |= d.pxn_table();
                }
                table = d.table_addr();
                if oa_limit(table) {
                    return Err(Stop::Fault(Fault::s1(EventId::FAddrSize, EventClass::Ttd)));
                }
                if walk_cache {
                    let size_log2 = level_shift(level);
                    self.walk.insert(WalkEntry {
                        key: wkey,
                        level,
                        in_base: va & !((1u64 << size_log2) - 1),
                        size_log2,
                        table,
                        attrs: (no_el0, ro, uxn_t, pxn_t),
                    });
                }
                level += 1;
                continue;
            }
            if !d.is_leaf(level) {
                return Err(translation());
            }
            let out_base = d.output_addr(level);
            if oa_limit(out_base) {
                return Err(Stop::Fault(Fault::s1(EventId::FAddrSize, EventClass::In)));
            }
            // HTTU is not implemented (IDR0.HTTU = 0; a CD with HA set is
            // ILLEGAL, see `cd_is_legal`).
            if !d.af() && !cd.affd() {
                return Err(Stop::Fault(Fault::s1(EventId::FAccess, EventClass::In)));
            }
            let write = d.ap().writable() && !ro;
            let el0 = d.ap().unprivileged() && !no_el0;
            let wxn = cd.wxn() && write;
            let perm = S1Perm {
                write,
                el0,
                uxn: d.uxn() || uxn_t || wxn,
                pxn: d.pxn() || pxn_t || wxn || (cd.uwxn() && el0 && write),
                pan: cd.pan(),
            };
            if !perm.allows(a) {
                return Err(Stop::Fault(Fault::s1(EventId::FPermission, EventClass::In)));
            }
            debug_assert!(level <= LAST_LEVEL);
            return Ok(S1Leaf {
                out_base,
                size_log2: level_shift(level),
                perm,
                global: !d.ng(),
            });
        }
    }

    /// Stage 2 walk of `ipa` for an access of class `class` (the input
    /// itself, a stage 1 table read, or a CD read), checked.
    fn walk_s2(
        &mut self,
        s2: &S2Ctx,
        ipa: u64,
        a: Access,
        class: EventClass,
    ) -> Result<S2Leaf, Stop> {
        let fault = |id| Stop::Fault(Fault::s2(id, class, ipa));
        if ipa >> s2.ia_bits != 0 {
            return Err(fault(EventId::FTranslation));
        }
        let oa_limit = |addr: u64| addr >> s2.oa_bits != 0;
        // An S2TTB outside S2PS makes the STE ILLEGAL (`ste_is_legal`).
        debug_assert!(!oa_limit(s2.ttb));
        let mut level = s2.start_level;
        let mut table = s2.ttb;
        let mut first = true;
        let walk_cache = self.cfg.walk_cache;
        let wkey = WalkKey::S2 { vmid: s2.vmid };
        if walk_cache {
            // Stage 2 translations of CD and stage 1 descriptor fetches are
            // TLB entries like any other (§3.21.1).
            if class != EventClass::In {
                if let Some(e) = self.tlb.lookup(Regime::S2 { vmid: s2.vmid }, None, ipa) {
                    let perm = e.s2.unwrap_or(S2Perm {
                        read: false,
                        write: false,
                        xn: true,
                    });
                    if !perm.allows(a) || (s2.ptw && e.s2_device) {
                        return Err(fault(EventId::FPermission));
                    }
                    return Ok(S2Leaf {
                        out_base: e.out_base,
                        size_log2: e.size_log2,
                        perm,
                    });
                }
            }
            if let Some(e) = self.walk.lookup(wkey, ipa) {
                level = e.level + 1;
                table = e.table;
                first = false;
            }
        }
        loop {
            let idx = if first {
                start_index(ipa, level, s2.ia_bits)
            } else {
                level_index(ipa, level)
            };
            first = false;
            let desc_pa = table + idx as u64 * 8;
            let raw = self.mem.read_u64(desc_pa).map_err(|_| {
                Stop::Fault(Fault {
                    id: EventId::FWalkEabt,
                    s2: true,
                    class,
                    ipa,
                    fetch: Some(desc_pa),
                })
            })?;
            let d = S2Desc(raw);
            if d.is_table(level) {
                table = d.table_addr();
                if oa_limit(table) {
                    return Err(fault(EventId::FAddrSize));
                }
                if walk_cache {
                    let size_log2 = level_shift(level);
                    self.walk.insert(WalkEntry {
                        key: wkey,
                        level,
                        in_base: ipa & !((1u64 << size_log2) - 1),
                        size_log2,
                        table,
                        attrs: (false, false, false, false),
                    });
                }
                level += 1;
                continue;
            }
            if !d.is_leaf(level) {
                return Err(fault(EventId::FTranslation));
            }
            let out_base = d.output_addr(level);
            if oa_limit(out_base) {
                return Err(fault(EventId::FAddrSize));
            }
            if !d.af() && !s2.affd {
                return Err(fault(EventId::FAccess));
            }
            let ap = d.s2ap();
            let perm = S2Perm {
                read: ap.readable(),
                write: ap.writable(),
                xn: d.xn() & 0b10 != 0,
            };
            if !perm.allows(a) {
                return Err(fault(EventId::FPermission));
            }
            // S2PTW: stage 1 walks (and CD fetches) must not touch Device
            // memory (MemAttr[3:2] = 0b00).
            let device = d.memattr() >> 2 == 0;
            if s2.ptw && class != EventClass::In && device {
                return Err(fault(EventId::FPermission));
            }
            let size_log2 = level_shift(level);
            if walk_cache && class != EventClass::In {
                let mask = (1u64 << size_log2) - 1;
                self.tlb.insert(TlbEntry {
                    regime: Regime::S2 { vmid: s2.vmid },
                    asid: None,
                    in_base: ipa & !mask,
                    size_log2,
                    out_base,
                    ipa_base: ipa & !mask,
                    s1: None,
                    s2: Some(perm),
                    s2_device: device,
                });
            }
            return Ok(S2Leaf {
                out_base,
                size_log2,
                perm,
            });
        }
    }
}
