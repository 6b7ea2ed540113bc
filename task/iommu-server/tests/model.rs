//! The iommu-server library against the project's SMMUv3 model
//! (`host/smmuv3-model`): the same code as in the image, on an SMMU with
//! what QEMU lacks (substreams, 2-level CD tables, PRI), checked through
//! DMA from a modelled device and through the model's command log.

use idl_runtime::testing::{LoopbackKernel, CLIENT};
use idl_runtime::Fixed;
use iommu_server::cmdq::Waiter;
use iommu_server::dma::DmaMemory;
use iommu_server::idl::{self, tcr, IdlServer};
use iommu_server::pgtable::Prot;
use iommu_server::update::UpdateKind;
use iommu_server::{
    DomainId, Error, GuestContext, IommuServer, NestedConfig, PageResponse, Roles, ServerConfig,
    UnmapMode, VmWindow, CTX_WINDOW, MSI_WINDOW,
};
use iommu_server_api::{self as api, IommuServer as _};
use smmuv3::pgtable::{S1Ap, S1Desc};
use smmuv3::{
    AddrSize, Cacheability, Cd, Command, CommandKind, Event, EventClass, EventId, Mmio, Opcode,
    PriResponse, S1Dss, S1Fmt, Shareability, StreamConfig, Tg0,
};
use smmuv3_model::{Device, DmaError, PhysMem, Smmu, SmmuConfig};
use std::sync::{Arc, Mutex};
use userlib::abi::Generation;
use userlib::TaskId;

// ------------------------------------------------------------------ rig

struct ModelMmio(Arc<Smmu>);

impl Mmio for ModelMmio {
    fn read32(&self, o: usize) -> u32 {
        self.0.read32(o)
    }
    fn write32(&self, o: usize, v: u32) {
        self.0.write32(o, v)
    }
    fn read64(&self, o: usize) -> u64 {
        self.0.read64(o)
    }
    fn write64(&self, o: usize, v: u64) {
        self.0.write64(o, v)
    }
}

/// The server's DMA region in the model's physical memory.
struct PhysDma {
    mem: PhysMem,
    pa: u64,
    size: usize,
}

impl DmaMemory for PhysDma {
    fn base_pa(&self) -> u64 {
        self.pa
    }
    fn size(&self) -> usize {
        self.size
    }
    fn read64(&self, off: usize) -> u64 {
        self.mem.read_u64(self.pa + off as u64).unwrap_or(0)
    }
    fn write64(&self, off: usize, v: u64) {
        let _ = self.mem.write_u64(self.pa + off as u64, v);
    }
    fn publish(&self) {}
    // The model's memory directly: a coherent SMMU (the non-coherent mode
    // is the harness's, host/harness/tests/harness_noncoherent.rs).
    fn coherent(&self) -> bool {
        true
    }
    fn refresh(&self, _off: usize, _len: usize) {}
}

struct Spin;

impl Waiter for Spin {
    fn pause(&mut self, attempt: u32) -> bool {
        attempt < 1000
    }
}

type Server = IommuServer<ModelMmio, PhysDma, Spin>;

const TABLES_PA: u64 = 0x4000_0000;
const TABLES_SIZE: usize = 0x80000; // 128 pages
const VM_A_PA: u64 = 0x8000_0000;
const VM_B_PA: u64 = 0x9000_0000;
const VM_SIZE: usize = 0x40000; // 64 pages each

const SID_A: u32 = 0x10;
const SID_A2: u32 = 0x11;
const SID_B: u32 = 0x08;
const SID_NOBODY: u32 = 0x18;

fn vm_a() -> TaskId {
    TaskId::new(3, Generation(0))
}
fn vm_b() -> TaskId {
    TaskId::new(2, Generation(0))
}
fn supervisor() -> TaskId {
    TaskId::new(0, Generation(0))
}
fn prq() -> TaskId {
    TaskId::new(1, Generation(0))
}

const STREAMS: &[(u32, u16)] = &[(SID_A, 3), (SID_A2, 3), (SID_B, 2)];

/// Pages the server allocates at boot for these streams: L1 stream table,
/// one 16 KiB level 2 table (SIDs 0x08..0x11), command and event queues.
const BOOT_PAGES: u32 = 7;

struct Rig {
    smmu: Arc<Smmu>,
    dev: Device,
    mem: PhysMem,
    s: Server,
}

