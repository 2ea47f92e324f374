//! The store's tests: every scenario against SQLite (a temporary file) and
//! against a throwaway PostgreSQL cluster (`switchyard_testkit::Postgres`;
//! skipped with a message only when PostgreSQL's binaries are absent).

use std::collections::BTreeMap;

use protocol::{JobFilter, JobState, LogStream};
use sqlx::Row;
use switchyard_testkit::Postgres;

use super::*;
use crate::config::TemplateConfig;

mod lifecycle;
mod upkeep;

use lifecycle::*;
use upkeep::*;

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
    finish_is_one_fenced_write,
    every_byte_survives_a_group,
    logs_in_order,
    delete_removes_everything,
    unfinished_by_priority,
    purge_finished,
    counts_by_service_and_state,
    templates_round_trip,
    settings_round_trip,
    concurrent_writers,
    ten_thousand_unfinished,
    group_commit_keeps_each_answer,
    merged_writes_answer_one_by_one,
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
        request_id: Some(format!("req-{id}")),
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

/// With one connection in all, the writer does not keep it: reads and
/// the store's other writes still get it between groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_one_connection_still_reads() {
    let Some(pg) = Postgres::start().expect("start postgres") else {
        return;
    };
    let store = JobStore::open(&pg.url(), 1).await.expect("open postgres");
    for i in 0..3 {
        let id = format!("one{i}");
        store.insert(&job(&id, "s", None, 0)).await.expect("insert");
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), store.get(&id));
        let got = read.await.expect("a read within 5 s").expect("get");
        assert_eq!(got.map(|j| j.view.id), Some(id.clone()));
        assert!(start(&store, &id, 1, "n1").await, "{id}");
    }
    let ids = ["one0".to_string()];
    let renewed = store.renew_leases("gw1", &ids, 9_000);
    tokio::time::timeout(std::time::Duration::from_secs(5), renewed)
        .await
        .expect("a write outside the writer within 5 s")
        .expect("renew");
}

/// A lease renewal never waits for a row another transaction holds (a
/// group changing that job right now): it renews the others and leaves
/// that one to the next renewal, so it cannot deadlock with a group that
/// holds some of its jobs and waits for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_renewal_skips_a_held_row() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let store = &db.store;
    for id in ["held", "free"] {
        store.insert(&job(id, "s", None, 0)).await.expect("insert");
        assert!(start(store, id, 1, "n1").await, "{id}");
    }
    let mut holder = store.write.begin().await.expect("begin");
    sqlx::query("UPDATE jobs SET node = 'n2' WHERE id = 'held'")
        .execute(&mut *holder)
        .await
        .expect("hold the row");
    let ids = ["held".to_string(), "free".to_string()];
    let renewed = store.renew_leases("gw1", &ids, 9_000);
    tokio::time::timeout(std::time::Duration::from_secs(5), renewed)
        .await
        .expect("a renewal that does not wait for the held row")
        .expect("renew");
    holder.rollback().await.expect("rollback");
    assert_eq!(get(store, "free").await.lease_until_ms, Some(9_000));
    assert_eq!(get(store, "held").await.lease_until_ms, Some(5_000));
}

/// A PostgreSQL store analyzes the jobs table as the queue grows: from
/// 1 000 jobs, each time their count doubled since its last analyze.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statistics_follow_a_growing_queue() {
    let Some(db) = postgres_db().await else {
        return;
    };
    let store = &db.store;
    let reltuples = || async {
        let row = sqlx::query("SELECT reltuples::BIGINT AS n FROM pg_class WHERE relname = 'jobs'")
            .fetch_one(&store.read)
            .await
            .expect("reltuples");
        row.get::<i64, _>("n")
    };
    assert_eq!(reltuples().await, -1, "never analyzed");
    for i in 0..1200 {
        store
            .insert(&job(&format!("j{i:04}"), "s", None, 0))
            .await
            .expect("insert");
    }
    assert!(!store.keep_statistics(999).await.expect("below the floor"));
    assert_eq!(reltuples().await, -1);
    assert!(store.keep_statistics(1200).await.expect("analyze"));
    assert_eq!(reltuples().await, 1200);
    assert!(!store.keep_statistics(2399).await.expect("not yet twice"));
    assert!(store.keep_statistics(2400).await.expect("twice"));

    let sqlite = sqlite_db().await;
    assert!(
        !sqlite
            .store
            .keep_statistics(1_000_000)
            .await
            .expect("sqlite")
    );
}
