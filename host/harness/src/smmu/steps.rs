//! Recording what VMs did: each step of a VM's script with what the SMMU
//! saw meanwhile.

use super::*;
use smmuv3::CommandKind;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

/// One step of a VM's script: what it asked, what it got, and everything
/// the SMMU saw meanwhile (nothing else runs between a VM's request and
/// the server's reply while the model completes commands at the doorbell).
#[derive(Clone, Debug)]
pub struct Step {
    pub label: String,
    /// The result, as `Debug` text.
    pub result: String,
    pub events: Vec<BusEvent>,
}

impl Step {
    /// The commands the SMMU consumed, decoded.
    pub fn commands(&self) -> Vec<CommandKind> {
        self.events
            .iter()
            .filter_map(|e| match e {
                BusEvent::Command(c) => c.kind.ok(),
                _ => None,
            })
            .collect()
    }

    /// STE stores of the step: (sid, word, value).
    pub fn ste_writes(&self) -> Vec<(u32, usize, u64)> {
        self.events
            .iter()
            .filter_map(|e| match *e {
                BusEvent::SteWrite { sid, word, value } => Some((sid, word, value)),
                _ => None,
            })
            .collect()
    }

    /// The commands and STE stores as trace notes, in order.
    pub fn notes(&self) -> Vec<String> {
        self.events.iter().map(describe_event).collect()
    }
}

/// A VM's record of its steps, read by the test body afterwards (assert
/// there, not in task code: a panic in task code is a task fault).
#[derive(Clone, Default)]
pub struct Steps(Arc<Mutex<Vec<Step>>>);

impl Steps {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<Step>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` (a request, a DMA), recording its result and the bus
    /// events it caused under `label`.
    pub fn run<T: Debug>(&self, bus: &Bus, label: &str, f: impl FnOnce() -> T) -> T {
        let mark = bus.mark();
        let r = f();
        let step = Step {
            label: label.to_string(),
            result: format!("{r:?}"),
            events: bus.since(mark),
        };
        self.lock().push(step);
        r
    }

    /// [`Steps::run`] for a step whose result only the record needs.
    pub fn record<T: Debug>(&self, bus: &Bus, label: &str, f: impl FnOnce() -> T) {
        self.run(bus, label, f);
    }

    pub fn all(&self) -> Vec<Step> {
        self.lock().clone()
    }

    /// The step called `label` (the first, if several).
    pub fn get(&self, label: &str) -> Step {
        let all = self.all();
        match all.iter().find(|s| s.label == label) {
            Some(s) => s.clone(),
            None => panic!(
                "no step {label:?}; steps: {:?}",
                all.iter().map(|s| &s.label).collect::<Vec<_>>()
            ),
        }
    }
}
