//! Which gateways the agent keeps a session with: the bootstrap addresses
//! (`gateway` and `gateways`) until a member list arrives, then the list's
//! members, replaced by every newer list (a higher revision) from any
//! gateway. Past `max_gateways` the agent keeps a stable subset, chosen by
//! rendezvous (highest-random-weight) hashing: each member weighs
//! SHA-256(node id, member name), and the heaviest ones are kept, so a
//! member that leaves moves only the agents that had it.

use protocol::{Member, MemberList};
use sha2::{Digest, Sha256};

/// One gateway the agent keeps a session with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Target {
    /// The member's name; empty for a bootstrap address.
    pub(crate) name: String,
    /// Where to dial it, `host:port`.
    pub(crate) addr: String,
}

impl Target {
    /// A bootstrap address, before any member list.
    pub(crate) fn bootstrap(addr: &str) -> Self {
        Self {
            name: String::new(),
            addr: addr.to_string(),
        }
    }

    /// A member of a member list.
    pub(crate) fn member(member: &Member) -> Self {
        Self {
            name: member.name.clone(),
            addr: member.quic.clone(),
        }
    }

    /// Whether this is a bootstrap address (no member name).
    pub(crate) fn is_bootstrap(&self) -> bool {
        self.name.is_empty()
    }
}

/// The rendezvous weight of gateway `member` for node `node`: the first 8
/// bytes of SHA-256 over the node id's length, the node id and the member
/// name.
pub(crate) fn weight(node: &str, member: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update((node.len() as u64).to_be_bytes());
    hash.update(node.as_bytes());
    hash.update(member.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The members node `node` registers with: every one when `max` is 0 or
/// at least their number, else the `max` of highest [`weight`] (ties by
/// name). Sorted by name.
pub(crate) fn choose<'a>(node: &str, members: &'a [Member], max: u32) -> Vec<&'a Member> {
    let mut chosen: Vec<&Member> = members.iter().collect();
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if max != 0 && chosen.len() > max {
        chosen.sort_by(|a, b| {
            weight(node, &b.name)
                .cmp(&weight(node, &a.name))
                .then_with(|| a.name.cmp(&b.name))
        });
        chosen.truncate(max);
    }
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    chosen.dedup_by(|a, b| a.name == b.name);
    chosen
}

/// The gateways the agent should have sessions with, and the member list
/// they came from.
#[derive(Debug)]
pub(crate) struct Targets {
    node: String,
    max: u32,
    bootstrap: Vec<Target>,
    /// Revision of the list the set came from; 0 on the bootstrap
    /// addresses.
    revision: u64,
    current: Vec<Target>,
}

