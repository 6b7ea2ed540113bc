//! The real prq-server task next to the real iommu-server task on the
//! project's SMMUv3 model, with VM tasks that attach and bind, devices
//! that raise page requests, and an invariant check at the end of every
//! run (docs/faults.md):
//!
//! - **I1**: every page request group a device raised (a Last that is not
//!   a stop marker) got exactly one response *at the device*: the model's
//!   PRI_RESP log for the group plus its automatic responses equal the
//!   number of such Lasts, and no response matched nothing.
//! - **I2**: every fault record a VM fetched was for a stream that VM
//!   owns (the rig's static stream map) and for a group some device raised.
//!
//! What stands in for the image's hardware: prq-server's registers are the
//! model's page 1 ([`Page1Mmio`]: a page-0 access is refused and recorded,
//! so a test asserts there were none); its `prq-queues` region is model
//! memory at [`PRQ_PA`]; the PRIQ / EVTQ lines are its interrupts.

use crate::smmu::{
    args_of, compact, fixed_reply, iommu_server_task, lease_infos, ram_pa, with_pasid_alloc, Bus,
    IommuDecoder, PasidSetup, PasidState, ServerSetup, CMD_SYNC_BIT, DEFAULT_PASID_QUOTA,
    GERROR_BIT, INTID_CMD_SYNC, INTID_EVENTQ, INTID_GERROR, INTID_PRIQ, IOMMU_PRIORITY, RAM_SIZE,
    TABLES_PA, TABLES_SIZE,
};
use crate::trace::LeaseSummary;
use crate::{Harness, Report, TaskSpec, CAP_MEMORY_QUERY, CAP_SHUTDOWN, CAP_TASK_CONTROL};
use iommu_server_api::IommuClient;
use pasid_alloc_api::PasidAllocClient;
use prq_server::{Config, Prq, QueueMemory, Roles, REGION_SIZE};
use prq_server_api::{self as papi, PrqClient};
use smmuv3::regs::offset::PAGE1;
use smmuv3::{Mmio, PriEntry};
use smmuv3_model::{
    CmdOutcome, CpuCache, Device, PriGroup, PriOutcome, Smmu, SmmuConfig, CACHE_LINE,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use userlib::{sys_lookup_slot, sys_region_info, TaskId};

/// Physical address of prq-server's `prq-queues` region.
pub const PRQ_PA: u64 = 0x5000_0000;
/// prq-server ranks with pasid-alloc, above iommu-server (which calls it).
pub const PRQ_PRIORITY: u8 = 1;

/// prq-server's registers: the model's page 1 only.
pub struct Page1Mmio {
    smmu: Arc<Smmu>,
    log: Log,
}

impl Page1Mmio {
    /// Page 1 of `smmu`; page-0 accesses are refused (logged nowhere).
    pub fn new(smmu: Arc<Smmu>) -> Self {
        Page1Mmio {
            smmu,
            log: Log::default(),
        }
    }

    fn ok(&self, off: usize) -> bool {
        if (PAGE1..2 * PAGE1).contains(&off) {
            return true;
        }
        self.log.lock().refused.push(off);
        false
    }
}

impl Mmio for Page1Mmio {
    fn read32(&self, off: usize) -> u32 {
        if self.ok(off) {
            self.smmu.read32(off)
        } else {
            0
        }
    }
    fn write32(&self, off: usize, value: u32) {
        if self.ok(off) {
            self.smmu.write32(off, value)
        }
    }
    fn read64(&self, off: usize) -> u64 {
        if self.ok(off) {
            self.smmu.read64(off)
        } else {
            0
        }
    }
    fn write64(&self, off: usize, value: u64) {
        if self.ok(off) {
            self.smmu.write64(off, value)
        }
    }
}

/// prq-server's region in model memory.
pub struct ModelQueues {
    /// The CPU's view (through its cache on a non-coherent machine).
    mem: CpuCache,
    pa: u64,
    size: usize,
}

impl ModelQueues {
    /// `[pa, pa + size)` of the model's memory.
    /// On a coherent machine (the VmmRig's): the CPU's view is the
    /// memory itself.
    pub fn new(mem: smmuv3_model::PhysMem, pa: u64, size: usize) -> Self {
        ModelQueues {
            mem: CpuCache::new(mem, true),
            pa,
            size,
        }
    }
}

impl QueueMemory for ModelQueues {
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
        self.mem.read_u64(self.pa + off as u64).unwrap_or(0)
    }
    fn write64(&self, off: usize, value: u64) {
        if off.is_multiple_of(8) && off + 8 <= self.size {
            let _ = self.mem.write_u64(self.pa + off as u64, value);
        }
    }
    // As the image's `DmaPtr::refresh`: DC CIVAC over the lines.
    fn refresh(&self, off: usize, len: usize) {
        if self.mem.coherent() || off.checked_add(len).is_none_or(|e| e > self.size) {
            return;
        }
        let mut a = (self.pa + off as u64) & !(CACHE_LINE - 1);
        while a < self.pa + (off + len) as u64 {
            self.mem.clean_invalidate(a);
            a += CACHE_LINE;
        }
    }
}

