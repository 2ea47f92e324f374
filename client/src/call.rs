//! Calls: the call builder, its options and events, whole results and
//! streamed results.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use protocol::CallHead;

use crate::{Client, ClientError, ResultMeta};

/// How long past a call's timeout the SDK waits for the gateway's own
/// `timeout` answer (which says where the time went) before it ends the
/// call itself. The gateway's clock starts when it reads the call, after
/// ours, so under a burst its answer is often later: the SDK's own clock
/// is what holds the deadline.
const TIMEOUT_GRACE: Duration = Duration::from_millis(25);

/// A call's options as plain data: what [`Call`]'s setters fill in one by
/// one, and what [`Call::options`] sets at once (for callers that build
/// them once, e.g. from command-line flags, and make many calls with them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOptions {
    /// How long the call may take, from when it is first awaited or
    /// streamed (default 30 s): the wait for a stream in the pool counts,
    /// and the gateway gets what is left. Past it the call fails with kind `timeout`: the gateway's typed
    /// error, or [`ClientError::Timeout`] when the SDK saw it first
    /// (`sent: false` while the call waited for a stream: retry-safe).
    pub timeout: Duration,
    /// Policy to pick the node with, overriding the service's (sent as the
    /// hint `policy=NAME`; default none).
    pub policy: Option<String>,
    /// Hints for the policy, `(key, value)` in order, e.g. (`max_cost`,
    /// `0.5`); the hint `explain=1` asks for [`ResultMeta::explain`]
    /// (default none).
    pub hints: Vec<(String, String)>,
    /// Queue priority: higher is served first when calls wait (default 0).
    pub priority: i32,
    /// Never wait in the queue: with every node busy the call fails at once
    /// with `occupied` (default false).
    pub realtime: bool,
    /// Do not take the result from the gateway's result cache, nor from an
    /// identical call in flight: run the call on a node; its result still
    /// replaces the cached one (default false).
    pub no_cache: bool,
    /// Accept a cached result only if it is at most this old (whole
    /// seconds, rounded down; default none: any result within the service's
    /// `cache_ttl_s`).
    pub max_age: Option<Duration>,
    /// For an OpenAI-compatible service: the endpoint the payload is for,
    /// one of `/chat/completions` (the default), `/completions`,
    /// `/embeddings`.
    pub endpoint: Option<String>,
    /// The caller's W3C trace context, a `traceparent` value
    /// (`00-<trace id>-<span id>-<flags>`, at most 128 bytes): a gateway
    /// and agents that trace (`[tracing]`) record the call's spans in that
    /// trace, under that span (default none).
    pub traceparent: Option<String>,
    /// Running the call twice does no harm (default false): when the
    /// connection to its gateway is lost after the gateway had the call,
    /// the SDK sends it again to another gateway within its timeout
    /// instead of failing with [`ClientError::GatewayLost`]. A call that
    /// cannot have run moves to another gateway either way.
    pub idempotent: bool,
    /// How the call reaches its node (default [`Mode::Proxied`]: through
    /// the gateway). [`Mode::LookAside`] leases the node from the gateway
    /// and calls it directly; so are the services named in
    /// [`crate::ClientConfig::look_aside`], whatever this says.
    pub mode: Mode,
}

/// How a call reaches its node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Through the gateway, which picks the node and relays the payload
    /// and the result (the default; the gateway's result cache applies).
    #[default]
    Proxied,
    /// Look-aside: the gateway picks the node and leases it for one call
    /// (queueing, policies and tenants as for a proxied call); the SDK
    /// sends the payload to the node's direct port and reads the result
    /// from it. When the node's direct port cannot be reached (the
    /// connection or its handshake fails or times out: nothing ran), the
    /// lease is released and the call goes through the gateway instead.
    /// The gateway's result cache does not apply.
    LookAside,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            policy: None,
            hints: Vec::new(),
            priority: 0,
            realtime: false,
            no_cache: false,
            max_age: None,
            endpoint: None,
            traceparent: None,
            idempotent: false,
            mode: Mode::Proxied,
        }
    }
}

impl CallOptions {
    /// The call's head on the wire, without its time left (set per attempt)
    /// and API key: the policy travels as the hint `policy=NAME` after the
    /// others, `max_age` as whole seconds.
    pub(crate) fn into_head(self, service: &str, payload_len: u64) -> CallHead {
        let mut hints = self.hints;
        if let Some(policy) = self.policy {
            hints.push(("policy".into(), policy));
        }
        CallHead {
            hints,
            priority: self.priority,
            realtime: self.realtime,
            no_cache: self.no_cache,
            max_age_s: self
                .max_age
                .map(|age| u32::try_from(age.as_secs()).unwrap_or(u32::MAX)),
            endpoint: self.endpoint,
            log: false,
            traceparent: self.traceparent,
            ..CallHead::new(service, payload_len, 0)
        }
    }
}

