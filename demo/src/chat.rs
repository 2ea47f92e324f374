//! The demo's streamed chat: a toy model server behind each agent (an
//! `openai` service), and one chat completion streamed through the
//! gateway's HTTP ingress with `curl -N`, its tokens printed as they
//! arrive.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The service name the toy models serve under.
pub(crate) const MODEL: &str = "llama";

/// Tokens per second the toy models generate.
const TOKENS_PER_S: &str = "20";

/// Starts `switchyard-toy-model` on a free port; returns it and its
/// `http://127.0.0.1:PORT/v1` base URL. It exits with the demo unless
/// `keep` (then it outlives the demo, until stopped).
pub(crate) async fn start_toy(
    bin_dir: &Path,
    work: &Path,
    node: &str,
    keep: bool,
) -> anyhow::Result<(Child, String)> {
    let port = crate::procs::free_port()?;
    let log = std::fs::File::create(work.join(format!("{node}-model.log")))?;
    let child = Command::new(bin_dir.join("switchyard-toy-model"))
        .args([
            "--port",
            &port.to_string(),
            "--name",
            MODEL,
            "--load-ms",
            "0",
        ])
        .args(["--tokens-per-s", TOKENS_PER_S])
        .args(keep.then_some("--ignore-stdin"))
        // Its stdin stays open while we hold the pipe: it exits with us.
        .stdin(if keep { Stdio::null() } else { Stdio::piped() })
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting switchyard-toy-model")?;
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !healthy(&base).await {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("toy model on port {port} not healthy after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, format!("{base}/v1")))
}

/// Whether `GET base/health` answers 2xx (`curl -sf`).
pub(crate) async fn healthy(base: &str) -> bool {
    Command::new("curl")
        .args(["-sf", "-o", "/dev/null", &format!("{base}/health")])
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Streams one chat completion through the ingress at `ingress` (base URL)
/// with `curl -N`, printing each token as it arrives; returns the time to
/// the first token and the tokens received.
pub(crate) async fn stream_chat(ingress: &str) -> anyhow::Result<(Duration, usize)> {
    let body = format!(
        r#"{{"model":"{MODEL}","stream":true,"max_tokens":24,"messages":[{{"role":"user","content":"switchyard streams every token through the gateway as the model writes it"}}]}}"#
    );
    let url = format!("{ingress}/v1/chat/completions");
    println!("   curl -N {url} -d '{body}'");
    let started = Instant::now();
    let mut child = Command::new("curl")
        .args([
            "-sN",
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            &url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("running curl (install Debian's curl)")?;
    let stdout = child.stdout.take().context("curl stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut first = None;
    let mut tokens = 0;
    let mut out = tokio::io::stdout();
    out.write_all(b"   ").await?;
    while let Some(line) = lines.next_line().await? {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        if let Some(token) = content(data) {
            first.get_or_insert_with(|| started.elapsed());
            tokens += 1;
            out.write_all(token.as_bytes()).await?;
            out.flush().await?;
        }
    }
    out.write_all(b"\n").await?;
    out.flush().await?;
    let status = child.wait().await?;
    if !status.success() {
        bail!("curl failed: {status}");
    }
    let first = first.context("no token arrived")?;
    Ok((first, tokens))
}

/// The `choices[0].delta.content` of a `chat.completion.chunk`.
fn content(data: &str) -> Option<String> {
    let chunk: serde_json::Value = serde_json::from_str(data).ok()?;
    let token = chunk["choices"][0]["delta"]["content"].as_str()?;
    (!token.is_empty()).then(|| token.to_string())
}
