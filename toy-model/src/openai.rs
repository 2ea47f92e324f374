//! OpenAI's API, as vLLM, SGLang or llama.cpp's server speak it: chat and
//! text completions (whole or streamed, paced at `--tokens-per-s`),
//! embeddings, the model list, and `GET /stats`, which counts the
//! completions and those their client gave up on.

mod request;
mod response;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Toy;
use crate::engine::Running;
use request::{ApiError, CompletionRequest, Kind, Plan};
use response::{Head, Part, Usage};

/// The routes: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
/// `/v1/models` and `/stats`.
pub(crate) fn routes() -> Router<Arc<Toy>> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(text_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/stats", get(stats))
}

/// The completions' counters, as `GET /stats` shows them.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Completions taken (the ones that passed the checks).
    requests: AtomicU64,
    /// Completions that went out whole.
    completed: AtomicU64,
    /// Completions whose client went away before the end.
    cancelled: AtomicU64,
    /// Completions under way.
    in_flight: AtomicU64,
}

impl Stats {
    /// The counters as JSON.
    fn json(&self) -> Value {
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "completed": self.completed.load(Ordering::Relaxed),
            "cancelled": self.cancelled.load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
        })
    }
}

/// One completion's place in [`Stats`], from when it is taken. Dropped
/// before [`Tracker::finish`] (its handler or its response stream dropped:
/// the client went away), it counts as cancelled and says so on stderr.
struct Tracker {
    /// The server, for its counters and its name.
    toy: Arc<Toy>,
    /// How many tokens have gone out.
    sent: u32,
    /// How many the answer has.
    total: u32,
    /// Whether it went out whole.
    finished: bool,
}

impl Tracker {
    /// Counts a completion of `total` tokens as taken and under way.
    fn start(toy: Arc<Toy>, total: u32) -> Self {
        toy.stats.requests.fetch_add(1, Ordering::Relaxed);
        toy.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            toy,
            sent: 0,
            total,
            finished: false,
        }
    }

    /// Counts it as completed.
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.toy.stats.completed.fetch_add(1, Ordering::Relaxed);
            self.toy.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.finished {
            self.toy.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            self.toy.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            if self.toy.verbose {
                say!(
                    "toy-model {}: request cancelled after {} of {} tokens",
                    self.toy.name,
                    self.sent,
                    self.total
                );
            }
        }
    }
}

async fn chat_completions(State(toy): State<Arc<Toy>>, body: Bytes) -> Response {
    complete(toy, Kind::Chat, &body).await
}

async fn text_completions(State(toy): State<Arc<Toy>>, body: Bytes) -> Response {
    complete(toy, Kind::Text, &body).await
}

/// A completion on the route `kind`: checked, then answered whole or
/// streamed.
async fn complete(toy: Arc<Toy>, kind: Kind, body: &[u8]) -> Response {
    let arrived = Instant::now();
    if toy.loading() {
        return ApiError::loading(&toy.name).into_response();
    }
    let request = match request::completion(kind, body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let completion = Completion::new(toy, kind, &request, arrived);
    if request.stream {
        completion.stream()
    } else {
        completion.whole().await
    }
}

/// A completion under way: what it says, when, and its [`Tracker`].
struct Completion {
    /// The route.
    kind: Kind,
    /// `id`.
    id: String,
    /// `created`.
    created: u64,
    /// `model`.
    model: String,
    /// The tokens and the end.
    plan: Plan,
    /// The prompt's tokens, for the KV cache.
    prompt: Vec<String>,
    /// `usage.prompt_tokens`.
    prompt_tokens: u32,
    /// `usage.prompt_tokens_details.cached_tokens`, once admitted.
    cached: u32,
    /// Whether a usage chunk ends the stream.
    include_usage: bool,
    /// When it arrived.
    arrived: Instant,
    /// `--work-ms`.
    work: Duration,
    /// Its `--max-running` slot and running count, from its admission to
    /// its last token.
    running: Option<Running>,
    /// Whether it has been admitted (see [`Completion::prefill`]).
    admitted: bool,
    /// Whether its prefill is over and its prompt in the KV cache.
    prefilled: bool,
    /// When the prefill ends, once admitted: its start (arrival, or the
    /// end of its wait) + `--work-ms` + its uncached prompt tokens ×
    /// `--prefill-us-per-token`.
    start: Instant,
    /// The time between two tokens.
    interval: Duration,
    /// Its counting in `/stats`.
    tracker: Tracker,
}

/// Where a streamed completion is: the next event to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The role chunk (chat only).
    Role,
    /// Token `i`, or the finish chunk once they are all out.
    Token(u32),
    /// The usage chunk.
    Usage,
    /// `data: [DONE]`.
    Done,
    /// Nothing more.
    End,
}

