//! Test server for the IPC, isolation and restart images.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn run() -> ! {
    use test_support::echo::*;
    use userlib::*;
    let mut buf = [0u8; 256];
    loop {
        let m = sys_recv_open(&mut buf, 0);
        if m.is_notification() {
            continue;
        }
        let n = m.message_len.min(buf.len());
        match m.operation as u16 {
            ECHO => sys_reply(m.sender, 0, &buf[..n]),
            // EL0-visible system registers (kernel arch isolation cases).
            TLS_READ => {
                let (tp, tpro): (u64, u64);
                // SAFETY: reads of this task's EL0 thread registers.
                unsafe {
                    core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack));
                    core::arch::asm!("mrs {}, tpidrro_el0", out(reg) tpro, options(nomem, nostack));
                }
                let mut r = [0u8; 16];
                r[..8].copy_from_slice(&tp.to_le_bytes());
                r[8..].copy_from_slice(&tpro.to_le_bytes());
                sys_reply(m.sender, 0, &r);
            }
            TLS_WRITE if n >= 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&buf[..8]);
                let v = u64::from_le_bytes(a);
                // SAFETY: TPIDR_EL0 is this task's own register; nothing in
                // this task uses it for thread-local storage.
                unsafe {
                    core::arch::asm!("msr tpidr_el0, {}", in(reg) v, options(nomem, nostack))
                };
                sys_reply(m.sender, 0, &[]);
            }
            PMU_READ | PHYS_TIMER_READ | PHYS_COUNTER_READ | VIRT_TIMER_READ | DCC_WRITE => {
                let v: u64;
                // SAFETY: each is a register access the kernel must trap
                // (the isolation tests ask for it); the value is unused.
                unsafe {
                    match m.operation as u16 {
                        PMU_READ => {
                            core::arch::asm!("mrs {}, pmccntr_el0", out(reg) v, options(nomem, nostack))
                        }
                        PHYS_TIMER_READ => {
                            core::arch::asm!("mrs {}, cntp_ctl_el0", out(reg) v, options(nomem, nostack))
                        }
                        PHYS_COUNTER_READ => {
                            core::arch::asm!("mrs {}, cntpct_el0", out(reg) v, options(nomem, nostack))
                        }
                        VIRT_TIMER_READ => {
                            core::arch::asm!("mrs {}, cntv_ctl_el0", out(reg) v, options(nomem, nostack))
                        }
                        _ => {
                            v = 0x5A;
                            core::arch::asm!("msr dbgdtrtx_el0, {}", in(reg) v, options(nomem, nostack));
                        }
                    }
                }
                sys_reply(m.sender, 0, &v.to_le_bytes());
            }
            LEASE_SUM => {
                let mut sum = 0u32;
                let mut chunk = [0u8; 64];
                let mut off = 0;
                loop {
                    match sys_borrow_read(m.sender, 0, off, &mut chunk) {
                        Ok(0) => break,
                        Ok(k) => {
                            sum += chunk[..k].iter().map(|b| *b as u32).sum::<u32>();
                            off += k;
                        }
                        Err(_) => break,
                    }
                }
                sys_reply(m.sender, 0, &sum.to_le_bytes());
            }
            LEASE_FILL => {
                let v = if n > 0 { buf[0] } else { 0 };
                let len = sys_borrow_info(m.sender, 0).map(|i| i.len).unwrap_or(0);
                let chunk = [v; 64];
                let mut off = 0;
                while off < len {
                    match sys_borrow_write(m.sender, 0, off, &chunk[..(len - off).min(64)]) {
                        Ok(k) if k > 0 => off += k,
                        _ => break,
                    }
                }
                sys_reply(m.sender, 0, &(off as u32).to_le_bytes());
            }
            PANIC => panic!("asked to panic"),
            LEASE_WRITE_ATTEMPT => {
                let rc = match sys_borrow_write(m.sender, 0, 0, &[1, 2, 3]) {
                    Ok(_) => 0,
                    Err(rc) => rc,
                };
                sys_reply(m.sender, 0, &rc.to_le_bytes());
            }
            CLOSED_NEXT => {
                let only = m.sender;
                sys_reply(m.sender, 0, &[]);
                if let Ok(m2) = sys_recv(&mut buf, 0, only) {
                    sys_reply(m2.sender, 0, &[(m2.sender == only) as u8]);
                }
            }
            REPLY_BYTES if n >= 2 => {
                let k = (u16::from_le_bytes([buf[0], buf[1]]) as usize).min(buf.len());
                let out = [0x5Au8; 256];
                sys_reply(m.sender, 0, &out[..k]);
            }
            TOUCH if n >= 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&buf[..8]);
                let addr = u64::from_le_bytes(a) as usize;
                // SAFETY: deliberately out of bounds: the isolation tests ask this
                // task to read an address it was not given; the kernel must
                // fault it. Nothing in this task depends on the value.
                let v = unsafe { core::ptr::read_volatile(addr as *const u32) };
                sys_reply(m.sender, 0, &v.to_le_bytes());
            }
            SEND_TO if n >= 4 => {
                let target = TaskId(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
                let (rc, _) = sys_send(target, ECHO, b"x", &mut [], &[]);
                sys_reply(m.sender, 0, &rc.to_le_bytes());
            }
            FP_CLOBBER => {
                // SAFETY: writes d0..d31 only, all declared clobbered.
                unsafe {
                    core::arch::asm!(
                    "mov x9, {b}",
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
                    b = in(reg) 0xBAD0_0000_0000_0000u64,
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
                sys_reply(m.sender, 0, &[]);
            }
            FAULT_THEN_REPLY => {
                sys_reply_fault(m.sender, ReplyFaultReason::BadMessageContents);
                sys_reply(m.sender, 0, b"late");
            }
            UNDEFINED => {
                // SAFETY: deliberately undefined: the kernel must fault this
                // task (the isolation tests ask for it).
                unsafe { core::arch::asm!("udf #0", options(nomem, nostack)) };
                sys_reply(m.sender, 0, &[]);
            }
            BAD_SYSCALL_ARGS => {
                // A log line "in" kernel RAM: the kernel must fault the
                // caller rather than read it.
                // SAFETY: never dereferenced here; the slice only carries
                // the address and length to the kernel, which checks them.
                let bogus = unsafe { core::slice::from_raw_parts(0x4020_0000 as *const u8, 16) };
                sys_log(bogus);
                sys_reply(m.sender, 0, &[]);
            }
            BAD_SYSCALL => {
                let r = raw_syscall_number(99);
                sys_reply(m.sender, 0, &(r as u32).to_le_bytes());
            }
            PHYS_QUERY => {
                let owned = sys_phys_owned(m.sender, 0x4000_0000, 4096);
                sys_reply(m.sender, 0, &[owned as u8]);
            }
            RECURSE => {
                let depth = recurse(core::hint::black_box(1));
                sys_reply(m.sender, 0, &depth.to_le_bytes());
            }
            POST_TO if n >= 8 => {
                let target = TaskId(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
                let bits = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let rc = sys_post(target, bits);
                sys_reply(m.sender, 0, &rc.to_le_bytes());
            }
            REG_LOOKUP_READ => {
                let name = core::str::from_utf8(&buf[..n]).unwrap_or("");
                let mut r = [0u8; 5];
                if let Some((w, count)) = sys_reg_lookup(name) {
                    r[0] = count as u8;
                    r[1..].copy_from_slice(&sys_reg_read(w, 0).to_le_bytes());
                }
                sys_reply(m.sender, 0, &r);
            }
            REG_READ if n >= 2 => {
                let v = sys_reg_read(buf[0] as usize, buf[1] as usize);
                sys_reply(m.sender, 0, &v.to_le_bytes());
            }
            REG_WRITE if n >= 6 => {
                let v = u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]);
                sys_reg_write(buf[0] as usize, buf[1] as usize, v);
                sys_reply(m.sender, 0, &[]);
            }
            REFRESH if n >= 4 => {
                let id = sys_refresh_task_id(TaskId(u32::from_le_bytes([
                    buf[0], buf[1], buf[2], buf[3],
                ])));
                sys_reply(m.sender, 0, &id.0.to_le_bytes());
            }
            IRQ_ENABLE if n >= 4 => {
                sys_irq_control(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]), true);
                sys_reply(m.sender, 0, &[]);
            }
            MEM_STAMP => {
                let r = match sys_region_info("scratch") {
                    Some(r) => {
                        // SAFETY: this task's own `scratch` memory region
                        // (app.toml), mapped read-write at `va` for `size`
                        // bytes; nothing else in this task refers to it.
                        let mem =
                            unsafe { core::slice::from_raw_parts_mut(r.va as *mut u8, r.size) };
                        let was_zero = mem.iter().all(|b| *b == 0);
                        mem.fill(0xA5);
                        [was_zero as u8]
                    }
                    None => [2],
                };
                sys_reply(m.sender, 0, &r);
            }
            LEND_RAW if n >= 20 => {
                let target = TaskId(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
                let mut w = [0u8; 8];
                w.copy_from_slice(&buf[4..12]);
                let base = u64::from_le_bytes(w) as usize;
                let mut off = [0u8; 8];
                off.copy_from_slice(&buf[12..20]);
                let lease = [Lease::from_raw(abi::LEASE_READ, base, 64)];
                let (rc, _) = sys_send(
                    target,
                    test_support::owner::BORROW_AT,
                    &off,
                    &mut [0u8; 4],
                    &lease,
                );
                sys_reply(m.sender, 0, &rc.to_le_bytes());
            }
            _ => sys_reply_fault(m.sender, ReplyFaultReason::UndefinedOperation),
        }
    }
}

/// A system call with a number the kernel does not know.
#[cfg(target_os = "none")]
fn raw_syscall_number(n: usize) -> usize {
    let mut r0: usize = 0;
    // SAFETY: `svc` with an unknown number in x8; the kernel faults this
    // task, so nothing after it runs in this generation.
    unsafe {
        core::arch::asm!("svc #0", inout("x0") r0, in("x8") n, options(nostack));
    }
    r0
}

/// Recursion the optimiser cannot flatten: each frame keeps a live buffer.
#[cfg(target_os = "none")]
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let mut frame = [n; 32];
    core::hint::black_box(&mut frame);
    if core::hint::black_box(n) == 0 {
        return frame[3];
    }
    recurse(n + 1) + frame[7]
}

userlib::task_main!(run);
