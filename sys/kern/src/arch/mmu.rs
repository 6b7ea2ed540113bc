//! Translation tables, built once at boot from the static configuration.
//!
//! The kernel's own map (shared by every task table, privileged-only):
//! - the first GiB: the board's kernel devices, 2 MiB Device blocks, never
//!   executable;
//! - RAM: 2 MiB Normal blocks, read-write, never executable — except the
//!   2 MiB blocks the kernel image occupies, which are mapped with 4 KiB
//!   pages (from `KERNEL_L3`): text read-only and executable at EL2, read-only
//!   data read-only, data/.bss/stacks read-write, and the page below the
//!   kernel stack left unmapped (`kernel.x` gives the boundaries).
//!
//! SCTLR_EL2.WXN is set as well, so a writable kernel page can never be
//! executed even if an entry here were wrong.

use super::sysreg;
use crate::config::{Board, TaskDesc};
use crate::task::{region_pa, Task};
use abi::{layout, REGION_DEVICE, REGION_EXECUTE, REGION_UNCACHED, REGION_WRITE};

/// One 4 KiB translation table.
#[repr(C, align(4096))]
pub struct Page(pub [u64; 512]);

impl Page {
    pub const ZERO: Page = Page([0; 512]);
}

// Descriptor bits (VMSAv8-64, stage 1, 4 KiB granule).
const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const ATTR_NORMAL: u64 = 0 << 2; // MAIR index 0: Normal write-back
const ATTR_DEVICE: u64 = 1 << 2; // MAIR index 1: Device-nGnRE
const ATTR_NORMAL_NC: u64 = 2 << 2; // MAIR index 2: Normal non-cacheable
const AP_PRIV_RW: u64 = 0b00 << 6;
const AP_ALL_RW: u64 = 0b01 << 6;
const AP_PRIV_RO: u64 = 0b10 << 6;
const AP_ALL_RO: u64 = 0b11 << 6;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
const NG: u64 = 1 << 11;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
/// Output address of a table or page descriptor.
const OA_MASK: u64 = 0x0000_FFFF_FFFF_F000;

/// Kernel RAM mappings.
const K_TEXT: u64 = ATTR_NORMAL | AP_PRIV_RO | SH_INNER | AF | UXN;
const K_RODATA: u64 = ATTR_NORMAL | AP_PRIV_RO | SH_INNER | AF | PXN | UXN;
const K_DATA: u64 = ATTR_NORMAL | AP_PRIV_RW | SH_INNER | AF | PXN | UXN;

const MAIR: u64 = 0xFF | (0x04 << 8) | (0x44 << 16);
/// TCR_EL2 in its E2H (EL1-like) layout: T0SZ=25 (39-bit VA, walks start at
/// level 1), inner/outer WBWA, inner shareable, 4 KiB granule, TTBR1 walks
/// disabled, 40-bit PA, 16-bit ASIDs taken from TTBR0.
const TCR: u64 = 25
    | (1 << 8)
    | (1 << 10)
    | (3 << 12)
    | (25 << 16)
    | (1 << 23)
    | (2 << 30)
    | (2 << 32)
    | (1 << 36);
/// SCTLR_EL2 (E2H+TGE layout): MMU, caches, SP alignment checks, EL0 may WFI
/// (the idle task), read CTR (UCT, bit 15)/DC ZVA/counters, and maintain
/// caches by VA (UCI, bit 26: DC CVAC, DC CIVAC, DC CVAU, IC IVAU — with
/// E2H = TGE = 1 these EL0 controls are SCTLR_EL2's, not SCTLR_EL1's).
/// UCI is what a task driving a non-coherent SMMU needs
/// (userlib::cache), and it is sound for every task: an EL0 maintenance
/// operation checks the task's own read permission (it faults like a
/// load), cleaning never changes what memory holds as seen by anyone, and
/// DC IVAC — the one that could discard a store — stays EL1+ only. WXN (bit 19: writable means
/// never executable); SPAN=0 (bit 23 clear: every exception taken to EL2
/// sets PSTATE.PAN); TSCXT (bit 20: EL0 access to SCXTNUM_EL0 traps);
/// EnTP2 (bit 60) clear: TPIDR2_EL0 traps at EL0. Other bits: RES1 or
/// the architectural defaults of the layout.
const SCTLR: u64 = (1 << 0)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 11)
    | (1 << 12)
    | (1 << 14)
    | (1 << 15)
    | (1 << 16)
    | (1 << 18)
    | (1 << 19)
    | (1 << 20)
    | (1 << 22)
    | (1 << 26)
    | (1 << 28)
    | (1 << 29);

const L1_SHIFT: usize = 30;
const L2_SHIFT: usize = 21;
const L3_SHIFT: usize = 12;
const BLOCK_2M: usize = 1 << L2_SHIFT;
const PAGE: usize = 1 << L3_SHIFT;

/// Pages handed out for tables, addressed by index: the builder writes
/// entries through the pool's own `&mut`, so no second reference to a
/// table ever exists (the hardware walker reads them by physical address).
struct Pool<'a> {
    pages: &'a mut [Page],
    next: usize,
    what: &'static str,
}

