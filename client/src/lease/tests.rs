//! A lease request's options on the wire, and that leases and their calls
//! are `Send`.

use super::*;

#[test]
fn durations_become_whole_ms_saturating() {
    assert_eq!(millis(Duration::ZERO), 0);
    assert_eq!(millis(Duration::from_micros(2_500)), 2);
    assert_eq!(millis(Duration::from_secs(30)), 30_000);
    assert_eq!(millis(Duration::MAX), u32::MAX);
}

/// A lease request, a lease, and both ways of running a direct call can
/// be spawned on a multi-threaded runtime.
#[test]
fn leases_and_direct_calls_are_send() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Send + Sync + Clone + 'static>() {}
    fn check(client: &Client, lease: &Lease) {
        let cell = std::cell::Cell::new(0);
        let request = client
            .lease("echo")
            .max_calls(3)
            .on_event(move |_| cell.set(cell.get() + 1))
            .into_future();
        send(&request);
        send(&lease.call("x").into_future());
        send(&lease.call("x").stream());
        send(&lease.release());
    }
    sync::<Lease>();
    let _ = check as fn(&Client, &Lease);
}
