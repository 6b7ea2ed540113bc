//! PASIDs on the SMMUv3 model — what QEMU 10.0 cannot show (SSIDSIZE 0,
//! no CD2L): 2-level CD tables with many PASIDs per stream, the users
//! count of bind / unbind with the last unbind's exact command sequence,
//! and pasid-alloc's owner and generation check, all through the
//! generated interfaces between real tasks.

use harness::smmu::{
    guest_cd, guest_ipa, ram_pa, rw, BusEvent, IommuRig, Steps, Vm, GUEST_VA, SID_A, SID_B,
};
use iommu_server_api::{DomainId, IommuError, StreamId, UnbindOutcome};
use pasid_alloc_api::PasidHandle;
use smmuv3::{CommandKind, S1Fmt, StreamConfig};
use smmuv3_model::{DmaError, SmmuConfig};
use std::sync::{Arc, Mutex};
use userlib::sys_shutdown;

fn page(k: usize, i: u64) -> u64 {
    ram_pa(k) + i * 0x1000
}

fn ok<T: std::fmt::Debug>(v: T) -> String {
    format!("{:?}", Ok::<T, IommuError>(v))
}

/// An S2 domain of the VM mapping its RAM at `guest_ipa(0)`, attached to
/// `sid`.
fn s2_over_ram(vm: &Vm, sid: u32) -> DomainId {
    let c = &vm.iommu;
    let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
    let _ = c.map(d, guest_ipa(0), vm.ram.pa, vm.ram.size as u64, rw());
    let _ = c.attach(StreamId(sid), d);
    d
}

const PASIDS: [u32; 6] = [1, 63, 64, 65, 4095, 0xF_FFFF];

