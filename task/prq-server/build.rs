//! Links the task image with the shared task linker script, and brings the
//! app's static stream→VM map into the crate.
//!
//! `cargo xtask` sets `APP_CONFIG_RS` (absolute path of a generated file
//! holding `pub const STREAMS: &[(u32, u16)] = &[...];` — StreamID, task
//! index of the VM — and `pub const TASK_NAMES: &[&str] = &[...];`, the task
//! names by index) while it builds the tasks of an app. Without it both
//! tables are empty: no stream is attachable (fail closed) and callers are
//! checked by index (a VM is a stream owner: none). A file without
//! `TASK_NAMES` (an older xtask) gets an empty one.
use std::{env, fs, path::PathBuf};

fn main() {
    if env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none") {
        println!("cargo:rustc-link-arg-bins=-Ttask-link.x");
    }
    println!("cargo:rerun-if-env-changed=APP_CONFIG_RS");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("app_config.rs");
    let text = match env::var_os("APP_CONFIG_RS") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("APP_CONFIG_RS={}: cannot read: {e}", path.display()))
        }
        None => "pub const STREAMS: &[(u32, u16)] = &[];\n".to_string(),
    };
    let text = if text.contains("TASK_NAMES") {
        text
    } else {
        text + "pub const TASK_NAMES: &[&str] = &[];\n"
    };
    // The board's SMMU coherency (boards/*.toml `smmu-coherent`). Without
    // an app (a host build) the safe mode: cleaning is correct on a
    // coherent SMMU too, only slower.
    let text = if text.contains("SMMU_COHERENT") {
        text
    } else {
        text + "pub const SMMU_COHERENT: bool = false;\n"
    };
    // Only rewrite on change, so an unchanged map does not rebuild the task.
    if fs::read_to_string(&out).ok().as_deref() != Some(text.as_str()) {
        fs::write(&out, text).expect("cannot write app_config.rs");
    }
}
