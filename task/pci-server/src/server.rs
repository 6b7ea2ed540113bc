//! The interface (`idl/pci-server.idol.ron`, crate `pci-server-api`) on a
//! [`Pci`], and the owner-death reset driven by the supervisor's log.
//!
//! Owner death (docs/devices.md "Owner death"): the supervisor posts this
//! task [`DEATH_BIT`] when it logged a death (app.toml: the supervisor
//! `posts` pci-server); the server pulls the log with `next_death` (the
//! supervisor only replies: it ranks above everyone and never sends) and
//! turns bus mastering off on the functions the dead incarnation had
//! turned it on for. pci-server ranks above iommu-server, so when both are
//! posted for one death this runs first: the device stops issuing DMA,
//! then iommu-server aborts its stream.

use crate::cfg::ConfigSpace;
use crate::pci::Pci;
use pci_server_api::{self as api, Bdf, FunctionInfo, PciError as E};
use supervisor_api::{DeathKind, DeathRecord};
use userlib::{RecvMessage, TaskId};

/// The supervisor's death notification (its `DEATH_BIT`).
pub const DEATH_BIT: u32 = 1 << 7;

/// Log entries handled per notification: bounds the time one pull holds
/// the server; the cursor keeps the rest and the loop pulls again.
pub const DEATHS_PER_PULL: usize = 16;

/// Where the death log comes from: the supervisor's client in the image,
/// anything in tests.
pub trait DeathSource {
    fn next_death(&self, since: u32) -> Option<DeathRecord>;
    fn current_task(&self, index: u16) -> Option<TaskId>;
}

impl DeathSource for supervisor_api::SupervisorClient {
    fn next_death(&self, since: u32) -> Option<DeathRecord> {
        supervisor_api::SupervisorClient::next_death(self, since).ok()
    }
    fn current_task(&self, index: u16) -> Option<TaskId> {
        supervisor_api::SupervisorClient::current_task(self, index).ok()
    }
}

/// The generated server trait on a [`Pci`].
pub struct Server<C: ConfigSpace, D: DeathSource> {
    pub pci: Pci<C>,
    pub deaths: Option<D>,
    /// The first death sequence number not yet handled.
    pub cursor: u32,
    /// Functions quieted after deaths (for logs and tests).
    pub quieted: u32,
}

impl<C: ConfigSpace, D: DeathSource> Server<C, D> {
    pub fn new(pci: Pci<C>, deaths: Option<D>) -> Self {
        Server {
            pci,
            deaths,
            cursor: 0,
            quieted: 0,
        }
    }

    /// Pulls the log from the cursor and handles each death. Returns
    /// whether entries remain (stopped at [`DEATHS_PER_PULL`]).
    pub fn pull_deaths(&mut self) -> bool {
        let Some(src) = self.deaths.as_ref() else {
            return false;
        };
        for _ in 0..DEATHS_PER_PULL {
            let Some(rec) = src.next_death(self.cursor) else {
                return false;
            };
            match rec.kind {
                DeathKind::None => return false,
                DeathKind::Died => {
                    self.quieted += self.pci.owner_died(rec.task);
                }
                DeathKind::Overflowed => {
                    self.quieted += self.pci.resync(|i| src.current_task(i));
                }
            }
            self.cursor = rec.next;
        }
        true
    }
}

impl<C: ConfigSpace, D: DeathSource> api::PciServer for Server<C, D> {
    fn notification_mask(&self) -> u32 {
        if self.deaths.is_some() {
            DEATH_BIT
        } else {
            0
        }
    }

    fn handle_notification(&mut self, bits: u32) {
        if bits & DEATH_BIT != 0 {
            while self.pull_deaths() {}
        }
    }

    fn check_caller(&mut self, _caller: TaskId, _allowed: &'static [api::PciCaller]) -> bool {
        // No operation names callers: ownership is checked per function.
        false
    }

    fn config_read(&mut self, caller: TaskId, bdf: Bdf, offset: u16, size: u8) -> Result<u32, E> {
        self.pci.read(caller, bdf.0, offset, size)
    }

    fn config_write(
        &mut self,
        caller: TaskId,
        bdf: Bdf,
        offset: u16,
        size: u8,
        value: u32,
    ) -> Result<(), E> {
        self.pci.write(caller, bdf.0, offset, size, value)
    }

    fn function_info(&mut self, caller: TaskId, bdf: Bdf) -> Result<FunctionInfo, E> {
        self.pci.info(caller, bdf.0)
    }
}

/// The task's receive loop: serves the interface forever.
pub fn serve<C: ConfigSpace, D: DeathSource>(server: &mut Server<C, D>) -> ! {
    let mut buf = [0u8; api::PciOp::RECV_BUF_SIZE];
    loop {
        let mask = api::PciServer::notification_mask(server);
        let msg: RecvMessage = userlib::sys_recv_open(&mut buf, mask);
        api::dispatch(server, &msg, &buf);
    }
}
