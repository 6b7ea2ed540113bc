//! Known encodings and round trips.

use crate::pgtable::*;
use crate::regs::*;
use crate::*;
use tock_registers::LocalRegisterCopy;
use zerocopy::{FromBytes, IntoBytes};

#[test]
fn qemu_idr0_decodes() {
    let idr0 = LocalRegisterCopy::<u32, IDR0::Register>::new(0x0d44_101b);
    assert!(idr0.is_set(IDR0::S1P));
    assert!(idr0.is_set(IDR0::S2P));
    assert!(idr0.is_set(IDR0::COHACC));
    assert!(idr0.is_set(IDR0::ASID16));
    assert!(idr0.is_set(IDR0::VMID16));
    assert!(idr0.matches_all(IDR0::ST_LEVEL::TwoLevel));
    assert!(idr0.matches_all(IDR0::STALL_MODEL::TerminateOnly));
    assert_eq!(idr0.read(IDR0::STALL_MODEL), 1);
    assert!(idr0.matches_all(IDR0::TTF::AArch64));
    assert!(idr0.matches_all(IDR0::TTENDIAN::LittleEndian));
    assert!(idr0.is_set(IDR0::TERM_MODEL));
    assert!(!idr0.is_set(IDR0::PRI));
    assert!(!idr0.is_set(IDR0::ATS));
    assert!(!idr0.is_set(IDR0::MSI));
    assert!(!idr0.is_set(IDR0::HYP));
    assert_eq!(idr0.read(IDR0::HTTU), 0);
    assert!(!idr0.is_set(IDR0::CD2L));
}

#[test]
fn qemu_idr1_idr5_decode() {
    let idr1 = LocalRegisterCopy::<u32, IDR1::Register>::new(0x0273_0010);
    assert_eq!(idr1.read(IDR1::SIDSIZE), 16);
    assert_eq!(idr1.read(IDR1::SSIDSIZE), 0);
    assert_eq!(idr1.read(IDR1::PRIQS), 0);
    assert_eq!(idr1.read(IDR1::EVENTQS), 19);
    assert_eq!(idr1.read(IDR1::CMDQS), 19);
    let idr5 = LocalRegisterCopy::<u32, IDR5::Register>::new(0x74);
    assert!(idr5.matches_all(IDR5::OAS::Bits44));
    assert_eq!(
        AddrSize::from_raw(idr5.read(IDR5::OAS) as u64).map(AddrSize::bits),
        Ok(44)
    );
    assert!(idr5.is_set(IDR5::GRAN4K) && idr5.is_set(IDR5::GRAN16K) && idr5.is_set(IDR5::GRAN64K));
    let idr3 = LocalRegisterCopy::<u32, IDR3::Register>::new(0x1414);
    assert!(idr3.is_set(IDR3::RIL));
    assert!(idr3.is_set(IDR3::HAD));
}

#[test]
fn register_offsets() {
    assert_eq!(CR0.offset(), 0x20);
    assert_eq!(CR0ACK.offset(), 0x24);
    assert_eq!(GBPA.offset(), 0x44);
    assert_eq!(IRQ_CTRL.offset(), 0x50);
    assert_eq!(GERRORN.offset(), 0x64);
    assert_eq!(STRTAB_BASE.offset(), 0x80);
    assert_eq!(CMDQ_PROD.offset(), 0x98);
    assert_eq!(EVENTQ_PROD.offset(), 0x100a8);
    assert_eq!(EVENTQ_CONS.offset(), 0x100ac);
    assert_eq!(PRIQ_PROD.offset(), 0x100c8);
    assert_eq!(PRIQ_CONS.offset(), 0x100cc);
    assert_eq!(PRIQ_IRQ_CFG2.offset(), 0xdc);
    assert!(offset::is_64bit(offset::CMDQ_BASE));
    assert!(!offset::is_64bit(offset::IDR0));
    assert!(!offset::is_64bit(offset::CMDQ_PROD));
}

#[test]
fn register_field_values() {
    let cr0 = CR0::SMMUEN::SET + CR0::EVTQEN::SET + CR0::CMDQEN::SET + CR0::PRIQEN::SET;
    assert_eq!(cr0.value, 0xf);
    assert_eq!((GBPA::UPDATE::SET + GBPA::ABORT::SET).value, 0x8010_0000);
    assert_eq!(
        (IRQ_CTRL::GERROR_IRQEN::SET + IRQ_CTRL::EVENTQ_IRQEN::SET).value,
        0b101
    );
    assert_eq!(GERROR::SFM_ERR::SET.value, 0x100);
    assert_eq!(
        (STRTAB_BASE_CFG::FMT::TwoLevel
            + STRTAB_BASE_CFG::SPLIT.val(8)
            + STRTAB_BASE_CFG::LOG2SIZE.val(16))
        .value,
        0x1_0210
    );
    assert_eq!(strtab_base(0x4000_0000, true).value, 0x4000_0000 | 1 << 62);
    assert_eq!(strtab_base_addr(0x4000_0000 | 1 << 62), 0x4000_0000);
    let q = queue_base(0x4010_0000, 8, false);
    assert_eq!(q, 0x4010_0008);
    assert_eq!(queue_base_addr(q), 0x4010_0000);
    assert_eq!(queue_base_log2size(q), 8);
    assert_eq!(irq_cfg0(0x0808_0040), 0x0808_0040);
    assert_eq!(
        (CR1::TABLE_SH::InnerShareable + CR1::TABLE_OC::WriteBack + CR1::TABLE_IC::WriteBack).value,
        0xd40
    );
}

