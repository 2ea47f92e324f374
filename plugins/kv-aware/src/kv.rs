//! The kv-aware algorithm, independent of WebAssembly.

use std::cmp::Ordering;

use policy_sdk::{
    Candidate, Context, NodeFacts, NodeKey, Policy, PrefixTable, Request, Scored, fmt_num,
    index_u32,
};

use crate::terms::{Terms, Weights, all_known, terms};

/// llm-d-style weighted scoring of queue depth, KV-cache use and prefix
/// match (see the crate docs). Keeps a [`PrefixTable`] of what each node
/// was sent.
#[derive(Debug, Clone, Default)]
pub struct KvAware {
    table: PrefixTable,
}

impl KvAware {
    /// A policy with an empty prefix record of
    /// [`policy_sdk::DEFAULT_MAX_ENTRIES`] hashes at most.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A policy whose prefix record is `table`.
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

/// `x` to 2 decimals, trailing zeros trimmed.
fn num(x: f64) -> String {
    fmt_num((x * 100.0).round() / 100.0)
}

fn reason(t: &Terms, total: f64, w: Weights, blocks: usize, known: bool) -> String {
    let unit = if known { "waiting" } else { "in flight" };
    let prefix = if blocks == 0 {
        "no prefix".to_owned()
    } else {
        format!(
            "prefix {}/{blocks} ({}×{})",
            t.matched,
            num(t.prefix),
            num(w.prefix)
        )
    };
    format!(
        "{prefix} + queue {} {unit} ({}×{}) + kv free {}×{} = {}",
        t.depth,
        num(t.queue),
        num(w.queue),
        num(t.kv),
        num(w.kv),
        num(total),
    )
}

impl Policy for KvAware {
    const NAME: &'static str = crate::NAME;

    /// Scores and ranks the candidates, then records the call's prefix for
    /// the winner. Queue depths and KV-cache use come from the candidates'
    /// `model_load` where they report one (see the crate docs).
    ///
    /// # Errors
    /// `no candidates` for an empty list (the gateway never sends one); a
    /// malformed weight hint (`bad hint ...`).
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
        let weights = Weights::from_hints(&req.hints())?;
        let service = req.service.as_str();
        let now = req.now_ms;
        self.table
            .seen(service, candidates.iter().map(|c| c.node), now);
        let hashes = ctx.prefix_hashes.as_slice();
        let matched: Vec<usize> = candidates
            .iter()
            .map(|c| self.table.matched(service, c.node, hashes, now))
            .collect();
        let terms = terms(candidates, &matched, hashes.len());
        let totals: Vec<f64> = terms.iter().map(|t| t.total(weights)).collect();

        let n = candidates.len();
        let shift = (req.random % n as u64) as usize;
        let rotated = |i: usize| (i + n - shift) % n;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            totals[b]
                .partial_cmp(&totals[a])
                .unwrap_or(Ordering::Equal)
                .then(rotated(a).cmp(&rotated(b)))
        });
        let winner = order[0];
        if !hashes.is_empty() {
            self.table
                .record(service, candidates[winner].node, hashes, now);
        }
        let reason = reason(
            &terms[winner],
            totals[winner],
            weights,
            hashes.len(),
            all_known(candidates),
        );
        Ok(Scored {
            order: order
                .into_iter()
                .map(index_u32)
                .collect::<Result<Vec<u32>, String>>()?,
            scores: totals.iter().map(|&t| t as f32).collect(),
            reason,
        })
    }
}
