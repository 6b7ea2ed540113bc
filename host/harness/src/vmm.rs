//! VMs behind their frontends: the real vmm-frontend task (one per VM)
//! between a guest model and the real iommu-server, prq-server and
//! pasid-alloc tasks on the project's SMMUv3 model (docs/vmm-frontend.md).
//!
//! Tasks, by index: supervisor 0, prq-server 1, pasid-alloc 2,
//! iommu-server 3, then `vmm-frontend-<x>` per VM (priority 3, the VM as
//! the servers know it: it owns the VM's streams and its `guest-ram`), then
//! `guest-<x>` per VM (priority 4; its only slot is its frontend, which may
//! only post it). The guest model is test code standing for the VM's
//! vCPUs: it writes its stage-1 tables into its RAM (the model's memory)
//! and asks its vIOMMU through the generated `VmmFrontendClient`. Its
//! device is the SMMU model's: a DMA names the physical StreamID and, for
//! a PASID, the host PASID — what the host programmed into the assigned
//! device —, which the test reads from the frontend's published state
//! ([`Guest::device_pasid`]); the guest itself only ever gets guest names.
//!
//! Every run ends with I1 at the device (each page request group a device
//! raised got exactly one response) and the guest-name check (every fault
//! and event a guest fetched names one of its own vSIDs and, with a PASID,
//! one of its guest PASIDs — never a pSID or a host PASID).

use crate::prq::{
    device_responses, prq_server_task, serve_prq, ModelQueues, Page1Mmio, PrqDecoder, PRQ_PA,
};
use crate::smmu::{
    args_of, compact, fixed_reply, iommu_server_task, lease_infos, ram_pa, with_pasid_alloc, Bus,
    Dma, GuestRam, IommuDecoder, PasidSetup, PasidState, ServerSetup, CMD_SYNC_BIT,
    DEFAULT_PASID_QUOTA, GERROR_BIT, INTID_CMD_SYNC, INTID_GERROR, IOMMU_PRIORITY, RAM_SIZE,
    TABLES_PA, TABLES_SIZE,
};
use crate::trace::LeaseSummary;
use crate::{Harness, Report, TaskSpec, CAP_MEMORY_QUERY, CAP_SHUTDOWN};
use prq_server::{Config as PrqConfig, Prq, REGION_SIZE};
use prq_server_api as papi;
use smmuv3::PriEntry;
use smmuv3_model::{Device, PriGroup, PriOutcome, SmmuConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use userlib::sys_lookup_slot;
use vmm_frontend::{Config, Frontend};
use vmm_frontend_api::{self as api, VmmFrontendClient, VmmFrontendError, VmmFrontendOp};

/// The IPA every VM sees its RAM at (≠ its PA, the same in every VM: an
/// IPA/PA mix-up or a VM reaching another's RAM shows at the device).
pub const GUEST_RAM_IPA: u64 = 0x1000_0000;
/// Frontends rank below iommu-server, guests below their frontends.
pub const FRONTEND_PRIORITY: u8 = 3;
pub const GUEST_PRIORITY: u8 = 4;
/// Task index of the first frontend.
pub const FIRST_FRONTEND: usize = 4;
const TIMER_BIT: u32 = 1 << 31;

/// The frontend's state after each message it handled.
#[derive(Clone, Default, Debug)]
pub struct FeSnap {
    /// Its full state dump (`Frontend`'s Debug).
    pub dump: String,
    /// Guest PASID → host PASID.
    pub pasids: Vec<(u32, u32)>,
    /// Messages and notifications handled.
    pub handled: u64,
}

/// A shared handle on a frontend's published state.
#[derive(Clone, Default)]
pub struct FeState(Arc<Mutex<FeSnap>>);

impl FeState {
    pub fn get(&self) -> FeSnap {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, f: &Frontend) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.dump = format!("{f:?}");
        s.pasids = f
            .pasids
            .iter()
            .flatten()
            .map(|p| (p.guest, p.host.pasid.0))
            .collect();
        s.handled += 1;
    }
}

