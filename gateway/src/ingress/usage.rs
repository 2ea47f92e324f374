//! Token accounting of the OpenAI answers the ingress relays: the model
//! server's `usage` (prompt, completion and cached prompt tokens) counted
//! per service and tenant, and for streamed answers the time to the first
//! token and per output token.
//!
//! A streamed chat or completion is asked for its usage
//! ([`ask_for_usage`]: `stream_options.include_usage`) when the caller did
//! not ask; the usage chunk that then ends the stream (no `choices`) is
//! taken out before the caller sees it. A JSON answer carries `usage` in
//! its body, read once the body is whole (answers up to
//! [`MAX_JSON_BODY`]).
//!
//! Series (`service` and `tenant` bounded by [`labels`]):
//! `tokens_total{service,tenant,kind}` (`kind` `prompt`, `completion`,
//! `cached`), `time_to_first_token_seconds{service}` (from the call's
//! arrival to the first event carrying output) and
//! `time_per_output_token_seconds{service}` (from the first output to the
//! end, over the completion tokens after the first).

use std::time::Instant;

use axum::body::Bytes;
use serde::Deserialize;

use crate::telemetry::labels;

/// Longest JSON answer read for its usage, bytes; a longer one is relayed
/// uncounted.
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

/// Longest event held back while its end has not come, bytes; past it,
/// the rest of the stream is relayed as it comes, uncounted.
const MAX_EVENT: usize = 1024 * 1024;

/// The body of a streamed chat or completion request with
/// `stream_options.include_usage` set, when the caller did not set it
/// (`None`: it did, or the body is not a JSON object).
pub(super) fn ask_for_usage(body: &[u8], options: Option<&serde_json::Value>) -> Option<Bytes> {
    let mentioned = || body.windows(16).any(|w| w == br#""stream_options""#);
    match options {
        None if !mentioned() => {
            // No `stream_options`: one key spliced in after the brace.
            let at = body.iter().position(|b| !b.is_ascii_whitespace())?;
            if body[at] != b'{' {
                return None;
            }
            let rest = &body[at + 1..];
            let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let key: &[u8] = if empty {
                br#""stream_options":{"include_usage":true}"#
            } else {
                br#""stream_options":{"include_usage":true},"#
            };
            let mut out = Vec::with_capacity(body.len() + key.len());
            out.extend_from_slice(&body[..=at]);
            out.extend_from_slice(key);
            out.extend_from_slice(rest);
            Some(Bytes::from(out))
        }
        Some(options) if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) => {
            None
        }
        _ => {
            let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
            let fields = value.as_object_mut()?;
            let options = fields
                .entry("stream_options")
                .or_insert_with(|| serde_json::json!({}));
            if !options.is_object() {
                *options = serde_json::json!({});
            }
            options
                .as_object_mut()?
                .insert("include_usage".into(), serde_json::Value::Bool(true));
            serde_json::to_vec(&value).ok().map(Bytes::from)
        }
    }
}

/// An OpenAI `usage` object (the fields counted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// The fields of an answer or a streamed chunk the meter reads.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
}

#[derive(Debug, Default, Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    /// A completion chunk's text.
    #[serde(default)]
    text: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<serde_json::Value>,
}

impl Choice {
    /// Whether the chunk carries output (non-empty content or text).
    fn has_output(&self) -> bool {
        let some = |v: &Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => !s.is_empty(),
            Some(serde_json::Value::Null) | None => false,
            Some(_) => true,
        };
        some(&self.text) || self.delta.as_ref().is_some_and(|d| some(&d.content))
    }
}

/// Counts one answer's tokens as it is relayed.
#[derive(Debug)]
pub(super) struct Meter {
    /// The service's label value.
    service: String,
    /// The tenant's label value.
    tenant: String,
    arrived: Instant,
    shape: Shape,
    usage: Option<Usage>,
}

#[derive(Debug)]
enum Shape {
    /// A JSON answer, kept until whole (`None` once past
    /// [`MAX_JSON_BODY`]).
    Json(Option<Vec<Bytes>>, usize),
    /// Server-sent events.
    Events {
        /// Take the usage-only chunk out (the caller did not ask for it).
        strip: bool,
        /// The start of an event whose end has not come yet.
        held: Vec<u8>,
        /// When the first output came.
        first: Option<Instant>,
        /// Past [`MAX_EVENT`] in one event: relay as it comes.
        blind: bool,
    },
}

