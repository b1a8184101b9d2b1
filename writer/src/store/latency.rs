//! Response times in rollups: a histogram of fixed logarithmic buckets, mergeable by
//! adding counts, so p50/p95/p99 over any range come from rollups. Bucket `i` holds
//! times in `[2^(i/8), 2^((i+1)/8))` ms; a quantile is reported as its bucket's
//! geometric middle, so it is within 4.4 % (2^(1/16) - 1) of a time in the same bucket
//! as the exact quantile. Times of 1 ms and less share bucket 0, reported as 1 ms.

use std::collections::BTreeMap;

/// Buckets per doubling.
const PER_DOUBLING: f64 = 8.0;
/// The last bucket (times of 2^(400/8) ms and beyond share it): far past any timeout.
const LAST: u16 = 400;

/// The bucket of a response time in milliseconds.
pub fn bucket_of(ms: f64) -> u16 {
    if ms.is_nan() || ms <= 1.0 {
        return 0;
    }
    ((ms.log2() * PER_DOUBLING).floor() as u32).min(u32::from(LAST)) as u16
}

/// The time a bucket stands for: its geometric middle, in milliseconds.
pub fn middle_of(bucket: u16) -> f64 {
    if bucket == 0 {
        return 2f64.powf(0.5 / PER_DOUBLING).min(1.0);
    }
    2f64.powf((f64::from(bucket) + 0.5) / PER_DOUBLING)
}

/// The `q` quantile (0 to 1) of the times counted in `buckets`, as `percentile_disc`
/// picks it (the first time whose cumulative share reaches `q`); `None` when empty.
pub fn quantile(buckets: &BTreeMap<u16, i64>, q: f64) -> Option<f64> {
    let total: i64 = buckets.values().sum();
    if total <= 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (bucket, count) in buckets {
        seen += count;
        if seen >= rank {
            return Some(middle_of(*bucket));
        }
    }
    buckets.keys().next_back().map(|b| middle_of(*b))
}

/// Buckets as the rollup columns hold them: `{"bucket": count}`.
pub fn to_json(buckets: &BTreeMap<u16, i64>) -> serde_json::Value {
    let counts = buckets
        .iter()
        .map(|(bucket, n)| (bucket.to_string(), serde_json::Value::from(*n)));
    serde_json::Value::Object(counts.collect())
}

/// Buckets from a rollup column or a sum of them (`None`, or keys that are not
/// buckets, count as nothing).
pub fn from_json(value: Option<serde_json::Value>) -> BTreeMap<u16, i64> {
    let Some(serde_json::Value::Object(counts)) = value else {
        return BTreeMap::new();
    };
    counts
        .into_iter()
        .filter_map(|(bucket, n)| Some((bucket.parse().ok()?, n.as_i64()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_from_buckets_is_within_the_stated_bound_of_the_exact_one() {
        // 1..=1000 ms, one each: exact p50 500, p95 950, p99 990.
        let mut buckets = BTreeMap::new();
        for ms in 1..=1000 {
            *buckets.entry(bucket_of(f64::from(ms))).or_insert(0) += 1;
        }
        for (q, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let estimate = quantile(&buckets, q).unwrap();
            // The bucket's middle is within half a bucket (2^(1/16)) of any time in it.
            assert!(
                (estimate / exact - 1.0).abs() <= 2f64.powf(1.0 / 8.0) - 1.0,
                "q{q}: {estimate} against {exact}"
            );
        }
        assert_eq!(quantile(&BTreeMap::new(), 0.5), None);
        assert_eq!(bucket_of(0.2), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(1e300), LAST);
        assert!(bucket_of(1.0 + 1e-9) < bucket_of(1.1));
        assert_eq!(from_json(Some(to_json(&buckets))), buckets);
        assert_eq!(from_json(None), BTreeMap::new());
    }
}
