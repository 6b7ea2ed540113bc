//! The task's start-up, written once: the image's `main.rs` and the host
//! harness both run [`start`] (the image through [`run_image`], which
//! first finds its regions), so what the harness tests is what boots.
//!
//! 1. probe the ID registers (logged; an unusable SMMU → [`unavailable`]);
//! 2. build the [`IommuServer`] — `Smmu::init`, fail closed — with the
//!    image's configuration ([`config`]);
//! 3. run the caller's `before_serve` once: nothing in production; a test
//!    image proves its command-queue recovery there (an illegal command
//!    raises a global error on real hardware, so production never issues
//!    one);
//! 4. serve.

use crate::cmdq::{SyscallWaiter, Waiter};
use crate::dma::DmaMemory;
use crate::{driver, own_incarnation, serve, serve_unavailable, Error, IommuServer, ServerConfig};
use smmuv3::Mmio;
use userlib::log;

/// Notification bits, as app.toml's `interrupts` table must assign them:
/// `{ "smmu-cmd-sync" = 0x2, "smmu-gerror" = 0x4 }`, plus
/// `"smmu-eventq" = 0x8` when the task also has `smmu-page1`.
pub const CMD_SYNC_BIT: u32 = 1 << 1;
pub const GERROR_BIT: u32 = 1 << 2;
pub const EVENTQ_BIT: u32 = 1 << 3;
/// pasid-alloc's notification: a PASID became defunct (free before
/// unbind, or its owner died); the server pulls `next_defunct`
/// (`server/defunct.rs`). Not an interrupt: nothing in app.toml assigns it.
pub const PASID_DEFUNCT_BIT: u32 = 1 << 6;
/// The bit of this task's timer.
pub const TIMER_BIT: u32 = 1 << 31;

/// Command completion: polls, then the cmd-sync interrupt (see
/// [`SyscallWaiter`]).
pub const WAITER: SyscallWaiter = SyscallWaiter {
    cmd_sync_bit: CMD_SYNC_BIT,
    timer_bit: TIMER_BIT,
};

/// The configuration the task runs with, from the app's static facts
/// (`STREAMS`, `TASK_NAMES`) and whether the event queue runs (SMMU page 1
/// granted). Callers are checked by name; a mapped PA must be the
/// caller's DMA memory as the kernel knows it (app.toml must give the
/// task `caps = ["memory-query"]`).
pub fn config<'a>(
    streams: &'a [(u32, u16)],
    task_names: &'a [&'a str],
    event_queue: bool,
) -> ServerConfig<'a> {
    ServerConfig {
        streams,
        task_names,
        // With task names, prq-server and the supervisor are found by name.
        prq_server: None,
        supervisor: 0,
        max_pasid_bits: 20,
        sync_irq: true,
        event_queue,
        vm_memory: None,
        memory_query: true,
        incarnation: own_incarnation(task_names),
        gerror_bit: GERROR_BIT,
        eventq_bit: EVENTQ_BIT,
    }
}

/// Logs the non-coherent mode, and a disagreement between the board file
/// (`coherent`, the mode the memory runs in) and IDR0.COHACC. The board
/// wins either way (IHI 0070 §3.15: COHACC = 0 whenever the SMMU *or the
/// system* cannot be coherent, and the integration is the board's fact):
/// a board that says coherent on an SMMU reporting COHACC = 0 is most
/// likely wrong — the log says so loudly; the reverse only costs cache
/// maintenance.
pub fn log_coherency(cohacc: bool, coherent: bool) {
    match (coherent, cohacc) {
        // The common case says nothing (and adds no system call to a
        // start-up whose interleavings the harness's seeded tests pin).
        (true, true) => {}
        (false, false) => log!(
            "iommu-server: SMMU non-coherent (board; IDR0.COHACC=0): cleaning tables and queues"
        ),
        (true, false) => log!(
            "iommu-server: WARNING: board says the SMMU is coherent but IDR0.COHACC=0; following the board (check boards/*.toml smmu-coherent)"
        ),
        (false, true) => log!(
            "iommu-server: board says the SMMU is not coherent, IDR0.COHACC=1; following the board: cleaning tables and queues"
        ),
    }
}

/// Without a usable SMMU the task still answers (every request gets
/// `why`), so no client blocks forever.
pub fn unavailable(why: Error) -> ! {
    log!("iommu-server: not serving: {:?}", why);
    serve_unavailable(why)
}

