//! The modelled SMMU: register file and the `Mmio` implementation.
//!
//! All state lives behind one mutex, so the model is `Send + Sync` and every
//! register access, command batch, DMA and page request is atomic with
//! respect to the others, which is how the synchronous IPC harness drives
//! it. Commands run synchronously when CMDQ_PROD is written (as on QEMU),
//! or, with `cmdq_throttle`, a few at a time in [`Smmu::step`].

use crate::config::SmmuConfig;
use crate::log::DeviceResponse;
use crate::log::{AutoPriResponse, LoggedCommand, PriGroup};
use crate::mem::PhysMem;
use crate::tlb::Tlb;
use crate::tlb::WalkCache;
use crate::xlate::StalledTxn;
use smmuv3::regs::IRQ_CFG0;
use smmuv3::regs::{
    self, offset, queue_base_addr, queue_base_log2size, strtab_base_addr, CR0, EVENTQ_CONS,
    EVENTQ_PROD, GBPA, GERROR, IRQ_CTRL, PRIQ_CONS,
};
use smmuv3::{Cd, CommandKind, Event, L1CdDesc, L1StreamDesc, Mmio, QueuePtr, Ste};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Interrupt lines as edge-triggered pending flags: set by the model,
/// cleared when taken with [`Smmu::take_irqs`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqLines {
    /// The event queue received entries (IRQ_CTRL.EVENTQ_IRQEN).
    pub eventq: bool,
    /// The PRI queue received entries (IRQ_CTRL.PRIQ_IRQEN).
    pub priq: bool,
    /// A CMD_SYNC with CS = IRQ completed (no MSI configured).
    pub cmd_sync: bool,
    /// A GERROR bit became active (IRQ_CTRL.GERROR_IRQEN).
    pub gerror: bool,
}

impl IrqLines {
    /// True if any line is pending.
    pub fn any(&self) -> bool {
        self.eventq || self.priq || self.cmd_sync || self.gerror
    }
}

/// A register access the model refused or that hardware would not accept:
/// the access had no effect (reads return 0). Tests assert there are none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessError {
    pub offset: usize,
    /// 4 or 8.
    pub width: u8,
    pub write: bool,
    pub kind: AccessErrorKind,
}

/// Why a register access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessErrorKind {
    /// No register at this offset (or a page-0 alias of a page-1 register).
    UnknownRegister,
    /// A 64-bit access to a 32-bit register, or a misaligned access.
    WrongWidth,
    /// A write to a read-only register (IDR*, CR0ACK, GERROR, ...).
    ReadOnly,
    /// A write the architecture only allows while the relevant enable is
    /// clear (e.g. STRTAB_BASE with SMMUEN = 1, CMDQ_BASE with CMDQEN = 1).
    WhileEnabled,
    /// A write while the register's previous update is still in progress
    /// (GBPA with UPDATE = 1): ignored.
    Busy,
}

/// Base and pointers of one queue, as the registers hold them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Queue {
    pub base: u64,
    pub prod: u32,
    pub cons: u32,
}

impl Queue {
    /// Effective LOG2SIZE: the register value capped at the IDR1 maximum.
    pub fn log2size(&self, max: u32) -> u32 {
        queue_base_log2size(self.base).min(max)
    }
    pub fn addr(&self) -> u64 {
        queue_base_addr(self.base)
    }
    pub fn prod_ptr(&self, max: u32) -> QueuePtr {
        QueuePtr::from_raw(self.log2size(max), self.prod)
    }
    pub fn cons_ptr(&self, max: u32) -> QueuePtr {
        QueuePtr::from_raw(self.log2size(max), self.cons)
    }
}

/// MSI configuration of one interrupt source.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IrqCfg {
    pub cfg0: u64,
    pub cfg1: u32,
    pub cfg2: u32,
}

/// Everything mutable.
pub(crate) struct State {
    pub mem: PhysMem,
    pub cfg: SmmuConfig,

    pub cr0: u32,
    pub cr1: u32,
    pub cr2: u32,
    pub gbpa: u32,
    pub irq_ctrl: u32,
    pub gerror: u32,
    pub gerrorn: u32,
    pub gerror_irq: IrqCfg,
    pub eventq_irq: IrqCfg,
    pub priq_irq: IrqCfg,
    pub strtab_base: u64,
    pub strtab_base_cfg: u32,
    pub cmdq: Queue,
    pub eventq: Queue,
    pub priq: Queue,

