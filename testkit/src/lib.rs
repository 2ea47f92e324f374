//! Harnesses for Switchyard's own tests (not published).
//!
//! [`Postgres`]: a throwaway PostgreSQL cluster in a temporary directory,
//! on a free loopback port, stopped and removed when dropped. Tests of code
//! that stores in PostgreSQL run against it; it needs the server's
//! binaries (`initdb`, `pg_ctl`: Debian's `postgresql` package, which
//! `make setup` installs).
//!
//! [`Etcd`]: a throwaway single-member etcd cluster in a temporary
//! directory, on free loopback ports, which a test can stop and restart
//! (same ports, same data) and which is killed and removed when dropped. It
//! needs the `etcd` binary (Debian's `etcd-server`, which `make setup`
//! installs).
//!
//! [`unassigned_port`]: a loopback port for a process a test starts, where
//! no port-0 bind or outgoing connection takes it first.
//!
//! [`skip_or_fail`]: whether a test that lacks something it needs skips
//! (on a developer's machine, with a `SWITCHYARD-SKIPPED` line) or fails
//! (under `SWITCHYARD_REQUIRE_ALL=1`, as in CI).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod etcd;
mod ports;
mod skip;
pub use etcd::{Etcd, EtcdError};
pub use ports::unassigned_port;
pub use skip::{REQUIRE_ALL_ENV, SKIP_LOG_ENV, SKIPPED_PREFIX, skip_or_fail};

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// PostgreSQL's server binaries are not installed.
    #[error("postgres harness: missing {} ({})", MISSING_SERVER, HOW_TO_INSTALL)]
    NotInstalled,
    /// A command could not be run or failed.
    #[error("postgres harness: {what} failed: {why}")]
    Command {
        /// The command, in words.
        what: String,
        /// Its exit status and output.
        why: String,
    },
    /// The temporary directory or a port could not be had.
    #[error("postgres harness: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not accept connections in time.
    #[error("postgres harness: the server on port {port} did not start within {secs} s")]
    Timeout {
        /// Its port.
        port: u16,
        /// How long it was given, s.
        secs: u64,
    },
}

/// A throwaway PostgreSQL cluster: `initdb -A trust -U postgres` in a
/// temporary directory, started with `pg_ctl` on a free loopback port
/// (`fsync=on`), stopped (`pg_ctl stop -m immediate`) and removed on drop.
///
/// PostgreSQL refuses to run as root: under uid 0 the binaries run as the
/// user `postgres` (`runuser -u postgres --`), which owns the directory.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// What a machine without PostgreSQL's server lacks.
const MISSING_SERVER: &str =
    "PostgreSQL's initdb and pg_ctl (neither on PATH nor in /usr/lib/postgresql/*/bin)";

/// How to get them.
const HOW_TO_INSTALL: &str = "`make setup` installs Debian's package postgresql";

/// How many free ports a start tries before it gives up.
const PORT_TRIES: u32 = 5;

