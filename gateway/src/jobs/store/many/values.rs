//! PostgreSQL's texts of a group's writes: multi-row `VALUES` lists, one
//! argument per value. Measured against one JSON argument per statement
//! (SQLite's texts, `many`), these made more submits per second on
//! PostgreSQL, though their texts change with their rows; a statement's
//! rows are bounded, so its arguments stay under PostgreSQL's 65 535.

use super::super::rows::{flag, opt_i64, to_i64, to_json};
use super::super::sql::{Arg, IDS_PER_STATEMENT, Script, Sql};
use super::super::{NewJob, StoreError};
use super::{LogRow, Merged, ResultRow, Shape, TransitionRow, where_and_returning};

/// Jobs per multi-row `INSERT` (16 arguments each).
const JOBS_PER_INSERT: usize = 200;
/// Rows per multi-row `INSERT` of transitions (7 arguments each).
const TRANSITIONS_PER_INSERT: usize = 100;
/// Rows per multi-row `INSERT` of log lines (6 arguments each).
const LOG_ROWS_PER_INSERT: usize = 100;
/// Rows per multi-row `INSERT` of results (3 arguments each).
const RESULTS_PER_INSERT: usize = 100;
/// Changes per multi-row `UPDATE` (at most 13 arguments each).
const CHANGES_PER_UPDATE: usize = 200;

/// Adds to `script` the insert of every job of `jobs` (not their first
/// transitions: [`TransitionRow::first`]): one multi-row `INSERT` per
/// [`JOBS_PER_INSERT`] jobs.
///
/// # Errors
/// [`StoreError::OutOfRange`] for a time past `i64`.
pub(in super::super) fn insert_jobs(
    script: &mut Script,
    jobs: &[&NewJob],
) -> Result<(), StoreError> {
    let text = |v: Option<&str>| Arg::Text(v.map(str::to_owned));
    for chunk in jobs.chunks(JOBS_PER_INSERT) {
        let sql = script.statement();
        sql.push(
            "INSERT INTO jobs (id, service, template, state, tenant, priority, realtime, \
             watchdog_s, attempt, max_attempts, idempotent, created_ms, finished_ms, payload, \
             hints, labels, request_id, trans_seq, log_seq) VALUES ",
        );
        for (i, job) in chunk.iter().enumerate() {
            let created = to_i64("created_ms", job.created_ms)?;
            let finished = job.state.is_final().then_some(created);
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(")
                .arg(text(Some(&job.id)))
                .push(", ")
                .arg(text(Some(&job.service)))
                .push(", ")
                .arg(text(job.template.as_deref()))
                .push(", ")
                .arg(text(Some(job.state.as_str())))
                .push(", ")
                .arg(text(job.tenant.as_deref()))
                .push(", ")
                .arg(Arg::Int(Some(i64::from(job.priority))))
                .push(", ")
                .arg(Arg::Int(Some(flag(job.realtime))))
                .push(", ")
                .arg(Arg::Int(Some(i64::from(job.watchdog_s))))
                .push(", 0, ")
                .arg(Arg::Int(Some(i64::from(job.max_attempts))))
                .push(", ")
                .arg(Arg::Int(Some(flag(job.idempotent))))
                .push(", ")
                .arg(Arg::Int(Some(created)))
                .push(", ")
                .arg(Arg::Int(finished))
                .push(", ")
                .arg(Arg::Bytes(job.payload.clone()))
                .push(", ")
                .arg(text(Some(&to_json(&job.hints))))
                .push(", ")
                .arg(text(Some(&to_json(&job.labels))))
                .push(", ")
                .arg(text(job.request_id.as_deref()))
                .push(", 1, 0)");
        }
    }
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
        sql.rows(chunk.iter().map(|r| {
            [
                Arg::Text(Some(r.job_id.clone())),
                Arg::Int(Some(r.seq)),
                Arg::Text(Some(r.state.to_string())),
                Arg::Int(Some(r.at_ms)),
                Arg::Int(Some(r.attempt)),
                Arg::Text(r.node.clone()),
                Arg::Text(r.note.clone()),
            ]
        }));
    }
}

/// Adds the insert of `rows` to `script`: one multi-row `INSERT` per
/// [`LOG_ROWS_PER_INSERT`].
pub(super) fn insert_logs(script: &mut Script, rows: &[LogRow]) {
    for chunk in rows.chunks(LOG_ROWS_PER_INSERT) {
        let sql = script.statement();
        sql.push("INSERT INTO job_logs (job_id, seq, attempt, ts_ms, stream, line) VALUES ");
        sql.rows(chunk.iter().map(|r| {
            [
                Arg::Text(Some(r.job_id.clone())),
                Arg::Int(Some(r.seq)),
                Arg::Int(Some(r.attempt)),
                Arg::Int(Some(r.ts_ms)),
                Arg::Text(Some(r.stream.to_string())),
                Arg::Text(Some(r.line.clone())),
            ]
        }));
    }
}

/// Adds to `script` the storing of `rows` (each replacing the job's
/// earlier result): one multi-row `INSERT ... ON CONFLICT` per
/// [`RESULTS_PER_INSERT`]. The caller makes sure no job appears twice.
pub(super) fn insert_results(script: &mut Script, rows: &[ResultRow<'_>]) {
    for chunk in rows.chunks(RESULTS_PER_INSERT) {
        let sql = script.statement();
        sql.push("INSERT INTO job_results (job_id, data, content_type) VALUES ");
        sql.rows(chunk.iter().map(|(id, data, content_type)| {
            [
                Arg::Text(Some((*id).to_owned())),
                Arg::Bytes(data.to_vec()),
                Arg::Text(content_type.map(str::to_owned)),
            ]
        }));
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

/// Adds to `script` the changes `items`, all of `shape` and each of
/// another job: one `UPDATE ... RETURNING` per [`CHANGES_PER_UPDATE`].
/// Read what they return with [`applied`](super::applied).
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
    sql.push(") AS v");
    where_and_returning(sql, shape, fence);
    Ok(())
}
