//! The two statistics the report needs: a median, and how far to trust one.
//!
//! On this kind of machine (shared, 2 cores) one run's ratio against rumqttc moves by ±30 %
//! from round to round, more than the difference between the clients, so a median of a few
//! rounds can land on either side of 1.0 by chance. The report therefore puts beside each
//! median of the rounds' ratios a 95 % confidence interval for it.
//!
//! The interval is the distribution-free one for a median, read off the sorted sample: the
//! true median lies below the k-th smallest value only if fewer than k of the n values are
//! below it, which happens with probability P(Binomial(n, ½) < k) whatever the values'
//! distribution; the k-th smallest and k-th largest value bound it with probability at least
//! 1 − 2·P(Binomial(n, ½) < k). Written out here rather than taken from a statistics crate:
//! it is a binomial tail over at most a few dozen terms, and `statrs` would bring a linear
//! algebra library into the build for it.

/// The middle value (the upper one of an even count); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A 95 % (or a little more) confidence interval for the median of the population `sample`
/// was drawn from, as `(low, high)`; `None` below 6 values, too few for any interval at 95 %
/// (with 5, the lowest and highest value bound the median 94 % of the time).
pub fn median_interval(sample: &[f64]) -> Option<(f64, f64)> {
    let k = order_statistic_for_95(sample.len())?;
    let mut v = sample.to_vec();
    v.sort_by(f64::total_cmp);
    Some((v[k - 1], v[v.len() - k]))
}

/// The largest k (1-based) with P(Binomial(n, ½) < k) ≤ 2.5 %, if any.
fn order_statistic_for_95(n: usize) -> Option<usize> {
    // P(X = i) = C(n, i) / 2^n, summed from i = 0 while the tail stays within 2.5 %. Floats
    // are exact enough: the benchmark never has more than a few hundred rounds.
    let mut term = 0.5f64.powi(i32::try_from(n).ok()?); // P(X = 0)
    let mut below = 0.0; // P(X < k) for the k being tried
    let mut k = 0;
    while k < n && below + term <= 0.025 {
        below += term;
        k += 1;
        term *= (n - k + 1) as f64 / k as f64; // P(X = k) from P(X = k - 1)
    }
    (k > 0).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_or_the_upper_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn the_order_statistics_match_the_binomial_tables() {
        // Published sign-test values: n = 6 → 1st, n = 15 → 4th, n = 20 → 6th, n = 50 → 18th.
        assert_eq!(order_statistic_for_95(5), None);
        assert_eq!(order_statistic_for_95(6), Some(1));
        assert_eq!(order_statistic_for_95(15), Some(4));
        assert_eq!(order_statistic_for_95(20), Some(6));
        assert_eq!(order_statistic_for_95(50), Some(18));
    }

    #[test]
    fn the_interval_is_read_off_the_sorted_sample() {
        let sample: Vec<f64> = (1..=15).rev().map(f64::from).collect();
        assert_eq!(median_interval(&sample), Some((4.0, 12.0)));
        assert_eq!(median_interval(&[1.0, 2.0, 3.0]), None);
    }
}
