//! `switchyard bench SERVICE`: load on a service through the gateway (QUIC,
//! the SDK) or on any HTTP endpoint, by the `loadgen` crate.
//!
//! ```text
//! switchyard bench echo                                  # closed loop, 16 callers, 10 s
//! switchyard bench echo --rate 5000 --poisson --json     # open loop, Report as JSON
//! switchyard bench echo --http http://127.0.0.1:4480/v1/call/echo --http2 --concurrency 64
//! ```

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use client::{CallOptions, Client, ClientConfig};
use loadgen::{
    Arrival, HttpTarget, HttpTargetConfig, Plan, Process, Progress, QuicTarget, Report, Target,
};

/// The `bench` subcommand's flags.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Service name (QUIC), or only the report's label with --http.
    service: String,
    /// Payload size, bytes (a run of `x`), unless --data gives it.
    #[arg(long, default_value_t = 64, conflicts_with = "data")]
    size: usize,
    /// Payload as text.
    #[arg(long)]
    data: Option<String>,
    /// Closed loop: callers, each sending its next call when the last ended.
    #[arg(long, default_value_t = 16, conflicts_with = "rate")]
    concurrency: usize,
    /// Open loop: calls per second, whatever the answers do (latency counts
    /// from each call's intended send time).
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: Poisson arrivals (exponential gaps) instead of even spacing.
    #[arg(long, requires = "rate")]
    poisson: bool,
    /// Open loop: most calls outstanding; more go late (still measured from
    /// when they were due).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Measured window, s.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Calls before the window, not recorded, s.
    #[arg(long, default_value_t = 2.0)]
    warm_up_s: f64,
    /// Policy to pick the node with (overrides the service's).
    #[arg(long)]
    policy: Option<String>,
    /// Skip the gateway's result cache.
    #[arg(long)]
    no_cache: bool,
    /// Each call's timeout, ms.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Drive this HTTP endpoint instead (POST), e.g. the gateway's ingress
    /// `http://127.0.0.1:4480/v1/call/echo`; https trusts the system's roots
    /// and the gateway's CA (--ca, or the default one where it exists).
    #[arg(long)]
    http: Option<String>,
    /// HTTP/2 (ALPN over https, prior knowledge over http) instead of 1.1.
    #[arg(long, requires = "http")]
    http2: bool,
    /// Extra HTTP header NAME:VALUE (repeatable).
    #[arg(long = "header", value_parser = parse_header, requires = "http")]
    headers: Vec<(String, String)>,
    /// HTTP connections kept (HTTP/2: that many connections used in turn).
    #[arg(long, default_value_t = 16, requires = "http")]
    connections: usize,
    /// Seed of the Poisson arrivals.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// The global flags `bench` uses.
pub struct Gateway {
    /// Addresses, `host:port`: a cluster's bootstrap list.
    pub addrs: Vec<String>,
    /// CA file.
    pub ca: PathBuf,
    /// Whether --ca (or its variable) named it, rather than the default.
    pub ca_given: bool,
    /// Name on the gateway's certificate.
    pub server_name: String,
    /// API key.
    pub api_key: Option<String>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once(':')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("header {s:?} is not NAME:VALUE"))
}

/// Runs the benchmark on a multi-thread runtime of its own (call it outside
/// any runtime, e.g. from `spawn_blocking`).
///
/// # Errors
/// Bad flags, an unreachable gateway, an unusable HTTP target.
pub fn main(args: BenchArgs, gateway: Gateway) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args, gateway))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(())
}

fn plan(args: &BenchArgs) -> anyhow::Result<Plan> {
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("--{what} {s} is not a duration"))
    };
    let arrival = match args.rate {
        Some(rate) if !(rate.is_finite() && rate > 0.0) => anyhow::bail!("--rate must be > 0"),
        Some(rate_per_s) => Arrival::Open {
            rate_per_s,
            process: if args.poisson {
                Process::Poisson
            } else {
                Process::Constant
            },
            max_in_flight: args.max_in_flight.max(1),
        },
        None => Arrival::Closed {
            concurrency: args.concurrency.max(1),
        },
    };
    Ok(Plan {
        arrival,
        warm_up: secs(args.warm_up_s, "warm-up-s")?,
        duration: secs(args.duration_s, "duration-s")?,
        seed: args.seed,
    })
}

