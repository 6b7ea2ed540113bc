//! The model driven through `Mmio` and `PhysMem` only, as the driver under
//! test will drive it.

mod rig;

use rig::{Rig, DATA, S2T0SZ};
use smmuv3::pgtable::{S1Ap, S2Ap, S2Desc};
use smmuv3::regs::{self, CR0, GBPA, GERROR};
use smmuv3::{
    CmdqError, Command, CommandKind, EventClass, EventId, L1CdDesc, Mmio, MmioExt, PriResponse,
    QueuePtr, ResumeAction, S1Dss, S1Fmt, Ste, StreamConfig, SyncCs,
};
use smmuv3_model::{
    Access, AccessErrorKind, AutoPriReason, CmdOutcome, DmaError, PhysMem, PriGroup, PriOutcome,
    ResponseCode, Smmu, SmmuConfig, StallModel, StallOutcome, StallState,
};

const SID: u32 = 0x10;
const PAGE: u64 = 0x1000;

fn page(n: u64) -> u64 {
    DATA + n * PAGE
}

/// Stage 1 stream SID with ASID 1: IOVA 0x10_0000 → page 0 (RW),
/// 0x10_1000 → page 1 (RO). Returns the rig and the S1 root.
fn s1_rig(cfg: SmmuConfig) -> (Rig, u64, u64) {
    let mut r = Rig::new(cfg);
    let root = r.table();
    r.s1_map(root, 0x10_0000, page(0), S1Ap::RwAny);
    r.s1_map(root, 0x10_1000, page(1), S1Ap::RoAny);
    let cd_pa = r.alloc(64);
    r.write_cd(cd_pa, &Rig::cd(root, 1));
    r.install_ste(SID, &Rig::s1_ste(cd_pa));
    (r, root, cd_pa)
}

#[test]
fn model_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Smmu>();
    check::<smmuv3_model::Device>();
    check::<PhysMem>();
}

#[test]
fn id_registers_and_access_widths() {
    let r = Rig::bare(SmmuConfig::qemu_virt());
    assert_eq!(r.smmu.read32(regs::IDR0.offset()), 0x0d44_101b);
    assert_eq!(r.smmu.read32(regs::IDR1.offset()), 0x0273_0010);
    assert!(r.smmu.access_errors().is_empty());
    // A 64-bit read of an ID register returns 0 (as on QEMU) and is flagged.
    assert_eq!(r.smmu.read64(regs::IDR0.offset()), 0);
    let e = r.smmu.access_errors();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].kind, AccessErrorKind::WrongWidth);
    // The 64-bit registers take both widths.
    r.smmu.write64(regs::CMDQ_BASE.offset(), 0x4000_1005);
    assert_eq!(r.smmu.read32(regs::CMDQ_BASE.offset()), 0x4000_1005);
    r.smmu.write32(regs::CMDQ_BASE.offset() + 4, 0x1);
    assert_eq!(r.smmu.read64(regs::CMDQ_BASE.offset()), 0x1_4000_1005);
    // Page-1 registers do not alias into page 0.
    r.smmu.read32(0xa8);
    assert_eq!(
        r.smmu.access_errors().last().unwrap().kind,
        AccessErrorKind::UnknownRegister
    );
}

#[test]
fn project_config_idregs() {
    let r = Rig::bare(SmmuConfig::new());
    let idr0 = r.smmu.read_reg(regs::IDR0);
    assert!(idr0.is_set(regs::IDR0::PRI));
    assert!(idr0.matches_all(regs::IDR0::STALL_MODEL::StallAndTerminate));
    assert!(idr0.is_set(regs::IDR0::CD2L));
    let idr1 = r.smmu.read_reg(regs::IDR1);
    assert_eq!(idr1.read(regs::IDR1::SSIDSIZE), 20);
    assert_eq!(idr1.read(regs::IDR1::PRIQS), 8);
}

#[test]
fn gbpa_cr0ack_and_bypass() {
    let r = Rig::bare(SmmuConfig::new());
    // Reset: disabled, GBPA bypass.
    assert_eq!(r.smmu.read_reg(regs::GBPA).get(), 0x1000);
    assert_eq!(r.dev.dma_read(SID, None, 0x1234, 4), Ok(0x1234));
    // A GBPA write without UPDATE does nothing.
    r.smmu.write_reg(regs::GBPA, GBPA::ABORT::SET);
    assert_eq!(r.dev.dma_read(SID, None, 0x1234, 4), Ok(0x1234));
    r.smmu
        .write_reg(regs::GBPA, GBPA::UPDATE::SET + GBPA::ABORT::SET);
    assert!(
        !r.smmu.read_reg(regs::GBPA).is_set(GBPA::UPDATE),
        "UPDATE completes at once"
    );
    assert_eq!(r.dev.dma_read(SID, None, 0x1234, 4), Err(DmaError::Aborted));
    r.smmu.write_reg(regs::CR0, CR0::EVTQEN::SET);
    assert_eq!(r.smmu.read_reg(regs::CR0ACK).get(), CR0::EVTQEN::SET.value);
}

#[test]
fn base_registers_refuse_writes_while_enabled() {
    let r = Rig::new(SmmuConfig::new());
    let before = r.smmu.read64(regs::STRTAB_BASE.offset());
    r.smmu.write64(regs::STRTAB_BASE.offset(), 0x4800_0000);
    assert_eq!(r.smmu.read64(regs::STRTAB_BASE.offset()), before);
    r.smmu.write64(regs::CMDQ_BASE.offset(), 0x4800_0000);
    let kinds: Vec<_> = r.smmu.access_errors().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [AccessErrorKind::WhileEnabled, AccessErrorKind::WhileEnabled]
    );
}

#[test]
fn stage1_translation_and_faults() {
    let (mut r, _, _) = s1_rig(SmmuConfig::new());
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0123, 4), Ok(page(0) + 0x123));
    assert_eq!(r.dev.dma_write(SID, None, 0x10_0000, 8), Ok(page(0)));
    assert_eq!(
        r.dev.dma_read(SID, None, 0x10_1ff0, 16),
        Ok(page(1) + 0xff0)
    );
    // Data really moves.
    r.dev
        .dma_write_bytes(SID, None, 0x10_0010, b"hello")
        .unwrap();
    let mut back = [0u8; 5];
    r.mem.read(page(0) + 0x10, &mut back).unwrap();
    assert_eq!(&back, b"hello");
    // Write to a read-only page.
    assert_eq!(
        r.dev.dma_write(SID, None, 0x10_1008, 4),
        Err(DmaError::Fault {
            id: EventId::FPermission,
            recorded: true
        })
    );
    // Unmapped page; a DMA crossing into it faults on the second page.
    assert_eq!(
        r.dev.dma_read(SID, None, 0x10_1ffc, 8),
        Err(DmaError::Fault {
            id: EventId::FTranslation,
            recorded: true
        })
    );
    // Outside the 39-bit input range.
    assert!(matches!(
        r.dev.dma_read(SID, None, 1 << 40, 4),
        Err(DmaError::Fault {
            id: EventId::FTranslation,
            ..
        })
    ));
    let ev = r.events();
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0].event_id(), Ok(EventId::FPermission));
    assert_eq!(ev[0].sid(), SID);
    assert_eq!(ev[0].substream(), None);
    assert_eq!(ev[0].input_addr(), 0x10_1008);
    assert!(!ev[0].rnw() && !ev[0].s2() && !ev[0].stall());
    assert_eq!(ev[0].class(), Ok(EventClass::In));
    assert_eq!(ev[1].event_id(), Ok(EventId::FTranslation));
    assert_eq!(ev[1].input_addr(), 0x10_2000);
    assert!(ev[1].rnw());
    assert_eq!(ev[2].input_addr(), 1 << 40);
    let irqs = r.smmu.take_irqs();
    assert!(irqs.eventq && !irqs.gerror);
    assert!(!r.smmu.take_irqs().any(), "edge: taken once");
    assert!(r.smmu.access_errors().is_empty());
}

