//! A granted lease's hold stream to its node, and the task that keeps the
//! lease's slot until the node says the lease ended (`LeaseEnded`: used,
//! expired, idle, released, draining), the stream or the node's connection
//! breaks (node lost), or a safety timer runs out ([`SAFETY_MARGIN`] past
//! its expiry). A release resets the gateway's half of the stream (the
//! node ends the lease and answers `LeaseEnded`). Then the slot is freed
//! as a call's would be: the node's time per call feeds its latency EWMA
//! and the policy's observe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{LeaseEnd, Message};
use switchyard_core::CallEnd;
use tokio::sync::watch;
use transport::{FramedRecv, FramedSend};

use super::table::Entry;
use crate::Shared;
use crate::calls::Admitted;
use crate::policies::Picked;
use crate::scheduler::SlotGuard;
use crate::telemetry::labels;

/// How long past its expiry a lease's slot is kept when its node says
/// nothing (clocks and the node's own timer differ a little).
pub(super) const SAFETY_MARGIN: Duration = Duration::from_secs(5);

/// How long a release waits for the node's `LeaseEnded` before freeing the
/// slot anyway.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// A granted lease's slot and stream, for [`keep`].
pub(super) struct Holding {
    pub(super) shared: Arc<Shared>,
    pub(super) guard: SlotGuard,
    pub(super) picked: Picked,
    pub(super) send: FramedSend,
    pub(super) recv: FramedRecv,
    pub(super) entry: Arc<Entry>,
    pub(super) ended: watch::Sender<bool>,
    /// The tenant's in-flight place, held until the lease ends.
    pub(super) admitted: Admitted,
    /// When the lease expires (this gateway's clock).
    pub(super) expires: Instant,
}

/// How a lease's hold ended on this side.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// The node ended it and said how.
    Ended(LeaseEnd),
    /// The stream or connection broke (the node is gone, or broke the
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

/// Keeps the lease's slot until it ends, then frees it, forgets the lease
/// and counts it.
pub(super) async fn keep(holding: Holding) {
    let Holding {
        shared,
        guard,
        picked,
        mut send,
        mut recv,
        entry,
        ended,
        admitted,
        expires,
    } = holding;
    let mut released_at: Option<Instant> = None;
    let outcome = loop {
        let until = released_at.map_or(expires + SAFETY_MARGIN, |at| at + RELEASE_WAIT);
        tokio::select! {
            frame = recv.recv() => break match frame {
                Ok(Some(Message::LeaseEnded(end))) => Outcome::Ended(end),
                Ok(Some(other)) => Outcome::Lost(format!("unexpected {:?} frame on the hold stream", other.kind())),
                Ok(None) => Outcome::Lost("the node closed the hold stream".into()),
                Err(e) => Outcome::Lost(format!("hold stream failed: {e}")),
            },
            () = entry.release.notified(), if released_at.is_none() => {
                send.reset(protocol::codes::reset::CANCELLED);
                released_at = Some(Instant::now());
            }
            () = tokio::time::sleep_until(until.into()) => {
                break if released_at.is_some() { Outcome::Released } else { Outcome::Overdue };
            }
        }
    };
    if matches!(outcome, Outcome::Overdue | Outcome::Lost(_)) {
        send.reset(protocol::codes::reset::CANCELLED);
        recv.stop(protocol::codes::reset::CANCELLED);
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
    let service = labels::service(&info.service);
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
        });
        assert_eq!(bad.call_end(), (CallEnd::Ok, 0.0), "a NaN from the wire");
    }
}
