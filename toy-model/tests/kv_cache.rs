//! The simulated KV cache through the real server ([`Server`], in this
//! process, over HTTP on loopback): `cached_tokens` on repeated prompts,
//! `/metrics` with vLLM's names, and requests waiting past `--max-running`.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_toy_model::{Args, Server};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// A ready server with `flags` added.
fn server(flags: &[&str]) -> Server {
    let base = ["--port", "0", "--load-ms", "0", "--name", "llama"];
    let args = Args::from_flags(base.iter().chain(flags)).expect("flags");
    Server::start(args).expect("server")
}

/// Sends one HTTP/1.1 request on a fresh connection; the connection, its
/// head read (status checked: 200).
async fn send(server: &Server, method: &str, path: &str, body: &str) -> BufReader<TcpStream> {
    let mut tcp = TcpStream::connect(server.addr()).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: toy\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut reader = BufReader::new(tcp);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    reader
}

/// A whole answer's body (the connection closes after it).
async fn get(server: &Server, method: &str, path: &str, body: &str) -> String {
    let mut reader = send(server, method, path, body).await;
    let mut text = String::new();
    reader.read_to_string(&mut text).await.expect("body");
    text
}

/// A chat completion's JSON answer.
async fn chat(server: &Server, content: &str) -> Value {
    let body = json!({"messages": [{"role": "user", "content": content}], "max_tokens": 2});
    let text = get(server, "POST", "/v1/chat/completions", &body.to_string()).await;
    serde_json::from_str(&text).expect("json")
}

/// The sample `name{model_name="llama"}`'s value in `/metrics`.
async fn metric(server: &Server, name: &str) -> f64 {
    let text = get(server, "GET", "/metrics", "").await;
    let sample = format!("{name}{{model_name=\"llama\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&sample))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in {text}"))
}

/// `n` words `{p}0 {p}1 ...`.
fn words(p: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("{p}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn a_repeated_prompt_is_served_from_the_cache() {
    let server = server(&["--kv-cache-tokens", "1024", "--prefill-us-per-token", "10"]);
    assert_eq!(metric(&server, "vllm:gpu_cache_usage_perc").await, 0.0);
    let prompt = words("w", 40);
    let first = chat(&server, &prompt).await;
    assert_eq!(first["usage"]["prompt_tokens"], 40);
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let again = chat(&server, &prompt).await;
    assert_eq!(again["usage"]["prompt_tokens_details"]["cached_tokens"], 32);
    // A later turn: the whole history again, then more.
    let body = json!({
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": words("a", 10)},
            {"role": "user", "content": words("u", 20)},
        ],
        "max_tokens": 2, "stream": true, "stream_options": {"include_usage": true},
    });
    let stream = get(&server, "POST", "/v1/chat/completions", &body.to_string()).await;
    // Events are lines (between the chunked encoding's size lines).
    let usage: Value = stream
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find_map(|chunk| chunk.get("usage").cloned())
        .expect("a usage chunk");
    assert_eq!(usage["prompt_tokens"], 70);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 32);
    // Another prompt shares nothing.
    let other = chat(&server, &words("x", 40)).await;
    assert_eq!(other["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    assert_eq!(
        metric(&server, "vllm:prefix_cache_queries_total").await,
        190.0
    );
    assert_eq!(metric(&server, "vllm:prefix_cache_hits_total").await, 64.0);
    // 64 blocks: w's 2, the later turn's 2 more, x's 2.
    assert_eq!(
        metric(&server, "vllm:gpu_cache_usage_perc").await,
        6.0 / 64.0
    );
    assert_eq!(metric(&server, "vllm:num_requests_running").await, 0.0);
    assert_eq!(metric(&server, "vllm:num_requests_waiting").await, 0.0);
}

#[tokio::test]
async fn without_a_cache_nothing_is_cached() {
    let server = server(&[]);
    let prompt = words("w", 40);
    chat(&server, &prompt).await;
    let again = chat(&server, &prompt).await;
    assert_eq!(again["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        metric(&server, "vllm:prefix_cache_queries_total").await,
        80.0
    );
    assert_eq!(metric(&server, "vllm:prefix_cache_hits_total").await, 0.0);
    assert_eq!(metric(&server, "vllm:gpu_cache_usage_perc").await, 0.0);
}

#[tokio::test]
async fn requests_past_max_running_wait() {
    // One runs at a time; each takes 100 tokens at 50 a second: 2 s.
    let server = server(&["--max-running", "1", "--tokens-per-s", "50"]);
    let body = json!({"prompt": "a b", "max_tokens": 100, "stream": true}).to_string();
    let first = send(&server, "POST", "/v1/completions", &body).await;
    // The second's head comes at once, its events only once it runs.
    let second = send(&server, "POST", "/v1/completions", &body).await;
    let mut waiting = 0.0;
    for _ in 0..200 {
        waiting = metric(&server, "vllm:num_requests_waiting").await;
        if waiting == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(waiting, 1.0);
    assert_eq!(metric(&server, "vllm:num_requests_running").await, 1.0);
    // The first given up: the second runs.
    drop(first);
    let mut running = (1.0, 1.0);
    for _ in 0..200 {
        running = (
            metric(&server, "vllm:num_requests_waiting").await,
            metric(&server, "vllm:num_requests_running").await,
        );
        if running == (0.0, 1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(running, (0.0, 1.0));
    drop(second);
}
