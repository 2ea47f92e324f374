//! `switchyard`: call services and inspect the fleet through a gateway.
//!
//! ```text
//! switchyard call sha256 --file README.md -v
//! switchyard call sum-up --data 1000000 --policy round-robin
//! switchyard call llama --data "hi" --priority 5 -v      # prints queue positions
//! switchyard call llama --data "hi" --realtime           # never queued
//! switchyard call sha256 --file big.bin --look-aside     # lease a node, send it the payload directly
//! switchyard lease sha256 --max-calls 10 --idle-ms 5000  # a lease: node, direct address, token, expiry
//! switchyard queue
//! switchyard drain gpu-node-1          # admin HTTP API: no new calls there
//! switchyard undrain gpu-node-1
//! switchyard nodes --json
//! switchyard cluster                  # the cluster's gateways and etcd's health (admin HTTP API)
//! switchyard policies
//! switchyard policy set sha256 least-request
//! switchyard policy push my-policy.wasm --name my-policy   # every gateway of a cluster loads it
//! switchyard call llama --data "hi" --max-age-s 60 -v    # a cached result at most 1 min old
//! switchyard cache stats
//! switchyard cache purge llama
//! switchyard job submit sha256 --payload hello --wait   # a durable job: log to stderr, result to stdout
//! switchyard job list --state running
//! switchyard job log 0192f3a4b5c6d7e8f9a0b1c2d3 -f
//! switchyard bench echo --concurrency 32 --duration-s 10     # closed loop: calls/s, p50..p99.9
//! switchyard bench echo --rate 5000 --poisson --json         # open loop at 5000 calls/s, JSON report
//! switchyard bench echo --http http://127.0.0.1:4480/v1/call/echo --http2   # the HTTP ingress
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use client::{Client, ClientConfig};

mod admission;
mod bench;
mod call;
mod cluster;
mod job;
mod lease;
mod push;
mod table;
mod topology;

