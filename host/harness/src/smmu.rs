//! The real iommu-server task in the harness, driving the project's SMMUv3
//! model, with real client tasks talking to it over the generated IPC.
//!
//! What stands in for the image's hardware, and how:
//!
//! - **Registers.** [`ModelMmio`] is the task's `smmuv3::Mmio`: the model's
//!   registers, as `SmmuFrame` is page 0 on the board. By default commands
//!   run when CMDQ_PROD is written, as on QEMU ([`Completion::AtDoorbell`]);
//!   with [`Completion::BetweenSteps`] the SMMU only consumes them between
//!   task steps, so the driver's bounded wait really sleeps on its cmd-sync
//!   interrupt and timer, which QEMU never makes it do.
//! - **Strict model.** [`IommuRig`] runs the model with every strict mode
//!   on by default ([`strict_config`]: eager configuration caching, a
//!   throttled 16-entry command queue with slow CMD_SYNCs, walk caches,
//!   UNKNOWN reset values, slow GBPA.UPDATE), seeded by the run; the SMMU
//!   takes a step of its own between task steps (`Smmu::step`, from the
//!   irq source hook), and every store of the driver to its tables while
//!   the SMMU is enabled is a point where the SMMU may fetch the entry
//!   (`Smmu::store_boundary`) and a test may issue DMA
//!   ([`Bus::set_store_hook`]).
//! - **DMA memory.** The server's `smmu-tables` region and every VM's
//!   `guest-ram` are ranges of the model's [`PhysMem`] at fixed physical
//!   addresses ([`TABLES_PA`], [`ram_pa`]), declared with
//!   [`TaskSpec::model_region`]: the task finds them with `sys_region_info`
//!   as in the image, and reaches the bytes through [`ModelDma`] (the host
//!   stand-in for `DmaPtr`).
//! - **Interrupts.** The model's lines (`Smmu::take_irqs`) are turned into
//!   the board's INTIDs by an irq source; the server task owns them with the
//!   image's notification bits (cmd-sync 0x2, gerror 0x4, eventq 0x8).
//! - **Waits.** [`HARNESS_WAITER`] is the image's waiter itself, system call for
//!   system call: a few polls, then sleep on cmd-sync with a 1 ms timer,
//!   give up after ~100 ms.
//! - **Devices.** [`Dma`] issues DMA through the model as a device with a
//!   StreamID would (QEMU's edu, programmed by the VM task).
//! - **pasid-alloc.** The real task (`task/pasid-alloc`, its library's
//!   `serve_with`) over a table sized by the rig; it may post to
//!   iommu-server (a post-only slot, [`crate::TaskSpec::posts`]), and every
//!   run with it ends with the I3 check ([`check_i3`]).
//!
//! Everything the SMMU sees — each command it consumes, each STE word the
//! driver stores while the SMMU is enabled, each DMA — goes into one
//! ordered [`Bus`] log. Tests read it; the note source turns it into
//! [`What::Note`](crate::What::Note) events, so a trace shows which
//! commands each request issued, on the server's lifeline.

use crate::trace::{Decoder, LeaseSummary};
use crate::What;
use crate::{Harness, TaskSpec, CAP_MEMORY_QUERY, CAP_SHUTDOWN};
use idl_runtime::{decode_fixed_reply, decode_postcard_reply, Fixed, IdlError};
use iommu_server::cmdq::SyscallWaiter;
use iommu_server::dma::DmaMemory;
use iommu_server::{startup, Error as ServerError, IommuServer};
use iommu_server_api::{self as api, IommuClient, IommuError, IommuOp};
use pasid_alloc::{Config as PasidConfig, Entry as PasidEntry, PasidTable};
use pasid_alloc_api::{
    Pasid, PasidAllocClient, PasidAllocError, PasidAllocOp, PasidGen, PasidHandle, PasidOwner,
    PasidUsage,
};
use smmuv3::pgtable::{S1Ap, S1Desc};
use smmuv3::regs::{offset, CR0, STRTAB_BASE_CFG};
use smmuv3::{CommandKind, L1StreamDesc, Mmio, Ste, SyncCs};
use smmuv3_model::{
    CmdOutcome, CpuCache, Device, DmaError, LoggedCommand, PhysMem, Smmu, SmmuConfig, CACHE_LINE,
};
use std::collections::BTreeMap;
use std::fmt::{Debug, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use userlib::{log, sys_lookup_slot, sys_recv_notification, sys_region_info, LeaseInfo, TaskId};

// ---------------------------------------------------------------------------
// The board
// ---------------------------------------------------------------------------

/// INTIDs of the SMMU's wired interrupts (boards/qemu-virt.toml).
pub const INTID_EVENTQ: u32 = 106;
pub const INTID_PRIQ: u32 = 107;
pub const INTID_CMD_SYNC: u32 = 108;
pub const INTID_GERROR: u32 = 109;

/// The server's notification bits, as app.toml assigns them (the
/// library's, which the image uses).
pub use iommu_server::startup::{CMD_SYNC_BIT, EVENTQ_BIT, GERROR_BIT, TIMER_BIT};

/// Physical address of the server's `smmu-tables` region (the board's RAM
/// base).
pub const TABLES_PA: u64 = 0x4000_0000;
/// 256 pages: a stream's CD table for 2^20 PASIDs takes a 32-page level 1
/// table plus its leaves.
pub const TABLES_SIZE: usize = 0x10_0000;
/// Size of each VM's `guest-ram` (256 pages).
pub const RAM_SIZE: usize = 0x10_0000;

/// Physical address of the `k`-th VM's `guest-ram` (in order of
/// [`IommuRig::vm`]).
pub const fn ram_pa(k: usize) -> u64 {
    0x8000_0000 + k as u64 * 0x1000_0000
}

/// pasid-alloc's quota per VM in the rig unless a test sets one.
pub const DEFAULT_PASID_QUOTA: u32 = 64;

/// Task priorities of the rig: supervisor 0, pasid-alloc 1, iommu-server 2
/// (pasid-alloc ranks above iommu-server: the server calls it during a
/// bind); VMs 3 and below.
pub const PASID_ALLOC_PRIORITY: u8 = 1;
pub const IOMMU_PRIORITY: u8 = 2;

// ---------------------------------------------------------------------------
// The bus log
// ---------------------------------------------------------------------------

/// When the SMMU consumes the commands the driver queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// At the CMDQ_PROD write, as QEMU does: the driver's first poll sees
    /// them done.
    AtDoorbell,
    /// Between task steps (the irq source hook): the driver has to wait,
    /// and its waiter sleeps on the cmd-sync interrupt or its timer.
    BetweenSteps,
    /// Never (a wedged SMMU): every wait times out.
    Never,
}

impl Completion {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Completion::BetweenSteps,
            2 => Completion::Never,
            _ => Completion::AtDoorbell,
        }
    }
}

/// One thing the SMMU saw, in the order it saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// A command it consumed.
    Command(LoggedCommand),
    /// A 64-bit store by the driver into the STE of a mapped stream while
    /// the SMMU was enabled (word index 0..8).
    SteWrite { sid: u32, word: usize, value: u64 },
    /// A DMA by a device ([`Dma`]): the output PA or why it failed.
    Dma {
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        write: bool,
        result: Result<u64, DmaError>,
    },
}

#[derive(Default)]
struct BusState {
    events: Vec<BusEvent>,
    /// Events already turned into trace notes.
    noted: usize,
    /// Sequence number of the last command copied from the model's log.
    last_seq: Option<u64>,
    /// A CMDQ_PROD write the SMMU has not seen yet (not AtDoorbell).
    pending_prod: Option<u32>,
    /// STE addresses for the stream table the SMMU was last seen using.
    ste_cache: Option<SteMap>,
}

/// (STRTAB_BASE address, STRTAB_BASE_CFG) and the STE address of each
/// mapped stream under them.
type SteMap = ((u64, u32), Vec<(u32, u64)>);

/// The modelled machine around the SMMU: its memory, the model, and the
/// bus log. Cloning gives another handle to the same machine.
#[derive(Clone)]
pub struct Bus {
    pub smmu: Arc<Smmu>,
    /// Memory as the SMMU and the devices see it.
    pub mem: PhysMem,
    /// The CPU's data cache in front of `mem`, through which the tasks'
    /// DMA regions are reached: transparent on a coherent machine; on a
    /// non-coherent one (IHI 0070 §3.15) a store the driver did not clean
    /// never reaches `mem`.
    pub cpu: CpuCache,
    sids: Arc<Vec<u32>>,
    completion: Arc<AtomicU8>,
    state: Arc<Mutex<BusState>>,
    store_hook: Arc<Mutex<Option<StoreHook>>>,
}

