//! The prq-server scenarios: each builds a [`PrqRig`] whose VM scripts
//! walk one edge of the fault path and end `shutdown(0)` only when every
//! check held. `host/harness_prq.rs` runs each over 50 seeds with the
//! end-of-run invariants; `cargo xtask trace prq-<name>` draws one run
//! (docs/faults.md).

use crate::prq::{PrqRig, PrqVm, Req};
use crate::smmu::{SID_A, SID_B};
use iommu_server_api::{DomainId, StreamId};
use prq_server_api::{Cookie, FaultFlags, FaultResponse, RespondStatus};
use smmuv3_model::SmmuConfig;
use userlib::log;

const SUCCESS: u64 = 0b10;
const INVALID: u64 = 0b01;

/// Checks a VM script makes; the run ends `shutdown(0)` only if all held.
struct Checks(bool);

impl Checks {
    fn that(&mut self, what: &str, good: bool, got: impl std::fmt::Debug) {
        if !good {
            log!("FAILED {}: got {:?}", what, got);
            self.0 = false;
        }
    }
    fn end(self) -> ! {
        userlib::sys_shutdown(if self.0 { 0 } else { 1 })
    }
}

fn fault_domain(vm: &PrqVm, ok: &mut Checks, sid: u32, fault_capable: bool) -> DomainId {
    let d = vm.iommu.create_s2_domain(fault_capable);
    ok.that("create domain", d.is_ok(), d);
    let d = d.unwrap_or(DomainId(0));
    let a = vm.iommu.attach(StreamId(sid), d);
    ok.that("attach", a.is_ok(), a);
    d
}

/// A VM owning stream A with a fault-capable domain holds group 1
/// delivered (fetched, not answered) and group 2 queued (raised, not
/// fetched): what a dying owner leaves for prq-server to answer.
fn hold_delivered_and_queued(vm: &PrqVm, ok: &mut Checks) {
    fault_domain(vm, ok, SID_A, true);
    vm.group(SID_A, None, 1, 1);
    let (recs, _) = vm.fetch();
    ok.that("delivered", recs.len() == 1, &recs);
    vm.group(SID_A, None, 2, 1);
}

/// One group's cookie from a fetch (all records of a group share it).
fn cookie_of(recs: &[prq_server_api::FaultRecord], group: u16) -> Cookie {
    recs.iter()
        .find(|r| r.group == group)
        .map(|r| r.cookie)
        .unwrap_or(Cookie(0))
}

/// A group of three requests reaches its owner as three records with one
/// cookie (Last only on the third); Success reaches the device once; the
/// same cookie twice is refused; Failure from an owner is refused and
/// changes nothing; Invalid reaches the device as InvalidRequest (0b01).
pub fn fault_respond() -> PrqRig {
    PrqRig::new(SmmuConfig::new()).vm("vm", &[SID_A], |vm: PrqVm| {
        let mut ok = Checks(true);
        fault_domain(&vm, &mut ok, SID_A, true);
        vm.group(SID_A, None, 1, 3);
        let (recs, lost) = vm.fetch();
        ok.that(
            "3 records, nothing lost",
            recs.len() == 3 && lost == 0,
            &recs,
        );
        let c = cookie_of(&recs, 1);
        ok.that(
            "one cookie, Last only on the third",
            recs.iter().all(|r| r.cookie == c)
                && recs
                    .iter()
                    .filter(|r| r.flags.contains(FaultFlags::LAST_PAGE))
                    .count()
                    == 1
                && recs
                    .last()
                    .is_some_and(|r| r.flags.contains(FaultFlags::LAST_PAGE)),
            &recs,
        );
        let r = vm.respond(&[(c, FaultResponse::Success)]);
        ok.that(
            "respond",
            r.status == RespondStatus::Complete && r.done == 1,
            r,
        );
        let got = vm.wait_answer(SID_A, None, 1, 1);
        ok.that("device: one Success", got == [SUCCESS], got);
        let r = vm.respond(&[(c, FaultResponse::Success)]);
        ok.that(
            "same cookie twice",
            r.status == RespondStatus::UnknownCookie && r.done == 0,
            r,
        );
        vm.group(SID_A, None, 2, 1);
        let (recs, _) = vm.fetch();
        let c2 = cookie_of(&recs, 2);
        let r = vm.respond(&[(c2, FaultResponse::Failure)]);
        ok.that(
            "Failure refused",
            r.status == RespondStatus::NotAllowed && r.done == 0,
            r,
        );
        let r = vm.respond(&[(c2, FaultResponse::Invalid)]);
        ok.that("Invalid accepted", r.status == RespondStatus::Complete, r);
        let got = vm.wait_answer(SID_A, None, 2, 1);
        ok.that("device: one InvalidRequest", got == [INVALID], got);
        ok.end()
    })
}

/// No handler: a stream whose domain is not fault-capable, and a stream
/// never attached, get InvalidRequest at once (the owner sees nothing);
/// a stop marker (PASID, no R/W, Last) is never answered; without a PASID
/// the same bits are an ordinary request and are answered.
pub fn no_handler() -> PrqRig {
    PrqRig::new(SmmuConfig::new()).vm("vm", &[SID_A, SID_B], |vm: PrqVm| {
        let mut ok = Checks(true);
        fault_domain(&vm, &mut ok, SID_A, false);
        vm.group(SID_A, None, 3, 2);
        let got = vm.wait_answer(SID_A, None, 3, 1);
        ok.that("not fault-capable: InvalidRequest", got == [INVALID], got);
        vm.group(SID_B, None, 4, 1);
        let got = vm.wait_answer(SID_B, None, 4, 1);
        ok.that("no route: InvalidRequest", got == [INVALID], got);
        vm.stop_marker(SID_A, 9, 5);
        vm.request(SID_A, None, 6, 0, false, false, true);
        let got = vm.wait_answer(SID_A, None, 6, 1);
        ok.that("no PASID: an ordinary request", got == [INVALID], got);
        let got = vm.responses(SID_A, Some(9), 5);
        ok.that("stop marker never answered", got.is_empty(), got);
        let (recs, _) = vm.fetch();
        ok.that("owner saw nothing", recs.is_empty(), recs);
        let s = vm.prq.stats();
        ok.that(
            "one stop marker counted",
            matches!(s, Ok(s) if s.stop_markers == 1),
            s,
        );
        ok.end()
    })
}

