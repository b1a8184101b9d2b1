//! What the site checks a batch inserted add up to: their minute and hour rollups,
//! added up here and upserted as one row per bucket, so a batch of ten thousand
//! checks of ten sites sends a few dozen rows, not ten thousand. Buckets are UTC
//! minutes and hours. Only inserted rows are counted, so a replayed batch, which
//! inserts nothing, adds nothing.

use std::collections::BTreeMap;
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use foldhash::{HashMap, HashMapExt as _};
use serde_json::Value;

use super::SinkError;
use super::buckets::{Tier, bucket_start};
use crate::consume::row_batch::CheckRow;

const UPSERT_ROLLUPS: &str = include_str!("../../sql/upsert_check_rollups.sql");
const UPSERT_DAYS: &str = include_str!("../../sql/upsert_check_days.sql");

/// The two resolutions kept of site checks.
const RESOLUTIONS: [Tier; 2] = [Tier::Minute, Tier::Hour];

/// One bucket's figures, as a `site_check_rollups` row holds them.
struct Bucket {
    checks: i64,
    ok_checks: i64,
    min_ms: f64,
    max_ms: f64,
    sum_ms: f64,
    /// Status code (`None` without a response) → checks.
    status_codes: BTreeMap<Option<u32>, i64>,
    /// Response-time bucket ([`super::latency`]) → checks.
    latency: BTreeMap<u16, i64>,
}

impl Bucket {
    fn new(response_ms: f64) -> Self {
        Bucket {
            checks: 0,
            ok_checks: 0,
            min_ms: response_ms,
            max_ms: response_ms,
            sum_ms: 0.0,
            status_codes: BTreeMap::new(),
            latency: BTreeMap::new(),
        }
    }

    fn add(&mut self, row: &CheckRow) {
        let check = &row.check;
        self.checks += 1;
        self.ok_checks += i64::from(check.ok);
        self.min_ms = self.min_ms.min(check.response_time_ms);
        self.max_ms = self.max_ms.max(check.response_time_ms);
        self.sum_ms += check.response_time_ms;
        *self.status_codes.entry(check.status_code).or_default() += 1;
        *self
            .latency
            .entry(super::latency::bucket_of(check.response_time_ms))
            .or_default() += 1;
    }
}

/// Adds the check rows `inserted` to their minute and hour rollups, and those of
/// central checks to their days.
pub(super) async fn add_to_rollups(
    tx: &Transaction<'_>,
    inserted: &[&CheckRow],
) -> Result<(), SinkError> {
    if inserted.is_empty() {
        return Ok(());
    }
    add_to_days(tx, inserted).await?;
    let mut buckets: HashMap<(&str, &'static str, SystemTime), Bucket> = HashMap::new();
    for &row in inserted {
        for tier in RESOLUTIONS {
            let (resolution, seconds) = (tier.name(), tier.seconds());
            let key = (
                row.check.url.as_str(),
                resolution,
                bucket_start(row.ts, seconds),
            );
            buckets
                .entry(key)
                .or_insert_with(|| Bucket::new(row.check.response_time_ms))
                .add(row);
        }
    }
    // In key order, so concurrent writers lock rollup rows in the same order.
    let mut buckets: Vec<_> = buckets.into_iter().collect();
    buckets.sort_unstable_by_key(|(key, _)| *key);
    let (keys, buckets): (Vec<_>, Vec<Bucket>) = buckets.into_iter().unzip();
    let urls: Vec<&str> = keys.iter().map(|(url, ..)| *url).collect();
    let resolutions: Vec<&str> = keys.iter().map(|(_, resolution, _)| *resolution).collect();
    let starts: Vec<SystemTime> = keys.iter().map(|(.., start)| *start).collect();
    let column = |f: fn(&Bucket) -> f64| -> Vec<f64> { buckets.iter().map(f).collect() };
    let (min, max, sum) = (
        column(|b| b.min_ms),
        column(|b| b.max_ms),
        column(|b| b.sum_ms),
    );
    let checks: Vec<i64> = buckets.iter().map(|b| b.checks).collect();
    let ok_checks: Vec<i64> = buckets.iter().map(|b| b.ok_checks).collect();
    let codes: Vec<Value> = buckets
        .iter()
        .map(|b| {
            // As the column holds them: the code as text, "none" without a response.
            let counts = b.status_codes.iter().map(|(code, n)| {
                let code = code.map_or_else(|| "none".to_owned(), |code| code.to_string());
                (code, Value::from(*n))
            });
            Value::Object(counts.collect())
        })
        .collect();
    let latency: Vec<Value> = buckets
        .iter()
        .map(|b| {
            let counts = b
                .latency
                .iter()
                .map(|(bucket, n)| (bucket.to_string(), Value::from(*n)));
            Value::Object(counts.collect())
        })
        .collect();
    let upsert = tx.prepare_cached(UPSERT_ROLLUPS).await?;
    tx.execute(
        &upsert,
        &[
            &urls,
            &resolutions,
            &starts,
            &checks,
            &ok_checks,
            &min,
            &max,
            &sum,
            &codes,
            &latency,
        ],
    )
    .await?;
    Ok(())
}

/// Adds the central checks among `inserted` to `check_days`.
async fn add_to_days(tx: &Transaction<'_>, inserted: &[&CheckRow]) -> Result<(), SinkError> {
    let mut days: BTreeMap<(&str, time::Date), (i64, i64)> = BTreeMap::new();
    for row in inserted.iter().filter(|row| !row.check.check_id.is_empty()) {
        let day = time::OffsetDateTime::from(row.ts).date();
        let counts = days.entry((row.check.check_id.as_str(), day)).or_default();
        counts.0 += 1;
        counts.1 += i64::from(row.check.ok);
    }
    if days.is_empty() {
        return Ok(());
    }
    // A BTreeMap: in key order, so concurrent writers lock the rows in the same order.
    let (keys, counts): (Vec<_>, Vec<_>) = days.into_iter().unzip();
    let ids: Vec<&str> = keys.iter().map(|(id, _)| *id).collect();
    let dates: Vec<time::Date> = keys.iter().map(|(_, day)| *day).collect();
    let results: Vec<i64> = counts.iter().map(|(n, _)| *n).collect();
    let ok: Vec<i64> = counts.iter().map(|(_, ok)| *ok).collect();
    let upsert = tx.prepare_cached(UPSERT_DAYS).await?;
    tx.execute(&upsert, &[&ids, &dates, &results, &ok]).await?;
    Ok(())
}
