//! The messages frames carry.

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{CodecError, ErrorKind, FrameKind, PolicyTable, SetPolicy, limits};

/// One frame's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Agent → gateway, first frame of the control stream.
    Register(Register),
    /// Gateway → agent: registration accepted.
    Registered(Registered),
    /// Gateway → agent: registration refused (wrong token, bad spec); the
    /// gateway closes the connection after it.
    Refused(String),
    /// Agent → gateway on the control stream, every stats interval.
    Stats(NodeStats),
    /// Client → gateway: one call; `payload_len` bytes of `Data` follow.
    Call(CallHead),
    /// Gateway → agent: run one call; `payload_len` bytes of `Data` follow.
    Dispatch(DispatchHead),
    /// Gateway → client: the call waits in the queue at this position (1 = next).
    Queued(u32),
    /// Gateway → client: the call succeeded; `payload_len` bytes of `Data` follow.
    Result(ResultHead),
    /// Agent → gateway: the service succeeded; `payload_len` bytes of `Data` follow.
    Reply(ReplyHead),
    /// A chunk of payload, at most [`crate::CHUNK_LEN`] bytes when sent by
    /// Switchyard's own peers.
    Data(Bytes),
    /// The call failed.
    Error(CallError),
    /// Client → gateway: list the registered nodes.
    ListNodes,
    /// Gateway → client: the registered nodes.
    Nodes(Vec<NodeView>),
    /// Client → gateway: list the policies and which service uses which.
    ListPolicies,
    /// Gateway → client: the policy table.
    Policies(PolicyTable),
    /// Client → gateway (admin): change a service's policy.
    SetPolicy(SetPolicy),
    /// Gateway → client: an admin change was made; the text says what.
    Ack(String),
}

/// An agent's registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// The shared agent token the gateway is configured with.
    pub token: String,
    /// What the node is and hosts.
    pub node: NodeSpec,
}

/// What a node is and which services it hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Unique node id, e.g. `gpu-node-1` (at most 256 bytes).
    pub id: String,
    /// Region, e.g. `eu-west`; empty when unset.
    pub region: String,
    /// Free-form labels, e.g. (`tier`, `premium`).
    pub labels: Vec<(String, String)>,
    /// What running the node costs per hour, in the operator's currency.
    pub cost_per_hour: f32,
    /// The services the node hosts.
    pub services: Vec<ServiceSpec>,
    /// How often the agent sends stats, ms; the gateway drops the node after
    /// three intervals without one.
    pub stats_interval_ms: u32,
    /// The agent's version, for the operator.
    pub agent_version: String,
}

/// One service a node hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Service name, e.g. `sha256` (at most 256 bytes).
    pub name: String,
    /// Most calls of this service the node runs at once (at least 1).
    pub max_concurrent: u32,
}

/// The gateway's answer to a good registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The key policies see for this node.
    pub node_key: u32,
    /// The gateway's version.
    pub gateway_version: String,
}

/// A node's resource report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// CPU utilisation of the whole node, 0..=100 %.
    pub cpu_pct: f32,
    /// Memory used, MiB.
    pub mem_used_mib: u64,
    /// Memory installed, MiB.
    pub mem_total_mib: u64,
    /// One entry per GPU; empty where NVML is absent.
    pub gpus: Vec<GpuStats>,
    /// Calls in flight per service, as the agent counts them.
    pub in_flight: Vec<(String, u32)>,
}

/// One GPU's figures, from NVML.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuStats {
    /// NVML device index.
    pub index: u32,
    /// Product name.
    pub name: String,
    /// Utilisation, 0..=100 %.
    pub util_pct: f32,
    /// Memory used, MiB.
    pub mem_used_mib: u64,
    /// Memory installed, MiB.
    pub mem_total_mib: u64,
    /// Temperature, °C.
    pub temperature_c: f32,
    /// Power draw, W.
    pub power_w: f32,
}

/// A client's call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallHead {
    /// The service to call.
    pub service: String,
    /// Payload length, bytes; that many bytes of `Data` follow.
    pub payload_len: u64,
    /// How long the caller waits, ms, from when the gateway reads this frame.
    pub timeout_ms: u32,
    /// Key/value hints for the policy (e.g. `policy=latency`, `max_cost=0.5`).
    pub hints: Vec<(String, String)>,
}

