//! The weights and the three normalised terms of each candidate.

use policy_sdk::{Candidate, Hints};

/// The weights of the three terms (llm-d's default profile: 2, 2, 3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Weight of the queue term (hint `w_queue`; default 2).
    pub queue: f64,
    /// Weight of the KV-cache term (hint `w_kv`; default 2).
    pub kv: f64,
    /// Weight of the prefix term (hint `w_prefix`; default 3).
    pub prefix: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            queue: 2.0,
            kv: 2.0,
            prefix: 3.0,
        }
    }
}

impl Weights {
    /// The defaults, overridden by the call's hints.
    ///
    /// # Errors
    /// `bad hint KEY="VALUE": expected a number >= 0` for a weight hint that
    /// is not a finite number `>= 0`.
    pub fn from_hints(hints: &Hints<'_>) -> Result<Self, String> {
        let d = Self::default();
        Ok(Self {
            queue: hints.get_non_negative("w_queue")?.unwrap_or(d.queue),
            kv: hints.get_non_negative("w_kv")?.unwrap_or(d.kv),
            prefix: hints.get_non_negative("w_prefix")?.unwrap_or(d.prefix),
        })
    }
}

/// One candidate's terms, each in 0..=1, and what they came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Terms {
    /// Queue term: 1 for the shortest queue, 0 for the longest.
    pub queue: f64,
    /// KV-cache term: the free share of the KV cache (or of the slots).
    pub kv: f64,
    /// Prefix term: matched blocks over the call's blocks.
    pub prefix: f64,
    /// The queue depth the term came from, requests.
    pub depth: u64,
    /// Leading blocks of the call recorded for the node.
    pub matched: usize,
}

impl Terms {
    /// The weighted sum.
    #[must_use]
    pub fn total(&self, w: Weights) -> f64 {
        w.queue * self.queue + w.kv * self.kv + w.prefix * self.prefix
    }
}

/// Whether every candidate's node reports its model server's load (then
/// queue depths are its waiting requests); false with no candidate.
#[must_use]
pub fn all_known(candidates: &[Candidate]) -> bool {
    !candidates.is_empty() && candidates.iter().all(|c| c.model_load.is_some())
}

/// The terms of every candidate, given the matched blocks of each and the
/// call's number of blocks.
#[must_use]
pub fn terms(candidates: &[Candidate], matched: &[usize], blocks: usize) -> Vec<Terms> {
    let known = all_known(candidates);
    let depth = |c: &Candidate| match c.model_load {
        Some(l) if known => u64::from(l.waiting),
        _ => u64::from(c.in_flight),
    };
    let depths: Vec<u64> = candidates.iter().map(depth).collect();
    let max = depths.iter().copied().max().unwrap_or(0);
    let min = depths.iter().copied().min().unwrap_or(0);
    candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let queue = if max == min {
                1.0
            } else {
                (max - depths[i]) as f64 / (max - min) as f64
            };
            let used = match c.model_load {
                Some(l) => f64::from(l.kv_cache_pct) / 100.0,
                None if c.max_concurrent == 0 => 1.0,
                None => f64::from(c.in_flight) / f64::from(c.max_concurrent),
            };
            let kv = if used.is_finite() {
                (1.0 - used).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let m = matched.get(i).copied().unwrap_or(0);
            let prefix = if blocks == 0 {
                0.0
            } else {
                (m as f64 / blocks as f64).min(1.0)
            };
            Terms {
                queue,
                kv,
                prefix,
                depth: depths[i],
                matched: m,
            }
        })
        .collect()
}
