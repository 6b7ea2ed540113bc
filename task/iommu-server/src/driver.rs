//! The SMMUv3 driver proper: probe, fail-closed initialisation, command
//! issue, safe STE/CD updates and global error handling. It reaches the
//! SMMU only through [`smmuv3::Mmio`] and its tables only through
//! [`DmaMemory`], so the host harness runs it unchanged against a model.

use crate::cdtab::CdTable;
use crate::cmdq::{CmdQueue, IssueFailure, Waiter, CMDQ_LOG2};
use crate::dma::DmaMemory;
use crate::error::{Error, Result};
use crate::evtq::{EventQueue, EVTQ_LOG2};
use crate::pages::{PageAlloc, Pages, PAGE_SIZE};
use crate::strtab::StreamTable;
use crate::update::{
    cd_used, ste_update_safe, ste_used, write_entry, EntryWriter, UpdateKind, WORDS,
};
use smmuv3::regs::{offset, CR0, CR1, CR2, GBPA, GERROR, IDR0, IDR1, IDR3, IDR5, IRQ_CTRL};
use smmuv3::{AddrSize, Cacheability, Cd, Command, Event, Mmio, Shareability, Ste, SyncCs};
use tock_registers::LocalRegisterCopy;

/// What the SMMU can do, from IDR0/1/3/5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub idr0: u32,
    pub idr1: u32,
    pub idr3: u32,
    pub idr5: u32,
    /// IDR0.S1P / S2P: stage 1 / stage 2 translation.
    pub s1: bool,
    pub s2: bool,
    /// IDR0.ST_LEVEL: 2-level stream table.
    pub st_two_level: bool,
    /// IDR0.CD2L: 2-level CD tables.
    pub cd_two_level: bool,
    /// IDR1.SIDSIZE / SSIDSIZE.
    pub sid_bits: u32,
    pub ssid_bits: u32,
    /// IDR5.OAS.
    pub oas: AddrSize,
    pub vmid_bits: u32,
    pub asid_bits: u32,
    pub pri: bool,
    /// Stall supported (IDR0.STALL_MODEL is not terminate-only).
    pub stall: bool,
    /// IDR0.STALL_MODEL = 0b10 (stall forced): CD.S = 0 and STE.S2S = 0
    /// are ILLEGAL there (IHI 0070 §5.2 SteIllegal, §5.4 CdIllegal), so
    /// every entry this driver builds sets them.
    pub stall_forced: bool,
    pub ats: bool,
    pub hyp: bool,
    /// IDR3.RIL: range invalidation.
    pub ril: bool,
    /// IDR1.CMDQS / EVENTQS.
    pub cmdq_log2: u32,
    pub evtq_log2: u32,
}

