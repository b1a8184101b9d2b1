//! Mirrors the audit topic (the events collectors publish) into `audit_log`.

use std::sync::Arc;

use fleetmon::pb::AuditEvent;
use prost::Message as _;
use rdkafka::consumer::StreamConsumer;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::consume::kafka_source::ClusterId;
use crate::consume::topic_mirror::{self, Record};
use crate::store::{PostgresSink, SinkError};

/// Its consumer group's suffix and its name in logs.
const NAME: &str = "audit-mirror";

/// A consumer of partition 0 of the audit topic, from its first record.
pub fn consumer(config: &KafkaConfig) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    topic_mirror::consumer(config, &config.audit_topic, NAME)
}

/// Follows the topic until `shutdown`.
pub async fn run(
    consumer: StreamConsumer,
    config: KafkaConfig,
    cluster: ClusterId,
    sink: Arc<PostgresSink>,
    shutdown: CancellationToken,
) {
    let topic = (config.audit_topic.clone(), NAME);
    topic_mirror::follow_into(consumer, config, cluster, topic, sink, apply, shutdown).await;
}

/// Stores an event once; a record that is not an event of its key is skipped with a
/// warning.
async fn apply(sink: Arc<PostgresSink>, record: Record) -> Result<(), SinkError> {
    match record.payload.as_deref().map(AuditEvent::decode) {
        Some(Ok(event)) if event.id == record.key => {
            crate::api::audit::store(sink.background(), &event).await
        }
        _ => {
            tracing::warn!(key = %record.key, offset = record.offset, "record in the audit topic is not an audit event of its key: not stored");
            Ok(())
        }
    }
}