    /// Configuration cache: STEs by StreamID (valid ones only, unless
    /// eager caching is on: then whatever was fetched).
    pub ste_cache: BTreeMap<u32, Ste>,
    /// Configuration cache: CDs by (StreamID, SubstreamID).
    pub cd_cache: BTreeMap<(u32, u32), Cd>,
    /// (Ordered maps: the model's seeded choices among entries must not
    /// depend on hash order, so a seed reproduces a run.)
    /// Eager caching: L1STDs by level 1 index.
    pub l1std_cache: BTreeMap<u64, L1StreamDesc>,
    /// Eager caching: L1CDs by (StreamID, level 1 index).
    pub l1cd_cache: BTreeMap<(u32, u64), L1CdDesc>,
    /// StreamIDs and (StreamID, SubstreamID) pairs transactions or page
    /// requests have used: what speculative fetches aim at (beside random
    /// entries).
    pub seen_sids: BTreeSet<u32>,
    pub seen_ssids: BTreeSet<(u32, u32)>,
    pub tlb: Tlb,
    /// Walk caches (table descriptors of both stages), when enabled.
    pub walk: WalkCache,
    /// CFGI/TLBI consumed but not yet completed by a CMD_SYNC.
    pub deferred: Vec<CommandKind>,

    /// Stalled transactions by (StreamID, STAG).
    pub stalls: BTreeMap<(u32, u16), StalledTxn>,
    pub stall_outcomes: HashMap<(u32, u16), crate::device::StallOutcome>,
    pub next_stag: u16,

    /// Page request groups whose Last request reached the PRI queue and
    /// that have not been answered yet (value: how many such Lasts).
    pub pri_pending: BTreeMap<PriGroup, u32>,
    pub auto_pri: Vec<AutoPriResponse>,

    pub log: Vec<LoggedCommand>,
    pub next_seq: u64,
    pub irqs: IrqLines,
    pub msi_writes: Vec<(u64, u32)>,
    pub access_errors: Vec<AccessError>,
    pub sev_count: u64,
    pub events_recorded: u64,
    pub events_lost: u64,
    pub pri_lost: u64,

    /// Every PRG response a device received (commanded or automatic).
    pub device_responses: Vec<DeviceResponse>,
    /// Stall fault records waiting for the event queue to become writable
    /// (stall records are never discarded, §7.2).
    pub pending_stall_records: VecDeque<Event>,
    /// Event-queue record writes still to abort (a test's stand-in for the
    /// interconnect reporting an external abort, IHI 0070 §7.2.2).
    pub eventq_write_aborts: u32,

    /// The model's random state (strict modes).
    pub rng: u64,
    /// GBPA update in progress: reads or steps left, and the value it
    /// installs.
    pub gbpa_update: Option<(u32, u32)>,
    /// GBPA writes ignored because UPDATE was still 1.
    pub gbpa_writes_ignored: u64,
    /// Throttled command queue: the CMD_SYNC at this CONS waits this many
    /// more steps.
    pub sync_wait: Option<(u32, u32)>,
    /// Steps taken ([`Smmu::step`]).
    pub steps: u64,
}

/// GBPA's reset value: bypass, shareability "use incoming".
const GBPA_RESET: u32 = 0x1000;

