//! PostgreSQL: the pool, migrations and the batch insert path; the COPY columns
//! are in `copy`, the daily partitions in `partitions`, the `agents` rows in `agents`.
//!
//! One transaction per batch. Host samples and site checks are each copied (binary
//! COPY) straight into their table under a savepoint; only when that meets a row
//! already stored or repeated within the batch (a redelivery) is it rolled back to
//! the savepoint and done the careful way: COPY into a per-connection staging table,
//! then `INSERT … SELECT … ON CONFLICT DO NOTHING`. The check rollups are then added
//! up from the rows actually inserted. `agents` gets one row per agent of the batch,
//! COMMIT.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;

use crate::config::PostgresConfig;
use crate::row_batch::{CheckRow, HostRow, RowBatch};

mod agents;
mod copy;
mod partitions;
mod rollups;

pub use copy::{copy_checks_into, copy_hosts_into};
pub use partitions::{PARTITIONED_TABLES, day_of, partition_day, partition_ddl};

mod embedded {
    refinery::embed_migrations!("migrations");
}

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
    /// A value could not be encoded for a binary COPY.
    #[error("cannot encode column {column} for COPY: {source}")]
    Encode {
        /// The column.
        column: &'static str,
        /// postgres-types' explanation.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
    /// Set when the alert rules failed on this batch's data and were skipped (its
    /// rows are stored all the same).
    pub alerts_skipped: bool,
}

impl WriteStats {
    /// Adds up the stats of another transaction.
    pub fn add(&mut self, other: &WriteStats) {
        self.host_rows += other.host_rows;
        self.check_rows += other.check_rows;
        self.duplicates += other.duplicates;
        self.alerts += other.alerts;
        self.alerts_skipped |= other.alerts_skipped;
    }
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
        // No temporary table is touched unless it is needed: the staging tables only
        // for a redelivery, the alert rules' input only for central-check rows, so a
        // plain batch's commit has no temporary tables to empty.
        let tx = client.transaction().await?;

        // A record read twice within the batch fails the COPY straight into the table
        // like one stored before: both go the careful way, which de-duplicates.
        let hosts: Vec<&HostRow> = batch.hosts().collect();
        let checks: Vec<&CheckRow> = batch.checks().collect();
        let mut stats = WriteStats::default();
        if !hosts.is_empty() {
            stats.host_rows = copy::insert_hosts(&tx, &hosts).await?;
        }
        if !hosts.is_empty() || !checks.is_empty() {
            agents::upsert_agents(&tx, &hosts, &checks).await?;
        }
        if !checks.is_empty() {
            let inserted = copy::insert_checks(&tx, &checks).await?;
            stats.check_rows = inserted.rows;
            if let Some(hook) = &self.alerts
                && inserted.results > 0
            {
                // Under a savepoint: rules that fail on this batch's data are skipped
                // (and counted) instead of failing its rows.
                tx.batch_execute("SAVEPOINT alert_rules").await?;
                match crate::alert_store::evaluate_check_results(&tx, &hook.channels).await {
                    Ok(transitions) => {
                        tx.batch_execute("RELEASE SAVEPOINT alert_rules").await?;
                        stats.alerts = transitions;
                    }
                    Err(error) => match crate::quarantine::Failure::of(&error) {
                        crate::quarantine::Failure::Data { sqlstate, message } => {
                            tracing::warn!(%sqlstate, %message, "alert rules failed on this batch's data: skipped, its rows are stored");
                            tx.batch_execute("ROLLBACK TO SAVEPOINT alert_rules")
                                .await?;
                            stats.alerts_skipped = true;
                        }
                        crate::quarantine::Failure::Availability => return Err(error),
                    },
                }
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
