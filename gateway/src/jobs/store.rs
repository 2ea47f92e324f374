//! The job store: jobs, their transitions, logs and results, and the
//! templates created over the API, in SQLite or PostgreSQL.
//!
//! One schema and one set of migrations (`gateway/migrations/`) for both,
//! through sqlx's `AnyPool`: portable SQL with `$n` placeholders, `BIGINT`
//! for numbers and 0/1 flags, `TEXT` for names and JSON maps, `BYTEA` for
//! bytes. Ids come from the caller; sequence numbers (transitions, log
//! lines) from counters in the job's row, bumped by the same transaction,
//! so concurrent writers never collide.
//!
//! SQLite runs in WAL mode with `synchronous = FULL` (a job is acknowledged
//! only after its commit is on disk) and a busy timeout; its writes go
//! through a pool of one connection (SQLite has one writer at a time; a
//! deferred transaction that reads then writes could otherwise fail as
//! busy), its reads through a pool of their own.
//!
//! A job's own writes (its insert, state changes, log lines and end) are
//! group-committed: those that arrive together share one transaction and
//! one commit, and each is acknowledged only after that commit.
//!
//! Every state change is a fenced conditional `UPDATE` ([`Change`]): it
//! applies only while the job is in one of the expected states and (when
//! given) at the expected attempt, so a late answer from an attempt that
//! lost its lease writes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use protocol::{JobState, JobView};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

mod batch;
mod many;
mod read;
mod rows;
mod sql;
mod statistics;
mod write;

#[cfg(test)]
mod tests;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The database answered with an error (or could not be reached).
    #[error("job store: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("job store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no supported database.
    #[error("job store: unsupported database url {0:?} (sqlite: or postgres://)")]
    BadUrl(String),
    /// A value does not fit the store's column (e.g. a u64 above i64's
    /// range).
    #[error("job store: {what} {value} out of range")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// It, in words.
        value: String,
    },
    /// The group-commit writer's thread could not be started.
    #[error("job store: cannot start its writer: {0}")]
    Thread(#[from] std::io::Error),
    /// The group-commit writer stopped (the store is closing): the write
    /// was not applied.
    #[error("job store: its writer stopped, the write was not applied")]
    Closed,
    /// A write inside a shared transaction would have to undo part of
    /// itself; the batch is written again one write at a time.
    #[error("job store: a write split its batch")]
    Split,
    /// A stored value cannot be read back (an unknown state, a negative
    /// count, broken JSON).
    #[error("job store: job {id} is corrupt: {why}")]
    Corrupt {
        /// The job (or template) whose row is broken.
        id: String,
        /// What is wrong.
        why: String,
    },
}

/// One log line as stored: (attempt, time in ms since the Unix epoch,
/// stream, text).
pub(crate) type LogLine = (u32, u64, protocol::LogStream, String);

/// The durable store of jobs. Cheap to clone (pools inside).
#[derive(Debug, Clone)]
pub(crate) struct JobStore {
    /// Reads (SQLite: its own pool; PostgreSQL: the one pool).
    read: AnyPool,
    /// Writes (SQLite: one connection; PostgreSQL: the same pool as reads).
    write: AnyPool,
    /// A job's own writes, group-committed on `write` (see `batch`).
    writer: batch::Writer,
    backend: &'static str,
    /// Jobs stored when this store last had PostgreSQL analyze the jobs
    /// table (see `statistics`).
    analyzed: Arc<AtomicU64>,
}

