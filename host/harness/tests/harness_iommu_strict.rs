//! The real iommu-server on the strict SMMU model, over many seeds: eager
//! configuration caching, a throttled 16-entry command queue with slow
//! CMD_SYNCs, walk caches, UNKNOWN reset values and a slow GBPA.UPDATE
//! (`harness::smmu::strict_config`, on by default in `IommuRig`), and a
//! device probing DMA at every store the driver makes to its tables while
//! the SMMU is enabled (`Bus::set_store_hook`). Whatever the seed, no DMA
//! ever bypasses or lands outside the pages the VM mapped, and every
//! change is in force when the request returns.

use harness::scenarios::SCENARIOS;
use harness::smmu::{ram_pa, rw, Bus, IommuRig, Steps, Vm, IOVA, SID_A};
use iommu_server_api::{DomainId, StreamId};
use smmuv3_model::{DmaError, SmmuConfig};
use std::sync::{Arc, Mutex};
use userlib::sys_shutdown;

const SEEDS: u64 = 8;

/// A DMA issued at a store boundary: the StreamID (or PASID index) and
/// what it got.
type Probe = (u32, Result<u64, DmaError>);
const SID_A2: u32 = 0x11;

fn page(i: u64) -> u64 {
    ram_pa(0) + i * 0x1000
}

#[test]
fn harness_iommu_strict_scenarios_end_well_over_seeds() {
    for s in SCENARIOS.iter().filter(|s| s.name.starts_with("iommu-")) {
        for seed in 0..SEEDS {
            (s.build)(seed).run().expect_shutdown(s.status);
        }
    }
}

/// Attach, replace S2 → S2, S2 → S1, S1 → S1, detach, with a device
/// probing SID_A and SID_A2 after every store of the driver to its tables
/// (STEs, CDs, page tables): each probe lands on a page some domain mapped
/// at IOVA, or terminates. Never a bypass (PA = IOVA), never another page.
#[test]
fn harness_iommu_strict_store_boundaries_never_bypass() {
    for seed in 0..SEEDS {
        let steps = Steps::new();
        let s = steps.clone();
        let mut rig =
            IommuRig::new(SmmuConfig::new()).vm("vm", 3, &[SID_A, SID_A2], move |vm: Vm| {
                let (c, b) = (&vm.iommu, &vm.bus);
                let d1 = c.create_s2_domain(false).unwrap_or(DomainId(0));
                let d2 = c.create_s2_domain(false).unwrap_or(DomainId(0));
                let e1 = c.create_s1_domain(false).unwrap_or(DomainId(0));
                let e2 = c.create_s1_domain(false).unwrap_or(DomainId(0));
                for (d, p) in [(d1, 1), (d2, 2), (e1, 3), (e2, 4)] {
                    let _ = c.map(d, IOVA, vm.ram.page(p), 0x1000, rw());
                }
                s.record(b, "attach", || c.attach(StreamId(SID_A), d1));
                s.record(b, "dma 1", || vm.dma.probe(SID_A, None, IOVA));
                s.record(b, "replace s2", || c.replace(StreamId(SID_A), d2));
                s.record(b, "dma 2", || vm.dma.probe(SID_A, None, IOVA));
                s.record(b, "replace to s1", || c.replace(StreamId(SID_A), e1));
                s.record(b, "dma 3", || vm.dma.probe(SID_A, None, IOVA));
                s.record(b, "replace s1", || c.replace(StreamId(SID_A), e2));
                s.record(b, "dma 4", || vm.dma.probe(SID_A, None, IOVA));
                s.record(b, "attach 2", || c.attach(StreamId(SID_A2), e1));
                s.record(b, "dma 2:3", || vm.dma.probe(SID_A2, None, IOVA));
                s.record(b, "detach", || c.detach(StreamId(SID_A)));
                s.record(b, "dma detached", || vm.dma.probe(SID_A, None, IOVA));
                sys_shutdown(0);
            });
        let bus = rig.bus();
        let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
        let p = probes.clone();
        bus.set_store_hook(Some(Arc::new(move |bus: &Bus, _pa, _v| {
            let dev = bus.device();
            for sid in [SID_A, SID_A2] {
                p.lock().unwrap().push((sid, dev.probe(sid, None, IOVA)));
            }
        })));
        rig.harness(seed).run().expect_shutdown(0);
        let ok = |i: u64| format!("{:?}", Ok::<u64, DmaError>(page(i)));
        for (label, want) in [
            ("dma 1", ok(1)),
            ("dma 2", ok(2)),
            ("dma 3", ok(3)),
            ("dma 4", ok(4)),
            ("dma 2:3", ok(3)),
            (
                "dma detached",
                format!("{:?}", Err::<u64, _>(DmaError::Aborted)),
            ),
        ] {
            assert_eq!(steps.get(label).result, want, "{label}, seed {seed}");
        }
        let probes = probes.lock().unwrap().clone();
        assert!(probes.len() > 20, "the hook ran: {}", probes.len());
        for (sid, got) in &probes {
            match got {
                Ok(pa) => assert!(
                    (1..=4).any(|i| *pa == page(i)),
                    "seed {seed}: sid {sid:#x} reached {pa:#x} (IOVA {IOVA:#x})"
                ),
                Err(DmaError::BusError { pa }) => {
                    panic!("seed {seed}: sid {sid:#x} reached unbacked {pa:#x}")
                }
                Err(_) => {}
            }
        }
        assert!(bus.smmu.access_errors().is_empty(), "seed {seed}");
    }
}

