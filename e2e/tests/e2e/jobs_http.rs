//! The job routes with a real client, curl: every refusal a user can make
//! (no key, a wrong admin token, unknown fields, both payload forms, a bad
//! state or id) answered in the JSON error shape, on the ingress (`/v1`)
//! and the admin port (`/api`); and a job submitted, read, its log read
//! and followed, its result fetched; the dashboard's Jobs section in
//! headless Chromium: its table and live log, a template saved and run
//! from its forms, and the Cancel / Restart / Delete buttons.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::browser::Browser;
use crate::common::{ADMIN, Fleet, TOKEN, service};
use crate::ingress::{Curl, curl};

/// Two tenants, `team-a` (key `sk-a`) and `team-b` (key `sk-b`).
fn two_tenants(config: &mut gateway::GatewayConfig) {
    config.tenants = ["a", "b"]
        .map(|t| gateway::config::TenantConfig {
            api_keys: vec![format!("sk-{t}")],
            ..gateway::config::TenantConfig::new(format!("team-{t}"))
        })
        .to_vec();
}

/// curl on a blocking thread.
async fn run(args: Vec<String>, body: Option<String>) -> Curl {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args, body.as_deref())
    })
    .await
    .expect("curl thread")
}

/// The error body's `(message, type)`, checking its shape.
fn job_error(got: &Curl) -> (String, String) {
    let body: Value = serde_json::from_str(&got.body)
        .unwrap_or_else(|e| panic!("error body {:?} is not JSON: {e}", got.body));
    (
        body["error"]["message"]
            .as_str()
            .expect("message")
            .to_string(),
        body["error"]["type"].as_str().expect("type").to_string(),
    )
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn job_routes_refuse_bad_callers_and_bad_requests_in_json() {
    let fleet = Fleet::start(two_tenants).await;
    let ingress = format!("{}/v1", fleet.gateway.http_url().expect("ingress"));
    let admin = format!(
        "http://{}/api",
        fleet.gateway.admin_addr().expect("admin port")
    );
    for base in [&ingress, &admin] {
        let jobs = format!("{base}/jobs");
        let no_key = run(args(&[&jobs]), None).await;
        assert_eq!(no_key.status, 401, "{no_key:?}");
        assert_eq!(job_error(&no_key).1, "authentication_error");
        let wrong_key = run(args(&["-H", "authorization: Bearer sk-nope", &jobs]), None).await;
        assert_eq!(wrong_key.status, 401, "{wrong_key:?}");
        let wrong_admin = run(args(&["-H", "x-switchyard-admin-token: nope", &jobs]), None).await;
        assert_eq!(wrong_admin.status, 401, "{wrong_admin:?}");

        let key = "authorization: Bearer sk-a";
        let admin_header = format!("x-switchyard-admin-token: {ADMIN}");
        for (who, body, needle) in [
            (key, r#"{"service": "echo", "colour": "red"}"#, "colour"),
            (
                key,
                r#"{"service": "echo", "payload": "a", "payload_base64": "YQ=="}"#,
                "not both",
            ),
            (admin_header.as_str(), r#"{"payload": "a"}"#, "either"),
            (admin_header.as_str(), "not json", "bad job body"),
        ] {
            let got = run(args(&["-X", "POST", "-H", who, &jobs]), Some(body.into())).await;
            assert_eq!(got.status, 400, "{body}: {got:?}");
            let (message, kind) = job_error(&got);
            assert!(message.contains(needle), "{body}: {message}");
            assert_eq!(kind, "invalid_request_error");
        }
        let bad_state = run(args(&["-H", key, &format!("{jobs}?state=done")]), None).await;
        assert_eq!(bad_state.status, 400, "{bad_state:?}");
        let bad_id = run(args(&["-H", key, &format!("{jobs}/no.such")]), None).await;
        assert_eq!(bad_id.status, 400, "{bad_id:?}");
        let bad_follow = run(
            args(&["-H", key, &format!("{jobs}/j1/log?follow=maybe")]),
            None,
        )
        .await;
        assert_eq!(bad_follow.status, 400, "{bad_follow:?}");
        let template = run(
            args(&["-X", "POST", "-H", key, &format!("{base}/templates")]),
            Some(r#"{"name": "t", "service": "s", "extra": 1}"#.into()),
        )
        .await;
        assert_eq!(template.status, 400, "{template:?}");
    }
}

/// A command that logs to stderr as it works and answers its input.
const WORKER: &str =
    r#"command = ["sh", "-c", "echo starting >&2; sleep 0.3; echo halfway >&2; cat"]"#;

#[tokio::test]
async fn a_job_is_submitted_read_logged_and_its_result_fetched_with_curl() {
    let mut fleet = Fleet::start(two_tenants).await;
    fleet.spawn_agent("node-a", TOKEN, &service("worker", "command", WORKER));
    fleet.wait_nodes(1).await;
    let jobs = format!("{}/v1/jobs", fleet.gateway.http_url().expect("ingress"));
    let key = "authorization: Bearer sk-a";

    let submitted = run(
        args(&["-X", "POST", "-H", key, &jobs]),
        Some(r#"{"service": "worker", "payload": "the answer", "labels": {"run": "1"}}"#.into()),
    )
    .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let job: Value = serde_json::from_str(&submitted.body).expect("a job");
    let id = job["id"].as_str().expect("an id").to_string();
    assert_eq!(job["service"], "worker");
    assert_eq!(job["tenant"], "team-a");
    let url = format!("{jobs}/{id}");

    // Followed live: a `data:` event per line, then `event: end`.
    let follow = run(args(&["-H", key, &format!("{url}/log?follow=1")]), None).await;
    assert_eq!(follow.status, 200, "{follow:?}");
    assert!(follow.body.contains("starting"), "{}", follow.body);
    assert!(follow.body.contains("event: end"), "{}", follow.body);

    let start = Instant::now();
    let done = loop {
        let got = run(args(&["-H", key, &url]), None).await;
        assert_eq!(got.status, 200, "{got:?}");
        let job: Value = serde_json::from_str(&got.body).expect("a job");
        if job["state"] != "waiting" && job["state"] != "running" {
            break job;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never ended: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["node"], "node-a", "{done}");

    let log = run(args(&["-H", key, &format!("{url}/log?after=0")]), None).await;
    assert_eq!(log.status, 200, "{log:?}");
    let lines: Value = serde_json::from_str(&log.body).expect("lines");
    let text: Vec<&str> = lines["lines"]
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|l| l["line"].as_str())
        .collect();
    assert!(
        text.contains(&"starting") && text.contains(&"halfway"),
        "{text:?}"
    );

    let result = run(args(&["-H", key, &format!("{url}/result")]), None).await;
    assert_eq!(result.status, 200, "{result:?}");
    assert_eq!(result.body, "the answer");

    // Another tenant sees no such job; the admin sees it in the list.
    let other = run(args(&["-H", "authorization: Bearer sk-b", &url]), None).await;
    assert_eq!(other.status, 404, "{other:?}");
    let listed = run(
        args(&[
            "-H",
            &format!("authorization: Bearer {ADMIN}"),
            &format!("{jobs}?service=worker"),
        ]),
        None,
    )
    .await;
    let page: Value = serde_json::from_str(&listed.body).expect("a page");
    assert!(
        page["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .any(|j| j["id"] == id.as_str()),
        "{page}"
    );

    let deleted = run(args(&["-X", "DELETE", "-H", key, &url]), None).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let gone = run(args(&["-H", key, &url]), None).await;
    assert_eq!(gone.status, 404, "{gone:?}");
}

/// Opens the dashboard with `token` in the page's token field (stored as
/// the page stores it).
async fn dashboard_with_token(fleet: &Fleet, token: &str) -> Browser {
    let browser = Browser::start().await;
    let page = format!(
        "http://{}/",
        fleet.gateway.admin_addr().expect("admin port")
    );
    browser.open(&page).await;
    browser
        .eval(&format!(
            "localStorage.setItem('switchyard-admin-token', {token:?}); return true"
        ))
        .await;
    browser.open(&page).await;
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_jobs_section_sends_the_token_field_as_the_bearer() {
    let fleet = Fleet::start(two_tenants).await;
    let browser = dashboard_with_token(&fleet, "sk-nope").await;
    browser
        .wait_for(
            "the jobs table with its filters",
            "return !!document.querySelector('#jobs-section #jobs thead') && document.querySelectorAll('#jobs-state option').length === 8",
        )
        .await;
    browser
        .wait_for(
            "the refusal of a wrong key",
            "return document.querySelector('#jobs-error').textContent.includes('Authorization: Bearer')",
        )
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_job_row_and_tails_its_log() {
    let mut fleet = Fleet::start(two_tenants).await;
    let slow = r#"command = ["sh", "-c", "echo starting >&2; sleep 2; echo finishing >&2; cat"]"#;
    fleet.spawn_agent("node-a", TOKEN, &service("slow", "command", slow));
    fleet.wait_nodes(1).await;
    let jobs = format!("{}/v1/jobs", fleet.gateway.http_url().expect("ingress"));
    let submitted = run(
        args(&["-X", "POST", "-H", "authorization: Bearer sk-a", &jobs]),
        Some(r#"{"service": "slow", "payload": "done"}"#.into()),
    )
    .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let job: Value = serde_json::from_str(&submitted.body).expect("a job");
    let id = job["id"].as_str().expect("an id").to_string();

    let browser = dashboard_with_token(&fleet, ADMIN).await;
    let row = format!("#jobs tr[data-id=\"{id}\"]");
    browser
        .wait_for(
            "the job's row",
            &format!("return !!document.querySelector('{row}')"),
        )
        .await;
    browser
        .eval(&format!(
            "document.querySelector('{row}').click(); return true"
        ))
        .await;
    browser
        .wait_for(
            "the live log's first line",
            "return document.querySelector('#job-log').textContent.includes('starting')",
        )
        .await;
    browser
        .wait_for(
            "the log's end and the job succeeded",
            &format!(
                "return document.querySelector('#job-log').textContent.includes('job ended') && document.querySelector('{row}').classList.contains('state-succeeded')"
            ),
        )
        .await;
    browser.close().await;
}

/// Sets the value of the form field `sel` (as typing would).
fn fill(sel: &str, value: &str) -> String {
    format!("document.querySelector('{sel}').value = {value:?};")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_saves_a_template_runs_it_and_cancels_restarts_and_deletes_the_job() {
    let mut fleet = Fleet::start(two_tenants).await;
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &service("sh", "command", "command = [\"sh\"]\nmax_concurrent = 1"),
    );
    fleet.wait_nodes(1).await;
    let browser = dashboard_with_token(&fleet, ADMIN).await;

    // A template saved through the form appears in the templates table.
    let save = [
        "document.querySelector('#templates-section').open = true;".to_string(),
        fill("#template-name", "greet"),
        fill("#template-service", "sh"),
        fill("#template-payload", "echo hello {who}; sleep 30"),
        fill("#template-defaults", "who=world"),
        fill("#template-description", "says hello, then waits"),
        "document.querySelector('#template-save').click(); return true".to_string(),
    ]
    .concat();
    browser.eval(&save).await;
    browser
        .wait_for(
            "the saved template's row",
            "const tr = document.querySelector('#templates tr[data-name=\"greet\"]'); return !!tr && tr.textContent.includes('who=world') && tr.textContent.includes('api')",
        )
        .await;

    // Clicking it picks it in the job form; submitted with a parameter, the
    // new job opens with its log tailing live.
    let submit = [
        "document.querySelector('#templates tr[data-name=\"greet\"]').click();".to_string(),
        fill("#job-new-params", "who=dashboard"),
        "document.querySelector('#job-new-submit').click(); return true".to_string(),
    ]
    .concat();
    browser.eval(&submit).await;
    browser
        .wait_for(
            "the job's live log",
            "return document.querySelector('#job-log').textContent.includes('hello dashboard')",
        )
        .await;
    browser
        .wait_for(
            "the node card counting the running job",
            "const m = document.querySelector('.node[data-node=\"node-a\"] [data-jobs]'); return !!m && m.dataset.jobs === '1' && m.textContent.includes('1 job running')",
        )
        .await;
    let id = browser
        .eval("return document.querySelector('#job-title').textContent.split(' ')[0]")
        .await;
    let id = id.as_str().expect("the job's id").to_string();
    let row = format!("#jobs tr[data-id=\"{id}\"]");

    // Cancel, Restart and Delete, each seen in the table.
    let state = |state: &str| {
        format!(
            "const tr = document.querySelector('{row}'); return !!tr && tr.classList.contains('state-{state}')"
        )
    };
    browser
        .eval("document.querySelector('#job-cancel').click(); return true")
        .await;
    browser
        .wait_for("the job cancelled", &state("cancelled"))
        .await;
    browser
        .eval("document.querySelector('#job-restart').click(); return true")
        .await;
    browser
        .wait_for("the job running again", &state("running"))
        .await;
    browser
        .wait_for(
            "the second attempt's log",
            "return (document.querySelector('#job-log').textContent.match(/hello dashboard/g) || []).length >= 2",
        )
        .await;
    browser
        .eval("document.querySelector('#job-delete').click(); return true")
        .await;
    browser
        .wait_for(
            "the job gone from the table",
            &format!("return !document.querySelector('{row}') && document.querySelector('#job-detail').hidden"),
        )
        .await;

    // Settings: the most jobs a node runs, changed through the form.
    browser
        .wait_for(
            "the settings shown",
            "return document.querySelector('#job-settings-now').textContent === 'now no limit'",
        )
        .await;
    let limit = [
        "document.querySelector('#job-settings-section').open = true;".to_string(),
        fill("#job-settings-max", "2"),
        "document.querySelector('#job-settings-save').click(); return true".to_string(),
    ]
    .concat();
    browser.eval(&limit).await;
    browser
        .wait_for(
            "the new limit shown",
            "return document.querySelector('#job-settings-now').textContent === 'now 2 a node'",
        )
        .await;
    browser.close().await;
    let admin = fleet.gateway.admin_addr().expect("admin port");
    let settings = run(
        args(&[
            "-H",
            &format!("authorization: Bearer {ADMIN}"),
            &format!("http://{admin}/api/job-settings"),
        ]),
        None,
    )
    .await;
    assert_eq!(settings.status, 200, "{settings:?}");
    let settings: Value = serde_json::from_str(&settings.body).expect("settings are JSON");
    assert_eq!(settings, serde_json::json!({ "max_per_node": 2 }));
    let url = format!(
        "http://{}/api/jobs/{id}",
        fleet.gateway.admin_addr().expect("admin port")
    );
    let gone = run(
        args(&["-H", &format!("authorization: Bearer {ADMIN}"), &url]),
        None,
    )
    .await;
    assert_eq!(gone.status, 404, "{gone:?}");
}
