//! The iommu-server task dies and the real supervisor restarts it: the VM
//! gets the dead code (ServerDied from the generated stub), and the new
//! incarnation initialises the SMMU fail-closed — every STE abort, no
//! domain survives, a device never bypasses at any step. Also the driver's
//! bounded waits when the SMMU completes commands only between steps, or
//! never: what QEMU, which completes them at the doorbell, cannot show.

use harness::smmu::{rw, BusEvent, Completion, IommuRig, Steps, Vm, INTID_CMD_SYNC, IOVA};
use harness::{Action, Harness, Report, TaskId, What};
use iommu_server_api::{DomainId, IommuError, SteUpdate, StreamId};
use smmuv3::{CommandKind, EventId, StreamConfig};
use smmuv3_model::{DmaError, SmmuConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use userlib::{sys_get_timer, sys_shutdown};

const SID_A: u32 = harness::smmu::SID_A;
const SID_A2: u32 = 0x11;

fn page(i: u64) -> u64 {
    harness::smmu::ram_pa(0) + i * 0x1000
}

/// Steps of the message to iommu-server with operation `op` (the `nth`
/// one) and of its reply.
fn request_window(r: &Report, op: u16, nth: usize) -> (u64, u64) {
    let server = r.trace.index_of("iommu-server").unwrap();
    let msg = r
        .trace
        .events
        .iter()
        .filter(|e| matches!(&e.what, What::Message { to, op: o, .. } if to.index() == server && *o == op))
        .nth(nth)
        .map(|e| e.step)
        .expect("no such request");
    let rep = r
        .trace
        .events
        .iter()
        .find(|e| {
            e.step >= msg
                && matches!(&e.what, What::Reply { from, op: o, .. } if from.index() == server && *o == op)
        })
        .map(|e| e.step)
        .expect("no reply");
    (msg, rep)
}

fn every_ste_aborts(bus: &harness::smmu::Bus, sids: &[u32]) {
    for &sid in sids {
        let ste = bus.ste(sid).unwrap();
        assert!(ste.v(), "sid {sid:#x}: V");
        assert_eq!(ste.config(), Ok(StreamConfig::Abort), "sid {sid:#x}");
    }
}

/// VM: a domain attached to SID_A2, then attach SID_A (the request the
/// test kills), then what a VM sees of the new server.
fn attach_then_look(steps: Steps) -> impl Fn(Vm) + Send + Sync + 'static {
    move |vm: Vm| {
        let (c, b, s) = (&vm.iommu, &vm.bus, &steps);
        let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
        let _ = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
        let _ = c.attach(StreamId(SID_A2), d);
        s.record(b, "dma before", || vm.dma.write(SID_A2, None, IOVA, b"b"));
        s.record(b, "attach", || c.attach(StreamId(SID_A), d));
        s.record(b, "hw_info", || c.hw_info().map(|i| i.ssid_bits));
        s.record(b, "dma after", || vm.dma.write(SID_A, None, IOVA, b"a"));
        s.record(b, "dma after A2", || vm.dma.write(SID_A2, None, IOVA, b"a"));
        s.record(b, "attach old domain", || c.attach(StreamId(SID_A2), d));
        let d2 = c.create_s2_domain(false).unwrap_or(DomainId(0));
        let _ = c.map(d2, IOVA, vm.ram.page(2), 0x1000, rw());
        // The first domain of the new incarnation takes the same slot as
        // the old one did: the old handle must still not reach it.
        s.record(b, "old handle after new domain", || {
            c.attach(StreamId(SID_A2), d)
        });
        s.record(b, "attach new domain", || c.attach(StreamId(SID_A), d2));
        s.record(b, "dma new", || vm.dma.write(SID_A, None, IOVA, b"n"));
        sys_shutdown(0);
    }
}

