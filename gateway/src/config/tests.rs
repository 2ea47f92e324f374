//! Tests of `gateway.toml` parsing and validation.

use super::*;

#[test]
fn empty_file_is_the_default() {
    let config = GatewayConfig::from_toml_str("").expect("parse");
    assert_eq!(config, GatewayConfig::default());
    assert_eq!(config.listen.to_string(), "127.0.0.1:4433");
    // Off the ports of Prometheus (9090) and the common web and model
    // servers (8000, 8080): the gateway starts beside them.
    assert_eq!(config.admin_listen.to_string(), "127.0.0.1:4490");
    assert_eq!(config.max_payload_bytes, 16 * 1024 * 1024);
}

#[test]
fn http_ingress_and_model_aliases() {
    let config = GatewayConfig::default();
    assert!(config.http.enabled);
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:4480");
    assert!(!config.http.uses_tls(), "plain HTTP on loopback");
    let config = GatewayConfig::from_toml_str(
        r#"
        [http]
        listen = "0.0.0.0:8443"
        timeout_ms = 1000
        [models]
        "llama-3-8b" = "llama"
        "#,
    )
    .expect("parse");
    assert!(config.http.uses_tls(), "TLS by default off loopback");
    assert_eq!(config.http.timeout_ms, 1000);
    assert_eq!(config.service_for_model("llama-3-8b"), "llama");
    assert_eq!(config.service_for_model("mistral"), "mistral");
    let plain = GatewayConfig::from_toml_str("[http]\nlisten = \"0.0.0.0:80\"\ntls = false")
        .expect("parse");
    assert!(!plain.http.uses_tls());
    assert!(GatewayConfig::from_toml_str("[http]\ntimeout_ms = 0").is_err());
    assert!(GatewayConfig::from_toml_str("[models]\n\"a\" = \"\"").is_err());
    assert!(GatewayConfig::from_toml_str("[http]\nport = 1").is_err());
}

#[test]
fn services_choose_policies() {
    let config = GatewayConfig::from_toml_str(
        r#"
        listen = "127.0.0.1:0"
        default_policy = "round-robin"
        agent_token = "s3cret"
        [services.llama]
        policy = "latency"
        "#,
    )
    .expect("parse");
    assert_eq!(config.policy_for("llama"), "latency");
    assert_eq!(config.policy_for("other"), "round-robin");
}

#[test]
fn outlier_settings_and_their_bounds() {
    assert_eq!(GatewayConfig::default().outlier.consecutive_failures, 5);
    let config =
        GatewayConfig::from_toml_str("[outlier]\nconsecutive_failures = 3\nbase_ejection_s = 10\n")
            .expect("parse");
    assert_eq!(config.outlier.consecutive_failures, 3);
    assert_eq!(config.outlier.base_ejection_s, 10);
    assert_eq!(config.outlier.max_ejection_s, 300);
    let core = crate::scheduler::core_config(&config);
    assert_eq!(
        core.outlier.base_ejection,
        std::time::Duration::from_secs(10)
    );
    let bad = GatewayConfig::from_toml_str("[outlier]\nmax_ejection_percent = 101\n");
    assert!(bad.is_err(), "{bad:?}");
}

#[test]
fn queue_and_swap_settings() {
    let config = GatewayConfig::from_toml_str(
        r#"
        [queue]
        capacity = 50
        [swap]
        swap_cooldown_s = 30
        [services.llama]
        queue_capacity = 5
        swap_cooldown_s = 120
        [nodes.gpu-b]
        swap_cooldown_s = 10
        "#,
    )
    .expect("parse");
    assert_eq!(config.queue_capacity("llama"), 5);
    assert_eq!(config.queue_capacity("other"), 50);
    assert_eq!(config.node_swap_cooldown("gpu-b").as_secs(), 10);
    assert_eq!(config.node_swap_cooldown("gpu-a").as_secs(), 30);
    assert_eq!(config.service_swap_cooldown("llama").as_secs(), 120);
    assert_eq!(config.service_swap_cooldown("other").as_secs(), 0);
    assert!(GatewayConfig::from_toml_str("[swap]\nqueue_ratio = 0").is_err());
}

