//! Host test doubles: DMA memory in a vector, and a small fake SMMU that
//! executes the command queue and logs every command (the driver's unit
//! tests check exact command sequences against it). The spec-level model
//! lives in `host/smmuv3-model`; this fake only knows what the driver's
//! own tests need.

extern crate std;

use crate::dma::DmaMemory;
use core::cell::RefCell;
use smmuv3::regs::offset as off;
use smmuv3::{Command, Event, QueuePtr};
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

/// DMA memory backed by a vector, shared by clones.
#[derive(Clone)]
pub struct HostMem {
    pa: u64,
    words: Rc<RefCell<Vec<u64>>>,
}

impl HostMem {
    pub fn new(pa: u64, size: usize) -> Self {
        Self {
            pa,
            words: Rc::new(RefCell::new(vec![0; size / 8])),
        }
    }

    /// Reads 64-bit word at physical address `pa`.
    pub fn read_pa(&self, pa: u64) -> u64 {
        self.offset_of(pa).map(|o| self.read64(o)).unwrap_or(0)
    }

    pub fn read_words<const N: usize>(&self, pa: u64) -> [u64; N] {
        core::array::from_fn(|i| self.read_pa(pa + 8 * i as u64))
    }

    pub fn write_pa(&self, pa: u64, v: u64) {
        if let Some(o) = self.offset_of(pa) {
            self.write64(o, v)
        }
    }
}

impl DmaMemory for HostMem {
    fn base_pa(&self) -> u64 {
        self.pa
    }
    fn size(&self) -> usize {
        self.words.borrow().len() * 8
    }
    fn read64(&self, off: usize) -> u64 {
        assert!(off.is_multiple_of(8), "misaligned DMA read at {off:#x}");
        self.words.borrow().get(off / 8).copied().unwrap_or(0)
    }
    fn write64(&self, off: usize, value: u64) {
        assert!(off.is_multiple_of(8), "misaligned DMA write at {off:#x}");
        if let Some(w) = self.words.borrow_mut().get_mut(off / 8) {
            *w = value;
        }
    }
    fn publish(&self) {}
    fn coherent(&self) -> bool {
        true
    }
    fn refresh(&self, _off: usize, _len: usize) {}
}

#[derive(Default)]
pub struct FakeState {
    pub regs: std::collections::BTreeMap<usize, u64>,
    /// Every command executed, in order.
    pub log: Vec<Command>,
    /// Raw opcodes the fake refuses with CERROR_ILL (besides unknown ones).
    pub reject: Vec<u8>,
    /// When set, the command queue stops consuming (timeout tests).
    pub stuck: bool,
    /// Register writes, in order (offset, value).
    pub writes: Vec<(usize, u64)>,
    /// GBPA update in progress: the value it completes with and how many
    /// more GBPA reads still see UPDATE = 1.
    pub gbpa_pending: Option<(u64, u32)>,
    /// GBPA reads an update takes (0: completes at the write).
    pub gbpa_delay: u32,
    /// GBPA.ABORT does not stick (a broken SMMU).
    pub gbpa_ignores_abort: bool,
    /// The next this-many command fetches fail with CERROR_ABT.
    pub fetch_aborts: u32,
    /// The next this-many CMD_SYNCs that follow an ATC_INV fail with
    /// CERROR_ATC_INV_SYNC.
    pub atc_sync_fails: u32,
    /// An ATC_INV consumed since the last successful CMD_SYNC.
    pub atc_outstanding: bool,
}

/// The fake SMMU: QEMU-like IDRs by default.
#[derive(Clone)]
pub struct FakeSmmu {
    pub mem: HostMem,
    pub st: Rc<RefCell<FakeState>>,
}

pub const QEMU_IDR0: u32 = 0x0d44_101b;
pub const QEMU_IDR1: u32 = 0x0273_0010;
pub const QEMU_IDR5: u32 = 0x74;

impl FakeSmmu {
    pub fn new(mem: HostMem) -> Self {
        Self::with_idrs(mem, QEMU_IDR0, QEMU_IDR1, QEMU_IDR5)
    }

    pub fn with_idrs(mem: HostMem, idr0: u32, idr1: u32, idr5: u32) -> Self {
        let f = Self {
            mem,
            st: Rc::new(RefCell::new(FakeState::default())),
        };
        {
            let mut s = f.st.borrow_mut();
            s.regs.insert(off::IDR0, idr0 as u64);
            s.regs.insert(off::IDR1, idr1 as u64);
            s.regs.insert(off::IDR3, 0x1414);
            s.regs.insert(off::IDR5, idr5 as u64);
            s.regs.insert(off::GBPA, 0x1000);
        }
        f
    }

    pub fn reg(&self, o: usize) -> u64 {
        self.st.borrow().regs.get(&o).copied().unwrap_or(0)
    }

    fn set(&self, o: usize, v: u64) {
        self.st.borrow_mut().regs.insert(o, v);
    }

    /// Commands logged so far (and clears the log).
    pub fn take_log(&self) -> Vec<Command> {
        core::mem::take(&mut self.st.borrow_mut().log)
    }

    fn cmdq_log2(&self) -> u32 {
        smmuv3::regs::queue_base_log2size(self.reg(off::CMDQ_BASE)).min(19)
    }

