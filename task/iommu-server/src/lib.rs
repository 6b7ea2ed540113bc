//! iommu-server: the task that owns the Arm SMMUv3's page 0 (control,
//! stream table, CD tables, command queue) and serves domains, attach /
//! replace / detach, map / unmap, PASID binds, validated guest
//! invalidations and PRI responses.
//!
//! The crate is a library: the image's `main.rs` finds its regions, builds
//! an [`IommuServer`] and calls [`serve`]; the host harness does the same
//! against its SMMUv3 model:
//! - [`dma`], [`pages`]: the DMA region and its page allocator;
//! - [`pgtable`]: S1/S2 I/O page tables;
//! - [`strtab`], [`cdtab`], [`update`]: stream table, CD tables, and the
//!   safe (hitless where possible) STE/CD update;
//! - [`cmdq`]: batching, CMD_SYNC, bounded waits, illegal-command recovery;
//! - [`evtq`]: a minimal event queue reader (prq-server's job, here until
//!   it exists);
//! - [`driver`]: probe and fail-closed initialisation;
//! - [`server`]: objects, owners and operations;
//! - [`idl`]: the generated interface (`iommu-server-api`) on the server,
//!   and the receive loop [`serve`]. Every message is generated from
//!   `idl/iommu-server.idol.ron`; clients use `iommu_server_api::IommuClient`.
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
pub mod faults;
pub mod frame;
pub mod idl;
pub mod pages;
pub mod pgtable;
pub mod server;
pub mod strtab;
pub mod update;

#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
pub use idl::{handle, own_incarnation, serve, serve_unavailable, IdlServer};
pub use server::{
    AttachResult, DomainId, DomainKind, FaultDuty, GuestContext, Info, IommuServer, NestedConfig,
    PageResponse, Reclaimed, Roles, ServerConfig, UnmapMode, VmWindow, CTX_WINDOW, MSI_WINDOW,
};

/// The counter the server measures its own costs with (`IommuInfo`'s
/// `ste_update_instr`, `attach_instr`): CNTVCT_EL0 in the image, where
/// under QEMU `-icount shift=0` one tick is one instruction; 0 on the host,
/// which has no such clock (the harness measures in messages instead).
#[inline(always)]
pub fn now() -> u64 {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    {
        userlib::counter()
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    {
        0
    }
}
