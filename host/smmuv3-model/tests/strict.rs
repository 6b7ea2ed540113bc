//! The strict modes of the model bite: for each, a driver sequence that
//! omits what the architecture requires (a CFGI, a TLBI, a wait, a
//! break-before-make step, an acknowledgement) passes on the lenient model
//! and is caught on the strict one, while the correct sequence passes on
//! both.

mod rig;

use rig::{Rig, DATA};
use smmuv3::pgtable::{level_index, start_index, S1Ap, S1Desc, S2Ap};
use smmuv3::regs::{self, offset, CR0, GBPA, GERROR, IRQ_CTRL};
use smmuv3::{
    Command, CommandKind, EventId, Mmio, MmioExt, QueuePtr, S1Dss, S1Fmt, Ste, StreamConfig, SyncCs,
};
use smmuv3_model::{
    AutoPriReason, CmdqThrottle, DmaError, PriOutcome, ResponseCode, SmmuConfig, StallState,
};

const SID: u32 = 1;
const PAGE: u64 = 0x1000;
const SEEDS: u64 = 20;

fn page(n: u64) -> u64 {
    DATA + n * PAGE
}

/// Stage 1 tables mapping VA 0x10_0000 → page 0, and a CD for them.
fn s1_setup(r: &mut Rig) -> (u64, u64) {
    let root = r.table();
    r.s1_map(root, 0x10_0000, page(0), S1Ap::RwAny);
    let cd_pa = r.alloc(64);
    r.write_cd(cd_pa, &Rig::cd(root, 1));
    (root, cd_pa)
}

fn eager(seed: u64) -> SmmuConfig {
    SmmuConfig::new().seed(seed).eager_config_cache(true)
}

// ---------------------------------------------------------------- item 18

/// An STE that was invalid when the SMMU (or a transaction) looked at it
/// may stay cached as invalid: making it valid needs CFGI_STE (§3.21.3.1).
#[test]
fn eager_cache_keeps_an_invalid_ste_until_cfgi() {
    let mut caught = 0;
    for seed in 0..SEEDS {
        for strict in [false, true] {
            let cfg = if strict {
                eager(seed)
            } else {
                SmmuConfig::new()
            };
            let mut r = Rig::new(cfg);
            let (_, cd_pa) = s1_setup(&mut r);
            // The slot is still zero (V = 0).
            assert!(r.dev.dma_read(SID, None, 0x10_0000, 4).is_err());
            // Made valid; a SYNC but no CFGI_STE.
            r.write_ste(SID, &Rig::s1_ste(cd_pa));
            r.sync();
            let got = r.dev.dma_read(SID, None, 0x10_0000, 4);
            if !strict {
                assert_eq!(got, Ok(page(0)), "the lenient model refetches");
            } else if got.is_err() {
                caught += 1;
            }
            // The correct sequence works on both.
            r.cmds(&[Command::cfgi_ste(SID, true), Command::sync(SyncCs::None)]);
            assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(0)));
        }
    }
    assert!(
        caught >= SEEDS * 3 / 4,
        "caught for {caught} of {SEEDS} seeds"
    );
}

