//! Multi-turn chat over nodes with KV caches: the cache's accounting, and
//! time to first token falling with cache hits (behaviour, in virtual time).

use switchyard_sim::Report;

use crate::common::{run, scenario};

/// One node, one worker, one conversation of 4 turns at a time (so no call
/// ever waits): system 32 words, user and reply 16 each, so every prompt is
/// whole blocks: 48, 80, 112, 144 tokens. Prefill 1000 µs a token, decode
/// 16 tokens at 160 tokens/s (100 ms).
fn one_conversation(kv_cache_tokens: usize) -> Report {
    let s = scenario(&format!(
        r#"
duration_s = 2000.0
warmup_s = 10.0
policies = ["round-robin.wasm"]
[core]
swap = false
[[services]]
name = "chat"
[[nodes]]
id = "gpu"
workers = 1
max_concurrent = 8
services = ["chat"]
model = {{ kv_cache_tokens = {kv_cache_tokens}, prefill_us_per_token = 1000.0, tokens_per_s = 160.0 }}
[[arrivals]]
service = "chat"
process = {{ kind = "chat", conversations = 1, turns = 4, rate_per_s = 0.5, system_words = 32, user_words = 16, reply_words = 16 }}
"#
    ));
    run(&s, "round-robin.wasm")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

#[test]
fn the_kv_cache_counts_whole_blocks_of_the_previous_turn() {
    let r = one_conversation(1 << 20);
    assert!(r.ttft_calls > 500 && r.ok == r.calls, "{r:?}");
    assert_eq!(r.ttft_calls, r.calls, "every turn has a first token");
    assert_eq!(r.cached_tokens % 16, 0, "hits are whole blocks");
    // A whole conversation sends 48 + 80 + 112 + 144 = 384 tokens and finds
    // the previous prompt each turn after the first: 48 + 80 + 112 = 240.
    let ratio = r.kv_hit_ratio();
    assert!((ratio - 240.0 / 384.0).abs() < 0.01, "{ratio} {r:?}");
    // Nothing waits: TTFT is the uncached tokens' prefill (1 ms each), and
    // the reply follows in 100 ms.
    let uncached = (r.prompt_tokens - r.cached_tokens) as f64;
    assert!(
        close(r.ttft_mean_ms, uncached / r.ttft_calls as f64),
        "{r:?}"
    );
    assert!(close(r.mean_ms, r.ttft_mean_ms + 100.0), "{r:?}");
}

#[test]
fn without_a_cache_nothing_hits_and_the_first_token_comes_later() {
    let cold = one_conversation(0);
    assert_eq!(cold.cached_tokens, 0, "{cold:?}");
    assert!(cold.prompt_tokens > 0);
    assert!(close(
        cold.ttft_mean_ms,
        cold.prompt_tokens as f64 / cold.ttft_calls as f64
    ));
    // The same conversations (same seed) with a cache: hits, and TTFT falls.
    let warm = one_conversation(1 << 20);
    assert!(warm.cached_tokens > 0);
    assert!(
        warm.ttft_mean_ms < 0.5 * cold.ttft_mean_ms,
        "{} vs {}",
        warm.ttft_mean_ms,
        cold.ttft_mean_ms
    );
}

#[test]
fn a_cache_too_small_for_the_history_evicts_it() {
    // 3 blocks: the 4-turn history outgrows it, so later turns find only
    // their prompt's head (the least recently used tail goes first).
    let small = one_conversation(48);
    let big = one_conversation(1 << 20);
    assert!(small.cached_tokens > 0, "{small:?}");
    assert!(small.kv_hit_ratio() < big.kv_hit_ratio());
}
