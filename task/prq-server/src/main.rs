//! The prq-server task: finds its regions (SMMU page 1, `prq-queues`),
//! builds the fault server (recovering from the journal when a previous
//! incarnation left one) and serves the interface with the library's
//! `serve`. All logic is in the library, which the host harness runs
//! unchanged.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use prq_server::{serve, Config, DmaPtr, Prq, Roles, REGION_SIZE};
    use userlib::*;

    // `STREAMS`, `TASK_NAMES` from app.toml (build.rs).
    include!(concat!(env!("OUT_DIR"), "/app_config.rs"));

    /// SMMU page 1 only: the queue PROD/CONS registers. Page-0 offsets
    /// (everything below 0x10000) are refused here, whatever the kernel
    /// maps (on QEMU page 1 aliases page 0: the kernel must still keep
    /// this task away from page 0, which is issue 7 item 2's job).
    struct Page1 {
        base: usize,
    }

    impl smmuv3::Mmio for Page1 {
        fn read32(&self, off: usize) -> u32 {
            match off.checked_sub(smmuv3::regs::offset::PAGE1) {
                // SAFETY: `base` is the VA of SMMU page 1, mapped as Device
                // memory for this task's lifetime; the offset is in the page
                // and 4-aligned (the server only uses queue registers).
                Some(o) if o < 0x1_0000 && o % 4 == 0 => unsafe {
                    core::ptr::read_volatile((self.base + o) as *const u32)
                },
                _ => 0,
            }
        }
        fn write32(&self, off: usize, value: u32) {
            if let Some(o) = off.checked_sub(smmuv3::regs::offset::PAGE1) {
                if o < 0x1_0000 && o % 4 == 0 {
                    // SAFETY: as in `read32`; the page is writable.
                    unsafe { core::ptr::write_volatile((self.base + o) as *mut u32, value) }
                }
            }
        }
        fn read64(&self, _off: usize) -> u64 {
            0
        }
        fn write64(&self, _off: usize, _value: u64) {}
    }

    pub fn run() -> ! {
        let (Some(p1), Some(q)) = (sys_region_info("smmu-page1"), sys_region_info("prq-queues"))
        else {
            log!("prq-server: no smmu-page1 / prq-queues region: not serving");
            loop {
                sys_recv_notification(0);
            }
        };
        if q.size < REGION_SIZE {
            log!("prq-server: prq-queues smaller than {:#x}", REGION_SIZE);
        }
        // SAFETY: `prq-queues` is this task's DMA region: mapped read/write
        // at `va`, contiguous at `pa`, page aligned; only this value
        // accesses it (and the SMMU).
        let mem = unsafe { DmaPtr::new(q.va, q.pa as u64, q.size) };
        let cfg = Config {
            streams: STREAMS,
            evtq_log2: 6,
            priq_log2: 6,
        };
        let mut prq = Prq::new(Page1 { base: p1.va }, mem, &cfg);
        log!(
            "prq-server: incarnation {}, {} groups recovered",
            prq.incarnation,
            prq.stats.recovered
        );
        serve(
            &mut prq,
            Roles {
                task_names: TASK_NAMES,
                streams: STREAMS,
                priq_bit: prq_server::PRIQ_BIT,
                evtq_bit: prq_server::EVTQ_BIT,
                owner_bit: prq_server::OWNER_BIT,
                iommu_bit: prq_server::IOMMU_BIT,
            },
        )
    }
}

userlib::task_main!(image::run);
