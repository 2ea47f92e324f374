//! Model servers behind agents' `openai` services, seen from the HTTP
//! ingress: a model server that refuses connections costs no call (the
//! call runs on another node, idempotent or not); a model server's own
//! error reaches the caller unchanged, naming the node; every answer
//! carries its request id; `/v1/models` lists the model services only.

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde_json::Value;

use crate::common::{ADMIN, Fleet, TOKEN, service};
use crate::ingress::curl;
use crate::openai::Toy;

/// Calls made against the fleet with one dead model server.
const CALLS: usize = 60;

/// An agent config line pointing an `openai` service at `url`.
fn openai_service(name: &str, url: &str) -> String {
    service(name, "openai", &format!("base_url = \"{url}/v1\""))
}

/// Two agents serve `llama` (not idempotent, no `health_url`) from a model
/// server each; one model server is killed. Every call still succeeds: a
/// refused connection ran nothing, so the gateway sends the call to the
/// other node, and none answers `502 service_failed ... cannot connect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_dead_model_server_runs_on_another_node() {
    let alive = Toy::start("llama", &["--tokens-per-s", "1000"]).await;
    let dead = Toy::start("llama", &["--tokens-per-s", "1000"]).await;
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-alive", TOKEN, &openai_service("llama", &alive.url));
    fleet.spawn_agent("node-dead", TOKEN, &openai_service("llama", &dead.url));
    fleet.wait_nodes(2).await;
    // Killed: its port now refuses connections.
    drop(dead);

    let url = format!(
        "{}/v1/chat/completions",
        fleet.gateway.http_url().expect("ingress")
    );
    let http = reqwest::Client::new();
    let body = r#"{"model":"llama","max_tokens":2,"messages":[{"role":"user","content":"a b"}]}"#;
    let answers: Vec<(u16, String, String, String)> = futures_util::stream::iter(0..CALLS)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("an answer");
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let (node, attempts) =
                    (header("x-switchyard-node"), header("x-switchyard-attempts"));
                let status = response.status().as_u16();
                (status, node, attempts, response.text().await.expect("body"))
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let failed: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {CALLS} failed: {failed:?}",
        failed.len()
    );
    assert!(
        answers.iter().all(|a| a.1 == "node-alive"),
        "only the live model server answers"
    );
    let retried = answers.iter().filter(|a| a.2 == "2").count();
    eprintln!("{CALLS} calls, {retried} sent to the dead node first and run again");
    assert!(
        retried >= 1,
        "the dead node was picked at least once (its calls ran again): {:?}",
        answers.iter().map(|a| &a.2).collect::<Vec<_>>()
    );
}