/// Replace of a fault-capable domain with groups queued, delivered and
/// partial: the OLD domain's groups are answered InvalidRequest once; the
/// delivered cookie answered afterwards is refused; the partial group's
/// Last arriving after the replace is answered at once (charged to
/// nobody); a new group goes to the owner under the new domain.
pub fn replace() -> PrqRig {
    PrqRig::new(SmmuConfig::new()).vm("vm", &[SID_A], |vm: PrqVm| {
        let mut ok = Checks(true);
        fault_domain(&vm, &mut ok, SID_A, true);
        let d2 = vm.iommu.create_s2_domain(true).unwrap_or(DomainId(0));
        vm.group(SID_A, None, 1, 2);
        let (recs, _) = vm.fetch();
        let c1 = cookie_of(&recs, 1);
        vm.group(SID_A, None, 2, 1);
        vm.request(SID_A, None, 3, 0x9000, true, false, false);
        let r = vm.iommu.replace(StreamId(SID_A), d2);
        ok.that("replace", r.is_ok(), r);
        let g1 = vm.wait_answer(SID_A, None, 1, 1);
        let g2 = vm.wait_answer(SID_A, None, 2, 1);
        ok.that(
            "old groups: one InvalidRequest each",
            g1 == [INVALID] && g2 == [INVALID],
            (g1, g2),
        );
        let r = vm.respond(&[(c1, FaultResponse::Success)]);
        ok.that(
            "revoked cookie refused",
            r.status == RespondStatus::UnknownCookie,
            r,
        );
        vm.request(SID_A, None, 3, 0xa000, true, false, true);
        let g3 = vm.wait_answer(SID_A, None, 3, 1);
        ok.that("old partial's Last: InvalidRequest", g3 == [INVALID], g3);
        vm.group(SID_A, None, 4, 1);
        let (recs, _) = vm.fetch();
        ok.that(
            "only the new group is delivered",
            recs.len() == 1 && recs[0].group == 4,
            &recs,
        );
        let r = vm.respond(&[(cookie_of(&recs, 4), FaultResponse::Success)]);
        ok.that(
            "answer under the new domain",
            r.status == RespondStatus::Complete,
            r,
        );
        let g4 = vm.wait_answer(SID_A, None, 4, 1);
        ok.that("new group: Success", g4 == [SUCCESS], g4);
        ok.end()
    })
}

/// Detach with a delivered cookie: the device gets InvalidRequest once at
/// the detach; the owner's answer afterwards is refused and the device
/// still saw exactly one response.
pub fn detach() -> PrqRig {
    PrqRig::new(SmmuConfig::new()).vm("vm", &[SID_A], |vm: PrqVm| {
        let mut ok = Checks(true);
        fault_domain(&vm, &mut ok, SID_A, true);
        vm.group(SID_A, None, 7, 1);
        let (recs, _) = vm.fetch();
        let c = cookie_of(&recs, 7);
        let x = vm.iommu.detach(StreamId(SID_A));
        ok.that("detach", x.is_ok(), x);
        let got = vm.responses(SID_A, None, 7);
        ok.that("answered before detach returned", got == [INVALID], got);
        let r = vm.respond(&[(c, FaultResponse::Success)]);
        ok.that(
            "answer after detach refused",
            r.status == RespondStatus::UnknownCookie,
            r,
        );
        vm.group(SID_A, None, 8, 1);
        let got = vm.wait_answer(SID_A, None, 8, 1);
        ok.that("detached: InvalidRequest at once", got == [INVALID], got);
        let got = vm.responses(SID_A, None, 7);
        ok.that("still one response", got == [INVALID], got);
        ok.end()
    })
}

/// Another VM's cookie is refused (UnknownCookie), changes nothing; the
/// owner's answer then goes through.
pub fn foreign_cookie() -> PrqRig {
    let shared = std::sync::Arc::new(std::sync::Mutex::new(None::<Cookie>));
    let (s1, s2) = (shared.clone(), shared);
    PrqRig::new(SmmuConfig::new())
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            let mut ok = Checks(true);
            fault_domain(&vm, &mut ok, SID_A, true);
            vm.group(SID_A, None, 1, 1);
            let (recs, _) = vm.fetch();
            let c = cookie_of(&recs, 1);
            *s1.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
            // vm2 tries it meanwhile.
            vm.wait_until(|| s1.lock().unwrap_or_else(|e| e.into_inner()).is_none());
            let r = vm.respond(&[(c, FaultResponse::Success)]);
            ok.that(
                "owner's answer accepted",
                r.status == RespondStatus::Complete,
                r,
            );
            let got = vm.wait_answer(SID_A, None, 1, 1);
            ok.that("device: one Success", got == [SUCCESS], got);
            ok.end()
        })
        .vm("vm2", &[SID_B], move |vm: PrqVm| {
            let mut ok = Checks(true);
            vm.wait_until(|| s2.lock().unwrap_or_else(|e| e.into_inner()).is_some());
            let c = s2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(Cookie(0));
            let r = vm.respond(&[(c, FaultResponse::Invalid)]);
            ok.that(
                "foreign cookie refused",
                r.status == RespondStatus::UnknownCookie && r.done == 0,
                r,
            );
            let got = vm.responses(SID_A, None, 1);
            ok.that("device saw nothing from it", got.is_empty(), got);
            *s2.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if !ok.0 {
                ok.end()
            }
            loop {
                userlib::sys_recv_notification(0);
            }
        })
}

/// Partials, then a PRI queue overflow, then a Last (IHI 0070 §8.1): with
/// a 4-entry queue, group 1's two requests and group 2 fill it; group 1's
/// Last and group 3 are discarded and auto-answered Success by the SMMU.
/// prq-server processes to PROD, drops group 1's partial without answering
/// it, answers group 2 by its owner, and acknowledges the overflow in one
/// CONS write; PRG index 1 is then reused by a new group, which is
/// delivered and answered normally.
pub fn overflow() -> PrqRig {
    PrqRig::new(SmmuConfig::new())
        .priq_log2(2)
        .vm("vm", &[SID_A], |vm: PrqVm| {
            let mut ok = Checks(true);
            fault_domain(&vm, &mut ok, SID_A, true);
            use smmuv3_model::PriOutcome::{Overflow, Queued};
            let o = vm.burst(&[
                Req::read(SID_A, 1, 0x1000, false),
                Req::read(SID_A, 1, 0x2000, false),
                Req::read(SID_A, 2, 0x3000, false),
                Req::read(SID_A, 2, 0x4000, true),
                Req::read(SID_A, 1, 0x5000, true),
                Req::read(SID_A, 3, 0x6000, true),
            ]);
            ok.that(
                "four queued, two discarded",
                o == [Queued, Queued, Queued, Queued, Overflow, Overflow],
                o,
            );
            let (recs, _) = vm.fetch();
            ok.that(
                "only group 2 is delivered (group 1 had no Last up to PROD)",
                recs.len() == 2 && recs.iter().all(|r| r.group == 2),
                &recs,
            );
            let s = vm.prq.stats();
            ok.that(
                "overflow seen, no partial left",
                matches!(s, Ok(s) if s.hw_overflows == 1 && s.partial_groups == 0),
                s,
            );
            let r = vm.respond(&[(cookie_of(&recs, 2), FaultResponse::Success)]);
            ok.that("answer group 2", r.status == RespondStatus::Complete, r);
            ok.that(
                "device: group 2 Success",
                vm.wait_answer(SID_A, None, 2, 1) == [SUCCESS],
                (),
            );
            let g1 = vm.responses(SID_A, None, 1);
            ok.that("group 1: one automatic Success", g1 == [SUCCESS], g1);
            let o = vm.request(SID_A, None, 1, 0x7000, false, true, true);
            ok.that(
                "queue writable again (overflow acknowledged)",
                o == Queued,
                o,
            );
            let (recs, _) = vm.fetch();
            ok.that(
                "reused PRG index 1: one fresh record",
                recs.len() == 1 && recs[0].addr == 0x7000,
                &recs,
            );
            let r = vm.respond(&[(cookie_of(&recs, 1), FaultResponse::Invalid)]);
            ok.that("answer it", r.status == RespondStatus::Complete, r);
            let g1 = vm.wait_answer(SID_A, None, 1, 2);
            ok.that(
                "group 1 instances: auto Success, then InvalidRequest",
                g1 == [INVALID, SUCCESS],
                g1,
            );
            ok.end()
        })
}