/// What happens to a call before its result, as [`Call::on_event`]
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// Every node is busy: the call waits at `position` (1 = next). Sent
    /// each time the position changes.
    Queued {
        /// Place in the service's queue.
        position: u32,
    },
    /// A node is loading the service for this call (a swap).
    Reserved {
        /// The node.
        node_id: String,
        /// The service it held before, if any.
        from: Option<String>,
        /// How long loading usually takes there, ms.
        expected_ms: u32,
    },
}

/// One call, built by [`Client::call`]: set its options with the methods
/// below, then `.await` it for the whole result ([`CallResult`]) or call
/// [`Call::stream`] for its chunks as the service writes them. Nothing is
/// sent until then.
///
/// ```no_run
/// # async fn demo(client: switchyard_client::Client) -> Result<(), switchyard_client::ClientError> {
/// use std::time::Duration;
/// let result = client
///     .call("sha256", b"hello".to_vec())
///     .timeout(Duration::from_secs(5))
///     .policy("least-request")
///     .await?;
/// println!("{} bytes from {}", result.data.len(), result.meta.node_id);
/// # Ok(()) }
/// ```
#[must_use = "a call is sent only when it is awaited or streamed"]
pub struct Call<'a> {
    client: &'a Client,
    service: &'a str,
    payload: Bytes,
    options: CallOptions,
    on_event: Box<dyn FnMut(CallEvent) + Send + 'a>,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("service", &self.service)
            .field("payload_len", &self.payload.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'a> Call<'a> {
    /// Replaces all of the call's options with `options` (the setters below
    /// change one each).
    pub fn options(mut self, options: CallOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets how long the call may take, from when it is first awaited or
    /// streamed ([`CallOptions::timeout`]; default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// Asks why the node was chosen (the hint `explain=1`): the result's
    /// [`ResultMeta::explain`] then holds the policy's decision in one line.
    pub fn explain(self) -> Self {
        self.hint("explain", "1")
    }

    /// Skips the gateway's result cache for this call; the fresh result is
    /// still stored ([`CallOptions::no_cache`]).
    pub fn no_cache(mut self, no_cache: bool) -> Self {
        self.options.no_cache = no_cache;
        self
    }

    /// Accepts a cached result only if it is at most `max_age` old, whole
    /// seconds ([`CallOptions::max_age`]).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.options.max_age = Some(max_age);
        self
    }

    /// Names the OpenAI endpoint (e.g. `/embeddings`) for an `openai`
    /// service ([`CallOptions::endpoint`]).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.options.endpoint = Some(endpoint.into());
        self
    }

    /// Marks the call safe to run twice, so a call whose gateway was lost
    /// mid-flight is sent to another gateway ([`CallOptions::idempotent`]).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.options.idempotent = idempotent;
        self
    }

    /// Sets how the call reaches its node ([`CallOptions::mode`]; default
    /// [`Mode::Proxied`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.options.mode = mode;
        self
    }

    /// Calls look-aside: leases the node and sends the payload to it
    /// directly, falling back to the gateway when its direct port cannot
    /// be reached (the same as `.mode(Mode::LookAside)`).
    pub fn look_aside(self) -> Self {
        self.mode(Mode::LookAside)
    }

    crate::setters::admission_setters!();

    /// Sends the call and returns as soon as the result's head arrives: its
    /// metadata ([`CallStream::meta`]) and a stream of the result's chunks
    /// as the service writes them. Dropping the stream cancels the call.
    ///
    /// # Errors
    /// As awaiting the call (see [`Client::call`]), for failures before the
    /// first chunk; a failure after it is the stream's last item.
    pub async fn stream(self) -> Result<CallStream, ClientError> {
        let Self {
            client,
            service,
            payload,
            options,
            on_event,
        } = self;
        let deadline = Deadline::new(options.timeout);
        let look_aside = client.is_look_aside(service, &options);
        tokio::time::timeout_at(deadline.late(), async {
            let (meta, open) = if look_aside {
                client
                    .look_aside_start(service, payload, options, on_event, deadline)
                    .await?
            } else {
                client
                    .start(service, payload, options, on_event, deadline)
                    .await?
            };
            Ok(open.into_stream(meta))
        })
        .await
        .map_err(|_| deadline.passed(true))?
    }

    /// Sends the call and reads its whole result.
    async fn whole(self) -> Result<CallResult, ClientError> {
        let Self {
            client,
            service,
            payload,
            options,
            on_event,
        } = self;
        let deadline = Deadline::new(options.timeout);
        tokio::time::timeout_at(
            deadline.late(),
            client.call_whole(service, payload, options, on_event, deadline),
        )
        .await
        .map_err(|_| deadline.passed(true))?
    }
}

