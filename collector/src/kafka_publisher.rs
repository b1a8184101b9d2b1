//! Publishing validated samples to Kafka: one record per sample (host samples keyed by
//! agent id, site checks by check id or URL), value = the protobuf message, header
//! `content-type` naming it.
//!
//! The producer is idempotent with `acks=all`; a sample counts as durable only when
//! its delivery report says so. A full producer queue makes [`KafkaPublisher::publish`]
//! wait, which stops the ingest session from reading more (backpressure).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};

use tokio::sync::RwLock;

use crate::config::KafkaConfig;
use crate::validation::ValidSample;
use fleetmon::grpc::NotServing;
use fleetmon::kafka_topics::{CreateTopicError, TopicSpec, create_missing, missing_topics};
use fleetmon::samples::SampleKind;

/// Why Kafka could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer or admin client could not be created (bad option).
    #[error("invalid Kafka client configuration: {0}")]
    Config(KafkaError),
    /// The broker did not answer at start-up.
    #[error("cannot reach Kafka at {bootstrap} within {seconds} s: {source}")]
    Unreachable {
        /// The configured bootstrap servers.
        bootstrap: String,
        /// The timeout.
        seconds: u64,
        /// The last error.
        source: KafkaError,
    },
    /// A topic could not be created.
    #[error(transparent)]
    CreateTopic(#[from] CreateTopicError),
    /// A record could not be queued or was not delivered.
    #[error("kafka delivery failed: {0}")]
    Delivery(KafkaError),
    /// The producer went away before reporting.
    #[error("kafka producer shut down before reporting delivery")]
    Canceled,
}

/// Longest wait for a replaced producer to drop what it still holds.
const PURGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The librdkafka settings of the collector's producer (`options` pass through).
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = base_config(&config.bootstrap_servers, &config.options);
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", config.linger_ms.to_string());
    // Options win for everything but the three keys validation refuses.
    for (key, value) in &config.options {
        client.set(key, value);
    }
    client
}

fn base_config(bootstrap: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    fleetmon::kafka_topics::client_config(bootstrap, options)
}

/// The collector's Kafka producer and its two topics.
pub struct KafkaPublisher {
    /// Replaced by [`KafkaPublisher::rebuild`] when it can no longer deliver; while
    /// that happens, publishers wait.
    /// Shared by `Arc` so that the last holder of a replaced producer is known: its
    /// destruction blocks for as long as librdkafka needs and must not run on an
    /// async worker.
    producer: RwLock<Arc<FutureProducer>>,
    host_topic: String,
    site_topic: String,
    /// To recreate the topics should the cluster lose them.
    config: KafkaConfig,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("host_topic", &self.host_topic)
            .field("site_topic", &self.site_topic)
            .finish_non_exhaustive()
    }
}

/// How long the collector waits between tries while Kafka is not up at start.
const WAIT_FOR_KAFKA: fleetmon::backoff::Backoff =
    fleetmon::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

