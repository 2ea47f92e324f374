//! The discrete-event loop: virtual time, an event heap ordered by (time,
//! sequence), the core driven through [`switchyard_core::drive`] with a wasm
//! policy, and the simulated nodes that carry out its actions.
//!
//! A call's life: it arrives (its base service time is drawn then, from its
//! stream's own RNG, so every policy sees the same work), the core
//! dispatches it at once or queues it; on its node it starts when a worker
//! is free, else waits in the node's FIFO queue; it ends when its service
//! time is over (answer, or error in a failure window), or at its deadline
//! (leaving the core's queue, or cancelled on its node, freeing its
//! worker). Node time (dispatch to answer) goes to the core and the policy.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use policy_host::PolicyEngine;
use policy_host::types::{Gpu, NodeInfo};
use protocol::{
    CallHead, GpuStats, NodeSpec, NodeStats, ServiceLoad, ServiceSpec, SlotSpec, SwapReport,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_core::{Action, CallEnd, CallId, Core, Event, NodeKey, TICK, drive};

use crate::dist::{Arrivals, Sampler};
use crate::metrics::{CallFigures, Outcome, Recorder, Report};
use crate::policy::{Directory, WasmBalance};
use crate::scenario::{Scenario, ScenarioError, Window};

mod chat;
mod order;
mod setup;
mod slots;
mod stats;

use chat::{ChatCall, ChatFigures, ChatRt, NodeModel};
use order::NodeOrder;

/// A run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario is unusable.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The policy could not be loaded.
    #[error("loading policy {path}")]
    Policy {
        /// Its file.
        path: String,
        /// Why.
        source: policy_host::PolicyError,
    },
    /// A run's thread panicked and left no result.
    #[error("a run's thread panicked")]
    Lost,
}

/// Virtual time, ns since the start.
type Nanos = u64;

fn ns(seconds: f64) -> Nanos {
    (seconds * 1e9).round().max(0.0) as Nanos
}

fn ms_between(from: Nanos, to: Nanos) -> f64 {
    to.saturating_sub(from) as f64 / 1e6
}

/// A seed for one purpose, derived from the scenario's (SplitMix64's mix).
pub fn derive_seed(seed: u64, purpose: u64) -> u64 {
    let mut z = seed
        .wrapping_add(purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug)]
enum Ev {
    Arrival(usize),
    /// A chat conversation's turn that waited for its previous reply.
    Turn {
        stream: usize,
        conv: usize,
    },
    /// A chat call's prefill ended.
    Prefilled(CallId),
    Done(CallId),
    Deadline(CallId),
    LoadDone {
        node: usize,
        slot: usize,
    },
    Preload(usize),
    Stats,
    Tick,
}

#[derive(Debug)]
struct Entry {
    at: Nanos,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Stream {
    arrivals: Arrivals,
    rng: StdRng,
    work_rng: StdRng,
    service: usize,
    head: Arc<CallHead>,
    timeout: Option<Nanos>,
    /// A `chat` stream's conversations.
    chat: Option<ChatRt>,
}

struct ServiceRt {
    name: String,
    sampler: Sampler,
    load_ms: u32,
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    /// In the core (queued, reserved).
    Gateway,
    /// Dispatched, in the node's FIFO queue.
    Local { node: usize, dispatched: Nanos },
    /// Being served.
    Running {
        node: usize,
        dispatched: Nanos,
        started: Nanos,
        ok: bool,
    },
}

struct CallRec {
    service: usize,
    arrived: Nanos,
    work_ms: f64,
    deadline: Option<Nanos>,
    core_wait_ms: Option<f64>,
    stage: Stage,
    /// A chat call's turn.
    chat: Option<ChatCall>,
    /// A chat call's figures on its node.
    figures: ChatFigures,
}

#[derive(Debug, Clone, PartialEq)]
enum SlotLoad {
    Idle,
    /// Waiting for the node's calls of the old service to end.
    Draining {
        to: usize,
        swap_id: u64,
        asked: Nanos,
    },
    /// Loading until its `LoadDone`.
    Loading {
        to: usize,
        swap_id: u64,
        asked: Nanos,
        ok: bool,
    },
}

struct SimSlot {
    name: String,
    loaded: Option<usize>,
    load: SlotLoad,
}

struct SimNode {
    workers: Option<u32>,
    busy: u32,
    queue: VecDeque<CallId>,
    speed: f64,
    cost_per_hour: f64,
    windows: Vec<Window>,
    slots: Vec<SimSlot>,
    /// Calls dispatched here and not ended, per service.
    active: Vec<u32>,
    gpus: u32,
    gpu_mem_mib: u64,
    /// Its model server (KV cache, prefill, decode), for chat calls.
    model: Option<NodeModel>,
    /// Whether it hosts each service (always loaded or in a slot).
    hosts: Vec<bool>,
}

impl SimNode {
    fn has_worker(&self) -> bool {
        self.workers.is_none_or(|w| self.busy < w)
    }

