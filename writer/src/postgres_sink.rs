//! PostgreSQL: the pool, migrations, daily partitions and the batch insert path.
//!
//! One transaction per batch. Host samples are copied (binary COPY) straight into
//! `host_samples` under a savepoint; only when that meets a row already stored (a
//! redelivery) is it rolled back to the savepoint and done the careful way: COPY into
//! a per-connection staging table, then `INSERT … SELECT … ON CONFLICT DO NOTHING`.
//! Site checks always take the staging path, since their rollups count the rows
//! actually inserted. Then `agents` (one row per agent of the batch), COMMIT.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use crate::config::PostgresConfig;
use crate::row_batch::RowBatch;
use fleetmon::pb::HostSample;

mod embedded {
    refinery::embed_migrations!("migrations");
}

const CREATE_STAGING: &str = include_str!("../sql/create_staging.sql");
const COPY_HOST_SAMPLES: &str = include_str!("../sql/copy_host_samples.sql");
const COPY_SITE_CHECKS: &str = include_str!("../sql/copy_site_checks.sql");
const INSERT_HOST_SAMPLES: &str = include_str!("../sql/insert_host_samples.sql");
const INSERT_SITE_CHECKS: &str = include_str!("../sql/insert_site_checks.sql");
const UPSERT_AGENTS: &str = include_str!("../sql/upsert_agents.sql");

/// The partitioned tables, by day on `ts`.
pub const PARTITIONED_TABLES: [&str; 2] = ["host_samples", "site_checks"];

const HOST_TYPES: [Type; 29] = [
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT4,
    Type::INT8,
    Type::JSONB,
    Type::JSONB,
    Type::JSONB,
];

const CHECK_TYPES: [Type; 20] = [
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::BOOL,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::INT8,
];

/// Why Postgres could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The URL does not parse.
    #[error("invalid postgres.url: {0}")]
    Url(tokio_postgres::Error),
    /// The CA file for TLS could not be read.
    #[error(transparent)]
    Tls(#[from] fleetmon::tls::TlsError),
    /// No connection from the pool.
    #[error("cannot get a PostgreSQL connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("postgres: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// Migrations failed.
    #[error("schema migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// The pool could not be built.
    #[error("cannot build the PostgreSQL pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// No connection at start, with what to change.
    #[error("cannot connect to PostgreSQL: {reason}: {hint}")]
    Connect {
        /// The client's error.
        reason: String,
        /// What to do about it.
        hint: String,
    },
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Host rows newly stored.
    pub host_rows: u64,
    /// Check rows newly stored.
    pub check_rows: u64,
    /// Rows of the batch that were already stored (or repeated within it).
    pub duplicates: u64,
    /// Alerts the batch opened and resolved.
    pub alerts: crate::alert_store::Transitions,
}

/// Alert evaluation with the rows: where notifications go, and whom to wake when
/// a transition committed.
#[derive(Debug, Default)]
pub struct AlertHook {
    /// The notification channels.
    pub channels: crate::alert_store::Channels,
    /// Woken after a commit that queued notifications.
    pub committed: std::sync::Arc<tokio::sync::Notify>,
}

/// The writer's PostgreSQL side.
#[derive(Debug)]
pub struct PostgresSink {
    pool: Pool,
    schema: String,
    /// Days whose partitions are known to exist (unix seconds of UTC midnight).
    known_days: Mutex<BTreeSet<i64>>,
    /// Set when alerts are evaluated with every batch.
    alerts: Option<AlertHook>,
    /// The TLS mode of `postgres.url`, for connection hints.
    mode: crate::postgres_tls::SslMode,
}

