//! The gateway's certificates: the QUIC server configuration built from
//! them, its reload without restart (SIGHUP or a change of the files), the
//! agents' client certificates (`gateway cert issue`) and the node id an
//! agent's certificate gives it.
//!
//! Reload: the cert, key and CA files are read again and the endpoint's
//! server configuration is swapped (`quinn::Endpoint::set_server_config`):
//! new connections get the new certificate (and the new CA for client
//! certificates), connections already open keep theirs. Files that fail to
//! load are logged (`tls_reload_failures_total`) and the old configuration
//! stays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;

use crate::{GatewayConfig, GatewayError};

/// Help texts of the reload metrics.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        "tls_reloads_total",
        "Certificate reloads swapped into the QUIC endpoint."
    );
    metrics::describe_counter!(
        "tls_reload_failures_total",
        "Certificate reloads that failed (the previous certificates stay)."
    );
}

/// Quiet time after the last file event before reloading.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

/// Streams a new connection may open before its first one says who is on
/// the other end; raised to `max_streams_per_connection` once it is a
/// client or a child gateway, while an agent opens one, its control
/// stream, and keeps this bound. quinn keeps state
/// for every stream the peer may open from the handshake on, two map
/// entries each: at 1 024 that was 86 KiB of every agent's connection.
pub(crate) const FIRST_STREAMS: u32 = 8;

/// The endpoint's server configuration: the certificate files of `config`,
/// client certificates verified against its CA (optional at the TLS level:
/// callers present none), `[quic]`'s limits.
///
/// # Errors
/// [`GatewayError::Tls`] for unusable files.
pub fn server_config(config: &GatewayConfig) -> Result<quinn::ServerConfig, GatewayError> {
    let files = config.tls_files();
    let quic = config.quic.endpoint();
    let endpoint = transport::EndpointConfig {
        max_wire_version: config.max_wire_version,
        max_concurrent_bidi_streams: FIRST_STREAMS.min(quic.max_concurrent_bidi_streams),
        ..quic
    };
    let mut server = transport::server_config(&files, Some(&files.ca), &endpoint)?;
    server.max_incoming(config.quic.max_pending_handshakes as usize);
    Ok(server)
}

/// Issues a client certificate for agent `node` from the CA of `config`
/// (creating the CA first if the gateway never ran), into `out`.
///
/// # Errors
/// [`GatewayError::Tls`] when the CA or its key cannot be used or the files
/// cannot be written (see [`transport::identity::issue_client_cert`]).
pub fn issue(
    config: &GatewayConfig,
    node: &str,
    out: &Path,
) -> Result<transport::identity::IssuedCert, GatewayError> {
    let files = config.tls_files();
    files.create_if_missing(&tls_names(config))?;
    Ok(transport::identity::issue_client_cert(&files, node, out)?)
}

/// Issues the server certificate of agent `node`'s direct port for
/// `names` (DNS names or IP addresses) from the CA of `config` (creating
/// the CA first if the gateway never ran), into `out`.
///
/// # Errors
/// [`GatewayError::Tls`] as [`transport::identity::issue_direct_cert`].
pub fn issue_direct(
    config: &GatewayConfig,
    node: &str,
    names: &[String],
    out: &Path,
) -> Result<transport::identity::IssuedCert, GatewayError> {
    let files = config.tls_files();
    files.create_if_missing(&tls_names(config))?;
    Ok(transport::identity::issue_direct_cert(
        &files, node, names, out,
    )?)
}

