//! Several gateways serving one fleet: the member list a gateway tells its
//! agents and clients, and the node load an agent reports to every gateway
//! it is registered with (v2 only).

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::message::check_name;
use crate::{CodecError, limits};

/// Most gateways a [`MemberList`] names.
pub const MAX_MEMBERS: usize = 256;

/// Longest address in a [`Member`], bytes (`host:port`).
pub const MAX_ADDR_LEN: usize = 512;

/// One gateway of a cluster, as agents and clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Member {
    /// The gateway's unique name in the cluster, e.g. `gw-a` (at most 256
    /// bytes).
    #[n(0)]
    pub name: String,
    /// Where agents and clients dial its QUIC port, `host:port`.
    #[n(1)]
    pub quic: String,
    /// Where its HTTP ingress listens, `host:port`; empty when it has none.
    #[n(2)]
    pub http: String,
}

/// Gateway → agent (control stream, sent after `Registered` and again on
/// every change) and gateway → client (the answer to `ListMembers`): the
/// live gateways of the cluster. A gateway with no cluster names itself
/// alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct MemberList {
    /// Grows with every change of the list (etcd's revision of the change);
    /// a receiver ignores a list older than the one it holds.
    #[n(0)]
    pub revision: u64,
    /// The members, sorted by name; the sender is one of them.
    #[n(1)]
    pub members: Vec<Member>,
}

/// Agent → gateway on the control stream: the calls in flight on the node
/// per service, counting every gateway's, sent when the counts change
/// (coalesced: at most one report per interval) between stats reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct NodeLoad {
    /// `(service, calls in flight)`, every service of the node.
    #[n(0)]
    pub in_flight: Vec<(String, u32)>,
    /// `(service, block hashes)`: prefix blocks the node came to hold for
    /// the service since the previous report on this session (chained
    /// hashes as [`crate::DispatchHead::prefix_hashes`]; at most
    /// [`limits::MAX_PREFIX_HASHES`] per service); the whole set when
    /// `prefix_full`. Empty when nothing changed.
    #[cbor(n(1), default, skip_if = "Vec::is_empty")]
    pub prefix_added: Vec<(String, Vec<u64>)>,
    /// `(service, block hashes)`: blocks the node no longer holds since the
    /// previous report (same bounds as `prefix_added`).
    #[cbor(n(2), default, skip_if = "Vec::is_empty")]
    pub prefix_evicted: Vec<(String, Vec<u64>)>,
    /// Whether `prefix_added` is the node's whole set of blocks, replacing
    /// what the gateway held for it: the first report of a session.
    #[cbor(n(3), default, skip_if = "crate::call::is_false")]
    pub prefix_full: bool,
    /// Job calls in flight on the node, every gateway's (those whose
    /// [`crate::DispatchHead::job`] was set); `None` (not sent) from an
    /// agent that does not count them.
    #[serde(default)]
    #[n(4)]
    pub jobs_in_flight: Option<u32>,
    /// `(service, calls in flight)` that other gateways sent: `in_flight`
    /// less the calls (and lease holds) of the session the report goes
    /// on, every service of the node. The receiving gateway takes these as
    /// the other gateways' calls as they are, with no subtraction of its own
    /// count (which a report sent while one of its calls was ending would
    /// overstate). `None` (not sent) from an agent that predates it: the
    /// gateway then takes `in_flight` less its own count. Added in v2.
    #[serde(default)]
    #[n(5)]
    pub others: Option<Vec<(String, u32)>>,
    /// Job calls in flight that other gateways sent, as `others` is to
    /// `in_flight`; `None` (not sent) from an agent that predates it.
    /// Added in v2.
    #[serde(default)]
    #[n(6)]
    pub jobs_others: Option<u32>,
    /// Calls waiting in the node's own queues, per service with any, when
    /// the report was sent: a child gateway's (a tree of gateways), so its
    /// parent can move waiting calls to a sibling with free capacity (at
    /// most [`limits::MAX_SERVICES`]). Empty from an agent. Added in v2.
    #[serde(default)]
    #[cbor(n(7), default, skip_if = "Vec::is_empty")]
    pub queued: Vec<QueuedCalls>,
}

/// Calls waiting for one service in a child gateway's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct QueuedCalls {
    /// The service.
    #[n(0)]
    pub service: String,
    /// Calls waiting (admitted, not started).
    #[n(1)]
    pub calls: u32,
    /// How long the oldest of them had waited when the report was sent,
    /// ms.
    #[n(2)]
    pub oldest_wait_ms: u32,
}

