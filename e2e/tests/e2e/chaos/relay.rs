//! A fault-injecting UDP relay for the chaos suite: an agent dials the
//! relay instead of the gateway, and the relay forwards its datagrams both
//! ways, dropping or delaying them as the test says ([`Fault`]). Each peer
//! (source address) gets its own upstream socket, so the gateway sees one
//! client per agent. Randomness is a seeded xorshift: runs repeat.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What happens to each datagram, both ways.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Forwarded at once.
    Clear,
    /// Dropped with probability `loss` (0..=1), else forwarded after `delay`.
    Lossy { loss: f64, delay: Duration },
    /// Dropped: a full partition.
    Partition,
}

/// Datagrams forwarded and dropped so far, both ways.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
}

struct Shared {
    fault: Mutex<Fault>,
    rng: Mutex<u64>,
    counts: Counts,
}

impl Shared {
    /// The delay to forward a datagram after, or `None` to drop it.
    fn verdict(&self) -> Option<Duration> {
        let fault = *self.fault.lock().unwrap();
        let verdict = match fault {
            Fault::Clear => Some(Duration::ZERO),
            Fault::Partition => None,
            Fault::Lossy { loss, delay } => {
                let mut x = self.rng.lock().unwrap();
                // xorshift64
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                let draw = (*x >> 11) as f64 / (1u64 << 53) as f64;
                (draw >= loss).then_some(delay)
            }
        };
        let counter = match verdict {
            Some(_) => &self.counts.forwarded,
            None => &self.counts.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }
}

/// The relay: listening on [`Relay::addr`], forwarding to its target until
/// dropped.
pub struct Relay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Relay {
    /// A relay on 127.0.0.1:0 to `target`, faults drawn from `seed`.
    pub async fn start(target: SocketAddr, seed: u64) -> Self {
        let down = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = down.local_addr().unwrap();
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Clear),
            rng: Mutex::new(seed.max(1)),
            counts: Counts::default(),
        });
        let task = tokio::spawn(forward(down, target, shared.clone()));
        Self { addr, shared, task }
    }

    /// Applies `fault` from now on.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    pub fn counts(&self) -> &Counts {
        &self.shared.counts
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `packet` on `socket` (to `to`, or connected when `None`) after
/// the fault's verdict.
fn pass(shared: &Shared, socket: &Arc<UdpSocket>, to: Option<SocketAddr>, packet: Vec<u8>) {
    let Some(delay) = shared.verdict() else {
        return;
    };
    if delay.is_zero() {
        // Sent now, in order (a full socket buffer drops it, as a link would).
        let _ = match to {
            Some(to) => socket.try_send_to(&packet, to),
            None => socket.try_send(&packet),
        };
        return;
    }
    let socket = socket.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = match to {
            Some(to) => socket.send_to(&packet, to).await,
            None => socket.send(&packet).await,
        };
    });
}

/// Peer → target: one upstream socket per peer, whose answers go back.
async fn forward(down: Arc<UdpSocket>, target: SocketAddr, shared: Arc<Shared>) {
    let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Aborted with this task (the relay's drop).
    let mut backs = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = down.recv_from(&mut buf).await else {
            continue;
        };
        let up = match peers.get(&from) {
            Some(up) => up.clone(),
            None => {
                let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                up.connect(target).await.unwrap();
                backs.spawn(backward(up.clone(), down.clone(), from, shared.clone()));
                peers.insert(from, up.clone());
                up
            }
        };
        pass(&shared, &up, None, buf[..n].to_vec());
    }
}

/// Target → peer.
async fn backward(up: Arc<UdpSocket>, down: Arc<UdpSocket>, peer: SocketAddr, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok(n) = up.recv(&mut buf).await else {
            continue;
        };
        pass(&shared, &down, Some(peer), buf[..n].to_vec());
    }
}
