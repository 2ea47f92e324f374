use policy_sdk::{
    Candidate, Context, FORGET_AFTER_MS, Outcome, Policy, Request, Scored, SplitMix64, no_facts,
};

use super::{Adaptive, Objective};

fn node(node: u32) -> Candidate {
    Candidate {
        node,
        max_concurrent: 8,
        ..Candidate::default()
    }
}

/// A deterministic simulation: one call every 50 ms, observed right away,
/// latencies with ±10 % log-normal noise.
struct Sim {
    policy: Adaptive,
    rng: SplitMix64,
    now_ms: u64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        Self {
            policy: Adaptive::new(),
            rng: SplitMix64::new(seed),
            now_ms: 0,
        }
    }

    /// One call: picks among `candidates`, observes `latency_ms(i)` for the
    /// picked index `i`, returns `i`.
    fn call(
        &mut self,
        candidates: &[Candidate],
        hints: &[(&str, &str)],
        latency_ms: impl Fn(usize) -> f64,
    ) -> usize {
        let req = Request {
            service: "svc".into(),
            hints: hints
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            now_ms: self.now_ms,
            random: self.rng.next_u64(),
            ..Request::default()
        };
        let i = self
            .policy
            .pick(&req, candidates, &no_facts)
            .expect("routes") as usize;
        let noise = (0.1 * self.rng.normal()).exp();
        self.policy.observe(&Outcome {
            service: "svc".into(),
            node: candidates[i].node,
            latency_ms: (latency_ms(i) * noise) as f32,
            ok: true,
            now_ms: self.now_ms,
        });
        self.now_ms += 50;
        i
    }
}

/// Share of `picks` equal to `index`.
fn share(picks: &[usize], index: usize) -> f64 {
    picks.iter().filter(|&&i| i == index).count() as f64 / picks.len() as f64
}

#[test]
fn converges_to_the_fast_node_and_notices_a_swap() {
    for seed in 0..20 {
        let mut sim = Sim::new(seed);
        let nodes = [node(0), node(1)];
        let mut fast = 1;
        let latency = |fast: usize| move |i: usize| if i == fast { 10.0 } else { 100.0 };
        for _ in 0..50 {
            sim.call(&nodes, &[], latency(fast));
        }
        let picks: Vec<usize> = (0..100)
            .map(|_| sim.call(&nodes, &[], latency(fast)))
            .collect();
        assert!(share(&picks, fast) > 0.8, "seed {seed}: {picks:?}");
        // The fast node turns slow and the slow one fast.
        fast = 0;
        let picks: Vec<usize> = (0..200)
            .map(|_| sim.call(&nodes, &[], latency(fast)))
            .collect();
        let switched = (0..picks.len() - 20)
            .find(|&k| share(&picks[k..k + 20], fast) >= 0.8)
            .expect("switches");
        assert!(
            switched <= 100,
            "seed {seed}: switched after {switched}: {picks:?}"
        );
        assert!(share(&picks[100..], fast) > 0.8, "seed {seed}: {picks:?}");
    }
}

#[test]
fn explores_a_slow_node_again_and_notices_its_recovery() {
    for seed in 0..20 {
        let mut sim = Sim::new(seed);
        let nodes = [node(0), node(1)];
        // Node 0 at 20 ms throughout; node 1 at 100 ms, then 5 ms.
        for _ in 0..200 {
            sim.call(&nodes, &[], |i| if i == 0 { 20.0 } else { 100.0 });
        }
        let picks: Vec<usize> = (0..300)
            .map(|_| sim.call(&nodes, &[], |i| if i == 0 { 20.0 } else { 5.0 }))
            .collect();
        assert!(share(&picks[200..], 1) > 0.8, "seed {seed}: {picks:?}");
    }
}