#[test]
fn cfgi_ste_encoding_by_hand() {
    // Opcode 0x03 in [7:0], SID in [63:32]; Leaf in word 1 bit 0.
    let c = Command::cfgi_ste(0x10, true);
    assert_eq!(c.words(), [0x0000_0010_0000_0003, 1]);
    assert_eq!(c.as_bytes().len(), CMDQ_ENTRY_BYTES);
    assert_eq!(&c.as_bytes()[..8], &0x0000_0010_0000_0003u64.to_le_bytes());
    assert_eq!(
        c.decode(),
        Ok(CommandKind::CfgiSte {
            sid: 0x10,
            leaf: true
        })
    );
}

#[test]
fn command_encodings_by_hand() {
    assert_eq!(Command::cfgi_all().words(), [0x04, 31]);
    assert_eq!(Command::cfgi_all().decode(), Ok(CommandKind::CfgiAll));
    assert_eq!(
        Command::cfgi_ste_range(0x100, 7).decode(),
        Ok(CommandKind::CfgiSteRange {
            sid: 0x100,
            range: 7
        })
    );
    // CFGI_CD: SSID [31:12].
    assert_eq!(
        Command::cfgi_cd(8, 5, false).words(),
        [0x0000_0008_0000_5005, 0]
    );
    // TLBI_NH_ASID: VMID [47:32], ASID [63:48].
    assert_eq!(
        Command::tlbi_nh_asid(3, 0x42).words(),
        [0x0042_0003_0000_0011, 0]
    );
    // TLBI_NH_VA: address in word 1 [63:12].
    assert_eq!(
        Command::tlbi_nh_va(1, 2, 0x1234_5678, true).words(),
        [0x0002_0001_0000_0012, 0x1234_5001]
    );
    assert_eq!(
        Command::tlbi_s2_ipa(7, 0x8000_0000, false).words(),
        [0x0000_0007_0000_002a, 0x8000_0000]
    );
    assert_eq!(
        Command::tlbi_s12_vmall(9).words(),
        [0x0000_0009_0000_0028, 0]
    );
    assert_eq!(Command::tlbi_nsnh_all().words(), [0x30, 0]);
    // PRI_RESP: SSV b11, SSID, SID; word 1 PRGI [8:0], Resp [13:12].
    let c = Command::pri_resp(0x10, Some(5), 3, PriResponse::Success);
    assert_eq!(c.words(), [0x0000_0010_0000_5841, 0x2003]);
    assert_eq!(
        c.decode(),
        Ok(CommandKind::PriResp {
            sid: 0x10,
            ssid: Some(5),
            prgi: 3,
            resp: PriResponse::Success
        })
    );
    // RESUME: Action word 0 [13:12], STAG word 1 [15:0].
    let c = Command::resume(0x10, 0xbeef, ResumeAction::Retry);
    assert_eq!(c.words(), [0x0000_0010_0000_1044, 0xbeef]);
    assert_eq!(
        Command::resume(1, 1, ResumeAction::Abort).word(0) & 0x3000,
        0x2000
    );
    // Ab:Ac = 0b11 is a legal retry (Ab IGNORED when Ac = 1), not a
    // reserved encoding.
    let mut c = Command::resume(1, 1, ResumeAction::Term);
    c.set_field(Command::RESUME_ACTION, 0b11);
    assert_eq!(
        c.decode(),
        Ok(CommandKind::Resume {
            sid: 1,
            stag: 1,
            action: ResumeAction::Retry
        })
    );
    // An INVALID answer is InvalidRequest = 0b01 in Resp [13:12]; 0b00 is
    // ResponseFailure, which would shut the device's PRI off.
    assert_eq!(
        Command::pri_resp(1, None, 0, PriResponse::InvalidRequest).word(1),
        0x1000
    );
    assert_eq!(
        Command::pri_resp(1, None, 0, PriResponse::ResponseFailure).word(1),
        0
    );
    // SYNC: CS [13:12].
    assert_eq!(Command::sync(SyncCs::Irq).words(), [0x1046, 0]);
    assert_eq!(Command::sync(SyncCs::Sev).words(), [0x2046, 0]);
    let s = Command::sync_msi(0x4000_1000, 0xdead_beef, 3, 0xf);
    assert_eq!(
        s.decode(),
        Ok(CommandKind::Sync {
            cs: SyncCs::Irq,
            msi_addr: 0x4000_1000,
            msi_data: 0xdead_beef
        })
    );
    assert_eq!(s.msh(), 3);
    assert_eq!(s.msi_attr(), 0xf);
    // ATC_INV: Global b9, Size word 1 [5:0].
    let c = Command::atc_inv(0x20, None, 0x10_0000, 52, true);
    assert_eq!(c.words(), [0x0000_0020_0000_0240, 0x10_0034]);
    assert_eq!(Command::stall_term(4).words(), [0x0000_0004_0000_0045, 0]);
    assert_eq!(
        Command::prefetch_config(4, None).words(),
        [0x0000_0004_0000_0001, 0]
    );
}

#[test]
fn command_decode_rejects_reserved() {
    let mut c = Command::zeroed();
    c.set_raw_opcode(0x07);
    assert_eq!(
        c.decode(),
        Err(ReservedEncoding {
            field: "CMD.Opcode",
            value: 7
        })
    );
    let mut c = Command::pri_resp(1, None, 0, PriResponse::InvalidRequest);
    c.set_field(Command::PRI_RESP, 3);
    assert!(c.decode().is_err());
    let mut c = Command::sync(SyncCs::None);
    c.set_field(Command::SYNC_CS, 3);
    assert!(c.decode().is_err());
}

