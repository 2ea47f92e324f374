//! Version 2's compatibility rules, tested with the bodies an older and a
//! newer peer would write (types declared here as those peers would have
//! them, encoded by the same derive).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "compat/heartbeat.rs"]
mod heartbeat;
#[path = "compat/leases.rs"]
mod leases;

use minicbor::Encode;
use switchyard_protocol::{
    CallError, CallHead, Codec, Decoded, ErrorKind, FrameKind, Message, ResultHead, WireVersion,
};

fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![2, kind as u8, 0, 0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn decode(bytes: &[u8]) -> Message {
    match Codec::default().decode(bytes).expect("decodes") {
        Decoded::Frame { message, consumed } => {
            assert_eq!(consumed, bytes.len());
            message
        }
        Decoded::Incomplete { .. } => panic!("incomplete"),
    }
}

/// A call head as a newer peer writes it: two fields this side does not
/// know, one of them a nested structure.
#[derive(Encode)]
#[cbor(map)]
struct NewerCallHead {
    #[n(0)]
    service: String,
    #[n(1)]
    payload_len: u64,
    #[n(2)]
    timeout_ms: u32,
    #[n(3)]
    hints: Vec<(String, String)>,
    #[n(4)]
    priority: i32,
    #[n(5)]
    realtime: bool,
    #[n(6)]
    no_cache: bool,
    #[n(20)]
    attempts: u32,
    #[n(21)]
    future: Vec<(String, Vec<u64>)>,
}

#[test]
fn an_unknown_future_field_is_ignored() {
    let newer = NewerCallHead {
        service: "llm".into(),
        payload_len: 5,
        timeout_ms: 1000,
        hints: vec![("k".into(), "v".into())],
        priority: 1,
        realtime: false,
        no_cache: true,
        attempts: 3,
        future: vec![("x".into(), vec![1, 2, 3])],
    };
    let body = minicbor::to_vec(&newer).unwrap();
    let got = decode(&frame(FrameKind::Call, &body));
    let mut want = CallHead::new("llm", 5, 1000);
    want.hints = vec![("k".into(), "v".into())];
    want.priority = 1;
    want.no_cache = true;
    assert_eq!(got, Message::Call(want));
}

/// A result head as an older peer wrote it: before the cache, content type
/// and status fields existed.
#[derive(Encode)]
#[cbor(map)]
struct OlderResultHead {
    #[n(0)]
    payload_len: Option<u64>,
    #[n(1)]
    node_id: String,
    #[n(2)]
    policy: String,
    #[n(3)]
    timings: switchyard_protocol::Timings,
}

#[test]
fn a_message_missing_a_newer_field_decodes_with_its_default() {
    let older = OlderResultHead {
        payload_len: Some(4),
        node_id: "n1".into(),
        policy: "latency".into(),
        timings: switchyard_protocol::Timings::default(),
    };
    let body = minicbor::to_vec(&older).unwrap();
    let got = decode(&frame(FrameKind::Result, &body));
    assert_eq!(
        got,
        Message::Result(ResultHead {
            payload_len: Some(4),
            node_id: "n1".into(),
            policy: "latency".into(),
            timings: switchyard_protocol::Timings::default(),
            cache: None,
            content_type: None,
            status: None,
            explain: None,
            request_id: None,
            via: Vec::new(),
        })
    );
}

/// A stats report as an agent before model-server load signals wrote it
/// (fields 0..=5, no `model_load`).
#[derive(Encode)]
#[cbor(map)]
struct OlderNodeStats {
    #[n(0)]
    cpu_pct: f32,
    #[n(1)]
    mem_used_mib: u64,
    #[n(2)]
    mem_total_mib: u64,
    #[n(3)]
    gpus: Vec<switchyard_protocol::GpuStats>,
    #[n(4)]
    in_flight: Vec<(String, u32)>,
    #[n(5)]
    unhealthy: Vec<String>,
}

#[test]
fn stats_without_model_load_decode_with_none_and_new_ones_round_trip() {
    let older = OlderNodeStats {
        cpu_pct: 10.0,
        mem_used_mib: 1,
        mem_total_mib: 2,
        gpus: Vec::new(),
        in_flight: vec![("llm".into(), 1)],
        unhealthy: vec!["web".into()],
    };
    let body = minicbor::to_vec(&older).unwrap();
    let Message::Stats(got) = decode(&frame(FrameKind::Stats, &body)) else {
        panic!("stats");
    };
    assert!(got.model_load.is_empty(), "{got:?}");
    assert_eq!(got.unhealthy, vec!["web".to_string()]);

    // A new report round-trips in v2; a v1 peer reads it without the load.
    let mut stats = got;
    stats.model_load = vec![switchyard_protocol::ServiceLoad {
        service: "llm".into(),
        waiting: 4,
        running: 2,
        kv_cache_pct: 81.25,
    }];
    let message = Message::Stats(stats);
    for version in WireVersion::ALL {
        let codec = Codec::default().with_version(version);
        let bytes = codec.encode_to_vec(&message).unwrap();
        let Decoded::Frame { message: back, .. } = codec.decode(&bytes).unwrap() else {
            panic!("incomplete");
        };
        let want = match version {
            WireVersion::V1 => message.as_v1().unwrap(),
            _ => message.clone(),
        };
        assert_eq!(back, want, "{version:?}");
        if let (WireVersion::V1, Message::Stats(s)) = (version, &back) {
            assert!(s.model_load.is_empty(), "v1 never carries it");
        }
    }
}

#[test]
fn an_unknown_error_kind_decodes_as_internal_and_the_stream_goes_on() {
    #[derive(Encode)]
    #[cbor(map)]
    struct NewerError {
        #[n(0)]
        kind: u32,
        #[n(1)]
        message: String,
    }
    let body = minicbor::to_vec(NewerError {
        kind: 99,
        message: "a kind from the future".into(),
    })
    .unwrap();
    let mut bytes = frame(FrameKind::Error, &body);
    let end = Codec::default()
        .encode_to_vec(&Message::End(switchyard_protocol::Trailer::default()))
        .unwrap();
    bytes.extend_from_slice(&end);
    let codec = Codec::default();
    let Decoded::Frame { message, consumed } = codec.decode(&bytes).unwrap() else {
        panic!("incomplete");
    };
    assert_eq!(
        message,
        Message::Error(CallError::new(
            ErrorKind::Internal,
            "a kind from the future"
        ))
    );
    assert!(matches!(
        codec.decode(&bytes[consumed..]),
        Ok(Decoded::Frame {
            message: Message::End(_),
            ..
        })
    ));
}

#[test]
fn a_missing_required_field_is_malformed_not_a_panic() {
    #[derive(Encode)]
    #[cbor(map)]
    struct NoService {
        #[n(1)]
        payload_len: u64,
    }
    let body = minicbor::to_vec(NoService { payload_len: 1 }).unwrap();
    assert!(matches!(
        Codec::default().decode(&frame(FrameKind::Call, &body)),
        Err(switchyard_protocol::CodecError::Malformed {
            kind: FrameKind::Call,
            ..
        })
    ));
}

#[test]
fn v1_bodies_stay_postcard_and_v2_bodies_are_cbor_maps() {
    let call = Message::Call(CallHead::new("echo", 1, 10));
    let v1 = Codec::default().with_version(WireVersion::V1);
    let bytes = v1.encode_to_vec(&call).unwrap();
    // postcard: the service name's length, then its bytes.
    assert_eq!(
        &bytes[..14],
        &[1, 5, 0, 0, 0, 0, 0, 14, 4, b'e', b'c', b'h', b'o', 1]
    );
    let bytes = Codec::default().encode_to_vec(&call).unwrap();
    assert_eq!(bytes[0], 2);
    assert_eq!(bytes[8] & 0xe0, 0xa0, "a CBOR map");
}

/// The rule for adding a field (ARCHITECTURE.md, "Evolving the wire"),
/// exactly as written there: `#[serde(default, with = "...added")]
/// #[cbor(n(N), default)]`.
mod adding_a_field {
    use minicbor::{Decode, Encode};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
    #[cbor(map)]
    struct Before {
        #[n(0)]
        node_id: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
    #[cbor(map)]
    struct After {
        #[n(0)]
        node_id: String,
        #[serde(default, with = "switchyard_protocol::added")]
        #[cbor(n(1), default)]
        attempts: u32,
    }

    #[test]
    fn v1_bytes_do_not_change_and_v2_peers_of_either_side_agree() {
        let before = Before {
            node_id: "n1".into(),
        };
        let after = After {
            node_id: "n1".into(),
            attempts: 3,
        };
        // v1: the same bytes as before the field; read back, the default.
        let v1 = postcard::to_stdvec(&after).unwrap();
        assert_eq!(v1, postcard::to_stdvec(&before).unwrap());
        let read: After = postcard::from_bytes(&v1).unwrap();
        assert_eq!(read.attempts, 0);
        // JSON (the admin API) carries it, and defaults it when missing.
        let json = serde_json::to_string(&after).unwrap();
        assert_eq!(json, r#"{"node_id":"n1","attempts":3}"#);
        let read: After = serde_json::from_str(r#"{"node_id":"n1"}"#).unwrap();
        assert_eq!(read.attempts, 0);
        // v2: an older peer skips the new field...
        let v2 = minicbor::to_vec(&after).unwrap();
        let old: Before = minicbor::decode(&v2).unwrap();
        assert_eq!(old, before);
        // ...and a newer one reads an older body with the default.
        let new: After = minicbor::decode(&minicbor::to_vec(&before).unwrap()).unwrap();
        assert_eq!(
            new,
            After {
                node_id: "n1".into(),
                attempts: 0
            }
        );
        // A newer peer's value arrives.
        let back: After = minicbor::decode(&v2).unwrap();
        assert_eq!(back, after);
    }
}

#[test]
fn a_traceparent_reaches_v2_peers_only_and_a_bad_one_is_refused() {
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut head = CallHead::new("echo", 1, 10);
    head.traceparent = Some(traceparent.into());
    head.validate().unwrap();
    let call = Message::Call(head.clone());
    let v2 = Codec::default();
    match decode(&v2.encode_to_vec(&call).unwrap()) {
        Message::Call(got) => assert_eq!(got.traceparent.as_deref(), Some(traceparent)),
        other => panic!("not a call: {other:?}"),
    }
    // A v1 body has no place for it: the same bytes as a call without one.
    let v1 = Codec::default().with_version(WireVersion::V1);
    assert_eq!(
        v1.encode_to_vec(&call).unwrap(),
        v1.encode_to_vec(&Message::Call(CallHead::new("echo", 1, 10)))
            .unwrap()
    );
    head.traceparent = Some("0".repeat(200));
    assert!(
        head.validate()
            .unwrap_err()
            .to_string()
            .contains("traceparent")
    );
    head.traceparent = Some("00-ab cd".into());
    assert!(
        head.validate()
            .unwrap_err()
            .to_string()
            .contains("traceparent")
    );
}

/// A load report as an agent wrote it before `others`: the figures
/// counted every gateway's calls only.
#[derive(Encode)]
#[cbor(map)]
struct OlderNodeLoad {
    #[n(0)]
    in_flight: Vec<(String, u32)>,
    #[n(4)]
    jobs_in_flight: Option<u32>,
}

#[test]
fn an_older_agents_load_report_has_no_others() {
    let older = OlderNodeLoad {
        in_flight: vec![("llm".into(), 3)],
        jobs_in_flight: Some(1),
    };
    let body = minicbor::to_vec(&older).unwrap();
    let Message::Load(load) = decode(&frame(FrameKind::Load, &body)) else {
        panic!("a load report");
    };
    assert_eq!(load.in_flight, [("llm".to_string(), 3)]);
    assert_eq!(
        (load.jobs_in_flight, load.others, load.jobs_others),
        (Some(1), None, None)
    );
}
