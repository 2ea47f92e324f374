//! A cluster client's member list: asked of a gateway (`ListMembers`),
//! turned into the addresses calls go to, and kept fresh in the
//! background.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use protocol::{Codec, MemberList, Message};

use crate::pool::Pool;
use crate::{Client, ClientConfig, ClientError, unexpected};

/// Default time between two member list requests of a cluster client.
pub(crate) const DEFAULT_MEMBER_REFRESH: Duration = Duration::from_secs(5);

/// Longest wait for a gateway's member list.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

impl ClientConfig {
    /// Sets [`ClientConfig::cluster`]: whether the gateway addresses are a
    /// cluster's bootstrap list.
    #[must_use]
    pub fn with_cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// Sets [`ClientConfig::member_refresh`].
    #[must_use]
    pub fn with_member_refresh(mut self, every: Duration) -> Self {
        self.member_refresh = every;
        self
    }
}

impl Client {
    /// Connects to the cluster reached through `bootstrap` (`host:port`
    /// addresses, tried in order until one answers), trusting `ca`:
    /// [`Client::connect`] with [`ClientConfig::for_cluster`].
    ///
    /// # Errors
    /// As [`Client::connect`]: [`ClientError::Config`] for an empty list or
    /// an unusable CA file, [`ClientError::Connect`] when no bootstrap
    /// gateway answers.
    pub async fn connect_cluster<S: AsRef<str>>(
        bootstrap: &[S],
        ca: impl Into<std::path::PathBuf>,
    ) -> Result<Self, ClientError> {
        if bootstrap.is_empty() {
            return Err(ClientError::Config("no gateway address".into()));
        }
        Self::connect(ClientConfig::for_cluster(
            bootstrap.iter().map(|a| a.as_ref().to_string()),
            ca,
        ))
        .await
    }

    /// The cluster's member list as a gateway sees it (a gateway without a
    /// cluster names itself alone).
    ///
    /// # Errors
    /// [`ClientError::Call`] from a gateway too old to know the request
    /// (`bad request`), or a connection or protocol error.
    pub async fn members(&self) -> Result<MemberList, ClientError> {
        ask(&self.pool, self.codec).await
    }

    /// The gateway addresses calls go to now, in the order the pool keeps
    /// them: the configured ones, or for a cluster client the members it
    /// learnt (see [`ClientConfig::cluster`]).
    pub fn gateway_addresses(&self) -> Vec<String> {
        self.pool
            .gateways()
            .iter()
            .map(|g| g.address().to_string())
            .collect()
    }
}

/// Asks a gateway for its member list (one the pool is connected to, if
/// any).
async fn ask(pool: &Arc<Pool>, codec: Codec) -> Result<MemberList, ClientError> {
    let (mut send, mut recv) = pool.open_connected(codec).await?;
    send.send(&Message::ListMembers).await?;
    send.finish()?;
    match recv.expect("a member list").await? {
        Message::Members(list) => {
            list.validate()
                .map_err(|e| ClientError::Protocol(format!("member list: {e}")))?;
            Ok(list)
        }
        Message::Error(e) => Err(ClientError::from(e)),
        other => Err(unexpected(&other)),
    }
}

/// Keeps a cluster client's gateways in step with the member list.
#[derive(Debug)]
pub(crate) struct Members {
    bootstrap: Vec<String>,
    codec: Codec,
    /// The revision of the newest list applied (0: none yet).
    revision: AtomicU64,
}

impl Members {
    pub(crate) fn new(config: &ClientConfig, codec: Codec) -> Arc<Self> {
        Arc::new(Self {
            bootstrap: config.gateways().map(str::to_string).collect(),
            codec,
            revision: AtomicU64::new(0),
        })
    }

    /// Asks a gateway for the member list and makes it the pool's gateways.
    /// A gateway that cannot tell (an older one answers `bad request`)
    /// leaves the bootstrap list in use; a failure to ask changes nothing.
    pub(crate) async fn refresh(&self, pool: &Arc<Pool>) {
        let answer = tokio::time::timeout(ASK_TIMEOUT, ask(pool, self.codec)).await;
        let list = match answer {
            Ok(Ok(list)) => Some(list),
            Ok(Err(ClientError::Call { kind, message, .. })) => {
                tracing::debug!(%kind, %message, "no member list; calling the bootstrap gateways");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot ask for the member list");
                return;
            }
            Err(_) => {
                tracing::debug!("no member list within {} ms", ASK_TIMEOUT.as_millis());
                return;
            }
        };
        if let Some(list) = &list {
            // A gateway that has not seen the latest change yet.
            if list.revision < self.revision.load(Ordering::Relaxed) {
                return;
            }
            self.revision.store(list.revision, Ordering::Relaxed);
        }
        pool.set_addresses(&addresses(list.as_ref(), &self.bootstrap));
    }

    /// Refreshes the list every `every` and at once when a connection is
    /// lost, until the pool is dropped.
    pub(crate) fn follow(self: Arc<Self>, pool: &Arc<Pool>, every: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let lost = Arc::clone(&pool.lost);
        let pool: Weak<Pool> = Arc::downgrade(pool);
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = lost.notified() => {}
                }
                let Some(pool) = pool.upgrade() else { return };
                // Asking must not dial: a client that closed stays closed
                // until its next call.
                if pool.has_connection() {
                    self.refresh(&pool).await;
                }
            }
        });
    }
}

/// The addresses calls go to: the members' QUIC addresses when the list
/// names two or more that can be dialled; else (a gateway without a
/// cluster names itself alone, an older one answers nothing) the bootstrap
/// list, followed by a dialable member it does not name. Duplicates are
/// dropped.
pub(crate) fn addresses(list: Option<&MemberList>, bootstrap: &[String]) -> Vec<String> {
    let members: Vec<&str> = list
        .map(|l| {
            l.members
                .iter()
                .map(|m| m.quic.as_str())
                .filter(|a| dialable(a))
                .collect()
        })
        .unwrap_or_default();
    let chosen: Vec<&str> = if members.len() >= 2 {
        members
    } else {
        bootstrap
            .iter()
            .map(String::as_str)
            .chain(members)
            .collect()
    };
    let mut out: Vec<String> = Vec::with_capacity(chosen.len());
    for address in chosen {
        if !out.iter().any(|a| a == address) {
            out.push(address.to_string());
        }
    }
    out
}

/// Whether `address` (`host:port`) names a place to dial: not a wildcard
/// address (`0.0.0.0`, `[::]`) and not port 0, as a gateway listening on
/// one names itself.
fn dialable(address: &str) -> bool {
    match address.parse::<SocketAddr>() {
        Ok(addr) => !addr.ip().is_unspecified() && addr.port() != 0,
        Err(_) => address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        }),
    }
}

#[cfg(test)]
mod tests;
