//! The path of a call whose service is cached: answered from a stored
//! result, by waiting for an identical call in flight, or by running on a
//! node as the leader, whose result is buffered whole (at most
//! `max_payload_bytes`; a streamed result too), stored, and then sent: a
//! cached service's result is the one result the gateway does not stream.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use protocol::{CacheInfo, CallError, ErrorKind, Message, ResultHead, Timings};
use switchyard_core::CallEnd;

use super::kernel::{Answered, node_fault, to_node};
use super::{Call, Caller, Failure, error, ms};
use crate::cache::{Entry, Followed, Key, Leader, Lookup};

/// Payloads up to this size are hashed on the call's task; larger ones on
/// the blocking pool (BLAKE3 hashes about 1 GB/s on one core), bytes.
const HASH_INLINE_MAX: usize = 256 * 1024;

/// The call's cache key, or `None` when its service is not cached.
pub(super) async fn key(call: &Call<'_>, payload: &Bytes) -> Option<Key> {
    let cache = &call.shared.cache;
    if !cache.is_cached(&call.head.service) {
        return None;
    }
    if payload.len() <= HASH_INLINE_MAX {
        return cache.key(&call.head, payload);
    }
    let (cache, head, payload) = (cache.clone(), call.head.clone(), payload.clone());
    // A join error (the runtime stopping) leaves the call uncached.
    tokio::task::spawn_blocking(move || cache.key(&head, &payload))
        .await
        .unwrap_or_default()
}

/// Serves `call` (whose service is cached) with the cache `key`.
pub(super) async fn serve(
    call: &Call<'_>,
    key: Key,
    payload: Bytes,
    caller: &mut impl Caller,
) -> Result<(), Failure> {
    let cache = &call.shared.cache;
    let max_age = call
        .head
        .max_age_s
        .map(|s| Duration::from_secs(u64::from(s)));
    loop {
        match cache.lookup(&key, call.head.no_cache, max_age, Instant::now()) {
            Lookup::Hit(entry) => return answer(call, &entry, false, caller).await,
            Lookup::Lead(leader) => return lead(call, leader, payload, caller).await,
            Lookup::Follow(follower) => {
                let gone = caller.gone();
                let followed = tokio::select! {
                    followed = follower.wait() => followed,
                    () = tokio::time::sleep_until(call.deadline.into()) => {
                        return Err(call.timed_out().into());
                    }
                    () = gone => return Err(Failure::Gone),
                };
                match followed {
                    Followed::Done(entry) => return answer(call, &entry, true, caller).await,
                    Followed::Failed(e) => return Err(e.into()),
                    Followed::Retry => {
                        tracing::debug!(
                            call_id = call.call_id,
                            "the call this one waited for failed; trying again"
                        );
                    }
                }
            }
        }
    }
}

/// Sends a cached result to the client.
async fn answer(
    call: &Call<'_>,
    entry: &Entry,
    coalesced: bool,
    caller: &mut impl Caller,
) -> Result<(), Failure> {
    let age_ms = u64::try_from(entry.age(Instant::now()).as_millis()).unwrap_or(u64::MAX);
    tracing::debug!(call_id = call.call_id, service = %call.head.service, age_ms, coalesced, "answered from the cache");
    let head = ResultHead {
        payload_len: Some(entry.data.len() as u64),
        node_id: entry.node_id.clone(),
        policy: entry.policy.clone(),
        timings: Timings {
            queue_ms: 0.0,
            node_ms: 0.0,
            total_ms: ms(call.arrived.elapsed()),
            attempts: 0,
        },
        cache: Some(CacheInfo { age_ms, coalesced }),
        content_type: entry.content_type.clone(),
        status: entry.status,
        explain: call.wants_explain().then(|| {
            format!(
                "cache -> {}: {} (no pick)",
                entry.node_id,
                if coalesced {
                    "joined an identical call in flight"
                } else {
                    "answered from the result cache"
                }
            )
        }),
        request_id: call.head.request_id.clone(),
        via: Vec::new(),
    };
    send_whole(call, caller, head, entry.data.clone()).await
}

