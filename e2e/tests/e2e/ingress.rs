//! The HTTP ingress with a real client, curl: `/v1/call/{service}` with
//! options as headers and metadata back as headers, streamed; and every
//! error status a user should see, in OpenAI's error shape.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{ADMIN, Fleet, TOKEN, service};

/// What curl saw: status, headers (lowercase names), body, and its
/// time to the first response byte and in all, s.
#[derive(Debug)]
pub struct Curl {
    /// The status line's protocol, e.g. `HTTP/1.1` or `HTTP/2`.
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub first_byte_s: f64,
    pub total_s: f64,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The OpenAI error body's `(type, code)`, checking its shape.
    pub fn openai_error(&self) -> (String, String) {
        let body: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body {:?} is not JSON: {e}", self.body));
        let error = &body["error"];
        assert!(error["message"].is_string(), "{body}");
        (
            error["type"].as_str().expect("type").to_string(),
            error["code"].as_str().expect("code").to_string(),
        )
    }
}

/// Runs curl with `args` (plus `-s -i -N`), `body` as the request body.
pub fn curl(args: &[&str], body: Option<&str>) -> Curl {
    let dir = tempfile::tempdir().expect("tempdir");
    let headers = dir.path().join("headers");
    let mut command = Command::new("curl");
    command
        .args(["-s", "-S", "-N", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{time_starttransfer} %{time_total}"])
        .args(args);
    if let Some(body) = body {
        command.args(["--data-binary", body]);
    }
    let out = command.output().expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, times) = stdout.rsplit_once('\n').expect("timings line");
    let mut times = times.split(' ').map(|t| t.parse::<f64>().unwrap_or(0.0));
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let version = status_line
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?} {:?}", out.stderr));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curl {
        version,
        status,
        headers,
        body: body.to_string(),
        first_byte_s: times.next().unwrap_or(0.0),
        total_s: times.next().unwrap_or(0.0),
    }
}

const TICKS: &str =
    r#"command = ["sh", "-c", "cat; echo one; sleep 0.6; echo two; sleep 0.6; echo three"]"#;

#[tokio::test]
async fn the_raw_route_streams_with_options_and_metadata_as_headers() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("ticks", "command", TICKS));
    fleet.wait_nodes(1).await;
    let url = format!(
        "{}/v1/call/ticks",
        fleet.gateway.http_url().expect("ingress")
    );

    let got = tokio::task::spawn_blocking(move || {
        curl(
            &[
                "-X",
                "POST",
                "-H",
                "x-switchyard-hint: max_cost=1",
                "-H",
                "x-switchyard-hint: region=eu",
                "-H",
                "x-switchyard-priority: 2",
                "-H",
                "x-switchyard-policy: least-request",
                "-H",
                "x-switchyard-timeout-ms: 10000",
                &url,
            ],
            Some("zero\n"),
        )
    })
    .await
    .expect("curl");
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, "zero\none\ntwo\nthree\n");
    assert_eq!(got.header("x-switchyard-node"), Some("node-a"));
    assert_eq!(got.header("x-switchyard-policy"), Some("least-request"));
    assert_eq!(got.header("x-switchyard-cache"), Some("miss"));
    assert_eq!(got.header("x-switchyard-attempts"), Some("1"));
    assert!(got.header("x-switchyard-queue-ms").is_some(), "{got:?}");
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert!(
        got.first_byte_s < got.total_s / 2.0,
        "the first bytes came at {} s of {} s: streamed",
        got.first_byte_s,
        got.total_s
    );
}

#[tokio::test]
async fn every_error_status_in_openai_shape() {
    let mut fleet = Fleet::start(|config| config.max_payload_bytes = 1024).await;
    let busy = "command = [\"sleep\", \"3\"]\nmax_concurrent = 1";
    let services = [
        service("busy", "command", busy),
        service(
            "fails",
            "command",
            r#"command = ["sh", "-c", "echo no >&2; exit 1"]"#,
        ),
        service("nap", "sleep", ""),
    ]
    .concat();
    fleet.spawn_agent("node-a", TOKEN, &services);
    fleet.spawn_agent("node-b", TOKEN, &service("lonely", "echo", ""));
    fleet.wait_nodes(2).await;
    let base = fleet.gateway.http_url().expect("ingress");
    let admin = fleet.gateway.admin_addr().expect("admin");

    // The slow call holds busy's only slot while the realtime one is refused.
    let hold = {
        let url = format!("{base}/v1/call/busy");
        tokio::task::spawn_blocking(move || curl(&["-X", "POST", &url], Some("")))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drain = format!("http://{admin}/api/nodes/node-b/drain");
    let auth = format!("authorization: Bearer {ADMIN}");
    let big = "x".repeat(2000);
    let cases: Vec<(u16, &str, Vec<String>, Option<String>)> = vec![
        (
            400,
            "bad header",
            vec![
                "-H".into(),
                "x-switchyard-priority: high".into(),
                format!("{base}/v1/call/nap"),
            ],
            Some("1".into()),
        ),
        (
            404,
            "unknown service",
            vec![format!("{base}/v1/call/nope")],
            Some("".into()),
        ),
        (
            404,
            "unknown route",
            vec![format!("{base}/v2/else")],
            Some("".into()),
        ),
        (
            413,
            "payload too large",
            vec![format!("{base}/v1/call/nap")],
            Some(big),
        ),
        (
            429,
            "occupied",
            vec![
                "-H".into(),
                "x-switchyard-realtime: true".into(),
                format!("{base}/v1/call/busy"),
            ],
            Some("".into()),
        ),
        (
            502,
            "service failed",
            vec![format!("{base}/v1/call/fails")],
            Some("".into()),
        ),
        (
            504,
            "timeout",
            vec![
                "-H".into(),
                "x-switchyard-timeout-ms: 300".into(),
                format!("{base}/v1/call/nap"),
            ],
            Some("2000".into()),
        ),
        // Drain node-b, the only node with `lonely`: no node is available.
        (
            200,
            "drain",
            vec!["-H".into(), auth, drain],
            Some("".into()),
        ),
        (
            503,
            "no node available",
            vec![format!("{base}/v1/call/lonely")],
            Some("".into()),
        ),
    ];
    for (want, what, args, body) in cases {
        let got = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = std::iter::once("-X")
                .chain(std::iter::once("POST"))
                .chain(args.iter().map(String::as_str))
                .collect();
            curl(&args, body.as_deref())
        })
        .await
        .expect("curl");
        assert_eq!(got.status, want, "{what}: {got:?}");
        if want == 200 {
            continue;
        }
        let (kind, code) = got.openai_error();
        match want {
            404 if what == "unknown service" => assert_eq!(code, "model_not_found"),
            429 => {
                assert_eq!(kind, "rate_limit_error");
                assert_eq!(code, "occupied");
                assert_eq!(got.header("retry-after"), Some("1"), "{got:?}");
            }
            502 => assert!(got.body.contains("exit status 1"), "{got:?}"),
            _ => {}
        }
    }
    let held = hold.await.expect("curl");
    assert_eq!(held.status, 200, "{held:?}");
}

