//! Streamed results: a command's stdout and an HTTP body reach the reader
//! as they are written, dropping the stream stops the work, and `openai`
//! services post to their base URL plus the call's endpoint.

use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{LONG, http_server, one};
use crate::config::{AgentConfig, ServiceConfig};
use crate::services::{Body, Reply, ServiceKind};

async fn start(kind: ServiceKind, endpoint: Option<&str>) -> (Reply, crate::services::Slot) {
    let services = one(kind);
    let slot = services.acquire("svc").expect("slot");
    let reply = slot
        .run(Bytes::new(), LONG, endpoint)
        .await
        .expect("started");
    (reply, slot)
}

fn chunks(reply: Reply) -> crate::services::Chunks {
    match reply.body {
        Body::Stream(chunks) => chunks,
        Body::Whole(_) => panic!("expected a streamed body"),
    }
}

#[tokio::test]
async fn a_command_streams_stdout_before_it_exits() {
    let started = Instant::now();
    let kind = ServiceKind::command(["sh", "-c", "echo a; sleep 0.5; echo b"]);
    let (reply, _slot) = start(kind, None).await;
    assert_eq!((reply.content_type.as_deref(), reply.status), (None, None));
    let mut chunks = chunks(reply);
    let first = chunks.next().await.expect("a chunk").expect("ok");
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"a\n");
    let second = chunks.next().await.expect("a chunk").expect("ok");
    assert_eq!(&second[..], b"b\n");
    assert!(chunks.next().await.is_none(), "clean end");
    assert!(
        first_at < Duration::from_millis(400) && started.elapsed() >= Duration::from_millis(500),
        "first chunk at {first_at:?}, end at {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dropping_a_command_stream_kills_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mark = dir.path().join("finished");
    let script = format!("echo a; sleep 1; touch {}", mark.display());
    let (reply, slot) = start(ServiceKind::command(["sh", "-c", &script]), None).await;
    let mut chunks = chunks(reply);
    assert_eq!(&chunks.next().await.expect("a").expect("ok")[..], b"a\n");
    drop(chunks);
    drop(slot);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !mark.exists(),
        "the command ran on after its stream was dropped"
    );
}

#[tokio::test]
async fn a_failure_after_output_is_the_last_item() {
    let kind = ServiceKind::command(["sh", "-c", "echo part; echo why >&2; exit 4"]);
    let (reply, _slot) = start(kind, None).await;
    let mut chunks = chunks(reply);
    assert_eq!(&chunks.next().await.expect("a").expect("ok")[..], b"part\n");
    let err = chunks.next().await.expect("an item").expect_err("exit 4");
    assert_eq!(err.kind, ErrorKind::ServiceFailed);
    assert_eq!(err.message, "exit status 4: why");
    assert!(chunks.next().await.is_none());
}

/// A server answering one request with a chunked `text/event-stream` body
/// in two parts 300 ms apart.
async fn chunked_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        let head = "HTTP/1.1 201 Created\r\ncontent-type: text/event-stream\r\n\
                    transfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.expect("head");
        socket.write_all(b"7\r\ndata: 1\r\n").await.expect("one");
        socket.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(300)).await;
        socket
            .write_all(b"7\r\ndata: 2\r\n0\r\n\r\n")
            .await
            .expect("two");
        socket.shutdown().await.ok();
    });
    (url, task)
}

#[tokio::test]
async fn an_http_body_streams_with_its_status_and_content_type() {
    let (url, server) = chunked_server().await;
    let started = Instant::now();
    let (reply, _slot) = start(ServiceKind::http(url), None).await;
    assert_eq!(reply.status, Some(201));
    assert_eq!(reply.content_type.as_deref(), Some("text/event-stream"));
    let mut chunks = chunks(reply);
    assert_eq!(
        &chunks.next().await.expect("a").expect("ok")[..],
        b"data: 1"
    );
    let first_at = started.elapsed();
    assert_eq!(
        &chunks.next().await.expect("b").expect("ok")[..],
        b"data: 2"
    );
    assert!(chunks.next().await.is_none());
    assert!(
        first_at < Duration::from_millis(250),
        "the first part came at {first_at:?}, before the second was written"
    );
    server.await.expect("server");
}

#[tokio::test]
async fn openai_posts_to_the_base_url_and_endpoint() {
    let (url, server) = http_server("200 OK", "{\"data\":[]}").await;
    // http_server answers on any path; the base URL's /v1/run path stands in
    // for a server's /v1.
    let (reply, _slot) = start(ServiceKind::openai(url), Some("/embeddings")).await;
    let body = reply.body.collect().await.expect("body");
    assert_eq!(&body[..], b"{\"data\":[]}");
    let request = String::from_utf8(server.await.expect("server")).expect("utf8");
    assert!(
        request.starts_with("POST /v1/run/embeddings HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_lowercase()
            .contains("content-type: application/json"),
        "{request}"
    );
}

#[tokio::test]
async fn an_openai_bad_request_is_the_callers_and_bad_endpoints_are_refused() {
    let (url, server) = http_server("400 Bad Request", "{\"error\":\"max_tokens\"}").await;
    let services = one(ServiceKind::openai(url));
    let slot = services.acquire("svc").expect("slot");
    let err = slot.run(Bytes::new(), LONG, None).await.expect_err("400");
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.contains("max_tokens"), "{err}");
    server.await.expect("server");
    let err = slot
        .run(Bytes::new(), LONG, Some("/../admin"))
        .await
        .expect_err("bad endpoint");
    assert_eq!(err.kind, ErrorKind::BadRequest);
}

#[test]
fn openai_services_parse_from_toml() {
    let config = |service: &str| {
        AgentConfig::from_toml_str(&format!(
            "gateway = \"127.0.0.1:4433\"\nca = \"ca.pem\"\ntoken = \"t\"\nnode_id = \"n1\"\n\n\
             [[services]]\nname = \"llama\"\nkind = \"openai\"\n{service}\n"
        ))
    };
    let parsed =
        config("base_url = \"http://127.0.0.1:8000/v1\"\napi_key = \"sk-up\"").expect("parses");
    let ServiceConfig { kind, .. } = &parsed.services[0];
    let ServiceKind::OpenAi(openai) = kind else {
        panic!("{kind:?}");
    };
    assert_eq!(openai.base_url, "http://127.0.0.1:8000/v1");
    assert_eq!(openai.api_key.as_deref(), Some("sk-up"));
    assert!(
        !format!("{openai:?}").contains("sk-up"),
        "the key is redacted"
    );
    let missing = config("").expect_err("no base_url").to_string();
    assert!(missing.contains("needs base_url"), "{missing}");
    let misplaced = config("base_url = \"http://h:1/v1\"\nurl = \"http://h:1/\"")
        .expect_err("url")
        .to_string();
    assert!(misplaced.contains("`url` does not apply"), "{misplaced}");
}
