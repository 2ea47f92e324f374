//! A throwaway etcd member for tests of code that keeps state in etcd.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{skip_or_fail, unassigned_port};

/// Why an etcd member could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The `etcd` binary is not installed.
    #[error("etcd harness: missing {} ({})", MISSING_ETCD, HOW_TO_INSTALL)]
    NotInstalled,
    /// The temporary directory, a port or the process could not be had.
    #[error("etcd harness: {0}")]
    Io(#[from] std::io::Error),
    /// The member exited or did not answer `/health` in time.
    #[error("etcd harness: the member on {endpoint} did not start: {why}\nits log:\n{log}")]
    NotStarted {
        /// Its client URL.
        endpoint: String,
        /// What happened.
        why: String,
        /// Its output so far.
        log: String,
    },
}

/// What a machine without etcd lacks.
const MISSING_ETCD: &str = "etcd (not on PATH)";

/// How to get it.
const HOW_TO_INSTALL: &str = "`make setup` installs Debian's package etcd-server";

/// How many pairs of free ports a start tries before it gives up.
const PORT_TRIES: u32 = 5;

/// How long the member is given to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A throwaway single-member etcd cluster: `etcd --name t` with its data
/// and its log (`etcd.log`) in a temporary directory, its client and peer
/// URLs on free loopback ports. [`Etcd::stop`] kills it and keeps its data
/// and ports; [`Etcd::restart`] starts it again on both; drop kills it and
/// removes the directory.
#[derive(Debug)]
pub struct Etcd {
    dir: tempfile::TempDir,
    bin: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts a member for a test that skips without one: `Ok(None)` only
    /// when `etcd` is not on `PATH`, as [`skip_or_fail`] decides (it
    /// prints and logs the skip, or panics under
    /// `SWITCHYARD_REQUIRE_ALL=1`).
    ///
    /// # Errors
    /// An [`EtcdError`] when the binary exists but the member does not
    /// start.
    #[track_caller]
    pub fn start() -> Result<Option<Self>, EtcdError> {
        match Self::start_required() {
            Err(EtcdError::NotInstalled) => {
                skip_or_fail(MISSING_ETCD, HOW_TO_INSTALL);
                Ok(None)
            }
            started => started.map(Some),
        }
    }

    /// Starts a member, for a caller that has no use for a skip.
    ///
    /// # Errors
    /// [`EtcdError::NotInstalled`] when `etcd` is not on `PATH`; any other
    /// [`EtcdError`] when it is but the member does not start.
    pub fn start_required() -> Result<Self, EtcdError> {
        let bin = find_on_path("etcd").ok_or(EtcdError::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("switchyard-etcd")
            .tempdir()?;
        let mut etcd = Self {
            dir,
            bin,
            client_port: 0,
            peer_port: 0,
            child: None,
        };
        let mut tries = 0;
        loop {
            tries += 1;
            etcd.client_port = unassigned_port()?;
            etcd.peer_port = unassigned_port()?;
            match etcd.spawn_and_wait() {
                Ok(()) => return Ok(etcd),
                Err(_) if tries < PORT_TRIES && etcd.port_was_taken() => {
                    let _ = std::fs::remove_dir_all(etcd.data_dir());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Its client URL: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Its client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// Whether the process is running (started and not stopped, not
    /// exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the member (SIGKILL: as a crash or a lost machine looks to
    /// its clients) and waits for it; its data and ports are kept for
    /// [`Etcd::restart`]. Stopping a stopped member does nothing.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again on the same ports with the same data (a
    /// running one is stopped first) and waits until it answers.
    ///
    /// # Errors
    /// [`EtcdError::NotStarted`] when it does not answer in time (its
    /// ports taken meanwhile, say).
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        self.stop();
        self.spawn_and_wait()
    }

    /// The member's output so far (`etcd.log` in its directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn port_was_taken(&self) -> bool {
        self.log().contains("address already in use")
    }

    fn spawn_and_wait(&mut self) -> Result<(), EtcdError> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.bin)
            .args(["--name", "t", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if health(self.client_port) {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let why = match exited {
                Some(status) => Some(format!("it exited ({status})")),
                None if Instant::now() > deadline => Some(format!(
                    "no healthy answer within {} s",
                    START_TIMEOUT.as_secs()
                )),
                None => None,
            };
            if let Some(why) = why {
                self.stop();
                return Err(EtcdError::NotStarted {
                    endpoint: client,
                    why,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether etcd on `port` answers `GET /health` with `"health":"true"`.
fn health(port: u16) -> bool {
    let answer = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(500),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut body = String::new();
        s.take(64 * 1024).read_to_string(&mut body)?;
        Ok(body)
    };
    answer().is_ok_and(|a| a.replace(' ', "").contains("\"health\":\"true\""))
}

/// `name` in one of `PATH`'s directories.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// POSTs `body` to etcd's JSON gateway and returns the whole answer.
    fn post(port: u16, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        answer
    }

    #[test]
    fn a_member_starts_stops_and_restarts_with_its_data() {
        let Some(mut etcd) = Etcd::start().expect("start") else {
            return;
        };
        let port = etcd.port();
        assert_eq!(etcd.endpoint(), format!("http://127.0.0.1:{port}"));
        assert!(health(port));
        assert!(post(port, "/v3/kv/put", r#"{"key":"YQ==","value":"Yg=="}"#).contains("revision"));
        let data = etcd.data_dir();
        etcd.stop();
        assert!(!etcd.is_running());
        assert!(!health(port), "stopped");
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens"
        );
        assert!(data.join("member").is_dir(), "its data is kept");
        etcd.restart().expect("restart");
        assert!(etcd.is_running());
        assert_eq!(etcd.port(), port, "the same port");
        assert!(health(port));
        assert!(
            post(port, "/v3/kv/range", r#"{"key":"YQ=="}"#).contains(r#""value":"Yg==""#),
            "the key written before the stop is read after the restart"
        );
        let dir = etcd.dir.path().to_path_buf();
        drop(etcd);
        assert!(!health(port), "killed on drop");
        assert!(!dir.exists(), "its directory removed");
    }
}
