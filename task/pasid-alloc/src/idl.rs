//! The interface (`idl/pasid-alloc.idol.ron`, crate `pasid-alloc-api`) on
//! a [`PasidTable`]: [`Server`] implements the generated trait, and
//! [`serve`] is the task's receive loop.
//!
//! Callers are checked by role (the generated `check_caller` hook):
//! `alloc`, `free`, `usage` by VMs (tasks that own a stream in app.toml's
//! `[[streams]]`, or are named `vmm-frontend[-…]`); `owner_of`,
//! `next_defunct`, `mark_drained` by iommu-server; `owner_died` by the
//! iommu-server once it has reclaimed a dead VM (it learns of deaths from the
//! supervisor's log; the supervisor never sends).
//!
//! When a PASID becomes defunct, iommu-server is told by a notification
//! ([`DEFUNCT_BIT`]) if this task may post to it (a post-only slot: it
//! ranks above iommu-server, so it has no send slot to it); iommu-server
//! also pulls `next_defunct` when it starts and before each PASID bind, so
//! without the post a defunct PASID waits longer, never returns early.

use crate::table::{Notify, PasidTable};
use pasid_alloc_api::{
    self as api, Pasid, PasidAllocCaller, PasidAllocError as E, PasidHandle, PasidOwner, PasidUsage,
};
use userlib::{RecvMessage, TaskId};

/// The notification bit iommu-server gets when a PASID became defunct
/// (its interrupts use 0x2, 0x4, 0x8; prq-server's responses 0x10).
pub const DEFUNCT_BIT: u32 = 1 << 6;

/// Who may ask what (index = task index).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    /// Bit i: task i is a VM.
    pub vms: u64,
    pub iommu_server: Option<u16>,
    pub supervisor: Option<u16>,
}

/// Names that are never a VM, whatever `[[streams]]` says.
const SYSTEM: &[&str] = &[
    "supervisor",
    "prq-server",
    "pasid-alloc",
    "iommu-server",
    "idle",
];

impl Roles {
    /// From the app's static facts: VMs are the tasks named
    /// `vmm-frontend[-…]` or owning a stream; iommu-server and the
    /// supervisor by name.
    pub fn from_app(streams: &[(u32, u16)], task_names: &[&str]) -> Self {
        let mut r = Roles::default();
        for (i, name) in task_names.iter().enumerate().take(64) {
            let frontend = *name == "vmm-frontend"
                || name
                    .strip_prefix("vmm-frontend")
                    .is_some_and(|rest| rest.starts_with('-'));
            let owns = streams.iter().any(|&(_, vm)| vm as usize == i);
            if !SYSTEM.contains(name) && (frontend || owns) {
                r.vms |= 1 << i;
            }
            if *name == "iommu-server" {
                r.iommu_server = Some(i as u16);
            }
            if *name == "supervisor" {
                r.supervisor = Some(i as u16);
            }
        }
        r
    }

    fn is_vm(&self, t: TaskId) -> bool {
        t.index() < 64 && self.vms & (1 << t.index()) != 0
    }
}

/// The generated server trait on a borrowed table.
pub struct Server<'a, 't> {
    pub table: &'a mut PasidTable<'t>,
    pub roles: Roles,
    /// iommu-server, if this task may post to it.
    notify: Option<TaskId>,
    /// Counter ticks of the last operation's method (decode and reply
    /// excluded; the notification included), for the benchmark.
    pub last_op_instr: u64,
    /// The last operation served (for the benchmark's per-operation
    /// figures).
    pub last_op: Option<api::PasidAllocOp>,
}

impl<'a, 't> Server<'a, 't> {
    pub fn new(table: &'a mut PasidTable<'t>, roles: Roles) -> Self {
        Server {
            table,
            roles,
            notify: userlib::sys_lookup_slot("iommu-server"),
            last_op_instr: 0,
            last_op: None,
        }
    }

