//! Types shared by the kernel, the tasks and the host harness.
//!
//! Everything here is part of the system-call ABI: changing a number here is
//! changing the contract between kernel and tasks, so every value is spelled
//! out rather than derived.

#![no_std]

/// Identity of a task: an index into the static task table plus a generation
/// that the kernel bumps every time the task is restarted.
///
/// Layout (32 bits): index in the low `INDEX_BITS` (6: [`MAX_TASKS`] = 64,
/// the width of the kernel's slot masks), generation in the 26 bits above.
/// A message addressed to an old generation is answered with
/// [`dead_code`]`(current generation)` so the sender learns the server
/// restarted and can refresh its id.
///
/// Generations never wrap: the kernel refuses to restart a task whose
/// generation is [`Generation::LAST`] ([`RC_GENERATIONS_EXHAUSTED`]), so a
/// `TaskId` names one incarnation for the life of the machine
/// (docs/kernel.md, "Generations").
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct TaskId(pub u32);

impl TaskId {
    pub const INDEX_BITS: u32 = 6;
    pub const INDEX_MASK: u32 = (1 << Self::INDEX_BITS) - 1;
    pub const GEN_BITS: u32 = 32 - Self::INDEX_BITS;
    pub const GEN_MASK: u32 = (1 << Self::GEN_BITS) - 1;
    /// The sender id reported by `recv` when a notification, not a message,
    /// woke the receiver. (Index 63 with an all-ones generation: above
    /// [`Generation::LAST`], so no incarnation ever has this id.)
    pub const KERNEL: TaskId = TaskId(0xFFFF_FFFF);
    /// `recv` with this as the only allowed sender is an open receive.
    /// (Index 62, all-ones generation: never an incarnation either.)
    pub const ANY: TaskId = TaskId(0xFFFF_FFFE);

    pub const fn new(index: usize, generation: Generation) -> Self {
        TaskId(
            (index as u32 & Self::INDEX_MASK)
                | ((generation.0 & Self::GEN_MASK) << Self::INDEX_BITS),
        )
    }
    pub const fn index(self) -> usize {
        (self.0 & Self::INDEX_MASK) as usize
    }
    pub const fn generation(self) -> Generation {
        Generation(self.0 >> Self::INDEX_BITS)
    }
    /// Same task, other generation.
    pub const fn with_generation(self, g: Generation) -> Self {
        Self::new(self.index(), g)
    }
}

/// Restart count of a task: 0 for the first incarnation, never wrapping
/// (26 bits; the last one, [`Generation::LAST`], is not restarted again).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Generation(pub u32);

impl Generation {
    /// The last generation a task can have. One below the all-ones value,
    /// which the sentinel ids [`TaskId::KERNEL`] and [`TaskId::ANY`] use.
    pub const LAST: Generation = Generation(TaskId::GEN_MASK - 1);

    /// The next generation, or `None` when the space is exhausted: a
    /// generation is never reused, so a stale id never names a newer
    /// incarnation.
    pub const fn next(self) -> Option<Self> {
        if self.0 >= Self::LAST.0 {
            None
        } else {
            Some(Generation(self.0 + 1))
        }
    }
}

/// Maximum number of tasks in one image (fits `TaskId::INDEX_BITS`, and the
/// kernel's 64-bit slot masks).
pub const MAX_TASKS: usize = 64;

/// Response codes with special meaning. A server's own error codes are small
/// numbers (generated from `idl/`); the kernel reserves the top of the range.
///
/// `0xFC00_0000 | generation` (the top 6 bits set, the whole 26-bit
/// generation below): the peer died; its current generation is in the low
/// 26 bits.
pub const DEAD_CODE_BASE: u32 = 0xFC00_0000;
const DEAD_CODE_MASK: u32 = !TaskId::GEN_MASK;

pub const fn dead_code(g: Generation) -> u32 {
    DEAD_CODE_BASE | (g.0 & TaskId::GEN_MASK)
}

/// Returns the peer's new generation if `code` is a dead code.
pub const fn is_dead_code(code: u32) -> Option<Generation> {
    if code & DEAD_CODE_MASK == DEAD_CODE_BASE {
        Some(Generation(code & TaskId::GEN_MASK))
    } else {
        None
    }
}

/// Success.
pub const RC_OK: u32 = 0;

/// `borrow_*` on a lease index the lender did not provide, or past its end.
pub const RC_BAD_LEASE: u32 = 0xFBFF_FE01;
/// Caller asked for something its capabilities do not allow (task control,
/// shutdown, interrupts it does not own) — returned, not faulted, only for
/// queries; mutating misuse faults the caller.
pub const RC_NOT_PERMITTED: u32 = 0xFBFF_FE02;
/// A region name or task index that does not exist.
pub const RC_NO_SUCH: u32 = 0xFBFF_FE03;
/// `TaskControl::Restart` of a task whose generation is
/// [`Generation::LAST`]: it stays faulted for good (its ids are never
/// reused).
pub const RC_GENERATIONS_EXHAUSTED: u32 = 0xFBFF_FE04;

