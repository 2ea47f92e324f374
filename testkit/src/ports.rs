//! Loopback ports for processes a test starts, picked where nothing else
//! takes them.

use std::net::{TcpListener, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const FIRST: u32 = 10_000;

/// A loopback port, free for TCP and UDP now, below the kernel's range of
/// ephemeral ports (`net.ipv4.ip_local_port_range`, 32768 by default).
///
/// A port found by binding port 0 and releasing it comes from the
/// ephemeral range, where any port-0 bind or the local end of any outgoing
/// connection (one to a test's PostgreSQL, say) may take it before the
/// process it is meant for binds it. Below that range only ports chosen on
/// purpose are bound, and this process never hands one out twice.
///
/// # Errors
/// `AddrNotAvailable` when every port in `10000..low` is in use.
pub fn unassigned_port() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static EPHEMERAL: OnceLock<u32> = OnceLock::new();
    let ephemeral = *EPHEMERAL.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
            .filter(|&low| (FIRST + 1000..=65_535).contains(&low))
            .unwrap_or(32_768)
    });
    let span = ephemeral - FIRST;
    // Start where another test process (a rerun, `make bench`) is unlikely
    // to be.
    let _ = NEXT.compare_exchange(
        0,
        std::process::id() * 7919 % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let Ok(port) = u16::try_from(FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % span) else {
            continue;
        };
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!("no free loopback port in {FIRST}..{ephemeral}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_free_and_not_repeated() {
        // Each port is bound the moment it is handed out and held: other
        // test processes running beside this one take ports too, so a port
        // checked only after the fifty were picked may be theirs by then.
        // A process beside this one may still bind a port between its
        // check and this bind: a few such losses are allowed, not many.
        let mut held = Vec::new();
        let mut ports = Vec::new();
        let mut taken = Vec::new();
        for _ in 0..50 {
            let port = unassigned_port().expect("a free port");
            assert!(u32::from(port) >= FIRST, "{port}");
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => held.push(listener),
                Err(_) => taken.push(port),
            }
            ports.push(port);
        }
        assert!(taken.len() <= 2, "handed out but taken: {taken:?}");
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }
}
