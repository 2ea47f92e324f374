//! A node's swappable slots as the core sees them: what each holds, which
//! swap is under way, cooldowns and recent failures. The swap planner
//! (`schedule/swap.rs`) plans over it, starts swaps and applies the agents'
//! reports.
//!
//! Invariant: a slot has at most one swap under way, and while it has one the
//! service it held is marked unloaded, so no call is dispatched to it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol::{SlotSpec, SlotView};

/// All slots of one node, and when the node last started a swap.
#[derive(Debug)]
pub struct NodeSlots {
    /// The slots, in registration order.
    pub slots: Vec<SlotState>,
    /// When the node's latest swap started (its cooldown runs from there).
    pub last_swap: Option<Instant>,
    /// Least time between two swaps on this node.
    pub cooldown: Duration,
}

/// One slot.
#[derive(Debug, Clone)]
pub struct SlotState {
    /// Slot name, e.g. `gpu0`.
    pub name: String,
    /// Services the slot can load.
    pub can_host: Vec<String>,
    /// The service loaded and ready, if any.
    pub loaded: Option<String>,
    /// When `loaded` was last set.
    pub loaded_at: Instant,
    /// Whether a swap (rather than the agent's start-up) loaded it: only
    /// then does the service's own cooldown keep it in place.
    pub loaded_by_swap: bool,
    /// The swap under way, if any.
    pub swapping: Option<PendingSwap>,
    /// Services this slot failed to load, and until when it must not try
    /// them again.
    pub failed_until: BTreeMap<String, Instant>,
    /// Swaps finished here, ok or not.
    pub swaps_total: u64,
}

/// A swap the gateway asked for and awaits the report of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSwap {
    /// The gateway's id for it.
    pub swap_id: u64,
    /// The service being loaded.
    pub to: String,
    /// The service the slot held before, if any.
    pub from: Option<String>,
    /// When the request was sent.
    pub started: Instant,
}

impl NodeSlots {
    /// The slots a node registered, as loaded at `now`.
    pub fn new(specs: &[SlotSpec], cooldown: Duration, now: Instant) -> Self {
        Self {
            slots: specs
                .iter()
                .map(|s| SlotState {
                    name: s.name.clone(),
                    can_host: s.can_host.clone(),
                    loaded: s.loaded.clone(),
                    loaded_at: now,
                    loaded_by_swap: false,
                    swapping: None,
                    failed_until: BTreeMap::new(),
                    swaps_total: 0,
                })
                .collect(),
            last_swap: None,
            cooldown,
        }
    }

    /// Time left of the node's cooldown at `now` (zero when it may swap).
    pub fn cooldown_left(&self, now: Instant) -> Duration {
        self.last_swap
            .map(|t| (t + self.cooldown).saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// The slot named `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut SlotState> {
        self.slots.iter_mut().find(|s| s.name == name)
    }

    /// The slot with swap `swap_id` under way.
    pub fn by_swap_mut(&mut self, swap_id: u64) -> Option<&mut SlotState> {
        self.slots
            .iter_mut()
            .find(|s| s.swapping.as_ref().is_some_and(|p| p.swap_id == swap_id))
    }

    /// Views for `switchyard nodes`.
    pub fn views(&self, now: Instant) -> Vec<SlotView> {
        let cooldown = millis(self.cooldown_left(now));
        self.slots
            .iter()
            .map(|s| {
                let mut failed: Vec<(String, u64)> = s
                    .failed_until
                    .iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(name, until)| (name.clone(), millis(until.duration_since(now))))
                    .collect();
                failed.sort();
                SlotView {
                    name: s.name.clone(),
                    can_host: s.can_host.clone(),
                    loaded: s.loaded.clone(),
                    swapping_to: s.swapping.as_ref().map(|p| p.to.clone()),
                    cooldown_left_ms: cooldown,
                    failed,
                    swaps_total: s.swaps_total,
                }
            })
            .collect()
    }
}

impl SlotState {
    /// Whether the slot may try to load `service` at `now` (no recent failure).
    pub fn may_try(&self, service: &str, now: Instant) -> bool {
        self.failed_until
            .get(service)
            .is_none_or(|until| *until <= now)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SlotSpec {
        SlotSpec {
            name: "gpu0".into(),
            can_host: vec!["a".into(), "b".into()],
            loaded: Some("a".into()),
        }
    }

    #[test]
    fn cooldown_runs_from_the_last_swap() {
        let t0 = Instant::now();
        let mut slots = NodeSlots::new(&[spec()], Duration::from_secs(60), t0);
        assert_eq!(slots.cooldown_left(t0), Duration::ZERO);
        slots.last_swap = Some(t0);
        assert_eq!(
            slots.cooldown_left(t0 + Duration::from_secs(20)),
            Duration::from_secs(40)
        );
        assert_eq!(
            slots.cooldown_left(t0 + Duration::from_secs(61)),
            Duration::ZERO
        );
    }

    #[test]
    fn failures_block_a_service_until_they_expire() {
        let t0 = Instant::now();
        let mut slots = NodeSlots::new(&[spec()], Duration::from_secs(60), t0);
        let slot = slots.get_mut("gpu0").expect("slot");
        slot.failed_until
            .insert("b".into(), t0 + Duration::from_secs(5));
        assert!(!slot.may_try("b", t0));
        assert!(slot.may_try("a", t0));
        assert!(slot.may_try("b", t0 + Duration::from_secs(5)));
        let views = slots.views(t0);
        assert_eq!(views[0].failed, vec![("b".to_string(), 5000)]);
        assert_eq!(views[0].loaded.as_deref(), Some("a"));
    }
}
