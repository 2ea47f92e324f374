//! `GET /api/events`: Server-Sent Events. A `snapshot` event at once and
//! every second (nodes, queues, call rates and latency), and a `change`
//! event as soon as a node registers, leaves, drains or a policy changes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast;

use super::snapshot::Snapshot;
use crate::Shared;

/// How often a snapshot is sent.
pub(super) const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn stream(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = shared.events.subscribe();
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (shared, changes, tick);
    let events =
        futures_util::stream::unfold(state, |(shared, mut changes, mut tick)| async move {
            let event = tokio::select! {
                _ = tick.tick() => snapshot_event(&shared),
                change = changes.recv() => match change {
                    Ok(change) => Event::default()
                        .event("change")
                        .json_data(&change)
                        .unwrap_or_else(|_| Event::default().comment("unserializable change")),
                    // Lagging behind only loses change events; the next
                    // snapshot has the state.
                    Err(broadcast::error::RecvError::Lagged(_)) => snapshot_event(&shared),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            Some((Ok(event), (shared, changes, tick)))
        });
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn snapshot_event(shared: &Shared) -> Event {
    Event::default()
        .event("snapshot")
        .json_data(Snapshot::take(shared, Instant::now()))
        .unwrap_or_else(|_| Event::default().comment("unserializable snapshot"))
}