/// A job to store ([`JobStore::insert`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewJob {
    /// Its id (time-ordered, from the gateway), at most
    /// `protocol::job::MAX_JOB_ID_LEN` bytes.
    pub(crate) id: String,
    /// The service it runs.
    pub(crate) service: String,
    /// The template it came from.
    pub(crate) template: Option<String>,
    /// `Waiting`, or `Occupied` for a realtime job that found no slot (a
    /// final state: `finished_ms` is set to `created_ms`).
    pub(crate) state: JobState,
    /// The tenant that submitted it (`None`: anonymous).
    pub(crate) tenant: Option<String>,
    /// Higher runs first.
    pub(crate) priority: i32,
    /// Ends as `occupied` rather than waiting.
    pub(crate) realtime: bool,
    /// Killed after this long running, s.
    pub(crate) watchdog_s: u32,
    /// Attempts allowed in all.
    pub(crate) max_attempts: u32,
    /// Started again after a lost node or gateway.
    pub(crate) idempotent: bool,
    /// Submitted, ms since the Unix epoch (also the first transition's
    /// time).
    pub(crate) created_ms: u64,
    /// Its payload, bytes.
    pub(crate) payload: Vec<u8>,
    /// Hints for the policy.
    pub(crate) hints: BTreeMap<String, String>,
    /// Its labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// The first transition's note.
    pub(crate) note: Option<String>,
    /// The request id of the request that submitted it.
    pub(crate) request_id: Option<String>,
}

impl NewJob {
    /// The job as [`JobStore::get`] reads it back right after
    /// [`JobStore::insert`]: attempt 0, no node, owner or lease, one
    /// transition (its state at `created_ms`, `note`).
    pub(crate) fn stored(&self) -> StoredJob {
        let finished_ms = self.state.is_final().then_some(self.created_ms);
        StoredJob {
            view: JobView {
                id: self.id.clone(),
                service: self.service.clone(),
                template: self.template.clone(),
                state: self.state,
                tenant: self.tenant.clone(),
                priority: self.priority,
                realtime: self.realtime,
                watchdog_s: self.watchdog_s,
                attempt: 0,
                max_attempts: self.max_attempts,
                idempotent: self.idempotent,
                node: None,
                created_ms: self.created_ms,
                started_ms: None,
                finished_ms,
                error: None,
                result_len: None,
                position: None,
                hints: self.hints.clone(),
                labels: self.labels.clone(),
                history: vec![protocol::Transition {
                    state: self.state,
                    at_ms: self.created_ms,
                    attempt: 0,
                    node: None,
                    note: self.note.clone(),
                }],
                request_id: self.request_id.clone(),
            },
            payload: self.payload.clone(),
            owner: None,
            lease_until_ms: None,
        }
    }
}

/// A job as stored: its view (attempt 0 and no node before its first
/// dispatch; `position` always `None`; `history` filled by
/// [`JobStore::get`] only), its payload and its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredJob {
    /// What a client sees.
    pub(crate) view: JobView,
    /// Its payload, bytes.
    pub(crate) payload: Vec<u8>,
    /// The gateway that holds its running attempt.
    pub(crate) owner: Option<String>,
    /// Until when that gateway's lease holds, ms since the Unix epoch.
    pub(crate) lease_until_ms: Option<u64>,
}

/// One fenced state change ([`JobStore::change`]). The `Option<Option<_>>`
/// fields: `None` leaves the column as it is, `Some(v)` sets it to `v`
/// (`Some(None)`: NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// The job.
    pub(crate) id: String,
    /// Applies only if the current state is one of these (empty: never;
    /// `JobState::ALL`: any).
    pub(crate) from: Vec<JobState>,
    /// ... and, if `Some`, the stored attempt equals this (fencing).
    pub(crate) attempt: Option<u32>,
    /// The new state.
    pub(crate) to: JobState,
    /// Sets the attempt.
    pub(crate) new_attempt: Option<u32>,
    /// Sets the node.
    pub(crate) node: Option<Option<String>>,
    /// Sets the gateway that holds the attempt.
    pub(crate) owner: Option<Option<String>>,
    /// Sets the lease's end, ms since the Unix epoch.
    pub(crate) lease_until_ms: Option<Option<u64>>,
    /// Sets when the current attempt started, ms since the Unix epoch.
    pub(crate) started_ms: Option<Option<u64>>,
    /// Sets when the job ended, ms since the Unix epoch.
    pub(crate) finished_ms: Option<Option<u64>>,
    /// Sets the error.
    pub(crate) error: Option<Option<String>>,
    /// Removes the stored result (and its length).
    pub(crate) clear_result: bool,
    /// The transition's time, ms since the Unix epoch. The transition row
    /// holds `to`, this, the attempt and node after the change, `note`.
    pub(crate) at_ms: u64,
    /// The transition's note.
    pub(crate) note: Option<String>,
}

