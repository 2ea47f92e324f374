//! A tenant's rate across a cluster of gateways: each gateway enforces its
//! share of the tenant's `calls_per_s` and `burst`, recomputed whenever
//! the number of live gateways changes ([`super::Tenants::set_members`]).
//!
//! With `n` live gateways a gateway admits `calls_per_s / n` calls per
//! second with a bucket of `ceil(burst / n)` (at least 1). When a
//! tenant's calls spread evenly over the gateways the cluster admits
//! `calls_per_s` with a burst of at most `burst + n - 1` (the rounding up
//! of each share); an uneven spread admits less. The bounds while the
//! member list changes are in `docs/configuration.md`.

/// One gateway's share of a tenant's rate limit among `members` live
/// gateways: `(calls_per_s / members, ceil(burst / members))`, the burst
/// at least 1. `members` 0 counts as 1 (the gateway itself is live).
pub(crate) fn share(calls_per_s: f64, burst: u32, members: usize) -> (f64, u32) {
    let n = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
    (calls_per_s / f64::from(n), burst.div_ceil(n).max(1))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::time::{Duration, Instant};

    use super::share;
    use crate::config::TenantConfig;
    use crate::tenants::Tenants;

    #[test]
    fn one_member_keeps_the_whole_limit() {
        assert_eq!(share(20.0, 40, 1), (20.0, 40));
        assert_eq!(share(20.0, 40, 0), (20.0, 40));
    }

    #[test]
    fn shares_split_the_rate_and_round_the_burst_up() {
        let (rate, burst) = share(30.0, 10, 3);
        assert!((rate - 10.0).abs() < 1e-9);
        assert_eq!(burst, 4);
        // The shares of three gateways add up to the rate, and to the burst
        // plus at most n - 1.
        assert!((rate * 3.0 - 30.0).abs() < 1e-9);
        assert!(burst * 3 <= 10 + 2);
    }

    #[test]
    fn a_burst_smaller_than_the_members_still_lets_one_call_through() {
        assert_eq!(share(1.0, 1, 4).1, 1);
        let (rate, burst) = share(0.5, 1, 1000);
        assert!(rate > 0.0 && rate < 0.001);
        assert_eq!(burst, 1);
        assert_eq!(share(1.0, u32::MAX, usize::MAX).1, 1);
    }

    /// Admitted calls of `tenants`' only tenant, offered `offered` calls
    /// at once at `now`.
    fn admitted(tenants: &Tenants, offered: usize, now: Instant) -> usize {
        let tenant = tenants.authenticate(Some("k")).expect("tenant");
        (0..offered)
            .filter(|_| tenant.admit("svc", 0, now).map(drop).is_ok())
            .count()
    }

    fn limited(calls_per_s: f64, burst: u32) -> Tenants {
        Tenants::new(&[TenantConfig {
            api_keys: vec!["k".into()],
            calls_per_s: Some(calls_per_s),
            burst: Some(burst),
            ..TenantConfig::new("t")
        }])
        .expect("tenants")
    }

    #[test]
    fn a_gateway_admits_its_share_and_the_whole_again_alone() {
        let tenants = limited(30.0, 30);
        tenants.set_members(3);
        let start = Instant::now();
        // The bucket holds a third of the burst, and refills at a third of
        // the rate: 10 calls per second.
        assert_eq!(admitted(&tenants, 100, start), 10);
        assert_eq!(admitted(&tenants, 100, start + Duration::from_secs(1)), 10);
        // Alone again: the whole rate from then on.
        tenants.set_members(1);
        assert_eq!(admitted(&tenants, 100, start + Duration::from_secs(2)), 30);
    }
}
