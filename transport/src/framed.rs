//! Framed message IO over one quinn stream.

use std::future::Future as _;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use protocol::{CHUNK_LEN, Codec, CodecError, HEADER_LEN, Message, WireVersion};

/// First allocation for a frame body or payload, bytes (16 KiB); the buffer
/// grows from there as bytes arrive.
const READ_STEP: usize = 16 * 1024;

/// Largest payload copied next to its frame header (and the message before
/// it) into one write, bytes (16 KiB); a larger one is written as its own
/// chunks, without a copy.
pub const COALESCE_LEN: usize = 16 * 1024;

/// Bytes a connection's streams may hold in frames and payloads being read,
/// shared by the [`FramedRecv`]s of one connection (see
/// [`FramedRecv::with_budget`]). Counted in KiB permits of a tokio
/// semaphore.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    kib: u32,
}

impl ReadBudget {
    /// A budget of `bytes` (rounded up to KiB, at least 1 KiB).
    pub fn new(bytes: u64) -> Self {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// Bytes not held by a read now.
    pub fn available_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * 1024
    }

    /// Waits until `bytes` (at most the whole budget) are free and holds
    /// them until the permit is dropped.
    async fn hold(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.kib);
        self.permits.clone().acquire_many_owned(kib).await.ok()
    }
}

/// Why a framed read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The peer sent bytes that are not a valid frame; the stream is unusable.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The connection under the stream was lost or closed.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] quinn::ConnectionError),
    /// The peer reset or stopped the stream.
    #[error("stream reset by peer (code {0})")]
    Reset(u64),
    /// The stream ended in the middle of a frame or payload.
    #[error("stream ended early: {0}")]
    UnexpectedEnd(&'static str),
    /// A payload is longer than this side accepts.
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Declared payload length, bytes.
        len: u64,
        /// Largest accepted payload, bytes.
        max: u64,
    },
    /// Any other stream error (e.g. the stream was already finished).
    #[error("stream error: {0}")]
    Stream(String),
}

impl IoError {
    /// Whether the error means the peer's connection went away (as opposed to
    /// the peer sending garbage).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::ConnectionLost(_) | Self::Reset(_))
    }
}

impl From<quinn::ReadError> for IoError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::ConnectionLost(c) => Self::ConnectionLost(c),
            quinn::ReadError::Reset(code) => Self::Reset(code.into_inner()),
            other => Self::Stream(other.to_string()),
        }
    }
}

impl From<quinn::WriteError> for IoError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => Self::ConnectionLost(c),
            quinn::WriteError::Stopped(code) => Self::Reset(code.into_inner()),
            other => Self::Stream(other.to_string()),
        }
    }
}

/// The sending half of a framed stream.
#[derive(Debug)]
pub struct FramedSend {
    stream: quinn::SendStream,
    codec: Codec,
    buf: Vec<u8>,
}

impl FramedSend {
    /// Wraps `stream`; frames over `codec`'s maximum are refused.
    pub fn new(stream: quinn::SendStream, codec: Codec) -> Self {
        Self {
            stream,
            codec,
            buf: Vec::new(),
        }
    }

    /// Sends one message.
    ///
    /// # Errors
    /// [`IoError::Codec`] when it is too large, or a stream error.
    pub async fn send(&mut self, message: &Message) -> Result<(), IoError> {
        self.buf.clear();
        self.codec.encode(message, &mut self.buf)?;
        self.stream.write_all(&self.buf).await?;
        Ok(())
    }

    /// Sends `payload` as `Data` frames of at most [`CHUNK_LEN`] bytes. A
    /// small payload (at most [`COALESCE_LEN`]) goes with its frame header
    /// in one write.
    ///
    /// # Errors
    /// A stream error.
    pub async fn send_payload(&mut self, payload: &Bytes) -> Result<(), IoError> {
        if payload.len() <= COALESCE_LEN {
            self.buf.clear();
            self.push_small_payload(payload);
            self.stream.write_all(&self.buf).await?;
            return Ok(());
        }
        for at in (0..payload.len()).step_by(CHUNK_LEN) {
            let end = (at + CHUNK_LEN).min(payload.len());
            // A chunk is at most CHUNK_LEN (256 KiB) bytes.
            let header = self
                .codec
                .header(protocol::FrameKind::Data, (end - at) as u32);
            self.stream.write_all(&header.to_bytes()).await?;
            self.stream.write_chunk(payload.slice(at..end)).await?;
        }
        Ok(())
    }

