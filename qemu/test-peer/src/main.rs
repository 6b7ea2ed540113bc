//! A second client of test-echo, at a priority between the server and the
//! runner. The runner wakes it with a notification: bit 0 → it sends one
//! echo; bit 1 → it asks the server to refuse it and then reply anyway
//! (the server faults it; the late reply must be dropped).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn run() -> ! {
    use userlib::*;
    loop {
        let bits = sys_recv_notification(0b11);
        let Some(echo) = sys_lookup_slot("test-echo") else {
            continue;
        };
        let mut r = [0u8; 8];
        if bits & 1 != 0 {
            let (rc, n) = sys_send(echo, test_support::echo::ECHO, b"peer", &mut r, &[]);
            log!("peer's echo answered: code {} len {}", rc, n);
        }
        if bits & 2 != 0 {
            // Does not return: the server's reply-fault stops this task.
            let (rc, _) = sys_send(echo, test_support::echo::FAULT_THEN_REPLY, &[], &mut r, &[]);
            log!(
                "peer: FAULT_THEN_REPLY returned {:#x}: it should have faulted this task",
                rc
            );
        }
    }
}

userlib::task_main!(run);
