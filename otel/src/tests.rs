#![allow(clippy::unwrap_used)]

use super::*;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[test]
fn a_traceparent_round_trips() {
    let parent = Parent::from_traceparent(Some(TRACEPARENT));
    assert_eq!(parent.traceparent().as_deref(), Some(TRACEPARENT));
    assert_eq!(
        parent.trace_id().as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    // An unsampled caller stays unsampled.
    let unsampled = TRACEPARENT.replace("-01", "-00");
    assert_eq!(
        Parent::from_traceparent(Some(&unsampled)).traceparent(),
        Some(unsampled)
    );
}

#[test]
fn a_malformed_traceparent_starts_a_new_trace() {
    for bad in [
        "",
        "00",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01",
    ] {
        assert!(Parent::from_traceparent(Some(bad)).is_empty(), "{bad}");
    }
    // A later version may append fields.
    let v1 = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more";
    assert!(!Parent::from_traceparent(Some(v1)).is_empty());
}

#[test]
fn an_off_tracer_makes_empty_spans_and_never_asks_for_attributes() {
    let tracer = Tracer::start(&TracingConfig::default(), "test").unwrap();
    assert!(!tracer.is_on());
    let parent = Parent::from_traceparent(Some(TRACEPARENT));
    let span = tracer.span("call", Kind::Server, &parent, SystemTime::now(), || {
        unreachable!("attributes are not built when off")
    });
    assert!(span.traceparent().is_none());
    assert!(!span.is_recording());
}

#[test]
fn a_child_span_joins_its_parents_trace() {
    let config = TracingConfig {
        // Nothing listens there: the export fails quietly, the spans exist.
        otlp_endpoint: Some("http://127.0.0.1:9".into()),
    };
    let tracer = Tracer::start(&config, "test").unwrap();
    assert!(tracer.is_on());
    let parent = Parent::from_traceparent(Some(TRACEPARENT));
    let span = tracer.span("call", Kind::Server, &parent, SystemTime::now(), Vec::new);
    assert!(span.is_recording());
    let child = span.traceparent().unwrap();
    assert!(child.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert_ne!(child, TRACEPARENT, "a span id of its own");
    assert!(child.ends_with("-01"));
    // No parent: a new trace.
    let root = tracer.span(
        "call",
        Kind::Server,
        &Parent::default(),
        SystemTime::now(),
        Vec::new,
    );
    assert_ne!(root.parent().trace_id(), parent.trace_id());
}

#[test]
fn the_traces_path_is_appended_once() {
    assert_eq!(
        traces_url("http://127.0.0.1:4318"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        traces_url("http://127.0.0.1:4318/"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        traces_url("http://c:4318/v1/traces"),
        "http://c:4318/v1/traces"
    );
}

#[test]
fn a_bad_endpoint_is_a_clear_error() {
    let config = TracingConfig {
        otlp_endpoint: Some("not a url".into()),
    };
    let e = Tracer::start(&config, "test").unwrap_err();
    assert!(e.to_string().contains("not a url"), "{e}");
}
