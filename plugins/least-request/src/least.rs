//! The least-request algorithm, independent of WebAssembly.

use policy_sdk::{
    Candidate, Context, NodeFacts, NodeKey, Policy, Request, Scored, order_after, p2c, to_score,
};

/// Power of two choices on `in_flight / max_concurrent` (see the crate docs).
#[derive(Debug, Default, Clone)]
pub struct LeastRequest;

impl LeastRequest {
    /// The policy (it keeps no state).
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl Policy for LeastRequest {
    const NAME: &'static str = crate::NAME;

    /// The less loaded of two random distinct candidates first, then every
    /// other candidate by load (then calls in flight, then index): the node
    /// to take when the choice's last slot went to another call meanwhile.
    /// Each candidate's score is `-load` (`-in_flight / max_concurrent`: 0
    /// is idle); the reason, e.g. `least loaded of two drawn: 2/8 in flight
    /// (vs 5/8)`.
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
        let (first, rival) = choose(req, candidates)?;
        let order = rank_after(first, candidates)?;
        let scores = candidates.iter().map(|c| to_score(-c.load())).collect();
        let slots = |i: usize| {
            candidates.get(i).map_or_else(String::new, |c| {
                format!("{}/{}", c.in_flight, c.max_concurrent)
            })
        };
        let reason = match rival {
            Some(r) => format!(
                "least loaded of two drawn: {} in flight (vs {})",
                slots(first),
                slots(r)
            ),
            None => format!("only candidate: {} in flight", slots(first)),
        };
        Ok(Scored {
            order,
            scores,
            reason,
        })
    }
}

/// The one code path of every answer: power of two choices on (load, calls
/// in flight); the chosen index and the other one drawn (`None` with one
/// candidate).
fn choose(req: &Request, candidates: &[Candidate]) -> Result<(usize, Option<usize>), String> {
    let mut rng = req.rng();
    let mut drawn = [None; 2];
    // Lexicographic: load first, then calls in flight; p2c breaks the
    // remaining ties towards the lower index.
    let index = p2c(candidates.len(), &mut rng, |i| {
        drawn = [drawn[1], Some(i)];
        let c = &candidates[i];
        (c.load(), c.in_flight)
    })
    .ok_or("no candidates")?;
    let rival = drawn.into_iter().flatten().find(|&i| i != index);
    Ok((index, rival))
}

/// `first`, then the other candidates by load, then calls in flight, then
/// index (the sort is stable).
fn rank_after(first: usize, candidates: &[Candidate]) -> Result<Vec<u32>, String> {
    order_after(first, 0..candidates.len(), |a, b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        ca.load()
            .total_cmp(&cb.load())
            .then(ca.in_flight.cmp(&cb.in_flight))
    })
}

#[cfg(test)]
mod tests {
    use policy_sdk::{Candidate, Context, Policy, Request, SplitMix64, no_facts};

    use super::LeastRequest;

    fn node(node: u32, in_flight: u32, max_concurrent: u32) -> Candidate {
        Candidate {
            node,
            in_flight,
            max_concurrent,
            ..Candidate::default()
        }
    }

    fn pick(candidates: &[Candidate], random: u64) -> u32 {
        let req = Request {
            service: "svc".into(),
            random,
            ..Request::default()
        };
        LeastRequest::new()
            .pick(&req, candidates, &no_facts)
            .expect("non-empty")
    }

    #[test]
    fn a_ranking_starts_with_the_pick_then_the_least_loaded() {
        let candidates = [node(0, 3, 4), node(1, 0, 4), node(2, 2, 4), node(3, 1, 4)];
        for seed in 0..200 {
            let req = Request {
                service: "svc".into(),
                random: seed,
                ..Request::default()
            };
            let order = LeastRequest::new()
                .rank(&req, &candidates, &no_facts)
                .expect("non-empty");
            assert_eq!(order[0], pick(&candidates, seed), "the pick first");
            assert_eq!(order.len(), 4, "every candidate once");
            let rest: Vec<u32> = order[1..].to_vec();
            let mut sorted = rest.clone();
            sorted.sort_by_key(|i| candidates[*i as usize].in_flight);
            assert_eq!(rest, sorted, "then by load");
        }
    }

