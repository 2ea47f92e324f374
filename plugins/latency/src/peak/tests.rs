use policy_sdk::{
    Candidate, Context, FORGET_AFTER_MS, Outcome, Policy, Request, SplitMix64, no_facts,
};

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
