//! `boards/<board>.toml`: the serde types of a board file and the checks
//! that need only the board (peripherals, interrupts, `[pci]`).

use super::*;

/// `[pci]` of a board: the PCIe host bridge's windows and how requester
/// ids become StreamIDs.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PciToml {
    /// What kind of root complex it is. Only a generic ECAM host bridge
    /// (QEMU's gpex) is driven by pci-server; any other kind is described
    /// (so its facts live in the board file) but an app with `[[devices]]`
    /// refuses to build on it.
    #[serde(default)]
    pub host_bridge: HostBridge,
    /// The ECAM peripheral (1 MiB per bus from bus 0): `host-bridge = "ecam"`.
    pub ecam: Option<String>,
    /// The configuration window of a non-ECAM root complex (on the
    /// DesignWare RC it is reached through the iATU, not by bus/device/
    /// function offsets).
    pub config: Option<String>,
    /// The peripheral BARs are placed in.
    pub bar_window: String,
    /// The PCI (bus) address of the BAR window's first byte, where the
    /// root complex translates (i.MX95: CPU 0x9_1000_0000 is PCI
    /// 0x1000_0000). Absent: bus address = CPU address (QEMU virt).
    pub bar_window_pci_base: Option<u64>,
    /// The device tree's `iommu-map` of the root complex: requester id
    /// (masked with `iommu-map-mask`) → StreamID. Empty: the identity
    /// (QEMU virt has no iommu-map).
    #[serde(default)]
    pub iommu_map: Vec<IommuMapEntry>,
    /// `iommu-map-mask`: RID bits that select the entry (all bits if absent).
    pub iommu_map_mask: Option<u16>,
}

/// One `iommu-map` entry: RIDs `rid-base .. rid-base + length` map to
/// StreamIDs `sid-base ..`.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IommuMapEntry {
    pub rid_base: u16,
    pub sid_base: u32,
    pub length: u32,
}

/// `[pci] host-bridge`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostBridge {
    /// Generic ECAM (PCI Firmware spec; QEMU gpex): pci-server drives it.
    #[default]
    Ecam,
    /// Synopsys DesignWare root complex as integrated on i.MX95: needs its
    /// DBI/iATU, PHY, clocks and link training set up and its RID→StreamID
    /// LUT programmed before any config access. Not built.
    Designware,
}

impl HostBridge {
    pub fn name(self) -> &'static str {
        match self {
            HostBridge::Ecam => "ecam",
            HostBridge::Designware => "designware",
        }
    }
}

impl PciToml {
    /// The peripheral holding configuration space (the ECAM or the
    /// non-ECAM config window): pci-server's alone.
    pub fn config_space(&self) -> &str {
        self.ecam
            .as_deref()
            .or(self.config.as_deref())
            .unwrap_or_default()
    }

    /// The StreamID of requester id `rid` (`iommu-map` semantics: the
    /// masked RID selects the entry), `None` if no entry covers it.
    pub fn stream_id(&self, rid: u16) -> Option<u32> {
        if self.iommu_map.is_empty() {
            return Some(u32::from(rid));
        }
        let masked = rid & self.iommu_map_mask.unwrap_or(0xffff);
        self.iommu_map.iter().find_map(|e| {
            let off = u32::from(masked).checked_sub(u32::from(e.rid_base))?;
            (off < e.length).then_some(e.sid_base + off)
        })
    }
}

/// `boards/<board>.toml` as written.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BoardToml {
    pub name: String,
    pub ram: Range,
    #[serde(default)]
    pub kernel_devices: Vec<Range>,
    /// Where the boot loader puts the image and jumps: the kernel's link
    /// address (2 MiB aligned, inside `ram`).
    pub load_address: u64,
    /// The kernel's console UART.
    pub console: Console,
    /// A semihosting host is attached (QEMU `-semihosting`): a non-zero
    /// exit status reaches it. No default meaning "yes": on hardware the
    /// semihosting call would be an undefined instruction.
    #[serde(default)]
    pub semihosting: bool,
    pub gic: Gic,
    pub timer: Timer,
    #[serde(default)]
    pub peripherals: IndexMap<String, Peripheral>,
    #[serde(default)]
    pub interrupts: IndexMap<String, Interrupt>,
    /// The SMMU's IDR1.SSIDSIZE (substream ID bits); 0 when not stated.
    /// An app whose tasks use the SMMU may not size its PASID space above it.
    #[serde(default)]
    pub smmu_ssid_bits: u8,
    /// Whether the SMMU's table walks, structure fetches and queue
    /// accesses snoop the CPU's caches (the firmware's `dma-coherent`):
    /// `false` makes iommu-server and prq-server clean what they write and
    /// invalidate what they read (docs/porting.md). No default: an app
    /// whose tasks drive the SMMU refuses to build on a board that does
    /// not say.
    #[serde(default)]
    pub smmu_coherent: Option<bool>,
    /// The PCIe host bridge, if the board has one a device table can use.
    pub pci: Option<PciToml>,
    /// How to run it under QEMU; absent for a board that is hardware only.
    pub qemu: Option<Qemu>,
}