fn attach_rig(steps: Steps, coherent: bool) -> IommuRig {
    IommuRig::new(SmmuConfig::new())
        .coherent(coherent)
        .completion(Completion::BetweenSteps)
        .vm("vm", 3, &[SID_A, SID_A2], attach_then_look(steps))
}

#[test]
fn harness_iommu_server_killed_mid_attach_restarts_fail_closed() {
    killed_mid_attach_case(true)
}

/// The same on a non-coherent SMMU: what the new incarnation writes at
/// start (every STE abort) reaches memory before SMMUEN.
#[test]
fn harness_noncoherent_killed_mid_attach_restarts_fail_closed() {
    killed_mid_attach_case(false)
}

fn killed_mid_attach_case(coherent: bool) {
    const ATTACH: u16 = iommu_server_api::IommuOp::Attach as u16;
    // A run without the kill shows where the attach is: the SMMU consumes
    // commands between steps, so its STE update spans several.
    let dry = attach_rig(Steps::new(), coherent).harness(21).run();
    dry.expect_shutdown(0);
    let (msg, rep) = request_window(&dry, ATTACH, 1);
    assert!(rep > msg + 4, "attach spans steps {msg}..{rep}");
    let kill = (msg + rep) / 2;

    let steps = Steps::new();
    let mut rig = attach_rig(steps.clone(), coherent);
    let bus = rig.bus();
    let r = rig
        .harness(21)
        .at_step(kill, Action::kill("iommu-server"))
        .run();
    r.expect_shutdown(0);

    assert_eq!(
        steps.get("dma before").result,
        format!("{:?}", Ok::<u64, DmaError>(page(1)))
    );
    // The client's stub saw the dead code: ServerDied (attach is not
    // idempotent, so it was not retried).
    assert_eq!(
        steps.get("attach").result,
        format!("{:?}", Err::<(), _>(IommuError::ServerDied))
    );
    let server = r.trace.index_of("iommu-server").unwrap();
    let vm = r.trace.index_of("vm").unwrap();
    assert!(
        r.trace.whats().any(|w| matches!(
            w,
            What::Restart { task, by: Some(by) }
                if task.index() == server && task.generation().0 == 1 && by.index() == 0
        )),
        "the real supervisor restarted it"
    );
    assert!(r.trace.whats().any(|w| matches!(
        w,
        What::DeadCode { task, peer, .. } if task.index() == vm && peer.index() == server
    )));
    // An idempotent request reaches the new incarnation.
    assert_eq!(steps.get("hw_info").result, "Ok(20)");
    // Fail closed: the half-written STE and the live one both abort now.
    let aborted = format!("{:?}", Err::<u64, _>(DmaError::Aborted));
    assert_eq!(steps.get("dma after").result, aborted);
    assert_eq!(steps.get("dma after A2").result, aborted);
    assert_eq!(
        steps.get("attach old domain").result,
        format!("{:?}", Err::<(), _>(IommuError::NotFound)),
        "no domain survives the restart"
    );
    assert_eq!(
        steps.get("old handle after new domain").result,
        format!("{:?}", Err::<(), _>(IommuError::NotFound)),
        "a handle from before the restart reached the new incarnation's domain"
    );
    assert!(steps.get("attach new domain").result.starts_with("Ok"));
    assert_eq!(
        steps.get("dma new").result,
        format!("{:?}", Ok::<u64, DmaError>(page(2)))
    );
    // The SMMU itself: enabled, GBPA abort, only SID_A (attached again)
    // not aborting.
    every_ste_aborts(&bus, &[SID_A2]);
    let cr0 = smmuv3::Mmio::read32(&*bus.smmu, smmuv3::regs::offset::CR0);
    let gbpa = smmuv3::Mmio::read32(&*bus.smmu, smmuv3::regs::offset::GBPA);
    assert_eq!(cr0 & 1, 1, "SMMUEN");
    assert_ne!(gbpa & (1 << 20), 0, "GBPA.ABORT");
    assert!(bus.smmu.access_errors().is_empty());
}

