//! The lease fields and frames against older and newer peers: the fields
//! added to existing messages (`Register::direct`, `CallHead::lease`) leave
//! the bytes of a message without them as they were, the lease frames are
//! v2 only, and what a newer gateway or agent may add reads here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use minicbor::Encode;
use switchyard_protocol::{
    CallError, CallHead, Codec, CodecError, Decoded, ErrorKind, FrameKind, LeaseClaims, LeaseEnd,
    LeaseEndReason, LeaseGrant, LeaseRequest, Message, NodeSpec, Register, WireVersion,
};

use super::{decode, frame};

/// A node spec with no service, stats every second.
pub(super) fn spec() -> NodeSpec {
    NodeSpec {
        id: "n1".into(),
        region: String::new(),
        labels: Vec::new(),
        cost_per_hour: 0.0,
        services: Vec::new(),
        slots: Vec::new(),
        stats_interval_ms: 1000,
        heartbeat_ms: None,
        agent_version: "0.1.0".into(),
        gateway: false,
    }
}

fn encode(version: WireVersion, message: &Message) -> Vec<u8> {
    Codec::default()
        .with_version(version)
        .encode_to_vec(message)
        .unwrap()
}

/// A registration as an agent before direct ports wrote it (fields 0..=2).
#[derive(Encode)]
#[cbor(map)]
struct OlderRegister {
    #[n(0)]
    token: String,
    #[n(1)]
    node: NodeSpec,
    #[n(2)]
    follows_members: bool,
}

#[test]
fn a_register_without_a_direct_port_keeps_its_bytes_and_reads_back_none() {
    let older = OlderRegister {
        token: "tok".into(),
        node: spec(),
        follows_members: true,
    };
    let body = minicbor::to_vec(&older).unwrap();
    let register = Register {
        token: "tok".into(),
        node: spec(),
        follows_members: true,
        direct: None,
        holds_on_control: false,
    };
    let message = Message::Register(register.clone());
    // No direct port: exactly the older agent's bytes, read back as None.
    assert_eq!(
        encode(WireVersion::V2, &message),
        frame(FrameKind::Register, &body)
    );
    assert_eq!(decode(&frame(FrameKind::Register, &body)), message);

    // With one: v2 carries it, v1 writes the bytes it always did.
    let leased = Message::Register(Register {
        direct: Some("10.0.0.5:7443".into()),
        ..register
    });
    match decode(&encode(WireVersion::V2, &leased)) {
        Message::Register(r) => assert_eq!(r.direct.as_deref(), Some("10.0.0.5:7443")),
        other => panic!("not a register: {other:?}"),
    }
    assert_eq!(
        encode(WireVersion::V1, &leased),
        encode(WireVersion::V1, &message)
    );
    assert_eq!(leased.as_v1(), message.as_v1());
}

#[test]
fn a_call_without_a_lease_token_keeps_its_bytes_and_a_v1_peer_never_sees_one() {
    let plain = CallHead::new("echo", 3, 1000);
    let mut direct = plain.clone();
    direct.lease = Some("claims.mac".into());
    let plain_v2 = encode(WireVersion::V2, &Message::Call(plain.clone()));
    let direct_v2 = encode(WireVersion::V2, &Message::Call(direct.clone()));
    // The token is one more map entry (key 13) at the end of the same body.
    assert_eq!(plain_v2[8] + 1, direct_v2[8], "one more map entry");
    assert!(direct_v2[9..].starts_with(&plain_v2[9..]));
    assert_eq!(decode(&direct_v2), Message::Call(direct.clone()));
    assert_eq!(
        encode(WireVersion::V1, &Message::Call(direct.clone())),
        encode(WireVersion::V1, &Message::Call(plain.clone()))
    );
    assert_eq!(
        Message::Call(direct).as_v1(),
        Message::Call(plain).as_v1(),
        "a v1 peer's view drops the token"
    );
}

#[test]
fn a_v1_peer_refuses_every_lease_frame_as_an_unknown_kind() {
    let v1 = Codec::default().with_version(WireVersion::V1);
    for kind in [
        FrameKind::Lease,
        FrameKind::Leased,
        FrameKind::Hold,
        FrameKind::LeaseEnded,
        FrameKind::ReleaseLease,
        FrameKind::LeaseKeys,
        FrameKind::Held,
        FrameKind::DropLease,
    ] {
        let mut bytes = v1.header(kind, 1).to_bytes().to_vec();
        bytes.push(0xa0);
        assert!(
            matches!(v1.decode(&bytes), Err(CodecError::UnknownKind(k)) if k == kind as u8),
            "{kind:?}"
        );
    }
}