/// The server's message for a database error (tokio-postgres only says "db error").
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Clamps an unsigned counter into a bigint.
fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PostgresSink {
    /// Builds the pool (connections are opened lazily) with `search_path` set to the
    /// schema. TLS (rustls, verified against `postgres.ca`) is used when the URL says
    /// `sslmode=require`; `prefer` (the default) is treated as `disable`.
    pub fn new(config: &PostgresConfig) -> Result<Self, SinkError> {
        let (mode, url) = crate::postgres_tls::SslMode::of_url(&config.url);
        let mut pg: tokio_postgres::Config = url.parse().map_err(SinkError::Url)?;
        if pg.get_ssl_mode() == SslMode::Prefer {
            pg.ssl_mode(SslMode::Disable);
        }
        pg.options(format!("-c search_path={}", config.schema));
        // Names the schema so an operator (or a test) can tell writers apart.
        pg.application_name(format!("fleetmon-writer:{}", config.schema));
        pg.connect_timeout(Duration::from_secs(10));
        let manager = Manager::from_config(
            pg,
            crate::postgres_tls::connector(mode, config)?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        Ok(PostgresSink {
            pool,
            schema: config.schema.clone(),
            known_days: Mutex::default(),
            alerts: None,
            mode,
        })
    }

    /// Evaluates the check alert rules in every batch's transaction.
    pub fn with_alerts(self, hook: AlertHook) -> Self {
        PostgresSink {
            alerts: Some(hook),
            ..self
        }
    }

    /// The pool, for queries (History service).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Creates the schema if needed and runs pending migrations in one transaction,
    /// under an advisory lock so concurrent writers do not race. Idempotent.
    pub async fn migrate(&self) -> Result<(), SinkError> {
        let mut client = self.pool.get().await.map_err(|error| {
            let reason = match &error {
                deadpool_postgres::PoolError::Backend(e) => {
                    let mut text = describe(e);
                    let mut source = std::error::Error::source(e);
                    while let Some(cause) = source {
                        text = format!("{text}: {cause}");
                        source = cause.source();
                    }
                    text
                }
                other => other.to_string(),
            };
            match crate::postgres_tls::hint(&reason, self.mode) {
                Some(hint) => SinkError::Connect { reason, hint },
                None => SinkError::Pool(error),
            }
        })?;
        // Any constant works; it only has to be the same for every writer.
        const LOCK: i64 = 0x666c_6565_746d_6f6e; // "fleetmon"
        client
            .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
            .await?;
        let result = async {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema))
                .await?;
            let report = embedded::migrations::runner()
                .set_grouped(true)
                .run_async(&mut **client)
                .await?;
            for migration in report.applied_migrations() {
                tracing::info!(schema = %self.schema, migration = %migration, "applied migration");
            }
            Ok::<(), SinkError>(())
        }
        .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
            .await?;
        result
    }

    /// Makes sure the daily partitions of `days` exist (unix seconds of UTC midnight).
    pub async fn ensure_partitions(&self, days: &BTreeSet<i64>) -> Result<(), SinkError> {
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
        let client = self.pool.get().await?;
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
    pub async fn maintain_partitions(
        &self,
        retention_days: u32,
        ahead: u32,
        now: SystemTime,
    ) -> Result<Vec<String>, SinkError> {
        let today = day_of(now);
        let days: BTreeSet<i64> = (-1..=i64::from(ahead))
            .map(|d| today + d * 86_400)
            .collect();
        self.ensure_partitions(&days).await?;
        let oldest_kept = today - i64::from(retention_days) * 86_400;
        let client = self.pool.get().await?;
        let mut dropped = Vec::new();
        for table in PARTITIONED_TABLES {
            let rows = client
                .query(
                    "SELECT c.relname FROM pg_inherits i \
                     JOIN pg_class c ON c.oid = i.inhrelid \
                     JOIN pg_class p ON p.oid = i.inhparent \
                     JOIN pg_namespace n ON n.oid = p.relnamespace \
                     WHERE p.relname = $1 AND n.nspname = $2",
                    &[&table, &self.schema],
                )
                .await?;
            for row in rows {
                let name: String = row.get(0);
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

    /// For the health service: `Ok` when a pooled connection answers `SELECT 1`
    /// within `timeout`.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<(), String> {
        let ping = async {
            let client = self.pool.get().await?;
            client.execute("SELECT 1", &[]).await?;
            Ok::<_, SinkError>(())
        };
        match tokio::time::timeout(timeout, ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("PostgreSQL unavailable: {error}")),
            Err(_) => Err(format!("PostgreSQL did not answer within {timeout:?}")),
        }
    }

    /// Stores a batch in one transaction; a row already stored is skipped, and the
    /// rollups count only rows this call inserted.
    pub async fn write(&self, batch: &RowBatch) -> Result<WriteStats, SinkError> {
        self.ensure_partitions(&batch.days()).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(CREATE_STAGING).await?;

        // De-duplicate within the batch here, so only distinct rows are copied.
        let hosts = distinct(batch.hosts(), |r| {
            (
                r.sample.agent_id.as_str(),
                r.sample.stream_id.as_str(),
                r.seq,
                r.ts,
            )
        });
        let checks = distinct(batch.checks(), |r| {
            (
                r.check.agent_id.as_str(),
                r.check.stream_id.as_str(),
                r.seq,
                r.ts,
            )
        });
        let mut stats = WriteStats::default();
        if !hosts.is_empty() {
            stats.host_rows = insert_hosts(&tx, &hosts).await?;
            upsert_agents(&tx, &hosts).await?;
        }

        let mut check_count = 0u64;
        if !checks.is_empty() {
            let sink = tx.copy_in(COPY_SITE_CHECKS).await?;
            let writer = BinaryCopyInWriter::new(sink, &CHECK_TYPES);
            pin_mut!(writer);
            for row in &checks {
                let c = &row.check;
                let status: Option<i32> = c
                    .status_code
                    .map(|code| i32::try_from(code).unwrap_or(i32::MAX));
                let values: [&(dyn ToSql + Sync); 20] = [
                    &c.agent_id,
                    &c.stream_id,
                    &row.seq,
                    &row.ts,
                    &c.url,
                    &c.method,
                    &status,
                    &c.ok,
                    &row.failure,
                    &c.error_message,
                    &c.response_time_ms,
                    &c.time_to_first_byte_ms,
                    &c.regex,
                    &c.regex_matched,
                    &c.matched_text,
                    &big(c.body_bytes),
                    &c.final_url,
                    &row.tls_cert_not_after,
                    &c.check_id,
                    &big(c.check_version),
                ];
                writer.as_mut().write(&values).await?;
                check_count += 1;
            }
            writer.finish().await?;
        }

        if check_count > 0 {
            let inserted: i64 = tx.query_one(INSERT_SITE_CHECKS, &[]).await?.get(0);
            stats.check_rows = inserted as u64;
            if let Some(hook) = &self.alerts {
                stats.alerts =
                    crate::alert_store::evaluate_check_results(&tx, &hook.channels).await?;
            }
        }
        tx.commit().await?;
        if let Some(hook) = &self.alerts
            && stats.alerts != crate::alert_store::Transitions::default()
        {
            hook.committed.notify_one();
        }
        stats.duplicates = batch.rows() as u64 - stats.host_rows - stats.check_rows;
        Ok(stats)
    }
}

/// Stores distinct host rows, skipping those already stored; returns the rows
/// inserted. The common case, a batch of new rows, is one COPY into `host_samples`;
/// a batch that meets a stored row is rolled back to the savepoint and goes through
/// the staging table.
async fn insert_hosts(
    tx: &tokio_postgres::Transaction<'_>,
    hosts: &[&crate::row_batch::HostRow],
) -> Result<u64, SinkError> {
    tx.batch_execute("SAVEPOINT direct_copy").await?;
    match copy_hosts_into(tx, "host_samples", hosts.iter().copied()).await {
        Ok(copied) => {
            tx.batch_execute("RELEASE SAVEPOINT direct_copy").await?;
            return Ok(copied);
        }
        Err(SinkError::Query(error)) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT direct_copy")
                .await?;
        }
        Err(error) => return Err(error),
    }
    copy_hosts_into(tx, "staging_host_samples", hosts.iter().copied()).await?;
    let inserted: i64 = tx.query_one(INSERT_HOST_SAMPLES, &[]).await?.get(0);
    Ok(inserted as u64)
}

