use clap::Parser;
use client::Transition;

use super::*;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    job: JobCommand,
}

fn parse(args: &[&str]) -> Result<JobCommand, clap::Error> {
    let mut argv = vec!["job"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).map(|cli| cli.job)
}

#[test]
fn submit_takes_every_option() {
    let JobCommand::Submit(args) = parse(&[
        "submit",
        "sha256",
        "--payload",
        "hello",
        "--priority",
        "-2",
        "--realtime",
        "--watchdog",
        "60",
        "--max-attempts",
        "3",
        "--idempotent",
        "--label",
        "team=ml",
        "--hint",
        "region=eu",
        "--wait",
    ])
    .expect("parses") else {
        panic!("not a submit");
    };
    let spec = args.spec().expect("spec");
    assert_eq!(spec.service.as_deref(), Some("sha256"));
    assert_eq!(spec.payload, b"hello");
    assert_eq!(spec.priority, -2);
    assert!(spec.realtime && spec.idempotent && args.wait);
    assert_eq!((spec.watchdog_s, spec.max_attempts), (Some(60), Some(3)));
    assert_eq!(spec.labels.get("team").map(String::as_str), Some("ml"));
    assert_eq!(spec.hints.get("region").map(String::as_str), Some("eu"));
    assert!(spec.template.is_none());
}

#[test]
fn submit_from_a_template_with_params() {
    let JobCommand::Submit(args) = parse(&[
        "submit",
        "--template",
        "resize",
        "--param",
        "w=640",
        "--param",
        "h=480",
    ])
    .expect("parses") else {
        panic!("not a submit");
    };
    let spec = args.spec().expect("spec");
    assert_eq!(
        (spec.service, spec.template.as_deref()),
        (None, Some("resize"))
    );
    assert_eq!(spec.params.len(), 2);
    assert!(spec.payload.is_empty());
}

#[test]
fn submit_refuses_bad_combinations() {
    assert!(parse(&["submit"]).is_err(), "a service or a template");
    assert!(parse(&["submit", "s", "--template", "t"]).is_err());
    assert!(parse(&["submit", "s", "--payload", "a", "--payload-file", "f"]).is_err());
    assert!(parse(&["submit", "s", "--label", "novalue"]).is_err());
}

#[test]
fn submit_reads_the_payload_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("in");
    std::fs::write(&file, b"from a file").expect("write");
    let JobCommand::Submit(args) = parse(&[
        "submit",
        "s",
        "--payload-file",
        file.to_str().expect("utf-8"),
    ])
    .expect("parses") else {
        panic!("not a submit");
    };
    assert_eq!(args.spec().expect("spec").payload, b"from a file");
}

#[test]
fn list_log_and_the_others_parse() {
    assert_eq!(
        parse(&[
            "list",
            "--state",
            "timed_out",
            "--service",
            "s",
            "--limit",
            "5"
        ])
        .expect("list"),
        JobCommand::List {
            state: Some(JobState::TimedOut),
            service: Some("s".into()),
            tenant: None,
            limit: Some(5),
            cursor: None,
            json: false,
        }
    );
    assert_eq!(
        parse(&["list", "--tenant", "t", "--cursor", "c1", "--json"]).expect("list --json"),
        JobCommand::List {
            state: None,
            service: None,
            tenant: Some("t".into()),
            limit: None,
            cursor: Some("c1".into()),
            json: true,
        }
    );
    assert_eq!(
        parse(&["show", "abc", "--json"]).expect("show --json"),
        JobCommand::Show {
            id: "abc".into(),
            json: true
        }
    );
    assert!(parse(&["list", "--state", "sleeping"]).is_err());
    assert_eq!(
        parse(&["log", "abc", "-f"]).expect("log"),
        JobCommand::Log {
            id: "abc".into(),
            follow: true
        }
    );
    for verb in ["show", "cancel", "restart", "delete", "result"] {
        assert!(parse(&[verb, "abc"]).is_ok(), "{verb}");
        assert!(parse(&[verb]).is_err(), "{verb} needs an id");
    }
}

#[test]
fn utc_formats_epoch_milliseconds() {
    assert_eq!(utc(0), "1970-01-01 00:00:00.000");
    // 2026-12-04 20:25:27.5 UTC.
    assert_eq!(utc(1_796_415_927_500), "2026-12-04 20:25:27.500");
    assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
}

