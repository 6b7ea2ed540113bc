//! The vmm-frontend (one per VM) between a guest model and the real
//! iommu-server, prq-server and pasid-alloc on the SMMUv3 model
//! (`harness::vmm::VmmRig`, docs/vmm-frontend.md). Each run ends with the
//! guest scripts' expectations, I1 at the device and the guest-name check
//! (`VmmRun::check`).

use harness::smmu::{guest_cd, ram_pa, RAM_SIZE, TABLES_PA, TABLES_SIZE};
use harness::vmm::{Guest, VmmRig, VmmRun, GUEST_RAM_IPA};
use harness::vmm_scenarios::{
    bring_up, streams_a, streams_b, INVALID, L1, PSID_A, PSID_B, SUCCESS, TARGET, VA, VSID,
};
use harness::Action;
use iommu_server_api::UnbindOutcome;
use prq_server_api::{FaultFlags, FaultResponse, RespondStatus};
use smmuv3::{Command, CommandKind};
use smmuv3_model::SmmuConfig;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use vmm_frontend_api::{
    GuestPasid as GP, GuestSteMode, InvalidateRefusal, VirtStreamId as V, VmmFrontendError as E,
};

#[test]
fn harness_vmm_pasid_map_is_not_the_identity() {
    for seed in 0..8 {
        let rig = VmmRig::new(SmmuConfig::new()).pasid_first(&[7, 3, 12]).vm(
            "a",
            &streams_a(),
            4,
            |g: Guest| {
                let host = bring_up(&g, 1, 5);
                g.that(
                    "host PASID is not the guest's",
                    host.is_some_and(|h| h != 1),
                    host,
                );
                for p in [2, 3] {
                    let a = g.fe.alloc_pasid(GP(p));
                    g.that("alloc more", a.is_ok(), a);
                }
                let map = g.state.get().pasids;
                g.that(
                    "no guest PASID maps to itself",
                    map.len() == 3 && map.iter().all(|(gp, hp)| gp != hp),
                    &map,
                );
                // The device, given the host PASID, reaches the guest's
                // page through the guest's stage 1 over the VM's stage 2.
                let pa = g.dma.write(PSID_A, host, VA, b"guest data");
                g.that(
                    "DMA lands in the guest's page",
                    pa == Ok(g.ram.page(TARGET)),
                    pa,
                );
                // The guest PASID number on the wire is not a context.
                let wrong = g.dma.write(PSID_A, Some(1), VA, b"x");
                g.that(
                    "guest number at the device: no context",
                    wrong.is_err(),
                    wrong,
                );
                g.finish()
            },
        );
        rig.run(seed).check(&[streams_a()]);
    }
}

#[test]
fn harness_vmm_two_vms_same_guest_pasids_stay_apart() {
    for seed in 0..8 {
        let script = |g: Guest| {
            let host = bring_up(&g, 1, 5);
            let psid = g.psid(VSID);
            let pa = g.dma.write(psid, host, VA, g.name.as_bytes());
            g.that(
                "DMA lands in this VM's RAM",
                pa == Ok(g.ram.page(TARGET)),
                pa,
            );
            // The same guest PASID and vSID name nothing of the other VM:
            // its invalidations reach only this VM's physical stream.
            let mark = g.bus.mark();
            let inv = g.invalidate(&[Command::cfgi_cd(VSID, 1, true)]);
            g.that("cfgi_cd", matches!(inv, Ok(o) if o.done == 1), inv);
            let cmds = g.bus.commands_since(mark);
            let host1 = host.unwrap_or(0);
            g.that(
                "CFGI_CD reaches this VM's pSID and host PASID only",
                cmds.iter().any(|c| {
                    *c == CommandKind::CfgiCd {
                        sid: psid,
                        ssid: host1,
                        leaf: true,
                    }
                }) && !cmds
                    .iter()
                    .any(|c| matches!(c, CommandKind::CfgiCd { ssid: 1, .. })),
                &cmds,
            );
            // A vSID this VM does not have is refused.
            let s = g.fe.set_ste(V(2), GuestSteMode::Abort);
            g.that("unknown vSID", s == Err(E::NotFound), s);
            g.finish()
        };
        let run = VmmRig::new(SmmuConfig::new())
            .pasid_first(&[5, 6])
            .vm("a", &streams_a(), 4, script)
            .vm("b", &streams_b(), 4, script)
            .run(seed);
        run.check(&[streams_a(), streams_b()]);
        // Both VMs called it guest PASID 1; the host PASIDs differ, and
        // each device's write landed in its own VM's RAM only.
        let (a, b) = (run.states[0].get().pasids, run.states[1].get().pasids);
        assert_eq!(a.len(), 1, "seed {seed}");
        assert_eq!(b.len(), 1, "seed {seed}");
        assert_eq!(a[0].0, b[0].0, "seed {seed}");
        assert_ne!(a[0].1, b[0].1, "seed {seed}: host PASIDs must differ");
        for (k, name) in [(0usize, "guest-a"), (1, "guest-b")] {
            let mut buf = vec![0u8; name.len()];
            run.bus
                .mem
                .read(ram_pa(k) + TARGET * 0x1000, &mut buf)
                .unwrap();
            assert_eq!(buf, name.as_bytes(), "seed {seed}: VM {k}'s page");
        }
    }
}

