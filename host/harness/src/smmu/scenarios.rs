//! Scenarios (`cargo xtask trace iommu-…`) and the constants they share.

use super::*;
use crate::Harness;
use idl_runtime::Fixed;
use iommu_server_api::{self as api, IommuError};
use pasid_alloc_api::{Pasid, PasidGen, PasidHandle};
use smmuv3::pgtable::{S1Ap, S1Desc};
use smmuv3_model::{DmaError, SmmuConfig};
use std::fmt::Debug;
use userlib::{log, sys_lookup_slot, sys_recv_notification};

/// The StreamIDs of the rigs: QEMU's edu (the runner VM's device) and its
/// NIC (a second VM's).
pub const SID_A: u32 = 0x10;
pub const SID_B: u32 = 0x08;
/// An IOVA the VMs map in stage 2 domains.
pub const IOVA: u64 = 0x20_0000;
/// Where a VM maps its whole RAM in its S2 domain for guest stage 1 use:
/// RAM page i is IPA `GUEST_IPA + i * 4K`.
pub const GUEST_IPA: u64 = 0x100_0000;
/// A guest virtual address its stage 1 tables map.
pub const GUEST_VA: u64 = 0x40_0000;

/// Read and write.
pub fn rw() -> api::MapPerms {
    api::MapPerms::READ | api::MapPerms::WRITE
}

/// IPA of RAM page `i` under the `GUEST_IPA` mapping.
pub fn guest_ipa(i: u64) -> u64 {
    GUEST_IPA + i * 0x1000
}

/// A guest stage 1 context: tables at `ttb0` (an IPA), 39-bit VA, 40-bit
/// IPA, 4 KiB granule, write-back walks, MAIR index 0 normal memory.
pub fn guest_cd(ttb0: u64, asid: u16) -> api::CdConfig {
    api::CdConfig {
        ttb0,
        tcr: iommu_server::idl::tcr::value(25, 2),
        mair: 0xff,
        asid,
    }
}

/// A guest command for `invalidate`'s lease.
pub fn guest_cmd(c: smmuv3::Command) -> idl_runtime::WireOf<api::SmmuCmd> {
    api::SmmuCmd {
        words: [c.word(0), c.word(1)],
    }
    .to_wire()
}

/// Checks a VM script makes; the scenario ends `shutdown(0)` only if all
/// held. A failed one is logged (and so in the trace).
struct Checks(bool);

impl Checks {
    pub(super) fn that(&mut self, what: &str, good: bool, got: impl Debug) {
        if !good {
            log!("FAILED {}: got {:?}", what, got);
            self.0 = false;
        }
    }

    pub(super) fn end(self) -> ! {
        userlib::sys_shutdown(if self.0 { 0 } else { 1 })
    }
}

/// Create a domain, map two pages, attach a stream, DMA through it.
pub fn attach_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let d = c.create_s2_domain(false);
            ok.that("create", d.is_ok(), d);
            let d = d.unwrap_or(api::DomainId(0));
            let m = c.map(d, IOVA, vm.ram.page(1), 0x2000, rw());
            ok.that("map", m.is_ok(), m);
            let a = c.attach(api::StreamId(SID_A), d);
            ok.that(
                "attach hitless",
                matches!(a, Ok(o) if o.update == api::SteUpdate::Hitless),
                a,
            );
            let r = vm.dma.write(SID_A, None, IOVA + 0x1010, b"attach");
            ok.that("DMA lands in page 2", r == Ok(vm.ram.page(2) + 0x10), r);
            ok.end()
        })
        .harness(seed)
}

/// The attach of `attach_scenario` on an SMMU that consumes commands only
/// between task steps: the driver's waiter sleeps on the cmd-sync
/// interrupt (or its 1 ms timer) until each SYNC completes.
pub fn sync_wait_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .completion(Completion::BetweenSteps)
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
            let a = c.attach(api::StreamId(SID_A), d);
            ok.that("map, attach", m.is_ok() && a.is_ok(), (m, a));
            let r = vm.dma.write(SID_A, None, IOVA, b"waited");
            ok.that("DMA lands in page 1", r == Ok(vm.ram.page(1)), r);
            ok.end()
        })
        .harness(seed)
}

/// Map, DMA, unmap (range TLBI_S2_IPA, one SYNC), DMA faults.
pub fn map_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let a = c.attach(api::StreamId(SID_A), d);
            ok.that("attach", a.is_ok(), a);
            let r = vm.dma.write(SID_A, None, IOVA, b"early");
            ok.that("nothing mapped yet", r.is_err(), r);
            let m = c.map(d, IOVA, vm.ram.page(1), 0x3000, rw());
            ok.that("map", m.is_ok(), m);
            let r = vm.dma.write(SID_A, None, IOVA + 0x2000, b"mapped");
            ok.that("DMA lands in page 3", r == Ok(vm.ram.page(3)), r);
            let u = c.unmap(d, IOVA, 0x3000);
            ok.that("unmap 3 pages", u == Ok(0x3000), u);
            let r = vm.dma.write(SID_A, None, IOVA + 0x2000, b"late");
            ok.that("DMA after unmap faults", r.is_err(), r);
            ok.end()
        })
        .harness(seed)
}

