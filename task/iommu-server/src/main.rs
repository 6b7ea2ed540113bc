//! The iommu-server task: finds its regions, probes and initialises the
//! SMMU (fail closed), then serves the interface with the library's
//! `serve`. All logic is in the library (`iommu_server`), which the host
//! harness runs unchanged.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use iommu_server::cmdq::SyscallWaiter;
    use iommu_server::dma::DmaPtr;
    use iommu_server::frame::SmmuFrame;
    use iommu_server::{driver, serve, serve_unavailable, Error, IommuServer, ServerConfig};
    use userlib::*;

    // The static stream → VM map and the task names from app.toml
    // (`STREAMS`, `TASK_NAMES`; build.rs).
    include!(concat!(env!("OUT_DIR"), "/app_config.rs"));

    // Notification bits, as app.toml's `interrupts` table must assign
    // them: { "smmu-cmd-sync" = 0x2, "smmu-gerror" = 0x4 }, plus
    // "smmu-eventq" = 0x8 when the task also has `smmu-page1`.
    const CMD_SYNC_BIT: u32 = 1 << 1;
    const GERROR_BIT: u32 = 1 << 2;
    const EVENTQ_BIT: u32 = 1 << 3;
    const TIMER_BIT: u32 = 1 << 31;

    /// Command completion: polls, then the cmd-sync interrupt (see
    /// `SyscallWaiter`).
    const WAITER: SyscallWaiter = SyscallWaiter {
        cmd_sync_bit: CMD_SYNC_BIT,
        timer_bit: TIMER_BIT,
    };

    /// Without an SMMU this task still answers (every request gets the
    /// error), so no client blocks forever.
    fn unavailable(why: Error) -> ! {
        log!("iommu-server: not serving: {:?}", why);
        serve_unavailable(why)
    }

    pub fn run() -> ! {
        let (Some(p0), Some(tables)) = (
            sys_region_info("smmu-page0"),
            sys_region_info("smmu-tables"),
        ) else {
            unavailable(Error::HardwareError)
        };
        let p1 = sys_region_info("smmu-page1");
        // SAFETY: app.toml maps SMMU page 0 (and page 1 if present) into
        // this task as device memory, 64 KiB each and 64 KiB aligned; this
        // task creates no references into them.
        let frame = unsafe { SmmuFrame::new(p0.va, p1.map(|r| r.va)) };
        // SAFETY: `smmu-tables` is this task's DMA memory region: mapped
        // read/write at `va`, physically contiguous at `pa`, page aligned;
        // only this value accesses it.
        let mem = unsafe { DmaPtr::new(tables.va, tables.pa as u64, tables.size) };

        match driver::probe(&frame) {
            Ok(f) => log!(
                "SMMU IDR0={:#010x} IDR1={:#010x} IDR3={:#010x} IDR5={:#010x}: S1P={} S2P={} SIDSIZE={} SSIDSIZE={} OAS={} bits",
                f.idr0,
                f.idr1,
                f.idr3,
                f.idr5,
                f.s1 as u8,
                f.s2 as u8,
                f.sid_bits,
                f.ssid_bits,
                f.oas.bits()
            ),
            Err(e) => {
                log!("SMMU IDR0={:#010x} IDR1={:#010x}: unusable", frame_read(&frame, 0), frame_read(&frame, 4));
                unavailable(e)
            }
        }

        let cfg = ServerConfig {
            streams: STREAMS,
            task_names: TASK_NAMES,
            // With TASK_NAMES these two are found by name.
            prq_server: None,
            supervisor: 0,
            max_pasid_bits: 20,
            sync_irq: true,
            event_queue: frame.has_page1(),
            vm_memory: None,
            // app.toml must give this task `caps = ["memory-query"]`.
            memory_query: true,
            incarnation: iommu_server::own_incarnation(TASK_NAMES),
            gerror_bit: GERROR_BIT,
            eventq_bit: EVENTQ_BIT,
        };
        // The server is large (its bounded tables): use it where `new`
        // left it, inside the Result, rather than moving a copy onto this
        // frame.
        let mut built = IommuServer::new(frame, mem, WAITER, &cfg);
        let server = match &mut built {
            Ok(s) => s,
            Err(e) => unavailable(*e),
        };
        let info = server.info();
        log!(
            "iommu-server: SMMU enabled (CR0={:#x} GBPA={:#x} STRTAB_BASE_CFG={:#x}), {} streams, {} of {} table pages free, event queue {}",
            info.cr0,
            info.gbpa,
            info.strtab_cfg,
            STREAMS.len(),
            info.pages_free,
            info.pages_total,
            if cfg.event_queue { "on" } else { "off (no page 1)" }
        );
        match server.self_test_illegal_command() {
            Ok(f) => log!(
                "iommu-server: command queue recovered from an illegal command (opcode {:#x}, CMDQ_CONS.ERR {})",
                f.opcode,
                f.err.raw()
            ),
            Err(e) => log!("iommu-server: illegal-command recovery self-test failed: {:?}", e),
        }
        serve(server)
    }

    fn frame_read(f: &SmmuFrame, off: usize) -> u32 {
        smmuv3::Mmio::read32(f, off)
    }
}

userlib::task_main!(image::run);
