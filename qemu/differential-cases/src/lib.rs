//! The differential SMMUv3 cases, defined once.
//!
//! Each [`Case`] says how to program the SMMU (stream table shape), how to
//! build its STE / CD / page tables in one memory region, which 4-byte DMA
//! edu's stream (StreamID [`SID`]) issues, and what IHI 0070 says must
//! happen: the write lands at a given place in the region, or exactly one
//! event is recorded (type, StreamID, address, CLASS, S2, RnW), or the
//! transaction is terminated silently.
//!
//! Two runners use this crate and nothing else to decide pass or fail:
//! - on QEMU, `qemu/test-differential` (a task that owns the SMMU's two
//!   register pages; edu does the DMA);
//! - on the project's model, `host/smmuv3-model/tests/differential.rs`
//!   (the model's `Device` does the DMA).
//!
//! Both program the SMMU through [`smmuv3::Mmio`] with the same code
//! ([`prepare`]), read the event queue with the same code ([`observe`]) and
//! judge with the same code ([`judge`]). Where QEMU 10.0 is known to depart
//! from the architecture, the case records the deviation ([`Case::qemu`]):
//! the spec's outcome stays the table's answer; the QEMU test then checks
//! that QEMU does exactly the recorded wrong thing (so a fixed QEMU is
//! noticed) and names the deviation in its case name.
//!
//! Memory of one region of [`PAGES`] pages (its PA is the runner's):
//! page 0 stream table (linear, or level 1), page 1 the level 2 table,
//! page 2 the command queue, page 3 the event queue, pages 4..32 CDs and
//! translation tables (allocated in order per case), pages 32..64 DMA
//! targets. As a stage 2 input, page i of the region is IPA
//! [`IPA_BASE`] + i × 4 KiB.

#![no_std]

use core::fmt;
use smmuv3::pgtable::{
    level_index, level_shift, start_index, S1Ap, S1Desc, S2Ap, S2Desc, GRANULE_SIZE,
};
use smmuv3::regs::{self, queue_base, strtab_base, CR0, CR1, CR2, GBPA, STRTAB_BASE_CFG};
use smmuv3::{
    AddrSize, Cacheability, Cd, CmdqError, Command, Event, EventClass, EventId, L1StreamDesc, Mmio,
    MmioExt, QueuePtr, Shareability, Ste, StreamConfig, Strw, SyncCs, Tg0, CMDQ_ENTRY_BYTES,
    EVENTQ_ENTRY_BYTES,
};

// ------------------------------------------------------------------ layout

/// Pages in the region.
pub const PAGES: usize = 64;
/// Bytes in the region.
pub const REGION_SIZE: usize = PAGES * PAGE;
const PAGE: usize = GRANULE_SIZE as usize;
/// The stream table (linear) or its level 1 table.
pub const STRTAB_PAGE: usize = 0;
/// The level 2 stream table (SPLIT 6: 64 STEs, one page).
pub const L2_PAGE: usize = 1;
pub const CMDQ_PAGE: usize = 2;
pub const EVTQ_PAGE: usize = 3;
/// First page of CDs and translation tables.
pub const TABLE_FIRST: usize = 4;
/// First DMA target page; the targets run to the end of the region.
pub const DATA_FIRST: usize = 32;

/// edu's StreamID (PCI 00:02.0 behind QEMU's default NIC); the model uses
/// the same.
pub const SID: u32 = 0x10;
/// Command and event queues: 16 entries each.
pub const CMDQ_LOG2: u32 = 4;
pub const EVTQ_LOG2: u32 = 4;
/// Where stage 2 puts the region: IPA of page i = IPA_BASE + i * 4 KiB.
pub const IPA_BASE: u64 = 0x0100_0000;
/// A physical address nothing answers (above QEMU virt's 256 MiB of RAM at
/// 0x4000_0000, inside the 44-bit OAS; not in the model's memory).
pub const BAD_PA: u64 = 0x7000_0000;

/// The IOVA most cases use (edu keeps 28 address bits: every IOVA here is
/// below 0x1000_0000).
pub const IOVA: u64 = 0x20_0000;
/// A stage 1 VA whose 2 MiB block case uses level 2 descriptors.
pub const BLOCK_VA: u64 = 0x40_0000;

/// Stage 1: T0SZ 25 (39-bit VA), walk starts at level 1.
pub const T0SZ: u8 = 25;
/// Stage 2: S2T0SZ 25 (39-bit IPA), S2SL0 1 (start at level 1).
pub const S2T0SZ: u8 = 25;
pub const S2SL0: u8 = 1;
pub const ASID: u16 = 1;
pub const VMID: u16 = 1;

const MAIR: u64 = smmuv3::pgtable::mair::mair([
    smmuv3::pgtable::mair::DEVICE_NGNRE,
    smmuv3::pgtable::mair::NORMAL_WB,
    0,
    0,
    0,
    0,
    0,
    0,
]);
/// MAIR index of normal write-back memory in [`MAIR`].
const NORMAL: u8 = 1;

// ------------------------------------------------------------------ memory

/// The runner's access to physical memory (the region and, for reads only,
/// nothing else). `pa` is 8-byte aligned.
pub trait Phys {
    fn read64(&self, pa: u64) -> u64;
    fn write64(&self, pa: u64, v: u64);
}

/// Stream table shape of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strtab {
    /// 2-level (SPLIT 6) rather than linear.
    pub two_level: bool,
    /// STRTAB_BASE_CFG.LOG2SIZE.
    pub log2size: u8,
    /// STRTAB_BASE at this PA instead of page 0.
    pub at: Option<u64>,
}

impl Strtab {
    /// A linear table of 64 STEs.
    pub const LINEAR: Strtab = Strtab {
        two_level: false,
        log2size: 6,
        at: None,
    };
    /// A 2-level table, SPLIT 6, 8-bit StreamIDs (4 L1 descriptors).
    pub const TWO_LEVEL: Strtab = Strtab {
        two_level: true,
        log2size: 8,
        at: None,
    };
    /// The level 2 split (4 KiB leaf tables).
    pub const SPLIT: u32 = 6;
}

/// Builds one case's structures in the region.
pub struct Builder<'a> {
    phys: &'a dyn Phys,
    base: u64,
    next: usize,
    strtab: Strtab,
}

impl<'a> Builder<'a> {
    fn new(phys: &'a dyn Phys, base: u64, strtab: Strtab) -> Self {
        Builder {
            phys,
            base,
            next: TABLE_FIRST,
            strtab,
        }
    }

    /// PA of page `page` of the region.
    pub fn pa(&self, page: usize) -> u64 {
        self.base + (page * PAGE) as u64
    }

    /// IPA of page `page` (when stage 2 maps the region, see
    /// [`Builder::s2_region`]).
    pub fn ipa(&self, page: usize) -> u64 {
        IPA_BASE + (page * PAGE) as u64
    }

    /// The next free table page (zeroed by [`prepare`]).
    pub fn alloc(&mut self) -> usize {
        assert!(self.next < DATA_FIRST, "case uses too many table pages");
        self.next += 1;
        self.next - 1
    }

    pub fn write64(&self, pa: u64, v: u64) {
        self.phys.write64(pa, v)
    }