/// Posts `body` to an `echo` service through an ingress configured by
/// `tweak`, with curl's extra `args` (`{ca}` stands for the CA file).
async fn echo_over(
    tweak: impl FnOnce(&mut gateway::GatewayConfig),
    args: &[&str],
    body: &str,
) -> Curl {
    let mut fleet = Fleet::start(tweak).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let ca = fleet.ca().display().to_string();
    let mut args: Vec<String> = args.iter().map(|a| a.replace("{ca}", &ca)).collect();
    args.extend(["-X".into(), "POST".into()]);
    args.push(format!(
        "{}/v1/call/echo",
        fleet.gateway.http_url().expect("ingress")
    ));
    let body = body.to_string();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args, Some(&body))
    })
    .await
    .expect("curl")
}

#[tokio::test]
async fn https_and_http2_with_the_gateway_certificate() {
    let got = echo_over(
        |config| config.http.tls = Some(true),
        &["--cacert", "{ca}", "--http2"],
        "over tls",
    )
    .await;
    assert_eq!(
        (got.version.as_str(), got.status),
        ("HTTP/2", 200),
        "{got:?}"
    );
    assert_eq!(got.body, "over tls");
}

#[tokio::test]
async fn plain_http2_with_prior_knowledge() {
    let got = echo_over(|_| {}, &["--http2-prior-knowledge"], "h2c").await;
    assert_eq!(
        (got.version.as_str(), got.status),
        ("HTTP/2", 200),
        "{got:?}"
    );
    assert_eq!(got.body, "h2c");
}

#[tokio::test]
async fn a_waiting_stream_gets_queue_comments_and_a_client_that_leaves_frees_its_place() {
    let toy = crate::openai::Toy::start("llama", &["--tokens-per-s", "10"]).await;
    let mut fleet = Fleet::start(|_| {}).await;
    let llama = format!("base_url = \"{}/v1\"\nmax_concurrent = 1", toy.url);
    fleet.spawn_agent("node-a", TOKEN, &service("llama", "openai", &llama));
    fleet.wait_nodes(1).await;
    let url = format!(
        "{}/v1/chat/completions",
        fleet.gateway.http_url().expect("ingress")
    );
    let chat = |max_tokens: u32, extra: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let body = format!(
                r#"{{"model":"llama","stream":true,"max_tokens":{max_tokens},"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            let mut args = vec!["-X", "POST", "-H", "content-type: application/json"];
            args.extend_from_slice(extra);
            args.push(&url);
            curl(&args, Some(&body))
        })
    };
    // The first holds the only slot for ~1.5 s; the second waits at 1; the
    // third waits at 2 and gives up after 0.6 s.
    let first = chat(15, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = chat(3, &[]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = chat(3, &["--max-time", "0.6"]);

    let third = third.await.expect("curl");
    assert_eq!(third.status, 200, "{third:?}");
    assert!(third.body.contains(": queued position=2"), "{third:?}");
    assert!(!third.body.contains("data: "), "it never ran: {third:?}");
    let second = second.await.expect("curl");
    let queued = second
        .body
        .find(": queued position=1")
        .expect("queue comment");
    let data = second.body.find("data: ").expect("events");
    assert!(queued < data, "{}", second.body);
    assert!(
        second.body.trim_end().ends_with("data: [DONE]"),
        "{}",
        second.body
    );
    assert_eq!(first.await.expect("curl").status, 200);

    let queues = fleet.gateway.queues();
    let llama = queues.iter().find(|q| q.service == "llama").expect("queue");
    assert_eq!(llama.abandoned_total, 1, "{llama:?}");
    let stats = reqwest::get(format!("{}/stats", toy.url))
        .await
        .expect("stats")
        .text()
        .await
        .expect("text");
    let stats: Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(
        stats["requests"], 2,
        "the call that left never reached the model: {stats}"
    );
}