#[test]
fn harness_vmm_invalidate_stops_at_first_refused_and_applied_the_first() {
    for seed in 0..8 {
        let run = VmmRig::new(SmmuConfig::new()).vm("a", &streams_a(), 4, |g: Guest| {
            let host = bring_up(&g, 1, 5);
            let h = host.unwrap_or(0);
            // Warm the TLB, then change the guest's page table: the device
            // still uses the old translation until the guest invalidates.
            let pa = g.dma.write(PSID_A, host, VA, b"old");
            g.that("first DMA", pa == Ok(g.ram.page(TARGET)), pa);
            g.ram.stage1(L1, VA, g.ipa(TARGET + 1), |i| g.ipa(i));
            let stale = g.dma.write(PSID_A, host, VA, b"stale");
            g.that("stale before invalidation", stale == Ok(g.ram.page(TARGET)), stale);
            let mark = g.bus.mark();
            let r = g.invalidate(&[
                Command::tlbi_nh_va(0x77, 5, VA, true),
                Command::cfgi_ste(PSID_A, true),
                Command::tlbi_nh_all(0),
            ]);
            g.that(
                "1 done, Rejected, opcode named",
                matches!(r, Ok(o) if o.done == 1
                    && o.status == iommu_server_api::InvalidateStatus::Rejected
                    && o.refusal == InvalidateRefusal::Opcode),
                r,
            );
            let cmds = g.bus.commands_since(mark);
            g.that(
                "the first was issued with the VM's VMID, nothing after it",
                cmds.iter().any(|c| matches!(c, CommandKind::TlbiNhVa { vmid, asid: 5, .. } if *vmid != 0x77))
                    && !cmds.iter().any(|c| matches!(c, CommandKind::CfgiSte { .. } | CommandKind::TlbiNhAll { .. })),
                &cmds,
            );
            let pa = g.dma.write(PSID_A, host, VA, b"new");
            g.that("the first was applied: new mapping", pa == Ok(g.ram.page(TARGET + 1)), pa);
            // Each refused kind names why, and issues nothing.
            let cases: [(Command, InvalidateRefusal); 6] = [
                (Command::cfgi_cd(9, 1, true), InvalidateRefusal::Stream),
                (Command::cfgi_cd(VSID, 2, true), InvalidateRefusal::Pasid),
                (Command::cfgi_cd_all(PSID_B), InvalidateRefusal::Stream),
                (Command::tlbi_s12_vmall(3), InvalidateRefusal::Opcode),
                (Command::tlbi_el2_all(), InvalidateRefusal::Opcode),
                (Command::atc_inv(VSID, Some(3), 0, 52, false), InvalidateRefusal::Pasid),
            ];
            for (c, why) in cases {
                let mark = g.bus.mark();
                let r = g.invalidate(&[c]);
                g.that(
                    &format!("{:?} refused: {:?}", c.decode(), why),
                    matches!(r, Ok(o) if o.done == 0 && o.refusal == why),
                    r,
                );
                let cmds = g.bus.commands_since(mark);
                g.that("nothing issued", cmds.is_empty(), cmds);
            }
            // ATC_INV with the guest PASID reaches the device with the host one.
            let mark = g.bus.mark();
            let r = g.invalidate(&[Command::atc_inv(VSID, Some(1), 0, 52, false)]);
            g.that("atc_inv", matches!(r, Ok(o) if o.done == 1), r);
            let cmds = g.bus.commands_since(mark);
            g.that(
                "ATC_INV: pSID and host PASID",
                cmds.iter().any(|c| matches!(c, CommandKind::AtcInv { sid, ssid: Some(s), .. } if *sid == PSID_A && *s == h)),
                &cmds,
            );
            g.finish()
        });
        run.run(seed).check(&[streams_a()]);
    }
}

/// A stage-2 translation fault: DMA without PASID to an IPA outside the
/// VM's RAM on a stage-2-only stream.
fn s2_fault(g: &Guest, i: u64) {
    let r = g.dma.write(
        PSID_A,
        None,
        GUEST_RAM_IPA + RAM_SIZE as u64 + i * 0x1000,
        b"x",
    );
    g.that("DMA outside RAM faults", r.is_err(), r);
}

