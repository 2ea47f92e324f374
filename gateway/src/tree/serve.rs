//! A stream the parent opened: an echo wave's `Probe` (answered with this
//! gateway's subtree, [`super::wave`]), or a call.
//!
//! A call the parent dispatched to this gateway: read its `Dispatch` head
//! and payload, run it on this gateway's own call path as the tenant the
//! parent names, and answer as a node does (`Reply`, `Data`, `End`, `Log`
//! or `Error`), the `Reply` naming the path below this gateway. The parent
//! stopping the stream (its caller left, the call timed out) drops the
//! call here: it leaves the queue, or its node's work stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use protocol::{CallError, CallHead, Codec, DispatchHead, ErrorKind, Message, ReplyHead};
use transport::{FramedRecv, FramedSend};

use super::ParentCalls;
use crate::Shared;
use crate::calls::{Request, spawn_from_parent};
use crate::fleet::Node;

/// Longest wait for a dispatch stream's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, after the answer, the parent may take to acknowledge it.
const DELIVERY_WAIT: Duration = Duration::from_secs(2);

/// The tenant of a dispatch that names none (a parent that predates
/// tenants in dispatches).
const NO_TENANT: &str = "_parent";

/// Where a stream comes from.
pub(super) enum Origin {
    /// The parent: its calls (counted in `calls`) and its waves.
    Parent(Arc<ParentCalls>),
    /// A child gateway handing waiting calls up (rebalancing): they run
    /// anywhere but on that child (its key), each taking one of the calls
    /// this gateway asked it for (the credit); it sends no wave.
    Child(switchyard_core::NodeKey, Arc<AtomicU32>),
}

/// Serves a stream a child gateway opened on its connection to this one:
/// a call it hands up (see [`Origin::Child`]).
pub(crate) async fn handed_up(
    shared: Arc<Shared>,
    child: &Node,
    codec: Codec,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let origin = Origin::Child(child.key, child.hand_up_credit.clone());
    call(shared, origin, codec, send, recv).await;
}

