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
/// Generations are stored in 26 bits (with state and link in the word)
/// and wrap after 2^26 reuses of one PASID. Because `alloc`
/// takes the least recently freed PASID, that is at least 2^26 × (space − 1)
/// allocations: a stale handle cannot meet its own number and generation
/// again within any realistic uptime.
pub const GEN_BITS: u32 = 26;
pub const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

const STATE_MASK: u64 = 0b11;
const FREE: u64 = 0;
const ALLOCATED: u64 = 1;
const DEFUNCT: u64 = 2;
const LINK_SHIFT: u32 = 2;
const LINK_MASK: u64 = (1 << MAX_BITS) - 1;
const GEN_SHIFT: u32 = 22;
/// The end of a list. PASID 0 is reserved and never on a list, so 0 can
/// mean "none".
const NIL: u32 = 0;

/// One PASID: a word with `[1:0]` state, `[21:2]` next on its list (free
/// or defunct), `[47:22]` generation; and the owner (the raw 32-bit TaskId,
/// index and generation, exact: a TaskId never names two incarnations).
/// Packed to 12 bytes (align 4).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct Entry {
    word: u64,
    owner: u32,
}

impl Entry {
    fn new(state: u64, link: u32, owner: TaskId, gen: u32) -> Self {
        Entry {
            word: state
                | (link as u64 & LINK_MASK) << LINK_SHIFT
                | ((gen & GEN_MASK) as u64) << GEN_SHIFT,
            owner: owner.0,
        }
    }
    fn state(self) -> u64 {
        self.word & STATE_MASK
    }
    fn link(self) -> u32 {
        ((self.word >> LINK_SHIFT) & LINK_MASK) as u32
    }
    fn owner(self) -> TaskId {
        TaskId(self.owner)
    }
    fn gen(self) -> u32 {
        (self.word >> GEN_SHIFT) as u32 & GEN_MASK
    }
    fn with_link(self, link: u32) -> Self {
        Entry {
            word: self.word & !(LINK_MASK << LINK_SHIFT) | (link as u64 & LINK_MASK) << LINK_SHIFT,
            owner: self.owner,
        }
    }
}

impl core::fmt::Debug for Entry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = match self.state() {
            FREE => "Free",
            ALLOCATED => "Allocated",
            DEFUNCT => "Defunct",
            _ => "?",
        };
        write!(
            f,
            "{s}(owner {:#x}, gen {}, next {})",
            self.owner().0,
            self.gen(),
            self.link()
        )
    }
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
        };
        // A PASID is marked (state DEFUNCT, transiently) once placed, so a
        // repeat in `first` is seen and the ascending pass skips it.
        for &p in cfg.first {
            if p == 0 || p as usize >= n || t.table[p as usize].state() != FREE {
                return Err(ConfigError::BadFirst);
            }
            t.table[p as usize] = Entry::new(DEFUNCT, 0, TaskId(0), 0);
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
            t.table[p as usize] = Entry::new(FREE, e.link(), TaskId(0), 0);
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
        let quota = self.quota;
        let v = self.vm(caller);
        if v.allocated + v.defunct >= quota {
            return Err(E::NoSpace);
        }
        let p = Self::pop(&mut self.free, self.table).ok_or(E::NoSpace)?;
        let gen = self.table[p as usize].gen();
        self.table[p as usize] = Entry::new(ALLOCATED, NIL, caller, gen);
        self.vm(caller).allocated += 1;
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
        if e.owner() != caller {
            return Err(E::NotPermitted);
        }
        self.make_defunct(h.pasid.0, e);
        Ok(Notify::IommuServer)
    }

    fn make_defunct(&mut self, p: u32, e: Entry) {
        let owner = e.owner();
        self.table[p as usize] = Entry::new(DEFUNCT, NIL, owner, e.gen());
        Self::push(&mut self.defunct, self.table, p);
        if let Some(v) = self.vm_if_current(owner) {
            v.allocated -= 1;
            v.defunct += 1;
        }
    }

    /// Who holds `pasid` now.
    pub fn owner_of(&self, pasid: u32) -> Result<PasidOwner, E> {
        let e = self.table[self.index(pasid)?];
        let (owner, generation) = (e.owner(), PasidGen(e.gen()));
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
        if let Some(v) = self.vm_if_current(e.owner()) {
            v.defunct -= 1;
        }
        self.table[i] = Entry::new(FREE, NIL, TaskId(0), e.gen().wrapping_add(1));
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
            if e.state() == ALLOCATED && gone(e.owner()) {
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
        for v in self.vms.iter().filter(|v| v.id != 0) {
            let mine = |s| {
                self.table
                    .iter()
                    .filter(|e| e.state() == s && e.owner().0 == v.id)
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
            if *e != Entry::default() {
                writeln!(f, "{p:#x}: {e:?}")?;
            }
        }
        Ok(())
    }
}