#[test]
fn harness_iommu_two_level_cd_tables_many_pasids_per_stream() {
    let steps = Steps::new();
    let s = steps.clone();
    let sequence = PASIDS.to_vec();
    let mut rig = IommuRig::new(SmmuConfig::new().ssidsize(20))
        .pasid_alloc(&sequence)
        .max_pasid_bits(20)
        .vm("vm", 3, &[SID_A], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let Some(pasids) = vm.pasids.as_ref() else {
                panic!("no pasid-alloc")
            };
            s2_over_ram(&vm, SID_A);
            for (k, _) in PASIDS.iter().enumerate() {
                let k = k as u64;
                let Ok(h) = pasids.alloc() else { break };
                // Its own guest tables (pages 10 + 3k ..) and target page.
                vm.ram
                    .stage1(10 + 3 * k, GUEST_VA, guest_ipa(100 + k), guest_ipa);
                let p = h.pasid.0;
                s.record(b, &format!("bind {p:#x}"), || {
                    c.bind(
                        StreamId(SID_A),
                        h,
                        guest_cd(guest_ipa(10 + 3 * k), 10 + k as u16),
                        false,
                    )
                });
                s.record(b, &format!("dma {p:#x}"), || {
                    vm.dma.write(SID_A, Some(p), GUEST_VA + 0x40, &[k as u8])
                });
            }
            for p in PASIDS {
                s.record(b, &format!("dma again {p:#x}"), || {
                    vm.dma.write(SID_A, Some(p), GUEST_VA + 0x80, &[0xee])
                });
            }
            s.record(b, "dma unbound in a leaf", || {
                vm.dma.write(SID_A, Some(2), GUEST_VA, &[1])
            });
            s.record(b, "dma unbound no leaf", || {
                vm.dma.write(SID_A, Some(0x800), GUEST_VA, &[1])
            });
            // One past SSIDSIZE 20: pasid-alloc never hands it out (its
            // space is the SMMU's); a forged handle is refused.
            let h = PasidHandle {
                pasid: pasid_alloc_api::Pasid(0x10_0000),
                generation: pasid_alloc_api::PasidGen(0),
            };
            s.record(b, "bind out of range", || {
                c.bind(StreamId(SID_A), h, guest_cd(guest_ipa(10), 1), false)
            });
            sys_shutdown(0);
        });
    let bus = rig.bus();
    rig.harness(4).run().expect_shutdown(0);

    let ste = bus.ste(SID_A).unwrap();
    assert_eq!(ste.config(), Ok(StreamConfig::Nested));
    assert_eq!(ste.s1fmt(), Ok(S1Fmt::TwoLevel4K));
    assert_eq!(ste.s1cdmax(), 20, "2^20 CDs: SSIDSIZE 20");

    // A 4 KiB leaf holds 64 CDs: 1 and 63 share leaf 0, 64 and 65 leaf 1,
    // 4095 and 0xFFFFF have their own.
    let new_leaf = [false, false, true, false, true, true];
    for (k, p) in PASIDS.iter().enumerate() {
        let bind = steps.get(&format!("bind {p:#x}"));
        assert_eq!(bind.result, ok(1u32), "pasid {p:#x}");
        let cmds = bind.commands();
        let l1 = CommandKind::CfgiCd {
            sid: SID_A,
            ssid: *p,
            leaf: false,
        };
        if new_leaf[k] {
            // The L1 descriptor of a live table changed: CFGI_CD with
            // Leaf = 0, synced before the CD is written.
            assert_eq!(cmds[0], l1, "pasid {p:#x}: {:?}", bind.notes());
            assert!(matches!(cmds[1], CommandKind::Sync { .. }));
        } else {
            assert!(!cmds.contains(&l1), "pasid {p:#x}: {:?}", bind.notes());
        }
        // The CD itself: CFGI_CD (Leaf) + SYNC per step of its update.
        assert!(cmds.contains(&CommandKind::CfgiCd {
            sid: SID_A,
            ssid: *p,
            leaf: true
        }));
        // Only the first bind changes the STE (S2 -> nested, hitless).
        let stores = bind.ste_writes();
        if k == 0 {
            assert_eq!(stores.last().map(|w| w.1), Some(0), "{stores:?}");
        } else {
            assert!(stores.is_empty(), "pasid {p:#x}: {stores:?}");
        }
        let want = format!("{:?}", Ok::<u64, DmaError>(page(0, 100 + k as u64) + 0x40));
        assert_eq!(steps.get(&format!("dma {p:#x}")).result, want);
        let again = format!("{:?}", Ok::<u64, DmaError>(page(0, 100 + k as u64) + 0x80));
        assert_eq!(
            steps.get(&format!("dma again {p:#x}")).result,
            again,
            "every PASID keeps its own context"
        );
        let mut b = [0u8; 1];
        bus.mem
            .read(page(0, 100 + k as u64) + 0x40, &mut b)
            .unwrap();
        assert_eq!(b[0], k as u8);
    }
    assert!(steps.get("dma unbound in a leaf").result.starts_with("Err"));
    assert!(steps.get("dma unbound no leaf").result.starts_with("Err"));
    let out = steps.get("bind out of range");
    assert_eq!(
        out.result,
        format!("{:?}", Err::<u32, _>(IommuError::Invalid))
    );
    assert!(out.events.is_empty());
}

#[test]
fn harness_iommu_bind_counts_users_last_unbind_clears_cd_and_invalidates() {
    bind_case(true)
}

/// The same on a non-coherent SMMU (the driver cleans every table and
/// queue store; the model's SMMU sees memory only).
#[test]
fn harness_noncoherent_bind() {
    bind_case(false)
}