/// A call the gateway hands to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchHead {
    /// The gateway's id for the call (for logs).
    pub call_id: u64,
    /// The service to run.
    pub service: String,
    /// Payload length, bytes; that many bytes of `Data` follow.
    pub payload_len: u64,
    /// Time left for the call, ms: the agent kills the work past it.
    pub timeout_ms: u32,
}

/// Gateway → client: a successful call's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultHead {
    /// Result length, bytes; that many bytes of `Data` follow.
    pub payload_len: u64,
    /// The node that served the call.
    pub node_id: String,
    /// The policy that picked the node.
    pub policy: String,
    /// Where the time went.
    pub timings: Timings,
}

/// Where a call's time went, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting for a node (queue and pick), ms.
    pub queue_ms: f32,
    /// From dispatch to the node's answer, ms.
    pub node_ms: f32,
    /// From the call's arrival to the answer, ms.
    pub total_ms: f32,
}

/// Agent → gateway: a successful service run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplyHead {
    /// Result length, bytes; that many bytes of `Data` follow.
    pub payload_len: u64,
    /// Time the service took on the node, ms.
    pub exec_ms: f32,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Details in words, e.g. the command's stderr.
    pub message: String,
}

/// A registered node as the gateway shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node's key, as policies see it.
    pub key: u32,
    /// What the node registered.
    pub spec: NodeSpec,
    /// The node's latest stats, if any arrived yet.
    pub stats: Option<NodeStats>,
    /// Per-service state as the gateway sees it.
    pub services: Vec<ServiceView>,
    /// Time since the node registered, ms.
    pub connected_ms: u64,
    /// Time since the latest stats report, ms.
    pub last_stats_ms: u64,
    /// Calls this node finished since it registered.
    pub calls_total: u64,
}

/// One service on one node, as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Service name.
    pub name: String,
    /// Calls in flight, gateway's count.
    pub in_flight: u32,
    /// Most calls at once.
    pub max_concurrent: u32,
    /// EWMA of node time, ms (0 with no samples).
    pub latency_ms: f32,
}

impl Message {
    /// The frame kind that carries this message.
    pub fn kind(&self) -> FrameKind {
        match self {
            Self::Register(_) => FrameKind::Register,
            Self::Registered(_) => FrameKind::Registered,
            Self::Refused(_) => FrameKind::Refused,
            Self::Stats(_) => FrameKind::Stats,
            Self::Call(_) => FrameKind::Call,
            Self::Dispatch(_) => FrameKind::Dispatch,
            Self::Queued(_) => FrameKind::Queued,
            Self::Result(_) => FrameKind::Result,
            Self::Reply(_) => FrameKind::Reply,
            Self::Data(_) => FrameKind::Data,
            Self::Error(_) => FrameKind::Error,
            Self::ListNodes => FrameKind::ListNodes,
            Self::Nodes(_) => FrameKind::Nodes,
            Self::ListPolicies => FrameKind::ListPolicies,
            Self::Policies(_) => FrameKind::Policies,
            Self::SetPolicy(_) => FrameKind::SetPolicy,
            Self::Ack(_) => FrameKind::Ack,
        }
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        fn put<T: Serialize>(value: &T, out: &mut Vec<u8>) {
            // Serializing into a Vec cannot fail for these plain types:
            // postcard only fails on unsupported serde features (none used).
            if let Ok(bytes) = postcard::to_extend(value, std::mem::take(out)) {
                *out = bytes;
            }
        }
        match self {
            Self::Register(m) => put(m, out),
            Self::Registered(m) => put(m, out),
            Self::Refused(m) => put(m, out),
            Self::Stats(m) => put(m, out),
            Self::Call(m) => put(m, out),
            Self::Dispatch(m) => put(m, out),
            Self::Queued(m) => put(m, out),
            Self::Result(m) => put(m, out),
            Self::Reply(m) => put(m, out),
            Self::Data(bytes) => out.extend_from_slice(bytes),
            Self::Error(m) => put(m, out),
            Self::ListNodes | Self::ListPolicies => {}
            Self::Nodes(m) => put(m, out),
            Self::Policies(m) => put(m, out),
            Self::SetPolicy(m) => put(m, out),
            Self::Ack(m) => put(m, out),
        }
    }

