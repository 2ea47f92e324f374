//! A tree of gateways: a gateway registers with its parent as a node whose
//! services are its own fleet's ([`crate::NodeSpec::gateway`]), and tells
//! it when they change ([`Respec`]); the parent tells its gateway children
//! which gateways are above them ([`Ancestry`]), so that no gateway
//! becomes its own ancestor.
//!
//! Streams, on the child's connection to its parent:
//! - control stream (the child's first): `Register` with
//!   `node.gateway = true`, answered by `Registered` whose
//!   [`crate::Registered::ancestry`] names the parent and the gateways
//!   above it; then, besides `Stats` and `Load`, [`crate::Message::Respec`]
//!   from the child whenever its fleet's services change (only to a parent
//!   whose `Registered::takes_respec` is set) and
//!   [`crate::Message::Ancestry`] from the parent whenever its own ancestry
//!   changes;
//! - a call to the child is a dispatch stream as to any node, its
//!   [`crate::DispatchHead`] carrying the caller's tenant, priority and
//!   hints, its [`crate::ReplyHead::path`] naming the gateways and node
//!   below the child that served it;
//! - rebalancing: the parent sends [`HandUp`] on the control stream; the
//!   child sends that many of its waiting calls up as dispatch streams it
//!   opens on the same connection (answered as the parent's own dispatches
//!   are), and the parent runs them anywhere but on that child;
//! - an echo wave (the topology, or a change pushed down the tree): the
//!   parent opens a stream to the child and sends [`Probe`]; the child
//!   probes its own gateway children likewise, and answers once all of
//!   them answered or its time is up with [`Subtree`]: one
//!   [`GatewayReport`] per gateway of its subtree, flat (each names its
//!   path from the child), a branch that did not answer marked missing.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::message::check_name;
use crate::{CodecError, NodeSpec};

/// Most gateways on one path from a root to a node (a child at a depth
/// past it is refused).
pub const MAX_DEPTH: usize = 32;

/// Most gateways one [`Subtree`] answer reports.
pub const MAX_WAVE_GATEWAYS: usize = 16_384;

/// Most nodes one [`GatewayReport`] lists.
pub const MAX_REPORT_NODES: usize = 16_384;

/// Parent → child gateway, first frame of a stream of its own: an echo
/// wave reaches the child, which answers with [`Subtree`] (v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Probe {
    /// The wave's id, from the gateway that started it (for logs).
    #[n(0)]
    pub wave: u64,
    /// Time the child has to answer, ms: it probes its own children with
    /// less, so that their answers reach it in time.
    #[n(1)]
    pub timeout_ms: u32,
    /// A change every gateway applies before it answers (its report says
    /// whether it could); `None` for a topology wave.
    #[n(2)]
    pub push: Option<Push>,
}

/// A change pushed down a tree of gateways, confirmed by the wave that
/// carries it. A gateway that does not know a kind fails to read the
/// probe, so its branch is reported as not applied, never as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum Push {
    /// Pick `service`'s nodes with `policy` (a loaded policy's name).
    #[n(0)]
    SetPolicy {
        /// The service.
        #[n(0)]
        service: String,
        /// The policy.
        #[n(1)]
        policy: String,
    },
    /// Drop cached results: `service`'s, or every service's.
    #[n(1)]
    PurgeCache {
        /// The service; `None` for all.
        #[n(0)]
        service: Option<String>,
    },
    /// Drain (or undrain) node `node` wherever in the tree it is
    /// registered; a gateway without it has nothing to do.
    #[n(2)]
    Drain {
        /// The node's id.
        #[n(0)]
        node: String,
        /// Drain (true) or undrain.
        #[n(1)]
        draining: bool,
    },
    /// Durable jobs' settings: at most `max_per_node` job calls on one node
    /// at once (0: no limit beyond its slots).
    #[n(3)]
    JobSettings {
        /// The per-node job limit.
        #[n(0)]
        max_per_node: u32,
    },
}

/// Child → parent, on the probe's stream: the child's subtree, one report
/// per gateway, flat (v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Subtree {
    /// The probe's wave.
    #[n(0)]
    pub wave: u64,
    /// The answering gateway's report first, then those below it; each
    /// names its path from the answering gateway. At most
    /// [`MAX_WAVE_GATEWAYS`].
    #[n(1)]
    pub gateways: Vec<GatewayReport>,
}