/// Kills the server at every step of a break-before-make replace, a device
/// probing DMA between all steps: it sees the old page, terminations, the
/// new page or (once the new incarnation starts) aborts — never a bypass,
/// never another page — and the VM always ends with the stream aborted.
#[test]
fn harness_iommu_kill_at_every_step_of_a_replace_never_bypasses() {
    const REPLACE: u16 = iommu_server_api::IommuOp::Replace as u16;
    fn rig(steps: Steps, probing: Arc<AtomicBool>) -> (IommuRig, harness::smmu::Bus) {
        let mut rig = IommuRig::new(SmmuConfig::new())
            .completion(Completion::BetweenSteps)
            .vm("vm", 3, &[SID_A], move |vm: Vm| {
                let (c, b, s) = (&vm.iommu, &vm.bus, &steps);
                let d1 = c.create_s2_domain(false).unwrap_or(DomainId(0));
                let d2 = c.create_s2_domain(false).unwrap_or(DomainId(0));
                let _ = c.map(d1, IOVA, vm.ram.page(1), 0x1000, rw());
                let _ = c.map(d2, IOVA, vm.ram.page(2), 0x1000, rw());
                let _ = c.attach(StreamId(SID_A), d1);
                probing.store(true, Ordering::SeqCst);
                s.record(b, "replace", || c.replace(StreamId(SID_A), d2));
                // Whatever happened, an idempotent call reaches the server
                // of now; then look at the stream.
                s.record(b, "hw_info", || c.hw_info().is_ok());
                s.record(b, "dma", || vm.dma.write(SID_A, None, IOVA, b"x"));
                sys_shutdown(0);
            });
        let bus = rig.bus();
        (rig, bus)
    }
    fn probe(
        h: Harness,
        bus: &harness::smmu::Bus,
        on: Arc<AtomicBool>,
    ) -> (Report, Vec<Result<u64, DmaError>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (dev, s) = (bus.device(), seen.clone());
        let r = h
            .irq_source(move |_, _| {
                if on.load(Ordering::SeqCst) {
                    s.lock().unwrap().push(dev.probe(SID_A, None, IOVA));
                }
                Vec::new()
            })
            .run();
        let seen = seen.lock().unwrap().clone();
        (r, seen)
    }

    let on = Arc::new(AtomicBool::new(false));
    let (dry_rig, dry_bus) = rig(Steps::new(), on.clone());
    let (dry, _) = probe(dry_rig.harness(5), &dry_bus, on);
    dry.expect_shutdown(0);
    let (msg, rep) = request_window(&dry, REPLACE, 0);
    assert!(rep > msg + 4, "replace spans steps {msg}..{rep}");

    let mut outcomes = std::collections::BTreeSet::new();
    for kill in msg..=rep {
        let steps = Steps::new();
        let on = Arc::new(AtomicBool::new(false));
        let (rig, bus) = rig(steps.clone(), on.clone());
        let h = rig.harness(5).at_step(kill, Action::kill("iommu-server"));
        let (r, seen) = probe(h, &bus, on);
        r.expect_shutdown(0);
        for x in &seen {
            let allowed = *x == Ok(page(1))
                || *x == Ok(page(2))
                || *x == Err(DmaError::Aborted)
                || matches!(
                    x,
                    Err(DmaError::Fault {
                        id: EventId::CBadSte,
                        ..
                    })
                );
            assert!(allowed, "kill at {kill}: probe saw {x:?}: {seen:?}");
        }
        let replace = steps.get("replace").result;
        assert!(
            replace == format!("{:?}", Err::<(), _>(IommuError::ServerDied))
                || replace.contains(&format!("{:?}", SteUpdate::BreakBeforeMake)),
            "kill at {kill}: {replace}"
        );
        outcomes.insert(replace.starts_with("Ok"));
        assert_eq!(steps.get("hw_info").result, "true");
        assert_eq!(
            steps.get("dma").result,
            format!("{:?}", Err::<u64, _>(DmaError::Aborted)),
            "kill at {kill}: the restarted server aborts the stream"
        );
        every_ste_aborts(&bus, &[SID_A]);
    }
    assert!(outcomes.contains(&false), "some kill landed mid-request");
}

