//! IPC benchmark server: on each message, reads the counter first thing,
//! replies the send's one-way cost, and stamps the reply. It answers and
//! waits for the next message in one system call (`sys_reply_recv`), as a
//! server loop does.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn run() -> ! {
    use userlib::*;
    let mut buf = [0u8; 8];
    let mut m = sys_recv_open(&mut buf, 0);
    loop {
        let t1 = counter();
        if m.is_notification() {
            m = sys_recv_open(&mut buf, 0);
            continue;
        }
        let t0 = u64::from_le_bytes(buf);
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&t1.wrapping_sub(t0).to_le_bytes());
        let t2 = counter();
        out[8..].copy_from_slice(&t2.to_le_bytes());
        m = match sys_reply_recv(m.sender, 0, &out, &mut buf, 0, TaskId::ANY) {
            Ok(m) => m,
            // An open receive never names a dead sender.
            Err(_) => sys_recv_open(&mut buf, 0),
        };
    }
}

userlib::task_main!(run);