impl Meter {
    /// A meter of an answer of `service` for `tenant` (names the gateway
    /// knows, else `_unknown`), the call having arrived at `arrived`;
    /// `events` for a streamed answer, `strip` to take out its usage chunk.
    pub(super) fn new(
        service: &str,
        tenant: &str,
        arrived: Instant,
        events: bool,
        strip: bool,
    ) -> Self {
        let shape = if events {
            Shape::Events {
                strip,
                held: Vec::new(),
                first: None,
                blind: false,
            }
        } else {
            Shape::Json(Some(Vec::new()), 0)
        };
        Self {
            service: labels::service(service),
            tenant: labels::tenant(tenant),
            arrived,
            shape,
            usage: None,
        }
    }

    /// Passes one chunk of the answer: the bytes to send the caller now
    /// (`None`: nothing yet).
    pub(super) fn chunk(&mut self, chunk: Bytes) -> Option<Bytes> {
        let now = Instant::now();
        match &mut self.shape {
            Shape::Json(kept, len) => {
                *len += chunk.len();
                if *len > MAX_JSON_BODY {
                    *kept = None;
                } else if let Some(kept) = kept {
                    kept.push(chunk.clone());
                }
                Some(chunk)
            }
            Shape::Events {
                strip,
                held,
                first,
                blind,
            } => {
                if *blind {
                    return Some(chunk);
                }
                let usage = &mut self.usage;
                if held.is_empty() && last_boundary(&chunk) == Some(chunk.len()) {
                    // The usual case: whole events, sent as they are unless
                    // one is taken out (reading an event twice is harmless).
                    let mut all = true;
                    for e in split(&chunk) {
                        all &= event(e, *strip, first, usage, now);
                    }
                    if all {
                        return Some(chunk);
                    }
                    let out: Vec<u8> = split(&chunk)
                        .into_iter()
                        .filter(|e| event(e, *strip, first, usage, now))
                        .flat_map(|e| e.iter().copied())
                        .collect();
                    return (!out.is_empty()).then(|| Bytes::from(out));
                }
                held.extend_from_slice(&chunk);
                let Some(end) = last_boundary(held) else {
                    if held.len() > MAX_EVENT {
                        *blind = true;
                        return Some(Bytes::from(std::mem::take(held)));
                    }
                    return None;
                };
                let rest = held.split_off(end);
                let whole = std::mem::replace(held, rest);
                let out: Vec<u8> = split(&whole)
                    .into_iter()
                    .filter(|e| event(e, *strip, first, usage, now))
                    .flat_map(|e| e.iter().copied())
                    .collect();
                (!out.is_empty()).then(|| Bytes::from(out))
            }
        }
    }

    /// The answer ended: records its tokens and times, and returns what is
    /// still held back (an event without its blank line).
    pub(super) fn end(mut self) -> Option<Bytes> {
        let now = Instant::now();
        let mut rest = None;
        let mut first_output = None;
        match &mut self.shape {
            Shape::Json(Some(kept), _) => {
                let body: Vec<u8> = kept.iter().flat_map(|c| c.iter().copied()).collect();
                if let Ok(answer) = serde_json::from_slice::<Answer>(&body) {
                    self.usage = answer.usage;
                }
            }
            Shape::Json(None, _) => {}
            Shape::Events {
                held, first, blind, ..
            } => {
                if !*blind && !held.is_empty() {
                    let held = std::mem::take(held);
                    if event(&held, false, first, &mut self.usage, now) {
                        rest = Some(Bytes::from(held));
                    }
                }
                first_output = *first;
            }
        }
        self.record(first_output, now);
        rest
    }

