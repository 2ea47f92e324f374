//! A swappable service's server process: started in its own process group
//! with stdin held open for its life, its output logged line by line, and
//! watched by a supervisor task until it exits or is stopped. Also the
//! one-shot commands around it (`stop`, `ready_command`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::SwapConfig;
use crate::services::{GroupGuard, describe, kill_group, read_tail, signal_group};

/// How long a stopped process has between SIGTERM and SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the `stop` command may run.
pub(crate) const STOP_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the output readers get to catch up once the process exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// How much of the server's stderr is kept for error messages, bytes.
const STDERR_TAIL: usize = 1024;
/// Longest logged output line, bytes; the rest of the line is dropped.
const MAX_LINE: usize = 4096;

/// Called once with the exit reason when the process exits on its own (not
/// after [`Process::stop`]).
pub(crate) type OnExit = Box<dyn FnOnce(String) + Send>;

/// A running (or exited, not yet stopped) server process. Dropping it kills
/// the process group at once; [`Process::stop`] stops it gracefully.
#[derive(Debug)]
pub(crate) struct Process {
    /// Asks the supervisor to stop the process; it answers once reaped.
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    /// Why the process exited, once it did.
    exited: watch::Receiver<Option<String>>,
    /// Set before a requested stop, so that the exit is not reported as the
    /// process dying on its own.
    stopping: Arc<AtomicBool>,
}

/// Where a process's output is logged from.
#[derive(Debug, Clone)]
struct Label {
    slot: String,
    service: String,
}

impl Process {
    /// Starts `swap.start` for `service` in `slot`.
    ///
    /// # Errors
    /// Why the program could not be started (`cannot run PROGRAM: ...`).
    pub(crate) fn spawn(
        swap: &SwapConfig,
        slot: &str,
        service: &str,
        on_exit: OnExit,
    ) -> Result<Self, String> {
        let (mut command, program) = command(&swap.start, &swap.env, swap.cwd.as_ref())?;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let label = Label {
            slot: slot.into(),
            service: service.into(),
        };
        let tail = Arc::new(Mutex::new(String::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(log_lines(stdout, label.clone(), "stdout", None));
        }
        let stderr = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(log_lines(pipe, label, "stderr", Some(Arc::clone(&tail)))));
        let stdin = child.stdin.take();
        let (stop, stop_rx) = oneshot::channel();
        let (exited_tx, exited) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let supervisor = Supervisor {
            stdin,
            stderr,
            tail,
            exited: exited_tx,
            stopping: Arc::clone(&stopping),
            on_exit,
        };
        tokio::spawn(supervisor.run(child, stop_rx));
        Ok(Self {
            stop: Some(stop),
            exited,
            stopping,
        })
    }

    /// Why the process exited (`exited with exit status 1: STDERR TAIL`), if
    /// it did.
    pub(crate) fn exited(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// Completes when the process has exited, with the reason.
    pub(crate) async fn wait_exit(&self) -> String {
        let mut exited = self.exited.clone();
        match exited.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The supervisor is gone, and with it the process.
            Err(_) => "exited".into(),
        }
    }

    /// Stops the process: runs `swap.stop` (if set, and the process still
    /// runs) for up to 30 s, then SIGTERM to the process group, SIGKILL 5 s
    /// later if the process still runs, and reaps it. The signals are sent
    /// even when the stop command failed.
    ///
    /// # Errors
    /// Why the stop command failed (it did not start, exited non-zero or
    /// ran past 30 s).
    pub(crate) async fn stop(mut self, swap: &SwapConfig) -> Result<(), String> {
        self.stopping.store(true, Ordering::SeqCst);
        let mut result = Ok(());
        if let Some(stop) = &swap.stop
            && self.exited().is_none()
        {
            result = run_command(stop, &swap.env, swap.cwd.as_ref(), STOP_COMMAND_TIMEOUT).await;
        }
        if let Some(stop) = self.stop.take() {
            let (reply, done) = oneshot::channel();
            if stop.send(reply).is_ok() {
                // An error means the supervisor is gone: nothing left to wait for.
                let _ = done.await;
            }
        }
        result
    }
}

/// The task that owns the child: waits for it to exit, or stops it.
struct Supervisor {
    /// Held open for the process's life, so a server may exit on EOF once
    /// the agent is gone.
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<()>>,
    tail: Arc<Mutex<String>>,
    exited: watch::Sender<Option<String>>,
    stopping: Arc<AtomicBool>,
    on_exit: OnExit,
}

