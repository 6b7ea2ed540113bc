//! Guest scripts shared by the `harness_vmm_*` tests and the trace
//! scenarios of docs/vmm-frontend.md (`cargo xtask trace vmm-…`): a guest
//! driver's bring-up (caps, RAM, PASID, nested stream, its stage 1 in its
//! RAM, bind, the invalidation caching mode asks for), a fault round
//! trip, an invalidation batch stopped by a refused command, and a guest
//! that dies holding delivered faults.

use crate::smmu::{guest_cd, RAM_SIZE};
use crate::vmm::{Guest, VmmRig, GUEST_RAM_IPA};
use crate::Harness;
use prq_server_api::FaultResponse;
use smmuv3::Command;
use smmuv3_model::SmmuConfig;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use vmm_frontend_api::{GuestPasid as GP, GuestSteMode, VirtStreamId as V};

/// Physical StreamIDs of VM a and b; both guests call theirs vSID 1.
pub const PSID_A: u32 = 0x10;
pub const PSID_B: u32 = 0x08;
pub const VSID: u32 = 1;
/// The guest VA its device uses, and the RAM pages of its tables.
pub const VA: u64 = 0x40_0000;
pub const L1: u64 = 10;
pub const TARGET: u64 = 50;
pub const SUCCESS: u64 = 0b10;
pub const INVALID: u64 = 0b01;

pub fn streams_a() -> Vec<(u32, u32)> {
    vec![(PSID_A, VSID)]
}
pub fn streams_b() -> Vec<(u32, u32)> {
    vec![(PSID_B, VSID)]
}

pub fn nested_binds() -> GuestSteMode {
    GuestSteMode::Nested {
        fault_capable: true,
        cd_max_bits: 8,
        cd_table_ipa: 0,
    }
}

/// The guest driver's usual start: caps, RAM, PASID `g`, nested stream,
/// its stage 1 (VA → page TARGET) in its RAM, bind, and the invalidation
/// caching mode asks for. Returns the host PASID the device is given.
pub fn bring_up(g: &Guest, pasid: u32, asid: u16) -> Option<u32> {
    let caps = g.fe.caps();
    g.that(
        "caps: caching mode, PRI, PASIDs",
        matches!(caps, Ok(c) if c.caching_mode && c.pri && c.pasid_bits > 0),
        caps,
    );
    let ram = g.fe.ram();
    g.that(
        "ram: the IPA window",
        matches!(ram, Ok(r) if r.ipa == GUEST_RAM_IPA && r.size == RAM_SIZE as u64),
        ram,
    );
    let a = g.fe.alloc_pasid(GP(pasid));
    g.that("alloc_pasid", a.is_ok(), a);
    let s = g.fe.set_ste(V(VSID), nested_binds());
    g.that("set_ste nested", s.is_ok(), s);
    g.ram.stage1(L1, VA, g.ipa(TARGET), |i| g.ipa(i));
    let b =
        g.fe.bind(V(VSID), GP(pasid), guest_cd(g.ipa(L1), asid), true);
    g.that("bind", b == Ok(1), b);
    let inv = g.invalidate(&[
        Command::cfgi_cd(VSID, pasid, true),
        Command::tlbi_nh_asid(0, asid),
    ]);
    g.that(
        "invalidate after bind",
        matches!(inv, Ok(o) if o.done == 2),
        inv,
    );
    g.device_pasid(pasid)
}

/// Trace: bring-up, DMA through the guest's stage 1 with the host PASID,
/// then a batch whose second command is refused.
pub fn bind_and_invalidate(seed: u64) -> Harness {
    VmmRig::new(SmmuConfig::new())
        .pasid_first(&[7])
        .vm("a", &streams_a(), 4, |g: Guest| {
            let host = bring_up(&g, 1, 5);
            let pa = g.dma.write(PSID_A, host, VA, b"guest data");
            g.that("DMA", pa == Ok(g.ram.page(TARGET)), pa);
            let r = g.invalidate(&[
                Command::tlbi_nh_va(0, 5, VA, true),
                Command::cfgi_ste(PSID_A, true),
            ]);
            g.that("1 done", matches!(r, Ok(o) if o.done == 1), r);
            g.finish()
        })
        .harness(seed)
}

/// Trace: a page request group in guest names, answered Success.
pub fn fault_round_trip(seed: u64) -> Harness {
    VmmRig::new(SmmuConfig::new())
        .pasid_first(&[21])
        .vm("a", &streams_a(), 4, |g: Guest| {
            let host = bring_up(&g, 3, 9);
            g.page_requests(PSID_A, host, 4, 1);
            let mut recs = Vec::new();
            for _ in 0..50 {
                if let Ok((r, _)) = g.fetch_faults() {
                    recs.extend(r);
                }
                if !recs.is_empty() {
                    break;
                }
                g.wait_posted(5);
            }
            if let Some(c) = recs.first().map(|r| r.cookie) {
                let r = g.respond(&[(c, FaultResponse::Success)]);
                g.that("answered", matches!(r, Ok(o) if o.done == 1), r);
            }
            g.wait_until(100, || !g.responses(PSID_A, host, 4).is_empty());
            let r = g.responses(PSID_A, host, 4);
            g.that("Success at the device", r == [SUCCESS], r);
            g.finish()
        })
        .harness(seed)
}

/// Trace: the guest dies holding a delivered fault; the frontend answers
/// it Invalid, unbinds, frees and aborts; the new guest starts clean.
pub fn guest_death(seed: u64) -> Harness {
    let lives = Arc::new(AtomicU32::new(0));
    VmmRig::new(SmmuConfig::new())
        .pasid_first(&[30])
        .vm("a", &streams_a(), 4, move |g: Guest| {
            if lives.fetch_add(1, Ordering::SeqCst) == 0 {
                let host = bring_up(&g, 1, 5);
                g.page_requests(PSID_A, host, 1, 1);
                for _ in 0..50 {
                    if g.fetch_faults().is_ok_and(|(r, _)| !r.is_empty()) {
                        break;
                    }
                    g.wait_posted(5);
                }
                userlib::sys_panic(b"guest dies holding a delivered fault");
            }
            let groups: Vec<_> = g.log.lock().raised.keys().cloned().collect();
            g.wait_until(300, || {
                groups
                    .iter()
                    .all(|k| !g.responses(k.sid, k.ssid, k.prgi).is_empty())
            });
            for k in &groups {
                let r = g.responses(k.sid, k.ssid, k.prgi);
                g.that("Invalid at the device", r == [INVALID], (k, &r));
            }
            let c = g.fe.caps();
            g.that("the new guest is served", c.is_ok(), c);
            g.finish()
        })
        .harness(seed)
}
