use std::path::Path;

use super::*;
use crate::config::ServiceKind;
use crate::config::{AgentConfig, EXAMPLE_CONFIG};

const HEAD: &str =
    "gateway = \"127.0.0.1:4433\"\nca = \"ca.pem\"\ntoken = \"t\"\nnode_id = \"n1\"\n";

/// A swappable `http` service on `port` with `swap` as its swap table's
/// body.
fn swappable(name: &str, swap: &str) -> String {
    format!(
        "\n[[services]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\n[services.swap]\n{swap}\n"
    )
}

fn probe_url(name: &str) -> String {
    format!(
        "start = [\"server\", \"--name\", \"{name}\"]\nready_url = \"http://127.0.0.1:1/health\""
    )
}

fn parse(body: &str) -> Result<AgentConfig, String> {
    AgentConfig::from_toml_str(&format!("{HEAD}{body}")).map_err(|e| e.to_string())
}

fn invalid(body: &str) -> String {
    match parse(body) {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(e) => e,
    }
}

/// The example config with its commented swap example turned on.
fn example_uncommented() -> String {
    let start = EXAMPLE_CONFIG
        .find("# [[services]]\n# name = \"llama\"")
        .expect("the example has a swap section");
    let (head, tail) = EXAMPLE_CONFIG.split_at(start);
    let tail: Vec<&str> = tail
        .lines()
        .filter(|l| !l.starts_with("# #"))
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .collect();
    format!("{head}{}\n", tail.join("\n"))
}

#[test]
fn the_example_swap_section_parses_when_uncommented() {
    let config = AgentConfig::from_toml_str(&example_uncommented()).expect("example parses");
    assert_eq!(config.services.len(), 7);
    let llama = &config.services[5];
    assert_eq!(llama.name, "llama");
    assert!(matches!(llama.kind, ServiceKind::Http(_)));
    let swap = llama.swap.as_ref().expect("llama is swappable");
    assert_eq!(swap.start[0], "switchyard-toy-model");
    assert_eq!(swap.stop.as_deref(), Some(&["true".to_string()][..]));
    assert_eq!(
        swap.ready,
        ReadyProbe::Url("http://127.0.0.1:18001/health".into())
    );
    assert_eq!(swap.ready_timeout_s, 120);
    assert_eq!(swap.load_ms, 3000);
    assert_eq!(swap.env.get("MODEL").map(String::as_str), Some("llama"));
    let mistral = config.services[6].swap.as_ref().expect("mistral");
    assert!(matches!(&mistral.ready, ReadyProbe::Command(argv) if argv[0] == "curl"));
    assert_eq!(
        config.slots,
        [SlotConfig::new("gpu0", ["llama", "mistral"]).with_loaded("llama")]
    );
    // Commented out, it changes nothing.
    let plain = AgentConfig::from_toml_str(EXAMPLE_CONFIG).expect("example parses");
    assert!(plain.slots.is_empty());
}

#[test]
fn defaults_and_builders_agree() {
    let text = format!(
        "{}\n[[slots]]\nname = \"gpu0\"\ncan_host = [\"a\"]\n",
        swappable("a", &probe_url("a"))
    );
    let config = parse(&text).expect("parse");
    let swap = SwapConfig::new(
        ["server", "--name", "a"],
        ReadyProbe::Url("http://127.0.0.1:1/health".into()),
    );
    assert_eq!(config.services[0].swap.as_ref(), Some(&swap));
    assert_eq!(swap.ready_timeout_s, DEFAULT_READY_TIMEOUT_S);
    assert_eq!(swap.load_ms, DEFAULT_LOAD_MS);
    assert_eq!(swap.stop, None);
    assert_eq!(config.slots, [SlotConfig::new("gpu0", ["a"])]);
    let built = AgentConfig {
        slots: vec![SlotConfig::new("gpu0", ["a"])],
        ..AgentConfig::new(
            "127.0.0.1:4433",
            "ca.pem",
            "t",
            "n1",
            vec![ServiceConfig::new("a", ServiceKind::http("http://127.0.0.1:1/")).with_swap(swap)],
        )
    };
    assert_eq!(config, built);
}