    fn record(&self, first: Option<Instant>, now: Instant) {
        if let Some(usage) = self.usage {
            let cached = usage
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0);
            for (kind, tokens) in [
                ("prompt", usage.prompt_tokens.unwrap_or(0)),
                ("completion", usage.completion_tokens.unwrap_or(0)),
                ("cached", cached),
            ] {
                metrics::counter!(
                    "tokens_total",
                    "service" => self.service.clone(),
                    "tenant" => self.tenant.clone(),
                    "kind" => kind,
                )
                .increment(tokens);
            }
        }
        let Some(first) = first else { return };
        metrics::histogram!("time_to_first_token_seconds", "service" => self.service.clone())
            .record(first.duration_since(self.arrived).as_secs_f64());
        let tokens = self.usage.and_then(|u| u.completion_tokens).unwrap_or(0);
        if tokens > 1 {
            #[allow(clippy::cast_precision_loss)] // token counts are far below 2^52
            let per_token = now.duration_since(first).as_secs_f64() / (tokens - 1) as f64;
            metrics::histogram!("time_per_output_token_seconds", "service" => self.service.clone())
                .record(per_token);
        }
    }
}

/// Reads one event (its lines and the blank line after them): notes its
/// usage and first output; returns whether the caller gets it (false for
/// the usage-only chunk when `strip`).
fn event(
    event: &[u8],
    strip: bool,
    first: &mut Option<Instant>,
    usage: &mut Option<Usage>,
    now: Instant,
) -> bool {
    let has_usage = has_usage_object(event);
    if first.is_some() && !has_usage {
        return true;
    }
    let Some(data) = data_of(event) else {
        return true;
    };
    let Ok(chunk) = serde_json::from_slice::<Answer>(&data) else {
        return true;
    };
    let choices = chunk.choices.unwrap_or_default();
    if first.is_none() && choices.iter().any(Choice::has_output) {
        *first = Some(now);
    }
    match chunk.usage {
        Some(found) => {
            *usage = Some(found);
            !(strip && choices.is_empty())
        }
        None => true,
    }
}

/// The data of an event: its `data:` lines joined by newlines (`None` for
/// none, or `[DONE]`).
fn data_of(event: &[u8]) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    (!data.is_empty() && data.trim_ascii() != b"[DONE]").then_some(data)
}

/// The length of the event end (a line feed then a blank line, `\n\n`
/// or `\n\r\n`) at `at`, if one is there.
fn boundary_at(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at..) {
        Some([b'\n', b'\n', ..]) => Some(2),
        Some([b'\n', b'\r', b'\n', ..]) => Some(3),
        _ => None,
    }
}

/// The events of `bytes` (each with its blank line); a last one without
/// it is one event too.
fn split(bytes: &[u8]) -> Vec<&[u8]> {
    let mut events = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(n) = boundary_at(bytes, i) {
            events.push(&bytes[start..i + n]);
            start = i + n;
            i += n;
        } else {
            i += 1;
        }
    }
    if start < bytes.len() {
        events.push(&bytes[start..]);
    }
    events
}

/// Where the last whole event of `bytes` ends (after its blank line).
fn last_boundary(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len())
        .rev()
        .find_map(|i| boundary_at(bytes, i).map(|n| i + n))
}

/// Whether an event's JSON has a `usage` object (not `null`).
fn has_usage_object(event: &[u8]) -> bool {
    const KEY: &[u8] = br#""usage""#;
    let mut from = 0;
    while let Some(at) = event[from..].windows(KEY.len()).position(|w| w == KEY) {
        let after = &event[from + at + KEY.len()..];
        let mut rest = after.iter().skip_while(|b| b.is_ascii_whitespace());
        if rest.next() == Some(&b':') && rest.find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return true;
        }
        from += at + KEY.len();
    }
    false
}

/// Help texts of the token series.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        "tokens_total",
        "Tokens the model servers reported in their OpenAI usage, by service, tenant and kind (prompt, completion, cached prompt tokens)."
    );
    metrics::describe_histogram!(
        "time_to_first_token_seconds",
        metrics::Unit::Seconds,
        "Streamed OpenAI answers: time from the call's arrival to the first output, by service."
    );
    metrics::describe_histogram!(
        "time_per_output_token_seconds",
        metrics::Unit::Seconds,
        "Streamed OpenAI answers: time from the first output to the end over the completion tokens after the first, by service."
    );
}

#[cfg(test)]
mod tests;