/// Serves one stream from the parent (or a child, see [`Origin`]) to its
/// end; never panics on its input.
pub(super) async fn call(
    shared: Arc<Shared>,
    from: Origin,
    codec: Codec,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let mut send = FramedSend::new(send, codec);
    let mut recv = FramedRecv::new(recv, codec);
    let arrived = Instant::now();
    let refuse = |kind: ErrorKind, message: String| Message::Error(CallError::new(kind, message));
    let head = match tokio::time::timeout(HEAD_TIMEOUT, recv.recv()).await {
        Ok(Ok(Some(Message::Dispatch(head)))) => head,
        Ok(Ok(Some(Message::Probe(_)))) if matches!(from, Origin::Child(..)) => {
            let why = "a child gateway sends no wave to its parent";
            return answer(
                &mut send,
                &mut recv,
                refuse(ErrorKind::BadRequest, why.into()),
            )
            .await;
        }
        Ok(Ok(Some(Message::Probe(probe)))) => {
            if let Err(why) = probe.validate() {
                let error = refuse(ErrorKind::BadRequest, why.to_string());
                return answer(&mut send, &mut recv, error).await;
            }
            let subtree = super::wave::answer(&shared, *probe).await;
            return answer(&mut send, &mut recv, Message::Subtree(Box::new(subtree))).await;
        }
        Ok(Ok(Some(Message::Hold(_)))) => {
            let why = "a gateway node takes no lease holds: lease its nodes at its own gateway";
            return answer(
                &mut send,
                &mut recv,
                refuse(ErrorKind::BadRequest, why.into()),
            )
            .await;
        }
        Ok(Ok(Some(other))) => {
            let why = format!("expected a dispatch head, got a {:?} frame", other.kind());
            return answer(&mut send, &mut recv, refuse(ErrorKind::BadRequest, why)).await;
        }
        Ok(Ok(None) | Err(_)) | Err(_) => {
            recv.stop(protocol::codes::reset::CANCELLED);
            return;
        }
    };
    if let Err(why) = head.validate() {
        let error = refuse(ErrorKind::BadRequest, why.to_string());
        return answer(&mut send, &mut recv, error).await;
    }
    let max = shared.config.max_payload_bytes;
    let deadline = Duration::from_millis(u64::from(head.timeout_ms.max(1)));
    let payload = match tokio::time::timeout(deadline, recv.recv_payload(head.payload_len, max))
        .await
    {
        Ok(Ok(payload)) => payload,
        Ok(Err(transport::IoError::PayloadTooLarge { len, max })) => {
            let why = format!("payload of {len} bytes exceeds this gateway's limit of {max} bytes");
            let error = refuse(ErrorKind::PayloadTooLarge, why);
            return answer(&mut send, &mut recv, error).await;
        }
        Ok(Err(_)) => return,
        Err(_) => {
            let error = refuse(
                ErrorKind::Timeout,
                "the payload did not arrive in time".into(),
            );
            return answer(&mut send, &mut recv, error).await;
        }
    };
    let (_counted, exclude) = match &from {
        Origin::Parent(calls) => (Some(calls.enter(&head.service)), None),
        Origin::Child(child, credit) => {
            let asked = credit
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            if !asked {
                let why = "this gateway asked for no more handed-up calls";
                let error = refuse(ErrorKind::BadRequest, why.into());
                return answer(&mut send, &mut recv, error).await;
            }
            (None, Some(*child))
        }
    };
    let tenant: Arc<str> = Arc::from(head.tenant.as_deref().unwrap_or(NO_TENANT));
    let prefix = (!head.prefix_hashes.is_empty()).then(|| Arc::from(&head.prefix_hashes[..]));
    let request = Request {
        head: call_head(head),
        payload,
        arrived,
        prefix,
    };
    let mut frames = match spawn_from_parent(shared, request, tenant, exclude) {
        Ok(frames) => frames,
        Err(refused) => {
            return answer(&mut send, &mut recv, Message::Error(refused.error)).await;
        }
    };
    let gone = send.peer_gone();
    tokio::pin!(gone);
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            () = &mut gone => {
                // Dropping the channel ends the call here.
                return;
            }
        };
        let Some(frame) = frame else { break };
        let sent = match frame {
            Message::Queued(_) | Message::Reserved(_) => Ok(()),
            Message::Result(result) => {
                let mut path = result.via;
                if !result.node_id.is_empty() {
                    path.push(result.node_id);
                }
                path.truncate(protocol::MAX_DEPTH);
                let reply = ReplyHead {
                    payload_len: result.payload_len,
                    exec_ms: result.timings.total_ms,
                    content_type: result.content_type,
                    status: result.status,
                    path,
                    explain: result.explain,
                };
                send.send(&Message::Reply(reply)).await
            }
            Message::Data(chunk) => send.send_payload(&chunk).await,
            Message::Error(error) => {
                let _ = send.send(&Message::Error(error)).await;
                break;
            }
            other => send.send(&other).await,
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(DELIVERY_WAIT, send.stopped()).await;
}

/// The call as this gateway runs it: the parent's dispatch, with the
/// caller's priority and hints; its timeout is what the parent had left.
fn call_head(head: DispatchHead) -> CallHead {
    let mut call = CallHead::new(head.service, head.payload_len, head.timeout_ms.max(1));
    call.hints = head.hints;
    call.priority = head.priority;
    call.endpoint = head.endpoint;
    call.log = head.log;
    call.traceparent = head.traceparent;
    call.request_id = head.request_id;
    call
}

/// Answers `message` (an error, a wave's answer), then ends the stream.
async fn answer(send: &mut FramedSend, recv: &mut FramedRecv, message: Message) {
    recv.stop(protocol::codes::reset::CANCELLED);
    let _ = send.send(&message).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(DELIVERY_WAIT, send.stopped()).await;
}
