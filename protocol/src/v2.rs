//! Wire version 2: each body is one CBOR item (RFC 8949), written and read
//! by minicbor's derive: a map keyed by each field's `#[n(..)]` number.
//!
//! Rules that make a field addable without breaking older peers (the
//! protobuf rules, see ARCHITECTURE.md "Evolving the wire"):
//! - a decoder skips map keys it does not know (a newer peer's fields);
//! - a field added later is an `Option` or `#[cbor(default)]`, so a decoder
//!   reading an older peer's body, which lacks it, takes its default;
//! - the bodies that are not structs (a text, a queue position, a list) are
//!   wrapped in a one-field map `{0: value}` so that they can grow fields too;
//! - a request without a body (`ListNodes`, ...) may carry one CBOR item in
//!   a later version; this version skips it;
//! - an error kind this side does not know decodes as
//!   [`crate::ErrorKind::Internal`].
//!
//! Nothing is allocated beyond the body: minicbor grows lists and strings
//! as their items are read, never from a declared length.

use bytes::Bytes;
use minicbor::{Decode, Decoder, Encode};

use crate::{CodecError, FrameKind, Message};

/// A body that is not a struct: `{0: value}`.
#[derive(Encode, Decode)]
#[cbor(map)]
struct Wrapped<T> {
    #[n(0)]
    value: T,
}

fn put<T: Encode<()>>(value: &T, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail (its error type is Infallible).
    let _ = minicbor::encode(value, &mut *out);
}

fn put_wrapped<T: Encode<()>>(value: &T, out: &mut Vec<u8>) {
    put(&Wrapped { value }, out);
}

/// Appends `message`'s v2 body to `out`.
pub(crate) fn encode_body(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Register(m) => put(m, out),
        Message::Registered(m) => put(m, out),
        Message::Refused(m) => put_wrapped(m, out),
        Message::Stats(m) => put(m, out),
        Message::Call(m) => put(m, out),
        Message::Dispatch(m) => put(m, out),
        Message::Queued(m) => put_wrapped(m, out),
        Message::Result(m) => put(m, out),
        Message::Reply(m) => put(m, out),
        Message::Data(bytes) => out.extend_from_slice(bytes),
        Message::Error(m) => put(m, out),
        Message::ListNodes
        | Message::ListPolicies
        | Message::ListQueues
        | Message::CacheStats
        | Message::Drain
        | Message::ListMembers => {}
        Message::Nodes(m) => put_wrapped(m, out),
        Message::Policies(m) => put(m, out),
        Message::SetPolicy(m) => put(m, out),
        Message::Ack(m) => put_wrapped(m, out),
        Message::Swap(m) => put(m, out),
        Message::Swapped(m) => put(m, out),
        Message::Reserved(m) => put(m, out),
        Message::Queues(m) => put_wrapped(m, out),
        Message::CacheStatsView(m) => put(m, out),
        Message::PurgeCache(m) => put(m, out),
        Message::End(m) => put(m, out),
        Message::Job(m) => put(m.as_ref(), out),
        Message::JobReply(m) => put(m.as_ref(), out),
        Message::Log(m) => put(m, out),
        Message::Members(m) => put(m, out),
        Message::Load(m) => put(m, out),
        Message::Lease(m) => put(m, out),
        Message::Leased(m) => put(m, out),
        Message::Hold(m) => put(m, out),
        Message::LeaseEnded(m) => put(m, out),
        Message::ReleaseLease(m) => put(m, out),
        Message::LeaseKeys(m) => put(m, out),
        Message::Held(m) => put(m, out),
        Message::DropLease(m) => put(m, out),
        Message::Respec(m) => put(m, out),
        Message::Ancestry(m) => put(m, out),
        Message::Probe(m) => put(m, out),
        Message::Subtree(m) => put(m, out),
        Message::HandUp(m) => put(m, out),
    }
}

/// Decodes one CBOR item of type `T` that must fill `body` exactly.
fn get<'b, T: Decode<'b, ()>>(kind: FrameKind, body: &'b [u8]) -> Result<T, CodecError> {
    let malformed = |reason: String| CodecError::Malformed { kind, reason };
    let mut decoder = Decoder::new(body);
    let value = T::decode(&mut decoder, &mut ()).map_err(|e| malformed(e.to_string()))?;
    let rest = body.len() - decoder.position();
    if rest != 0 {
        return Err(malformed(format!("{rest} trailing bytes")));
    }
    Ok(value)
}

