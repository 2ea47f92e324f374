//! Writing a call's answer on its stream, shared by the calls gateways
//! dispatch and the direct calls of leases: a whole result as its head and
//! payload, a streamed one as the head with its first chunk, each chunk as
//! it comes, then `End` (or `Error`).

use std::time::{Duration, Instant};

use protocol::{Message, Trailer};
use transport::{FramedSend, IoError};

use crate::services::{Body, Item, Reply};

/// How long a peer has to send a call's head on a new stream.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait, after a call's answer is written, for the peer to
/// acknowledge it (the call's task, and so the drain, waits for it).
pub(crate) const DELIVERY_WAIT: Duration = Duration::from_secs(2);

/// The time a call gets when the gateway sets no deadline (`timeout_ms` 0).
pub(crate) const NO_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// Application code the agent stops a call stream's receiving half with when
/// it will not read the rest (refused call, malformed stream).
pub(crate) const STOP_CODE: u32 = protocol::codes::reset::CANCELLED;

/// Writes a service's answer (not finishing the stream): a whole result as
/// its head and payload; a streamed one as the head with the first chunk
/// (of the result or of the log), each chunk as it comes (log chunks as
/// `Log` frames), then `End` (or `Error`; a plain `Error` when the service
/// failed before writing anything, a head with an empty result when it
/// wrote nothing). `head` makes the head frame from the result's length
/// (`None`: streamed) and the service's time so far, ms. `done` runs once
/// the service has produced all of its answer, before the frame that ends
/// it goes out: what the call held can be given back before the peer can
/// see the end (a session lease's next call may follow at once). Returns
/// false when the peer stopped reading (the work is dropped with the body).
///
/// # Errors
/// [`IoError`] when the stream breaks.
pub(crate) async fn write_reply(
    send: &mut FramedSend,
    reply: Reply,
    started: Instant,
    head: impl Fn(Option<u64>, f32) -> Message,
    done: impl FnOnce(),
) -> Result<bool, IoError> {
    match reply.body {
        Body::Whole(result) => {
            let head = head(Some(result.len() as u64), ms(started));
            done();
            send.send_with_payload(&head, &result).await?;
            Ok(true)
        }
        Body::Stream(chunks) => stream(send, head, chunks, started, done).await,
    }
}

/// Relays a streamed body, as [`write_reply`] says.
async fn stream(
    send: &mut FramedSend,
    head: impl Fn(Option<u64>, f32) -> Message,
    mut chunks: crate::services::Chunks,
    started: Instant,
    done: impl FnOnce(),
) -> Result<bool, IoError> {
    let mut done = Some(done);
    let gone = send.peer_gone();
    tokio::pin!(gone);
    let mut len = 0u64;
    let mut head_sent = false;
    loop {
        let item = tokio::select! {
            item = chunks.next_item() => item,
            () = &mut gone => return Ok(false),
        };
        match item {
            Some(Ok(Item::Log(chunk))) => {
                if !head_sent {
                    send.send(&head(None, ms(started))).await?;
                    head_sent = true;
                }
                send.send(&Message::Log(chunk)).await?;
            }
            Some(Ok(Item::Data(chunk))) => {
                if !head_sent {
                    send.send(&head(None, ms(started))).await?;
                    head_sent = true;
                }
                len += chunk.len() as u64;
                send.send_payload(&chunk).await?;
            }
            Some(Err(e)) => {
                if let Some(done) = done.take() {
                    done();
                }
                send.send(&Message::Error(e.into_call_error())).await?;
                return Ok(true);
            }
            None if !head_sent => {
                let head = head(Some(0), ms(started));
                if let Some(done) = done.take() {
                    done();
                }
                send.send(&head).await?;
                return Ok(true);
            }
            None => {
                let exec_ms = ms(started);
                if let Some(done) = done.take() {
                    done();
                }
                send.send(&Message::End(Trailer { len, exec_ms })).await?;
                return Ok(true);
            }
        }
    }
}

pub(crate) fn ms(since: Instant) -> f32 {
    since.elapsed().as_secs_f32() * 1000.0
}
