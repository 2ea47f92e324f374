//! The kernel of a call on the node side: wait for its grant, open a
//! stream to the granted node (another node when that fails: nothing
//! reached it), send the dispatch and payload, read the node's answer head;
//! and end an attempt (free the slot, tell the policy). The pipeline
//! ([`super`]) and its paths ([`super::cached`], [`super::relay`],
//! [`super::retry`]) call into it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use protocol::{CallError, DispatchHead, ErrorKind, Message, ResultHead, Timings};
use switchyard_core::CallEnd;
use transport::{FramedRecv, FramedSend, IoError};

use super::{Call, Caller, Failure, error, ms, prefix};
use crate::Shared;
use crate::fleet::Node;
use crate::policies::Picked;
use crate::scheduler::{Grant, SlotGuard, Ticket, WaitState};

/// Most nodes one call is offered to when streams cannot be opened.
const MAX_DISPATCH_ATTEMPTS: usize = 3;

/// A node's answer head, with the slot still held and the result unread.
pub(super) struct Answered {
    pub(super) guard: SlotGuard,
    pub(super) picked: Picked,
    pub(super) node: Arc<Node>,
    /// Kept open until the call ends; reset to cancel the node's work.
    pub(super) node_send: FramedSend,
    pub(super) node_recv: FramedRecv,
    /// The result's length, `None` when it streams.
    pub(super) payload_len: Option<u64>,
    pub(super) content_type: Option<String>,
    pub(super) status: Option<u16>,
    pub(super) dispatched: Instant,
    pub(super) node_ms: f32,
    /// Nodes the call was sent to, this one included.
    pub(super) attempts: u32,
    /// The one-line decision, when the call asked (hint `explain=1`).
    pub(super) explain: Option<String>,
    /// From a node that is a gateway: the gateways below it and the node
    /// that ran the call ([`protocol::ReplyHead::path`]).
    pub(super) path: Vec<String>,
}

impl Answered {
    /// The result head for the client.
    pub(super) fn result_head(&self, call: &Call<'_>) -> ResultHead {
        // Through a child gateway: the node is the end of its path, the
        // gateways are the child and those below it.
        let (node_id, via) = match self.path.split_last() {
            Some((node, below)) => {
                let mut via = Vec::with_capacity(below.len() + 1);
                via.push(self.node.spec.id.clone());
                via.extend(below.iter().cloned());
                (node.clone(), via)
            }
            None => (self.node.spec.id.clone(), Vec::new()),
        };
        ResultHead {
            payload_len: self.payload_len,
            node_id,
            policy: self.picked.policy_name.clone(),
            timings: Timings {
                queue_ms: ms(self.dispatched.duration_since(call.ready)),
                node_ms: self.node_ms,
                total_ms: ms(call.arrived.elapsed()),
                attempts: self.attempts,
            },
            cache: None,
            content_type: self.content_type.clone(),
            status: self.status,
            explain: self.explain.clone(),
            request_id: call.head.request_id.clone(),
            via,
        }
    }

    /// Stops the node's work (the caller left or the call timed out): the
    /// agent sees the stream stopped and kills or aborts the service.
    pub(super) fn cancel(&mut self, code: u32) {
        self.node_send.reset(code);
        self.node_recv.stop(code);
    }

    /// Frees the slot and tells the policy how the call went.
    pub(super) fn finish(self, call: &Call<'_>, end: CallEnd) {
        finish(call.shared, self.guard, &self.picked, self.node_ms, end);
    }
}

