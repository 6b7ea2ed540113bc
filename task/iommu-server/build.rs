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

fn main() {
    build_util::task_link();
    build_util::app_config(build_util::SMMU_TASK_DEFAULTS);
}
