//! The `scorer` interface's records (contract 1.1.0): building and checking
//! a [`Context`], and checking and sanitising a guest's [`Scored`] answer.

use crate::types::{Context, ModelLoad, Scored};

/// Most prefix hashes a [`Context`] may carry (`scorer.context.prefix-hashes`
/// promises the guest at most 256).
pub const MAX_PREFIX_HASHES: usize = 256;

/// Most bytes of a scored answer's reason the host keeps; a longer reason is
/// cut at the last character boundary at or below it.
pub const MAX_REASON_BYTES: usize = 200;

impl Context {
    /// No prefix and no model-server load: every column empty (what a call
    /// without prompt or `affinity` hint, on nodes without `metrics_url`,
    /// gets).
    #[must_use]
    pub fn empty() -> Self {
        Self {
            prefix_hashes: Vec::new(),
            load_known: Vec::new(),
            waiting: Vec::new(),
            running: Vec::new(),
            kv_cache_pct: Vec::new(),
        }
    }

    /// The context of one call: its chained prefix hashes (first block
    /// first; only the first [`MAX_PREFIX_HASHES`] are kept) and, per
    /// candidate in the order of the candidates, its model server's load
    /// (a [`Candidate`](crate::types::Candidate)'s `model_load`), or `None`
    /// when its node reports none.
    ///
    /// Cheap when nothing is known: while every load is `None` the load
    /// columns stay empty (length 0, which the contract allows), so a pick
    /// on nodes without model-server metrics allocates only the prefix. A
    /// `kv_cache_pct` outside 0..=100 is clamped, a NaN becomes 0.
    #[must_use]
    pub fn new(prefix: &[u64], load: impl IntoIterator<Item = Option<ModelLoad>>) -> Self {
        let mut ctx = Self {
            prefix_hashes: prefix[..prefix.len().min(MAX_PREFIX_HASHES)].to_vec(),
            ..Self::empty()
        };
        let load = load.into_iter();
        let hint = load.size_hint().0;
        // Candidates seen so far while every load was `None`.
        let mut unknown = 0usize;
        for entry in load {
            match entry {
                None if ctx.load_known.is_empty() => unknown += 1,
                None => ctx.push(None, hint),
                Some(known) => {
                    if ctx.load_known.is_empty() {
                        for _ in 0..unknown {
                            ctx.push(None, hint);
                        }
                    }
                    ctx.push(Some(known), hint);
                }
            }
        }
        ctx
    }

    /// Appends one candidate to every load column (reserving `hint` rows on
    /// the first).
    fn push(&mut self, load: Option<ModelLoad>, hint: usize) {
        if self.load_known.capacity() == 0 {
            self.load_known.reserve(hint);
            self.waiting.reserve(hint);
            self.running.reserve(hint);
            self.kv_cache_pct.reserve(hint);
        }
        let ModelLoad {
            waiting,
            running,
            kv_cache_pct: kv,
        } = load.unwrap_or_default();
        let kv = if kv.is_nan() {
            0.0
        } else {
            kv.clamp(0.0, 100.0)
        };
        self.load_known.push(load.is_some());
        self.waiting.push(waiting);
        self.running.push(running);
        self.kv_cache_pct.push(kv);
    }

    /// Candidate `i`'s load, or `None` when it is unknown (or the load
    /// columns are empty).
    #[must_use]
    pub fn load(&self, i: usize) -> Option<ModelLoad> {
        if !*self.load_known.get(i)? {
            return None;
        }
        Some(ModelLoad {
            waiting: *self.waiting.get(i)?,
            running: *self.running.get(i)?,
            kv_cache_pct: *self.kv_cache_pct.get(i)?,
        })
    }

    /// Checks what the contract promises the guest for `n` candidates: at
    /// most [`MAX_PREFIX_HASHES`] prefix hashes, and every load column of
    /// length 0 or n.
    ///
    /// # Errors
    ///
    /// A description of the first column that breaks it.
    pub fn check(&self, n: usize) -> Result<(), String> {
        if self.prefix_hashes.len() > MAX_PREFIX_HASHES {
            return Err(format!(
                "context has {} prefix hashes, more than {MAX_PREFIX_HASHES}",
                self.prefix_hashes.len()
            ));
        }
        for (column, len) in [
            ("load-known", self.load_known.len()),
            ("waiting", self.waiting.len()),
            ("running", self.running.len()),
            ("kv-cache-pct", self.kv_cache_pct.len()),
        ] {
            if len != 0 && len != n {
                return Err(format!(
                    "context column `{column}` has {len} entries for {n} candidates (0 or {n})"
                ));
            }
        }
        Ok(())
    }
}

/// What is wrong with a guest's [`Scored`] answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadScored {
    /// An order index `>= n`.
    Index(u32),
    /// A `scores` list of this length, neither 0 nor n.
    Scores(usize),
}