impl BoardToml {
    /// How to run this board under QEMU, or why it cannot be.
    pub fn qemu(&self) -> Result<&Qemu, String> {
        self.qemu.as_ref().ok_or_else(|| {
            format!(
                "board {} has no [qemu]: its image runs on hardware only (load image.bin at {:#x}, docs/porting.md)",
                self.name, self.load_address
            )
        })
    }
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Range {
    pub base: u64,
    pub size: u64,
}

/// A board peripheral a task may be given.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Peripheral {
    pub base: u64,
    pub size: u64,
    /// Set where the range is not a page of its own but an alias of
    /// another peripheral: on QEMU 10 the SMMU's page 1 aliases page 0, so
    /// mapping it would hand out CR0, STRTAB_BASE and the command queue.
    /// Only a task that maps the aliased peripheral itself may map it (it
    /// gains nothing); any other task reaches its registers through a
    /// register window.
    pub aliases: Option<String>,
    /// The register names a register window over it may use
    /// ([`REGISTER_SETS`]).
    pub register_set: Option<String>,
}

impl Peripheral {
    pub fn range(&self) -> Range {
        Range {
            base: self.base,
            size: self.size,
        }
    }
}

/// Register sets a board peripheral can declare: name, then (register,
/// byte offset from the peripheral's base). The offsets come from
/// `lib/smmuv3`'s register map (the one definition), relative to the page.
pub fn register_set(name: &str) -> Option<Vec<(&'static str, u32)>> {
    use smmuv3::regs::offset as o;
    let page1 = |off: usize| (off - o::PAGE1) as u32;
    match name {
        "smmuv3-page1" => Some(vec![
            ("EVENTQ_PROD", page1(o::EVENTQ_PROD)),
            ("EVENTQ_CONS", page1(o::EVENTQ_CONS)),
            ("PRIQ_PROD", page1(o::PRIQ_PROD)),
            ("PRIQ_CONS", page1(o::PRIQ_CONS)),
        ]),
        _ => None,
    }
}

/// Most register windows per task, and registers per window.
pub const MAX_REG_WINDOWS: usize = 4;
pub const MAX_WINDOW_REGS: usize = 16;

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Console {
    pub kind: ConsoleKind,
    pub base: u64,
}

/// `console.kind`: the UART model (`kern::config::ConsoleKind`).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ConsoleKind {
    /// Arm PL011.
    Pl011,
    /// NXP i.MX LPUART (i.MX7ULP/8ULP/93/95 register layout).
    Lpuart,
}