/// System call numbers, passed in x8. Arguments in x0..x7, results in x0..x7.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Sysnum {
    /// x0 = target TaskId | operation << 32, x1/x2 = message ptr/len,
    /// x3/x4 = reply ptr/len, x5/x6 = lease table ptr/count.
    /// → x0 = response code, x1 = reply length.
    Send = 0,
    /// x0/x1 = buffer ptr/len, x2 = notification mask, x3 = allowed sender
    /// (`TaskId::ANY` for an open receive).
    /// → x0 = 0 or a dead code (closed receive from a dead sender),
    ///   x1 = sender (or `TaskId::KERNEL`), x2 = operation (or notification
    ///   bits), x3 = message length as sent, x4 = reply capacity,
    ///   x5 = lease count.
    Recv = 1,
    /// x0 = TaskId of the caller being answered, x1 = code, x2/x3 = ptr/len.
    Reply = 2,
    /// x0 = TaskId of the caller, x1 = [`ReplyFaultReason`]. The caller is
    /// faulted: it sent something the server's interface cannot accept.
    ReplyFault = 3,
    /// x0 = lender, x1 = lease index, x2 = offset, x3/x4 = dest ptr/len.
    /// → x0 = code, x1 = bytes copied.
    BorrowRead = 4,
    /// x0 = lender, x1 = lease index, x2 = offset, x3/x4 = src ptr/len.
    /// → x0 = code, x1 = bytes copied.
    BorrowWrite = 5,
    /// x0 = lender, x1 = lease index → x0 = code, x1 = attributes, x2 = length.
    BorrowInfo = 6,
    /// x0 = target TaskId, x1 = notification bits → x0 = code. The target
    /// must be in the caller's task-slots, and the bits must not be ones the
    /// kernel posts to it (its interrupts' bits; bit 0 of the supervisor):
    /// either faults the caller. A task may post to its task-slots and to
    /// its post-only peers (app.toml `posts`), which it cannot send to.
    Post = 7,
    /// x0 = notification mask (of interrupts this task owns), x1 = 1 enable /
    /// 0 disable.
    IrqControl = 8,
    /// x0 = 1 to arm / 0 to disarm, x1 = deadline in ms ticks, x2 = bits.
    SetTimer = 9,
    /// → x0 = now (ms ticks), x1 = deadline, x2 = armed, x3 = bits.
    GetTimer = 10,
    /// x0/x1 = message ptr/len. Does not return: the task is faulted.
    Panic = 11,
    /// x0 = TaskId → x0 = the same task with its current generation. Only
    /// the caller itself or a task in its task-slots (else the caller is
    /// faulted, `SlotViolation`).
    RefreshTaskId = 12,
    /// x0/x1 = text ptr/len. The kernel console prints it with the task name.
    Log = 13,
    /// x0/x1 = region name ptr/len → x0 = code, x1 = virtual address,
    /// x2 = physical address, x3 = size, x4 = region attributes.
    RegionInfo = 14,
    /// Task control (supervisor capability). x0 = [`TaskControl`] op, x1 = task index.
    /// → x0 = code, x1.. = op-specific results.
    TaskControl = 15,
    /// x0 = exit status. Stops the machine (capability `shutdown`).
    Shutdown = 16,
    /// x0/x1 = task name ptr/len → x0 = code, x1 = TaskId (current
    /// generation). Finds only tasks in the caller's `task-slots`: a task
    /// can name exactly the peers it may talk to.
    LookupSlot = 17,
    /// x0 = TaskId, x1 = physical address, x2 = length → x0 = code, x1 = 1
    /// if that task's DMA-capable memory regions cover the whole range
    /// (capability `memory-query`). Lets the IOMMU driver refuse a VM that
    /// maps memory it does not own.
    PhysOwned = 18,
    /// x0/x1 = register window name ptr/len → x0 = code, x1 = window
    /// index, x2 = number of registers in it. Finds only the caller's own
    /// windows (app.toml `registers`).
    RegLookup = 19,
    /// x0 = window index, x1 = register index → x0 = code, x1 = the
    /// 32-bit value the kernel read from that register. A window or index
    /// the caller does not have faults it (`NotPermitted`).
    RegRead = 20,
    /// x0 = window index, x1 = register index, x2 = 32-bit value → x0 =
    /// code. The kernel writes the register for the caller; a window or
    /// index it does not have faults it (`NotPermitted`) and writes
    /// nothing. The window's registers are never mapped into the task, so
    /// this is the only way it reaches them (docs/kernel.md).
    RegWrite = 21,
    /// `Reply` then `Recv` in one kernel entry (the server loop's
    /// "answer this caller, wait for the next", as seL4's ReplyRecv):
    /// x0 = TaskId of the caller being answered | code << 32, x1/x2 =
    /// reply ptr/len; x3/x4 = receive buffer ptr/len, x5 = notification
    /// mask, x6 = allowed sender. Exactly `Reply` followed by `Recv` with
    /// these arguments (same checks, same faults: a reply the kernel
    /// refuses faults the caller before it receives); returns what `Recv`
    /// returns.
    ReplyRecv = 22,
}