impl Supervisor {
    async fn run(mut self, mut child: Child, mut stop: oneshot::Receiver<oneshot::Sender<()>>) {
        // Kills the group if this task is dropped (runtime shutdown) while
        // the leader is not reaped.
        let mut group = GroupGuard(child.id());
        let request = tokio::select! {
            status = child.wait() => {
                group.0 = None;
                self.stdin = None;
                let reason = self.reason(status).await;
                let _ = self.exited.send(Some(reason.clone()));
                if !self.stopping.load(Ordering::SeqCst) {
                    (self.on_exit)(reason);
                }
                // Answer a later stop at once.
                if let Ok(reply) = stop.await {
                    let _ = reply.send(());
                }
                return;
            }
            request = &mut stop => request,
        };
        let pid = group.0;
        self.stdin = None;
        let status = match request {
            Ok(_) => {
                if let Some(pid) = pid {
                    signal_group(pid, Signal::SIGTERM);
                }
                match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        tracing::warn!(
                            "process still runs {} s after SIGTERM; killing it",
                            STOP_GRACE.as_secs()
                        );
                        kill(&mut child, pid).await
                    }
                }
            }
            // The handle was dropped: no time for grace.
            Err(_) => kill(&mut child, pid).await,
        };
        group.0 = None;
        let reason = self.reason(status).await;
        let _ = self.exited.send(Some(reason));
        if let Ok(reply) = request {
            let _ = reply.send(());
        }
    }

    /// The exit status in words, with the tail of stderr.
    async fn reason(&mut self, status: std::io::Result<std::process::ExitStatus>) -> String {
        if let Some(reader) = self.stderr.take() {
            // The pipe may stay open in a grandchild: do not wait for ever.
            let _ = tokio::time::timeout(OUTPUT_GRACE, reader).await;
        }
        let mut reason = match status {
            Ok(status) => format!("exited with {}", describe(status)),
            Err(e) => format!("exited (cannot wait for it: {e})"),
        };
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        let tail = tail.trim();
        if !tail.is_empty() {
            reason.push_str(": ");
            reason.push_str(tail);
        }
        reason
    }
}

/// SIGKILL to the group, then reaps the leader.
async fn kill(child: &mut Child, pid: Option<u32>) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pid) = pid {
        kill_group(pid);
    }
    if let Err(e) = child.start_kill() {
        tracing::debug!("killing the process: {e}");
    }
    child.wait().await
}

/// A command for `argv` in its own process group, killed when dropped, and
/// the program's name.
fn command<'a>(
    argv: &'a [String],
    env: &BTreeMap<String, String>,
    cwd: Option<&PathBuf>,
) -> Result<(Command, &'a str), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no program to run".into());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env)
        .kill_on_drop(true)
        .process_group(0);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    Ok((command, program))
}

/// Runs a one-shot command (`stop`, `ready_command`) to its end, killing its
/// process group past `timeout`.
///
/// # Errors
/// `cannot run PROGRAM: ...`, `PROGRAM exited with exit status N: STDERR`
/// or `PROGRAM did not finish within N s`.
pub(crate) async fn run_command(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&PathBuf>,
    timeout: Duration,
) -> Result<(), String> {
    let (mut command, program) = command(argv, env, cwd)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut group = GroupGuard(child.id());
    let stderr = child.stderr.take();
    let run = async {
        let (err, _) = match stderr {
            Some(pipe) => read_tail(pipe, STDERR_TAIL).await,
            None => (Vec::new(), false),
        };
        (child.wait().await, err)
    };
    let outcome = tokio::time::timeout(timeout, run).await;
    let result = match outcome {
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), err)) => {
            let err = String::from_utf8_lossy(&err);
            let err = err.trim();
            let mut message = format!("{program} exited with {}", describe(status));
            if !err.is_empty() {
                message.push_str(": ");
                message.push_str(err);
            }
            Err(message)
        }
        Ok((Err(e), _)) => Err(format!("cannot wait for {program}: {e}")),
        Err(_) => {
            if let Some(pid) = group.0 {
                kill_group(pid);
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(format!(
                "{program} did not finish within {} s",
                timeout.as_secs_f32()
            ))
        }
    };
    group.0 = None;
    result
}

/// Logs each line of `pipe` (lines cut at [`MAX_LINE`] bytes); stderr lines
/// are also kept in `tail`, its last [`STDERR_TAIL`] bytes.
async fn log_lines(
    mut pipe: impl AsyncRead + Unpin,
    label: Label,
    stream: &'static str,
    tail: Option<Arc<Mutex<String>>>,
) {
    let emit = |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end();
        if line.is_empty() {
            return;
        }
        tracing::info!(slot = %label.slot, service = %label.service, stream, "{line}");
        if let Some(tail) = &tail {
            let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if !tail.is_empty() {
                tail.push('\n');
            }
            tail.push_str(line);
            keep_last(&mut tail, STDERR_TAIL);
        }
    };
    let mut line = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &chunk[..n] {
            if byte == b'\n' {
                emit(&line);
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(byte);
            }
        }
    }
    emit(&line);
}

/// Keeps the last `max` bytes of `text` (at a character boundary).
fn keep_last(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text.drain(..start);
}
