//! The CPU side of a non-coherent system: a data cache between the driver
//! and [`PhysMem`], which the SMMU reads and writes directly.
//!
//! IHI 0070 §3.15: an SMMU that cannot access its structures and queues
//! IO-coherently reads and writes memory without snooping the PE caches.
//! On such a system a store the driver did not clean to the point of
//! coherency is invisible to the SMMU, and a line the CPU holds keeps
//! giving the CPU old data after the SMMU wrote memory until the CPU
//! invalidates it. [`CpuCache`] models exactly that, as unfavourably as
//! the architecture allows a cache to behave:
//!
//! - every load and store allocates its line (write-back, read- and
//!   write-allocate), and no line is ever evicted on its own: a missing
//!   clean stays missing, a missing invalidate keeps the stale line;
//! - `clean` (DC CVAC) writes a dirty line to memory and keeps it, clean;
//! - `clean_invalidate` (DC CIVAC) writes a dirty line back and drops it.
//!
//! DC IVAC (drop without writing back) is not offered: it is not
//! executable at EL0, and a task never needs it (DC CIVAC is as good for
//! a queue the CPU does not write).
//!
//! In coherent mode the cache is transparent: every access goes straight
//! to memory and maintenance does nothing, which is what an IO-coherent
//! SMMU (snooping the caches) looks like to the driver.

use crate::mem::{MemError, PhysMem};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The modelled cache line size (CTR_EL0.DminLine of common cores).
pub const LINE: u64 = 64;

#[derive(Clone, Copy)]
struct Line {
    data: [u8; LINE as usize],
    dirty: bool,
}

/// Counters of what the driver did to the cache (for tests and figures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Cleans (DC CVAC) issued.
    pub cleans: u64,
    /// Clean-and-invalidates (DC CIVAC) issued.
    pub clean_invalidates: u64,
    /// Cleans that wrote a dirty line to memory.
    pub writebacks: u64,
}

struct State {
    lines: BTreeMap<u64, Line>,
    stats: CacheStats,
    /// Test hook: cleans of lines in `[start, end)` are dropped (as if the
    /// driver had not issued them), at most `left` more times.
    drop_cleans: Option<(u64, u64, u32)>,
    /// Test hook: clean-and-invalidates of lines in `[start, end)` are
    /// dropped (a reader that forgot to invalidate).
    drop_invalidates: Option<(u64, u64)>,
}

/// The CPU's data cache in front of `mem`. Cloning gives another handle to
/// the same cache (one CPU).
#[derive(Clone)]
pub struct CpuCache {
    mem: PhysMem,
    coherent: bool,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for CpuCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuCache")
            .field("coherent", &self.coherent)
            .field("lines", &self.lock().lines.len())
            .finish()
    }
}

impl CpuCache {
    /// A cache over `mem`: transparent when `coherent`, else the
    /// non-coherent model above.
    pub fn new(mem: PhysMem, coherent: bool) -> Self {
        CpuCache {
            mem,
            coherent,
            state: Arc::new(Mutex::new(State {
                lines: BTreeMap::new(),
                stats: CacheStats::default(),
                drop_cleans: None,
                drop_invalidates: None,
            })),
        }
    }

    /// Whether the SMMU sees the CPU's cache (transparent mode).
    pub fn coherent(&self) -> bool {
        self.coherent
    }