impl State {
    fn new(mem: PhysMem, cfg: SmmuConfig) -> Self {
        let mut st = Self {
            tlb: Tlb::new(cfg.tlb_capacity),
            walk: WalkCache::new(cfg.tlb_capacity),
            l1std_cache: BTreeMap::new(),
            l1cd_cache: BTreeMap::new(),
            seen_sids: BTreeSet::new(),
            seen_ssids: BTreeSet::new(),
            device_responses: Vec::new(),
            pending_stall_records: VecDeque::new(),
            eventq_write_aborts: 0,
            // splitmix64 state; never 0 so different seeds stay apart.
            rng: cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
            gbpa_update: None,
            gbpa_writes_ignored: 0,
            sync_wait: None,
            steps: 0,
            mem,
            cfg,
            cr0: 0,
            cr1: 0,
            cr2: 0,
            gbpa: GBPA_RESET,
            irq_ctrl: 0,
            gerror: 0,
            gerrorn: 0,
            gerror_irq: IrqCfg::default(),
            eventq_irq: IrqCfg::default(),
            priq_irq: IrqCfg::default(),
            strtab_base: 0,
            strtab_base_cfg: 0,
            cmdq: Queue::default(),
            eventq: Queue::default(),
            priq: Queue::default(),
            ste_cache: BTreeMap::new(),
            cd_cache: BTreeMap::new(),
            deferred: Vec::new(),
            stalls: BTreeMap::new(),
            stall_outcomes: HashMap::new(),
            next_stag: 0,
            pri_pending: BTreeMap::new(),
            auto_pri: Vec::new(),
            log: Vec::new(),
            next_seq: 0,
            irqs: IrqLines::default(),
            msi_writes: Vec::new(),
            access_errors: Vec::new(),
            sev_count: 0,
            events_recorded: 0,
            events_lost: 0,
            pri_lost: 0,
        };
        st.draw_unknown_reset();
        st
    }

    /// §6.3: with `unknown_reset`, the MSI configuration registers reset to
    /// UNKNOWN values, drawn from the seed.
    fn draw_unknown_reset(&mut self) {
        if !self.cfg.unknown_reset {
            return;
        }
        for i in 0..3 {
            let cfg = IrqCfg {
                cfg0: self.rand() & (IRQ_CFG0::ADDR.mask << IRQ_CFG0::ADDR.shift),
                cfg1: self.rand() as u32,
                cfg2: self.rand() as u32 & 0xff,
            };
            match i {
                0 => self.gerror_irq = cfg,
                1 => self.eventq_irq = cfg,
                _ => self.priq_irq = cfg,
            }
        }
    }

    /// The next seeded random number (splitmix64).
    pub fn rand(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A seeded number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rand() % n
        }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One step of the SMMU's own progress (between task steps in the
    /// harness): a pending GBPA update advances, a throttled command queue
    /// consumes a few commands, eager caching prefetches and evicts, and
    /// held stall records are written if the event queue has room.
    pub fn step(&mut self) {
        self.steps += 1;
        self.advance_gbpa();
        if let Some(t) = self.cfg.cmdq_throttle {
            let n = 1 + self.below(t.max_per_step as u64) as u32;
            self.consume_cmdq(Some(n));
        }
        if self.cfg.eager_config_cache {
            self.speculate();
        }
        self.flush_stall_records();
    }

    fn advance_gbpa(&mut self) {
        if let Some((left, v)) = self.gbpa_update {
            if left <= 1 {
                self.gbpa = v;
                self.gbpa_update = None;
            } else {
                self.gbpa_update = Some((left - 1, v));
            }
        }
    }

    pub fn cr0_has(&self, f: tock_registers::fields::Field<u32, CR0::Register>) -> bool {
        f.read(self.cr0) != 0
    }

    /// True while GERROR.bit != GERRORN.bit.
    pub fn gerror_active(&self, f: tock_registers::fields::Field<u32, GERROR::Register>) -> bool {
        f.read(self.gerror) != f.read(self.gerrorn)
    }

    fn access_error(&mut self, offset: usize, width: u8, write: bool, kind: AccessErrorKind) {
        self.access_errors.push(AccessError {
            offset,
            width,
            write,
            kind,
        });
    }

    /// The value of a 64-bit register, if `off` names one.
    fn reg64(&self, off: usize) -> Option<u64> {
        Some(match off {
            offset::GERROR_IRQ_CFG0 => self.gerror_irq.cfg0,
            offset::STRTAB_BASE => self.strtab_base,
            offset::CMDQ_BASE => self.cmdq.base,
            offset::EVENTQ_BASE => self.eventq.base,
            offset::EVENTQ_IRQ_CFG0 => self.eventq_irq.cfg0,
            offset::PRIQ_BASE => self.priq.base,
            offset::PRIQ_IRQ_CFG0 => self.priq_irq.cfg0,
            _ => return None,
        })
    }

