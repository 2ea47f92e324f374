//! Sending a call to a gateway, and sending it to another gateway when it
//! did not run where it went.
//!
//! A call moves to another gateway, within its deadline, when nothing of
//! it can have run: its stream could not be opened or written, the
//! connection was lost before the gateway acknowledged all of the call,
//! or the gateway refused it (`shutting down`, or an error marked
//! `not_run` that is not the caller's fault). Once the gateway had the
//! whole call, a lost connection ends the call with
//! [`ClientError::GatewayLost`], unless the call is idempotent.

use std::sync::Arc;

use bytes::Bytes;
use protocol::{CallHead, ErrorKind, Message, Side};
use transport::{FramedSend, IoError};

use super::{CallEvent, CallOptions, Deadline, Open, Source};
use crate::pool::{Gateway, PooledRecv};
use crate::{Client, ClientError, ResultMeta, unexpected};

/// How one attempt at a gateway failed.
#[derive(Debug)]
enum Failed {
    /// Nothing ran there: the call may go to another gateway.
    NotRun(ClientError),
    /// The connection was lost after the gateway had the call: it may
    /// have run.
    Lost(ClientError),
    /// The call's answer (a typed error, a protocol error).
    Final(ClientError),
}

/// What a request sent like a call asks the gateway for: each attempt's
/// first frame, made from the head with that attempt's time left.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Request {
    /// A call (`Call` + `Data`), answered by `Result`.
    Call,
    /// A lease (`Lease`), answered by `Leased`.
    Lease {
        /// Calls the lease serves.
        max_calls: u32,
        /// Idle timeout, ms (0: none).
        idle_ms: u32,
        /// Lifetime, ms (0: the gateway's default).
        ttl_ms: u32,
    },
}

impl Request {
    fn message(self, head: &CallHead) -> Message {
        match self {
            Self::Call => Message::Call(head.clone()),
            Self::Lease {
                max_calls,
                idle_ms,
                ttl_ms,
            } => Message::Lease(protocol::LeaseRequest {
                head: head.clone(),
                max_calls,
                idle_ms,
                ttl_ms,
            }),
        }
    }
}

