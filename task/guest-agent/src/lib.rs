//! The guest side of a VM: what a guest's SMMUv3 driver keeps in its own
//! RAM and sends to its virtual SMMU (`idl/vmm-frontend.idol.ron`), built
//! with the architecture's encoders from `lib/smmuv3` — never with the host
//! driver's library.
//!
//! - [`Ram`]: the VM's RAM as the guest sees it (a mapping in this task,
//!   guest addresses = IPAs from the vIOMMU's `ram` op), a
//!   [`smmuv3::pgtable::TableMemory`] so stage-1 tables are built in it by
//!   IPA, and a page pool for them;
//! - [`layout`]: where the guest puts its CD table, its tables, its DMA
//!   buffers, and the I/O virtual addresses its device uses;
//! - [`context`] / [`cd_config`]: the guest's stage-1 context, as the CD it
//!   writes in its own CD table and as the fields `bind` carries;
//! - [`REFUSED`] and [`allowed_batch`]: the invalidation validation table —
//!   each command kind a guest may not issue (with the refusal the vIOMMU
//!   names), and the kinds it may.
//!
//! The image's story (`main.rs`) drives the vIOMMU with these.

#![cfg_attr(not(test), no_std)]

use iommu_server_api::CdConfig;
use smmuv3::pgtable::{TableMemory, MAIR_DEFAULT};
use smmuv3::{AddrSize, Cd, Command, PriResponse, S1Context, SyncCs, Tg0};
use vmm_frontend_api::InvalidateRefusal;

/// Where things live in the guest's RAM (page indices from its start) and
/// in its device's I/O address space (stage-1 input addresses).
pub mod layout {
    /// The guest's CD table: one CD (a linear table of 2^0 entries; the
    /// vIOMMU offers no substreams on QEMU).
    pub const CD_PAGE: usize = 0;
    /// Pages for stage-1 tables: `TABLES_FIRST..TABLES_END`.
    pub const TABLES_FIRST: usize = 1;
    pub const TABLES_END: usize = 9;
    /// The pattern edu reads.
    pub const SRC: usize = 9;
    /// DMA targets.
    pub const T1: usize = 10;
    pub const T2: usize = 11;
    /// The S2-only target (device address = IPA).
    pub const T3: usize = 12;
    /// Pages the layout needs.
    pub const PAGES: usize = 13;
    /// I/O virtual addresses (stage-1 inputs; below edu's 28-bit reach).
    pub const GVA_SRC: u64 = 0x40_0000;
    pub const GVA_DST: u64 = 0x40_1000;
    /// Never mapped: a DMA there raises F_TRANSLATION at stage 1.
    pub const GVA_UNMAPPED: u64 = 0x40_2000;
    /// T0SZ of the guest's tables: 39-bit inputs, walks from level 1.
    pub const T0SZ: u8 = 25;
    /// The guest's ASID (qualified by its VM's VMID, so two VMs may both
    /// use it).
    pub const ASID: u16 = 1;
    /// Bytes edu moves per DMA.
    pub const LEN: usize = 64;

    // The table pool ends before the data pages.
    const _: () = assert!(TABLES_END <= SRC && T3 < PAGES);
}

/// 4 KiB.
pub const PAGE: usize = 4096;

/// The pattern byte `i` of a DMA.
pub fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(13).wrapping_add(0x5a)
}

/// The VM's RAM: `size` bytes at `va` in this task, at guest address
/// (IPA) `ipa`. Stage-1 tables come from the layout's table pages.
pub struct Ram {
    va: usize,
    pub ipa: u64,
    pub size: usize,
    next_table: usize,
    /// Whether the SMMU and the devices snoop the CPU's caches
    /// (app_config's `SMMU_COHERENT`). When not, every table the guest
    /// writes is cleaned before the vIOMMU is told, and every page a device
    /// wrote is cleaned and invalidated before it is read.
    pub coherent: bool,
}

impl Ram {
    /// # Safety
    /// `[va, va + size)` must be memory this task owns for the whole run,
    /// readable and writable, that nothing else in the task uses.
    pub unsafe fn new(va: usize, ipa: u64, size: usize) -> Self {
        Self {
            va,
            ipa,
            size,
            next_table: layout::TABLES_FIRST,
            coherent: true,
        }
    }