#[test]
fn stage1_faults_unrecorded_without_cd_r() {
    let mut r = Rig::new(SmmuConfig::new());
    let root = r.table();
    let cd_pa = r.alloc(64);
    let mut cd = Rig::cd(root, 1);
    cd.set_r(false);
    r.write_cd(cd_pa, &cd);
    r.install_ste(SID, &Rig::s1_ste(cd_pa));
    assert_eq!(
        r.dev.dma_read(SID, None, 0x5000, 4),
        Err(DmaError::Fault {
            id: EventId::FTranslation,
            recorded: false
        })
    );
    assert!(r.events().is_empty());
}

#[test]
fn access_flag_fault() {
    let mut r = Rig::new(SmmuConfig::new());
    let root = r.table();
    let d =
        smmuv3::pgtable::S1Desc::page(page(2), S1Ap::RwAny, 1).with(smmuv3::pgtable::S1Desc::AF, 0);
    r.map_raw(root, 39, 1, 0x7000, 3, d.raw());
    let cd_pa = r.alloc(64);
    r.write_cd(cd_pa, &Rig::cd(root, 1));
    r.install_ste(SID, &Rig::s1_ste(cd_pa));
    assert!(matches!(
        r.dev.dma_read(SID, None, 0x7000, 4),
        Err(DmaError::Fault {
            id: EventId::FAccess,
            ..
        })
    ));
    // CD.AFFD disables the access flag fault.
    let mut cd = Rig::cd(root, 1);
    cd.set_affd(true);
    r.write_cd(cd_pa, &cd);
    r.cmds(&[Command::cfgi_cd(SID, 0, true), Command::sync(SyncCs::None)]);
    assert_eq!(r.dev.dma_read(SID, None, 0x7000, 4), Ok(page(2)));
}

#[test]
fn stage2_translation_and_faults() {
    let mut r = Rig::new(SmmuConfig::new());
    let root = r.table();
    r.s2_map(root, 0x20_0000, page(3), S2Ap::ReadWrite);
    r.s2_map(root, 0x20_1000, page(4), S2Ap::ReadOnly);
    r.install_ste(SID, &Rig::s2_ste(root, 7));
    assert_eq!(r.dev.dma_write(SID, None, 0x20_0040, 4), Ok(page(3) + 0x40));
    assert_eq!(r.dev.dma_read(SID, None, 0x20_1000, 4), Ok(page(4)));
    assert!(matches!(
        r.dev.dma_write(SID, None, 0x20_1000, 4),
        Err(DmaError::Fault {
            id: EventId::FPermission,
            ..
        })
    ));
    assert!(matches!(
        r.dev.dma_read(SID, None, 0x30_0000, 4),
        Err(DmaError::Fault {
            id: EventId::FTranslation,
            ..
        })
    ));
    // Beyond the 39-bit IPA space.
    assert!(matches!(
        r.dev.dma_read(SID, None, 1 << 39, 4),
        Err(DmaError::Fault {
            id: EventId::FTranslation,
            ..
        })
    ));
    // A transaction with a SubstreamID on a stream without stage 1.
    assert!(matches!(
        r.dev.dma_read(SID, Some(1), 0x20_0000, 4),
        Err(DmaError::Fault {
            id: EventId::CBadSubstreamId,
            recorded: true
        })
    ));
    let ev = r.events();
    assert_eq!(ev.len(), 4);
    assert!(ev[0].s2() && ev[1].s2() && ev[2].s2());
    assert_eq!(ev[0].event_id(), Ok(EventId::FPermission));
    assert_eq!(ev[0].ipa(), 0x20_1000);
    assert_eq!(ev[1].ipa(), 0x30_0000);
    assert_eq!(ev[1].class(), Ok(EventClass::In));
    assert_eq!(ev[3].event_id(), Ok(EventId::CBadSubstreamId));
    assert_eq!(ev[3].substream(), Some(1));
}

#[test]
fn nested_translation() {
    let mut r = Rig::new(SmmuConfig::new());
    // Stage 2: the rig RAM (tables, CDs) identity-mapped, and guest
    // "IPA" 0x1_0000_0000 → page 5.
    let s2root = r.table();
    r.s2_identity(s2root);
    r.s2_map(s2root, 0x1_0000_0000, page(5), S2Ap::ReadWrite);
    // Stage 1 (guest): VA 0x40_0000 → IPA 0x1_0000_0000, VA 0x40_1000 →
    // IPA 0x1_0000_1000 (not mapped at stage 2).
    let s1root = r.table();
    r.s1_map(s1root, 0x40_0000, 0x1_0000_0000, S1Ap::RwAny);
    r.s1_map(s1root, 0x40_1000, 0x1_0000_1000, S1Ap::RwAny);
    let cd_pa = r.alloc(64);
    r.write_cd(cd_pa, &Rig::cd(s1root, 9));
    let ste = Rig::with_s2(Rig::s1_ste(cd_pa), s2root, 3);
    assert_eq!(ste.config(), Ok(StreamConfig::Nested));
    r.install_ste(SID, &ste);
    assert_eq!(r.dev.dma_read(SID, None, 0x40_0abc, 4), Ok(page(5) + 0xabc));
    assert!(matches!(
        r.dev.dma_read(SID, None, 0x40_1000, 4),
        Err(DmaError::Fault {
            id: EventId::FTranslation,
            ..
        })
    ));
    let ev = r.events();
    assert_eq!(ev.len(), 1);
    assert!(ev[0].s2(), "the IPA is unmapped at stage 2");
    assert_eq!(ev[0].ipa(), 0x1_0000_1000);
    assert_eq!(ev[0].input_addr(), 0x40_1000);
    assert_eq!(ev[0].class(), Ok(EventClass::In));

    // A stage 1 table outside stage 2's map: S2 fault of class TTD.
    let s1b = 0x2_0000_0000u64; // IPA not mapped at stage 2
    let cd2_pa = r.alloc(64);
    r.write_cd(cd2_pa, &Rig::cd(s1b, 10));
    let ste2 = Rig::with_s2(Rig::s1_ste(cd2_pa), s2root, 3);
    r.install_ste(SID + 1, &ste2);
    assert!(matches!(
        r.dev.dma_read(SID + 1, None, 0x1000, 4),
        Err(DmaError::Fault {
            id: EventId::FTranslation,
            ..
        })
    ));
    let ev = r.events();
    assert!(ev[0].s2());
    assert_eq!(ev[0].class(), Ok(EventClass::Ttd));
    assert_eq!(ev[0].ipa(), s1b);

    // A CD pointer outside stage 2's map: S2 fault of class CD.
    let ste3 = Rig::with_s2(Rig::s1_ste(0x3_0000_0000), s2root, 3);
    r.install_ste(SID + 2, &ste3);
    assert!(matches!(
        r.dev.dma_read(SID + 2, None, 0x1000, 4),
        Err(DmaError::Fault {
            id: EventId::FTranslation,
            ..
        })
    ));
    let ev = r.events();
    assert_eq!(ev[0].class(), Ok(EventClass::Cd));
    assert!(ev[0].s2());
}

#[test]
fn stale_tlb_until_tlbi_and_sync() {
    let (mut r, root, _) = s1_rig(SmmuConfig::new());
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(0)));
    // Remap without invalidating: the IOTLB keeps the old page.
    r.s1_map(root, 0x10_0000, page(7), S1Ap::RwAny);
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(0)));
    // TLBI consumed but not yet synced: still stale.
    r.cmd(Command::tlbi_nh_va(0, 1, 0x10_0000, true));
    assert_eq!(r.smmu.deferred_invalidations(), 1);
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(0)));
    r.sync();
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(7)));
    // Wrong ASID or VMID invalidates nothing.
    r.s1_map(root, 0x10_0000, page(8), S1Ap::RwAny);
    r.cmds(&[
        Command::tlbi_nh_asid(0, 2),
        Command::tlbi_nh_asid(5, 1),
        Command::sync(SyncCs::None),
    ]);
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(7)));
    r.cmds(&[Command::tlbi_nh_asid(0, 1), Command::sync(SyncCs::None)]);
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(8)));
    // Unmap + TLBI + SYNC: now a fault.
    r.s1_unmap(root, 0x10_0000);
    r.cmds(&[
        Command::tlbi_nh_vaa(0, 0x10_0000, true),
        Command::sync(SyncCs::None),
    ]);
    assert!(r.dev.dma_read(SID, None, 0x10_0000, 4).is_err());
    // Permission upgrade also needs invalidation.
    assert!(r.dev.dma_read(SID, None, 0x10_1000, 4).is_ok());
    r.s1_map(root, 0x10_1000, page(1), S1Ap::RwAny);
    assert!(
        r.dev.dma_write(SID, None, 0x10_1000, 4).is_err(),
        "cached read-only entry"
    );
    r.cmds(&[Command::tlbi_nh_all(0), Command::sync(SyncCs::None)]);
    assert!(r.dev.dma_write(SID, None, 0x10_1000, 4).is_ok());
}

