//! The filter, boot programming and owner-death reset on the model
//! configuration space: every check asserts what reached the model.

use crate::cfg::{cmd, Bdf};
use crate::model::{ModelFunction, ModelSpace};
use crate::pci::{Assigned, FnState, Mismatch, Pci};
use pci_server_api::PciError as E;
use std::format;
use userlib::{Generation, TaskId};

const BRIDGE: u16 = 0x00;
const NIC: u16 = 0x08;
const EDU_A: u16 = 0x10;
const EDU_B: u16 = 0x18;
const EDU_ID: u32 = 0x11e8_1234;
const MIB: u32 = 0x10_0000;
const VM_A: TaskId = TaskId::new(3, Generation(0));
const VM_B: TaskId = TaskId::new(4, Generation(0));

fn edu(bdf: u16) -> ModelFunction {
    let mut f = ModelFunction::endpoint(bdf, EDU_ID, [MIB, 0, 0, 0, 0, 0]);
    // MSI with 64-bit addresses and per-vector masking (24 bytes), then a
    // power-management capability; extended: AER, then SR-IOV.
    f.add_cap(0x60, 0x01, 8, true);
    f.add_cap(0x40, 0x05, 24, true);
    f.bytes[0x42] = 0x80;
    f.bytes[0x43] = 0x01;
    f.add_ext_cap(0x100, 0x0001, 0x40);
    f.add_ext_cap(0x140, 0x0010, 0x40);
    f
}

fn bus() -> ModelSpace {
    let mut bridge = ModelFunction::endpoint(BRIDGE, 0x0008_1b36, [0; 6]);
    bridge.set32(0x08, 0x0600_0000);
    bridge.bytes[0x04] = 0x06;
    let mut nic = ModelFunction::endpoint(NIC, 0x1000_1af4, [0x1000, MIB, 0, 0, 0, 0]);
    // Left enabled by "firmware": boot must turn it off.
    nic.bytes[0x04] = 0x07;
    ModelSpace {
        functions: std::vec![bridge, nic, edu(EDU_A), edu(EDU_B)],
        writes: std::vec::Vec::new(),
    }
}

fn entry(bdf: u16, owner: TaskId, base: u32) -> Assigned {
    Assigned {
        bdf,
        owner: owner.index() as u16,
        sid: u32::from(bdf),
        id: EDU_ID,
        bars: [(base, MIB), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)],
    }
}

fn booted() -> Pci<ModelSpace> {
    let table = [
        entry(EDU_A, VM_A, 0x1000_0000),
        entry(EDU_B, VM_B, 0x1010_0000),
    ];
    let mut p = Pci::new(bus(), 1, &table).unwrap();
    let r = p.boot(|_| {});
    assert_eq!((r.ready, r.failed, r.disabled, r.bridges), (2, 0, 1, 1));
    p.cfg.writes.clear();
    p
}

#[test]
fn boot_places_bars_and_leaves_bus_master_off() {
    let p = booted();
    let (a, b) = (p.cfg.function(EDU_A), p.cfg.function(EDU_B));
    assert_eq!(a.get32(0x10), 0x1000_0000);
    assert_eq!(b.get32(0x10), 0x1010_0000);
    assert_eq!(a.command(), cmd::MEMORY);
    assert_eq!(b.command(), cmd::MEMORY);
    // The unassigned NIC: no I/O, no decoding, no bus mastering.
    assert_eq!(p.cfg.function(NIC).command() & 0x7, 0);
    // The host bridge is not touched.
    assert_eq!(p.cfg.function(BRIDGE).command(), 0x06);
    assert_eq!(p.state(EDU_A), Some(FnState::Ready));
}

#[test]
fn boot_refuses_a_function_unlike_the_table() {
    // Wrong id, wrong BAR size, a BAR the table does not give a window, and
    // an absent function: each left with decoding and bus mastering off.
    let mut wrong_id = entry(EDU_A, VM_A, 0x1000_0000);
    wrong_id.id = 0x1234_5678;
    let mut wrong_size = entry(EDU_B, VM_B, 0x1010_0000);
    wrong_size.bars[0].1 = 2 * MIB;
    let mut nic = entry(NIC, VM_B, 0x1020_0000);
    nic.id = 0;
    nic.bars[0] = (0x1020_0000, 0x1000);
    let absent = entry(0x20, VM_A, 0x1030_0000);
    let mut space = bus();
    space.function_mut(EDU_A).bytes[0x04] = 0x06;
    let mut p = Pci::new(space, 1, &[wrong_id, wrong_size, nic, absent]).unwrap();
    let r = p.boot(|_| {});
    assert_eq!((r.ready, r.failed, r.disabled), (0, 4, 0));
    assert_eq!(
        p.state(EDU_A),
        Some(FnState::Mismatch(Mismatch::Id(EDU_ID)))
    );
    assert!(matches!(
        p.state(EDU_B),
        Some(FnState::Mismatch(Mismatch::Bar(0, _)))
    ));
    assert!(matches!(
        p.state(NIC),
        Some(FnState::Mismatch(Mismatch::Bar(1, _)))
    ));
    assert_eq!(p.state(0x20), Some(FnState::Absent));
    for f in [EDU_A, EDU_B, NIC] {
        assert_eq!(p.cfg.function(f).command() & 0x7, 0, "{}", Bdf(f));
    }
    // The owner gets NoDevice, not a half-programmed function.
    assert_eq!(p.read(VM_A, EDU_A, 0, 4), Err(E::NoDevice));
    assert_eq!(p.write(VM_A, EDU_A, 4, 2, 6), Err(E::NoDevice));
}