/// CDs next to the ones in use are prefetched (valid or not) between
/// steps: filling an empty CD slot needs CFGI_CD even if no transaction
/// ever used that PASID.
#[test]
fn eager_prefetch_of_an_empty_cd_slot_needs_cfgi_cd() {
    let mut caught = 0;
    for seed in 0..SEEDS {
        for strict in [false, true] {
            let cfg = if strict {
                eager(seed)
            } else {
                SmmuConfig::new()
            };
            let mut r = Rig::new(cfg);
            let root = r.table();
            r.s1_map(root, 0x10_0000, page(3), S1Ap::RwAny);
            let table = r.alloc(4 * 64);
            r.write_cd(table + 64, &Rig::cd(root, 1));
            let mut ste = Rig::s1_ste(table);
            ste.set_s1cdmax(2)
                .set_s1fmt(S1Fmt::Linear)
                .set_s1dss(S1Dss::Terminate);
            r.install_ste(SID, &ste);
            assert_eq!(r.dev.dma_read(SID, Some(1), 0x10_0000, 4), Ok(page(3)));
            // Time passes: the SMMU may prefetch reachable CDs.
            for _ in 0..50 {
                r.smmu.step();
            }
            // PASID 0's CD is filled in; SYNC without CFGI_CD.
            r.write_cd(table, &Rig::cd(root, 2));
            r.sync();
            let got = r.dev.dma_read(SID, Some(0), 0x10_0000, 4);
            if !strict {
                assert_eq!(got, Ok(page(3)));
            } else if matches!(
                got,
                Err(DmaError::Fault {
                    id: EventId::CBadCd,
                    ..
                })
            ) {
                caught += 1;
            }
            r.cmds(&[Command::cfgi_cd(SID, 0, true), Command::sync(SyncCs::None)]);
            assert_eq!(r.dev.dma_read(SID, Some(0), 0x10_0000, 4), Ok(page(3)));
        }
    }
    assert!(caught >= SEEDS / 2, "caught for {caught} of {SEEDS} seeds");
}

/// A level 1 stream table descriptor is cached too (valid or not):
/// installing a level 2 table needs CFGI_STE with Leaf = 0 (Leaf = 1 only
/// drops the STE, §4.3.1).
#[test]
fn eager_l1std_needs_cfgi_ste_leaf0() {
    const HI: u32 = 0x305;
    let mut caught = 0;
    for seed in 0..SEEDS {
        for strict in [false, true] {
            let cfg = if strict {
                eager(seed)
            } else {
                SmmuConfig::new()
            };
            let mut r = Rig::two_level(cfg);
            let (_, cd_pa) = s1_setup(&mut r);
            // No level 2 table yet for HI: the L1STD is invalid.
            assert!(r.dev.dma_read(HI, None, 0x10_0000, 4).is_err());
            r.write_ste(HI, &Rig::s1_ste(cd_pa)); // allocates the L2 table
            r.cmds(&[Command::cfgi_ste(HI, true), Command::sync(SyncCs::None)]);
            let got = r.dev.dma_read(HI, None, 0x10_0000, 4);
            if !strict {
                assert_eq!(got, Ok(page(0)));
            } else if got.is_err() {
                caught += 1;
            }
            r.cmds(&[Command::cfgi_ste(HI, false), Command::sync(SyncCs::None)]);
            assert_eq!(r.dev.dma_read(HI, None, 0x10_0000, 4), Ok(page(0)));
        }
    }
    assert!(
        caught >= SEEDS * 3 / 4,
        "caught for {caught} of {SEEDS} seeds"
    );
}

// ---------------------------------------------------------------- item 19

fn throttled(seed: u64) -> SmmuConfig {
    SmmuConfig::new()
        .seed(seed)
        .cmdq_throttle(Some(CmdqThrottle {
            max_per_step: 2,
            sync_delay_steps: 3,
        }))
}

/// Commands complete only as the SMMU steps: a driver that does not wait
/// for its CMD_SYNC still sees the old configuration.
#[test]
fn throttled_cmdq_catches_a_missing_wait() {
    for seed in 0..SEEDS {
        let mut r = Rig::with_queues(throttled(seed), 2, 6, 6);
        let (_, cd_pa) = s1_setup(&mut r);
        r.install_ste(SID, &Rig::s1_ste(cd_pa));
        assert_eq!(r.dev.dma_read(SID, None, 0x10_0000, 4), Ok(page(0)));
        // Abort the stream, but do not wait for the SYNC.
        let mut abort = Ste::zeroed();
        abort.set_config(StreamConfig::Abort).set_v(true);
        r.write_ste(SID, &abort);
        r.cmds_nowait(&[Command::cfgi_ste(SID, true), Command::sync(SyncCs::None)]);
        assert_ne!(r.cmdq_cons(), r.cmdq_prod().raw(), "nothing consumed yet");
        assert_eq!(
            r.dev.dma_read(SID, None, 0x10_0000, 4),
            Ok(page(0)),
            "the stream still translates until the SYNC completes"
        );
        r.wait_cmdq();
        assert_eq!(
            r.dev.dma_read(SID, None, 0x10_0000, 4),
            Err(DmaError::Aborted)
        );
    }
}

