//! A second client of test-echo, at a priority between the server and the
//! runner. The runner wakes it with a notification; it then sends one echo.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[export_name = "main"]
fn main() -> ! {
    use userlib::*;
    loop {
        sys_recv_notification(1);
        if let Some(echo) = sys_lookup_slot("test-echo") {
            let mut r = [0u8; 8];
            let (rc, n) = sys_send(echo, test_support::echo::ECHO, b"peer", &mut r, &[]);
            log!("peer's echo answered: code {} len {}", rc, n);
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("test-peer is a task: it runs inside a QEMU test image");
    std::process::exit(2);
}
