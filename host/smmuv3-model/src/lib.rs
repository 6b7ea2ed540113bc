//! The project's own Arm SMMUv3 model, for the IPC-level host harness.
//!
//! Written from the architecture specification, it implements what QEMU
//! 10.0's model lacks: the PRI queue (page request groups, Last, stop
//! markers, overflow), the stall model (STALL events with STAG, CMD_RESUME,
//! CMD_STALL_TERM) and substreams (PASIDs up to 20 bits, linear and 2-level
//! CD tables), next to stage 1 / stage 2 / nested translation with an IOTLB
//! and a configuration cache that keep serving stale data until the right
//! invalidation completes, so a missing CFGI/TLBI/SYNC is observable.
//! Strict modes (below) make the model as unforgiving as the architecture
//! allows.
//!
//! - [`PhysMem`]: sparse physical memory the driver writes its tables and
//!   queues into; the model reads them by PA.
//! - [`Smmu`]: the SMMU; implements [`smmuv3::Mmio`], so the driver under
//!   test programs it exactly as it programs hardware. Interrupts are
//!   pending flags ([`Smmu::take_irqs`]); every consumed command is logged
//!   and decoded ([`Smmu::commands`], [`Smmu::pri_responses`], ...).
//! - [`CpuCache`]: the CPU's data cache in front of [`PhysMem`] for a
//!   non-coherent system (IHI 0070 §3.15): the SMMU reads only memory, so
//!   a store the driver did not clean is invisible to it, and a queue
//!   entry it wrote is invisible to a CPU that did not invalidate.
//! - [`Device`]: DMA (`dma_read`, `dma_write`, ...) and page requests
//!   (`page_request`, `stop_marker`) through the SMMU.
//!
//! # Strict modes
//!
//! Lenient by default (what a driver test can rely on QEMU doing too), the
//! model has seeded modes that do what the architecture allows and a
//! lenient model never does ([`SmmuConfig::strict`] turns all on; each has
//! a test in `tests/strict.rs` showing the omission it catches):
//!
//! - `eager_config_cache` (IHI 0070 §3.21.3): any reachable STE, L1STD, CD
//!   or L1CD may be fetched and cached at any time, valid or not, and
//!   dropped at any time; a cached invalid entry is used. Catches a missing
//!   CFGI (also after making an entry valid), a Leaf = 1 CFGI_STE after
//!   installing a level 2 table. With [`Smmu::store_boundary`] the entry
//!   being written may be cached half-written: catches updates that are not
//!   break-before-make at every 64-bit store.
//! - `cmdq_throttle`: commands are consumed only in [`Smmu::step`], a few
//!   per step, and CMD_SYNC waits at the head for a few steps. Catches a
//!   driver that does not wait, overruns the queue or mishandles the wrap.
//! - `walk_cache` (§3.21.1, §4.4): stage 2 translations of CD and stage 1
//!   table fetches are cached, and table descriptors of both stages; Leaf =
//!   1 TLBIs keep walk-cache entries. Catches a missing TLBI_S2_IPA for
//!   table/CD pages and a Leaf = 1 TLBI after a table change.
//! - `unknown_reset` (§6.3): `*_IRQ_CFG*` reset to garbage; GBPA.UPDATE
//!   stays 1 for a while and a write meanwhile is ignored.
//!
//! Always on, as the architecture leaves no choice: PRI overflow inhibits
//! all writes until acknowledged; automatic PRG responses (ResponseFailure
//! with PRIQEN = 0 or PRIQ_ABT_ERR, Success or — STE.PPAR uncheckable —
//! ResponseFailure for a Last lost to overflow, §8.1–8.3); stall records
//! are never discarded (§7.2); CMD_STALL_TERM needs a terminating STE
//! (§4.7.2). Every PRG response a device receives is recorded
//! ([`Smmu::device_responses`]).
//!
//! Simplifications (documented where they apply): 4 KiB translation
//! granule and AArch64 little-endian tables only; the device's ATC is not
//! modelled (ATC_INV is logged); HTTU is not implemented; CMD_CFGI_STE
//! keeps CDs cached through the stream unless `cfgi_ste_invalidates_cds`
//! (stricter than §4.3.1).

mod cache;
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

pub use cache::{CacheStats, CpuCache, LINE as CACHE_LINE};
pub use config::{CmdqThrottle, SmmuConfig, StallModel};
pub use device::{Access, Device, DmaError, StallOutcome, StallState};
pub use log::{
    AutoPriReason, AutoPriResponse, CmdOutcome, DeviceResponse, LoggedCommand, PriGroup,
    ResponseCode,
};
pub use mem::{MemError, PhysMem};
pub use queues::PriOutcome;
pub use smmu::{AccessError, AccessErrorKind, IrqLines, Smmu};