/// The queue fills (a 4-entry queue, at most 2 commands per step), wraps,
/// and a CMD_SYNC waits at the head for up to 3 steps.
#[test]
fn throttled_cmdq_fills_wraps_and_sync_is_slow() {
    let mut slow_syncs = 0;
    for seed in 0..SEEDS {
        let mut r = Rig::with_queues(throttled(seed), 2, 6, 6);
        let start = r.smmu.steps();
        // Full: 4 entries queued, none consumed.
        r.cmds_nowait(&[
            Command::tlbi_nsnh_all(),
            Command::tlbi_nsnh_all(),
            Command::tlbi_nsnh_all(),
            Command::sync(SyncCs::None),
        ]);
        let cons = QueuePtr::from_raw(2, r.cmdq_cons());
        assert!(r.cmdq_prod().is_full(cons));
        r.smmu.step();
        let after = QueuePtr::from_raw(2, r.cmdq_cons());
        assert!(
            after.raw() != cons.raw() && !r.cmdq_prod().is_empty(after),
            "one step consumes some, not all"
        );
        r.wait_cmdq();
        if r.smmu.steps() - start > 2 {
            slow_syncs += 1;
        }
        // Many more batches: the indices wrap several times.
        for _ in 0..6 {
            r.cmds(&[Command::tlbi_nsnh_all(), Command::sync(SyncCs::None)]);
        }
        assert_eq!(r.cmdq_cons() & 0x00ff_ffff, r.cmdq_prod().raw());
    }
    assert!(slow_syncs > 0, "a CMD_SYNC sometimes waits at the head");
}

// ---------------------------------------------------------------- item 20

/// The level 2 table descriptor the walk of `va` under `root` (T0SZ 25,
/// start level 1) uses: its address.
fn l2_slot(r: &Rig, root: u64, va: u64) -> u64 {
    let l1 = root + start_index(va, 1, 39) as u64 * 8;
    let d = S1Desc(r.mem.read_u64(l1).unwrap());
    d.table_addr() + level_index(va, 2) as u64 * 8
}

/// Walk caches keep table descriptors: a TLBI by VA with Leaf = 1 does not
/// drop them (§4.4.2), so replacing a level 3 table needs Leaf = 0.
#[test]
fn walk_cache_survives_leaf_tlbi() {
    const VA: u64 = 0x10_0000;
    for walk in [false, true] {
        for leaf_only in [true, false] {
            let mut r = Rig::new(SmmuConfig::new().walk_cache(walk));
            let (root, cd_pa) = s1_setup(&mut r);
            r.install_ste(SID, &Rig::s1_ste(cd_pa));
            assert_eq!(r.dev.dma_read(SID, None, VA, 4), Ok(page(0)));
            // A new level 3 table maps VA to page 5; the level 2
            // descriptor is switched to it.
            let t2 = r.table();
            r.mem
                .write_u64(
                    t2 + level_index(VA, 3) as u64 * 8,
                    S1Desc::page(page(5), S1Ap::RwAny, 1).raw(),
                )
                .unwrap();
            let slot = l2_slot(&r, root, VA);
            r.mem.write_u64(slot, S1Desc::table(t2).raw()).unwrap();
            r.cmds(&[
                Command::tlbi_nh_va(0, 1, VA, leaf_only),
                Command::sync(SyncCs::None),
            ]);
            let want = if walk && leaf_only { page(0) } else { page(5) };
            assert_eq!(
                r.dev.dma_read(SID, None, VA, 4),
                Ok(want),
                "walk cache {walk}, Leaf {leaf_only}"
            );
        }
    }
}

