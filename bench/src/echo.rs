//! `switchyard-bench-suite echo-server`: a stand-alone QUIC echo server that
//! speaks the gateway's client-facing protocol with the same crates
//! (`protocol` frames over `transport`'s endpoint, TLS and framing), so the
//! unmodified SDK calls it directly: section 2's `sdk-direct-echo`, the
//! SDK → agent path without the gateway.
//!
//! As the gateway serves a client: the ALPN picks each connection's wire
//! version; every bidirectional stream is one request whose first frame must
//! be a `Call` (anything else is answered `bad request`); the call's payload
//! follows as `Data` frames, read within the call's timeout; the answer is a
//! `Result` head of known length, the payload back as `Data`, and the
//! stream's finish. Any service name is echoed. It runs on one thread, as
//! the suite's gateway does (`worker_threads = 1`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use protocol::{CallError, CallHead, Codec, ErrorKind, Message, ResultHead, Timings};
use transport::{EndpointConfig, FramedRecv, FramedSend, TlsFiles};

use crate::procs::Proc;

/// The node id the echo server's answers carry.
pub const NODE_ID: &str = "echo-server";
/// The policy name its answers carry (nothing picks a node).
pub const POLICY: &str = "direct";
/// Largest payload accepted, bytes: the protocol's frame limit (16 MiB).
const MAX_PAYLOAD: u64 = protocol::DEFAULT_MAX_FRAME_LEN as u64;
/// The file in `--dir` the bound address is written to (after the CA).
const ADDR_FILE: &str = "addr";

/// `echo-server`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// UDP address to listen on (port 0: any free port, written to DIR/addr).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Folder of its TLS files (`ca.pem` for clients to trust; made if
    /// missing) and of the `addr` file.
    #[arg(long)]
    pub dir: PathBuf,
}

/// A bound echo server.
#[derive(Debug)]
pub struct EchoServer {
    endpoint: quinn::Endpoint,
    ca: PathBuf,
}

