//! Task code and named scenarios for demos, traces and tests.
//!
//! The servers here are written against `userlib` directly: the generated
//! IDL stubs (`task/*-api`) did not exist yet when this was written. The
//! echo server is `qemu/test-echo`'s loop, ported (that crate's `main` is
//! built only for the target), with the same operation numbers.

use crate::trace::Decoder;
use crate::{smmu, Action, Harness, TaskSpec, CAP_SHUTDOWN};
use test_support::echo;
use userlib::{
    is_dead_code, log, sys_borrow_info, sys_borrow_read, sys_borrow_write, sys_get_timer,
    sys_irq_control, sys_lookup_slot, sys_post, sys_recv, sys_recv_notification, sys_recv_open,
    sys_refresh_task_id, sys_reply, sys_reply_fault, sys_send, sys_set_timer, sys_shutdown, Lease,
    ReplyFaultReason, TaskId,
};

/// `qemu/test-echo`'s server loop. Its state is on its own stack, so any
/// number of instances run side by side. `TOUCH` (read a wild address) is
/// left out: on the host there is no MMU to fault it, it would crash the
/// harness; it answers with reply-fault like any unknown operation.
pub fn echo_server() {
    let mut buf = [0u8; 256];
    loop {
        let m = sys_recv_open(&mut buf, 0);
        if m.is_notification() {
            continue;
        }
        let n = m.message_len.min(buf.len());
        match m.operation as u16 {
            echo::ECHO => sys_reply(m.sender, 0, &buf[..n]),
            echo::LEASE_SUM => {
                let mut sum = 0u32;
                let mut chunk = [0u8; 64];
                let mut off = 0;
                while let Ok(k) = sys_borrow_read(m.sender, 0, off, &mut chunk) {
                    if k == 0 {
                        break;
                    }
                    sum += chunk[..k].iter().map(|b| *b as u32).sum::<u32>();
                    off += k;
                }
                sys_reply(m.sender, 0, &sum.to_le_bytes());
            }
            echo::LEASE_FILL => {
                let v = if n > 0 { buf[0] } else { 0 };
                let len = sys_borrow_info(m.sender, 0).map(|i| i.len).unwrap_or(0);
                let chunk = [v; 64];
                let mut off = 0;
                while off < len {
                    match sys_borrow_write(m.sender, 0, off, &chunk[..(len - off).min(64)]) {
                        Ok(k) if k > 0 => off += k,
                        _ => break,
                    }
                }
                sys_reply(m.sender, 0, &(off as u32).to_le_bytes());
            }
            echo::PANIC => panic!("asked to panic"),
            echo::LEASE_WRITE_ATTEMPT => {
                let rc = match sys_borrow_write(m.sender, 0, 0, &[1, 2, 3]) {
                    Ok(_) => 0,
                    Err(rc) => rc,
                };
                sys_reply(m.sender, 0, &rc.to_le_bytes());
            }
            echo::CLOSED_NEXT => {
                let only = m.sender;
                sys_reply(m.sender, 0, &[]);
                if let Ok(m2) = sys_recv(&mut buf, 0, only) {
                    sys_reply(m2.sender, 0, &[(m2.sender == only) as u8]);
                }
            }
            echo::REPLY_BYTES if n >= 2 => {
                let k = (u16::from_le_bytes([buf[0], buf[1]]) as usize).min(buf.len());
                let out = [0x5Au8; 256];
                sys_reply(m.sender, 0, &out[..k]);
            }
            echo::SEND_TO if n >= 4 => {
                let target = TaskId(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
                let (rc, _) = sys_send(target, echo::ECHO, b"x", &mut [], &[]);
                sys_reply(m.sender, 0, &rc.to_le_bytes());
            }
            _ => sys_reply_fault(m.sender, ReplyFaultReason::UndefinedOperation),
        }
    }
}

/// Trace names for the echo server's operations.
pub struct EchoDecoder;

impl Decoder for EchoDecoder {
    fn interface(&self) -> &str {
        "Echo"
    }
    fn operation(&self, op: u16) -> Option<String> {
        let name = match op {
            echo::ECHO => "echo",
            echo::LEASE_SUM => "lease_sum",
            echo::LEASE_FILL => "lease_fill",
            echo::PANIC => "panic",
            echo::LEASE_WRITE_ATTEMPT => "lease_write_attempt",
            echo::CLOSED_NEXT => "closed_next",
            echo::REPLY_BYTES => "reply_bytes",
            echo::TOUCH => "touch",
            echo::SEND_TO => "send_to",
            _ => return None,
        };
        Some(name.to_string())
    }
    fn request(&self, op: u16, bytes: &[u8]) -> Option<String> {
        match op {
            echo::ECHO => Some(format!("{:?}", String::from_utf8_lossy(bytes))),
            echo::LEASE_SUM | echo::PANIC | echo::CLOSED_NEXT => Some(String::new()),
            echo::LEASE_FILL => bytes.first().map(|b| format!("{b:#04x}")),
            _ => None,
        }
    }
    fn reply(&self, op: u16, code: u32, bytes: &[u8]) -> Option<String> {
        if code != 0 {
            return None;
        }
        match op {
            echo::ECHO => Some(format!("{:?}", String::from_utf8_lossy(bytes))),
            echo::LEASE_SUM | echo::LEASE_FILL => {
                let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
                Some(format!("{}", u32::from_le_bytes(b)))
            }
            _ => None,
        }
    }
}

/// Operations of [`counter_server`].
pub mod counter {
    /// Adds one; replies the new count (u32 LE).
    pub const INCREMENT: u16 = 1;
    /// Replies the count (u32 LE).
    pub const GET: u16 = 2;
}

/// A server whose only state is a count held in the loop: a restart starts
/// it from zero, and two instances count separately.
pub fn counter_server() {
    let mut count = 0u32;
    let mut buf = [0u8; 16];
    loop {
        let m = sys_recv_open(&mut buf, 0);
        if m.is_notification() {
            continue;
        }
        match m.operation as u16 {
            counter::INCREMENT => {
                count += 1;
                sys_reply(m.sender, 0, &count.to_le_bytes());
            }
            counter::GET => sys_reply(m.sender, 0, &count.to_le_bytes()),
            _ => sys_reply_fault(m.sender, ReplyFaultReason::UndefinedOperation),
        }
    }
}

pub struct CounterDecoder;

impl Decoder for CounterDecoder {
    fn interface(&self) -> &str {
        "Counter"
    }
    fn operation(&self, op: u16) -> Option<String> {
        match op {
            counter::INCREMENT => Some("increment".into()),
            counter::GET => Some("get".into()),
            _ => None,
        }
    }
    fn request(&self, _op: u16, _bytes: &[u8]) -> Option<String> {
        Some(String::new())
    }
    fn reply(&self, _op: u16, code: u32, bytes: &[u8]) -> Option<String> {
        let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
        (code == 0).then(|| format!("{}", u32::from_le_bytes(b)))
    }
}

/// Looks up a peer that app configuration guarantees; its absence is a
/// configuration bug, which faults the task (as on the target).
fn peer(name: &str) -> TaskId {
    match sys_lookup_slot(name) {
        Some(id) => id,
        None => panic!("{name} is not in my task-slots"),
    }
}

/// Echo, a read lease and a write lease against the echo server, then
/// shutdown: 0 if every answer was right.
pub fn demo_client() {
    let server = peer("echo");
    let mut rep = [0u8; 16];
    let (rc, n) = sys_send(server, echo::ECHO, b"hello", &mut rep, &[]);
    let echo_ok = rc == 0 && &rep[..n] == b"hello";

    let data: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
    let (rc, _) = sys_send(
        server,
        echo::LEASE_SUM,
        &[],
        &mut rep,
        &[Lease::read_only(&data)],
    );
    let sum_ok = rc == 0 && u32::from_le_bytes([rep[0], rep[1], rep[2], rep[3]]) == 136;

    let mut buf = [0u8; 32];
    let (rc, _) = sys_send(
        server,
        echo::LEASE_FILL,
        &[0xAB],
        &mut rep,
        &[Lease::write_only(&mut buf)],
    );
    let fill_ok = rc == 0
        && u32::from_le_bytes([rep[0], rep[1], rep[2], rep[3]]) == 32
        && buf.iter().all(|&b| b == 0xAB);

    log!("demo: echo {echo_ok}, lease sum {sum_ok}, lease fill {fill_ok}");
    sys_shutdown(if echo_ok && sum_ok && fill_ok { 0 } else { 1 });
}

/// Increments the counter `rounds` times, surviving its restarts: a dead
/// code makes it refresh the counter's id and try again.
pub fn counter_client(rounds: u32) {
    let mut server = peer("counter");
    let mut done = 0;
    while done < rounds {
        let mut rep = [0u8; 4];
        let (rc, _) = sys_send(server, counter::INCREMENT, &[], &mut rep, &[]);
        if let Some(g) = is_dead_code(rc) {
            log!("counter restarted (generation {}); refreshing", g.0);
            server = sys_refresh_task_id(server);
            continue;
        }
        done += 1;
    }
    sys_shutdown(0);
}

/// Asks the echo server to panic, then echoes through its next generation.
pub fn panic_client() {
    let mut server = peer("echo");
    let (rc, _) = sys_send(server, echo::PANIC, &[], &mut [], &[]);
    let died = is_dead_code(rc).is_some();
    server = sys_refresh_task_id(server);
    let mut rep = [0u8; 8];
    let (rc, n) = sys_send(server, echo::ECHO, b"again", &mut rep, &[]);
    let ok = died && rc == 0 && &rep[..n] == b"again";
    log!("panic: server died {died}, echo after restart {ok}");
    sys_shutdown(if ok { 0 } else { 1 });
}

/// Interrupt line of the notify scenario's device.
pub const NOTIFY_IRQ: u32 = 40;
const IRQ_BIT: u32 = 1 << 1;
const POKE_BIT: u32 = 1 << 0;

/// Waits for its interrupt and for a poke from the client; logs both.
pub fn notify_driver() {
    sys_irq_control(IRQ_BIT, true);
    let mut seen = 0;
    while seen != IRQ_BIT | POKE_BIT {
        let bits = sys_recv_notification(IRQ_BIT | POKE_BIT);
        if bits & IRQ_BIT != 0 {
            log!("interrupt at {} ms", sys_get_timer());
            sys_irq_control(IRQ_BIT, true);
        }
        if bits & POKE_BIT != 0 {
            log!("poked at {} ms", sys_get_timer());
        }
        seen |= bits;
    }
    log!("driver saw both");
}

/// Sleeps 20 ms on its timer, pokes the driver, shuts down.
pub fn notify_client() {
    const TIMER: u32 = 1 << 3;
    let driver = peer("driver");
    let deadline = sys_get_timer() + 20;
    sys_set_timer(Some(deadline), TIMER);
    while sys_get_timer() < deadline {
        sys_recv_notification(TIMER);
    }
    sys_post(driver, POKE_BIT);
    sys_shutdown(0);
}

/// A scenario the `trace` binary can render.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub build: fn(u64) -> Harness,
    /// Shutdown status a correct run ends with.
    pub status: u32,
}