impl Features {
    /// Decodes the ID registers; refuses an SMMU this driver cannot drive
    /// (no AArch64 tables, big-endian only, no 4 KiB granule, no stage at
    /// all, preset tables or queues).
    pub fn from_idrs(idr0: u32, idr1: u32, idr3: u32, idr5: u32) -> Result<Features> {
        let i0 = LocalRegisterCopy::<u32, IDR0::Register>::new(idr0);
        let i1 = LocalRegisterCopy::<u32, IDR1::Register>::new(idr1);
        let i3 = LocalRegisterCopy::<u32, IDR3::Register>::new(idr3);
        let i5 = LocalRegisterCopy::<u32, IDR5::Register>::new(idr5);
        let ttf = i0.read(IDR0::TTF);
        if ttf & 2 == 0 {
            return Err(Error::Unsupported);
        }
        if i0.read(IDR0::TTENDIAN) == 3 || i5.read(IDR5::GRAN4K) == 0 {
            return Err(Error::Unsupported);
        }
        if i1.read(IDR1::TABLES_PRESET) != 0 || i1.read(IDR1::QUEUES_PRESET) != 0 {
            return Err(Error::Unsupported);
        }
        let s1 = i0.read(IDR0::S1P) != 0;
        let s2 = i0.read(IDR0::S2P) != 0;
        if !s1 && !s2 {
            return Err(Error::Unsupported);
        }
        let oas = AddrSize::from_raw(i5.read(IDR5::OAS) as u64).map_err(|_| Error::Unsupported)?;
        Ok(Features {
            idr0,
            idr1,
            idr3,
            idr5,
            s1,
            s2,
            st_two_level: i0.read(IDR0::ST_LEVEL) == 1,
            cd_two_level: i0.read(IDR0::CD2L) != 0,
            sid_bits: i1.read(IDR1::SIDSIZE),
            ssid_bits: i1.read(IDR1::SSIDSIZE).min(smmuv3::MAX_SSID_BITS),
            oas,
            vmid_bits: if i0.read(IDR0::VMID16) != 0 { 16 } else { 8 },
            asid_bits: if i0.read(IDR0::ASID16) != 0 { 16 } else { 8 },
            pri: i0.read(IDR0::PRI) != 0,
            stall: i0.read(IDR0::STALL_MODEL) != 1,
            stall_forced: i0.read(IDR0::STALL_MODEL) == 2,
            ats: i0.read(IDR0::ATS) != 0,
            hyp: i0.read(IDR0::HYP) != 0,
            ril: i3.read(IDR3::RIL) != 0,
            cmdq_log2: i1.read(IDR1::CMDQS),
            evtq_log2: i1.read(IDR1::EVENTQS),
        })
    }

    /// IDR0.STALL_MODEL == 0b00 (stall and terminate): stalling is optional
    /// per stream, so STE.S1STALLD may be set. With terminate-only (0b01)
    /// or forced stall (0b10) an STE with S1STALLD = 1 is ILLEGAL
    /// (IHI 0070 §5.2, STE validity; QEMU reports C_BAD_STE).
    pub fn stall_optional(&self) -> bool {
        LocalRegisterCopy::<u32, IDR0::Register>::new(self.idr0).read(IDR0::STALL_MODEL) == 0
    }

    /// IDR0.COHACC: the SMMU and system claim IO-coherent access to
    /// structures, queues and walks (IHI 0070 §3.15). Only a claim: the
    /// board file decides the mode, and a disagreement is logged.
    pub fn cohacc(&self) -> bool {
        LocalRegisterCopy::<u32, IDR0::Register>::new(self.idr0).read(IDR0::COHACC) != 0
    }

    /// Nested translation (both stages).
    pub fn nested(&self) -> bool {
        self.s1 && self.s2
    }
}

/// Reads the ID registers (32-bit loads, as the SMMU requires).
pub fn probe(mmio: &impl Mmio) -> Result<Features> {
    Features::from_idrs(
        mmio.read32(offset::IDR0),
        mmio.read32(offset::IDR1),
        mmio.read32(offset::IDR3),
        mmio.read32(offset::IDR5),
    )
}

/// Boot-time choices.
#[derive(Clone, Copy, Debug)]
pub struct InitConfig<'a> {
    /// Streams whose STEs must exist (as abort) before SMMUEN.
    pub sids: &'a [u32],
    /// CMD_SYNC signals the cmd-sync interrupt (CS = IRQ) for waiters that
    /// sleep on it; otherwise CS = none (pure polling).
    pub sync_irq: bool,
    /// Enable the event queue (needs SMMU page 1 in the Mmio).
    pub event_queue: bool,
}

/// The MSI configuration registers (CFG0 address, CFG1 payload, CFG2
/// attributes) of the GERROR, event queue and PRI queue interrupts.
const IRQ_CFGS: [(usize, usize, usize); 3] = [
    (
        offset::GERROR_IRQ_CFG0,
        offset::GERROR_IRQ_CFG1,
        offset::GERROR_IRQ_CFG2,
    ),
    (
        offset::EVENTQ_IRQ_CFG0,
        offset::EVENTQ_IRQ_CFG1,
        offset::EVENTQ_IRQ_CFG2,
    ),
    (
        offset::PRIQ_IRQ_CFG0,
        offset::PRIQ_IRQ_CFG1,
        offset::PRIQ_IRQ_CFG2,
    ),
];