/// A model server's own error (400 and its JSON body) reaches curl
/// unchanged, with the node and the request id; a success and a gateway's
/// own error carry the request id too (the caller's, or a new one when it
/// sent none or an invalid one), on both HTTP ports; "why this node"
/// decisions name it.
#[tokio::test]
async fn errors_name_the_node_and_every_answer_its_request_id() {
    let toy = Toy::start("llama", &["--tokens-per-s", "1000"]).await;
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &openai_service("llama", &toy.url));
    fleet.wait_nodes(1).await;
    let ingress = fleet.gateway.http_url().expect("ingress");
    let admin = format!("http://{}", fleet.gateway.admin_addr().expect("admin"));

    let post = |url: String, request_id: Option<&'static str>, body: &'static str| {
        tokio::task::spawn_blocking(move || {
            let header = request_id.map(|id| format!("x-request-id: {id}"));
            let mut args = vec!["-X", "POST", "-H", "content-type: application/json"];
            if let Some(header) = &header {
                args.extend(["-H", header.as_str()]);
            }
            args.push(&url);
            curl(&args, Some(body))
        })
    };
    let chat = format!("{ingress}/v1/chat/completions");

    // The model server's error, as it gives it directly.
    let bad = r#"{"model":"llama","messages":[]}"#;
    let direct = post(format!("{}/v1/chat/completions", toy.url), None, bad)
        .await
        .expect("curl");
    assert_eq!(direct.status, 400, "{direct:?}");
    let got = post(chat.clone(), Some("req-bad-1"), bad)
        .await
        .expect("curl");
    assert_eq!(got.status, 400, "{got:?}");
    assert_eq!(got.body, direct.body, "the model server's own body");
    let error: Value = serde_json::from_str(&got.body).expect("json");
    assert_eq!(error["error"]["message"], "`messages` must not be empty");
    assert_eq!(got.header("x-switchyard-node"), Some("node-a"));
    assert_eq!(got.header("x-request-id"), Some("req-bad-1"));

    // A success returns the caller's id; decisions record it.
    let good = r#"{"model":"llama","max_tokens":2,"messages":[{"role":"user","content":"a b"}]}"#;
    let got = post(chat.clone(), Some("req-good-1"), good)
        .await
        .expect("curl");
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.header("x-request-id"), Some("req-good-1"));
    assert_eq!(got.header("x-switchyard-node"), Some("node-a"));
    let decisions = tokio::task::spawn_blocking({
        let url = format!("{admin}/api/decisions?service=llama");
        move || {
            curl(
                &["-H", &format!("authorization: Bearer {ADMIN}"), &url],
                None,
            )
        }
    })
    .await
    .expect("curl");
    let decisions: Value = serde_json::from_str(&decisions.body).expect("json");
    assert!(
        decisions["decisions"]
            .as_array()
            .expect("decisions")
            .iter()
            .any(|d| d["request_id"] == "req-good-1"),
        "{decisions}"
    );

    // No id, or one that is not 1..=128 visible ASCII bytes: a new one.
    let long = "x".repeat(129).leak();
    for sent in [None, Some("two words"), Some(&*long)] {
        let got = post(chat.clone(), sent, good).await.expect("curl");
        assert_eq!(got.status, 200, "{got:?}");
        let id = got.header("x-request-id").expect("a request id");
        assert_eq!(id.len(), 32, "{sent:?} -> {id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    // The gateway's own errors, on both ports, carry it too.
    let got = post(
        chat.clone(),
        Some("req-404"),
        r#"{"model":"nope","messages":[]}"#,
    )
    .await
    .expect("curl");
    assert_eq!(got.status, 404, "{got:?}");
    assert_eq!(got.header("x-request-id"), Some("req-404"));
    assert_eq!(got.header("x-switchyard-node"), None, "it reached no node");
    let got = tokio::task::spawn_blocking({
        let url = format!("{admin}/api/nodes");
        move || curl(&["-H", "x-request-id: req-admin", &url], None)
    })
    .await
    .expect("curl");
    assert_eq!(got.header("x-request-id"), Some("req-admin"), "{got:?}");

    // QUIC callers get the request id in the result head, the node and the
    // request id in errors.
    let client = fleet.client().await;
    let done = client
        .call("llama", good)
        .endpoint("/chat/completions")
        .await
        .expect("a chat over QUIC");
    let id = done.meta.request_id.expect("a request id");
    assert_eq!(id.len(), 32, "{id}");
    let err = client
        .call("llama", bad)
        .endpoint("/chat/completions")
        .await
        .expect_err("the model server refuses it");
    assert_eq!(err.kind(), Some(client::ErrorKind::BadRequest), "{err}");
    assert_eq!(err.node_id(), Some("node-a"), "{err:?}");
    assert!(err.request_id().is_some(), "{err:?}");
}

/// `/v1/models` lists the `openai` services and their `[models]` aliases,
/// with the time the gateway first saw each served; not the other
/// services. `/v1/models/{id}` answers one, or 404 in OpenAI's shape.
#[tokio::test]
async fn models_lists_the_model_services_with_their_created_time() {
    let toy = Toy::start("llama", &[]).await;
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut fleet = Fleet::start(|config| {
        config.models.insert("gpt-local".into(), "llama".into());
        config.models.insert("gpt-nowhere".into(), "absent".into());
    })
    .await;
    let services = format!(
        "{}{}",
        openai_service("llama", &toy.url),
        service("echo", "echo", "")
    );
    fleet.spawn_agent("node-a", TOKEN, &services);
    fleet.wait_nodes(1).await;
    let ingress = fleet.gateway.http_url().expect("ingress");
    let get = |path: &str| {
        let url = format!("{ingress}{path}");
        tokio::task::spawn_blocking(move || curl(&[&url], None))
    };

    let got = get("/v1/models").await.expect("curl");
    assert_eq!(got.status, 200, "{got:?}");
    let list: Value = serde_json::from_str(&got.body).expect("json");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["gpt-local", "llama"], "models only: {list}");
    let created = list["data"][1]["created"].as_u64().expect("created");
    assert!(
        (before.saturating_sub(1)..=before + 60).contains(&created),
        "created {created}, test started at {before}"
    );
    assert_eq!(
        list["data"][0]["created"], created,
        "an alias has its model's"
    );
    assert_eq!(list["data"][0]["root"], "llama");
    assert_eq!(list["data"][1]["owned_by"], "switchyard");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let got = get("/v1/models/llama").await.expect("curl");
    assert_eq!(got.status, 200, "{got:?}");
    let one: Value = serde_json::from_str(&got.body).expect("json");
    assert_eq!(one["id"], "llama");
    assert_eq!(one["object"], "model");
    assert_eq!(one["created"], created, "the first time seen, not now");

    for unknown in ["echo", "nope", "gpt-nowhere"] {
        let got = get(&format!("/v1/models/{unknown}")).await.expect("curl");
        assert_eq!(got.status, 404, "{unknown}: {got:?}");
        assert_eq!(
            got.openai_error(),
            ("not_found_error".into(), "model_not_found".into())
        );
    }
}

/// A job keeps the request id of the request that submitted it, in its
/// record (read back after it ran) and its answer's `x-request-id`.
#[tokio::test]
async fn a_job_keeps_the_request_id_it_was_submitted_with() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let jobs = format!("{}/v1/jobs", fleet.gateway.http_url().expect("ingress"));
    let admin = format!("x-switchyard-admin-token: {ADMIN}");
    let submitted = tokio::task::spawn_blocking({
        let (jobs, admin) = (jobs.clone(), admin.clone());
        move || {
            curl(
                &[
                    "-X",
                    "POST",
                    "-H",
                    &admin,
                    "-H",
                    "x-request-id: req-job-1",
                    &jobs,
                ],
                Some(r#"{"service": "echo", "payload": "hi"}"#),
            )
        }
    })
    .await
    .expect("curl");
    assert_eq!(submitted.status, 201, "{submitted:?}");
    assert_eq!(submitted.header("x-request-id"), Some("req-job-1"));
    let job: Value = serde_json::from_str(&submitted.body).expect("json");
    assert_eq!(job["request_id"], "req-job-1", "{job}");
    let url = format!("{jobs}/{}", job["id"].as_str().expect("id"));
    let started = std::time::Instant::now();
    loop {
        let got = tokio::task::spawn_blocking({
            let (url, admin) = (url.clone(), admin.clone());
            move || curl(&["-H", &admin, &url], None)
        })
        .await
        .expect("curl");
        let job: Value = serde_json::from_str(&got.body).expect("json");
        if job["state"] == "succeeded" {
            assert_eq!(job["request_id"], "req-job-1", "kept in the record: {job}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
