//! A second VM for the smmu_* cases. It owns stream 0x08 (app.toml) and,
//! when the runner asks, tries to use the runner's stream and domains; the
//! iommu-server must refuse every such request and change nothing. It talks
//! to the iommu-server only through the generated `IommuClient`.
//!
//! The runner's requests carry no payload and the answer is the reply
//! code, so nothing here encodes a message: the runner does not even tell
//! it which domains are the runner's — it finds them by trying handles.
#![cfg_attr(target_os = "none", no_std, no_main)]

/// Operations the runner sends (empty messages, empty replies).
pub mod ops {
    /// Reply code 0: every check passed; else the number of the first
    /// check that failed (logged).
    pub const PROBE: u16 = 1;
    /// Reply code: how many event records the server hands this VM.
    pub const FETCH_EVENTS: u16 = 2;
    /// Reply code 0: every config request on the runner's edu (00:02.0)
    /// and on the unassigned NIC was NotPermitted; else the number of the
    /// first that was not.
    pub const PCI_FOREIGN: u16 = 3;
    /// Turns its own edu's (00:03.0) bus mastering on, then reads where
    /// the runner's BAR0 would be if it mapped the whole BAR window: it
    /// faults (no reply).
    pub const TOUCH_FOREIGN_BAR: u16 = 4;
    /// Reply code 0x1_0000 | its edu's command register (read through
    /// pci-server), or 0 when the read was refused.
    pub const PCI_STATUS: u16 = 5;
    /// Reply code 0: its own edu (00:03.0), bus mastering on through
    /// pci-server, copied 64 bytes inside `vm2-dma` through an S2 domain
    /// attached to StreamID 0x18 only — the second edu's requester id is
    /// that StreamID; else the number of the step that failed.
    pub const OWN_EDU_DMA: u16 = 6;
}

#[cfg(target_os = "none")]
mod image {
    use idl_runtime::Fixed;
    use iommu_server_api::{
        CdConfig, CdTableFormat, DomainId, IommuClient, IommuError, MapPerms, NestedSte, SmmuCmd,
        SmmuEvent, StreamId, SubstreamDefault,
    };
    use pasid_alloc_api::{Pasid, PasidGen, PasidHandle};
    use pci_server_api::{Bdf, PciClient, PciError};
    use smmuv3::{tcr, AddrSize, Command};
    use userlib::*;

    const RUNNER_SID: StreamId = StreamId(0x10);
    const OWN_SID: StreamId = StreamId(0x08);
    /// The runner's mapped IOVA (its T_IOVA).
    const RUNNER_IOVA: u64 = 0x20_0000;
    const PAGE: u64 = 4096;
    const RW: MapPerms = MapPerms::READ.union(MapPerms::WRITE);
    /// Handles tried: slots 0..32 of generations 1..=4 (DomainId = slot |
    /// generation << 8; the runner's domains are young).
    const SLOTS: u32 = 32;
    const GENERATIONS: u32 = 4;

    /// Check `n` failed unless `ok`.
    fn check(n: u32, ok: bool, what: &str) -> Result<(), u32> {
        if ok {
            Ok(())
        } else {
            log!("check {} failed: {}", n, what);
            Err(n)
        }
    }

    fn refused<T>(r: Result<T, IommuError>) -> bool {
        matches!(r, Err(IommuError::NotPermitted))
    }

    /// Creates its own domain with its own stream attached, runs the
    /// checks, then takes its objects down again (whatever the checks
    /// said: the runner counts what is left at the end).
    fn probe(c: &IommuClient) -> Result<(), u32> {
        let own = sys_region_info("vm2-dma").ok_or(1u32)?;
        let mine = c.create_s2_domain(false).map_err(|_| 2u32)?;
        let r = c
            .attach(OWN_SID, mine)
            .map_err(|_| 16u32)
            .and_then(|_| checks(c, mine, own.pa as u64));
        let down = check(
            17,
            c.detach(OWN_SID).is_ok(),
            "could not detach its own stream",
        )
        .and(check(
            18,
            c.destroy_domain(mine).is_ok(),
            "could not destroy its own domain",
        ));
        r.and(down)
    }