/// What happened on the fault path, for the end-of-run invariants.
#[derive(Default, Debug)]
pub struct FaultLog {
    /// Lasts raised per group (stop markers excluded), by the devices.
    pub raised: BTreeMap<PriGroup, u32>,
    /// Records fetched: (VM name, record).
    pub delivered: Vec<(String, papi::FaultRecord)>,
    /// Page-0 accesses prq-server attempted.
    pub refused: Vec<usize>,
    /// Every page request the devices sent (stop markers excluded), in
    /// order, with its page address, Last bit and what the PRI queue did
    /// with it (the explorer's I6 check: `harness::explore`).
    pub requests: Vec<(PriGroup, u64, bool, PriOutcome)>,
    /// Each stream's owner (StreamID → VM name), for I2. Kept here, per
    /// rig: a process-wide map keyed by the log's address grew with every
    /// run of a sweep.
    pub owners: BTreeMap<u32, String>,
}

/// A shared handle on the log.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<FaultLog>>);

impl Log {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, FaultLog> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a VM task's code is given.
pub struct PrqVm {
    pub name: String,
    pub iommu: IommuClient,
    pub prq: PrqClient,
    pub pasids: Option<PasidAllocClient>,
    /// Its guest RAM's physical address.
    pub ram: u64,
    pub bus: Bus,
    log: Log,
    dev: Device,
}

impl PrqVm {
    /// A page request from the device on `sid` (PASID `ssid`), logged for
    /// I1 when it is a Last that is not a stop marker.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        sid: u32,
        ssid: Option<u32>,
        prgi: u16,
        addr: u64,
        read: bool,
        write: bool,
        last: bool,
    ) -> PriOutcome {
        self.burst(&[Req {
            sid,
            ssid,
            prgi,
            addr,
            read,
            write,
            last,
        }])[0]
    }

    /// [`PrqVm::burst`] without the trace lines (one log line per request
    /// would be one task step each in a storm).
    pub fn burst_quiet(&self, reqs: &[Req]) -> Vec<PriOutcome> {
        self.burst_inner(reqs, false)
    }

    /// Page requests sent back to back: no task runs between them (the
    /// trace log lines come after), so a burst can overflow the PRI queue.
    pub fn burst(&self, reqs: &[Req]) -> Vec<PriOutcome> {
        self.burst_inner(reqs, true)
    }

    fn burst_inner(&self, reqs: &[Req], trace: bool) -> Vec<PriOutcome> {
        let mut outs = Vec::new();
        for r in reqs {
            let mut e = PriEntry::new(r.sid, r.ssid, r.prgi, r.addr);
            e.set_read(r.read).set_write(r.write).set_last(r.last);
            let out = self.dev.page_request_entry(e);
            let marker = r.ssid.is_some() && e.is_stop_marker();
            let g = PriGroup {
                sid: r.sid,
                ssid: r.ssid,
                prgi: r.prgi,
            };
            if !marker {
                self.log.lock().requests.push((g, r.addr, r.last, out));
            }
            if r.last && !marker && out != PriOutcome::Unsupported {
                *self
                    .log
                    .lock()
                    .raised
                    .entry(PriGroup {
                        sid: r.sid,
                        ssid: r.ssid,
                        prgi: r.prgi,
                    })
                    .or_insert(0) += 1;
            }
            outs.push((out, marker));
        }
        for (r, (out, marker)) in reqs.iter().zip(&outs).filter(|_| trace) {
            // On the VM's lifeline in traces: what the device sent.
            let what = if *marker {
                "stop marker"
            } else if r.last {
                "page request (Last)"
            } else {
                "page request"
            };
            userlib::log!(
                "device: {} sid {:#x} pasid {:?} PRGI {} addr {:#x}: {:?}",
                what,
                r.sid,
                r.ssid,
                r.prgi,
                r.addr,
                out
            );
        }
        outs.into_iter().map(|(o, _)| o).collect()
    }

