//! Section 7 (`llm`): time to first token of a multi-turn chat through the
//! gateway's OpenAI route, per policy. Each policy gets a run of its own on
//! a fresh fleet (the release gateway, 4 agents, and one toy model process
//! per agent with a cold simulated KV cache, [`fleet`]); the workload
//! ([`chat`]) is the same seeded schedule every time.

pub(crate) mod chat;
pub(crate) mod fleet;

use std::collections::BTreeMap;

use anyhow::Result;
use hdrhistogram::Histogram;

use crate::procs::cpu_seconds;
use crate::report::{Section, col};
use crate::scenarios::{SystemResult, Timing};
use crate::sections::Setup;
use chat::{Shape, TurnResult};

/// The policies compared, in the table's order.
pub const POLICIES: [&str; 4] = ["round-robin", "least-request", "cache-aware", "kv-aware"];

/// Arrival rate as a share of the no-cache capacity.
const LOAD: f64 = 0.7;

/// The toy models' and the workload's settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Settings {
    /// The conversations.
    pub shape: Shape,
    /// Nodes (agents, toy models).
    pub nodes: usize,
    /// `--max-running` of each toy model.
    pub max_running: usize,
    /// `--prefill-us-per-token`, µs.
    pub prefill_us_per_token: u64,
    /// `--tokens-per-s`.
    pub tokens_per_s: f64,
    /// `--kv-cache-tokens` of each toy model.
    pub kv_cache_tokens: usize,
    /// The agents' `max_concurrent` for the service (above `max_running`:
    /// the model server queues, as vLLM does, and the policy decides).
    pub max_concurrent: usize,
    /// The schedule's seed.
    pub seed: u64,
}

impl Settings {
    /// The settings of a full run (`quick`: 4 turns instead of 8).
    pub fn new(quick: bool) -> Self {
        let shape = Shape {
            conversations: 64,
            turns: if quick { 4 } else { 8 },
            system_words: 256,
            user_words: 32,
            reply_tokens: 32,
        };
        let nodes = 4;
        // About a third of all the histories per node: a node's share under
        // affinity routing (a quarter) fits, everything (round-robin) does not.
        let kv_cache_tokens = (shape.all_histories_tokens() / 3).div_ceil(16) * 16;
        Self {
            shape,
            nodes,
            max_running: 2,
            prefill_us_per_token: 400,
            tokens_per_s: 200.0,
            kv_cache_tokens,
            max_concurrent: 16,
            seed: 12,
        }
    }

    /// A turn's mean time on its node without any cache hit, s: the
    /// prefill of the whole prompt plus the answer's tokens.
    pub fn service_s(&self) -> f64 {
        self.shape.mean_prompt_tokens() * self.prefill_us_per_token as f64 / 1e6
            + self.shape.reply_tokens as f64 / self.tokens_per_s
    }

    /// Turns per second the fleet serves with no cache hit:
    /// nodes × max_running ÷ [`Self::service_s`].
    pub fn capacity_per_s(&self) -> f64 {
        (self.nodes * self.max_running) as f64 / self.service_s()
    }

    /// The arrival rate: [`LOAD`] × [`Self::capacity_per_s`].
    pub fn rate_per_s(&self) -> f64 {
        LOAD * self.capacity_per_s()
    }
}

/// One policy's figures from its turns and the toy models' cache counters.
pub fn figures(
    turns: &[TurnResult],
    hits: f64,
    queries: f64,
    wall_s: f64,
) -> BTreeMap<String, f64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("static histogram bounds are valid");
    let mut errors = 0;
    for t in turns {
        match t.ttft_us {
            Some(us) => {
                let _ = h.record(us.max(1));
            }
            None => errors += 1,
        }
    }
    // Turns after the first served by the node of the conversation's previous turn.
    let mut same = 0;
    let mut later = 0;
    for pair in turns.windows(2) {
        if pair[0].conversation == pair[1].conversation && pair[1].turn == pair[0].turn + 1 {
            later += 1;
            if pair[0].node.is_some() && pair[0].node == pair[1].node {
                same += 1;
            }
        }
    }
    let pct = |a: f64, b: f64| if b > 0.0 { a * 100.0 / b } else { 0.0 };
    BTreeMap::from([
        ("ttft_mean_ms".to_string(), h.mean() / 1e3),
        (
            "ttft_p50_ms".to_string(),
            h.value_at_quantile(0.5) as f64 / 1e3,
        ),
        (
            "ttft_p99_ms".to_string(),
            h.value_at_quantile(0.99) as f64 / 1e3,
        ),
        ("ttft_max_ms".to_string(), h.max() as f64 / 1e3),
        ("kv_hit_pct".to_string(), pct(hits, queries)),
        ("sticky_pct".to_string(), pct(same as f64, later as f64)),
        ("turns_ok".to_string(), h.len() as f64),
        ("errors".to_string(), errors as f64),
        ("wall_s".to_string(), wall_s),
    ])
}