    fn consume(&self) {
        if self.reg(off::CR0) & 0b1000 == 0 || self.st.borrow().stuck {
            return;
        }
        let log2 = self.cmdq_log2();
        let base = smmuv3::regs::queue_base_addr(self.reg(off::CMDQ_BASE));
        loop {
            if (self.reg(off::GERROR) ^ self.reg(off::GERRORN)) & 1 != 0 {
                return;
            }
            let prod = QueuePtr::from_raw(log2, self.reg(off::CMDQ_PROD) as u32);
            let cons_raw = self.reg(off::CMDQ_CONS) as u32;
            let cons = QueuePtr::from_raw(log2, cons_raw);
            if prod.is_empty(cons) {
                return;
            }
            let stop = |err: smmuv3::CmdqError| {
                self.set(off::CMDQ_CONS, err.insert_into_cons(cons.raw()) as u64);
                let g = self.reg(off::GERROR) ^ 1;
                self.set(off::GERROR, g);
            };
            if self.st.borrow().fetch_aborts > 0 {
                self.st.borrow_mut().fetch_aborts -= 1;
                stop(smmuv3::CmdqError::Abt);
                return;
            }
            let pa = base + cons.entry_offset(16) as u64;
            let cmd = Command::from_words(self.mem.read_words::<2>(pa));
            let refused =
                cmd.decode().is_err() || self.st.borrow().reject.contains(&cmd.raw_opcode());
            if refused {
                stop(smmuv3::CmdqError::Ill);
                return;
            }
            match cmd.opcode() {
                Ok(smmuv3::Opcode::AtcInv) => self.st.borrow_mut().atc_outstanding = true,
                Ok(smmuv3::Opcode::Sync) => {
                    let mut st = self.st.borrow_mut();
                    if st.atc_outstanding && st.atc_sync_fails > 0 {
                        // The timed-out ATC_INVs will never complete; the
                        // SYNC stays unconsumed (IHI 0070 §4.7.3).
                        st.atc_sync_fails -= 1;
                        st.atc_outstanding = false;
                        drop(st);
                        stop(smmuv3::CmdqError::AtcInvSync);
                        return;
                    }
                    st.atc_outstanding = false;
                }
                _ => {}
            }
            self.st.borrow_mut().log.push(cmd);
            self.set(off::CMDQ_CONS, cons.advance(1).raw() as u64);
        }
    }

    /// Appends an event record to the event queue (as the SMMU would).
    pub fn push_event(&self, e: Event) {
        let log2 = smmuv3::regs::queue_base_log2size(self.reg(off::EVENTQ_BASE));
        let base = smmuv3::regs::queue_base_addr(self.reg(off::EVENTQ_BASE));
        let prod = QueuePtr::from_raw(log2, self.reg(off::EVENTQ_PROD) as u32);
        let pa = base + prod.entry_offset(32) as u64;
        for (i, w) in e.words().iter().enumerate() {
            self.mem.write_pa(pa + 8 * i as u64, *w);
        }
        self.set(off::EVENTQ_PROD, prod.advance(1).raw() as u64);
    }
}

impl smmuv3::Mmio for FakeSmmu {
    fn read32(&self, o: usize) -> u32 {
        if o == off::GBPA {
            let done = {
                let mut st = self.st.borrow_mut();
                match &mut st.gbpa_pending {
                    Some((v, 0)) => {
                        let v = *v;
                        st.gbpa_pending = None;
                        Some(v)
                    }
                    Some((_, n)) => {
                        *n -= 1;
                        None
                    }
                    None => None,
                }
            };
            if let Some(v) = done {
                self.set(off::GBPA, v);
            }
        }
        self.reg(o) as u32
    }
    fn write32(&self, o: usize, v: u32) {
        self.st.borrow_mut().writes.push((o, v as u64));
        match o {
            off::CR0 => {
                self.set(off::CR0, v as u64);
                self.set(off::CR0ACK, v as u64);
                self.consume();
            }
            off::GBPA => {
                // Only a write with UPDATE while no update is under way
                // counts (SMMUv3.2+ ignores the others).
                let busy = self.reg(off::GBPA) & (1 << 31) != 0;
                if v & (1 << 31) != 0 && !busy {
                    let mut new = (v & !(1 << 31)) as u64;
                    if self.st.borrow().gbpa_ignores_abort {
                        new &= !(1 << 20);
                    }
                    let delay = self.st.borrow().gbpa_delay;
                    if delay == 0 {
                        self.set(off::GBPA, new);
                    } else {
                        self.set(off::GBPA, self.reg(off::GBPA) | 1 << 31);
                        self.st.borrow_mut().gbpa_pending = Some((new, delay));
                    }
                }
            }
            off::IRQ_CTRL => {
                self.set(off::IRQ_CTRL, v as u64);
                self.set(off::IRQ_CTRLACK, v as u64);
            }
            off::CMDQ_PROD => {
                self.set(off::CMDQ_PROD, v as u64);
                self.consume();
            }
            off::GERRORN => {
                self.set(off::GERRORN, v as u64);
                self.consume();
            }
            _ => self.set(o, v as u64),
        }
    }
    fn read64(&self, o: usize) -> u64 {
        self.reg(o)
    }
    fn write64(&self, o: usize, v: u64) {
        self.st.borrow_mut().writes.push((o, v));
        self.set(o, v)
    }
}

/// A waiter that gives up after a few polls.
pub struct SpinWaiter;

impl crate::cmdq::Waiter for SpinWaiter {
    fn pause(&mut self, attempt: u32) -> bool {
        attempt < 100
    }
}