/// Stage 2 translations used to fetch stage 1 tables are cached: moving a
/// stage 1 table at stage 2 needs TLBI_S2_IPA for its IPA; TLBI_NH_ALL
/// (which drops the combined entries) is not enough.
#[test]
fn walk_cache_s2_translation_of_stage1_tables_needs_tlbi_s2_ipa() {
    const VA: u64 = 0x40_0000;
    // The guest's stage 1 root lives at this IPA.
    const ROOT_IPA: u64 = 0x10_0000_0000;
    const VMID: u16 = 3;
    for walk in [false, true] {
        for with_s2_tlbi in [false, true] {
            let mut r = Rig::new(SmmuConfig::new().walk_cache(walk));
            let s2root = r.table();
            r.s2_identity(s2root);
            r.s2_map(s2root, 0x1_0000_0000, page(5), S2Ap::ReadWrite);
            r.s2_map(s2root, 0x1_0000_1000, page(6), S2Ap::ReadWrite);
            // Two stage 1 roots (identity-mapped lower levels): the old one
            // maps VA to IPA page 0x1_0000_0000, the new one to 0x1_0000_1000.
            let old_root = r.table();
            r.s1_map(old_root, VA, 0x1_0000_0000, S1Ap::RwAny);
            let new_root = r.table();
            r.s1_map(new_root, VA, 0x1_0000_1000, S1Ap::RwAny);
            r.s2_map(s2root, ROOT_IPA, old_root, S2Ap::ReadWrite);
            let cd_pa = r.alloc(64);
            r.write_cd(cd_pa, &Rig::cd(ROOT_IPA, 9));
            r.install_ste(SID, &Rig::with_s2(Rig::s1_ste(cd_pa), s2root, VMID));
            assert_eq!(r.dev.dma_read(SID, None, VA, 4), Ok(page(5)));
            // The hypervisor moves the guest's root page.
            r.s2_map(s2root, ROOT_IPA, new_root, S2Ap::ReadWrite);
            let mut cmds = vec![];
            if with_s2_tlbi {
                cmds.push(Command::tlbi_s2_ipa(VMID, ROOT_IPA, true));
            }
            cmds.push(Command::tlbi_nh_all(VMID));
            cmds.push(Command::sync(SyncCs::None));
            r.cmds(&cmds);
            let want = if walk && !with_s2_tlbi {
                page(5)
            } else {
                page(6)
            };
            assert_eq!(
                r.dev.dma_read(SID, None, VA, 4),
                Ok(want),
                "walk cache {walk}, TLBI_S2_IPA {with_s2_tlbi}"
            );
        }
    }
}

// ---------------------------------------------------------------- item 21

/// *_IRQ_CFG0 reset to UNKNOWN values: a driver that enables an MSI-capable
/// SMMU's interrupts without clearing them gets MSIs at garbage addresses.
#[test]
fn unknown_reset_irq_cfg0() {
    let mut nonzero = 0;
    for seed in 0..SEEDS {
        let cfg = SmmuConfig::new().seed(seed).unknown_reset(true).msi(true);
        let r = Rig::new(cfg);
        let cfg0 = r.smmu.read64(offset::EVENTQ_IRQ_CFG0);
        if cfg0 != 0 {
            nonzero += 1;
        }
        // The rig never clears it: an event is signalled by an MSI write to
        // that address (or fails to, raising MSI_EVENTQ_ABT_ERR), not on
        // the wired line.
        let _ = r.dev.dma_read(0x77, None, 0, 4);
        let lines = r.smmu.take_irqs();
        if cfg0 != 0 {
            assert!(!lines.eventq);
            let msi = r.smmu.msi_writes();
            let abt = r
                .smmu
                .read_reg(regs::GERROR)
                .is_set(GERROR::MSI_EVENTQ_ABT_ERR);
            assert!(!msi.is_empty() || abt);
        }
    }
    assert!(nonzero >= SEEDS - 1);
    // Default: reset values are 0 and the wired line is used.
    let r = Rig::new(SmmuConfig::new().msi(true));
    assert_eq!(r.smmu.read64(offset::EVENTQ_IRQ_CFG0), 0);
    let _ = r.dev.dma_read(0x77, None, 0, 4);
    assert!(r.smmu.take_irqs().eventq);
}

