//! Mirrors the compacted checks topic into the `checks` table, so stored rows can be
//! joined by `check_id` to what the check was. Read from the beginning at every start
//! (the topic holds one record per check) and followed; a newer version replaces a
//! row, a tombstone marks it deleted. Apart from the sample pipeline: a failure here
//! is logged and retried, and never holds back samples.

use std::sync::Arc;
use std::time::Duration;

use fleetmon::pb::CheckDefinition;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::consume::kafka_source::{ClusterId, cluster_changed};
use crate::store::{PostgresSink, SinkError};

const UPSERT_CHECK: &str = include_str!("../../sql/upsert_check.sql");
const DELETE_CHECK: &str = include_str!("../../sql/delete_check.sql");

/// Pause after a failed read or write before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// A consumer of partition 0 of the checks topic, from its first record.
pub fn consumer(config: &KafkaConfig) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    let group = format!("{}-checks-mirror", config.group_id);
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
    assignment.add_partition_offset(&config.checks_topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Follows the topic until `shutdown`; from the beginning again with a new consumer
/// when the cluster changes.
pub async fn run(
    mut consumer: StreamConsumer,
    config: KafkaConfig,
    mut cluster: ClusterId,
    sink: Arc<PostgresSink>,
    shutdown: CancellationToken,
) {
    let mut known = cluster.borrow_and_update().clone();
    let mut watching = true;
    loop {
        let message = tokio::select! {
            message = consumer.recv() => message,
            changed = cluster.changed(), if watching => {
                match changed {
                    Err(_) => watching = false,
                    Ok(()) if cluster_changed(&mut cluster, &mut known) => match self::consumer(&config) {
                        Ok(fresh) => {
                            let old = std::mem::replace(&mut consumer, fresh);
                            tokio::task::spawn_blocking(move || drop(old));
                        }
                        Err(error) => tracing::warn!(%error, "cannot rebuild the checks consumer"),
                    },
                    Ok(()) => {}
                }
                continue;
            }
            () = shutdown.cancelled() => return,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, "reading the checks topic failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let id = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let definition = match message.payload().map(CheckDefinition::decode) {
            None => None,
            Some(Ok(definition)) if definition.id == id => Some(definition),
            Some(_) => {
                tracing::warn!(check_id = %id, offset = message.offset(), "record in the checks topic is not a definition of its key: not mirrored");
                continue;
            }
        };
        // A database outage delays the mirror; the record is retried until stored.
        while let Err(error) = store(&sink, &id, definition.as_ref()).await {
            tracing::warn!(check_id = %id, %error, "cannot mirror the check into Postgres; retrying");
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

async fn store(
    sink: &PostgresSink,
    id: &str,
    definition: Option<&CheckDefinition>,
) -> Result<(), SinkError> {
    let client = sink.background().get().await?;
    let result = match definition {
        None => client.execute(DELETE_CHECK, &[&id]).await,
        Some(definition) => {
            let (kind, target) = fleetmon::checks::kind_and_target(definition);
            let version = i64::try_from(definition.version).unwrap_or(i64::MAX);
            let interval =
                i32::try_from(fleetmon::checks::interval_seconds(definition)).unwrap_or(i32::MAX);
            client
                .execute(
                    UPSERT_CHECK,
                    &[
                        &id,
                        &version,
                        &definition.paused,
                        &kind,
                        &target,
                        &interval,
                        &definition.encode_to_vec(),
                    ],
                )
                .await
        }
    };
    result?;
    Ok(())
}
