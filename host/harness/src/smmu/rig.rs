//! VMs and the rig: guest RAM, VM tasks, and [`IommuRig`], which puts
//! iommu-server, its clients and the model on one machine.

use super::*;
use crate::{Harness, TaskSpec, CAP_MEMORY_QUERY, CAP_SHUTDOWN};
use iommu_server_api::IommuClient;
use pasid_alloc_api::PasidAllocClient;
use smmuv3::pgtable::{S1Ap, S1Desc};
use smmuv3_model::{PhysMem, SmmuConfig};
use std::sync::Arc;
use userlib::{sys_lookup_slot, sys_region_info};

/// A VM's memory: `guest-ram`, in the model's physical memory.
#[derive(Clone)]
pub struct GuestRam {
    pub pa: u64,
    pub size: usize,
    pub(super) mem: PhysMem,
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
    pub(super) name: String,
    priority: u8,
    pub(super) sids: Vec<u32>,
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
    pub(super) cfg: SmmuConfig,
    strict: bool,
    small_cmdq: bool,
    vms: Vec<VmDef>,
    pub(super) pasids: Option<Vec<u32>>,
    pub(super) max_pasid_bits: u8,
    pasid_bits: Option<u8>,
    pasid_quota: u32,
    pasid_state: PasidState,
    pub(super) event_queue: bool,
    pub(super) completion: Completion,
    pub(super) coherent: bool,
    pub(super) bus: Option<Bus>,
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
