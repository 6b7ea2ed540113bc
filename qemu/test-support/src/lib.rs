//! Shared by the test tasks that run inside QEMU test images. A test case
//! reports `TEST <name> ok` or `TEST <name> FAIL <why>` on the console;
//! `cargo xtask test` matches those lines against the image's
//! `[expect] cases`, so a case that never reports fails.

#![cfg_attr(target_os = "none", no_std)]

use userlib::log;

/// Outcome of one case: Err carries a short reason.
pub type Outcome = Result<(), &'static str>;

/// Runs and reports one case; returns whether it passed.
pub fn case(name: &str, f: impl FnOnce() -> Outcome) -> bool {
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

/// Fails the case with `why` unless `cond` holds.
pub fn ensure(cond: bool, why: &'static str) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(why)
    }
}

/// Stops the machine: status 0 if everything passed.
pub fn finish(all_passed: bool) -> ! {
    log!(
        "tests finished: {}",
        if all_passed { "all passed" } else { "FAILURES" }
    );
    userlib::sys_shutdown(if all_passed { 0 } else { 1 })
}

/// Notification bit the test tasks use for their timer.
pub const TIMER_BIT: u32 = 1 << 31;

/// One edu DMA of `len` bytes between its buffer and `iova` (`to_ram`:
/// buffer → `iova`). edu finishes 100 ms of virtual time after the start:
/// the task sleeps that long (under `-icount sleep=off` sleeping costs no
/// wall time), then polls every 10 ms, half a second at most.
pub fn edu_dma(edu: &edu::Edu, iova: u64, len: usize, to_ram: bool) -> Outcome {
    let mut polls = 0u32;
    edu.dma(iova, len, to_ram, || {
        polls += 1;
        userlib::sleep_for(if polls == 1 { 100 } else { 10 }, TIMER_BIT);
        polls <= 51
    })
    .map_err(|e| match e {
        edu::EduError::TooLong => "edu DMA longer than its buffer",
        _ => "edu DMA never completed",
    })
}

/// Operations of the `test-echo` server.
pub mod echo {
    // EL0-visible system registers (kernel arch isolation tests; numbered
    // from 40, clear of the general ops below).
    /// Replies TPIDR_EL0 and TPIDRRO_EL0 as two u64 LE.
    pub const TLS_READ: u16 = 40;
    /// Sets TPIDR_EL0 to message[0..8] LE, then replies.
    pub const TLS_WRITE: u16 = 41;
    /// Reads the PMU cycle counter (PMCCNTR_EL0): must fault.
    pub const PMU_READ: u16 = 42;
    /// Reads the EL0 physical timer control (CNTP_CTL_EL0): must fault.
    pub const PHYS_TIMER_READ: u16 = 43;
    /// Reads the physical counter (CNTPCT_EL0): must fault.
    pub const PHYS_COUNTER_READ: u16 = 44;
    /// Writes the debug communication channel (DBGDTRTX_EL0): must fault.
    pub const DCC_WRITE: u16 = 45;
    /// Reads the EL0 virtual timer control (CNTV_CTL_EL0): must fault.
    pub const VIRT_TIMER_READ: u16 = 46;

    pub const ECHO: u16 = 1;
    /// Reads lease 0 entirely; replies the byte sum as u32 LE.
    pub const LEASE_SUM: u16 = 2;
    /// Fills lease 0 with message[0]; replies the count as u32 LE.
    pub const LEASE_FILL: u16 = 3;
    /// Panics (the supervisor restarts it).
    pub const PANIC: u16 = 4;
    /// Tries to write lease 0; replies the borrow result code as u32 LE.
    pub const LEASE_WRITE_ATTEMPT: u16 = 5;
    /// Replies, then receives once only from the same sender; answers that
    /// message with [1] if it came from that sender (it must).
    pub const CLOSED_NEXT: u16 = 6;
    /// Replies with `n` bytes (message[0..2] LE) of 0x5A.
    pub const REPLY_BYTES: u16 = 7;
    /// Touches memory at the address in message[0..8] LE (isolation tests).
    pub const TOUCH: u16 = 8;
    /// Sends to the task index in message[0..2] (outside its slots).
    pub const SEND_TO: u16 = 9;
    /// Fills every FP/SIMD register with its own pattern, then replies.
    pub const FP_CLOBBER: u16 = 10;
    /// Recurses without bound (stack overflow tests).
    pub const RECURSE: u16 = 11;
    /// Calls `phys_owned` (it lacks the `memory-query` capability).
    pub const PHYS_QUERY: u16 = 12;
    /// Reply-faults the caller, then replies to it anyway (the kernel must
    /// drop the reply to the dead caller; the server goes on serving).
    pub const FAULT_THEN_REPLY: u16 = 13;
    /// Executes an undefined instruction.
    pub const UNDEFINED: u16 = 14;
    /// Makes a system call whose message pointer is kernel memory.
    pub const BAD_SYSCALL_ARGS: u16 = 15;
    /// Makes a system call with an unknown number.
    pub const BAD_SYSCALL: u16 = 16;
    /// Posts bits message[2..6] LE to the task id message[0..2] LE; replies
    /// the post's code as u32 LE.
    pub const POST_TO: u16 = 17;
    /// `refresh_task_id` of the id message[0..2] LE; replies the answer as
    /// u16 LE.
    pub const REFRESH: u16 = 18;
    /// `irq_control(mask = message[0..4] LE, enable)`; replies [].
    pub const IRQ_ENABLE: u16 = 19;
    /// Checks that its `scratch` memory region is all zero, then fills it
    /// with 0xA5; replies [1] if it was zero.
    pub const MEM_STAMP: u16 = 20;
    /// Sends op `test-smmu-owner`'s BORROW_AT to the id message[0..2] LE
    /// with one read lease of base message[2..10] LE, length 64, and the
    /// offset message[10..18] LE as the message; replies the code it got.
    pub const LEND_RAW: u16 = 21;
    /// Looks up its register window named message[..] and reads register
    /// index 0 of it; replies [found as u8, value u32 LE].
    pub const REG_LOOKUP_READ: u16 = 22;
    /// `reg_read(window = message[0] , index = message[1])`; replies u32 LE.
    pub const REG_READ: u16 = 23;
    /// `reg_write(window = message[0], index = message[1], value =
    /// message[2..6] LE)`; replies [].
    pub const REG_WRITE: u16 = 24;
}

/// Operations of `test-smmu-owner` (ops 1 and 2 are documented there).
pub mod owner {
    /// Reads 16 bytes of the sender's lease 0 at the offset message[0..8]
    /// LE; replies the borrow's code as u32 LE (0 when it copied).
    pub const BORROW_AT: u16 = 3;
}