pub const SCENARIOS: &[Scenario] = &[
    // VMs behind their frontends (`crate::vmm`, docs/vmm-frontend.md).
    Scenario {
        name: "vmm-bind-invalidate",
        about: "a guest brings its vIOMMU up (guest PASID 1 = host PASID 7), DMAs through its stage 1, a batch stops at a refused command",
        build: crate::vmm_scenarios::bind_and_invalidate,
        status: 0,
    },
    Scenario {
        name: "vmm-fault",
        about: "a page request reaches the guest as (vSID, guest PASID); its Success reaches the device as PRI_RESP",
        build: crate::vmm_scenarios::fault_round_trip,
        status: 0,
    },
    Scenario {
        name: "vmm-guest-death",
        about: "a guest dies holding a delivered fault; its frontend answers it Invalid and resets; the new guest starts clean",
        build: crate::vmm_scenarios::guest_death,
        status: 0,
    },
    Scenario {
        name: "demo",
        about: "client and echo server: a message, a read lease, a write lease",
        build: demo,
        status: 0,
    },
    Scenario {
        name: "restart",
        about: "the counter server is killed mid-run; the supervisor restarts it; the client refreshes and goes on",
        build: restart,
        status: 0,
    },
    Scenario {
        name: "panic",
        about: "the echo server panics on request; the supervisor restarts it; the client refreshes and goes on",
        build: panic,
        status: 0,
    },
    Scenario {
        name: "notify",
        about: "a timer, a post and a device interrupt",
        build: notify,
        status: 0,
    },
    // The real iommu-server on the SMMUv3 model (`crate::smmu`); notes are
    // the commands the SMMU consumed, STE stores and DMA.
    Scenario {
        name: "iommu-attach",
        about: "iommu-server: create an S2 domain, map, attach a stream (hitless STE update), DMA",
        build: smmu::attach_scenario,
        status: 0,
    },
    Scenario {
        name: "iommu-sync-wait",
        about: "iommu-server: the attach again, on an SMMU that completes commands between steps: the waiter sleeps on cmd-sync",
        build: smmu::sync_wait_scenario,
        status: 0,
    },
    Scenario {
        name: "iommu-map",
        about: "iommu-server: map, DMA, unmap with a range TLBI_S2_IPA and one SYNC, DMA faults",
        build: smmu::map_scenario,
        status: 0,
    },
    Scenario {
        name: "iommu-bind",
        about: "iommu-server: bind a PASID (pasid-alloc checks it), bind again (counts), unbind twice",
        build: smmu::bind_scenario,
        status: 0,
    },
    Scenario {
        name: "iommu-replace",
        about: "iommu-server: attach, replace S2 -> S2 (break-before-make), detach (abort), destroy",
        build: smmu::replace_scenario,
        status: 0,
    },
    Scenario {
        name: "iommu-invalidate",
        about: "iommu-server: a guest's stage 1 change stays stale until its TLBI_NH_VA batch; a refused command",
        build: smmu::invalidate_scenario,
        status: 0,
    },
    Scenario {
        name: "iommu-restart",
        about: "iommu-server killed and restarted: the VM gets ServerDied, the SMMU comes back fail-closed",
        build: smmu::restart_scenario,
        status: 0,
    },
    Scenario {
        name: "iommu-foreign",
        about: "iommu-server: a second VM's requests on the first VM's stream, domain and memory are refused",
        build: smmu::foreign_scenario,
        status: 0,
    },
    // prq-server and iommu-server on the model (`crate::prq`), scripts in
    // `crate::prq_scenarios`.
    Scenario {
        name: "prq-fault",
        about: "prq-server: a group of three requests to its owner, Success and Invalid at the device, a cookie twice, Failure refused",
        build: |seed| crate::prq_scenarios::fault_respond().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-no-handler",
        about: "prq-server: no route / not fault-capable answered at once; a stop marker never answered",
        build: |seed| crate::prq_scenarios::no_handler().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-replace",
        about: "prq-server: replace answers the old domain's queued, delivered and partial groups INVALID once",
        build: |seed| crate::prq_scenarios::replace().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-detach",
        about: "prq-server: detach with a delivered cookie; the late answer is refused",
        build: |seed| crate::prq_scenarios::detach().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-unbind",
        about: "prq-server: unbind drains to the stop marker before replying Drained",
        build: |seed| crate::prq_scenarios::unbind_drain().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-unbind-race",
        about: "prq-server: page requests racing an unbind: every group answered once (owner, drain or no route)",
        build: |seed| crate::prq_scenarios::unbind_race().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-event-overflow",
        about: "prq-server: event queue overflow (IHI 0070 §7.4): records kept, lost reported once",
        build: |seed| crate::prq_scenarios::event_overflow().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-stall-teardown",
        about: "prq-server: detach of a stream holding a stall: STE abort, RESUME Term once, CMD_STALL_TERM",
        build: |seed| crate::prq_scenarios::stall_teardown().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-overflow",
        about: "prq-server: PRI queue overflow (IHI 0070 §8.1): partial dropped, one CONS write, PRG index reused",
        build: |seed| crate::prq_scenarios::overflow().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-restart",
        about: "prq-server restarted holding groups: the journal answers each once",
        build: |seed| crate::prq_scenarios::restart().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-owner-died",
        about: "prq-server: an owner dies holding groups; found by pull, answered INVALID",
        build: |seed| crate::prq_scenarios::owner_died().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-stall",
        about: "prq-server: stalled transactions answered with CMD_RESUME",
        build: |seed| crate::prq_scenarios::stall().harness(seed),
        status: 0,
    },
    Scenario {
        name: "prq-events",
        about: "prq-server: an event record reaches only the stream's VM",
        build: |seed| crate::prq_scenarios::events().harness(seed),
        status: 0,
    },
    // The PASID life with the real pasid-alloc (docs/pasids.md).
    Scenario {
        name: "pasid-alloc",
        about: "pasid-alloc: two allocs within the quota, the third NoSpace, usage",
        build: crate::pasid_scenarios::alloc_scenario,
        status: 0,
    },
    Scenario {
        name: "pasid-bind",
        about: "pasid-alloc + iommu-server: alloc, bind (owner_of first), DMA through the PASID",
        build: crate::pasid_scenarios::bind_scenario,
        status: 0,
    },
    Scenario {
        name: "pasid-free-before-unbind",
        about: "free while bound: defunct at once, iommu-server pulls next_defunct, clears the CD, mark_drained; late unbind NotBound",
        build: crate::pasid_scenarios::free_before_unbind_scenario,
        status: 0,
    },
    Scenario {
        name: "pasid-reclaim",
        about: "a one-PASID space: free, drain, realloc in the next generation, stale handle NotFound",
        build: crate::pasid_scenarios::reclaim_scenario,
        status: 0,
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

pub fn demo(seed: u64) -> Harness {
    Harness::new(seed)
        .task(TaskSpec::new("echo", 1, echo_server))
        .task(
            TaskSpec::new("client", 2, demo_client)
                .slots(&["echo"])
                .caps(CAP_SHUTDOWN),
        )
        .decoder("echo", EchoDecoder)
}

pub fn restart(seed: u64) -> Harness {
    Harness::new(seed)
        .task(TaskSpec::new("counter", 1, counter_server))
        .task(
            TaskSpec::new("client", 2, || counter_client(5))
                .slots(&["counter"])
                .caps(CAP_SHUTDOWN),
        )
        .decoder("counter", CounterDecoder)
        .at_step(9, Action::kill("counter"))
}

pub fn panic(seed: u64) -> Harness {
    Harness::new(seed)
        .task(TaskSpec::new("echo", 1, echo_server))
        .task(
            TaskSpec::new("client", 2, panic_client)
                .slots(&["echo"])
                .caps(CAP_SHUTDOWN),
        )
        .decoder("echo", EchoDecoder)
}

pub fn notify(seed: u64) -> Harness {
    Harness::new(seed)
        .task(TaskSpec::new("driver", 1, notify_driver).irq(NOTIFY_IRQ, IRQ_BIT))
        .task(
            TaskSpec::new("client", 2, notify_client)
                .slots(&["driver"])
                .caps(CAP_SHUTDOWN),
        )
        .at_step(6, Action::Irq(NOTIFY_IRQ))
}
