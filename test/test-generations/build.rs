fn main() {
    // Tasks are linked with the shared task linker script from userlib.
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none") {
        println!("cargo:rustc-link-arg-bins=-Ttask-link.x");
    }
}