#[test]
fn tlbi_range_invalidation() {
    let (mut r, root, _) = s1_rig(SmmuConfig::new());
    for i in 0..4 {
        r.s1_map(root, 0x30_0000 + i * PAGE, page(10 + i), S1Ap::RwAny);
        assert!(r.dev.dma_read(SID, None, 0x30_0000 + i * PAGE, 4).is_ok());
        r.s1_map(root, 0x30_0000 + i * PAGE, page(20 + i), S1Ap::RwAny);
    }
    // NUM = 1, SCALE = 0, TG = 4K: two pages.
    r.cmds(&[
        Command::tlbi_nh_va(0, 1, 0x30_1000, true).with_range(1, 0, 1, 3),
        Command::sync(SyncCs::None),
    ]);
    let got: Vec<u64> = (0..4)
        .map(|i| r.dev.dma_read(SID, None, 0x30_0000 + i * PAGE, 4).unwrap())
        .collect();
    assert_eq!(got, [page(10), page(21), page(22), page(13)]);
}

#[test]
fn nested_needs_stage1_invalidation_after_s2_change() {
    let mut r = Rig::new(SmmuConfig::new());
    let s2root = r.table();
    r.s2_identity(s2root);
    r.s2_map(s2root, 0x1_0000_0000, page(5), S2Ap::ReadWrite);
    let s1root = r.table();
    r.s1_map(s1root, 0x40_0000, 0x1_0000_0000, S1Ap::RwAny);
    let cd_pa = r.alloc(64);
    r.write_cd(cd_pa, &Rig::cd(s1root, 9));
    r.install_ste(SID, &Rig::with_s2(Rig::s1_ste(cd_pa), s2root, 3));
    assert_eq!(r.dev.dma_read(SID, None, 0x40_0000, 4), Ok(page(5)));
    r.s2_map(s2root, 0x1_0000_0000, page(6), S2Ap::ReadWrite);
    // TLBI_S2_IPA alone leaves the combined entry.
    r.cmds(&[
        Command::tlbi_s2_ipa(3, 0x1_0000_0000, true),
        Command::sync(SyncCs::None),
    ]);
    assert_eq!(r.dev.dma_read(SID, None, 0x40_0000, 4), Ok(page(5)));
    r.cmds(&[Command::tlbi_s12_vmall(3), Command::sync(SyncCs::None)]);
    assert_eq!(r.dev.dma_read(SID, None, 0x40_0000, 4), Ok(page(6)));
}

#[test]
fn stage2_tlbi_s2_ipa() {
    let mut r = Rig::new(SmmuConfig::new().defer_invalidation_to_sync(false));
    let root = r.table();
    r.s2_map(root, 0x20_0000, page(3), S2Ap::ReadWrite);
    r.install_ste(SID, &Rig::s2_ste(root, 7));
    assert_eq!(r.dev.dma_read(SID, None, 0x20_0000, 4), Ok(page(3)));
    r.s2_map(root, 0x20_0000, page(4), S2Ap::ReadWrite);
    assert_eq!(r.dev.dma_read(SID, None, 0x20_0000, 4), Ok(page(3)));
    // Without deferral the TLBI takes effect when consumed.
    r.cmd(Command::tlbi_s2_ipa(7, 0x20_0000, true));
    assert_eq!(r.dev.dma_read(SID, None, 0x20_0000, 4), Ok(page(4)));
}

#[test]
fn stale_ste_and_cd_until_cfgi() {
    let (mut r, root, cd_pa) = s1_rig(SmmuConfig::new());
    assert!(r.dev.dma_read(SID, None, 0x10_0000, 4).is_ok());
    assert!(r.smmu.ste_cached(SID) && r.smmu.cd_cached(SID, 0));
    // STE → abort without CFGI: the cached STE (and the TLB) still serve.
    let mut abort = Rig::s1_ste(cd_pa);
    abort.set_config(StreamConfig::Abort);
    r.write_ste(SID, &abort);
    r.cmd(Command::tlbi_nh_all(0));
    r.sync();
    assert!(r.dev.dma_read(SID, None, 0x10_0000, 4).is_ok());
    r.cmds(&[Command::cfgi_ste(SID, true), Command::sync(SyncCs::None)]);
    assert_eq!(
        r.dev.dma_read(SID, None, 0x10_0000, 4),
        Err(DmaError::Aborted)
    );
    assert!(r.events().is_empty(), "an abort STE records nothing");

    // Back to translate, but change the CD (new ASID, new table) and only
    // invalidate the STE: the stale CD stays (strict model).
    r.install_ste(SID, &Rig::s1_ste(cd_pa));
    let root2 = r.table();
    r.s1_map(root2, 0x10_0000, page(9), S1Ap::RwAny);
    r.write_cd(cd_pa, &Rig::cd(root2, 2));
    r.cmds(&[Command::cfgi_ste(SID, true), Command::sync(SyncCs::None)]);
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(0)));
    r.cmds(&[Command::cfgi_cd(SID, 0, true), Command::sync(SyncCs::None)]);
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(9)));
    let _ = root;
}

#[test]
fn lenient_cfgi_ste_option() {
    let (mut r, _, cd_pa) = s1_rig(SmmuConfig::new().cfgi_ste_invalidates_cds(true));
    assert!(r.dev.dma_read(SID, None, 0x10_0000, 4).is_ok());
    let root2 = r.table();
    r.s1_map(root2, 0x10_0000, page(9), S1Ap::RwAny);
    r.write_cd(cd_pa, &Rig::cd(root2, 2));
    r.cmds(&[Command::cfgi_ste(SID, true), Command::sync(SyncCs::None)]);
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(9)));
}

