//! Leases (look-aside): the gateway picks a node for a service and has it
//! hold a slot ([`Client::lease`]); the client then calls the node's
//! direct port with the lease's token ([`Lease::call`]), so the payload
//! and the result do not cross the gateway.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::{LeaseGrant, LeaseRelease, Message};

use crate::call::{Deadline, DirectRecv, Open, Request, Source, direct_lost};
use crate::direct::DirectError;
use crate::pool::Gateway;
use crate::{CallEvent, CallOptions, CallResult, CallStream, Client, ClientError, ResultMeta};

/// How long a release waits for the gateway's answer (the gateway itself
/// waits up to 2 s for the node).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// A lease request, built by [`Client::lease`]: set its options with the
/// methods below, then `.await` it for the [`Lease`]. Nothing is sent
/// until then.
#[must_use = "a lease is asked for only when it is awaited"]
pub struct LeaseBuilder<'a> {
    client: &'a Client,
    service: &'a str,
    options: CallOptions,
    max_calls: u32,
    idle: Duration,
    ttl: Duration,
    on_event: Box<dyn FnMut(CallEvent) + Send + 'a>,
}

impl std::fmt::Debug for LeaseBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseBuilder")
            .field("service", &self.service)
            .field("options", &self.options)
            .field("max_calls", &self.max_calls)
            .field("idle", &self.idle)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<'a> LeaseBuilder<'a> {
    /// Replaces the admission options with `options`: hints, policy,
    /// priority, realtime, trace context, and `timeout`, how long to wait
    /// for a node (default 30 s). `mode`, `no_cache`, `max_age`,
    /// `endpoint` and `idempotent` do not apply to a lease.
    pub fn options(mut self, options: CallOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets how long to wait for a node, queue included (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// How many direct calls the lease serves before it ends (default 1:
    /// one call; more makes a session on one node). The gateway refuses
    /// more than its `[leases] max_calls`.
    pub fn max_calls(mut self, max_calls: u32) -> Self {
        self.max_calls = max_calls.max(1);
        self
    }

    /// Ends the lease after `idle` without a call (whole ms; default none:
    /// only its lifetime bounds it).
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The lease's lifetime from its grant (whole ms; default the
    /// gateway's `[leases] ttl_ms`, 30 s; cut to its `max_ttl_ms`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    crate::setters::admission_setters!();

    async fn send(self) -> Result<Lease, ClientError> {
        let Self {
            client,
            service,
            options,
            max_calls,
            idle,
            ttl,
            on_event,
        } = self;
        let request = Request::Lease {
            max_calls,
            idle_ms: millis(idle),
            ttl_ms: millis(ttl),
        };
        let deadline = Deadline::new(options.timeout);
        tokio::time::timeout_at(
            deadline.late(),
            client.lease_with(service, options, request, on_event, deadline),
        )
        .await
        .map_err(|_| deadline.passed(true))?
    }
}

impl<'a> IntoFuture for LeaseBuilder<'a> {
    type Output = Result<Lease, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    /// Asks the gateway for the lease and waits for its grant.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A granted lease: a node holds a slot of the service for it until its
/// calls are used, it idles or expires, or it is released. Cloning it is
/// cheap (the clones are the same lease); its calls go to the node's
/// direct port, one at a time (a lease holds one slot).
#[derive(Clone)]
pub struct Lease {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    service: String,
    grant: LeaseGrant,
    /// The gateway that granted it: releases go there.
    gateway: Arc<Gateway>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.inner.grant;
        f.debug_struct("Lease")
            .field("lease_id", &g.lease_id)
            .field("service", &self.inner.service)
            .field("node_id", &g.node_id)
            .field("direct", &g.direct)
            .field("expires_unix_ms", &g.expires_unix_ms)
            .field("max_calls", &g.max_calls)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The gateway's grant: lease id, node, direct address, token, ttl
    /// and expiry (ms since the Unix epoch, the gateway's clock), calls,
    /// idle timeout, policy, wait (ms) and the granting gateway's name.
    pub fn grant(&self) -> &LeaseGrant {
        &self.inner.grant
    }

    /// The service the lease is for.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The node holding the lease's slot.
    pub fn node_id(&self) -> &str {
        &self.inner.grant.node_id
    }

    /// The node's direct port, `host:port`.
    pub fn direct(&self) -> &str {
        &self.inner.grant.direct
    }

    /// The token each direct call carries (a bearer credential for the
    /// lease's calls: keep it private).
    pub fn token(&self) -> &str {
        &self.inner.grant.token
    }

    /// When the lease expires (the gateway's clock).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.inner.grant.expires_unix_ms)
    }

    /// A direct call of the lease's service with `payload`, default
    /// options: set them on the returned [`DirectCall`], then `.await` it
    /// for the whole result or [`DirectCall::stream`] for its chunks.
    ///
    /// # Errors
    /// Awaiting it gives [`ClientError::NodeUnreachable`] when the node's
    /// direct port cannot be reached (nothing ran), [`ClientError::Call`] with
    /// the node's typed error (`lease ended`: the lease expired, idled,
    /// was released or used its calls; `occupied`: a call of the lease is
    /// running; `unauthorized`; `payload too large`; `service failed`;
    /// `node lost` when the connection died mid-call), or
    /// [`ClientError::Timeout`].
    pub fn call(&self, payload: impl Into<Bytes>) -> DirectCall<'_> {
        DirectCall {
            lease: self,
            payload: payload.into(),
            options: CallOptions::default(),
        }
    }

    /// Releases the lease now, through the gateway that granted it: the
    /// node frees its slot. Releasing a lease that already ended is an
    /// error from the gateway (`bad request`).
    ///
    /// # Errors
    /// [`ClientError::Call`] with the gateway's refusal, a connection
    /// error when that gateway cannot be reached, or
    /// [`ClientError::Timeout`] after 5 s without an answer.
    pub async fn release(&self) -> Result<(), ClientError> {
        let inner = &self.inner;
        let release = async {
            let (mut send, mut recv) = inner
                .client
                .pool
                .open_at(inner.client.codec, &inner.gateway)
                .await?;
            let message = Message::ReleaseLease(LeaseRelease {
                token: inner.grant.token.clone(),
            });
            send.send(&message).await?;
            send.finish()?;
            match recv.expect("an answer").await? {
                Message::Ack(_) => Ok(()),
                Message::Error(e) => Err(ClientError::from(e)),
                other => Err(crate::unexpected(&other)),
            }
        };
        tokio::time::timeout(RELEASE_TIMEOUT, release)
            .await
            .map_err(|_| ClientError::Timeout {
                sent: true,
                timeout_ms: u64::try_from(RELEASE_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
            })?
    }
}

/// One direct call on a lease, built by [`Lease::call`]: `.await` it for
/// the whole result ([`CallResult`]) or call [`DirectCall::stream`].
/// Nothing is sent until then. The result's [`ResultMeta`] names the node,
/// the lease's policy and the node's timings.
#[must_use = "a call is sent only when it is awaited or streamed"]
pub struct DirectCall<'a> {
    lease: &'a Lease,
    payload: Bytes,
    options: CallOptions,
}

impl std::fmt::Debug for DirectCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectCall")
            .field("lease", &self.lease)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl DirectCall<'_> {
    /// Replaces the call's options: `timeout`, `endpoint` and
    /// `traceparent` apply to a direct call; the others were the lease's.
    pub fn options(mut self, options: CallOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets how long the call may take, its direct connection included
    /// (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// Names the OpenAI endpoint (e.g. `/embeddings`) for an `openai`
    /// service ([`CallOptions::endpoint`]).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.options.endpoint = Some(endpoint.into());
        self
    }

    /// Carries the caller's W3C trace context ([`CallOptions::traceparent`]).
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.options.traceparent = Some(traceparent.into());
        self
    }

    /// Sends the call and returns once the result's head arrives, with a
    /// stream of its chunks; dropping the stream cancels the call.
    ///
    /// # Errors
    /// As awaiting the call ([`Lease::call`]), for failures before the
    /// first chunk; a failure after it is the stream's last item.
    pub async fn stream(self) -> Result<CallStream, ClientError> {
        let deadline = Deadline::new(self.options.timeout);
        let client = &self.lease.inner.client;
        let started = tokio::time::timeout_at(
            deadline.late(),
            client.direct_start(self.lease, self.payload, self.options, deadline),
        )
        .await
        .map_err(|_| deadline.passed(true))?;
        let (meta, open) = started.map_err(DirectFailed::into_error)?;
        Ok(open.into_stream(meta))
    }

    async fn whole(self) -> Result<CallResult, ClientError> {
        let deadline = Deadline::new(self.options.timeout);
        let client = &self.lease.inner.client;
        tokio::time::timeout_at(deadline.late(), async {
            let (meta, open) = client
                .direct_start(self.lease, self.payload, self.options, deadline)
                .await
                .map_err(DirectFailed::into_error)?;
            open.whole(meta, client.config.max_result_bytes).await
        })
        .await
        .map_err(|_| deadline.passed(true))?
    }
}

