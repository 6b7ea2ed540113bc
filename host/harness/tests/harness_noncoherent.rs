//! Non-coherent SMMUs (issue 13): the SMMU reads and writes memory only,
//! the tasks reach their DMA regions through the CPU model's data cache
//! (`smmuv3_model::CpuCache`). The iommu-server suite's key cases run in
//! this mode next to their coherent versions (`harness_noncoherent_*` in
//! harness_iommu_ops.rs, harness_iommu_pasid.rs and
//! harness_iommu_restart.rs); here: the attributes the driver programs,
//! that no store is left uncleaned, that the mode bites (one clean
//! removed: the SMMU keeps using a stale STE), and prq-server's queue
//! reads (it must invalidate before reading what the SMMU wrote).

use harness::prq::{PrqRig, PRQ_PA};
use harness::prq_scenarios as ps;
use harness::smmu::{rw, IommuRig, Steps, Vm, IOVA, SID_A, TABLES_PA, TABLES_SIZE};
use iommu_server_api::{DomainId, StreamId};
use smmuv3::regs::offset;
use smmuv3::{Cacheability, Mmio, Shareability, StreamConfig};
use smmuv3_model::{DmaError, SmmuConfig};
use userlib::sys_shutdown;

fn page(i: u64) -> u64 {
    harness::smmu::ram_pa(0) + i * 0x1000
}

/// Attach a stage 2 domain mapping page 1 at IOVA; DMA through it.
fn attach_and_dma(steps: Steps) -> impl Fn(Vm) + Send + Sync + 'static {
    move |vm: Vm| {
        let (c, b, s) = (&vm.iommu, &vm.bus, &steps);
        let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
        let _ = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
        s.record(b, "attach", || c.attach(StreamId(SID_A), d));
        s.record(b, "dma", || vm.dma.write(SID_A, None, IOVA, b"x"));
        sys_shutdown(0);
    }
}

#[test]
fn harness_noncoherent_attributes_match_the_mode_and_no_store_stays_dirty() {
    for coherent in [true, false] {
        let steps = Steps::new();
        let mut rig = IommuRig::new(SmmuConfig::new()).coherent(coherent).vm(
            "vm",
            3,
            &[SID_A],
            attach_and_dma(steps.clone()),
        );
        let bus = rig.bus();
        rig.harness(5).run().expect_shutdown(0);
        assert_eq!(
            steps.get("dma").result,
            format!("{:?}", Ok::<u64, DmaError>(page(1))),
            "coherent {coherent}"
        );
        let cr1 = bus.smmu.read32(offset::CR1);
        let ste = bus.ste(SID_A).unwrap();
        assert_eq!(ste.config(), Ok(StreamConfig::S2Trans));
        if coherent {
            // TABLE/QUEUE: WB inner shareable.
            assert_eq!(cr1, 0b11_01_01_11_01_01);
            assert_eq!(ste.s2ir0(), Ok(Cacheability::WriteBackAlloc));
            assert_eq!(ste.s2sh0(), Ok(Shareability::InnerShareable));
        } else {
            // Non-cacheable, outer shareable (IHI 0070 §6.3.11).
            assert_eq!(cr1, 0b10_00_00_10_00_00);
            assert_eq!(ste.s2ir0(), Ok(Cacheability::NonCacheable));
            assert_eq!(ste.s2or0(), Ok(Cacheability::NonCacheable));
            assert_eq!(ste.s2sh0(), Ok(Shareability::OuterShareable));
            // Every store of the driver reached memory.
            let dirty: Vec<u64> = bus
                .cpu
                .dirty_lines()
                .into_iter()
                .filter(|&a| (TABLES_PA..TABLES_PA + TABLES_SIZE as u64).contains(&a))
                .collect();
            assert_eq!(dirty, Vec::<u64>::new(), "uncleaned table lines");
            let st = bus.cpu.stats();
            assert!(st.cleans > 0 && st.writebacks > 0, "{st:?}");
        }
        assert!(bus.smmu.access_errors().is_empty());
    }
}

/// The mode bites: with the cleans of SID_A's STE line removed (the test
/// hook), the server's attach succeeds and its own view of the STE is the
/// new one, but memory — all the SMMU reads — keeps the abort STE, and
/// the device's DMA aborts on it. The same run with the cleans in place
/// translates (`harness_noncoherent_attributes_...`).
#[test]
fn harness_noncoherent_removed_ste_clean_leaves_the_smmu_on_a_stale_ste() {
    let steps = Steps::new();
    let s = steps.clone();
    let mut rig =
        IommuRig::new(SmmuConfig::new())
            .coherent(false)
            .vm("vm", 3, &[SID_A], move |vm: Vm| {
                let (c, b) = (&vm.iommu, &vm.bus);
                let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
                let _ = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
                // From here on, the cleans of the STE's line do nothing.
                let ste = b.ste_pa(SID_A).expect("SID_A has an STE");
                b.cpu.drop_cleans(ste, 64, u32::MAX);
                s.record(b, "attach", || c.attach(StreamId(SID_A), d));
                s.record(b, "dma", || vm.dma.write(SID_A, None, IOVA, b"x"));
                sys_shutdown(0);
            });
    let bus = rig.bus();
    rig.harness(5).run().expect_shutdown(0);
    assert!(steps.get("attach").result.starts_with("Ok"));
    let pa = bus.ste_pa(SID_A).unwrap();
    // The CPU's view: attached.
    let cpu_word0 = bus.cpu.read_u64(pa).unwrap();
    let cpu_config = (cpu_word0 >> 1) & 7;
    assert_eq!(cpu_config, 0b110, "the server wrote an S2 STE");
    // The SMMU's: still the abort STE, and it acted on it.
    assert_eq!(bus.ste(SID_A).unwrap().config(), Ok(StreamConfig::Abort));
    assert_eq!(
        steps.get("dma").result,
        format!("{:?}", Err::<u64, _>(DmaError::Aborted))
    );
    assert!(bus.cpu.dirty_lines().contains(&(pa & !63)));
}

