//! Scenarios of logs, deletion, recovery, retention, counts, templates,
//! settings and concurrent writers.

use std::collections::BTreeMap;

use protocol::{JobState, LogStream};
use sqlx::Row;

use super::{finish, get, job, lines, start};
use crate::config::TemplateConfig;
use crate::jobs::store::{Change, JobStore};

pub(super) async fn logs_in_order(store: &JobStore) {
    store
        .insert(&job("j1", "s", None, 0))
        .await
        .expect("insert");
    store
        .insert(&job("j2", "s", None, 0))
        .await
        .expect("insert");
    assert_eq!(store.append_log("j1", &[]).await.expect("append"), 0);
    assert_eq!(
        store
            .append_log("j1", &lines(1, 1, 3))
            .await
            .expect("append"),
        3
    );
    assert_eq!(
        store
            .append_log("j2", &lines(1, 1, 1))
            .await
            .expect("append"),
        1
    );
    // More than one multi-row insert's worth.
    assert_eq!(
        store
            .append_log("j1", &lines(2, 4, 250))
            .await
            .expect("append"),
        253
    );
    assert_eq!(store.append_log("j1", &[]).await.expect("append"), 253);
    assert_eq!(
        store
            .append_log("missing", &lines(1, 1, 2))
            .await
            .expect("append"),
        0
    );
    let all = store.log_after("j1", 0, 1_000).await.expect("log");
    assert_eq!(all.len(), 253);
    for (i, e) in all.iter().enumerate() {
        let n = i + 1;
        assert_eq!(e.seq, n as u64);
        assert_eq!(e.line, format!("line {n} é"));
        assert_eq!(e.ts_ms, 10_000 + n as u64);
        assert_eq!(e.attempt, if n <= 3 { 1 } else { 2 });
        let stream = if n % 2 == 0 {
            LogStream::Stdout
        } else {
            LogStream::Stderr
        };
        assert_eq!(e.stream, stream);
    }
    let page = store.log_after("j1", 2, 3).await.expect("log");
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(
        store
            .log_after("j1", 253, 10)
            .await
            .expect("log")
            .is_empty()
    );
    assert_eq!(store.log_after("j2", 0, 10).await.expect("log").len(), 1);
    let system = [(0, 1, LogStream::System, "dispatched to n1".to_string())];
    assert_eq!(store.append_log("j2", &system).await.expect("append"), 2);
    let last = store.log_after("j2", 1, 10).await.expect("log");
    assert_eq!(last[0].stream, LogStream::System);
}

pub(super) async fn delete_removes_everything(store: &JobStore) {
    store
        .insert(&job("j1", "s", None, 0))
        .await
        .expect("insert");
    store
        .insert(&job("j2", "s", None, 0))
        .await
        .expect("insert");
    assert!(start(store, "j1", 1, "n1").await);
    store
        .append_log("j1", &lines(1, 1, 5))
        .await
        .expect("append");
    store
        .append_log("j2", &lines(1, 1, 2))
        .await
        .expect("append");
    assert!(store.set_result("j1", 1, b"r", None).await.expect("set"));
    assert!(store.delete("j1").await.expect("delete"));
    assert!(!store.delete("j1").await.expect("delete again"));
    assert!(store.get("j1").await.expect("get").is_none());
    assert!(store.log_after("j1", 0, 100).await.expect("log").is_empty());
    assert_eq!(store.result("j1").await.expect("result"), None);
    for table in ["job_transitions", "job_logs", "job_results"] {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM {table} WHERE job_id = $1"
        ))
        .bind("j1")
        .fetch_one(&store.read)
        .await
        .expect("count");
        assert_eq!(row.try_get::<i64, _>("n").expect("n"), 0, "{table}");
    }
    // The other job keeps its own.
    assert_eq!(store.log_after("j2", 0, 100).await.expect("log").len(), 2);
    // The id may be used again, its log numbered from 1.
    store
        .insert(&job("j1", "s", None, 0))
        .await
        .expect("insert");
    assert_eq!(
        store
            .append_log("j1", &lines(1, 1, 1))
            .await
            .expect("append"),
        1
    );
}

