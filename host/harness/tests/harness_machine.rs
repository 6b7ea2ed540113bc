//! The harness as a machine: determinism, faults and restarts by the real
//! supervisor, injected actions, limits, and trace rendering.

use harness::scenarios::{self, counter, counter_server, echo_server, EchoDecoder, SCENARIOS};
use harness::{Action, Harness, Outcome, Probe, TaskSpec, What, CAP_SHUTDOWN};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use test_support::echo;
use userlib::{
    is_dead_code, sys_get_timer, sys_lookup_slot, sys_panic, sys_refresh_task_id, sys_send,
    sys_shutdown, FaultKind, Generation, TaskId,
};

fn slot(name: &str) -> TaskId {
    sys_lookup_slot(name).unwrap_or(TaskId::KERNEL)
}

#[test]
fn harness_same_seed_same_trace() {
    for s in SCENARIOS {
        for seed in [1, 7, 12345] {
            let a = (s.build)(seed).run();
            let b = (s.build)(seed).run();
            a.expect_shutdown(s.status);
            assert_eq!(a.trace.text(), b.trace.text(), "{} seed {seed}", s.name);
            assert_eq!(a.trace.svg(), b.trace.svg(), "{} seed {seed}", s.name);
            assert_eq!(a.console, b.console);
        }
    }
}

/// Two clients of equal priority: which one the server hears first is the
/// seed's choice, and both orders happen.
#[test]
fn harness_seeds_change_equal_priority_interleaving() {
    let client = || {
        let s = slot("counter");
        for _ in 0..3 {
            sys_send(s, counter::INCREMENT, &[], &mut [0; 4], &[]);
        }
    };
    let mut orders = BTreeSet::new();
    for seed in 0..24 {
        let run = || {
            Harness::new(seed)
                .task(TaskSpec::new("counter", 1, counter_server))
                .task(TaskSpec::new("a", 2, client).slots(&["counter"]))
                .task(TaskSpec::new("b", 2, client).slots(&["counter"]))
                .run()
        };
        let r = run();
        r.expect_idle();
        let senders: Vec<String> = r
            .trace
            .messages()
            .into_iter()
            .map(|(from, _, _)| from)
            .collect();
        assert_eq!(senders.len(), 6);
        // The last reply carries the total, whoever got it.
        let last = r.trace.whats().rev().find_map(|w| match w {
            What::Reply { bytes, .. } => Some(bytes.clone()),
            _ => None,
        });
        assert_eq!(last, Some(6u32.to_le_bytes().to_vec()));
        assert_eq!(
            run().trace.text(),
            r.trace.text(),
            "seed {seed} is not reproducible"
        );
        orders.insert(senders);
    }
    assert!(
        orders.len() > 1,
        "24 seeds gave one interleaving: {orders:?}"
    );
}

/// Counts incarnations that started and that were dropped (unwound).
#[derive(Clone, Default)]
struct Lives {
    started: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}
struct Alive(Arc<AtomicUsize>);
impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn harness_killed_server_is_restarted_by_the_supervisor() {
    for seed in 0..5 {
        let lives = Lives::default();
        let l = lives.clone();
        let server = move || {
            l.started.fetch_add(1, Ordering::SeqCst);
            let _alive = Alive(l.dropped.clone());
            counter_server()
        };
        let probe = Probe::new();
        let p = probe.clone();
        let client = move || {
            let mut s = slot("counter");
            let mut done = 0;
            while done < 10 {
                let mut rep = [0u8; 4];
                let (rc, _) = sys_send(s, counter::INCREMENT, &[], &mut rep, &[]);
                if let Some(g) = is_dead_code(rc) {
                    p.push(format!("dead {}", g.0));
                    s = sys_refresh_task_id(s);
                    p.push(format!("refreshed {}", s.generation().0));
                    continue;
                }
                p.push(format!("count {}", u32::from_le_bytes(rep)));
                done += 1;
            }
            sys_shutdown(0);
        };
        let r = Harness::new(seed)
            .task(TaskSpec::new("counter", 1, server))
            .task(
                TaskSpec::new("client", 2, client)
                    .slots(&["counter"])
                    .caps(CAP_SHUTDOWN),
            )
            .at_step(12, Action::kill("counter"))
            .run();
        r.expect_shutdown(0);
        let got = probe.get();
        let dead = got
            .iter()
            .position(|s| s == "dead 1")
            .unwrap_or_else(|| panic!("no dead code: {got:?}"));
        assert_eq!(got[dead + 1], "refreshed 1");
        // Counting restarted from scratch in the new incarnation.
        assert!(
            dead > 0
                && got[..dead]
                    .iter()
                    .enumerate()
                    .all(|(i, s)| *s == format!("count {}", i + 1))
        );
        assert_eq!(got[dead + 2], "count 1", "{got:?}");
        assert_eq!(got.iter().filter(|s| s.starts_with("count")).count(), 10);
        assert_eq!(got.iter().filter(|s| s.starts_with("dead")).count(), 1);
        // The supervisor's own code did it.
        let sup = Some(TaskId::new(0, Generation(0)));
        assert!(r.trace.whats().any(|w| *w
            == What::Restart {
                task: TaskId::new(1, Generation(1)),
                by: sup
            }));
        assert!(
            r.console
                .contains("[supervisor] task 1 (generation 0) faulted: Panic"),
            "{}",
            r.console
        );
        // Both incarnations ran, and both were unwound (the first when it
        // was retired, the second at the end of the run).
        assert_eq!(lives.started.load(Ordering::SeqCst), 2);
        assert_eq!(lives.dropped.load(Ordering::SeqCst), 2);
    }
}