/// GBPA.UPDATE stays 1 for a while; a write meanwhile is ignored.
#[test]
fn slow_gbpa_update() {
    for seed in 0..SEEDS {
        let mut r = Rig::bare(SmmuConfig::new().seed(seed).unknown_reset(true));
        let s = r.smmu.clone();
        s.write_reg(regs::GBPA, GBPA::UPDATE::SET + GBPA::ABORT::SET);
        // A careless driver writes again without waiting: ignored.
        s.write_reg(regs::GBPA, GBPA::UPDATE::SET);
        let first = s.read_reg(regs::GBPA);
        assert!(first.is_set(GBPA::UPDATE), "still updating");
        assert_eq!(s.gbpa_writes_ignored(), 1);
        assert!(s
            .access_errors()
            .iter()
            .any(|e| e.kind == smmuv3_model::AccessErrorKind::Busy));
        // Polling completes it; the first value is in force.
        let mut polls = 0;
        while s.read_reg(regs::GBPA).is_set(GBPA::UPDATE) {
            polls += 1;
            assert!(polls < 10);
        }
        assert!(s.read_reg(regs::GBPA).is_set(GBPA::ABORT));
        // The SMMU is off: GBPA.ABORT aborts.
        assert_eq!(r.dev.dma_read(SID, None, 0, 4), Err(DmaError::Aborted));
        let _ = &mut r;
    }
}

// ---------------------------------------------------------------- item 22

/// Changes a stage-2 STE from (VMID 1, tables A) to (VMID 2, tables B),
/// calling `at_store` after each 64-bit store, with or without
/// break-before-make.
fn update_s2_ste(r: &mut Rig, from: &Ste, to: &Ste, bbm: bool, at_store: &mut dyn FnMut(&Rig)) {
    let base = r.ste_addr(SID);
    let store = |r: &mut Rig, w: usize, v: u64, at: &mut dyn FnMut(&Rig)| {
        r.mem.write_u64(base + w as u64 * 8, v).unwrap();
        r.smmu.store_boundary(base + w as u64 * 8);
        at(r);
    };
    let old = from.words();
    let new = to.words();
    if bbm {
        store(r, 0, old[0] & !1, at_store); // V = 0
        r.cmds(&[Command::cfgi_ste(SID, true), Command::sync(SyncCs::None)]);
        for w in 1..8 {
            if old[w] != new[w] {
                store(r, w, new[w], at_store);
            }
        }
        store(r, 0, new[0], at_store);
    } else {
        for w in 0..8 {
            if old[w] != new[w] {
                store(r, w, new[w], at_store);
            }
        }
    }
    r.cmds(&[Command::cfgi_ste(SID, true), Command::sync(SyncCs::None)]);
}

/// With eager caching the SMMU may re-fetch an STE at any store boundary:
/// an update that is not break-before-make can leave a mix of the old and
/// new entry in the TLB (here: VMID 2 tagged with VMID 1's tables), which
/// no later CFGI removes. With break-before-make every DMA in between
/// terminates or uses one whole entry.
#[test]
fn torn_ste_update_caught_at_store_boundaries() {
    const IPA: u64 = 0x1_0000_0000;
    let mut torn = 0;
    for seed in 0..SEEDS {
        for bbm in [false, true] {
            let mut r = Rig::new(eager(seed));
            let ra = r.table();
            r.s2_map(ra, IPA, page(1), S2Ap::ReadWrite);
            let rb = r.table();
            r.s2_map(rb, IPA, page(2), S2Ap::ReadWrite);
            let from = Rig::s2_ste(ra, 1);
            let to = Rig::s2_ste(rb, 2);
            r.install_ste(SID, &from);
            assert_eq!(r.dev.dma_read(SID, None, IPA, 4), Ok(page(1)));
            let dev = r.dev.clone();
            let mut seen = vec![];
            update_s2_ste(&mut r, &from, &to, bbm, &mut |_| {
                seen.push(dev.dma_read(SID, None, IPA, 4));
            });
            for got in &seen {
                assert!(
                    matches!(got, Ok(p) if *p == page(1) || *p == page(2)) || got.is_err(),
                    "never bypass: {got:?}"
                );
            }
            let end = r.dev.dma_read(SID, None, IPA, 4);
            if bbm {
                assert_eq!(end, Ok(page(2)), "seed {seed}");
            } else if end != Ok(page(2)) {
                torn += 1;
            }
        }
    }
    assert!(torn > 0, "a torn update is caught for some seed");
}