#[test]
fn configuration_errors() {
    let mut r = Rig::new(SmmuConfig::new());
    // SID beyond the table (LOG2SIZE 8), recorded thanks to CR2.RECINVSID.
    assert_eq!(
        r.dev.dma_read(0x100, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadStreamId,
            recorded: true
        })
    );
    // V = 0.
    assert_eq!(
        r.dev.dma_read(1, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadSte,
            recorded: true
        })
    );
    // Reserved Config 0b001..0b011 behave as 0b000: abort, no event
    // (IHI 0070 §5.2 Config).
    for config in 1..=3 {
        let mut ste = smmuv3::Ste::zeroed();
        ste.set_v(true).set_field(smmuv3::Ste::CONFIG, config);
        r.install_ste(2, &ste);
        let before = r.smmu.events_recorded();
        assert_eq!(r.dev.dma_read(2, None, 0, 4), Err(DmaError::Aborted));
        assert_eq!(r.smmu.events_recorded(), before);
    }
    // S2AA64 = 0 is illegal (and must never reach QEMU).
    let root = r.table();
    let mut s2 = Rig::s2_ste(root, 1);
    s2.set_s2aa64(false);
    r.install_ste(3, &s2);
    assert!(matches!(
        r.dev.dma_read(3, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadSte,
            ..
        })
    ));
    // Bypass STE.
    let mut byp = smmuv3::Ste::zeroed();
    byp.set_v(true).set_config(StreamConfig::Bypass);
    r.install_ste(4, &byp);
    assert_eq!(r.dev.dma_read(4, None, 0xabc0, 4), Ok(0xabc0));
    // CD with V = 0.
    let cd_pa = r.alloc(64);
    r.install_ste(5, &Rig::s1_ste(cd_pa));
    assert!(matches!(
        r.dev.dma_read(5, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadCd,
            ..
        })
    ));
    // CD pointer to unbacked memory: F_CD_FETCH with the fetch address.
    r.install_ste(6, &Rig::s1_ste(0x9000_0000));
    assert!(matches!(
        r.dev.dma_read(6, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::FCdFetch,
            ..
        })
    ));
    // TTB0 in unbacked memory: F_WALK_EABT.
    let cd2 = r.alloc(64);
    r.write_cd(cd2, &Rig::cd(0x9000_0000, 3));
    r.install_ste(7, &Rig::s1_ste(cd2));
    assert!(matches!(
        r.dev.dma_read(7, None, 0x1000, 4),
        Err(DmaError::Fault {
            id: EventId::FWalkEabt,
            ..
        })
    ));
    // Translated to an unbacked PA: a bus error, nothing recorded.
    let root3 = r.table();
    r.s1_map(root3, 0x1000, 0x9000_0000, S1Ap::RwAny);
    let cd3 = r.alloc(64);
    r.write_cd(cd3, &Rig::cd(root3, 4));
    r.install_ste(8, &Rig::s1_ste(cd3));
    let mut buf = [0u8; 4];
    assert_eq!(
        r.dev.dma_read_bytes(8, None, 0x1000, &mut buf),
        Err(DmaError::BusError { pa: 0x9000_0000 })
    );

    let ev = r.events();
    let ids: Vec<_> = ev.iter().map(|e| e.event_id().unwrap()).collect();
    assert_eq!(
        ids,
        [
            EventId::CBadStreamId,
            EventId::CBadSte,
            EventId::CBadSte,
            EventId::CBadCd,
            EventId::FCdFetch,
            EventId::FWalkEabt
        ]
    );
    assert_eq!(ev[4].fetch_addr(), 0x9000_0000);
    assert_eq!(
        ev[5].fetch_addr(),
        0x9000_0000 + 8 * smmuv3::pgtable::start_index(0x1000, 1, 39) as u64
    );
    assert_eq!(ev[5].class(), Ok(EventClass::Ttd));

    // Without RECINVSID an invalid StreamID aborts silently.
    r.smmu.write_reg(regs::CR2, regs::CR2::PTM::SET);
    assert_eq!(r.dev.dma_read(0x100, None, 0, 4), Err(DmaError::Aborted));
}

#[test]
fn two_level_stream_table() {
    let mut r = Rig::two_level(SmmuConfig::new());
    let root = r.table();
    r.s2_map(root, 0x20_0000, page(3), S2Ap::ReadWrite);
    let sid = 0x1234;
    r.install_ste(sid, &Rig::s2_ste(root, 1));
    assert_eq!(r.dev.dma_read(sid, None, 0x20_0000, 4), Ok(page(3)));
    // A SID whose L1 descriptor has Span 0.
    assert!(matches!(
        r.dev.dma_read(0x2000, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadStreamId,
            ..
        })
    ));
    // An L1 descriptor pointing at unbacked memory: F_STE_FETCH.
    let l1 = r.strtab + (0x3000u64 >> 8) * 8;
    r.mem
        .write_obj(l1, &smmuv3::L1StreamDesc::new(0x9000_0000, 8))
        .unwrap();
    assert!(matches!(
        r.dev.dma_read(0x3000, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::FSteFetch,
            ..
        })
    ));
    let ev = r.events();
    assert_eq!(ev[1].event_id(), Ok(EventId::FSteFetch));
    assert_eq!(ev[1].fetch_addr(), 0x9000_0000);
}

/// A stream with S1CDMax = 20 and a 2-level (64K leaf) CD table: PASIDs
/// 0x12345 and 7 with their own address spaces.
#[test]
fn substreams_two_level_cd_table() {
    let mut r = Rig::new(SmmuConfig::new());
    let l1 = r.alloc(8 << 10); // 2^(20-10) L1 descriptors
    let mut ste = Rig::s1_ste(l1);
    ste.set_s1cdmax(20)
        .set_s1fmt(S1Fmt::TwoLevel64K)
        .set_s1dss(S1Dss::Terminate);
    let add_pasid = |r: &mut Rig, pasid: u32, asid: u16, target: u64| {
        let l1_slot = l1 + (pasid as u64 >> 10) * 8;
        let mut d: L1CdDesc = r.mem.read_obj(l1_slot).unwrap();
        if !d.v() {
            d = L1CdDesc::new(r.alloc(64 << 10));
            r.mem.write_obj(l1_slot, &d).unwrap();
        }
        let root = r.table();
        r.s1_map(root, 0x5000, target, S1Ap::RwAny);
        r.write_cd(d.l2ptr() + (pasid as u64 & 1023) * 64, &Rig::cd(root, asid));
        r.cmds(&[
            Command::cfgi_cd(SID, pasid, false),
            Command::sync(SyncCs::None),
        ]);
    };
    r.install_ste(SID, &ste);
    add_pasid(&mut r, 0x12345, 11, page(11));
    add_pasid(&mut r, 7, 12, page(12));
    assert_eq!(r.dev.dma_read(SID, Some(0x12345), 0x5000, 4), Ok(page(11)));
    assert_eq!(r.dev.dma_read(SID, Some(7), 0x5000, 4), Ok(page(12)));
    // PASID whose L1 descriptor is invalid.
    assert!(matches!(
        r.dev.dma_read(SID, Some(0x80000), 0x5000, 4),
        Err(DmaError::Fault {
            id: EventId::CBadSubstreamId,
            ..
        })
    ));
    // Valid L1, but the CD slot is empty.
    assert!(matches!(
        r.dev.dma_read(SID, Some(8), 0x5000, 4),
        Err(DmaError::Fault {
            id: EventId::CBadCd,
            ..
        })
    ));
    // No PASID with S1DSS = terminate.
    assert!(matches!(
        r.dev.dma_read(SID, None, 0x5000, 4),
        Err(DmaError::Fault {
            id: EventId::FStreamDisabled,
            ..
        })
    ));
    let ev = r.events();
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0].substream(), Some(0x80000));
    assert_eq!(ev[1].substream(), Some(8));
    assert_eq!(ev[2].substream(), None);
    // The faults carry the PASID too.
    assert!(r.dev.dma_read(SID, Some(7), 0x6000, 4).is_err());
    assert_eq!(r.events()[0].substream(), Some(7));
}

#[test]
fn s1dss_ssid0_and_linear_cd_table() {
    let mut r = Rig::new(SmmuConfig::new());
    let table = r.alloc(4 * 64);
    let root0 = r.table();
    r.s1_map(root0, 0x5000, page(1), S1Ap::RwAny);
    let root2 = r.table();
    r.s1_map(root2, 0x5000, page(2), S1Ap::RwAny);
    r.write_cd(table, &Rig::cd(root0, 1));
    r.write_cd(table + 2 * 64, &Rig::cd(root2, 2));
    let mut ste = Rig::s1_ste(table);
    ste.set_s1cdmax(2)
        .set_s1fmt(S1Fmt::Linear)
        .set_s1dss(S1Dss::Ssid0);
    r.install_ste(SID, &ste);
    assert_eq!(
        r.dev.dma_read(SID, None, 0x5000, 4),
        Ok(page(1)),
        "no PASID uses CD 0"
    );
    assert_eq!(r.dev.dma_read(SID, Some(2), 0x5000, 4), Ok(page(2)));
    assert!(matches!(
        r.dev.dma_read(SID, Some(0), 0x5000, 4),
        Err(DmaError::Fault {
            id: EventId::CBadSubstreamId,
            ..
        })
    ));
    assert!(matches!(
        r.dev.dma_read(SID, Some(4), 0x5000, 4),
        Err(DmaError::Fault {
            id: EventId::CBadSubstreamId,
            ..
        })
    ));
}

