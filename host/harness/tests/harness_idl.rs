//! Generated IDL code in the harness: the `PasidAlloc` client stub and
//! `run_server` dispatch (task/pasid-alloc-api) over the kernel's IPC, with
//! a decoder built on the generated `dispatch_decode`.
//!
//! The server here is a toy implementation of the generated trait, enough
//! to exercise the stubs; the real allocator is the pasid-alloc task.

use harness::{Action, Decoder, Harness, Probe, TaskSpec, What};
use idl_runtime::IdlError;
use pasid_alloc_api::{
    dispatch_decode, run_server, Pasid, PasidAllocCaller, PasidAllocClient, PasidAllocError,
    PasidAllocServer, PasidGen, PasidHandle, PasidOwner, PasidUsage,
};
use userlib::{sys_lookup_slot, sys_recv_notification, TaskId};

/// Index of the client task below: the only caller the toy admits.
const FRONTEND: usize = 2;

#[derive(Default)]
struct ToyPasids {
    /// (pasid, owner) of live allocations; PASID 0 is never handed out.
    live: Vec<(u32, TaskId)>,
    next: u32,
}

impl PasidAllocServer for ToyPasids {
    fn notification_mask(&self) -> u32 {
        0
    }
    fn handle_notification(&mut self, _bits: u32) {}
    fn check_caller(&mut self, caller: TaskId, allowed: &'static [PasidAllocCaller]) -> bool {
        caller.index() == FRONTEND && allowed.contains(&PasidAllocCaller::VmmFrontend)
    }
    fn alloc(&mut self, caller: TaskId) -> Result<PasidHandle, PasidAllocError> {
        self.next += 1;
        self.live.push((self.next, caller));
        Ok(PasidHandle {
            pasid: Pasid(self.next),
            generation: PasidGen(0),
        })
    }
    fn free(&mut self, caller: TaskId, pasid: PasidHandle) -> Result<(), PasidAllocError> {
        let i = self
            .live
            .iter()
            .position(|(p, _)| *p == pasid.pasid.0)
            .ok_or(PasidAllocError::NotFound)?;
        if self.live[i].1 != caller {
            return Err(PasidAllocError::NotPermitted);
        }
        self.live.remove(i);
        Ok(())
    }
    fn owner_of(&mut self, _caller: TaskId, _pasid: Pasid) -> Result<PasidOwner, PasidAllocError> {
        Ok(PasidOwner::Free)
    }
    fn usage(&mut self, caller: TaskId) -> Result<PasidUsage, PasidAllocError> {
        let allocated = self.live.iter().filter(|(_, o)| *o == caller).count() as u32;
        Ok(PasidUsage {
            allocated,
            defunct: 0,
            quota: 8,
        })
    }
    fn next_defunct(&mut self, _caller: TaskId) -> Result<Option<PasidHandle>, PasidAllocError> {
        Ok(None)
    }
    fn mark_drained(
        &mut self,
        _caller: TaskId,
        _pasid: PasidHandle,
    ) -> Result<(), PasidAllocError> {
        Err(PasidAllocError::NotFound)
    }
    fn owner_died(&mut self, _caller: TaskId, _vm: TaskId) -> Result<u32, PasidAllocError> {
        Ok(0)
    }
}

/// Trace decoding through the generated `dispatch_decode`.
struct PasidAllocDecoder;

impl Decoder for PasidAllocDecoder {
    fn interface(&self) -> &str {
        "PasidAlloc"
    }
    fn operation(&self, op: u16) -> Option<String> {
        let r = pasid_alloc_api::PasidAllocOp::from_u32(op as u32)?;
        Some(format!("{r:?}"))
    }
    fn request(&self, op: u16, bytes: &[u8]) -> Option<String> {
        dispatch_decode(op as u32, bytes, usize::MAX, &[])
            .ok()
            .map(|r| format!("{r:?}"))
    }
    fn reply(&self, _op: u16, code: u32, _bytes: &[u8]) -> Option<String> {
        (code != 0).then(|| format!("Err({})", PasidAllocError::from_code(code).name()))
    }
}

#[test]
fn harness_generated_stubs_across_a_server_restart() {
    let probe = Probe::new();
    let p = probe.clone();
    let frontend = move || {
        let c = PasidAllocClient::new(sys_lookup_slot("pasid-alloc").unwrap_or(TaskId::KERNEL));
        let a = c.alloc();
        p.push(format!("alloc {:?}", a.map(|h| h.pasid.0)));
        p.push(format!("alloc {:?}", c.alloc().map(|h| h.pasid.0)));
        if let Ok(h) = a {
            p.push(format!("free {:?}", c.free(h)));
            p.push(format!("free again {:?}", c.free(h)));
        }
        p.push(format!("usage {:?}", c.usage().map(|u| u.allocated)));
        // Wait while the test kills and the supervisor restarts the server.
        sys_recv_notification(1);
        // Not idempotent: the stub sees the dead code, refreshes, reports.
        p.push(format!(
            "alloc after restart {:?}",
            c.alloc().map(|h| h.pasid.0)
        ));
        // The refreshed stub reaches the new generation, which starts empty.
        p.push(format!(
            "usage after restart {:?}",
            c.usage().map(|u| u.allocated)
        ));
        p.push(format!(
            "server now generation {}",
            c.task_id().generation().0
        ));
    };
    let r = Harness::new(11)
        .task(TaskSpec::new("pasid-alloc", 1, || {
            run_server(&mut ToyPasids::default())
        }))
        .task(TaskSpec::new("vmm-frontend", 2, frontend).slots(&["pasid-alloc"]))
        .decoder("pasid-alloc", PasidAllocDecoder)
        // Far beyond the run: both happen when everything is blocked.
        .at_step(1_000, Action::kill("pasid-alloc"))
        .at_step(1_001, Action::Post("vmm-frontend".into(), 1))
        .run();
    r.expect_idle();
    assert_eq!(
        probe.get(),
        [
            "alloc Ok(1)",
            "alloc Ok(2)",
            "free Ok(())",
            "free again Err(NotFound)",
            "usage Ok(1)",
            "alloc after restart Err(ServerDied)",
            "usage after restart Ok(0)",
            "server now generation 1",
        ]
    );
    let text = r.trace.text();
    assert!(text.contains("PasidAlloc.Free(Free(FreeArgs"), "{text}");
    assert!(text.contains("-> Err(NotFound)"), "{text}");
    assert!(r
        .trace
        .whats()
        .any(|w| matches!(w, What::Restart { by: Some(_), .. })));
}