#[test]
fn every_opcode_decodes_to_its_kind() {
    for &op in Opcode::ALL {
        let mut c = Command::zeroed();
        c.set_raw_opcode(op.raw() as u8);
        let k = c.decode().unwrap_or_else(|e| panic!("{}: {e}", op.name()));
        // CFGI_STE_RANGE with Range 0 is a range, not CFGI_ALL.
        assert!(!matches!(k, CommandKind::CfgiAll), "{}", op.name());
        assert_eq!(c.opcode(), Ok(op));
    }
    assert_eq!(Opcode::ALL.len(), 24);
}

#[test]
fn tlbi_range_scope() {
    let c = Command::tlbi_nh_va(0, 1, 0x20_0000, true).with_range(3, 1, 1, 3);
    let CommandKind::TlbiNhVa { scope, .. } = c.decode().unwrap() else {
        panic!()
    };
    assert_eq!(scope.range(), (0x20_0000, 4 * 2 * 4096));
    let CommandKind::TlbiNhVa { scope, .. } =
        Command::tlbi_nh_va(0, 1, 0x3000, true).decode().unwrap()
    else {
        panic!()
    };
    assert_eq!(scope.range(), (0x3000, 1));
}

#[test]
fn range_pieces_cover_exactly() {
    // 64 pages: one piece, (15 + 1) x 2^2.
    let mut p = RangePieces::new(64);
    assert_eq!(
        p.next(),
        Some(RangePiece {
            offset: 0,
            num: 15,
            scale: 2
        })
    );
    assert_eq!(p.next(), None);
    // 512 pages: (31 + 1) x 2^4.
    assert_eq!(RangePieces::new(512).count(), 1);
    // Every count up to 2^12 is covered exactly, contiguously, with fields
    // in range, in at most three pieces (two up to 2^10).
    for n in 1..=4096u64 {
        let mut at = 0;
        let mut k = 0;
        for piece in RangePieces::new(n) {
            assert_eq!(piece.offset, at);
            assert!(piece.num <= 31 && piece.scale <= 31);
            at += piece.granules();
            k += 1;
        }
        assert_eq!(at, n, "{n}");
        assert!(k <= if n <= 1024 { 2 } else { 3 }, "{n}: {k} pieces");
    }
    assert_eq!(RangePieces::new(0).count(), 0);
    let big = (1u64 << 36) - 1;
    let total: u64 = RangePieces::new(big).map(|p| p.granules()).sum();
    assert_eq!(total, big);
    assert!(RangePieces::new(big).count() <= 8);
    // A piece as a command covers what it says.
    let c = Command::tlbi_s2_ipa(1, 0x40_0000, true).with_range(31, 1, 1, 0);
    let CommandKind::TlbiS2Ipa { scope, .. } = c.decode().unwrap() else {
        panic!()
    };
    assert_eq!(scope.range(), (0x40_0000, 64 * 4096));
}

#[test]
fn enums_match_the_spec() {
    assert_eq!(StreamConfig::Abort.raw(), 0);
    assert_eq!(StreamConfig::Bypass.raw(), 4);
    assert_eq!(StreamConfig::S1Trans.raw(), 5);
    assert_eq!(StreamConfig::S2Trans.raw(), 6);
    assert_eq!(StreamConfig::Nested.raw(), 7);
    for r in 1..=3 {
        assert!(StreamConfig::from_raw(r).is_err());
    }
    assert!(StreamConfig::Nested.s1_enabled() && StreamConfig::Nested.s2_enabled());
    assert!(!StreamConfig::S2Trans.s1_enabled());
    assert_eq!(PriResponse::ResponseFailure.raw(), 0);
    assert_eq!(PriResponse::InvalidRequest.raw(), 1);
    assert_eq!(PriResponse::Success.raw(), 2);
    assert_eq!(ResumeAction::Term.raw(), 0);
    assert_eq!(ResumeAction::Retry.raw(), 1);
    assert_eq!(ResumeAction::Abort.raw(), 2);
    assert_eq!(EventId::CBadStreamId.raw(), 0x02);
    assert_eq!(EventId::FWalkEabt.raw(), 0x0b);
    assert_eq!(EventId::FTranslation.raw(), 0x10);
    assert_eq!(EventId::FPermission.raw(), 0x13);
    assert_eq!(EventId::FCfgConflict.raw(), 0x21);
    assert_eq!(EventId::EPageRequest.raw(), 0x24);
    for &id in EventId::ALL {
        assert_eq!(EventId::from_raw(id.raw()), Ok(id), "{}", id.name());
    }
    assert_eq!(Tg1::Granule4K.raw(), 0b10);
    assert_eq!(Tg0::Granule64K.raw(), 0b01);
}

