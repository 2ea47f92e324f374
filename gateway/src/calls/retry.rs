//! Retries: after a failure on its node (`node lost`, `service failed`, a
//! timeout there, as `[retry] retry_on` lists), a call of a service with
//! `[services.NAME] idempotent = true` runs again on another node, after a
//! jittered backoff, within its deadline and the core's retry budget (see
//! [`switchyard_core::RetryRules`]). A call the node reports as never run
//! (`CallError::not_run`: its model server refused the connection, nothing
//! of the request was written) runs again the same way whatever the
//! service's `idempotent` and `retry_on` say. A call the node refused for
//! running its `max_concurrent` calls (other gateways' included: `not_run`
//! with kind `no node available`) goes back to the core, which takes the
//! node as full until its next load report and picks again (another node,
//! or the same one once it has room) within the call's deadline, spending
//! neither its attempts nor the retry budget. Any other call is never sent
//! twice once dispatched.

use std::time::Instant;

use switchyard_core::CallEnd;

use super::kernel::{Failed, finish};
use super::{Call, Caller, Failure};
use crate::scheduler::{Again, Retry, Ticket};

/// Ends the `failed` attempt: when the call may run again, waits its
/// backoff and returns its new ticket and attempt number; else frees the
/// slot and returns `None` (the caller answers with the attempt's error).
///
/// # Errors
/// [`Failure::Gone`] when the caller leaves during the backoff.
pub(super) async fn again(
    call: &Call<'_>,
    failed: Failed,
    caller: &impl Caller,
) -> Result<Option<(Ticket, u32)>, Failure> {
    let Failed {
        guard,
        picked,
        node_ms,
        error: e,
    } = failed;
    let picked = &picked;
    let shared = call.shared;
    let service = &call.head.service;
    // The operator's `idempotent`, or the node's own word for its service.
    let idempotent = shared
        .config
        .services
        .get(service)
        .is_some_and(|s| s.idempotent)
        || guard
            .node()
            .services
            .get(service)
            .is_some_and(|s| s.idempotent);
    let why = if super::kernel::node_full(&e) {
        Again::NodeFull
    } else if e.not_run {
        Again::NotRun
    } else {
        Again::Failed
    };
    let may_retry = e.not_run || (idempotent && shared.config.retry.retries(e.kind));
    if !may_retry || Instant::now() >= call.deadline {
        // A full node did nothing wrong.
        let end = if why == Again::NodeFull {
            CallEnd::Abandoned
        } else {
            CallEnd::Failed
        };
        finish(shared, guard, picked, node_ms, end);
        return Ok(None);
    }
    let (node, node_id) = (guard.node().key, guard.node().spec.id.clone());
    if why != Again::NodeFull {
        shared
            .policies
            .observe(picked, service, node, node_ms, false);
    }
    let Retry {
        ticket,
        attempt,
        backoff,
    } = match guard.retry(
        &call.head,
        &call.admitted.tenant,
        rand::random::<f32>(),
        why,
    ) {
        Ok(retry) => retry,
        Err(why) => {
            tracing::debug!(call_id = call.call_id, %service, why = why.as_str(), "retry refused");
            return Ok(None);
        }
    };
    if Instant::now() + backoff >= call.deadline {
        // No time left for another attempt: dropping the ticket forgets it.
        return Ok(None);
    }
    tracing::debug!(
        call_id = call.call_id,
        %service,
        node = %node_id,
        kind = %e.kind,
        not_run = e.not_run,
        ?why,
        attempt,
        backoff_ms = backoff.as_millis(),
        "retrying the call"
    );
    let gone = caller.gone();
    tokio::select! {
        () = tokio::time::sleep(backoff) => {}
        () = gone => return Err(Failure::Gone),
    }
    shared.scheduler.retry_due(call.call_id);
    Ok(Some((ticket, attempt)))
}
