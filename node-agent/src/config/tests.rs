use super::*;

const MINIMAL: &str = r#"
gateway = "127.0.0.1:4433"
ca = "ca.pem"
token = "t0ken"
node_id = "n1"

[[services]]
name = "echo"
kind = "echo"
"#;

fn with_service(service: &str) -> String {
    format!(
        "gateway = \"gw.example:4433\"\nca = \"ca.pem\"\ntoken = \"t\"\nnode_id = \"n1\"\n\n[[services]]\n{service}\n"
    )
}

fn invalid(text: &str) -> String {
    match AgentConfig::from_toml_str(text) {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let config = AgentConfig::from_toml_str(MINIMAL).expect("parse");
    let expected = AgentConfig::new(
        "127.0.0.1:4433",
        "ca.pem",
        "t0ken",
        "n1",
        vec![ServiceConfig::new("echo", ServiceKind::Echo)],
    );
    assert_eq!(config, expected);
    assert_eq!(config.server_name, "localhost");
    assert_eq!(config.stats_interval_ms, 1000);
    assert_eq!(config.stats_heartbeat_ms(), 2000, "twice the interval");
    assert_eq!(config.stats_change_pct, 5.0);
    assert_eq!(config.max_payload_bytes, 16 * 1024 * 1024);
    assert_eq!(
        config.reconnect,
        ReconnectConfig {
            initial_ms: 200,
            max_ms: 10_000
        }
    );
    assert_eq!(config.services[0].max_concurrent, 4);
}

#[test]
fn the_example_config_parses() {
    let config = AgentConfig::from_toml_str(EXAMPLE_CONFIG).expect("example parses");
    assert_eq!(config.services.len(), 5);
    assert_eq!(
        config.labels.get("tier").map(String::as_str),
        Some("premium")
    );
    assert_eq!(
        config.services[0].kind,
        ServiceKind::Command(CommandConfig {
            argv: vec!["sha256sum".into()],
            env: BTreeMap::new(),
            cwd: None,
            max_output_bytes: 16 * 1024 * 1024,
        })
    );
    assert_eq!(
        config.services[1].kind,
        ServiceKind::Http(HttpConfig {
            url: "http://127.0.0.1:8000/v1/completions".into(),
            content_type: "application/json".into(),
            max_output_bytes: 16 * 1024 * 1024,
        })
    );
    assert_eq!(config.services[4].kind, ServiceKind::SumUp);
}

#[test]
fn command_options_parse() {
    let text = with_service(
        "name = \"py\"\nkind = \"command\"\ncommand = [\"python3\", \"-c\", \"print(1)\"]\nenv = { A = \"1\" }\ncwd = \"/tmp\"\nmax_output_bytes = 10\nmax_concurrent = 2",
    );
    let config = AgentConfig::from_toml_str(&text).expect("parse");
    let ServiceKind::Command(c) = &config.services[0].kind else {
        panic!("not a command: {config:?}");
    };
    assert_eq!(c.argv, ["python3", "-c", "print(1)"]);
    assert_eq!(c.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(c.cwd.as_deref(), Some(Path::new("/tmp")));
    assert_eq!(c.max_output_bytes, 10);
    assert_eq!(config.services[0].max_concurrent, 2);
}

#[test]
fn unknown_keys_are_errors_with_a_position() {
    let err = invalid(&format!("{MINIMAL}\nbogus = 1\n"));
    // `bogus` lands in the last table, [[services]].
    assert!(err.contains("bogus"), "{err}");
    assert!(err.contains("line "), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    let err = invalid(&format!("bogus = 1\n{MINIMAL}"));
    assert!(err.contains("line 1"), "{err}");
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn parse_errors_name_the_problem() {
    let err = invalid("gateway = ");
    assert!(err.starts_with("invalid config at line 1"), "{err}");
    let err =
        invalid("gateway = \"127.0.0.1:4433\"\nca = \"ca\"\ntoken = \"t\"\nnode_id = \"n\"\n");
    assert!(err.contains("services"), "{err}");
    let err = invalid(&with_service("name = \"x\"\nkind = \"shell\""));
    assert!(err.contains("shell"), "{err}");
    let err = invalid(&with_service("name = \"x\"\nkind = \"command\""));
    assert!(err.contains("needs command"), "{err}");
    let err = invalid(&with_service("name = \"x\"\nkind = \"http\""));
    assert!(err.contains("needs url"), "{err}");
    let err = invalid(&with_service(
        "name = \"x\"\nkind = \"echo\"\nurl = \"http://a\"",
    ));
    assert!(err.contains("`url` does not apply"), "{err}");
    let err = invalid(&with_service(
        "name = \"x\"\nkind = \"command\"\ncommand = [\"a\"]\nurl = \"http://a\"",
    ));
    assert!(err.contains("`url` does not apply"), "{err}");
}

#[test]
fn validation_rules() {
    let cases = [
        (
            "name = \"x\"\nkind = \"command\"\ncommand = []",
            "command must name a program",
        ),
        (
            "name = \"x\"\nkind = \"command\"\ncommand = [\"\"]",
            "command must name a program",
        ),
        (
            "name = \"x\"\nkind = \"http\"\nurl = \"not a url\"",
            "does not parse",
        ),
        (
            "name = \"x\"\nkind = \"http\"\nurl = \"https://a/b\"",
            "https is not supported",
        ),
        (
            "name = \"x\"\nkind = \"http\"\nurl = \"ftp://a/b\"",
            "is not http",
        ),
        (
            "name = \"\"\nkind = \"echo\"",
            "service name must be 1..=256 bytes",
        ),
        ("name = \"a b\"\nkind = \"echo\"", "whitespace"),
        (
            "name = \"x\"\nkind = \"echo\"\nmax_concurrent = 0",
            "max_concurrent must be >= 1",
        ),
        (
            "name = \"x\"\nkind = \"echo\"\n[[services]]\nname = \"x\"\nkind = \"sleep\"",
            "listed twice",
        ),
    ];
    for (service, expected) in cases {
        let err = invalid(&with_service(service));
        assert!(err.contains(expected), "{service:?}: {err}");
        assert!(err.starts_with("invalid config"), "{err}");
    }
}

#[test]
fn top_level_rules() {
    let base = AgentConfig::from_toml_str(MINIMAL).expect("parse");
    let check = |edit: &dyn Fn(&mut AgentConfig), expected: &str| {
        let mut config = base.clone();
        edit(&mut config);
        let err = config.validate().expect_err(expected).to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    };
    check(&|c| c.gateway = "127.0.0.1".into(), "host:port");
    check(&|c| c.gateway = "127.0.0.1:0".into(), "host:port");
    check(&|c| c.gateway = ":4433".into(), "host:port");
    check(&|c| c.token.clear(), "token");
    check(&|c| c.node_id.clear(), "node_id");
    check(&|c| c.node_id = "x".repeat(300), "node_id");
    check(&|c| c.cost_per_hour = -1.0, "cost_per_hour");
    check(&|c| c.cost_per_hour = f32::NAN, "cost_per_hour");
    check(&|c| c.stats_interval_ms = 0, "stats_interval_ms");
    check(&|c| c.max_payload_bytes = 0, "max_payload_bytes");
    check(&|c| c.reconnect.initial_ms = 0, "reconnect");
    check(&|c| c.reconnect.max_ms = 10, "reconnect");
    check(&|c| c.services.clear(), "at least one");
    check(&|c| c.server_name.clear(), "server_name");
}

#[test]
fn host_port_forms() {
    assert_eq!(split_host_port("127.0.0.1:4433"), Ok(("127.0.0.1", 4433)));
    assert_eq!(split_host_port("gw.example:1"), Ok(("gw.example", 1)));
    assert_eq!(split_host_port("[::1]:4433"), Ok(("::1", 4433)));
    assert!(split_host_port("gw:http").is_err());
    assert!(split_host_port("gw:70000").is_err());
}

#[test]
fn load_reports_missing_files() {
    let err = AgentConfig::load(Path::new("/nonexistent/agent.toml")).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/agent.toml"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, MINIMAL).expect("write");
    assert_eq!(AgentConfig::load(&path).expect("load").node_id, "n1");
}

#[test]
fn call_streams_are_the_slots_plus_room() {
    let service = |max_concurrent| ServiceConfig {
        max_concurrent,
        ..ServiceConfig::new("s", ServiceKind::Echo)
    };
    let config = |services| AgentConfig::new("gw:1", "ca.pem", "t", "n1", services);
    // The default echo service: 4 slots.
    assert_eq!(
        AgentConfig::from_toml_str(MINIMAL)
            .expect("parse")
            .max_call_streams(),
        4 + 1 + CALL_STREAM_MARGIN
    );
    assert_eq!(
        config(vec![service(60), service(40)]).max_call_streams(),
        100 + 25 + CALL_STREAM_MARGIN
    );
    // Freed streams come back in batches of an eighth of the limit: what is
    // left always covers the slots.
    for slots in [1, 7, 100, 1000, 100_000] {
        let limit = config(vec![service(slots)]).max_call_streams();
        assert!(limit - limit / 8 >= slots, "{slots} slots, limit {limit}");
    }
    assert_eq!(
        config(vec![service(u32::MAX), service(u32::MAX)]).max_call_streams(),
        u32::MAX
    );
}

#[test]
fn health_checks_parse_with_defaults_and_apply_to_http_kinds_only() {
    let config = AgentConfig::from_toml_str(&with_service(
        "name = \"x\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\nhealth_url = \"http://127.0.0.1:1/health\"\nhealth_interval_ms = 250",
    ))
    .expect("parse");
    let check = config.services[0].health.clone().expect("a health check");
    assert_eq!(check.url, "http://127.0.0.1:1/health");
    assert_eq!(check.interval_ms, 250);
    assert_eq!(check.timeout_ms, crate::config::DEFAULT_HEALTH_TIMEOUT_MS);
    assert_eq!(check.healthy_threshold, 2);
    assert_eq!(check.unhealthy_threshold, 2);
    let err = invalid(&with_service(
        "name = \"x\"\nkind = \"echo\"\nhealth_url = \"http://a/health\"",
    ));
    assert!(err.contains("`health_url` does not apply"), "{err}");
    let err = invalid(&with_service(
        "name = \"x\"\nkind = \"http\"\nurl = \"http://a/\"\nhealth_interval_ms = 5",
    ));
    assert!(err.contains("need health_url"), "{err}");
    let err = invalid(&with_service(
        "name = \"x\"\nkind = \"openai\"\nbase_url = \"http://a/v1\"\nhealth_url = \"http://a/health\"\nhealthy_threshold = 0",
    ));
    assert!(err.contains("threshold"), "{err}");
}

#[test]
fn metrics_scrapes_parse_with_server_defaults_and_overrides() {
    use crate::config::{ModelServer, SGLANG_KV_CACHE, SGLANG_WAITING, VLLM_KV_CACHE};
    let config = AgentConfig::from_toml_str(&with_service(
        "name = \"x\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nmetrics_url = \"http://127.0.0.1:8000/metrics\"",
    ))
    .expect("parse");
    let scrape = config.services[0].metrics.clone().expect("a scrape");
    assert_eq!(scrape.url, "http://127.0.0.1:8000/metrics");
    assert_eq!(scrape.server, ModelServer::Vllm, "vllm by default");
    assert_eq!(scrape.waiting, "vllm:num_requests_waiting");
    assert_eq!(scrape.kv_cache, VLLM_KV_CACHE);

    let config = AgentConfig::from_toml_str(&with_service(
        "name = \"x\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\nmetrics_url = \"http://127.0.0.1:1/metrics\"\nmetrics = \"sglang\"\nmetric_running = \"sglang_num_running_reqs\"",
    ))
    .expect("parse");
    let scrape = config.services[0].metrics.clone().expect("a scrape");
    assert_eq!(scrape.server, ModelServer::Sglang);
    assert_eq!(scrape.waiting, SGLANG_WAITING);
    assert_eq!(scrape.running, "sglang_num_running_reqs", "overridden");
    assert_eq!(scrape.kv_cache, SGLANG_KV_CACHE);
    assert_eq!(
        AgentConfig::from_toml_str(MINIMAL).expect("parse").services[0].metrics,
        None
    );
}

#[test]
fn bad_metrics_settings_are_refused() {
    for (entry, want) in [
        (
            "kind = \"echo\"\nmetrics_url = \"http://a/metrics\"",
            "`metrics_url` does not apply",
        ),
        (
            "kind = \"command\"\ncommand = [\"cat\"]\nmetric_waiting = \"q\"",
            "`metric_waiting` does not apply",
        ),
        (
            "kind = \"http\"\nurl = \"http://a/\"\nmetrics = \"sglang\"",
            "need metrics_url",
        ),
        (
            "kind = \"http\"\nurl = \"http://a/\"\nmetrics_url = \"https://a/metrics\"",
            "metrics_url",
        ),
        (
            "kind = \"openai\"\nbase_url = \"http://a/v1\"\nmetrics_url = \"http://a/metrics\"\nmetric_kv_cache = \"kv usage\"",
            "not a Prometheus metric name",
        ),
    ] {
        let err = invalid(&with_service(&format!("name = \"x\"\n{entry}")));
        assert!(err.contains(want), "{entry}: {err}");
    }
    let err = AgentConfig::from_toml_str(&with_service(
        "name = \"x\"\nkind = \"http\"\nurl = \"http://a/\"\nmetrics_url = \"http://a/metrics\"\nmetrics = \"tgi\"",
    ))
    .expect_err("unknown server");
    assert!(err.to_string().contains("tgi"), "{err}");
}

#[test]
fn metric_names_follow_the_prometheus_rule() {
    assert!(is_metric_name("vllm:num_requests_waiting"));
    assert!(is_metric_name("_x9"));
    assert!(is_metric_name(":a"));
    assert!(!is_metric_name(""));
    assert!(!is_metric_name("9a"));
    assert!(!is_metric_name("a-b"));
    assert!(!is_metric_name("a b"));
}

/// `MINIMAL` with `token = ...` replaced by `line`.
fn with_token_line(line: &str) -> String {
    MINIMAL.replace("token = \"t0ken\"", line)
}

#[test]
fn the_token_is_read_from_token_file_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("agent-token"), "  s3cret\n\n").expect("write");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, with_token_line("token_file = \"agent-token\"")).expect("write");
    let config = AgentConfig::load(&path).expect("load");
    assert_eq!(config.token, "s3cret");
    assert_eq!(config.token_file, None);
    config.validate().expect("still valid");
}

#[test]
fn token_and_token_file_go_alone() {
    let both = invalid(&with_token_line(
        "token = \"t\"\ntoken_file = \"agent-token\"",
    ));
    assert!(both.contains("token and token_file"), "{both}");
    let neither = invalid(&with_token_line(""));
    assert!(
        neither.contains("token or token_file is required"),
        "{neither}"
    );
    // Parsed without IO: the file is read by `load` or `run`.
    let config = AgentConfig::from_toml_str(&with_token_line("token_file = \"t\"")).expect("parse");
    assert_eq!(config.token_file, Some(PathBuf::from("t")));
}

#[test]
fn a_bad_token_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    let load = |token: Option<&[u8]>| {
        let file = dir.path().join("agent-token");
        let _ = std::fs::remove_file(&file);
        if let Some(bytes) = token {
            std::fs::write(&file, bytes).expect("write");
        }
        std::fs::write(&path, with_token_line("token_file = \"agent-token\"")).expect("write");
        AgentConfig::load(&path).expect_err("refused").to_string()
    };
    let missing = load(None);
    assert!(
        missing.starts_with("cannot read the agent token from") && missing.contains("agent-token"),
        "{missing}"
    );
    assert!(load(Some(b" \n")).ends_with("the file is empty"));
    let large = load(Some(&[b'x'; 5000]));
    assert!(large.contains("5000 bytes, more than 4096"), "{large}");
}

