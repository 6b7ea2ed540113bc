//! The PASID table: one 64-bit word per PASID, two intrusive FIFO lists
//! threaded through it (free, defunct), and per-VM counters.
//!
//! A PASID's life: Free(g) → Allocated(owner, g) → Defunct(owner, g) →
//! Free(g + 1). `alloc` pops the head of the free list and `mark_drained`
//! pushes to its tail, so the PASID handed out is always the one freed
//! longest ago (its old life's stragglers have had the most time to die).
//! `free` (and `owner_died`) push to the tail of the defunct list;
//! iommu-server takes its head (`next_defunct`), unbinds and drains every
//! bind of it, then `mark_drained` moves exactly that head to the free list.
//! Every operation but `owner_died` is O(1); `owner_died` scans the table
//! once (it is rare, and its caller is waiting for all of them anyway).
//!
//! Nothing here makes a system call: the interface layer (`crate::idl`)
//! posts the notification to iommu-server.

use pasid_alloc_api::{Pasid, PasidAllocError as E, PasidGen, PasidHandle, PasidOwner, PasidUsage};
use userlib::TaskId;

/// The widest PASID space (PCIe PASIDs are 20 bits; so is SMMUv3's
/// SSIDSIZE at most).
pub const MAX_BITS: u8 = 20;
/// Tasks the per-VM counters cover (the kernel's limit).
pub const MAX_TASKS: usize = 64;
/// PASID generations are 26 bits (the top of every entry) and wrap after
/// 2^26 drains of one PASID. Because `alloc` takes the least recently
/// freed PASID, that is 2^26 × (free PASIDs) allocations; even a PASID
/// cycled alone (every other PASID held) needs 2^26 alloc + free + drain
/// rounds, each a CMD_SYNC-completed drain in iommu-server: at a very fast
/// 10 µs per round that is over 11 minutes of nothing but cycling one
/// PASID, and a stale handle aliases only if its holder keeps it unused
/// that whole time and then is given the same PASID again.
pub const GEN_BITS: u32 = 26;
pub const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
/// A defunct entry keeps the owner's task index and the low
/// `OWNER_LOW_BITS` of its generation; the rest is recovered from
/// the newest generation of that index seen by `alloc`
/// ([`PasidTable::owner`]). Exact while every PASID held (allocated or
/// defunct) by any incarnation of an index is within `OWNER_WINDOW`
/// generations of the newest: `alloc` refuses (NoSpace) a caller that
/// would break that, until the old incarnations' PASIDs are drained — so
/// the recovered owner is always the exact incarnation, never a stale one.
pub const OWNER_LOW_BITS: u32 = 10;
pub const OWNER_WINDOW: u32 = 1 << OWNER_LOW_BITS;

const STATE_MASK: u64 = 0b11;
const FREE: u64 = 0;
const ALLOCATED: u64 = 1;
const DEFUNCT: u64 = 2;
const LINK_SHIFT: u32 = 2;
const LINK_MASK: u64 = (1 << MAX_BITS) - 1;
const OWNER_SHIFT: u32 = 2;
const INDEX_SHIFT: u32 = 22;
const INDEX_MASK: u64 = (1 << TaskId::INDEX_BITS) - 1;
const LOW_SHIFT: u32 = 28;
const LOW_MASK: u64 = (OWNER_WINDOW - 1) as u64;
const GEN_SHIFT: u32 = 64 - GEN_BITS;
/// The end of a list. PASID 0 is reserved and never on a list, so 0 can
/// mean "none".
const NIL: u32 = 0;

const _: () = assert!(LOW_SHIFT + OWNER_LOW_BITS == GEN_SHIFT);
const _: () = assert!(OWNER_SHIFT + 32 <= GEN_SHIFT);
const _: () = assert!(INDEX_SHIFT == LINK_SHIFT + MAX_BITS as u32);
const _: () = assert!(LOW_SHIFT == INDEX_SHIFT + TaskId::INDEX_BITS);

