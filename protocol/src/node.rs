//! What a node is: its registration (services, swappable slots), its stats,
//! and how the gateway shows it.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::message::check_name;
use crate::{CodecError, limits};

/// An agent's registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Register {
    /// The shared agent token the gateway is configured with.
    #[n(0)]
    pub token: String,
    /// What the node is and hosts.
    #[n(1)]
    pub node: NodeSpec,
    /// The agent follows the cluster's members: the gateway sends it
    /// [`crate::Message::Members`] after `Registered` and on every change,
    /// and it reports [`crate::Message::Load`] (default false). Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(2), default, skip_if = "crate::call::is_false")]
    pub follows_members: bool,
    /// Where clients reach the node's direct port for look-aside calls,
    /// `host:port` (at most [`crate::MAX_ADDR_LEN`] bytes); `None` when it
    /// has none. An agent that sets it is sent [`crate::Message::LeaseKeys`]
    /// after `Registered` and on every rotation, and may be leased. Added
    /// in v2.
    #[serde(default, with = "crate::added")]
    #[n(3)]
    pub direct: Option<String>,
    /// The agent takes lease holds on its control stream (`Hold`, answered
    /// by `Held`; `DropLease`; `LeaseEnded` with its id) as well as on a
    /// stream per lease (default false: only the latter). A gateway
    /// leases a node only when it set this. Added in v2 after `direct`.
    #[serde(default, with = "crate::added")]
    #[cbor(n(4), default, skip_if = "crate::call::is_false")]
    pub holds_on_control: bool,
}

/// What a node is and which services it hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct NodeSpec {
    /// Unique node id, e.g. `gpu-node-1` (at most 256 bytes).
    #[n(0)]
    pub id: String,
    /// Region, e.g. `eu-west`; empty when unset.
    #[n(1)]
    pub region: String,
    /// Free-form labels, e.g. (`tier`, `premium`).
    #[n(2)]
    pub labels: Vec<(String, String)>,
    /// What running the node costs per hour, in the operator's currency.
    #[n(3)]
    pub cost_per_hour: f32,
    /// The services the node hosts: every one it runs now or can load.
    #[n(4)]
    pub services: Vec<ServiceSpec>,
    /// Swappable slots (e.g. one per GPU): each holds at most one of the
    /// services it can host at a time. A service in no slot is always loaded.
    #[n(5)]
    pub slots: Vec<SlotSpec>,
    /// How often the agent samples its stats, ms: a sample that changed
    /// goes out at once. With no [`Self::heartbeat_ms`] every sample goes
    /// out, and the gateway drops the node after three intervals without
    /// one.
    #[n(6)]
    pub stats_interval_ms: u32,
    /// The agent's version, for the operator.
    #[n(7)]
    pub agent_version: String,
    /// The node is a gateway with a fleet of its own (a child in a tree of
    /// gateways): its services are its fleet's, each with the fleet's
    /// capacity; a call sent to it is admitted there and its policy picks
    /// the node. Such a node may register with no service (an empty
    /// fleet). Default false. Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(8), default, skip_if = "crate::call::is_false")]
    pub gateway: bool,
    /// The longest the agent goes without a stats report, ms: a sample
    /// that says nothing new is kept back until then, so the gateway drops
    /// the node after three heartbeats without a report. At least
    /// `stats_interval_ms`, at most [`MAX_HEARTBEAT_MS`]; none (an older
    /// agent) is `stats_interval_ms`, every sample sent. Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(9)]
    pub heartbeat_ms: Option<u32>,
}

/// The longest [`NodeSpec::heartbeat_ms`] a gateway accepts, ms (1 minute).
pub const MAX_HEARTBEAT_MS: u32 = 60_000;

/// One service a node hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct ServiceSpec {
    /// Service name, e.g. `sha256` (at most 256 bytes).
    #[n(0)]
    pub name: String,
    /// Most calls of this service the node runs at once (at least 1).
    #[n(1)]
    pub max_concurrent: u32,
    /// How long loading the service into a slot usually takes, ms (0 for a
    /// service in no slot). The gateway weighs it against the queue's wait.
    #[n(2)]
    pub load_ms: u32,
    /// An OpenAI-compatible model service (agent kind `openai`): the
    /// gateway lists it in `GET /v1/models` (default false). Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(3), default, skip_if = "crate::call::is_false")]
    pub model: bool,
    /// The policy the node asks the gateway to pick this service's nodes
    /// with (a loaded policy's name, e.g. `latency`), used while the
    /// operator has set none for the service; default none. At most 256
    /// bytes. Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(4)]
    pub policy: Option<String>,
    /// Running a call of the service twice is safe: the gateway may run a
    /// call again on another node after a failure its `[retry]` names
    /// (as for a service its operator marked `idempotent`); default false.
    /// Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(5), default, skip_if = "crate::call::is_false")]
    pub idempotent: bool,
}