/// Sends a whole result: its head, then its bytes in one chunk (a QUIC
/// caller cuts it into frames).
async fn send_whole(
    call: &Call<'_>,
    caller: &mut impl Caller,
    head: ResultHead,
    data: Bytes,
) -> Result<(), Failure> {
    let send = async {
        caller
            .send(Message::Result(head))
            .await
            .map_err(|_| Failure::Gone)?;
        if !data.is_empty() {
            caller
                .send(Message::Data(data))
                .await
                .map_err(|_| Failure::Gone)?;
        }
        Ok(())
    };
    // A caller that does not read is not waited for past the deadline.
    tokio::time::timeout_at(call.deadline.into(), send)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Cut(
                protocol::codes::reset::TIMEOUT,
                format!("timeout while sending the result ({} ms)", call.timeout_ms),
            ))
        })
}

/// Runs the call on a node, stores and shares its result, then sends it.
async fn lead(
    call: &Call<'_>,
    leader: Leader,
    payload: Bytes,
    caller: &mut impl Caller,
) -> Result<(), Failure> {
    let mut answered = match to_node(call, payload, caller).await {
        Ok(answered) => answered,
        Err(failure) => {
            if let Failure::Reply(e) = &failure {
                leader.fail(e);
            }
            return Err(failure);
        }
    };
    let max = call.shared.config.max_payload_bytes;
    let collected =
        tokio::time::timeout_at(call.deadline.into(), collect(&mut answered, max)).await;
    let data = match collected {
        Ok(Ok(data)) => data,
        Ok(Err(e)) => {
            answered.cancel(protocol::codes::reset::NODE_LOST);
            answered.finish(call, node_fault(&e));
            leader.fail(&e);
            return Err(e.into());
        }
        Err(_) => {
            answered.cancel(protocol::codes::reset::TIMEOUT);
            answered.finish(call, CallEnd::Failed);
            let e = call.timed_out();
            leader.fail(&e);
            return Err(e.into());
        }
    };
    let mut head = answered.result_head(call);
    answered.finish(call, CallEnd::Ok);
    let entry = leader.complete(
        data,
        head.node_id.clone(),
        head.policy.clone(),
        head.content_type.clone(),
        head.status,
        Instant::now(),
    );
    head.timings.total_ms = ms(call.arrived.elapsed());
    head.payload_len = Some(entry.data.len() as u64);
    // A client that left finds its result stored for the next calls.
    send_whole(call, caller, head, entry.data.clone()).await
}

/// Reads a node's whole result (known length or streamed), at most `max`
/// bytes.
async fn collect(answered: &mut Answered, max: u64) -> Result<Bytes, CallError> {
    let lost = |e| error(ErrorKind::NodeLost, format!("node lost mid-result: {e}"));
    if let Some(len) = answered.payload_len {
        return answered
            .node_recv
            .recv_payload(len, max)
            .await
            .map_err(lost);
    }
    let mut data = BytesMut::new();
    loop {
        match answered.node_recv.recv().await.map_err(lost)? {
            Some(Message::Data(chunk)) => {
                if (data.len() + chunk.len()) as u64 > max {
                    return Err(error(
                        ErrorKind::PayloadTooLarge,
                        format!("result exceeds the maximum of {max} bytes"),
                    ));
                }
                data.extend_from_slice(&chunk);
            }
            Some(Message::End(_)) => return Ok(data.freeze()),
            Some(Message::Error(e)) => return Err(e),
            // A cached result is stored whole: its log is not relayed.
            Some(Message::Log(_)) => {}
            Some(other) => {
                return Err(error(
                    ErrorKind::NodeLost,
                    format!("unexpected {:?} frame in a result", other.kind()),
                ));
            }
            None => {
                return Err(error(
                    ErrorKind::NodeLost,
                    "node result ended without its end frame",
                ));
            }
        }
    }
}
