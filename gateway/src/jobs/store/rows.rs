//! Reading rows back (never panicking on a bad stored value) and the
//! conversions between Rust's unsigned numbers and the store's `BIGINT`.

use std::collections::BTreeMap;

use protocol::{JobState, JobView, LogEntry, LogStream, Transition};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{StoreError, StoredJob};

/// The columns of `jobs` a [`JobView`] is read from ([`view_from_row`]).
pub(super) const VIEW_COLUMNS: &str = "id, service, template, state, tenant, priority, realtime, \
     watchdog_s, attempt, max_attempts, idempotent, node, created_ms, started_ms, finished_ms, \
     error, result_len, hints, labels, request_id";

/// The columns of `jobs` a [`StoredJob`] is read from ([`job_from_row`]).
pub(super) const JOB_COLUMNS: &str = "id, service, template, state, tenant, priority, realtime, \
     watchdog_s, attempt, max_attempts, idempotent, node, created_ms, started_ms, finished_ms, \
     error, result_len, hints, labels, request_id, payload, owner, lease_until_ms";

/// A u64 (ms, bytes, seq) as a `BIGINT`.
pub(super) fn to_i64(what: &'static str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange {
        what,
        value: v.to_string(),
    })
}

/// An optional u64 as a nullable `BIGINT`.
pub(super) fn opt_i64(what: &'static str, v: Option<u64>) -> Result<Option<i64>, StoreError> {
    v.map(|v| to_i64(what, v)).transpose()
}

/// A 0/1 flag.
pub(super) fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// A string map as a JSON object.
pub(super) fn to_json(map: &BTreeMap<String, String>) -> String {
    // A map of strings always serialises.
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string())
}

/// Reads one row's columns, naming the job in every error.
pub(super) struct Reader<'r> {
    row: &'r AnyRow,
    id: String,
}

impl<'r> Reader<'r> {
    /// A reader of `row`, whose job's id is in column `id_column`.
    pub(super) fn new(row: &'r AnyRow, id_column: &str) -> Self {
        let id = row
            .try_get::<String, _>(id_column)
            .unwrap_or_else(|_| "?".to_string());
        Self { row, id }
    }

    /// A reader of `row` that belongs to job `id`.
    pub(super) fn for_job(row: &'r AnyRow, id: &str) -> Self {
        Self {
            row,
            id: id.to_string(),
        }
    }

    /// The job (or template) the row belongs to.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn corrupt(&self, why: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            id: self.id.clone(),
            why: why.into(),
        }
    }

    fn get<T>(&self, col: &str) -> Result<T, StoreError>
    where
        T: for<'a> sqlx::Decode<'a, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.row
            .try_get::<T, _>(col)
            .map_err(|e| self.corrupt(format!("column {col}: {e}")))
    }

    pub(super) fn text(&self, col: &str) -> Result<String, StoreError> {
        self.get(col)
    }

    pub(super) fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.get(col)
    }

    pub(super) fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        self.get(col)
    }

    pub(super) fn i64(&self, col: &str) -> Result<i64, StoreError> {
        self.get(col)
    }

    pub(super) fn u64(&self, col: &str) -> Result<u64, StoreError> {
        let v = self.i64(col)?;
        u64::try_from(v).map_err(|_| self.corrupt(format!("column {col}: negative {v}")))
    }

    pub(super) fn opt_u64(&self, col: &str) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = self.get(col)?;
        v.map(|v| u64::try_from(v).map_err(|_| self.corrupt(format!("column {col}: negative {v}"))))
            .transpose()
    }

    pub(super) fn u32(&self, col: &str) -> Result<u32, StoreError> {
        let v = self.i64(col)?;
        u32::try_from(v).map_err(|_| self.corrupt(format!("column {col}: {v} is no u32")))
    }

    pub(super) fn i32(&self, col: &str) -> Result<i32, StoreError> {
        let v = self.i64(col)?;
        i32::try_from(v).map_err(|_| self.corrupt(format!("column {col}: {v} is no i32")))
    }

    pub(super) fn flag(&self, col: &str) -> Result<bool, StoreError> {
        match self.i64(col)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.corrupt(format!("column {col}: flag {v}"))),
        }
    }

    pub(super) fn state(&self, col: &str) -> Result<JobState, StoreError> {
        let name = self.text(col)?;
        JobState::parse(&name).ok_or_else(|| self.corrupt(format!("unknown state {name:?}")))
    }

    pub(super) fn map(&self, col: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let json = self.text(col)?;
        serde_json::from_str(&json).map_err(|e| self.corrupt(format!("column {col}: {e}")))
    }
}

/// A `jobs` row selected with [`VIEW_COLUMNS`] (or more); history empty.
pub(super) fn view_from_row(row: &AnyRow) -> Result<JobView, StoreError> {
    let r = Reader::new(row, "id");
    Ok(JobView {
        id: r.id().to_string(),
        service: r.text("service")?,
        template: r.opt_text("template")?,
        state: r.state("state")?,
        tenant: r.opt_text("tenant")?,
        priority: r.i32("priority")?,
        realtime: r.flag("realtime")?,
        watchdog_s: r.u32("watchdog_s")?,
        attempt: r.u32("attempt")?,
        max_attempts: r.u32("max_attempts")?,
        idempotent: r.flag("idempotent")?,
        node: r.opt_text("node")?,
        created_ms: r.u64("created_ms")?,
        started_ms: r.opt_u64("started_ms")?,
        finished_ms: r.opt_u64("finished_ms")?,
        error: r.opt_text("error")?,
        result_len: r.opt_u64("result_len")?,
        position: None,
        hints: r.map("hints")?,
        labels: r.map("labels")?,
        history: Vec::new(),
        request_id: r.opt_text("request_id")?,
    })
}

/// A `jobs` row selected with [`JOB_COLUMNS`]; history empty.
pub(super) fn job_from_row(row: &AnyRow) -> Result<StoredJob, StoreError> {
    let view = view_from_row(row)?;
    let r = Reader::for_job(row, &view.id);
    Ok(StoredJob {
        view,
        payload: r.bytes("payload")?,
        owner: r.opt_text("owner")?,
        lease_until_ms: r.opt_u64("lease_until_ms")?,
    })
}

/// A `job_transitions` row of job `id`.
pub(super) fn transition_from_row(row: &AnyRow, id: &str) -> Result<Transition, StoreError> {
    let r = Reader::for_job(row, id);
    Ok(Transition {
        state: r.state("state")?,
        at_ms: r.u64("at_ms")?,
        attempt: r.u32("attempt")?,
        node: r.opt_text("node")?,
        note: r.opt_text("note")?,
    })
}

/// A `job_logs` row of job `id`.
pub(super) fn log_from_row(row: &AnyRow, id: &str) -> Result<LogEntry, StoreError> {
    let r = Reader::for_job(row, id);
    let name = r.text("stream")?;
    let stream =
        LogStream::parse(&name).ok_or_else(|| r.corrupt(format!("unknown log stream {name:?}")))?;
    Ok(LogEntry {
        seq: r.u64("seq")?,
        attempt: r.u32("attempt")?,
        ts_ms: r.u64("ts_ms")?,
        stream,
        line: r.text("line")?,
    })
}
