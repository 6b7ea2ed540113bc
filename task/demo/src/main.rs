//! The demo scenario (`cargo xtask run`). This task plays a VM that owns
//! edu (app.toml `[[devices]]`: its BAR0 is mapped here, its config space
//! is reached through pci-server) and edu's stream. Through iommu-server's generated
//! client it builds a stage-2 domain over its own DMA memory, attaches the
//! stream, and has edu move data through the SMMU. Then it shows:
//! - an unmapped page stops DMA (after unmap + invalidation nothing lands);
//! - another VM's stream cannot be taken;
//! - detach leaves the stream aborting, never bypassing.
//!
//! Each step is logged. The image exits 0 if every step behaved.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod scenario {
    use edu::Edu;
    use iommu_server_api::{DomainId, IommuClient, IommuError, MapPerms, StreamId};
    use pci_server_api::{Bdf, PciClient};
    use userlib::*;

    const TIMER_BIT: u32 = 1 << 31;
    /// IOVAs the demo maps: two pages, well inside edu's 28-bit DMA reach
    /// and clear of the MSI window iommu-server reserves.
    const IOVA: u64 = 0x0010_0000;
    const PAGE: u64 = 0x1000;
    const LEN: usize = 64;

    fn pattern(i: usize) -> u8 {
        (i as u8).wrapping_mul(7).wrapping_add(0x3c)
    }

    struct Buf {
        va: usize,
    }

    impl Buf {
        fn get(&self, page: usize, i: usize) -> u8 {
            // SAFETY: `dma-buf` is this task's two-page DMA region, mapped
            // read/write; volatile because edu writes it behind our back.
            unsafe { core::ptr::read_volatile((self.va + page * 4096 + i) as *const u8) }
        }
        fn set(&self, page: usize, i: usize, v: u8) {
            // SAFETY: as in `get`.
            unsafe { core::ptr::write_volatile((self.va + page * 4096 + i) as *mut u8, v) }
        }
    }

    fn wait() -> bool {
        // edu finishes 100 ms of virtual time after the start.
        sleep_for(20, TIMER_BIT);
        true
    }

    fn step(ok: bool, what: &str) -> bool {
        log!("{} {}", if ok { "ok  " } else { "FAIL" }, what);
        ok
    }

    fn show(e: IommuError) -> &'static str {
        match e {
            IommuError::NotPermitted => "NotPermitted",
            IommuError::NotFound => "NotFound",
            IommuError::Invalid => "Invalid",
            IommuError::Busy => "Busy",
            IommuError::NoSpace => "NoSpace",
            IommuError::Unsupported => "Unsupported",
            _ => "another error",
        }
    }

    pub fn run() -> ! {
        log!("demo: a VM task drives edu's DMA through the SMMUv3 via iommu-server");
        let mut ok = true;
        let (Some(bar0), Some(dma), Some(server), Some(pci)) = (
            sys_region_info("pci-00-02-0-bar0"),
            sys_region_info("dma-buf"),
            sys_lookup_slot("iommu-server"),
            sys_lookup_slot("pci-server"),
        ) else {
            log!("FAIL app.toml does not give the demo its regions and its iommu-server and pci-server slots");
            sys_shutdown(1)
        };
        // edu is 00:02.0 (app.toml [[devices]]); pci-server placed its BAR0
        // and turned memory decoding on; bus mastering is ours to ask for.
        let pci = PciClient::new(pci);
        let bdf = Bdf(0x10);
        let info = match pci.function_info(bdf) {
            Ok(i) => i,
            Err(e) => {
                log!("FAIL pci-server function_info: {:?}", e);
                sys_shutdown(1)
            }
        };
        if let Err(e) = pci.config_write(bdf, 0x04, 2, 0x6) {
            log!("FAIL pci-server: bus master on: {:?}", e);
            sys_shutdown(1)
        }
        // SAFETY: region pci-00-02-0-bar0 is edu's BAR0, mapped into this
        // task only (app.toml [[devices]]).
        let edu = match unsafe { Edu::at(bar0.va, info.stream) } {
            Ok(e) => e,
            Err(e) => {
                log!("FAIL edu: {:?}", e);
                sys_shutdown(1)
            }
        };
        log!(
            "edu 00:02.0 assigned by pci-server: BAR0 at {:#x}, StreamID {:#x}",
            bar0.pa,
            edu.sid
        );
        let iommu = IommuClient::new(server);
        match iommu.hw_info() {
            Ok(c) => log!(
                "SMMU: nesting {}, substream bits {}, PRI {}, stall {}, ATS {}, batch {}",
                c.nesting,
                c.ssid_bits,
                c.pri,
                c.stall,
                c.ats,
                c.max_batch
            ),
            Err(e) => ok &= step(false, show(e)),
        }
        let sid = StreamId(edu.sid);
        let dom: DomainId = match iommu.create_s2_domain(false) {
            Ok(d) => d,
            Err(e) => {
                log!("FAIL create_s2_domain: {}", show(e));
                sys_shutdown(1)
            }
        };
        let buf = Buf { va: dma.va };
        ok &= step(
            iommu
                .map(
                    dom,
                    IOVA,
                    dma.pa as u64,
                    2 * PAGE,
                    MapPerms::READ | MapPerms::WRITE,
                )
                .is_ok(),
            "stage-2 domain created; IOVA 0x100000..0x102000 mapped to our dma-buf",
        );
        ok &= step(
            iommu.attach(sid, dom).is_ok(),
            "edu's stream attached to the domain",
        );

        // edu reads page 0 into its buffer, then writes its buffer to page 1.
        for i in 0..LEN {
            buf.set(0, i, pattern(i));
            buf.set(1, i, 0);
        }
        let moved = edu.dma(IOVA, LEN, false, wait).is_ok()
            && edu.dma(IOVA + PAGE, LEN, true, wait).is_ok();
        let landed = (0..LEN).all(|i| buf.get(1, i) == pattern(i));
        ok &= step(
            moved && landed,
            "DMA through stage 2: edu copied page 0 to page 1 by IOVA",
        );

        // Unmap page 1 (iommu-server invalidates); the same DMA must not land.
        for i in 0..LEN {
            buf.set(1, i, 0);
        }
        ok &= step(
            iommu.unmap(dom, IOVA + PAGE, PAGE).is_ok(),
            "page 1 unmapped (TLBI_S2_IPA + SYNC)",
        );
        let _ = edu.dma(IOVA + PAGE, 4, true, wait);
        ok &= step(
            (0..LEN).all(|i| buf.get(1, i) == 0),
            "DMA to the unmapped IOVA faulted: nothing landed",
        );

        // A stream this VM does not own (0x18: nobody's) cannot be taken.
        let r = iommu.attach(StreamId(0x18), dom);
        ok &= step(
            r == Err(IommuError::NotPermitted),
            "attaching a stream that is not ours is refused",
        );

        // Detach: the stream aborts (never bypass) and the domain can go.
        ok &= step(iommu.detach(sid).is_ok(), "stream detached: its STE aborts");
        // Page 0 is still mapped in the domain; only the detach stands
        // between edu and it now.
        for i in 0..LEN {
            buf.set(0, i, 0);
        }
        let _ = edu.dma(IOVA, LEN, true, wait);
        ok &= step(
            (0..LEN).all(|i| buf.get(0, i) == 0),
            "DMA to a still-mapped IOVA after detach did not land",
        );
        ok &= step(iommu.destroy_domain(dom).is_ok(), "domain destroyed");

        log!(
            "demo {}",
            if ok {
                "finished: every step behaved"
            } else {
                "FAILED"
            }
        );
        if ok {
            log!("TEST demo_scenario ok");
        } else {
            log!("TEST demo_scenario FAIL a step misbehaved");
        }
        sys_shutdown(if ok { 0 } else { 1 })
    }
}

userlib::task_main!(scenario::run);
