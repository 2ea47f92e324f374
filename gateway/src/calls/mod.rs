//! One client call: read it, pick a node with the service's policy, forward
//! it on a new stream of the node's connection, and stream the result back.
//!
//! Retry rule: a call is sent to another node when opening the stream to
//! the picked node failed, so nothing reached it and it cannot have run.
//! Once the dispatch is sent, only a call of an idempotent service
//! (`[services.NAME] idempotent`) runs again, on another node, after a
//! failure there ([`retry`]); any other call reports the failure (`node
//! lost`, `service failed`).
//!
//! A call of a cached service (`cache_ttl_s`) goes through [`cached`] after
//! its payload is read, before it is admitted: a hit never queues nor takes
//! a slot.
//!
//! The caller is anything that implements [`Caller`]: a QUIC client stream
//! ([`serve`]) or an in-process channel ([`spawn`], used by the HTTP
//! ingress). Results are relayed chunk by chunk as the node sends them
//! ([`relay`]); only a cached service's result is buffered whole, to be
//! stored.

mod cached;
mod caller;
mod prefix;
mod relay;
mod retry;
mod tenancy;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{CallError, CallHead, DispatchHead, ErrorKind, Message, ResultHead, Timings};
use switchyard_core::CallEnd;
use transport::{FramedRecv, FramedSend, IoError};

use crate::Shared;
use crate::policies::Picked;
use crate::registry::Node;
use crate::scheduler::{Grant, SlotGuard, Ticket, WaitState};

pub(crate) use caller::{Caller, Refused, spawn, spawn_job};
pub(crate) use tenancy::authenticate;

/// Most nodes one call is offered to when streams cannot be opened.
const MAX_DISPATCH_ATTEMPTS: usize = 3;

/// Longest wait, after a call's answer is written, for the client to
/// acknowledge it (the call counts as in flight until then).
const DELIVERY_WAIT: Duration = Duration::from_secs(2);

