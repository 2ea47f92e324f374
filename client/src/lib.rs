//! The Switchyard client SDK: call services on a fleet through a gateway.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client::ClientError> {
//! use client::{CallOptions, Client, ClientConfig};
//! let client = Client::connect(ClientConfig::new("127.0.0.1:4433", "ca.pem")).await?;
//! let result = client.call("sha256", b"hello".to_vec(), CallOptions::default()).await?;
//! println!("{} answered in {} ms", result.node_id, result.timings.total_ms);
//! # Ok(()) }
//! ```
//!
//! A [`Client`] keeps a pool of QUIC connections to one or more gateways
//! (by default one connection: QUIC carries each call as its own stream)
//! and opens one stream per call, so calls from many tasks and threads
//! share it; it is cheap to clone. After a connection loss the next call
//! reconnects, failing over to the next gateway address while one is down
//! (see [`PoolConfig`]).

mod error;
mod pool;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::{
    CallHead, Codec, Message, NodeView, PolicyTable, PurgeCache, QueueView, SetPolicy, Timings,
};
use transport::FramedSend;

pub use error::ClientError;
pub use pool::{GatewayStats, PoolConfig, PoolStats};
pub use protocol::{CacheInfo, CacheStatsView, ErrorKind, PolicyView, ServiceCacheStats, Side};

/// Where the gateway is and how to trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Gateway address, `host:port` (e.g. `127.0.0.1:4433`): the first one
    /// tried.
    pub gateway: String,
    /// More gateway addresses, tried in order while the ones before are
    /// down (default none); see [`ClientConfig::with_gateways`].
    pub fallback_gateways: Vec<String>,
    /// Name the gateway's certificate must carry (default `localhost`).
    pub server_name: String,
    /// CA file that signed the gateway's certificate, PEM.
    pub ca: PathBuf,
    /// Largest result accepted, bytes (default 16 MiB).
    pub max_result_bytes: u64,
    /// Connections per gateway, streams per connection, timeouts.
    pub pool: PoolConfig,
}

impl ClientConfig {
    /// A configuration for `gateway`, trusting `ca`, with defaults otherwise.
    pub fn new(gateway: impl Into<String>, ca: impl Into<PathBuf>) -> Self {
        Self {
            gateway: gateway.into(),
            fallback_gateways: Vec::new(),
            server_name: "localhost".into(),
            ca: ca.into(),
            max_result_bytes: u64::from(protocol::DEFAULT_MAX_FRAME_LEN),
            pool: PoolConfig::default(),
        }
    }
}

/// Per-call options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOptions {
    /// How long to wait for the result, from when the gateway reads the call
    /// (default 30 s).
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
}

/// A connection pool to one or more gateways. Cloning it is cheap: the
/// clones share the pool, and it can be used from any task or thread.
#[derive(Debug, Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    pool: Arc<pool::Pool>,
    codec: Codec,
}