    fn read32(&mut self, off: usize) -> u32 {
        if !off.is_multiple_of(4) {
            self.access_error(off, 4, false, AccessErrorKind::WrongWidth);
            return 0;
        }
        // Halves of the 64-bit registers.
        if let Some(v) = self.reg64(off) {
            return v as u32;
        }
        if let Some(v) = off.checked_sub(4).and_then(|o| self.reg64(o)) {
            return (v >> 32) as u32;
        }
        let c = &self.cfg;
        match off {
            offset::IDR0 => c.idr0(),
            offset::IDR1 => c.idr1(),
            offset::IDR2 | offset::IDR4 => 0,
            offset::IDR3 => c.idr3(),
            offset::IDR5 => c.idr5(),
            offset::IIDR => 0,
            // SMMUv3.1.
            offset::AIDR => {
                (regs::AIDR::ARCHMAJORREV.val(0) + regs::AIDR::ARCHMINORREV.val(1)).value
            }
            offset::CR0 | offset::CR0ACK => self.cr0,
            offset::CR1 => self.cr1,
            offset::CR2 => self.cr2,
            offset::STATUSR => 0,
            offset::GBPA => match self.gbpa_update {
                Some(_) => {
                    // Still updating: the old value with UPDATE = 1; each
                    // read (a poll) brings completion closer.
                    let v = self.gbpa | GBPA::UPDATE::SET.value;
                    self.advance_gbpa();
                    v
                }
                None => self.gbpa,
            },
            offset::AGBPA => 0,
            offset::IRQ_CTRL | offset::IRQ_CTRLACK => self.irq_ctrl,
            offset::GERROR => self.gerror,
            offset::GERRORN => self.gerrorn,
            offset::GERROR_IRQ_CFG1 => self.gerror_irq.cfg1,
            offset::GERROR_IRQ_CFG2 => self.gerror_irq.cfg2,
            offset::STRTAB_BASE_CFG => self.strtab_base_cfg,
            offset::CMDQ_PROD => self.cmdq.prod,
            offset::CMDQ_CONS => self.cmdq.cons,
            offset::EVENTQ_PROD => self.eventq.prod,
            offset::EVENTQ_CONS => self.eventq.cons,
            offset::EVENTQ_IRQ_CFG1 => self.eventq_irq.cfg1,
            offset::EVENTQ_IRQ_CFG2 => self.eventq_irq.cfg2,
            offset::PRIQ_PROD => self.priq.prod,
            offset::PRIQ_CONS => self.priq.cons,
            offset::PRIQ_IRQ_CFG1 => self.priq_irq.cfg1,
            offset::PRIQ_IRQ_CFG2 => self.priq_irq.cfg2,
            _ => {
                self.access_error(off, 4, false, AccessErrorKind::UnknownRegister);
                0
            }
        }
    }

    /// Writes a 64-bit register (whole or one half, `mask` selecting which
    /// bits change).
    fn write64_masked(&mut self, off: usize, value: u64, mask: u64, width: u8) {
        let smmuen = self.cr0_has(CR0::SMMUEN);
        let merge = |old: u64| (old & !mask) | (value & mask);
        let refused = match off {
            offset::GERROR_IRQ_CFG0 => {
                self.gerror_irq.cfg0 = merge(self.gerror_irq.cfg0);
                false
            }
            offset::EVENTQ_IRQ_CFG0 => {
                self.eventq_irq.cfg0 = merge(self.eventq_irq.cfg0);
                false
            }
            offset::PRIQ_IRQ_CFG0 => {
                self.priq_irq.cfg0 = merge(self.priq_irq.cfg0);
                false
            }
            // Table and queue bases may only change while the table/queue
            // is not in use.
            offset::STRTAB_BASE if !smmuen => {
                self.strtab_base = merge(self.strtab_base);
                false
            }
            offset::CMDQ_BASE if !self.cr0_has(CR0::CMDQEN) => {
                self.cmdq.base = merge(self.cmdq.base);
                false
            }
            offset::EVENTQ_BASE if !self.cr0_has(CR0::EVTQEN) => {
                self.eventq.base = merge(self.eventq.base);
                false
            }
            offset::PRIQ_BASE if !self.cr0_has(CR0::PRIQEN) => {
                self.priq.base = merge(self.priq.base);
                false
            }
            _ => true,
        };
        if refused {
            self.access_error(off, width, true, AccessErrorKind::WhileEnabled);
        }
    }

