//! The Kafka side of the writer: the consumer (group member with hand-stored
//! offsets), its rebalance and statistics callbacks, and the dead-letter producer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;

use crate::config::KafkaConfig;
use crate::consume::progress::Progress;
use crate::consume::row_batch::PartitionKey;
use crate::metrics::{PartitionLabel, WriterMetrics};

/// Partitions revoked by a rebalance and not yet dropped from the pending batch.
pub type Revoked = Arc<Mutex<Vec<PartitionKey>>>;

/// Callbacks librdkafka runs on the consumer's behalf.
#[derive(Debug)]
pub struct WriterContext {
    revoked: Revoked,
    progress: Progress,
    metrics: Arc<WriterMetrics>,
}

impl WriterContext {
    fn mark_assigned(&self, partitions: &[PartitionKey], value: i64) {
        for (topic, partition) in partitions {
            self.metrics
                .assigned_partitions
                .get_or_create(&PartitionLabel {
                    topic: topic.clone(),
                    partition: *partition,
                })
                .set(value);
        }
    }
}

impl ClientContext for WriterContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // Nothing left to store: every record published so far is stored
                // (the stored offset, or before any, the committed one, is at the end).
                let nothing_left = p.consumer_lag_stored == 0
                    || (p.consumer_lag_stored < 0 && p.consumer_lag == 0);
                if *partition >= 0 && nothing_left {
                    self.progress
                        .advance((topic.clone(), *partition), std::time::SystemTime::now());
                }
                // -1 is librdkafka's "not consumed by us" / unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .get_or_create(&PartitionLabel {
                            topic: topic.clone(),
                            partition: *partition,
                        })
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for WriterContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                let keys: Vec<PartitionKey> = partitions
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?keys, "partitions revoked");
                self.mark_assigned(&keys, 0);
                self.progress.forget(&keys);
                self.revoked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(keys);
            }
            Rebalance::Assign(partitions) => {
                let keys: Vec<(String, i32)> = partitions
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?keys, "partitions assigned");
                self.mark_assigned(&keys, 1);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }
}

/// The writer's consumer.
pub type WriterConsumer = StreamConsumer<WriterContext>;

/// Creates the group consumer: auto-commit of *stored* offsets only, and offsets are
/// stored by the writer after the Postgres commit.
pub fn consumer(
    config: &KafkaConfig,
    metrics: Arc<WriterMetrics>,
    progress: Progress,
) -> KafkaResult<(WriterConsumer, Revoked)> {
    let revoked = Revoked::default();
    let context = WriterContext {
        revoked: revoked.clone(),
        progress,
        metrics,
    };
    let mut settings = vec![("group.id", config.group_id.as_str())];
    if let Some(id) = &config.instance_id {
        settings.push(("group.instance.id", id));
    }
    let consumer = fleetmon::kafka_topics::client_config_tuned(
        &config.bootstrap_servers,
        &[
            settings.as_slice(),
            &[
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("statistics.interval.ms", "5000"),
                // A broker may hold a fetch for this long even with records waiting (tansu
                // does): it bounds what the fetch adds to end-to-end latency. Kafka answers
                // as soon as there is data; when idle this costs ten small fetches a second.
                ("fetch.wait.max.ms", "100"),
                // Bounds what librdkafka prefetches while Postgres is slow or down.
                ("queued.max.messages.kbytes", "16384"),
            ],
        ]
        .concat(),
        &config.options,
    )
    .create_with_context(context)?;
    Ok((consumer, revoked))
}

/// Producer of the dead-letter topic; replaced when the cluster behind the
/// bootstrap address changes (an idempotent producer's state is per cluster).
pub struct DeadLetters {
    producer: std::sync::RwLock<FutureProducer>,
    config: KafkaConfig,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// An idempotent producer for `config.dead_letter_topic`.
    pub fn new(config: &KafkaConfig) -> KafkaResult<Self> {
        Ok(DeadLetters {
            producer: std::sync::RwLock::new(Self::producer_for(config)?),
            config: config.clone(),
            topic: config.dead_letter_topic.clone(),
        })
    }