/// Bound on register handshakes (CR0ACK, GBPA.UPDATE, IRQ_CTRLACK), in
/// waiter attempts.
const HANDSHAKE: u32 = 10_000;

/// The driven SMMU.
pub struct Smmu<M: Mmio, D: DmaMemory, W: Waiter> {
    pub mmio: M,
    pub mem: D,
    pub waiter: W,
    pub alloc: PageAlloc,
    pub features: Features,
    pub strtab: StreamTable,
    pub cmdq: CmdQueue,
    pub evtq: Option<EventQueue>,
    /// GERROR bits reported so far (OR of every active set seen).
    pub gerrors_seen: u32,
    /// GERROR interrupts handled.
    pub gerror_events: u32,
    /// Counter ticks of the last [`Smmu::write_ste`] ([`crate::now`]).
    pub last_ste_update_instr: u64,
}

/// CR1 (table and queue access attributes) for the coherency mode: a
/// coherent SMMU walks and queues write-back inner shareable, like the
/// CPU's mapping; a non-coherent one Non-cacheable (its shareability is
/// then IGNORED and behaves as Outer Shareable, IHI 0070 §6.3.11 — written
/// so), reading the memory the driver cleaned to.
pub fn cr1_value(coherent: bool) -> u32 {
    if coherent {
        (CR1::TABLE_SH::InnerShareable
            + CR1::TABLE_OC::WriteBack
            + CR1::TABLE_IC::WriteBack
            + CR1::QUEUE_SH::InnerShareable
            + CR1::QUEUE_OC::WriteBack
            + CR1::QUEUE_IC::WriteBack)
            .value
    } else {
        (CR1::TABLE_SH::OuterShareable
            + CR1::TABLE_OC::NonCacheable
            + CR1::TABLE_IC::NonCacheable
            + CR1::QUEUE_SH::OuterShareable
            + CR1::QUEUE_OC::NonCacheable
            + CR1::QUEUE_IC::NonCacheable)
            .value
    }
}

/// Walk attributes for STEs (S1CIR/S1COR/S1CSH of CD fetches,
/// S2IR0/S2OR0/S2SH0 of stage 2 walks) and CDs (IR0/OR0/SH0 of stage 1
/// walks), matching [`cr1_value`]: write-back inner shareable when
/// coherent, Non-cacheable (outer shareable) when not.
pub fn walk_attrs(coherent: bool) -> (Cacheability, Shareability) {
    if coherent {
        (Cacheability::WriteBackAlloc, Shareability::InnerShareable)
    } else {
        (Cacheability::NonCacheable, Shareability::OuterShareable)
    }
}

fn cr0_bits(smmuen: bool, evtqen: bool, cmdqen: bool) -> u32 {
    (CR0::SMMUEN.val(smmuen as u32)
        + CR0::EVTQEN.val(evtqen as u32)
        + CR0::CMDQEN.val(cmdqen as u32))
    .value
}

impl<M: Mmio, D: DmaMemory, W: Waiter> Smmu<M, D, W> {
    fn wait_reg(mmio: &M, waiter: &mut W, off: usize, mask: u32, want: u32) -> Result<()> {
        let mut attempt = 0;
        while mmio.read32(off) & mask != want {
            if attempt >= HANDSHAKE || !waiter.pause(attempt) {
                return Err(Error::Timeout);
            }
            attempt += 1;
        }
        Ok(())
    }

    /// GBPA.ABORT = 1 by the architecture's update procedure (IHI 0070
    /// §6.3.14.1): wait for any update in progress to finish (a write
    /// while UPDATE = 1 is ignored on SMMUv3.2 and later), write once with
    /// UPDATE = 1, wait for UPDATE = 0, then read back: HardwareError if
    /// ABORT did not stick, so the SMMU is never left bypassing. The other
    /// attribute fields keep their (IMPLEMENTATION DEFINED) values.
    fn gbpa_abort(mmio: &M, waiter: &mut W) -> Result<()> {
        let update = GBPA::UPDATE.mask << GBPA::UPDATE.shift;
        let abort = GBPA::ABORT.mask << GBPA::ABORT.shift;
        Self::wait_reg(mmio, waiter, offset::GBPA, update, 0)?;
        let cur = mmio.read32(offset::GBPA);
        mmio.write32(offset::GBPA, cur | abort | update);
        Self::wait_reg(mmio, waiter, offset::GBPA, update, 0)?;
        if mmio.read32(offset::GBPA) & abort == 0 {
            return Err(Error::HardwareError);
        }
        Ok(())
    }

