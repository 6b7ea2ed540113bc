//! pasid-alloc in the benchmark image (`qemu/apps/bench-pasid.toml`): the
//! library's table and server exactly as `task/pasid-alloc` runs them, with
//! an `after` hook that keeps the minimum instruction count of each
//! operation (the counter around the trait method: the table's work and,
//! for `free`, the notification; decode and reply excluded). Under QEMU
//! `-icount shift=0` one tick is one instruction. It logs `BENCH` lines
//! when it serves `owner_died` (the supervisor's operation, which the
//! bench never uses otherwise, so a client can ask for the report), plus
//! the table's bytes per PASID at start. The first report is the phase with
//! at most one PASID allocated (`pasid_server_op_<op>`); the client then
//! allocates `PREFILL` (2^16) PASIDs and the second report is the same
//! operations with those held (`pasid_server_op_<op>_at_65536`), followed
//! by the flatness ratio: the largest of alloc / free / owner_of at 2^16
//! over at 1, in hundredths.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use pasid_alloc::app_config::{PASID_BITS, PASID_QUOTA, STREAMS, TASK_NAMES};
    use pasid_alloc::{serve_with, Config, Entry, PasidTable, Roles, BYTES_PER_PASID};
    use pasid_alloc_api::PasidAllocOp as Op;
    use userlib::log;

    const N: usize = PasidTable::entries(PASID_BITS);
    const OPS: [Op; 6] = [
        Op::Alloc,
        Op::Free,
        Op::OwnerOf,
        Op::Usage,
        Op::NextDefunct,
        Op::MarkDrained,
    ];

    pub fn run() -> ! {
        let mut storage = [Entry::default(); N];
        let cfg = Config {
            bits: PASID_BITS,
            quota: PASID_QUOTA,
            first: &[],
        };
        // The report trigger is `owner_died`, from the iommu-server
        // stand-in (qemu/bench-pasid).
        let roles = Roles::from_app(STREAMS, TASK_NAMES);
        let Ok(mut table) = PasidTable::new(&mut storage, &cfg) else {
            userlib::sys_panic(b"bench-pasid-server: bad configuration")
        };
        log!("BENCH pasid_bytes_per_pasid {} bytes", BYTES_PER_PASID);
        log!(
            "BENCH pasid_table_bytes {} bytes",
            BYTES_PER_PASID * table.space() as usize
        );
        let mut min = [u64::MAX; 8];
        // The first phase's minima, kept for the flatness ratio.
        let mut at_1: Option<[u64; 8]> = None;
        serve_with(&mut table, roles, move |s| {
            let Some(op) = s.last_op else { return };
            if op == Op::OwnerDied {
                let suffix = if at_1.is_some() { "_at_65536" } else { "" };
                for o in OPS {
                    log!(
                        "BENCH pasid_server_op_{}{} {} instructions",
                        o.name(),
                        suffix,
                        min[o as usize]
                    );
                }
                match at_1 {
                    None => at_1 = Some(min),
                    Some(first) => {
                        let worst = [Op::Alloc, Op::Free, Op::OwnerOf]
                            .iter()
                            .map(|&o| min[o as usize] * 100 / first[o as usize].max(1))
                            .max()
                            .unwrap_or(0);
                        log!(
                            "BENCH pasid_server_op_at_65536_per_at_1_x100 {} ratio",
                            worst
                        );
                    }
                }
                min = [u64::MAX; 8];
                return;
            }
            let m = &mut min[op as usize];
            *m = (*m).min(s.last_op_instr);
        })
    }
}

userlib::task_main!(image::run);
