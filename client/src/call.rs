//! Calls: options, events, whole results and streamed results.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use protocol::{CacheInfo, CallHead, Message, ResultHead, Timings};
use transport::FramedSend;

use crate::pool::PooledRecv;
use crate::{Client, ClientError, unexpected};

/// Stream reset code the SDK cancels a call with (its stream was dropped).
pub const RESET_CANCELLED: u32 = protocol::codes::reset::CANCELLED;

/// How long past a call's timeout the SDK waits for the gateway's own
/// `timeout` answer (which says where the time went) before it ends the
/// call itself. The gateway's clock starts when it reads the call, after
/// ours, so under a burst its answer is often later: the SDK's own clock
/// is what holds the deadline.
const TIMEOUT_GRACE: Duration = Duration::from_millis(25);

/// Per-call options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOptions {
    /// How long the call may take, from when it is made (default 30 s):
    /// the wait for a stream in the pool counts, and the gateway gets what
    /// is left. Past it the call fails with kind `timeout`: the gateway's
    /// typed error, or [`ClientError::Timeout`] when the SDK saw it first
    /// (`sent: false` while the call waited for a stream: retry-safe).
    pub timeout: Duration,
    /// Policy to pick the node with, overriding the service's (sent as the
    /// hint `policy=NAME`).
    pub policy: Option<String>,
    /// Hints for the policy, e.g. (`max_cost`, `0.5`).
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
        }
    }
}

/// What happens to a call before its result, as [`Client::call_with_events`]
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

impl CallOptions {
    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a hint.
    pub fn hint(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.hints.push((key.into(), value.into()));
        self
    }

    /// Asks why the node was chosen (the hint `explain=1`): the answer's
    /// [`ResultInfo::explain`] then holds the policy's decision in one line.
    pub fn explain(self) -> Self {
        self.hint("explain", "1")
    }

    /// Names the policy.
    pub fn policy(mut self, name: impl Into<String>) -> Self {
        self.policy = Some(name.into());
        self
    }

    /// Sets the queue priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Makes the call realtime: never queued.
    pub fn realtime(mut self, realtime: bool) -> Self {
        self.realtime = realtime;
        self
    }

    /// Skips the gateway's result cache for this call (the fresh result is
    /// still stored).
    pub fn no_cache(mut self, no_cache: bool) -> Self {
        self.no_cache = no_cache;
        self
    }

    /// Accepts a cached result only if it is at most `max_age` old.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Names the OpenAI endpoint (e.g. `/embeddings`) for an `openai`
    /// service.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }
}

/// A successful call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    /// The result bytes.
    pub data: Bytes,
    /// The node that served the call.
    pub node_id: String,
    /// The policy that picked it.
    pub policy: String,
    /// Where the time went, ms.
    pub timings: Timings,
    /// Set when the gateway answered from its result cache (with the
    /// result's age); `None` when a node ran this call.
    pub cache: Option<CacheInfo>,
    /// The result's media type, when the service named one.
    pub content_type: Option<String>,
    /// The service's HTTP status (`http`/`openai` services).
    pub status: Option<u16>,
    /// Why the node was chosen, in one line (policy, node, reason, the best
    /// candidates' scores), when the call asked ([`CallOptions::explain`]).
    pub explain: Option<String>,
}

/// A streamed result's head: where the call ran and how long it waited,
/// known before the first chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultInfo {
    /// The node that serves the call.
    pub node_id: String,
    /// The policy that picked it.
    pub policy: String,
    /// Where the time went until the first chunk, ms (`node_ms` is the
    /// node's time to its first byte for a streamed result).
    pub timings: Timings,
    /// Set when the gateway answers from its result cache.
    pub cache: Option<CacheInfo>,
    /// The result's media type, when the service named one.
    pub content_type: Option<String>,
    /// The service's HTTP status (`http`/`openai` services).
    pub status: Option<u16>,
    /// The result's length, bytes, when known up front (`None` while it
    /// streams).
    pub len: Option<u64>,
    /// Why the node was chosen, in one line (policy, node, reason, the best
    /// candidates' scores), when the call asked ([`CallOptions::explain`]).
    pub explain: Option<String>,
}

/// A call's result as a stream of chunks, relayed as the service writes
/// them (a command's stdout, a model server's tokens). Yields `Bytes`
/// chunks, then ends; a service that fails midway yields its error last.
/// Dropping it before its end cancels the call: the gateway stops the
/// node's work (the command is killed, the upstream request aborted).
pub struct CallStream {
    /// The result's head.
    pub info: ResultInfo,
    chunks: Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>,
}

impl std::fmt::Debug for CallStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Stream for CallStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.as_mut().poll_next(cx)
    }
}

/// An answered call's open stream; cancels the call when dropped before its
/// result ended.
struct Open {
    send: FramedSend,
    recv: PooledRecv,
    /// Result bytes still to come, `None` for a streamed result.
    left: Option<u64>,
    done: bool,
}

