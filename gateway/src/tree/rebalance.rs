//! Rebalancing at a parent gateway: every `[rebalance] period_ms`, per
//! service, each child gateway's queue (its latest load report's, aged by
//! the time since) and every node's free capacity go to
//! [`switchyard_tree::rebalance::plan`]; each move asks the child whose
//! calls have waited past the threshold to hand that many up (`HandUp` on
//! its control stream). The child sends its oldest waiting calls, none of
//! which has started, up as dispatches; this gateway runs them anywhere
//! but on that child, where the sibling has the free capacity: nothing
//! runs twice. Each move is logged and counted
//! (`tree_rebalance_moves_total`, `tree_rebalance_calls_total`).

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use protocol::{HandUp, Message};
use switchyard_tree::rebalance::{Queue, Rules, plan};

use crate::Shared;
use crate::config::RebalanceConfig;
use crate::fleet::Node;
use crate::telemetry::labels;

/// Starts the rebalancing loop when `[rebalance] enabled`.
pub(crate) fn start(shared: &Arc<Shared>) {
    let config = shared.config.rebalance;
    if config.enabled {
        tokio::spawn(run(Arc::downgrade(shared), config));
    }
}

/// One round every period until the gateway is gone.
async fn run(shared: std::sync::Weak<Shared>, config: RebalanceConfig) {
    let mut every = tokio::time::interval(Duration::from_millis(u64::from(config.period_ms)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rules = Rules {
        threshold: Duration::from_millis(u64::from(config.threshold_ms)),
        max_moves: config.max_moves,
    };
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        round(&shared, rules, Instant::now());
    }
}

/// One round: plans the moves and asks the children for their calls.
fn round(shared: &Shared, rules: Rules, now: Instant) {
    let nodes = shared.registry.all();
    if !nodes.iter().any(|n| n.spec.gateway) {
        return;
    }
    let queues = queues(shared, &nodes, now);
    for m in plan(&queues, rules) {
        let Some(from) = nodes.iter().find(|n| n.spec.id == m.from) else {
            continue;
        };
        let ask = Message::HandUp(HandUp {
            service: m.service.clone(),
            calls: m.calls,
        });
        // The child may hand up this many more calls; more are refused.
        from.hand_up_credit
            .fetch_add(m.calls, std::sync::atomic::Ordering::AcqRel);
        if from.control.try_send(ask).is_err() {
            from.hand_up_credit
                .fetch_sub(m.calls, std::sync::atomic::Ordering::AcqRel);
            tracing::debug!(child = %m.from, "rebalancing: the child's control stream is full or gone");
            continue;
        }
        tracing::info!(
            service = %m.service,
            from = %m.from,
            to = %m.to,
            calls = m.calls,
            "rebalancing: moving waiting calls to a sibling with free capacity"
        );
        let service = labels::service(&m.service);
        metrics::counter!("tree_rebalance_moves_total", "service" => service.clone()).increment(1);
        metrics::counter!("tree_rebalance_calls_total", "service" => service)
            .increment(u64::from(m.calls));
    }
}

/// Per node and service: the child gateway's waiting calls (none for a
/// plain node) and the free capacity as the core counts it.
fn queues(shared: &Shared, nodes: &[Arc<Node>], now: Instant) -> Vec<Queue> {
    let mut out = Vec::new();
    shared.scheduler.read(|core| {
        for node in nodes {
            let Some(n) = core.fleet().get(node.key) else {
                continue;
            };
            let reported = node
                .queued
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for (service, s) in &n.services {
                let usable = !n.draining && s.loaded && s.healthy && s.ejected_until.is_none();
                let (waiting, oldest_wait) = reported
                    .as_ref()
                    .and_then(|(at, queued)| {
                        let q = queued.iter().find(|q| &q.service == service)?;
                        let aged = Duration::from_millis(u64::from(q.oldest_wait_ms))
                            + now.saturating_duration_since(*at);
                        Some((q.calls, aged))
                    })
                    .unwrap_or((0, Duration::ZERO));
                out.push(Queue {
                    child: node.spec.id.clone(),
                    service: service.clone(),
                    waiting,
                    oldest_wait,
                    capacity: s.max_concurrent,
                    free: if usable {
                        s.max_concurrent.saturating_sub(s.load())
                    } else {
                        0
                    },
                });
            }
        }
    });
    out
}

/// Help texts of the rebalancing series.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        "tree_rebalance_moves_total",
        "Moves a parent gateway asked of its child gateways (waiting calls handed up to run on a sibling with free capacity), by service."
    );
    metrics::describe_counter!(
        "tree_rebalance_calls_total",
        "Waiting calls a parent gateway asked its child gateways to hand up, by service."
    );
    metrics::describe_counter!(
        "tree_handed_up_calls_total",
        "Waiting calls this gateway handed up to its parent when asked (rebalancing), by service."
    );
}
