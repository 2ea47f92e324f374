//! One direct call: `Call(CallHead)` with a lease token + `Data` from a
//! client on the direct port, checked against the token and the lease, run
//! on the lease's slot, answered as a gateway answers a call (`Result` +
//! `Data` [+ `End`], or `Error`).

use std::time::{Duration, Instant};

use protocol::{CallHead, ErrorKind, LeaseClaims, Message, ResultHead, Timings, TokenError};
use tracing::Instrument as _;
use transport::{FramedRecv, FramedSend};

use super::direct::DirectCalls;
use super::{Leases, Running};
use crate::answer::{DELIVERY_WAIT, HEAD_TIMEOUT, NO_DEADLINE, STOP_CODE, ms, write_reply};
use crate::services::ServiceError;

/// Serves one direct call stream to its end; never panics on peer input.
pub(super) async fn serve(calls: DirectCalls, mut send: FramedSend, mut recv: FramedRecv) {
    let arrived = Instant::now();
    let span = tracing::info_span!(
        "direct call",
        lease_id = tracing::field::Empty,
        request_id = tracing::field::Empty
    );
    async move {
        let why = match tokio::time::timeout(HEAD_TIMEOUT, recv.recv()).await {
            Ok(Ok(Some(Message::Call(head)))) => Ok(head),
            Ok(Ok(None)) => return,
            Ok(Err(e)) if e.is_connection_lost() => return,
            Ok(Ok(Some(other))) => Err(format!(
                "expected a call head, got a {:?} frame",
                other.kind()
            )),
            Ok(Err(e)) => Err(format!("malformed call stream: {e}")),
            Err(_) => Err(format!("no call head within {} s", HEAD_TIMEOUT.as_secs())),
        };
        let head = match why {
            Ok(head) => head,
            Err(why) => {
                let e = ServiceError::new(ErrorKind::BadRequest, why);
                return refuse(&mut send, &mut recv, e).await;
            }
        };
        if let Some(id) = &head.request_id {
            tracing::Span::current().record("request_id", tracing::field::display(id));
        }
        let running = match admit(&calls.leases, &head, calls.max_payload) {
            Ok(running) => running,
            Err(e) => {
                tracing::debug!(service = %head.service, "direct call refused: {e}");
                return refuse(&mut send, &mut recv, e).await;
            }
        };
        tracing::Span::current().record(
            "lease_id",
            tracing::field::display(&running.lease().hold.lease_id),
        );
        run(&calls, head, running, &mut send, &mut recv, arrived).await;
    }
    .instrument(span)
    .await;
}

/// The checks of a direct call, in order; each refusal says why. On
/// success the call counts on the lease and holds its slot.
fn admit(leases: &Leases, head: &CallHead, agent_max: u64) -> Result<Running, ServiceError> {
    let unauthorized = |m: String| ServiceError::new(ErrorKind::Unauthorized, m);
    head.validate()
        .map_err(|e| ServiceError::new(ErrorKind::BadRequest, e.to_string()))?;
    let token = head
        .lease
        .as_deref()
        .ok_or_else(|| unauthorized("a direct call needs a lease token".into()))?;
    let claims = LeaseClaims::verify(token, |id| leases.keys().find(id)).map_err(|e| match e {
        TokenError::Malformed(_) | TokenError::UnknownKey(_) | TokenError::BadSignature => {
            unauthorized(e.to_string())
        }
    })?;
    if claims.node_id != leases.node_id() {
        return Err(unauthorized(format!(
            "lease token is for node {}, this is node {}",
            claims.node_id,
            leases.node_id()
        )));
    }
    if claims.service != head.service {
        return Err(unauthorized(format!(
            "lease token is for service {}",
            claims.service
        )));
    }
    let lease = leases.find(&claims)?;
    if !lease.matches(&claims) {
        return Err(unauthorized(
            "lease token does not match the lease held (tenant or calls)".into(),
        ));
    }
    if claims.expires_unix_ms < super::unix_ms() {
        return Err(ServiceError::new(ErrorKind::LeaseEnded, "lease expired"));
    }
    lease.begin(head.payload_len, agent_max)
}

