//! Task state: saved registers, scheduling state, identity.

use crate::config::{PhysSource, RegionDesc, TaskDesc};
use abi::{FaultKind, Generation, TaskId, REGION_DEVICE};

/// Registers saved on every entry to the kernel. The layout is fixed: the
/// exception entry code stores into it by offset (see `arch::aarch64`).
#[derive(Clone, Debug)]
#[repr(C, align(16))]
pub struct SavedState {
    /// x0..x30.
    pub x: [u64; 31],
    pub sp: u64,
    pub pc: u64,
    pub pstate: u64,
    pub fpsr: u64,
    pub fpcr: u64,
    /// q0..q31.
    pub q: [u128; 32],
    /// TPIDR_EL0, the EL0-writable thread pointer: saved and restored on
    /// every kernel entry and exit so no value passes between tasks.
    pub tpidr_el0: u64,
}

impl SavedState {
    pub const ZERO: SavedState = SavedState {
        x: [0; 31],
        sp: 0,
        pc: 0,
        pstate: 0,
        fpsr: 0,
        fpcr: 0,
        q: [0; 32],
        tpidr_el0: 0,
    };

    /// System-call argument `i` (x0..x7) and number (x8).
    pub fn arg(&self, i: usize) -> usize {
        self.x[i] as usize
    }
    pub fn sysnum(&self) -> u32 {
        self.x[8] as u32
    }
    /// Sets system-call result `i` (x0..x7).
    pub fn set_ret(&mut self, i: usize, v: usize) {
        self.x[i] = v as u64;
    }
}

/// Where a task is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    Runnable,
    /// Waiting for `TaskId` to receive its message.
    InSend(TaskId),
    /// Sent to `TaskId`, which has the message; waiting for the reply.
    InReply(TaskId),
    /// Waiting in `recv`; `Some(t)` for a closed receive from `t` only.
    InRecv(Option<TaskId>),
    /// Stopped by a fault until the supervisor restarts it.
    Faulted {
        kind: FaultKind,
        detail: usize,
    },
    /// Not started (app.toml `start = false`) or stopped for good.
    Stopped,
}

impl TaskState {
    pub fn code(&self) -> abi::TaskStateCode {
        use abi::TaskStateCode as C;
        match self {
            TaskState::Runnable => C::Runnable,
            TaskState::InSend(_) => C::InSend,
            TaskState::InReply(_) => C::InReply,
            TaskState::InRecv(_) => C::InRecv,
            TaskState::Faulted { .. } => C::Faulted,
            TaskState::Stopped => C::Stopped,
        }
    }
}

/// One task's kernel-side record.
#[derive(Debug)]
#[repr(C)]
pub struct Task {
    /// First, so the exception entry finds it at the task pointer.
    pub save: SavedState,
    pub state: TaskState,
    pub generation: Generation,
    /// Pending notification bits.
    pub notifications: u32,
    /// Bits the task is waiting for while in `recv`.
    pub notification_mask: u32,
    /// Armed timer: deadline in ms ticks and the bits it posts.
    pub timer_deadline: Option<u64>,
    pub timer_bits: u32,
    /// Translation table base with ASID, for the MMU (0 on the host).
    pub ttbr0: u64,
    /// `task_slots` as a bit set over task indices: the send-time
    /// capability check is one AND.
    pub slot_mask: u64,
    /// Tasks this one may post to: its task-slots and its post-only
    /// `post_slots`. Checked by `post` (and by `refresh_task_id` /
    /// `lookup_slot`, which name a peer); `send` checks `slot_mask` only.
    pub post_mask: u64,
    /// Kernel address of the buffer of the `recv` this task waits in,
    /// checked when it called `recv` (the regions are static).
    pub recv_buf: usize,
    /// Length of that buffer (`recv` takes it in x1, `reply_recv` in x4:
    /// kept here so delivery does not depend on which call is waiting).
    pub recv_len: usize,
    /// `desc.priority`, here so the scheduler reads it without following
    /// `desc`.
    pub priority: u8,
    /// The tasks in `InSend` to this one, a bit per index: what an open
    /// receive looks at (kept by `Kernel::set_state`).
    pub senders: u64,
    /// Region 1 (the stack, where IPC buffers almost always are), copied
    /// from `desc` so the IPC path's range check reads it from here
    /// rather than through `desc` and its region slice. A task with fewer
    /// regions gets an empty one (no range fits it).
    pub r1: Region1,
    /// The other tasks of this one's priority or better, a bit per index
    /// (set by `Kernel::boot`): if none of them is runnable when this one
    /// is woken and the running task blocks, this one is the scheduler's
    /// choice without a scan of the table.
    pub rivals: u64,
    pub desc: &'static TaskDesc,
}

