//! The command queue: batches of at most [`BATCH_MAX`] commands, each
//! batch closed by one CMD_SYNC, completion by polling CMDQ_CONS with a
//! bounded wait, and recovery from command errors.
//!
//! Command errors (IHI 0070 §7.1): consumption stops with CMDQ_CONS
//! pointing at the erroneous entry, CMDQ_CONS.ERR saying why, and
//! GERROR.CMDQ_ERR active; acknowledging CMDQ_ERR in GERRORN (that bit
//! alone — the others are the GERROR handler's) restarts consumption *at*
//! that entry, which is re-fetched. Per error:
//! - **CERROR_ILL**: the command cannot be consumed. It is recorded (its
//!   index in the caller's slice, opcode, error), overwritten with a
//!   CMD_SYNC without completion signal, and acknowledged: the SMMU skips
//!   it and runs the rest of the batch. The caller gets
//!   [`IssueFailure::Refused`].
//! - **CERROR_ABT**: an external abort on the *fetch*; the command itself
//!   is fine, so it is not touched: acknowledging retries the fetch. An ERR
//!   value the architecture never reports for an error (CERROR_NONE,
//!   reserved) is handled the same way: only CERROR_ILL skips a command. After
//!   [`FETCH_RETRIES`] aborts in one batch the queue is given up on for
//!   this batch: PROD is moved back to CONS (permitted while the error is
//!   active), the error acknowledged, and the caller gets
//!   [`IssueFailure::Incomplete`] — nothing after CONS ran.
//! - **CERROR_ATC_INV_SYNC**: the CMD_SYNC at CONS could not complete one
//!   or more earlier CMD_ATC_INV (ATS invalidation timeout); it has not
//!   been consumed and its guarantees are not met. It stays in place and
//!   is acknowledged, so its re-fetch completes everything else it covers
//!   (the TLBIs before it); the ATC invalidation is not guaranteed, so the
//!   caller gets [`IssueFailure::Incomplete`] and must keep the
//!   invalidation owed (and may retry it).

use crate::dma::DmaMemory;
use crate::error::Error;
use crate::pages::Pages;
use smmuv3::regs::{self, offset, GERROR};
use smmuv3::{CmdqError, Command, Mmio, QueuePtr, SyncCs, CMDQ_ENTRY_BYTES};

/// Most commands per CMD_SYNC.
pub const BATCH_MAX: usize = 64;
/// CERROR_ABT fetch retries per batch before the batch is abandoned.
pub const FETCH_RETRIES: u32 = 4;
/// CERROR_ATC_INV_SYNC errors of one batch's CMD_SYNC before it is
/// abandoned.
pub const ATC_SYNC_RETRIES: u32 = 2;
/// log2 of the command queue entries used (256 entries, one 4 KiB page),
/// capped by IDR1.CMDQS.
pub const CMDQ_LOG2: u32 = 8;

/// How the driver waits for the SMMU: called with the number of polls
/// made so far; returns false to give up (the wait then fails with
/// [`Error::Timeout`]). The image spins briefly, then sleeps on the
/// cmd-sync interrupt with a timer; the harness spins a bounded number of
/// times.
pub trait Waiter {
    fn pause(&mut self, attempt: u32) -> bool;
}

impl<W: Waiter + ?Sized> Waiter for &mut W {
    fn pause(&mut self, attempt: u32) -> bool {
        (**self).pause(attempt)
    }
}

/// The waiter the task uses, in the image and in the harness alike: a few
/// polls (QEMU completes commands at the CMDQ_PROD write), then sleep on the
/// cmd-sync interrupt with a 1 ms timer; give up after ~100 ms.
pub struct SyscallWaiter {
    /// Notification bit of the cmd-sync interrupt.
    pub cmd_sync_bit: u32,
    /// Notification bit of this task's timer.
    pub timer_bit: u32,
}

impl SyscallWaiter {
    const SPINS: u32 = 32;
    const SLEEPS: u32 = 100;
}

impl Waiter for SyscallWaiter {
    fn pause(&mut self, attempt: u32) -> bool {
        if attempt < Self::SPINS {
            core::hint::spin_loop();
            return true;
        }
        if attempt >= Self::SPINS + Self::SLEEPS {
            return false;
        }
        // A cmd-sync edge that arrived earlier is latched: waking for it
        // only costs another poll.
        userlib::sys_irq_control(self.cmd_sync_bit, true);
        userlib::sys_set_timer(Some(userlib::sys_get_timer() + 1), self.timer_bit);
        userlib::sys_recv_notification(self.cmd_sync_bit | self.timer_bit);
        true
    }
}

