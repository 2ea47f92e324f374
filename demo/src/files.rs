//! The demo's payloads (the repository's own source files) and its calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::Client;
use tokio::sync::Semaphore;

/// What the calls did.
#[derive(Debug, Default)]
pub struct Report {
    /// Calls made.
    pub calls: usize,
    /// Calls that failed or whose result differed from the local program's.
    pub failures: usize,
    /// Payload bytes sent.
    pub bytes: u64,
    /// Calls per serving node.
    pub per_node: HashMap<String, usize>,
    /// Client-measured latency of each successful call, ms.
    pub latencies_ms: Vec<f64>,
    /// Time for all calls.
    pub wall: Duration,
}

/// The source files under `roots`, sorted: the ones git tracks when the
/// demo runs in a git checkout, else every regular file outside build
/// output, dependencies and hidden folders.
pub fn collect(roots: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = match tracked(roots) {
        Some(files) => files,
        None => {
            let mut out = Vec::new();
            for root in roots {
                walk(root, &mut out)?;
            }
            out
        }
    };
    out.sort();
    if out.is_empty() {
        anyhow::bail!("no files under {roots:?}");
    }
    Ok(out)
}

/// The files under `roots` that git tracks (`git ls-files`); `None`
/// outside a git checkout or without git.
fn tracked(roots: &[PathBuf]) -> Option<Vec<PathBuf>> {
    let output = std::process::Command::new("git")
        .args(["ls-files", "-z", "--"])
        .args(roots)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let files: Vec<PathBuf> = output
        .stdout
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
        .filter(|path| path.is_file())
        .collect();
    (!files.is_empty()).then_some(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let skipped = match name.to_str() {
            Some(name) => {
                name.starts_with('.')
                    || name.starts_with("dist")
                    || matches!(name, "target" | "node_modules" | "__pycache__")
            }
            None => true,
        };
        if skipped {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else if entry.file_type()?.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Sends every file to every service, `concurrency` calls at a time, and
/// checks each result against the local program.
pub async fn run_calls(
    client: Arc<Client>,
    files: Vec<PathBuf>,
    services: &[(&'static str, &'static [&'static str])],
    concurrency: usize,
) -> Report {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for file in files {
        for &(service, command) in services {
            let client = client.clone();
            let permits = permits.clone();
            let file = file.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                one_call(&client, &file, service, command).await
            });
        }
    }
    let mut report = Report::default();
    while let Some(joined) = tasks.join_next().await {
        report.calls += 1;
        match joined {
            Ok(Ok((node, bytes, ms))) => {
                report.bytes += bytes;
                *report.per_node.entry(node).or_default() += 1;
                report.latencies_ms.push(ms);
            }
            Ok(Err(e)) => {
                report.failures += 1;
                println!("   FAIL {e:#}");
            }
            Err(e) => {
                report.failures += 1;
                println!("   FAIL task: {e}");
            }
        }
    }
    report.wall = start.elapsed();
    report
}

async fn one_call(
    client: &Client,
    file: &Path,
    service: &str,
    command: &[&str],
) -> anyhow::Result<(String, u64, f64)> {
    let payload = tokio::fs::read(file).await?;
    let expected = crate::run_local(command, &payload).await?;
    let sent = Instant::now();
    let result = client
        .call(service, payload.clone())
        .timeout(crate::CALL_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("{service} {}: {e}", file.display()))?;
    let ms = sent.elapsed().as_secs_f64() * 1000.0;
    let verdict = if result.data == expected[..] {
        "ok"
    } else {
        "MISMATCH"
    };
    println!(
        "   {service:<6} {:<48} {:>8} B -> {:<7} {:>7.2} ms  {verdict}",
        file.display(),
        payload.len(),
        result.meta.node_id,
        ms
    );
    if verdict != "ok" {
        anyhow::bail!(
            "{service} {}: result differs from local {}",
            file.display(),
            command.join(" ")
        );
    }
    Ok((result.meta.node_id, payload.len() as u64, ms))
}