fn bind_case(coherent: bool) {
    let steps = Steps::new();
    let s = steps.clone();
    let mut rig = IommuRig::new(SmmuConfig::new())
        .coherent(coherent)
        .pasid_alloc(&[5, 6])
        .max_pasid_bits(8)
        .vm("vm", 3, &[SID_A], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let Some(pasids) = vm.pasids.as_ref() else {
                panic!("no pasid-alloc")
            };
            s2_over_ram(&vm, SID_A);
            let (Ok(h5), Ok(h6)) = (pasids.alloc(), pasids.alloc()) else {
                panic!("alloc failed")
            };
            vm.ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
            vm.ram.stage1(13, GUEST_VA, guest_ipa(21), guest_ipa);
            let (cd5, cd6) = (guest_cd(guest_ipa(10), 7), guest_cd(guest_ipa(13), 9));
            let sid = StreamId(SID_A);
            s.record(b, "bind", || c.bind(sid, h5, cd5, false));
            s.record(b, "bind again", || c.bind(sid, h5, cd5, false));
            s.record(b, "bind other context", || {
                c.bind(sid, h5, guest_cd(guest_ipa(13), 8), false)
            });
            s.record(b, "users", || c.bind_users(sid, h5.pasid));
            s.record(b, "unbind one", || c.unbind(sid, h5.pasid, false));
            s.record(b, "dma 5", || vm.dma.write(SID_A, Some(5), GUEST_VA, b"5"));
            s.record(b, "bind 6", || c.bind(sid, h6, cd6, false));
            s.record(b, "unbind last", || c.unbind(sid, h5.pasid, false));
            s.record(b, "dma 5 after", || {
                vm.dma.write(SID_A, Some(5), GUEST_VA, b"5")
            });
            s.record(b, "dma 6", || vm.dma.write(SID_A, Some(6), GUEST_VA, b"6"));
            s.record(b, "unbind again", || c.unbind(sid, h5.pasid, false));
            s.record(b, "users after", || c.bind_users(sid, h5.pasid));
            s.record(b, "unbind 6", || c.unbind(sid, h6.pasid, false));
            s.record(b, "dma s2 only", || {
                vm.dma.write(SID_A, None, guest_ipa(30), b"s2")
            });
            sys_shutdown(0);
        });
    let bus = rig.bus();
    rig.harness(9).run().expect_shutdown(0);
    let vmid = bus.ste(SID_A).unwrap().s2vmid();

    assert_eq!(steps.get("bind").result, ok(1u32));
    let again = steps.get("bind again");
    assert_eq!(again.result, ok(2u32));
    assert!(
        again.events.is_empty(),
        "a second bind only counts: {:?}",
        again.notes()
    );
    let other = steps.get("bind other context");
    assert_eq!(
        other.result,
        format!("{:?}", Err::<u32, _>(IommuError::AlreadyExists))
    );
    assert!(other.events.is_empty());
    assert_eq!(steps.get("users").result, ok(2u32));
    let one = steps.get("unbind one");
    assert_eq!(one.result, ok(UnbindOutcome::StillBound));
    assert!(one.events.is_empty(), "{:?}", one.notes());
    assert_eq!(
        steps.get("dma 5").result,
        format!("{:?}", Ok::<u64, DmaError>(page(0, 20))),
        "still bound after dropping one user"
    );

    // The last user: CD word 0 with V = 0, CFGI_CD + SYNC; the other
    // words, CFGI_CD + SYNC; then TLBI_NH_ASID + SYNC, and only then
    // ATC_INV (the model has ATS) + SYNC (IHI 0070 §4.5.1). PASID 6 keeps
    // the stream nested: the STE stays.
    let last = steps.get("unbind last");
    assert_eq!(last.result, ok(UnbindOutcome::Drained));
    let cmds = last.commands();
    let cfgi = CommandKind::CfgiCd {
        sid: SID_A,
        ssid: 5,
        leaf: true,
    };
    assert_eq!(cmds.len(), 8, "{:?}", last.notes());
    assert_eq!(cmds[0], cfgi);
    assert!(matches!(cmds[1], CommandKind::Sync { .. }));
    assert_eq!(cmds[2], cfgi);
    assert!(matches!(cmds[3], CommandKind::Sync { .. }));
    assert_eq!(cmds[4], CommandKind::TlbiNhAsid { vmid, asid: 7 });
    assert!(matches!(cmds[5], CommandKind::Sync { .. }));
    assert!(matches!(
        cmds[6],
        CommandKind::AtcInv {
            sid: SID_A,
            ssid: Some(5),
            size: 52,
            ..
        }
    ));
    assert!(matches!(cmds[7], CommandKind::Sync { .. }));
    assert!(last.ste_writes().is_empty());
    assert!(steps.get("dma 5 after").result.starts_with("Err"));
    assert_eq!(
        steps.get("dma 6").result,
        format!("{:?}", Ok::<u64, DmaError>(page(0, 21)))
    );
    let again = steps.get("unbind again");
    assert_eq!(again.result, ok(UnbindOutcome::NotBound));
    assert!(again.events.is_empty(), "a clean no-op");
    assert_eq!(
        steps.get("users after").result,
        format!("{:?}", Err::<u32, _>(IommuError::NotFound))
    );

    // The stream's last context: back to plain S2 (word 0, hitless), the
    // CD table unmapped from the context window (TLBI_S2_IPA + SYNC).
    let six = steps.get("unbind 6");
    assert_eq!(six.result, ok(UnbindOutcome::Drained));
    let w0 = six
        .events
        .iter()
        .find_map(|e| match *e {
            BusEvent::SteWrite { word: 0, value, .. } => Some(value),
            _ => None,
        })
        .expect("STE word 0 stored");
    assert_eq!(
        smmuv3::Ste::from_words([w0, 0, 0, 0, 0, 0, 0, 0]).config(),
        Ok(StreamConfig::S2Trans)
    );
    let ipas: Vec<u64> = six
        .commands()
        .iter()
        .filter_map(|c| match c {
            CommandKind::TlbiS2Ipa { vmid: v, scope } if *v == vmid => Some(scope.addr),
            _ => None,
        })
        .collect();
    assert!(!ipas.is_empty());
    assert!(ipas.iter().all(|a| (iommu_server::CTX_WINDOW.base
        ..iommu_server::CTX_WINDOW.base + iommu_server::CTX_WINDOW.size)
        .contains(a)));
    assert_eq!(
        steps.get("dma s2 only").result,
        format!("{:?}", Ok::<u64, DmaError>(page(0, 30)))
    );
}

