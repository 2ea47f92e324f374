//! The multi-turn chat workload of the `llm` section: conversations whose
//! every turn resends the whole history, their Poisson schedule, and a
//! streamed `POST /v1/chat/completions` client that times the first SSE
//! data event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The shape of the workload.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Shape {
    /// Conversations.
    pub conversations: usize,
    /// Turns (user messages) per conversation.
    pub turns: usize,
    /// Words of each conversation's own system prompt.
    pub system_words: usize,
    /// Words of each user message.
    pub user_words: usize,
    /// Tokens of each answer (`max_tokens`).
    pub reply_tokens: usize,
}

impl Shape {
    /// Prompt tokens of turn `t` (0-based): the system prompt, the earlier
    /// turns (user message and answer each) and the new user message.
    pub fn prompt_tokens(&self, t: usize) -> usize {
        self.system_words + t * (self.user_words + self.reply_tokens) + self.user_words
    }

    /// Mean prompt tokens over a conversation's turns.
    pub fn mean_prompt_tokens(&self) -> f64 {
        let sum: usize = (0..self.turns).map(|t| self.prompt_tokens(t)).sum();
        sum as f64 / self.turns.max(1) as f64
    }

    /// Prompt tokens of every conversation's last turn, summed: all the
    /// histories a cache would hold at the end.
    pub fn all_histories_tokens(&self) -> usize {
        self.conversations * self.prompt_tokens(self.turns.saturating_sub(1))
    }
}

/// Conversation `c`'s system prompt: `system_words` words unique to it
/// (from its first word on, so no two conversations share a block).
pub fn system_prompt(shape: &Shape, c: usize) -> String {
    words(shape.system_words, |i| format!("c{c}s{i}"))
}

/// Conversation `c`'s user message of turn `t`.
pub fn user_message(shape: &Shape, c: usize, t: usize) -> String {
    words(shape.user_words, |i| format!("c{c}t{t}u{i}"))
}

fn words(n: usize, word: impl Fn(usize) -> String) -> String {
    (0..n).map(word).collect::<Vec<_>>().join(" ")
}

/// The send times of each conversation's turns, offsets from the start: the
/// superposition of one Poisson process of rate `rate_per_s / conversations`
/// per conversation (so Poisson at `rate_per_s` in all), seeded.
pub fn schedule(shape: &Shape, rate_per_s: f64, seed: u64) -> Vec<Vec<Duration>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mean_gap_s = shape.conversations as f64 / rate_per_s.max(1e-9);
    (0..shape.conversations)
        .map(|_| {
            let mut at = 0.0;
            (0..shape.turns)
                .map(|_| {
                    let u: f64 = rng.random();
                    at += -(1.0 - u).ln() * mean_gap_s;
                    Duration::from_secs_f64(at)
                })
                .collect()
        })
        .collect()
}

/// One turn's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnResult {
    /// Conversation.
    pub conversation: usize,
    /// Turn, 0-based.
    pub turn: usize,
    /// Time to first token, µs: from the intended send time to the first
    /// SSE data event; `None` when the turn failed.
    pub ttft_us: Option<u64>,
    /// The node that served it (`x-switchyard-node`), if told.
    pub node: Option<String>,
    /// The policy that picked it (`x-switchyard-policy`), if told.
    pub policy: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Where and how the chat calls go.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://127.0.0.1:PORT/v1/chat/completions` of each gateway: turn
    /// `t` of conversation `c` posts to `urls[(c + t) % urls.len()]`
    /// (round-robin over the gateways, one after another per turn).
    pub urls: Vec<String>,
    /// The service (`model`).
    pub model: String,
    /// Per-call timeout (`x-switchyard-timeout-ms`), ms.
    pub timeout_ms: u64,
}

