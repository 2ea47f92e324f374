//! Building a [`Policy::score`](crate::Policy::score) answer around a
//! policy's own choice.

use std::cmp::Ordering;

use crate::index_u32;

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
    use super::order_after;

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