#[test]
fn ste_fields_round_trip_and_positions() {
    let mut ste = Ste::zeroed();
    ste.set_v(true)
        .set_config(StreamConfig::Nested)
        .set_s1fmt(S1Fmt::TwoLevel64K)
        .set_s1_context_ptr(0x0008_1234_5678_9ac0)
        .set_s1cdmax(20)
        .set_s1dss(S1Dss::Ssid0)
        .set_s1cir(Cacheability::WriteBackAlloc)
        .set_s1cor(Cacheability::WriteBackAlloc)
        .set_s1csh(Shareability::InnerShareable)
        .set_s1stalld(true)
        .set_eats(Eats::Trans)
        .set_strw(Strw::El2)
        .set_shcfg(Shcfg::UseIncoming)
        .set_s2vmid(0xabcd)
        .set_s2t0sz(25)
        .set_s2sl0(1)
        .set_s2ir0(Cacheability::WriteThrough)
        .set_s2or0(Cacheability::WriteBackNoWriteAlloc)
        .set_s2sh0(Shareability::OuterShareable)
        .set_s2tg(Tg0::Granule4K)
        .set_s2ps(AddrSize::Bits44)
        .set_s2aa64(true)
        .set_s2affd(true)
        .set_s2ptw(true)
        .set_s2s(true)
        .set_s2r(true)
        .set_s2ttb(0x000f_ffff_ffff_fff0);
    assert!(ste.v());
    assert_eq!(ste.config(), Ok(StreamConfig::Nested));
    assert_eq!(ste.s1fmt(), Ok(S1Fmt::TwoLevel64K));
    assert_eq!(ste.s1_context_ptr(), 0x0008_1234_5678_9ac0);
    assert_eq!(ste.s1cdmax(), 20);
    assert_eq!(ste.s1dss(), Ok(S1Dss::Ssid0));
    assert_eq!(ste.s1cir(), Ok(Cacheability::WriteBackAlloc));
    assert_eq!(ste.s1csh(), Ok(Shareability::InnerShareable));
    assert!(ste.s1stalld());
    assert_eq!(ste.eats(), Ok(Eats::Trans));
    assert_eq!(ste.strw(), Ok(Strw::El2));
    assert_eq!(ste.shcfg(), Ok(Shcfg::UseIncoming));
    assert_eq!(ste.s2vmid(), 0xabcd);
    assert_eq!(ste.s2t0sz(), 25);
    assert_eq!(ste.s2sl0(), 1);
    assert_eq!(ste.s2ir0(), Ok(Cacheability::WriteThrough));
    assert_eq!(ste.s2or0(), Ok(Cacheability::WriteBackNoWriteAlloc));
    assert_eq!(ste.s2sh0(), Ok(Shareability::OuterShareable));
    assert_eq!(ste.s2tg(), Ok(Tg0::Granule4K));
    assert_eq!(ste.s2ps(), Ok(AddrSize::Bits44));
    assert!(ste.s2aa64() && ste.s2affd() && ste.s2ptw() && ste.s2s() && ste.s2r());
    assert!(!ste.s2endi() && !ste.s2hd() && !ste.s2ha());
    assert_eq!(ste.s2ttb(), 0x000f_ffff_ffff_fff0);

    // Word-level positions, computed by hand from the spec.
    let w = ste.words();
    assert_eq!(w[0] & 0xf, 0b1111, "V and Config=0b111");
    assert_eq!((w[0] >> 4) & 3, 0b10, "S1Fmt");
    assert_eq!(w[0] >> 59, 20, "S1CDMax");
    assert_eq!(w[1] & 3, 0b10, "S1DSS");
    assert_eq!((w[1] >> 27) & 1, 1, "S1STALLD");
    assert_eq!((w[1] >> 28) & 3, 1, "EATS");
    assert_eq!((w[1] >> 30) & 3, 2, "STRW");
    assert_eq!((w[1] >> 44) & 3, 1, "SHCFG");
    assert_eq!(w[2] & 0xffff, 0xabcd, "S2VMID");
    assert_eq!((w[2] >> 32) & 0x3f, 25, "S2T0SZ");
    assert_eq!((w[2] >> 38) & 3, 1, "S2SL0");
    assert_eq!((w[2] >> 48) & 7, 4, "S2PS");
    assert_eq!((w[2] >> 51) & 1, 1, "S2AA64");
    assert_eq!((w[2] >> 53) & 1, 1, "S2AFFD");
    assert_eq!((w[2] >> 54) & 1, 1, "S2PTW");
    assert_eq!((w[2] >> 57) & 1, 1, "S2S");
    assert_eq!((w[2] >> 58) & 1, 1, "S2R");
    assert_eq!(w[3], 0x000f_ffff_ffff_fff0, "S2TTB");

    // Byte layout: little-endian words, 64 bytes.
    let bytes = ste.as_bytes();
    assert_eq!(bytes.len(), STE_BYTES);
    let back = Ste::read_from_bytes(bytes).unwrap();
    assert_eq!(back, ste);
    assert_eq!(
        bytes[0], 0xef,
        "low byte of word 0: S1ContextPtr[7:6]=11, S1Fmt=10, Config=111, V"
    );

    // Clearing fields leaves the others.
    ste.set_v(false).set_s2r(false);
    assert!(!ste.v() && !ste.s2r() && ste.s2s());
    assert_eq!(ste.config(), Ok(StreamConfig::Nested));
}

#[test]
fn ste_used_bits() {
    let mut ste = Ste::zeroed();
    assert_eq!(ste.used_bits(), [1, 0, 0, 0, 0, 0, 0, 0]);
    ste.set_v(true).set_config(StreamConfig::Abort);
    assert_eq!(ste.used_bits()[0], Ste::V.mask() | Ste::CONFIG.mask());
    ste.set_config(StreamConfig::S2Trans);
    let u = ste.used_bits();
    assert_eq!(u[0] & Ste::S1CONTEXTPTR.mask(), 0);
    assert_ne!(u[2] & Ste::S2VMID.mask(), 0);
    assert_eq!(u[3], Ste::S2TTB.mask());
    ste.set_config(StreamConfig::S1Trans);
    let u = ste.used_bits();
    assert_ne!(u[0] & Ste::S1CONTEXTPTR.mask(), 0);
    assert_eq!(u[3], 0);
    assert_ne!(
        u[2] & Ste::S2VMID.mask(),
        0,
        "NS-EL1 stage 1 is tagged with S2VMID"
    );
}

