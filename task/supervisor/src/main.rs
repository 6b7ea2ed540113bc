#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[export_name = "main"]
fn main() -> ! {
    supervisor::run()
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("supervisor is a task: it runs in the image (cargo xtask run) or in the harness");
    std::process::exit(2);
}
