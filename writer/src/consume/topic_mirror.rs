//! Follows one partition of a small topic from its beginning into PostgreSQL: the
//! checks topic into `checks` ([`super::check_mirror`]) and the audit topic into
//! `audit_log` ([`super::audit_mirror`]). Read whole at every start and followed; each
//! record is applied idempotently, retried until stored (a database outage delays the
//! mirror, it never skips a record), and never holds back samples. A new consumer
//! starts from the beginning again when the cluster changes.

use std::future::Future;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::consume::kafka_source::{ClusterId, cluster_changed};
use crate::store::SinkError;

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

/// A consumer of partition 0 of `topic`, from its first record, in a group of its own
/// (`{group_id}-{name}`).
pub fn consumer(
    config: &KafkaConfig,
    topic: &str,
    name: &str,
) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    let group = format!("{}-{name}", config.group_id);
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
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// What a mirror follows and how it applies each record.
pub struct Mirror<F> {
    /// The topic.
    pub topic: String,
    /// Its name in logs and its consumer group's suffix, e.g. `checks-mirror`.
    pub name: &'static str,
    /// Stores one record; called again with the same record until it succeeds.
    pub apply: F,
}

/// Follows `topic` (as `name`) into `sink` with `apply` until `shutdown`: how the
/// checks and audit mirrors run.
pub async fn follow_into<Fut>(
    consumer: StreamConsumer,
    config: KafkaConfig,
    cluster: ClusterId,
    (topic, name): (String, &'static str),
    sink: std::sync::Arc<crate::store::PostgresSink>,
    apply: fn(std::sync::Arc<crate::store::PostgresSink>, Record) -> Fut,
    shutdown: CancellationToken,
) where
    Fut: Future<Output = Result<(), SinkError>>,
{
    let mirror = Mirror {
        topic,
        name,
        apply: move |record: Record| apply(sink.clone(), record),
    };
    follow(consumer, config, cluster, mirror, shutdown).await;
}

/// Follows the topic until `shutdown`.
pub async fn follow<F, Fut>(
    mut consumer: StreamConsumer,
    config: KafkaConfig,
    mut cluster: ClusterId,
    mut mirror: Mirror<F>,
    shutdown: CancellationToken,
) where
    F: FnMut(Record) -> Fut,
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
                    Ok(()) if cluster_changed(&mut cluster, &mut known) => match self::consumer(&config, &mirror.topic, mirror.name) {
                        Ok(fresh) => {
                            let old = std::mem::replace(&mut consumer, fresh);
                            tokio::task::spawn_blocking(move || drop(old));
                        }
                        Err(error) => tracing::warn!(mirror = mirror.name, %error, "cannot rebuild the consumer"),
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
                tracing::debug!(mirror = mirror.name, %error, "reading the topic failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        while let Err(error) = (mirror.apply)(record.clone()).await {
            tracing::warn!(mirror = mirror.name, key = %record.key, %error, "cannot store the record in Postgres; retrying");
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}
