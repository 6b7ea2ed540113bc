//! Runner of the death_* case: a VM owning edu's stream attaches it to a
//! stage 2 domain, proves DMA lands, and then faults on purpose. The
//! supervisor restarts it and posts iommu-server its death (bit 0x80);
//! iommu-server reclaims the dead incarnation's stream (abort), domains
//! and mappings (docs/pasids.md "Owner death"). The restarted VM (its
//! writable regions zeroed, edu still holding the pattern in its buffer)
//! proves the old IOVA no longer reaches memory, then creates a domain,
//! attaches the same stream (not Busy) and DMA lands again. edu is this
//! VM's through pci-server (docs/devices.md): the restarted VM finds its
//! bus mastering off (pci-server quieted it on the death) and asks again.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod cases {
    use edu::Edu;
    use iommu_server_api::{DomainId, IommuClient, IommuError, MapPerms, StreamId};
    use pci_server_api::{Bdf, PciClient};
    use test_support::{case, edu_dma, ensure, finish, Outcome};
    use userlib::*;

    const NAME: &str = "death_vm_fault_reclaims_and_restart_reattaches";
    /// This task's index: declaration order in qemu/apps/death.toml
    /// (supervisor, iommu-server, test-death). A task may refresh its own
    /// id, which tells it its incarnation.
    const SELF_INDEX: usize = 2;
    const EDU: StreamId = StreamId(0x10);
    const EDU_BDF: Bdf = Bdf(0x10);
    const SRC_IOVA: u64 = 0x10_0000;
    const T_IOVA: u64 = 0x20_0000;
    const PATTERN_LEN: usize = 256;
    const PAGE: u64 = 4096;

    fn pattern(k: usize) -> u8 {
        (k as u8) ^ 0x5a
    }

    struct Mem {
        va: usize,
        pa: u64,
    }

    impl Mem {
        fn ptr(&self, page: usize, off: usize) -> *mut u8 {
            (self.va + page * 4096 + off) as *mut u8
        }
        fn write8(&self, page: usize, off: usize, v: u8) {
            // SAFETY: `death-dma` is this task's region (2 pages); callers
            // pass page < 2 and off < 4096. Volatile: edu writes it.
            unsafe { core::ptr::write_volatile(self.ptr(page, off), v) }
        }
        fn read8(&self, page: usize, off: usize) -> u8 {
            // SAFETY: as in `write8`.
            unsafe { core::ptr::read_volatile(self.ptr(page, off)) }
        }
        fn landed(&self, page: usize) -> bool {
            (0..PATTERN_LEN).all(|k| self.read8(page, k) == pattern(k))
        }
        fn untouched(&self, page: usize) -> bool {
            (0..PATTERN_LEN).all(|k| self.read8(page, k) == 0)
        }
        fn zero(&self, page: usize) {
            for k in 0..4096 {
                self.write8(page, k, 0);
            }
        }
    }

    /// One DMA of a pattern's length between edu's buffer and `iova`.
    fn dma(edu: &Edu, iova: u64, to_ram: bool) -> Outcome {
        edu_dma(edu, iova, PATTERN_LEN, to_ram)
    }

    /// edu 00:02.0 is this VM's (qemu/apps/death.toml [[devices]]):
    /// pci-server placed BAR0 (mapped here as `pci-00-02-0-bar0`). Returns
    /// edu and the command register as this incarnation found it, then
    /// asks pci-server for memory + bus master.
    fn find_edu() -> Result<(Edu, u32), &'static str> {
        let bar = sys_region_info("pci-00-02-0-bar0").ok_or("no pci-00-02-0-bar0 region")?;
        let pci = PciClient::new(sys_lookup_slot("pci-server").ok_or("no pci-server slot")?);
        let info = pci
            .function_info(EDU_BDF)
            .map_err(|_| "pci-server: function_info refused")?;
        ensure(info.stream == EDU.0, "edu is not StreamID 0x10")?;
        let found = pci
            .config_read(EDU_BDF, 0x04, 2)
            .map_err(|_| "pci-server: command read refused")?;
        pci.config_write(EDU_BDF, 0x04, 2, 0x6)
            .map_err(|_| "pci-server: bus master refused")?;
        // SAFETY: `pci-00-02-0-bar0` is edu's BAR0, mapped in this task
        // (1 MiB of device memory) by the image.
        let edu = unsafe { Edu::at(bar.va, EDU.0) }.map_err(|_| "edu identification wrong")?;
        Ok((edu, found))
    }

    fn err(e: IommuError) -> &'static str {
        match e {
            IommuError::Busy => "iommu-server: Busy",
            IommuError::NotPermitted => "iommu-server: NotPermitted",
            IommuError::NotFound => "iommu-server: NotFound",
            _ => "iommu-server: error",
        }
    }

    /// Page 0: the pattern edu reads; page 1: the DMA target.
    fn attach_map_dma(api: &IommuClient, mem: &Mem, edu: &Edu) -> Result<DomainId, &'static str> {
        for k in 0..PATTERN_LEN {
            mem.write8(0, k, pattern(k));
        }
        mem.zero(1);
        let d = api.create_s2_domain(false).map_err(err)?;
        api.map(d, SRC_IOVA, mem.pa, PAGE, MapPerms::READ)
            .map_err(err)?;
        api.map(
            d,
            T_IOVA,
            mem.pa + PAGE,
            PAGE,
            MapPerms::READ.union(MapPerms::WRITE),
        )
        .map_err(err)?;
        api.attach(EDU, d).map_err(err)?;
        dma(edu, SRC_IOVA, false)?;
        dma(edu, T_IOVA, true)?;
        ensure(
            mem.landed(1),
            "DMA through the attached domain did not land",
        )?;
        Ok(d)
    }

    /// First incarnation: attach, DMA lands, then fault.
    fn first(api: &IommuClient, mem: &Mem, edu: &Edu) -> Outcome {
        attach_map_dma(api, mem, edu)?;
        let i = api.info().map_err(err)?;
        ensure(i.domains == 1, "iommu-server does not count the domain")?;
        log!("test-death: generation 0 attached and DMA landed; faulting");
        sys_panic(b"test-death: deliberate fault (owner death)")
    }

    /// Second incarnation: the old mapping must not reach memory, the
    /// dead VM's domain is gone, the stream attaches again and DMA lands.
    fn second(api: &IommuClient, mem: &Mem, edu: &Edu, found: u32) -> Outcome {
        // pci-server turned the dead incarnation's bus mastering off
        // (docs/devices.md "Owner death") before this one ran.
        ensure(
            found & 0x7 == 0x2,
            "edu's bus mastering survived its owner's death",
        )?;
        // The restart zeroed `death-dma`; edu's buffer still holds the
        // pattern. Were the old STE or mapping alive, this lands on page 1.
        ensure(mem.untouched(1), "restart did not zero the DMA region")?;
        dma(edu, T_IOVA, true)?;
        ensure(
            mem.untouched(1),
            "DMA to the dead incarnation's IOVA still reached memory",
        )?;
        let i = api.info().map_err(err)?;
        ensure(i.domains == 0, "the dead VM's domain was not reclaimed")?;
        attach_map_dma(api, mem, edu)?;
        Ok(())
    }

    pub fn run() -> ! {
        let me = sys_refresh_task_id(TaskId::new(SELF_INDEX, Generation(0)));
        let (Some(server), Some(region)) = (
            sys_lookup_slot("iommu-server"),
            sys_region_info("death-dma"),
        ) else {
            log!("test-death: missing iommu-server slot or death-dma region");
            finish(false)
        };
        let api = IommuClient::new(server);
        let mem = Mem {
            va: region.va,
            pa: region.pa as u64,
        };
        let (edu, found) = match find_edu() {
            Ok(e) => e,
            Err(why) => {
                log!("test-death: {}", why);
                finish(false)
            }
        };
        match me.generation().0 {
            0 => {
                // Only reached if `first` failed before its fault.
                let ok = case(NAME, || first(&api, &mem, &edu));
                finish(ok)
            }
            1 => finish(case(NAME, || second(&api, &mem, &edu, found))),
            _ => {
                log!("TEST {} FAIL restarted more than once", NAME);
                finish(false)
            }
        }
    }
}

userlib::task_main!(cases::run);
