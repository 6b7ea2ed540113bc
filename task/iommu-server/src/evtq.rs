//! Minimal event queue intake.
//!
//! By the design the event queue (its memory, EVENTQ_PROD/CONS in SMMU
//! page 1, the eventq interrupt) belongs to prq-server, which does not
//! exist yet. Until it does, iommu-server enables the queue itself (only
//! when it is given page 1) and keeps the records of each VM's streams in
//! a bounded ring that the VM fetches (`fetch_events`). Everything the
//! move to prq-server needs is here and in `server::EventRing`: the queue
//! setup in `Smmu::init` (EVENTQ_BASE, CR0.EVTQEN) stays with the page 0
//! owner; this reader moves.

use crate::dma::DmaMemory;
use crate::pages::Pages;
use smmuv3::regs::{self, offset};
use smmuv3::{Event, Mmio, QueuePtr, EVENTQ_ENTRY_BYTES};

/// log2 of the event queue entries (128 × 32 B = one 4 KiB page), capped
/// by IDR1.EVENTQS.
pub const EVTQ_LOG2: u32 = 7;

/// The hardware event queue as its consumer sees it.
#[derive(Clone, Debug)]
pub struct EventQueue {
    pub pages: Pages,
    pub log2size: u32,
    cons: QueuePtr,
    /// Records read.
    pub read: u32,
    /// Times the SMMU reported lost records (PROD.OVFLG toggled).
    pub overflows: u32,
}

impl EventQueue {
    pub fn new(pages: Pages, log2size: u32) -> Self {
        Self {
            pages,
            log2size,
            cons: QueuePtr::new(log2size),
            read: 0,
            overflows: 0,
        }
    }

    /// EVENTQ_BASE (with WA).
    pub fn base_value(&self) -> u64 {
        regs::queue_base(self.pages.pa, self.log2size, true)
    }

    /// Reads at most one queue's worth of records into `sink` and moves
    /// EVENTQ_CONS past them. Returns how many were read.
    pub fn drain(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl DmaMemory,
        sink: impl FnMut(Event),
    ) -> u32 {
        self.drain_bounded(mmio, mem, 1 << self.log2size, sink)
    }

    /// As [`EventQueue::drain`], reading at most `max` records.
    pub fn drain_bounded(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl DmaMemory,
        max: u32,
        mut sink: impl FnMut(Event),
    ) -> u32 {
        let prod = QueuePtr::from_raw(self.log2size, mmio.read32(offset::EVENTQ_PROD));
        // Records are read only after PROD says they are there.
        mem.acquire();
        let mut n = 0;
        while !prod.is_empty(self.cons) && n < max.min(1 << self.log2size) {
            let off = self.pages.off + self.cons.entry_offset(EVENTQ_ENTRY_BYTES);
            // A non-coherent SMMU wrote memory, not our cache.
            mem.refresh(off, EVENTQ_ENTRY_BYTES);
            let e = Event::from_words(core::array::from_fn(|i| mem.read64(off + 8 * i)));
            sink(e);
            self.cons = self.cons.advance(1);
            n += 1;
        }
        if prod.overflow() != self.cons.overflow() {
            // Records were lost; acknowledge by copying the flag.
            self.overflows += 1;
            self.cons = self.cons.with_overflow(prod.overflow());
        }
        self.read += n;
        mmio.write32(offset::EVENTQ_CONS, self.cons.raw());
        n
    }
}
