//! IPC semantics through the harness: real task code, the kernel's core.
//!
//! Task code records what it saw in a `Probe`; the test body asserts on the
//! probe and the trace after the run (a panic in task code would be a task
//! fault, not a test failure).

use harness::scenarios::{self, counter, counter_server, echo_server};
use harness::{Harness, Outcome, Probe, TaskSpec, What, CAP_SHUTDOWN};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use test_support::echo;
use userlib::{
    is_dead_code, sleep_for, sys_get_timer, sys_irq_control, sys_lookup_slot, sys_post, sys_recv,
    sys_recv_notification, sys_recv_open, sys_reply, sys_send, sys_set_timer, sys_shutdown,
    Generation, TaskId, LEASE_READ, LEASE_WRITE,
};

const SEEDS: std::ops::Range<u64> = 0..6;

fn slot(name: &str) -> TaskId {
    sys_lookup_slot(name).unwrap_or(TaskId::KERNEL)
}

#[test]
fn harness_client_server_with_leases() {
    for seed in SEEDS {
        let r = scenarios::demo(seed).run();
        r.expect_shutdown(0);
        let t = &r.trace;
        assert!(
            r.console
                .contains("demo: echo true, lease sum true, lease fill true"),
            "{}",
            r.console
        );
        // The read lease went out with the message, was read whole by the
        // server, and the sum came back.
        assert!(t.whats().any(|w| matches!(w, What::Message { op, leases, .. }
            if *op == echo::LEASE_SUM && leases.len() == 1 && leases[0].attributes == LEASE_READ && leases[0].len == 16)));
        assert!(t.whats().any(|w| matches!(
            w,
            What::Borrow {
                call: abi::Sysnum::BorrowRead,
                result: Ok(16),
                ..
            }
        )));
        assert!(t
            .whats()
            .any(|w| matches!(w, What::Reply { op, code: 0, bytes, .. }
            if *op == echo::LEASE_SUM && bytes[..] == 136u32.to_le_bytes())));
        assert!(t.whats().any(|w| matches!(w, What::Message { leases, .. }
            if leases.first().is_some_and(|l| l.attributes == LEASE_WRITE && l.len == 32))));
        assert!(t.whats().any(|w| matches!(
            w,
            What::Borrow {
                call: abi::Sysnum::BorrowWrite,
                result: Ok(32),
                ..
            }
        )));
        // Every message got exactly one reply.
        let sends = t
            .whats()
            .filter(|w| matches!(w, What::Message { .. }))
            .count();
        let replies = t
            .whats()
            .filter(|w| matches!(w, What::Reply { .. }))
            .count();
        assert_eq!((sends, replies), (3, 3));
    }
}

#[test]
fn harness_higher_priority_server_runs_before_client_resumes() {
    for seed in SEEDS {
        let probe = Probe::new();
        let (p1, p2) = (probe.clone(), probe.clone());
        let server = move || {
            let mut buf = [0u8; 8];
            loop {
                let m = sys_recv_open(&mut buf, 1);
                if m.is_notification() {
                    p1.push("server: notified");
                } else {
                    p1.push("server: message");
                    sys_reply(m.sender, 0, &[]);
                }
            }
        };
        let client = move || {
            let s = slot("server");
            p2.push("client: post");
            sys_post(s, 1);
            p2.push("client: after post");
            sys_send(s, 1, &[], &mut [], &[]);
            p2.push("client: after reply");
        };
        let r = Harness::new(seed)
            .task(TaskSpec::new("server", 1, server))
            .task(TaskSpec::new("client", 3, client).slots(&["server"]))
            .run();
        r.expect_idle();
        assert_eq!(
            probe.get(),
            [
                "client: post",
                "server: notified",
                "client: after post",
                "server: message",
                "client: after reply"
            ],
            "seed {seed}"
        );
    }
}

