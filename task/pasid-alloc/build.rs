//! Links the task image with the shared task linker script, and brings the
//! app's static facts into the crate.
//!
//! `cargo xtask` sets `APP_CONFIG_RS` (a generated file holding `STREAMS`,
//! `TASK_NAMES`, `PASID_BITS` and `PASID_QUOTA` from app.toml's
//! `[[streams]]`, `[tasks]` and `[pasids]`). Without it, or without the
//! `[pasids]` constants, the space is empty (0 bits: only the reserved
//! PASID 0, so every `alloc` is NoSpace — fail closed).

fn main() {
    build_util::task_link();
    build_util::app_config(&[
        build_util::NO_STREAMS,
        build_util::NO_TASK_NAMES,
        (
            "PASID_BITS",
            "pub const PASID_BITS: u8 = 0;\npub const PASID_QUOTA: u32 = 0;\n",
        ),
    ]);
}
