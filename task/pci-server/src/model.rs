//! A model configuration space (host only): functions with the write
//! semantics of real registers — read-only bytes, BARs that size by
//! writing all-ones, write-1-to-clear status bits — and a log of every
//! write, so the tests assert what reached the "device".

use crate::cfg::ConfigSpace;
use std::vec::Vec;

/// One function's 4 KiB and its write semantics.
#[derive(Clone)]
pub struct ModelFunction {
    pub bdf: u16,
    pub bytes: [u8; 4096],
    /// Bits software may write, per byte.
    pub writable: [u8; 4096],
    /// Write-1-to-clear bits, per byte.
    pub rw1c: [u8; 4096],
}

impl ModelFunction {
    /// A type 0 endpoint `vendor:device` with memory BARs of the given
    /// sizes (0 = not implemented; sizes are powers of two ≥ 16).
    pub fn endpoint(bdf: u16, id: u32, bars: [u32; 6]) -> Self {
        let mut f = ModelFunction {
            bdf,
            bytes: [0; 4096],
            writable: [0; 4096],
            rw1c: [0; 4096],
        };
        f.set32(0x00, id);
        // Command: I/O, memory, bus master, parity, SERR, INTx disable.
        f.writable[0x04] = 0x47;
        f.writable[0x05] = 0x05;
        // Status: the error bits are RW1C.
        f.rw1c[0x07] = 0xf9;
        // Class: "other" (ff:00) unless set.
        f.set32(0x08, 0x00ff_0000);
        // Cache line size, latency timer, interrupt line: plain RW.
        f.writable[0x0c] = 0xff;
        f.writable[0x0d] = 0xff;
        f.writable[0x3c] = 0xff;
        for (i, &size) in bars.iter().enumerate() {
            if size != 0 {
                let mask = !(size - 1) & !0xf;
                let at = 0x10 + 4 * i;
                f.writable[at..at + 4].copy_from_slice(&mask.to_le_bytes());
            }
        }
        // ROM BAR: writable like a 64 KiB ROM (address and enable bit).
        f.writable[0x30..0x34].copy_from_slice(&(0xffff_0001u32).to_le_bytes());
        f
    }

    pub fn set32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn get32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    /// Adds a standard capability (`id`, `len` bytes of which `writable`
    /// are RW) at `at`, linked at the head of the list.
    pub fn add_cap(&mut self, at: u8, id: u8, len: usize, writable: bool) {
        let at = usize::from(at);
        let head = self.bytes[0x34];
        self.bytes[at] = id;
        self.bytes[at + 1] = head;
        self.bytes[0x34] = at as u8;
        self.bytes[0x06] |= 1 << 4;
        if writable {
            for b in &mut self.writable[at + 2..at + len] {
                *b = 0xff;
            }
        }
    }

    /// Adds an extended capability at `at` (≥ 0x100), after any present.
    pub fn add_ext_cap(&mut self, at: u16, id: u16, len: usize) {
        let at = usize::from(at);
        if self.get32(0x100) != 0 && at != 0x100 {
            // Link the last one to this.
            let mut p = 0x100;
            while (self.get32(p) >> 20) as usize != 0 {
                p = (self.get32(p) >> 20) as usize;
            }
            let h = self.get32(p);
            self.set32(p, h | (at as u32) << 20);
        }
        self.set32(at, u32::from(id) | 1 << 16);
        for b in &mut self.writable[at + 4..at + len] {
            *b = 0xff;
        }
    }

    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.bytes[4], self.bytes[5]])
    }
}

/// A bus of model functions plus the log of writes that reached them.
#[derive(Clone, Default)]
pub struct ModelSpace {
    pub functions: Vec<ModelFunction>,
    /// (bdf, offset, size, value) of every write to a present function.
    pub writes: Vec<(u16, u16, u8, u32)>,
}

impl ModelSpace {
    pub fn function(&self, bdf: u16) -> &ModelFunction {
        self.functions
            .iter()
            .find(|f| f.bdf == bdf)
            .expect("model function")
    }
    pub fn function_mut(&mut self, bdf: u16) -> &mut ModelFunction {
        self.functions
            .iter_mut()
            .find(|f| f.bdf == bdf)
            .expect("model function")
    }
}

impl ConfigSpace for ModelSpace {
    fn read(&mut self, bdf: u16, offset: u16, size: u8) -> u32 {
        let Some(f) = self.functions.iter().find(|f| f.bdf == bdf) else {
            // Master abort: all-ones of the access size.
            return u32::MAX >> (32 - 8 * u32::from(size));
        };
        let o = usize::from(offset);
        let mut v = 0u32;
        for i in 0..usize::from(size) {
            v |= u32::from(f.bytes[o + i]) << (8 * i);
        }
        v
    }

    fn write(&mut self, bdf: u16, offset: u16, size: u8, value: u32) {
        let Some(f) = self.functions.iter_mut().find(|f| f.bdf == bdf) else {
            return;
        };
        self.writes.push((bdf, offset, size, value));
        let o = usize::from(offset);
        for i in 0..usize::from(size) {
            let b = (value >> (8 * i)) as u8;
            let (w, c) = (f.writable[o + i], f.rw1c[o + i]);
            let old = f.bytes[o + i];
            f.bytes[o + i] = ((old & !w) | (b & w)) & !(b & c);
        }
    }
}
