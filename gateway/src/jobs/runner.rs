//! One attempt of a job: claimed in the store, run as a call (asking the
//! agent for its output as it runs), its output kept as the job's log and
//! result, and its end written back — every write fenced by the attempt,
//! so an attempt that lost its lease (or was cancelled) changes nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::{CallHead, ErrorKind, JobState, LogStream, Message};
use tokio::sync::{mpsc, oneshot};

use super::store::{LogLine, StoredJob};
use super::{Jobs, Running, now_ms};
use crate::telemetry::labels;

/// Why a running attempt is told to stop (the store was already changed
/// by whoever says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Cancelled, restarted or deleted by a user.
    User,
}

/// How an attempt ended, as far as the call tells.
enum Outcome {
    /// The service answered; the result is complete.
    Done,
    /// The call failed with this error kind and message.
    Error(ErrorKind, String),
    /// The node went silent past the lease timeout.
    LeaseLost(String),
    /// A user stopped it.
    Stopped,
}

/// What an attempt left when its call ended: how, the result gathered,
/// its media type, and the log lines not yet stored.
struct Ended {
    outcome: Outcome,
    result: Vec<u8>,
    content_type: Option<String>,
    lines: Vec<LogLine>,
    /// The node it ran on, when not yet recorded: the end records it.
    node: Option<String>,
}

/// Lines read but not yet stored, with the partial last line of each
/// stream.
#[derive(Default)]
struct LogBuf {
    lines: Vec<LogLine>,
    partial: [Vec<u8>; 2],
    bytes: u64,
    dropped: bool,
}

impl LogBuf {
    fn push(&mut self, attempt: u32, stream: LogStream, data: &[u8], max: u64) {
        let slot = usize::from(stream == LogStream::Stderr);
        self.partial[slot].extend_from_slice(data);
        while let Some(i) = self.partial[slot].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[slot].drain(..=i).collect();
            self.line(attempt, stream, &line[..line.len() - 1], max);
        }
        // A line longer than a chunk is cut rather than held without bound.
        if self.partial[slot].len() > protocol::job::MAX_LOG_CHUNK {
            let line = std::mem::take(&mut self.partial[slot]);
            self.line(attempt, stream, &line, max);
        }
    }

    fn line(&mut self, attempt: u32, stream: LogStream, line: &[u8], max: u64) {
        self.bytes += line.len() as u64;
        if self.bytes > max {
            if !self.dropped {
                self.dropped = true;
                let note = format!("log over {max} bytes: later lines dropped");
                self.lines
                    .push((attempt, now_ms(), LogStream::System, note));
            }
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text).to_owned();
        self.lines.push((attempt, now_ms(), stream, text));
    }

    fn end(&mut self, attempt: u32, max: u64) {
        for (slot, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let rest = std::mem::take(&mut self.partial[slot]);
            if !rest.is_empty() {
                self.line(attempt, stream, &rest, max);
            }
        }
    }
}

impl Jobs {
    /// Runs one attempt of `job` (waiting in the store): claims it, runs
    /// it, stores how it ended. `realtime` asks the core never to queue it.
    pub(crate) async fn run_attempt(self: Arc<Self>, job: StoredJob, realtime: bool) {
        let id = job.view.id.clone();
        let service = job.view.service.clone();
        let attempt = job.view.attempt + 1;
        let (stop_tx, stop_rx) = oneshot::channel();
        let claimed = self.claim(&job.view, attempt).await;
        if !claimed {
            self.admitted_done(&service);
            return;
        }
        if let Ok(mut inner) = self.inner.lock() {
            inner.running.insert(
                id.clone(),
                Running {
                    stop: Some(stop_tx),
                },
            );
        }
        let waited_s = now_ms().saturating_sub(job.view.created_ms) as f64 / 1000.0;
        metrics::histogram!("job_queue_wait_seconds", "service" => labels::service(&service))
            .record(waited_s);
        let outcome = self.attempt(&job, attempt, realtime, stop_rx).await;
        if let Ok(mut inner) = self.inner.lock() {
            inner.running.remove(&id);
        }
        self.finish(&job, attempt, outcome).await;
        self.wake.notify_one();
    }

