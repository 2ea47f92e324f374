//! The peers: one nginx process serving the two static backends, and the
//! proxies compared with Switchyard (nginx and HAProxy, one worker/thread,
//! least-connections, keep-alive to the backends, a plain and a TLS front).
//! Configs are written into a temp dir and the programs run in the
//! foreground: nginx `-p DIR -c CONF -g 'daemon off;'`, haproxy `-f CFG -db`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::procs::{Proc, free_port, wait_tcp};

/// Where Debian puts the peers' programs.
pub const NGINX: &str = "/usr/sbin/nginx";
/// HAProxy's program.
pub const HAPROXY: &str = "/usr/sbin/haproxy";
/// wrk, installed with the peers for runs by hand (the suite drives every
/// system with the load generator instead, so it is only checked for).
pub const WRK: &str = "/usr/bin/wrk";

/// Fails with the missing programs named when nginx or haproxy is absent
/// (`make bench` installs them: `BENCH_PACKAGES`); says so when wrk is.
///
/// # Errors
/// nginx or haproxy is missing.
pub fn check_installed() -> Result<()> {
    if !Path::new(WRK).exists() {
        eprintln!("note: {WRK} is missing (Debian package wrk; the suite does not need it)");
    }
    let missing: Vec<&str> = [NGINX, HAPROXY]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing {missing:?}: install the Debian packages haproxy nginx-light (make bench does)"
        );
    }
    Ok(())
}

/// A CA and a server certificate for `localhost`/`127.0.0.1` signed by it,
/// as files in `dir`: `ca.pem`, `cert.pem`, `key.pem` and `haproxy.pem`
/// (certificate and key in one file, as HAProxy wants).
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA clients trust.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Certificate then key, one PEM.
    pub combined: PathBuf,
}

impl Certs {
    /// Generates the certificates into `dir`.
    ///
    /// # Errors
    /// Key generation, signing or writing fails.
    pub fn generate(dir: &Path) -> Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "switchyard-bench CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        let cert = params.signed_by(&key, &ca)?;
        let certs = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            combined: dir.join("haproxy.pem"),
        };
        fs::write(&certs.ca, ca.pem())?;
        fs::write(&certs.cert, cert.pem())?;
        fs::write(&certs.key, key.serialize_pem())?;
        fs::write(
            &certs.combined,
            format!("{}{}", cert.pem(), key.serialize_pem()),
        )?;
        Ok(certs)
    }
}

/// The lines every nginx config starts with: one worker, files under `dir`.
fn nginx_head(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n"
    )
}

/// Temp paths inside `dir` (Debian's are under /var/lib/nginx).
fn nginx_temps(dir: &Path) -> String {
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("  {t}_temp_path {}/{t};\n", dir.display()))
        .collect()
}

/// A chat completion as an OpenAI-compatible server answers one (with
/// `usage`), what the backends answer on `/v1/chat/completions`.
pub const CHAT_COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"chat","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

/// The backends' nginx config: a `server` per port answering any request,
/// POSTs included, with `200 ok\n`, and `/v1/chat/completions` with
/// [`CHAT_COMPLETION`] (a model server as fast as a static file).
pub fn render_backends(dir: &Path, ports: &[u16]) -> String {
    let servers: String = ports
        .iter()
        .map(|p| {
            format!(
                "  server {{ listen 127.0.0.1:{p}; location / {{ return 200 \"ok\\n\"; }}\n\
                 \x20   location = /v1/chat/completions {{ default_type application/json; return 200 '{CHAT_COMPLETION}'; }} }}\n"
            )
        })
        .collect();
    format!(
        "{}http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n{}{servers}}}\n",
        nginx_head(dir),
        nginx_temps(dir)
    )
}

/// The nginx proxy's config: `least_conn` over the backends with
/// keep-alive, a plain front on `plain` and a TLS one on `tls`.
pub fn render_nginx_proxy(
    dir: &Path,
    backends: &[u16],
    plain: u16,
    tls: u16,
    certs: &Certs,
) -> String {
    let servers: String = backends
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p};\n"))
        .collect();
    format!(
        "{head}http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n{temps}\
         \x20 upstream backends {{\n    least_conn;\n{servers}    keepalive 64;\n    keepalive_requests 1000000;\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{plain};\n    listen 127.0.0.1:{tls} ssl;\n\
         \x20   ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
         \x20   location / {{\n      proxy_pass http://backends;\n      proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        head = nginx_head(dir),
        temps = nginx_temps(dir),
        cert = certs.cert.display(),
        key = certs.key.display(),
    )
}

/// HAProxy's config: one thread, `leastconn` over the backends with
/// connection reuse, a plain front on `plain` and a TLS one on `tls`.
pub fn render_haproxy(backends: &[u16], plain: u16, tls: u16, certs: &Certs) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server b{i} 127.0.0.1:{p}\n"))
        .collect();
    format!(
        "global\n  nbthread 1\n  maxconn 4096\n\ndefaults\n  mode http\n  timeout connect 5s\n\
         \x20 timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n  http-reuse always\n\n\
         backend backends\n  balance leastconn\n{servers}\n\
         frontend front\n  bind 127.0.0.1:{plain}\n  bind 127.0.0.1:{tls} ssl crt {pem}\n  default_backend backends\n",
        pem = certs.combined.display()
    )
}

