//! `[prefix]` and `[decisions]` of `gateway.toml`: what policies learn of a
//! call's prompt, and how many of their decisions the gateway keeps.

use serde::Deserialize;

/// `[prefix]`: the chained block hashes of a call's prompt that scoring
/// policies (`cache-aware`, `kv-aware`) match against what each node was
/// sent (see `switchyard_core::prefix`). The gateway hashes the prompt of
/// calls on the OpenAI routes (chat messages in order, or the completion
/// prompt), and the hint `affinity=KEY` of any call as one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixConfig {
    /// Whether prompts are hashed at all (default true).
    pub enabled: bool,
    /// Tokens (whitespace-separated words) per block (default 16, as vLLM's
    /// block size; 1..=4096).
    pub block_tokens: usize,
    /// The most blocks hashed per call (default 256; 1..=4096): longer
    /// prompts match on their first `block_tokens × max_blocks` tokens.
    pub max_blocks: usize,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            block_tokens: switchyard_core::prefix::DEFAULT_BLOCK_TOKENS,
            max_blocks: switchyard_core::prefix::DEFAULT_MAX_BLOCKS,
        }
    }
}

impl PrefixConfig {
    /// The first broken rule, if any.
    pub(super) fn check(&self) -> Result<(), String> {
        if !(1..=4096).contains(&self.block_tokens) {
            return Err("prefix.block_tokens must be in 1..=4096".into());
        }
        if !(1..=4096).contains(&self.max_blocks) {
            return Err("prefix.max_blocks must be in 1..=4096".into());
        }
        Ok(())
    }
}

/// `[decisions]`: the policies' recent decisions the gateway keeps in
/// memory per service, for `GET /api/decisions` and the dashboard's "why
/// this node".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionsConfig {
    /// Decisions kept per service, newest first (default 64; 0 keeps none,
    /// at most 10 000).
    pub keep: usize,
    /// Candidates kept per decision, best scored first (default 8, 1..=64).
    pub top: usize,
}

impl Default for DecisionsConfig {
    fn default() -> Self {
        Self { keep: 64, top: 8 }
    }
}

impl DecisionsConfig {
    /// The first broken rule, if any.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.keep > 10_000 {
            return Err("decisions.keep must be at most 10000".into());
        }
        if !(1..=64).contains(&self.top) {
            return Err("decisions.top must be in 1..=64".into());
        }
        Ok(())
    }
}
