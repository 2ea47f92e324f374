//! The cheapest-expected-cost algorithm, independent of WebAssembly.

use policy_sdk::{
    Candidate, Context, EXCLUDED, Ewma, Hints, NodeFacts, NodeKey, NodeStates, Outcome, Policy,
    Request, Scored, failure_penalty_ms, fmt_num, order_after, to_score,
};

/// Expected duration of a call on a node nothing is known about, ms.
pub const DEFAULT_DURATION_MS: f64 = 1000.0;

/// Weight of the newest sample in the plugin's own latency EWMA (as the
/// gateway's).
const EWMA_WEIGHT: f64 = 0.3;

/// Milliseconds per hour.
const MS_PER_HOUR: f64 = 3_600_000.0;

/// Relative slack on the limits: `f32` inputs must not fail a limit they meet.
const SLACK: f64 = 1e-6;

/// Cheapest expected cost per call within `max_cost` / `max_latency_ms` (see
/// the crate docs).
#[derive(Debug, Default, Clone)]
pub struct Cost {
    durations: NodeStates<Ewma>,
}

/// A candidate's expected figures.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    index: usize,
    duration_ms: f64,
    cost: f64,
}

/// A limit hint: its value and its text as given, for messages.
#[derive(Debug, Clone, Copy)]
struct Limit<'a> {
    name: &'static str,
    value: f64,
    text: &'a str,
}

impl<'a> Limit<'a> {
    fn from_hints(hints: Hints<'a>, name: &'static str) -> Result<Option<Self>, String> {
        Ok(hints.get_non_negative(name)?.map(|value| Self {
            name,
            value,
            text: hints.get_str(name).unwrap_or_default(),
        }))
    }

    fn allows(limit: Option<Self>, x: f64) -> bool {
        limit.is_none_or(|l| x <= l.value + l.value.abs() * SLACK)
    }
}

impl std::fmt::Display for Limit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.text)
    }
}

impl Cost {
    /// A policy with no observed latencies.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The expected duration of a call of `service` on `c`, ms (see the crate
    /// docs for the fallbacks).
    #[must_use]
    pub fn expected_ms(&self, service: &str, c: &Candidate, now_ms: u64) -> f64 {
        if c.latency_samples > 0 {
            return f64::from(c.latency_ms).max(0.0);
        }
        self.durations
            .get(service, c.node, now_ms)
            .map_or(DEFAULT_DURATION_MS, Ewma::value)
    }