/// A swappable slot of a node, e.g. one GPU: which services it can host and
/// which one it holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct SlotSpec {
    /// Slot name, unique on the node, e.g. `gpu0` (at most 256 bytes).
    #[n(0)]
    pub name: String,
    /// Services (named in [`NodeSpec::services`]) the slot can load.
    #[n(1)]
    pub can_host: Vec<String>,
    /// The service loaded and ready now, if any.
    #[n(2)]
    pub loaded: Option<String>,
}

/// The gateway's answer to a good registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Registered {
    /// The key policies see for this node.
    #[n(0)]
    pub node_key: u32,
    /// The gateway's version.
    #[n(1)]
    pub gateway_version: String,
    /// The gateway and the gateways above it, nearest first (itself, its
    /// parent, ...), at most [`crate::MAX_DEPTH`]; sent to a node that
    /// registered as a gateway (empty otherwise, and from an older
    /// gateway). A child that finds its own id there is in a loop. Added
    /// in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(2), default, skip_if = "Vec::is_empty")]
    pub ancestry: Vec<String>,
    /// The gateway takes [`crate::Message::Respec`] on the control stream
    /// (default false: a node whose services change must register again).
    /// Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(3), default, skip_if = "crate::call::is_false")]
    pub takes_respec: bool,
    /// The gateway follows [`NodeSpec::heartbeat_ms`]: it drops the node
    /// after three heartbeats without a stats report (default false: an
    /// older gateway waits three `stats_interval_ms`, so the agent sends it
    /// every sample). Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(4), default, skip_if = "crate::call::is_false")]
    pub takes_heartbeat: bool,
}

/// A node's resource report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct NodeStats {
    /// CPU utilisation of the whole node, 0..=100 %.
    #[n(0)]
    pub cpu_pct: f32,
    /// Memory used, MiB.
    #[n(1)]
    pub mem_used_mib: u64,
    /// Memory installed, MiB.
    #[n(2)]
    pub mem_total_mib: u64,
    /// One entry per GPU; empty where NVML is absent.
    #[n(3)]
    pub gpus: Vec<GpuStats>,
    /// Calls in flight per service, as the agent counts them.
    #[n(4)]
    pub in_flight: Vec<(String, u32)>,
    /// Services whose active health check fails now (the agent probes an
    /// `http`/`openai` service's `health_url`); the gateway offers no call
    /// of them to this node until a later report leaves them out. Empty
    /// when every service is healthy or none is checked. Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(5), default)]
    pub unhealthy: Vec<String>,
    /// The model servers' own load, one entry per service whose agent
    /// scrapes its Prometheus endpoint (`metrics_url`) and whose latest
    /// scrape is good and recent; empty when none is. Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(6), default)]
    pub model_load: Vec<ServiceLoad>,
}

/// One service's model-server load, as its agent last scraped it from the
/// server's Prometheus endpoint (vLLM, SGLang).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct ServiceLoad {
    /// The service (named in [`NodeSpec::services`]).
    #[n(0)]
    pub service: String,
    /// Requests waiting in the server's queue (vLLM
    /// `vllm:num_requests_waiting`).
    #[n(1)]
    pub waiting: u32,
    /// Requests running in the server (vLLM `vllm:num_requests_running`).
    #[n(2)]
    pub running: u32,
    /// KV-cache use, 0..=100 % (vLLM `vllm:gpu_cache_usage_perc` × 100).
    #[n(3)]
    pub kv_cache_pct: f32,
}

/// One GPU's figures, from NVML.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct GpuStats {
    /// NVML device index.
    #[n(0)]
    pub index: u32,
    /// Product name.
    #[n(1)]
    pub name: String,
    /// Utilisation, 0..=100 %.
    #[n(2)]
    pub util_pct: f32,
    /// Memory used, MiB.
    #[n(3)]
    pub mem_used_mib: u64,
    /// Memory installed, MiB.
    #[n(4)]
    pub mem_total_mib: u64,
    /// Temperature, °C.
    #[n(5)]
    pub temperature_c: f32,
    /// Power draw, W.
    #[n(6)]
    pub power_w: f32,
}