    /// The guest address of page `page`.
    pub fn ipa_of(&self, page: usize) -> u64 {
        self.ipa + (page * PAGE) as u64
    }

    fn ptr(&self, off: usize) -> *mut u8 {
        assert!(off < self.size, "inside the RAM");
        (self.va + off) as *mut u8
    }

    pub fn r8(&self, page: usize, i: usize) -> u8 {
        // SAFETY: inside the RAM (`ptr` checks), which `new`'s caller
        // vouched for; volatile: the device writes it behind the compiler.
        unsafe { core::ptr::read_volatile(self.ptr(page * PAGE + i)) }
    }

    pub fn w8(&self, page: usize, i: usize, v: u8) {
        // SAFETY: as in `r8`.
        unsafe { core::ptr::write_volatile(self.ptr(page * PAGE + i), v) }
    }

    pub fn r64(&self, off: usize) -> u64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.size);
        // SAFETY: inside the RAM, 8-byte aligned (the RAM is page-aligned).
        unsafe { core::ptr::read_volatile(self.ptr(off) as *const u64) }
    }

    pub fn w64(&self, off: usize, v: u64) {
        assert!(off.is_multiple_of(8) && off + 8 <= self.size);
        // SAFETY: as in `r64`.
        unsafe { core::ptr::write_volatile(self.ptr(off) as *mut u64, v) }
    }

    pub fn zero(&self, page: usize) {
        for o in (0..PAGE).step_by(8) {
            self.w64(page * PAGE + o, 0);
        }
    }

    /// Writes `cd` at CD table index 0 of `page`.
    pub fn write_cd(&self, page: usize, cd: &Cd) {
        for (i, w) in cd.words().iter().enumerate() {
            self.w64(page * PAGE + 8 * i, *w);
        }
    }

    /// Reads back the CD at `page` (what a vIOMMU trapping CFGI_CD reads).
    pub fn read_cd(&self, page: usize) -> Cd {
        let mut w = [0u64; 8];
        for (i, x) in w.iter_mut().enumerate() {
            *x = self.r64(page * PAGE + 8 * i);
        }
        Cd::from_words(w)
    }

    /// True if the first `len` bytes of `page` hold the pattern.
    pub fn holds_pattern(&self, page: usize, len: usize) -> bool {
        self.refresh(page);
        (0..len).all(|i| self.r8(page, i) == pattern(i))
    }

    /// True if the first `len` bytes of `page` are zero.
    pub fn untouched(&self, page: usize, len: usize) -> bool {
        self.refresh(page);
        (0..len).all(|i| self.r8(page, i) == 0)
    }

    /// Makes every write to the layout's pages visible to the SMMU and the
    /// devices before what follows (telling the vIOMMU, starting a DMA):
    /// the SMMU walks these tables from memory. Non-coherent: the pages
    /// are cleaned to the point of coherency first.
    pub fn publish(&self) {
        if !self.coherent {
            let n = (layout::PAGES * PAGE).min(self.size);
            userlib::cache::clean_range(self.va, n, userlib::cache::dcache_line());
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }

    /// Before reading what a device wrote to `page`: non-coherent, its
    /// lines are cleaned and invalidated (no stale line hides the DMA).
    fn refresh(&self, page: usize) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        if !self.coherent {
            userlib::cache::clean_invalidate_range(
                self.va + page * PAGE,
                PAGE,
                userlib::cache::dcache_line(),
            );
        }
    }

    fn offset(&self, ipa: u64) -> Option<usize> {
        let off = ipa.checked_sub(self.ipa)? as usize;
        (off.checked_add(8)? <= self.size).then_some(off)
    }
}

impl TableMemory for Ram {
    fn read(&self, addr: u64) -> Option<u64> {
        self.offset(addr).map(|o| self.r64(o))
    }
    fn write(&mut self, addr: u64, desc: u64) -> bool {
        match self.offset(addr) {
            Some(o) => {
                self.w64(o, desc);
                true
            }
            None => false,
        }
    }
    fn alloc_table(&mut self) -> Option<u64> {
        if self.next_table >= layout::TABLES_END {
            return None;
        }
        let p = self.next_table;
        self.next_table += 1;
        self.zero(p);
        Some(self.ipa_of(p))
    }
}