impl<'a> Pool<'a> {
    fn new(pages: &'a mut [Page], what: &'static str) -> Self {
        Pool {
            pages,
            next: 0,
            what,
        }
    }

    /// A zeroed table: its index in this pool.
    fn alloc(&mut self) -> Result<usize, &'static str> {
        let p = self.pages.get_mut(self.next).ok_or(self.what)?;
        self.next += 1;
        p.0 = [0; 512];
        Ok(self.next - 1)
    }

    /// Physical (= identity-mapped) address of table `t`.
    fn pa(&self, t: usize) -> u64 {
        &self.pages[t] as *const Page as u64
    }

    /// The table a descriptor points at, if it is one of this pool's.
    fn index_of(&self, desc: u64) -> Option<usize> {
        let off = (desc & OA_MASK).checked_sub(self.pa(0))? as usize;
        let t = off / core::mem::size_of::<Page>();
        (t < self.next).then_some(t)
    }

    fn set(&mut self, t: usize, i: usize, v: u64) {
        self.pages[t].0[i] = v;
    }

    fn get(&self, t: usize, i: usize) -> u64 {
        self.pages[t].0[i]
    }
}

/// Tables for the 4 KiB mapping of the kernel image: one per 2 MiB of image.
/// `kernel.x` refuses to link an image larger than they cover.
pub const KERNEL_L3_PAGES: usize = 8;

/// The image layout `kernel.x` defines (see there).
#[derive(Clone, Copy)]
pub struct ImageLayout {
    pub text: (usize, usize),
    pub rodata: (usize, usize),
    /// Data, .bss and both stacks, except the guard page.
    pub rw: (usize, usize),
    pub guard: usize,
}

impl ImageLayout {
    pub fn of_image() -> Self {
        extern "C" {
            static __stext: u8;
            static __etext: u8;
            static __srodata: u8;
            static __erodata: u8;
            static __sdata: u8;
            static __kstack_guard: u8;
            static __kernel_end: u8;
        }
        let a = |p: *const u8| p as usize;
        // Only the symbols' addresses are taken, never their contents.
        ImageLayout {
            text: (a(&raw const __stext), a(&raw const __etext)),
            rodata: (a(&raw const __srodata), a(&raw const __erodata)),
            rw: (a(&raw const __sdata), a(&raw const __kernel_end)),
            guard: a(&raw const __kstack_guard),
        }
    }

    /// The kernel-map entry for the image page at `pa` (0: unmapped).
    fn entry(&self, pa: usize) -> u64 {
        let inside = |(s, e): (usize, usize)| pa >= s && pa < e;
        let attrs = if pa >= self.guard && pa < self.guard + PAGE {
            return 0;
        } else if inside(self.text) {
            K_TEXT
        } else if inside(self.rodata) {
            K_RODATA
        } else {
            // Data, .bss, stacks, and whatever RAM follows the image in its
            // last 2 MiB block.
            K_DATA
        };
        pa as u64 | VALID | TABLE_OR_PAGE | attrs
    }
}

fn idx(va: usize, shift: usize) -> usize {
    (va >> shift) & 511
}

