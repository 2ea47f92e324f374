//! `switchyard-tree`: the algorithms a tree of gateways runs, sans-IO.
//!
//! Gateways form a tree (a gateway per site under one above them). Two
//! algorithms act on it, each a plain state machine that takes events with
//! the time they happen and returns what to send, unit-tested without any
//! network:
//!
//! - [`wave`]: the echo wave (Chang, "Echo algorithms: depth parallel
//!   operations on general graphs", 1982; on a tree it is also Segall's
//!   PIF, propagation of information with feedback). A probe goes down,
//!   every gateway answers its parent once each child has answered or its
//!   time is up, so the root learns the whole subtree (the topology, each
//!   gateway's load) or which branch did not answer: partial, never a
//!   hang. The same wave confirms a change pushed down the tree: each
//!   gateway's part is whether it applied it, and the root confirms only
//!   when every gateway below did (termination detection, as Finn's
//!   algorithm acts at a node once it heard from all its ancestors).
//! - [`rebalance`]: which queued calls to move between subtrees: from the
//!   child whose queue for a service waits longest, relative to its
//!   capacity, to siblings with free capacity for it.

#![warn(unreachable_pub)]

pub mod rebalance;
pub mod wave;

/// A child's name in its parent's tree: the child gateway's node id.
pub type ChildId = String;
