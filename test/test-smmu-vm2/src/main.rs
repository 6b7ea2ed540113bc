//! A second VM for the smmu_* cases. It owns stream 0x08 (app.toml) and,
//! when the runner asks, tries to use the runner's stream and domain; the
//! iommu-server must refuse every such request and change nothing.
#![cfg_attr(target_os = "none", no_std, no_main)]

/// Operations the runner sends.
pub mod ops {
    /// message: the runner's domain id (u32 LE); reply: [u32; 8] LE codes
    /// (0 = success, else the iommu-server error code).
    pub const PROBE: u16 = 1;
    /// reply: u32 LE, how many event records the server hands this VM.
    pub const FETCH_EVENTS: u16 = 2;
}

#[cfg(target_os = "none")]
#[export_name = "main"]
fn main() -> ! {
    use iommu_server::pgtable::Prot;
    use iommu_server::wire::Client;
    use iommu_server::{DomainId, Error, GuestContext};
    use smmuv3::{AddrSize, Command, Event, Tg0};
    use userlib::*;

    const RUNNER_SID: u32 = 0x10;
    const OWN_SID: u32 = 0x08;
    let code = |r: Result<(), Error>| r.err().map(|e| e.code()).unwrap_or(0);
    let mut buf = [0u8; 16];
    loop {
        let m = sys_recv_open(&mut buf, 0);
        if m.is_notification() {
            continue;
        }
        let Some(server) = sys_lookup_slot("iommu-server") else {
            sys_reply_fault(m.sender, ReplyFaultReason::UndefinedOperation);
            continue;
        };
        let c = Client::new(server);
        match m.operation as u16 {
            ops::PROBE if m.message_len == 4 => {
                let theirs = DomainId(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
                let mut out = [0u32; 8];
                match c.alloc_s2(0) {
                    Ok(mine) => {
                        out[0] = code(c.attach(RUNNER_SID, mine).map(|_| ()));
                        out[1] = code(c.map(theirs, 0x70_0000, 0x4000_0000, 1, Prot::RW));
                        out[2] = code(c.destroy(theirs));
                        out[3] = code(c.attach(OWN_SID, mine).map(|_| ()));
                        out[4] = code(c.detach(OWN_SID).map(|_| ()));
                        let ctx = GuestContext {
                            ttb0: 0x100_0000,
                            mair: 0xff,
                            asid: 9,
                            t0sz: 25,
                            tg0: Tg0::Granule4K,
                            ips: AddrSize::Bits40,
                            record_faults: true,
                        };
                        out[5] = code(c.bind(RUNNER_SID, 0, &ctx).map(|_| ()));
                        out[6] = match c.invalidate(theirs, &[Command::tlbi_nh_all(0)]) {
                            Ok((_, Some(e))) | Err(e) => e.code(),
                            Ok((_, None)) => 0,
                        };
                        out[7] = code(c.destroy(mine));
                    }
                    Err(e) => out = [e.code(); 8],
                }
                let mut r = [0u8; 32];
                for (i, v) in out.iter().enumerate() {
                    r[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
                }
                sys_reply(m.sender, 0, &r);
            }
            ops::FETCH_EVENTS => {
                let mut ev = [Event::zeroed(); 4];
                let n = c
                    .fetch_events(&mut ev)
                    .map(|(n, _)| n as u32)
                    .unwrap_or(u32::MAX);
                sys_reply(m.sender, 0, &n.to_le_bytes());
            }
            _ => sys_reply_fault(m.sender, ReplyFaultReason::UndefinedOperation),
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("test-smmu-vm2 is a task: it runs inside a QEMU test image");
    std::process::exit(2);
}
