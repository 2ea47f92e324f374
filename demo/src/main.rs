//! `make demo`: the main job on real input.
//!
//! Starts a gateway and two node agents (real processes), each agent hosting
//! two real `command` services (`sha256sum` and `gzip -n -c`); sends every file
//! under the repository's source folders through the gateway to both
//! services; checks every result against the same program run locally;
//! prints which node served each call and a summary (calls, per-node counts,
//! mean and p99 latency); shows `switchyard nodes` and `switchyard policies`;
//! then streams a chat completion from the toy model server behind each
//! agent (an `openai` service) through the gateway's HTTP ingress with
//! `curl -N`, printing tokens as they arrive and the time to the first one;
//! submits a durable job with `switchyard job submit --wait`, checks its
//! result and shows it with `job show` and `job list`; stops what it
//! started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use client::{Client, ClientConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

mod chat;
mod files;
mod job;

/// Runs the Switchyard demo.
#[derive(Parser)]
struct Args {
    /// Folder holding the built `gateway`, `node-agent` and `switchyard` binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Folder of compiled policy plugins.
    #[arg(long, default_value = "plugins/dist")]
    plugins: PathBuf,
    /// Scratch folder for configs, certificates and logs (emptied first).
    #[arg(long, default_value = "demo-run")]
    work_dir: PathBuf,
    /// Source folders whose files are the payloads.
    #[arg(long, num_args = 1.., default_values = ["protocol", "transport", "gateway", "node-agent", "client", "cli", "policy-host", "plugins", "demo", "wit", "toy-model", "e2e"])]
    sources: Vec<PathBuf>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Admin HTTP address of the gateway (dashboard, /metrics, /api).
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin: String,
    /// HTTP ingress address of the gateway (OpenAI-compatible routes).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Seconds to keep the fleet running after the calls, to look at the
    /// dashboard (0: stop at once).
    #[arg(long, default_value_t = 0)]
    hold_s: u64,
}

