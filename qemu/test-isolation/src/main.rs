//! Runner of the isolation_* cases. `test-echo` plays the rogue: asked to
//! touch memory or MMIO it was not given, or to send outside its task-slots,
//! it must be faulted by the kernel and restarted by the supervisor, while
//! the task that owns SMMU page 0 keeps reading it.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod cases {
    use test_support::{case, echo::*, ensure, finish, Outcome};
    use userlib::*;

    mod arch;

    /// Asks the rogue to do something that must fault it; expects the dead
    /// code of its next generation, then a working restarted rogue.
    fn rogue_faults(op: u16, arg: &[u8]) -> Outcome {
        let rogue = sys_lookup_slot("test-echo").ok_or("no rogue slot")?;
        let (rc, _) = sys_send(rogue, op, arg, &mut [0u8; 4], &[]);
        let g = is_dead_code(rc).ok_or("the rogue was not faulted")?;
        ensure(
            Some(g) == rogue.generation().next(),
            "restarted with an unexpected generation",
        )?;
        let fresh = sys_refresh_task_id(rogue);
        ensure(
            fresh.generation() == g,
            "refresh does not give the new generation",
        )?;
        let mut r = [0u8; 2];
        let (rc, n) = sys_send(fresh, ECHO, b"ok", &mut r, &[]);
        ensure(
            rc == 0 && n == 2 && &r == b"ok",
            "restarted rogue does not serve",
        )
    }

    fn owner_idr0() -> Result<(u32, u32), &'static str> {
        let owner = sys_lookup_slot("test-smmu-owner").ok_or("no owner slot")?;
        let mut r = [0u8; 8];
        let (rc, n) = sys_send(owner, 1, &[], &mut r, &[]);
        ensure(rc == 0 && n == 8, "owner did not answer")?;
        Ok((
            u32::from_le_bytes([r[0], r[1], r[2], r[3]]),
            u32::from_le_bytes([r[4], r[5], r[6], r[7]]),
        ))
    }

    pub fn run() -> ! {
        let mut ok = true;
        // Kernel arch cases (src/cases/arch.rs).
        ok = arch::registers(ok);
        ok &= case("isolation_owner_reads_idr0", || {
            let (idr0, idr1) = owner_idr0()?;
            log!(
                "SMMU IDR0={:#010x} IDR1={:#010x} (read by the owner of page 0)",
                idr0,
                idr1
            );
            // IDR0.S1P (bit 1) and S2P (bit 0) are set on every SMMU we run on.
            ensure(idr0 & 0b11 == 0b11, "IDR0 lacks S1P/S2P")
        });
        ok &= case("isolation_smmu_mmio_denied", || {
            rogue_faults(TOUCH, &0x0905_0000u64.to_le_bytes())?;
            let (idr0, _) = owner_idr0()?;
            ensure(
                idr0 & 0b11 == 0b11,
                "owner lost access after the rogue's fault",
            )
        });
        ok &= case("isolation_kernel_memory_denied", || {
            rogue_faults(TOUCH, &0x4020_0000u64.to_le_bytes())
        });
        ok &= case("isolation_other_task_memory_denied", || {
            // Our own stack page, by its physical address: the rogue's table
            // maps RAM for the kernel only.
            let stack = sys_region_info("stack").ok_or("no stack region")?;
            rogue_faults(TOUCH, &(stack.pa as u64).to_le_bytes())?;
            // And a window address the rogue was not given: the region slot
            // after its one memory region.
            let slot = abi::layout::TASK_REGIONS + 0x20_0000;
            rogue_faults(TOUCH, &(slot as u64).to_le_bytes())
        });
        ok &= case("isolation_send_outside_slots", || {
            // The supervisor (task 0, generation 0 for ever) is not in the
            // rogue's slots.
            rogue_faults(SEND_TO, &SUPERVISOR.0.to_le_bytes())
        });
        ok &= case("isolation_stack_overflow_faults", || {
            // Unbounded recursion runs the rogue's stack into the unmapped
            // guard page below it: a fault, not a silently corrupted .bss.
            rogue_faults(RECURSE, &[])
        });
        ok &= case("isolation_undefined_instruction_faults", || {
            rogue_faults(UNDEFINED, &[])
        });
        ok &= case("isolation_bad_syscall_args_fault", || {
            rogue_faults(BAD_SYSCALL_ARGS, &[])
        });
        ok &= case("isolation_unknown_syscall_faults", || {
            rogue_faults(BAD_SYSCALL, &[])
        });
        ok &= case("isolation_phys_owned_query", || {
            let owner = sys_lookup_slot("test-smmu-owner").ok_or("no owner slot")?;
            let rogue = sys_lookup_slot("test-echo").ok_or("no rogue slot")?;
            let dma = sys_region_info("dma-buf").ok_or("no dma-buf region")?;
            let stack = sys_region_info("stack").ok_or("no stack region")?;
            let me = TaskId::ANY; // the owner reads it as "the sender"
            let ask = |task: TaskId, pa: usize, len: usize| -> Result<bool, &'static str> {
                let mut m = [0u8; 20];
                m[..4].copy_from_slice(&task.0.to_le_bytes());
                m[4..12].copy_from_slice(&(pa as u64).to_le_bytes());
                m[12..].copy_from_slice(&(len as u64).to_le_bytes());
                let mut r = [0u8; 1];
                let (rc, n) = sys_send(owner, 2, &m, &mut r, &[]);
                ensure(rc == 0 && n == 1, "owner did not answer the query")?;
                Ok(r[0] == 1)
            };
            ensure(ask(me, dma.pa, dma.size)?, "our own DMA memory is not ours")?;
            ensure(
                !ask(me, dma.pa, dma.size + 4096)?,
                "a range past our DMA memory is ours",
            )?;
            ensure(
                !ask(me, stack.pa, 16)?,
                "non-DMA memory counted as DMA memory",
            )?;
            ensure(!ask(rogue, dma.pa, 16)?, "another task owns our DMA memory")
        });
        ok &= case("isolation_phys_owned_needs_capability", || {
            rogue_faults(PHYS_QUERY, &[])
        });
        ok &= case("isolation_lookup_outside_slots", || {
            // The supervisor is not in our slots: we cannot even name it.
            ensure(
                sys_lookup_slot("supervisor").is_none(),
                "looked up a task outside task-slots",
            )
        });
        ok &= case("isolation_zero_length_buffers", || {
            // Empty text, names, message and reply buffer: empty, never a
            // null slice in the kernel, and nobody is faulted.
            sys_log(&[]);
            ensure(
                sys_region_info("").is_none(),
                "an empty region name matched",
            )?;
            ensure(sys_lookup_slot("").is_none(), "an empty task name matched")?;
            let rogue = sys_lookup_slot("test-echo").ok_or("no rogue slot")?;
            let (rc, n) = sys_send(rogue, ECHO, &[], &mut [], &[]);
            ensure(rc == 0 && n == 0, "an empty echo failed")
        });
        ok &= case("isolation_lease_wrap_faults_lender", || {
            // The rogue lends [2^64 - 16, +64) and the owner reads it at
            // offset 32: base + offset wraps. The lender named memory it
            // does not own: it is faulted; the owner goes on serving.
            let owner = sys_lookup_slot("test-smmu-owner").ok_or("no owner slot")?;
            let mut m = [0u8; 20];
            m[..4].copy_from_slice(&owner.0.to_le_bytes());
            m[4..12].copy_from_slice(&(u64::MAX - 15).to_le_bytes());
            m[12..].copy_from_slice(&32u64.to_le_bytes());
            rogue_faults(LEND_RAW, &m)?;
            let (idr0, _) = owner_idr0()?;
            ensure(idr0 & 0b11 == 0b11, "the owner stopped serving")
        });
        ok &= case("isolation_restart_zeroes_memory", || {
            let stamp = || -> Result<u8, &'static str> {
                let rogue = sys_lookup_slot("test-echo").ok_or("no rogue slot")?;
                let mut r = [0u8; 1];
                let (rc, n) = sys_send(rogue, MEM_STAMP, &[], &mut r, &[]);
                ensure(rc == 0 && n == 1, "the rogue did not stamp")?;
                ensure(r[0] != 2, "the rogue has no scratch region")?;
                Ok(r[0])
            };
            stamp()?;
            ensure(stamp()? == 0, "a stamp does not stay (the check is blind)")?;
            rogue_faults(PANIC, &[])?;
            ensure(
                stamp()? == 1,
                "the restarted rogue sees its previous incarnation's memory",
            )
        });
        ok &= case("isolation_refresh_outside_slots", || {
            let owner = sys_lookup_slot("test-smmu-owner").ok_or("no owner slot")?;
            let rogue = sys_lookup_slot("test-echo").ok_or("no rogue slot")?;
            let mut r = [0u8; 4];
            let (rc, n) = sys_send(rogue, REFRESH, &owner.0.to_le_bytes(), &mut r, &[]);
            ensure(
                rc == 0 && n == 4 && TaskId(u32::from_le_bytes(r)) == owner,
                "refresh of a task in the slots failed",
            )?;
            rogue_faults(REFRESH, &SUPERVISOR.0.to_le_bytes())
        });
        ok &= case("isolation_post_interrupt_bits_refused", || {
            let owner = sys_lookup_slot("test-smmu-owner").ok_or("no owner slot")?;
            let rogue = sys_lookup_slot("test-echo").ok_or("no rogue slot")?;
            let post = |bits: u32| {
                let mut m = [0u8; 8];
                m[..4].copy_from_slice(&owner.0.to_le_bytes());
                m[4..].copy_from_slice(&bits.to_le_bytes());
                m
            };
            let mut r = [0u8; 4];
            let (rc, n) = sys_send(rogue, POST_TO, &post(0x8), &mut r, &[]);
            ensure(
                rc == 0 && n == 4 && u32::from_le_bytes(r) == 0,
                "an ordinary post to the owner failed",
            )?;
            // 0x4 is the owner's interrupt (smmu-gerror): a fake interrupt.
            rogue_faults(POST_TO, &post(0x4 | 0x8))
        });
        ok &= case("isolation_irq_control_foreign_bits", || {
            // The rogue owns no interrupt; 0x4 is the owner's.
            rogue_faults(IRQ_ENABLE, &0x4u32.to_le_bytes())
        });
        // Post-only capability (app.toml `posts`): the rogue may post to
        // this runner (lower priority, its `posts`) but not send to it.
        ok &= case("isolation_post_only_allows_post", || {
            let rogue = sys_lookup_slot("test-echo").ok_or("no rogue slot")?;
            let mut m = [0u8; 8];
            m[..4].copy_from_slice(&own_id().0.to_le_bytes());
            m[4..].copy_from_slice(&POSTED_BIT.to_le_bytes());
            let mut r = [0u8; 4];
            let (rc, n) = sys_send(rogue, POST_TO, &m, &mut r, &[]);
            ensure(
                rc == 0 && n == 4 && u32::from_le_bytes(r) == 0,
                "a post to a `posts` peer failed",
            )?;
            // The bit really arrived.
            let got = sys_recv_notification(POSTED_BIT);
            ensure(got & POSTED_BIT != 0, "the posted bit did not arrive")
        });
        ok &= case("isolation_post_only_send_refused", || {
            // The same peer, by send: a post capability never grants send.
            rogue_faults(SEND_TO, &own_id().0.to_le_bytes())
        });
        ok &= case("isolation_post_outside_lists", || {
            // The supervisor is in neither the rogue's task-slots nor its
            // posts.
            let mut m = [0u8; 8];
            m[..4].copy_from_slice(&SUPERVISOR.0.to_le_bytes());
            m[4..].copy_from_slice(&0x100u32.to_le_bytes());
            rogue_faults(POST_TO, &m)
        });
        // Register windows: the rogue holds the window prq-server has on
        // QEMU (page 1's EVENTQ/PRIQ PROD/CONS; page 1 aliases page 0 and is
        // never mapped). It reads its registers through the kernel, and
        // nothing else: any other index — CR0, STRTAB_BASE are none of its
        // four — faults it, and page 0 keeps its values.
        ok &= case("isolation_reg_window_reads", || {
            let rogue = sys_lookup_slot("test-echo").ok_or("no rogue slot")?;
            let mut r = [0u8; 5];
            let (rc, n) = sys_send(rogue, REG_LOOKUP_READ, b"smmu-queues", &mut r, &[]);
            ensure(rc == 0 && n == 5, "the rogue did not answer")?;
            ensure(r[0] == 4, "the window does not hold 4 registers")?;
            ensure(
                u32::from_le_bytes([r[1], r[2], r[3], r[4]]) == 0,
                "EVENTQ_PROD of a queue nobody enabled is not 0",
            )?;
            // Windows are per task: the name of a peripheral is no window.
            let (rc, n) = sys_send(rogue, REG_LOOKUP_READ, b"smmu-page0", &mut r, &[]);
            ensure(
                rc == 0 && n == 5 && r[0] == 0,
                "a window that is not the rogue's",
            )
        });
        ok &= case("isolation_reg_window_other_register_faults", || {
            let before = owner_cr0_strtab()?;
            // Index 4 is past the window; index 0x20/0x80 would be CR0 /
            // STRTAB_BASE as offsets, and they are not indices either.
            for idx in [4u8, 0x20, 0x80] {
                rogue_faults(REG_WRITE, &[0, idx, 1, 0, 0, 0])?;
            }
            rogue_faults(REG_READ, &[1, 0])?;
            ensure(
                owner_cr0_strtab()? == before,
                "page 0 changed under the rogue's window writes",
            )
        });
        finish(ok)
    }

    /// The notification bit the rogue posts us.
    const POSTED_BIT: u32 = 1 << 20;

    fn own_id() -> TaskId {
        sys_refresh_task_id(TaskId::new(OWN_INDEX, Generation(0)))
    }

    /// This runner's task index in qemu/apps/isolation.toml.
    const OWN_INDEX: usize = 3;

    /// CR0 and STRTAB_BASE (low word) as the owner of page 0 reads them.
    fn owner_cr0_strtab() -> Result<(u32, u32), &'static str> {
        let owner = sys_lookup_slot("test-smmu-owner").ok_or("no owner slot")?;
        let mut r = [0u8; 8];
        let (rc, n) = sys_send(owner, 4, &[], &mut r, &[]);
        ensure(rc == 0 && n == 8, "owner did not answer")?;
        Ok((
            u32::from_le_bytes([r[0], r[1], r[2], r[3]]),
            u32::from_le_bytes([r[4], r[5], r[6], r[7]]),
        ))
    }

    /// Task 0 is the supervisor; it is never restarted, so its generation
    /// stays 0.
    const SUPERVISOR: TaskId = TaskId::new(0, Generation(0));
}

userlib::task_main!(cases::run);
