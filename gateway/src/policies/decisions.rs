//! "Why this node": the policies' recent decisions, per service.
//!
//! Every pick yields an [`Explanation`] (the policy's scores and reason, or
//! the fallback's); when the call is dispatched the gateway records it as a
//! [`Decision`] naming the node the call went to. The last
//! `[decisions] keep` of each service are kept in memory, newest first, for
//! `GET /api/decisions?service=`, the dashboard, and the compact form a
//! call gets when it asks (hint `explain=1`, header `x-switchyard-explain`,
//! `switchyard call -v`).
//!
//! As asked in gateway-api-inference-extension #2985 and llm-d-router
//! #2004: which node, which policy, the top candidates with their scores,
//! and the policy's reason.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::DecisionsConfig;
use crate::fleet::Registry;

/// What a pick said about its choice, kept with the call until dispatch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Explanation {
    /// The policy that ranked (or the fallback's name).
    pub policy: String,
    /// The policy's reason; empty when it gave none (a plugin compiled
    /// against contract 1.0.0, which has no `scorer`).
    pub reason: String,
    /// The best candidates, best first: node key, the policy's score (none
    /// when it gave no scores) and the node's in-flight count of the
    /// service at the pick.
    pub top: Vec<Ranked>,
    /// How many candidates were offered.
    pub offered: usize,
    /// How many prefix blocks the call had (`[prefix]`).
    pub prefix_blocks: usize,
}

/// One candidate of an [`Explanation`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// The node's key.
    pub node: u32,
    /// The policy's score for it, higher is better.
    pub score: Option<f32>,
    /// Calls of the service in flight there at the pick.
    pub in_flight: u32,
    /// Its `max_concurrent` for the service.
    pub max_concurrent: u32,
}

/// A decision as kept and served (JSON in `GET /api/decisions`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Decision {
    /// When the call was dispatched, ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// The call's id (as in the gateway's logs).
    pub call_id: u64,
    /// The call's request id (`x-request-id`, as in the gateway's and the
    /// agent's logs); `null` when the call had none.
    pub request_id: Option<String>,
    /// The service called.
    pub service: String,
    /// The policy that decided.
    pub policy: String,
    /// The node the call went to.
    pub node: String,
    /// The policy's reason (empty: it gave none).
    pub reason: String,
    /// Candidates offered.
    pub offered: usize,
    /// Prefix blocks of the call.
    pub prefix_blocks: usize,
    /// The best candidates, best first.
    pub top: Vec<Candidate>,
}

/// One candidate of a [`Decision`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Candidate {
    /// The node id (`#KEY` for a node that has left since).
    pub node: String,
    /// The policy's score, higher is better; none when it gave none.
    pub score: Option<f32>,
    /// Calls of the service in flight there at the pick.
    pub in_flight: u32,
    /// The node's `max_concurrent` for the service.
    pub max_concurrent: u32,
}

