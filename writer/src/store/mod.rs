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

use std::time::Duration;

use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::future::BoxFuture;

use crate::config::PostgresConfig;
use crate::consume::row_batch::{CheckRow, HostRow, RowBatch};

mod agents;
mod buckets;
mod copy;
mod direct;
mod error;
mod host_rollups;
pub mod latency;
mod partitions;
mod rollups;

pub use buckets::Tier;
pub use copy::{copy_checks_into, copy_hosts_into};
pub use direct::stored_directly;
pub use error::{Failure, SinkError, describe};
pub use host_rollups::series_sql as host_series_sql;
pub use partitions::{
    PARTITIONED_TABLES, Partitions, Retention, day_of, partition_day, partition_ddl,
};

mod embedded {
    refinery::embed_migrations!("migrations");
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
    /// Set when the work after the rows ([`AfterRows`], the alert rules) failed on
    /// this batch's data and was skipped (its rows are stored all the same).
    pub after_rows_skipped: bool,
}

impl WriteStats {
    /// Adds up the stats of another transaction.
    pub fn add(&mut self, other: &WriteStats) {
        self.host_rows += other.host_rows;
        self.check_rows += other.check_rows;
        self.duplicates += other.duplicates;
        self.after_rows_skipped |= other.after_rows_skipped;
    }
}

/// Work a batch's transaction does once its new check results are inserted: the
/// check alert rules (`alerts::store::BatchRules`). Storing rows knows nothing more
/// of alerts.
pub trait AfterRows: std::fmt::Debug + Send + Sync {
    /// Runs in the batch's transaction with the check results it inserted (every
    /// check row but a heartbeat's signals), in batch order. An error fails the batch.
    fn run<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        results: &'a [&'a CheckRow],
    ) -> BoxFuture<'a, Result<AfterRowsOutcome, SinkError>>;

    /// Called once the transaction of a [`AfterRowsOutcome::Changed`] committed.
    fn committed(&self);
}

/// Holds the batch's partitions for its transaction, before it writes anything (so
/// that it waits on no row meanwhile): the work after the rows reads and writes state
/// that only the records of a partition move, and a writer taking a partition over
/// must not move it before the batch of the writer it took it from has committed.
async fn lock_partitions(tx: &Transaction<'_>, batch: &RowBatch) -> Result<(), SinkError> {
    // In key order, the order every batch takes them in.
    let (topics, partitions): (Vec<&str>, Vec<i32>) = batch
        .partitions()
        .keys()
        .map(|(topic, partition)| (topic.as_str(), *partition))
        .unzip();
    let lock = tx
        .prepare_cached(include_str!("../../sql/lock_partitions.sql"))
        .await?;
    tx.execute(&lock, &[&topics, &partitions]).await?;
    Ok(())
}

/// What [`AfterRows::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRowsOutcome {
    /// Nothing to tell anyone after the commit.
    Unchanged,
    /// Something changed: [`AfterRows::committed`] is called after the commit.
    Changed,
    /// It failed on this batch's data and was rolled back; the rows are stored.
    Skipped,
}

/// The writer's PostgreSQL side, with a pool per kind of work.
#[derive(Debug)]
pub struct PostgresSink {
    /// Batches, migrations, partitions.
    pool: Pool,
    /// The History and Alerts APIs, under `statement_timeout`.
    queries: Pool,
    /// Timed rules, the notifier, the checks mirror.
    background: Pool,
    schema: String,
    partitions: Partitions,
    /// Run in every batch's transaction after its check results.
    after_rows: Option<Box<dyn AfterRows>>,
    /// The TLS mode of `postgres.url`, for connection hints.
    mode: fleetmon::postgres::SslMode,
    /// `postgres.host_rollup_delay_seconds`.
    host_rollup_delay: Duration,
    /// The minute marks of host rows this writer knows are there.
    marked_minutes: host_rollups::MarkedMinutes,
}

