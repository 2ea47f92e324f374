//! Multi-row writes, so that a group's statements do not grow with its
//! writes: the fenced changes of many jobs in one
//! `UPDATE jobs ... FROM (...) AS v` per [`Shape`], and their
//! transitions, log lines and results in one multi-row `INSERT` each.
//!
//! On SQLite `v` and the inserted rows are a [`Sql::json_rows`] table, one
//! argument whatever the rows; on PostgreSQL they are `VALUES` lists
//! ([`values`]). Both name `v`'s columns `column1`, `column2`, ... and take
//! `UPDATE ... FROM ... RETURNING` (SQLite since 3.35), so the fence and
//! what it returns are one text for both.

use std::collections::HashMap;

use protocol::JobState;
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::rows::{Reader, opt_i64, to_i64};
use super::sql::Column::Next;
use super::sql::Field::{Bytes, Int, Text};
use super::sql::{Dialect, Script, Sql, hex_of};
use super::{Change, LogLine, NewJob, StoreError};

pub(super) mod values;

/// A transition row to insert (`job_transitions`).
#[derive(Debug)]
pub(super) struct TransitionRow {
    job_id: String,
    seq: i64,
    state: &'static str,
    at_ms: i64,
    attempt: i64,
    node: Option<String>,
    note: Option<String>,
}

impl TransitionRow {
    /// The row of change `c` once applied: the job's transition `seq`,
    /// attempt and node after it.
    ///
    /// # Errors
    /// [`StoreError::OutOfRange`] when `c.at_ms` is past `i64`.
    pub(super) fn of(
        c: &Change,
        seq: i64,
        attempt: i64,
        node: Option<String>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            job_id: c.id.clone(),
            seq,
            state: c.to.as_str(),
            at_ms: to_i64("at_ms", c.at_ms)?,
            attempt,
            node,
            note: c.note.clone(),
        })
    }

    /// The first transition of `job`: seq 1, its state at its
    /// `created_ms`, attempt 0, its note.
    ///
    /// # Errors
    /// [`StoreError::OutOfRange`] when `job.created_ms` is past `i64`.
    pub(super) fn first(job: &NewJob) -> Result<Self, StoreError> {
        Ok(Self {
            job_id: job.id.clone(),
            seq: 1,
            state: job.state.as_str(),
            at_ms: to_i64("created_ms", job.created_ms)?,
            attempt: 0,
            node: None,
            note: job.note.clone(),
        })
    }
}

/// Inserts `rows` on `conn` (inside the caller's transaction).
pub(super) async fn insert_transitions_on(
    conn: &mut AnyConnection,
    rows: &[TransitionRow],
) -> Result<(), StoreError> {
    let mut script = Script::each(Dialect::of(conn));
    insert_transitions(&mut script, rows);
    script.run(conn).await?;
    Ok(())
}

/// Adds the insert of `rows` to `script`: one `INSERT ... SELECT` from
/// their [`Sql::json_rows`], whatever their number.
pub(super) fn insert_transitions(script: &mut Script, rows: &[TransitionRow]) {
    if script.dialect() == Dialect::Postgres {
        return values::insert_transitions(script, rows);
    }
    if rows.is_empty() {
        return;
    }
    let values = rows
        .iter()
        .map(|r| json!([r.job_id, r.seq, r.state, r.at_ms, r.attempt, r.node, r.note]))
        .collect();
    script.select_rows(
        "INSERT INTO job_transitions (job_id, seq, state, at_ms, attempt, node, note) ",
        &[
            Next(Text),
            Next(Int),
            Next(Text),
            Next(Int),
            Next(Int),
            Next(Text),
            Next(Text),
        ],
        values,
    );
}

/// A log line to insert (`job_logs`), numbered.
#[derive(Debug)]
pub(super) struct LogRow {
    job_id: String,
    seq: i64,
    attempt: i64,
    ts_ms: i64,
    stream: &'static str,
    line: String,
}

