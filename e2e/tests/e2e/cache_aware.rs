//! Prefix-aware routing end to end: multi-turn conversations through the
//! HTTP ingress, routed by the `cache-aware` plugin over the prompt's block
//! hashes, to agents whose `openai` services front toy models that simulate
//! a KV cache (`--kv-cache-tokens`, `--prefill-us-per-token`). Each
//! conversation's later turns stick to the node that holds its history,
//! and their time to first token drops, because that node's cache holds
//! the prefix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Fleet, TOKEN, service};
use crate::openai::Toy;

/// One chat turn's answer: who served it, when its first token came.
struct Turn {
    node: String,
    ttft: Duration,
    why: String,
}

/// Posts `messages` as a streamed chat completion and reads the stream to
/// its end.
async fn turn(http: &reqwest::Client, url: &str, messages: &[Value]) -> Turn {
    let sent = Instant::now();
    let mut r = http
        .post(url)
        .header("x-switchyard-explain", "1")
        .header("content-type", "application/json")
        .body(
            json!({"model": "llm", "messages": messages, "stream": true, "max_tokens": 4})
                .to_string(),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    let node = r.headers()["x-switchyard-node"]
        .to_str()
        .unwrap()
        .to_string();
    let why = r.headers()["x-switchyard-explain"]
        .to_str()
        .unwrap()
        .to_string();
    let mut ttft = None;
    while let Some(chunk) = r.chunk().await.expect("stream") {
        if ttft.is_none() && chunk.windows(5).any(|w| w == b"data:") {
            ttft = Some(sent.elapsed());
        }
    }
    Turn {
        node,
        ttft: ttft.expect("a data chunk"),
        why,
    }
}

fn words(n: usize, salt: &str) -> String {
    (0..n)
        .map(|i| format!("{salt}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_stick_to_their_node_and_later_turns_start_sooner() {
    // 2 ms per uncached prompt token: a 100-word first turn takes ~200 ms
    // to its first token, a later turn whose history is cached ~60 ms.
    let flags = [
        "--kv-cache-tokens",
        "8192",
        "--prefill-us-per-token",
        "2000",
        "--tokens-per-s",
        "1000",
    ];
    let toys = [
        Toy::start("llm", &flags).await,
        Toy::start("llm", &flags).await,
        Toy::start("llm", &flags).await,
    ];
    let mut fleet = Fleet::start(|config| {
        config.services.insert(
            "llm".into(),
            gateway::config::ServiceConfig {
                policy: Some("cache-aware".into()),
                ..Default::default()
            },
        );
    })
    .await;
    for (i, toy) in toys.iter().enumerate() {
        let base_url = format!("base_url = \"{}/v1\"", toy.url);
        fleet.spawn_agent(
            &format!("node-{i}"),
            TOKEN,
            &service("llm", "openai", &base_url),
        );
    }
    fleet.wait_nodes(3).await;
    let url = format!("{}/v1/chat/completions", fleet.gateway.http_url().unwrap());
    let http = reqwest::Client::new();

    let mut served: HashMap<usize, Vec<Turn>> = HashMap::new();
    let mut histories: Vec<Vec<Value>> = (0..4)
        .map(|c| vec![json!({"role": "system", "content": words(60, &format!("s{c}-"))})])
        .collect();
    for round in 0..3 {
        for (c, history) in histories.iter_mut().enumerate() {
            history.push(json!({"role": "user", "content": words(40, &format!("u{c}-{round}-"))}));
            let t = turn(&http, &url, history).await;
            history
                .push(json!({"role": "assistant", "content": words(8, &format!("a{c}-{round}-"))}));
            served.entry(c).or_default().push(t);
        }
    }
    for (c, turns) in &served {
        for t in turns {
            eprintln!("conversation {c}: ttft {:?}, why: {}", t.ttft, t.why);
        }
        let first = &turns[0];
        for later in &turns[1..] {
            assert_eq!(
                later.node, first.node,
                "conversation {c} moved: {}",
                later.why
            );
            assert!(
                later.why.starts_with("cache-aware -> ") && later.why.contains("match"),
                "conversation {c}: {}",
                later.why
            );
        }
        let (cold, warm) = (first.ttft, turns[2].ttft);
        assert!(
            warm < cold,
            "conversation {c}: a later turn starts sooner ({warm:?}) than the first ({cold:?})"
        );
    }
}
