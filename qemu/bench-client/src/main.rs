//! IPC benchmark client. Method: under QEMU `-icount shift=0,sleep=off` with
//! `-cpu max` the virtual counter ticks once per guest instruction, so a
//! counter difference is an instruction count. One-way send = from the
//! client's counter read just before `svc` to the server's first read after
//! its `recv` returns, crossing two address spaces (the server has higher
//! priority, so the kernel switches to it directly). The reply figure runs
//! from the server's last counter read before its `reply_recv` to the
//! client's first after `send` returns: the server answers and waits for
//! the next message in that one system call (it outranks the client, so
//! the client runs only once the server's receive blocks). The round trip
//! is send + reply_recv + return, the server's own work between its counter
//! reads included. The cost of a counter read itself is measured and
//! subtracted. Minimum of 64 warm iterations.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn run() -> ! {
    use userlib::*;
    let server = sys_lookup_slot("bench-server").unwrap_or(TaskId::KERNEL);
    let a = counter();
    let b = counter();
    let overhead = b - a;
    let (mut send, mut reply, mut round) = (u64::MAX, u64::MAX, u64::MAX);
    for _ in 0..64 {
        let mut r = [0u8; 16];
        let t0 = counter();
        let (rc, _) = sys_send(server, 1, &t0.to_le_bytes(), &mut r, &[]);
        let t3 = counter();
        if rc != 0 {
            log!("bench: server answered {:#x}", rc);
            sys_shutdown(1);
        }
        let one_way = u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8]));
        let t2 = u64::from_le_bytes(r[8..].try_into().unwrap_or([0; 8]));
        send = send.min(one_way.saturating_sub(overhead));
        reply = reply.min(t3.wrapping_sub(t2).saturating_sub(overhead));
        round = round.min(t3.wrapping_sub(t0).saturating_sub(overhead));
    }
    log!("BENCH ipc_one_way_send {} instructions", send);
    log!("BENCH ipc_reply_then_next_recv {} instructions", reply);
    log!("BENCH ipc_round_trip {} instructions", round);
    log!("BENCH counter_read_overhead {} instructions", overhead);
    sys_shutdown(0)
}

userlib::task_main!(run);
