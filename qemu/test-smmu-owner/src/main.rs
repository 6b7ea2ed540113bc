//! Owns SMMU page 0 (app.toml `mmio`): answers op 1 with IDR0 and IDR1,
//! read with 32-bit loads as the SMMU requires. Op 2 (task u16, pa u64,
//! len u64; task `TaskId::ANY` = the sender) answers whether that task owns that DMA memory, through the
//! kernel's `phys_owned` (this task has the `memory-query` capability).
//! Op 3 (`test_support::owner::BORROW_AT`) reads the sender's lease 0 at an
//! offset (the isolation test of a lease that wraps). Op 4 answers CR0 and
//! STRTAB_BASE's low word (the register-window isolation test checks a
//! rogue's writes did not reach them).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn run() -> ! {
    use userlib::*;
    let smmu = sys_region_info("smmu-page0");
    let mut buf = [0u8; 24];
    loop {
        let m = sys_recv_open(&mut buf, 0);
        match (m.operation, smmu) {
            (1, Some(r)) if !m.is_notification() => {
                // SAFETY: page 0 of the SMMU, mapped for this task as device
                // memory; IDR0/IDR1 are 32-bit read-only registers.
                let (idr0, idr1) = unsafe {
                    (
                        core::ptr::read_volatile(r.va as *const u32),
                        core::ptr::read_volatile((r.va + 4) as *const u32),
                    )
                };
                let mut out = [0u8; 8];
                out[..4].copy_from_slice(&idr0.to_le_bytes());
                out[4..].copy_from_slice(&idr1.to_le_bytes());
                sys_reply(m.sender, 0, &out);
            }
            (4, Some(r)) if !m.is_notification() => {
                use smmuv3::regs::offset::{CR0, STRTAB_BASE};
                // SAFETY: page 0 of the SMMU, mapped for this task as device
                // memory; 32-bit loads of two of its registers.
                let (cr0, strtab) = unsafe {
                    (
                        core::ptr::read_volatile((r.va + CR0) as *const u32),
                        core::ptr::read_volatile((r.va + STRTAB_BASE) as *const u32),
                    )
                };
                let mut out = [0u8; 8];
                out[..4].copy_from_slice(&cr0.to_le_bytes());
                out[4..].copy_from_slice(&strtab.to_le_bytes());
                sys_reply(m.sender, 0, &out);
            }
            (2, _) if !m.is_notification() && m.message_len == 20 => {
                // TaskId::ANY stands for the sender itself.
                let task = match TaskId(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])) {
                    TaskId::ANY => m.sender,
                    t => t,
                };
                let pa = u64::from_le_bytes(buf[4..12].try_into().unwrap_or([0; 8])) as usize;
                let len = u64::from_le_bytes(buf[12..20].try_into().unwrap_or([0; 8])) as usize;
                sys_reply(m.sender, 0, &[sys_phys_owned(task, pa, len) as u8]);
            }
            (op, _)
                if op == test_support::owner::BORROW_AT as u32
                    && !m.is_notification()
                    && m.message_len == 8 =>
            {
                let off = u64::from_le_bytes(buf[..8].try_into().unwrap_or([0; 8])) as usize;
                let rc = match sys_borrow_read(m.sender, 0, off, &mut [0u8; 16]) {
                    Ok(_) => 0,
                    Err(rc) => rc,
                };
                // To a lender the kernel faulted for its lease, this reply
                // is dropped.
                sys_reply(m.sender, 0, &rc.to_le_bytes());
            }
            _ if !m.is_notification() => {
                sys_reply_fault(m.sender, ReplyFaultReason::UndefinedOperation)
            }
            _ => {}
        }
    }
}

userlib::task_main!(run);
