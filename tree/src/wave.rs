//! The echo wave at one gateway: probe the children, gather their answers,
//! answer the parent, all within a deadline that shrinks by one hop per
//! level, so a parent never waits for a child longer than it may wait
//! itself.
//!
//! ```text
//!            root  (deadline D)
//!           /    \
//!      probe      probe        children get D - hop: their answers
//!        a          b          still reach the root by D
//!       / \          \
//!      a1  a2         b1       leaves answer at once
//! ```
//!
//! [`Echo::start`] gives the probes to send (a leaf answers at once);
//! [`Echo::handle`] takes a child's answer, a lost link or a tick, and
//! gives the gateway's answer once every child answered or its deadline
//! came: the [`Subtree`] of every gateway that answered in time, with a
//! [`Branch::Missing`] for each branch that did not (a partial answer,
//! never a hang). Answers from unknown children, twice from the same child,
//! or after the end change nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::ChildId;

/// A wave's id, unique at the gateway that started it.
pub type WaveId = u64;

/// One gateway's answer: its own part `R` and its children's answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Subtree<R> {
    /// The gateway's node id.
    pub id: String,
    /// Its own part: its nodes and load for the topology, whether it
    /// applied the change for a confirmed push.
    pub own: R,
    /// Its children, in the order it knew them.
    pub children: Vec<Branch<R>>,
}

/// A child's place in its parent's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Branch<R> {
    /// The child answered in time.
    Answered(Subtree<R>),
    /// The child did not: the branch below it is unknown.
    Missing {
        /// The child.
        child: ChildId,
        /// Why.
        why: Missing,
    },
}

