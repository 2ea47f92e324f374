//! Model-server load: what an agent's stats report of its servers' queues
//! and KV caches reaches the policies as each candidate's `model_load`.

use protocol::{NodeStats, ServiceLoad};

use super::*;
use crate::ModelLoad;

fn load(service: &str, waiting: u32, running: u32, kv_cache_pct: f32) -> ServiceLoad {
    ServiceLoad {
        service: service.into(),
        waiting,
        running,
        kv_cache_pct,
    }
}

fn report(h: &mut Harness, node: NodeKey, model_load: Vec<ServiceLoad>) {
    h.send(Event::Stats {
        node,
        stats: NodeStats {
            model_load,
            ..NodeStats::default()
        },
    });
}

#[test]
fn each_candidate_carries_its_nodes_latest_model_load_for_the_service() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("n1", &[("llm", 8, 0), ("other", 8, 0)], &[]));
    h.up(2, spec("n2", &[("llm", 8, 0)], &[]));
    h.up(3, spec("n3", &[("llm", 8, 0)], &[]));
    report(
        &mut h,
        1,
        vec![load("llm", 3, 7, 42.5), load("other", 9, 9, 9.0)],
    );
    report(&mut h, 2, vec![load("llm", 0, 1, f32::NAN)]);
    let by_node: Vec<(NodeKey, Option<ModelLoad>)> = h
        .candidates("llm")
        .iter()
        .map(|c| (c.node, c.model_load))
        .collect();
    assert_eq!(
        by_node,
        vec![
            (
                1,
                Some(ModelLoad {
                    waiting: 3,
                    running: 7,
                    kv_cache_pct: 42.5
                })
            ),
            (
                2,
                Some(ModelLoad {
                    waiting: 0,
                    running: 1,
                    kv_cache_pct: 0.0
                })
            ),
            (3, None),
        ],
        "node 2's NaN reads as 0 %, node 3 reports none"
    );
}

#[test]
fn a_report_without_the_service_clears_its_load() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("n1", &[("llm", 8, 0)], &[]));
    report(&mut h, 1, vec![load("llm", 5, 5, 250.0)]);
    let node = h.core.fleet().get(1).expect("node");
    assert_eq!(
        node.model_load("llm").map(|l| l.kv_cache_pct),
        Some(100.0),
        "clamped"
    );
    // The view carries the report as sent, per service.
    let view = node.view(h.now);
    assert_eq!(view.stats.expect("stats").model_load[0].waiting, 5);
    report(&mut h, 1, Vec::new());
    assert_eq!(h.core.fleet().get(1).expect("node").model_load("llm"), None);
    assert_eq!(h.candidates("llm")[0].model_load, None);
}
