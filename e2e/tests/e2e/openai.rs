//! Any OpenAI client through the gateway: the stock `openai` Python
//! package (pinned, in the project's virtualenv from `make setup`) against
//! the HTTP ingress, in front of a real model server (`switchyard-toy-model`,
//! served in the test's process) behind an agent's `openai` service; tenants
//! with keys and rate limits; fair turns across tenants in the queue; and
//! anonymous access refused off loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use client::{Client, ClientConfig};
use gateway::config::TenantConfig;
use gateway::{Gateway, GatewayConfig};

use crate::common::{Fleet, TOKEN, service};
use crate::ingress::curl;

/// A toy model server on a free port, served in this process (its own
/// thread and runtime) until dropped.
pub struct Toy {
    _server: switchyard_toy_model::Server,
    pub url: String,
}

impl Toy {
    /// Starts `switchyard-toy-model --name NAME` with extra `args` and waits
    /// until it is healthy.
    pub async fn start(name: &str, args: &[&str]) -> Self {
        let flags = ["--port", "0", "--name", name, "--load-ms", "0"];
        let args = switchyard_toy_model::Args::from_flags(flags.iter().chain(args))
            .expect("toy model flags");
        let server = switchyard_toy_model::Server::start(args).expect("toy model starts");
        let url = server.url();
        let health = format!("{url}/health");
        let started = Instant::now();
        while reqwest_ok(&health).await.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "toy model unhealthy"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            _server: server,
            url,
        }
    }
}

async fn reqwest_ok(url: &str) -> Option<()> {
    let response = reqwest::get(url).await.ok()?;
    response.status().is_success().then_some(())
}

fn tenant(name: &str, key: &str) -> TenantConfig {
    TenantConfig {
        api_keys: vec![key.into()],
        ..TenantConfig::new(name)
    }
}

/// The project's virtualenv's Python (`make setup` creates it).
fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `make setup` (it creates the virtualenv with the pinned openai client)",
        python.display()
    );
    python
}

#[tokio::test]
async fn the_openai_python_client_works_through_the_gateway() {
    let toy = Toy::start("llama", &["--tokens-per-s", "20"]).await;
    let mut fleet = Fleet::start(|config| {
        config.tenants = vec![tenant("team-a", "sk-team-a"), {
            let mut slow = tenant("slow", "sk-slow");
            slow.calls_per_s = Some(0.1);
            slow.burst = Some(1);
            slow
        }];
        config.models.insert("llama-3-8b".into(), "llama".into());
    })
    .await;
    let base_url = format!("base_url = \"{}/v1\"", toy.url);
    fleet.spawn_agent("node-a", TOKEN, &service("llama", "openai", &base_url));
    fleet.wait_nodes(1).await;
    let ingress = fleet.gateway.http_url().expect("ingress");

    let python = venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/python/openai_checks.py");
    let toy_url = toy.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["--base-url", &format!("{ingress}/v1")])
            .args(["--key", "sk-team-a", "--limited-key", "sk-slow"])
            .args(["--model", "llama", "--alias", "llama-3-8b"])
            .args(["--toy", &toy_url])
            .output()
            .expect("python runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    for check in [
        "chat",
        "stream",
        "embeddings",
        "models",
        "upstream_error",
        "wrong_key",
        "rate_limited",
        "cancel",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok {check}"))),
            "{check} missing:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn curl_streams_a_chat_completion_and_tenants_are_enforced() {
    let toy = Toy::start("llama", &["--tokens-per-s", "20"]).await;
    let mut fleet = Fleet::start(|config| {
        config.tenants = vec![tenant("team-a", "sk-team-a"), {
            let mut narrow = tenant("narrow", "sk-narrow");
            narrow.services = vec!["echo-*".into()];
            narrow
        }];
    })
    .await;
    let base_url = format!("base_url = \"{}/v1\"", toy.url);
    fleet.spawn_agent("node-a", TOKEN, &service("llama", "openai", &base_url));
    fleet.wait_nodes(1).await;
    let url = format!(
        "{}/v1/chat/completions",
        fleet.gateway.http_url().expect("ingress")
    );
    let body = r#"{"model":"llama","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"a b c"}]}"#;

    let run = |key: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let auth = format!("authorization: Bearer {key}");
            curl(
                &[
                    "-X",
                    "POST",
                    "-H",
                    &auth,
                    "-H",
                    "content-type: application/json",
                    &url,
                ],
                Some(body),
            )
        })
    };
    let got = run("sk-team-a").await.expect("curl");
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.header("content-type"), Some("text/event-stream"));
    let events: Vec<&str> = got
        .body
        .lines()
        .filter(|l| l.starts_with("data: "))
        .collect();
    assert!(events.len() >= 20, "{}", got.body);
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    assert!(
        got.first_byte_s < got.total_s / 2.0,
        "streamed: first byte at {} s of {} s",
        got.first_byte_s,
        got.total_s
    );

    let got = run("sk-wrong").await.expect("curl");
    assert_eq!(got.status, 401, "{got:?}");
    assert_eq!(got.openai_error().0, "authentication_error");
    let got = run("sk-narrow").await.expect("curl");
    assert_eq!(got.status, 403, "{got:?}");
    assert_eq!(got.openai_error().0, "permission_error");

    // QUIC callers present their key too.
    let mut config = ClientConfig::new(fleet.addr.clone(), fleet.ca());
    let anonymous = Client::connect(config.clone()).await.expect("connect");
    let err = anonymous.call("llama", body).await.expect_err("no key");
    assert_eq!(err.kind(), Some(client::ErrorKind::Unauthorized), "{err}");
    config.api_key = Some("sk-team-a".into());
    let keyed = Client::connect(config).await.expect("connect");
    let mut stream = keyed
        .call("llama", body)
        .endpoint("/chat/completions")
        .stream()
        .await
        .expect("streamed chat over QUIC");
    assert_eq!(
        stream.meta.content_type.as_deref(),
        Some("text/event-stream")
    );
    let first = futures_util::StreamExt::next(&mut stream)
        .await
        .expect("a chunk")
        .expect("a chunk");
    assert!(first.starts_with(b"data: "), "{first:?}");
}

