//! A lease's hold on its node, on the agent's control stream: the slot
//! asked for ([`hold_slot`]: `Hold`, answered `Held`), and the task that
//! keeps the lease's slot until the node says the lease ended
//! (`LeaseEnded` with its id: used, expired, idle, released, draining),
//! the node's session ends (node lost), or a safety timer runs out
//! ([`SAFETY_MARGIN`] past its expiry). A release sends `DropLease` (the
//! node ends the lease and answers `LeaseEnded`). Then the slot is freed
//! as a call's would be: the node's time per call feeds its latency EWMA
//! and the policy's observe. The agent's answers reach the lease through
//! its node's [`crate::fleet::Holds`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{CallError, CallHead, ErrorKind, LeaseDrop, LeaseEnd, LeaseHold, Message};
use switchyard_core::CallEnd;
use tokio::sync::{mpsc, watch};

use super::table::Entry;
use super::{MAX_HOLD_ATTEMPTS, error};
use crate::Shared;
use crate::calls::{Admitted, Caller, Failure};
use crate::fleet::{HoldWord, Node};
use crate::policies::Picked;
use crate::scheduler::{Again, Grant, Retry, SlotGuard, Ticket};

/// How long past its expiry a lease's slot is kept when its node says
/// nothing (clocks and the node's own timer differ a little).
pub(super) const SAFETY_MARGIN: Duration = Duration::from_secs(5);

/// How long a release waits for the node's `LeaseEnded` before freeing the
/// slot anyway.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// A granted lease's slot and the node's words on it, for [`keep`].
pub(super) struct Holding {
    pub(super) shared: Arc<Shared>,
    pub(super) guard: SlotGuard,
    pub(super) picked: Picked,
    pub(super) words: mpsc::Receiver<HoldWord>,
    pub(super) entry: Arc<Entry>,
    pub(super) ended: watch::Sender<bool>,
    /// The tenant's in-flight place, held until the lease ends.
    pub(super) admitted: Admitted,
    /// The `service` label its series were counted under at the grant
    /// (the same one when it ends, even if the service is unknown by then).
    pub(super) service_label: String,
    /// When the lease expires (this gateway's clock).
    pub(super) expires: Instant,
}

/// How a lease's hold ended on this side.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// The node ended it and said how.
    Ended(LeaseEnd),
    /// The node's session ended (the node is gone, or broke the
    /// protocol).
    Lost(String),
    /// Released, and the node did not answer within [`RELEASE_WAIT`].
    Released,
    /// Past expiry and the safety margin with no word from the node.
    Overdue,
}

impl Outcome {
    /// The `reason` label of `leases_ended_total`.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Self::Ended(end) => end.reason.as_str(),
            Self::Lost(_) => "node_lost",
            Self::Released => "released",
            Self::Overdue => "expired",
        }
    }

    /// How the slot ends for the core and the policy, and the node's time
    /// per call, ms.
    pub(super) fn call_end(&self) -> (CallEnd, f32) {
        match self {
            Self::Ended(end) if end.calls > 0 => {
                let per_call = end.busy_ms / end.calls as f32;
                let per_call = if per_call.is_finite() {
                    per_call.max(0.0)
                } else {
                    0.0
                };
                (CallEnd::Ok, per_call)
            }
            Self::Lost(_) => (CallEnd::Failed, 0.0),
            _ => (CallEnd::Abandoned, 0.0),
        }
    }
}

/// What a lease waits for a slot with.
pub(super) struct HoldAsk<'a> {
    pub(super) head: &'a Arc<CallHead>,
    pub(super) tenant: &'a Arc<str>,
    pub(super) call_id: u64,
    pub(super) deadline: Instant,
    /// The hold to send (its `policy` is set from the pick).
    pub(super) hold: LeaseHold,
}

/// A slot a node holds for a lease, with where the node's words on it
/// arrive.
pub(super) struct Held {
    pub(super) guard: SlotGuard,
    pub(super) picked: Picked,
    pub(super) words: mpsc::Receiver<HoldWord>,
    /// The node's direct address.
    pub(super) direct: String,
}

