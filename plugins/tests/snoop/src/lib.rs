//! Hostile test policy `snoop`: a valid `policy` world that, when the request
//! carries the hint `evil=1`, tries every ambient-authority move Rust `std`
//! offers on `wasm32-wasip2` (files, directories, environment, arguments,
//! stdin, TCP, UDP, name lookup, processes, the clock) and answers
//! `reject(summary)`, where the summary lists each attempt's outcome as
//! `key=denied(why)`, `key=ALLOWED(what)`, `key=N` (counts) or `key=ok`,
//! separated by `"; "`. Hints `tcp_port=N` and `udp_port=N` name the local
//! ports it tries to reach on 127.0.0.1. Any other pick routes to candidate 0.
//!
//! Built by `make plugins-test-wasm` into `plugins/dist-test/snoop.wasm`;
//! `policy-host/tests/plugins/sandbox_plugins.rs` checks that every attempt was
//! denied and that nothing reached the test's listeners.

use std::fmt::Display;

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "snoop";

/// Separates the entries of the summary.
pub const SEPARATOR: &str = "; ";

/// The value of hint `key`, if the request carries it.
#[must_use]
pub fn hint<'a>(hints: &'a [(String, String)], key: &str) -> Option<&'a str> {
    hints
        .iter()
        .find_map(|(k, v)| (k == key).then_some(v.as_str()))
}

/// One summary entry for an attempt that should have been refused:
/// `key=denied(error)` on `Err`, `key=ALLOWED(what)` on `Ok` (where `what`
/// describes what was obtained, never its content).
pub fn attempt<T, E: Display>(
    key: &str,
    result: Result<T, E>,
    what: impl FnOnce(&T) -> String,
) -> String {
    match result {
        Ok(value) => format!("{key}=ALLOWED({})", what(&value)),
        Err(err) => format!("{key}=denied({err})"),
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // generated glue
mod component {
    use std::io::Read as _;
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs as _, UdpSocket};
    use std::time::{SystemTime, UNIX_EPOCH};

    use crate::attempt;

    wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

    struct Component;

    impl Guest for Component {
        fn name() -> String {
            crate::NAME.to_owned()
        }

        fn pick(req: Request, _candidates: Candidates) -> Decision {
            if crate::hint(&req.hints, "evil") != Some("1") {
                return Decision::Route(0);
            }
            let port = |key| {
                crate::hint(&req.hints, key)
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap_or(9)
            };
            Decision::Reject(snoop(port("tcp_port"), port("udp_port")).join(crate::SEPARATOR))
        }

        fn observe(_outcome: Outcome) {}
    }

    /// Every attempt, in order, one summary entry each.
    fn snoop(tcp_port: u16, udp_port: u16) -> Vec<String> {
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut out = vec![
            attempt("fs.read", std::fs::read("/etc/passwd"), |b| {
                format!("{} bytes", b.len())
            }),
            attempt(
                "fs.read_dir",
                std::fs::read_dir("/").map(Iterator::count),
                |n| format!("{n} entries"),
            ),
            attempt("fs.write", std::fs::write("/tmp/x", b"snoop"), |()| {
                "wrote /tmp/x".to_owned()
            }),
            attempt("fs.metadata", std::fs::metadata("/"), |m| {
                format!("is_dir={}", m.is_dir())
            }),
            format!("env={}", std::env::vars_os().count()),
            format!("args={}", std::env::args_os().count()),
            attempt(
                "stdin",
                std::io::stdin().read(&mut [0_u8; 64]).and_then(|n| {
                    // End of input is no access: nothing was there to read.
                    if n == 0 {
                        Err(std::io::Error::other("end of input, 0 bytes"))
                    } else {
                        Ok(n)
                    }
                }),
                |n| format!("{n} bytes"),
            ),
            attempt("tcp.connect", TcpStream::connect(local(tcp_port)), |s| {
                format!("connected to {:?}", s.peer_addr().ok())
            }),
            attempt("tcp.listen", TcpListener::bind(local(0)), |l| {
                format!("listening on {:?}", l.local_addr().ok())
            }),
        ];
        let udp = UdpSocket::bind(local(0));
        let sent = udp
            .as_ref()
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
            .and_then(|s| s.send_to(b"snoop", local(udp_port)));
        out.push(attempt("udp.bind", udp, |s| {
            format!("bound {:?}", s.local_addr().ok())
        }));
        out.push(attempt("udp.send", sent, |n| format!("{n} bytes sent")));
        out.push(attempt("dns", ("localhost", 80).to_socket_addrs(), |a| {
            format!("{} addresses", a.len())
        }));
        out.push(attempt(
            "process",
            std::process::Command::new("/bin/sh")
                .args(["-c", "true"])
                .output(),
            |o| format!("exit {:?}", o.status.code()),
        ));
        // The wall clock is granted (it reveals nothing but the time).
        out.push(match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(_) => "time=ok".to_owned(),
            Err(e) => format!("time=err({e})"),
        });
        out
    }

    export!(Component);
}

#[cfg(test)]
mod tests {
    use super::{attempt, hint};

    #[test]
    fn formats_attempts() {
        let ok: Result<u32, String> = Ok(3);
        let err: Result<u32, String> = Err("nope".to_owned());
        assert_eq!(
            attempt("k", ok, |n| format!("{n} things")),
            "k=ALLOWED(3 things)"
        );
        assert_eq!(attempt("k", err, |_| unreachable!()), "k=denied(nope)");
    }

    #[test]
    fn reads_hints() {
        let hints = vec![("tcp_port".to_owned(), "80".to_owned())];
        assert_eq!(hint(&hints, "tcp_port"), Some("80"));
        assert_eq!(hint(&hints, "evil"), None);
    }
}
