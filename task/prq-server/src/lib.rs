//! prq-server: the task that owns SMMU page 1 (the event and PRI queues'
//! PROD/CONS), the event and PRI queue memory and their interrupts, and
//! takes every I/O page fault from the device to its owner and back
//! (ARCHITECTURE.md §5, §7 "Fault", docs/faults.md).
//!
//! The crate is a library: the image's `main.rs` finds its regions, builds
//! a [`Prq`] and calls [`serve`]; the host harness does the same against
//! its SMMUv3 model:
//! - [`mem`]: the one DMA region (event queue, PRI queue, journal);
//! - [`prq`]: intake, groups, routes, owner queues, cookies, responses,
//!   drain, owner death, restart recovery (the journal);
//! - [`idl`]: the generated interface (`prq-server-api`) and [`serve`].
//!
//! `no_std`, no heap, no statics: all state is in [`Prq`].

#![no_std]

#[cfg(test)]
extern crate std;

pub mod idl;
pub mod mem;
pub mod prq;

#[cfg(test)]
mod tests;

pub use idl::{serve, Roles};
pub use mem::{region_size, DmaPtr, QueueMemory, REGION_SIZE};
pub use prq::{Config, Prq, Resp, Stats};

/// Notification bits app.toml gives this task's interrupts.
pub const PRIQ_BIT: u32 = 1 << 0;
pub const EVTQ_BIT: u32 = 1 << 1;
/// Bit posted to a VM with faults or events to fetch.
pub const OWNER_BIT: u32 = 1 << 5;
/// Bit posted to iommu-server when responses wait for `take_responses`
/// (iommu-server's own bits 1..3 are its interrupts).
pub const IOMMU_BIT: u32 = 1 << 4;
/// Posted by the supervisor when it logged a death (`supervisor::DEATH_BIT`;
/// app.toml: the supervisor `posts` prq-server): the log is pulled with
/// `next_death` (docs/faults.md "Owner death").
pub const DEATH_BIT: u32 = 1 << 7;