#[test]
fn harness_closed_receive_takes_only_the_named_sender() {
    for seed in SEEDS {
        let probe = Probe::new();
        let (ps, pa) = (probe.clone(), probe.clone());
        let server = move || {
            let mut buf = [0u8; 8];
            let m1 = sys_recv_open(&mut buf, 0);
            ps.push(format!("open from {}", m1.sender.index()));
            sys_reply(m1.sender, 0, &[]);
            // `b` is waiting by now; only `a` may come in.
            if let Ok(m2) = sys_recv(&mut buf, 0, m1.sender) {
                ps.push(format!("closed from {}", m2.sender.index()));
                sys_reply(m2.sender, 0, &[]);
            }
            let m3 = sys_recv_open(&mut buf, 0);
            ps.push(format!("open from {}", m3.sender.index()));
            sys_reply(m3.sender, 0, &[]);
            // A closed receive naming a stale generation: dead code at once.
            let stale = m1.sender.with_generation(Generation(5));
            match sys_recv(&mut buf, 0, stale) {
                Ok(_) => ps.push("stale: got a message"),
                Err(code) => ps.push(format!("stale: {:?}", is_dead_code(code))),
            }
        };
        let a = move || {
            let s = slot("server");
            sys_send(s, 1, &[], &mut [], &[]);
            sleep_for(10, 1 << 4);
            pa.push(format!("a sends again at {} ms", sys_get_timer()));
            sys_send(s, 2, &[], &mut [], &[]);
        };
        let b = || {
            sys_send(slot("server"), 3, &[], &mut [], &[]);
        };
        let r = Harness::new(seed)
            .task(TaskSpec::new("server", 1, server))
            .task(TaskSpec::new("a", 2, a).slots(&["server"]))
            .task(TaskSpec::new("b", 3, b).slots(&["server"]))
            .run();
        r.expect_idle();
        let got = probe.get();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], "open from 2");
        assert!(got[1].starts_with("a sends again"), "{got:?}");
        assert_eq!(
            &got[2..],
            ["closed from 2", "open from 3", "stale: Some(Generation(0))"]
        );
        // b was queued the whole time a's closed receive waited: its
        // message is delivered only after a's second one.
        let order: Vec<u16> = r
            .trace
            .messages()
            .into_iter()
            .map(|(_, _, op)| op)
            .collect();
        assert_eq!(order, [1, 2, 3], "seed {seed}");
        assert!(r.trace.whats().any(|w| matches!(
            w,
            What::DeadCode {
                call: abi::Sysnum::Recv,
                ..
            }
        )));
    }
}

#[test]
fn harness_notifications_and_timer() {
    for seed in SEEDS {
        let probe = Probe::new();
        let (ps, pp) = (probe.clone(), probe.clone());
        let sleeper = move || {
            let t0 = sys_get_timer();
            sys_set_timer(Some(t0 + 50), 0x4);
            let bits = sys_recv_notification(0x1 | 0x4);
            ps.push(format!(
                "sleeper: {bits:#x} early={}",
                sys_get_timer() < t0 + 50
            ));
            let bits = sys_recv_notification(0x1 | 0x4);
            ps.push(format!(
                "sleeper: {bits:#x} on time={}",
                sys_get_timer() >= t0 + 50
            ));
            // Armed then disarmed: must never fire.
            sys_set_timer(Some(sys_get_timer() + 10), 0x8);
            sys_set_timer(None, 0x8);
            sys_recv_notification(0x8);
            ps.push("sleeper: disarmed timer fired");
        };
        let poker = move || {
            let rc = sys_post(slot("sleeper"), 0x1);
            pp.push(format!("poker: post rc {rc}"));
        };
        let r = Harness::new(seed)
            .task(TaskSpec::new("sleeper", 1, sleeper))
            .task(TaskSpec::new("poker", 2, poker).slots(&["sleeper"]))
            .run();
        r.expect_idle();
        assert_eq!(
            probe.get(),
            [
                "sleeper: 0x1 early=true",
                "poker: post rc 0",
                "sleeper: 0x4 on time=true"
            ],
            "seed {seed}"
        );
        let fired: Vec<u32> = r
            .trace
            .whats()
            .filter_map(|w| match w {
                What::TimerFired { bits, .. } => Some(*bits),
                _ => None,
            })
            .collect();
        assert_eq!(fired, [0x4]);
        // The clock jumped to the deadline while everyone was blocked.
        assert!(r.now_ms >= 50, "now {}", r.now_ms);
    }
}