/// How the routing targets fare in `systems`: cache-aware's mean TTFT at
/// most half of round-robin's, its p99 at most least-request's.
pub fn verdict(systems: &[SystemResult]) -> String {
    let get = |name: &str, key: &str| {
        systems
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.medians.get(key).copied())
    };
    let (Some(ca_mean), Some(rr_mean), Some(ca_p99), Some(lr_p99)) = (
        get("cache-aware", "ttft_mean_ms"),
        get("round-robin", "ttft_mean_ms"),
        get("cache-aware", "ttft_p99_ms"),
        get("least-request", "ttft_p99_ms"),
    ) else {
        return "Target not judged: cache-aware, round-robin or least-request did not run.".into();
    };
    let mean_ok = ca_mean <= rr_mean / 2.0;
    let p99_ok = ca_p99 <= lr_p99;
    format!(
        "Target: cache-aware mean TTFT ≤ ½ round-robin's: {ca_mean:.1} ms vs {:.1} ms ({:.2}× round-robin's) — {}; cache-aware p99 ≤ least-request's: {ca_p99:.1} ms vs {lr_p99:.1} ms — {}.",
        rr_mean / 2.0,
        if rr_mean > 0.0 {
            ca_mean / rr_mean
        } else {
            0.0
        },
        if mean_ok { "met" } else { "missed" },
        if p99_ok { "met" } else { "missed" },
    )
}

/// Section 7: runs each policy of [`POLICIES`] whose plugin is in the
/// plugins folder, on its own fleet.
///
/// # Errors
/// No toy model binary with the KV-cache flags is in the bin folder.
pub async fn section(s: &Setup<'_>, timing: &Timing, quick: bool) -> Result<Section> {
    let settings = Settings::new(quick);
    let toy = fleet::toy_binary(s.bin_dir)?;
    let metrics_url = fleet::agent_knows(&s.bin_dir.join("node-agent"), b"metrics_url");
    let schedule = chat::schedule(&settings.shape, settings.rate_per_s(), settings.seed);
    let mut systems = Vec::new();
    let mut skipped = Vec::new();
    for policy in POLICIES {
        if !s.plugins_dir.join(format!("{policy}.wasm")).exists() {
            skipped.push(policy);
            continue;
        }
        let dir = s.scratch.join(format!("llm-{policy}"));
        let f = fleet::LlmFleet::start(
            &settings,
            policy,
            s.bin_dir,
            &toy,
            s.plugins_dir,
            &dir,
            metrics_url,
        )?;
        let before = f.kv_counters()?;
        let cpu_before = (
            cpu_seconds(&[f.gateway_pid()]),
            cpu_seconds(&f.agent_pids()),
        );
        let target = chat::Target {
            urls: vec![format!(
                "http://127.0.0.1:{}/v1/chat/completions",
                f.ports.http
            )],
            model: fleet::SERVICE.into(),
            timeout_ms: 60_000,
        };
        let (turns, wall) = chat::run(target, settings.shape, schedule.clone()).await?;
        let after = f.kv_counters()?;
        let cpu = (
            cpu_seconds(&[f.gateway_pid()]) - cpu_before.0,
            cpu_seconds(&f.agent_pids()) - cpu_before.1,
        );
        let served = turns
            .iter()
            .find_map(|t| t.policy.clone())
            .unwrap_or_else(|| "?".into());
        if let Some(e) = turns.iter().find_map(|t| t.error.as_ref()) {
            println!("[llm {policy}] first error: {e}");
        }
        let mut medians = figures(
            &turns,
            after.0 - before.0,
            after.1 - before.1,
            wall.as_secs_f64(),
        );
        let n = turns.len().max(1) as f64;
        medians.insert("gateway_cpu_us_per_turn".into(), cpu.0 * 1e6 / n);
        medians.insert("agents_cpu_us_per_turn".into(), cpu.1 * 1e6 / n);
        println!("[llm {policy}] {medians:?}");
        systems.push(SystemResult {
            name: policy.into(),
            path: format!("{policy}.wasm (calls report policy `{served}`)"),
            medians,
            reps: Vec::new(),
        });
    }
    Ok(Section {
        id: "llm".into(),
        title: "7. LLM routing: multi-turn chat, time to first token per policy".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: notes(s.bin_dir, &settings, metrics_url, &skipped, &systems),
        systems,
        columns: vec![
            col("mean TTFT ms", "ttft_mean_ms", 1),
            col("p50 TTFT ms", "ttft_p50_ms", 1),
            col("p99 TTFT ms", "ttft_p99_ms", 1),
            col("KV hit %", "kv_hit_pct", 1),
            col("same node as previous turn %", "sticky_pct", 1),
            col("turns", "turns_ok", 0),
            col("errors", "errors", 0),
            col("run s", "wall_s", 0),
            col("gateway CPU µs/turn", "gateway_cpu_us_per_turn", 0),
        ],
    })
}