/// A command the SMMU refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdFault {
    /// Index in the slice passed to [`CmdQueue::issue`] (equal to the
    /// slice's length when the batch's own CMD_SYNC failed).
    pub index: usize,
    /// Raw opcode of the refused entry.
    pub opcode: u8,
    /// CMDQ_CONS.ERR.
    pub err: CmdqError,
}

/// Why [`CmdQueue::issue`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueFailure {
    /// The SMMU did not consume the batch within the wait bound.
    Timeout,
    /// The SMMU refused a command (CERROR_ILL; skipped, the rest of the
    /// batch ran).
    Refused(CmdFault),
    /// The batch's guarantees are not met: its fetch kept aborting
    /// (CERROR_ABT; the rest of the batch was discarded) or its CMD_SYNC
    /// could not complete an ATC invalidation (CERROR_ATC_INV_SYNC).
    Incomplete(CmdFault),
}

impl From<IssueFailure> for Error {
    fn from(f: IssueFailure) -> Error {
        match f {
            IssueFailure::Timeout => Error::Timeout,
            IssueFailure::Refused(_) => Error::HardwareError,
            // An ATS invalidation completion timeout.
            IssueFailure::Incomplete(CmdFault {
                err: CmdqError::AtcInvSync,
                ..
            }) => Error::Timeout,
            IssueFailure::Incomplete(_) => Error::HardwareError,
        }
    }
}

/// Counters for `info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CmdqStats {
    /// Commands issued (not counting the SYNCs).
    pub commands: u32,
    /// CMD_SYNCs issued (= batches).
    pub syncs: u32,
    /// Refused commands recovered from (CERROR_ILL).
    pub recovered: u32,
    /// Command fetches that aborted (CERROR_ABT) and were retried.
    pub fetch_aborts: u32,
    /// CMD_SYNCs that failed to complete an ATC_INV (CERROR_ATC_INV_SYNC).
    pub atc_sync_errors: u32,
    /// The last refused command.
    pub last_fault: Option<CmdFault>,
    /// Waits that timed out.
    pub timeouts: u32,
}

/// The queue: its memory and the producer index (the consumer index is
/// the SMMU's, read from CMDQ_CONS).
#[derive(Clone, Debug)]
pub struct CmdQueue {
    pub pages: Pages,
    pub log2size: u32,
    prod: QueuePtr,
    /// Completion signal of every CMD_SYNC.
    pub sync_cs: SyncCs,
    pub stats: CmdqStats,
}

impl CmdQueue {
    /// A queue of 2^log2size entries in `pages` (PROD starts at 0).
    pub fn new(pages: Pages, log2size: u32, sync_cs: SyncCs) -> Self {
        Self {
            pages,
            log2size,
            prod: QueuePtr::new(log2size),
            sync_cs,
            stats: CmdqStats::default(),
        }
    }

    /// The CMDQ_BASE value.
    pub fn base_value(&self) -> u64 {
        regs::queue_base(self.pages.pa, self.log2size, true)
    }

    /// Commands per batch (the queue must hold a batch and its SYNC).
    pub fn batch_max(&self) -> usize {
        BATCH_MAX.min((1usize << self.log2size) - 1)
    }

    fn write_entry(&self, mem: &impl DmaMemory, at: QueuePtr, cmd: &Command) {
        let off = self.pages.off + at.entry_offset(CMDQ_ENTRY_BYTES);
        mem.write64(off, cmd.word(0));
        mem.write64(off + 8, cmd.word(1));
    }

    fn read_opcode(&self, mem: &impl DmaMemory, at: QueuePtr) -> u8 {
        mem.read64(self.pages.off + at.entry_offset(CMDQ_ENTRY_BYTES)) as u8
    }

    fn cons(&self, mmio: &impl Mmio) -> QueuePtr {
        QueuePtr::from_raw(self.log2size, mmio.read32(offset::CMDQ_CONS))
    }

