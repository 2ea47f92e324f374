//! One dispatched call: read `Dispatch` + payload from a gateway-opened
//! stream, run the service, answer `Reply` + payload or `Error`. A stream
//! whose first frame is `Hold` holds a slot for a lease instead
//! ([`crate::leases`]). The answer's writing ([`crate::answer`]) is
//! shared with the direct calls of leases.
//!
//! A streamed result (a command's stdout, an HTTP body) is relayed as it
//! comes: the `Reply` head (with `payload_len: None`) goes with the first
//! chunk, then each chunk as a `Data` frame, then `End`, or `Error` when the
//! service fails midway. A service that fails before writing anything
//! answers a plain `Error`. When the gateway stops the stream (the caller
//! left or timed out), the work is dropped: the command killed, the HTTP
//! request aborted.
//!
//! A call whose head asked for its log (`DispatchHead::log`) also gets a
//! command's stderr as `Log` frames among the `Data` ones, as it is written;
//! the `Reply` head goes before the first of either.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{Codec, DispatchHead, ErrorKind, Message, ReplyHead};
use tracing::Instrument as _;
use transport::{FramedRecv, FramedSend, IoError};

use crate::answer::{DELIVERY_WAIT, HEAD_TIMEOUT, NO_DEADLINE, STOP_CODE, ms, write_reply};
use crate::leases::Leases;
use crate::prefix_blocks::PrefixBlocks;
use crate::services::{Reply, ServiceError, Services, Slot, Tally};

/// The services and limits every call shares.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    pub(crate) services: Services,
    /// Largest accepted payload, bytes.
    pub(crate) max_payload: u64,
    /// Calls' spans (`[tracing]`; makes none when off).
    pub(crate) tracer: otel::Tracer,
    /// The prefix blocks of the calls served, reported to the gateways.
    pub(crate) prefix: PrefixBlocks,
    /// The leases this node holds (look-aside calls).
    pub(crate) leases: Leases,
}

/// What a call came to, before it is written back.
enum Outcome {
    /// The service answered; its body may still be streaming.
    Reply {
        reply: Reply,
        /// Held until the body ends: the call is in flight until then.
        slot: Slot,
        started: Instant,
        call_id: u64,
    },
    Error(ServiceError),
    /// Nothing to answer: the stream is gone or the gateway cancelled.
    Silent,
    /// The stream holds a slot for a lease: the lease table takes it.
    Hold(protocol::LeaseHold),
}

impl Dispatcher {
    /// Serves one call stream to its end; never panics on peer input.
    /// `codec` is of the connection's negotiated wire version; `tally`
    /// counts the slot as the session's (its load reports tell the other
    /// gateways' calls apart).
    pub(crate) async fn handle(
        self,
        tally: Arc<Tally>,
        codec: Codec,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) {
        // Every line logged about the call carries its id, service and
        // request id (filled in once the head is read).
        let span = tracing::info_span!(
            "call",
            call_id = tracing::field::Empty,
            service = tracing::field::Empty,
            request_id = tracing::field::Empty
        );
        let mut send = FramedSend::new(send, codec);
        let mut recv = FramedRecv::new(recv, codec);
        async move {
            // The service call's span, from its head to its answer's end.
            let mut trace = otel::Span::none();
            let outcome = self.serve(&tally, &mut send, &mut recv, &mut trace).await;
            if let Outcome::Hold(hold) = outcome {
                self.leases
                    .hold(&self.services, &tally, send, recv, hold)
                    .await;
                return;
            }
            if let (true, Outcome::Error(e)) = (trace.is_recording(), &outcome) {
                trace.fail(format!("{}: {}", e.kind, e.message));
            }
            if let Err(e) = answer(&mut send, outcome).await {
                trace.fail(format!("answering: {e}"));
                tracing::debug!("answering a call failed: {e}");
                return;
            }
            trace.end();
            // The call ends when the gateway has the answer: a draining agent
            // closes its connection only after this.
            let _ = tokio::time::timeout(DELIVERY_WAIT, send.stopped()).await;
        }
        .instrument(span)
        .await;
    }

