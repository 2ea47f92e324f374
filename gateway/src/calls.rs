//! One client call: read it, pick a node with the service's policy, forward
//! it on a new stream of the node's connection, and stream the result back.
//!
//! Retry rule: a call is sent to another node only when opening the stream to
//! the picked node failed, so nothing reached it and it cannot have run. Once
//! the dispatch is sent, a lost node is reported as `node lost`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{CallError, CallHead, DispatchHead, ErrorKind, Message, ResultHead, Timings};
use transport::{FramedRecv, FramedSend, IoError};

use crate::Shared;
use crate::queue::{Grant, WaitState};
use crate::registry::Node;
use crate::scheduler::Admission;

/// Most nodes one call is offered to when streams cannot be opened.
const MAX_DISPATCH_ATTEMPTS: usize = 3;

/// Serves a call whose head was read at `arrived`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    head: CallHead,
    mut send: FramedSend,
    mut recv: FramedRecv,
    arrived: Instant,
) {
    let call_id = shared.next_call_id.fetch_add(1, Ordering::Relaxed);
    let service = head.service.clone();
    match run(&shared, call_id, head, &mut send, &mut recv, arrived).await {
        Ok(()) => {}
        Err(Failure::Reply(error)) => {
            tracing::debug!(call_id, %service, kind = %error.kind, message = %error.message, "call failed");
            // Stop the client's upload if it is still sending (oversized payload).
            recv.stop(0);
            let _ = send.send(&Message::Error(error)).await;
        }
        Err(Failure::Gone) => {
            tracing::debug!(call_id, %service, "client left while the call waited");
            send.reset(crate::RESET_CLIENT_GONE);
            return;
        }
        Err(Failure::Cut(code, why)) => {
            tracing::warn!(call_id, %service, %why, "result stream cut");
            send.reset(code);
            return;
        }
    }
    let _ = send.finish();
}

enum Failure {
    /// Answer the client with this error.
    Reply(CallError),
    /// The result head was already sent: reset the stream with this code.
    Cut(u32, String),
    /// The client went away (stopped the stream, closed the connection).
    Gone,
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Self::Reply(e)
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> CallError {
    CallError {
        kind,
        message: message.into(),
    }
}

async fn run(
    shared: &Shared,
    call_id: u64,
    head: CallHead,
    send: &mut FramedSend,
    recv: &mut FramedRecv,
    arrived: Instant,
) -> Result<(), Failure> {
    head.validate()
        .map_err(|e| error(ErrorKind::BadRequest, e.to_string()))?;
    let max = shared.config.max_payload_bytes;
    if head.payload_len > max {
        return Err(error(
            ErrorKind::PayloadTooLarge,
            format!(
                "payload of {} bytes exceeds the maximum of {max} bytes",
                head.payload_len
            ),
        )
        .into());
    }
    let timeout_ms = head.timeout_ms.clamp(1, shared.config.max_timeout_ms);
    let deadline = arrived + Duration::from_millis(u64::from(timeout_ms));
    let timed_out = || {
        error(
            ErrorKind::Timeout,
            format!("no result within {timeout_ms} ms"),
        )
    };

    let payload =
        tokio::time::timeout_at(deadline.into(), recv.recv_payload(head.payload_len, max))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| error(ErrorKind::BadRequest, format!("reading the payload: {e}")))?;
    let ready = Instant::now();

    let head = Arc::new(head);
    let mut tried = HashSet::new();
    let (guard, picked, dispatched, mut node_send, mut node_recv) = loop {
        let Grant { guard, picked } =
            admit(shared, &head, &tried, call_id, send, deadline, timed_out).await?;
        let node = guard.node().clone();
        let dispatched = Instant::now();
        // The agent caps the streams it accepts (QUIC stream limit): an open
        // beyond it waits for one to close, within the call's time.
        let opened = tokio::time::timeout_at(
            deadline.into(),
            transport::open_bi(&node.connection, shared.codec),
        )
        .await
        .map_err(|_| timed_out())?;
        match opened {
            Ok((node_send, node_recv)) => break (guard, picked, dispatched, node_send, node_recv),
            Err(e) => {
                tracing::warn!(call_id, node = %node.spec.id, error = %e, "cannot open a stream to the node; trying another");
                tried.insert(node.key);
                if tried.len() >= MAX_DISPATCH_ATTEMPTS {
                    return Err(error(
                        ErrorKind::NodeLost,
                        format!("node {} unreachable: {e}", node.spec.id),
                    )
                    .into());
                }
            }
        }
    };
    let node = guard.node().clone();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let dispatch = DispatchHead {
        call_id,
        service: head.service.clone(),
        payload_len: head.payload_len,
        timeout_ms: u32::try_from(remaining.as_millis())
            .unwrap_or(u32::MAX)
            .max(1),
    };
    let outcome = tokio::time::timeout_at(
        deadline.into(),
        exchange(&mut node_send, &mut node_recv, dispatch, payload, max),
    )
    .await;
    let node_ms = ms(dispatched.elapsed());
    let reply = match outcome {
        Err(_) => {
            node_send.reset(crate::RESET_TIMEOUT);
            node_recv.stop(crate::RESET_TIMEOUT);
            finish(shared, &picked, &node, &head.service, node_ms, false);
            return Err(timed_out().into());
        }
        Ok(Err(e)) => {
            finish(shared, &picked, &node, &head.service, node_ms, false);
            return Err(e.into());
        }
        Ok(Ok(reply)) => reply,
    };
    let result = ResultHead {
        payload_len: reply.payload_len,
        node_id: node.spec.id.clone(),
        policy: picked.policy_name.clone(),
        timings: Timings {
            queue_ms: ms(dispatched.duration_since(ready)),
            node_ms,
            total_ms: ms(arrived.elapsed()),
        },
    };
    if send.send(&Message::Result(result)).await.is_err() {
        // The client left; the node's work is done either way.
        finish(shared, &picked, &node, &head.service, node_ms, true);
        return Ok(());
    }
    let relayed = tokio::time::timeout_at(
        deadline.into(),
        relay(&mut node_recv, send, reply.payload_len),
    )
    .await;
    drop(guard);
    match relayed {
        Ok(Ok(())) => {
            finish(shared, &picked, &node, &head.service, node_ms, true);
            Ok(())
        }
        Ok(Err(why)) => {
            finish(shared, &picked, &node, &head.service, node_ms, false);
            Err(Failure::Cut(crate::RESET_NODE_LOST, why))
        }
        Err(_) => {
            finish(shared, &picked, &node, &head.service, node_ms, false);
            Err(Failure::Cut(
                crate::RESET_TIMEOUT,
                "timeout while relaying the result".into(),
            ))
        }
    }
}