/// An owner that does not fetch: its queue holds OWNER_QUEUE groups; the
/// next is answered InvalidRequest at once and the owner's next fetch
/// reports it lost.
pub fn owner_queue_full() -> PrqRig {
    PrqRig::new(SmmuConfig::new()).vm("vm", &[SID_A], |vm: PrqVm| {
        let mut ok = Checks(true);
        fault_domain(&vm, &mut ok, SID_A, true);
        let n = prq_server::prq::OWNER_QUEUE as u16;
        for g in 0..=n {
            vm.group(SID_A, None, g, 1);
        }
        let (recs, lost) = vm.fetch();
        ok.that(
            "a full queue's worth, one lost",
            recs.len() == n as usize && lost == 1,
            (recs.len(), lost),
        );
        let got = vm.wait_answer(SID_A, None, n, 1);
        ok.that("the lost group: InvalidRequest", got == [INVALID], got);
        let answers: Vec<_> = recs
            .iter()
            .map(|r| (r.cookie, FaultResponse::Success))
            .collect();
        let r = vm.respond(&answers);
        ok.that(
            "all answered in one batch",
            r.status == RespondStatus::Complete && r.done == n as u32,
            r,
        );
        for g in 0..n {
            let got = vm.wait_answer(SID_A, None, g, 1);
            ok.that("Success", got == [SUCCESS], (g, got));
        }
        ok.end()
    })
}

/// Unbind of a fault-capable PASID with a delivered-unanswered group, a
/// queued one, a partial one and the device's stop marker: unbind replies
/// Drained only after prq-server drained to the marker; the delivered and
/// queued groups got InvalidRequest once; the partial group (no Last) got
/// nothing, as the device expects; the delivered cookie is refused after.
pub fn unbind_drain() -> PrqRig {
    use crate::smmu::{guest_cd, guest_ipa};
    use iommu_server_api::UnbindOutcome;
    PrqRig::new(SmmuConfig::new())
            .pasid_alloc(&[5])
            .vm("vm", &[SID_A], |vm: PrqVm| {
                let mut ok = Checks(true);
                fault_domain(&vm, &mut ok, SID_A, false);
                let Some(h) = vm.pasids.as_ref().and_then(|p| p.alloc().ok()) else {
                    ok.that("alloc", false, ());
                    ok.end()
                };
                let p = Some(h.pasid.0);
                let b = vm.iommu.bind(StreamId(SID_A), h, guest_cd(guest_ipa(10), 7), true);
                ok.that("bind fault-capable", b == Ok(1), b);
                vm.group(SID_A, p, 1, 2);
                let (recs, _) = vm.fetch();
                ok.that("delivered with its PASID", recs.len() == 2 && recs.iter().all(|r| r.pasid.0 == h.pasid.0 && r.flags.contains(FaultFlags::PASID_VALID)), &recs);
                let c1 = cookie_of(&recs, 1);
                vm.group(SID_A, p, 2, 1);
                vm.request(SID_A, p, 3, 0x8000, true, true, false);
                vm.stop_marker(SID_A, h.pasid.0, 4);
                let u = vm.iommu.unbind(StreamId(SID_A), h.pasid, true);
                ok.that("unbind drained", u == Ok(UnbindOutcome::Drained), u);
                let g1 = vm.responses(SID_A, p, 1);
                let g2 = vm.responses(SID_A, p, 2);
                ok.that("answered before unbind replied", g1 == [INVALID] && g2 == [INVALID], (g1, g2));
                let g3 = vm.responses(SID_A, p, 3);
                ok.that("partial: nothing", g3.is_empty(), g3);
                let r = vm.respond(&[(c1, FaultResponse::Success)]);
                ok.that("revoked cookie refused", r.status == RespondStatus::UnknownCookie, r);
                let s = vm.prq.stats();
                ok.that("nothing of the PASID left", matches!(s, Ok(s) if s.partial_groups == 0 && s.queued_groups == 0 && s.delivered_groups == 0), s);
                ok.end()
            })
}

/// prq-server restarted (killed) while holding delivered and queued
/// groups and a Success not yet issued: the new incarnation learns them
/// from its journal, issues the Success, answers the others
/// InvalidRequest exactly once, refuses the old cookies and reports them
/// lost; a new group then works.
pub fn restart() -> PrqRig {
    PrqRig::new(SmmuConfig::new())
        .vm("vm", &[SID_A], |vm: PrqVm| {
            let mut ok = Checks(true);
            fault_domain(&vm, &mut ok, SID_A, true);
            vm.group(SID_A, None, 1, 1);
            vm.group(SID_A, None, 2, 2);
            let (recs, _) = vm.fetch();
            let (c1, c2) = (cookie_of(&recs, 1), cookie_of(&recs, 2));
            vm.group(SID_A, None, 3, 1);
            let r = vm.respond(&[(c1, FaultResponse::Success)]);
            ok.that("answer group 1", r.status == RespondStatus::Complete, r);
            let rc = userlib::sys_task_restart(PrqRig::PRQ_INDEX);
            ok.that("restart prq-server", rc.is_ok(), rc);
            let g1 = vm.wait_answer(SID_A, None, 1, 1);
            let g2 = vm.wait_answer(SID_A, None, 2, 1);
            let g3 = vm.wait_answer(SID_A, None, 3, 1);
            ok.that(
                "group 1 Success, 2 and 3 InvalidRequest, once each",
                g1 == [SUCCESS] && g2 == [INVALID] && g3 == [INVALID],
                (g1, g2, g3),
            );
            let r = vm.respond(&[(c2, FaultResponse::Success)]);
            ok.that(
                "old cookie refused",
                r.status == RespondStatus::UnknownCookie,
                r,
            );
            let (recs, lost) = vm.fetch();
            ok.that("told lost", recs.is_empty() && lost == 2, (recs, lost));
            vm.group(SID_A, None, 4, 1);
            let (recs, _) = vm.fetch();
            let r = vm.respond(&[(cookie_of(&recs, 4), FaultResponse::Success)]);
            ok.that(
                "new incarnation serves",
                r.status == RespondStatus::Complete,
                r,
            );
            let g4 = vm.wait_answer(SID_A, None, 4, 1);
            ok.that("device: Success", g4 == [SUCCESS], g4);
            ok.end()
        })
        .task_control()
}

