//! Look-aside leases (v2 only): a client asks a gateway for a node
//! ([`LeaseRequest`]), the gateway admits it like a call and has the node
//! hold a slot for it ([`LeaseHold`]), then answers with the node's direct
//! address and a token ([`LeaseGrant`]); the client calls the node directly
//! with that token in [`crate::CallHead::lease`]. The node ends the lease
//! when its calls are used up, it expires, it idles too long or the gateway
//! releases it, and says so ([`LeaseEnd`]).
//!
//! Streams:
//! - client → gateway: `Lease(LeaseRequest)`, answered by `Queued`/
//!   `Reserved` while it waits, then `Leased(LeaseGrant)` or `Error`;
//!   `ReleaseLease(LeaseRelease)`, answered by `Ack` or `Error`;
//! - gateway → agent on the control stream, for an agent that registered
//!   with [`crate::Register::holds_on_control`]: `Hold(LeaseHold)`,
//!   answered there by `Held(LeaseHeld)` once the slot is held or refused
//!   (e.g. the node is full: `not_run`), then `LeaseEnded(LeaseEnd)` with
//!   its `lease_id` when the lease ends; `DropLease(LeaseDrop)` releases a
//!   lease. Frames of many leases share the stream (and its packets), so a
//!   lease costs no stream of its own;
//! - gateway → agent, one stream per lease (the first form, still served by
//!   agents for older gateways): `Hold(LeaseHold)`, answered by `Ack` once
//!   the slot is held (or `Error`), then `LeaseEnded(LeaseEnd)` when the
//!   lease ends; the gateway resetting its half releases the lease;
//! - gateway → agent on the control stream (agents that registered a
//!   direct address): `LeaseKeys` after `Registered` and on every rotation;
//! - client → agent on the direct port, one stream per call:
//!   `Call(CallHead)` with `lease` set + `Data`, answered as a gateway
//!   answers a call (`Result` + `Data` [+ `End`], or `Error`).
//!
//! The token is `base64url(claims) "." base64url(mac)`: the claims are the
//! CBOR map of [`LeaseClaims`], the mac BLAKE3's keyed hash of the claims'
//! bytes under a 32-byte key the gateway made and sent its agents
//! ([`LeaseKey`]). A key is named by its id in the claims, so keys rotate
//! without breaking the tokens signed with the previous one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::message::check_name;
use crate::{CallHead, CodecError};

/// Longest token accepted, bytes (a real one is about 250).
pub const MAX_TOKEN_LEN: usize = 2048;

/// Length of a lease key, bytes (BLAKE3's key).
pub const LEASE_KEY_LEN: usize = 32;

/// Most keys one [`LeaseKeys`] carries.
pub const MAX_LEASE_KEYS: usize = 8;

/// Longest lease id, bytes (the gateway's are 32 hex digits).
pub const MAX_LEASE_ID_LEN: usize = 64;

/// Client → gateway: lease a node of `head.service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseRequest {
    /// Admission as for a call: service, hints, priority, realtime (fail
    /// with `occupied` rather than wait), API key, `timeout_ms` (how long
    /// to wait for a node, 0: the gateway's default), request id, trace
    /// context. `payload_len` must be 0.
    #[n(0)]
    pub head: CallHead,
    /// Calls the lease serves before it ends (default 1; 0 reads as 1).
    #[cbor(n(1), default)]
    pub max_calls: u32,
    /// The lease ends after this long without a call, ms (0: only its
    /// lifetime bounds it).
    #[cbor(n(2), default)]
    pub idle_ms: u32,
    /// The lease's lifetime, ms (0: the gateway's `[leases] ttl_ms`; more
    /// than its `max_ttl_ms` is cut to it).
    #[cbor(n(3), default)]
    pub ttl_ms: u32,
}

/// Gateway → client: the lease granted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseGrant {
    /// The lease's id (32 hex digits).
    #[n(0)]
    pub lease_id: String,
    /// The node holding a slot for it.
    #[n(1)]
    pub node_id: String,
    /// The node's direct port, `host:port` (its certificate names `host`).
    #[n(2)]
    pub direct: String,
    /// The token each direct call carries in [`CallHead::lease`].
    #[n(3)]
    pub token: String,
    /// The lease's lifetime from the grant, ms.
    #[n(4)]
    pub ttl_ms: u32,
    /// When it expires, ms since the Unix epoch (the gateway's clock).
    #[n(5)]
    pub expires_unix_ms: u64,
    /// Calls it serves.
    #[n(6)]
    pub max_calls: u32,
    /// Idle timeout, ms (0: none).
    #[n(7)]
    pub idle_ms: u32,
    /// The policy that picked the node.
    #[n(8)]
    pub policy: String,
    /// Time spent waiting for a node (queue and pick), ms.
    #[n(9)]
    pub queue_ms: f32,
    /// The granting gateway's name (its cluster member name, or its host
    /// name alone): a release goes to it.
    #[cbor(n(10), default)]
    pub gateway: String,
}