#[test]
fn l1_descriptors() {
    let d = L1StreamDesc::new(0x4020_0000, 8);
    assert_eq!(d.span(), 9);
    assert_eq!(d.num_stes(), 256);
    assert_eq!(d.l2ptr(), 0x4020_0000);
    assert_eq!(d.word(0), 0x4020_0009);
    assert_eq!(L1StreamDesc::zeroed().num_stes(), 0);
    let c = L1CdDesc::new(0x4030_0000);
    assert!(c.v());
    assert_eq!(c.word(0), 0x4030_0001);
    assert_eq!(c.l2ptr(), 0x4030_0000);
}

#[test]
fn cd_fields_round_trip_and_positions() {
    let mut cd = Cd::zeroed();
    cd.set_t0sz(25)
        .set_tg0(Tg0::Granule4K)
        .set_ir0(Cacheability::WriteBackAlloc)
        .set_or0(Cacheability::WriteBackAlloc)
        .set_sh0(Shareability::InnerShareable)
        .set_epd1(true)
        .set_v(true)
        .set_ips(AddrSize::Bits48)
        .set_affd(true)
        .set_wxn(true)
        .set_uwxn(true)
        .set_tbi(0b01)
        .set_pan(true)
        .set_aa64(true)
        .set_hd(true)
        .set_ha(true)
        .set_s(true)
        .set_r(true)
        .set_a(true)
        .set_aset(true)
        .set_asid(0xbeef)
        .set_nscfg0(true)
        .set_had0(true)
        .set_ttb0(0x0000_0040_1234_5000)
        .set_ttb1(0x0000_0080_0000_0000)
        .set_mair(0x0044_ff04)
        .set_amair0(7)
        .set_t1sz(30)
        .set_tg1(Tg1::Granule4K)
        .set_hwu1(0b1010);
    assert_eq!(cd.t0sz(), 25);
    assert_eq!(cd.hwu1(), 0b1010);
    assert_eq!(cd.hwu0(), 0);
    assert_eq!(cd.word(2) >> 60, 0b1010, "HWU1 [63:60]");
    assert_eq!(cd.tg0(), Ok(Tg0::Granule4K));
    assert_eq!(cd.ir0(), Ok(Cacheability::WriteBackAlloc));
    assert_eq!(cd.sh0(), Ok(Shareability::InnerShareable));
    assert!(!cd.epd0() && cd.epd1() && cd.v());
    assert_eq!(cd.ips(), Ok(AddrSize::Bits48));
    assert!(cd.affd() && cd.wxn() && cd.uwxn() && cd.pan() && cd.aa64());
    assert!(cd.hd() && cd.ha() && cd.s() && cd.r() && cd.a() && cd.aset());
    assert_eq!(cd.tbi(), 1);
    assert_eq!(cd.asid(), 0xbeef);
    assert!(cd.nscfg0() && cd.had0());
    assert_eq!(cd.ttb0(), 0x0000_0040_1234_5000);
    assert_eq!(cd.ttb1(), 0x0000_0080_0000_0000);
    assert_eq!(cd.mair(), 0x0044_ff04);
    assert_eq!(cd.mair0(), 0x0044_ff04);
    assert_eq!(cd.mair1(), 0);
    assert_eq!(cd.amair0(), 7);
    assert_eq!(cd.t1sz(), 30);
    assert_eq!(cd.tg1(), Ok(Tg1::Granule4K));

    let w = cd.words();
    assert_eq!(w[0] & 0x3f, 25, "T0SZ");
    assert_eq!((w[0] >> 31) & 1, 1, "V");
    assert_eq!((w[0] >> 30) & 1, 1, "EPD1");
    assert_eq!((w[0] >> 32) & 7, 5, "IPS");
    assert_eq!((w[0] >> 41) & 1, 1, "AA64");
    assert_eq!((w[0] >> 44) & 1, 1, "S");
    assert_eq!((w[0] >> 45) & 1, 1, "R");
    assert_eq!(w[0] >> 48, 0xbeef, "ASID");
    assert_eq!(w[1], 0x0000_0040_1234_5003, "TTB0 | HAD0 | NSCFG0");
    assert_eq!(w[3], 0x0044_ff04, "MAIR");
    let back = Cd::read_from_bytes(cd.as_bytes()).unwrap();
    assert_eq!(back, cd);
}

#[test]
fn event_fields_round_trip() {
    let mut e = Event::new(EventId::FPermission, 0x10, Some(0xfffff));
    e.set_stag(0x1234)
        .set_stall(true)
        .set_pnu(true)
        .set_ind(false)
        .set_rnw(true)
        .set_s2(true)
        .set_class(EventClass::Ttd)
        .set_input_addr(0xffff_0000_1234_5678)
        .set_ipa(0x8_0000_1000);
    assert_eq!(e.event_id(), Ok(EventId::FPermission));
    assert_eq!(e.sid(), 0x10);
    assert_eq!(e.substream(), Some(0xfffff));
    assert_eq!(e.stag(), 0x1234);
    assert!(e.stall() && e.pnu() && !e.ind() && e.rnw() && e.s2());
    assert_eq!(e.class(), Ok(EventClass::Ttd));
    assert_eq!(e.input_addr(), 0xffff_0000_1234_5678);
    assert_eq!(e.ipa(), 0x8_0000_1000);
    let w = e.words();
    assert_eq!(w[0], 0x0000_0010_ffff_f813);
    assert_eq!(w[1], 0x0000_018a_8000_1234);
    let mut f = Event::new(EventId::FWalkEabt, 1, None);
    f.set_fetch_addr(0x4000_0008);
    assert_eq!(f.fetch_addr(), 0x4000_0008);
    assert_eq!(f.substream(), None);
    assert_eq!(Event::read_from_bytes(e.as_bytes()).unwrap(), e);
    assert_eq!(e.as_bytes().len(), EVENTQ_ENTRY_BYTES);
}