    fn set_cr0(mmio: &M, waiter: &mut W, v: u32) -> Result<()> {
        mmio.write32(offset::CR0, v);
        Self::wait_reg(mmio, waiter, offset::CR0ACK, 0xff, v & 0xff)
    }

    /// Probes and initialises the SMMU, failing closed at every step:
    /// 1. GBPA = ABORT (update procedure, read back) *before* anything
    ///    else, so whatever happens next, a disabled SMMU aborts instead
    ///    of bypassing;
    /// 2. disable (CR0 = 0) in case a previous incarnation left it on,
    ///    interrupts off, MSI configuration cleared (reset value UNKNOWN);
    /// 3. table attributes (CR1), CR2 (PTM, RECINVSID);
    /// 4. stream table: every configured stream's STE exists as abort;
    /// 5. command queue on; CFGI_ALL + TLBI_NSNH_ALL (+ TLBI_EL2_ALL) + SYNC;
    /// 6. event queue on (optional), GERROR and eventq interrupts;
    /// 7. SMMUEN last.
    pub fn init(mmio: M, mem: D, mut waiter: W, cfg: &InitConfig<'_>) -> Result<Self> {
        let features = probe(&mmio)?;
        let mut alloc = PageAlloc::new(mem.base_pa(), mem.size());

        Self::gbpa_abort(&mmio, &mut waiter)?;
        Self::set_cr0(&mmio, &mut waiter, 0)?;
        mmio.write32(offset::IRQ_CTRL, 0);
        Self::wait_reg(&mmio, &mut waiter, offset::IRQ_CTRLACK, 0x7, 0)?;
        // The MSI configuration resets to UNKNOWN values: on an SMMU with
        // MSIs (IDR0.MSI), an enabled interrupt whose *_IRQ_CFG0 holds a
        // stale address would be written there instead of raising the
        // wired line. Clear address, payload and attributes of all three
        // sources while the interrupts are off (IRQ_CTRLACK = 0 above);
        // without MSI support these registers are RES0 and the writes are
        // harmless.
        for (cfg0, cfg1, cfg2) in IRQ_CFGS {
            mmio.write64(cfg0, 0);
            mmio.write32(cfg1, 0);
            mmio.write32(cfg2, 0);
        }
        // Stale global errors from a previous incarnation: acknowledge.
        let g = mmio.read32(offset::GERROR);
        mmio.write32(offset::GERRORN, g);

        mmio.write32(offset::CR1, cr1_value(mem.coherent()));
        mmio.write32(offset::CR2, (CR2::PTM::SET + CR2::RECINVSID::SET).value);

        let max_sid = cfg.sids.iter().copied().max().unwrap_or(0);
        let mut strtab = StreamTable::new(
            &mem,
            &mut alloc,
            features.sid_bits,
            features.st_two_level,
            max_sid,
        )?;
        for &sid in cfg.sids {
            strtab.ensure(&mem, &mut alloc, sid)?;
        }
        mmio.write64(offset::STRTAB_BASE, strtab.base_value());
        mmio.write32(offset::STRTAB_BASE_CFG, strtab.cfg_value());

        let q_pages = alloc.alloc(0)?;
        mem.zero(q_pages.off, PAGE_SIZE);
        let cs = if cfg.sync_irq {
            SyncCs::Irq
        } else {
            SyncCs::None
        };
        let cmdq = CmdQueue::new(q_pages, CMDQ_LOG2.min(features.cmdq_log2).max(1), cs);
        mmio.write64(offset::CMDQ_BASE, cmdq.base_value());
        mmio.write32(offset::CMDQ_PROD, 0);
        mmio.write32(offset::CMDQ_CONS, 0);
        mem.publish();
        Self::set_cr0(&mmio, &mut waiter, cr0_bits(false, false, true))?;

        let mut smmu = Smmu {
            mmio,
            mem,
            waiter,
            alloc,
            features,
            strtab,
            cmdq,
            evtq: None,
            gerrors_seen: 0,
            gerror_events: 0,
            last_ste_update_instr: 0,
        };
        let inv = [
            Command::cfgi_all(),
            Command::tlbi_nsnh_all(),
            Command::tlbi_el2_all(),
        ];
        let n = if features.hyp { 3 } else { 2 };
        smmu.issue(&inv[..n]).map_err(Error::from)?;

        if cfg.event_queue {
            let e_pages = smmu.alloc_zeroed(0)?;
            let q = EventQueue::new(e_pages, EVTQ_LOG2.min(features.evtq_log2).max(1));
            smmu.mmio.write64(offset::EVENTQ_BASE, q.base_value());
            smmu.mmio.write32(offset::EVENTQ_PROD, 0);
            smmu.mmio.write32(offset::EVENTQ_CONS, 0);
            smmu.evtq = Some(q);
        }
        let evtqen = smmu.evtq.is_some();
        Self::set_cr0(&smmu.mmio, &mut smmu.waiter, cr0_bits(false, evtqen, true))?;
        let irqs = (IRQ_CTRL::GERROR_IRQEN::SET + IRQ_CTRL::EVENTQ_IRQEN.val(evtqen as u32)).value;
        smmu.mmio.write32(offset::IRQ_CTRL, irqs);
        Self::wait_reg(&smmu.mmio, &mut smmu.waiter, offset::IRQ_CTRLACK, 0x7, irqs)?;
        Self::set_cr0(&smmu.mmio, &mut smmu.waiter, cr0_bits(true, evtqen, true))?;
        Ok(smmu)
    }

