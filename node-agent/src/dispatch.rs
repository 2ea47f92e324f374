//! One dispatched call: read `Dispatch` + payload from a gateway-opened
//! stream, run the service, answer `Reply` + payload or `Error`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{CallError, Codec, DispatchHead, ErrorKind, Message, ReplyHead};
use transport::{FramedRecv, FramedSend, IoError};

use crate::services::{ServiceError, Services};

/// How long the gateway has to send the `Dispatch` head on a new stream.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The time a call gets when the gateway sets no deadline (`timeout_ms` 0).
pub(crate) const NO_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// Application code the agent stops a call stream's receiving half with when
/// it will not read the rest (refused call, malformed stream).
const STOP_CODE: u32 = 0;

/// The services and limits every call shares.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    pub(crate) services: Services,
    /// Largest accepted payload, bytes.
    pub(crate) max_payload: u64,
}

/// What a call came to, before it is written back.
enum Outcome {
    Reply {
        result: Bytes,
        exec_ms: f32,
    },
    Error(ServiceError),
    /// Nothing to answer: the stream is gone or the gateway cancelled.
    Silent,
}

impl Dispatcher {
    /// Serves one call stream to its end; never panics on peer input.
    pub(crate) async fn handle(self, send: quinn::SendStream, recv: quinn::RecvStream) {
        let codec = Codec::default();
        let mut send = FramedSend::new(send, codec);
        let mut recv = FramedRecv::new(recv, codec);
        let outcome = self.serve(&mut send, &mut recv).await;
        if let Err(e) = answer(&mut send, outcome).await {
            tracing::debug!("answering a call failed: {e}");
        }
    }

    async fn serve(&self, send: &mut FramedSend, recv: &mut FramedRecv) -> Outcome {
        let bad =
            |message: String| Outcome::Error(ServiceError::new(ErrorKind::BadRequest, message));
        let head = match tokio::time::timeout(HEAD_TIMEOUT, recv.recv()).await {
            Ok(Ok(Some(Message::Dispatch(head)))) => head,
            Ok(Ok(Some(other))) => {
                recv.stop(STOP_CODE);
                return bad(format!(
                    "expected a dispatch head, got a {:?} frame",
                    other.kind()
                ));
            }
            Ok(Ok(None)) => return Outcome::Silent,
            Ok(Err(e)) if e.is_connection_lost() => return Outcome::Silent,
            Ok(Err(e)) => {
                recv.stop(STOP_CODE);
                return bad(format!("malformed call stream: {e}"));
            }
            Err(_) => {
                recv.stop(STOP_CODE);
                return bad(format!(
                    "no dispatch head within {} s",
                    HEAD_TIMEOUT.as_secs()
                ));
            }
        };
        let DispatchHead {
            call_id,
            ref service,
            payload_len,
            timeout_ms,
        } = head;
        tracing::debug!(call_id, service, payload_len, timeout_ms, "call dispatched");
        if payload_len > self.max_payload {
            recv.stop(STOP_CODE);
            return Outcome::Error(ServiceError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "payload of {payload_len} bytes exceeds this node's limit of {} bytes",
                    self.max_payload
                ),
            ));
        }
        let slot = match self.services.acquire(service) {
            Ok(slot) => slot,
            Err(e) => {
                recv.stop(STOP_CODE);
                return Outcome::Error(e);
            }
        };
        let payload = match recv.recv_payload(payload_len, self.max_payload).await {
            Ok(payload) => payload,
            Err(e) if e.is_connection_lost() => return Outcome::Silent,
            Err(e) => {
                recv.stop(STOP_CODE);
                return bad(format!("malformed call payload: {e}"));
            }
        };
        let timeout = match timeout_ms {
            0 => NO_DEADLINE,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let started = Instant::now();
        let result = tokio::select! {
            result = slot.run(payload, timeout) => result,
            () = send.stopped() => {
                tracing::debug!(call_id, service, "gateway abandoned the call; stopping it");
                return Outcome::Silent;
            }
        };
        drop(slot);
        let exec_ms = started.elapsed().as_secs_f32() * 1000.0;
        match result {
            Ok(result) => {
                tracing::debug!(call_id, service, exec_ms, len = result.len(), "call done");
                Outcome::Reply { result, exec_ms }
            }
            Err(e) => {
                if e.kind == ErrorKind::Internal {
                    tracing::warn!(call_id, service, "call failed: {e}");
                } else {
                    tracing::debug!(call_id, service, exec_ms, "call failed: {e}");
                }
                Outcome::Error(e)
            }
        }
    }
}

async fn answer(send: &mut FramedSend, outcome: Outcome) -> Result<(), IoError> {
    match outcome {
        Outcome::Reply { result, exec_ms } => {
            let head = ReplyHead {
                payload_len: result.len() as u64,
                exec_ms,
            };
            send.send(&Message::Reply(head)).await?;
            send.send_payload(&result).await?;
        }
        Outcome::Error(ServiceError { kind, message }) => {
            send.send(&Message::Error(CallError { kind, message }))
                .await?;
        }
        Outcome::Silent => {
            send.reset(STOP_CODE);
            return Ok(());
        }
    }
    send.finish()
}
