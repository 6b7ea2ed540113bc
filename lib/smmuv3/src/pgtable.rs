//! VMSAv8-64 translation table descriptors for the 4 KiB granule, stage 1
//! and stage 2, under the architecture's names: what a driver needs to
//! build I/O page tables and what the model needs to walk them.
//!
//! Levels 0..=3; a level-3 entry with bits\[1:0\] = 0b11 is a page, at levels
//! 0..=2 0b11 is a table and 0b01 a block (level 1: 1 GiB, level 2: 2 MiB;
//! level 0 blocks do not exist with 4 KiB granules without FEAT_LPA2).

use crate::entry::EntryField;

/// log2 of the 4 KiB granule.
pub const GRANULE_SHIFT: u32 = 12;
/// The 4 KiB granule.
pub const GRANULE_SIZE: u64 = 1 << GRANULE_SHIFT;
/// Address bits resolved per level.
pub const BITS_PER_LEVEL: u32 = 9;
/// Descriptors per table.
pub const ENTRIES_PER_TABLE: usize = 1 << BITS_PER_LEVEL;
/// Bytes per table.
pub const TABLE_SIZE: usize = GRANULE_SIZE as usize;
/// The deepest level.
pub const LAST_LEVEL: u8 = 3;

/// log2 of the bytes one descriptor maps at `level` (39, 30, 21, 12).
pub const fn level_shift(level: u8) -> u32 {
    GRANULE_SHIFT + BITS_PER_LEVEL * (LAST_LEVEL - level) as u32
}

/// Bytes one descriptor maps at `level`.
pub const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

/// Index of `addr` in a (non-concatenated) table at `level`.
pub const fn level_index(addr: u64, level: u8) -> usize {
    ((addr >> level_shift(level)) as usize) & (ENTRIES_PER_TABLE - 1)
}

/// Stage 1 starting level for an input size of `64 - t0sz` bits (4K
/// granule, no FEAT_LPA2/TTST): T0SZ 16..=24 start at level 0, 25..=33 at
/// level 1, 34..=39 at level 2. `None` outside 16..=39.
pub const fn s1_start_level(t0sz: u8) -> Option<u8> {
    if t0sz < 16 || t0sz > 39 {
        return None;
    }
    let ia_bits = 64 - t0sz as u32;
    // Levels needed to resolve ia_bits - 12 bits, 9 per level.
    let levels = (ia_bits - GRANULE_SHIFT).div_ceil(BITS_PER_LEVEL);
    Some((4 - levels) as u8)
}

/// Stage 2 starting level from STE.S2SL0 (4K granule): 0 → level 2,
/// 1 → level 1, 2 → level 0. `None` for 3 (reserved without FEAT_TTST).
pub const fn s2_start_level(s2sl0: u8) -> Option<u8> {
    match s2sl0 {
        0 => Some(2),
        1 => Some(1),
        2 => Some(0),
        _ => None,
    }
}

/// STE.S2SL0 for a stage 2 walk starting at `level` (inverse of
/// [`s2_start_level`]).
pub const fn s2sl0_for_level(level: u8) -> Option<u8> {
    match level {
        2 => Some(0),
        1 => Some(1),
        0 => Some(2),
        _ => None,
    }
}

/// Number of concatenated tables at the stage 2 starting level for an IPA
/// of `64 - s2t0sz` bits starting at `level` (1..=16), or `None` if the
/// combination is invalid (the architecture allows at most 16).
pub const fn s2_concatenated_tables(s2t0sz: u8, level: u8) -> Option<u32> {
    if s2t0sz > 64 || level > LAST_LEVEL {
        return None;
    }
    let ia_bits = 64 - s2t0sz as u32;
    let top = level_shift(level) + BITS_PER_LEVEL; // bits one table resolves up to
    if ia_bits <= level_shift(level) {
        return None; // the start level is too deep for this size
    }
    if ia_bits <= top {
        return Some(1);
    }
    let extra = ia_bits - top;
    if extra > 4 {
        None
    } else {
        Some(1 << extra)
    }
}

