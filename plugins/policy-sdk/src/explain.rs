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

/// The order `first`, then the indices of `rest` (`first` skipped if it is
/// among them) sorted by `cmp`, stably: the ranking of a policy whose first
/// choice comes from its own rule (power of two choices, a draw, a turn)
/// and whose fallbacks come from a plain comparison.
///
/// # Errors
/// An index that does not fit the WIT `u32` (more than `u32::MAX`
/// candidates).
pub fn order_after(
    first: usize,
    rest: impl IntoIterator<Item = usize>,
    mut cmp: impl FnMut(usize, usize) -> Ordering,
) -> Result<Vec<u32>, String> {
    let mut rest: Vec<usize> = rest.into_iter().filter(|&i| i != first).collect();
    rest.sort_by(|&a, &b| cmp(a, b));
    std::iter::once(first).chain(rest).map(index_u32).collect()
}

#[cfg(test)]
mod tests {
    use super::{EXCLUDED, order_after, to_score};

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
    fn first_then_the_rest_sorted_stably() {
        let key = [3, 1, 2, 1];
        let order = order_after(2, 0..4, |a, b| key[a].cmp(&key[b]));
        assert_eq!(order, Ok(vec![2, 1, 3, 0]));
        assert_eq!(
            order_after(0, [], |_, _| std::cmp::Ordering::Equal),
            Ok(vec![0])
        );
    }
}