/// Non-recoverable events go to the VM that owns the stream, and only to
/// it (fetch_events), from the event queue prq-server now owns.
pub fn events() -> PrqRig {
    use smmuv3::EventId;
    use smmuv3_model::DmaError;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    PrqRig::new(SmmuConfig::new())
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            let mut ok = Checks(true);
            fault_domain(&vm, &mut ok, SID_A, false);
            let r = vm.device().dma_write(SID_A, None, 0x40_0000, 8);
            ok.that(
                "DMA to an unmapped IOVA faults, recorded",
                matches!(
                    r,
                    Err(DmaError::Fault {
                        id: EventId::FTranslation,
                        recorded: true
                    })
                ),
                r,
            );
            let mut buf =
                [<prq_server_api::EventRecordWire as zerocopy::FromZeros>::new_zeroed(); 32];
            let e = vm.prq.fetch_events(&mut buf);
            let rec = <prq_server_api::EventRecord as idl_runtime::Fixed>::from_wire(&buf[0]);
            ok.that(
                "one F_TRANSLATION of its stream",
                matches!(e, Ok(o) if o.count == 1 && o.lost == 0)
                    && rec.is_some_and(|r| {
                        r.sid.0 == SID_A && r.event_id == EventId::FTranslation.raw() as u8
                    }),
                (e, rec),
            );
            d2.store(true, std::sync::atomic::Ordering::SeqCst);
            // vm2 checks it got nothing.
            vm.wait_until(|| !d2.load(std::sync::atomic::Ordering::SeqCst));
            ok.end()
        })
        .vm("vm2", &[SID_B], move |vm: PrqVm| {
            let mut ok = Checks(true);
            vm.wait_until(|| done.load(std::sync::atomic::Ordering::SeqCst));
            let mut buf =
                [<prq_server_api::EventRecordWire as zerocopy::FromZeros>::new_zeroed(); 32];
            let e = vm.prq.fetch_events(&mut buf);
            ok.that(
                "another VM gets nothing",
                matches!(e, Ok(o) if o.count == 0),
                e,
            );
            done.store(false, std::sync::atomic::Ordering::SeqCst);
            if !ok.0 {
                ok.end()
            }
            loop {
                userlib::sys_recv_notification(0);
            }
        })
}

/// Stall (the model's forced stall model): a stalled transaction is a
/// group of one named by its STAG; the owner maps the page and answers
/// Success, which becomes CMD_RESUME Retry and the transaction completes;
/// a stall on a stream whose domain is not fault-capable is terminated at
/// once (RESUME Term), the owner never sees it.
pub fn stall() -> PrqRig {
    use smmuv3_model::{DmaError, StallModel, StallOutcome, StallState};
    let mut cfg = SmmuConfig::new();
    cfg.stall_model = StallModel::StallForced;
    PrqRig::new(cfg).vm("vm", &[SID_A, SID_B], |vm: PrqVm| {
        let mut ok = Checks(true);
        let d = fault_domain(&vm, &mut ok, SID_A, true);
        fault_domain(&vm, &mut ok, SID_B, false);
        let iova = 0x40_0000;
        let r = vm.device().dma_write(SID_A, None, iova, 8);
        let Err(DmaError::Stalled { stag }) = r else {
            ok.that("stalls", false, r);
            ok.end()
        };
        let (recs, _) = vm.fetch();
        ok.that(
            "one stall record with its STAG and address",
            recs.len() == 1
                && recs[0].kind == prq_server_api::FaultKind::Stall
                && recs[0].group == stag
                && recs[0].addr == iova,
            &recs,
        );
        let m = vm.iommu.map(d, iova, vm.ram, 0x1000, crate::smmu::rw());
        ok.that("map the page", m.is_ok(), m);
        let c = recs.first().map(|r| r.cookie).unwrap_or(Cookie(0));
        let a = vm.respond(&[(c, FaultResponse::Success)]);
        ok.that("answer Success", a.status == RespondStatus::Complete, a);
        vm.wait_until(|| vm.device().stall_state(SID_A, stag) != Some(StallState::Pending));
        let s = vm.device().stall_state(SID_A, stag);
        ok.that(
            "RESUME Retry: the transaction completes",
            s == Some(StallState::Resolved(StallOutcome::Retried(Ok(vm.ram)))),
            s,
        );
        let r = vm.device().dma_write(SID_B, None, iova, 8);
        let Err(DmaError::Stalled { stag: t2 }) = r else {
            ok.that("stalls", false, r);
            ok.end()
        };
        vm.wait_until(|| vm.device().stall_state(SID_B, t2) != Some(StallState::Pending));
        let s = vm.device().stall_state(SID_B, t2);
        ok.that(
            "not fault-capable: terminated at once",
            matches!(s, Some(StallState::Resolved(StallOutcome::Terminated(_)))),
            s,
        );
        let (recs, _) = vm.fetch();
        ok.that("owner saw nothing of it", recs.is_empty(), recs);
        ok.end()
    })
}

/// An owner restarted directly (task control: no fault, so no death in
/// the supervisor's log) holding a delivered and a queued group:
/// prq-server notices when the new incarnation first calls it (the kernel
/// stamps the caller's id, its generation newer than the owner's;
/// `Prq::seen_alive`), answers both InvalidRequest once, drops its routes
/// (a later request is answered at once), and the new incarnation of the
/// VM sees none of it.
pub fn owner_died() -> PrqRig {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let runs = Arc::new(AtomicU32::new(0));
    let ready = Arc::new(AtomicU32::new(0));
    let (r1, ready1, ready2) = (runs.clone(), ready.clone(), ready);
    PrqRig::new(SmmuConfig::new())
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            if r1.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut ok = Checks(true);
                hold_delivered_and_queued(&vm, &mut ok);
                if !ok.0 {
                    ok.end()
                }
                ready1.store(1, Ordering::SeqCst);
            } else {
                // The new incarnation: none of the old one's faults.
                let (recs, _) = vm.fetch();
                if !recs.is_empty() {
                    log!("FAILED new incarnation got {:?}", recs);
                    userlib::sys_shutdown(1)
                }
                ready1.store(2, Ordering::SeqCst);
            }
            loop {
                userlib::sys_recv_notification(0);
            }
        })
        .vm("vm2", &[SID_B], move |vm: PrqVm| {
            let mut ok = Checks(true);
            vm.wait_until(|| ready2.load(Ordering::SeqCst) == 1);
            let rc = userlib::sys_task_restart(3);
            ok.that("restart vm1", rc.is_ok(), rc);
            // Any request to prq-server lets it notice.
            let s = vm.prq.stats();
            ok.that("stats", s.is_ok(), s);
            let g1 = vm.wait_answer(SID_A, None, 1, 1);
            let g2 = vm.wait_answer(SID_A, None, 2, 1);
            ok.that(
                "both groups: InvalidRequest once",
                g1 == [INVALID] && g2 == [INVALID],
                (g1, g2),
            );
            vm.group(SID_A, None, 3, 1);
            let g3 = vm.wait_answer(SID_A, None, 3, 1);
            ok.that("route gone: answered at once", g3 == [INVALID], g3);
            vm.wait_until(|| ready2.load(Ordering::SeqCst) == 2);
            ok.end()
        })
        .task_control()
}