impl LogRow {
    /// The rows of `lines` of job `id` whose last seq is `last` (the
    /// first is `last + 1 - lines.len()`).
    ///
    /// # Errors
    /// [`StoreError::OutOfRange`] for a seq or time past `i64`.
    pub(super) fn numbered(
        id: &str,
        last: u64,
        lines: &[LogLine],
    ) -> Result<Vec<Self>, StoreError> {
        let first = (last + 1).saturating_sub(lines.len() as u64);
        lines
            .iter()
            .enumerate()
            .map(|(i, (attempt, ts_ms, stream, line))| {
                Ok(Self {
                    job_id: id.to_owned(),
                    seq: to_i64("log seq", first + i as u64)?,
                    attempt: i64::from(*attempt),
                    ts_ms: to_i64("ts_ms", *ts_ms)?,
                    stream: stream.as_str(),
                    line: line.clone(),
                })
            })
            .collect()
    }
}

/// Adds the insert of `rows` to `script`: one `INSERT ... SELECT` from
/// their [`Sql::json_rows`].
pub(super) fn insert_logs(script: &mut Script, rows: &[LogRow]) {
    if script.dialect() == Dialect::Postgres {
        return values::insert_logs(script, rows);
    }
    if rows.is_empty() {
        return;
    }
    let values = rows
        .iter()
        .map(|r| json!([r.job_id, r.seq, r.attempt, r.ts_ms, r.stream, r.line]))
        .collect();
    script.select_rows(
        "INSERT INTO job_logs (job_id, seq, attempt, ts_ms, stream, line) ",
        &[
            Next(Text),
            Next(Int),
            Next(Int),
            Next(Int),
            Next(Text),
            Next(Text),
        ],
        values,
    );
}

/// A result to store: job id, bytes, media type.
pub(super) type ResultRow<'a> = (&'a str, &'a [u8], Option<&'a str>);

/// Adds to `script` the storing of `rows` (each replacing the job's
/// earlier result): one `INSERT ... SELECT ... ON CONFLICT` from their
/// [`Sql::json_rows`], the bytes as hex. The caller makes sure no job
/// appears twice.
pub(super) fn insert_results(script: &mut Script, rows: &[ResultRow<'_>]) {
    if script.dialect() == Dialect::Postgres {
        return values::insert_results(script, rows);
    }
    if rows.is_empty() {
        return;
    }
    let values = rows
        .iter()
        .map(|(id, data, content_type)| json!([id, hex_of(data), content_type]))
        .collect();
    script
        .select_rows(
            "INSERT INTO job_results (job_id, data, content_type) ",
            &[Next(Text), Next(Bytes), Next(Text)],
            values,
        )
        // SQLite reads an `ON` after a `SELECT`'s `FROM` as a join's
        // unless a `WHERE` comes between.
        .push(
            " WHERE true ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, \
             content_type = excluded.content_type",
        );
}

/// Adds to `script` the removal of the results of `ids`.
pub(super) fn delete_results(script: &mut Script, ids: &[&str]) {
    if script.dialect() == Dialect::Postgres {
        return values::delete_results(script, ids);
    }
    if ids.is_empty() {
        return;
    }
    let values = ids.iter().map(|id| json!([id])).collect();
    script
        .select_rows(
            "DELETE FROM job_results WHERE job_id IN (",
            &[Next(Text)],
            values,
        )
        .push(")");
}

/// What a fenced change sets and how it is fenced: changes of one shape
/// share one `UPDATE`. Each `bool` says the column is set (or, for
/// `fenced`, that the stored attempt must match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shape {
    from: Vec<JobState>,
    fenced: bool,
    attempt: bool,
    node: bool,
    owner: bool,
    error: bool,
    lease: bool,
    started: bool,
    finished: bool,
    clear_result: bool,
    result: bool,
    lines: bool,
}

