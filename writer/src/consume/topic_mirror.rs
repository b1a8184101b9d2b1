//! Follows one partition of a small topic from its beginning into PostgreSQL: the
//! checks topic into `checks` ([`super::check_mirror`]) and the audit topic into
//! `audit_log` ([`super::audit_mirror`]). Read whole at every start and followed; each
//! record is applied idempotently, retried until stored (a database outage delays the
//! mirror, it never skips a record), and never holds back samples. A new consumer
//! starts from the beginning again when the cluster changes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::consume::kafka_source::{ClusterId, cluster_changed};
use crate::store::{PostgresSink, SinkError};

/// Pause after a failed read or write before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// One record of the topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its key, as text.
    pub key: String,
    /// Its value (`None`: a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Its offset, for messages.
    pub offset: i64,
}

/// One mirror: its name, the topic of the configuration it follows, and how it stores
/// a record.
pub struct Spec<Fut> {
    /// Its name in logs and its consumer group's suffix, e.g. `checks-mirror`.
    pub name: &'static str,
    /// The topic it follows.
    pub topic: fn(&KafkaConfig) -> &str,
    /// Stores one record; called again with the same record until it succeeds.
    pub apply: fn(Arc<PostgresSink>, Record) -> Fut,
}

/// A consumer of partition 0 of the mirror's topic, from its first record, in a group
/// of its own (`{group_id}-{name}`).
pub fn consumer<Fut>(
    config: &KafkaConfig,
    spec: &Spec<Fut>,
) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    let group = format!("{}-{}", config.group_id, spec.name);
    let consumer: StreamConsumer = fleetmon::kafka_topics::client_config_tuned(
        &config.bootstrap_servers,
        &[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            // A position past the end (the topic made again) restarts from its beginning.
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "100"),
        ],
        &config.options,
    )
    .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset((spec.topic)(config), 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// What every mirror of one writer shares: the Kafka settings, the cluster watch, the
/// store and the shutdown.
#[derive(Clone)]
pub struct Mirrors {
    /// The writer's Kafka settings.
    pub config: KafkaConfig,
    /// The cluster id watch (a new cluster rebuilds each consumer).
    pub cluster: ClusterId,
    /// Where each mirror stores.
    pub sink: Arc<PostgresSink>,
    /// Ends every mirror.
    pub shutdown: CancellationToken,
}

impl Mirrors {
    /// Follows `spec`'s topic with `consumer` ([`run`]).
    pub fn follow<Fut>(
        &self,
        consumer: StreamConsumer,
        spec: Spec<Fut>,
    ) -> impl Future<Output = ()> + use<Fut>
    where
        Fut: Future<Output = Result<(), SinkError>>,
    {
        run(
            consumer,
            self.config.clone(),
            self.cluster.clone(),
            self.sink.clone(),
            spec,
            self.shutdown.clone(),
        )
    }
}

/// Follows the mirror's topic into `sink` until `shutdown`.
pub async fn run<Fut>(
    mut consumer: StreamConsumer,
    config: KafkaConfig,
    mut cluster: ClusterId,
    sink: Arc<PostgresSink>,
    spec: Spec<Fut>,
    shutdown: CancellationToken,
) where
    Fut: Future<Output = Result<(), SinkError>>,
{
    let mut known = cluster.borrow_and_update().clone();
    let mut watching = true;
    loop {
        let message = tokio::select! {
            message = consumer.recv() => message,
            changed = cluster.changed(), if watching => {
                match changed {
                    Err(_) => watching = false,
                    Ok(()) if cluster_changed(&mut cluster, &mut known) => match self::consumer(&config, &spec) {
                        Ok(fresh) => {
                            let old = std::mem::replace(&mut consumer, fresh);
                            tokio::task::spawn_blocking(move || drop(old));
                        }
                        Err(error) => tracing::warn!(mirror = spec.name, %error, "cannot rebuild the consumer"),
                    },
                    Ok(()) => {}
                }
                continue;
            }
            () = shutdown.cancelled() => return,
        };
        let record = match message {
            Ok(message) => Record {
                key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                payload: message.payload().map(<[u8]>::to_vec),
                offset: message.offset(),
            },
            Err(error) => {
                tracing::debug!(mirror = spec.name, %error, "reading the topic failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        while let Err(error) = (spec.apply)(sink.clone(), record.clone()).await {
            tracing::warn!(mirror = spec.name, key = %record.key, %error, "cannot store the record in Postgres; retrying");
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}