    /// Waiting → running (attempt, owner, lease), fenced on the stored
    /// attempt so only one gateway claims it.
    async fn claim(&self, view: &protocol::JobView, attempt: u32) -> bool {
        let now = now_ms();
        let mut change = super::change(&view.id, &[JobState::Waiting], JobState::Running, now);
        change.attempt = Some(view.attempt);
        change.new_attempt = Some(attempt);
        change.owner = Some(Some(self.owner.clone()));
        change.lease_until_ms = Some(Some(now + self.lease_ms()));
        change.started_ms = Some(Some(now));
        change.finished_ms = Some(None);
        change.node = Some(None);
        change.error = Some(None);
        // An earlier attempt's result goes. Only an attempt's end stores
        // one, fenced on its attempt (from 1): a job at attempt 0, as the
        // fence above requires, has none, and its claim skips the delete.
        change.clear_result = view.attempt > 0;
        change.note = Some(attempt_note(attempt, view.max_attempts));
        match self.store.change(&change).await {
            Ok(applied) => applied,
            Err(error) => {
                tracing::warn!(job = %view.id, %error, "cannot claim a job; it stays waiting");
                false
            }
        }
    }

    /// Runs the call and gathers its output until it ends.
    async fn attempt(
        self: &Arc<Self>,
        job: &StoredJob,
        attempt: u32,
        realtime: bool,
        mut stop: oneshot::Receiver<Stop>,
    ) -> Ended {
        let view = &job.view;
        let Some(shared) = self.shared.upgrade() else {
            return Ended {
                outcome: Outcome::Error(ErrorKind::ShuttingDown, "gateway stopping".into()),
                result: Vec::new(),
                content_type: None,
                lines: Vec::new(),
                node: None,
            };
        };
        let mut head = CallHead::new(
            view.service.clone(),
            job.payload.len() as u64,
            view.watchdog_s.saturating_mul(1000),
        );
        head.hints = view.hints.clone().into_iter().collect();
        head.priority = view.priority;
        head.realtime = realtime;
        head.no_cache = true;
        head.log = true;
        head.request_id.clone_from(&view.request_id);
        let tenant: Arc<str> = view.tenant.as_deref().unwrap_or("anonymous").into();
        let (node_tx, mut node_rx) = mpsc::unbounded_channel();
        let mut rx = crate::calls::spawn_job(
            shared.clone(),
            head,
            Bytes::from(job.payload.clone()),
            tenant,
            node_tx,
        );
        let max_log = self.config.max_log_bytes;
        let max_result = usize::try_from(self.config.max_result_bytes).unwrap_or(usize::MAX);
        let mut log = LogBuf::default();
        let mut result = Vec::new();
        let mut cut = false;
        let mut content_type = None;
        let mut node: Option<String> = None;
        let mut recorded = false;
        // The first flush one period in: an interval's first tick is at
        // once, and would record the node and the dispatch line of every
        // attempt, two writes a short attempt stores with its end.
        let period = Duration::from_millis(250);
        let mut flush = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let lease = Duration::from_millis(self.lease_ms());
        let outcome = loop {
            tokio::select! {
                _ = &mut stop => break Outcome::Stopped,
                Some(id) = node_rx.recv() => {
                    self.admitted_done(&view.service);
                    log.lines.push((attempt, now_ms(), LogStream::System,
                        format!("attempt {attempt} dispatched to node {id}")));
                    node = Some(id);
                }
                message = rx.recv() => match message {
                    None => break Outcome::Done,
                    Some(Message::Result(head)) => content_type = head.content_type,
                    Some(Message::Data(chunk)) => {
                        log.push(attempt, LogStream::Stdout, &chunk, max_log);
                        let room = max_result.saturating_sub(result.len());
                        if chunk.len() > room && !cut {
                            cut = true;
                            log.lines.push((attempt, now_ms(), LogStream::System,
                                format!("result over {max_result} bytes: cut there")));
                        }
                        result.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Some(Message::Log(chunk)) => log.push(attempt, chunk.stream, &chunk.data, max_log),
                    Some(Message::End(_)) => {}
                    Some(Message::Error(error)) => break Outcome::Error(error.kind, error.message),
                    Some(_) => {}
                },
                _ = flush.tick() => {
                    // The node is recorded once the attempt outlives a
                    // flush period; a shorter one records it with its
                    // end, one write instead of two.
                    if let Some(node_id) = node.as_deref().filter(|_| !recorded) {
                        self.dispatched(view, attempt, node_id).await;
                        recorded = true;
                    }
                    self.store_log(&view.id, &mut log.lines).await;
                    if let Some(node_id) = &node
                        && !node_alive(&shared, node_id, lease)
                    {
                        break Outcome::LeaseLost(node_id.clone());
                    }
                }
            }
        };
        if node.is_none() {
            self.admitted_done(&view.service);
        }
        // Dropping the call's channel stops the node's work (the process is
        // killed), for a stop and a lost lease alike.
        drop(rx);
        log.end(attempt, max_log);
        let note = match &outcome {
            Outcome::Stopped => Some("stopped by a user".to_owned()),
            Outcome::LeaseLost(node) => Some(format!("lease lost: node {node} silent")),
            Outcome::Error(ErrorKind::Timeout, _) => {
                Some(format!("watchdog: killed after {} s", view.watchdog_s))
            }
            Outcome::Error(kind, message) => Some(format!("failed ({kind}): {message}")),
            Outcome::Done => None,
        };
        if let Some(note) = note {
            log.lines.push((attempt, now_ms(), LogStream::System, note));
        }
        // The last lines are stored with the attempt's end (one write).
        Ended {
            outcome,
            result,
            content_type,
            lines: log.lines,
            node: node.filter(|_| !recorded),
        }
    }

    /// Records the node an attempt runs on (fenced).
    async fn dispatched(&self, view: &protocol::JobView, attempt: u32, node: &str) {
        let mut change = super::change(&view.id, &[JobState::Running], JobState::Running, now_ms());
        change.attempt = Some(attempt);
        change.node = Some(Some(node.to_owned()));
        change.note = Some(format!("on node {node}"));
        if let Err(error) = self.store.change(&change).await {
            tracing::warn!(job = %view.id, %error, "cannot record a job's node");
        }
    }

    /// Stores the lines read so far (each flush and before a retry).
    async fn store_log(&self, id: &str, lines: &mut Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        let lines = std::mem::take(lines);
        match self.store.append_log(id, &lines).await {
            Ok(_) => self.announce(id),
            Err(error) => tracing::warn!(job = %id, %error, "cannot store a job's log lines"),
        }
    }

    /// Writes how the attempt ended, fenced: a job cancelled, restarted or
    /// deleted meanwhile, or moved on after a lost lease, is left as it is
    /// (the late answer is discarded; its last log lines are kept). A final
    /// state, the result and the last log lines are one transaction.
    async fn finish(&self, job: &StoredJob, attempt: u32, ended: Ended) {
        let view = &job.view;
        let now = now_ms();
        // Its series' label: `_unknown` for a service the fleet does not know.
        let service = labels::service(&view.service);
        let Ended {
            outcome,
            result,
            content_type,
            mut lines,
            node,
        } = ended;
        let (to, error) = match outcome {
            Outcome::Stopped => {
                self.store_log(&view.id, &mut lines).await;
                return;
            }
            Outcome::Done => (JobState::Succeeded, None),
            Outcome::Error(ErrorKind::Timeout, _) => {
                metrics::counter!("jobs_watchdog_kills_total", "service" => service.clone())
                    .increment(1);
                let why = format!("watchdog: killed after {} s", view.watchdog_s);
                (JobState::TimedOut, Some(why))
            }
            Outcome::Error(ErrorKind::Occupied, message) => (JobState::Occupied, Some(message)),
            Outcome::Error(kind @ (ErrorKind::NodeLost | ErrorKind::ShuttingDown), message) => {
                let why = format!("{kind}: {message}");
                self.store_log(&view.id, &mut lines).await;
                if self.retry(view, attempt, &why).await {
                    return;
                }
                (JobState::Failed, Some(why))
            }
            Outcome::Error(kind, message) => (JobState::Failed, Some(format!("{kind}: {message}"))),
            Outcome::LeaseLost(node) => {
                let why = format!("lease lost: node {node} silent");
                self.store_log(&view.id, &mut lines).await;
                if self.retry(view, attempt, &why).await {
                    return;
                }
                (JobState::Failed, Some(why))
            }
        };
        let mut change = super::change(&view.id, &[JobState::Running], to, now);
        change.attempt = Some(attempt);
        change.finished_ms = Some(Some(now));
        change.owner = Some(None);
        change.lease_until_ms = Some(None);
        change.error = Some(error.clone());
        change.note = error;
        // A short attempt's node, not recorded while it ran.
        change.node = node.map(Some);
        let keep_result = !result.is_empty() || to == JobState::Succeeded;
        let result = keep_result.then_some((result.as_slice(), content_type.as_deref()));
        match self.store.finish(&change, result, &lines).await {
            Ok(true) => {
                let took = now.saturating_sub(view.created_ms) as f64 / 1000.0;
                metrics::counter!("jobs_finished_total", "service" => service.clone(), "state" => to.as_str())
                    .increment(1);
                metrics::histogram!("job_duration_seconds", "service" => service, "state" => to.as_str())
                    .record(took);
            }
            Ok(false) => {
                metrics::counter!("jobs_late_results_total").increment(1);
                tracing::info!(job = %view.id, attempt, "an old attempt's end discarded");
            }
            Err(error) => tracing::warn!(job = %view.id, %error, "cannot store a job's end"),
        }
        self.announce(&view.id);
    }

    /// Puts a job lost with its node back to waiting when it is idempotent
    /// and has attempts left; false when it must fail instead.
    pub(crate) async fn retry(&self, view: &protocol::JobView, attempt: u32, why: &str) -> bool {
        if !view.idempotent || attempt >= view.max_attempts {
            return false;
        }
        let mut change = super::change(&view.id, &[JobState::Running], JobState::Waiting, now_ms());
        change.attempt = Some(attempt);
        change.owner = Some(None);
        change.lease_until_ms = Some(None);
        change.node = Some(None);
        change.note = Some(format!(
            "{why}; attempt {} of {} next",
            attempt + 1,
            view.max_attempts
        ));
        match self.store.change(&change).await {
            Ok(true) => {
                metrics::counter!("jobs_retries_total", "service" => labels::service(&view.service))
                    .increment(1);
                if let Ok(mut inner) = self.inner.lock() {
                    inner.waiting.push(&view.id, &view.service, view.priority);
                }
                self.announce(&view.id);
                self.wake.notify_one();
                true
            }
            // Cancelled or moved on meanwhile: nothing more to do, and no
            // failure to write either.
            Ok(false) => true,
            Err(error) => {
                tracing::warn!(job = %view.id, %error, "cannot requeue a job");
                false
            }
        }
    }
}

/// Whether `node` has reported on its control stream within `lease`, or
/// within two of its heartbeats where that is longer: a node whose stats
/// do not change reports only every heartbeat.
fn node_alive(shared: &crate::Shared, node: &str, lease: Duration) -> bool {
    shared
        .registry
        .get(node)
        .and_then(|n| n.view(std::time::Instant::now()))
        .is_some_and(|view| {
            let heartbeats = 2 * u128::from(view.spec.report_period_ms());
            u128::from(view.last_stats_ms) <= lease.as_millis().max(heartbeats)
        })
}

/// The history note of an attempt's start: `attempt 2 of 3`; past
/// `max_attempts` (after a restart) `attempt 4, restarted past
/// max_attempts 3` rather than `attempt 4 of 3`.
fn attempt_note(attempt: u32, max_attempts: u32) -> String {
    if attempt <= max_attempts {
        format!("attempt {attempt} of {max_attempts}")
    } else {
        format!("attempt {attempt}, restarted past max_attempts {max_attempts}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_past_max_attempts_is_noted_as_a_restart() {
        assert_eq!(attempt_note(1, 3), "attempt 1 of 3");
        assert_eq!(attempt_note(3, 3), "attempt 3 of 3");
        assert_eq!(
            attempt_note(2, 1),
            "attempt 2, restarted past max_attempts 1"
        );
    }

    #[test]
    fn output_becomes_lines_per_stream_and_stays_bounded() {
        let mut log = LogBuf::default();
        log.push(1, LogStream::Stdout, b"one\ntw", 1000);
        log.push(1, LogStream::Stderr, b"err\r\n", 1000);
        log.push(1, LogStream::Stdout, b"o\nlast", 1000);
        log.end(1, 1000);
        let lines: Vec<_> = log
            .lines
            .iter()
            .map(|(_, _, s, l)| format!("{}: {l}", s.as_str()))
            .collect();
        assert_eq!(
            lines,
            ["stdout: one", "stderr: err", "stdout: two", "stdout: last"]
        );

        let mut small = LogBuf::default();
        small.push(1, LogStream::Stdout, b"0123456789\nabcdefghij\nmore\n", 15);
        let kept: Vec<_> = small
            .lines
            .iter()
            .map(|(_, _, s, l)| (*s, l.clone()))
            .collect();
        assert_eq!(kept[0], (LogStream::Stdout, "0123456789".to_owned()));
        assert_eq!(kept[1].0, LogStream::System, "one note past the bound");
        assert_eq!(kept.len(), 2);
    }
}
