//! A streamed chat completion as a load generator's call: POSTed over
//! HTTP/1.1, its `text/event-stream` read to `data: [DONE]`, the time to
//! its first token (the first event whose `delta.content` is not empty)
//! kept in a histogram of its own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use loadgen::CallFailure;

/// How long one streamed turn may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The end of an OpenAI stream.
const DONE: &[u8] = b"data: [DONE]";

/// POSTs one streamed chat completion per call to `url` and records its
/// time to first token, µs.
#[derive(Debug)]
pub struct StreamTarget {
    client: reqwest::Client,
    url: reqwest::Url,
    body: Bytes,
    first_token_us: Mutex<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl StreamTarget {
    /// A target posting `body` (a chat completion with `"stream": true`)
    /// to `url` over up to `connections` keep-alive connections.
    ///
    /// # Errors
    /// A bad URL or a client that cannot be built.
    pub fn new(url: &str, body: Bytes, connections: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .http1_only()
            .pool_max_idle_per_host(connections.max(1))
            .build()?;
        Ok(Self {
            client,
            url: reqwest::Url::parse(url)?,
            body,
            first_token_us: Mutex::new(histogram()),
        })
    }

    /// Forgets the times to first token recorded so far (after a warm-up).
    pub fn reset(&self) {
        if let Ok(mut h) = self.first_token_us.lock() {
            h.reset();
        }
    }

    /// The `quantile` (0 to 1) of the times to first token recorded since
    /// the last [`reset`](Self::reset), µs; `None` before any.
    pub fn first_token_quantile_us(&self, quantile: f64) -> Option<f64> {
        let h = self.first_token_us.lock().ok()?;
        (!h.is_empty()).then(|| h.value_at_quantile(quantile) as f64)
    }

    /// One streamed turn: a failure `http-<status>`, `io`, `timeout`, or
    /// `truncated` when the stream ends before `data: [DONE]` or without a
    /// token.
    pub async fn call(&self) -> Result<(), CallFailure> {
        let start = Instant::now();
        let mut response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .body(self.body.clone())
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(failure)?;
        let status = response.status();
        let mut seen = Vec::new();
        let mut first = None;
        while let Some(chunk) = response.chunk().await.map_err(failure)? {
            seen.extend_from_slice(&chunk);
            if first.is_none() && has_token(&seen) {
                first = Some(start.elapsed());
            }
        }
        if !status.is_success() {
            return Err(CallFailure::new(format!("http-{}", status.as_u16())));
        }
        let (Some(first), true) = (first, ends_done(&seen)) else {
            return Err(CallFailure::new("truncated"));
        };
        let us = u64::try_from(first.as_micros()).unwrap_or(u64::MAX).max(1);
        if let Ok(mut h) = self.first_token_us.lock() {
            h.saturating_record(us);
        }
        Ok(())
    }
}

fn failure(e: reqwest::Error) -> CallFailure {
    CallFailure::new(if e.is_timeout() { "timeout" } else { "io" })
}

/// Whether the event stream so far holds a token: a `"content"` whose
/// string is not empty (with or without a space after the colon).
fn has_token(stream: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\":";
    let mut rest = stream;
    while let Some(at) = find(rest, KEY) {
        rest = &rest[at + KEY.len()..];
        let value = rest.strip_prefix(b" ").unwrap_or(rest);
        if value.len() >= 2 && value[0] == b'"' && value[1] != b'"' {
            return true;
        }
    }
    false
}

/// Whether the stream's last event is `data: [DONE]`.
fn ends_done(stream: &[u8]) -> bool {
    let trimmed = stream.trim_ascii_end();
    trimmed.ends_with(DONE)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_a_content_that_is_not_empty() {
        let role = br#"data: {"choices":[{"delta":{"content":"","role":"assistant"}}]}"#;
        assert!(!has_token(role));
        let token = br#"data: {"choices":[{"delta":{"content":"hello "}}]}"#;
        assert!(has_token(token));
        let spaced = br#"data: {"choices":[{"delta":{"content": "hi"}}]}"#;
        assert!(has_token(spaced));
        let both = [role.as_slice(), b"\n\n", token.as_slice()].concat();
        assert!(has_token(&both));
        // Cut in the middle of the value: not yet.
        assert!(!has_token(br#"data: {"delta":{"content":""#));
    }

    #[test]
    fn a_stream_is_whole_when_it_ends_with_done() {
        assert!(ends_done(b"data: {}\n\ndata: [DONE]\n\n"));
        assert!(!ends_done(b"data: {}\n\n"));
        assert!(!ends_done(b"data: [DONE]\n\ndata: {}\n\n"));
    }
}
