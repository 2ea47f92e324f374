//! Relaying a node's result to the caller chunk by chunk, as it arrives:
//! nothing waits for the whole result.
//!
//! A result of known length is `payload_len` bytes of `Data`; a streamed
//! one is `Data` chunks until the node's `End` (forwarded as ours) or its
//! `Error` (the service failed midway: forwarded after the chunks already
//! sent). The call's deadline covers the relay; a caller that leaves or a
//! deadline that passes stops the node's work (the node stream is reset).
//!
//! A call that asked for its log (`CallHead::log`) also gets the node's
//! `Log` frames, in the order they came among the `Data` ones; they do not
//! count towards the result's length. Without asking, any are dropped.

use protocol::{Message, Trailer};
use switchyard_core::CallEnd;

use super::kernel::{Answered, node_fault};
use super::{Call, Caller, Failure};

/// What ended a relay early.
enum Stop {
    /// The caller left.
    Gone,
    /// The node broke the stream or vanished.
    Node(String),
    /// The service failed midway (streamed result).
    Failed(protocol::CallError),
}

/// Relays `answered`'s result to `caller` within the call's deadline, then
/// frees the node's slot and tells the policy how it went.
pub(super) async fn relay(
    call: &Call<'_>,
    mut answered: Answered,
    caller: &mut impl Caller,
) -> Result<(), Failure> {
    let mut span = call.trace.relay();
    let gone = caller.gone();
    tokio::pin!(gone);
    let copied = async {
        tokio::select! {
            copied = copy(&mut answered, caller, call.head.log) => copied,
            () = &mut gone => Err(Stop::Gone),
        }
    };
    let copied = tokio::time::timeout_at(call.deadline.into(), copied).await;
    if span.is_recording() {
        match &copied {
            Ok(Ok(())) => {}
            Ok(Err(Stop::Gone)) => span.fail("the caller left"),
            Ok(Err(Stop::Node(why))) => span.fail(why.clone()),
            Ok(Err(Stop::Failed(e))) => span.fail(format!("{}: {}", e.kind, e.message)),
            Err(_) => span.fail("timeout"),
        }
    }
    span.end();
    match copied {
        Ok(Ok(())) => {
            answered.finish(call, CallEnd::Ok);
            Ok(())
        }
        Ok(Err(Stop::Gone)) => {
            answered.cancel(protocol::codes::reset::CLIENT_GONE);
            answered.finish(call, CallEnd::Abandoned);
            Err(Failure::Gone)
        }
        Ok(Err(Stop::Node(why))) => {
            answered.cancel(protocol::codes::reset::NODE_LOST);
            answered.finish(call, CallEnd::Failed);
            Err(Failure::Cut(protocol::codes::reset::NODE_LOST, why))
        }
        Ok(Err(Stop::Failed(e))) => {
            answered.finish(call, node_fault(&e));
            Err(Failure::Reply(e))
        }
        Err(_) => {
            answered.cancel(protocol::codes::reset::TIMEOUT);
            answered.finish(call, CallEnd::Failed);
            Err(Failure::Cut(
                protocol::codes::reset::TIMEOUT,
                format!("timeout while relaying the result ({} ms)", call.timeout_ms),
            ))
        }
    }
}

/// Copies frames from the node to the caller until the result's end, its
/// `Log` frames too when `log`.
async fn copy(answered: &mut Answered, caller: &mut impl Caller, log: bool) -> Result<(), Stop> {
    let mut left = answered.payload_len;
    let mut sent = 0u64;
    loop {
        if left == Some(0) {
            return Ok(());
        }
        let frame = answered
            .node_recv
            .recv()
            .await
            .map_err(|e| Stop::Node(format!("node lost mid-result: {e}")))?;
        match (frame, left.as_mut()) {
            (Some(Message::Log(chunk)), _) => {
                if log {
                    caller
                        .send(Message::Log(chunk))
                        .await
                        .map_err(|_| Stop::Gone)?;
                }
            }
            (Some(Message::Data(chunk)), Some(left)) if chunk.len() as u64 > *left => {
                return Err(Stop::Node("node result overran its length".into()));
            }
            (Some(Message::Data(chunk)), left) => {
                if let Some(left) = left {
                    *left -= chunk.len() as u64;
                }
                sent += chunk.len() as u64;
                caller
                    .send(Message::Data(chunk))
                    .await
                    .map_err(|_| Stop::Gone)?;
            }
            (Some(Message::End(trailer)), None) => {
                if trailer.len != sent {
                    return Err(Stop::Node(format!(
                        "node result ended after {sent} bytes but says {}",
                        trailer.len
                    )));
                }
                // The latency the policy and the EWMA learn is the whole
                // result's, not its first chunk's.
                answered.node_ms = answered.dispatched.elapsed().as_secs_f32() * 1000.0;
                return caller
                    .send(Message::End(Trailer {
                        len: sent,
                        exec_ms: answered.node_ms,
                    }))
                    .await
                    .map_err(|_| Stop::Gone);
            }
            (Some(Message::Error(e)), None) => return Err(Stop::Failed(e)),
            (Some(other), _) => {
                return Err(Stop::Node(format!(
                    "unexpected {:?} frame in a result",
                    other.kind()
                )));
            }
            (None, Some(left)) => {
                return Err(Stop::Node(format!("node result ended {left} bytes early")));
            }
            (None, None) => {
                return Err(Stop::Node("node result ended without its end frame".into()));
            }
        }
    }
}
