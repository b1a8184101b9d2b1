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
use crate::consume::quarantine::{Isolated, Refused, store_isolating};
use crate::consume::row_batch::{RowBatch, SampleKind, decode_host, decode_site};
use crate::metrics::{ReasonLabel, TableLabel, WriterMetrics};
use crate::store::Failure;
use crate::store::{PostgresSink, WriteStats};

/// Longest wait between two attempts at a failing batch.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a writer that lost every partition waits to be given some again before it
/// replaces its consumer (doubling after each replacement, up to [`MAX_UNASSIGNED`]).
pub const UNASSIGNED_PATIENCE: Duration = Duration::from_secs(30);

/// The longest such wait.
pub const MAX_UNASSIGNED: Duration = Duration::from_secs(600);

/// How long a stopping writer keeps trying to store what it holds.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
}

/// The sample times a row may have: within the retention, at most [`MAX_AHEAD`] ahead.
type Window = std::ops::RangeInclusive<SystemTime>;

/// How the error of a record dated outside the writer's window begins.
const OUTSIDE_WINDOW: &str = "outside the days this writer keeps";

/// An error naming `field` when `ts` is outside `window`: such a row would need a
/// partition made for it and then be dropped by retention.
fn outside(window: &Window, field: &str, ts: SystemTime) -> Result<(), String> {
    if window.contains(&ts) {
        return Ok(());
    }
    let seconds = |t: SystemTime| crate::consume::row_batch::micros(t) / 1_000_000;
    Err(format!(
        "{OUTSIDE_WINDOW}: {field} is {} (unix seconds), expected {} to {} (postgres.retention_days)",
        seconds(ts),
        seconds(*window.start()),
        seconds(*window.end())
    ))
}