    fn write_words(&self, pa: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            self.phys.write64(pa + 8 * i as u64, *w);
        }
    }

    /// Writes the STE of `sid`; with a 2-level table also the level 1
    /// descriptor for it (pointing at [`L2_PAGE`], full span).
    pub fn write_ste(&self, sid: u32, ste: &Ste) {
        let at = if self.strtab.two_level {
            let l1 = L1StreamDesc::new(self.pa(L2_PAGE), Strtab::SPLIT);
            self.write_l1(sid, &l1);
            self.pa(L2_PAGE) + (sid as u64 & ((1 << Strtab::SPLIT) - 1)) * Ste::BYTES as u64
        } else {
            self.pa(STRTAB_PAGE) + sid as u64 * Ste::BYTES as u64
        };
        self.write_words(at, &ste.words());
    }

    /// Writes the level 1 descriptor covering `sid`.
    pub fn write_l1(&self, sid: u32, d: &L1StreamDesc) {
        let at = self.pa(STRTAB_PAGE) + (sid as u64 >> Strtab::SPLIT) * 8;
        self.write_words(at, &d.words());
    }

    pub fn write_cd(&self, page: usize, cd: &Cd) {
        self.write_words(self.pa(page), &cd.words());
    }

    fn page_of(&self, table_addr: u64, as_ipa: bool) -> usize {
        let origin = if as_ipa { IPA_BASE } else { self.base };
        (table_addr.wrapping_sub(origin) / PAGE as u64) as usize
    }

    /// Installs raw descriptor `leaf` for `addr` at `level` under the table
    /// at page `root` (a walk over `ia_bits` input bits from level `start`),
    /// creating intermediate tables. `tables_as_ipa`: next-table pointers
    /// are IPAs (stage 1 under nesting).
    #[allow(clippy::too_many_arguments)]
    pub fn map_raw(
        &mut self,
        root: usize,
        ia_bits: u32,
        start: u8,
        addr: u64,
        level: u8,
        leaf: u64,
        tables_as_ipa: bool,
    ) {
        let mut table = root;
        let mut l = start;
        loop {
            let idx = if l == start {
                start_index(addr, l, ia_bits)
            } else {
                level_index(addr, l)
            };
            let slot = self.pa(table) + idx as u64 * 8;
            if l == level {
                self.phys.write64(slot, leaf);
                return;
            }
            let d = S1Desc(self.phys.read64(slot));
            table = if d.is_table(l) {
                self.page_of(d.table_addr(), tables_as_ipa)
            } else {
                let t = self.alloc();
                let a = if tables_as_ipa {
                    self.ipa(t)
                } else {
                    self.pa(t)
                };
                self.phys.write64(slot, S1Desc::table(a).raw());
                t
            };
            l += 1;
        }
    }

    /// A stage 1 leaf at level 3 (T0SZ 25 tables).
    pub fn s1(&mut self, root: usize, va: u64, d: S1Desc, nested: bool) {
        self.map_raw(root, 64 - T0SZ as u32, 1, va, 3, d.raw(), nested);
    }

    /// A stage 2 leaf at level 3 (S2T0SZ 25 tables).
    pub fn s2(&mut self, root: usize, ipa: u64, d: S2Desc) {
        self.map_raw(root, 64 - S2T0SZ as u32, 1, ipa, 3, d.raw(), false);
    }

    /// Stage 2 maps every page from [`TABLE_FIRST`] on at its IPA,
    /// read/write, except `hole`.
    pub fn s2_region(&mut self, root: usize, hole: Option<usize>) {
        for p in TABLE_FIRST..PAGES {
            if Some(p) != hole {
                let (ipa, pa) = (self.ipa(p), self.pa(p));
                self.s2(root, ipa, S2Desc::page(pa, S2Ap::ReadWrite));
            }
        }
    }
}

// ------------------------------------------------------ standard structures

/// A stage 1 CD: 39-bit VA, 4 KiB granule, TTB0 = `ttb0`, IPS 44 bits,
/// faults recorded (R) and aborting (A), ASID [`ASID`].
pub fn cd(ttb0: u64) -> Cd {
    let mut cd = Cd::zeroed();
    cd.set_t0sz(T0SZ)
        .set_tg0(Tg0::Granule4K)
        .set_ir0(Cacheability::WriteBackAlloc)
        .set_or0(Cacheability::WriteBackAlloc)
        .set_sh0(Shareability::InnerShareable)
        .set_epd1(true)
        .set_ips(AddrSize::Bits44)
        .set_aa64(true)
        .set_r(true)
        .set_a(true)
        .set_asid(ASID)
        .set_ttb0(ttb0)
        .set_mair(MAIR)
        .set_v(true);
    cd
}

/// A stage-1-only STE with one CD at `cd_ptr`.
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

/// Adds stage 2 (tables at `s2ttb`, 39-bit IPA from level 1, 44-bit
/// output, AArch64 — never S2AA64 = 0: QEMU asserts — faults recorded).
pub fn with_s2(ste: &mut Ste, s2ttb: u64) {
    ste.set_s2vmid(VMID)
        .set_s2t0sz(S2T0SZ)
        .set_s2sl0(S2SL0)
        .set_s2ir0(Cacheability::WriteBackAlloc)
        .set_s2or0(Cacheability::WriteBackAlloc)
        .set_s2sh0(Shareability::InnerShareable)
        .set_s2tg(Tg0::Granule4K)
        .set_s2ps(AddrSize::Bits44)
        .set_s2aa64(true)
        .set_s2r(true)
        .set_s2ttb(s2ttb);
}

/// A stage-2-only STE.
pub fn s2_ste(s2ttb: u64) -> Ste {
    let mut ste = Ste::zeroed();
    ste.set_config(StreamConfig::S2Trans).set_v(true);
    with_s2(&mut ste, s2ttb);
    ste
}

/// A nested STE: CD at IPA `cd_ipa`, stage 2 at `s2ttb`.
pub fn nested_ste(cd_ipa: u64, s2ttb: u64) -> Ste {
    let mut ste = s1_ste(cd_ipa);
    ste.set_config(StreamConfig::Nested);
    with_s2(&mut ste, s2ttb);
    ste
}

fn s1_page(pa: u64, ap: S1Ap) -> S1Desc {
    S1Desc::page(pa, ap, NORMAL)
}

// ------------------------------------------------------------------ cases

/// The DMA a case issues: 4 bytes (one event record per faulting 4-byte
/// access on QEMU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dma {
    pub iova: u64,
    /// Write (edu: buffer → memory); else read (memory → buffer).
    pub write: bool,
}

impl Dma {
    pub const fn write(iova: u64) -> Self {
        Dma { iova, write: true }
    }
    pub const fn read(iova: u64) -> Self {
        Dma { iova, write: false }
    }
}

/// The one event a faulting case records. `None` fields are not part of
/// the record for that event type (or not compared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub id: EventId,
    /// InputAddr.
    pub input: Option<u64>,
    /// FetchAddr (F_STE_FETCH, F_CD_FETCH, F_WALK_EABT).
    pub fetch: Option<u64>,
    /// IPA (stage 2 translation-class faults).
    pub ipa: Option<u64>,
    pub class: Option<EventClass>,
    pub s2: Option<bool>,
    pub rnw: Option<bool>,
}

impl EventSpec {
    /// A configuration error (C_BAD_*): type and StreamID only.
    pub const fn config(id: EventId) -> Self {
        EventSpec {
            id,
            input: None,
            fetch: None,
            ipa: None,
            class: None,
            s2: None,
            rnw: None,
        }
    }

