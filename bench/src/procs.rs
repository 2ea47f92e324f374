//! Child processes of the suite: started with their output in a log file,
//! killed when dropped; CPU seconds from `/proc/PID/stat` (utime + stime,
//! clock ticks of `getconf CLK_TCK`, assumed 100 when that fails) and RSS
//! from `/proc/PID/status`.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A started program, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    /// Short name, for messages.
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `bin_dir/gateway --config conf` as `name`, its output in
    /// `dir/gateway.log`, and waits until its admin port `admin` accepts
    /// connections.
    ///
    /// # Errors
    /// It cannot be started, its admin port is not open within 30 s, or it
    /// exited.
    pub fn gateway(
        name: &str,
        bin_dir: &Path,
        conf: &Path,
        dir: &Path,
        admin: u16,
    ) -> Result<Self> {
        let c = conf.display().to_string();
        let mut gateway = Self::spawn(
            name,
            &bin_dir.join("gateway"),
            &["--config", &c],
            &dir.join("gateway.log"),
        )?;
        wait_tcp(admin, Duration::from_secs(30))
            .with_context(|| format!("{name}: see {}", dir.join("gateway.log").display()))?;
        gateway.check_alive()?;
        Ok(gateway)
    }

    /// Starts `program` with `args`, stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// The log cannot be created or the program cannot be started.
    pub fn spawn(name: &str, program: &Path, args: &[&str], log: &Path) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("log {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    ///
    /// # Errors
    /// The process has exited (with its status).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }
}

impl Proc {
    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, read once; 100 if that fails).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime and the parent pid from one `/proc/PID/stat` line, in
/// clock ticks. The command name (field 2) may hold spaces and parentheses,
/// so fields are counted after its last `)`.
pub fn parse_stat(line: &str) -> Option<StatLine> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(StatLine {
        ppid,
        ticks: utime + stime,
    })
}

/// What the suite reads from a `/proc/PID/stat` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatLine {
    /// The parent's pid.
    pub ppid: u32,
    /// utime + stime, clock ticks.
    pub ticks: u64,
}

fn stat_of(pid: u32) -> Option<StatLine> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid` and its descendants (nginx's workers), from a scan of `/proc`.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let Ok(dir) = fs::read_dir("/proc") else {
        return all;
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, stat_of(p)?.ppid)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    all
}

/// CPU seconds (user + system) used so far by `pids` and their descendants.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .flat_map(|p| tree(*p))
        .filter_map(|p| stat_of(p).map(|s| s.ticks))
        .sum();
    ticks as f64 / clock_ticks()
}

/// `VmRSS` of a `/proc/PID/status` text, KiB.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of `pids` and their descendants, MiB.
pub fn rss_mib(pids: &[u32]) -> f64 {
    let kib: u64 = pids
        .iter()
        .flat_map(|p| tree(*p))
        .filter_map(|p| parse_rss_kib(&fs::read_to_string(format!("/proc/{p}/status")).ok()?))
        .sum();
    kib as f64 / 1024.0
}

/// A loopback port free for both TCP and UDP right now.
///
/// # Errors
/// No port could be bound.
pub fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}

/// Waits until something accepts TCP connections on `port`.
///
/// # Errors
/// Nothing listens within `within`.
pub fn wait_tcp(port: u16, within: Duration) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < within {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port} after {within:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_utime_plus_stime_even_with_odd_names() {
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    123 45 0 0 20 0 3 0 100 1000000 200 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(StatLine {
                ppid: 1,
                ticks: 168
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let me = std::process::id();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_seconds(&[me]) > 0.0);
        assert!(rss_mib(&[me]) > 0.0);
        assert_eq!(parse_rss_kib("Name: x\nVmRSS:\t  1234 kB\n"), Some(1234));
    }
}