#[test]
fn untried_arms_go_first() {
    let mut sim = Sim::new(1);
    let nodes = [node(0), node(1), node(2)];
    let mut first: Vec<usize> = (0..3).map(|_| sim.call(&nodes, &[], |_| 10.0)).collect();
    first.sort_unstable();
    assert_eq!(first, [0, 1, 2]);
    // A node joining later is tried at once.
    let more = [node(0), node(1), node(2), node(9)];
    assert_eq!(sim.call(&more, &[], |_| 10.0), 3);
    // Arms unseen for 10 minutes are forgotten: tried again first.
    sim.now_ms += FORGET_AFTER_MS;
    assert!(sim.policy.arm("svc", 9, sim.now_ms).is_none());
    let mut again: Vec<usize> = (0..3)
        .map(|_| sim.call(&more[..3], &[], |_| 10.0))
        .collect();
    again.sort_unstable();
    assert_eq!(again, [0, 1, 2]);
    assert_eq!(sim.call(&more, &[], |_| 10.0), 3);
}

#[test]
fn objectives_weigh_capacity_and_cost() {
    // Same latency everywhere: the objective's factor decides.
    let mut sim = Sim::new(3);
    let busy = Candidate {
        in_flight: 6,
        ..node(0)
    };
    let idle = Candidate {
        in_flight: 0,
        ..node(1)
    };
    for _ in 0..20 {
        sim.call(&[node(0), node(1)], &[], |_| 50.0);
    }
    let picks: Vec<usize> = (0..100)
        .map(|_| sim.call(&[busy, idle], &[("optimize", "throughput")], |_| 50.0))
        .collect();
    assert!(share(&picks, 1) > 0.95, "{picks:?}");
    let dear = Candidate {
        cost_per_hour: 8.0,
        ..node(0)
    };
    let cheap = Candidate {
        cost_per_hour: 1.0,
        ..node(1)
    };
    let picks: Vec<usize> = (0..100)
        .map(|_| sim.call(&[dear, cheap], &[("optimize", "cost")], |_| 50.0))
        .collect();
    assert!(share(&picks, 1) > 0.95, "{picks:?}");
    // Cost trades off against latency: 8/h at 10 ms beats 1/h at 200 ms.
    let picks: Vec<usize> = (0..200)
        .map(|_| {
            sim.call(&[dear, cheap], &[("optimize", "cost")], |i| {
                if i == 0 { 10.0 } else { 200.0 }
            })
        })
        .collect();
    assert!(share(&picks[100..], 0) > 0.8, "{picks:?}");
}

#[test]
fn failures_count_as_slow_calls() {
    let mut p = Adaptive::new();
    let fail = |node, latency_ms, ok| Outcome {
        service: "svc".into(),
        node,
        latency_ms,
        ok,
        now_ms: 0,
    };
    p.observe(&fail(0, 1.0, false));
    p.observe(&fail(1, 20.0, true));
    let mean = |p: &Adaptive, n| p.arm("svc", n, 0).map(|a| a.mean().exp()).expect("arm");
    assert!((mean(&p, 0) - 1000.0).abs() < 1e-6);
    assert!((mean(&p, 1) - 20.0).abs() < 1e-4);
}

#[test]
fn rejects_an_unknown_objective() {
    let pairs = vec![("optimize".to_owned(), "fast".to_owned())];
    let req = Request {
        hints: pairs,
        ..Request::default()
    };
    assert_eq!(
        Adaptive::new().pick(&req, &[node(0)], &no_facts),
        Err("bad hint optimize=\"fast\": expected latency, throughput or cost".to_owned())
    );
    assert_eq!(
        Objective::from_hints(Request::default().hints()),
        Ok(Objective::Latency)
    );
}

#[test]
fn any_pick_is_in_range() {
    let mut p = Adaptive::new();
    let mut rng = SplitMix64::new(23);
    let objectives = ["latency", "throughput", "cost"];
    for step in 0..3000u64 {
        let len = 1 + rng.below(20);
        let candidates: Vec<Candidate> = (0..len)
            .map(|_| {
                let max = 1 + rng.below(8) as u32;
                Candidate {
                    node: rng.below(30) as u32,
                    in_flight: rng.below(max as usize) as u32,
                    max_concurrent: max,
                    cost_per_hour: (rng.next_f64() * 5.0) as f32,
                    ..Candidate::default()
                }
            })
            .collect();
        let req = Request {
            service: ["a", "b"][rng.below(2)].into(),
            hints: vec![("optimize".into(), objectives[rng.below(3)].into())],
            now_ms: step * 10,
            random: rng.next_u64(),
            ..Request::default()
        };
        let i = p.pick(&req, &candidates, &no_facts).expect("routes") as usize;
        assert!(i < len);
        p.observe(&Outcome {
            service: req.service.clone(),
            node: candidates[i].node,
            latency_ms: (rng.next_f64() * 300.0) as f32,
            ok: rng.below(10) > 0,
            now_ms: step * 10,
        });
    }
}