    /// A translation-class fault at `input` on a write.
    pub const fn xlate(id: EventId, input: u64, class: EventClass, s2: bool) -> Self {
        EventSpec {
            id,
            input: Some(input),
            fetch: None,
            ipa: None,
            class: Some(class),
            s2: Some(s2),
            rnw: Some(false),
        }
    }

    pub const fn read(mut self) -> Self {
        self.rnw = Some(true);
        self
    }

    pub const fn ipa(mut self, ipa: u64) -> Self {
        self.ipa = Some(ipa);
        self
    }

    pub const fn fetch(mut self, pa: u64) -> Self {
        self.fetch = Some(pa);
        self
    }
}

/// What must happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The write lands at `offset` of region page `page`; no event.
    Lands { page: usize, offset: u64 },
    /// Terminated; exactly this event is recorded; nothing lands.
    Event(EventSpec),
    /// Terminated without an event (STE.Config = abort).
    Silent,
}

/// A known departure from the architecture (of QEMU 10.0, or of the
/// model). `does` is what that implementation does instead.
#[derive(Clone, Copy, Debug)]
pub struct Deviation {
    /// What QEMU does instead.
    pub does: Expect,
    /// Why, in one line (with the spec's reference).
    pub why: &'static str,
}

/// One differential case.
pub struct Case {
    /// Test name suffix: the QEMU case is `differential_<name>` (plus
    /// `_qemu_deviation` when [`Case::qemu`] is set), the model test
    /// prints the same name.
    pub name: &'static str,
    /// What it checks, in one line.
    pub what: &'static str,
    pub strtab: Strtab,
    /// Builds the structures; returns the DMA to issue.
    pub build: fn(&mut Builder<'_>) -> Dma,
    /// The architecture's outcome.
    pub spec: Expect,
    /// Where QEMU 10.0 departs from `spec`.
    pub qemu: Option<Deviation>,
    /// Where the project's model (host/smmuv3-model) departs from `spec`:
    /// a model bug, recorded so the differential test names it rather than
    /// fails silently or hides it; fixing the model makes the test fail
    /// until the record is removed.
    pub model: Option<Deviation>,
}

impl Case {
    /// What QEMU is expected to show.
    pub fn qemu_expect(&self) -> Expect {
        self.qemu.map_or(self.spec, |d| d.does)
    }