/// How long the server is given to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl Postgres {
    /// Starts a cluster for a test that skips without one: `Ok(None)` only
    /// when the binaries are absent (not on `PATH`, nor in
    /// `/usr/lib/postgresql/*/bin`), as [`skip_or_fail`] decides: it
    /// prints and logs the skip, or panics under
    /// `SWITCHYARD_REQUIRE_ALL=1`.
    ///
    /// # Errors
    /// A [`PostgresError`] when the binaries exist but the cluster does
    /// not start.
    #[track_caller]
    pub fn start() -> Result<Option<Self>, PostgresError> {
        match Self::start_required() {
            Err(PostgresError::NotInstalled) => {
                skip_or_fail(MISSING_SERVER, HOW_TO_INSTALL);
                Ok(None)
            }
            started => started.map(Some),
        }
    }

    /// Starts a cluster, for a caller that has no use for a skip (a test
    /// that fails without the server, a benchmark that notes its absence).
    ///
    /// # Errors
    /// [`PostgresError::NotInstalled`] when the binaries are absent; any
    /// other [`PostgresError`] when they exist but the cluster does not
    /// start.
    pub fn start_required() -> Result<Self, PostgresError> {
        let bin = find_bin_dir().ok_or(PostgresError::NotInstalled)?;
        let dir = tempfile::Builder::new().prefix("switchyard-pg").tempdir()?;
        let as_postgres = is_root();
        if as_postgres {
            run(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:")
                    .arg(dir.path()),
                "chown of the cluster's directory to postgres",
            )?;
        }
        let mut pg = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = pg.data_dir();
        run(
            pg.command("initdb")
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
                .arg("-D")
                .arg(&data),
            "initdb",
        )?;
        let log = pg.dir.path().join("server.log");
        // Its port lies below the ephemeral range, yet a program outside
        // this process may still take it before the server binds it: then
        // it starts again on another.
        let mut tries = 0;
        loop {
            tries += 1;
            pg.port = unassigned_port()?;
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
                pg.port,
                pg.dir.path().display()
            );
            let started = run(
                pg.command("pg_ctl")
                    .args(["start", "-w", "-t", "60", "-D"])
                    .arg(&data)
                    .arg("-l")
                    .arg(&log)
                    .arg("-o")
                    .arg(options),
                "pg_ctl start",
            );
            match started {
                Ok(_) => break,
                Err(_) if tries < PORT_TRIES && port_was_taken(&log) => {
                    pg.port = 0;
                    let _ = std::fs::remove_file(&log);
                }
                Err(e) => {
                    return Err(with_log(e, &log));
                }
            }
        }
        pg.wait_until_accepting()?;
        Ok(pg)
    }

    /// The cluster's `postgres` database as the superuser `postgres`:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` on this cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` (`createdb`) and returns its URL.
    ///
    /// # Errors
    /// [`PostgresError::Command`] when `createdb` fails (e.g. the name is
    /// taken).
    pub fn create_database(&self, name: &str) -> Result<String, PostgresError> {
        let port = self.port.to_string();
        run(
            self.command("createdb")
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name]),
            "createdb",
        )?;
        Ok(self.url_of(name))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for the binary `name` of the cluster's installation, run
    /// as `postgres` under root.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn wait_until_accepting(&self) -> Result<(), PostgresError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let port = self.port.to_string();
        loop {
            let ready = TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self
                    .command("pg_isready")
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-q"])
                    .status()
                    .map(|s| s.success())
                    // No pg_isready: the open port is enough.
                    .unwrap_or(true);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PostgresError::Timeout {
                    port: self.port,
                    secs: START_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&data)
            .output();
    }
}

/// The newest directory holding both `initdb` and `pg_ctl`: the one on
/// `PATH` first, else `/usr/lib/postgresql/<newest>/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_both(&d) {
                // Resolve links (Debian's /usr/local/bin links) so that the
                // other binaries (createdb, pg_isready) come from the same
                // installation.
                let dir = std::fs::canonicalize(d.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .filter(|p| has_both(p))
                    .unwrap_or(d);
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether the server's log says its port was in use.
fn port_was_taken(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains("Address already in use"))
}

fn run(command: &mut Command, what: &str) -> Result<Output, PostgresError> {
    let out = command.output().map_err(|e| PostgresError::Command {
        what: what.to_string(),
        why: e.to_string(),
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(PostgresError::Command {
            what: what.to_string(),
            why: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// Adds the server's log to a failed start.
fn with_log(e: PostgresError, log: &Path) -> PostgresError {
    match e {
        PostgresError::Command { what, why } => PostgresError::Command {
            what,
            why: format!(
                "{why}\nserver log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_accepts_and_stops() {
        let Some(pg) = Postgres::start().expect("start") else {
            return;
        };
        assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
        let port = pg.port();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        let url = pg.create_database("other").expect("createdb");
        assert!(url.ends_with("/other"));
        drop(pg);
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "stopped on drop"
        );
    }
}
