//! `switchyard job ...`: durable jobs through the SDK (submit, list, show,
//! log, cancel, restart, delete, result) and their plain-text output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use client::{Client, JobFilter, JobSpec, JobState, JobView, LogEntry, LogStream};
use futures_util::StreamExt as _;

/// The `job` subcommands.
#[derive(Subcommand, Debug, PartialEq)]
pub enum JobCommand {
    /// Submit a job; prints its id (with --wait: follows its log to stderr
    /// and prints its result).
    Submit(SubmitArgs),
    /// List jobs, newest first.
    List {
        /// Only jobs in this state (waiting, running, succeeded, failed,
        /// timed_out, cancelled, ...).
        #[arg(long, value_parser = parse_state)]
        state: Option<JobState>,
        /// Only this service's jobs.
        #[arg(long)]
        service: Option<String>,
        /// Only this tenant's jobs (the admin token may ask for any).
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after this job id (a previous page's last line).
        #[arg(long)]
        cursor: Option<String>,
        /// Print the page as JSON (`jobs`, `next_cursor`).
        #[arg(long)]
        json: bool,
    },
    /// One job, with its history.
    Show {
        /// Job id.
        #[arg(value_parser = parse_job_id)]
        id: String,
        /// Print the job as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A job's log; with -f, follow it until the job ends.
    Log {
        /// Job id.
        #[arg(value_parser = parse_job_id)]
        id: String,
        /// Keep printing new lines until the job ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a waiting or running job.
    Cancel {
        /// Job id.
        #[arg(value_parser = parse_job_id)]
        id: String,
    },
    /// Start a job again as a new attempt.
    Restart {
        /// Job id.
        #[arg(value_parser = parse_job_id)]
        id: String,
    },
    /// Remove a job, its history and its log.
    Delete {
        /// Job id.
        #[arg(value_parser = parse_job_id)]
        id: String,
    },
    /// Show the job settings, or change them (needs --admin-token): the
    /// most jobs one node runs at once, every service together.
    Settings {
        /// New limit of jobs per node (0: no limit beyond its slots).
        #[arg(long)]
        max_per_node: Option<u32>,
        /// Print the settings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a job's stored result to stdout.
    Result {
        /// Job id.
        #[arg(value_parser = parse_job_id)]
        id: String,
    },
}

/// `job submit`'s options.
#[derive(clap::Args, Debug, PartialEq)]
pub struct SubmitArgs {
    /// Service to run (or give --template).
    #[arg(required_unless_present = "template", conflicts_with = "template")]
    pub service: Option<String>,
    /// Payload as text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Payload from a file (`-` for stdin).
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Template whose payload pattern --param fills in.
    #[arg(long)]
    pub template: Option<String>,
    /// Template parameter KEY=VALUE (repeatable).
    #[arg(long = "param", value_parser = parse_pair)]
    pub params: Vec<(String, String)>,
    /// Higher runs first among waiting jobs.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// With no free slot now, end as `occupied` instead of waiting.
    #[arg(long)]
    pub realtime: bool,
    /// Kill the job after this many seconds of running.
    #[arg(long)]
    pub watchdog: Option<u32>,
    /// Attempts in all.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Safe to run again after a lost node or gateway.
    #[arg(long)]
    pub idempotent: bool,
    /// Label KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_pair)]
    pub labels: Vec<(String, String)>,
    /// Policy hint KEY=VALUE (repeatable).
    #[arg(long = "hint", value_parser = parse_pair)]
    pub hints: Vec<(String, String)>,
    /// Follow the log until the job ends, then print its result.
    #[arg(long)]
    pub wait: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// A job id as given on the command line: not empty (the gateway checks
/// the rest).
fn parse_job_id(s: &str) -> Result<String, String> {
    let id = s.trim();
    if id.is_empty() {
        return Err("a job id must not be empty (`switchyard job list` shows them)".into());
    }
    Ok(id.to_owned())
}

fn parse_state(s: &str) -> Result<JobState, String> {
    JobState::parse(s).ok_or_else(|| format!("unknown job state {s:?}"))
}

impl SubmitArgs {
    /// The job to submit; reads the payload file (`-`: stdin).
    ///
    /// # Errors
    /// An unreadable payload file.
    pub fn spec(&self) -> anyhow::Result<JobSpec> {
        let payload = match (&self.payload, &self.payload_file) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(path)) if path.as_os_str() == "-" => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                buf
            }
            (None, Some(path)) => std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
            (None, None) => Vec::new(),
        };
        let map = |pairs: &[(String, String)]| pairs.iter().cloned().collect::<BTreeMap<_, _>>();
        Ok(JobSpec {
            service: self.service.clone(),
            template: self.template.clone(),
            params: map(&self.params),
            payload,
            hints: map(&self.hints),
            priority: self.priority,
            realtime: self.realtime,
            watchdog_s: self.watchdog,
            max_attempts: self.max_attempts,
            idempotent: self.idempotent,
            labels: map(&self.labels),
        })
    }
}

/// Runs one `job` subcommand.
///
/// # Errors
/// The gateway's error, a connection error, or (`submit --wait`) a job
/// that did not succeed.
pub async fn run(client: &Client, command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Submit(args) => {
            let job = client.submit_job(args.spec()?).await?;
            println!("{}", job.id);
            if args.wait {
                follow(client, &job.id, true).await?;
                let job = client.job(&job.id).await?;
                if job.state != JobState::Succeeded {
                    anyhow::bail!("{}", no_result(&job));
                }
                write_result(client, &job.id).await?;
            }
        }
        JobCommand::List {
            state,
            service,
            tenant,
            limit,
            cursor,
            json,
        } => {
            let filter = JobFilter {
                state,
                service,
                tenant,
                limit,
                cursor,
            };
            let page = client.jobs(filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                print!("{}", jobs_table(&page.jobs));
                if let Some(next) = page.next_cursor {
                    println!("(more: --cursor {next})");
                }
            }
        }
        JobCommand::Show { id, json } => {
            let job = client.job(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print!("{}", job_text(&job));
            }
        }
        JobCommand::Log { id, follow: true } => follow(client, &id, false).await?,
        JobCommand::Log { id, follow: false } => {
            for entry in client.job_log(&id, 0).await? {
                println!("{}", log_line(&entry));
            }
        }
        JobCommand::Cancel { id } => {
            let job = client.cancel_job(&id).await?;
            println!("{} {}", job.id, job.state);
        }
        JobCommand::Restart { id } => {
            let job = client.restart_job(&id).await?;
            println!("{} {}", job.id, job.state);
        }
        JobCommand::Delete { id } => {
            client.delete_job(&id).await?;
            println!("deleted {id}");
        }
        JobCommand::Result { id } => {
            let job = client.job(&id).await?;
            if job.result_len.is_none() {
                anyhow::bail!("{}", no_result(&job));
            }
            write_result(client, &id).await?;
        }
        JobCommand::Settings { max_per_node, json } => {
            let settings = match max_per_node {
                Some(max_per_node) => {
                    client
                        .set_job_settings(client::JobSettings { max_per_node })
                        .await?
                }
                None => client.job_settings().await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&settings)?);
            } else {
                let limit = match settings.max_per_node {
                    0 => "no limit".to_string(),
                    n => n.to_string(),
                };
                println!("max jobs per node: {limit}");
            }
        }
    }
    Ok(())
}

