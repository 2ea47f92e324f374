//! Hosted services: a handler in this program answers whole or streamed;
//! work abandoned at the deadline keeps its place until it really ends.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::*;
use crate::services::hosted::{self, Handler, HandlerFuture, HostedCall, Work, whole};

/// Upper-cases the payload; `stream` answers a chunk per byte; `hold`
/// keeps each call's work until the test lets it go.
#[derive(Default)]
struct Upper {
    held: Mutex<Vec<Work>>,
}

impl Handler for Upper {
    fn call(&self, call: HostedCall) -> HandlerFuture {
        match &call.payload[..] {
            b"hold" => {
                let (_tx, rx) = oneshot::channel::<()>();
                // The work "runs" past the deadline: its guard is kept here.
                let HostedCall { work, .. } = call;
                self.held.lock().expect("held").push(work);
                Box::pin(async move {
                    let _ = rx.await;
                    std::future::pending::<()>().await;
                    unreachable!()
                })
            }
            b"fail" => Box::pin(async { Err(ServiceError::failed("ValueError: no")) }),
            b"stream" => Box::pin(async move {
                Ok(call.stream(|sink, call| async move {
                    for byte in b"abc" {
                        sink.data(Bytes::copy_from_slice(&[*byte]))
                            .await
                            .map_err(|e| ServiceError::failed(e.to_string()))?;
                    }
                    drop(call);
                    Ok(())
                }))
            }),
            other => {
                let upper = other.to_ascii_uppercase();
                Box::pin(async move { Ok(whole(Bytes::from(upper))) })
            }
        }
    }
}

fn hosted(max_concurrent: u32) -> (Services, Arc<Upper>) {
    let upper = Arc::new(Upper::default());
    struct Shared(Arc<Upper>);
    impl Handler for Shared {
        fn call(&self, call: HostedCall) -> HandlerFuture {
            self.0.call(call)
        }
    }
    let mut config = ServiceConfig::new("svc", ServiceKind::Hosted);
    config.max_concurrent = max_concurrent;
    let handlers = hosted::Handlers::from([(
        "svc".to_string(),
        hosted::Hosted::new(Shared(Arc::clone(&upper))),
    )]);
    let services = Services::hosting(&[config], &[], &handlers).expect("services");
    (services, upper)
}

#[tokio::test]
async fn a_hosted_service_answers_whole_streamed_and_failed() {
    let (services, _) = hosted(2);
    let got = services.call("svc", Bytes::from("hi"), LONG).await;
    assert_eq!(got.expect("whole"), Bytes::from("HI"));
    let slot = services.acquire("svc").expect("slot");
    let reply = slot
        .run(Bytes::from("stream"), LONG, None)
        .await
        .expect("reply");
    let Body::Stream(mut chunks) = reply.body else {
        panic!("a streamed answer");
    };
    let mut got = Vec::new();
    while let Some(chunk) = chunks.next().await {
        got.push(chunk.expect("chunk"));
    }
    assert_eq!(got, [Bytes::from("a"), Bytes::from("b"), Bytes::from("c")]);
    drop(slot);
    let err = services
        .call("svc", Bytes::from("fail"), LONG)
        .await
        .expect_err("fails");
    assert_eq!(err.kind, ErrorKind::ServiceFailed);
    assert_eq!(services.in_flight(), [("svc".to_string(), 0)]);
}

#[tokio::test]
async fn abandoned_work_keeps_its_place_until_it_ends() {
    let (services, upper) = hosted(1);
    let started = Instant::now();
    let err = services
        .call("svc", Bytes::from("hold"), Duration::from_millis(100))
        .await
        .expect_err("past its deadline");
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(started.elapsed() < 10 * SECOND);
    // The call ended, its work did not: the one place stays taken.
    assert_eq!(services.in_flight(), [("svc".to_string(), 1)]);
    let refused = services.acquire("svc").expect_err("still busy");
    assert_eq!(refused.kind, ErrorKind::NoNodeAvailable);
    assert!(refused.not_run);
    upper.held.lock().expect("held").clear();
    assert_eq!(services.in_flight(), [("svc".to_string(), 0)]);
    let got = services.call("svc", Bytes::from("ok"), LONG).await;
    assert_eq!(got.expect("served again"), Bytes::from("OK"));
}

#[test]
fn a_hosted_service_without_its_handler_is_refused() {
    let config = ServiceConfig::new("svc", ServiceKind::Hosted);
    let err = Services::new(&[config]).expect_err("no handler");
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(err.message.contains("no handler"), "{}", err.message);
}
