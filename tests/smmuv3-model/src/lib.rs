//! The project's own Arm SMMUv3 model, for the IPC-level host harness.
//!
//! Written from the architecture specification, it implements what QEMU
//! 10.0's model lacks: the PRI queue (page request groups, Last, stop
//! markers, overflow), the stall model (STALL events with STAG, CMD_RESUME,
//! CMD_STALL_TERM) and substreams (PASIDs up to 20 bits, linear and 2-level
//! CD tables), next to stage 1 / stage 2 / nested translation with an IOTLB
//! and a configuration cache that keep serving stale data until the right
//! invalidation completes, so a missing CFGI/TLBI/SYNC is observable.
//!
//! - [`PhysMem`]: sparse physical memory the driver writes its tables and
//!   queues into; the model reads them by PA.
//! - [`Smmu`]: the SMMU; implements [`smmuv3::Mmio`], so the driver under
//!   test programs it exactly as it programs hardware. Interrupts are
//!   pending flags ([`Smmu::take_irqs`]); every consumed command is logged
//!   and decoded ([`Smmu::commands`], [`Smmu::pri_responses`], ...).
//! - [`Device`]: DMA (`dma_read`, `dma_write`, ...) and page requests
//!   (`page_request`, `stop_marker`) through the SMMU.
//!
//! Simplifications (documented where they apply): 4 KiB translation
//! granule and AArch64 little-endian tables only; no walk cache (the Leaf
//! hint of invalidations is not checked); the device's ATC is not modelled
//! (ATC_INV is logged); HTTU is not implemented.

mod cmdq;
mod config;
mod device;
mod eager;
mod log;
mod mem;
mod queues;
mod smmu;
mod tlb;
mod xlate;

pub use config::{CmdqThrottle, SmmuConfig, StallModel};
pub use device::{Access, Device, DmaError, StallOutcome, StallState};
pub use log::{
    AutoPriReason, AutoPriResponse, CmdOutcome, DeviceResponse, LoggedCommand, PriGroup,
    ResponseCode,
};
pub use mem::{MemError, PhysMem};
pub use queues::PriOutcome;
pub use smmu::{AccessError, AccessErrorKind, IrqLines, Smmu};
