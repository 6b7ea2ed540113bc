//! `[[devices]]`: the device table pci-server serves (docs/devices.md).

use super::*;

/// Whether stream VM `vm` and device owner `owner` are the same VM: the
/// same task, or the frontend `vmm-frontend-<x>` and its guest
/// `guest-<x>` (the guest drives the device, the frontend owns its
/// stream).
pub(super) fn same_vm(raw: &AppToml, vm: usize, owner: usize) -> bool {
    if vm == owner {
        return true;
    }
    let name = |i: usize| raw.tasks.get_index(i).map(|(n, _)| n.as_str());
    // A frontend's `vm` table names its guest.
    let guest_of_vm = raw
        .tasks
        .get_index(vm)
        .and_then(|(_, t)| t.vm.as_ref())
        .is_some_and(|v| Some(v.guest.as_str()) == name(owner));
    if guest_of_vm {
        return true;
    }
    match (name(vm), name(owner)) {
        (Some(v), Some(o)) => v
            .strip_prefix("vmm-frontend-")
            .is_some_and(|x| o.strip_prefix("guest-") == Some(x)),
        _ => false,
    }
}

/// Parses "bb:dd.f" (two hex digits, two hex digits, one digit).
fn parse_bdf(s: &str) -> Option<u16> {
    let (bus, rest) = s.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    if bus.len() != 2 || dev.len() != 2 || func.len() != 1 {
        return None;
    }
    let bus = u16::from_str_radix(bus, 16).ok()?;
    let dev = u16::from_str_radix(dev, 16).ok()?;
    let func: u16 = func.parse().ok()?;
    (dev < 32 && func < 8).then_some(bus << 8 | dev << 3 | func)
}

/// `[[devices]]`: functions, owners, ids; BARs placed in the board's BAR
/// window in table order, each naturally aligned.
pub(super) fn validate_devices(
    file: &str,
    raw: &AppToml,
    board: &BoardToml,
    board_file: &str,
) -> Result<Vec<Device>, String> {
    if raw.devices.is_empty() {
        return Ok(Vec::new());
    }
    let Some(pci) = &board.pci else {
        return Err(format!(
            "{file}: devices: board {board_file} has no [pci] host bridge"
        ));
    };
    if pci.host_bridge != HostBridge::Ecam || pci.bar_window_pci_base.is_some() {
        return Err(format!(
            "{file}: devices: {board_file}'s PCIe root complex (host-bridge = \"{}\"{}) is not driven: pci-server only serves a generic ECAM host bridge whose BAR window is not translated (not built; docs/porting.md)",
            pci.host_bridge.name(),
            if pci.bar_window_pci_base.is_some() { ", translated BAR window" } else { "" }
        ));
    }
    let (Some(ecam), Some(window)) = (
        board.peripherals.get(pci.config_space()),
        board.peripherals.get(&pci.bar_window),
    ) else {
        return Err(format!(
            "{board_file}: pci: ecam \"{}\" and bar-window \"{}\" must be peripherals",
            pci.config_space(),
            pci.bar_window
        ));
    };
    let buses = ecam.size >> 20;
    let mut cursor = window.base;
    let mut out: Vec<Device> = Vec::new();
    for (i, d) in raw.devices.iter().enumerate() {
        let at = |f: &str| format!("{file}: devices[{i}].{f}");
        let Some(bdf) = parse_bdf(&d.function) else {
            return Err(format!(
                "{}: \"{}\" is not a function \"bb:dd.f\" (hex bus, device < 0x20, function < 8)",
                at("function"),
                d.function
            ));
        };
        if u64::from(bdf >> 8) >= buses {
            return Err(format!(
                "{}: bus {:#x} is outside the ECAM window ({} bus(es) in {board_file})",
                at("function"),
                bdf >> 8,
                buses
            ));
        }
        if out.iter().any(|o| o.bdf == bdf) {
            return Err(format!(
                "{}: function {} is assigned twice",
                at("function"),
                d.function
            ));
        }
        let Some(owner) = raw.tasks.get_index_of(&d.owner) else {
            return Err(format!("{}: unknown task \"{}\"", at("owner"), d.owner));
        };
        let id = match &d.id {
            None => 0,
            Some(s) => {
                let parsed = s.split_once(':').and_then(|(v, dv)| {
                    (v.len() == 4 && dv.len() == 4)
                        .then(|| {
                            Some(
                                u32::from_str_radix(v, 16).ok()?
                                    | u32::from_str_radix(dv, 16).ok()? << 16,
                            )
                        })
                        .flatten()
                });
                parsed.ok_or_else(|| {
                    format!(
                        "{}: \"{s}\" is not \"vvvv:dddd\" (hex vendor and device id)",
                        at("id")
                    )
                })?
            }
        };
        if d.bars.len() > 6 {
            return Err(format!(
                "{}: {} BARs, a function has at most 6",
                at("bars"),
                d.bars.len()
            ));
        }
        let mut bars = [(0u64, 0u64); 6];
        for (b, &size) in d.bars.iter().enumerate() {
            if size == 0 {
                continue;
            }
            if !size.is_power_of_two() || size < PAGE {
                return Err(format!(
                    "{}: BAR{b} size {size:#x} is not a power of two of at least 4 KiB (a BAR is mapped by whole pages into its owner only)",
                    at("bars")
                ));
            }
            let base = cursor.div_ceil(size) * size;
            if base + size > window.base + window.size || base + size > 1 << 32 {
                return Err(format!(
                    "{}: BAR{b} ({size:#x} bytes) does not fit in {} ({}) after the BARs before it",
                    at("bars"),
                    pci.bar_window,
                    range_str(window.base, window.size)
                ));
            }
            bars[b] = (base, size);
            cursor = base + size;
        }
        let Some(sid) = pci.stream_id(bdf) else {
            return Err(format!(
                "{}: function {} (RID {bdf:#06x}) has no StreamID in {board_file}'s pci.iommu-map",
                at("function"),
                d.function
            ));
        };
        out.push(Device {
            bdf,
            owner,
            sid,
            id,
            bars,
        });
    }
    Ok(out)
}