/// What a batch says about one agent.
struct AgentSeen<'a> {
    first: SystemTime,
    latest: &'a crate::row_batch::HostRow,
}

/// Upserts one `agents` row per agent in the batch: first and last sample time, and
/// the descriptive columns of its latest sample.
async fn upsert_agents(
    tx: &tokio_postgres::Transaction<'_>,
    hosts: &[&crate::row_batch::HostRow],
) -> Result<(), SinkError> {
    let mut agents: HashMap<&str, AgentSeen<'_>> = HashMap::new();
    for &row in hosts {
        agents
            .entry(row.sample.agent_id.as_str())
            .and_modify(|seen| {
                seen.first = seen.first.min(row.ts);
                if row.ts >= seen.latest.ts {
                    seen.latest = row;
                }
            })
            .or_insert(AgentSeen {
                first: row.ts,
                latest: row,
            });
    }
    let column = |f: fn(&HostSample) -> &str| -> Vec<&str> {
        agents.values().map(|seen| f(&seen.latest.sample)).collect()
    };
    let ids = column(|s| s.agent_id.as_str());
    let hostnames = column(|s| s.hostname.as_str());
    let os_names = column(|s| s.os_name.as_str());
    let os_versions = column(|s| s.os_version.as_str());
    let agent_versions = column(|s| s.agent_version.as_str());
    let first: Vec<SystemTime> = agents.values().map(|seen| seen.first).collect();
    let last: Vec<SystemTime> = agents.values().map(|seen| seen.latest.ts).collect();
    let intervals: Vec<i32> = agents
        .values()
        .map(|seen| i32::try_from(seen.latest.sample.interval_seconds).unwrap_or(i32::MAX))
        .collect();
    let percent = |f: fn(&HostSample) -> (u64, u64)| -> Vec<Option<f64>> {
        agents
            .values()
            .map(|seen| {
                let (used, total) = f(&seen.latest.sample);
                (total > 0).then(|| used as f64 * 100.0 / total as f64)
            })
            .collect()
    };
    let cpu: Vec<Option<f64>> = agents
        .values()
        .map(|seen| Some(seen.latest.sample.cpu_usage_percent))
        .collect();
    let memory = percent(|s| (s.memory_used_bytes, s.memory_total_bytes));
    let disk = percent(|s| (s.disk_used_bytes, s.disk_total_bytes));
    tx.execute(
        UPSERT_AGENTS,
        &[
            &ids,
            &hostnames,
            &os_names,
            &os_versions,
            &agent_versions,
            &first,
            &last,
            &intervals,
            &cpu,
            &memory,
            &disk,
        ],
    )
    .await?;
    Ok(())
}