/// One service of the demo and the local command that checks it.
const SERVICES: [(&str, &[&str]); 2] =
    [("sha256", &["sha256sum"]), ("gzip", &["gzip", "-n", "-c"])];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = &args.work_dir;
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("emptying {}", work.display()))?;
    }
    std::fs::create_dir_all(work)?;
    let work = std::fs::canonicalize(work)?;
    let token = "demo-agent-token";

    let mut procs = Procs::default();
    let gateway_toml = work.join("gateway.toml");
    std::fs::write(
        &gateway_toml,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = {:?}\ndata_dir = {:?}\nplugins_dir = {:?}\nagent_token = {token:?}\n\n[http]\nlisten = {:?}\n",
            args.admin,
            work.join("data"),
            std::fs::canonicalize(&args.plugins).context("plugins folder (run `make plugins`)")?,
            args.http,
        ),
    )?;
    println!("== starting gateway");
    let (gateway, addr) =
        start_gateway(&args.bin_dir.join("gateway"), &gateway_toml, &work).await?;
    procs.0.push(("gateway".into(), gateway));
    let ca = work.join("data/ca.pem");

    for (node, cost) in [("node-a", 0.9), ("node-b", 2.5)] {
        let (model, base_url) = chat::start_toy(&args.bin_dir, &work, node).await?;
        println!("== started a toy model for {node} at {base_url}");
        procs.0.push((format!("{node} model"), model));
        let config = work.join(format!("{node}.toml"));
        std::fs::write(
            &config,
            agent_config(&addr, &ca, token, node, cost, &base_url),
        )?;
        let log = std::fs::File::create(work.join(format!("{node}.log")))?;
        let child = Command::new(args.bin_dir.join("node-agent"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting node-agent")?;
        println!("== started agent {node} (pid {})", child.id().unwrap_or(0));
        procs.0.push((node.into(), child));
    }

    let client = Arc::new(Client::connect(ClientConfig::new(addr.clone(), &ca)).await?);
    wait_for_nodes(&client, 2).await?;

    let files = files::collect(&args.sources)?;
    let job_file = files.first().cloned().context("no source files")?;
    println!(
        "== sending {} files x {} services through the gateway",
        files.len(),
        SERVICES.len()
    );
    let report = files::run_calls(client.clone(), files, &SERVICES, args.concurrency).await;
    print_summary(&report);

    println!("\n== switchyard nodes");
    let status = Command::new(args.bin_dir.join("switchyard"))
        .args(["--gateway", &addr, "--ca"])
        .arg(&ca)
        .arg("nodes")
        .status()
        .await?;
    if !status.success() {
        bail!("switchyard nodes failed");
    }
    println!("\n== switchyard policies");
    let status = Command::new(args.bin_dir.join("switchyard"))
        .args(["--gateway", &addr, "--ca"])
        .arg(&ca)
        .arg("policies")
        .status()
        .await?;
    if !status.success() {
        bail!("switchyard policies failed");
    }
    println!(
        "\n== a chat completion streamed through the HTTP ingress (toy model, {})",
        chat::MODEL
    );
    let (first_token, tokens) = chat::stream_chat(&format!("http://{}", args.http)).await?;
    println!(
        "   first token after {:.0} ms; {tokens} tokens streamed",
        first_token.as_secs_f64() * 1000.0
    );
    println!("\n== a durable job: switchyard job submit sha256 --payload-file ... --wait");
    job::run(&args.bin_dir, &addr, &ca, &job_file).await?;
    println!(
        "\n== dashboard: http://{}/ (metrics: http://{}/metrics)",
        args.admin, args.admin
    );
    if args.hold_s > 0 {
        println!("   holding the fleet for {} s (--hold-s)", args.hold_s);
        tokio::time::sleep(Duration::from_secs(args.hold_s)).await;
    }
    client.close().await;
    procs.stop().await;
    if report.failures > 0 {
        bail!(
            "{} of {} calls failed or mismatched",
            report.failures,
            report.calls
        );
    }
    println!("\ndemo passed: every result matched the local program");
    Ok(())
}

fn agent_config(
    gateway: &str,
    ca: &Path,
    token: &str,
    node: &str,
    cost: f32,
    model_url: &str,
) -> String {
    let mut services = String::new();
    for (name, command) in SERVICES {
        services.push_str(&format!(
            "\n[[services]]\nname = {name:?}\nkind = \"command\"\ncommand = {command:?}\nmax_concurrent = 4\n"
        ));
    }
    services.push_str(&format!(
        "\n[[services]]\nname = {:?}\nkind = \"openai\"\nbase_url = {model_url:?}\nmax_concurrent = 8\n",
        chat::MODEL
    ));
    format!(
        "gateway = {gateway:?}\nca = {ca:?}\ntoken = {token:?}\nnode_id = {node:?}\nregion = \"local\"\ncost_per_hour = {cost}\n{services}"
    )
}

/// Starts the gateway and reads its address from its first lines of stdout.
async fn start_gateway(bin: &Path, config: &Path, work: &Path) -> anyhow::Result<(Child, String)> {
    let log = std::fs::File::create(work.join("gateway.log"))?;
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("gateway stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            println!("   gateway: {line}");
            if let Some(addr) = line.strip_prefix("switchyard gateway listening on ") {
                return Ok(addr.trim().to_string());
            }
        }
        bail!(
            "gateway exited before listening (see {}/gateway.log)",
            work.display()
        )
    })
    .await
    .context("gateway did not start within 30 s")??;
    // Keep draining stdout so the gateway never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("   gateway: {line}");
        }
    });
    Ok((child, addr))
}

async fn wait_for_nodes(client: &Client, want: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let nodes = client.nodes().await?;
        if nodes.len() >= want {
            let ids: Vec<_> = nodes.iter().map(|n| n.spec.id.as_str()).collect();
            println!("== {} nodes registered: {}", nodes.len(), ids.join(", "));
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("only {} of {want} nodes registered after 30 s", nodes.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_summary(report: &files::Report) {
    let mut latencies = report.latencies_ms.clone();
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let p99 = latencies
        .get((latencies.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    println!("\n== summary");
    println!(
        "calls: {} ({} ok, {} failed or mismatched)",
        report.calls,
        report.calls - report.failures,
        report.failures
    );
    println!("bytes sent: {}", report.bytes);
    let per_node: BTreeMap<_, _> = report.per_node.iter().collect();
    for (node, count) in per_node {
        println!("  {node}: {count} calls");
    }
    println!("latency (client-measured): mean {mean:.2} ms, p99 {p99:.2} ms");
    println!("wall time: {:.2} s", report.wall.as_secs_f64());
}

/// The processes the demo started; stopped with SIGTERM, then killed.
#[derive(Default)]
struct Procs(Vec<(String, Child)>);

impl Procs {
    async fn stop(&mut self) {
        // Agents first, then the gateway.
        while let Some((name, mut child)) = self.0.pop() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
            match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(Ok(status)) => println!("== stopped {name} ({status})"),
                _ => {
                    let _ = child.kill().await;
                    println!("== killed {name}");
                }
            }
        }
    }
}

/// Runs `command` locally with `input` on stdin and returns its stdout.
pub(crate) async fn run_local(command: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (program, args) = command.split_first().context("empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let output = child.wait_with_output().await?;
    let _ = writer.await;
    if !output.status.success() {
        bail!("{program} exited with {}", output.status);
    }
    Ok(output.stdout)
}

/// How long each of the demo's calls may take: a generous timeout.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
