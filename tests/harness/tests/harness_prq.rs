//! prq-server on the SMMUv3 model with the real iommu-server: every edge
//! of the fault path, each over 50 seeds, each run ending with the
//! invariant check (I1 exactly one response per group at the device, I2
//! records only to the stream's owner; see `harness::prq`).

use harness::prq::{PrqRig, PrqVm};
use harness::smmu::{SID_A, SID_B};
use iommu_server_api::{DomainId, StreamId};
use prq_server_api::{Cookie, FaultFlags, FaultResponse, RespondStatus};
use smmuv3_model::SmmuConfig;
use userlib::log;

const SEEDS: u64 = 50;
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

/// One group's cookie from a fetch (all records of a group share it).
fn cookie_of(recs: &[prq_server_api::FaultRecord], group: u16) -> Cookie {
    recs.iter()
        .find(|r| r.group == group)
        .map(|r| r.cookie)
        .unwrap_or(Cookie(0))
}

fn for_seeds(f: impl Fn(u64) -> harness::prq::PrqRun) {
    for seed in 0..SEEDS {
        f(seed).check();
    }
}

/// A group of three requests reaches its owner as three records with one
/// cookie (Last only on the third); Success reaches the device once; the
/// same cookie twice is refused; Failure from an owner is refused and
/// changes nothing; Invalid reaches the device as InvalidRequest (0b01).
#[test]
fn harness_prq_fault_respond() {
    for_seeds(|seed| {
        PrqRig::new(SmmuConfig::new())
            .vm("vm", &[SID_A], |vm: PrqVm| {
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
            .run(seed)
    });
}
