//! Which addresses a cluster client calls, from a member list and its
//! bootstrap list. The lists asked of real gateways are tested end to end
//! in `e2e/tests/e2e/cluster_clients.rs`.

use protocol::Member;

use super::*;

fn list(revision: u64, quic: &[&str]) -> MemberList {
    MemberList {
        revision,
        members: quic
            .iter()
            .enumerate()
            .map(|(i, q)| Member {
                name: format!("gw-{i}"),
                quic: (*q).to_string(),
                http: String::new(),
            })
            .collect(),
    }
}

fn strings(addresses: &[&str]) -> Vec<String> {
    addresses.iter().map(|a| (*a).to_string()).collect()
}

#[test]
fn a_cluster_list_replaces_the_bootstrap_list() {
    let bootstrap = strings(&["10.0.0.1:4433"]);
    let members = list(7, &["10.0.0.1:4433", "10.0.0.2:4433", "gw-c.internal:4433"]);
    assert_eq!(
        addresses(Some(&members), &bootstrap),
        ["10.0.0.1:4433", "10.0.0.2:4433", "gw-c.internal:4433"]
    );
}

#[test]
fn a_gateway_alone_or_silent_leaves_the_bootstrap_list() {
    let bootstrap = strings(&["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"]);
    // No cluster: each names itself alone.
    assert_eq!(
        addresses(Some(&list(1, &["127.0.0.1:5002"])), &bootstrap),
        bootstrap
    );
    // An older gateway: no list.
    assert_eq!(addresses(None, &bootstrap), bootstrap);
    // The last member of a cluster whose bootstrap gateways died is kept.
    assert_eq!(
        addresses(Some(&list(9, &["127.0.0.1:5009"])), &bootstrap[..1]),
        ["127.0.0.1:5001", "127.0.0.1:5009"]
    );
}

#[test]
fn wildcard_and_port_zero_members_are_not_dialled() {
    let bootstrap = strings(&["a:1", "b:2"]);
    for unusable in [
        "0.0.0.0:4433",
        "[::]:4433",
        "127.0.0.1:0",
        "no-port",
        ":4433",
        "h:x",
    ] {
        assert!(!dialable(unusable), "{unusable}");
    }
    assert!(dialable("[::1]:4433"));
    assert!(dialable("gw.example:4433"));
    // Two members, one usable: not a list to spread over.
    let members = list(3, &["0.0.0.0:4433", "10.0.0.2:4433"]);
    assert_eq!(
        addresses(Some(&members), &bootstrap),
        ["a:1", "b:2", "10.0.0.2:4433"]
    );
}

#[test]
fn duplicates_are_dropped_in_order() {
    let bootstrap = strings(&["a:1", "b:2", "a:1"]);
    assert_eq!(addresses(None, &bootstrap), ["a:1", "b:2"]);
    let members = list(2, &["c:3", "c:3", "d:4"]);
    assert_eq!(addresses(Some(&members), &bootstrap), ["c:3", "d:4"]);
}
