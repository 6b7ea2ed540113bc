fn main() {
    // Tasks are linked with the shared task linker script from userlib.
    if std::env::var("TARGET").is_ok_and(|t| t.ends_with("-none")) {
        println!("cargo:rustc-link-arg-bins=-Ttask-link.x");
    }
}
