//! The scenario format: every shipped scenario parses, mistakes are refused
//! with the place named.

use std::path::Path;

use switchyard_sim::Scenario;
use switchyard_sim::scenario::{Dist, Process};

use crate::common::{data, scenario};

const MINIMAL: &str = r#"
duration_s = 10.0
policies = ["round-robin.wasm"]
[[services]]
name = "svc"
service_time = { kind = "exponential", mean_ms = 100.0 }
[[nodes]]
id = "n"
max_concurrent = 1
services = ["svc"]
[[arrivals]]
service = "svc"
process = { kind = "poisson", rate_per_s = 1.0 }
"#;

#[test]
fn every_shipped_scenario_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                !s.policies.is_empty() && !s.description.is_empty(),
                "{}",
                s.name
            );
            seen += 1;
        }
    }
    assert!(seen >= 5, "{seen} scenarios");
}

#[test]
fn defaults_fill_what_a_minimal_scenario_leaves_out() {
    let s = scenario(MINIMAL);
    assert_eq!(s.name, "test");
    assert_eq!(s.seed, 1);
    assert_eq!(s.warmup_s, 0.0);
    assert!(s.core.swap);
    assert_eq!(s.core.queue_ratio, 4);
    let g = &s.nodes[0];
    assert_eq!((g.count, g.workers, g.speed), (1, None, 1.0));
    assert_eq!(g.ids(), ["n"]);
    let config = s.core.config();
    assert!(!config.positions, "nobody listens to positions");
    assert_eq!(config.swap.node_cooldown.as_secs(), 60);
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    for (from, to) in [
        ("duration_s = 10.0", "duration_s = 10.0\nspeed = 2.0"),
        ("max_concurrent = 1", "max_concurrent = 1\nworker = 2"),
        ("mean_ms = 100.0", "mean_ms = 100.0, median_ms = 3.0"),
        ("rate_per_s = 1.0", "rate = 1.0"),
    ] {
        let text = MINIMAL.replace(from, to);
        let err = Scenario::parse(&text, "t", &data())
            .expect_err(to)
            .to_string();
        assert!(err.contains("unknown field"), "{to}: {err}");
    }
}

#[test]
fn wrong_references_and_ranges_are_refused() {
    for (from, to, says) in [
        (
            "services = [\"svc\"]",
            "services = [\"nope\"]",
            "unknown service",
        ),
        ("service = \"svc\"", "service = \"nope\"", "unknown service"),
        ("max_concurrent = 1", "max_concurrent = 0", "max_concurrent"),
        (
            "duration_s = 10.0",
            "duration_s = 10.0\nwarmup_s = 20.0",
            "warmup_s",
        ),
        (
            "{ kind = \"exponential\", mean_ms = 100.0 }",
            "{ kind = \"log_normal\", median_ms = 100.0, sigma = 0.5, p99_ms = 300.0 }",
            "sigma or p99_ms",
        ),
    ] {
        let text = MINIMAL.replace(from, to);
        let err = Scenario::parse(&text, "t", &data())
            .expect_err(to)
            .to_string();
        assert!(err.contains(says), "{to}: {err}");
    }
}

#[test]
fn every_kind_of_distribution_and_process_parses() {
    let text = MINIMAL
        .replace(
            "{ kind = \"exponential\", mean_ms = 100.0 }",
            "{ kind = \"trace\", file = \"durations.txt\" }",
        )
        .replace(
            "{ kind = \"poisson\", rate_per_s = 1.0 }",
            "{ kind = \"on_off\", rate_per_s = 4.0, on_s = 5.0, off_s = 5.0 }",
        );
    let s = scenario(&text);
    assert_eq!(
        s.services[0].service_time,
        Dist::Trace {
            file: "durations.txt".into()
        }
    );
    assert!(matches!(
        s.arrivals[0].process,
        Process::OnOff { off_rate_per_s, offset_s, .. } if off_rate_per_s == 0.0 && offset_s == 0.0
    ));
}

#[test]
fn chat_prefix_runs_at_seventy_percent_of_the_uncached_capacity() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/chat-prefix.toml");
    let s = Scenario::load(&path).unwrap();
    let Process::Chat(chat) = &s.arrivals[0].process else {
        panic!("chat arrivals");
    };
    let g = &s.nodes[0];
    let model = g.model.expect("a model");
    let servers = g.count * g.workers.unwrap();
    let load = chat.uncached_load(&model, servers);
    assert!((load - 0.70).abs() < 0.005, "{load}");
    // Each node's cache holds about a third of all histories.
    let histories = f64::from(chat.conversations) * chat.mean_prompt_tokens();
    let share = model.kv_cache_tokens as f64 / histories;
    assert!((0.3..0.4).contains(&share), "{share}");
}
