//! What the device sees of the iommu-server's invalidation and update
//! protocol: each test asserts only where DMA lands or that it is
//! terminated, never the command sequence, so a driver that skips a step
//! (a CFGI_STE, the CMD_SYNC closing a batch, the break of
//! break-before-make) fails here however it orders its commands. These are
//! the tests `cargo xtask mutants` names for those mutations
//! (docs/iommu-server.md, "Mutations").
//!
//! The lenient model applies CFGI / TLBI only at a later CMD_SYNC and
//! caches every legal STE it fetched; the strict one (the `IommuRig`
//! default) also caches eagerly, consumes commands slowly, and re-fetches
//! entries at the driver's store boundaries.

use harness::smmu::{ram_pa, rw, Bus, IommuRig, Steps, Vm, IOVA, SID_A};
use iommu_server_api::{DomainId, StreamId};
use smmuv3_model::{DmaError, SmmuConfig};
use std::sync::{Arc, Mutex};
use userlib::sys_shutdown;

const SEEDS: u64 = 8;

fn page(i: u64) -> u64 {
    ram_pa(0) + i * 0x1000
}

fn lands(i: u64) -> String {
    format!("{:?}", Ok::<u64, DmaError>(page(i)))
}

fn aborted() -> String {
    format!("{:?}", Err::<u64, _>(DmaError::Aborted))
}

/// The device uses its stream before the attach (the SMMU fetches and may
/// keep the abort STE), then through attach, S2 → S2 replace, detach and
/// attach again: after each request returns, DMA goes where the new STE
/// says. A driver that stores an STE without CFGI_STE leaves the SMMU on
/// the STE it cached (on both models: each caches what it fetched).
#[test]
fn harness_iommu_device_sees_each_stage2_ste_change_when_the_request_returns() {
    for strict in [false, true] {
        for seed in 0..SEEDS {
            let steps = Steps::new();
            let s = steps.clone();
            let rig = IommuRig::new(SmmuConfig::new()).strict(strict).vm(
                "vm",
                3,
                &[SID_A],
                move |vm: Vm| {
                    let (c, b) = (&vm.iommu, &vm.bus);
                    let d1 = c.create_s2_domain(false).unwrap_or(DomainId(0));
                    let d2 = c.create_s2_domain(false).unwrap_or(DomainId(0));
                    let _ = c.map(d1, IOVA, vm.ram.page(1), 0x1000, rw());
                    let _ = c.map(d2, IOVA, vm.ram.page(2), 0x1000, rw());
                    let sid = StreamId(SID_A);
                    s.record(b, "unattached", || vm.dma.probe(SID_A, None, IOVA));
                    s.record(b, "attach", || c.attach(sid, d1).map(|_| ()));
                    s.record(b, "dma attached", || vm.dma.probe(SID_A, None, IOVA));
                    s.record(b, "replace", || c.replace(sid, d2).map(|_| ()));
                    s.record(b, "dma replaced", || vm.dma.probe(SID_A, None, IOVA));
                    s.record(b, "detach", || c.detach(sid));
                    s.record(b, "dma detached", || vm.dma.probe(SID_A, None, IOVA));
                    s.record(b, "attach again", || c.attach(sid, d1).map(|_| ()));
                    s.record(b, "dma again", || vm.dma.probe(SID_A, None, IOVA));
                    sys_shutdown(0);
                },
            );
            rig.harness(seed).run().expect_shutdown(0);
            let at = format!("strict {strict}, seed {seed}");
            assert_eq!(steps.get("unattached").result, aborted(), "{at}");
            for req in ["attach", "replace", "attach again"] {
                assert_eq!(steps.get(req).result, "Ok(())", "{req}, {at}");
            }
            assert_eq!(steps.get("dma attached").result, lands(1), "{at}");
            assert_eq!(steps.get("dma replaced").result, lands(2), "{at}");
            assert_eq!(steps.get("dma detached").result, aborted(), "{at}");
            assert_eq!(steps.get("dma again").result, lands(1), "{at}");
        }
    }
}

