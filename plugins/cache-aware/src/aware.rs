//! The cache-aware algorithm, independent of WebAssembly.

use std::cmp::Reverse;

use policy_sdk::{
    Candidate, Context, NodeFacts, NodeKey, Policy, PrefixTable, Request, Scored, fmt_num,
    index_u32,
};

use crate::{Loads, Settings};

/// SGLang's cache-aware routing over prefix block hashes (see the crate
/// docs). Keeps a [`PrefixTable`] of what each node was sent.
#[derive(Debug, Clone, Default)]
pub struct CacheAware {
    table: PrefixTable,
}

/// Why the call goes where it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// The best match is above the threshold: longest match.
    Cache { best: usize },
    /// Loads too far apart: least loaded.
    Imbalanced { max: u64, min: u64 },
    /// The call has no prefix hashes: least loaded.
    NoPrefix,
    /// The best match is not above the threshold: least loaded.
    LowMatch { best: usize },
}

impl CacheAware {
    /// A policy with an empty record of [`policy_sdk::DEFAULT_MAX_ENTRIES`]
    /// hashes at most.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A policy whose record holds `table` (its cap and forgetting time).
    #[must_use]
    pub fn with_table(table: PrefixTable) -> Self {
        Self { table }
    }

    /// The record of what each node was sent.
    #[must_use]
    pub fn table(&self) -> &PrefixTable {
        &self.table
    }
}

fn reason(mode: Mode, blocks: usize, loads: &Loads, settings: Settings) -> String {
    match mode {
        Mode::Cache { best } => format!("prefix match {best}/{blocks} blocks"),
        Mode::Imbalanced { max, min } => {
            format!("imbalanced ({max} vs {min} {}): least loaded", loads.unit())
        }
        Mode::NoPrefix => "no prefix: least loaded".to_owned(),
        Mode::LowMatch { best } => format!(
            "prefix match {best}/{blocks} blocks, not above {}%: least loaded",
            fmt_num(settings.cache_threshold * 100.0)
        ),
    }
}

impl Policy for CacheAware {
    const NAME: &'static str = crate::NAME;

    /// Scores and ranks the candidates, then records the call's prefix for
    /// the first of the ranking. Loads are the candidates' model-server
    /// `waiting + running` when every one reports its `model_load`, else
    /// their calls in flight.
    ///
    /// # Errors
    /// `no candidates` for an empty list (the gateway never sends one); a
    /// malformed threshold hint (`bad hint ...`).
    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        ctx: &Context,
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        if candidates.is_empty() {
            return Err("no candidates".to_owned());
        }
        let settings = Settings::from_hints(&req.hints())?;
        let service = req.service.as_str();
        let now = req.now_ms;
        self.table
            .seen(service, candidates.iter().map(|c| c.node), now);
        let hashes = ctx.prefix_hashes.as_slice();
        let loads = Loads::new(candidates);
        // A node's match: the longer of what this policy sent it and what
        // the node reports holding (calls other gateways sent count too).
        let matched: Vec<usize> = candidates
            .iter()
            .map(|c| {
                let reported = usize::try_from(c.prefix_matched).unwrap_or(usize::MAX);
                self.table
                    .matched(service, c.node, hashes, now)
                    .max(reported.min(hashes.len()))
            })
            .collect();
        let records: Vec<usize> = candidates
            .iter()
            .map(|c| self.table.node_entries(service, c.node))
            .collect();
        let (max, min) = loads.max_min();
        let best = matched.iter().copied().max().unwrap_or(0);
        let mode = if settings.imbalanced(max, min) {
            Mode::Imbalanced { max, min }
        } else if hashes.is_empty() {
            Mode::NoPrefix
        } else if best as f64 / hashes.len() as f64 > settings.cache_threshold {
            Mode::Cache { best }
        } else {
            Mode::LowMatch { best }
        };

        let n = candidates.len();
        let shift = (req.random % n as u64) as usize;
        let rotated = |i: usize| (i + n - shift) % n;
        let mut order: Vec<usize> = (0..n).collect();
        let scores: Vec<f32>;
        if let Mode::Cache { .. } = mode {
            order.sort_by_key(|&i| (Reverse(matched[i]), loads.values[i], records[i], rotated(i)));
            scores = matched.iter().map(|&m| m as f32).collect();
        } else {
            order.sort_by_key(|&i| (loads.values[i], records[i], Reverse(matched[i]), rotated(i)));
            scores = loads.values.iter().map(|&l| -(l as f32)).collect();
        }
        let order = order
            .into_iter()
            .map(index_u32)
            .collect::<Result<Vec<u32>, String>>()?;
        if !hashes.is_empty()
            && let Some(&first) = order.first()
        {
            self.table
                .record(service, candidates[first as usize].node, hashes, now);
        }
        Ok(Scored {
            order,
            scores,
            reason: reason(mode, hashes.len(), &loads, settings),
        })
    }
}
