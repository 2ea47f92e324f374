//! The uniform random pick, independent of WebAssembly.

use policy_sdk::{Candidate, Context, NodeFacts, NodeKey, Policy, Request, Scored, order_after};

/// A uniformly random candidate (see the crate docs).
#[derive(Debug, Default, Clone)]
pub struct Random;

impl Random {
    /// The policy (it keeps no state).
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl Policy for Random {
    const NAME: &'static str = crate::NAME;

    /// Candidate `below(n)` of a SplitMix64 seeded from the request's
    /// `random` field first, then the other candidates in index order;
    /// score 1 for the drawn candidate, 0 for the others; the reason
    /// `random: drew index 3 of 8 (uniform)`.
    ///
    /// # Errors
    /// `no candidates` when `candidates` is empty (the gateway never sends
    /// an empty list).
    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _ctx: &Context,
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        let first = draw(req, candidates)?;
        let order = order_after(first, 0..candidates.len(), |_, _| std::cmp::Ordering::Equal)?;
        let scores = (0..candidates.len())
            .map(|i| if i == first { 1.0 } else { 0.0 })
            .collect();
        let reason = format!(
            "random: drew index {first} of {} (uniform)",
            candidates.len()
        );
        Ok(Scored {
            order,
            scores,
            reason,
        })
    }
}

/// The one code path of every answer: `below(n)` of the request's RNG.
fn draw(req: &Request, candidates: &[Candidate]) -> Result<usize, String> {
    if candidates.is_empty() {
        return Err("no candidates".to_owned());
    }
    Ok(req.rng().below(candidates.len()))
}

#[cfg(test)]
mod tests {
    use policy_sdk::{Candidate, Context, Policy, Request, SplitMix64, no_facts};

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

    #[test]
    fn score_is_the_draw_explained() {
        let candidates = nodes(8);
        let mut seeds = SplitMix64::new(11);
        for _ in 0..200 {
            let random = seeds.next_u64();
            let req = Request {
                service: "svc".into(),
                random,
                ..Request::default()
            };
            let first = pick(&candidates, random).expect("non-empty");
            let s = Random::new()
                .score(&req, &candidates, &Context::default(), &no_facts)
                .expect("non-empty");
            assert_eq!(s.order[0], first);
            assert_eq!(s.order.len(), 8);
            let mut sorted = s.order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..8).collect::<Vec<u32>>(), "each once");
            assert_eq!(s.scores.len(), 8);
            assert!(s.scores.iter().sum::<f32>() > 0.99);
            assert!(s.scores[first as usize] > 0.99);
            assert_eq!(
                s.reason,
                format!("random: drew index {first} of 8 (uniform)")
            );
        }
        assert_eq!(
            Random::new().score(&Request::default(), &[], &Context::default(), &no_facts),
            Err("no candidates".to_owned())
        );
    }
}
