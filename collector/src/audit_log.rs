//! The collector's side of the audit trail: each change an operator makes here
//! (checks, tokens, revocations) is published to the audit topic once it is done;
//! writers store it in `audit_log` (docs/SECURITY.md).
//!
//! The event follows the change (a record of its own, not part of the change's): a
//! collector that dies between the two loses that one event, and says so in no log.
//! A failure to publish is logged as an error with the whole event, and counted.

use std::time::Duration;

use fleetmon::audit::{AUDIT_EVENT_CONTENT_TYPE, Author};
use fleetmon::kafka_topics::{CreateTopicError, TopicSpec, create_missing};
use fleetmon::pb::AuditEvent;
use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::KafkaConfig;

/// How long publishing one event may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes audit events (or, [`AuditLog::off`], drops them: services built without
/// Kafka, in tests and benches).
#[derive(Clone)]
pub struct AuditLog {
    to: Option<(FutureProducer, String)>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("topic", &self.to.as_ref().map(|(_, topic)| topic))
            .finish_non_exhaustive()
    }
}

/// Why the audit topic could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    /// The topic could not be made.
    #[error("audit topic: {0}")]
    Topic(#[from] CreateTopicError),
    /// The producer could not be made.
    #[error("audit producer: {0}")]
    Producer(#[from] rdkafka::error::KafkaError),
}

impl AuditLog {
    /// The audit topic of `config` (created with one partition if missing).
    pub async fn open(config: &KafkaConfig) -> Result<Self, AuditLogError> {
        create_missing(
            &config.bootstrap_servers,
            &config.options,
            TopicSpec {
                names: &[&config.audit_topic],
                partitions: 1,
                replication_factor: config.replication_factor,
                min_insync_replicas: config.min_insync_replicas,
                compacted: false,
            },
            config.connect_timeout(),
        )
        .await?;
        let producer = crate::kafka_publisher::producer_config(config).create()?;
        Ok(AuditLog {
            to: Some((producer, config.audit_topic.clone())),
        })
    }

    /// A log that records nothing.
    pub fn off() -> Self {
        AuditLog { to: None }
    }

    /// Records that `author` did `action` to `subject`, changing it from `before` to
    /// `after` (JSON, secrets left out; `None`: it did not exist).
    pub async fn change(
        &self,
        author: &Author,
        action: &str,
        subject: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) {
        self.record(author.event(action, subject, before, after))
            .await;
    }

    /// Publishes `event` and waits until Kafka has it.
    pub async fn record(&self, event: AuditEvent) {
        let Some((producer, topic)) = &self.to else {
            return;
        };
        let payload = event.encode_to_vec();
        let record = FutureRecord::to(topic)
            .key(&event.id)
            .payload(&payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(AUDIT_EVENT_CONTENT_TYPE),
            }));
        match producer.send(record, PUBLISH_TIMEOUT).await {
            Ok(_) => {
                tracing::info!(actor = %event.actor_uri, action = %event.action, subject = %event.subject, "audited");
            }
            Err((error, _)) => {
                tracing::error!(%error, ?event, "cannot publish an audit event: the change was made, its record is only in this log");
            }
        }
    }
}
