//! The real iommu-server task on the SMMUv3 model, asked over the
//! generated IPC by a real VM task: the exact command sequence and STE
//! store order of attach, map / unmap, replace and guest invalidation
//! batches, checked against the model's command log and the driver's
//! stores, and DMA through the model proving where translations land.

use harness::smmu::{
    guest_cd, guest_cmd, guest_ipa, rw, BusEvent, Completion, IommuRig, Step, Steps, Vm, GUEST_VA,
    IOVA, SID_A, SID_B,
};
use iommu_server_api::{
    AttachOutcome, DomainId, InvalidateOutcome, InvalidateStatus, IommuError, SteUpdate, StreamId,
};
use pasid_alloc_api::{Pasid, PasidGen, PasidHandle};
use smmuv3::pgtable::{S1Ap, S1Desc};
use smmuv3::{Command, CommandKind, EventId, StreamConfig};
use smmuv3_model::{DmaError, SmmuConfig};
use std::sync::{Arc, Mutex};
use userlib::sys_shutdown;

/// A second stream of the VM, never attached.
const SID_A2: u32 = 0x11;

fn sync(k: &CommandKind) -> bool {
    matches!(k, CommandKind::Sync { .. })
}

fn cfgi_ste(sid: u32) -> CommandKind {
    CommandKind::CfgiSte { sid, leaf: true }
}

/// The step's events as a compact shape: `W<word>` for an STE store of
/// `sid`, the command name otherwise.
fn shape(step: &Step) -> Vec<String> {
    step.events
        .iter()
        .map(|e| match e {
            BusEvent::SteWrite { word, .. } => format!("W{word}"),
            BusEvent::Command(c) => match c.kind {
                Ok(CommandKind::CfgiSte { .. }) => "CFGI_STE".into(),
                Ok(CommandKind::CfgiCdAll { .. }) => "CFGI_CD_ALL".into(),
                Ok(CommandKind::Sync { .. }) => "SYNC".into(),
                Ok(k) => format!("{k:?}"),
                Err(_) => "?".into(),
            },
            BusEvent::Dma { .. } => "DMA".into(),
        })
        .collect()
}

fn ok_attach(old: u32, update: SteUpdate) -> String {
    format!(
        "{:?}",
        Ok::<_, IommuError>(AttachOutcome {
            old: DomainId(old),
            update,
            fault_duty: false,
        })
    )
}

#[test]
fn harness_iommu_attach_stores_words_then_word0_each_with_cfgi_ste_and_sync() {
    attach_case(true)
}

/// The same on a non-coherent SMMU (the driver cleans every table and
/// queue store; the model's SMMU sees memory only).
#[test]
fn harness_noncoherent_attach() {
    attach_case(false)
}