    fn checks(c: &IommuClient, mine: DomainId, own_pa: u64) -> Result<(), u32> {
        check(
            3,
            refused(c.attach(RUNNER_SID, mine)),
            "attached the runner's stream",
        )?;
        // Find the runner's domains: a handle that is not this VM's is
        // NotPermitted if it exists, NotFound if not — never usable.
        let mut theirs = [DomainId(0); SLOTS as usize];
        let mut found = 0;
        // Handles carry the server's incarnation in bits 16..: take it from
        // our own domain's handle.
        let incarnation = mine.0 & 0xffff_0000;
        for gen in 1..=GENERATIONS {
            for slot in 0..SLOTS {
                let h = DomainId(incarnation | gen << 8 | slot);
                if h == mine {
                    continue;
                }
                match c.flush(h) {
                    Err(IommuError::NotPermitted) if found < theirs.len() => {
                        theirs[found] = h;
                        found += 1;
                    }
                    Err(IommuError::NotPermitted) | Err(IommuError::NotFound) => {}
                    _ => return check(4, false, "flushed another VM's domain"),
                }
            }
        }
        check(5, found > 0, "found none of the runner's domains")?;
        let cd = CdConfig {
            ttb0: 0x100_0000,
            tcr: tcr::value(25, AddrSize::Bits40.raw() as u8),
            mair: 0xff,
            asid: 9,
        };
        let vste = NestedSte {
            cd_table_ipa: 0x100_0000,
            s1cdmax: 0,
            s1fmt: CdTableFormat::Linear,
            s1dss: SubstreamDefault::Terminate,
        };
        let inv = [SmmuCmd {
            words: Command::tlbi_nh_all(0).words(),
        }
        .to_wire()];
        for &h in &theirs[..found] {
            check(
                6,
                refused(c.map(h, 0x70_0000, own_pa, PAGE, RW)),
                "mapped into another VM's domain",
            )?;
            check(
                7,
                refused(c.unmap(h, RUNNER_IOVA, PAGE)),
                "unmapped from another VM's domain",
            )?;
            check(
                8,
                refused(c.unmap_deferred(h, RUNNER_IOVA, PAGE)),
                "deferred unmap in another VM's domain",
            )?;
            check(
                9,
                refused(c.destroy_domain(h)),
                "destroyed another VM's domain",
            )?;
            check(
                10,
                refused(c.invalidate(h, &inv)),
                "invalidated under another VM's VMID",
            )?;
            check(
                11,
                refused(c.replace(OWN_SID, h)),
                "attached its stream to another VM's domain",
            )?;
            check(
                12,
                refused(c.create_nested_domain(h, vste, false)),
                "nested over another VM's domain",
            )?;
        }
        let pasid0 = PasidHandle {
            pasid: Pasid(0),
            generation: PasidGen(0),
        };
        check(
            13,
            refused(c.bind(RUNNER_SID, pasid0, cd, true)),
            "bound a context on the runner's stream",
        )?;
        check(
            14,
            refused(c.set_vsid(RUNNER_SID, 0x99)),
            "set a vSID on the runner's stream",
        )?;
        check(
            15,
            refused(c.detach(RUNNER_SID)),
            "detached the runner's stream",
        )?;
        // Its own memory is its to map.
        check(
            19,
            c.map(mine, 0x70_0000, own_pa, PAGE, RW).is_ok(),
            "could not map its own memory",
        )
    }

    const RUNNER_EDU: Bdf = Bdf(0x10);
    const OWN_EDU: Bdf = Bdf(0x18);
    const NIC: Bdf = Bdf(0x08);
    /// Where pci-server placed the runner's BAR0: the first BAR of the
    /// table, at the start of the board's BAR window.
    const RUNNER_BAR0_PA: usize = 0x1000_0000;

    /// The second edu's stream: its requester id 00:03.0.
    const OWN_EDU_SID: StreamId = StreamId(0x18);

    fn own_edu_dma(c: &IommuClient, p: &PciClient) -> Result<(), u32> {
        let mem = sys_region_info("vm2-dma").ok_or(1u32)?;
        let bar = sys_region_info("pci-00-03-0-bar0").ok_or(2u32)?;
        p.config_write(OWN_EDU, 0x04, 2, 0x6).map_err(|_| 3u32)?;
        // SAFETY: region pci-00-03-0-bar0 is this VM's edu's BAR0, mapped
        // into this task only.
        let edu = unsafe { edu::Edu::at(bar.va, OWN_EDU_SID.0) }.map_err(|_| 4u32)?;
        let d = c.create_s2_domain(false).map_err(|_| 5u32)?;
        let iova = 0x10_0000u64;
        let r = (|| {
            c.map(d, iova, mem.pa as u64, PAGE, RW).map_err(|_| 6u32)?;
            c.attach(OWN_EDU_SID, d).map_err(|_| 7u32)?;
            let at = |i: usize| (mem.va + i) as *mut u8;
            for i in 0..64 {
                // SAFETY: `vm2-dma` is this task's one-page DMA region;
                // volatile because edu reads and writes it.
                unsafe {
                    core::ptr::write_volatile(at(i), (i as u8) ^ 0xa5);
                    core::ptr::write_volatile(at(0x800 + i), 0);
                }
            }
            let wait = || {
                sleep_for(20, 1 << 31);
                true
            };
            edu.dma(iova, 64, false, wait).map_err(|_| 8u32)?;
            edu.dma(iova + 0x800, 64, true, wait).map_err(|_| 9u32)?;
            // SAFETY: as above.
            let landed = (0..64)
                .all(|i| unsafe { core::ptr::read_volatile(at(0x800 + i)) } == (i as u8) ^ 0xa5);
            check(
                20,
                landed,
                "own edu's DMA through StreamID 0x18 did not land",
            )
        })();
        let _ = c.detach(OWN_EDU_SID);
        let _ = c.destroy_domain(d);
        let _ = p.config_write(OWN_EDU, 0x04, 2, 0x2);
        r
    }

