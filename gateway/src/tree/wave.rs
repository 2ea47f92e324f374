//! Echo waves at this gateway ([`switchyard_tree::wave`] drives them):
//! apply the pushed change here, probe every gateway child on a stream of
//! its own, gather their answers until each answered or the time is up,
//! and answer with the subtree, flat ([`protocol::Subtree`]). The root
//! starts a wave for `GET /api/topology` and for a confirmed push; a child
//! runs one for each probe its parent sends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::{Codec, GatewayReport, Message, Probe, Push, Subtree as WireSubtree, TreeNode};
use switchyard_tree::wave::{Action, Branch, Echo, Event, Subtree};
use transport::FramedRecv;

use crate::Shared;
use crate::fleet::Node;

/// Time an answer takes to come up one level, with a margin: a child must
/// answer this much before its parent's deadline.
pub(crate) const HOP: Duration = Duration::from_millis(250);

/// Longest a wave may run, ms.
pub(crate) const MAX_WAVE_MS: u32 = 60_000;

/// Wave ids this gateway started.
static NEXT_WAVE: AtomicU64 = AtomicU64::new(1);

/// A new wave id.
pub(crate) fn next_wave() -> u64 {
    NEXT_WAVE.fetch_add(1, Ordering::Relaxed)
}

/// One gateway's own part of a wave's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Own {
    nodes: Vec<TreeNode>,
    queued: u32,
    push_error: Option<String>,
}