/// An owner that faults holding a delivered and a queued group: the
/// supervisor logs the death and posts its watchers — here prq-server
/// alone (iommu-server's reclaim would drain the stream and answer the
/// groups too) — and prq-server pulls the log (`next_death`) and answers
/// both InvalidRequest once at the device. Nothing else tells it: after
/// the death no PRI or event interrupt reaches it and no VM calls it (the
/// VM's next incarnation never does); `harness_prq_owner_died_pushed`
/// checks that in the trace.
pub fn owner_died_pushed() -> PrqRig {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let runs = Arc::new(AtomicU32::new(0));
    PrqRig::new(SmmuConfig::new())
        .death_watchers(&["prq-server"])
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut ok = Checks(true);
                hold_delivered_and_queued(&vm, &mut ok);
                // Group 2 queued, and the device's interrupts delivered
                // before dying: after the death prq-server must hear of
                // nothing but the death.
                let held = vm.wait_until(|| {
                    vm.prq
                        .stats()
                        .is_ok_and(|s| s.queued_groups == 1 && s.delivered_groups == 1)
                });
                ok.that("one delivered, one queued", held, vm.prq.stats());
                userlib::sleep_for(5, 1 << 30);
                if !ok.0 {
                    ok.end()
                }
                userlib::sys_panic(b"vm1 dies holding a delivered and a queued group")
            }
            // The next incarnation never calls prq-server.
            loop {
                userlib::sys_recv_notification(0);
            }
        })
        .vm("vm2", &[SID_B], move |vm: PrqVm| {
            let mut ok = Checks(true);
            let g1 = vm.wait_answer(SID_A, None, 1, 1);
            let g2 = vm.wait_answer(SID_A, None, 2, 1);
            ok.that(
                "both groups: InvalidRequest once",
                g1 == [INVALID] && g2 == [INVALID],
                (g1, g2),
            );
            ok.end()
        })
}

/// How long the supervisor holds prq-server down in
/// [`death_log_overflow_while_down`] (virtual ms).
pub const PRQ_DOWN_MS: u64 = 60_000;
/// Kernel entries vm1 makes after its route is set, so that the two
/// kills of prq-server ([`PRQ_KILL_STEPS`]) land while it holds the route.
const BUSY_STEPS: u32 = 6_000;
/// The steps at which prq-server is killed: after vm1's route is set
/// (well under 2 000 kernel entries from boot) and within a second of
/// each other, so the supervisor holds it down ([`PRQ_DOWN_MS`]).
pub const PRQ_KILL_STEPS: (u64, u64) = (3_000, 3_100);
/// vm2's deaths while prq-server is down: more than the log holds (16).
const DEATHS_WHILE_DOWN: u32 = 17;

/// The death log overflows while prq-server is down, and a dead owner's
/// route must still go. vm1 routes its stream (prq-server's journal keeps
/// the route), then prq-server is killed twice and held down; vm1 dies,
/// then vm2 dies [`DEATHS_WHILE_DOWN`] times. prq-server is the only
/// death watcher. When it is back it pulls from cursor 0, which the log no
/// longer holds (`Overflowed`): its one walk (`current_task` per owner it
/// holds) must find vm1's incarnation dead and remove its route, so a
/// group on vm1's stream is answered InvalidRequest at once (vm1's next
/// incarnation never calls prq-server, so nothing else can tell it).
/// Without the walk the group would be queued for the dead incarnation
/// and never answered.
pub fn death_log_overflow_while_down(seed: u64) -> crate::prq::PrqRun {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    const TIMER: u32 = 1 << 30;
    let runs1 = Arc::new(AtomicU32::new(0));
    let runs2 = Arc::new(AtomicU32::new(0));
    let r1 = runs1.clone();
    PrqRig::new(SmmuConfig::new())
        .death_watchers(&["prq-server"])
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            if r1.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut ok = Checks(true);
                fault_domain(&vm, &mut ok, SID_A, true);
                if !ok.0 {
                    ok.end()
                }
                log!("vm1: routed");
                for _ in 0..BUSY_STEPS {
                    userlib::sys_get_timer();
                }
                userlib::sys_panic(b"vm1 dies while prq-server is down")
            }
            loop {
                userlib::sys_recv_notification(0);
            }
        })
        .vm("vm2", &[SID_B], move |vm: PrqVm| {
            let n = runs2.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                // After vm1's death.
                while runs1.load(Ordering::SeqCst) < 2 {
                    userlib::sleep_for(100, TIMER);
                }
            }
            if n < DEATHS_WHILE_DOWN {
                // Not a quick re-fault: restarted at once.
                userlib::sleep_for(1_100, TIMER);
                userlib::sys_panic(b"vm2 dies")
            }
            // prq-server is back (held down PRQ_DOWN_MS after its second
            // kill, a few seconds from boot).
            let now = userlib::sys_get_timer();
            let back = PRQ_DOWN_MS + 30_000;
            if now < back {
                userlib::sleep_for(back - now, TIMER);
            }
            let mut ok = Checks(true);
            let s = vm.prq.stats();
            ok.that("prq-server back", s.is_ok(), s);
            vm.group(SID_A, None, 1, 1);
            let g = vm.wait_answer(SID_A, None, 1, 1);
            ok.that(
                "dead owner's route gone: InvalidRequest at once",
                g == [INVALID],
                g,
            );
            ok.end()
        })
        .run_with(seed, |h| {
            h.supervisor_holdoff(PRQ_DOWN_MS, PRQ_DOWN_MS)
                .max_steps(600_000)
                .at_step(PRQ_KILL_STEPS.0, crate::Action::kill("prq-server"))
                .at_step(PRQ_KILL_STEPS.1, crate::Action::kill("prq-server"))
        })
}

/// Fault rounds in [`owners_at_rest`].
pub const REST_ROUNDS: u16 = 8;

