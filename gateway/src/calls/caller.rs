//! Where a call's answer goes: a QUIC client stream, or a channel read by
//! an in-process front end (the HTTP ingress).
//!
//! A caller receives the call's frames in order: `Queued`/`Reserved` while
//! it waits, then `Result` and the result's `Data` chunks as they come from
//! the node (ended by `End` for a streamed result), among them the
//! service's `Log` frames when the call's head asked (`CallHead::log`), or
//! an `Error` at any point. Its `gone` future tells the call that the caller left, so that
//! it leaves the queue or stops the node's work at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use protocol::{CallError, CallHead, ErrorKind, Message};
use tokio::sync::mpsc;
use tracing::Instrument as _;
use transport::FramedSend;

use super::{Call, Failure, Served, record};
use crate::Shared;

/// The caller went away (closed its stream or connection, dropped the
/// channel); nothing more can reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gone;

/// The receiving end of a call.
pub(crate) trait Caller: Send {
    /// Hands one frame to the caller, waiting while it is behind
    /// (backpressure reaches the node).
    ///
    /// # Errors
    /// [`Gone`] when the caller left.
    fn send(&mut self, message: Message) -> impl Future<Output = Result<(), Gone>> + Send;

    /// Completes when the caller leaves; it borrows nothing, so frames can
    /// be sent while it is awaited.
    fn gone(&self) -> impl Future<Output = ()> + Send + 'static;
}

impl Caller for FramedSend {
    async fn send(&mut self, message: Message) -> Result<(), Gone> {
        match message {
            // A node's chunk may be larger than one frame allows.
            Message::Data(chunk) => self.send_payload(&chunk).await.map_err(|_| Gone),
            other => FramedSend::send(self, &other).await.map_err(|_| Gone),
        }
    }

    fn gone(&self) -> impl Future<Output = ()> + Send + 'static {
        self.peer_gone()
    }
}

/// A caller in this process, reading the call's frames from a channel.
#[derive(Debug)]
pub(crate) struct Channel {
    tx: mpsc::Sender<Message>,
}

impl Caller for Channel {
    async fn send(&mut self, message: Message) -> Result<(), Gone> {
        self.tx.send(message).await.map_err(|_| Gone)
    }

    fn gone(&self) -> impl Future<Output = ()> + Send + 'static {
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }
}

/// A call an in-process front end read whole, ready to run.
#[derive(Debug)]
pub(crate) struct Request {
    /// Its head (its `payload_len` is set from `payload`).
    pub(crate) head: CallHead,
    /// Its payload.
    pub(crate) payload: Bytes,
    /// When the front end read it: its deadline counts from here.
    pub(crate) arrived: Instant,
    /// Its prefix hashes when the front end parsed its body already (an
    /// OpenAI request); `None` to derive them from the payload.
    pub(crate) prefix: Option<Arc<[u64]>>,
}

/// Frames a channel caller may be behind before the node is slowed down.
const CHANNEL_FRAMES: usize = 16;

/// Runs a call whose payload is already read (arrived at `arrived`) on its
/// own task and returns the channel its frames come on, the last one being
/// `Error` when it fails (also after a cut result: kind `node lost` or
/// `timeout`), or the channel closing after the result. Dropping the
/// receiver is the caller leaving: the call leaves the queue, or the node's
/// work is stopped.
///
/// # Errors
/// [`Refused`] when the caller's tenant may not make the call now (bad
/// key, service not allowed, over its rate or in-flight limit).
pub(crate) fn spawn(
    shared: Arc<Shared>,
    request: Request,
) -> Result<mpsc::Receiver<Message>, Refused> {
    let Request {
        mut head,
        payload,
        arrived,
        prefix,
    } = request;
    let in_flight = shared.drain.enter().map_err(|error| Refused {
        error,
        retry_after: None,
        tenant: None,
    })?;
    // The payload is at hand: its length is the head's.
    head.payload_len = payload.len() as u64;
    let admitted = super::tenancy::admit(&shared, &mut head)
        .inspect_err(|refused| refused.record(&shared, &head.service, arrived))?;
    let request = Request {
        head,
        payload,
        arrived,
        prefix,
    };
    Ok(run_on_channel(shared, request, admitted, in_flight))
}

