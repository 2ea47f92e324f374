//! Services against real processes and a real local HTTP server.

use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

mod hosted;
mod logs;
mod streaming;

const SECOND: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(30);

fn services(list: Vec<ServiceConfig>) -> Services {
    Services::new(&list).expect("services")
}

fn one(kind: ServiceKind) -> Services {
    services(vec![ServiceConfig::new("svc", kind)])
}

#[tokio::test]
async fn sha256sum_matches_a_local_run() {
    let payload = Bytes::from(
        (0..100_000u32)
            .flat_map(u32::to_le_bytes)
            .collect::<Vec<_>>(),
    );
    let got = one(ServiceKind::command(["sha256sum"]))
        .call("svc", payload.clone(), LONG)
        .await
        .expect("sha256sum");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("input");
    std::fs::write(&file, &payload).expect("write");
    let local = std::process::Command::new("sha256sum")
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("local sha256sum");
    assert_eq!(got, Bytes::from(local.stdout));
}

#[tokio::test]
async fn cat_echoes_a_mebibyte() {
    // Larger than a pipe buffer both ways: needs stdin and stdout concurrently.
    let payload = Bytes::from(
        (0..1024 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let got = one(ServiceKind::command(["cat"]))
        .call("svc", payload.clone(), LONG)
        .await
        .expect("cat");
    assert_eq!(got, payload);
}

#[tokio::test]
async fn env_and_cwd_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kind = ServiceKind::command(["sh", "-c", "printf '%s %s' \"$GREETING\" \"$(pwd)\""]);
    if let ServiceKind::Command(c) = &mut kind {
        c.env.insert("GREETING".into(), "hello".into());
        c.cwd = Some(dir.path().to_path_buf());
    }
    let got = one(kind).call("svc", Bytes::new(), LONG).await.expect("sh");
    let cwd = dir.path().canonicalize().expect("canonical");
    assert_eq!(got, Bytes::from(format!("hello {}", cwd.display())));
}

#[tokio::test]
async fn failing_command_reports_exit_status_and_stderr() {
    let err = one(ServiceKind::command([
        "sh",
        "-c",
        "echo 'bad input' >&2; exit 3",
    ]))
    .call("svc", Bytes::from_static(b"x"), LONG)
    .await
    .expect_err("fails");
    assert_eq!(err.kind, ErrorKind::ServiceFailed);
    assert_eq!(err.message, "exit status 3: bad input");
}

#[tokio::test]
async fn stderr_is_bounded_to_its_tail() {
    let script = "head -c 100000 /dev/zero | tr '\\0' a >&2; echo THE-END >&2; exit 1";
    let err = one(ServiceKind::command(["sh", "-c", script]))
        .call("svc", Bytes::new(), LONG)
        .await
        .expect_err("fails");
    assert!(
        err.message.len() <= MAX_ERROR_MESSAGE,
        "{}",
        err.message.len()
    );
    assert!(
        err.message.starts_with("exit status 1: ..."),
        "{:.40}",
        err.message
    );
    assert!(
        err.message.ends_with("THE-END"),
        "{}",
        &err.message[err.message.len() - 20..]
    );
}

#[tokio::test]
async fn missing_program_is_a_clear_failure() {
    let err = one(ServiceKind::command(["/nonexistent/program"]))
        .call("svc", Bytes::new(), LONG)
        .await
        .expect_err("fails");
    assert_eq!(err.kind, ErrorKind::ServiceFailed);
    assert!(
        err.message.starts_with("cannot start /nonexistent/program"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_command_that_ignores_stdin_still_succeeds() {
    let big = Bytes::from(vec![b'x'; 4 * 1024 * 1024]);
    let got = one(ServiceKind::command(["echo", "done"]))
        .call("svc", big, LONG)
        .await
        .expect("echo");
    assert_eq!(got, Bytes::from_static(b"done\n"));
}

#[tokio::test]
async fn timeout_kills_and_reaps_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    // `exec` keeps the pid: the pid written is the sleeping process.
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let services = one(ServiceKind::command([
        "sh".to_string(),
        "-c".into(),
        script,
    ]));
    let started = Instant::now();
    let err = services
        .call("svc", Bytes::new(), Duration::from_millis(300))
        .await
        .expect_err("times out");
    let elapsed = started.elapsed();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    let pid = std::fs::read_to_string(&pid_file).expect("pid file");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
    // Reaped, not a zombie: the /proc entry is gone.
    assert!(!proc_dir.exists(), "process {} still exists", pid.trim());
    assert_eq!(services.in_flight(), [("svc".to_string(), 0)]);
}

#[tokio::test]
async fn output_bound_is_enforced() {
    let mut kind = ServiceKind::command(["head", "-c", "1000000", "/dev/zero"]);
    if let ServiceKind::Command(c) = &mut kind {
        c.max_output_bytes = 64 * 1024;
    }
    let err = one(kind)
        .call("svc", Bytes::new(), LONG)
        .await
        .expect_err("too much");
    assert_eq!(err.kind, ErrorKind::ServiceFailed);
    assert_eq!(err.message, format!("output exceeds {} bytes", 64 * 1024));

    // An endless producer is stopped too.
    let mut kind = ServiceKind::command(["yes"]);
    if let ServiceKind::Command(c) = &mut kind {
        c.max_output_bytes = 1024 * 1024;
    }
    let started = Instant::now();
    let err = one(kind)
        .call("svc", Bytes::new(), LONG)
        .await
        .expect_err("too much");
    assert!(err.message.starts_with("output exceeds"), "{err}");
    assert!(started.elapsed() < 5 * SECOND);
}

/// A one-shot HTTP/1.1 server on 127.0.0.1: answers the first request with
/// `status` and `body`, and hands back the request it read.
async fn http_server(
    status: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    typed_http_server(status, "text/plain", body).await
}

/// [`http_server`] answering with `content_type`.
async fn typed_http_server(
    status: &'static str,
    content_type: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1/run", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        let body_start = loop {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "request ended early");
            request.extend_from_slice(&buf[..n]);
            if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&request[..body_start]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("length"));
        while request.len() < body_start + len {
            let n = socket.read(&mut buf).await.expect("read body");
            assert!(n > 0, "body ended early");
            request.extend_from_slice(&buf[..n]);
        }
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.expect("write");
        socket.shutdown().await.ok();
        request
    });
    (url, task)
}