pub(super) async fn unfinished_by_priority(store: &JobStore) {
    for (id, priority) in [
        ("j1", 0),
        ("j2", 5),
        ("j3", 0),
        ("j4", 9),
        ("j5", 5),
        ("j6", -1),
    ] {
        store
            .insert(&job(id, "s", None, priority))
            .await
            .expect("insert");
    }
    let mut occupied = job("j7", "s", None, 100);
    occupied.state = JobState::Occupied;
    store.insert(&occupied).await.expect("insert");
    assert!(start(store, "j3", 1, "n1").await);
    assert!(start(store, "j4", 1, "n1").await);
    assert!(finish(store, "j4", 1, JobState::Succeeded, 3_000).await);
    let jobs = store.unfinished().await.expect("unfinished");
    let order: Vec<_> = jobs.iter().map(|j| j.view.id.as_str()).collect();
    assert_eq!(order, ["j2", "j5", "j1", "j3", "j6"]);
    let j3 = jobs.iter().find(|j| j.view.id == "j3").expect("j3");
    assert_eq!(j3.view.state, JobState::Running);
    assert_eq!(
        (j3.owner.as_deref(), j3.lease_until_ms),
        (Some("gw1"), Some(5_000))
    );
    assert_eq!(j3.payload, b"payload");
    assert!(jobs.iter().all(|j| j.view.history.is_empty()));

    store
        .renew_leases("gw1", &["j3".into(), "j2".into(), "zz".into()], 9_000)
        .await
        .expect("renew");
    store
        .renew_leases("gw2", &["j3".into()], 12_000)
        .await
        .expect("renew as another owner");
    store.renew_leases("gw1", &[], 1).await.expect("renew none");
    assert_eq!(get(store, "j3").await.lease_until_ms, Some(9_000));
    assert_eq!(get(store, "j2").await.lease_until_ms, None, "not held");
}

pub(super) async fn purge_finished(store: &JobStore) {
    for id in ["j1", "j2", "j3", "j4"] {
        store.insert(&job(id, "s", None, 0)).await.expect("insert");
    }
    let mut occupied = job("j5", "s", None, 0);
    occupied.state = JobState::Occupied;
    store.insert(&occupied).await.expect("insert");
    assert!(start(store, "j1", 1, "n1").await);
    assert!(finish(store, "j1", 1, JobState::Succeeded, 3_000).await);
    store
        .append_log("j1", &lines(1, 1, 2))
        .await
        .expect("append");
    assert!(start(store, "j2", 1, "n1").await);
    assert!(finish(store, "j2", 1, JobState::TimedOut, 8_000).await);
    assert!(start(store, "j3", 1, "n1").await);
    let cancel = Change {
        finished_ms: Some(Some(2_000)),
        ..Change::new("j4", &[JobState::Waiting], JobState::Cancelled, 2_000)
    };
    assert!(store.change(&cancel).await.expect("cancel"));
    // j1 (3 000), j4 (2 000) and j5 (occupied at 1 000) finished before
    // 5 000; j2 after; j3 runs.
    assert_eq!(store.purge_finished_before(5_000).await.expect("purge"), 3);
    for id in ["j1", "j4", "j5"] {
        assert!(store.get(id).await.expect("get").is_none(), "{id}");
    }
    assert!(store.log_after("j1", 0, 10).await.expect("log").is_empty());
    for id in ["j2", "j3"] {
        assert!(store.get(id).await.expect("get").is_some(), "{id}");
    }
    assert_eq!(store.purge_finished_before(5_000).await.expect("purge"), 0);
    assert_eq!(
        store
            .purge_finished_before(u64::MAX >> 2)
            .await
            .expect("purge"),
        1
    );
    assert!(
        store.get("j3").await.expect("get").is_some(),
        "running stays"
    );
}

pub(super) async fn counts_by_service_and_state(store: &JobStore) {
    for (id, service) in [("j1", "a"), ("j2", "a"), ("j3", "a"), ("j4", "b")] {
        store
            .insert(&job(id, service, None, 0))
            .await
            .expect("insert");
    }
    assert!(start(store, "j2", 1, "n1").await);
    let counts = store.counts().await.expect("counts");
    assert_eq!(
        counts,
        [
            ("a".to_string(), JobState::Running, 1),
            ("a".to_string(), JobState::Waiting, 2),
            ("b".to_string(), JobState::Waiting, 1),
        ]
    );
}

