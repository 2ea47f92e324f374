use super::*;

#[test]
fn a_text_payload_and_options_make_the_spec() {
    let spec = submit(
        br#"{"service": "echo", "payload": "hi", "priority": 3, "realtime": true,
             "watchdog_s": 60, "max_attempts": 2, "idempotent": true,
             "hints": {"gpu": "a100"}, "labels": {"team": "ml"}}"#,
    )
    .expect("a good body");
    assert_eq!(spec.service.as_deref(), Some("echo"));
    assert_eq!(spec.payload, b"hi");
    assert_eq!(spec.priority, 3);
    assert!(spec.realtime && spec.idempotent);
    assert_eq!(spec.watchdog_s, Some(60));
    assert_eq!(spec.max_attempts, Some(2));
    assert_eq!(spec.hints.get("gpu").map(String::as_str), Some("a100"));
    assert_eq!(spec.labels.get("team").map(String::as_str), Some("ml"));
}

#[test]
fn a_base64_payload_is_decoded_and_a_template_takes_params() {
    let spec = submit(
        br#"{"template": "train", "params": {"epochs": "3"}, "payload_base64": "AAEC/w=="}"#,
    )
    .expect("a good body");
    assert_eq!(spec.template.as_deref(), Some("train"));
    assert_eq!(spec.service, None);
    assert_eq!(spec.payload, [0, 1, 2, 255]);
    assert_eq!(spec.params.get("epochs").map(String::as_str), Some("3"));
}

#[test]
fn no_payload_is_an_empty_one() {
    let spec = submit(br#"{"service": "echo"}"#).expect("a good body");
    assert!(spec.payload.is_empty());
    assert_eq!(spec.priority, 0);
}

fn refused(body: &str) -> BadRequest {
    submit(body.as_bytes()).expect_err("a bad body")
}

#[test]
fn both_payload_forms_unknown_fields_and_bad_base64_are_refused() {
    let both = refused(r#"{"service": "echo", "payload": "a", "payload_base64": "YQ=="}"#);
    assert!(both.message.contains("not both"), "{both:?}");
    assert!(!both.too_large);
    let unknown = refused(r#"{"service": "echo", "colour": "red"}"#);
    assert!(unknown.message.contains("colour"), "{unknown:?}");
    let b64 = refused(r#"{"service": "echo", "payload_base64": "!!"}"#);
    assert!(b64.message.contains("base64"), "{b64:?}");
    assert!(refused("not json").message.starts_with("bad job body"));
    assert!(
        refused(r#"{"service": "echo", "priority": "high"}"#)
            .message
            .contains("bad job body")
    );
}

#[test]
fn a_job_names_exactly_one_service_or_template() {
    assert!(refused(r#"{"payload": "x"}"#).message.contains("either"));
    assert!(
        refused(r#"{"service": "a", "template": "b"}"#)
            .message
            .contains("either")
    );
    assert!(refused(r#"{"service": ""}"#).message.contains("service"));
    assert!(
        refused(r#"{"service": "a", "max_attempts": 0}"#)
            .message
            .contains("max_attempts")
    );
}

#[test]
fn a_payload_over_the_limit_is_too_large() {
    let big = "x".repeat(MAX_JOB_PAYLOAD + 1);
    let body = format!(r#"{{"service": "echo", "payload": "{big}"}}"#);
    let bad = refused(&body);
    assert!(bad.too_large, "{bad:?}");
    let exact = format!(
        r#"{{"service": "echo", "payload": "{}"}}"#,
        "x".repeat(MAX_JOB_PAYLOAD)
    );
    assert!(submit(exact.as_bytes()).is_ok());
}

#[test]
fn a_template_body_needs_a_name_and_a_service() {
    let (name, t) = template(
        br#"{"name": "train", "service": "trainer", "payload": "--epochs {epochs}",
             "defaults": {"epochs": "1"}, "watchdog_s": 600, "description": "trains"}"#,
    )
    .expect("a good template");
    assert_eq!(name, "train");
    assert_eq!(t.service, "trainer");
    assert_eq!(t.payload, "--epochs {epochs}");
    assert_eq!(t.watchdog_s, Some(600));
    assert!(template(br#"{"name": "train"}"#).is_err());
    assert!(template(br#"{"name": "a b", "service": "s"}"#).is_err());
    assert!(template(br#"{"name": "t", "service": "s", "extra": 1}"#).is_err());
}

#[test]
fn list_queries_parse_state_limit_and_cursor() {
    let q = ListQuery {
        state: Some("timed_out".into()),
        service: Some("echo".into()),
        tenant: Some(String::new()),
        limit: Some("5000".into()),
        cursor: Some("job-1".into()),
    };
    let filter = q.filter().expect("a good query");
    assert_eq!(filter.state, Some(JobState::TimedOut));
    assert_eq!(filter.service.as_deref(), Some("echo"));
    assert_eq!(filter.tenant, None, "an empty value is no filter");
    assert_eq!(filter.limit, Some(protocol::job::MAX_PAGE));
    assert_eq!(filter.cursor.as_deref(), Some("job-1"));
    let bad_state = ListQuery {
        state: Some("done".into()),
        ..ListQuery::default()
    };
    assert!(bad_state.filter().is_err());
    let bad_limit = ListQuery {
        limit: Some("ten".into()),
        ..ListQuery::default()
    };
    assert!(bad_limit.filter().is_err());
    assert_eq!(
        ListQuery::default().filter().expect("empty"),
        JobFilter::default()
    );
}

#[test]
fn log_queries_default_to_everything_and_cap_the_limit() {
    let ask = LogQuery::default().ask().expect("empty");
    assert_eq!(
        ask,
        LogAsk {
            after: 0,
            limit: MAX_LOG_LINES,
            follow: false
        }
    );
    let ask = LogQuery {
        after: Some("7".into()),
        limit: Some("99999999999".into()),
        follow: Some("1".into()),
    }
    .ask()
    .expect("good");
    assert_eq!((ask.after, ask.limit, ask.follow), (7, MAX_LOG_LINES, true));
    let bad = LogQuery {
        follow: Some("yes".into()),
        ..LogQuery::default()
    };
    assert!(bad.ask().is_err());
    let bad = LogQuery {
        after: Some("-1".into()),
        ..LogQuery::default()
    };
    assert!(bad.ask().is_err());
}
