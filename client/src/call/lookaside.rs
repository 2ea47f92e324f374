//! Look-aside calls ([`super::Mode::LookAside`]): a lease of one call, the
//! call on the node's direct port, and the proxied path when that port
//! cannot be reached.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::attempt::Request;
use super::{CallEvent, CallOptions, Deadline, Mode, Open};
use crate::lease::{DirectFailed, millis};
use crate::{Client, ClientError, ResultMeta};

/// The longest a fallback waits for the unused lease's release, so that
/// its slot is free before the proxied call asks for one.
const RELEASE_WAIT: Duration = Duration::from_secs(3);

impl Client {
    /// Whether a call of `service` with `options` goes look-aside: its
    /// mode says so, or the client's configuration names the service.
    pub(crate) fn is_look_aside(&self, service: &str, options: &CallOptions) -> bool {
        options.mode == Mode::LookAside || self.config.look_aside.iter().any(|s| s == service)
    }

    /// Leases a node for one call, sends the call to its direct port and
    /// returns the result's head with the stream open; falls back to the
    /// proxied path (releasing the lease) when the direct port cannot be
    /// reached. The head's `queue_ms` is the lease's wait, its `total_ms`
    /// that wait plus the node's time.
    pub(super) async fn look_aside_start(
        &self,
        service: &str,
        payload: Bytes,
        options: CallOptions,
        mut on_event: impl FnMut(CallEvent) + Send,
        deadline: Deadline,
    ) -> Result<(ResultMeta, Open), ClientError> {
        // The lease lives as long as the call may.
        let request = Request::Lease {
            max_calls: 1,
            idle_ms: 0,
            ttl_ms: millis(options.timeout),
        };
        let lease = self
            .lease_with(service, options.clone(), request, &mut on_event, deadline)
            .await?;
        let direct = self
            .direct_start(&lease, payload.clone(), options.clone(), deadline)
            .await;
        match direct {
            Ok((mut meta, open)) => {
                let queue_ms = lease.grant().queue_ms;
                meta.timings.queue_ms = queue_ms;
                meta.timings.total_ms += queue_ms;
                Ok((meta, open))
            }
            Err(DirectFailed::Unreachable(error)) => {
                tracing::debug!(
                    node = lease.node_id(),
                    direct = lease.direct(),
                    %error,
                    "node's direct port unreachable; calling through the gateway"
                );
                let until = deadline.at.min(Instant::now() + RELEASE_WAIT);
                match tokio::time::timeout_at(until, lease.release()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "releasing the unused lease failed"),
                    Err(_) => tracing::debug!("releasing the unused lease timed out"),
                }
                self.start(service, payload, options, on_event, deadline)
                    .await
            }
            Err(DirectFailed::Failed(error)) => {
                // Refused before it ran: the lease's slot is not needed.
                if error.retry_safe() {
                    tokio::spawn(async move {
                        if let Err(e) = lease.release().await {
                            tracing::debug!(error = %e, "releasing the unused lease failed");
                        }
                    });
                }
                Err(error)
            }
        }
    }
}