/// A copy of a task's region 1 (see [`Task::r1`]).
#[derive(Copy, Clone, Debug)]
pub struct Region1 {
    pub va: usize,
    pub size: usize,
    /// The kernel address of `va`.
    pub pa: usize,
    pub attributes: u32,
}

impl Region1 {
    const EMPTY: Region1 = Region1 {
        va: 0,
        size: 0,
        pa: 0,
        attributes: 0,
    };
}

impl Task {
    pub fn new(desc: &'static TaskDesc) -> Self {
        Task {
            save: SavedState::ZERO,
            state: TaskState::Stopped,
            generation: Generation(0),
            notifications: 0,
            notification_mask: 0,
            timer_deadline: None,
            timer_bits: 0,
            ttbr0: 0,
            slot_mask: mask_of(desc.task_slots),
            post_mask: mask_of(desc.task_slots) | mask_of(desc.post_slots),
            recv_buf: 0,
            recv_len: 0,
            priority: desc.priority,
            senders: 0,
            rivals: 0,
            r1: desc.regions.get(1).map_or(Region1::EMPTY, |d| Region1 {
                va: d.va,
                size: d.size,
                pa: region_pa(d),
                attributes: d.attributes,
            }),
            desc,
        }
    }

    pub fn is_runnable(&self) -> bool {
        matches!(self.state, TaskState::Runnable)
    }

    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Finds a region of this task that wholly contains `[va, va + len)`
    /// with all of `attrs`, and returns the address the kernel uses to reach
    /// `va` (physical = kernel address, identity-mapped). Device memory is
    /// never a valid IPC buffer, nor is a region the task maps
    /// non-cacheable (`cache = "nc"`): the kernel reaches memory through
    /// its cacheable identity map, and copying through that alias would
    /// leave the bytes in a cache the task's non-cacheable view never
    /// reads (a mismatched-attribute alias). Such memory is for devices;
    /// IPC uses other buffers.
    #[inline(always)]
    pub fn translate(&self, va: usize, len: usize, attrs: u32) -> Option<usize> {
        let end = va.checked_add(len)?;
        // Fast path: IPC buffers are almost always on the stack (region 1
        // by construction).
        if let Some(d) = self.desc.regions.get(1) {
            if va >= d.va && end <= d.va + d.size && d.attributes & attrs == attrs {
                return Some(region_pa(d) + (va - d.va));
            }
        }
        self.desc.regions.iter().find_map(|r: &RegionDesc| {
            let r_end = r.va.checked_add(r.size)?;
            if va >= r.va
                && end <= r_end
                && r.attributes & attrs == attrs
                && r.attributes & (REGION_DEVICE | abi::REGION_UNCACHED) == 0
            {
                Some(region_pa(r) + (va - r.va))
            } else {
                None
            }
        })
    }
}

/// A list of task indices as a bit set (indices past `MAX_TASKS` name no
/// task and grant nothing).
fn mask_of(slots: &[u16]) -> u64 {
    slots
        .iter()
        .filter(|&&i| (i as usize) < abi::MAX_TASKS)
        .fold(0, |m, &i| m | 1 << i)
}

/// Whether the kernel zeroes region `r` when its task (re)starts: every
/// writable memory region — stack, data and the app.toml `memory` regions —
/// so nothing of a previous incarnation survives into the next. Text is
/// read-only (it is the task's image) and MMIO is the device's.
pub fn zeroed_on_restart(r: &RegionDesc) -> bool {
    r.attributes & abi::REGION_WRITE != 0 && r.attributes & REGION_DEVICE == 0
}

/// Whether some task's writable memory region shares physical memory with
/// any other region (of any task, itself included). The build never does
/// this: the only memory tasks share is the text of instances of one crate,
/// which is read-only. The kernel's copies between tasks rely on it (a
/// destination is writable, so it never overlaps the source), and so does
/// isolation; boot refuses a table that breaks it. Device regions are the
/// device's, not memory, and are not checked.
pub fn writable_memory_shared(descs: &[TaskDesc]) -> bool {
    let memory = |r: &RegionDesc| r.attributes & REGION_DEVICE == 0 && r.size > 0;
    descs.iter().enumerate().any(|(i, d)| {
        d.regions.iter().enumerate().any(|(j, w)| {
            memory(w)
                && w.attributes & abi::REGION_WRITE != 0
                && descs.iter().enumerate().any(|(k, e)| {
                    e.regions.iter().enumerate().any(|(l, r)| {
                        (k, l) != (i, j)
                            && memory(r)
                            && region_pa(r) < region_pa(w) + w.size
                            && region_pa(w) < region_pa(r) + r.size
                    })
                })
        })
    })
}