impl EchoServer {
    /// Makes a CA and a certificate for `localhost`/`127.0.0.1` in `dir` if
    /// missing and binds the QUIC endpoint on `listen`.
    ///
    /// # Errors
    /// The TLS files cannot be made or loaded, or the socket cannot be bound.
    pub fn bind(listen: SocketAddr, dir: &Path) -> Result<Self> {
        let files = TlsFiles::in_dir(dir);
        files.create_if_missing(&["localhost".into(), "127.0.0.1".into()])?;
        let endpoint = transport::server_endpoint(listen, &files, &EndpointConfig::default())?;
        Ok(Self {
            endpoint,
            ca: files.ca,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket is gone.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The CA file clients trust.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// Accepts connections and serves their calls until the endpoint closes.
    pub async fn serve(self) {
        let codec = Codec::new(protocol::DEFAULT_MAX_FRAME_LEN);
        while let Some(incoming) = self.endpoint.accept().await {
            tokio::spawn(async move {
                if let Ok(connection) = incoming.await {
                    connection_loop(connection, codec).await;
                }
            });
        }
    }
}

/// Serves every stream of one connection, each on its own task.
async fn connection_loop(connection: quinn::Connection, codec: Codec) {
    let codec = transport::codec_for(&connection, codec);
    while let Ok((send, recv)) = connection.accept_bi().await {
        let send = FramedSend::new(send, codec);
        let recv = FramedRecv::new(recv, codec);
        tokio::spawn(request(send, recv));
    }
}

/// One request stream: a call echoed, or an error for anything else.
async fn request(mut send: FramedSend, mut recv: FramedRecv) {
    let answered = match recv.recv().await {
        Ok(Some(Message::Call(head))) => echo(&head, &mut recv).await,
        Ok(Some(other)) => Err(bad(format!(
            "the echo server serves Call streams only, not {:?}",
            other.kind()
        ))),
        Ok(None) => return,
        Err(e) => Err(bad(format!("bad frame: {e}"))),
    };
    let sent = match answered {
        Ok((head, payload)) => {
            send.send_with_payload(&Message::Result(head), &payload)
                .await
        }
        Err(error) => {
            recv.stop(protocol::codes::reset::CANCELLED);
            send.send(&Message::Error(error)).await
        }
    };
    if sent.is_ok() {
        let _ = send.finish();
    }
}

/// Reads the call's payload within its timeout and returns the answer.
async fn echo(head: &CallHead, recv: &mut FramedRecv) -> Result<(ResultHead, Bytes), CallError> {
    let arrived = Instant::now();
    head.validate().map_err(|e| bad(e.to_string()))?;
    let timeout = Duration::from_millis(u64::from(head.timeout_ms.max(1)));
    let payload = tokio::time::timeout(timeout, recv.recv_payload(head.payload_len, MAX_PAYLOAD))
        .await
        .map_err(|_| {
            CallError::new(
                ErrorKind::Timeout,
                format!("payload not read within {} ms", timeout.as_millis()),
            )
        })?
        .map_err(|e| bad(format!("reading the payload: {e}")))?;
    Ok((result_head(payload.len(), arrived.elapsed()), payload))
}

/// The answer's head for a `len`-byte echo that took `took`.
pub fn result_head(len: usize, took: Duration) -> ResultHead {
    let ms = took.as_secs_f32() * 1000.0;
    ResultHead {
        payload_len: Some(len as u64),
        node_id: NODE_ID.into(),
        policy: POLICY.into(),
        timings: Timings {
            queue_ms: 0.0,
            node_ms: ms,
            total_ms: ms,
            attempts: 1,
        },
        cache: None,
        content_type: None,
        status: None,
        explain: None,
        request_id: None,
        via: Vec::new(),
    }
}

fn bad(message: String) -> CallError {
    CallError::new(ErrorKind::BadRequest, message)
}

/// Runs `echo-server`: binds, prints and writes its address (`DIR/addr`,
/// written whole by a rename), serves on a one-thread runtime until killed.
///
/// # Errors
/// The runtime, TLS files, socket or address file fail.
pub fn run(args: &ServerArgs) -> Result<()> {
    let runtime = transport::runtime::build(Some(1))?;
    runtime.block_on(async {
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("creating {}", args.dir.display()))?;
        let server = EchoServer::bind(args.listen, &args.dir)?;
        let addr = server.local_addr()?;
        let tmp = args.dir.join(format!("{ADDR_FILE}.tmp"));
        std::fs::write(&tmp, addr.to_string())?;
        std::fs::rename(&tmp, args.dir.join(ADDR_FILE))?;
        println!(
            "echo server listening on {addr}; CA file {}",
            server.ca().display()
        );
        server.serve().await;
        Ok(())
    })
}

/// The echo server run by the suite as its own process.
#[derive(Debug)]
pub struct EchoProc {
    /// The process (killed when dropped).
    pub proc: Proc,
    /// Its address, `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    /// The CA file it was made with.
    pub ca: PathBuf,
}

impl EchoProc {
    /// Starts `program echo-server` (this suite's own binary) with its files
    /// in `dir/echo-server` and waits up to 10 s for its address.
    ///
    /// # Errors
    /// It cannot be started, exits, or writes no address in time.
    pub fn start(program: &Path, dir: &Path) -> Result<Self> {
        let dir = dir.join("echo-server");
        std::fs::create_dir_all(&dir)?;
        let d = dir.display().to_string();
        let log = dir.join("out.log");
        let mut proc = Proc::spawn("echo-server", program, &["echo-server", "--dir", &d], &log)?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(text) = std::fs::read_to_string(dir.join(ADDR_FILE)) {
                let addr = text
                    .trim()
                    .parse()
                    .with_context(|| format!("echo server address {text:?}"))?;
                return Ok(Self {
                    proc,
                    addr,
                    ca: TlsFiles::in_dir(&dir).ca,
                });
            }
            if let Err(e) = proc.check_alive() {
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("{e}; its output:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "echo server wrote no address within 10 s; see {}",
            log.display()
        )
    }
}

#[cfg(test)]
mod tests;
