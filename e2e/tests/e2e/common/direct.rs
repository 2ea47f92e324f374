//! Agents with a direct port (look-aside calls): a free loopback port and a
//! server certificate issued from the test gateway's CA for it; and a
//! client speaking the wire protocol itself, frame by frame, for what the
//! SDK will not send (forged, replayed or misdirected tokens, leases taken
//! on a raw stream).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use protocol::{CallError, CallHead, Codec, LeaseGrant, LeaseRequest, Message, ResultHead};
use transport::{EndpointConfig, FramedRecv, FramedSend};

use super::Fleet;

/// A node's `[direct]` table: where it listens, what it advertises and
/// its certificate.
#[derive(Debug, Clone)]
pub struct DirectPort {
    /// Where the agent listens (a free loopback port).
    pub listen: SocketAddr,
    /// What clients are told (`listen` unless a test points it elsewhere).
    pub advertise: String,
    /// The certificate chain, signed by the gateway's CA, for `127.0.0.1`
    /// and `localhost`.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// More keys of the table (`max_connections = 8`), one a line.
    pub extra: String,
}

impl DirectPort {
    /// The agent config's `[direct]` table.
    pub fn table(&self) -> String {
        format!(
            "\n[direct]\nlisten = \"{}\"\nadvertise = {:?}\ncert = {:?}\nkey = {:?}\n{}\n",
            self.listen, self.advertise, self.cert, self.key, self.extra
        )
    }
}

