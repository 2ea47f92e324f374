//! What operators and browsers expect of both HTTP ports: the liveness
//! and readiness probes (`/health`, `/ready`) in both states, a 404
//! `not_found` for unknown routes, and CORS on the ingress
//! (`[http] cors_origins`: preflights answered for the listed origins
//! only, no CORS headers by default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Fleet, TOKEN, service};

/// Both ports' base URLs: the ingress, then the admin port.
fn ports(fleet: &Fleet) -> [String; 2] {
    [
        fleet.gateway.http_url().expect("ingress"),
        format!("http://{}", fleet.gateway.admin_addr().expect("admin port")),
    ]
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {text:?}: {e}"));
    (status, body)
}

/// Polls `GET url` until it answers `status`; returns its body.
async fn until(url: &str, status: u16) -> Value {
    let start = Instant::now();
    loop {
        let (got, body) = get(url).await;
        if got == status {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{url}: still {got} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_and_readiness_on_both_ports() {
    let mut fleet = Fleet::start(|config| {
        config.models.insert("chat".into(), "chat".into());
        config.models.insert("gpt-small".into(), "chat".into());
    })
    .await;
    for base in ports(&fleet) {
        assert_eq!(
            get(&format!("{base}/health")).await,
            (200, json!({"status": "ok"}))
        );
        // No node serves the configured model yet.
        let (status, body) = get(&format!("{base}/ready")).await;
        assert_eq!(status, 503, "{base}: {body}");
        assert_eq!(body["status"], "not_ready", "{body}");
        let reasons: Vec<&str> = body["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(
            reasons.contains(&r#"no node serves model "chat""#),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&r#"no node serves model "gpt-small" (service "chat")"#),
            "{reasons:?}"
        );
    }
    fleet.spawn_agent("node-a", TOKEN, &service("chat", "echo", ""));
    fleet.wait_nodes(1).await;
    for base in ports(&fleet) {
        let body = until(&format!("{base}/ready"), 200).await;
        assert_eq!(body, json!({"status": "ready"}));
    }
}

#[tokio::test]
async fn a_policy_that_is_not_loaded_is_not_ready() {
    let fleet = Fleet::start(|config| config.default_policy = "not-a-policy".into()).await;
    for base in ports(&fleet) {
        let (status, body) = get(&format!("{base}/ready")).await;
        assert_eq!(status, 503, "{body}");
        let reasons = body["reasons"].to_string();
        assert!(
            reasons.contains(r#"policy \"not-a-policy\" is not loaded"#),
            "{reasons}"
        );
        // Alive all the same.
        assert_eq!(get(&format!("{base}/health")).await.0, 200);
    }
}

#[tokio::test]
async fn unknown_routes_are_not_found_on_both_ports() {
    let fleet = Fleet::start(|_| {}).await;
    let client = reqwest::Client::new();
    for base in ports(&fleet) {
        for (method, path) in [(Method::GET, "/nope"), (Method::POST, "/v2/else")] {
            let r = client
                .request(method.clone(), format!("{base}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{method} {base}{path}");
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "not_found", "{body}");
            assert_eq!(body["error"]["type"], "not_found_error", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(path), "{message}");
        }
    }
}

/// A preflight for a chat completion from `origin`: its status and
/// `access-control-*` headers (lowercase names).
async fn preflight(base: &str, origin: &str) -> (u16, Vec<(String, String)>) {
    let r = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{base}/v1/chat/completions"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), cors_headers(r.headers()))
}

fn cors_headers(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("access-control-"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A call of `echo` from a page of `origin`: its `access-control-*`
/// headers.
async fn call_from(base: &str, origin: &str) -> Vec<(String, String)> {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/call/echo"))
        .header("origin", origin)
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    cors_headers(r.headers())
}

#[tokio::test]
async fn cors_answers_the_listed_origins_only() {
    let mut fleet = Fleet::start(|config| {
        config.http.cors_origins = vec!["https://chat.example".into()];
    })
    .await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let base = fleet.gateway.http_url().unwrap();

    let (status, allowed) = preflight(&base, "https://chat.example").await;
    assert_eq!(status, 200, "{allowed:?}");
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some("https://chat.example")
    );
    assert!(
        header(&allowed, "access-control-allow-methods").is_some_and(|m| m.contains("POST")),
        "{allowed:?}"
    );
    let asked = header(&allowed, "access-control-allow-headers").unwrap_or_default();
    assert!(
        asked.contains("authorization") && asked.contains("content-type"),
        "{allowed:?}"
    );
    assert!(
        header(&allowed, "access-control-max-age").is_some(),
        "{allowed:?}"
    );

    let (_, other) = preflight(&base, "https://evil.example").await;
    assert_eq!(
        header(&other, "access-control-allow-origin"),
        None,
        "{other:?}"
    );

    // The call itself: its answer names the origin and exposes the
    // x-switchyard-* headers to the page.
    let call = call_from(&base, "https://chat.example").await;
    assert_eq!(
        header(&call, "access-control-allow-origin"),
        Some("https://chat.example")
    );
    assert_eq!(header(&call, "access-control-expose-headers"), Some("*"));
    let call = call_from(&base, "https://evil.example").await;
    assert_eq!(
        header(&call, "access-control-allow-origin"),
        None,
        "{call:?}"
    );
}

#[tokio::test]
async fn cors_is_off_by_default_and_star_allows_any_origin() {
    let mut off = Fleet::start(|_| {}).await;
    off.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    off.wait_nodes(1).await;
    let base = off.gateway.http_url().unwrap();
    let (status, headers) = preflight(&base, "https://chat.example").await;
    assert!(headers.is_empty(), "{status}: {headers:?}");
    assert_ne!(status, 200, "no preflight is answered");
    assert!(call_from(&base, "https://chat.example").await.is_empty());

    let any = Fleet::start(|config| config.http.cors_origins = vec!["*".into()]).await;
    let base = any.gateway.http_url().unwrap();
    let (status, headers) = preflight(&base, "https://anywhere.example").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn a_job_store_that_does_not_answer_is_not_ready() {
    let Some(postgres) = switchyard_testkit::Postgres::start().unwrap_or_else(|e| panic!("{e}"))
    else {
        return; // skipped: no PostgreSQL server on this machine
    };
    let url = postgres.url();
    let fleet = Fleet::start(|config| config.jobs.database_url = Some(url)).await;
    for base in ports(&fleet) {
        assert_eq!(
            until(&format!("{base}/ready"), 200).await,
            json!({"status": "ready"})
        );
    }
    // The database goes away (`pg_ctl stop -m immediate`).
    drop(postgres);
    for base in ports(&fleet) {
        let body = until(&format!("{base}/ready"), 503).await;
        let reasons = body["reasons"].to_string();
        assert!(
            reasons.contains("the job store is unreachable"),
            "{reasons}"
        );
        assert_eq!(get(&format!("{base}/health")).await.0, 200);
    }
}
