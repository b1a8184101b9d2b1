//! Mirrors the audit topic (the events collectors publish) into `audit_log`.

use std::future::Future;
use std::sync::Arc;

use fleetmon::pb::AuditEvent;
use prost::Message as _;

use crate::consume::topic_mirror::{Record, Spec};
use crate::store::{PostgresSink, SinkError};

/// The mirror of the audit topic.
pub fn spec() -> Spec<impl Future<Output = Result<(), SinkError>>> {
    Spec {
        name: "audit-mirror",
        topic: |config| &config.audit_topic,
        apply,
    }
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