    fn window(&self, at_s: f64) -> Option<&Window> {
        self.windows
            .iter()
            .find(|w| w.from_s <= at_s && at_s < w.until_s)
    }
}

struct PreloadRt {
    at: Nanos,
    every: Option<Nanos>,
    node: usize,
    slot: usize,
    service: usize,
}

/// One run: one scenario, one policy.
pub struct Sim {
    scenario: String,
    core: Core,
    balance: WasmBalance,
    directory: Directory,
    base: Instant,
    now: Nanos,
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    services: Vec<ServiceRt>,
    nodes: Vec<SimNode>,
    node_specs: Vec<NodeSpec>,
    streams: Vec<Stream>,
    preloads: Vec<PreloadRt>,
    calls: HashMap<CallId, CallRec>,
    next_call: CallId,
    tenant: Arc<str>,
    tick_at: Option<Nanos>,
    end: Nanos,
    stop: Nanos,
    stats_interval: Nanos,
    fail_rng: StdRng,
    recorder: Recorder,
    order: NodeOrder,
    swaps: u64,
    events: u64,
}

impl Sim {
    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    fn at(&mut self, at: Nanos, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn core(&mut self, event: Event) {
        let now = self.instant();
        let actions = drive(&mut self.core, &mut self.balance, event, now);
        for action in actions {
            self.apply(action);
        }
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Report {
        let started = Instant::now();
        for (i, spec) in self.node_specs.clone().into_iter().enumerate() {
            self.core(Event::NodeUp { node: key(i), spec });
        }
        for i in 0..self.streams.len() {
            self.next_arrival(i, 0.0);
        }
        for i in 0..self.preloads.len() {
            let at = self.preloads[i].at;
            if at < self.end {
                self.at(at, Ev::Preload(i));
            }
        }
        if self.stats_interval > 0 {
            self.at(0, Ev::Stats);
        }
        while let Some(Reverse(entry)) = self.heap.pop() {
            if entry.at > self.stop {
                break;
            }
            self.now = entry.at;
            self.events += 1;
            match entry.ev {
                Ev::Arrival(stream) => self.arrive(stream),
                Ev::Turn { stream, conv } => self.chat_turn(stream, conv),
                Ev::Prefilled(call) => self.prefilled(call),
                Ev::Done(call) => self.done(call),
                Ev::Deadline(call) => self.deadline(call),
                Ev::LoadDone { node, slot } => self.load_done(node, slot),
                Ev::Preload(i) => self.preload(i),
                Ev::Stats => self.stats(),
                Ev::Tick => {
                    self.tick_at = None;
                    self.core(Event::Tick);
                }
            }
            if self.tick_at.is_none() && self.core.wants_tick() {
                let at = self.now + TICK.as_nanos() as Nanos;
                self.tick_at = Some(at);
                self.at(at, Ev::Tick);
            }
        }
        if !self.calls.is_empty() {
            self.now = self.now.max(self.stop);
        }
        let left: Vec<CallId> = self.calls.keys().copied().collect();
        for call in left {
            if let Some(rec) = self.calls.remove(&call) {
                self.record(&rec, Outcome::Unfinished);
            }
        }
        let mut report = self
            .recorder
            .report(&self.scenario, self.balance.policy().name());
        report.swaps = self.swaps;
        report.by_node = self.order.by_node();
        report.passed_over = self.order.passed_over();
        report.policy_failures = self.balance.failures();
        report.events = self.events;
        report.wall_s = started.elapsed().as_secs_f64();
        report
    }

    fn next_arrival(&mut self, stream: usize, after_s: f64) {
        let s = &mut self.streams[stream];
        if let Some(t) = s.arrivals.next_after(after_s, &mut s.rng) {
            let at = ns(t);
            if at < self.end {
                self.at(at, Ev::Arrival(stream));
            }
        }
    }

    fn arrive(&mut self, stream: usize) {
        if self.streams[stream].chat.is_some() {
            self.next_arrival(stream, self.now as f64 / 1e9);
            self.chat_arrival(stream);
        } else {
            self.admit(stream, None, Arc::from([]));
        }
    }

    /// A call of `stream` arrives now (a chat turn when `chat`, with its
    /// prompt's `prefix` hashes); other streams' next arrival is drawn.
    fn admit(&mut self, stream: usize, chat: Option<ChatCall>, prefix: Arc<[u64]>) {
        let call = self.next_call;
        self.next_call += 1;
        let now = self.now;
        let s = &mut self.streams[stream];
        let service = s.service;
        let work_ms = self.services[service].sampler.sample_ms(&mut s.work_rng);
        let deadline = s.timeout.map(|t| now + t);
        let head = s.head.clone();
        self.calls.insert(
            call,
            CallRec {
                service,
                arrived: now,
                work_ms,
                deadline,
                core_wait_ms: None,
                stage: Stage::Gateway,
                chat,
                figures: ChatFigures::default(),
            },
        );
        if let Some(d) = deadline {
            self.at(d, Ev::Deadline(call));
        }
        if chat.is_none() {
            self.next_arrival(stream, now as f64 / 1e9);
        }
        self.core(Event::CallArrived {
            call,
            head,
            tenant: self.tenant.clone(),
            prefix,
            job: false,
            exclude: Vec::new(),
        });
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Dispatch {
                call, node, waited, ..
            } => self.dispatch(call, node as usize, waited),
            Action::Reject { call, .. } => {
                if let Some(rec) = self.calls.remove(&call) {
                    self.record(&rec, Outcome::Rejected);
                }
            }
            Action::Swap { node, request, .. } => {
                let node = node as usize;
                let slot = self
                    .nodes
                    .get(node)
                    .and_then(|n| n.slots.iter().position(|s| s.name == request.slot));
                let to = self.services.iter().position(|s| s.name == request.service);
                match (slot, to) {
                    (Some(slot), Some(to)) => {
                        self.swaps += 1;
                        self.nodes[node].slots[slot].load = SlotLoad::Draining {
                            to,
                            swap_id: request.swap_id,
                            asked: self.now,
                        };
                        self.try_load(node, slot);
                    }
                    _ => self.core(Event::SwapReported {
                        node: key(node),
                        report: SwapReport {
                            swap_id: request.swap_id,
                            slot: request.slot,
                            loaded: None,
                            error: Some("no such slot or service".into()),
                            duration_ms: 0,
                        },
                    }),
                }
            }
            // Picks were run by `drive`; positions, reservations, swap ends
            // and queue lengths are for people and metrics.
            _ => {}
        }
    }

    fn dispatch(&mut self, call: CallId, node: usize, waited: Option<Duration>) {
        let now = self.now;
        let Some(rec) = self.calls.get_mut(&call) else {
            return;
        };
        rec.core_wait_ms = Some(waited.map_or(0.0, |w| w.as_secs_f64() * 1000.0));
        rec.stage = Stage::Local {
            node,
            dispatched: now,
        };
        let service = rec.service;
        self.order.dispatch(&self.nodes, node, service, rec.arrived);
        let n = &mut self.nodes[node];
        n.active[service] += 1;
        if n.has_worker() {
            self.start(node, call);
        } else {
            n.queue.push_back(call);
        }
    }

    /// Starts serving `call` on `node` (a worker is free).
    fn start(&mut self, node: usize, call: CallId) {
        let now = self.now;
        let model = self.model_times(node, call);
        let Some(rec) = self.calls.get_mut(&call) else {
            return;
        };
        let Stage::Local { dispatched, .. } = rec.stage else {
            return;
        };
        let n = &mut self.nodes[node];
        n.busy += 1;
        // A chat call on a model: prefill then decode; else its work.
        let (mut ms, mut prefill) = match model {
            Some((prefill, decode)) => (prefill + decode, Some(prefill)),
            None => (rec.work_ms, None),
        };
        ms *= n.speed;
        prefill = prefill.map(|p| p * n.speed);
        let mut ok = true;
        if let Some(w) = n.window(now as f64 / 1e9) {
            if let Some(fixed) = w.fixed_ms {
                let share = if ms > 0.0 { fixed / ms } else { 0.0 };
                prefill = prefill.map(|p| p * share);
                ms = fixed;
            }
            if let Some(factor) = w.factor {
                ms *= factor;
                prefill = prefill.map(|p| p * factor);
            }
            if w.fail > 0.0 && self.fail_rng.random::<f64>() < w.fail {
                ok = false;
                ms = w.fail_after_ms;
                prefill = None;
            }
        }
        rec.stage = Stage::Running {
            node,
            dispatched,
            started: now,
            ok,
        };
        if let Some(prefill) = prefill {
            self.at(now + ns(prefill / 1000.0), Ev::Prefilled(call));
        }
        self.at(now + ns(ms / 1000.0), Ev::Done(call));
    }

    /// Frees a worker of `node` (or a place in its queue): the next local
    /// call starts, slots waiting for the node to drain load.
    fn after_end(&mut self, node: usize) {
        while self.nodes[node].has_worker() {
            let Some(next) = self.nodes[node].queue.pop_front() else {
                break;
            };
            self.start(node, next);
        }
        for slot in 0..self.nodes[node].slots.len() {
            self.try_load(node, slot);
        }
    }

    fn done(&mut self, call: CallId) {
        let Some(rec) = self.calls.get(&call) else {
            return; // Cancelled at its deadline.
        };
        let Stage::Running {
            node,
            dispatched,
            ok,
            ..
        } = rec.stage
        else {
            return;
        };
        let Some(rec) = self.calls.remove(&call) else {
            return;
        };
        let n = &mut self.nodes[node];
        n.busy -= 1;
        n.active[rec.service] -= 1;
        self.after_end(node);
        self.end_on_node(&rec, node, dispatched, ok, call);
        self.record(&rec, if ok { Outcome::Ok } else { Outcome::Failed });
    }

    /// Tells the policy and the core that a dispatched call ended.
    fn end_on_node(
        &mut self,
        rec: &CallRec,
        node: usize,
        dispatched: Nanos,
        ok: bool,
        call: CallId,
    ) {
        let node_ms = ms_between(dispatched, self.now) as f32;
        let now = self.instant();
        let service = self.services[rec.service].name.clone();
        // A failed observe is counted in `failures()`; the run goes on.
        let _ = self.balance.observe(&service, key(node), node_ms, ok, now);
        let end = if ok { CallEnd::Ok } else { CallEnd::Failed };
        self.core(Event::CallFinished { call, node_ms, end });
    }

    fn deadline(&mut self, call: CallId) {
        let Some(rec) = self.calls.remove(&call) else {
            return;
        };
        match rec.stage {
            Stage::Gateway => self.core(Event::CallLeft { call }),
            Stage::Local { node, dispatched } => {
                let n = &mut self.nodes[node];
                if let Some(i) = n.queue.iter().position(|c| *c == call) {
                    n.queue.remove(i);
                }
                n.active[rec.service] -= 1;
                self.after_end(node);
                self.end_on_node(&rec, node, dispatched, false, call);
            }
            Stage::Running {
                node, dispatched, ..
            } => {
                let n = &mut self.nodes[node];
                n.busy -= 1;
                n.active[rec.service] -= 1;
                self.after_end(node);
                self.end_on_node(&rec, node, dispatched, false, call);
            }
        }
        self.record(&rec, Outcome::TimedOut);
    }

    fn record(&mut self, rec: &CallRec, outcome: Outcome) {
        let end = self.now;
        let (dispatched, started, node) = match rec.stage {
            Stage::Gateway => (None, None, None),
            Stage::Local { node, dispatched } => (Some(dispatched), None, Some(node)),
            Stage::Running {
                node,
                dispatched,
                started,
                ..
            } => (Some(dispatched), Some(started), Some(node)),
        };
        let node_ms = dispatched.map_or(0.0, |d| ms_between(d, end));
        let figures = CallFigures {
            arrived_s: rec.arrived as f64 / 1e9,
            outcome,
            time_in_system_ms: ms_between(rec.arrived, end),
            within_deadline: outcome == Outcome::Ok && rec.deadline.is_none_or(|d| end <= d),
            gateway_wait_ms: ms_between(rec.arrived, dispatched.unwrap_or(end)),
            node_wait_ms: dispatched.map_or(0.0, |d| ms_between(d, started.unwrap_or(end))),
            core_wait_ms: rec.core_wait_ms,
            node_ms,
            cost: node.map_or(0.0, |n| self.nodes[n].cost_per_hour * node_ms / 3_600_000.0),
            ttft_ms: rec.figures.first_token.map(|t| ms_between(rec.arrived, t)),
            prompt_tokens: rec.figures.prompt_tokens,
            cached_tokens: rec.figures.cached_tokens,
        };
        self.recorder.record(&figures);
        if let Some(chat) = &rec.chat {
            self.chat_ended(chat, outcome == Outcome::Ok);
        }
    }
}

fn key(index: usize) -> NodeKey {
    NodeKey::try_from(index).unwrap_or(NodeKey::MAX)
}
