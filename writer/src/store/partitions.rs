//! Partitions of the sample tables (daily) and of the host rollup tiers (daily,
//! monthly, yearly): their names, creation ahead of the rows, and retention.

use std::collections::BTreeSet;
use std::time::SystemTime;

use std::sync::Mutex;

use deadpool_postgres::Pool;

use fleetmon::samples::SampleKind;

use super::SinkError;
use super::buckets::Tier;

const PARTITIONS_OF: &str = include_str!("../../sql/partitions_of.sql");
const EXPIRE_SITE_ROLLUPS: &str = include_str!("../../sql/expire_site_rollups.sql");

/// The busiest processes of each host sample, stored beside `host_samples`.
pub(super) const PROCESS_TABLE: &str = "host_processes";

/// The partitioned tables, by day on `ts`, all kept `retention_days`.
pub const PARTITIONED_TABLES: [&str; 3] = [
    SampleKind::Host.table(),
    PROCESS_TABLE,
    SampleKind::Site.table(),
];

/// The daily partitions of one schema, and the days known to have theirs.
#[derive(Debug)]
pub struct Partitions {
    schema: String,
    /// Days whose partitions are known to exist (unix seconds of UTC midnight).
    known_days: Mutex<BTreeSet<i64>>,
}

impl Partitions {
    /// The partitions of `schema`, none known yet.
    pub fn new(schema: &str) -> Partitions {
        Partitions {
            schema: schema.to_owned(),
            known_days: Mutex::default(),
        }
    }

    /// Makes sure the daily partitions of `days` exist (unix seconds of UTC midnight).
    pub async fn ensure(&self, pool: &Pool, days: &BTreeSet<i64>) -> Result<(), SinkError> {
        let missing: Vec<i64> = {
            let known = self.known_days.lock().unwrap_or_else(|p| p.into_inner());
            days.iter()
                .filter(|d| !known.contains(d))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let client = pool.get().await?;
        for day in missing {
            let rollups = Tier::ALL.map(|tier| rollup_partition_ddl(tier, day));
            for sql in PARTITIONED_TABLES
                .map(|table| partition_ddl(table, day))
                .iter()
                .chain(&rollups)
            {
                match client.batch_execute(sql).await {
                    Ok(()) => {}
                    // Another writer created it between IF NOT EXISTS and now.
                    Err(e)
                        if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.known_days
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(day);
        }
        Ok(())
    }

    /// Creates partitions from yesterday to `ahead` days from now and drops those
    /// wholly older than their retention: `retention.raw_days` for the sample
    /// tables, each tier's for the host rollups; deletes the site rollups older than
    /// their tier's. Returns the partitions dropped.
    pub async fn maintain(
        &self,
        pool: &Pool,
        retention: &Retention,
        ahead: u32,
        now: SystemTime,
    ) -> Result<Vec<String>, SinkError> {
        let retention_days = retention.raw_days;
        let today = day_of(now);
        let days: BTreeSet<i64> = (-1..=i64::from(ahead))
            .map(|d| today + d * 86_400)
            .collect();
        self.ensure(pool, &days).await?;
        let oldest_kept = today - i64::from(retention_days) * 86_400;
        let client = pool.get().await?;
        let mut dropped = Vec::new();
        for table in PARTITIONED_TABLES {
            let rows = client.query(PARTITIONS_OF, &[&table, &self.schema]).await?;
            for row in rows {
                let name: String = row.get("partition");
                let Some(day) = partition_day(table, &name) else {
                    continue;
                };
                if day + 86_400 <= oldest_kept {
                    client
                        .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                        .await?;
                    self.known_days
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&day);
                    tracing::info!(partition = %name, "dropped expired partition");
                    dropped.push(name);
                }
            }
        }
        for tier in Tier::ALL {
            let oldest_kept = today - i64::from(retention.rollup_days(tier)) * 86_400;
            let rows = client
                .query(PARTITIONS_OF, &[&tier.table(), &self.schema])
                .await?;
            for row in rows {
                let name: String = row.get("partition");
                if rollup_partition_end(tier, &name).is_some_and(|end| end <= oldest_kept) {
                    client
                        .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                        .await?;
                    tracing::info!(partition = %name, "dropped expired rollup partition");
                    dropped.push(name);
                }
            }
        }
        let before = |days: u32| {
            SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(
                    u64::try_from(today - i64::from(days) * 86_400).unwrap_or(0),
                )
        };
        let expired = client
            .execute(
                EXPIRE_SITE_ROLLUPS,
                &[
                    &before(retention.rollup_days(Tier::Minute)),
                    &before(retention.rollup_days(Tier::Hour)),
                ],
            )
            .await?;
        if expired > 0 {
            tracing::info!(rows = expired, "deleted expired site rollups");
        }
        Ok(dropped)
    }
}

/// How long rows are kept, per table: raw samples, and each host rollup tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days of raw samples (`postgres.retention_days`).
    pub raw_days: u32,
    /// Days of minute rollups (`postgres.rollup_retention_days.minute`).
    pub minute_days: u32,
    /// Days of hour rollups.
    pub hour_days: u32,
    /// Days of day rollups.
    pub day_days: u32,
}

impl Retention {
    /// Days kept of `tier`.
    pub fn rollup_days(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Minute => self.minute_days,
            Tier::Hour => self.hour_days,
            Tier::Day => self.day_days,
        }
    }
}