impl PostgresSink {
    /// Builds the pool (connections are opened lazily) with `search_path` set to the
    /// schema. TLS (rustls, verified against `postgres.ca`) is used when the URL says
    /// `sslmode=require`; `prefer` (the default) is treated as `disable`.
    pub fn new(config: &PostgresConfig) -> Result<Self, SinkError> {
        let files = config.tls_files();
        let (mode, mut pg) = files.config().map_err(SinkError::Url)?;
        pg.options(format!("-c search_path={}", config.schema));
        // Names the schema so an operator (or a test) can tell writers apart.
        pg.application_name(format!("fleetmon-writer:{}", config.schema));
        pg.connect_timeout(Duration::from_secs(10));
        let pool = |pg: tokio_postgres::Config, size: usize| -> Result<Pool, SinkError> {
            let manager = Manager::from_config(
                pg,
                fleetmon::postgres::connector(mode, &files)?,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Ok(Pool::builder(manager)
                .max_size(size)
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(Duration::from_secs(10)))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()?)
        };
        let mut queries = pg.clone();
        queries.options(format!(
            "-c search_path={} -c statement_timeout={}s",
            config.schema, config.query_timeout_seconds
        ));
        Ok(PostgresSink {
            queries: pool(queries, config.query_pool_size)?,
            background: pool(pg.clone(), config.background_pool_size)?,
            pool: pool(pg, config.pool_size)?,
            schema: config.schema.clone(),
            partitions: Partitions::new(&config.schema),
            after_rows: None,
            mode,
            host_rollup_delay: Duration::from_secs(config.host_rollup_delay_seconds),
            marked_minutes: host_rollups::MarkedMinutes::default(),
        })
    }

    /// Runs `work` in every batch's transaction after its new check results.
    pub fn with_after_rows(self, work: impl AfterRows + 'static) -> Self {
        PostgresSink {
            after_rows: Some(Box::new(work)),
            ..self
        }
    }

    /// Makes sure the daily partitions of `days` exist (unix seconds of UTC midnight).
    pub async fn ensure_partitions(
        &self,
        days: &std::collections::BTreeSet<i64>,
    ) -> Result<(), SinkError> {
        self.partitions.ensure(&self.pool, days).await
    }

    /// Creates partitions from yesterday to `ahead` days from now and drops those
    /// wholly older than `retention_days`. Returns the partitions dropped.
    pub async fn maintain_partitions(
        &self,
        retention: &Retention,
        ahead: u32,
        now: std::time::SystemTime,
    ) -> Result<Vec<String>, SinkError> {
        self.partitions
            .maintain(&self.pool, retention, ahead, now)
            .await
    }

    /// Adds the host rows stored before the host rollups began to them, a day per
    /// transaction, until no day is left; returns the days added up.
    pub async fn backfill_host_rollups(&self) -> Result<u64, SinkError> {
        let mut client = self.background.get().await?;
        let mut days = 0;
        while let Some(day) = host_rollups::backfill_next_day(&mut client).await? {
            days += 1;
            let day = partitions::ymd(day_of(day));
            tracing::info!(%day, "host rows stored before the rollups began are added up");
        }
        Ok(days)
    }

    /// Folds the due minute marks of host partitions no batch is writing (see
    /// `host_rollups`); returns the minutes folded.
    pub async fn fold_idle_host_rollups(&self) -> Result<u64, SinkError> {
        let mut client = self.background.get().await?;
        host_rollups::fold_idle(&mut client).await
    }

    /// `postgres.host_rollup_delay_seconds`: how long after its rows a host bucket is
    /// worked out at most.
    pub fn host_rollup_delay(&self) -> Duration {
        self.host_rollup_delay
    }

    /// The pool of the History and Alerts APIs: its statements are cancelled after
    /// `postgres.query_timeout_seconds`.
    pub fn queries(&self) -> &Pool {
        &self.queries
    }

