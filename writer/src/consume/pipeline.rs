//! The writer's main loop: consume → decode → batch (rows or linger) → one Postgres
//! transaction → only then store the Kafka offsets.
//!
//! A batch PostgreSQL refuses on data (a value it cannot hold) is bisected until the
//! refused records stand alone; they go to the dead-letter topic with their SQLSTATE
//! and everything else is stored (`quarantine`). So is a record dated outside the
//! days the writer keeps, before any partition is made for it.
//!
//! While Postgres is failing the batch is retried with backoff and no offsets are
//! stored; once the next batch is full the assigned partitions are paused (no new
//! data piles up) while the consumer is still polled (the group keeps the member);
//! when Postgres comes back the same batch is written and consumption resumes,
//! losing nothing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fleetmon::backoff::Backoff;
use futures::FutureExt as _;
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BatchConfig, KafkaConfig};
use crate::consume::kafka_source::{
    self, ClusterId, DeadLetters, Revoked, WriterConsumer, cluster_changed, content_type,
};
use crate::consume::progress::Progress;
use crate::consume::quarantine::{Isolated, Refused, store_isolating};
use crate::consume::row_batch::{DecodeError, RowBatch, decode_host, decode_site};
use crate::metrics::{ReasonLabel, TableLabel, WriterMetrics};
use crate::store::Failure;
use crate::store::{PostgresSink, WriteStats};
use fleetmon::samples::SampleKind;

/// Longest wait between two attempts at a failing batch.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Between attempts at a failing batch.
const WRITE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), MAX_BACKOFF);

/// Between attempts to send to an unavailable dead-letter topic.
const DEAD_LETTER_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);

/// How long a writer that lost every partition waits to be given some again before it
/// replaces its consumer (doubling after each replacement, up to [`MAX_UNASSIGNED`]).
pub const UNASSIGNED_PATIENCE: Duration = Duration::from_secs(30);

/// The longest such wait.
pub const MAX_UNASSIGNED: Duration = Duration::from_secs(600);

/// How far ahead of the writer's clock a row may be dated (the collector refuses more
/// than its clock-skew limit; this only bounds the partitions made ahead).
pub const MAX_AHEAD: Duration = Duration::from_secs(2 * 86_400);

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Kafka refused a call that has no retry (subscribe, …).
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A batch write task panicked; its batch was not stored, nor its offsets.
    #[error("batch write task failed: {0}")]
    Write(#[from] tokio::task::JoinError),
    /// The consumer hit an error it cannot recover from, e.g. another writer joined
    /// the group under this one's `kafka.instance_id`.
    #[error("kafka consumer stopped: {0}")]
    Fatal(String),
}

/// A fatal consumer error as the writer reports it, with the fix when it is a
/// fencing: another member of the group took this writer's `kafka.instance_id`.
fn fatal_reason(reason: &str) -> String {
    if reason.to_ascii_lowercase().contains("fenced") {
        format!(
            "{reason}: another writer joined the group with this kafka.instance_id; give each writer a name of its own"
        )
    } else {
        reason.to_owned()
    }
}

/// The sample times a row may have: within the retention, at most [`MAX_AHEAD`] ahead.
type Window = std::ops::RangeInclusive<SystemTime>;

/// Why a record cannot join a batch; it goes to the dead-letter topic with this text
/// and the reason [`Untakeable::reason`].
#[derive(Debug, thiserror::Error)]
enum Untakeable {
    /// Not a sample this writer can decode.
    #[error(transparent)]
    Undecodable(#[from] DecodeError),
    /// Dated outside the window: it would need a partition made for it and then be
    /// dropped by retention.
    #[error(
        "outside the days this writer keeps: {field} is {ts} (unix seconds), expected {from} to {to} (postgres.retention_days)"
    )]
    OutsideWindow {
        /// `sampled_at` or `checked_at`.
        field: &'static str,
        /// Its value.
        ts: i64,
        /// The window's start.
        from: i64,
        /// Its end.
        to: i64,
    },
}