/// What an SSE body read so far holds: complete events are taken out of
/// the buffer as they end (a blank line).
#[derive(Debug, Default)]
pub struct SseReader {
    buf: Vec<u8>,
    /// Data events seen (`[DONE]` excluded).
    pub data_events: usize,
    /// The answer's text: the `choices[0].delta.content` of every event.
    pub text: String,
    /// Whether `data: [DONE]` came.
    pub done: bool,
    /// The `error` of an error event, if one came.
    pub error: Option<String>,
}

impl SseReader {
    /// Takes the next chunk of the body; returns how many data events it
    /// completed.
    pub fn push(&mut self, chunk: &[u8]) -> usize {
        self.buf.extend_from_slice(chunk);
        let before = self.data_events;
        while let Some(end) = find_blank_line(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end.1).collect();
            self.event(&String::from_utf8_lossy(&event[..end.0]));
        }
        self.data_events - before
    }

    fn event(&mut self, event: &str) {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if data.is_empty() {
            return; // a comment (`: queued position=2`) or nothing
        }
        let data = data.join("\n");
        if data.trim() == "[DONE]" {
            self.done = true;
            return;
        }
        self.data_events += 1;
        if let Ok(v) = serde_json::from_str::<Value>(&data) {
            if let Some(e) = v.get("error") {
                self.error = Some(e.to_string());
            }
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                self.text.push_str(t);
            }
        }
    }
}

/// The end of the first event in `buf`: (where its text ends, where the
/// next begins), for `\n\n` and `\r\n\r\n`.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, i + 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, i + 4))
        } else {
            None
        }
    })
}

/// A streamed call's answer.
struct Answer {
    /// When its first data event came.
    first: Instant,
    /// `x-switchyard-node`.
    node: Option<String>,
    /// `x-switchyard-policy`.
    policy: Option<String>,
    /// The answer's text.
    text: String,
}

/// One streamed chat call.
async fn chat(
    http: &reqwest::Client,
    target: &Target,
    url: &str,
    messages: &[Value],
    max_tokens: usize,
) -> Result<Answer> {
    let body = json!({
        "model": target.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": true,
    });
    let mut response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-switchyard-timeout-ms", target.timeout_ms.to_string())
        .body(serde_json::to_vec(&body)?)
        .send()
        .await
        .context("sending")?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (node, policy) = (header("x-switchyard-node"), header("x-switchyard-policy"));
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!(
            "status {status}: {}",
            text.chars().take(200).collect::<String>()
        );
    }
    let mut reader = SseReader::default();
    let mut first = None;
    while let Some(chunk) = response.chunk().await.context("reading")? {
        if reader.push(&chunk) > 0 && first.is_none() {
            first = Some(Instant::now());
        }
    }
    if let Some(e) = reader.error {
        bail!("error event: {e}");
    }
    match first {
        Some(first) if reader.done => Ok(Answer {
            first,
            node,
            policy,
            text: reader.text,
        }),
        _ => bail!("stream ended without data or [DONE]"),
    }
}

/// Runs conversation `c`: each turn waits for its scheduled time (`start`
/// + `times[t]`) and for the previous answer's end, whichever is later
///   (the turn's intended send time, TTFT's origin), then sends the whole
///   history.
pub async fn conversation(
    http: reqwest::Client,
    target: Arc<Target>,
    shape: Shape,
    c: usize,
    start: tokio::time::Instant,
    times: Vec<Duration>,
) -> Vec<TurnResult> {
    let mut messages = vec![json!({"role": "system", "content": system_prompt(&shape, c)})];
    let mut results = Vec::with_capacity(times.len());
    for (t, at) in times.into_iter().enumerate() {
        // The intended send time: the later of the schedule and the end of
        // the previous answer (now); TTFT counts from it.
        let intended = (start + at).max(tokio::time::Instant::now());
        tokio::time::sleep_until(intended).await;
        let origin = intended.into_std();
        messages.push(json!({"role": "user", "content": user_message(&shape, c, t)}));
        let mut result = TurnResult {
            conversation: c,
            turn: t,
            ttft_us: None,
            node: None,
            policy: None,
            error: None,
        };
        let Some(url) = target.urls.get((c + t) % target.urls.len().max(1)) else {
            result.error = Some("no URL to post to".into());
            results.push(result);
            continue;
        };
        match chat(&http, &target, url, &messages, shape.reply_tokens).await {
            Ok(answer) => {
                let ttft = answer.first.duration_since(origin).as_micros();
                result.ttft_us = Some(u64::try_from(ttft).unwrap_or(u64::MAX));
                result.node = answer.node;
                result.policy = answer.policy;
                messages.push(json!({"role": "assistant", "content": answer.text}));
            }
            Err(e) => {
                result.error = Some(format!("{e:#}"));
                messages.push(json!({"role": "assistant", "content": "error"}));
            }
        }
        results.push(result);
    }
    results
}