impl<'a> IntoFuture for DirectCall<'a> {
    type Output = Result<CallResult, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    /// Sends the call and reads its whole result (see [`Lease::call`]).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.whole())
    }
}

/// How a direct call failed before its result's head.
#[derive(Debug)]
pub(crate) enum DirectFailed {
    /// The node's direct port could not be reached: nothing was sent.
    Unreachable(ClientError),
    /// Anything else: the node's typed error, a lost connection, a
    /// protocol error.
    Failed(ClientError),
}

impl DirectFailed {
    pub(crate) fn into_error(self) -> ClientError {
        match self {
            Self::Unreachable(e) | Self::Failed(e) => e,
        }
    }
}

impl Client {
    /// A lease of a node of `service`, default options: set them on the
    /// returned [`LeaseBuilder`], then `.await` it. The gateway admits it
    /// as a call (tenant checks, the queue, the service's policy), has the
    /// picked node hold a slot, and answers with the node's direct address
    /// and a token.
    ///
    /// # Errors
    /// Awaiting it gives [`ClientError::Call`] with the gateway's typed
    /// error (unknown service, no node available, occupied, timeout,
    /// unauthorized, forbidden, rate limited, `bad request` when leases
    /// are off or the request is out of bounds, ...),
    /// [`ClientError::Timeout`] when the SDK's clock ran out first, or a
    /// connection or protocol error.
    ///
    /// ```no_run
    /// # async fn demo(client: switchyard_client::Client) -> Result<(), switchyard_client::ClientError> {
    /// use std::time::Duration;
    /// let lease = client
    ///     .lease("sha256")
    ///     .max_calls(10)
    ///     .idle(Duration::from_secs(5))
    ///     .on_event(|event| eprintln!("{event:?}"))
    ///     .await?;
    /// println!("node {} at {}", lease.node_id(), lease.direct());
    /// for i in 0..10 {
    ///     let result = lease.call(format!("chunk {i}")).await?;
    ///     println!("{} bytes from {}", result.data.len(), result.meta.node_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lease<'a>(&'a self, service: &'a str) -> LeaseBuilder<'a> {
        LeaseBuilder {
            client: self,
            service,
            options: CallOptions::default(),
            max_calls: 1,
            idle: Duration::ZERO,
            ttl: Duration::ZERO,
            on_event: Box::new(|_| {}),
        }
    }

    /// Asks a gateway for a lease and reads its grant.
    pub(crate) async fn lease_with(
        &self,
        service: &str,
        options: CallOptions,
        request: Request,
        on_event: impl FnMut(CallEvent) + Send,
        deadline: Deadline,
    ) -> Result<Lease, ClientError> {
        let head = options.into_head(service, 0);
        let (answer, mut open) = self
            .send_request(request, head, &Bytes::new(), false, on_event, deadline)
            .await?;
        // The grant is the whole answer.
        open.done = true;
        let gateway = match &open.recv {
            Source::Gateway(recv) => Arc::clone(recv.gateway()),
            Source::Node(_) => return Err(ClientError::Protocol("a lease from a node".into())),
        };
        match answer {
            Message::Leased(grant) => Ok(Lease {
                inner: Arc::new(Inner {
                    client: self.clone(),
                    service: service.to_string(),
                    grant,
                    gateway,
                }),
            }),
            other => Err(crate::unexpected(&other)),
        }
    }

    /// Sends a call of `lease` to its node's direct port and reads up to
    /// the result's head.
    pub(crate) async fn direct_start(
        &self,
        lease: &Lease,
        payload: Bytes,
        options: CallOptions,
        deadline: Deadline,
    ) -> Result<(ResultMeta, Open), DirectFailed> {
        let grant = lease.grant();
        let address = grant.direct.as_str();
        let timeout = self.pool.connect_timeout();
        let (mut send, mut recv) = self
            .direct
            .open(&self.pool, self.codec, address, timeout, deadline.at)
            .await
            .map_err(|e| match e {
                DirectError::Unreachable(message) => {
                    DirectFailed::Unreachable(ClientError::NodeUnreachable {
                        node_id: grant.node_id.clone(),
                        address: address.to_string(),
                        message,
                    })
                }
                DirectError::Fatal(e) => DirectFailed::Failed(e),
            })?;
        let mut head = options.into_head(&lease.inner.service, payload.len() as u64);
        // The node runs what the lease was granted for: admission hints
        // were the gateway's.
        head.hints.clear();
        head.priority = 0;
        head.lease = Some(grant.token.clone());
        head.timeout_ms = match deadline.left_ms() {
            0 => return Err(DirectFailed::Failed(deadline.passed(false))),
            left => left,
        };
        let lost = |e| DirectFailed::Failed(direct_lost(e, &grant.node_id, address));
        // The node may refuse early and stop the upload: read its answer
        // even if the upload fails.
        let upload = match send.send_with_payload(&Message::Call(head), &payload).await {
            Err(e @ transport::IoError::Codec(_)) => return Err(DirectFailed::Failed(e.into())),
            Err(e) => Err(e),
            Ok(()) => send.finish(),
        };
        let meta = match (recv.recv().await, upload) {
            (Ok(Some(Message::Result(mut meta))), _) => {
                if meta.node_id.is_empty() {
                    meta.node_id.clone_from(&grant.node_id);
                }
                if meta.policy.is_empty() {
                    meta.policy.clone_from(&grant.policy);
                }
                meta
            }
            (Ok(Some(Message::Error(e))), _) => return Err(DirectFailed::Failed(e.into())),
            (Ok(Some(other)), _) => {
                return Err(DirectFailed::Failed(ClientError::Protocol(format!(
                    "unexpected {:?} frame from node {}",
                    other.kind(),
                    grant.node_id
                ))));
            }
            (Ok(None), Err(e)) | (Err(_), Err(e)) | (Err(e), Ok(())) => return Err(lost(e)),
            (Ok(None), Ok(())) => {
                return Err(DirectFailed::Failed(ClientError::Protocol(format!(
                    "node {} closed the call without answering",
                    grant.node_id
                ))));
            }
        };
        let left = meta.payload_len;
        Ok((
            meta,
            Open {
                send,
                recv: Source::Node(DirectRecv {
                    recv,
                    node_id: Arc::from(grant.node_id.as_str()),
                    address: Arc::from(address),
                }),
                left,
                done: false,
            },
        ))
    }
}

/// `duration` in whole ms, saturating.
pub(crate) fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