impl Drop for Open {
    fn drop(&mut self) {
        if !self.done {
            self.send.reset(RESET_CANCELLED);
            self.recv.stop(RESET_CANCELLED);
        }
    }
}

impl Open {
    /// The next chunk, `None` at the result's end.
    async fn next(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let frame = match self.left {
            Some(0) => {
                self.done = true;
                return Ok(None);
            }
            _ => self.recv.recv().await,
        };
        let frame = frame.inspect_err(|_| self.done = true)?;
        match (frame, self.left.as_mut()) {
            (Some(Message::Data(chunk)), Some(left)) if chunk.len() as u64 <= *left => {
                *left -= chunk.len() as u64;
                Ok(Some(chunk))
            }
            (Some(Message::Data(chunk)), None) => Ok(Some(chunk)),
            (Some(Message::End(_)), None) => {
                self.done = true;
                Ok(None)
            }
            (Some(Message::Error(e)), None) => {
                self.done = true;
                Err(e.into())
            }
            (Some(other), _) => {
                self.done = true;
                Err(unexpected(&other))
            }
            (None, _) => {
                self.done = true;
                Err(ClientError::Protocol("result stream ended early".into()))
            }
        }
    }
}

impl Client {
    /// Calls `service` with `payload` and waits for its whole result.
    ///
    /// # Errors
    /// [`ClientError::Call`] with the gateway's typed error (unknown service,
    /// no node available, timeout, node lost, payload too large, service
    /// failed, occupied, overloaded, unauthorized, forbidden, rate limited,
    /// ...), or a connection or protocol error.
    pub async fn call(
        &self,
        service: &str,
        payload: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<CallResult, ClientError> {
        self.call_with_events(service, payload, options, |_| {})
            .await
    }

    /// Like [`Client::call`], and tells `on_event` where the call stands
    /// while it waits: its queue position each time it changes, and a
    /// reservation when a node loads the service for it.
    ///
    /// # Errors
    /// As [`Client::call`], plus [`ClientError::Protocol`] for a result
    /// larger than `max_result_bytes`.
    pub async fn call_with_events(
        &self,
        service: &str,
        payload: impl Into<Bytes>,
        options: CallOptions,
        on_event: impl FnMut(CallEvent) + Send,
    ) -> Result<CallResult, ClientError> {
        let deadline = Deadline::new(options.timeout);
        tokio::time::timeout_at(
            deadline.late(),
            self.call_whole(service, payload.into(), options, on_event, deadline),
        )
        .await
        .map_err(|_| deadline.passed(true))?
    }

    /// [`Client::call_with_events`] without its deadline's last guard.
    async fn call_whole(
        &self,
        service: &str,
        payload: Bytes,
        options: CallOptions,
        on_event: impl FnMut(CallEvent) + Send,
        deadline: Deadline,
    ) -> Result<CallResult, ClientError> {
        let (head, mut open) = self
            .start(service, payload, options, on_event, deadline)
            .await?;
        let max = self.config.max_result_bytes;
        let data = match head.payload_len {
            Some(len) => {
                let data = open.recv.recv_payload(len, max).await?;
                open.done = true;
                data
            }
            None => {
                let mut data = BytesMut::new();
                while let Some(chunk) = open.next().await? {
                    if (data.len() + chunk.len()) as u64 > max {
                        return Err(ClientError::Protocol(format!(
                            "result exceeds max_result_bytes ({max} bytes)"
                        )));
                    }
                    data.extend_from_slice(&chunk);
                }
                data.freeze()
            }
        };
        Ok(CallResult {
            data,
            node_id: head.node_id,
            policy: head.policy,
            timings: head.timings,
            cache: head.cache,
            content_type: head.content_type,
            status: head.status,
            explain: head.explain,
        })
    }

    /// Calls `service` with `payload` and returns as soon as the result's
    /// head arrives: the head ([`CallStream::info`]) and a stream of the
    /// result's chunks as the service writes them. Dropping the stream
    /// cancels the call.
    ///
    /// # Errors
    /// As [`Client::call`], for failures before the first chunk; a failure
    /// after it is the stream's last item.
    pub async fn call_stream(
        &self,
        service: &str,
        payload: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<CallStream, ClientError> {
        self.call_stream_with_events(service, payload, options, |_| {})
            .await
    }

    /// Like [`Client::call_stream`], with the events of
    /// [`Client::call_with_events`] while the call waits.
    ///
    /// # Errors
    /// As [`Client::call_stream`].
    pub async fn call_stream_with_events(
        &self,
        service: &str,
        payload: impl Into<Bytes>,
        options: CallOptions,
        on_event: impl FnMut(CallEvent) + Send,
    ) -> Result<CallStream, ClientError> {
        let deadline = Deadline::new(options.timeout);
        let (head, open) = tokio::time::timeout_at(
            deadline.late(),
            self.start(service, payload.into(), options, on_event, deadline),
        )
        .await
        .map_err(|_| deadline.passed(true))??;
        let info = ResultInfo {
            node_id: head.node_id,
            policy: head.policy,
            timings: head.timings,
            cache: head.cache,
            content_type: head.content_type,
            status: head.status,
            len: head.payload_len,
            explain: head.explain,
        };
        let chunks = futures_util::stream::unfold(open, |mut open| async move {
            match open.next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), open)),
                Ok(None) => None,
                Err(e) => Some((Err(e), open)),
            }
        });
        Ok(CallStream {
            info,
            chunks: Box::pin(chunks),
        })
    }

    /// Sends the call and its payload, reports its events, and returns the
    /// result's head with the stream still open. A gateway that answers
    /// `shutting down` is retired and the call goes to the next gateway
    /// (nothing ran: retry-safe), within the deadline.
    async fn start(
        &self,
        service: &str,
        payload: Bytes,
        options: CallOptions,
        mut on_event: impl FnMut(CallEvent) + Send,
        deadline: Deadline,
    ) -> Result<(ResultHead, Open), ClientError> {
        let mut hints = options.hints;
        if let Some(policy) = options.policy {
            hints.push(("policy".into(), policy));
        }
        let mut head = CallHead {
            hints,
            priority: options.priority,
            realtime: options.realtime,
            no_cache: options.no_cache,
            max_age_s: options
                .max_age
                .map(|age| u32::try_from(age.as_secs()).unwrap_or(u32::MAX)),
            api_key: self.config.api_key.clone(),
            endpoint: options.endpoint,
            log: false,
            ..CallHead::new(service, payload.len() as u64, 0)
        };
        let mut failovers = self.pool.gateway_count().saturating_sub(1);
        loop {
            // The wait for a stream counts against the call's time; the
            // gateway gets what is left.
            let (send, recv) = tokio::time::timeout_at(deadline.at, self.open())
                .await
                .map_err(|_| deadline.passed(false))??;
            head.timeout_ms = match deadline.left_ms() {
                0 => return Err(deadline.passed(false)),
                left => left,
            };
            let gateway = recv.gateway();
            match self
                .exchange(&head, &payload, send, recv, &mut on_event)
                .await
            {
                Err(ClientError::Call {
                    kind: protocol::ErrorKind::ShuttingDown,
                    message,
                }) => {
                    self.pool.shutting_down(gateway);
                    if failovers == 0 {
                        return Err(ClientError::Call {
                            kind: protocol::ErrorKind::ShuttingDown,
                            message,
                        });
                    }
                    failovers -= 1;
                    tracing::debug!(%message, "gateway shutting down; calling the next one");
                }
                other => return other,
            }
        }
    }

    /// Sends one call on an open stream and reads up to its result's head.
    async fn exchange(
        &self,
        head: &CallHead,
        payload: &Bytes,
        mut send: FramedSend,
        mut recv: PooledRecv,
        on_event: &mut (impl FnMut(CallEvent) + Send),
    ) -> Result<(ResultHead, Open), ClientError> {
        // The gateway may refuse early (payload too large) and stop our upload;
        // its answer is what matters, so read it even if the upload fails.
        // The head and a small payload leave in one write.
        let upload_result = match send
            .send_with_payload(&Message::Call(head.clone()), payload)
            .await
        {
            // The head did not encode: nothing was sent.
            Err(e @ transport::IoError::Codec(_)) => return Err(e.into()),
            Err(e) => Err(e),
            Ok(()) => send.finish(),
        };
        let answer = loop {
            match recv.recv().await {
                Ok(Some(Message::Queued(position))) => on_event(CallEvent::Queued { position }),
                Ok(Some(Message::Reserved(r))) => on_event(CallEvent::Reserved {
                    node_id: r.node_id,
                    from: r.from,
                    expected_ms: r.expected_ms,
                }),
                other => break other,
            }
        };
        let head = match (answer, upload_result) {
            (Ok(Some(Message::Result(head))), _) => head,
            (Ok(Some(Message::Error(e))), _) => return Err(ClientError::from(e)),
            (Ok(Some(other)), _) => return Err(unexpected(&other)),
            (Ok(None), Err(e)) | (Err(_), Err(e)) => return Err(e.into()),
            (Ok(None), Ok(())) => {
                return Err(ClientError::Protocol(
                    "gateway closed the call without answering".into(),
                ));
            }
            (Err(e), Ok(())) => return Err(e.into()),
        };
        let left = head.payload_len;
        Ok((
            head,
            Open {
                send,
                recv,
                left,
                done: false,
            },
        ))
    }
}

/// When a call must end, from when it was made.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            at: now.checked_add(timeout).unwrap_or_else(|| far_future(now)),
            timeout,
        }
    }

    /// When the SDK stops waiting for the gateway's own timeout answer.
    fn late(&self) -> Instant {
        self.at
            .checked_add(TIMEOUT_GRACE)
            .unwrap_or_else(|| far_future(self.at))
    }

    /// What is left, whole ms (0 when it passed).
    fn left_ms(&self) -> u32 {
        let left = self.at.saturating_duration_since(Instant::now());
        u32::try_from(left.as_millis()).unwrap_or(u32::MAX)
    }

    fn passed(&self, sent: bool) -> ClientError {
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