#[tokio::test]
async fn http_posts_the_payload_and_returns_the_body() {
    let (url, server) = http_server("200 OK", "{\"text\":\"hi\"}").await;
    let mut kind = ServiceKind::http(url);
    if let ServiceKind::Http(h) = &mut kind {
        h.content_type = "application/json".into();
    }
    let got = one(kind)
        .call("svc", Bytes::from_static(b"{\"prompt\":\"x\"}"), LONG)
        .await
        .expect("http");
    assert_eq!(got, Bytes::from_static(b"{\"text\":\"hi\"}"));
    let request = String::from_utf8(server.await.expect("server")).expect("utf8");
    assert!(
        request.starts_with("POST /v1/run HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_lowercase()
            .contains("content-type: application/json"),
        "{request}"
    );
    assert!(request.ends_with("\r\n\r\n{\"prompt\":\"x\"}"), "{request}");
}

#[tokio::test]
async fn http_error_status_is_a_service_failure_with_the_body() {
    let (url, server) = http_server("500 Internal Server Error", "model exploded").await;
    let err = one(ServiceKind::http(url))
        .call("svc", Bytes::from_static(b"x"), LONG)
        .await
        .expect_err("500");
    assert_eq!(err.kind, ErrorKind::ServiceFailed);
    assert_eq!(
        err.message,
        "http status 500 Internal Server Error: model exploded"
    );
    assert_eq!(err.status, Some(500));
    assert_eq!(err.body, None, "not JSON: not passed on as a body");
    assert!(!err.not_run, "the server had the request");
    server.await.expect("server");
}

#[tokio::test]
async fn an_openai_error_keeps_its_status_and_json_body() {
    const BODY: &str = r#"{"error":{"message":"messages is required","type":"invalid_request_error","code":null}}"#;
    let (url, server) = typed_http_server("400 Bad Request", "application/json", BODY).await;
    let base = url.trim_end_matches("/v1/run").to_string();
    let err = one(ServiceKind::openai(format!("{base}/v1")))
        .call("svc", Bytes::from_static(b"{}"), LONG)
        .await
        .expect_err("400");
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert_eq!(err.status, Some(400));
    assert_eq!(err.body.as_deref(), Some(BODY), "the server's own body");
    let wire = err.into_call_error();
    assert_eq!(
        (wire.status, wire.body.as_deref(), wire.not_run),
        (Some(400), Some(BODY), false)
    );
    let request = String::from_utf8(server.await.expect("server")).expect("utf8");
    assert!(
        request.starts_with("POST /v1/chat/completions "),
        "{request}"
    );
}

/// Serves one HTTP/1.1 request from `socket` (answering its body back, the
/// connection kept alive); false once the client closed the connection.
async fn answer_one(socket: &mut tokio::net::TcpStream) -> bool {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let body_start = loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..body_start]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("length"));
    while request.len() < body_start + len {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let body = &request[body_start..];
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
    socket.write_all(head.as_bytes()).await.is_ok() && socket.write_all(body).await.is_ok()
}

