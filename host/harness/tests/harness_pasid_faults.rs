//! Free before unbind with faults in flight: the real pasid-alloc,
//! prq-server and iommu-server on the SMMUv3 model (`harness::prq::PrqRig`).
//! The defunct drain iommu-server runs for pasid-alloc is the same unbind
//! as a VM's last unbind, prq-server's drain included: every group of the
//! PASID is answered InvalidRequest exactly once at the device before the
//! PASID can be handed out again. Every run ends with I1 / I2
//! (`PrqRun::check`) and I3 (`harness::smmu::check_i3`).

use harness::prq::{PrqRig, PrqVm};
use harness::smmu::{guest_cd, guest_ipa, SID_A};
use iommu_server_api::{DomainId, StreamId, UnbindOutcome};
use pasid_alloc_api::{PasidAllocError, PasidGen, PasidHandle};
use prq_server_api::{Cookie, FaultRecord, FaultResponse, RespondStatus};
use smmuv3::CommandKind;
use smmuv3_model::SmmuConfig;
use std::sync::{Arc, Mutex};

const SEEDS: u64 = 24;
const INVALID: u64 = 0b01;

fn cookie_of(recs: &[FaultRecord], group: u16) -> Cookie {
    recs.iter()
        .find(|r| r.group == group)
        .map(|r| r.cookie)
        .unwrap_or(Cookie(0))
}

/// What the VM saw, checked by the test after the run.
#[derive(Default, Debug)]
struct Seen {
    failed: Vec<String>,
    /// Refused allocs while the drain ran.
    refused: u32,
}

fn that(seen: &Mutex<Seen>, what: &str, good: bool, got: impl std::fmt::Debug) {
    if !good {
        userlib::log!("FAILED {}: got {:?}", what, got);
        seen.lock()
            .unwrap()
            .failed
            .push(format!("{what}: got {got:?}"));
    }
}

#[test]
fn harness_pasid_free_before_unbind_with_faults_answers_each_group_once() {
    for seed in 0..SEEDS {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        // One PASID in the space: any alloc after the free can only be
        // the freed PASID again, so reuse before the drain would show.
        let rig = PrqRig::new(SmmuConfig::new())
            .pasid_alloc(&[])
            .pasid_space_bits(1);
        let state = rig.pasid_state();
        let rig = rig.vm("vm", &[SID_A], move |vm: PrqVm| {
            let ok = &*s;
            let d = vm.iommu.create_s2_domain(false);
            that(ok, "create domain", d.is_ok(), d);
            let a = vm.iommu.attach(StreamId(SID_A), d.unwrap_or(DomainId(0)));
            that(ok, "attach", a.is_ok(), a);
            let pa = vm.pasids.as_ref().expect("pasid-alloc");
            let h = pa.alloc();
            that(ok, "alloc", h.is_ok(), h);
            let Ok(h) = h else { userlib::sys_shutdown(1) };
            let p = Some(h.pasid.0);
            let b = vm
                .iommu
                .bind(StreamId(SID_A), h, guest_cd(guest_ipa(10), 7), true);
            that(ok, "bind fault-capable", b == Ok(1), b);
            // Groups 1 (two requests) and 2 delivered, cookies held;
            // group 3 queued, never fetched; group 4 partial (no Last).
            vm.group(SID_A, p, 1, 2);
            vm.group(SID_A, p, 2, 1);
            let (recs, _) = vm.fetch();
            that(ok, "3 records delivered", recs.len() == 3, &recs);
            let (c1, c2) = (cookie_of(&recs, 1), cookie_of(&recs, 2));
            vm.group(SID_A, p, 3, 1);
            vm.request(SID_A, p, 4, 0x9000, true, false, false);
            for g in 1..=4 {
                let r = vm.responses(SID_A, p, g);
                that(ok, "nothing answered before the free", r.is_empty(), (g, r));
            }

            let f = pa.free(h);
            that(ok, "free", f == Ok(()), f);
            // Ask until the PASID comes back: only after mark_drained.
            let mut refused = 0u32;
            let again = loop {
                match pa.alloc() {
                    Ok(x) => break Some(x),
                    Err(PasidAllocError::NoSpace) if refused < 5000 => refused += 1,
                    Err(_) => break None,
                }
            };
            ok.lock().unwrap().refused = refused;
            let next = PasidHandle {
                pasid: h.pasid,
                generation: PasidGen(h.generation.0 + 1),
            };
            that(ok, "handed out again, next generation", again == Some(next), again);
            // By the time it could be handed out, the device held one
            // InvalidRequest for each complete group (the drain ran before
            // mark_drained); the partial one waits for its Last.
            for g in 1..=3 {
                let r = vm.responses(SID_A, p, g);
                that(ok, "InvalidRequest once, before reuse", r == [INVALID], (g, r));
            }
            let r4 = vm.responses(SID_A, p, 4);
            that(ok, "partial: nothing yet", r4.is_empty(), r4);
            // The partial group's Last finds no route: answered then, once.
            vm.request(SID_A, p, 4, 0xa000, true, false, true);
            let r4 = vm.wait_answer(SID_A, p, 4, 1);
            that(ok, "late Last: InvalidRequest once", r4 == [INVALID], r4);
            // The delivered cookies were revoked by the drain.
            for c in [c1, c2] {
                let r = vm.respond(&[(c, FaultResponse::Success)]);
                that(
                    ok,
                    "delivered cookie refused",
                    r.status == RespondStatus::UnknownCookie,
                    r,
                );
            }
            let st = vm.prq.stats();
            that(
                ok,
                "nothing of the PASID left in prq-server",
                matches!(st, Ok(s) if s.partial_groups == 0 && s.queued_groups == 0 && s.delivered_groups == 0),
                st,
            );
            // The old owner's late unbind is a clean no-op.
            let u = vm.iommu.unbind(StreamId(SID_A), h.pasid, false);
            that(ok, "late unbind NotBound", u == Ok(UnbindOutcome::NotBound), u);
            // Nothing answered twice afterwards.
            for g in 1..=4 {
                let r = vm.responses(SID_A, p, g);
                that(ok, "still once", r == [INVALID], (g, r));
            }
            userlib::sys_shutdown(if ok.lock().unwrap().failed.is_empty() { 0 } else { 1 })
        });
        let run = rig.run(seed);
        let s = seen.lock().unwrap();
        assert!(s.failed.is_empty(), "seed {seed}: {:#?}", s.failed);
        // I1 (each group exactly one response at the device), I2, and the
        // I3 end check of the run (pasid-alloc's alloc replies against the
        // mark_drained calls).
        run.check();
        // Defunct at once: the dump pasid-alloc published after the free
        // (before any mark_drained) shows it.
        let hist = state.history();
        let at_free = hist
            .iter()
            .position(|d| d.contains("0x1: Defunct"))
            .unwrap_or_else(|| panic!("seed {seed}: PASID 1 never defunct"));
        assert!(
            hist[at_free].contains("defunct List { head: 1, tail: 1, len: 1 }"),
            "seed {seed}: {}",
            hist[at_free]
        );
        // The CD of the PASID was cleared and invalidated by the drain.
        let cmds = run.bus.commands_since(0);
        assert!(
            cmds.contains(&CommandKind::CfgiCd {
                sid: SID_A,
                ssid: 1,
                leaf: true
            }),
            "seed {seed}: {cmds:?}"
        );
    }
}