/// Admits the call, dispatches it to a node (another one when the stream
/// cannot be opened) and reads the node's answer head. A call of an
/// idempotent service that fails on its node runs again on another one
/// (see [`super::retry`]).
pub(super) async fn to_node(
    call: &Call<'_>,
    payload: Bytes,
    caller: &mut impl Caller,
) -> Result<Answered, Failure> {
    let shared = call.shared;
    let prefix = match &call.prefix {
        Some(prefix) => prefix.clone(),
        None => prefix::of_call(&shared.config.prefix, &call.head, &payload),
    };
    let mut ticket = shared.scheduler.admit_excluding(
        &call.head,
        &call.admitted.tenant,
        call.call_id,
        prefix.clone(),
        call.admitted.job,
        call.admitted.exclude.into_iter().collect(),
    );
    let mut attempts = 1;
    loop {
        let opened = open(call, ticket, caller).await?;
        match exchange_with(call, opened, &payload, &prefix).await {
            Ok(mut answered) => {
                answered.attempts = attempts;
                return Ok(answered);
            }
            Err(Attempt::Over(failure)) => return Err(failure),
            Err(Attempt::Failed(failed)) => {
                let error = failed.error.clone();
                let Some((next, attempt)) = super::retry::again(call, *failed, &*caller).await?
                else {
                    let mut e = error;
                    if attempts > 1 {
                        e.message = format!("{} (attempt {attempts} of the call)", e.message);
                    }
                    return Err(e.into());
                };
                ticket = next;
                attempts = attempt;
            }
        }
    }
}

/// How one attempt on a node ended when it did not answer.
enum Attempt {
    /// The call is over (its deadline, a failure not the node's).
    Over(Failure),
    /// The node failed it: see [`Failed`] (boxed: it is large).
    Failed(Box<Failed>),
}

/// An attempt the node failed (`node lost`, `service failed`, a timeout
/// there): the slot is still held, for a retry or the end.
pub(super) struct Failed {
    /// The slot the attempt held.
    pub(super) guard: SlotGuard,
    /// The pick that chose the node.
    pub(super) picked: Picked,
    /// The node's time on the attempt, ms.
    pub(super) node_ms: f32,
    /// What the node answered (or what broke).
    pub(super) error: CallError,
}

/// A stream open to the node a call was granted, nothing sent yet.
struct Opened {
    guard: SlotGuard,
    picked: Picked,
    /// When the stream was opened: the call's node time counts from here.
    dispatched: Instant,
    send: FramedSend,
    recv: FramedRecv,
}

/// Waits for the call's grant and opens a stream to its node; another node
/// when the stream cannot be opened (nothing reached it).
async fn open(
    call: &Call<'_>,
    mut ticket: Ticket,
    caller: &mut impl Caller,
) -> Result<Opened, Failure> {
    let mut failures = 0;
    loop {
        let waiting = Instant::now();
        let Grant { guard, picked } = admit(call, &mut ticket, caller).await?;
        call.trace.granted(waiting, &picked);
        let node = guard.node().clone();
        let dispatched = Instant::now();
        // The agent caps the streams it accepts (QUIC stream limit): an open
        // beyond it waits for one to close, within the call's time.
        let opened = tokio::time::timeout_at(
            call.deadline.into(),
            transport::open_bi(&node.connection, call.shared.codec),
        )
        .await
        .map_err(|_| call.timed_out())?;
        match opened {
            Ok((send, recv)) => {
                return Ok(Opened {
                    guard,
                    picked,
                    dispatched,
                    send,
                    recv,
                });
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_DISPATCH_ATTEMPTS {
                    return Err(error(
                        ErrorKind::NodeLost,
                        format!("node {} unreachable: {e}", node.spec.id),
                    )
                    .into());
                }
                tracing::warn!(call_id = call.call_id, node = %node.spec.id, error = %e, "cannot open a stream to the node; trying another");
                // Nothing reached it: the core offers the call elsewhere.
                ticket = guard.dispatch_failed(&call.head, &call.admitted.tenant);
            }
        }
    }
}