#[test]
fn harness_iommu_waits_sleep_on_cmd_sync_and_time_out_bounded() {
    let steps = Steps::new();
    let s = steps.clone();
    let mut rig = IommuRig::new(SmmuConfig::new())
        .completion(Completion::BetweenSteps)
        .vm("vm", 3, &[SID_A], move |vm: Vm| {
            let (c, b) = (&vm.iommu, &vm.bus);
            let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
            let _ = c.map(d, IOVA, vm.ram.page(1), 0x2000, rw());
            s.record(b, "attach", || c.attach(StreamId(SID_A), d));
            s.record(b, "dma", || vm.dma.write(SID_A, None, IOVA, b"x"));
            // The SMMU stops consuming commands.
            b.set_completion(Completion::Never);
            let t0 = sys_get_timer();
            s.record(b, "unmap", || c.unmap(d, IOVA + 0x1000, 0x1000));
            let waited = sys_get_timer() - t0;
            s.record(b, "waited", || waited);
            s.record(b, "hw_info", || c.hw_info().is_ok());
            // It comes back: the queued commands run, and later ones too.
            b.set_completion(Completion::BetweenSteps);
            s.record(b, "unmap again", || c.unmap(d, IOVA, 0x1000));
            s.record(b, "dma after", || vm.dma.write(SID_A, None, IOVA, b"y"));
            sys_shutdown(0);
        });
    let bus = rig.bus();
    let r = rig.harness(8).run();
    r.expect_shutdown(0);
    let server: TaskId = r
        .trace
        .whats()
        .find_map(|w| match w {
            What::Start { task } if r.trace.name(*task) == "iommu-server" => Some(*task),
            _ => None,
        })
        .unwrap();

    // The same sequence as when commands complete at the doorbell…
    let attach = steps.get("attach");
    assert!(attach.result.starts_with("Ok"), "{}", attach.result);
    let cmds = attach.commands();
    assert_eq!(cmds.len(), 4, "{:?}", attach.notes());
    assert_eq!(
        cmds[0],
        CommandKind::CfgiSte {
            sid: SID_A,
            leaf: true
        }
    );
    assert_eq!(
        steps.get("dma").result,
        format!("{:?}", Ok::<u64, DmaError>(page(1)))
    );
    // …but the driver's waiter slept: the model's cmd-sync line reached
    // the task as its notification bit, and it armed its 1 ms timer.
    assert!(r.trace.whats().any(|w| matches!(
        w,
        What::Interrupt { intid: INTID_CMD_SYNC, task, bits: 0x2 } if *task == server
    )));
    assert!(r
        .trace
        .whats()
        .any(|w| matches!(w, What::TimerSet { task, .. } if *task == server)));

    // A wedged SMMU: the wait gives up after ~100 ms of virtual time.
    assert_eq!(
        steps.get("unmap").result,
        format!("{:?}", Err::<u64, _>(IommuError::TimedOut))
    );
    let waited: u64 = steps.get("waited").result.parse().unwrap();
    assert!((100..1_000).contains(&waited), "waited {waited} ms");
    assert_eq!(
        steps.get("hw_info").result,
        "true",
        "the server still answers"
    );
    let again = steps.get("unmap again");
    assert_eq!(again.result, format!("{:?}", Ok::<u64, IommuError>(0x1000)));
    assert!(again.events.iter().any(
        |e| matches!(e, BusEvent::Command(c) if matches!(c.kind, Ok(CommandKind::TlbiS2Ipa { .. })))
    ));
    assert!(steps.get("dma after").result.starts_with("Err"));
    assert!(bus.smmu.access_errors().is_empty());
}

