//! IPC benchmark server: on each message, reads the counter first thing,
//! replies the send's one-way cost, and stamps the reply.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn run() -> ! {
    use userlib::*;
    let mut buf = [0u8; 8];
    loop {
        let m = sys_recv_open(&mut buf, 0);
        let t1 = counter();
        if m.is_notification() {
            continue;
        }
        let t0 = u64::from_le_bytes(buf);
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&t1.wrapping_sub(t0).to_le_bytes());
        let t2 = counter();
        out[8..].copy_from_slice(&t2.to_le_bytes());
        sys_reply(m.sender, 0, &out);
    }
}

userlib::task_main!(run);