/// Binary COPY of host rows into `table` (the staging table, or for benchmarks the
/// real one); returns the rows copied.
pub async fn copy_hosts_into<'a>(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    rows: impl Iterator<Item = &'a crate::row_batch::HostRow>,
) -> Result<u64, SinkError> {
    let sql = COPY_HOST_SAMPLES.replace("staging_host_samples", table);
    let sink = tx.copy_in(&sql).await?;
    let writer = BinaryCopyInWriter::new(sink, &HOST_TYPES);
    pin_mut!(writer);
    let mut count = 0;
    for row in rows {
        let s = &row.sample;
        let values: [&(dyn ToSql + Sync); 29] = [
            &s.agent_id,
            &s.stream_id,
            &row.seq,
            &row.ts,
            &s.hostname,
            &s.os_name,
            &s.os_version,
            &s.kernel_version,
            &s.agent_version,
            &s.cpu_usage_percent,
            &s.load_average_1m,
            &s.load_average_5m,
            &s.load_average_15m,
            &big(s.memory_total_bytes),
            &big(s.memory_used_bytes),
            &big(s.memory_available_bytes),
            &big(s.swap_total_bytes),
            &big(s.swap_used_bytes),
            &big(s.disk_total_bytes),
            &big(s.disk_used_bytes),
            &big(s.network_rx_bytes),
            &big(s.network_tx_bytes),
            &s.network_rx_bytes_per_second,
            &s.network_tx_bytes_per_second,
            &i32::try_from(s.process_count).unwrap_or(i32::MAX),
            &big(s.uptime_seconds),
            &row.cpu_cores,
            &row.disks,
            &row.interfaces,
        ];
        writer.as_mut().write(&values).await?;
        count += 1;
    }
    writer.finish().await?;
    Ok(count)
}

/// The unique key of a stored sample: `(agent_id, stream_id, seq, ts)`.
type SampleKey<'a> = (&'a str, &'a str, i64, SystemTime);

/// The rows whose key was not seen before, in order.
fn distinct<'a, R>(
    rows: impl Iterator<Item = &'a R>,
    key: impl Fn(&'a R) -> SampleKey<'a>,
) -> Vec<&'a R> {
    let mut seen = HashSet::new();
    rows.filter(|row| seen.insert(key(row))).collect()
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