/// Called after each 64-bit store of the driver to its table memory while
/// the SMMU is enabled, inside the driver's step: (bus, PA, value). A test
/// issues device DMA here to check an update at every store boundary.
pub type StoreHook = Arc<dyn Fn(&Bus, u64, u64) + Send + Sync>;

impl Bus {
    pub fn new(cfg: SmmuConfig, sids: Vec<u32>) -> Self {
        Self::with_coherency(cfg, sids, true)
    }

    /// A machine whose SMMU is IO-coherent with the CPU (`coherent`) or
    /// not: then the tasks reach their DMA memory through a [`CpuCache`]
    /// that the SMMU does not snoop.
    pub fn with_coherency(cfg: SmmuConfig, sids: Vec<u32>, coherent: bool) -> Self {
        let mem = PhysMem::new();
        let smmu = Arc::new(Smmu::new(mem.clone(), cfg));
        // Speculative fetches (strict modes) aim at the board's streams.
        smmu.note_streams(&sids);
        Bus {
            smmu,
            cpu: CpuCache::new(mem.clone(), coherent),
            mem,
            sids: Arc::new(sids),
            completion: Arc::new(AtomicU8::new(0)),
            state: Arc::new(Mutex::new(BusState::default())),
            store_hook: Arc::new(Mutex::new(None)),
        }
    }