/// Counts a stored batch.
fn record_stored(metrics: &WriterMetrics, batch: &RowBatch, stats: &WriteStats, started: Instant) {
    metrics
        .flush_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.batch_rows.observe(batch.rows() as f64);
    for (table, rows) in [
        ("host_samples", stats.host_rows),
        ("site_checks", stats.check_rows),
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
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = dead_letters.send_refused(record).await {
            tracing::warn!(%error, "dead-letter topic unavailable, retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return false,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
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
        }
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
        let mut cluster = self.cluster.clone();
        let mut known_cluster = cluster.borrow_and_update().clone();
        let mut watching_cluster = true;
        // librdkafka's consumer has been seen to revoke everything when its session
        // timed out (a frozen broker) and never rejoin: a writer that held partitions
        // and has none for a while replaces its consumer, less eagerly each time (a
        // writer of a group with more members than partitions may rightly hold none).
        let mut watchdog = tokio::time::interval(Duration::from_secs(5));
        let (mut held, mut unassigned_since, mut patience) = (false, None, UNASSIGNED_PATIENCE);
        // Writes get a grace period after shutdown to finish what they hold.
        let writes_stop = CancellationToken::new();
        let mut batch = RowBatch::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut in_flight: Option<JoinHandle<(RowBatch, bool)>> = None;
        let mut paused: Option<TopicPartitionList> = None;
        let mut failed: Option<tokio::task::JoinError> = None;
        while !shutdown.is_cancelled() {
            self.drop_revoked(&mut batch);
            if batch.is_empty() {
                deadline = None;
            }
            let full = batch.rows() >= self.batch_config.max_rows;
            let due = full || deadline.is_some_and(|at| at <= tokio::time::Instant::now());
            if in_flight.is_none() && !batch.is_empty() && due {
                in_flight = Some(self.spawn_write(std::mem::take(&mut batch), writes_stop.clone()));
                deadline = None;
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
            let linger = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut rebuild = false;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                changed = cluster.changed(), if watching_cluster => match changed {
                    Ok(()) => rebuild = cluster_changed(&mut cluster, &mut known_cluster),
                    Err(_) => watching_cluster = false,
                },
                _ = watchdog.tick() => {
                    let assigned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
                    if assigned > 0 {
                        (held, unassigned_since) = (true, None);
                    } else if held {
                        let since = *unassigned_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= patience {
                            tracing::warn!(waited = ?since.elapsed(), "no partitions since they were revoked: replacing the consumer");
                            (held, unassigned_since) = (false, None);
                            patience = (patience * 2).min(MAX_UNASSIGNED);
                            rebuild = true;
                        }
                    }
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
                () = linger, if in_flight.is_none() => {}
                // Not while a healthy write finishes (the batch is full); polled
                // while paused, so the group keeps this member during an outage.
                message = self.consumer.recv(), if !full || paused.is_some() => match message {
                    Ok(message) => {
                        // A rebalance inside this recv (revoke, then the same
                        // partitions assigned again) must not drop the record it returns.
                        self.drop_revoked(&mut batch);
                        // One clock read for the records taken now.
                        let window = self.window();
                        self.take(&message, &mut batch, &window, &shutdown).await;
                        self.take_queued(&mut batch, &window, &shutdown).await;
                        if deadline.is_none() && !batch.is_empty() {
                            deadline = Some(tokio::time::Instant::now() + self.batch_config.linger());
                        }
                    }
                    Err(error) => tracing::warn!(%error, "kafka consume error"),
                },
            }
            if rebuild {
                if let Some(write) = in_flight.take() {
                    let _ = write.await;
                }
                self.drop_revoked(&mut batch);
                if !batch.is_empty() {
                    let _ = self
                        .spawn_write(std::mem::take(&mut batch), writes_stop.clone())
                        .await;
                }
                (deadline, paused) = (None, None);
                self.replace_consumer()?;
            }
        }
        // If Postgres is down the offsets stay unstored and the next writer reads
        // these records again.
        let grace = writes_stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            grace.cancel();
        });
        if let Some(write) = in_flight
            && let Err(error) = self.finished(write.await)
        {
            failed.get_or_insert(error);
        }
        self.drop_revoked(&mut batch);
        if !batch.is_empty()
            && failed.is_none()
            && let Err(error) = self.finished(self.spawn_write(batch, writes_stop).await)
        {
            failed = Some(error);
        }
        // What the finished writes stored is committed even when one of them failed.
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last auto-commit is also fine.
            tracing::debug!(%error, "final offset commit");
        }
        tracing::info!("writer pipeline stopped");
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
        let (consumer, revoked) = kafka_source::consumer(&self.kafka, self.metrics.clone())?;
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
            let mut backoff = Duration::from_millis(200);
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
                tracing::warn!(%error, rows = batch.rows(), retry_in = ?backoff, "batch not stored, retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => {
                        tracing::warn!(rows = batch.rows(), "stopping with an unstored batch; its records will be read again");
                        return (batch, false);
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        })
    }

    /// After the batch committed: its offsets become the group's resume points.
    fn store_offsets(&self, batch: &RowBatch) {
        for ((topic, partition), rows) in batch.partitions() {
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
                .map_err(|e| e.to_string())
                .and_then(|row| {
                    outside(window, "sampled_at", row.ts)?;
                    batch.push_host(topic, partition, offset, row);
                    Ok(())
                }),
            SampleKind::Site => decode_site(message.payload(), content_type(message))
                .map_err(|e| e.to_string())
                .and_then(|row| {
                    outside(window, "checked_at", row.ts)?;
                    batch.push_check(topic, partition, offset, row);
                    Ok(())
                }),
        };
        let Err(error) = decoded else {
            return;
        };
        let reason = if error.starts_with(OUTSIDE_WINDOW) {
            self.metrics
                .records_quarantined
                .get_or_create(&ReasonLabel {
                    reason: "outside_window".to_owned(),
                })
                .inc();
            "outside_window"
        } else {
            "undecodable"
        };
        tracing::warn!(topic, partition, offset, %error, "record sent to dead-letter topic");
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.dead_letters.send(message, reason, &error).await {
                Ok(()) => {
                    self.metrics.dead_letters.inc();
                    batch.skip(topic, partition, offset);
                    return;
                }
                Err(send_error) => {
                    tracing::warn!(%send_error, "dead-letter topic unavailable, retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        // Not marked handled: its offset is never stored, it will be read again.
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
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
                    self.drop_revoked(batch);
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

    fn drop_revoked(&self, batch: &mut RowBatch) {
        let revoked: Vec<_> =
            std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()));
        for key in revoked {
            batch.drop_partition(&key);
        }
    }
}