/// Unmapping more pages than the 16-entry queue holds: the driver waits
/// for space, wraps and waits for its slow SYNCs; afterwards no page is
/// reachable, whatever the seed.
#[test]
fn harness_iommu_strict_unmap_wraps_the_queue_and_leaves_nothing_reachable() {
    const N: u64 = 40;
    for seed in 0..SEEDS {
        let steps = Steps::new();
        let s = steps.clone();
        let mut rig = IommuRig::new(SmmuConfig::new()).vm("vm", 3, &[SID_A], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let _ = c.attach(StreamId(SID_A), d);
            let _ = c.map(d, IOVA, vm.ram.page(0), N * 0x1000, rw());
            for i in 0..N {
                s.record(b, &format!("warm {i}"), || {
                    vm.dma.probe(SID_A, None, IOVA + i * 0x1000)
                });
            }
            s.record(b, "unmap", || c.unmap(d, IOVA, N * 0x1000));
            for i in 0..N {
                s.record(b, &format!("after {i}"), || {
                    vm.dma.probe(SID_A, None, IOVA + i * 0x1000)
                });
            }
            sys_shutdown(0);
        });
        let bus = rig.bus();
        rig.harness(seed).run().expect_shutdown(0);
        assert_eq!(
            steps.get("unmap").result,
            format!("{:?}", Ok::<u64, iommu_server_api::IommuError>(N * 0x1000)),
            "seed {seed}"
        );
        for i in 0..N {
            assert_eq!(
                steps.get(&format!("warm {i}")).result,
                format!("{:?}", Ok::<u64, DmaError>(page(i))),
                "seed {seed}"
            );
            assert!(
                steps.get(&format!("after {i}")).result.starts_with("Err"),
                "seed {seed}: page {i} still reachable after unmap"
            );
        }
        // The queue really wrapped.
        let syncs = bus
            .smmu
            .commands_where(|k| matches!(k, smmuv3::CommandKind::Sync { .. }))
            .len();
        assert!(syncs >= 3, "seed {seed}: {syncs} SYNCs");
        assert!(bus.smmu.access_errors().is_empty(), "seed {seed}");
    }
}