    /// Tells iommu-server a PASID is defunct. A dead code means it
    /// restarted: it pulls when it starts, but post its new incarnation
    /// too (a post never blocks).
    fn notify(&mut self, n: Notify) {
        let (Notify::IommuServer, Some(t)) = (n, self.notify) else {
            return;
        };
        if userlib::abi::is_dead_code(userlib::sys_post(t, DEFUNCT_BIT)).is_some() {
            let t = userlib::sys_refresh_task_id(t);
            self.notify = Some(t);
            userlib::sys_post(t, DEFUNCT_BIT);
        }
    }

    fn timed<T>(&mut self, op: api::PasidAllocOp, f: impl FnOnce(&mut Self) -> T) -> T {
        let t0 = crate::now();
        let r = f(self);
        self.last_op_instr = crate::now().wrapping_sub(t0);
        self.last_op = Some(op);
        r
    }
}

impl api::PasidAllocServer for Server<'_, '_> {
    fn notification_mask(&self) -> u32 {
        0
    }

    fn handle_notification(&mut self, _bits: u32) {}

    fn check_caller(&mut self, caller: TaskId, allowed: &'static [PasidAllocCaller]) -> bool {
        let r = self.roles;
        allowed.iter().any(|a| match a {
            PasidAllocCaller::VmmFrontend => r.is_vm(caller),
            PasidAllocCaller::IommuServer => r.iommu_server == Some(caller.index() as u16),
        })
    }

    fn alloc(&mut self, caller: TaskId) -> Result<PasidHandle, E> {
        self.timed(api::PasidAllocOp::Alloc, |s| s.table.alloc(caller))
    }

    fn free(&mut self, caller: TaskId, pasid: PasidHandle) -> Result<(), E> {
        self.timed(api::PasidAllocOp::Free, |s| {
            let n = s.table.free(caller, pasid)?;
            s.notify(n);
            Ok(())
        })
    }

    fn owner_of(&mut self, _caller: TaskId, pasid: Pasid) -> Result<PasidOwner, E> {
        self.timed(api::PasidAllocOp::OwnerOf, |s| s.table.owner_of(pasid.0))
    }

    fn usage(&mut self, caller: TaskId) -> Result<PasidUsage, E> {
        self.timed(api::PasidAllocOp::Usage, |s| Ok(s.table.usage(caller)))
    }

    fn next_defunct(&mut self, _caller: TaskId) -> Result<Option<PasidHandle>, E> {
        self.timed(api::PasidAllocOp::NextDefunct, |s| {
            Ok(s.table.next_defunct())
        })
    }

    fn mark_drained(&mut self, _caller: TaskId, pasid: PasidHandle) -> Result<(), E> {
        self.timed(api::PasidAllocOp::MarkDrained, |s| {
            s.table.mark_drained(pasid)
        })
    }

    fn owner_died(&mut self, _caller: TaskId, vm: TaskId) -> Result<u32, E> {
        self.timed(api::PasidAllocOp::OwnerDied, |s| {
            let (n, notify) = s.table.owner_died(vm);
            s.notify(notify);
            Ok(n)
        })
    }
}

/// The task's receive loop: serves the interface forever.
pub fn serve(table: &mut PasidTable<'_>, roles: Roles) -> ! {
    serve_with(table, roles, |_| {})
}

/// [`serve`], calling `after` with the server after each message (the
/// harness publishes state dumps from there; the image passes nothing).
pub fn serve_with(
    table: &mut PasidTable<'_>,
    roles: Roles,
    mut after: impl FnMut(&Server<'_, '_>),
) -> ! {
    let mut server = Server::new(table, roles);
    let mut buf = [0u8; api::PasidAllocOp::RECV_BUF_SIZE];
    loop {
        let msg: RecvMessage = userlib::sys_recv_open(&mut buf, 0);
        api::dispatch(&mut server, &msg, &buf);
        after(&server);
    }
}