/// One PASID in one 64-bit word, a union by state (`[1:0]`), the
/// generation always in `[63:38]`:
///
/// | state     | `[37:28]`          | `[27:22]`   | `[21:2]` |
/// |-----------|--------------------|-------------|----------|
/// | Free      | 0                  | 0           | next free|
/// | Allocated | `[37:34]` 0; `[33:2]` owner: the 32-bit TaskId, exact |||
/// | Defunct   | owner gen, low 10  | owner index | next     |
///
/// Free and defunct PASIDs are on a list and have no owner; allocated
/// ones have the owner and no list; defunct ones need both, and keep the
/// owner as index + low generation bits (see [`OWNER_LOW_BITS`]).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Entry(u64);

impl Entry {
    fn free(link: u32, gen: u32) -> Self {
        Entry(FREE | (link as u64 & LINK_MASK) << LINK_SHIFT | Self::g(gen))
    }
    fn allocated(owner: TaskId, gen: u32) -> Self {
        Entry(ALLOCATED | (owner.0 as u64) << OWNER_SHIFT | Self::g(gen))
    }
    fn defunct(link: u32, owner: TaskId, gen: u32) -> Self {
        Entry(
            DEFUNCT
                | (link as u64 & LINK_MASK) << LINK_SHIFT
                | (owner.index() as u64 & INDEX_MASK) << INDEX_SHIFT
                | (owner.generation().0 as u64 & LOW_MASK) << LOW_SHIFT
                | Self::g(gen),
        )
    }
    fn g(gen: u32) -> u64 {
        ((gen & GEN_MASK) as u64) << GEN_SHIFT
    }
    fn state(self) -> u64 {
        self.0 & STATE_MASK
    }
    /// Next on its list (free or defunct; 0 when allocated).
    fn link(self) -> u32 {
        match self.state() {
            ALLOCATED => NIL,
            _ => ((self.0 >> LINK_SHIFT) & LINK_MASK) as u32,
        }
    }
    fn gen(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32 & GEN_MASK
    }
    fn with_link(self, link: u32) -> Self {
        Entry(self.0 & !(LINK_MASK << LINK_SHIFT) | (link as u64 & LINK_MASK) << LINK_SHIFT)
    }
    /// The owner's index and low generation bits (defunct), or its exact
    /// id (allocated).
    fn owner_exact(self) -> TaskId {
        TaskId((self.0 >> OWNER_SHIFT) as u32)
    }
    fn owner_index(self) -> usize {
        match self.state() {
            ALLOCATED => self.owner_exact().index(),
            _ => ((self.0 >> INDEX_SHIFT) & INDEX_MASK) as usize,
        }
    }
    fn owner_low(self) -> u32 {
        ((self.0 >> LOW_SHIFT) & LOW_MASK) as u32
    }
}

impl core::fmt::Debug for Entry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.state() {
            FREE => write!(f, "Free(gen {}, next {})", self.gen(), self.link()),
            ALLOCATED => write!(
                f,
                "Allocated(owner {:#x}, gen {})",
                self.owner_exact().0,
                self.gen()
            ),
            DEFUNCT => write!(
                f,
                "Defunct(owner index {} gen low {}, gen {}, next {})",
                self.owner_index(),
                self.owner_low(),
                self.gen(),
                self.link()
            ),
            _ => write!(f, "?({:#x})", self.0),
        }
    }
}

/// Every PASID held (allocated or defunct) by any incarnation of one task
/// index: how many, and the lowest owner generation among them since the
/// count was last zero (a lower bound, which is all the window needs).
/// `newest` is the newest generation of the index `alloc` has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    pub newest: u32,
    pub held: u32,
    pub floor: u32,
}

/// Bytes of state per PASID (the table's word).
pub const BYTES_PER_PASID: usize = core::mem::size_of::<Entry>();

/// A FIFO threaded through the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct List {
    pub head: u32,
    pub tail: u32,
    pub len: u32,
}

/// One task's PASIDs (counted for the incarnation `id`; an older
/// incarnation's PASIDs are reclaimed by `owner_died`, not counted against
/// the new one's quota).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmCount {
    pub id: u32,
    pub allocated: u32,
    pub defunct: u32,
}