    /// Sends `message` and then `payload` as [`send`](Self::send) and
    /// [`send_payload`](Self::send_payload) do, in one write when the
    /// payload is small (at most [`COALESCE_LEN`]): a call's head and its
    /// payload then leave in one QUIC packet, with one wake-up of the
    /// connection's driver instead of three.
    ///
    /// # Errors
    /// [`IoError::Codec`] when the message is too large, or a stream error.
    pub async fn send_with_payload(
        &mut self,
        message: &Message,
        payload: &Bytes,
    ) -> Result<(), IoError> {
        if payload.len() > COALESCE_LEN {
            self.send(message).await?;
            return self.send_payload(payload).await;
        }
        self.buf.clear();
        self.codec.encode(message, &mut self.buf)?;
        self.push_small_payload(payload);
        self.stream.write_all(&self.buf).await?;
        Ok(())
    }

    /// Appends a small payload's `Data` frame (none for an empty payload,
    /// as [`send_payload`](Self::send_payload) sends none) to the buffer.
    fn push_small_payload(&mut self, payload: &Bytes) {
        if payload.is_empty() {
            return;
        }
        // At most COALESCE_LEN (16 KiB) bytes.
        let header = self
            .codec
            .header(protocol::FrameKind::Data, payload.len() as u32);
        self.buf.extend_from_slice(&header.to_bytes());
        self.buf.extend_from_slice(payload);
    }

    /// Finishes the stream: the peer reads a clean end after the last frame.
    ///
    /// # Errors
    /// [`IoError::Stream`] when the stream was already finished or reset.
    pub fn finish(&mut self) -> Result<(), IoError> {
        self.stream
            .finish()
            .map_err(|e| IoError::Stream(e.to_string()))
    }

    /// Resets the stream with `code`, abandoning unsent data.
    pub fn reset(&mut self, code: u32) {
        let _ = self.stream.reset(code.into());
    }

    /// Waits until the peer has received everything or stopped the stream.
    pub async fn stopped(&mut self) {
        let _ = self.stream.stopped().await;
    }

    /// A future that completes with `true` once the peer has had the
    /// stream: it acknowledged every byte of it after [`finish`](Self::finish)
    /// (its QUIC stack holds the whole message, read or not), or it stopped
    /// the stream (having read some of it, or all of it without its end);
    /// with `false` when the connection was lost before either. It borrows
    /// nothing.
    pub fn delivered(&self) -> impl Future<Output = bool> + Send + 'static {
        let stopped = self.stream.stopped();
        async move { stopped.await.is_ok() }
    }

    /// A future that completes when the peer stops reading this stream
    /// (`STOP_SENDING`, e.g. it dropped the call) or the connection is lost;
    /// it borrows nothing, so frames can be sent while it is awaited.
    pub fn peer_gone(&self) -> impl Future<Output = ()> + Send + 'static {
        let stopped = self.stream.stopped();
        async move {
            let _ = stopped.await;
        }
    }
}

/// The receiving half of a framed stream.
#[derive(Debug)]
pub struct FramedRecv {
    stream: quinn::RecvStream,
    codec: Codec,
    budget: Option<ReadBudget>,
}

impl FramedRecv {
    /// Wraps `stream`; frames over `codec`'s maximum are refused before
    /// anything is allocated.
    pub fn new(stream: quinn::RecvStream, codec: Codec) -> Self {
        Self {
            stream,
            codec,
            budget: None,
        }
    }

    /// Makes every read hold its declared length (a frame's body, a whole
    /// payload) from `budget` before it reads, so the streams of one
    /// connection hold at most the budget in buffers; a read that finds it
    /// spent waits, and its peer's bytes wait in the QUIC receive windows.
    #[must_use]
    pub fn with_budget(mut self, budget: ReadBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Receives the next message, or `None` when the peer finished the stream
    /// cleanly between frames.
    ///
    /// # Errors
    /// [`IoError::Codec`] for a bad frame, [`IoError::UnexpectedEnd`] when the
    /// stream ends inside a frame, or a stream error.
    pub async fn recv(&mut self) -> Result<Option<Message>, IoError> {
        self.recv_frame(true).await
    }

    async fn recv_frame(&mut self, budgeted: bool) -> Result<Option<Message>, IoError> {
        let mut head = [0u8; HEADER_LEN];
        match self.stream.read_exact(&mut head).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(quinn::ReadExactError::FinishedEarly(_)) => {
                return Err(IoError::UnexpectedEnd("inside a frame header"));
            }
            Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
        }
        let header = self.codec.parse_header(&head)?;
        // The buffer grows with the bytes that arrive, not with the length
        // the header declares: a peer that declares 16 MiB and stalls holds
        // what it sent (bounded by the QUIC receive windows), nothing more.
        let len = header.len as usize;
        let _held = match (&self.budget, budgeted) {
            (Some(budget), true) => budget.hold(u64::from(header.len)).await,
            _ => None,
        };
        let mut body = BytesMut::with_capacity(len.min(READ_STEP));
        while body.len() < len {
            match self.stream.read_chunk(len - body.len(), true).await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
                Ok(None) => return Err(IoError::UnexpectedEnd("inside a frame body")),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(self.codec.decode_body(header, body.freeze())?))
    }

