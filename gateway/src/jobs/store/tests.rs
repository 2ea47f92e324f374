//! The store's tests: every scenario against SQLite (a temporary file) and
//! against a throwaway PostgreSQL cluster (`switchyard_testkit::Postgres`;
//! skipped with a message only when PostgreSQL's binaries are absent).

use std::collections::BTreeMap;

use protocol::{JobFilter, JobPage, JobState, LogStream};
use sqlx::Row;
use switchyard_testkit::Postgres;

use super::*;
use crate::config::TemplateConfig;

/// A store and what keeps its database alive.
struct Db {
    store: JobStore,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<Postgres>,
}

async fn sqlite_db() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = JobStore::sqlite_url(&dir.path().join("jobs.db"));
    let store = JobStore::open(&url, 4).await.expect("open sqlite");
    assert_eq!(store.backend(), "sqlite");
    Db {
        store,
        _dir: Some(dir),
        _pg: None,
    }
}

async fn postgres_db() -> Option<Db> {
    let pg = Postgres::start().expect("start postgres")?;
    let store = JobStore::open(&pg.url(), 4).await.expect("open postgres");
    assert_eq!(store.backend(), "postgres");
    Some(Db {
        store,
        _dir: None,
        _pg: Some(pg),
    })
}

/// Each scenario as two tests: `NAME::sqlite` and `NAME::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::sqlite_db().await;
                super::$name(&db.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = super::postgres_db().await else {
                    return;
                };
                super::$name(&db.store).await;
            }
        }
    )*};
}

both!(
    placeholders_bind_by_number,
    insert_get_list,
    list_pages_with_a_cursor,
    fenced_change,
    set_result_is_fenced,
    logs_in_order,
    delete_removes_everything,
    unfinished_by_priority,
    purge_finished,
    counts_by_service_and_state,
    templates_round_trip,
    concurrent_writers,
);

fn job(id: &str, service: &str, tenant: Option<&str>, priority: i32) -> NewJob {
    NewJob {
        id: id.to_string(),
        service: service.to_string(),
        template: None,
        state: JobState::Waiting,
        tenant: tenant.map(str::to_string),
        priority,
        realtime: false,
        watchdog_s: 60,
        max_attempts: 3,
        idempotent: true,
        created_ms: 1_000,
        payload: b"payload".to_vec(),
        hints: BTreeMap::new(),
        labels: BTreeMap::new(),
        note: None,
    }
}

async fn get(store: &JobStore, id: &str) -> StoredJob {
    store.get(id).await.expect("get").expect("job exists")
}

/// Starts `id` as attempt `attempt` on `node`, held by `owner`.
async fn start(store: &JobStore, id: &str, attempt: u32, node: &str) -> bool {
    let c = Change {
        new_attempt: Some(attempt),
        node: Some(Some(node.to_string())),
        owner: Some(Some("gw1".to_string())),
        lease_until_ms: Some(Some(5_000)),
        started_ms: Some(Some(2_000)),
        ..Change::new(id, &[JobState::Waiting], JobState::Running, 2_000)
    };
    store.change(&c).await.expect("change")
}

/// Ends `id` (running at `attempt`) in `state` at `at_ms`.
async fn finish(store: &JobStore, id: &str, attempt: u32, state: JobState, at_ms: u64) -> bool {
    let c = Change {
        attempt: Some(attempt),
        owner: Some(None),
        lease_until_ms: Some(None),
        finished_ms: Some(Some(at_ms)),
        ..Change::new(id, &[JobState::Running], state, at_ms)
    };
    store.change(&c).await.expect("change")
}

async fn placeholders_bind_by_number(store: &JobStore) {
    let row = sqlx::query("SELECT $2 AS a, $1 AS b, $2 AS c")
        .bind("first")
        .bind("second")
        .fetch_one(&store.read)
        .await
        .expect("query");
    assert_eq!(row.try_get::<String, _>("a").expect("a"), "second");
    assert_eq!(row.try_get::<String, _>("b").expect("b"), "first");
    assert_eq!(row.try_get::<String, _>("c").expect("c"), "second");
}