#[test]
fn illegal_command_stops_the_queue_until_acknowledged() {
    let mut r = Rig::new(SmmuConfig::new());
    r.smmu.take_irqs();
    r.smmu.clear_command_log();
    let mut bad = Command::zeroed();
    bad.set_raw_opcode(0x07);
    let cons0 = QueuePtr::from_raw(r.cmdq_log2, r.cmdq_cons());
    r.cmds(&[
        Command::prefetch_config(SID, None),
        bad,
        Command::sync(SyncCs::Irq),
    ]);
    let cons = r.cmdq_cons();
    assert_eq!(CmdqError::from_cons(cons), Ok(CmdqError::Ill));
    assert_eq!(
        QueuePtr::from_raw(r.cmdq_log2, cons),
        cons0.advance(1),
        "CONS points at the bad command"
    );
    let g = r.smmu.read_reg(regs::GERROR).get() ^ r.smmu.read_reg(regs::GERRORN).get();
    assert_eq!(g, GERROR::CMDQ_ERR::SET.value);
    let irqs = r.smmu.take_irqs();
    assert!(
        irqs.gerror && !irqs.cmd_sync,
        "the SYNC after the bad command did not run"
    );
    // More commands do not run while the error is active.
    r.cmd(Command::sync(SyncCs::Irq));
    assert!(!r.smmu.take_irqs().cmd_sync);
    // Replace the bad command with a SYNC (as Linux does) and acknowledge.
    let slot = r.cmdq + cons0.advance(1).entry_offset(16) as u64;
    r.mem.write_obj(slot, &Command::sync(SyncCs::None)).unwrap();
    let gerror = r.smmu.read32(regs::GERROR.offset());
    r.smmu.write32(regs::GERRORN.offset(), gerror);
    assert!(r.smmu.take_irqs().cmd_sync, "consumption resumed");
    let log = r.smmu.commands();
    let outcomes: Vec<_> = log.iter().map(|c| (c.opcode(), c.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (Some(smmuv3::Opcode::PrefetchConfig), CmdOutcome::Done),
            (None, CmdOutcome::Illegal),
            (Some(smmuv3::Opcode::Sync), CmdOutcome::Done),
            (Some(smmuv3::Opcode::Sync), CmdOutcome::Done),
            (Some(smmuv3::Opcode::Sync), CmdOutcome::Done),
        ]
    );
    assert!(log.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let p = QueuePtr::from_raw(r.cmdq_log2, r.smmu.read32(regs::CMDQ_PROD.offset()));
    assert!(p.is_empty(QueuePtr::from_raw(r.cmdq_log2, r.cmdq_cons())));
}

#[test]
fn unsupported_features_are_illegal_commands_and_configs() {
    let mut r = Rig::new(SmmuConfig::qemu_virt());
    r.cmd(Command::pri_resp(SID, None, 0, PriResponse::Success));
    assert_eq!(CmdqError::from_cons(r.cmdq_cons()), Ok(CmdqError::Ill));
    // Skip it: disable the queue, move CONS, acknowledge, re-enable.
    let cr0 = r.smmu.read32(regs::CR0.offset());
    r.smmu
        .write32(regs::CR0.offset(), cr0 & !CR0::CMDQEN::SET.value);
    let cons = QueuePtr::from_raw(r.cmdq_log2, r.cmdq_cons()).advance(1);
    r.smmu.write32(regs::CMDQ_CONS.offset(), cons.raw());
    let gerror = r.smmu.read32(regs::GERROR.offset());
    r.smmu.write32(regs::GERRORN.offset(), gerror);
    r.smmu.write32(regs::CR0.offset(), cr0);
    r.cmd(Command::resume(SID, 0, ResumeAction::Retry));
    assert_eq!(CmdqError::from_cons(r.cmdq_cons()), Ok(CmdqError::Ill));
    assert_eq!(
        r.smmu.commands().last().unwrap().outcome,
        CmdOutcome::Illegal
    );
    // CD.S with no stall model → C_BAD_CD.
    let root = r.table();
    let cd_pa = r.alloc(64);
    let mut cd = Rig::cd(root, 1);
    cd.set_s(true);
    r.write_cd(cd_pa, &cd);
    r.write_ste(SID, &Rig::s1_ste(cd_pa));
    assert!(matches!(
        r.dev.dma_read(SID, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadCd,
            ..
        })
    ));
    // No PRI queue.
    assert_eq!(
        r.dev.page_request(SID, None, 0, 0, true, false, true),
        PriOutcome::Unsupported
    );
}

#[test]
fn cmd_sync_signals() {
    let mut r = Rig::new(SmmuConfig::new());
    r.smmu.take_irqs();
    r.cmd(Command::sync(SyncCs::None));
    assert!(!r.smmu.take_irqs().cmd_sync);
    r.cmd(Command::sync(SyncCs::Irq));
    assert!(r.smmu.take_irqs().cmd_sync);
    r.cmd(Command::sync(SyncCs::Sev));
    assert_eq!(r.smmu.sev_count(), 1);
    // MSI completion (as Linux polls for) needs IDR0.MSI.
    let mut m = Rig::new(SmmuConfig::new().msi(true));
    let flag = m.alloc(64);
    m.cmd(Command::sync_msi(flag, 0xcafe, 0, 0));
    assert_eq!(m.mem.read_u32(flag), Ok(0xcafe));
    assert_eq!(m.smmu.msi_writes(), [(flag, 0xcafe)]);
}

#[test]
fn pri_group_and_response_logged() {
    let mut r = Rig::new(SmmuConfig::new());
    let d = &r.dev;
    // Group 3 of (SID, PASID 5): two partial requests and the Last.
    assert_eq!(
        d.page_request(SID, Some(5), 3, 0x1000, true, false, false),
        PriOutcome::Queued
    );
    assert_eq!(
        d.page_request(SID, Some(5), 3, 0x2000, true, true, false),
        PriOutcome::Queued
    );
    assert_eq!(
        d.page_request(SID, Some(5), 3, 0x3000, true, false, true),
        PriOutcome::Queued
    );
    // Another group, and a stop marker (never answered).
    assert_eq!(
        d.page_request(SID, Some(6), 4, 0x9000, false, true, true),
        PriOutcome::Queued
    );
    assert_eq!(d.stop_marker(SID, 5, 0), PriOutcome::Queued);
    assert!(r.smmu.take_irqs().priq);
    let g3 = PriGroup {
        sid: SID,
        ssid: Some(5),
        prgi: 3,
    };
    let g4 = PriGroup {
        sid: SID,
        ssid: Some(6),
        prgi: 4,
    };
    assert_eq!(r.smmu.pending_pri_groups(), [g3, g4]);

    let entries = r.pri_entries();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].page_addr(), 0x1000);
    assert!(entries[0].read() && !entries[0].last());
    assert!(entries[2].last() && !entries[2].is_stop_marker());
    assert_eq!(entries[2].prgi(), 3);
    assert_eq!(entries[2].substream(), Some(5));
    assert!(entries[4].is_stop_marker());

    r.cmds(&[
        Command::pri_resp(SID, Some(5), 3, PriResponse::Success),
        Command::pri_resp(SID, Some(6), 4, PriResponse::ResponseFailure),
        Command::sync(SyncCs::None),
    ]);
    assert_eq!(r.smmu.pri_responses(g3), [PriResponse::Success]);
    assert_eq!(r.smmu.pri_responses(g4), [PriResponse::ResponseFailure]);
    assert!(r.smmu.pending_pri_groups().is_empty());
    assert!(r.smmu.unmatched_responses().is_empty());
    // A second response to the same group is flagged.
    r.cmd(Command::pri_resp(SID, Some(5), 3, PriResponse::Success));
    assert_eq!(
        r.smmu.pri_responses(g3),
        [PriResponse::Success, PriResponse::Success]
    );
    let stray = r.smmu.unmatched_responses();
    assert_eq!(stray.len(), 1);
    assert!(matches!(
        stray[0].kind,
        Ok(CommandKind::PriResp { prgi: 3, .. })
    ));
    assert_eq!(r.smmu.count_opcode(smmuv3::Opcode::PriResp), 3);
    assert_eq!(
        r.smmu
            .commands_where(|k| matches!(k, CommandKind::PriResp { .. }))
            .len(),
        3
    );
}

