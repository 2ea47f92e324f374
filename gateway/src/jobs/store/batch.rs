//! Group commit: the writes that arrive together share one transaction,
//! so one commit (one fsync on SQLite with `synchronous = FULL`, one WAL
//! flush on PostgreSQL) acknowledges all of them, as River, pg-boss and
//! Temporal's persistence batch their writes.
//!
//! One task owns the writing: callers send it a [`Write`] and wait for its
//! answer, which comes only after the transaction holding it committed.
//! The task takes every write waiting (at most [`MAX_BATCH`]) and applies
//! them in one transaction, as if one after the other in arrival order,
//! in a number of statements that does not grow with the group (`many`).
//! When one of them fails, the
//! transaction is rolled back and each write of the batch is applied again
//! in a transaction of its own, so a bad write fails alone and the others
//! are not lost. Under light load a batch is one write: nothing waits for
//! company.

use std::collections::HashSet;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use super::many::{
    LogRow, Merged, ResultRow, Shape, TransitionRow, applied, delete_results, insert_logs,
    insert_results, insert_transitions, update_many,
};
use super::sql::{Dialect, Script};
use super::write::{append_log_on, change_on, insert_jobs, insert_on, set_result_on, update_on};
use super::{Change, LogLine, NewJob, StoreError};

/// Most writes in one transaction.
pub(super) const MAX_BATCH: usize = 512;
/// Writes that may wait for the writer before senders wait too.
const QUEUE: usize = 4096;

/// One write to the store.
#[derive(Debug)]
pub(super) enum Write {
    /// A new job and its first transition.
    Insert(NewJob),
    /// A fenced state change and its transition.
    Change(Change),
    /// The end of an attempt: the change, its result, its last log lines.
    Finish {
        /// The change to a final state.
        change: Change,
        /// The attempt's result: bytes and media type.
        result: Option<(Vec<u8>, Option<String>)>,
        /// Its last log lines.
        lines: Vec<LogLine>,
    },
    /// Log lines of a job.
    AppendLog {
        /// The job.
        id: String,
        /// Its lines.
        lines: Vec<LogLine>,
    },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// The job was stored.
    Inserted,
    /// Whether a fenced change applied.
    Applied(bool),
    /// The last log seq written (0: no such job).
    LastSeq(u64),
}

struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The handle callers send writes through. Cheap to clone; the writer
/// task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write.fmt(f)
    }
}

/// The writer's database and where its connections come from.
#[derive(Debug)]
pub(super) enum WriterPool {
    /// SQLite: the store's one write connection, shared (its own worker
    /// thread serves any runtime). Several statements go in one text.
    Sqlite(AnyPool),
    /// PostgreSQL: the store's pool. One statement per round trip. With
    /// `keep`, each of the writer's slots keeps its connection from group
    /// to group (the pool must hold more connections than the slots, for
    /// the store's reads).
    Postgres {
        /// The pool.
        pool: AnyPool,
        /// Whether the slots keep their connections.
        keep: bool,
    },
}

