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
//!
//! The node side of each attempt (wait for the grant, open a stream to the
//! node, send the dispatch, read the answer head, free the slot) is the
//! call kernel ([`kernel`]).

mod cached;
mod caller;
mod kernel;
mod prefix;
mod relay;
pub(crate) mod request_id;
mod retry;
mod tenancy;
mod trace;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{CallError, CallHead, ErrorKind, Message};
use switchyard_core::CallEnd;
use tracing::Instrument as _;
use transport::{FramedRecv, FramedSend};

use crate::Shared;
use crate::telemetry::labels;
use kernel::to_node;

pub(crate) use caller::{Caller, Gone, Refused, Request, spawn, spawn_from_parent, spawn_job};
pub(crate) use kernel::{finish, node_fault, node_full, wait_grant};
pub(crate) use prefix::of_request as prefix_of;
pub(crate) use tenancy::{Admitted, admit, authenticate};

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
    let request_id = request_id::of_caller(head.request_id.as_deref());
    head.request_id = Some(request_id.clone());
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
    .instrument(span(call_id, &request_id))
    .await;
    record(&shared, &service, &served, &result, arrived);
    match result {
        Ok(()) => {}
        Err(Failure::Reply(error)) => {
            let error = tagged(error, &served, &request_id);
            tracing::debug!(call_id, %request_id, %service, kind = %error.kind, message = %error.message, "call failed");
            // Stop the client's upload if it is still sending (oversized payload).
            recv.stop(protocol::codes::reset::CANCELLED);
            let _ = send.send(&Message::Error(error)).await;
        }
        Err(Failure::Gone) => {
            tracing::debug!(call_id, %service, "client left before the call ended");
            send.reset(protocol::codes::reset::CLIENT_GONE);
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

/// The span every log line about call `call_id` is in: its id and request
/// id.
fn span(call_id: u64, request_id: &str) -> tracing::Span {
    tracing::info_span!("call", call_id, %request_id)
}

/// `error` naming the call's node (the last it was sent to, when it
/// reached one) and its request id, as a result head does.
fn tagged(mut error: CallError, served: &std::sync::Mutex<Served>, request_id: &str) -> CallError {
    if error.node_id.is_none()
        && let Ok(served) = served.lock()
        && !served.node.is_empty()
    {
        error.node_id = Some(served.node.as_str().into());
    }
    error.request_id.get_or_insert_with(|| request_id.into());
    error
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
        Err(Failure::Cut(code, _)) if *code == protocol::codes::reset::TIMEOUT => {
            (false, "timeout")
        }
        Err(Failure::Cut(..)) => (false, "node_lost"),
    };
    let total_ms = ms(arrived.elapsed());
    let tenant = served
        .tenant
        .as_deref()
        .unwrap_or(crate::tenants::ANONYMOUS);
    record_call(
        service,
        &served.node,
        &served.policy,
        label,
        tenant,
        total_ms,
    );
    // The chart window keys by the same bounded names as the series.
    let (service, tenant) = (labels::service(service), labels::tenant(tenant));
    shared.window.record(
        &service,
        &tenant,
        &served.node,
        total_ms,
        ok,
        Instant::now(),
    );
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
    CallError::new(kind, message.into())
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
    /// Its prefix hashes, when the front end derived them already.
    prefix: Option<Arc<[u64]>>,
    /// Its spans (`[tracing]`; none when off).
    trace: trace::CallTrace,
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

impl<'a> Call<'a> {
    /// Checks a call's head against the gateway's limits and starts its
    /// clock (its deadline counts from `arrived`).
    ///
    /// # Errors
    /// `BadRequest` for a head that breaks a protocol limit or carries a
    /// lease token (those go to the node's direct port),
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
        if head.lease.is_some() {
            return Err(error(
                ErrorKind::BadRequest,
                "lease tokens go to the node's direct port",
            ));
        }
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
        let trace =
            trace::CallTrace::start(&shared.tracer, &head, call_id, &admitted.tenant, arrived);
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
            prefix: None,
            trace,
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
        let result = self.run(payload, caller).await;
        std::mem::take(&mut self.trace).end(&result);
        result
    }

    /// [`Call::execute`] but for the end of its span.
    async fn run(&mut self, payload: Bytes, caller: &mut impl Caller) -> Result<(), Failure> {
        self.ready = Instant::now();
        let call = &*self;
        if let Some(key) = cached::key(call, &payload).await {
            return cached::serve(call, key, payload, caller).await;
        }
        let mut answered = to_node(call, payload, caller).await?;
        let head = Message::Result(answered.result_head(call));
        match tokio::time::timeout_at(call.deadline.into(), caller.send(head)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // The caller left: stop the node's work.
                answered.cancel(protocol::codes::reset::CLIENT_GONE);
                answered.finish(call, CallEnd::Ok);
                return Err(Failure::Gone);
            }
            Err(_) => {
                // The caller does not read: no waiting past its deadline.
                answered.cancel(protocol::codes::reset::TIMEOUT);
                answered.finish(call, CallEnd::Abandoned);
                return Err(Failure::Cut(
                    protocol::codes::reset::TIMEOUT,
                    format!("timeout while sending the result ({} ms)", call.timeout_ms),
                ));
            }
        }
        relay::relay(call, answered, caller).await
    }
}

pub(crate) fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1000.0
}

/// Help texts of the call series.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        "calls_total",
        "Calls finished, by service, node, policy, outcome and tenant."
    );
    metrics::describe_histogram!(
        "call_duration_seconds",
        metrics::Unit::Seconds,
        "Call latency from arrival to answer, by service."
    );
}

/// Records a finished call of `tenant` ([`crate::tenants::ANONYMOUS`] when
/// none is known): `calls_total{service,node,policy,outcome,tenant}` and
/// `call_duration_seconds{service}` (`total_ms` in ms). A service or tenant
/// the gateway does not know is counted as `_unknown` ([`labels`]).
pub(crate) fn record_call(
    service: &str,
    node: &str,
    policy: &str,
    outcome: &'static str,
    tenant: &str,
    total_ms: f32,
) {
    let service = labels::service(service);
    metrics::counter!(
        "calls_total",
        "service" => service.clone(),
        "node" => node.to_string(),
        "policy" => policy.to_string(),
        "outcome" => outcome,
        "tenant" => labels::tenant(tenant),
    )
    .increment(1);
    metrics::histogram!("call_duration_seconds", "service" => service)
        .record(f64::from(total_ms) / 1000.0);
}