    /// What the model is expected to show.
    pub fn model_expect(&self) -> Expect {
        self.model.map_or(self.spec, |d| d.does)
    }
}

const fn lands(page: usize, offset: u64) -> Expect {
    Expect::Lands { page, offset }
}

const T_IN: EventClass = EventClass::In;

/// Stage 1 with leaf `d` at [`IOVA`]; `cd_fix` adjusts the standard CD.
fn s1_with(b: &mut Builder<'_>, d: S1Desc, cd_fix: fn(&mut Cd)) {
    let root = b.alloc();
    let cdp = b.alloc();
    b.s1(root, IOVA, d, false);
    let mut c = cd(b.pa(root));
    cd_fix(&mut c);
    b.write_cd(cdp, &c);
    b.write_ste(SID, &s1_ste(b.pa(cdp)));
}

/// Stage 2 with leaf `d` (if any) at IPA [`IOVA`]; `ste_fix` adjusts the
/// standard STE.
fn s2_with(b: &mut Builder<'_>, d: Option<S2Desc>, ste_fix: fn(&mut Ste)) {
    let root = b.alloc();
    if let Some(d) = d {
        b.s2(root, IOVA, d);
    }
    let mut ste = s2_ste(b.pa(root));
    ste_fix(&mut ste);
    b.write_ste(SID, &ste);
}

/// Nested: stage 2 maps the region (except `hole`); stage 1 maps IOVA →
/// `out_ipa`; the CD and the stage 1 tables are reached by IPA.
fn nested_with(b: &mut Builder<'_>, out_ipa: u64, ap: S1Ap, hole: Option<usize>) {
    let s2root = b.alloc();
    let s1root = b.alloc();
    let cdp = b.alloc();
    b.s1(s1root, IOVA, S1Desc::page(out_ipa, ap, NORMAL), true);
    let c = cd(b.ipa(s1root));
    b.write_cd(cdp, &c);
    b.s2_region(s2root, hole);
    b.write_ste(SID, &nested_ste(b.ipa(cdp), b.pa(s2root)));
}

fn nofix<T>(_: &mut T) {}

/// The table. Linear-table cases come first and the 2-level ones last:
/// QEMU 10.0.2 cannot go back from a 2-level to a linear table within one
/// boot (SMMUV3-ON-QEMU.md).
pub static CASES: &[Case] = &[
    // ---------------------------------------------------------- stage 1
    Case {
        name: "s1_page_write",
        what: "stage 1 page: the write lands at the page's PA + offset",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), nofix);
            Dma::write(IOVA + 0x124)
        },
        spec: lands(40, 0x124),
        qemu: None,
        model: None,
    },
    Case {
        name: "s1_block_write",
        what: "stage 1 2 MiB block (level 2 leaf)",
        strtab: Strtab::LINEAR,
        build: |b| {
            let target = b.pa(41) + 0x88;
            let block = target & !((1u64 << level_shift(2)) - 1);
            let root = b.alloc();
            let cdp = b.alloc();
            let d = S1Desc::leaf(block, 2, S1Ap::RwAny, NORMAL);
            b.map_raw(root, 64 - T0SZ as u32, 1, BLOCK_VA, 2, d.raw(), false);
            b.write_cd(cdp, &cd(b.pa(root)));
            b.write_ste(SID, &s1_ste(b.pa(cdp)));
            Dma::write(BLOCK_VA + (target - block))
        },
        spec: lands(41, 0x88),
        qemu: None,
        model: None,
    },
    Case {
        name: "s1_unmapped",
        what: "stage 1: no descriptor for the page → F_TRANSLATION, CLASS IN",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), nofix);
            Dma::write(IOVA + 0x1000)
        },
        spec: Expect::Event(EventSpec::xlate(
            EventId::FTranslation,
            IOVA + 0x1000,
            T_IN,
            false,
        )),
        qemu: None,
        model: None,
    },
    Case {
        name: "s1_readonly_write",
        what: "stage 1 read-only page (AP RO) written → F_PERMISSION",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RoAny), nofix);
            Dma::write(IOVA + 8)
        },
        spec: Expect::Event(EventSpec::xlate(EventId::FPermission, IOVA + 8, T_IN, false)),
        qemu: None,
        model: None,
    },
    Case {
        name: "s1_access_flag",
        what: "stage 1 page with AF = 0 (no HTTU, AFFD = 0) → F_ACCESS",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny).with(S1Desc::AF, 0), nofix);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::xlate(EventId::FAccess, IOVA, T_IN, false)),
        qemu: None,
        model: None,
    },
    Case {
        name: "s1_outside_t0sz",
        what: "stage 1 T0SZ 39 (32 MiB VA): an IOVA at 48 MiB → F_TRANSLATION",
        strtab: Strtab::LINEAR,
        build: |b| {
            let root = b.alloc();
            let cdp = b.alloc();
            let pa = b.pa(40);
            // T0SZ 39: 25-bit VA, the walk starts at level 2.
            b.map_raw(root, 25, 2, IOVA, 3, s1_page(pa, S1Ap::RwAny).raw(), false);
            let mut c = cd(b.pa(root));
            c.set_t0sz(39);
            b.write_cd(cdp, &c);
            b.write_ste(SID, &s1_ste(b.pa(cdp)));
            Dma::write(0x300_0000)
        },
        spec: Expect::Event(EventSpec::xlate(
            EventId::FTranslation,
            0x300_0000,
            T_IN,
            false,
        )),
        qemu: None,
        model: None,
    },
    Case {
        name: "s1_addr_size",
        what: "stage 1 CD.IPS 32 bits, page output at 4 GiB → F_ADDR_SIZE",
        strtab: Strtab::LINEAR,
        build: |b| {
            s1_with(b, s1_page(1 << 32, S1Ap::RwAny), |c| {
                c.set_ips(AddrSize::Bits32);
            });
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::xlate(EventId::FAddrSize, IOVA, T_IN, false)),
        qemu: None,
        model: None,
    },
    Case {
        name: "cd_invalid",
        what: "CD.V = 0 → C_BAD_CD",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), |c| {
                c.set_v(false);
            });
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadCd)),
        qemu: None,
        model: None,
    },
    Case {
        name: "cd_aa32_unsupported",
        what: "CD.AA64 = 0 where IDR0.TTF is AArch64 only → C_BAD_CD",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), |c| {
                c.set_aa64(false);
            });
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadCd)),
        qemu: None,
        model: None,
    },
    Case {
        name: "cd_stall_terminate_only",
        what: "CD.S = 1 where IDR0.STALL_MODEL = terminate only → C_BAD_CD",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), |c| {
                c.set_s(true);
            });
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadCd)),
        qemu: None,
        model: None,
    },
    Case {
        name: "cd_fetch_abort",
        what: "STE.S1ContextPtr where no memory answers → F_CD_FETCH with FetchAddr",
        strtab: Strtab::LINEAR,
        build: |b| {
            b.write_ste(SID, &s1_ste(BAD_PA));
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::FCdFetch).fetch(BAD_PA)),
        qemu: Some(Deviation {
            does: Expect::Event(EventSpec {
                input: Some(BAD_PA),
                fetch: Some(0),
                ..EventSpec::config(EventId::FCdFetch)
            }),
            why: "QEMU 10.0 writes the CD address of F_CD_FETCH into InputAddr (word 2) and leaves FetchAddr (word 3) 0; IHI 0070 7.3.10 puts it in FetchAddr, as QEMU does for F_STE_FETCH",
        }),
        model: None,
    },
    Case {
        name: "s1_walk_abort",
        what: "CD.TTB0 where no memory answers → F_WALK_EABT, S2 = 0, CLASS TT",
        strtab: Strtab::LINEAR,
        build: |b| {
            let cdp = b.alloc();
            b.write_cd(cdp, &cd(BAD_PA));
            b.write_ste(SID, &s1_ste(b.pa(cdp)));
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec {
            id: EventId::FWalkEabt,
            input: Some(IOVA),
            fetch: Some(BAD_PA + 8 * ((IOVA >> 30) & 0x1ff)),
            ipa: None,
            class: Some(EventClass::Ttd),
            s2: Some(false),
            rnw: Some(false),
        }),
        qemu: None,
        model: None,
    },
    Case {
        name: "ste_s1cdmax_ignored_without_substreams",
        what: "STE.S1CDMax = 1 with IDR1.SSIDSIZE = 0: S1CDMax is IGNORED, one CD → lands",
        strtab: Strtab::LINEAR,
        build: |b| {
            let root = b.alloc();
            let cdp = b.alloc();
            let pa = b.pa(40);
            b.s1(root, IOVA, s1_page(pa, S1Ap::RwAny), false);
            b.write_cd(cdp, &cd(b.pa(root)));
            let mut ste = s1_ste(b.pa(cdp));
            ste.set_s1cdmax(1);
            b.write_ste(SID, &ste);
            Dma::write(IOVA + 0x40)
        },
        spec: lands(40, 0x40),
        qemu: Some(Deviation {
            does: Expect::Event(EventSpec::config(EventId::CBadSte)),
            why: "QEMU 10.0 rejects any S1CDMax != 0 (no substream support) instead of ignoring it when SSIDSIZE = 0 (IHI 0070 5.2 S1CDMax)",
        }),
        model: None,
    },
    Case {
        name: "ste_s1stalld_terminate_only",
        what: "STE.S1STALLD = 1 where STALL_MODEL is not 0b00 → C_BAD_STE",
        strtab: Strtab::LINEAR,
        build: |b| {
            let root = b.alloc();
            let cdp = b.alloc();
            let pa = b.pa(40);
            b.s1(root, IOVA, s1_page(pa, S1Ap::RwAny), false);
            b.write_cd(cdp, &cd(b.pa(root)));
            let mut ste = s1_ste(b.pa(cdp));
            ste.set_s1stalld(true);
            b.write_ste(SID, &ste);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadSte)),
        qemu: None,
        model: None,
    },
    Case {
        name: "s1_unrecorded_without_cd_r",
        what: "stage 1 fault with CD.R = 0: terminated, the event is not recorded",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), |c| {
                c.set_r(false);
            });
            Dma::write(IOVA + 0x1000)
        },
        spec: Expect::Silent,
        qemu: None,
        model: None,
    },
    Case {
        name: "s1_epd0",
        what: "CD.EPD0 = 1: TTB0 walks disabled → F_TRANSLATION, CLASS IN",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), |c| {
                c.set_epd0(true);
            });
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::xlate(EventId::FTranslation, IOVA, T_IN, false)),
        qemu: None,
        model: None,
    },
    Case {
        name: "cd_t0sz_below_minimum",
        what: "CD.T0SZ 15 (below 16 for 4 KiB without DS) → C_BAD_CD",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), |c| {
                c.set_t0sz(15);
            });
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadCd)),
        qemu: None,
        model: None,
    },
    Case {
        name: "cd_ttb0_beyond_ips",
        what: "CD.IPS 32 bits with TTB0 at 8 GiB (out of range) → C_BAD_CD",
        strtab: Strtab::LINEAR,
        build: |b| {
            let cdp = b.alloc();
            let mut c = cd(1 << 33);
            c.set_ips(AddrSize::Bits32);
            b.write_cd(cdp, &c);
            b.write_ste(SID, &s1_ste(b.pa(cdp)));
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadCd)),
        qemu: None,
        model: None,
    },
    Case {
        name: "cd_ha_without_httu",
        what: "CD.HA = 1 where IDR0.HTTU = 0 → C_BAD_CD",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), |c| {
                c.set_ha(true);
            });
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadCd)),
        qemu: None,
        model: None,
    },
    // ---------------------------------------------------------- stage 2
    Case {
        name: "s2_page_write",
        what: "stage 2 page: the write lands",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(42);
            s2_with(b, Some(S2Desc::page(pa, S2Ap::ReadWrite)), nofix);
            Dma::write(IOVA + 0x200)
        },
        spec: lands(42, 0x200),
        qemu: None,
        model: None,
    },
    Case {
        name: "s2_unmapped",
        what: "stage 2: no descriptor → F_TRANSLATION, S2, CLASS IN, IPA",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(42);
            s2_with(b, Some(S2Desc::page(pa, S2Ap::ReadWrite)), nofix);
            Dma::write(IOVA + 0x3000)
        },
        spec: Expect::Event(
            EventSpec::xlate(EventId::FTranslation, IOVA + 0x3000, T_IN, true).ipa(IOVA + 0x3000),
        ),
        qemu: None,
        model: None,
    },
    Case {
        name: "s2_readonly_write",
        what: "stage 2 S2AP read-only, written → F_PERMISSION, S2",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(42);
            s2_with(b, Some(S2Desc::page(pa, S2Ap::ReadOnly)), nofix);
            Dma::write(IOVA + 4)
        },
        spec: Expect::Event(
            EventSpec::xlate(EventId::FPermission, IOVA + 4, T_IN, true).ipa(IOVA),
        ),
        qemu: None,
        model: None,
    },
    Case {
        name: "s2_writeonly_read",
        what: "stage 2 S2AP write-only, read → F_PERMISSION, S2, RnW",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(42);
            s2_with(b, Some(S2Desc::page(pa, S2Ap::WriteOnly)), nofix);
            Dma::read(IOVA)
        },
        spec: Expect::Event(
            EventSpec::xlate(EventId::FPermission, IOVA, T_IN, true)
                .read()
                .ipa(IOVA),
        ),
        qemu: None,
        model: None,
    },
    Case {
        name: "s2_access_flag",
        what: "stage 2 page with AF = 0, S2AFFD = 0 → F_ACCESS, S2",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(42);
            let d = S2Desc::page(pa, S2Ap::ReadWrite).with(S2Desc::AF, 0);
            s2_with(b, Some(d), nofix);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::xlate(EventId::FAccess, IOVA, T_IN, true).ipa(IOVA)),
        qemu: None,
        model: None,
    },
    Case {
        name: "s2_outside_s2t0sz",
        what: "stage 2 S2T0SZ 39 (32 MiB IPA): an IPA at 48 MiB → F_TRANSLATION, S2",
        strtab: Strtab::LINEAR,
        build: |b| {
            let root = b.alloc();
            let pa = b.pa(42);
            // S2T0SZ 39, S2SL0 0: a 16-entry level 2 table.
            let d = S2Desc::page(pa, S2Ap::ReadWrite).raw();
            b.map_raw(root, 25, 2, IOVA, 3, d, false);
            let mut ste = s2_ste(b.pa(root));
            ste.set_s2t0sz(39).set_s2sl0(0);
            b.write_ste(SID, &ste);
            Dma::write(0x300_0000)
        },
        spec: Expect::Event(
            EventSpec::xlate(EventId::FTranslation, 0x300_0000, T_IN, true).ipa(0x300_0000),
        ),
        qemu: None,
        model: None,
    },
    Case {
        name: "s2_addr_size",
        what: "stage 2 S2PS 32 bits (S2T0SZ 32), page output at 4 GiB → F_ADDR_SIZE, S2",
        strtab: Strtab::LINEAR,
        build: |b| {
            let root = b.alloc();
            // A 32-bit IPA: the input size stays within S2PS, so only the
            // descriptor's output is out of range (QEMU also requires
            // S2T0SZ >= 64 - S2PS, which the spec does not; not tested).
            let d = S2Desc::page(1 << 32, S2Ap::ReadWrite).raw();
            b.map_raw(root, 32, 1, IOVA, 3, d, false);
            let mut ste = s2_ste(b.pa(root));
            ste.set_s2t0sz(32).set_s2ps(AddrSize::Bits32);
            b.write_ste(SID, &ste);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::xlate(EventId::FAddrSize, IOVA, T_IN, true).ipa(IOVA)),
        qemu: None,
        model: None,
    },
    Case {
        name: "ste_s2_bad_start_level",
        what: "S2T0SZ 25 starting at level 2 would need 512 concatenated tables → C_BAD_STE",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(42);
            s2_with(b, Some(S2Desc::page(pa, S2Ap::ReadWrite)), |s| {
                s.set_s2sl0(0);
            });
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadSte)),
        qemu: None,
        model: None,
    },
    Case {
        name: "s2_unrecorded_without_s2r",
        what: "stage 2 fault with STE.S2R = 0: terminated, the event is not recorded",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(42);
            s2_with(b, Some(S2Desc::page(pa, S2Ap::ReadWrite)), |s| {
                s.set_s2r(false);
            });
            Dma::write(IOVA + 0x3000)
        },
        spec: Expect::Silent,
        qemu: None,
        model: None,
    },
    Case {
        name: "ste_s2s_terminate_only",
        what: "STE.S2S = 1 where IDR0.STALL_MODEL = terminate only → C_BAD_STE",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(42);
            s2_with(b, Some(S2Desc::page(pa, S2Ap::ReadWrite)), |s| {
                s.set_s2s(true);
            });
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadSte)),
        qemu: None,
        model: None,
    },
    Case {
        name: "ste_s2ttb_beyond_s2ps",
        what: "STE.S2PS 32 bits (S2T0SZ 32) with S2TTB at 8 GiB → C_BAD_STE",
        strtab: Strtab::LINEAR,
        build: |b| {
            let mut ste = s2_ste(1 << 33);
            ste.set_s2t0sz(32).set_s2ps(AddrSize::Bits32);
            b.write_ste(SID, &ste);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadSte)),
        qemu: None,
        model: None,
    },
    // ---------------------------------------------------------- nested
    Case {
        name: "nested_write",
        what: "nested: CD, TTB0 and stage 1 output are IPAs; the write lands",
        strtab: Strtab::LINEAR,
        build: |b| {
            let out = b.ipa(43);
            nested_with(b, out, S1Ap::RwAny, None);
            Dma::write(IOVA + 0x10)
        },
        spec: lands(43, 0x10),
        qemu: None,
        model: None,
    },
    Case {
        name: "nested_s1_unmapped",
        what: "nested: stage 1 has no descriptor → F_TRANSLATION, S2 = 0, CLASS IN",
        strtab: Strtab::LINEAR,
        build: |b| {
            let out = b.ipa(43);
            nested_with(b, out, S1Ap::RwAny, None);
            Dma::write(IOVA + 0x5000)
        },
        spec: Expect::Event(EventSpec::xlate(
            EventId::FTranslation,
            IOVA + 0x5000,
            T_IN,
            false,
        )),
        qemu: None,
        model: None,
    },
    Case {
        name: "nested_s2_unmapped_output",
        what: "nested: stage 1 output IPA not mapped at stage 2 → F_TRANSLATION, S2, CLASS IN",
        strtab: Strtab::LINEAR,
        build: |b| {
            nested_with(b, IPA_BASE + 0x80_0000, S1Ap::RwAny, None);
            Dma::write(IOVA)
        },
        spec: Expect::Event(
            EventSpec::xlate(EventId::FTranslation, IOVA, T_IN, true).ipa(IPA_BASE + 0x80_0000),
        ),
        qemu: None,
        model: None,
    },
    Case {
        name: "nested_s1_readonly_write",
        what: "nested: stage 1 read-only → F_PERMISSION, S2 = 0",
        strtab: Strtab::LINEAR,
        build: |b| {
            let out = b.ipa(43);
            nested_with(b, out, S1Ap::RoAny, None);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::xlate(EventId::FPermission, IOVA, T_IN, false)),
        qemu: None,
        model: None,
    },
    Case {
        name: "nested_s2_fault_on_cd",
        what: "nested: the CD's IPA is not mapped at stage 2 → F_TRANSLATION, S2, CLASS CD",
        strtab: Strtab::LINEAR,
        build: |b| {
            let out = b.ipa(43);
            // nested_with allocates stage 2 root, stage 1 root, then the CD.
            nested_with(b, out, S1Ap::RwAny, Some(TABLE_FIRST + 2));
            Dma::write(IOVA)
        },
        spec: Expect::Event(
            EventSpec::xlate(EventId::FTranslation, IOVA, EventClass::Cd, true)
                .ipa(IPA_BASE + ((TABLE_FIRST + 2) * PAGE) as u64),
        ),
        qemu: Some(Deviation {
            does: Expect::Event(
            EventSpec::xlate(EventId::FTranslation, IOVA, EventClass::Cd, true)
                .ipa(IPA_BASE + ((TABLE_FIRST + 2) * PAGE) as u64)
                .read(),
            ),
            why: "QEMU 10.0 sets RnW = 1 (the table fetch) on a CLASS CD stage 2 fault; IHI 0070 7.3.12 F_TRANSLATION: RnW gives the input transaction's access (a write)",
        }),
        model: None,
    },
    Case {
        name: "nested_s2_fault_on_walk",
        what: "nested: stage 1's root table IPA not mapped at stage 2 → F_TRANSLATION, S2, CLASS TT",
        strtab: Strtab::LINEAR,
        build: |b| {
            let out = b.ipa(43);
            nested_with(b, out, S1Ap::RwAny, Some(TABLE_FIRST + 1));
            Dma::write(IOVA)
        },
        spec: Expect::Event(
            EventSpec::xlate(EventId::FTranslation, IOVA, EventClass::Ttd, true)
                .ipa(IPA_BASE + ((TABLE_FIRST + 1) * PAGE) as u64),
        ),
        qemu: Some(Deviation {
            does: Expect::Event(
            EventSpec::xlate(EventId::FTranslation, IOVA, EventClass::Ttd, true)
                .ipa(IPA_BASE + ((TABLE_FIRST + 1) * PAGE) as u64)
                .read(),
            ),
            why: "QEMU 10.0 sets RnW = 1 (the table fetch) on a CLASS TT stage 2 fault; IHI 0070 7.3.12 F_TRANSLATION: RnW gives the input transaction's access (a write)",
        }),
        model: None,
    },
    Case {
        name: "nested_s2_readonly_output_write",
        what: "nested: stage 2 maps the output IPA read-only → F_PERMISSION, S2, CLASS IN, IPA",
        strtab: Strtab::LINEAR,
        build: |b| {
            let out = b.ipa(43);
            nested_with(b, out, S1Ap::RwAny, None);
            // Replace the output page's stage 2 descriptor (stage 2 root is
            // the first table page).
            let (ipa, pa) = (b.ipa(43), b.pa(43));
            b.s2(TABLE_FIRST, ipa, S2Desc::page(pa, S2Ap::ReadOnly));
            Dma::write(IOVA + 0x20)
        },
        spec: Expect::Event(
            EventSpec::xlate(EventId::FPermission, IOVA + 0x20, T_IN, true)
                .ipa(IPA_BASE + (43 * PAGE) as u64),
        ),
        qemu: None,
        model: None,
    },
    // ---------------------------------------------------- stream config
    Case {
        name: "ste_invalid",
        what: "STE.V = 0 → C_BAD_STE",
        strtab: Strtab::LINEAR,
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), nofix);
            let mut ste = Ste::zeroed();
            ste.set_config(StreamConfig::Bypass);
            b.write_ste(SID, &ste);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadSte)),
        qemu: None,
        model: None,
    },
    Case {
        name: "ste_abort",
        what: "STE.Config = abort: terminated, no event",
        strtab: Strtab::LINEAR,
        build: |b| {
            let mut ste = Ste::zeroed();
            ste.set_config(StreamConfig::Abort).set_v(true);
            b.write_ste(SID, &ste);
            Dma::write(IOVA)
        },
        spec: Expect::Silent,
        qemu: None,
        model: None,
    },
    Case {
        name: "ste_reserved_config",
        what: "STE.Config = 0b001: reserved, behaves as 0b000 (IHI 0070 5.2 Config): terminated, no event",
        strtab: Strtab::LINEAR,
        build: |b| {
            let mut ste = Ste::zeroed();
            ste.set_field(Ste::CONFIG, 0b001).set_v(true);
            b.write_ste(SID, &ste);
            Dma::write(IOVA)
        },
        spec: Expect::Silent,
        qemu: None,
        model: None,
    },
    Case {
        name: "sid_beyond_linear_table",
        what: "linear table of 16 STEs (LOG2SIZE 4), StreamID 0x10 → C_BAD_STREAMID",
        strtab: Strtab {
            two_level: false,
            log2size: 4,
            at: None,
        },
        build: |b| {
            let pa = b.pa(40);
            s1_with(b, s1_page(pa, S1Ap::RwAny), nofix);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadStreamId)),
        qemu: None,
        model: None,
    },
    Case {
        name: "ste_fetch_abort",
        what: "STRTAB_BASE where no memory answers → F_STE_FETCH with FetchAddr",
        strtab: Strtab {
            two_level: false,
            log2size: 6,
            at: Some(BAD_PA),
        },
        build: |_| Dma::write(IOVA),
        spec: Expect::Event(
            EventSpec::config(EventId::FSteFetch).fetch(BAD_PA + SID as u64 * Ste::BYTES as u64),
        ),
        qemu: None,
        model: None,
    },
    // ------------------------------------- 2-level stream table (keep last)
    Case {
        name: "two_level_write",
        what: "2-level stream table (SPLIT 6): stage 1 write lands",
        strtab: Strtab::TWO_LEVEL,
        build: |b| {
            let pa = b.pa(44);
            s1_with(b, s1_page(pa, S1Ap::RwAny), nofix);
            Dma::write(IOVA + 0x300)
        },
        spec: lands(44, 0x300),
        qemu: None,
        model: None,
    },
    Case {
        name: "two_level_span_zero",
        what: "2-level: the level 1 descriptor has Span 0 → C_BAD_STREAMID",
        strtab: Strtab::TWO_LEVEL,
        build: |b| {
            let pa = b.pa(44);
            s1_with(b, s1_page(pa, S1Ap::RwAny), nofix);
            let mut l1 = L1StreamDesc::new(b.pa(L2_PAGE), Strtab::SPLIT);
            l1.set_span(0);
            b.write_l1(SID, &l1);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadStreamId)),
        qemu: None,
        model: None,
    },
    Case {
        name: "two_level_sid_beyond_span",
        what: "2-level: Span 1 (one STE), StreamID[5:0] = 16 → C_BAD_STREAMID",
        strtab: Strtab::TWO_LEVEL,
        build: |b| {
            let pa = b.pa(44);
            s1_with(b, s1_page(pa, S1Ap::RwAny), nofix);
            let mut l1 = L1StreamDesc::new(b.pa(L2_PAGE), Strtab::SPLIT);
            l1.set_span(1);
            b.write_l1(SID, &l1);
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadStreamId)),
        qemu: Some(Deviation {
            does: Expect::Event(EventSpec::config(EventId::CBadSte)),
            why: "QEMU 10.0 does not check StreamID[SPLIT-1:0] against L1STD.Span: it fetches an STE past the level 2 table (here V = 0: C_BAD_STE); IHI 0070 7.3.2 C_BAD_STREAMID condition 2d",
        }),
        model: None,
    },
    Case {
        name: "two_level_ste_invalid",
        what: "2-level: the level 2 STE has V = 0 → C_BAD_STE",
        strtab: Strtab::TWO_LEVEL,
        build: |b| {
            b.write_ste(SID, &Ste::zeroed());
            Dma::write(IOVA)
        },
        spec: Expect::Event(EventSpec::config(EventId::CBadSte)),
        qemu: None,
        model: None,
    },
];