/// Index of `addr` at the starting level of a walk over `ia_bits` input
/// bits, where the starting table may be larger than 512 entries (stage 2
/// concatenation) or smaller (stage 1 with a short T0SZ).
pub const fn start_index(addr: u64, level: u8, ia_bits: u32) -> usize {
    let shift = level_shift(level);
    let bits = ia_bits - shift;
    ((addr >> shift) & ((1u64 << bits) - 1)) as usize
}

/// The output address bits \[47:12\] shared by all descriptor kinds.
const OA: EntryField = EntryField::new(0, 12, 36);

macro_rules! desc_common {
    ($t:ident) => {
        impl $t {
            /// bit 0: valid.
            pub const VALID: EntryField = EntryField::new(0, 0, 1);
            /// bit 1: table (levels 0..=2) or page (level 3); 0 = block.
            pub const TABLE: EntryField = EntryField::new(0, 1, 1);
            /// Output address \[47:12\] (next-level table or output page).
            pub const OUTPUT_ADDR: EntryField = OA;

            /// An invalid (all-zero) descriptor.
            pub const INVALID: $t = $t(0);

            /// The raw 64-bit value.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// Valid bit.
            pub const fn is_valid(self) -> bool {
                self.0 & Self::VALID.mask() != 0
            }

            /// A next-level table descriptor (valid, bit 1 set, level < 3).
            pub const fn is_table(self, level: u8) -> bool {
                level < LAST_LEVEL && self.is_valid() && self.0 & Self::TABLE.mask() != 0
            }

            /// A block (levels 1..=2) or page (level 3) descriptor.
            pub const fn is_leaf(self, level: u8) -> bool {
                if !self.is_valid() {
                    return false;
                }
                let bit1 = self.0 & Self::TABLE.mask() != 0;
                match level {
                    LAST_LEVEL => bit1,
                    1 | 2 => !bit1,
                    _ => false,
                }
            }

            /// Next-level table address of a table descriptor.
            pub const fn table_addr(self) -> u64 {
                self.0 & OA.mask()
            }

            /// Output address of a block/page descriptor at `level`.
            pub const fn output_addr(self, level: u8) -> u64 {
                let low = (1u64 << level_shift(level)) - 1;
                self.0 & OA.mask() & !low
            }

            /// Access flag (AF, bit 10).
            pub const fn af(self) -> bool {
                self.0 & Self::AF.mask() != 0
            }

            /// Shareability (SH, bits \[9:8\]).
            pub const fn sh(self) -> u8 {
                Self::SH.extract(self.0) as u8
            }

            /// Contiguous hint (bit 52).
            pub const fn contiguous(self) -> bool {
                self.0 & Self::CONTIGUOUS.mask() != 0
            }

            /// A table descriptor pointing at the table at `next` (4 KiB
            /// aligned).
            pub const fn table(next: u64) -> Self {
                debug_assert!(next & !OA.mask() == 0);
                $t(next | Self::VALID.mask() | Self::TABLE.mask())
            }

            /// Returns the descriptor with field `f` set to `v`.
            pub const fn with(self, f: EntryField, v: u64) -> Self {
                $t(f.insert(self.0, v))
            }
        }
    };
}

spec_enum! {
    /// Stage 1 AP\[2:1\]: bit 2 = read-only, bit 1 = EL0 (unprivileged)
    /// access allowed.
    pub enum S1Ap as "AP[2:1]" {
        /// Read/write, privileged only.
        RwPriv = 0b00,
        /// Read/write, any privilege.
        RwAny = 0b01,
        /// Read-only, privileged only.
        RoPriv = 0b10,
        /// Read-only, any privilege.
        RoAny = 0b11,
    }
}

