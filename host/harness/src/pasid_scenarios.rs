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

/// What the device showed at the moment a PASID came back to a new owner
/// (the explorer's I3 verdict, `harness::explore`), filled in by
/// [`free_before_unbind_faults`]'s second VM.
#[derive(Clone, Debug, Default)]
pub struct Reuse {
    pub pasid: u32,
    pub generation: u32,
    /// The stream the old owner had bound the PASID on.
    pub old_stream: u32,
    /// Groups of the PASID on the old stream the device still waited on.
    pub pending: Vec<smmuv3_model::PriGroup>,
    /// A DMA through the old binding (old stream, the PASID).
    pub old_dma: Option<Result<u64, smmuv3_model::DmaError>>,
    /// The same DMA after the new owner bound and used the PASID.
    pub old_dma_later: Option<Result<u64, smmuv3_model::DmaError>>,
    /// PRI_RESPs for the old stream and the PASID the device got after
    /// the reuse (commands consumed from then until the new owner's end).
    pub responses_after: Vec<u64>,
}

/// Shared between a run's VM and the explorer's verdict.
pub type ReuseLog = std::sync::Arc<std::sync::Mutex<Vec<Reuse>>>;

/// Free before unbind, with pending faults and a second VM waiting for the
/// PASID (the real pasid-alloc, iommu-server and prq-server on the model;
/// the space is one PASID, so a reuse is the same PASID). vm1 binds PASID
/// 1 on its stream (fault-capable, its guest stage 1 maps `GUEST_VA`), a
/// DMA lands in its page, its device raises a group that is delivered
/// (unanswered) and one that stays queued; then vm1 frees the PASID while
/// still bound and answers the delivered cookie (accepted if prq-server
/// still holds it, else refused as revoked). vm2 asks for a PASID until it
/// gets one: only after iommu-server unbound PASID 1 everywhere, prq-server
/// drained it (both groups INVALID once) and `mark_drained` returned it.
/// At that moment vm2 records what the device shows (`reuses`): no group
/// of the old binding pending, a DMA through it lands nowhere. vm2 binds
/// the PASID on its own stream, DMA and a fault round trip work for it;
/// the old binding's DMA still lands nowhere and no response for it
/// reaches the device after the reuse. vm1's late unbind is NotBound.
pub fn free_before_unbind_faults(reuses: ReuseLog) -> crate::prq::PrqRig {
    use crate::prq::{PrqRig, PrqVm};
    use crate::smmu::{GuestRam, RAM_SIZE, SID_B};
    use prq_server_api::{FaultResponse, RespondStatus};
    use smmuv3::CommandKind;
    use smmuv3_model::Access;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    // vm1's progress: 1 once the PASID is freed. vm2's verdict: 1 good,
    // 2 failed.
    let phase = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let (ph1, ph2, d1, d2) = (phase.clone(), phase, done.clone(), done);
    // An S2 domain over the VM's RAM on `sid`, and its guest stage 1
    // (GUEST_VA → RAM page 20).
    fn own_stage(vm: &PrqVm, ok: &mut Checks, sid: u32) -> GuestRam {
        let c = &vm.iommu;
        let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
        let m = c.map(d, guest_ipa(0), vm.ram, 0x4_0000, rw());
        ok.that("map RAM", m.is_ok(), m);
        let a = c.attach(StreamId(sid), d);
        ok.that("attach", a.is_ok(), a);
        let ram = GuestRam::new(vm.ram, RAM_SIZE, vm.bus.mem.clone());
        ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
        ram
    }
    PrqRig::new(SmmuConfig::new())
        .pasid_alloc(&[1])
        .pasid_space_bits(1)
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            let mut ok = Checks(true);
            let ram = own_stage(&vm, &mut ok, SID_A);
            let p = vm.pasids.as_ref().expect("pasid-alloc");
            let Ok(h) = p.alloc() else {
                ok.that("alloc", false, ());
                ok.end()
            };
            let b = vm
                .iommu
                .bind(StreamId(SID_A), h, guest_cd(guest_ipa(10), 7), true);
            ok.that("bind fault-capable", b == Ok(1), b);
            let pasid = Some(h.pasid.0);
            let w = vm.device().dma_write(SID_A, pasid, GUEST_VA, 8);
            ok.that("DMA through the PASID", w == Ok(ram.page(20)), w);
            vm.group(SID_A, pasid, 1, 1);
            let (recs, _) = vm.fetch();
            ok.that("delivered", recs.len() == 1, &recs);
            vm.group(SID_A, pasid, 2, 1);
            // From here the SMMU completes commands only between steps:
            // iommu-server's drain waits on CMD_SYNC (asleep), so the VMs
            // run while it drains.
            vm.bus.set_completion(crate::smmu::Completion::BetweenSteps);
            let f = p.free(h);
            ok.that("free while bound", f.is_ok(), f);
            ph1.store(1, Ordering::SeqCst);
            if let Some(r) = recs.first() {
                let a = vm.respond(&[(r.cookie, FaultResponse::Success)]);
                ok.that(
                    "answer after free: taken or revoked",
                    matches!(
                        a.status,
                        RespondStatus::Complete | RespondStatus::UnknownCookie
                    ),
                    a,
                );
            }
            vm.wait_until(|| d1.load(Ordering::SeqCst) != 0);
            let u = vm.iommu.unbind(StreamId(SID_A), h.pasid, false);
            ok.that("late unbind", u == Ok(api::UnbindOutcome::NotBound), u);
            ok.that("vm2's checks", d1.load(Ordering::SeqCst) == 1, ());
            ok.end()
        })
        .vm("vm2", &[SID_B], move |vm: PrqVm| {
            let mut ok = Checks(true);
            let ram = own_stage(&vm, &mut ok, SID_B);
            vm.wait_until(|| ph2.load(Ordering::SeqCst) == 1);
            let p = vm.pasids.as_ref().expect("pasid-alloc");
            let mut got = p.alloc();
            for _ in 0..300 {
                if got != Err(PasidAllocError::NoSpace) {
                    break;
                }
                userlib::sys_set_timer(Some(userlib::sys_get_timer() + 1), 1 << 30);
                userlib::sys_recv_notification(1 << 30);
                got = p.alloc();
            }
            let smmu = &vm.bus.smmu;
            let Ok(h) = got else {
                ok.that("alloc after the drain", false, got);
                d2.store(2, Ordering::SeqCst);
                loop {
                    userlib::sys_recv_notification(0);
                }
            };
            // The moment of reuse, at the device.
            let pasid = h.pasid.0;
            let at = smmu.commands().len();
            let mut r = Reuse {
                pasid,
                generation: h.generation.0,
                old_stream: SID_A,
                pending: smmu
                    .pending_pri_groups()
                    .into_iter()
                    .filter(|g| g.sid == SID_A && g.ssid == Some(pasid))
                    .collect(),
                old_dma: Some(
                    vm.device()
                        .translate(SID_A, Some(pasid), GUEST_VA, Access::READ),
                ),
                ..Reuse::default()
            };
            ok.that("reused in the next generation", h.generation.0 == 1, h);
            let b = vm
                .iommu
                .bind(StreamId(SID_B), h, guest_cd(guest_ipa(10), 9), true);
            ok.that("bind by the new owner", b == Ok(1), b);
            let w = vm.device().dma_write(SID_B, Some(pasid), GUEST_VA, 8);
            ok.that(
                "new owner's DMA lands in its page",
                w == Ok(ram.page(20)),
                w,
            );
            vm.group(SID_B, Some(pasid), 1, 1);
            let (recs, _) = vm.fetch();
            ok.that(
                "its own fault only",
                recs.len() == 1 && recs[0].sid.0 == SID_B,
                &recs,
            );
            if let Some(rec) = recs.first() {
                let a = vm.respond(&[(rec.cookie, FaultResponse::Success)]);
                ok.that("answer", a.status == RespondStatus::Complete, a);
            }
            let g = vm.wait_answer(SID_B, Some(pasid), 1, 1);
            ok.that("device: Success", g == [0b10], g);
            r.old_dma_later =
                Some(
                    vm.device()
                        .translate(SID_A, Some(pasid), GUEST_VA, Access::READ),
                );
            r.responses_after = smmu.commands()[at..]
                .iter()
                .filter_map(|c| match c.kind {
                    Ok(CommandKind::PriResp {
                        sid, ssid, resp, ..
                    }) if sid == SID_A && ssid == Some(pasid) => Some(resp.raw()),
                    _ => None,
                })
                .collect();
            reuses.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            d2.store(if ok.0 { 1 } else { 2 }, Ordering::SeqCst);
            loop {
                userlib::sys_recv_notification(0);
            }
        })
}
