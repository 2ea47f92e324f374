//! A connection's streams: its first stream says whether an agent or a
//! client is on the other end. An agent's first frame is `Register` (its
//! control stream, [`super::agents`]); a client's first frame starts a
//! request, and so does every later stream's: a call, a lease or its
//! release ([`super::lease`]), a listing (nodes, queues, policies), an
//! admin operation, or a job operation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{CallError, ErrorKind, Message};
use transport::{FramedRecv, FramedSend};

use super::admission::Ticket;
use super::agents;
use crate::{Shared, admin, calls};

/// How long a new connection has to send its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Lets `connection`'s peer open `[quic] max_streams_per_connection`
/// streams at once (it started with [`super::certs::FIRST_STREAMS`]).
fn allow_streams(shared: &Shared, connection: &quinn::Connection) {
    let streams = shared.config.quic.max_streams_per_connection;
    connection.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(streams));
}

/// Serves one admitted connection; `ticket` counts it until it ends.
pub(super) async fn connection(shared: Arc<Shared>, incoming: quinn::Incoming, mut ticket: Ticket) {
    let handshake = tokio::time::timeout(shared.config.quic.handshake_timeout(), incoming).await;
    ticket.handshake_over();
    let connection = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(error)) => {
            tracing::debug!(%error, "handshake failed");
            return;
        }
        Err(_) => {
            metrics::counter!("quic_handshake_timeouts_total").increment(1);
            tracing::debug!("handshake timed out");
            return;
        }
    };
    // Every stream of the connection speaks its negotiated wire version.
    let codec = transport::codec_for(&connection, shared.codec);
    let Ok(Ok((send, recv))) =
        tokio::time::timeout(FIRST_FRAME_TIMEOUT, connection.accept_bi()).await
    else {
        return;
    };
    // What this connection's streams may hold in reads ([quic]
    // read_buffer_per_connection); agents' control streams read small frames.
    let budget = transport::ReadBudget::new(
        shared
            .config
            .quic
            .read_buffer(shared.config.max_payload_bytes),
    );
    let mut send = FramedSend::new(send, codec);
    let mut recv = FramedRecv::new(recv, codec).with_budget(budget.clone());
    match tokio::time::timeout(FIRST_FRAME_TIMEOUT, recv.recv()).await {
        Ok(Ok(Some(Message::Register(_)))) if shared.drain.is_stopping() => {
            // Agents are not taken while the gateway shuts down.
            connection.close(
                protocol::codes::close::SHUTDOWN.into(),
                b"gateway shutting down",
            );
            return;
        }
        Ok(Ok(Some(Message::Register(register)))) => {
            // A child gateway hands calls up on streams of its own; any
            // other agent opens none after its control stream.
            if register.node.gateway {
                allow_streams(&shared, &connection);
            }
            agents::serve(shared, connection, register, send, recv, &mut ticket).await;
            return;
        }
        // A client: this stream and every later one is a request.
        Ok(Ok(Some(first))) => {
            allow_streams(&shared, &connection);
            tokio::spawn(request(shared.clone(), first, send, recv, Instant::now()));
        }
        Ok(Err(error)) => refuse(&mut send, &format!("bad frame: {error}")).await,
        Ok(Ok(None)) => {}
        Err(_) => {
            connection.close(
                protocol::codes::close::NORMAL.into(),
                b"no request within 10 s",
            );
            return;
        }
    }
    metrics::gauge!("connected_clients").increment(1.0);
    while let Ok((send, recv)) = connection.accept_bi().await {
        let shared = shared.clone();
        let budget = budget.clone();
        tokio::spawn(async move {
            let mut send = FramedSend::new(send, codec);
            let mut recv = FramedRecv::new(recv, codec).with_budget(budget);
            match recv.recv().await {
                Ok(Some(first)) => request(shared, first, send, recv, Instant::now()).await,
                Ok(None) => {}
                Err(error) => refuse(&mut send, &format!("bad frame: {error}")).await,
            }
        });
    }
    metrics::gauge!("connected_clients").decrement(1.0);
}

/// Serves one client stream whose first frame is `first`.
async fn request(
    shared: Arc<Shared>,
    first: Message,
    mut send: FramedSend,
    mut recv: FramedRecv,
    arrived: Instant,
) {
    match first {
        Message::Call(head) => match shared.drain.enter() {
            Ok(in_flight) => {
                calls::serve(shared, head, send, recv, arrived).await;
                drop(in_flight);
            }
            Err(refused) => {
                recv.stop(0);
                let _ = send.send(&Message::Error(refused)).await;
                let _ = send.finish();
            }
        },
        Message::ListNodes => {
            let nodes = shared.registry.views(Instant::now());
            let _ = send.send(&Message::Nodes(nodes)).await;
            let _ = send.finish();
        }
        Message::ListMembers => {
            let members = shared.cluster.members();
            let _ = send.send(&Message::Members(members)).await;
            let _ = send.finish();
        }
        Message::ListQueues => {
            let queues = shared.scheduler.views(Instant::now());
            let _ = send.send(&Message::Queues(queues)).await;
            let _ = send.finish();
        }
        Message::ListPolicies
        | Message::SetPolicy(_)
        | Message::CacheStats
        | Message::PurgeCache(_) => {
            let answer = admin::quic::answer(&shared, first).await;
            let _ = send.send(&answer).await;
            let _ = send.finish();
        }
        Message::Job(job) => {
            recv.stop(0);
            crate::jobs::quic::serve(shared, *job, send).await;
        }
        Message::Lease(request) => match shared.drain.enter() {
            Ok(in_flight) => {
                super::lease::lease(shared, request, send, recv, arrived).await;
                drop(in_flight);
            }
            Err(refused) => {
                recv.stop(0);
                let _ = send.send(&Message::Error(refused)).await;
                let _ = send.finish();
            }
        },
        Message::ReleaseLease(release) => {
            super::lease::release(shared, release, send, recv).await;
        }
        other => {
            refuse(
                &mut send,
                &format!(
                    "a stream must start with Call, Lease, ReleaseLease, ListNodes, ListMembers, ListQueues, ListPolicies, SetPolicy, CacheStats, PurgeCache or Job, not {:?}",
                    other.kind()
                ),
            )
            .await;
        }
    }
}

async fn refuse(send: &mut FramedSend, message: &str) {
    let _ = send
        .send(&Message::Error(CallError::new(
            ErrorKind::BadRequest,
            message.to_string(),
        )))
        .await;
    let _ = send.finish();
}

/// Help texts of the client connection series.
pub(crate) fn describe_metrics() {
    metrics::describe_gauge!("connected_clients", "Client connections open now.");
}