/// The guest's stage-1 context: 39-bit inputs, 4 KiB granule, 40-bit
/// IPAs, write-back walks, faults recorded (CD.R: events reach the guest).
pub fn context(ttb0: u64, asid: u16) -> S1Context {
    S1Context {
        ttb0,
        t0sz: layout::T0SZ,
        tg0: Tg0::Granule4K,
        ips: AddrSize::Bits40,
        mair: MAIR_DEFAULT,
        asid,
        record_faults: true,
        stall: false,
    }
}

/// What `bind` carries for the CD the guest wrote: its TTB0, TCR fields,
/// MAIR and ASID (a vIOMMU reads them from the guest's CD). None if the CD
/// is not one this guest can describe (invalid, or other walk attributes).
pub fn cd_config(cd: &Cd) -> Option<CdConfig> {
    let c = S1Context::from_cd(cd)?;
    Some(CdConfig {
        ttb0: c.ttb0,
        tcr: c.tcr(),
        mair: c.mair,
        asid: c.asid,
    })
}

/// One row of the invalidation validation table: a command a guest may
/// not issue, why, the refusal the vIOMMU names, and the QEMU case that
/// shows it.
pub struct Refused {
    pub case: &'static str,
    pub why: &'static str,
    pub expect: InvalidateRefusal,
    /// The command, given the guest's own vSID and one that is not its.
    pub cmd: fn(own: u32, foreign: u32) -> Command,
}

/// The invalidation validation table (docs/vmm-frontend.md): each kind a
/// guest must not issue. Only TLBI_NH_ALL/ASID/VA/VAA, CFGI_CD/CD_ALL and
/// (with ATS) ATC_INV of the VM's own streams and contexts are a guest's.
pub const REFUSED: &[Refused] = &[
    Refused {
        case: "vmm_inv_refuses_cfgi_ste",
        why: "CFGI_STE: stream configuration is the vIOMMU's (set_ste)",
        expect: InvalidateRefusal::Opcode,
        cmd: |own, _| Command::cfgi_ste(own, true),
    },
    Refused {
        case: "vmm_inv_refuses_cfgi_all",
        why: "CFGI_ALL: every stream of the SMMU",
        expect: InvalidateRefusal::Opcode,
        cmd: |_, _| Command::cfgi_all(),
    },
    Refused {
        case: "vmm_inv_refuses_tlbi_s12_vmall",
        why: "TLBI_S12_VMALL: stage 2 is the host's",
        expect: InvalidateRefusal::Opcode,
        cmd: |_, _| Command::tlbi_s12_vmall(0),
    },
    Refused {
        case: "vmm_inv_refuses_tlbi_s2_ipa",
        why: "TLBI_S2_IPA: stage 2 is the host's",
        expect: InvalidateRefusal::Opcode,
        cmd: |_, _| Command::tlbi_s2_ipa(0, 0x1000, true),
    },
    Refused {
        case: "vmm_inv_refuses_tlbi_nsnh_all",
        why: "TLBI_NSNH_ALL: every VM's translations",
        expect: InvalidateRefusal::Opcode,
        cmd: |_, _| Command::tlbi_nsnh_all(),
    },
    Refused {
        case: "vmm_inv_refuses_tlbi_el2_all",
        why: "TLBI_EL2_ALL: the hypervisor's translations",
        expect: InvalidateRefusal::Opcode,
        cmd: |_, _| Command::tlbi_el2_all(),
    },
    Refused {
        case: "vmm_inv_refuses_prefetch_config",
        why: "PREFETCH_CONFIG: not an invalidation",
        expect: InvalidateRefusal::Opcode,
        cmd: |own, _| Command::prefetch_config(own, None),
    },
    Refused {
        case: "vmm_inv_refuses_pri_resp",
        why: "PRI_RESP: page responses go through respond",
        expect: InvalidateRefusal::Opcode,
        cmd: |own, _| Command::pri_resp(own, None, 1, PriResponse::Success),
    },
    Refused {
        case: "vmm_inv_refuses_cmd_sync",
        why: "CMD_SYNC: the vIOMMU adds its own",
        expect: InvalidateRefusal::Opcode,
        cmd: |_, _| Command::sync(SyncCs::None),
    },
    Refused {
        case: "vmm_inv_refuses_reserved_opcode",
        why: "a reserved opcode",
        expect: InvalidateRefusal::Opcode,
        cmd: |_, _| Command::from_words([0xff, 0]),
    },
    Refused {
        case: "vmm_inv_refuses_foreign_stream_cfgi_cd",
        why: "CFGI_CD naming a stream that is not the VM's",
        expect: InvalidateRefusal::Stream,
        cmd: |_, foreign| Command::cfgi_cd(foreign, 0, true),
    },
    Refused {
        case: "vmm_inv_refuses_foreign_stream_cfgi_cd_all",
        why: "CFGI_CD_ALL naming a stream that is not the VM's",
        expect: InvalidateRefusal::Stream,
        cmd: |_, foreign| Command::cfgi_cd_all(foreign),
    },
    Refused {
        case: "vmm_inv_refuses_cd_beyond_the_table",
        why: "CFGI_CD of a SubstreamID beyond the stream's CDs (no such guest PASID)",
        expect: InvalidateRefusal::Pasid,
        cmd: |own, _| Command::cfgi_cd(own, 7, true),
    },
    Refused {
        case: "vmm_inv_refuses_secure_stream",
        why: "CFGI_CD with SSec: a Secure stream is never a VM's",
        expect: InvalidateRefusal::Field,
        cmd: |own, _| {
            let mut c = Command::cfgi_cd(own, 0, true);
            c.set_ssec(true);
            c
        },
    },
    Refused {
        case: "vmm_inv_refuses_atc_inv_without_ats",
        why: "ATC_INV: the vIOMMU has no ATS (QEMU's SMMUv3 has none)",
        expect: InvalidateRefusal::Unsupported,
        cmd: |own, _| Command::atc_inv(own, None, 0, 52, false),
    },
];