#[test]
fn harness_interrupt_through_device_hook_is_masked_until_reenabled() {
    const LINE: u32 = 41;
    for seed in SEEDS {
        let probe = Probe::new();
        let p = probe.clone();
        // The "device": task code asks it to raise its line (as an MMIO
        // write would); the hook raises it between steps.
        let requests = Arc::new(AtomicU32::new(0));
        let (dev, hook) = (requests.clone(), requests.clone());
        let driver = move || {
            sys_irq_control(0x2, true);
            dev.fetch_add(1, Ordering::SeqCst);
            let bits = sys_recv_notification(0x2);
            p.push(format!("irq {bits:#x}"));
            // Not re-enabled: a second interrupt must stay pending.
            dev.fetch_add(1, Ordering::SeqCst);
            sys_set_timer(Some(sys_get_timer() + 5), 0x8);
            let bits = sys_recv_notification(0x2 | 0x8);
            p.push(format!("masked {bits:#x}"));
            sys_irq_control(0x2, true);
            let bits = sys_recv_notification(0x2);
            p.push(format!("after enable {bits:#x}"));
            sys_shutdown(0);
        };
        let r = Harness::new(seed)
            .task(
                TaskSpec::new("driver", 1, driver)
                    .irq(LINE, 0x2)
                    .caps(CAP_SHUTDOWN),
            )
            .irq_source(move |_step, _now| vec![LINE; hook.swap(0, Ordering::SeqCst) as usize])
            .run();
        r.expect_shutdown(0);
        assert_eq!(
            probe.get(),
            ["irq 0x2", "masked 0x8", "after enable 0x2"],
            "seed {seed}"
        );
        let irqs: Vec<usize> = (r.trace.events.iter().enumerate())
            .filter(|(_, e)| matches!(e.what, What::Interrupt { intid: LINE, .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(irqs.len(), 2, "{}", r.trace.text());
        // The second delivery came only after the driver re-enabled.
        let enables: Vec<usize> = (r.trace.events.iter().enumerate())
            .filter(|(_, e)| matches!(e.what, What::IrqControl { enable: true, .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(enables.len(), 2);
        assert!(irqs[1] > enables[1], "{}", r.trace.text());
    }
}

#[test]
fn harness_instances_of_one_task_side_by_side() {
    let probe = Probe::new();
    let p = probe.clone();
    let client = move || {
        let (a, b) = (slot("counter-a"), slot("counter-b"));
        for s in [a, a, b, a, b] {
            let mut rep = [0u8; 4];
            let (rc, _) = sys_send(s, counter::INCREMENT, &[], &mut rep, &[]);
            p.push(format!(
                "{} {rc} {}",
                if s == a { "a" } else { "b" },
                u32::from_le_bytes(rep)
            ));
        }
        sys_shutdown(0);
    };
    let r = Harness::new(3)
        .task(TaskSpec::new("counter-a", 1, counter_server))
        .task(TaskSpec::new("counter-b", 1, counter_server))
        .task(
            TaskSpec::new("client", 2, client)
                .slots(&["counter-a", "counter-b"])
                .caps(CAP_SHUTDOWN),
        )
        .run();
    r.expect_shutdown(0);
    assert_eq!(probe.get(), ["a 0 1", "a 0 2", "b 0 1", "a 0 3", "b 0 2"]);
}

#[test]
fn harness_reply_fault_faults_the_client() {
    let probe = Probe::new();
    let p = probe.clone();
    let lives = Arc::new(AtomicU32::new(0));
    let client = move || {
        if lives.fetch_add(1, Ordering::SeqCst) == 0 {
            p.push("sending an unknown operation");
            sys_send(slot("echo"), 99, &[], &mut [], &[]);
            p.push("resumed after reply-fault");
        } else {
            p.push("second life");
            sys_shutdown(0);
        }
    };
    let r = Harness::new(5)
        .task(TaskSpec::new("echo", 1, echo_server))
        .task(
            TaskSpec::new("client", 2, client)
                .slots(&["echo"])
                .caps(CAP_SHUTDOWN),
        )
        .run();
    r.expect_shutdown(0);
    assert_eq!(probe.get(), ["sending an unknown operation", "second life"]);
    assert!(r.trace.whats().any(|w| matches!(
        w,
        What::Fault {
            kind: abi::FaultKind::FromServer,
            detail: 0,
            ..
        }
    )));
}

#[test]
fn harness_entry_returning_blocks_and_the_run_goes_idle() {
    let r = Harness::new(0).task(TaskSpec::new("brief", 1, || {})).run();
    assert_eq!(r.outcome, Outcome::Idle);
}

#[test]
fn harness_named_region_is_found_and_carries_messages() {
    let probe = Probe::new();
    let p = probe.clone();
    let client = move || {
        let Some(r) = userlib::sys_region_info("dma") else {
            p.push("no region");
            return;
        };
        p.push(format!(
            "size {} va==pa {} attrs {:#x}",
            r.size,
            r.va == r.pa,
            r.attributes
        ));
        // SAFETY: `r` describes this task's own 4 KiB region, valid for
        // the whole run and used by nothing else.
        let mem = unsafe { std::slice::from_raw_parts_mut(r.va as *mut u8, r.size) };
        mem[..5].copy_from_slice(b"dma!!");
        let mut rep = [0u8; 8];
        let (rc, n) = sys_send(slot("echo"), echo::ECHO, &mem[..5], &mut rep, &[]);
        p.push(format!("echo {rc} {}", String::from_utf8_lossy(&rep[..n])));
        p.push(format!("missing {:?}", userlib::sys_region_info("nope")));
    };
    let r = Harness::new(0)
        .task(TaskSpec::new("echo", 1, echo_server))
        .task(TaskSpec::new("client", 2, client).slots(&["echo"]).region(
            "dma",
            4096,
            abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DMA,
        ))
        .run();
    r.expect_idle();
    assert_eq!(
        probe.get(),
        [
            "size 4096 va==pa true attrs 0x13",
            "echo 0 dma!!",
            "missing None"
        ]
    );
}