/// Drops repeated indices of `order`, checking each is below `len`.
///
/// # Errors
///
/// The first index out of range.
pub(crate) fn dedup_order(order: Vec<u32>, len: usize) -> Result<Vec<u32>, u32> {
    let mut taken = vec![false; len];
    let mut ranked = Vec::with_capacity(order.len().min(len));
    for index in order {
        let Some(slot) = usize::try_from(index).ok().and_then(|i| taken.get_mut(i)) else {
            return Err(index);
        };
        if !std::mem::replace(slot, true) {
            ranked.push(index);
        }
    }
    Ok(ranked)
}

/// Checks and sanitises a guest's answer for `len` candidates: repeated
/// order indices dropped, non-finite scores set to 0, the reason cut to
/// [`MAX_REASON_BYTES`] on a character boundary with control characters
/// (line breaks included) replaced by spaces.
///
/// # Errors
///
/// [`BadScored::Index`] for the first order index `>= len`;
/// [`BadScored::Scores`] when `scores` has neither 0 nor `len` entries.
pub(crate) fn sanitise(scored: Scored, len: usize) -> Result<Scored, BadScored> {
    let Scored {
        order,
        mut scores,
        reason,
    } = scored;
    let order = dedup_order(order, len).map_err(BadScored::Index)?;
    if !scores.is_empty() && scores.len() != len {
        return Err(BadScored::Scores(scores.len()));
    }
    for score in &mut scores {
        if !score.is_finite() {
            *score = 0.0;
        }
    }
    Ok(Scored {
        order,
        scores,
        reason: clean_reason(reason),
    })
}

/// `reason` cut to [`MAX_REASON_BYTES`] at a character boundary, control
/// characters replaced by spaces (it ends up in logs, JSON and a response
/// header). Reuses the guest's string when it is clean.
fn clean_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    if reason.chars().any(char::is_control) {
        reason = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::{BadScored, MAX_REASON_BYTES, clean_reason, sanitise};
    use crate::types::{Context, ModelLoad, Scored};

    fn load(waiting: u32, running: u32, kv_cache_pct: f32) -> Option<ModelLoad> {
        Some(ModelLoad {
            waiting,
            running,
            kv_cache_pct,
        })
    }

    #[test]
    fn an_unknown_load_leaves_the_columns_empty() {
        let ctx = Context::new(&[1, 2, 3], [None, None, None]);
        assert_eq!(ctx.prefix_hashes, [1, 2, 3]);
        assert!(ctx.load_known.is_empty() && ctx.waiting.is_empty());
        assert_eq!(ctx.check(3), Ok(()));
        assert_eq!(ctx.load(0), None);
        assert_eq!(Context::empty(), Context::new(&[], []));
    }

    #[test]
    fn a_known_load_fills_every_column() {
        let ctx = Context::new(&[], [None, load(2, 3, 40.0), None, load(0, 1, 250.0)]);
        assert_eq!(ctx.load_known, [false, true, false, true]);
        assert_eq!(ctx.waiting, [0, 2, 0, 0]);
        assert_eq!(ctx.running, [0, 3, 0, 1]);
        assert_eq!(ctx.kv_cache_pct, [0.0, 40.0, 0.0, 100.0]);
        assert_eq!(ctx.load(1), load(2, 3, 40.0));
        assert_eq!(ctx.load(2), None);
        assert_eq!(ctx.check(4), Ok(()));
        assert!(ctx.check(3).is_err_and(|e| e.contains("load-known")));
    }

    #[test]
    fn the_prefix_is_bounded() {
        let long: Vec<u64> = (0..300).collect();
        let ctx = Context::new(&long, []);
        assert_eq!(ctx.prefix_hashes.len(), 256);
        let mut raw = Context::empty();
        raw.prefix_hashes = long;
        assert!(raw.check(1).is_err_and(|e| e.contains("300")));
    }

    #[test]
    fn answers_are_checked_and_sanitised() {
        let scored = |order: Vec<u32>, scores: Vec<f32>| Scored {
            order,
            scores,
            reason: "ok".into(),
        };
        let s = sanitise(
            scored(vec![2, 0, 2, 1], vec![1.0, f32::NAN, f32::INFINITY]),
            3,
        );
        assert_eq!(
            s,
            Ok(Scored {
                order: vec![2, 0, 1],
                scores: vec![1.0, 0.0, 0.0],
                reason: "ok".into()
            })
        );
        assert_eq!(
            sanitise(scored(vec![0, 3], vec![]), 3),
            Err(BadScored::Index(3))
        );
        assert_eq!(
            sanitise(scored(vec![0], vec![1.0; 2]), 3),
            Err(BadScored::Scores(2))
        );
    }

    #[test]
    fn reasons_are_cut_on_a_char_boundary_and_cleaned() {
        let long = "é".repeat(150); // 300 bytes, 2 per char
        let cut = clean_reason(long);
        assert_eq!(cut.len(), MAX_REASON_BYTES);
        let odd = format!("a{}", "é".repeat(150));
        assert_eq!(clean_reason(odd).len(), MAX_REASON_BYTES - 1);
        assert_eq!(clean_reason("two\nlines\t".into()), "two lines ");
    }
}
