//! The QUIC accept policy: which incoming connections the gateway takes on,
//! before any handshake state is kept for them.
//!
//! For each `quinn::Incoming`, in order:
//! 1. with `[quic] retry_above_pending` or more handshakes pending, an
//!    address not validated yet gets a stateless retry (`Incoming::retry`,
//!    RFC 9000 §8.1): a spoofed or half-open flood costs a Retry packet each
//!    and no state; a real client comes back validated;
//! 2. with `max_pending_handshakes` pending, or `max_connections` open, or
//!    `max_connections_per_ip` open from its address, it is refused
//!    (`Incoming::refuse`: a close, no state);
//! 3. else it is accepted with a [`Ticket`] that counts it (pending until
//!    its handshake is done, within `handshake_timeout_ms`) until it ends.
//!
//! Agents are counted again when they register ([`Ticket::register_agent`]:
//! `[agents] max_agents`, `max_agents_per_ip`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{AgentsConfig, QuicConfig};

/// Help texts of the accept policy's metrics.
pub(crate) fn describe_metrics() {
    metrics::describe_gauge!(
        "quic_handshakes_pending",
        "QUIC handshakes admitted and not done yet."
    );
    metrics::describe_counter!(
        "quic_retries_total",
        "Stateless retries sent to unvalidated addresses while many handshakes were pending."
    );
    metrics::describe_counter!(
        "quic_connections_refused_total",
        "Incoming QUIC connections refused, by reason (per_ip, max_connections, pending_handshakes)."
    );
    metrics::describe_counter!(
        "quic_handshake_timeouts_total",
        "QUIC handshakes dropped at [quic] handshake_timeout_ms."
    );
}

/// What to do with an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Take it on.
    Accept,
    /// Ask the client to prove its address first (stateless).
    Retry,
    /// Refuse it, for this reason (a metric label).
    Refuse(&'static str),
}

#[derive(Debug, Default)]
struct State {
    open: u32,
    pending: u32,
    per_ip: HashMap<IpAddr, u32>,
    agents: u32,
    agents_per_ip: HashMap<IpAddr, u32>,
}

/// Counts connections, handshakes and agents against the configured limits.
#[derive(Debug)]
pub(crate) struct Admission {
    quic: QuicConfig,
    agents: AgentsConfig,
    state: Mutex<State>,
}