impl Writer {
    /// Starts the writer, with at most `concurrent` transactions at once
    /// (SQLite: 1, its one writer; PostgreSQL: a few, each a connection,
    /// since there a group's time is its statements' round trips).
    ///
    /// SQLite's writer runs on a thread of its own (`job-store-writer`, a
    /// current-thread tokio runtime): there a group's hand-offs to the
    /// connection's thread do not wait for a turn behind the gateway's
    /// other tasks. PostgreSQL's runs on the current runtime, which drives
    /// its sockets (measured: from a thread of its own, each round trip
    /// waits for that thread to wake, and a restart's 10 000 jobs took a
    /// second longer).
    ///
    /// # Errors
    /// SQLite: the thread or its runtime could not be made.
    pub(super) fn start(pool: WriterPool, concurrent: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let concurrent = concurrent.max(1);
        match pool {
            WriterPool::Sqlite(pool) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                std::thread::Builder::new()
                    .name("job-store-writer".into())
                    .spawn(move || {
                        runtime.block_on(run(pool, rx, concurrent, Dialect::Sqlite, false))
                    })?;
            }
            WriterPool::Postgres { pool, keep } => {
                tokio::spawn(run(pool, rx, concurrent, Dialect::Postgres, keep));
            }
        }
        Ok(Self { tx })
    }

    /// Applies `write`; answers once its transaction committed.
    ///
    /// # Errors
    /// The write's own error ([`StoreError::Db`], [`StoreError::OutOfRange`]),
    /// or [`StoreError::Closed`] when the writer stopped.
    pub(super) async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { write, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// A connection the writer keeps between groups, if any.
type Kept = Option<PoolConnection<Any>>;

/// Takes the waiting writes as groups; each group's transaction runs on a
/// task of its own, at most `concurrent` at once. A job's own writes never
/// share two groups in flight: each waits for the answer to the one
/// before. Returns once every handle is dropped and the last group
/// answered.
///
/// `dialect`: the texts a group is written in (`sql`). Each group takes a
/// connection from the pool and gives it back, unless `keep`: then each
/// of the `concurrent` slots keeps its connection from group to group
/// (sqlx pings a connection when it is taken from the pool and when it is
/// given back, two round trips a group on PostgreSQL). A slot whose group
/// failed gives its connection back (where a broken one is closed) and
/// takes another.
async fn run(
    pool: AnyPool,
    mut rx: mpsc::Receiver<Pending>,
    concurrent: usize,
    dialect: Dialect,
    keep: bool,
) {
    let (free, mut slots) = mpsc::channel::<Kept>(concurrent);
    for _ in 0..concurrent {
        let _ = free.try_send(None);
    }
    loop {
        let Some(kept) = slots.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            // The groups still committing answer before the runtime ends.
            drop(kept);
            for _ in 1..concurrent {
                let _ = slots.recv().await;
            }
            return;
        }
        let (pool, free) = (pool.clone(), free.clone());
        tokio::spawn(async move {
            let kept = commit(&pool, kept, batch, dialect).await;
            let _ = free.send(kept.filter(|_| keep)).await;
        });
    }
}

