//! The IOTLB: successful translations, tagged as the architecture tags
//! them, kept until a matching TLBI (or eviction). Only completed
//! translations are cached, never faults.

use crate::device::Access;
use smmuv3::{CommandKind, TlbiScope};
use std::collections::VecDeque;

/// The translation regime an entry belongs to (its VMID/ASID tagging).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Regime {
    /// StreamWorld NS-EL1: tagged with STE.S2VMID (also for stage-1-only
    /// streams) and, unless global, the ASID. Stage 1 and nested entries.
    El1 { vmid: u16 },
    /// StreamWorld EL2: no ASID.
    El2,
    /// StreamWorld EL2-E2H: ASID-tagged.
    El2E2h,
    /// Stage-2-only entries of a VMID.
    S2 { vmid: u16 },
}

/// Stage 1 permissions of a leaf, with the table attributes and WXN already
/// folded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct S1Perm {
    pub write: bool,
    pub el0: bool,
    pub uxn: bool,
    pub pxn: bool,
    pub pan: bool,
}

impl S1Perm {
    pub fn allows(&self, a: Access) -> bool {
        if !a.privileged && !self.el0 {
            return false;
        }
        if a.instruction {
            return !(if a.privileged { self.pxn } else { self.uxn });
        }
        if a.write && !self.write {
            return false;
        }
        // PAN: privileged data accesses to EL0-accessible pages fault.
        !(a.privileged && self.pan && self.el0)
    }
}

/// Stage 2 permissions of a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct S2Perm {
    pub read: bool,
    pub write: bool,
    pub xn: bool,
}

impl S2Perm {
    pub fn allows(&self, a: Access) -> bool {
        if a.instruction {
            self.read && !self.xn
        } else if a.write {
            self.write
        } else {
            self.read
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct TlbEntry {
    pub regime: Regime,
    /// The ASID tag; `None` for global (nG = 0) or non-ASID regimes.
    pub asid: Option<u16>,
    /// Input (VA, or IPA for stage-2-only) base of the mapping.
    pub in_base: u64,
    pub size_log2: u32,
    /// Output PA of `in_base`.
    pub out_base: u64,
    /// IPA of `in_base` (what a stage 2 fault reports).
    pub ipa_base: u64,
    pub s1: Option<S1Perm>,
    pub s2: Option<S2Perm>,
    /// A stage 2 leaf with Device memory type (S2PTW forbids it for walks
    /// and CD fetches).
    pub s2_device: bool,
}

impl TlbEntry {
    pub fn contains(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.in_base) < (1u64 << self.size_log2)
    }

    fn overlaps(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        let e_end = self.in_base.saturating_add(1u64 << self.size_log2);
        start < e_end && self.in_base < end
    }

    fn in_scope(&self, scope: &TlbiScope, ril: bool) -> bool {
        if ril && scope.tg != 0 {
            let (start, len) = scope.range();
            self.overlaps(start, len)
        } else {
            self.contains(scope.addr)
        }
    }

    /// A stage 1 (or nested, combined) entry.
    fn is_s1(&self) -> bool {
        self.s1.is_some()
    }
}

/// A bounded FIFO of entries.
pub(crate) struct Tlb {
    entries: VecDeque<TlbEntry>,
    capacity: usize,
}

impl Tlb {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry translating `addr` in `regime` for `asid`.
    pub fn lookup(&self, regime: Regime, asid: Option<u16>, addr: u64) -> Option<TlbEntry> {
        self.entries
            .iter()
            .rev()
            .find(|e| {
                e.regime == regime && (e.asid.is_none() || e.asid == asid) && e.contains(addr)
            })
            .copied()
    }

    pub fn insert(&mut self, e: TlbEntry) {
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    /// Applies one TLBI command (other commands are ignored).
    pub fn invalidate(&mut self, cmd: &CommandKind, ril: bool) {
        use CommandKind as K;
        let el1 = |e: &TlbEntry, v: u16| e.regime == Regime::El1 { vmid: v };
        let keep = |e: &TlbEntry| -> bool {
            let hit = match cmd {
                K::TlbiNhAll { vmid } => el1(e, *vmid),
                K::TlbiNhAsid { vmid, asid } => el1(e, *vmid) && e.asid == Some(*asid),
                K::TlbiNhVa { vmid, asid, scope } => {
                    el1(e, *vmid)
                        && (e.asid.is_none() || e.asid == Some(*asid))
                        && e.in_scope(scope, ril)
                }
                K::TlbiNhVaa { vmid, scope } => el1(e, *vmid) && e.in_scope(scope, ril),
                K::TlbiEl2All => matches!(e.regime, Regime::El2 | Regime::El2E2h),
                K::TlbiEl2Asid { asid } => e.regime == Regime::El2E2h && e.asid == Some(*asid),
                K::TlbiEl2Va { asid, scope } => {
                    (e.regime == Regime::El2
                        || (e.regime == Regime::El2E2h
                            && (e.asid.is_none() || e.asid == Some(*asid))))
                        && e.in_scope(scope, ril)
                }
                K::TlbiEl2Vaa { scope } => {
                    matches!(e.regime, Regime::El2 | Regime::El2E2h) && e.in_scope(scope, ril)
                }
                K::TlbiS12Vmall { vmid } => {
                    e.regime == Regime::El1 { vmid: *vmid }
                        || e.regime == Regime::S2 { vmid: *vmid }
                }
                // Stage 2 entries only: combined (nested) entries survive,
                // so nested users must follow with TLBI_NH_ALL/S12_VMALL.
                K::TlbiS2Ipa { vmid, scope } => {
                    e.regime == Regime::S2 { vmid: *vmid } && !e.is_s1() && e.in_scope(scope, ril)
                }
                K::TlbiNsnhAll => matches!(e.regime, Regime::El1 { .. } | Regime::S2 { .. }),
                _ => false,
            };
            !hit
        };
        self.entries.retain(keep);
    }
}

/// Which walk a walk-cache entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalkKey {
    /// Stage 1 tables of a regime, with the ASID for ASID-tagged regimes.
    S1 { regime: Regime, asid: Option<u16> },
    /// Stage 2 tables of a VMID.
    S2 { vmid: u16 },
}

/// A cached table descriptor: the walk of any address in
/// `[in_base, in_base + 2^size_log2)` continues at `table` (level
/// `level + 1`) with the hierarchical attributes collected so far.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalkEntry {
    pub key: WalkKey,
    pub level: u8,
    pub in_base: u64,
    pub size_log2: u32,
    pub table: u64,
    /// Stage 1 APTable/XNTable collected down to here: (no EL0, read-only,
    /// UXN, PXN).
    pub attrs: (bool, bool, bool, bool),
}

impl WalkEntry {
    fn contains(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.in_base) < (1u64 << self.size_log2)
    }