impl<'a> IntoFuture for Call<'a> {
    type Output = Result<CallResult, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    /// Sends the call and reads its whole result (see [`Client::call`]).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.whole())
    }
}

/// A call's whole result: its metadata and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    /// Where the call ran and how long it took: node, policy, timings (ms),
    /// cache, media type, HTTP status, the policy's explanation.
    pub meta: ResultMeta,
    /// The result bytes, at most [`crate::ClientConfig::max_result_bytes`].
    pub data: Bytes,
}

/// A call's result as a stream of chunks, relayed as the service writes
/// them (a command's stdout, a model server's tokens). Yields `Bytes`
/// chunks, then ends; a service that fails midway yields its error last.
/// Dropping it before its end cancels the call: the gateway stops the
/// node's work (the command is killed, the upstream request aborted).
pub struct CallStream {
    /// The result's metadata, known before the first chunk: its timings
    /// cover the time until then (`node_ms` is the node's time to its first
    /// byte for a streamed result), and [`ResultMeta::payload_len`] is
    /// `None` while the result streams.
    pub meta: ResultMeta,
    chunks: Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>,
}

impl std::fmt::Debug for CallStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStream")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Stream for CallStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.as_mut().poll_next(cx)
    }
}

impl Client {
    /// A call of `service` with `payload`, default options: set them on the
    /// returned [`Call`], then `.await` it for the whole result, or
    /// [`Call::stream`] for its chunks. The call's timeout counts from when
    /// it is first awaited or streamed.
    ///
    /// # Errors
    /// Awaiting it gives [`ClientError::Call`] with the gateway's typed
    /// error (unknown service, no node available, timeout, node lost,
    /// payload too large, service failed, occupied, overloaded,
    /// unauthorized, forbidden, rate limited, ...),
    /// [`ClientError::Timeout`] when the SDK's clock ran out first, a
    /// [`ClientError::Protocol`] for a result larger than
    /// [`crate::ClientConfig::max_result_bytes`], or a connection or
    /// protocol error.
    pub fn call<'a>(&'a self, service: &'a str, payload: impl Into<Bytes>) -> Call<'a> {
        Call {
            client: self,
            service,
            payload: payload.into(),
            options: CallOptions::default(),
            on_event: Box::new(|_| {}),
        }
    }

    /// Reads a call's whole result, without its deadline's last guard.
    async fn call_whole(
        &self,
        service: &str,
        payload: Bytes,
        options: CallOptions,
        on_event: impl FnMut(CallEvent) + Send,
        deadline: Deadline,
    ) -> Result<CallResult, ClientError> {
        let (meta, open) = if self.is_look_aside(service, &options) {
            self.look_aside_start(service, payload, options, on_event, deadline)
                .await?
        } else {
            self.start(service, payload, options, on_event, deadline)
                .await?
        };
        open.whole(meta, self.config.max_result_bytes).await
    }
}

/// When a call must end, from when it was made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    timeout: Duration,
}

impl Deadline {
    pub(crate) fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            at: now.checked_add(timeout).unwrap_or_else(|| far_future(now)),
            timeout,
        }
    }

    /// When the SDK stops waiting for the gateway's own timeout answer.
    pub(crate) fn late(&self) -> Instant {
        self.at
            .checked_add(TIMEOUT_GRACE)
            .unwrap_or_else(|| far_future(self.at))
    }

    /// What is left, whole ms (0 when it passed).
    pub(crate) fn left_ms(&self) -> u32 {
        let left = self.at.saturating_duration_since(Instant::now());
        u32::try_from(left.as_millis()).unwrap_or(u32::MAX)
    }

    pub(crate) fn passed(&self, sent: bool) -> ClientError {
        ClientError::Timeout {
            sent,
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// About a century after `now`: a deadline that never comes.
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(100 * 365 * 24 * 3600)
}

mod attempt;
mod lookaside;
mod result;

pub(crate) use attempt::Request;
pub(crate) use result::{DirectRecv, Open, Source, direct_lost};
#[cfg(test)]
mod tests;