#[test]
fn pri_entry_fields() {
    let mut p = PriEntry::new(0x10, Some(5), 3, 0x7fff_1234);
    p.set_read(true)
        .set_write(true)
        .set_last(true)
        .set_privileged(true)
        .set_exec(true);
    assert_eq!(p.sid(), 0x10);
    assert_eq!(p.substream(), Some(5));
    assert_eq!(p.prgi(), 3);
    assert_eq!(p.page_addr(), 0x7fff_1000);
    assert!(p.read() && p.write() && p.last() && p.privileged() && p.exec());
    assert!(!p.is_stop_marker());
    let w = p.words();
    assert_eq!(w[0], 0xfc00_0005_0000_0010);
    assert_eq!(w[1], 0x7fff_1003);
    let mut stop = PriEntry::new(0x10, Some(5), 3, 0);
    stop.set_last(true);
    assert!(stop.is_stop_marker());
    let mut partial = PriEntry::new(0x10, Some(5), 3, 0);
    partial.set_read(true);
    assert!(!partial.is_stop_marker());
    let mut prgi = PriEntry::zeroed();
    prgi.set_prgi(0x1ff);
    assert_eq!(prgi.word(1), 0x1ff);
    assert_eq!(p.as_bytes().len(), PRIQ_ENTRY_BYTES);
}

#[test]
fn entry_field_helpers() {
    let f = EntryField::new(1, 4, 8);
    assert_eq!(f.mask(), 0xff0);
    assert_eq!(f.extract(0xabcd), 0xbc);
    assert_eq!(f.insert(0xffff, 0x12), 0xf12f);
    assert!(f.fits(0xff) && !f.fits(0x100));
    assert_eq!(EntryField::new(0, 0, 64).mask(), u64::MAX);
}

#[test]
fn page_table_geometry() {
    assert_eq!(level_shift(0), 39);
    assert_eq!(level_shift(1), 30);
    assert_eq!(level_shift(2), 21);
    assert_eq!(level_shift(3), 12);
    assert_eq!(level_index(0x0000_0040_2010_3000, 3), 0x103);
    assert_eq!(level_index(0x0000_0040_2010_3000, 2), 0x100);
    assert_eq!(level_index(0x0000_0040_2010_3000, 1), 0x100);
    assert_eq!(s1_start_level(16), Some(0));
    assert_eq!(s1_start_level(24), Some(0));
    assert_eq!(s1_start_level(25), Some(1));
    assert_eq!(s1_start_level(33), Some(1));
    assert_eq!(s1_start_level(34), Some(2));
    assert_eq!(s1_start_level(39), Some(2));
    assert_eq!(s1_start_level(40), None);
    assert_eq!(s2_start_level(1), Some(1));
    assert_eq!(s2sl0_for_level(1), Some(1));
    assert_eq!(s2_concatenated_tables(25, 1), Some(1));
    assert_eq!(s2_concatenated_tables(24, 1), Some(2));
    assert_eq!(s2_concatenated_tables(21, 1), Some(16));
    assert_eq!(s2_concatenated_tables(20, 1), None);
    assert_eq!(
        s2_concatenated_tables(25, 0),
        None,
        "nothing left to index at level 0"
    );
    assert_eq!(s2_concatenated_tables(16, 0), Some(1));
    assert_eq!(start_index(0x40_0000_0000, 1, 40), 0x100);
}

#[test]
fn descriptors() {
    let t = S1Desc::table(0x4000_5000);
    assert_eq!(t.raw(), 0x4000_5003);
    assert!(t.is_table(0) && t.is_table(2) && !t.is_table(3));
    assert_eq!(t.table_addr(), 0x4000_5000);
    let p = S1Desc::page(0x8_1234_5000, S1Ap::RwAny, 1);
    assert!(
        p.is_leaf(3) && !p.is_leaf(2),
        "bits 0b11 are a page at level 3, a table above"
    );
    assert_eq!(p.output_addr(3), 0x8_1234_5000);
    // AF b10, nG b11, SH=11 [9:8], AP=01 [7:6], AttrIndx=1 [4:2], page 0b11.
    assert_eq!(
        p.raw(),
        0x8_1234_5000 | 1 << 10 | 1 << 11 | 0b11 << 8 | 0b01 << 6 | 1 << 2 | 0b11
    );
    assert!(p.af() && p.ng());
    assert_eq!(p.ap(), S1Ap::RwAny);
    assert_eq!(p.attr_indx(), 1);
    let b = S1Desc::leaf(0x4000_0000, 1, S1Ap::RoPriv, 0);
    assert!(b.is_leaf(1) && !b.is_table(1));
    assert_eq!(b.raw() & 3, 0b01);
    assert_eq!(b.output_addr(1), 0x4000_0000);
    assert!(!b.ap().writable() && !b.ap().unprivileged());
    let x = p.with(S1Desc::UXN, 1).with(S1Desc::PXN, 1);
    assert!(x.uxn() && x.pxn());
    assert!(!S1Desc::INVALID.is_valid());

    let s = S2Desc::page(0x4010_0000, S2Ap::ReadOnly);
    // AF b10, SH=11, S2AP=01 [7:6], MemAttr=1111 [5:2], page.
    assert_eq!(
        s.raw(),
        0x4010_0000 | 1 << 10 | 0b11 << 8 | 0b01 << 6 | 0b1111 << 2 | 0b11
    );
    assert_eq!(s.s2ap(), S2Ap::ReadOnly);
    assert!(s.s2ap().readable() && !s.s2ap().writable());
    assert_eq!(s.memattr(), s2_memattr::NORMAL_WB);
    let s2b = S2Desc::leaf(0x4000_0000, 2, S2Ap::ReadWrite).with(S2Desc::AF, 0);
    assert!(s2b.is_leaf(2) && !s2b.af());
    assert_eq!(
        mair::mair([mair::DEVICE_NGNRE, mair::NORMAL_WB, 0, 0, 0, 0, 0, 0]),
        0xff04
    );
}

