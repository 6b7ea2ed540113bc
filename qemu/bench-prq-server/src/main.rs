//! prq-server's fault path in the benchmark image
//! (`qemu/apps/bench-prq-server.toml`): instructions per fault from the
//! interrupt handler's entry into prq-server's code to the PRI_RESP
//! command written, with 1, 8 and 64 VMs and 1, 1 024 and 4 096 pending
//! groups (issue 11, item 7; docs/faults.md, "Figures").
//!
//! Why a task plays the SMMU: QEMU 10's SMMUv3 has neither PRI nor stall,
//! so no page request ever reaches a PRI queue there. This task links
//! prq-server's library (the code the prq-server task runs unchanged) and
//! does the device's and the SMMU's part itself: it writes a PRI queue
//! record (one page, Last) into the queue memory and moves PRIQ_PROD.
//! From there everything is the library's: intake (what
//! `handle_notification` runs on the PRIQ interrupt), the partial-group
//! index, routing by (stream, PASID), the owner's queue, `fetch_faults`
//! (the cookie), `respond`, `take_responses` (the hand-over, which also
//! acknowledges the previous one) — and then the PRI_RESP command built
//! with lib/smmuv3's `Command::pri_resp` and stored into command queue
//! memory, as iommu-server's `page_response` does.
//!
//! What the count leaves out, all of it constant per fault (none depends
//! on the number of VMs or of pending groups): the kernel's interrupt
//! entry and the IPC of the three calls (measured by `prq_evtq_irq_to_vm`
//! and the IPC benchmarks), the generated decode / lease copies, and the
//! queue registers: here they are memory cells; in the image each access
//! is a register-window system call. Their number per fault is reported
//! (`prq_fault_path_register_accesses`).
//!
//! Setup for each (VMs, pending) pair, not counted: a fresh server with
//! 6 144 group slots, 64 routes and 64 owner entries (the library's const
//! sizes; the production task keeps 128 / 64 / 8) over this task's
//! `prq-queues` DMA region, as the production task's, 64 routes (streams
//! 0x10.., PASID 1) spread round robin over the VMs (task indices
//! 0..VMs), then `pending` groups raised and fetched, so the owners hold
//! them delivered (cookies out, not answered). Then `REPS` faults, one per
//! route in turn (so every VM's owner entry is used), each measured alone;
//! the figure is the minimum (under `-icount shift=0` one counter tick is
//! one instruction, minus the cost of reading the counter). The flatness
//! figure is the largest of the nine minima over the smallest, in
//! hundredths (goal <= 120).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use core::cell::Cell;
    use core::mem::MaybeUninit;
    use prq_server::mem::PRIQ_OFF;
    use prq_server::prq::{FaultOut, Key, Page, ResponseOut};
    use prq_server::{region_size, Config, DmaPtr, Prq, QueueMemory, Resp};
    use smmuv3::regs::offset;
    use smmuv3::{Command, CommandKind, Mmio, PriEntry, PriResponse, QueuePtr, PRIQ_ENTRY_BYTES};
    use userlib::{counter, log, sys_region_info, sys_shutdown, Generation, RegionInfo, TaskId};

    /// The benchmark server's sizes: room for 4 096 pending groups with
    /// the table still more than a quarter free (so no owner is ever over
    /// its share and every measured fault takes the normal path), 64
    /// routes, 64 owners (every task index). The server lives in this
    /// task's frame (the kernel allows 2 MiB of stack).
    const G: usize = 6144;
    const R: usize = 64;
    const O: usize = 64;
    /// The layout's largest PRI queue (256 entries).
    const PRIQ_LOG2: u32 = 8;
    const ROUTES: usize = 64;
    const PASID: u32 = 1;
    /// Measured faults per configuration.
    const REPS: usize = 64;
    /// Groups raised between two fetches while filling: one owner queue.
    const BATCH: usize = prq_server::prq::OWNER_QUEUE;
    const VMS: [usize; 3] = [1, 8, 64];
    const PENDING: [usize; 3] = [1, 1024, 4096];
    /// Command queue entries (the stand-in for iommu-server's queue).
    const CMDQ: usize = 256;

    /// PRIQ_PROD/CONS and EVENTQ_PROD/CONS as memory cells: this task is
    /// the SMMU that moves PROD. Counts prq-server's accesses.
    #[derive(Default)]
    struct Regs {
        priq_prod: Cell<u32>,
        priq_cons: Cell<u32>,
        evtq_prod: Cell<u32>,
        evtq_cons: Cell<u32>,
        accesses: Cell<u32>,
    }

    impl Regs {
        fn cell(&self, off: usize) -> Option<&Cell<u32>> {
            match off {
                offset::PRIQ_PROD => Some(&self.priq_prod),
                offset::PRIQ_CONS => Some(&self.priq_cons),
                offset::EVENTQ_PROD => Some(&self.evtq_prod),
                offset::EVENTQ_CONS => Some(&self.evtq_cons),
                _ => None,
            }
        }
    }

    impl Mmio for Regs {
        fn read32(&self, off: usize) -> u32 {
            self.accesses.set(self.accesses.get() + 1);
            self.cell(off).map_or(0, Cell::get)
        }
        fn write32(&self, off: usize, value: u32) {
            self.accesses.set(self.accesses.get() + 1);
            if let Some(c) = self.cell(off) {
                c.set(value);
            }
        }
        fn read64(&self, _off: usize) -> u64 {
            0
        }
        fn write64(&self, _off: usize, _value: u64) {}
    }

    fn sid(k: usize) -> u32 {
        0x10 + k as u32
    }

    /// The owner (VM task) of route `k` with `vms` VMs.
    fn owner(k: usize, vms: usize) -> TaskId {
        TaskId::new(k % vms, Generation(0))
    }

    /// The SMMU's part: one page request (read/write, Last) of group
    /// (`sid`, PASID, `prgi`) into the PRI queue, then PROD moves.
    fn raise<M: QueueMemory>(
        mem: &M,
        regs: &Regs,
        sid: u32,
        prgi: u16,
    ) -> Result<(), &'static str> {
        let prod = QueuePtr::from_raw(PRIQ_LOG2, regs.priq_prod.get());
        let cons = QueuePtr::from_raw(PRIQ_LOG2, regs.priq_cons.get());
        if prod.is_full(cons) {
            return Err("PRI queue full");
        }
        let mut e = PriEntry::new(sid, Some(PASID), prgi, 0x10_0000 + ((prgi as u64) << 12));
        e.set_read(true).set_write(true).set_last(true);
        let w = e.words();
        let off = PRIQ_OFF + prod.entry_offset(PRIQ_ENTRY_BYTES);
        mem.write64(off, w[0]);
        mem.write64(off + 8, w[1]);
        regs.priq_prod.set(prod.advance(1).raw());
        Ok(())
    }

    fn pri_response(r: Resp) -> PriResponse {
        match r {
            Resp::Success => PriResponse::Success,
            Resp::Invalid => PriResponse::InvalidRequest,
            Resp::Failure => PriResponse::ResponseFailure,
        }
    }

    /// Per-fault cost of one configuration.
    struct Cost {
        best: u64,
        worst: u64,
        /// Which measured fault was the worst.
        worst_at: usize,
        accesses: u32,
    }

    /// Builds a server of sizes (`GG`, `RR`, `OO`) over the region, routes,
    /// fills `pending` delivered groups over `vms` VMs, then measures
    /// `REPS` faults.
    // Not inlined: one server's frame at a time.
    #[inline(never)]
    fn measure<const GG: usize, const RR: usize, const OO: usize>(
        q: &RegionInfo,
        vms: usize,
        pending: usize,
        overhead: u64,
    ) -> Result<Cost, &'static str> {
        let size = region_size(GG, RR);
        if q.size < size {
            return Err("prq-queues smaller than the server's layout");
        }
        // SAFETY: `prq-queues` is this task's DMA region, mapped read/write
        // at `va`, contiguous at `pa`, page aligned; only this `DmaPtr`
        // touches it while the server lives (this task's SMMU part writes
        // through `prq.mem`), and one server lives at a time.
        let mem = unsafe { DmaPtr::new(q.va, q.pa as u64, size) };
        // A fresh journal: no recovery from the previous configuration.
        for off in (0..size).step_by(8) {
            mem.write64(off, 0);
        }
        let regs = Regs::default();
        let mut cmdq_buf = [0u64; CMDQ * 2];
        // SAFETY: as above, for the command queue stand-in.
        let cmdq = unsafe { DmaPtr::new(cmdq_buf.as_mut_ptr() as usize, 0, cmdq_buf.len() * 8) };
        let cfg = Config {
            streams: &[],
            evtq_log2: 6,
            priq_log2: PRIQ_LOG2,
        };
        // In place: the server is too large to pass through a frame by
        // value (`Prq::sized` would move it).
        let mut place = MaybeUninit::<Prq<&Regs, DmaPtr, GG, RR, OO>>::uninit();
        // SAFETY: `place` is valid for writes and aligned.
        unsafe { Prq::init_at(place.as_mut_ptr(), &regs, mem, &cfg) };
        // SAFETY: `init_at` initialised it; nothing needs dropping (no
        // field has drop glue), so it is simply forgotten with the frame.
        let prq = unsafe { place.assume_init_mut() };
        for k in 0..ROUTES {
            prq.set_route(sid(k), PASID, owner(k, vms), true)
                .map_err(|_| "set_route: tables full")?;
        }
        let mut out = [FaultOut {
            cookie: 0,
            key: Key::default(),
            page: Page::default(),
            last: false,
        }; BATCH];
        let mut posted = 0;
        while posted < pending {
            let n = (pending - posted).min(BATCH);
            for p in posted..posted + n {
                raise(&prq.mem, &regs, sid(p % ROUTES), (p / ROUTES) as u16)?;
            }
            posted += n;
            prq.intake();
            for v in 0..vms {
                loop {
                    let (w, lost) = prq.fetch_faults(TaskId::new(v, Generation(0)), &mut out);
                    if lost != 0 {
                        return Err("a pending group was lost");
                    }
                    if w == 0 {
                        break;
                    }
                }
            }
        }
        if prq.stats().delivered_groups != pending as u32 {
            return Err("pending groups not all delivered");
        }

        let mut resps = [ResponseOut {
            key: Key::default(),
            resp: Resp::Invalid,
        }; 32];
        let mut issued = 0;
        let mut cmd_prod = 0;
        let mut cost = Cost {
            best: u64::MAX,
            worst: 0,
            worst_at: 0,
            accesses: 0,
        };
        for r in 0..REPS {
            let k = r % ROUTES;
            let who = owner(k, vms);
            // Past the pending groups' PRG indices (0..64 per route).
            let prgi = (64 + r / ROUTES) as u16;
            raise(&prq.mem, &regs, sid(k), prgi)?;
            regs.accesses.set(0);
            let t0 = counter();
            // The PRIQ interrupt: `handle_notification`'s intake.
            prq.intake();
            // The owner's `fetch_faults`, then its `respond`.
            let (w, _) = prq.fetch_faults(who, &mut out);
            let (done, _) = prq.respond(who, &[(out[0].cookie, Resp::Success)]);
            // iommu-server's `take_responses`, then the command.
            let (n, _, seq) = prq.take_responses(issued, &mut resps);
            for x in &resps[..n] {
                let c = Command::pri_resp(x.key.sid, x.key.ssid, x.key.tag, pri_response(x.resp));
                let words = c.words();
                let at = (cmd_prod % CMDQ) * 16;
                cmdq.write64(at, words[0]);
                cmdq.write64(at + 8, words[1]);
                cmd_prod += 1;
            }
            let t1 = counter();
            let accesses = regs.accesses.get();
            issued = seq;
            if w != 1 || done != 1 || n != 1 {
                return Err("the fault did not go through");
            }
            // At the device's side: the command queue holds the right
            // PRI_RESP.
            let at = ((cmd_prod - 1) % CMDQ) * 16;
            let c = Command::from_words([cmdq.read64(at), cmdq.read64(at + 8)]);
            let want = CommandKind::PriResp {
                sid: sid(k),
                ssid: Some(PASID),
                prgi,
                resp: PriResponse::Success,
            };
            if c.decode() != Ok(want) {
                return Err("wrong PRI_RESP in the command queue");
            }
            let t = t1.wrapping_sub(t0).saturating_sub(overhead);
            cost.best = cost.best.min(t);
            if t > cost.worst {
                cost.worst = t;
                cost.worst_at = r;
            }
            cost.accesses = cost.accesses.max(accesses);
        }
        if prq.stats().delivered_groups != pending as u32 {
            return Err("pending groups changed");
        }
        Ok(cost)
    }

    fn check<T>(what: &str, r: Result<T, &'static str>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                log!("bench-prq-server: {}: {}", what, e);
                sys_shutdown(1)
            }
        }
    }

    pub fn run() -> ! {
        let a = counter();
        let b = counter();
        let overhead = b - a;
        let Some(q) = sys_region_info("prq-queues") else {
            log!("bench-prq-server: no prq-queues region");
            sys_shutdown(1)
        };
        log!(
            "bench-prq-server: server {} bytes ({} group slots), region {} of {} bytes",
            core::mem::size_of::<Prq<&Regs, DmaPtr, G, R, O>>(),
            G,
            region_size(G, R),
            q.size
        );
        // The shipped sizes (128 slots, 64 routes, 8 owners), for
        // reference: one VM, one pending group.
        let c = check(
            "shipped sizes",
            measure::<
                { prq_server::prq::MAX_GROUPS },
                { prq_server::prq::MAX_ROUTES },
                { prq_server::prq::MAX_OWNERS },
            >(&q, 1, 1, overhead),
        );
        log!("BENCH prq_fault_path_shipped_sizes {} instructions", c.best);
        let (mut lo, mut hi) = (u64::MAX, 0);
        let mut accesses = 0;
        for vms in VMS {
            for pending in PENDING {
                let c = check("measure", measure::<G, R, O>(&q, vms, pending, overhead));
                log!(
                    "bench-prq-server: {} VMs, {} pending: best {} worst {} instructions (fault {} of {})",
                    vms,
                    pending,
                    c.best,
                    c.worst,
                    c.worst_at,
                    REPS
                );
                log!(
                    "BENCH prq_fault_path_vms{}_pending{} {} instructions",
                    vms,
                    pending,
                    c.best
                );
                lo = lo.min(c.best);
                hi = hi.max(c.best);
                accesses = accesses.max(c.accesses);
            }
        }
        log!(
            "BENCH prq_fault_path_register_accesses {} accesses",
            accesses
        );
        log!(
            "BENCH prq_fault_path_max_per_min_x100 {} ratio",
            hi * 100 / lo.max(1)
        );
        sys_shutdown(0)
    }
}

userlib::task_main!(image::run);