async fn insert_get_list(store: &JobStore) {
    let mut a = job("j1", "sleep", Some("t1"), 5);
    // Bytes that look like a number, a NUL and invalid UTF-8: kept as they
    // are (SQLite gives BYTEA numeric affinity, which leaves blobs alone).
    a.payload = vec![b'1', b'2', b'3', 0, 0xff, b'4'];
    a.template = Some("nightly".into());
    a.realtime = true;
    a.hints.insert("gpu".into(), "a100".into());
    a.labels.insert("team".into(), "ml".into());
    a.note = Some("submitted".into());
    store.insert(&a).await.expect("insert");
    store
        .insert(&job("j2", "echo", Some("t2"), 0))
        .await
        .expect("insert");
    store
        .insert(&job("j3", "sleep", None, -3))
        .await
        .expect("insert");
    assert!(
        store.insert(&job("j1", "x", None, 0)).await.is_err(),
        "dup id"
    );

    let got = get(store, "j1").await;
    assert_eq!(got.payload, a.payload);
    assert_eq!(got.owner, None);
    assert_eq!(got.lease_until_ms, None);
    let v = &got.view;
    assert_eq!((v.id.as_str(), v.service.as_str()), ("j1", "sleep"));
    assert_eq!(v.template.as_deref(), Some("nightly"));
    assert_eq!(v.state, JobState::Waiting);
    assert_eq!(v.tenant.as_deref(), Some("t1"));
    assert_eq!((v.priority, v.realtime, v.idempotent), (5, true, true));
    assert_eq!((v.watchdog_s, v.attempt, v.max_attempts), (60, 0, 3));
    assert_eq!(
        (v.created_ms, v.started_ms, v.finished_ms),
        (1_000, None, None)
    );
    assert_eq!(
        (v.node.as_deref(), v.error.as_deref(), v.result_len),
        (None, None, None)
    );
    assert_eq!(v.hints, a.hints);
    assert_eq!(v.labels, a.labels);
    assert_eq!(v.history.len(), 1);
    let t = &v.history[0];
    assert_eq!((t.state, t.at_ms, t.attempt), (JobState::Waiting, 1_000, 0));
    assert_eq!(t.note.as_deref(), Some("submitted"));
    assert!(store.get("nope").await.expect("get").is_none());

    let ids = |page: &JobPage| page.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
    let all = store.list(&JobFilter::default()).await.expect("list");
    assert_eq!(ids(&all), ["j3", "j2", "j1"]);
    assert!(all.jobs.iter().all(|j| j.history.is_empty()));
    assert_eq!(all.next_cursor, None);
    let by_service = JobFilter {
        service: Some("sleep".into()),
        ..JobFilter::default()
    };
    assert_eq!(
        ids(&store.list(&by_service).await.expect("list")),
        ["j3", "j1"]
    );
    let by_tenant = JobFilter {
        tenant: Some("t2".into()),
        ..JobFilter::default()
    };
    assert_eq!(ids(&store.list(&by_tenant).await.expect("list")), ["j2"]);
    assert!(start(store, "j2", 1, "n1").await);
    let by_state = JobFilter {
        state: Some(JobState::Waiting),
        ..JobFilter::default()
    };
    assert_eq!(
        ids(&store.list(&by_state).await.expect("list")),
        ["j3", "j1"]
    );
    let none = JobFilter {
        state: Some(JobState::Running),
        tenant: Some("t1".into()),
        ..JobFilter::default()
    };
    assert!(store.list(&none).await.expect("list").jobs.is_empty());

    if store.backend() == "sqlite" {
        let row = sqlx::query("SELECT typeof(payload) AS t FROM jobs WHERE id = $1")
            .bind("j1")
            .fetch_one(&store.read)
            .await
            .expect("typeof");
        assert_eq!(row.try_get::<String, _>("t").expect("t"), "blob");
    }
}

async fn list_pages_with_a_cursor(store: &JobStore) {
    for i in 1..=5 {
        store
            .insert(&job(&format!("j{i:02}"), "s", None, 0))
            .await
            .expect("insert");
    }
    let mut filter = JobFilter {
        limit: Some(2),
        ..JobFilter::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list(&filter).await.expect("list");
        pages += 1;
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next_cursor {
            Some(cursor) => {
                assert_eq!(Some(&cursor), seen.last());
                filter.cursor = Some(cursor);
            }
            None => break,
        }
    }
    assert_eq!(seen, ["j05", "j04", "j03", "j02", "j01"]);
    assert_eq!(pages, 3);
    // A page that ends exactly at the last row has no cursor.
    filter.limit = Some(4);
    filter.cursor = Some("j05".into());
    let page = store.list(&filter).await.expect("list");
    assert_eq!(page.jobs.len(), 4);
    assert_eq!(page.next_cursor, None);
    // Limits are clamped to 1..=MAX_PAGE.
    filter.limit = Some(0);
    filter.cursor = None;
    assert_eq!(store.list(&filter).await.expect("list").jobs.len(), 1);
}