/// A registered node as the gateway shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct NodeView {
    /// The node's key, as policies see it.
    #[n(0)]
    pub key: u32,
    /// What the node registered.
    #[n(1)]
    pub spec: NodeSpec,
    /// The node's latest stats, if any arrived yet.
    #[n(2)]
    pub stats: Option<NodeStats>,
    /// Per-service state as the gateway sees it.
    #[n(3)]
    pub services: Vec<ServiceView>,
    /// Swappable slots as the gateway sees them.
    #[n(4)]
    pub slots: Vec<SlotView>,
    /// Whether the node is drained: it takes no new call, in-flight ones
    /// finish.
    #[n(5)]
    pub draining: bool,
    /// Time since the node registered, ms.
    #[n(6)]
    pub connected_ms: u64,
    /// Time since the latest stats report, ms.
    #[n(7)]
    pub last_stats_ms: u64,
    /// Calls this node finished well since the gateway started, across
    /// its reconnects (the gateway keeps the count by node id).
    #[n(8)]
    pub calls_total: u64,
    /// Durable jobs running on it now, every service together (the
    /// per-node job limit counts these): this gateway's, plus in a cluster
    /// the other gateways' as the node last reported. Added in v2, after
    /// 2.0: 0 from an older gateway.
    #[serde(default, with = "crate::added")]
    #[cbor(n(9), default)]
    pub jobs_in_flight: u32,
    /// Where clients reach the node's direct port for look-aside calls
    /// (`host:port`, as the agent registered it); `None` when it takes no
    /// direct calls (it cannot be leased) or from an older gateway. Added
    /// in v2, after leases.
    #[serde(default, with = "crate::added")]
    #[cbor(n(10), default)]
    pub direct: Option<String>,
}

/// One service on one node, as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct ServiceView {
    /// Service name.
    #[n(0)]
    pub name: String,
    /// Calls in flight, gateway's count.
    #[n(1)]
    pub in_flight: u32,
    /// Most calls at once.
    #[n(2)]
    pub max_concurrent: u32,
    /// EWMA of node time, ms (0 with no samples).
    #[n(3)]
    pub latency_ms: f32,
    /// Whether calls can run on it now (false for a service of a slot that
    /// holds another one).
    #[n(4)]
    pub loaded: bool,
    /// Whether the agent's active health check fails now (false for a
    /// service without one, and from a gateway that predates health
    /// checks); an unhealthy service takes no calls here. Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(5), default)]
    pub unhealthy: bool,
    /// How long it stays ejected from the service's candidates (outlier
    /// ejection), ms; 0 when it is in. Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(6), default)]
    pub ejected_for_ms: u64,
    /// Times it was ejected from the service since it registered. Added in
    /// v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(7), default)]
    pub ejections: u32,
    /// Why it is ejected (`consecutive_failures`, `success_rate`); `None`
    /// when it is in. Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(8)]
    pub ejected_why: Option<String>,
}

/// One swappable slot as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct SlotView {
    /// Slot name.
    #[n(0)]
    pub name: String,
    /// Services the slot can load.
    #[n(1)]
    pub can_host: Vec<String>,
    /// The service loaded now, if any.
    #[n(2)]
    pub loaded: Option<String>,
    /// The service being loaded now, if a swap is under way.
    #[n(3)]
    pub swapping_to: Option<String>,
    /// Time until the node may swap again, ms (0 when it may).
    #[n(4)]
    pub cooldown_left_ms: u64,
    /// Services this slot failed to load lately, with the time until it may
    /// try again, ms.
    #[n(5)]
    pub failed: Vec<(String, u64)>,
    /// Swaps this slot finished (ok or not) since the node registered.
    #[n(6)]
    pub swaps_total: u64,
}

impl Register {
    /// Checks the node's spec ([`NodeSpec::validate`]) and the direct
    /// address: at most [`crate::MAX_ADDR_LEN`] bytes of visible ASCII in
    /// the shape `host:port`.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] saying what is wrong.
    pub fn validate(&self) -> Result<(), CodecError> {
        self.node.validate()?;
        if let Some(direct) = &self.direct {
            let shaped = direct
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if direct.len() > crate::MAX_ADDR_LEN
                || !direct.bytes().all(|b| b.is_ascii_graphic())
                || !shaped
            {
                return Err(CodecError::Invalid(format!(
                    "direct address is not host:port in at most {} bytes of visible ascii",
                    crate::MAX_ADDR_LEN
                )));
            }
        }
        Ok(())
    }
}

impl NodeSpec {
    /// The longest the agent goes without a stats report, ms:
    /// [`Self::heartbeat_ms`], or `stats_interval_ms` without one.
    pub fn report_period_ms(&self) -> u32 {
        self.heartbeat_ms
            .unwrap_or(self.stats_interval_ms)
            .max(self.stats_interval_ms)
    }