fn rig_with(cfg: SmmuConfig, f: impl FnOnce(&mut ServerConfig<'static>)) -> Rig {
    let mem = PhysMem::new();
    mem.add_region(TABLES_PA, TABLES_SIZE).unwrap();
    mem.add_region(VM_A_PA, VM_SIZE).unwrap();
    mem.add_region(VM_B_PA, VM_SIZE).unwrap();
    let smmu = Arc::new(Smmu::new(mem.clone(), cfg));
    let mut sc = ServerConfig {
        streams: STREAMS,
        prq_server: Some(1),
        supervisor: 0,
        max_pasid_bits: 12,
        sync_irq: false,
        event_queue: true,
        ..ServerConfig::default()
    };
    f(&mut sc);
    let dma = PhysDma {
        mem: mem.clone(),
        pa: TABLES_PA,
        size: TABLES_SIZE,
    };
    let s = IommuServer::new(ModelMmio(smmu.clone()), dma, Spin, &sc).expect("init");
    Rig {
        dev: Device::new(smmu.clone()),
        smmu,
        mem,
        s,
    }
}

fn rig(cfg: SmmuConfig) -> Rig {
    rig_with(cfg, |_| {})
}

fn page_a(i: u64) -> u64 {
    VM_A_PA + i * 0x1000
}

/// Commands logged since the last clear, decoded.
fn log(r: &Rig) -> Vec<CommandKind> {
    r.smmu
        .commands()
        .into_iter()
        .filter_map(|c| c.kind.ok())
        .collect()
}

fn clear(r: &Rig) {
    r.smmu.clear_command_log();
}

fn is_sync(k: &CommandKind) -> bool {
    matches!(k, CommandKind::Sync { .. })
}

/// Stage 1 context for a guest of VM A whose tables are at `ttb0` (IPA).
fn ctx(ttb0: u64, asid: u16) -> GuestContext {
    GuestContext {
        ttb0,
        mair: 0xff,
        asid,
        t0sz: 25,
        tg0: Tg0::Granule4K,
        ips: AddrSize::Bits40,
        record_faults: true,
    }
}

/// VM A's guest memory is identity-mapped in its S2 domain at IPA
/// `GUEST_IPA + i * 4K` → page i.
const GUEST_IPA: u64 = 0x100_0000;
fn ipa_a(i: u64) -> u64 {
    GUEST_IPA + i * 0x1000
}

/// Writes guest stage 1 tables in VM A's pages `l1, l1 + 1, l1 + 2`
/// mapping `va` to IPA of page `target`.
fn guest_tables(r: &Rig, l1: u64, va: u64, target: u64) {
    for p in l1..l1 + 3 {
        r.mem.fill(page_a(p), 0x1000, 0).unwrap();
    }
    let l2i = (va >> 21) & 511;
    let l3i = (va >> 12) & 511;
    r.mem
        .write_u64(
            page_a(l1) + ((va >> 30) & 511) * 8,
            S1Desc::table(ipa_a(l1 + 1)).raw(),
        )
        .unwrap();
    r.mem
        .write_u64(page_a(l1 + 1) + l2i * 8, S1Desc::table(ipa_a(l1 + 2)).raw())
        .unwrap();
    r.mem
        .write_u64(
            page_a(l1 + 2) + l3i * 8,
            S1Desc::page(ipa_a(target), S1Ap::RwAny, 0).raw(),
        )
        .unwrap();
}

/// An S2 domain of VM A with all its memory mapped at GUEST_IPA, attached
/// to `sid`.
fn s2_with_guest_memory(r: &mut Rig, sid: u32) -> DomainId {
    let d = r.s.alloc_s2_domain(vm_a(), false).unwrap();
    r.s.map(vm_a(), d, GUEST_IPA, VM_A_PA, 64, Prot::RW)
        .unwrap();
    r.s.attach(vm_a(), sid, d).unwrap();
    d
}

// ------------------------------------------------------------------ boot

#[test]
fn boots_fail_closed_on_qemu_and_full_models() {
    for cfg in [SmmuConfig::qemu_virt(), SmmuConfig::new()] {
        let r = rig(cfg);
        assert!(
            r.smmu.access_errors().is_empty(),
            "{:?}",
            r.smmu.access_errors()
        );
        let i = r.s.info();
        assert_eq!(i.cr0 & 1, 1, "SMMUEN");
        assert_ne!(i.gbpa & (1 << 20), 0, "GBPA.ABORT");
        // An assigned, unattached stream: valid abort STE, nothing recorded.
        assert_eq!(r.s.ste(SID_A).unwrap().config(), Ok(StreamConfig::Abort));
        assert_eq!(
            r.dev.dma_write(SID_A, None, 0x1000, 4),
            Err(DmaError::Aborted)
        );
        // A StreamID with no level 2 table: terminated too.
        assert!(r.dev.dma_write(0x4321, None, 0x1000, 4).is_err());
        assert_eq!(r.s.ste(0x4321), None);
    }
}

#[test]
fn illegal_command_recovery_on_the_model() {
    let mut r = rig(SmmuConfig::new());
    let f = r.s.self_test_illegal_command().unwrap();
    assert_eq!((f.index, f.opcode), (1, 0));
    assert_eq!(r.s.info().cmd_recovered, 1);
    // Both neighbours of the bad command ran.
    assert_eq!(r.smmu.count_opcode(Opcode::TlbiNsnhAll), 1 + 2);
    let d = r.s.alloc_s2_domain(vm_a(), false).unwrap();
    r.s.attach(vm_a(), SID_A, d).unwrap();
}

// ------------------------------------------------------------------ attach, map

#[test]
fn stage2_translate_unmap_invalidate_and_events() {
    let mut r = rig(SmmuConfig::qemu_virt());
    let d = r.s.alloc_s2_domain(vm_a(), false).unwrap();
    r.s.map(vm_a(), d, 0x20_0000, page_a(5), 2, Prot::RW)
        .unwrap();
    clear(&r);
    let a = r.s.attach(vm_a(), SID_A, d).unwrap();
    assert_eq!(a.update, UpdateKind::Hitless);
    assert_eq!(a.old, None);
    // Attach = STE words 1-3 (unused while abort), CFGI_STE + SYNC, word 0,
    // CFGI_STE + SYNC.
    let l = log(&r);
    assert_eq!(l.len(), 4, "{l:?}");
    assert_eq!(
        l[0],
        CommandKind::CfgiSte {
            sid: SID_A,
            leaf: true
        }
    );
    assert!(is_sync(&l[1]) && is_sync(&l[3]));
    assert_eq!(
        l[2],
        CommandKind::CfgiSte {
            sid: SID_A,
            leaf: true
        }
    );

    assert_eq!(
        r.dev.dma_write(SID_A, None, 0x20_1010, 8),
        Ok(page_a(6) + 0x10)
    );
    clear(&r);
    assert_eq!(r.s.unmap(vm_a(), d, 0x20_0000, 2, UnmapMode::Strict), Ok(2));
    // One range TLBI_S2_IPA (the model has IDR3.RIL) over both pages,
    // one SYNC.
    let l = log(&r);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(
        matches!(l[0], CommandKind::TlbiS2Ipa { vmid: _, scope } if scope.range() == (0x20_0000, 0x2000) && scope.leaf),
        "{l:?}"
    );
    assert!(is_sync(&l[1]));
    assert!(matches!(
        r.dev.dma_write(SID_A, None, 0x20_1010, 4),
        Err(DmaError::Fault {
            id: EventId::FTranslation,
            recorded: true
        })
    ));
    let mut ev = [Event::zeroed(); 4];
    let (n, lost) = r.s.fetch_events(vm_a(), &mut ev);
    assert_eq!((n, lost), (1, 0));
    assert_eq!(ev[0].input_addr(), 0x20_1010);
    assert!(ev[0].s2());
    assert_eq!(ev[0].class(), Ok(EventClass::In));
    assert_eq!(r.s.fetch_events(vm_a(), &mut ev).0, 0);
}

#[test]
fn deferred_unmap_is_stale_until_flush() {
    let mut r = rig(SmmuConfig::new());
    let d = r.s.alloc_s1_domain(vm_a(), false).unwrap();
    r.s.map(vm_a(), d, 0x4000, page_a(1), 1, Prot::RW).unwrap();
    r.s.attach(vm_a(), SID_A, d).unwrap();
    assert_eq!(r.dev.dma_write(SID_A, None, 0x4000, 4), Ok(page_a(1)));
    clear(&r);
    assert_eq!(r.s.unmap(vm_a(), d, 0x4000, 1, UnmapMode::Deferred), Ok(1));
    assert!(log(&r).is_empty(), "deferred: no invalidation");
    assert_eq!(
        r.dev.dma_write(SID_A, None, 0x4000, 4),
        Ok(page_a(1)),
        "stale TLB entry"
    );
    r.s.flush(vm_a(), d).unwrap();
    assert!(matches!(
        log(&r)[0],
        CommandKind::TlbiNhAsid { vmid: 0, .. }
    ));
    assert!(r.dev.dma_write(SID_A, None, 0x4000, 4).is_err());
}

#[test]
fn map_is_all_or_nothing_and_reserved_windows_refuse() {
    let mut r = rig_with(SmmuConfig::new(), |c| {
        c.vm_memory = Some(&[VmWindow {
            vm: 3,
            pa: VM_A_PA,
            size: VM_SIZE as u64,
        }])
    });
    let d = r.s.alloc_s2_domain(vm_a(), false).unwrap();
    r.s.map(vm_a(), d, 0x2000, page_a(2), 1, Prot::RW).unwrap();
    let free = r.s.info().pages_free;
    assert_eq!(
        r.s.map(vm_a(), d, 0x0, page_a(0), 3, Prot::RW),
        Err(Error::AlreadyExists)
    );
    assert_eq!(
        r.s.unmap(vm_a(), d, 0x0, 2, UnmapMode::Strict),
        Ok(0),
        "nothing of the refused map stayed"
    );
    assert_eq!(r.s.info().pages_free, free);
    assert_eq!(
        r.s.map(vm_a(), d, MSI_WINDOW.base, page_a(0), 1, Prot::RW),
        Err(Error::Reserved)
    );
    assert_eq!(
        r.s.map(vm_a(), d, MSI_WINDOW.base - 0x1000, page_a(0), 2, Prot::RW),
        Err(Error::Reserved)
    );
    assert_eq!(
        r.s.map(vm_a(), d, 0x7f_c000_0000, page_a(0), 1, Prot::RW),
        Err(Error::Reserved)
    );
    // Physical memory that is not the VM's.
    assert_eq!(
        r.s.map(vm_a(), d, 0x9000, VM_B_PA, 1, Prot::RW),
        Err(Error::NotPermitted)
    );
    assert_eq!(
        r.s.map(vm_a(), d, 0x9000, TABLES_PA, 1, Prot::RW),
        Err(Error::NotPermitted)
    );
    assert_eq!(
        r.s.map(vm_a(), d, 0x9000, page_a(63), 2, Prot::RW),
        Err(Error::NotPermitted)
    );
    // Malformed.
    assert_eq!(
        r.s.map(vm_a(), d, 0x9001, page_a(0), 1, Prot::RW),
        Err(Error::Invalid)
    );
    assert_eq!(
        r.s.map(vm_a(), d, 0x9000, page_a(0), 0, Prot::RW),
        Err(Error::Invalid)
    );
    assert_eq!(
        r.s.map(vm_a(), d, 0x9000, page_a(0), 513, Prot::RW),
        Err(Error::Invalid)
    );
    assert_eq!(
        r.s.map(vm_a(), d, 1 << 39, page_a(0), 1, Prot::RW),
        Err(Error::Invalid)
    );
    assert_eq!(r.s.info().pages_free, free);
}

#[test]
fn table_pages_exhaust_with_no_space_and_come_back() {
    let mut r = rig(SmmuConfig::new());
    let d = r.s.alloc_s2_domain(vm_a(), false).unwrap();
    // Each 1 GiB apart: an L2 and an L3 table per mapping.
    let mut n = 0u64;
    let err = loop {
        match r.s.map(vm_a(), d, n << 30, page_a(0), 1, Prot::RO) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 200);
    };
    assert_eq!(err, Error::NoSpace);
    r.s.destroy_domain(vm_a(), d).unwrap();
    let i = r.s.info();
    assert!(i.pages_free > 100, "tables freed: {} free", i.pages_free);
}