async fn run(args: &BenchArgs, gateway: Gateway) -> anyhow::Result<Report> {
    let plan = plan(args)?;
    let payload = match &args.data {
        Some(text) => Bytes::from(text.clone()),
        None => Bytes::from(vec![b'x'; args.size]),
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    eprintln!(
        "bench {}: {}, {} s warm-up, {} s measured, {} B payload",
        args.service,
        plan.arrival.describe(),
        args.warm_up_s,
        args.duration_s,
        payload.len()
    );
    let report = match &args.http {
        Some(url) => {
            let mut headers = args.headers.clone();
            headers.push((
                "x-switchyard-timeout-ms".into(),
                args.timeout_ms.to_string(),
            ));
            if let Some(policy) = &args.policy {
                headers.push(("x-switchyard-policy".into(), policy.clone()));
            }
            if args.no_cache {
                headers.push(("x-switchyard-no-cache".into(), "true".into()));
            }
            if let Some(key) = &gateway.api_key {
                headers.push(("authorization".into(), format!("Bearer {key}")));
            }
            let target = HttpTarget::new(HttpTargetConfig {
                url: url.clone(),
                payload,
                headers,
                // The gateway's CA too, when named or where the default is.
                ca: (url.starts_with("https:") && (gateway.ca_given || gateway.ca.exists()))
                    .then(|| gateway.ca.clone()),
                http2: args.http2,
                connections: args.connections,
            })?
            // A little past the gateway's own timeout, so its answer wins.
            .with_timeout(timeout + Duration::from_millis(250));
            drive(target, &plan).await
        }
        None => {
            crate::check_ca(&gateway.ca, gateway.ca_given)?;
            let mut config = ClientConfig::for_cluster(gateway.addrs, gateway.ca);
            config.server_name = gateway.server_name;
            config.api_key = gateway.api_key;
            let client = Client::connect(config).await?;
            let options = CallOptions {
                timeout,
                policy: args.policy.clone(),
                no_cache: args.no_cache,
                ..CallOptions::default()
            };
            let target = QuicTarget::new(client.clone(), args.service.clone(), payload, options);
            let report = drive(target, &plan).await;
            client.close().await;
            report
        }
    };
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    Ok(report)
}

async fn drive<T: Target>(target: T, plan: &Plan) -> Report {
    let terminal = std::io::stderr().is_terminal();
    let show = move |p: &Progress| {
        let mut err = std::io::stderr();
        let _ = err.write_all(progress(p, terminal).as_bytes());
        let _ = err.flush();
    };
    loadgen::run(Arc::new(target), plan, Some(&show)).await
}

/// One progress report: on a terminal it rewrites the line in place
/// (`\r`), elsewhere (a file, a pipe, CI's log) it is a line of its own.
fn progress(p: &Progress, terminal: bool) -> String {
    let text = format!(
        "{:.1} s  {} calls  {}/s  {} errors{}",
        p.elapsed_s,
        grouped(p.calls),
        grouped(p.calls_per_s.round() as u64),
        grouped(p.errors),
        if p.warming_up { "  (warm-up)" } else { "" }
    );
    if terminal {
        format!("\r{text}   ")
    } else {
        format!("{text}\n")
    }
}

/// `61234` as `61 234`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The report as text: rate, errors by kind, latency percentiles (ms).
fn summary(r: &Report) -> String {
    let l = r.latency_us;
    let mut out = format!(
        "{}: {} calls in {:.2} s, {:.1} calls/s, {} errors\n",
        r.arrival,
        grouped(r.calls),
        r.seconds,
        r.calls_per_s,
        grouped(r.errors)
    );
    for (kind, n) in &r.errors_by_kind {
        out.push_str(&format!("  {kind}: {}\n", grouped(*n)));
    }
    out.push_str(&format!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}\n",
        l.p50 / 1e3,
        l.p90 / 1e3,
        l.p99 / 1e3,
        l.p999 / 1e3,
        l.max / 1e3,
        l.mean / 1e3
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(61_234), "61 234");
        assert_eq!(grouped(1_000_000), "1 000 000");
    }

    #[test]
    fn progress_is_a_line_of_its_own_off_a_terminal() {
        let p = Progress {
            elapsed_s: 2.5,
            calls: 12_345,
            calls_per_s: 4_938.2,
            errors: 0,
            warming_up: true,
        };
        assert_eq!(
            progress(&p, false),
            "2.5 s  12 345 calls  4 938/s  0 errors  (warm-up)\n"
        );
        assert_eq!(
            progress(&p, true),
            "\r2.5 s  12 345 calls  4 938/s  0 errors  (warm-up)   "
        );
    }

    #[test]
    fn headers_are_name_colon_value() {
        assert_eq!(
            parse_header("x-a: b:c"),
            Ok(("x-a".to_string(), "b:c".to_string()))
        );
        assert!(parse_header("nocolon").is_err());
    }
}