/// Why a branch is missing from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// No answer by the deadline (a stopped or overloaded gateway, a slow
    /// link).
    TimedOut,
    /// The probe could not reach the child (no link to it, the link broke).
    Unreachable(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TimedOut => f.write_str("no answer in time"),
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

impl<R> Subtree<R> {
    /// A gateway with no children: a leaf's answer.
    pub fn leaf(id: impl Into<String>, own: R) -> Self {
        Self {
            id: id.into(),
            own,
            children: Vec::new(),
        }
    }

    /// Whether a branch anywhere below is missing.
    pub fn is_partial(&self) -> bool {
        self.children.iter().any(|b| match b {
            Branch::Answered(t) => t.is_partial(),
            Branch::Missing { .. } => true,
        })
    }

    /// Gateways that answered, this one included.
    pub fn len(&self) -> usize {
        1 + self
            .children
            .iter()
            .map(|b| match b {
                Branch::Answered(t) => t.len(),
                Branch::Missing { .. } => 0,
            })
            .sum::<usize>()
    }

    /// Always false: a subtree holds at least its own gateway.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Levels of gateways that answered (1 for a leaf).
    pub fn depth(&self) -> usize {
        1 + self
            .children
            .iter()
            .filter_map(|b| match b {
                Branch::Answered(t) => Some(t.depth()),
                Branch::Missing { .. } => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Every place the wave did not succeed, as (path of gateway ids from
    /// this one, why): a missing branch (the path ends with the child), or
    /// a gateway whose own part `check` refuses (e.g. a change it could
    /// not apply). Empty: every gateway below answered and passed.
    pub fn failures(
        &self,
        check: &impl Fn(&R) -> Result<(), String>,
    ) -> Vec<(Vec<String>, String)> {
        let mut out = Vec::new();
        self.collect_failures(&mut vec![self.id.clone()], check, &mut out);
        out
    }

    fn collect_failures(
        &self,
        path: &mut Vec<String>,
        check: &impl Fn(&R) -> Result<(), String>,
        out: &mut Vec<(Vec<String>, String)>,
    ) {
        if let Err(why) = check(&self.own) {
            out.push((path.clone(), why));
        }
        for branch in &self.children {
            match branch {
                Branch::Answered(t) => {
                    path.push(t.id.clone());
                    t.collect_failures(path, check, out);
                    path.pop();
                }
                Branch::Missing { child, why } => {
                    let mut at = path.clone();
                    at.push(child.clone());
                    out.push((at, why.to_string()));
                }
            }
        }
    }
}

/// A probe to send to a child: the wave and the child's deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The child.
    pub child: ChildId,
    /// The wave.
    pub wave: WaveId,
    /// When the child must have answered (its own deadline).
    pub deadline: Instant,
}

/// What happened to a wave at this gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<R> {
    /// A child answered with its subtree.
    Answered {
        /// The child.
        child: ChildId,
        /// Its answer.
        subtree: Subtree<R>,
    },
    /// The probe could not be sent to a child, or its link broke.
    Unreachable {
        /// The child.
        child: ChildId,
        /// Why, in words.
        why: String,
    },
    /// Time passed (see [`Echo::next_timeout`]).
    Tick,
}

/// What the gateway does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<R> {
    /// Send a probe to a child.
    Probe(Probe),
    /// The wave ended here: answer the parent (or, at the root, the
    /// operator) with this.
    Done(Subtree<R>),
}

/// One wave at one gateway.
#[derive(Debug)]
pub struct Echo<R> {
    wave: WaveId,
    id: String,
    /// This gateway's own part, until the answer takes it.
    own: Option<R>,
    /// The children in the order given, each's answer once in.
    children: Vec<(ChildId, Option<Branch<R>>)>,
    /// Children not answered yet, by name (their index in `children`).
    pending: BTreeMap<ChildId, usize>,
    deadline: Instant,
}

impl<R> Echo<R> {
    /// Starts wave `wave` at gateway `id`, whose own part is `own`, with
    /// `children` below it; the gateway answers by `deadline`. Each child
    /// is probed with `deadline - hop` (`hop`: the time an answer takes to
    /// travel up one level, with a margin); a child whose deadline would
    /// already have passed at `now` is not probed and counts as timed out.
    /// A duplicate child name counts once. Returns the machine and the
    /// actions: the probes, or at once the answer when nothing is pending.
    pub fn start(
        wave: WaveId,
        id: impl Into<String>,
        own: R,
        children: impl IntoIterator<Item = ChildId>,
        deadline: Instant,
        hop: Duration,
        now: Instant,
    ) -> (Self, Vec<Action<R>>) {
        let mut echo = Self {
            wave,
            id: id.into(),
            own: Some(own),
            children: Vec::new(),
            pending: BTreeMap::new(),
            deadline,
        };
        let child_deadline = deadline.checked_sub(hop);
        let mut actions = Vec::new();
        for child in children {
            if echo.children.iter().any(|(c, _)| *c == child) {
                continue;
            }
            let index = echo.children.len();
            match child_deadline.filter(|d| *d > now) {
                Some(deadline) => {
                    echo.pending.insert(child.clone(), index);
                    actions.push(Action::Probe(Probe {
                        child: child.clone(),
                        wave,
                        deadline,
                    }));
                    echo.children.push((child, None));
                }
                None => {
                    let missing = Branch::Missing {
                        child: child.clone(),
                        why: Missing::TimedOut,
                    };
                    echo.children.push((child, Some(missing)));
                }
            }
        }
        actions.extend(echo.finish_if_done(now));
        (echo, actions)
    }

    /// The wave's id.
    pub fn wave(&self) -> WaveId {
        self.wave
    }

    /// Whether the gateway has answered.
    pub fn is_done(&self) -> bool {
        self.own.is_none()
    }

    /// When to send [`Event::Tick`] next: the deadline while a child is
    /// pending, `None` once done.
    pub fn next_timeout(&self) -> Option<Instant> {
        (!self.is_done()).then_some(self.deadline)
    }

    /// Takes one event at `now`; returns the answer once the wave ends
    /// here (every child answered, or the deadline came).
    pub fn handle(&mut self, event: Event<R>, now: Instant) -> Vec<Action<R>> {
        if self.is_done() {
            return Vec::new();
        }
        match event {
            Event::Answered { child, subtree } => {
                if let Some(index) = self.pending.remove(&child) {
                    self.children[index].1 = Some(Branch::Answered(subtree));
                }
            }
            Event::Unreachable { child, why } => {
                if let Some(index) = self.pending.remove(&child) {
                    self.children[index].1 = Some(Branch::Missing {
                        child,
                        why: Missing::Unreachable(why),
                    });
                }
            }
            Event::Tick => {}
        }
        self.finish_if_done(now).into_iter().collect()
    }

    fn finish_if_done(&mut self, now: Instant) -> Option<Action<R>> {
        if !self.pending.is_empty() && now < self.deadline {
            return None;
        }
        let own = self.own.take()?;
        self.pending.clear();
        let children = std::mem::take(&mut self.children)
            .into_iter()
            .map(|(child, branch)| {
                branch.unwrap_or(Branch::Missing {
                    child,
                    why: Missing::TimedOut,
                })
            })
            .collect();
        Some(Action::Done(Subtree {
            id: self.id.clone(),
            own,
            children,
        }))
    }
}

#[cfg(test)]
mod tests;
