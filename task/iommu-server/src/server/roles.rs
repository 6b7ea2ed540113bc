//! Who may ask what: task names with a role and the role table.

use super::*;

/// Task names with a role in this server's interface (`TASK_NAMES`).
pub mod names {
    pub const SUPERVISOR: &str = "supervisor";
    pub const PRQ_SERVER: &str = "prq-server";
    /// One frontend per VM: `vmm-frontend`, or `vmm-frontend-<anything>`.
    pub const VMM_FRONTEND: &str = "vmm-frontend";
    /// Names that are never a VM, whatever `[[streams]]` says.
    pub const SYSTEM: &[&str] = &[
        "supervisor",
        "prq-server",
        "pasid-alloc",
        "iommu-server",
        "idle",
    ];
}

/// What a task may ask of this server, resolved once from the names (or
/// indices) of [`ServerConfig`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub supervisor: bool,
    pub prq_server: bool,
    pub vm: bool,
}

impl Roles {
    /// The role table for `cfg` (index = task index).
    pub fn table(cfg: &ServerConfig<'_>) -> [Roles; MAX_TASKS] {
        let mut t = [Roles::default(); MAX_TASKS];
        let owns_stream = |i: usize| cfg.streams.iter().any(|&(_, vm)| vm as usize == i);
        if cfg.task_names.is_empty() {
            if let Some(r) = t.get_mut(cfg.supervisor as usize) {
                r.supervisor = true;
            }
            if let Some(r) = cfg.prq_server.and_then(|p| t.get_mut(p as usize)) {
                r.prq_server = true;
            }
            for (i, r) in t.iter_mut().enumerate() {
                r.vm = owns_stream(i);
            }
            return t;
        }
        for (i, (r, name)) in t.iter_mut().zip(cfg.task_names).enumerate() {
            let frontend = *name == names::VMM_FRONTEND
                || name
                    .strip_prefix(names::VMM_FRONTEND)
                    .is_some_and(|rest| rest.starts_with('-'));
            *r = Roles {
                supervisor: *name == names::SUPERVISOR,
                prq_server: *name == names::PRQ_SERVER,
                vm: !names::SYSTEM.contains(name) && (frontend || owns_stream(i)),
            };
        }
        t
    }
}

impl<M: Mmio, D: DmaMemory, W: Waiter> IommuServer<M, D, W> {
    /// What `caller` may ask (see [`Roles::table`]).
    pub fn role(&self, caller: TaskId) -> Roles {
        self.roles.get(caller.index()).copied().unwrap_or_default()
    }

    /// True when `caller` is a VM (the interface's `vmm-frontend`).
    pub fn is_vm(&self, caller: TaskId) -> bool {
        self.role(caller).vm
    }

    /// True when `caller` is the supervisor.
    pub fn is_supervisor(&self, caller: TaskId) -> bool {
        self.role(caller).supervisor
    }

    /// Whether the app has a prq-server task (by name or configuration).
    pub fn has_prq_server_task(&self) -> bool {
        self.roles.iter().any(|r| r.prq_server)
    }

    /// True when `caller` is prq-server.
    pub fn is_prq_server(&self, caller: TaskId) -> bool {
        self.role(caller).prq_server
    }
}