impl Admission {
    pub(crate) fn new(quic: QuicConfig, agents: AgentsConfig) -> Arc<Self> {
        Arc::new(Self {
            quic,
            agents,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The decision for a connection from `ip` (`validated`: its address is
    /// proven by a retry token; `may_retry`: a retry is still possible).
    fn decide(&self, state: &State, ip: IpAddr, validated: bool, may_retry: bool) -> Decision {
        let q = &self.quic;
        if !validated && may_retry && state.pending >= q.retry_above_pending {
            return Decision::Retry;
        }
        if state.pending >= q.max_pending_handshakes {
            return Decision::Refuse("pending_handshakes");
        }
        if state.open >= q.max_connections {
            return Decision::Refuse("max_connections");
        }
        if state.per_ip.get(&ip).copied().unwrap_or(0) >= q.max_connections_per_ip {
            return Decision::Refuse("per_ip");
        }
        Decision::Accept
    }

    /// Applies the policy to `incoming`: retries or refuses it here, or
    /// returns it with its ticket to be accepted.
    pub(crate) fn admit(
        self: &Arc<Self>,
        incoming: quinn::Incoming,
    ) -> Option<(quinn::Incoming, Ticket)> {
        let ip = incoming.remote_address().ip().to_canonical();
        let mut state = self.state();
        let decision = self.decide(
            &state,
            ip,
            incoming.remote_address_validated(),
            incoming.may_retry(),
        );
        match decision {
            Decision::Accept => {
                state.open += 1;
                state.pending += 1;
                *state.per_ip.entry(ip).or_insert(0) += 1;
                metrics::gauge!("quic_handshakes_pending").set(f64::from(state.pending));
                drop(state);
                let ticket = Ticket {
                    admission: self.clone(),
                    ip,
                    pending: true,
                    agent: false,
                };
                Some((incoming, ticket))
            }
            Decision::Retry => {
                drop(state);
                metrics::counter!("quic_retries_total").increment(1);
                if incoming.retry().is_err() {
                    // quinn said no retry is possible after all: refuse.
                    tracing::debug!("stateless retry impossible; connection dropped");
                }
                None
            }
            Decision::Refuse(reason) => {
                drop(state);
                metrics::counter!("quic_connections_refused_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(%ip, reason, "connection refused");
                incoming.refuse();
                None
            }
        }
    }
}

/// One accepted connection's place in the counts; dropping it frees them.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    pending: bool,
    agent: bool,
}

impl Ticket {
    /// The handshake is over (done or failed): no longer pending.
    pub(crate) fn handshake_over(&mut self) {
        if std::mem::take(&mut self.pending) {
            let mut state = self.admission.state();
            state.pending = state.pending.saturating_sub(1);
            metrics::gauge!("quic_handshakes_pending").set(f64::from(state.pending));
        }
    }

    /// Counts this connection as an agent.
    ///
    /// # Errors
    /// The refusal reason when `[agents] max_agents` or `max_agents_per_ip`
    /// is reached.
    pub(crate) fn register_agent(&mut self) -> Result<(), String> {
        if self.agent {
            return Ok(());
        }
        let limits = self.admission.agents;
        let mut state = self.admission.state();
        if state.agents >= limits.max_agents {
            return Err(format!(
                "the gateway has its most agents ({}; [agents] max_agents)",
                limits.max_agents
            ));
        }
        let from_ip = state.agents_per_ip.get(&self.ip).copied().unwrap_or(0);
        if from_ip >= limits.max_agents_per_ip {
            return Err(format!(
                "{} agents already registered from {} ([agents] max_agents_per_ip)",
                from_ip, self.ip
            ));
        }
        state.agents += 1;
        *state.agents_per_ip.entry(self.ip).or_insert(0) += 1;
        self.agent = true;
        Ok(())
    }
}

fn release(map: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(n) = map.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.handshake_over();
        let mut state = self.admission.state();
        state.open = state.open.saturating_sub(1);
        release(&mut state.per_ip, self.ip);
        if self.agent {
            state.agents = state.agents.saturating_sub(1);
            release(&mut state.agents_per_ip, self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(per_ip: u32, retry_above: u32, max_pending: u32) -> Arc<Admission> {
        Admission::new(
            QuicConfig {
                max_connections_per_ip: per_ip,
                retry_above_pending: retry_above,
                max_pending_handshakes: max_pending,
                max_connections: 10,
                ..QuicConfig::default()
            },
            AgentsConfig {
                max_agents_per_ip: 1,
                ..AgentsConfig::default()
            },
        )
    }

    fn accept(a: &Arc<Admission>, ip: IpAddr) -> Ticket {
        let mut state = a.state();
        state.open += 1;
        state.pending += 1;
        *state.per_ip.entry(ip).or_insert(0) += 1;
        Ticket {
            admission: a.clone(),
            ip,
            pending: true,
            agent: false,
        }
    }

    #[test]
    fn per_ip_total_pending_and_retry() {
        let a = admission(2, 3, 4);
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let mut t1 = accept(&a, one);
        let t2 = accept(&a, one);
        assert_eq!(
            a.decide(&a.state(), one, false, true),
            Decision::Refuse("per_ip")
        );
        assert_eq!(a.decide(&a.state(), two, false, true), Decision::Accept);
        let t3 = accept(&a, two);
        // Three pending: unvalidated addresses are asked to retry first.
        assert_eq!(a.decide(&a.state(), two, false, true), Decision::Retry);
        assert_eq!(a.decide(&a.state(), two, true, false), Decision::Accept);
        let t4 = accept(&a, two);
        assert_eq!(
            a.decide(&a.state(), [10, 0, 0, 3].into(), true, false),
            Decision::Refuse("pending_handshakes")
        );
        t1.handshake_over();
        assert_eq!(a.state().pending, 3);
        drop((t1, t2, t3, t4));
        let state = a.state();
        assert_eq!((state.open, state.pending, state.per_ip.len()), (0, 0, 0));
    }

    #[test]
    fn agents_are_counted_per_ip_until_they_go() {
        let a = admission(10, 10, 10);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let mut first = accept(&a, ip);
        let mut second = accept(&a, ip);
        first.register_agent().expect("first agent");
        let refused = second.register_agent().expect_err("one per ip");
        assert!(refused.contains("max_agents_per_ip"), "{refused}");
        drop(first);
        second.register_agent().expect("room again");
    }
}