async fn fenced_change(store: &JobStore) {
    store
        .insert(&job("j1", "s", None, 0))
        .await
        .expect("insert");
    // Wrong state: nothing written.
    assert!(!finish(store, "j1", 0, JobState::Succeeded, 3_000).await);
    assert!(!start(store, "missing", 1, "n1").await);
    let empty = Change::new("j1", &[], JobState::Cancelled, 3_000);
    assert!(!store.change(&empty).await.expect("change"));
    assert!(start(store, "j1", 1, "n1").await);
    let j = get(store, "j1").await;
    assert_eq!(j.view.state, JobState::Running);
    assert_eq!((j.view.attempt, j.view.node.as_deref()), (1, Some("n1")));
    assert_eq!(
        (j.owner.as_deref(), j.lease_until_ms),
        (Some("gw1"), Some(5_000))
    );
    assert_eq!(j.view.started_ms, Some(2_000));
    // Wrong attempt: nothing written.
    assert!(!finish(store, "j1", 2, JobState::Succeeded, 3_000).await);
    assert!(!start(store, "j1", 2, "n2").await, "not waiting any more");
    let same = get(store, "j1").await;
    assert_eq!(same, j);
    assert_eq!(same.view.history.len(), 2);
    // The right attempt.
    let c = Change {
        error: Some(Some("exit 1".into())),
        note: Some("exit status 1".into()),
        ..Change::new("j1", &[JobState::Running], JobState::Failed, 3_000)
    };
    let c = Change {
        attempt: Some(1),
        finished_ms: Some(Some(3_000)),
        owner: Some(None),
        ..c
    };
    assert!(store.change(&c).await.expect("change"));
    let j = get(store, "j1").await;
    assert_eq!(j.view.state, JobState::Failed);
    assert_eq!(j.view.error.as_deref(), Some("exit 1"));
    assert_eq!(
        (j.view.finished_ms, j.owner.as_deref()),
        (Some(3_000), None)
    );
    assert_eq!(j.lease_until_ms, Some(5_000), "left as it was");
    let history: Vec<_> = j
        .view
        .history
        .iter()
        .map(|t| (t.state, t.at_ms, t.attempt, t.node.clone(), t.note.clone()))
        .collect();
    assert_eq!(
        history,
        [
            (JobState::Waiting, 1_000, 0, None, None),
            (JobState::Running, 2_000, 1, Some("n1".into()), None),
            (
                JobState::Failed,
                3_000,
                1,
                Some("n1".into()),
                Some("exit status 1".into())
            ),
        ]
    );
    // A restart from any final state clears the result and the times.
    assert!(
        store
            .set_result("j1", 1, b"partial", None)
            .await
            .expect("set")
    );
    let restart = Change {
        node: Some(None),
        started_ms: Some(None),
        finished_ms: Some(None),
        error: Some(None),
        clear_result: true,
        note: Some("restarted".into()),
        ..Change::new("j1", &JobState::ALL, JobState::Waiting, 4_000)
    };
    assert!(store.change(&restart).await.expect("change"));
    let j = get(store, "j1").await;
    assert_eq!(j.view.state, JobState::Waiting);
    assert_eq!((j.view.attempt, j.view.node.as_deref()), (1, None));
    assert_eq!((j.view.started_ms, j.view.finished_ms), (None, None));
    assert_eq!((j.view.error.as_deref(), j.view.result_len), (None, None));
    assert_eq!(store.result("j1").await.expect("result"), None);
    assert_eq!(j.view.history.len(), 4);
    assert!(start(store, "j1", 2, "n2").await, "the next attempt");
}

async fn set_result_is_fenced(store: &JobStore) {
    store
        .insert(&job("j1", "s", None, 0))
        .await
        .expect("insert");
    assert!(start(store, "j1", 1, "n1").await);
    assert!(!store.set_result("j1", 2, b"late", None).await.expect("set"));
    assert!(!store.set_result("nope", 1, b"x", None).await.expect("set"));
    assert_eq!(store.result("j1").await.expect("result"), None);
    assert_eq!(get(store, "j1").await.view.result_len, None);
    let data = vec![0u8, 1, 2, 255, b'7'];
    assert!(
        store
            .set_result("j1", 1, &data, Some("application/octet-stream"))
            .await
            .expect("set")
    );
    assert_eq!(
        store.result("j1").await.expect("result"),
        Some((data.clone(), Some("application/octet-stream".into())))
    );
    assert_eq!(get(store, "j1").await.view.result_len, Some(5));
    assert!(store.set_result("j1", 1, b"ok", None).await.expect("set"));
    assert_eq!(
        store.result("j1").await.expect("result"),
        Some((b"ok".to_vec(), None))
    );
    assert_eq!(get(store, "j1").await.view.result_len, Some(2));
}

fn lines(attempt: u32, from: usize, n: usize) -> Vec<(u32, u64, LogStream, String)> {
    (from..from + n)
        .map(|i| {
            let stream = if i % 2 == 0 {
                LogStream::Stdout
            } else {
                LogStream::Stderr
            };
            (attempt, 10_000 + i as u64, stream, format!("line {i} é"))
        })
        .collect()
}

