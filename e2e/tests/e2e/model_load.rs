//! Model-server load signals end to end: an agent's `openai` service
//! points `metrics_url` at a real HTTP server serving a vLLM metrics page;
//! the agent scrapes it every stats interval and the gateway's
//! `GET /api/nodes` and `/metrics` show the waiting and running requests
//! and the KV-cache use, following the page as it changes, and drop them
//! when the scrape fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;

use crate::common::{Fleet, TOKEN, service};

/// A stand-in for vLLM's `/metrics`: its page with the test's numbers, or
/// a 503 while `failing`.
#[derive(Clone, Default)]
struct MetricsPage {
    waiting: Arc<AtomicU32>,
    failing: Arc<AtomicBool>,
}

impl MetricsPage {
    fn text(&self) -> String {
        let waiting = self.waiting.load(Ordering::SeqCst);
        format!(
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
             # TYPE vllm:num_requests_running gauge\n\
             vllm:num_requests_running{{engine=\"0\",model_name=\"toy\"}} 7.0\n\
             # HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
             # TYPE vllm:num_requests_waiting gauge\n\
             vllm:num_requests_waiting{{engine=\"0\",model_name=\"toy\"}} {waiting}.0\n\
             # HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n\
             # TYPE vllm:gpu_cache_usage_perc gauge\n\
             vllm:gpu_cache_usage_perc{{engine=\"0\",model_name=\"toy\"}} 0.425\n\
             # TYPE vllm:time_to_first_token_seconds histogram\n\
             vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"toy\"}} 12.0\n"
        )
    }

    /// Serves on 127.0.0.1:0 for the rest of the test; returns its port.
    async fn start(&self) -> u16 {
        let app = Router::new()
            .route(
                "/metrics",
                get(|State(page): State<MetricsPage>| async move {
                    if page.failing.load(Ordering::SeqCst) {
                        Err(StatusCode::SERVICE_UNAVAILABLE)
                    } else {
                        Ok(page.text())
                    }
                }),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }
}

/// Node `id`'s `stats.model_load` in `GET /api/nodes`.
async fn model_load(admin: &str, id: &str) -> Value {
    let text = reqwest::get(format!("{admin}/api/nodes"))
        .await
        .expect("GET /api/nodes")
        .text()
        .await
        .unwrap();
    let nodes: Value = serde_json::from_str(&text).expect("JSON");
    nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["spec"]["id"] == id))
        .map(|n| n["stats"]["model_load"].clone())
        .unwrap_or(Value::Null)
}

/// Polls `model_load` until `check` passes, for at most 10 s.
async fn until(admin: &str, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let load = model_load(admin, id).await;
        if check(&load) {
            return load;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: model_load is {load}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_shows_each_nodes_model_server_load() {
    let page = MetricsPage::default();
    page.waiting.store(3, Ordering::SeqCst);
    let port = page.start().await;
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent(
        "node-llm",
        TOKEN,
        &service(
            "llm",
            "openai",
            &format!(
                "base_url = \"http://127.0.0.1:{port}/v1\"\nmetrics_url = \"http://127.0.0.1:{port}/metrics\""
            ),
        ),
    );
    fleet.spawn_agent("node-echo", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(2).await;
    let admin = format!("http://{}", fleet.gateway.admin_addr().expect("admin port"));

    let load = until(&admin, "node-llm", "first scrape", |l| {
        l.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(load[0]["service"], "llm", "{load}");
    assert_eq!(load[0]["waiting"], 3, "{load}");
    assert_eq!(load[0]["running"], 7, "{load}");
    let kv = load[0]["kv_cache_pct"].as_f64().unwrap();
    assert!((kv - 42.5).abs() < 0.01, "0.425 reads as 42.5 %: {load}");
    // The other node scrapes nothing and reports no load.
    assert_eq!(model_load(&admin, "node-echo").await, serde_json::json!([]));

    // The page changes: the next reports follow.
    page.waiting.store(11, Ordering::SeqCst);
    until(&admin, "node-llm", "waiting 11", |l| l[0]["waiting"] == 11).await;
    let metrics = gateway::telemetry::render();
    for needle in [
        r#"model_server_waiting_requests{node="node-llm",service="llm"} 11"#,
        r#"model_server_running_requests{node="node-llm",service="llm"} 7"#,
        r#"model_server_kv_cache_percent{node="node-llm",service="llm"} 42.5"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }

    // The server stops answering: its load is no longer reported.
    page.failing.store(true, Ordering::SeqCst);
    until(&admin, "node-llm", "no load once scrapes fail", |l| {
        l.as_array().is_some_and(Vec::is_empty)
    })
    .await;
}
