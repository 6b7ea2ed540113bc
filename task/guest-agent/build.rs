//! Links the task with the shared task linker script, and brings the app's
//! VM tables (`cargo xtask` writes them to `APP_CONFIG_RS`: `VMS`, `STREAMS`,
//! `TASK_NAMES`, `PCI_DEVICES`) into the crate: the guest reads them as a guest reads its
//! firmware tables — which VM it is, which stream its device has. Without
//! the variable (a host build) every table is empty and the agent reports
//! that it is in no VM.
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
    for (name, empty) in [
        ("STREAMS", "pub const STREAMS: &[(u32, u16)] = &[];\n"),
        ("TASK_NAMES", "pub const TASK_NAMES: &[&str] = &[];\n"),
        (
            "VMS",
            "pub const VMS: &[(u16, u16, u64, u64, u16)] = &[];\n",
        ),
        ("VSIDS", "pub const VSIDS: &[(u32, u32)] = &[];\n"),
        ("SMMU_COHERENT", "pub const SMMU_COHERENT: bool = true;\n"),
        (
            "PCI_DEVICES",
            "pub type PciDevice = (u16, u16, u32, u32, [(u32, u32); 6]);\npub const PCI_DEVICES: &[PciDevice] = &[];\n",
        ),
    ] {
        if !text.contains(&format!("pub const {name}:")) {
            text.push_str(empty);
        }
    }
    if fs::read_to_string(&out).ok().as_deref() != Some(text.as_str()) {
        fs::write(&out, text).expect("cannot write app_config.rs");
    }
}