#[test]
fn replace_kinds_and_fault_duty() {
    let mut r = rig(SmmuConfig::new());
    let s1a = r.s.alloc_s1_domain(vm_a(), true).unwrap();
    let s1b = r.s.alloc_s1_domain(vm_a(), false).unwrap();
    r.s.map(vm_a(), s1a, 0x1000, page_a(1), 1, Prot::RW)
        .unwrap();
    r.s.map(vm_a(), s1b, 0x1000, page_a(2), 1, Prot::RW)
        .unwrap();
    r.s.attach(vm_a(), SID_A, s1a).unwrap();
    assert_eq!(r.dev.dma_write(SID_A, None, 0x1000, 4), Ok(page_a(1)));
    clear(&r);
    let a = r.s.attach(vm_a(), SID_A, s1b).unwrap();
    assert_eq!(a.update, UpdateKind::Hitless);
    assert_eq!(a.old, Some(s1a));
    let duty = a.fault_duty.expect("old domain was fault-capable");
    assert_eq!((duty.domain, duty.sid), (s1a, SID_A));
    // S1 -> S1, fault-capable -> not: S1ContextPtr (word 0) and S1STALLD
    // (word 1; the model's stall model is stall-and-terminate) change.
    // S1STALLD is update-safe: it goes first, then word 0 — hitless, two
    // steps of CFGI_STE + CFGI_CD_ALL (the CDs cached through the old
    // pointer) + SYNC.
    let l = log(&r);
    assert_eq!(l.len(), 6, "{l:?}");
    for step in [0, 3] {
        assert_eq!(
            l[step],
            CommandKind::CfgiSte {
                sid: SID_A,
                leaf: true
            }
        );
        assert_eq!(l[step + 1], CommandKind::CfgiCdAll { sid: SID_A });
    }
    assert_eq!(r.dev.dma_write(SID_A, None, 0x1000, 4), Ok(page_a(2)));
    // Users counts.
    assert_eq!(r.s.destroy_domain(vm_a(), s1b), Err(Error::Busy));
    r.s.destroy_domain(vm_a(), s1a).unwrap();
    assert_eq!(
        r.s.destroy_domain(vm_a(), s1a),
        Err(Error::NotFound),
        "stale handle"
    );
    // S1 -> S2 changes several words: break before make.
    let s2 = r.s.alloc_s2_domain(vm_a(), false).unwrap();
    r.s.map(vm_a(), s2, 0x1000, page_a(3), 1, Prot::RW).unwrap();
    assert_eq!(
        r.s.attach(vm_a(), SID_A, s2).unwrap().update,
        UpdateKind::Breaking
    );
    assert_eq!(r.dev.dma_write(SID_A, None, 0x1000, 4), Ok(page_a(3)));
    // Two streams on one domain.
    r.s.attach(vm_a(), SID_A2, s2).unwrap();
    assert_eq!(r.s.detach(vm_a(), SID_A).unwrap().old, Some(s2));
    assert_eq!(r.s.destroy_domain(vm_a(), s2), Err(Error::Busy));
    r.s.detach(vm_a(), SID_A2).unwrap();
    r.s.destroy_domain(vm_a(), s2).unwrap();
    assert_eq!(
        r.dev.dma_write(SID_A, None, 0x1000, 4),
        Err(DmaError::Aborted)
    );
}

// ------------------------------------------------------------------ ownership

#[test]
fn refused_requests_change_nothing() {
    let mut r = rig(SmmuConfig::new());
    let da = r.s.alloc_s2_domain(vm_a(), false).unwrap();
    r.s.map(vm_a(), da, 0x1000, page_a(1), 1, Prot::RW).unwrap();
    r.s.attach(vm_a(), SID_A, da).unwrap();
    let db = r.s.alloc_s2_domain(vm_b(), false).unwrap();
    let ste = r.s.ste(SID_A).unwrap();
    let before = r.s.info();
    clear(&r);

    let np = Err(Error::NotPermitted);
    assert_eq!(r.s.attach(vm_b(), SID_A, db).map(|_| ()), np);
    assert_eq!(r.s.attach(vm_a(), SID_B, da).map(|_| ()), np);
    assert_eq!(r.s.attach(vm_a(), SID_NOBODY, da).map(|_| ()), np);
    assert_eq!(r.s.detach(vm_b(), SID_A).map(|_| ()), np);
    assert_eq!(r.s.map(vm_b(), da, 0x5000, VM_B_PA, 1, Prot::RW), np);
    assert_eq!(
        r.s.unmap(vm_b(), da, 0x1000, 1, UnmapMode::Strict)
            .map(|_| ()),
        np
    );
    assert_eq!(r.s.destroy_domain(vm_b(), da), np);
    assert_eq!(r.s.bind(vm_b(), SID_A, 0, ctx(0x1000, 1)).map(|_| ()), np);
    assert_eq!(r.s.unbind(vm_b(), SID_A, 0).map(|_| ()), np);
    assert_eq!(r.s.set_vsid(vm_b(), SID_A, 5), np);
    assert_eq!(
        r.s.invalidate(vm_b(), da, &[Command::tlbi_nh_all(0)]),
        (0, np)
    );
    assert_eq!(
        r.s.page_response(vm_a(), &[]).map(|_| ()),
        np,
        "only prq-server"
    );
    // A restarted VM A (new generation) does not own the old one's domain.
    let a_restarted = vm_a().with_generation(Generation(1));
    assert_eq!(r.s.destroy_domain(a_restarted, da), np);
    // The other VM learns nothing: its view of events is empty.
    let mut ev = [Event::zeroed(); 2];
    assert!(r.dev.dma_write(SID_A, None, 0x9000, 4).is_err());
    assert_eq!(r.s.fetch_events(vm_b(), &mut ev).0, 0);
    assert_eq!(r.s.fetch_events(vm_a(), &mut ev).0, 1);

    assert!(
        log(&r).is_empty(),
        "a refused request issued commands: {:?}",
        log(&r)
    );
    assert_eq!(r.s.ste(SID_A).unwrap(), ste);
    let after = r.s.info();
    assert_eq!(
        (after.pages_free, after.domains),
        (before.pages_free, before.domains)
    );
    assert_eq!(r.dev.dma_write(SID_A, None, 0x1000, 4), Ok(page_a(1)));
}