#[test]
fn harness_vmm_veventq_depth_two_three_events_lost_then_recovers() {
    for seed in 0..8 {
        let run = VmmRig::new(SmmuConfig::new()).vm("a", &streams_a(), 2, |g: Guest| {
            let s = g.fe.set_ste(V(VSID), GuestSteMode::S2Only);
            g.that("S2Only", s.is_ok(), s);
            for i in 0..3 {
                s2_fault(&g, i);
            }
            // Wait until the frontend has all three (two queued, one lost).
            let got = g.wait_until(200, || g.state.get().dump.contains("ev_lost: 1"));
            g.that("three events reached the frontend", got, g.state.get().dump);
            let e = g.fetch_events();
            g.that(
                "two events, one LOST",
                matches!(&e, Ok((v, 1)) if v.len() == 2),
                &e,
            );
            if let Ok((v, _)) = &e {
                for ev in v {
                    g.that(
                        "vSID in the record, IPA kept",
                        ev.vsid == V(VSID)
                            && (ev.words[0] >> 32) as u32 == VSID
                            && ev.event_id == 0x10,
                        ev,
                    );
                }
            }
            let e = g.fetch_events();
            g.that(
                "then empty, nothing lost",
                matches!(&e, Ok((v, 0)) if v.is_empty()),
                &e,
            );
            s2_fault(&g, 7);
            let got = g.wait_until(200, || g.state.get().dump.contains("ev_len: 1"));
            g.that("fourth event queued", got, g.state.get().dump);
            let e = g.fetch_events();
            g.that(
                "recovered: one event, none lost",
                matches!(&e, Ok((v, 0)) if v.len() == 1),
                &e,
            );
            g.finish()
        });
        run.run(seed).check(&[streams_a()]);
    }
}

/// The fault round trip in guest names: page requests for the host PASID
/// reach the guest with vSID and guest PASID; its Success reaches the
/// device as PRI_RESP Success; Failure is refused.
fn round_trip(g: Guest) {
    let host = bring_up(&g, 3, 9);
    g.page_requests(PSID_A, host, 4, 2);
    g.page_requests(PSID_A, host, 5, 1);
    let mut recs = Vec::new();
    for _ in 0..50 {
        if let Ok((r, _)) = g.fetch_faults() {
            recs.extend(r);
        }
        if recs.len() >= 3 {
            break;
        }
        g.wait_posted(5);
    }
    g.that(
        "3 records in guest names",
        recs.len() == 3
            && recs.iter().all(|r| {
                r.vsid == V(VSID) && r.pasid == GP(3) && r.flags.contains(FaultFlags::PASID_VALID)
            }),
        &recs,
    );
    let c4 = recs.iter().find(|r| r.group == 4).map(|r| r.cookie);
    let c5 = recs.iter().find(|r| r.group == 5).map(|r| r.cookie);
    if let (Some(c4), Some(c5)) = (c4, c5) {
        let r = g.respond(&[(c4, FaultResponse::Failure)]);
        g.that(
            "Failure not allowed",
            matches!(r, Ok(o) if o.done == 0 && o.status == RespondStatus::NotAllowed),
            r,
        );
        let r = g.respond(&[(c4, FaultResponse::Success), (c5, FaultResponse::Invalid)]);
        g.that("answered", matches!(r, Ok(o) if o.done == 2), r);
        let r = g.respond(&[(c4, FaultResponse::Success)]);
        g.that(
            "twice: unknown",
            matches!(r, Ok(o) if o.status == RespondStatus::UnknownCookie),
            r,
        );
    }
    g.wait_until(100, || {
        !g.responses(PSID_A, host, 4).is_empty() && !g.responses(PSID_A, host, 5).is_empty()
    });
    let (r4, r5) = (g.responses(PSID_A, host, 4), g.responses(PSID_A, host, 5));
    g.that("Success at the device", r4 == [SUCCESS], r4);
    g.that("Invalid at the device", r5 == [INVALID], r5);
    // A group delivered and never answered: the unbind's drain answers it
    // Invalid at the device and the frontend forgets its cookie.
    g.page_requests(PSID_A, host, 6, 1);
    let mut n = 0;
    for _ in 0..50 {
        n += g.fetch_faults().map(|(r, _)| r.len()).unwrap_or(0);
        if n > 0 {
            break;
        }
        g.wait_posted(5);
    }
    g.that("group 6 delivered", n == 1, n);
    let u = g.fe.unbind(V(VSID), GP(3), false);
    g.that("unbind drained", u == Ok(UnbindOutcome::Drained), u);
    let r6 = g.responses(PSID_A, host, 6);
    g.that("the drain answered group 6 Invalid", r6 == [INVALID], r6);
    let d = g.state.get().dump;
    g.that("no delivered cookie left", !d.contains("Some(Delivered"), d);
    let f = g.fe.free_pasid(GP(3));
    g.that("free", f.is_ok(), f);
    g.finish()
}