/// A free loopback address (below the ephemeral port range).
pub fn free_loopback() -> SocketAddr {
    let port = switchyard_testkit::unassigned_port().expect("a free loopback port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Fleet {
    /// The gateway's certificate files (its CA and the CA's key).
    pub fn tls_files(&self) -> transport::TlsFiles {
        transport::TlsFiles::in_dir(&self.dir.path().join("gateway"))
    }

    /// A direct port for node `id`: a free loopback port and a server
    /// certificate for it issued from the gateway's CA
    /// (`transport::identity::issue_direct_cert`).
    pub fn direct_port(&self, id: &str) -> DirectPort {
        // A fresh folder each time: a restarted node gets new files.
        let out = (1..)
            .map(|n| self.dir.path().join(format!("{id}-direct-{n}")))
            .find(|dir| !dir.exists())
            .unwrap();
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let issued = transport::identity::issue_direct_cert(&self.tls_files(), id, &names, &out)
            .expect("direct certificate issued from the gateway's CA");
        let listen = free_loopback();
        DirectPort {
            listen,
            advertise: listen.to_string(),
            cert: issued.cert,
            key: issued.key,
            extra: String::new(),
        }
    }

    /// Starts agent `id` in this process with a direct port; returns the
    /// port's address.
    pub fn spawn_direct_agent(&mut self, id: &str, services_toml: &str) -> SocketAddr {
        let port = self.direct_port(id);
        self.spawn_agent(id, super::TOKEN, &(port.table() + services_toml));
        port.listen
    }

    /// Starts agent `id` as a real process with a direct port; returns its
    /// index (`agent(index)`) and the port's address.
    pub fn spawn_direct_agent_process(
        &mut self,
        id: &str,
        services_toml: &str,
    ) -> (usize, SocketAddr) {
        let port = self.direct_port(id);
        let index = self.spawn_agent_process(id, super::TOKEN, &(port.table() + services_toml));
        (index, port.listen)
    }
}

/// One QUIC connection speaking the wire protocol frame by frame.
pub struct Wire {
    endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
}

/// A call's answer: the result head and its data chunks as they came.
#[derive(Debug)]
pub struct Answer {
    pub head: ResultHead,
    pub chunks: Vec<Bytes>,
}

impl Answer {
    /// The whole result.
    pub fn data(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// Why a wire exchange failed: the peer's typed error, or anything else
/// (a stream error, an unexpected frame) in words.
#[derive(Debug)]
pub enum WireError {
    Refused(CallError),
    Other(String),
}

impl WireError {
    /// The typed error, or a panic naming what came instead.
    pub fn refused(self) -> CallError {
        match self {
            Self::Refused(e) => e,
            Self::Other(why) => panic!("expected a typed error, got: {why}"),
        }
    }
}

impl Wire {
    /// Connects to `addr` trusting `ca`, naming the server `name`.
    pub async fn connect(addr: SocketAddr, ca: &Path, name: &str) -> Result<Self, String> {
        let endpoint = transport::client_endpoint(ca, addr, &EndpointConfig::default())
            .map_err(|e| e.to_string())?;
        let connecting = endpoint.connect(addr, name).map_err(|e| e.to_string())?;
        let connection = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Self {
            endpoint,
            connection,
        })
    }

    /// Connects to the fleet's gateway.
    pub async fn gateway(fleet: &Fleet) -> Self {
        Self::connect(fleet.addr.parse().unwrap(), &fleet.ca(), "localhost")
            .await
            .expect("connects to the gateway")
    }

    /// Connects to a node's direct port.
    pub async fn direct(fleet: &Fleet, addr: SocketAddr) -> Self {
        Self::connect(addr, &fleet.ca(), "127.0.0.1")
            .await
            .expect("connects to the direct port")
    }

    async fn open(&self) -> (FramedSend, FramedRecv) {
        let (send, recv) = self.connection.open_bi().await.expect("a stream opens");
        let codec = transport::codec_for(&self.connection, Codec::default());
        (FramedSend::new(send, codec), FramedRecv::new(recv, codec))
    }

    /// Asks the gateway for a lease; `positions` gets each queue position
    /// reported while it waits.
    pub async fn lease(
        &self,
        request: LeaseRequest,
        positions: &mut Vec<u32>,
    ) -> Result<LeaseGrant, WireError> {
        let (mut send, mut recv) = self.open().await;
        send.send(&Message::Lease(request))
            .await
            .map_err(|e| WireError::Other(e.to_string()))?;
        let _ = send.finish();
        loop {
            match recv.recv().await {
                Ok(Some(Message::Queued(position))) => positions.push(position),
                Ok(Some(Message::Reserved(_))) => {}
                Ok(Some(Message::Leased(grant))) => return Ok(grant),
                Ok(Some(Message::Error(e))) => return Err(WireError::Refused(e)),
                other => return Err(WireError::Other(format!("{other:?}"))),
            }
        }
    }

    /// Releases a lease at the gateway that granted it.
    pub async fn release(&self, token: &str) -> Result<(), WireError> {
        let (mut send, mut recv) = self.open().await;
        let release = protocol::LeaseRelease {
            token: token.to_string(),
        };
        send.send(&Message::ReleaseLease(release))
            .await
            .map_err(|e| WireError::Other(e.to_string()))?;
        let _ = send.finish();
        match recv.recv().await {
            Ok(Some(Message::Ack(_))) => Ok(()),
            Ok(Some(Message::Error(e))) => Err(WireError::Refused(e)),
            other => Err(WireError::Other(format!("{other:?}"))),
        }
    }

    /// One call (`head.payload_len` set from `payload`): the result head
    /// and its chunks, or the typed error.
    pub async fn call(&self, mut head: CallHead, payload: &[u8]) -> Result<Answer, WireError> {
        head.payload_len = payload.len() as u64;
        let (mut send, mut recv) = self.open().await;
        let other = |e: transport::IoError| WireError::Other(e.to_string());
        // A refused call's payload is never read: a failed write is fine.
        let _ = send
            .send_with_payload(&Message::Call(head), &Bytes::copy_from_slice(payload))
            .await;
        let _ = send.finish();
        let head = match recv.recv().await.map_err(other)? {
            Some(Message::Result(head)) => head,
            Some(Message::Error(e)) => return Err(WireError::Refused(e)),
            got => return Err(WireError::Other(format!("{got:?}"))),
        };
        let mut chunks = Vec::new();
        match head.payload_len {
            Some(len) => chunks.push(recv.recv_payload(len, u64::MAX).await.map_err(other)?),
            None => loop {
                match recv.recv().await.map_err(other)? {
                    Some(Message::Data(chunk)) => chunks.push(chunk),
                    Some(Message::End(_)) | None => break,
                    Some(Message::Error(e)) => return Err(WireError::Refused(e)),
                    got => return Err(WireError::Other(format!("{got:?}"))),
                }
            },
        }
        Ok(Answer { head, chunks })
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.connection.close(0u32.into(), b"done");
        let _ = &self.endpoint;
    }
}

/// A lease request for `service` with `max_calls` and `ttl_ms`.
pub fn lease_request(service: &str, max_calls: u32, ttl_ms: u32) -> LeaseRequest {
    LeaseRequest {
        head: CallHead {
            timeout_ms: 30_000,
            ..call_head(service, None)
        },
        max_calls,
        idle_ms: 0,
        ttl_ms,
    }
}

/// A call head for `service` with a 10 s timeout, carrying `lease`.
pub fn call_head(service: &str, lease: Option<&str>) -> CallHead {
    CallHead {
        service: service.into(),
        payload_len: 0,
        timeout_ms: 10_000,
        hints: Vec::new(),
        priority: 0,
        realtime: false,
        no_cache: false,
        max_age_s: None,
        api_key: None,
        endpoint: None,
        log: false,
        traceparent: None,
        request_id: None,
        lease: lease.map(str::to_string),
    }
}