#[test]
fn a_lease_ended_error_reads_as_internal_on_v1_and_as_itself_on_v2() {
    let error = Message::Error(CallError::new(ErrorKind::LeaseEnded, "lease expired"));
    assert_eq!(ErrorKind::LeaseEnded.code(), 15);
    assert!(ErrorKind::LeaseEnded.retry_safe(), "the call did not run");
    assert_eq!(decode(&encode(WireVersion::V2, &error)), error);
    let v1 = Codec::default().with_version(WireVersion::V1);
    let Decoded::Frame { message, .. } = v1.decode(&encode(WireVersion::V1, &error)).unwrap()
    else {
        panic!("incomplete");
    };
    assert_eq!(
        message,
        Message::Error(CallError::new(ErrorKind::Internal, "lease expired"))
    );
}

/// A lease request as the smallest client writes it: the head alone.
#[derive(Encode)]
#[cbor(map)]
struct HeadOnlyLease {
    #[n(0)]
    head: CallHead,
}

#[test]
fn a_lease_request_with_the_head_alone_asks_for_one_call_and_the_defaults() {
    let body = minicbor::to_vec(HeadOnlyLease {
        head: CallHead::new("echo", 0, 5000),
    })
    .unwrap();
    let Message::Lease(request) = decode(&frame(FrameKind::Lease, &body)) else {
        panic!("not a lease");
    };
    assert_eq!(
        request,
        LeaseRequest {
            head: CallHead::new("echo", 0, 5000),
            max_calls: 0,
            idle_ms: 0,
            ttl_ms: 0,
        }
    );
    assert_eq!(request.calls(), 1, "0 reads as one call");
    request.validate().unwrap();
    let with_payload = LeaseRequest {
        head: CallHead::new("echo", 1, 5000),
        ..request
    };
    assert!(
        with_payload
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no payload")
    );
}

/// A grant as a newer gateway writes it: one more field this side does
/// not know.
#[derive(Encode)]
#[cbor(map)]
struct NewerGrant {
    #[n(0)]
    lease_id: String,
    #[n(1)]
    node_id: String,
    #[n(2)]
    direct: String,
    #[n(3)]
    token: String,
    #[n(4)]
    ttl_ms: u32,
    #[n(5)]
    expires_unix_ms: u64,
    #[n(6)]
    max_calls: u32,
    #[n(7)]
    idle_ms: u32,
    #[n(8)]
    policy: String,
    #[n(9)]
    queue_ms: f32,
    #[n(11)]
    region: String,
}

#[test]
fn a_newer_gateways_grant_reads_without_its_new_field_and_an_empty_gateway() {
    let body = minicbor::to_vec(NewerGrant {
        lease_id: "ab".into(),
        node_id: "n1".into(),
        direct: "10.0.0.5:7443".into(),
        token: "claims.mac".into(),
        ttl_ms: 30_000,
        expires_unix_ms: 1_700_000_030_000,
        max_calls: 1,
        idle_ms: 0,
        policy: "least-request".into(),
        queue_ms: 0.5,
        region: "eu-west".into(),
    })
    .unwrap();
    assert_eq!(
        decode(&frame(FrameKind::Leased, &body)),
        Message::Leased(LeaseGrant {
            lease_id: "ab".into(),
            node_id: "n1".into(),
            direct: "10.0.0.5:7443".into(),
            token: "claims.mac".into(),
            ttl_ms: 30_000,
            expires_unix_ms: 1_700_000_030_000,
            max_calls: 1,
            idle_ms: 0,
            policy: "least-request".into(),
            queue_ms: 0.5,
            gateway: String::new(),
        })
    );
}