#[test]
fn harness_vmm_fault_round_trip_in_guest_names_50_seeds() {
    for seed in 0..50 {
        VmmRig::new(SmmuConfig::new())
            .pasid_first(&[21])
            .vm("a", &streams_a(), 4, round_trip)
            .run(seed)
            .check(&[streams_a()]);
    }
}

#[test]
fn harness_vmm_guest_dies_with_delivered_faults_answered_invalid() {
    for seed in 0..20 {
        let lives = Arc::new(AtomicU32::new(0));
        let run = VmmRig::new(SmmuConfig::new())
            .pasid_first(&[30])
            .vm("a", &streams_a(), 4, move |g: Guest| {
                if lives.fetch_add(1, Ordering::SeqCst) == 0 {
                    // First life: take faults and die holding them.
                    let host = bring_up(&g, 1, 5);
                    g.page_requests(PSID_A, host, 1, 1);
                    g.page_requests(PSID_A, host, 2, 2);
                    let mut n = 0;
                    for _ in 0..50 {
                        n += g.fetch_faults().map(|(r, _)| r.len()).unwrap_or(0);
                        if n >= 3 {
                            break;
                        }
                        g.wait_posted(5);
                    }
                    g.that("faults delivered", n == 3, n);
                    g.that(
                        "nothing answered yet",
                        g.responses(PSID_A, host, 1).is_empty(),
                        (),
                    );
                    userlib::sys_panic(b"guest dies holding delivered faults");
                }
                // Second life: everything of the first was reclaimed.
                let groups: Vec<_> = g.log.lock().raised.keys().cloned().collect();
                let answered = g.wait_until(300, || {
                    groups
                        .iter()
                        .all(|k| !g.responses(k.sid, k.ssid, k.prgi).is_empty())
                });
                g.that("every delivered group answered", answered, &groups);
                for k in &groups {
                    let r = g.responses(k.sid, k.ssid, k.prgi);
                    g.that("Invalid at the device", r == [INVALID], (k, &r));
                }
                // A request from the new incarnation finds a clean vIOMMU.
                let c = g.fe.caps();
                g.that("caps", c.is_ok(), c);
                let st = g.state.get();
                g.that(
                    "clean frontend: no PASIDs, binds or modes",
                    st.pasids.is_empty()
                        && !st.dump.contains("Binds {")
                        && !st.dump.contains("Some(Bind {"),
                    &st.dump,
                );
                let old = groups.first().and_then(|k| k.ssid);
                let dma = g.dma.write(PSID_A, old, VA, b"x");
                g.that("old context gone at the device", dma.is_err(), dma);
                // It starts over like a new guest.
                let host = bring_up(&g, 1, 5);
                let pa = g.dma.write(PSID_A, host, VA, b"again");
                g.that("works again", pa == Ok(g.ram.page(TARGET)), pa);
                g.finish()
            })
            .run(seed);
        run.check(&[streams_a()]);
    }
}

/// A state dump of everything a refused request must leave as it was:
/// the frontend's state, iommu-server's tables (stream table, CD tables,
/// page tables and queues, all in its `smmu-tables` memory) and
/// pasid-alloc's table.
fn dump(g: &Guest) -> (String, Vec<u8>, Option<String>) {
    let mut t = vec![0u8; TABLES_SIZE];
    let _ = g.bus.mem.read(TABLES_PA, &mut t);
    (g.state.get().dump, t, g.pasid_state.get())
}