/// Runs wave `wave` at this gateway: applies `push` here, probes the
/// gateway children, and returns the subtree once every child answered
/// or `deadline` came (branches that did not answer marked missing).
pub(crate) async fn run(
    shared: &Arc<Shared>,
    wave: u64,
    deadline: Instant,
    push: Option<Push>,
) -> Vec<GatewayReport> {
    let push_error = match &push {
        Some(push) => apply(shared, push).await.err(),
        None => None,
    };
    let own = own_part(shared, push_error);
    let children: BTreeMap<String, Arc<Node>> = shared
        .registry
        .all()
        .into_iter()
        .filter(|n| n.spec.gateway)
        .map(|n| (n.spec.id.clone(), n))
        .collect();
    let now = Instant::now();
    let (mut echo, actions) = Echo::start(
        wave,
        shared.tree.id(),
        own,
        children.keys().cloned(),
        deadline,
        HOP,
        now,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(children.len().max(1));
    let mut done = None;
    for action in actions {
        match action {
            Action::Probe(probe) => {
                let Some(node) = children.get(&probe.child).cloned() else {
                    continue;
                };
                let (tx, push) = (tx.clone(), push.clone());
                let codec = shared.codec;
                tokio::spawn(async move {
                    let event = ask(&node, codec, wave, (probe.deadline, deadline), push).await;
                    let _ = tx.send(event).await;
                });
            }
            Action::Done(subtree) => done = Some(subtree),
        }
    }
    drop(tx);
    while done.is_none() {
        let event = match echo.next_timeout() {
            Some(at) => tokio::select! {
                event = rx.recv() => event.unwrap_or(Event::Tick),
                () = tokio::time::sleep_until(at.into()) => Event::Tick,
            },
            None => break,
        };
        for action in echo.handle(event, Instant::now()) {
            if let Action::Done(subtree) = action {
                done = Some(subtree);
            }
        }
    }
    done.map(|t| flatten(&t)).unwrap_or_default()
}

/// Probes child `node` for wave `wave`, to answer by its deadline; its
/// answer is awaited until this gateway's own (`deadlines`: the child's,
/// then this gateway's), since the child answers at its deadline at the
/// latest and the answer takes the hop between the two to come up.
async fn ask(
    node: &Node,
    codec: Codec,
    wave: u64,
    (deadline, own_deadline): (Instant, Instant),
    push: Option<Push>,
) -> Event<Own> {
    let child = node.spec.id.clone();
    let unreachable = |why: String| Event::Unreachable {
        child: child.clone(),
        why,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let probe = Probe {
        wave,
        timeout_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1),
        push,
    };
    let exchange = async {
        let (mut send, recv) = transport::open_bi(&node.connection, codec)
            .await
            .map_err(|e| format!("cannot open a stream: {e}"))?;
        let mut recv: FramedRecv = recv;
        send.send(&Message::Probe(Box::new(probe)))
            .await
            .map_err(|e| format!("cannot send the probe: {e}"))?;
        let _ = send.finish();
        match recv.recv().await {
            Ok(Some(Message::Subtree(answer))) => {
                answer
                    .validate(&child)
                    .map_err(|e| format!("bad answer: {e}"))?;
                Ok(*answer)
            }
            Ok(Some(Message::Error(e))) => Err(e.message),
            Ok(Some(other)) => Err(format!("answered a {:?} frame", other.kind())),
            Ok(None) => Err("closed the stream without answering".into()),
            Err(e) => Err(format!("{e}")),
        }
    };
    match tokio::time::timeout_at(own_deadline.into(), exchange).await {
        // The echo counts a late answer as missing at its deadline.
        Err(_) => Event::Tick,
        Ok(Err(why)) => unreachable(why),
        Ok(Ok(answer)) => match unflatten(&answer.gateways) {
            Some(subtree) => Event::Answered {
                child: child.clone(),
                subtree,
            },
            None => unreachable("an answer without its own gateway".into()),
        },
    }
}

/// Applies `push` here.
///
/// # Errors
/// Why it could not be applied (a policy not loaded here, a store that
/// did not take it).
async fn apply(shared: &Arc<Shared>, push: &Push) -> Result<(), String> {
    let done = match push {
        Push::SetPolicy { service, policy } => {
            crate::sync::set_service_policy(shared, service, policy)
                .await
                .map(|_| ())
        }
        Push::PurgeCache { service } => crate::sync::purge_cache(shared, service.as_deref())
            .await
            .map(|_| ()),
        Push::Drain { node, draining } => {
            match crate::sync::set_draining(shared, node, *draining).await {
                // Not here: nothing to do at this gateway.
                Err(crate::sync::SyncError::UnknownNode(_)) => Ok(()),
                other => other.map(|_| ()),
            }
        }
        Push::JobSettings { max_per_node } => {
            let settings = protocol::JobSettings {
                max_per_node: *max_per_node,
            };
            return match shared.jobs() {
                Ok(jobs) => jobs
                    .set_settings(&crate::jobs::Access::Admin, settings)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
            .inspect(|()| tracing::info!(?push, "applied a change pushed down the tree"))
            .inspect_err(
                |e| tracing::warn!(?push, error = %e, "cannot apply a change pushed down the tree"),
            );
        }
    };
    match done {
        Ok(()) => {
            tracing::info!(?push, "applied a change pushed down the tree");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(?push, error = %e, "cannot apply a change pushed down the tree");
            Err(e.to_string())
        }
    }
}

/// This gateway's own part: its plain nodes and its queue.
fn own_part(shared: &Shared, push_error: Option<String>) -> Own {
    let (nodes, queued) = shared.scheduler.read(|core| {
        let nodes = core
            .fleet()
            .iter()
            .filter(|n| !n.spec.gateway)
            .take(protocol::MAX_REPORT_NODES)
            .map(|n| TreeNode {
                id: n.spec.id.clone(),
                services: n.services.keys().cloned().collect(),
                in_flight: n.load_total(),
                capacity: n
                    .services
                    .values()
                    .fold(0u32, |sum, s| sum.saturating_add(s.max_concurrent)),
                cpu_pct: n.stats.as_ref().map_or(0.0, |s| s.cpu_pct),
                draining: n.draining,
            })
            .collect();
        (
            nodes,
            u32::try_from(core.queued_total()).unwrap_or(u32::MAX),
        )
    });
    Own {
        nodes,
        queued,
        push_error,
    }
}

/// The subtree as the wire's flat list: this gateway first, then each
/// branch depth first; every path starts at this gateway.
pub(crate) fn flatten(tree: &Subtree<Own>) -> Vec<GatewayReport> {
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), &mut out);
    out.truncate(protocol::MAX_WAVE_GATEWAYS);
    out
}