/// On an MSI-capable SMMU the *_IRQ_CFG0 registers reset to UNKNOWN values
/// (the strict model draws them from the seed): the driver must clear them
/// before enabling interrupts, or the SMMU signals its GERROR (the boot
/// self-test's illegal command) and event interrupts as MSI writes to
/// garbage addresses instead of the wired lines (issue 10 item 12).
#[test]
fn harness_iommu_strict_msi_capable_smmu_sends_no_garbage_msis() {
    for seed in 0..SEEDS {
        let mut rig = IommuRig::new(SmmuConfig::new().msi(true))
            .event_queue(true)
            .vm("vm", 3, &[SID_A], move |vm: Vm| {
                // An assigned, unattached stream: the DMA records an event.
                let _ = vm.dma.probe(0x77, None, IOVA);
                sys_shutdown(0);
            });
        let bus = rig.bus();
        rig.harness(seed).run().expect_shutdown(0);
        use smmuv3::regs::offset;
        use smmuv3::Mmio;
        for off in [offset::GERROR_IRQ_CFG0, offset::EVENTQ_IRQ_CFG0] {
            assert_eq!(bus.smmu.read64(off), 0, "seed {seed}: {off:#x}");
        }
        assert_eq!(bus.smmu.msi_writes(), [], "seed {seed}");
    }
}

/// A device that tries its PASIDs before they are bound makes the SMMU
/// fetch (and, eagerly, cache) the empty CD slots: each bind must
/// invalidate the CD it fills (CFGI_CD), or the device keeps getting
/// C_BAD_CD after the bind returned.
#[test]
fn harness_iommu_strict_pasid_tried_before_bind_works_after_bind() {
    use harness::smmu::{guest_cd, guest_ipa, GUEST_VA};
    const PASIDS: [u32; 4] = [1, 2, 3, 70];
    for seed in 0..SEEDS {
        let steps = Steps::new();
        let s = steps.clone();
        let mut rig = IommuRig::new(SmmuConfig::new())
            .pasid_alloc(&PASIDS)
            .max_pasid_bits(20)
            .vm("vm", 3, &[SID_A], move |vm: Vm| {
                let (c, b) = (&vm.iommu, &vm.bus);
                let Some(pasids) = vm.pasids.as_ref() else {
                    panic!("no pasid-alloc")
                };
                let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
                let _ = c.map(d, guest_ipa(0), vm.ram.pa, vm.ram.size as u64, rw());
                let _ = c.attach(StreamId(SID_A), d);
                for k in 0..PASIDS.len() as u64 {
                    let Ok(h) = pasids.alloc() else { break };
                    vm.ram
                        .stage1(10 + 3 * k, GUEST_VA, guest_ipa(100 + k), guest_ipa);
                    let p = h.pasid.0;
                    s.record(b, &format!("before {p}"), || {
                        vm.dma.probe(SID_A, Some(p), GUEST_VA)
                    });
                    s.record(b, &format!("bind {p}"), || {
                        c.bind(
                            StreamId(SID_A),
                            h,
                            guest_cd(guest_ipa(10 + 3 * k), 10 + k as u16),
                            false,
                        )
                    });
                    s.record(b, &format!("after {p}"), || {
                        vm.dma.probe(SID_A, Some(p), GUEST_VA)
                    });
                }
                sys_shutdown(0);
            });
        // At every store of the driver (CDs, L1CDs, the STE), each PASID
        // reaches its own page or nothing.
        let bus = rig.bus();
        let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
        let pr = probes.clone();
        bus.set_store_hook(Some(Arc::new(move |bus: &Bus, _pa, _v| {
            let dev = bus.device();
            for (k, p) in PASIDS.iter().enumerate() {
                pr.lock()
                    .unwrap()
                    .push((k as u32, dev.probe(SID_A, Some(*p), GUEST_VA)));
            }
        })));
        rig.harness(seed).run().expect_shutdown(0);
        let probes = probes.lock().unwrap().clone();
        assert!(probes.iter().any(|(_, r)| r.is_ok()), "seed {seed}");
        for (k, got) in probes {
            if let Ok(pa) = got {
                let k = k as usize;
                assert_eq!(pa, page(100 + k as u64), "seed {seed}: PASID {}", PASIDS[k]);
            }
        }
        for (k, p) in PASIDS.iter().enumerate() {
            assert!(
                steps.get(&format!("before {p}")).result.starts_with("Err"),
                "seed {seed}"
            );
            assert_eq!(
                steps.get(&format!("bind {p}")).result,
                "Ok(1)",
                "seed {seed}"
            );
            assert_eq!(
                steps.get(&format!("after {p}")).result,
                format!("{:?}", Ok::<u64, DmaError>(page(100 + k as u64))),
                "seed {seed}, pasid {p}"
            );
        }
    }
}
