#![warn(unreachable_pub)]

//! The Switchyard gateway: accepts QUIC connections from node agents (which
//! register services and report stats) and from clients (which make calls),
//! picks a node for each call with a WebAssembly policy, and forwards it.
//!
//! Start one in-process with [`Gateway::bind`] then [`Gateway::serve`], or
//! with [`run`]. See `ARCHITECTURE.md` for the map.

// The rooms, front ends first; each depends only on the ones below it
// (ARCHITECTURE.md, "Architecture Invariant"; `make lint` checks there is
// no import circle among them).
mod admin;
mod cache;
mod calls;
pub mod cli;
mod cluster;
pub mod config;
mod drain;
mod events;
mod fleet;
mod health;
mod http_error;
mod ingress;
mod jobs;
mod leases;
mod openai;
mod policies;
mod scheduler;
mod server;
mod sync;
pub mod telemetry;
mod tenants;
mod tree;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use config::{ConfigError, GatewayConfig};
pub use fleet::{Node, Registry};
pub use policies::Policies;
pub use server::{Gateway, certs};

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material could not be created or loaded, or the socket not bound.
    #[error(transparent)]
    Tls(#[from] transport::TlsError),
    /// The policy engine could not start.
    #[error("policy engine: {0}")]
    Policy(#[from] policy_host::PolicyError),
    /// A file in the data directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The OTLP exporter could not start (`[tracing]`).
    #[error("tracing: {0}")]
    Tracing(#[from] otel::OtelError),
    /// The job store could not be opened or migrated (`[jobs]`).
    #[error("job store: {0}")]
    Jobs(String),
    /// The cluster could not be joined (`[cluster]`): its name is taken,
    /// or its etcd endpoints are unusable.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// State every connection task shares.
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    pub(crate) registry: Arc<fleet::Registry>,
    pub(crate) policies: Arc<policies::Policies>,
    pub(crate) scheduler: Arc<scheduler::Scheduler>,
    /// When the gateway started (second 0 of the call window).
    pub(crate) started: std::time::Instant,
    /// Finished calls per second, for the dashboard.
    pub(crate) window: telemetry::CallWindow,
    /// Changes the admin event stream announces.
    pub(crate) events: tokio::sync::broadcast::Sender<events::AdminEvent>,
    pub(crate) cache: Arc<cache::ResultCache>,
    /// The policies' recent decisions per service ("why this node").
    pub(crate) decisions: policies::Decisions,
    /// When each model was first seen served (`GET /v1/models`).
    pub(crate) first_seen: ingress::models::FirstSeen,
    pub(crate) codec: protocol::Codec,
    /// Calls' spans (`[tracing]`; makes none when off).
    pub(crate) tracer: otel::Tracer,
    pub(crate) agent_token: String,
    pub(crate) admin_token: String,
    pub(crate) next_call_id: AtomicU64,
    /// The tenants and their keys (the anonymous tenant when none are
    /// configured).
    pub(crate) tenants: tenants::Tenants,
    /// Graceful shutdown: whether new calls are refused, calls in flight.
    pub(crate) drain: Arc<drain::Drain>,
    /// Durable jobs, set once the store is open (`[jobs] enabled`).
    pub(crate) jobs: std::sync::OnceLock<Arc<jobs::Jobs>>,
    /// The configured services and tenants, held as label values of their
    /// own ([`telemetry::labels`]) while the gateway runs.
    pub(crate) _known: [telemetry::labels::Known; 2],
    /// The last answer of `GET /ready`, reused for a second.
    pub(crate) readiness: health::Readiness,
    /// The gateways serving this fleet (this one alone without
    /// `[cluster]`).
    pub(crate) cluster: Arc<cluster::Cluster>,
    /// Run-time changes: through etcd with `[cluster]`, else here alone.
    pub(crate) sync: sync::Sync,
    /// Look-aside leases: the signing keys and the active leases.
    pub(crate) leases: leases::Leases,
    /// This gateway's place in a tree of gateways (its id, ancestry and
    /// the link to its parent).
    pub(crate) tree: tree::Tree,
}

impl Shared {
    /// The jobs, or [`jobs::JobError::Disabled`].
    ///
    /// # Errors
    /// [`jobs::JobError::Disabled`] when `[jobs] enabled = false`.
    pub(crate) fn jobs(&self) -> Result<&Arc<jobs::Jobs>, jobs::JobError> {
        self.jobs.get().ok_or(jobs::JobError::Disabled)
    }

    /// Tells `/api/events` listeners about a change (none listening is fine).
    pub(crate) fn announce(&self, event: events::AdminEvent) {
        let _ = self.events.send(event);
    }
}

/// Runs a gateway until `shutdown` resolves.
///
/// # Errors
/// A [`GatewayError`] when it cannot start, among them
/// [`ConfigError::Refused`] for anonymous access on an address that is not
/// loopback ([`config::check_anonymous`], checked by [`Gateway::bind`]).
pub async fn run(
    config: GatewayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    let gateway = Gateway::bind(config).await?;
    gateway.print_banner();
    gateway.serve(shutdown).await;
    Ok(())
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a token (agent or admin) from `path`, creating a random one there first if
/// the file does not exist (mode 0600 on Unix).
///
/// # Errors
/// [`GatewayError::Io`] when the file cannot be read or written.
pub(crate) fn load_or_create_token(path: &Path) -> Result<String, GatewayError> {
    let io = |source| GatewayError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        return Ok(std::fs::read_to_string(path)
            .map_err(io)?
            .trim()
            .to_string());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let token: String = (0..32)
        .map(|_| char::from(b"0123456789abcdef"[rand::random_range(0..16)]))
        .collect();
    std::fs::write(path, format!("{token}\n")).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(token)
}

/// Formats an address for humans (used in the start banner).
pub(crate) fn show(addr: SocketAddr) -> String {
    addr.to_string()
}
