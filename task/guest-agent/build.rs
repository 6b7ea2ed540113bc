//! Links the task with the shared task linker script, and brings the app's
//! VM tables (`cargo xtask` writes them to `APP_CONFIG_RS`: `VMS`, `STREAMS`,
//! `TASK_NAMES`, `PCI_DEVICES`) into the crate: the guest reads them as a guest reads its
//! firmware tables — which VM it is, which stream its device has. Without
//! the variable (a host build) every table is empty and the agent reports
//! that it is in no VM.

fn main() {
    build_util::task_link();
    build_util::app_config(&[
        ("pub const STREAMS:", "pub const STREAMS: &[(u32, u16)] = &[];\n"),
        ("pub const TASK_NAMES:", "pub const TASK_NAMES: &[&str] = &[];\n"),
        (
            "pub const VMS:",
            "pub const VMS: &[(u16, u16, u64, u64, u16)] = &[];\n",
        ),
        ("pub const VSIDS:", "pub const VSIDS: &[(u32, u32)] = &[];\n"),
        ("pub const SMMU_COHERENT:", "pub const SMMU_COHERENT: bool = true;\n"),
        (
            "pub const PCI_DEVICES:",
            "pub type PciDevice = (u16, u16, u32, u32, [(u32, u32); 6]);\npub const PCI_DEVICES: &[PciDevice] = &[];\n",
        ),
    ]);
}
