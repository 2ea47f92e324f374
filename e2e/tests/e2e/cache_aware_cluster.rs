//! Prefix-aware routing consistent across the gateways of a cluster: three
//! gateway processes on one etcd, three agents (each given one gateway's
//! address, registered with all three) fronting toy models that simulate a
//! KV cache, the `cache-aware` plugin on every gateway. A multi-turn chat
//! whose turns go round-robin over the three gateways keeps the KV-cache
//! hit rate of the same chat through one gateway: the agents report the
//! prefix blocks of the calls they served to every gateway, so a gateway
//! routes a conversation's next turn to the node holding its history even
//! when another gateway sent the turns before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::cluster::ClusterFleet;
use crate::common::cluster::etcd_installed;
use crate::common::service;
use crate::openai::Toy;

/// Conversations of each chat, interleaved turn by turn.
const CONVERSATIONS: usize = 5;
/// Turns of each conversation.
const ROUNDS: usize = 4;
/// The pause between rounds: a node's report of the blocks it holds goes
/// out within about 100 ms of the call (coalesced), well within this.
const BETWEEN_ROUNDS: Duration = Duration::from_millis(500);
const NODES: [&str; 3] = ["node-0", "node-1", "node-2"];

fn words(n: usize, salt: &str) -> String {
    (0..n)
        .map(|i| format!("{salt}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a chat came to: prompt tokens, those the serving model found in
/// its KV cache, and each turn's node and explanation (for failures).
#[derive(Debug, Default)]
struct Chat {
    prompt_tokens: u64,
    cached_tokens: u64,
    turns: Vec<String>,
}

impl Chat {
    /// Cached prompt tokens over all prompt tokens.
    fn hit_rate(&self) -> f64 {
        self.cached_tokens as f64 / self.prompt_tokens.max(1) as f64
    }
}

/// Runs the chat: conversation `c`'s turn in round `r` goes to
/// `urls[(r + c) % urls.len()]`, so with several gateways each turn of a
/// conversation goes to another gateway than the one before.
async fn chat(http: &reqwest::Client, urls: &[String], salt: &str) -> Chat {
    let mut out = Chat::default();
    let mut histories: Vec<Vec<Value>> = (0..CONVERSATIONS)
        .map(|c| vec![json!({"role": "system", "content": words(64, &format!("{salt}s{c}-"))})])
        .collect();
    for round in 0..ROUNDS {
        for (c, history) in histories.iter_mut().enumerate() {
            history.push(
                json!({"role": "user", "content": words(32, &format!("{salt}u{c}-{round}-"))}),
            );
            let url = &urls[(round + c) % urls.len()];
            let r = http
                .post(url)
                .header("x-switchyard-explain", "1")
                .json(&json!({"model": "llm", "messages": history, "max_tokens": 4}))
                .send()
                .await
                .expect("POST");
            let status = r.status();
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let (node, why) = (header("x-switchyard-node"), header("x-switchyard-explain"));
            let body: Value = r.json().await.expect("a JSON answer");
            assert_eq!(status, 200, "{body}");
            let usage = &body["usage"];
            out.prompt_tokens += usage["prompt_tokens"].as_u64().expect("prompt_tokens");
            out.cached_tokens += usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0);
            out.turns.push(format!(
                "conversation {c} round {round} via {url}: {node}, {why}"
            ));
            history.push(
                json!({"role": "assistant", "content": words(8, &format!("{salt}a{c}-{round}-"))}),
            );
        }
        tokio::time::sleep(BETWEEN_ROUNDS).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_round_robin_over_three_gateways_keeps_the_kv_hit_rate_of_one() {
    if !etcd_installed() {
        return;
    }
    // A cache large enough that nothing is evicted: only routing decides
    // whether a turn finds its history.
    let flags = ["--kv-cache-tokens", "65536", "--tokens-per-s", "1000"];
    let toys = [
        Toy::start("llm", &flags).await,
        Toy::start("llm", &flags).await,
        Toy::start("llm", &flags).await,
    ];
    let mut fleet = ClusterFleet::start(3, "[services.llm]\npolicy = \"cache-aware\"\n").await;
    for (k, (id, toy)) in NODES.iter().zip(&toys).enumerate() {
        let base_url = format!("base_url = \"{}/v1\"", toy.url);
        fleet.spawn_agent(id, k, &service("llm", "openai", &base_url));
    }
    fleet.wait_nodes_everywhere(&NODES).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = |i: usize| format!("http://{}/v1/chat/completions", fleet.gateway(i).http);

    let one = chat(&http, &[url(0)], "one-").await;
    let three = chat(&http, &[url(0), url(1), url(2)], "three-").await;
    eprintln!(
        "KV hit rate: one gateway {:.3} ({}/{} prompt tokens), three gateways {:.3} ({}/{})",
        one.hit_rate(),
        one.cached_tokens,
        one.prompt_tokens,
        three.hit_rate(),
        three.cached_tokens,
        three.prompt_tokens,
    );
    // Through one gateway the later turns find their history (the first
    // turn of each conversation cannot).
    assert!(
        one.hit_rate() > 0.4,
        "one gateway: {:.3}\n{}",
        one.hit_rate(),
        one.turns.join("\n")
    );
    assert!(
        three.hit_rate() >= 0.9 * one.hit_rate(),
        "three gateways {:.3} against one {:.3}:\n{}\n{}",
        three.hit_rate(),
        one.hit_rate(),
        three.turns.join("\n"),
        fleet.log_tails()
    );
}
