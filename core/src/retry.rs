//! Retries and circuit breakers: the rules ([`RetryRules`], [`Breakers`])
//! and the core's side of them.
//!
//! A retry is asked for by the shell ([`Event::RetryAsked`]) once a
//! dispatched call failed on its node and the shell found the call
//! idempotent, its error retryable and its deadline not passed. The core
//! frees the slot, counts the failure towards the node's outlier ejection,
//! and either refuses ([`Action::RetryRefused`]: too many attempts, the
//! retry budget or the retries breaker) or keeps the call backing off
//! ([`Action::RetryAfter`]) until the shell says its backoff is over
//! ([`Event::RetryDue`]); the call is then admitted again, never to a node
//! it already tried while another one hosts its service.
//!
//! Semantics of Envoy's retry policy (`retry_on`, `num_retries`, jittered
//! exponential backoff from `base_interval` to `max_interval`), Envoy's
//! `retry_budget` (`budget_percent`) with linkerd's `min_retries_per_second`
//! floor, and Envoy's circuit breakers (`max_pending_requests`,
//! `max_requests`, `max_retries`).

use std::time::{Duration, Instant};

use protocol::{CallError, ErrorKind};

use crate::{Action, CallEnd, CallId, Core, Stage};

/// How calls are retried: attempts, backoff and the retry budget.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryRules {
    /// Most attempts of one call, the first one included (default 3; 1
    /// turns retries off).
    pub max_attempts: u32,
    /// Backoff before the first retry (default 25 ms, Envoy's
    /// `base_interval`); it doubles with each retry, at most
    /// `max_backoff`, and the wait is drawn uniformly below it (full
    /// jitter).
    pub base_backoff: Duration,
    /// Longest backoff (default 250 ms, Envoy's `max_interval`).
    pub max_backoff: Duration,
    /// Retries under way of a service may be at most this % of its calls
    /// under way (default 20, Envoy's `retry_budget.budget_percent`).
    pub budget_percent: u32,
    /// Beyond the percentage, this many retries per second and service are
    /// always allowed (default 3, linkerd's `min_retries_per_second`; a
    /// token bucket holding one second's worth).
    pub min_retries_per_second: u32,
}

impl Default for RetryRules {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            budget_percent: 20,
            min_retries_per_second: 3,
        }
    }
}

impl RetryRules {
    /// The backoff before retry number `retry` (1 = the first), `jitter`
    /// in `0.0..1.0` (clamped; NaN counts as 0): `jitter` × min(base ×
    /// 2^(retry−1), max).
    pub fn backoff(&self, retry: u32, jitter: f32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros((micros as f64 * f64::from(jitter)) as u64)
    }
}

/// Circuit breakers of a service (Envoy's `max_pending_requests`,
/// `max_requests`, `max_retries`): past a limit a call is refused with
/// `overloaded` at once, and a retry is refused. `None`: no limit (the
/// default for each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breakers {
    /// Most calls waiting in the service's queue.
    pub max_waiting: Option<u32>,
    /// Most calls under way: running on nodes plus waiting.
    pub max_in_flight: Option<u32>,
    /// Most retries under way (backing off, waiting or running).
    pub max_retries_in_flight: Option<u32>,
}

/// Which circuit breaker tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// `max_waiting`.
    Waiting,
    /// `max_in_flight`.
    InFlight,
    /// `max_retries_in_flight`.
    Retries,
}

impl Breaker {
    /// Its name in metrics and views: `max_waiting`, `max_in_flight`,
    /// `max_retries_in_flight`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "max_waiting",
            Self::InFlight => "max_in_flight",
            Self::Retries => "max_retries_in_flight",
        }
    }
}

/// Why a retry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRefusal {
    /// The call had its `max_attempts`.
    Attempts,
    /// The retry budget is spent: too many retries under way and no token
    /// left this second.
    Budget,
    /// The service's `max_retries_in_flight` breaker.
    Breaker,
}

impl RetryRefusal {
    /// Its name in metrics: `attempts`, `budget`, `breaker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attempts => "attempts",
            Self::Budget => "budget",
            Self::Breaker => "breaker",
        }
    }
}

/// Per service: the floor of the retry budget, a token bucket refilled at
/// `min_retries_per_second`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per service counters for the views.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryCounters {
    /// Retries granted.
    pub retries_total: u64,
    /// Retries refused by the budget or the retries breaker.
    pub refused_total: u64,
    /// Calls refused by the waiting or in-flight breakers.
    pub tripped_total: u64,
}