/// `owners` VMs, each with a fault-capable stream attached (so prq-server
/// holds a route and an owner entry for each); all but the first then
/// rest. The first, once every one is attached, logs `faults: begin`,
/// raises [`REST_ROUNDS`] single-page groups one by one (fetch, respond
/// Success, wait for the device's answer) and logs `faults: end`.
/// `harness_prq_per_fault_cost_does_not_grow_with_owners` counts what
/// prq-server does between the two lines.
pub fn owners_at_rest(owners: usize) -> PrqRig {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let attached = Arc::new(AtomicUsize::new(0));
    let sid = |k: usize| 0x30 + k as u32;
    let a = attached.clone();
    let mut rig = PrqRig::new(SmmuConfig::new()).vm("vm", &[sid(0)], move |vm: PrqVm| {
        let mut ok = Checks(true);
        fault_domain(&vm, &mut ok, sid(0), true);
        a.fetch_add(1, Ordering::SeqCst);
        ok.that(
            "every owner attached",
            vm.wait_until(|| a.load(Ordering::SeqCst) == owners),
            a.load(Ordering::SeqCst),
        );
        log!("faults: begin");
        for g in 1..=REST_ROUNDS {
            vm.group(sid(0), None, g, 1);
            let (recs, _) = vm.fetch();
            let c = cookie_of(&recs, g);
            let r = vm.respond(&[(c, FaultResponse::Success)]);
            ok.that("respond", r.status == RespondStatus::Complete, r);
            let got = vm.wait_answer(sid(0), None, g, 1);
            ok.that("Success at the device", got == [SUCCESS], got);
        }
        log!("faults: end");
        ok.end()
    });
    for k in 1..owners {
        let a = attached.clone();
        rig = rig.vm(&format!("rest{k}"), &[sid(k)], move |vm: PrqVm| {
            let mut ok = Checks(true);
            fault_domain(&vm, &mut ok, sid(k), true);
            if !ok.0 {
                ok.end()
            }
            a.fetch_add(1, Ordering::SeqCst);
            loop {
                userlib::sys_recv_notification(0);
            }
        });
    }
    rig
}

/// Groups in [`storm`].
pub const STORM_GROUPS: u32 = 1000;
/// Devices (streams) in [`storm`].
pub const STORM_SIDS: [u32; 4] = [0x20, 0x21, 0x22, 0x23];

/// A storm: 1 000 single-page groups from 4 devices, raised in bursts of
/// up to 64 (the PRI queue's size); the owner fetches each burst with one
/// `fetch_faults` and answers it with one `respond`; iommu-server takes
/// each batch with one `take_responses`. Counted from the trace by
/// `harness_prq_storm` (docs/faults.md "Figures").
pub fn storm() -> PrqRig {
    PrqRig::new(SmmuConfig::new()).vm("vm", &STORM_SIDS, |vm: PrqVm| {
        let mut ok = Checks(true);
        for sid in STORM_SIDS {
            fault_domain(&vm, &mut ok, sid, true);
        }
        let mut next = 0u32;
        while next < STORM_GROUPS {
            let n = (STORM_GROUPS - next).min(64);
            let reqs: Vec<Req> = (next..next + n)
                .map(|i| {
                    Req::read(
                        STORM_SIDS[(i % 4) as usize],
                        ((i / 4) % 512) as u16,
                        0x1000 * (i as u64 + 1),
                        true,
                    )
                })
                .collect();
            let o = vm.burst_quiet(&reqs);
            ok.that(
                "burst queued",
                o.iter().all(|o| *o == smmuv3_model::PriOutcome::Queued),
                &o,
            );
            let (recs, lost) = vm.fetch();
            ok.that(
                "whole burst fetched",
                recs.len() == n as usize && lost == 0,
                (recs.len(), lost),
            );
            let answers: Vec<_> = recs
                .iter()
                .map(|r| (r.cookie, FaultResponse::Success))
                .collect();
            let r = vm.respond(&answers);
            ok.that(
                "one respond per burst",
                r.status == RespondStatus::Complete && r.done == n,
                r,
            );
            vm.wait_until(|| vm.bus.smmu.pending_pri_groups().is_empty());
            next += n;
            if !ok.0 {
                break;
            }
        }
        ok.end()
    })
}

/// Page requests racing an unbind: a device task keeps raising groups for
/// the VM's PASID (no stop marker) while the VM answers some and unbinds.
/// Whatever the interleaving (the seed), every group is answered exactly
/// once: by the owner, by the drain, or at once for lack of a route (the
/// end-of-run I1 check), and nothing reaches the VM after its unbind
/// returned.
pub fn unbind_race() -> PrqRig {
    use crate::smmu::{guest_cd, guest_ipa};
    use iommu_server_api::UnbindOutcome;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    // 0: not bound yet; else the PASID. Device progress in `raised`.
    let pasid = Arc::new(AtomicU32::new(0));
    let raised = Arc::new(AtomicU32::new(0));
    let (p1, p2, r1, r2) = (pasid.clone(), pasid, raised.clone(), raised);
    const GROUPS: u32 = 24;
    PrqRig::new(SmmuConfig::new())
        .pasid_alloc(&[7])
        .vm("vm", &[SID_A], move |vm: PrqVm| {
            let mut ok = Checks(true);
            fault_domain(&vm, &mut ok, SID_A, false);
            let Some(h) = vm.pasids.as_ref().and_then(|p| p.alloc().ok()) else {
                ok.that("alloc", false, ());
                ok.end()
            };
            let b = vm
                .iommu
                .bind(StreamId(SID_A), h, guest_cd(guest_ipa(10), 7), true);
            ok.that("bind", b == Ok(1), b);
            p1.store(h.pasid.0, Ordering::SeqCst);
            // Answer what arrives until the device is half way, then unbind.
            while r1.load(Ordering::SeqCst) < GROUPS / 2 {
                let (recs, _) = vm.fetch();
                let a: Vec<_> = recs
                    .iter()
                    .filter(|r| r.flags.contains(FaultFlags::LAST_PAGE))
                    .map(|r| (r.cookie, FaultResponse::Success))
                    .collect();
                if !a.is_empty() {
                    let r = vm.respond(&a);
                    ok.that("respond", r.status == RespondStatus::Complete, r);
                }
                userlib::sys_set_timer(Some(userlib::sys_get_timer() + 1), 1 << 31);
                userlib::sys_recv_notification(1 << 31);
            }
            let u = vm.iommu.unbind(StreamId(SID_A), h.pasid, false);
            ok.that("unbind", u == Ok(UnbindOutcome::Drained), u);
            let (recs, _) = vm.fetch();
            ok.that("nothing after unbind", recs.is_empty(), &recs);
            vm.wait_until(|| r1.load(Ordering::SeqCst) == GROUPS);
            vm.wait_until(|| vm.bus.smmu.pending_pri_groups().is_empty());
            let (recs, _) = vm.fetch();
            ok.that("nothing after unbind, later either", recs.is_empty(), &recs);
            ok.end()
        })
        .vm("device", &[SID_B], move |vm: PrqVm| {
            vm.wait_until(|| p2.load(Ordering::SeqCst) != 0);
            let p = Some(p2.load(Ordering::SeqCst));
            for g in 0..GROUPS {
                vm.burst_quiet(&[
                    Req {
                        sid: SID_A,
                        ssid: p,
                        prgi: g as u16,
                        addr: 0x1000,
                        read: true,
                        write: false,
                        last: false,
                    },
                    Req {
                        sid: SID_A,
                        ssid: p,
                        prgi: g as u16,
                        addr: 0x2000,
                        read: true,
                        write: false,
                        last: true,
                    },
                ]);
                r2.store(g + 1, Ordering::SeqCst);
                // 0-2 ms between groups, from the seed's schedule.
                userlib::sys_set_timer(Some(userlib::sys_get_timer() + (g as u64 % 3)), 1 << 31);
                userlib::sys_recv_notification(1 << 31);
            }
            loop {
                userlib::sys_recv_notification(0);
            }
        })
}

