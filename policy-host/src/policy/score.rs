//! [`Policy::score`]: the `scorer` export of contract 1.1.0, or `rank`
//! (`pick`) wrapped as an unexplained [`Scored`] for older plugins.

use std::sync::atomic::Ordering;

use wasmtime::Store;

use super::{Guests, Policy};
use crate::PolicyError;
use crate::host::HostState;
use crate::scoring::{BadScored, sanitise};
use crate::types::{Candidates, Context, Ranking, Request, Scored, Verdict};

impl Policy {
    /// Whether the plugin exports `scorer` (contract 1.1.0; then
    /// [`Self::score`] asks it, otherwise it asks `rank` or `pick`).
    pub fn scores(&self) -> bool {
        self.runtime.scorer.is_some()
    }

    /// Asks the guest to score and rank the candidates for one call, with a
    /// reason: its `score` export when it has one, else its `rank` (or
    /// `pick`) answer as [`Scored`] with no scores and an empty reason.
    /// Counted once in [`Self::picks_total`]; a trap rebuilds the instance
    /// as for [`Self::pick`].
    ///
    /// The answer is sanitised: repeated order indices are dropped,
    /// non-finite scores become 0, and the reason is cut to
    /// [`crate::MAX_REASON_BYTES`] (200) bytes on a character boundary,
    /// control characters replaced by spaces.
    ///
    /// # Errors
    ///
    /// As [`Self::rank`]; [`PolicyError::BadInput`] (the guest is not
    /// called) also when a load column of `ctx` has neither 0 nor n entries
    /// or it holds more than [`crate::MAX_PREFIX_HASHES`] (256) prefix
    /// hashes; [`PolicyError::BadDecision`] for the first order index `>= n`;
    /// [`PolicyError::BadScores`] when `scores` has neither 0 nor n entries.
    pub fn score(
        &self,
        req: &Request,
        candidates: &Candidates,
        ctx: &Context,
    ) -> Result<Verdict, PolicyError> {
        self.picks.fetch_add(1, Ordering::Relaxed);
        let bad_input = |reason| PolicyError::BadInput {
            policy: self.name.clone(),
            reason,
        };
        let len = candidates.check().map_err(bad_input)?;
        ctx.check(len).map_err(bad_input)?;
        if !self.scores() {
            return self.rank_uncounted(req, candidates).map(verdict_of);
        }
        let verdict =
            self.call(async |guests, store| guests.score(store, req, candidates, ctx).await)?;
        match verdict {
            Verdict::Scored(scored) => match sanitise(scored, len) {
                Ok(scored) => Ok(Verdict::Scored(scored)),
                Err(BadScored::Index(index)) => Err(PolicyError::BadDecision {
                    policy: self.name.clone(),
                    index,
                    len,
                }),
                Err(BadScored::Scores(scores)) => Err(PolicyError::BadScores {
                    policy: self.name.clone(),
                    scores,
                    len,
                }),
            },
            reject => Ok(reject),
        }
    }
}

impl Guests {
    /// The `scorer` export when there is one, else `rank` (or `pick`).
    async fn score(
        &self,
        store: &mut Store<HostState>,
        req: &Request,
        candidates: &Candidates,
        ctx: &Context,
    ) -> wasmtime::Result<Verdict> {
        match &self.scorer {
            Some(scorer) => scorer.call_score(store, req, candidates, ctx).await,
            // An instance always has the exports its component has.
            None => self.rank(store, req, candidates).await.map(verdict_of),
        }
    }
}

/// A ranking as an unexplained verdict: no scores, empty reason.
fn verdict_of(ranking: Ranking) -> Verdict {
    match ranking {
        Ranking::Order(order) => Verdict::Scored(Scored {
            order,
            scores: Vec::new(),
            reason: String::new(),
        }),
        Ranking::Reject(reason) => Verdict::Reject(reason),
    }
}