    /// The slot that can host `service`, if the service is swappable.
    pub fn slot_of(&self, service: &str) -> Option<&SlotSpec> {
        self.slots
            .iter()
            .find(|s| s.can_host.iter().any(|n| n == service))
    }

    /// Checks a name (service or node id) against [`crate::limits`]: 1..=256
    /// bytes, no control characters.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming `what`.
    pub fn validate_name(what: &str, name: &str) -> Result<(), CodecError> {
        check_name(what, name)
    }

    /// Checks the id, services and figures against [`crate::limits`].
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming the broken rule.
    pub fn validate(&self) -> Result<(), CodecError> {
        check_name("node id", &self.id)?;
        let fewest = usize::from(!self.gateway);
        if self.services.len() < fewest || self.services.len() > limits::MAX_SERVICES {
            return Err(CodecError::Invalid(format!(
                "a node must host {fewest}..={} services, got {}",
                limits::MAX_SERVICES,
                self.services.len()
            )));
        }
        for service in &self.services {
            check_name("service name", &service.name)?;
            if let Some(policy) = &service.policy {
                check_name("policy name", policy)?;
            }
            if service.max_concurrent == 0 {
                return Err(CodecError::Invalid(format!(
                    "service {} has max_concurrent 0",
                    service.name
                )));
            }
        }
        if self.slots.len() > limits::MAX_SERVICES {
            return Err(CodecError::Invalid(format!(
                "a node may have at most {} slots, got {}",
                limits::MAX_SERVICES,
                self.slots.len()
            )));
        }
        let mut in_a_slot = std::collections::HashSet::new();
        for slot in &self.slots {
            check_name("slot name", &slot.name)?;
            for name in &slot.can_host {
                if !self.services.iter().any(|s| &s.name == name) {
                    return Err(CodecError::Invalid(format!(
                        "slot {} can host {name:?}, which is not among the node's services",
                        slot.name
                    )));
                }
                if !in_a_slot.insert(name.as_str()) {
                    return Err(CodecError::Invalid(format!(
                        "service {name:?} is in more than one slot"
                    )));
                }
            }
            if let Some(loaded) = &slot.loaded
                && !slot.can_host.contains(loaded)
            {
                return Err(CodecError::Invalid(format!(
                    "slot {} holds {loaded:?}, which it cannot host",
                    slot.name
                )));
            }
        }
        if !self.cost_per_hour.is_finite() || self.cost_per_hour < 0.0 {
            return Err(CodecError::Invalid(
                "cost_per_hour must be finite and >= 0".into(),
            ));
        }
        if self.stats_interval_ms == 0 {
            return Err(CodecError::Invalid("stats_interval_ms must be > 0".into()));
        }
        if let Some(heartbeat) = self.heartbeat_ms
            && !(self.stats_interval_ms..=MAX_HEARTBEAT_MS).contains(&heartbeat)
        {
            return Err(CodecError::Invalid(format!(
                "heartbeat_ms {heartbeat} must be in stats_interval_ms..={MAX_HEARTBEAT_MS}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod register_tests {
    use super::{NodeSpec, Register, ServiceSpec};

    fn register(direct: Option<&str>) -> Register {
        Register {
            token: "t".into(),
            node: NodeSpec {
                id: "node-a".into(),
                region: String::new(),
                labels: Vec::new(),
                cost_per_hour: 0.0,
                services: vec![ServiceSpec {
                    name: "echo".into(),
                    max_concurrent: 1,
                    load_ms: 0,
                    model: false,
                    policy: None,
                    idempotent: false,
                }],
                slots: Vec::new(),
                stats_interval_ms: 1000,
                heartbeat_ms: None,
                agent_version: String::new(),
                gateway: false,
            },
            follows_members: true,
            direct: direct.map(str::to_string),
            holds_on_control: true,
        }
    }

    #[test]
    fn a_direct_address_is_host_and_port_of_bounded_length() {
        for good in [
            None,
            Some("10.0.0.5:7443"),
            Some("[::1]:7443"),
            Some("node-a.example:1"),
        ] {
            assert!(register(good).validate().is_ok(), "{good:?}");
        }
        let long = format!("{}:1", "h".repeat(crate::MAX_ADDR_LEN));
        for bad in [
            "",
            "nohost",
            ":7443",
            "host:port",
            "host:70000",
            "a b:1",
            long.as_str(),
        ] {
            assert!(register(Some(bad)).validate().is_err(), "{bad:?}");
        }
    }
}
