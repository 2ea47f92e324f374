//! Picks through the real policy host: no policy loaded, a bad hint, a
//! real plugin from `plugins/dist` (built by `make plugins`), and a
//! plugin that traps (`plugins/dist-test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use protocol::CallHead;
use switchyard_core::{Candidate, Core, CoreConfig};

use super::*;

fn policies() -> Policies {
    // A deadline a loaded test machine cannot miss by descheduling: these
    // tests check answers, not deadlines.
    let config = crate::GatewayConfig {
        pick_deadline_ms: 2000,
        ..crate::GatewayConfig::default()
    };
    let core = Arc::new(std::sync::Mutex::new(Core::new(CoreConfig::default())));
    Policies::new(&config, Arc::new(Registry::new(core))).expect("engine")
}

fn load(policies: &Policies, dir: &str, name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(dir)
        .join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path).expect("run `make plugins` first");
    policies.load_file(&path, &bytes, "test");
    assert!(policies.is_loaded(name), "{name} loaded");
}

fn request(hints: &[(&str, &str)], in_flight: &[u32]) -> PickRequest {
    let mut head = CallHead::new("svc", 0, 1000);
    head.hints = hints
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    PickRequest {
        call: 1,
        head: Arc::new(head),
        candidates: in_flight
            .iter()
            .enumerate()
            .map(|(i, n)| Candidate {
                node: 10 + u32::try_from(i).unwrap(),
                in_flight: *n,
                max_concurrent: 8,
                ..Candidate::default()
            })
            .collect(),
        prefix: Arc::default(),
    }
}

#[test]
fn with_no_policy_loaded_the_builtin_round_robin_ranks_every_candidate() {
    let p = policies();
    let (first, picked) = p.pick(&request(&[], &[0, 0, 0]));
    let (second, _) = p.pick(&request(&[], &[0, 0, 0]));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(picked.policy_name, BUILTIN_ROUND_ROBIN);
    assert_eq!(first.nodes.len(), 3, "a full ranking");
    assert_ne!(first.nodes[0], second.nodes[0], "it rotates");
}

#[test]
fn an_unknown_policy_hint_refuses_the_call() {
    let p = policies();
    let (ranking, _) = p.pick(&request(&[("policy", "nope")], &[0]));
    match ranking {
        Err(PickError::Refused(e)) => {
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("nope"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_real_plugin_ranks_by_its_algorithm_and_is_named_in_the_pick() {
    let p = policies();
    load(&p, "dist", "least-request");
    let (ranking, picked) = p.pick(&request(&[("policy", "least-request")], &[5, 0, 2]));
    // Two random draws: never the busiest first; then the rest by load.
    let ranking = ranking.unwrap();
    let nodes = &ranking.nodes;
    assert_eq!(nodes.len(), 3, "least-request ranks every candidate");
    assert_ne!(nodes[0], 10, "the busiest never wins a draw");
    assert_eq!(nodes[2], 10, "the busiest is ranked last");
    assert_eq!(picked.policy_name, "least-request");
    // The explanation comes from the ranking: its reason, and the
    // chosen node first with its score (-in_flight / max_concurrent).
    assert_eq!(ranking.scores.len(), 3);
    let explained = picked.explanation.expect("explained");
    assert_eq!(explained.reason, ranking.reason);
    assert!(
        explained.reason.starts_with("least loaded of two drawn"),
        "{}",
        explained.reason
    );
    assert_eq!(explained.top[0].node, nodes[0]);
    let chosen = usize::try_from(nodes[0] - 10).unwrap();
    assert_eq!(explained.top[0].score, Some(ranking.scores[chosen]));
    assert_eq!(explained.offered, 3);
}

#[test]
fn a_trapping_plugin_fails_the_pick_and_is_rebuilt_off_the_hot_path() {
    let p = policies();
    load(&p, "dist-test", "panic-trap");
    let evil = request(&[("policy", "panic-trap"), ("evil", "1")], &[0, 0]);
    assert!(matches!(p.pick(&evil).0, Err(PickError::Failed(_))));
    let benign = request(&[("policy", "panic-trap")], &[0, 0]);
    let start = Instant::now();
    loop {
        match p.pick(&benign).0 {
            Ok(_) => break,
            Err(PickError::Failed(why)) if why.contains("rebuilt") => {
                assert!(start.elapsed() < std::time::Duration::from_secs(10));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_policy_a_node_asks_for_counts_while_the_operator_set_none() {
    let p = policies();
    load(&p, "dist", "round-robin");
    load(&p, "dist", "least-request");
    load(&p, "dist", "random");
    let node = |policy: &str| protocol::NodeSpec {
        id: "n".into(),
        region: String::new(),
        labels: Vec::new(),
        cost_per_hour: 0.0,
        services: vec![protocol::ServiceSpec {
            name: "svc".into(),
            max_concurrent: 8,
            load_ms: 0,
            model: false,
            policy: Some(policy.into()),
            idempotent: false,
        }],
        slots: Vec::new(),
        stats_interval_ms: 1000,
        heartbeat_ms: None,
        agent_version: String::new(),
        gateway: false,
    };
    let active = |p: &Policies| p.pick(&request(&[], &[0, 0])).1.policy_name;
    // The default policy until a node asks.
    assert_eq!(active(&p), "round-robin");
    p.asked_by(&node("least-request"));
    assert_eq!(active(&p), "least-request");
    // An unloaded ask leaves the default in place (kept for when it loads).
    p.asked_by(&node("not-loaded"));
    assert_eq!(active(&p), "round-robin");
    p.asked_by(&node("least-request"));
    // The operator's choice wins.
    p.set_service_policy("svc", "random").expect("set");
    assert_eq!(active(&p), "random");
    p.asked_by(&node("least-request"));
    assert_eq!(active(&p), "random");
    let table = p.table(&["svc".to_string()]);
    let svc = table
        .services
        .iter()
        .find(|s| s.service == "svc")
        .expect("svc");
    assert_eq!(svc.active, "random");
}
