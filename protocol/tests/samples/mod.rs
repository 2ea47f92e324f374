//! One message of every frame kind, with every field set to a value that is
//! not its default (so a field that stops being written shows).

use bytes::Bytes;
use switchyard_protocol::*;

fn node_spec() -> NodeSpec {
    NodeSpec {
        id: "gpu-node-1".into(),
        region: "eu-west".into(),
        labels: vec![("tier".into(), "premium".into())],
        cost_per_hour: 1.5,
        services: vec![ServiceSpec {
            name: "llm".into(),
            max_concurrent: 4,
            load_ms: 2500,
            model: true,
            policy: Some("latency".into()),
            idempotent: true,
        }],
        slots: vec![SlotSpec {
            name: "gpu0".into(),
            can_host: vec!["llm".into()],
            loaded: Some("llm".into()),
        }],
        stats_interval_ms: 1000,
        heartbeat_ms: None,
        agent_version: "0.1.0".into(),
        gateway: true,
    }
}

fn node_stats() -> NodeStats {
    NodeStats {
        cpu_pct: 12.5,
        mem_used_mib: 2048,
        mem_total_mib: 8192,
        gpus: vec![GpuStats {
            index: 0,
            name: "H100".into(),
            util_pct: 50.0,
            mem_used_mib: 1000,
            mem_total_mib: 80000,
            temperature_c: 60.0,
            power_w: 300.0,
        }],
        in_flight: vec![("llm".into(), 3)],
        unhealthy: vec!["web".into()],
        model_load: vec![ServiceLoad {
            service: "llm".into(),
            waiting: 3,
            running: 8,
            kv_cache_pct: 62.5,
        }],
    }
}

fn claims() -> LeaseClaims {
    LeaseClaims {
        lease_id: "0123456789abcdef0123456789abcdef".into(),
        key_id: 0x5eed,
        node_id: "gpu-node-1".into(),
        service: "llm".into(),
        tenant: "team-a".into(),
        expires_unix_ms: 1_700_000_030_000,
        max_calls: 10,
    }
}

/// A lease token signed with a fixed key (the same bytes every run).
pub fn token() -> String {
    claims().sign(&[7; LEASE_KEY_LEN])
}