#[tokio::test]
async fn http_calls_reuse_one_kept_alive_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1/run", listener.local_addr().expect("addr"));
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.expect("accept");
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move { while answer_one(&mut socket).await {} });
        }
    });
    // Two services on the same server share the agent's one pooled client.
    let mut a = ServiceConfig::new("a", ServiceKind::http(url.clone()));
    a.max_concurrent = 1;
    let b = ServiceConfig::new("b", ServiceKind::http(url));
    let services = services(vec![a, b]);
    for i in 0..6 {
        let name = if i % 2 == 0 { "a" } else { "b" };
        let payload = Bytes::from(format!("call {i}"));
        let got = services
            .call(name, payload.clone(), LONG)
            .await
            .expect("http call");
        assert_eq!(got, payload);
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "sequential calls reuse one keep-alive connection"
    );
    server.abort();
}

#[tokio::test]
async fn http_connect_failure_is_clear() {
    // Bind then drop: the port is very likely closed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/x", listener.local_addr().expect("addr"));
    drop(listener);
    let err = one(ServiceKind::http(url.clone()))
        .call("svc", Bytes::new(), LONG)
        .await
        .expect_err("refused");
    assert_eq!(err.kind, ErrorKind::ServiceFailed);
    assert!(
        err.message.starts_with(&format!("cannot connect to {url}")),
        "{err}"
    );
    assert!(err.not_run, "refused: nothing of the request was written");
    assert!(err.into_call_error().not_run, "and the wire says so");
}

#[tokio::test]
async fn http_timeout() {
    // Accepts, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/x", listener.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(LONG).await;
        drop(socket);
    });
    let started = Instant::now();
    let err = one(ServiceKind::http(url))
        .call("svc", Bytes::new(), Duration::from_millis(300))
        .await
        .expect_err("timeout");
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < 2 * SECOND);
    hold.abort();
}

#[tokio::test]
async fn builtins() {
    let services = services(vec![
        ServiceConfig::new("echo", ServiceKind::Echo),
        ServiceConfig::new("sleep", ServiceKind::Sleep),
        ServiceConfig::new("sum-up", ServiceKind::SumUp),
    ]);
    let echo = services
        .call("echo", Bytes::from_static(b"abc"), SECOND)
        .await;
    assert_eq!(echo, Ok(Bytes::from_static(b"abc")));
    let sum = services
        .call("sum-up", Bytes::from_static(b"100"), SECOND)
        .await;
    assert_eq!(sum, Ok(Bytes::from_static(b"5050")));
    let slept = services
        .call("sleep", Bytes::from_static(b"20"), SECOND)
        .await;
    assert_eq!(slept, Ok(Bytes::from_static(b"slept 20 ms")));
    let err = services
        .call(
            "sleep",
            Bytes::from_static(b"5000"),
            Duration::from_millis(50),
        )
        .await
        .expect_err("timeout");
    assert_eq!(err.kind, ErrorKind::Timeout);
    let err = services
        .call("sum-up", Bytes::from_static(b"-1"), SECOND)
        .await
        .expect_err("bad");
    assert_eq!(err.kind, ErrorKind::ServiceFailed);
}

#[tokio::test]
async fn sum_up_honours_the_timeout() {
    let services = one(ServiceKind::SumUp);
    let started = Instant::now();
    let err = services
        .call(
            "svc",
            Bytes::from_static(b"1000000000000"),
            Duration::from_millis(200),
        )
        .await
        .expect_err("too slow");
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(started.elapsed() < SECOND, "{:?}", started.elapsed());
}

