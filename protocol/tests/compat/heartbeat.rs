//! The stats heartbeat: `NodeSpec::heartbeat_ms` and
//! `Registered::takes_heartbeat` leave the bytes of a message without them
//! as they were, a v1 peer never sees them, and the gateway's rule for the
//! silence it allows reads an older agent's spec as every interval.

use switchyard_protocol::{
    Codec, Decoded, Message, NodeSpec, Register, Registered, ServiceSpec, WireVersion,
};

fn spec(heartbeat_ms: Option<u32>) -> NodeSpec {
    NodeSpec {
        services: vec![ServiceSpec {
            name: "echo".into(),
            max_concurrent: 1,
            load_ms: 0,
            model: false,
            policy: None,
            idempotent: false,
        }],
        heartbeat_ms,
        ..super::leases::spec()
    }
}

fn register(heartbeat_ms: Option<u32>) -> Message {
    Message::Register(Register {
        token: "t".into(),
        node: spec(heartbeat_ms),
        follows_members: false,
        direct: None,
        holds_on_control: false,
    })
}

fn round_trip(version: WireVersion, message: &Message) -> (Vec<u8>, Message) {
    let codec = Codec::default().with_version(version);
    let bytes = codec.encode_to_vec(message).unwrap();
    let Decoded::Frame { message: back, .. } = codec.decode(&bytes).unwrap() else {
        panic!("incomplete");
    };
    (bytes, back)
}

#[test]
fn the_heartbeat_round_trips_in_v2_adds_bytes_only_when_set_and_never_reaches_v1() {
    let (without, back) = round_trip(WireVersion::V2, &register(None));
    assert_eq!(back, register(None));
    let (with, back) = round_trip(WireVersion::V2, &register(Some(2000)));
    assert_eq!(back, register(Some(2000)));
    assert!(with.len() > without.len(), "one more map entry");
    let (v1_with, back) = round_trip(WireVersion::V1, &register(Some(2000)));
    let (v1_without, _) = round_trip(WireVersion::V1, &register(None));
    assert_eq!(v1_with, v1_without, "v1 bytes are frozen");
    assert_eq!(back, register(None));

    let registered = |takes_heartbeat| {
        Message::Registered(Registered {
            node_key: 1,
            gateway_version: "0.1.0".into(),
            ancestry: Vec::new(),
            takes_respec: true,
            takes_heartbeat,
        })
    };
    let (with, back) = round_trip(WireVersion::V2, &registered(true));
    assert_eq!(back, registered(true));
    let (without, _) = round_trip(WireVersion::V2, &registered(false));
    assert!(with.len() > without.len());
    let (_, back) = round_trip(WireVersion::V1, &registered(true));
    let Message::Registered(back) = back else {
        panic!("registered");
    };
    assert!(!back.takes_heartbeat, "a v1 agent sends every sample");
}

#[test]
fn the_silence_allowed_is_the_heartbeat_or_else_the_interval() {
    assert_eq!(spec(None).report_period_ms(), 1000, "an older agent");
    assert_eq!(spec(Some(3000)).report_period_ms(), 3000);
    spec(Some(3000)).validate().expect("in range");
    for bad in [999, switchyard_protocol::MAX_HEARTBEAT_MS + 1] {
        let err = spec(Some(bad)).validate().expect_err("out of range");
        assert!(err.to_string().contains("heartbeat_ms"), "{err}");
    }
}