fn attach_case(coherent: bool) {
    let steps = Steps::new();
    let s = steps.clone();
    let mut rig = IommuRig::new(SmmuConfig::new()).coherent(coherent).vm(
        "vm",
        3,
        &[SID_A, SID_A2],
        move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let d = s.run(b, "create", || c.create_s2_domain(false));
            let d = d.unwrap_or(DomainId(0));
            s.record(b, "map", || c.map(d, IOVA, vm.ram.page(1), 0x2000, rw()));
            s.record(b, "dma unattached", || {
                vm.dma.write(SID_A, None, IOVA, b"x")
            });
            s.record(b, "attach", || c.attach(StreamId(SID_A), d));
            s.record(b, "dma", || {
                vm.dma.write(SID_A, None, IOVA + 0x1010, b"hello")
            });
            s.record(b, "attach again", || c.attach(StreamId(SID_A), d));
            sys_shutdown(0);
        },
    );
    let bus = rig.bus();
    rig.harness(7).run().expect_shutdown(0);

    assert!(steps.get("create").events.is_empty());
    assert!(
        steps.get("map").events.is_empty(),
        "a new mapping needs no invalidation: the SMMU caches no invalid entry"
    );
    assert_eq!(
        steps.get("dma unattached").result,
        format!("{:?}", Err::<u64, _>(DmaError::Aborted)),
        "an assigned, unattached stream aborts (fail closed)"
    );

    let attach = steps.get("attach");
    assert_eq!(attach.result, ok_attach(0, SteUpdate::Hitless));
    // Abort -> S2: the words the abort STE ignores first (invisible to the
    // SMMU), CFGI_STE + SYNC; then word 0 alone, CFGI_STE + SYNC.
    let sh = shape(&attach);
    let first_cfgi = sh.iter().position(|x| x == "CFGI_STE").unwrap();
    assert!(first_cfgi > 0, "{sh:?}");
    assert!(
        sh[..first_cfgi]
            .iter()
            .all(|x| x.starts_with('W') && x != "W0"),
        "{sh:?}"
    );
    assert_eq!(
        sh[first_cfgi..],
        ["CFGI_STE", "SYNC", "W0", "CFGI_STE", "SYNC"],
        "{sh:?}"
    );
    let cmds = attach.commands();
    assert_eq!(cmds[0], cfgi_ste(SID_A));
    assert!(sync(&cmds[1]) && sync(&cmds[3]));
    // Every store was to SID_A's STE, and memory holds what was stored.
    let ste = bus.ste(SID_A).unwrap();
    for (sid, word, value) in attach.ste_writes() {
        assert_eq!(sid, SID_A);
        assert_eq!(ste.word(word), value, "word {word}");
    }
    assert!(ste.v());
    assert_eq!(ste.config(), Ok(StreamConfig::S2Trans));
    assert_ne!(ste.s2vmid(), 0);

    assert_eq!(
        steps.get("dma").result,
        format!("{:?}", Ok::<u64, DmaError>(smmu_page(1, 2) + 0x10))
    );
    let mut got = [0u8; 5];
    bus.mem.read(smmu_page(1, 2) + 0x10, &mut got).unwrap();
    assert_eq!(&got, b"hello");

    let again = steps.get("attach again");
    assert_eq!(
        again.result,
        format!("{:?}", Err::<(), _>(IommuError::Busy))
    );
    assert!(again.events.is_empty(), "a refused attach stores nothing");

    // The other stream of the VM was never touched: still V=1, abort.
    let other = bus.ste(SID_A2).unwrap();
    assert!(other.v());
    assert_eq!(other.config(), Ok(StreamConfig::Abort));
    assert!(bus.smmu.access_errors().is_empty());
}

/// PA of page `i` of the first VM's RAM (`ram_pa(0)`); `_k` documents
/// which RAM for readability at call sites.
fn smmu_page(_k: usize, i: u64) -> u64 {
    harness::smmu::ram_pa(0) + i * 0x1000
}

#[test]
fn harness_iommu_unmap_invalidates_in_one_batch_with_one_sync() {
    unmap_case(true)
}

/// The same on a non-coherent SMMU (the driver cleans every table and
/// queue store; the model's SMMU sees memory only).
#[test]
fn harness_noncoherent_unmap_invalidate() {
    unmap_case(false)
}