    #[test]
    fn two_candidates_always_avoid_the_busier() {
        for seed in 0..500 {
            assert_eq!(pick(&[node(0, 3, 4), node(1, 1, 4)], seed), 1);
            assert_eq!(pick(&[node(0, 1, 4), node(1, 3, 4)], seed), 0);
            // Load is relative to capacity: 2/8 beats 1/2.
            assert_eq!(pick(&[node(0, 1, 2), node(1, 2, 8)], seed), 1);
        }
    }

    #[test]
    fn ties_go_to_fewer_in_flight_then_lower_index() {
        for seed in 0..200 {
            assert_eq!(pick(&[node(0, 2, 4), node(1, 1, 2)], seed), 1);
            assert_eq!(pick(&[node(0, 1, 4), node(1, 1, 4)], seed), 0);
        }
    }

    #[test]
    fn many_candidates_never_pick_the_busiest_and_favour_idle_ones() {
        let candidates = [node(0, 0, 4), node(1, 2, 4), node(2, 3, 4), node(3, 1, 4)];
        let mut counts = [0u32; 4];
        for seed in 0..4000 {
            counts[pick(&candidates, seed) as usize] += 1;
        }
        assert_eq!(counts[2], 0, "{counts:?}");
        // P2C: the idlest wins every pair it is drawn in (1/2 of picks), the
        // next one every pair without the idlest (1/3), and so on.
        assert!(counts[0] > counts[3] && counts[3] > counts[1], "{counts:?}");
        assert!((1800..2200).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn any_pick_is_in_range() {
        let mut rng = SplitMix64::new(99);
        for _ in 0..2000 {
            let len = 1 + rng.below(40);
            let candidates: Vec<Candidate> = (0..len)
                .map(|i| {
                    let max = 1 + rng.below(16) as u32;
                    node(i as u32, rng.below(max as usize) as u32, max)
                })
                .collect();
            assert!((pick(&candidates, rng.next_u64()) as usize) < len);
        }
        let req = Request::default();
        assert_eq!(
            LeastRequest::new().pick(&req, &[], &no_facts),
            Err("no candidates".to_owned())
        );
    }

    #[test]
    fn score_orders_as_rank_and_explains_the_draw() {
        let candidates = [node(0, 3, 4), node(1, 2, 8), node(2, 2, 4), node(3, 1, 4)];
        for seed in 0..200 {
            let req = Request {
                service: "svc".into(),
                random: seed,
                ..Request::default()
            };
            let s = LeastRequest::new()
                .score(&req, &candidates, &Context::default(), &no_facts)
                .expect("non-empty");
            let first = pick(&candidates, seed);
            assert_eq!(s.order[0], first, "the pick first");
            let order = LeastRequest::new()
                .rank(&req, &candidates, &no_facts)
                .expect("non-empty");
            assert_eq!(s.order, order, "the ranking");
            assert_eq!(s.scores.len(), 4);
            assert!((s.scores[1] + 0.25).abs() < 1e-6, "{:?}", s.scores);
            assert!((s.scores[3] + 0.25).abs() < 1e-6, "{:?}", s.scores);
            let c = candidates[first as usize];
            let figure = format!("{}/{} in flight", c.in_flight, c.max_concurrent);
            assert!(
                s.reason.starts_with("least loaded of two drawn: "),
                "{}",
                s.reason
            );
            assert!(s.reason.contains(&figure), "{} lacks {figure}", s.reason);
        }
        let s = LeastRequest::new()
            .score(
                &Request::default(),
                &[node(7, 2, 8)],
                &Context::default(),
                &no_facts,
            )
            .expect("non-empty");
        assert_eq!(s.order, vec![0]);
        assert_eq!(s.reason, "only candidate: 2/8 in flight");
        assert_eq!(
            LeastRequest::new().score(&Request::default(), &[], &Context::default(), &no_facts),
            Err("no candidates".to_owned())
        );
    }
}