impl S1Ap {
    /// Writes are allowed.
    pub const fn writable(self) -> bool {
        matches!(self, S1Ap::RwPriv | S1Ap::RwAny)
    }
    /// Unprivileged accesses are allowed.
    pub const fn unprivileged(self) -> bool {
        matches!(self, S1Ap::RwAny | S1Ap::RoAny)
    }
}

spec_enum! {
    /// Stage 2 S2AP\[1:0\]: bit 6 = read allowed, bit 7 = write allowed.
    pub enum S2Ap as "S2AP" {
        None = 0b00,
        ReadOnly = 0b01,
        WriteOnly = 0b10,
        ReadWrite = 0b11,
    }
}

impl S2Ap {
    /// Reads are allowed.
    pub const fn readable(self) -> bool {
        matches!(self, S2Ap::ReadOnly | S2Ap::ReadWrite)
    }
    /// Writes are allowed.
    pub const fn writable(self) -> bool {
        matches!(self, S2Ap::WriteOnly | S2Ap::ReadWrite)
    }
}

/// Shareability field values of descriptors (SH\[1:0\]).
pub mod sh {
    pub const NON_SHAREABLE: u8 = 0b00;
    pub const OUTER_SHAREABLE: u8 = 0b10;
    pub const INNER_SHAREABLE: u8 = 0b11;
}

/// MAIR attribute bytes for the stage 1 AttrIndx entries a driver usually
/// programs into CD.MAIR.
pub mod mair {
    /// Device-nGnRnE.
    pub const DEVICE_NGNRNE: u8 = 0x00;
    /// Device-nGnRE.
    pub const DEVICE_NGNRE: u8 = 0x04;
    /// Normal, inner/outer non-cacheable.
    pub const NORMAL_NC: u8 = 0x44;
    /// Normal, inner/outer write-back read/write-allocate.
    pub const NORMAL_WB: u8 = 0xff;

    /// A MAIR value holding `attrs[i]` at index i.
    pub const fn mair(attrs: [u8; 8]) -> u64 {
        let mut v = 0u64;
        let mut i = 0;
        while i < 8 {
            v |= (attrs[i] as u64) << (8 * i);
            i += 1;
        }
        v
    }
}

/// Stage 2 MemAttr\[3:0\] values (without FWB).
pub mod s2_memattr {
    /// Device-nGnRE.
    pub const DEVICE_NGNRE: u8 = 0b0001;
    /// Normal, inner/outer non-cacheable.
    pub const NORMAL_NC: u8 = 0b0101;
    /// Normal, inner/outer write-back.
    pub const NORMAL_WB: u8 = 0b1111;
}

/// A stage 1 descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct S1Desc(pub u64);

desc_common!(S1Desc);

impl S1Desc {
    /// AttrIndx\[2:0\]: index into MAIR.
    pub const ATTRINDX: EntryField = EntryField::new(0, 2, 3);
    /// NS.
    pub const NS: EntryField = EntryField::new(0, 5, 1);
    /// AP\[2:1\].
    pub const AP: EntryField = EntryField::new(0, 6, 2);
    /// SH\[1:0\].
    pub const SH: EntryField = EntryField::new(0, 8, 2);
    /// AF: Access flag.
    pub const AF: EntryField = EntryField::new(0, 10, 1);
    /// nG: not global (entry is tagged with the ASID).
    pub const NG: EntryField = EntryField::new(0, 11, 1);
    /// DBM: dirty bit modifier.
    pub const DBM: EntryField = EntryField::new(0, 51, 1);
    /// Contiguous hint.
    pub const CONTIGUOUS: EntryField = EntryField::new(0, 52, 1);
    /// PXN: privileged execute-never.
    pub const PXN: EntryField = EntryField::new(0, 53, 1);
    /// UXN (XN): unprivileged execute-never.
    pub const UXN: EntryField = EntryField::new(0, 54, 1);
    /// Table descriptors: PXNTable.
    pub const PXNTABLE: EntryField = EntryField::new(0, 59, 1);
    /// Table descriptors: UXNTable (XNTable).
    pub const UXNTABLE: EntryField = EntryField::new(0, 60, 1);
    /// Table descriptors: APTable\[1:0\].
    pub const APTABLE: EntryField = EntryField::new(0, 61, 2);
    /// Table descriptors: NSTable.
    pub const NSTABLE: EntryField = EntryField::new(0, 63, 1);