/// One of every kind a guest may issue without ATS, on its own stream and
/// context: TLBI_NH_ALL, TLBI_NH_ASID, TLBI_NH_VA, TLBI_NH_VAA, CFGI_CD,
/// CFGI_CD_ALL. (The VMID field is 0: the vIOMMU forces its own.)
pub fn allowed_batch(own: u32, asid: u16, va: u64) -> [Command; 6] {
    [
        Command::tlbi_nh_all(0),
        Command::tlbi_nh_asid(0, asid),
        Command::tlbi_nh_va(0, asid, va, true),
        Command::tlbi_nh_vaa(0, va, true),
        Command::cfgi_cd(own, 0, true),
        Command::cfgi_cd_all(own),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use smmuv3::pgtable::{Prot, Table};
    use smmuv3::{CommandKind, Opcode};

    fn ram(mem: &mut [u64]) -> Ram {
        // SAFETY: `mem` outlives the Ram in each test and is used only
        // through it.
        unsafe { Ram::new(mem.as_mut_ptr() as usize, 0x8000_0000, mem.len() * 8) }
    }

    #[test]
    fn tables_in_guest_ram_by_ipa() {
        let mut mem = vec![0u64; layout::PAGES * PAGE / 8];
        let mut r = ram(&mut mem);
        let root = r.alloc_table().unwrap();
        assert_eq!(root, 0x8000_1000, "table page 1, by IPA");
        let t = Table::s1(root, layout::T0SZ).unwrap();
        let (t1, t2) = (r.ipa_of(layout::T1), r.ipa_of(layout::T2));
        t.map(&mut r, layout::GVA_DST, t1, Prot::RW).unwrap();
        assert_eq!(t.lookup(&r, layout::GVA_DST), Some((t1, Prot::RW)));
        assert_eq!(t.lookup(&r, layout::GVA_UNMAPPED), None);
        // Remap: the old mapping comes back.
        assert_eq!(
            t.set(&mut r, layout::GVA_DST, t2, Prot::RW),
            Ok(Some((t1, Prot::RW)))
        );
        // The pool ends before the data pages.
        while r.alloc_table().is_some() {}
        assert_eq!(r.next_table, layout::TABLES_END);
        const { assert!(layout::TABLES_END <= layout::SRC) };
    }

    #[test]
    fn the_cd_the_guest_writes_is_what_bind_carries() {
        let mut mem = vec![0u64; layout::PAGES * PAGE / 8];
        let r = ram(&mut mem);
        let c = context(r.ipa_of(1), layout::ASID);
        r.write_cd(layout::CD_PAGE, &c.cd());
        let cd = r.read_cd(layout::CD_PAGE);
        assert!(cd.v() && cd.r() && cd.aa64());
        let b = cd_config(&cd).unwrap();
        assert_eq!(b.ttb0, 0x8000_1000);
        assert_eq!(b.asid, layout::ASID);
        assert_eq!(b.mair, MAIR_DEFAULT);
        assert_eq!(b.tcr, smmuv3::tcr::value(25, AddrSize::Bits40.raw() as u8));
        assert!(cd_config(&Cd::zeroed()).is_none(), "an invalid CD");
    }

    #[test]
    fn non_coherent_ram_cleans_what_the_smmu_reads() {
        let mut mem = vec![0u64; layout::PAGES * PAGE / 8];
        let mut r = ram(&mut mem);
        r.coherent = false;
        let _ = userlib::cache::host_log();
        r.publish();
        // Every line of the layout (one more when the host buffer is not
        // line-aligned).
        let lines = |bytes: usize| bytes / userlib::cache::dcache_line();
        let n = userlib::cache::host_log().len();
        let want = lines(layout::PAGES * PAGE);
        assert!(n == want || n == want + 1, "{n} lines cleaned");
        assert!(!r.holds_pattern(layout::T1, 4));
        let n = userlib::cache::host_log().len();
        assert!(
            n == lines(PAGE) || n == lines(PAGE) + 1,
            "the page is cleaned and invalidated before it is read"
        );
        r.coherent = true;
        r.publish();
        assert!(userlib::cache::host_log().is_empty());
    }

    #[test]
    fn validation_table_kinds() {
        let names: Vec<&str> = REFUSED.iter().map(|r| r.case).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "case names unique");
        assert!(names.iter().all(|n| n.starts_with("vmm_inv_refuses_")));
        // None of the refused is an allowed kind on the guest's own stream
        // and allocated context, except by naming something not its own.
        for r in REFUSED {
            let c = (r.cmd)(1, 0x10);
            match c.decode() {
                Ok(CommandKind::CfgiCd { sid, ssid, .. }) => {
                    assert!(sid == 0x10 || ssid != 0 || c.ssec(), "{}", r.case)
                }
                Ok(CommandKind::CfgiCdAll { sid }) => assert_eq!(sid, 0x10, "{}", r.case),
                Ok(CommandKind::AtcInv { .. }) => {
                    assert_eq!(r.expect, InvalidateRefusal::Unsupported, "{}", r.case)
                }
                Ok(k) => assert!(
                    !matches!(
                        k,
                        CommandKind::TlbiNhAll { .. }
                            | CommandKind::TlbiNhAsid { .. }
                            | CommandKind::TlbiNhVa { .. }
                            | CommandKind::TlbiNhVaa { .. }
                    ),
                    "{}",
                    r.case
                ),
                Err(_) => assert_eq!(r.case, "vmm_inv_refuses_reserved_opcode"),
            }
        }
        let ops: Vec<Opcode> = allowed_batch(1, 1, 0x40_1000)
            .iter()
            .map(|c| c.opcode().unwrap())
            .collect();
        assert_eq!(
            ops,
            [
                Opcode::TlbiNhAll,
                Opcode::TlbiNhAsid,
                Opcode::TlbiNhVa,
                Opcode::TlbiNhVaa,
                Opcode::CfgiCd,
                Opcode::CfgiCdAll
            ]
        );
    }
}