impl ConsoleKind {
    /// The variant's path in the generated kernel table.
    pub fn kern_const(self) -> &'static str {
        match self {
            ConsoleKind::Pl011 => "kern::config::ConsoleKind::Pl011",
            ConsoleKind::Lpuart => "kern::config::ConsoleKind::Lpuart",
        }
    }
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Gic {
    pub version: u32,
    pub distributor: u64,
    pub redistributor: u64,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Timer {
    pub intid: u32,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Interrupt {
    pub intid: u32,
    pub trigger: Trigger,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Edge,
    Level,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Qemu {
    pub binary: String,
    pub min_version: String,
    pub machine: String,
    pub cpu: String,
    pub memory: String,
    #[serde(default)]
    pub args: Vec<String>,
}

pub(super) fn validate_board(file: &str, wanted: &str, b: &BoardToml) -> Result<(), String> {
    if b.name != wanted {
        return Err(format!(
            "{file}: name: \"{}\" does not match the file name (expected \"{wanted}\")",
            b.name
        ));
    }
    let page_range = |field: &str, r: &Range| -> Result<(), String> {
        if r.size == 0 {
            return Err(format!("{file}: {field}: size must not be zero"));
        }
        if !r.base.is_multiple_of(PAGE) || !r.size.is_multiple_of(PAGE) {
            return Err(format!(
                "{file}: {field}: {} is not 4 KiB aligned",
                range_str(r.base, r.size)
            ));
        }
        if r.base.checked_add(r.size).is_none() {
            return Err(format!(
                "{file}: {field}: range overflows the address space"
            ));
        }
        Ok(())
    };
    page_range("ram", &b.ram)?;
    for (i, r) in b.kernel_devices.iter().enumerate() {
        page_range(&format!("kernel-devices[{i}]"), r)?;
    }
    // The kernel maps its devices with one 1 GiB table and RAM with
    // another (sys/kern/src/arch/mmu.rs), both below the task window.
    const GIB: u64 = 1 << 30;
    let task_window_gib = abi::layout::TASK_TEXT as u64 / GIB;
    let gib_of = |r: &Range| (r.base / GIB == (r.base + r.size - 1) / GIB).then_some(r.base / GIB);
    let ram_gib = gib_of(&b.ram).filter(|g| *g < task_window_gib);
    let Some(ram_gib) = ram_gib else {
        return Err(format!(
            "{file}: ram: {} must lie within one GiB below {:#x} (the kernel maps RAM with one 1 GiB table)",
            range_str(b.ram.base, b.ram.size),
            abi::layout::TASK_TEXT
        ));
    };
    let dev_gib = b.kernel_devices.first().and_then(gib_of);
    for (i, r) in b.kernel_devices.iter().enumerate() {
        let g = gib_of(r);
        if g.is_none() || g != dev_gib || g >= Some(task_window_gib) || g == Some(ram_gib) {
            return Err(format!(
                "{file}: kernel-devices[{i}]: {}: all kernel devices must lie in one GiB, below {:#x} and apart from RAM's (the kernel maps them with one 1 GiB table)",
                range_str(r.base, r.size),
                abi::layout::TASK_TEXT
            ));
        }
    }
    // The kernel starts on a 2 MiB boundary (kernel.x: its L3 tables start
    // there) and runs from RAM it maps itself.
    const KERNEL_ALIGN: u64 = 0x20_0000;
    let ram_end = b.ram.base + b.ram.size;
    if !b.load_address.is_multiple_of(KERNEL_ALIGN)
        || b.load_address < b.ram.base
        || b.load_address >= ram_end
    {
        return Err(format!(
            "{file}: load-address: {:#x} must be 2 MiB aligned and inside ram ({})",
            b.load_address,
            range_str(b.ram.base, b.ram.size)
        ));
    }
    let in_kernel_devices = |base: u64, size: u64| {
        b.kernel_devices
            .iter()
            .any(|k| base >= k.base && base + size <= k.base + k.size)
    };
    if !in_kernel_devices(b.console.base, PAGE) {
        return Err(format!(
            "{file}: console.base: {:#x} lies in no kernel-devices range (the kernel maps its console there)",
            b.console.base
        ));
    }
    for (field, base) in [
        ("gic.distributor", b.gic.distributor),
        ("gic.redistributor", b.gic.redistributor),
    ] {
        if !in_kernel_devices(base, 0x2_0000) {
            return Err(format!(
                "{file}: {field}: {base:#x} (+128 KiB) lies in no kernel-devices range (the kernel maps the GIC there)"
            ));
        }
    }
    if b.gic.version != 3 {
        return Err(format!(
            "{file}: gic.version: {} is not supported (only GICv3)",
            b.gic.version
        ));
    }
    for (name, p) in &b.peripherals {
        check_name(file, &format!("peripherals.{name}"), name)?;
        page_range(&format!("peripherals.{name}"), &p.range())?;
        if let Some(a) = &p.aliases {
            if a == name || !b.peripherals.contains_key(a) {
                return Err(format!(
                    "{file}: peripherals.{name}.aliases: \"{a}\" is not another peripheral"
                ));
            }
        }
        if let Some(set) = &p.register_set {
            let Some(regs) = register_set(set) else {
                return Err(format!(
                    "{file}: peripherals.{name}.register-set: unknown register set \"{set}\" (known: \"smmuv3-page1\")"
                ));
            };
            if let Some((r, off)) = regs.iter().find(|(_, off)| u64::from(*off) + 4 > p.size) {
                return Err(format!(
                    "{file}: peripherals.{name}.register-set: {r} at {off:#x} lies outside the peripheral"
                ));
            }
            // The kernel reaches the registers through its own mapping.
            let inside = b
                .kernel_devices
                .iter()
                .any(|k| p.base >= k.base && p.base + p.size <= k.base + k.size);
            if !inside {
                return Err(format!(
                    "{file}: peripherals.{name}: has a register-set but lies in no kernel-devices range (the kernel accesses its registers)"
                ));
            }
        }
    }
    for (i, (a_name, a)) in b.peripherals.iter().enumerate() {
        for (b_name, other) in b.peripherals.iter().take(i) {
            if a.base < other.base + other.size && other.base < a.base + a.size {
                return Err(format!(
                    "{file}: peripherals.{a_name}: {} overlaps peripherals.{b_name} ({})",
                    range_str(a.base, a.size),
                    range_str(other.base, other.size)
                ));
            }
        }
    }
    let mut by_intid: BTreeMap<u32, &str> = BTreeMap::new();
    for (name, irq) in &b.interrupts {
        check_name(file, &format!("interrupts.{name}"), name)?;
        if !(16..1020).contains(&irq.intid) {
            return Err(format!(
                "{file}: interrupts.{name}.intid: {} is not a PPI or SPI (16..1020)",
                irq.intid
            ));
        }
        if irq.intid == b.timer.intid {
            return Err(format!(
                "{file}: interrupts.{name}.intid: {} is the kernel's timer",
                irq.intid
            ));
        }
        if let Some(prev) = by_intid.insert(irq.intid, name) {
            return Err(format!(
                "{file}: interrupts.{name}.intid: {} is also interrupts.{prev}",
                irq.intid
            ));
        }
    }
    if let Some(q) = &b.qemu {
        if parse_version(&q.min_version).is_none() {
            return Err(format!(
                "{file}: qemu.min-version: \"{}\" is not a version like \"9.2\"",
                q.min_version
            ));
        }
    }
    if let Some(pci) = &b.pci {
        validate_pci(file, b, pci)?;
    }
    Ok(())
}

/// `[pci]`: the windows name peripherals of the right kind, the
/// `iommu-map` entries do not overlap.
fn validate_pci(file: &str, b: &BoardToml, pci: &PciToml) -> Result<(), String> {
    let (want, other) = match pci.host_bridge {
        HostBridge::Ecam => (("ecam", &pci.ecam), ("config", &pci.config)),
        HostBridge::Designware => (("config", &pci.config), ("ecam", &pci.ecam)),
    };
    let kind = pci.host_bridge.name();
    let Some(name) = want.1 else {
        return Err(format!(
            "{file}: pci.{}: required with host-bridge = \"{kind}\"",
            want.0
        ));
    };
    if other.1.is_some() {
        return Err(format!(
            "{file}: pci.{}: not used with host-bridge = \"{kind}\"",
            other.0
        ));
    }
    for (field, p) in [(want.0, name), ("bar-window", &pci.bar_window)] {
        if !b.peripherals.contains_key(p) {
            return Err(format!("{file}: pci.{field}: \"{p}\" is not a peripheral"));
        }
    }
    let mask = pci.iommu_map_mask.unwrap_or(0xffff);
    for (i, e) in pci.iommu_map.iter().enumerate() {
        let end = u32::from(e.rid_base) + e.length;
        if e.length == 0 || end > 0x1_0000 || e.sid_base.checked_add(e.length).is_none() {
            return Err(format!(
                "{file}: pci.iommu-map[{i}]: length {} does not fit the RID or StreamID space",
                e.length
            ));
        }
        if e.rid_base & !mask != 0 {
            return Err(format!(
                "{file}: pci.iommu-map[{i}]: rid-base {:#x} has bits outside iommu-map-mask {mask:#x}",
                e.rid_base
            ));
        }
        for (j, o) in pci.iommu_map.iter().enumerate().take(i) {
            let o_end = u32::from(o.rid_base) + o.length;
            if u32::from(e.rid_base) < o_end && u32::from(o.rid_base) < end {
                return Err(format!(
                    "{file}: pci.iommu-map[{i}]: RIDs overlap pci.iommu-map[{j}]"
                ));
            }
        }
    }
    Ok(())
}