impl Targets {
    /// Node `node`'s targets, on the bootstrap `addrs` (duplicates
    /// dropped), keeping at most `max` members (0: all).
    pub(crate) fn new<'a>(
        node: &str,
        addrs: impl IntoIterator<Item = &'a String>,
        max: u32,
    ) -> Self {
        let mut bootstrap: Vec<Target> = Vec::new();
        for addr in addrs {
            let target = Target::bootstrap(addr);
            if !bootstrap.contains(&target) {
                bootstrap.push(target);
            }
        }
        Self {
            node: node.to_string(),
            max,
            current: bootstrap.clone(),
            bootstrap,
            revision: 0,
        }
    }

    /// The gateways to keep sessions with now.
    pub(crate) fn current(&self) -> &[Target] {
        &self.current
    }

    /// Whether the set is the bootstrap addresses (no member list taken,
    /// or fallen back).
    pub(crate) fn on_bootstrap(&self) -> bool {
        self.revision == 0
    }

    /// Takes a member list: when it is newer than the one held and names
    /// some member, it replaces the set; returns whether it did.
    pub(crate) fn offer(&mut self, list: &MemberList) -> bool {
        if list.revision <= self.revision || list.members.is_empty() {
            return false;
        }
        self.revision = list.revision;
        self.current = choose(&self.node, &list.members, self.max)
            .into_iter()
            .map(Target::member)
            .collect();
        true
    }

    /// Every member is unreachable: back to the bootstrap addresses, and
    /// the next member list from any of them is taken whatever its
    /// revision. Returns whether the set changed.
    pub(crate) fn fall_back(&mut self) -> bool {
        if self.on_bootstrap() {
            return false;
        }
        self.revision = 0;
        self.current = self.bootstrap.clone();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<Member> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| Member {
                name: (*name).to_string(),
                quic: format!("127.0.0.1:{}", 4433 + i),
                http: String::new(),
            })
            .collect()
    }

    fn names(chosen: &[&Member]) -> Vec<String> {
        chosen.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn every_member_is_kept_without_a_limit_or_under_it() {
        let all = members(&["gw-c", "gw-a", "gw-b"]);
        assert_eq!(names(&choose("n1", &all, 0)), ["gw-a", "gw-b", "gw-c"]);
        assert_eq!(names(&choose("n1", &all, 3)), ["gw-a", "gw-b", "gw-c"]);
        assert_eq!(names(&choose("n1", &all, 9)), ["gw-a", "gw-b", "gw-c"]);
    }

    #[test]
    fn the_subset_is_stable_and_the_heaviest() {
        let all = members(&["gw-a", "gw-b", "gw-c", "gw-d", "gw-e"]);
        let first = names(&choose("node-7", &all, 2));
        assert_eq!(first.len(), 2);
        // The same inputs in another order give the same subset.
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(names(&choose("node-7", &reversed, 2)), first);
        // They are the two of highest weight.
        let mut by_weight: Vec<&Member> = all.iter().collect();
        by_weight.sort_by_key(|m| std::cmp::Reverse(weight("node-7", &m.name)));
        let mut heaviest = names(&by_weight[..2]);
        heaviest.sort();
        assert_eq!(first, heaviest);
    }

    #[test]
    fn a_member_leaving_moves_only_the_nodes_that_had_it() {
        let all = members(&["gw-a", "gw-b", "gw-c", "gw-d", "gw-e", "gw-f"]);
        let gone = "gw-c";
        let rest: Vec<Member> = all.iter().filter(|m| m.name != gone).cloned().collect();
        let mut moved = 0;
        for n in 0..200 {
            let node = format!("node-{n}");
            let before = names(&choose(&node, &all, 2));
            let after = names(&choose(&node, &rest, 2));
            if before.iter().any(|m| m == gone) {
                // It keeps the member it had besides the one gone, and gets
                // one more.
                let kept: Vec<&String> = before.iter().filter(|m| *m != gone).collect();
                assert!(
                    kept.iter().all(|m| after.contains(m)),
                    "{node}: {before:?} -> {after:?}"
                );
                moved += 1;
            } else {
                assert_eq!(
                    before, after,
                    "{node} did not have {gone}: it keeps its subset"
                );
            }
        }
        // About 2 in 6 nodes had it; some did, some did not.
        assert!(moved > 20 && moved < 150, "{moved} of 200 moved");
    }

    #[test]
    fn the_subsets_spread_over_the_members() {
        let all = members(&["gw-a", "gw-b", "gw-c", "gw-d"]);
        let mut counts = std::collections::BTreeMap::<String, u32>::new();
        for n in 0..400 {
            for m in choose(&format!("node-{n}"), &all, 1) {
                *counts.entry(m.name.clone()).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 4, "every member has some nodes: {counts:?}");
        assert!(counts.values().all(|c| *c > 50), "{counts:?}");
    }

    #[test]
    fn a_newer_list_replaces_the_set_and_an_older_one_does_not() {
        let boot = ["127.0.0.1:4433".to_string(), "127.0.0.1:4433".to_string()];
        let mut targets = Targets::new("n1", &boot, 0);
        assert!(targets.on_bootstrap());
        assert_eq!(targets.current(), [Target::bootstrap("127.0.0.1:4433")]);
        let list = |revision, names: &[&str]| MemberList {
            revision,
            members: members(names),
        };
        assert!(targets.offer(&list(5, &["gw-a", "gw-b", "gw-c"])));
        assert!(!targets.on_bootstrap());
        let current: Vec<&str> = targets.current().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(current, ["gw-a", "gw-b", "gw-c"]);
        assert_eq!(targets.current()[1].addr, "127.0.0.1:4434");
        // An older or equal revision changes nothing; nor does an empty list.
        assert!(!targets.offer(&list(4, &["gw-a"])));
        assert!(!targets.offer(&list(5, &["gw-a"])));
        assert!(!targets.offer(&list(9, &[])));
        assert_eq!(targets.current().len(), 3);
        // A member left.
        assert!(targets.offer(&list(6, &["gw-a", "gw-c"])));
        let current: Vec<&str> = targets.current().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(current, ["gw-a", "gw-c"]);
        // Every member unreachable: the bootstrap addresses, then any list.
        assert!(targets.fall_back());
        assert!(!targets.fall_back());
        assert!(targets.current()[0].is_bootstrap());
        assert!(targets.offer(&list(1, &["gw-z"])));
        assert_eq!(targets.current()[0].name, "gw-z");
    }

    #[test]
    fn a_limit_keeps_the_subset_when_the_list_grows() {
        let mut targets = Targets::new("node-3", &["127.0.0.1:1".to_string()], 2);
        let list = |revision, names: &[&str]| MemberList {
            revision,
            members: members(names),
        };
        assert!(targets.offer(&list(1, &["gw-a", "gw-b", "gw-c"])));
        let before: Vec<String> = targets.current().iter().map(|t| t.name.clone()).collect();
        assert_eq!(before.len(), 2);
        assert!(targets.offer(&list(2, &["gw-a", "gw-b", "gw-c", "gw-d"])));
        let after: Vec<String> = targets.current().iter().map(|t| t.name.clone()).collect();
        // A new member takes at most one place: at least one is kept.
        assert!(after.iter().filter(|m| before.contains(m)).count() >= 1);
        assert_eq!(after.len(), 2);
    }
}
