//! pci-server, the real task code (`Pci`, `Server`, `serve`), over the
//! kernel's IPC with the real supervisor, on a model configuration space
//! (`pci_server::model`: read-only bytes, BARs that size, RW1C status): two
//! VMs own one edu each; every refusal is a typed error and leaves the
//! model's device untouched; a dead owner's bus mastering goes off.

use harness::{Action, Harness, Probe, TaskSpec};
use pci_server::cfg::ConfigSpace;
use pci_server::model::{ModelFunction, ModelSpace};
use pci_server::{serve, Assigned, Pci, Server};
use pci_server_api::{Bdf, PciClient};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use supervisor_api::SupervisorClient;
use userlib::{sys_lookup_slot, sys_recv_notification, TaskId};

const EDU_ID: u32 = 0x11e8_1234;
const MIB: u32 = 0x10_0000;
const A_EDU: u16 = 0x10;
const B_EDU: u16 = 0x18;
const NIC: u16 = 0x08;
/// Task indices: supervisor 0, pci-server 1, vm-a 2, vm-b 3.
const VM_A: u16 = 2;
const VM_B: u16 = 3;

/// The model bus, shared between the server task and the test.
#[derive(Clone)]
struct Shared(Arc<Mutex<ModelSpace>>);

impl ConfigSpace for Shared {
    fn read(&mut self, bdf: u16, offset: u16, size: u8) -> u32 {
        self.0.lock().unwrap().read(bdf, offset, size)
    }
    fn write(&mut self, bdf: u16, offset: u16, size: u8, value: u32) {
        self.0.lock().unwrap().write(bdf, offset, size, value)
    }
}

fn edu(bdf: u16) -> ModelFunction {
    let mut f = ModelFunction::endpoint(bdf, EDU_ID, [MIB, 0, 0, 0, 0, 0]);
    f.add_cap(0x40, 0x05, 12, true);
    f
}

fn bus() -> Shared {
    let mut nic = ModelFunction::endpoint(NIC, 0x1000_1af4, [0x1000, 0, 0, 0, 0, 0]);
    nic.bytes[0x04] = 0x07;
    Shared(Arc::new(Mutex::new(ModelSpace {
        functions: vec![nic, edu(A_EDU), edu(B_EDU)],
        writes: Vec::new(),
    })))
}

fn table() -> [Assigned; 2] {
    let e = |bdf: u16, owner: u16, base: u32| Assigned {
        bdf,
        owner,
        sid: u32::from(bdf),
        id: EDU_ID,
        bars: [(base, MIB), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)],
    };
    [e(A_EDU, VM_A, 0x1000_0000), e(B_EDU, VM_B, 0x1010_0000)]
}

fn pci_server(space: Shared) -> TaskSpec {
    TaskSpec::new("pci-server", 1, move || {
        let mut pci = Pci::new(space.clone(), 1, &table()).expect("table");
        pci.boot(|_| {});
        let deaths = sys_lookup_slot("supervisor").map(SupervisorClient::new);
        serve(&mut Server::new(pci, deaths))
    })
    .slots(&["supervisor"])
}

fn client() -> PciClient {
    PciClient::new(sys_lookup_slot("pci-server").unwrap_or(TaskId::KERNEL))
}

