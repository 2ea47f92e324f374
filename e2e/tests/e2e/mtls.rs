//! Agents' identities (mTLS): client certificates from `gateway cert
//! issue`, `[agents] require_client_cert`, the node id taken from the
//! certificate, and the gateway's certificates reloaded without restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway::GatewayConfig;
use protocol::{Codec, Message};
use quinn::rustls::pki_types::CertificateDer;
use transport::{ClientIdentity, EndpointConfig, FramedRecv, FramedSend, TlsFiles};

use crate::common::{Fleet, TOKEN, service};

/// The gateway configuration of `fleet`'s data folder (for `cert issue`).
fn gateway_config(fleet: &Fleet) -> GatewayConfig {
    GatewayConfig {
        data_dir: fleet.dir.path().join("gateway"),
        ..GatewayConfig::default()
    }
}

/// Issues a client certificate for `node` with the command's code path.
fn issue(fleet: &Fleet, node: &str, out: &str) -> (PathBuf, PathBuf) {
    let issued =
        gateway::certs::issue(&gateway_config(fleet), node, &fleet.dir.path().join(out)).unwrap();
    (issued.cert, issued.key)
}

fn identity_keys(cert: &Path, key: &Path) -> String {
    format!("client_cert = {cert:?}\nclient_key = {key:?}\n")
}

/// Runs an agent that should be refused; returns the refusal.
async fn refused(fleet: &Fleet, node: &str, cert: Option<(&Path, &Path)>) -> String {
    let mut config = node_agent::AgentConfig::new(
        fleet.addr.clone(),
        fleet.ca(),
        TOKEN,
        node,
        vec![node_agent::ServiceConfig::new(
            "echo",
            node_agent::ServiceKind::Echo,
        )],
    );
    if let Some((c, k)) = cert {
        config.client_cert = Some(c.to_path_buf());
        config.client_key = Some(k.to_path_buf());
    }
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        node_agent::run(config, std::future::pending()),
    )
    .await
    .expect("refused, not retried");
    match result.expect_err("refused") {
        node_agent::AgentError::Refused(reason) => reason,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_a_certificate_naming_their_node() {
    let mut fleet = Fleet::start(|config| config.agents.require_client_cert = true).await;
    let (cert, key) = issue(&fleet, "node-a", "certs-a");
    fleet.spawn_agent_with(
        "node-a",
        TOKEN,
        &identity_keys(&cert, &key),
        &service("echo", "echo", ""),
    );
    fleet.wait_nodes(1).await;
    let views = fleet.gateway.registry().views(std::time::Instant::now());
    assert_eq!(views[0].spec.id, "node-a", "the certificate's node id");
    let client = fleet.client().await;
    let r = client.call("echo", "over mTLS").await.unwrap();
    assert_eq!(&r.data[..], b"over mTLS");

    // No certificate: refused, with the reason.
    let reason = refused(&fleet, "node-x", None).await;
    assert!(reason.contains("client certificate required"), "{reason}");

    // node-a's certificate claiming node-b: refused (not renamed).
    let reason = refused(&fleet, "node-b", Some((&cert, &key))).await;
    assert!(
        reason.contains("is for node \"node-a\"") && reason.contains("node-b"),
        "{reason}"
    );

    // A certificate from another CA: the TLS handshake fails.
    let other = tempfile::tempdir().unwrap();
    let other_files = TlsFiles::in_dir(other.path());
    other_files
        .create_if_missing(&["localhost".into()])
        .unwrap();
    let foreign = transport::identity::issue_client_cert(
        &other_files,
        "node-a",
        &other.path().join("node-a"),
    )
    .unwrap();
    let addr: SocketAddr = fleet.addr.parse().unwrap();
    let endpoint = transport::client_endpoint_with(
        &fleet.ca(),
        Some(ClientIdentity {
            cert: &foreign.cert,
            key: &foreign.key,
        }),
        addr,
        &EndpointConfig::default(),
    )
    .unwrap();
    let failure = match endpoint.connect(addr, "localhost").unwrap().await {
        Err(e) => e,
        Ok(connection) => {
            // TLS 1.3: the client may finish first; the server's alert
            // closes the connection.
            if let Ok((mut send, _recv)) = connection.open_bi().await {
                let _ = send.write_all(&[0]).await;
            }
            tokio::time::timeout(Duration::from_secs(5), connection.closed())
                .await
                .expect("closed by the gateway")
        }
    };
    eprintln!("a certificate from another CA: {failure}");
    assert_eq!(fleet.gateway.registry().len(), 1, "only node-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_require_the_token_suffices_and_a_certificate_still_names_the_node() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("plain", TOKEN, &service("echo", "echo", ""));
    let (cert, key) = issue(&fleet, "node-c", "certs-c");
    let reason = refused(&fleet, "node-d", Some((&cert, &key))).await;
    assert!(reason.contains("is for node \"node-c\""), "{reason}");
    fleet.wait_nodes(1).await;
}

/// The served certificate, by DER bytes.
fn served(connection: &quinn::Connection) -> CertificateDer<'static> {
    let chain = connection
        .peer_identity()
        .unwrap()
        .downcast::<Vec<CertificateDer<'static>>>()
        .unwrap();
    chain[0].clone()
}

fn first_cert(path: &Path) -> CertificateDer<'static> {
    transport::tls::load_certs(path).unwrap().remove(0)
}