    /// The pool of background work (timed rules, the notifier, the checks mirror).
    pub fn background(&self) -> &Pool {
        &self.background
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
            let pool_error = SinkError::Pool(error);
            match fleetmon::postgres::hint(&reason, self.mode) {
                Some(hint) => SinkError::Connect { reason, hint },
                // The server answered and refused: a user, password or database that
                // is not there, which waiting will not fix.
                None if !pool_error.is_unreachable() => SinkError::Connect {
                    reason,
                    hint: "the server refuses what postgres.url asks for: fix its user, password or database name, or create the database".to_owned(),
                },
                None => pool_error,
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
    pub async fn ping(
        &self,
        timeout: std::time::Duration,
    ) -> Result<(), fleetmon::grpc::NotServing> {
        let ping = async {
            let client = self.pool.get().await?;
            client.execute("SELECT 1", &[]).await?;
            Ok::<_, SinkError>(())
        };
        match tokio::time::timeout(timeout, ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("PostgreSQL unavailable: {error}").into()),
            Err(_) => Err(format!("PostgreSQL did not answer within {timeout:?}").into()),
        }
    }

    /// Stores a batch in one transaction; a row already stored is skipped, and the
    /// rollups count only rows this call inserted.
    pub async fn write(&self, batch: &RowBatch) -> Result<WriteStats, SinkError> {
        self.ensure_partitions(&batch.days()).await?;
        let mut client = self.pool.get().await?;
        // Before PostgreSQL's now() of the transaction: what the marks' due times count from.
        let began = std::time::Instant::now();
        // No temporary table is touched unless it is needed (the staging tables only
        // for a redelivery), so a plain batch's commit has no temporary tables to empty.
        let tx = client.transaction().await?;

        // A record read twice within the batch fails the COPY straight into the table
        // like one stored before: both go the careful way, which de-duplicates.
        let hosts: Vec<&HostRow> = batch.hosts().collect();
        let checks: Vec<&CheckRow> = batch.checks().collect();
        let mut stats = WriteStats::default();
        let mut outcome = AfterRowsOutcome::Unchanged;
        let mut new_marks = Vec::new();
        if !hosts.is_empty() || (self.after_rows.is_some() && !checks.is_empty()) {
            lock_partitions(&tx, batch).await?;
        }
        if !hosts.is_empty() {
            stats.host_rows = copy::insert_hosts(&tx, &hosts).await?;
            new_marks = host_rollups::mark_minutes(
                &tx,
                batch,
                self.host_rollup_delay,
                &self.marked_minutes,
            )
            .await?;
            // As many due marks as the batch can have made, and some: the folding
            // keeps up with the marking, spread over the partitions' batches.
            let partitions: Vec<(&str, i32)> = batch
                .partitions()
                .iter()
                .filter(|(_, rows)| !rows.hosts.is_empty())
                .map(|((topic, partition), _)| (topic.as_str(), *partition))
                .collect();
            let limit = i64::try_from(hosts.len()).unwrap_or(i64::MAX / 2) + 100;
            host_rollups::fold_due(&tx, &partitions, limit).await?;
        }
        if !hosts.is_empty() || !checks.is_empty() {
            agents::upsert_agents(&tx, &hosts, &checks).await?;
        }
        if !checks.is_empty() {
            let inserted = copy::insert_checks(&tx, &checks).await?;
            stats.check_rows = inserted.rows;
            if let Some(work) = &self.after_rows
                && !inserted.results.is_empty()
            {
                outcome = work.run(&tx, &inserted.results).await?;
                stats.after_rows_skipped = outcome == AfterRowsOutcome::Skipped;
            }
        }
        tx.commit().await?;
        self.marked_minutes.remember(new_marks, began);
        if let Some(work) = &self.after_rows
            && outcome == AfterRowsOutcome::Changed
        {
            work.committed();
        }
        stats.duplicates = batch.rows() as u64 - stats.host_rows - stats.check_rows;
        Ok(stats)
    }
}