impl Sysnum {
    pub const COUNT: u32 = 23;
    pub fn from_u32(v: u32) -> Option<Sysnum> {
        use Sysnum::*;
        Some(match v {
            0 => Send,
            1 => Recv,
            2 => Reply,
            3 => ReplyFault,
            4 => BorrowRead,
            5 => BorrowWrite,
            6 => BorrowInfo,
            7 => Post,
            8 => IrqControl,
            9 => SetTimer,
            10 => GetTimer,
            11 => Panic,
            12 => RefreshTaskId,
            13 => Log,
            14 => RegionInfo,
            15 => TaskControl,
            16 => Shutdown,
            17 => LookupSlot,
            18 => PhysOwned,
            19 => RegLookup,
            20 => RegRead,
            21 => RegWrite,
            22 => ReplyRecv,
            _ => return None,
        })
    }
}

/// Operations of [`Sysnum::TaskControl`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum TaskControl {
    /// → x1 = state ([`TaskStateCode`]), x2 = generation, x3 = fault kind
    /// ([`FaultKind`] as u32, 0 when not faulted), x4 = fault detail.
    Status = 0,
    /// Restart the task: new generation, fresh data, entry point. A task
    /// in [`Generation::LAST`] is not restarted: code
    /// [`RC_GENERATIONS_EXHAUSTED`], the task stays as it is.
    Restart = 1,
    /// → x1 = index of the next faulted task at or after x1, or code NO_SUCH.
    NextFaulted = 2,
}

/// Task scheduling state as reported to the supervisor.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum TaskStateCode {
    Runnable = 0,
    InSend = 1,
    InReply = 2,
    InRecv = 3,
    Faulted = 4,
    Stopped = 5,
}

/// Why the kernel stopped a task. Reported to the supervisor.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FaultKind {
    None = 0,
    /// Data abort: detail = faulting address.
    MemoryAccess = 1,
    /// Instruction abort: detail = faulting address.
    InstructionAccess = 2,
    /// Undefined instruction or other synchronous exception; detail = ESR.
    IllegalInstruction = 3,
    /// The task called `panic`.
    Panic = 4,
    /// A syscall argument named memory the task does not own, or was out of
    /// range; detail = the address or value.
    BadSyscallArgs = 5,
    /// Unknown syscall number; detail = the number.
    BadSyscall = 6,
    /// Sent, posted or named (`refresh_task_id`) a task that is not in its
    /// `task-slots`; detail = target index.
    SlotViolation = 7,
    /// A server answered the task's message with reply-fault; detail =
    /// [`ReplyFaultReason`].
    FromServer = 8,
    /// Used a capability it was not given: task control, shutdown or
    /// memory query (detail = syscall number); interrupts it does not own
    /// (detail = the mask); a post of bits the kernel reserves for the
    /// target (detail = the refused bits).
    NotPermitted = 9,
    /// A lease it lent pointed at memory it does not own; detail = address.
    BadLease = 10,
    /// Alignment or stack fault; detail = ESR.
    Alignment = 11,
    /// An SError (asynchronous external abort) taken while this task ran,
    /// charged to it because it holds device MMIO (docs/kernel.md, "SError");
    /// detail = ESR.
    SError = 12,
}

impl FaultKind {
    pub fn from_u32(v: u32) -> Option<FaultKind> {
        use FaultKind::*;
        Some(match v {
            0 => None,
            1 => MemoryAccess,
            2 => InstructionAccess,
            3 => IllegalInstruction,
            4 => Panic,
            5 => BadSyscallArgs,
            6 => BadSyscall,
            7 => SlotViolation,
            8 => FromServer,
            9 => NotPermitted,
            10 => BadLease,
            11 => Alignment,
            12 => SError,
            _ => return Option::None,
        })
    }
}

/// Why a server refused a message outright (reply-fault).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReplyFaultReason {
    UndefinedOperation = 0,
    BadMessageSize = 1,
    BadMessageContents = 2,
    ReplyBufferTooSmall = 3,
    BadLeases = 4,
    AccessViolation = 5,
}