/// Checks an agent's identity: the node id its client certificate names
/// must be `claimed`; without a certificate, it may register only when
/// `[agents] require_client_cert` is off. Returns whether a certificate
/// vouched for the id.
///
/// # Errors
/// The refusal reason, for the agent.
pub(crate) fn check_agent(
    connection: &quinn::Connection,
    claimed: &str,
    require: bool,
) -> Result<bool, String> {
    let chain = connection.peer_identity().and_then(|id| {
        id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let Some(cert) = chain.as_ref().and_then(|c| c.first()) else {
        if require {
            return Err(
                "client certificate required ([agents] require_client_cert): issue one with \
                 `gateway cert issue --node ID` and set client_cert/client_key"
                    .into(),
            );
        }
        return Ok(false);
    };
    let id = transport::identity::node_id_of(cert)
        .map_err(|e| format!("unusable client certificate: {e}"))?;
    if id != claimed {
        return Err(format!(
            "client certificate is for node {id:?}, the registration claims {claimed:?}"
        ));
    }
    Ok(true)
}

/// Keeps the reload task alive; dropping it stops reloading.
pub struct ReloadHandle {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloadHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reloads `endpoint`'s certificates on SIGHUP and when the files of
/// `config` change, until the handle is dropped.
pub(crate) fn start(endpoint: quinn::Endpoint, config: GatewayConfig) -> ReloadHandle {
    let files = config.tls_files();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watched: Vec<PathBuf> = [&files.cert, &files.key, &files.ca]
        .into_iter()
        .cloned()
        .collect();
    let names: Vec<std::ffi::OsString> = watched
        .iter()
        .filter_map(|p| p.file_name().map(ToOwned::to_owned))
        .collect();
    let event_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Watch the folders (a write-then-rename replaces the inode) and
        // react to changes of the certificate files only: not to accesses,
        // which the reload's own reads cause (that looped, ~10 reloads/s).
        if let Ok(event) = event
            && is_change(event.kind)
            && event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
        {
            let _ = event_tx.send(());
        }
    });
    let watcher = match watcher {
        Ok(mut w) => {
            let mut dirs: Vec<PathBuf> = watched
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf))
                .collect();
            dirs.sort();
            dirs.dedup();
            for dir in dirs {
                if let Err(error) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), %error, "cannot watch the certificate folder; reload with SIGHUP");
                }
            }
            Some(w)
        }
        Err(error) => {
            tracing::warn!(%error, "no file watcher; reload certificates with SIGHUP");
            None
        }
    };
    let task = tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut watching = true;
        loop {
            let signalled = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = rx.recv(), if watching => {
                    if event.is_none() {
                        watching = false;
                        continue;
                    }
                    // Debounce: a certificate and its key change together.
                    while let Ok(Some(())) =
                        tokio::time::timeout(RELOAD_DEBOUNCE, rx.recv()).await
                    {}
                    reload(&endpoint, &config, "file change");
                }
                _ = signalled => reload(&endpoint, &config, "SIGHUP"),
            }
        }
    });
    drop(tx);
    ReloadHandle {
        _watcher: watcher,
        task,
    }
}

/// Whether a file event changes a file (created, written, renamed, removed)
/// rather than only reading it (open, close after reading, access).
fn is_change(kind: notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        // A writer closing the file: its new contents are complete.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Rebuilds the server configuration and swaps it in; on failure the old
/// one stays.
fn reload(endpoint: &quinn::Endpoint, config: &GatewayConfig, why: &str) {
    match server_config(config) {
        Ok(server) => {
            endpoint.set_server_config(Some(server));
            metrics::counter!("tls_reloads_total").increment(1);
            tracing::info!(why, "certificates reloaded; new connections use them");
        }
        Err(error) => {
            metrics::counter!("tls_reload_failures_total").increment(1);
            tracing::warn!(why, %error, "certificate reload failed; the previous certificates stay");
        }
    }
}

/// The names a generated server certificate covers: `[tls] names`, else
/// `localhost`, `127.0.0.1`, `::1`.
pub(crate) fn tls_names(config: &GatewayConfig) -> Vec<String> {
    if config.tls.names.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        config.tls.names.clone()
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind};

    use super::is_change;

    #[test]
    fn reading_the_files_is_no_change() {
        // The reload reads the files: those events must not start another.
        assert!(!is_change(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(EventKind::Create(CreateKind::File)));
        assert!(is_change(EventKind::Remove(RemoveKind::File)));
    }
}