#[test]
fn home_is_expanded_in_file_paths() {
    let home = Some(OsStr::new("/home/op"));
    assert_eq!(
        expand_home(Path::new("~/.local/share/switchyard/ca.pem"), home),
        PathBuf::from("/home/op/.local/share/switchyard/ca.pem")
    );
    assert_eq!(
        expand_home(Path::new("certs/ca.pem"), home),
        PathBuf::from("certs/ca.pem")
    );
    assert_eq!(
        expand_home(Path::new("~other/ca.pem"), home),
        PathBuf::from("~other/ca.pem")
    );
    assert_eq!(
        expand_home(Path::new("~/ca.pem"), None),
        PathBuf::from("~/ca.pem")
    );
}

#[test]
fn the_example_points_at_the_gateways_files() {
    let config = AgentConfig::from_toml_str(EXAMPLE_CONFIG).expect("example parses");
    let data = Path::new("~/.local/share/switchyard");
    assert_eq!(config.ca, data.join("ca.pem"));
    assert_eq!(
        config.token_file.as_deref(),
        Some(&*data.join("agent-token"))
    );
    assert!(config.token.is_empty());
}

#[test]
fn tracing_is_off_by_default_and_the_example_section_parses() {
    let config = AgentConfig::from_toml_str(EXAMPLE_CONFIG).expect("example parses");
    assert_eq!(config.tracing.otlp_endpoint, None);
    let example = EXAMPLE_CONFIG
        .replace("# [tracing]", "[tracing]")
        .replace("# otlp_endpoint", "otlp_endpoint");
    let config = AgentConfig::from_toml_str(&example).expect("uncommented example parses");
    assert_eq!(
        config.tracing.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318")
    );
}

