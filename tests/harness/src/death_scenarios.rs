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
