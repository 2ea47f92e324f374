//! A client's lease streams: `Lease(LeaseRequest)` is admitted like a call
//! (tenant, queue with `Queued`/`Reserved` frames, the policy's pick) and
//! answered `Leased(LeaseGrant)` or `Error`; `ReleaseLease` with the
//! lease's token is answered `Ack("released")` or `Error`.

use std::sync::Arc;
use std::time::Instant;

use protocol::{LeaseRelease, LeaseRequest, Message};
use transport::{FramedRecv, FramedSend};

use crate::calls::Failure;
use crate::{Shared, leases};

/// Serves a lease request read at `arrived`.
pub(super) async fn lease(
    shared: Arc<Shared>,
    mut request: LeaseRequest,
    mut send: FramedSend,
    mut recv: FramedRecv,
    arrived: Instant,
) {
    // A lease request is one frame: nothing more is read.
    recv.stop(0);
    let admitted = match crate::calls::admit(&shared, &mut request.head) {
        Ok(admitted) => admitted,
        Err(refused) => {
            refused.record(&shared, &request.head.service, arrived);
            let _ = send.send(&Message::Error(refused.error)).await;
            let _ = send.finish();
            return;
        }
    };
    match leases::lease(&shared, request, admitted, &mut send, arrived).await {
        Ok(grant) => {
            let lease_id = grant.lease_id.clone();
            if send.send(&Message::Leased(grant)).await.is_err() {
                // Nobody has its token: the slot goes back at once.
                leases::abandon(&shared, &lease_id);
                return;
            }
            let _ = send.finish();
        }
        Err(Failure::Reply(error)) => {
            let _ = send.send(&Message::Error(error)).await;
            let _ = send.finish();
        }
        Err(Failure::Gone) => send.reset(protocol::codes::reset::CLIENT_GONE),
        Err(Failure::Cut(code, _)) => send.reset(code),
    }
}

/// Serves a release.
pub(super) async fn release(
    shared: Arc<Shared>,
    release: LeaseRelease,
    mut send: FramedSend,
    mut recv: FramedRecv,
) {
    recv.stop(0);
    let answer = match leases::release(&shared, &release.token, None).await {
        Ok(()) => Message::Ack("released".into()),
        Err(e) => Message::Error(e.to_call_error()),
    };
    let _ = send.send(&answer).await;
    let _ = send.finish();
}