    /// Issues `cmds` in batches of at most [`CmdQueue::batch_max`]
    /// commands, each followed by a CMD_SYNC, and waits for each batch.
    /// An empty slice issues one lone CMD_SYNC. On a refused command the
    /// remaining commands still run; the first refusal is returned.
    pub fn issue(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl DmaMemory,
        waiter: &mut impl Waiter,
        cmds: &[Command],
    ) -> Result<(), IssueFailure> {
        let mut first_fault = None;
        let mut start = 0;
        loop {
            let n = (cmds.len() - start).min(self.batch_max());
            if let Err(f) = self.batch(mmio, mem, waiter, &cmds[start..start + n], start) {
                match f {
                    IssueFailure::Refused(_) => {
                        first_fault.get_or_insert(f);
                    }
                    // The queue state is unknown or the batch's
                    // guarantees are not met: later batches must not run
                    // as if they were.
                    IssueFailure::Timeout | IssueFailure::Incomplete(_) => return Err(f),
                }
            }
            start += n;
            if start >= cmds.len() {
                break;
            }
        }
        match first_fault {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    fn batch(
        &mut self,
        mmio: &impl Mmio,
        mem: &impl DmaMemory,
        waiter: &mut impl Waiter,
        cmds: &[Command],
        base_index: usize,
    ) -> Result<(), IssueFailure> {
        // Room for the batch and its SYNC (normally the queue is empty:
        // every batch is waited for).
        let need = cmds.len() as u32 + 1;
        let mut attempt = 0;
        while self.prod.space(self.cons(mmio)) < need {
            if !waiter.pause(attempt) {
                self.stats.timeouts += 1;
                return Err(IssueFailure::Timeout);
            }
            attempt += 1;
        }
        let start = self.prod;
        for c in cmds {
            self.write_entry(mem, self.prod, c);
            self.prod = self.prod.advance(1);
        }
        self.write_entry(mem, self.prod, &Command::sync(self.sync_cs));
        self.prod = self.prod.advance(1);
        self.stats.commands += cmds.len() as u32;
        self.stats.syncs += 1;
        // The entries must be visible before the SMMU sees PROD move.
        mem.publish();
        mmio.write32(offset::CMDQ_PROD, self.prod.raw());

        let mut fault: Option<IssueFailure> = None;
        let mut attempt = 0;
        let mut fetch_aborts = 0;
        let mut atc_errors = 0;
        let cmdq_err = GERROR::CMDQ_ERR.mask << GERROR::CMDQ_ERR.shift;
        loop {
            let gerror = mmio.read32(offset::GERROR);
            let gerrorn = mmio.read32(offset::GERRORN);
            if (gerror ^ gerrorn) & cmdq_err != 0 {
                let raw_cons = mmio.read32(offset::CMDQ_CONS);
                let at = QueuePtr::from_raw(self.log2size, raw_cons);
                // An ERR value the architecture does not give for an
                // error (CERROR_NONE, or reserved) says nothing about the
                // command: only CERROR_ILL may skip one, so such a value is
                // handled as a fetch abort (re-fetched, bounded).
                let err = CmdqError::from_cons(raw_cons).unwrap_or(CmdqError::None);
                let index = base_index + at.distance(start).min(cmds.len() as u32) as usize;
                let c = CmdFault {
                    index,
                    opcode: self.read_opcode(mem, at),
                    err,
                };
                self.stats.last_fault = Some(c);
                let ack = || mmio.write32(offset::GERRORN, gerrorn ^ cmdq_err);
                match err {
                    CmdqError::Abt | CmdqError::None => {
                        // The entry is intact in memory; the fetch failed.
                        // Acknowledging makes the SMMU fetch it again.
                        self.stats.fetch_aborts += 1;
                        fetch_aborts += 1;
                        if fetch_aborts > FETCH_RETRIES {
                            self.abandon(mmio, at);
                            ack();
                            return Err(IssueFailure::Incomplete(c));
                        }
                    }
                    CmdqError::AtcInvSync => {
                        // The SYNC stays: re-fetched, it completes the rest
                        // of what it covers; the ATC invalidation is not
                        // guaranteed.
                        self.stats.atc_sync_errors += 1;
                        atc_errors += 1;
                        fault = Some(IssueFailure::Incomplete(c));
                        if atc_errors > ATC_SYNC_RETRIES {
                            self.abandon(mmio, at);
                            ack();
                            return Err(IssueFailure::Incomplete(c));
                        }
                    }
                    CmdqError::Ill => {
                        // Skip it: a harmless SYNC in its place.
                        self.stats.recovered += 1;
                        fault.get_or_insert(IssueFailure::Refused(c));
                        self.write_entry(mem, at, &Command::sync(SyncCs::None));
                        mem.publish();
                    }
                }
                ack();
                attempt = 0;
                continue;
            }
            if self.prod.is_empty(self.cons(mmio)) {
                break;
            }
            if !waiter.pause(attempt) {
                self.stats.timeouts += 1;
                return Err(IssueFailure::Timeout);
            }
            attempt += 1;
        }
        match fault {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// Discards the unconsumed entries from `cons` on: PROD goes back to
    /// CONS, the one case where PROD may move other than forward (while
    /// CMDQ_ERR is active, IHI 0070 §7.1). The caller then acknowledges.
    fn abandon(&mut self, mmio: &impl Mmio, cons: QueuePtr) {
        self.prod = cons;
        mmio.write32(offset::CMDQ_PROD, self.prod.raw());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use smmuv3::{CommandKind, Opcode};

    fn setup() -> (FakeSmmu, HostMem, CmdQueue) {
        let mem = HostMem::new(0x4000_0000, 0x4000);
        let f = FakeSmmu::new(mem.clone());
        let pages = Pages {
            off: 0x1000,
            pa: 0x4000_1000,
            order: 0,
        };
        let q = CmdQueue::new(pages, 4, SyncCs::None); // 16 entries
        f.write64_reg(offset::CMDQ_BASE, q.base_value());
        f.write32_reg(offset::CR0, 0b1000);
        (f, mem, q)
    }

    impl FakeSmmu {
        fn write64_reg(&self, o: usize, v: u64) {
            smmuv3::Mmio::write64(self, o, v)
        }
        fn write32_reg(&self, o: usize, v: u32) {
            smmuv3::Mmio::write32(self, o, v)
        }
    }

    fn tlbis(n: usize) -> std::vec::Vec<Command> {
        (0..n).map(|i| Command::tlbi_nh_asid(1, i as u16)).collect()
    }

    #[test]
    fn batches_close_with_one_sync_each() {
        let (f, mem, mut q) = setup();
        assert_eq!(q.batch_max(), 15);
        let cmds = tlbis(40);
        q.issue(&f, &mem, &mut SpinWaiter, &cmds).unwrap();
        let log = f.take_log();
        // 15 + SYNC, 15 + SYNC, 10 + SYNC, wrapping the 16-entry queue.
        assert_eq!(log.len(), 43);
        let syncs: std::vec::Vec<usize> = log
            .iter()
            .enumerate()
            .filter(|(_, c)| c.opcode() == Ok(Opcode::Sync))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(syncs, [15, 31, 42]);
        assert_eq!(q.stats.syncs, 3);
        assert_eq!(q.stats.commands, 40);
        q.issue(&f, &mem, &mut SpinWaiter, &[]).unwrap();
        assert_eq!(f.take_log().len(), 1, "a lone SYNC");
    }

    #[test]
    fn sixty_four_per_sync_on_a_big_queue() {
        let mem = HostMem::new(0x4000_0000, 0x4000);
        let f = FakeSmmu::new(mem.clone());
        let pages = Pages {
            off: 0,
            pa: 0x4000_0000,
            order: 0,
        };
        let mut q = CmdQueue::new(pages, CMDQ_LOG2, SyncCs::Irq);
        f.write64_reg(offset::CMDQ_BASE, q.base_value());
        f.write32_reg(offset::CR0, 0b1000);
        q.issue(&f, &mem, &mut SpinWaiter, &tlbis(130)).unwrap();
        let log = f.take_log();
        assert_eq!(log.len(), 133);
        assert_eq!(
            log[64].decode(),
            Ok(CommandKind::Sync {
                cs: SyncCs::Irq,
                msi_addr: 0,
                msi_data: 0
            })
        );
        assert_eq!(log[129].opcode(), Ok(Opcode::Sync));
    }

    #[test]
    fn illegal_command_is_skipped_and_reported() {
        let (f, mem, mut q) = setup();
        let mut cmds = tlbis(5);
        cmds[2] = Command::zeroed(); // opcode 0: illegal
        let r = q.issue(&f, &mem, &mut SpinWaiter, &cmds);
        assert_eq!(
            r,
            Err(IssueFailure::Refused(CmdFault {
                index: 2,
                opcode: 0,
                err: CmdqError::Ill
            }))
        );
        let log = f.take_log();
        // The four good commands ran, the bad one became a SYNC.
        let asids: std::vec::Vec<u16> = log
            .iter()
            .filter(|c| c.opcode() == Ok(Opcode::TlbiNhAsid))
            .map(|c| c.asid())
            .collect();
        assert_eq!(asids, [0, 1, 3, 4]);
        assert_eq!(
            f.reg(offset::GERROR),
            f.reg(offset::GERRORN),
            "acknowledged"
        );
        assert_eq!(q.stats.recovered, 1);
        // The queue keeps working.
        q.issue(&f, &mem, &mut SpinWaiter, &tlbis(1)).unwrap();
    }

    #[test]
    fn refused_in_second_batch_reports_slice_index() {
        let (f, mem, mut q) = setup();
        let mut cmds = tlbis(20);
        f.st.borrow_mut().reject.push(Opcode::TlbiNhVa as u8);
        cmds[17] = Command::tlbi_nh_va(1, 1, 0x1000, true);
        match q.issue(&f, &mem, &mut SpinWaiter, &cmds) {
            Err(IssueFailure::Refused(c)) => assert_eq!((c.index, c.opcode), (17, 0x12)),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn stuck_queue_times_out() {
        let (f, mem, mut q) = setup();
        f.st.borrow_mut().stuck = true;
        assert_eq!(
            q.issue(&f, &mem, &mut SpinWaiter, &tlbis(1)),
            Err(IssueFailure::Timeout)
        );
        assert_eq!(Error::from(IssueFailure::Timeout), Error::Timeout);
    }

    #[test]
    fn fetch_abort_is_retried_not_skipped() {
        let (f, mem, mut q) = setup();
        f.st.borrow_mut().fetch_aborts = 2;
        q.issue(&f, &mem, &mut SpinWaiter, &tlbis(3)).unwrap();
        let asids: std::vec::Vec<u16> = f
            .take_log()
            .iter()
            .filter(|c| c.opcode() == Ok(Opcode::TlbiNhAsid))
            .map(|c| c.asid())
            .collect();
        assert_eq!(asids, [0, 1, 2], "every command ran, none was skipped");
        assert_eq!((q.stats.fetch_aborts, q.stats.recovered), (2, 0));
        assert_eq!(f.reg(offset::GERROR), f.reg(offset::GERRORN));
    }

    #[test]
    fn persistent_fetch_abort_abandons_the_batch_and_the_queue_recovers() {
        let (f, mem, mut q) = setup();
        f.st.borrow_mut().fetch_aborts = 1000;
        match q.issue(&f, &mem, &mut SpinWaiter, &tlbis(3)) {
            Err(e @ IssueFailure::Incomplete(c)) => {
                assert_eq!(c.err, CmdqError::Abt);
                assert_eq!(Error::from(e), Error::HardwareError);
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(q.stats.fetch_aborts, FETCH_RETRIES + 1);
        assert!(f.take_log().is_empty(), "nothing ran");
        assert_eq!(
            f.reg(offset::CMDQ_PROD) & 0xfffff,
            f.reg(offset::CMDQ_CONS) & 0xfffff,
            "PROD moved back to CONS"
        );
        f.st.borrow_mut().fetch_aborts = 0;
        q.issue(&f, &mem, &mut SpinWaiter, &tlbis(1)).unwrap();
        assert_eq!(f.take_log().len(), 2);
    }

    #[test]
    fn atc_inv_sync_error_is_reported_and_the_sync_is_not_skipped() {
        let (f, mem, mut q) = setup();
        f.st.borrow_mut().atc_sync_fails = 1;
        let cmds = [
            Command::tlbi_nh_asid(1, 1),
            Command::atc_inv(0x10, None, 0, 52, false),
        ];
        match q.issue(&f, &mem, &mut SpinWaiter, &cmds) {
            Err(e @ IssueFailure::Incomplete(c)) => {
                assert_eq!((c.err, c.index, c.opcode), (CmdqError::AtcInvSync, 2, 0x46));
                assert_eq!(Error::from(e), Error::Timeout);
            }
            r => panic!("{r:?}"),
        }
        let log = f.take_log();
        let ops: std::vec::Vec<_> = log.iter().map(|c| c.opcode().unwrap()).collect();
        // The SYNC stayed a SYNC and was consumed once re-fetched.
        assert_eq!(ops, [Opcode::TlbiNhAsid, Opcode::AtcInv, Opcode::Sync]);
        assert_eq!((q.stats.atc_sync_errors, q.stats.recovered), (1, 0));
        q.issue(&f, &mem, &mut SpinWaiter, &tlbis(1)).unwrap();
    }
}
