use protocol::{NodeSpec, NodeView};

use super::*;

fn node(labels: &[(&str, &str)]) -> NodeView {
    NodeView {
        key: 1,
        spec: NodeSpec {
            id: "node-a".into(),
            region: "eu-west".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            cost_per_hour: 0.9,
            services: vec![],
            slots: vec![],
            stats_interval_ms: 1000,
            heartbeat_ms: None,
            agent_version: "0.1.0".into(),
            gateway: false,
        },
        stats: None,
        services: vec![],
        slots: vec![],
        draining: false,
        connected_ms: 10,
        last_stats_ms: 5,
        calls_total: 3,
        jobs_in_flight: 0,
        direct: None,
    }
}

#[test]
fn nodes_json_labels_are_an_object() {
    let value =
        nodes_json(&[node(&[("tier", "premium"), ("gpu", "a100")]), node(&[])]).expect("json");
    assert_eq!(
        value[0]["spec"]["labels"],
        serde_json::json!({"tier": "premium", "gpu": "a100"})
    );
    assert_eq!(value[1]["spec"]["labels"], serde_json::json!({}));
    // The rest is the wire's view as it is.
    assert_eq!(value[0]["spec"]["id"], "node-a");
    assert_eq!(value[0]["calls_total"], 3);
}

#[test]
fn a_missing_ca_says_how_to_point_at_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("ca.pem");
    let given = check_ca(&missing, true).expect_err("missing").to_string();
    assert!(given.starts_with("the CA file "), "{given}");
    assert!(
        given.contains("--ca FILE") && given.contains("SWITCHYARD_CA"),
        "{given}"
    );
    let default = check_ca(&missing, false).expect_err("missing").to_string();
    assert!(
        default.starts_with("the gateway's default CA file "),
        "{default}"
    );
    std::fs::write(&missing, "pem").expect("write");
    check_ca(&missing, false).expect("there");
}

#[test]
fn gateway_flags_take_a_list_repeated_or_comma_separated() {
    use clap::Parser;
    let parse = |args: &[&str]| {
        let cli = Cli::try_parse_from(args).expect("parses");
        gateway_list(&cli.gateway).expect("addresses")
    };
    assert_eq!(parse(&["switchyard", "nodes"]), ["127.0.0.1:4433"]);
    assert_eq!(
        parse(&["switchyard", "--gateway", "a:1, b:2", "nodes"]),
        ["a:1", "b:2"]
    );
    assert_eq!(
        parse(&[
            "switchyard",
            "nodes",
            "--gateway",
            "a:1",
            "--gateway",
            "b:2,c:3"
        ]),
        ["a:1", "b:2", "c:3"]
    );
    let cli = Cli::try_parse_from(["switchyard", "--gateway", " , ", "nodes"]).expect("parses");
    let error = gateway_list(&cli.gateway).expect_err("no address");
    assert!(error.to_string().contains("--gateway"), "{error}");
}