/// Applies one group on `kept` (or a connection from `pool`) and answers
/// each of its writes; returns the connection unless the group failed.
async fn commit(pool: &AnyPool, kept: Kept, mut batch: Vec<Pending>, dialect: Dialect) -> Kept {
    metrics::histogram!("jobs_store_commit_writes").record(batch.len() as f64);
    let started = std::time::Instant::now();
    let conn = match kept {
        Some(conn) => Ok(conn),
        None => pool.acquire().await.map_err(StoreError::Db),
    };
    let outcome = match conn {
        Ok(mut conn) => match together(&mut conn, &batch, dialect).await {
            Ok(done) => Ok((done, conn)),
            // The connection goes back to the pool, which closes it if it
            // is broken.
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    metrics::histogram!("jobs_store_commit_seconds").record(started.elapsed().as_secs_f64());
    match outcome {
        Ok((done, conn)) => {
            for (p, done) in batch.drain(..).zip(done) {
                let _ = p.reply.send(Ok(done));
            }
            Some(conn)
        }
        Err(error) => {
            // Each write alone, on a connection of the pool.
            if batch.len() > 1 {
                tracing::debug!(writes = batch.len(), %error, "job store batch failed, writing one by one");
            }
            for p in batch.drain(..) {
                let done = alone(pool, &p.write).await;
                let _ = p.reply.send(done);
            }
            None
        }
    }
}

/// Every write of `batch` in one transaction, as if one after the other
/// in arrival order, in a number of statements that does not grow with
/// the batch: the batch is cut into runs in which no job appears twice
/// (so the order inside a run does not matter); a run's inserts go in
/// multi-row statements, its fenced changes in one `UPDATE` per shape
/// (`many`), its results after them, and the transitions and log lines of
/// the whole batch in multi-row statements before the commit. With
/// SQLite a run's inserts and updates are one text, and what follows them
/// another: with `BEGIN` and `COMMIT`, four hand-offs to the connection's
/// thread for a batch of one run, and each statement takes its rows as
/// one JSON argument, so its text does not change with their number and
/// stays prepared (`sql`).
async fn together(
    conn: &mut AnyConnection,
    batch: &[Pending],
    dialect: Dialect,
) -> Result<Vec<Written>, StoreError> {
    let mut tx = conn.begin().await?;
    let mut done = Vec::with_capacity(batch.len());
    let mut later = Later::default();
    let mut tail = Script::new(dialect);
    let mut rest = batch;
    while !rest.is_empty() {
        let run = &rest[..run_len(rest)];
        if !tail.is_empty() {
            let before = std::mem::replace(&mut tail, Script::new(dialect));
            before.run(&mut tx).await?;
        }
        done.extend(apply_run(&mut tx, run, &mut later, &mut tail, dialect).await?);
        rest = &rest[run.len()..];
    }
    insert_transitions(&mut tail, &later.transitions);
    insert_logs(&mut tail, &later.logs);
    tail.run(&mut tx).await?;
    tx.commit().await?;
    Ok(done)
}

/// Rows a batch inserts just before its commit.
#[derive(Debug, Default)]
struct Later {
    transitions: Vec<TransitionRow>,
    logs: Vec<LogRow>,
}

/// The job a write is about.
fn job_of(write: &Write) -> &str {
    match write {
        Write::Insert(job) => &job.id,
        Write::Change(c) | Write::Finish { change: c, .. } => &c.id,
        Write::AppendLog { id, .. } => id,
    }
}

/// How many writes from the start of `writes` are each about another job
/// (at least one).
fn run_len(writes: &[Pending]) -> usize {
    let mut seen = HashSet::new();
    writes
        .iter()
        .take_while(|p| seen.insert(job_of(&p.write)))
        .count()
        .max(1)
}

/// A write's change as one of many of its shape, when it can be.
fn merged(write: &Write) -> Option<(Shape, Merged<'_>)> {
    let m = match write {
        Write::Change(change) => Merged {
            change,
            result: None,
            lines: &[],
        },
        // Its result is stored by the fenced change itself, so the
        // change must be fenced on the attempt it keeps.
        Write::Finish {
            change,
            result,
            lines,
        } if change.attempt.is_some() && change.new_attempt.is_none() => Merged {
            change,
            result: result
                .as_ref()
                .map(|(data, kind)| (data.as_slice(), kind.as_deref())),
            lines,
        },
        _ => return None,
    };
    Some((m.shape()?, m))
}

/// Applies `run` (writes each about another job) on `conn`, but for the
/// removal and storing of results, added to `tail` to run after it;
/// answers each write, in order.
async fn apply_run(
    conn: &mut sqlx::AnyConnection,
    run: &[Pending],
    later: &mut Later,
    tail: &mut Script,
    dialect: Dialect,
) -> Result<Vec<Written>, StoreError> {
    let mut script = Script::new(dialect);
    let inserts: Vec<&NewJob> = run
        .iter()
        .filter_map(|p| match &p.write {
            Write::Insert(job) => Some(job),
            _ => None,
        })
        .collect();
    if !inserts.is_empty() {
        insert_jobs(&mut script, &inserts)?;
        // Their first transitions go with the batch's others.
        for job in &inserts {
            later.transitions.push(TransitionRow::first(job)?);
        }
    }
    // The changes, one statement per shape.
    let mut shapes: Vec<(Shape, Vec<Merged<'_>>)> = Vec::new();
    let mut changes = std::collections::HashMap::new();
    for (shape, m) in run.iter().filter_map(|p| merged(&p.write)) {
        changes.insert(m.change.id.as_str(), m.change);
        match shapes.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, items)) => items.push(m),
            None => shapes.push((shape, vec![m])),
        }
    }
    for (shape, items) in &shapes {
        update_many(&mut script, shape, items)?;
    }
    let rows = if script.is_empty() {
        Vec::new()
    } else {
        script.run(conn).await?
    };
    let mut applied = applied(&rows, &changes)?;
    let mut cleared: Vec<&str> = Vec::new();
    let mut results: Vec<ResultRow<'_>> = Vec::new();
    let mut done = Vec::with_capacity(run.len());
    for p in run {
        let write = &p.write;
        if matches!(write, Write::Insert(_)) {
            done.push(Written::Inserted);
            continue;
        }
        let Some((_, m)) = merged(write) else {
            done.push(apply_on(conn, write, &mut later.transitions).await?);
            continue;
        };
        let Merged {
            change,
            result,
            lines,
        } = m;
        let Some(a) = applied.remove(&change.id) else {
            // It did not apply: an end's lines are still kept.
            if !lines.is_empty() {
                append_log_on(conn, &change.id, lines).await?;
            }
            done.push(Written::Applied(false));
            continue;
        };
        later.transitions.push(a.transition);
        later
            .logs
            .extend(LogRow::numbered(&change.id, a.log_seq, lines)?);
        if change.clear_result {
            cleared.push(&change.id);
        }
        if let Some((data, content_type)) = result {
            results.push((&change.id, data, content_type));
        }
        done.push(Written::Applied(true));
    }
    delete_results(tail, &cleared);
    insert_results(tail, &results);
    Ok(done)
}