#[test]
fn another_vms_function_is_not_permitted_and_nothing_is_touched() {
    let mut p = booted();
    let before = p.cfg.function(EDU_A).bytes;
    assert_eq!(p.read(VM_B, EDU_A, 0, 4), Err(E::NotPermitted));
    assert_eq!(p.read(VM_B, EDU_A, 4, 2), Err(E::NotPermitted));
    assert_eq!(p.info(VM_B, EDU_A), Err(E::NotPermitted));
    // Bus master off, decoding off, a BAR move: all refused.
    assert_eq!(p.write(VM_B, EDU_A, 4, 2, 0), Err(E::NotPermitted));
    assert_eq!(
        p.write(VM_B, EDU_A, 0x10, 4, 0x1010_0000),
        Err(E::NotPermitted)
    );
    // Malformed and foreign: still NotPermitted (nothing is revealed).
    assert_eq!(p.write(VM_B, EDU_A, 3, 4, 0), Err(E::NotPermitted));
    // Unassigned and absent functions are nobody's.
    assert_eq!(p.read(VM_A, NIC, 0, 4), Err(E::NotPermitted));
    assert_eq!(p.write(VM_A, NIC, 4, 2, 6), Err(E::NotPermitted));
    assert_eq!(p.read(VM_A, 0x20, 0, 4), Err(E::NotPermitted));
    assert!(p.cfg.writes.is_empty());
    assert!(p.cfg.function(EDU_A).bytes == before);
}

#[test]
fn malformed_accesses_are_invalid_and_change_nothing() {
    let mut p = booted();
    for (offset, size) in [
        (0, 0),
        (0, 3),
        (0, 8),
        (0, 255),
        (1, 2),
        (2, 4),
        (5, 4),
        (0x0fff, 2),
        (0x0ffe, 4),
        (0x1000, 1),
        (0xfffc, 4),
    ] {
        assert_eq!(
            p.read(VM_A, EDU_A, offset, size),
            Err(E::Invalid),
            "{offset:#x}/{size}"
        );
        assert_eq!(
            p.write(VM_A, EDU_A, offset, size, 0x6),
            Err(E::Invalid),
            "{offset:#x}/{size}"
        );
    }
    assert!(p.cfg.writes.is_empty());
    // The last byte and word of the space are fine to read.
    assert_eq!(p.read(VM_A, EDU_A, 0x0fff, 1), Ok(0));
    assert_eq!(p.read(VM_A, EDU_A, 0x0ffc, 4), Ok(0));
}

#[test]
fn the_owner_reads_everything_including_bars_and_capabilities() {
    let mut p = booted();
    assert_eq!(p.read(VM_A, EDU_A, 0, 4), Ok(EDU_ID));
    assert_eq!(p.read(VM_A, EDU_A, 0, 2), Ok(0x1234));
    assert_eq!(p.read(VM_A, EDU_A, 2, 2), Ok(0x11e8));
    assert_eq!(p.read(VM_A, EDU_A, 0x10, 4), Ok(0x1000_0000));
    assert_eq!(p.read(VM_A, EDU_A, 0x34, 1), Ok(0x40));
    assert_eq!(p.read(VM_A, EDU_A, 0x40, 2), Ok(0x6005));
    assert_eq!(p.read(VM_A, EDU_A, 0x140, 2), Ok(0x10));
    let i = p.info(VM_A, EDU_A).unwrap();
    assert_eq!((i.stream, i.id, i.bars), (0x10, EDU_ID, 1));
    assert!(p.cfg.writes.is_empty());
}

