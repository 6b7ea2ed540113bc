//! A minimal hand-written driver for the model tests: it sets up memory,
//! the stream table and the queues through `Mmio` and `PhysMem` only, and
//! builds 4 KiB page tables with the `smmuv3::pgtable` helpers.

#![allow(dead_code)]

use smmuv3::pgtable::{
    level_index, level_shift, start_index, S1Ap, S1Desc, S2Ap, S2Desc, TABLE_SIZE,
};
use smmuv3::regs::{self, queue_base, strtab_base, CR0, CR2, GBPA, IRQ_CTRL, STRTAB_BASE_CFG};
use smmuv3::{
    AddrSize, Cacheability, Cd, Command, Event, L1StreamDesc, Mmio, MmioExt, PriEntry, QueuePtr,
    Shareability, Ste, StreamConfig, Strw, SyncCs, Tg0, CMDQ_ENTRY_BYTES, EVENTQ_ENTRY_BYTES,
    PRIQ_ENTRY_BYTES,
};
use smmuv3_model::{Device, PhysMem, Smmu, SmmuConfig};
use std::sync::Arc;

/// Table and queue RAM (identity-mapped at stage 2 by `s2_identity`).
pub const RAM: u64 = 0x4000_0000;
pub const RAM_SIZE: usize = 16 << 20;
/// Data pages that DMA targets.
pub const DATA: u64 = 0x8000_0000;
pub const DATA_SIZE: usize = 1 << 20;
/// Stage 1 input size: T0SZ 25 (39 bits, walk starts at level 1).
pub const T0SZ: u8 = 25;
/// Stage 2: S2T0SZ 25, S2SL0 1 (start at level 1).
pub const S2T0SZ: u8 = 25;
pub const S2SL0: u8 = 1;

pub struct Rig {
    pub mem: PhysMem,
    pub smmu: Arc<Smmu>,
    pub dev: Device,
    next: u64,
    pub strtab: u64,
    pub cmdq: u64,
    pub evtq: u64,
    pub priq: u64,
    pub cmdq_log2: u32,
    pub evtq_log2: u32,
    pub priq_log2: u32,
    prod: QueuePtr,
    /// Stream table geometry.
    pub two_level: Option<u32>,
}

impl Rig {
    /// A rig with a linear stream table of 256 STEs and queues of
    /// 2^cmdq/2^evtq/2^priq entries, everything enabled, GBPA = abort.
    pub fn new(cfg: SmmuConfig) -> Self {
        Self::with_queues(cfg, 6, 6, 6)
    }

    pub fn with_queues(cfg: SmmuConfig, cmdq_log2: u32, evtq_log2: u32, priq_log2: u32) -> Self {
        let mut r = Self::bare(cfg);
        r.cmdq_log2 = cmdq_log2;
        r.evtq_log2 = evtq_log2;
        r.priq_log2 = priq_log2;
        r.strtab = r.alloc(256 * Ste::BYTES);
        r.setup_queues();
        r.smmu.write_reg(
            regs::STRTAB_BASE_CFG,
            STRTAB_BASE_CFG::FMT::Linear + STRTAB_BASE_CFG::LOG2SIZE.val(8),
        );
        r.smmu
            .write_reg64(regs::STRTAB_BASE, strtab_base(r.strtab, true));
        r.enable();
        r
    }

    /// A rig with a 2-level stream table (SPLIT 8, SIDSIZE 16) and no L2
    /// tables yet.
    pub fn two_level(cfg: SmmuConfig) -> Self {
        let mut r = Self::bare(cfg);
        r.cmdq_log2 = 6;
        r.evtq_log2 = 6;
        r.priq_log2 = 6;
        let l1_entries = 1 << (16 - 8);
        r.strtab = r.alloc(l1_entries * 8);
        r.two_level = Some(8);
        r.setup_queues();
        r.smmu.write_reg(
            regs::STRTAB_BASE_CFG,
            STRTAB_BASE_CFG::FMT::TwoLevel
                + STRTAB_BASE_CFG::SPLIT.val(8)
                + STRTAB_BASE_CFG::LOG2SIZE.val(16),
        );
        r.smmu
            .write_reg64(regs::STRTAB_BASE, strtab_base(r.strtab, true));
        r.enable();
        r
    }