#[test]
fn reclaim_takes_down_a_dead_vm() {
    let mut r = rig(SmmuConfig::new());
    let d = s2_with_guest_memory(&mut r, SID_A);
    guest_tables(&r, 10, 0x40_0000, 20);
    r.s.bind(vm_a(), SID_A, 3, ctx(ipa_a(10), 1)).unwrap();
    let n =
        r.s.alloc_nested_domain(
            vm_a(),
            d,
            NestedConfig {
                cd_table_ipa: ipa_a(30),
                s1cdmax: 0,
                s1fmt: S1Fmt::Linear,
                s1dss: S1Dss::Terminate,
            },
            false,
        )
        .unwrap();
    let _ = n;
    let other = r.s.alloc_s2_domain(vm_b(), false).unwrap();
    // VM A restarted before the supervisor's request arrived: the new
    // generation's domain must survive the reclaim of the old one.
    let a_next = vm_a().with_generation(Generation(1));
    let fresh = r.s.alloc_s2_domain(a_next, false).unwrap();
    let got = r.s.reclaim_dead(vm_a());
    assert_eq!((got.streams, got.binds, got.domains), (1, 1, 2));
    assert_eq!(r.s.ste(SID_A).unwrap().config(), Ok(StreamConfig::Abort));
    assert_eq!(
        r.dev.dma_write(SID_A, Some(3), 0x40_0000, 4),
        Err(DmaError::Aborted)
    );
    let i = r.s.info();
    assert_eq!((i.domains, i.contexts), (2, 0));
    r.s.destroy_domain(a_next, fresh).unwrap();
    r.s.destroy_domain(vm_b(), other).unwrap();
    assert_eq!(
        r.s.info().pages_free,
        r.s.info().pages_total - BOOT_PAGES,
        "only boot-time tables remain"
    );
}

// ------------------------------------------------------------------ binds

#[test]
fn many_pasids_on_a_two_level_cd_table() {
    let mut r = rig(SmmuConfig::new());
    let d = s2_with_guest_memory(&mut r, SID_A);
    // PASIDs in three different leaf tables, each with its own tables.
    let pasids = [
        (1u32, 10u64, 40u64),
        (2, 13, 41),
        (70, 16, 42),
        (4000, 19, 43),
    ];
    let free0 = r.s.info().pages_free;
    for (i, (pasid, l1, target)) in pasids.iter().enumerate() {
        guest_tables(&r, *l1, 0x40_0000, *target);
        assert_eq!(
            r.s.bind(vm_a(), SID_A, *pasid, ctx(ipa_a(*l1), i as u16 + 1)),
            Ok(1)
        );
    }
    let ste = r.s.ste(SID_A).unwrap();
    assert_eq!(ste.config(), Ok(StreamConfig::Nested));
    assert_eq!(ste.s1fmt(), Ok(S1Fmt::TwoLevel4K));
    assert_eq!(ste.s1cdmax(), 12);
    assert_eq!(
        ste.s1dss(),
        Ok(S1Dss::Bypass),
        "no PASID 0: untagged DMA is stage 2 only"
    );
    // L1 table (64 descriptors, one page) + 3 leaves, each also mapped in
    // the context window (an L3 table there, + L2 once).
    let used = free0 - r.s.info().pages_free;
    assert!((4..=7).contains(&used), "{used} pages");
    for (pasid, _, target) in pasids {
        assert_eq!(
            r.dev.dma_write(SID_A, Some(pasid), 0x40_0abc, 4),
            Ok(page_a(target) + 0xabc)
        );
    }
    // Untagged DMA: stage 2 only (IPA → PA).
    assert_eq!(r.dev.dma_write(SID_A, None, ipa_a(5), 4), Ok(page_a(5)));
    // An unbound PASID in an existing leaf: invalid CD.
    assert!(matches!(
        r.dev.dma_write(SID_A, Some(3), 0x40_0000, 4),
        Err(DmaError::Fault {
            id: EventId::CBadCd,
            ..
        })
    ));
    // PASID 0 takes over untagged DMA (S1DSS = SSID0), hitlessly.
    guest_tables(&r, 22, 0x40_0000, 44);
    r.s.bind(vm_a(), SID_A, 0, ctx(ipa_a(22), 9)).unwrap();
    assert_eq!(r.s.ste(SID_A).unwrap().s1dss(), Ok(S1Dss::Ssid0));
    assert_eq!(r.dev.dma_write(SID_A, None, 0x40_0000, 4), Ok(page_a(44)));
    // Out of range and without a stream.
    assert_eq!(
        r.s.bind(vm_a(), SID_A, 1 << 12, ctx(ipa_a(10), 1)),
        Err(Error::Invalid)
    );
    assert_eq!(
        r.s.bind(vm_a(), SID_A2, 1, ctx(ipa_a(10), 1)),
        Err(Error::Invalid),
        "not attached"
    );
    // Unbind everything: the stream is plain S2 again, tables freed.
    for p in [0, 1, 2, 70, 4000] {
        assert_eq!(r.s.unbind(vm_a(), SID_A, p), Ok(0));
    }
    assert_eq!(r.s.ste(SID_A).unwrap().config(), Ok(StreamConfig::S2Trans));
    assert_eq!(r.dev.dma_write(SID_A, None, ipa_a(5), 4), Ok(page_a(5)));
    assert!(
        r.s.info().pages_free >= free0 - 2,
        "only the context window's S2 tables remain"
    );
    // Everything back once the domain goes.
    r.s.detach(vm_a(), SID_A).unwrap();
    r.s.destroy_domain(vm_a(), d).unwrap();
    assert_eq!(r.s.info().pages_free, r.s.info().pages_total - BOOT_PAGES);
}

#[test]
fn bind_users_count_and_last_unbind_command_sequence() {
    let mut r = rig(SmmuConfig::new());
    let d = s2_with_guest_memory(&mut r, SID_A);
    guest_tables(&r, 10, 0x40_0000, 20);
    let c = ctx(ipa_a(10), 7);
    assert_eq!(r.s.bind(vm_a(), SID_A, 5, c), Ok(1));
    clear(&r);
    assert_eq!(
        r.s.bind(vm_a(), SID_A, 5, c),
        Ok(2),
        "second bind counts a user"
    );
    assert_eq!(
        r.s.bind(vm_a(), SID_A, 5, ctx(ipa_a(10), 8)),
        Err(Error::AlreadyExists)
    );
    assert_eq!(r.s.bind_users(vm_a(), SID_A, 5), Ok(2));
    assert_eq!(r.s.unbind(vm_a(), SID_A, 5), Ok(1));
    assert!(
        log(&r).is_empty(),
        "a counted bind/unbind touches no hardware"
    );
    assert_eq!(
        r.dev.dma_write(SID_A, Some(5), 0x40_0000, 4),
        Ok(page_a(20))
    );

    // Keep another PASID bound so the stream stays nested.
    guest_tables(&r, 13, 0x40_0000, 21);
    r.s.bind(vm_a(), SID_A, 6, ctx(ipa_a(13), 9)).unwrap();
    clear(&r);
    assert_eq!(r.s.unbind(vm_a(), SID_A, 5), Ok(0));
    let vmid = r.s.ste(SID_A).unwrap().s2vmid();
    let l = log(&r);
    let cfgi = CommandKind::CfgiCd {
        sid: SID_A,
        ssid: 5,
        leaf: true,
    };
    // CD V = 0 (+ sync), the rest wiped (+ sync), then TLBI_NH_ASID +
    // SYNC, and only then ATC_INV + SYNC (IHI 0070 §4.5.1).
    assert_eq!(l.len(), 8, "{l:?}");
    assert_eq!(l[0], cfgi);
    assert!(is_sync(&l[1]));
    assert_eq!(l[2], cfgi);
    assert!(is_sync(&l[3]));
    assert_eq!(l[4], CommandKind::TlbiNhAsid { vmid, asid: 7 });
    assert!(is_sync(&l[5]));
    assert!(matches!(
        l[6],
        CommandKind::AtcInv {
            sid: SID_A,
            ssid: Some(5),
            size: 52,
            ..
        }
    ));
    assert!(is_sync(&l[7]));
    assert!(r.dev.dma_write(SID_A, Some(5), 0x40_0000, 4).is_err());
    assert_eq!(
        r.dev.dma_write(SID_A, Some(6), 0x40_0000, 4),
        Ok(page_a(21))
    );
    assert_eq!(r.s.unbind(vm_a(), SID_A, 5), Err(Error::NotFound));
    // Detach drops the remaining bind.
    r.s.detach(vm_a(), SID_A).unwrap();
    assert_eq!(r.s.bind_users(vm_a(), SID_A, 6), Err(Error::NotFound));
    assert_eq!(r.s.info().contexts, 0);
    r.s.destroy_domain(vm_a(), d).unwrap();
}