#[test]
fn harness_pci_malformed_and_foreign_accesses_are_typed_errors_and_change_nothing() {
    let space = bus();
    let probe = Probe::new();
    let p = probe.clone();
    let vm_b = move || {
        let c = client();
        let a = Bdf(A_EDU);
        // Another VM's function: NotPermitted, whatever the shape.
        for (what, r) in [
            ("read A id", c.config_read(a, 0, 4).map(|_| ())),
            ("A bus master off", c.config_write(a, 4, 2, 0x2)),
            ("A BAR0 move", c.config_write(a, 0x10, 4, 0x1010_0000)),
            ("A unaligned", c.config_write(a, 3, 4, 0)),
            ("A info", c.function_info(a).map(|_| ())),
            ("NIC read", c.config_read(Bdf(NIC), 0, 4).map(|_| ())),
            ("absent read", c.config_read(Bdf(0x20), 0, 4).map(|_| ())),
        ] {
            p.push(format!("{what} {r:?}"));
        }
        // Its own function: malformed offsets, sizes, alignments.
        let b = Bdf(B_EDU);
        for (off, size) in [
            (0, 0),
            (0, 3),
            (0, 8),
            (1, 2),
            (2, 4),
            (0x0ffe, 4),
            (0x1000, 1),
        ] {
            p.push(format!(
                "own {off:#x}/{size} {:?} {:?}",
                c.config_read(b, off, size),
                c.config_write(b, off, size, 0x6)
            ));
        }
        // Fixed registers and MSI.
        p.push(format!(
            "own BAR0 {:?}",
            c.config_write(b, 0x10, 4, u32::MAX)
        ));
        p.push(format!("own io {:?}", c.config_write(b, 4, 2, 0x7)));
        p.push(format!("own msi {:?}", c.config_write(b, 0x42, 2, 1)));
        p.push(format!("own BAR0 reads {:?}", c.config_read(b, 0x10, 4)));
    };
    let r = Harness::new(5)
        .supervisor_posts(&["pci-server"])
        .task(pci_server(space.clone()))
        .task(TaskSpec::new("vm-a", 3, || {
            sys_recv_notification(1);
        }))
        .task(TaskSpec::new("vm-b", 3, vm_b).slots(&["pci-server"]))
        .run();
    r.expect_idle();
    let np = "Err(NotPermitted)";
    let inv = "Err(Invalid) Err(Invalid)";
    assert_eq!(
        probe.get(),
        [
            format!("read A id {np}"),
            format!("A bus master off {np}"),
            format!("A BAR0 move {np}"),
            format!("A unaligned {np}"),
            format!("A info {np}"),
            format!("NIC read {np}"),
            format!("absent read {np}"),
            format!("own 0x0/0 {inv}"),
            format!("own 0x0/3 {inv}"),
            format!("own 0x0/8 {inv}"),
            format!("own 0x1/2 {inv}"),
            format!("own 0x2/4 {inv}"),
            format!("own 0xffe/4 {inv}"),
            format!("own 0x1000/1 {inv}"),
            "own BAR0 Err(Range)".to_string(),
            "own io Err(Range)".to_string(),
            "own msi Err(Unsupported)".to_string(),
            "own BAR0 reads Ok(269484032)".to_string(),
        ]
    );
    // At the device: boot's programming only — no write of any request
    // above reached the model (boot's last write is B's command).
    let m = space.0.lock().unwrap();
    let (a, b) = (m.function(A_EDU), m.function(B_EDU));
    assert_eq!((a.command(), a.get32(0x10)), (0x2, 0x1000_0000));
    assert_eq!((b.command(), b.get32(0x10)), (0x2, 0x1010_0000));
    assert_eq!(m.function(NIC).command() & 0x7, 0);
    assert_eq!(b.bytes[0x42] & 1, 0, "MSI enabled");
    let last = m.writes.last().copied();
    assert_eq!(
        last,
        Some((B_EDU, 0x04, 2, 0x2)),
        "a request reached the device"
    );
}

#[test]
fn harness_pci_dead_owner_bus_mastering_off_other_vm_untouched() {
    let space = bus();
    let probe = Probe::new();
    let ran = Arc::new(AtomicBool::new(false));
    let (p, pa) = (probe.clone(), probe.clone());
    let vm_a = move || {
        let c = client();
        pa.push(format!("A on {:?}", c.config_write(Bdf(A_EDU), 4, 2, 0x6)));
        sys_recv_notification(1);
    };
    let vm_b = move || {
        let c = client();
        if !ran.swap(true, Ordering::SeqCst) {
            p.push(format!("B on {:?}", c.config_write(Bdf(B_EDU), 4, 2, 0x6)));
            // Killed here by the test.
            sys_recv_notification(1);
        } else {
            // The next incarnation, posted after the death was handled.
            sys_recv_notification(1);
            p.push(format!(
                "B after death {:?}",
                c.config_read(Bdf(B_EDU), 4, 2)
            ));
        }
    };
    let r = Harness::new(9)
        .supervisor_posts(&["pci-server"])
        .task(pci_server(space.clone()))
        .task(TaskSpec::new("vm-a", 3, vm_a).slots(&["pci-server"]))
        .task(TaskSpec::new("vm-b", 3, vm_b).slots(&["pci-server"]))
        .at_step(1_000, Action::kill("vm-b"))
        .at_step(2_000, Action::Post("vm-b".into(), 1))
        .run();
    r.expect_idle();
    let mut got = probe.get();
    got.sort();
    assert_eq!(
        got,
        ["A on Ok(())", "B after death Ok(2)", "B on Ok(())"],
        "B's next incarnation sees memory decode on, bus master off"
    );
    let m = space.0.lock().unwrap();
    assert_eq!(
        m.function(B_EDU).command(),
        0x2,
        "B's bus mastering still on"
    );
    assert_eq!(m.function(A_EDU).command(), 0x6, "A's device was touched");
}
