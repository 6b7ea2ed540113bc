//! prq-server benchmark (`cargo xtask bench`, `qemu/apps/bench-prq.toml`):
//! instructions from the SMMU's EVTQ interrupt to the VM holding the event
//! record, on QEMU under `-icount shift=0,sleep=off` (one CNTVCT tick = one
//! guest instruction).
//!
//! Where the interval starts. edu runs a DMA from a virtual-time timer:
//! QEMU arms it at `now_ms + 100` (whole milliseconds of the virtual
//! clock) when the command is written, and in that timer callback edu's
//! access is translated, the SMMU writes the F_TRANSLATION record into the
//! event queue and raises the EVTQ interrupt — all at that one instant. So
//! `t0 = (floor(t_cmd / 1 ms) + 100 ms)` in counter ticks, read just before
//! the command (a sample whose reads straddle a millisecond boundary is
//! discarded). It ends when `fetch_events` has returned the record to this
//! VM: the kernel's interrupt entry, prq-server's intake (two register-window
//! system calls, the record copy), its post to this VM, and the VM's
//! fetch_events round trip are all inside.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod bench {
    use edu::Edu;
    use idl_runtime::Fixed;
    use iommu_server_api::{IommuClient, StreamId};
    use pci_server_api::{Bdf, PciClient};
    use prq_server_api::{EventRecord, PrqClient};
    use smmuv3::{Event, EventId};
    use userlib::*;

    /// prq-server's notification to an owner (faults or events wait).
    const OWNER_BIT: u32 = 1 << 5;
    const TIMER_BIT: u32 = 1 << 31;
    /// Unmapped in the domain: every DMA there faults.
    const IOVA: u64 = 0x30_0000;
    const SAMPLES: usize = 8;
    /// One millisecond of the 1 GHz counter.
    const MS: u64 = 1_000_000;

    fn fail(why: &str) -> ! {
        log!("bench-prq: {}", why);
        sys_shutdown(1)
    }

    pub fn run() -> ! {
        let (Some(iommu), Some(prq), Some(pci), Some(bar0)) = (
            sys_lookup_slot("iommu-server"),
            sys_lookup_slot("prq-server"),
            sys_lookup_slot("pci-server"),
            sys_region_info("pci-00-02-0-bar0"),
        ) else {
            fail("missing slots or regions")
        };
        // edu 00:02.0 is this task's (app.toml [[devices]]): pci-server
        // placed BAR0; bus mastering is asked of it.
        let pci = PciClient::new(pci);
        if pci.config_write(Bdf(0x10), 0x04, 2, 0x6).is_err() {
            fail("pci-server refused bus mastering");
        }
        // SAFETY: region pci-00-02-0-bar0 is edu's BAR0, mapped into this
        // task only.
        let edu = match unsafe { Edu::at(bar0.va, 0x10) } {
            Ok(e) => e,
            Err(_) => fail("edu not found"),
        };
        let api = IommuClient::new(iommu);
        let prq = PrqClient::new(prq);
        let d = api
            .create_s2_domain(false)
            .unwrap_or_else(|_| fail("create_s2_domain"));
        if api.attach(StreamId(edu.sid), d).is_err() {
            fail("attach");
        }
        let blank = EventRecord {
            sid: StreamId(0),
            event_id: 0,
            words: [0; 4],
        };
        let mut best = u64::MAX;
        let mut taken = 0;
        for _ in 0..SAMPLES * 2 {
            if taken == SAMPLES {
                break;
            }
            let t_cmd = counter();
            let mut t1 = 0;
            let mut got: Option<EventRecord> = None;
            let r = edu.dma(IOVA, 4, true, || {
                if got.is_some() {
                    sleep_for(10, TIMER_BIT);
                    return true;
                }
                sys_set_timer(Some(sys_get_timer() + 1000), TIMER_BIT);
                let bits = sys_recv_notification(OWNER_BIT | TIMER_BIT);
                if bits & OWNER_BIT == 0 {
                    return false;
                }
                let mut out = [blank.to_wire(); 4];
                if let Ok(f) = prq.fetch_events(&mut out) {
                    if f.count >= 1 {
                        t1 = counter();
                        got = EventRecord::from_wire(&out[0]);
                    }
                }
                sys_set_timer(None, TIMER_BIT);
                true
            });
            let t_after = counter();
            let Some(rec) = got else {
                fail("no event record reached the VM")
            };
            if r.is_err() {
                fail("edu DMA never completed");
            }
            let e = Event::from_words(rec.words);
            if e.event_id() != Ok(EventId::FTranslation) || e.sid() != edu.sid {
                fail("the record is not edu's F_TRANSLATION");
            }
            // The DMA's timer was armed at floor(t_cmd) + 100 ms (QEMU's
            // millisecond clock at the command write, a few instructions
            // after t_cmd).
            let t0 = (t_cmd / MS + 100) * MS;
            if t0 > t1 || t1 > t_after || (t_cmd + 1000) / MS != t_cmd / MS {
                continue;
            }
            best = best.min(t1 - t0);
            taken += 1;
        }
        let _ = api.detach(StreamId(edu.sid));
        let _ = api.destroy_domain(d);
        if taken == 0 {
            fail("no clean sample");
        }
        log!("BENCH prq_evtq_irq_to_vm {} instructions", best);
        sys_shutdown(0)
    }
}

userlib::task_main!(bench::run);