#[test]
fn unbind_of_pasid_0_under_ssid0_invalidates_the_atc_without_a_pasid() {
    let mut r = rig(SmmuConfig::new());
    let _d = s2_with_guest_memory(&mut r, SID_A);
    guest_tables(&r, 10, 0x40_0000, 20);
    guest_tables(&r, 13, 0x40_0000, 21);
    r.s.bind(vm_a(), SID_A, 6, ctx(ipa_a(13), 9)).unwrap();
    r.s.bind(vm_a(), SID_A, 0, ctx(ipa_a(10), 7)).unwrap();
    assert_eq!(r.s.ste(SID_A).unwrap().s1dss(), Ok(S1Dss::Ssid0));
    clear(&r);
    assert_eq!(r.s.unbind(vm_a(), SID_A, 0), Ok(0));
    let atc: Vec<_> = log(&r)
        .into_iter()
        .filter(|k| matches!(k, CommandKind::AtcInv { .. }))
        .collect();
    // CD 0 serves the stream's transactions without a PASID: their ATC
    // entries carry none, so SSV = 0 (IHI 0070 §4.5.1).
    assert!(
        matches!(
            atc[..],
            [CommandKind::AtcInv {
                sid: SID_A,
                ssid: None,
                ..
            }]
        ),
        "{atc:?}"
    );
    clear(&r);
    assert_eq!(r.s.unbind(vm_a(), SID_A, 6), Ok(0));
    assert!(log(&r)
        .iter()
        .any(|k| matches!(k, CommandKind::AtcInv { ssid: Some(6), .. })));
}

#[test]
fn pasids_unsupported_without_substreams() {
    let mut r = rig(SmmuConfig::qemu_virt());
    s2_with_guest_memory(&mut r, SID_A);
    guest_tables(&r, 10, 0x40_0000, 20);
    assert_eq!(
        r.s.bind(vm_a(), SID_A, 1, ctx(ipa_a(10), 1)),
        Err(Error::Unsupported)
    );
    assert_eq!(r.s.bind(vm_a(), SID_A, 0, ctx(ipa_a(10), 1)), Ok(1));
    let ste = r.s.ste(SID_A).unwrap();
    assert_eq!((ste.s1cdmax(), ste.s1fmt()), (0, Ok(S1Fmt::Linear)));
    assert_eq!(r.dev.dma_write(SID_A, None, 0x40_0000, 4), Ok(page_a(20)));
    // Bad contexts.
    let mut bad = ctx(ipa_a(10), 1);
    bad.t0sz = 12;
    assert_eq!(r.s.bind(vm_a(), SID_A, 0, bad), Err(Error::Invalid));
    bad = ctx(ipa_a(10) | 8, 1);
    assert_eq!(r.s.bind(vm_a(), SID_A, 0, bad), Err(Error::Invalid));
}

#[test]
fn nested_domain_with_the_guests_cd_table() {
    let mut r = rig(SmmuConfig::new());
    let d = s2_with_guest_memory(&mut r, SID_A);
    guest_tables(&r, 10, 0x40_0000, 20);
    let mut cd = Cd::zeroed();
    cd.set_t0sz(25)
        .set_tg0(Tg0::Granule4K)
        .set_ir0(Cacheability::WriteBackAlloc)
        .set_or0(Cacheability::WriteBackAlloc)
        .set_sh0(Shareability::InnerShareable)
        .set_epd1(true)
        .set_v(true)
        .set_ips(AddrSize::Bits40)
        .set_aa64(true)
        .set_r(true)
        .set_a(true)
        .set_asid(4)
        .set_ttb0(ipa_a(10))
        .set_mair(0xff);
    for (i, w) in cd.words().iter().enumerate() {
        r.mem.write_u64(page_a(30) + 8 * i as u64, *w).unwrap();
    }
    let cfg = NestedConfig {
        cd_table_ipa: ipa_a(30),
        s1cdmax: 0,
        s1fmt: S1Fmt::Linear,
        s1dss: S1Dss::Terminate,
    };
    let n = r.s.alloc_nested_domain(vm_a(), d, cfg, false).unwrap();
    assert_eq!(
        r.s.attach(vm_a(), SID_A, n).unwrap().update,
        UpdateKind::Hitless
    );
    assert_eq!(r.dev.dma_write(SID_A, None, 0x40_0000, 4), Ok(page_a(20)));
    assert_eq!(
        r.s.destroy_domain(vm_a(), d),
        Err(Error::Busy),
        "parent of a nested domain"
    );
    // The guest's own invalidation, validated: VMID forced, vSID → pSID.
    r.s.set_vsid(vm_a(), SID_A, 0x77).unwrap();
    assert_eq!(
        r.s.set_vsid(vm_a(), SID_A2, 0x77),
        Err(Error::AlreadyExists)
    );
    clear(&r);
    let cmds = [
        Command::tlbi_nh_va(0xdead, 4, 0x40_0000, true),
        Command::cfgi_cd(0x77, 0, true),
        Command::tlbi_nh_all(1),
        Command::atc_inv(0x77, None, 0, 52, true),
    ];
    assert_eq!(r.s.invalidate(vm_a(), d, &cmds), (4, Ok(())));
    let vmid = r.s.ste(SID_A).unwrap().s2vmid();
    let l = log(&r);
    assert!(matches!(l[0], CommandKind::TlbiNhVa { vmid: v, asid: 4, .. } if v == vmid));
    assert_eq!(
        l[1],
        CommandKind::CfgiCd {
            sid: SID_A,
            ssid: 0,
            leaf: true
        }
    );
    assert_eq!(l[2], CommandKind::TlbiNhAll { vmid });
    // The ATC_INV waits for the TLBIs ahead of it to complete.
    assert!(is_sync(&l[3]));
    assert!(matches!(l[4], CommandKind::AtcInv { sid: SID_A, .. }));
    assert!(is_sync(&l[5]) && l.len() == 6, "{l:?}");
    // Forbidden commands stop the batch where they are.
    for bad in [
        Command::cfgi_ste(SID_A, true),
        Command::cfgi_all(),
        Command::tlbi_s2_ipa(1, 0, true),
        Command::tlbi_s12_vmall(1),
        Command::tlbi_nsnh_all(),
        Command::sync(smmuv3::SyncCs::None),
        Command::pri_resp(SID_A, None, 1, PriResponse::Success),
        Command::resume(SID_A, 1, smmuv3::ResumeAction::Retry),
        Command::cfgi_cd(SID_B, 0, true), // vSID of nobody in VM A
        Command::zeroed(),
    ] {
        let batch = [
            Command::tlbi_nh_asid(0, 4),
            bad,
            Command::tlbi_nh_asid(0, 5),
        ];
        let (done, e) = r.s.invalidate(vm_a(), d, &batch);
        assert_eq!(done, 1, "{bad:?}");
        assert!(e.is_err(), "{bad:?}");
    }
    assert_eq!(
        r.s.invalidate(vm_a(), n, &cmds).1,
        Err(Error::Invalid),
        "vIOMMU must be an S2 domain"
    );
    assert_eq!(
        r.s.invalidate(vm_a(), d, &[Command::tlbi_nh_all(0); 65]).1,
        Err(Error::Invalid)
    );
}