    /// A leaf mapping `pa` at `level` (page at level 3, block at 1..=2),
    /// with AF set, the given permissions and MAIR index, inner shareable,
    /// non-global, executable.
    pub const fn leaf(pa: u64, level: u8, ap: S1Ap, attr_indx: u8) -> Self {
        debug_assert!(pa & ((1u64 << level_shift(level)) - 1) == 0);
        debug_assert!(level >= 1 && level <= LAST_LEVEL);
        let kind = if level == LAST_LEVEL {
            Self::VALID.mask() | Self::TABLE.mask()
        } else {
            Self::VALID.mask()
        };
        S1Desc(pa | kind)
            .with(Self::AF, 1)
            .with(Self::NG, 1)
            .with(Self::AP, ap.raw())
            .with(Self::ATTRINDX, attr_indx as u64)
            .with(Self::SH, sh::INNER_SHAREABLE as u64)
    }

    /// A level 3 page descriptor (see [`S1Desc::leaf`]).
    pub const fn page(pa: u64, ap: S1Ap, attr_indx: u8) -> Self {
        Self::leaf(pa, LAST_LEVEL, ap, attr_indx)
    }

    /// AP\[2:1\].
    pub const fn ap(self) -> S1Ap {
        match S1Ap::from_raw(Self::AP.extract(self.0)) {
            Ok(ap) => ap,
            // Two bits, four variants: every value decodes.
            Err(_) => S1Ap::RwPriv,
        }
    }

    /// AttrIndx.
    pub const fn attr_indx(self) -> u8 {
        Self::ATTRINDX.extract(self.0) as u8
    }

    /// nG.
    pub const fn ng(self) -> bool {
        self.0 & Self::NG.mask() != 0
    }

    /// PXN.
    pub const fn pxn(self) -> bool {
        self.0 & Self::PXN.mask() != 0
    }

    /// UXN / XN.
    pub const fn uxn(self) -> bool {
        self.0 & Self::UXN.mask() != 0
    }

    /// Table descriptor APTable.
    pub const fn ap_table(self) -> u8 {
        Self::APTABLE.extract(self.0) as u8
    }

    /// Table descriptor PXNTable.
    pub const fn pxn_table(self) -> bool {
        self.0 & Self::PXNTABLE.mask() != 0
    }

    /// Table descriptor UXNTable.
    pub const fn uxn_table(self) -> bool {
        self.0 & Self::UXNTABLE.mask() != 0
    }
}

/// A stage 2 descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct S2Desc(pub u64);

desc_common!(S2Desc);

impl S2Desc {
    /// MemAttr\[3:0\].
    pub const MEMATTR: EntryField = EntryField::new(0, 2, 4);
    /// S2AP\[1:0\].
    pub const S2AP: EntryField = EntryField::new(0, 6, 2);
    /// SH\[1:0\].
    pub const SH: EntryField = EntryField::new(0, 8, 2);
    /// AF: Access flag.
    pub const AF: EntryField = EntryField::new(0, 10, 1);
    /// Contiguous hint.
    pub const CONTIGUOUS: EntryField = EntryField::new(0, 52, 1);
    /// XN\[1:0\] (bit 54 = XN; bit 53 = XNX's second bit).
    pub const XN: EntryField = EntryField::new(0, 53, 2);