#[test]
fn harness_iommu_bind_checks_pasid_owner_and_generation_with_pasid_alloc() {
    let steps = Steps::new();
    let theirs: Arc<Mutex<Option<PasidHandle>>> = Arc::default();
    let (s, t1, t2) = (steps.clone(), theirs.clone(), theirs.clone());
    let mut rig = IommuRig::new(SmmuConfig::new())
        .pasid_alloc(&[1, 2, 3])
        .max_pasid_bits(8)
        // PASIDs 1..=3 only: the freed one is the only one left to reuse.
        .pasid_space_bits(2)
        // Runs first (higher priority): takes PASID 1, then is done.
        .vm("other", 3, &[SID_B], move |vm: Vm| {
            if let Some(p) = vm.pasids.as_ref() {
                *t1.lock().unwrap() = p.alloc().ok();
            }
        })
        .vm("vm", 4, &[SID_A], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let Some(pasids) = vm.pasids.as_ref() else {
                panic!("no pasid-alloc")
            };
            s2_over_ram(&vm, SID_A);
            vm.ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
            let cd = guest_cd(guest_ipa(10), 7);
            let sid = StreamId(SID_A);
            // The other VM's PASID (learned by a test back channel: the
            // worst case, a guessed handle).
            if let Some(h) = *t2.lock().unwrap() {
                s.record(b, "their pasid", || c.bind(sid, h, cd, false));
            }
            let (Ok(h), Ok(_keep)) = (pasids.alloc(), pasids.alloc()) else {
                panic!("alloc failed")
            };
            s.record(b, "free", || pasids.free(h));
            s.record(b, "freed pasid", || c.bind(sid, h, cd, false));
            let Ok(h2) = pasids.alloc() else {
                panic!("realloc failed")
            };
            s.record(b, "realloc", || h2);
            s.record(b, "stale generation", || c.bind(sid, h, cd, false));
            s.record(b, "their stream", || c.bind(StreamId(SID_B), h2, cd, false));
            s.record(b, "current", || c.bind(sid, h2, cd, false));
            sys_shutdown(0);
        });
    let bus = rig.bus();
    let m = rig.harness(6).run();
    m.expect_shutdown(0);

    // Another VM's PASID or stream: NotPermitted; the caller's own PASID
    // after it was freed (drained and back in the pool), and its handle
    // of the old generation after reuse: NotFound.
    for (label, e) in [
        ("their pasid", IommuError::NotPermitted),
        ("freed pasid", IommuError::NotFound),
        ("stale generation", IommuError::NotFound),
        ("their stream", IommuError::NotPermitted),
    ] {
        let st = steps.get(label);
        assert_eq!(st.result, format!("{:?}", Err::<u32, _>(e)), "{label}");
        assert!(
            st.events.is_empty(),
            "{label}: a refused bind changes nothing: {:?}",
            st.notes()
        );
    }
    assert_eq!(
        steps.get("realloc").result,
        "PasidHandle { pasid: Pasid(2), generation: PasidGen(1) }",
        "the reused PASID has a new generation"
    );
    assert_eq!(steps.get("current").result, ok(1u32));
    // The server asked pasid-alloc (owner_of) before each PASID bind that
    // got past the stream check.
    let asks = m
        .trace
        .messages()
        .into_iter()
        .filter(|(from, to, op)| {
            from == "iommu-server"
                && to == "pasid-alloc"
                && *op == pasid_alloc_api::PasidAllocOp::OwnerOf as u16
        })
        .count();
    assert_eq!(asks, 4);
    assert!(bus.smmu.access_errors().is_empty());
}