#[test]
fn mmio_ext_on_a_fake() {
    use core::cell::Cell;
    struct Fake {
        last: Cell<(usize, u64)>,
        value: u32,
    }
    impl Mmio for Fake {
        fn read32(&self, _o: usize) -> u32 {
            self.value
        }
        fn write32(&self, o: usize, v: u32) {
            self.last.set((o, v as u64))
        }
        fn read64(&self, _o: usize) -> u64 {
            self.value as u64
        }
        fn write64(&self, o: usize, v: u64) {
            self.last.set((o, v))
        }
    }
    let f = Fake {
        last: Cell::new((0, 0)),
        value: 0b0101,
    };
    assert!(f.read_reg(CR0ACK).is_set(CR0::SMMUEN));
    assert!(!f.read_reg(CR0ACK).is_set(CR0::PRIQEN));
    f.write_reg(CR0, CR0::CMDQEN::SET);
    assert_eq!(f.last.get(), (0x20, 0b1000));
    f.modify_reg(CR0, CR0::CMDQEN::SET);
    assert_eq!(f.last.get(), (0x20, 0b1101));
    f.write_reg64(STRTAB_BASE, strtab_base(0x4000_0000, false));
    assert_eq!(f.last.get(), (0x80, 0x4000_0000));
    let r: &dyn Mmio = &f;
    assert_eq!(r.read_reg(IDR0).get(), 0b0101);
}

// ---- what a guest needs: TCR, the CD builder, the table editor ----

#[test]
fn tcr_value_and_context_agree() {
    let t = tcr::value(25, AddrSize::Bits40.raw() as u8);
    // T0SZ 25, IRGN0 = ORGN0 = 0b01, SH0 = 0b11, TG0 = 4K, EPD1, IPS 40.
    assert_eq!(t, 25 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23 | 2 << 32);
    let c = S1Context::from_tcr(0x8000_1000, t, pgtable::MAIR_DEFAULT, 7).unwrap();
    assert_eq!(
        (c.t0sz, c.tg0, c.ips),
        (25, Tg0::Granule4K, AddrSize::Bits40)
    );
    assert_eq!(c.tcr(), t);
    let g64 = S1Context {
        tg0: Tg0::Granule64K,
        ..c
    };
    assert_eq!(tcr::field(g64.tcr(), tcr::TG0_SHIFT), 0b01, "TCR.TG0 64K");
    assert_eq!(
        S1Context::from_tcr(0, g64.tcr(), 0, 0).unwrap().tg0,
        Tg0::Granule64K
    );
}

#[test]
fn tcr_refusals() {
    let t = tcr::value(25, 2);
    assert_eq!(
        S1Context::from_tcr(0, t | tcr::EPD0, 0, 0),
        Err(TcrError::Bits)
    );
    assert_eq!(
        S1Context::from_tcr(0, t & !tcr::EPD1, 0, 0),
        Err(TcrError::Bits)
    );
    assert_eq!(
        S1Context::from_tcr(0, t | 1 << 37, 0, 0),
        Err(TcrError::Bits),
        "TBI0"
    );
    assert_eq!(
        S1Context::from_tcr(0, t & !(3 << tcr::SH0_SHIFT), 0, 0),
        Err(TcrError::Attributes)
    );
    assert_eq!(
        S1Context::from_tcr(0, t | 3 << tcr::TG0_SHIFT, 0, 0),
        Err(TcrError::Reserved),
        "TG0 0b11"
    );
    assert_eq!(
        S1Context::from_tcr(0, t | 7 << tcr::IPS_SHIFT, 0, 0),
        Err(TcrError::Reserved),
        "IPS 0b111"
    );
}