#[test]
fn pri_queue_overflow() {
    // A PRI queue of 2 entries.
    let mut r = Rig::with_queues(SmmuConfig::new(), 6, 6, 1);
    let d = r.dev.clone();
    assert_eq!(
        d.page_request(SID, Some(1), 1, 0x1000, true, false, true),
        PriOutcome::Queued
    );
    assert_eq!(
        d.page_request(SID, Some(1), 2, 0x2000, true, false, false),
        PriOutcome::Queued
    );
    // Full: the next two are lost; the flag toggles once.
    assert_eq!(
        d.page_request(SID, Some(1), 2, 0x3000, true, false, true),
        PriOutcome::Overflow
    );
    assert_eq!(
        d.page_request(SID, Some(1), 3, 0x4000, true, false, false),
        PriOutcome::Overflow
    );
    let prod = QueuePtr::from_raw(1, r.smmu.read32(regs::PRIQ_PROD.offset()));
    assert!(prod.overflow());
    assert_eq!(r.smmu.pri_lost(), 2);
    // The lost Last of group 2 was answered by the SMMU itself.
    let auto = r.smmu.auto_pri_responses();
    assert_eq!(auto.len(), 1);
    assert_eq!(
        auto[0].group,
        PriGroup {
            sid: SID,
            ssid: Some(1),
            prgi: 2
        }
    );
    assert_eq!(auto[0].reason, AutoPriReason::Overflow);
    // Group 1's Last was queued and still needs an answer.
    assert_eq!(
        r.smmu.pending_pri_groups(),
        [PriGroup {
            sid: SID,
            ssid: Some(1),
            prgi: 1
        }]
    );
    // Drain without acknowledging: the overflow stays active, and an active
    // overflow inhibits every write even with room (§8.1); it does not
    // toggle again.
    assert_eq!(r.pri_entries_no_ack().len(), 2);
    assert_eq!(
        d.page_request(SID, None, 5, 0, true, false, false),
        PriOutcome::Overflow
    );
    assert_eq!(
        d.page_request(SID, None, 5, 0, true, false, true),
        PriOutcome::Overflow
    );
    assert!(QueuePtr::from_raw(1, r.smmu.read32(regs::PRIQ_PROD.offset())).overflow());
    // The discarded Last without a PASID was answered Success, no PASID.
    let last = *r.smmu.device_group_responses(SID, 5).last().unwrap();
    assert_eq!(last.code, ResponseCode::Success);
    assert_eq!(last.pasid, None);
    // Acknowledge (CONS.OVACKFLG = PROD.OVFLG): nothing was written while
    // the overflow was active; writes resume and the next overflow toggles.
    assert!(r.pri_entries().is_empty());
    assert_eq!(
        d.page_request(SID, None, 6, 0, true, false, false),
        PriOutcome::Queued
    );
    assert_eq!(
        d.page_request(SID, None, 6, 0, true, false, false),
        PriOutcome::Queued
    );
    assert_eq!(
        d.page_request(SID, None, 6, 0, true, false, false),
        PriOutcome::Overflow
    );
    assert!(!QueuePtr::from_raw(1, r.smmu.read32(regs::PRIQ_PROD.offset())).overflow());
}

#[test]
fn event_queue_overflow() {
    // An event queue of 2 entries.
    let mut r = Rig::with_queues(SmmuConfig::new(), 6, 1, 6);
    for sid in 1..=3 {
        let _ = r.dev.dma_read(sid, None, 0, 4);
    }
    assert_eq!(r.smmu.events_recorded(), 2);
    assert_eq!(r.smmu.events_lost(), 1);
    let prod = QueuePtr::from_raw(1, r.smmu.read32(regs::EVENTQ_PROD.offset()));
    assert!(prod.overflow());
    let ev = r.events();
    assert_eq!(ev.iter().map(|e| e.sid()).collect::<Vec<_>>(), [1, 2]);
    let cons = QueuePtr::from_raw(1, r.smmu.read32(regs::EVENTQ_CONS.offset()));
    assert!(cons.overflow(), "acknowledged");
    // The queue works again after draining.
    let _ = r.dev.dma_read(4, None, 0, 4);
    assert_eq!(r.events()[0].sid(), 4);
}

#[test]
fn event_queue_disabled_drops_events() {
    let mut r = Rig::new(SmmuConfig::new());
    let cr0 = r.smmu.read32(regs::CR0.offset());
    r.smmu
        .write32(regs::CR0.offset(), cr0 & !CR0::EVTQEN::SET.value);
    assert_eq!(
        r.dev.dma_read(1, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadSte,
            recorded: false
        })
    );
    r.smmu.write32(regs::CR0.offset(), cr0);
    assert!(r.events().is_empty());
}

#[test]
fn stall_resume_and_terminate() {
    let mut r = Rig::new(SmmuConfig::new());
    let root = r.table();
    let cd_pa = r.alloc(64);
    let mut cd = Rig::cd(root, 1);
    cd.set_s(true).set_r(false); // stall faults are recorded regardless of R
    r.write_cd(cd_pa, &cd);
    r.install_ste(SID, &Rig::s1_ste(cd_pa));

    let Err(DmaError::Stalled { stag }) = r.dev.dma_write(SID, None, 0x8000, 4) else {
        panic!("expected a stall")
    };
    let ev = r.events();
    assert_eq!(ev.len(), 1);
    assert!(ev[0].stall());
    assert_eq!(ev[0].stag(), stag);
    assert_eq!(ev[0].event_id(), Ok(EventId::FTranslation));
    assert!(!ev[0].rnw());
    assert_eq!(r.dev.stall_state(SID, stag), Some(StallState::Pending));
    assert_eq!(r.dev.pending_stalls(), [(SID, stag)]);

    // Fix the mapping, invalidate, and retry.
    r.s1_map(root, 0x8000, page(6), S1Ap::RwAny);
    r.cmds(&[
        Command::resume(SID, stag, ResumeAction::Retry),
        Command::sync(SyncCs::None),
    ]);
    assert_eq!(
        r.dev.stall_state(SID, stag),
        Some(StallState::Resolved(StallOutcome::Retried(Ok(page(6)))))
    );
    assert_eq!(r.smmu.resumes(SID, stag), [ResumeAction::Retry]);

    // Two more stalls: one aborted by RESUME, one by STALL_TERM.
    let Err(DmaError::Stalled { stag: a }) = r.dev.dma_read(SID, None, 0x9000, 4) else {
        panic!()
    };
    let Err(DmaError::Stalled { stag: b }) = r.dev.dma_read(SID, None, 0xa000, 4) else {
        panic!()
    };
    assert_ne!(a, b);
    r.cmds(&[
        Command::resume(SID, a, ResumeAction::Abort),
        Command::sync(SyncCs::None),
    ]);
    assert_eq!(
        r.dev.stall_state(SID, a),
        Some(StallState::Resolved(StallOutcome::Terminated(
            ResumeAction::Abort
        )))
    );
    // STALL_TERM while the STE still translates: UNPREDICTABLE (§4.7.2);
    // the model terminates nothing and flags it.
    r.cmds(&[Command::stall_term(SID), Command::sync(SyncCs::None)]);
    assert_eq!(r.dev.stall_state(SID, b), Some(StallState::Pending));
    assert_eq!(
        r.smmu
            .commands_where(|k| matches!(k, CommandKind::StallTerm { .. }))
            .last()
            .map(|c| c.outcome),
        Some(CmdOutcome::Unpredictable)
    );
    // Abort STE written but not yet invalidated: the SMMU still uses the
    // old one, so it is still too early.
    let mut abort = Ste::zeroed();
    abort.set_config(StreamConfig::Abort).set_v(true);
    r.write_ste(SID, &abort);
    r.cmds(&[Command::stall_term(SID), Command::sync(SyncCs::None)]);
    assert_eq!(r.dev.stall_state(SID, b), Some(StallState::Pending));
    // After CFGI_STE + SYNC it terminates them.
    r.cmds(&[Command::cfgi_ste(SID, true), Command::sync(SyncCs::None)]);
    r.cmds(&[Command::stall_term(SID), Command::sync(SyncCs::None)]);
    assert_eq!(
        r.dev.stall_state(SID, b),
        Some(StallState::Resolved(StallOutcome::StallTerm))
    );
    assert!(r.dev.pending_stalls().is_empty());
    // A RESUME for nothing stalled is flagged.
    r.cmd(Command::resume(SID, a, ResumeAction::Retry));
    assert_eq!(r.smmu.unmatched_responses().len(), 1);

    // STE.S1STALLD = 1 with CD.S = 1: the CD is ILLEGAL (IHI 0070 §5.4
    // CdIllegal(): stalls disabled for the stream but enabled for the CD).
    let mut ste = Rig::s1_ste(cd_pa);
    ste.set_s1stalld(true);
    r.install_ste(SID, &ste);
    assert_eq!(
        r.dev.dma_read(SID, None, 0xb000, 4),
        Err(DmaError::Fault {
            id: EventId::CBadCd,
            recorded: true
        })
    );
}

