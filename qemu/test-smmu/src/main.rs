//! Runner of the smmu_* cases: the iommu-server driving QEMU's SMMUv3 with
//! real DMA from the edu device. This task is a VM: app.toml assigns it
//! edu's stream. It finds edu on PCIe bus 0, gives it a BAR, and checks
//! where edu's DMA lands (or that it does not) in its own `smmu-dma` pages,
//! and which events the SMMU records. Every request to the iommu-server
//! goes through the generated `IommuClient` (`idl/iommu-server.idol.ron`).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod cases {
    use edu::Edu;
    use idl_runtime::{Fixed, WireOf};
    use iommu_server_api::{
        AttachOutcome, CdConfig, CdTableFormat, DomainId, InvalidateStatus, IommuClient,
        IommuError, IommuInfo, MapPerms, NestedSte, SmmuCmd, SmmuEvent, SteUpdate, StreamId,
        SubstreamDefault, UnbindOutcome,
    };
    use pasid_alloc_api::{Pasid, PasidGen, PasidHandle};
    use pci_server_api::{Bdf, PciClient, PciError};
    use prq_server_api::{EventRecord, PrqClient};
    use smmuv3::pgtable::{S1Ap, S1Desc};
    use smmuv3::{AddrSize, Cd, Command, Event, EventClass, EventId, S1Context, Tg0};
    use test_support::{case, edu_dma, ensure, finish, Outcome, TIMER_BIT};
    use userlib::*;

    // ---------------------------------------------------------------- layout

    /// edu's requester id (00:02.0 with QEMU's default NIC at 00:01.0).
    const EDU_SID: u32 = 0x10;
    /// The NIC's stream, assigned to test-smmu-vm2 in app.toml.
    const VM2_SID: u32 = 0x08;
    /// A stream assigned to nobody (0x18 is the second edu, test-smmu-vm2's).
    const NOBODY_SID: u32 = 0x20;
    /// edu's function, and test-smmu-vm2's edu (app.toml [[devices]]).
    const EDU_BDF: Bdf = Bdf(0x10);
    const VM2_EDU_BDF: Bdf = Bdf(0x18);
    /// The unassigned NIC.
    const NIC_BDF: Bdf = Bdf(0x08);

    /// Pages of `smmu-dma` (32 pages).
    const SRC: usize = 0; // the pattern edu loads into its buffer
    const T: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7]; // T[1..=7]: DMA targets
    const L1A: usize = 8; // guest stage 1 tables, set A (VA → T5)
    const L2A: usize = 9;
    const L3A: usize = 10;
    const CDA: usize = 11; // guest CD, set A
    const L1BAD: usize = 12; // an L1 pointing at an IPA stage 2 does not map
    const CDB: usize = 13; // guest CD, set B
    const L1B: usize = 14; // set B (VA → T7)
    const L2B: usize = 15;
    const L3B: usize = 16;
    const PAGES: usize = 32;

    /// IOVAs (edu keeps 28 address bits: all are below 0x1000_0000).
    const SRC_IOVA: u64 = 0x10_0000;
    const T_IOVA: u64 = 0x20_0000;
    const UNMAPPED_IOVA: u64 = 0x30_0000;
    const RO_IOVA: u64 = 0x31_0000;
    /// Where the foreign-memory case tries to map.
    const FOREIGN_IOVA: u64 = 0x33_0000;
    /// Three pages unmapped by one range invalidation.
    const RANGE_IOVA: u64 = 0x35_0000;
    /// The guest's IPA of `smmu-dma` page i is IPA_BASE + i * 4 KiB.
    const IPA_BASE: u64 = 0x100_0000;
    /// The guest's stage 1 VA used by the nested cases.
    const GUEST_VA: u64 = 0x40_0000;
    const UNMAPPED_IPA: u64 = 0x900_0000;

    const MSI_BASE: u64 = 0x0800_0000;
    const PATTERN_LEN: usize = 256;

    /// test-smmu-vm2's operations (its main.rs): empty messages, the
    /// answer is the reply code.
    const VM2_PROBE: u16 = 1;
    const VM2_FETCH_EVENTS: u16 = 2;

    const PAGE: u64 = 4096;
    const RW: MapPerms = MapPerms::READ.union(MapPerms::WRITE);

    fn pattern(k: usize) -> u8 {
        (k as u8) ^ 0xa5
    }

    // ---------------------------------------------------------------- memory

    struct Mem {
        va: usize,
        pa: u64,
    }

    impl Mem {
        fn pa(&self, page: usize) -> u64 {
            self.pa + (page * 4096) as u64
        }
        fn ipa(&self, page: usize) -> u64 {
            IPA_BASE + (page * 4096) as u64
        }
        fn ptr(&self, page: usize, off: usize) -> *mut u8 {
            (self.va + page * 4096 + off) as *mut u8
        }
        fn write8(&self, page: usize, off: usize, v: u8) {
            // SAFETY: `smmu-dma` is this task's memory region (32 pages);
            // every caller passes page < PAGES and off < 4096. Volatile:
            // edu writes this memory behind the compiler.
            unsafe { core::ptr::write_volatile(self.ptr(page, off), v) }
        }
        fn read8(&self, page: usize, off: usize) -> u8 {
            // SAFETY: as in `write8`.
            unsafe { core::ptr::read_volatile(self.ptr(page, off)) }
        }
        fn write64(&self, page: usize, off: usize, v: u64) {
            // SAFETY: as in `write8`; `off` is 8-byte aligned.
            unsafe { core::ptr::write_volatile(self.ptr(page, off) as *mut u64, v) }
        }
        fn zero(&self, page: usize) {
            for o in (0..4096).step_by(8) {
                self.write64(page, o, 0);
            }
        }
        fn landed(&self, page: usize) -> bool {
            (0..PATTERN_LEN).all(|k| self.read8(page, k) == pattern(k))
        }
        fn untouched(&self, page: usize) -> bool {
            (0..PATTERN_LEN).all(|k| self.read8(page, k) == 0)
        }
        fn zero_targets(&self) {
            for t in &T[1..] {
                self.zero(*t);
            }
        }
        /// Writes a stage 1 table descriptor or page descriptor.
        fn desc(&self, page: usize, index: usize, d: S1Desc) {
            self.write64(page, index * 8, d.raw());
        }
        fn cd(&self, page: usize, cd: &Cd) {
            for (i, w) in cd.words().iter().enumerate() {
                self.write64(page, i * 8, *w);
            }
        }
    }

    // ---------------------------------------------------------------- edu

    /// The two DMAs the cases issue, on the shared edu driver.
    trait EduCases {
        /// edu writes PATTERN_LEN bytes of its buffer at `iova`.
        fn write(&self, iova: u64) -> Outcome;
        /// A 4-byte write: one event record if it faults.
        fn poke(&self, iova: u64) -> Outcome;
    }

    impl EduCases for Edu {
        fn write(&self, iova: u64) -> Outcome {
            edu_dma(self, iova, PATTERN_LEN, true)
        }
        fn poke(&self, iova: u64) -> Outcome {
            edu_dma(self, iova, 4, true)
        }
    }

    /// edu 00:02.0 is this VM's (app.toml [[devices]]): pci-server placed
    /// its BAR0, mapped here as `pci-00-02-0-bar0`; bus mastering is asked
    /// of pci-server. Returns edu, its StreamID and BAR0's bus address.
    fn find_edu(pci: &PciClient) -> Result<(Edu, u32, usize), &'static str> {
        let bar = sys_region_info("pci-00-02-0-bar0").ok_or("no pci-00-02-0-bar0 region")?;
        let info = pci
            .function_info(EDU_BDF)
            .map_err(|_| "pci-server: function_info of our edu refused")?;
        ensure(info.id == 0x11e8_1234, "00:02.0 is not edu")?;
        pci.config_write(EDU_BDF, 0x04, 2, 0x6)
            .map_err(|_| "pci-server: memory + bus master refused")?;
        // SAFETY: `pci-00-02-0-bar0` is edu's BAR0, mapped in this task
        // (1 MiB of device memory) by the image.
        let edu = unsafe { Edu::at(bar.va, info.stream) }
            .map_err(|_| "edu identification register wrong")?;
        Ok((edu, info.stream, bar.pa))
    }

    // ---------------------------------------------------------------- context

    struct Ctx {
        api: IommuClient,
        /// prq-server, when the image has it: the event queue is its, and
        /// a VM's events come from its `fetch_events`.
        prq: Option<PrqClient>,
        edu: Edu,
        pci: PciClient,
        /// edu's BAR0 bus address (pci-server placed it).
        bar0: usize,
        mem: Mem,
        /// `smmu-dma`'s size in bytes.
        mem_size: u64,
        vm2: TaskId,
        /// The main S2 domain (created by smmu_stage2_dma).
        s2: Option<DomainId>,
        s1: Option<DomainId>,
        nested_a: Option<DomainId>,
    }

    fn err(e: IommuError) -> &'static str {
        match e {
            IommuError::NotPermitted => "iommu-server: NotPermitted",
            IommuError::NotFound => "iommu-server: NotFound",
            IommuError::Invalid => "iommu-server: Invalid",
            IommuError::Busy => "iommu-server: Busy",
            IommuError::NoSpace => "iommu-server: NoSpace",
            IommuError::AlreadyExists => "iommu-server: AlreadyExists",
            IommuError::Unsupported => "iommu-server: Unsupported",
            IommuError::Again => "iommu-server: Again",
            IommuError::TimedOut => "iommu-server: TimedOut",
            IommuError::AddrInUse => "iommu-server: AddrInUse",
            IommuError::Io => "iommu-server: Io",
            IommuError::ServerDied => "iommu-server: ServerDied",
            IommuError::Protocol => "iommu-server: Protocol",
        }
    }

    fn info(x: &Ctx) -> Result<IommuInfo, &'static str> {
        x.api.info().map_err(err)
    }

    /// Fetches up to `out.len()` (≤ 16) event records of this VM's streams.
    fn events(x: &Ctx, out: &mut [Event]) -> Result<usize, &'static str> {
        if x.prq.is_some() {
            return prq_events(x, out).map(|(n, _)| n);
        }
        let mut wires = [SmmuEvent { words: [0; 4] }.to_wire(); 16];
        let n = out.len().min(wires.len());
        let f = x.api.fetch_events(&mut wires[..n]).map_err(err)?;
        let count = (f.count as usize).min(n);
        for (o, w) in out.iter_mut().zip(&wires[..count]) {
            let e = SmmuEvent::from_wire(w).ok_or("fetch_events: bad record")?;
            *o = Event::from_words(e.words);
        }
        Ok(count)
    }

    /// Fetches up to `out.len()` (≤ 16) of this VM's event records from
    /// prq-server, checking each record's own fields against its raw
    /// words (event id, StreamID); returns the count and `lost`.
    fn prq_events(x: &Ctx, out: &mut [Event]) -> Result<(usize, u32), &'static str> {
        let prq = x.prq.as_ref().ok_or("no prq-server in this image")?;
        let blank = EventRecord {
            sid: StreamId(0),
            event_id: 0,
            words: [0; 4],
        };
        let mut wires = [blank.to_wire(); 16];
        let n = out.len().min(wires.len());
        let f = prq
            .fetch_events(&mut wires[..n])
            .map_err(|_| "prq-server: fetch_events refused")?;
        let count = (f.count as usize).min(n);
        for (o, w) in out.iter_mut().zip(&wires[..count]) {
            let r = EventRecord::from_wire(w).ok_or("fetch_events: bad record")?;
            let e = Event::from_words(r.words);
            ensure(
                r.event_id == e.raw_event_id(),
                "record's event_id differs from its raw record",
            )?;
            ensure(
                r.sid.0 == e.sid(),
                "record's sid differs from its raw record",
            )?;
            *o = e;
        }
        Ok((count, f.lost))
    }

    fn no_events(x: &Ctx) -> Outcome {
        let mut ev = [Event::zeroed(); 4];
        ensure(events(x, &mut ev)? == 0, "an event was recorded")
    }

    /// Exactly one event, of type `id`, for edu's write at `addr`, with
    /// the S2 bit and CLASS given.
    fn one_event(x: &Ctx, id: EventId, addr: u64, s2: bool, class: EventClass) -> Outcome {
        one_event_s2(x, id, addr, Some(s2), class).map(|_| ())
    }

    /// As [`one_event`]; `s2: None` accepts either S2 bit. Returns the
    /// event.
    fn one_event_s2(
        x: &Ctx,
        id: EventId,
        addr: u64,
        s2: Option<bool>,
        class: EventClass,
    ) -> Result<Event, &'static str> {
        let mut ev = [Event::zeroed(); 4];
        let n = events(x, &mut ev)?;
        ensure(n >= 1, "no event recorded")?;
        ensure(n == 1, "more than one event for one 4-byte DMA")?;
        let e = ev[0];
        log!(
            "event {:#x} sid {:#x} addr {:#x} S2={} CLASS={} RnW={} IPA/fetch {:#x}",
            e.raw_event_id(),
            e.sid(),
            e.input_addr(),
            e.s2() as u8,
            e.field(Event::CLASS),
            e.rnw() as u8,
            e.word(3)
        );
        ensure(e.event_id() == Ok(id), "wrong event type")?;
        ensure(e.sid() == EDU_SID, "event for the wrong stream")?;
        ensure(e.input_addr() == addr, "wrong input address in the event")?;
        ensure(
            s2.is_none_or(|s2| e.s2() == s2),
            "wrong S2 bit in the event",
        )?;
        ensure(e.class() == Ok(class), "wrong CLASS in the event")?;
        ensure(!e.rnw(), "event says read, edu wrote")?;
        Ok(e)
    }

    const EDU: StreamId = StreamId(EDU_SID);

    /// Puts edu's stream on `d`: `replace` when it is attached, else
    /// `attach`. Returns what the server did.
    fn attach(x: &Ctx, d: DomainId) -> Result<AttachOutcome, &'static str> {
        match x.api.replace(EDU, d) {
            Err(IommuError::NotFound) => x.api.attach(EDU, d).map_err(err),
            r => r.map_err(err),
        }
    }

    /// Maps `pages` pages.
    fn map(x: &Ctx, d: DomainId, iova: u64, pa: u64, pages: u64, perms: MapPerms) -> Outcome {
        x.api.map(d, iova, pa, pages * PAGE, perms).map_err(err)
    }

    fn pasid0() -> PasidHandle {
        PasidHandle {
            pasid: Pasid(0),
            generation: PasidGen(0),
        }
    }

    fn cmds<const N: usize>(c: [Command; N]) -> [WireOf<SmmuCmd>; N] {
        c.map(|c| SmmuCmd { words: c.words() }.to_wire())
    }

    fn s2(x: &Ctx) -> Result<DomainId, &'static str> {
        x.s2.ok_or("no S2 domain (an earlier case failed)")
    }

    /// A guest context for the nested cases: 39-bit VA, 4 KiB granule,
    /// write-back inner-shareable walks, MAIR index 0 write-back, faults
    /// recorded. Built with the guest's encoders (lib/smmuv3).
    fn guest_context(ttb0: u64, asid: u16) -> S1Context {
        S1Context {
            ttb0,
            t0sz: 25,
            tg0: Tg0::Granule4K,
            ips: AddrSize::Bits40,
            mair: 0xff,
            asid,
            record_faults: true,
            stall: false,
        }
    }

    /// The context as the interface carries it (TCR form).
    fn guest_ctx(ttb0: u64, asid: u16) -> CdConfig {
        let c = guest_context(ttb0, asid);
        CdConfig {
            ttb0,
            tcr: c.tcr(),
            mair: c.mair,
            asid,
        }
    }

    /// The guest's vSTE over its own CD table at `cd_page`.
    fn guest_vste(m: &Mem, cd_page: usize) -> NestedSte {
        NestedSte {
            cd_table_ipa: m.ipa(cd_page),
            s1cdmax: 0,
            s1fmt: CdTableFormat::Linear,
            s1dss: SubstreamDefault::Terminate,
        }
    }

    /// The same context as a CD the guest writes itself.
    fn guest_cd(ttb0: u64, asid: u16) -> Cd {
        guest_context(ttb0, asid).cd()
    }

    /// Builds the guest's stage 1 tables (IPAs everywhere): set A maps
    /// GUEST_VA to T5, set B to T7; L1BAD leads to an IPA stage 2 does not
    /// map.
    fn build_guest_tables(m: &Mem) {
        for p in [L1A, L2A, L3A, CDA, L1BAD, CDB, L1B, L2B, L3B] {
            m.zero(p);
        }
        let l2 = (GUEST_VA >> 21) as usize & 511;
        let l3 = (GUEST_VA >> 12) as usize & 511;
        m.desc(L1A, 0, S1Desc::table(m.ipa(L2A)));
        m.desc(L2A, l2, S1Desc::table(m.ipa(L3A)));
        m.desc(L3A, l3, S1Desc::page(m.ipa(T[5]), S1Ap::RwAny, 0));
        m.desc(L1B, 0, S1Desc::table(m.ipa(L2B)));
        m.desc(L2B, l2, S1Desc::table(m.ipa(L3B)));
        m.desc(L3B, l3, S1Desc::page(m.ipa(T[7]), S1Ap::RwAny, 0));
        m.desc(L1BAD, 0, S1Desc::table(UNMAPPED_IPA));
        m.cd(CDA, &guest_cd(m.ipa(L1A), 1));
        m.cd(CDB, &guest_cd(m.ipa(L1B), 2));
    }

    // ---------------------------------------------------------------- cases

    fn probe_idr(x: &mut Ctx) -> Outcome {
        let i = info(x)?;
        log!(
            "IDR0={:#010x} IDR1={:#010x} STRTAB_BASE_CFG={:#x}",
            i.idr0,
            i.idr1,
            i.strtab_cfg
        );
        ensure(i.idr0 & 0b11 == 0b11, "IDR0: S1P and S2P expected")?;
        ensure(i.idr1 & 0x3f == 16, "IDR1.SIDSIZE is not 16")?;
        ensure((i.idr1 >> 6) & 0x1f == 0, "IDR1.SSIDSIZE is not 0")?;
        let cfg = i.strtab_cfg;
        ensure(
            cfg >> 16 & 3 == 1 && (cfg >> 6) & 0x1f == 8,
            "not a 2-level stream table with SPLIT 8",
        )?;
        ensure(i.cr0 & 1 == 1, "SMMUEN is off")?;
        ensure(
            i.gbpa & (1 << 20) != 0,
            "GBPA.ABORT is not set (a disabled SMMU would bypass)",
        )?;
        let caps = x.api.hw_info().map_err(err)?;
        ensure(
            caps.ssid_bits == 0 && caps.nesting,
            "hw_info: expected nesting, no PASIDs",
        )?;
        ensure(
            !caps.pri && !caps.stall && !caps.ats,
            "hw_info: QEMU has no PRI, stall or ATS",
        )?;
        ensure(caps.max_batch == 64, "hw_info: batch of 64 commands")
    }

    fn cmdq_illegal_recovered(x: &mut Ctx) -> Outcome {
        let i = info(x)?;
        ensure(
            i.cmd_recovered >= 1,
            "no illegal command was recovered from",
        )?;
        ensure(
            i.last_refused_opcode == 0,
            "the refused command is not the boot self-test's",
        )?;
        ensure(i.last_refused_err == 1, "CMDQ_CONS.ERR was not CERROR_ILL")?;
        ensure(i.syncs > 0, "no CMD_SYNC issued")
    }

    fn failclosed_unattached_aborts(x: &mut Ctx) -> Outcome {
        // The STE is valid and aborts: no C_BAD_STE / C_BAD_STREAMID, and no
        // translation at all.
        x.mem.zero_targets();
        x.edu.poke(T_IOVA)?;
        no_events(x)?;
        ensure(
            (1..8).all(|t| x.mem.untouched(T[t])),
            "DMA of an unattached stream landed",
        )
    }

    fn stage2_dma(x: &mut Ctx) -> Outcome {
        let m = &x.mem;
        for k in 0..PATTERN_LEN {
            m.write8(SRC, k, pattern(k));
        }
        let d = x.api.create_s2_domain(false).map_err(err)?;
        x.s2 = Some(d);
        map(x, d, SRC_IOVA, m.pa(SRC), 1, MapPerms::READ)?;
        map(x, d, T_IOVA, m.pa(T[1]), 1, RW)?;
        let a = x.api.attach(EDU, d).map_err(err)?;
        ensure(
            a.old == DomainId(0) && a.update == SteUpdate::Hitless,
            "attach from abort: no old domain, one hitless STE update",
        )?;
        ensure(
            x.api.attach(EDU, d) == Err(IommuError::Busy),
            "attach of an attached stream",
        )?;
        // edu's buffer gets the pattern through the SMMU (a read), then
        // writes it back out (a write).
        edu_dma(&x.edu, SRC_IOVA, PATTERN_LEN, false)?;
        m.zero_targets();
        x.edu.write(T_IOVA)?;
        no_events(x)?;
        ensure(m.landed(T[1]), "DMA did not land on the mapped page")?;
        ensure(
            (2..8).all(|t| m.untouched(T[t])),
            "DMA landed elsewhere too",
        )
    }

    fn stage2_msi_window_reserved(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        let pa = x.mem.pa(T[2]);
        for iova in [MSI_BASE, MSI_BASE + 0xf_f000] {
            ensure(
                x.api.map(d, iova, pa, PAGE, RW) == Err(IommuError::AddrInUse),
                "mapped into the MSI window",
            )?;
        }
        ensure(
            x.api.map(d, MSI_BASE - PAGE, pa, 2 * PAGE, RW) == Err(IommuError::AddrInUse),
            "a range reaching into the MSI window was mapped",
        )?;
        // Just outside is fine.
        map(x, d, MSI_BASE + 0x10_0000, pa, 1, RW)?;
        ensure(
            x.api.unmap(d, MSI_BASE + 0x10_0000, PAGE) == Ok(PAGE),
            "unmap outside the window",
        )
    }

    fn failclosed_foreign_refused(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        // test-smmu-vm2 finds this VM's domains by trying every handle and
        // checks that each of its requests on them (and on this VM's
        // stream) is refused; it answers 0, or the number of the check
        // that failed.
        let (rc, _) = sys_send(x.vm2, VM2_PROBE, &[], &mut [], &[]);
        if rc != 0 {
            log!("test-smmu-vm2: check {} failed", rc);
            return Err("another VM could use this VM's objects (see the check number)");
        }
        // And this VM cannot take others' streams.
        ensure(
            x.api.attach(StreamId(VM2_SID), d).map(|_| ()) == Err(IommuError::NotPermitted),
            "attached another VM's stream",
        )?;
        ensure(
            x.api.attach(StreamId(NOBODY_SID), d).map(|_| ()) == Err(IommuError::NotPermitted),
            "attached an unassigned stream",
        )?;
        ensure(
            x.api.detach(StreamId(VM2_SID)).map(|_| ()) == Err(IommuError::NotPermitted),
            "detached another VM's stream",
        )?;
        // Nothing changed: edu still translates through the same domain.
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        ensure(
            x.mem.landed(T[1]),
            "refused requests changed the translation",
        )
    }

    fn failclosed_foreign_memory(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        let own = x.mem.pa(0);
        let end = own + x.mem_size;
        let free = info(x)?.pages_free;
        // Physical memory that is not this VM's DMA memory, as the kernel
        // knows it (sys_phys_owned): just past and just before its region,
        // a range straddling its end, the start of RAM (the kernel).
        let foreign = [
            (end, PAGE),
            (own - PAGE, PAGE),
            (end - PAGE, 2 * PAGE),
            (0x4000_0000, PAGE),
        ];
        for (pa, len) in foreign {
            if x.api.map(d, FOREIGN_IOVA, pa, len, RW) != Err(IommuError::NotPermitted) {
                log!("mapping PA {:#x} + {:#x} was not refused", pa, len);
                return Err("mapped memory this VM does not own");
            }
        }
        ensure(
            info(x)?.pages_free == free,
            "a refused map allocated table pages",
        )?;
        // Nothing is mapped there: edu's DMA faults and lands nowhere.
        x.mem.zero_targets();
        x.edu.poke(FOREIGN_IOVA)?;
        one_event(x, EventId::FTranslation, FOREIGN_IOVA, true, EventClass::In)?;
        ensure(
            x.api.unmap(d, FOREIGN_IOVA, PAGE) == Ok(0),
            "a refused map left a page behind",
        )?;
        // Its own memory maps there, and the rest did not change.
        map(x, d, FOREIGN_IOVA, x.mem.pa(T[3]), 1, RW)?;
        x.edu.write(FOREIGN_IOVA)?;
        ensure(x.mem.landed(T[3]), "its own page did not map")?;
        ensure(
            x.api.unmap(d, FOREIGN_IOVA, PAGE) == Ok(PAGE),
            "unmap of its own page",
        )?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        ensure(x.mem.landed(T[1]), "refused maps changed the translation")
    }

    /// prq_event_to_owner_only: edu's 4-byte DMA to an unmapped IOVA
    /// raises F_TRANSLATION in the real event queue (prq-server's); prq-server
    /// hands the record to edu's owner (this VM) with its event id, StreamID
    /// (this VM's own) and address, and to no one else.
    fn prq_event_to_owner_only(x: &mut Ctx) -> Outcome {
        ensure(x.prq.is_some(), "no prq-server slot")?;
        x.edu.poke(UNMAPPED_IOVA + 0x40)?;
        let (rc, _) = sys_send(x.vm2, VM2_FETCH_EVENTS, &[], &mut [], &[]);
        ensure(rc == 0, "prq-server handed another VM this VM's event")?;
        let mut ev = [Event::zeroed(); 4];
        let (n, lost) = prq_events(x, &mut ev)?;
        ensure(n == 1, "not exactly one record for one 4-byte DMA")?;
        ensure(lost == 0, "events reported lost")?;
        let e = ev[0];
        ensure(
            e.event_id() == Ok(EventId::FTranslation),
            "not F_TRANSLATION",
        )?;
        ensure(e.sid() == EDU_SID, "record names another stream")?;
        ensure(e.input_addr() == UNMAPPED_IOVA + 0x40, "wrong address")?;
        // Fetched once: nothing is handed out twice.
        let (n, _) = prq_events(x, &mut ev)?;
        ensure(n == 0, "the record was handed out twice")
    }

    /// prq_event_queue_overflow_lost_counted: one 4 KiB edu DMA to an
    /// unmapped IOVA is 1024 4-byte accesses, each its own F_TRANSLATION
    /// record, all within one QEMU step (nothing consumes meanwhile);
    /// prq-server's event queue holds 2^6 (its EVENTQ_BASE.LOG2SIZE). QEMU
    /// 10 sets no OVFLG for a full queue: it drops the rest and raises
    /// GERROR.EVENTQ_ABT_ERR, which iommu-server acknowledges and reports
    /// to prq-server (`event_records_lost`). The VM's records are correct
    /// (its stream, addresses of the DMA in order), and delivered + lost
    /// exceeds what the queue can hold — the 64 read are all accounted for
    /// (the owner ring keeps 16 and counts the rest), so only the reported
    /// abort can make it more. Recording then resumes, with nothing lost.
    fn prq_event_queue_overflow_lost_counted(x: &mut Ctx) -> Outcome {
        const EVTQ_ENTRIES: usize = 1 << 6;
        const LEN: usize = 4096;
        ensure(x.prq.is_some(), "no prq-server slot")?;
        edu_dma(&x.edu, UNMAPPED_IOVA, LEN, true)?;
        let mut ev = [Event::zeroed(); 16];
        let (mut got, mut lost) = (0usize, 0usize);
        let mut prev: Option<u64> = None;
        for _ in 0..50 {
            let (n, l) = prq_events(x, &mut ev)?;
            for e in &ev[..n] {
                ensure(
                    e.event_id() == Ok(EventId::FTranslation),
                    "not F_TRANSLATION",
                )?;
                ensure(e.sid() == EDU_SID, "record names another stream")?;
                let a = e.input_addr();
                ensure(
                    (UNMAPPED_IOVA..UNMAPPED_IOVA + LEN as u64).contains(&a) && a % 4 == 0,
                    "record address outside the DMA",
                )?;
                ensure(
                    prev.is_none_or(|p| a > p),
                    "records out of order or repeated",
                )?;
                prev = Some(a);
            }
            got += n;
            lost += l as usize;
            if got + lost > EVTQ_ENTRIES {
                break;
            }
            sleep_for(10, TIMER_BIT);
        }
        log!(
            "event queue overflow: {} records delivered, {} lost",
            got,
            lost
        );
        ensure(got >= 1, "no record delivered")?;
        ensure(
            got + lost > EVTQ_ENTRIES,
            "records QEMU dropped (EVENTQ_ABT_ERR) were not reported lost",
        )?;
        let (n, l) = prq_events(x, &mut ev)?;
        ensure(n == 0 && l == 0, "lost reported twice")?;
        x.edu.poke(UNMAPPED_IOVA + 0x40)?;
        let (n, l) = prq_events(x, &mut ev)?;
        ensure(
            n == 1 && l == 0 && ev[0].input_addr() == UNMAPPED_IOVA + 0x40,
            "recording did not resume after the abort was acknowledged",
        )
    }

    fn fault_s2_unmapped(x: &mut Ctx) -> Outcome {
        x.edu.poke(UNMAPPED_IOVA)?;
        // The event belongs to edu's owner: the other VM is not given it
        // (it answers how many records it got).
        let (rc, _) = sys_send(x.vm2, VM2_FETCH_EVENTS, &[], &mut [], &[]);
        ensure(rc == 0, "another VM was handed this VM's event")?;
        one_event(
            x,
            EventId::FTranslation,
            UNMAPPED_IOVA,
            true,
            EventClass::In,
        )
    }

    fn fault_s2_permission(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        map(x, d, RO_IOVA, x.mem.pa(T[2]), 1, MapPerms::READ)?;
        x.mem.zero(T[2]);
        x.edu.poke(RO_IOVA)?;
        one_event(x, EventId::FPermission, RO_IOVA, true, EventClass::In)?;
        ensure(
            x.mem.untouched(T[2]),
            "a write through a read-only mapping landed",
        )
    }

    fn invalidate_unmap_faults(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?; // the translation is now cached
        ensure(x.mem.landed(T[1]), "DMA before the unmap did not land")?;
        ensure(
            x.api.unmap(d, T_IOVA, PAGE) == Ok(PAGE),
            "unmap did not find the page",
        )?;
        x.mem.zero_targets();
        x.edu.poke(T_IOVA)?;
        ensure(
            x.mem.untouched(T[1]),
            "DMA landed after unmap + invalidation",
        )?;
        one_event(x, EventId::FTranslation, T_IOVA, true, EventClass::In)
    }

    /// An unmap of three pages is one range TLBI_S2_IPA (QEMU has
    /// IDR3.RIL): the cached translations of its first and last page are
    /// both gone before the reply.
    fn invalidate_range_unmap_faults(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        map(x, d, RANGE_IOVA, x.mem.pa(T[1]), 3, RW)?;
        x.mem.zero_targets();
        // Both translations are now cached.
        x.edu.write(RANGE_IOVA)?;
        x.edu.write(RANGE_IOVA + 2 * PAGE)?;
        ensure(
            x.mem.landed(T[1]) && x.mem.landed(T[3]),
            "DMA before the unmap did not land",
        )?;
        ensure(
            x.api.unmap(d, RANGE_IOVA, 3 * PAGE) == Ok(3 * PAGE),
            "unmap did not find the three pages",
        )?;
        x.mem.zero_targets();
        x.edu.poke(RANGE_IOVA + 2 * PAGE)?;
        ensure(
            x.mem.untouched(T[3]),
            "DMA to the range's last page landed after unmap + invalidation",
        )?;
        one_event(
            x,
            EventId::FTranslation,
            RANGE_IOVA + 2 * PAGE,
            true,
            EventClass::In,
        )?;
        x.edu.poke(RANGE_IOVA)?;
        ensure(
            x.mem.untouched(T[1]),
            "DMA to the range's first page landed after unmap + invalidation",
        )?;
        one_event(x, EventId::FTranslation, RANGE_IOVA, true, EventClass::In)
    }

    fn invalidate_deferred_stale(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        map(x, d, T_IOVA, x.mem.pa(T[1]), 1, RW)?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        ensure(x.mem.landed(T[1]), "DMA did not land")?;
        ensure(
            x.api.unmap_deferred(d, T_IOVA, PAGE) == Ok(PAGE),
            "deferred unmap",
        )?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        // The SMMU's TLB still holds the translation: the page is reachable
        // until the flush.
        ensure(
            x.mem.landed(T[1]),
            "no stale translation without invalidation (the model does not cache?)",
        )?;
        no_events(x)?;
        x.api.flush(d).map_err(err)?;
        x.mem.zero_targets();
        x.edu.poke(T_IOVA)?;
        ensure(x.mem.untouched(T[1]), "DMA landed after the flush")?;
        one_event(x, EventId::FTranslation, T_IOVA, true, EventClass::In)?;
        map(x, d, T_IOVA, x.mem.pa(T[1]), 1, RW)
    }

    fn failclosed_detach_aborts(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        let a = x.api.detach(EDU).map_err(err)?;
        ensure(a.old == d, "detach did not report the old domain")?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        ensure(x.mem.untouched(T[1]), "DMA landed after detach")?;
        no_events(x)?; // an abort STE records nothing
        ensure(
            x.api.detach(EDU).map(|_| ()) == Err(IommuError::NotFound),
            "second detach",
        )
    }

    fn stage1_dma(x: &mut Ctx) -> Outcome {
        let d = x.api.create_s1_domain(false).map_err(err)?;
        x.s1 = Some(d);
        map(x, d, T_IOVA, x.mem.pa(T[2]), 1, RW)?;
        attach(x, d)?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        no_events(x)?;
        ensure(
            x.mem.landed(T[2]),
            "stage 1 DMA did not land on the mapped page",
        )?;
        ensure(
            x.mem.untouched(T[1]),
            "stage 1 DMA landed on the S2 domain's page",
        )
    }

    fn fault_s1_unmapped(x: &mut Ctx) -> Outcome {
        x.edu.poke(UNMAPPED_IOVA)?;
        one_event(
            x,
            EventId::FTranslation,
            UNMAPPED_IOVA,
            false,
            EventClass::In,
        )
    }

    fn replace_s1_hitless(x: &mut Ctx) -> Outcome {
        let old = x.s1.ok_or("no S1 domain")?;
        let new = x.api.create_s1_domain(false).map_err(err)?;
        map(x, new, T_IOVA, x.mem.pa(T[3]), 1, RW)?;
        let a = x.api.replace(EDU, new).map_err(err)?;
        ensure(a.old == old, "replace did not report the old domain")?;
        ensure(
            a.update == SteUpdate::Hitless,
            "S1 -> S1 replace was not hitless",
        )?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        ensure(
            x.mem.landed(T[3]),
            "after replace DMA did not go to the new domain's page",
        )?;
        ensure(
            x.mem.untouched(T[2]),
            "after replace DMA still went to the old domain's page",
        )?;
        x.api.destroy_domain(old).map_err(err)?;
        x.s1 = Some(new);
        Ok(())
    }

    fn domain_busy(x: &mut Ctx) -> Outcome {
        let d = x.s1.ok_or("no S1 domain")?;
        ensure(
            x.api.destroy_domain(d) == Err(IommuError::Busy),
            "destroyed a domain with an attached stream",
        )?;
        x.api.detach(EDU).map_err(err)?;
        x.api.destroy_domain(d).map_err(err)?;
        x.s1 = None;
        ensure(
            x.api.destroy_domain(d) == Err(IommuError::NotFound),
            "a destroyed domain's handle still works",
        )
    }

    fn replace_s2(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        let d2 = x.api.create_s2_domain(true).map_err(err)?;
        map(x, d2, T_IOVA, x.mem.pa(T[4]), 1, RW)?;
        attach(x, d)?;
        ensure(
            x.api.replace(StreamId(VM2_SID), d2) == Err(IommuError::NotPermitted),
            "replace of another VM's stream",
        )?;
        let a = x.api.replace(EDU, d2).map_err(err)?;
        ensure(a.old == d, "replace did not report the old domain")?;
        ensure(
            a.update == SteUpdate::BreakBeforeMake,
            "S2 -> S2 (new VMID and S2TTB) should be break-before-make",
        )?;
        ensure(!a.fault_duty, "the old domain was not fault-capable")?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        ensure(
            x.mem.landed(T[4]),
            "after replace DMA did not go to the new domain's page",
        )?;
        ensure(
            x.mem.untouched(T[1]),
            "after replace DMA still went to the old domain's page",
        )?;
        // Back: the fault-capable domain leaves a duty to answer its faults.
        let b = x.api.replace(EDU, d).map_err(err)?;
        ensure(
            b.fault_duty && b.old == d2,
            "no fault duty for a fault-capable old domain",
        )?;
        x.api.destroy_domain(d2).map_err(err)
    }

    /// Maps all of `smmu-dma` into the S2 domain as the guest's IPA range.
    fn map_guest_memory(x: &Ctx, d: DomainId) -> Outcome {
        match x.api.map(d, IPA_BASE, x.mem.pa(0), PAGES as u64 * PAGE, RW) {
            Ok(()) | Err(IommuError::AlreadyExists) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    fn nested_bind_dma(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        build_guest_tables(&x.mem);
        map_guest_memory(x, d)?;
        attach(x, d)?;
        // PASID 0, the stream's own context; TCR_EL1-style T0SZ 25, 4 KiB,
        // WB/IS, IPS 40 bits.
        let users = x
            .api
            .bind(EDU, pasid0(), guest_ctx(x.mem.ipa(L1A), 1), true)
            .map_err(err)?;
        ensure(users == 1, "first bind does not have one user")?;
        x.mem.zero_targets();
        x.edu.write(GUEST_VA)?;
        no_events(x)?;
        ensure(
            x.mem.landed(T[5]),
            "nested DMA (guest S1 over S2) did not land",
        )
    }

    fn nested_bind_users(x: &mut Ctx) -> Outcome {
        let ctx = guest_ctx(x.mem.ipa(L1A), 1);
        ensure(
            x.api.bind(EDU, pasid0(), ctx, true) == Ok(2),
            "second bind did not just count a user",
        )?;
        ensure(
            x.api.bind_users(EDU, Pasid(0)) == Ok(2),
            "bind_users does not count two",
        )?;
        let other = guest_ctx(x.mem.ipa(L1B), 2);
        ensure(
            x.api.bind(EDU, pasid0(), other, true) == Err(IommuError::AlreadyExists),
            "rebound with another context",
        )?;
        ensure(
            x.api.unbind(EDU, Pasid(0), false) == Ok(UnbindOutcome::StillBound),
            "unbind of two users",
        )?;
        x.mem.zero_targets();
        x.edu.write(GUEST_VA)?;
        ensure(x.mem.landed(T[5]), "a user remains, yet DMA stopped")?;
        ensure(
            x.api.unbind(EDU, Pasid(0), false) == Ok(UnbindOutcome::Drained),
            "last unbind",
        )?;
        ensure(
            x.api.unbind(EDU, Pasid(0), false) == Ok(UnbindOutcome::NotBound),
            "unbind of nothing",
        )?;
        ensure(
            x.api.bind_users(EDU, Pasid(0)) == Err(IommuError::NotFound),
            "bind_users after the last unbind",
        )?;
        // Back to plain S2: GUEST_VA is an IPA again, one S2 does not map.
        x.mem.zero_targets();
        x.edu.poke(GUEST_VA)?;
        ensure(
            x.mem.untouched(T[5]),
            "the context outlived its last unbind",
        )?;
        one_event(x, EventId::FTranslation, GUEST_VA, true, EventClass::In)
    }

    fn nested_pasid_unsupported(x: &mut Ctx) -> Outcome {
        let pasid3 = PasidHandle {
            pasid: Pasid(3),
            generation: PasidGen(1),
        };
        let r = x.api.bind(EDU, pasid3, guest_ctx(x.mem.ipa(L1A), 1), true);
        ensure(
            r == Err(IommuError::Unsupported),
            "PASID 3 without substreams was not Unsupported",
        )?;
        ensure(
            x.api.bind_users(EDU, Pasid(3)) == Err(IommuError::NotFound),
            "a refused bind left a context",
        )
    }

    fn fault_nested_table_walk(x: &mut Ctx) -> Outcome {
        x.api
            .bind(EDU, pasid0(), guest_ctx(x.mem.ipa(L1BAD), 3), true)
            .map_err(err)?;
        x.edu.poke(GUEST_VA)?;
        // Stage 2 faulted on the guest's table address: CLASS = TT and the
        // IPA of the table. The architecture also sets S2 = 1; QEMU 10.0.2
        // reports S2 = 0 here (smmu_ptw_64_s1's error path overwrites the
        // stage that translate_table_addr_ipa recorded), so the S2 bit is
        // not checked for this event.
        let r =
            one_event_s2(x, EventId::FTranslation, GUEST_VA, None, EventClass::Ttd).and_then(|e| {
                ensure(
                    e.ipa() == UNMAPPED_IPA,
                    "wrong IPA (the table's) in the event",
                )
            });
        ensure(
            x.api.unbind(EDU, Pasid(0), false) == Ok(UnbindOutcome::Drained),
            "unbind",
        )?;
        r
    }

    fn nested_guest_cd_dma(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        let n = x
            .api
            .create_nested_domain(d, guest_vste(&x.mem, CDA), false)
            .map_err(err)?;
        x.nested_a = Some(n);
        let a = x.api.replace(EDU, n).map_err(err)?;
        ensure(
            a.update == SteUpdate::Hitless,
            "S2 -> nested on the same S2 was not hitless",
        )?;
        x.mem.zero_targets();
        x.edu.write(GUEST_VA)?;
        no_events(x)?;
        ensure(
            x.mem.landed(T[5]),
            "DMA through the guest's own CD did not land",
        )?;
        ensure(
            x.api.destroy_domain(d) == Err(IommuError::Busy),
            "destroyed the parent of a nested domain",
        )
    }

    fn invalidate_guest_batch(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        let l3 = (GUEST_VA >> 12) as usize & 511;
        // The guest remaps its VA to T6 without telling the SMMU.
        x.mem
            .desc(L3A, l3, S1Desc::page(x.mem.ipa(T[6]), S1Ap::RwAny, 0));
        x.mem.zero_targets();
        x.edu.write(GUEST_VA)?;
        ensure(
            x.mem.landed(T[5]),
            "no stale stage 1 translation before the guest's invalidation",
        )?;
        // A forbidden command stops the batch: the first one ran, nothing
        // after it.
        let bad = cmds([
            Command::tlbi_nh_asid(0, 7),
            Command::cfgi_ste(EDU_SID, true),
            Command::tlbi_nh_all(0),
        ]);
        let o = x.api.invalidate(d, &bad).map_err(err)?;
        ensure(
            o.done == 1 && o.status == InvalidateStatus::Rejected,
            "CFGI_STE in a guest batch was not refused at index 1",
        )?;
        let o = x
            .api
            .invalidate(d, &cmds([Command::cfgi_cd_all(VM2_SID)]))
            .map_err(err)?;
        ensure(
            o.done == 0 && o.status == InvalidateStatus::Rejected,
            "a guest named another VM's stream",
        )?;
        // The guest's own invalidation, with a VMID it has no say in.
        let good = cmds([
            Command::tlbi_nh_va(0x77, 1, GUEST_VA, true),
            Command::cfgi_cd(EDU_SID, 0, true),
        ]);
        let o = x.api.invalidate(d, &good).map_err(err)?;
        ensure(
            o.done == 2 && o.status == InvalidateStatus::Complete,
            "the guest's invalidation batch was not done",
        )?;
        x.mem.zero_targets();
        x.edu.write(GUEST_VA)?;
        ensure(
            x.mem.landed(T[6]),
            "after the guest's TLBI_NH_VA DMA did not follow the new mapping",
        )?;
        ensure(
            x.mem.untouched(T[5]),
            "stale translation survived the guest's invalidation",
        )
    }

    fn replace_nested_hitless(x: &mut Ctx) -> Outcome {
        let d = s2(x)?;
        let old = x.nested_a.ok_or("no nested domain")?;
        let n = x
            .api
            .create_nested_domain(d, guest_vste(&x.mem, CDB), false)
            .map_err(err)?;
        let a = x.api.replace(EDU, n).map_err(err)?;
        ensure(a.old == old, "replace did not report the old nested domain")?;
        ensure(
            a.update == SteUpdate::Hitless,
            "nested -> nested on one parent was not hitless",
        )?;
        x.mem.zero_targets();
        x.edu.write(GUEST_VA)?;
        ensure(
            x.mem.landed(T[7]),
            "after replace DMA did not use the new guest tables",
        )?;
        ensure(
            x.mem.untouched(T[6]),
            "after replace DMA still used the old guest tables",
        )?;
        x.api.destroy_domain(old).map_err(err)?;
        x.api.detach(EDU).map_err(err)?;
        x.api.destroy_domain(n).map_err(err)?;
        x.api.destroy_domain(d).map_err(err)?;
        let i = info(x)?;
        ensure(i.domains == 0 && i.contexts == 0, "objects left behind")
    }

    // ------------------------------------------------------------ pci_*

    const VM2_PCI_FOREIGN: u16 = 3;
    const VM2_TOUCH_FOREIGN_BAR: u16 = 4;
    const VM2_PCI_STATUS: u16 = 5;
    const VM2_OWN_EDU_DMA: u16 = 6;

    /// pci_second_edu_stream_0x18: vm2 drives its own edu (00:03.0) with
    /// bus mastering from pci-server, through a domain attached to
    /// StreamID 0x18 only: the DMA lands, so that function's requests
    /// carry StreamID 0x18 (its requester id).
    fn pci_second_edu_stream_0x18(x: &mut Ctx) -> Outcome {
        let (rc, _) = sys_send(x.vm2, VM2_OWN_EDU_DMA, &[], &mut [], &[]);
        ensure(rc == 0, "vm2's edu DMA through StreamID 0x18 failed")
    }

    fn pci_err(e: PciError) -> &'static str {
        match e {
            PciError::NotPermitted => "pci-server: NotPermitted",
            PciError::Invalid => "pci-server: Invalid",
            PciError::Range => "pci-server: Range",
            PciError::Unsupported => "pci-server: Unsupported",
            PciError::NoDevice => "pci-server: NoDevice",
            PciError::ServerDied => "pci-server: ServerDied",
            PciError::Protocol => "pci-server: Protocol",
        }
    }

    /// Our command register and BAR0, read through pci-server.
    fn own_state(x: &Ctx) -> Result<(u32, u32), &'static str> {
        let c = x.pci.config_read(EDU_BDF, 0x04, 2).map_err(pci_err)?;
        let b = x.pci.config_read(EDU_BDF, 0x10, 4).map_err(pci_err)?;
        Ok((c, b))
    }

    /// pci_own_config_filtered: the owner reads its function, BAR0 reads
    /// the table's address; a BAR move, the ROM, I/O space, the MSI
    /// capability and malformed accesses are refused with their errors,
    /// and the device still has what it had.
    fn pci_own_config_filtered(x: &mut Ctx) -> Outcome {
        let p = &x.pci;
        ensure(p.config_read(EDU_BDF, 0, 4) == Ok(0x11e8_1234), "id read")?;
        let (cmd, bar) = own_state(x)?;
        ensure(cmd & 0x7 == 0x6, "command is not memory + bus master")?;
        ensure(
            bar as usize & !0xf == x.bar0,
            "BAR0 is not the table's address",
        )?;
        ensure(
            p.config_write(EDU_BDF, 0x10, 4, 0x1080_0000) == Err(PciError::Range),
            "BAR0 move not refused",
        )?;
        ensure(
            p.config_write(EDU_BDF, 0x10, 4, u32::MAX) == Err(PciError::Range),
            "BAR0 sizing write not refused",
        )?;
        ensure(
            p.config_write(EDU_BDF, 0x30, 4, 0x1000_0001) == Err(PciError::Range),
            "ROM write not refused",
        )?;
        ensure(
            p.config_write(EDU_BDF, 0x04, 2, 0x7) == Err(PciError::Range),
            "I/O space enable not refused",
        )?;
        // edu's first capability is MSI (QEMU edu.c: msi_init).
        let cap = p.config_read(EDU_BDF, 0x34, 1).map_err(pci_err)?;
        let id = p.config_read(EDU_BDF, cap as u16, 1).map_err(pci_err)?;
        ensure(id == 0x05, "edu's first capability is not MSI")?;
        ensure(
            p.config_write(EDU_BDF, cap as u16 + 2, 2, 1) == Err(PciError::Unsupported),
            "MSI enable not refused as Unsupported",
        )?;
        for (off, size) in [(0x04, 3), (0x05, 2), (0x06, 4), (0x1000, 1), (0xffe, 4)] {
            ensure(
                p.config_read(EDU_BDF, off, size) == Err(PciError::Invalid),
                "malformed read not Invalid",
            )?;
            ensure(
                p.config_write(EDU_BDF, off, size, 0) == Err(PciError::Invalid),
                "malformed write not Invalid",
            )?;
        }
        ensure(
            own_state(x)? == (cmd, bar),
            "a refused write changed the device",
        )?;
        ensure(
            p.config_read(EDU_BDF, cap as u16 + 2, 2).map_err(pci_err)? & 1 == 0,
            "MSI got enabled",
        )?;
        // vm2's edu and the unassigned NIC are not ours.
        ensure(
            p.config_read(VM2_EDU_BDF, 0, 4) == Err(PciError::NotPermitted),
            "read vm2's edu",
        )?;
        ensure(
            p.config_write(VM2_EDU_BDF, 0x04, 2, 0) == Err(PciError::NotPermitted),
            "wrote vm2's edu's command register",
        )?;
        ensure(
            p.config_read(NIC_BDF, 0, 4) == Err(PciError::NotPermitted),
            "read the unassigned NIC",
        )
    }

    /// pci_foreign_config_refused: vm2 reads and writes our function's
    /// config space (command, BAR0) and asks its info: NotPermitted each
    /// time, and our device still reads what it did.
    fn pci_foreign_config_refused(x: &mut Ctx) -> Outcome {
        let before = own_state(x)?;
        let (rc, _) = sys_send(x.vm2, VM2_PCI_FOREIGN, &[], &mut [], &[]);
        ensure(
            rc == 0,
            "vm2: a request on our function was not NotPermitted",
        )?;
        ensure(
            own_state(x)? == before,
            "vm2's refused requests changed our device",
        )
    }

    /// pci_foreign_bus_master_refused_dma_continues: vm2 tries to turn our
    /// bus mastering (and decoding) off — refused — and our DMA through
    /// the S2 domain still lands.
    fn pci_foreign_bus_master_refused_dma_continues(x: &mut Ctx) -> Outcome {
        // A fresh S2 domain (the earlier cases' domains are gone) mapping
        // one target page, edu's stream on it.
        let d = x.api.create_s2_domain(false).map_err(err)?;
        map(x, d, T_IOVA, x.mem.pa(T[1]), 1, RW)?;
        attach(x, d)?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        ensure(
            x.mem.landed(T[1]),
            "our DMA did not land before vm2's attempt",
        )?;
        let (rc, _) = sys_send(x.vm2, VM2_PCI_FOREIGN, &[], &mut [], &[]);
        ensure(rc == 0, "vm2 switched our bus mastering off")?;
        ensure(own_state(x)?.0 & 0x4 != 0, "bus mastering is off")?;
        x.mem.zero_targets();
        x.edu.write(T_IOVA)?;
        ensure(
            x.mem.landed(T[1]),
            "our DMA did not land after vm2's attempt",
        )
    }

    /// pci_foreign_bar_faults: vm2 turns its own edu's bus mastering on,
    /// then touches the address where our BAR0 would be if it mapped the
    /// whole BAR window: it has no such page, so it faults (its reply is
    /// the kernel's dead code), and our edu still answers.
    fn pci_foreign_bar_faults(x: &mut Ctx) -> Outcome {
        let (rc, _) = sys_send(x.vm2, VM2_TOUCH_FOREIGN_BAR, &[], &mut [], &[]);
        ensure(is_dead_code(rc).is_some(), "vm2 survived touching our BAR")?;
        ensure(x.edu.ident() == edu::EDU_IDENT, "our edu stopped answering")
    }

    /// pci_dead_owner_bus_master_off: vm2 died with its edu's bus mastering
    /// on; its restarted incarnation reads its command register (the
    /// device's): memory decode on, bus mastering off.
    fn pci_dead_owner_bus_master_off(x: &mut Ctx) -> Outcome {
        for _ in 0..50 {
            x.vm2 = sys_refresh_task_id(x.vm2);
            let (rc, _) = sys_send(x.vm2, VM2_PCI_STATUS, &[], &mut [], &[]);
            if is_dead_code(rc).is_none() {
                ensure(
                    rc & 0x1_0000 != 0,
                    "vm2 could not read its command register",
                )?;
                return ensure(
                    rc & 0x7 == 0x2,
                    "vm2's edu: bus mastering not off (or decoding off) after its death",
                );
            }
            sleep_for(10, TIMER_BIT);
        }
        Err("vm2 never came back")
    }

    type Case = (&'static str, fn(&mut Ctx) -> Outcome);

    pub fn run() -> ! {
        let server = sys_lookup_slot("iommu-server");
        let vm2 = sys_lookup_slot("test-smmu-vm2");
        let region = sys_region_info("smmu-dma");
        let (Some(server), Some(vm2), Some(region)) = (server, vm2, region) else {
            log!("test-smmu: missing slots or the smmu-dma region");
            finish(false)
        };
        let Some(pci) = sys_lookup_slot("pci-server").map(PciClient::new) else {
            log!("test-smmu: no pci-server slot");
            finish(false)
        };
        let (edu, sid, bar0) = match find_edu(&pci) {
            Ok(e) => e,
            Err(why) => {
                log!("test-smmu: {}", why);
                finish(false)
            }
        };
        if sid != EDU_SID {
            log!(
                "test-smmu: edu has StreamID {:#x}, app.toml assigns {:#x}",
                sid,
                EDU_SID
            );
            finish(false)
        }
        let mut x = Ctx {
            api: IommuClient::new(server),
            prq: sys_lookup_slot("prq-server").map(PrqClient::new),
            edu,
            pci,
            bar0,
            mem: Mem {
                va: region.va,
                pa: region.pa as u64,
            },
            mem_size: region.size as u64,
            vm2,
            s2: None,
            s1: None,
            nested_a: None,
        };
        let cases: [Case; 33] = [
            ("smmu_probe_idr", probe_idr),
            (
                "smmu_cmdq_illegal_command_recovered",
                cmdq_illegal_recovered,
            ),
            (
                "smmu_failclosed_unattached_aborts",
                failclosed_unattached_aborts,
            ),
            ("smmu_stage2_dma", stage2_dma),
            (
                "smmu_stage2_msi_window_reserved",
                stage2_msi_window_reserved,
            ),
            (
                "smmu_failclosed_foreign_requests_refused",
                failclosed_foreign_refused,
            ),
            (
                "smmu_failclosed_map_foreign_memory_refused",
                failclosed_foreign_memory,
            ),
            ("smmu_fault_s2_unmapped", fault_s2_unmapped),
            ("prq_event_to_owner_only", prq_event_to_owner_only),
            (
                "prq_event_queue_overflow_lost_counted",
                prq_event_queue_overflow_lost_counted,
            ),
            ("smmu_fault_s2_permission", fault_s2_permission),
            ("smmu_invalidate_unmap_then_fault", invalidate_unmap_faults),
            (
                "smmu_invalidate_range_unmap_then_fault",
                invalidate_range_unmap_faults,
            ),
            (
                "smmu_invalidate_deferred_stale_until_flush",
                invalidate_deferred_stale,
            ),
            ("smmu_failclosed_detach_aborts", failclosed_detach_aborts),
            ("smmu_stage1_dma", stage1_dma),
            ("smmu_fault_s1_unmapped", fault_s1_unmapped),
            ("smmu_replace_s1_hitless", replace_s1_hitless),
            ("smmu_domain_busy_until_detached", domain_busy),
            ("smmu_replace_s2_break_before_make", replace_s2),
            ("smmu_nested_bind_dma", nested_bind_dma),
            ("smmu_nested_bind_users_count", nested_bind_users),
            ("smmu_nested_pasid_unsupported", nested_pasid_unsupported),
            (
                "smmu_fault_nested_stage2_on_table_walk",
                fault_nested_table_walk,
            ),
            ("smmu_nested_guest_cd_dma", nested_guest_cd_dma),
            ("smmu_invalidate_guest_batch", invalidate_guest_batch),
            ("smmu_replace_nested_hitless", replace_nested_hitless),
            // Device assignment (docs/devices.md); the last two kill vm2.
            ("pci_own_config_filtered", pci_own_config_filtered),
            ("pci_foreign_config_refused", pci_foreign_config_refused),
            (
                "pci_foreign_bus_master_refused_dma_continues",
                pci_foreign_bus_master_refused_dma_continues,
            ),
            ("pci_second_edu_stream_0x18", pci_second_edu_stream_0x18),
            ("pci_foreign_bar_faults", pci_foreign_bar_faults),
            (
                "pci_dead_owner_bus_master_off",
                pci_dead_owner_bus_master_off,
            ),
        ];
        let mut ok = true;
        for (name, f) in cases {
            ok &= case(name, || f(&mut x));
            // A failed case may leave events behind: do not blame the next.
            let mut ev = [Event::zeroed(); 16];
            let _ = events(&x, &mut ev);
        }
        finish(ok)
    }
}

userlib::task_main!(cases::run);