impl ReplyFaultReason {
    pub fn from_u32(v: u32) -> Option<Self> {
        use ReplyFaultReason::*;
        Some(match v {
            0 => UndefinedOperation,
            1 => BadMessageSize,
            2 => BadMessageContents,
            3 => ReplyBufferTooSmall,
            4 => BadLeases,
            5 => AccessViolation,
            _ => return None,
        })
    }
}

/// Lease attributes.
pub const LEASE_READ: u32 = 1 << 0;
pub const LEASE_WRITE: u32 = 1 << 1;

/// One entry of the lease table a sender passes with `send`. The kernel reads
/// it from the sender's memory when the server borrows, so a sender cannot
/// change it under the server's feet without it being its own memory it
/// corrupts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct LeaseDesc {
    pub attributes: u32,
    pub _reserved: u32,
    pub base: u64,
    pub len: u64,
}

/// Maximum leases per message.
pub const MAX_LEASES: usize = 8;
/// Maximum message and reply size in bytes: a bound the kernel copies
/// through without a heap.
pub const MAX_MESSAGE: usize = 1024;

/// Region attributes, as reported by `region_info` and used by the kernel's
/// table.
pub const REGION_READ: u32 = 1 << 0;
pub const REGION_WRITE: u32 = 1 << 1;
pub const REGION_EXECUTE: u32 = 1 << 2;
pub const REGION_DEVICE: u32 = 1 << 3;
/// Memory that a DMA master may be told about (its physical address is
/// meaningful to hardware).
pub const REGION_DMA: u32 = 1 << 4;
/// Normal memory mapped non-cacheable (for non-coherent DMA masters).
pub const REGION_UNCACHED: u32 = 1 << 5;

/// The notification bit every task's supervisor receives when a task faults.
pub const SUPERVISOR_FAULT_BIT: u32 = 1 << 0;

/// Layout of a task's virtual address space. Every task is linked at the same
/// addresses (one linker script); the kernel maps each to its own physical
/// memory with its own translation table and ASID.
pub mod layout {
    /// Text, read-only data and the load image of `.data`.
    pub const TASK_TEXT: usize = 0x20_0000_0000;
    /// `.data`, `.bss`, then the stack growing down from the end.
    pub const TASK_DATA: usize = 0x20_0020_0000;
    /// Other regions (MMIO, DMA memory) follow from here, each aligned to 2 MiB.
    pub const TASK_REGIONS: usize = 0x20_0040_0000;
    /// End of the window a task may use (one level-2 table).
    pub const TASK_END: usize = 0x20_4000_0000;
    /// Largest text or data image.
    pub const MAX_IMAGE: usize = 0x20_0000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_round_trip() {
        for idx in [0usize, 1, 17, 63] {
            for g in [
                0u32,
                1,
                63,
                64,
                65,
                1 << 20,
                Generation::LAST.0 - 1,
                Generation::LAST.0,
            ] {
                let id = TaskId::new(idx, Generation(g));
                assert_eq!(id.index(), idx);
                assert_eq!(id.generation(), Generation(g));
                assert_ne!(id, TaskId::KERNEL);
                assert_ne!(id, TaskId::ANY);
            }
        }
        // 64 restarts no longer come back to the same id (the old 6-bit wrap).
        assert_ne!(
            TaskId::new(5, Generation(64)),
            TaskId::new(5, Generation(0))
        );
    }

    #[test]
    fn generations_never_wrap() {
        assert_eq!(Generation(0).next(), Some(Generation(1)));
        assert_eq!(Generation(63).next(), Some(Generation(64)));
        assert_eq!(
            Generation(Generation::LAST.0 - 1).next(),
            Some(Generation::LAST)
        );
        assert_eq!(Generation::LAST.next(), None);
        assert_eq!(Generation(TaskId::GEN_MASK).next(), None);
    }

    #[test]
    fn dead_codes() {
        for g in [0, 5, 255, 256, 1 << 20, Generation::LAST.0] {
            assert_eq!(is_dead_code(dead_code(Generation(g))), Some(Generation(g)));
        }
        for rc in [
            RC_BAD_LEASE,
            RC_NOT_PERMITTED,
            RC_NO_SUCH,
            RC_GENERATIONS_EXHAUSTED,
        ] {
            assert_eq!(is_dead_code(rc), None);
        }
        assert_eq!(is_dead_code(0), None);
        assert_eq!(is_dead_code(RC_BAD_LEASE), None);
        for n in 0..Sysnum::COUNT {
            assert_eq!(Sysnum::from_u32(n).map(|s| s as u32), Some(n));
        }
        assert_eq!(Sysnum::from_u32(Sysnum::COUNT), None);
    }
}
