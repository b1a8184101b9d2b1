//! Daily partitions of the sample tables: their names, creation ahead of the rows,
//! and retention.

use std::collections::BTreeSet;
use std::time::SystemTime;

use std::sync::Mutex;

use deadpool_postgres::Pool;

use fleetmon::samples::SampleKind;

use super::SinkError;

const PARTITIONS_OF: &str = include_str!("../../sql/partitions_of.sql");

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
            for table in PARTITIONED_TABLES {
                let sql = partition_ddl(table, day);
                match client.batch_execute(&sql).await {
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
    /// wholly older than `retention_days`. Returns the partitions dropped.
    pub async fn maintain(
        &self,
        pool: &Pool,
        retention_days: u32,
        ahead: u32,
        now: SystemTime,
    ) -> Result<Vec<String>, SinkError> {
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
        Ok(dropped)
    }
}

/// Unix seconds of the UTC midnight starting the day of `t`.
pub fn day_of(t: SystemTime) -> i64 {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64) - 1,
    };
    secs.div_euclid(86_400) * 86_400
}

fn ymd(day: i64) -> String {
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
