//! Links the task image with the shared task linker script, and brings the
//! app's static facts into the crate.
//!
//! `cargo xtask` sets `APP_CONFIG_RS` (a generated file holding `STREAMS`,
//! `TASK_NAMES`, and for VMs `VMS` and `VSIDS`). Without it, or without
//! those constants, there are no VMs: a frontend finds no entry of its own
//! and serves nothing but errors (fail closed).
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
        None => "pub const STREAMS: &[(u32, u16)] = &[];\n".to_string(),
    };
    if !text.contains("TASK_NAMES") {
        text += "pub const TASK_NAMES: &[&str] = &[];\n";
    }
    if !text.contains("pub const VMS") {
        text += "pub const VMS: &[(u16, u16, u64, u64, u16)] = &[];\n";
    }
    if !text.contains("pub const VSIDS") {
        text += "pub const VSIDS: &[(u32, u32)] = &[];\n";
    }
    if fs::read_to_string(&out).ok().as_deref() != Some(text.as_str()) {
        fs::write(&out, text).expect("cannot write app_config.rs");
    }
}
