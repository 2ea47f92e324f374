//! Scenarios of a job's life: insert, get, list and page, fenced changes,
//! results.

use protocol::{JobFilter, JobPage, JobState};
use sqlx::Row;

use super::{finish, get, job, lines, start};
use crate::jobs::store::{Change, JobStore};

pub(super) async fn placeholders_bind_by_number(store: &JobStore) {
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

pub(super) async fn insert_get_list(store: &JobStore) {
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
    assert_eq!(got, a.stored(), "what submit answers without reading back");
    assert_eq!(got.payload, a.payload);
    assert_eq!(got.owner, None);
    assert_eq!(got.lease_until_ms, None);
    let v = &got.view;
    assert_eq!((v.id.as_str(), v.service.as_str()), ("j1", "sleep"));
    assert_eq!(v.template.as_deref(), Some("nightly"));
    assert_eq!(v.request_id.as_deref(), Some("req-j1"), "the submitter's");
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

pub(super) async fn list_pages_with_a_cursor(store: &JobStore) {
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

pub(super) async fn fenced_change(store: &JobStore) {
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

pub(super) async fn set_result_is_fenced(store: &JobStore) {
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

/// Many jobs inserted, started and finished at once share groups: their
/// payloads and results, every byte value, go through the groups' JSON
/// rows and come back as they were.
pub(super) async fn every_byte_survives_a_group(store: &JobStore) {
    let all: Vec<u8> = (0..=255).collect();
    let ids: Vec<String> = (0..40).map(|i| format!("b{i}")).collect();
    let bytes = |i: usize| {
        let mut b = all.clone();
        b.rotate_left(i);
        b
    };
    let inserts = ids.iter().enumerate().map(|(i, id)| {
        let mut j = job(id, "s", None, 0);
        j.payload = bytes(i);
        async move { store.insert(&j).await }
    });
    for done in futures_util::future::join_all(inserts).await {
        done.expect("insert");
    }
    let starts = ids.iter().map(|id| start(store, id, 1, "n1"));
    assert!(
        futures_util::future::join_all(starts)
            .await
            .into_iter()
            .all(|s| s)
    );
    let ends = ids.iter().enumerate().map(|(i, id)| {
        let c = Change {
            attempt: Some(1),
            owner: Some(None),
            lease_until_ms: Some(None),
            finished_ms: Some(Some(3_000)),
            ..Change::new(id, &[JobState::Running], JobState::Succeeded, 3_000)
        };
        let data = bytes(i + 1);
        async move {
            store
                .finish(
                    &c,
                    Some((&data, Some("application/octet-stream"))),
                    &lines(1, 1, 2),
                )
                .await
        }
    });
    for applied in futures_util::future::join_all(ends).await {
        assert!(applied.expect("finish"));
    }
    for (i, id) in ids.iter().enumerate() {
        let j = get(store, id).await;
        assert_eq!(j.payload, bytes(i), "{id}");
        assert_eq!(j.view.state, JobState::Succeeded, "{id}");
        assert_eq!(j.view.result_len, Some(256), "{id}");
        assert_eq!(
            store.result(id).await.expect("result"),
            Some((bytes(i + 1), Some("application/octet-stream".into()))),
            "{id}"
        );
        assert_eq!(store.log_after(id, 0, 100).await.expect("log").len(), 2);
    }
}

pub(super) async fn finish_is_one_fenced_write(store: &JobStore) {
    store
        .insert(&job("j1", "s", None, 0))
        .await
        .expect("insert");
    assert!(start(store, "j1", 1, "n1").await);
    let end = |attempt| Change {
        attempt: Some(attempt),
        owner: Some(None),
        lease_until_ms: Some(None),
        finished_ms: Some(Some(3_000)),
        ..Change::new("j1", &[JobState::Running], JobState::Succeeded, 3_000)
    };
    // An old attempt's end: nothing but its log lines is written.
    let late = end(2);
    let applied = store
        .finish(&late, Some((b"late", None)), &lines(2, 1, 2))
        .await
        .expect("finish");
    assert!(!applied);
    let j = get(store, "j1").await;
    assert_eq!((j.view.state, j.view.result_len), (JobState::Running, None));
    assert_eq!(store.result("j1").await.expect("result"), None);
    assert_eq!(store.log_after("j1", 0, 100).await.expect("log").len(), 2);
    // The attempt's own end: state, result and lines together.
    let applied = store
        .finish(
            &end(1),
            Some((b"done", Some("text/plain"))),
            &lines(1, 3, 3),
        )
        .await
        .expect("finish");
    assert!(applied);
    let j = get(store, "j1").await;
    assert_eq!(j.view.state, JobState::Succeeded);
    assert_eq!(
        (j.view.finished_ms, j.view.result_len),
        (Some(3_000), Some(4))
    );
    assert_eq!(
        store.result("j1").await.expect("result"),
        Some((b"done".to_vec(), Some("text/plain".into())))
    );
    assert_eq!(store.log_after("j1", 0, 100).await.expect("log").len(), 5);
    assert_eq!(
        j.view.history.last().map(|t| t.state),
        Some(JobState::Succeeded)
    );
    // Without a result (a failure with no output), none is stored.
    store
        .insert(&job("j2", "s", None, 0))
        .await
        .expect("insert");
    assert!(start(store, "j2", 1, "n1").await);
    let failed = Change {
        attempt: Some(1),
        error: Some(Some("exit status 1".into())),
        ..Change::new("j2", &[JobState::Running], JobState::Failed, 3_000)
    };
    assert!(store.finish(&failed, None, &[]).await.expect("finish"));
    let j = get(store, "j2").await;
    assert_eq!((j.view.state, j.view.result_len), (JobState::Failed, None));
    assert_eq!(j.view.error.as_deref(), Some("exit status 1"));
}

/// Writes that arrive together share a transaction: every one is
/// acknowledged, a bad one (a duplicate id) fails alone, and a change
/// that does not apply stays `false` inside a batch.
pub(super) async fn group_commit_keeps_each_answer(store: &JobStore) {
    store
        .insert(&job("dup", "s", None, 0))
        .await
        .expect("insert");
    let mut occupied = job("occ", "s", None, 0);
    occupied.state = JobState::Occupied;
    occupied.note = Some("no free slot".into());
    let mut tasks = Vec::new();
    for i in 0..300 {
        let store = store.clone();
        let new = match i {
            150 => job("dup", "s", None, 0),
            151 => occupied.clone(),
            _ => job(&format!("g{i:03}"), "s", None, 0),
        };
        tasks.push(tokio::spawn(async move {
            let inserted = store.insert(&new).await.is_ok();
            // A change from a state the job is not in: never applies.
            let c = Change::new(&new.id, &[JobState::Running], JobState::Failed, 2_000);
            let wrong = store.change(&c).await.expect("change");
            (new, inserted, wrong)
        }));
    }
    for t in tasks {
        let (new, inserted, wrong) = t.await.expect("task");
        assert!(!wrong, "{}: a change from running applied", new.id);
        assert_eq!(inserted, new.id != "dup", "{}", new.id);
        if new.id != "dup" {
            assert_eq!(get(store, &new.id).await, new.stored(), "{}", new.id);
        }
    }
    let page = store
        .list(&JobFilter {
            limit: Some(1_000),
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(page.jobs.len(), 300, "299 new and the first dup");
}

/// Many jobs' claims, node records and ends arriving together (merged
/// into one statement per shape inside a group) answer as if written one
/// by one: a late end writes only its lines, a cancel racing an end
/// applies exactly when the end does not, and every job's history, log
/// and result come out whole and in order.
pub(super) async fn merged_writes_answer_one_by_one(store: &JobStore) {
    const JOBS: usize = 120;
    let mut tasks = Vec::new();
    for i in 0..JOBS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("m{i:03}");
            store.insert(&job(&id, "s", None, 0)).await.expect("insert");
            let claim = Change {
                attempt: Some(0),
                new_attempt: Some(1),
                owner: Some(Some("gw1".into())),
                lease_until_ms: Some(Some(9_000)),
                started_ms: Some(Some(2_000)),
                clear_result: true,
                ..Change::new(&id, &[JobState::Waiting], JobState::Running, 2_000)
            };
            assert!(store.change(&claim).await.expect("claim"), "{id}");
            // A second claim of the same attempt never applies.
            assert!(!store.change(&claim).await.expect("claim"), "{id}");
            let on_node = Change {
                attempt: Some(1),
                node: Some(Some(format!("n{}", i % 4))),
                note: Some("on node".into()),
                ..Change::new(&id, &[JobState::Running], JobState::Running, 2_500)
            };
            assert!(store.change(&on_node).await.expect("node"), "{id}");
            let end = |attempt| Change {
                attempt: Some(attempt),
                owner: Some(None),
                lease_until_ms: Some(None),
                finished_ms: Some(Some(3_000)),
                ..Change::new(&id, &[JobState::Running], JobState::Succeeded, 3_000)
            };
            if i % 3 == 0 {
                let late = store
                    .finish(&end(2), Some((b"late", None)), &lines(2, 0, 2))
                    .await;
                assert!(!late.expect("late end"), "{id}");
            }
            let result = format!("r{i}");
            let lines = lines(1, 10, 1 + i % 3);
            let cancel = Change {
                finished_ms: Some(Some(3_100)),
                ..Change::new(
                    &id,
                    &[JobState::Waiting, JobState::Running],
                    JobState::Cancelled,
                    3_100,
                )
            };
            let (ended, cancelled) = if i % 5 == 0 {
                let end = end(1);
                let (ended, cancelled) = tokio::join!(
                    store.finish(&end, Some((result.as_bytes(), Some("text/plain"))), &lines),
                    store.change(&cancel)
                );
                (ended.expect("end"), cancelled.expect("cancel"))
            } else {
                let ended = store
                    .finish(
                        &end(1),
                        Some((result.as_bytes(), Some("text/plain"))),
                        &lines,
                    )
                    .await;
                (ended.expect("end"), false)
            };
            assert!(
                ended != cancelled,
                "{id}: exactly one of end and cancel applies"
            );
            (id, i, ended, result, lines.len())
        }));
    }
    for t in tasks {
        let (id, i, ended, result, own_lines) = t.await.expect("task");
        let j = get(store, &id).await;
        let late_lines = if i % 3 == 0 { 2 } else { 0 };
        let log = store.log_after(&id, 0, 100).await.expect("log");
        let seqs: Vec<u64> = log.iter().map(|l| l.seq).collect();
        let want_lines = late_lines + if ended { own_lines } else { 0 };
        assert_eq!(seqs, (1..=want_lines as u64).collect::<Vec<_>>(), "{id}");
        assert_eq!(
            j.view.node.as_deref(),
            Some(format!("n{}", i % 4).as_str()),
            "{id}"
        );
        let states: Vec<JobState> = j.view.history.iter().map(|t| t.state).collect();
        let last = if ended {
            JobState::Succeeded
        } else {
            JobState::Cancelled
        };
        assert_eq!(
            states,
            [
                JobState::Waiting,
                JobState::Running,
                JobState::Running,
                last
            ],
            "{id}"
        );
        assert_eq!(j.view.state, last, "{id}");
        if ended {
            assert_eq!(j.view.result_len, Some(result.len() as u64), "{id}");
            assert_eq!(
                store.result(&id).await.expect("result"),
                Some((result.into_bytes(), Some("text/plain".into()))),
                "{id}"
            );
            assert_eq!((j.owner, j.lease_until_ms), (None, None), "{id}");
        } else {
            assert_eq!(j.view.result_len, None, "{id}");
            assert_eq!(store.result(&id).await.expect("result"), None, "{id}");
        }
    }
}
