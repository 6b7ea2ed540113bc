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
                that(
                    "I4: the dead owner's stream aborts",
                    w == Err(DmaError::Aborted),
                    &w,
                );
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

/// PASIDs in the space (`pasid_space_bits(3)`): 1..=7. vm1 dies holding
/// them all, one per incarnation.
const OVERFLOW_SPACE: u32 = 7;
/// vm2's deaths after vm1's last one, while iommu-server is down: more
/// than the supervisor's death log holds (16), so no record of vm1 is left.
const OVERFLOW_DEATHS: u32 = 17;
/// A VM timer bit (the rig uses 1 << 31 for its own waits).
const VM_TIMER_BIT: u32 = 1 << 30;
/// How long the supervisor holds iommu-server down after its quick
/// re-fault (virtual ms): longer than all the VMs' deaths take.
pub const OVERFLOW_HOLDOFF_MS: u64 = 60_000;

/// Sleeps until virtual time `t` ms.
fn sleep_until(t: u64) {
    let now = userlib::sys_get_timer();
    if now < t {
        userlib::sleep_for(t - now, VM_TIMER_BIT);
    }
}

/// The death log overflows and iommu-server resyncs (docs/pasids.md "Owner
/// death"). iommu-server is killed at boot and again within a second of
/// its restart (`Action::kill`), so the supervisor — the real code with a
/// long hold-off (`Harness::supervisor_holdoff`) — keeps it down for
/// [`OVERFLOW_HOLDOFF_MS`]. Meanwhile vm1, which never creates a domain,
/// dies seven times, each incarnation holding one PASID (the whole space);
/// its eighth incarnation lives, and finds the space full (`NoSpace`:
/// nothing was reclaimed — the proof that iommu-server was down). Then vm2
/// dies [`OVERFLOW_DEATHS`] times, pushing every record of vm1 out of the
/// log. After iommu-server is back, vm2 dies once more; iommu-server pulls
/// from cursor 0, which the log no longer holds (`Overflowed`), and no
/// record it can still read names vm1. Its resync must still tell
/// pasid-alloc that every vm1 incarnation below the live one died
/// (`current_task`, then `owner_died`), so the live vm1 can allocate the
/// whole space again — after the drain (the end check I3). Before the fix
/// the resync only reclaimed domain owners: vm1 held none, its dead
/// incarnations' PASIDs stayed allocated, and the final `alloc` was
/// `NoSpace`.
pub fn death_log_overflow_resync(seed: u64) -> crate::prq::PrqRun {
    use pasid_alloc_api::PasidAllocError;
    let runs1 = Arc::new(AtomicU32::new(0));
    let runs2 = Arc::new(AtomicU32::new(0));
    PrqRig::new(SmmuConfig::new())
        .pasid_alloc(&[])
        .pasid_space_bits(3)
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            let n = runs1.fetch_add(1, Ordering::SeqCst);
            let Some(alloc) = vm.pasids.as_ref() else {
                log!("FAILED no pasid-alloc slot");
                userlib::sys_shutdown(1)
            };
            if n < OVERFLOW_SPACE {
                let h = alloc.alloc();
                if h.is_err() {
                    log!("FAILED vm1 incarnation {n}: alloc {h:?}");
                    userlib::sys_shutdown(1)
                }
                // Die after more than the supervisor's 1 s "quick" window:
                // restarted at once, not held off.
                userlib::sleep_for(1_100, VM_TIMER_BIT);
                panic!("vm1 incarnation {n} dies holding a PASID");
            }
            let h = alloc.alloc();
            if h != Err(PasidAllocError::NoSpace) {
                log!("FAILED vm1: {h:?} before the resync (iommu-server not held down?)");
                userlib::sys_shutdown(1)
            }
            // After iommu-server's return and vm2's last death, the whole
            // space is free again (the drain may still be running).
            sleep_until(OVERFLOW_HOLDOFF_MS + 6_000);
            let mut got = 0;
            for _ in 0..100 {
                match alloc.alloc() {
                    Ok(_) => got += 1,
                    Err(PasidAllocError::NoSpace) => userlib::sleep_for(10, VM_TIMER_BIT),
                    Err(e) => {
                        log!("FAILED alloc after the resync: {e:?}");
                        userlib::sys_shutdown(1)
                    }
                }
                if got == OVERFLOW_SPACE {
                    break;
                }
            }
            if got != OVERFLOW_SPACE {
                log!(
                    "FAILED only {got} of {OVERFLOW_SPACE} PASIDs after the resync: the dead incarnations' PASIDs were not reclaimed"
                );
                userlib::sys_shutdown(1)
            }
            userlib::sys_shutdown(0)
        })
        .vm("vm2", &[SID_B], move |vm: PrqVm| {
            let n = runs2.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                // After vm1's last death.
                sleep_until(1_100 * (OVERFLOW_SPACE as u64 + 1));
            }
            if n < OVERFLOW_DEATHS {
                userlib::sleep_for(1_100, VM_TIMER_BIT);
                panic!("vm2 incarnation {n} dies");
            }
            if n == OVERFLOW_DEATHS {
                // iommu-server is back: one more death makes the
                // supervisor post it; it pulls from cursor 0.
                sleep_until(OVERFLOW_HOLDOFF_MS + 5_000);
                let info = vm.iommu.info();
                if info.is_err() {
                    log!("FAILED iommu-server not back: {info:?}");
                    userlib::sys_shutdown(1)
                }
                panic!("vm2 dies after iommu-server came back");
            }
            loop {
                userlib::sys_recv_notification(0);
            }
        })
        .run_with(seed, |h| {
            h.supervisor_holdoff(OVERFLOW_HOLDOFF_MS, OVERFLOW_HOLDOFF_MS)
                .max_steps(600_000)
                // The first kill restarts it at once; a later one lands
                // within a second of that restart (a kill of the task
                // while it is still faulted changes nothing), so it is
                // held down.
                .at_step(20, crate::Action::kill("iommu-server"))
                .at_step(30, crate::Action::kill("iommu-server"))
                .at_step(40, crate::Action::kill("iommu-server"))
        })
}