/// Pages the device has used (so the SMMU holds their translations) are
/// unreachable once unmap returns, and a remap to other pages is what the
/// device reaches next. The models apply a TLBI only when a later CMD_SYNC
/// completes (as an implementation may), so a batch that is not closed by
/// a CMD_SYNC leaves the old translations in use.
#[test]
fn harness_iommu_device_unmap_is_in_force_when_it_returns() {
    const N: u64 = 4;
    for strict in [false, true] {
        for seed in 0..SEEDS {
            let steps = Steps::new();
            let s = steps.clone();
            let rig = IommuRig::new(SmmuConfig::new()).strict(strict).vm(
                "vm",
                3,
                &[SID_A],
                move |vm: Vm| {
                    let (c, b) = (&vm.iommu, &vm.bus);
                    let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
                    let _ = c.attach(StreamId(SID_A), d);
                    let _ = c.map(d, IOVA, vm.ram.page(0), N * 0x1000, rw());
                    let dma = |i: u64| vm.dma.probe(SID_A, None, IOVA + i * 0x1000);
                    for i in 0..N {
                        s.record(b, &format!("warm {i}"), || dma(i));
                    }
                    s.record(b, "unmap", || c.unmap(d, IOVA, N * 0x1000));
                    for i in 0..N {
                        s.record(b, &format!("unmapped {i}"), || dma(i));
                    }
                    let _ = c.map(d, IOVA, vm.ram.page(8), N * 0x1000, rw());
                    for i in 0..N {
                        s.record(b, &format!("remapped {i}"), || dma(i));
                    }
                    sys_shutdown(0);
                },
            );
            rig.harness(seed).run().expect_shutdown(0);
            let at = format!("strict {strict}, seed {seed}");
            for i in 0..N {
                assert_eq!(steps.get(&format!("warm {i}")).result, lands(i), "{at}");
                let after = steps.get(&format!("unmapped {i}")).result;
                assert!(
                    after.starts_with("Err"),
                    "{at}: page {i} reachable after unmap: {after}"
                );
                assert_eq!(
                    steps.get(&format!("remapped {i}")).result,
                    lands(8 + i),
                    "{at}"
                );
            }
        }
    }
}

/// S2 → S2 replace back and forth (the STE's VMID and S2TTB words both
/// change), with the device probing at every store of the driver to its
/// tables, where the strict model may re-fetch the STE half-written. A
/// probe reaches the old domain's page, the new one's, or nothing; after
/// each replace the device reaches the new domain's page. Written in place
/// (no break-before-make), a half-written STE pairs one domain's VMID with
/// the other's tables, and the translation the SMMU caches under that VMID
/// sends the domain's later DMA to the other domain's page.
#[test]
fn harness_iommu_device_replace_s2_never_mixes_two_domains() {
    const ROUNDS: usize = 6;
    for seed in 0..SEEDS {
        let steps = Steps::new();
        let s = steps.clone();
        let mut rig = IommuRig::new(SmmuConfig::new()).vm("vm", 3, &[SID_A], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let d1 = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let d2 = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let _ = c.map(d1, IOVA, vm.ram.page(1), 0x1000, rw());
            let _ = c.map(d2, IOVA, vm.ram.page(2), 0x1000, rw());
            let sid = StreamId(SID_A);
            let _ = c.attach(sid, d1);
            s.record(b, "dma 0", || vm.dma.probe(SID_A, None, IOVA));
            for r in 1..=ROUNDS {
                let to = if r % 2 == 1 { d2 } else { d1 };
                s.record(b, &format!("replace {r}"), || {
                    c.replace(sid, to).map(|_| ())
                });
                s.record(b, &format!("dma {r}"), || vm.dma.probe(SID_A, None, IOVA));
            }
            sys_shutdown(0);
        });
        let bus = rig.bus();
        let probes: Arc<Mutex<Vec<Result<u64, DmaError>>>> = Arc::default();
        let p = probes.clone();
        bus.set_store_hook(Some(Arc::new(move |bus: &Bus, _pa, _v| {
            p.lock()
                .unwrap()
                .push(bus.device().probe(SID_A, None, IOVA));
        })));
        rig.harness(seed).run().expect_shutdown(0);
        assert_eq!(steps.get("dma 0").result, lands(1), "seed {seed}");
        for r in 1..=ROUNDS {
            let want = if r % 2 == 1 { 2 } else { 1 };
            let at = format!("seed {seed}, round {r}");
            assert_eq!(steps.get(&format!("replace {r}")).result, "Ok(())", "{at}");
            assert_eq!(steps.get(&format!("dma {r}")).result, lands(want), "{at}");
        }
        let probes = probes.lock().unwrap().clone();
        assert!(probes.len() > 2 * ROUNDS, "the hook ran: {}", probes.len());
        for got in probes {
            match got {
                Ok(pa) => assert!(
                    pa == page(1) || pa == page(2),
                    "seed {seed}: reached {pa:#x}"
                ),
                Err(DmaError::BusError { pa }) => panic!("seed {seed}: reached unbacked {pa:#x}"),
                Err(_) => {}
            }
        }
        assert!(bus.smmu.access_errors().is_empty(), "seed {seed}");
    }
}