/// One gateway in a wave's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct GatewayReport {
    /// Gateway ids from the gateway that answered the wave down to this
    /// one (this one last); 1..=[`MAX_DEPTH`] names.
    #[n(0)]
    pub path: Vec<String>,
    /// Set when this gateway did not answer in time or could not be
    /// reached: why. Its nodes and what is below it are then unknown (the
    /// answer is partial).
    #[n(1)]
    pub missing: Option<String>,
    /// Its plain nodes (its gateway children have reports of their own).
    #[n(2)]
    pub nodes: Vec<TreeNode>,
    /// Calls waiting in its queues.
    #[n(3)]
    pub queued: u32,
    /// A pushed change it could not apply: why (`None`: applied, or no
    /// push).
    #[n(4)]
    pub push_error: Option<String>,
}

/// One plain node in a [`GatewayReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct TreeNode {
    /// The node's id.
    #[n(0)]
    pub id: String,
    /// Its services, by name.
    #[n(1)]
    pub services: Vec<String>,
    /// Calls running on it now (every gateway's).
    #[n(2)]
    pub in_flight: u32,
    /// Calls it runs at once, every service together.
    #[n(3)]
    pub capacity: u32,
    /// Its CPU, 0..=100 %, from its latest stats.
    #[n(4)]
    pub cpu_pct: f32,
    /// Whether it is drained.
    #[n(5)]
    pub draining: bool,
}

/// Node → gateway on the control stream: what the node hosts now (its
/// services and slots changed while registered; the id must stay the
/// same). Calls in flight keep running; the gateway offers new calls by
/// the new spec. A child gateway sends it when its fleet's services or
/// their capacity change (v2, only to a gateway whose `Registered` set
/// `takes_respec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Respec {
    /// The node's spec now.
    #[n(0)]
    pub node: NodeSpec,
}

/// Gateway → child gateway on the control stream: the gateways above the
/// child now, nearest first (its parent, then the parent's parent, ...),
/// at most [`MAX_DEPTH`]. A child that finds its own id there is in a loop
/// and leaves (v2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Ancestry {
    /// Gateway ids, nearest first.
    #[n(0)]
    pub gateways: Vec<String>,
}

/// Parent → child gateway on the control stream: hand up to `calls` of
/// the calls waiting in your queue for `service` (the oldest first: none
/// has started) up to the parent, which sends them to a sibling with free
/// capacity (rebalancing; v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct HandUp {
    /// The service.
    #[n(0)]
    pub service: String,
    /// Most calls to hand up.
    #[n(1)]
    pub calls: u32,
}

impl Respec {
    /// Checks the spec as a registration's ([`NodeSpec::validate`]).
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming the broken rule.
    pub fn validate(&self) -> Result<(), CodecError> {
        self.node.validate()
    }
}

/// Checks a list of gateway ids (an ancestry, a result's path): at most
/// [`MAX_DEPTH`] names, each a valid name.
///
/// # Errors
/// [`CodecError::Invalid`] naming `what`.
pub(crate) fn check_path(what: &str, ids: &[String]) -> Result<(), CodecError> {
    if ids.len() > MAX_DEPTH {
        return Err(CodecError::Invalid(format!(
            "{what} names at most {MAX_DEPTH} gateways, got {}",
            ids.len()
        )));
    }
    for id in ids {
        check_name(what, id)?;
    }
    Ok(())
}

impl Push {
    /// Checks the names it carries.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] for a bad name.
    pub fn validate(&self) -> Result<(), CodecError> {
        match self {
            Push::SetPolicy { service, policy } => {
                check_name("service name", service)?;
                check_name("policy name", policy)
            }
            Push::PurgeCache {
                service: Some(service),
            } => check_name("service name", service),
            Push::PurgeCache { service: None } | Push::JobSettings { .. } => Ok(()),
            Push::Drain { node, .. } => check_name("node id", node),
        }
    }
}

impl Probe {
    /// Checks the pushed change's names ([`Push::validate`]).
    ///
    /// # Errors
    /// [`CodecError::Invalid`] for a bad name.
    pub fn validate(&self) -> Result<(), CodecError> {
        self.push.as_ref().map_or(Ok(()), Push::validate)
    }
}

