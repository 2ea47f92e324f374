//! OpenTelemetry tracing across processes: a gateway (in this process) and
//! a real agent process export their spans over OTLP/HTTP to a receiver
//! served by the test (axum, decoding `ExportTraceServiceRequest` with
//! `opentelemetry-proto`); a call made with a W3C `traceparent` (through
//! the HTTP ingress, then through the Rust SDK) shows up as one trace: the
//! gateway's `call` under the caller's span, its stages under `call`, the
//! agent's `service call` under the gateway's `dispatch`, and the model
//! server handed the agent's span as its `traceparent`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

use crate::common::{Fleet, TOKEN, service};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    /// The exporting process's `service.name`.
    process: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP traces receiver on a free port: `POST /v1/traces` with a
/// protobuf `ExportTraceServiceRequest`.
async fn receiver() -> (String, Spans) {
    let spans = Spans::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
                let mut got = store.lock().unwrap();
                for resource in request.resource_spans {
                    let process = resource
                        .resource
                        .as_ref()
                        .map(|r| attributes(&r.attributes))
                        .and_then(|a| a.get("service.name").cloned())
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            got.push(Got {
                                process: process.clone(),
                                name: span.name.clone(),
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                                attributes: attributes(&span.attributes),
                            });
                        }
                    }
                }
                // An empty ExportTraceServiceResponse.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

/// An OpenAI-compatible chat endpoint that answers with the
/// `traceparent` header it was sent as the message's content.
async fn model_server() -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|headers: HeaderMap| async move {
            let traceparent = headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            axum::Json(serde_json::json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "chat",
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": traceparent}}],
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Waits until the receiver holds the spans named `names` of trace
/// `trace_id` (the batch processors post every 5 s).
async fn wait_for(spans: &Spans, trace_id: &str, names: &[&str]) -> Vec<Got> {
    let started = Instant::now();
    loop {
        let got: Vec<Got> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        if names.iter().all(|n| got.iter().any(|s| s.name == *n)) {
            return got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "spans of trace {trace_id} after 30 s: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn one<'a>(spans: &'a [Got], process: &str, name: &str) -> &'a Got {
    let found: Vec<&Got> = spans
        .iter()
        .filter(|s| s.process == process && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {process} {name} span in {spans:#?}");
    found[0]
}

const GATEWAY: &str = "switchyard-gateway";
const AGENT: &str = "switchyard-agent";

#[tokio::test]
async fn one_calls_spans_from_the_gateway_and_the_agent_form_one_trace() {
    let (otlp, spans) = receiver().await;
    let model = model_server().await;
    let mut fleet = Fleet::start(|config| {
        config.tracing.otlp_endpoint = Some(otlp.clone());
    })
    .await;
    fleet.spawn_agent_process_with(
        "node-t",
        TOKEN,
        &format!("[tracing]\notlp_endpoint = {otlp:?}"),
        &service("chat", "openai", &format!("base_url = {model:?}")),
    );
    fleet.wait_nodes(1).await;

    // Through the HTTP ingress, with the caller's trace context.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let url = format!(
        "{}/v1/chat/completions",
        fleet.gateway.http_url().expect("ingress")
    );
    let answer = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("x-request-id", "trace-test-1")
        .body(r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .expect("ingress answers");
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value =
        serde_json::from_slice(&answer.bytes().await.expect("body")).expect("json");
    let upstream = answer["choices"][0]["message"]["content"]
        .as_str()
        .expect("the model server's content")
        .to_string();

    let got = wait_for(
        &spans,
        trace_id,
        &[
            "call",
            "admission",
            "queue wait",
            "pick",
            "dispatch",
            "relay",
            "service call",
        ],
    )
    .await;
    let call = one(&got, GATEWAY, "call");
    assert_eq!(call.parent_span_id, caller_span, "under the caller's span");
    assert_eq!(call.attributes["switchyard.service"], "chat");
    assert_eq!(call.attributes["switchyard.request_id"], "trace-test-1");
    for stage in ["admission", "queue wait", "pick", "dispatch", "relay"] {
        assert_eq!(
            one(&got, GATEWAY, stage).parent_span_id,
            call.span_id,
            "{stage} under call"
        );
    }
    let pick = one(&got, GATEWAY, "pick");
    assert_eq!(pick.attributes["switchyard.policy"], "round-robin");
    assert!(pick.attributes.contains_key("switchyard.pick.reason"));
    let dispatch = one(&got, GATEWAY, "dispatch");
    assert_eq!(dispatch.attributes["switchyard.node"], "node-t");
    let served = one(&got, AGENT, "service call");
    assert_eq!(
        served.parent_span_id, dispatch.span_id,
        "the agent's span is the child of the gateway's dispatch"
    );
    assert_eq!(served.attributes["switchyard.request_id"], "trace-test-1");
    assert_eq!(
        upstream,
        format!("00-{trace_id}-{}-01", served.span_id),
        "the model server is handed the agent's span"
    );

    // Through the SDK.
    let sdk_trace = "0af7651916cd43dd8448eb211c80319c";
    let client = fleet.client().await;
    let result = client
        .call(
            "chat",
            br#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
        )
        .endpoint("/chat/completions")
        .traceparent(format!("00-{sdk_trace}-b7ad6b7169203331-01"))
        .await
        .expect("sdk call");
    assert!(String::from_utf8_lossy(&result.data).contains(sdk_trace));
    let got = wait_for(&spans, sdk_trace, &["call", "dispatch", "service call"]).await;
    let call = one(&got, GATEWAY, "call");
    assert_eq!(call.parent_span_id, "b7ad6b7169203331");
    assert_eq!(
        one(&got, AGENT, "service call").parent_span_id,
        one(&got, GATEWAY, "dispatch").span_id
    );
}
