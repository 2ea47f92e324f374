//! The path of a call whose service is cached: answered from a stored
//! result, by waiting for an identical call in flight, or by running on a
//! node as the leader, whose result is buffered whole (at most
//! `max_payload_bytes`), stored, and then sent.

use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{CacheInfo, ErrorKind, Message, ResultHead, Timings};
use transport::FramedSend;

use super::{Call, Failure, error, ms, to_node};
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
    send: &mut FramedSend,
) -> Result<(), Failure> {
    let cache = &call.shared.cache;
    let max_age = call
        .head
        .max_age_s
        .map(|s| Duration::from_secs(u64::from(s)));
    loop {
        match cache.lookup(&key, call.head.no_cache, max_age, Instant::now()) {
            Lookup::Hit(entry) => return answer(call, &entry, false, send).await,
            Lookup::Lead(leader) => return lead(call, leader, payload, send).await,
            Lookup::Follow(follower) => {
                let gone = send.peer_gone();
                let followed = tokio::select! {
                    followed = follower.wait() => followed,
                    () = tokio::time::sleep_until(call.deadline.into()) => {
                        return Err(call.timed_out().into());
                    }
                    () = gone => return Err(Failure::Gone),
                };
                match followed {
                    Followed::Done(entry) => return answer(call, &entry, true, send).await,
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
    send: &mut FramedSend,
) -> Result<(), Failure> {
    let age_ms = u64::try_from(entry.age(Instant::now()).as_millis()).unwrap_or(u64::MAX);
    tracing::debug!(call_id = call.call_id, service = %call.head.service, age_ms, coalesced, "answered from the cache");
    let head = ResultHead {
        payload_len: entry.data.len() as u64,
        node_id: entry.node_id.clone(),
        policy: entry.policy.clone(),
        timings: Timings {
            queue_ms: 0.0,
            node_ms: 0.0,
            total_ms: ms(call.arrived.elapsed()),
        },
        cache: Some(CacheInfo { age_ms, coalesced }),
    };
    if send.send(&Message::Result(head)).await.is_err()
        || send.send_payload(&entry.data).await.is_err()
    {
        return Err(Failure::Gone);
    }
    Ok(())
}

/// Runs the call on a node, stores and shares its result, then sends it.
async fn lead(
    call: &Call<'_>,
    leader: Leader,
    payload: Bytes,
    send: &mut FramedSend,
) -> Result<(), Failure> {
    let mut answered = match to_node(call, payload, send).await {
        Ok(answered) => answered,
        Err(failure) => {
            if let Failure::Reply(e) = &failure {
                leader.fail(e);
            }
            return Err(failure);
        }
    };
    let max = call.shared.config.max_payload_bytes;
    let collected = tokio::time::timeout_at(
        call.deadline.into(),
        answered.node_recv.recv_payload(answered.payload_len, max),
    )
    .await;
    let data = match collected {
        Ok(Ok(data)) => data,
        Ok(Err(e)) => {
            answered.finish(call, false);
            let e = error(ErrorKind::NodeLost, format!("node lost mid-result: {e}"));
            leader.fail(&e);
            return Err(e.into());
        }
        Err(_) => {
            answered.finish(call, false);
            let e = call.timed_out();
            leader.fail(&e);
            return Err(e.into());
        }
    };
    let mut head = answered.result_head(call);
    answered.finish(call, true);
    let entry = leader.complete(
        data,
        head.node_id.clone(),
        head.policy.clone(),
        Instant::now(),
    );
    head.timings.total_ms = ms(call.arrived.elapsed());
    if send.send(&Message::Result(head)).await.is_err()
        || send.send_payload(&entry.data).await.is_err()
    {
        // The client left; its result is stored for the next calls.
        return Err(Failure::Gone);
    }
    Ok(())
}
