//! Durable jobs end to end: a real gateway with its job store
//! (SQLite in its data directory, or a throwaway PostgreSQL server), real
//! agents running real commands, the HTTP routes over reqwest and curl.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Runs each named `async fn(Db)` test on SQLite (the default store, in
/// the gateway's data directory) and on a throwaway PostgreSQL server.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::postgres()).await;
                }
            )*
        }
    };
}

mod api;
mod limit;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The store a test's gateway uses.
pub struct Db {
    /// `[jobs] database_url` (`None`: SQLite in the data directory).
    pub url: Option<String>,
    /// The PostgreSQL server, stopped when the test ends.
    _server: Option<switchyard_testkit::Postgres>,
}

impl Db {
    pub fn sqlite() -> Self {
        Self {
            url: None,
            _server: None,
        }
    }

    /// A throwaway PostgreSQL cluster (Debian's `postgresql`, installed by
    /// `make setup`); a missing server fails the test.
    pub fn postgres() -> Self {
        let server =
            switchyard_testkit::Postgres::start_required().unwrap_or_else(|e| panic!("{e}"));
        Self {
            url: Some(server.url()),
            _server: Some(server),
        }
    }

    /// A gateway's `[jobs]` section on this store, `extra` lines first
    /// (each ending in a newline).
    pub fn jobs_section(&self, extra: &str) -> String {
        let url = self
            .url
            .as_ref()
            .map(|u| format!("database_url = {u:?}\n"))
            .unwrap_or_default();
        format!("[jobs]\n{extra}{url}")
    }
}

/// The HTTP job routes of one gateway, as a client sees them.
pub struct Jobs {
    pub base: String,
    pub http: reqwest::Client,
    /// Sent as `Authorization: Bearer` (the admin token or a tenant's key).
    pub key: Option<String>,
}

impl Jobs {
    pub fn new(base: String, key: Option<&str>) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
            key: key.map(Into::into),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => r.bearer_auth(key),
            None => r,
        }
    }

    /// POST /v1/jobs; panics unless 201.
    pub async fn submit(&self, body: Value) -> Value {
        let (status, value) = self.try_submit(body).await;
        assert_eq!(status, 201, "submit: {value}");
        value
    }

    pub async fn try_submit(&self, body: Value) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::POST, "/v1/jobs")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("submit sends");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, id: &str) -> Value {
        self.json(reqwest::Method::GET, &format!("/v1/jobs/{id}"))
            .await
    }

    pub async fn post(&self, id: &str, what: &str) -> Value {
        self.json(reqwest::Method::POST, &format!("/v1/jobs/{id}/{what}"))
            .await
    }

    pub async fn delete(&self, id: &str) -> u16 {
        self.req(reqwest::Method::DELETE, &format!("/v1/jobs/{id}"))
            .send()
            .await
            .expect("delete sends")
            .status()
            .as_u16()
    }

    pub async fn list(&self, query: &str) -> Value {
        self.json(reqwest::Method::GET, &format!("/v1/jobs?{query}"))
            .await
    }

    /// The log's lines as `stream: line`.
    pub async fn log(&self, id: &str) -> Vec<String> {
        let v = self
            .json(reqwest::Method::GET, &format!("/v1/jobs/{id}/log"))
            .await;
        v["lines"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| {
                        format!(
                            "{}: {}",
                            l["stream"].as_str().unwrap_or("?"),
                            l["line"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (status, body) of GET /v1/jobs/{id}/result.
    pub async fn result(&self, id: &str) -> (u16, String) {
        let r = self
            .req(reqwest::Method::GET, &format!("/v1/jobs/{id}/result"))
            .send()
            .await
            .expect("result sends");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    async fn json(&self, method: reqwest::Method, path: &str) -> Value {
        let r = self.req(method, path).send().await.expect("request sends");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    /// (status, body) of `method` on `/v1/job-settings` (a `PUT` sends
    /// `body`).
    pub async fn settings(&self, method: reqwest::Method, body: Option<Value>) -> (u16, Value) {
        let mut r = self.req(method, "/v1/job-settings");
        if let Some(body) = body {
            r = r
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let r = r.send().await.expect("settings request sends");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Waits until job `id` is in one of `states`; returns it.
    pub async fn wait_state(&self, id: &str, states: &[&str], limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let job = self.get(id).await;
            if states.contains(&job["state"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} still {} after {limit:?}, wanted {states:?}: {job}",
                job["state"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A shell service: the payload is the script (`sh` reads it on stdin),
/// at most `slots` at once on the node.
pub fn shell(slots: u32) -> String {
    crate::common::service(
        "sh",
        "command",
        &format!("command = [\"sh\"]\nmax_concurrent = {slots}"),
    )
}

/// The states of a job's history (a single-job answer), oldest first.
pub fn states(job: &Value) -> Vec<&str> {
    job["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|t| t["state"].as_str().expect("a state"))
        .collect()
}

/// A job of the shell service.
pub fn script(text: &str) -> Value {
    json!({ "service": "sh", "payload": text })
}

/// Waits until job `id`'s log holds `line` (`stream: text`).
pub async fn wait_log(jobs: &Jobs, id: &str, line: &str) {
    let start = Instant::now();
    loop {
        let log = jobs.log(id).await;
        if log.iter().any(|l| l == line) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{line:?} not in job {id}'s log: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (node, when it was dispatched there, when it ended) of a finished job:
/// the node ran it from its last `running` transition (the one naming the
/// node) to its end.
pub fn span(job: &Value) -> (String, u64, u64) {
    let on_node = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "running")
        .filter_map(|t| t["at_ms"].as_u64())
        .max()
        .unwrap();
    let node = job["node"].as_str().unwrap_or("?").to_owned();
    (node, on_node, job["finished_ms"].as_u64().unwrap())
}