    /// A whole group of `pages` requests (the last with Last).
    pub fn group(&self, sid: u32, ssid: Option<u32>, prgi: u16, pages: u64) {
        for p in 0..pages {
            self.request(
                sid,
                ssid,
                prgi,
                0x1000 * (p + 1),
                true,
                false,
                p + 1 == pages,
            );
        }
    }

    /// A stop marker for (sid, pasid).
    pub fn stop_marker(&self, sid: u32, pasid: u32, prgi: u16) -> PriOutcome {
        self.request(sid, Some(pasid), prgi, 0, false, false, true)
    }

    /// The device a DMA master would be (stalls, events).
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Fetches fault records (logged for I2).
    pub fn fetch(&self) -> (Vec<papi::FaultRecord>, u32) {
        let mut buf = [<papi::FaultRecordWire as zerocopy::FromZeros>::new_zeroed(); 64];
        let Ok(o) = self.prq.fetch_faults(&mut buf) else {
            return (Vec::new(), 0);
        };
        let recs: Vec<papi::FaultRecord> = buf[..o.count as usize]
            .iter()
            .filter_map(<papi::FaultRecord as idl_runtime::Fixed>::from_wire)
            .collect();
        let mut l = self.log.lock();
        for r in &recs {
            l.delivered.push((self.name.clone(), *r));
        }
        (recs, o.lost)
    }

    /// Answers cookies.
    pub fn respond(&self, answers: &[(papi::Cookie, papi::FaultResponse)]) -> papi::RespondOutcome {
        let wires: Vec<_> = answers
            .iter()
            .map(|&(cookie, response)| {
                idl_runtime::Fixed::to_wire(&papi::ResponseEntry { cookie, response })
            })
            .collect();
        let mut r = self.prq.respond(&wires);
        if r == Err(papi::PrqError::ServerDied) {
            r = self.prq.respond(&wires);
        }
        r.unwrap_or(papi::RespondOutcome {
            done: u32::MAX,
            status: papi::RespondStatus::Full,
        })
    }

    /// The responses the device received for a group, as raw Resp codes
    /// (0b00 ResponseFailure, 0b01 InvalidRequest, 0b10 Success), commands
    /// and the SMMU's automatic ones.
    pub fn responses(&self, sid: u32, ssid: Option<u32>, prgi: u16) -> Vec<u64> {
        device_responses(&self.bus.smmu, PriGroup { sid, ssid, prgi })
    }

    /// Waits (1 ms timer steps, at most 200) until `cond` holds; the other
    /// tasks run meanwhile (iommu-server issuing responses).
    pub fn wait_until(&self, cond: impl Fn() -> bool) -> bool {
        for _ in 0..200 {
            if cond() {
                return true;
            }
            userlib::sys_set_timer(Some(userlib::sys_get_timer() + 1), TIMER_BIT);
            userlib::sys_recv_notification(TIMER_BIT);
        }
        cond()
    }

    /// Waits until the device holds a response for the group.
    pub fn wait_answer(&self, sid: u32, ssid: Option<u32>, prgi: u16, count: usize) -> Vec<u64> {
        self.wait_until(|| self.responses(sid, ssid, prgi).len() >= count);
        self.responses(sid, ssid, prgi)
    }
}

const TIMER_BIT: u32 = 1 << 31;

/// One page request of a [`PrqVm::burst`].
#[derive(Clone, Copy, Debug)]
pub struct Req {
    pub sid: u32,
    pub ssid: Option<u32>,
    pub prgi: u16,
    pub addr: u64,
    pub read: bool,
    pub write: bool,
    pub last: bool,
}

impl Req {
    /// A read request for `addr` in group `prgi` of `sid` (no PASID).
    pub const fn read(sid: u32, prgi: u16, addr: u64, last: bool) -> Self {
        Req {
            sid,
            ssid: None,
            prgi,
            addr,
            read: true,
            write: false,
            last,
        }
    }
}

type VmEntry = Arc<dyn Fn(PrqVm) + Send + Sync>;

struct VmDef {
    name: String,
    sids: Vec<u32>,
    caps: u32,
    entry: VmEntry,
}