/// `(name, message)` for every frame kind, in kind order.
pub fn all() -> Vec<(&'static str, Message)> {
    vec![
        (
            "Register",
            Message::Register(Register {
                token: "tok".into(),
                node: node_spec(),
                follows_members: true,
                direct: Some("10.0.0.5:7443".into()),
                holds_on_control: true,
            }),
        ),
        (
            "Registered",
            Message::Registered(Registered {
                node_key: 7,
                gateway_version: "0.1.0".into(),
                ancestry: vec!["site-a".into(), "root".into()],
                takes_respec: true,
                takes_heartbeat: false,
            }),
        ),
        ("Refused", Message::Refused("wrong token".into())),
        ("Stats", Message::Stats(node_stats())),
        (
            "Call",
            Message::Call(CallHead {
                service: "llm".into(),
                payload_len: 300,
                timeout_ms: 5000,
                hints: vec![("policy".into(), "latency".into())],
                priority: -2,
                realtime: true,
                no_cache: true,
                max_age_s: Some(60),
                api_key: Some("sk-1".into()),
                endpoint: Some("/embeddings".into()),
                log: false,
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                request_id: Some("req-7f3a".into()),
                lease: Some(token()),
            }),
        ),
        (
            "Dispatch",
            Message::Dispatch(DispatchHead {
                call_id: 42,
                service: "llm".into(),
                payload_len: 300,
                timeout_ms: 4900,
                endpoint: Some("/completions".into()),
                log: false,
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".into()),
                request_id: Some("req-7f3a".into()),
                prefix_hashes: vec![0x0123_4567_89ab_cdef, 42],
                job: true,
                tenant: Some("team-a".into()),
                priority: -2,
                hints: vec![("explain".into(), "1".into())],
            }),
        ),
        ("Queued", Message::Queued(3)),
        (
            "Result",
            Message::Result(ResultHead {
                payload_len: Some(1000),
                node_id: "gpu-node-1".into(),
                policy: "latency".into(),
                timings: Timings {
                    queue_ms: 1.5,
                    node_ms: 20.25,
                    total_ms: 22.0,
                    attempts: 2,
                },
                cache: Some(CacheInfo {
                    age_ms: 1200,
                    coalesced: true,
                }),
                content_type: Some("application/json".into()),
                status: Some(200),
                explain: None,
                request_id: Some("req-7f3a".into()),
                via: vec!["site-b".into()],
            }),
        ),
        (
            "Reply",
            Message::Reply(ReplyHead {
                payload_len: None,
                exec_ms: 3.5,
                content_type: Some("text/event-stream".into()),
                status: Some(201),
                path: vec!["rack-2".into(), "gpu-7".into()],
                explain: Some("least-loaded: gpu-7".into()),
            }),
        ),
        (
            "Data",
            Message::Data(Bytes::from_static(b"\x00\x01payload")),
        ),
        (
            "Error",
            Message::Error(CallError {
                not_run: true,
                status: Some(503),
                body: Some(r#"{"error":{"message":"loading","type":"server_error"}}"#.into()),
                node_id: Some("gpu-node-1".into()),
                request_id: Some("req-7f3a".into()),
                ..CallError::new(ErrorKind::RateLimited, "retry in 2 s")
            }),
        ),
        ("ListNodes", Message::ListNodes),
        (
            "Nodes",
            Message::Nodes(vec![NodeView {
                key: 7,
                spec: node_spec(),
                stats: Some(node_stats()),
                services: vec![ServiceView {
                    name: "llm".into(),
                    in_flight: 1,
                    max_concurrent: 4,
                    latency_ms: 12.5,
                    loaded: true,
                    unhealthy: true,
                    ejected_for_ms: 29000,
                    ejections: 1,
                    ejected_why: Some("consecutive_failures".into()),
                }],
                slots: vec![SlotView {
                    name: "gpu0".into(),
                    can_host: vec!["llm".into()],
                    loaded: Some("llm".into()),
                    swapping_to: Some("other".into()),
                    cooldown_left_ms: 500,
                    failed: vec![("bad".into(), 30000)],
                    swaps_total: 2,
                }],
                draining: true,
                connected_ms: 60000,
                last_stats_ms: 250,
                calls_total: 99,
                jobs_in_flight: 2,
                direct: Some("10.0.0.5:4434".into()),
            }]),
        ),
        ("ListPolicies", Message::ListPolicies),
        (
            "Policies",
            Message::Policies(PolicyTable {
                default_policy: "round-robin".into(),
                fail_open: true,
                policies: vec![PolicyView {
                    name: "latency".into(),
                    file: "latency.wasm".into(),
                    content_hash: "ab12".into(),
                    loaded_at_unix_ms: 1_700_000_000_000,
                    picks_total: 10,
                    traps_total: 1,
                }],
                services: vec![ServicePolicy {
                    service: "llm".into(),
                    configured: Some("latency".into()),
                    active: "latency".into(),
                }],
                rejected: vec![RejectedFile {
                    file: "bad.wasm".into(),
                    reason: "compile error".into(),
                    at_unix_ms: 1_700_000_000_001,
                }],
            }),
        ),
        (
            "SetPolicy",
            Message::SetPolicy(SetPolicy {
                admin_token: "adm".into(),
                service: "llm".into(),
                policy: "latency".into(),
            }),
        ),
        ("Ack", Message::Ack("llm uses latency".into())),
        (
            "Swap",
            Message::Swap(SwapRequest {
                swap_id: 5,
                slot: "gpu0".into(),
                service: "llm".into(),
            }),
        ),
        (
            "Swapped",
            Message::Swapped(SwapReport {
                swap_id: 5,
                slot: "gpu0".into(),
                loaded: Some("llm".into()),
                error: Some("slow".into()),
                duration_ms: 2400,
            }),
        ),
        (
            "Reserved",
            Message::Reserved(Reserved {
                node_id: "gpu-node-1".into(),
                service: "llm".into(),
                from: Some("other".into()),
                expected_ms: 2500,
            }),
        ),
        ("ListQueues", Message::ListQueues),
        (
            "Queues",
            Message::Queues(vec![QueueView {
                service: "llm".into(),
                length: 2,
                capacity: 1000,
                oldest_wait_ms: 15,
                reserved: 1,
                dispatched_total: 100,
                abandoned_total: 3,
                overloaded_total: 4,
                retries_total: 5,
                retries_refused_total: 6,
                breaker_trips_total: 7,
            }]),
        ),
        ("CacheStats", Message::CacheStats),
        ("Drain", Message::Drain),
        (
            "Members",
            Message::Members(MemberList {
                revision: 42,
                members: vec![
                    Member {
                        name: "gw-a".into(),
                        quic: "10.0.0.1:4433".into(),
                        http: "10.0.0.1:4480".into(),
                    },
                    Member {
                        name: "gw-b".into(),
                        quic: "10.0.0.2:4433".into(),
                        http: String::new(),
                    },
                ],
            }),
        ),
        ("ListMembers", Message::ListMembers),
        (
            "Load",
            Message::Load(NodeLoad {
                in_flight: vec![("sha256".into(), 3), ("llama".into(), 0)],
                prefix_added: vec![("llama".into(), vec![0x0123_4567_89ab_cdef, 42])],
                prefix_evicted: vec![("llama".into(), vec![7])],
                prefix_full: true,
                jobs_in_flight: Some(2),
                others: Some(vec![("sha256".into(), 1), ("llama".into(), 0)]),
                jobs_others: Some(1),
                queued: vec![QueuedCalls {
                    service: "llm".into(),
                    calls: 4,
                    oldest_wait_ms: 250,
                }],
            }),
        ),
        (
            "CacheStatsView",
            Message::CacheStatsView(CacheStatsView {
                max_bytes: 1 << 28,
                total_bytes: 4096,
                entries: 2,
                services: vec![ServiceCacheStats {
                    service: "sha256".into(),
                    ttl_s: 60,
                    entries: 2,
                    bytes: 4096,
                    hits: 10,
                    coalesced: 1,
                    misses: 2,
                    evictions: 3,
                    expirations: 4,
                }],
            }),
        ),
        (
            "PurgeCache",
            Message::PurgeCache(PurgeCache {
                admin_token: "adm".into(),
                service: Some("sha256".into()),
            }),
        ),
        (
            "End",
            Message::End(Trailer {
                len: 300,
                exec_ms: 7.5,
            }),
        ),
        (
            "Job",
            Message::Job(Box::new(JobRequest {
                api_key: Some("key".into()),
                admin_token: Some("adm".into()),
                op: JobOp::Submit(JobSpec {
                    service: Some("sleep".into()),
                    template: None,
                    params: [("n".to_string(), "3".to_string())].into(),
                    payload: b"10".to_vec(),
                    hints: [("policy".to_string(), "random".to_string())].into(),
                    priority: 2,
                    realtime: true,
                    watchdog_s: Some(30),
                    max_attempts: Some(3),
                    idempotent: true,
                    labels: [("team".to_string(), "ml".to_string())].into(),
                }),
            })),
        ),
        (
            "JobReply",
            Message::JobReply(Box::new(JobReply::Log(vec![LogEntry {
                seq: 7,
                attempt: 2,
                ts_ms: 1_700_000_000_123,
                stream: LogStream::Stderr,
                line: "warming up".into(),
            }]))),
        ),
        (
            "JobSettings",
            Message::Job(Box::new(JobRequest {
                api_key: None,
                admin_token: Some("adm".into()),
                op: JobOp::Settings(Some(JobSettings { max_per_node: 2 })),
            })),
        ),
        (
            "JobReplySettings",
            Message::JobReply(Box::new(JobReply::Settings(JobSettings {
                max_per_node: 2,
            }))),
        ),
        (
            "Log",
            Message::Log(LogChunk {
                stream: LogStream::Stderr,
                ts_ms: 1_700_000_000_456,
                data: b"step 1\n".to_vec(),
            }),
        ),
        (
            "Lease",
            Message::Lease(LeaseRequest {
                head: CallHead {
                    hints: vec![("policy".into(), "pick-first".into())],
                    priority: 1,
                    realtime: true,
                    api_key: Some("sk-1".into()),
                    traceparent: Some(
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                    ),
                    request_id: Some("req-7f3a".into()),
                    ..CallHead::new("llm", 0, 30_000)
                },
                max_calls: 10,
                idle_ms: 5000,
                ttl_ms: 60_000,
            }),
        ),
        (
            "Leased",
            Message::Leased(LeaseGrant {
                lease_id: claims().lease_id,
                node_id: "gpu-node-1".into(),
                direct: "10.0.0.5:7443".into(),
                token: token(),
                ttl_ms: 30_000,
                expires_unix_ms: 1_700_000_030_000,
                max_calls: 10,
                idle_ms: 5000,
                policy: "pick-first".into(),
                queue_ms: 1.5,
                gateway: "gw-a".into(),
            }),
        ),
        (
            "Hold",
            Message::Hold(LeaseHold {
                lease_id: claims().lease_id,
                service: "llm".into(),
                tenant: "team-a".into(),
                max_calls: 10,
                idle_ms: 5000,
                ttl_ms: 30_000,
                policy: "pick-first".into(),
                max_payload: 1 << 24,
            }),
        ),
        (
            "LeaseEnded",
            Message::LeaseEnded(LeaseEnd {
                calls: 10,
                reason: LeaseEndReason::Idle,
                busy_ms: 250.5,
                lease_id: Some(claims().lease_id),
            }),
        ),
        (
            "Held",
            Message::Held(LeaseHeld {
                lease_id: claims().lease_id,
                error: None,
            }),
        ),
        (
            "DropLease",
            Message::DropLease(LeaseDrop {
                lease_id: claims().lease_id,
            }),
        ),
        (
            "ReleaseLease",
            Message::ReleaseLease(LeaseRelease { token: token() }),
        ),
        (
            "LeaseKeys",
            Message::LeaseKeys(LeaseKeys {
                keys: vec![
                    LeaseKey {
                        id: 0x5eed,
                        key: vec![7; LEASE_KEY_LEN],
                    },
                    LeaseKey {
                        id: 0x5eec,
                        key: vec![6; LEASE_KEY_LEN],
                    },
                ],
            }),
        ),
        (
            "Respec",
            Message::Respec(Box::new(Respec { node: node_spec() })),
        ),
        (
            "Ancestry",
            Message::Ancestry(Ancestry {
                gateways: vec!["site-a".into(), "root".into()],
            }),
        ),
        (
            "Probe",
            Message::Probe(Box::new(Probe {
                wave: 9,
                timeout_ms: 1500,
                push: Some(Push::SetPolicy {
                    service: "llm".into(),
                    policy: "latency".into(),
                }),
            })),
        ),
        (
            "Subtree",
            Message::Subtree(Box::new(Subtree {
                wave: 9,
                gateways: vec![
                    GatewayReport {
                        path: vec!["site-a".into()],
                        missing: None,
                        nodes: vec![TreeNode {
                            id: "gpu-node-1".into(),
                            services: vec!["llm".into()],
                            in_flight: 3,
                            capacity: 4,
                            cpu_pct: 12.5,
                            draining: true,
                        }],
                        queued: 2,
                        push_error: Some("no policy named latency".into()),
                    },
                    GatewayReport {
                        path: vec!["site-a".into(), "rack-2".into()],
                        missing: Some("no answer in time".into()),
                        nodes: Vec::new(),
                        queued: 0,
                        push_error: None,
                    },
                ],
            })),
        ),
        (
            "HandUp",
            Message::HandUp(HandUp {
                service: "llm".into(),
                calls: 3,
            }),
        ),
    ]
}