#[test]
fn swap_table_parse_errors() {
    let slot = "\n[[slots]]\nname = \"s\"\ncan_host = [\"a\"]\n";
    let cases = [
        (
            "start = [\"x\"]\nready_url = \"http://a/\"\nready_command = [\"true\"]",
            "not both",
        ),
        ("start = [\"x\"]", "needs ready_url"),
        ("ready_url = \"http://a/\"", "start"),
        (
            "start = [\"x\"]\nready_url = \"http://a/\"\nbogus = 1",
            "bogus",
        ),
        ("start = \"x\"\nready_url = \"http://a/\"", "invalid type"),
    ];
    for (swap, expected) in cases {
        let err = invalid(&format!("{}{slot}", swappable("a", swap)));
        assert!(err.contains(expected), "{swap:?}: {err}");
        assert!(err.starts_with("invalid config at line"), "{err}");
    }
    let err = invalid(&format!(
        "{}{slot}loaded = \"a\"\nbogus = 1\n",
        swappable("a", &probe_url("a"))
    ));
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn swap_and_slot_validation_rules() {
    let slot =
        |name: &str, hosts: &str| format!("\n[[slots]]\nname = \"{name}\"\ncan_host = [{hosts}]\n");
    let a = swappable("a", &probe_url("a"));
    let b = swappable("b", &probe_url("b"));
    let echo = "\n[[services]]\nname = \"echo\"\nkind = \"echo\"\n";
    let bad_swap = |swap: &str| format!("{}{}", swappable("a", swap), slot("s", "\"a\""));
    let cases = [
        (
            bad_swap("start = []\nready_url = \"http://a/\""),
            "swap.start must name a program",
        ),
        (
            bad_swap("start = [\"\"]\nready_url = \"http://a/\""),
            "swap.start must name a program",
        ),
        (
            bad_swap("start = [\"x\"]\nstop = []\nready_url = \"http://a/\""),
            "swap.stop",
        ),
        (
            bad_swap("start = [\"x\"]\nready_command = []"),
            "swap.ready_command must name a program",
        ),
        (
            bad_swap("start = [\"x\"]\nready_url = \"https://a/\""),
            "https is not supported",
        ),
        (
            bad_swap("start = [\"x\"]\nready_url = \"nonsense\""),
            "swap.ready_url",
        ),
        (
            bad_swap("start = [\"x\"]\nready_url = \"http://a/\"\nready_timeout_s = 0"),
            "ready_timeout_s must be 1..=",
        ),
        (
            bad_swap("start = [\"x\"]\nready_url = \"http://a/\"\nready_timeout_s = 100000"),
            "ready_timeout_s must be 1..=",
        ),
        (
            bad_swap("start = [\"x\"]\nready_url = \"http://a/\"\nenv = { \"A=B\" = \"1\" }"),
            "swap.env",
        ),
        (
            a.clone(),
            "service a has a [services.swap] table but is in no [[slots]]",
        ),
        (
            format!(
                "{a}{b}{}{}",
                slot("s0", "\"a\", \"b\""),
                slot("s1", "\"b\"")
            ),
            "service b is in two slots: s0 and s1",
        ),
        (
            format!("{a}{}", slot("s", "\"a\", \"a\"")),
            "slot s lists a twice",
        ),
        (
            format!("{a}{}", slot("s", "\"a\", \"zz\"")),
            "slot s can host \"zz\", which is not a [[services]] entry",
        ),
        (
            format!("{a}{echo}{}", slot("s", "\"a\", \"echo\"")),
            "slot s can host echo, which has no [services.swap] table",
        ),
        (
            format!("{a}{}", slot("s", "")),
            "slot s: can_host must name a service",
        ),
        (
            format!("{a}{b}{}{}", slot("s", "\"a\""), slot("s", "\"b\"")),
            "slot s is listed twice",
        ),
        (
            format!("{a}{}loaded = \"b\"\n", slot("s", "\"a\"")),
            "slot s: loaded = \"b\" is not in its can_host",
        ),
        (
            format!("{a}{}", slot("g p u", "\"a\"")),
            "slot name \"g p u\" holds whitespace",
        ),
    ];
    for (text, expected) in cases {
        let err = invalid(&text);
        assert!(err.contains(expected), "expected {expected:?}, got: {err}");
    }
    // Two slots, each with its own services, one preloaded.
    let ok = format!(
        "{a}{b}{echo}{}{}loaded = \"b\"\n",
        slot("s0", "\"a\""),
        slot("s1", "\"b\"")
    );
    let config = parse(&ok).expect("valid");
    assert_eq!(config.slots[1].loaded.as_deref(), Some("b"));
}

#[test]
fn load_resolves_a_relative_swap_cwd_next_to_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    let text = format!(
        "{HEAD}{}cwd = \"models\"\n\n[[slots]]\nname = \"s\"\ncan_host = [\"a\"]\n",
        swappable("a", &probe_url("a"))
    );
    std::fs::write(&path, text).expect("write");
    let config = AgentConfig::load(&path).expect("load");
    let swap = config.services[0].swap.as_ref().expect("swap");
    assert_eq!(
        swap.cwd.as_deref(),
        Some(dir.path().join("models").as_path())
    );
    let absolute = format!(
        "{HEAD}{}cwd = \"/srv\"\n\n[[slots]]\nname = \"s\"\ncan_host = [\"a\"]\n",
        swappable("a", &probe_url("a"))
    );
    std::fs::write(&path, absolute).expect("write");
    let config = AgentConfig::load(&path).expect("load");
    let swap = config.services[0].swap.as_ref().expect("swap");
    assert_eq!(swap.cwd.as_deref(), Some(Path::new("/srv")));
}