impl Completion {
    /// A completion of `request` that arrived at `arrived`, counted as taken.
    fn new(toy: Arc<Toy>, kind: Kind, request: &CompletionRequest, arrived: Instant) -> Self {
        let n = toy.next_id.fetch_add(1, Ordering::Relaxed);
        let id = match kind {
            Kind::Chat => format!("chatcmpl-toy-{n}"),
            Kind::Text => format!("cmpl-toy-{n}"),
        };
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let plan = request.plan();
        Self {
            kind,
            id,
            created,
            model: request.model.clone().unwrap_or_else(|| toy.name.clone()),
            prompt: request.prompt.clone(),
            prompt_tokens: request.prompt_tokens,
            cached: 0,
            include_usage: request.include_usage,
            arrived,
            work: toy.work,
            running: None,
            admitted: false,
            prefilled: false,
            start: arrived,
            interval: toy.token_interval,
            tracker: Tracker::start(toy, plan.count),
            plan,
        }
    }

    /// The fields every answer and chunk starts with.
    fn head(&self) -> Head<'_> {
        Head {
            kind: self.kind,
            id: &self.id,
            created: self.created,
            model: &self.model,
        }
    }

    /// Waits, the first time, for its turn to run (`--max-running`), then
    /// until its prefill is over, and puts its prompt in the KV cache; at
    /// once after that.
    async fn prefill(&mut self) {
        if !self.admitted {
            let running = self.tracker.toy.engine.admit(&self.prompt).await;
            let began = if running.waited {
                Instant::now()
            } else {
                self.arrived
            };
            self.start = later(began, self.work.saturating_add(running.prefill));
            self.cached = running.cached;
            self.running = Some(running);
            self.admitted = true;
        }
        if !self.prefilled {
            sleep_until(self.start).await;
            self.tracker.toy.engine.prefilled(&self.prompt);
            self.prefilled = true;
        }
    }

    /// Counts it as completed and no longer running.
    fn finish(&mut self) {
        self.tracker.finish();
        self.running = None;
    }

    /// Its `usage`.
    fn usage(&self) -> Usage {
        Usage {
            prompt: self.prompt_tokens,
            completion: self.plan.count,
            cached: self.cached,
        }
    }

    /// When token `i` is due: one interval after the prefill for the first,
    /// then one more interval each (once admitted).
    fn due(&self, i: u32) -> Instant {
        later(
            self.start,
            self.interval.saturating_mul(i.saturating_add(1)),
        )
    }

    /// The whole answer, once its last token is due.
    async fn whole(mut self) -> Response {
        self.prefill().await;
        for i in 0..self.plan.count {
            sleep_until(self.due(i)).await;
            self.tracker.sent = i + 1;
        }
        self.finish();
        let usage = self.usage();
        let body = response::completion(self.head(), &self.plan.text(), self.plan.finish, usage);
        Json(body).into_response()
    }

    /// The answer as server-sent events, each when it is due. The stream
    /// owns the completion: dropped early, it counts as cancelled.
    fn stream(self) -> Response {
        let first = match self.kind {
            Kind::Chat => Step::Role,
            Kind::Text => Step::Token(0),
        };
        let events =
            futures_util::stream::unfold((self, first), |(mut completion, step)| async move {
                let (event, next) = completion.step(step).await?;
                Some((Ok::<_, Infallible>(event), (completion, next)))
            });
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(events),
        )
            .into_response()
    }

    /// Waits until `step`'s event is due, then gives it and the next step;
    /// `None` at the end.
    async fn step(&mut self, step: Step) -> Option<(Bytes, Step)> {
        let sent = match step {
            Step::Role => {
                self.prefill().await;
                (
                    response::event(&response::chunk(self.head(), Part::Role)),
                    Step::Token(0),
                )
            }
            Step::Token(i) if i < self.plan.count => {
                self.prefill().await;
                sleep_until(self.due(i)).await;
                self.tracker.sent = i + 1;
                let token = self.plan.token(i);
                let chunk = response::chunk(self.head(), Part::Token(&token));
                (response::event(&chunk), Step::Token(i + 1))
            }
            Step::Token(_) => {
                self.prefill().await;
                let chunk = response::chunk(self.head(), Part::Finish(self.plan.finish));
                let next = if self.include_usage {
                    Step::Usage
                } else {
                    Step::Done
                };
                (response::event(&chunk), next)
            }
            Step::Usage => {
                let chunk = response::chunk(self.head(), Part::Usage(self.usage()));
                (response::event(&chunk), Step::Done)
            }
            Step::Done => {
                self.finish();
                (Bytes::from_static(response::DONE), Step::End)
            }
            Step::End => return None,
        };
        Some(sent)
    }
}