/// Physical (= kernel-reachable) address of a region's start.
pub fn region_pa(r: &RegionDesc) -> usize {
    match r.phys {
        PhysSource::Fixed(pa) => pa,
        PhysSource::Static(p) => p.0 as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two instances sharing read-only text are fine; a writable region
    /// shared with anything (text made writable, or two tasks' data on the
    /// same memory) is refused.
    #[test]
    fn only_read_only_memory_is_shared() {
        const RW: u32 = abi::REGION_READ | abi::REGION_WRITE;
        const RX: u32 = abi::REGION_READ | abi::REGION_EXECUTE;
        let region = |name, pa, attributes| RegionDesc {
            name,
            va: 0x1000,
            size: 0x2000,
            attributes,
            phys: PhysSource::Fixed(pa),
        };
        let task = |regions: &'static [RegionDesc]| TaskDesc {
            name: "t",
            priority: 1,
            entry: 0x1000,
            stack_top: 0x3000,
            task_slots: &[],
            post_slots: &[],
            reg_windows: &[],
            regions,
            capabilities: 0,
            start: true,
            vm_guest: None,
        };
        let leak =
            |r: Vec<RegionDesc>| -> &'static [RegionDesc] { Box::leak(r.into_boxed_slice()) };
        let shared_text = [
            task(leak(vec![
                region("text", 0x10_0000, RX),
                region("data", 0x20_0000, RW),
            ])),
            task(leak(vec![
                region("text", 0x10_0000, RX),
                region("data", 0x30_0000, RW),
            ])),
        ];
        assert!(!writable_memory_shared(&shared_text));
        let writable_text = [
            task(leak(vec![region(
                "text",
                0x10_0000,
                RX | abi::REGION_WRITE,
            )])),
            task(leak(vec![region("text", 0x10_0000, RX)])),
        ];
        assert!(writable_memory_shared(&writable_text));
        // Overlapping by one page, across tasks.
        let data = [
            task(leak(vec![region("data", 0x20_0000, RW)])),
            task(leak(vec![region("data", 0x20_1000, RW)])),
        ];
        assert!(writable_memory_shared(&data));
        // Within one task too.
        let own = [task(leak(vec![
            region("a", 0x20_0000, RW),
            region("b", 0x20_1000, RX),
        ]))];
        assert!(writable_memory_shared(&own));
        // A device window two tasks both map is the device's, not memory.
        let dev = [
            task(leak(vec![region("d", 0x900_0000, RW | REGION_DEVICE)])),
            task(leak(vec![region("d", 0x900_0000, RW | REGION_DEVICE)])),
        ];
        assert!(!writable_memory_shared(&dev));
    }

    /// The kernel copies through its cacheable identity map: a region the
    /// task maps non-cacheable (`cache = "nc"`) is never an IPC buffer,
    /// like device memory; the same range cacheable is.
    #[test]
    fn kern_translate_refuses_uncached_and_device_regions() {
        const RW: u32 = abi::REGION_READ | abi::REGION_WRITE;
        let region = |name, va, attributes| RegionDesc {
            name,
            va,
            size: 0x1000,
            attributes,
            phys: PhysSource::Fixed(0x4100_0000 + va),
        };
        let regions: &'static [RegionDesc] = Box::leak(Box::new([
            region("text", 0x1000, abi::REGION_READ | abi::REGION_EXECUTE),
            region("stack", 0x2000, RW),
            region("data", 0x3000, RW),
            region("nc", 0x20_0000, RW | abi::REGION_UNCACHED),
            region("dev", 0x40_0000, RW | REGION_DEVICE),
            region("wb", 0x60_0000, RW | abi::REGION_DMA),
        ]));
        let desc: &'static TaskDesc = Box::leak(Box::new(TaskDesc {
            name: "t",
            priority: 1,
            entry: 0x1000,
            stack_top: 0x3000,
            task_slots: &[],
            post_slots: &[],
            reg_windows: &[],
            regions,
            capabilities: 0,
            start: true,
            vm_guest: None,
        }));
        let t = Task::new(desc);
        assert_eq!(t.translate(0x20_0010, 8, abi::REGION_READ), None);
        assert_eq!(t.translate(0x40_0010, 8, abi::REGION_READ), None);
        assert_eq!(
            t.translate(0x60_0010, 8, abi::REGION_READ),
            Some(0x4100_0000 + 0x60_0010)
        );
        assert_eq!(
            t.translate(0x2010, 8, abi::REGION_WRITE),
            Some(0x4100_0000 + 0x2010)
        );
    }
}