/// Detach of a stream with a fault-capable PASID bound: the detach
/// unbinds every context, so the PASID's delivered group is answered
/// InvalidRequest once too, its cookie refused, and a later request with
/// the PASID is answered at once.
pub fn detach_pasids() -> PrqRig {
    use crate::smmu::{guest_cd, guest_ipa};
    PrqRig::new(SmmuConfig::new())
        .pasid_alloc(&[9])
        .vm("vm", &[SID_A], |vm: PrqVm| {
            let mut ok = Checks(true);
            fault_domain(&vm, &mut ok, SID_A, true);
            let Some(h) = vm.pasids.as_ref().and_then(|p| p.alloc().ok()) else {
                ok.that("alloc", false, ());
                ok.end()
            };
            let p = Some(h.pasid.0);
            let b = vm
                .iommu
                .bind(StreamId(SID_A), h, guest_cd(guest_ipa(10), 7), true);
            ok.that("bind", b == Ok(1), b);
            vm.group(SID_A, p, 1, 1);
            vm.group(SID_A, None, 2, 1);
            let (recs, _) = vm.fetch();
            ok.that("both delivered", recs.len() == 2, &recs);
            let x = vm.iommu.detach(StreamId(SID_A));
            ok.that("detach", x.is_ok(), x);
            let g1 = vm.responses(SID_A, p, 1);
            let g2 = vm.responses(SID_A, None, 2);
            ok.that(
                "PASID and stream groups: InvalidRequest once, before detach returned",
                g1 == [INVALID] && g2 == [INVALID],
                (g1, g2),
            );
            let a: Vec<_> = recs
                .iter()
                .map(|r| (r.cookie, FaultResponse::Success))
                .collect();
            let r = vm.respond(&a);
            ok.that(
                "cookies refused",
                r.status == RespondStatus::UnknownCookie && r.done == 0,
                r,
            );
            vm.group(SID_A, p, 3, 1);
            let g3 = vm.wait_answer(SID_A, p, 3, 1);
            ok.that("no route for the PASID any more", g3 == [INVALID], g3);
            ok.end()
        })
}

/// Event queue overflow (IHI 0070 §7.4) with a 2-entry queue: five
/// faulting DMAs back to back record two events and lose three; the VM
/// fetches the two and is told `lost`, once; the queue works again.
pub fn event_overflow() -> PrqRig {
    use smmuv3_model::DmaError;
    PrqRig::new(SmmuConfig::new())
        .evtq_log2(1)
        .vm("vm", &[SID_A], |vm: PrqVm| {
            let mut ok = Checks(true);
            fault_domain(&vm, &mut ok, SID_A, false);
            let rs: Vec<_> = (0..5u64)
                .map(|i| {
                    vm.device()
                        .dma_write(SID_A, None, 0x40_0000 + i * 0x1000, 8)
                })
                .collect();
            let recorded = rs
                .iter()
                .filter(|r| matches!(r, Err(DmaError::Fault { recorded: true, .. })))
                .count();
            ok.that("two recorded, three lost", recorded == 2, &rs);
            let mut buf =
                [<prq_server_api::EventRecordWire as zerocopy::FromZeros>::new_zeroed(); 32];
            let e = vm.prq.fetch_events(&mut buf);
            ok.that(
                "two records, lost reported",
                matches!(e, Ok(o) if o.count == 2 && o.lost == 1),
                e,
            );
            let e = vm.prq.fetch_events(&mut buf);
            ok.that(
                "lost reported once",
                matches!(e, Ok(o) if o.count == 0 && o.lost == 0),
                e,
            );
            let r = vm.device().dma_write(SID_A, None, 0x50_0000, 8);
            ok.that(
                "recorded again after the acknowledgement",
                matches!(r, Err(DmaError::Fault { recorded: true, .. })),
                r,
            );
            let e = vm.prq.fetch_events(&mut buf);
            ok.that(
                "one more record",
                matches!(e, Ok(o) if o.count == 1 && o.lost == 0),
                e,
            );
            ok.end()
        })
}

/// Teardown of a stream holding a stall (forced stall model): detach
/// makes the STE abort (CFGI_STE + SYNC), drains (the stall record is
/// read and answered RESUME Term, once), then issues CMD_STALL_TERM for
/// the stream under its own SYNC; the transaction ends terminated and the
/// owner never sees the record.
pub fn stall_teardown() -> PrqRig {
    use smmuv3::CommandKind;
    use smmuv3_model::{DmaError, StallModel, StallOutcome, StallState};
    let mut cfg = SmmuConfig::new();
    cfg.stall_model = StallModel::StallForced;
    PrqRig::new(cfg).vm("vm", &[SID_A], |vm: PrqVm| {
        let mut ok = Checks(true);
        fault_domain(&vm, &mut ok, SID_A, true);
        let r = vm.device().dma_write(SID_A, None, 0x40_0000, 8);
        let Err(DmaError::Stalled { stag }) = r else {
            ok.that("stalls", false, r);
            ok.end()
        };
        let mark = vm.bus.mark();
        let x = vm.iommu.detach(StreamId(SID_A));
        ok.that("detach", x.is_ok(), x);
        let cmds = vm.bus.commands_since(mark);
        let pos = |f: &dyn Fn(&CommandKind) -> bool| cmds.iter().position(f);
        let ste = pos(&|c| matches!(c, CommandKind::CfgiSte { sid, .. } if *sid == SID_A));
        let term = pos(&|c| matches!(c, CommandKind::StallTerm { sid } if *sid == SID_A));
        let synced = |i: usize| {
            cmds[i + 1..]
                .iter()
                .any(|c| matches!(c, CommandKind::Sync { .. }))
        };
        ok.that(
            "STE abort + SYNC, then STALL_TERM + SYNC",
            matches!((ste, term), (Some(a), Some(b)) if a < b && synced(a) && synced(b)),
            &cmds,
        );
        let s = vm.device().stall_state(SID_A, stag);
        ok.that(
            "terminated once (RESUME Term from the drain)",
            s == Some(StallState::Resolved(StallOutcome::Terminated(
                smmuv3::ResumeAction::Term,
            ))) && vm.bus.smmu.resumes(SID_A, stag).len() == 1,
            s,
        );
        let (recs, _) = vm.fetch();
        ok.that("owner saw nothing", recs.is_empty(), recs);
        ok.end()
    })
}

