//! Active health checks: an `http` service whose upstream starts failing its
//! `health_url` stops getting calls on that node (the other node serves)
//! within a few probe intervals, and gets them again once it recovers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::common::{Fleet, TOKEN, eventually, service};

/// A real HTTP upstream: `POST /` answers and counts, `GET /health` answers
/// 200 or 503 as the test says.
#[derive(Clone, Default)]
pub struct Upstream {
    pub healthy: Arc<AtomicBool>,
    pub served: Arc<AtomicU64>,
}

impl Upstream {
    /// Serves on 127.0.0.1:0 for the rest of the test; returns its port.
    pub async fn start(&self) -> u16 {
        self.healthy.store(true, Ordering::SeqCst);
        let app = Router::new()
            .route(
                "/",
                post(|State(u): State<Upstream>| async move {
                    u.served.fetch_add(1, Ordering::SeqCst);
                    "served"
                }),
            )
            .route(
                "/health",
                get(|State(u): State<Upstream>| async move {
                    if u.healthy.load(Ordering::SeqCst) {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
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

fn checked_service(port: u16) -> String {
    service(
        "web",
        "http",
        &format!(
            "url = \"http://127.0.0.1:{port}/\"\nhealth_url = \"http://127.0.0.1:{port}/health\"\n\
             health_interval_ms = 100\nhealth_timeout_ms = 500\nmax_concurrent = 8"
        ),
    )
}

/// Runs `n` calls of `web`, each of which must succeed.
async fn calls(client: &client::Client, n: usize) {
    for i in 0..n {
        client
            .call("web", "x")
            .timeout(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_upstream_gets_no_calls_until_it_recovers() {
    let (a, b) = (Upstream::default(), Upstream::default());
    let (port_a, port_b) = (a.start().await, b.start().await);
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &checked_service(port_a));
    fleet.spawn_agent("node-b", TOKEN, &checked_service(port_b));
    fleet.wait_nodes(2).await;
    let client = fleet.client().await;
    calls(&client, 20).await;
    assert!(a.served.load(Ordering::SeqCst) > 0, "both serve at first");
    assert!(b.served.load(Ordering::SeqCst) > 0, "both serve at first");

    // Node a's upstream fails its health endpoint: 2 probes (100 ms apart)
    // and a stats report (200 ms) later, the gateway sees it.
    a.healthy.store(false, Ordering::SeqCst);
    let gateway = fleet.gateway.clone();
    let healthy_a = || {
        let views = gateway.registry().views(std::time::Instant::now());
        views
            .iter()
            .find(|n| n.spec.id == "node-a")
            .map(|n| !n.services[0].unhealthy)
    };
    eventually(Duration::from_secs(10), || match healthy_a() {
        Some(false) => Ok(()),
        other => Err(format!("node-a's web: healthy {other:?}")),
    })
    .await;
    let metrics = gateway::telemetry::render();
    assert!(
        metrics.contains(r#"service_healthy{node="node-a",service="web"} 0"#),
        "{metrics}"
    );
    let before = a.served.load(Ordering::SeqCst);
    calls(&client, 40).await;
    assert_eq!(
        a.served.load(Ordering::SeqCst),
        before,
        "no call reaches the unhealthy upstream"
    );

    // It recovers: calls reach it again.
    a.healthy.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(10), || match healthy_a() {
        Some(true) => Ok(()),
        other => Err(format!("node-a's web: healthy {other:?}")),
    })
    .await;
    let before = a.served.load(Ordering::SeqCst);
    calls(&client, 40).await;
    assert!(
        a.served.load(Ordering::SeqCst) > before,
        "calls reach the recovered upstream"
    );
}
