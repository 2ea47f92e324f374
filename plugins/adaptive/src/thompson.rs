//! Discounted Thompson sampling over the candidates, independent of
//! WebAssembly.

use policy_sdk::{
    Candidate, Context, Hints, NodeFacts, NodeKey, NodeStates, Outcome, Policy, Request, Scored,
    failure_penalty_ms, fmt_num, order_after, to_score,
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

    /// The hint value naming the objective.
    fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Throughput => "throughput",
            Self::Cost => "cost",
        }
    }
}

/// How [`Adaptive::choose`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// At random among this many candidates whose arm has no data.
    Explore(usize),
    /// The lowest posterior draw.
    Exploit,
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

    /// The one code path of every answer: an arm with no data at random if
    /// any, else the lowest posterior draw (each draw, objective included,
    /// passed to `drew` on the way); the choice and how it was made.
    fn choose(
        &self,
        req: &Request,
        candidates: &[Candidate],
        mut drew: impl FnMut(usize, f64),
    ) -> Result<(usize, How), String> {
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
            return Ok((index, How::Explore(fresh)));
        }
        let mut best: Option<(usize, f64)> = None;
        for (i, c) in candidates.iter().enumerate() {
            let Some(arm) = self.arm(service, c.node, now) else {
                continue;
            };
            let draw = arm.sample(&mut rng) + objective.log_factor(c);
            drew(i, draw);
            if best.is_none_or(|(_, b)| draw < b) {
                best = Some((i, draw));
            }
        }
        let (index, _) = best.ok_or("no candidates")?;
        Ok((index, How::Exploit))
    }
}

/// A log-latency as ms for a reason: rounded to 0.1 ms from 1 ms up, else
/// to 6 significant digits.
fn ms(log_ms: f64) -> String {
    let x = log_ms.exp();
    fmt_num(if x >= 1.0 {
        (x * 10.0).round() / 10.0
    } else {
        x
    })
}

impl Policy for Adaptive {
    const NAME: &'static str = crate::NAME;

    /// An arm with no data (at random among them) if any, else the lowest
    /// posterior draw of the objective, first; then the others by their
    /// score, highest first (ties by index); each arm's value as its score,
    /// and the reason.
    ///
    /// The score is minus the objective in ms (times the throughput or cost
    /// factor): of the posterior draw the pick made when every arm has data
    /// (reason e.g. `thompson: sampled 12.3 ms (mean 11.8 ms), lowest of 4`),
    /// else 0 for an arm with no data, tried first, and of the posterior
    /// mean for the others (reason e.g. `thompson: exploring an untried node,
    /// 1 of 2 untried`). Other objectives than latency say so: `thompson
    /// (optimize=cost): ...`.
    ///
    /// # Errors
    /// A malformed `optimize` hint, or `no candidates`.
    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _ctx: &Context,
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        let mut draws = vec![0.0_f64; candidates.len()];
        let (first, how) = self.choose(req, candidates, |i, draw| {
            if let Some(d) = draws.get_mut(i) {
                *d = draw;
            }
        })?;
        let mut value: Vec<f64> = draws.iter().map(|d| -d.exp()).collect();
        let objective = Objective::from_hints(req.hints())?;
        let (service, now) = (req.service.as_str(), req.now_ms);
        let arm = |i: usize| {
            let c = candidates.get(i)?;
            Some((c, self.arm(service, c.node, now)?))
        };
        if let How::Explore(_) = how {
            for (i, v) in value.iter_mut().enumerate() {
                *v = arm(i).map_or(0.0, |(c, a)| -(a.mean() + objective.log_factor(c)).exp());
            }
        }
        let order = order_after(first, 0..candidates.len(), |a, b| {
            value[b].total_cmp(&value[a])
        })?;
        let label = match objective {
            Objective::Latency => "thompson".to_owned(),
            other => format!("thompson (optimize={})", other.name()),
        };
        let reason = match (how, arm(first)) {
            (How::Explore(untried), _) => {
                format!("{label}: exploring an untried node, 1 of {untried} untried")
            }
            (How::Exploit, Some((c, a))) => format!(
                "{label}: sampled {} ms (mean {} ms), lowest of {}",
                ms(draws[first] - objective.log_factor(c)),
                ms(a.mean()),
                candidates.len()
            ),
            (How::Exploit, None) => label,
        };
        let scores = value.into_iter().map(to_score).collect();
        Ok(Scored {
            order,
            scores,
            reason,
        })
    }

    /// Discounts every arm of the service, then adds the call's log-latency
    /// (a failure as the failure penalty) to its node's arm.
    fn observe(&mut self, outcome: &Outcome) {
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

#[cfg(test)]
mod tests;