/// What happened on the way, for the end-of-run checks.
#[derive(Default, Debug)]
pub struct VmmLog {
    /// Lasts raised per group (stop markers excluded), by the devices.
    pub raised: BTreeMap<PriGroup, u32>,
    /// Faults fetched: (VM index, record).
    pub faults: Vec<(usize, api::GuestFault)>,
    /// Events fetched: (VM index, record).
    pub events: Vec<(usize, api::GuestEvent)>,
    /// Failed expectations of the guest scripts.
    pub failed: Vec<String>,
    /// VMs whose script finished.
    pub finished: BTreeSet<usize>,
}

#[derive(Clone, Default)]
pub struct VLog(Arc<Mutex<VmmLog>>);

impl VLog {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, VmmLog> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a guest model is given.
pub struct Guest {
    pub name: String,
    /// Its VM's index in the rig.
    pub k: usize,
    pub fe: VmmFrontendClient,
    /// Its RAM in the model's memory (physical addresses: the test's view).
    pub ram: GuestRam,
    /// The IPA of its RAM's first page (what `ram` says).
    pub ram_ipa: u64,
    /// The VM's streams: (physical, virtual).
    pub streams: Vec<(u32, u32)>,
    pub dma: Dma,
    pub dev: Device,
    pub bus: Bus,
    /// Its frontend's published state.
    pub state: FeState,
    /// pasid-alloc's published state.
    pub pasid_state: PasidState,
    pub log: VLog,
    vms: usize,
}

impl Guest {
    /// IPA of RAM page `i`.
    pub fn ipa(&self, i: u64) -> u64 {
        self.ram_ipa + i * 0x1000
    }

    /// The physical StreamID behind `vsid` (the device's, test only).
    pub fn psid(&self, vsid: u32) -> u32 {
        self.streams
            .iter()
            .find(|s| s.1 == vsid)
            .map(|s| s.0)
            .unwrap_or(u32::MAX)
    }

    /// The host PASID the frontend mapped guest PASID `g` to: what the
    /// host programs into the assigned device (test only).
    pub fn device_pasid(&self, g: u32) -> Option<u32> {
        self.state
            .get()
            .pasids
            .iter()
            .find(|p| p.0 == g)
            .map(|p| p.1)
    }

    /// Records a failed expectation unless `good`.
    pub fn that(&self, what: &str, good: bool, got: impl std::fmt::Debug) -> bool {
        if !good {
            userlib::log!("FAILED {}: got {:?}", what, got);
            self.log
                .lock()
                .failed
                .push(format!("{}: {what}: got {got:?}", self.name));
        }
        good
    }

    /// A page request group of `pages` requests from the device on `psid`
    /// (host PASID `ssid`), logged for I1.
    pub fn page_requests(&self, psid: u32, ssid: Option<u32>, prgi: u16, pages: u64) {
        for p in 0..pages {
            let last = p + 1 == pages;
            let mut e = PriEntry::new(psid, ssid, prgi, 0x40_0000 + 0x1000 * p);
            e.set_read(true).set_write(false).set_last(last);
            let out = self.dev.page_request_entry(e);
            if last && out != PriOutcome::Unsupported {
                *self
                    .log
                    .lock()
                    .raised
                    .entry(PriGroup {
                        sid: psid,
                        ssid,
                        prgi,
                    })
                    .or_insert(0) += 1;
            }
            userlib::log!(
                "device: page request sid {:#x} pasid {:?} PRGI {}{}: {:?}",
                psid,
                ssid,
                prgi,
                if last { " (Last)" } else { "" },
                out
            );
        }
    }

    /// Raw Resp codes the device received for a group (commands and the
    /// SMMU's automatic ones): 0b00 failure, 0b01 invalid, 0b10 success.
    pub fn responses(&self, psid: u32, ssid: Option<u32>, prgi: u16) -> Vec<u64> {
        device_responses(
            &self.bus.smmu,
            PriGroup {
                sid: psid,
                ssid,
                prgi,
            },
        )
    }

    /// Fetches faults (logged for the guest-name check).
    pub fn fetch_faults(&self) -> Result<(Vec<api::GuestFault>, u32), VmmFrontendError> {
        let mut buf = [<api::GuestFaultWire as zerocopy::FromZeros>::new_zeroed(); 64];
        let o = self.fe.fetch_faults(&mut buf)?;
        let recs: Vec<api::GuestFault> = buf[..o.count as usize]
            .iter()
            .filter_map(<api::GuestFault as idl_runtime::Fixed>::from_wire)
            .collect();
        let mut l = self.log.lock();
        for r in &recs {
            l.faults.push((self.k, *r));
        }
        Ok((recs, o.lost))
    }

