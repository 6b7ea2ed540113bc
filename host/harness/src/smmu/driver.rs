//! What the driver task is given: the model's registers ([`ModelMmio`]),
//! its DMA memory ([`ModelDma`]), the image's waiter, and the task itself.

use super::*;
use iommu_server::cmdq::SyscallWaiter;
use iommu_server::dma::DmaMemory;
use iommu_server::{startup, Error as ServerError, IommuServer};
use smmuv3::regs::{offset, CR0};
use smmuv3::Mmio;
use smmuv3_model::CACHE_LINE;
use userlib::sys_region_info;

/// The SMMU's registers for the driver: the model, with the command queue
/// doorbell held back unless commands complete [`Completion::AtDoorbell`].
pub struct ModelMmio {
    pub(super) bus: Bus,
}

impl ModelMmio {
    fn holds_doorbell(&self) -> bool {
        self.bus.completion() != Completion::AtDoorbell
            && CR0::CMDQEN.read(self.bus.smmu.read32(offset::CR0ACK)) != 0
    }
}

impl Mmio for ModelMmio {
    fn read32(&self, off: usize) -> u32 {
        if off == offset::CMDQ_PROD {
            if let Some(p) = self.bus.lock().pending_prod {
                return p;
            }
        }
        self.bus.smmu.read32(off)
    }

    fn write32(&self, off: usize, value: u32) {
        if off == offset::CMDQ_PROD && self.holds_doorbell() {
            self.bus.lock().pending_prod = Some(value);
            return;
        }
        if off == offset::CMDQ_PROD || (off == offset::CR0 && CR0::CMDQEN.read(value) == 0) {
            // A doorbell written straight through, or the queue turned off
            // (a restarted driver resetting it): a held one is void.
            self.bus.lock().pending_prod = None;
        }
        self.bus.smmu.write32(off, value);
        if off == offset::CMDQ_PROD || off == offset::GERRORN {
            // Commands ran (a doorbell, or consumption resumed after an
            // illegal one): log them before the driver's next store.
            self.bus.collect_commands();
        }
    }

    fn read64(&self, off: usize) -> u64 {
        self.bus.smmu.read64(off)
    }

    fn write64(&self, off: usize, value: u64) {
        self.bus.smmu.write64(off, value)
    }
}

/// The server's DMA region: a range of the model's physical memory (the
/// host stand-in for `dma::DmaPtr`).
pub struct ModelDma {
    pub(super) bus: Bus,
    pub(super) pa: u64,
    pub(super) size: usize,
}

impl DmaMemory for ModelDma {
    fn base_pa(&self) -> u64 {
        self.pa
    }

    fn size(&self) -> usize {
        self.size
    }

    fn read64(&self, off: usize) -> u64 {
        if !off.is_multiple_of(8) || off + 8 > self.size {
            return 0;
        }
        self.bus.cpu.read_u64(self.pa + off as u64).unwrap_or(0)
    }

    // As the image's `DmaPtr`: on a non-coherent machine every store
    // cleans its line (DC CVAC), in the CPU model's cache.
    fn write64(&self, off: usize, value: u64) {
        if !off.is_multiple_of(8) || off + 8 > self.size {
            return;
        }
        let pa = self.pa + off as u64;
        if self.bus.cpu.write_u64(pa, value).is_ok() {
            if !self.bus.cpu.coherent() {
                self.bus.cpu.clean(pa);
            }
            self.bus.on_store(pa, value);
        }
    }

    // The DSB: the model's cleans complete at once.
    fn publish(&self) {}

    fn coherent(&self) -> bool {
        self.bus.cpu.coherent()
    }

    fn refresh(&self, off: usize, len: usize) {
        if self.bus.cpu.coherent() || off.checked_add(len).is_none_or(|e| e > self.size) {
            return;
        }
        let start = (self.pa + off as u64) & !(CACHE_LINE - 1);
        let mut a = start;
        while a < self.pa + (off + len) as u64 {
            self.bus.cpu.clean_invalidate(a);
            a += CACHE_LINE;
        }
    }
}

/// The image's waiter itself (`iommu_server::startup::WAITER`), with the
/// image's notification bits.
pub const HARNESS_WAITER: SyscallWaiter = startup::WAITER;

/// The server type the harness runs.
pub type HarnessServer = IommuServer<ModelMmio, ModelDma, SyscallWaiter>;

/// Static configuration of the server task (what app.toml and xtask give
/// the image's).
#[derive(Clone)]
pub struct ServerSetup {
    pub bus: Bus,
    /// (StreamID, task index of its VM).
    pub streams: Vec<(u32, u16)>,
    /// Task names by index (the image's `TASK_NAMES`): the server finds
    /// the supervisor by name, and VMs are the tasks that own streams.
    pub task_names: Vec<String>,
    pub max_pasid_bits: u8,
    /// Run the interim event queue reader (page 1 granted).
    pub event_queue: bool,
    /// Serve with the fault path (`iommu_server::faults::serve`: queues
    /// handed to prq-server, routes, drain, responses).
    pub fault_path: bool,
}

/// The iommu-server task: finds `smmu-tables`, then the library's start-up
/// itself (`iommu_server::startup::start`: probe, fail-closed init, serve —
/// what the image's `main.rs` runs), with the model's registers and memory
/// in place of the board's.
pub fn iommu_server_task(setup: ServerSetup) -> impl Fn() + Send + Sync + 'static {
    move || {
        let Some(tables) = sys_region_info("smmu-tables") else {
            startup::unavailable(ServerError::HardwareError)
        };
        let mmio = ModelMmio {
            bus: setup.bus.clone(),
        };
        let mem = ModelDma {
            bus: setup.bus.clone(),
            pa: tables.pa as u64,
            size: tables.size,
        };
        let names: Vec<&str> = setup.task_names.iter().map(String::as_str).collect();
        let mut cfg = startup::config(&setup.streams, &names, setup.event_queue);
        cfg.max_pasid_bits = setup.max_pasid_bits;
        let fault_path = setup.fault_path;
        // With the fault path, the server never returns from the fault
        // path's loop; otherwise `start` serves the plain interface.
        startup::start(mmio, mem, HARNESS_WAITER, &cfg, move |s| {
            if fault_path {
                iommu_server::faults::serve(s)
            }
        })
    }
}
