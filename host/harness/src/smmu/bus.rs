//! The bus log: one ordered record of what the SMMU saw (commands consumed,
//! STE words stored while enabled, DMA), and the model behind it.

use super::*;
use smmuv3::regs::{offset, CR0, STRTAB_BASE_CFG};
use smmuv3::{CommandKind, L1StreamDesc, Mmio, Ste};
use smmuv3_model::{CpuCache, Device, DmaError, LoggedCommand, PhysMem, Smmu, SmmuConfig};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
pub(super) struct BusState {
    pub(super) events: Vec<BusEvent>,
    /// Events already turned into trace notes.
    noted: usize,
    /// Sequence number of the last command copied from the model's log.
    last_seq: Option<u64>,
    /// A CMDQ_PROD write the SMMU has not seen yet (not AtDoorbell).
    pub(super) pending_prod: Option<u32>,
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
    pub(super) sids: Arc<Vec<u32>>,
    pub(super) completion: Arc<AtomicU8>,
    pub(super) state: Arc<Mutex<BusState>>,
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

    pub(super) fn lock(&self) -> MutexGuard<'_, BusState> {
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
    pub(super) fn collect_commands(&self) {
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
    pub(super) fn on_store(&self, pa: u64, value: u64) {
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

    pub(super) fn on_dma(&self, event: BusEvent) {
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