fn request(random: u64, now_ms: u64, hints: &[(&str, &str)]) -> Request {
    Request {
        service: "svc".into(),
        hints: hints
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        now_ms,
        random,
        ..Request::default()
    }
}

fn observe(p: &mut Adaptive, node: u32, latency_ms: f32) {
    p.observe(&Outcome {
        service: "svc".into(),
        node,
        latency_ms,
        ok: true,
        now_ms: 0,
    });
}

#[test]
fn score_explores_as_pick_does_and_says_so() {
    let mut p = Adaptive::new();
    observe(&mut p, 0, 20.0);
    let candidates = [node(0), node(1), node(2)];
    for seed in 0..100 {
        let req = request(seed, 0, &[]);
        let first = p.pick(&req, &candidates, &no_facts).expect("routes");
        let s = p
            .score(&req, &candidates, &Context::default(), &no_facts)
            .expect("routes");
        assert_eq!(s.order[0], first);
        assert_ne!(first, 0, "untried arms first");
        assert_eq!(s.order.len(), 3);
        assert_eq!(s.order[2], 0, "the tried arm last");
        assert_eq!(s.scores.len(), 3);
        assert!(s.scores[1] == 0.0 && s.scores[2] == 0.0, "{:?}", s.scores);
        assert!((s.scores[0] + 20.0).abs() < 1e-3, "{:?}", s.scores);
        assert_eq!(
            s.reason,
            "thompson: exploring an untried node, 1 of 2 untried"
        );
    }
}

#[test]
fn score_exploits_with_the_same_draws_as_pick() {
    let mut p = Adaptive::new();
    for _ in 0..30 {
        observe(&mut p, 0, 50.0);
        observe(&mut p, 1, 12.0);
        observe(&mut p, 2, 100.0);
    }
    let candidates = [node(0), node(1), node(2)];
    let mut seeds = SplitMix64::new(4);
    for _ in 0..200 {
        let req = request(seeds.next_u64(), 0, &[]);
        let first = p.pick(&req, &candidates, &no_facts).expect("routes");
        let s = p
            .score(&req, &candidates, &Context::default(), &no_facts)
            .expect("routes");
        assert_eq!(s.order[0], first);
        assert_eq!(
            s.order,
            p.rank(&req, &candidates, &no_facts).expect("routes")
        );
        assert_eq!(s.scores.len(), 3);
        let best = s.scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            (s.scores[first as usize] - best).abs() < f32::EPSILON,
            "{s:?}"
        );
        let sampled = -s.scores[first as usize];
        assert!((5.0..30.0).contains(&sampled), "{s:?}");
        assert!(s.reason.starts_with("thompson: sampled "), "{}", s.reason);
        assert!(
            s.reason.contains("(mean 12 ms), lowest of 3"),
            "{}",
            s.reason
        );
        assert!(
            s.reason
                .contains(&format!("{:.1}", sampled).trim_end_matches(".0").to_owned()),
            "{} lacks {sampled}",
            s.reason
        );
    }
    let req = request(1, 0, &[("optimize", "cost")]);
    let s = p
        .score(&req, &candidates, &Context::default(), &no_facts)
        .expect("routes");
    assert!(
        s.reason.starts_with("thompson (optimize=cost): sampled"),
        "{}",
        s.reason
    );
}

#[test]
fn score_rejects_as_pick_does() {
    let mut p = Adaptive::new();
    let req = request(1, 0, &[("optimize", "fast")]);
    let want = p.pick(&req, &[node(0)], &no_facts);
    assert!(want.is_err());
    assert_eq!(
        p.score(&req, &[node(0)], &Context::default(), &no_facts),
        want.map(|_| Scored::default())
    );
    assert_eq!(
        p.score(&request(1, 0, &[]), &[], &Context::default(), &no_facts),
        Err("no candidates".to_owned())
    );
}