#[test]
fn guest_commands_are_rewritten_or_refused() {
    // Property: whatever two words a guest sends, the server either
    // refuses or issues an allowed opcode under the forced VMID.
    let mut r = rig(SmmuConfig::new());
    let d = r.s.alloc_s2_domain(vm_a(), false).unwrap();
    let vmid = 1;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let allowed = [
        Opcode::TlbiNhAll,
        Opcode::TlbiNhAsid,
        Opcode::TlbiNhVa,
        Opcode::TlbiNhVaa,
        Opcode::CfgiCd,
        Opcode::CfgiCdAll,
        Opcode::AtcInv,
    ];
    for i in 0..20_000 {
        let mut w0 = next();
        // Bias towards real opcodes.
        if i % 2 == 0 {
            w0 = (w0 & !0xff)
                | [
                    0x10u64, 0x11, 0x12, 0x13, 0x05, 0x06, 0x40, 0x03, 0x2a, 0x46,
                ][(i / 2) % 10];
        }
        let c = Command::from_words([w0, next()]);
        match r.s.validate_guest_command(vm_a(), vmid, &c) {
            Ok(out) => {
                let op = out.opcode().unwrap();
                assert!(allowed.contains(&op), "{c:?} became {out:?}");
                if matches!(
                    op,
                    Opcode::TlbiNhAll | Opcode::TlbiNhAsid | Opcode::TlbiNhVa | Opcode::TlbiNhVaa
                ) {
                    assert_eq!(out.vmid(), vmid);
                } else {
                    assert!(
                        [SID_A, SID_A2].contains(&out.sid()),
                        "{c:?} reached stream {:#x}",
                        out.sid()
                    );
                }
                assert!(!out.ssec());
            }
            Err(e) => assert!(matches!(e, Error::Invalid | Error::NotFound)),
        }
    }
    let _ = d;
}

// ------------------------------------------------------------------ responses

#[test]
fn page_responses_only_for_prq_server() {
    let mut r = rig(SmmuConfig::new());
    let resp = [
        PageResponse::Pri {
            sid: SID_A,
            ssid: Some(5),
            prgi: 3,
            resp: PriResponse::InvalidRequest,
        },
        PageResponse::Resume {
            sid: SID_A,
            stag: 9,
            action: smmuv3::ResumeAction::Term,
        },
    ];
    assert_eq!(r.s.page_response(vm_a(), &resp), Err(Error::NotPermitted));
    clear(&r);
    assert_eq!(r.s.page_response(prq(), &resp), Ok(2));
    let l = log(&r);
    assert_eq!(
        l[0],
        CommandKind::PriResp {
            sid: SID_A,
            ssid: Some(5),
            prgi: 3,
            resp: PriResponse::InvalidRequest
        }
    );
    assert!(matches!(
        l[1],
        CommandKind::Resume {
            sid: SID_A,
            stag: 9,
            ..
        }
    ));
    assert!(is_sync(&l[2]));
    let bad = [PageResponse::Pri {
        sid: SID_NOBODY,
        ssid: None,
        prgi: 1,
        resp: PriResponse::Success,
    }];
    assert_eq!(r.s.page_response(prq(), &bad), Err(Error::Invalid));
    // QEMU-like: no PRI, no stall.
    let mut q = rig(SmmuConfig::qemu_virt());
    assert_eq!(
        q.s.page_response(prq(), &resp[..1]),
        Err(Error::Unsupported)
    );
    assert_eq!(
        q.s.page_response(prq(), &resp[1..]),
        Err(Error::Unsupported)
    );
}

// ------------------------------------------------------------------ IDL

#[test]
fn the_generated_interface_on_the_server() {
    let mut r = rig(SmmuConfig::qemu_virt());
    let mut idl = IdlServer::new(&mut r.s);
    assert!(idl.check_caller(vm_a(), &[api::IommuCaller::VmmFrontend]));
    assert!(!idl.check_caller(
        TaskId::new(7, Generation(0)),
        &[api::IommuCaller::VmmFrontend]
    ));
    assert!(!idl.check_caller(supervisor(), &[api::IommuCaller::VmmFrontend]));
    let caps = idl.hw_info(vm_a()).unwrap();
    assert!(caps.nesting && caps.ssid_bits == 0 && !caps.pri);
    let d = idl.create_s2_domain(vm_a(), false).unwrap();
    let rw = api::MapPerms::READ | api::MapPerms::WRITE;
    idl.map(vm_a(), d, GUEST_IPA, VM_A_PA, 64 * 4096, rw)
        .unwrap();
    assert_eq!(
        idl.map(vm_a(), d, 0x1000, VM_A_PA, 100, rw),
        Err(api::IommuError::Invalid)
    );
    assert_eq!(
        idl.map(vm_a(), d, MSI_WINDOW.base, VM_A_PA, 4096, rw),
        Err(api::IommuError::AddrInUse),
        "Reserved is EADDRINUSE"
    );
    assert_eq!(
        idl.replace(vm_a(), api::StreamId(SID_A), d),
        Err(api::IommuError::NotFound)
    );
    let a = idl.attach(vm_a(), api::StreamId(SID_A), d).unwrap();
    assert_eq!(
        a,
        api::AttachOutcome {
            old: api::DomainId(0),
            update: api::SteUpdate::Hitless,
            fault_duty: false
        }
    );
    assert_eq!(
        idl.attach(vm_a(), api::StreamId(SID_A), d),
        Err(api::IommuError::Busy)
    );
    assert_eq!(
        idl.attach(vm_b(), api::StreamId(SID_A), d),
        Err(api::IommuError::NotPermitted)
    );
    let cd = api::CdConfig {
        ttb0: ipa_a(10),
        tcr: tcr::value(25, AddrSize::Bits40.raw() as u8),
        mair: 0xff,
        asid: 3,
    };
    let pasid0 = pasid_alloc_api::PasidHandle {
        pasid: pasid_alloc_api::Pasid(0),
        generation: pasid_alloc_api::PasidGen(0),
    };
    assert_eq!(
        idl.bind(vm_a(), api::StreamId(SID_A), pasid0, cd, false),
        Ok(1)
    );
    assert_eq!(
        idl.bind(vm_a(), api::StreamId(SID_A), pasid0, cd, false),
        Ok(2)
    );
    let p0 = pasid_alloc_api::Pasid(0);
    assert_eq!(
        idl.unbind(vm_a(), api::StreamId(SID_A), p0, false),
        Ok(api::UnbindOutcome::StillBound)
    );
    assert_eq!(
        idl.unbind(vm_a(), api::StreamId(SID_A), p0, false),
        Ok(api::UnbindOutcome::Drained)
    );
    assert_eq!(
        idl.unbind(vm_a(), api::StreamId(SID_A), p0, false),
        Ok(api::UnbindOutcome::NotBound)
    );
    assert_eq!(idl.unmap(vm_a(), d, GUEST_IPA, 2 * 4096), Ok(2 * 4096));
    assert_eq!(idl.destroy_domain(vm_a(), d), Err(api::IommuError::Busy));
    idl.detach(vm_a(), api::StreamId(SID_A)).unwrap();
    let counts = r.s.reclaim_dead(vm_a());
    assert_eq!((counts.streams, counts.binds, counts.domains), (0, 0, 1));
}

#[test]
fn tcr_is_checked() {
    let ok = tcr::value(25, 2);
    let cd = |tcr| api::CdConfig {
        ttb0: 0x1000,
        tcr,
        mair: 0,
        asid: 1,
    };
    let g = idl::guest_context(&cd(ok), true).unwrap();
    assert_eq!(
        (g.t0sz, g.tg0, g.ips),
        (25, Tg0::Granule4K, AddrSize::Bits40)
    );
    assert_eq!(
        idl::guest_context(&cd(ok | tcr::EPD0), true),
        Err(Error::Invalid)
    );
    assert_eq!(
        idl::guest_context(&cd(ok & !tcr::EPD1), true),
        Err(Error::Invalid)
    );
    assert_eq!(
        idl::guest_context(&cd(ok | 1 << 40), true),
        Err(Error::Invalid)
    );
    assert_eq!(
        idl::guest_context(&cd(ok & !(3 << tcr::SH0_SHIFT)), true),
        Err(Error::Invalid)
    );
    assert_eq!(
        idl::guest_context(&cd(ok | 3 << tcr::TG0_SHIFT), true),
        Err(Error::Invalid)
    );
}

