//! The prq-server task: finds its SMMU queue registers (a kernel register
//! window, or page 1 where the board maps it) and `prq-queues`,
//! builds the fault server (recovering from the journal when a previous
//! incarnation left one) and serves the interface with the library's
//! `serve`. All logic is in the library, which the host harness runs
//! unchanged.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use prq_server::{serve, Config, DmaPtr, Prq, Roles, REGION_SIZE};
    use userlib::*;

    // `STREAMS`, `TASK_NAMES` from app.toml (build.rs). The file also
    // carries facts other tasks use (the PASID space): not prq-server's.
    #[allow(dead_code)]
    mod app_config {
        include!(concat!(env!("OUT_DIR"), "/app_config.rs"));
    }
    use app_config::{STREAMS, TASK_NAMES};

    /// The registers prq-server uses, in the order app.toml's register
    /// window `smmu-queues` lists them (`regs = ["EVENTQ_PROD",
    /// "EVENTQ_CONS", "PRIQ_PROD", "PRIQ_CONS"]`).
    const WINDOW_REGS: [usize; 4] = [
        smmuv3::regs::offset::EVENTQ_PROD,
        smmuv3::regs::offset::EVENTQ_CONS,
        smmuv3::regs::offset::PRIQ_PROD,
        smmuv3::regs::offset::PRIQ_CONS,
    ];

    /// The SMMU's queue registers, either through the kernel's register
    /// window (boards where page 1 is not a page of its own: QEMU 10's
    /// aliases page 0, so it is never mapped into this task) or through a
    /// direct mapping of page 1 (boards where it is separate). Both
    /// implement `smmuv3::Mmio`, the trait the library and the harness's
    /// model MMIO share; any register prq-server does not own reads 0 and
    /// ignores writes here, and the kernel refuses it anyway.
    enum QueueRegs {
        Window(usize),
        Page1(usize),
    }

    impl smmuv3::Mmio for QueueRegs {
        fn read32(&self, off: usize) -> u32 {
            match *self {
                QueueRegs::Window(w) => match WINDOW_REGS.iter().position(|&r| r == off) {
                    Some(i) => sys_reg_read(w, i),
                    None => 0,
                },
                QueueRegs::Page1(base) => match off.checked_sub(smmuv3::regs::offset::PAGE1) {
                    // SAFETY: `base` is the VA of SMMU page 1, mapped as
                    // Device memory for this task's lifetime; the offset
                    // is in the page and 4-aligned.
                    Some(o) if o < 0x1_0000 && o % 4 == 0 => unsafe {
                        core::ptr::read_volatile((base + o) as *const u32)
                    },
                    _ => 0,
                },
            }
        }
        fn write32(&self, off: usize, value: u32) {
            match *self {
                QueueRegs::Window(w) => {
                    if let Some(i) = WINDOW_REGS.iter().position(|&r| r == off) {
                        sys_reg_write(w, i, value);
                    }
                }
                QueueRegs::Page1(base) => {
                    if let Some(o) = off.checked_sub(smmuv3::regs::offset::PAGE1) {
                        if o < 0x1_0000 && o % 4 == 0 {
                            // SAFETY: as in `read32`; the page is writable.
                            unsafe { core::ptr::write_volatile((base + o) as *mut u32, value) }
                        }
                    }
                }
            }
        }
        fn read64(&self, _off: usize) -> u64 {
            0
        }
        fn write64(&self, _off: usize, _value: u64) {}
    }

    fn queue_regs() -> Option<QueueRegs> {
        if let Some((w, n)) = sys_reg_lookup("smmu-queues") {
            if n == WINDOW_REGS.len() {
                return Some(QueueRegs::Window(w));
            }
            log!(
                "prq-server: register window smmu-queues has {} registers, not 4",
                n as u32
            );
            return None;
        }
        sys_region_info("smmu-page1").map(|p1| QueueRegs::Page1(p1.va))
    }

    pub fn run() -> ! {
        let (Some(regs), Some(q)) = (queue_regs(), sys_region_info("prq-queues")) else {
            log!("prq-server: no smmu-queues window / smmu-page1 / prq-queues region: not serving");
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
        // The board's coherency fact (boards/*.toml `smmu-coherent`).
        let mem = if app_config::SMMU_COHERENT {
            mem
        } else {
            mem.non_coherent()
        };
        let cfg = Config {
            streams: STREAMS,
            evtq_log2: 6,
            priq_log2: 6,
        };
        let mut prq = Prq::new(regs, mem, &cfg);
        log!(
            "prq-server: incarnation {}, {} groups recovered",
            // As u32: one integer formatter less in the image (the u16
            // one alone is 256 bytes of text).
            u32::from(prq.incarnation),
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
                death_bit: prq_server::DEATH_BIT,
            },
        )
    }
}

userlib::task_main!(image::run);