impl Untakeable {
    /// The `reason` header of its dead letter.
    fn reason(&self) -> &'static str {
        match self {
            Untakeable::Undecodable(_) => "undecodable",
            Untakeable::OutsideWindow { .. } => "outside_window",
        }
    }
}

/// [`Untakeable::OutsideWindow`] when `ts` is outside `window`.
fn outside(window: &Window, field: &'static str, ts: SystemTime) -> Result<(), Untakeable> {
    if window.contains(&ts) {
        return Ok(());
    }
    let seconds = |t: SystemTime| crate::consume::row_batch::micros(t) / 1_000_000;
    Err(Untakeable::OutsideWindow {
        field,
        ts: seconds(ts),
        from: seconds(*window.start()),
        to: seconds(*window.end()),
    })
}

/// Counts a stored batch.
fn record_stored(metrics: &WriterMetrics, batch: &RowBatch, stats: &WriteStats, started: Instant) {
    metrics
        .flush_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.batch_rows.observe(batch.rows() as f64);
    for (table, rows) in [
        (SampleKind::Host.table(), stats.host_rows),
        (SampleKind::Site.table(), stats.check_rows),
    ] {
        metrics
            .rows_inserted
            .get_or_create(&TableLabel { table })
            .inc_by(rows);
    }
    metrics.duplicates_skipped.inc_by(stats.duplicates);
    if stats.after_rows_skipped {
        metrics.alert_evaluations_skipped.inc();
    }
    tracing::debug!(rows = batch.rows(), ?stats, "batch stored");
}

/// Sends each refused record to the dead-letter topic (retrying until Kafka takes it),
/// logged once with its identity and counted by SQLSTATE. False if `stop` came first:
/// the batch's offsets are then not stored and it is read again.
async fn quarantine(
    dead_letters: &DeadLetters,
    metrics: &WriterMetrics,
    refused: &[Refused],
    stop: &CancellationToken,
) -> bool {
    for record in refused {
        tracing::warn!(agent_id = %record.agent_id, stream_id = %record.stream_id, seq = record.seq, topic = %record.source.0, partition = record.source.1, sqlstate = %record.sqlstate, message = %record.message, "record refused by PostgreSQL: sent to the dead-letter topic");
        let mut retries = DEAD_LETTER_BACKOFF.retries();
        while let Err(error) = dead_letters.send_refused(record).await {
            tracing::warn!(%error, "dead-letter topic unavailable, retrying");
            tokio::select! {
                () = tokio::time::sleep(retries.failed()) => {}
                () = stop.cancelled() => return false,
            }
        }
        metrics.dead_letters.inc();
        metrics
            .records_quarantined
            .get_or_create(&ReasonLabel {
                reason: record.sqlstate.clone(),
            })
            .inc();
    }
    true
}

/// The consume-and-store loop.
pub struct Pipeline {
    consumer: Arc<WriterConsumer>,
    revoked: Revoked,
    sink: Arc<PostgresSink>,
    dead_letters: Arc<DeadLetters>,
    metrics: Arc<WriterMetrics>,
    batch_config: BatchConfig,
    host_topic: String,
    site_topic: String,
    /// Set while the batch being written keeps failing (Postgres down).
    retrying: Arc<std::sync::atomic::AtomicBool>,
    /// How old a row may be: older ones would land in a partition retention drops.
    retention: Duration,
    /// To build a new consumer when the cluster changes.
    kafka: KafkaConfig,
    cluster: ClusterId,
    /// How far each held partition is stored (for the timed rules).
    progress: Progress,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("host_topic", &self.host_topic)
            .field("site_topic", &self.site_topic)
            .field("batch_config", &self.batch_config)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Wires the loop; call [`Pipeline::run`] to start it.
    pub fn new(
        kafka: &KafkaConfig,
        batch_config: BatchConfig,
        (consumer, revoked): (WriterConsumer, Revoked),
        sink: Arc<PostgresSink>,
        dead_letters: Arc<DeadLetters>,
        metrics: Arc<WriterMetrics>,
        cluster: ClusterId,
    ) -> Self {
        Pipeline {
            consumer: Arc::new(consumer),
            revoked,
            sink,
            dead_letters,
            metrics,
            batch_config,
            host_topic: kafka.host_samples_topic.clone(),
            site_topic: kafka.site_checks_topic.clone(),
            retrying: Arc::default(),
            retention: Duration::from_secs(30 * 86_400),
            kafka: kafka.clone(),
            cluster,
            progress: Progress::default(),
        }
    }

