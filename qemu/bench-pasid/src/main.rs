//! pasid-alloc benchmark clients (`cargo xtask bench`,
//! `qemu/apps/bench-pasid.toml`). One crate, two tasks:
//! - `vmm-frontend` (a VM): alloc / free / usage round trips, measured with
//!   the counter around each call, then asks `iommu-server` to do its part
//!   after each free, and asks it to trigger pasid-alloc's report; then
//!   allocates 2^16 PASIDs and does it all again (`*_at_65536`);
//! - `iommu-server` (a stand-in with that name, so pasid-alloc grants it
//!   iommu-server's operations): on each request from the VM (operation 1)
//!   it asks `owner_of`, `next_defunct` and `mark_drained` — the drain of a
//!   defunct PASID with no bind — and replies; operation 2 asks
//!   `owner_died` of a task that holds nothing, pasid-alloc's report
//!   trigger.
//!
//! Method: QEMU `-icount shift=0,sleep=off` with `-cpu max`, one counter
//! tick per instruction; minimum of `ITER` warm iterations, counter-read
//! overhead subtracted. Round trips include both IPC directions; the
//! server-side figures (`pasid_server_op_*`) come from pasid-alloc itself.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use pasid_alloc_api::{PasidAllocClient, PasidAllocError, PasidOwner};
    use userlib::*;

    const ITER: usize = 32;
    /// PASIDs held during the second phase (app: bits 17, quota above it).
    const PREFILL: usize = 1 << 16;

    fn ok<T>(what: &str, r: Result<T, PasidAllocError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                log!("bench-pasid: {} failed: {:?}", what, e);
                sys_shutdown(1)
            }
        }
    }

    /// The iommu-server stand-in: one drain per request.
    fn drainer(alloc: PasidAllocClient) -> ! {
        let mut buf = [0u8; 8];
        loop {
            let msg = sys_recv_open(&mut buf, 0);
            if msg.is_notification() {
                continue;
            }
            let mut rc = 0u32;
            if msg.operation == 2 {
                let _ = alloc.owner_died(TaskId::new(63, Generation(0)));
                sys_reply(msg.sender, 0, &[]);
                continue;
            }
            match alloc.next_defunct() {
                Ok(Some(h)) => {
                    match alloc.owner_of(h.pasid) {
                        Ok(PasidOwner::Defunct { .. }) => {}
                        _ => rc = 1,
                    }
                    if alloc.mark_drained(h).is_err() {
                        rc = 2;
                    }
                }
                _ => rc = 3,
            }
            sys_reply(msg.sender, rc, &[]);
        }
    }

    pub fn run() -> ! {
        let Some(alloc) = sys_lookup_slot("pasid-alloc") else {
            log!("bench-pasid: no pasid-alloc slot");
            sys_shutdown(1)
        };
        let alloc = PasidAllocClient::new(alloc);
        // The VM has a slot to the stand-in; the stand-in has none to the VM.
        let Some(drain) = sys_lookup_slot("iommu-server") else {
            drainer(alloc)
        };
        let a = counter();
        let b = counter();
        let overhead = b - a;
        let rt = |t0: u64, t1: u64| t1.wrapping_sub(t0).saturating_sub(overhead);
        phase(&alloc, drain, rt, "");
        // pasid-alloc's first report: the operations with at most one
        // PASID allocated.
        let _ = sys_send(drain, 2, &[], &mut [], &[]);
        for _ in 0..PREFILL {
            ok("prefill alloc", alloc.alloc());
        }
        phase(&alloc, drain, rt, "_at_65536");
        // The second report: the same with 2^16 PASIDs held (and the
        // flatness ratio).
        let _ = sys_send(drain, 2, &[], &mut [], &[]);
        sys_shutdown(0)
    }

    /// `ITER` rounds of alloc, free, usage and a drain; logs the minimum
    /// round trip of each.
    fn phase(alloc: &PasidAllocClient, drain: TaskId, rt: impl Fn(u64, u64) -> u64, suffix: &str) {
        let (mut ta, mut tf, mut tu) = (u64::MAX, u64::MAX, u64::MAX);
        for _ in 0..ITER {
            let t0 = counter();
            let r = alloc.alloc();
            let t1 = counter();
            let h = ok("alloc", r);
            ta = ta.min(rt(t0, t1));
            let t0 = counter();
            let r = alloc.free(h);
            let t1 = counter();
            ok("free", r);
            tf = tf.min(rt(t0, t1));
            let t0 = counter();
            let r = alloc.usage();
            let t1 = counter();
            ok("usage", r);
            tu = tu.min(rt(t0, t1));
            let (rc, _) = sys_send(drain, 1, &[], &mut [], &[]);
            if rc != 0 {
                log!("bench-pasid: the drain answered {}", rc);
                sys_shutdown(1);
            }
        }
        log!("BENCH pasid_alloc_round_trip{} {} instructions", suffix, ta);
        log!("BENCH pasid_free_round_trip{} {} instructions", suffix, tf);
        log!("BENCH pasid_usage_round_trip{} {} instructions", suffix, tu);
    }
}

userlib::task_main!(image::run);
