//! The `switchyard` program (run as this package's `switchyard-e2e-cli`,
//! the same `main`) against a real gateway and agent: what it prints, and
//! how the three programs word their errors (each cause once, and how to
//! fix a missing CA).

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

use crate::common::{Fleet, TOKEN, service};

const CLI: &str = env!("CARGO_BIN_EXE_switchyard-e2e-cli");
const GATEWAY: &str = env!("CARGO_BIN_EXE_switchyard-e2e-gateway");
const AGENT: &str = env!("CARGO_BIN_EXE_switchyard-e2e-agent");

/// Runs `program` with `args`; stdout and stderr are pipes (not a
/// terminal).
async fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("SWITCHYARD_CA")
        .env_remove("SWITCHYARD_GATEWAY")
        .env_remove("SWITCHYARD_API_KEY")
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the program runs")
}

/// Runs the CLI against `fleet`'s gateway.
async fn cli(fleet: &Fleet, args: &[&str]) -> Output {
    let ca = fleet.ca();
    let mut all = vec![
        "--gateway",
        fleet.addr.as_str(),
        "--ca",
        ca.to_str().expect("utf8 path"),
    ];
    all.extend_from_slice(args);
    run(CLI, &all).await
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf8")
}

/// The one error line of a program that failed.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"))
        .to_string();
    said_once(&line);
    line
}

