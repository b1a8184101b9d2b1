//! The collector's side of the audit trail: each change an operator makes here
//! (checks, tokens, revocations) is published to the audit topic before it is attempted
//! (`requested`), and again once it is done or failed, under the same id; writers store
//! it in `audit_log`, the second settling the first (docs/SECURITY.md).
//!
//! So no change goes unrecorded: one whose request cannot be published is not made
//! (UNAVAILABLE), and a collector that dies between the change and its outcome leaves a
//! `requested` record naming who asked for what.

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

    /// Records that `author` asks for `action` on `subject` (as it is `before`: JSON,
    /// secrets left out; `None`: it does not exist) and waits until Kafka has it. Only
    /// then may the change be attempted: a change whose record cannot be kept is not
    /// made. Settle the answer with [`Pending::settle`].
    pub async fn request(
        &self,
        author: &Author,
        action: &str,
        subject: &str,
        before: Option<serde_json::Value>,
    ) -> Result<Pending, Unrecorded> {
        let mut event = author.event(action, subject, before, None);
        event.outcome = fleetmon::audit::REQUESTED.to_owned();
        self.publish(&event).await.map_err(|error| Unrecorded {
            action: event.action.clone(),
            error,
        })?;
        Ok(Pending {
            log: self.clone(),
            event,
        })
    }

    /// Publishes `event` and waits until Kafka has it.
    async fn publish(&self, event: &AuditEvent) -> Result<(), String> {
        let Some((producer, topic)) = &self.to else {
            return Ok(());
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
                tracing::info!(actor = %event.actor_uri, action = %event.action, subject = %event.subject, outcome = %event.outcome, "audited");
                Ok(())
            }
            Err((error, _)) => Err(error.to_string()),
        }
    }
}

/// The audit trail could not record a change, so it was not made.
#[derive(Debug, thiserror::Error)]
#[error(
    "the audit trail could not record {action} ({error}): nothing was changed; try again once Kafka answers"
)]
pub struct Unrecorded {
    action: String,
    error: String,
}

/// A change recorded as requested, to be settled as done or failed.
#[derive(Debug)]
#[must_use = "settle it: the record says `requested` until then"]
pub struct Pending {
    log: AuditLog,
    event: AuditEvent,
}

impl Pending {
    /// Records what became of the change: done, with the thing as it is `after` it, or
    /// failed, with the error; hands `result` back. A record that cannot be published
    /// leaves the trail saying `requested`, and is logged whole.
    pub async fn settle<T, E: std::fmt::Display>(
        self,
        result: Result<T, E>,
        after: impl FnOnce(&T) -> Option<serde_json::Value>,
    ) -> Result<T, E> {
        let mut event = self.event;
        match &result {
            Ok(value) => {
                event.outcome = fleetmon::audit::DONE.to_owned();
                event.after_json = after(value).map(|v| v.to_string()).unwrap_or_default();
            }
            Err(error) => {
                event.outcome = fleetmon::audit::FAILED.to_owned();
                event.error = error.to_string();
            }
        }
        if let Err(error) = self.log.publish(&event).await {
            tracing::error!(%error, ?event, "cannot publish what became of an audited change: the trail says `requested`; this log has the outcome");
        }
        result
    }
}