#[test]
fn harness_panicking_server_restarts_and_client_recovers() {
    let probe = Probe::new();
    let p = probe.clone();
    let client = move || {
        let mut s = slot("echo");
        let (rc, _) = sys_send(s, echo::PANIC, &[], &mut [], &[]);
        p.push(format!("panic op: {:?}", is_dead_code(rc)));
        s = sys_refresh_task_id(s);
        let mut rep = [0u8; 8];
        let (rc, n) = sys_send(s, echo::ECHO, b"again", &mut rep, &[]);
        p.push(format!("echo {rc} {}", String::from_utf8_lossy(&rep[..n])));
        sys_shutdown(0);
    };
    let r = Harness::new(9)
        .task(TaskSpec::new("echo", 1, echo_server))
        .task(
            TaskSpec::new("client", 2, client)
                .slots(&["echo"])
                .caps(CAP_SHUTDOWN),
        )
        .decoder("echo", EchoDecoder)
        .run();
    r.expect_shutdown(0);
    assert_eq!(
        probe.get(),
        ["panic op: Some(Generation(1))", "echo 0 again"]
    );
    let fault = r.trace.whats().find_map(|w| match w {
        What::Fault {
            task,
            kind: FaultKind::Panic,
            message,
            ..
        } => Some((*task, message.clone())),
        _ => None,
    });
    let (task, message) = fault.expect("a panic fault");
    assert_eq!(task, TaskId::new(1, Generation(0)));
    assert!(message.is_some_and(|m| m.contains("asked to panic")));
    assert!(r.trace.text().contains("Echo.echo(\"again\")"));
}

#[test]
fn harness_sys_panic_faults_and_restarts_the_task() {
    let lives = Arc::new(AtomicUsize::new(0));
    let task = move || {
        if lives.fetch_add(1, Ordering::SeqCst) == 0 {
            sys_panic(b"deliberate");
        }
        sys_shutdown(7);
    };
    let r = Harness::new(2)
        .task(TaskSpec::new("quitter", 2, task).caps(CAP_SHUTDOWN))
        .run();
    r.expect_shutdown(7);
    assert!(r.trace.whats().any(|w| matches!(w, What::Fault { kind: FaultKind::Panic, message: Some(m), .. } if m == "deliberate")));
    assert!(
        r.trace.logs().contains(&"[quitter] PANIC: deliberate"),
        "{:?}",
        r.trace.logs()
    );
}

#[test]
fn harness_slot_violation_faults_the_sender() {
    let probe = Probe::new();
    let p = probe.clone();
    let lives = Arc::new(AtomicUsize::new(0));
    let rogue = move || {
        if lives.fetch_add(1, Ordering::SeqCst) == 0 {
            p.push("sending outside my slots");
            // The echo server is task 1; it is not in this task's slots.
            sys_send(
                TaskId::new(1, Generation(0)),
                echo::ECHO,
                b"x",
                &mut [],
                &[],
            );
            p.push("the send returned");
        } else {
            p.push("second life");
            sys_shutdown(0);
        }
    };
    let r = Harness::new(4)
        .task(TaskSpec::new("echo", 1, echo_server))
        .task(TaskSpec::new("rogue", 2, rogue).caps(CAP_SHUTDOWN))
        .run();
    r.expect_shutdown(0);
    assert_eq!(probe.get(), ["sending outside my slots", "second life"]);
    let rogue0 = TaskId::new(2, Generation(0));
    assert!(r.trace.whats().any(|w| matches!(w, What::Fault { task, kind: FaultKind::SlotViolation, detail: 1, .. } if *task == rogue0)));
    // Nothing reached the echo server.
    assert!(r.trace.messages().is_empty());
}

