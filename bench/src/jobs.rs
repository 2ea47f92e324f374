//! Section `jobs`: durable jobs on SQLite and on PostgreSQL.
//! The release gateway and one agent (a built-in `echo` service, so the
//! figures are the gateway's and its store's, not a process spawned per
//! job), real processes; jobs over the HTTP routes.
//!
//! 1. Submits per second: 16 clients POST `/v1/jobs` for the window; a
//!    `201` means the job is committed. Submit latency p50/p99.
//! 2. End to end: one trivial job at a time, from the POST to its state
//!    `succeeded` (polled), p50/p99.
//! 3. Recovery: N jobs stored while no agent is up, the gateway killed
//!    (-9) and started again, then an agent: the time from the restart
//!    until no job is waiting and until all succeeded, and the recovery the
//!    gateway logs (`jobs recovered ... ms=`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::fleet::{TOKEN, wait_nodes};
use crate::procs::{Proc, free_port, wait_tcp};
use crate::report::{Section, col};
use crate::scenarios::{SystemResult, Timing};
use crate::sections::Setup;

/// Clients posting jobs at once.
const CLIENTS: usize = 16;

struct Sizes {
    submit_s: f64,
    e2e_jobs: usize,
    stored: usize,
}

/// Runs the section.
///
/// # Errors
/// A process that does not start, a store that cannot be reached.
pub async fn section(s: &Setup<'_>, timing: &Timing, quick: bool) -> Result<Section> {
    let sizes = if quick {
        Sizes {
            submit_s: 2.0,
            e2e_jobs: 20,
            stored: 1000,
        }
    } else {
        Sizes {
            submit_s: 10.0,
            e2e_jobs: 200,
            stored: 10_000,
        }
    };
    let mut systems = Vec::new();
    let mut notes = vec![format!(
        "{CLIENTS} clients submit trivial jobs (a built-in `echo` service, 64 slots) for {} s; end to end over {} jobs one at a time; recovery with {} jobs stored. One run each, not medians.",
        sizes.submit_s, sizes.e2e_jobs, sizes.stored
    )];
    for store in ["sqlite", "postgres"] {
        let server = if store == "postgres" {
            match switchyard_testkit::Postgres::start_required() {
                Ok(server) => Some(server),
                Err(switchyard_testkit::PostgresError::NotInstalled) => {
                    notes.push("postgres: skipped, no PostgreSQL binaries (`make setup`)".into());
                    continue;
                }
                Err(e) => bail!("postgres: {e}"),
            }
        } else {
            None
        };
        let url = server.as_ref().map(|p| p.url());
        let dir = s.scratch.join(format!("jobs-{store}"));
        let medians = run_store(s, &dir, url.as_deref(), &sizes).await?;
        systems.push(SystemResult {
            name: format!("switchyard ({store})"),
            path: "POST /v1/jobs".into(),
            medians,
            reps: Vec::new(),
        });
    }
    Ok(Section {
        id: "jobs".into(),
        title: "Durable jobs: submits, end-to-end latency, recovery after kill -9".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes,
        systems,
        columns: vec![
            col("submits/s", "submit_per_s", 0),
            col("submit p50 ms", "submit_p50_ms", 2),
            col("submit p99 ms", "submit_p99_ms", 2),
            col("e2e p50 ms", "e2e_p50_ms", 1),
            col("e2e p99 ms", "e2e_p99_ms", 1),
            col("recovered (log) ms", "recover_log_ms", 0),
            col("restart→none waiting s", "restart_dispatched_s", 2),
            col("restart→all done s", "restart_done_s", 2),
        ],
    })
}

/// The gateway's config file and ports.
struct Gw {
    config: std::path::PathBuf,
    http: u16,
    admin: u16,
    quic: u16,
}

fn write_gateway(s: &Setup<'_>, dir: &Path, url: Option<&str>) -> Result<Gw> {
    fs::create_dir_all(dir.join("data"))?;
    let (quic, admin, http) = (free_port()?, free_port()?, free_port()?);
    let db = url
        .map(|u| format!("database_url = {u:?}\n"))
        .unwrap_or_default();
    let text = format!(
        "listen = \"127.0.0.1:{quic}\"\nadmin_listen = \"127.0.0.1:{admin}\"\ndata_dir = {:?}\n\
         plugins_dir = {:?}\nagent_token = \"{TOKEN}\"\nshutdown_grace_s = 0\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n[jobs]\nmax_waiting = 1000000\n{db}",
        dir.join("data"),
        s.plugins_dir,
    );
    let config = dir.join("gateway.toml");
    fs::write(&config, text)?;
    Ok(Gw {
        config,
        http,
        admin,
        quic,
    })
}

fn start_gateway(s: &Setup<'_>, gw: &Gw, log: &Path) -> Result<Proc> {
    let config = gw.config.to_string_lossy().to_string();
    let p = Proc::spawn(
        "gateway",
        &s.bin_dir.join("gateway"),
        &["--config", &config],
        log,
    )?;
    wait_tcp(gw.http, Duration::from_secs(30))?;
    Ok(p)
}