/// No part of an error line's chain (`a: b: c`) comes twice.
fn said_once(line: &str) {
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(part), "{part:?} repeats in {line}");
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm`.
fn is_date_time(date: &str, time: &str) -> bool {
    let digits = |s: &str, shape: &str| {
        s.len() == shape.len()
            && s.chars()
                .zip(shape.chars())
                .all(|(c, f)| if f == '9' { c.is_ascii_digit() } else { c == f })
    };
    digits(date, "9999-99-99") && digits(time, "99:99:99.999")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_readable_output() {
    // The real policies, and a text file named like one.
    let plugins = tempfile::tempdir().expect("tempdir");
    let dir = crate::common::plugin_copies(plugins.path(), &["round-robin"]);
    std::fs::write(dir.join("notes.wasm"), "use least-request for llama\n").expect("write");
    let mut fleet = Fleet::start(|c| c.plugins_dir = dir).await;
    fleet.spawn_agent_with(
        "node-a",
        TOKEN,
        "labels = { tier = \"premium\", gpu = \"a100\" }",
        &(service("echo", "echo", "") + &service("sleep", "sleep", "")),
    );
    fleet.wait_nodes(1).await;

    // Labels as an object.
    let nodes: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&fleet, &["nodes", "--json"]).await)).expect("json");
    assert_eq!(
        nodes[0]["spec"]["labels"],
        serde_json::json!({"tier": "premium", "gpu": "a100"})
    );

    // Load times as dates.
    let policies = stdout(&cli(&fleet, &["policies"]).await);
    assert!(policies.contains("LOADED (UTC)"), "{policies}");
    let row: Vec<&str> = policies
        .lines()
        .find(|l| l.starts_with("round-robin "))
        .unwrap_or_else(|| panic!("no round-robin row: {policies}"))
        .split_whitespace()
        .collect();
    assert!(is_date_time(row[4], row[5]), "{policies}");
    let rejected = policies
        .lines()
        .find(|l| l.starts_with("rejected "))
        .unwrap_or_else(|| panic!("no rejected file: {policies}"));
    assert!(
        rejected.contains("notes.wasm at ")
            && rejected.contains("(UTC): failed to compile policy ")
            && rejected.ends_with("notes.wasm: not a WebAssembly component: the file starts with neither the WebAssembly header (\\0asm) nor WAT text"),
        "{rejected}"
    );

    // A cancelled job has no result, and says so once.
    let id = stdout(&cli(&fleet, &["job", "submit", "sleep", "--payload", "60000"]).await)
        .trim()
        .to_string();
    stdout(&cli(&fleet, &["job", "cancel", &id]).await);
    let error = error_line(&cli(&fleet, &["job", "result", &id]).await);
    assert_eq!(
        error,
        format!("error: job {id} was cancelled: it has no result")
    );

    // Restarted past max_attempts (1 by default): attempt 2 reads as such.
    stdout(&cli(&fleet, &["job", "restart", &id]).await);
    let mut shown = String::new();
    for _ in 0..100 {
        shown = stdout(&cli(&fleet, &["job", "show", &id]).await);
        if shown.contains("state:     running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown.contains("attempt:   2 (max 1, restarted)"), "{shown}");
    assert!(
        shown.contains("attempt 2, restarted past max_attempts 1"),
        "{shown}"
    );
    let list = stdout(&cli(&fleet, &["job", "list"]).await);
    assert!(list.contains(" 2+ ") && !list.contains("2/1"), "{list}");
    stdout(&cli(&fleet, &["job", "cancel", &id]).await);

    // An empty job id never reaches the gateway.
    let error = error_line(&cli(&fleet, &["job", "show", ""]).await);
    assert!(error.contains("a job id must not be empty"), "{error}");

    // Bench progress off a terminal: lines, no carriage returns.
    let out = cli(
        &fleet,
        &["bench", "echo", "--duration-s", "1.5", "--warm-up-s", "0"],
    )
    .await;
    let report = stdout(&out);
    assert!(report.contains("calls/s"), "{report}");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(!progress.contains('\r'), "{progress:?}");
    assert!(
        progress
            .lines()
            .any(|l| l.contains(" calls ") && l.contains("/s")),
        "{progress}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_each_cause_once_and_how_to_fix_a_missing_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("ca.pem");
    let missing = missing.to_str().expect("utf8");

    // The CLI without its CA: how to point at one.
    let error = error_line(&run(CLI, &["--ca", missing, "nodes"]).await);
    assert!(
        error.contains(missing) && error.contains("--ca FILE or SWITCHYARD_CA"),
        "{error}"
    );

    // The CLI with a gateway that is down.
    let fleet = Fleet::start(|_| {}).await;
    let ca = fleet.ca();
    let down = switchyard_testkit::unassigned_port()
        .expect("a free port")
        .to_string();
    let error = error_line(
        &run(
            CLI,
            &[
                "--gateway",
                &format!("127.0.0.1:{down}"),
                "--ca",
                ca.to_str().expect("utf8"),
                "nodes",
            ],
        )
        .await,
    );
    assert!(
        error.starts_with("error: cannot connect to the gateway"),
        "{error}"
    );

    // The CLI with a file that is no CA.
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").expect("write");
    let error = error_line(
        &run(
            CLI,
            &[
                "--gateway",
                &fleet.addr,
                "--ca",
                bogus.to_str().expect("utf8"),
                "nodes",
            ],
        )
        .await,
    );
    assert!(error.contains("bogus.pem"), "{error}");

    // The gateway with a missing or bad config, and an unusable data folder.
    let error = error_line(&run(GATEWAY, &["--config", missing]).await);
    assert!(error.starts_with("error: cannot read "), "{error}");
    let config = dir.path().join("gateway.toml");
    let config_arg = config.to_str().expect("utf8");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nbogus = 1\n").expect("write");
    let out = run(GATEWAY, &["--config", config_arg]).await;
    let error = error_line(&out);
    assert!(error.contains("line 2"), "{error}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("unknown field `bogus`").count(),
        1,
        "{stderr}"
    );
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nadmin_enabled = false\n\
         data_dir = \"/proc/switchyard-none/data\"\n[http]\nenabled = false\n",
    )
    .expect("write");
    let error = error_line(&run(GATEWAY, &["--config", config_arg]).await);
    assert!(error.contains("/proc/switchyard-none"), "{error}");

    // The agent with a missing CA: the file and the OS's reason, once.
    let agent = dir.path().join("agent.toml");
    std::fs::write(
        &agent,
        format!(
            "gateway = \"127.0.0.1:{down}\"\nca = {missing:?}\ntoken = \"t\"\nnode_id = \"n\"\n\
             [[services]]\nname = \"echo\"\nkind = \"echo\"\n"
        ),
    )
    .expect("write");
    let error = error_line(&run(AGENT, &["--config", agent.to_str().expect("utf8")]).await);
    assert!(
        error.starts_with("error: tls setup failed") && error.contains(missing),
        "{error}"
    );
}

#[tokio::test]
async fn the_gateways_printed_example_config_is_valid() {
    let out = run(GATEWAY, &["--print-example-config"]).await;
    let text = stdout(&out);
    let config = gateway::GatewayConfig::from_toml_str(&text).expect("example parses");
    assert_eq!(config.listen, gateway::GatewayConfig::default().listen);
    // The agent's example names the files a gateway writes.
    let agent = stdout(&run(AGENT, &["--print-example-config"]).await);
    assert!(
        agent.contains("ca = \"~/.local/share/switchyard/ca.pem\"")
            && agent.contains("token_file = \"~/.local/share/switchyard/agent-token\""),
        "{agent}"
    );
}

/// The gateway program at `program`, run in `cwd` on a loopback config
/// with its data in `cwd/data`, until its banner's `policies:` line: the
/// banner's lines and what it logged meanwhile.
async fn banner(program: &std::path::Path, cwd: &std::path::Path) -> (Vec<String>, String) {
    use tokio::io::AsyncBufReadExt as _;
    std::fs::write(
        cwd.join("gateway.toml"),
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    let mut child = Command::new(program)
        .args(["--config", "gateway.toml"])
        .current_dir(cwd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the gateway starts");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut lines = Vec::new();
    let read = async {
        while let Some(line) = out.next_line().await.expect("read") {
            let last = line.starts_with("policies:");
            lines.push(line);
            if last {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the banner within 60 s");
    child.start_kill().expect("kill");
    let output = child.wait_with_output().await.expect("wait");
    (lines, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_outside_the_repository_finds_policies_beside_its_program() {
    // An installed layout: bin/gateway and bin/plugins/, run elsewhere.
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let bin = root.path().join("bin");
    let work = root.path().join("work");
    std::fs::create_dir_all(bin.join("plugins")).expect("mkdir");
    std::fs::create_dir_all(&work).expect("mkdir");
    let program = bin.join("gateway");
    if std::fs::hard_link(GATEWAY, &program).is_err() {
        std::fs::copy(GATEWAY, &program).expect("copy the gateway");
    }
    std::fs::copy(
        crate::common::built_plugin("round-robin"),
        bin.join("plugins/round-robin.wasm"),
    )
    .expect("copy a plugin");

    let (lines, _) = banner(&program, &work).await;
    assert!(
        lines.contains(&"agent token file (agents' token_file): data/agent-token".to_string()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("admin token file (") && l.ends_with("): data/admin-token")),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("policies: round-robin")
    );

    // None anywhere: the banner and the log say where it looked.
    std::fs::remove_dir_all(bin.join("plugins")).expect("rm");
    let (lines, log) = banner(&program, &work).await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some(
            "policies: none in plugins/dist (picks use the built-in round-robin; set plugins_dir)"
        )
    );
    let looked = format!(
        "no policy plugin (*.wasm) in plugins/dist, {}, ",
        bin.join("plugins").display()
    );
    assert!(log.contains(&looked), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_leases_a_node_and_calls_look_aside() {
    let mut fleet = Fleet::start(|_| {}).await;
    let port = fleet.spawn_direct_agent("node-a", &service("echo", "echo", "max_concurrent = 1"));
    fleet.wait_nodes(1).await;

    // The grant as JSON: the node, its direct port, a token.
    let out = cli(&fleet, &["lease", "echo", "--json", "--ttl-ms", "60000"]).await;
    let grant: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(grant["node_id"], "node-a", "{grant}");
    assert_eq!(grant["direct"], port.to_string(), "{grant}");
    assert_eq!(grant["max_calls"], 1, "{grant}");
    assert!(
        grant["token"].as_str().is_some_and(|t| t.contains('.')),
        "{grant}"
    );
    // The lease holds the node's only slot: a realtime call finds it taken.
    let error = error_line(&cli(&fleet, &["call", "echo", "--data", "x", "--realtime"]).await);
    assert!(error.contains("occupied"), "{error}");

    // Another lease waits in the queue for that slot (positions on
    // stderr) until the first lease expires... which a short wait does
    // not reach: it gives up with the gateway's timeout.
    let out = cli(&fleet, &["lease", "echo", "--timeout-ms", "300"]).await;
    let error = error_line(&out);
    assert!(error.contains("timeout"), "{error}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("queued: position 1"), "{stderr}");

    // A node of another service: the grant as a table, then a look-aside
    // call served by the node directly.
    let port_b = fleet.spawn_direct_agent("node-b", &service("upper", "echo", ""));
    fleet.wait_nodes(2).await;
    let table = stdout(
        &cli(
            &fleet,
            &["lease", "upper", "--max-calls", "3", "--idle-ms", "500"],
        )
        .await,
    );
    let field = |key: &str| {
        table
            .lines()
            .find_map(|l| l.strip_prefix(key).map(str::trim))
            .unwrap_or_else(|| panic!("no {key} in {table}"))
            .to_string()
    };
    assert_eq!(field("node "), "node-b");
    assert_eq!(field("direct "), port_b.to_string());
    assert_eq!(field("max calls "), "3");
    assert_eq!(field("idle "), "500 ms");
    let expires: Vec<String> = field("expires ")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(is_date_time(&expires[0], &expires[1]), "{table}");

    let out = cli(
        &fleet,
        &["call", "upper", "--data", "hello", "--look-aside", "-v"],
    )
    .await;
    assert_eq!(stdout(&out), "hello");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node=node-b"), "{stderr}");
}
