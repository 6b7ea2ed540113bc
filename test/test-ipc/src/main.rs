//! Runner of the ipc_* cases: message passing, leases, closed receive and
//! notifications from the timer and from a real interrupt (the PL031 RTC).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod cases {
    use test_support::{case, echo::*, ensure, finish, Outcome, TIMER_BIT};
    use userlib::*;

    const RTC_BIT: u32 = 1 << 2;

    fn echo() -> TaskId {
        sys_lookup_slot("test-echo").unwrap_or(TaskId::KERNEL)
    }

    fn ping_pong() -> Outcome {
        let mut r = [0u8; 16];
        for i in 0..100u32 {
            let msg = i.to_le_bytes();
            let (rc, n) = sys_send(echo(), ECHO, &msg, &mut r, &[]);
            ensure(rc == 0 && n == 4 && r[..4] == msg, "echo reply differs")?;
        }
        Ok(())
    }

    fn lease_read() -> Outcome {
        let mut data = [0u8; 300];
        for (i, b) in data.iter_mut().enumerate() {
            *b = i as u8;
        }
        let expect: u32 = data.iter().map(|b| *b as u32).sum();
        let mut r = [0u8; 4];
        let (rc, n) = sys_send(echo(), LEASE_SUM, &[], &mut r, &[Lease::read_only(&data)]);
        ensure(rc == 0 && n == 4, "bad reply")?;
        ensure(u32::from_le_bytes(r) == expect, "server read wrong bytes through the lease")
    }

    fn lease_write() -> Outcome {
        let mut data = [0u8; 200];
        let mut r = [0u8; 4];
        let (rc, _) = sys_send(echo(), LEASE_FILL, &[0xAB], &mut r, &[Lease::write_only(&mut data)]);
        ensure(rc == 0 && u32::from_le_bytes(r) == 200, "server wrote a wrong count")?;
        ensure(data.iter().all(|b| *b == 0xAB), "lease contents not written")
    }

    fn lease_attributes() -> Outcome {
        // A read-only lease must refuse a write from the server.
        let data = [7u8; 16];
        let mut r = [0u8; 4];
        let (rc, _) = sys_send(echo(), LEASE_WRITE_ATTEMPT, &[], &mut r, &[Lease::read_only(&data)]);
        ensure(rc == 0, "bad reply")?;
        ensure(u32::from_le_bytes(r) == abi::RC_BAD_LEASE, "write through a read-only lease was allowed")?;
        ensure(data == [7u8; 16], "read-only lease changed")?;
        // No lease at all.
        let (rc, _) = sys_send(echo(), LEASE_WRITE_ATTEMPT, &[], &mut r, &[]);
        ensure(rc == 0 && u32::from_le_bytes(r) == abi::RC_BAD_LEASE, "missing lease not refused")
    }

    fn reply_truncated() -> Outcome {
        let mut r = [0u8; 8];
        let (rc, n) = sys_send(echo(), REPLY_BYTES, &100u16.to_le_bytes(), &mut r, &[]);
        ensure(rc == 0, "bad code")?;
        ensure(n == 100, "client not told the full reply length")?;
        ensure(r == [0x5A; 8], "reply not copied up to the buffer")
    }

    fn closed_receive() -> Outcome {
        let peer = sys_lookup_slot("test-peer").ok_or("no peer slot")?;
        // The server serves our CLOSED_NEXT, then receives only from us.
        let (rc, _) = sys_send(echo(), CLOSED_NEXT, &[], &mut [], &[]);
        ensure(rc == 0, "CLOSED_NEXT refused")?;
        // Wake the peer: it outranks us, runs now and blocks sending to the
        // server — an open receive would take its message first.
        ensure(sys_post(peer, 1) == 0, "post to peer failed")?;
        let mut r = [0u8; 1];
        let (rc, n) = sys_send(echo(), ECHO, b"me", &mut r, &[]);
        ensure(rc == 0 && n == 1, "closed-receive reply missing")?;
        ensure(r[0] == 1, "server received the peer's message in a closed receive")
    }

    fn timer_notification() -> Outcome {
        let start = sys_get_timer();
        let deadline = start + 50;
        sys_set_timer(Some(deadline), TIMER_BIT);
        let bits = sys_recv_notification(TIMER_BIT);
        ensure(bits == TIMER_BIT, "wrong notification bits")?;
        ensure(sys_get_timer() >= deadline, "timer fired early")
    }

    fn irq_notification() -> Outcome {
        let rtc = sys_region_info("rtc").ok_or("no rtc region")?;
        let reg = |off: usize| (rtc.va + off) as *mut u32;
        // SAFETY: the PL031's registers, mapped for this task by app.toml.
        unsafe {
            core::ptr::write_volatile(reg(0x10), 0); // IMSC: masked
            core::ptr::write_volatile(reg(0x1C), 1); // ICR: clear
            let now = core::ptr::read_volatile(reg(0x00)); // DR
            core::ptr::write_volatile(reg(0x04), now + 1); // MR: next second
            core::ptr::write_volatile(reg(0x10), 1); // IMSC: unmask
        }
        sys_irq_control(RTC_BIT, true);
        sys_set_timer(Some(sys_get_timer() + 5_000), TIMER_BIT);
        let bits = sys_recv_notification(RTC_BIT | TIMER_BIT);
        // SAFETY: as above.
        unsafe {
            core::ptr::write_volatile(reg(0x10), 0);
            core::ptr::write_volatile(reg(0x1C), 1);
        }
        sys_set_timer(None, TIMER_BIT);
        ensure(bits & RTC_BIT != 0, "RTC interrupt never arrived as a notification")
    }

    pub fn run() -> ! {
        let mut ok = true;
        ok &= case("ipc_ping_pong", ping_pong);
        ok &= case("ipc_lease_read", lease_read);
        ok &= case("ipc_lease_write", lease_write);
        ok &= case("ipc_lease_attributes", lease_attributes);
        ok &= case("ipc_reply_truncated", reply_truncated);
        ok &= case("ipc_closed_receive", closed_receive);
        ok &= case("ipc_timer_notification", timer_notification);
        ok &= case("ipc_irq_notification", irq_notification);
        finish(ok)
    }
}

#[cfg(target_os = "none")]
#[export_name = "main"]
fn main() -> ! {
    cases::run()
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("test-ipc is a task: it runs inside a QEMU test image");
    std::process::exit(2);
}