type Refused = (&'static str, fn(&Guest) -> Result<(), E>, E);

fn refusals() -> Vec<Refused> {
    vec![
        (
            "alloc guest PASID 0",
            |g| g.fe.alloc_pasid(GP(0)),
            E::Invalid,
        ),
        ("alloc again", |g| g.fe.alloc_pasid(GP(1)), E::AlreadyExists),
        ("alloc over quota", |g| g.fe.alloc_pasid(GP(3)), E::NoSpace),
        (
            "alloc beyond the PASID bits",
            |g| g.fe.alloc_pasid(GP(1 << 21)),
            E::Invalid,
        ),
        ("free unknown", |g| g.fe.free_pasid(GP(9)), E::NotFound),
        (
            "set_ste unknown vSID",
            |g| g.fe.set_ste(V(PSID_A), GuestSteMode::S2Only),
            E::NotFound,
        ),
        (
            "S2Only while bound",
            |g| g.fe.set_ste(V(VSID), GuestSteMode::S2Only),
            E::Busy,
        ),
        (
            "Nested: more CD bits than PASID bits",
            |g| {
                g.fe.set_ste(
                    V(VSID),
                    GuestSteMode::Nested {
                        fault_capable: false,
                        cd_max_bits: 30,
                        cd_table_ipa: 0,
                    },
                )
            },
            E::Invalid,
        ),
        (
            "Nested: CD table outside RAM",
            |g| {
                g.fe.set_ste(
                    V(VSID),
                    GuestSteMode::Nested {
                        fault_capable: false,
                        cd_max_bits: 2,
                        cd_table_ipa: GUEST_RAM_IPA + RAM_SIZE as u64,
                    },
                )
            },
            E::Invalid,
        ),
        (
            "bind unknown PASID",
            |g| {
                g.fe.bind(V(VSID), GP(7), guest_cd(g.ipa(L1), 5), true)
                    .map(|_| ())
            },
            E::NotFound,
        ),
        (
            "bind tables outside RAM",
            |g| {
                g.fe.bind(V(VSID), GP(2), guest_cd(0x4000_0000, 5), true)
                    .map(|_| ())
            },
            E::Invalid,
        ),
        (
            "bind unknown vSID",
            |g| {
                g.fe.bind(V(PSID_A), GP(2), guest_cd(g.ipa(L1), 5), true)
                    .map(|_| ())
            },
            E::NotFound,
        ),
        (
            "bind with a bad TCR",
            |g| {
                let mut cd = guest_cd(g.ipa(L1), 6);
                cd.tcr |= 1 << 7;
                g.fe.bind(V(VSID), GP(2), cd, true).map(|_| ())
            },
            E::Invalid,
        ),
        (
            "unbind unknown PASID",
            |g| g.fe.unbind(V(VSID), GP(9), false).map(|_| ()),
            E::NotFound,
        ),
        (
            "respond to a cookie never delivered",
            |g| match g.respond(&[(prq_server_api::Cookie(0x1234), FaultResponse::Success)]) {
                Ok(o) if o.status == RespondStatus::UnknownCookie => Err(E::NotFound),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
            E::NotFound,
        ),
        (
            "invalidate a command not allowed",
            |g| match g.invalidate(&[Command::cfgi_ste(PSID_A, true)]) {
                Ok(o) if o.done == 0 && o.refusal == InvalidateRefusal::Opcode => Err(E::Invalid),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
            E::Invalid,
        ),
    ]
}

#[test]
fn harness_vmm_each_refusal_leaves_the_state_unchanged() {
    for seed in 0..6 {
        let rig = VmmRig::new(SmmuConfig::new()).pasid_quota(2);
        let _ = rig.pasid_state();
        let run = rig.vm("a", &streams_a(), 4, |g: Guest| {
            let _host = bring_up(&g, 1, 5);
            let a = g.fe.alloc_pasid(GP(2));
            g.that("second PASID", a.is_ok(), a);
            for (what, f, want) in refusals() {
                let before = dump(&g);
                let mark = g.bus.mark();
                let got = f(&g);
                let after = dump(&g);
                g.that(what, got == Err(want), got);
                g.that(
                    &format!("{what}: frontend unchanged"),
                    before.0 == after.0,
                    (&before.0, &after.0),
                );
                g.that(
                    &format!("{what}: iommu-server tables unchanged"),
                    before.1 == after.1,
                    (),
                );
                g.that(
                    &format!("{what}: pasid-alloc unchanged"),
                    before.2 == after.2,
                    (),
                );
                let cmds = g.bus.commands_since(mark);
                g.that(
                    &format!("{what}: no command at the SMMU"),
                    cmds.is_empty(),
                    cmds,
                );
            }
            g.finish()
        });
        run.run(seed).check(&[streams_a()]);
    }
}

/// Kernel entries after which the frontend is killed in
/// `harness_vmm_frontend_death_is_reclaimed_by_the_servers`: after the
/// guest's bring-up, while it waits.
const KILL_STEP: u64 = 3000;

#[test]
fn harness_vmm_frontend_death_is_reclaimed_by_the_servers() {
    for seed in 0..10 {
        let rig = VmmRig::new(SmmuConfig::new()).pasid_first(&[40]);
        let pstate = rig.pasid_state();
        let run: VmmRun = rig
            .vm("a", &streams_a(), 4, |g: Guest| {
                let host = bring_up(&g, 1, 5);
                let pa = g.dma.write(PSID_A, host, VA, b"before");
                g.that("DMA before", pa == Ok(g.ram.page(TARGET)), pa);
                g.that("killed after the bring-up", g.state.get().handled > 0, ());
                // The frontend (the VM, for the servers) is killed while
                // the guest waits: iommu-server reclaims its stream.
                let gone = g.wait_until(3000, || g.dma.probe(PSID_A, host, VA).is_err());
                g.that("after the frontend's death: DMA refused", gone, ());
                // The restarted frontend serves a clean vIOMMU (the
                // guest's old PASID is unknown to it).
                let c = g.wait_until(300, || g.fe.caps().is_ok());
                g.that("restarted frontend answers", c, ());
                let u = g.fe.unbind(V(VSID), GP(1), false);
                g.that("old PASID unknown", u == Err(E::NotFound), u);
                let host2 = bring_up(&g, 1, 5);
                let pa = g.dma.write(PSID_A, host2, VA, b"after");
                g.that("works again", pa == Ok(g.ram.page(TARGET)), pa);
                g.finish()
            })
            .run_with(seed, |h| {
                h.at_step(KILL_STEP, Action::kill("vmm-frontend-a"))
            });
        run.check(&[streams_a()]);
        let hist = pstate.history();
        assert!(
            hist.iter().any(|d| d.contains("Defunct")),
            "seed {seed}: the dead VM's PASID never went defunct"
        );
    }
}

/// A stalled transaction in guest names: the device's DMA to a guest VA
/// its stage 1 does not map stalls; the guest gets a Stall record with
/// its vSID and guest PASID, maps the page in its own table, invalidates
/// (caching mode) and answers Success: the RESUME retries the transaction
/// and it lands in the page the guest chose.
#[test]
fn harness_vmm_stall_round_trip_in_guest_names_50_seeds() {
    use smmuv3::pgtable::{S1Ap, S1Desc};
    use smmuv3_model::{DmaError, StallModel, StallOutcome, StallState};
    for seed in 0..50 {
        let mut cfg = SmmuConfig::new();
        cfg.stall_model = StallModel::StallForced;
        VmmRig::new(cfg)
            .pasid_first(&[17])
            .vm("a", &streams_a(), 4, |g: Guest| {
                let host = bring_up(&g, 2, 4);
                let va2 = VA + 0x1000;
                let r = g.dev.dma_write(PSID_A, host, va2, 8);
                let Err(DmaError::Stalled { stag }) = r else {
                    g.that("stalls", false, r);
                    g.finish()
                };
                let mut recs = Vec::new();
                for _ in 0..50 {
                    if let Ok((r, _)) = g.fetch_faults() {
                        recs.extend(r);
                    }
                    if !recs.is_empty() {
                        break;
                    }
                    g.wait_posted(5);
                }
                g.that(
                    "one Stall record: vSID, guest PASID, STAG, VA",
                    recs.len() == 1
                        && recs[0].kind == prq_server_api::FaultKind::Stall
                        && recs[0].vsid == V(VSID)
                        && recs[0].pasid == GP(2)
                        && recs[0].group == stag
                        && recs[0].addr == va2,
                    &recs,
                );
                // The guest maps the page in its own stage 1 and, caching
                // mode, invalidates before answering.
                let l3 = g.ram.page(L1 + 2) + ((va2 >> 12) & 511) * 8;
                g.ram.write(
                    l3,
                    &S1Desc::page(g.ipa(TARGET + 2), S1Ap::RwAny, 0)
                        .raw()
                        .to_le_bytes(),
                );
                let inv = g.invalidate(&[Command::tlbi_nh_va(0, 4, va2, true)]);
                g.that("invalidate", matches!(inv, Ok(o) if o.done == 1), inv);
                if let Some(c) = recs.first().map(|r| r.cookie) {
                    let a = g.respond(&[(c, FaultResponse::Success)]);
                    g.that("answer Success", matches!(a, Ok(o) if o.done == 1), a);
                }
                g.wait_until(100, || {
                    g.dev.stall_state(PSID_A, stag) != Some(StallState::Pending)
                });
                let s = g.dev.stall_state(PSID_A, stag);
                g.that(
                    "RESUME Retry: lands in the page the guest mapped",
                    s == Some(StallState::Resolved(StallOutcome::Retried(Ok(g
                        .ram
                        .page(TARGET + 2))))),
                    s,
                );
                g.finish()
            })
            .run(seed)
            .check(&[streams_a()]);
    }
}

/// The guest's own CD table (Nested with `cd_table_ipa`): the guest writes
/// its CD at its own index in its RAM; the SubstreamID the device sends
/// is that index (IHI 0070 §4.3.7: "SubstreamID is the same in guest and
/// host"); CFGI_CD keeps it, checked against the table's size.
#[test]
fn harness_vmm_guest_cd_table_nested() {
    use smmuv3::{AddrSize, Cacheability, Cd, Shareability, Tg0};
    for seed in 0..8 {
        VmmRig::new(SmmuConfig::new())
            .vm("a", &streams_a(), 4, |g: Guest| {
                let caps = g.fe.caps();
                g.that("caps", caps.is_ok(), caps);
                g.ram.stage1(L1, VA, g.ipa(TARGET), |i| g.ipa(i));
                let table = 5;
                let mut cd = Cd::zeroed();
                cd.set_t0sz(25)
                    .set_tg0(Tg0::Granule4K)
                    .set_ir0(Cacheability::WriteBackAlloc)
                    .set_or0(Cacheability::WriteBackAlloc)
                    .set_sh0(Shareability::InnerShareable)
                    .set_epd1(true)
                    .set_ips(AddrSize::Bits40)
                    .set_aa64(true)
                    .set_a(true)
                    .set_asid(3)
                    .set_ttb0(g.ipa(L1))
                    .set_mair(0xff)
                    .set_v(true);
                g.ram.write(g.ram.page(table), &[0u8; 0x1000]);
                let bytes: Vec<u8> = cd.words().iter().flat_map(|w| w.to_le_bytes()).collect();
                g.ram.write(g.ram.page(table) + 2 * 64, &bytes);
                let s = g.fe.set_ste(
                    V(VSID),
                    GuestSteMode::Nested {
                        fault_capable: false,
                        cd_max_bits: 2,
                        cd_table_ipa: g.ipa(table),
                    },
                );
                g.that("set_ste with the guest's CD table", s.is_ok(), s);
                let mark = g.bus.mark();
                let inv =
                    g.invalidate(&[Command::cfgi_cd(VSID, 2, true), Command::tlbi_nh_asid(0, 3)]);
                g.that("invalidate", matches!(inv, Ok(o) if o.done == 2), inv);
                let cmds = g.bus.commands_since(mark);
                g.that(
                    "CFGI_CD: pSID, the guest's own index",
                    cmds.contains(&CommandKind::CfgiCd {
                        sid: PSID_A,
                        ssid: 2,
                        leaf: true,
                    }),
                    &cmds,
                );
                let pa = g.dma.write(PSID_A, Some(2), VA, b"own table");
                g.that(
                    "DMA through the guest's CD",
                    pa == Ok(g.ram.page(TARGET)),
                    pa,
                );
                let inv = g.invalidate(&[Command::cfgi_cd(VSID, 4, true)]);
                g.that(
                    "beyond the table: refused",
                    matches!(inv, Ok(o) if o.done == 0 && o.refusal == InvalidateRefusal::Pasid),
                    inv,
                );
                let a = g.fe.alloc_pasid(GP(1));
                g.that("alloc", a.is_ok(), a);
                let b = g.fe.bind(V(VSID), GP(1), guest_cd(g.ipa(L1), 3), false);
                g.that(
                    "bind on a guest-table stream: refused",
                    b == Err(E::Invalid),
                    b,
                );
                let s = g.fe.set_ste(V(VSID), GuestSteMode::Abort);
                g.that("abort", s.is_ok(), s);
                let d = g.dma.write(PSID_A, Some(2), VA, b"x");
                g.that("aborted", d.is_err(), d);
                g.finish()
            })
            .run(seed)
            .check(&[streams_a()]);
    }
}

/// `free_pasid` with the PASID still bound and a group delivered: the
/// free returns after the bind was unbound and drained (the group answered
/// Invalid at the device), and the host PASID — the only one in the space
/// — is handed out again (next generation) only after iommu-server
/// reported it drained (pasid-alloc's I3 end check on the trace).
#[test]
fn harness_vmm_free_pasid_unbinds_and_drains_before_reuse() {
    for seed in 0..20 {
        let rig = VmmRig::new(SmmuConfig::new()).pasid_space_bits(1);
        let state = rig.pasid_state();
        let run = rig.vm("a", &streams_a(), 4, |g: Guest| {
            let host = bring_up(&g, 5, 2);
            g.page_requests(PSID_A, host, 1, 1);
            let mut n = 0;
            for _ in 0..50 {
                n += g.fetch_faults().map(|(r, _)| r.len()).unwrap_or(0);
                if n > 0 {
                    break;
                }
                g.wait_posted(5);
            }
            g.that("delivered", n == 1, n);
            let f = g.fe.free_pasid(GP(5));
            g.that("free", f.is_ok(), f);
            let r = g.responses(PSID_A, host, 1);
            g.that(
                "answered Invalid by the time free returned",
                r == [INVALID],
                r,
            );
            let st = g.state.get();
            g.that(
                "no PASID, bind or cookie left",
                st.pasids.is_empty()
                    && !st.dump.contains("Some(Bind")
                    && !st.dump.contains("Some(Delivered"),
                &st.dump,
            );
            // The space's only PASID comes back once drained.
            let again = g.wait_until(200, || g.fe.alloc_pasid(GP(6)).is_ok());
            g.that("the host PASID is reused after the drain", again, ());
            g.that(
                "same host PASID",
                g.device_pasid(6) == host,
                (g.device_pasid(6), host),
            );
            let u = g.fe.unbind(V(VSID), GP(5), false);
            g.that("the freed guest PASID is unknown", u == Err(E::NotFound), u);
            g.finish()
        });
        run.run(seed).check(&[streams_a()]);
        let hist = state.history();
        assert!(
            hist.iter().any(|d| d.contains("0x1: Defunct")),
            "seed {seed}: never defunct"
        );
    }
}

/// A's DMA to an address outside its RAM raises an event that reaches A's
/// guest with A's vSID; B, whose guest uses the same vSID number, sees
/// nothing.
#[test]
fn harness_vmm_event_reaches_only_its_vm() {
    for seed in 0..10 {
        let a = |g: Guest| {
            let s = g.fe.set_ste(V(VSID), GuestSteMode::S2Only);
            g.that("S2Only", s.is_ok(), s);
            s2_fault(&g, 3);
            let mut got = Vec::new();
            for _ in 0..50 {
                if let Ok((e, _)) = g.fetch_events() {
                    got.extend(e);
                }
                if !got.is_empty() {
                    break;
                }
                g.wait_posted(5);
            }
            g.that(
                "A got its event with its vSID",
                got.len() == 1 && got[0].vsid == V(VSID) && (got[0].words[0] >> 32) as u32 == VSID,
                &got,
            );
            g.finish()
        };
        let b = |g: Guest| {
            let s = g.fe.set_ste(V(VSID), GuestSteMode::S2Only);
            g.that("S2Only", s.is_ok(), s);
            // Until A is done, B looks and must see nothing.
            for _ in 0..30 {
                let e = g.fetch_events();
                g.that(
                    "B sees nothing",
                    matches!(&e, Ok((v, 0)) if v.is_empty()),
                    &e,
                );
                g.wait_posted(2);
            }
            g.finish()
        };
        let run = VmmRig::new(SmmuConfig::new())
            .vm("a", &streams_a(), 4, a)
            .vm("b", &streams_b(), 4, b)
            .run(seed);
        run.check(&[streams_a(), streams_b()]);
        let l = run.log.lock();
        assert!(
            l.events.iter().all(|(k, _)| *k == 0),
            "seed {seed}: {:?}",
            l.events
        );
    }
}

/// iommu-server dies and restarts fail-closed (every STE abort, no
/// domain): the frontend's next request learns it (`Again`, then the new
/// incarnation), makes its stage 2 again; the guest finds its stream at
/// abort, configures it again and DMA works; its PASIDs (pasid-alloc's)
/// are still its own.
#[test]
fn harness_vmm_iommu_server_restart_is_a_stream_reset_for_the_guest() {
    for seed in 0..10 {
        VmmRig::new(SmmuConfig::new())
            .pasid_first(&[9])
            .vm("a", &streams_a(), 4, |g: Guest| {
                let host = bring_up(&g, 1, 5);
                let pa = g.dma.write(PSID_A, host, VA, b"before");
                g.that("DMA before", pa == Ok(g.ram.page(TARGET)), pa);
                let gone = g.wait_until(3000, || g.dma.probe(PSID_A, host, VA).is_err());
                g.that("the restarted iommu-server aborts the stream", gone, ());
                let mut caps = g.fe.caps();
                for _ in 0..3 {
                    if caps != Err(E::Again) {
                        break;
                    }
                    caps = g.fe.caps();
                }
                g.that("caps after the restart", caps.is_ok(), caps);
                let a = g.fe.alloc_pasid(GP(1));
                g.that("guest PASID 1 still held", a == Err(E::AlreadyExists), a);
                let s = g.fe.set_ste(
                    V(VSID),
                    GuestSteMode::Nested {
                        fault_capable: true,
                        cd_max_bits: 8,
                        cd_table_ipa: 0,
                    },
                );
                g.that("set_ste again", s.is_ok(), s);
                let b = g.fe.bind(V(VSID), GP(1), guest_cd(g.ipa(L1), 5), true);
                g.that("bind again", b == Ok(1), b);
                let pa = g.dma.write(PSID_A, host, VA, b"after");
                g.that("DMA after", pa == Ok(g.ram.page(TARGET)), pa);
                g.finish()
            })
            .run_with(seed, |h| h.at_step(3000, Action::kill("iommu-server")))
            .check(&[streams_a()]);
    }
}
