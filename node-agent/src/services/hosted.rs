//! Services whose code the program embedding the agent supplies
//! ([`ServiceKind::Hosted`](crate::ServiceKind::Hosted), its [`Handler`]
//! given by name in [`Handlers`] to [`crate::run_hosting`]): a Python
//! function served by the `switchyard-fleet` package, a closure in a Rust
//! program. The agent runs them as it runs any other service (slots,
//! `max_concurrent`, load reports, drain); the [`Handler`] only turns a
//! payload into an answer.
//!
//! A handler may run its work somewhere the agent cannot stop (a thread
//! running a Python function). Past the call's deadline the call fails with
//! `Timeout` whatever the work does, but the work keeps its place among the
//! service's `max_concurrent` until the handler drops the call's [`Work`]
//! guard: an abandoned call that still runs is still counted, so the node
//! never takes more work than it said it could.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use protocol::{LogChunk, LogStream};
use tokio::sync::watch;

use super::reply::{self, Closed, Reply, Sink};
use super::{ServiceError, limited};

/// What a handler's call comes to: its answer, whole or streamed
/// ([`HostedCall::stream`]).
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, ServiceError>> + Send>>;

/// Runs the calls of one hosted service.
pub trait Handler: Send + Sync + 'static {
    /// Starts one call. The agent drops the returned future when the
    /// caller leaves or at the call's deadline (the call then fails with
    /// `Timeout`); the handler keeps `call.work` until its work has really
    /// ended.
    ///
    /// # Errors
    /// A [`ServiceError`]: `ServiceFailed` for the function's own failure
    /// (an exception, with its message), `BadRequest` for a payload it
    /// cannot read.
    fn call(&self, call: HostedCall) -> HandlerFuture;
}

/// The handlers of a node's hosted services, by service name.
pub type Handlers = std::collections::BTreeMap<String, Hosted>;

/// A hosted service: its [`Handler`], shared by every call.
#[derive(Clone)]
pub struct Hosted(Arc<dyn Handler>);

impl Hosted {
    /// A service whose calls `handler` runs.
    pub fn new(handler: impl Handler) -> Self {
        Self(Arc::new(handler))
    }
}

impl fmt::Debug for Hosted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hosted(..)")
    }
}

/// One call of a hosted service.
#[derive(Debug)]
pub struct HostedCall {
    /// The call's payload.
    pub payload: Bytes,
    /// Time left until the call's deadline when it started.
    pub timeout: Duration,
    /// Whether the caller asked for the call's log (a job's call does):
    /// [`HostedSink::log`] lines reach it only then.
    pub log: bool,
    /// Counts the call's work as running (against `max_concurrent`) until
    /// dropped; keep it where the work runs.
    pub work: Work,
    deadline: tokio::time::Instant,
}

impl HostedCall {
    /// A streamed answer: `produce` writes its chunks into the sink; its
    /// result ends the stream. Past the call's deadline `produce` is dropped
    /// and the stream fails with `Timeout`.
    pub fn stream<F, Fut>(self, produce: F) -> Reply
    where
        F: FnOnce(HostedSink, HostedCall) -> Fut,
        Fut: Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let chunks = reply::stream(move |sink| limited(left, produce(HostedSink { sink }, self)));
        Reply {
            content_type: None,
            status: None,
            body: reply::Body::Stream(chunks),
        }
    }
}

/// A whole answer of `bytes`.
pub fn whole(bytes: Bytes) -> Reply {
    Reply::whole(bytes)
}

/// Where a streamed answer's chunks go.
#[derive(Debug, Clone)]
pub struct HostedSink {
    sink: Sink,
}

/// The caller is gone: stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the caller is gone")]
pub struct Gone;

impl From<Closed> for Gone {
    fn from(_: Closed) -> Self {
        Self
    }
}

impl HostedSink {
    /// Sends one chunk, waiting while the reader is a few chunks behind
    /// (backpressure); empty chunks are skipped.
    ///
    /// # Errors
    /// [`Gone`] when the caller left.
    pub async fn data(&self, chunk: Bytes) -> Result<(), Gone> {
        Ok(self.sink.data(chunk).await?)
    }

    /// As [`HostedSink::data`], from a thread outside the async runtime
    /// (it blocks that thread). Never call it from an async task.
    ///
    /// # Errors
    /// [`Gone`] when the caller left.
    pub fn blocking_data(&self, chunk: Bytes) -> Result<(), Gone> {
        Ok(self.sink.blocking_data(chunk)?)
    }

    /// Sends `text` as a chunk of the call's log (stderr), cut into chunks
    /// of at most [`protocol::job::MAX_LOG_CHUNK`] bytes.
    ///
    /// # Errors
    /// [`Gone`] when the caller left.
    pub async fn log(&self, text: &[u8]) -> Result<(), Gone> {
        for chunk in log_chunks(text) {
            self.sink.log(chunk).await?;
        }
        Ok(())
    }

    /// As [`HostedSink::log`], from a thread outside the async runtime
    /// (it blocks that thread). Never call it from an async task.
    ///
    /// # Errors
    /// [`Gone`] when the caller left.
    pub fn blocking_log(&self, text: &[u8]) -> Result<(), Gone> {
        for chunk in log_chunks(text) {
            self.sink.blocking_log(chunk)?;
        }
        Ok(())
    }
}

fn log_chunks(text: &[u8]) -> impl Iterator<Item = LogChunk> + '_ {
    let ts_ms = crate::services::logs::now_ms();
    text.chunks(protocol::job::MAX_LOG_CHUNK)
        .map(move |piece| LogChunk {
            stream: LogStream::Stderr,
            ts_ms,
            data: piece.to_vec(),
        })
}

/// Counts a hosted call's work as running until dropped.
#[derive(Debug)]
pub struct Work {
    running: Arc<Running>,
}

impl Drop for Work {
    fn drop(&mut self) {
        self.running.count.fetch_sub(1, Ordering::SeqCst);
        self.running.load.send_replace(());
    }
}

/// The running work of one hosted service, its abandoned calls' included.
#[derive(Debug)]
pub(crate) struct Running {
    count: AtomicU32,
    load: Arc<watch::Sender<()>>,
}

impl Running {
    pub(crate) fn new(load: Arc<watch::Sender<()>>) -> Arc<Self> {
        Arc::new(Self {
            count: AtomicU32::new(0),
            load,
        })
    }

    /// Work running now.
    pub(crate) fn count(&self) -> u32 {
        self.count.load(Ordering::SeqCst)
    }

    fn start(self: &Arc<Self>) -> Work {
        self.count.fetch_add(1, Ordering::SeqCst);
        Work {
            running: Arc::clone(self),
        }
    }
}

/// Starts one call of `hosted`, failing with `Timeout` past `timeout` (a
/// streamed answer's own [`HostedCall::stream`] keeps the same deadline).
pub(crate) async fn run(
    hosted: &Hosted,
    running: &Arc<Running>,
    payload: Bytes,
    timeout: Duration,
    log: bool,
) -> Result<Reply, ServiceError> {
    let call = HostedCall {
        payload,
        timeout,
        log,
        work: running.start(),
        deadline: tokio::time::Instant::now() + timeout,
    };
    limited(timeout, hosted.0.call(call)).await
}