#[test]
fn stage2_stall_and_retry_that_faults_again() {
    let mut r = Rig::new(SmmuConfig::new());
    let root = r.table();
    let mut ste = Rig::s2_ste(root, 4);
    ste.set_s2s(true);
    r.install_ste(SID, &ste);
    let Err(DmaError::Stalled { stag }) = r.dev.dma_read(SID, None, 0x4000, 4) else {
        panic!()
    };
    let ev = r.events();
    assert!(ev[0].stall() && ev[0].s2());
    assert_eq!(ev[0].ipa(), 0x4000);
    // Retry without fixing anything: stalls again with a new STAG.
    r.cmd(Command::resume(SID, stag, ResumeAction::Retry));
    let Some(StallState::Resolved(StallOutcome::Retried(Err(DmaError::Stalled { stag: again })))) =
        r.dev.stall_state(SID, stag)
    else {
        panic!()
    };
    assert_ne!(again, stag);
    assert_eq!(r.events().len(), 1);
    r.cmd(Command::resume(SID, again, ResumeAction::Term));
    assert!(r.dev.pending_stalls().is_empty());
}

#[test]
fn forced_stall_model_rejects_s1stalld() {
    let mut r = Rig::new(SmmuConfig::new().stall_model(StallModel::StallForced));
    let root = r.table();
    let cd_pa = r.alloc(64);
    r.write_cd(cd_pa, &Rig::cd(root, 1));
    let mut ste = Rig::s1_ste(cd_pa);
    ste.set_s1stalld(true);
    r.install_ste(SID, &ste);
    assert!(matches!(
        r.dev.dma_read(SID, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadSte,
            ..
        })
    ));
    // Stall forced: CD.S = 0 is ILLEGAL (CdIllegal()), CD.S = 1 stalls.
    r.install_ste(SID, &Rig::s1_ste(cd_pa));
    assert!(matches!(
        r.dev.dma_read(SID, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadCd,
            ..
        })
    ));
    let cd2 = r.alloc(64);
    let mut cd = Rig::cd(root, 1);
    cd.set_s(true);
    r.write_cd(cd2, &cd);
    r.install_ste(SID + 1, &Rig::s1_ste(cd2));
    assert!(
        matches!(
            r.dev.dma_read(SID + 1, None, 0, 4),
            Err(DmaError::Stalled { .. })
        ),
        "CD.S = 1 stalls"
    );
    // Stage 2: S2S = 0 is ILLEGAL (SteIllegal()), S2S = 1 stalls.
    let s2root = r.table();
    r.install_ste(SID + 2, &Rig::s2_ste(s2root, 1));
    assert!(matches!(
        r.dev.dma_read(SID + 2, None, 0, 4),
        Err(DmaError::Fault {
            id: EventId::CBadSte,
            ..
        })
    ));
    let mut ste = Rig::s2_ste(s2root, 1);
    ste.set_s2s(true);
    r.install_ste(SID + 3, &ste);
    assert!(matches!(
        r.dev.dma_read(SID + 3, None, 0, 4),
        Err(DmaError::Stalled { .. })
    ));
}

/// More CdIllegal() / SteIllegal() conditions (IHI 0070 §5.4, §5.2): the
/// model advertises IDR0.TERM_MODEL = 1, so CD.A = 0 is ILLEGAL; with 8-bit
/// ASIDs / VMIDs, ASID[15:8] / S2VMID[15:8] != 0 is ILLEGAL.
#[test]
fn cd_a_zero_and_wide_asid_vmid_are_illegal() {
    let mut r = Rig::new(SmmuConfig {
        asid16: false,
        vmid16: false,
        ..SmmuConfig::new()
    });
    let root = r.table();
    r.s1_map(root, 0x1000, page(0), S1Ap::RwAny);
    let s2root = r.table();
    r.s2_map(s2root, 0x1000, page(1), S2Ap::ReadWrite);
    let id = |r: &mut Rig, sid: u32| r.dev.dma_read(sid, None, 0x1000, 4);
    let cd_ste = |r: &mut Rig, sid: u32, cd: smmuv3::Cd| {
        let cd_pa = r.alloc(64);
        r.write_cd(cd_pa, &cd);
        r.install_ste(sid, &Rig::s1_ste(cd_pa));
    };
    let bad = |id| Err(DmaError::Fault { id, recorded: true });
    let mut cd = Rig::cd(root, 1);
    cd.set_a(false);
    cd_ste(&mut r, 1, cd);
    assert_eq!(id(&mut r, 1), bad(EventId::CBadCd), "CD.A = 0");
    cd_ste(&mut r, 2, Rig::cd(root, 0x100));
    assert_eq!(id(&mut r, 2), bad(EventId::CBadCd), "ASID 0x100");
    cd_ste(&mut r, 3, Rig::cd(root, 0xff));
    assert_eq!(id(&mut r, 3), Ok(page(0)), "ASID 0xff");
    r.install_ste(4, &Rig::s2_ste(s2root, 0x100));
    assert_eq!(id(&mut r, 4), bad(EventId::CBadSte), "VMID 0x100");
    r.install_ste(5, &Rig::s2_ste(s2root, 0xff));
    assert_eq!(id(&mut r, 5), Ok(page(1)), "VMID 0xff");
}

#[test]
fn command_queue_wraps() {
    // 4-entry command queue: 10 batches of 3 commands wrap it many times.
    let mut r = Rig::with_queues(SmmuConfig::new(), 2, 6, 6);
    r.smmu.take_irqs();
    for _ in 0..10 {
        r.cmds(&[
            Command::prefetch_config(1, None),
            Command::tlbi_nsnh_all(),
            Command::sync(SyncCs::Irq),
        ]);
        assert!(r.smmu.take_irqs().cmd_sync);
    }
    assert!(r
        .smmu
        .commands()
        .iter()
        .all(|c| c.outcome == CmdOutcome::Done));
    assert_eq!(r.smmu.count_opcode(smmuv3::Opcode::Sync), 11);
}

#[test]
fn s2_concatenated_start_tables() {
    // S2T0SZ 24 (40-bit IPA) starting at level 1: two concatenated tables.
    let mut r = Rig::new(SmmuConfig::new());
    let root = r.alloc(2 * 4096);
    let ipa = 0x80_0000_0000u64 + 0x5000; // index 512 at level 1
    r.map_raw(
        root,
        40,
        1,
        ipa,
        3,
        S2Desc::page(page(2), S2Ap::ReadWrite).raw(),
    );
    let mut ste = Rig::s2_ste(root, 1);
    ste.set_s2t0sz(24);
    r.install_ste(SID, &ste);
    assert_eq!(r.dev.dma_read(SID, None, ipa, 4), Ok(page(2)));
    let _ = S2T0SZ;
}

