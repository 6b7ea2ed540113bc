//! The device table, boot-time programming, the owner filter and the
//! owner-death reset. No system calls: everything goes through a
//! [`ConfigSpace`], so the host tests and the harness run this code on a
//! model configuration space.

use crate::cfg::{capid, cmd, off, ConfigSpace, STATUS_CAP_LIST};
use pci_server_api::{FunctionInfo, PciError as E};
use userlib::TaskId;

/// Most functions in a device table.
pub const MAX_FUNCTIONS: usize = 16;
/// BARs of a type 0 header.
pub const BARS: usize = 6;
/// Bound on capability-list walks (a malformed list cannot loop the
/// server): 48 standard capabilities fit in 0x40..0x100, 960 extended ones
/// in 0x100..0x1000.
const MAX_CAPS: usize = 48;
const MAX_EXT_CAPS: usize = 960;

/// One entry of the image's device table (app.toml `[[devices]]`, checked
/// and laid out by the build): the function, its owner (task index), its
/// StreamID, the vendor/device id it must have (vendor in bits 15:0) and
/// each BAR's (bus address, size); size 0 = the BAR is not implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub bdf: u16,
    pub owner: u16,
    pub sid: u32,
    pub id: u32,
    pub bars: [(u32, u32); BARS],
}

impl Assigned {
    /// From the generated tuple form (`app_config::PCI_DEVICES`).
    pub const fn from_tuple(t: &(u16, u16, u32, u32, [(u32, u32); BARS])) -> Self {
        Assigned {
            bdf: t.0,
            owner: t.1,
            sid: t.2,
            id: t.3,
            bars: t.4,
        }
    }
}

/// What boot found for an assigned function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FnState {
    /// Not yet enumerated.
    Unprobed,
    /// Nothing answers at its routing id.
    Absent,
    /// Present, but its ids, header type or BARs differ from the table:
    /// left disabled.
    Mismatch(Mismatch),
    /// Programmed: BARs at the table's addresses, memory decode on, bus
    /// master off until the owner asks.
    Ready,
}

/// Why a present function was left disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Vendor/device id (what config offset 0 reads).
    Id(u32),
    /// Not a type 0 (endpoint) header.
    HeaderType(u8),
    /// BAR `i` probed this raw value (I/O, 64-bit, a size other than the
    /// table's, or implemented while the table gives it no window).
    Bar(u8, u32),
    /// The programmed BAR or command did not read back.
    Readback,
}

#[derive(Clone, Copy, Debug)]
struct Function {
    table: Assigned,
    state: FnState,
    /// The owner incarnation that last turned bus mastering on (and has
    /// not turned it off since): the one whose death turns it off.
    bus_master_by: Option<TaskId>,
}

/// Counts of what boot did (logged, and checked by the tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootReport {
    /// Assigned functions programmed (`Ready`).
    pub ready: u32,
    /// Assigned functions absent or mismatched.
    pub failed: u32,
    /// Present functions not in the table: I/O, memory decode and bus
    /// mastering turned off.
    pub disabled: u32,
    /// Host bridges (class 06:00), left alone: no VM can own them.
    pub bridges: u32,
}

/// One line boot reports per function it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEvent {
    Ready { bdf: u16, id: u32, owner: u16 },
    Failed { bdf: u16, state: FnState },
    Disabled { bdf: u16, id: u32, command: u16 },
    Bridge { bdf: u16 },
}

/// The server state: a configuration space and the device table.
pub struct Pci<C: ConfigSpace> {
    pub cfg: C,
    funcs: [Option<Function>; MAX_FUNCTIONS],
    /// Buses to enumerate (the ECAM window's).
    buses: u16,
}

/// Checks an access's shape: `size` 1, 2 or 4, `offset` aligned to it,
/// inside the function's 4 KiB.
pub fn check_access(offset: u16, size: u8) -> Result<(), E> {
    if !matches!(size, 1 | 2 | 4)
        || !offset.is_multiple_of(u16::from(size))
        || u32::from(offset) + u32::from(size) > u32::from(off::SPACE)
    {
        return Err(E::Invalid);
    }
    Ok(())
}

impl<C: ConfigSpace> Pci<C> {
    /// The table must have at most [`MAX_FUNCTIONS`] entries with distinct
    /// functions (the build checks both); an entry beyond is refused.
    pub fn new(cfg: C, buses: u16, table: &[Assigned]) -> Result<Self, E> {
        if table.len() > MAX_FUNCTIONS {
            return Err(E::Invalid);
        }
        let mut funcs = [None; MAX_FUNCTIONS];
        for (i, a) in table.iter().enumerate() {
            if table[..i].iter().any(|b| b.bdf == a.bdf) {
                return Err(E::Invalid);
            }
            funcs[i] = Some(Function {
                table: *a,
                state: FnState::Unprobed,
                bus_master_by: None,
            });
        }
        Ok(Pci { cfg, funcs, buses })
    }