/// Command-line client of the Switchyard gateway.
#[derive(Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    /// Gateway address, `host:port`: the bootstrap list of a cluster.
    /// Several, comma-separated or the flag repeated (the variable takes a
    /// comma-separated list): the first that answers names the cluster's
    /// members, calls spread over them, and a call that did not run on a
    /// gateway that went down is sent to another.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_GATEWAY",
        value_delimiter = ',',
        default_value = "127.0.0.1:4433"
    )]
    gateway: Vec<String>,
    /// CA file the gateway printed at start (default: the gateway's default
    /// data directory's ca.pem).
    #[arg(long, global = true, env = "SWITCHYARD_CA")]
    ca: Option<PathBuf>,
    /// Name on the gateway's certificate.
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// API key naming your tenant (the gateway's `[[tenants]] api_keys`).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// The gateway's admin HTTP address (drain, undrain, cluster,
    /// topology, tree).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_URL",
        default_value = "http://127.0.0.1:4490"
    )]
    admin_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Call a service; the result is written to stdout as it arrives.
    Call(call::CallArgs),
    /// Lease a node of SERVICE (look-aside) and print the grant: node,
    /// direct address, token, expiry; queue positions go to stderr while
    /// it waits.
    Lease(lease::LeaseArgs),
    /// Stop sending new calls to NODE (calls in flight finish), through the
    /// admin HTTP API (needs the admin token).
    Drain {
        /// Node id.
        node: String,
        /// Admin token (default: the gateway's default data directory's
        /// admin-token file).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Let NODE take calls again (admin HTTP API, needs the admin token).
    Undrain {
        /// Node id.
        node: String,
        /// Admin token (default: the gateway's default data directory's
        /// admin-token file).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Show each service's queue: calls waiting, oldest wait, reserved calls.
    Queue {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the gateways of the cluster (QUIC, HTTP and admin addresses,
    /// agents, calls in flight) and the health of its link to etcd, as
    /// the gateway at --admin-url sees them.
    Cluster {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the tree of gateways below the gateway at --admin-url, by echo
    /// wave: each gateway's nodes (load, capacity, CPU) and queue; a
    /// branch that did not answer in time is marked missing.
    Topology {
        /// How long the wave may take, ms.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u32,
        /// Print JSON instead of a tree.
        #[arg(long)]
        json: bool,
    },
    /// Push a change down the tree of gateways below the gateway at
    /// --admin-url; confirmed only once every gateway applied it (else the
    /// ones that did not are named, and the exit status is 1).
    Tree {
        /// How long the wave may take, ms.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u32,
        /// Admin token (default: the gateway's default data directory's
        /// admin-token file).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        #[command(subcommand)]
        change: topology::PushChange,
    },
    /// List registered nodes and their stats.
    Nodes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List loaded policies (file, hash, load time, picks, traps) and which
    /// service uses which.
    Policies {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change policies at runtime (needs the admin token).
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// The gateway's result cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Durable jobs: submit, list, show, log, cancel, restart, delete,
    /// result (a tenant's own jobs; all of them with --admin-token).
    Job {
        /// Admin token: every tenant's jobs (default: the API key's own).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        #[command(subcommand)]
        action: job::JobCommand,
    },
    /// Load SERVICE (or an HTTP endpoint) for a while: calls/s, errors by
    /// kind, latency percentiles; closed loop, or open loop with --rate.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum CacheAction {
    /// Per cached service: entries, bytes, hits, misses, evictions, hit
    /// ratio; total bytes against the bound.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drop cached results: of SERVICE, or of every service (needs the
    /// admin token).
    Purge {
        /// Service name (default: every service).
        service: Option<String>,
        /// Admin token (default: the gateway's default data directory's
        /// admin-token file).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Make SERVICE use the loaded policy NAME from its next call on.
    Set {
        /// Service name.
        service: String,
        /// Policy name (see `switchyard policies`).
        name: String,
        /// Admin token (default: the gateway's default data directory's
        /// admin-token file).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Load the policy component FILE (a `.wasm`) on the gateway through
    /// its admin HTTP API: with `[cluster]` stored in etcd and loaded by
    /// every gateway, else kept in the gateway's plugins folder. Prints
    /// its name and BLAKE3 hash.
    Push {
        /// The component file.
        file: PathBuf,
        /// The name the component must answer (default: whichever it
        /// does).
        #[arg(long)]
        name: Option<String>,
        /// Admin token (default: the gateway's default data directory's
        /// admin-token file).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// List loaded policies with their hashes, as `switchyard policies`.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_hint(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("hint {s:?} is not KEY=VALUE"))
}

fn default_ca() -> PathBuf {
    default_data_dir().join("ca.pem")
}

fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        });
    match base {
        Some(dir) => dir.join("switchyard"),
        None => PathBuf::from(".switchyard"),
    }
}

/// The gateway addresses given (`--gateway`, repeated or comma-separated),
/// trimmed, without empty entries.
///
/// # Errors
/// When none is left.
fn gateway_list(given: &[String]) -> anyhow::Result<Vec<String>> {
    let addrs: Vec<String> = given
        .iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "--gateway names no address");
    Ok(addrs)
}

/// The given admin token, else the gateway's default data directory's
/// `admin-token` file.
fn admin_token_or_default(given: Option<String>) -> anyhow::Result<String> {
    if let Some(token) = given {
        return Ok(token);
    }
    let path = default_data_dir().join("admin-token");
    Ok(std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("no --admin-token and cannot read {}: {e}", path.display()))?
        .trim()
        .to_string())
}

/// The `switchyard` program: parses the command line, runs the command
/// and prints its error (each cause once) to stderr; the exit status says
/// whether it succeeded. The binary's `main` is this, so that other
/// binaries (the end-to-end suite's CLI) are the same program.
#[tokio::main(flavor = "current_thread")]
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", transport::report::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Checks that the CA file `ca` is there before dialing; `given`: named by
/// `--ca` or `SWITCHYARD_CA` rather than the default.
///
/// # Errors
/// A missing file, with how to point at one.
pub(crate) fn check_ca(ca: &std::path::Path, given: bool) -> anyhow::Result<()> {
    if ca.exists() {
        return Ok(());
    }
    let whose = if given {
        "the CA file"
    } else {
        "the gateway's default CA file"
    };
    anyhow::bail!(
        "{whose} {} is not there: point at the CA the gateway prints at start \
         (\"CA file\", ca.pem in its data_dir) with --ca FILE or SWITCHYARD_CA=FILE",
        ca.display()
    )
}

/// The nodes as JSON, each node's labels an object (`{"tier": "premium"}`)
/// rather than the wire's list of pairs.
fn nodes_json(nodes: &[protocol::NodeView]) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(nodes)?;
    for (node, view) in value.as_array_mut().into_iter().flatten().zip(nodes) {
        if let Some(spec) = node
            .get_mut("spec")
            .and_then(serde_json::Value::as_object_mut)
        {
            let labels: serde_json::Map<String, serde_json::Value> = view
                .spec
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            spec.insert("labels".into(), serde_json::Value::Object(labels));
        }
    }
    Ok(value)
}

/// Prints `value` as pretty JSON, or as the plain-text `table`.
fn show<T: serde::Serialize + ?Sized>(
    value: &T,
    json: bool,
    table: fn(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table(value));
    }
    Ok(())
}

/// `POST {admin_url}/api/nodes/{node}/{verb}` with the admin token.
async fn drain(admin_url: &str, node: &str, verb: &str, token: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/nodes/{node}/{verb}",
        admin_url.trim_end_matches('/')
    );
    let body = send_admin(reqwest::Client::new().post(&url), &url, token, verb).await?;
    println!("{body}");
    Ok(())
}