/// The partition of `tier` holding `day`: its name suffix and bounds (unix seconds).
/// Minute buckets go in daily partitions, hour buckets in monthly ones, day buckets
/// in yearly ones.
fn rollup_period(tier: Tier, day: i64) -> (String, i64, i64) {
    let date = time::OffsetDateTime::from_unix_timestamp(day)
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    let midnight = |d: time::Date| d.midnight().assume_utc().unix_timestamp();
    let first = |year: i32, month: time::Month| {
        time::Date::from_calendar_date(year, month, 1).unwrap_or(time::Date::MIN)
    };
    match tier {
        Tier::Minute => (ymd(day), day, day + 86_400),
        Tier::Hour => {
            let start = first(date.year(), date.month());
            let next = match date.month() {
                time::Month::December => first(date.year() + 1, time::Month::January),
                month => first(date.year(), month.next()),
            };
            (
                format!("{:04}{:02}", date.year(), u8::from(date.month())),
                midnight(start),
                midnight(next),
            )
        }
        Tier::Day => (
            format!("{:04}", date.year()),
            midnight(first(date.year(), time::Month::January)),
            midnight(first(date.year() + 1, time::Month::January)),
        ),
    }
}

/// `CREATE TABLE IF NOT EXISTS host_rollups_hour_p202612 PARTITION OF host_rollups_hour …`:
/// the partition of `tier` holding `day`. Its pages are kept half empty: a bucket's
/// row is updated by every sample that falls in it (a day's, 8 640 times at a 10 s
/// interval), and room on its page lets PostgreSQL update it in place without a new
/// index entry (a HOT update).
pub(super) fn rollup_partition_ddl(tier: Tier, day: i64) -> String {
    let (suffix, from, to) = rollup_period(tier, day);
    format!(
        "CREATE TABLE IF NOT EXISTS {table}_p{suffix} PARTITION OF {table} FOR VALUES FROM ('{}') TO ('{}') WITH (fillfactor = 50)",
        timestamp_literal(from),
        timestamp_literal(to),
        table = tier.table(),
    )
}