// ------------------------------------------------------------- the driver

/// Why programming the SMMU failed (a runner bug or a broken SMMU).
pub type Error = &'static str;

const POLL: u32 = 100_000;

fn wait(cond: impl Fn() -> bool, why: Error) -> Result<(), Error> {
    for _ in 0..POLL {
        if cond() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(why)
}

/// Writes CR0 and waits until CR0ACK shows it (IHI 0070 6.3.9).
fn write_cr0<M: Mmio>(m: &M, v: u32) -> Result<(), Error> {
    m.write32(regs::CR0.offset(), v);
    wait(
        || m.read32(regs::CR0ACK.offset()) == v,
        "CR0ACK never matched CR0",
    )
}

/// Queues `cmds`, rings CMDQ_PROD, waits until the SMMU consumed them and
/// checks CMDQ_CONS.ERR and GERROR. `prod` is the runner's PROD.
fn commands<M: Mmio>(
    m: &M,
    phys: &dyn Phys,
    base: u64,
    prod: &mut QueuePtr,
    cmds: &[Command],
) -> Result<(), Error> {
    let q = base + (CMDQ_PAGE * PAGE) as u64;
    for c in cmds {
        let at = q + prod.entry_offset(CMDQ_ENTRY_BYTES) as u64;
        for (i, w) in c.words().iter().enumerate() {
            phys.write64(at + 8 * i as u64, *w);
        }
        *prod = prod.advance(1);
    }
    m.write32(regs::CMDQ_PROD.offset(), prod.raw());
    let p = *prod;
    wait(
        || {
            let cons = m.read32(regs::CMDQ_CONS.offset());
            p.is_empty(QueuePtr::from_raw(CMDQ_LOG2, cons))
                || CmdqError::from_cons(cons) != Ok(CmdqError::None)
        },
        "command queue not consumed",
    )?;
    let cons = m.read32(regs::CMDQ_CONS.offset());
    if CmdqError::from_cons(cons) != Ok(CmdqError::None) {
        return Err("CMDQ_CONS.ERR set");
    }
    if m.read32(regs::GERROR.offset()) != m.read32(regs::GERRORN.offset()) {
        return Err("GERROR active");
    }
    Ok(())
}

/// Resets the SMMU to a known state for `case`: disables it (GBPA abort),
/// zeroes the region, programs the stream table and queues, builds the
/// case's structures, invalidates every cached configuration and
/// translation, and enables translation. Returns the DMA to issue.
///
/// Programs only what the architecture requires, in its order: CR0 changes
/// are waited on through CR0ACK, GBPA through UPDATE; the *_IRQ_CFG0 MSI
/// addresses (UNKNOWN at reset) are cleared; interrupts are off (the
/// runners poll the event queue).
pub fn prepare<M: Mmio>(m: &M, phys: &dyn Phys, base: u64, case: &Case) -> Result<Dma, Error> {
    prepare_with(m, phys, base, case.strtab, case.build)
}

/// [`prepare`] with an explicit stream table and builder.
pub fn prepare_with<M: Mmio>(
    m: &M,
    phys: &dyn Phys,
    base: u64,
    strtab: Strtab,
    build: fn(&mut Builder<'_>) -> Dma,
) -> Result<Dma, Error> {
    write_cr0(m, 0)?;
    wait(
        || !m.read_reg(regs::GBPA).is_set(GBPA::UPDATE),
        "GBPA.UPDATE stuck",
    )?;
    m.write_reg(regs::GBPA, GBPA::UPDATE::SET + GBPA::ABORT::SET);
    wait(
        || !m.read_reg(regs::GBPA).is_set(GBPA::UPDATE),
        "GBPA.UPDATE stuck",
    )?;
    for pa in (0..REGION_SIZE as u64).step_by(8) {
        phys.write64(base + pa, 0);
    }
    m.write32(regs::IRQ_CTRL.offset(), 0);
    wait(
        || m.read32(regs::IRQ_CTRLACK.offset()) == 0,
        "IRQ_CTRLACK never cleared",
    )?;
    m.write64(regs::GERROR_IRQ_CFG0.offset(), 0);
    m.write64(regs::EVENTQ_IRQ_CFG0.offset(), 0);
    m.write_reg(
        regs::CR1,
        CR1::QUEUE_IC::WriteBack
            + CR1::QUEUE_OC::WriteBack
            + CR1::QUEUE_SH::InnerShareable
            + CR1::TABLE_IC::WriteBack
            + CR1::TABLE_OC::WriteBack
            + CR1::TABLE_SH::InnerShareable,
    );
    // RECINVSID: C_BAD_STREAMID is recorded (IHI 0070 7.3.2).
    m.write_reg(regs::CR2, CR2::RECINVSID::SET);
    let fmt = if strtab.two_level {
        STRTAB_BASE_CFG::FMT::TwoLevel + STRTAB_BASE_CFG::SPLIT.val(Strtab::SPLIT)
    } else {
        STRTAB_BASE_CFG::FMT::Linear
    };
    m.write_reg(
        regs::STRTAB_BASE_CFG,
        fmt + STRTAB_BASE_CFG::LOG2SIZE.val(strtab.log2size as u32),
    );
    let st = strtab.at.unwrap_or(base + (STRTAB_PAGE * PAGE) as u64);
    m.write_reg64(regs::STRTAB_BASE, strtab_base(st, true));
    let cmdq = base + (CMDQ_PAGE * PAGE) as u64;
    let evtq = base + (EVTQ_PAGE * PAGE) as u64;
    m.write64(regs::CMDQ_BASE.offset(), queue_base(cmdq, CMDQ_LOG2, true));
    m.write32(regs::CMDQ_PROD.offset(), 0);
    m.write32(regs::CMDQ_CONS.offset(), 0);
    m.write64(
        regs::EVENTQ_BASE.offset(),
        queue_base(evtq, EVTQ_LOG2, true),
    );
    m.write32(regs::EVENTQ_PROD.offset(), 0);
    m.write32(regs::EVENTQ_CONS.offset(), 0);
    let queues = CR0::CMDQEN::SET.value | CR0::EVTQEN::SET.value;
    write_cr0(m, queues)?;

    let mut b = Builder::new(phys, base, strtab);
    let dma = build(&mut b);

    let mut prod = QueuePtr::new(CMDQ_LOG2);
    commands(
        m,
        phys,
        base,
        &mut prod,
        &[
            Command::cfgi_all(),
            Command::tlbi_nsnh_all(),
            Command::sync(SyncCs::None),
        ],
    )?;
    write_cr0(m, queues | CR0::SMMUEN::SET.value)?;
    Ok(dma)
}

/// Builder of the QEMU runner's loader: edu's DMA buffer can only be filled
/// by DMA, so before each case edu reads the pattern from [`LOADER_PAGE`]
/// through a stage 2 mapping at [`LOADER_IOVA`] (same stream table format
/// as the case, so QEMU never goes back from 2-level to linear).
pub fn loader(b: &mut Builder<'_>) -> Dma {
    let root = b.alloc();
    let pa = b.pa(LOADER_PAGE);
    b.s2(root, LOADER_IOVA, S2Desc::page(pa, S2Ap::ReadOnly));
    b.write_ste(SID, &s2_ste(b.pa(root)));
    Dma::read(LOADER_IOVA)
}

/// The loader's source page (a table page no loader tables reach).
pub const LOADER_PAGE: usize = DATA_FIRST - 1;
pub const LOADER_IOVA: u64 = 0x10_0000;

/// The stream table the loader uses before `case`.
pub fn loader_strtab(case: &Case) -> Strtab {
    if case.strtab.two_level {
        Strtab::TWO_LEVEL
    } else {
        Strtab::LINEAR
    }
}

/// The 4 bytes a case's write carries (unique per case, never 0).
pub fn pattern(index: usize) -> u32 {
    0xD1F0_0000 | index as u32
}

/// What a runner saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed {
    /// Byte offset in the region where the pattern was found.
    pub landed: Option<u64>,
    /// Event records read (at most 4 kept).
    pub events: [Option<Event>; 4],
    pub n_events: usize,
    pub gerror: u32,
}

/// Reads the event queue, and scans the region (after the queues) for the
/// pattern.
pub fn observe<M: Mmio>(m: &M, phys: &dyn Phys, base: u64, pattern: u32) -> Observed {
    let mut o = Observed {
        gerror: m.read32(regs::GERROR.offset()) ^ m.read32(regs::GERRORN.offset()),
        ..Observed::default()
    };
    let prod = QueuePtr::from_raw(EVTQ_LOG2, m.read32(regs::EVENTQ_PROD.offset()));
    let mut cons = QueuePtr::from_raw(EVTQ_LOG2, m.read32(regs::EVENTQ_CONS.offset()));
    let q = base + (EVTQ_PAGE * PAGE) as u64;
    while !prod.is_empty(cons) && o.n_events < 1 << EVTQ_LOG2 {
        let at = q + cons.entry_offset(EVENTQ_ENTRY_BYTES) as u64;
        let mut w = [0u64; 4];
        for (i, x) in w.iter_mut().enumerate() {
            *x = phys.read64(at + 8 * i as u64);
        }
        if o.n_events < o.events.len() {
            o.events[o.n_events] = Some(Event::from_words(w));
        }
        o.n_events += 1;
        cons = cons.advance(1);
    }
    m.write32(
        regs::EVENTQ_CONS.offset(),
        cons.with_overflow(prod.overflow()).raw(),
    );
    let first = (TABLE_FIRST * PAGE) as u64;
    for off in (first..REGION_SIZE as u64).step_by(8) {
        let w = phys.read64(base + off);
        if w as u32 == pattern {
            o.landed = Some(off);
            break;
        }
        if (w >> 32) as u32 == pattern {
            o.landed = Some(off + 4);
            break;
        }
    }
    o
}

/// Whether `o` is `e`. Err says what differs.
pub fn judge(e: &Expect, o: &Observed) -> Result<(), &'static str> {
    if o.gerror != 0 {
        return Err("a global error is active");
    }
    match e {
        Expect::Lands { page, offset } => {
            if o.n_events != 0 {
                return Err("an event was recorded");
            }
            match o.landed {
                Some(at) if at == (*page * PAGE) as u64 + offset => Ok(()),
                Some(_) => Err("landed at the wrong address"),
                None => Err("did not land"),
            }
        }
        Expect::Silent => {
            if o.landed.is_some() {
                return Err("landed");
            }
            if o.n_events != 0 {
                return Err("an event was recorded");
            }
            Ok(())
        }
        Expect::Event(s) => {
            if o.landed.is_some() {
                return Err("landed");
            }
            if o.n_events != 1 {
                return Err("not exactly one event");
            }
            let Some(ev) = o.events[0] else {
                return Err("no event");
            };
            event_matches(s, &ev)
        }
    }
}