/// One write inside a batch's transaction. A write that would have to undo
/// part of itself (a result whose attempt moved) fails here, and the batch
/// goes one by one, where [`alone`] undoes it.
///
/// The changes' transition rows go to `transitions`, inserted by the
/// caller before its commit.
async fn apply_on(
    conn: &mut sqlx::AnyConnection,
    write: &Write,
    transitions: &mut Vec<TransitionRow>,
) -> Result<Written, StoreError> {
    match write {
        Write::Insert(job) => {
            insert_on(conn, &[job]).await?;
            Ok(Written::Inserted)
        }
        Write::Change(c) => {
            let row = update_on(conn, c).await?;
            let applied = row.is_some();
            transitions.extend(row);
            Ok(Written::Applied(applied))
        }
        Write::Finish {
            change,
            result,
            lines,
        } => {
            let Some(row) = update_on(conn, change).await? else {
                if !lines.is_empty() {
                    append_log_on(conn, &change.id, lines).await?;
                }
                return Ok(Written::Applied(false));
            };
            transitions.push(row);
            if let Some((data, content_type)) = result {
                let attempt = change.attempt.unwrap_or_default();
                let set = set_result_on(conn, &change.id, attempt, data, content_type.as_deref());
                if !set.await? {
                    return Err(StoreError::Split);
                }
            }
            if !lines.is_empty() {
                append_log_on(conn, &change.id, lines).await?;
            }
            Ok(Written::Applied(true))
        }
        Write::AppendLog { id, lines } => Ok(Written::LastSeq(
            append_log_on(conn, id, lines).await?.unwrap_or(0),
        )),
    }
}

/// One write in a transaction of its own.
async fn alone(pool: &AnyPool, write: &Write) -> Result<Written, StoreError> {
    let mut tx = pool.begin().await?;
    let done = match write {
        Write::Insert(job) => {
            insert_on(&mut tx, &[job]).await?;
            Written::Inserted
        }
        Write::Change(c) => {
            if !change_on(&mut tx, c).await? {
                tx.rollback().await?;
                return Ok(Written::Applied(false));
            }
            Written::Applied(true)
        }
        Write::Finish {
            change,
            result,
            lines,
        } => {
            let mut applied = change_on(&mut tx, change).await?;
            if applied && let Some((data, content_type)) = result {
                let attempt = change.attempt.unwrap_or_default();
                let set =
                    set_result_on(&mut tx, &change.id, attempt, data, content_type.as_deref());
                applied = set.await?;
            }
            if !applied {
                // Nothing of the change stays; the lines are still kept.
                tx.rollback().await?;
                if !lines.is_empty() {
                    let mut tx = pool.begin().await?;
                    append_log_on(&mut tx, &change.id, lines).await?;
                    tx.commit().await?;
                }
                return Ok(Written::Applied(false));
            }
            if !lines.is_empty() {
                append_log_on(&mut tx, &change.id, lines).await?;
            }
            Written::Applied(true)
        }
        Write::AppendLog { id, lines } => match append_log_on(&mut tx, id, lines).await? {
            Some(last) => Written::LastSeq(last),
            None => {
                tx.rollback().await?;
                return Ok(Written::LastSeq(0));
            }
        },
    };
    tx.commit().await?;
    Ok(done)
}