#[test]
fn harness_restart_action_gives_dead_code_without_supervisor_help() {
    let probe = Probe::new();
    let p = probe.clone();
    let client = move || {
        let s = slot("counter");
        loop {
            let (rc, _) = sys_send(s, counter::INCREMENT, &[], &mut [0; 4], &[]);
            if let Some(g) = is_dead_code(rc) {
                p.push(format!("dead {}", g.0));
                sys_shutdown(0);
            }
        }
    };
    let r = Harness::new(1)
        .task(TaskSpec::new("counter", 1, counter_server))
        .task(
            TaskSpec::new("client", 2, client)
                .slots(&["counter"])
                .caps(CAP_SHUTDOWN),
        )
        .at_step(10, Action::restart("counter"))
        .run();
    r.expect_shutdown(0);
    assert_eq!(probe.get(), ["dead 1"]);
    assert!(r.trace.whats().any(|w| *w
        == What::Restart {
            task: TaskId::new(1, Generation(1)),
            by: None
        }));
}

#[test]
fn harness_supervisor_fault_stops_the_machine() {
    let r = Harness::new(0)
        .task(TaskSpec::new("echo", 1, echo_server))
        .at_step(2, Action::kill("supervisor"))
        .run();
    r.expect_shutdown(kern::EXIT_SUPERVISOR_FAULT);
}

#[test]
fn harness_step_limit_stops_a_livelock() {
    let spinner = || loop {
        sys_get_timer();
    };
    let r = Harness::new(0)
        .task(TaskSpec::new("spinner", 3, spinner))
        .max_steps(300)
        .run();
    assert_eq!(r.outcome, Outcome::StepLimit(300));
    assert_eq!(
        r.trace.events.last().map(|e| &e.what),
        Some(&What::StepLimit { limit: 300 })
    );
}

#[test]
#[should_panic(expected = "expected Shutdown(0)")]
fn harness_expect_reports_the_wrong_outcome() {
    Harness::new(0)
        .task(TaskSpec::new("idle", 3, || {}))
        .run()
        .expect_shutdown(0);
}

#[test]
#[should_panic(expected = "not strictly higher")]
fn harness_rejects_a_slot_to_a_lower_priority_task() {
    Harness::new(0)
        .task(TaskSpec::new("low", 5, || {}))
        .task(TaskSpec::new("high", 2, || {}).slots(&["low"]))
        .run();
}

#[test]
fn harness_scenarios_end_as_expected() {
    for s in SCENARIOS {
        for seed in 0..4 {
            (s.build)(seed).run().expect_shutdown(s.status);
        }
    }
    let notify = scenarios::notify(0).run();
    assert!(notify.trace.whats().any(|w| matches!(
        w,
        What::Interrupt {
            intid: scenarios::NOTIFY_IRQ,
            ..
        }
    )));
    assert!(notify
        .trace
        .logs()
        .iter()
        .any(|l| l.contains("driver saw both")));
}

#[test]
fn harness_decoder_names_operations() {
    let with = scenarios::demo(0).run().trace.text();
    assert!(with.contains("Echo.lease_sum()  leases [r 16]"), "{with}");
    assert!(with.contains("Echo.echo -> \"hello\""), "{with}");
    let plain = scenarios::demo(0)
        .decoder("echo", NoNames)
        .run()
        .trace
        .text();
    assert!(plain.contains("Nameless.op1([68 65 6c 6c 6f])"), "{plain}");
}

/// A decoder that knows nothing but its interface name.
struct NoNames;
impl harness::Decoder for NoNames {
    fn interface(&self) -> &str {
        "Nameless"
    }
    fn operation(&self, _op: u16) -> Option<String> {
        None
    }
}

#[test]
fn harness_svg_draws_lifelines_and_arrows() {
    let r = scenarios::restart(3).run();
    let svg = r.trace.svg();
    assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
    assert_eq!(svg.matches(r#"<line class="life""#).count(), 3);
    let count = |f: fn(&What) -> bool| r.trace.whats().filter(|w| f(w)).count();
    assert_eq!(
        svg.matches(r#"class="msg""#).count(),
        count(|w| matches!(w, What::Message { .. }))
    );
    assert_eq!(
        svg.matches(r#"class="rep""#).count(),
        count(|w| matches!(w, What::Reply { .. }))
    );
    assert_eq!(svg.matches(r#"class="dead""#).count(), 1);
    assert!(svg.contains("restart → counter#1 (by supervisor)"));
    // Text is escaped.
    let mut t = r.trace.clone();
    t.events.push(harness::Event {
        step: 0,
        time_ms: 0,
        what: What::Log {
            text: "a<b & \"c\"".into(),
        },
    });
    assert!(t.svg().contains("a&lt;b &amp; &quot;c&quot;"));
}

#[test]
fn harness_wall_timeout_catches_a_task_that_never_enters_the_kernel() {
    // Spins (no system call) well past the harness's wall-clock limit, then
    // makes one, which finds the run over and retires the thread.
    let hog = || {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_millis(600) {
            std::hint::spin_loop();
        }
        sys_get_timer();
    };
    let r = Harness::new(0)
        .task(TaskSpec::new("hog", 3, hog))
        .wall_timeout(std::time::Duration::from_millis(100))
        .run();
    assert_eq!(r.outcome, Outcome::WallTimeout);
    assert!(r.trace.whats().any(|w| matches!(w, What::Start { .. })));
}
