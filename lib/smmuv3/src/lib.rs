//! Arm SMMUv3: every register, field and in-memory format under the
//! architecture's names, defined once.
//!
//! - [`regs`]: register offsets (page 0 and page 1) and tock-registers
//!   bitfields for every field;
//! - [`Mmio`]: the one narrow register interface of the driver, with
//!   [`MmioPtr`] for real hardware and [`MmioExt`] for typed access;
//! - [`QueuePtr`]: PROD/CONS arithmetic; [`CmdqError`]: CMDQ_CONS.ERR;
//! - entry formats as zerocopy structs of little-endian words, each field
//!   with a named getter/setter and an associated [`EntryField`] constant:
//!   [`Ste`], [`L1StreamDesc`], [`Cd`], [`L1CdDesc`], [`Command`],
//!   [`Event`], [`PriEntry`];
//! - [`pgtable`]: VMSAv8-64 stage 1 / stage 2 descriptors (4 KiB granule),
//!   leaf encoders ([`pgtable::leaf`]) and a table editor over any memory
//!   ([`pgtable::Table`]);
//! - [`tcr`] and [`S1Context`]: a stage 1 context in TCR_EL1 form and the
//!   one CD builder.
//!
//! Everything a guest's SMMUv3 driver needs to write its own CD and stage 1
//! tables is here, so a guest links this crate, not the host driver.
//!
//! Bit positions follow the Arm SMMUv3 architecture specification (as also
//! spelled in Linux's `arm-smmu-v3.h` and QEMU's `smmuv3-internal.h`).
//! `no_std`, no heap.

#![no_std]

#[macro_use]
pub mod entry;

pub mod attrs;
pub mod cd;
pub mod cmd;
pub mod event;
pub mod mmio;
pub mod pgtable;
pub mod pri;
pub mod queue;
pub mod regs;
pub mod ste;
pub mod tcr;

pub use attrs::{AddrSize, Cacheability, Shareability, Tg0, Tg1};
pub use cd::{Cd, L1CdDesc, S1Context, TcrError};
pub use cmd::{
    Command, CommandKind, Opcode, PriResponse, RangePiece, RangePieces, ResumeAction, SyncCs,
    TlbiScope,
};
pub use entry::{EntryField, ReservedEncoding};
pub use event::{Event, EventClass, EventId};
pub use mmio::{Mmio, MmioExt, MmioPtr};
pub use pri::PriEntry;
pub use queue::{CmdqError, QueuePtr, CMDQ_ENTRY_BYTES, EVENTQ_ENTRY_BYTES, PRIQ_ENTRY_BYTES};
pub use ste::{Eats, InstCfg, L1StreamDesc, PrivCfg, S1Dss, S1Fmt, Shcfg, Ste, StreamConfig, Strw};

/// Bytes per STE.
pub const STE_BYTES: usize = Ste::BYTES;
/// Bytes per CD.
pub const CD_BYTES: usize = Cd::BYTES;
/// The largest SubstreamID width (IDR1.SSIDSIZE) the architecture allows.
pub const MAX_SSID_BITS: u32 = 20;
/// PRGI width in bits.
pub const PRGI_BITS: u32 = 9;

#[cfg(test)]
mod tests;