    /// Issues commands (batched, one SYNC per batch) and waits.
    pub fn issue(&mut self, cmds: &[Command]) -> core::result::Result<(), IssueFailure> {
        self.mem.publish();
        self.cmdq
            .issue(&self.mmio, &self.mem, &mut self.waiter, cmds)
    }

    /// Allocates zeroed pages.
    pub fn alloc_zeroed(&mut self, order: u8) -> Result<Pages> {
        let p = self.alloc.alloc(order)?;
        self.mem.zero(p.off, p.bytes());
        self.mem.publish();
        Ok(p)
    }

    /// Reads the STE of `sid` (None if it does not exist).
    pub fn read_ste(&self, sid: u32) -> Option<Ste> {
        let off = self.strtab.ste_off(&self.mem, sid)?;
        Some(Ste::from_words(core::array::from_fn(|i| {
            self.mem.read64(off + 8 * i)
        })))
    }

    /// Makes `sid`'s STE exist (2-level: its L2 table), invalidating the
    /// L1 descriptor if one was written.
    pub fn ensure_ste(&mut self, sid: u32) -> Result<()> {
        if self.strtab.ensure(&self.mem, &mut self.alloc, sid)? {
            self.issue(&[Command::cfgi_ste(sid, false)])
                .map_err(Error::from)?;
        }
        Ok(())
    }

    /// Moves `sid`'s STE to `target` in the safe order, CFGI_STE + SYNC
    /// after each step. When stage 1 is involved (before or after), each
    /// step also issues CFGI_CD_ALL: the CDs cached through the old STE
    /// (its CD table pointer may change) must go too, and the architecture
    /// does not promise that CFGI_STE alone drops them.
    pub fn write_ste(&mut self, sid: u32, target: &Ste) -> Result<UpdateKind> {
        let t0 = crate::now();
        let r = self.write_ste_inner(sid, target);
        self.last_ste_update_instr = crate::now().wrapping_sub(t0);
        r
    }