/// Sends the call to the node its stream is open to, with its prefix
/// hashes (the node reports the blocks it holds), and reads the answer's
/// head.
async fn exchange_with(
    call: &Call<'_>,
    opened: Opened,
    payload: &Bytes,
    prefix: &[u64],
) -> Result<Answered, Attempt> {
    let Opened {
        guard,
        picked,
        dispatched,
        send: mut node_send,
        recv: mut node_recv,
    } = opened;
    let shared = call.shared;
    let node = guard.node().clone();
    if let Ok(mut served) = call.served.lock() {
        served.node.clone_from(&node.spec.id);
        served.policy.clone_from(&picked.policy_name);
    }
    if let Some(tx) = &call.admitted.on_dispatch {
        let _ = tx.send(node.spec.id.clone());
    }
    let explain = picked.explanation.as_ref().and_then(|explanation| {
        let decision = shared.decisions.record(
            &shared.registry,
            (call.call_id, call.head.request_id.as_deref()),
            &call.head.service,
            &node.spec.id,
            explanation,
        );
        call.wants_explain().then(|| decision.compact())
    });
    let remaining = call.deadline.saturating_duration_since(Instant::now());
    let mut span = call.trace.dispatch(&node.spec.id, dispatched);
    // A child gateway admits the call as the caller's tenant, at its
    // priority, with its hints (its policies and cache read them).
    let (hints, priority, tenant) = if node.spec.gateway {
        let tenant = Some(call.admitted.tenant.to_string());
        (call.head.hints.clone(), call.head.priority, tenant)
    } else {
        (Vec::new(), 0, None)
    };
    let dispatch = DispatchHead {
        call_id: call.call_id,
        service: call.head.service.clone(),
        payload_len: call.head.payload_len,
        timeout_ms: u32::try_from(remaining.as_millis())
            .unwrap_or(u32::MAX)
            .max(1),
        endpoint: call.head.endpoint.clone(),
        log: call.head.log,
        traceparent: span.traceparent(),
        request_id: call.head.request_id.clone(),
        prefix_hashes: prefix[..prefix.len().min(protocol::limits::MAX_PREFIX_HASHES)].to_vec(),
        job: call.admitted.job,
        hints,
        priority,
        tenant,
    };
    let max = shared.config.max_payload_bytes;
    let outcome = tokio::time::timeout_at(
        call.deadline.into(),
        exchange(
            &mut node_send,
            &mut node_recv,
            dispatch,
            payload.clone(),
            max,
        ),
    )
    .await;
    let node_ms = ms(dispatched.elapsed());
    if span.is_recording() {
        match &outcome {
            Err(_) => span.fail("timeout"),
            Ok(Err(e)) => span.fail(format!("{}: {}", e.kind, e.message)),
            Ok(Ok(_)) => {}
        }
    }
    span.end();
    match outcome {
        Err(_) => {
            node_send.reset(protocol::codes::reset::TIMEOUT);
            node_recv.stop(protocol::codes::reset::TIMEOUT);
            finish(shared, guard, &picked, node_ms, CallEnd::Failed);
            Err(Attempt::Over(call.timed_out().into()))
        }
        // A node full of other gateways' calls ran nothing: pick again.
        Ok(Err(e)) if node_fault(&e) == CallEnd::Failed || node_full(&e) => {
            Err(Attempt::Failed(Box::new(Failed {
                guard,
                picked,
                node_ms,
                error: e,
            })))
        }
        Ok(Err(e)) => {
            finish(shared, guard, &picked, node_ms, CallEnd::Abandoned);
            Err(Attempt::Over(e.into()))
        }
        Ok(Ok(reply)) => Ok(Answered {
            // A child gateway's own reason goes after this gateway's.
            explain: match (explain, reply.explain) {
                (Some(here), Some(below)) => {
                    let mut both = format!("{here}; {}: {below}", node.spec.id);
                    crate::policies::truncate(&mut both, protocol::limits::MAX_EXPLAIN_LEN);
                    Some(both)
                }
                (here, _) => here,
            },
            path: if node.spec.gateway {
                reply.path
            } else {
                Vec::new()
            },
            guard,
            picked,
            node,
            node_send,
            node_recv,
            payload_len: reply.payload_len,
            content_type: reply.content_type,
            status: reply.status,
            dispatched,
            node_ms,
            attempts: 1,
        }),
    }
}

/// Waits for the call's slot (at once, or after waiting in the queue),
/// telling the client its position as it changes. Leaving (timeout, client
/// gone) drops the ticket, which takes the call out of the queue.
async fn admit(
    call: &Call<'_>,
    ticket: &mut Ticket,
    caller: &mut impl Caller,
) -> Result<Grant, Failure> {
    wait_grant(ticket, call.deadline, caller, || call.timed_out()).await
}