#[tokio::test]
async fn waiting_calls_take_turns_across_tenants() {
    let mut fleet = Fleet::start(|config| {
        config.tenants = vec![tenant("a", "sk-a"), tenant("b", "sk-b")];
    })
    .await;
    let log = fleet.dir.path().join("order");
    let record = format!(
        "command = [\"sh\", \"-c\", \"cat >> {}; echo >> {}; sleep 0.6\"]\nmax_concurrent = 1",
        log.display(),
        log.display()
    );
    fleet.spawn_agent("node-a", TOKEN, &service("one", "command", &record));
    fleet.wait_nodes(1).await;
    let keyed = |key: &str| {
        let mut config = ClientConfig::new(fleet.addr.clone(), fleet.ca());
        config.api_key = Some(key.into());
        Client::connect(config)
    };
    let (a, b) = (
        keyed("sk-a").await.expect("a"),
        keyed("sk-b").await.expect("b"),
    );

    // "hold" takes the only slot; then a bursts five calls and b sends two.
    let mut calls = Vec::new();
    let send = |client: &Client, name: &str| {
        let (client, name) = (client.clone(), name.to_string());
        tokio::spawn(async move { client.call("one", name).await.expect("call") })
    };
    calls.push(send(&a, "hold"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for name in ["a1", "a2", "a3", "a4", "a5", "b1", "b2"] {
        let client = if name.starts_with('a') { &a } else { &b };
        calls.push(send(client, name));
        // Arrival order is what the test fixes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        call.await.expect("join");
    }
    let order = std::fs::read_to_string(&log).expect("log");
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order, ["hold", "a1", "b1", "a2", "b2", "a3", "a4", "a5"]);
}

#[tokio::test]
async fn anonymous_access_is_refused_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = GatewayConfig {
        listen: "0.0.0.0:0".parse().expect("address"),
        admin_enabled: false,
        http: gateway::config::HttpConfig {
            enabled: false,
            ..Default::default()
        },
        data_dir: dir.path().to_path_buf(),
        ..GatewayConfig::default()
    };
    let err = Gateway::bind(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("refusing to start"), "{err}");
    assert!(err.to_string().contains("allow_anonymous"), "{err}");

    // With tenants, or saying so, it starts.
    let keyed = GatewayConfig {
        tenants: vec![tenant("t", "sk-t")],
        ..config.clone()
    };
    Gateway::bind(keyed).await.expect("tenants configured");
    let open = GatewayConfig {
        allow_anonymous: true,
        ..config
    };
    Gateway::bind(open).await.expect("allow_anonymous");
}