    fn write_ste_inner(&mut self, sid: u32, target: &Ste) -> Result<UpdateKind> {
        self.ensure_ste(sid)?;
        let off = self.strtab.ste_off(&self.mem, sid).ok_or(Error::Invalid)?;
        let s1 = |s: &Ste| s.v() && s.config().is_ok_and(|c| c.s1_enabled());
        let cur = self.read_ste(sid).unwrap_or_default();
        let both = [Command::cfgi_ste(sid, true), Command::cfgi_cd_all(sid)];
        let cfgi = if s1(&cur) || s1(target) {
            &both[..]
        } else {
            &both[..1]
        };
        let mut w = Slot {
            smmu: self,
            off,
            used: ste_used,
            safe: Some(ste_update_safe),
            cfgi,
        };
        write_entry(&mut w, &target.words())
    }

    /// Moves the CD at region offset `off` to `target` in the safe order;
    /// each step is followed by `cfgi` (the CFGI_CD of every stream that
    /// may cache it) + SYNC.
    pub fn write_cd(&mut self, off: usize, target: &Cd, cfgi: &[Command]) -> Result<UpdateKind> {
        let mut w = Slot {
            smmu: self,
            off,
            used: cd_used,
            safe: None,
            cfgi,
        };
        write_entry(&mut w, &target.words())
    }

    /// Reads a CD.
    pub fn read_cd(&self, table: &CdTable, ssid: u32) -> Option<Cd> {
        let off = table.cd_off(&self.mem, ssid)?;
        Some(Cd::from_words(core::array::from_fn(|i| {
            self.mem.read64(off + 8 * i)
        })))
    }

    /// Reports and acknowledges active global errors; returns the active
    /// bits. CMDQ_ERR is left to the command queue, which recovers from it
    /// while it waits for its batch; if one is found here (no batch in
    /// flight), an empty batch recovers it.
    pub fn handle_gerror(&mut self) -> u32 {
        let g = self.mmio.read32(offset::GERROR);
        let n = self.mmio.read32(offset::GERRORN);
        let active = g ^ n;
        if active == 0 {
            return 0;
        }
        self.gerror_events += 1;
        self.gerrors_seen |= active;
        let cmdq_err = GERROR::CMDQ_ERR.mask << GERROR::CMDQ_ERR.shift;
        let ack = active & !cmdq_err;
        if ack != 0 {
            self.mmio.write32(offset::GERRORN, n ^ ack);
        }
        if active & cmdq_err != 0 {
            let _ = self.issue(&[]);
        }
        active
    }

    /// Drains the event queue into `sink` (nothing if it is not enabled).
    pub fn drain_events(&mut self, sink: impl FnMut(Event)) -> u32 {
        match &mut self.evtq {
            Some(q) => q.drain(&self.mmio, &self.mem, sink),
            None => 0,
        }
    }

    /// GBPA and CR0 as they read now (for `info`).
    pub fn control_regs(&self) -> (u32, u32) {
        (
            self.mmio.read32(offset::GBPA),
            self.mmio.read32(offset::CR0),
        )
    }
}

/// One STE or CD in DMA memory, for [`write_entry`].
struct Slot<'a, 'c, M: Mmio, D: DmaMemory, W: Waiter> {
    smmu: &'a mut Smmu<M, D, W>,
    off: usize,
    used: fn(&[u64; WORDS]) -> [u64; WORDS],
    /// [`EntryWriter::update_safe`] (STEs: S1STALLD).
    safe: Option<fn(&[u64; WORDS], &[u64; WORDS]) -> [u64; WORDS]>,
    cfgi: &'c [Command],
}