    fn write32(&mut self, off: usize, v: u32) {
        if !off.is_multiple_of(4) {
            self.access_error(off, 4, true, AccessErrorKind::WrongWidth);
            return;
        }
        if self.reg64(off).is_some() {
            return self.write64_masked(off, v as u64, 0xffff_ffff, 4);
        }
        if let Some(lo) = off.checked_sub(4).filter(|o| self.reg64(*o).is_some()) {
            return self.write64_masked(lo, (v as u64) << 32, 0xffff_ffff << 32, 4);
        }
        match off {
            offset::CR0 => {
                let defined = CR0::SMMUEN::SET.value
                    | CR0::PRIQEN::SET.value
                    | CR0::EVTQEN::SET.value
                    | CR0::CMDQEN::SET.value
                    | CR0::ATSCHK::SET.value;
                let mut v = v & defined;
                if !self.cfg.pri {
                    v &= !CR0::PRIQEN::SET.value;
                }
                self.cr0 = v;
                // Enabling the command queue consumes what is pending.
                self.process_cmdq();
            }
            offset::CR1 => self.cr1 = v,
            offset::CR2 => self.cr2 = v,
            offset::GBPA => {
                if self.gbpa_update.is_some() {
                    // A write while UPDATE = 1 is ignored (SMMUv3.2+; on
                    // v3.1 it is CONSTRAINED UNPREDICTABLE).
                    self.gbpa_writes_ignored += 1;
                    self.access_error(off, 4, true, AccessErrorKind::Busy);
                } else if GBPA::UPDATE.read(v) != 0 {
                    // Takes effect only with UPDATE; UPDATE then reads 0 at
                    // once, or after a few reads/steps (unknown_reset).
                    let v = v & !GBPA::UPDATE::SET.value;
                    if self.cfg.unknown_reset {
                        let left = 1 + self.below(4) as u32;
                        self.gbpa_update = Some((left, v));
                    } else {
                        self.gbpa = v;
                    }
                }
            }
            offset::IRQ_CTRL => {
                self.irq_ctrl = v
                    & (IRQ_CTRL::GERROR_IRQEN::SET.value
                        | IRQ_CTRL::PRIQ_IRQEN::SET.value
                        | IRQ_CTRL::EVENTQ_IRQEN::SET.value)
            }
            offset::GERRORN => {
                let was_stopped = self.gerror_active(GERROR::CMDQ_ERR);
                self.gerrorn = v;
                // Acknowledging CMDQ_ERR restarts consumption at CMDQ_CONS
                // (software has replaced or skipped the bad command).
                if was_stopped && !self.gerror_active(GERROR::CMDQ_ERR) {
                    self.process_cmdq();
                }
            }
            offset::GERROR_IRQ_CFG1 => self.gerror_irq.cfg1 = v,
            offset::GERROR_IRQ_CFG2 => self.gerror_irq.cfg2 = v,
            offset::EVENTQ_IRQ_CFG1 => self.eventq_irq.cfg1 = v,
            offset::EVENTQ_IRQ_CFG2 => self.eventq_irq.cfg2 = v,
            offset::PRIQ_IRQ_CFG1 => self.priq_irq.cfg1 = v,
            offset::PRIQ_IRQ_CFG2 => self.priq_irq.cfg2 = v,
            offset::STRTAB_BASE_CFG => {
                if self.cr0_has(CR0::SMMUEN) {
                    self.access_error(off, 4, true, AccessErrorKind::WhileEnabled);
                } else {
                    self.strtab_base_cfg = v;
                }
            }
            offset::CMDQ_PROD => {
                self.cmdq.prod = v & regs::CMDQ_PROD::WR.mask;
                self.process_cmdq();
            }
            offset::CMDQ_CONS => {
                // Software may only move CONS while the queue is disabled.
                if self.cr0_has(CR0::CMDQEN) {
                    self.access_error(off, 4, true, AccessErrorKind::WhileEnabled);
                } else {
                    let err =
                        self.cmdq.cons & (regs::CMDQ_CONS::ERR.mask << regs::CMDQ_CONS::ERR.shift);
                    self.cmdq.cons = (v & regs::CMDQ_CONS::RD.mask) | err;
                }
            }
            offset::EVENTQ_PROD | offset::PRIQ_PROD => {
                // PROD belongs to the SMMU while the queue is enabled.
                let (enabled, q) = if off == offset::EVENTQ_PROD {
                    (self.cr0_has(CR0::EVTQEN), &mut self.eventq)
                } else {
                    (self.cr0_has(CR0::PRIQEN), &mut self.priq)
                };
                if enabled {
                    self.access_error(off, 4, true, AccessErrorKind::WhileEnabled);
                } else {
                    q.prod = v & (EVENTQ_PROD::WR.mask | EVENTQ_PROD::OVFLG::SET.value);
                }
            }
            // CONS is stored as written (index, wrap, OVACKFLG); the
            // current LOG2SIZE is applied when the queue is used.
            offset::EVENTQ_CONS => {
                self.eventq.cons = v & (EVENTQ_CONS::RD.mask | EVENTQ_CONS::OVACKFLG::SET.value);
                // Room for held stall records?
                self.flush_stall_records();
            }
            offset::PRIQ_CONS => {
                self.priq.cons = v & (PRIQ_CONS::RD.mask | PRIQ_CONS::OVACKFLG::SET.value)
            }
            offset::IDR0
            | offset::IDR1
            | offset::IDR2
            | offset::IDR3
            | offset::IDR4
            | offset::IDR5
            | offset::IIDR
            | offset::AIDR
            | offset::CR0ACK
            | offset::STATUSR
            | offset::IRQ_CTRLACK
            | offset::GERROR => self.access_error(off, 4, true, AccessErrorKind::ReadOnly),
            offset::AGBPA => {}
            _ => self.access_error(off, 4, true, AccessErrorKind::UnknownRegister),
        }
    }

