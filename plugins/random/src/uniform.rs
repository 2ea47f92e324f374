//! The uniform random pick, independent of WebAssembly.

use policy_sdk::{Candidate, NodeFacts, NodeKey, Outcome, Policy, Request, index_u32};

/// A uniformly random candidate (see the crate docs).
#[derive(Debug, Default, Clone)]
pub struct Random;

impl Random {
    /// The policy (it keeps no state).
    #[must_use]
    pub fn new() -> Self {
        Self
    }

    /// Routes to candidate `below(n)` of a SplitMix64 seeded from the
    /// request's `random` field.
    ///
    /// # Errors
    /// `no candidates` when `candidates` is empty (the gateway never sends
    /// an empty list).
    pub fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String> {
        if candidates.is_empty() {
            return Err("no candidates".to_owned());
        }
        index_u32(req.rng().below(candidates.len()))
    }

    /// Does nothing: the pick uses no state.
    pub fn observe(&mut self, _outcome: &Outcome) {}
}

impl Policy for Random {
    const NAME: &'static str = crate::NAME;

    fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String> {
        Random::pick(self, req, candidates, facts)
    }

    fn observe(&mut self, outcome: &Outcome) {
        Random::observe(self, outcome);
    }
}

#[cfg(test)]
mod tests {
    use policy_sdk::{Candidate, Request, SplitMix64, no_facts};

    use super::Random;

    fn nodes(n: u32) -> Vec<Candidate> {
        (0..n)
            .map(|node| Candidate {
                node,
                max_concurrent: 1,
                ..Candidate::default()
            })
            .collect()
    }

    fn pick(candidates: &[Candidate], random: u64) -> Result<u32, String> {
        let req = Request {
            service: "svc".into(),
            random,
            ..Request::default()
        };
        Random::new().pick(&req, candidates, &no_facts)
    }

    #[test]
    fn picks_are_uniform_over_the_candidates() {
        let candidates = nodes(5);
        let mut seeds = SplitMix64::new(7);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[pick(&candidates, seeds.next_u64()).expect("non-empty") as usize] += 1;
        }
        // 10 000 expected each; a binomial std of ~89.
        assert!(
            counts.iter().all(|&c| (9_600..10_400).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_pick_is_a_function_of_the_request_and_ignores_load() {
        let mut candidates = nodes(8);
        let first = pick(&candidates, 42).expect("non-empty");
        assert_eq!(pick(&candidates, 42), Ok(first));
        candidates[first as usize].in_flight = 1000;
        assert_eq!(pick(&candidates, 42), Ok(first), "load is ignored");
    }

    #[test]
    fn any_pick_is_in_range_and_empty_input_is_refused() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..2000 {
            let n = 1 + rng.below(64) as u32;
            assert!(pick(&nodes(n), rng.next_u64()).expect("non-empty") < n);
        }
        assert_eq!(pick(&[], 1), Err("no candidates".to_owned()));
    }
}
