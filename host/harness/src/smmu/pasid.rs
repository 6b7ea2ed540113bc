//! pasid-alloc: the real task over a table sized by the rig, and the I3
//! check on its messages.

use super::*;
use crate::What;
use crate::{Harness, TaskSpec};
use idl_runtime::decode_fixed_reply;
use pasid_alloc::{Config as PasidConfig, Entry as PasidEntry, PasidTable};
use pasid_alloc_api::{PasidAllocError, PasidHandle};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use userlib::TaskId;

/// Static configuration of the pasid-alloc task (what app.toml's
/// `[pasids]` and xtask give the image's).
#[derive(Clone)]
pub struct PasidSetup {
    /// The space: PASIDs `1 .. 2^bits`.
    pub bits: u8,
    pub quota: u32,
    /// PASIDs at the head of the free list, in order ([`PasidConfig::first`]).
    pub first: Vec<u32>,
    pub streams: Vec<(u32, u16)>,
    pub task_names: Vec<String>,
    /// Where the task publishes its state dump after each message, when
    /// asked ([`PasidState::enable`]).
    pub state: PasidState,
}

/// pasid-alloc's full state dump (`PasidTable::dump`), published by the
/// task after each message it handled once enabled: a test reads it before
/// and after a refused request. Off by default (a 2^20 table is large).
#[derive(Clone, Default)]
pub struct PasidState {
    dump: Arc<Mutex<Option<String>>>,
    history: Arc<Mutex<Vec<String>>>,
    pub(super) on: Arc<std::sync::atomic::AtomicBool>,
}

impl PasidState {
    pub fn enable(&self) {
        self.on.store(true, Ordering::SeqCst);
    }

    /// The state after the last message pasid-alloc handled.
    pub fn get(&self) -> Option<String> {
        self.dump.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every dump published, in order (one per message handled).
    pub fn history(&self) -> Vec<String> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn publish(&self, s: &pasid_alloc::Server<'_, '_>) {
        if self.on.load(Ordering::SeqCst) {
            let d = format!("{:?}", s.table.dump());
            if let Err(e) = s.table.check() {
                panic!("pasid-alloc's table is inconsistent: {e}\n{d}");
            }
            self.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(d.clone());
            *self.dump.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        }
    }
}

/// The pasid-alloc task: a table of `2^bits` words (on the heap here; on
/// the task's stack in the image), the app's roles from its names and
/// streams, then the library's receive loop (`pasid_alloc::serve_with`,
/// what the image's `main.rs` runs, plus the state dump).
pub fn pasid_alloc_task(setup: PasidSetup) -> impl Fn() + Send + Sync + 'static {
    move || {
        let mut storage = vec![PasidEntry::default(); PasidTable::entries(setup.bits)];
        let cfg = PasidConfig {
            bits: setup.bits,
            quota: setup.quota,
            first: &setup.first,
        };
        let mut table = match PasidTable::new(&mut storage, &cfg) {
            Ok(t) => t,
            Err(e) => panic!("pasid-alloc: bad configuration: {e:?}"),
        };
        let names: Vec<&str> = setup.task_names.iter().map(String::as_str).collect();
        let roles = pasid_alloc::Roles::from_app(&setup.streams, &names);
        let state = setup.state.clone();
        pasid_alloc::serve_with(&mut table, roles, move |s| state.publish(s))
    }
}

/// Adds the real pasid-alloc task to a machine, as every rig runs it: it
/// ranks above iommu-server and may only post to it; its requests decode
/// in traces; I3 is checked at the end of the run.
pub fn with_pasid_alloc(h: Harness, setup: PasidSetup) -> Harness {
    h.task(
        TaskSpec::new("pasid-alloc", PASID_ALLOC_PRIORITY, pasid_alloc_task(setup))
            .posts(&["iommu-server"]),
    )
    .decoder("pasid-alloc", PasidAllocDecoder)
    .end_check(|r| check_i3(&r.trace))
}

