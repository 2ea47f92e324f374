//! The Switchyard client SDK: call services on a fleet through a gateway.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_client::ClientError> {
//! use std::time::Duration;
//! use switchyard_client::{Client, ClientConfig};
//! let client = Client::connect(ClientConfig::new("127.0.0.1:4433", "ca.pem")).await?;
//! let result = client
//!     .call("sha256", b"hello".to_vec())
//!     .timeout(Duration::from_secs(5))
//!     .await?;
//! let meta = &result.meta;
//! println!("{} answered in {} ms", meta.node_id, meta.timings.total_ms);
//! # Ok(()) }
//! ```
//!
//! [`Client::call`] builds a [`Call`]: its options are methods
//! (`.timeout`, `.hint`, `.policy`, `.priority`, `.realtime`, `.no_cache`,
//! `.max_age`, `.endpoint`, `.explain`, `.on_event` for queue positions and
//! reservations). Awaiting it gives the whole result, a [`CallResult`]
//! (`meta` and `data`); [`Call::stream`] gives a [`CallStream`] of chunks
//! that carries the same [`ResultMeta`].
//!
//! Look-aside: [`Client::lease`] asks the gateway for a node (queued,
//! picked and admitted as a call) and gets its direct address and a token
//! ([`Lease`]); [`Lease::call`] then sends payloads to the node's direct
//! port, so they do not cross the gateway (nor its result cache). A call
//! with [`Call::look_aside`] (or a service in [`ClientConfig::look_aside`])
//! does it all in one: it leases the node for one call, calls it
//! directly, and goes through the gateway when the node's direct port
//! cannot be reached. Direct connections are pooled per node address.
//!
//! A [`Client`] keeps a pool of QUIC connections to one or more gateways
//! (up to 4 per gateway by default, opened as calls fill them: QUIC
//! carries each call as its own stream) and opens one stream per call, so calls from many tasks and threads
//! share it; it is cheap to clone. After a connection loss the next call
//! reconnects, failing over to the next gateway address while one is down
//! (see [`PoolConfig`]).
//!
//! Several gateways serving one fleet (a cluster) are reached through a
//! bootstrap list ([`Client::connect_cluster`], [`ClientConfig::for_cluster`]):
//! the client asks the first gateway that answers for the member list
//! ([`Client::members`]), spreads its calls round-robin over the members,
//! and follows the list (every [`ClientConfig::member_refresh`], and at
//! once when a connection is lost). A gateway without a cluster names
//! itself alone; then the bootstrap list is what calls spread over.
//!
//! A call goes to another gateway, within its timeout, only when it cannot
//! have run: its stream could not be opened or written, the connection
//! died before the gateway acknowledged all of the call, or the gateway
//! refused it (`shutting down`, or an error marked `not_run` that is not
//! the caller's fault). A call the gateway had when its connection died
//! may have run: it ends with [`ClientError::GatewayLost`], unless it was
//! marked [`Call::idempotent`], which sends it to another gateway.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_client::ClientError> {
//! use switchyard_client::Client;
//! let client = Client::connect_cluster(&["10.0.0.11:4433", "10.0.0.12:4433"], "ca.pem").await?;
//! let result = client.call("sha256", b"hello".to_vec()).idempotent(true).await?;
//! println!("served by {}", result.meta.node_id);
//! # Ok(()) }
//! ```

mod call;
mod direct;
mod error;
mod jobs;
mod lease;
mod members;
mod pool;
mod setters;

use std::path::PathBuf;
use std::sync::Arc;

use protocol::{Codec, Message, NodeView, PolicyTable, PurgeCache, QueueView, SetPolicy};
use transport::FramedSend;

pub use call::{Call, CallEvent, CallOptions, CallResult, CallStream, Mode};
pub use error::ClientError;
pub use lease::{DirectCall, Lease, LeaseBuilder};
pub use pool::{GatewayStats, PoolConfig, PoolStats};
/// A call's result metadata, as the gateway sends it ahead of the result's
/// bytes (the wire's `ResultHead`): the node that served the call
/// (`node_id`), the policy that picked it (`policy`), where the time went
/// (`timings`, ms), whether the gateway's result cache answered (`cache`),
/// the result's media type and HTTP status for `http`/`openai` services,
/// its length in bytes when known up front (`payload_len`; `None` for a
/// streamed result), and the policy's explanation when the call asked
/// (`explain`). A whole result ([`CallResult::meta`]) and a stream
/// ([`CallStream::meta`]) carry it alike.
pub use protocol::ResultHead as ResultMeta;
pub use protocol::{
    CacheInfo, CacheStatsView, ErrorKind, LeaseGrant, PolicyView, ServiceCacheStats, Side, Timings,
};
pub use protocol::{
    JobFilter, JobPage, JobSettings, JobSpec, JobState, JobView, LogEntry, LogStream, Transition,
};