impl Client {
    /// Sends the call and its payload, reports its events, and returns the
    /// result's head with the stream still open, sending the call to
    /// another gateway while it did not run (see the module's rules).
    pub(super) async fn start(
        &self,
        service: &str,
        payload: Bytes,
        options: CallOptions,
        on_event: impl FnMut(CallEvent) + Send,
        deadline: Deadline,
    ) -> Result<(ResultMeta, Open), ClientError> {
        let idempotent = options.idempotent;
        let head = options.into_head(service, payload.len() as u64);
        let (answer, mut open) = self
            .send_request(
                Request::Call,
                head,
                &payload,
                idempotent,
                on_event,
                deadline,
            )
            .await?;
        match answer {
            Message::Result(head) => {
                open.left = head.payload_len;
                Ok((head, open))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Sends `request` (with `head`, the client's API key and the time
    /// left, and `payload`), reports its events, and returns the gateway's
    /// answer (a `Result` or `Leased` frame) with the stream still open,
    /// sending it to another gateway while it did not run (see the
    /// module's rules).
    pub(crate) async fn send_request(
        &self,
        request: Request,
        mut head: CallHead,
        payload: &Bytes,
        idempotent: bool,
        mut on_event: impl FnMut(CallEvent) + Send,
        deadline: Deadline,
    ) -> Result<(Message, Open), ClientError> {
        head.api_key = self.config.api_key.clone();
        // Each gateway at most once (the one that failed is tried last).
        let mut attempts = self.pool.gateway_count().max(1);
        let mut avoid: Option<Arc<Gateway>> = None;
        loop {
            // The wait for a stream counts against the call's time; the
            // gateway gets what is left.
            let (send, recv) =
                tokio::time::timeout_at(deadline.at, self.pool.open(self.codec, avoid.as_ref()))
                    .await
                    .map_err(|_| deadline.passed(false))??;
            head.timeout_ms = match deadline.left_ms() {
                0 => return Err(deadline.passed(false)),
                left => left,
            };
            let gateway = Arc::clone(recv.gateway());
            let first = request.message(&head);
            let failed = match self
                .exchange(&first, payload, send, recv, &mut on_event)
                .await
            {
                Ok(started) => return Ok(started),
                Err(failed) => failed,
            };
            attempts -= 1;
            let error = match failed {
                Failed::Final(e) => return Err(e),
                Failed::NotRun(e) => e,
                Failed::Lost(e) if idempotent && attempts > 0 => e,
                Failed::Lost(e) => return Err(gateway_lost(&gateway, &e)),
            };
            if attempts == 0 {
                return Err(match error {
                    // Nothing of it reached the gateway: safe to call again.
                    ClientError::Io(e @ IoError::ConnectionLost(_)) => {
                        ClientError::Connect(format!(
                            "{}: connection lost before the gateway had the call: {e}",
                            gateway.address()
                        ))
                    }
                    other => other,
                });
            }
            tracing::debug!(
                gateway = gateway.address(),
                %error,
                "the call did not complete there; sending it to another gateway"
            );
            avoid = Some(gateway);
        }
    }

    /// Sends one call on an open stream and reads up to its result's head.
    async fn exchange(
        &self,
        first: &Message,
        payload: &Bytes,
        mut send: FramedSend,
        mut recv: PooledRecv,
        on_event: &mut (impl FnMut(CallEvent) + Send),
    ) -> Result<(Message, Open), Failed> {
        // The gateway may refuse early (payload too large) and stop our upload;
        // its answer is what matters, so read it even if the upload fails.
        // The head and a small payload leave in one write.
        let upload_result = match send.send_with_payload(first, payload).await {
            // The head did not encode: nothing was sent.
            Err(e @ IoError::Codec(_)) => return Err(Failed::Final(e.into())),
            Err(e) => Err(e),
            Ok(()) => send.finish(),
        };
        // Whether the gateway's QUIC stack acknowledged the whole call, or
        // answered with an event: from then on the call may run there.
        let mut delivered = std::pin::pin!(send.delivered());
        let mut watching = true;
        let mut reached = false;
        let answer = loop {
            tokio::select! {
                biased;
                acked = &mut delivered, if watching => {
                    watching = false;
                    reached |= acked;
                }
                frame = recv.recv() => match frame {
                    Ok(Some(Message::Queued(position))) => {
                        reached = true;
                        on_event(CallEvent::Queued { position });
                    }
                    Ok(Some(Message::Reserved(r))) => {
                        reached = true;
                        on_event(CallEvent::Reserved {
                            node_id: r.node_id,
                            from: r.from,
                            expected_ms: r.expected_ms,
                        });
                    }
                    other => break other,
                },
            }
        };
        let gateway = recv.gateway();
        let answer = match (answer, upload_result) {
            (Ok(Some(answer @ (Message::Result(_) | Message::Leased(_)))), _) => answer,
            (Ok(Some(Message::Error(e))), _) => {
                if e.kind == ErrorKind::ShuttingDown {
                    self.pool.shutting_down(gateway);
                    return Err(Failed::NotRun(e.into()));
                }
                if e.not_run && e.kind.side() != Side::Client {
                    return Err(Failed::NotRun(e.into()));
                }
                return Err(Failed::Final(e.into()));
            }
            (Ok(Some(other)), _) => return Err(Failed::Final(unexpected(&other))),
            (Ok(None), Err(e)) | (Err(_), Err(e)) | (Err(e), Ok(())) => {
                if !matches!(e, IoError::ConnectionLost(_)) {
                    return Err(Failed::Final(e.into()));
                }
                // Mark the gateway down now, and ask for the member list.
                self.pool.check(gateway);
                return Err(if reached {
                    Failed::Lost(e.into())
                } else {
                    Failed::NotRun(e.into())
                });
            }
            (Ok(None), Ok(())) => {
                return Err(Failed::Final(ClientError::Protocol(
                    "gateway closed the call without answering".into(),
                )));
            }
        };
        Ok((
            answer,
            Open {
                send,
                recv: Source::Gateway(recv),
                left: None,
                done: false,
            },
        ))
    }
}

/// The error of a call whose gateway was lost after it had the call.
fn gateway_lost(gateway: &Gateway, error: &ClientError) -> ClientError {
    ClientError::GatewayLost {
        gateway: gateway.address().to_string(),
        message: error.to_string(),
    }
}

/// `error` from reading a result: a lost connection is the gateway lost
/// mid-call.
pub(super) fn reading(error: IoError, gateway: &Gateway) -> ClientError {
    match error {
        IoError::ConnectionLost(_) => gateway_lost(gateway, &ClientError::Io(error)),
        other => other.into(),
    }
}