/// Gateway → agent: hold a slot of `service` for a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseHold {
    /// The lease's id.
    #[n(0)]
    pub lease_id: String,
    /// The service whose slot it holds.
    #[n(1)]
    pub service: String,
    /// The tenant it was granted to (bound into the token).
    #[n(2)]
    pub tenant: String,
    /// Calls it serves (at least 1).
    #[n(3)]
    pub max_calls: u32,
    /// Idle timeout, ms (0: none).
    #[n(4)]
    pub idle_ms: u32,
    /// Lifetime from now, ms.
    #[n(5)]
    pub ttl_ms: u32,
    /// The policy that picked the node (the direct calls' result heads name
    /// it).
    #[n(6)]
    pub policy: String,
    /// The longest payload a direct call of the lease may send, bytes (0:
    /// the agent's own limit).
    #[cbor(n(7), default)]
    pub max_payload: u64,
}

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaseEndReason {
    /// It served its `max_calls` calls.
    Used,
    /// Its lifetime ran out.
    Expired,
    /// No call came within its idle timeout.
    Idle,
    /// The gateway released it (the client asked, or gave up).
    Released,
    /// The node is shutting down.
    Draining,
    /// A reason this side does not know (a newer peer's).
    Other,
}

impl LeaseEndReason {
    /// Every reason, in wire-code order.
    pub const ALL: [LeaseEndReason; 6] = [
        Self::Used,
        Self::Expired,
        Self::Idle,
        Self::Released,
        Self::Draining,
        Self::Other,
    ];

    /// A short lowercase name, e.g. `used` (a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Used => "used",
            Self::Expired => "expired",
            Self::Idle => "idle",
            Self::Released => "released",
            Self::Draining => "draining",
            Self::Other => "other",
        }
    }
}

impl<C> minicbor::Encode<C> for LeaseEndReason {
    fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
        _: &mut C,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.u32(*self as u32)?;
        Ok(())
    }
}

impl<'b, C> minicbor::Decode<'b, C> for LeaseEndReason {
    fn decode(d: &mut minicbor::Decoder<'b>, _: &mut C) -> Result<Self, minicbor::decode::Error> {
        let code = d.u64()?;
        Ok(usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(Self::Other))
    }
}

/// Agent → gateway: the lease ended; the slot is free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseEnd {
    /// Direct calls it served.
    #[n(0)]
    pub calls: u32,
    /// Why it ended.
    #[n(1)]
    pub reason: LeaseEndReason,
    /// The node's time on its calls, ms, summed (feeds the node's latency
    /// EWMA when `calls` > 0).
    #[n(2)]
    pub busy_ms: f32,
    /// The lease's id, set when the end goes on the control stream (at
    /// most [`MAX_LEASE_ID_LEN`] bytes); `None` on a hold's own stream.
    /// Added in v2 after the first form.
    #[serde(default, with = "crate::added")]
    #[n(3)]
    pub lease_id: Option<String>,
}

/// Agent → gateway on the control stream: the answer to a `Hold` sent
/// there: the slot is held (`error` is `None`), or why not (a full node's
/// refusal is `not_run`: the gateway picks again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseHeld {
    /// The hold's lease id (at most [`MAX_LEASE_ID_LEN`] bytes).
    #[n(0)]
    pub lease_id: String,
    /// Why the hold was refused; `None` once the slot is held.
    #[n(1)]
    pub error: Option<crate::CallError>,
}

/// Gateway → agent on the control stream: end lease `lease_id` now (its
/// client released it, or the grant never reached the client). The node
/// answers with the lease's `LeaseEnded` (reason `released`); a lease it
/// does not hold for this gateway is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseDrop {
    /// The lease's id (at most [`MAX_LEASE_ID_LEN`] bytes).
    #[n(0)]
    pub lease_id: String,
}

/// Client → gateway: release a lease before it ends (its token proves the
/// caller holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseRelease {
    /// The lease's token.
    #[n(0)]
    pub token: String,
}