/// Sends `request` (to `url`) and reads its answer, at most `max` bytes.
///
/// # Errors
/// The request cannot be sent or read (`{url}: {why}`), or the answer is
/// longer than `max`.
pub(crate) async fn bounded_answer(
    request: reqwest::RequestBuilder,
    url: &str,
    max: usize,
) -> anyhow::Result<(reqwest::StatusCode, bytes::Bytes)> {
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    if body.len() > max {
        anyhow::bail!(
            "{url}: the answer is {} bytes, more than expected",
            body.len()
        );
    }
    Ok((status, body))
}

/// Sends an admin request to `url` with the bearer `token` and returns the
/// answer's body.
///
/// # Errors
/// The request cannot be sent (`{url}: {why}`), or the gateway answers
/// with a status other than 2xx (`{what} refused ({status}): {body}`).
pub(crate) async fn send_admin(
    request: reqwest::RequestBuilder,
    url: &str,
    token: &str,
    what: &str,
) -> anyhow::Result<String> {
    let response = request
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{what} refused ({status}): {body}");
    }
    Ok(body)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Drain {
            node,
            admin_token: t,
        }
        | Command::Undrain {
            node,
            admin_token: t,
        } => {
            let verb = if matches!(cli.command, Command::Drain { .. }) {
                "drain"
            } else {
                "undrain"
            };
            let token = admin_token_or_default(t.clone())?;
            return drain(&cli.admin_url, node, verb, &token).await;
        }
        Command::Policy {
            action:
                PolicyAction::Push {
                    file,
                    name,
                    admin_token,
                },
        } => {
            let token = admin_token_or_default(admin_token.clone())?;
            return push::push(&cli.admin_url, file, name.as_deref(), &token).await;
        }
        Command::Cluster { json } => return cluster::run(&cli.admin_url, *json).await,
        Command::Topology { timeout_ms, json } => {
            return topology::show(&cli.admin_url, *timeout_ms, *json).await;
        }
        Command::Tree {
            timeout_ms,
            admin_token,
            change,
        } => {
            let token = admin_token_or_default(admin_token.clone())?;
            return topology::push(&cli.admin_url, change, *timeout_ms, &token).await;
        }
        _ => {}
    }
    if let Command::Bench(args) = cli.command {
        let gateway = bench::Gateway {
            addrs: gateway_list(&cli.gateway)?,
            ca_given: cli.ca.is_some(),
            ca: cli.ca.unwrap_or_else(default_ca),
            server_name: cli.server_name,
            api_key: cli.api_key,
        };
        return tokio::task::spawn_blocking(move || bench::main(args, gateway)).await?;
    }
    let ca_given = cli.ca.is_some();
    let ca = cli.ca.unwrap_or_else(default_ca);
    check_ca(&ca, ca_given)?;
    let mut config = ClientConfig::for_cluster(gateway_list(&cli.gateway)?, ca);
    config.server_name = cli.server_name;
    config.api_key = cli.api_key;
    let client = Client::connect(config).await?;
    match cli.command {
        Command::Call(args) => call::run(&client, args).await?,
        Command::Lease(args) => lease::run(&client, args).await?,
        Command::Nodes { json } => {
            let nodes = client.nodes().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes_json(&nodes)?)?);
            } else {
                print!("{}", table::nodes(&nodes));
            }
        }
        Command::Drain { .. }
        | Command::Undrain { .. }
        | Command::Bench(_)
        | Command::Cluster { .. }
        | Command::Topology { .. }
        | Command::Tree { .. } => {}
        Command::Job {
            admin_token,
            action,
        } => {
            let client = match admin_token {
                Some(token) => client.clone().with_admin_token(token),
                None => client.clone(),
            };
            job::run(&client, action).await?;
        }
        Command::Queue { json } => {
            let queues = client.queues().await?;
            show(queues.as_slice(), json, table::queues)?;
        }
        Command::Policies { json }
        | Command::Policy {
            action: PolicyAction::List { json },
        } => {
            let policies = client.policies().await?;
            show(&policies, json, table::policies)?;
        }
        Command::Policy {
            action:
                PolicyAction::Set {
                    service,
                    name,
                    admin_token,
                },
        } => {
            let token = admin_token_or_default(admin_token)?;
            println!("{}", client.set_policy(&token, &service, &name).await?);
        }
        Command::Policy {
            action: PolicyAction::Push { .. },
        } => {}
        Command::Cache {
            action: CacheAction::Stats { json },
        } => {
            let stats = client.cache_stats().await?;
            show(&stats, json, table::cache)?;
        }
        Command::Cache {
            action:
                CacheAction::Purge {
                    service,
                    admin_token,
                },
        } => {
            let token = admin_token_or_default(admin_token)?;
            println!("{}", client.purge_cache(&token, service.as_deref()).await?);
        }
    }
    client.close().await;
    Ok(())
}

#[cfg(test)]
mod tests;