    /// A leaf mapping `pa` at `level`, AF set, normal write-back, inner
    /// shareable, executable.
    pub const fn leaf(pa: u64, level: u8, s2ap: S2Ap) -> Self {
        debug_assert!(pa & ((1u64 << level_shift(level)) - 1) == 0);
        debug_assert!(level >= 1 && level <= LAST_LEVEL);
        let kind = if level == LAST_LEVEL {
            Self::VALID.mask() | Self::TABLE.mask()
        } else {
            Self::VALID.mask()
        };
        S2Desc(pa | kind)
            .with(Self::AF, 1)
            .with(Self::S2AP, s2ap.raw())
            .with(Self::MEMATTR, s2_memattr::NORMAL_WB as u64)
            .with(Self::SH, sh::INNER_SHAREABLE as u64)
    }

    /// A level 3 page descriptor (see [`S2Desc::leaf`]).
    pub const fn page(pa: u64, s2ap: S2Ap) -> Self {
        Self::leaf(pa, LAST_LEVEL, s2ap)
    }

    /// S2AP.
    pub const fn s2ap(self) -> S2Ap {
        match S2Ap::from_raw(Self::S2AP.extract(self.0)) {
            Ok(ap) => ap,
            // Two bits, four variants: every value decodes.
            Err(_) => S2Ap::None,
        }
    }

    /// MemAttr.
    pub const fn memattr(self) -> u8 {
        Self::MEMATTR.extract(self.0) as u8
    }

    /// XN\[1:0\] (non-zero: execution restricted; 0b10 = never).
    pub const fn xn(self) -> u8 {
        Self::XN.extract(self.0) as u8
    }
}

/// Which translation stage a descriptor is for (formats differ in their
/// permission and attribute fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    S1,
    S2,
}

/// Access permissions and type of a mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    /// Executable (otherwise execute-never: XN at stage 2, UXN/PXN at
    /// stage 1).
    pub exec: bool,
    /// Device memory (an MSI doorbell) instead of normal write-back memory.
    pub device: bool,
}

impl Prot {
    pub const RW: Prot = Prot {
        read: true,
        write: true,
        exec: false,
        device: false,
    };
    pub const RO: Prot = Prot {
        read: true,
        write: false,
        exec: false,
        device: false,
    };
    pub const WO: Prot = Prot {
        read: false,
        write: true,
        exec: false,
        device: false,
    };
    /// Wire encoding (the IDL's MapPerms): bit 0 read, 1 write, 2 exec,
    /// 3 device.
    pub const fn bits(self) -> u32 {
        self.read as u32
            | (self.write as u32) << 1
            | (self.exec as u32) << 2
            | (self.device as u32) << 3
    }
    /// Decodes [`Prot::bits`]; None for unknown bits or no access at all.
    pub const fn from_bits(b: u32) -> Option<Prot> {
        if b & !0xf != 0 || b & 3 == 0 {
            return None;
        }
        Some(Prot {
            read: b & 1 != 0,
            write: b & 2 != 0,
            exec: b & 4 != 0,
            device: b & 8 != 0,
        })
    }
}

/// MAIR index of device memory in stage 1 leaves (index 0 is normal
/// write-back): the attribute layout of [`MAIR_DEFAULT`].
pub const MAIR_IDX_DEVICE: u8 = 1;

/// The MAIR every stage 1 context built here uses: attribute 0 normal
/// write-back, 1 Device-nGnRE, 2 normal non-cacheable.
pub const MAIR_DEFAULT: u64 = mair::mair([
    mair::NORMAL_WB,
    mair::DEVICE_NGNRE,
    mair::NORMAL_NC,
    0,
    0,
    0,
    0,
    0,
]);