/// Reads the payload, runs the call on the lease's slot and answers.
async fn run(
    calls: &DirectCalls,
    head: CallHead,
    mut running: Running,
    send: &mut FramedSend,
    recv: &mut FramedRecv,
    arrived: Instant,
) {
    let lease = std::sync::Arc::clone(running.lease());
    let limit = lease.max_payload(calls.max_payload);
    let timeout = match head.timeout_ms {
        0 => NO_DEADLINE,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let payload =
        match tokio::time::timeout_at(deadline, recv.recv_payload(head.payload_len, limit)).await {
            Ok(Ok(payload)) => payload,
            Ok(Err(e)) if e.is_connection_lost() => return,
            Ok(Err(e)) => {
                let e = ServiceError::new(
                    ErrorKind::BadRequest,
                    format!("malformed call payload: {e}"),
                );
                return refuse(send, recv, e).await;
            }
            Err(_) => return refuse(send, recv, ServiceError::timeout(timeout)).await,
        };
    let Some(slot) = running.slot() else {
        return refuse(send, recv, ServiceError::internal("lease slot missing")).await;
    };
    let started = Instant::now();
    let mut trace = calls.tracer.span(
        "service call",
        otel::Kind::Server,
        &otel::Parent::from_traceparent(head.traceparent.as_deref()),
        std::time::SystemTime::now(),
        || {
            vec![
                otel::KeyValue::new("switchyard.service", head.service.clone()),
                otel::KeyValue::new("switchyard.lease_id", lease.hold.lease_id.clone()),
            ]
        },
    );
    let traceparent = trace.traceparent();
    let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
    let result = tokio::select! {
        result = slot.run_traced(payload, timeout, head.endpoint.as_deref(), false, traceparent.as_deref()) => Some(result),
        () = send.stopped() => None,
    };
    running.busy_ms = ms(started);
    let reply = match result {
        Some(Ok(reply)) => reply,
        Some(Err(e)) => {
            trace.fail(format!("{}: {}", e.kind, e.message));
            drop(running);
            if send
                .send(&Message::Error(e.into_call_error()))
                .await
                .is_ok()
            {
                let _ = send.finish();
            }
            return;
        }
        None => {
            tracing::debug!("client abandoned the direct call; stopped it");
            return;
        }
    };
    let (content_type, status) = (reply.content_type.clone(), reply.status);
    let node_id = calls.leases.node_id().to_owned();
    let head_of = |payload_len, exec_ms| {
        Message::Result(ResultHead {
            payload_len,
            node_id: node_id.clone(),
            policy: lease.policy().to_owned(),
            timings: Timings {
                queue_ms: 0.0,
                node_ms: exec_ms,
                total_ms: ms(arrived),
                attempts: 1,
            },
            cache: None,
            content_type: content_type.clone(),
            status,
            explain: None,
            request_id: head.request_id.clone(),
            via: Vec::new(),
        })
    };
    // The slot goes back before the frame that ends the answer: the lease's
    // next call may come as soon as the client has read it. The last call's
    // goes back once that frame is out: ending the lease (the slot, the
    // gateway told) need not delay the answer.
    let last = running.is_last();
    let mut running = Some(running);
    let give_back = || {
        if let Some(r) = running.as_mut() {
            r.busy_ms = ms(started);
        }
        if !last {
            running.take();
        }
    };
    let written = write_reply(send, reply, started, head_of, give_back).await;
    match written {
        Ok(true) => {
            trace.end();
            let finished = send.finish().is_ok();
            if running.is_some() {
                // The connection's task sends the answer's end first.
                tokio::task::yield_now().await;
                drop(running);
            }
            if finished {
                // The call ends when the client has the answer.
                let _ = tokio::time::timeout(DELIVERY_WAIT, send.stopped()).await;
            }
        }
        Ok(false) => send.reset(STOP_CODE),
        Err(e) => {
            trace.fail(format!("answering: {e}"));
            tracing::debug!("answering a direct call failed: {e}");
        }
    }
}

/// Answers a refused call with `e`, reading nothing more of it.
async fn refuse(send: &mut FramedSend, recv: &mut FramedRecv, e: ServiceError) {
    recv.stop(STOP_CODE);
    if send
        .send(&Message::Error(e.into_call_error()))
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}