impl MemberList {
    /// Checks the limits a peer must respect.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] past [`MAX_MEMBERS`] members, for an empty
    /// or over-long name, or an address past [`MAX_ADDR_LEN`] bytes.
    pub fn validate(&self) -> Result<(), CodecError> {
        if self.members.len() > MAX_MEMBERS {
            return Err(CodecError::Invalid(format!(
                "a member list names at most {MAX_MEMBERS} gateways, got {}",
                self.members.len()
            )));
        }
        for m in &self.members {
            check_name("member name", &m.name)?;
            for (what, addr) in [("quic", &m.quic), ("http", &m.http)] {
                if addr.len() > MAX_ADDR_LEN {
                    return Err(CodecError::Invalid(format!(
                        "member {} {what} address is {} bytes, at most {MAX_ADDR_LEN}",
                        m.name,
                        addr.len()
                    )));
                }
            }
        }
        Ok(())
    }
}

impl NodeLoad {
    /// Checks the limits a peer must respect.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] past [`limits::MAX_SERVICES`] entries or for
    /// a bad service name.
    pub fn validate(&self) -> Result<(), CodecError> {
        check_services("a load report", &self.in_flight)?;
        check_services("others", self.others.as_deref().unwrap_or_default())?;
        for (what, lists) in [
            ("prefix_added", &self.prefix_added),
            ("prefix_evicted", &self.prefix_evicted),
        ] {
            check_services(what, lists)?;
            for (service, hashes) in lists {
                if hashes.len() > limits::MAX_PREFIX_HASHES {
                    return Err(CodecError::Invalid(format!(
                        "{what} names at most {} blocks of service {service}, got {}",
                        limits::MAX_PREFIX_HASHES,
                        hashes.len()
                    )));
                }
            }
        }
        if self.queued.len() > limits::MAX_SERVICES {
            return Err(CodecError::Invalid(format!(
                "queued names at most {} services, got {}",
                limits::MAX_SERVICES,
                self.queued.len()
            )));
        }
        for q in &self.queued {
            check_name("service name", &q.service)?;
        }
        Ok(())
    }
}

/// At most [`limits::MAX_SERVICES`] entries, each a good service name.
fn check_services<T>(what: &str, list: &[(String, T)]) -> Result<(), CodecError> {
    if list.len() > limits::MAX_SERVICES {
        return Err(CodecError::Invalid(format!(
            "{what} names at most {} services, got {}",
            limits::MAX_SERVICES,
            list.len()
        )));
    }
    list.iter()
        .try_for_each(|(service, _)| check_name("service name", service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatch_carries_at_most_the_bound_of_prefix_hashes() {
        let mut head = crate::DispatchHead {
            call_id: 1,
            service: "llm".into(),
            payload_len: 0,
            timeout_ms: 1000,
            endpoint: None,
            log: false,
            traceparent: None,
            request_id: None,
            prefix_hashes: vec![1; limits::MAX_PREFIX_HASHES],
            job: false,
            hints: Vec::new(),
            priority: 0,
            tenant: None,
        };
        assert!(head.validate().is_ok());
        head.prefix_hashes.push(2);
        assert!(head.validate().is_err());
    }

    #[test]
    fn load_reports_bound_their_prefix_blocks() {
        let mut load = NodeLoad {
            in_flight: vec![("llm".into(), 1)],
            prefix_added: vec![("llm".into(), vec![7; limits::MAX_PREFIX_HASHES])],
            prefix_evicted: vec![("llm".into(), vec![8])],
            prefix_full: false,
            jobs_in_flight: Some(1),
            others: Some(vec![("llm".into(), 0)]),
            jobs_others: Some(0),
            queued: Vec::new(),
        };
        assert!(load.validate().is_ok());
        load.prefix_added[0].1.push(9);
        assert!(load.validate().is_err(), "too many added blocks");
        load.prefix_added.clear();
        load.prefix_evicted[0].0 = String::new();
        assert!(load.validate().is_err(), "empty service name");
        load.prefix_evicted.clear();
        load.others = Some(vec![("x".into(), 1); limits::MAX_SERVICES + 1]);
        assert!(load.validate().is_err(), "too many others");
        load.others = Some(vec![(String::new(), 1)]);
        assert!(load.validate().is_err(), "an empty name among the others");
    }
}
