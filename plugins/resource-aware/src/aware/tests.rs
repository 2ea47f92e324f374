use std::cell::Cell;

use policy_sdk::{Candidate, NodeFacts, Policy, Request, SplitMix64, no_facts};

use super::ResourceAware;

/// A node with 1 GPU of `gpu_total` MiB (`gpu_free` free), otherwise idle and
/// identical to the others.
fn node(node: u32, gpu_free: u64, gpu_total: u64) -> Candidate {
    Candidate {
        node,
        in_flight: 0,
        max_concurrent: 4,
        cpu_pct: 10.0,
        mem_used_mib: 1000,
        mem_total_mib: 4000,
        gpu_count: 1,
        gpu_util_pct: 0.0,
        gpu_mem_free_mib: gpu_free,
        gpu_mem_total_mib: gpu_total,
        ..Candidate::default()
    }
}

/// Regions and labels of nodes 0..=2; node 3 is unknown to the host.
fn facts(node: u32) -> Option<NodeFacts> {
    let (region, labels): (&str, &[(&str, &str)]) = match node {
        0 => ("eu-west", &[("tier", "premium")]),
        1 => ("us-east", &[("tier", "basic")]),
        2 => ("eu-west", &[]),
        _ => return None,
    };
    Some(NodeFacts {
        id: format!("n{node}"),
        region: region.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        gpus: vec![],
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

fn pick(candidates: &[Candidate], hints: &[(&str, &str)]) -> Result<u32, String> {
    ResourceAware::new().pick(&request(hints), candidates, &facts)
}

#[test]
fn honours_gpu_memory_requirements() {
    let nodes = [
        node(0, 8192, 24_576),
        node(1, 24_000, 81_920),
        node(2, 16_000, 16_384),
    ];
    // Without requirements the freest GPU fraction wins.
    assert_eq!(pick(&nodes, &[]), Ok(2));
    assert_eq!(pick(&nodes, &[("require", "gpu_mem_mib>=20000")]), Ok(1));
    assert_eq!(pick(&nodes, &[("gpu_mem_mib", ">=20000")]), Ok(1));
    assert_eq!(pick(&nodes, &[("gpu_mem_mib>", "20000")]), Ok(1));
    assert_eq!(pick(&nodes, &[("require", "gpu_mem_mib<10000")]), Ok(0));
    assert_eq!(
        pick(&nodes, &[("require", "gpu_mem_mib>=32000")]),
        Err("no node meets gpu_mem_mib>=32000 (best: 24000)".to_owned())
    );
    assert_eq!(
        pick(&nodes[..1], &[("gpu_mem_mib", ">=16000")]),
        Err("no node meets gpu_mem_mib>=16000 (best: 8192)".to_owned())
    );
    assert_eq!(
        pick(&nodes, &[("require", "gpu_count=2")]),
        Err("no node meets gpu_count=2 (best: 1)".to_owned())
    );
    assert_eq!(
        pick(&nodes, &[("require", "in_flight!=0")]),
        Err("no node meets in_flight!=0 (found: 0)".to_owned())
    );
}

#[test]
fn honours_region_and_label_requirements() {
    let nodes = [
        node(0, 100, 1000),
        node(1, 900, 1000),
        node(2, 500, 1000),
        node(3, 1000, 1000),
    ];
    assert_eq!(pick(&nodes, &[]), Ok(3));
    assert_eq!(pick(&nodes, &[("region", "eu-west")]), Ok(2));
    assert_eq!(pick(&nodes, &[("require", "region!=eu-west")]), Ok(1));
    assert_eq!(pick(&nodes, &[("label:tier", "premium")]), Ok(0));
    assert_eq!(pick(&nodes, &[("require", "label:tier!=premium")]), Ok(1));
    assert_eq!(pick(&nodes, &[("require", "label:tier=")]), Ok(2));
    assert_eq!(
        pick(&nodes, &[("require", "region=eu-west,label:tier=premium")]),
        Ok(0)
    );
    assert_eq!(
        pick(&nodes, &[("region", "ap-south")]),
        Err("no node meets region=ap-south (found: (unknown node), eu-west, us-east)".to_owned())
    );
    assert_eq!(
        pick(&nodes, &[("require", "label:tier=gold")]),
        Err(
            "no node meets label:tier=gold (found: (unknown node), (unset), basic, premium)"
                .to_owned()
        )
    );
    // Numeric requirements are checked first, whatever the hint order.
    assert_eq!(
        pick(&nodes, &[("region", "us-east"), ("gpu_mem_mib", ">=400")]),
        Ok(1)
    );
    assert_eq!(
        pick(&nodes, &[("region", "us-east"), ("gpu_mem_mib", "<=500")]),
        Err(
            "no node meets region=us-east among nodes meeting gpu_mem_mib<=500 (found: eu-west)"
                .to_owned()
        )
    );
}

#[test]
fn node_info_is_fetched_only_when_needed_and_once_per_candidate() {
    let calls = Cell::new(0);
    let counting = |key: u32| {
        calls.set(calls.get() + 1);
        facts(key)
    };
    let nodes = [
        node(0, 100, 1000),
        node(1, 900, 1000),
        node(2, 500, 1000),
        node(3, 1000, 1000),
    ];
    let mut p = ResourceAware::new();
    let mut run = |hints: &[(&str, &str)]| {
        calls.set(0);
        let got = p.pick(&request(hints), &nodes, &counting);
        (got, calls.get())
    };
    assert_eq!(run(&[("require", "gpu_mem_mib>=100")]), (Ok(3), 0));
    assert_eq!(
        run(&[("require", "region=eu-west,label:tier!=basic,region!=x")]),
        (Ok(2), 4)
    );
    // Only the candidates left by the numeric requirements are looked up.
    assert_eq!(
        run(&[("region", "eu-west"), ("gpu_mem_mib", ">=500")]),
        (Ok(2), 3)
    );
    // A reject that lists the values re-uses the facts already fetched.
    assert_eq!(run(&[("region", "mars")]).1, 4);
}

#[test]
fn ranks_by_free_resources_with_weights() {
    let base = node(0, 500, 1000);
    let busy_cpu = Candidate {
        cpu_pct: 90.0,
        ..base
    };
    let busy_slots = Candidate {
        in_flight: 3,
        ..base
    };
    let low_mem = Candidate {
        mem_used_mib: 3900,
        ..base
    };
    let no_gpu = Candidate {
        gpu_count: 0,
        gpu_mem_total_mib: 0,
        gpu_mem_free_mib: 0,
        ..base
    };
    let hot_gpu = Candidate {
        gpu_util_pct: 95.0,
        ..base
    };
    assert_eq!(pick(&[busy_cpu, base], &[]), Ok(1));
    assert_eq!(pick(&[busy_slots, base], &[]), Ok(1));
    assert_eq!(pick(&[low_mem, base], &[]), Ok(1));
    assert_eq!(pick(&[hot_gpu, base], &[]), Ok(1));
    // No GPU scores a neutral 0.5: better than a hot, half-full GPU (0.275),
    // worse than an idle one (0.75).
    assert_eq!(pick(&[hot_gpu, no_gpu], &[]), Ok(1));
    assert_eq!(pick(&[no_gpu, base], &[]), Ok(1));
    // Ties go to the lower index.
    assert_eq!(pick(&[base, base, base], &[]), Ok(0));
    // Weights: only slots count, so the busy-CPU node ties and index 0 wins;
    // only the CPU counts, so the busy-slots node is as good as any.
    let w_load_only = [("w_gpu", "0"), ("w_cpu", "0"), ("w_mem", "0")];
    assert_eq!(pick(&[busy_cpu, busy_slots, base], &w_load_only), Ok(0));
    let w_cpu_only = [("w_gpu", "0"), ("w_mem", "0"), ("w_load", "0")];
    assert_eq!(pick(&[busy_cpu, busy_slots, base], &w_cpu_only), Ok(1));
    // A heavy GPU weight outweighs a busy CPU.
    let cool_but_busy_cpu = Candidate {
        cpu_pct: 90.0,
        gpu_mem_free_mib: 1000,
        ..base
    };
    assert_eq!(pick(&[base, cool_but_busy_cpu], &[]), Ok(0));
    assert_eq!(pick(&[base, cool_but_busy_cpu], &[("w_gpu", "5")]), Ok(1));
}

#[test]
fn rejects_malformed_hints() {
    let nodes = [node(0, 1, 2)];
    assert!(
        pick(&nodes, &[("require", "gpu_mem>=1")])
            .expect_err("bad metric")
            .starts_with("bad requirement \"gpu_mem>=1\": unknown metric \"gpu_mem\"")
    );
    assert_eq!(
        pick(&nodes, &[("gpu_count", ">=two")]),
        Err("bad requirement \"gpu_count>=two\": \"two\" is not a number".to_owned())
    );
    assert_eq!(
        pick(&nodes, &[("w_gpu", "-1")]),
        Err("bad hint w_gpu=\"-1\": expected a number >= 0".to_owned())
    );
    assert_eq!(pick(&nodes, &[("max_cost", "whatever")]), Ok(0));
}

#[test]
fn any_pick_is_in_range() {
    let mut rng = SplitMix64::new(17);
    let mut p = ResourceAware::new();
    for _ in 0..3000 {
        let len = 1 + rng.below(20);
        let candidates: Vec<Candidate> = (0..len)
            .map(|i| {
                let total = 1 + rng.below(80_000) as u64;
                let max = 1 + rng.below(8) as u32;
                Candidate {
                    node: i as u32,
                    in_flight: rng.below(max as usize) as u32,
                    max_concurrent: max,
                    cpu_pct: (rng.next_f64() * 100.0) as f32,
                    mem_used_mib: rng.below(1000) as u64,
                    mem_total_mib: rng.below(2000) as u64,
                    gpu_count: rng.below(4) as u32,
                    gpu_util_pct: (rng.next_f64() * 100.0) as f32,
                    gpu_mem_free_mib: rng.below(total as usize) as u64,
                    gpu_mem_total_mib: total,
                    ..Candidate::default()
                }
            })
            .collect();
        match p.pick(&request(&[("w_mem", "2")]), &candidates, &no_facts) {
            Ok(i) => assert!((i as usize) < len),
            Err(e) => panic!("{e}"),
        }
        if let Ok(i) = p.pick(
            &request(&[("require", "gpu_mem_mib>=40000")]),
            &candidates,
            &no_facts,
        ) {
            assert!((i as usize) < len);
            assert!(candidates[i as usize].gpu_mem_free_mib >= 40_000);
        }
    }
}