    /// Memory and SMMU only: nothing programmed.
    pub fn bare(cfg: SmmuConfig) -> Self {
        let mem = PhysMem::new();
        mem.add_region(RAM, RAM_SIZE).unwrap();
        mem.add_region(DATA, DATA_SIZE).unwrap();
        let smmu = Arc::new(Smmu::new(mem.clone(), cfg));
        let dev = Device::new(smmu.clone());
        Self {
            mem,
            smmu,
            dev,
            next: RAM,
            strtab: 0,
            cmdq: 0,
            evtq: 0,
            priq: 0,
            cmdq_log2: 0,
            evtq_log2: 0,
            priq_log2: 0,
            prod: QueuePtr::new(0),
            two_level: None,
        }
    }

    fn setup_queues(&mut self) {
        self.cmdq = self.alloc(CMDQ_ENTRY_BYTES << self.cmdq_log2);
        self.evtq = self.alloc(EVENTQ_ENTRY_BYTES << self.evtq_log2);
        self.priq = self.alloc(PRIQ_ENTRY_BYTES << self.priq_log2);
        self.prod = QueuePtr::new(self.cmdq_log2);
        let s = &self.smmu;
        s.write64(
            regs::CMDQ_BASE.offset(),
            queue_base(self.cmdq, self.cmdq_log2, true),
        );
        s.write64(
            regs::EVENTQ_BASE.offset(),
            queue_base(self.evtq, self.evtq_log2, true),
        );
        s.write64(
            regs::PRIQ_BASE.offset(),
            queue_base(self.priq, self.priq_log2, true),
        );
    }

    fn enable(&mut self) {
        let s = &self.smmu;
        s.write_reg(regs::CR2, CR2::RECINVSID::SET);
        s.write_reg(
            regs::IRQ_CTRL,
            IRQ_CTRL::GERROR_IRQEN::SET + IRQ_CTRL::EVENTQ_IRQEN::SET + IRQ_CTRL::PRIQ_IRQEN::SET,
        );
        s.write_reg(regs::GBPA, GBPA::UPDATE::SET + GBPA::ABORT::SET);
        s.write_reg(
            regs::CR0,
            CR0::CMDQEN::SET + CR0::EVTQEN::SET + CR0::PRIQEN::SET,
        );
        self.cmds(&[
            Command::cfgi_all(),
            Command::tlbi_nsnh_all(),
            Command::sync(SyncCs::None),
        ]);
        let s = &self.smmu;
        s.write_reg(
            regs::CR0,
            CR0::CMDQEN::SET + CR0::EVTQEN::SET + CR0::PRIQEN::SET + CR0::SMMUEN::SET,
        );
        assert!(s.read_reg(regs::CR0ACK).is_set(CR0::SMMUEN));
    }

    /// Bump allocation of zeroed, size-aligned (at least 4 KiB) RAM.
    pub fn alloc(&mut self, size: usize) -> u64 {
        let align = (size as u64).next_power_of_two().max(TABLE_SIZE as u64);
        let pa = (self.next + align - 1) & !(align - 1);
        self.next = pa + size as u64;
        assert!(self.next <= RAM + RAM_SIZE as u64, "rig RAM exhausted");
        pa
    }

    // ---- commands ----

    /// Queues commands and rings CMDQ_PROD once.
    pub fn cmds(&mut self, cmds: &[Command]) {
        self.cmds_nowait(cmds);
        // A throttled SMMU consumes only when stepped: wait like a driver.
        if self.smmu.config().cmdq_throttle.is_some() {
            self.wait_cmdq();
        }
    }

    /// Queues `cmds` and rings the doorbell without waiting for them (and
    /// without checking for space: a careless driver).
    pub fn cmds_nowait(&mut self, cmds: &[Command]) {
        for c in cmds {
            let pa = self.cmdq + self.prod.entry_offset(CMDQ_ENTRY_BYTES) as u64;
            self.mem.write_obj(pa, c).unwrap();
            self.prod = self.prod.advance(1);
        }
        self.smmu.write32(regs::CMDQ_PROD.offset(), self.prod.raw());
    }

    /// The driver's CMDQ_PROD.
    pub fn cmdq_prod(&self) -> QueuePtr {
        self.prod
    }

    /// Steps the SMMU until CMDQ_CONS reaches PROD (or it stops on an
    /// error); panics after 10 000 steps.
    pub fn wait_cmdq(&mut self) {
        for _ in 0..10_000 {
            let cons = self.cmdq_cons();
            if cons & 0x00ff_ffff == self.prod.raw() || cons >> 24 != 0 {
                return;
            }
            self.smmu.step();
        }
        panic!("command queue never drained");
    }

    pub fn cmd(&mut self, c: Command) {
        self.cmds(&[c]);
    }

    pub fn sync(&mut self) {
        self.cmd(Command::sync(SyncCs::None));
    }

    /// The command queue consumer pointer.
    pub fn cmdq_cons(&self) -> u32 {
        self.smmu.read32(regs::CMDQ_CONS.offset())
    }

