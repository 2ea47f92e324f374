//! A service's answer: its head (media type, HTTP status) and its body,
//! either whole (built-ins) or streamed chunk by chunk as the service
//! produces it (a command's stdout, an HTTP response body).
//!
//! A streamed body is produced by a task ([`stream`]) that writes into a
//! bounded channel, so a slow reader slows the service down (backpressure)
//! and nothing is buffered whole. Dropping the [`Chunks`] aborts the task,
//! which drops what it owns: a command is killed (`kill_on_drop` and its
//! process group), an HTTP request is aborted (its connection closed).

use bytes::{Bytes, BytesMut};
use protocol::LogChunk;
use tokio::sync::mpsc;

use super::ServiceError;

/// Chunks a streamed body may get ahead of its reader.
const CHANNEL_CHUNKS: usize = 8;

/// A service's answer.
#[derive(Debug)]
pub struct Reply {
    /// The result's media type, when the service named one (an HTTP
    /// response's `Content-Type`).
    pub content_type: Option<String>,
    /// The HTTP status the service answered with (`http`/`openai` kinds).
    pub status: Option<u16>,
    /// The result bytes.
    pub body: Body,
}

/// A result's bytes.
#[derive(Debug)]
pub enum Body {
    /// All of it, known at once (built-ins).
    Whole(Bytes),
    /// Chunks as the service writes them.
    Stream(Chunks),
}

/// What a streaming task hands its reader.
#[derive(Debug)]
enum Piece {
    Data(Bytes),
    Log(LogChunk),
    End,
    Fail(ServiceError),
}

/// The reading end of a streamed body; dropping it stops the service.
#[derive(Debug)]
pub struct Chunks {
    rx: mpsc::Receiver<Piece>,
    task: tokio::task::JoinHandle<()>,
    done: bool,
}

/// The writing end a streaming task gets.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    tx: mpsc::Sender<Piece>,
}

/// The reader is gone: the task should stop its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

impl Sink {
    /// Hands one chunk to the reader, waiting while it is
    /// [`CHANNEL_CHUNKS`] chunks behind. Empty chunks are skipped.
    pub(crate) async fn data(&self, chunk: Bytes) -> Result<(), Closed> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.tx.send(Piece::Data(chunk)).await.map_err(|_| Closed)
    }

    /// As [`Sink::data`], from a thread outside the async runtime.
    pub(crate) fn blocking_data(&self, chunk: Bytes) -> Result<(), Closed> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.tx
            .blocking_send(Piece::Data(chunk))
            .map_err(|_| Closed)
    }

    /// Hands one log chunk (a command's stderr, when the call asked for
    /// its log) to the reader, with the same backpressure as [`Sink::data`].
    pub(crate) async fn log(&self, chunk: LogChunk) -> Result<(), Closed> {
        if chunk.data.is_empty() {
            return Ok(());
        }
        self.tx.send(Piece::Log(chunk)).await.map_err(|_| Closed)
    }

    /// As [`Sink::log`], from a thread outside the async runtime.
    pub(crate) fn blocking_log(&self, chunk: LogChunk) -> Result<(), Closed> {
        if chunk.data.is_empty() {
            return Ok(());
        }
        self.tx.blocking_send(Piece::Log(chunk)).map_err(|_| Closed)
    }

    async fn end(&self, outcome: Result<(), ServiceError>) {
        let piece = match outcome {
            Ok(()) => Piece::End,
            Err(e) => Piece::Fail(e),
        };
        let _ = self.tx.send(piece).await;
    }
}

/// Runs `work` as a task writing chunks into a [`Sink`]; its result ends the
/// stream (an error after some chunks reaches the reader after them).
pub(crate) fn stream<F, Fut>(work: F) -> Chunks
where
    F: FnOnce(Sink) -> Fut,
    Fut: Future<Output = Result<(), ServiceError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let sink = Sink { tx };
    let work = work(sink.clone());
    let task = tokio::spawn(async move {
        let outcome = work.await;
        sink.end(outcome).await;
    });
    Chunks {
        rx,
        task,
        done: false,
    }
}

/// One item of a streamed body: a chunk of the result or of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A chunk of the result (a command's stdout).
    Data(Bytes),
    /// A chunk of the service's log (a command's stderr), only when the call
    /// asked for it.
    Log(LogChunk),
}

impl Chunks {
    /// The next chunk of the result, skipping log chunks: `Some(Ok(bytes))`,
    /// `Some(Err(e))` when the service failed (the stream's last item),
    /// `None` at its clean end.
    pub async fn next(&mut self) -> Option<Result<Bytes, ServiceError>> {
        loop {
            match self.next_item().await? {
                Ok(Item::Data(chunk)) => return Some(Ok(chunk)),
                Ok(Item::Log(_)) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next item, result or log chunk, in the order the service wrote
    /// them: as [`Chunks::next`] otherwise.
    pub async fn next_item(&mut self) -> Option<Result<Item, ServiceError>> {
        if self.done {
            return None;
        }
        let item = match self.rx.recv().await {
            Some(Piece::Data(chunk)) => return Some(Ok(Item::Data(chunk))),
            Some(Piece::Log(chunk)) => return Some(Ok(Item::Log(chunk))),
            Some(Piece::End) => None,
            Some(Piece::Fail(e)) => Some(Err(e)),
            None => Some(Err(ServiceError::internal(
                "the service's task ended without finishing its result",
            ))),
        };
        self.done = true;
        item
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Body {
    /// Reads the whole body.
    ///
    /// # Errors
    /// The service's error, as [`Chunks::next`] gives it.
    pub async fn collect(self) -> Result<Bytes, ServiceError> {
        match self {
            Self::Whole(bytes) => Ok(bytes),
            Self::Stream(mut chunks) => {
                let mut out = BytesMut::new();
                while let Some(chunk) = chunks.next().await {
                    out.extend_from_slice(&chunk?);
                }
                Ok(out.freeze())
            }
        }
    }
}

impl Reply {
    /// A whole result with no media type nor status.
    pub(crate) fn whole(bytes: Bytes) -> Self {
        Self {
            content_type: None,
            status: None,
            body: Body::Whole(bytes),
        }
    }
}