    fn find(&self, bdf: u16) -> Option<usize> {
        self.funcs
            .iter()
            .position(|f| f.is_some_and(|f| f.table.bdf == bdf))
    }

    /// The state boot left function `bdf` in (None: not in the table).
    pub fn state(&self, bdf: u16) -> Option<FnState> {
        self.find(bdf).and_then(|i| self.funcs[i]).map(|f| f.state)
    }

    /// The incarnation that last turned `bdf`'s bus mastering on.
    pub fn bus_master_by(&self, bdf: u16) -> Option<TaskId> {
        self.find(bdf)
            .and_then(|i| self.funcs[i])
            .and_then(|f| f.bus_master_by)
    }

    fn command(&mut self, bdf: u16) -> u16 {
        self.cfg.read(bdf, off::COMMAND, 2) as u16
    }

    /// Enumerates the buses: programs every assigned function from the
    /// table, disables every other function (host bridges aside). Calls
    /// `event` once per function seen.
    pub fn boot(&mut self, mut event: impl FnMut(BootEvent)) -> BootReport {
        let mut r = BootReport::default();
        for bus in 0..self.buses {
            for dev in 0..32u16 {
                let f0 = bus << 8 | dev << 3;
                if self.cfg.read(f0, off::ID, 2) == 0xffff {
                    continue;
                }
                let multi = self.cfg.read(f0, off::HEADER_TYPE, 1) & 0x80 != 0;
                for func in 0..if multi { 8 } else { 1 } {
                    let bdf = f0 | func;
                    if self.cfg.read(bdf, off::ID, 2) == 0xffff {
                        continue;
                    }
                    self.boot_one(bdf, &mut r, &mut event);
                }
            }
        }
        // Assigned functions that never answered.
        for f in self.funcs.iter_mut().flatten() {
            if f.state == FnState::Unprobed {
                f.state = FnState::Absent;
                r.failed += 1;
                event(BootEvent::Failed {
                    bdf: f.table.bdf,
                    state: FnState::Absent,
                });
            }
        }
        r
    }

    fn boot_one(&mut self, bdf: u16, r: &mut BootReport, event: &mut impl FnMut(BootEvent)) {
        let id = self.cfg.read(bdf, off::ID, 4);
        let Some(i) = self.find(bdf) else {
            // Class code 06 (bridge), subclass 00 (host bridge).
            if self.cfg.read(bdf, off::CLASS + 2, 2) == 0x0600 {
                r.bridges += 1;
                event(BootEvent::Bridge { bdf });
                return;
            }
            let c = self.command(bdf) & !(cmd::IO | cmd::MEMORY | cmd::BUS_MASTER);
            self.cfg.write(bdf, off::COMMAND, 2, u32::from(c));
            r.disabled += 1;
            let command = self.command(bdf);
            event(BootEvent::Disabled { bdf, id, command });
            return;
        };
        let Some(mut f) = self.funcs[i] else { return };
        f.state = match self.program(bdf, &f.table) {
            Ok(()) => FnState::Ready,
            Err(m) => {
                // Whatever failed, the function stays off.
                self.cfg.write(bdf, off::COMMAND, 2, 0);
                FnState::Mismatch(m)
            }
        };
        f.bus_master_by = None;
        self.funcs[i] = Some(f);
        if f.state == FnState::Ready {
            r.ready += 1;
            event(BootEvent::Ready {
                bdf,
                id,
                owner: f.table.owner,
            });
        } else {
            r.failed += 1;
            event(BootEvent::Failed {
                bdf,
                state: f.state,
            });
        }
    }

