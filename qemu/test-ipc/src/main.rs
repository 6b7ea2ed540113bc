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
        ensure(
            u32::from_le_bytes(r) == expect,
            "server read wrong bytes through the lease",
        )
    }

    fn lease_write() -> Outcome {
        let mut data = [0u8; 200];
        let mut r = [0u8; 4];
        let (rc, _) = sys_send(
            echo(),
            LEASE_FILL,
            &[0xAB],
            &mut r,
            &[Lease::write_only(&mut data)],
        );
        ensure(
            rc == 0 && u32::from_le_bytes(r) == 200,
            "server wrote a wrong count",
        )?;
        ensure(
            data.iter().all(|b| *b == 0xAB),
            "lease contents not written",
        )
    }

    fn lease_attributes() -> Outcome {
        // A read-only lease must refuse a write from the server.
        let data = [7u8; 16];
        let mut r = [0u8; 4];
        let (rc, _) = sys_send(
            echo(),
            LEASE_WRITE_ATTEMPT,
            &[],
            &mut r,
            &[Lease::read_only(&data)],
        );
        ensure(rc == 0, "bad reply")?;
        ensure(
            u32::from_le_bytes(r) == abi::RC_BAD_LEASE,
            "write through a read-only lease was allowed",
        )?;
        ensure(data == [7u8; 16], "read-only lease changed")?;
        // No lease at all.
        let (rc, _) = sys_send(echo(), LEASE_WRITE_ATTEMPT, &[], &mut r, &[]);
        ensure(
            rc == 0 && u32::from_le_bytes(r) == abi::RC_BAD_LEASE,
            "missing lease not refused",
        )
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
        ensure(
            r[0] == 1,
            "server received the peer's message in a closed receive",
        )
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
        ensure(
            bits & RTC_BIT != 0,
            "RTC interrupt never arrived as a notification",
        )
    }

    /// FP/SIMD registers survive IPC to a task that uses them too: the
    /// kernel switches FP state lazily, and a bug there shows up as our
    /// registers holding the server's values.
    fn fp_state() -> Outcome {
        let echo = echo();
        let mut out = [0u64; 32];
        let base: u64 = 0x5EED_0000_0000_0000;
        let mut rc: usize = echo.0 as usize | (FP_CLOBBER as usize) << 32;
        // SAFETY: fills d0..d31, makes a send system call with an empty
        // message and reply (x1..x6), then stores d0..d31 into `out` (32
        // words, x10). All FP/SIMD registers and x9/x10 are declared
        // clobbered.
        unsafe {
            core::arch::asm!(
            "mov x9, {base}",
            "fmov d0, x9", "add x9, x9, #1",
            "fmov d1, x9", "add x9, x9, #1",
            "fmov d2, x9", "add x9, x9, #1",
            "fmov d3, x9", "add x9, x9, #1",
            "fmov d4, x9", "add x9, x9, #1",
            "fmov d5, x9", "add x9, x9, #1",
            "fmov d6, x9", "add x9, x9, #1",
            "fmov d7, x9", "add x9, x9, #1",
            "fmov d8, x9", "add x9, x9, #1",
            "fmov d9, x9", "add x9, x9, #1",
            "fmov d10, x9", "add x9, x9, #1",
            "fmov d11, x9", "add x9, x9, #1",
            "fmov d12, x9", "add x9, x9, #1",
            "fmov d13, x9", "add x9, x9, #1",
            "fmov d14, x9", "add x9, x9, #1",
            "fmov d15, x9", "add x9, x9, #1",
            "fmov d16, x9", "add x9, x9, #1",
            "fmov d17, x9", "add x9, x9, #1",
            "fmov d18, x9", "add x9, x9, #1",
            "fmov d19, x9", "add x9, x9, #1",
            "fmov d20, x9", "add x9, x9, #1",
            "fmov d21, x9", "add x9, x9, #1",
            "fmov d22, x9", "add x9, x9, #1",
            "fmov d23, x9", "add x9, x9, #1",
            "fmov d24, x9", "add x9, x9, #1",
            "fmov d25, x9", "add x9, x9, #1",
            "fmov d26, x9", "add x9, x9, #1",
            "fmov d27, x9", "add x9, x9, #1",
            "fmov d28, x9", "add x9, x9, #1",
            "fmov d29, x9", "add x9, x9, #1",
            "fmov d30, x9", "add x9, x9, #1",
            "fmov d31, x9", "add x9, x9, #1",
            "svc #0",
            "fmov x9, d0", "str x9, [x10, #0]",
            "fmov x9, d1", "str x9, [x10, #8]",
            "fmov x9, d2", "str x9, [x10, #16]",
            "fmov x9, d3", "str x9, [x10, #24]",
            "fmov x9, d4", "str x9, [x10, #32]",
            "fmov x9, d5", "str x9, [x10, #40]",
            "fmov x9, d6", "str x9, [x10, #48]",
            "fmov x9, d7", "str x9, [x10, #56]",
            "fmov x9, d8", "str x9, [x10, #64]",
            "fmov x9, d9", "str x9, [x10, #72]",
            "fmov x9, d10", "str x9, [x10, #80]",
            "fmov x9, d11", "str x9, [x10, #88]",
            "fmov x9, d12", "str x9, [x10, #96]",
            "fmov x9, d13", "str x9, [x10, #104]",
            "fmov x9, d14", "str x9, [x10, #112]",
            "fmov x9, d15", "str x9, [x10, #120]",
            "fmov x9, d16", "str x9, [x10, #128]",
            "fmov x9, d17", "str x9, [x10, #136]",
            "fmov x9, d18", "str x9, [x10, #144]",
            "fmov x9, d19", "str x9, [x10, #152]",
            "fmov x9, d20", "str x9, [x10, #160]",
            "fmov x9, d21", "str x9, [x10, #168]",
            "fmov x9, d22", "str x9, [x10, #176]",
            "fmov x9, d23", "str x9, [x10, #184]",
            "fmov x9, d24", "str x9, [x10, #192]",
            "fmov x9, d25", "str x9, [x10, #200]",
            "fmov x9, d26", "str x9, [x10, #208]",
            "fmov x9, d27", "str x9, [x10, #216]",
            "fmov x9, d28", "str x9, [x10, #224]",
            "fmov x9, d29", "str x9, [x10, #232]",
            "fmov x9, d30", "str x9, [x10, #240]",
            "fmov x9, d31", "str x9, [x10, #248]",
            base = in(reg) base,
            in("x10") out.as_mut_ptr(),
            inout("x0") rc,
            in("x1") 0usize, in("x2") 0usize, in("x3") 0usize, in("x4") 0usize,
            in("x5") 0usize, in("x6") 0usize, in("x8") 0usize,
            out("x9") _,
            out("v0") _,
            out("v1") _,
            out("v2") _,
            out("v3") _,
            out("v4") _,
            out("v5") _,
            out("v6") _,
            out("v7") _,
            out("v8") _,
            out("v9") _,
            out("v10") _,
            out("v11") _,
            out("v12") _,
            out("v13") _,
            out("v14") _,
            out("v15") _,
            out("v16") _,
            out("v17") _,
            out("v18") _,
            out("v19") _,
            out("v20") _,
            out("v21") _,
            out("v22") _,
            out("v23") _,
            out("v24") _,
            out("v25") _,
            out("v26") _,
            out("v27") _,
            out("v28") _,
            out("v29") _,
            out("v30") _,
            out("v31") _,
            );
        }
        ensure(rc == 0, "FP_CLOBBER send failed")?;
        for (i, v) in out.iter().enumerate() {
            ensure(*v == base + i as u64, "FP/SIMD register changed across IPC")?;
        }
        Ok(())
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
        ok &= case("ipc_fp_state_preserved", fp_state);
        finish(ok)
    }
}

userlib::task_main!(cases::run);
