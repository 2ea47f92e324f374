//! The `node-agent` program's command line (run as this package's
//! `switchyard-e2e-agent`, the same `main`), and services through the public
//! API (the agent-against-gateway tests live in node-agent's session module
//! and in the rest of this suite).

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use node_agent::{AgentConfig, ServiceConfig, ServiceKind, Services};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard-e2e-agent"))
}

#[test]
fn the_printed_example_config_is_valid() {
    let out = agent()
        .arg("--print-example-config")
        .output()
        .expect("run node-agent");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let config = AgentConfig::from_toml_str(&text).expect("example parses");
    assert!(!config.services.is_empty());
}

#[test]
fn config_is_required() {
    let out = agent()
        .env_remove("SWITCHYARD_AGENT_CONFIG")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[test]
fn a_bad_config_exits_non_zero_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "gateway = \"127.0.0.1:4433\"\nbogus = true\n").expect("write");
    let out = agent().arg("--config").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: invalid config at line 2"),
        "{stderr}"
    );

    let out = agent()
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert!(stderr.starts_with("error: cannot read config"), "{stderr}");
}

#[test]
fn a_missing_ca_file_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    let config = format!(
        "gateway = \"127.0.0.1:9\"\nca = \"{}\"\ntoken = \"t\"\nnode_id = \"n\"\n[[services]]\nname = \"echo\"\nkind = \"echo\"\n",
        dir.path().join("ca.pem").display()
    );
    std::fs::write(&path, config).expect("write");
    let out = agent().arg("--config").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: tls setup failed"), "{stderr}");
}

#[tokio::test]
async fn services_through_the_public_api() {
    let services = Services::new(&[
        ServiceConfig::new("sha256", ServiceKind::command(["sha256sum"])),
        ServiceConfig::new("sum-up", ServiceKind::SumUp),
    ])
    .expect("services");
    let digest = services
        .call(
            "sha256",
            Bytes::from_static(b"abc"),
            Duration::from_secs(10),
        )
        .await
        .expect("sha256sum");
    assert!(
        digest.starts_with(b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    let sum = services
        .call(
            "sum-up",
            Bytes::from_static(b"1000000"),
            Duration::from_secs(10),
        )
        .await
        .expect("sum-up");
    assert_eq!(sum, Bytes::from_static(b"500000500000"));
}