/// The level 3 (page) descriptor for `out` with `prot` at `stage`.
pub const fn leaf(stage: Stage, out: u64, prot: Prot) -> u64 {
    match stage {
        // Stage 1 cannot express write-only: it becomes read/write. EL0
        // access is allowed (AP[1] = 1) since a device's transactions may
        // be unprivileged.
        Stage::S1 => {
            let ap = if prot.write { S1Ap::RwAny } else { S1Ap::RoAny };
            let idx = if prot.device { MAIR_IDX_DEVICE } else { 0 };
            let d = S1Desc::page(out, ap, idx);
            let xn = !prot.exec as u64;
            d.with(S1Desc::UXN, xn).with(S1Desc::PXN, xn).raw()
        }
        Stage::S2 => {
            let ap = match (prot.read, prot.write) {
                (true, true) => S2Ap::ReadWrite,
                (true, false) => S2Ap::ReadOnly,
                (false, true) => S2Ap::WriteOnly,
                (false, false) => S2Ap::None,
            };
            let mut d = S2Desc::page(out, ap);
            if prot.device {
                d = d.with(S2Desc::MEMATTR, s2_memattr::DEVICE_NGNRE as u64);
            }
            // XN[1:0] = 0b10: execute-never at EL1 and EL0.
            d.with(S2Desc::XN, if prot.exec { 0 } else { 0b10 }).raw()
        }
    }
}

/// The output address and permissions of a level 3 descriptor written by
/// [`leaf`]; None if `raw` is not a valid page descriptor.
pub const fn decode_leaf(stage: Stage, raw: u64) -> Option<(u64, Prot)> {
    let d = S2Desc(raw);
    if !d.is_leaf(LAST_LEVEL) {
        return None;
    }
    let out = d.output_addr(LAST_LEVEL);
    let prot = match stage {
        Stage::S1 => {
            let s1 = S1Desc(raw);
            Prot {
                read: true,
                write: s1.ap().writable(),
                exec: !s1.uxn(),
                device: s1.attr_indx() == MAIR_IDX_DEVICE,
            }
        }
        Stage::S2 => Prot {
            read: d.s2ap().readable(),
            write: d.s2ap().writable(),
            exec: d.xn() == 0,
            device: d.memattr() == s2_memattr::DEVICE_NGNRE,
        },
    };
    Some((out, prot))
}

/// Memory holding translation tables, addressed as the SMMU sees it (a
/// PA, or an IPA for a stage 1 table nested under stage 2): what
/// [`Table`] reads and writes through.
pub trait TableMemory {
    /// The descriptor at `addr` (8-byte aligned, inside a table page this
    /// memory handed out or was given); None if `addr` is not in it.
    fn read(&self, addr: u64) -> Option<u64>;
    /// Writes the descriptor at `addr`; false if `addr` is not in it.
    fn write(&mut self, addr: u64, desc: u64) -> bool;
    /// A zeroed, 4 KiB-aligned table page; None when none is left.
    fn alloc_table(&mut self) -> Option<u64>;
}

/// Why a [`Table`] edit failed (nothing was mapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The address is not page-aligned or outside the input range.
    Range,
    /// A page is already mapped there.
    Mapped,
    /// No page for a next-level table.
    NoTable,
    /// A descriptor on the way is a block, or points outside the memory.
    Foreign,
}

/// A 4 KiB-granule translation table: its root and the level the walk
/// starts at (the root is a single, not concatenated, table). Writes only
/// level 3 pages and table descriptors. The caller orders its writes
/// before the SMMU can walk them (a barrier) and invalidates afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    pub stage: Stage,
    pub root: u64,
    pub start_level: u8,
    /// Input address bits (64 - T0SZ).
    pub ia_bits: u32,
}

impl Table {
    /// A stage 1 table of `64 - t0sz` input bits rooted at `root` (a zeroed
    /// page); None if T0SZ needs concatenation or is out of range.
    pub const fn s1(root: u64, t0sz: u8) -> Option<Self> {
        match s1_start_level(t0sz) {
            Some(start_level) => Some(Self {
                stage: Stage::S1,
                root,
                start_level,
                ia_bits: 64 - t0sz as u32,
            }),
            None => None,
        }
    }