/// Prints the log's lines as they come until the job ends (to stderr with
/// `to_stderr`, so stdout keeps the result alone).
async fn follow(client: &Client, id: &str, to_stderr: bool) -> anyhow::Result<()> {
    let mut batches = Box::pin(client.follow_log(id, 0).await?);
    while let Some(batch) = batches.next().await {
        for entry in batch? {
            if to_stderr {
                eprintln!("{}", log_line(&entry));
            } else {
                println!("{}", log_line(&entry));
            }
        }
    }
    Ok(())
}

async fn write_result(client: &Client, id: &str) -> anyhow::Result<()> {
    let (data, _content_type) = client.job_result(id).await?;
    let mut stdout = std::io::stdout();
    stdout.write_all(&data)?;
    stdout.flush()?;
    Ok(())
}

/// Why `job` has no result to print: it ended otherwise (`job 01J… was
/// cancelled`, `… failed: exit status 1`) or has not ended yet.
pub fn no_result(job: &JobView) -> String {
    let state = job.state.as_str();
    // The error repeats the state for a cancelled job ("cancelled").
    let error = job
        .error
        .as_deref()
        .filter(|e| !e.is_empty() && *e != state);
    match (job.state, error) {
        (JobState::Cancelled, None) => format!("job {} was cancelled: it has no result", job.id),
        (JobState::Cancelled, Some(why)) => {
            format!("job {} was cancelled ({why}): it has no result", job.id)
        }
        (s, Some(why)) if s.is_final() => {
            format!("job {} {state}: {why}; it has no result", job.id)
        }
        (s, None) if s.is_final() => format!("job {} {state}: it has no result", job.id),
        _ => format!(
            "job {} is {state}: no result yet (`switchyard job log -f {}` follows it)",
            job.id, job.id
        ),
    }
}

