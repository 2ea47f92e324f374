//! The messages frames carry.

use bytes::Bytes;

use crate::{
    Ancestry, CacheStatsView, CallError, CallHead, CodecError, DispatchHead, FrameKind, HandUp,
    JobReply, JobRequest, LeaseDrop, LeaseEnd, LeaseGrant, LeaseHeld, LeaseHold, LeaseKeys,
    LeaseRelease, LeaseRequest, LogChunk, MemberList, NodeLoad, NodeStats, NodeView, PolicyTable,
    Probe, PurgeCache, QueueView, Register, Registered, ReplyHead, Reserved, Respec, ResultHead,
    SetPolicy, Subtree, SwapReport, SwapRequest, Trailer, WireVersion, limits,
};

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
    /// Gateway → agent on the control stream: load a service into a slot.
    Swap(SwapRequest),
    /// Agent → gateway on the control stream: a slot's state changed.
    Swapped(SwapReport),
    /// Gateway → client: the call waits for a node loading its service.
    Reserved(Reserved),
    /// Client → gateway: list the queues.
    ListQueues,
    /// Gateway → client: every service's queue.
    Queues(Vec<QueueView>),
    /// Client → gateway: the result cache's statistics.
    CacheStats,
    /// Gateway → client: the result cache's statistics.
    CacheStatsView(CacheStatsView),
    /// Client → gateway (admin): drop cached results (all, or one
    /// service's); answered by [`Message::Ack`].
    PurgeCache(PurgeCache),
    /// The end of a streamed result (a [`ReplyHead`] or [`ResultHead`]
    /// whose `payload_len` is `None`): every `Data` chunk was sent.
    End(Trailer),
    /// Agent → gateway on the control stream: the node is shutting down
    /// (SIGTERM): send it no new call; its calls in flight finish, then it
    /// closes its connection. Empty body.
    Drain,
    /// Client → gateway: a job operation (v2 only).
    Job(Box<JobRequest>),
    /// Gateway → client: a job operation's answer (v2 only).
    JobReply(Box<JobReply>),
    /// Agent → gateway on a dispatch stream that asked for its log: output
    /// as the service wrote it (v2 only).
    Log(LogChunk),
    /// Gateway → agent on the control stream (after `Registered`, to an
    /// agent whose registration says it follows members, and on every
    /// change), and gateway → client in answer to `ListMembers`: the live
    /// gateways of the cluster (v2 only).
    Members(MemberList),
    /// Client → gateway: which gateways serve this fleet; answered by
    /// [`Message::Members`] (v2 only).
    ListMembers,
    /// Agent → gateway on the control stream: the node's calls in flight
    /// across every gateway, when they change (v2 only).
    Load(NodeLoad),
    /// Client → gateway: lease a node; answered by `Queued`/`Reserved`
    /// while it waits, then [`Message::Leased`] or `Error` (v2 only).
    Lease(LeaseRequest),
    /// Gateway → client: the lease granted (v2 only).
    Leased(LeaseGrant),
    /// Gateway → agent: hold a slot for a lease. On the control stream
    /// (agents that registered `holds_on_control`) answered there by
    /// [`Message::Held`]; on a stream of its own by `Ack` (held) or
    /// `Error`; then [`Message::LeaseEnded`] on the same stream (v2 only).
    Hold(LeaseHold),
    /// Agent → gateway, on the hold's stream or (with its lease id) the
    /// control stream: the lease ended (v2 only).
    LeaseEnded(LeaseEnd),
    /// Agent → gateway on the control stream: a hold sent there was taken
    /// or refused (v2 only).
    Held(LeaseHeld),
    /// Gateway → agent on the control stream: end a lease held there now
    /// (v2 only).
    DropLease(LeaseDrop),
    /// Client → gateway: release a lease; answered by `Ack` or `Error`
    /// (v2 only).
    ReleaseLease(LeaseRelease),
    /// Gateway → agent on the control stream: the keys lease tokens are
    /// signed with (v2 only; sent to agents that registered a direct
    /// address).
    LeaseKeys(LeaseKeys),
    /// Node → gateway on the control stream: the node's services changed
    /// while registered (a child gateway's fleet); sent only to a gateway
    /// whose `Registered::takes_respec` is set (v2 only).
    Respec(Box<Respec>),
    /// Gateway → child gateway on the control stream: the gateways above
    /// the child changed (v2 only).
    Ancestry(Ancestry),
    /// Gateway → child gateway, first frame of a stream of its own: an
    /// echo wave, answered by [`Message::Subtree`] (v2 only).
    Probe(Box<Probe>),
    /// Child gateway → gateway: its subtree's answer to a wave (v2 only).
    Subtree(Box<Subtree>),
    /// Gateway → child gateway on the control stream: hand some waiting
    /// calls up (rebalancing; v2 only).
    HandUp(HandUp),
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
            Self::Swap(_) => FrameKind::Swap,
            Self::Swapped(_) => FrameKind::Swapped,
            Self::Reserved(_) => FrameKind::Reserved,
            Self::ListQueues => FrameKind::ListQueues,
            Self::Queues(_) => FrameKind::Queues,
            Self::CacheStats => FrameKind::CacheStats,
            Self::CacheStatsView(_) => FrameKind::CacheStatsView,
            Self::PurgeCache(_) => FrameKind::PurgeCache,
            Self::End(_) => FrameKind::End,
            Self::Drain => FrameKind::Drain,
            Self::Job(_) => FrameKind::Job,
            Self::JobReply(_) => FrameKind::JobReply,
            Self::Log(_) => FrameKind::Log,
            Self::Members(_) => FrameKind::Members,
            Self::ListMembers => FrameKind::ListMembers,
            Self::Load(_) => FrameKind::Load,
            Self::Lease(_) => FrameKind::Lease,
            Self::Leased(_) => FrameKind::Leased,
            Self::Hold(_) => FrameKind::Hold,
            Self::LeaseEnded(_) => FrameKind::LeaseEnded,
            Self::ReleaseLease(_) => FrameKind::ReleaseLease,
            Self::LeaseKeys(_) => FrameKind::LeaseKeys,
            Self::Held(_) => FrameKind::Held,
            Self::DropLease(_) => FrameKind::DropLease,
            Self::Respec(_) => FrameKind::Respec,
            Self::Ancestry(_) => FrameKind::Ancestry,
            Self::Probe(_) => FrameKind::Probe,
            Self::Subtree(_) => FrameKind::Subtree,
            Self::HandUp(_) => FrameKind::HandUp,
        }
    }

    /// Appends the message's body, encoded as `version` says, to `out`.
    pub(crate) fn encode_body(&self, version: WireVersion, out: &mut Vec<u8>) {
        match version {
            WireVersion::V1 => crate::v1::encode_body(self, out),
            WireVersion::V2 => crate::v2::encode_body(self, out),
        }
    }

    /// Decodes a `kind` body encoded as `version` says.
    pub(crate) fn decode_body(
        version: WireVersion,
        kind: FrameKind,
        body: &[u8],
    ) -> Result<Self, CodecError> {
        match version {
            WireVersion::V1 => crate::v1::decode_body(kind, body),
            WireVersion::V2 => crate::v2::decode_body(kind, body),
        }
    }
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<(), CodecError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        CacheInfo, Codec, Decoded, ErrorKind, GpuStats, NodeSpec, ServiceCacheStats, ServiceLoad,
        ServiceSpec,
    };
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
                    priority: -(t as i32 % 7),
                    realtime: len % 2 == 0,
                    no_cache: len % 3 == 0,
                    max_age_s: (t % 5 != 0).then_some(t / 7),
                    api_key: (t % 3 == 0).then(|| "sk-test".into()),
                    endpoint: (t % 2 == 0).then(|| "/embeddings".into()),
                    log: false,
                    traceparent: (t % 4 == 1)
                        .then(|| "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                    request_id: (t % 6 == 1).then(|| format!("req-{t}")),
                    lease: None,
                })
            }),
            (
                any::<u64>(),
                text,
                proptest::option::of((any::<u64>(), any::<bool>()))
            )
                .prop_map(|(len, node_id, cache)| Message::Result(ResultHead {
                    payload_len: (len % 2 == 0).then_some(len),
                    node_id,
                    policy: "latency".into(),
                    timings: crate::Timings {
                        queue_ms: 1.5,
                        node_ms: 2.0,
                        total_ms: 4.25,
                        attempts: 2,
                    },
                    cache: cache.map(|(age_ms, coalesced)| CacheInfo { age_ms, coalesced }),
                    content_type: (len % 3 == 0).then(|| "text/event-stream".into()),
                    status: (len % 5 == 0).then_some(200),
                    explain: (len % 7 == 0)
                        .then(|| "least-request → n1: least loaded (of 2)".into()),
                    request_id: (len % 11 == 0).then(|| "req-1".into()),
                    via: Vec::new(),
                })),
            (proptest::option::of(any::<u64>()), any::<u16>()).prop_map(|(len, status)| {
                Message::Reply(ReplyHead {
                    payload_len: len,
                    exec_ms: 1.5,
                    content_type: Some("application/json".into()),
                    status: Some(status),
                    explain: None,
                    path: Vec::new(),
                })
            }),
            (any::<u64>(), 0u16..1000).prop_map(|(len, ms)| Message::End(Trailer {
                len,
                exec_ms: f32::from(ms),
            })),
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
                    unhealthy: vec!["svc".into()],
                    model_load: vec![ServiceLoad {
                        service: "svc".into(),
                        waiting: 2,
                        running: 5,
                        kv_cache_pct: 37.5,
                    }],
                })),
            (text, any::<u16>()).prop_map(|(m, status)| Message::Error(CallError {
                not_run: status % 2 == 0,
                status: (status % 3 == 0).then_some(status),
                body: (status % 5 == 0).then(|| r#"{"error":{}}"#.into()),
                node_id: (status % 7 == 0).then(|| m.clone().into()),
                request_id: (status % 11 == 0).then(|| format!("req-{status}").into()),
                ..CallError::new(ErrorKind::ServiceFailed, m.clone())
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
            (any::<u64>(), text, text).prop_map(|(swap_id, slot, service)| {
                Message::Swap(SwapRequest {
                    swap_id,
                    slot,
                    service,
                })
            }),
            (any::<u64>(), text, proptest::option::of(text), any::<u32>()).prop_map(
                |(swap_id, slot, loaded, duration_ms)| Message::Swapped(SwapReport {
                    swap_id,
                    slot,
                    error: loaded.is_none().then(|| "start failed".to_string()),
                    loaded,
                    duration_ms,
                })
            ),
            (text, any::<u32>()).prop_map(|(node_id, expected_ms)| Message::Reserved(Reserved {
                node_id,
                service: "llm".into(),
                from: None,
                expected_ms
            })),
            Just(Message::ListQueues),
            Just(Message::Drain),
            (text, any::<u32>()).prop_map(|(service, length)| Message::Queues(vec![QueueView {
                service,
                length,
                capacity: 1000,
                oldest_wait_ms: 5,
                reserved: 0,
                dispatched_total: 1,
                abandoned_total: 2,
                overloaded_total: 3,
                retries_total: 4,
                retries_refused_total: 5,
                breaker_trips_total: 6,
            }])),
            Just(Message::CacheStats),
            (text, any::<u64>(), any::<u32>()).prop_map(|(service, n, ttl_s)| {
                Message::CacheStatsView(CacheStatsView {
                    max_bytes: 256 << 20,
                    total_bytes: n,
                    entries: n / 3,
                    services: vec![ServiceCacheStats {
                        service,
                        ttl_s,
                        entries: n / 3,
                        bytes: n,
                        hits: n / 2,
                        coalesced: 1,
                        misses: 2,
                        evictions: 3,
                        expirations: 4,
                    }],
                })
            }),
            (text, proptest::option::of(text)).prop_map(|(admin_token, service)| {
                Message::PurgeCache(PurgeCache {
                    admin_token,
                    service,
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(messages in proptest::collection::vec(arb_message(), 1..8)) {
            for version in WireVersion::ALL {
                let codec = Codec::default().with_version(version);
                // A message v1 does not have is never sent to a v1 peer.
                let messages: Vec<&Message> = messages
                    .iter()
                    .filter(|m| version != WireVersion::V1 || m.as_v1().is_some())
                    .collect();
                let mut buf = Vec::new();
                for m in &messages {
                    codec.encode(m, &mut buf).expect("encode");
                }
                let mut at = 0;
                for m in messages {
                    match codec.decode(&buf[at..]).expect("decode") {
                        Decoded::Frame { message, consumed } => {
                            let expected = match version {
                                WireVersion::V1 => m.as_v1().expect("a v1 message"),
                                _ => m.clone(),
                            };
                            prop_assert_eq!(&message, &expected);
                            at += consumed;
                        }
                        Decoded::Incomplete { .. } => prop_assert!(false, "incomplete"),
                    }
                }
                prop_assert_eq!(at, buf.len());
            }
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
            for version in WireVersion::ALL {
                let codec = Codec::new(256).with_version(version);
                let _ = codec.decode(&bytes);
            }
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

    /// Golden bytes: a streamed reply head, an `End` trailer and the two
    /// error kinds appended for tenants keep their encoding.
    #[test]
    fn streamed_result_frames_keep_their_bytes_in_v1() {
        let codec = Codec::default().with_version(WireVersion::V1);
        let head = Message::Reply(ReplyHead {
            payload_len: None,
            exec_ms: 0.0,
            content_type: Some("a/b".into()),
            status: Some(200),
            explain: None,
            path: Vec::new(),
        });
        assert_eq!(
            codec.encode_to_vec(&head).expect("encode"),
            [
                1, 9, 0, 0, 0, 0, 0, 13, 0, 0, 0, 0, 0, 1, 3, b'a', b'/', b'b', 1, 200, 1
            ]
        );
        let end = Message::End(Trailer {
            len: 300,
            exec_ms: 0.0,
        });
        assert_eq!(
            codec.encode_to_vec(&end).expect("encode"),
            [1, 26, 0, 0, 0, 0, 0, 6, 0xac, 0x02, 0, 0, 0, 0]
        );
        let error = |kind| Message::Error(CallError::new(kind, String::new()));
        assert_eq!(
            codec
                .encode_to_vec(&error(ErrorKind::Forbidden))
                .expect("encode"),
            [1, 11, 0, 0, 0, 0, 0, 2, 13, 0]
        );
        assert_eq!(
            codec
                .encode_to_vec(&error(ErrorKind::RateLimited))
                .expect("encode"),
            [1, 11, 0, 0, 0, 0, 0, 2, 14, 0]
        );
    }

    #[test]
    fn call_head_limits() {
        let mut head = CallHead::new("", 0, 1);
        assert!(head.validate().is_err(), "empty service");
        head.service = "x".repeat(300);
        assert!(head.validate().is_err(), "long service");
        head.service = "ok".into();
        head.hints = vec![("k".into(), "v".into()); 65];
        assert!(head.validate().is_err(), "too many hints");
        head.hints.truncate(1);
        assert!(head.validate().is_ok());
        head.endpoint = Some("/../admin".into());
        assert!(head.validate().is_err(), "unknown endpoint");
        head.endpoint = Some("/embeddings".into());
        head.api_key = Some("k".repeat(513));
        assert!(head.validate().is_err(), "long api key");
        head.api_key = Some("sk-1".into());
        assert!(head.validate().is_ok());
        assert_eq!(head.endpoint(), "/embeddings");
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
                load_ms: 0,
                model: false,
                policy: None,
                idempotent: false,
            }],
            slots: vec![],
            stats_interval_ms: 1000,
            heartbeat_ms: None,
            agent_version: "0".into(),
            gateway: false,
        };
        assert!(spec.validate().is_err());
    }
}
