//! The page allocator of the DMA region: 4 KiB pages, and naturally
//! aligned runs of 2^order pages for the structures that need them (a
//! 16 KiB level 2 stream table, a large CD table).
//!
//! Bounded: at most [`MAX_PAGES`] pages (4 MiB) are managed; a larger
//! region's excess is left unused. The free list is a bitmap (one bit per
//! page), so freeing is O(1), allocation a bounded scan, and a freed page
//! is reused by the next allocation. Exhaustion is [`Error::NoSpace`].

use crate::error::{Error, Result};

/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
/// The page size.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// Most pages one allocator manages.
pub const MAX_PAGES: usize = 1024;
/// Largest run: 2^MAX_ORDER pages (128 KiB, a 2-level CD table's L1 for
/// 20-bit PASIDs).
pub const MAX_ORDER: u8 = 5;

const WORDS: usize = MAX_PAGES / 64;

/// A run of 2^order pages: where it is for the CPU (`off`, from the start
/// of the region) and for the SMMU (`pa`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pages {
    pub off: usize,
    pub pa: u64,
    pub order: u8,
}

impl Pages {
    /// Size in bytes.
    pub const fn bytes(&self) -> usize {
        PAGE_SIZE << self.order
    }
}

/// Allocator state: which pages are in use.
#[derive(Clone, Debug)]
pub struct PageAlloc {
    /// PA of managed page 0 (the first 4 KiB boundary of the region).
    first_pa: u64,
    /// Region offset of managed page 0.
    first_off: usize,
    npages: usize,
    used: [u64; WORDS],
    in_use: usize,
}

impl PageAlloc {
    /// Manages the whole pages of a region of `size` bytes at `base_pa`.
    pub fn new(base_pa: u64, size: usize) -> Self {
        let mask = PAGE_SIZE as u64 - 1;
        let first_pa = (base_pa + mask) & !mask;
        let first_off = (first_pa - base_pa) as usize;
        let npages = (size.saturating_sub(first_off) / PAGE_SIZE).min(MAX_PAGES);
        Self {
            first_pa,
            first_off,
            npages,
            used: [0; WORDS],
            in_use: 0,
        }
    }

    /// Pages managed.
    pub fn capacity(&self) -> usize {
        self.npages
    }

    /// Pages currently free.
    pub fn free_pages(&self) -> usize {
        self.npages - self.in_use
    }

    fn is_used(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, used: bool) {
        if used {
            self.used[i / 64] |= 1 << (i % 64);
        } else {
            self.used[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Allocates 2^order contiguous pages whose PA is aligned to their
    /// size. The caller zeroes them (see `Smmu::alloc_zeroed`).
    pub fn alloc(&mut self, order: u8) -> Result<Pages> {
        if order > MAX_ORDER {
            return Err(Error::NoSpace);
        }
        let n = 1usize << order;
        let align_pages = n as u64;
        // First managed page index whose PA is aligned to the run size.
        let first_pfn = self.first_pa >> PAGE_SHIFT;
        let mut i = ((align_pages - first_pfn % align_pages) % align_pages) as usize;
        while i + n <= self.npages {
            if (i..i + n).all(|j| !self.is_used(j)) {
                for j in i..i + n {
                    self.set(j, true);
                }
                self.in_use += n;
                return Ok(Pages {
                    off: self.first_off + i * PAGE_SIZE,
                    pa: self.first_pa + (i * PAGE_SIZE) as u64,
                    order,
                });
            }
            i += n;
        }
        Err(Error::NoSpace)
    }

    /// Returns a run to the pool. Freeing pages that are not allocated (a
    /// driver bug) is ignored.
    pub fn free(&mut self, p: Pages) {
        let Some(rel) = p.off.checked_sub(self.first_off) else {
            return;
        };
        let i = rel / PAGE_SIZE;
        let n = 1usize << p.order;
        if rel % PAGE_SIZE != 0 || i + n > self.npages || !(i..i + n).all(|j| self.is_used(j)) {
            debug_assert!(false, "freeing pages that are not allocated: {p:?}");
            return;
        }
        for j in i..i + n {
            self.set(j, false);
        }
        self.in_use -= n;
    }

    /// The run of order `order` that starts at region offset `off`, if
    /// that is a managed, page-aligned offset (to rebuild a [`Pages`] from
    /// an address found in a table).
    pub fn run_at(&self, off: usize, order: u8) -> Option<Pages> {
        let rel = off.checked_sub(self.first_off)?;
        let i = rel / PAGE_SIZE;
        (rel % PAGE_SIZE == 0 && i + (1usize << order) <= self.npages).then(|| Pages {
            off,
            pa: self.first_pa + rel as u64,
            order,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_reuse_and_exhaustion() {
        let mut a = PageAlloc::new(0x4000_0000, 4 * PAGE_SIZE);
        assert_eq!(a.capacity(), 4);
        let p: [Pages; 4] = core::array::from_fn(|_| a.alloc(0).unwrap());
        assert_eq!(a.alloc(0), Err(Error::NoSpace));
        assert_eq!(a.free_pages(), 0);
        a.free(p[2]);
        assert_eq!(a.alloc(0).unwrap(), p[2], "freed page reused");
        assert_eq!(p[1].pa, 0x4000_1000);
        assert_eq!(p[1].off, 0x1000);
    }

    #[test]
    fn runs_are_naturally_aligned_in_pa() {
        // Region starts at a PA that is 4K but not 16K aligned.
        let mut a = PageAlloc::new(0x4000_3000, 16 * PAGE_SIZE);
        let one = a.alloc(0).unwrap();
        assert_eq!(one.pa, 0x4000_3000);
        let four = a.alloc(2).unwrap();
        assert_eq!(four.pa % (4 * PAGE_SIZE as u64), 0);
        assert_eq!(four.pa, 0x4000_4000);
        assert_eq!(four.off, 0x1000);
        let eight = a.alloc(3).unwrap();
        assert_eq!(eight.pa, 0x4000_8000);
        assert_eq!(a.alloc(3), Err(Error::NoSpace));
        a.free(four);
        assert_eq!(a.alloc(2).unwrap(), four);
    }

    #[test]
    fn unaligned_region_start_and_bounds() {
        let a = PageAlloc::new(0x1234, 3 * PAGE_SIZE);
        assert_eq!(a.capacity(), 2);
        let big = PageAlloc::new(0, (MAX_PAGES + 10) * PAGE_SIZE);
        assert_eq!(big.capacity(), MAX_PAGES);
        let mut a = PageAlloc::new(0, 8 * PAGE_SIZE);
        assert_eq!(a.alloc(MAX_ORDER + 1), Err(Error::NoSpace));
        assert_eq!(a.run_at(0x2000, 0).map(|p| p.pa), Some(0x2000));
        assert_eq!(a.run_at(0x2001, 0), None);
    }
}