    fn producer_for(config: &KafkaConfig) -> KafkaResult<FutureProducer> {
        let mut client =
            fleetmon::kafka_topics::client_config(&config.bootstrap_servers, &config.options);
        client.set("enable.idempotence", "true").set("acks", "all");
        client.create()
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new producer for a new cluster; the old one is dropped on a blocking thread.
    pub fn rebuild(&self) -> KafkaResult<()> {
        let fresh = Self::producer_for(&self.config)?;
        let old = std::mem::replace(
            &mut *self.producer.write().unwrap_or_else(|p| p.into_inner()),
            fresh,
        );
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    /// For the health service: `Ok` when a broker answers for the dead-letter topic
    /// within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), fleetmon::grpc::NotServing> {
        fleetmon::kafka_topics::missing_topics(&self.producer(), vec![self.topic.clone()], timeout)
            .await
            .map(|_| ())
            .map_err(|e| format!("Kafka does not answer: {e}").into())
    }

    /// The id of the cluster behind the bootstrap address, if a broker answers.
    pub async fn cluster_id(&self, timeout: Duration) -> Option<String> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || producer.client().fetch_cluster_id(timeout))
            .await
            .ok()
            .flatten()
    }

    /// Copies `message` (key, value, headers) to the dead-letter topic with `reason`
    /// and `error` headers and its origin; resolves once Kafka confirmed it.
    pub async fn send(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        error: &str,
    ) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        headers = headers
            .insert(Header {
                key: "reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "error",
                value: Some(error),
            })
            .insert(Header {
                key: "source-topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "source-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "source-offset",
                value: Some(&offset),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.deliver(record).await
    }

    /// Sends a record PostgreSQL refused (or one outside the kept window) to the
    /// dead-letter topic: its key and sample, with headers naming why (`sqlstate`,
    /// `error`), where it was read and whose it is (`agent-id`, `stream-id`, `seq`);
    /// resolves once Kafka confirmed it.
    pub async fn send_refused(
        &self,
        refused: &crate::consume::quarantine::Refused,
    ) -> Result<(), KafkaError> {
        let partition = refused.source.1.to_string();
        let seq = refused.seq.to_string();
        let headers = [
            ("content-type", refused.content_type),
            ("reason", refused.sqlstate.as_str()),
            ("error", refused.message.as_str()),
            ("sqlstate", refused.sqlstate.as_str()),
            ("source-topic", refused.source.0.as_str()),
            ("source-partition", partition.as_str()),
            ("agent-id", refused.agent_id.as_str()),
            ("stream-id", refused.stream_id.as_str()),
            ("seq", seq.as_str()),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        });
        let record = FutureRecord::to(&self.topic)
            .headers(headers)
            .key(refused.key.as_bytes())
            .payload(refused.payload.as_slice());
        self.deliver(record).await
    }

    /// Produces `record` with the dead-letter producer; resolves once Kafka confirmed it.
    async fn deliver(&self, record: FutureRecord<'_, [u8], [u8]>) -> Result<(), KafkaError> {
        self.producer()
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }

    /// Sends a dead letter back to the topic it came from (`key`, `payload`, with its
    /// `content-type`); resolves once Kafka confirmed it.
    pub async fn replay(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        content_type: &str,
    ) -> Result<(), KafkaError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(content_type),
        });
        let record = FutureRecord::to(topic)
            .headers(headers)
            .key(key)
            .payload(payload);
        self.deliver(record).await
    }
}

/// The `content-type` header of a message, if any.
pub fn content_type<'a>(message: &'a BorrowedMessage<'_>) -> Option<&'a str> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == "content-type")
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The id of the Kafka cluster, as last seen (`None` until a broker answered).
pub type ClusterId = tokio::sync::watch::Receiver<Option<String>>;

/// How often the cluster id is read.
pub const CLUSTER_POLL: Duration = Duration::from_secs(5);

/// Reads the cluster id every [`CLUSTER_POLL`] and publishes it; when it changes (the
/// brokers were replaced by empty ones, or the bootstrap address now names another
/// cluster) the dead-letter producer is rebuilt, and the consumers, watching the
/// returned id, rebuild theirs.
pub fn watch_cluster(
    dead_letters: Arc<DeadLetters>,
    shutdown: tokio_util::sync::CancellationToken,
) -> ClusterId {
    let (publish, watch) = tokio::sync::watch::channel(None::<String>);
    tokio::spawn(async move {
        loop {
            if let Some(id) = dead_letters.cluster_id(CLUSTER_POLL).await {
                let known = publish.borrow().clone();
                if known.as_ref().is_some_and(|known| *known != id) {
                    tracing::warn!(from = ?known, to = %id, "the Kafka cluster changed (brokers replaced by empty ones?): new Kafka clients read its topics from the start");
                    if let Err(error) = dead_letters.rebuild() {
                        tracing::warn!(%error, "cannot rebuild the dead-letter producer");
                    }
                }
                publish.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&id);
                    *current = Some(id);
                    changed
                });
            }
            tokio::select! {
                () = tokio::time::sleep(CLUSTER_POLL) => {}
                () = shutdown.cancelled() => return,
            }
        }
    });
    watch
}

/// True once when `cluster` moved from one known id to another since `known`.
pub fn cluster_changed(cluster: &mut ClusterId, known: &mut Option<String>) -> bool {
    let now = cluster.borrow_and_update().clone();
    let changed = known.is_some() && now.is_some() && now != *known;
    if now.is_some() {
        *known = now;
    }
    changed
}