    /// Reads the call and runs it; `trace` becomes its span once its head
    /// is read.
    async fn serve(
        &self,
        tally: &Arc<Tally>,
        send: &mut FramedSend,
        recv: &mut FramedRecv,
        trace: &mut otel::Span,
    ) -> Outcome {
        let bad =
            |message: String| Outcome::Error(ServiceError::new(ErrorKind::BadRequest, message));
        let head = match tokio::time::timeout(HEAD_TIMEOUT, recv.recv()).await {
            Ok(Ok(Some(Message::Dispatch(head)))) => head,
            Ok(Ok(Some(Message::Hold(hold)))) => return Outcome::Hold(hold),
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
            ..
        } = head;
        let span = tracing::Span::current();
        span.record("call_id", call_id);
        span.record("service", service.as_str());
        if let Some(request_id) = &head.request_id {
            span.record("request_id", tracing::field::display(request_id));
        }
        tracing::debug!(call_id, service, payload_len, timeout_ms, "call dispatched");
        if let Err(e) = head.validate() {
            recv.stop(STOP_CODE);
            return bad(e.to_string());
        }
        *trace = self.tracer.span(
            "service call",
            otel::Kind::Server,
            &otel::Parent::from_traceparent(head.traceparent.as_deref()),
            std::time::SystemTime::now(),
            || {
                let mut attributes = vec![
                    otel::KeyValue::new("switchyard.service", service.clone()),
                    otel::KeyValue::new("switchyard.call_id", call_id.to_string()),
                ];
                if let Some(id) = &head.request_id {
                    attributes.push(otel::KeyValue::new("switchyard.request_id", id.clone()));
                }
                attributes
            },
        );
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
        let mut slot = match self.services.acquire_for(service, tally) {
            Ok(slot) => slot,
            Err(e) => {
                recv.stop(STOP_CODE);
                return Outcome::Error(e);
            }
        };
        if head.job {
            slot.count_as_job();
        }
        // The call's time counts from its head: the payload's upload too.
        let timeout = match timeout_ms {
            0 => NO_DEADLINE,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let read = recv.recv_payload(payload_len, self.max_payload);
        let payload = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(payload)) => payload,
            Ok(Err(e)) if e.is_connection_lost() => return Outcome::Silent,
            Ok(Err(e)) => {
                recv.stop(STOP_CODE);
                return bad(format!("malformed call payload: {e}"));
            }
            Err(_) => {
                recv.stop(STOP_CODE);
                return Outcome::Error(ServiceError::timeout(timeout));
            }
        };
        let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
        let started = Instant::now();
        let traceparent = trace.traceparent();
        let result = tokio::select! {
            result = slot.run_traced(
                payload,
                timeout,
                head.endpoint.as_deref(),
                head.log,
                traceparent.as_deref(),
            ) => result,
            () = send.stopped() => {
                tracing::debug!(call_id, service, "gateway abandoned the call; stopping it");
                return Outcome::Silent;
            }
        };
        match result {
            Ok(reply) => {
                // The model server now holds the prompt's blocks.
                self.prefix.record(service, &head.prefix_hashes);
                Outcome::Reply {
                    reply,
                    slot,
                    started,
                    call_id,
                }
            }
            Err(e) => {
                let exec_ms = started.elapsed().as_secs_f32() * 1000.0;
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
        Outcome::Reply {
            reply,
            slot,
            started,
            call_id,
        } => {
            let (content_type, status) = (reply.content_type.clone(), reply.status);
            let head = |payload_len, exec_ms| {
                Message::Reply(ReplyHead {
                    payload_len,
                    exec_ms,
                    content_type: content_type.clone(),
                    status,
                    explain: None,
                    path: Vec::new(),
                })
            };
            // The slot is free before the gateway can see the call end: a
            // call it sends next never finds this node full of this one.
            // (The call's span names the service.)
            if !write_reply(send, reply, started, head, move || drop(slot)).await? {
                tracing::debug!(call_id, "gateway abandoned the call; stopped it");
                send.reset(STOP_CODE);
                return Ok(());
            }
            tracing::debug!(call_id, exec_ms = ms(started), "call done");
        }
        Outcome::Error(e) => {
            send.send(&Message::Error(e.into_call_error())).await?;
        }
        Outcome::Silent | Outcome::Hold(_) => {
            send.reset(STOP_CODE);
            return Ok(());
        }
    }
    send.finish()
}