/// One change to apply with others of its shape: the change, the result
/// it stores (bytes, media type) and the log lines it appends.
#[derive(Debug, Clone, Copy)]
pub(super) struct Merged<'a> {
    pub(super) change: &'a Change,
    pub(super) result: Option<(&'a [u8], Option<&'a str>)>,
    pub(super) lines: &'a [LogLine],
}

impl Merged<'_> {
    /// Its shape; `None` when it cannot share a statement: a change from
    /// no state (never applies), or one that both clears and stores a
    /// result.
    pub(super) fn shape(&self) -> Option<Shape> {
        let c = self.change;
        if c.from.is_empty() || (c.clear_result && self.result.is_some()) {
            return None;
        }
        Some(Shape {
            from: c.from.clone(),
            fenced: c.attempt.is_some(),
            attempt: c.new_attempt.is_some(),
            node: c.node.is_some(),
            owner: c.owner.is_some(),
            error: c.error.is_some(),
            lease: c.lease_until_ms.is_some(),
            started: c.started_ms.is_some(),
            finished: c.finished_ms.is_some(),
            clear_result: c.clear_result,
            result: self.result.is_some(),
            lines: !self.lines.is_empty(),
        })
    }
}

/// What an applied change left: its transition and the job's last log
/// seq after it.
#[derive(Debug)]
pub(super) struct Applied {
    pub(super) transition: TransitionRow,
    pub(super) log_seq: u64,
}