/// Gets the call a slot: at once, or after waiting in the queue, telling the
/// client its position as it changes. Leaving (timeout, client gone) drops
/// the ticket, which takes the call out of the queue.
async fn admit(
    shared: &Shared,
    head: &Arc<CallHead>,
    tried: &HashSet<u32>,
    seq: u64,
    send: &mut FramedSend,
    deadline: Instant,
    timed_out: impl Fn() -> CallError,
) -> Result<Grant, Failure> {
    let mut ticket = match shared.scheduler.admit(head, tried, seq, Instant::now())? {
        Admission::Granted(grant) => return Ok(grant),
        Admission::Queued(ticket) => ticket,
    };
    let gone = send.peer_gone();
    tokio::pin!(gone);
    let mut updates = true;
    loop {
        tokio::select! {
            biased;
            granted = &mut ticket.handle.grant => {
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
                if send.send(&frame).await.is_err() {
                    return Err(Failure::Gone);
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => return Err(timed_out().into()),
            () = &mut gone => return Err(Failure::Gone),
        }
    }
}

/// The node's answer to a dispatch.
struct Reply {
    payload_len: u64,
}

/// Sends the dispatch and payload to the node and reads its answer's head.
async fn exchange(
    send: &mut FramedSend,
    recv: &mut FramedRecv,
    dispatch: DispatchHead,
    payload: Bytes,
    max: u64,
) -> Result<Reply, CallError> {
    let lost = |e: IoError| error(ErrorKind::NodeLost, format!("node connection failed: {e}"));
    let upload = async {
        send.send(&Message::Dispatch(dispatch)).await?;
        send.send_payload(&payload).await?;
        send.finish()
    };
    match upload.await {
        // The agent refused early (unknown service, full, too large) and
        // stopped our upload: its answer on the other half says why.
        Ok(()) | Err(IoError::Reset(_)) => {}
        Err(e) => return Err(lost(e)),
    }
    match recv.recv().await {
        Ok(Some(Message::Reply(reply))) if reply.payload_len <= max => Ok(Reply {
            payload_len: reply.payload_len,
        }),
        Ok(Some(Message::Reply(reply))) => Err(error(
            ErrorKind::PayloadTooLarge,
            format!(
                "result of {} bytes exceeds the maximum of {max} bytes",
                reply.payload_len
            ),
        )),
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

/// Copies `len` result bytes from the node to the client, chunk by chunk.
async fn relay(from: &mut FramedRecv, to: &mut FramedSend, len: u64) -> Result<(), String> {
    let mut left = len;
    while left > 0 {
        match from.recv().await {
            Ok(Some(Message::Data(chunk))) if chunk.len() as u64 <= left => {
                left -= chunk.len() as u64;
                to.send(&Message::Data(chunk))
                    .await
                    .map_err(|e| format!("client stream failed: {e}"))?;
            }
            Ok(Some(Message::Data(_))) => return Err("node result overran its length".into()),
            Ok(Some(other)) => {
                return Err(format!("unexpected {:?} frame in a result", other.kind()));
            }
            Ok(None) => return Err(format!("node result ended {left} bytes early")),
            Err(e) => return Err(format!("node lost mid-result: {e}")),
        }
    }
    Ok(())
}

fn finish(
    shared: &Shared,
    picked: &crate::policies::Picked,
    node: &Node,
    service: &str,
    node_ms: f32,
    ok: bool,
) {
    if ok {
        node.record_latency(service, node_ms);
    }
    shared
        .policies
        .observe(picked, service, node.key, node_ms, ok);
}

fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1000.0
}