fn notes(
    bin_dir: &std::path::Path,
    settings: &Settings,
    metrics_url: bool,
    skipped: &[&str],
    systems: &[SystemResult],
) -> Vec<String> {
    let sh = &settings.shape;
    let mut notes = vec![
        format!(
            "The gateway (`{bin}/gateway`, one thread) and {n} agents, each with an `openai` service `{svc}` (`max_concurrent = {mc}`) in front of its own `switchyard-toy-model` (`--max-running {k} --prefill-us-per-token {t} --tokens-per-s {r} --kv-cache-tokens {kv} --load-ms 0`), a fresh fleet per policy (cold caches, fresh policy state); the service's policy is set by `[services.{svc}] policy` in `gateway.toml`.{mu}",
            bin = bin_dir.display(),
            n = settings.nodes,
            svc = fleet::SERVICE,
            mc = settings.max_concurrent,
            k = settings.max_running,
            t = settings.prefill_us_per_token,
            r = settings.tokens_per_s,
            kv = settings.kv_cache_tokens,
            mu = if metrics_url {
                " Agents scrape the toy's `/metrics` (`metrics_url`), so policies see waiting, running and KV-cache use."
            } else {
                " This agent build has no `metrics_url`: policies see no model-server load."
            },
        ),
        format!(
            "Workload: {c} conversations of {turns} turns, `POST /v1/chat/completions` with `\"stream\": true`, `max_tokens` {m}; each turn resends the whole history: the conversation's own system prompt ({sw} words, unique from its first word), the earlier user messages ({uw} words each) and the toy's answers, then the new user message. Prompt tokens per turn t = {sw} + t × ({uw} + {m}) + {uw}, mean {mean:.0}. Each conversation's turns follow a Poisson process of rate λ/{c} (all together Poisson at λ), a turn never before the previous answer ended; TTFT = from the turn's intended send time (its scheduled time, or the previous answer's end if later) to the first SSE data event (the toy sends the role chunk once the prefill is over), hdrhistogram. The same seeded schedule for every policy.",
            c = sh.conversations,
            turns = sh.turns,
            m = sh.reply_tokens,
            sw = sh.system_words,
            uw = sh.user_words,
            mean = sh.mean_prompt_tokens(),
        ),
        format!(
            "Load: no-cache service time s = mean prompt tokens × prefill + answer tokens ÷ tokens/s = {mean:.0} × {t} µs + {m} ÷ {r} = {s:.3} s; capacity = nodes × max-running ÷ s = {n} × {k} ÷ {s:.3} = {cap:.1} turns/s; λ = {load} × capacity = {rate:.2} turns/s. KV cache per toy: {kv} tokens ≈ ⅓ of all the conversations' final histories ({all} tokens): one node's share under affinity ({share} tokens) fits, all of them does not.",
            mean = sh.mean_prompt_tokens(),
            t = settings.prefill_us_per_token,
            m = sh.reply_tokens,
            r = settings.tokens_per_s,
            s = settings.service_s(),
            n = settings.nodes,
            k = settings.max_running,
            cap = settings.capacity_per_s(),
            load = LOAD,
            rate = settings.rate_per_s(),
            kv = settings.kv_cache_tokens,
            all = sh.all_histories_tokens(),
            share = sh.all_histories_tokens() / settings.nodes,
        ),
        "KV hit % = Σ `vllm:prefix_cache_hits_total` ÷ Σ `vllm:prefix_cache_queries_total` over the toy models, deltas over the run (prompt tokens found in the cache). Same node % = turns after the first served by the node (`x-switchyard-node`) that served the conversation's previous turn. One run per policy (no medians).".to_string(),
        verdict(systems),
    ];
    if !skipped.is_empty() {
        notes.push(format!(
            "Not run (no plugin in the plugins folder): {}.",
            skipped.join(", ")
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_seventy_percent_of_the_no_cache_capacity() {
        let s = Settings::new(false);
        // 8 turns: prompts 288..736 tokens, mean 512; 512 × 400 µs + 32 ÷ 200.
        assert_eq!(s.shape.mean_prompt_tokens(), 512.0);
        assert!((s.service_s() - 0.3648).abs() < 1e-9);
        assert!((s.capacity_per_s() - 8.0 / 0.3648).abs() < 1e-9);
        assert!((s.rate_per_s() - 0.7 * 8.0 / 0.3648).abs() < 1e-9);
        // A third of 64 × 736 tokens, whole blocks; a quarter fits in it.
        assert_eq!(s.kv_cache_tokens, 15712);
        assert!(s.shape.all_histories_tokens() / s.nodes < s.kv_cache_tokens);
    }

    fn turn(c: usize, t: usize, ttft_us: Option<u64>, node: &str) -> TurnResult {
        TurnResult {
            conversation: c,
            turn: t,
            ttft_us,
            node: Some(node.into()),
            policy: None,
            error: ttft_us.is_none().then(|| "x".into()),
        }
    }

    #[test]
    fn figures_count_errors_hits_and_turns_on_the_same_node() {
        let turns = [
            turn(0, 0, Some(100_000), "a"),
            turn(0, 1, Some(10_000), "a"),
            turn(0, 2, None, "b"),
            turn(1, 0, Some(100_000), "b"),
            turn(1, 1, Some(10_000), "c"),
        ];
        let f = figures(&turns, 30.0, 120.0, 2.0);
        assert_eq!(f["errors"], 1.0);
        assert_eq!(f["turns_ok"], 4.0);
        assert_eq!(f["kv_hit_pct"], 25.0);
        // Of 3 later turns, one on its previous turn's node.
        assert!((f["sticky_pct"] - 100.0 / 3.0).abs() < 1e-9);
        assert!((f["ttft_mean_ms"] - 55.0).abs() < 0.1);
        assert!((f["ttft_p99_ms"] - 100.0).abs() < 0.1);
        assert_eq!(f["wall_s"], 2.0);
    }

    #[test]
    fn the_verdict_compares_cache_aware_with_round_robin_and_least_request() {
        let sys = |name: &str, mean: f64, p99: f64| SystemResult {
            name: name.into(),
            path: String::new(),
            medians: BTreeMap::from([
                ("ttft_mean_ms".to_string(), mean),
                ("ttft_p99_ms".to_string(), p99),
            ]),
            reps: Vec::new(),
        };
        let v = verdict(&[
            sys("round-robin", 200.0, 600.0),
            sys("least-request", 180.0, 500.0),
            sys("cache-aware", 60.0, 550.0),
        ]);
        assert!(v.contains("— met; cache-aware p99"), "{v}");
        assert!(v.ends_with("— missed."), "{v}");
        assert!(verdict(&[]).starts_with("Target not judged"));
    }
}