/// Builds a machine: supervisor, prq-server, (pasid-alloc stand-in,)
/// iommu-server with the fault path, and VM tasks.
pub struct PrqRig {
    cfg: SmmuConfig,
    priq_log2: u32,
    evtq_log2: u32,
    pasids: Option<Vec<u32>>,
    /// pasid-alloc's space (`PasidSetup::bits`).
    pasid_bits: u8,
    pasid_state: PasidState,
    vms: Vec<VmDef>,
    coherent: bool,
    cpu_hook: Option<fn(&CpuCache)>,
    /// The tasks the supervisor posts when a task died.
    watchers: Vec<String>,
    pub bus: Bus,
    pub log: Log,
}

/// Result of a run: the report and the end-of-run invariant check.
pub struct PrqRun {
    pub report: Report,
    pub bus: Bus,
    pub log: Log,
}

impl PrqRun {
    /// I1, I2 and "prq-server never touched page 0"; Err lists what broke.
    pub fn invariants(&self) -> Result<(), String> {
        let l = self.log.lock();
        let smmu = &self.bus.smmu;
        let mut errs = Vec::new();
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
        for c in smmu.commands() {
            if c.outcome == CmdOutcome::NoMatch {
                errs.push(format!("I1: a response matched nothing: {:?}", c.kind));
            }
        }
        if !smmu.pending_pri_groups().is_empty() {
            errs.push(format!(
                "I1: unanswered at the device: {:?}",
                smmu.pending_pri_groups()
            ));
        }
        let stalled = Device::new(smmu.clone()).pending_stalls();
        if !stalled.is_empty() {
            errs.push(format!(
                "I1: stalled transactions never resumed: {stalled:?}"
            ));
        }
        for (vm, r) in &l.delivered {
            let owner = l.owners.get(&r.sid.0).cloned();
            if owner.as_deref() != Some(vm.as_str()) {
                errs.push(format!("I2: {vm} got {r:?}, stream owned by {owner:?}"));
            }
            let ssid = r
                .flags
                .contains(papi::FaultFlags::PASID_VALID)
                .then_some(r.pasid.0);
            if r.kind == papi::FaultKind::PageRequest
                && !l.raised.contains_key(&PriGroup {
                    sid: r.sid.0,
                    ssid,
                    prgi: r.group,
                })
            {
                errs.push(format!("I2: {vm} got a record no device raised: {r:?}"));
            }
        }
        if !l.refused.is_empty() {
            errs.push(format!("prq-server touched page 0 at {:x?}", l.refused));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n"))
        }
    }

    /// Asserts a clean shutdown and the invariants.
    pub fn check(&self) {
        if std::env::var_os("PRQ_TRACE").is_some()
            && self.report.outcome != crate::Outcome::Shutdown(0)
        {
            eprintln!("{}", self.report.trace.tail_text(100_000));
        }
        self.report.expect_shutdown(0);
        if let Err(e) = self.invariants() {
            panic!(
                "invariants broken:\n{e}\nreplay (Harness::choices): {}\n--- end of trace ---\n{}",
                self.report.replay(),
                self.report
                    .trace
                    .tail_text(if std::env::var_os("PRQ_TRACE").is_some() {
                        100_000
                    } else {
                        60
                    })
            );
        }
    }
}

impl PrqRig {
    pub fn new(cfg: SmmuConfig) -> Self {
        PrqRig {
            bus: Bus::new(cfg.clone(), Vec::new()),
            cfg,
            priq_log2: 6,
            evtq_log2: 6,
            pasids: None,
            pasid_bits: 8,
            pasid_state: PasidState::default(),
            vms: Vec::new(),
            coherent: true,
            cpu_hook: None,
            watchers: vec!["iommu-server".to_string(), "prq-server".to_string()],
            log: Log::default(),
        }
    }