    fn in_scope(&self, scope: &TlbiScope, ril: bool) -> bool {
        if ril && scope.tg != 0 {
            let (start, len) = scope.range();
            let end = start.saturating_add(len);
            let e_end = self.in_base.saturating_add(1u64 << self.size_log2);
            start < e_end && self.in_base < end
        } else {
            self.contains(scope.addr)
        }
    }
}

/// Walk caches of both stages (strict mode `walk_cache`): table
/// descriptors, kept until a TLBI whose scope covers them. Leaf = 1
/// invalidations by address keep them (§4.4: "only cached entries for the
/// last level of translation table walk are required to be invalidated").
pub(crate) struct WalkCache {
    entries: VecDeque<WalkEntry>,
    capacity: usize,
}

impl WalkCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The deepest cached table descriptor on the walk of `addr`.
    pub fn lookup(&self, key: WalkKey, addr: u64) -> Option<WalkEntry> {
        self.entries
            .iter()
            .filter(|e| e.key == key && e.contains(addr))
            .max_by_key(|e| e.level)
            .copied()
    }

    pub fn insert(&mut self, e: WalkEntry) {
        self.entries
            .retain(|o| !(o.key == e.key && o.level == e.level && o.in_base == e.in_base));
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Applies one TLBI command to the walk caches.
    pub fn invalidate(&mut self, cmd: &CommandKind, ril: bool) {
        use CommandKind as K;
        let s1 = |e: &WalkEntry, f: &dyn Fn(Regime, Option<u16>) -> bool| match e.key {
            WalkKey::S1 { regime, asid } => f(regime, asid),
            WalkKey::S2 { .. } => false,
        };
        let s2 = |e: &WalkEntry, v: Option<u16>| match e.key {
            WalkKey::S2 { vmid } => v.is_none_or(|v| v == vmid),
            WalkKey::S1 { .. } => false,
        };
        let el1 = |r: Regime, v: u16| r == Regime::El1 { vmid: v };
        let el2 = |r: Regime| matches!(r, Regime::El2 | Regime::El2E2h);
        let hit = |e: &WalkEntry| -> bool {
            match cmd {
                K::TlbiNhAll { vmid } => s1(e, &|r, _| el1(r, *vmid)),
                K::TlbiNhAsid { vmid, asid } => s1(e, &|r, a| el1(r, *vmid) && a == Some(*asid)),
                K::TlbiNhVa { vmid, asid, scope } => {
                    !scope.leaf
                        && s1(e, &|r, a| el1(r, *vmid) && a == Some(*asid))
                        && e.in_scope(scope, ril)
                }
                K::TlbiNhVaa { vmid, scope } => {
                    !scope.leaf && s1(e, &|r, _| el1(r, *vmid)) && e.in_scope(scope, ril)
                }
                K::TlbiEl2All => s1(e, &|r, _| el2(r)),
                K::TlbiEl2Asid { asid } => s1(e, &|r, a| r == Regime::El2E2h && a == Some(*asid)),
                K::TlbiEl2Va { asid, scope } => {
                    !scope.leaf
                        && s1(e, &|r, a| {
                            r == Regime::El2 || (r == Regime::El2E2h && a == Some(*asid))
                        })
                        && e.in_scope(scope, ril)
                }
                K::TlbiEl2Vaa { scope } => {
                    !scope.leaf && s1(e, &|r, _| el2(r)) && e.in_scope(scope, ril)
                }
                K::TlbiS12Vmall { vmid } => s1(e, &|r, _| el1(r, *vmid)) || s2(e, Some(*vmid)),
                K::TlbiS2Ipa { vmid, scope } => {
                    !scope.leaf && s2(e, Some(*vmid)) && e.in_scope(scope, ril)
                }
                K::TlbiNsnhAll => s1(e, &|r, _| matches!(r, Regime::El1 { .. })) || s2(e, None),
                _ => false,
            }
        };
        self.entries.retain(|e| !hit(e));
    }
}