async fn list_nodes(connection: &quinn::Connection) -> usize {
    let (send, recv) = connection.open_bi().await.unwrap();
    let mut send = FramedSend::new(send, Codec::default());
    send.send(&Message::ListNodes).await.unwrap();
    send.finish().unwrap();
    match FramedRecv::new(recv, Codec::default())
        .recv()
        .await
        .unwrap()
    {
        Some(Message::Nodes(nodes)) => nodes.len(),
        other => panic!("expected nodes, got {other:?}"),
    }
}

/// Replacing the certificate files: new connections get the new
/// certificate, a connection made before keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_restart() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let files = gateway_config(&fleet).tls_files();
    let addr: SocketAddr = fleet.addr.parse().unwrap();
    let old_ca = fleet.dir.path().join("old-ca.pem");
    std::fs::copy(&files.ca, &old_ca).unwrap();
    let old_endpoint =
        transport::client_endpoint(&old_ca, addr, &EndpointConfig::default()).unwrap();
    let old = old_endpoint
        .connect(addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    assert_eq!(served(&old), first_cert(&files.cert));

    // New material (a new CA and certificate), installed by rename.
    let fresh = tempfile::tempdir().unwrap();
    let new_files = TlsFiles::in_dir(fresh.path());
    new_files
        .create_if_missing(&["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    for (from, to) in [
        (&new_files.key, &files.key),
        (&new_files.cert, &files.cert),
        (&new_files.ca, &files.ca),
    ] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    let new_cert = first_cert(&new_files.cert);
    let new_endpoint =
        transport::client_endpoint(&new_files.ca, addr, &EndpointConfig::default()).unwrap();
    let mut fresh_connection = None;
    for _ in 0..100 {
        if let Ok(c) = new_endpoint.connect(addr, "localhost").unwrap().await {
            fresh_connection = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh_connection = fresh_connection.expect("the new certificate is served");
    assert_eq!(served(&fresh_connection), new_cert);
    eprintln!(
        "reloaded: new connections get the new certificate ({} bytes DER)",
        new_cert.len()
    );
    // The old connection lives on, and serves.
    assert_eq!(list_nodes(&old).await, 1);
    assert_eq!(list_nodes(&fresh_connection).await, 1);
    // A client trusting only the old CA cannot connect any more.
    assert!(
        old_endpoint
            .connect(addr, "localhost")
            .unwrap()
            .await
            .is_err()
    );
}