// prq-server reads the PRI and event queues the SMMU wrote: on a
// non-coherent machine only after invalidating its cached lines.

fn noncoherent(rig: fn() -> PrqRig) {
    for seed in 0..10 {
        rig().coherent(false).run(seed).check();
    }
}

#[test]
fn harness_noncoherent_prq_fault_respond() {
    noncoherent(ps::fault_respond);
}

#[test]
fn harness_noncoherent_prq_replace() {
    noncoherent(ps::replace);
}

#[test]
fn harness_noncoherent_prq_overflow() {
    noncoherent(ps::overflow);
}

#[test]
fn harness_noncoherent_prq_events() {
    noncoherent(ps::events);
}

#[test]
fn harness_noncoherent_prq_restart() {
    noncoherent(ps::restart);
}

/// The mode bites for readers too: with prq-server's invalidates of the
/// PRI queue dropped (the model's hook), it reads lines it cached before
/// the SMMU wrote them — the fault path breaks (a run panics or ends with
/// its invariants broken) on some seed.
#[test]
fn harness_noncoherent_removed_pri_invalidate_is_caught() {
    let caught = (0..10).any(|seed| {
        std::panic::catch_unwind(|| {
            ps::fault_respond()
                .coherent(false)
                .with_cpu(|c| c.drop_invalidates(PRQ_PA + prq_server::mem::PRIQ_OFF as u64, 0x1000))
                .run(seed)
                .invariants()
        })
        .map_or(true, |r| r.is_err())
    });
    assert!(caught, "a missing PRI-queue invalidate went unnoticed");
}

/// The PA of the stage 2 leaf descriptor of `iova` for `sid`, walked in
/// memory (the SMMU's view): 4 KiB granule, walk from level 1.
fn s2_leaf_pa(bus: &harness::smmu::Bus, sid: u32, iova: u64) -> Option<u64> {
    const ADDR: u64 = 0x0000_ffff_ffff_f000;
    let mut table = bus.ste(sid)?.s2ttb();
    for level in 1..3 {
        let idx = (iova >> (12 + 9 * (3 - level))) & 0x1ff;
        let desc = bus.mem.read_u64(table + idx * 8).ok()?;
        if desc & 3 != 3 {
            return None;
        }
        table = desc & ADDR;
    }
    Some(table + ((iova >> 12) & 0x1ff) * 8)
}

/// The mode bites on unmap, the fail-open direction: with the cleans of
/// the leaf descriptor's line removed, the unmap succeeds and its TLBI +
/// SYNC complete, but the SMMU re-walks memory that still holds the valid
/// descriptor — the device keeps writing to the page the VM unmapped.
/// (`harness_noncoherent_unmap_invalidate` is the same unmap with the
/// cleans in place: the DMA faults.)
#[test]
fn harness_noncoherent_removed_pte_clean_keeps_an_unmapped_page_reachable() {
    let steps = Steps::new();
    let s = steps.clone();
    let mut rig =
        IommuRig::new(SmmuConfig::new())
            .coherent(false)
            .vm("vm", 3, &[SID_A], move |vm: Vm| {
                let (c, b) = (&vm.iommu, &vm.bus);
                let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
                let _ = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
                let _ = c.attach(StreamId(SID_A), d);
                s.record(b, "dma mapped", || vm.dma.write(SID_A, None, IOVA, b"m"));
                let pte = s2_leaf_pa(b, SID_A, IOVA).expect("IOVA is mapped");
                b.cpu.drop_cleans(pte, 8, u32::MAX);
                s.record(b, "pte", || pte);
                s.record(b, "unmap", || c.unmap(d, IOVA, 0x1000));
                s.record(b, "dma unmapped", || vm.dma.write(SID_A, None, IOVA, b"u"));
                sys_shutdown(0);
            });
    let bus = rig.bus();
    rig.harness(5).run().expect_shutdown(0);
    let landed = format!("{:?}", Ok::<u64, DmaError>(page(1)));
    assert_eq!(steps.get("dma mapped").result, landed);
    assert_eq!(steps.get("unmap").result, "Ok(4096)");
    let unmap_cmds = steps.get("unmap").commands();
    assert!(
        unmap_cmds
            .iter()
            .any(|k| matches!(k, smmuv3::CommandKind::Sync { .. })),
        "{unmap_cmds:?}"
    );
    let pte: u64 = steps.get("pte").result.parse().unwrap();
    assert_eq!(bus.cpu.read_u64(pte).unwrap(), 0, "the server cleared it");
    assert_ne!(bus.mem.read_u64(pte).unwrap(), 0, "memory still maps it");
    assert_eq!(
        steps.get("dma unmapped").result,
        landed,
        "the SMMU walked the stale descriptor"
    );
}
