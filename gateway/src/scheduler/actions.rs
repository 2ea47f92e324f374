//! Carrying out the core's actions: run a pick's policy (no lock held),
//! hand a waiting call its slot or its refusal, tell it its position, send
//! swap requests on agents' control streams, and record what happened in
//! the metrics.

use std::sync::Arc;
use std::time::Duration;

use protocol::{Message, SwapReport};
use switchyard_core::{Action, CallEnd, CallId, Event, NodeKey, RetryRefusal, Via};

use super::{Grant, Scheduler, SlotGuard, WaitState};
use crate::telemetry::labels;

impl Scheduler {
    pub(super) fn execute(self: &Arc<Self>, action: Action) -> Option<Event> {
        match action {
            Action::Pick(request) => {
                // The policy runs here, with no lock held.
                let (ranking, picked) = self.policies.pick(&request);
                if let Some(w) = self.waiting().get_mut(&request.call) {
                    w.picked = Some(picked);
                }
                return Some(Event::Picked {
                    call: request.call,
                    ranking,
                });
            }
            Action::Dispatch {
                call,
                node,
                via,
                waited,
            } => self.dispatch(call, node, via, waited),
            Action::Position { call, position } => {
                if let Some(w) = self.waiting().get(&call) {
                    w.state.send_replace(WaitState::Queued(position));
                }
            }
            Action::Reserved { call, notice } => {
                if let Some(w) = self.waiting().get(&call) {
                    w.state.send_replace(WaitState::Reserved(notice));
                }
            }
            Action::Reject { call, error } => {
                if let Some(w) = self.waiting().remove(&call) {
                    let _ = w.grant.send(Err(error));
                }
            }
            Action::Swap {
                node,
                request,
                from,
            } => {
                let link = self.registry.by_key(node);
                let sent = link
                    .as_ref()
                    .is_some_and(|n| n.control.try_send(Message::Swap(request.clone())).is_ok());
                let id = link.map_or_else(|| node.to_string(), |n| n.spec.id.clone());
                if !sent {
                    tracing::warn!(node = %id, slot = %request.slot, "swap request not sent: control stream full or closed");
                    return Some(Event::SwapReported {
                        node,
                        report: SwapReport {
                            swap_id: request.swap_id,
                            slot: request.slot,
                            loaded: from,
                            error: Some("the swap request could not be sent".into()),
                            duration_ms: 0,
                        },
                    });
                }
                metrics::counter!("swaps_started_total", "node" => id, "to" => request.service)
                    .increment(1);
            }
            Action::SwapEnded {
                node,
                slot: _,
                from,
                to,
                outcome,
                duration_ms,
            } => {
                let id = self
                    .registry
                    .by_key(node)
                    .map_or_else(|| node.to_string(), |n| n.spec.id.clone());
                metrics::counter!(
                    "swaps_total",
                    "node" => id.clone(),
                    "from" => from.unwrap_or_else(|| "none".into()),
                    "to" => to.clone(),
                    "outcome" => outcome,
                )
                .increment(1);
                if outcome == "ok" || outcome == "failed" {
                    metrics::histogram!("swap_duration_seconds", "node" => id, "service" => to)
                        .record(f64::from(duration_ms) / 1000.0);
                }
            }
            Action::Ejected {
                node,
                service,
                why,
                failures,
                ejection,
                count,
            } => {
                let id = self
                    .registry
                    .by_key(node)
                    .map_or_else(|| node.to_string(), |n| n.spec.id.clone());
                tracing::warn!(node = %id, %service, why = why.as_str(), failures, ejection_s = ejection.as_secs(), count, "node ejected from the service");
                metrics::counter!("outlier_ejections_total", "node" => id, "service" => service)
                    .increment(1);
            }
            Action::QueueLength {
                service,
                tenant,
                length,
            } => record_queue_length(&service, &tenant, length),
            Action::RetryAfter {
                call,
                attempt,
                backoff,
            } => {
                if let Some(w) = self.waiting().get_mut(&call) {
                    metrics::counter!("retries_total", "service" => labels::service(&w.service))
                        .increment(1);
                    w.retry = Some(Ok((attempt, backoff)));
                }
            }
            Action::RetryRefused { call, why } => {
                if let Some(w) = self.waiting().get_mut(&call) {
                    if why != RetryRefusal::Attempts {
                        metrics::counter!(
                            "retries_refused_total",
                            "service" => labels::service(&w.service),
                            "why" => why.as_str(),
                        )
                        .increment(1);
                    }
                    w.retry = Some(Err(why));
                }
            }
            Action::BreakerTripped { service, breaker } => {
                tracing::debug!(%service, breaker = breaker.as_str(), "circuit breaker open");
                metrics::counter!(
                    "circuit_breaker_trips_total",
                    "service" => service,
                    "breaker" => breaker.as_str(),
                )
                .increment(1);
            }
        }
        None
    }

    /// Hands call `call` its slot on `node`. A call that left meanwhile
    /// drops the grant, which frees the slot.
    fn dispatch(self: &Arc<Self>, call: CallId, node: NodeKey, via: Via, waited: Option<Duration>) {
        let gone = || Event::CallFinished {
            call,
            node_ms: 0.0,
            end: CallEnd::Abandoned,
        };
        let Some(w) = self.waiting().remove(&call) else {
            // Gone before its grant: free the slot at once.
            self.handle(gone());
            return;
        };
        let Some(link) = self.registry.by_key(node) else {
            // The core still has the node but its link is gone: the
            // connection closed and its NodeDown is on its way (a slot it
            // freed meanwhile, a lease of it ending, made it look free).
            // Nothing reached the node: the call waits again and the core
            // offers it to another node, or queues it, never this one again.
            self.waiting().insert(call, w);
            self.handle(Event::DispatchFailed { call });
            return;
        };
        if let Some(waited) = waited {
            metrics::histogram!(
                "queue_wait_seconds",
                "service" => labels::service(&w.service),
                "tenant" => labels::tenant(&w.tenant),
            )
            .record(waited.as_secs_f64());
        }
        let picked = match via {
            Via::Pick => w.picked.unwrap_or_else(|| self.policies.builtin_pick()),
            Via::Fallback => self.policies.fallback_pick(&w.service),
            Via::Swap => self.policies.swap_pick(&w.service),
            Via::HandUp => self.policies.hand_up_pick(),
        };
        let guard = SlotGuard {
            _hold: self.scale.hold(&w.service, waited),
            scheduler: self.clone(),
            node: link,
            call,
            service: w.service,
            ended: false,
        };
        // A call task that is gone drops this grant: the guard frees the slot.
        let _ = w.grant.send(Ok(Grant { guard, picked }));
    }
}

/// Sets `queue_length{service,tenant}`: calls of `tenant` waiting for
/// `service` (the core tells each change, and 0 once when the last left).
pub(crate) fn record_queue_length(service: &str, tenant: &str, length: usize) {
    metrics::gauge!(
        "queue_length",
        "service" => labels::service(service),
        "tenant" => labels::tenant(tenant),
    )
    .set(length as f64);
}
