#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("json")
}

#[test]
fn usage_is_asked_for_once_and_only_when_the_caller_did_not() {
    let body = br#" {"model":"m","stream":true}"#;
    let asked = ask_for_usage(body, None).expect("spliced");
    let asked = json(&asked);
    assert_eq!(asked["stream_options"]["include_usage"], true);
    assert_eq!(asked["model"], "m");
    assert_eq!(
        json(&ask_for_usage(b"{ }", None).unwrap())["stream_options"]["include_usage"],
        true
    );
    let off = br#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#;
    let options = json(off)["stream_options"].clone();
    let asked = json(&ask_for_usage(off, Some(&options)).unwrap());
    assert_eq!(asked["stream_options"]["include_usage"], true);
    assert_eq!(asked["stream_options"]["x"], 1);
    let on = serde_json::json!({"include_usage": true});
    assert!(ask_for_usage(br#"{"stream_options":{"include_usage":true}}"#, Some(&on)).is_none());
    assert!(ask_for_usage(b"[1]", None).is_none());
}

const ROLE: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const TOKEN: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n";
const DONE: &str = "data: [DONE]\n\n";

fn usage(meter: &Meter) -> (Option<u64>, Option<u64>, Option<u64>) {
    let u = meter.usage.expect("usage read");
    (
        u.prompt_tokens,
        u.completion_tokens,
        u.prompt_tokens_details.and_then(|d| d.cached_tokens),
    )
}

fn first(meter: &Meter) -> Option<Instant> {
    match &meter.shape {
        Shape::Events { first, .. } => *first,
        Shape::Json(..) => None,
    }
}

#[test]
fn a_stream_is_read_and_the_usage_chunk_taken_out_when_not_asked_for() {
    let mut meter = Meter::new("m", "t", Instant::now(), true, true);
    let role = meter.chunk(Bytes::from(ROLE)).expect("relayed");
    assert_eq!(role, ROLE.as_bytes());
    assert!(first(&meter).is_none(), "an empty delta is no output");
    assert_eq!(meter.chunk(Bytes::from(TOKEN)).unwrap(), TOKEN.as_bytes());
    assert!(first(&meter).is_some());
    let tail = meter
        .chunk(Bytes::from(format!("{USAGE}{DONE}")))
        .expect("done");
    assert_eq!(tail, DONE.as_bytes(), "the usage chunk is taken out");
    assert_eq!(usage(&meter), (Some(7), Some(3), Some(4)));
    assert!(meter.end().is_none());
}

#[test]
fn a_caller_that_asked_gets_the_usage_chunk() {
    let mut meter = Meter::new("m", "t", Instant::now(), true, false);
    assert_eq!(meter.chunk(Bytes::from(USAGE)).unwrap(), USAGE.as_bytes());
    assert_eq!(usage(&meter), (Some(7), Some(3), Some(4)));
}

#[test]
fn events_cut_across_chunks_are_held_until_whole() {
    let mut meter = Meter::new("m", "t", Instant::now(), true, true);
    let all = format!("{TOKEN}{USAGE}{DONE}");
    let (a, b) = all.split_at(TOKEN.len() + 20);
    assert_eq!(
        meter.chunk(Bytes::from(a.to_string())).unwrap(),
        TOKEN.as_bytes()
    );
    assert_eq!(
        meter.chunk(Bytes::from(b.to_string())).unwrap(),
        DONE.as_bytes()
    );
    assert_eq!(usage(&meter), (Some(7), Some(3), Some(4)));
    // An event cut at the end of the stream is still relayed.
    let mut meter = Meter::new("m", "t", Instant::now(), true, true);
    assert!(meter.chunk(Bytes::from("data: {\"cho")).is_none());
    assert_eq!(meter.end().unwrap(), "data: {\"cho".as_bytes());
}

#[test]
fn crlf_events_are_events() {
    let mut meter = Meter::new("m", "t", Instant::now(), true, true);
    let usage_crlf = USAGE.replace('\n', "\r\n");
    let done_crlf = DONE.replace('\n', "\r\n");
    let out = meter
        .chunk(Bytes::from(format!("{usage_crlf}{done_crlf}")))
        .unwrap();
    assert_eq!(out, done_crlf.as_bytes());
    assert_eq!(usage(&meter), (Some(7), Some(3), Some(4)));
}

#[test]
fn a_json_answer_is_counted_when_whole() {
    let body = br#"{"id":"x","choices":[{"message":{"content":"a b"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
    let mut meter = Meter::new("m", "t", Instant::now(), false, false);
    let (a, b) = body.split_at(30);
    assert_eq!(meter.chunk(Bytes::copy_from_slice(a)).unwrap(), a);
    assert_eq!(meter.chunk(Bytes::copy_from_slice(b)).unwrap(), b);
    let mut whole = Meter::new("m", "t", Instant::now(), false, false);
    whole.chunk(Bytes::copy_from_slice(body));
    if let Shape::Json(Some(kept), _) = &whole.shape {
        let joined: Vec<u8> = kept.iter().flat_map(|c| c.iter().copied()).collect();
        let answer: Answer = serde_json::from_slice(&joined).unwrap();
        assert_eq!(answer.usage.unwrap().prompt_tokens, Some(5));
    } else {
        panic!("kept");
    }
    assert!(meter.end().is_none());
}

#[test]
fn a_usage_key_must_hold_an_object() {
    assert!(has_usage_object(USAGE.as_bytes()));
    assert!(has_usage_object(b"{\"usage\" : {}}"));
    assert!(!has_usage_object(TOKEN.as_bytes()));
    assert!(!has_usage_object(b"{\"content\":\"usage\"}"));
}

#[test]
fn garbage_events_pass_through_untouched() {
    let mut meter = Meter::new("m", "t", Instant::now(), true, true);
    let odd = "event: ping\n\n: comment\n\ndata: {not json \"usage\":{\n\n";
    assert_eq!(meter.chunk(Bytes::from(odd)).unwrap(), odd.as_bytes());
    assert!(meter.usage.is_none());
    assert!(meter.end().is_none());
}
