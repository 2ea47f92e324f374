//! Leases over the HTTP ingress with curl: `POST /v1/leases` answers the
//! grant as JSON (or, with `Accept: text/event-stream`, queue positions
//! then the grant as server-sent events), and `DELETE /v1/leases/{id}`
//! with the lease's token releases it.

use serde_json::Value;

use super::wait_in_flight;
use crate::common::direct::{Wire, call_head};
use crate::common::{Fleet, eventually, service};
use crate::ingress::{Curl, curl};

async fn curl_async(args: Vec<String>, body: Option<String>) -> Curl {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args, body.as_deref())
    })
    .await
    .expect("curl")
}

fn post(url: &str, json: &str, sse: bool) -> (Vec<String>, Option<String>) {
    let mut args = vec!["-X", "POST", "-H", "content-type: application/json"];
    if sse {
        args.extend(["-H", "accept: text/event-stream"]);
    }
    args.push(url);
    (
        args.into_iter().map(String::from).collect(),
        Some(json.to_string()),
    )
}

fn delete(url: &str, token: &str) -> Vec<String> {
    vec![
        "-X".into(),
        "DELETE".into(),
        "-H".into(),
        format!("x-switchyard-lease-token: {token}"),
        url.into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_leases_waits_with_positions_and_releases() {
    let mut fleet = Fleet::start(|_| {}).await;
    let port = fleet.spawn_direct_agent("node-a", &service("echo", "echo", "max_concurrent = 1"));
    fleet.wait_nodes(1).await;
    let base = format!("{}/v1/leases", fleet.gateway.http_url().expect("ingress"));

    let (args, body) = post(
        &base,
        r#"{"service": "echo", "max_calls": 2, "ttl_ms": 30000}"#,
        false,
    );
    let got = curl_async(args, body).await;
    assert_eq!(got.status, 200, "{got:?}");
    let first: Value = serde_json::from_str(&got.body).expect("the grant as JSON");
    let lease_id = first["lease_id"].as_str().expect("lease_id").to_string();
    let token = first["token"].as_str().expect("token").to_string();
    assert_eq!(lease_id.len(), 32, "{first}");
    assert_eq!(first["node_id"], "node-a", "{first}");
    assert_eq!(first["direct"], port.to_string(), "{first}");
    assert_eq!(first["max_calls"], 2, "{first}");
    assert!(
        first["expires_unix_ms"].as_u64().unwrap_or(0) > 0,
        "{first}"
    );
    let node = Wire::direct(&fleet, port).await;
    let answer = node
        .call(call_head("echo", Some(&token)), b"over http")
        .await
        .expect("a direct call with the token from curl");
    assert_eq!(answer.data(), b"over http");

    // The node's only slot is leased: a second lease waits, and says so.
    let (args, body) = post(&base, r#"{"service": "echo", "timeout_ms": 20000}"#, true);
    let waiting = tokio::spawn(curl_async(args, body));
    eventually(std::time::Duration::from_secs(10), || {
        let length = fleet
            .gateway
            .queues()
            .iter()
            .find(|q| q.service == "echo")
            .map_or(0, |q| q.length);
        (length == 1)
            .then_some(())
            .ok_or(format!("expected the second lease queued, have {length}"))
    })
    .await;

    // Released with its token: 204; the waiting lease gets the slot.
    let released = curl_async(delete(&format!("{base}/{lease_id}"), &token), None).await;
    assert_eq!(released.status, 204, "{released:?}");
    let sse = waiting.await.unwrap();
    assert_eq!(sse.status, 200, "{sse:?}");
    assert!(
        sse.body.contains("event: queued") && sse.body.contains("\"position\":1"),
        "{}",
        sse.body
    );
    let grant = sse
        .body
        .split("event: lease")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix("data:")))
        .unwrap_or_else(|| panic!("no lease event: {}", sse.body));
    let second: Value = serde_json::from_str(grant.trim()).expect("the grant event's JSON");
    let second_id = second["lease_id"].as_str().unwrap().to_string();
    let second_token = second["token"].as_str().unwrap().to_string();

    // The released lease serves nothing more, and is gone from the gateway.
    let ended = node
        .call(call_head("echo", Some(&token)), b"after release")
        .await
        .expect_err("a released lease")
        .refused();
    assert_eq!(
        ended.kind,
        protocol::ErrorKind::LeaseEnded,
        "{}",
        ended.message
    );
    let again = curl_async(delete(&format!("{base}/{lease_id}"), &token), None).await;
    assert_eq!(again.status, 404, "{again:?}");
    let wrong = curl_async(delete(&format!("{base}/{second_id}"), &token), None).await;
    assert_eq!(wrong.status, 401, "another lease's token: {wrong:?}");
    let forged = curl_async(delete(&format!("{base}/{second_id}"), "a.b"), None).await;
    assert_eq!(forged.status, 401, "not a token: {forged:?}");
    let done = curl_async(delete(&format!("{base}/{second_id}"), &second_token), None).await;
    assert_eq!(done.status, 204, "{done:?}");
    wait_in_flight(&fleet, "node-a", "echo", 0).await;

    // Bad requests get the usual JSON error.
    let (args, body) = post(&base, r#"{"service": "nope"}"#, false);
    let unknown = curl_async(args, body).await;
    assert!(unknown.status >= 400 && unknown.status < 500, "{unknown:?}");
    let error: Value = serde_json::from_str(&unknown.body).expect("a JSON error");
    assert!(error["error"]["message"].is_string(), "{error}");
    let (args, body) = post(&base, "{not json", false);
    let bad = curl_async(args, body).await;
    assert_eq!(bad.status, 400, "{bad:?}");
}
