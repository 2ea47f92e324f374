//! Discounted Thompson sampling over the candidates, independent of
//! WebAssembly.

use policy_sdk::{
    Candidate, Hints, NodeFacts, NodeKey, NodeStates, Outcome, Policy, Request, failure_penalty_ms,
    index_u32,
};

use crate::{Arm, DISCOUNT};

/// The smallest latency taken, ms (`ln 0` is `-inf`).
const MIN_LATENCY_MS: f64 = 0.001;

/// The smallest cost per hour taken by the `cost` objective.
const MIN_COST: f64 = 1e-9;

/// What a pick minimises (hint `optimize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// `latency` (default): the observed latency.
    #[default]
    Latency,
    /// `throughput`: `latency × (in_flight + 1) / max_concurrent`.
    Throughput,
    /// `cost`: `latency × cost_per_hour`.
    Cost,
}

impl Objective {
    /// The objective hint `optimize` names (`latency` when absent).
    ///
    /// # Errors
    /// `bad hint optimize="X": expected latency, throughput or cost`.
    pub fn from_hints(hints: Hints<'_>) -> Result<Self, String> {
        match hints.get_str("optimize") {
            None | Some("latency") => Ok(Self::Latency),
            Some("throughput") => Ok(Self::Throughput),
            Some("cost") => Ok(Self::Cost),
            Some(other) => Err(format!(
                "bad hint optimize={other:?}: expected latency, throughput or cost"
            )),
        }
    }

    /// `ln` of what multiplies the latency for candidate `c`.
    fn log_factor(self, c: &Candidate) -> f64 {
        match self {
            Self::Latency => 0.0,
            Self::Throughput if c.max_concurrent == 0 => f64::INFINITY,
            Self::Throughput => ((f64::from(c.in_flight) + 1.0) / f64::from(c.max_concurrent)).ln(),
            Self::Cost => f64::from(c.cost_per_hour).max(MIN_COST).ln(),
        }
    }
}

/// Discounted Thompson sampling per (service, node) (see the crate docs).
#[derive(Debug, Default, Clone)]
pub struct Adaptive {
    arms: NodeStates<Arm>,
}

impl Adaptive {
    /// A policy with no arms yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The arm of `node` for `service`, unless it has no data (never observed,
    /// or not for 10 minutes before `now_ms`).
    #[must_use]
    pub fn arm(&self, service: &str, node: NodeKey, now_ms: u64) -> Option<&Arm> {
        self.arms.get(service, node, now_ms)
    }

    /// Routes to an arm with no data (at random among them) if any, else to
    /// the lowest posterior draw of the objective.
    ///
    /// # Errors
    /// A malformed `optimize` hint, or `no candidates`.
    pub fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String> {
        let objective = Objective::from_hints(req.hints())?;
        let mut rng = req.rng();
        let (service, now) = (req.service.as_str(), req.now_ms);
        let untried = |c: &&Candidate| self.arm(service, c.node, now).is_none();
        let fresh = candidates.iter().filter(untried).count();
        if fresh > 0 {
            let nth = rng.below(fresh);
            let index = candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| untried(c))
                .nth(nth)
                .map(|(i, _)| i)
                .ok_or("no candidates")?;
            return index_u32(index);
        }
        let mut best: Option<(usize, f64)> = None;
        for (i, c) in candidates.iter().enumerate() {
            let Some(arm) = self.arm(service, c.node, now) else {
                continue;
            };
            let draw = arm.sample(&mut rng) + objective.log_factor(c);
            if best.is_none_or(|(_, b)| draw < b) {
                best = Some((i, draw));
            }
        }
        let (index, _) = best.ok_or("no candidates")?;
        index_u32(index)
    }

    /// Discounts every arm of the service, then adds the call's log-latency
    /// (a failure as the failure penalty) to its node's arm.
    pub fn observe(&mut self, outcome: &Outcome) {
        let (service, now) = (outcome.service.as_str(), outcome.now_ms);
        let latency = f64::from(outcome.latency_ms).max(0.0);
        let sample_ms = if outcome.ok {
            latency
        } else {
            let estimate = self
                .arm(service, outcome.node, now)
                .map_or(0.0, |a| a.mean().exp());
            failure_penalty_ms(latency, estimate)
        };
        let x = sample_ms.max(MIN_LATENCY_MS).ln();
        for arm in self.arms.values_mut(service) {
            arm.discount(DISCOUNT);
        }
        self.arms
            .upsert(service, outcome.node, now, |a| a.add(x), || Arm::new(x));
    }
}

impl Policy for Adaptive {
    const NAME: &'static str = crate::NAME;

    fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String> {
        Adaptive::pick(self, req, candidates, facts)
    }

    fn observe(&mut self, outcome: &Outcome) {
        Adaptive::observe(self, outcome);
    }
}

#[cfg(test)]
mod tests;
