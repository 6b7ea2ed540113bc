//! Runner of the `differential_*` cases on QEMU (issue 10, item 23).
//!
//! A dedicated image without iommu-server: this task owns SMMU pages 0 and
//! 1, so every STE, CD and table word of a case is exactly what
//! `qemu/differential-cases` builds, and it reads the event queue itself.
//! For each case of `differential_cases::CASES`:
//! 1. the loader: edu's DMA buffer can only be filled by DMA, so the SMMU is
//!    programmed with a stage 2 mapping of the pattern page and edu reads
//!    the case's 4-byte pattern into its buffer;
//! 2. the case: the SMMU is reset and programmed for the case (same code as
//!    the model test), edu issues the case's 4-byte DMA, and the runner
//!    reads the event queue and scans its region for the pattern;
//! 3. the outcome is judged against the table: the spec's answer, or the
//!    recorded QEMU deviation — then the case is named
//!    `differential_<name>_qemu_deviation` and the deviation is printed.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod runner {
    use differential_cases::{
        judge, loader, loader_strtab, observe, pattern, prepare, prepare_with, Phys, CASES,
        LOADER_PAGE, REGION_SIZE, SID,
    };
    use edu::Edu;
    use iommu_server::frame::SmmuFrame;
    use pci_server_api::{Bdf, PciClient};
    use userlib::*;

    const TIMER_BIT: u32 = 1 << 31;

    /// The `diff-mem` region: `va` maps `[pa, pa + size)`.
    struct Region {
        va: usize,
        pa: u64,
        size: usize,
    }

    impl Region {
        fn at(&self, pa: u64) -> Option<*mut u64> {
            let off = pa.checked_sub(self.pa)? as usize;
            (off + 8 <= self.size && off.is_multiple_of(8)).then(|| (self.va + off) as *mut u64)
        }
    }

    impl Phys for Region {
        fn read64(&self, pa: u64) -> u64 {
            match self.at(pa) {
                // SAFETY: inside this task's `diff-mem` region (mapped
                // read/write, checked by `at`, 8-byte aligned). Volatile:
                // the SMMU and edu write it behind the compiler.
                Some(p) => unsafe { core::ptr::read_volatile(p) },
                None => 0,
            }
        }
        fn write64(&self, pa: u64, v: u64) {
            if let Some(p) = self.at(pa) {
                // SAFETY: as in `read64`. QEMU models no caches, and
                // the SMMU reads these words only after the MMIO write
                // (CMDQ_PROD, CR0) that follows them.
                unsafe { core::ptr::write_volatile(p, v) }
            }
        }
    }

    fn wait() -> bool {
        // edu finishes 100 ms of virtual time after the start; sleeping
        // costs no wall time under -icount sleep=off.
        sleep_for(20, TIMER_BIT);
        true
    }

    fn dma(edu: &Edu, iova: u64, write: bool) -> Result<(), &'static str> {
        let mut budget = 50;
        edu.dma(iova, 4, write, || {
            budget -= 1;
            budget > 0 && wait()
        })
        .map_err(|_| "edu DMA never completed")
    }

    /// Runs case `i`: Ok when QEMU shows what the table expects of it.
    fn run_case(i: usize, frame: &SmmuFrame, mem: &Region, edu: &Edu) -> Result<(), &'static str> {
        let case = &CASES[i];
        let p = pattern(i);
        // 1. Load the pattern into edu's buffer.
        let load = prepare_with(frame, mem, mem.pa, loader_strtab(case), loader)?;
        mem.write64(
            mem.pa + (LOADER_PAGE * 4096) as u64,
            p as u64 | (p as u64) << 32,
        );
        dma(edu, load.iova, load.write)?;
        let o = observe(frame, mem, mem.pa, 0xffff_ffff);
        if o.n_events != 0 || o.gerror != 0 {
            log!("differential_{}: loader: {}", case.name, o);
            return Err("the loader's DMA faulted");
        }
        // 2. The case.
        let d = prepare(frame, mem, mem.pa, case)?;
        dma(edu, d.iova, d.write)?;
        let got = observe(frame, mem, mem.pa, p);
        log!("differential_{}: spec: {}", case.name, case.spec);
        log!("differential_{}: qemu: {}", case.name, got);
        if let Some(dev) = &case.qemu {
            log!(
                "differential_{}: QEMU DEVIATION expected: {}",
                case.name,
                dev.does
            );
            log!("  why: {}", dev.why);
        }
        judge(&case.qemu_expect(), &got)
    }

    fn report(name: &str, deviation: bool, r: Result<(), &'static str>) -> bool {
        let suffix = if deviation { "_qemu_deviation" } else { "" };
        match r {
            Ok(()) => {
                log!("TEST differential_{}{} ok", name, suffix);
                true
            }
            Err(why) => {
                log!("TEST differential_{}{} FAIL {}", name, suffix, why);
                false
            }
        }
    }

    pub fn run() -> ! {
        let (Some(p0), Some(p1), Some(bar0), Some(pci), Some(m)) = (
            sys_region_info("smmu-page0"),
            sys_region_info("smmu-page1"),
            sys_region_info("pci-00-02-0-bar0"),
            sys_lookup_slot("pci-server"),
            sys_region_info("diff-mem"),
        ) else {
            log!("test-differential: app.toml lacks a region or the pci-server slot");
            sys_shutdown(1)
        };
        if m.size < REGION_SIZE {
            log!("test-differential: diff-mem is smaller than the cases need");
            sys_shutdown(1)
        }
        // SAFETY: app.toml maps SMMU pages 0 and 1 into this task only, as
        // device memory, 64 KiB each and 64 KiB aligned; no references are
        // made into them.
        let frame = unsafe { SmmuFrame::new(p0.va, Some(p1.va)) };
        // edu 00:02.0 is this task's (app.toml [[devices]]): pci-server
        // placed BAR0; bus mastering is asked of it.
        if PciClient::new(pci)
            .config_write(Bdf(SID as u16), 0x04, 2, 0x6)
            .is_err()
        {
            log!("test-differential: pci-server refused bus mastering");
            sys_shutdown(1)
        }
        // SAFETY: region pci-00-02-0-bar0 is edu's BAR0, mapped into this
        // task only.
        let edu = match unsafe { Edu::at(bar0.va, SID) } {
            Ok(e) => e,
            Err(e) => {
                log!("test-differential: edu: {:?}", e);
                sys_shutdown(1)
            }
        };
        let mem = Region {
            va: m.va,
            pa: m.pa as u64,
            size: m.size,
        };
        let mut all = true;
        let mut deviations = 0;
        for (i, case) in CASES.iter().enumerate() {
            let r = run_case(i, &frame, &mem, &edu);
            deviations += case.qemu.is_some() as usize;
            all &= report(case.name, case.qemu.is_some(), r);
        }
        log!(
            "differential: {} cases, {} with a recorded QEMU deviation",
            CASES.len(),
            deviations
        );
        log!(
            "tests finished: {}",
            if all { "all passed" } else { "FAILURES" }
        );
        sys_shutdown(if all { 0 } else { 1 })
    }
}

#[cfg(target_os = "none")]
fn run() -> ! {
    runner::run()
}

userlib::task_main!(run);