#[test]
fn physmem_regions() {
    let m = PhysMem::new();
    m.add_region(0x1000, 0x1000).unwrap();
    m.add_region(0x2000, 0x1000).unwrap();
    assert!(m.add_region(0x1800, 0x100).is_err());
    assert!(m.add_region(0x800, 0x1000).is_err());
    // Accesses may span adjacent regions.
    m.write_u64(0x1ffc, 0x1122_3344_5566_7788).unwrap();
    assert_eq!(m.read_u64(0x1ffc), Ok(0x1122_3344_5566_7788));
    assert_eq!(m.read_u32(0x2000), Ok(0x1122_3344));
    assert_eq!(
        m.read_u32(0x2ffe),
        Err(smmuv3_model::MemError::Unmapped { pa: 0x3000 })
    );
    // A failing write changes nothing.
    assert!(m.write(0x2ffc, &[1; 8]).is_err());
    assert_eq!(m.read_u32(0x2ffc), Ok(0));
    m.remove_region(0x2000).unwrap();
    assert!(!m.is_mapped(0x2000, 1));
    assert!(m.is_mapped(0x1000, 0x1000));
}

#[test]
fn concurrent_dma_and_commands() {
    let (mut r, _, _) = s1_rig(SmmuConfig::new());
    let dev = r.dev.clone();
    let t = std::thread::spawn(move || {
        for _ in 0..200 {
            assert!(dev.dma_read(SID, None, 0x10_0000, 4).is_ok());
        }
    });
    for _ in 0..50 {
        r.cmds(&[Command::tlbi_nh_all(0), Command::sync(SyncCs::None)]);
    }
    t.join().unwrap();
    let _ = Access::READ;
}

#[test]
fn s1cdmax_ignored_without_substreams_and_s1stalld_needs_stall_and_terminate() {
    // IDR1.SSIDSIZE = 0: STE.S1CDMax is IGNORED, S1ContextPtr is one CD.
    let mut r = Rig::new(SmmuConfig::new().ssidsize(0));
    let root = r.table();
    r.s1_map(root, 0x10_0000, page(0), S1Ap::RwAny);
    let cd_pa = r.alloc(64);
    r.write_cd(cd_pa, &Rig::cd(root, 1));
    let mut ste = Rig::s1_ste(cd_pa);
    ste.set_s1cdmax(1);
    r.install_ste(SID, &ste);
    assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(0)));
    // SteIllegal(): S1STALLD = 1 unless STALL_MODEL = 0b00.
    for (model, legal) in [
        (StallModel::StallAndTerminate, true),
        (StallModel::TerminateOnly, false),
        (StallModel::StallForced, false),
    ] {
        let mut r = Rig::new(SmmuConfig::new().stall_model(model));
        let root = r.table();
        r.s1_map(root, 0x10_0000, page(0), S1Ap::RwAny);
        let cd_pa = r.alloc(64);
        r.write_cd(cd_pa, &Rig::cd(root, 1));
        let mut ste = Rig::s1_ste(cd_pa);
        ste.set_s1stalld(true);
        r.install_ste(SID, &ste);
        let got = r.dev.dma_read(SID, None, 0x10_0000, 4);
        if legal {
            assert_eq!(got, Ok(page(0)));
        } else {
            assert!(
                matches!(
                    got,
                    Err(DmaError::Fault {
                        id: EventId::CBadSte,
                        ..
                    })
                ),
                "{model:?}: {got:?}"
            );
        }
    }
}

/// ILLEGAL fields the differential table cannot reach on QEMU's
/// configuration (IHI 0070 §5.2 SteIllegal(), §5.4 CdIllegal()): with
/// IDR0.HTTU = 0, STE.S2HA / S2HD and CD.HD are ILLEGAL; a TTB1 in use
/// outside IPS, or any starting table above 48 bits (4 KiB granule, no DS),
/// is ILLEGAL; a TTB1 of a CD with EPD1 = 1 is IGNORED.
#[test]
fn illegal_httu_and_table_base_fields_give_c_bad_ste_and_c_bad_cd() {
    use smmuv3::{AddrSize, Tg1};
    let bad = |r: &mut Rig, sid: u32| match r.dev.dma_read(sid, None, 0x1000, 4) {
        Err(DmaError::Fault { id, recorded: true }) => Some(id),
        _ => None,
    };
    let mut r = Rig::new(SmmuConfig::new());
    let root = r.table();
    r.s1_map(root, 0x1000, page(0), S1Ap::RwAny);
    let s2root = r.table();
    r.s2_map(s2root, 0x1000, page(1), S2Ap::ReadWrite);

    let mut ste = Rig::s2_ste(s2root, 1);
    ste.set_s2ha(true);
    r.install_ste(1, &ste);
    assert_eq!(bad(&mut r, 1), Some(EventId::CBadSte), "S2HA");
    let mut ste = Rig::s2_ste(s2root, 1);
    ste.set_s2hd(true);
    r.install_ste(2, &ste);
    assert_eq!(bad(&mut r, 2), Some(EventId::CBadSte), "S2HD");
    let mut ste = Rig::s2_ste(1 << 48, 1);
    ste.set_s2ps(AddrSize::Bits52);
    r.install_ste(3, &ste);
    assert_eq!(
        bad(&mut r, 3),
        Some(EventId::CBadSte),
        "S2TTB above 48 bits"
    );
    r.install_ste(4, &Rig::s2_ste(s2root, 1));
    assert_eq!(r.dev.dma_read(4, None, 0x1000, 4), Ok(page(1)));

    let mut sid = 10;
    let mut cd_case = |r: &mut Rig, cd: smmuv3::Cd| {
        let cd_pa = r.alloc(64);
        r.write_cd(cd_pa, &cd);
        sid += 1;
        r.install_ste(sid, &Rig::s1_ste(cd_pa));
        sid
    };
    let mut cd = Rig::cd(root, 1);
    cd.set_hd(true);
    let s = cd_case(&mut r, cd);
    assert_eq!(bad(&mut r, s), Some(EventId::CBadCd), "HD");
    let mut cd = Rig::cd(root, 1);
    cd.set_epd1(false)
        .set_t1sz(25)
        .set_tg1(Tg1::Granule4K)
        .set_ips(AddrSize::Bits40)
        .set_ttb1(1 << 41);
    let s = cd_case(&mut r, cd);
    assert_eq!(bad(&mut r, s), Some(EventId::CBadCd), "TTB1 outside IPS");
    let mut cd = Rig::cd(1 << 48, 1);
    cd.set_ips(AddrSize::Bits52);
    let s = cd_case(&mut r, cd);
    assert_eq!(bad(&mut r, s), Some(EventId::CBadCd), "TTB0 above 48 bits");
    // EPD1 = 1: TTB1 is IGNORED, however large.
    let mut cd = Rig::cd(root, 1);
    cd.set_ttb1(1 << 50);
    let s = cd_case(&mut r, cd);
    assert_eq!(r.dev.dma_read(s, None, 0x1000, 4), Ok(page(0)));
    let ids: Vec<_> = r.events().iter().map(|e| e.event_id().unwrap()).collect();
    assert_eq!(
        ids,
        [
            EventId::CBadSte,
            EventId::CBadSte,
            EventId::CBadSte,
            EventId::CBadCd,
            EventId::CBadCd,
            EventId::CBadCd
        ]
    );
}

/// A reserved CD.IPS / STE.S2PS encoding (0b111) is not ILLEGAL: it behaves
/// as a supported size capped to IDR5.OAS (IHI 0070 §5.4 IPS, §5.2 S2PS).
#[test]
fn reserved_ips_and_s2ps_behave_as_the_oas() {
    let mut r = Rig::new(SmmuConfig::new());
    let root = r.table();
    r.s1_map(root, 0x1000, page(0), S1Ap::RwAny);
    let mut w = Rig::cd(root, 1).words();
    w[0] |= 0b111 << 32;
    let cd_pa = r.alloc(64);
    r.write_cd(cd_pa, &smmuv3::Cd::from_words(w));
    r.install_ste(1, &Rig::s1_ste(cd_pa));
    assert_eq!(r.dev.dma_read(1, None, 0x1000, 4), Ok(page(0)));
    let s2root = r.table();
    r.s2_map(s2root, 0x1000, page(1), S2Ap::ReadWrite);
    let mut w = Rig::s2_ste(s2root, 1).words();
    w[2] |= 0b111 << 48;
    r.install_ste(2, &Ste::from_words(w));
    assert_eq!(r.dev.dma_read(2, None, 0x1000, 4), Ok(page(1)));
    assert!(r.events().is_empty());
}
