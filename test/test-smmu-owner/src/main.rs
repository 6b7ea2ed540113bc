//! Owns SMMU page 0 (app.toml `mmio`): answers op 1 with IDR0 and IDR1,
//! read with 32-bit loads as the SMMU requires.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[export_name = "main"]
fn main() -> ! {
    use userlib::*;
    let smmu = sys_region_info("smmu-page0");
    let mut buf = [0u8; 8];
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
            _ if !m.is_notification() => {
                sys_reply_fault(m.sender, ReplyFaultReason::UndefinedOperation)
            }
            _ => {}
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("test-smmu-owner is a task: it runs inside a QEMU test image");
    std::process::exit(2);
}