impl Core {
    /// A dispatched call failed on its node and the shell would run it
    /// again: frees the slot, counts the failure, then grants a retry
    /// after a backoff (`jitter` in `0.0..1.0`) or refuses it. A call that
    /// never ran (`not_run`) is refused only past its attempts.
    pub(crate) fn retry_asked(&mut self, call: CallId, jitter: f32, not_run: bool, now: Instant) {
        let Some((service, node, same)) = self.release(call) else {
            return;
        };
        if same {
            self.count_outcome(node, &service, CallEnd::Failed, now);
        }
        match self.may_retry(call, &service, not_run, now) {
            Err(why) => {
                self.calls.remove(&call);
                let counters = self.retry_counters.entry(service.clone()).or_default();
                if why != RetryRefusal::Attempts {
                    counters.refused_total += 1;
                }
                self.out.push(Action::RetryRefused { call, why });
            }
            Ok(()) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.attempt = c.attempt.saturating_add(1);
                    if !c.exclude.contains(&node) {
                        c.exclude.push(node);
                    }
                    c.stage = Stage::Backoff;
                    let attempt = c.attempt;
                    let backoff = self.config.retry.backoff(attempt - 1, jitter);
                    self.retry_counters
                        .entry(service.clone())
                        .or_default()
                        .retries_total += 1;
                    self.out.push(Action::RetryAfter {
                        call,
                        attempt,
                        backoff,
                    });
                }
            }
        }
        self.kick(&service, now);
    }

    /// A dispatched call's node was full: frees the slot, takes the node's
    /// service as full until its next load report, and grants the call
    /// another try after a short backoff (`jitter` in `0.0..1.0`) at the
    /// same attempt number. Counts nothing against the node or the budget.
    pub(crate) fn node_full(&mut self, call: CallId, jitter: f32, now: Instant) {
        let Some((service, node, same)) = self.release(call) else {
            return;
        };
        if same && let Some(n) = self.fleet.get_mut(node) {
            n.mark_full(&service);
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.stage = Stage::Backoff;
            let attempt = c.attempt;
            let backoff = self.config.retry.backoff(1, jitter);
            self.out.push(Action::RetryAfter {
                call,
                attempt,
                backoff,
            });
        }
        self.kick(&service, now);
    }

    /// Whether `call` of `service` may run once more: attempts left, and
    /// unless it never ran (`not_run`), under the retries breaker and
    /// within the retry budget.
    fn may_retry(
        &mut self,
        call: CallId,
        service: &str,
        not_run: bool,
        now: Instant,
    ) -> Result<(), RetryRefusal> {
        let Some(c) = self.calls.get(&call) else {
            return Err(RetryRefusal::Attempts);
        };
        if c.attempt >= self.config.retry.max_attempts {
            return Err(RetryRefusal::Attempts);
        }
        if not_run {
            return Ok(());
        }
        let (mut active, mut retrying) = (0u64, 0u64);
        for (id, c) in &self.calls {
            if c.head.service == service {
                active += 1;
                if c.attempt > 1 && *id != call {
                    retrying += 1;
                }
            }
        }
        if let Some(max) = self.config.breakers(service).max_retries_in_flight
            && retrying >= u64::from(max)
        {
            self.out.push(Action::BreakerTripped {
                service: service.to_string(),
                breaker: Breaker::Retries,
            });
            return Err(RetryRefusal::Breaker);
        }
        let percent = u64::from(self.config.retry.budget_percent);
        if (retrying + 1) * 100 <= percent * active {
            return Ok(());
        }
        let rate = f64::from(self.config.retry.min_retries_per_second);
        let bucket = self
            .retry_tokens
            .entry(service.to_string())
            .or_insert(Bucket {
                tokens: rate,
                at: now,
            });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(RetryRefusal::Budget)
    }

    /// A retried call's backoff is over: it is admitted again, to a node it
    /// has not tried if one hosts the service.
    pub(crate) fn retry_due(&mut self, call: CallId, now: Instant) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !matches!(c.stage, Stage::Backoff) {
            return;
        }
        c.stage = Stage::Picking {
            offered: Vec::new(),
        };
        let service = c.head.service.clone();
        let untried = self
            .fleet
            .hosting(&service)
            .any(|n| !c.exclude.contains(&n.key));
        if !untried {
            // Every node left was tried: any of them may run it again.
            c.exclude.clear();
        }
        if !self.fleet.serves(&service) {
            return self.reject(
                call,
                ErrorKind::NoNodeAvailable,
                format!("no node serves {service:?} for the call's retry"),
            );
        }
        self.admit(call, now);
    }

    /// Refuses an arriving call when a breaker of its service is open:
    /// `overloaded` at once. Returns whether it was refused.
    pub(crate) fn breakers_refuse(&mut self, call: CallId, service: &str) -> bool {
        let limits = self.config.breakers(service);
        let waiting = self.queues.get(service).map_or(0, |q| q.len());
        let tripped = if let Some(max) = limits.max_waiting
            && waiting as u64 >= u64::from(max)
        {
            Some((Breaker::Waiting, waiting as u64, max))
        } else if let Some(max) = limits.max_in_flight {
            // Counted over the fleet only when a bound asks for it.
            let running: u64 = self
                .fleet
                .iter()
                .map(|n| u64::from(n.in_flight(service)))
                .sum();
            (running + waiting as u64 >= u64::from(max)).then_some((
                Breaker::InFlight,
                running + waiting as u64,
                max,
            ))
        } else {
            None
        };
        let Some((breaker, now, max)) = tripped else {
            return false;
        };
        self.retry_counters
            .entry(service.to_string())
            .or_default()
            .tripped_total += 1;
        self.out.push(Action::BreakerTripped {
            service: service.to_string(),
            breaker,
        });
        self.calls.remove(&call);
        self.out.push(Action::Reject {
            call,
            error: CallError::new(
                ErrorKind::Overloaded,
                format!(
                    "circuit breaker {} of {service:?} is open ({now} of at most {max})",
                    breaker.as_str()
                ),
            ),
        });
        true
    }

    /// The retry and breaker counters of `service`.
    pub fn retry_counters(&self, service: &str) -> RetryCounters {
        self.retry_counters
            .get(service)
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_scales_with_jitter() {
        let rules = RetryRules::default();
        assert_eq!(rules.backoff(1, 1.0), Duration::from_millis(25));
        assert_eq!(rules.backoff(2, 1.0), Duration::from_millis(50));
        assert_eq!(rules.backoff(5, 1.0), Duration::from_millis(250));
        assert_eq!(rules.backoff(40, 1.0), Duration::from_millis(250));
        assert_eq!(rules.backoff(2, 0.5), Duration::from_millis(25));
        assert_eq!(rules.backoff(1, f32::NAN), Duration::ZERO);
        assert_eq!(rules.backoff(1, 7.0), Duration::from_millis(25));
    }
}