#[test]
fn a_service_asks_for_a_policy_and_says_it_is_idempotent() {
    let config = AgentConfig::from_toml_str(&with_service(
        "name = \"x\"\nkind = \"echo\"\npolicy = \"latency\"\nidempotent = true",
    ))
    .expect("parse");
    assert_eq!(config.services[0].policy.as_deref(), Some("latency"));
    assert!(config.services[0].idempotent);
    let services = crate::Services::new(&config.services).expect("services");
    let spec = &services.specs()[0];
    assert_eq!(
        (spec.policy.as_deref(), spec.idempotent),
        (Some("latency"), true)
    );
    let plain = AgentConfig::from_toml_str(MINIMAL).expect("parse");
    assert_eq!(plain.services[0].policy, None);
    assert!(!plain.services[0].idempotent);
    let err = invalid(&with_service(
        "name = \"x\"\nkind = \"echo\"\npolicy = \"\"",
    ));
    assert!(err.contains("policy"), "{err}");
}

#[test]
fn the_heartbeat_is_at_least_the_interval_and_at_most_a_minute() {
    let parse = |keys: &str| AgentConfig::from_toml_str(&format!("{keys}\n{MINIMAL}"));
    let config = parse("stats_interval_ms = 200").expect("parse");
    assert_eq!(config.stats_heartbeat_ms(), 400);
    let config = parse("stats_interval_ms = 40000").expect("parse");
    assert_eq!(config.stats_heartbeat_ms(), 60_000, "capped at a minute");
    let config = parse("stats_interval_ms = 500\nstats_heartbeat_ms = 500").expect("parse");
    assert_eq!(config.stats_heartbeat_ms(), 500, "every sample");
    for (keys, says) in [
        (
            "stats_interval_ms = 500\nstats_heartbeat_ms = 499",
            "stats_heartbeat_ms",
        ),
        ("stats_heartbeat_ms = 60001", "stats_heartbeat_ms"),
        ("stats_interval_ms = 60001", "stats_interval_ms"),
        ("stats_change_pct = -1.0", "stats_change_pct"),
        ("stats_change_pct = 101.0", "stats_change_pct"),
        ("stats_change_pct = nan", "stats_change_pct"),
    ] {
        let err = invalid(&format!("{keys}\n{MINIMAL}"));
        assert!(err.contains(says), "{keys}: {err}");
    }
}