pub(super) async fn templates_round_trip(store: &JobStore) {
    assert!(store.templates().await.expect("templates").is_empty());
    let mut t = TemplateConfig {
        service: "train".into(),
        payload: "{\"epochs\": {epochs}}".into(),
        defaults: BTreeMap::from([("epochs".to_string(), "3".to_string())]),
        watchdog_s: Some(600),
        description: "trains".into(),
    };
    store.put_template("train", &t, 1).await.expect("put");
    let bare = TemplateConfig {
        service: "echo".into(),
        payload: String::new(),
        defaults: BTreeMap::new(),
        watchdog_s: None,
        description: String::new(),
    };
    store.put_template("echo", &bare, 1).await.expect("put");
    t.watchdog_s = None;
    t.description = "trains, replaced".into();
    store.put_template("train", &t, 2).await.expect("replace");
    assert_eq!(
        store.templates().await.expect("templates"),
        [("echo".to_string(), bare), ("train".to_string(), t)]
    );
}

pub(super) async fn settings_round_trip(store: &JobStore) {
    assert_eq!(store.setting("max_per_node").await.expect("read"), None);
    store.put_setting("max_per_node", 3, 1).await.expect("put");
    store.put_setting("other", 7, 1).await.expect("put");
    store
        .put_setting("max_per_node", 0, 2)
        .await
        .expect("replace");
    assert_eq!(store.setting("max_per_node").await.expect("read"), Some(0));
    assert_eq!(store.setting("other").await.expect("read"), Some(7));
    assert!(
        store.put_setting("x", u64::MAX, 3).await.is_err(),
        "out of BIGINT"
    );
}

pub(super) async fn concurrent_writers(store: &JobStore) {
    for i in 0..8 {
        store
            .insert(&job(&format!("j{i}"), "s", None, 0))
            .await
            .expect("insert");
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("j{i}");
            // Writers on the same job and on others at once.
            for round in 0..5 {
                store
                    .append_log("j0", &lines(1, round, 3))
                    .await
                    .expect("append shared");
                store
                    .append_log(&id, &lines(1, round, 2))
                    .await
                    .expect("append own");
            }
            start(&store, &id, 1, "n1").await
        }));
    }
    // Everybody races for the same fenced change too.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let c = Change {
                    finished_ms: Some(Some(1)),
                    ..Change::new("j7", &[JobState::Running], JobState::Cancelled, 1)
                };
                store.change(&c).await.expect("change")
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.expect("task"));
    }
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.expect("racer"));
    }
    assert!(won <= 1, "one fenced change at most");
    let shared = store.log_after("j0", 0, 1_000).await.expect("log");
    assert_eq!(shared.len(), 8 * 5 * 3 + 5 * 2);
    let seqs: Vec<u64> = shared.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// Restart recovery loads 10 000 unfinished jobs in one query (the time is
/// printed, not asserted).
pub(super) async fn ten_thousand_unfinished(store: &JobStore) {
    let mut tx = store.write.begin().await.expect("begin");
    for i in 0..10_000i64 {
        sqlx::query(
            "INSERT INTO jobs (id, service, state, priority, realtime, watchdog_s, attempt, \
             max_attempts, idempotent, created_ms, finished_ms, payload, hints, labels, trans_seq, \
             log_seq) \
             VALUES ($1, 's', $2, $3, 0, 60, 0, 1, 0, 1, $5, $4, '{}', '{\"k\":\"v\"}', 0, 0)",
        )
        .bind(format!("j{i:05}"))
        .bind(if i % 10 == 0 { "succeeded" } else { "waiting" })
        .bind(i % 7)
        .bind(vec![7u8; 512])
        .bind((i % 10 == 0).then_some(1i64))
        .execute(&mut *tx)
        .await
        .expect("insert");
    }
    tx.commit().await.expect("commit");
    let t0 = std::time::Instant::now();
    let jobs = store.unfinished().await.expect("unfinished");
    eprintln!(
        "{}: unfinished() loaded {} jobs in {:?}",
        store.backend(),
        jobs.len(),
        t0.elapsed()
    );
    assert_eq!(jobs.len(), 9_000);
    let keys: Vec<_> = jobs
        .iter()
        .map(|j| (-j.view.priority, j.view.id.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "priority descending, then id");
    assert!(jobs.iter().all(|j| j.payload.len() == 512));
    // Purged in several statements' worth of ids.
    store
        .append_log("j00010", &lines(1, 1, 2))
        .await
        .expect("append");
    assert_eq!(store.purge_finished_before(2).await.expect("purge"), 1_000);
    assert!(
        store
            .log_after("j00010", 0, 10)
            .await
            .expect("log")
            .is_empty()
    );
    assert_eq!(store.unfinished().await.expect("unfinished").len(), 9_000);
}