fn event_matches(s: &EventSpec, ev: &Event) -> Result<(), &'static str> {
    if ev.event_id() != Ok(s.id) {
        return Err("event type");
    }
    if ev.sid() != SID {
        return Err("StreamID");
    }
    if ev.ssv() {
        return Err("SSV set");
    }
    if s.input.is_some_and(|a| ev.input_addr() != a) {
        return Err("InputAddr");
    }
    if s.fetch.is_some_and(|a| ev.fetch_addr() != a) {
        return Err("FetchAddr");
    }
    if s.ipa.is_some_and(|a| ev.ipa() != a & !(GRANULE_SIZE - 1)) {
        return Err("IPA");
    }
    if s.class.is_some_and(|c| ev.class() != Ok(c)) {
        return Err("CLASS");
    }
    if s.s2.is_some_and(|x| ev.s2() != x) {
        return Err("S2");
    }
    if s.rnw.is_some_and(|x| ev.rnw() != x) {
        return Err("RnW");
    }
    Ok(())
}

// ---------------------------------------------------------------- printing

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Lands { page, offset } => {
                write!(f, "lands at region+{:#x}", (*page * PAGE) as u64 + offset)
            }
            Expect::Silent => f.write_str("terminated, no event"),
            Expect::Event(s) => {
                f.write_str(s.id.name())?;
                if let Some(a) = s.input {
                    write!(f, " in={a:#x}")?;
                }
                if let Some(a) = s.fetch {
                    write!(f, " fetch={a:#x}")?;
                }
                if let Some(a) = s.ipa {
                    write!(f, " ipa={:#x}", a & !(GRANULE_SIZE - 1))?;
                }
                if let Some(c) = s.class {
                    write!(f, " class={}", class_name(c))?;
                }
                if let Some(x) = s.s2 {
                    write!(f, " s2={}", x as u8)?;
                }
                if let Some(x) = s.rnw {
                    write!(f, " rnw={}", x as u8)?;
                }
                Ok(())
            }
        }
    }
}