/// I3, checked on a finished run's trace: no PASID is handed out again
/// (an `alloc` reply) after it was given up (a successful `free`, or an
/// `owner_died` of its holder) until iommu-server's `mark_drained` of it
/// succeeded; and every reuse carries a newer generation. Only what the
/// tasks exchanged is used, not pasid-alloc's own state.
pub fn check_i3(trace: &crate::Trace) -> Result<(), String> {
    use pasid_alloc_api::{dispatch_decode, PasidAllocRequest as R};
    let Some(server) = trace.index_of("pasid-alloc") else {
        return Ok(());
    };
    // PASID → (holder, generation, awaiting drain).
    let mut held: BTreeMap<u32, (TaskId, u32, bool)> = BTreeMap::new();
    let mut last_gen: BTreeMap<u32, u32> = BTreeMap::new();
    // Client index → its request in flight.
    let mut pending: BTreeMap<usize, R> = BTreeMap::new();
    for (step, w) in trace.whats().enumerate() {
        let done = match w {
            What::Message {
                from,
                to,
                op,
                bytes,
                ..
            } if to.index() == server => {
                if let Ok(r) = dispatch_decode(*op as u32, bytes, usize::MAX, &[]) {
                    pending.insert(from.index(), r);
                }
                continue;
            }
            What::Reply {
                from,
                to,
                code,
                bytes,
                ..
            } if from.index() == server => (*to, *code, Some(bytes)),
            What::ReplyDropped { from, to, code } if from.index() == server => (*to, *code, None),
            // A restarted pasid-alloc starts from an empty table (every
            // PASID free in generation 0): what it hands out from then on
            // is checked afresh; iommu-server removes the binds made under
            // the old incarnation before it asks the new one anything
            // (`IommuServer::pasid_alloc_seen`).
            What::Restart { task, .. } if task.index() == server => {
                held.clear();
                last_gen.clear();
                pending.clear();
                continue;
            }
            _ => continue,
        };
        let (client, code, bytes) = done;
        let Some(req) = pending.remove(&client.index()) else {
            continue;
        };
        if code != 0 {
            continue;
        }
        match req {
            R::Alloc(_) => {
                let Some(Ok(h)) =
                    bytes.map(|b| decode_fixed_reply::<PasidHandle, PasidAllocError>(code, b))
                else {
                    continue;
                };
                let (p, g) = (h.pasid.0, h.generation.0);
                if let Some(&(_, old, drain)) = held.get(&p) {
                    return Err(format!(
                        "event {step}: PASID {p:#x} handed out (generation {g}) while {} (generation {old})",
                        if drain { "awaiting its drain" } else { "still allocated" }
                    ));
                }
                if let Some(&old) = last_gen.get(&p) {
                    if g <= old {
                        return Err(format!(
                            "event {step}: PASID {p:#x} reused in generation {g}, not newer than {old}"
                        ));
                    }
                }
                last_gen.insert(p, g);
                held.insert(p, (client, g, false));
            }
            R::Free(a) => {
                if let Some(e) = held.get_mut(&a.pasid.pasid.0) {
                    e.2 = true;
                }
            }
            R::OwnerDied(a) => {
                // That incarnation and every older one of the task
                // (generations never wrap: pasid-alloc's rule).
                let gone =
                    |o: &TaskId| o.index() == a.vm.index() && o.generation() <= a.vm.generation();
                for e in held.values_mut().filter(|e| gone(&e.0)) {
                    e.2 = true;
                }
            }
            R::MarkDrained(a) => {
                let p = a.pasid.pasid.0;
                match held.get(&p) {
                    Some(&(_, g, true)) if g == a.pasid.generation.0 => {
                        held.remove(&p);
                    }
                    other => {
                        return Err(format!(
                            "event {step}: mark_drained of PASID {p:#x} accepted while {other:?}"
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