/// Runs a call a parent gateway dispatched here (or a child gateway
/// handed up: it never goes back to `exclude`, that child) as a call of
/// `tenant` (trusted: see [`super::tenancy::Admitted::from_parent`]) on
/// its own task, as [`spawn`] does; new calls are refused while this
/// gateway shuts down.
///
/// # Errors
/// [`Refused`] (`shutting down`) while the gateway drains.
pub(crate) fn spawn_from_parent(
    shared: Arc<Shared>,
    request: Request,
    tenant: Arc<str>,
    exclude: Option<switchyard_core::NodeKey>,
) -> Result<mpsc::Receiver<Message>, Refused> {
    let in_flight = shared.drain.enter().map_err(|error| Refused {
        error,
        retry_after: None,
        tenant: None,
    })?;
    let mut request = request;
    request.head.payload_len = request.payload.len() as u64;
    request.head.api_key = None;
    let admitted = super::tenancy::Admitted::from_parent(tenant, exclude);
    Ok(run_on_channel(shared, request, admitted, in_flight))
}

/// Runs a job's attempt as a call of `tenant` (admitted when the job was
/// submitted) on its own task, as [`spawn`] does; its frames include the
/// service's `Log` frames when `head.log` is set.
pub(crate) fn spawn_job(
    shared: Arc<Shared>,
    head: CallHead,
    payload: Bytes,
    tenant: Arc<str>,
    on_dispatch: mpsc::UnboundedSender<String>,
) -> mpsc::Receiver<Message> {
    let mut head = head;
    head.payload_len = payload.len() as u64;
    head.api_key = None;
    let admitted = super::tenancy::Admitted::job(tenant, on_dispatch);
    let request = Request {
        head,
        payload,
        arrived: Instant::now(),
        prefix: None,
    };
    run_on_channel(shared, request, admitted, ())
}

/// Runs an admitted call on its own task, its frames on the returned
/// channel (an `Error` last when it fails); `guard` is held until it ends.
fn run_on_channel(
    shared: Arc<Shared>,
    request: Request,
    admitted: super::tenancy::Admitted,
    guard: impl Send + 'static,
) -> mpsc::Receiver<Message> {
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    let Request {
        mut head,
        payload,
        arrived,
        prefix,
    } = request;
    let request_id = super::request_id::of_caller(head.request_id.as_deref());
    head.request_id = Some(request_id.clone());
    tokio::spawn(async move {
        let call_id = shared.next_call_id.fetch_add(1, Ordering::Relaxed);
        let service = head.service.clone();
        let served = std::sync::Mutex::new(Served::default());
        let mut caller = Channel { tx };
        let result = async {
            let mut call = Call::new(&shared, call_id, head, arrived, &served, admitted)?;
            call.prefix = prefix;
            call.execute(payload, &mut caller).await
        }
        .instrument(super::span(call_id, &request_id))
        .await;
        record(&shared, &service, &served, &result, arrived);
        let error = match result {
            Ok(()) | Err(Failure::Gone) => {
                drop(guard);
                return;
            }
            Err(Failure::Reply(error)) => error,
            Err(Failure::Cut(code, message)) => CallError::new(
                if code == protocol::codes::reset::TIMEOUT {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::NodeLost
                },
                message,
            ),
        };
        let error = super::tagged(error, &served, &request_id);
        tracing::debug!(call_id, %request_id, %service, kind = %error.kind, message = %error.message, "call failed");
        let _ = caller.send(Message::Error(error)).await;
        drop(guard);
    });
    rx
}

/// A call refused before it started: why, and for a rate limit when to
/// try again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refused {
    /// The error the caller gets.
    pub(crate) error: CallError,
    /// How long to wait before trying again (rate limits).
    pub(crate) retry_after: Option<std::time::Duration>,
    /// The caller's tenant, when its key named one (for the metrics).
    pub(crate) tenant: Option<Arc<str>>,
}

impl Refused {
    /// Counts the refused call in the metrics, under its tenant.
    pub(crate) fn record(&self, shared: &Shared, service: &str, arrived: Instant) {
        let served = std::sync::Mutex::new(Served {
            tenant: self.tenant.clone(),
            ..Served::default()
        });
        record(
            shared,
            service,
            &served,
            &Err(Failure::Reply(self.error.clone())),
            arrived,
        );
    }
}
