//! Puts the task linker script where every task's link can find it. A task's
//! own build.rs adds `-Ttask-link.x` to its binary only.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::copy("task-link.x", out.join("task-link.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=task-link.x");
}