    /// The ranking and the estimates of the candidates within the limits.
    fn evaluate(
        &self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<(Vec<u32>, Vec<Estimate>), String> {
        let mut fitting = Vec::new();
        let best = self.choose(req, candidates, facts, |e| fitting.push(e))?;
        let mut by_index = vec![None; candidates.len()];
        for e in &fitting {
            if let Some(slot) = by_index.get_mut(e.index) {
                *slot = Some(*e);
            }
        }
        let order = order_after(best.index, fitting.iter().map(|e| e.index), |a, b| {
            match (
                by_index.get(a).copied().flatten(),
                by_index.get(b).copied().flatten(),
            ) {
                (Some(a), Some(b)) => a
                    .cost
                    .total_cmp(&b.cost)
                    .then(a.duration_ms.total_cmp(&b.duration_ms)),
                _ => std::cmp::Ordering::Equal,
            }
        })?;
        Ok((order, fitting))
    }

    /// The one code path of every answer: the cheapest candidate within the
    /// limits (each of them passed to `fitting` on the way), or the reason
    /// none qualifies.
    fn choose(
        &self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
        mut fitting: impl FnMut(Estimate),
    ) -> Result<Estimate, String> {
        let hints = req.hints();
        let max_cost = Limit::from_hints(hints, "max_cost")?;
        let max_latency = Limit::from_hints(hints, "max_latency_ms")?;
        let estimates = candidates.iter().enumerate().map(|(index, c)| {
            let duration_ms = self.expected_ms(&req.service, c, req.now_ms);
            Estimate {
                index,
                duration_ms,
                cost: f64::from(c.cost_per_hour) * duration_ms / MS_PER_HOUR,
            }
        });
        let best = estimates
            .clone()
            .filter(|e| Limit::allows(max_latency, e.duration_ms))
            .filter(|e| Limit::allows(max_cost, e.cost))
            .inspect(|e| fitting(*e))
            .reduce(|best, e| {
                // Strictly cheaper (then strictly faster): ties keep the lower index.
                if (e.cost, e.duration_ms) < (best.cost, best.duration_ms) {
                    e
                } else {
                    best
                }
            });
        best.ok_or_else(|| {
            let name = |e: &Estimate| {
                candidates.get(e.index).map_or_else(String::new, |c| {
                    facts(c.node).map_or_else(|| format!("key {}", c.node), |f| f.id)
                })
            };
            reject_reason(estimates, max_cost, max_latency, name)
        })
    }
}

/// Why no candidate qualifies (see the crate docs for the messages); `name`
/// names a candidate's node.
fn reject_reason(
    estimates: impl Iterator<Item = Estimate> + Clone,
    max_cost: Option<Limit<'_>>,
    max_latency: Option<Limit<'_>>,
    name: impl Fn(&Estimate) -> String,
) -> String {
    let fastest = |a: Estimate, e: Estimate| if e.duration_ms < a.duration_ms { e } else { a };
    let cheapest = |a: Estimate, e: Estimate| if e.cost < a.cost { e } else { a };
    let within_latency = estimates
        .clone()
        .filter(|e| Limit::allows(max_latency, e.duration_ms))
        .reduce(cheapest);
    match (within_latency, max_latency, max_cost) {
        (None, Some(latency), _) => match estimates.reduce(fastest) {
            Some(e) => format!(
                "no node meets {latency}: fastest expected latency is {} ms (node {})",
                fmt_num(e.duration_ms),
                name(&e)
            ),
            None => "no candidates".to_owned(),
        },
        (Some(e), Some(latency), Some(cost)) => format!(
            "no node meets {cost} with {latency}: cheapest expected cost among nodes \
             meeting max_latency_ms is {} (node {})",
            fmt_num(e.cost),
            name(&e)
        ),
        (Some(e), None, Some(cost)) => format!(
            "no node meets {cost}: cheapest expected cost is {} (node {})",
            fmt_num(e.cost),
            name(&e)
        ),
        _ => "no candidates".to_owned(),
    }
}

impl Policy for Cost {
    const NAME: &'static str = crate::NAME;

    /// The candidates within the limits, the cheapest first, then the
    /// others by expected cost, then expected latency, then index
    /// (candidates outside the limits are not named); each candidate's
    /// score is `-expected cost per call` ([`EXCLUDED`] outside the
    /// limits); the reason, e.g. `cheapest expected 0.00025 per call (0.9/h
    /// × 1000 ms) of 3 fitting`.
    ///
    /// # Errors
    /// A malformed limit hint, or no candidate within the limits (see the
    /// crate docs for the messages).
    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _ctx: &Context,
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        let (order, fitting) = self.evaluate(req, candidates, facts)?;
        let mut scores = vec![EXCLUDED; candidates.len()];
        for e in &fitting {
            if let Some(s) = scores.get_mut(e.index) {
                *s = to_score(-e.cost);
            }
        }
        let best = order
            .first()
            .and_then(|&i| fitting.iter().find(|e| e.index == i as usize));
        let reason = best.map_or_else(String::new, |e| {
            let per_hour = candidates.get(e.index).map_or(0.0, |c| c.cost_per_hour);
            format!(
                "cheapest expected {} per call ({}/h × {} ms) of {} fitting",
                fmt_num(e.cost),
                fmt_num(f64::from(per_hour)),
                fmt_num(e.duration_ms),
                fitting.len()
            )
        });
        Ok(Scored {
            order,
            scores,
            reason,
        })
    }

    /// Feeds the call's latency (a failure as the failure penalty) into the
    /// plugin's own EWMA for the (service, node).
    fn observe(&mut self, outcome: &Outcome) {
        let latency = f64::from(outcome.latency_ms).max(0.0);
        let sample = if outcome.ok {
            latency
        } else {
            let estimate = self
                .durations
                .get(&outcome.service, outcome.node, outcome.now_ms)
                .map_or(0.0, Ewma::value);
            failure_penalty_ms(latency, estimate)
        };
        self.durations.upsert(
            &outcome.service,
            outcome.node,
            outcome.now_ms,
            |e| e.observe(sample),
            || Ewma::new(sample, EWMA_WEIGHT),
        );
    }
}

#[cfg(test)]
mod tests;