#[tokio::test]
async fn unknown_service_and_slot_limits() {
    let mut config = ServiceConfig::new("sleep", ServiceKind::Sleep);
    config.max_concurrent = 2;
    let services = services(vec![config]);
    let err = services.acquire("nope").expect_err("unknown");
    assert_eq!(err.kind, ErrorKind::UnknownService);

    let a = services.acquire("sleep").expect("slot 1");
    let b = services.acquire("sleep").expect("slot 2");
    assert_eq!(services.in_flight(), [("sleep".to_string(), 2)]);
    let err = services.acquire("sleep").expect_err("full");
    assert_eq!(err.kind, ErrorKind::NoNodeAvailable);
    drop(a);
    let c = services.acquire("sleep").expect("slot freed");
    drop((b, c));
    assert_eq!(services.in_flight(), [("sleep".to_string(), 0)]);

    // A running call holds its slot, and a dropped call frees it.
    let running = {
        let services = services.clone();
        tokio::spawn(async move {
            services
                .call("sleep", Bytes::from_static(b"10000"), LONG)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(services.in_flight(), [("sleep".to_string(), 1)]);
    running.abort();
    let _ = running.await;
    assert_eq!(services.in_flight(), [("sleep".to_string(), 0)]);
    assert_eq!(
        services.specs(),
        [protocol::ServiceSpec {
            name: "sleep".into(),
            max_concurrent: 2,
            load_ms: 0,
            model: false,
            policy: None,
            idempotent: false,
        }]
    );
}

#[test]
fn job_calls_are_counted_across_services_while_their_slots_are_held() {
    let services = services(vec![
        ServiceConfig::new("a", ServiceKind::Echo),
        ServiceConfig::new("b", ServiceKind::Echo),
    ]);
    let mut changes = services.load_changes();
    changes.borrow_and_update();
    let mut job_a = services.acquire("a").expect("a");
    let plain = services.acquire("a").expect("a again");
    let mut job_b = services.acquire("b").expect("b");
    changes.borrow_and_update();
    assert_eq!(services.jobs_in_flight(), 0, "no slot marked yet");
    job_a.count_as_job();
    assert!(changes.has_changed().expect("open"), "a load change");
    job_a.count_as_job();
    job_b.count_as_job();
    assert_eq!(services.jobs_in_flight(), 2, "marked twice counts once");
    drop(plain);
    assert_eq!(services.jobs_in_flight(), 2, "a plain call is no job");
    drop(job_a);
    assert_eq!(services.jobs_in_flight(), 1);
    drop(job_b);
    assert_eq!(services.jobs_in_flight(), 0);
}

#[test]
fn each_sessions_slots_are_told_apart_from_the_others() {
    let mut a = ServiceConfig::new("a", ServiceKind::Echo);
    a.max_concurrent = 2;
    let services = services(vec![a, ServiceConfig::new("b", ServiceKind::Echo)]);
    let (one, two) = (services.tally(), services.tally());
    let others = |t: &Tally| services.others(t);
    let pairs = |x: &[(&str, u32)]| -> Vec<(String, u32)> {
        x.iter().map(|(s, n)| ((*s).to_string(), *n)).collect()
    };
    let mut first = services.acquire_for("a", &one).expect("a for one");
    let second = services.acquire_for("a", &two).expect("a for two");
    let plain = services.acquire("b").expect("b for no session");
    assert_eq!(others(&one), pairs(&[("a", 1), ("b", 1)]));
    assert_eq!(others(&two), pairs(&[("a", 1), ("b", 1)]));
    // A refusal counts for nobody.
    services.acquire_for("a", &one).expect_err("full");
    assert_eq!(others(&two), pairs(&[("a", 1), ("b", 1)]));
    first.count_as_job();
    assert_eq!(
        (services.jobs_others(&one), services.jobs_others(&two)),
        (0, 1)
    );
    drop(first);
    assert_eq!(others(&two), pairs(&[("a", 0), ("b", 1)]));
    assert_eq!(services.jobs_others(&two), 0);
    drop((second, plain));
    assert_eq!(others(&one), pairs(&[("a", 0), ("b", 0)]));
    assert_eq!(services.in_flight(), pairs(&[("a", 0), ("b", 0)]));
}

#[test]
fn error_messages_are_bounded() {
    let err = ServiceError::failed("é".repeat(5000));
    assert!(err.message.len() <= MAX_ERROR_MESSAGE);
    assert!(err.message.ends_with("..."));
}