    // ---- queues read by software ----

    /// Drains the event queue; acknowledges overflow.
    pub fn events(&mut self) -> Vec<Event> {
        let s = &self.smmu;
        let prod = QueuePtr::from_raw(self.evtq_log2, s.read32(regs::EVENTQ_PROD.offset()));
        let mut cons = QueuePtr::from_raw(self.evtq_log2, s.read32(regs::EVENTQ_CONS.offset()));
        let mut out = Vec::new();
        while !prod.is_empty(cons) {
            out.push(
                self.mem
                    .read_obj(self.evtq + cons.entry_offset(EVENTQ_ENTRY_BYTES) as u64)
                    .unwrap(),
            );
            cons = cons.advance(1);
        }
        s.write32(
            regs::EVENTQ_CONS.offset(),
            cons.with_overflow(prod.overflow()).raw(),
        );
        out
    }

    /// Drains the PRI queue without acknowledging overflow.
    pub fn pri_entries_no_ack(&mut self) -> Vec<PriEntry> {
        let s = &self.smmu;
        let prod = QueuePtr::from_raw(self.priq_log2, s.read32(regs::PRIQ_PROD.offset()));
        let mut cons = QueuePtr::from_raw(self.priq_log2, s.read32(regs::PRIQ_CONS.offset()));
        let mut out = Vec::new();
        while !prod.is_empty(cons) {
            out.push(
                self.mem
                    .read_obj(self.priq + cons.entry_offset(PRIQ_ENTRY_BYTES) as u64)
                    .unwrap(),
            );
            cons = cons.advance(1);
        }
        s.write32(regs::PRIQ_CONS.offset(), cons.raw());
        out
    }

    /// Drains the PRI queue and acknowledges overflow.
    pub fn pri_entries(&mut self) -> Vec<PriEntry> {
        let out = self.pri_entries_no_ack();
        let s = &self.smmu;
        let prod = QueuePtr::from_raw(self.priq_log2, s.read32(regs::PRIQ_PROD.offset()));
        let cons = QueuePtr::from_raw(self.priq_log2, s.read32(regs::PRIQ_CONS.offset()));
        s.write32(
            regs::PRIQ_CONS.offset(),
            cons.with_overflow(prod.overflow()).raw(),
        );
        out
    }

    // ---- stream table ----

    /// Address of the STE for `sid` (creating the level 2 table if needed).
    pub fn ste_addr(&mut self, sid: u32) -> u64 {
        match self.two_level {
            None => self.strtab + sid as u64 * Ste::BYTES as u64,
            Some(split) => {
                let l1 = self.strtab + (sid as u64 >> split) * 8;
                let mut d: L1StreamDesc = self.mem.read_obj(l1).unwrap();
                if d.span() == 0 {
                    let l2 = self.alloc(Ste::BYTES << split);
                    d = L1StreamDesc::new(l2, split);
                    self.mem.write_obj(l1, &d).unwrap();
                }
                d.l2ptr() + (sid as u64 & ((1 << split) - 1)) * Ste::BYTES as u64
            }
        }
    }

    /// Writes the STE (no invalidation).
    pub fn write_ste(&mut self, sid: u32, ste: &Ste) {
        let a = self.ste_addr(sid);
        self.mem.write_obj(a, ste).unwrap();
    }

    /// Writes the STE, then CFGI_STE + SYNC.
    pub fn install_ste(&mut self, sid: u32, ste: &Ste) {
        self.write_ste(sid, ste);
        self.cmds(&[Command::cfgi_ste(sid, false), Command::sync(SyncCs::None)]);
    }

    // ---- page tables ----

    /// A fresh, empty translation table.
    pub fn table(&mut self) -> u64 {
        self.alloc(TABLE_SIZE)
    }

    /// Installs descriptor `leaf` for `addr` at `level` in the tables under
    /// `root` (a walk over `ia_bits` input bits starting at `start`),
    /// creating intermediate tables. Table addresses are used as PAs: at
    /// stage 1 under nesting they must be identity-mapped at stage 2.
    pub fn map_raw(&mut self, root: u64, ia_bits: u32, start: u8, addr: u64, level: u8, leaf: u64) {
        let mut table = root;
        let mut l = start;
        loop {
            let idx = if l == start {
                start_index(addr, l, ia_bits)
            } else {
                level_index(addr, l)
            };
            let slot = table + idx as u64 * 8;
            if l == level {
                self.mem.write_u64(slot, leaf).unwrap();
                return;
            }
            let d = S1Desc(self.mem.read_u64(slot).unwrap());
            table = if d.is_table(l) {
                d.table_addr()
            } else {
                let t = self.table();
                self.mem.write_u64(slot, S1Desc::table(t).raw()).unwrap();
                t
            };
            l += 1;
        }
    }