#[test]
fn a_newer_agents_end_reason_reads_as_other_and_the_stream_goes_on() {
    #[derive(Encode)]
    #[cbor(map)]
    struct NewerEnd {
        #[n(0)]
        calls: u32,
        #[n(1)]
        reason: u32,
        #[n(2)]
        busy_ms: f32,
    }
    let body = minicbor::to_vec(NewerEnd {
        calls: 2,
        reason: 40,
        busy_ms: 3.0,
    })
    .unwrap();
    let mut bytes = frame(FrameKind::LeaseEnded, &body);
    bytes.extend_from_slice(&encode(WireVersion::V2, &Message::Ack("next".into())));
    let codec = Codec::default();
    let Decoded::Frame { message, consumed } = codec.decode(&bytes).unwrap() else {
        panic!("incomplete");
    };
    let Message::LeaseEnded(end) = message else {
        panic!("not a lease end: {message:?}");
    };
    assert_eq!((end.calls, end.reason), (2, LeaseEndReason::Other));
    assert_eq!(decode(&bytes[consumed..]), Message::Ack("next".into()));
}

/// Claims as a newer gateway signs them: one more field.
#[derive(Encode)]
#[cbor(map)]
struct NewerClaims {
    #[n(0)]
    lease_id: String,
    #[n(1)]
    key_id: u64,
    #[n(2)]
    node_id: String,
    #[n(3)]
    service: String,
    #[n(4)]
    tenant: String,
    #[n(5)]
    expires_unix_ms: u64,
    #[n(6)]
    max_calls: u32,
    #[n(7)]
    region: String,
}

#[test]
fn a_token_with_a_newer_gateways_extra_claim_verifies_and_reads_the_known_ones() {
    let key = [9u8; 32];
    let body = minicbor::to_vec(NewerClaims {
        lease_id: "ab".into(),
        key_id: 3,
        node_id: "n1".into(),
        service: "echo".into(),
        tenant: "team-a".into(),
        expires_unix_ms: 1_700_000_030_000,
        max_calls: 2,
        region: "eu-west".into(),
    })
    .unwrap();
    // Signed as `LeaseClaims::sign` does: the MAC covers the bytes as sent.
    let mac = blake3::keyed_hash(&key, &body);
    let token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&body),
        URL_SAFE_NO_PAD.encode(mac.as_bytes())
    );
    let claims = LeaseClaims::verify(&token, |id| (id == 3).then_some(key)).unwrap();
    assert_eq!(
        claims,
        LeaseClaims {
            lease_id: "ab".into(),
            key_id: 3,
            node_id: "n1".into(),
            service: "echo".into(),
            tenant: "team-a".into(),
            expires_unix_ms: 1_700_000_030_000,
            max_calls: 2,
        }
    );
    // Signing the claims read back is a different token: verification
    // never re-encodes.
    assert_ne!(claims.sign(&key), token);
}

/// A lease's end as the first form of the hold stream wrote it (fields
/// 0..=2, no lease id).
#[derive(Encode)]
#[cbor(map)]
struct OlderLeaseEnd {
    #[n(0)]
    calls: u32,
    #[n(1)]
    reason: LeaseEndReason,
    #[n(2)]
    busy_ms: f32,
}

#[test]
fn holds_on_the_control_stream_are_an_added_flag_and_an_added_end_field() {
    // An agent that registers without the flag reads back false (the
    // gateway then leases it no node: it holds only on streams of their own).
    let older = OlderRegister {
        token: "tok".into(),
        node: spec(),
        follows_members: false,
    };
    match decode(&frame(
        FrameKind::Register,
        &minicbor::to_vec(&older).unwrap(),
    )) {
        Message::Register(r) => assert!(!r.holds_on_control),
        other => panic!("not a register: {other:?}"),
    }
    // A hold stream's end from an older agent reads with no lease id, and a
    // newer one without an id keeps the older bytes.
    let older = OlderLeaseEnd {
        calls: 3,
        reason: LeaseEndReason::Used,
        busy_ms: 2.5,
    };
    let body = minicbor::to_vec(&older).unwrap();
    let end = LeaseEnd {
        calls: 3,
        reason: LeaseEndReason::Used,
        busy_ms: 2.5,
        lease_id: None,
    };
    assert_eq!(
        decode(&frame(FrameKind::LeaseEnded, &body)),
        Message::LeaseEnded(end.clone())
    );
    assert_eq!(
        encode(WireVersion::V2, &Message::LeaseEnded(end)),
        frame(FrameKind::LeaseEnded, &body)
    );
}
