//! Round-robin across tenants within a priority: which round a new call of
//! a tenant joins.
//!
//! Each priority level counts rounds. A tenant's next call joins the round
//! after its latest call (waiting or served), but never a round already
//! served: `round = max(tenant's latest round + 1, level's served round)`.
//! So a burst of one tenant spreads over rounds 0, 1, 2, ..., and another
//! tenant's first call joins the current round, ahead of the burst's rest.
//! Within a round calls go by arrival. This is the order llm-d's flow
//! control serves flows in (round-robin across flows, FIFO within one).
//!
//! A level is forgotten when its last call leaves; a new one starts at the
//! highest round served at any level, so a call put back (keeping its key)
//! stays ahead of every call that arrived after it was taken out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Per priority level: the rounds of the calls waiting, per tenant.
#[derive(Debug, Default)]
pub(super) struct Rounds {
    levels: HashMap<i32, Level>,
    /// Highest round served (popped) at any level: where a new level starts.
    high_water: u64,
}

#[derive(Debug)]
struct Level {
    /// Round of the latest call served at this level: the current round.
    served: u64,
    /// Calls waiting at this level.
    waiting: usize,
    flows: HashMap<Arc<str>, Flow>,
}

/// One tenant's calls at one level.
#[derive(Debug, Default)]
struct Flow {
    /// Rounds of its waiting calls, with how many wait in each (one, but a
    /// call put back may share a round with a later one).
    waiting: BTreeMap<u64, u32>,
    /// Round of its latest call served.
    served: Option<u64>,
}

impl Flow {
    /// The round of its latest call, waiting or served.
    fn latest(&self) -> Option<u64> {
        let waiting = self.waiting.last_key_value().map(|(round, _)| *round);
        waiting.max(self.served)
    }

    /// Whether the flow tells nothing the level's served round does not:
    /// no call waits and its next round would be the level's anyway.
    fn is_spent(&self, level_served: u64) -> bool {
        self.waiting.is_empty() && self.served.is_none_or(|s| s < level_served)
    }
}

impl Rounds {
    /// The round of a new call of `tenant` at `priority`, counted as
    /// waiting from now on.
    pub(super) fn enter(&mut self, priority: i32, tenant: &Arc<str>) -> u64 {
        let level = self.level(priority);
        let flow = level.flows.entry(tenant.clone()).or_default();
        let round = flow.latest().map_or(0, |r| r + 1).max(level.served);
        *flow.waiting.entry(round).or_default() += 1;
        level.waiting += 1;
        round
    }

    /// Counts a call that keeps its round (one put back) as waiting again.
    pub(super) fn reenter(&mut self, priority: i32, tenant: &Arc<str>, round: u64) {
        let level = self.level(priority);
        let flow = level.flows.entry(tenant.clone()).or_default();
        *flow.waiting.entry(round).or_default() += 1;
        level.waiting += 1;
    }

    /// A waiting call left: dispatched (`served`, its round becomes the
    /// current one) or abandoned.
    pub(super) fn leave(&mut self, priority: i32, tenant: &str, round: u64, served: bool) {
        let Some(level) = self.levels.get_mut(&priority) else {
            return;
        };
        level.waiting = level.waiting.saturating_sub(1);
        if level.waiting == 0 {
            // Nobody waits at this level: nothing to be fair about.
            self.levels.remove(&priority);
            if served {
                self.high_water = self.high_water.max(round);
            }
            return;
        }
        if let Some(flow) = level.flows.get_mut(tenant) {
            if let Some(count) = flow.waiting.get_mut(&round) {
                *count -= 1;
                if *count == 0 {
                    flow.waiting.remove(&round);
                }
            }
            if served {
                flow.served = flow.served.max(Some(round));
            }
        }
        if served && round > level.served {
            level.served = round;
            self.high_water = self.high_water.max(round);
            let current = level.served;
            level.flows.retain(|_, flow| !flow.is_spent(current));
        } else if level
            .flows
            .get(tenant)
            .is_some_and(|f| f.is_spent(level.served))
        {
            level.flows.remove(tenant);
        }
    }

    fn level(&mut self, priority: i32) -> &mut Level {
        let start = self.high_water;
        self.levels.entry(priority).or_insert_with(|| Level {
            served: start,
            waiting: 0,
            flows: HashMap::new(),
        })
    }

    /// Levels and flows remembered (both stay bounded by the calls
    /// waiting).
    pub(super) fn remembered(&self) -> (usize, usize) {
        let flows = self.levels.values().map(|l| l.flows.len()).sum();
        (self.levels.len(), flows)
    }
}