    /// Receives a message and fails unless there is one.
    ///
    /// # Errors
    /// As [`FramedRecv::recv`], plus [`IoError::UnexpectedEnd`] at a clean end.
    pub async fn expect(&mut self, what: &'static str) -> Result<Message, IoError> {
        self.recv().await?.ok_or(IoError::UnexpectedEnd(what))
    }

    /// Receives exactly `len` payload bytes sent as `Data` frames.
    ///
    /// # Errors
    /// [`IoError::PayloadTooLarge`] when `len > max` (checked before any
    /// allocation), [`IoError::Codec`] for a non-`Data` frame or a chunk that
    /// overruns `len`, or a stream error.
    pub async fn recv_payload(&mut self, len: u64, max: u64) -> Result<Bytes, IoError> {
        if len > max {
            return Err(IoError::PayloadTooLarge { len, max });
        }
        // len <= max, and max is a configured in-memory bound; the buffer
        // still grows with the data received, so a peer that declares a large
        // payload and stalls holds only what it sent.
        let _held = match &self.budget {
            Some(budget) => budget.hold(len).await,
            None => None,
        };
        let len = len as usize;
        let mut out = BytesMut::with_capacity(len.min(READ_STEP));
        while out.len() < len {
            // The payload's hold covers its frames.
            let frame = self.recv_frame(false).await?;
            match frame.ok_or(IoError::UnexpectedEnd("inside a payload"))? {
                Message::Data(chunk) if out.len() + chunk.len() <= len => {
                    out.extend_from_slice(&chunk);
                }
                Message::Data(chunk) => {
                    return Err(CodecError::Invalid(format!(
                        "payload overruns its declared {len} bytes by {}",
                        out.len() + chunk.len() - len
                    ))
                    .into());
                }
                other => {
                    return Err(CodecError::Unexpected {
                        got: other.kind(),
                        expected: "payload data",
                    }
                    .into());
                }
            }
        }
        Ok(out.freeze())
    }

    /// Tells the peer to stop sending, with `code`.
    pub fn stop(&mut self, code: u32) {
        let _ = self.stream.stop(code.into());
    }
}

impl Drop for FramedRecv {
    /// Reads the stream's end when it has already arrived, so that quinn's
    /// own drop sends no `STOP_SENDING`: quinn stops every stream not read
    /// to its end, the FIN in hand or not, which cost each call a frame and
    /// an ACK each way. A stream whose end has not arrived (a call given up
    /// early, a peer still sending) is stopped as before. Polled once with
    /// a no-op waker: nothing here waits.
    fn drop(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        // Bytes the peer sent beyond what was read are dropped; a bounded
        // number of reads, each of what is already buffered.
        for _ in 0..END_READS {
            let read = std::pin::pin!(self.stream.read_chunk(usize::MAX, true));
            match read.poll(&mut cx) {
                Poll::Ready(Ok(Some(_))) => {}
                _ => return,
            }
        }
    }
}

/// How many buffered chunks [`FramedRecv`]'s drop reads past before it
/// gives up on finding the stream's end.
const END_READS: usize = 4;

/// The wire version `connection` negotiated by ALPN: version 1 when the
/// peer offered no ALPN id at all (a peer older than the negotiation).
pub fn wire_version(connection: &quinn::Connection) -> WireVersion {
    connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .and_then(|alpn| WireVersion::from_alpn(&alpn))
        .unwrap_or(WireVersion::V1)
}

/// `codec` set to the wire version `connection` negotiated: every stream of
/// the connection is framed with it.
pub fn codec_for(connection: &quinn::Connection, codec: Codec) -> Codec {
    codec.with_version(wire_version(connection))
}

/// Opens a framed bidirectional stream on `connection`, framed in the
/// connection's negotiated wire version (whatever version `codec` had).
///
/// # Errors
/// [`IoError::ConnectionLost`] when the connection is gone.
pub async fn open_bi(
    connection: &quinn::Connection,
    codec: Codec,
) -> Result<(FramedSend, FramedRecv), IoError> {
    let codec = codec_for(connection, codec);
    let (send, recv) = connection.open_bi().await?;
    Ok((FramedSend::new(send, codec), FramedRecv::new(recv, codec)))
}