fn unmap_case(coherent: bool) {
    let steps = Steps::new();
    let s = steps.clone();
    let mut rig = IommuRig::new(SmmuConfig::new())
        .coherent(coherent)
        // One batch of 64 needs a queue of more than 64 entries.
        .small_cmdq(false)
        .vm("vm", 3, &[SID_A], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let _ = c.attach(StreamId(SID_A), d);
            s.record(b, "map 64", || {
                c.map(d, IOVA, vm.ram.page(0), 64 * 0x1000, rw())
            });
            s.record(b, "dma 63", || {
                vm.dma.write(SID_A, None, IOVA + 63 * 0x1000, b"x")
            });
            s.record(b, "unmap 64", || c.unmap(d, IOVA, 64 * 0x1000));
            s.record(b, "dma after", || {
                vm.dma.write(SID_A, None, IOVA + 63 * 0x1000, b"x")
            });
            s.record(b, "unmap nothing", || c.unmap(d, IOVA, 0x1000));
            s.record(b, "map 65", || {
                c.map(d, IOVA, vm.ram.page(0), 65 * 0x1000, rw())
            });
            s.record(b, "unmap 65", || c.unmap(d, IOVA, 65 * 0x1000));
            // Deferred: nothing issued; the device keeps its cached
            // translation until the flush.
            s.record(b, "map 1", || c.map(d, IOVA, vm.ram.page(7), 0x1000, rw()));
            s.record(b, "dma warm", || vm.dma.write(SID_A, None, IOVA, b"w"));
            s.record(b, "unmap deferred", || c.unmap_deferred(d, IOVA, 0x1000));
            s.record(b, "dma stale", || vm.dma.write(SID_A, None, IOVA, b"s"));
            s.record(b, "flush", || c.flush(d));
            s.record(b, "dma flushed", || vm.dma.write(SID_A, None, IOVA, b"f"));
            sys_shutdown(0);
        });
    let bus = rig.bus();
    rig.harness(3).run().expect_shutdown(0);
    let vmid = bus.ste(SID_A).unwrap().s2vmid();

    assert!(steps.get("map 64").events.is_empty());
    assert_eq!(
        steps.get("dma 63").result,
        format!("{:?}", Ok::<u64, DmaError>(smmu_page(0, 63)))
    );
    let unmap = steps.get("unmap 64");
    assert_eq!(
        unmap.result,
        format!("{:?}", Ok::<u64, IommuError>(64 * 0x1000))
    );
    // One range invalidation (the model has IDR3.RIL) over the 64 pages,
    // one SYNC.
    let cmds = unmap.commands();
    assert_eq!(cmds.len(), 2, "{:?}", unmap.notes());
    match cmds[0] {
        CommandKind::TlbiS2Ipa { vmid: v, scope } => {
            assert_eq!(v, vmid);
            assert_eq!(scope.range(), (IOVA, 64 * 0x1000));
            assert!(scope.leaf);
        }
        other => panic!("{other:?}"),
    }
    assert!(sync(&cmds[1]), "one SYNC closes the batch");
    assert!(matches!(
        steps.get("dma after").events[0],
        BusEvent::Dma {
            result: Err(DmaError::Fault {
                id: EventId::FTranslation,
                ..
            }),
            ..
        }
    ));
    let nothing = steps.get("unmap nothing");
    assert_eq!(nothing.result, format!("{:?}", Ok::<u64, IommuError>(0)));
    assert!(
        nothing.events.is_empty(),
        "nothing was mapped: nothing issued"
    );

    // 65 pages: two range pieces (64 + 1, the single page as a plain
    // TLBI), covering the span exactly, then one SYNC.
    let u65 = steps.get("unmap 65").commands();
    assert_eq!(u65.len(), 3, "{u65:?}");
    let mut at = IOVA;
    for c in &u65[..2] {
        match *c {
            CommandKind::TlbiS2Ipa { vmid: v, scope } => {
                assert_eq!((v, scope.addr), (vmid, at));
                at += scope.range().1.max(0x1000);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(at, IOVA + 65 * 0x1000);
    assert!(sync(&u65[2]));

    assert!(steps.get("unmap deferred").events.is_empty());
    assert_eq!(
        steps.get("dma stale").result,
        format!("{:?}", Ok::<u64, DmaError>(smmu_page(0, 7))),
        "stale TLB entry until the flush"
    );
    let flush = steps.get("flush").commands();
    assert_eq!(flush.len(), 2);
    assert_eq!(flush[0], CommandKind::TlbiS12Vmall { vmid });
    assert!(sync(&flush[1]));
    assert!(steps.get("dma flushed").result.starts_with("Err"));
}

#[test]
fn harness_iommu_replace_s2_breaks_before_make_and_s1_is_hitless() {
    replace_case(true)
}

/// The same on a non-coherent SMMU (the driver cleans every table and
/// queue store; the model's SMMU sees memory only).
#[test]
fn harness_noncoherent_replace() {
    replace_case(false)
}

fn replace_case(coherent: bool) {
    let steps = Steps::new();
    let s = steps.clone();
    let mut rig = IommuRig::new(SmmuConfig::new()).coherent(coherent).vm(
        "vm",
        3,
        &[SID_A, SID_A2],
        move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let d1 = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let d2 = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let _ = c.map(d1, IOVA, vm.ram.page(1), 0x1000, rw());
            let _ = c.map(d2, IOVA, vm.ram.page(2), 0x1000, rw());
            s.record(b, "attach", || c.attach(StreamId(SID_A), d1));
            s.record(b, "dma d1", || vm.dma.write(SID_A, None, IOVA, b"1"));
            s.record(b, "replace", || c.replace(StreamId(SID_A), d2));
            s.record(b, "dma d2", || vm.dma.write(SID_A, None, IOVA, b"2"));
            s.record(b, "replace unattached", || c.replace(StreamId(SID_A2), d1));
            // Stage 1 domains of the server: S1 -> S1 changes one word.
            let e1 = c.create_s1_domain(false).unwrap_or(DomainId(0));
            let e2 = c.create_s1_domain(false).unwrap_or(DomainId(0));
            let _ = c.map(e1, IOVA, vm.ram.page(3), 0x1000, rw());
            let _ = c.map(e2, IOVA, vm.ram.page(4), 0x1000, rw());
            s.record(b, "attach s1", || c.attach(StreamId(SID_A2), e1));
            s.record(b, "dma e1", || vm.dma.write(SID_A2, None, IOVA, b"3"));
            s.record(b, "replace s1", || c.replace(StreamId(SID_A2), e2));
            s.record(b, "dma e2", || vm.dma.write(SID_A2, None, IOVA, b"4"));
            s.record(b, "detach", || c.detach(StreamId(SID_A)));
            s.record(b, "dma detached", || vm.dma.write(SID_A, None, IOVA, b"5"));
            s.record(b, "destroy", || c.destroy_domain(d1));
            sys_shutdown(0);
        },
    );
    let bus = rig.bus();
    rig.harness(5).run().expect_shutdown(0);
    let page = |i| format!("{:?}", Ok::<u64, DmaError>(smmu_page(0, i)));

    assert_eq!(steps.get("dma d1").result, page(1));
    let replace = steps.get("replace");
    assert_eq!(
        replace.result,
        ok_attach(0x1_0100, SteUpdate::BreakBeforeMake)
    );
    let sh = shape(&replace);
    // V = 0 first, then the other words, then word 0: each step synced.
    let n = sh.len();
    assert!(n > 8, "{sh:?}");
    assert_eq!(sh[..3], ["W0", "CFGI_STE", "SYNC"], "{sh:?}");
    assert_eq!(
        sh[n - 5..],
        ["CFGI_STE", "SYNC", "W0", "CFGI_STE", "SYNC"],
        "{sh:?}"
    );
    assert!(
        sh[3..n - 5].iter().all(|x| x.starts_with('W') && x != "W0"),
        "{sh:?}"
    );
    let writes = replace.ste_writes();
    assert_eq!(writes[0].2 & 1, 0, "the first store clears V");
    assert_eq!(writes.last().unwrap().2 & 1, 1, "the last store sets V");
    assert_eq!(steps.get("dma d2").result, page(2));
    let r = steps.get("replace unattached");
    assert_eq!(
        r.result,
        format!("{:?}", Err::<(), _>(IommuError::NotFound))
    );
    assert!(r.events.is_empty());

    assert_eq!(steps.get("dma e1").result, page(3));
    let r1 = steps.get("replace s1");
    assert_eq!(r1.result, ok_attach(0x1_0102, SteUpdate::Hitless));
    let w = r1.ste_writes();
    assert_eq!(w.len(), 1, "S1 -> S1: only S1ContextPtr changes: {w:?}");
    assert_eq!((w[0].0, w[0].1), (SID_A2, 0));
    assert!(r1.commands().contains(&cfgi_ste(SID_A2)));
    assert!(
        r1.commands()
            .contains(&CommandKind::CfgiCdAll { sid: SID_A2 }),
        "stage 1 involved: cached CDs are dropped too"
    );
    assert_eq!(steps.get("dma e2").result, page(4));

    let detach = steps.get("detach");
    assert_eq!(detach.result, ok_attach(0x1_0101, SteUpdate::Hitless));
    // Abort takes effect with word 0 alone (hitless); the words abort
    // ignores are tidied afterwards, with their own CFGI_STE + SYNC.
    let sh = shape(&detach);
    assert_eq!(sh[..3], ["W0", "CFGI_STE", "SYNC"], "{sh:?}");
    let w0 = detach.ste_writes()[0].2;
    assert_eq!(
        smmuv3::Ste::from_words([w0, 0, 0, 0, 0, 0, 0, 0]).config(),
        Ok(StreamConfig::Abort)
    );
    assert!(w0 & 1 == 1, "V stays 1: abort, not C_BAD_STE");
    let n = sh.len();
    assert_eq!(sh[n - 2..], ["CFGI_STE", "SYNC"], "{sh:?}");
    assert!(
        sh[3..n - 2].iter().all(|x| x.starts_with('W') && x != "W0"),
        "{sh:?}"
    );
    assert_eq!(
        steps.get("dma detached").result,
        format!("{:?}", Err::<u64, _>(DmaError::Aborted))
    );
    let ste = bus.ste(SID_A).unwrap();
    assert_eq!((ste.v(), ste.config()), (true, Ok(StreamConfig::Abort)));
    let destroy = steps.get("destroy").commands();
    assert!(
        matches!(
            destroy[..],
            [CommandKind::TlbiS12Vmall { .. }, CommandKind::Sync { .. }]
        ),
        "{destroy:?}"
    );
}

/// Replace S2 -> S2 with the SMMU consuming commands only between task
/// steps, a device probing DMA at every step: it sees the old page, then
/// terminations (C_BAD_STE while V = 0), then the new page — never
/// anything else, never a bypass.
#[test]
fn harness_iommu_break_before_make_window_terminates_never_bypasses() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let phase = Arc::new(Mutex::new(0u8));
    let p = phase.clone();
    let mut rig = IommuRig::new(SmmuConfig::new())
        .completion(Completion::BetweenSteps)
        .vm("vm", 3, &[SID_A], move |vm: Vm| {
            let c = &vm.iommu;
            let d1 = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let d2 = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let _ = c.map(d1, IOVA, vm.ram.page(1), 0x1000, rw());
            let _ = c.map(d2, IOVA, vm.ram.page(2), 0x1000, rw());
            let a = c.attach(StreamId(SID_A), d1);
            *p.lock().unwrap() = 1;
            let r = c.replace(StreamId(SID_A), d2);
            *p.lock().unwrap() = 2;
            sys_shutdown(if a.is_ok() && r.is_ok() { 0 } else { 1 });
        });
    let bus = rig.bus();
    let dev = bus.device();
    let (seen2, phase2) = (seen.clone(), phase.clone());
    let report = rig
        .harness(11)
        .irq_source(move |_, _| {
            let ph = *phase2.lock().unwrap();
            if ph == 1 {
                seen2.lock().unwrap().push(dev.probe(SID_A, None, IOVA));
            }
            Vec::new()
        })
        .run();
    report.expect_shutdown(0);
    let seen = seen.lock().unwrap().clone();
    let (old, new) = (Ok(smmu_page(0, 1)), Ok(smmu_page(0, 2)));
    for r in &seen {
        assert!(
            *r == old
                || *r == new
                || matches!(
                    r,
                    Err(DmaError::Fault {
                        id: EventId::CBadSte,
                        ..
                    })
                ),
            "probe saw {r:?}: {seen:?}"
        );
    }
    let first_bad = seen.iter().position(|r| r.is_err()).unwrap_or(0);
    assert!(
        seen.iter().any(|r| matches!(
            r,
            Err(DmaError::Fault {
                id: EventId::CBadSte,
                ..
            })
        )),
        "the window between V = 0 and the new word 0 was observed: {seen:?}"
    );
    assert!(seen[..first_bad].iter().all(|r| *r == old), "{seen:?}");
    assert!(
        !seen[first_bad..].contains(&old),
        "once broken, the old translation never comes back: {seen:?}"
    );
    assert!(seen.contains(&new), "{seen:?}");
    // The driver really waited: its waiter slept on the cmd-sync
    // interrupt the model raised.
    assert!(report.trace.whats().any(|w| matches!(
        w,
        harness::What::Interrupt {
            intid: harness::smmu::INTID_CMD_SYNC,
            ..
        }
    )));
}