/// Bind a PASID twice (the second only counts), DMA with it, unbind twice
/// (the last clears the CD and invalidates).
pub fn bind_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .pasid_alloc(&[5])
        .max_pasid_bits(8)
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let sid = api::StreamId(SID_A);
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d, GUEST_IPA, vm.ram.pa, 0x4_0000, rw());
            ok.that("map RAM", m.is_ok(), m);
            let a = c.attach(sid, d);
            ok.that("attach", a.is_ok(), a);
            let Some(pasids) = vm.pasids.as_ref() else {
                panic!("no pasid-alloc")
            };
            let h = pasids.alloc();
            ok.that("alloc", h.is_ok(), h);
            let Ok(h) = h else { ok.end() };
            vm.ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
            let cd = guest_cd(guest_ipa(10), 7);
            let b = c.bind(sid, h, cd, false);
            ok.that("bind", b == Ok(1), b);
            let b = c.bind(sid, h, cd, false);
            ok.that("second bind counts", b == Ok(2), b);
            let r = vm
                .dma
                .write(SID_A, Some(h.pasid.0), GUEST_VA + 0x10, b"pasid");
            ok.that("DMA with the PASID", r == Ok(vm.ram.page(20) + 0x10), r);
            let u = c.unbind(sid, h.pasid, false);
            ok.that("unbind", u == Ok(api::UnbindOutcome::StillBound), u);
            let u = c.unbind(sid, h.pasid, false);
            ok.that("last unbind", u == Ok(api::UnbindOutcome::Drained), u);
            let r = vm
                .dma
                .write(SID_A, Some(h.pasid.0), GUEST_VA + 0x10, b"gone");
            ok.that("DMA after unbind fails", r.is_err(), r);
            let f = pasids.free(h);
            ok.that("free", f.is_ok(), f);
            ok.end()
        })
        .harness(seed)
}

/// Attach to one S2 domain, replace with another (break-before-make: VMID
/// and S2TTB both change), detach (abort), destroy both.
pub fn replace_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let sid = api::StreamId(SID_A);
            let d1 = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let d2 = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m1 = c.map(d1, IOVA, vm.ram.page(1), 0x1000, rw());
            let m2 = c.map(d2, IOVA, vm.ram.page(2), 0x1000, rw());
            ok.that("maps", m1.is_ok() && m2.is_ok(), (m1, m2));
            let a = c.attach(sid, d1);
            ok.that("attach", a.is_ok(), a);
            let r = vm.dma.write(SID_A, None, IOVA, b"one");
            ok.that("DMA through d1", r == Ok(vm.ram.page(1)), r);
            let p = c.replace(sid, d2);
            ok.that(
                "replace breaks before make",
                matches!(p, Ok(o) if o.old == d1 && o.update == api::SteUpdate::BreakBeforeMake),
                p,
            );
            let r = vm.dma.write(SID_A, None, IOVA, b"two");
            ok.that("DMA through d2", r == Ok(vm.ram.page(2)), r);
            let busy = c.destroy_domain(d2);
            ok.that("attached domain busy", busy == Err(IommuError::Busy), busy);
            let x = c.detach(sid);
            ok.that("detach", matches!(x, Ok(o) if o.old == d2), x);
            let r = vm.dma.write(SID_A, None, IOVA, b"none");
            ok.that("detached stream aborts", r == Err(DmaError::Aborted), r);
            let g1 = c.destroy_domain(d1);
            let g2 = c.destroy_domain(d2);
            ok.that("destroy", g1.is_ok() && g2.is_ok(), (g1, g2));
            ok.end()
        })
        .harness(seed)
}