#[test]
fn command_register_takes_only_memory_and_bus_master() {
    let mut p = booted();
    // Bus master on (word, dword with zero status, byte).
    assert_eq!(p.write(VM_A, EDU_A, 4, 2, 0x6), Ok(()));
    assert_eq!(p.cfg.function(EDU_A).command(), 0x6);
    assert_eq!(p.bus_master_by(EDU_A), Some(VM_A));
    assert_eq!(p.write(VM_A, EDU_A, 4, 4, 0x2), Ok(()));
    assert_eq!(p.cfg.function(EDU_A).command(), 0x2);
    assert_eq!(p.bus_master_by(EDU_A), None);
    assert_eq!(p.write(VM_A, EDU_A, 4, 1, 0x6), Ok(()));
    assert_eq!(p.cfg.function(EDU_A).command(), 0x6);
    // The high byte: only 0 (nothing to change there).
    assert_eq!(p.write(VM_A, EDU_A, 5, 1, 0), Ok(()));
    p.cfg.writes.clear();
    // Refused: I/O space, INTx disable, SERR, a status bit to clear.
    for (off, size, v) in [
        (4, 2, 0x7),
        (4, 2, 0x406),
        (5, 1, 0x01),
        (4, 4, 0x0100_0006),
        (6, 2, 0x8000),
        (7, 1, 0x80),
    ] {
        assert_eq!(
            p.write(VM_A, EDU_A, off, size, v),
            Err(E::Range),
            "{off:#x}={v:#x}"
        );
    }
    assert!(p.cfg.writes.is_empty());
    assert_eq!(p.cfg.function(EDU_A).command(), 0x6);
    // Memory decode off is the owner's choice.
    assert_eq!(p.write(VM_A, EDU_A, 4, 2, 0x0), Ok(()));
    assert_eq!(p.cfg.function(EDU_A).command(), 0);
}

#[test]
fn fixed_registers_and_unsupported_capabilities_are_refused() {
    let mut p = booted();
    let before = p.cfg.function(EDU_A).bytes;
    for (off, size, want) in [
        (0x00, 4, E::Range),        // ids
        (0x0c, 1, E::Range),        // cache line size
        (0x10, 4, E::Range),        // BAR0: fixed by the table
        (0x14, 4, E::Range),        // BAR1
        (0x30, 4, E::Range),        // expansion ROM
        (0x3c, 1, E::Range),        // interrupt line
        (0x40, 4, E::Unsupported),  // MSI header and control
        (0x44, 4, E::Unsupported),  // MSI address
        (0x54, 4, E::Unsupported),  // MSI pending bits (last dword)
        (0x60, 4, E::Range),        // power management: fixed
        (0x80, 4, E::Range),        // outside any capability
        (0x104, 4, E::Range),       // AER
        (0x140, 4, E::Unsupported), // SR-IOV header
        (0x160, 2, E::Unsupported), // inside SR-IOV
        (0x200, 4, E::Range),       // past the last extended capability's next
    ] {
        assert_eq!(
            p.write(VM_A, EDU_A, off, size, u32::MAX),
            Err(want),
            "{off:#x}"
        );
    }
    assert!(p.cfg.writes.is_empty());
    assert!(p.cfg.function(EDU_A).bytes == before);
}

#[test]
fn owner_death_turns_off_bus_mastering_of_that_incarnation_only() {
    let mut p = booted();
    assert_eq!(p.write(VM_A, EDU_A, 4, 2, 0x6), Ok(()));
    assert_eq!(p.write(VM_B, EDU_B, 4, 2, 0x6), Ok(()));
    // Another task's death touches nothing.
    assert_eq!(p.owner_died(TaskId::new(5, Generation(0))), 0);
    assert_eq!(p.owner_died(VM_B), 1);
    assert_eq!(p.cfg.function(EDU_B).command(), cmd::MEMORY);
    assert_eq!(p.cfg.function(EDU_A).command(), 0x6);
    // B's next incarnation turns it on again; a replay of the old death
    // does not take it away.
    let b1 = VM_B.with_generation(Generation(1));
    assert_eq!(p.write(b1, EDU_B, 4, 2, 0x6), Ok(()));
    assert_eq!(p.owner_died(VM_B), 0);
    assert_eq!(p.cfg.function(EDU_B).command(), 0x6);
    // After an overflowed log: off wherever the enabler is not current
    // (A died unseen: its current incarnation is generation 1, as is B's).
    let n = p.resync(|i| Some(TaskId::new(usize::from(i), Generation(1))));
    assert_eq!(n, 1);
    assert_eq!(p.cfg.function(EDU_A).command(), cmd::MEMORY);
    assert_eq!(p.cfg.function(EDU_B).command(), 0x6);
    assert_eq!(format!("{}", Bdf(EDU_B)), "00:03.0");
}