impl Change {
    /// A change of `id` from one of `from` to `to` at `at_ms` (ms since
    /// the Unix epoch) that sets nothing else; set the other fields on it.
    pub(crate) fn new(id: &str, from: &[JobState], to: JobState, at_ms: u64) -> Self {
        Self {
            id: id.to_owned(),
            from: from.to_vec(),
            attempt: None,
            to,
            new_attempt: None,
            node: None,
            owner: None,
            lease_until_ms: None,
            started_ms: None,
            finished_ms: None,
            error: None,
            clear_result: false,
            at_ms,
            note: None,
        }
    }
}

/// A busy connection waits this long for SQLite's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl JobStore {
    /// Opens the store at `url` (`sqlite://PATH?mode=rwc`, see
    /// [`Self::sqlite_url`], or `postgres://...`) with at most
    /// `max_connections` connections (at least 1; SQLite: that many
    /// readers and one writer), and brings its schema up to date (several
    /// stores on one PostgreSQL database may do so at once).
    ///
    /// # Errors
    /// [`StoreError::BadUrl`], [`StoreError::Db`] (cannot connect),
    /// [`StoreError::Thread`] (SQLite),
    /// [`StoreError::Migrate`].
    pub(crate) async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let max = max_connections.max(1);
        let backend = if url.starts_with("sqlite:") {
            "sqlite"
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            "postgres"
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let store = if backend == "sqlite" {
            let write = sqlite_pool(1).connect_with(options.clone()).await?;
            sqlx::migrate!("./migrations").run(&write).await?;
            // An in-memory database exists once per connection: one pool.
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let read = if memory {
                write.clone()
            } else {
                sqlite_pool(max).connect_with(options).await?
            };
            Self {
                read,
                writer: batch::Writer::start(batch::WriterPool::Sqlite(write.clone()), 1)?,
                write,
                backend,
                analyzed: Arc::default(),
            }
        } else {
            let pool = AnyPoolOptions::new()
                .max_connections(max)
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations").run(&pool).await?;
            let concurrent = (max as usize / 2).clamp(1, 4);
            // Its slots keep their connections while the pool has one
            // more for reads.
            let keep = max as usize > concurrent;
            let writer = batch::WriterPool::Postgres {
                pool: pool.clone(),
                keep,
            };
            Self {
                read: pool.clone(),
                writer: batch::Writer::start(writer, concurrent)?,
                write: pool,
                backend,
                analyzed: Arc::default(),
            }
        };
        Ok(store)
    }

    /// The URL of a SQLite database file at `path`, created if missing:
    /// `sqlite://PATH?mode=rwc` (characters outside `[A-Za-z0-9/._~-]`
    /// percent-encoded).
    pub(crate) fn sqlite_url(path: &Path) -> String {
        let mut url = String::from("sqlite://");
        for &b in path.as_os_str().as_encoded_bytes() {
            if b.is_ascii_alphanumeric() || b"/._~-".contains(&b) {
                url.push(char::from(b));
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        url.push_str("?mode=rwc");
        url
    }

    /// Which database: `"sqlite"` or `"postgres"`.
    pub(crate) fn backend(&self) -> &'static str {
        self.backend
    }

    /// Checks that the database answers (`SELECT 1` on a read connection).
    ///
    /// # Errors
    /// [`StoreError::Db`] when no connection can be had or the query fails.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    #[cfg(test)]
    /// Closes the pools (waits for their connections to be returned).
    pub(crate) async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// SQLite connections: WAL, `synchronous = FULL`, a busy timeout; no
/// ping before each use (a file does not go away as a server does, and a
/// ping is a hand-off to the connection's thread).
fn sqlite_pool(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .test_before_acquire(false)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                let timeout_ms = SQLITE_BUSY_TIMEOUT.as_millis();
                conn.execute(format!("PRAGMA busy_timeout = {timeout_ms}").as_str())
                    .await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                Ok(())
            })
        })
}