// ------------------------------------------------------- issue 7, item 8

fn pri_rig() -> Rig {
    Rig::new(SmmuConfig::new())
}

/// PRIQEN = 0: every page request (not stop markers) is answered
/// ResponseFailure without a PASID (§8.2), Last or not.
#[test]
fn pri_disabled_answers_every_request_failure() {
    let r = pri_rig();
    let cr0 = r.smmu.read32(offset::CR0);
    r.smmu.write32(offset::CR0, cr0 & !(CR0::PRIQEN::SET.value));
    let d = r.dev.clone();
    assert_eq!(
        d.page_request(SID, Some(4), 7, 0x1000, true, false, false),
        PriOutcome::Discarded
    );
    assert_eq!(
        d.page_request(SID, Some(4), 7, 0x2000, true, false, true),
        PriOutcome::Discarded
    );
    d.stop_marker(SID, 4, 8);
    let resp = r.smmu.device_responses();
    assert_eq!(resp.len(), 2, "one per request, none for the stop marker");
    for x in resp {
        assert_eq!(x.code, ResponseCode::ResponseFailure);
        assert_eq!(x.pasid, None);
        assert_eq!(x.auto, Some(AutoPriReason::QueueDisabled));
    }
}

/// A write abort on the PRI queue: ResponseFailure for that request, then
/// while PRIQ_ABT_ERR is active every request.
#[test]
fn pri_queue_abort() {
    let r = Rig::bare(SmmuConfig::new());
    let s = r.smmu.clone();
    // A PRI queue in memory that does not exist.
    s.write64(offset::PRIQ_BASE, regs::queue_base(0x7_0000_0000, 4, true));
    s.write_reg(regs::IRQ_CTRL, IRQ_CTRL::GERROR_IRQEN::SET);
    s.write_reg(regs::CR0, CR0::PRIQEN::SET + CR0::SMMUEN::SET);
    let d = r.dev.clone();
    d.page_request(SID, None, 1, 0, true, false, false);
    assert!(s.read_reg(regs::GERROR).is_set(GERROR::PRIQ_ABT_ERR));
    d.page_request(SID, None, 2, 0, true, false, true);
    let resp = s.device_responses();
    assert_eq!(resp.len(), 2);
    assert!(resp
        .iter()
        .all(|x| x.code == ResponseCode::ResponseFailure
            && x.auto == Some(AutoPriReason::QueueAbort)));
}

