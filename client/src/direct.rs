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

/// How long a node address whose dial failed is not dialled again: calls
/// to it fail at once meanwhile (a look-aside call then goes through the
/// gateway without waiting for another dial to time out).
const DOWN_BACKOFF: Duration = Duration::from_secs(5);

/// One node address: its connection, behind a lock held while dialling so
/// that concurrent calls share one handshake.
#[derive(Debug, Default)]
struct Node {
    state: tokio::sync::Mutex<NodeState>,
}

#[derive(Debug, Default)]
struct NodeState {
    connection: Option<quinn::Connection>,
    /// Not dialled again before then, and why the last dial failed.
    down: Option<(Instant, String)>,
}

/// Why a direct stream could not be opened.
#[derive(Debug)]
pub(crate) enum DirectError {
    /// The node's direct port cannot be reached (resolution, connection
    /// or handshake failed or timed out, or it does not speak wire
    /// version 2): nothing was sent.
    Unreachable(String),
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
        let mut fresh = false;
        loop {
            let connection = {
                let mut state = node.state.lock().await;
                match state
                    .connection
                    .as_ref()
                    .filter(|c| c.close_reason().is_none())
                {
                    Some(connection) => connection.clone(),
                    None => {
                        if let Some((until, why)) = &state.down
                            && Instant::now() < *until
                        {
                            return Err(DirectError::Unreachable(why.clone()));
                        }
                        let now = Instant::now();
                        // A dial cut short by the call's own deadline says
                        // nothing about the node.
                        let cut = deadline < now + timeout;
                        match dial(pool, address, timeout, deadline).await {
                            Ok(connection) => {
                                *state = NodeState {
                                    connection: Some(connection.clone()),
                                    down: None,
                                };
                                fresh = true;
                                connection
                            }
                            Err(DirectError::Unreachable(e)) => {
                                state.connection = None;
                                if !cut {
                                    state.down = Some((now + DOWN_BACKOFF, e.clone()));
                                }
                                return Err(DirectError::Unreachable(e));
                            }
                            Err(fatal) => return Err(fatal),
                        }
                    }
                }
            };
            match transport::open_bi(&connection, codec).await {
                Ok(stream) => return Ok(stream),
                Err(e) if fresh => return Err(unreachable(address, e)),
                // It died since its last use: dial again.
                Err(_) => {
                    let mut state = node.state.lock().await;
                    if state
                        .connection
                        .as_ref()
                        .is_some_and(|c| c.stable_id() == connection.stable_id())
                    {
                        state.connection = None;
                    }
                }
            }
        }
    }

    /// The entry of `address`, made on first use.
    fn node(&self, address: &str) -> Arc<Node> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(node) = nodes.get(address) {
            return Arc::clone(node);
        }
        if nodes.len() >= MAX_NODES {
            nodes.retain(|_, node| match node.state.try_lock() {
                Ok(state) => state
                    .connection
                    .as_ref()
                    .is_some_and(|c| c.close_reason().is_none()),
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
            if let Ok(mut state) = node.state.try_lock()
                && let Some(connection) = state.connection.take()
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
    let host = host_of(address).ok_or_else(|| unreachable(address, "not host:port"))?;
    let now = Instant::now();
    let until = deadline.min(now + timeout);
    let budget = until.saturating_duration_since(now);
    let work = async {
        let peer = tokio::net::lookup_host(address)
            .await
            .map_err(|e| unreachable(address, format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| unreachable(address, "resolves to nothing"))?;
        let endpoint = pool.endpoint(peer).map_err(DirectError::Fatal)?;
        let connecting = endpoint.connect(peer, host).map_err(|e| match e {
            quinn::ConnectError::InvalidServerName(name) => {
                unreachable(address, format!("{name:?} is not a valid server name"))
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
    match tokio::time::timeout_at(until, work).await {
        Ok(result) => result,
        Err(_) => Err(unreachable(
            address,
            format!("no answer within {} ms", budget.as_millis()),
        )),
    }
}

/// The host part of `address` (`host:port`, `[v6]:port`): the name its
/// certificate must carry; `None` without a port.
pub(crate) fn host_of(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

fn unreachable(address: &str, why: impl std::fmt::Display) -> DirectError {
    DirectError::Unreachable(format!("{address}: {why}"))
}

#[cfg(test)]
mod tests;