/// One key the gateway signs lease tokens with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseKey {
    /// Its id, named by the tokens it signs ([`LeaseClaims::key_id`]).
    #[n(0)]
    pub id: u64,
    /// The key, [`LEASE_KEY_LEN`] bytes.
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub key: Vec<u8>,
}

impl std::fmt::Debug for LeaseKey {
    /// The id only: keys are never logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Gateway → agent on the control stream: every key its tokens may be
/// signed with now (the newest first, then the previous ones still valid),
/// replacing the set that gateway sent before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseKeys {
    /// The keys, at most [`MAX_LEASE_KEYS`].
    #[n(0)]
    pub keys: Vec<LeaseKey>,
}

/// What a lease token says, signed by a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LeaseClaims {
    /// The lease's id.
    #[n(0)]
    pub lease_id: String,
    /// The signing key's id ([`LeaseKey::id`]).
    #[n(1)]
    pub key_id: u64,
    /// The node the lease is on.
    #[n(2)]
    pub node_id: String,
    /// The service it is for.
    #[n(3)]
    pub service: String,
    /// The tenant it was granted to.
    #[n(4)]
    pub tenant: String,
    /// When it expires, ms since the Unix epoch.
    #[n(5)]
    pub expires_unix_ms: u64,
    /// Calls it serves.
    #[n(6)]
    pub max_calls: u32,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It is not a token (bad shape, base64 or CBOR, or too long).
    #[error("malformed lease token: {0}")]
    Malformed(String),
    /// No key of that id is known here (forged, or from a gateway this
    /// node does not serve).
    #[error("lease token signed with unknown key {0}")]
    UnknownKey(u64),
    /// The signature does not match the claims (forged or altered).
    #[error("lease token signature does not match")]
    BadSignature,
}

impl LeaseClaims {
    /// The token: the claims signed with `key` (whose id must be
    /// `self.key_id`).
    pub fn sign(&self, key: &[u8; LEASE_KEY_LEN]) -> String {
        let mut body = Vec::with_capacity(128);
        // Writing into a Vec cannot fail.
        let _ = minicbor::encode(self, &mut body);
        let mac = blake3::keyed_hash(key, &body);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(mac.as_bytes())
        )
    }

    /// Reads `token` and checks its signature with the key `key_of` gives
    /// for its key id; the claims' other checks (node, service, expiry,
    /// calls) are the caller's.
    ///
    /// # Errors
    /// [`TokenError`] saying why it is refused.
    pub fn verify(
        token: &str,
        key_of: impl FnOnce(u64) -> Option<[u8; LEASE_KEY_LEN]>,
    ) -> Result<Self, TokenError> {
        let (claims, body, mac) = Self::split(token)?;
        let key = key_of(claims.key_id).ok_or(TokenError::UnknownKey(claims.key_id))?;
        // `blake3::Hash` compares in constant time.
        if blake3::keyed_hash(&key, &body) != blake3::Hash::from_bytes(mac) {
            return Err(TokenError::BadSignature);
        }
        Ok(claims)
    }

    /// Reads `token`'s claims without checking its signature (to find
    /// which lease it names before checking it with that lease's key).
    ///
    /// # Errors
    /// [`TokenError::Malformed`].
    pub fn peek(token: &str) -> Result<Self, TokenError> {
        Self::split(token).map(|(claims, _, _)| claims)
    }

    fn split(token: &str) -> Result<(Self, Vec<u8>, [u8; 32]), TokenError> {
        let bad = |why: &str| TokenError::Malformed(why.to_string());
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad("longer than 2048 bytes"));
        }
        let (body, mac) = token.split_once('.').ok_or_else(|| bad("no '.'"))?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|e| TokenError::Malformed(format!("signature: {e}")))?;
        let mac: [u8; 32] = mac
            .try_into()
            .map_err(|_| bad("signature is not 32 bytes"))?;
        let claims: Self =
            minicbor::decode(&body).map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        Ok((claims, body, mac))
    }
}

impl LeaseRequest {
    /// Checks the limits a client must respect.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] as [`CallHead::validate`], or for a payload.
    pub fn validate(&self) -> Result<(), CodecError> {
        self.head.validate()?;
        if self.head.payload_len != 0 {
            return Err(CodecError::Invalid(
                "a lease request carries no payload".into(),
            ));
        }
        Ok(())
    }

    /// Calls the lease serves: `max_calls`, at least 1.
    pub fn calls(&self) -> u32 {
        self.max_calls.max(1)
    }
}