impl KafkaPublisher {
    /// [`KafkaPublisher::connect`], tried again while no broker answers (the collector
    /// may start before Kafka), each wait logged with the address and the reason; a
    /// configuration error, or `shutdown`, ends the wait with its error.
    pub async fn connect_when_up(
        config: &KafkaConfig,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Self, PublishError> {
        let mut retries = WAIT_FOR_KAFKA.retries();
        loop {
            match Self::connect(config).await {
                Err(error @ PublishError::Unreachable { .. }) => {
                    let delay = retries.failed();
                    tracing::warn!(
                        kafka = %config.bootstrap_servers,
                        %error,
                        retry_in = ?delay,
                        "waiting for Kafka: the collector serves once it answers"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return Err(error),
                    }
                }
                connected => return connected,
            }
        }
    }

    /// Creates the producer, waits (up to the configured timeout) until the broker
    /// answers, and creates missing topics.
    pub async fn connect(config: &KafkaConfig) -> Result<Self, PublishError> {
        let producer: FutureProducer = producer_config(config)
            .create()
            .map_err(PublishError::Config)?;
        wait_reachable(&producer, config).await?;
        create_topics(config).await?;
        Ok(KafkaPublisher {
            producer: RwLock::new(Arc::new(producer)),
            host_topic: config.host_samples_topic.clone(),
            site_topic: config.site_checks_topic.clone(),
            config: config.clone(),
        })
    }

    /// The producer now (a cheap handle).
    async fn producer(&self) -> Arc<FutureProducer> {
        self.producer.read().await.clone()
    }

    /// For the health service: `Ok` when a broker answers within `timeout` and both
    /// topics exist. Topics the cluster lost (a broker replaced by an empty one) are
    /// created again; until that succeeds the answer says what is missing. A producer
    /// that can no longer deliver (a fatal error, or a cluster that lost its state and
    /// with it the producer's id) is replaced.
    pub async fn check(&self, timeout: Duration) -> Result<(), NotServing> {
        let fatal = self.producer().await.client().fatal_error();
        if let Some((code, reason)) = fatal {
            self.rebuild(&format!("fatal producer error {code:?}: {reason}"))
                .await?;
        }
        let topics = vec![self.host_topic.clone(), self.site_topic.clone()];
        let missing = missing_topics(&*self.producer().await, topics, timeout)
            .await
            .map_err(|e| {
                format!(
                    "Kafka at {} does not answer: {e}",
                    self.config.bootstrap_servers
                )
            })?;
        if missing.is_empty() {
            return Ok(());
        }
        tracing::warn!(topics = ?missing, "kafka topics missing: creating them again");
        create_topics(&self.config)
            .await
            .map_err(|e| format!("topics {missing:?} missing: {e}"))?;
        // The cluster lost its state: it no longer knows this producer, whose queued
        // records would wait for ever.
        self.rebuild("the cluster lost its topics (a broker replaced by an empty one?)")
            .await
    }

    /// Replaces the producer. Records still queued in the old one fail back to their
    /// ingest streams, which end with UNAVAILABLE; agents send them again.
    pub async fn rebuild(&self, why: &str) -> Result<(), NotServing> {
        let mut current = self.producer.write().await;
        // The old producer is emptied before the new one exists: a fresh cluster hands
        // out producer ids from 0 again, and records of the old producer under an id the
        // new one gets would break both. Every record it held fails back to its stream
        // (a producer in a fatal state would otherwise hold them until destroyed, which
        // can take for ever), so the agents resend them to the new one.
        let old = Arc::clone(&current);
        let fatal = old.client().fatal_error().is_some();
        let purge = tokio::task::spawn_blocking(move || {
            let config = PurgeConfig::default().queue().inflight();
            old.purge(if fatal { config.non_blocking() } else { config });
        });
        if tokio::time::timeout(PURGE_TIMEOUT, purge).await.is_err() {
            tracing::warn!("purging the old kafka producer did not finish in time");
        }
        let fresh: FutureProducer = producer_config(&self.config)
            .create()
            .map_err(|e| format!("cannot create a new Kafka producer: {e}"))?;
        let old = std::mem::replace(&mut *current, Arc::new(fresh));
        drop(current);
        tracing::warn!(reason = why, "kafka producer replaced");
        // Destroying it waits for its broker threads (for long, in a fatal state): on a
        // blocking thread, once every session has let go of it, and not waited for.
        tokio::task::spawn_blocking(move || {
            let mut old = old;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(producer) => return drop(producer),
                    Err(shared) => old = shared,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Ok(())
    }

    /// The topic samples of `kind` are published to.
    fn topic(&self, kind: SampleKind) -> &str {
        match kind {
            SampleKind::Host => &self.host_topic,
            SampleKind::Site => &self.site_topic,
        }
    }

    /// Queues one sample; the returned future resolves when Kafka confirmed it.
    /// Waits while the producer queue is full.
    pub async fn publish(&self, sample: &ValidSample) -> Result<DeliveryFuture, PublishError> {
        let producer = self.producer().await;
        self.queue(&producer, sample, &mut Vec::new()).await
    }

    /// [`KafkaPublisher::publish`] for each of a batch's samples, in order, through
    /// one producer handle; `each` makes what the caller keeps of each.
    pub async fn publish_all<T>(
        &self,
        samples: &[ValidSample],
        each: impl Fn(Result<DeliveryFuture, PublishError>) -> T,
    ) -> Vec<T> {
        let producer = self.producer().await;
        let mut queued = Vec::with_capacity(samples.len());
        // librdkafka copies each payload: one buffer serves the whole batch.
        let mut payload = Vec::new();
        for sample in samples {
            queued.push(each(self.queue(&producer, sample, &mut payload).await));
        }
        queued
    }

    async fn queue(
        &self,
        producer: &FutureProducer,
        sample: &ValidSample,
        payload: &mut Vec<u8>,
    ) -> Result<DeliveryFuture, PublishError> {
        let kind = sample.kind();
        payload.clear();
        sample.encode(payload);
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(kind.content_type()),
        });
        let mut record = FutureRecord::to(self.topic(kind))
            .key(sample.partition_key())
            .payload(payload.as_slice())
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(PublishError::Delivery(error)),
            }
        }
    }

    /// Waits for every queued record to be delivered (or `timeout`), at shutdown.
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer().await;
        let result = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if let Ok(Err(error)) = result {
            tracing::warn!(%error, "kafka flush at shutdown incomplete");
        }
    }
}

/// Turns a delivery report into a result.
pub fn delivery_result(
    report: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> Result<(), PublishError> {
    match report {
        Ok(Ok(_delivery)) => Ok(()),
        Ok(Err((error, _message))) => Err(PublishError::Delivery(error)),
        Err(_) => Err(PublishError::Canceled),
    }
}

async fn wait_reachable(
    producer: &FutureProducer,
    config: &KafkaConfig,
) -> Result<(), PublishError> {
    let client = producer.clone();
    let timeout = config.connect_timeout();
    let result = tokio::task::spawn_blocking(move || client.client().fetch_metadata(None, timeout))
        .await
        // The probe thread ended without an answer.
        .unwrap_or(Err(KafkaError::Canceled));
    result
        .map(|_| ())
        .map_err(|source| PublishError::Unreachable {
            bootstrap: config.bootstrap_servers.clone(),
            seconds: config.connect_timeout_seconds,
            source,
        })
}

async fn create_topics(config: &KafkaConfig) -> Result<(), PublishError> {
    let spec = TopicSpec {
        names: &[&config.host_samples_topic, &config.site_checks_topic],
        partitions: config.partitions,
        replication_factor: config.replication_factor,
        min_insync_replicas: config.min_insync_replicas,
        compacted: false,
    };
    create_missing(
        &config.bootstrap_servers,
        &config.options,
        spec,
        config.connect_timeout(),
    )
    .await?;
    Ok(())
}