/// The static configuration (app.toml: `[pasids]`).
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    /// The space is PASIDs `1 .. 2^bits` (0 is reserved). At most
    /// [`MAX_BITS`]; app.toml's check keeps it at or below the SMMU's
    /// SSIDSIZE.
    pub bits: u8,
    /// PASIDs (allocated or defunct) one VM incarnation may hold.
    pub quota: u32,
    /// PASIDs to put at the head of the free list, in this order (the rest
    /// follow in ascending order). Empty in the image; a test uses it to
    /// place PASIDs in chosen CD table leaves. Out-of-space or repeated
    /// entries are refused by [`PasidTable::new`].
    pub first: &'a [u32],
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `bits` above [`MAX_BITS`].
    TooWide,
    /// The storage is not exactly `2^bits` entries.
    WrongStorage,
    /// `first` names PASID 0, one outside the space, or one twice.
    BadFirst,
}

/// The PASID table over caller-provided storage (sized at build time:
/// `[Entry; 1 << PASID_BITS]` in the image).
pub struct PasidTable<'t> {
    table: &'t mut [Entry],
    free: List,
    defunct: List,
    quota: u32,
    vms: [VmCount; MAX_TASKS],
    lineage: [Lineage; MAX_TASKS],
}

/// What [`PasidTable::free`] / [`PasidTable::owner_died`] ask the interface
/// layer to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// Nothing became defunct.
    No,
    /// A PASID became defunct: tell iommu-server.
    IommuServer,
}

impl<'t> PasidTable<'t> {
    /// The storage size `bits` needs.
    pub const fn entries(bits: u8) -> usize {
        1 << bits
    }

    /// Builds the table: every PASID but 0 free in generation 0, `first`
    /// at the head of the free list.
    pub fn new(storage: &'t mut [Entry], cfg: &Config<'_>) -> Result<Self, ConfigError> {
        if cfg.bits > MAX_BITS {
            return Err(ConfigError::TooWide);
        }
        let n = Self::entries(cfg.bits);
        if storage.len() != n {
            return Err(ConfigError::WrongStorage);
        }
        for e in storage.iter_mut() {
            *e = Entry::default();
        }
        let mut t = PasidTable {
            table: storage,
            free: List::default(),
            defunct: List::default(),
            quota: cfg.quota,
            vms: [VmCount::default(); MAX_TASKS],
            lineage: [Lineage::default(); MAX_TASKS],
        };
        // A PASID is marked (state DEFUNCT, transiently) once placed, so a
        // repeat in `first` is seen and the ascending pass skips it.
        for &p in cfg.first {
            if p == 0 || p as usize >= n || t.table[p as usize].state() != FREE {
                return Err(ConfigError::BadFirst);
            }
            t.table[p as usize] = Entry::defunct(NIL, TaskId(0), 0);
            t.push_free(p);
        }
        for p in 1..n as u32 {
            if t.table[p as usize].state() == FREE {
                t.push_free(p);
            }
        }
        // Every entry placed from `first` carries the transient mark: clear it.
        for &p in cfg.first {
            let e = t.table[p as usize];
            t.table[p as usize] = Entry::free(e.link(), 0);
        }
        Ok(t)
    }

    /// PASIDs in the space, 0 included (`2^bits`).
    pub fn space(&self) -> u32 {
        self.table.len() as u32
    }

    pub fn quota(&self) -> u32 {
        self.quota
    }

    fn push_free(&mut self, p: u32) {
        let e = self.table[p as usize];
        self.table[p as usize] = e.with_link(NIL);
        Self::push(&mut self.free, self.table, p);
    }

    fn push(list: &mut List, table: &mut [Entry], p: u32) {
        if list.tail == NIL {
            list.head = p;
        } else {
            let t = list.tail as usize;
            table[t] = table[t].with_link(p);
        }
        list.tail = p;
        list.len += 1;
    }

    fn pop(list: &mut List, table: &[Entry]) -> Option<u32> {
        let p = list.head;
        if p == NIL {
            return None;
        }
        list.head = table[p as usize].link();
        if list.head == NIL {
            list.tail = NIL;
        }
        list.len -= 1;
        Some(p)
    }

