//! `command` services: one process per call, payload on stdin, result
//! streamed from stdout as the program writes it (bounded in total), stderr's
//! tail kept for the error (and streamed as log chunks when the call asked
//! for its log); killed and reaped on timeout or when the call is
//! dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::logs;
use super::reply::{self, Body, Reply, Sink};
use super::{CommandConfig, MAX_ERROR_MESSAGE, ServiceError};

/// How much of stderr is kept for the error message: its last ~4 KiB, leaving
/// room for the exit status so the message is not cut again.
const STDERR_KEEP: usize = MAX_ERROR_MESSAGE - 64;

#[derive(Debug)]
pub(crate) struct CommandService {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    max_output: u64,
}

/// Most stdout bytes read at once: one read is one chunk of the result.
const READ_CHUNK: usize = 16 * 1024;

/// Why reading a pipe stopped early.
enum PipeError {
    Overflow,
    /// The reader of the result went away.
    Closed,
    Io(std::io::Error),
}

impl CommandService {
    pub(crate) fn new(config: &CommandConfig) -> Self {
        Self {
            argv: config.argv.clone(),
            env: config.env.clone(),
            cwd: config.cwd.clone(),
            max_output: config.max_output_bytes,
        }
    }

    /// Starts the command once and streams its stdout as it is written.
    /// Past `timeout` the process is killed and reaped and the stream ends
    /// with `Timeout`; dropping the stream kills it too (`kill_on_drop` and
    /// its process group). A non-zero exit ends the stream with
    /// `ServiceFailed` carrying the exit status and the tail of stderr.
    /// With `log`, stderr also streams as log chunks (whole lines as they
    /// are written), among the stdout chunks.
    ///
    /// # Errors
    /// `ServiceFailed` when the program cannot be started, `Internal` when
    /// its pipes are missing.
    pub(crate) fn start(
        &self,
        payload: Bytes,
        timeout: Duration,
        log: bool,
    ) -> Result<Reply, ServiceError> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err(ServiceError::internal("command service has no program"));
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a timeout kills what it started too
            // (`sh -c "a | b"`), not just the direct child.
            .process_group(0);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .spawn()
            .map_err(|e| ServiceError::failed(format!("cannot start {program}: {e}")))?;
        let group = GroupGuard(child.id());
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Dropping `child` kills it (kill_on_drop), `group` its group.
            return Err(ServiceError::internal("child process pipes missing"));
        };
        let max_output = self.max_output;
        let chunks = reply::stream(move |sink| async move {
            let mut child = child;
            // Declared after `child`, so it drops first: a cancelled call
            // (the task aborted) kills the group while the leader is still
            // unreaped.
            let mut group = group;
            let pipes = Pipes {
                stdin,
                stdout,
                stderr,
                log,
            };
            let io = drive(&mut child, pipes, payload, max_output, &sink);
            let result = match tokio::time::timeout(timeout, io).await {
                Ok(result) => result,
                Err(_) => {
                    kill_and_reap(&mut child).await;
                    Err(ServiceError::timeout(timeout))
                }
            };
            // Reaped by now: its pid (and so the group id) may be reused.
            group.0 = None;
            result
        });
        Ok(Reply {
            content_type: None,
            status: None,
            body: Body::Stream(chunks),
        })
    }
}

/// A running command's pipes, and whether its stderr streams as log chunks.
struct Pipes {
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
    log: bool,
}

/// Feeds stdin while streaming stdout into `sink` and keeping stderr's tail
/// (streaming it too with `log`) so no pipe fills up and deadlocks, then
/// waits for the exit status.
async fn drive(
    child: &mut Child,
    pipes: Pipes,
    payload: Bytes,
    max_output: u64,
    sink: &Sink,
) -> Result<(), ServiceError> {
    let Pipes {
        mut stdin,
        stdout,
        stderr,
        log,
    } = pipes;
    let write = async move {
        // A command may exit without reading its input (BrokenPipe): its exit
        // status tells what happened, so write errors are not failures.
        if let Err(e) = stdin.write_all(&payload).await {
            tracing::debug!("writing the payload to stdin stopped: {e}");
        }
        drop(stdin);
        Ok::<_, PipeError>(())
    };
    let read_err = async {
        if log {
            logs::relay_stderr(stderr, STDERR_KEEP, sink)
                .await
                .map_err(|_| PipeError::Closed)
        } else {
            Ok(read_tail(stderr, STDERR_KEEP).await)
        }
    };
    let read_out = relay_bounded(stdout, max_output, sink);
    let (_, (), (err, cut)) = match tokio::try_join!(write, read_out, read_err) {
        Ok(done) => done,
        Err(e) => {
            kill_and_reap(child).await;
            return Err(match e {
                PipeError::Overflow => {
                    ServiceError::failed(format!("output exceeds {max_output} bytes"))
                }
                PipeError::Closed => ServiceError::internal("the call was abandoned"),
                PipeError::Io(e) => ServiceError::internal(format!("reading stdout: {e}")),
            });
        }
    };
    let status = child
        .wait()
        .await
        .map_err(|e| ServiceError::internal(format!("waiting for the command: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&err);
    let stderr = stderr.trim();
    let mut message = describe(status);
    if !stderr.is_empty() {
        message.push_str(": ");
        if cut {
            message.push_str("...");
        }
        message.push_str(stderr);
    }
    Err(ServiceError::failed(message))
}

/// Hands `pipe`'s bytes to `sink` as they come, failing as soon as more than
/// `max` bytes came.
async fn relay_bounded(
    mut pipe: impl AsyncRead + Unpin,
    max: u64,
    sink: &Sink,
) -> Result<(), PipeError> {
    let mut total = 0u64;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        let n = pipe.read_buf(&mut buf).await.map_err(PipeError::Io)?;
        if n == 0 {
            return Ok(());
        }
        total += n as u64;
        if total > max {
            return Err(PipeError::Overflow);
        }
        sink.data(buf.split().freeze())
            .await
            .map_err(|_| PipeError::Closed)?;
    }
}

/// Reads all of `pipe`, keeping only its last `keep` bytes; says whether
/// anything was dropped. A read error ends the reading quietly.
pub(crate) async fn read_tail(mut pipe: impl AsyncRead + Unpin, keep: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut cut = false;
    let mut chunk = vec![0; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * keep {
                    kept.drain(..kept.len() - keep);
                    cut = true;
                }
            }
        }
    }
    if kept.len() > keep {
        kept.drain(..kept.len() - keep);
        cut = true;
    }
    (kept, cut)
}

/// Kills a command's process group when dropped, unless disarmed (`0 = None`)
/// once the leader is reaped.
pub(crate) struct GroupGuard(pub(crate) Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_group(pid);
        }
    }
}

/// SIGKILL to the process group `pid` leads. Call only while the leader is
/// not yet reaped, so the group id cannot belong to anyone else.
pub(crate) fn kill_group(pid: u32) {
    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Sends `signal` to the process group `pid` leads, with the same caveat as
/// [`kill_group`].
pub(crate) fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if let Err(e) = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal) {
        tracing::debug!("sending {signal} to process group {pid}: {e}");
    }
}

/// Kills the process and its group (if they still run) and reaps it, so no
/// zombie is left.
async fn kill_and_reap(child: &mut Child) {
    if let Some(pid) = child.id() {
        kill_group(pid);
    }
    if let Err(e) = child.start_kill() {
        tracing::debug!("killing the command: {e}");
    }
    if let Err(e) = child.wait().await {
        tracing::debug!("reaping the command: {e}");
    }
}

pub(crate) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}