#[test]
fn s1_context_cd_round_trip() {
    let c = S1Context {
        ttb0: 0x4_1234_5000,
        t0sz: 25,
        tg0: Tg0::Granule4K,
        ips: AddrSize::Bits44,
        mair: pgtable::MAIR_DEFAULT,
        asid: 0x1234,
        record_faults: true,
        stall: false,
    };
    let cd = c.cd();
    // The architecture's positions, word 0: T0SZ [5:0], EPD1 [30], V [31],
    // IPS [34:32], AA64 [41], R [45], A [46], ASID [63:48].
    let w0 = cd.word(0);
    assert_eq!(w0 & 0x3f, 25);
    assert_eq!((w0 >> 8) & 3, 1, "IR0 write-back");
    assert_eq!((w0 >> 12) & 3, 3, "SH0 inner");
    assert!(w0 & 1 << 30 != 0 && w0 & 1 << 31 != 0 && w0 & 1 << 41 != 0);
    assert_eq!((w0 >> 32) & 7, AddrSize::Bits44.raw());
    assert!(w0 & 1 << 45 != 0 && w0 & 1 << 46 != 0 && w0 & 1 << 44 == 0);
    assert_eq!(w0 >> 48, 0x1234);
    assert_eq!(cd.word(1), 0x4_1234_5000, "TTB0");
    assert_eq!(cd.word(3), pgtable::MAIR_DEFAULT);
    assert_eq!(S1Context::from_cd(&cd), Some(c));
    assert_eq!(cd.tcr().unwrap(), c.tcr());
    let mut bad = cd;
    bad.set_v(false);
    assert_eq!(S1Context::from_cd(&bad), None);
}

#[test]
fn leaf_encoders() {
    let rw = leaf(Stage::S1, 0x8765_4000, Prot::RW);
    let d = S1Desc(rw);
    assert!(d.is_leaf(3) && d.af() && d.uxn() && d.pxn());
    assert_eq!(d.ap(), S1Ap::RwAny);
    assert_eq!(d.output_addr(3), 0x8765_4000);
    assert_eq!(decode_leaf(Stage::S1, rw), Some((0x8765_4000, Prot::RW)));
    assert_eq!(S1Desc(leaf(Stage::S1, 0, Prot::RO)).ap(), S1Ap::RoAny);
    let dev = Prot {
        device: true,
        ..Prot::RW
    };
    assert_eq!(S1Desc(leaf(Stage::S1, 0, dev)).attr_indx(), MAIR_IDX_DEVICE);
    assert_eq!((MAIR_DEFAULT >> 8) & 0xff, mair::DEVICE_NGNRE as u64);
    let s2 = S2Desc(leaf(Stage::S2, 0x1000, Prot::WO));
    assert_eq!(s2.s2ap(), S2Ap::WriteOnly);
    assert_eq!(decode_leaf(Stage::S2, s2.raw()), Some((0x1000, Prot::WO)));
    assert_eq!(decode_leaf(Stage::S1, 0), None);
}

/// Table memory for the tests: 8 pages at a base address, handed out in
/// order.
struct Pages {
    base: u64,
    words: [u64; 8 * 512],
    next: usize,
}

impl TableMemory for Pages {
    fn read(&self, addr: u64) -> Option<u64> {
        let i = addr.checked_sub(self.base)? as usize / 8;
        self.words.get(i).copied()
    }
    fn write(&mut self, addr: u64, desc: u64) -> bool {
        match addr.checked_sub(self.base).map(|o| o as usize / 8) {
            Some(i) if i < self.words.len() => {
                self.words[i] = desc;
                true
            }
            _ => false,
        }
    }
    fn alloc_table(&mut self) -> Option<u64> {
        if self.next == 8 {
            return None;
        }
        self.next += 1;
        Some(self.base + (self.next as u64 - 1) * 4096)
    }
}

#[test]
fn table_editor_walks_like_the_smmu() {
    let mut m = Pages {
        base: 0x4010_0000,
        words: [0; 8 * 512],
        next: 1,
    };
    let t = Table::s1(m.base, 25).unwrap();
    assert_eq!(t.start_level, 1);
    let iova = 0x4020_3000;
    t.map(&mut m, iova, 0x4030_0000, Prot::RW).unwrap();
    assert_eq!(m.next, 3, "a level 2 and a level 3 table");
    // Walk it by hand with the architecture's indices.
    let l1 = S1Desc(m.read(m.base + level_index(iova, 1) as u64 * 8).unwrap());
    assert!(l1.is_table(1));
    let l2 = S1Desc(
        m.read(l1.table_addr() + level_index(iova, 2) as u64 * 8)
            .unwrap(),
    );
    assert!(l2.is_table(2));
    let l3 = S1Desc(
        m.read(l2.table_addr() + level_index(iova, 3) as u64 * 8)
            .unwrap(),
    );
    assert_eq!(l3.raw(), leaf(Stage::S1, 0x4030_0000, Prot::RW));
    assert_eq!(t.map(&mut m, iova, 0, Prot::RW), Err(TableError::Mapped));
    assert_eq!(
        t.set(&mut m, iova, 0x4031_0000, Prot::RO),
        Ok(Some((0x4030_0000, Prot::RW)))
    );
    assert_eq!(t.lookup(&m, iova), Some((0x4031_0000, Prot::RO)));
    assert_eq!(t.unmap(&mut m, iova), Some((0x4031_0000, Prot::RO)));
    assert_eq!(t.lookup(&m, iova), None);
    assert_eq!(t.unmap(&mut m, iova), None);
    assert_eq!(t.map(&mut m, 1 << 39, 0, Prot::RW), Err(TableError::Range));
    assert_eq!(t.map(&mut m, 0x10, 0, Prot::RW), Err(TableError::Range));
    // Exhaustion: each new 1 GiB needs two tables.
    let mut r = Ok(());
    for g in 2..8u64 {
        r = t.map(&mut m, g << 30, 0, Prot::RW);
        if r.is_err() {
            break;
        }
    }
    assert_eq!(r, Err(TableError::NoTable));
    // A 48-bit table starts at level 0.
    assert_eq!(Table::s1(0, 16).unwrap().start_level, 0);
    assert_eq!(Table::s1(0, 40), None);
}