    /// The counters of `id`'s incarnation (a newer incarnation of the same
    /// index starts from zero).
    fn vm(&mut self, id: TaskId) -> &mut VmCount {
        let v = &mut self.vms[id.index() % MAX_TASKS];
        if v.id != id.0 {
            *v = VmCount {
                id: id.0,
                allocated: 0,
                defunct: 0,
            };
        }
        v
    }

    /// The counters of `owner` if they are still its incarnation's.
    fn vm_if_current(&mut self, owner: TaskId) -> Option<&mut VmCount> {
        let v = &mut self.vms[owner.index() % MAX_TASKS];
        (v.id == owner.0).then_some(v)
    }

    fn index(&self, pasid: u32) -> Result<usize, E> {
        if pasid == 0 || pasid as usize >= self.table.len() {
            return Err(E::Invalid);
        }
        Ok(pasid as usize)
    }

    fn handle(p: u32, gen: u32) -> PasidHandle {
        PasidHandle {
            pasid: Pasid(p),
            generation: PasidGen(gen),
        }
    }

    /// Allocates the least recently freed PASID to `caller`, within its
    /// quota (allocated and defunct PASIDs both count: a freed PASID stops
    /// counting only once drained).
    pub fn alloc(&mut self, caller: TaskId) -> Result<PasidHandle, E> {
        // Every PASID any incarnation of this index holds stays within
        // OWNER_WINDOW generations of the newest, so a defunct entry's
        // owner is recovered exactly. Breaking that takes OWNER_WINDOW
        // restarts of one task while an old incarnation's PASID waits for
        // its drain: the newcomer waits too (NoSpace) until it is drained.
        let g = caller.generation().0;
        let l = self.lineage[caller.index() % MAX_TASKS];
        let (newest, floor) = if l.held == 0 {
            (l.newest.max(g), g)
        } else {
            (l.newest.max(g), l.floor.min(g))
        };
        if newest - floor >= OWNER_WINDOW {
            return Err(E::NoSpace);
        }
        let quota = self.quota;
        let v = self.vm(caller);
        if v.allocated + v.defunct >= quota {
            return Err(E::NoSpace);
        }
        let p = Self::pop(&mut self.free, self.table).ok_or(E::NoSpace)?;
        let gen = self.table[p as usize].gen();
        self.table[p as usize] = Entry::allocated(caller, gen);
        self.vm(caller).allocated += 1;
        self.lineage[caller.index() % MAX_TASKS] = Lineage {
            newest,
            held: l.held + 1,
            floor,
        };
        Ok(Self::handle(p, gen))
    }

    /// Gives `h` up: Defunct at once (no new bind), back to the pool only
    /// after [`PasidTable::mark_drained`]. Invalid: PASID 0 or outside the
    /// space; NotFound: not allocated in that generation (never allocated,
    /// already freed, or a stale handle); NotPermitted: another task's.
    pub fn free(&mut self, caller: TaskId, h: PasidHandle) -> Result<Notify, E> {
        let i = self.index(h.pasid.0)?;
        let e = self.table[i];
        if e.state() != ALLOCATED || e.gen() != h.generation.0 {
            return Err(E::NotFound);
        }
        if e.owner_exact() != caller {
            return Err(E::NotPermitted);
        }
        self.make_defunct(h.pasid.0, e);
        // Test-only mutant (explore-mutant-i3): back to the pool at once,
        // without waiting for iommu-server's drain and `mark_drained`.
        #[cfg(feature = "explore-mutant-i3")]
        let _ = self.mark_drained(Self::handle(h.pasid.0, e.gen()));
        Ok(Notify::IommuServer)
    }

    fn make_defunct(&mut self, p: u32, e: Entry) {
        let owner = e.owner_exact();
        self.table[p as usize] = Entry::defunct(NIL, owner, e.gen());
        Self::push(&mut self.defunct, self.table, p);
        if let Some(v) = self.vm_if_current(owner) {
            v.allocated -= 1;
            v.defunct += 1;
        }
    }

