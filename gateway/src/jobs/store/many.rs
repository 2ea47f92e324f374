//! Multi-row writes, so that a group's statements do not grow with its
//! writes: the fenced changes of many jobs in one
//! `UPDATE jobs ... FROM (VALUES ...)` per [`Shape`], and their
//! transitions, log lines and results in one multi-row `INSERT` each.
//!
//! Both databases name a `VALUES` list's columns `column1`,
//! `column2`, ... and take `UPDATE ... FROM ... RETURNING` (SQLite since
//! 3.35), so one text serves both.

use std::collections::HashMap;

use protocol::JobState;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::rows::{Reader, opt_i64, to_i64};
use super::sql::{Arg, IDS_PER_STATEMENT, Script, Sql};
use super::{Change, LogLine, StoreError};

/// Rows per multi-row `INSERT` of transitions (7 arguments each).
const TRANSITIONS_PER_INSERT: usize = 100;
/// Rows per multi-row `INSERT` of log lines (6 arguments each).
const LOG_ROWS_PER_INSERT: usize = 100;
/// Rows per multi-row `INSERT` of results (3 arguments each).
const RESULTS_PER_INSERT: usize = 100;
/// Changes per multi-row `UPDATE` (at most 13 arguments each).
const CHANGES_PER_UPDATE: usize = 200;

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
}

/// Inserts `rows` on `conn` (inside the caller's transaction).
pub(super) async fn insert_transitions_on(
    conn: &mut AnyConnection,
    rows: &[TransitionRow],
) -> Result<(), StoreError> {
    let mut script = Script::each();
    insert_transitions(&mut script, rows);
    script.run(conn).await?;
    Ok(())
}

/// Adds the insert of `rows` to `script`: one multi-row `INSERT` per
/// [`TRANSITIONS_PER_INSERT`].
pub(super) fn insert_transitions(script: &mut Script, rows: &[TransitionRow]) {
    for chunk in rows.chunks(TRANSITIONS_PER_INSERT) {
        let sql = script.statement();
        sql.push(
            "INSERT INTO job_transitions (job_id, seq, state, at_ms, attempt, node, note) VALUES ",
        );
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.row([
                Arg::Text(Some(r.job_id.clone())),
                Arg::Int(Some(r.seq)),
                Arg::Text(Some(r.state.to_string())),
                Arg::Int(Some(r.at_ms)),
                Arg::Int(Some(r.attempt)),
                Arg::Text(r.node.clone()),
                Arg::Text(r.note.clone()),
            ]);
        }
    }
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

/// Adds the insert of `rows` to `script`: one multi-row `INSERT` per
/// [`LOG_ROWS_PER_INSERT`].
pub(super) fn insert_logs(script: &mut Script, rows: &[LogRow]) {
    for chunk in rows.chunks(LOG_ROWS_PER_INSERT) {
        let sql = script.statement();
        sql.push("INSERT INTO job_logs (job_id, seq, attempt, ts_ms, stream, line) VALUES ");
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.row([
                Arg::Text(Some(r.job_id.clone())),
                Arg::Int(Some(r.seq)),
                Arg::Int(Some(r.attempt)),
                Arg::Int(Some(r.ts_ms)),
                Arg::Text(Some(r.stream.to_string())),
                Arg::Text(Some(r.line.clone())),
            ]);
        }
    }
}

/// A result to store: job id, bytes, media type.
pub(super) type ResultRow<'a> = (&'a str, &'a [u8], Option<&'a str>);