impl Subtree {
    /// Checks the answer of child `child`: at most [`MAX_WAVE_GATEWAYS`]
    /// reports, the first `child`'s own, every path starting at `child`,
    /// at most [`MAX_DEPTH`] valid names and [`MAX_REPORT_NODES`] nodes
    /// each.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming the broken rule.
    pub fn validate(&self, child: &str) -> Result<(), CodecError> {
        if self.gateways.len() > MAX_WAVE_GATEWAYS {
            return Err(CodecError::Invalid(format!(
                "a wave's answer reports at most {MAX_WAVE_GATEWAYS} gateways, got {}",
                self.gateways.len()
            )));
        }
        if self.gateways.first().map(|g| g.path.as_slice()) != Some(&[child.to_string()][..]) {
            return Err(CodecError::Invalid(format!(
                "a wave's answer starts with its own gateway, {child}"
            )));
        }
        for report in &self.gateways {
            if report.path.is_empty() || report.path[0] != child {
                return Err(CodecError::Invalid(format!(
                    "every path of the answer starts at {child}"
                )));
            }
            check_path("path", &report.path)?;
            if report.nodes.len() > MAX_REPORT_NODES {
                return Err(CodecError::Invalid(format!(
                    "a gateway report lists at most {MAX_REPORT_NODES} nodes"
                )));
            }
            for node in &report.nodes {
                check_name("node id", &node.id)?;
            }
        }
        Ok(())
    }
}

impl Ancestry {
    /// Checks its length and names.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] past [`MAX_DEPTH`] or for a bad name.
    pub fn validate(&self) -> Result<(), CodecError> {
        check_path("ancestry", &self.gateways)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ancestry_is_bounded_and_named() {
        let ok = Ancestry {
            gateways: vec!["site-a".into(), "root".into()],
        };
        assert!(ok.validate().is_ok());
        let deep = Ancestry {
            gateways: (0..=MAX_DEPTH).map(|i| format!("g{i}")).collect(),
        };
        assert!(deep.validate().is_err());
        let empty_name = Ancestry {
            gateways: vec![String::new()],
        };
        assert!(empty_name.validate().is_err());
    }

    fn report(path: &[&str]) -> GatewayReport {
        GatewayReport {
            path: path.iter().map(|p| (*p).to_string()).collect(),
            missing: None,
            nodes: Vec::new(),
            queued: 0,
            push_error: None,
        }
    }

    #[test]
    fn an_answer_starts_with_its_gateway_and_every_path_from_it() {
        let good = Subtree {
            wave: 1,
            gateways: vec![report(&["a"]), report(&["a", "a1"])],
        };
        assert!(good.validate("a").is_ok());
        assert!(good.validate("b").is_err(), "answered for another child");
        let stray = Subtree {
            wave: 1,
            gateways: vec![report(&["a"]), report(&["b", "b1"])],
        };
        assert!(stray.validate("a").is_err());
        let headless = Subtree {
            wave: 1,
            gateways: vec![report(&["a", "a1"])],
        };
        assert!(headless.validate("a").is_err());
        let deep: Vec<String> = (0..=MAX_DEPTH).map(|i| format!("g{i}")).collect();
        let mut too_deep = report(&["a"]);
        too_deep.path = deep;
        too_deep.path[0] = "a".into();
        let long = Subtree {
            wave: 1,
            gateways: vec![report(&["a"]), too_deep],
        };
        assert!(long.validate("a").is_err());
    }

    #[test]
    fn pushes_read_from_the_admin_api_shape() {
        let cases = [
            (
                r#"{"set_policy":{"service":"llm","policy":"latency"}}"#,
                Push::SetPolicy {
                    service: "llm".into(),
                    policy: "latency".into(),
                },
            ),
            (
                r#"{"purge_cache":{"service":null}}"#,
                Push::PurgeCache { service: None },
            ),
            (
                r#"{"drain":{"node":"gpu-7","draining":true}}"#,
                Push::Drain {
                    node: "gpu-7".into(),
                    draining: true,
                },
            ),
            (
                r#"{"job_settings":{"max_per_node":2}}"#,
                Push::JobSettings { max_per_node: 2 },
            ),
        ];
        for (text, push) in cases {
            assert_eq!(serde_json::from_str::<Push>(text).expect(text), push);
        }
        assert!(serde_json::from_str::<Push>(r#"{"reboot":{}}"#).is_err());
    }
}
