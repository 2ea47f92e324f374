//! How a call's options reach the wire, and that calls are `Send`.

use super::*;

#[test]
fn options_become_the_wire_head_with_the_policy_as_the_last_hint() {
    let options = CallOptions {
        timeout: Duration::from_secs(2),
        policy: Some("cost".into()),
        hints: vec![("max_cost".into(), "0.5".into())],
        priority: 5,
        realtime: true,
        no_cache: true,
        max_age: Some(Duration::from_millis(2_900)),
        endpoint: Some("/embeddings".into()),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        // Stays on this side: the SDK's own choice of resending.
        idempotent: true,
        // Stays on this side: how the SDK reaches the node.
        mode: Mode::LookAside,
    };
    let head = options.into_head("llama", 12);
    assert_eq!(head.service, "llama");
    assert_eq!(head.payload_len, 12);
    assert_eq!(
        head.hints,
        vec![
            ("max_cost".to_string(), "0.5".to_string()),
            ("policy".to_string(), "cost".to_string())
        ]
    );
    assert_eq!(head.priority, 5);
    assert!(head.realtime && head.no_cache && !head.log);
    assert_eq!(head.max_age_s, Some(2));
    assert_eq!(head.endpoint.as_deref(), Some("/embeddings"));
    assert_eq!(head.api_key, None);
    assert_eq!(
        head.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );

    let plain = CallOptions::default().into_head("echo", 0);
    assert!(plain.hints.is_empty());
    assert_eq!(
        (plain.priority, plain.realtime, plain.no_cache),
        (0, false, false)
    );
    assert_eq!((plain.max_age_s, plain.endpoint), (None, None));
    let forever = CallOptions {
        max_age: Some(Duration::MAX),
        ..CallOptions::default()
    };
    assert_eq!(forever.into_head("echo", 0).max_age_s, Some(u32::MAX));
}

/// Both ways of running a call can be spawned on a multi-threaded
/// runtime, with an event callback that is `Send` only.
#[test]
fn a_call_and_its_stream_are_send() {
    fn send<T: Send>(_: &T) {}
    fn check(client: &Client) {
        let cell = std::cell::Cell::new(0);
        let whole = client
            .call("echo", "x")
            .on_event(move |_| cell.set(cell.get() + 1))
            .into_future();
        send(&whole);
        let stream = client.call("echo", "x").stream();
        send(&stream);
    }
    let _ = check as fn(&Client);
}
