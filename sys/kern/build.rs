//! Links the kernel binary with kernel.x and rebuilds it when the generated
//! configuration changes.
use std::env;

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap();
    let bare_metal = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none");
    if bare_metal {
        println!("cargo:rustc-link-arg-bins=-T{dir}/kernel.x");
    }
    println!("cargo:rerun-if-changed=kernel.x");
    println!("cargo:rerun-if-env-changed=KERNEL_CONFIG");
    // Without KERNEL_CONFIG only the library builds (host tests, checks);
    // the binary's `include!(env!("KERNEL_CONFIG"))` then says what is
    // missing: `cargo xtask dist` sets it.
    if let Ok(cfg) = env::var("KERNEL_CONFIG") {
        println!("cargo:rerun-if-changed={cfg}");
        // kernel.x INCLUDEs kernel_memory.x (the board's load address and
        // RAM), which `cargo xtask dist` writes beside the configuration.
        let dir = std::path::Path::new(&cfg)
            .parent()
            .expect("KERNEL_CONFIG names a file");
        if bare_metal {
            println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
        }
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("kernel_memory.x").display()
        );
    }
}
