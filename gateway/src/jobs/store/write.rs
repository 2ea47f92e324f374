//! Writes: each in one transaction on the write pool; a job's own
//! writes (insert, change, finish, log lines) through the group-commit
//! writer (`batch`).

use serde_json::json;
use sqlx::AnyConnection;

use super::batch::{Write, Written};
use super::many::{LogRow, TransitionRow, insert_logs, insert_transitions, insert_transitions_on};
use super::rows::{Reader, flag, opt_i64, to_i64, to_json};
use super::sql::Column::{Constant, Next};
use super::sql::Field::{Bytes, Int, Text};
use super::sql::{Arg, Dialect, IDS_PER_STATEMENT, Script, Sql, final_states, hex_of};
use super::{Change, JobStore, LogLine, NewJob, StoreError};
use crate::config::TemplateConfig;
/// The tables of a job's transitions, log lines and result.
const CHILD_TABLES: [&str; 3] = ["job_logs", "job_transitions", "job_results"];

impl JobStore {
    /// Stores a new job and its first transition (its state at
    /// `created_ms`, attempt 0, `note`) in one transaction. A job created
    /// in a final state (`Occupied`) gets `finished_ms = created_ms`.
    /// Answers once committed (group commit: see `batch`).
    ///
    /// # Errors
    /// [`StoreError::Db`] (also when the id exists),
    /// [`StoreError::OutOfRange`], [`StoreError::Closed`].
    pub(crate) async fn insert(&self, job: &NewJob) -> Result<(), StoreError> {
        self.writer.write(Write::Insert(job.clone())).await?;
        Ok(())
    }

    /// Applies one fenced state change: a conditional `UPDATE` (the job in
    /// one of `c.from`, at `c.attempt` when given) and its transition row,
    /// in one transaction. `Ok(false)`, nothing written, when the job is
    /// missing or its state or attempt does not match.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::OutOfRange`], [`StoreError::Closed`].
    pub(crate) async fn change(&self, c: &Change) -> Result<bool, StoreError> {
        match self.writer.write(Write::Change(c.clone())).await? {
            Written::Applied(applied) => Ok(applied),
            other => Err(unexpected(other)),
        }
    }