    /// Fetches events (logged for the guest-name check).
    pub fn fetch_events(&self) -> Result<(Vec<api::GuestEvent>, u32), VmmFrontendError> {
        let mut buf = [<api::GuestEventWire as zerocopy::FromZeros>::new_zeroed(); 32];
        let o = self.fe.fetch_events(&mut buf)?;
        let recs: Vec<api::GuestEvent> = buf[..o.count as usize]
            .iter()
            .filter_map(<api::GuestEvent as idl_runtime::Fixed>::from_wire)
            .collect();
        let mut l = self.log.lock();
        for r in &recs {
            l.events.push((self.k, *r));
        }
        Ok((recs, o.lost))
    }

    /// Answers cookies.
    pub fn respond(
        &self,
        answers: &[(papi::Cookie, papi::FaultResponse)],
    ) -> Result<papi::RespondOutcome, VmmFrontendError> {
        let wires: Vec<_> = answers
            .iter()
            .map(|&(cookie, response)| {
                idl_runtime::Fixed::to_wire(&papi::ResponseEntry { cookie, response })
            })
            .collect();
        self.fe.respond(&wires)
    }

    /// An invalidation batch of raw guest commands.
    pub fn invalidate(
        &self,
        cmds: &[smmuv3::Command],
    ) -> Result<api::GuestInvalidateOutcome, VmmFrontendError> {
        let wires: Vec<_> = cmds
            .iter()
            .map(|c| idl_runtime::Fixed::to_wire(&api::GuestCmd { words: c.words() }))
            .collect();
        self.fe.invalidate(&wires)
    }

    /// Waits (1 ms timer steps, at most `ms`) until `cond` holds; the other
    /// tasks run meanwhile.
    pub fn wait_until(&self, ms: u32, cond: impl Fn() -> bool) -> bool {
        for _ in 0..ms {
            if cond() {
                return true;
            }
            userlib::sys_set_timer(Some(userlib::sys_get_timer() + 1), TIMER_BIT);
            userlib::sys_recv_notification(TIMER_BIT);
        }
        cond()
    }

    /// Waits for the frontend's post ([`vmm_frontend::GUEST_BIT`]), at most
    /// `ms`; true when posted.
    pub fn wait_posted(&self, ms: u64) -> bool {
        userlib::sys_set_timer(Some(userlib::sys_get_timer() + ms), TIMER_BIT);
        let bits = userlib::sys_recv_notification(TIMER_BIT | vmm_frontend::GUEST_BIT);
        bits & vmm_frontend::GUEST_BIT != 0
    }

