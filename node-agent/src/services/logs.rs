//! A command's stderr as log chunks, for a call that asked for its log
//! (`DispatchHead::log`): line-buffered (one chunk per read of whole lines,
//! at most [`MAX_LOG_CHUNK`] bytes; a last partial line at the end), while
//! the tail is still kept for the error message.

use std::time::{SystemTime, UNIX_EPOCH};

use protocol::{LogChunk, LogStream, job::MAX_LOG_CHUNK};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::reply::{Closed, Sink};

/// Bytes read from the pipe at once.
const READ_SIZE: usize = 8192;

/// The last `keep` bytes of what went through, and whether any were dropped.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    kept: Vec<u8>,
    cut: bool,
    keep: usize,
}

impl Tail {
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            keep,
            ..Self::default()
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.kept.extend_from_slice(bytes);
        if self.kept.len() > 2 * self.keep {
            self.kept.drain(..self.kept.len() - self.keep);
            self.cut = true;
        }
    }

    /// The kept bytes (at most `keep`) and whether anything was dropped.
    pub(crate) fn finish(mut self) -> (Vec<u8>, bool) {
        if self.kept.len() > self.keep {
            self.kept.drain(..self.kept.len() - self.keep);
            self.cut = true;
        }
        (self.kept, self.cut)
    }
}

/// Milliseconds since the Unix epoch now (0 before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads all of `pipe`, handing its whole lines to `sink` as stderr
/// [`LogChunk`]s as they come and keeping its last `keep` bytes for the
/// error message. A read error ends the reading quietly, as the end of the
/// pipe does.
///
/// # Errors
/// [`Closed`] when the reader of the result went away.
pub(crate) async fn relay_stderr(
    mut pipe: impl AsyncRead + Unpin,
    keep: usize,
    sink: &Sink,
) -> Result<(Vec<u8>, bool), Closed> {
    let mut tail = Tail::new(keep);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0; READ_SIZE];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tail.push(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        let ready = whole_lines(&pending);
        if ready > 0 {
            send(sink, pending.drain(..ready).collect()).await?;
        }
    }
    send(sink, pending).await?;
    Ok(tail.finish())
}

/// How many leading bytes of `pending` go now: up to its last newline, or
/// all of it once a line without one fills a chunk.
fn whole_lines(pending: &[u8]) -> usize {
    match pending.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if pending.len() >= MAX_LOG_CHUNK => pending.len(),
        None => 0,
    }
}

/// Sends `bytes` as chunks of at most [`MAX_LOG_CHUNK`] bytes, each cut
/// after a newline where one is in reach.
async fn send(sink: &Sink, bytes: Vec<u8>) -> Result<(), Closed> {
    let ts_ms = now_ms();
    for data in split(bytes, MAX_LOG_CHUNK) {
        sink.log(LogChunk {
            stream: LogStream::Stderr,
            ts_ms,
            data,
        })
        .await?;
    }
    Ok(())
}

/// `bytes` in pieces of at most `max` bytes (`max` > 0), each ending after
/// its last newline within `max` when it has one.
pub(crate) fn split(mut bytes: Vec<u8>, max: usize) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    while bytes.len() > max {
        let at = bytes[..max]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(max, |i| i + 1);
        let rest = bytes.split_off(at);
        pieces.push(std::mem::replace(&mut bytes, rest));
    }
    if !bytes.is_empty() {
        pieces.push(bytes);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cuts_after_newlines_within_the_limit() {
        assert!(split(Vec::new(), 4).is_empty());
        assert_eq!(split(b"ab\ncd\n".to_vec(), 10), vec![b"ab\ncd\n".to_vec()]);
        assert_eq!(
            split(b"ab\ncdefg\n".to_vec(), 4),
            vec![b"ab\n".to_vec(), b"cdef".to_vec(), b"g\n".to_vec()]
        );
    }

    #[test]
    fn whole_lines_waits_for_a_newline_or_a_full_chunk() {
        assert_eq!(whole_lines(b"abc"), 0);
        assert_eq!(whole_lines(b"a\nbc"), 2);
        assert_eq!(whole_lines(&vec![b'x'; MAX_LOG_CHUNK]), MAX_LOG_CHUNK);
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Tail::new(3);
        tail.push(b"ab");
        tail.push(b"cdefg");
        assert_eq!(tail.finish(), (b"efg".to_vec(), true));
        let mut tail = Tail::new(3);
        tail.push(b"ab");
        assert_eq!(tail.finish(), (b"ab".to_vec(), false));
    }
}