fn walk(tree: &Subtree<Own>, path: &mut Vec<String>, out: &mut Vec<GatewayReport>) {
    path.push(tree.id.clone());
    out.push(GatewayReport {
        path: path.clone(),
        missing: None,
        nodes: tree.own.nodes.clone(),
        queued: tree.own.queued,
        push_error: tree.own.push_error.clone(),
    });
    for branch in &tree.children {
        match branch {
            Branch::Answered(child) => walk(child, path, out),
            Branch::Missing { child, why } => {
                let mut at = path.clone();
                at.push(child.clone());
                out.push(GatewayReport {
                    path: at,
                    missing: Some(why.to_string()),
                    nodes: Vec::new(),
                    queued: 0,
                    push_error: None,
                });
            }
        }
    }
    path.pop();
}

/// A child's flat answer as a subtree (its first report is its own);
/// `None` without one. Reports whose parent is not in the answer are
/// dropped.
pub(crate) fn unflatten(reports: &[GatewayReport]) -> Option<Subtree<Own>> {
    let first = reports.first()?;
    Some(build(first, reports))
}

fn build(report: &GatewayReport, reports: &[GatewayReport]) -> Subtree<Own> {
    let depth = report.path.len();
    let children = reports
        .iter()
        .filter(|r| r.path.len() == depth + 1 && r.path[..depth] == report.path[..])
        .map(|r| match &r.missing {
            Some(why) => Branch::Missing {
                child: r.path[depth].clone(),
                why: switchyard_tree::wave::Missing::Unreachable(why.clone()),
            },
            None => Branch::Answered(build(r, reports)),
        })
        .collect();
    Subtree {
        id: report.path[depth - 1].clone(),
        own: Own {
            nodes: report.nodes.clone(),
            queued: report.queued,
            push_error: report.push_error.clone(),
        },
        children,
    }
}

/// Answers a probe from the parent: runs the wave here, within the time
/// it gave, and returns the answer.
pub(crate) async fn answer(shared: &Arc<Shared>, probe: Probe) -> WireSubtree {
    let timeout = Duration::from_millis(u64::from(probe.timeout_ms.min(MAX_WAVE_MS)));
    let deadline = Instant::now() + timeout;
    let gateways = run(shared, probe.wave, deadline, probe.push).await;
    WireSubtree {
        wave: probe.wave,
        gateways,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(queued: u32) -> Own {
        Own {
            nodes: Vec::new(),
            queued,
            push_error: None,
        }
    }

    #[test]
    fn a_subtree_goes_flat_and_back() {
        let tree = Subtree {
            id: "a".into(),
            own: own(1),
            children: vec![
                Branch::Answered(Subtree {
                    id: "a1".into(),
                    own: own(2),
                    children: vec![Branch::Answered(Subtree::leaf("a11", own(3)))],
                }),
                Branch::Missing {
                    child: "a2".into(),
                    why: switchyard_tree::wave::Missing::TimedOut,
                },
            ],
        };
        let flat = flatten(&tree);
        let paths: Vec<String> = flat.iter().map(|r| r.path.join("/")).collect();
        assert_eq!(paths, ["a", "a/a1", "a/a1/a11", "a/a2"]);
        assert_eq!(flat[3].missing.as_deref(), Some("no answer in time"));
        let back = unflatten(&flat).expect("a tree");
        assert_eq!(back.len(), 3);
        assert!(back.is_partial());
        assert_eq!(back.depth(), 3);
        assert_eq!(flatten(&back).len(), 4);
        assert!(unflatten(&[]).is_none());
    }
}