/// Adds to `script` the changes `items`, all of `shape` and each of
/// another job: one `UPDATE ... RETURNING`, whatever their number. Read
/// what it returns with [`applied`].
///
/// # Errors
/// [`StoreError::OutOfRange`] for a value past `i64`.
pub(super) fn update_many(
    script: &mut Script,
    shape: &Shape,
    items: &[Merged<'_>],
) -> Result<(), StoreError> {
    if script.dialect() == Dialect::Postgres {
        return values::update_many(script, shape, items);
    }
    if items.is_empty() {
        return Ok(());
    }
    update_sql(script.statement(), shape, items)
}

/// The changes of `changes` that applied, by job id, from the rows their
/// [`update_many`] returned (a change whose job is missing or whose state
/// or attempt did not match wrote nothing and returned no row).
///
/// # Errors
/// [`StoreError::Corrupt`]: a row that cannot be read, or of a job not in
/// `changes`.
pub(super) fn applied(
    rows: &[AnyRow],
    changes: &HashMap<&str, &Change>,
) -> Result<HashMap<String, Applied>, StoreError> {
    let mut applied = HashMap::with_capacity(rows.len());
    for row in rows {
        let r = Reader::new(row, "id");
        let id = r.text("id")?;
        let Some(c) = changes.get(id.as_str()) else {
            return Err(r.corrupt("an update returned a job it was not given"));
        };
        let transition = TransitionRow::of(
            c,
            r.i64("trans_seq")?,
            r.i64("attempt")?,
            r.opt_text("node")?,
        )?;
        let log_seq = r.u64("log_seq")?;
        applied.insert(
            id,
            Applied {
                transition,
                log_seq,
            },
        );
    }
    Ok(applied)
}

/// Writes into `sql` the `UPDATE` of `items` (all of `shape`): each
/// change a row of a [`Sql::json_rows`] table `v` (id, new state, then
/// the columns the shape sets, in [`Shape`]'s order, then the attempt it
/// is fenced on), the fence in its `WHERE`.
fn update_sql(sql: &mut Sql, shape: &Shape, items: &[Merged<'_>]) -> Result<(), StoreError> {
    // Which column of `v` holds what: 1 the id, 2 the new state.
    let mut set = vec![
        "state = v.column2".to_owned(),
        "trans_seq = jobs.trans_seq + 1".to_owned(),
    ];
    let mut columns = vec![Next(Text), Next(Text)];
    let mut column = |name: &str, on: bool, kind, assign: &dyn Fn(usize) -> String| {
        if on {
            columns.push(Next(kind));
            set.push(format!("{name} = {}", assign(columns.len())));
        }
    };
    let plain = |n: usize| format!("v.column{n}");
    column("attempt", shape.attempt, Int, &plain);
    column("node", shape.node, Text, &plain);
    column("owner", shape.owner, Text, &plain);
    column("error", shape.error, Text, &plain);
    column("lease_until_ms", shape.lease, Int, &plain);
    column("started_ms", shape.started, Int, &plain);
    column("finished_ms", shape.finished, Int, &plain);
    column("result_len", shape.result, Int, &plain);
    column("log_seq", shape.lines, Int, &|n| {
        format!("jobs.log_seq + v.column{n}")
    });
    if shape.fenced {
        columns.push(Next(Int));
    }
    let fence = shape.fenced.then_some(columns.len());
    if shape.clear_result {
        set.push("result_len = NULL".to_owned());
    }
    let mut rows = Vec::with_capacity(items.len());
    for m in items {
        let c = m.change;
        let mut row = vec![json!(c.id), json!(c.to.as_str())];
        let mut value = |v: Option<serde_json::Value>| row.extend(v);
        value(c.new_attempt.map(|a| json!(a)));
        value(c.node.as_ref().map(|v| json!(v)));
        value(c.owner.as_ref().map(|v| json!(v)));
        value(c.error.as_ref().map(|v| json!(v)));
        let ms = |what, v: Option<Option<u64>>| -> Result<_, StoreError> {
            Ok(v.map(|v| opt_i64(what, v)).transpose()?.map(|v| json!(v)))
        };
        value(ms("lease_until_ms", c.lease_until_ms)?);
        value(ms("started_ms", c.started_ms)?);
        value(ms("finished_ms", c.finished_ms)?);
        let result_len = m
            .result
            .map(|(data, _)| to_i64("result length", data.len() as u64));
        value(result_len.transpose()?.map(|n| json!(n)));
        let lines = (!m.lines.is_empty()).then(|| to_i64("log lines", m.lines.len() as u64));
        value(lines.transpose()?.map(|n| json!(n)));
        value(c.attempt.map(|a| json!(a)));
        rows.push(serde_json::Value::Array(row));
    }
    sql.push("UPDATE jobs SET ")
        .push(&set.join(", "))
        .push(" FROM (");
    sql.select_named(&columns).push(" FROM ").json_rows(rows);
    sql.push(") AS v");
    where_and_returning(sql, shape, fence);
    Ok(())
}

/// Ends a merged `UPDATE ... FROM (...) AS v`: its fence (the job by
/// `v.column1`, in one of the shape's `from` states, at the attempt in
/// `v.column{fence}` when fenced) and what it returns for [`applied`].
fn where_and_returning(sql: &mut Sql, shape: &Shape, fence: Option<usize>) {
    // `state || ''`, not `state`: an expression keeps SQLite (without
    // statistics) from scanning the jobs in the `from` states through
    // their index instead of looking each job up by its id.
    sql.push(" WHERE jobs.id = v.column1 AND jobs.state || '' IN ")
        .list(shape.from.iter().map(|s| s.as_str()));
    if let Some(n) = fence {
        sql.push(&format!(" AND jobs.attempt = v.column{n}"));
    }
    sql.push(
        " RETURNING jobs.id AS id, jobs.trans_seq AS trans_seq, jobs.attempt AS attempt, \
         jobs.node AS node, jobs.log_seq AS log_seq",
    );
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;
    use crate::jobs::store::JobStore;

    /// A group's texts are the same for one row as for many, on either
    /// database, so they stay prepared: sqlx keeps statements by text.
    #[test]
    fn texts_do_not_grow_with_rows() {
        let texts = |dialect: Dialect, n: usize| -> Vec<String> {
            let ids: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
            let jobs: Vec<crate::jobs::store::NewJob> = ids
                .iter()
                .map(|id| crate::jobs::store::NewJob {
                    id: id.clone(),
                    service: "s".into(),
                    template: None,
                    state: JobState::Waiting,
                    tenant: Some("t".into()),
                    priority: 0,
                    realtime: false,
                    watchdog_s: 60,
                    max_attempts: 3,
                    idempotent: true,
                    created_ms: 9,
                    payload: vec![0, 255],
                    hints: std::collections::BTreeMap::new(),
                    labels: std::collections::BTreeMap::new(),
                    note: None,
                    request_id: None,
                })
                .collect();
            let changes: Vec<Change> = ids
                .iter()
                .map(|id| {
                    let mut c = Change::new(id, &[JobState::Running], JobState::Succeeded, 9);
                    c.attempt = Some(1);
                    c.finished_ms = Some(Some(9));
                    c
                })
                .collect();
            let lines = [(1, 9, protocol::LogStream::Stdout, "x".to_owned())];
            let merged: Vec<Merged<'_>> = changes
                .iter()
                .map(|change| Merged {
                    change,
                    result: Some((b"r".as_slice(), None)),
                    lines: &lines,
                })
                .collect();
            let shape = merged[0].shape().expect("a shape");
            let transitions: Vec<TransitionRow> = changes
                .iter()
                .map(|c| TransitionRow::of(c, 2, 1, None).expect("row"))
                .collect();
            let logs: Vec<LogRow> = ids
                .iter()
                .flat_map(|id| LogRow::numbered(id, 1, &lines).expect("rows"))
                .collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let results: Vec<ResultRow<'_>> =
                refs.iter().map(|id| (*id, b"r".as_slice(), None)).collect();
            let mut script = Script::new(dialect);
            let job_refs: Vec<_> = jobs.iter().collect();
            crate::jobs::store::write::insert_jobs(&mut script, &job_refs).expect("jobs");
            update_many(&mut script, &shape, &merged).expect("update");
            delete_results(&mut script, &refs);
            insert_results(&mut script, &results);
            insert_transitions(&mut script, &transitions);
            insert_logs(&mut script, &logs);
            script.texts().into_iter().map(str::to_owned).collect()
        };
        let one = texts(Dialect::Sqlite, 1);
        assert!(!one.is_empty());
        assert_eq!(one, texts(Dialect::Sqlite, 300));
        assert_ne!(texts(Dialect::Postgres, 1), texts(Dialect::Postgres, 2));
    }

    /// The merged `UPDATE` finds each job by its id, never by scanning
    /// the jobs in its `from` states (SQLite, no statistics: a scan made
    /// every group's update cost the whole queue).
    #[tokio::test]
    async fn merged_update_looks_jobs_up_by_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = JobStore::sqlite_url(&dir.path().join("jobs.db"));
        let store = JobStore::open(&url, 1).await.expect("open");
        let mut claim = Change::new("a", &[JobState::Waiting], JobState::Running, 5);
        claim.attempt = Some(0);
        claim.new_attempt = Some(1);
        claim.owner = Some(Some("gw".into()));
        claim.clear_result = true;
        let mut other = claim.clone();
        other.id = "b".into();
        let merged = [&claim, &other].map(|change| Merged {
            change,
            result: None,
            lines: &[],
        });
        let shape = merged[0].shape().expect("a shape");
        assert_eq!(merged[1].shape(), Some(shape.clone()));
        let mut sql = Sql::new("EXPLAIN QUERY PLAN ");
        update_sql(&mut sql, &shape, &merged).expect("sql");
        let plan: Vec<String> = sql
            .query()
            .fetch_all(&store.write)
            .await
            .expect("explain")
            .iter()
            .map(|row| row.try_get::<String, _>(3).expect("detail"))
            .collect();
        assert!(
            plan.iter()
                .any(|step| step
                    .starts_with("SEARCH jobs USING INDEX sqlite_autoindex_jobs_1 (id=?)")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("(state=?")),
            "{plan:?}"
        );
    }
}
