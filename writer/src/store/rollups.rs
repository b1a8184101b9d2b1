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

use super::buckets::{Tier, bucket_start};
use super::{SinkError, latency};
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
            .entry(latency::bucket_of(check.response_time_ms))
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
        .map(|b| latency::to_json(&b.latency))
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

/// One central check's results on one UTC day, as a `check_days` row adds them up.
#[derive(Default)]
struct Day {
    results: i64,
    ok_results: i64,
    /// What the results cover (each from its time for its reporting window), merged.
    covered: Vec<(SystemTime, SystemTime)>,
    /// Response-time bucket ([`super::latency`]) → results.
    latency: BTreeMap<u16, i64>,
}

impl Day {
    fn add(&mut self, row: &CheckRow) {
        self.results += 1;
        self.ok_results += i64::from(row.check.ok);
        *self
            .latency
            .entry(latency::bucket_of(row.check.response_time_ms))
            .or_default() += 1;
        let window = fleetmon::checks::definition::reporting_window(row.check.interval_seconds);
        self.covered.push((row.ts, row.ts + window));
    }

    /// `covered` as the fewest spans: sorted, overlapping and touching ones joined.
    fn merged_coverage(&mut self) -> Vec<(SystemTime, SystemTime)> {
        self.covered.sort_unstable();
        let mut merged: Vec<(SystemTime, SystemTime)> = Vec::new();
        for &(from, to) in &self.covered {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        merged
    }
}

/// Adds the central checks among `inserted` to `check_days`.
async fn add_to_days(tx: &Transaction<'_>, inserted: &[&CheckRow]) -> Result<(), SinkError> {
    let mut days: BTreeMap<(&str, time::Date), Day> = BTreeMap::new();
    for row in inserted.iter().filter(|row| !row.check.check_id.is_empty()) {
        let day = time::OffsetDateTime::from(row.ts).date();
        days.entry((row.check.check_id.as_str(), day))
            .or_default()
            .add(row);
    }
    if days.is_empty() {
        return Ok(());
    }
    // A BTreeMap: in key order, so concurrent writers lock the rows in the same order.
    let (keys, mut days): (Vec<_>, Vec<Day>) = days.into_iter().unzip();
    let ids: Vec<&str> = keys.iter().map(|(id, _)| *id).collect();
    let dates: Vec<time::Date> = keys.iter().map(|(_, day)| *day).collect();
    let results: Vec<i64> = days.iter().map(|d| d.results).collect();
    let ok: Vec<i64> = days.iter().map(|d| d.ok_results).collect();
    let latency: Vec<Value> = days.iter().map(|d| latency::to_json(&d.latency)).collect();
    // The spans flat, each with the 1-based position of its day's row.
    let (mut owners, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    for (position, day) in (1i64..).zip(days.iter_mut()) {
        for (from, to) in day.merged_coverage() {
            owners.push(position);
            starts.push(from);
            ends.push(to);
        }
    }
    let upsert = tx.prepare_cached(UPSERT_DAYS).await?;
    tx.execute(
        &upsert,
        &[
            &ids, &dates, &results, &ok, &latency, &owners, &starts, &ends,
        ],
    )
    .await?;
    Ok(())
}