    /// Stage 1 4 KiB page.
    pub fn s1_map(&mut self, root: u64, va: u64, pa: u64, ap: S1Ap) {
        self.map_raw(
            root,
            64 - T0SZ as u32,
            1,
            va,
            3,
            S1Desc::page(pa, ap, 1).raw(),
        );
    }

    /// Removes a stage 1 page (no invalidation).
    pub fn s1_unmap(&mut self, root: u64, va: u64) {
        self.map_raw(root, 64 - T0SZ as u32, 1, va, 3, 0);
    }

    /// Stage 2 4 KiB page.
    pub fn s2_map(&mut self, root: u64, ipa: u64, pa: u64, ap: S2Ap) {
        self.map_raw(
            root,
            64 - S2T0SZ as u32,
            1,
            ipa,
            3,
            S2Desc::page(pa, ap).raw(),
        );
    }

    /// Identity-maps the rig RAM at stage 2 with 2 MiB blocks.
    pub fn s2_identity(&mut self, root: u64) {
        let block = 1u64 << level_shift(2);
        let mut a = RAM;
        while a < RAM + RAM_SIZE as u64 {
            let d = S2Desc::leaf(a, 2, S2Ap::ReadWrite).raw();
            self.map_raw(root, 64 - S2T0SZ as u32, 1, a, 2, d);
            a += block;
        }
    }

    // ---- configuration structures ----

    /// A stage 1 CD: 39-bit VA, 4 KiB, TTB0 = `root`, faults recorded.
    pub fn cd(root: u64, asid: u16) -> Cd {
        let mut cd = Cd::zeroed();
        cd.set_t0sz(T0SZ)
            .set_tg0(Tg0::Granule4K)
            .set_ir0(Cacheability::WriteBackAlloc)
            .set_or0(Cacheability::WriteBackAlloc)
            .set_sh0(Shareability::InnerShareable)
            .set_epd1(true)
            .set_ips(AddrSize::Bits48)
            .set_aa64(true)
            .set_r(true)
            .set_a(true)
            .set_asid(asid)
            .set_ttb0(root)
            .set_mair(smmuv3::pgtable::mair::mair([
                smmuv3::pgtable::mair::DEVICE_NGNRE,
                smmuv3::pgtable::mair::NORMAL_WB,
                0,
                0,
                0,
                0,
                0,
                0,
            ]))
            .set_v(true);
        cd
    }

    /// A stage-1-only STE with a single CD at `cd_ptr`.
    pub fn s1_ste(cd_ptr: u64) -> Ste {
        let mut ste = Ste::zeroed();
        ste.set_config(StreamConfig::S1Trans)
            .set_s1_context_ptr(cd_ptr)
            .set_strw(Strw::El1)
            .set_s1cir(Cacheability::WriteBackAlloc)
            .set_s1cor(Cacheability::WriteBackAlloc)
            .set_s1csh(Shareability::InnerShareable)
            .set_v(true);
        ste
    }

    /// Adds the stage 2 fields to `ste` (VMID, 39-bit IPA, start level 1).
    pub fn with_s2(mut ste: Ste, root: u64, vmid: u16) -> Ste {
        let cfg = if ste.config() == Ok(StreamConfig::S1Trans) {
            StreamConfig::Nested
        } else {
            StreamConfig::S2Trans
        };
        ste.set_config(cfg)
            .set_s2vmid(vmid)
            .set_s2t0sz(S2T0SZ)
            .set_s2sl0(S2SL0)
            .set_s2ir0(Cacheability::WriteBackAlloc)
            .set_s2or0(Cacheability::WriteBackAlloc)
            .set_s2sh0(Shareability::InnerShareable)
            .set_s2tg(Tg0::Granule4K)
            .set_s2ps(AddrSize::Bits48)
            .set_s2aa64(true)
            .set_s2r(true)
            .set_s2ttb(root)
            .set_v(true);
        ste
    }

    /// A stage-2-only STE.
    pub fn s2_ste(root: u64, vmid: u16) -> Ste {
        let mut ste = Ste::zeroed();
        ste.set_config(StreamConfig::S2Trans);
        Self::with_s2(ste, root, vmid)
    }

    /// Writes a CD (no invalidation); returns its address.
    pub fn write_cd(&mut self, pa: u64, cd: &Cd) -> u64 {
        self.mem.write_obj(pa, cd).unwrap();
        pa
    }
}
