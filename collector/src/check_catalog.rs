//! The check configuration: the compacted Kafka topic `fleetmon.checks` (key = check
//! id, value = `CheckDefinition`, a tombstone deletes), a [`CompactedLog`] every
//! collector reads whole and follows, changed compare-and-set by version.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetmon::pb::{CHECK_DEFINITION_CONTENT_TYPE, CheckDefinition};
use tokio_util::sync::CancellationToken;

use crate::assignment::AssignmentIndex;
use crate::compacted_log::{CompactedLog, LogError, LogRecord, LogView};
use crate::config::KafkaConfig;

/// Why a change to a check was refused or could not be made.
pub type CatalogError = LogError;

/// The definitions as of some point of the topic.
pub type CatalogView = LogView<CheckDefinition>;

/// The catalog: a live view of every definition plus the means to change it.
pub type CheckCatalog = CompactedLog<CheckDefinition>;

impl LogRecord for CheckDefinition {
    const CONTENT_TYPE: &'static str = CHECK_DEFINITION_CONTENT_TYPE;
    const KIND: &'static str = "check";
    /// The active checks indexed by what selects agents.
    type Index = AssignmentIndex;

    fn key(&self) -> &str {
        &self.id
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn index(records: &BTreeMap<String, Arc<Self>>) -> AssignmentIndex {
        AssignmentIndex::new(records)
    }
}

impl CompactedLog<CheckDefinition> {
    /// Opens the checks topic of `config` (created if missing) and follows it until
    /// `shutdown`.
    pub async fn open_checks(
        config: &KafkaConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, CatalogError> {
        Self::open(config, &config.checks_topic, shutdown).await
    }

    /// Pauses or resumes a check, whatever its version (retried if a change races).
    pub async fn set_paused(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<CheckDefinition, CatalogError> {
        self.modify(id, |current| {
            (current.paused != paused).then(|| CheckDefinition {
                paused,
                ..current.clone()
            })
        })
        .await
    }
}
