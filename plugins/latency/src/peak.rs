//! The peak-EWMA latency algorithm, independent of WebAssembly.

use policy_sdk::{
    Candidate, Context, DEFAULT_DECAY_MS, DEFAULT_RTT_MS, NodeFacts, NodeKey, NodeStates, Outcome,
    PeakEwma, Policy, Request, Scored, failure_penalty_ms, order_after, p2c, to_score,
};

/// Peak-EWMA latency per (service, node), picked by power of two choices on
/// `estimate × (in_flight + 1)` (see the crate docs).
#[derive(Debug, Default, Clone)]
pub struct Latency {
    rtt: NodeStates<PeakEwma>,
}

impl Latency {
    /// A policy with no samples yet (every node at the 30 ms default).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The latency estimate of `node` for `service` read at `now_ms`, ms:
    /// the peak-EWMA decayed since its last sample, or 30 ms with no sample in
    /// the last 10 minutes.
    #[must_use]
    pub fn estimate_ms(&self, service: &str, node: NodeKey, now_ms: u64) -> f64 {
        self.rtt
            .get(service, node, now_ms)
            .map_or(DEFAULT_RTT_MS, |e| e.estimate_at(now_ms))
    }

    /// Every candidate's cost for a call of `req`, in candidate order:
    /// `estimate_ms × (in_flight + 1)`, ms. The service's estimates are
    /// looked up once, then each node's by its key.
    fn costs(&self, req: &Request, candidates: &[Candidate]) -> Vec<f64> {
        let rtt = self.rtt.service(&req.service);
        candidates
            .iter()
            .map(|c| {
                let estimate = rtt
                    .get(c.node, req.now_ms)
                    .map_or(DEFAULT_RTT_MS, |e| e.estimate_at(req.now_ms));
                estimate * (f64::from(c.in_flight) + 1.0)
            })
            .collect()
    }

    /// The one code path of every answer: power of two choices on the
    /// costs; the chosen index and the other one drawn (`None` with one
    /// candidate).
    fn choose(req: &Request, costs: &[f64]) -> Result<(usize, Option<usize>), String> {
        let mut rng = req.rng();
        let mut drawn = [None; 2];
        let index = p2c(costs.len(), &mut rng, |i| {
            drawn = [drawn[1], Some(i)];
            costs[i]
        })
        .ok_or("no candidates")?;
        let rival = drawn.into_iter().flatten().find(|&i| i != index);
        Ok((index, rival))
    }

    /// How many (service, node) estimates are held.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.rtt.len()
    }
}

impl Policy for Latency {
    const NAME: &'static str = crate::NAME;

    /// The cheaper of two random distinct candidates first (cost =
    /// `estimate_ms × (in_flight + 1)`), then the other candidates by cost
    /// (ties by index); each candidate's score is `-cost` (the expected
    /// latency in ms the policy weighs), the reason e.g. `lower p-ewma cost
    /// of two drawn: 12.3 ms, 0 in flight (vs 30.0 ms, 2 in flight)`.
    ///
    /// # Errors
    /// `no candidates` when `candidates` is empty.
    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _ctx: &Context,
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        let costs = self.costs(req, candidates);
        let (first, rival) = Self::choose(req, &costs)?;
        // `first`, then the other candidates by cost (ties by index).
        let order = order_after(first, 0..costs.len(), |a, b| costs[a].total_cmp(&costs[b]))?;
        let scores = costs.iter().map(|&cost| to_score(-cost)).collect();
        let figures = |i: usize| {
            candidates.get(i).map_or_else(String::new, |c| {
                let ms = self.estimate_ms(&req.service, c.node, req.now_ms);
                format!("{ms:.1} ms, {} in flight", c.in_flight)
            })
        };
        let reason = match rival {
            Some(r) => format!(
                "lower p-ewma cost of two drawn: {} (vs {})",
                figures(first),
                figures(r)
            ),
            None => format!("only candidate: p-ewma {}", figures(first)),
        };
        Ok(Scored {
            order,
            scores,
            reason,
        })
    }

    /// Feeds the call's latency (or, for a failed call, the failure penalty)
    /// into the node's estimate for the service.
    fn observe(&mut self, outcome: &Outcome) {
        let latency = f64::from(outcome.latency_ms).max(0.0);
        let sample = if outcome.ok {
            latency
        } else {
            let estimate = self
                .rtt
                .get(&outcome.service, outcome.node, outcome.now_ms)
                .map_or(DEFAULT_RTT_MS, PeakEwma::estimate);
            failure_penalty_ms(latency, estimate)
        };
        let now = outcome.now_ms;
        self.rtt.upsert(
            &outcome.service,
            outcome.node,
            now,
            |e| e.observe(sample, now),
            || PeakEwma::new(sample, now, DEFAULT_DECAY_MS),
        );
    }
}

#[cfg(test)]
mod tests;
