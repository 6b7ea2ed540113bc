//! A DMA-capable device behind the SMMU: transactions and page requests.

use crate::queues::PriOutcome;
use crate::smmu::Smmu;
use smmuv3::pgtable::GRANULE_SIZE;
use smmuv3::{EventId, PriEntry, ResumeAction};
use std::sync::Arc;

/// Attributes of one transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Access {
    /// Write (otherwise read).
    pub write: bool,
    /// Privileged (PnU = 1).
    pub privileged: bool,
    /// Instruction fetch (InD = 1).
    pub instruction: bool,
}

impl Access {
    /// Unprivileged data read.
    pub const READ: Access = Access {
        write: false,
        privileged: false,
        instruction: false,
    };
    /// Unprivileged data write.
    pub const WRITE: Access = Access {
        write: true,
        privileged: false,
        instruction: false,
    };
}

/// Why a transaction did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// Terminated without an event: STE.Config = abort, GBPA.ABORT with
    /// the SMMU disabled, or an invalid StreamID without CR2.RECINVSID.
    Aborted,
    /// Terminated with event type `id`; `recorded` says whether the record
    /// reached the event queue (CD.R / STE.S2R clear, queue disabled or
    /// full → false).
    Fault { id: EventId, recorded: bool },
    /// Stalled: an event with Stall = 1 and this STAG was recorded; the
    /// transaction waits for CMD_RESUME / CMD_STALL_TERM.
    Stalled { stag: u16 },
    /// Translated, but nothing backs the output PA (the system's external
    /// abort; the SMMU records nothing).
    BusError { pa: u64 },
}

/// How a stalled transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallOutcome {
    /// CMD_RESUME Retry: the translation ran again, with this result (a new
    /// stall gets a new STAG).
    Retried(Result<u64, DmaError>),
    /// CMD_RESUME Term or Abort.
    Terminated(ResumeAction),
    /// CMD_STALL_TERM for the stream.
    StallTerm,
}

/// State of a stalled transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallState {
    /// Still held.
    Pending,
    /// Resumed or terminated.
    Resolved(StallOutcome),
}

/// A device issuing DMA and page requests through an SMMU. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Device {
    smmu: Arc<Smmu>,
}

impl Device {
    pub fn new(smmu: Arc<Smmu>) -> Self {
        Self { smmu }
    }

    /// The SMMU this device sits behind.
    pub fn smmu(&self) -> &Arc<Smmu> {
        &self.smmu
    }

    /// Translates one access at `iova`.
    pub fn translate(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<u64, DmaError> {
        self.smmu.lock().translate(sid, ssid, iova, access)
    }

    /// Translates every page of `[iova, iova + len)` in order (stopping at
    /// the first failure); returns the PA of `iova` and of each page.
    fn translate_range(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        len: usize,
        access: Access,
    ) -> Result<Vec<(u64, u64, usize)>, DmaError> {
        let mut st = self.smmu.lock();
        let mut out = Vec::new();
        let mut addr = iova;
        let end = iova.saturating_add(len.max(1) as u64);
        while addr < end {
            let page_end = (addr | (GRANULE_SIZE - 1)).saturating_add(1).min(end);
            let pa = st.translate(sid, ssid, addr, access)?;
            out.push((addr, pa, (page_end - addr) as usize));
            addr = page_end;
        }
        Ok(out)
    }

    /// A read DMA of `len` bytes: every page is translated; returns the PA
    /// of `iova`.
    pub fn dma_read(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        len: usize,
    ) -> Result<u64, DmaError> {
        Ok(self.translate_range(sid, ssid, iova, len, Access::READ)?[0].1)
    }

    /// A write DMA of `len` bytes: every page is translated; returns the PA
    /// of `iova`.
    pub fn dma_write(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        len: usize,
    ) -> Result<u64, DmaError> {
        Ok(self.translate_range(sid, ssid, iova, len, Access::WRITE)?[0].1)
    }

    /// A read DMA that also copies the bytes out of physical memory.
    pub fn dma_read_bytes(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<(), DmaError> {
        let pieces = self.translate_range(sid, ssid, iova, buf.len(), Access::READ)?;
        let mut done = 0;
        for (_, pa, n) in pieces {
            if buf.is_empty() {
                break;
            }
            self.smmu
                .mem()
                .read(pa, &mut buf[done..done + n])
                .map_err(|_| DmaError::BusError { pa })?;
            done += n;
        }
        Ok(())
    }

    /// A write DMA that also stores the bytes into physical memory.
    pub fn dma_write_bytes(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        data: &[u8],
    ) -> Result<(), DmaError> {
        let pieces = self.translate_range(sid, ssid, iova, data.len(), Access::WRITE)?;
        let mut done = 0;
        for (_, pa, n) in pieces {
            if data.is_empty() {
                break;
            }
            self.smmu
                .mem()
                .write(pa, &data[done..done + n])
                .map_err(|_| DmaError::BusError { pa })?;
            done += n;
        }
        Ok(())
    }

    /// A PCIe page request for the page holding `addr`, in group `prgi`.
    #[allow(clippy::too_many_arguments)]
    pub fn page_request(
        &self,
        sid: u32,
        ssid: Option<u32>,
        prgi: u16,
        addr: u64,
        read: bool,
        write: bool,
        last: bool,
    ) -> PriOutcome {
        let mut e = PriEntry::new(sid, ssid, prgi, addr);
        e.set_read(read).set_write(write).set_last(last);
        self.page_request_entry(e)
    }

    /// A page request given as a full entry (PRIV/EXEC too).
    pub fn page_request_entry(&self, entry: PriEntry) -> PriOutcome {
        self.smmu.lock().page_request(&entry)
    }

    /// A PCIe stop marker for (`sid`, `ssid`): Last set, neither read nor
    /// write. Never answered.
    pub fn stop_marker(&self, sid: u32, ssid: u32, prgi: u16) -> PriOutcome {
        self.page_request(sid, Some(ssid), prgi, 0, false, false, true)
    }

    /// State of the transaction stalled as (`sid`, `stag`), if one was.
    pub fn stall_state(&self, sid: u32, stag: u16) -> Option<StallState> {
        let st = self.smmu.lock();
        if st.stalls.contains_key(&(sid, stag)) {
            return Some(StallState::Pending);
        }
        st.stall_outcomes
            .get(&(sid, stag))
            .map(|o| StallState::Resolved(*o))
    }

    /// Every (StreamID, STAG) currently stalled.
    pub fn pending_stalls(&self) -> Vec<(u32, u16)> {
        self.smmu.lock().stalls.keys().copied().collect()
    }
}
