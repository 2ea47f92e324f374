//! Several gateways as one cluster: who the members are.
//!
//! Without a `[cluster]` section the gateway is a cluster of one: its
//! member list names itself alone and never changes. With one, the list is
//! the live members as etcd knows them (each gateway holds a lease on its
//! key under `{prefix}/gateways/`).
//!
//! Architecture Invariant: this module depends only on `config`,
//! `telemetry` and the protocol crate; the rooms above read the member
//! list from it, never from etcd directly.

// Parts of the handle are not used by every room yet.
#![allow(dead_code)]

use protocol::{Member, MemberList};
use tokio::sync::watch;

/// The cluster as this gateway sees it.
pub(crate) struct Cluster {
    /// This gateway, as the others and its agents and clients reach it.
    me: Member,
    members: watch::Sender<MemberList>,
}

impl Cluster {
    /// A cluster of one: `me` alone, at revision 1.
    pub(crate) fn single(me: Member) -> Self {
        let list = MemberList {
            revision: 1,
            members: vec![me.clone()],
        };
        Self {
            me,
            members: watch::Sender::new(list),
        }
    }

    /// This gateway.
    pub(crate) fn me(&self) -> &Member {
        &self.me
    }

    /// The live members now, this gateway among them, sorted by name.
    pub(crate) fn members(&self) -> MemberList {
        self.members.borrow().clone()
    }

    /// Follows the member list: the receiver sees every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<MemberList> {
        self.members.subscribe()
    }

    /// How many members are live (at least 1: this gateway).
    pub(crate) fn live_count(&self) -> usize {
        self.members.borrow().members.len().max(1)
    }
}