/// When the partition of `tier` named `name` ends (unix seconds), or `None` when the
/// name is not one [`rollup_partition_ddl`] gives.
fn rollup_partition_end(tier: Tier, name: &str) -> Option<i64> {
    let digits = name.strip_prefix(tier.table())?.strip_prefix("_p")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = match (tier, digits.len()) {
        (Tier::Minute, 8) => digits.to_owned(),
        (Tier::Hour, 6) => format!("{digits}01"),
        (Tier::Day, 4) => format!("{digits}0101"),
        _ => return None,
    };
    let start = partition_day("", &format!("_p{padded}"))?;
    let (_, _, end) = rollup_period(tier, start);
    Some(end)
}

/// Unix seconds of the UTC midnight starting the day of `t`.
pub fn day_of(t: SystemTime) -> i64 {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64) - 1,
    };
    secs.div_euclid(86_400) * 86_400
}

pub(super) fn ymd(day: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(day)
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    format!(
        "{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

fn timestamp_literal(secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `CREATE TABLE IF NOT EXISTS host_samples_p20261123 PARTITION OF host_samples …`.
pub fn partition_ddl(table: &str, day: i64) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table}_p{} PARTITION OF {table} FOR VALUES FROM ('{}') TO ('{}')",
        ymd(day),
        timestamp_literal(day),
        timestamp_literal(day + 86_400)
    )
}

/// The day a partition named by [`partition_ddl`] covers.
pub fn partition_day(table: &str, name: &str) -> Option<i64> {
    let digits = name.strip_prefix(table)?.strip_prefix("_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[0..4].parse().ok()?;
    let month: u8 = digits[4..6].parse().ok()?;
    let day: u8 = digits[6..8].parse().ok()?;
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rollup_partitions_are_a_day_a_month_and_a_year_long() {
        let day = 1_796_083_200; // 2026-12-01
        assert_eq!(
            rollup_partition_ddl(Tier::Minute, day),
            "CREATE TABLE IF NOT EXISTS host_rollups_minute_p20261201 PARTITION OF host_rollups_minute \
             FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2026-12-02 00:00:00+00') WITH (fillfactor = 50)"
        );
        assert_eq!(
            rollup_partition_ddl(Tier::Hour, day + 30 * 86_400),
            "CREATE TABLE IF NOT EXISTS host_rollups_hour_p202612 PARTITION OF host_rollups_hour \
             FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00') WITH (fillfactor = 50)"
        );
        assert_eq!(
            rollup_partition_ddl(Tier::Day, day),
            "CREATE TABLE IF NOT EXISTS host_rollups_day_p2026 PARTITION OF host_rollups_day \
             FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2027-01-01 00:00:00+00') WITH (fillfactor = 50)"
        );
        let jan_2027 = 1_798_761_600;
        assert_eq!(
            rollup_partition_end(Tier::Hour, "host_rollups_hour_p202612"),
            Some(jan_2027)
        );
        assert_eq!(
            rollup_partition_end(Tier::Day, "host_rollups_day_p2026"),
            Some(jan_2027)
        );
        assert_eq!(
            rollup_partition_end(Tier::Minute, "host_rollups_minute_p20261231"),
            Some(jan_2027)
        );
        assert_eq!(
            rollup_partition_end(Tier::Hour, "host_rollups_hour_p2026"),
            None
        );
        assert_eq!(
            rollup_partition_end(Tier::Day, "host_rollups_minute_p2026"),
            None
        );
    }

    #[test]
    fn partitions_are_named_by_their_utc_day() {
        let day = 1_795_392_000; // 2026-11-23
        assert_eq!(
            partition_ddl("host_samples", day),
            "CREATE TABLE IF NOT EXISTS host_samples_p20261123 PARTITION OF host_samples \
             FOR VALUES FROM ('2026-11-23 00:00:00+00') TO ('2026-11-24 00:00:00+00')"
        );
        assert_eq!(
            partition_day("host_samples", "host_samples_p20261123"),
            Some(day)
        );
        assert_eq!(partition_day("site_checks", "host_samples_p20261123"), None);
        assert_eq!(
            day_of(SystemTime::UNIX_EPOCH + Duration::from_secs(day as u64 + 5000)),
            day
        );
    }
}
