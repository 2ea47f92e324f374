//! The `cluster` section's policy propagation: a policy component pushed
//! to one gateway of a cluster (`PUT /api/policies/{name}` on its admin
//! port, the route `switchyard policy push` uses), and how long until a
//! call through each other gateway is picked by it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::fleet::Gateways;

/// How long the pushed policy may take to reach every gateway.
const LIMIT: Duration = Duration::from_secs(30);

/// The policy that picked one call of `service` through the HTTP ingress on
/// `http` (its `x-switchyard-policy` header); `None` when the call failed
/// or the header is absent.
async fn served_policy(client: &reqwest::Client, http: u16, service: &str) -> Option<String> {
    let response = client
        .post(format!("http://127.0.0.1:{http}/v1/call/{service}"))
        .body("push")
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response
        .headers()
        .get("x-switchyard-policy")?
        .to_str()
        .ok()
        .map(String::from)
}

/// Pushes `plugins_dir/{policy}.wasm` to gateway 0 of `g` (whose gateways
/// have no such plugin file, and whose `echo-{policy}` service names it)
/// and polls `echo-{policy}` through every other gateway's ingress until
/// its calls report `policy`. Figures, ms from the start of the push:
/// `push_ms` (the push's answer) and `policy_propagation_ms` (the last
/// gateway to pick with it).
///
/// # Errors
/// A call already reports `policy` before the push, the push is refused,
/// or a gateway does not pick with it within 30 s.
pub async fn push_once(
    g: &Gateways,
    plugins_dir: &Path,
    policy: &str,
) -> Result<BTreeMap<String, f64>> {
    let service = format!("echo-{policy}");
    let component = std::fs::read(plugins_dir.join(format!("{policy}.wasm")))
        .with_context(|| format!("{policy}.wasm"))?;
    let token =
        std::fs::read_to_string(g.data_dir(0).join("admin-token")).context("gw-0's admin-token")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let others: Vec<u16> = g.members[1..].iter().map(|m| m.ports.http).collect();
    for &http in &others {
        if served_policy(&client, http, &service).await.as_deref() == Some(policy) {
            bail!("{service} is picked by {policy} before the push");
        }
    }
    let start = Instant::now();
    let response = client
        .put(format!(
            "http://127.0.0.1:{}/api/policies/{policy}",
            g.members[0].ports.admin
        ))
        .bearer_auth(token.trim())
        .body(component)
        .send()
        .await
        .context("PUT /api/policies")?;
    let push = start.elapsed();
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!(
            "push of {policy}: {status} {}",
            text.chars().take(300).collect::<String>()
        );
    }
    let mut everywhere = Duration::ZERO;
    for http in others {
        loop {
            if served_policy(&client, http, &service).await.as_deref() == Some(policy) {
                everywhere = everywhere.max(start.elapsed());
                break;
            }
            if start.elapsed() > LIMIT {
                bail!(
                    "the gateway on :{http} does not pick {service} with {policy} after {LIMIT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(BTreeMap::from([
        ("push_ms".to_string(), ms(push)),
        ("policy_propagation_ms".to_string(), ms(everywhere)),
    ]))
}
