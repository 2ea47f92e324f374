//! A loaded [`Policy`] as the scheduling core's [`Balance`]: the one
//! conversion of a [`PickRequest`] into the WIT's request, candidate
//! columns and scoring context, the call of [`Policy::score`] (which falls
//! back to `rank` or `pick` for older plugins), and the conversion of its
//! verdict into a [`Ranking`] that carries the policy's scores and reason.
//! The gateway and the simulator both pick through it.

use std::borrow::Borrow;
use std::time::Instant;

use protocol::{CallError, ErrorKind};
use switchyard_core::{Balance, NodeKey, PickError, PickRequest, Ranking};

use crate::types::{Candidates, Context, Outcome, Request, Verdict};
use crate::{Policy, PolicyError};

/// Why a pick through a policy gave no ranking.
#[derive(Debug)]
pub enum PickFailure {
    /// The policy rejected the call (its `reject` answer).
    Rejected {
        /// The policy's name.
        policy: String,
        /// The reason it gave, returned to the caller.
        reason: String,
    },
    /// The policy call failed: a trap, the deadline, a bad answer, a bad
    /// input, or a rebuild under way ([`PolicyError`]).
    Failed(PolicyError),
}

impl From<PickFailure> for PickError {
    /// A rejection becomes [`PickError::Refused`] with kind `Rejected` and
    /// the message `policy NAME rejected the call: REASON`; a failure
    /// becomes [`PickError::Failed`] with the error's message (the core
    /// then falls back, or fails the call when failing closed).
    fn from(failure: PickFailure) -> Self {
        match failure {
            PickFailure::Rejected { policy, reason } => PickError::Refused(CallError::new(
                ErrorKind::Rejected,
                format!("policy {policy} rejected the call: {reason}"),
            )),
            PickFailure::Failed(error) => PickError::Failed(error.to_string()),
        }
    }
}

/// A loaded policy with the clock and the randomness its calls see: a
/// [`Balance`] for the core, or for [`switchyard_core::drive`].
///
/// `P` holds the policy (`Policy`, `&Policy` or `Arc<Policy>`). Each
/// request's `now_ms` is the time from `base` to the `now` of the pick, in
/// whole milliseconds; its `random` is the next value of `random` (the
/// caller's RNG: the gateway's seeded or OS-seeded one, the simulator's
/// seeded per run), drawn once per pick.
pub struct PolicyBalance<P, R> {
    policy: P,
    base: Instant,
    random: R,
    failures: u64,
}

impl<P: Borrow<Policy>, R: FnMut() -> u64> PolicyBalance<P, R> {
    /// `policy` with time counted from `base` and each pick's `random`
    /// drawn from `random`.
    pub fn new(policy: P, base: Instant, random: R) -> Self {
        Self {
            policy,
            base,
            random,
            failures: 0,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        self.policy.borrow()
    }

    /// Picks and observes through this adapter whose policy call failed
    /// ([`PickFailure::Failed`], or an `Err` of [`Self::observe`]); a
    /// rejection is no failure.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Milliseconds from `base` to `now` (0 before `base`): the clock the
    /// policy sees.
    pub fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// Asks the policy to score `request`'s candidates at `now`: the
    /// ranking of their nodes, best first, with the policy's scores (one
    /// per candidate, in the order of `request.candidates`, or none) and
    /// its reason, both checked and sanitised by [`Policy::score`].
    ///
    /// # Errors
    /// [`PickFailure::Rejected`] when the policy rejects the call;
    /// [`PickFailure::Failed`] with the [`PolicyError`] when the call fails
    /// (counted in [`Self::failures`]).
    pub fn rank(&mut self, request: &PickRequest, now: Instant) -> Result<Ranking, PickFailure> {
        let head = &request.head;
        let req = Request {
            service: head.service.clone(),
            payload_bytes: head.payload_len,
            hints: head.hints.clone(),
            now_ms: self.now_ms(now),
            random: (self.random)(),
        };
        let candidates = &request.candidates;
        let columns = Candidates::from(candidates.as_slice());
        let context = Context::new(&request.prefix, candidates.iter().map(|c| c.model_load));
        let policy: &Policy = self.policy.borrow();
        match policy.score(&req, &columns, &context) {
            // The host checked the indices: each names a candidate.
            Ok(Verdict::Scored(scored)) => Ok(Ranking {
                nodes: scored
                    .order
                    .iter()
                    .filter_map(|&i| candidates.get(usize::try_from(i).ok()?).map(|c| c.node))
                    .collect(),
                scores: scored.scores,
                reason: scored.reason,
            }),
            Ok(Verdict::Reject(reason)) => Err(PickFailure::Rejected {
                policy: policy.name().to_owned(),
                reason,
            }),
            Err(error) => {
                self.failures += 1;
                Err(PickFailure::Failed(error))
            }
        }
    }

    /// Tells the policy how a call it placed ended: `service`, the `node`
    /// that served it, its node time `latency_ms` (ms), whether it
    /// succeeded, at `now`.
    ///
    /// # Errors
    /// The [`PolicyError`] of a failed `observe` call (counted in
    /// [`Self::failures`]).
    pub fn observe(
        &mut self,
        service: &str,
        node: NodeKey,
        latency_ms: f32,
        ok: bool,
        now: Instant,
    ) -> Result<(), PolicyError> {
        let outcome = Outcome {
            service: service.to_owned(),
            node,
            latency_ms,
            ok,
            now_ms: self.now_ms(now),
        };
        let result = self.policy.borrow().observe(&outcome);
        if result.is_err() {
            self.failures += 1;
        }
        result
    }
}

impl<P: Borrow<Policy>, R: FnMut() -> u64> Balance for PolicyBalance<P, R> {
    /// [`PolicyBalance::rank`], its failure as a [`PickError`].
    fn pick(&mut self, request: &PickRequest, now: Instant) -> Result<Ranking, PickError> {
        self.rank(request, now).map_err(PickError::from)
    }
}

impl<P: Borrow<Policy>, R> std::fmt::Debug for PolicyBalance<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyBalance")
            .field("policy", &self.policy.borrow().name())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}
