//! The peak-EWMA latency algorithm, independent of WebAssembly.

use policy_sdk::{
    Candidate, Context, DEFAULT_DECAY_MS, DEFAULT_RTT_MS, NodeFacts, NodeKey, NodeStates, Outcome,
    PeakEwma, Policy, Request, Scored, failure_penalty_ms, index_u32, order_after, p2c, to_score,
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

    /// The cost of `c` for a call of `req`: `estimate_ms × (in_flight + 1)`,
    /// ms.
    fn cost(&self, req: &Request, c: &Candidate) -> f64 {
        self.estimate_ms(&req.service, c.node, req.now_ms) * (f64::from(c.in_flight) + 1.0)
    }

    /// The one code path of every answer: power of two choices on the cost;
    /// the chosen index and the other one drawn (`None` with one candidate).
    fn choose(
        &self,
        req: &Request,
        candidates: &[Candidate],
    ) -> Result<(usize, Option<usize>), String> {
        let mut rng = req.rng();
        let mut drawn = [None; 2];
        let index = p2c(candidates.len(), &mut rng, |i| {
            drawn = [drawn[1], Some(i)];
            self.cost(req, &candidates[i])
        })
        .ok_or("no candidates")?;
        let rival = drawn.into_iter().flatten().find(|&i| i != index);
        Ok((index, rival))
    }

    /// `first`, then the other candidates by cost (ties by index).
    fn rank_after(
        &self,
        first: usize,
        req: &Request,
        candidates: &[Candidate],
    ) -> Result<Vec<u32>, String> {
        let costs: Vec<f64> = candidates.iter().map(|c| self.cost(req, c)).collect();
        order_after(first, 0..candidates.len(), |a, b| {
            costs[a].total_cmp(&costs[b])
        })
    }

    /// Routes to the cheaper of two random distinct candidates, cost =
    /// `estimate_ms × (in_flight + 1)`.
    ///
    /// # Errors
    /// `no candidates` when `candidates` is empty.
    pub fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String> {
        index_u32(self.choose(req, candidates)?.0)
    }

    /// Ranks [`Latency::pick`]'s choice first, then the other candidates by
    /// cost (ties by index).
    ///
    /// # Errors
    /// As [`Latency::pick`].
    pub fn rank(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Vec<u32>, String> {
        let (first, _) = self.choose(req, candidates)?;
        self.rank_after(first, req, candidates)
    }

    /// [`Latency::rank`]'s order with each candidate's score, `-cost` (the
    /// expected latency in ms the policy weighs: peak-EWMA × (in flight +
    /// 1)), and the reason, e.g. `lower p-ewma cost of two drawn: 12.3 ms,
    /// 0 in flight (vs 30.0 ms, 2 in flight)`.
    ///
    /// # Errors
    /// As [`Latency::pick`].
    pub fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _ctx: &Context,
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        let (first, rival) = self.choose(req, candidates)?;
        let order = self.rank_after(first, req, candidates)?;
        let scores = candidates
            .iter()
            .map(|c| to_score(-self.cost(req, c)))
            .collect();
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
    pub fn observe(&mut self, outcome: &Outcome) {
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

    /// How many (service, node) estimates are held.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.rtt.len()
    }
}

impl Policy for Latency {
    const NAME: &'static str = crate::NAME;

    fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String> {
        Latency::pick(self, req, candidates, facts)
    }

    fn rank(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Vec<u32>, String> {
        Latency::rank(self, req, candidates, facts)
    }

    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        ctx: &Context,
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        Latency::score(self, req, candidates, ctx, facts)
    }

    fn observe(&mut self, outcome: &Outcome) {
        Latency::observe(self, outcome);
    }
}

#[cfg(test)]
mod tests {
    use policy_sdk::{Candidate, Context, FORGET_AFTER_MS, Outcome, Request, SplitMix64, no_facts};

    use super::Latency;

    fn node(node: u32, in_flight: u32) -> Candidate {
        Candidate {
            node,
            in_flight,
            max_concurrent: 64,
            ..Candidate::default()
        }
    }

    fn pick(p: &mut Latency, candidates: &[Candidate], now_ms: u64, random: u64) -> usize {
        let req = Request {
            service: "svc".into(),
            now_ms,
            random,
            ..Request::default()
        };
        p.pick(&req, candidates, &no_facts).expect("non-empty") as usize
    }

    fn observe(p: &mut Latency, node: u32, latency_ms: f32, ok: bool, now_ms: u64) {
        p.observe(&Outcome {
            service: "svc".into(),
            node,
            latency_ms,
            ok,
            now_ms,
        });
    }

    #[test]
    fn prefers_the_fast_node_after_observations_unless_it_is_much_busier() {
        let mut p = Latency::new();
        for t in 0..5 {
            observe(&mut p, 10, 100.0, true, t * 10);
            observe(&mut p, 11, 10.0, true, t * 10);
        }
        for seed in 0..200 {
            assert_eq!(pick(&mut p, &[node(10, 0), node(11, 0)], 50, seed), 1);
            // 10 ms × 6 < 100 ms × 1
            assert_eq!(pick(&mut p, &[node(10, 0), node(11, 5)], 50, seed), 1);
            // 10 ms × 13 > 100 ms × 1
            assert_eq!(pick(&mut p, &[node(10, 0), node(11, 12)], 50, seed), 0);
        }
        // Other services are unaffected: both at the 30 ms default, tie.
        let req = Request {
            service: "other".into(),
            now_ms: 50,
            ..Request::default()
        };
        assert_eq!(p.pick(&req, &[node(10, 0), node(11, 0)], &no_facts), Ok(0));
    }

    #[test]
    fn returns_to_a_recovered_node_after_decay() {
        // Node 0 serves in 100 ms until t = 5 s, then in 5 ms; node 1 always
        // in 20 ms. One call every 100 ms, observed when it ends.
        let mut p = Latency::new();
        let mut rng = SplitMix64::new(5);
        let candidates = [node(0, 0), node(1, 0)];
        let mut picks = Vec::new();
        for step in 0..600u64 {
            let now = step * 100;
            let i = pick(&mut p, &candidates, now, rng.next_u64());
            let latency = match (i, now < 5_000) {
                (0, true) => 100.0,
                (0, false) => 5.0,
                _ => 20.0,
            };
            observe(&mut p, candidates[i].node, latency, true, now);
            picks.push((now, i));
        }
        // Node 0 was tried (at the default estimate) and then avoided: its
        // 100 ms estimate must decay below 20 ms (ln 5 × τ ≈ 16 s) first.
        let first_back = picks
            .iter()
            .skip(1)
            .find(|(_, i)| *i == 0)
            .map(|(t, _)| *t)
            .expect("node 0 probed again");
        assert!((15_000..18_000).contains(&first_back), "{first_back}");
        // Then it wins its traffic back: it serves the last 20 s, but for the
        // odd probe of node 1 once that one's estimate has decayed in turn
        // (20 ms below 5 ms: every ln 4 × τ ≈ 14 s).
        let tail: Vec<usize> = picks
            .iter()
            .filter(|(t, _)| *t >= 40_000)
            .map(|(_, i)| *i)
            .collect();
        let to_node_1 = tail.iter().filter(|&&i| i == 1).count();
        assert!((1..=3).contains(&to_node_1), "{tail:?}");
    }

    #[test]
    fn failures_count_as_slow_calls() {
        let mut p = Latency::new();
        observe(&mut p, 0, 1.0, false, 0);
        observe(&mut p, 1, 50.0, true, 0);
        assert!((p.estimate_ms("svc", 0, 0) - 1000.0).abs() < 1e-9);
        for seed in 0..100 {
            assert_eq!(pick(&mut p, &[node(0, 0), node(1, 0)], 0, seed), 1);
        }
        // Five times the current estimate when that is larger.
        observe(&mut p, 1, 10.0, false, 0);
        assert!((p.estimate_ms("svc", 1, 0) - 1000.0).abs() < 1e-9);
        observe(&mut p, 1, 10.0, false, 0);
        assert!((p.estimate_ms("svc", 1, 0) - 5000.0).abs() < 1e-9);
    }

    #[test]
    fn forgets_nodes_idle_for_ten_minutes() {
        let mut p = Latency::new();
        observe(&mut p, 0, 500.0, true, 0);
        observe(&mut p, 1, 500.0, true, 0);
        assert!(p.estimate_ms("svc", 0, FORGET_AFTER_MS - 1) < 500.0);
        assert!((p.estimate_ms("svc", 0, FORGET_AFTER_MS) - 30.0).abs() < 1e-9);
        observe(&mut p, 2, 5.0, true, FORGET_AFTER_MS);
        assert_eq!(p.tracked(), 1);
    }

    #[test]
    fn any_pick_is_in_range() {
        let mut p = Latency::new();
        let mut rng = SplitMix64::new(3);
        for step in 0..3000u64 {
            let len = 1 + rng.below(20);
            let candidates: Vec<Candidate> = (0..len)
                .map(|_| node(rng.below(30) as u32, rng.below(8) as u32))
                .collect();
            let i = pick(&mut p, &candidates, step * 7, rng.next_u64());
            assert!(i < len);
            let latency = (rng.next_f64() * 200.0) as f32;
            observe(
                &mut p,
                candidates[i].node,
                latency,
                rng.below(10) > 0,
                step * 7,
            );
        }
    }

    #[test]
    fn score_orders_as_rank_and_explains_the_draw() {
        let mut p = Latency::new();
        observe(&mut p, 10, 100.0, true, 0);
        observe(&mut p, 11, 12.3, true, 0);
        observe(&mut p, 12, 40.0, true, 0);
        let candidates = [node(10, 0), node(11, 1), node(12, 0), node(13, 2)];
        for seed in 0..200 {
            let req = Request {
                service: "svc".into(),
                now_ms: 0,
                random: seed,
                ..Request::default()
            };
            let first = pick(&mut p, &candidates, 0, seed);
            let s = p
                .score(&req, &candidates, &Context::default(), &no_facts)
                .expect("non-empty");
            assert_eq!(s.order[0] as usize, first, "the pick first");
            assert_eq!(
                s.order,
                p.rank(&req, &candidates, &no_facts).expect("non-empty")
            );
            // Costs: 100, 24.6, 40, 90 ms: the rest in that order.
            let rest: Vec<u32> = [1, 2, 3, 0]
                .into_iter()
                .filter(|&i| i != s.order[0])
                .collect();
            assert_eq!(s.order[1..], rest);
            let want = [-100.0, -24.6, -40.0, -90.0];
            assert_eq!(s.scores.len(), 4);
            for (got, want) in s.scores.iter().zip(want) {
                assert!((got - want).abs() < 1e-3, "{:?}", s.scores);
            }
            let figure = match first {
                0 => "100.0 ms, 0 in flight",
                1 => "12.3 ms, 1 in flight",
                2 => "40.0 ms, 0 in flight",
                _ => "30.0 ms, 2 in flight",
            };
            assert!(
                s.reason.starts_with("lower p-ewma cost of two drawn: "),
                "{}",
                s.reason
            );
            assert!(s.reason.contains(figure), "{} lacks {figure}", s.reason);
        }
        let s = p
            .score(
                &Request::default(),
                &[node(1, 0)],
                &Context::default(),
                &no_facts,
            )
            .expect("non-empty");
        assert_eq!(s.reason, "only candidate: p-ewma 30.0 ms, 0 in flight");
        assert_eq!(
            p.score(&Request::default(), &[], &Context::default(), &no_facts),
            Err("no candidates".to_owned())
        );
    }
}
