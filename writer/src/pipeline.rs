//! The writer's main loop: consume → decode → batch (rows or linger) → one Postgres
//! transaction → only then store the Kafka offsets.
//!
//! While Postgres is failing the batch is retried with backoff, the assigned
//! partitions are paused (no new data piles up) and no offsets are stored; when it
//! comes back the same batch is written and consumption resumes, losing nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use crate::config::{BatchConfig, KafkaConfig};
use crate::kafka_source::{DeadLetters, Revoked, WriterConsumer, content_type};
use crate::metrics::{TableLabel, WriterMetrics};
use crate::postgres_sink::PostgresSink;
use crate::row_batch::{RowBatch, SampleKind, decode_host, decode_site};

/// Longest wait between two attempts at a failing batch.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Kafka refused a call that has no retry (subscribe, …).
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// The consume-and-store loop.
pub struct Pipeline {
    consumer: Arc<WriterConsumer>,
    revoked: Revoked,
    sink: Arc<PostgresSink>,
    dead_letters: DeadLetters,
    metrics: Arc<WriterMetrics>,
    batch_config: BatchConfig,
    host_topic: String,
    site_topic: String,
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
        dead_letters: DeadLetters,
        metrics: Arc<WriterMetrics>,
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
        }
    }

    /// Runs until `shutdown`; then writes the last batch (if Postgres is up), stores
    /// and commits its offsets, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), PipelineError> {
        self.consumer
            .subscribe(&[&self.host_topic, &self.site_topic])?;
        tracing::info!(topics = ?[&self.host_topic, &self.site_topic], "consuming");
        let mut batch = RowBatch::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            self.drop_revoked(&mut batch);
            let full = batch.rows() >= self.batch_config.max_rows;
            let linger = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = linger, if !full => {
                    self.flush(&mut batch, &shutdown).await;
                    deadline = None;
                }
                message = self.consumer.recv(), if !full => {
                    match message {
                        Ok(message) => {
                            self.take(&message, &mut batch, &shutdown).await;
                            if deadline.is_none() && !batch.is_empty() {
                                deadline = Some(tokio::time::Instant::now() + self.batch_config.linger());
                            }
                        }
                        Err(error) => tracing::warn!(%error, "kafka consume error"),
                    }
                }
            }
            if batch.rows() >= self.batch_config.max_rows {
                self.flush(&mut batch, &shutdown).await;
                deadline = None;
            }
        }
        self.drop_revoked(&mut batch);
        if !batch.is_empty() {
            // One last attempt; if Postgres is down the offsets stay unstored and the
            // next writer reads these records again.
            let final_stop = CancellationToken::new();
            let stop = final_stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                stop.cancel();
            });
            self.flush(&mut batch, &final_stop).await;
        }
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last auto-commit is also fine.
            tracing::debug!(%error, "final offset commit");
        }
        tracing::info!("writer pipeline stopped");
        Ok(())
    }

    /// Decodes one record into the batch, or sends it to the dead-letter topic.
    async fn take(
        &self,
        message: &BorrowedMessage<'_>,
        batch: &mut RowBatch,
        shutdown: &CancellationToken,
    ) {
        let kind = if message.topic() == self.host_topic {
            SampleKind::Host
        } else {
            SampleKind::Site
        };
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let decoded = match kind {
            SampleKind::Host => decode_host(message.payload(), content_type(message)).map(|row| {
                batch.push_host(topic, partition, offset, row);
            }),
            SampleKind::Site => decode_site(message.payload(), content_type(message)).map(|row| {
                batch.push_check(topic, partition, offset, row);
            }),
        };
        let Err(error) = decoded else {
            return;
        };
        let error = error.to_string();
        tracing::warn!(topic, partition, offset, %error, "record sent to dead-letter topic");
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.dead_letters.send(message, &error).await {
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

    fn drop_revoked(&self, batch: &mut RowBatch) {
        let revoked: Vec<_> =
            std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()));
        for key in revoked {
            batch.drop_partition(&key);
        }
    }

    /// Writes the batch, retrying until it succeeds or `stop`; then stores offsets.
    async fn flush(&self, batch: &mut RowBatch, stop: &CancellationToken) {
        if batch.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(200);
        let mut paused = None;
        loop {
            let started = Instant::now();
            match self.sink.write(batch).await {
                Ok(stats) => {
                    let m = &self.metrics;
                    m.flush_seconds.observe(started.elapsed().as_secs_f64());
                    m.batch_rows.observe(batch.rows() as f64);
                    m.rows_inserted
                        .get_or_create(&TableLabel {
                            table: "host_samples",
                        })
                        .inc_by(stats.host_rows);
                    m.rows_inserted
                        .get_or_create(&TableLabel {
                            table: "site_checks",
                        })
                        .inc_by(stats.check_rows);
                    m.duplicates_skipped.inc_by(stats.duplicates);
                    tracing::debug!(rows = batch.rows(), ?stats, "batch stored");
                    break;
                }
                Err(error) => {
                    self.metrics.flush_failures.inc();
                    tracing::warn!(%error, rows = batch.rows(), retry_in = ?backoff, "batch not stored, retrying");
                    if paused.is_none() {
                        paused = self.consumer.assignment().ok();
                        if let Some(assignment) = &paused
                            && let Err(error) = self.consumer.pause(assignment)
                        {
                            tracing::warn!(%error, "cannot pause consumption");
                        }
                    }
                    if !self.wait_keeping_membership(backoff, batch, stop).await {
                        tracing::warn!(
                            rows = batch.rows(),
                            "stopping with an unstored batch; its records will be read again"
                        );
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
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
        batch.clear();
        if let Some(assignment) = paused
            && let Err(error) = self.consumer.resume(&assignment)
        {
            tracing::warn!(%error, "cannot resume consumption");
        }
    }

    /// Sleeps `backoff` while still polling the (paused) consumer, so the group does
    /// not evict this member; anything already fetched joins the batch. False if `stop`.
    async fn wait_keeping_membership(
        &self,
        backoff: Duration,
        batch: &mut RowBatch,
        stop: &CancellationToken,
    ) -> bool {
        let until = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                () = stop.cancelled() => return false,
                message = self.consumer.recv() => match message {
                    Ok(message) => self.take(&message, batch, stop).await,
                    Err(error) => tracing::debug!(%error, "kafka consume error while paused"),
                },
            }
        }
    }
}