    pub(crate) fn decode_body(kind: FrameKind, body: &[u8]) -> Result<Self, CodecError> {
        fn get<T: DeserializeOwned>(kind: FrameKind, body: &[u8]) -> Result<T, CodecError> {
            let malformed = |reason: String| CodecError::Malformed { kind, reason };
            let (value, rest) =
                postcard::take_from_bytes(body).map_err(|e| malformed(e.to_string()))?;
            if !rest.is_empty() {
                return Err(malformed(format!("{} trailing bytes", rest.len())));
            }
            Ok(value)
        }
        Ok(match kind {
            FrameKind::Register => Self::Register(get(kind, body)?),
            FrameKind::Registered => Self::Registered(get(kind, body)?),
            FrameKind::Refused => Self::Refused(get(kind, body)?),
            FrameKind::Stats => Self::Stats(get(kind, body)?),
            FrameKind::Call => Self::Call(get(kind, body)?),
            FrameKind::Dispatch => Self::Dispatch(get(kind, body)?),
            FrameKind::Queued => Self::Queued(get(kind, body)?),
            FrameKind::Result => Self::Result(get(kind, body)?),
            FrameKind::Reply => Self::Reply(get(kind, body)?),
            FrameKind::Data => Self::Data(Bytes::copy_from_slice(body)),
            FrameKind::Error => Self::Error(get(kind, body)?),
            FrameKind::ListNodes | FrameKind::ListPolicies => {
                if !body.is_empty() {
                    return Err(CodecError::Malformed {
                        kind,
                        reason: format!("{} trailing bytes", body.len()),
                    });
                }
                if kind == FrameKind::ListNodes {
                    Self::ListNodes
                } else {
                    Self::ListPolicies
                }
            }
            FrameKind::Nodes => Self::Nodes(get(kind, body)?),
            FrameKind::Policies => Self::Policies(get(kind, body)?),
            FrameKind::SetPolicy => Self::SetPolicy(get(kind, body)?),
            FrameKind::Ack => Self::Ack(get(kind, body)?),
        })
    }
}