impl Client {
    /// Checks the configuration, sets up TLS and connects to the first
    /// reachable gateway (more connections open as calls need them).
    ///
    /// # Errors
    /// [`ClientError::Config`] for an unusable CA file, no gateway address,
    /// a zero pool size or stream cap, or when no address resolves;
    /// [`ClientError::Connect`] when no gateway can be reached.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let pool = Arc::new(pool::Pool::new(&config)?);
        pool.warm_up().await?;
        Ok(Self {
            config: Arc::new(config),
            pool,
            codec: Codec::default(),
        })
    }

    /// Opens a stream for one call on a pooled connection, waiting for a
    /// free stream if every connection is at its cap. The returned receive
    /// half holds the stream's place in the pool until it is dropped.
    async fn open(&self) -> Result<(FramedSend, pool::PooledRecv), ClientError> {
        self.pool.open(self.codec).await
    }

    /// Calls `service` with `payload` and waits for its result.
    ///
    /// # Errors
    /// [`ClientError::Call`] with the gateway's typed error (unknown service,
    /// no node available, timeout, node lost, payload too large, service
    /// failed, occupied, overloaded, ...), or a connection or protocol error.
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
    /// As [`Client::call`].
    pub async fn call_with_events(
        &self,
        service: &str,
        payload: impl Into<Bytes>,
        options: CallOptions,
        mut on_event: impl FnMut(CallEvent) + Send,
    ) -> Result<CallResult, ClientError> {
        let payload = payload.into();
        let mut hints = options.hints;
        if let Some(policy) = options.policy {
            hints.push(("policy".into(), policy));
        }
        let head = CallHead {
            hints,
            priority: options.priority,
            realtime: options.realtime,
            no_cache: options.no_cache,
            max_age_s: options
                .max_age
                .map(|age| u32::try_from(age.as_secs()).unwrap_or(u32::MAX)),
            ..CallHead::new(
                service,
                payload.len() as u64,
                u32::try_from(options.timeout.as_millis()).unwrap_or(u32::MAX),
            )
        };
        let (mut send, mut recv) = self.open().await?;
        send.send(&Message::Call(head)).await?;
        // The gateway may refuse early (payload too large) and stop our upload;
        // its answer is what matters, so read it even if the upload fails.
        let upload = async {
            send.send_payload(&payload).await?;
            send.finish()
        };
        let upload_result = upload.await;
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
        let data = recv
            .recv_payload(head.payload_len, self.config.max_result_bytes)
            .await?;
        Ok(CallResult {
            data,
            node_id: head.node_id,
            policy: head.policy,
            timings: head.timings,
            cache: head.cache,
        })
    }

    /// The nodes registered with the gateway, with their stats.
    ///
    /// # Errors
    /// A connection or protocol error.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        match self.request(Message::ListNodes).await? {
            Message::Nodes(nodes) => Ok(nodes),
            other => Err(unexpected(&other)),
        }
    }

    /// Every service's queue: length, capacity, oldest wait, reserved calls
    /// and counters.
    ///
    /// # Errors
    /// A connection or protocol error.
    pub async fn queues(&self) -> Result<Vec<QueueView>, ClientError> {
        match self.request(Message::ListQueues).await? {
            Message::Queues(queues) => Ok(queues),
            other => Err(unexpected(&other)),
        }
    }

    /// The gateway's policy table: loaded policies (file, hash, load time,
    /// picks, traps), which service uses which, and refused plugin files.
    ///
    /// # Errors
    /// A connection or protocol error.
    pub async fn policies(&self) -> Result<PolicyTable, ClientError> {
        match self.request(Message::ListPolicies).await? {
            Message::Policies(table) => Ok(table),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes `service` use the loaded policy `policy` from its next call on.
    /// Returns the gateway's confirmation text.
    ///
    /// # Errors
    /// [`ClientError::Call`] with `unauthorized` for a wrong admin token or
    /// `bad request` for a policy that is not loaded.
    pub async fn set_policy(
        &self,
        admin_token: &str,
        service: &str,
        policy: &str,
    ) -> Result<String, ClientError> {
        let request = Message::SetPolicy(SetPolicy {
            admin_token: admin_token.to_string(),
            service: service.to_string(),
            policy: policy.to_string(),
        });
        match self.request(request).await? {
            Message::Ack(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// The gateway's result cache: bytes held and bound, and per cached
    /// service its entries, bytes, hits, coalesced calls, misses, evictions
    /// and expirations.
    ///
    /// # Errors
    /// A connection or protocol error.
    pub async fn cache_stats(&self) -> Result<CacheStatsView, ClientError> {
        match self.request(Message::CacheStats).await? {
            Message::CacheStatsView(stats) => Ok(stats),
            other => Err(unexpected(&other)),
        }
    }

    /// Drops the gateway's cached results of `service`, or of every service
    /// with `None`. Returns the gateway's confirmation text (entries and
    /// bytes dropped).
    ///
    /// # Errors
    /// [`ClientError::Call`] with `unauthorized` for a wrong admin token, or
    /// a connection or protocol error.
    pub async fn purge_cache(
        &self,
        admin_token: &str,
        service: Option<&str>,
    ) -> Result<String, ClientError> {
        let request = Message::PurgeCache(PurgeCache {
            admin_token: admin_token.to_string(),
            service: service.map(str::to_string),
        });
        match self.request(request).await? {
            Message::Ack(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one request message on a new stream and reads one answer
    /// (a gateway `Error` becomes [`ClientError::Call`]).
    async fn request(&self, message: Message) -> Result<Message, ClientError> {
        let (mut send, mut recv) = self.open().await?;
        send.send(&message).await?;
        send.finish()?;
        match recv.expect("an answer").await? {
            Message::Error(e) => Err(ClientError::from(e)),
            answer => Ok(answer),
        }
    }

    /// Closes every pooled connection, for all clones of this client
    /// (pending calls fail), and waits until the gateways know. A later
    /// call connects again.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn unexpected(message: &Message) -> ClientError {
    ClientError::Protocol(format!(
        "unexpected {:?} frame from the gateway",
        message.kind()
    ))
}