fn class_name(c: EventClass) -> &'static str {
    match c {
        EventClass::Cd => "CD",
        EventClass::Ttd => "TT",
        EventClass::In => "IN",
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.landed {
            Some(at) => write!(f, "lands at region+{at:#x}")?,
            None => f.write_str("nothing landed")?,
        }
        write!(f, "; {} event(s)", self.n_events)?;
        for ev in self.events.iter().flatten() {
            match ev.event_id() {
                Ok(id) => write!(f, " [{}", id.name())?,
                Err(_) => write!(f, " [type {:#x}", ev.raw_event_id())?,
            }
            write!(
                f,
                " sid={:#x} in={:#x} fetch={:#x} ipa={:#x} class={} s2={} rnw={}]",
                ev.sid(),
                ev.input_addr(),
                ev.fetch_addr(),
                ev.ipa(),
                ev.class().map_or("?", class_name),
                ev.s2() as u8,
                ev.rnw() as u8
            )?;
        }
        if self.gerror != 0 {
            write!(f, "; GERROR active {:#x}", self.gerror)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_twenty_cases_with_unique_names_two_level_last() {
        assert!(CASES.len() >= 20);
        for (i, a) in CASES.iter().enumerate() {
            for b in &CASES[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
        let first_two = CASES.iter().position(|c| c.strtab.two_level).unwrap();
        assert!(CASES[first_two..].iter().all(|c| c.strtab.two_level));
    }
}