fn check_name(what: &str, name: &str) -> Result<(), CodecError> {
    if name.is_empty() || name.len() > limits::MAX_NAME_LEN {
        return Err(CodecError::Invalid(format!(
            "{what} must be 1..={} bytes, got {}",
            limits::MAX_NAME_LEN,
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(CodecError::Invalid(format!(
            "{what} holds a control character"
        )));
    }
    Ok(())
}

impl CallHead {
    /// Checks the service name and hints against [`crate::limits`].
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming the broken limit.
    pub fn validate(&self) -> Result<(), CodecError> {
        check_name("service name", &self.service)?;
        if self.hints.len() > limits::MAX_HINTS {
            return Err(CodecError::Invalid(format!(
                "{} hints, at most {} allowed",
                self.hints.len(),
                limits::MAX_HINTS
            )));
        }
        for (key, value) in &self.hints {
            if key.len() > limits::MAX_HINT_LEN || value.len() > limits::MAX_HINT_LEN {
                return Err(CodecError::Invalid(format!(
                    "hint {key:.32} longer than {} bytes",
                    limits::MAX_HINT_LEN
                )));
            }
        }
        Ok(())
    }

    /// The value of hint `key`, if the call carries it.
    pub fn hint(&self, key: &str) -> Option<&str> {
        self.hints
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl NodeSpec {
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
        if self.services.is_empty() || self.services.len() > limits::MAX_SERVICES {
            return Err(CodecError::Invalid(format!(
                "a node must host 1..={} services, got {}",
                limits::MAX_SERVICES,
                self.services.len()
            )));
        }
        for service in &self.services {
            check_name("service name", &service.name)?;
            if service.max_concurrent == 0 {
                return Err(CodecError::Invalid(format!(
                    "service {} has max_concurrent 0",
                    service.name
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Decoded};
    use proptest::prelude::*;

    fn arb_message() -> impl Strategy<Value = Message> {
        let text = "[a-z0-9-]{0,24}";
        prop_oneof![
            (text, text, 0u64..u64::MAX, any::<u32>()).prop_map(|(service, hint, len, t)| {
                Message::Call(CallHead {
                    service,
                    payload_len: len,
                    timeout_ms: t,
                    hints: vec![("k".into(), hint)],
                })
            }),
            proptest::collection::vec(any::<u8>(), 0..2048)
                .prop_map(|v| Message::Data(Bytes::from(v))),
            (
                any::<f32>().prop_filter("finite", |f| f.is_finite()),
                0u64..1 << 40
            )
                .prop_map(|(cpu, mem)| Message::Stats(NodeStats {
                    cpu_pct: cpu,
                    mem_used_mib: mem,
                    mem_total_mib: mem * 2,
                    gpus: vec![GpuStats {
                        index: 0,
                        name: "gpu".into(),
                        ..GpuStats::default()
                    }],
                    in_flight: vec![("svc".into(), 3)],
                })),
            (text).prop_map(|m| Message::Error(CallError {
                kind: ErrorKind::ServiceFailed,
                message: m
            })),
            any::<u32>().prop_map(Message::Queued),
            Just(Message::ListNodes),
            Just(Message::ListPolicies),
            (text, text).prop_map(|(service, policy)| Message::SetPolicy(SetPolicy {
                admin_token: "t".into(),
                service,
                policy
            })),
            text.prop_map(Message::Ack),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(messages in proptest::collection::vec(arb_message(), 1..8)) {
            let codec = Codec::default();
            let mut buf = Vec::new();
            for m in &messages {
                codec.encode(m, &mut buf).expect("encode");
            }
            let mut at = 0;
            for m in &messages {
                match codec.decode(&buf[at..]).expect("decode") {
                    Decoded::Frame { message, consumed } => {
                        prop_assert_eq!(&message, m);
                        at += consumed;
                    }
                    Decoded::Incomplete { .. } => prop_assert!(false, "incomplete"),
                }
            }
            prop_assert_eq!(at, buf.len());
        }

        #[test]
        fn every_truncation_is_incomplete(m in arb_message(), cut in 0usize..4096) {
            let codec = Codec::default();
            let buf = codec.encode_to_vec(&m).expect("encode");
            let cut = cut % buf.len();
            match codec.decode(&buf[..cut]) {
                Ok(Decoded::Incomplete { needed }) => prop_assert!(needed > 0 && needed <= buf.len() - cut),
                other => prop_assert!(false, "expected incomplete, got {:?}", other),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let codec = Codec::new(256);
            let _ = codec.decode(&bytes);
        }

        #[test]
        fn lengths_over_the_maximum_are_refused(len in 1025u32..) {
            let codec = Codec::new(1024);
            let mut header = [crate::VERSION, FrameKind::Data as u8, 0, 0, 0, 0, 0, 0];
            header[4..].copy_from_slice(&len.to_be_bytes());
            prop_assert_eq!(
                codec.decode(&header),
                Err(CodecError::FrameTooLarge { len: u64::from(len), max: 1024 })
            );
        }
    }

    #[test]
    fn call_head_limits() {
        let mut head = CallHead {
            service: String::new(),
            payload_len: 0,
            timeout_ms: 1,
            hints: vec![],
        };
        assert!(head.validate().is_err(), "empty service");
        head.service = "x".repeat(300);
        assert!(head.validate().is_err(), "long service");
        head.service = "ok".into();
        head.hints = vec![("k".into(), "v".into()); 65];
        assert!(head.validate().is_err(), "too many hints");
        head.hints.truncate(1);
        assert!(head.validate().is_ok());
        assert_eq!(head.hint("k"), Some("v"));
    }

    #[test]
    fn node_spec_rejects_zero_concurrency() {
        let spec = NodeSpec {
            id: "n1".into(),
            region: String::new(),
            labels: vec![],
            cost_per_hour: 1.0,
            services: vec![ServiceSpec {
                name: "echo".into(),
                max_concurrent: 0,
            }],
            stats_interval_ms: 1000,
            agent_version: "0".into(),
        };
        assert!(spec.validate().is_err());
    }
}
