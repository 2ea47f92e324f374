//! Multi-turn chat with KV caches: the `chat` arrival process and a node's
//! `model` (its KV cache, prefill and decode speeds).
//!
//! ```toml
//! [[nodes]]
//! id = "gpu"
//! count = 4
//! workers = 4                     # requests running at once (vLLM's max_num_seqs)
//! max_concurrent = 64             # the core's cap; the rest wait on the node
//! services = ["chat"]
//! model = { kv_cache_tokens = 24576, prefill_us_per_token = 250.0, tokens_per_s = 200.0 }
//!
//! [[arrivals]]
//! service = "chat"
//! process = { kind = "chat", conversations = 64, turns = 8, rate_per_s = 19.4,
//!             system_words = 512, user_words = 64, reply_words = 64 }
//! ```
//!
//! A conversation's turn k sends its whole history as the prompt: the
//! shared words (`shared_words`, the same for every conversation), its own
//! system prompt (`system_words`), turns 0..k (user message and reply each),
//! then turn k's user message. Words are tokens (as the gateway's prefix
//! hashes and the toy model count them); every word of a conversation is
//! its own, so two conversations share only the shared words.
//!
//! Arrivals are Poisson at `rate_per_s` in all; each one is the next turn
//! of a conversation picked at random among those not waiting for a reply
//! (so the think time is about exponential with mean `conversations /
//! rate_per_s`, and turns of one conversation never overlap). When every
//! conversation waits, the arrival goes to the first one answered. After
//! `turns` turns a conversation ends and a new one takes its place; at the
//! start each conversation is at a random turn (its history as if the
//! earlier turns happened), so the mix of history lengths is steady from
//! the start (the caches are cold: use a warm-up).
//!
//! On a node with a `model`, a chat call's service is a prefill of its
//! prompt's uncached tokens (`prefill_us_per_token` each), looked up in the
//! node's KV cache when a worker takes it, and inserted once prefilled (as
//! the toy model does), then a decode of `reply_words` tokens at
//! `tokens_per_s`. Time to first token (TTFT) is arrival to end of prefill,
//! waits included. The node's `speed` and its windows' `factor` scale both.

use serde::Deserialize;

/// The `chat` arrival process (`process = { kind = "chat", ... }`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChatProcess {
    /// Conversations under way at once (at least 1).
    pub conversations: u32,
    /// Turns of a conversation before a new one replaces it (at least 1).
    pub turns: u32,
    /// Arrivals of turns, calls/s in all.
    pub rate_per_s: f64,
    /// Words every conversation's prompt starts with, the same for all
    /// (default 0).
    #[serde(default)]
    pub shared_words: u32,
    /// Words of each conversation's own system prompt.
    pub system_words: u32,
    /// Words of each user message.
    pub user_words: u32,
    /// Words (tokens) of each reply.
    pub reply_words: u32,
}

/// A node's model server (`model = { ... }` in `[[nodes]]`), as the toy
/// model's flags of the same names.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// KV-cache capacity, tokens (whole 16-token blocks; 0: no cache).
    pub kv_cache_tokens: usize,
    /// Prefill time per uncached prompt token, µs.
    pub prefill_us_per_token: f64,
    /// Decode speed of one request, tokens/s.
    pub tokens_per_s: f64,
}

impl ChatProcess {
    /// Whether the numbers are in range.
    pub fn valid(&self) -> bool {
        self.conversations >= 1
            && self.turns >= 1
            && self.rate_per_s.is_finite()
            && self.rate_per_s > 0.0
    }

    /// Prompt length of turn `k` (0-based), tokens.
    pub fn prompt_tokens(&self, k: u32) -> u64 {
        u64::from(self.shared_words)
            + u64::from(self.system_words)
            + u64::from(k) * (u64::from(self.user_words) + u64::from(self.reply_words))
            + u64::from(self.user_words)
    }

    /// Mean prompt length over the turns (each turn as frequent), tokens.
    pub fn mean_prompt_tokens(&self) -> f64 {
        let sum: u64 = (0..self.turns).map(|k| self.prompt_tokens(k)).sum();
        sum as f64 / f64::from(self.turns.max(1))
    }

    /// Mean service time of a turn with no cache hit on a node of `model`
    /// (speed 1), ms: the whole prompt's prefill plus the reply's decode.
    pub fn mean_uncached_service_ms(&self, model: &ModelSettings) -> f64 {
        self.mean_prompt_tokens() * model.prefill_us_per_token / 1000.0
            + f64::from(self.reply_words) / model.tokens_per_s * 1000.0
    }

    /// The offered load on `servers` workers of `model` with no cache hit:
    /// rate × mean uncached service time / servers (0.7 is 70 %).
    pub fn uncached_load(&self, model: &ModelSettings, servers: u32) -> f64 {
        self.rate_per_s * self.mean_uncached_service_ms(model) / 1000.0 / f64::from(servers.max(1))
    }
}

impl ModelSettings {
    /// Whether the numbers are in range.
    pub fn valid(&self) -> bool {
        self.prefill_us_per_token.is_finite()
            && self.prefill_us_per_token >= 0.0
            && self.tokens_per_s.is_finite()
            && self.tokens_per_s > 0.0
    }
}