/// Waits for `ticket`'s grant until `deadline`, sending `caller` a
/// `Queued` or `Reserved` frame each time its place changes. A lease
/// waits for its node the same way as a call.
///
/// # Errors
/// The refusal the grant carries, `timed_out()` past `deadline`,
/// `shutting down` when the scheduler stopped, or [`Failure::Gone`] when the
/// caller leaves. Dropping the ticket afterwards takes the wait out of the
/// queue.
pub(crate) async fn wait_grant(
    ticket: &mut Ticket,
    deadline: Instant,
    caller: &mut impl Caller,
    timed_out: impl Fn() -> CallError,
) -> Result<Grant, Failure> {
    let gone = caller.gone();
    tokio::pin!(gone);
    let mut updates = true;
    loop {
        tokio::select! {
            biased;
            granted = &mut ticket.handle.grant => {
                ticket.granted();
                return match granted {
                    Ok(grant) => Ok(grant?),
                    Err(_) => Err(error(ErrorKind::ShuttingDown, "the gateway stopped scheduling").into()),
                };
            }
            changed = ticket.handle.state.changed(), if updates => {
                if changed.is_err() {
                    updates = false;
                    continue;
                }
                let frame = match ticket.handle.state.borrow_and_update().clone() {
                    WaitState::Queued(position) => Message::Queued(position),
                    WaitState::Reserved(notice) => Message::Reserved(notice),
                };
                match tokio::time::timeout_at(deadline.into(), caller.send(frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(Failure::Gone),
                    Err(_) => return Err(timed_out().into()),
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => return Err(timed_out().into()),
            () = &mut gone => return Err(Failure::Gone),
        }
    }
}

/// Sends the dispatch and payload to the node and reads its answer's head.
async fn exchange(
    send: &mut FramedSend,
    recv: &mut FramedRecv,
    dispatch: DispatchHead,
    payload: Bytes,
    max: u64,
) -> Result<protocol::ReplyHead, CallError> {
    let lost = |e: IoError| error(ErrorKind::NodeLost, format!("node connection failed: {e}"));
    let upload = async {
        send.send_with_payload(&Message::Dispatch(dispatch), &payload)
            .await?;
        send.finish()
    };
    match upload.await {
        // The agent refused early (unknown service, full, too large) and
        // stopped our upload: its answer on the other half says why.
        Ok(()) | Err(IoError::Reset(_)) => {}
        Err(e) => return Err(lost(e)),
    }
    match recv.recv().await {
        Ok(Some(Message::Reply(reply))) => match reply.payload_len {
            Some(len) if len > max => Err(error(
                ErrorKind::PayloadTooLarge,
                format!("result of {len} bytes exceeds the maximum of {max} bytes"),
            )),
            _ => match reply.validate() {
                Ok(()) => Ok(reply),
                Err(e) => Err(error(
                    ErrorKind::Internal,
                    format!("node sent a bad reply: {e}"),
                )),
            },
        },
        Ok(Some(Message::Error(e))) => Err(e),
        Ok(Some(other)) => Err(error(
            ErrorKind::Internal,
            format!("node answered with an unexpected {:?} frame", other.kind()),
        )),
        Ok(None) => Err(error(
            ErrorKind::NodeLost,
            "node closed the call stream without answering",
        )),
        Err(e) if e.is_connection_lost() => Err(lost(e)),
        Err(e) => Err(error(
            ErrorKind::Internal,
            format!("node sent a bad frame: {e}"),
        )),
    }
}

/// Frees the call's slot (feeding the node's latency EWMA when it went well,
/// its outlier count when it failed) and tells the policy version that
/// picked the node how the call went.
pub(crate) fn finish(
    shared: &Shared,
    guard: SlotGuard,
    picked: &Picked,
    node_ms: f32,
    end: CallEnd,
) {
    let node = guard.node().key;
    let service = guard.service().to_string();
    guard.finish(node_ms, end);
    shared
        .policies
        .observe(picked, &service, node, node_ms, end == CallEnd::Ok);
}

/// Whether the node refused the call for running its `max_concurrent`
/// calls (every gateway's): it never ran, and another pick may place it.
pub(crate) fn node_full(e: &CallError) -> bool {
    e.not_run && e.kind == ErrorKind::NoNodeAvailable
}

/// Whether an error the node answered is the node's failure (it counts
/// towards outlier ejection) or the call's own (bad request, too large,
/// refused).
pub(crate) fn node_fault(e: &CallError) -> CallEnd {
    match e.kind {
        ErrorKind::ServiceFailed | ErrorKind::NodeLost | ErrorKind::Timeout => CallEnd::Failed,
        _ => CallEnd::Abandoned,
    }
}
