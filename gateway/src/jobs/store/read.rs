//! Reads: on the read pool, one query each (`get`: two; `get_many`: one
//! per 500 ids).

use protocol::job::MAX_PAGE;
use protocol::{JobFilter, JobPage, JobState, LogEntry};

use super::rows::{
    JOB_COLUMNS, Reader, VIEW_COLUMNS, job_from_row, log_from_row, to_i64, transition_from_row,
    view_from_row,
};
use super::sql::{Arg, Sql};
use super::{JobStore, StoreError, StoredJob};
use crate::config::TemplateConfig;

/// A list's page size when the filter names none.
pub(crate) const DEFAULT_PAGE: u32 = 100;

impl JobStore {
    /// One job with its history (oldest first); `None` when there is none.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::Corrupt`].
    pub(crate) async fn get(&self, id: &str) -> Result<Option<StoredJob>, StoreError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut job = job_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT state, at_ms, attempt, node, note FROM job_transitions \
             WHERE job_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        job.view.history = rows
            .iter()
            .map(|r| transition_from_row(r, id))
            .collect::<Result<_, _>>()?;
        Ok(Some(job))
    }

    /// The jobs of `ids` that exist, histories empty, in no particular
    /// order: one query per 500 ids (a dispatcher's round loads its jobs
    /// at once).
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::Corrupt`].
    pub(crate) async fn get_many(&self, ids: &[String]) -> Result<Vec<StoredJob>, StoreError> {
        let mut jobs = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::sql::IDS_PER_STATEMENT) {
            let mut sql = Sql::new(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id IN "));
            sql.list(chunk.iter().map(String::as_str));
            for row in sql.query().fetch_all(&self.read).await? {
                jobs.push(job_from_row(&row)?);
            }
        }
        Ok(jobs)
    }

    /// Jobs newest first (id descending) matching the filter's state,
    /// service and tenant, after its cursor (ids below it); at most its
    /// limit (default [`DEFAULT_PAGE`], at most `MAX_PAGE`). `next_cursor`
    /// (the page's last id) only when more rows exist. Histories empty.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::Corrupt`].
    pub(crate) async fn list(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        let limit = filter.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        // No payloads: a page holds up to MAX_PAGE jobs.
        let mut sql = Sql::new(&format!("SELECT {VIEW_COLUMNS} FROM jobs WHERE 1 = 1"));
        if let Some(state) = filter.state {
            sql.push(" AND state = ")
                .arg(Arg::Text(Some(state.as_str().to_string())));
        }
        if let Some(service) = &filter.service {
            sql.push(" AND service = ")
                .arg(Arg::Text(Some(service.clone())));
        }
        if let Some(tenant) = &filter.tenant {
            sql.push(" AND tenant = ")
                .arg(Arg::Text(Some(tenant.clone())));
        }
        if let Some(cursor) = &filter.cursor {
            sql.push(" AND id < ").arg(Arg::Text(Some(cursor.clone())));
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .arg(Arg::Int(Some(i64::from(limit) + 1)));
        let rows = sql.query().fetch_all(&self.read).await?;
        let more = rows.len() > limit as usize;
        let jobs = rows
            .iter()
            .take(limit as usize)
            .map(view_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if more {
            jobs.last().map(|j| j.id.clone())
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    /// The stored result and its media type; `None` when the job has none.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::Corrupt`].
    pub(crate) async fn result(
        &self,
        id: &str,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, StoreError> {
        let row = sqlx::query("SELECT data, content_type FROM job_results WHERE job_id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|row| {
            let r = Reader::for_job(&row, id);
            Ok((r.bytes("data")?, r.opt_text("content_type")?))
        })
        .transpose()
    }

    /// Log lines with seq above `after`, in order, at most `limit`.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::Corrupt`].
    pub(crate) async fn log_after(
        &self,
        id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, attempt, ts_ms, stream, line FROM job_logs \
             WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id)
        .bind(to_i64("after", after)?)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| log_from_row(r, id)).collect()
    }

    /// Every waiting and running job (restart recovery), by priority
    /// (highest first) then id (oldest first), with payloads and leases;
    /// histories empty. One query.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::Corrupt`].
    pub(crate) async fn unfinished(&self) -> Result<Vec<StoredJob>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ($1, $2) \
             ORDER BY priority DESC, id ASC"
        ))
        .bind(JobState::Waiting.as_str())
        .bind(JobState::Running.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// How many jobs each service has in each state (only pairs with at
    /// least one), by service then state name.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::Corrupt`].
    pub(crate) async fn counts(&self) -> Result<Vec<(String, JobState, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT service, state, COUNT(*) AS n FROM jobs \
             GROUP BY service, state ORDER BY service, state",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let r = Reader::new(row, "service");
                Ok((r.text("service")?, r.state("state")?, r.u64("n")?))
            })
            .collect()
    }

    /// The templates created over the API, by name.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::Corrupt`] (naming the template).
    pub(crate) async fn templates(&self) -> Result<Vec<(String, TemplateConfig)>, StoreError> {
        let rows = sqlx::query("SELECT name, config FROM job_templates ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                let r = Reader::new(row, "name");
                let json = r.text("config")?;
                let t = serde_json::from_str(&json)
                    .map_err(|e| r.corrupt(format!("template config: {e}")))?;
                Ok((r.id().to_string(), t))
            })
            .collect()
    }

    /// The stored value of setting `name`, `None` when never set.
    ///
    /// # Errors
    /// [`StoreError::Db`], [`StoreError::Corrupt`] (a negative value).
    pub(crate) async fn setting(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query("SELECT name, value FROM job_settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.map(|row| Reader::new(&row, "name").u64("value"))
            .transpose()
    }
}