    fn pci_foreign(p: &PciClient) -> u32 {
        let no = |r: Result<(), PciError>| r == Err(PciError::NotPermitted);
        let tries = [
            no(p.config_read(RUNNER_EDU, 0, 4).map(|_| ())),
            no(p.config_read(RUNNER_EDU, 0x04, 2).map(|_| ())),
            // Bus master off; decoding off; a BAR0 move.
            no(p.config_write(RUNNER_EDU, 0x04, 2, 0x2)),
            no(p.config_write(RUNNER_EDU, 0x04, 2, 0x0)),
            no(p.config_write(RUNNER_EDU, 0x10, 4, 0x1080_0000)),
            no(p.function_info(RUNNER_EDU).map(|_| ())),
            // The unassigned NIC.
            no(p.config_read(NIC, 0, 4).map(|_| ())),
            no(p.config_write(NIC, 0x04, 2, 0x6)),
        ];
        match tries.iter().position(|ok| !ok) {
            None => 0,
            Some(i) => {
                log!("pci check {} failed: not NotPermitted", i + 1);
                i as u32 + 1
            }
        }
    }

    pub fn run() -> ! {
        loop {
            let m = sys_recv_open(&mut [], 0);
            if m.is_notification() {
                continue;
            }
            let Some(server) = sys_lookup_slot("iommu-server") else {
                sys_reply_fault(m.sender, ReplyFaultReason::UndefinedOperation);
                continue;
            };
            let c = IommuClient::new(server);
            let pci = sys_lookup_slot("pci-server").map(PciClient::new);
            match m.operation as u16 {
                super::ops::PCI_FOREIGN => {
                    let code = pci.as_ref().map_or(100, pci_foreign);
                    sys_reply(m.sender, code, &[]);
                }
                super::ops::TOUCH_FOREIGN_BAR => {
                    let own = sys_region_info("pci-00-03-0-bar0");
                    let on = pci.as_ref().map(|p| p.config_write(OWN_EDU, 0x04, 2, 0x6));
                    let (Some(own), Some(Ok(()))) = (own, on) else {
                        sys_reply(m.sender, 1, &[]);
                        continue;
                    };
                    let at = own.va.wrapping_sub(own.pa - RUNNER_BAR0_PA);
                    log!("touching {:#x}, where the runner's BAR0 would be", at);
                    // SAFETY: the read is meant to fault: nothing is mapped
                    // at `at` in this task (its only BAR region is its own
                    // edu's), so the MMU stops it before any value exists
                    // and the kernel ends this incarnation; no Rust object
                    // lives there.
                    let v = unsafe { core::ptr::read_volatile(at as *const u32) };
                    sys_reply(m.sender, 2 + (v & 0), &[]);
                }
                super::ops::OWN_EDU_DMA => {
                    let code = pci
                        .as_ref()
                        .map_or(Err(100), |p| own_edu_dma(&c, p))
                        .err()
                        .unwrap_or(0);
                    sys_reply(m.sender, code, &[]);
                }
                super::ops::PCI_STATUS => {
                    let code = pci
                        .as_ref()
                        .and_then(|p| p.config_read(OWN_EDU, 0x04, 2).ok())
                        .map_or(0, |c| 0x1_0000 | c);
                    sys_reply(m.sender, code, &[]);
                }
                super::ops::PROBE => {
                    let code = probe(&c).err().unwrap_or(0);
                    sys_reply(m.sender, code, &[]);
                }
                super::ops::FETCH_EVENTS => {
                    // With prq-server in the image the events are its.
                    let n = match sys_lookup_slot("prq-server") {
                        Some(p) => {
                            let blank = prq_server_api::EventRecord {
                                sid: StreamId(0),
                                event_id: 0,
                                words: [0; 4],
                            };
                            let mut out = [blank.to_wire(); 4];
                            prq_server_api::PrqClient::new(p)
                                .fetch_events(&mut out)
                                .map(|f| f.count)
                                .unwrap_or(u32::MAX)
                        }
                        None => {
                            let mut out = [SmmuEvent { words: [0; 4] }.to_wire(); 4];
                            c.fetch_events(&mut out)
                                .map(|f| f.count)
                                .unwrap_or(u32::MAX)
                        }
                    };
                    sys_reply(m.sender, n, &[]);
                }
                _ => sys_reply_fault(m.sender, ReplyFaultReason::UndefinedOperation),
            }
        }
    }
}

userlib::task_main!(image::run);
