//! Owner death through the supervisor's death log (docs/pasids.md "Owner
//! death"): a VM task faults; the supervisor logs the death and posts
//! iommu-server, which pulls the log and reclaims the dead incarnation's
//! objects — with no help from any other task.

use crate::prq::{PrqRig, PrqVm, Req};
use crate::smmu::{SID_A, SID_B};
use iommu_server_api::StreamId;
use smmuv3_model::{DmaError, PriOutcome, SmmuConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use userlib::log;

const INVALID: u64 = 0b01;
/// The VM's mapped IOVA (one page of its RAM).
const IOVA: u64 = 0x40_0000;

/// A VM holding an attached, fault-capable stream with a delivered
/// (unanswered) group, a queued group and a partial group (no Last yet)
/// faults (panics). The supervisor restarts it at once; iommu-server, told
/// through the death log, has set the stream to abort and destroyed the
/// domain before the new incarnation runs (it ranks above the VM), so: the
/// dead incarnation's mapping aborts at the device (DMA lands nowhere),
/// every group is answered INVALID exactly once at the device (the end
/// check I1), and the new incarnation's first attach succeeds (without the
/// reclaim the stream is still attached to the dead incarnation's domain:
/// Busy) and its own faults reach it.
pub fn vm_fault_reclaims() -> PrqRig {
    let runs = Arc::new(AtomicU32::new(0));
    let stage = Arc::new(AtomicU32::new(0));
    let (r1, st1, st2) = (runs, stage.clone(), stage);
    PrqRig::new(SmmuConfig::new())
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            let mut ok = true;
            let mut that = |what: &str, c: bool, v: &dyn std::fmt::Debug| {
                if !c {
                    log!("FAILED {what}: {v:?}");
                    ok = false;
                }
            };
            let first = r1.fetch_add(1, Ordering::SeqCst) == 0;
            if !first {
                // Before the new incarnation attaches anything: the dead
                // one's mapping no longer lands — the stream aborts.
                let w = vm.device().dma_write(SID_A, None, IOVA, 8);
                that("old mapping aborts", w == Err(DmaError::Aborted), &w);
            }
            let d = vm.iommu.create_s2_domain(true);
            that("create domain", d.is_ok(), &d);
            let d = d.unwrap_or(iommu_server_api::DomainId(0));
            let a = vm.iommu.attach(StreamId(SID_A), d);
            if first {
                that("attach", a.is_ok(), &a);
                let m = vm.iommu.map(d, IOVA, vm.ram, 0x1000, crate::smmu::rw());
                that("map", m.is_ok(), &m);
                let w = vm.device().dma_write(SID_A, None, IOVA, 8);
                that("DMA lands while alive", w == Ok(vm.ram), &w);
                vm.group(SID_A, None, 1, 1);
                let (recs, _) = vm.fetch();
                that("delivered", recs.len() == 1, &recs);
                vm.group(SID_A, None, 2, 1);
                let o = vm.burst(&[Req::read(SID_A, 3, 0x3000, false)]);
                that("partial queued", o == [PriOutcome::Queued], &o);
                if !ok {
                    userlib::sys_shutdown(1)
                }
                // Die holding all of it.
                panic!("vm1 dies on purpose");
            }
            // The new incarnation: its first attach is not Busy, and its
            // own mapping works.
            that("re-attach after death", a.is_ok(), &a);
            let m = vm.iommu.map(d, IOVA, vm.ram, 0x1000, crate::smmu::rw());
            that("map again", m.is_ok(), &m);
            let w = vm.device().dma_write(SID_A, None, IOVA, 8);
            that("DMA lands again", w == Ok(vm.ram), &w);
            let (recs, _) = vm.fetch();
            that("none of the old faults", recs.is_empty(), &recs);
            vm.group(SID_A, None, 4, 1);
            let (recs, _) = vm.fetch();
            that("own fault delivered", recs.len() == 1, &recs);
            if let Some(r) = recs.first() {
                let o = vm.respond(&[(r.cookie, prq_server_api::FaultResponse::Invalid)]);
                that("answered", o.done == 1, &o);
            }
            if !ok {
                userlib::sys_shutdown(1)
            }
            st1.store(1, Ordering::SeqCst);
            loop {
                userlib::sys_recv_notification(0);
            }
        })
        .vm("vm2", &[SID_B], move |vm: PrqVm| {
            vm.wait_until(|| st2.load(Ordering::SeqCst) == 1);
            let mut ok = true;
            let g1 = vm.wait_answer(SID_A, None, 1, 1);
            let g2 = vm.wait_answer(SID_A, None, 2, 1);
            if g1 != [INVALID] || g2 != [INVALID] {
                log!("FAILED old groups not INVALID once: {g1:?} {g2:?}");
                ok = false;
            }
            userlib::sys_shutdown(if ok { 0 } else { 1 })
        })
}

/// A VM with a bound fault-capable PASID (the only PASID of the space), a
/// delivered-unanswered and a queued group on it, and a partial group,
/// faults. iommu-server reclaims it (the bind is unbound with prq-server's
/// drain), then tells pasid-alloc (`owner_died`: the PASID goes defunct),
/// whose post leads to the defunct drain and `mark_drained`. The new
/// incarnation allocates the same PASID in the next generation — possible
/// only after the drain (the end check I3: no PASID handed out again before
/// its drain completed) — and binds it; every group of the old life is
/// answered exactly once at the device (I1).
pub fn vm_with_pasid_dies() -> PrqRig {
    use crate::smmu::{guest_cd, guest_ipa};
    let runs = Arc::new(AtomicU32::new(0));
    PrqRig::new(SmmuConfig::new())
        .pasid_alloc(&[1])
        .pasid_space_bits(1)
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            let mut ok = true;
            let mut that = |what: &str, c: bool, v: &dyn std::fmt::Debug| {
                if !c {
                    log!("FAILED {what}: {v:?}");
                    ok = false;
                }
            };
            let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
            let d = vm.iommu.create_s2_domain(false);
            that("create domain", d.is_ok(), &d);
            let d = d.unwrap_or(iommu_server_api::DomainId(0));
            let a = vm.iommu.attach(StreamId(SID_A), d);
            that("attach", a.is_ok(), &a);
            let h = vm.pasids.as_ref().map(|p| p.alloc());
            let expect_gen = if first { 0 } else { 1 };
            that(
                "alloc PASID 1 (generation 1 only after the drain)",
                matches!(h, Some(Ok(h)) if h.pasid.0 == 1 && h.generation.0 == expect_gen),
                &h,
            );
            let Some(Ok(h)) = h else {
                userlib::sys_shutdown(1)
            };
            let b = vm
                .iommu
                .bind(StreamId(SID_A), h, guest_cd(guest_ipa(10), 7), true);
            that("bind", b == Ok(1), &b);
            if !first {
                let (recs, _) = vm.fetch();
                that("none of the old faults", recs.is_empty(), &recs);
                userlib::sys_shutdown(if ok { 0 } else { 1 })
            }
            let p = Some(1);
            vm.group(SID_A, p, 1, 1);
            let (recs, _) = vm.fetch();
            that("delivered", recs.len() == 1, &recs);
            vm.group(SID_A, p, 2, 1);
            vm.request(SID_A, p, 3, 0x8000, true, true, false);
            if !ok {
                userlib::sys_shutdown(1)
            }
            panic!("vm1 dies holding a bound PASID");
        })
}