fn start_nginx(name: &str, dir: &Path, conf: &str, ports: &[u16]) -> Result<Proc> {
    fs::create_dir_all(dir)?;
    let path = dir.join("nginx.conf");
    fs::write(&path, conf)?;
    let (d, c) = (dir.display().to_string(), path.display().to_string());
    let mut proc = Proc::spawn(
        name,
        Path::new(NGINX),
        &["-p", &d, "-c", &c, "-g", "daemon off;"],
        &dir.join("out.log"),
    )?;
    for p in ports {
        if let Err(e) = wait_tcp(*p, Duration::from_secs(10)) {
            let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                + &fs::read_to_string(dir.join("out.log")).unwrap_or_default();
            bail!("{name}: {e}; its output:\n{log}");
        }
    }
    proc.check_alive()?;
    Ok(proc)
}

/// The two static backends (one nginx process): its process and ports.
///
/// # Errors
/// nginx cannot be started or does not listen.
pub fn start_backends(dir: &Path) -> Result<(Proc, Vec<u16>)> {
    let ports = vec![free_port()?, free_port()?];
    let dir = dir.join("backends");
    let proc = start_nginx("backends", &dir, &render_backends(&dir, &ports), &ports)?;
    Ok((proc, ports))
}

/// A proxy peer: its process and its plain and TLS ports.
#[derive(Debug)]
pub struct Peer {
    /// The process (nginx's master; its worker is counted with it).
    pub proc: Proc,
    /// Plain HTTP front.
    pub plain: u16,
    /// HTTPS front.
    pub tls: u16,
}

/// nginx as a proxy in front of `backends`.
///
/// # Errors
/// nginx cannot be started or does not listen.
pub fn start_nginx_proxy(dir: &Path, backends: &[u16], certs: &Certs) -> Result<Peer> {
    let (plain, tls) = (free_port()?, free_port()?);
    let dir = dir.join("nginx-proxy");
    let conf = render_nginx_proxy(&dir, backends, plain, tls, certs);
    let proc = start_nginx("nginx", &dir, &conf, &[plain, tls])?;
    Ok(Peer { proc, plain, tls })
}

/// HAProxy in front of `backends`.
///
/// # Errors
/// haproxy cannot be started or does not listen.
pub fn start_haproxy(dir: &Path, backends: &[u16], certs: &Certs) -> Result<Peer> {
    let (plain, tls) = (free_port()?, free_port()?);
    let dir = dir.join("haproxy");
    fs::create_dir_all(&dir)?;
    let cfg = dir.join("haproxy.cfg");
    fs::write(&cfg, render_haproxy(backends, plain, tls, certs))?;
    let c = cfg.display().to_string();
    let mut proc = Proc::spawn(
        "haproxy",
        Path::new(HAPROXY),
        &["-f", &c, "-db"],
        &dir.join("out.log"),
    )?;
    for p in [plain, tls] {
        if let Err(e) = wait_tcp(p, Duration::from_secs(10)) {
            let log = fs::read_to_string(dir.join("out.log")).unwrap_or_default();
            bail!("haproxy: {e}; its output:\n{log}");
        }
    }
    proc.check_alive()?;
    Ok(Peer { proc, plain, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs() -> Certs {
        Certs {
            ca: "/t/ca.pem".into(),
            cert: "/t/cert.pem".into(),
            key: "/t/key.pem".into(),
            combined: "/t/haproxy.pem".into(),
        }
    }

    #[test]
    fn backends_answer_on_each_port_with_one_worker() {
        let conf = render_backends(Path::new("/t"), &[7001, 7002]);
        assert!(conf.contains("worker_processes 1;"));
        assert!(conf.contains("listen 127.0.0.1:7001;"));
        assert!(conf.contains("listen 127.0.0.1:7002;"));
        assert!(conf.contains("return 200 \"ok\\n\";"));
        assert!(conf.contains("proxy_temp_path /t/proxy;"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn the_nginx_proxy_is_least_conn_with_keepalive_and_tls() {
        let conf = render_nginx_proxy(Path::new("/t"), &[7001, 7002], 8000, 8443, &certs());
        for want in [
            "least_conn;",
            "server 127.0.0.1:7001;",
            "keepalive 64;",
            "listen 127.0.0.1:8443 ssl;",
            "ssl_certificate /t/cert.pem;",
            "proxy_http_version 1.1;",
        ] {
            assert!(conf.contains(want), "{want} missing from\n{conf}");
        }
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn haproxy_is_one_thread_leastconn_with_the_combined_pem() {
        let cfg = render_haproxy(&[7001, 7002], 8000, 8443, &certs());
        for want in [
            "nbthread 1",
            "maxconn 4096",
            "balance leastconn",
            "server b1 127.0.0.1:7002",
            "bind 127.0.0.1:8443 ssl crt /t/haproxy.pem",
            "http-reuse always",
        ] {
            assert!(cfg.contains(want), "{want} missing from\n{cfg}");
        }
    }
}