/// A job's attempt against its `max_attempts`: `1/3`; past it, after a
/// restart, `4 (max 3, restarted)` rather than `4/3`.
pub fn attempt_text(attempt: u32, max_attempts: u32) -> String {
    if attempt <= max_attempts {
        format!("{attempt}/{max_attempts}")
    } else {
        format!("{attempt} (max {max_attempts}, restarted)")
    }
}

/// A log entry as one line: time (UTC), stream, attempt, text.
pub fn log_line(entry: &LogEntry) -> String {
    let stream = match entry.stream {
        LogStream::Stdout => "out",
        LogStream::Stderr => "err",
        LogStream::System => "sys",
    };
    format!(
        "{} {stream} #{} {}",
        utc(entry.ts_ms),
        entry.attempt,
        entry.line
    )
}

/// One line per job: id, state, service, attempt, priority, node, created.
pub fn jobs_table(jobs: &[JobView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:<10} {:<16} {:>7} {:>4} {:<16} CREATED (UTC)",
        "ID", "STATE", "SERVICE", "ATTEMPT", "PRIO", "NODE"
    );
    let mut restarted = false;
    for job in jobs {
        // Past max_attempts (after a restart) the column shows `4+`.
        let attempt = if job.attempt <= job.max_attempts {
            format!("{}/{}", job.attempt, job.max_attempts)
        } else {
            restarted = true;
            format!("{}+", job.attempt)
        };
        let _ = writeln!(
            out,
            "{:<26} {:<10} {:<16} {:>7} {:>4} {:<16} {}",
            job.id,
            job.state.as_str(),
            job.service,
            attempt,
            job.priority,
            job.node.as_deref().unwrap_or("-"),
            utc(job.created_ms)
        );
    }
    if restarted {
        out.push_str("(N+: attempt N, restarted past the job's max_attempts)\n");
    }
    out
}

/// A job's fields, then its history, one transition per line.
pub fn job_text(job: &JobView) -> String {
    let mut out = String::new();
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), utc);
    let pairs = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(out, "id:        {}", job.id);
    let _ = writeln!(out, "state:     {}", job.state);
    let _ = writeln!(out, "service:   {}", job.service);
    if let Some(template) = &job.template {
        let _ = writeln!(out, "template:  {template}");
    }
    let _ = writeln!(out, "tenant:    {}", job.tenant.as_deref().unwrap_or("-"));
    let _ = writeln!(
        out,
        "attempt:   {}",
        attempt_text(job.attempt, job.max_attempts)
    );
    let _ = writeln!(
        out,
        "priority:  {}{}{}",
        job.priority,
        if job.realtime { " realtime" } else { "" },
        if job.idempotent { " idempotent" } else { "" }
    );
    let _ = writeln!(out, "watchdog:  {} s", job.watchdog_s);
    let _ = writeln!(out, "node:      {}", job.node.as_deref().unwrap_or("-"));
    if let Some(position) = job.position {
        let _ = writeln!(out, "position:  {position}");
    }
    let _ = writeln!(out, "created:   {}", utc(job.created_ms));
    let _ = writeln!(out, "started:   {}", opt(job.started_ms));
    let _ = writeln!(out, "finished:  {}", opt(job.finished_ms));
    if let Some(len) = job.result_len {
        let _ = writeln!(out, "result:    {len} bytes");
    }
    if let Some(error) = &job.error {
        let _ = writeln!(out, "error:     {error}");
    }
    if !job.labels.is_empty() {
        let _ = writeln!(out, "labels:    {}", pairs(&job.labels));
    }
    if !job.hints.is_empty() {
        let _ = writeln!(out, "hints:     {}", pairs(&job.hints));
    }
    if !job.history.is_empty() {
        let _ = writeln!(out, "history:");
        for t in &job.history {
            let _ = write!(
                out,
                "  {} {:<10} #{}",
                utc(t.at_ms),
                t.state.as_str(),
                t.attempt
            );
            if let Some(node) = &t.node {
                let _ = write!(out, " on {node}");
            }
            if let Some(note) = &t.note {
                let _ = write!(out, ": {note}");
            }
            out.push('\n');
        }
    }
    out
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests;
