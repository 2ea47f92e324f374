//! The direct port: a QUIC server for look-aside calls from clients that
//! hold a lease token. Server TLS from `[direct] cert`/`key` (no client
//! certificates: the token is the credential), the same ALPNs as the
//! gateways (wire v2 needed), at most `max_connections` connections
//! (handshakes included), the default stream limits and windows of an
//! endpoint, and a read budget per connection of the agent's largest
//! payload, as the gateway gives its callers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use protocol::WireVersion;
use protocol::codes::close;
use tokio::task::JoinSet;
use transport::{EndpointConfig, FramedRecv, FramedSend, TlsFiles};

use crate::AgentError;
use crate::config::DirectConfig;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the connections' close at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the direct port's calls share.
#[derive(Debug, Clone)]
pub(crate) struct DirectCalls {
    /// The agent's largest accepted payload, bytes.
    pub(crate) max_payload: u64,
    /// Calls' spans (`[tracing]`; makes none when off).
    pub(crate) tracer: otel::Tracer,
    /// The node's leases.
    pub(crate) leases: super::Leases,
}

/// The running direct port; [`DirectServer::stop`] closes it.
pub(crate) struct DirectServer {
    endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
    leases: super::Leases,
    /// The address registered with the gateways (`advertise`, else the
    /// address bound).
    pub(crate) advertised: String,
}

impl DirectServer {
    /// Binds the direct port of `config` and serves its calls on `calls`'
    /// leases; `ca` is the agent's CA file and `max_wire_version` the
    /// newest wire version offered.
    ///
    /// # Errors
    /// [`AgentError::Tls`] for unusable certificate files or a socket that
    /// cannot be bound.
    pub(crate) fn start(
        config: &DirectConfig,
        ca: &Path,
        max_wire_version: WireVersion,
        calls: DirectCalls,
    ) -> Result<Self, AgentError> {
        let missing = || {
            AgentError::Config(crate::ConfigError::Invalid(
                "[direct] cert and key are required".into(),
            ))
        };
        let files = TlsFiles {
            cert: config.cert.clone().ok_or_else(missing)?,
            key: config.key.clone().ok_or_else(missing)?,
            ca: ca.to_path_buf(),
            ca_key: ca.to_path_buf(),
        };
        let limits = EndpointConfig {
            max_wire_version,
            ..EndpointConfig::default()
        };
        let mut server = transport::server_config(&files, None, &limits)?;
        server.max_incoming(config.max_connections as usize);
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(|source| {
            transport::TlsError::Io {
                path: config.listen.to_string().into(),
                source,
            }
        })?;
        let local = endpoint
            .local_addr()
            .map_err(|source| transport::TlsError::Io {
                path: config.listen.to_string().into(),
                source,
            })?;
        let advertised = config.advertised(local);
        calls.leases.set_direct_open(true);
        let leases = calls.leases.clone();
        let task = tokio::spawn(accept(endpoint.clone(), calls, config.max_connections));
        tracing::info!(listen = %local, advertised = %advertised, "direct port open");
        Ok(Self {
            endpoint,
            task,
            leases,
            advertised,
        })
    }

    /// Closes the port: its connections (and the calls on them) end.
    pub(crate) async fn stop(self) {
        self.leases.set_direct_open(false);
        self.task.abort();
        self.endpoint
            .close(close::NORMAL.into(), b"agent shutting down");
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.endpoint.wait_idle()).await;
    }
}

/// Accepts connections until the endpoint closes (or the task is aborted:
/// dropping the set ends every connection's task).
async fn accept(endpoint: quinn::Endpoint, calls: DirectCalls, max_connections: u32) {
    let open = Arc::new(AtomicU32::new(0));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if open.load(Ordering::Acquire) >= max_connections {
                    tracing::debug!(peer = %incoming.remote_address(), "direct port full; connection refused");
                    incoming.refuse();
                    continue;
                }
                open.fetch_add(1, Ordering::AcqRel);
                let guard = Open(Arc::clone(&open));
                connections.spawn(connection(incoming, calls.clone(), guard));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Counts one open connection until dropped.
struct Open(Arc<AtomicU32>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one client connection: a direct call per stream.
async fn connection(incoming: quinn::Incoming, calls: DirectCalls, _open: Open) {
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            tracing::debug!("direct handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("direct handshake timed out");
            return;
        }
    };
    if transport::wire_version(&connection) < WireVersion::V2 {
        connection.close(
            close::NORMAL.into(),
            b"direct calls need wire version 2 (switchyard/2)",
        );
        return;
    }
    let codec = transport::codec_for(&connection, protocol::Codec::default());
    // What this connection's streams may hold in reads at once.
    let budget = transport::ReadBudget::new(calls.max_payload);
    // Dropping the set (the connection ended) stops its calls.
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let send = FramedSend::new(send, codec);
                    let recv = FramedRecv::new(recv, codec).with_budget(budget.clone());
                    tasks.spawn(super::call::serve(calls.clone(), send, recv));
                }
                Err(e) => {
                    tracing::debug!("direct connection ended: {e}");
                    break;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("a direct call task panicked: {e}");
                }
            }
        }
    }
}