    /// The death watchers the supervisor posts (app.toml: its `posts`;
    /// iommu-server and prq-server unless set). A test that shows
    /// prq-server's own reaction to a death leaves iommu-server out: its
    /// reclaim drains the dead VM's stream and would answer the groups too.
    pub fn death_watchers(mut self, names: &[&str]) -> Self {
        self.watchers = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Runs `f` on the machine's CPU cache before the run (a test hook:
    /// `CpuCache::drop_invalidates`, ...).
    pub fn with_cpu(mut self, f: fn(&CpuCache)) -> Self {
        self.cpu_hook = Some(f);
        self
    }

    /// A non-coherent machine (`false`): prq-server reads its queues
    /// through the CPU model's cache, which the SMMU does not update, and
    /// iommu-server cleans its tables (see `Bus::with_coherency`).
    pub fn coherent(mut self, on: bool) -> Self {
        self.coherent = on;
        self.cfg = self.cfg.cohacc(on);
        self
    }

    /// prq-server's PRI queue size (log2 entries).
    pub fn priq_log2(mut self, l: u32) -> Self {
        self.priq_log2 = l;
        self
    }

    /// prq-server's event queue size (log2 entries).
    pub fn evtq_log2(mut self, l: u32) -> Self {
        self.evtq_log2 = l;
        self
    }

    /// Adds the pasid-alloc stand-in, handing out `sequence` in order.
    pub fn pasid_alloc(mut self, sequence: &[u32]) -> Self {
        self.pasids = Some(sequence.to_vec());
        self
    }

    /// pasid-alloc's space: PASIDs `1 .. 2^bits` (8 unless set).
    pub fn pasid_space_bits(mut self, bits: u8) -> Self {
        self.pasid_bits = bits;
        self
    }

    /// pasid-alloc's state dumps, published after each message it handled.
    pub fn pasid_state(&self) -> PasidState {
        self.pasid_state.enable();
        self.pasid_state.clone()
    }

    /// A VM task owning `sids`.
    pub fn vm(
        mut self,
        name: &str,
        sids: &[u32],
        entry: impl Fn(PrqVm) + Send + Sync + 'static,
    ) -> Self {
        self.vms.push(VmDef {
            name: name.to_string(),
            sids: sids.to_vec(),
            caps: CAP_SHUTDOWN,
            entry: Arc::new(entry),
        });
        self
    }

    /// Task-control capability for the last VM (it restarts prq-server).
    pub fn task_control(mut self) -> Self {
        if let Some(v) = self.vms.last_mut() {
            v.caps |= CAP_TASK_CONTROL;
        }
        self
    }

    /// Task index of prq-server.
    pub const PRQ_INDEX: usize = 1;

    /// Runs the machine with `seed`.
    pub fn run(self, seed: u64) -> PrqRun {
        let (h, bus, log) = self.parts(seed);
        PrqRun {
            report: h.run(),
            bus,
            log,
        }
    }

    /// Runs the machine with `seed`, after `f` adds to it (a choice
    /// sequence, floating actions: `harness::explore`).
    pub fn run_with(self, seed: u64, f: impl FnOnce(Harness) -> Harness) -> PrqRun {
        let (h, bus, log) = self.parts(seed);
        PrqRun {
            report: f(h).run(),
            bus,
            log,
        }
    }

    /// The machine, not run (for `cargo xtask trace`).
    pub fn harness(self, seed: u64) -> Harness {
        self.parts(seed).0
    }

    fn parts(self, seed: u64) -> (Harness, Bus, Log) {
        let bus = Bus::with_coherency(
            self.cfg.clone(),
            self.vms.iter().flat_map(|v| v.sids.clone()).collect(),
            self.coherent,
        );
        if let Some(f) = self.cpu_hook {
            f(&bus.cpu);
        }
        let log = self.log.clone();
        let mut names = vec!["supervisor".to_string(), "prq-server".to_string()];
        if self.pasids.is_some() {
            names.push("pasid-alloc".to_string());
        }
        names.push("iommu-server".to_string());
        let first_vm = names.len();
        let mut streams = Vec::new();
        for (k, v) in self.vms.iter().enumerate() {
            names.push(v.name.clone());
            streams.extend(v.sids.iter().map(|&s| (s, (first_vm + k) as u16)));
            for &s in &v.sids {
                log.lock().owners.insert(s, v.name.clone());
            }
        }
        bus.mem
            .add_region(TABLES_PA, TABLES_SIZE)
            .unwrap_or_else(|e| panic!("PrqRig: tables: {e}"));
        bus.mem
            .add_region(PRQ_PA, REGION_SIZE)
            .unwrap_or_else(|e| panic!("PrqRig: prq-queues: {e}"));
        for k in 0..self.vms.len() {
            bus.mem
                .add_region(ram_pa(k), RAM_SIZE)
                .unwrap_or_else(|e| panic!("PrqRig: RAM: {e}"));
        }

        // The supervisor posts its death watchers when a task died (death
        // log): iommu-server and prq-server, as in app.toml, unless the
        // rig names others (`death_watchers`).
        let watchers: Vec<&str> = self.watchers.iter().map(String::as_str).collect();
        let mut h = Harness::new(seed)
            .max_steps(200_000)
            .supervisor_posts(&watchers);
        let post_names: Vec<&str> = names[first_vm - 1..].iter().map(String::as_str).collect();
        // prq-server.
        {
            let (smmu, mem, log2, elog2, streams, names) = (
                bus.smmu.clone(),
                bus.cpu.clone(),
                self.priq_log2,
                self.evtq_log2,
                streams.clone(),
                names.clone(),
            );
            let rlog = log.clone();
            let entry = move || {
                let q = sys_region_info("prq-queues").unwrap_or_else(|| panic!("no prq-queues"));
                let mmio = Page1Mmio {
                    smmu: smmu.clone(),
                    log: rlog.clone(),
                };
                let qm = ModelQueues {
                    mem: mem.clone(),
                    pa: q.pa as u64,
                    size: q.size,
                };
                let cfg = Config {
                    streams: &streams,
                    evtq_log2: elog2,
                    priq_log2: log2,
                };
                let mut prq = Box::new(Prq::new(mmio, qm, &cfg));
                userlib::log!(
                    "prq-server: incarnation {}, {} groups recovered",
                    prq.incarnation,
                    prq.stats.recovered
                );
                serve_prq(&mut prq, &names, &streams)
            };
            h = h
                .task(prq_server_task(entry, &post_names))
                .decoder("prq-server", PrqDecoder);
        }
        let mut vm_slots = vec!["iommu-server".to_string(), "prq-server".to_string()];
        if let Some(seq) = self.pasids.clone() {
            // The real pasid-alloc task, as in `IommuRig`.
            let setup = PasidSetup {
                bits: self.pasid_bits,
                quota: DEFAULT_PASID_QUOTA,
                first: seq,
                streams: streams.clone(),
                task_names: names.clone(),
                state: self.pasid_state.clone(),
            };
            h = with_pasid_alloc(h, setup);
            vm_slots.push("pasid-alloc".to_string());
        }
        let setup = ServerSetup {
            bus: bus.clone(),
            streams: streams.clone(),
            task_names: names.clone(),
            max_pasid_bits: 8,
            event_queue: false,
            fault_path: true,
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
            .irq(INTID_GERROR, GERROR_BIT)
            .slots(&["prq-server", "supervisor"]);
        if self.pasids.is_some() {
            server = server.slots(&["pasid-alloc"]);
        }
        h = h.task(server).decoder("iommu-server", IommuDecoder);

        for (k, v) in self.vms.into_iter().enumerate() {
            let (b, l, name, entry) = (bus.clone(), log.clone(), v.name.clone(), v.entry.clone());
            let has_pasids = self.pasids.is_some();
            let run = move || {
                let vm = PrqVm {
                    name: name.clone(),
                    iommu: IommuClient::new(
                        sys_lookup_slot("iommu-server").unwrap_or_else(|| panic!("slot")),
                    ),
                    prq: PrqClient::new(
                        sys_lookup_slot("prq-server").unwrap_or_else(|| panic!("slot")),
                    ),
                    pasids: if has_pasids {
                        sys_lookup_slot("pasid-alloc").map(PasidAllocClient::new)
                    } else {
                        None
                    },
                    ram: ram_pa(k),
                    bus: b.clone(),
                    log: l.clone(),
                    dev: Device::new(b.smmu.clone()),
                };
                entry(vm)
            };
            let slots: Vec<&str> = vm_slots.iter().map(String::as_str).collect();
            h = h.task(
                TaskSpec::new(&v.name, 3 + k as u8, run)
                    .slots(&slots)
                    .caps(v.caps)
                    .model_region(
                        "guest-ram",
                        ram_pa(k),
                        RAM_SIZE,
                        abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DMA,
                    ),
            );
        }
        let (tick_bus, note_bus) = (bus.clone(), bus.clone());
        let h = h
            .irq_source(move |_, _| tick_bus_irqs(&tick_bus))
            .note_source(move || note_bus_notes(&note_bus));
        (h, bus, log)
    }
}

fn tick_bus_irqs(bus: &Bus) -> Vec<u32> {
    bus.tick()
}

fn note_bus_notes(bus: &Bus) -> Vec<String> {
    bus.notes()
}

/// Trace decoder for prq-server's interface.
pub struct PrqDecoder;

impl crate::Decoder for PrqDecoder {
    fn interface(&self) -> &str {
        "Prq"
    }

    fn operation(&self, op: u16) -> Option<String> {
        papi::PrqOp::from_u32(op as u32).map(|o| o.name().to_string())
    }

    fn request(&self, op: u16, bytes: &[u8]) -> Option<String> {
        self.request_leased(op, bytes, &[])
    }

    fn request_leased(&self, op: u16, bytes: &[u8], leases: &[LeaseSummary]) -> Option<String> {
        match papi::dispatch_decode(op as u32, bytes, usize::MAX, &lease_infos(leases)) {
            Ok(req) => Some(compact(&args_of(&format!("{req:?}")))),
            Err(reject) => Some(format!("malformed: {}", reject.what)),
        }
    }

    fn reply(&self, op: u16, code: u32, bytes: &[u8]) -> Option<String> {
        type E = papi::PrqError;
        Some(match papi::PrqOp::from_u32(op as u32)? {
            papi::PrqOp::FetchFaults | papi::PrqOp::FetchEvents => {
                fixed_reply::<papi::FetchOutcome, E>(code, bytes)
            }
            papi::PrqOp::Respond => fixed_reply::<papi::RespondOutcome, E>(code, bytes),
            papi::PrqOp::SetRoute | papi::PrqOp::EventRecordsLost => {
                fixed_reply::<(), E>(code, bytes)
            }
            papi::PrqOp::Drain => fixed_reply::<papi::DrainOutcome, E>(code, bytes),
            papi::PrqOp::TakeResponses => fixed_reply::<papi::TakeOutcome, E>(code, bytes),
            papi::PrqOp::OwnerDied => fixed_reply::<u32, E>(code, bytes),
            papi::PrqOp::QueueLayout => fixed_reply::<papi::QueueLayout, E>(code, bytes),
            papi::PrqOp::Stats => fixed_reply::<papi::PrqStats, E>(code, bytes),
        })
    }
}

/// Task index of a VM in a rig (for tests that name tasks).
pub fn task(index: usize) -> TaskId {
    TaskId::new(index, userlib::Generation(0))
}

/// prq-server's task in a rig: its queue region at [`PRQ_PA`], its two
/// interrupts, posting `posts` (iommu-server and the VMs), calling the
/// supervisor (its death log, `next_death`).
pub(crate) fn prq_server_task(
    entry: impl Fn() + Send + Sync + 'static,
    posts: &[&str],
) -> TaskSpec {
    TaskSpec::new("prq-server", PRQ_PRIORITY, entry)
        .model_region(
            "prq-queues",
            PRQ_PA,
            REGION_SIZE,
            abi::REGION_READ | abi::REGION_WRITE | abi::REGION_DMA,
        )
        .posts(posts)
        .slots(&["supervisor"])
        .irq(INTID_PRIQ, prq_server::PRIQ_BIT)
        .irq(INTID_EVENTQ, prq_server::EVTQ_BIT)
}

/// Serves `prq` with the image's notification bits and the rig's names
/// and streams (the real prq-server loop).
pub(crate) fn serve_prq<M: Mmio, Q: QueueMemory>(
    prq: &mut Prq<M, Q>,
    names: &[String],
    streams: &[(u32, u16)],
) -> ! {
    let n: Vec<&str> = names.iter().map(String::as_str).collect();
    prq_server::serve(
        prq,
        Roles {
            task_names: &n,
            streams,
            priq_bit: prq_server::PRIQ_BIT,
            evtq_bit: prq_server::EVTQ_BIT,
            owner_bit: prq_server::OWNER_BIT,
            iommu_bit: prq_server::IOMMU_BIT,
            death_bit: prq_server::DEATH_BIT,
        },
    )
}

/// The raw Resp codes the device received for group `g`: the responses
/// commanded through the queue, then the SMMU's automatic ones.
pub(crate) fn device_responses(smmu: &Smmu, g: PriGroup) -> Vec<u64> {
    let mut v: Vec<u64> = smmu.pri_responses(g).iter().map(|r| r.raw()).collect();
    v.extend(
        smmu.auto_pri_responses()
            .iter()
            .filter(|a| a.group == g)
            .map(|a| a.resp.raw()),
    );
    v
}
