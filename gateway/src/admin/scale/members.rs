//! The cluster's `GET /api/scale`: every other live member's own report,
//! fetched from its admin port (`/api/scale?local=1`) at once, each within
//! [`MEMBER_TIMEOUT`], and summed with this gateway's. A member that does
//! not answer in time, answers an error or something that is no report,
//! or has no admin address, is listed as missing; the answer never waits
//! longer than the timeout for it.

use std::sync::LazyLock;
use std::time::Duration;

use tokio::task::JoinSet;

use super::report::sum;
use super::{Missing, ScaleReport};
use crate::Shared;

/// Longest a member may take to answer, its body read included.
pub(super) const MEMBER_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest report a member may send, bytes.
const MAX_REPORT_BYTES: usize = 4 << 20;

/// A member to ask: its name and its admin port's `host:port` (empty:
/// none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Peer {
    pub name: String,
    pub admin: String,
}

/// One HTTP client for every member (no proxy: members talk directly).
static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default()
});

/// The cluster's report: `own` summed with the other live members'.
pub(super) async fn cluster_report(shared: &Shared, own: ScaleReport) -> ScaleReport {
    let me = shared.cluster.me().name.clone();
    let peers = shared
        .cluster
        .infos()
        .into_iter()
        .filter(|info| info.name != me)
        .map(|info| Peer {
            name: info.name,
            admin: info.admin,
        })
        .collect();
    let (answered, missing) = fetch_all(peers, MEMBER_TIMEOUT).await;
    combine(own, answered, missing)
}

/// Asks every peer at once; returns the reports that came within
/// `timeout` (by member name) and the members missing, each sorted by
/// name.
pub(super) async fn fetch_all(
    peers: Vec<Peer>,
    timeout: Duration,
) -> (Vec<(String, ScaleReport)>, Vec<Missing>) {
    let mut asks = JoinSet::new();
    for peer in peers {
        asks.spawn(async move {
            let answer = if peer.admin.is_empty() {
                Err("its admin port is not known (admin_enabled = false?)".to_string())
            } else {
                match tokio::time::timeout(timeout, fetch(&peer.admin)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                }
            };
            (peer.name, answer)
        });
    }
    let mut answered = Vec::new();
    let mut missing = Vec::new();
    while let Some(joined) = asks.join_next().await {
        match joined {
            Ok((name, Ok(report))) => answered.push((name, report)),
            Ok((name, Err(error))) => missing.push(Missing { name, error }),
            Err(error) => tracing::warn!(%error, "a member's scale report task failed"),
        }
    }
    answered.sort_by(|a, b| a.0.cmp(&b.0));
    missing.sort_by(|a, b| a.name.cmp(&b.name));
    (answered, missing)
}

/// One member's own report from `http://{admin}/api/scale?local=1`.
async fn fetch(admin: &str) -> Result<ScaleReport, String> {
    let url = format!("http://{admin}/api/scale?local=1");
    let mut response = CLIENT
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: status {}", response.status()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_REPORT_BYTES as u64)
    {
        return Err(format!("GET {url}: larger than {MAX_REPORT_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
    {
        if body.len() + chunk.len() > MAX_REPORT_BYTES {
            return Err(format!("GET {url}: larger than {MAX_REPORT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not a scale report: {e}"))
}

/// Sums `own` with the `answered` members' reports; `missing` are listed.
pub(super) fn combine(
    own: ScaleReport,
    answered: Vec<(String, ScaleReport)>,
    missing: Vec<Missing>,
) -> ScaleReport {
    let mut members = own.members.clone();
    members.extend(answered.iter().map(|(name, _)| name.clone()));
    members.sort();
    let services = sum(
        std::iter::once(&own.services[..]).chain(answered.iter().map(|(_, r)| &r.services[..]))
    );
    ScaleReport {
        scope: "cluster".into(),
        window_s: own.window_s,
        members,
        missing,
        services,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use axum::Router;
    use axum::routing::get;

    use super::*;
    use crate::admin::scale::report::{Fleet, service_scale};
    use crate::telemetry::scale::WindowStats;

    fn report(name: &str, arrivals: u64, running: u32) -> ScaleReport {
        let stats = WindowStats {
            span_s: 10.0,
            arrivals,
            holds: arrivals,
            held_s: arrivals as f64 * 0.5,
            running,
            ..WindowStats::default()
        };
        let fleet = Fleet {
            waiting: 0,
            capacity: 8,
            nodes: 2,
            slots_per_node: Some(4.0),
            target_utilisation: 0.5,
            members: 3,
        };
        ScaleReport {
            scope: "gateway".into(),
            window_s: 10,
            members: vec![name.into()],
            missing: Vec::new(),
            services: vec![service_scale("llama", &stats, fleet)],
        }
    }

    /// Serves `router` on a free loopback port; its `host:port`.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    #[tokio::test]
    async fn members_that_answer_are_summed_and_the_others_listed_missing() {
        let b = report("gw-b", 50, 3);
        let answer = b.clone();
        let good = serve(Router::new().route(
            "/api/scale",
            get(move || {
                let answer = answer.clone();
                async move { axum::Json(answer) }
            }),
        ))
        .await;
        let slow = serve(Router::new().route(
            "/api/scale",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        ))
        .await;
        let garbage = serve(Router::new().route("/api/scale", get(|| async { "not json" }))).await;
        // A port nobody listens on: bound, then closed.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let peer = |name: &str, admin: &str| Peer {
            name: name.into(),
            admin: admin.into(),
        };
        let peers = vec![
            peer("gw-b", &good),
            peer("gw-c", &slow),
            peer("gw-d", &garbage),
            peer("gw-e", &closed),
            peer("gw-f", ""),
        ];
        let started = Instant::now();
        let timeout = Duration::from_millis(300);
        let (answered, missing) = fetch_all(peers, timeout).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a member that does not answer does not hold the report"
        );
        assert_eq!(answered, vec![("gw-b".to_string(), b.clone())]);
        let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gw-c", "gw-d", "gw-e", "gw-f"]);
        assert!(
            missing[0].error.contains("no answer within 300 ms"),
            "{missing:?}"
        );
        assert!(
            missing[1].error.contains("not a scale report"),
            "{missing:?}"
        );
        assert!(
            missing[3].error.contains("admin port is not known"),
            "{missing:?}"
        );

        let own = report("gw-a", 50, 2);
        let cluster = combine(own.clone(), answered, missing);
        assert_eq!(cluster.scope, "cluster");
        assert_eq!(cluster.members, ["gw-a", "gw-b"]);
        assert_eq!(cluster.missing.len(), 4);
        let llama = &cluster.services[0];
        assert!((llama.arrivals_per_s - 10.0).abs() < 1e-9, "5/s + 5/s");
        assert_eq!(llama.running, 5);
        assert_eq!(llama.capacity, 8, "the fleet's, not added");
        // 10 calls/s × 0.5 s = 5 slots; at 50 % of 4-slot nodes: 2.5 → 3.
        assert!((llama.offered_load - 5.0).abs() < 1e-9);
        assert_eq!(llama.desired_nodes, 3);
        assert_eq!(
            own.services[0].desired_nodes + b.services[0].desired_nodes,
            4,
            "each member rounding its 1.25 up alone would over-count"
        );
    }
}