/// Serves a call from a QUIC client stream whose head was read at
/// `arrived`: reads its payload, runs it, and ends the stream (an `Error`
/// frame, or a reset code when the result was cut after its head).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    head: CallHead,
    mut send: FramedSend,
    mut recv: FramedRecv,
    arrived: Instant,
) {
    let call_id = shared.next_call_id.fetch_add(1, Ordering::Relaxed);
    let service = head.service.clone();
    let served = std::sync::Mutex::new(Served::default());
    let mut head = head;
    let result = async {
        let admitted = tenancy::admit(&shared, &mut head).map_err(|refused| {
            if let Ok(mut served) = served.lock() {
                served.tenant.clone_from(&refused.tenant);
            }
            refused.error
        })?;
        let call = Call::new(&shared, call_id, head, arrived, &served, admitted)?;
        let payload = call.read_payload(&mut recv).await?;
        call.execute(payload, &mut send).await
    }
    .await;
    record(&shared, &service, &served, &result, arrived);
    match result {
        Ok(()) => {}
        Err(Failure::Reply(error)) => {
            tracing::debug!(call_id, %service, kind = %error.kind, message = %error.message, "call failed");
            // Stop the client's upload if it is still sending (oversized payload).
            recv.stop(protocol::codes::reset::CANCELLED);
            let _ = send.send(&Message::Error(error)).await;
        }
        Err(Failure::Gone) => {
            tracing::debug!(call_id, %service, "client left before the call ended");
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
    // The call ends when the client has its answer, not when it is queued:
    // a shutdown waits for this before it closes the connection.
    let _ = tokio::time::timeout(DELIVERY_WAIT, send.stopped()).await;
}

/// Records a finished call's metrics and chart window.
fn record(
    shared: &Shared,
    service: &str,
    served: &std::sync::Mutex<Served>,
    result: &Result<(), Failure>,
    arrived: Instant,
) {
    let served = served.lock().map(|s| s.clone()).unwrap_or_default();
    let (ok, label) = match result {
        Ok(()) => (true, "ok"),
        Err(Failure::Reply(e)) => (false, crate::telemetry::outcome(Err(e.kind))),
        Err(Failure::Gone) => (false, "client_gone"),
        Err(Failure::Cut(code, _)) if *code == crate::RESET_TIMEOUT => (false, "timeout"),
        Err(Failure::Cut(..)) => (false, "node_lost"),
    };
    let total_ms = ms(arrived.elapsed());
    let tenant = served
        .tenant
        .as_deref()
        .unwrap_or(crate::tenants::ANONYMOUS);
    crate::telemetry::record_call(
        service,
        &served.node,
        &served.policy,
        label,
        tenant,
        total_ms,
    );
    shared
        .window
        .record(service, tenant, &served.node, total_ms, ok, Instant::now());
}

/// Where a call went, for its metrics (empty while it reached no node).
#[derive(Default, Clone)]
struct Served {
    node: String,
    policy: String,
    /// The caller's tenant, once admitted.
    tenant: Option<Arc<str>>,
}

pub(crate) enum Failure {
    /// Answer the client with this error (after the result head, for a
    /// streamed result whose service failed midway).
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

/// One call after its head was read: what every step needs.
struct Call<'a> {
    shared: &'a Shared,
    call_id: u64,
    head: Arc<CallHead>,
    /// When the gateway read the call's head.
    arrived: Instant,
    /// When its payload was read.
    ready: Instant,
    deadline: Instant,
    timeout_ms: u32,
    /// Where the call went, for its metrics.
    served: &'a std::sync::Mutex<Served>,
    /// The caller's tenant; holds its in-flight place until the call ends.
    admitted: tenancy::Admitted,
}

impl Call<'_> {
    /// Whether the caller asked why its node was chosen (hint `explain`
    /// `1`/`true`/`yes`; the HTTP ingress's `x-switchyard-explain` header
    /// and `switchyard call -v` set it).
    pub(crate) fn wants_explain(&self) -> bool {
        self.head
            .hints
            .iter()
            .any(|(k, v)| k == "explain" && matches!(v.as_str(), "1" | "true" | "yes"))
    }

    fn timed_out(&self) -> CallError {
        error(
            ErrorKind::Timeout,
            format!("no result within {} ms", self.timeout_ms),
        )
    }
}

/// A node's answer head, with the slot still held and the result unread.
struct Answered {
    guard: SlotGuard,
    picked: Picked,
    node: Arc<Node>,
    /// Kept open until the call ends; reset to cancel the node's work.
    node_send: FramedSend,
    node_recv: FramedRecv,
    /// The result's length, `None` when it streams.
    payload_len: Option<u64>,
    content_type: Option<String>,
    status: Option<u16>,
    dispatched: Instant,
    node_ms: f32,
    /// Nodes the call was sent to, this one included.
    attempts: u32,
    /// The one-line decision, when the call asked (hint `explain=1`).
    explain: Option<String>,
}

impl Answered {
    /// The result head for the client.
    fn result_head(&self, call: &Call<'_>) -> ResultHead {
        ResultHead {
            payload_len: self.payload_len,
            node_id: self.node.spec.id.clone(),
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
        }
    }

    /// Stops the node's work (the caller left or the call timed out): the
    /// agent sees the stream stopped and kills or aborts the service.
    fn cancel(&mut self, code: u32) {
        self.node_send.reset(code);
        self.node_recv.stop(code);
    }

    /// Frees the slot and tells the policy how the call went.
    fn finish(self, call: &Call<'_>, end: CallEnd) {
        finish(call.shared, self.guard, &self.picked, self.node_ms, end);
    }
}

impl<'a> Call<'a> {
    /// Checks a call's head against the gateway's limits and starts its
    /// clock (its deadline counts from `arrived`).
    ///
    /// # Errors
    /// `BadRequest` for a head that breaks a protocol limit,
    /// `PayloadTooLarge` past `max_payload_bytes`.
    pub(crate) fn new(
        shared: &'a Shared,
        call_id: u64,
        head: CallHead,
        arrived: Instant,
        served: &'a std::sync::Mutex<Served>,
        admitted: tenancy::Admitted,
    ) -> Result<Self, CallError> {
        if let Ok(mut served) = served.lock() {
            served.tenant = Some(admitted.tenant.clone());
        }
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
            ));
        }
        let max_timeout_ms = if admitted.job {
            shared
                .config
                .jobs
                .max_watchdog_s
                .saturating_mul(1000)
                .max(shared.config.max_timeout_ms)
        } else {
            shared.config.max_timeout_ms
        };
        let timeout_ms = head.timeout_ms.clamp(1, max_timeout_ms);
        Ok(Call {
            shared,
            call_id,
            head: Arc::new(head),
            arrived,
            ready: arrived,
            deadline: arrived + Duration::from_millis(u64::from(timeout_ms)),
            timeout_ms,
            served,
            admitted,
        })
    }

    /// Reads the call's payload from its QUIC stream, within its deadline.
    async fn read_payload(&self, recv: &mut FramedRecv) -> Result<Bytes, CallError> {
        let max = self.shared.config.max_payload_bytes;
        tokio::time::timeout_at(
            self.deadline.into(),
            recv.recv_payload(self.head.payload_len, max),
        )
        .await
        .map_err(|_| self.timed_out())?
        .map_err(|e| error(ErrorKind::BadRequest, format!("reading the payload: {e}")))
    }

    /// Runs the call on `payload` (read now): from the result cache for a
    /// cached service, else on a node picked by the service's policy, and
    /// streams the answer to `caller`.
    async fn execute(mut self, payload: Bytes, caller: &mut impl Caller) -> Result<(), Failure> {
        self.ready = Instant::now();
        let call = &self;
        if let Some(key) = cached::key(call, &payload).await {
            return cached::serve(call, key, payload, caller).await;
        }
        let mut answered = to_node(call, payload, caller).await?;
        let head = Message::Result(answered.result_head(call));
        match tokio::time::timeout_at(call.deadline.into(), caller.send(head)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // The caller left: stop the node's work.
                answered.cancel(crate::RESET_CLIENT_GONE);
                answered.finish(call, CallEnd::Ok);
                return Err(Failure::Gone);
            }
            Err(_) => {
                // The caller does not read: no waiting past its deadline.
                answered.cancel(crate::RESET_TIMEOUT);
                answered.finish(call, CallEnd::Abandoned);
                return Err(Failure::Cut(
                    crate::RESET_TIMEOUT,
                    format!("timeout while sending the result ({} ms)", call.timeout_ms),
                ));
            }
        }
        relay::relay(call, answered, caller).await
    }
}