fn start_agent(s: &Setup<'_>, dir: &Path, gw: &Gw, name: &str) -> Result<Proc> {
    let config = dir.join(format!("{name}.toml"));
    fs::write(
        &config,
        format!(
            "gateway = \"127.0.0.1:{}\"\nca = {:?}\ntoken = \"{TOKEN}\"\nnode_id = \"{name}\"\n\
             [[services]]\nname = \"echo\"\nkind = \"echo\"\nmax_concurrent = 64\n",
            gw.quic,
            dir.join("data").join("ca.pem"),
        ),
    )?;
    let args = ["--config", &config.to_string_lossy()].map(str::to_string);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn(
        name,
        &s.bin_dir.join("node-agent"),
        &args,
        &dir.join(format!("{name}.log")),
    )
}

async fn run_store(
    s: &Setup<'_>,
    dir: &Path,
    url: Option<&str>,
    sizes: &Sizes,
) -> Result<BTreeMap<String, f64>> {
    let gw = write_gateway(s, dir, url)?;
    let mut gateway = start_gateway(s, &gw, &dir.join("gateway.log"))?;
    let mut agent = start_agent(s, dir, &gw, "node-1")?;
    wait_nodes(gw.admin, 1, Duration::from_secs(30))?;
    let http = reqwest::Client::new();
    let base = Arc::new(format!("http://127.0.0.1:{}/v1/jobs", gw.http));
    let mut out = BTreeMap::new();

    // 1. Submits per second.
    let until = Instant::now() + Duration::from_secs_f64(sizes.submit_s);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                let ok = submit(&http, &base).await.is_ok();
                if ok {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    out.insert("submit_per_s".into(), lat.len() as f64 / sizes.submit_s);
    out.insert("submit_p50_ms".into(), pct(&mut lat, 0.50));
    out.insert("submit_p99_ms".into(), pct(&mut lat, 0.99));
    wait_empty(&http, &base, "waiting", Duration::from_secs(300)).await?;

    // 2. End to end, one at a time.
    let mut e2e = Vec::new();
    for _ in 0..sizes.e2e_jobs {
        let t = Instant::now();
        let id = submit(&http, &base).await?;
        loop {
            let job = get_json(&http, &format!("{base}/{id}")).await?;
            match job["state"].as_str() {
                Some("succeeded") => break,
                Some("waiting" | "running") => tokio::time::sleep(Duration::from_millis(1)).await,
                other => bail!("job {id} ended {other:?}"),
            }
        }
        e2e.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out.insert("e2e_p50_ms".into(), pct(&mut e2e, 0.50));
    out.insert("e2e_p99_ms".into(), pct(&mut e2e, 0.99));

    // 3. Recovery: jobs stored with no agent up, kill -9, restart.
    agent.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let posted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, base, posted, n) = (http.clone(), base.clone(), posted.clone(), sizes.stored);
        tasks.push(tokio::spawn(async move {
            while posted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                submit(&http, &base).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    gateway.kill();
    let restarted = Instant::now();
    let log = dir.join("gateway-2.log");
    let _gateway = start_gateway(s, &gw, &log)?;
    let _agent = start_agent(s, dir, &gw, "node-2")?;
    wait_empty(&http, &base, "waiting", Duration::from_secs(600)).await?;
    out.insert(
        "restart_dispatched_s".into(),
        restarted.elapsed().as_secs_f64(),
    );
    wait_empty(&http, &base, "running", Duration::from_secs(600)).await?;
    out.insert("restart_done_s".into(), restarted.elapsed().as_secs_f64());
    let text = fs::read_to_string(&log).unwrap_or_default();
    if let Some(ms) = text
        .lines()
        .find(|l| l.contains("jobs recovered"))
        .and_then(|l| l.split(" ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
    {
        out.insert("recover_log_ms".into(), ms);
    }
    Ok(out)
}

async fn submit(http: &reqwest::Client, base: &str) -> Result<String> {
    let r = http
        .post(base)
        .header("content-type", "application/json")
        .body(json!({"service": "echo", "payload": "true"}).to_string())
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("submit: {}", r.status());
    }
    let job: Value = serde_json::from_str(&r.text().await?)?;
    job["id"].as_str().map(str::to_owned).context("no id")
}

/// Waits until no job is in `state`.
async fn wait_empty(
    http: &reqwest::Client,
    base: &str,
    state: &str,
    within: Duration,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < within {
        let page = get_json(http, &format!("{base}?state={state}&limit=1")).await?;
        if page["jobs"].as_array().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("jobs still {state} after {within:?}")
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let text = http.get(url).send().await?.text().await?;
    serde_json::from_str(&text).with_context(|| format!("{url}: {text:.200}"))
}

fn pct(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i.min(values.len() - 1)]
}
