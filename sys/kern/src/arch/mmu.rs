//! Translation tables, built once at boot from the static configuration.

use super::{isb, write_sysreg};
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
const AP_ALL_RO: u64 = 0b11 << 6;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
const NG: u64 = 1 << 11;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

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
/// (the idle task), read CTR/DC ZVA/counters; SPAN=1 (no PAN on entry); RES1
/// bits of the layout.
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
    | (1 << 20)
    | (1 << 22)
    | (1 << 23)
    | (1 << 26)
    | (1 << 28)
    | (1 << 29);

const L1_SHIFT: usize = 30;
const L2_SHIFT: usize = 21;
const L3_SHIFT: usize = 12;
const BLOCK_2M: usize = 1 << L2_SHIFT;
const PAGE: usize = 1 << L3_SHIFT;

struct Pool<'a> {
    pages: &'a mut [Page],
    next: usize,
}

impl Pool<'_> {
    fn alloc(&mut self) -> Result<usize, &'static str> {
        let p = self
            .pages
            .get_mut(self.next)
            .ok_or("page-table pool too small (PAGE_TABLE_PAGES)")?;
        self.next += 1;
        p.0 = [0; 512];
        Ok(p as *mut Page as usize)
    }
}

fn table(pa: usize) -> &'static mut [u64; 512] {
    // SAFETY: `pa` is a page of the pool (a kernel static), reachable
    // identity-mapped (or with the MMU still off), and only the boot code
    // writes tables.
    unsafe { &mut *(pa as *mut [u64; 512]) }
}

fn idx(va: usize, shift: usize) -> usize {
    (va >> shift) & 511
}

/// Builds the kernel map and every task's table, then turns the MMU on.
pub fn init(
    board: &Board,
    descs: &'static [TaskDesc],
    tasks: &mut [Task],
    pages: &'static mut [Page],
) -> Result<(), &'static str> {
    let mut pool = Pool { pages, next: 0 };
    let kl1 = pool.alloc()?;
    let dev_l2 = pool.alloc()?;
    let ram_l2 = pool.alloc()?;
    for &(base, size) in board.kernel_devices {
        if base + size > 1 << L1_SHIFT {
            return Err("kernel device outside the first GiB");
        }
        let mut a = base & !(BLOCK_2M - 1);
        while a < base + size {
            table(dev_l2)[idx(a, L2_SHIFT)] =
                a as u64 | VALID | ATTR_DEVICE | AP_PRIV_RW | AF | PXN | UXN;
            a += BLOCK_2M;
        }
    }
    let ram_gib = board.ram_base >> L1_SHIFT;
    if ram_gib == 0 || (board.ram_base + board.ram_size - 1) >> L1_SHIFT != ram_gib {
        return Err("RAM must lie within one GiB above the first");
    }
    let mut a = board.ram_base;
    while a < board.ram_base + board.ram_size {
        table(ram_l2)[idx(a, L2_SHIFT)] =
            a as u64 | VALID | ATTR_NORMAL | AP_PRIV_RW | SH_INNER | AF | UXN;
        a += BLOCK_2M;
    }
    table(kl1)[0] = dev_l2 as u64 | VALID | TABLE_OR_PAGE;
    table(kl1)[ram_gib] = ram_l2 as u64 | VALID | TABLE_OR_PAGE;

    for (i, (t, d)) in tasks.iter_mut().zip(descs.iter()).enumerate() {
        let l1 = pool.alloc()?;
        table(l1)[0] = table(kl1)[0];
        table(l1)[ram_gib] = table(kl1)[ram_gib];
        let l2 = pool.alloc()?;
        table(l1)[idx(layout::TASK_TEXT, L1_SHIFT)] = l2 as u64 | VALID | TABLE_OR_PAGE;
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
            let mut off = 0;
            while off < r.size {
                let va = r.va + off;
                let e2 = &mut table(l2)[idx(va, L2_SHIFT)];
                if *e2 == 0 {
                    *e2 = pool.alloc()? as u64 | VALID | TABLE_OR_PAGE;
                }
                let l3 = (*e2 & 0x0000_FFFF_FFFF_F000) as usize;
                table(l3)[idx(va, L3_SHIFT)] =
                    (pa0 + off) as u64 | VALID | TABLE_OR_PAGE | AF | NG | attrs;
                off += PAGE;
            }
        }
        // ASID i+1: 0 is the kernel's boot table.
        t.ttbr0 = l1 as u64 | ((i as u64 + 1) << 48);
    }
    if pool.next != pool.pages.len() {
        // The build computed a different count: a generator/kernel mismatch.
        return Err("page-table pool size differs from what the tables need");
    }

    write_sysreg!("mair_el2", MAIR);
    write_sysreg!("tcr_el2", TCR);
    write_sysreg!("ttbr0_el2", kl1 as u64);
    // SAFETY: make the table writes visible to the walker and drop any stale
    // EL2&0 translations before the MMU goes on.
    unsafe { core::arch::asm!("dsb ish", "tlbi alle2", "dsb ish", options(nostack)) };
    isb();
    write_sysreg!("sctlr_el2", SCTLR);
    isb();
    Ok(())
}