/// Runs every conversation at once on `schedule` (offsets from now) and
/// returns every turn's result, with the run's wall time.
///
/// # Errors
/// The target has no URL, or the HTTP client cannot be built.
pub async fn run(
    target: Target,
    shape: Shape,
    schedule: Vec<Vec<Duration>>,
) -> Result<(Vec<TurnResult>, Duration)> {
    if target.urls.is_empty() {
        bail!("no URL to post the chat turns to");
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(shape.conversations)
        .build()
        .context("HTTP client")?;
    let target = Arc::new(target);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let tasks: Vec<_> = schedule
        .into_iter()
        .enumerate()
        .map(|(c, times)| {
            tokio::spawn(conversation(
                http.clone(),
                Arc::clone(&target),
                shape,
                c,
                start,
                times,
            ))
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("conversation task")?);
    }
    Ok((all, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            conversations: 4,
            turns: 3,
            system_words: 10,
            user_words: 4,
            reply_tokens: 2,
        }
    }

    #[test]
    fn prompts_grow_by_a_user_message_and_an_answer_a_turn() {
        let s = shape();
        assert_eq!(
            [s.prompt_tokens(0), s.prompt_tokens(1), s.prompt_tokens(2)],
            [14, 20, 26]
        );
        assert_eq!(s.mean_prompt_tokens(), 20.0);
        assert_eq!(s.all_histories_tokens(), 4 * 26);
        assert_eq!(system_prompt(&s, 3).split_whitespace().count(), 10);
        assert!(system_prompt(&s, 3).starts_with("c3s0 c3s1"));
        assert_ne!(user_message(&s, 1, 0), user_message(&s, 1, 1));
    }

    #[test]
    fn the_schedule_is_seeded_increasing_and_near_its_rate() {
        let s = Shape {
            conversations: 64,
            turns: 50,
            ..shape()
        };
        let a = schedule(&s, 20.0, 7);
        assert_eq!(a, schedule(&s, 20.0, 7));
        assert_eq!(a.len(), 64);
        assert!(a.iter().all(|c| c.windows(2).all(|w| w[0] <= w[1])));
        // 3200 arrivals at 20/s: the last of each conversation at ~160 s.
        let mean_end: f64 = a.iter().map(|c| c[49].as_secs_f64()).sum::<f64>() / a.len() as f64;
        assert!((mean_end - 160.0).abs() < 16.0, "{mean_end}");
    }

    #[test]
    fn sse_events_are_counted_across_chunks_and_comments_skipped() {
        let mut r = SseReader::default();
        assert_eq!(r.push(b": queued position=1\n\n"), 0);
        assert_eq!(
            r.push(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n"),
            0
        );
        assert_eq!(
            r.push(b"\ndata: {\"choices\":[{\"delta\":{\"content\":\"a \"}}]}\r\n\r\nda"),
            2
        );
        assert_eq!(
            r.push(b"ta: {\"choices\":[{\"delta\":{\"content\":\"b \"}}]}\n\ndata: [DONE]\n\n"),
            1
        );
        assert_eq!((r.data_events, r.text.as_str(), r.done), (3, "a b ", true));
        assert_eq!(r.error, None);
        r.push(b"data: {\"error\":{\"message\":\"x\"}}\n\n");
        assert!(r.error.is_some());
    }
}