#[test]
fn harness_iommu_guest_invalidation_batch_one_sync_vmid_forced() {
    let steps = Steps::new();
    let s = steps.clone();
    let mut rig = IommuRig::new(SmmuConfig::new())
        // One batch of 64 needs a queue of more than 64 entries.
        .small_cmdq(false)
        .max_pasid_bits(0)
        .vm("vm", 3, &[SID_A], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let _ = c.map(d, guest_ipa(0), vm.ram.pa, 0x4_0000, rw());
            let _ = c.attach(StreamId(SID_A), d);
            vm.ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
            let pasid0 = PasidHandle {
                pasid: Pasid(0),
                generation: PasidGen(0),
            };
            s.record(b, "bind", || {
                c.bind(StreamId(SID_A), pasid0, guest_cd(guest_ipa(10), 7), false)
            });
            s.record(b, "dma", || vm.dma.write(SID_A, None, GUEST_VA, b"a"));
            let pte = vm.ram.page(12) + ((GUEST_VA >> 12) & 511) * 8;
            let desc = S1Desc::page(guest_ipa(21), S1Ap::RwAny, 0).raw();
            vm.ram.write(pte, &desc.to_le_bytes());
            s.record(b, "dma stale", || vm.dma.write(SID_A, None, GUEST_VA, b"b"));
            // 64 commands (the lease's maximum) naming VMID 0x55: the
            // server forces the domain's VMID into every one.
            let batch: Vec<_> = (0..64u64)
                .map(|k| guest_cmd(Command::tlbi_nh_va(0x55, 7, GUEST_VA + k * 0x1000, true)))
                .collect();
            s.record(b, "invalidate 64", || c.invalidate(d, &batch));
            s.record(b, "dma fresh", || vm.dma.write(SID_A, None, GUEST_VA, b"c"));
            let mixed = [
                guest_cmd(Command::cfgi_cd(SID_A, 0, true)),
                guest_cmd(Command::tlbi_nh_asid(0, 7)),
                guest_cmd(Command::cfgi_cd(SID_B, 0, true)),
                guest_cmd(Command::tlbi_nh_asid(0, 8)),
            ];
            s.record(b, "invalidate foreign sid", || c.invalidate(d, &mixed));
            let ste_cmd = [guest_cmd(Command::cfgi_ste(SID_A, true))];
            s.record(b, "invalidate cfgi_ste", || c.invalidate(d, &ste_cmd));
            s.record(b, "invalidate other domain", || {
                c.invalidate(DomainId(0x1ff), &mixed[..1])
            });
            sys_shutdown(0);
        });
    let bus = rig.bus();
    rig.harness(2).run().expect_shutdown(0);
    let vmid = bus.ste(SID_A).unwrap().s2vmid();
    let page = |i| format!("{:?}", Ok::<u64, DmaError>(smmu_page(0, i)));
    let outcome = |done, status| {
        format!(
            "{:?}",
            Ok::<_, IommuError>(InvalidateOutcome { done, status })
        )
    };

    assert_eq!(steps.get("bind").result, "Ok(1)");
    assert_eq!(steps.get("dma").result, page(20));
    assert_eq!(
        steps.get("dma stale").result,
        page(20),
        "caching mode: a guest change needs an invalidation"
    );
    let inv = steps.get("invalidate 64");
    assert_eq!(inv.result, outcome(64, InvalidateStatus::Complete));
    let cmds = inv.commands();
    assert_eq!(cmds.len(), 65);
    for (k, c) in cmds[..64].iter().enumerate() {
        match c {
            CommandKind::TlbiNhVa {
                vmid: v,
                asid,
                scope,
            } => {
                assert_eq!((*v, *asid), (vmid, 7), "VMID forced, ASID kept");
                assert_eq!(scope.addr, GUEST_VA + k as u64 * 0x1000);
            }
            other => panic!("command {k}: {other:?}"),
        }
    }
    assert!(sync(&cmds[64]), "one SYNC for the batch");
    assert_eq!(steps.get("dma fresh").result, page(21));

    // The valid prefix is issued (one SYNC), the first refused command
    // stops the batch: the other VM's stream.
    let foreign = steps.get("invalidate foreign sid");
    assert_eq!(foreign.result, outcome(2, InvalidateStatus::Rejected));
    assert_eq!(
        foreign.commands(),
        [
            CommandKind::CfgiCd {
                sid: SID_A,
                ssid: 0,
                leaf: true
            },
            CommandKind::TlbiNhAsid { vmid, asid: 7 },
            foreign.commands()[2],
        ]
    );
    assert!(sync(&foreign.commands()[2]));
    let ste = steps.get("invalidate cfgi_ste");
    assert_eq!(ste.result, outcome(0, InvalidateStatus::Rejected));
    assert!(ste.events.is_empty(), "nothing valid: nothing issued");
    let other = steps.get("invalidate other domain");
    assert_eq!(
        other.result,
        format!("{:?}", Err::<(), _>(IommuError::NotFound))
    );
    assert!(other.events.is_empty());
}
