//! Building a [`Policy::score`](crate::Policy::score) answer around a
//! policy's own choice.

use std::cmp::Ordering;

use crate::index_u32;

/// The score of a candidate the policy's filters ruled out (a requirement
/// or limit it misses): the lowest finite `f32`, below every real score.
/// Scores must be finite: the host turns NaN and infinities into 0.
pub const EXCLUDED: f32 = f32::MIN;

/// A score computed in `f64` as the finite `f32` the host keeps: clamped to
/// the `f32` range (so `-inf` is [`EXCLUDED`]), NaN as [`EXCLUDED`], `-0`
/// as 0 (a negated idle figure reads `0`, not `-0`).
#[must_use]
pub fn to_score(x: f64) -> f32 {
    if x.is_nan() {
        return EXCLUDED;
    }
    // In range after the clamp, so the cast only rounds; `+ 0.0` turns -0
    // into 0.
    #[allow(clippy::cast_possible_truncation)]
    let score = (x.clamp(f64::from(f32::MIN), f64::from(f32::MAX)) + 0.0) as f32;
    score
}

/// How many of the other candidates a ranking from [`order_after`] names
/// after its first: the gateway tries those it does not name after them,
/// in turn (the WIT's `order` "may name fewer than n").
pub const RANKED_AFTER_FIRST: usize = 15;

/// The order `first`, then the best [`RANKED_AFTER_FIRST`] indices of
/// `rest` (`first` skipped if it is among them) by `cmp`, stably (ties in
/// `rest`'s order): the ranking of a policy whose first choice comes from
/// its own rule (power of two choices, a draw, a turn) and whose fallbacks
/// come from a plain comparison.
///
/// One pass over `rest` keeping the best few in order: each index is
/// compared with the worst kept (one `cmp`) and only a better one is
/// inserted (a binary search among the few). O(n) comparisons over a whole
/// fleet's candidates, about n + 4·k·ln(n/k) for k kept, where a selection
/// then a sort made about 3n.
///
/// # Errors
/// An index that does not fit the WIT `u32` (more than `u32::MAX`
/// candidates).
pub fn order_after(
    first: usize,
    rest: impl IntoIterator<Item = usize>,
    mut cmp: impl FnMut(usize, usize) -> Ordering,
) -> Result<Vec<u32>, String> {
    let mut kept: Vec<usize> = Vec::with_capacity(RANKED_AFTER_FIRST + 1);
    for i in rest.into_iter().filter(|&i| i != first) {
        // Every kept index came earlier in `rest`, so it wins a tie.
        if kept.len() == RANKED_AFTER_FIRST {
            match kept.last() {
                Some(&worst) if cmp(i, worst) == Ordering::Less => {
                    kept.pop();
                }
                _ => continue,
            }
        }
        let at = kept.partition_point(|&k| cmp(k, i) != Ordering::Greater);
        kept.insert(at, i);
    }
    std::iter::once(first).chain(kept).map(index_u32).collect()
}

#[cfg(test)]
mod tests {
    use super::{EXCLUDED, RANKED_AFTER_FIRST, order_after, to_score};

    #[test]
    fn scores_are_finite() {
        assert!((to_score(-0.25) + 0.25).abs() < f32::EPSILON);
        assert_eq!(to_score(f64::NAN), EXCLUDED);
        assert_eq!(to_score(f64::NEG_INFINITY), EXCLUDED);
        assert_eq!(to_score(-1e300), EXCLUDED);
        assert_eq!(to_score(f64::INFINITY), f32::MAX);
        assert!(to_score(-0.0).is_sign_positive());
    }

    #[test]
    fn the_few_kept_are_a_stable_sort_s_first() {
        // Against the plain definition: a stable sort of the rest, cut.
        let mut rng = crate::SplitMix64::new(42);
        for n in [0, 1, 2, 15, 16, 17, 40, 1000] {
            for spread in [1, 3, 50, 1_000_000] {
                let key: Vec<usize> = (0..n).map(|_| rng.below(spread)).collect();
                let first = if n == 0 { 0 } else { rng.below(n) };
                let mut want: Vec<usize> = (0..n).filter(|&i| i != first).collect();
                want.sort_by_key(|&i| key[i]);
                want.truncate(RANKED_AFTER_FIRST);
                let want: Vec<u32> = std::iter::once(first)
                    .chain(want)
                    .map(|i| u32::try_from(i).expect("small"))
                    .collect();
                let got = order_after(first, 0..n, |a, b| key[a].cmp(&key[b]));
                assert_eq!(got, Ok(want), "n {n}, spread {spread}");
            }
        }
    }

    #[test]
    fn first_then_the_rest_sorted_stably() {
        let key = [3, 1, 2, 1];
        let order = order_after(2, 0..4, |a, b| key[a].cmp(&key[b]));
        assert_eq!(order, Ok(vec![2, 1, 3, 0]));
        // Of many, the first and the best few, ties in the given order.
        let many = order_after(7, (0..100).rev(), |a, b| (a % 10).cmp(&(b % 10))).expect("order");
        let want: Vec<u32> = std::iter::once(7)
            .chain([90, 80, 70, 60, 50, 40, 30, 20, 10, 0, 91, 81, 71, 61, 51])
            .collect();
        assert_eq!(many, want);
        assert_eq!(
            order_after(0, [], |_, _| std::cmp::Ordering::Equal),
            Ok(vec![0])
        );
    }
}