    /// The memory behind the cache (what the SMMU sees).
    pub fn mem(&self) -> &PhysMem {
        &self.mem
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn line_of(pa: u64) -> u64 {
        pa & !(LINE - 1)
    }

    /// The cached line at `base`, filled from memory if absent.
    fn fill<'a>(&self, st: &'a mut State, base: u64) -> Result<&'a mut Line, MemError> {
        match st.lines.entry(base) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mut data = [0u8; LINE as usize];
                self.mem.read(base, &mut data)?;
                Ok(e.insert(Line { data, dirty: false }))
            }
        }
    }

    /// A CPU load of `buf.len()` bytes at `pa` (within one line when not
    /// coherent: the driver's accesses are naturally aligned words).
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if self.coherent {
            return self.mem.read(pa, buf);
        }
        let base = Self::line_of(pa);
        let off = (pa - base) as usize;
        if off + buf.len() > LINE as usize {
            return Err(MemError::BadRegion { pa, len: buf.len() });
        }
        let mut st = self.lock();
        let line = self.fill(&mut st, base)?;
        buf.copy_from_slice(&line.data[off..off + buf.len()]);
        Ok(())
    }

    /// A CPU store (within one line when not coherent).
    pub fn write(&self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        if self.coherent {
            return self.mem.write(pa, data);
        }
        let base = Self::line_of(pa);
        let off = (pa - base) as usize;
        if off + data.len() > LINE as usize {
            return Err(MemError::BadRegion {
                pa,
                len: data.len(),
            });
        }
        let mut st = self.lock();
        let line = self.fill(&mut st, base)?;
        line.data[off..off + data.len()].copy_from_slice(data);
        line.dirty = true;
        Ok(())
    }

    /// Little-endian 64-bit CPU load.
    pub fn read_u64(&self, pa: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Little-endian 64-bit CPU store.
    pub fn write_u64(&self, pa: u64, v: u64) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }

    fn writeback(&self, st: &mut State, base: u64) {
        if let Some(line) = st.lines.get_mut(&base) {
            if line.dirty {
                // The line was filled from this memory: it is backed.
                let _ = self.mem.write(base, &line.data);
                line.dirty = false;
                st.stats.writebacks += 1;
            }
        }
    }

    fn dropped(st: &mut State, base: u64) -> bool {
        match &mut st.drop_cleans {
            Some((start, end, left)) if *left > 0 && base + LINE > *start && base < *end => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    /// DC CVAC of the line holding `pa`: a dirty line is written to memory
    /// and stays cached, clean.
    pub fn clean(&self, pa: u64) {
        let mut st = self.lock();
        st.stats.cleans += 1;
        if self.coherent {
            return;
        }
        let base = Self::line_of(pa);
        if Self::dropped(&mut st, base) {
            return;
        }
        self.writeback(&mut st, base);
    }

    /// DC CIVAC of the line holding `pa`: written back if dirty, then
    /// dropped, so the next load reads memory.
    pub fn clean_invalidate(&self, pa: u64) {
        let mut st = self.lock();
        st.stats.clean_invalidates += 1;
        if self.coherent {
            return;
        }
        let base = Self::line_of(pa);
        if matches!(st.drop_invalidates, Some((s, e)) if base + LINE > s && base < e) {
            return;
        }
        self.writeback(&mut st, base);
        st.lines.remove(&base);
    }

    /// Dirty lines: stores the SMMU cannot see yet.
    pub fn dirty_lines(&self) -> Vec<u64> {
        self.lock()
            .lines
            .iter()
            .filter(|(_, l)| l.dirty)
            .map(|(b, _)| *b)
            .collect()
    }

    /// What the driver did so far.
    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }

    /// Test hook: the next `count` cleans of lines overlapping
    /// `[pa, pa + len)` do nothing (a driver path that forgot its clean).
    pub fn drop_cleans(&self, pa: u64, len: u64, count: u32) {
        self.lock().drop_cleans = Some((pa, pa + len, count));
    }

    /// Test hook: every DC CIVAC of a line overlapping `[pa, pa + len)`
    /// does nothing (a queue reader that forgot to invalidate).
    pub fn drop_invalidates(&self, pa: u64, len: u64) {
        self.lock().drop_invalidates = Some((pa, pa + len));
    }

    /// Removes the [`CpuCache::drop_cleans`] hook.
    pub fn keep_cleans(&self) {
        self.lock().drop_cleans = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> PhysMem {
        let m = PhysMem::new();
        m.add_region(0x1000, 0x1000).unwrap();
        m
    }

    #[test]
    fn uncleaned_store_is_invisible_and_clean_publishes() {
        let m = mem();
        let c = CpuCache::new(m.clone(), false);
        c.write_u64(0x1008, 7).unwrap();
        assert_eq!(m.read_u64(0x1008).unwrap(), 0, "SMMU sees memory only");
        assert_eq!(c.read_u64(0x1008).unwrap(), 7, "CPU sees its cache");
        assert_eq!(c.dirty_lines(), vec![0x1000]);
        c.clean(0x1010);
        assert_eq!(m.read_u64(0x1008).unwrap(), 7);
        assert!(c.dirty_lines().is_empty());
    }

    #[test]
    fn smmu_write_is_invisible_until_invalidated() {
        let m = mem();
        let c = CpuCache::new(m.clone(), false);
        assert_eq!(c.read_u64(0x1040).unwrap(), 0);
        m.write_u64(0x1040, 9).unwrap();
        assert_eq!(c.read_u64(0x1040).unwrap(), 0, "stale line");
        c.clean_invalidate(0x1040);
        assert_eq!(c.read_u64(0x1040).unwrap(), 9);
    }

    #[test]
    fn dropped_clean_leaves_memory_stale() {
        let m = mem();
        let c = CpuCache::new(m.clone(), false);
        c.drop_cleans(0x1000, 0x40, 1);
        c.write_u64(0x1000, 1).unwrap();
        c.clean(0x1000);
        assert_eq!(m.read_u64(0x1000).unwrap(), 0);
        c.clean(0x1000);
        assert_eq!(m.read_u64(0x1000).unwrap(), 1);
    }

    #[test]
    fn coherent_mode_is_transparent() {
        let m = mem();
        let c = CpuCache::new(m.clone(), true);
        c.write_u64(0x1000, 5).unwrap();
        assert_eq!(m.read_u64(0x1000).unwrap(), 5);
        m.write_u64(0x1000, 6).unwrap();
        assert_eq!(c.read_u64(0x1000).unwrap(), 6);
    }
}
