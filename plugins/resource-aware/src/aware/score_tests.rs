//! `score`: the same choice as `pick`, every score, the reason.

use policy_sdk::{Candidate, Context, EXCLUDED, NodeFacts, Policy, Request, Scored};

use super::ResourceAware;

/// A node with 1 GPU of 80 000 MiB (`gpu_free` free), CPU at `cpu_pct`.
fn node(node: u32, gpu_free: u64, cpu_pct: f32) -> Candidate {
    Candidate {
        node,
        in_flight: 1,
        max_concurrent: 4,
        cpu_pct,
        mem_used_mib: 3000,
        mem_total_mib: 4000,
        gpu_count: 1,
        gpu_util_pct: 40.0,
        gpu_mem_free_mib: gpu_free,
        gpu_mem_total_mib: 80_000,
        ..Candidate::default()
    }
}

fn facts(node: u32) -> Option<NodeFacts> {
    Some(NodeFacts {
        id: format!("n{node}"),
        region: if node.is_multiple_of(2) { "eu" } else { "us" }.into(),
        ..NodeFacts::default()
    })
}

fn request(hints: &[(&str, &str)]) -> Request {
    Request {
        service: "svc".into(),
        hints: hints
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Request::default()
    }
}

fn score(candidates: &[Candidate], hints: &[(&str, &str)]) -> Result<Scored, String> {
    ResourceAware::new().score(&request(hints), candidates, &Context::default(), &facts)
}

fn pick(candidates: &[Candidate], hints: &[(&str, &str)]) -> Result<u32, String> {
    ResourceAware::new().pick(&request(hints), candidates, &facts)
}

#[test]
fn scores_every_candidate_and_ranks_by_score() {
    let candidates = [
        node(0, 40_000, 25.0),
        node(1, 40_000, 25.0),
        node(2, 8_000, 25.0),
        node(3, 40_000, 5.0),
    ];
    let s = score(&candidates, &[]).expect("fits");
    assert_eq!(s.order[0], pick(&candidates, &[]).expect("fits"));
    // Node 3 has the idlest CPU; 0 and 1 tie (lower index first); 2 has
    // the least free GPU memory.
    assert_eq!(s.order, vec![3, 0, 1, 2]);
    assert_eq!(s.scores.len(), 4);
    // gpu (0.5 + 0.6) / 2, cpu 0.75, mem 0.25, load 0.75.
    assert!((s.scores[0] - 0.575).abs() < 1e-6, "{:?}", s.scores);
    assert_eq!(
        s.reason,
        "most free resources: 0.625 (gpu 0.55, cpu 0.95, mem 0.25, load 0.75), best of 4"
    );
    let ranked = ResourceAware::new()
        .rank(&request(&[]), &candidates, &facts)
        .expect("fits");
    assert_eq!(ranked, s.order);
}

#[test]
fn filters_first_and_names_the_requirements() {
    let candidates = [
        node(0, 40_000, 25.0),
        node(1, 40_000, 5.0),
        node(2, 8_000, 25.0),
        node(3, 30_000, 25.0),
    ];
    let hints = [("require", "gpu_mem_mib>=16000,region=eu")];
    let s = score(&candidates, &hints).expect("fits");
    assert_eq!(s.order[0], pick(&candidates, &hints).expect("fits"));
    assert_eq!(s.order, vec![0]);
    assert!(s.scores[1..] == [EXCLUDED; 3], "{:?}", s.scores);
    assert!(s.scores[0] > 0.0);
    assert!(
        s.reason
            .ends_with("best of 1 meeting gpu_mem_mib>=16000, region=eu"),
        "{}",
        s.reason
    );
    assert!(
        s.reason.starts_with("most free resources: 0.575 "),
        "{}",
        s.reason
    );
}

#[test]
fn rejections_are_unchanged() {
    let candidates = [node(0, 8_000, 25.0), node(1, 4_000, 25.0)];
    for hints in [
        &[("require", "gpu_mem_mib>=16000")][..],
        &[("require", "gpu_mem>=1")][..],
        &[("w_gpu", "x")][..],
    ] {
        let want = pick(&candidates, hints);
        assert!(want.is_err(), "{hints:?}");
        assert_eq!(score(&candidates, hints), want.map(|_| Scored::default()));
    }
}