    /// The exact owner of an allocated or defunct entry (TaskId(0) for a
    /// free one). A defunct entry keeps the index and low generation bits;
    /// the owner is the incarnation with those low bits at most
    /// OWNER_WINDOW − 1 below the newest generation of the index, and
    /// `alloc` keeps every held PASID's owner within that window.
    pub fn owner(&self, e: Entry) -> TaskId {
        match e.state() {
            ALLOCATED => e.owner_exact(),
            DEFUNCT => {
                let i = e.owner_index();
                let newest = self.lineage[i % MAX_TASKS].newest;
                let back = newest.wrapping_sub(e.owner_low()) & (OWNER_WINDOW - 1);
                TaskId::new(i, userlib::Generation(newest - back))
            }
            _ => TaskId(0),
        }
    }

    /// Who holds `pasid` now.
    pub fn owner_of(&self, pasid: u32) -> Result<PasidOwner, E> {
        let e = self.table[self.index(pasid)?];
        let (owner, generation) = (self.owner(e), PasidGen(e.gen()));
        Ok(match e.state() {
            ALLOCATED => PasidOwner::Allocated { owner, generation },
            DEFUNCT => PasidOwner::Defunct { owner, generation },
            _ => PasidOwner::Free,
        })
    }

    /// `caller`'s counts and the quota.
    pub fn usage(&mut self, caller: TaskId) -> PasidUsage {
        let quota = self.quota;
        let v = *self.vm(caller);
        PasidUsage {
            allocated: v.allocated,
            defunct: v.defunct,
            quota,
        }
    }

    /// The oldest defunct PASID (not consumed).
    pub fn next_defunct(&self) -> Option<PasidHandle> {
        let p = self.defunct.head;
        (p != NIL).then(|| Self::handle(p, self.table[p as usize].gen()))
    }

    /// Every bind of the oldest defunct PASID `h` is gone and drained: it
    /// returns to the tail of the free list with its generation bumped.
    /// NotFound: not defunct in that generation (already drained, or a
    /// stale handle); Invalid: PASID 0 or outside the space, or a defunct
    /// PASID other than the oldest (iommu-server drains what
    /// `next_defunct` names, in order).
    pub fn mark_drained(&mut self, h: PasidHandle) -> Result<(), E> {
        let i = self.index(h.pasid.0)?;
        let e = self.table[i];
        if e.state() != DEFUNCT || e.gen() != h.generation.0 {
            return Err(E::NotFound);
        }
        if self.defunct.head != h.pasid.0 {
            return Err(E::Invalid);
        }
        Self::pop(&mut self.defunct, self.table);
        let owner = self.owner(e);
        if let Some(v) = self.vm_if_current(owner) {
            v.defunct -= 1;
        }
        let l = &mut self.lineage[owner.index() % MAX_TASKS];
        l.held -= 1;
        self.table[i] = Entry::free(NIL, e.gen().wrapping_add(1));
        Self::push(&mut self.free, self.table, h.pasid.0);
        Ok(())
    }

    /// The task `vm` (that incarnation) went away — and with it every
    /// older incarnation of the same task: every PASID they hold becomes
    /// defunct, in ascending order. Returns how many (already defunct ones
    /// are not counted again).
    ///
    /// "Older" is sound because generations never wrap (docs/kernel.md,
    /// "Generations"): a lower generation of the same index is an earlier
    /// incarnation, dead once a later one exists. It lets iommu-server's
    /// resync after a death-log overflow name deaths it never saw
    /// (docs/pasids.md, "Owner death").
    pub fn owner_died(&mut self, vm: TaskId) -> (u32, Notify) {
        let gone = |o: TaskId| o.index() == vm.index() && o.generation() <= vm.generation();
        let mut n = 0;
        for p in 1..self.table.len() as u32 {
            let e = self.table[p as usize];
            if e.state() == ALLOCATED && gone(e.owner_exact()) {
                self.make_defunct(p, e);
                n += 1;
            }
        }
        let v = &mut self.vms[vm.index() % MAX_TASKS];
        if v.id != 0 && gone(TaskId(v.id)) {
            // The incarnation is gone: its defunct PASIDs still drain, but
            // nothing counts against a next incarnation.
            *v = VmCount::default();
        }
        (
            n,
            if n > 0 {
                Notify::IommuServer
            } else {
                Notify::No
            },
        )
    }

