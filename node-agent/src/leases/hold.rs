//! A gateway's hold stream: `Hold(LeaseHold)` takes a slot of the service
//! for a lease (answered `Ack("held")`, or `Error`: full is `not_run`, so
//! the gateway picks again), then the lease's task watches its lifetime,
//! idle timeout, the gateway's release (it resets its half of the stream)
//! and the node's drain, and when the lease ends frees the slot and writes
//! `LeaseEnded` on the stream.

use std::sync::Arc;
use std::time::Duration;

use protocol::{ErrorKind, LeaseEnd, LeaseEndReason, LeaseHold, Message};
use tokio::time::Instant;
use transport::{FramedRecv, FramedSend, IoError};

use super::{Lease, Leases};
use crate::services::{ServiceError, Services, Tally};

/// Application code the agent stops a refused hold's receiving half with.
const STOP_CODE: u32 = protocol::codes::reset::CANCELLED;

impl Leases {
    /// Serves a hold stream whose first frame was `hold`: refuses it, or
    /// holds the slot and hands the stream to the lease's own task (which
    /// outlives the gateway's session: the lease ends by itself). The
    /// slot counts in `owner`, the tally of the session that sent the
    /// hold (its gateway counts the lease among its calls).
    pub(crate) async fn hold(
        &self,
        services: &Services,
        owner: &Arc<Tally>,
        mut send: FramedSend,
        mut recv: FramedRecv,
        hold: LeaseHold,
    ) {
        let lease = match self.take(services, owner, hold) {
            Ok(lease) => lease,
            Err(e) => {
                tracing::debug!("lease hold refused: {e}");
                recv.stop(STOP_CODE);
                if send
                    .send(&Message::Error(e.into_call_error()))
                    .await
                    .is_ok()
                {
                    let _ = send.finish();
                }
                return;
            }
        };
        tracing::debug!(
            lease_id = %lease.hold.lease_id,
            service = %lease.hold.service,
            max_calls = lease.hold.max_calls,
            ttl_ms = lease.hold.ttl_ms,
            "lease held"
        );
        if let Err(e) = send.send(&Message::Ack("held".into())).await {
            // The gateway is gone before the grant: nobody holds a token.
            tracing::debug!(lease_id = %lease.hold.lease_id, "lease hold lost: {e}");
            lease.end(LeaseEndReason::Released);
        }
        tokio::spawn(self.clone().live(lease, send, recv));
    }

    /// Checks a hold and takes its slot into the table.
    fn take(
        &self,
        services: &Services,
        owner: &Arc<Tally>,
        hold: LeaseHold,
    ) -> Result<Arc<Lease>, ServiceError> {
        let bad = |m: String| ServiceError::new(ErrorKind::BadRequest, m);
        hold.validate().map_err(|e| bad(e.to_string()))?;
        if !self.direct_open() {
            return Err(bad(
                "this node takes no direct calls (no [direct] port)".into()
            ));
        }
        if hold.ttl_ms == 0 {
            return Err(bad("a lease needs a lifetime (ttl_ms > 0)".into()));
        }
        if self.inner.is_draining() {
            return Err(
                ServiceError::new(ErrorKind::NoNodeAvailable, "the node is draining").never_ran(),
            );
        }
        let slot = services.acquire_for(&hold.service, owner)?;
        self.insert(hold, slot)
    }

    /// The lease's life: waits for its end, frees its slot once no call of
    /// it runs, remembers it and writes `LeaseEnded`.
    async fn live(self, lease: Arc<Lease>, mut send: FramedSend, mut recv: FramedRecv) {
        let mut draining = self.inner.draining.subscribe();
        // Whether the gateway's half may still release the lease.
        let mut reading = true;
        let idle = Duration::from_millis(u64::from(lease.hold.idle_ms));
        loop {
            let idle_at = {
                let state = lease.state();
                if state.ending.is_some() {
                    break;
                }
                // Idle counts only while no call runs.
                (!idle.is_zero() && state.slot.is_some()).then(|| state.last_activity + idle)
            };
            tokio::select! {
                () = tokio::time::sleep_until(lease.deadline) => lease.end(LeaseEndReason::Expired),
                () = sleep_until_some(idle_at) => lease.end(LeaseEndReason::Idle),
                () = lease.wake.notified() => {}
                Ok(_) = draining.wait_for(|d| *d) => lease.end(LeaseEndReason::Draining),
                read = recv.recv(), if reading => match read {
                    Err(IoError::Reset(_)) => lease.end(LeaseEndReason::Released),
                    // The gateway's connection is gone (or it finished its
                    // half): the lease lives on until it ends by itself.
                    Err(_) | Ok(None) => reading = false,
                    Ok(Some(other)) => {
                        tracing::debug!(kind = ?other.kind(), "ignoring a frame on a hold stream");
                    }
                },
            }
        }
        // No call starts now; one running gives the slot back when done.
        let (slot, end) = loop {
            let notified = lease.wake.notified();
            {
                let mut state = lease.state();
                if let Some(slot) = state.slot.take() {
                    let end = LeaseEnd {
                        calls: state.calls,
                        reason: state.ending.unwrap_or(LeaseEndReason::Other),
                        busy_ms: state.busy_ms,
                    };
                    break (slot, end);
                }
            }
            notified.await;
        };
        self.forget(&lease, end.reason);
        drop(slot);
        tracing::debug!(
            lease_id = %lease.hold.lease_id,
            calls = end.calls,
            reason = end.reason.as_str(),
            "lease ended"
        );
        if send.send(&Message::LeaseEnded(end)).await.is_ok() {
            let _ = send.finish();
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
