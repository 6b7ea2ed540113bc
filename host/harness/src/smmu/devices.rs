//! Devices: DMA through the model as a device with a StreamID would.

use super::*;
use smmuv3_model::{Device, DmaError};

/// A DMA-capable device behind the SMMU (QEMU's edu, in the image tests).
/// Each transfer is recorded on the bus (and so in traces).
#[derive(Clone)]
pub struct Dma {
    pub(super) dev: Device,
    pub(super) bus: Bus,
}

impl Dma {
    /// Writes `data` at `iova` of stream `sid` (substream `ssid`); returns
    /// the PA it landed at.
    pub fn write(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        data: &[u8],
    ) -> Result<u64, DmaError> {
        let result = self
            .dev
            .dma_write(sid, ssid, iova, data.len())
            .and_then(|pa| self.dev.dma_write_bytes(sid, ssid, iova, data).map(|_| pa));
        self.bus.on_dma(BusEvent::Dma {
            sid,
            ssid,
            iova,
            write: true,
            result,
        });
        result
    }

    /// Reads `buf.len()` bytes at `iova`; returns the PA they came from.
    pub fn read(
        &self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<u64, DmaError> {
        let result = self
            .dev
            .dma_read(sid, ssid, iova, buf.len())
            .and_then(|pa| self.dev.dma_read_bytes(sid, ssid, iova, buf).map(|_| pa));
        self.bus.on_dma(BusEvent::Dma {
            sid,
            ssid,
            iova,
            write: false,
            result,
        });
        result
    }

    /// Translates a read at `iova` without recording it (a probe).
    pub fn probe(&self, sid: u32, ssid: Option<u32>, iova: u64) -> Result<u64, DmaError> {
        self.dev.dma_read(sid, ssid, iova, 8)
    }
}