fn get_wrapped<'b, T: Decode<'b, ()>>(kind: FrameKind, body: &'b [u8]) -> Result<T, CodecError> {
    get::<Wrapped<T>>(kind, body).map(|w| w.value)
}

/// A request without fields: an empty body, or one CBOR item that a later
/// version may send (skipped).
fn get_empty(kind: FrameKind, body: &[u8]) -> Result<(), CodecError> {
    if body.is_empty() {
        return Ok(());
    }
    let malformed = |reason: String| CodecError::Malformed { kind, reason };
    let mut decoder = Decoder::new(body);
    decoder.skip().map_err(|e| malformed(e.to_string()))?;
    let rest = body.len() - decoder.position();
    if rest != 0 {
        return Err(malformed(format!("{rest} trailing bytes")));
    }
    Ok(())
}

/// Decodes a v2 body of `kind`.
pub(crate) fn decode_body(kind: FrameKind, body: &[u8]) -> Result<Message, CodecError> {
    Ok(match kind {
        FrameKind::Register => Message::Register(get(kind, body)?),
        FrameKind::Registered => Message::Registered(get(kind, body)?),
        FrameKind::Refused => Message::Refused(get_wrapped(kind, body)?),
        FrameKind::Stats => Message::Stats(get(kind, body)?),
        FrameKind::Call => Message::Call(get(kind, body)?),
        FrameKind::Dispatch => Message::Dispatch(get(kind, body)?),
        FrameKind::Queued => Message::Queued(get_wrapped(kind, body)?),
        FrameKind::Result => Message::Result(get(kind, body)?),
        FrameKind::Reply => Message::Reply(get(kind, body)?),
        FrameKind::Data => Message::Data(Bytes::copy_from_slice(body)),
        FrameKind::Error => Message::Error(get(kind, body)?),
        FrameKind::ListNodes => get_empty(kind, body).map(|()| Message::ListNodes)?,
        FrameKind::ListPolicies => get_empty(kind, body).map(|()| Message::ListPolicies)?,
        FrameKind::ListQueues => get_empty(kind, body).map(|()| Message::ListQueues)?,
        FrameKind::CacheStats => get_empty(kind, body).map(|()| Message::CacheStats)?,
        FrameKind::Drain => get_empty(kind, body).map(|()| Message::Drain)?,
        FrameKind::Nodes => Message::Nodes(get_wrapped(kind, body)?),
        FrameKind::Policies => Message::Policies(get(kind, body)?),
        FrameKind::SetPolicy => Message::SetPolicy(get(kind, body)?),
        FrameKind::Ack => Message::Ack(get_wrapped(kind, body)?),
        FrameKind::Swap => Message::Swap(get(kind, body)?),
        FrameKind::Swapped => Message::Swapped(get(kind, body)?),
        FrameKind::Reserved => Message::Reserved(get(kind, body)?),
        FrameKind::Queues => Message::Queues(get_wrapped(kind, body)?),
        FrameKind::CacheStatsView => Message::CacheStatsView(get(kind, body)?),
        FrameKind::PurgeCache => Message::PurgeCache(get(kind, body)?),
        FrameKind::End => Message::End(get(kind, body)?),
        FrameKind::Job => Message::Job(Box::new(get(kind, body)?)),
        FrameKind::JobReply => Message::JobReply(Box::new(get(kind, body)?)),
        FrameKind::Log => Message::Log(get(kind, body)?),
        FrameKind::Members => Message::Members(get(kind, body)?),
        FrameKind::ListMembers => get_empty(kind, body).map(|()| Message::ListMembers)?,
        FrameKind::Load => Message::Load(get(kind, body)?),
        FrameKind::Lease => Message::Lease(get(kind, body)?),
        FrameKind::Leased => Message::Leased(get(kind, body)?),
        FrameKind::Hold => Message::Hold(get(kind, body)?),
        FrameKind::LeaseEnded => Message::LeaseEnded(get(kind, body)?),
        FrameKind::ReleaseLease => Message::ReleaseLease(get(kind, body)?),
        FrameKind::LeaseKeys => Message::LeaseKeys(get(kind, body)?),
        FrameKind::Held => Message::Held(get(kind, body)?),
        FrameKind::DropLease => Message::DropLease(get(kind, body)?),
        FrameKind::Respec => Message::Respec(get(kind, body)?),
        FrameKind::Ancestry => Message::Ancestry(get(kind, body)?),
        FrameKind::Probe => Message::Probe(get(kind, body)?),
        FrameKind::Subtree => Message::Subtree(get(kind, body)?),
        FrameKind::HandUp => Message::HandUp(get(kind, body)?),
    })
}