#[test]
fn cache_settings() {
    let config = GatewayConfig::from_toml_str(
        r#"
        [cache]
        max_bytes = 1048576
        [services.llama]
        cache_ttl_s = 300
        cache_key_hints = ["model", "temperature"]
        [services.other]
        "#,
    )
    .expect("parse");
    assert_eq!(config.cache.max_bytes, 1 << 20);
    assert_eq!(config.cache_ttl("llama").map(|d| d.as_secs()), Some(300));
    assert_eq!(config.cache_ttl("other"), None, "off unless set");
    assert_eq!(config.services["llama"].cache_key_hints.len(), 2);
    assert_eq!(GatewayConfig::default().cache.max_bytes, 256 << 20);
    for bad in [
        "[services.a]\ncache_ttl_s = 0",
        "[services.a]\ncache_ttl_s = 40000000",
        "[services.a]\ncache_ttl_s = 5\ncache_key_hints = [\"policy\"]",
        "[services.a]\ncache_key_hints = [\"\"]",
    ] {
        let result = GatewayConfig::from_toml_str(bad);
        assert!(matches!(result, Err(ConfigError::Invalid(_))), "{bad}");
    }
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    assert!(matches!(
        GatewayConfig::from_toml_str("lisen = \"x\""),
        Err(ConfigError::Parse(_))
    ));
    assert!(matches!(
        GatewayConfig::from_toml_str("max_payload_bytes = 0"),
        Err(ConfigError::Invalid(_))
    ));
}

#[test]
fn tracing_is_off_by_default_and_takes_an_otlp_endpoint() {
    assert_eq!(GatewayConfig::default().tracing.otlp_endpoint, None);
    let config =
        GatewayConfig::from_toml_str("[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n")
            .expect("parse");
    assert_eq!(
        config.tracing.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318")
    );
    assert!(GatewayConfig::from_toml_str("[tracing]\nendpoint = \"x\"\n").is_err());
    // The example's commented section, uncommented, parses.
    let example = crate::cli::EXAMPLE_CONFIG
        .replace("# [tracing]", "[tracing]")
        .replace("# otlp_endpoint", "otlp_endpoint");
    let config = GatewayConfig::from_toml_str(&example).expect("example parses");
    assert!(config.tracing.otlp_endpoint.is_some());
}

#[test]
fn cluster_is_off_by_default_and_the_example_section_parses() {
    assert_eq!(GatewayConfig::default().cluster, None);
    assert_eq!(
        GatewayConfig::from_toml_str("").expect("empty").cluster,
        None
    );
    assert!(
        GatewayConfig::from_toml_str("[cluster]\nname = \"a\"\n").is_err(),
        "etcd is required"
    );
    // The example's commented section, its keys uncommented, parses.
    let mut in_cluster = false;
    let example = crate::cli::EXAMPLE_CONFIG
        .lines()
        .map(|l| {
            in_cluster = (in_cluster && !l.is_empty()) || l == "# [cluster]";
            match l.strip_prefix("# ") {
                Some(r) if in_cluster && (r.contains(" = ") || r == "[cluster]") => r.to_string(),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = GatewayConfig::from_toml_str(&example).expect("example parses");
    let cluster = config.cluster.expect("a [cluster] section");
    let defaults = ClusterConfig::with_etcd(cluster.etcd.clone());
    assert_eq!(cluster.name.as_deref(), Some("gw-a"));
    assert_eq!(cluster.prefix, defaults.prefix);
    assert_eq!(cluster.lease_ttl_s, defaults.lease_ttl_s);
    assert_eq!(cluster.connect_timeout_ms, defaults.connect_timeout_ms);
}