/// Admits the call, dispatches it to a node (another one when the stream
/// cannot be opened) and reads the node's answer head. A call of an
/// idempotent service that fails on its node runs again on another one
/// (see [`retry`]).
async fn to_node(
    call: &Call<'_>,
    payload: Bytes,
    caller: &mut impl Caller,
) -> Result<Answered, Failure> {
    let shared = call.shared;
    let prefix = prefix::of_call(&shared.config.prefix, &call.head, &payload);
    let mut ticket = shared.scheduler.admit(
        &call.head,
        &call.admitted.tenant,
        call.call_id,
        prefix,
        call.admitted.job,
    );
    let mut attempts = 1;
    loop {
        let (guard, picked, dispatched, node_send, node_recv) = open(call, ticket, caller).await?;
        match exchange_with(
            call, guard, picked, dispatched, node_send, node_recv, &payload,
        )
        .await
        {
            Ok(mut answered) => {
                answered.attempts = attempts;
                return Ok(answered);
            }
            Err(Attempt::Over(failure)) => return Err(failure),
            Err(Attempt::Failed(guard, picked, node_ms, e)) => {
                let Some((next, attempt)) =
                    retry::again(call, guard, &picked, node_ms, &e, &*caller).await?
                else {
                    let mut e = e;
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
    /// The node failed it (`node lost`, `service failed`, a timeout
    /// there): the slot is still held, for a retry or the end.
    Failed(SlotGuard, Picked, f32, CallError),
}

/// Waits for the call's grant and opens a stream to its node; another node
/// when the stream cannot be opened (nothing reached it).
async fn open(
    call: &Call<'_>,
    mut ticket: Ticket,
    caller: &mut impl Caller,
) -> Result<(SlotGuard, Picked, Instant, FramedSend, FramedRecv), Failure> {
    let mut failures = 0;
    loop {
        let Grant { guard, picked } = admit(call, &mut ticket, caller).await?;
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
            Ok((node_send, node_recv)) => {
                return Ok((guard, picked, dispatched, node_send, node_recv));
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

/// Sends the call to the node its stream is open to and reads the answer's
/// head.
async fn exchange_with(
    call: &Call<'_>,
    guard: SlotGuard,
    picked: Picked,
    dispatched: Instant,
    mut node_send: FramedSend,
    mut node_recv: FramedRecv,
    payload: &Bytes,
) -> Result<Answered, Attempt> {
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
            call.call_id,
            &call.head.service,
            &node.spec.id,
            explanation,
        );
        call.wants_explain().then(|| decision.compact())
    });
    let remaining = call.deadline.saturating_duration_since(Instant::now());
    let dispatch = DispatchHead {
        call_id: call.call_id,
        service: call.head.service.clone(),
        payload_len: call.head.payload_len,
        timeout_ms: u32::try_from(remaining.as_millis())
            .unwrap_or(u32::MAX)
            .max(1),
        endpoint: call.head.endpoint.clone(),
        log: call.head.log,
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
    match outcome {
        Err(_) => {
            node_send.reset(crate::RESET_TIMEOUT);
            node_recv.stop(crate::RESET_TIMEOUT);
            finish(shared, guard, &picked, node_ms, CallEnd::Failed);
            Err(Attempt::Over(call.timed_out().into()))
        }
        Ok(Err(e)) if node_fault(&e) == CallEnd::Failed => {
            Err(Attempt::Failed(guard, picked, node_ms, e))
        }
        Ok(Err(e)) => {
            finish(shared, guard, &picked, node_ms, CallEnd::Abandoned);
            Err(Attempt::Over(e.into()))
        }
        Ok(Ok(reply)) => Ok(Answered {
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
            explain,
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
                match tokio::time::timeout_at(call.deadline.into(), caller.send(frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(Failure::Gone),
                    Err(_) => return Err(call.timed_out().into()),
                }
            }
            () = tokio::time::sleep_until(call.deadline.into()) => return Err(call.timed_out().into()),
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
            _ => Ok(reply),
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

/// Whether an error the node answered is the node's failure (it counts
/// towards outlier ejection) or the call's own (bad request, too large,
/// refused).
pub(crate) fn node_fault(e: &CallError) -> CallEnd {
    match e.kind {
        ErrorKind::ServiceFailed | ErrorKind::NodeLost | ErrorKind::Timeout => CallEnd::Failed,
        _ => CallEnd::Abandoned,
    }
}

pub(crate) fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1000.0
}
