//! The guest agent: a task standing for one VM's vCPUs (app.toml: a guest
//! task of a frontend's `vm = { guest = … }`, crate `guest-agent`). It does
//! what a guest's SMMUv3 driver does, through its virtual SMMU only (the
//! generated `VmmFrontendClient`): reads the caps and its RAM window,
//! allocates PASIDs, writes its own CD table and stage-1 tables in its own
//! RAM (by guest address, with `lib/smmuv3`'s encoders), configures its
//! stream nested, binds, invalidates after every change (the vIOMMU
//! reports caching mode: non-present → present included), has its own edu
//! DMA through those tables, and fetches its events.
//!
//! Two guests tell one story (issue 9, "The demo becomes the story"); the
//! first VM in app.toml (`VMS[0]`, "A") directs it, the second ("B")
//! follows A's posts:
//! 1. A: caps, RAM, PASIDs; nested translation with its own CD and tables;
//!    edu DMAs through them;
//! 2. A changes a PTE: without invalidation the stale translation is used,
//!    after it DMA follows the new mapping (a batch with a refused second
//!    command applied its first);
//! 3. A's DMA to an unmapped address: an event reaches A with A's virtual
//!    StreamID; the invalidation validation table, row by row;
//! 4. B (after A's go): sees none of A's events; A's stream, a PASID that
//!    is not B's and a command naming A's stream are refused; B dies;
//! 5. B restarted: A is untouched (DMA still lands, no new events); B's VM
//!    works again.
//!
//! Each step is a `TEST vmm_<step> ok|FAIL` line; A shuts the machine down,
//! status 0 when every step of both guests behaved.
//!
//! QEMU 10.0's SMMUv3 has no substreams (SSIDSIZE 0), no PRI, no stall and
//! no ATS: the vIOMMU offers no PASIDs there (allocation is refused), so
//! the nested context is the guest's own CD table (one CD, `set_ste
//! Nested { cd_table_ipa }`; `bind`, for host-held CDs per guest PASID, is
//! then refused), faults arrive as events, and ATC_INV is refused.
//! A guest names its device by the virtual StreamID its firmware table
//! (the image's `VSIDS`) gives it; it never sends a physical one except to
//! show that the other VM's is refused.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod story {
    use edu::Edu;
    use guest_agent::layout::*;
    use guest_agent::{allowed_batch, cd_config, context, pattern, Ram, REFUSED};
    use idl_runtime::{Fixed, WireOf};
    use iommu_server_api::InvalidateStatus;
    use pci_server_api::{Bdf, PciClient};
    use smmuv3::pgtable::{Prot, Table, TableMemory};
    use smmuv3::{Command, Event, EventId};
    use userlib::*;
    use vmm_frontend_api::{
        GuestCmd, GuestEvent, GuestInvalidateOutcome, GuestPasid, GuestSteMode, InvalidateRefusal,
        VirtStreamId, VmmFrontendClient, VmmFrontendError,
    };

    #[allow(dead_code)] // generated: the agent reads VMS, VSIDS, STREAMS, TASK_NAMES
    mod app {
        include!(concat!(env!("OUT_DIR"), "/app_config.rs"));
    }

    const TIMER_BIT: u32 = 1 << 31;
    // Posts between the two guests (app.toml `posts`): the story's order.
    /// B → A: B (re)started and waits for A's word.
    const B_UP: u32 = 1 << 24;
    /// A → B: A's fault is in; try A's objects, then die.
    const GO_ISOLATION: u32 = 1 << 25;
    /// A → B: you were restarted; show your VM works again.
    const GO_RESTARTED: u32 = 1 << 26;
    /// B → A: B finished a round (isolation: before dying); with it, bit
    /// `B_CASE_SHIFT + i` for each of B's cases `i` that passed. B does not
    /// print `TEST` lines itself: it dies on purpose, and the test runner
    /// stops an image whose reporting task faults. A reports them.
    const B_DONE: u32 = 1 << 27;
    const B_CASE_SHIFT: u32 = 16;
    const B_CASES: [&str; 6] = [
        "vmm_b_s2only_dma",
        "vmm_b_sees_none_of_a_events",
        "vmm_b_refused_a_stream",
        "vmm_b_refused_foreign_pasid",
        "vmm_b_refused_command_naming_a_stream",
        "vmm_b_vm_works_after_restart",
    ];
    const B_CASE_MASK: u32 = ((1 << B_CASES.len()) - 1) << B_CASE_SHIFT;
    /// Milliseconds a guest waits for the other before failing.
    const PEER_WAIT_MS: u64 = 20_000;

    type Outcome = Result<(), &'static str>;

    fn case(name: &str, f: impl FnOnce() -> Outcome) -> bool {
        match f() {
            Ok(()) => {
                log!("TEST {} ok", name);
                true
            }
            Err(why) => {
                log!("TEST {} FAIL {}", name, why);
                false
            }
        }
    }

    fn ensure(c: bool, why: &'static str) -> Outcome {
        if c {
            Ok(())
        } else {
            Err(why)
        }
    }

    fn err(e: VmmFrontendError) -> &'static str {
        e.name()
    }

    /// edu finishes 100 ms of virtual time after the start.
    fn wait() -> bool {
        sleep_for(20, TIMER_BIT);
        true
    }

    /// Waits up to `ms` for any of `mask`; the bits that came (0: none).
    fn wait_for(mask: u32, ms: u64) -> u32 {
        let deadline = sys_get_timer() + ms;
        sys_set_timer(Some(deadline), TIMER_BIT);
        loop {
            let got = sys_recv_notification(mask | TIMER_BIT);
            if got & mask != 0 {
                sys_set_timer(None, TIMER_BIT);
                return got & mask;
            }
            if sys_get_timer() >= deadline {
                return 0;
            }
        }
    }

    /// The VM this guest is: its index in `VMS` and its frontend (the one
    /// frontend in its task-slots).
    fn whoami() -> Option<(usize, VmmFrontendClient)> {
        app::VMS.iter().enumerate().find_map(|(i, v)| {
            let name = app::TASK_NAMES.get(v.0 as usize)?;
            sys_lookup_slot(name).map(|id| (i, VmmFrontendClient::new(id)))
        })
    }

    /// The guest's name for physical stream `psid` (its firmware table).
    fn vsid_of(psid: u32) -> u32 {
        app::VSIDS
            .iter()
            .find(|(p, _)| *p == psid)
            .map_or(psid, |(_, v)| *v)
    }

    /// A physical stream of the other VM (for the refusal cases), if any.
    fn other_vm_stream(me: usize) -> Option<u32> {
        let other = app::VMS.iter().enumerate().find(|(i, _)| *i != me)?.1 .0;
        app::STREAMS
            .iter()
            .find(|(_, vm)| *vm == other)
            .map(|(s, _)| *s)
    }

    /// The other VM's guest task (posts), if any.
    fn peer(me: usize) -> Option<TaskId> {
        let (_, v) = app::VMS.iter().enumerate().find(|(i, _)| *i != me)?;
        sys_lookup_slot(app::TASK_NAMES.get(v.1 as usize)?)
    }

    /// This guest's edu: the function app.toml's `[[devices]]` assigns to
    /// this guest (its frontend owns the stream). pci-server placed its
    /// BAR0 (mapped into this task only as `pci-bb-dd-f-bar0`) and turned
    /// memory decoding on; bus mastering is asked of pci-server.
    fn find_edu(me: usize) -> Result<Edu, &'static str> {
        let guest = app::VMS.get(me).ok_or("no VM")?.1;
        let &(bdf, _, _, _, _) = app::PCI_DEVICES
            .iter()
            .find(|d| d.1 == guest)
            .ok_or("app.toml assigns this guest no device ([[devices]])")?;
        let pci = PciClient::new(sys_lookup_slot("pci-server").ok_or("no pci-server slot")?);
        let info = pci
            .function_info(Bdf(bdf))
            .map_err(|_| "pci-server: function_info refused")?;
        pci.config_write(Bdf(bdf), 0x04, 2, 0x6)
            .map_err(|_| "pci-server: bus master on refused")?;
        let mut name = [0u8; 20];
        let name = bar0_region(bdf, &mut name);
        let bar0 = sys_region_info(name).ok_or("no BAR0 region (pci-bb-dd-f-bar0)")?;
        // SAFETY: the region is this function's BAR0, mapped into this
        // task only (app.toml [[devices]]).
        unsafe { Edu::at(bar0.va, info.stream) }.map_err(|_| "edu not usable")
    }

    /// `pci-<bb>-<dd>-<f>-bar0` of routing id `bdf`, in `buf`.
    fn bar0_region(bdf: u16, buf: &mut [u8; 20]) -> &str {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let (bus, dev, f) = (bdf >> 8, (bdf >> 3) & 0x1f, bdf & 7);
        let digits = [
            HEX[(bus >> 4) as usize & 0xf],
            HEX[bus as usize & 0xf],
            b'-',
            HEX[(dev >> 4) as usize],
            HEX[dev as usize & 0xf],
            b'-',
            b'0' + f as u8,
        ];
        buf[..4].copy_from_slice(b"pci-");
        buf[4..11].copy_from_slice(&digits);
        buf[11..16].copy_from_slice(b"-bar0");
        core::str::from_utf8(&buf[..16]).unwrap_or("")
    }

    fn cmds<const N: usize>(c: [Command; N]) -> [WireOf<GuestCmd>; N] {
        c.map(|c| GuestCmd { words: c.words() }.to_wire())
    }

    fn invalidate<const N: usize>(
        fe: &VmmFrontendClient,
        c: [Command; N],
    ) -> Result<GuestInvalidateOutcome, &'static str> {
        fe.invalidate(&cmds(c)).map_err(err)
    }

    fn complete(o: GuestInvalidateOutcome, n: u32) -> bool {
        o.status == InvalidateStatus::Complete && o.done == n
    }

    /// Fetches this VM's events (up to 8): (count, lost).
    fn events(
        fe: &VmmFrontendClient,
        out: &mut [(u32, Event); 8],
    ) -> Result<(usize, u32), &'static str> {
        let blank = GuestEvent {
            vsid: VirtStreamId(0),
            event_id: 0,
            words: [0; 4],
        };
        let mut w = [blank.to_wire(); 8];
        let f = fe.fetch_events(&mut w).map_err(err)?;
        let n = (f.count as usize).min(w.len());
        for (o, w) in out.iter_mut().zip(&w[..n]) {
            let e = GuestEvent::from_wire(w).ok_or("fetch_events: a record did not decode")?;
            *o = (e.vsid.0, Event::from_words(e.words));
        }
        Ok((n, f.lost))
    }

    /// Empties this VM's event queue; how many it held.
    fn drain(fe: &VmmFrontendClient) -> usize {
        let mut out = [(0, Event::zeroed()); 8];
        let mut total = 0;
        while let Ok((n, _)) = events(fe, &mut out) {
            total += n;
            if n == 0 {
                break;
            }
        }
        total
    }

    /// edu copies SRC (by `src`) into its buffer and its buffer to `dst`.
    fn copy(edu: &Edu, src: u64, dst: u64) -> Outcome {
        edu.dma(src, LEN, false, wait)
            .and_then(|_| edu.dma(dst, LEN, true, wait))
            .map_err(|_| "edu: DMA did not complete")
    }

    struct Guest {
        fe: VmmFrontendClient,
        edu: Edu,
        ram: Ram,
        /// The guest's name for its edu's stream.
        vsid: u32,
        /// Another VM's physical stream (refusal cases), or an unassigned one.
        foreign: u32,
        table: Option<Table>,
    }

    impl Guest {
        /// Caps and RAM: caching mode on, the RAM window is this guest's
        /// `ram` region.
        fn caps_and_ram(&mut self) -> Outcome {
            let c = self.fe.caps().map_err(err)?;
            log!(
                "vIOMMU caps: PASID bits {}, PRI {}, stall {}, caching mode {}, batch {}",
                c.pasid_bits,
                c.pri,
                c.stall,
                c.caching_mode,
                c.max_batch
            );
            ensure(c.caching_mode, "the vIOMMU does not report caching mode")?;
            let r = self.fe.ram().map_err(err)?;
            log!(
                "VM RAM: guest addresses {:#x}..{:#x}",
                r.ipa,
                r.ipa + r.size
            );
            ensure(
                r.size as usize >= self.ram.size && r.ipa % PAGE_U64 == 0,
                "the RAM window does not cover this guest's RAM",
            )?;
            self.ram.ipa = r.ipa;
            Ok(())
        }

        /// PASIDs: with substreams, allocate, refuse a double allocation,
        /// free; without (QEMU), every allocation is refused.
        fn pasids(&mut self) -> Outcome {
            let c = self.fe.caps().map_err(err)?;
            if c.pasid_bits == 0 {
                let r = self.fe.alloc_pasid(GuestPasid(1));
                log!(
                    "no substreams on this vIOMMU: alloc_pasid(1) -> {}",
                    match r {
                        Ok(()) => "ok",
                        Err(e) => e.name(),
                    }
                );
                return ensure(r.is_err(), "a PASID was allocated without substreams");
            }
            self.fe.alloc_pasid(GuestPasid(1)).map_err(err)?;
            ensure(
                self.fe.alloc_pasid(GuestPasid(1)) == Err(VmmFrontendError::AlreadyExists),
                "a second alloc_pasid(1) was not AlreadyExists",
            )?;
            self.fe.free_pasid(GuestPasid(1)).map_err(err)
        }

        /// Own CD table and stage-1 tables (SRC read-only at GVA_SRC, T1 at
        /// GVA_DST), nested STE over its CD table, CFGI_CD + TLBI, DMA
        /// through them.
        fn nested_dma(&mut self) -> Outcome {
            for p in 0..PAGES {
                self.ram.zero(p);
            }
            for i in 0..LEN {
                self.ram.w8(SRC, i, pattern(i));
            }
            let root = self.ram.alloc_table().ok_or("no page for the root table")?;
            let t = Table::s1(root, T0SZ).ok_or("T0SZ")?;
            let (src, t1) = (self.ram.ipa_of(SRC), self.ram.ipa_of(T1));
            t.map(&mut self.ram, GVA_SRC, src, Prot::RO)
                .map_err(|_| "stage-1 map of GVA_SRC")?;
            t.map(&mut self.ram, GVA_DST, t1, Prot::RW)
                .map_err(|_| "stage-1 map of GVA_DST")?;
            self.table = Some(t);
            self.ram.write_cd(CD_PAGE, &context(root, ASID).cd());
            self.ram.publish();
            let vsid = VirtStreamId(self.vsid);
            // The guest's own CD table (one CD): the SMMU fetches the CD
            // the guest wrote, by IPA, through the VM's stage 2.
            self.fe
                .set_ste(
                    vsid,
                    GuestSteMode::Nested {
                        fault_capable: true,
                        cd_max_bits: 0,
                        cd_table_ipa: self.ram.ipa_of(CD_PAGE),
                    },
                )
                .map_err(err)?;
            // Contexts are the guest's own here: bind is for host-held CDs.
            let cd = cd_config(&self.ram.read_cd(CD_PAGE)).ok_or("own CD unreadable")?;
            let r = self.fe.bind(vsid, GuestPasid(0), cd, true);
            log!(
                "own CD table at guest address {:#x}; bind on it: {}",
                self.ram.ipa_of(CD_PAGE),
                r.err().map_or("accepted", |e| e.name())
            );
            ensure(
                r == Err(VmmFrontendError::Invalid),
                "bind on a stream with the guest's own CD table was not Invalid",
            )?;
            // Caching mode: the new CD and the new (non-present → present)
            // entries are invalidated before the device uses them.
            let o = invalidate(
                &self.fe,
                [
                    Command::cfgi_cd(self.vsid, 0, true),
                    Command::tlbi_nh_asid(0, ASID),
                ],
            )?;
            ensure(complete(o, 2), "CFGI_CD + TLBI_NH_ASID not complete")?;
            copy(&self.edu, GVA_SRC, GVA_DST)?;
            ensure(
                self.ram.holds_pattern(T1, LEN),
                "DMA through the guest's stage 1 did not land in T1",
            )?;
            log!(
                "edu copied GVA {:#x} to GVA {:#x}: landed at guest address {:#x} (its own CD and stage-1 tables, nested over the VM's stage 2)",
                GVA_SRC,
                GVA_DST,
                self.ram.ipa_of(T1)
            );
            Ok(())
        }

        /// Repoints GVA_DST at T2 without invalidating: the device still
        /// uses the cached translation (T1).
        fn stale(&mut self) -> Outcome {
            let t = self
                .table
                .ok_or("no stage-1 table (an earlier step failed)")?;
            self.ram.zero(T1);
            self.ram.zero(T2);
            let t2 = self.ram.ipa_of(T2);
            t.set(&mut self.ram, GVA_DST, t2, Prot::RW)
                .map_err(|_| "stage-1 edit")?;
            self.ram.publish();
            edu_write(&self.edu, GVA_DST)?;
            log!(
                "PTE changed, no invalidation: DMA landed in {}",
                if self.ram.holds_pattern(T1, LEN) {
                    "T1 (the stale translation)"
                } else if self.ram.holds_pattern(T2, LEN) {
                    "T2"
                } else {
                    "nowhere"
                }
            );
            ensure(
                self.ram.holds_pattern(T1, LEN) && self.ram.untouched(T2, LEN),
                "without invalidation the old translation was not used",
            )
        }

        /// TLBI_NH_VA, then a refused command, then one more: 1 done,
        /// Rejected; the first applied (DMA follows the new PTE).
        fn invalidate_follows(&mut self, partial: &mut bool) -> Outcome {
            self.ram.zero(T1);
            self.ram.zero(T2);
            let o = invalidate(
                &self.fe,
                [
                    Command::tlbi_nh_va(0, ASID, GVA_DST, true),
                    Command::cfgi_ste(self.vsid, true),
                    Command::tlbi_nh_all(0),
                ],
            )?;
            log!(
                "batch [TLBI_NH_VA, CFGI_STE, TLBI_NH_ALL]: {} done, {:?}, refused as {:?}",
                o.done,
                o.status,
                o.refusal
            );
            *partial = o.done == 1
                && o.status == InvalidateStatus::Rejected
                && o.refusal == InvalidateRefusal::Opcode;
            edu_write(&self.edu, GVA_DST)?;
            ensure(
                self.ram.holds_pattern(T2, LEN) && self.ram.untouched(T1, LEN),
                "after TLBI_NH_VA the DMA did not follow the new PTE to T2",
            )?;
            log!("after TLBI_NH_VA: DMA landed in T2 (the new PTE)");
            Ok(())
        }

        /// A 4-byte DMA to an unmapped address: an F_TRANSLATION event
        /// with this VM's virtual StreamID, its input address, stage 1.
        fn fault_event(&mut self) -> Outcome {
            drain(&self.fe);
            let _ = self.edu.dma(GVA_UNMAPPED, 4, true, wait);
            let mut out = [(0, Event::zeroed()); 8];
            for _ in 0..20 {
                let (n, lost) = events(&self.fe, &mut out)?;
                if n == 0 {
                    sleep_for(10, TIMER_BIT);
                    continue;
                }
                let (vsid, e) = out[0];
                log!(
                    "event: vSID {:#x}, {:?}, input {:#x}, StreamID field {:#x}, lost {}",
                    vsid,
                    e.event_id(),
                    e.input_addr(),
                    e.sid(),
                    lost
                );
                ensure(vsid == self.vsid, "the event names another stream")?;
                ensure(
                    e.sid() == self.vsid,
                    "the record's StreamID is not the virtual one",
                )?;
                ensure(
                    e.event_id() == Ok(EventId::FTranslation),
                    "not F_TRANSLATION",
                )?;
                ensure(e.input_addr() == GVA_UNMAPPED, "wrong input address")?;
                return ensure(!e.s2(), "reported at stage 2");
            }
            Err("no event reached the guest")
        }

        /// Each refused kind after an allowed command: 1 done, Rejected.
        fn validation_table(&mut self) -> bool {
            let mut ok = true;
            for row in REFUSED {
                let cmd = (row.cmd)(self.vsid, self.foreign);
                ok &= case(row.case, || {
                    let o = invalidate(&self.fe, [Command::tlbi_nh_asid(0, ASID), cmd])?;
                    log!(
                        "{}: {} done, {:?}, refused as {:?}",
                        row.why,
                        o.done,
                        o.status,
                        o.refusal
                    );
                    ensure(
                        o.done == 1 && o.status == InvalidateStatus::Rejected,
                        "not stopped at the refused command",
                    )?;
                    ensure(o.refusal == row.expect, "refused, but for another reason")
                });
            }
            ok &= case("vmm_inv_accepts_guest_kinds", || {
                let o = invalidate(&self.fe, allowed_batch(self.vsid, ASID, GVA_DST))?;
                ensure(complete(o, 6), "an allowed kind was refused")
            });
            ok
        }

        /// DMA still lands where this guest's tables say, and no event.
        fn untouched(&mut self) -> Outcome {
            self.ram.zero(T2);
            edu_write(&self.edu, GVA_DST)?;
            ensure(self.ram.holds_pattern(T2, LEN), "A's DMA no longer lands")?;
            let mut out = [(0, Event::zeroed()); 8];
            let (n, lost) = events(&self.fe, &mut out)?;
            ensure(n == 0 && lost == 0, "A got events after B's death")?;
            log!("B died and was restarted: A's DMA still lands in T2, no event reached A");
            Ok(())
        }
    }

    const PAGE_U64: u64 = guest_agent::PAGE as u64;

    /// edu writes its buffer (still the pattern) to `dst`.
    fn edu_write(edu: &Edu, dst: u64) -> Outcome {
        edu.dma(dst, LEN, true, wait)
            .map_err(|_| "edu: DMA did not complete")
    }

    fn setup() -> Result<(usize, Guest), &'static str> {
        let (me, fe) = whoami().ok_or("this task is no VM's guest (app.toml vm tables)")?;
        let r = sys_region_info("ram").ok_or("no `ram` region")?;
        if r.size < PAGES * guest_agent::PAGE {
            return Err("`ram` is smaller than the guest's layout");
        }
        let edu = find_edu(me)?;
        let vsid = vsid_of(edu.sid);
        let foreign = other_vm_stream(me).unwrap_or(0xfff8);
        // SAFETY: `ram` is this task's own region, used only through `Ram`.
        let mut ram = unsafe { Ram::new(r.va, 0, r.size) };
        ram.coherent = app::SMMU_COHERENT;
        log!("guest of VM {}: edu is virtual stream {:#x}", me, vsid);
        Ok((
            me,
            Guest {
                fe,
                edu,
                ram,
                vsid,
                foreign,
                table: None,
            },
        ))
    }

    /// VM A: the story's director.
    fn director(mut g: Guest, me: usize) -> ! {
        let mut ok = true;
        ok &= case("vmm_caps_and_ram", || g.caps_and_ram());
        ok &= case("vmm_pasids", || g.pasids());
        ok &= case("vmm_nested_dma_through_guest_tables", || g.nested_dma());
        ok &= case("vmm_stale_translation_without_invalidation", || g.stale());
        let mut partial = false;
        ok &= case("vmm_invalidate_follows_pte", || {
            g.invalidate_follows(&mut partial)
        });
        ok &= case("vmm_inv_batch_stops_at_first_refused", || {
            ensure(partial, "the batch did not report 1 done, Rejected")
        });
        ok &= case("vmm_fault_event_in_guest_names", || g.fault_event());
        ok &= g.validation_table();
        if let Some(b) = peer(me) {
            // B's cases, reported here from B's result bits.
            let report = |got: u32, cases: core::ops::Range<usize>| {
                let mut all = got & B_DONE != 0;
                for i in cases {
                    let passed = got & (1 << (B_CASE_SHIFT + i as u32)) != 0;
                    all &= case(B_CASES[i], || {
                        ensure(passed, "failed in guest B (its log says why)")
                    });
                }
                all
            };
            ok &= case("vmm_b_isolation", || {
                ensure(wait_for(B_UP, PEER_WAIT_MS) != 0, "B never came up")?;
                sys_post(b, GO_ISOLATION);
                // The case bits come with B_DONE (one post).
                let got = wait_for(B_DONE | B_CASE_MASK, PEER_WAIT_MS);
                ensure(
                    report(got, 0..5),
                    "B's isolation cases failed or B never answered",
                )
            });
            ok &= case("vmm_restart_of_b_leaves_a_untouched", || {
                ensure(wait_for(B_UP, PEER_WAIT_MS) != 0, "B was not restarted")?;
                g.untouched()
            });
            ok &= case("vmm_b_restarted", || {
                // The post goes to B's new incarnation.
                let b = sys_refresh_task_id(b);
                sys_post(b, GO_RESTARTED);
                let got = wait_for(B_DONE | B_CASE_MASK, PEER_WAIT_MS);
                ensure(report(got, 5..6), "B's VM did not work after its restart")
            });
        }
        log!(
            "vmm story {}",
            if ok {
                "finished: every step behaved"
            } else {
                "FAILED"
            }
        );
        log!(
            "TEST vmm_story {}",
            if ok { "ok" } else { "FAIL a step misbehaved" }
        );
        sys_shutdown(if ok { 0 } else { 1 })
    }

    /// VM B: follows A's word.
    fn follower(mut g: Guest, me: usize) -> ! {
        let Some(a) = peer(me) else {
            log!("guest: no other VM to follow");
            sys_shutdown(1)
        };
        sys_post(a, B_UP);
        let go = wait_for(GO_ISOLATION | GO_RESTARTED, PEER_WAIT_MS * 3);
        let mut passed = 0u32;
        let mut step = |i: usize, f: &mut dyn FnMut() -> Outcome| match f() {
            Ok(()) => {
                log!("guest B: {} ok", B_CASES[i]);
                passed |= 1 << (B_CASE_SHIFT + i as u32);
            }
            Err(why) => log!("guest B: {} FAILED: {}", B_CASES[i], why),
        };
        if go & GO_ISOLATION != 0 {
            step(0, &mut || g.s2only_dma());
            step(1, &mut || {
                let mut out = [(0, Event::zeroed()); 8];
                let (n, lost) = events(&g.fe, &mut out)?;
                ensure(n == 0 && lost == 0, "B fetched events (A's?)")
            });
            step(2, &mut || {
                let r = g.fe.set_ste(VirtStreamId(g.foreign), GuestSteMode::S2Only);
                log!(
                    "B names A's stream {:#x}: {}",
                    g.foreign,
                    r.err().map_or("accepted", |e| e.name())
                );
                ensure(
                    matches!(
                        r,
                        Err(VmmFrontendError::NotFound | VmmFrontendError::NotPermitted)
                    ),
                    "B configured A's stream",
                )
            });
            step(3, &mut || {
                // Host-held contexts on B's stream, then a guest PASID B
                // never allocated (guest PASIDs are per VM: A's are A's).
                g.fe.set_ste(
                    VirtStreamId(g.vsid),
                    GuestSteMode::Nested {
                        fault_capable: true,
                        cd_max_bits: 0,
                        cd_table_ipa: 0,
                    },
                )
                .map_err(err)?;
                let cd = cd_config(&context(g.ram.ipa_of(1), ASID).cd()).ok_or("cd")?;
                let r = g.fe.bind(VirtStreamId(g.vsid), GuestPasid(1), cd, true);
                log!(
                    "B binds guest PASID 1 it never allocated: {}",
                    r.err().map_or("accepted", |e| e.name())
                );
                ensure(
                    r == Err(VmmFrontendError::NotFound),
                    "binding a PASID B does not hold was not NotFound",
                )
            });
            step(4, &mut || {
                let o = invalidate(&g.fe, [Command::cfgi_cd_all(g.foreign)])?;
                log!(
                    "B: CFGI_CD_ALL of A's stream {:#x}: {} done, refused as {:?}",
                    g.foreign,
                    o.done,
                    o.refusal
                );
                ensure(
                    o.done == 0
                        && o.status == InvalidateStatus::Rejected
                        && o.refusal == InvalidateRefusal::Stream,
                    "CFGI_CD_ALL of A's stream was issued",
                )
            });
            sys_post(a, B_DONE | passed);
            log!("guest B dies now (the supervisor restarts it)");
            sys_panic(b"guest B: deliberate death");
        }
        if go & GO_RESTARTED != 0 {
            step(5, &mut || g.s2only_dma());
            sys_post(a, B_DONE | passed);
        } else {
            log!("guest B: A never said what to do");
        }
        loop {
            sys_recv_notification(0);
        }
    }

    impl Guest {
        /// Stage 2 only: the device's addresses are guest addresses.
        fn s2only_dma(&mut self) -> Outcome {
            for p in 0..PAGES {
                self.ram.zero(p);
            }
            for i in 0..LEN {
                self.ram.w8(SRC, i, pattern(i));
            }
            self.ram.publish();
            self.fe
                .set_ste(VirtStreamId(self.vsid), GuestSteMode::S2Only)
                .map_err(err)?;
            copy(&self.edu, self.ram.ipa_of(SRC), self.ram.ipa_of(T3))?;
            ensure(
                self.ram.holds_pattern(T3, LEN),
                "S2-only DMA by guest address did not land",
            )
        }
    }

    pub fn run() -> ! {
        let (me, mut g) = match setup() {
            Ok(x) => x,
            Err(why) => {
                log!("TEST vmm_guest_setup FAIL {}", why);
                sys_shutdown(1)
            }
        };
        // The RAM window (guest addresses) before anything is addressed.
        if let Ok(r) = g.fe.ram() {
            g.ram.ipa = r.ipa;
        }
        if me == 0 {
            director(g, me)
        } else {
            follower(g, me)
        }
    }
}

userlib::task_main!(story::run);