fn view() -> JobView {
    JobView {
        id: "0192f3a4b5c6d7e8f9a0b1c2d3".into(),
        service: "sha256".into(),
        template: None,
        state: JobState::Failed,
        tenant: Some("team-a".into()),
        priority: 1,
        realtime: false,
        watchdog_s: 600,
        attempt: 2,
        max_attempts: 3,
        idempotent: true,
        node: Some("node-a".into()),
        created_ms: 0,
        started_ms: Some(1000),
        finished_ms: None,
        error: Some("exit status 3".into()),
        result_len: None,
        position: None,
        hints: BTreeMap::new(),
        labels: [("team".to_string(), "ml".to_string())].into(),
        request_id: Some("req-1".into()),
        history: vec![Transition {
            state: JobState::Running,
            at_ms: 1000,
            attempt: 2,
            node: Some("node-a".into()),
            note: Some("retry".into()),
        }],
    }
}

#[test]
fn a_job_shows_its_fields_and_history() {
    let text = job_text(&view());
    assert!(text.contains("state:     failed"), "{text}");
    assert!(text.contains("attempt:   2/3"), "{text}");
    assert!(text.contains("priority:  1 idempotent"), "{text}");
    assert!(text.contains("error:     exit status 3"), "{text}");
    assert!(text.contains("labels:    team=ml"), "{text}");
    assert!(
        text.contains("1970-01-01 00:00:01.000 running    #2 on node-a: retry"),
        "{text}"
    );
    assert!(text.contains("finished:  -"), "{text}");
}

#[test]
fn the_table_has_one_line_per_job() {
    let table = jobs_table(&[view(), view()]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("ID"));
    assert!(
        lines[1].contains("failed") && lines[1].contains("2/3"),
        "{table}"
    );
}

#[test]
fn a_log_line_names_time_stream_and_attempt() {
    let entry = LogEntry {
        seq: 4,
        attempt: 1,
        ts_ms: 1500,
        stream: LogStream::Stderr,
        line: "warming up".into(),
    };
    assert_eq!(
        log_line(&entry),
        "1970-01-01 00:00:01.500 err #1 warming up"
    );
}

#[test]
fn settings_reads_or_sets_the_limit() {
    let Ok(JobCommand::Settings { max_per_node, json }) = parse(&["settings"]) else {
        panic!("not settings");
    };
    assert_eq!((max_per_node, json), (None, false));
    let Ok(JobCommand::Settings { max_per_node, json }) =
        parse(&["settings", "--max-per-node", "2", "--json"])
    else {
        panic!("not settings");
    };
    assert_eq!((max_per_node, json), (Some(2), true));
    assert!(parse(&["settings", "--max-per-node", "-1"]).is_err());
}

#[test]
fn an_attempt_past_max_attempts_reads_as_a_restart() {
    assert_eq!(attempt_text(1, 3), "1/3");
    assert_eq!(attempt_text(2, 1), "2 (max 1, restarted)");
    let restarted = JobView {
        attempt: 2,
        max_attempts: 1,
        ..view()
    };
    assert!(
        job_text(&restarted).contains("attempt:   2 (max 1, restarted)"),
        "{}",
        job_text(&restarted)
    );
    let table = jobs_table(&[view(), restarted]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].contains(" 2/3 "), "{table}");
    assert!(
        lines[2].contains(" 2+ ") && !lines[2].contains("2/1"),
        "{table}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("(N+: attempt N, restarted past the job's max_attempts)")
    );
    assert!(!jobs_table(&[view()]).contains("N+"));
}

#[test]
fn a_job_without_a_result_says_why() {
    let cancelled = JobView {
        state: JobState::Cancelled,
        error: Some("cancelled".into()),
        ..view()
    };
    assert_eq!(
        no_result(&cancelled),
        "job 0192f3a4b5c6d7e8f9a0b1c2d3 was cancelled: it has no result"
    );
    assert_eq!(
        no_result(&view()),
        "job 0192f3a4b5c6d7e8f9a0b1c2d3 failed: exit status 3; it has no result"
    );
    let running = JobView {
        state: JobState::Running,
        error: None,
        ..view()
    };
    assert!(
        no_result(&running).starts_with("job 0192f3a4b5c6d7e8f9a0b1c2d3 is running: no result yet"),
        "{}",
        no_result(&running)
    );
}

#[test]
fn an_empty_job_id_is_refused_before_dialing() {
    for command in ["show", "log", "cancel", "restart", "delete", "result"] {
        let error = parse(&[command, ""]).expect_err("empty id").to_string();
        assert!(
            error.contains("a job id must not be empty"),
            "{command}: {error}"
        );
        assert!(parse(&[command, "  "]).is_err(), "{command}");
    }
    let Ok(JobCommand::Show { id, .. }) = parse(&["show", " 0192f3a4 "]) else {
        panic!("show parses");
    };
    assert_eq!(id, "0192f3a4");
}
