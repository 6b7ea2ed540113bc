//! The pci-server task: maps the ECAM window (app.toml `mmio`), programs
//! the device table's functions (`PCI_DEVICES`, generated from app.toml
//! `[[devices]]`), disables every other function, logs what it found, then
//! serves. All logic is in the library, which the host tests and the
//! harness run on a model configuration space.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use pci_server::app_config::{PCI_DEVICES, PCI_ECAM, TASK_NAMES};
    use pci_server::cfg::Bdf;
    use pci_server::pci::BootEvent;
    use pci_server::{serve, Assigned, Ecam, Pci, Server, MAX_FUNCTIONS};
    use supervisor_api::SupervisorClient;
    use userlib::*;

    fn name(i: u16) -> &'static str {
        TASK_NAMES.get(usize::from(i)).copied().unwrap_or("?")
    }

    pub fn run() -> ! {
        let Some(ecam) = sys_region_info(PCI_ECAM) else {
            log!("pci-server: app.toml gives it no \"{}\" region", PCI_ECAM);
            sys_panic(b"pci-server: no ECAM")
        };
        let mut table = [Assigned::from_tuple(&(0, 0, 0, 0, [(0, 0); 6])); MAX_FUNCTIONS];
        let n = PCI_DEVICES.len().min(MAX_FUNCTIONS);
        for (t, d) in table.iter_mut().zip(PCI_DEVICES) {
            *t = Assigned::from_tuple(d);
        }
        // SAFETY: app.toml maps the ECAM window into this task only (the
        // build refuses it to any other task when the image has a device
        // table).
        let cfg = unsafe { Ecam::new(ecam.va, ecam.size) };
        let buses = (ecam.size >> 20) as u16;
        let mut pci = match Pci::new(cfg, buses, &table[..n]) {
            Ok(p) => p,
            Err(_) => sys_panic(b"pci-server: bad device table"),
        };
        // Every unassigned function must read back with I/O, memory
        // decode and bus mastering off (pci_unassigned_function_disabled).
        let mut unassigned_on = 0u32;
        let report = pci.boot(|e| match e {
            BootEvent::Ready { bdf, id, owner } => log!(
                "pci-server: {} {:04x}:{:04x} assigned to {}: BARs placed, memory decode on, bus master off",
                Bdf(bdf),
                id & 0xffff,
                id >> 16,
                name(owner)
            ),
            BootEvent::Failed { bdf, state } => {
                log!("pci-server: {} assigned but {:?}: left disabled", Bdf(bdf), state)
            }
            BootEvent::Disabled { bdf, id, command } => {
                if command & 0x7 != 0 {
                    unassigned_on += 1;
                }
                log!(
                    "pci-server: {} {:04x}:{:04x} unassigned: disabled (command {:#06x})",
                    Bdf(bdf),
                    id & 0xffff,
                    id >> 16,
                    command
                )
            }
            BootEvent::Bridge { bdf } => log!("pci-server: {} host bridge", Bdf(bdf)),
        });
        log!(
            "pci-server: {} assigned ready, {} failed, {} unassigned disabled",
            report.ready,
            report.failed,
            report.disabled
        );
        // The device's own answer, read back after boot (like the
        // kernel's self-checks: an image that expects the case judges it).
        if report.disabled > 0 {
            if unassigned_on == 0 {
                log!("pci-server: self-check TEST pci_unassigned_function_disabled ok");
            } else {
                log!(
                    "pci-server: self-check TEST pci_unassigned_function_disabled FAIL {} unassigned function(s) still enabled",
                    unassigned_on
                );
            }
        }
        let deaths = sys_lookup_slot("supervisor").map(SupervisorClient::new);
        let mut server = Server::new(pci, deaths);
        serve(&mut server)
    }
}

userlib::task_main!(image::run);