    /// The configured stream table base address.
    pub fn strtab_addr(&self) -> u64 {
        strtab_base_addr(self.strtab_base)
    }
}

/// A modelled SMMUv3 attached to a [`PhysMem`].
pub struct Smmu {
    st: Mutex<State>,
    mem: PhysMem,
    cfg: SmmuConfig,
}

impl std::fmt::Debug for Smmu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smmu")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Smmu {
    /// A freshly reset SMMU: everything disabled, GBPA = bypass, caches
    /// empty.
    pub fn new(mem: PhysMem, cfg: SmmuConfig) -> Self {
        Self {
            st: Mutex::new(State::new(mem.clone(), cfg.clone())),
            mem,
            cfg,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the others.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The memory the SMMU reads and writes.
    pub fn mem(&self) -> &PhysMem {
        &self.mem
    }

    /// The configuration.
    pub fn config(&self) -> &SmmuConfig {
        &self.cfg
    }

    /// Returns and clears the pending interrupt lines.
    pub fn take_irqs(&self) -> IrqLines {
        std::mem::take(&mut self.lock().irqs)
    }

    /// The pending interrupt lines, without clearing them.
    pub fn peek_irqs(&self) -> IrqLines {
        self.lock().irqs
    }

    /// Register accesses refused so far (should be empty for a correct
    /// driver).
    pub fn access_errors(&self) -> Vec<AccessError> {
        self.lock().access_errors.clone()
    }

    /// MSI writes performed (address, data), in order.
    pub fn msi_writes(&self) -> Vec<(u64, u32)> {
        self.lock().msi_writes.clone()
    }

    /// CMD_SYNC CS=SEV completions.
    pub fn sev_count(&self) -> u64 {
        self.lock().sev_count
    }

    /// Events written to the event queue so far.
    pub fn events_recorded(&self) -> u64 {
        self.lock().events_recorded
    }

    /// Events dropped because the event queue was full, disabled or its
    /// memory unbacked.
    pub fn events_lost(&self) -> u64 {
        self.lock().events_lost
    }

    /// True if the configuration cache holds an STE for `sid`.
    pub fn ste_cached(&self, sid: u32) -> bool {
        self.lock().ste_cache.contains_key(&sid)
    }

    /// True if the configuration cache holds a CD for (`sid`, `ssid`).
    pub fn cd_cached(&self, sid: u32, ssid: u32) -> bool {
        self.lock().cd_cache.contains_key(&(sid, ssid))
    }

    /// Number of IOTLB entries.
    pub fn tlb_len(&self) -> usize {
        self.lock().tlb.len()
    }

    /// Invalidations consumed but waiting for a CMD_SYNC.
    pub fn deferred_invalidations(&self) -> usize {
        self.lock().deferred.len()
    }

    /// One step of the SMMU's own progress, for a harness to call between
    /// task steps: a throttled command queue consumes a few commands
    /// (`cmdq_throttle`), a GBPA update advances (`unknown_reset`), eager
    /// caching prefetches and evicts (`eager_config_cache`), and held stall
    /// records go to the event queue if it has room. Without strict modes
    /// it only does the last.
    pub fn step(&self) {
        self.lock().step()
    }

    /// Re-seeds the strict modes (and re-draws the UNKNOWN reset values),
    /// for a harness that learns its seed after building the SMMU. Call it
    /// before the driver touches the SMMU.
    pub fn reseed(&self, seed: u64) {
        let mut st = self.lock();
        st.cfg.seed = seed;
        st.rng = seed ^ 0x9e37_79b9_7f4a_7c15;
        st.draw_unknown_reset();
    }

    /// StreamIDs the system has devices on (a harness knows its stream
    /// map): eager caching aims its speculative fetches at them (and at
    /// streams transactions used) from the start.
    pub fn note_streams(&self, sids: &[u32]) {
        self.lock().seen_sids.extend(sids.iter().copied());
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.lock().steps
    }

    /// Tells the model that the driver's 64-bit store at `pa` (to its table
    /// memory) just completed. With `eager_config_cache` the SMMU may
    /// re-fetch the STE or CD holding `pa` now, caching it half-written if
    /// the update is not complete: a harness that also issues DMA here
    /// checks "break-before-make" at every store.
    pub fn store_boundary(&self, pa: u64) {
        self.lock().store_boundary(pa)
    }

    /// True if the configuration cache holds an L1STD for level 1 index
    /// `index` (eager caching only).
    pub fn l1std_cached(&self, index: u64) -> bool {
        self.lock().l1std_cache.contains_key(&index)
    }

    /// Number of walk-cache entries (table descriptors of both stages).
    pub fn walk_cache_len(&self) -> usize {
        self.lock().walk.len()
    }

    /// GBPA writes ignored because an update was in progress.
    pub fn gbpa_writes_ignored(&self) -> u64 {
        self.lock().gbpa_writes_ignored
    }

    /// Stall fault records waiting for room in the event queue.
    pub fn pending_stall_records(&self) -> usize {
        self.lock().pending_stall_records.len()
    }

    /// Whether the global error `f` is active (GERROR != GERRORN in it).
    pub fn gerror_is_active(
        &self,
        f: tock_registers::fields::Field<u32, GERROR::Register>,
    ) -> bool {
        self.lock().gerror_active(f)
    }

    /// Makes the next `n` event-queue record writes abort (an external
    /// abort the interconnect reports, §7.2.2): the record is lost, PROD
    /// does not move and GERROR.EVENTQ_ABT_ERR is raised.
    pub fn abort_eventq_writes(&self, n: u32) {
        self.lock().eventq_write_aborts = n;
    }
}

impl Mmio for Smmu {
    fn read32(&self, offset: usize) -> u32 {
        self.lock().read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        self.lock().write32(offset, value)
    }

    fn read64(&self, off: usize) -> u64 {
        let mut st = self.lock();
        match st.reg64(off) {
            Some(v) => v,
            None => {
                // Like QEMU: 64-bit accesses work only on 64-bit registers.
                st.access_error(off, 8, false, AccessErrorKind::WrongWidth);
                0
            }
        }
    }

    fn write64(&self, off: usize, value: u64) {
        let mut st = self.lock();
        if st.reg64(off).is_some() {
            st.write64_masked(off, value, u64::MAX, 8);
        } else {
            st.access_error(off, 8, true, AccessErrorKind::WrongWidth);
        }
    }
}
