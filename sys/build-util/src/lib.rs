//! The one build-script implementation shared by every task crate (a
//! build-dependency; it runs on the host).
//!
//! A task's `build.rs` is `build_util::task_link()` and, for a task that
//! reads the app's static facts, `build_util::app_config(&[...])` with the
//! fail-closed defaults that task needs when a fact is absent.

use std::{env, fs, path::PathBuf};

/// Links the task's binaries with the shared task linker script that
/// userlib's build script puts on the link search path. Only for the bare
/// metal target: host builds (checks, harness tests) link normally.
pub fn task_link() {
    if env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none") {
        println!("cargo:rustc-link-arg-bins=-Ttask-link.x");
    }
}

/// The default most tasks state for `STREAMS` (StreamID, task index of its
/// VM): no stream.
pub const NO_STREAMS: (&str, &str) = ("STREAMS", "pub const STREAMS: &[(u32, u16)] = &[];\n");

/// The default most tasks state for `TASK_NAMES` (task names by index):
/// no names, so no caller is recognised by name.
pub const NO_TASK_NAMES: (&str, &str) = ("TASK_NAMES", "pub const TASK_NAMES: &[&str] = &[];\n");

/// The default for `SMMU_COHERENT` (the board's `smmu-coherent`) in a task
/// that maintains the SMMU's tables: without an app (a host build) the safe
/// mode, non-coherent: cleaning is correct on a coherent SMMU too, only
/// slower.
pub const SMMU_COHERENT_SAFE: (&str, &str) =
    ("SMMU_COHERENT", "pub const SMMU_COHERENT: bool = false;\n");

/// The defaults of the tasks that drive the SMMU (iommu-server,
/// prq-server): no stream, no task names, the safe coherency.
pub const SMMU_TASK_DEFAULTS: &[(&str, &str)] = &[NO_STREAMS, NO_TASK_NAMES, SMMU_COHERENT_SAFE];

/// Writes `$OUT_DIR/app_config.rs` for `include!`: the file `cargo xtask`
/// names in `APP_CONFIG_RS` (generated from app.toml and the board), or
/// nothing without it (a host build). Then, for each `(needle, text)` of
/// `defaults` in order, appends `text` when the file so far does not
/// contain `needle`: a task states the fail-closed value of every fact it
/// reads, so it builds without an app and with an app that lacks the fact.
///
/// The file is rewritten only when its contents change, so an unchanged
/// app does not rebuild the task. Reruns when `APP_CONFIG_RS` or the file
/// it names changes (and, as these are the only rerun rules, not on every
/// source edit).
pub fn app_config(defaults: &[(&str, &str)]) {
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
    for (needle, default) in defaults {
        if !text.contains(needle) {
            text.push_str(default);
        }
    }
    if fs::read_to_string(&out).ok().as_deref() != Some(text.as_str()) {
        fs::write(&out, text).expect("cannot write app_config.rs");
    }
}