/// Issue 10 item 17: an unmap on a nest parent (an S2 domain with bound
/// PASIDs) must also reach the combined stage 1 + 2 TLB entries
/// (TLBI_NH_ALL under its VMID): TLBI_S2_IPA alone leaves them, and DMA
/// through the PASID would still land on the unmapped page. Asserted at
/// the device.
#[test]
fn harness_iommu_unmap_on_a_nest_parent_reaches_dma_through_a_pasid() {
    let steps = Steps::new();
    let s = steps.clone();
    let mut rig = IommuRig::new(SmmuConfig::new().ssidsize(20))
        .pasid_alloc(&[5])
        .max_pasid_bits(20)
        .vm("vm", 3, &[SID_A], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let Some(pasids) = vm.pasids.as_ref() else {
                panic!("no pasid-alloc")
            };
            let d = s2_over_ram(&vm, SID_A);
            let Ok(h) = pasids.alloc() else {
                panic!("no PASID")
            };
            // Guest stage 1: GUEST_VA → IPA of RAM page 100.
            vm.ram.stage1(10, GUEST_VA, guest_ipa(100), guest_ipa);
            s.record(b, "bind", || {
                c.bind(StreamId(SID_A), h, guest_cd(guest_ipa(10), 7), false)
            });
            // Fills the TLB with the combined VA → PA entry.
            s.record(b, "dma", || vm.dma.write(SID_A, Some(5), GUEST_VA, b"a"));
            s.record(b, "unmap", || c.unmap(d, guest_ipa(100), 0x1000));
            s.record(b, "dma after", || {
                vm.dma.write(SID_A, Some(5), GUEST_VA, b"b")
            });
            sys_shutdown(0);
        });
    let bus = rig.bus();
    rig.harness(17).run().expect_shutdown(0);

    assert_eq!(steps.get("bind").result, ok(1u32));
    assert_eq!(
        steps.get("dma").result,
        format!("{:?}", Ok::<u64, DmaError>(page(0, 100)))
    );
    let unmap = steps.get("unmap");
    assert_eq!(unmap.result, ok(0x1000u64));
    let after = steps.get("dma after").result;
    assert!(
        after.starts_with("Err"),
        "DMA through the PASID reached {after} after the unmap"
    );
    let mut got = [0u8; 1];
    bus.mem.read(page(0, 100), &mut got).unwrap();
    assert_eq!(&got, b"a", "the unmapped page was not written again");
    // How: TLBI_NH_ALL under the parent's VMID in the unmap's batch.
    let vmid = bus.ste(SID_A).unwrap().s2vmid();
    assert!(
        unmap.commands().contains(&CommandKind::TlbiNhAll { vmid }),
        "{:?}",
        unmap.notes()
    );
}
