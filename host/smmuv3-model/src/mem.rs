//! Sparse physical memory shared by the driver under test and the model.
//!
//! The driver writes stream tables, CDs, queues and page tables here (at
//! physical addresses it chose); the model reads them back by PA exactly as
//! hardware would. An access to a PA that no region backs fails with
//! [`MemError::Unmapped`], which the model turns into the architected
//! external-abort events (F_STE_FETCH, F_CD_FETCH, F_WALK_EABT) or queue
//! abort errors (GERROR.*_ABT_ERR).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Why a physical memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// No region backs `pa` (the first unbacked byte of the access).
    Unmapped { pa: u64 },
    /// A new region would overlap an existing one.
    Overlap { pa: u64, len: usize },
    /// A region of length 0, or one that wraps the address space.
    BadRegion { pa: u64, len: usize },
    /// `remove_region` named an address that starts no region.
    NoSuchRegion { pa: u64 },
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemError::Unmapped { pa } => write!(f, "no memory at PA {pa:#x}"),
            MemError::Overlap { pa, len } => write!(f, "region {pa:#x}+{len:#x} overlaps another"),
            MemError::BadRegion { pa, len } => write!(f, "bad region {pa:#x}+{len:#x}"),
            MemError::NoSuchRegion { pa } => write!(f, "no region starts at {pa:#x}"),
        }
    }
}

impl std::error::Error for MemError {}

/// Sparse physical memory: a set of non-overlapping zero-initialised
/// regions. Cloning gives another handle to the same memory.
#[derive(Clone, Default)]
pub struct PhysMem {
    regions: Arc<RwLock<BTreeMap<u64, Box<[u8]>>>>,
}

impl fmt::Debug for PhysMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.read_lock();
        f.debug_list()
            .entries(r.iter().map(|(pa, d)| (*pa, d.len())))
            .finish()
    }
}

impl PhysMem {
    /// Empty memory (every access fails until regions are added).
    pub fn new() -> Self {
        Self::default()
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, BTreeMap<u64, Box<[u8]>>> {
        // A panic elsewhere while holding the lock leaves the bytes usable.
        self.regions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, Box<[u8]>>> {
        self.regions.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Backs `[pa, pa + len)` with zeroed memory.
    pub fn add_region(&self, pa: u64, len: usize) -> Result<(), MemError> {
        let end = pa.checked_add(len as u64).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(MemError::BadRegion { pa, len });
        };
        let mut r = self.write_lock();
        // The region starting at or before `pa`, and the first after it.
        if let Some((b, d)) = r.range(..=pa).next_back() {
            if b + d.len() as u64 > pa {
                return Err(MemError::Overlap { pa, len });
            }
        }
        if let Some((b, _)) = r.range(pa..).next() {
            if *b < end {
                return Err(MemError::Overlap { pa, len });
            }
        }
        r.insert(pa, vec![0u8; len].into_boxed_slice());
        Ok(())
    }

    /// Removes the region that starts at `pa` (later accesses fault).
    pub fn remove_region(&self, pa: u64) -> Result<(), MemError> {
        self.write_lock()
            .remove(&pa)
            .map(|_| ())
            .ok_or(MemError::NoSuchRegion { pa })
    }

    /// True if every byte of `[pa, pa + len)` is backed.
    pub fn is_mapped(&self, pa: u64, len: usize) -> bool {
        let mut buf = vec![0u8; len];
        self.read(pa, &mut buf).is_ok()
    }

    /// Splits `[pa, pa + len)` into pieces that each lie inside one region:
    /// `(region base, offset in region, piece length)`. Fails at the first
    /// unbacked byte.
    fn pieces(
        regions: &BTreeMap<u64, Box<[u8]>>,
        pa: u64,
        len: usize,
    ) -> Result<Vec<(u64, usize, usize)>, MemError> {
        let mut out = Vec::new();
        let mut done = 0usize;
        while done < len {
            let cur = pa
                .checked_add(done as u64)
                .ok_or(MemError::Unmapped { pa: u64::MAX })?;
            let (base, data) = regions
                .range(..=cur)
                .next_back()
                .ok_or(MemError::Unmapped { pa: cur })?;
            let off = (cur - base) as usize;
            if off >= data.len() {
                return Err(MemError::Unmapped { pa: cur });
            }
            let n = (len - done).min(data.len() - off);
            out.push((*base, off, n));
            done += n;
        }
        Ok(out)
    }

    /// Reads `buf.len()` bytes at `pa` (may span adjacent regions).
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.read_lock();
        let mut done = 0;
        for (base, off, n) in Self::pieces(&r, pa, buf.len())? {
            buf[done..done + n].copy_from_slice(&r[&base][off..off + n]);
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `pa` (may span adjacent regions). Nothing is
    /// written if any byte is unbacked.
    pub fn write(&self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        let mut r = self.write_lock();
        let pieces = Self::pieces(&r, pa, data.len())?;
        let mut done = 0;
        for (base, off, n) in pieces {
            if let Some(region) = r.get_mut(&base) {
                region[off..off + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        Ok(())
    }

    /// Little-endian 32-bit load.
    pub fn read_u32(&self, pa: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(pa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Little-endian 64-bit load (single-copy atomic with respect to
    /// [`PhysMem::write_u64`]).
    pub fn read_u64(&self, pa: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Little-endian 32-bit store.
    pub fn write_u32(&self, pa: u64, v: u32) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }

    /// Little-endian 64-bit store.
    pub fn write_u64(&self, pa: u64, v: u64) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }

    /// Reads a zerocopy value (an STE, CD, command, ...) at `pa`.
    pub fn read_obj<T: FromBytes + IntoBytes>(&self, pa: u64) -> Result<T, MemError> {
        let mut v = T::new_zeroed();
        self.read(pa, v.as_mut_bytes())?;
        Ok(v)
    }

    /// Writes a zerocopy value at `pa`.
    pub fn write_obj<T: IntoBytes + Immutable>(&self, pa: u64, v: &T) -> Result<(), MemError> {
        self.write(pa, v.as_bytes())
    }

    /// Sets `len` bytes at `pa` to `byte`.
    pub fn fill(&self, pa: u64, len: usize, byte: u8) -> Result<(), MemError> {
        self.write(pa, &vec![byte; len])
    }
}