impl Decision {
    /// The one-line form a call gets when it asks: `POLICY -> NODE: REASON
    /// | a 0.91, b 0.40 (of N)`, e.g. `cache-aware -> gpu-2: prefix match
    /// 12/14 blocks | gpu-2 12, gpu-1 0 (of 4)`.
    pub(crate) fn compact(&self) -> String {
        let mut line = format!("{} -> {}", self.policy, self.node);
        if !self.reason.is_empty() {
            let _ = write!(line, ": {}", self.reason);
        }
        let scored: Vec<String> = self
            .top
            .iter()
            .take(4)
            .filter_map(|c| c.score.map(|s| format!("{} {}", c.node, short(s))))
            .collect();
        if !scored.is_empty() {
            let _ = write!(line, " | {}", scored.join(", "));
        }
        let _ = write!(line, " (of {})", self.offered);
        truncate(&mut line, protocol::limits::MAX_EXPLAIN_LEN);
        line
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// A score: whole numbers as they are, others with 3 decimals.
fn short(score: f32) -> String {
    if score == score.trunc() && score.abs() < 1e6 {
        format!("{score:.0}")
    } else {
        format!("{score:.3}")
    }
}

/// The kept decisions of every service.
pub(crate) struct Decisions {
    config: DecisionsConfig,
    by_service: Mutex<HashMap<String, VecDeque<Decision>>>,
}

impl Decisions {
    /// An empty store keeping what `config` says.
    pub(crate) fn new(config: DecisionsConfig) -> Self {
        Self {
            config,
            by_service: Mutex::new(HashMap::new()),
        }
    }

    /// Turns `explanation` into the decision of call `call_id` (request id
    /// `request_id`) of `service`, dispatched to `node` now; keeps it
    /// (unless `keep` is 0) and returns it. Node keys are named by
    /// `registry`.
    pub(crate) fn record(
        &self,
        registry: &Registry,
        (call_id, request_id): (u64, Option<&str>),
        service: &str,
        node: &str,
        explanation: &Explanation,
    ) -> Decision {
        let name = |key: u32| {
            registry
                .by_key(key)
                .map_or_else(|| format!("#{key}"), |n| n.spec.id.clone())
        };
        let decision = Decision {
            at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            call_id,
            request_id: request_id.map(str::to_string),
            service: service.to_string(),
            policy: explanation.policy.clone(),
            node: node.to_string(),
            reason: explanation.reason.clone(),
            offered: explanation.offered,
            prefix_blocks: explanation.prefix_blocks,
            top: explanation
                .top
                .iter()
                .take(self.config.top)
                .map(|r| Candidate {
                    node: name(r.node),
                    score: r.score,
                    in_flight: r.in_flight,
                    max_concurrent: r.max_concurrent,
                })
                .collect(),
        };
        self.keep(decision.clone());
        decision
    }

    fn keep(&self, decision: Decision) {
        if self.config.keep == 0 {
            return;
        }
        let Ok(mut by_service) = self.by_service.lock() else {
            return;
        };
        let kept = by_service.entry(decision.service.clone()).or_default();
        if kept.len() >= self.config.keep {
            kept.pop_back();
        }
        kept.push_front(decision);
    }

    /// The kept decisions of `service`, newest first, at most `limit`.
    pub(crate) fn recent(&self, service: &str, limit: usize) -> Vec<Decision> {
        self.by_service.lock().map_or_else(
            |_| Vec::new(),
            |by_service| {
                by_service
                    .get(service)
                    .map(|kept| kept.iter().take(limit).cloned().collect())
                    .unwrap_or_default()
            },
        )
    }

    /// The services with kept decisions, sorted.
    pub(crate) fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_service
            .lock()
            .map(|by_service| by_service.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explanation(reason: &str, scores: &[(u32, Option<f32>)]) -> Explanation {
        Explanation {
            policy: "least-request".into(),
            reason: reason.into(),
            top: scores
                .iter()
                .map(|&(node, score)| Ranked {
                    node,
                    score,
                    in_flight: 1,
                    max_concurrent: 4,
                })
                .collect(),
            offered: 3,
            prefix_blocks: 0,
        }
    }

    fn registry() -> Registry {
        Registry::new(std::sync::Arc::new(std::sync::Mutex::new(
            switchyard_core::Core::new(switchyard_core::CoreConfig::default()),
        )))
    }

    #[test]
    fn keeps_the_newest_per_service_up_to_keep() {
        let decisions = Decisions::new(DecisionsConfig { keep: 2, top: 8 });
        let registry = registry();
        for call in 1..=3 {
            decisions.record(
                &registry,
                (call, Some("req-1")),
                "svc",
                "a",
                &explanation("r", &[]),
            );
        }
        decisions.record(&registry, (9, None), "other", "b", &explanation("r", &[]));
        let kept: Vec<u64> = decisions
            .recent("svc", 10)
            .iter()
            .map(|d| d.call_id)
            .collect();
        assert_eq!(kept, vec![3, 2]);
        assert_eq!(
            decisions.recent("svc", 1)[0].request_id.as_deref(),
            Some("req-1")
        );
        assert_eq!(decisions.recent("other", 1)[0].request_id, None);
        assert_eq!(decisions.recent("svc", 1).len(), 1);
        assert!(decisions.recent("nope", 10).is_empty());
        assert_eq!(decisions.services(), vec!["other", "svc"]);
        let none = Decisions::new(DecisionsConfig { keep: 0, top: 8 });
        let decision = none.record(&registry, (1, None), "svc", "a", &explanation("r", &[]));
        assert_eq!(
            decision.call_id, 1,
            "still returned for the call that asked"
        );
        assert!(none.recent("svc", 10).is_empty());
    }

    #[test]
    fn compact_names_policy_node_reason_and_scores() {
        let registry = registry();
        let decisions = Decisions::new(DecisionsConfig { keep: 4, top: 2 });
        let d = decisions.record(
            &registry,
            (1, None),
            "svc",
            "gpu-2",
            &explanation(
                "least loaded: 1/4 in flight",
                &[(7, Some(0.75)), (8, Some(0.5)), (9, Some(0.0))],
            ),
        );
        assert_eq!(d.top.len(), 2, "top is capped");
        assert_eq!(
            d.top[0].node, "#7",
            "a key with no node is named by its number"
        );
        assert_eq!(
            d.compact(),
            "least-request -> gpu-2: least loaded: 1/4 in flight | #7 0.750, #8 0.500 (of 3)"
        );
        let plain = decisions.record(
            &registry,
            (2, None),
            "svc",
            "a",
            &explanation("", &[(7, None)]),
        );
        assert_eq!(plain.compact(), "least-request -> a (of 3)");
    }
}
