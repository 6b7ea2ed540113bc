//! The real iommu-server task in the harness, driving the project's SMMUv3
//! model, with real client tasks talking to it over the generated IPC.
//!
//! What stands in for the image's hardware, and how:
//!
//! - **Registers.** [`ModelMmio`] is the task's `smmuv3::Mmio`: the model's
//!   registers, as `SmmuFrame` is page 0 on the board. By default commands
//!   run when CMDQ_PROD is written, as on QEMU ([`Completion::AtDoorbell`]);
//!   with [`Completion::BetweenSteps`] the SMMU only consumes them between
//!   task steps, so the driver's bounded wait really sleeps on its cmd-sync
//!   interrupt and timer, which QEMU never makes it do.
//! - **Strict model.** [`IommuRig`] runs the model with every strict mode
//!   on by default ([`strict_config`]: eager configuration caching, a
//!   throttled 16-entry command queue with slow CMD_SYNCs, walk caches,
//!   UNKNOWN reset values, slow GBPA.UPDATE), seeded by the run; the SMMU
//!   takes a step of its own between task steps (`Smmu::step`, from the
//!   irq source hook), and every store of the driver to its tables while
//!   the SMMU is enabled is a point where the SMMU may fetch the entry
//!   (`Smmu::store_boundary`) and a test may issue DMA
//!   ([`Bus::set_store_hook`]).
//! - **DMA memory.** The server's `smmu-tables` region and every VM's
//!   `guest-ram` are ranges of the model's [`PhysMem`] at fixed physical
//!   addresses ([`TABLES_PA`], [`ram_pa`]), declared with
//!   [`TaskSpec::model_region`]: the task finds them with `sys_region_info`
//!   as in the image, and reaches the bytes through [`ModelDma`] (the host
//!   stand-in for `DmaPtr`).
//! - **Interrupts.** The model's lines (`Smmu::take_irqs`) are turned into
//!   the board's INTIDs by an irq source; the server task owns them with the
//!   image's notification bits (cmd-sync 0x2, gerror 0x4, eventq 0x8).
//! - **Waits.** [`HARNESS_WAITER`] is the image's waiter itself, system call for
//!   system call: a few polls, then sleep on cmd-sync with a 1 ms timer,
//!   give up after ~100 ms.
//! - **Devices.** [`Dma`] issues DMA through the model as a device with a
//!   StreamID would (QEMU's edu, programmed by the VM task).
//! - **pasid-alloc.** The real task (`task/pasid-alloc`, its library's
//!   `serve_with`) over a table sized by the rig; it may post to
//!   iommu-server (a post-only slot, [`crate::TaskSpec::posts`]), and every
//!   run with it ends with the I3 check ([`check_i3`]).
//!
//! Everything the SMMU sees — each command it consumes, each STE word the
//! driver stores while the SMMU is enabled, each DMA — goes into one
//! ordered [`Bus`] log. Tests read it; the note source turns it into
//! [`What::Note`](crate::What::Note) events, so a trace shows which
//! commands each request issued, on the server's lifeline.
//!
//! Where each part lives: this file (the board: INTIDs, notification bits,
//! physical addresses, priorities), `bus` (the model and the ordered log of
//! what the SMMU saw), `driver` (what iommu-server is given: registers, DMA
//! memory, waiter, its task), `devices` (DMA issued as a device), `pasid`
//! (pasid-alloc's task and the I3 check), `decode` (trace text for
//! requests, replies, commands, bus events), `rig` (guest RAM, VM tasks,
//! [`IommuRig`]), `steps` (what each VM step did and saw), `scenarios` (the
//! `cargo xtask trace iommu-…` scenarios).

mod bus;
mod decode;
mod devices;
mod driver;
mod pasid;
mod rig;
mod scenarios;
mod steps;

pub use bus::*;
pub use decode::*;
pub use devices::*;
pub use driver::*;
pub use pasid::*;
pub use rig::*;
pub use scenarios::*;
pub use steps::*;

/// INTIDs of the SMMU's wired interrupts (boards/qemu-virt.toml).
pub const INTID_EVENTQ: u32 = 106;
pub const INTID_PRIQ: u32 = 107;
pub const INTID_CMD_SYNC: u32 = 108;
pub const INTID_GERROR: u32 = 109;

/// The server's notification bits, as app.toml assigns them (the
/// library's, which the image uses).
pub use iommu_server::startup::{CMD_SYNC_BIT, EVENTQ_BIT, GERROR_BIT, TIMER_BIT};

/// Physical address of the server's `smmu-tables` region (the board's RAM
/// base).
pub const TABLES_PA: u64 = 0x4000_0000;
/// 256 pages: a stream's CD table for 2^20 PASIDs takes a 32-page level 1
/// table plus its leaves.
pub const TABLES_SIZE: usize = 0x10_0000;
/// Size of each VM's `guest-ram` (256 pages).
pub const RAM_SIZE: usize = 0x10_0000;

/// Physical address of the `k`-th VM's `guest-ram` (in order of
/// [`IommuRig::vm`]).
pub const fn ram_pa(k: usize) -> u64 {
    0x8000_0000 + k as u64 * 0x1000_0000
}

/// pasid-alloc's quota per VM in the rig unless a test sets one.
pub const DEFAULT_PASID_QUOTA: u32 = 64;

/// Task priorities of the rig: supervisor 0, pasid-alloc 1, iommu-server 2
/// (pasid-alloc ranks above iommu-server: the server calls it during a
/// bind); VMs 3 and below.
pub const PASID_ALLOC_PRIORITY: u8 = 1;
pub const IOMMU_PRIORITY: u8 = 2;