/// Waits for `ticket`'s grant and has the granted node hold the slot: a
/// node without a direct port, or whose control stream is gone, is
/// skipped as a failed dispatch (the core offers the lease to another
/// node); a node refusing for being full sends it back to wait.
pub(super) async fn hold_slot(
    shared: &Shared,
    ask: HoldAsk<'_>,
    mut ticket: Ticket,
    caller: &mut impl Caller,
    timed_out: &impl Fn() -> CallError,
) -> Result<Held, Failure> {
    let HoldAsk {
        head,
        tenant,
        call_id,
        deadline,
        mut hold,
    } = ask;
    let mut skipped = 0;
    loop {
        let Grant { guard, picked } =
            crate::calls::wait_grant(&mut ticket, deadline, caller, timed_out).await?;
        let node = guard.node().clone();
        let asked = match node.direct.clone() {
            Some(direct) => {
                hold.policy.clone_from(&picked.policy_name);
                ask_hold(&node, &hold, direct, deadline).await
            }
            None => Asked::Unsent(error(
                ErrorKind::NoNodeAvailable,
                format!(
                    "no node of {} with a free slot has a direct port",
                    head.service
                ),
            )),
        };
        let (mut words, direct) = match asked {
            Asked::Sent { words, direct } => (words, direct),
            // Not sent: another node gets the lease.
            Asked::Unsent(unsent) => {
                skipped += 1;
                if skipped >= MAX_HOLD_ATTEMPTS {
                    // A node whose session is gone failed; one without a
                    // direct port only could not take a lease.
                    let end = if unsent.kind == ErrorKind::NodeLost {
                        CallEnd::Failed
                    } else {
                        CallEnd::Abandoned
                    };
                    finish(shared, guard, &picked, end);
                    return Err(unsent.into());
                }
                ticket = guard.dispatch_failed(head, tenant);
                continue;
            }
            Asked::TimedOut => {
                finish(shared, guard, &picked, CallEnd::Abandoned);
                return Err(timed_out().into());
            }
        };
        let answer = tokio::time::timeout_at(deadline.into(), words.recv()).await;
        let answer = match answer {
            Ok(Some(HoldWord::Held(None))) => {
                return Ok(Held {
                    guard,
                    picked,
                    words,
                    direct,
                });
            }
            Ok(Some(HoldWord::Held(Some(e)))) => e,
            Ok(Some(HoldWord::Ended(_))) => {
                node.holds.forget(&hold.lease_id);
                error(
                    ErrorKind::Internal,
                    "node ended a lease before answering its hold",
                )
            }
            Ok(None) => error(
                ErrorKind::NodeLost,
                format!("node {} left before answering the hold", node.spec.id),
            ),
            Err(_) => {
                // The node may hold it: dropping it releases it.
                drop_lease(&node, &hold.lease_id);
                finish(shared, guard, &picked, CallEnd::Abandoned);
                return Err(timed_out().into());
            }
        };
        if crate::calls::node_full(&answer) {
            ticket = again_when_room(shared, guard, head, tenant, call_id, deadline, caller)
                .await?
                .ok_or(Failure::Reply(answer))?;
        } else {
            finish(shared, guard, &picked, crate::calls::node_fault(&answer));
            return Err(answer.into());
        }
    }
}

/// What asking a node to hold a lease came to.
enum Asked {
    /// Sent: the node's answers come on `words`; its direct address.
    Sent {
        words: mpsc::Receiver<HoldWord>,
        direct: String,
    },
    /// Not sent (the node's session is gone, the id is in use): another
    /// node may take the lease.
    Unsent(CallError),
    /// The deadline came first.
    TimedOut,
}

/// Sends `hold` on `node`'s control stream, waiting for room there until
/// `deadline`; `direct` is the node's direct address.
async fn ask_hold(node: &Node, hold: &LeaseHold, direct: String, deadline: Instant) -> Asked {
    let Some(words) = node.holds.expect(&hold.lease_id) else {
        return Asked::Unsent(error(
            ErrorKind::Internal,
            format!(
                "lease {} is held on node {} already",
                hold.lease_id, node.spec.id
            ),
        ));
    };
    let sent = tokio::time::timeout_at(
        deadline.into(),
        node.control.send(Message::Hold(hold.clone())),
    )
    .await;
    match sent {
        Ok(Ok(())) => Asked::Sent { words, direct },
        Ok(Err(_)) => {
            node.holds.forget(&hold.lease_id);
            Asked::Unsent(error(
                ErrorKind::NodeLost,
                format!("node {} unreachable: its session ended", node.spec.id),
            ))
        }
        Err(_) => {
            node.holds.forget(&hold.lease_id);
            Asked::TimedOut
        }
    }
}

/// Asks `node` to end lease `lease_id` (best effort: a full control queue
/// or a gone session drops the ask; the node's own timers end the lease).
fn drop_lease(node: &Node, lease_id: &str) {
    let drop = LeaseDrop {
        lease_id: lease_id.to_owned(),
    };
    if node.control.try_send(Message::DropLease(drop)).is_err() {
        tracing::debug!(%lease_id, node = %node.spec.id, "could not ask the node to drop a lease");
    }
}