    /// Sizes and places the BARs with decoding off, then turns memory
    /// decode on (bus mastering stays off).
    fn program(&mut self, bdf: u16, t: &Assigned) -> Result<(), Mismatch> {
        let id = self.cfg.read(bdf, off::ID, 4);
        if t.id != 0 && id != t.id {
            return Err(Mismatch::Id(id));
        }
        let ht = self.cfg.read(bdf, off::HEADER_TYPE, 1) as u8 & 0x7f;
        if ht != 0 {
            return Err(Mismatch::HeaderType(ht));
        }
        self.cfg.write(bdf, off::COMMAND, 2, 0);
        for (i, &(base, size)) in t.bars.iter().enumerate() {
            let at = off::BAR0 + 4 * i as u16;
            self.cfg.write(bdf, at, 4, u32::MAX);
            let raw = self.cfg.read(bdf, at, 4);
            if size == 0 {
                if raw != 0 {
                    return Err(Mismatch::Bar(i as u8, raw));
                }
                continue;
            }
            // Memory (bit 0 = 0), 32-bit anywhere (bits 2:1 = 00).
            let probed = (!(raw & !0xf)).wrapping_add(1);
            if raw & 0x7 != 0 || probed != size {
                return Err(Mismatch::Bar(i as u8, raw));
            }
            self.cfg.write(bdf, at, 4, base);
            if self.cfg.read(bdf, at, 4) & !0xf != base {
                return Err(Mismatch::Readback);
            }
        }
        // Expansion ROM: address 0, decode off.
        self.cfg.write(bdf, off::ROM, 4, 0);
        self.cfg.write(bdf, off::COMMAND, 2, u32::from(cmd::MEMORY));
        if self.command(bdf) & (cmd::IO | cmd::MEMORY | cmd::BUS_MASTER) != cmd::MEMORY {
            return Err(Mismatch::Readback);
        }
        Ok(())
    }

    /// The caller's function `bdf`, ready for access.
    fn owned(&self, caller: TaskId, bdf: u16) -> Result<usize, E> {
        let i = self.find(bdf).ok_or(E::NotPermitted)?;
        let f = self.funcs[i].as_ref().ok_or(E::NotPermitted)?;
        if f.table.owner != caller.index() as u16 {
            return Err(E::NotPermitted);
        }
        if f.state != FnState::Ready {
            return Err(E::NoDevice);
        }
        Ok(i)
    }

    /// `config_read`: any offset of the caller's own function.
    pub fn read(&mut self, caller: TaskId, bdf: u16, offset: u16, size: u8) -> Result<u32, E> {
        self.owned(caller, bdf)?;
        check_access(offset, size)?;
        Ok(self.cfg.read(bdf, offset, size))
    }

    /// `function_info`.
    pub fn info(&mut self, caller: TaskId, bdf: u16) -> Result<FunctionInfo, E> {
        let i = self.owned(caller, bdf)?;
        let t = self.funcs[i].map(|f| f.table).ok_or(E::NotPermitted)?;
        let mut bars = 0u8;
        for (b, &(_, size)) in t.bars.iter().enumerate() {
            if size != 0 {
                bars |= 1 << b;
            }
        }
        Ok(FunctionInfo {
            stream: t.sid,
            id: self.cfg.read(bdf, off::ID, 4),
            bars,
        })
    }

    /// Which capability (standard, or extended when `offset` ≥ 0x100) the
    /// byte at `offset` belongs to: Unsupported for MSI, MSI-X and SR-IOV,
    /// Range for anything else (every write outside the command register is
    /// refused; this only picks the error).
    fn capability_error(&mut self, bdf: u16, offset: u16) -> E {
        if offset >= off::EXTENDED {
            let mut at = off::EXTENDED;
            for _ in 0..MAX_EXT_CAPS {
                let h = self.cfg.read(bdf, at, 4);
                if h == 0 || h == u32::MAX {
                    break;
                }
                let next = (h >> 20) as u16 & 0xffc;
                // An extended capability runs to the next one; the last
                // one is taken at its architected size (SR-IOV: 0x40
                // bytes, PCIe Base 4.0 §9.3.3), any other as its header.
                let sriov = h as u16 == capid::EXT_SRIOV;
                let end = if next > at {
                    next
                } else {
                    at + if sriov { 0x40 } else { 4 }
                };
                if (at..end).contains(&offset) {
                    return if sriov { E::Unsupported } else { E::Range };
                }
                if next <= at {
                    break;
                }
                at = next;
            }
            return E::Range;
        }
        if self.cfg.read(bdf, off::STATUS, 2) as u16 & STATUS_CAP_LIST == 0 {
            return E::Range;
        }
        let mut at = self.cfg.read(bdf, off::CAP_PTR, 1) as u16 & 0xfc;
        for _ in 0..MAX_CAPS {
            if !(off::HEADER_END..off::EXTENDED).contains(&at) {
                break;
            }
            let h = self.cfg.read(bdf, at, 2);
            let (id, next) = (h as u8, (h >> 8) as u16 & 0xfc);
            let len = match id {
                // MSI (PCI Local Bus 3.0 §6.8.1): 10 bytes, +4 with 64-bit
                // addresses (control bit 7), +10 with per-vector masking
                // (bit 8), rounded to dwords.
                capid::MSI => {
                    let ctl = self.cfg.read(bdf, at + 2, 2);
                    let mut n = 12;
                    if ctl & (1 << 7) != 0 {
                        n += 4;
                    }
                    if ctl & (1 << 8) != 0 {
                        n += 8;
                    }
                    n
                }
                capid::MSIX => 12,
                _ => 2,
            };
            if (at..at + len).contains(&offset) && matches!(id, capid::MSI | capid::MSIX) {
                return E::Unsupported;
            }
            at = next;
        }
        E::Range
    }