/// Issue 10 item 11: a strict unmap whose TLBI batch times out has
/// already cleared the entries; the invalidation must stay owed, or a
/// retry that finds nothing mapped returns Ok(0) while the device still
/// reaches the old page through the model's TLB. Asserted at the device.
#[test]
fn harness_iommu_failed_strict_unmap_stays_owed_until_a_sync_completes() {
    let steps = Steps::new();
    let s = steps.clone();
    let rig = IommuRig::new(SmmuConfig::new()).vm("vm", 3, &[SID_A, SID_A2], move |vm: Vm| {
        let (c, b) = (&vm.iommu, &vm.bus);
        // Retry of the unmap on SID_A's domain.
        let d = c.create_s2_domain(false).unwrap_or(DomainId(0));
        let _ = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
        s.record(b, "attach", || c.attach(StreamId(SID_A), d));
        // The translation is now in the SMMU's TLB.
        s.record(b, "dma", || vm.dma.write(SID_A, None, IOVA, b"x"));
        b.set_completion(Completion::Never);
        s.record(b, "unmap", || c.unmap(d, IOVA, 0x1000));
        b.set_completion(Completion::AtDoorbell);
        s.record(b, "unmap retry", || c.unmap(d, IOVA, 0x1000));
        s.record(b, "dma after retry", || {
            vm.dma.write(SID_A, None, IOVA, b"y")
        });
        // A new mapping at the IOVA on SID_A2's domain after the failure.
        let d2 = c.create_s2_domain(false).unwrap_or(DomainId(0));
        let _ = c.map(d2, IOVA, vm.ram.page(2), 0x1000, rw());
        s.record(b, "attach 2", || c.attach(StreamId(SID_A2), d2));
        s.record(b, "dma 2", || vm.dma.write(SID_A2, None, IOVA, b"x"));
        b.set_completion(Completion::Never);
        s.record(b, "unmap 2", || c.unmap(d2, IOVA, 0x1000));
        b.set_completion(Completion::AtDoorbell);
        s.record(b, "remap 2", || {
            c.map(d2, IOVA, vm.ram.page(3), 0x1000, rw())
        });
        s.record(b, "dma 2 after remap", || {
            vm.dma.write(SID_A2, None, IOVA, b"z")
        });
        sys_shutdown(0);
    });
    rig.harness(11).run().expect_shutdown(0);

    assert!(steps.get("attach").result.starts_with("Ok"));
    assert_eq!(
        steps.get("dma").result,
        format!("{:?}", Ok::<u64, DmaError>(page(1)))
    );
    assert_eq!(
        steps.get("unmap").result,
        format!("{:?}", Err::<u64, _>(IommuError::TimedOut))
    );
    // Nothing is left to unmap, but the owed invalidation is issued and
    // completed before the reply.
    let retry = steps.get("unmap retry");
    assert_eq!(retry.result, format!("{:?}", Ok::<u64, IommuError>(0)));
    assert!(
        retry
            .commands()
            .iter()
            .any(|k| matches!(k, CommandKind::TlbiS12Vmall { .. })),
        "{:?}",
        retry.notes()
    );
    let after = steps.get("dma after retry").result;
    assert!(after.starts_with("Err"), "the device reached {after}");

    assert_eq!(
        steps.get("dma 2").result,
        format!("{:?}", Ok::<u64, DmaError>(page(2)))
    );
    assert_eq!(
        steps.get("unmap 2").result,
        format!("{:?}", Err::<u64, _>(IommuError::TimedOut))
    );
    assert!(steps.get("remap 2").result.starts_with("Ok"));
    assert_eq!(
        steps.get("dma 2 after remap").result,
        format!("{:?}", Ok::<u64, DmaError>(page(3))),
        "the new mapping, not the stale one"
    );
}