/// Issue 7 item 5: on an SMMU whose stall model is "stall and terminate"
/// (stalling optional per stream) a stream whose stage-1 domain is not
/// fault-capable gets STE.S1STALLD = 1 — nobody would answer its stalls —
/// and a fault-capable one keeps S1STALLD = 0. Asserted in the STE the
/// model reads, and at the device: the non-fault-capable stream's fault
/// terminates, it never stalls. With `forced` the SMMU forces stalls and
/// S1STALLD = 1 would be ILLEGAL (§5.2): never set.
pub fn stall_disabled(forced: bool) -> PrqRig {
    use smmuv3_model::{DmaError, StallModel};
    let mut cfg = SmmuConfig::new();
    cfg.stall_model = if forced {
        StallModel::StallForced
    } else {
        StallModel::StallAndTerminate
    };
    PrqRig::new(cfg).vm("vm", &[SID_A, SID_B], move |vm: PrqVm| {
        let mut ok = Checks(true);
        for (sid, fc) in [(SID_A, false), (SID_B, true)] {
            let d = vm.iommu.create_s1_domain(fc);
            ok.that("create stage-1 domain", d.is_ok(), d);
            let a = vm.iommu.attach(StreamId(sid), d.unwrap_or(DomainId(0)));
            ok.that("attach", a.is_ok(), a);
        }
        let (a, b) = (vm.bus.ste(SID_A), vm.bus.ste(SID_B));
        let want_a = !forced;
        ok.that(
            "S1STALLD: set on the non-fault-capable stream only where allowed",
            a.is_some_and(|s| s.s1stalld() == want_a),
            a,
        );
        ok.that(
            "S1STALLD: clear on the fault-capable stream",
            b.is_some_and(|s| !s.s1stalld()),
            b,
        );
        if !forced {
            let r = vm.device().dma_write(SID_A, None, 0x40_0000, 8);
            ok.that(
                "the non-fault-capable stream's fault terminates, never stalls",
                r.is_err() && !matches!(r, Err(DmaError::Stalled { .. })),
                r,
            );
        }
        ok.end()
    })
}

/// An event-queue write abort (IHI 0070 §7.2.2: the interconnect reports
/// an external abort; what QEMU 10 does for a full queue): the record is
/// lost, PROD stays, GERROR.EVENTQ_ABT_ERR is raised and delivery stops.
/// iommu-server, the GERROR owner, acknowledges it and calls
/// `event_records_lost`; prq-server delivers the record written before it
/// and every VM owning a stream — vm1, whose record it was, and vm2, which
/// had none — reports `lost` once. Recording resumes after the
/// acknowledgement (the model writes nothing while the abort is active).
pub fn event_abort() -> PrqRig {
    use smmuv3_model::DmaError;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    // 0: start, 1: vm1 made the abort, 2: vm2 saw `lost`.
    let step = Arc::new(AtomicU8::new(0));
    let (s1, s2) = (step.clone(), step);
    let fetch = |vm: &PrqVm| {
        let mut buf = [<prq_server_api::EventRecordWire as zerocopy::FromZeros>::new_zeroed(); 32];
        let o = vm.prq.fetch_events(&mut buf);
        let recs: Vec<prq_server_api::EventRecord> = match o {
            Ok(o) => buf[..o.count as usize]
                .iter()
                .filter_map(<prq_server_api::EventRecord as idl_runtime::Fixed>::from_wire)
                .collect(),
            Err(_) => Vec::new(),
        };
        (recs, o.map(|o| o.lost).unwrap_or(0))
    };
    PrqRig::new(SmmuConfig::new())
        .vm("vm1", &[SID_A], move |vm: PrqVm| {
            let mut ok = Checks(true);
            fault_domain(&vm, &mut ok, SID_A, false);
            let r = vm.device().dma_write(SID_A, None, 0x40_0000, 8);
            ok.that(
                "first record written",
                matches!(r, Err(DmaError::Fault { recorded: true, .. })),
                r,
            );
            vm.bus.smmu.abort_eventq_writes(1);
            let r = vm.device().dma_write(SID_A, None, 0x41_0000, 8);
            ok.that(
                "second record aborted",
                matches!(
                    r,
                    Err(DmaError::Fault {
                        recorded: false,
                        ..
                    })
                ),
                r,
            );
            s1.store(1, Ordering::SeqCst);
            let got = std::cell::RefCell::new((Vec::new(), 0u32));
            vm.wait_until(|| {
                let (recs, lost) = fetch(&vm);
                let mut g = got.borrow_mut();
                g.0.extend(recs);
                g.1 += lost;
                g.1 > 0
            });
            let (recs, lost) = got.into_inner();
            ok.that("lost reported once", lost == 1, lost);
            ok.that(
                "the record written before the abort, intact",
                recs.len() == 1
                    && recs[0].sid.0 == SID_A
                    && recs[0].event_id == 0x10
                    && recs[0].words[2] == 0x40_0000,
                &recs,
            );
            let again = fetch(&vm);
            ok.that("nothing more", again.0.is_empty() && again.1 == 0, &again);
            let r = vm.device().dma_write(SID_A, None, 0x42_0000, 8);
            ok.that(
                "recorded again after the acknowledgement",
                matches!(r, Err(DmaError::Fault { recorded: true, .. })),
                r,
            );
            let e = fetch(&vm);
            ok.that(
                "the new record, no lost",
                e.0.len() == 1 && e.0[0].words[2] == 0x42_0000 && e.1 == 0,
                &e,
            );
            ok.that(
                "GERROR.EVENTQ_ABT_ERR acknowledged",
                !vm.bus
                    .smmu
                    .gerror_is_active(smmuv3::regs::GERROR::EVENTQ_ABT_ERR),
                (),
            );
            vm.wait_until(|| s1.load(Ordering::SeqCst) == 2);
            ok.that("vm2 saw lost", s1.load(Ordering::SeqCst) == 2, ());
            ok.end()
        })
        .vm("vm2", &[SID_B], move |vm: PrqVm| {
            let mut ok = Checks(true);
            vm.wait_until(|| s2.load(Ordering::SeqCst) >= 1);
            let got = std::cell::RefCell::new((Vec::new(), 0u32));
            vm.wait_until(|| {
                let (recs, lost) = fetch(&vm);
                let mut g = got.borrow_mut();
                g.0.extend(recs);
                g.1 += lost;
                g.1 > 0
            });
            let (recs, lost) = got.into_inner();
            ok.that(
                "vm2: lost once, no records of vm1's stream",
                lost == 1 && recs.is_empty(),
                (&recs, lost),
            );
            if !ok.0 {
                ok.end()
            }
            s2.store(2, Ordering::SeqCst);
            loop {
                userlib::sys_recv_notification(0);
            }
        })
}