// ------------------------------------------------------------------ callers

#[test]
fn callers_by_name_and_by_index() {
    let streams: &[(u32, u16)] = &[(0x10, 3), (0x08, 2), (0x20, 4)];
    // Without names: supervisor and prq-server by index, VMs own streams.
    let t = Roles::table(&ServerConfig {
        streams,
        supervisor: 0,
        prq_server: Some(1),
        ..ServerConfig::default()
    });
    assert!(t[0].supervisor && !t[0].vm && !t[0].prq_server);
    assert!(t[1].prq_server && !t[1].vm);
    assert!(t[2].vm && t[3].vm && t[4].vm);
    assert!(!t[5].vm && !t[5].supervisor);
    // With names: by name only (the index fields are not used).
    let names: &[&str] = &[
        "supervisor",
        "iommu-server",
        "vmm-frontend-a",
        "guest-b",
        "idle",
        "vmm-frontend",
        "prq-server",
        "vmm-frontendx",
    ];
    let t = Roles::table(&ServerConfig {
        streams,
        task_names: names,
        supervisor: 3,
        prq_server: Some(2),
        ..ServerConfig::default()
    });
    assert!(t[0].supervisor && !t[3].supervisor);
    assert!(t[6].prq_server && !t[2].prq_server);
    assert!(t[2].vm, "a vmm-frontend instance is a VM");
    assert!(t[3].vm, "a stream owner is a VM");
    assert!(!t[4].vm, "a system task is never a VM, streams or not");
    assert!(t[5].vm && !t[7].vm && !t[1].vm && !t[0].vm);
    assert!(t[8..].iter().all(|r| *r == Roles::default()));

    // The server's caller check and its own role checks use the table.
    let mut r = rig_with(SmmuConfig::qemu_virt(), |c| {
        c.task_names = &["supervisor", "prq-server", "guest-b", "vmm-frontend-a"];
        c.supervisor = 5;
        c.prq_server = None;
    });
    let mut idl = IdlServer::new(&mut r.s);
    let vm = &[api::IommuCaller::VmmFrontend];
    assert!(idl.check_caller(vm_a(), vm) && idl.check_caller(vm_b(), vm));
    assert!(!idl.check_caller(supervisor(), vm) && !idl.check_caller(prq(), vm));
    assert_eq!(r.s.reclaim_dead(vm_a()).domains, 0);
    assert!(r.s.is_prq_server(prq()));
    assert_eq!(r.s.page_response(prq(), &[]), Ok(0));
    assert_eq!(r.s.page_response(vm_a(), &[]), Err(Error::NotPermitted));
}

// ------------------------------------------------------------------ loopback

