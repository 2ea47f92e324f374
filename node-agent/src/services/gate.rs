//! Which service each swappable slot holds, as calls see it: a service in a
//! slot takes calls only while the slot holds it.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use protocol::SlotSpec;

use super::Services;

/// One slot's state as calls see it: which service is loaded and ready.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) slot: String,
    pub(super) can_host: Vec<String>,
    pub(super) loaded: Mutex<Option<String>>,
}

impl Gate {
    pub(super) fn loaded(&self) -> MutexGuard<'_, Option<String>> {
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Services {
    /// The slots as registration announces them, each with the service it
    /// holds now.
    pub fn slot_specs(&self) -> Vec<SlotSpec> {
        self.gates
            .values()
            .map(|g| SlotSpec {
                name: g.slot.clone(),
                can_host: g.can_host.clone(),
                loaded: g.loaded().clone(),
            })
            .collect()
    }

    /// The service slot `slot` holds now, if any (`None` too for no such
    /// slot).
    pub fn loaded(&self, slot: &str) -> Option<String> {
        self.gates.get(slot).and_then(|g| g.loaded().clone())
    }

    /// Empties `slot` so that no new call of its service starts, unless that
    /// service has calls in flight; returns what it held.
    pub(crate) fn unload(&self, slot: &str) -> Result<Option<String>, String> {
        let Some(gate) = self.gates.get(slot) else {
            return Ok(None);
        };
        let mut loaded = gate.loaded();
        if let Some(service) = loaded.as_deref()
            && let Some(entry) = self.entries.get(service)
        {
            let n = entry.in_flight.load(Ordering::Acquire);
            if n > 0 {
                let calls = if n == 1 { "call" } else { "calls" };
                return Err(format!(
                    "service {service} has {n} {calls} in flight in slot {slot}"
                ));
            }
        }
        Ok(loaded.take())
    }

    /// Marks `service` loaded and ready in `slot`: its calls are taken from
    /// now on.
    pub(crate) fn set_loaded(&self, slot: &str, service: &str) {
        if let Some(gate) = self.gates.get(slot) {
            *gate.loaded() = Some(service.to_string());
        }
    }

    /// Empties `slot` if it holds `service` (whatever its calls in flight:
    /// its process is gone); says whether it did.
    pub(crate) fn unload_if(&self, slot: &str, service: &str) -> bool {
        let Some(gate) = self.gates.get(slot) else {
            return false;
        };
        let mut loaded = gate.loaded();
        if loaded.as_deref() == Some(service) {
            *loaded = None;
            true
        } else {
            false
        }
    }
}