    /// This VM's script is done: the last one stops the machine (0 when no
    /// expectation failed); the others wait.
    pub fn finish(&self) -> ! {
        let (all, ok) = {
            let mut l = self.log.lock();
            l.finished.insert(self.k);
            (l.finished.len() == self.vms, l.failed.is_empty())
        };
        if all {
            userlib::sys_shutdown(if ok { 0 } else { 1 })
        }
        loop {
            userlib::sys_recv_notification(0);
        }
    }
}

type GuestEntry = Arc<dyn Fn(Guest) + Send + Sync>;

struct VmDef {
    x: String,
    streams: Vec<(u32, u32)>,
    depth: u16,
    entry: GuestEntry,
}

/// Builds the machine.
pub struct VmmRig {
    cfg: SmmuConfig,
    vms: Vec<VmDef>,
    pasid_bits: u8,
    pasid_quota: u32,
    first: Vec<u32>,
    pasid_state: PasidState,
    pub log: VLog,
}

/// A finished run.
pub struct VmmRun {
    pub report: Report,
    pub bus: Bus,
    pub log: VLog,
    pub states: Vec<FeState>,
}

impl VmmRun {
    /// The guest scripts' failures, I1 at the device and the guest-name
    /// check; Err lists what broke.
    pub fn invariants(&self, streams: &[Vec<(u32, u32)>]) -> Result<(), String> {
        let l = self.log.lock();
        let smmu = &self.bus.smmu;
        let mut errs: Vec<String> = l.failed.clone();
        for (g, &n) in &l.raised {
            let cmds = smmu.pri_responses(*g).len() as u32;
            let auto = smmu
                .auto_pri_responses()
                .iter()
                .filter(|a| a.group == *g)
                .count() as u32;
            if cmds + auto != n {
                errs.push(format!(
                    "I1: group {g:?}: {n} raised, {cmds} PRI_RESP + {auto} automatic"
                ));
            }
        }
        if !smmu.pending_pri_groups().is_empty() {
            errs.push(format!(
                "I1: unanswered at the device: {:?}",
                smmu.pending_pri_groups()
            ));
        }
        for (k, f) in &l.faults {
            if !streams[*k].iter().any(|s| s.1 == f.vsid.0) {
                errs.push(format!("VM {k} got a fault of a vSID not its own: {f:?}"));
            }
        }
        for (k, e) in &l.events {
            let sid = (e.words[0] >> 32) as u32;
            if !streams[*k].iter().any(|s| s.1 == e.vsid.0 && s.1 == sid) {
                errs.push(format!("VM {k} got an event not in its names: {e:?}"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n"))
        }
    }

    /// Asserts a clean shutdown and the invariants.
    pub fn check(&self, streams: &[Vec<(u32, u32)>]) {
        if let Err(e) = self.invariants(streams) {
            panic!(
                "broken:\n{e}\nreplay (Harness::choices): {}\n--- end of trace ---\n{}",
                self.report.replay(),
                self.report.trace.tail_text(80)
            );
        }
        self.report.expect_shutdown(0);
    }
}

impl VmmRig {
    pub fn new(cfg: SmmuConfig) -> Self {
        VmmRig {
            cfg,
            vms: Vec::new(),
            pasid_bits: 8,
            pasid_quota: DEFAULT_PASID_QUOTA,
            first: Vec::new(),
            pasid_state: PasidState::default(),
            log: VLog::default(),
        }
    }

    /// A VM `x` (frontend `vmm-frontend-<x>`, guest `guest-<x>`) owning
    /// `streams` (physical, virtual), with a virtual event queue of
    /// `depth`, its guest running `entry`.
    pub fn vm(
        mut self,
        x: &str,
        streams: &[(u32, u32)],
        depth: u16,
        entry: impl Fn(Guest) + Send + Sync + 'static,
    ) -> Self {
        self.vms.push(VmDef {
            x: x.to_string(),
            streams: streams.to_vec(),
            depth,
            entry: Arc::new(entry),
        });
        self
    }

    /// pasid-alloc hands these out first, in order (then ascending).
    pub fn pasid_first(mut self, first: &[u32]) -> Self {
        self.first = first.to_vec();
        self
    }

    /// pasid-alloc's space: PASIDs `1 .. 2^bits` (8 unless set).
    pub fn pasid_space_bits(mut self, bits: u8) -> Self {
        self.pasid_bits = bits;
        self
    }

    /// pasid-alloc's quota per VM.
    pub fn pasid_quota(mut self, q: u32) -> Self {
        self.pasid_quota = q;
        self
    }

    /// pasid-alloc's state dumps, published after each message.
    pub fn pasid_state(&self) -> PasidState {
        self.pasid_state.enable();
        self.pasid_state.clone()
    }

    /// Task index of VM `k`'s frontend.
    pub fn frontend_index(k: usize) -> usize {
        FIRST_FRONTEND + k
    }

    /// Runs the machine with `seed` after `f` adds to it (actions).
    pub fn run_with(self, seed: u64, f: impl FnOnce(Harness) -> Harness) -> VmmRun {
        let (h, bus, log, states) = self.parts(seed);
        VmmRun {
            report: f(h).run(),
            bus,
            log,
            states,
        }
    }

    pub fn run(self, seed: u64) -> VmmRun {
        self.run_with(seed, |h| h)
    }

    /// The machine, not run (traces).
    pub fn harness(self, seed: u64) -> Harness {
        self.parts(seed).0
    }

    fn parts(self, seed: u64) -> (Harness, Bus, VLog, Vec<FeState>) {
        let n = self.vms.len();
        let bus = Bus::new(
            self.cfg.clone(),
            self.vms
                .iter()
                .flat_map(|v| v.streams.iter().map(|s| s.0))
                .collect(),
        );
        let log = self.log.clone();
        let mut names: Vec<String> = ["supervisor", "prq-server", "pasid-alloc", "iommu-server"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let fe_names: Vec<String> = self
            .vms
            .iter()
            .map(|v| format!("vmm-frontend-{}", v.x))
            .collect();
        let guest_names: Vec<String> = self.vms.iter().map(|v| format!("guest-{}", v.x)).collect();
        names.extend(fe_names.iter().cloned());
        names.extend(guest_names.iter().cloned());
        let mut streams = Vec::new();
        for (k, v) in self.vms.iter().enumerate() {
            streams.extend(v.streams.iter().map(|s| (s.0, (FIRST_FRONTEND + k) as u16)));
        }
        bus.mem
            .add_region(TABLES_PA, TABLES_SIZE)
            .unwrap_or_else(|e| panic!("VmmRig: tables: {e}"));
        bus.mem
            .add_region(PRQ_PA, REGION_SIZE)
            .unwrap_or_else(|e| panic!("VmmRig: prq-queues: {e}"));
        for k in 0..n {
            bus.mem
                .add_region(ram_pa(k), RAM_SIZE)
                .unwrap_or_else(|e| panic!("VmmRig: RAM: {e}"));
        }
        let mut watchers: Vec<&str> = vec!["iommu-server"];
        watchers.extend(fe_names.iter().map(String::as_str));
        let mut h = Harness::new(seed)
            .max_steps(400_000)
            .supervisor_posts(&watchers)
            .supervisor_posts(&["prq-server"]);

        // prq-server: posts iommu-server and the frontends (the VMs).
        {
            let (smmu, mem, streams, names) = (
                bus.smmu.clone(),
                bus.mem.clone(),
                streams.clone(),
                names.clone(),
            );
            let entry = move || {
                let q = userlib::sys_region_info("prq-queues")
                    .unwrap_or_else(|| panic!("no prq-queues"));
                let mmio = Page1Mmio::new(smmu.clone());
                let qm = ModelQueues::new(mem.clone(), q.pa as u64, q.size);
                let cfg = PrqConfig {
                    streams: &streams,
                    evtq_log2: 6,
                    priq_log2: 6,
                };
                let mut prq = Box::new(Prq::new(mmio, qm, &cfg));
                serve_prq(&mut prq, &names, &streams)
            };
            h = h
                .task(prq_server_task(entry, &watchers))
                .decoder("prq-server", PrqDecoder);
        }
        h = with_pasid_alloc(
            h,
            PasidSetup {
                bits: self.pasid_bits,
                quota: self.pasid_quota,
                first: self.first.clone(),
                streams: streams.clone(),
                task_names: names.clone(),
                state: self.pasid_state.clone(),
            },
        );
        let setup = ServerSetup {
            bus: bus.clone(),
            streams: streams.clone(),
            task_names: names.clone(),
            max_pasid_bits: 8,
            event_queue: false,
            fault_path: true,
        };
        h = h
            .task(
                TaskSpec::new("iommu-server", IOMMU_PRIORITY, iommu_server_task(setup))
                    .caps(CAP_MEMORY_QUERY)
                    .model_region(
                        "smmu-tables",
                        TABLES_PA,
                        TABLES_SIZE,
                        abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DMA,
                    )
                    .irq(INTID_CMD_SYNC, CMD_SYNC_BIT)
                    .irq(INTID_GERROR, GERROR_BIT)
                    .slots(&["prq-server", "supervisor", "pasid-alloc"]),
            )
            .decoder("iommu-server", IommuDecoder);

        // The frontends: the real library's loop.
        let mut states = Vec::new();
        for (k, v) in self.vms.iter().enumerate() {
            let state = FeState::default();
            states.push(state.clone());
            let vstreams = v.streams.clone();
            let depth = v.depth;
            let guest = (FIRST_FRONTEND + n + k) as u16;
            let run = move || {
                let Some(peers) = vmm_frontend::peers() else {
                    panic!("frontend: no iommu-server slot")
                };
                let cfg = Config {
                    guest,
                    ram_pa: ram_pa(k),
                    ram_size: RAM_SIZE as u64,
                    ram_ipa: GUEST_RAM_IPA,
                    event_depth: depth,
                    streams: &vstreams,
                    caching_mode: true,
                };
                let mut fe = Box::new(Frontend::new(&cfg, peers));
                let st = state.clone();
                vmm_frontend::serve_with(&mut fe, move |f| st.publish(f))
            };
            h = h
                .task(
                    TaskSpec::new(&fe_names[k], FRONTEND_PRIORITY, run)
                        .slots(&["iommu-server", "prq-server", "pasid-alloc", "supervisor"])
                        .posts(&[guest_names[k].as_str()])
                        .model_region(
                            "guest-ram",
                            ram_pa(k),
                            RAM_SIZE,
                            abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DMA,
                        ),
                )
                .decoder(&fe_names[k], VmmDecoder);
        }
        // The guests.
        for (k, v) in self.vms.iter().enumerate() {
            let (b, l, name, entry, vstreams, state, ps) = (
                bus.clone(),
                log.clone(),
                guest_names[k].clone(),
                v.entry.clone(),
                v.streams.clone(),
                states[k].clone(),
                self.pasid_state.clone(),
            );
            let fe_name = fe_names[k].clone();
            let run = move || {
                let g = Guest {
                    name: name.clone(),
                    k,
                    fe: VmmFrontendClient::new(
                        sys_lookup_slot(&fe_name).unwrap_or_else(|| panic!("no frontend slot")),
                    ),
                    ram: GuestRam::new(ram_pa(k), RAM_SIZE, b.mem.clone()),
                    ram_ipa: GUEST_RAM_IPA,
                    streams: vstreams.clone(),
                    dma: b.device(),
                    dev: Device::new(b.smmu.clone()),
                    bus: b.clone(),
                    state: state.clone(),
                    pasid_state: ps.clone(),
                    log: l.clone(),
                    vms: n,
                };
                entry(g)
            };
            h = h.task(
                TaskSpec::new(&guest_names[k], GUEST_PRIORITY, run)
                    .slots(&[fe_names[k].as_str()])
                    .caps(CAP_SHUTDOWN),
            );
        }
        let (tick_bus, note_bus) = (bus.clone(), bus.clone());
        let h = h
            .irq_source(move |_, _| tick_bus.tick())
            .note_source(move || note_bus.notes());
        (h, bus, log, states)
    }
}

/// Trace decoder for the frontend's interface (what the guest asked).
pub struct VmmDecoder;

impl crate::Decoder for VmmDecoder {
    fn interface(&self) -> &str {
        "VmmFrontend"
    }

    fn operation(&self, op: u16) -> Option<String> {
        VmmFrontendOp::from_u32(op as u32).map(|o| o.name().to_string())
    }

    fn request(&self, op: u16, bytes: &[u8]) -> Option<String> {
        self.request_leased(op, bytes, &[])
    }

    fn request_leased(&self, op: u16, bytes: &[u8], leases: &[LeaseSummary]) -> Option<String> {
        match api::dispatch_decode(op as u32, bytes, usize::MAX, &lease_infos(leases)) {
            Ok(req) => Some(compact(&args_of(&format!("{req:?}")))),
            Err(reject) => Some(format!("malformed: {}", reject.what)),
        }
    }

    fn reply(&self, op: u16, code: u32, bytes: &[u8]) -> Option<String> {
        type E = VmmFrontendError;
        Some(match VmmFrontendOp::from_u32(op as u32)? {
            VmmFrontendOp::Caps => fixed_reply::<api::GuestCaps, E>(code, bytes),
            VmmFrontendOp::Ram => fixed_reply::<api::GuestRam, E>(code, bytes),
            VmmFrontendOp::AllocPasid | VmmFrontendOp::FreePasid | VmmFrontendOp::SetSte => {
                fixed_reply::<(), E>(code, bytes)
            }
            VmmFrontendOp::Bind => fixed_reply::<u32, E>(code, bytes),
            VmmFrontendOp::Unbind => fixed_reply::<iommu_server_api::UnbindOutcome, E>(code, bytes),
            VmmFrontendOp::Invalidate => fixed_reply::<api::GuestInvalidateOutcome, E>(code, bytes),
            VmmFrontendOp::FetchFaults | VmmFrontendOp::FetchEvents => {
                fixed_reply::<papi::FetchOutcome, E>(code, bytes)
            }
            VmmFrontendOp::Respond => fixed_reply::<papi::RespondOutcome, E>(code, bytes),
        })
    }
}
