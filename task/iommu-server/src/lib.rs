//! iommu-server: the task that owns the Arm SMMUv3's page 0 (control,
//! stream table, CD tables, command queue) and serves domains, attach /
//! replace / detach, map / unmap, PASID binds, validated guest
//! invalidations and PRI responses.
//!
//! The crate is a library the image's `main.rs` wraps in a receive loop
//! and the host harness runs unchanged against its SMMUv3 model:
//! - [`dma`], [`pages`]: the DMA region and its page allocator;
//! - [`pgtable`]: S1/S2 I/O page tables;
//! - [`strtab`], [`cdtab`], [`update`]: stream table, CD tables, and the
//!   safe (hitless where possible) STE/CD update;
//! - [`cmdq`]: batching, CMD_SYNC, bounded waits, illegal-command recovery;
//! - [`evtq`]: a minimal event queue reader (prq-server's job, here until
//!   it exists);
//! - [`driver`]: probe and fail-closed initialisation;
//! - [`server`]: objects, owners and operations;
//! - [`idl`]: the generated interface (`iommu-server-api`) on the server;
//! - [`wire`]: operations the interface lacks (numbered from 0x100), their
//!   encoding and a client.
//!
//! `no_std`, no heap, no statics: all state is in [`server::IommuServer`].

#![no_std]

#[cfg(test)]
extern crate std;

pub mod cdtab;
pub mod cmdq;
pub mod dma;
pub mod driver;
pub mod error;
pub mod evtq;
pub mod frame;
pub mod idl;
pub mod pages;
pub mod pgtable;
pub mod server;
pub mod strtab;
pub mod update;
pub mod wire;

#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
pub use server::{
    AttachResult, DomainId, DomainKind, FaultDuty, GuestContext, Info, IommuServer, NestedConfig,
    PageResponse, Reclaimed, ServerConfig, UnmapMode, VmWindow, CTX_WINDOW, MSI_WINDOW,
};
