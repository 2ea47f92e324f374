//! A real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, installed by `make setup`): plain JSON over HTTP, so a
//! live page (Server-Sent Events and all) can be checked as it updates.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: tokio::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// A program from Debian's packages that `make setup` installs.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` not found: install Debian's `{package}` package (`make setup` does)")
    })
}

/// Starts chromedriver on a fresh port and waits until it answers:
/// the process and its base URL, or `None` when it exited (its port was
/// taken).
async fn start_driver(http: &reqwest::Client) -> Option<(tokio::process::Child, String)> {
    let port = switchyard_testkit::unassigned_port().unwrap();
    let mut driver = tokio::process::Command::new(tool("chromedriver", "chromium-driver"))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = driver.try_wait() {
            return None;
        }
        let status = http.get(format!("{base}/status")).send().await;
        if status.is_ok_and(|r| r.status().is_success()) {
            return Some((driver, base));
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Self {
        let http = reqwest::Client::new();
        // Its port lies below the ephemeral range, yet a program outside
        // this process may still take it first: then chromedriver exits
        // and starts again on another.
        let mut started = None;
        for _ in 0..5 {
            started = start_driver(&http).await;
            if started.is_some() {
                break;
            }
        }
        let (driver, base) = started.expect("chromedriver exited on every port tried");
        let profile = tempfile::tempdir().unwrap();
        // The flags this workplace's machines need (no sandbox as root, no
        // background connections to the closed network).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,2200",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": tool("chromium", "chromium"), "args": args},
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .body(capabilities.to_string())
            .send()
            .await
            .expect("new session")
            .text()
            .await
            .map(|t| serde_json::from_str(&t).expect("JSON"))
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        Self {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if !body.is_null() {
            request = request.body(body.to_string());
        }
        let text = request
            .send()
            .await
            .expect("webdriver answers")
            .text()
            .await
            .unwrap();
        let value: Value = serde_json::from_str(&text).expect("JSON");
        assert!(
            value["value"].get("error").is_none(),
            "webdriver {path}: {value}"
        );
        value["value"].clone()
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "url", json!({"url": url}))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits until `script` returns `true`, or panics with `what`.
    pub async fn wait_for(&self, what: &str, script: &str) {
        let start = Instant::now();
        while self.eval(script).await != Value::Bool(true) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the page never showed {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the Chrome DevTools Protocol command `cmd` with `params`
    /// (chromedriver's `goog/cdp/execute`), e.g. `Network.setBlockedURLs`.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "goog/cdp/execute",
            json!({"cmd": cmd, "params": params}),
        )
        .await
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self
            .command(reqwest::Method::GET, "screenshot", Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 text"))
            .expect("base64")
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill().await;
    }
}
