//! `switchyard cluster`: the gateways of a cluster as one of them sees
//! them, from its admin port's `GET /api/cluster`.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Largest answer read, bytes.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// `GET /api/cluster`'s answer (the fields shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClusterView {
    pub me: String,
    pub clustered: bool,
    pub degraded: bool,
    pub revision: u64,
    pub members: Vec<MemberView>,
    pub etcd: Option<EtcdView>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberView {
    pub name: String,
    #[serde(default)]
    pub me: bool,
    pub quic: String,
    #[serde(default)]
    pub http: String,
    #[serde(default)]
    pub admin: String,
    #[serde(default)]
    pub agents: u64,
    #[serde(default)]
    pub calls_in_flight: u64,
}

/// The gateway's link to etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EtcdView {
    pub endpoints: Vec<String>,
    pub up: bool,
    pub degraded_since_unix_ms: Option<u64>,
    pub last_error: Option<String>,
    pub lease_ttl_s: u32,
    pub prefix: String,
}

/// Fetches `{admin_url}/api/cluster` (within 10 s) and prints it as a
/// table, or as JSON.
///
/// # Errors
/// When the gateway cannot be reached, answers an error status, or
/// answers something that is not a cluster view.
pub(crate) async fn run(admin_url: &str, json: bool) -> anyhow::Result<()> {
    let view = fetch(admin_url).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", table(&view, SystemTime::now()));
    }
    Ok(())
}

async fn fetch(admin_url: &str) -> anyhow::Result<ClusterView> {
    let url = format!("{}/api/cluster", admin_url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let (status, body) = crate::bounded_answer(client.get(&url), &url, MAX_ANSWER_BYTES).await?;
    if !status.is_success() {
        anyhow::bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("{url}: not a cluster view: {e}"))
}

/// One line per member (`*` marks the gateway asked), then one for etcd.
pub(crate) fn table(view: &ClusterView, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<22} {:<22} {:<22} {:>6} {:>6}",
        "MEMBER", "QUIC", "HTTP", "ADMIN", "AGENTS", "CALLS"
    );
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    for m in &view.members {
        let name = if m.me {
            format!("{} *", m.name)
        } else {
            m.name.clone()
        };
        let _ = writeln!(
            out,
            "{:<20} {:<22} {:<22} {:<22} {:>6} {:>6}",
            name,
            m.quic,
            dash(&m.http),
            dash(&m.admin),
            m.agents,
            m.calls_in_flight
        );
    }
    let _ = writeln!(out, "{}", etcd_line(view, now));
    out
}

fn etcd_line(view: &ClusterView, now: SystemTime) -> String {
    let Some(etcd) = &view.etcd else {
        return "etcd: none (no [cluster]: a cluster of one)".into();
    };
    let endpoints = etcd.endpoints.join(",");
    if etcd.up {
        return format!(
            "etcd: up ({endpoints}), prefix {}, lease TTL {} s, {} members at revision {}",
            etcd.prefix,
            etcd.lease_ttl_s,
            view.members.len(),
            view.revision
        );
    }
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let since = etcd
        .degraded_since_unix_ms
        .map(|t| format!(" for {} s", now_ms.saturating_sub(t) / 1000))
        .unwrap_or_default();
    format!(
        "etcd: DOWN ({endpoints}){since}: degraded, serving with the last member list; last \
         error: {}",
        etcd.last_error.as_deref().unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(etcd: Option<EtcdView>) -> ClusterView {
        ClusterView {
            me: "gw-a".into(),
            clustered: etcd.is_some(),
            degraded: etcd.as_ref().is_some_and(|e| !e.up),
            revision: 9,
            members: vec![
                MemberView {
                    name: "gw-a".into(),
                    me: true,
                    quic: "10.0.0.1:4433".into(),
                    http: "10.0.0.1:4480".into(),
                    admin: "10.0.0.1:4490".into(),
                    agents: 3,
                    calls_in_flight: 12,
                },
                MemberView {
                    name: "gw-b".into(),
                    me: false,
                    quic: "10.0.0.2:4433".into(),
                    http: String::new(),
                    admin: "10.0.0.2:4490".into(),
                    agents: 1,
                    calls_in_flight: 0,
                },
            ],
            etcd,
        }
    }

    fn etcd(up: bool) -> EtcdView {
        EtcdView {
            endpoints: vec!["http://10.0.0.9:2379".into()],
            up,
            degraded_since_unix_ms: (!up).then_some(1_000),
            last_error: (!up).then(|| "transport error".into()),
            lease_ttl_s: 3,
            prefix: "/switchyard".into(),
        }
    }

    #[test]
    fn members_are_rows_and_etcd_a_line() {
        let now = UNIX_EPOCH + Duration::from_secs(61);
        let text = table(&view(Some(etcd(true))), now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("MEMBER"));
        assert!(lines[1].starts_with("gw-a *"), "{text}");
        assert!(lines[1].contains("10.0.0.1:4433") && lines[1].ends_with("12"));
        assert!(
            lines[2].starts_with("gw-b ") && lines[2].contains(" - "),
            "{text}"
        );
        assert!(
            lines[3].starts_with("etcd: up (http://10.0.0.9:2379)"),
            "{text}"
        );

        let down = table(&view(Some(etcd(false))), now);
        assert!(down.contains("etcd: DOWN"), "{down}");
        assert!(down.contains("for 60 s"), "{down}");
        assert!(down.contains("transport error"), "{down}");

        let single = table(&view(None), now);
        assert!(single.contains("etcd: none"), "{single}");
    }

    #[test]
    fn the_answer_round_trips() {
        let v = view(Some(etcd(true)));
        let text = serde_json::to_string(&v).expect("json");
        let back: ClusterView = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, v);
    }
}