/// Probes and initialises the SMMU behind `mmio` with the tables in `mem`
/// (fail closed), runs `before_serve` once, then serves; never returns.
pub fn start<M: Mmio, D: DmaMemory, W: Waiter>(
    mmio: M,
    mem: D,
    waiter: W,
    cfg: &ServerConfig<'_>,
    before_serve: impl FnOnce(&mut IommuServer<M, D, W>),
) -> ! {
    match driver::probe(&mmio) {
        Ok(f) => {
            log_coherency(f.cohacc(), mem.coherent());
            log!(
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
            )
        }
        Err(e) => {
            log!(
                "SMMU IDR0={:#010x} IDR1={:#010x}: unusable",
                mmio.read32(smmuv3::regs::offset::IDR0),
                mmio.read32(smmuv3::regs::offset::IDR1)
            );
            unavailable(e)
        }
    }
    // The server is large (its bounded tables): use it where `new` left
    // it, inside the Result, rather than moving a copy onto this frame.
    let mut built = IommuServer::new(mmio, mem, waiter, cfg);
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
        cfg.streams.len(),
        info.pages_free,
        info.pages_total,
        if cfg.event_queue { "on" } else { "not read here (prq-server's, or no page 1)" }
    );
    before_serve(server);
    serve(server)
}

/// The test images' `before_serve`: issues one illegal command (opcode 0)
/// and checks the queue recovers from it (CERROR_ILL skipped, the queue
/// still works), logging the outcome; the test runner then reads the
/// counters through `hw_info`. Never used in production.
pub fn prove_command_recovery<M: Mmio, D: DmaMemory, W: Waiter>(server: &mut IommuServer<M, D, W>) {
    match server.self_test_illegal_command() {
        Ok(f) => log!(
            "iommu-server: command queue recovered from an illegal command (opcode {:#x}, CMDQ_CONS.ERR {})",
            f.opcode,
            f.err.raw()
        ),
        Err(e) => log!(
            "iommu-server: illegal-command recovery self-test failed: {:?}",
            e
        ),
    }
}

/// The image's start-up: finds `smmu-page0` (and `smmu-page1` if granted)
/// and `smmu-tables`, then [`start`]s with the image's configuration; with
/// a task-slot to prq-server it serves through [`crate::faults::serve`]
/// (event queue handed over, `event_queue: false`).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn run_image(
    streams: &[(u32, u16)],
    task_names: &[&str],
    before_serve: impl FnOnce(
        &mut IommuServer<crate::frame::SmmuFrame, crate::dma::DmaPtr, SyscallWaiter>,
    ),
) -> ! {
    use crate::dma::DmaPtr;
    use crate::frame::SmmuFrame;
    use userlib::sys_region_info;

    let (Some(p0), Some(tables)) = (
        sys_region_info("smmu-page0"),
        sys_region_info("smmu-tables"),
    ) else {
        unavailable(Error::HardwareError)
    };
    let p1 = sys_region_info("smmu-page1");
    // SAFETY: app.toml maps SMMU page 0 (and page 1 if present) into this
    // task as device memory, 64 KiB each and 64 KiB aligned; this task
    // creates no references into them.
    let frame = unsafe { SmmuFrame::new(p0.va, p1.map(|r| r.va)) };
    // SAFETY: `smmu-tables` is this task's DMA memory region: mapped
    // read/write at `va`, physically contiguous at `pa`, page aligned; only
    // this value accesses it.
    let mem = unsafe { DmaPtr::new(tables.va, tables.pa as u64, tables.size) };
    // The board's coherency fact (boards/*.toml `smmu-coherent`, through
    // the generated app config): a non-coherent SMMU gets clean-on-store
    // memory and Non-cacheable walk/queue attributes.
    let mem = if crate::app_config::SMMU_COHERENT {
        mem
    } else {
        mem.non_coherent()
    };
    // With prq-server in the image (a task-slot to it), the event and PRI
    // queues are its: this task serves the fault path and runs no event
    // reader of its own (docs/faults.md).
    let fault_path = userlib::sys_lookup_slot("prq-server").is_some();
    let cfg = config(streams, task_names, frame.has_page1() && !fault_path);
    start(frame, mem, WAITER, &cfg, move |s| {
        before_serve(s);
        if fault_path {
            crate::faults::serve(s)
        }
    })
}
