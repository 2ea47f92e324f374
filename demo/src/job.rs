//! The demo's durable job: `switchyard job submit sha256 --payload-file F
//! --wait` through the CLI (the gateway stores the job in
//! `data/jobs.db`, runs it on a node, keeps its log and result), its
//! result checked against the local `sha256sum`, then `switchyard job
//! show` and `switchyard job list`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::process::Command;

/// Runs the job steps with the CLI in `bin_dir` against the gateway at
/// `addr` (trusting `ca`), hashing `file`.
///
/// # Errors
/// A CLI command that fails, or a result that differs from `sha256sum`'s.
pub async fn run(bin_dir: &Path, addr: &str, ca: &Path, file: &Path) -> anyhow::Result<()> {
    let cli = |args: &[&str]| {
        let mut command = Command::new(bin_dir.join("switchyard"));
        command.args(["--gateway", addr, "--ca"]).arg(ca).args(args);
        command
    };
    let started = Instant::now();
    let output = cli(&["job", "submit", "sha256", "--label", "from=demo", "--wait"])
        .arg("--payload-file")
        .arg(file)
        .output()
        .await
        .context("running switchyard job submit")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("switchyard job submit failed: {stdout}{stderr}");
    }
    // stdout: the job's id, then its result; stderr: its log as it came.
    let (id, result) = stdout
        .split_once('\n')
        .context("switchyard job submit printed no id")?;
    let input = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let local = crate::run_local(&["sha256sum"], &input).await?;
    if result.as_bytes() != local.as_slice() {
        bail!(
            "job {id}: result {result:?} differs from the local sha256sum's {:?}",
            String::from_utf8_lossy(&local)
        );
    }
    println!(
        "   job {id} ({}) succeeded in {:.0} ms; its result matches the local sha256sum",
        file.display(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    for line in stderr.lines() {
        println!("   log: {line}");
    }
    for args in [
        &["job", "show", id][..],
        &["job", "list", "--limit", "5"][..],
    ] {
        println!("\n== switchyard {}", args.join(" "));
        let status = cli(args).status().await?;
        if !status.success() {
            bail!("switchyard {} failed", args.join(" "));
        }
    }
    Ok(())
}