    /// `config_write` through the filter: only the command register's
    /// memory-decode and bus-master bits of the caller's own function
    /// change; any other byte written is refused (Range, or Unsupported
    /// inside MSI, MSI-X and SR-IOV) and then nothing at all is written.
    pub fn write(
        &mut self,
        caller: TaskId,
        bdf: u16,
        offset: u16,
        size: u8,
        value: u32,
    ) -> Result<(), E> {
        let i = self.owned(caller, bdf)?;
        check_access(offset, size)?;
        let end = offset + u16::from(size);
        // Bytes outside the command and status registers: refused.
        for b in offset..end {
            if !(off::COMMAND..off::COMMAND + 4).contains(&b) {
                return Err(if b < off::HEADER_END {
                    E::Range
                } else {
                    self.capability_error(bdf, b)
                });
            }
        }
        // The command and status bytes the write carries.
        let mut requested: u16 = 0;
        let mut touches_command = false;
        for b in offset..end {
            let byte = (value >> (8 * (b - offset))) as u8;
            match b - off::COMMAND {
                0 | 1 => {
                    touches_command = true;
                    requested |= u16::from(byte) << (8 * (b - off::COMMAND));
                }
                // Status: write-1-to-clear error bits; only 0 (no change)
                // is accepted.
                _ if byte != 0 => return Err(E::Range),
                _ => {}
            }
        }
        if !touches_command {
            return Ok(());
        }
        // A byte write to 0x04 or 0x05 leaves the other byte as it is.
        let cur = self.command(bdf);
        let mask: u16 = match (offset, size) {
            (o, 1) if o == off::COMMAND => 0x00ff,
            (o, 1) if o == off::COMMAND + 1 => 0xff00,
            _ => 0xffff,
        };
        let kept = cur & mask & !cmd::OWNER_BITS;
        let want = requested & mask & !cmd::OWNER_BITS;
        if want != kept {
            // Other bits than memory decode and bus master would change.
            return Err(E::Range);
        }
        let new = (cur & !(mask & cmd::OWNER_BITS)) | (requested & mask & cmd::OWNER_BITS);
        if new != cur {
            self.cfg.write(bdf, off::COMMAND, 2, u32::from(new));
        }
        if let Some(f) = self.funcs[i].as_mut() {
            // The incarnation that turned it on (or last confirmed it on)
            // is the one whose death turns it off.
            f.bus_master_by = (new & cmd::BUS_MASTER != 0).then_some(caller);
        }
        Ok(())
    }

    fn bus_master_off(&mut self, i: usize) -> bool {
        let Some(f) = self.funcs[i] else { return false };
        let bdf = f.table.bdf;
        let c = self.command(bdf);
        if let Some(f) = self.funcs[i].as_mut() {
            f.bus_master_by = None;
        }
        if c & cmd::BUS_MASTER != 0 {
            self.cfg
                .write(bdf, off::COMMAND, 2, u32::from(c & !cmd::BUS_MASTER));
            true
        } else {
            false
        }
    }

    /// A death: bus mastering off on every function the dead incarnation
    /// `dead` turned it on for (generation-exact: a function the owner's
    /// next incarnation already enabled is not touched). Returns how many
    /// functions were quieted.
    pub fn owner_died(&mut self, dead: TaskId) -> u32 {
        let mut n = 0;
        for i in 0..MAX_FUNCTIONS {
            let hit = self.funcs[i]
                .is_some_and(|f| f.state == FnState::Ready && f.bus_master_by == Some(dead));
            if hit && self.bus_master_off(i) {
                n += 1;
            }
        }
        n
    }

    /// After the death log overflowed: bus mastering off wherever the
    /// incarnation that turned it on is no longer current (`current` maps
    /// a task index to its current id; None: unknown, treated as changed).
    pub fn resync(&mut self, mut current: impl FnMut(u16) -> Option<TaskId>) -> u32 {
        let mut n = 0;
        for i in 0..MAX_FUNCTIONS {
            let Some(f) = self.funcs[i] else { continue };
            let Some(by) = f.bus_master_by else { continue };
            if current(by.index() as u16) != Some(by) && self.bus_master_off(i) {
                n += 1;
            }
        }
        n
    }
}