    /// Stores the result of attempt `attempt` (its bytes and media type,
    /// replacing any earlier one) and its length, alone (the runner stores
    /// it with the attempt's end, [`JobStore::finish`]); `Ok(false)`, nothing
    /// written, when the job is missing or at another attempt.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    #[cfg(test)]
    pub(crate) async fn set_result(
        &self,
        id: &str,
        attempt: u32,
        data: &[u8],
        content_type: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        if !set_result_on(&mut tx, id, attempt, data, content_type).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Appends log lines `(attempt, ts_ms, stream, line)` (ts in ms since
    /// the Unix epoch), numbered from the job's last seq + 1 in one
    /// transaction. Returns the last seq written: the job's last seq when
    /// `lines` is empty, 0 (nothing written) when the job is missing.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::OutOfRange`], [`StoreError::Closed`].
    pub(crate) async fn append_log(&self, id: &str, lines: &[LogLine]) -> Result<u64, StoreError> {
        let write = Write::AppendLog {
            id: id.to_owned(),
            lines: lines.to_vec(),
        };
        match self.writer.write(write).await? {
            Written::LastSeq(last) => Ok(last),
            other => Err(unexpected(other)),
        }
    }

    /// Ends an attempt in one transaction: the fenced change `c` (to a
    /// final state, at `c.attempt`), the attempt's `result` (bytes and
    /// media type) when given, and its last log `lines`. `Ok(false)` when
    /// `c` does not apply (the job moved on): then only the log lines are
    /// written, as [`JobStore::append_log`] writes them.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::OutOfRange`], [`StoreError::Closed`].
    pub(crate) async fn finish(
        &self,
        c: &Change,
        result: Option<(&[u8], Option<&str>)>,
        lines: &[LogLine],
    ) -> Result<bool, StoreError> {
        let write = Write::Finish {
            change: c.clone(),
            result: result.map(|(data, kind)| (data.to_vec(), kind.map(str::to_owned))),
            lines: lines.to_vec(),
        };
        match self.writer.write(write).await? {
            Written::Applied(applied) => Ok(applied),
            other => Err(unexpected(other)),
        }
    }

    /// Removes a job, its transitions, log and result; `Ok(false)` when
    /// there was no such job.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub(crate) async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        // The job's row first: its lock (PostgreSQL) makes a concurrent
        // append or result wait, then find no job; one committed before
        // is seen by the deletes below.
        let deleted = sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for table in CHILD_TABLES {
            sqlx::query(&format!("DELETE FROM {table} WHERE job_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Sets `lease_until_ms` (ms since the Unix epoch) of those of `ids`
    /// that `owner` still holds, in one transaction.
    ///
    /// On PostgreSQL a job whose row another transaction holds (a group
    /// of writes changing it right now) is left to the next renewal
    /// (`FOR UPDATE SKIP LOCKED`): the renewal never waits for a row
    /// lock, so it cannot deadlock with a group that holds some of these
    /// jobs and waits for others (a deadlock costs PostgreSQL's
    /// `deadlock_timeout`, 1 s, and the group's retry one by one).
    /// Renewals come every third of the lease, so a job skipped once
    /// still has two before its lease runs out.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::OutOfRange`].
    pub(crate) async fn renew_leases(
        &self,
        owner: &str,
        ids: &[String],
        until_ms: u64,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let until = to_i64("lease_until_ms", until_ms)?;
        // SQLite has one writer at a time and no row locks.
        let lock = if self.backend == "postgres" {
            " FOR UPDATE SKIP LOCKED)"
        } else {
            ")"
        };
        let mut tx = self.write.begin().await?;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let mut sql = Sql::new("UPDATE jobs SET lease_until_ms = ");
            sql.arg(Arg::Int(Some(until)))
                .push(" WHERE id IN (SELECT id FROM jobs WHERE owner = ")
                .arg(Arg::Text(Some(owner.to_string())))
                .push(" AND id IN ")
                .list(chunk.iter().map(String::as_str))
                .push(lock);
            sql.query().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the jobs in a final state that finished before `cutoff_ms`
    /// (ms since the Unix epoch), with their transitions, logs and
    /// results; returns how many jobs.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::OutOfRange`].
    pub(crate) async fn purge_finished_before(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let cutoff = to_i64("cutoff_ms", cutoff_ms)?;
        let mut sql = Sql::new("DELETE FROM jobs WHERE finished_ms < ");
        sql.arg(Arg::Int(Some(cutoff)))
            .push(" AND state IN ")
            .list(final_states())
            .push(" RETURNING id");
        let mut tx = self.write.begin().await?;
        // The jobs' rows first (see `delete`), then what belongs to them.
        let rows = sql.query().fetch_all(&mut *tx).await?;
        let ids = rows
            .iter()
            .map(|row| Reader::new(row, "id").text("id"))
            .collect::<Result<Vec<_>, _>>()?;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            for table in CHILD_TABLES {
                let mut sql = Sql::new(&format!("DELETE FROM {table} WHERE job_id IN "));
                sql.list(chunk.iter().map(String::as_str));
                sql.query().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Creates or replaces template `name` (stored as JSON) at `now_ms`
    /// (ms since the Unix epoch).
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::OutOfRange`].
    pub(crate) async fn put_template(
        &self,
        name: &str,
        t: &TemplateConfig,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let json = serde_json::json!({
            "service": t.service,
            "payload": t.payload,
            "defaults": t.defaults,
            "watchdog_s": t.watchdog_s,
            "description": t.description,
        });
        sqlx::query(
            "INSERT INTO job_templates (name, config, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, \
             updated_ms = excluded.updated_ms",
        )
        .bind(name)
        .bind(json.to_string())
        .bind(to_i64("now_ms", now_ms)?)
        .execute(&self.write)
        .await?;
        Ok(())
    }
    /// Stores setting `name` = `value` at `now_ms` (ms since the Unix
    /// epoch), replacing any earlier value.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::OutOfRange`].
    pub(crate) async fn put_setting(
        &self,
        name: &str,
        value: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_settings (name, value, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, \
             updated_ms = excluded.updated_ms",
        )
        .bind(name)
        .bind(to_i64("value", value)?)
        .bind(to_i64("now_ms", now_ms)?)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}

/// [`JobStore::insert`] of every job of `jobs` on `conn` (inside the
/// caller's transaction).
pub(super) async fn insert_on(
    conn: &mut AnyConnection,
    jobs: &[&NewJob],
) -> Result<(), StoreError> {
    let mut script = Script::each(Dialect::of(conn));
    insert_jobs(&mut script, jobs)?;
    let firsts = jobs
        .iter()
        .copied()
        .map(TransitionRow::first)
        .collect::<Result<Vec<_>, _>>()?;
    insert_transitions(&mut script, &firsts);
    script.run(conn).await?;
    Ok(())
}

/// Adds to `script` the insert of every job of `jobs` (not their first
/// transitions: [`TransitionRow::first`]): one `INSERT ... SELECT` from
/// the jobs' [`Sql::json_rows`], whatever their number.
///
/// # Errors
/// [`StoreError::OutOfRange`] for a time past `i64`.
pub(super) fn insert_jobs(script: &mut Script, jobs: &[&NewJob]) -> Result<(), StoreError> {
    if script.dialect() == Dialect::Postgres {
        return super::many::values::insert_jobs(script, jobs);
    }
    if jobs.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(jobs.len());
    for job in jobs {
        let created = to_i64("created_ms", job.created_ms)?;
        let finished = job.state.is_final().then_some(created);
        rows.push(json!([
            job.id,
            job.service,
            job.template,
            job.state.as_str(),
            job.tenant,
            job.priority,
            flag(job.realtime),
            job.watchdog_s,
            job.max_attempts,
            flag(job.idempotent),
            created,
            finished,
            hex_of(&job.payload),
            to_json(&job.hints),
            to_json(&job.labels),
            job.request_id,
        ]));
    }
    script.select_rows(
        "INSERT INTO jobs (id, service, template, state, tenant, priority, realtime, \
             watchdog_s, attempt, max_attempts, idempotent, created_ms, finished_ms, payload, \
             hints, labels, request_id, trans_seq, log_seq) ",
        &[
            Next(Text),
            Next(Text),
            Next(Text),
            Next(Text),
            Next(Text),
            Next(Int),
            Next(Int),
            Next(Int),
            Constant("0"),
            Next(Int),
            Next(Int),
            Next(Int),
            Next(Int),
            Next(Bytes),
            Next(Text),
            Next(Text),
            Next(Text),
            Constant("1"),
            Constant("0"),
        ],
        rows,
    );
    Ok(())
}

/// A writer's answer of the wrong kind for its write (never happens: each
/// write has its own answer).
fn unexpected(written: Written) -> StoreError {
    StoreError::Corrupt {
        id: String::new(),
        why: format!("the writer answered {written:?}"),
    }
}

/// [`JobStore::change`] on `conn` (inside the caller's transaction): `Ok(false)`
/// when it does not apply.
pub(super) async fn change_on(conn: &mut AnyConnection, c: &Change) -> Result<bool, StoreError> {
    match update_on(conn, c).await? {
        Some(row) => {
            insert_transitions_on(conn, &[row]).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The fenced `UPDATE` of [`JobStore::change`] on `conn` (and the removal
/// of the result when it asks): the transition row to insert, `None` when
/// it does not apply (nothing written).
pub(super) async fn update_on(
    conn: &mut AnyConnection,
    c: &Change,
) -> Result<Option<TransitionRow>, StoreError> {
    if c.from.is_empty() {
        return Ok(None);
    }
    let mut sql = Sql::new("UPDATE jobs SET state = ");
    sql.arg(Arg::Text(Some(c.to.as_str().to_string())))
        .push(", trans_seq = trans_seq + 1");
    if let Some(a) = c.new_attempt {
        sql.push(", attempt = ").arg(Arg::Int(Some(i64::from(a))));
    }
    let texts = [("node", &c.node), ("owner", &c.owner), ("error", &c.error)];
    for (col, value) in texts {
        if let Some(v) = value {
            sql.push(&format!(", {col} = ")).arg(Arg::Text(v.clone()));
        }
    }
    let times = [
        ("lease_until_ms", c.lease_until_ms),
        ("started_ms", c.started_ms),
        ("finished_ms", c.finished_ms),
    ];
    for (col, value) in times {
        if let Some(v) = value {
            sql.push(&format!(", {col} = "))
                .arg(Arg::Int(opt_i64(col, v)?));
        }
    }
    if c.clear_result {
        sql.push(", result_len = NULL");
    }
    sql.push(" WHERE id = ")
        .arg(Arg::Text(Some(c.id.to_string())))
        .push(" AND state IN ")
        .list(c.from.iter().map(|s| s.as_str()));
    if let Some(a) = c.attempt {
        sql.push(" AND attempt = ")
            .arg(Arg::Int(Some(i64::from(a))));
    }
    sql.push(" RETURNING trans_seq, attempt, node");

    let Some(row) = sql.query().fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let r = Reader::for_job(&row, &c.id);
    let seq = r.i64("trans_seq")?;
    let attempt = r.i64("attempt")?;
    let node = r.opt_text("node")?;
    if c.clear_result {
        sqlx::query("DELETE FROM job_results WHERE job_id = $1")
            .bind(&c.id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(TransitionRow::of(c, seq, attempt, node)?))
}

/// [`JobStore::set_result`] on `conn` (inside the caller's transaction).
pub(super) async fn set_result_on(
    conn: &mut AnyConnection,
    id: &str,
    attempt: u32,
    data: &[u8],
    content_type: Option<&str>,
) -> Result<bool, StoreError> {
    let len = to_i64("result length", data.len() as u64)?;
    let updated = sqlx::query("UPDATE jobs SET result_len = $1 WHERE id = $2 AND attempt = $3")
        .bind(len)
        .bind(id)
        .bind(i64::from(attempt))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO job_results (job_id, data, content_type) VALUES ($1, $2, $3) \
         ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, \
         content_type = excluded.content_type",
    )
    .bind(id)
    .bind(data)
    .bind(content_type)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// [`JobStore::append_log`] on `conn` (inside the caller's transaction):
/// `None` when the job is missing.
pub(super) async fn append_log_on(
    conn: &mut AnyConnection,
    id: &str,
    lines: &[LogLine],
) -> Result<Option<u64>, StoreError> {
    let n = to_i64("log lines", lines.len() as u64)?;
    // Bumping the counter locks the job's row (PostgreSQL), so
    // concurrent appenders get disjoint ranges.
    let row = sqlx::query("UPDATE jobs SET log_seq = log_seq + $1 WHERE id = $2 RETURNING log_seq")
        .bind(n)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let last = Reader::for_job(&row, id).u64("log_seq")?;
    let mut script = Script::each(Dialect::of(conn));
    insert_logs(&mut script, &LogRow::numbered(id, last, lines)?);
    script.run(conn).await?;
    Ok(Some(last))
}
