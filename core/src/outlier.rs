//! Outlier ejection (Envoy's consecutive-failure detection, see
//! [`OutlierRules`](crate::config::OutlierRules)): counting a node's failed
//! calls per service, ejecting it from the service's candidates, and
//! letting it back when its time is up.

use std::time::Instant;

use crate::{Action, CallEnd, Core, NodeKey};

/// Why a node was ejected from a service's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectReason {
    /// Its calls failed `consecutive_failures` times in a row.
    ConsecutiveFailures,
    /// Its success rate fell below the fleet's (Envoy's `success_rate`).
    SuccessRate,
}

impl EjectReason {
    /// Its name in metrics and views: `consecutive_failures`,
    /// `success_rate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::SuccessRate => "success_rate",
        }
    }
}

impl Core {
    /// Counts how a call of `service` on `node` ended; ejects the node after
    /// too many failures in a row, if the rules allow one more ejection.
    pub(crate) fn count_outcome(
        &mut self,
        node: NodeKey,
        service: &str,
        end: CallEnd,
        now: Instant,
    ) {
        self.count_rate(node, service, end);
        let rules = self.config.outlier.clone();
        let Some(state) = self.fleet.service_mut(node, service) else {
            return;
        };
        match end {
            CallEnd::Ok => state.consecutive_failures = 0,
            CallEnd::Abandoned => {}
            CallEnd::Failed => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1)
            }
        }
        let failures = state.consecutive_failures;
        if rules.consecutive_failures == 0
            || failures < rules.consecutive_failures
            || !self.may_eject(service)
        {
            return;
        }
        self.eject(
            node,
            service,
            EjectReason::ConsecutiveFailures,
            failures,
            now,
        );
    }

    /// Ejects `node` from `service`'s candidates for the base ejection time
    /// × its ejections so far (at most the longest), and says so.
    pub(crate) fn eject(
        &mut self,
        node: NodeKey,
        service: &str,
        why: EjectReason,
        failures: u32,
        now: Instant,
    ) {
        let rules = self.config.outlier.clone();
        let Some(state) = self.fleet.service_mut(node, service) else {
            return;
        };
        state.ejections = state.ejections.saturating_add(1);
        state.consecutive_failures = 0;
        let ejection = rules
            .base_ejection
            .saturating_mul(state.ejections)
            .min(rules.max_ejection);
        let until = now + ejection;
        state.ejected_until = Some(until);
        state.ejected_why = Some(why);
        let count = state.ejections;
        self.next_unejection = Some(self.next_unejection.map_or(until, |t| t.min(until)));
        tracing::warn!(
            node,
            service,
            why = why.as_str(),
            failures,
            ?ejection,
            count,
            "node ejected from the service's candidates"
        );
        self.out.push(Action::Ejected {
            node,
            service: service.to_string(),
            why,
            failures,
            ejection,
            count,
        });
    }

    /// Whether one more node of `service` may be ejected: fewer than
    /// `max_ejected_percent` of the nodes with it loaded are out (at least
    /// one may be), and one would still be in.
    pub(crate) fn may_eject(&self, service: &str) -> bool {
        let (mut loaded, mut ejected) = (0usize, 0usize);
        for node in self
            .fleet
            .iter()
            .filter(|n| !n.draining && n.is_loaded(service))
        {
            loaded += 1;
            if node.is_ejected(service) {
                ejected += 1;
            }
        }
        let percent = self.config.outlier.max_ejected_percent as usize;
        let most = (loaded * percent / 100).max(1);
        ejected < most && loaded > ejected + 1
    }

    /// Lets back every node whose ejection ended by `now`, and serves the
    /// queues of their services.
    pub(crate) fn uneject(&mut self, now: Instant) {
        if self.next_unejection.is_none_or(|t| t > now) {
            return;
        }
        let mut back = Vec::new();
        let mut next: Option<Instant> = None;
        for node in self.fleet.nodes_mut() {
            for (service, state) in &mut node.services {
                match state.ejected_until {
                    Some(until) if until <= now => {
                        state.ejected_until = None;
                        back.push(service.clone());
                        tracing::info!(
                            node = node.key,
                            service,
                            "node back in the service's candidates"
                        );
                    }
                    Some(until) => next = Some(next.map_or(until, |t| t.min(until))),
                    None => {}
                }
            }
        }
        self.next_unejection = next;
        back.sort();
        back.dedup();
        for service in back {
            self.kick(&service, now);
        }
    }
}