/// A rig whose server answers the generated client through the loopback
/// kernel (`idl_runtime::testing`): the same `handle` as the task's loop.
/// The client is task `CLIENT` (index 2): VM B, owner of SID_B.
fn loopback(
    cfg: impl FnOnce(&mut ServerConfig<'static>),
) -> (Arc<Mutex<Rig>>, Arc<LoopbackKernel>, api::IommuClient) {
    loopback_on(SmmuConfig::qemu_virt(), cfg)
}

fn loopback_on(
    smmu: SmmuConfig,
    cfg: impl FnOnce(&mut ServerConfig<'static>),
) -> (Arc<Mutex<Rig>>, Arc<LoopbackKernel>, api::IommuClient) {
    assert_eq!(CLIENT, vm_b());
    let rig = Arc::new(Mutex::new(rig_with(smmu, cfg)));
    let served = rig.clone();
    let k = LoopbackKernel::install(move |msg, buf| {
        let mut r = served.lock().unwrap_or_else(|p| p.into_inner());
        iommu_server::handle(&mut r.s, msg, buf);
    });
    let c = api::IommuClient::new(k.server_id());
    (rig, k, c)
}

fn page_b(i: u64) -> u64 {
    VM_B_PA + i * 0x1000
}

#[test]
fn every_operation_through_the_generated_client() {
    let (rig, k, c) = loopback(|_| {});
    let sid = api::StreamId(SID_B);
    let rw = api::MapPerms::READ | api::MapPerms::WRITE;
    let info0 = c.info().unwrap();
    assert_eq!(info0.idr0 & 3, 3);
    assert_eq!(info0.domains, 0);
    assert!(c.hw_info().unwrap().nesting);

    // S2: map, attach (hitless from abort), DMA, strict unmap.
    let s2 = c.create_s2_domain(true).unwrap();
    assert_ne!(s2.0, 0);
    c.map(s2, 0x10_0000, page_b(0), 4 * 4096, rw).unwrap();
    assert_eq!(
        c.map(s2, MSI_WINDOW.base, page_b(0), 4096, rw),
        Err(api::IommuError::AddrInUse)
    );
    let a = c.attach(sid, s2).unwrap();
    assert_eq!(
        (a.old, a.update, a.fault_duty),
        (api::DomainId(0), api::SteUpdate::Hitless, false)
    );
    let dma = |iova| rig.lock().unwrap().dev.dma_write(SID_B, None, iova, 4);
    assert_eq!(dma(0x10_1000), Ok(page_b(1)));
    assert_eq!(c.unmap(s2, 0x10_1000, 4096), Ok(4096));
    assert!(dma(0x10_1000).is_err());

    // Events of the caller's stream, through a write lease.
    let mut out = [api::SmmuEvent { words: [0; 4] }.to_wire(); 4];
    let f = c.fetch_events(&mut out).unwrap();
    assert_eq!((f.count, f.lost), (1, 0));
    let e = Event::from_words(api::SmmuEvent::from_wire(&out[0]).unwrap().words);
    assert_eq!((e.sid(), e.input_addr()), (SID_B, 0x10_1000));
    assert_eq!(c.fetch_events(&mut out).unwrap().count, 0);

    // Deferred unmap: a cached translation stays until flush.
    assert_eq!(dma(0x10_2000), Ok(page_b(2)));
    assert_eq!(c.unmap_deferred(s2, 0x10_2000, 4096), Ok(4096));
    assert_eq!(dma(0x10_2000), Ok(page_b(2)), "stale until flush");
    c.flush(s2).unwrap();
    assert!(dma(0x10_2000).is_err());
    c.fetch_events(&mut out).unwrap();

    // S1: replace reports the old, fault-capable domain.
    let s1 = c.create_s1_domain(false).unwrap();
    c.map(s1, 0x20_0000, page_b(5), 4096, rw).unwrap();
    let a = c.replace(sid, s1).unwrap();
    assert_eq!((a.old, a.fault_duty), (s2, true));
    assert_eq!(dma(0x20_0000), Ok(page_b(5)));
    let a = c.replace(sid, s2).unwrap();
    assert_eq!((a.old, a.fault_duty), (s1, false));
    c.destroy_domain(s1).unwrap();

    // Nested over the S2 domain: hitless, guest CD table not in the
    // context window.
    let vste = |ipa| api::NestedSte {
        cd_table_ipa: ipa,
        s1cdmax: 0,
        s1fmt: api::CdTableFormat::Linear,
        s1dss: api::SubstreamDefault::Terminate,
    };
    assert_eq!(
        c.create_nested_domain(s2, vste(CTX_WINDOW.base), false),
        Err(api::IommuError::NotPermitted)
    );
    let n = c.create_nested_domain(s2, vste(0x10_0000), false).unwrap();
    let a = c.replace(sid, n).unwrap();
    assert_eq!((a.old, a.update), (s2, api::SteUpdate::Hitless));
    assert_eq!(c.destroy_domain(s2), Err(api::IommuError::Busy));
    c.replace(sid, s2).unwrap();
    c.destroy_domain(n).unwrap();

    // vSIDs, binds, guest invalidation.
    c.set_vsid(sid, 0x77).unwrap();
    let p0 = pasid_alloc_api::Pasid(0);
    assert_eq!(c.bind_users(sid, p0), Err(api::IommuError::NotFound));
    let cd = api::CdConfig {
        ttb0: 0x10_0000,
        tcr: tcr::value(25, AddrSize::Bits40.raw() as u8),
        mair: 0xff,
        asid: 4,
    };
    let h0 = pasid_alloc_api::PasidHandle {
        pasid: p0,
        generation: pasid_alloc_api::PasidGen(0),
    };
    let in_window = api::CdConfig {
        ttb0: CTX_WINDOW.base,
        ..cd
    };
    assert_eq!(
        c.bind(sid, h0, in_window, false),
        Err(api::IommuError::NotPermitted)
    );
    assert_eq!(c.bind(sid, h0, cd, false), Ok(1));
    assert_eq!(c.bind_users(sid, p0), Ok(1));
    let cmds = [
        Command::tlbi_nh_asid(0, 4),
        Command::cfgi_cd(0x77, 0, true),
        Command::cfgi_cd(SID_B, 0, true),
    ]
    .map(|c| api::SmmuCmd { words: c.words() }.to_wire());
    let o = c.invalidate(s2, &cmds).unwrap();
    assert_eq!(
        (o.done, o.status),
        (2, api::InvalidateStatus::Rejected),
        "the guest names its vSID; the pSID is not one of its vSIDs any more"
    );
    assert_eq!(c.unbind(sid, p0, false), Ok(api::UnbindOutcome::Drained));

    // Detach reports the old domain.
    let a = c.detach(sid).unwrap();
    assert_eq!((a.old, a.fault_duty), (s2, true));
    assert!(dma(0x10_0000).is_err());
    assert!(k.faults().is_empty());
    c.destroy_domain(s2).unwrap();
    let info = c.info().unwrap();
    assert_eq!((info.domains, info.contexts), (0, 0));
    assert!(info.syncs > info0.syncs && info.commands > info0.commands);
}

#[test]
fn memory_query_refuses_what_the_kernel_does_not_confirm() {
    // The loopback kernel owns no memory for anyone: every PA is foreign.
    let (rig, _k, c) = loopback(|c| c.memory_query = true);
    let d = c.create_s2_domain(false).unwrap();
    let free = c.info().unwrap().pages_free;
    assert_eq!(
        c.map(d, 0x10_0000, page_b(0), 4096, api::MapPerms::READ),
        Err(api::IommuError::NotPermitted)
    );
    assert_eq!(c.info().unwrap().pages_free, free, "nothing was built");
    assert_eq!(c.unmap(d, 0x10_0000, 4096), Ok(0));
    drop(rig);
}

#[test]
fn an_unavailable_server_answers_every_request() {
    let k = LoopbackKernel::install(|msg, buf| {
        iommu_server::idl::answer_unavailable(msg, buf, Error::HardwareError)
    });
    let c = api::IommuClient::new(k.server_id());
    assert_eq!(c.hw_info(), Err(api::IommuError::Io));
    assert_eq!(
        c.map(api::DomainId(1), 0, 0, 4096, api::MapPerms::READ),
        Err(api::IommuError::Io)
    );
    let mut out = [api::SmmuEvent { words: [0; 4] }.to_wire(); 2];
    assert_eq!(c.fetch_events(&mut out), Err(api::IommuError::Io));
    assert!(k.faults().is_empty());
}

#[test]
fn pasids_are_unsupported_without_substreams_and_checked_with_one() {
    let cd = api::CdConfig {
        ttb0: 0x10_0000,
        tcr: tcr::value(25, AddrSize::Bits40.raw() as u8),
        mair: 0xff,
        asid: 4,
    };
    let h5 = pasid_alloc_api::PasidHandle {
        pasid: pasid_alloc_api::Pasid(5),
        generation: pasid_alloc_api::PasidGen(1),
    };
    let sid = api::StreamId(SID_B);
    for (smmu, want) in [
        // QEMU: no substreams, whoever holds the PASID.
        (SmmuConfig::qemu_virt(), api::IommuError::Unsupported),
        // Substreams, but pasid-alloc (here: no one answers) does not
        // vouch for the caller: fail closed.
        (SmmuConfig::new(), api::IommuError::NotPermitted),
    ] {
        let (_rig, _k, c) = loopback_on(smmu, |_| {});
        let d = c.create_s2_domain(false).unwrap();
        c.attach(sid, d).unwrap();
        assert_eq!(c.bind(sid, h5, cd, false), Err(want));
        assert_eq!(
            c.bind_users(sid, pasid_alloc_api::Pasid(5)),
            Err(api::IommuError::NotFound)
        );
    }
}

// ------------------------------------------------------------------ defunct PASIDs

/// Free before unbind (`server/defunct.rs`): a defunct PASID's binds go on
/// every stream, whatever their users count; PASID 0 is never defunct; a
/// new pasid-alloc incarnation costs every PASID bind.
#[test]
fn defunct_pasid_is_unbound_everywhere_and_a_new_pasid_alloc_costs_every_bind() {
    let mut r = rig(SmmuConfig::new());
    s2_with_guest_memory(&mut r, SID_A);
    s2_with_guest_memory(&mut r, SID_A2);
    guest_tables(&r, 10, 0x40_0000, 20);
    guest_tables(&r, 13, 0x40_0000, 21);
    let c = ctx(ipa_a(10), 7);
    assert_eq!(r.s.bind(vm_a(), SID_A, 5, c), Ok(1));
    assert_eq!(r.s.bind(vm_a(), SID_A, 5, c), Ok(2));
    assert_eq!(r.s.bind(vm_a(), SID_A2, 5, c), Ok(1));
    assert_eq!(r.s.bind(vm_a(), SID_A, 6, ctx(ipa_a(13), 9)), Ok(1));
    assert_eq!(
        r.dev.dma_write(SID_A2, Some(5), 0x40_0000, 4),
        Ok(page_a(20))
    );
    assert_eq!(r.s.unbind_pasid(0), Err(Error::Invalid));
    assert_eq!(r.s.unbind_pasid(5), Ok(2), "both streams, all users");
    assert!(!r.s.pasid_bound(5));
    assert!(r.dev.dma_write(SID_A, Some(5), 0x40_0000, 4).is_err());
    assert!(r.dev.dma_write(SID_A2, Some(5), 0x40_0000, 4).is_err());
    assert_eq!(r.s.unbind(vm_a(), SID_A, 5), Err(Error::NotFound));
    assert_eq!(r.s.unbind_pasid(5), Ok(0), "nothing left: drained");
    // PASID 6 untouched.
    assert_eq!(
        r.dev.dma_write(SID_A, Some(6), 0x40_0000, 4),
        Ok(page_a(21))
    );

    let alloc = TaskId::new(1, Generation(0));
    assert_eq!(r.s.pasid_alloc_seen(alloc), 0, "first sight");
    assert_eq!(r.s.pasid_alloc_seen(alloc), 0, "same incarnation");
    r.s.bind(vm_a(), SID_A, 0, ctx(ipa_a(13), 3)).unwrap();
    assert_eq!(r.s.pasid_alloc_seen(TaskId::new(1, Generation(1))), 1);
    assert!(!r.s.pasid_bound(6));
    assert!(r.dev.dma_write(SID_A, Some(6), 0x40_0000, 4).is_err());
    assert_eq!(r.s.bind_users(vm_a(), SID_A, 0), Ok(1), "PASID 0 stays");
}