/// Builds the kernel map and every task's table, then turns the MMU on.
/// Returns the kernel's own table (TTBR0 value, ASID 0).
///
/// # Safety
/// Only once, at boot, with the MMU off; `image` must describe the running
/// image (`ImageLayout::of_image`).
pub unsafe fn init(
    board: &Board,
    descs: &'static [TaskDesc],
    tasks: &mut [Task],
    pages: &'static mut [Page],
    kernel_l3: &'static mut [Page],
    image: &ImageLayout,
) -> Result<u64, &'static str> {
    let mut pool = Pool::new(pages, "page-table pool too small (PAGE_TABLE_PAGES)");
    let mut kpool = Pool::new(kernel_l3, "kernel image larger than KERNEL_L3_PAGES");
    let kl1 = pool.alloc()?;
    let dev_l2 = pool.alloc()?;
    let ram_l2 = pool.alloc()?;
    // The kernel's devices share one 1 GiB table: the first GiB on QEMU
    // virt, the second on the i.MX95 (the build checks the board keeps to
    // one GiB, below the task window and apart from RAM's).
    let dev_gib = board.kernel_devices.first().map_or(0, |d| d.0 >> L1_SHIFT);
    if dev_gib >= layout::TASK_TEXT >> L1_SHIFT {
        return Err("kernel devices above the task window");
    }
    for &(base, size) in board.kernel_devices {
        if base >> L1_SHIFT != dev_gib || (base + size - 1) >> L1_SHIFT != dev_gib {
            return Err("kernel devices not in one GiB");
        }
        let mut a = base & !(BLOCK_2M - 1);
        while a < base + size {
            pool.set(
                dev_l2,
                idx(a, L2_SHIFT),
                a as u64 | VALID | ATTR_DEVICE | AP_PRIV_RW | AF | PXN | UXN,
            );
            a += BLOCK_2M;
        }
    }
    let ram_gib = board.ram_base >> L1_SHIFT;
    if ram_gib == dev_gib
        || ram_gib >= layout::TASK_TEXT >> L1_SHIFT
        || (board.ram_base + board.ram_size - 1) >> L1_SHIFT != ram_gib
    {
        return Err("RAM must lie within one GiB, not the devices' one");
    }
    let (img_start, img_end) = (image.text.0, image.rw.1);
    if img_start % BLOCK_2M != 0
        || img_start < board.ram_base
        || img_end > board.ram_base + board.ram_size
    {
        return Err("kernel image not 2 MiB aligned inside RAM");
    }
    let mut a = board.ram_base;
    while a < board.ram_base + board.ram_size {
        let e = if a + BLOCK_2M <= img_start || a >= img_end {
            // RAM outside the image: task memory, the DTB, free RAM. The
            // kernel reads and writes it (task memory, after checking the
            // task's regions) but never executes it.
            a as u64 | VALID | K_DATA
        } else {
            let l3 = kpool.alloc()?;
            for i in 0..512 {
                kpool.set(l3, i, image.entry(a + i * PAGE));
            }
            kpool.pa(l3) | VALID | TABLE_OR_PAGE
        };
        pool.set(ram_l2, idx(a, L2_SHIFT), e);
        a += BLOCK_2M;
    }
    pool.set(kl1, dev_gib, pool.pa(dev_l2) | VALID | TABLE_OR_PAGE);
    pool.set(kl1, ram_gib, pool.pa(ram_l2) | VALID | TABLE_OR_PAGE);

    // Tasks may share only read-only memory (one crate's text); the
    // kernel's copies between tasks and isolation rely on it.
    if crate::task::writable_memory_shared(descs) {
        return Err("a task's writable memory is shared with another region");
    }
    for (i, (t, d)) in tasks.iter_mut().zip(descs.iter()).enumerate() {
        let l1 = pool.alloc()?;
        pool.set(l1, dev_gib, pool.get(kl1, dev_gib));
        pool.set(l1, ram_gib, pool.get(kl1, ram_gib));
        let l2 = pool.alloc()?;
        pool.set(
            l1,
            idx(layout::TASK_TEXT, L1_SHIFT),
            pool.pa(l2) | VALID | TABLE_OR_PAGE,
        );
        for r in d.regions {
            if r.va < layout::TASK_TEXT || r.va + r.size > layout::TASK_END || r.va % PAGE != 0 {
                return Err("task region outside the task window");
            }
            let attrs = if r.attributes & REGION_DEVICE != 0 {
                ATTR_DEVICE | AP_ALL_RW | PXN | UXN
            } else {
                let mem = if r.attributes & REGION_UNCACHED != 0 {
                    ATTR_NORMAL_NC
                } else {
                    ATTR_NORMAL
                };
                let ap = if r.attributes & REGION_WRITE != 0 {
                    AP_ALL_RW
                } else {
                    AP_ALL_RO
                };
                let xn = if r.attributes & REGION_EXECUTE != 0 {
                    PXN
                } else {
                    PXN | UXN
                };
                mem | ap | xn | SH_INNER
            };
            let pa0 = region_pa(r);
            // A fixed region in RAM (a VM's RAM carve-out) must not be the
            // kernel image (which holds every other task's memory).
            if matches!(r.phys, crate::config::PhysSource::Fixed(_))
                && pa0 < img_end
                && img_start < pa0 + r.size
            {
                return Err("a task's fixed memory overlaps the kernel image");
            }
            let mut off = 0;
            while off < r.size {
                let va = r.va + off;
                let e2 = pool.get(l2, idx(va, L2_SHIFT));
                let l3 = match pool.index_of(e2) {
                    Some(l3) if e2 != 0 => l3,
                    _ => {
                        let l3 = pool.alloc()?;
                        pool.set(l2, idx(va, L2_SHIFT), pool.pa(l3) | VALID | TABLE_OR_PAGE);
                        l3
                    }
                };
                pool.set(
                    l3,
                    idx(va, L3_SHIFT),
                    (pa0 + off) as u64 | VALID | TABLE_OR_PAGE | AF | NG | attrs,
                );
                off += PAGE;
            }
        }
        // ASID i+1: 0 is the kernel's boot table.
        t.ttbr0 = pool.pa(l1) | ((i as u64 + 1) << 48);
    }
    if pool.next != pool.pages.len() {
        // The build computed a different count: a generator/kernel mismatch.
        return Err("page-table pool size differs from what the tables need");
    }

    let kernel_ttbr0 = pool.pa(kl1);
    // SAFETY: the MMU is still off (the caller's contract); the tables above
    // map the running image at its own addresses (identity), its stack
    // included, and are complete.
    unsafe {
        sysreg::set_mair_el2(MAIR);
        sysreg::set_tcr_el2(TCR);
        sysreg::set_ttbr0_el2(kernel_ttbr0);
        // Make the table writes visible to the walker and drop any stale
        // EL2&0 translations before the MMU goes on.
        core::arch::asm!("dsb ish", "tlbi alle2", "dsb ish", options(nostack));
        sysreg::isb();
        sysreg::set_sctlr_el2(SCTLR);
    }
    sysreg::isb();
    Ok(kernel_ttbr0)
}