/// A guest changes its stage 1 table: the device keeps the old page until
/// the guest's TLBI_NH_VA goes through `invalidate` (VMID forced, one
/// SYNC); a command the guest may not issue stops the batch.
pub fn invalidate_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .max_pasid_bits(0)
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let sid = api::StreamId(SID_A);
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d, GUEST_IPA, vm.ram.pa, 0x4_0000, rw());
            let a = c.attach(sid, d);
            ok.that("map, attach", m.is_ok() && a.is_ok(), (m, a));
            vm.ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
            let pasid0 = PasidHandle {
                pasid: Pasid(0),
                generation: PasidGen(0),
            };
            let b = c.bind(sid, pasid0, guest_cd(guest_ipa(10), 7), false);
            ok.that("bind the stream's context", b == Ok(1), b);
            let r = vm.dma.write(SID_A, None, GUEST_VA, b"old");
            ok.that("DMA via guest stage 1", r == Ok(vm.ram.page(20)), r);
            // The guest remaps its VA without telling the SMMU.
            let pte = vm.ram.page(12) + ((GUEST_VA >> 12) & 511) * 8;
            let desc = S1Desc::page(guest_ipa(21), S1Ap::RwAny, 0).raw();
            vm.ram.write(pte, &desc.to_le_bytes());
            log!("guest: VA {:#x} -> RAM page 21 now, no TLBI yet", GUEST_VA);
            let r = vm.dma.write(SID_A, None, GUEST_VA, b"stale");
            ok.that("stale until invalidated", r == Ok(vm.ram.page(20)), r);
            let tlbi = [guest_cmd(smmuv3::Command::tlbi_nh_va(0, 7, GUEST_VA, true))];
            let i = c.invalidate(d, &tlbi);
            ok.that(
                "guest TLBI_NH_VA",
                matches!(i, Ok(o) if o.done == 1 && o.status == api::InvalidateStatus::Complete),
                i,
            );
            let r = vm.dma.write(SID_A, None, GUEST_VA, b"new");
            ok.that("DMA reaches the new page", r == Ok(vm.ram.page(21)), r);
            let batch = [
                guest_cmd(smmuv3::Command::tlbi_nh_asid(0, 7)),
                guest_cmd(smmuv3::Command::cfgi_ste(SID_A, true)),
                guest_cmd(smmuv3::Command::tlbi_nh_asid(0, 8)),
            ];
            let i = c.invalidate(d, &batch);
            ok.that(
                "CFGI_STE refused, batch stopped",
                matches!(i, Ok(o) if o.done == 1 && o.status == api::InvalidateStatus::Rejected),
                i,
            );
            ok.end()
        })
        .harness(seed)
}

/// The server is killed while the VM waits; the real supervisor restarts
/// it; the VM's next request gets the dead code (ServerDied) and the new
/// server has come up fail-closed: the stream aborts, old domains are gone.
pub fn restart_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let sid = api::StreamId(SID_A);
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
            let a = c.attach(sid, d);
            ok.that("map, attach", m.is_ok() && a.is_ok(), (m, a));
            let r = vm.dma.write(SID_A, None, IOVA, b"before");
            ok.that("DMA before", r == Ok(vm.ram.page(1)), r);
            // The test kills the server now (everything is blocked), then
            // wakes this task.
            log!("waiting");
            sys_recv_notification(1);
            let m = c.map(d, IOVA + 0x1000, vm.ram.page(2), 0x1000, rw());
            ok.that(
                "dead server: ServerDied",
                m == Err(IommuError::ServerDied),
                m,
            );
            let r = vm.dma.write(SID_A, None, IOVA, b"after");
            ok.that(
                "fail closed: the stream aborts",
                r == Err(DmaError::Aborted),
                r,
            );
            let a = c.attach(sid, d);
            ok.that("old domain gone", a == Err(IommuError::NotFound), a);
            let d2 = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d2, IOVA, vm.ram.page(3), 0x1000, rw());
            let a = c.attach(sid, d2);
            ok.that("set up again", m.is_ok() && a.is_ok(), (m, a));
            let r = vm.dma.write(SID_A, None, IOVA, b"again");
            ok.that("DMA again", r == Ok(vm.ram.page(3)), r);
            ok.end()
        })
        .harness(seed)
        .at_step(10_000, crate::Action::kill("iommu-server"))
        .at_step(10_001, crate::Action::Post("vm".into(), 1))
}

/// A second VM asks for the first VM's stream and domain: every request is
/// refused and issues nothing.
pub fn foreign_scenario(seed: u64) -> Harness {
    // Domain ids are slot | generation << 8: the owner's first domain is
    // 0x1_0100: incarnation 1, slot generation 1, slot 0 (the intruder
    // learns nothing it could not guess).
    const OWNERS: api::DomainId = api::DomainId(0x1_0100);
    IommuRig::new(SmmuConfig::new())
        .vm("intruder", 3, &[SID_B], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            // Wait for the owner to set up.
            sys_recv_notification(1);
            let mark = vm.bus.mark();
            let mine = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let a = c.attach(api::StreamId(SID_A), mine);
            ok.that("attach its stream", a == Err(IommuError::NotPermitted), a);
            let m = c.map(OWNERS, IOVA, vm.ram.page(1), 0x1000, rw());
            ok.that("map its domain", m == Err(IommuError::NotPermitted), m);
            let m = c.map(mine, IOVA, ram_pa(1), 0x1000, rw());
            ok.that("map its memory", m == Err(IommuError::NotPermitted), m);
            let x = c.detach(api::StreamId(SID_A));
            ok.that("detach its stream", x == Err(IommuError::NotPermitted), x);
            let g = c.destroy_domain(OWNERS);
            ok.that("destroy its domain", g == Err(IommuError::NotPermitted), g);
            let quiet = vm.bus.since(mark).is_empty();
            ok.that("no command, no STE store", quiet, vm.bus.since(mark));
            ok.end()
        })
        .vm("vm", 4, &[SID_A], |vm: Vm| {
            let c = &vm.iommu;
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let _ = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
            let _ = c.attach(api::StreamId(SID_A), d);
            if let Some(intruder) = sys_lookup_slot("intruder") {
                userlib::sys_post(intruder, 1);
            }
        })
        .slot("vm", "intruder")
        .harness(seed)
}
