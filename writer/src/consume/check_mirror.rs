//! Mirrors the compacted checks topic into the `checks` table, so stored rows can be
//! joined by `check_id` to what the check was. Read from the beginning at every start
//! (the topic holds one record per check) and followed; a newer version replaces a
//! row, a tombstone marks it deleted. Apart from the sample pipeline: a failure here
//! is logged and retried, and never holds back samples.

use std::future::Future;
use std::sync::Arc;

use fleetmon::pb::CheckDefinition;
use prost::Message as _;

use crate::consume::topic_mirror::{Record, Spec};
use crate::store::{PostgresSink, SinkError};

const UPSERT_CHECK: &str = include_str!("../../sql/upsert_check.sql");
const DELETE_CHECK: &str = include_str!("../../sql/delete_check.sql");

/// The mirror of the checks topic.
pub fn spec() -> Spec<impl Future<Output = Result<(), SinkError>>> {
    Spec {
        name: "checks-mirror",
        topic: |config| &config.checks_topic,
        apply,
    }
}

/// A definition upserts its row, a tombstone marks it deleted; a record that is not a
/// definition of its key is skipped with a warning.
async fn apply(sink: Arc<PostgresSink>, record: Record) -> Result<(), SinkError> {
    let definition = match record.payload.as_deref().map(CheckDefinition::decode) {
        None => None,
        Some(Ok(definition)) if definition.id == record.key => Some(definition),
        Some(_) => {
            tracing::warn!(check_id = %record.key, offset = record.offset, "record in the checks topic is not a definition of its key: not mirrored");
            return Ok(());
        }
    };
    store(&sink, &record.key, definition.as_ref()).await
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
            let grace = fleetmon::checks::heartbeat::of(definition).map_or(0, |beat| {
                i32::try_from(beat.grace_seconds).unwrap_or(i32::MAX)
            });
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
                        &grace,
                    ],
                )
                .await
        }
    };
    result?;
    Ok(())
}