/// `base + offset`, or far in the future when that overflows (a huge
/// `--work-ms`).
/// Shorter waits than this are not slept: tokio's timer ticks every
/// millisecond, so sleeping even 1 µs costs up to a whole tick, and a
/// model answering at a million tokens per second would answer a
/// millisecond late.
const SHORTEST_SLEEP: Duration = Duration::from_micros(100);

/// Waits until `due`, at once when it is less than [`SHORTEST_SLEEP`] away.
async fn sleep_until(due: Instant) {
    if due.saturating_duration_since(Instant::now()) >= SHORTEST_SLEEP {
        tokio::time::sleep_until(due).await;
    }
}

fn later(base: Instant, offset: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    base.checked_add(offset).unwrap_or_else(|| base + FAR)
}

/// `POST /v1/embeddings`: after `--work-ms`, one vector per input.
async fn embeddings(State(toy): State<Arc<Toy>>, body: Bytes) -> Response {
    if toy.loading() {
        return ApiError::loading(&toy.name).into_response();
    }
    let request = match request::embeddings(&body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    tokio::time::sleep(toy.work).await;
    let vectors: Vec<Vec<f32>> = request
        .inputs
        .iter()
        .map(|text| response::embedding(text, toy.embedding_dim))
        .collect();
    let prompt_tokens = request.inputs.iter().fold(0u32, |sum, text| {
        sum.saturating_add(request::token_count(text))
    });
    let model = request.model.as_deref().unwrap_or(&toy.name);
    Json(response::embeddings(
        model,
        &vectors,
        request.base64,
        prompt_tokens,
    ))
    .into_response()
}

/// `GET /v1/models`: the one model, `--name`.
async fn models(State(toy): State<Arc<Toy>>) -> Response {
    if toy.loading() {
        return ApiError::loading(&toy.name).into_response();
    }
    Json(response::models(&toy.name)).into_response()
}

/// `GET /stats`: the completions' counters (even while loading).
async fn stats(State(toy): State<Arc<Toy>>) -> Json<Value> {
    Json(toy.stats.json())
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    /// A ready toy giving 1000 tokens a second.
    fn toy() -> Arc<Toy> {
        toy_with(crate::engine::Engine::new(0, Duration::ZERO, None))
    }

    /// [`toy`] with `engine`.
    fn toy_with(engine: crate::engine::Engine) -> Arc<Toy> {
        Arc::new(Toy::new(
            "toy".to_string(),
            std::time::Instant::now(),
            Duration::ZERO,
            1000.0,
            8,
            engine,
        ))
    }

    fn request(kind: Kind, body: Value) -> CompletionRequest {
        request::completion(kind, body.to_string().as_bytes()).expect("valid")
    }

    /// The `data:` payloads of a streamed answer, read to its end or to
    /// `limit` events.
    async fn events(response: Response, limit: usize) -> Vec<String> {
        let mut body = response.into_body().into_data_stream();
        let mut events = Vec::new();
        while events.len() < limit {
            let Some(chunk) = body.next().await else {
                break;
            };
            let chunk = chunk.expect("infallible");
            let text = std::str::from_utf8(&chunk).expect("utf-8");
            let data = text
                .strip_prefix("data: ")
                .and_then(|rest| rest.strip_suffix("\n\n"))
                .expect("one event per chunk");
            events.push(data.to_string());
        }
        events
    }

    #[tokio::test]
    async fn a_streamed_chat_sends_the_role_the_tokens_the_end_and_done() {
        let toy = toy();
        let request = request(
            Kind::Chat,
            json!({"messages": [{"role": "user", "content": "a b"}], "max_tokens": 3,
                   "stream": true, "stream_options": {"include_usage": true}}),
        );
        let completion = Completion::new(toy.clone(), Kind::Chat, &request, Instant::now());
        let events = events(completion.stream(), usize::MAX).await;
        assert_eq!(events.len(), 7, "{events:?}");
        let chunks: Vec<Value> = events[..6]
            .iter()
            .map(|e| serde_json::from_str(e).expect("json"))
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks[1..4]
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().expect("text"))
            .collect();
        assert_eq!(text, "a b a ");
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
        assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
        assert_eq!(events[6], "[DONE]");
        assert_eq!(
            toy.stats.json(),
            json!({"requests": 1, "completed": 1, "cancelled": 0, "in_flight": 0})
        );
    }

    #[tokio::test]
    async fn a_stream_dropped_early_counts_as_cancelled() {
        let toy = toy();
        let request = request(
            Kind::Text,
            json!({"prompt": "x", "max_tokens": 50, "stream": true}),
        );
        let response = Completion::new(toy.clone(), Kind::Text, &request, Instant::now()).stream();
        assert_eq!(toy.stats.json()["in_flight"], 1);
        let events = events(response, 2).await;
        assert_eq!(events.len(), 2);
        assert_eq!(
            toy.stats.json(),
            json!({"requests": 1, "completed": 0, "cancelled": 1, "in_flight": 0})
        );
    }

    /// When each of a streamed completion's first `n` events comes, from
    /// its arrival (exact under tokio's paused clock).
    async fn event_times(toy: &Arc<Toy>, request: &CompletionRequest, n: usize) -> Vec<Duration> {
        let arrived = Instant::now();
        let response = Completion::new(toy.clone(), Kind::Chat, request, arrived).stream();
        let mut body = response.into_body().into_data_stream();
        let mut times = Vec::new();
        while times.len() < n && body.next().await.is_some() {
            times.push(arrived.elapsed());
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_token_waits_for_the_uncached_prompt_s_prefill() {
        // 250 µs per uncached token, a token every 1 ms (tokio's timers
        // round up to whole ms).
        let toy = toy_with(crate::engine::Engine::new(
            1024,
            Duration::from_micros(250),
            None,
        ));
        let prompt: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        let request = request(
            Kind::Chat,
            json!({"messages": [{"role": "user", "content": prompt.join(" ")}],
                   "max_tokens": 2, "stream": true}),
        );
        let ms = Duration::from_millis;
        // Cold: 40 tokens of prefill (10 ms) then the role, then a token
        // each ms.
        let cold = event_times(&toy, &request, 3).await;
        assert_eq!(cold, [ms(10), ms(11), ms(12)]);
        // Warm: 32 of them cached, 8 to prefill (2 ms).
        let warm = event_times(&toy, &request, 3).await;
        assert_eq!(warm, [ms(2), ms(3), ms(4)]);
        let whole = Completion::new(toy.clone(), Kind::Chat, &request, Instant::now())
            .whole()
            .await;
        let body = axum::body::to_bytes(whole.into_body(), usize::MAX)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 32);
    }

    #[tokio::test]
    async fn a_whole_answer_comes_once_its_tokens_are_due() {
        let toy = toy();
        let request = request(Kind::Text, json!({"prompt": "x y", "max_tokens": 20}));
        let arrived = Instant::now();
        let response = Completion::new(toy.clone(), Kind::Text, &request, arrived)
            .whole()
            .await;
        assert!(arrived.elapsed() >= Duration::from_millis(20));
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["choices"][0]["text"], "x y ".repeat(10));
        assert_eq!(body["usage"]["total_tokens"], 22);
        assert_eq!(toy.stats.json()["completed"], 1);
    }
}