/// Adds to `script` the storing of `rows` (each replacing the job's
/// earlier result): one multi-row `INSERT ... ON CONFLICT` per
/// [`RESULTS_PER_INSERT`]. The caller makes sure no job appears twice.
pub(super) fn insert_results(script: &mut Script, rows: &[ResultRow<'_>]) {
    for chunk in rows.chunks(RESULTS_PER_INSERT) {
        let sql = script.statement();
        sql.push("INSERT INTO job_results (job_id, data, content_type) VALUES ");
        for (i, (id, data, content_type)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.row([
                Arg::Text(Some((*id).to_owned())),
                Arg::Bytes(data.to_vec()),
                Arg::Text(content_type.map(str::to_owned)),
            ]);
        }
        sql.push(
            " ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, \
             content_type = excluded.content_type",
        );
    }
}

/// Adds to `script` the removal of the results of `ids`.
pub(super) fn delete_results(script: &mut Script, ids: &[&str]) {
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        script
            .statement()
            .push("DELETE FROM job_results WHERE job_id IN ")
            .list(chunk.iter().copied());
    }
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
/// another job: one `UPDATE ... RETURNING` per [`CHANGES_PER_UPDATE`].
/// Read what they return with [`applied`].
///
/// # Errors
/// [`StoreError::OutOfRange`] for a value past `i64`.
pub(super) fn update_many(
    script: &mut Script,
    shape: &Shape,
    items: &[Merged<'_>],
) -> Result<(), StoreError> {
    for chunk in items.chunks(CHANGES_PER_UPDATE) {
        update_sql(script.statement(), shape, chunk)?;
    }
    Ok(())
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

/// Writes into `sql` the `UPDATE` of `chunk` (all of `shape`): each
/// change a row of the `VALUES` list (id, new state, then the columns the
/// shape sets, in [`Shape`]'s order), the fence in its `WHERE`.
fn update_sql(sql: &mut Sql, shape: &Shape, chunk: &[Merged<'_>]) -> Result<(), StoreError> {
    // Which `VALUES` column holds what: 1 the id, 2 the new state.
    let mut set = vec![
        "state = v.column2".to_owned(),
        "trans_seq = jobs.trans_seq + 1".to_owned(),
    ];
    let mut next = 3;
    let mut column =
        |name: &str, set: &mut Vec<String>, on: bool, assign: &dyn Fn(usize) -> String| {
            if on {
                set.push(format!("{name} = {}", assign(next)));
                next += 1;
            }
        };
    let plain = |n: usize| format!("v.column{n}");
    column("attempt", &mut set, shape.attempt, &plain);
    column("node", &mut set, shape.node, &plain);
    column("owner", &mut set, shape.owner, &plain);
    column("error", &mut set, shape.error, &plain);
    column("lease_until_ms", &mut set, shape.lease, &plain);
    column("started_ms", &mut set, shape.started, &plain);
    column("finished_ms", &mut set, shape.finished, &plain);
    column("result_len", &mut set, shape.result, &plain);
    column("log_seq", &mut set, shape.lines, &|n| {
        format!("jobs.log_seq + v.column{n}")
    });
    let fence = shape.fenced.then_some(next);
    if shape.clear_result {
        set.push("result_len = NULL".to_owned());
    }
    sql.push("UPDATE jobs SET ")
        .push(&set.join(", "))
        .push(" FROM (VALUES ");
    for (i, m) in chunk.iter().enumerate() {
        let c = m.change;
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(")
            .arg(Arg::Text(Some(c.id.clone())))
            .push(", ")
            .arg(Arg::Text(Some(c.to.as_str().to_owned())));
        let mut value = |arg: Option<Arg>| {
            if let Some(arg) = arg {
                sql.push(", ").arg(arg);
            }
        };
        value(c.new_attempt.map(|a| Arg::Int(Some(i64::from(a)))));
        value(c.node.clone().map(Arg::Text));
        value(c.owner.clone().map(Arg::Text));
        value(c.error.clone().map(Arg::Text));
        value(
            c.lease_until_ms
                .map(|v| opt_i64("lease_until_ms", v))
                .transpose()?
                .map(Arg::Int),
        );
        value(
            c.started_ms
                .map(|v| opt_i64("started_ms", v))
                .transpose()?
                .map(Arg::Int),
        );
        value(
            c.finished_ms
                .map(|v| opt_i64("finished_ms", v))
                .transpose()?
                .map(Arg::Int),
        );
        let result_len = m
            .result
            .map(|(data, _)| to_i64("result length", data.len() as u64));
        value(result_len.transpose()?.map(|n| Arg::Int(Some(n))));
        let lines = (!m.lines.is_empty()).then(|| to_i64("log lines", m.lines.len() as u64));
        value(lines.transpose()?.map(|n| Arg::Int(Some(n))));
        value(c.attempt.map(|a| Arg::Int(Some(i64::from(a)))));
        sql.push(")");
    }
    // `state || ''`, not `state`: an expression keeps SQLite (without
    // statistics) from scanning the jobs in the `from` states through
    // their index instead of looking each job up by its id.
    sql.push(") AS v WHERE jobs.id = v.column1 AND jobs.state || '' IN ")
        .list(shape.from.iter().map(|s| s.as_str()));
    if let Some(n) = fence {
        sql.push(&format!(" AND jobs.attempt = v.column{n}"));
    }
    sql.push(
        " RETURNING jobs.id AS id, jobs.trans_seq AS trans_seq, jobs.attempt AS attempt, \
         jobs.node AS node, jobs.log_seq AS log_seq",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;
    use crate::jobs::store::JobStore;

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