impl<M: Mmio, D: DmaMemory, W: Waiter> EntryWriter for Slot<'_, '_, M, D, W> {
    fn read(&self, i: usize) -> u64 {
        self.smmu.mem.read64(self.off + 8 * i)
    }
    fn write(&mut self, i: usize, v: u64) {
        self.smmu.mem.write64(self.off + 8 * i, v)
    }
    fn used(&self, e: &[u64; WORDS]) -> [u64; WORDS] {
        (self.used)(e)
    }
    fn sync(&mut self) -> Result<()> {
        self.smmu.issue(self.cfgi).map_err(Error::from)
    }
    fn update_safe(&self, cur: &[u64; WORDS], target: &[u64; WORDS]) -> [u64; WORDS] {
        self.safe.map_or([0; WORDS], |f| f(cur, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use smmuv3::regs::offset as o;
    use smmuv3::{CommandKind, StreamConfig};

    pub fn boot(sids: &[u32]) -> (FakeSmmu, Smmu<FakeSmmu, HostMem, SpinWaiter>) {
        let mem = HostMem::new(0x4010_0000, 0x40000);
        let f = FakeSmmu::new(mem.clone());
        let cfg = InitConfig {
            sids,
            sync_irq: false,
            event_queue: true,
        };
        let s = Smmu::init(f.clone(), mem, SpinWaiter, &cfg).unwrap();
        (f, s)
    }

    #[test]
    fn qemu_features() {
        let f = Features::from_idrs(QEMU_IDR0, QEMU_IDR1, 0x1414, QEMU_IDR5).unwrap();
        assert!(f.s1 && f.s2 && f.nested());
        assert!(f.st_two_level && !f.cd_two_level);
        assert_eq!((f.sid_bits, f.ssid_bits), (16, 0));
        assert_eq!(f.oas, AddrSize::Bits44);
        assert_eq!((f.vmid_bits, f.asid_bits), (16, 16));
        assert!(!f.pri && !f.stall && !f.ats && !f.hyp && f.ril);
        assert_eq!((f.cmdq_log2, f.evtq_log2), (19, 19));
    }

    #[test]
    fn refuses_what_it_cannot_drive() {
        // AArch32 tables only.
        assert_eq!(
            Features::from_idrs(QEMU_IDR0 & !0b1100 | 0b0100, QEMU_IDR1, 0, QEMU_IDR5),
            Err(Error::Unsupported)
        );
        // No stage at all.
        assert_eq!(
            Features::from_idrs(QEMU_IDR0 & !0b11, QEMU_IDR1, 0, QEMU_IDR5),
            Err(Error::Unsupported)
        );
        // No 4K granule.
        assert_eq!(
            Features::from_idrs(QEMU_IDR0, QEMU_IDR1, 0, 0x64),
            Err(Error::Unsupported)
        );
        // Preset tables.
        assert_eq!(
            Features::from_idrs(QEMU_IDR0, QEMU_IDR1 | 1 << 30, 0, QEMU_IDR5),
            Err(Error::Unsupported)
        );
    }

    #[test]
    fn init_fails_closed_in_order() {
        let (f, s) = boot(&[0x10]);
        let writes = f.st.borrow().writes.clone();
        let pos = |off: usize, pred: &dyn Fn(u64) -> bool| {
            writes.iter().position(|(o, v)| *o == off && pred(*v))
        };
        let gbpa = pos(o::GBPA, &|v| v & (1 << 20) != 0 && v & (1 << 31) != 0).expect("GBPA abort");
        assert_eq!(gbpa, 0, "GBPA.ABORT is the very first write");
        let strtab = pos(o::STRTAB_BASE_CFG, &|_| true).unwrap();
        let smmuen = pos(o::CR0, &|v| v & 1 != 0).expect("SMMUEN");
        assert!(strtab < smmuen && smmuen == writes.len() - 1, "SMMUEN last");
        assert_eq!(f.reg(o::GBPA) & (1 << 20), 1 << 20);
        assert_eq!(f.reg(o::CR0), 0b1101);
        // Initial invalidation.
        let log = f.take_log();
        assert_eq!(log[0].decode(), Ok(CommandKind::CfgiAll));
        assert_eq!(log[1].decode(), Ok(CommandKind::TlbiNsnhAll));
        // The configured stream's STE exists and aborts.
        let ste = s.read_ste(0x10).unwrap();
        assert!(ste.v());
        assert_eq!(ste.config(), Ok(StreamConfig::Abort));
        assert_eq!(s.read_ste(0x200), None);
    }

    #[test]
    fn events_are_drained() {
        let (f, mut s) = boot(&[0x10]);
        let mut e = Event::new(smmuv3::EventId::FTranslation, 0x10, None);
        e.set_input_addr(0x1234_5000);
        f.push_event(e);
        f.push_event(e);
        let mut got = std::vec::Vec::new();
        assert_eq!(s.drain_events(|e| got.push(e)), 2);
        assert_eq!(got[1].input_addr(), 0x1234_5000);
        assert_eq!(s.drain_events(|_| ()), 0);
        assert_eq!(f.reg(o::EVENTQ_CONS), 2);
    }

    #[test]
    fn gerror_bits_are_reported_and_acknowledged() {
        let (f, mut s) = boot(&[]);
        smmuv3::Mmio::write32(&f, o::GERROR, 1 << 2); // EVENTQ_ABT_ERR
        assert_eq!(s.handle_gerror(), 1 << 2);
        assert_eq!(f.reg(o::GERRORN), 1 << 2);
        assert_eq!(s.handle_gerror(), 0);
    }

    fn fake() -> (FakeSmmu, HostMem) {
        let mem = HostMem::new(0x4010_0000, 0x40000);
        (FakeSmmu::new(mem.clone()), mem)
    }

    fn init(f: &FakeSmmu, mem: HostMem) -> Result<Smmu<FakeSmmu, HostMem, SpinWaiter>> {
        let cfg = InitConfig {
            sids: &[0x10],
            sync_irq: false,
            event_queue: true,
        };
        Smmu::init(f.clone(), mem, SpinWaiter, &cfg)
    }

    #[test]
    fn gbpa_waits_for_an_update_in_progress_then_reads_back() {
        let (f, mem) = fake();
        {
            let mut st = f.st.borrow_mut();
            // An update under way at boot: writes are ignored until it
            // completes; ours then takes a few reads too.
            st.regs.insert(o::GBPA, 0x1000 | 1 << 31);
            st.gbpa_pending = Some((0x1000, 3));
            st.gbpa_delay = 2;
        }
        init(&f, mem).unwrap();
        assert_eq!(f.reg(o::GBPA), 0x1000 | 1 << 20, "ABORT set, UPDATE done");
        let gbpa_writes: std::vec::Vec<u64> =
            f.st.borrow()
                .writes
                .iter()
                .filter(|(off, _)| *off == o::GBPA)
                .map(|(_, v)| *v)
                .collect();
        assert_eq!(
            gbpa_writes,
            [0x1000 | 1 << 20 | 1 << 31],
            "one write, with UPDATE"
        );
    }

    #[test]
    fn gbpa_abort_that_does_not_stick_fails_init() {
        let (f, mem) = fake();
        f.st.borrow_mut().gbpa_ignores_abort = true;
        assert_eq!(init(&f, mem).err(), Some(Error::HardwareError));
        assert_eq!(f.reg(o::CR0) & 1, 0, "never enabled");
    }

    #[test]
    fn msi_configuration_is_cleared_before_interrupts_are_enabled() {
        let (f, mem) = fake();
        for (c0, c1, c2) in IRQ_CFGS {
            let mut st = f.st.borrow_mut();
            st.regs.insert(c0, 0xdead_beef_0000);
            st.regs.insert(c1, 0x1234);
            st.regs.insert(c2, 0x3f);
        }
        init(&f, mem).unwrap();
        let writes = f.st.borrow().writes.clone();
        let irq_on = writes
            .iter()
            .position(|(off, v)| *off == o::IRQ_CTRL && *v != 0)
            .unwrap();
        for (c0, c1, c2) in IRQ_CFGS {
            for r in [c0, c1, c2] {
                assert_eq!(f.reg(r), 0, "{r:#x} cleared");
                let w = writes.iter().position(|(off, _)| *off == r).unwrap();
                assert!(w < irq_on, "{r:#x} cleared before IRQ_CTRL enables");
            }
        }
    }
}
