//! `switchyard topology` and `switchyard tree push`: the tree of gateways
//! below the gateway at `--admin-url`, by echo wave (`GET /api/topology`),
//! and changes pushed down it, confirmed by the wave that carries them
//! (`POST /api/tree/push`).

use std::fmt::Write;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

/// Largest answer read, bytes.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A change `switchyard tree push` sends.
#[derive(Debug, Subcommand)]
pub(crate) enum PushChange {
    /// Make SERVICE use the loaded policy NAME on every gateway below.
    Policy {
        /// Service name.
        service: String,
        /// Policy name.
        name: String,
    },
    /// Drop cached results on every gateway below: SERVICE's, or all.
    Purge {
        /// Service name (default: every service).
        service: Option<String>,
    },
    /// Drain NODE wherever it is registered below (calls in flight
    /// finish); `--undrain` lets it take calls again.
    Drain {
        /// Node id.
        node: String,
        /// Undrain instead.
        #[arg(long)]
        undrain: bool,
    },
    /// Set durable jobs' per-node limit on every gateway below (0: none
    /// beyond the nodes' slots).
    Jobs {
        /// Most job calls on one node at once.
        max_per_node: u32,
    },
}

impl PushChange {
    /// The body of `POST /api/tree/push`.
    pub(crate) fn body(&self) -> Value {
        match self {
            Self::Policy { service, name } => {
                json!({"set_policy": {"service": service, "policy": name}})
            }
            Self::Purge { service } => json!({"purge_cache": {"service": service}}),
            Self::Drain { node, undrain } => {
                json!({"drain": {"node": node, "draining": !undrain}})
            }
            Self::Jobs { max_per_node } => {
                json!({"job_settings": {"max_per_node": max_per_node}})
            }
        }
    }
}

fn client(timeout_ms: u32) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_millis(u64::from(timeout_ms)) + Duration::from_secs(5))
        .build()?)
}

/// The answer of `request` (to `url`) as JSON, with its status.
async fn read(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<(u16, Value)> {
    let (status, body) = crate::bounded_answer(request, url, MAX_ANSWER_BYTES).await?;
    let value = serde_json::from_slice(&body)
        .map_err(|_| anyhow::anyhow!("{url}: {status}: {}", String::from_utf8_lossy(&body)))?;
    Ok((status.as_u16(), value))
}

/// Runs a topology wave from the gateway at `admin_url` and prints the
/// tree (or its JSON).
///
/// # Errors
/// The gateway cannot be reached or answers an error.
pub(crate) async fn show(admin_url: &str, timeout_ms: u32, json: bool) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/topology?timeout_ms={timeout_ms}",
        admin_url.trim_end_matches('/')
    );
    let (status, answer) = read(client(timeout_ms)?.get(&url), &url).await?;
    if status != 200 {
        anyhow::bail!("{url}: {status}: {answer}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", tree_text(&answer));
    }
    Ok(())
}

/// Pushes `change` down the tree from the gateway at `admin_url`.
///
/// # Errors
/// The gateway cannot be reached, refuses, or some gateway below did not
/// confirm (each such gateway's path and why are printed first).
pub(crate) async fn push(
    admin_url: &str,
    change: &PushChange,
    timeout_ms: u32,
    token: &str,
) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/tree/push?timeout_ms={timeout_ms}",
        admin_url.trim_end_matches('/')
    );
    let request = client(timeout_ms)?
        .post(&url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(change.body().to_string());
    let (status, answer) = read(request, &url).await?;
    match (status, answer["confirmed"].as_bool()) {
        (200, Some(true)) => {
            println!(
                "confirmed by {} gateways in {:.1} ms",
                answer["gateways"],
                answer["took_ms"].as_f64().unwrap_or(0.0)
            );
            Ok(())
        }
        (_, Some(false)) => {
            for failure in answer["failures"].as_array().into_iter().flatten() {
                let path: Vec<&str> = failure["path"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                eprintln!(
                    "{}: {}",
                    path.join(" > "),
                    failure["why"].as_str().unwrap_or("")
                );
            }
            anyhow::bail!(
                "not confirmed: {} gateway(s) did not apply it",
                answer["failures"].as_array().map_or(0, Vec::len)
            )
        }
        _ => anyhow::bail!("push refused ({status}): {answer}"),
    }
}

/// The tree as indented lines: each gateway (with its queue, or why its
/// branch is missing), its nodes (load over capacity, CPU, drained), then
/// its children.
pub(crate) fn tree_text(answer: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} gateways answered in {:.1} ms{}",
        answer["gateways"],
        answer["took_ms"].as_f64().unwrap_or(0.0),
        if answer["partial"] == true {
            " (partial: a branch did not answer)"
        } else {
            ""
        }
    );
    gateway_lines(&answer["tree"], "", &mut out);
    out
}

fn gateway_lines(gateway: &Value, indent: &str, out: &mut String) {
    let id = gateway["id"].as_str().unwrap_or("?");
    match gateway["missing"].as_str() {
        Some(why) => {
            let _ = writeln!(out, "{indent}{id} [gateway] MISSING: {why}");
            return;
        }
        None => {
            let _ = writeln!(out, "{indent}{id} [gateway] queued {}", gateway["queued"]);
        }
    }
    let inner = format!("{indent}  ");
    for node in gateway["nodes"].as_array().into_iter().flatten() {
        let services: Vec<&str> = node["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let _ = writeln!(
            out,
            "{inner}{} {}/{} in flight, cpu {:.0}%{} [{}]",
            node["id"].as_str().unwrap_or("?"),
            node["in_flight"],
            node["capacity"],
            node["cpu_pct"].as_f64().unwrap_or(0.0),
            if node["draining"] == true {
                ", drained"
            } else {
                ""
            },
            services.join(",")
        );
    }
    for child in gateway["children"].as_array().into_iter().flatten() {
        gateway_lines(child, &inner, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_prints_indented_with_missing_branches() {
        let answer = json!({
            "gateways": 2, "took_ms": 3.25, "partial": true,
            "tree": {"id": "root", "missing": null, "queued": 0, "nodes": [],
                "children": [
                    {"id": "site-a", "missing": null, "queued": 2, "children": [],
                     "nodes": [{"id": "node-a", "services": ["echo", "work"], "in_flight": 1,
                                "capacity": 6, "cpu_pct": 12.4, "draining": true}]},
                    {"id": "site-b", "missing": "no answer in time", "queued": 0,
                     "nodes": [], "children": []}
                ]}
        });
        assert_eq!(
            tree_text(&answer),
            "2 gateways answered in 3.2 ms (partial: a branch did not answer)\n\
             root [gateway] queued 0\n\
             \x20 site-a [gateway] queued 2\n\
             \x20   node-a 1/6 in flight, cpu 12%, drained [echo,work]\n\
             \x20 site-b [gateway] MISSING: no answer in time\n"
        );
        assert_eq!(
            PushChange::Drain {
                node: "n".into(),
                undrain: true
            }
            .body(),
            json!({"drain": {"node": "n", "draining": false}})
        );
    }
}