    /// Reports how far each held partition is stored to `progress` (the one its
    /// consumer's statistics report to).
    pub fn reporting_to(self, progress: Progress) -> Self {
        Pipeline { progress, ..self }
    }

    /// Keeps rows of the last `retention_days` (`postgres.retention_days`, 30 unless
    /// set): older ones are dead-lettered instead of stored into a partition that
    /// retention drops.
    pub fn keeping(self, retention_days: u32) -> Self {
        Pipeline {
            retention: Duration::from_secs(u64::from(retention_days) * 86_400),
            ..self
        }
    }

    /// Set while batches fail for want of PostgreSQL (for the health service).
    pub fn failing(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.retrying.clone()
    }

    /// Runs until `shutdown`; then finishes the batch being written and writes the
    /// last one (if Postgres is up), stores and commits their offsets, and returns.
    ///
    /// One batch is written while the next one fills, so decoding and Postgres work
    /// overlap. When the next batch is full before the write ends, reading waits for
    /// it; if the write is failing (Postgres down), the assigned partitions are paused
    /// and only polled. Memory stays at about two batches.
    ///
    /// When the cluster changes (brokers replaced by empty ones), what is held is
    /// stored without storing its offsets (they belong to the old topics) and a new
    /// consumer reads the new topics from their start.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), PipelineError> {
        self.consumer
            .subscribe(&[&self.host_topic, &self.site_topic])?;
        tracing::info!(topics = ?[&self.host_topic, &self.site_topic], "consuming");
        let mut cluster = ClusterWatch::new(self.cluster.clone());
        let mut watchdog = Watchdog::new();
        // Writes get a grace period after shutdown to finish what they hold.
        let writes_stop = CancellationToken::new();
        let mut filling = Filling::default();
        let mut in_flight: Option<JoinHandle<(RowBatch, bool)>> = None;
        let mut paused: Option<TopicPartitionList> = None;
        let mut failed: Option<tokio::task::JoinError> = None;
        let mut fatal: Option<String> = None;
        let max_rows = self.batch_config.max_rows;
        while !shutdown.is_cancelled() {
            filling.forget(&self.revoked);
            let full = filling.rows.rows() >= max_rows;
            if in_flight.is_none() && filling.due(max_rows) {
                in_flight = Some(self.spawn_write(filling.take(), writes_stop.clone()));
                continue;
            }
            let retrying = self.retrying.load(std::sync::atomic::Ordering::Relaxed);
            if full && retrying && paused.is_none() {
                paused = self.consumer.assignment().ok();
                if let Some(assignment) = &paused
                    && let Err(error) = self.consumer.pause(assignment)
                {
                    tracing::warn!(%error, "cannot pause consumption");
                }
            }
            let mut rebuild = false;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                changed = cluster.changed() => rebuild = changed,
                () = watchdog.tick() => {
                    let assigned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
                    rebuild = watchdog.replace_consumer(assigned);
                },
                written = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                    in_flight = None;
                    if let Err(error) = self.finished(written) {
                        failed = Some(error);
                        break;
                    }
                    if let Some(assignment) = paused.take()
                        && let Err(error) = self.consumer.resume(&assignment)
                    {
                        tracing::warn!(%error, "cannot resume consumption");
                    }
                }
                () = filling.lingered(), if in_flight.is_none() => {}
                // Not while a healthy write finishes (the batch is full); polled
                // while paused, so the group keeps this member during an outage.
                message = self.consumer.recv(), if !full || paused.is_some() => match message {
                    Ok(message) => {
                        // A rebalance inside this recv (revoke, then the same
                        // partitions assigned again) must not drop the record it returns.
                        filling.forget(&self.revoked);
                        // One clock read for the records taken now.
                        let window = self.window();
                        self.take(&message, &mut filling.rows, &window, &shutdown).await;
                        self.take_queued(&mut filling.rows, &window, &shutdown).await;
                        filling.started(self.batch_config.linger());
                    }
                    Err(error) => {
                        if let Some((_, reason)) = self.consumer.client().fatal_error() {
                            fatal = Some(fatal_reason(&reason));
                            break;
                        }
                        tracing::warn!(%error, "kafka consume error");
                    }
                },
            }
            if rebuild {
                // What is held is stored; its offsets belong to the old consumer and
                // are not stored (the new one reads the new topics from their start).
                if let Some(write) = in_flight.take()
                    && let Err(error) = write.await
                {
                    failed = Some(error);
                    break;
                }
                filling.forget(&self.revoked);
                if !filling.rows.is_empty()
                    && let Err(error) = self.spawn_write(filling.take(), writes_stop.clone()).await
                {
                    failed = Some(error);
                    break;
                }
                paused = None;
                self.replace_consumer()?;
            }
        }
        // If Postgres is down the offsets stay unstored and the next writer reads
        // these records again.
        let grace = writes_stop.clone();
        tokio::spawn(async move {
            // How long a stopping writer keeps trying to store what it holds.
            tokio::time::sleep(fleetmon::server::SHUTDOWN_GRACE).await;
            grace.cancel();
        });
        if let Some(write) = in_flight
            && let Err(error) = self.finished(write.await)
        {
            failed.get_or_insert(error);
        }
        filling.forget(&self.revoked);
        if !filling.rows.is_empty()
            && failed.is_none()
            && let Err(error) = self.finished(self.spawn_write(filling.take(), writes_stop).await)
        {
            failed = Some(error);
        }
        // What the finished writes stored is committed even when one of them failed.
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last auto-commit is also fine.
            tracing::debug!(%error, "final offset commit");
        }
        tracing::info!("writer pipeline stopped");
        if let Some(reason) = fatal {
            return Err(PipelineError::Fatal(reason));
        }
        match failed {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Stores the offsets of a finished write (when it stored its batch); a write
    /// task that panicked is returned as its error.
    fn finished(
        &self,
        write: Result<(RowBatch, bool), tokio::task::JoinError>,
    ) -> Result<(), tokio::task::JoinError> {
        let (written, stored) = write?;
        if stored {
            self.store_offsets(&written);
        }
        Ok(())
    }

    /// A new consumer (no positions, no stored offsets) subscribed to the topics; the
    /// old one is closed on a blocking thread.
    fn replace_consumer(&mut self) -> Result<(), PipelineError> {
        let (consumer, revoked) =
            kafka_source::consumer(&self.kafka, self.metrics.clone(), self.progress.clone())?;
        consumer.subscribe(&[&self.host_topic, &self.site_topic])?;
        let old = std::mem::replace(&mut self.consumer, Arc::new(consumer));
        self.revoked = revoked;
        tokio::task::spawn_blocking(move || drop(old));
        tracing::info!("consumer replaced: reading the new cluster's topics from the start");
        Ok(())
    }

    /// Writes a batch in the background, retrying with backoff until it is stored
    /// (true) or `stop` (false); a batch refused on data is stored without the records
    /// PostgreSQL refuses, which go to the dead-letter topic. Returns the batch for its
    /// offsets.
    fn spawn_write(
        &self,
        batch: RowBatch,
        stop: CancellationToken,
    ) -> JoinHandle<(RowBatch, bool)> {
        let sink = self.sink.clone();
        let dead_letters = self.dead_letters.clone();
        let metrics = self.metrics.clone();
        let retrying = self.retrying.clone();
        tokio::spawn(async move {
            let mut retries = WRITE_BACKOFF.retries();
            let mut isolating = false;
            loop {
                let started = Instant::now();
                let written = if isolating {
                    store_isolating(&sink, &batch).await
                } else {
                    sink.write(&batch).await.map(|stats| Isolated {
                        stats,
                        refused: Vec::new(),
                    })
                };
                let error = match written {
                    Ok(isolated) => {
                        if !quarantine(&dead_letters, &metrics, &isolated.refused, &stop).await {
                            return (batch, false);
                        }
                        record_stored(&metrics, &batch, &isolated.stats, started);
                        retrying.store(false, std::sync::atomic::Ordering::Relaxed);
                        return (batch, true);
                    }
                    Err(error) => error,
                };
                if let Failure::Data { sqlstate, message } = Failure::of(&error) {
                    // Not retried: the same rows fail the same way. Find the refused.
                    tracing::warn!(%sqlstate, %message, rows = batch.rows(), "batch refused on data: isolating the records PostgreSQL refuses");
                    isolating = true;
                    continue;
                }
                metrics.flush_failures.inc();
                retrying.store(true, std::sync::atomic::Ordering::Relaxed);
                let backoff = retries.failed();
                tracing::warn!(%error, rows = batch.rows(), retry_in = ?backoff, "batch not stored, retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => {
                        tracing::warn!(rows = batch.rows(), "stopping with an unstored batch; its records will be read again");
                        return (batch, false);
                    }
                }
            }
        })
    }

    /// After the batch committed: its offsets become the group's resume points.
    fn store_offsets(&self, batch: &RowBatch) {
        for ((topic, partition), rows) in batch.partitions() {
            // Samples arrive about in the order they were taken: what this batch
            // stored of a partition, it stored up to its newest sample.
            if let Some(newest) = rows.hosts.iter().map(|row| row.ts).max() {
                self.progress.advance((topic.clone(), *partition), newest);
            }
            if let Err(error) = self
                .consumer
                .store_offset(topic, *partition, rows.last_offset)
            {
                // The partition moved to another writer meanwhile; it re-reads from
                // the last commit and the unique key skips what we stored.
                tracing::debug!(topic, partition, %error, "offset not stored");
            }
        }
    }

    /// Decodes one record into the batch, or sends it to the dead-letter topic (also
    /// when it is dated outside `window`).
    async fn take(
        &self,
        message: &BorrowedMessage<'_>,
        batch: &mut RowBatch,
        window: &Window,
        shutdown: &CancellationToken,
    ) {
        let kind = if message.topic() == self.host_topic {
            SampleKind::Host
        } else {
            SampleKind::Site
        };
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let decoded = match kind {
            SampleKind::Host => decode_host(message.payload(), content_type(message))
                .map_err(Untakeable::from)
                .and_then(|row| {
                    outside(window, "sampled_at", row.ts)?;
                    batch.push_host(topic, partition, offset, row);
                    Ok(())
                }),
            SampleKind::Site => decode_site(message.payload(), content_type(message))
                .map_err(Untakeable::from)
                .and_then(|row| {
                    outside(window, "checked_at", row.ts)?;
                    batch.push_check(topic, partition, offset, row);
                    Ok(())
                }),
        };
        let Err(error) = decoded else {
            return;
        };
        let reason = error.reason();
        if let Untakeable::OutsideWindow { .. } = error {
            self.metrics
                .records_quarantined
                .get_or_create(&ReasonLabel {
                    reason: reason.to_owned(),
                })
                .inc();
        }
        tracing::warn!(topic, partition, offset, %error, "record sent to dead-letter topic");
        let mut retries = DEAD_LETTER_BACKOFF.retries();
        loop {
            match self
                .dead_letters
                .send(message, reason, &error.to_string())
                .await
            {
                Ok(()) => {
                    self.metrics.dead_letters.inc();
                    batch.skip(topic, partition, offset);
                    return;
                }
                Err(send_error) => {
                    tracing::warn!(%send_error, "dead-letter topic unavailable, retrying");
                    tokio::select! {
                        () = tokio::time::sleep(retries.failed()) => {}
                        // Not marked handled: its offset is never stored, it will be read again.
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Takes the records the consumer already holds, until the batch is full, without
    /// going round the main loop for each (a round polls every branch and reads the
    /// clock, which cost more than decoding a record).
    ///
    /// Each record counts against tokio's cooperative budget: a record ready at once
    /// never makes this task wait, and without it a write task just spawned (placed
    /// to run next on this worker) waited for a whole batch to be decoded, which left
    /// PostgreSQL idle for a seventh of every batch.
    async fn take_queued(
        &self,
        batch: &mut RowBatch,
        window: &Window,
        shutdown: &CancellationToken,
    ) {
        while batch.rows() < self.batch_config.max_rows {
            tokio::task::consume_budget().await;
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => {
                    forget_revoked(&self.revoked, batch);
                    self.take(&message, batch, window, shutdown).await;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "kafka consume error");
                    return;
                }
                None => return,
            }
        }
    }

    /// The sample times a row may have now: within the retention, at most
    /// [`MAX_AHEAD`] ahead.
    fn window(&self) -> Window {
        let now = SystemTime::now();
        (now - self.retention)..=(now + MAX_AHEAD)
    }
}

/// Drops from `batch` the rows of partitions revoked since the last call.
///
/// Revoked partitions' pending rows are dropped, not drained: draining would mean
/// writing them inside the rebalance (which librdkafka runs within a poll, so a slow or
/// absent PostgreSQL would hold up the whole group's rebalance), and nothing is lost by
/// dropping them: their offsets were never stored, so the partition's new owner reads
/// them again from the last committed offset. A write already in flight for a revoked
/// partition still completes; its offsets are then refused (logged at debug) and the
/// unique key makes the new owner's copy of those rows a no-op.
fn forget_revoked(revoked: &Revoked, batch: &mut RowBatch) {
    let revoked: Vec<_> = std::mem::take(&mut *revoked.lock().unwrap_or_else(|p| p.into_inner()));
    for key in revoked {
        batch.drop_partition(&key);
    }
}

/// The rows gathered for the next write. Invariant: `due_at` is set exactly while
/// `rows` holds any (to the first row's arrival plus the linger).
#[derive(Debug, Default)]
struct Filling {
    rows: RowBatch,
    due_at: Option<tokio::time::Instant>,
}

impl Filling {
    /// Drops the rows of revoked partitions ([`forget_revoked`]).
    fn forget(&mut self, revoked: &Revoked) {
        forget_revoked(revoked, &mut self.rows);
        if self.rows.is_empty() {
            self.due_at = None;
        }
    }

    /// Starts the linger when the first rows arrived.
    fn started(&mut self, linger: Duration) {
        if self.due_at.is_none() && !self.rows.is_empty() {
            self.due_at = Some(tokio::time::Instant::now() + linger);
        }
    }

    /// Whether the rows should be written now: `max_rows` of them, or lingered enough.
    fn due(&self, max_rows: usize) -> bool {
        !self.rows.is_empty()
            && (self.rows.rows() >= max_rows
                || self
                    .due_at
                    .is_some_and(|at| at <= tokio::time::Instant::now()))
    }

    /// Resolves when the linger ends (never while there are no rows).
    async fn lingered(&self) {
        match self.due_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// The rows, leaving none.
    fn take(&mut self) -> RowBatch {
        self.due_at = None;
        std::mem::take(&mut self.rows)
    }
}

/// librdkafka's consumer has been seen to revoke everything when its session timed out
/// (a frozen broker) and never rejoin: a writer that held partitions and has none for
/// a while replaces its consumer, less eagerly each time (a writer of a group with more
/// members than partitions may rightly hold none). Invariant: `unassigned_since` is set
/// only while `held` and nothing is assigned.
#[derive(Debug)]
struct Watchdog {
    every: tokio::time::Interval,
    held: bool,
    unassigned_since: Option<Instant>,
    patience: Duration,
}

impl Watchdog {
    fn new() -> Self {
        Watchdog {
            every: tokio::time::interval(Duration::from_secs(5)),
            held: false,
            unassigned_since: None,
            patience: UNASSIGNED_PATIENCE,
        }
    }

    /// The next look at the assignment.
    async fn tick(&mut self) {
        self.every.tick().await;
    }

    /// Whether to replace the consumer, which holds `assigned` partitions now.
    fn replace_consumer(&mut self, assigned: usize) -> bool {
        if assigned > 0 {
            (self.held, self.unassigned_since) = (true, None);
            return false;
        }
        if !self.held {
            return false;
        }
        let since = *self.unassigned_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.patience {
            return false;
        }
        tracing::warn!(waited = ?since.elapsed(), "no partitions since they were revoked: replacing the consumer");
        (self.held, self.unassigned_since) = (false, None);
        self.patience = (self.patience * 2).min(MAX_UNASSIGNED);
        true
    }
}

/// The Kafka cluster the consumer reads, watched for a replacement (brokers replaced
/// by empty ones, or the bootstrap address now naming another cluster).
#[derive(Debug)]
struct ClusterWatch {
    cluster: ClusterId,
    known: Option<String>,
    watching: bool,
}

impl ClusterWatch {
    fn new(mut cluster: ClusterId) -> Self {
        let known = cluster.borrow_and_update().clone();
        ClusterWatch {
            cluster,
            known,
            watching: true,
        }
    }

    /// Resolves with true when the cluster changed (false: a new reading of the same
    /// one); never once the watch has ended.
    async fn changed(&mut self) -> bool {
        if !self.watching {
            return std::future::pending().await;
        }
        match self.cluster.changed().await {
            Ok(()) => cluster_changed(&mut self.cluster, &mut self.known),
            Err(_) => {
                self.watching = false;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_watchdog_replaces_a_consumer_only_after_it_held_partitions_and_lost_them() {
        let mut watchdog = Watchdog::new();
        assert!(
            !watchdog.replace_consumer(0),
            "never held any: nothing to replace"
        );
        assert!(!watchdog.replace_consumer(3));
        watchdog.patience = Duration::ZERO;
        assert!(watchdog.replace_consumer(0), "held, then none");
        assert_eq!(watchdog.patience, Duration::ZERO);
        assert!(
            !watchdog.replace_consumer(0),
            "a new consumer must hold some first"
        );
        watchdog.patience = Duration::from_secs(30);
        assert!(!watchdog.replace_consumer(2));
        assert!(watchdog.held);
        assert!(!watchdog.replace_consumer(0), "within its patience");
        assert!(watchdog.unassigned_since.is_some());
    }

    fn row() -> crate::consume::row_batch::HostRow {
        use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, HostSample};
        use prost::Message as _;
        let sample = HostSample {
            agent_id: "a1".into(),
            stream_id: "s".into(),
            seq: 1,
            sampled_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            ..Default::default()
        };
        decode_host(
            Some(&sample.encode_to_vec()),
            Some(HOST_SAMPLE_CONTENT_TYPE),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn rows_are_due_when_full_or_lingered_and_revoked_ones_are_dropped() {
        let mut filling = Filling::default();
        assert!(!filling.due(1), "nothing to write");
        filling.rows.push_host("hosts", 0, 1, row());
        filling.rows.push_host("hosts", 1, 1, row());
        filling.started(Duration::from_secs(60));
        assert!(
            filling.due_at.is_some(),
            "the linger starts with the first row"
        );
        assert!(!filling.due(3), "neither full nor lingered");
        assert!(filling.due(2), "full");

        let revoked = Revoked::default();
        revoked.lock().unwrap().push(("hosts".to_owned(), 0));
        filling.forget(&revoked);
        assert_eq!(
            filling.rows.rows(),
            1,
            "the revoked partition's row is dropped"
        );
        assert!(
            revoked.lock().unwrap().is_empty(),
            "each revocation is applied once"
        );
        filling.due_at = Some(tokio::time::Instant::now());
        assert!(filling.due(3), "lingered");
        assert_eq!(filling.take().rows(), 1);
        assert!(filling.rows.is_empty() && filling.due_at.is_none());

        filling.rows.push_host("hosts", 0, 2, row());
        filling.started(Duration::from_secs(60));
        revoked.lock().unwrap().push(("hosts".to_owned(), 0));
        filling.forget(&revoked);
        assert!(filling.due_at.is_none(), "no rows left, no linger");
    }
}