impl LeaseHold {
    /// Checks the limits a gateway must respect.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] for a bad service or tenant name, an
    /// over-long lease id or no calls.
    pub fn validate(&self) -> Result<(), CodecError> {
        check_name("service name", &self.service)?;
        check_lease_id(&self.lease_id)?;
        if self.tenant.len() > crate::limits::MAX_NAME_LEN {
            return Err(CodecError::Invalid("tenant name too long".into()));
        }
        if self.max_calls == 0 {
            return Err(CodecError::Invalid(
                "a lease serves at least one call".into(),
            ));
        }
        Ok(())
    }
}

impl LeaseEnd {
    /// Checks the limits an agent must respect.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] for an over-long lease id.
    pub fn validate(&self) -> Result<(), CodecError> {
        self.lease_id.as_deref().map_or(Ok(()), check_lease_id)
    }
}

impl LeaseHeld {
    /// Checks the limits an agent must respect.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] for an over-long lease id.
    pub fn validate(&self) -> Result<(), CodecError> {
        check_lease_id(&self.lease_id)
    }
}

impl LeaseDrop {
    /// Checks the limits a gateway must respect.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] for an over-long lease id.
    pub fn validate(&self) -> Result<(), CodecError> {
        check_lease_id(&self.lease_id)
    }
}

impl LeaseKeys {
    /// Checks the limits a gateway must respect.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] past [`MAX_LEASE_KEYS`] keys or for a key
    /// that is not [`LEASE_KEY_LEN`] bytes.
    pub fn validate(&self) -> Result<(), CodecError> {
        if self.keys.len() > MAX_LEASE_KEYS {
            return Err(CodecError::Invalid(format!(
                "at most {MAX_LEASE_KEYS} lease keys, got {}",
                self.keys.len()
            )));
        }
        if let Some(k) = self.keys.iter().find(|k| k.key.len() != LEASE_KEY_LEN) {
            return Err(CodecError::Invalid(format!(
                "lease key {} is {} bytes, not {LEASE_KEY_LEN}",
                k.id,
                k.key.len()
            )));
        }
        Ok(())
    }
}

/// Checks a lease id's length and characters.
fn check_lease_id(id: &str) -> Result<(), CodecError> {
    if id.is_empty() || id.len() > MAX_LEASE_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CodecError::Invalid(format!(
            "a lease id is 1..={MAX_LEASE_ID_LEN} bytes of visible ascii"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims() -> LeaseClaims {
        LeaseClaims {
            lease_id: "0123456789abcdef0123456789abcdef".into(),
            key_id: 7,
            node_id: "node-a".into(),
            service: "echo".into(),
            tenant: "anonymous".into(),
            expires_unix_ms: 1_800_000_000_000,
            max_calls: 1,
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_key_only() {
        let key = [3u8; 32];
        let token = claims().sign(&key);
        assert!(token.len() < 300, "{}", token.len());
        assert_eq!(
            LeaseClaims::verify(&token, |id| (id == 7).then_some(key)),
            Ok(claims())
        );
        assert_eq!(
            LeaseClaims::verify(&token, |_| Some([4u8; 32])),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            LeaseClaims::verify(&token, |_| None),
            Err(TokenError::UnknownKey(7))
        );
        assert_eq!(LeaseClaims::peek(&token), Ok(claims()));
    }

    #[test]
    fn altered_claims_fail_the_signature() {
        let key = [3u8; 32];
        let token = claims().sign(&key);
        let (_, mac) = token.split_once('.').unwrap();
        let mut other = claims();
        other.service = "sleep".into();
        let mut body = Vec::new();
        minicbor::encode(&other, &mut body).unwrap();
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(&body));
        assert_eq!(
            LeaseClaims::verify(&forged, |_| Some(key)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for token in ["", ".", "abc", "a.b", "!!.??", &"x".repeat(5000)] {
            assert!(matches!(
                LeaseClaims::verify(token, |_| Some([0; 32])),
                Err(TokenError::Malformed(_))
            ));
        }
    }

    #[test]
    fn unknown_end_reasons_read_as_other() {
        let mut bytes = Vec::new();
        minicbor::encode(
            LeaseEnd {
                calls: 2,
                reason: LeaseEndReason::Idle,
                busy_ms: 1.5,
                lease_id: None,
            },
            &mut bytes,
        )
        .unwrap();
        let back: LeaseEnd = minicbor::decode(&bytes).unwrap();
        assert_eq!(back.reason, LeaseEndReason::Idle);
        let mut e = minicbor::Encoder::new(Vec::new());
        e.u32(99).unwrap();
        let r: LeaseEndReason = minicbor::decode(e.writer()).unwrap();
        assert_eq!(r, LeaseEndReason::Other);
    }
}
