//! Memberships against a real etcd (`switchyard_testkit::Etcd`): gateways
//! see each other, one that stops renewing leaves, losing etcd keeps the
//! list and etcd's return rejoins.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_testkit::Etcd;

use super::*;

const TTL_S: u32 = 2;

fn config(etcd: &Etcd) -> ClusterConfig {
    ClusterConfig {
        lease_ttl_s: TTL_S,
        connect_timeout_ms: 1000,
        prefix: "/test".into(),
        ..ClusterConfig::with_etcd(vec![etcd.endpoint()])
    }
}

fn member(name: &str, port: u16) -> Member {
    Member {
        name: name.into(),
        quic: format!("127.0.0.1:{port}"),
        http: format!("127.0.0.1:{}", port + 1),
    }
}

async fn join(etcd: &Etcd, name: &str, port: u16) -> Cluster {
    Cluster::start(
        &config(etcd),
        member(name, port),
        format!("127.0.0.1:{}", port + 2),
        Box::new(LoadSummary::default),
    )
    .await
    .expect("joins")
}

fn names(c: &Cluster) -> Vec<String> {
    c.members().members.into_iter().map(|m| m.name).collect()
}

/// Waits up to `within` for `what` to hold; returns how long it took.
async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_each_other_and_one_that_stops_renewing_leaves_within_its_ttl() {
    let Some(etcd) = Etcd::start().expect("etcd") else {
        return;
    };
    let a = join(&etcd, "gw-a", 10_000).await;
    let b = join(&etcd, "gw-b", 10_010).await;
    let c = join(&etcd, "gw-c", 10_020).await;
    let all = ["gw-a", "gw-b", "gw-c"].map(String::from).to_vec();
    eventually(Duration::from_secs(3), "all three in a's list", || {
        names(&a) == all
    })
    .await;
    assert_eq!(names(&b), all);
    assert_eq!(names(&c), all);
    assert_eq!(a.live_count(), 3);
    assert!(!a.is_degraded());
    assert!(a.etcd().is_some());
    assert_eq!(a.prefix(), "/test");
    let infos = a.infos();
    let b_info = infos.iter().find(|i| i.name == "gw-b").expect("b's info");
    assert_eq!(b_info.quic, "127.0.0.1:10010");
    assert_eq!(b_info.http, "127.0.0.1:10011");
    assert_eq!(b_info.admin, "127.0.0.1:10012");
    assert!(b_info.started_unix_ms > 0);

    // b leaves: revoked, so gone at once.
    let before = a.members().revision;
    b.leave().await;
    eventually(Duration::from_secs(2), "b gone from a's list", || {
        names(&a) == ["gw-a", "gw-c"]
    })
    .await;
    assert!(a.members().revision > before, "the revision grew");

    // c stops renewing (dropped, as a killed gateway): gone within its TTL.
    drop(c);
    let took = eventually(
        Duration::from_secs(u64::from(TTL_S) + 2),
        "c gone from a's list within its TTL + 1 s",
        || names(&a) == ["gw-a"],
    )
    .await;
    assert!(
        took <= Duration::from_secs(u64::from(TTL_S) + 1),
        "{took:?}"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_summaries_reach_the_other_members() {
    let Some(etcd) = Etcd::start().expect("etcd") else {
        return;
    };
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let a = Cluster::start(
        &config(&etcd),
        member("gw-a", 10_100),
        String::new(),
        Box::new(move || LoadSummary {
            agents: 2,
            calls_in_flight: seen.load(Ordering::Relaxed),
        }),
    )
    .await
    .expect("a joins");
    let b = join(&etcd, "gw-b", 10_110).await;
    calls.store(7, Ordering::Relaxed);
    let load_of_a = |c: &Cluster| {
        c.infos()
            .into_iter()
            .find(|i| i.name == "gw-a")
            .map(|i| i.load)
    };
    assert_eq!(
        load_of_a(&a).map(|l| l.calls_in_flight),
        Some(7),
        "its own load is read live"
    );
    eventually(Duration::from_secs(5), "a's load in b's view", || {
        load_of_a(&b)
            == Some(LoadSummary {
                agents: 2,
                calls_in_flight: 7,
            })
    })
    .await;
    let list = b.members().revision;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        b.members().revision,
        list,
        "load updates do not change the member list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_etcd_keeps_the_list_and_its_return_rejoins() {
    let Some(mut etcd) = Etcd::start().expect("etcd") else {
        return;
    };
    let a = join(&etcd, "gw-a", 10_200).await;
    let b = join(&etcd, "gw-b", 10_210).await;
    eventually(Duration::from_secs(3), "both in a's list", || {
        a.live_count() == 2
    })
    .await;
    assert!(a.etcd_for_change().is_ok());
    etcd.stop();
    eventually(Duration::from_secs(5), "a degraded", || a.is_degraded()).await;
    let health = a.etcd_health().expect("clustered");
    assert!(!health.up);
    assert!(health.degraded_since_unix_ms.is_some());
    assert!(health.last_error.is_some());
    assert_eq!(
        a.etcd_for_change().err(),
        Some(ClusterError::EtcdUnreachable)
    );
    assert_eq!(names(&a), ["gw-a", "gw-b"], "the last list is kept");
    tokio::time::sleep(Duration::from_secs(u64::from(TTL_S) + 1)).await;
    assert_eq!(names(&a), ["gw-a", "gw-b"], "still kept past the TTL");

    etcd.restart().expect("restart");
    eventually(Duration::from_secs(10), "a and b rejoined", || {
        !a.is_degraded() && !b.is_degraded()
    })
    .await;
    assert!(a.etcd_health().expect("clustered").up);
    assert!(a.etcd_for_change().is_ok());
    // Both put their keys again: a third member sees both.
    let c = join(&etcd, "gw-c", 10_220).await;
    eventually(Duration::from_secs(3), "c sees a and b", || {
        names(&c) == ["gw-a", "gw-b", "gw-c"]
    })
    .await;
    eventually(Duration::from_secs(3), "a sees c", || a.live_count() == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_while_etcd_is_down_starts_alone_and_catches_up() {
    let Some(mut etcd) = Etcd::start().expect("etcd") else {
        return;
    };
    let b = join(&etcd, "gw-b", 10_310).await;
    etcd.stop();
    let a = join(&etcd, "gw-a", 10_300).await;
    assert!(a.is_degraded());
    assert_eq!(names(&a), ["gw-a"], "alone");
    etcd.restart().expect("restart");
    eventually(Duration::from_secs(10), "a caught up", || {
        !a.is_degraded() && names(&a) == ["gw-a", "gw-b"]
    })
    .await;
    eventually(Duration::from_secs(5), "b sees a", || {
        names(&b) == ["gw-a", "gw-b"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_a_live_member_holds_is_refused() {
    let Some(etcd) = Etcd::start().expect("etcd") else {
        return;
    };
    let _a = join(&etcd, "gw-a", 10_400).await;
    let refused = Cluster::start(
        &config(&etcd),
        member("gw-a", 10_410),
        String::new(),
        Box::new(LoadSummary::default),
    )
    .await;
    let Err(e) = refused else {
        panic!("a second gw-a joined");
    };
    assert!(matches!(e, ClusterError::NameTaken { .. }), "{e}");
    assert!(e.to_string().contains("gw-a"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_takes_back_its_name_once_the_old_lease_runs_out() {
    let Some(etcd) = Etcd::start().expect("etcd") else {
        return;
    };
    let old = join(&etcd, "gw-a", 10_500).await;
    drop(old);
    let again = join(&etcd, "gw-a", 10_510).await;
    assert_eq!(again.members().members, vec![member("gw-a", 10_510)]);
}

#[test]
fn without_cluster_the_gateway_is_alone_and_never_degraded() {
    let c = Cluster::single(member("solo", 4433));
    assert_eq!(c.members().revision, 1);
    assert_eq!(c.live_count(), 1);
    assert!(!c.is_degraded());
    assert!(c.etcd().is_none());
    assert!(c.etcd_health().is_none());
    assert_eq!(c.prefix(), "");
    assert_eq!(c.name(), "solo");
    assert_eq!(c.infos().len(), 1);
    assert!(matches!(c.etcd_for_change(), Err(ClusterError::Etcd(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_keys_are_written_under_the_prefix_and_refused_while_degraded() {
    let Some(mut etcd) = Etcd::start().expect("etcd") else {
        return;
    };
    let a = join(&etcd, "gw-a", 10_600).await;
    let revision = a
        .put_config("job-settings", br#"{"max_per_node": 2}"#.to_vec())
        .await
        .expect("written")
        .expect("a revision");
    assert!(revision > 0);
    let mut kv = a.etcd().expect("clustered").kv_client();
    let got = kv
        .get("/test/config/job-settings", None)
        .await
        .expect("get");
    assert_eq!(got.kvs()[0].value(), br#"{"max_per_node": 2}"#);
    assert_eq!(got.kvs()[0].mod_revision(), revision);
    // Applied revisions only grow; a wait ends when one is reached.
    assert!(!a.config_applied(revision, Duration::from_millis(20)).await);
    a.set_config_applied(revision);
    a.set_config_applied(1);
    assert!(a.config_applied(revision, Duration::ZERO).await);
    etcd.stop();
    eventually(Duration::from_secs(5), "a degraded", || a.is_degraded()).await;
    assert_eq!(
        a.put_config("job-settings", b"{}".to_vec()).await,
        Err(ClusterError::EtcdUnreachable)
    );
}

#[tokio::test]
async fn without_cluster_config_keys_are_written_nowhere() {
    let c = Cluster::single(member("solo", 4433));
    assert_eq!(c.put_config("job-settings", b"{}".to_vec()).await, Ok(None));
    assert!(c.config_applied(0, Duration::ZERO).await);
}