/// The node refused the hold for running its `max_concurrent` calls: back
/// to the core, which picks again once a node has room. `None` when the
/// core refuses or no time is left.
async fn again_when_room(
    shared: &Shared,
    guard: SlotGuard,
    head: &Arc<CallHead>,
    tenant: &Arc<str>,
    call_id: u64,
    deadline: Instant,
    caller: &impl Caller,
) -> Result<Option<Ticket>, Failure> {
    let Ok(Retry {
        ticket, backoff, ..
    }) = guard.retry(head, tenant, rand::random::<f32>(), Again::NodeFull)
    else {
        return Ok(None);
    };
    if Instant::now() + backoff >= deadline {
        return Ok(None);
    }
    let gone = caller.gone();
    tokio::select! {
        () = tokio::time::sleep(backoff) => {}
        () = gone => return Err(Failure::Gone),
    }
    shared.scheduler.retry_due(call_id);
    Ok(Some(ticket))
}

/// Frees a slot no lease got.
fn finish(shared: &Shared, guard: SlotGuard, picked: &Picked, end: CallEnd) {
    crate::calls::finish(shared, guard, picked, 0.0, end);
}

/// Keeps the lease's slot until it ends, then frees it, forgets the lease
/// and counts it.
pub(super) async fn keep(holding: Holding) {
    let Holding {
        shared,
        guard,
        picked,
        mut words,
        entry,
        ended,
        admitted,
        service_label: service,
        expires,
    } = holding;
    let node = guard.node().clone();
    let lease_id = &entry.info.lease_id;
    let mut released_at: Option<Instant> = None;
    let outcome = loop {
        let until = released_at.map_or(expires + SAFETY_MARGIN, |at| at + RELEASE_WAIT);
        tokio::select! {
            word = words.recv() => break match word {
                Some(HoldWord::Ended(end)) => Outcome::Ended(end),
                Some(HoldWord::Held(_)) => Outcome::Lost("the node answered a hold twice".into()),
                None => Outcome::Lost("the node's session ended".into()),
            },
            () = entry.release.notified(), if released_at.is_none() => {
                drop_lease(&node, lease_id);
                released_at = Some(Instant::now());
            }
            () = tokio::time::sleep_until(until.into()) => {
                break if released_at.is_some() { Outcome::Released } else { Outcome::Overdue };
            }
        }
    };
    if matches!(outcome, Outcome::Overdue | Outcome::Lost(_)) {
        node.holds.forget(lease_id);
        drop_lease(&node, lease_id);
    } else if matches!(outcome, Outcome::Released) {
        node.holds.forget(lease_id);
    }
    let info = &entry.info;
    if let Outcome::Lost(why) = &outcome {
        tracing::info!(lease_id = %info.lease_id, node = %info.node_id, %why, "lease's node lost");
    }
    let (end, node_ms) = outcome.call_end();
    crate::calls::finish(&shared, guard, &picked, node_ms, end);
    shared.leases.table.remove(&info.lease_id);
    ended.send_replace(true);
    drop(admitted);
    metrics::counter!("leases_ended_total", "service" => service.clone(), "reason" => outcome.reason())
        .increment(1);
    metrics::gauge!("leases_active", "service" => service).decrement(1.0);
    tracing::debug!(lease_id = %info.lease_id, reason = outcome.reason(), "lease ended");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use protocol::LeaseEndReason;

    #[test]
    fn a_used_lease_feeds_the_node_time_per_call() {
        let used = Outcome::Ended(LeaseEnd {
            calls: 4,
            reason: LeaseEndReason::Used,
            busy_ms: 40.0,
            lease_id: None,
        });
        assert_eq!(used.call_end(), (CallEnd::Ok, 10.0));
        assert_eq!(used.reason(), "used");
    }

    #[test]
    fn unused_released_and_lost_leases_end_without_a_latency() {
        let expired = Outcome::Ended(LeaseEnd {
            calls: 0,
            reason: LeaseEndReason::Expired,
            busy_ms: 0.0,
            lease_id: None,
        });
        assert_eq!(expired.call_end(), (CallEnd::Abandoned, 0.0));
        assert_eq!(expired.reason(), "expired");
        assert_eq!(Outcome::Released.call_end(), (CallEnd::Abandoned, 0.0));
        assert_eq!(Outcome::Overdue.reason(), "expired");
        let lost = Outcome::Lost("gone".into());
        assert_eq!(lost.call_end(), (CallEnd::Failed, 0.0));
        assert_eq!(lost.reason(), "node_lost");
        let bad = Outcome::Ended(LeaseEnd {
            calls: 1,
            reason: LeaseEndReason::Used,
            busy_ms: f32::NAN,
            lease_id: None,
        });
        assert_eq!(bad.call_end(), (CallEnd::Ok, 0.0), "a NaN from the wire");
    }
}
