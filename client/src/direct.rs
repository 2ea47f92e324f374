//! Direct connections to nodes (look-aside calls): one QUIC connection per
//! node address, shared by every direct call to that node (one stream per
//! call), on the client endpoints the gateway pool uses and trusting the
//! same CA. A node's certificate must name the host of its direct address
//! (an IP address or a DNS name).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protocol::{Codec, WireVersion};
use tokio::time::Instant;
use transport::{FramedRecv, FramedSend};

use crate::ClientError;
use crate::pool::Pool;

/// Most node addresses kept at once; past it, entries without a live
/// connection are dropped first.
const MAX_NODES: usize = 4096;

/// The pool of direct connections, by node address (`host:port`).
#[derive(Debug, Default)]
pub(crate) struct DirectPool {
    nodes: Mutex<HashMap<String, Arc<Node>>>,
}

/// One node address: its connection, and a lock held while dialling so
/// that concurrent calls share one handshake.
#[derive(Debug, Default)]
struct Node {
    connection: tokio::sync::Mutex<Option<quinn::Connection>>,
}

/// Why a direct stream could not be opened.
#[derive(Debug)]
pub(crate) enum DirectError {
    /// The node's direct port cannot be reached (resolution, connection
    /// or handshake failed or timed out, or it does not speak wire
    /// version 2): nothing was sent.
    Unreachable(ClientError),
    /// A configuration problem (a client endpoint cannot be made).
    Fatal(ClientError),
}

impl DirectPool {
    /// A stream to the node at `address` (`host:port`), dialling it when
    /// there is no live connection; a dial waits at most `timeout` (and
    /// at most until `deadline`).
    pub(crate) async fn open(
        &self,
        pool: &Pool,
        codec: Codec,
        address: &str,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(FramedSend, FramedRecv), DirectError> {
        let node = self.node(address);
        let mut slot = node.connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
            // A connection that died since its last use fails to open a
            // stream: dial again then.
            if let Ok(stream) = transport::open_bi(connection, codec).await {
                return Ok(stream);
            }
        }
        *slot = None;
        let connection = dial(pool, address, timeout, deadline).await?;
        let stream = transport::open_bi(&connection, codec)
            .await
            .map_err(|e| unreachable(address, e))?;
        *slot = Some(connection);
        Ok(stream)
    }

    /// The entry of `address`, made on first use.
    fn node(&self, address: &str) -> Arc<Node> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(node) = nodes.get(address) {
            return Arc::clone(node);
        }
        if nodes.len() >= MAX_NODES {
            nodes.retain(|_, node| match node.connection.try_lock() {
                Ok(slot) => slot.as_ref().is_some_and(|c| c.close_reason().is_none()),
                // Dialling or in use right now.
                Err(_) => true,
            });
        }
        let node = Arc::new(Node::default());
        nodes.insert(address.to_string(), Arc::clone(&node));
        node
    }

    /// Closes every direct connection.
    pub(crate) fn close(&self) {
        let nodes: Vec<Arc<Node>> = self
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, node)| node)
            .collect();
        for node in nodes {
            if let Ok(mut slot) = node.connection.try_lock()
                && let Some(connection) = slot.take()
            {
                connection.close(protocol::codes::close::NORMAL.into(), b"client closed");
            }
        }
    }
}

/// Resolves `address` and completes a handshake with it, naming its host
/// as the server.
async fn dial(
    pool: &Pool,
    address: &str,
    timeout: Duration,
    deadline: Instant,
) -> Result<quinn::Connection, DirectError> {
    let host = host_of(address).map_err(DirectError::Unreachable)?;
    let until = deadline.min(Instant::now() + timeout);
    let work = async {
        let peer = tokio::net::lookup_host(address)
            .await
            .map_err(|e| unreachable(address, format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| unreachable(address, "resolves to nothing"))?;
        let endpoint = pool.endpoint(peer).map_err(DirectError::Fatal)?;
        let connecting = endpoint.connect(peer, host).map_err(|e| match e {
            quinn::ConnectError::InvalidServerName(name) => {
                DirectError::Unreachable(ClientError::Connect(format!(
                    "node address {address}: {name:?} is not a valid server name"
                )))
            }
            other => unreachable(address, other),
        })?;
        let connection = connecting.await.map_err(|e| unreachable(address, e))?;
        let version = transport::wire_version(&connection);
        if version < WireVersion::V2 {
            connection.close(
                protocol::codes::close::NORMAL.into(),
                b"wire version 2 needed",
            );
            return Err(unreachable(address, "it does not speak switchyard/2"));
        }
        Ok(connection)
    };
    let budget = until.saturating_duration_since(Instant::now());
    match tokio::time::timeout_at(until, work).await {
        Ok(result) => result,
        Err(_) => Err(unreachable(
            address,
            format!("no answer within {} ms", budget.as_millis()),
        )),
    }
}

/// The host part of `address` (`host:port`, `[v6]:port`): the name its
/// certificate must carry.
///
/// # Errors
/// [`ClientError::Connect`] for an address without a port.
pub(crate) fn host_of(address: &str) -> Result<&str, ClientError> {
    let bad = || ClientError::Connect(format!("node address {address:?} is not host:port"));
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

fn unreachable(address: &str, why: impl std::fmt::Display) -> DirectError {
    DirectError::Unreachable(ClientError::Connect(format!(
        "node's direct port {address}: {why}"
    )))
}

#[cfg(test)]
mod tests;
