//! The echo wave over a simulated tree of gateways: every gateway runs
//! the real [`switchyard_tree::wave::Echo`]; messages take a link's
//! latency; stopped gateways never answer.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal};
use switchyard_tree::wave::{Action, Echo, Event, Probe, Subtree};

/// A tree of gateways: each one's children, by id; the root is `g`.
#[derive(Debug, Clone)]
pub struct Tree {
    children: BTreeMap<String, Vec<String>>,
    parent: BTreeMap<String, String>,
}

/// The root's id.
pub const ROOT: &str = "g";

impl Tree {
    /// `fanout` children per gateway, `levels` levels below the root:
    /// `(fanout^(levels+1) - 1) / (fanout - 1)` gateways.
    pub fn regular(fanout: usize, levels: usize) -> Self {
        let mut children = BTreeMap::new();
        let mut parent = BTreeMap::new();
        let mut level = vec![ROOT.to_string()];
        for _ in 0..levels {
            let mut next = Vec::new();
            for p in &level {
                let kids: Vec<String> = (0..fanout).map(|i| format!("{p}.{i}")).collect();
                for k in &kids {
                    parent.insert(k.clone(), p.clone());
                }
                next.extend(kids.iter().cloned());
                children.insert(p.clone(), kids);
            }
            level = next;
        }
        Self { children, parent }
    }

    /// Gateways in the tree, the root included.
    pub fn len(&self) -> usize {
        1 + self.parent.len()
    }

    /// Always false: a tree has its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every gateway but the root, in name order.
    pub fn below_root(&self) -> Vec<String> {
        self.parent.keys().cloned().collect()
    }

    fn children_of(&self, id: &str) -> Vec<String> {
        self.children.get(id).cloned().unwrap_or_default()
    }
}

/// How one wave is run.
#[derive(Debug, Clone)]
pub struct WaveSetup {
    /// One-way latency of a parent–child link, median, ms.
    pub link_ms: f64,
    /// Its spread: the σ of a log-normal around `link_ms` (0: every
    /// message takes exactly `link_ms`).
    pub link_sigma: f64,
    /// The root's deadline, ms.
    pub deadline_ms: u64,
    /// Each level's margin for its answer to travel up, ms.
    pub hop_ms: u64,
    /// Gateways that never answer (stopped).
    pub stopped: Vec<String>,
    /// The RNG's seed (link latencies).
    pub seed: u64,
}

/// What one wave came to at the root.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveResult {
    /// Time from the root's start to its answer, ms.
    pub took_ms: f64,
    /// Gateways in the answer.
    pub answered: usize,
    /// Branches marked missing.
    pub missing: usize,
    /// Messages sent (probes and answers).
    pub messages: u64,
}

enum Msg {
    Probe(Probe),
    Answer {
        to: String,
        from: String,
        subtree: Subtree<()>,
    },
    Tick(String),
}

/// Messages in flight, in (time, order) order.
struct Net {
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    messages: BTreeMap<u64, Msg>,
    seq: u64,
}

impl Net {
    fn push(&mut self, at: Instant, msg: Msg) {
        self.seq += 1;
        self.messages.insert(self.seq, msg);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn pop(&mut self) -> Option<(Instant, Msg)> {
        let Reverse((at, seq)) = self.queue.pop()?;
        Some((at, self.messages.remove(&seq)?))
    }
}

/// Runs one wave from the root of `tree` under `setup`, in virtual time.
pub fn run(tree: &Tree, setup: &WaveSetup) -> WaveResult {
    let mut rng = StdRng::seed_from_u64(setup.seed);
    let jitter = LogNormal::new(0.0, setup.link_sigma.max(0.0)).ok();
    let mut link = || {
        let factor = match &jitter {
            Some(d) if setup.link_sigma > 0.0 => d.sample(&mut rng),
            _ => 1.0,
        };
        Duration::from_secs_f64(setup.link_ms * factor / 1000.0)
    };
    let t0 = Instant::now();
    let hop = Duration::from_millis(setup.hop_ms);
    let mut net = Net {
        queue: BinaryHeap::new(),
        messages: BTreeMap::new(),
        seq: 0,
    };
    let mut messages = 0u64;
    let mut echoes: BTreeMap<String, Echo<()>> = BTreeMap::new();
    let deadline = t0 + Duration::from_millis(setup.deadline_ms);
    let (root, actions) = Echo::start(1, ROOT, (), tree.children_of(ROOT), deadline, hop, t0);
    echoes.insert(ROOT.into(), root);
    let mut todo = vec![(ROOT.to_string(), t0, actions)];
    loop {
        for (at, now, actions) in std::mem::take(&mut todo) {
            for action in actions {
                messages += 1;
                match action {
                    Action::Probe(p) => net.push(now + link(), Msg::Probe(p)),
                    Action::Done(subtree) => match tree.parent.get(&at) {
                        Some(up) => net.push(
                            now + link(),
                            Msg::Answer {
                                to: up.clone(),
                                from: at.clone(),
                                subtree,
                            },
                        ),
                        None => {
                            return WaveResult {
                                took_ms: (now - t0).as_secs_f64() * 1000.0,
                                answered: subtree.len(),
                                missing: subtree.failures(&|()| Ok(())).len(),
                                messages: messages - 1,
                            };
                        }
                    },
                }
            }
            if let Some(when) = echoes.get(&at).and_then(Echo::next_timeout) {
                net.push(when, Msg::Tick(at));
            }
        }
        let Some((now, msg)) = net.pop() else {
            unreachable!("the root answers by its deadline");
        };
        match msg {
            Msg::Probe(p) if setup.stopped.contains(&p.child) => {}
            Msg::Probe(p) => {
                let kids = tree.children_of(&p.child);
                let (echo, actions) =
                    Echo::start(p.wave, p.child.clone(), (), kids, p.deadline, hop, now);
                echoes.insert(p.child.clone(), echo);
                todo.push((p.child, now, actions));
            }
            Msg::Answer { to, from, subtree } => {
                if let Some(echo) = echoes.get_mut(&to) {
                    let event = Event::Answered {
                        child: from,
                        subtree,
                    };
                    todo.push((to, now, echo.handle(event, now)));
                }
            }
            Msg::Tick(at) => {
                if let Some(echo) = echoes.get_mut(&at) {
                    todo.push((at.clone(), now, echo.handle(Event::Tick, now)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(link_ms: f64, stopped: Vec<String>) -> WaveSetup {
        WaveSetup {
            link_ms,
            link_sigma: 0.0,
            deadline_ms: 2000,
            hop_ms: 100,
            stopped,
            seed: 1,
        }
    }

    #[test]
    fn a_whole_tree_answers_in_two_link_times_per_level() {
        let tree = Tree::regular(10, 3);
        assert_eq!(tree.len(), 1111);
        let result = run(&tree, &setup(2.0, Vec::new()));
        assert_eq!(result.answered, 1111);
        assert_eq!(result.missing, 0);
        assert!((result.took_ms - 12.0).abs() < 1e-6, "{result:?}");
        // A probe down and an answer up on each of the 1110 links.
        assert_eq!(result.messages, 2 * 1110);
    }

    #[test]
    fn stopped_branches_end_partial_by_the_deadline() {
        let tree = Tree::regular(3, 3);
        let result = run(&tree, &setup(2.0, vec!["g.1".into(), "g.2.0.1".into()]));
        assert_eq!(result.answered, 40 - 13 - 1);
        assert_eq!(result.missing, 2);
        assert!((result.took_ms - 2000.0).abs() < 1e-6, "{result:?}");
    }
}
