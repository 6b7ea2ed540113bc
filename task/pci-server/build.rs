//! Links the task image with the shared task linker script, and brings the
//! app's static facts into the crate.
//!
//! `cargo xtask` sets `APP_CONFIG_RS` (a generated file holding, among
//! others, `PCI_DEVICES` and `PCI_ECAM` from app.toml's `[[devices]]` and
//! the board's `[pci]`). Without it the device table is empty: every
//! function found at boot is disabled and no config access is permitted
//! (fail closed).

fn main() {
    build_util::task_link();
    build_util::app_config(&[
        build_util::NO_TASK_NAMES,
        (
            "PCI_DEVICES",
            "pub type PciDevice = (u16, u16, u32, u32, [(u32, u32); 6]);\n\
             pub const PCI_DEVICES: &[PciDevice] = &[];\n\
             pub const PCI_ECAM: &str = \"pcie-ecam\";\n",
        ),
    ]);
}
