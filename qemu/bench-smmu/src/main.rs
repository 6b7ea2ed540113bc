//! iommu-server benchmarks (`cargo xtask bench`, `qemu/apps/bench-smmu.toml`).
//!
//! Method: QEMU `-icount shift=0,sleep=off` with `-cpu max`, so one tick of
//! the virtual counter is one guest instruction (see `qemu/bench-client`).
//! - Map and unmap of 64 pages (256 KiB) and of 512 pages (2 MiB), one
//!   call each, as the client sees them (IPC both ways included), and
//!   their commands and SYNCs from the server's own counters (`info`:
//!   commands issued, CMD_SYNC not counted, and SYNCs): one range TLBI
//!   per unmap on an SMMU with IDR3.RIL. The 512 / 64 ratios (hundredths)
//!   show whether the cost is flat per page.
//! - Profile markers (`hint #0x70..#0x75`, NOPs) around the last
//!   iteration's map, unmap and attach, for `xtask/profile/insnprof.c`.
//! - Instructions per STE update and per attach, measured inside the
//!   server with the counter around `write_ste` (its CFGI_STE + SYNC steps
//!   included) and around the whole attach / replace request (from the
//!   trait method's entry to its return: decode and reply excluded), read
//!   back with `info` after each request.
//! - Round trip of attach and replace as the client sees it: counter just
//!   before the send, just after it returns (the IPC both ways included).
//!
//! Every figure is the minimum of `ITER` (24) iterations — the first is
//! cold (tables allocated), the minimum warm —, counter-read overhead
//! subtracted. The output is `BENCH <name> <value> <unit>` lines.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use iommu_server_api::{AttachOutcome, IommuClient, IommuError, IommuInfo, MapPerms, StreamId};
    use userlib::*;

    const SID: StreamId = StreamId(0x10);
    const PAGE: u64 = 4096;
    const IOVA: u64 = 0x100_0000;
    const ITER: usize = 24;
    const RW: MapPerms = MapPerms::READ.union(MapPerms::WRITE);

    /// Profiling marker (`xtask/profile/insnprof.c`): `hint #0x70 + k`
    /// starts phase k (0 stops). Only in the last (warm) iteration, so a
    /// profile shows one warm call.
    #[inline(always)]
    fn profile_phase(on: bool, k: u8) {
        if !on {
            return;
        }
        // SAFETY: HINT #0x70..#0x75 are unallocated hint encodings, which
        // execute as NOPs: no register, memory or flag is touched.
        unsafe {
            match k {
                1 => core::arch::asm!("hint #0x71", options(nomem, nostack, preserves_flags)),
                2 => core::arch::asm!("hint #0x72", options(nomem, nostack, preserves_flags)),
                3 => core::arch::asm!("hint #0x73", options(nomem, nostack, preserves_flags)),
                4 => core::arch::asm!("hint #0x74", options(nomem, nostack, preserves_flags)),
                5 => core::arch::asm!("hint #0x75", options(nomem, nostack, preserves_flags)),
                _ => core::arch::asm!("hint #0x70", options(nomem, nostack, preserves_flags)),
            }
        }
    }

    fn fail(what: &str, e: IommuError) -> ! {
        log!("bench-smmu: {} failed: {:?}", what, e);
        sys_shutdown(1)
    }

    fn ok<T>(what: &str, r: Result<T, IommuError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => fail(what, e),
        }
    }

    /// Minimum costs of one kind of attach-like request.
    #[derive(Clone, Copy)]
    struct Costs {
        ste: u64,
        server: u64,
        round_trip: u64,
    }

    impl Costs {
        const MAX: Costs = Costs {
            ste: u64::MAX,
            server: u64::MAX,
            round_trip: u64::MAX,
        };
        fn report(&self, name: &str) {
            log!("BENCH smmu_{}_ste_update {} instructions", name, self.ste);
            log!("BENCH smmu_{}_server {} instructions", name, self.server);
            log!(
                "BENCH smmu_{}_round_trip {} instructions",
                name,
                self.round_trip
            );
        }
    }

    struct Bench {
        api: IommuClient,
        overhead: u64,
    }

    impl Bench {
        fn info(&self) -> IommuInfo {
            ok("info", self.api.info())
        }

        /// Runs `f` (an attach-like request) and folds its costs into `c`.
        fn measure(
            &self,
            c: &mut Costs,
            want: iommu_server_api::SteUpdate,
            f: impl FnOnce(&IommuClient) -> Result<AttachOutcome, IommuError>,
        ) {
            self.measure_marked(c, want, false, f)
        }

        /// [`Bench::measure`], marked as profile phase 3 when `mark`.
        fn measure_marked(
            &self,
            c: &mut Costs,
            want: iommu_server_api::SteUpdate,
            mark: bool,
            f: impl FnOnce(&IommuClient) -> Result<AttachOutcome, IommuError>,
        ) {
            profile_phase(mark, 3);
            let t0 = counter();
            let r = f(&self.api);
            let t1 = counter();
            profile_phase(mark, 0);
            let a = ok("attach", r);
            if a.update != want {
                log!(
                    "bench-smmu: expected {:?}, the server did {:?}",
                    want,
                    a.update
                );
                sys_shutdown(1);
            }
            let i = self.info();
            c.ste = c.ste.min(i.ste_update_instr);
            c.server = c.server.min(i.attach_instr);
            c.round_trip = c
                .round_trip
                .min(t1.wrapping_sub(t0).saturating_sub(self.overhead));
        }
    }

    pub fn run() -> ! {
        let Some(server) = sys_lookup_slot("iommu-server") else {
            log!("bench-smmu: no iommu-server slot");
            sys_shutdown(1)
        };
        let Some(mem) = sys_region_info("bench-dma") else {
            log!("bench-smmu: no bench-dma region");
            sys_shutdown(1)
        };
        let a = counter();
        let b = counter();
        let x = Bench {
            api: IommuClient::new(server),
            overhead: b - a,
        };
        let pa = mem.pa as u64;
        let pages = (mem.size as u64 / PAGE).min(64);
        use iommu_server_api::SteUpdate::{BreakBeforeMake, Hitless};

        // ---- map / unmap of 64 pages (one call each), ITER times: the
        // first round allocates the tables (cold), the minimum is warm.
        let d1 = ok("create_s2_domain", x.api.create_s2_domain(false));
        let (mut map64, mut unmap64) = (u64::MAX, u64::MAX);
        let (mut map_cmds, mut map_syncs, mut unmap_cmds, mut unmap_syncs) = (0, 0, 0, 0);
        for it in 0..ITER {
            let last = it + 1 == ITER;
            let i0 = x.info();
            profile_phase(last, 1);
            let t0 = counter();
            ok("map", x.api.map(d1, IOVA, pa, pages * PAGE, RW));
            let t1 = counter();
            profile_phase(last, 0);
            let i1 = x.info();
            profile_phase(last, 2);
            let t2 = counter();
            let n = ok("unmap", x.api.unmap(d1, IOVA, pages * PAGE));
            let t3 = counter();
            profile_phase(last, 0);
            let i2 = x.info();
            if n != pages * PAGE {
                log!("bench-smmu: unmap found {} bytes", n);
                sys_shutdown(1);
            }
            (map_cmds, map_syncs) = (i1.commands - i0.commands, i1.syncs - i0.syncs);
            (unmap_cmds, unmap_syncs) = (i2.commands - i1.commands, i2.syncs - i1.syncs);
            map64 = map64.min(t1.wrapping_sub(t0).saturating_sub(x.overhead));
            unmap64 = unmap64.min(t3.wrapping_sub(t2).saturating_sub(x.overhead));
        }
        log!("BENCH smmu_map{}_commands {} commands", pages, map_cmds);
        log!("BENCH smmu_map{}_syncs {} syncs", pages, map_syncs);
        log!("BENCH smmu_unmap{}_commands {} commands", pages, unmap_cmds);
        log!("BENCH smmu_unmap{}_syncs {} syncs", pages, unmap_syncs);
        let (cmds, syncs) = (map_cmds + unmap_cmds, map_syncs + unmap_syncs);
        log!(
            "BENCH smmu_map_unmap{}_commands_per_sync {} commands/sync",
            pages,
            cmds / syncs.max(1)
        );
        log!("BENCH smmu_map{}_round_trip {} instructions", pages, map64);
        log!(
            "BENCH smmu_unmap{}_round_trip {} instructions",
            pages,
            unmap64
        );

        // ---- 512 pages (2 MiB) in one call each, when the client's
        // memory has 2 MiB of it; else 8 calls of the same 64 pages
        // (aliases) and one unmap of all 512.
        let (mut map512, mut unmap512) = (u64::MAX, u64::MAX);
        let (mut unmap512_cmds, mut unmap512_syncs) = (0, 0);
        let big = mem.size as u64 >= 512 * PAGE;
        for it in 0..ITER {
            let last = it + 1 == ITER;
            profile_phase(last, 4);
            let t0 = counter();
            if big {
                ok("map", x.api.map(d1, IOVA, pa, 512 * PAGE, RW));
            } else {
                for k in 0..512 / pages {
                    let at = IOVA + k * pages * PAGE;
                    ok("map", x.api.map(d1, at, pa, pages * PAGE, MapPerms::READ));
                }
            }
            let t1 = counter();
            profile_phase(last, 0);
            let i3 = x.info();
            profile_phase(last, 5);
            let t2 = counter();
            ok("unmap", x.api.unmap(d1, IOVA, 512 * PAGE));
            let t3 = counter();
            profile_phase(last, 0);
            let i4 = x.info();
            (unmap512_cmds, unmap512_syncs) = (i4.commands - i3.commands, i4.syncs - i3.syncs);
            map512 = map512.min(t1.wrapping_sub(t0).saturating_sub(x.overhead));
            unmap512 = unmap512.min(t3.wrapping_sub(t2).saturating_sub(x.overhead));
        }
        log!("BENCH smmu_unmap512_commands {} commands", unmap512_cmds);
        log!("BENCH smmu_unmap512_syncs {} syncs", unmap512_syncs);
        if big {
            log!("BENCH smmu_map512_round_trip {} instructions", map512);
            log!("BENCH smmu_unmap512_round_trip {} instructions", unmap512);
            // Flat per page: 512 pages against 8 x 64 pages (hundredths).
            log!(
                "BENCH smmu_map512_per_map64_x100 {} ratio",
                map512 * 100 / map64.max(1)
            );
            log!(
                "BENCH smmu_unmap512_per_unmap64_x100 {} ratio",
                unmap512 * 100 / unmap64.max(1)
            );
        }

        // ---- STE updates and attach.
        let d2 = ok("create_s2_domain", x.api.create_s2_domain(false));
        let s1a = ok("create_s1_domain", x.api.create_s1_domain(false));
        let s1b = ok("create_s1_domain", x.api.create_s1_domain(false));
        let (mut attach, mut detach, mut s2s2, mut s1s1) =
            (Costs::MAX, Costs::MAX, Costs::MAX, Costs::MAX);
        for it in 0..ITER {
            // abort -> S2: words 1-3 while unused, then word 0 (hitless).
            x.measure_marked(&mut attach, Hitless, it + 1 == ITER, |c| c.attach(SID, d1));
            // S2 -> S2: VMID and S2TTB change: break-before-make.
            x.measure(&mut s2s2, BreakBeforeMake, |c| c.replace(SID, d2));
            x.measure(&mut s2s2, BreakBeforeMake, |c| c.replace(SID, d1));
            // S2 -> abort: word 0 only.
            x.measure(&mut detach, Hitless, |c| c.detach(SID));
        }
        ok("attach", x.api.attach(SID, s1a));
        for _ in 0..ITER {
            // S1 -> S1: only S1ContextPtr changes (one word).
            x.measure(&mut s1s1, Hitless, |c| c.replace(SID, s1b));
            x.measure(&mut s1s1, Hitless, |c| c.replace(SID, s1a));
        }
        ok("detach", x.api.detach(SID));
        attach.report("attach");
        detach.report("detach");
        s2s2.report("replace_s2_s2");
        s1s1.report("replace_s1_s1");
        for d in [d1, d2, s1a, s1b] {
            ok("destroy_domain", x.api.destroy_domain(d));
        }
        log!(
            "BENCH smmu_counter_read_overhead {} instructions",
            x.overhead
        );
        sys_shutdown(0)
    }
}

userlib::task_main!(image::run);
