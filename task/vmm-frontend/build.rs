//! Links the task image with the shared task linker script, and brings the
//! app's static facts into the crate.
//!
//! `cargo xtask` sets `APP_CONFIG_RS` (a generated file holding `STREAMS`,
//! `TASK_NAMES`, and for VMs `VMS` and `VSIDS`). Without it, or without
//! those constants, there are no VMs: a frontend finds no entry of its own
//! and serves nothing but errors (fail closed).

fn main() {
    build_util::task_link();
    build_util::app_config(&[
        build_util::NO_STREAMS,
        build_util::NO_TASK_NAMES,
        (
            "pub const VMS",
            "pub const VMS: &[(u16, u16, u64, u64, u16)] = &[];\n",
        ),
        ("pub const VSIDS", "pub const VSIDS: &[(u32, u32)] = &[];\n"),
    ]);
}
