//! Named scenarios of the PASID life (`cargo xtask trace pasid-…`, the
//! diagrams of docs/pasids.md): the real pasid-alloc and iommu-server on the
//! SMMUv3 model, a VM task. Each ends with shutdown 0 when every step
//! behaved as docs/pasids.md says (a wrong answer logs `FAILED …` and ends
//! with 1).

use crate::smmu::{guest_cd, guest_ipa, rw, IommuRig, Vm, GUEST_VA, SID_A};
use crate::Harness;
use iommu_server_api::{self as api, StreamId};
use pasid_alloc_api::{Pasid, PasidAllocError, PasidGen, PasidHandle};
use smmuv3_model::SmmuConfig;
use std::fmt::Debug;
use userlib::log;

struct Checks(bool);

impl Checks {
    fn that(&mut self, what: &str, good: bool, got: impl Debug) {
        if !good {
            log!("FAILED {}: got {:?}", what, got);
            self.0 = false;
        }
    }

    fn end(self) -> ! {
        userlib::sys_shutdown(if self.0 { 0 } else { 1 })
    }
}

fn h(p: u32, g: u32) -> PasidHandle {
    PasidHandle {
        pasid: Pasid(p),
        generation: PasidGen(g),
    }
}

/// An S2 domain over the VM's RAM, attached to SID_A, and a guest stage 1
/// (GUEST_VA → RAM page 20) for binds.
fn setup(vm: &Vm, ok: &mut Checks) -> api::CdConfig {
    let c = &vm.iommu;
    let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
    let m = c.map(d, guest_ipa(0), vm.ram.pa, 0x4_0000, rw());
    ok.that("map RAM", m.is_ok(), m);
    let a = c.attach(StreamId(SID_A), d);
    ok.that("attach", a.is_ok(), a);
    vm.ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
    guest_cd(guest_ipa(10), 7)
}

fn rig() -> IommuRig {
    IommuRig::new(SmmuConfig::new().ssidsize(8))
        .pasid_alloc(&[])
        .max_pasid_bits(8)
}

/// Alloc within the quota (2), the third refused, usage.
pub fn alloc_scenario(seed: u64) -> Harness {
    rig()
        .pasid_quota(2)
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let p = vm.pasids.as_ref().expect("pasid-alloc");
            let a = p.alloc();
            ok.that("alloc", a == Ok(h(1, 0)), a);
            let b = p.alloc();
            ok.that("alloc", b == Ok(h(2, 0)), b);
            let c = p.alloc();
            ok.that("over quota", c == Err(PasidAllocError::NoSpace), c);
            let u = p.usage();
            ok.that("usage", u.map(|u| u.allocated) == Ok(2), u);
            ok.end()
        })
        .harness(seed)
}

/// Bind: iommu-server asks pasid-alloc `owner_of` before writing the CD.
pub fn bind_scenario(seed: u64) -> Harness {
    rig()
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let cd = setup(&vm, &mut ok);
            let p = vm.pasids.as_ref().expect("pasid-alloc");
            let a = p.alloc();
            ok.that("alloc", a.is_ok(), a);
            let Ok(a) = a else { ok.end() };
            let b = vm.iommu.bind(StreamId(SID_A), a, cd, false);
            ok.that("bind", b == Ok(1), b);
            let r = vm.dma.write(SID_A, Some(a.pasid.0), GUEST_VA, b"x");
            ok.that("DMA through the PASID", r == Ok(vm.ram.page(20)), r);
            ok.end()
        })
        .harness(seed)
}

/// Free before unbind: the PASID is defunct at once; pasid-alloc posts
/// iommu-server, which pulls `next_defunct`, clears the CD (CFGI_CD, TLBI,
/// SYNC) and calls `mark_drained`; DMA through the PASID faults; the old
/// owner's unbind is NotBound.
pub fn free_before_unbind_scenario(seed: u64) -> Harness {
    rig()
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let cd = setup(&vm, &mut ok);
            let p = vm.pasids.as_ref().expect("pasid-alloc");
            let Ok(a) = p.alloc() else { ok.end() };
            let b = vm.iommu.bind(StreamId(SID_A), a, cd, false);
            ok.that("bind", b == Ok(1), b);
            let f = p.free(a);
            ok.that("free while bound", f.is_ok(), f);
            let r = vm.dma.write(SID_A, Some(a.pasid.0), GUEST_VA, b"y");
            ok.that("DMA after free faults", r.is_err(), r);
            let u = vm.iommu.unbind(StreamId(SID_A), a.pasid, false);
            ok.that("late unbind", u == Ok(api::UnbindOutcome::NotBound), u);
            ok.end()
        })
        .harness(seed)
}

/// Reclaim: a space of one PASID; freed, drained, handed out again in the
/// next generation; the old handle is NotFound.
pub fn reclaim_scenario(seed: u64) -> Harness {
    rig()
        .pasid_space_bits(1)
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let p = vm.pasids.as_ref().expect("pasid-alloc");
            let a = p.alloc();
            ok.that("alloc", a == Ok(h(1, 0)), a);
            let f = p.free(h(1, 0));
            ok.that("free", f.is_ok(), f);
            let b = p.alloc();
            ok.that("realloc, next generation", b == Ok(h(1, 1)), b);
            let s = p.free(h(1, 0));
            ok.that("stale handle", s == Err(PasidAllocError::NotFound), s);
            ok.end()
        })
        .harness(seed)
}