/// Where the gateway is and how to trust it.
#[derive(Clone, PartialEq, Eq)]
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
    /// The API key every call presents, naming the caller's tenant
    /// (`[[tenants]] api_keys` in the gateway's configuration; default
    /// none: anonymous, which a gateway accepts only when it has no
    /// tenants). Never logged.
    pub api_key: Option<String>,
    /// Newest wire version offered to the gateway (default 2,
    /// `switchyard/2`, with `switchyard/1` offered too): each connection
    /// speaks the one the gateway picks. `1` speaks only the first
    /// release's format.
    pub max_wire_version: protocol::WireVersion,
    /// Whether the gateway addresses are the bootstrap list of a cluster
    /// (default false): the client then
    /// asks the first gateway that answers for the cluster's member list,
    /// spreads calls over the members (round-robin), asks again every
    /// [`ClientConfig::member_refresh`] and at once when a connection is
    /// lost, and sends a call that did not run to another member. Without
    /// it, calls go to the first gateway that is up (see [`PoolConfig`]).
    /// [`ClientConfig::for_cluster`] and [`ClientConfig::with_cluster`]
    /// set it.
    pub cluster: bool,
    /// How often a cluster client asks for the member list again (default
    /// 5 s).
    pub member_refresh: std::time::Duration,
    /// Services always called look-aside ([`Mode::LookAside`]: lease a
    /// node, call it directly, through the gateway when its direct port
    /// cannot be reached), whatever a call's [`CallOptions::mode`] says
    /// (default none).
    pub look_aside: Vec<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("gateway", &self.gateway)
            .field("fallback_gateways", &self.fallback_gateways)
            .field("server_name", &self.server_name)
            .field("ca", &self.ca)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("pool", &self.pool)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_wire_version", &self.max_wire_version)
            .field("cluster", &self.cluster)
            .field("member_refresh", &self.member_refresh)
            .field("look_aside", &self.look_aside)
            .finish()
    }
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
            api_key: None,
            max_wire_version: protocol::WireVersion::LATEST,
            cluster: false,
            member_refresh: members::DEFAULT_MEMBER_REFRESH,
            look_aside: Vec::new(),
        }
    }

    /// A configuration for a cluster of gateways reached through
    /// `bootstrap` (`host:port` addresses, at least one: those that are
    /// down are skipped), trusting `ca`, with defaults otherwise; see
    /// [`ClientConfig::cluster`].
    pub fn for_cluster<I, S>(bootstrap: I, ca: impl Into<PathBuf>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut config = Self::new("", ca).with_gateways(bootstrap);
        config.cluster = true;
        config
    }

    /// The same configuration offering wire versions up to `version` only.
    #[must_use]
    pub fn with_max_wire_version(mut self, version: protocol::WireVersion) -> Self {
        self.max_wire_version = version;
        self
    }
}

/// A connection pool to one or more gateways. Cloning it is cheap: the
/// clones share the pool, and it can be used from any task or thread.
#[derive(Debug, Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    pool: Arc<pool::Pool>,
    /// Connections to nodes' direct ports (look-aside calls).
    direct: Arc<direct::DirectPool>,
    codec: Codec,
    /// The admin token job requests present ([`Client::with_admin_token`]).
    admin_token: Option<Arc<str>>,
}

impl Client {
    /// Checks the configuration, sets up TLS and connects to the first
    /// reachable gateway (more connections open as calls need them). A
    /// cluster configuration ([`ClientConfig::cluster`]) then asks that
    /// gateway for the member list (waiting at most 2 s; without an answer
    /// the configured addresses are used) and follows it in the background.
    ///
    /// # Errors
    /// [`ClientError::Config`] for an unusable CA file, no gateway address,
    /// a zero pool size or stream cap, or when no address resolves;
    /// [`ClientError::Connect`] when no gateway can be reached.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let pool = Arc::new(pool::Pool::new(&config)?);
        pool.warm_up().await?;
        let codec = Codec::default();
        if config.cluster {
            let members = members::Members::new(&config, codec);
            members.refresh(&pool).await;
            members.follow(&pool, config.member_refresh);
        }
        Ok(Self {
            config: Arc::new(config),
            pool,
            direct: Arc::default(),
            codec,
            admin_token: None,
        })
    }

    /// Opens a stream for one call on a pooled connection, waiting for a
    /// free stream if every connection is at its cap and the pool is full
    /// (callers bound the wait by the call's deadline). The returned
    /// receive half holds the stream's place in the pool until it is
    /// dropped.
    async fn open(&self) -> Result<(FramedSend, pool::PooledRecv), ClientError> {
        self.pool.open(self.codec, None).await
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

    /// Closes every pooled connection, the direct ones to nodes too, for
    /// all clones of this client (pending calls fail), and waits until the
    /// peers know. A later call connects again.
    pub async fn close(&self) {
        self.direct.close();
        self.pool.close().await;
    }
}

pub(crate) fn unexpected(message: &Message) -> ClientError {
    ClientError::Protocol(format!(
        "unexpected {:?} frame from the gateway",
        message.kind()
    ))
}
