//! Mirrors agents' labels from the credentials topic (collectors publish each enrolled
//! agent's credential there, with the labels of the token it enrolled with) into
//! `agent_labels`, so maintenance windows and channels can select alerts by the labels
//! of the agent they are about. Only `agent/NAME` records are read; tokens and serials
//! are not the writer's business, and no secret is in them (hashes only).

use std::future::Future;
use std::sync::Arc;

use fleetmon::pb::{CredentialRecord, credential_record};
use prost::Message as _;

use crate::consume::topic_mirror::{Record, Spec};
use crate::store::{PostgresSink, SinkError};

const UPSERT_AGENT_LABELS: &str = include_str!("../../sql/upsert_agent_labels.sql");
const DELETE_AGENT_LABELS: &str = include_str!("../../sql/delete_agent_labels.sql");

/// The mirror of the credentials topic.
pub fn spec() -> Spec<impl Future<Output = Result<(), SinkError>>> {
    Spec {
        name: "labels-mirror",
        topic: |config| &config.credentials_topic,
        apply,
    }
}

/// An agent's credential sets its labels, a tombstone removes them; other records are
/// skipped (a malformed one with a warning).
async fn apply(sink: Arc<PostgresSink>, record: Record) -> Result<(), SinkError> {
    let Some(agent) = record.key.strip_prefix("agent/") else {
        return Ok(());
    };
    let client = sink.background().get().await?;
    let labels = match record.payload.as_deref().map(CredentialRecord::decode) {
        None => None,
        Some(Ok(CredentialRecord {
            record: Some(credential_record::Record::Agent(credential)),
            ..
        })) if credential.name == agent => Some(serde_json::json!(credential.labels)),
        Some(_) => {
            tracing::warn!(key = %record.key, offset = record.offset, "record in the credentials topic is not an agent credential of its key: labels not mirrored");
            return Ok(());
        }
    };
    match labels {
        Some(labels) => {
            client
                .execute(UPSERT_AGENT_LABELS, &[&agent, &labels])
                .await?
        }
        None => client.execute(DELETE_AGENT_LABELS, &[&agent]).await?,
    };
    Ok(())
}
