//! Links the task image with the shared task linker script, and brings the
//! app's static facts into the crate.
//!
//! `cargo xtask` sets `APP_CONFIG_RS` (a generated file holding, among
//! others, `PCI_DEVICES` and `PCI_ECAM` from app.toml's `[[devices]]` and
//! the board's `[pci]`). Without it the device table is empty: every
//! function found at boot is disabled and no config access is permitted
//! (fail closed).
use std::{env, fs, path::PathBuf};

fn main() {
    if env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none") {
        println!("cargo:rustc-link-arg-bins=-Ttask-link.x");
    }
    println!("cargo:rerun-if-env-changed=APP_CONFIG_RS");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("app_config.rs");
    let mut text = match env::var_os("APP_CONFIG_RS") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("APP_CONFIG_RS={}: cannot read: {e}", path.display()))
        }
        None => String::new(),
    };
    if !text.contains("TASK_NAMES") {
        text += "pub const TASK_NAMES: &[&str] = &[];\n";
    }
    if !text.contains("PCI_DEVICES") {
        text += "pub type PciDevice = (u16, u16, u32, u32, [(u32, u32); 6]);\n\
                 pub const PCI_DEVICES: &[PciDevice] = &[];\n\
                 pub const PCI_ECAM: &str = \"pcie-ecam\";\n";
    }
    if fs::read_to_string(&out).ok().as_deref() != Some(text.as_str()) {
        fs::write(&out, text).expect("cannot write app_config.rs");
    }
}