    fn in_range(&self, iova: u64) -> bool {
        iova.is_multiple_of(GRANULE_SIZE) && (self.ia_bits >= 64 || iova >> self.ia_bits == 0)
    }

    fn index(&self, iova: u64, level: u8) -> usize {
        if level == self.start_level {
            start_index(iova, level, self.ia_bits)
        } else {
            level_index(iova, level)
        }
    }

    /// Address of the level 3 descriptor for `iova`, if its tables exist.
    fn find(&self, mem: &impl TableMemory, iova: u64) -> Result<u64, TableError> {
        if !self.in_range(iova) {
            return Err(TableError::Range);
        }
        let mut table = self.root;
        for level in self.start_level..LAST_LEVEL {
            let d = S1Desc(
                mem.read(table + self.index(iova, level) as u64 * 8)
                    .ok_or(TableError::Foreign)?,
            );
            if !d.is_table(level) {
                return Err(if d.is_valid() {
                    TableError::Foreign
                } else {
                    TableError::Range
                });
            }
            table = d.table_addr();
        }
        Ok(table + level_index(iova, LAST_LEVEL) as u64 * 8)
    }

    /// Address of the level 3 descriptor for `iova`, allocating and
    /// linking the missing tables on the way (zeroed by the memory before
    /// they are linked).
    fn slot(&self, mem: &mut impl TableMemory, iova: u64) -> Result<u64, TableError> {
        if !self.in_range(iova) {
            return Err(TableError::Range);
        }
        let mut table = self.root;
        for level in self.start_level..LAST_LEVEL {
            let at = table + self.index(iova, level) as u64 * 8;
            let d = S1Desc(mem.read(at).ok_or(TableError::Foreign)?);
            table = if d.is_table(level) {
                d.table_addr()
            } else if d.is_valid() {
                return Err(TableError::Foreign);
            } else {
                let t = mem.alloc_table().ok_or(TableError::NoTable)?;
                if !mem.write(at, S1Desc::table(t).raw()) {
                    return Err(TableError::Foreign);
                }
                t
            };
        }
        Ok(table + level_index(iova, LAST_LEVEL) as u64 * 8)
    }

    /// Maps the page at `iova` to `out`. Mapped already: [`TableError::Mapped`].
    pub fn map(
        &self,
        mem: &mut impl TableMemory,
        iova: u64,
        out: u64,
        prot: Prot,
    ) -> Result<(), TableError> {
        let at = self.slot(mem, iova)?;
        if mem.read(at).ok_or(TableError::Foreign)? & S1Desc::VALID.mask() != 0 {
            return Err(TableError::Mapped);
        }
        mem.write(at, leaf(self.stage, out, prot));
        Ok(())
    }

    /// Points the page at `iova` at `out` whether or not it was mapped
    /// (a page-table edit); returns the previous mapping.
    pub fn set(
        &self,
        mem: &mut impl TableMemory,
        iova: u64,
        out: u64,
        prot: Prot,
    ) -> Result<Option<(u64, Prot)>, TableError> {
        let at = self.slot(mem, iova)?;
        let old = mem.read(at).ok_or(TableError::Foreign)?;
        mem.write(at, leaf(self.stage, out, prot));
        Ok(decode_leaf(self.stage, old))
    }

    /// Unmaps the page at `iova`; returns what it mapped.
    pub fn unmap(&self, mem: &mut impl TableMemory, iova: u64) -> Option<(u64, Prot)> {
        let at = self.find(mem, iova).ok()?;
        let old = decode_leaf(self.stage, mem.read(at)?)?;
        mem.write(at, 0);
        Some(old)
    }

    /// The mapping of `iova`, if any.
    pub fn lookup(&self, mem: &impl TableMemory, iova: u64) -> Option<(u64, Prot)> {
        let at = self.find(mem, iova).ok()?;
        decode_leaf(self.stage, mem.read(at)?)
    }
}