/// A Last discarded by overflow: Success, with the PASID if STE.PPAR = 1;
/// ResponseFailure without a PASID if the STE cannot be checked (§8.1).
#[test]
fn pri_overflow_auto_response_checks_ppar() {
    let mut r = Rig::with_queues(SmmuConfig::new(), 6, 6, 1);
    let (_, cd_pa) = s1_setup(&mut r);
    let mut ste = Rig::s1_ste(cd_pa);
    ste.set_ppar(true);
    r.install_ste(SID, &ste);
    r.install_ste(2, &Rig::s1_ste(cd_pa)); // PPAR = 0
    let d = r.dev.clone();
    d.page_request(SID, None, 0, 0, true, false, false);
    d.page_request(SID, None, 0, 0, true, false, false);
    // Full now.
    assert_eq!(
        d.page_request(SID, Some(9), 1, 0, true, false, true),
        PriOutcome::Overflow
    );
    d.page_request(2, Some(9), 2, 0, true, false, true);
    d.page_request(0x55, Some(9), 3, 0, true, false, true); // no valid STE
    d.page_request(SID, None, 4, 0, true, false, true);
    let got: Vec<_> = r
        .smmu
        .device_responses()
        .into_iter()
        .map(|x| (x.group.prgi, x.code, x.pasid))
        .collect();
    assert_eq!(
        got,
        [
            (1, ResponseCode::Success, Some(9)),
            (2, ResponseCode::Success, None),
            (3, ResponseCode::ResponseFailure, None),
            (4, ResponseCode::Success, None),
        ]
    );
}

/// Exactly once at the device: commanded and automatic responses land in
/// one record per group; CMD_PRI_RESP's Resp field is decoded by number
/// (0b00 ResponseFailure, 0b01 InvalidRequest, 0b10 Success).
#[test]
fn pri_device_record_decodes_resp_numerically() {
    let mut r = pri_rig();
    let d = r.dev.clone();
    for prgi in 1..=3 {
        d.page_request(SID, Some(5), prgi, 0, true, false, true);
    }
    for (prgi, code) in [
        (1, ResponseCode::ResponseFailure),
        (2, ResponseCode::InvalidRequest),
        (3, ResponseCode::Success),
    ] {
        r.cmds(&[
            Command::pri_resp(SID, Some(5), prgi, code.pri_response()),
            Command::sync(SyncCs::None),
        ]);
        let raw = r
            .smmu
            .commands_where(|k| matches!(k, CommandKind::PriResp { prgi: p, .. } if *p == prgi))[0]
            .raw;
        // Resp is bits [13:12] of the second word.
        assert_eq!((raw.words()[1] >> 12) & 3, code.cmd_resp());
        let at_dev = r.smmu.device_group_responses(SID, prgi);
        assert_eq!(at_dev.len(), 1);
        assert_eq!(at_dev[0].code, code);
        assert_eq!(at_dev[0].pasid, Some(5));
        assert_eq!(at_dev[0].auto, None);
    }
    assert!(r.smmu.pending_pri_groups().is_empty());
}

/// A stall record is never discarded: with the event queue full, the
/// transaction stalls anyway and its record is written once there is room
/// (§7.2), without an overflow.
#[test]
fn stall_record_waits_for_room() {
    let mut r = Rig::with_queues(SmmuConfig::new(), 6, 1, 6);
    let root = r.table();
    let cd_pa = r.alloc(64);
    let mut cd = Rig::cd(root, 1);
    cd.set_s(true);
    r.write_cd(cd_pa, &cd);
    r.install_ste(SID, &Rig::s1_ste(cd_pa));
    // Fill the 2-entry event queue with terminated faults of other streams.
    let _ = r.dev.dma_read(0x60, None, 0, 4);
    let _ = r.dev.dma_read(0x61, None, 0, 4);
    let Err(DmaError::Stalled { stag }) = r.dev.dma_read(SID, None, 0x8000, 4) else {
        panic!("stalls although the queue is full")
    };
    assert_eq!(r.smmu.pending_stall_records(), 1);
    let prod = QueuePtr::from_raw(1, r.smmu.read32(offset::EVENTQ_PROD));
    assert!(!prod.overflow(), "stall records do not overflow");
    assert_eq!(r.dev.stall_state(SID, stag), Some(StallState::Pending));
    // Software drains: the record goes in.
    let first = r.events();
    assert_eq!(first.len(), 2);
    let next = r.events();
    assert_eq!(next.len(), 1);
    assert!(next[0].stall());
    assert_eq!(next[0].stag(), stag);
    assert_eq!(r.smmu.pending_stall_records(), 0);
}
