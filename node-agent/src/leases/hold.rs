//! Gateways' holds. On the control stream (`Hold(LeaseHold)`, answered
//! there by `Held`; `DropLease` releases; `LeaseEnded` with the lease's id
//! when it ends), frames of many leases share one stream; on a stream of
//! its own (the first form, for older gateways: `Hold`, answered `Ack` or
//! `Error`, then `LeaseEnded`; the gateway resetting its half releases).
//! Either way the hold takes a slot of the service for the lease (refused
//! when full with `not_run`, so the gateway picks again), then the lease's
//! task watches its lifetime, idle timeout, a release and the node's
//! drain, and when the lease ends frees the slot and tells the gateway.

use std::sync::Arc;
use std::time::Duration;

use protocol::{ErrorKind, LeaseDrop, LeaseEnd, LeaseEndReason, LeaseHeld, LeaseHold, Message};
use tokio::sync::mpsc;
use tokio::time::Instant;
use transport::{FramedRecv, FramedSend, IoError};

use super::{Lease, Leases};
use crate::services::{ServiceError, Services, Tally};

/// Application code the agent stops a refused hold's receiving half with.
const STOP_CODE: u32 = protocol::codes::reset::CANCELLED;

/// Where a lease's end is told: the hold's own stream, or the control
/// stream of the session that sent it (through its writer).
enum Teller {
    Stream { send: FramedSend, recv: FramedRecv },
    Control(mpsc::Sender<Message>),
}

impl Teller {
    /// Waits for the gateway to release the lease on its own stream
    /// (`true`), or for the stream to end without one (`false`: the lease
    /// lives on); never returns for the control stream (`DropLease` ends
    /// the lease there).
    async fn released(&mut self) -> bool {
        let Self::Stream { recv, .. } = self else {
            return std::future::pending().await;
        };
        loop {
            match recv.recv().await {
                Err(IoError::Reset(_)) => return true,
                Err(_) | Ok(None) => return false,
                Ok(Some(other)) => {
                    tracing::debug!(kind = ?other.kind(), "ignoring a frame on a hold stream");
                }
            }
        }
    }

    /// Tells the gateway the lease `lease_id` ended.
    async fn tell(self, lease_id: &str, mut end: LeaseEnd) {
        match self {
            Self::Stream { mut send, .. } => {
                if send.send(&Message::LeaseEnded(end)).await.is_ok() {
                    let _ = send.finish();
                }
            }
            Self::Control(out) => {
                end.lease_id = Some(lease_id.to_owned());
                // A session gone since: nobody to tell.
                let _ = out.send(Message::LeaseEnded(end)).await;
            }
        }
    }
}

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
        tokio::spawn(self.clone().live(lease, Teller::Stream { send, recv }));
    }

    /// Serves a `Hold` read on the control stream of the session whose
    /// tally is `owner` and whose writer is `out`: answers `Held` there
    /// (refused, or the slot held) and starts the lease's task, which
    /// writes its `LeaseEnded` to `out` (dropped if the session is gone:
    /// the lease lives on until it ends by itself).
    pub(crate) async fn hold_on_control(
        &self,
        services: &Services,
        owner: &Arc<Tally>,
        out: &mpsc::Sender<Message>,
        hold: LeaseHold,
    ) {
        let lease_id = hold.lease_id.clone();
        let lease = match self.take(services, owner, hold) {
            Ok(lease) => lease,
            Err(e) => {
                tracing::debug!(%lease_id, "lease hold refused: {e}");
                let refused = LeaseHeld {
                    lease_id,
                    error: Some(e.into_call_error()),
                };
                let _ = out.send(Message::Held(refused)).await;
                return;
            }
        };
        tracing::debug!(
            %lease_id,
            service = %lease.hold.service,
            max_calls = lease.hold.max_calls,
            ttl_ms = lease.hold.ttl_ms,
            "lease held"
        );
        let held = LeaseHeld {
            lease_id,
            error: None,
        };
        if out.send(Message::Held(held)).await.is_err() {
            // The session ended before the grant: nobody holds a token.
            lease.end(LeaseEndReason::Released);
        }
        tokio::spawn(self.clone().live(lease, Teller::Control(out.clone())));
    }

    /// Ends the lease `drop` names, if the session whose tally is `owner`
    /// holds it (another gateway's lease, or one unknown here, is left as
    /// it is).
    pub(crate) fn drop_lease(&self, owner: &Arc<Tally>, drop: &LeaseDrop) {
        let lease = self.table().active.get(&drop.lease_id).cloned();
        match lease {
            Some(lease) if Arc::ptr_eq(&lease.owner, owner) => {
                lease.end(LeaseEndReason::Released);
            }
            _ => {
                tracing::debug!(lease_id = %drop.lease_id, "ignoring a drop of a lease not held for this gateway")
            }
        }
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
        self.insert(hold, slot, owner)
    }

    /// The lease's life: waits for its end, frees its slot once no call of
    /// it runs, remembers it and tells `teller` (`LeaseEnded`).
    async fn live(self, lease: Arc<Lease>, mut teller: Teller) {
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
                // The gateway's connection gone (or its half finished), the
                // lease lives on until it ends by itself.
                released = teller.released(), if reading => match released {
                    true => lease.end(LeaseEndReason::Released),
                    false => reading = false,
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
                        lease_id: None,
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
        teller.tell(&lease.hold.lease_id, end).await;
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