    /// Installs (or with `None` removes) the [`StoreHook`].
    pub fn set_store_hook(&self, hook: Option<StoreHook>) {
        *self.store_hook.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How commands complete from now on.
    pub fn set_completion(&self, c: Completion) {
        let v = match c {
            Completion::AtDoorbell => 0,
            Completion::BetweenSteps => 1,
            Completion::Never => 2,
        };
        self.completion.store(v, Ordering::SeqCst);
    }

    pub fn completion(&self) -> Completion {
        Completion::from_u8(self.completion.load(Ordering::SeqCst))
    }

    /// A device behind the SMMU.
    pub fn device(&self) -> Dma {
        Dma {
            dev: Device::new(self.smmu.clone()),
            bus: self.clone(),
        }
    }

    /// The position of the next event: `since(mark())` later gives what
    /// happened in between.
    pub fn mark(&self) -> usize {
        self.collect_commands();
        self.lock().events.len()
    }

    /// Every event from position `mark` on.
    pub fn since(&self, mark: usize) -> Vec<BusEvent> {
        self.collect_commands();
        self.lock().events.get(mark..).unwrap_or(&[]).to_vec()
    }

    /// The decoded commands from position `mark` on.
    pub fn commands_since(&self, mark: usize) -> Vec<CommandKind> {
        self.since(mark)
            .into_iter()
            .filter_map(|e| match e {
                BusEvent::Command(c) => c.kind.ok(),
                _ => None,
            })
            .collect()
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<BusEvent> {
        self.since(0)
    }

    /// The STE of `sid` as it is in memory now (None without a stream
    /// table entry for it).
    pub fn ste(&self, sid: u32) -> Option<Ste> {
        let pa = self.ste_pa(sid)?;
        self.mem.read_obj::<Ste>(pa).ok()
    }

    /// Where the SMMU finds the STE of `sid`: STRTAB_BASE and
    /// STRTAB_BASE_CFG, through the level 1 descriptor when 2-level.
    pub fn ste_pa(&self, sid: u32) -> Option<u64> {
        let base = smmuv3::regs::strtab_base_addr(self.smmu.read64(offset::STRTAB_BASE));
        let cfg = self.smmu.read32(offset::STRTAB_BASE_CFG);
        self.ste_pa_in(base, cfg, sid)
    }

    fn ste_pa_in(&self, base: u64, cfg: u32, sid: u32) -> Option<u64> {
        let log2size = STRTAB_BASE_CFG::LOG2SIZE.read(cfg);
        if base == 0 || (sid as u64) >> log2size != 0 {
            return None;
        }
        if STRTAB_BASE_CFG::FMT.read(cfg) == 0 {
            return Some(base + sid as u64 * Ste::BYTES as u64);
        }
        let split = STRTAB_BASE_CFG::SPLIT.read(cfg).min(log2size);
        let l1_pa = base + (sid as u64 >> split) * L1StreamDesc::BYTES as u64;
        let l1: L1StreamDesc = self.mem.read_obj(l1_pa).ok()?;
        let index = sid as u64 & ((1u64 << split) - 1);
        (index < l1.num_stes() as u64).then(|| l1.l2ptr() + index * Ste::BYTES as u64)
    }

    /// Copies the commands the model consumed since the last look.
    fn collect_commands(&self) {
        let log = self.smmu.commands();
        let mut st = self.lock();
        for c in log {
            if st.last_seq.is_none_or(|s| c.seq > s) {
                st.last_seq = Some(c.seq);
                st.events.push(BusEvent::Command(c));
            }
        }
    }

    /// A driver store to its DMA memory: recorded when it hits the STE of
    /// a mapped stream while the SMMU is enabled.
    fn on_store(&self, pa: u64, value: u64) {
        if CR0::SMMUEN.read(self.smmu.read32(offset::CR0ACK)) == 0 {
            return;
        }
        self.record_ste_store(pa, value);
        // The SMMU may fetch (and cache) the entry being written now
        // (eager caching), then a test's device may issue DMA here.
        self.smmu.store_boundary(pa);
        let hook = self
            .store_hook
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(h) = hook {
            h(self, pa, value);
        }
    }

    fn record_ste_store(&self, pa: u64, value: u64) {
        let key = (
            smmuv3::regs::strtab_base_addr(self.smmu.read64(offset::STRTAB_BASE)),
            self.smmu.read32(offset::STRTAB_BASE_CFG),
        );
        let stale = !matches!(&self.lock().ste_cache, Some((k, _)) if *k == key);
        if stale {
            let map = self
                .sids
                .iter()
                .filter_map(|&sid| Some((sid, self.ste_pa_in(key.0, key.1, sid)?)))
                .collect();
            self.lock().ste_cache = Some((key, map));
        }
        let mut st = self.lock();
        let hit = st.ste_cache.as_ref().and_then(|(_, map)| {
            map.iter()
                .find(|(_, ste)| (*ste..*ste + Ste::BYTES as u64).contains(&pa))
                .map(|&(sid, ste)| (sid, ((pa - ste) / 8) as usize))
        });
        if let Some((sid, word)) = hit {
            st.events.push(BusEvent::SteWrite { sid, word, value });
        }
    }

    fn on_dma(&self, event: BusEvent) {
        self.collect_commands();
        self.lock().events.push(event);
    }

    /// The irq source hook: lets the SMMU consume a queued CMDQ_PROD write
    /// (BetweenSteps), then reports its interrupt lines as INTIDs.
    pub(crate) fn tick(&self) -> Vec<u32> {
        if self.completion() == Completion::BetweenSteps {
            let pending = self.lock().pending_prod.take();
            if let Some(prod) = pending {
                self.smmu.write32(offset::CMDQ_PROD, prod);
                self.collect_commands();
            }
        }
        // The SMMU's own progress (strict modes: throttled command queue,
        // GBPA update, prefetches and evictions).
        self.smmu.step();
        self.collect_commands();
        let lines = self.smmu.take_irqs();
        let mut out = Vec::new();
        for (on, intid) in [
            (lines.eventq, INTID_EVENTQ),
            (lines.priq, INTID_PRIQ),
            (lines.cmd_sync, INTID_CMD_SYNC),
            (lines.gerror, INTID_GERROR),
        ] {
            if on {
                out.push(intid);
            }
        }
        out
    }

    /// The note source: new bus events as text.
    pub(crate) fn notes(&self) -> Vec<String> {
        self.collect_commands();
        let mut st = self.lock();
        let new: Vec<String> = st.events[st.noted..].iter().map(describe_event).collect();
        st.noted = st.events.len();
        new
    }
}

// ---------------------------------------------------------------------------
// What the driver task is given
// ---------------------------------------------------------------------------

/// The SMMU's registers for the driver: the model, with the command queue
/// doorbell held back unless commands complete [`Completion::AtDoorbell`].
pub struct ModelMmio {
    bus: Bus,
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
    bus: Bus,
    pa: u64,
    size: usize,
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

// ---------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------

/// A DMA-capable device behind the SMMU (QEMU's edu, in the image tests).
/// Each transfer is recorded on the bus (and so in traces).
#[derive(Clone)]
pub struct Dma {
    dev: Device,
    bus: Bus,
}

impl Dma {
    /// Writes `data` at `iova` of stream `sid` (substream `ssid`); returns
    /// the PA it landed at.
    pub fn write(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        data: &[u8],
    ) -> Result<u64, DmaError> {
        let result = self
            .dev
            .dma_write(sid, ssid, iova, data.len())
            .and_then(|pa| self.dev.dma_write_bytes(sid, ssid, iova, data).map(|_| pa));
        self.bus.on_dma(BusEvent::Dma {
            sid,
            ssid,
            iova,
            write: true,
            result,
        });
        result
    }

    /// Reads `buf.len()` bytes at `iova`; returns the PA they came from.
    pub fn read(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<u64, DmaError> {
        let result = self
            .dev
            .dma_read(sid, ssid, iova, buf.len())
            .and_then(|pa| self.dev.dma_read_bytes(sid, ssid, iova, buf).map(|_| pa));
        self.bus.on_dma(BusEvent::Dma {
            sid,
            ssid,
            iova,
            write: false,
            result,
        });
        result
    }

    /// Translates a read at `iova` without recording it (a probe).
    pub fn probe(&self, sid: u32, ssid: Option<u32>, iova: u64) -> Result<u64, DmaError> {
        self.dev.dma_read(sid, ssid, iova, 8)
    }
}

// ---------------------------------------------------------------------------
// pasid-alloc: the real task
// ---------------------------------------------------------------------------

/// Static configuration of the pasid-alloc task (what app.toml's
/// `[pasids]` and xtask give the image's).
#[derive(Clone)]
pub struct PasidSetup {
    /// The space: PASIDs `1 .. 2^bits`.
    pub bits: u8,
    pub quota: u32,
    /// PASIDs at the head of the free list, in order ([`PasidConfig::first`]).
    pub first: Vec<u32>,
    pub streams: Vec<(u32, u16)>,
    pub task_names: Vec<String>,
    /// Where the task publishes its state dump after each message, when
    /// asked ([`PasidState::enable`]).
    pub state: PasidState,
}

/// pasid-alloc's full state dump (`PasidTable::dump`), published by the
/// task after each message it handled once enabled: a test reads it before
/// and after a refused request. Off by default (a 2^20 table is large).
#[derive(Clone, Default)]
pub struct PasidState {
    dump: Arc<Mutex<Option<String>>>,
    history: Arc<Mutex<Vec<String>>>,
    on: Arc<std::sync::atomic::AtomicBool>,
}

impl PasidState {
    pub fn enable(&self) {
        self.on.store(true, Ordering::SeqCst);
    }

    /// The state after the last message pasid-alloc handled.
    pub fn get(&self) -> Option<String> {
        self.dump.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every dump published, in order (one per message handled).
    pub fn history(&self) -> Vec<String> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn publish(&self, s: &pasid_alloc::Server<'_, '_>) {
        if self.on.load(Ordering::SeqCst) {
            let d = format!("{:?}", s.table.dump());
            if let Err(e) = s.table.check() {
                panic!("pasid-alloc's table is inconsistent: {e}\n{d}");
            }
            self.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(d.clone());
            *self.dump.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        }
    }
}

/// The pasid-alloc task: a table of `2^bits` words (on the heap here; on
/// the task's stack in the image), the app's roles from its names and
/// streams, then the library's receive loop (`pasid_alloc::serve_with`,
/// what the image's `main.rs` runs, plus the state dump).
pub fn pasid_alloc_task(setup: PasidSetup) -> impl Fn() + Send + Sync + 'static {
    move || {
        let mut storage = vec![PasidEntry::default(); PasidTable::entries(setup.bits)];
        let cfg = PasidConfig {
            bits: setup.bits,
            quota: setup.quota,
            first: &setup.first,
        };
        let mut table = match PasidTable::new(&mut storage, &cfg) {
            Ok(t) => t,
            Err(e) => panic!("pasid-alloc: bad configuration: {e:?}"),
        };
        let names: Vec<&str> = setup.task_names.iter().map(String::as_str).collect();
        let roles = pasid_alloc::Roles::from_app(&setup.streams, &names);
        let state = setup.state.clone();
        pasid_alloc::serve_with(&mut table, roles, move |s| state.publish(s))
    }
}

/// Adds the real pasid-alloc task to a machine, as every rig runs it: it
/// ranks above iommu-server and may only post to it; its requests decode
/// in traces; I3 is checked at the end of the run.
pub fn with_pasid_alloc(h: Harness, setup: PasidSetup) -> Harness {
    h.task(
        TaskSpec::new("pasid-alloc", PASID_ALLOC_PRIORITY, pasid_alloc_task(setup))
            .posts(&["iommu-server"]),
    )
    .decoder("pasid-alloc", PasidAllocDecoder)
    .end_check(|r| check_i3(&r.trace))
}

/// I3, checked on a finished run's trace: no PASID is handed out again
/// (an `alloc` reply) after it was given up (a successful `free`, or an
/// `owner_died` of its holder) until iommu-server's `mark_drained` of it
/// succeeded; and every reuse carries a newer generation. Only what the
/// tasks exchanged is used, not pasid-alloc's own state.
pub fn check_i3(trace: &crate::Trace) -> Result<(), String> {
    use pasid_alloc_api::{dispatch_decode, PasidAllocRequest as R};
    let Some(server) = trace.index_of("pasid-alloc") else {
        return Ok(());
    };
    // PASID → (holder, generation, awaiting drain).
    let mut held: BTreeMap<u32, (TaskId, u32, bool)> = BTreeMap::new();
    let mut last_gen: BTreeMap<u32, u32> = BTreeMap::new();
    // Client index → its request in flight.
    let mut pending: BTreeMap<usize, R> = BTreeMap::new();
    for (step, w) in trace.whats().enumerate() {
        let done = match w {
            What::Message {
                from,
                to,
                op,
                bytes,
                ..
            } if to.index() == server => {
                if let Ok(r) = dispatch_decode(*op as u32, bytes, usize::MAX, &[]) {
                    pending.insert(from.index(), r);
                }
                continue;
            }
            What::Reply {
                from,
                to,
                code,
                bytes,
                ..
            } if from.index() == server => (*to, *code, Some(bytes)),
            What::ReplyDropped { from, to, code } if from.index() == server => (*to, *code, None),
            // A restarted pasid-alloc starts from an empty table (every
            // PASID free in generation 0): what it hands out from then on
            // is checked afresh; iommu-server removes the binds made under
            // the old incarnation before it asks the new one anything
            // (`IommuServer::pasid_alloc_seen`).
            What::Restart { task, .. } if task.index() == server => {
                held.clear();
                last_gen.clear();
                pending.clear();
                continue;
            }
            _ => continue,
        };
        let (client, code, bytes) = done;
        let Some(req) = pending.remove(&client.index()) else {
            continue;
        };
        if code != 0 {
            continue;
        }
        match req {
            R::Alloc(_) => {
                let Some(Ok(h)) =
                    bytes.map(|b| decode_fixed_reply::<PasidHandle, PasidAllocError>(code, b))
                else {
                    continue;
                };
                let (p, g) = (h.pasid.0, h.generation.0);
                if let Some(&(_, old, drain)) = held.get(&p) {
                    return Err(format!(
                        "event {step}: PASID {p:#x} handed out (generation {g}) while {} (generation {old})",
                        if drain { "awaiting its drain" } else { "still allocated" }
                    ));
                }
                if let Some(&old) = last_gen.get(&p) {
                    if g <= old {
                        return Err(format!(
                            "event {step}: PASID {p:#x} reused in generation {g}, not newer than {old}"
                        ));
                    }
                }
                last_gen.insert(p, g);
                held.insert(p, (client, g, false));
            }
            R::Free(a) => {
                if let Some(e) = held.get_mut(&a.pasid.pasid.0) {
                    e.2 = true;
                }
            }
            R::OwnerDied(a) => {
                // That incarnation and every older one of the task
                // (generations never wrap: pasid-alloc's rule).
                let gone =
                    |o: &TaskId| o.index() == a.vm.index() && o.generation() <= a.vm.generation();
                for e in held.values_mut().filter(|e| gone(&e.0)) {
                    e.2 = true;
                }
            }
            R::MarkDrained(a) => {
                let p = a.pasid.pasid.0;
                match held.get(&p) {
                    Some(&(_, g, true)) if g == a.pasid.generation.0 => {
                        held.remove(&p);
                    }
                    other => {
                        return Err(format!(
                            "event {step}: mark_drained of PASID {p:#x} accepted while {other:?}"
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Trace decoding
// ---------------------------------------------------------------------------

/// `Debug` text made short for traces: numbers of 10 and more in hex,
/// newtypes of one number unwrapped (`DomainId(0x101)` → `0x101`).
pub fn compact(debug: &str) -> String {
    let hexed = hexify(debug);
    unwrap_newtypes(&hexed)
}

fn hexify(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let starts_number = b[i].is_ascii_digit()
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'));
        if starts_number {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let ident_follows = j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'_');
            match s[i..j].parse::<u64>() {
                Ok(v) if v >= 10 && !ident_follows => {
                    let _ = write!(out, "{v:#x}");
                }
                _ => out.push_str(&s[i..j]),
            }
            i = j;
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn unwrap_newtypes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('(') {
        let head = &rest[..open];
        let name_start = head
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |k| k + 1);
        let name = &head[name_start..];
        let after = &rest[open + 1..];
        let inner_end = after.find(')');
        let simple = inner_end.filter(|&e| {
            let inner = &after[..e];
            !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == 'x')
                && inner.starts_with(|c: char| c.is_ascii_digit())
        });
        match simple {
            Some(e)
                if name.starts_with(|c: char| c.is_ascii_uppercase())
                    && !["Ok", "Err", "Some"].contains(&name) =>
            {
                out.push_str(&head[..name_start]);
                out.push_str(&after[..e]);
                rest = &after[e + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The first top-level item of `Variant(A, B)` / `Name { .. }` text, with
/// the wrapper names dropped: `Map(MapArgs { domain: .. })` → `domain: ..`.
pub(crate) fn args_of(debug: &str) -> String {
    let inner = match (debug.find('('), debug.strip_suffix(')')) {
        (Some(open), Some(body)) if open < body.len() => &body[open + 1..],
        _ => "",
    };
    // First top-level item.
    let mut depth = 0i32;
    let mut end = inner.len();
    for (k, c) in inner.char_indices() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                end = k;
                break;
            }
            _ => {}
        }
    }
    let first = inner[..end].trim();
    match (first.find(" { "), first.strip_suffix(" }")) {
        (Some(open), Some(body)) if open < body.len() => body[open + 3..].to_string(),
        _ if first.chars().all(|c| c.is_ascii_alphanumeric()) => String::new(),
        _ => first.to_string(),
    }
}

pub(crate) fn lease_infos(leases: &[LeaseSummary]) -> Vec<LeaseInfo> {
    leases
        .iter()
        .map(|l| LeaseInfo {
            attributes: l.attributes,
            len: l.len as usize,
        })
        .collect()
}

pub(crate) fn fixed_reply<T: Fixed + Debug, E: IdlError + Debug>(
    code: u32,
    bytes: &[u8],
) -> String {
    compact(&reply_text(decode_fixed_reply::<T, E>(code, bytes)))
}

/// `Ok`, `Ok(value)`, `Ok(field: .., field: ..)` for a struct, `Err(E)`.
fn reply_text<T: Debug, E: Debug>(r: Result<T, E>) -> String {
    match r {
        Ok(v) => {
            let t = format!("{v:?}");
            if t == "()" {
                return "Ok".to_string();
            }
            match (t.find(" { "), t.strip_suffix(" }")) {
                (Some(open), Some(body))
                    if open < body.len() && t[..open].chars().all(|c| c.is_alphanumeric()) =>
                {
                    format!("Ok({})", &body[open + 3..])
                }
                _ => format!("Ok({t})"),
            }
        }
        Err(e) => format!("Err({e:?})"),
    }
}

/// The iommu-server interface in traces: operation names, arguments
/// through the generated `dispatch_decode` (the same checks the server
/// applies, leases included), typed replies.
pub struct IommuDecoder;

impl Decoder for IommuDecoder {
    fn interface(&self) -> &str {
        "Iommu"
    }

    fn operation(&self, op: u16) -> Option<String> {
        IommuOp::from_u32(op as u32).map(|o| o.name().to_string())
    }

    fn request(&self, op: u16, bytes: &[u8]) -> Option<String> {
        self.request_leased(op, bytes, &[])
    }

    fn request_leased(&self, op: u16, bytes: &[u8], leases: &[LeaseSummary]) -> Option<String> {
        let r =
            iommu_server_api::dispatch_decode(op as u32, bytes, usize::MAX, &lease_infos(leases));
        match r {
            Ok(req) => Some(compact(&args_of(&format!("{req:?}")))),
            Err(reject) => Some(format!("malformed: {}", reject.what)),
        }
    }

    fn reply(&self, op: u16, code: u32, bytes: &[u8]) -> Option<String> {
        type E = IommuError;
        Some(match IommuOp::from_u32(op as u32)? {
            IommuOp::HwInfo => fixed_reply::<api::IommuCaps, E>(code, bytes),
            IommuOp::CreateS2Domain | IommuOp::CreateS1Domain | IommuOp::CreateNestedDomain => {
                fixed_reply::<api::DomainId, E>(code, bytes)
            }
            IommuOp::Attach | IommuOp::Replace | IommuOp::Detach => {
                fixed_reply::<api::AttachOutcome, E>(code, bytes)
            }
            IommuOp::Unmap | IommuOp::UnmapDeferred => fixed_reply::<u64, E>(code, bytes),
            IommuOp::Bind | IommuOp::BindUsers => fixed_reply::<u32, E>(code, bytes),
            IommuOp::Unbind => fixed_reply::<api::UnbindOutcome, E>(code, bytes),
            IommuOp::Invalidate => fixed_reply::<api::InvalidateOutcome, E>(code, bytes),
            IommuOp::FetchEvents => fixed_reply::<api::EventsFetched, E>(code, bytes),
            IommuOp::Info => fixed_reply::<api::IommuInfo, E>(code, bytes),
            IommuOp::DestroyDomain | IommuOp::Map | IommuOp::Flush | IommuOp::SetVsid => {
                fixed_reply::<(), E>(code, bytes)
            }
            // An operation added to the interface after this decoder: its
            // reply shows as code and bytes until it is named here.
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }
}

/// The pasid-alloc interface in traces.
pub struct PasidAllocDecoder;

impl Decoder for PasidAllocDecoder {
    fn interface(&self) -> &str {
        "PasidAlloc"
    }

    fn operation(&self, op: u16) -> Option<String> {
        PasidAllocOp::from_u32(op as u32).map(|o| o.name().to_string())
    }

    fn request_leased(&self, op: u16, bytes: &[u8], leases: &[LeaseSummary]) -> Option<String> {
        let r =
            pasid_alloc_api::dispatch_decode(op as u32, bytes, usize::MAX, &lease_infos(leases));
        match r {
            Ok(req) => Some(compact(&args_of(&format!("{req:?}")))),
            Err(reject) => Some(format!("malformed: {}", reject.what)),
        }
    }

    fn reply(&self, op: u16, code: u32, bytes: &[u8]) -> Option<String> {
        type E = PasidAllocError;
        Some(match PasidAllocOp::from_u32(op as u32)? {
            PasidAllocOp::Alloc => fixed_reply::<PasidHandle, E>(code, bytes),
            PasidAllocOp::OwnerOf => compact(&reply_text(decode_postcard_reply::<PasidOwner, E>(
                code, bytes,
            ))),
            PasidAllocOp::Usage => fixed_reply::<PasidUsage, E>(code, bytes),
            PasidAllocOp::NextDefunct => compact(&reply_text(decode_postcard_reply::<
                Option<PasidHandle>,
                E,
            >(code, bytes))),
            PasidAllocOp::OwnerDied => fixed_reply::<u32, E>(code, bytes),
            _ => fixed_reply::<(), E>(code, bytes),
        })
    }
}

/// A command as the architecture names it, with its operands.
pub fn describe_command(c: &LoggedCommand) -> String {
    let mut s = match c.kind {
        Ok(k) => describe_kind(&k),
        Err(_) => format!("opcode {:#04x} (reserved encoding)", c.raw.word(0) as u8),
    };
    match c.outcome {
        CmdOutcome::Done => {}
        CmdOutcome::Illegal => s.push_str(": illegal, CMDQ_ERR"),
        CmdOutcome::NoMatch => s.push_str(": matched nothing"),
        CmdOutcome::Unpredictable => s.push_str(": UNPREDICTABLE here, no effect"),
    }
    s
}

fn describe_kind(k: &CommandKind) -> String {
    let leaf = |l: bool| if l { " leaf" } else { "" };
    // A range TLBI (TG != 0) names its length; `leaf` is only ever given
    // a TLBI's scope.leaf, so the range rides along with it.
    let ranged = |sc: &smmuv3::TlbiScope| {
        let r = leaf(sc.leaf).to_string();
        if sc.tg == 0 {
            r
        } else {
            format!("{r} range {:#x}", sc.range().1)
        }
    };
    match *k {
        CommandKind::CfgiSte { sid, leaf: l } => format!("CFGI_STE sid {sid:#x}{}", leaf(l)),
        CommandKind::CfgiAll => "CFGI_ALL".to_string(),
        CommandKind::CfgiCd { sid, ssid, leaf: l } => {
            format!("CFGI_CD sid {sid:#x} ssid {ssid:#x}{}", leaf(l))
        }
        CommandKind::CfgiCdAll { sid } => format!("CFGI_CD_ALL sid {sid:#x}"),
        CommandKind::TlbiNhAll { vmid } => format!("TLBI_NH_ALL vmid {vmid}"),
        CommandKind::TlbiNhAsid { vmid, asid } => format!("TLBI_NH_ASID vmid {vmid} asid {asid}"),
        CommandKind::TlbiNhVa { vmid, asid, scope } => format!(
            "TLBI_NH_VA vmid {vmid} asid {asid} va {:#x}{}",
            scope.addr,
            ranged(&scope)
        ),
        CommandKind::TlbiNhVaa { vmid, scope } => format!(
            "TLBI_NH_VAA vmid {vmid} va {:#x}{}",
            scope.addr,
            ranged(&scope)
        ),
        CommandKind::TlbiS12Vmall { vmid } => format!("TLBI_S12_VMALL vmid {vmid}"),
        CommandKind::TlbiS2Ipa { vmid, scope } => format!(
            "TLBI_S2_IPA vmid {vmid} ipa {:#x}{}",
            scope.addr,
            ranged(&scope)
        ),
        CommandKind::TlbiNsnhAll => "TLBI_NSNH_ALL".to_string(),
        CommandKind::TlbiEl2All => "TLBI_EL2_ALL".to_string(),
        CommandKind::AtcInv {
            sid, ssid, size, ..
        } => match ssid {
            Some(p) => format!("ATC_INV sid {sid:#x} ssid {p:#x} size 2^{size}"),
            None => format!("ATC_INV sid {sid:#x} size 2^{size}"),
        },
        CommandKind::Sync { cs, .. } => match cs {
            SyncCs::Irq => "SYNC (CS=IRQ)".to_string(),
            SyncCs::Sev => "SYNC (CS=SEV)".to_string(),
            SyncCs::None => "SYNC".to_string(),
        },
        ref other => compact(&format!("{other:?}")),
    }
}

/// One bus event as a trace note.
pub fn describe_event(e: &BusEvent) -> String {
    match e {
        BusEvent::Command(c) => format!("cmd {}", describe_command(c)),
        BusEvent::SteWrite { sid, word, value } => {
            let mut s = format!("STE {sid:#x} word {word} = {value:#x}");
            if *word == 0 {
                let ste = Ste::from_words([*value, 0, 0, 0, 0, 0, 0, 0]);
                match (ste.v(), ste.config()) {
                    (false, _) => s.push_str(" (V=0)"),
                    (true, Ok(c)) => {
                        let _ = write!(s, " (V=1 {c:?})");
                    }
                    (true, Err(_)) => s.push_str(" (V=1 reserved Config)"),
                }
            }
            s
        }
        BusEvent::Dma {
            sid,
            ssid,
            iova,
            write,
            result,
        } => {
            let mut s = format!("DMA {} sid {sid:#x}", if *write { "write" } else { "read" });
            if let Some(p) = ssid {
                let _ = write!(s, " pasid {p:#x}");
            }
            let _ = write!(s, " iova {iova:#x} → ");
            match result {
                Ok(pa) => {
                    let _ = write!(s, "PA {pa:#x}");
                }
                Err(DmaError::Aborted) => s.push_str("aborted"),
                Err(DmaError::Fault { id, .. }) => s.push_str(id.name()),
                Err(e) => {
                    let _ = write!(s, "{e:?}");
                }
            }
            s
        }
    }
}

// ---------------------------------------------------------------------------
// VMs and the rig
// ---------------------------------------------------------------------------

/// A VM's memory: `guest-ram`, in the model's physical memory.
#[derive(Clone)]
pub struct GuestRam {
    pub pa: u64,
    pub size: usize,
    mem: PhysMem,
}

impl GuestRam {
    /// `[pa, pa + size)` of the model's memory (a rig's VM RAM).
    pub fn new(pa: u64, size: usize, mem: PhysMem) -> Self {
        GuestRam { pa, size, mem }
    }

    /// PA of page `i`.
    pub fn page(&self, i: u64) -> u64 {
        self.pa + i * 0x1000
    }

    pub fn write(&self, pa: u64, data: &[u8]) {
        // Inside the VM's own RAM by construction; a bad address is a test
        // bug and faults the task.
        if let Err(e) = self.mem.write(pa, data) {
            panic!("guest RAM write at {pa:#x}: {e}");
        }
    }

    pub fn read(&self, pa: u64, buf: &mut [u8]) {
        if let Err(e) = self.mem.read(pa, buf) {
            panic!("guest RAM read at {pa:#x}: {e}");
        }
    }

    /// Writes a guest stage 1 table walk into pages `l1, l1 + 1, l1 + 2`
    /// (level 1, 2, 3; 39-bit VA) mapping the page of `va` to `out`, an
    /// address the next stage sees (an IPA under nesting). `ipa_of` gives
    /// the IPA of a RAM page (how the VM mapped its memory in stage 2).
    pub fn stage1(&self, l1: u64, va: u64, out: u64, ipa_of: impl Fn(u64) -> u64) {
        for p in l1..l1 + 3 {
            self.write(self.page(p), &[0u8; 0x1000]);
        }
        let put = |pa: u64, d: S1Desc| self.write(pa, &d.raw().to_le_bytes());
        put(
            self.page(l1) + ((va >> 30) & 511) * 8,
            S1Desc::table(ipa_of(l1 + 1)),
        );
        put(
            self.page(l1 + 1) + ((va >> 21) & 511) * 8,
            S1Desc::table(ipa_of(l1 + 2)),
        );
        put(
            self.page(l1 + 2) + ((va >> 12) & 511) * 8,
            S1Desc::page(out, S1Ap::RwAny, 0),
        );
    }
}

/// What a VM task's code is given.
pub struct Vm {
    /// The generated iommu-server client.
    pub iommu: IommuClient,
    /// The generated pasid-alloc client, when the rig has one.
    pub pasids: Option<PasidAllocClient>,
    pub ram: GuestRam,
    /// Its devices' DMA.
    pub dma: Dma,
    /// The machine (for marks on the bus log).
    pub bus: Bus,
}

type VmEntry = Arc<dyn Fn(Vm) + Send + Sync>;

struct VmDef {
    name: String,
    priority: u8,
    sids: Vec<u32>,
    slots: Vec<String>,
    entry: VmEntry,
}

/// The strict model configuration the rig uses by default: every strict
/// mode of [`SmmuConfig::strict`] (eager configuration caching, throttled
/// command consumption with slow CMD_SYNCs, walk caches, UNKNOWN reset
/// values and a slow GBPA.UPDATE), and a command queue of at most 16
/// entries (IDR1.CMDQS = 4) so that batches fill and wrap it.
pub fn strict_config(cfg: &SmmuConfig) -> SmmuConfig {
    let mut c = cfg.clone().strict(cfg.seed);
    c.cmdqs = c.cmdqs.min(4);
    c
}

/// Builds a harness machine: the real supervisor, (the real pasid-alloc,)
/// the real iommu-server task on the SMMU model, and VM tasks.
pub struct IommuRig {
    cfg: SmmuConfig,
    strict: bool,
    small_cmdq: bool,
    vms: Vec<VmDef>,
    pasids: Option<Vec<u32>>,
    max_pasid_bits: u8,
    pasid_bits: Option<u8>,
    pasid_quota: u32,
    pasid_state: PasidState,
    event_queue: bool,
    completion: Completion,
    coherent: bool,
    bus: Option<Bus>,
}

impl IommuRig {
    pub fn new(cfg: SmmuConfig) -> Self {
        IommuRig {
            cfg,
            strict: true,
            small_cmdq: true,
            vms: Vec::new(),
            pasids: None,
            max_pasid_bits: 20,
            pasid_bits: None,
            pasid_quota: DEFAULT_PASID_QUOTA,
            pasid_state: PasidState::default(),
            event_queue: false,
            completion: Completion::AtDoorbell,
            coherent: true,
            bus: None,
        }
    }

    /// A non-coherent machine (`false`): the SMMU reads and writes memory
    /// only, the server reaches its tables through the CPU model's cache
    /// (see [`Bus::with_coherency`]), and the model's IDR0.COHACC says 0.
    pub fn coherent(mut self, on: bool) -> Self {
        assert!(self.bus.is_none(), "IommuRig: choose before taking the bus");
        self.coherent = on;
        self.cfg = self.cfg.cohacc(on);
        self
    }

    /// A VM task called `name` at `priority` (3 or lower) owning `sids`
    /// (the static stream map), running `entry`. Its `guest-ram` is the
    /// k-th [`ram_pa`] for the k-th VM.
    pub fn vm(
        mut self,
        name: &str,
        priority: u8,
        sids: &[u32],
        entry: impl Fn(Vm) + Send + Sync + 'static,
    ) -> Self {
        assert!(
            self.bus.is_none(),
            "IommuRig: add VMs before taking the bus"
        );
        self.vms.push(VmDef {
            name: name.to_string(),
            priority,
            sids: sids.to_vec(),
            slots: Vec::new(),
            entry: Arc::new(entry),
        });
        self
    }

    /// One more task-slot for VM `vm` (e.g. a higher-priority VM it posts).
    pub fn slot(mut self, vm: &str, peer: &str) -> Self {
        if let Some(v) = self.vms.iter_mut().find(|v| v.name == vm) {
            v.slots.push(peer.to_string());
        }
        self
    }

    /// Adds the real pasid-alloc task; `first` are the PASIDs at the head
    /// of its free list, in order (so a test can place PASIDs in chosen CD
    /// table leaves; the rest follow in ascending order). Its space is
    /// `max_pasid_bits` unless [`IommuRig::pasid_space_bits`] says
    /// otherwise; its quota [`DEFAULT_PASID_QUOTA`] unless
    /// [`IommuRig::pasid_quota`].
    pub fn pasid_alloc(mut self, first: &[u32]) -> Self {
        self.pasids = Some(first.to_vec());
        self
    }

    /// pasid-alloc's space, `1 .. 2^bits`, when it must differ from the
    /// server's `max_pasid_bits` (app.toml forbids a space wider than the
    /// SMMU's; a test of the server's own range check needs one).
    pub fn pasid_space_bits(mut self, bits: u8) -> Self {
        self.pasid_bits = Some(bits);
        self
    }

    /// PASIDs one VM may hold (allocated or awaiting drain).
    pub fn pasid_quota(mut self, quota: u32) -> Self {
        self.pasid_quota = quota;
        self
    }

    /// pasid-alloc's state dumps, published after each message it handles
    /// from now on.
    pub fn pasid_state(&self) -> PasidState {
        self.pasid_state.enable();
        self.pasid_state.clone()
    }

    /// `ServerConfig::max_pasid_bits` (the CD table size).
    pub fn max_pasid_bits(mut self, bits: u8) -> Self {
        self.max_pasid_bits = bits;
        self
    }

    /// Grants the interim event queue (page 1 and the eventq interrupt).
    pub fn event_queue(mut self, on: bool) -> Self {
        self.event_queue = on;
        self
    }

    /// The model's strict modes ([`strict_config`]), on by default: the
    /// driver must be right against what the architecture allows, not
    /// against what a lenient model happens to do. `false` runs the model
    /// exactly as configured.
    pub fn strict(mut self, on: bool) -> Self {
        assert!(self.bus.is_none(), "IommuRig: choose before taking the bus");
        self.strict = on;
        self
    }

    /// With the strict modes, cap the command queue at 16 entries (the
    /// default) so that batches fill and wrap it; `false` keeps the
    /// configured IDR1.CMDQS (for tests of the driver's batch shape on a
    /// large queue).
    pub fn small_cmdq(mut self, on: bool) -> Self {
        assert!(self.bus.is_none(), "IommuRig: choose before taking the bus");
        self.small_cmdq = on;
        self
    }

    /// How commands complete from boot on.
    pub fn completion(mut self, c: Completion) -> Self {
        self.completion = c;
        self
    }

    /// The machine, for the test body (its memory, model and bus log).
    /// Call after the last [`IommuRig::vm`].
    pub fn bus(&mut self) -> Bus {
        if self.bus.is_none() {
            let sids = self.vms.iter().flat_map(|v| v.sids.clone()).collect();
            let cfg = if self.strict {
                let mut c = strict_config(&self.cfg);
                if !self.small_cmdq {
                    c.cmdqs = self.cfg.cmdqs;
                }
                c
            } else {
                self.cfg.clone()
            };
            self.bus = Some(Bus::with_coherency(cfg, sids, self.coherent));
        }
        self.bus.clone().unwrap_or_else(|| unreachable!())
    }

    /// Task indices: supervisor 0, then pasid-alloc (if any), iommu-server,
    /// the VMs in order.
    pub fn index_of_vm(&self, k: usize) -> usize {
        self.first_vm() + k
    }

    fn first_vm(&self) -> usize {
        if self.pasids.is_some() {
            3
        } else {
            2
        }
    }

    /// The harness machine. Add actions, decoders or limits to it as to
    /// any other.
    pub fn harness(mut self, seed: u64) -> Harness {
        let bus = self.bus();
        if self.strict {
            // The model's choices follow the run's seed.
            bus.smmu.reseed(seed);
        }
        bus.set_completion(self.completion);
        let first_vm = self.first_vm();
        let vm_index: Vec<usize> = (0..self.vms.len()).map(|k| first_vm + k).collect();

        // The board's memory: server tables and each VM's RAM.
        bus.mem
            .add_region(TABLES_PA, TABLES_SIZE)
            .unwrap_or_else(|e| panic!("IommuRig: tables: {e}"));
        let mut streams = Vec::new();
        let mut task_names = vec!["supervisor".to_string()];
        if self.pasids.is_some() {
            task_names.push("pasid-alloc".to_string());
        }
        task_names.push("iommu-server".to_string());
        for (k, v) in self.vms.iter().enumerate() {
            bus.mem
                .add_region(ram_pa(k), RAM_SIZE)
                .unwrap_or_else(|e| panic!("IommuRig: RAM of {}: {e}", v.name));
            streams.extend(v.sids.iter().map(|&sid| (sid, vm_index[k] as u16)));
            task_names.push(v.name.clone());
        }

        let mut h = Harness::new(seed).max_steps(100_000);
        let mut vm_slots = vec!["iommu-server".to_string()];
        if let Some(first) = self.pasids.clone() {
            let setup = PasidSetup {
                bits: self.pasid_bits.unwrap_or(self.max_pasid_bits),
                quota: self.pasid_quota,
                first,
                streams: streams.clone(),
                task_names: task_names.clone(),
                state: self.pasid_state.clone(),
            };
            h = with_pasid_alloc(h, setup);
            vm_slots.push("pasid-alloc".to_string());
        }
        let setup = ServerSetup {
            bus: bus.clone(),
            streams,
            task_names,
            max_pasid_bits: self.max_pasid_bits,
            event_queue: self.event_queue,
            fault_path: false,
        };
        let mut server = TaskSpec::new("iommu-server", IOMMU_PRIORITY, iommu_server_task(setup))
            .caps(CAP_MEMORY_QUERY)
            .model_region(
                "smmu-tables",
                TABLES_PA,
                TABLES_SIZE,
                abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DMA,
            )
            .irq(INTID_CMD_SYNC, CMD_SYNC_BIT)
            .irq(INTID_GERROR, GERROR_BIT);
        if self.event_queue {
            server = server.irq(INTID_EVENTQ, EVENTQ_BIT);
        }
        if self.pasids.is_some() {
            server = server.slots(&["pasid-alloc"]);
        }
        h = h.task(server).decoder("iommu-server", IommuDecoder);

        for (k, v) in self.vms.drain(..).enumerate() {
            let (entry, b) = (v.entry.clone(), bus.clone());
            let has_pasids = self.pasids.is_some();
            let run = move || {
                let Some(iommu) = sys_lookup_slot("iommu-server") else {
                    panic!("iommu-server is not in my task-slots")
                };
                let Some(ram) = sys_region_info("guest-ram") else {
                    panic!("no guest-ram region")
                };
                let vm = Vm {
                    iommu: IommuClient::new(iommu),
                    pasids: if has_pasids {
                        sys_lookup_slot("pasid-alloc").map(PasidAllocClient::new)
                    } else {
                        None
                    },
                    ram: GuestRam {
                        pa: ram.pa as u64,
                        size: ram.size,
                        mem: b.mem.clone(),
                    },
                    dma: b.device(),
                    bus: b.clone(),
                };
                entry(vm)
            };
            let slots: Vec<&str> = vm_slots
                .iter()
                .chain(v.slots.iter())
                .map(String::as_str)
                .collect();
            h = h.task(
                TaskSpec::new(&v.name, v.priority, run)
                    .slots(&slots)
                    .caps(CAP_SHUTDOWN)
                    .model_region(
                        "guest-ram",
                        ram_pa(k),
                        RAM_SIZE,
                        abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DMA,
                    ),
            );
        }
        let (tick, notes) = (bus.clone(), bus);
        h.irq_source(move |_, _| tick.tick())
            .note_source(move || notes.notes())
    }
}

// ---------------------------------------------------------------------------
// Recording what VMs did
// ---------------------------------------------------------------------------

/// One step of a VM's script: what it asked, what it got, and everything
/// the SMMU saw meanwhile (nothing else runs between a VM's request and
/// the server's reply while the model completes commands at the doorbell).
#[derive(Clone, Debug)]
pub struct Step {
    pub label: String,
    /// The result, as `Debug` text.
    pub result: String,
    pub events: Vec<BusEvent>,
}

impl Step {
    /// The commands the SMMU consumed, decoded.
    pub fn commands(&self) -> Vec<CommandKind> {
        self.events
            .iter()
            .filter_map(|e| match e {
                BusEvent::Command(c) => c.kind.ok(),
                _ => None,
            })
            .collect()
    }

    /// STE stores of the step: (sid, word, value).
    pub fn ste_writes(&self) -> Vec<(u32, usize, u64)> {
        self.events
            .iter()
            .filter_map(|e| match *e {
                BusEvent::SteWrite { sid, word, value } => Some((sid, word, value)),
                _ => None,
            })
            .collect()
    }

    /// The commands and STE stores as trace notes, in order.
    pub fn notes(&self) -> Vec<String> {
        self.events.iter().map(describe_event).collect()
    }
}

/// A VM's record of its steps, read by the test body afterwards (assert
/// there, not in task code: a panic in task code is a task fault).
#[derive(Clone, Default)]
pub struct Steps(Arc<Mutex<Vec<Step>>>);

impl Steps {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Step>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` (a request, a DMA), recording its result and the bus
    /// events it caused under `label`.
    pub fn run<T: Debug>(&self, bus: &Bus, label: &str, f: impl FnOnce() -> T) -> T {
        let mark = bus.mark();
        let r = f();
        let step = Step {
            label: label.to_string(),
            result: format!("{r:?}"),
            events: bus.since(mark),
        };
        self.lock().push(step);
        r
    }

    /// [`Steps::run`] for a step whose result only the record needs.
    pub fn record<T: Debug>(&self, bus: &Bus, label: &str, f: impl FnOnce() -> T) {
        self.run(bus, label, f);
    }

    pub fn all(&self) -> Vec<Step> {
        self.lock().clone()
    }

    /// The step called `label` (the first, if several).
    pub fn get(&self, label: &str) -> Step {
        let all = self.all();
        match all.iter().find(|s| s.label == label) {
            Some(s) => s.clone(),
            None => panic!(
                "no step {label:?}; steps: {:?}",
                all.iter().map(|s| &s.label).collect::<Vec<_>>()
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Scenarios (`cargo xtask trace iommu-…`)
// ---------------------------------------------------------------------------

/// The StreamIDs of the rigs: QEMU's edu (the runner VM's device) and its
/// NIC (a second VM's).
pub const SID_A: u32 = 0x10;
pub const SID_B: u32 = 0x08;
/// An IOVA the VMs map in stage 2 domains.
pub const IOVA: u64 = 0x20_0000;
/// Where a VM maps its whole RAM in its S2 domain for guest stage 1 use:
/// RAM page i is IPA `GUEST_IPA + i * 4K`.
pub const GUEST_IPA: u64 = 0x100_0000;
/// A guest virtual address its stage 1 tables map.
pub const GUEST_VA: u64 = 0x40_0000;

/// Read and write.
pub fn rw() -> api::MapPerms {
    api::MapPerms::READ | api::MapPerms::WRITE
}

/// IPA of RAM page `i` under the `GUEST_IPA` mapping.
pub fn guest_ipa(i: u64) -> u64 {
    GUEST_IPA + i * 0x1000
}

/// A guest stage 1 context: tables at `ttb0` (an IPA), 39-bit VA, 40-bit
/// IPA, 4 KiB granule, write-back walks, MAIR index 0 normal memory.
pub fn guest_cd(ttb0: u64, asid: u16) -> api::CdConfig {
    api::CdConfig {
        ttb0,
        tcr: iommu_server::idl::tcr::value(25, 2),
        mair: 0xff,
        asid,
    }
}

/// A guest command for `invalidate`'s lease.
pub fn guest_cmd(c: smmuv3::Command) -> idl_runtime::WireOf<api::SmmuCmd> {
    api::SmmuCmd {
        words: [c.word(0), c.word(1)],
    }
    .to_wire()
}

/// Checks a VM script makes; the scenario ends `shutdown(0)` only if all
/// held. A failed one is logged (and so in the trace).
struct Checks(bool);

impl Checks {
    fn that(&mut self, what: &str, good: bool, got: impl Debug) {
        if !good {
            log!("FAILED {}: got {:?}", what, got);
            self.0 = false;
        }
    }

    fn end(self) -> ! {
        userlib::sys_shutdown(if self.0 { 0 } else { 1 })
    }
}

/// Create a domain, map two pages, attach a stream, DMA through it.
pub fn attach_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let d = c.create_s2_domain(false);
            ok.that("create", d.is_ok(), d);
            let d = d.unwrap_or(api::DomainId(0));
            let m = c.map(d, IOVA, vm.ram.page(1), 0x2000, rw());
            ok.that("map", m.is_ok(), m);
            let a = c.attach(api::StreamId(SID_A), d);
            ok.that(
                "attach hitless",
                matches!(a, Ok(o) if o.update == api::SteUpdate::Hitless),
                a,
            );
            let r = vm.dma.write(SID_A, None, IOVA + 0x1010, b"attach");
            ok.that("DMA lands in page 2", r == Ok(vm.ram.page(2) + 0x10), r);
            ok.end()
        })
        .harness(seed)
}

/// The attach of `attach_scenario` on an SMMU that consumes commands only
/// between task steps: the driver's waiter sleeps on the cmd-sync
/// interrupt (or its 1 ms timer) until each SYNC completes.
pub fn sync_wait_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .completion(Completion::BetweenSteps)
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
            let a = c.attach(api::StreamId(SID_A), d);
            ok.that("map, attach", m.is_ok() && a.is_ok(), (m, a));
            let r = vm.dma.write(SID_A, None, IOVA, b"waited");
            ok.that("DMA lands in page 1", r == Ok(vm.ram.page(1)), r);
            ok.end()
        })
        .harness(seed)
}

/// Map, DMA, unmap (range TLBI_S2_IPA, one SYNC), DMA faults.
pub fn map_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let a = c.attach(api::StreamId(SID_A), d);
            ok.that("attach", a.is_ok(), a);
            let r = vm.dma.write(SID_A, None, IOVA, b"early");
            ok.that("nothing mapped yet", r.is_err(), r);
            let m = c.map(d, IOVA, vm.ram.page(1), 0x3000, rw());
            ok.that("map", m.is_ok(), m);
            let r = vm.dma.write(SID_A, None, IOVA + 0x2000, b"mapped");
            ok.that("DMA lands in page 3", r == Ok(vm.ram.page(3)), r);
            let u = c.unmap(d, IOVA, 0x3000);
            ok.that("unmap 3 pages", u == Ok(0x3000), u);
            let r = vm.dma.write(SID_A, None, IOVA + 0x2000, b"late");
            ok.that("DMA after unmap faults", r.is_err(), r);
            ok.end()
        })
        .harness(seed)
}

/// Bind a PASID twice (the second only counts), DMA with it, unbind twice
/// (the last clears the CD and invalidates).
pub fn bind_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .pasid_alloc(&[5])
        .max_pasid_bits(8)
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let sid = api::StreamId(SID_A);
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d, GUEST_IPA, vm.ram.pa, 0x4_0000, rw());
            ok.that("map RAM", m.is_ok(), m);
            let a = c.attach(sid, d);
            ok.that("attach", a.is_ok(), a);
            let Some(pasids) = vm.pasids.as_ref() else {
                panic!("no pasid-alloc")
            };
            let h = pasids.alloc();
            ok.that("alloc", h.is_ok(), h);
            let Ok(h) = h else { ok.end() };
            vm.ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
            let cd = guest_cd(guest_ipa(10), 7);
            let b = c.bind(sid, h, cd, false);
            ok.that("bind", b == Ok(1), b);
            let b = c.bind(sid, h, cd, false);
            ok.that("second bind counts", b == Ok(2), b);
            let r = vm
                .dma
                .write(SID_A, Some(h.pasid.0), GUEST_VA + 0x10, b"pasid");
            ok.that("DMA with the PASID", r == Ok(vm.ram.page(20) + 0x10), r);
            let u = c.unbind(sid, h.pasid, false);
            ok.that("unbind", u == Ok(api::UnbindOutcome::StillBound), u);
            let u = c.unbind(sid, h.pasid, false);
            ok.that("last unbind", u == Ok(api::UnbindOutcome::Drained), u);
            let r = vm
                .dma
                .write(SID_A, Some(h.pasid.0), GUEST_VA + 0x10, b"gone");
            ok.that("DMA after unbind fails", r.is_err(), r);
            let f = pasids.free(h);
            ok.that("free", f.is_ok(), f);
            ok.end()
        })
        .harness(seed)
}

/// Attach to one S2 domain, replace with another (break-before-make: VMID
/// and S2TTB both change), detach (abort), destroy both.
pub fn replace_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let sid = api::StreamId(SID_A);
            let d1 = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let d2 = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m1 = c.map(d1, IOVA, vm.ram.page(1), 0x1000, rw());
            let m2 = c.map(d2, IOVA, vm.ram.page(2), 0x1000, rw());
            ok.that("maps", m1.is_ok() && m2.is_ok(), (m1, m2));
            let a = c.attach(sid, d1);
            ok.that("attach", a.is_ok(), a);
            let r = vm.dma.write(SID_A, None, IOVA, b"one");
            ok.that("DMA through d1", r == Ok(vm.ram.page(1)), r);
            let p = c.replace(sid, d2);
            ok.that(
                "replace breaks before make",
                matches!(p, Ok(o) if o.old == d1 && o.update == api::SteUpdate::BreakBeforeMake),
                p,
            );
            let r = vm.dma.write(SID_A, None, IOVA, b"two");
            ok.that("DMA through d2", r == Ok(vm.ram.page(2)), r);
            let busy = c.destroy_domain(d2);
            ok.that("attached domain busy", busy == Err(IommuError::Busy), busy);
            let x = c.detach(sid);
            ok.that("detach", matches!(x, Ok(o) if o.old == d2), x);
            let r = vm.dma.write(SID_A, None, IOVA, b"none");
            ok.that("detached stream aborts", r == Err(DmaError::Aborted), r);
            let g1 = c.destroy_domain(d1);
            let g2 = c.destroy_domain(d2);
            ok.that("destroy", g1.is_ok() && g2.is_ok(), (g1, g2));
            ok.end()
        })
        .harness(seed)
}

/// A guest changes its stage 1 table: the device keeps the old page until
/// the guest's TLBI_NH_VA goes through `invalidate` (VMID forced, one
/// SYNC); a command the guest may not issue stops the batch.
pub fn invalidate_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .max_pasid_bits(0)
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let sid = api::StreamId(SID_A);
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d, GUEST_IPA, vm.ram.pa, 0x4_0000, rw());
            let a = c.attach(sid, d);
            ok.that("map, attach", m.is_ok() && a.is_ok(), (m, a));
            vm.ram.stage1(10, GUEST_VA, guest_ipa(20), guest_ipa);
            let pasid0 = PasidHandle {
                pasid: Pasid(0),
                generation: PasidGen(0),
            };
            let b = c.bind(sid, pasid0, guest_cd(guest_ipa(10), 7), false);
            ok.that("bind the stream's context", b == Ok(1), b);
            let r = vm.dma.write(SID_A, None, GUEST_VA, b"old");
            ok.that("DMA via guest stage 1", r == Ok(vm.ram.page(20)), r);
            // The guest remaps its VA without telling the SMMU.
            let pte = vm.ram.page(12) + ((GUEST_VA >> 12) & 511) * 8;
            let desc = S1Desc::page(guest_ipa(21), S1Ap::RwAny, 0).raw();
            vm.ram.write(pte, &desc.to_le_bytes());
            log!("guest: VA {:#x} -> RAM page 21 now, no TLBI yet", GUEST_VA);
            let r = vm.dma.write(SID_A, None, GUEST_VA, b"stale");
            ok.that("stale until invalidated", r == Ok(vm.ram.page(20)), r);
            let tlbi = [guest_cmd(smmuv3::Command::tlbi_nh_va(0, 7, GUEST_VA, true))];
            let i = c.invalidate(d, &tlbi);
            ok.that(
                "guest TLBI_NH_VA",
                matches!(i, Ok(o) if o.done == 1 && o.status == api::InvalidateStatus::Complete),
                i,
            );
            let r = vm.dma.write(SID_A, None, GUEST_VA, b"new");
            ok.that("DMA reaches the new page", r == Ok(vm.ram.page(21)), r);
            let batch = [
                guest_cmd(smmuv3::Command::tlbi_nh_asid(0, 7)),
                guest_cmd(smmuv3::Command::cfgi_ste(SID_A, true)),
                guest_cmd(smmuv3::Command::tlbi_nh_asid(0, 8)),
            ];
            let i = c.invalidate(d, &batch);
            ok.that(
                "CFGI_STE refused, batch stopped",
                matches!(i, Ok(o) if o.done == 1 && o.status == api::InvalidateStatus::Rejected),
                i,
            );
            ok.end()
        })
        .harness(seed)
}

/// The server is killed while the VM waits; the real supervisor restarts
/// it; the VM's next request gets the dead code (ServerDied) and the new
/// server has come up fail-closed: the stream aborts, old domains are gone.
pub fn restart_scenario(seed: u64) -> Harness {
    IommuRig::new(SmmuConfig::new())
        .vm("vm", 3, &[SID_A], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            let sid = api::StreamId(SID_A);
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
            let a = c.attach(sid, d);
            ok.that("map, attach", m.is_ok() && a.is_ok(), (m, a));
            let r = vm.dma.write(SID_A, None, IOVA, b"before");
            ok.that("DMA before", r == Ok(vm.ram.page(1)), r);
            // The test kills the server now (everything is blocked), then
            // wakes this task.
            log!("waiting");
            sys_recv_notification(1);
            let m = c.map(d, IOVA + 0x1000, vm.ram.page(2), 0x1000, rw());
            ok.that(
                "dead server: ServerDied",
                m == Err(IommuError::ServerDied),
                m,
            );
            let r = vm.dma.write(SID_A, None, IOVA, b"after");
            ok.that(
                "fail closed: the stream aborts",
                r == Err(DmaError::Aborted),
                r,
            );
            let a = c.attach(sid, d);
            ok.that("old domain gone", a == Err(IommuError::NotFound), a);
            let d2 = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let m = c.map(d2, IOVA, vm.ram.page(3), 0x1000, rw());
            let a = c.attach(sid, d2);
            ok.that("set up again", m.is_ok() && a.is_ok(), (m, a));
            let r = vm.dma.write(SID_A, None, IOVA, b"again");
            ok.that("DMA again", r == Ok(vm.ram.page(3)), r);
            ok.end()
        })
        .harness(seed)
        .at_step(10_000, crate::Action::kill("iommu-server"))
        .at_step(10_001, crate::Action::Post("vm".into(), 1))
}

/// A second VM asks for the first VM's stream and domain: every request is
/// refused and issues nothing.
pub fn foreign_scenario(seed: u64) -> Harness {
    // Domain ids are slot | generation << 8: the owner's first domain is
    // 0x1_0100: incarnation 1, slot generation 1, slot 0 (the intruder
    // learns nothing it could not guess).
    const OWNERS: api::DomainId = api::DomainId(0x1_0100);
    IommuRig::new(SmmuConfig::new())
        .vm("intruder", 3, &[SID_B], |vm: Vm| {
            let mut ok = Checks(true);
            let c = &vm.iommu;
            // Wait for the owner to set up.
            sys_recv_notification(1);
            let mark = vm.bus.mark();
            let mine = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let a = c.attach(api::StreamId(SID_A), mine);
            ok.that("attach its stream", a == Err(IommuError::NotPermitted), a);
            let m = c.map(OWNERS, IOVA, vm.ram.page(1), 0x1000, rw());
            ok.that("map its domain", m == Err(IommuError::NotPermitted), m);
            let m = c.map(mine, IOVA, ram_pa(1), 0x1000, rw());
            ok.that("map its memory", m == Err(IommuError::NotPermitted), m);
            let x = c.detach(api::StreamId(SID_A));
            ok.that("detach its stream", x == Err(IommuError::NotPermitted), x);
            let g = c.destroy_domain(OWNERS);
            ok.that("destroy its domain", g == Err(IommuError::NotPermitted), g);
            let quiet = vm.bus.since(mark).is_empty();
            ok.that("no command, no STE store", quiet, vm.bus.since(mark));
            ok.end()
        })
        .vm("vm", 4, &[SID_A], |vm: Vm| {
            let c = &vm.iommu;
            let d = c.create_s2_domain(false).unwrap_or(api::DomainId(0));
            let _ = c.map(d, IOVA, vm.ram.page(1), 0x1000, rw());
            let _ = c.attach(api::StreamId(SID_A), d);
            if let Some(intruder) = sys_lookup_slot("intruder") {
                userlib::sys_post(intruder, 1);
            }
        })
        .slot("vm", "intruder")
        .harness(seed)
}