    // ------------------------------------------------------------ checks

    /// The whole state, for tests and the harness's state dumps.
    pub fn dump(&self) -> Dump<'_> {
        Dump(self)
    }

    /// The free list, head first (tests).
    pub fn free_order(&self) -> impl Iterator<Item = u32> + '_ {
        let mut p = self.free.head;
        core::iter::from_fn(move || {
            (p != NIL).then(|| {
                let q = p;
                p = self.table[p as usize].link();
                q
            })
        })
    }

    /// The defunct list, oldest first (tests).
    pub fn defunct_order(&self) -> impl Iterator<Item = u32> + '_ {
        let mut p = self.defunct.head;
        core::iter::from_fn(move || {
            (p != NIL).then(|| {
                let q = p;
                p = self.table[p as usize].link();
                q
            })
        })
    }

    /// Checks the table's own consistency: every PASID but 0 is on exactly
    /// the list its state says (free or defunct) or on none (allocated);
    /// list lengths and the counters of current incarnations match.
    pub fn check(&self) -> Result<(), &'static str> {
        let n = self.table.len();
        let (mut free, mut defunct) = (0u32, 0u32);
        for p in self.free_order() {
            if self.table[p as usize].state() != FREE {
                return Err("a non-free PASID on the free list");
            }
            free += 1;
            if free as usize > n {
                return Err("the free list loops");
            }
        }
        for p in self.defunct_order() {
            if self.table[p as usize].state() != DEFUNCT {
                return Err("a non-defunct PASID on the defunct list");
            }
            defunct += 1;
            if defunct as usize > n {
                return Err("the defunct list loops");
            }
        }
        let count = |s| self.table.iter().skip(1).filter(|e| e.state() == s).count() as u32;
        if free != count(FREE) || free != self.free.len {
            return Err("free list and free entries disagree");
        }
        if defunct != count(DEFUNCT) || defunct != self.defunct.len {
            return Err("defunct list and defunct entries disagree");
        }
        if self.table.first().is_some_and(|e| *e != Entry::default()) {
            return Err("PASID 0 changed");
        }
        for (i, l) in self.lineage.iter().enumerate() {
            let mut held = 0;
            for e in self.table.iter().skip(1) {
                if e.state() == FREE || e.owner_index() != i {
                    continue;
                }
                held += 1;
                let g = self.owner(*e).generation().0;
                if e.state() == ALLOCATED && (g < l.floor || l.newest - g >= OWNER_WINDOW) {
                    return Err("an owner outside its index's generation window");
                }
            }
            if held != l.held {
                return Err("a task index's held count disagrees with the table");
            }
        }
        for v in self.vms.iter().filter(|v| v.id != 0) {
            let mine = |s| {
                self.table
                    .iter()
                    .filter(|e| e.state() == s && self.owner(**e).0 == v.id)
                    .count() as u32
            };
            if mine(ALLOCATED) != v.allocated || mine(DEFUNCT) != v.defunct {
                return Err("a VM's counters disagree with the table");
            }
        }
        Ok(())
    }
}

/// The full state as text (`{:?}`): lists, counters and every table word
/// that is not zero — equal text, equal state.
pub struct Dump<'a>(&'a PasidTable<'a>);

impl core::fmt::Debug for Dump<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let t = self.0;
        writeln!(
            f,
            "free {:?} defunct {:?} quota {}",
            t.free, t.defunct, t.quota
        )?;
        for (i, v) in t.vms.iter().enumerate().filter(|(_, v)| v.id != 0) {
            writeln!(f, "vm {i}: {v:?}")?;
        }
        for (p, e) in t.table.iter().enumerate() {
            if e.state() == DEFUNCT && p != 0 {
                // The owner as recovered (exact: see `PasidTable::owner`).
                writeln!(
                    f,
                    "{p:#x}: Defunct(owner {:#x}, gen {}, next {})",
                    t.owner(*e).0,
                    e.gen(),
                    e.link()
                )?;
            } else if *e != Entry::default() {
                writeln!(f, "{p:#x}: {e:?}")?;
            }
        }
        Ok(())
    }
}