async fn logs_in_order(store: &JobStore) {
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

async fn delete_removes_everything(store: &JobStore) {
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

async fn unfinished_by_priority(store: &JobStore) {
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

async fn purge_finished(store: &JobStore) {
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

async fn counts_by_service_and_state(store: &JobStore) {
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

async fn templates_round_trip(store: &JobStore) {
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

async fn concurrent_writers(store: &JobStore) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopened_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A path that needs percent-encoding.
    let path = dir.path().join("a dir ?#%").join("jobs.db");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let url = JobStore::sqlite_url(&path);
    let before = {
        let store = JobStore::open(&url, 2).await.expect("open");
        store
            .insert(&job("j1", "s", Some("t"), 1))
            .await
            .expect("insert");
        assert!(start(&store, "j1", 1, "n1").await);
        store
            .append_log("j1", &lines(1, 1, 4))
            .await
            .expect("append");
        assert!(
            store
                .set_result("j1", 1, b"out", Some("text/plain"))
                .await
                .expect("set")
        );
        store
            .put_template(
                "t",
                &TemplateConfig {
                    service: "s".into(),
                    payload: "p".into(),
                    defaults: BTreeMap::new(),
                    watchdog_s: None,
                    description: String::new(),
                },
                1,
            )
            .await
            .expect("put");
        let before = get(&store, "j1").await;
        store.close().await;
        before
    };
    assert!(path.exists(), "the file is where the url says");
    let store = JobStore::open(&url, 2).await.expect("reopen");
    assert_eq!(get(&store, "j1").await, before);
    assert_eq!(store.log_after("j1", 0, 10).await.expect("log").len(), 4);
    assert_eq!(
        store.result("j1").await.expect("result"),
        Some((b"out".to_vec(), Some("text/plain".into())))
    );
    assert_eq!(store.templates().await.expect("templates").len(), 1);
    assert_eq!(
        store
            .append_log("j1", &lines(1, 5, 1))
            .await
            .expect("append"),
        5
    );
    // The connections run in WAL mode with synchronous FULL.
    let row = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&store.write)
        .await
        .expect("pragma");
    assert_eq!(row.try_get::<String, _>(0).expect("mode"), "wal");
    let row = sqlx::query("PRAGMA synchronous")
        .fetch_one(&store.read)
        .await
        .expect("pragma");
    assert_eq!(row.try_get::<i64, _>(0).expect("sync"), 2, "FULL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_is_one_database() {
    let store = JobStore::open("sqlite::memory:", 4).await.expect("open");
    store
        .insert(&job("j1", "s", None, 0))
        .await
        .expect("insert");
    assert!(store.get("j1").await.expect("get").is_some());
}

#[tokio::test]
async fn bad_urls_are_refused() {
    let err = JobStore::open("mysql://x/y", 1).await.expect_err("refused");
    assert!(matches!(err, StoreError::BadUrl(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_share_one_postgres_database() {
    let Some(pg) = Postgres::start().expect("start postgres") else {
        return;
    };
    let url = pg.create_database("shared").expect("createdb");
    // Both migrate at once; then each sees the other's writes.
    let (a, b) = tokio::join!(JobStore::open(&url, 2), JobStore::open(&url, 2));
    let (a, b) = (a.expect("open a"), b.expect("open b"));
    let again = JobStore::open(&url, 1).await.expect("migrations run again");
    a.insert(&job("j1", "s", None, 0)).await.expect("insert");
    assert!(start(&b, "j1", 1, "n1").await);
    assert!(!start(&a, "j1", 1, "n2").await, "fenced across stores");
    assert_eq!(
        a.append_log("j1", &lines(1, 1, 2)).await.expect("append"),
        2
    );
    assert_eq!(
        b.append_log("j1", &lines(1, 3, 2)).await.expect("append"),
        4
    );
    let j = get(&again, "j1").await;
    assert_eq!(
        (j.view.state, j.view.node.as_deref()),
        (JobState::Running, Some("n1"))
    );
    assert_eq!(again.log_after("j1", 0, 10).await.expect("log").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_errors_not_panics() {
    let db = sqlite_db().await;
    let store = &db.store;
    store
        .insert(&job("j1", "s", None, 0))
        .await
        .expect("insert");
    sqlx::query("UPDATE jobs SET state = 'exploded' WHERE id = 'j1'")
        .execute(&store.write)
        .await
        .expect("break");
    let err = store.get("j1").await.expect_err("corrupt");
    assert!(
        matches!(&err, StoreError::Corrupt { id, .. } if id == "j1"),
        "{err}"
    );
    assert!(store.unfinished().await.is_ok(), "not selected");
    assert!(store.list(&JobFilter::default()).await.is_err());
    sqlx::query("UPDATE jobs SET state = 'waiting', hints = 'nope', attempt = -1 WHERE id = 'j1'")
        .execute(&store.write)
        .await
        .expect("break");
    assert!(matches!(
        store.unfinished().await,
        Err(StoreError::Corrupt { .. })
    ));
}
