//! Guest stdout/stderr, forwarded line by line to `tracing` (target `policy`)
//! and rate-limited per policy.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Most lines a policy may log per [`WINDOW`]; the rest are dropped and counted.
const LINES_PER_WINDOW: u32 = 20;
/// The rate-limit window.
const WINDOW: Duration = Duration::from_secs(1);
/// Longer lines are cut here (bytes).
const MAX_LINE: usize = 1024;
/// How many bytes a guest may write at once (the `check-write` permit).
const WRITE_PERMIT: usize = 64 * 1024;

/// Which guest stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// The per-policy log sink shared by the policy's stdout and stderr, across
/// instance rebuilds.
#[derive(Debug)]
pub(crate) struct LogSink {
    /// Where the policy came from; used until its name is known.
    origin: String,
    name: OnceLock<String>,
    state: Mutex<SinkState>,
    dropped_total: AtomicU64,
}

#[derive(Debug)]
struct SinkState {
    window_start: Instant,
    lines_in_window: u32,
    dropped_in_window: u64,
    /// Partial lines, stdout then stderr.
    partial: [Vec<u8>; 2],
}

impl LogSink {
    pub(crate) fn new(origin: &str) -> Arc<Self> {
        Arc::new(Self {
            origin: origin.to_owned(),
            name: OnceLock::new(),
            state: Mutex::new(SinkState {
                window_start: Instant::now(),
                lines_in_window: 0,
                dropped_in_window: 0,
                partial: [Vec::new(), Vec::new()],
            }),
            dropped_total: AtomicU64::new(0),
        })
    }

    /// Names the policy in later log lines (once its `name` export answered).
    pub(crate) fn set_name(&self, name: &str) {
        let _ = self.name.set(name.to_owned());
    }

    /// Lines dropped by the rate limit so far.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    fn label(&self) -> &str {
        self.name.get().map_or(&self.origin, String::as_str)
    }

    /// Appends guest bytes; logs every completed line.
    fn write(&self, stream: Stream, mut bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = usize::from(stream == Stream::Stderr);
        while !bytes.is_empty() {
            let room = MAX_LINE.saturating_sub(state.partial[slot].len()).max(1);
            let (chunk, rest, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) if i <= room => (&bytes[..i], &bytes[i + 1..], true),
                _ if bytes.len() >= room => (&bytes[..room], &bytes[room..], true),
                _ => (bytes, &[][..], false),
            };
            state.partial[slot].extend_from_slice(chunk);
            if complete {
                let line = std::mem::take(&mut state.partial[slot]);
                self.emit(&mut state, stream, &line);
            }
            bytes = rest;
        }
    }

    /// Logs the partial line of `stream`, if any.
    fn flush(&self, stream: Stream) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = usize::from(stream == Stream::Stderr);
        if !state.partial[slot].is_empty() {
            let line = std::mem::take(&mut state.partial[slot]);
            self.emit(&mut state, stream, &line);
        }
    }

    fn emit(&self, state: &mut SinkState, stream: Stream, line: &[u8]) {
        let now = Instant::now();
        if now.duration_since(state.window_start) >= WINDOW {
            if state.dropped_in_window > 0 {
                tracing::warn!(
                    target: "policy",
                    policy = self.label(),
                    dropped = state.dropped_in_window,
                    "policy output rate-limited: dropped lines"
                );
            }
            state.window_start = now;
            state.lines_in_window = 0;
            state.dropped_in_window = 0;
        }
        if state.lines_in_window >= LINES_PER_WINDOW {
            state.dropped_in_window += 1;
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.lines_in_window += 1;
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        match stream {
            Stream::Stdout => {
                tracing::info!(target: "policy", policy = self.label(), stream = "stdout", "{text}");
            }
            Stream::Stderr => {
                tracing::warn!(target: "policy", policy = self.label(), stream = "stderr", "{text}");
            }
        }
    }
}

/// A WASI stdout/stderr implementation writing into a [`LogSink`].
#[derive(Debug, Clone)]
pub(crate) struct LogStream {
    sink: Arc<LogSink>,
    stream: Stream,
}

impl LogStream {
    pub(crate) fn new(sink: Arc<LogSink>, stream: Stream) -> Self {
        Self { sink, stream }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sink.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.sink.flush(self.stream);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::{LINES_PER_WINDOW, LogSink, MAX_LINE, Stream};

    #[test]
    fn splits_lines_and_rate_limits() {
        let sink = LogSink::new("test.wasm");
        sink.write(Stream::Stdout, b"hel");
        sink.write(Stream::Stdout, b"lo\nworld\n");
        assert_eq!(sink.dropped_total(), 0);
        for _ in 0..LINES_PER_WINDOW {
            sink.write(Stream::Stderr, b"spam\n");
        }
        assert_eq!(sink.dropped_total(), 2);
    }

    #[test]
    fn long_lines_are_cut() {
        let sink = LogSink::new("test.wasm");
        sink.write(Stream::Stdout, &vec![b'x'; MAX_LINE * 3 + 1]);
        sink.flush(Stream::Stdout);
        assert_eq!(sink.dropped_total(), 0);
        sink.write(Stream::Stdout, &vec![b'x'; MAX_LINE * 20]);
        assert!(sink.dropped_total() > 0);
    }
}
