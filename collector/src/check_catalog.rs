//! The check configuration: the compacted Kafka topic `fleetmon.checks` (key = check
//! id, value = `CheckDefinition`, a tombstone deletes) read whole at start and followed,
//! so every collector holds the same definitions and they outlive collector restarts.
//!
//! Changes are compare-and-set through the log. The topic has one partition, so every
//! collector applies the records in the same order, by one rule: a definition is
//! accepted when its version is one above the current one (1 for a new id), repeated
//! when equal to it, and ignored otherwise. A writer learns whether its record won by
//! following the topic past it. Because compaction keeps only a key's last record, a
//! writer whose record lost writes the winner again, so the survivor is the winner.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fleetmon::pb::{CHECK_DEFINITION_CONTENT_TYPE, CheckDefinition};
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::assignment::AssignmentIndex;
use crate::config::KafkaConfig;
use fleetmon::kafka_topics::{CreateTopicError, TopicSpec, create_missing, missing_topics};

/// How long a change may take to be written and read back.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Header naming the collector (and the write) a record came from.
const WRITE_HEADER: &str = "fleetmon-write";

/// Why a change was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No check has the id.
    #[error("check `{0}` does not exist")]
    NotFound(String),
    /// Create with an id in use.
    #[error("check `{id}` already exists (version {version}): choose another id, or update it")]
    AlreadyExists {
        /// The id.
        id: String,
        /// Its current version.
        version: u64,
    },
    /// The caller's version is not the current one.
    #[error(
        "check `{id}` is at version {current}, not {expected}: get it again, then retry the change"
    )]
    Stale {
        /// The id.
        id: String,
        /// The version now.
        current: u64,
        /// The version the caller saw.
        expected: u64,
    },
    /// Kafka did not take or return the change in time.
    #[error("cannot store the change in Kafka topic {topic}: {reason}")]
    Kafka {
        /// The checks topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// The topic could not be created.
    #[error(transparent)]
    CreateTopic(#[from] CreateTopicError),
}

/// The definitions as of some point of the topic.
#[derive(Debug, Default)]
pub struct CatalogView {
    /// Every check by id; shared, so that publishing a new view after each record
    /// copies pointers, not definitions.
    pub checks: BTreeMap<String, Arc<CheckDefinition>>,
    /// The next offset to read: records before it are applied.
    pub next_offset: i64,
    /// Built by the first reader that needs it.
    index: OnceLock<AssignmentIndex>,
}

impl CatalogView {
    /// The active checks indexed by what selects agents.
    pub fn index(&self) -> &AssignmentIndex {
        self.index
            .get_or_init(|| AssignmentIndex::new(&self.checks))
    }

    /// A view of the same definitions with no index yet (for the next change).
    fn successor(&self) -> CatalogView {
        CatalogView {
            checks: self.checks.clone(),
            next_offset: self.next_offset,
            index: OnceLock::new(),
        }
    }
}

/// What happened to one of this collector's writes.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    accepted: bool,
}

/// The catalog: a live view plus the means to change it. Cheap to clone.
#[derive(Clone)]
pub struct CheckCatalog {
    producer: FutureProducer,
    topic: String,
    /// To create the topic again should the cluster lose it.
    config: KafkaConfig,
    /// Identifies this collector's writes in the record header.
    instance: String,
    view: watch::Receiver<Arc<CatalogView>>,
    /// Outcomes of this collector's writes, by write id, until collected.
    outcomes: Arc<Mutex<HashMap<String, Outcome>>>,
}

impl std::fmt::Debug for CheckCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckCatalog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

fn kafka_error(topic: &str, reason: impl std::fmt::Display) -> CatalogError {
    CatalogError::Kafka {
        topic: topic.to_owned(),
        reason: reason.to_string(),
    }
}

impl CheckCatalog {
    /// Creates the topic if missing, reads it to its end, and keeps following it until
    /// `shutdown`.
    pub async fn open(
        config: &KafkaConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, CatalogError> {
        let topic = config.checks_topic.clone();
        create_topic(config).await?;
        let mut client =
            fleetmon::kafka_topics::client_config(&config.bootstrap_servers, &config.options);
        let producer: FutureProducer = client
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()
            .map_err(|e| kafka_error(&topic, e))?;
        let consumer: StreamConsumer = client
            .set(
                "group.id",
                format!("fleetmon-collector-checks-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            // A topic created again starts at offset 0 again: read it from there.
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(|e| kafka_error(&topic, e))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(|e| kafka_error(&topic, e))?;
        consumer
            .assign(&assignment)
            .map_err(|e| kafka_error(&topic, e))?;
        let end = {
            let consumer_topic = topic.clone();
            let timeout = config.connect_timeout();
            let probe: StreamConsumer =
                fleetmon::kafka_topics::client_config(&config.bootstrap_servers, &config.options)
                    .create()
                    .map_err(|e| kafka_error(&topic, e))?;
            // A topic just created may take a moment to be known to every broker.
            tokio::task::spawn_blocking(move || {
                let deadline = std::time::Instant::now() + timeout;
                loop {
                    match probe.fetch_watermarks(&consumer_topic, 0, timeout) {
                        Err(_) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        result => return result,
                    }
                }
            })
            .await
            .expect("watermark probe does not panic")
            .map_err(|e| kafka_error(&topic, e))?
            .1
        };
        let (view_tx, view_rx) = watch::channel(Arc::new(CatalogView::default()));
        let catalog = CheckCatalog {
            producer,
            topic: topic.clone(),
            config: config.clone(),
            instance: uuid::Uuid::new_v4().to_string(),
            view: view_rx,
            outcomes: Arc::default(),
        };
        let follower = Follower {
            consumer,
            instance: catalog.instance.clone(),
            outcomes: catalog.outcomes.clone(),
            view: view_tx,
        };
        tokio::spawn(follower.run(shutdown));
        let mut caught_up = catalog.view.clone();
        tokio::time::timeout(
            config.connect_timeout(),
            caught_up.wait_for(|view| view.next_offset >= end),
        )
        .await
        .map_err(|_| {
            kafka_error(
                &topic,
                format!("not read to its end (offset {end}) in time"),
            )
        })?
        .map_err(|_| kafka_error(&topic, "the reader stopped"))?;
        tracing::info!(%topic, checks = catalog.view.borrow().checks.len(), "check catalog loaded");
        Ok(catalog)
    }

    /// The definitions now.
    pub fn view(&self) -> Arc<CatalogView> {
        self.view.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn watch(&self) -> watch::Receiver<Arc<CatalogView>> {
        self.view.clone()
    }

    /// One check now.
    pub fn get(&self, id: &str) -> Option<CheckDefinition> {
        self.view.borrow().checks.get(id).map(|c| (**c).clone())
    }

    /// Writes `value` (a definition, or `None` to delete) for `id` and waits until the
    /// catalog has read it back; `true` when it was accepted.
    async fn write(&self, id: &str, value: Option<&CheckDefinition>) -> Result<bool, CatalogError> {
        let write_id = format!("{}/{}", self.instance, uuid::Uuid::new_v4());
        let payload = value.map(|definition| definition.encode_to_vec());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "content-type",
                value: Some(CHECK_DEFINITION_CONTENT_TYPE),
            })
            .insert(Header {
                key: WRITE_HEADER,
                value: Some(&write_id),
            });
        let mut record = FutureRecord::to(&self.topic).key(id).headers(headers);
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        let offset = self
            .producer
            .send(record, WRITE_TIMEOUT)
            .await
            .map_err(|(error, _)| kafka_error(&self.topic, error))?
            .offset;
        let mut view = self.view.clone();
        tokio::time::timeout(WRITE_TIMEOUT, view.wait_for(|v| v.next_offset > offset))
            .await
            .map_err(|_| kafka_error(&self.topic, "the change was not read back in time"))?
            .map_err(|_| kafka_error(&self.topic, "the reader stopped"))?;
        let outcome = self
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&write_id);
        let accepted = outcome.is_some_and(|o| o.accepted);
        if !accepted {
            self.repair(id).await;
        }
        Ok(accepted)
    }

    /// After a lost race, writes the winning value again so that compaction keeps it.
    async fn repair(&self, id: &str) {
        let current = self.get(id);
        let payload = current.as_ref().map(|d| d.encode_to_vec());
        let mut record = FutureRecord::to(&self.topic).key(id);
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        if let Err((error, _)) = self.producer.send(record, WRITE_TIMEOUT).await {
            tracing::warn!(check_id = id, %error, "cannot write the winning definition again");
        }
    }

    /// For the health service: a checks topic the cluster lost (a broker replaced by an
    /// empty one) is created again and every definition this collector holds is written
    /// to it, so the configuration outlives the loss.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        let missing = missing_topics(&self.producer, vec![self.topic.clone()], timeout)
            .await
            .map_err(|e| format!("Kafka does not answer: {e}"))?;
        if missing.is_empty() {
            return Ok(());
        }
        let view = self.view();
        tracing::warn!(topic = %self.topic, checks = view.checks.len(), "checks topic missing: creating it again with the definitions held here");
        create_topic(&self.config)
            .await
            .map_err(|e| e.to_string())?;
        for (id, definition) in &view.checks {
            let payload = definition.encode_to_vec();
            let record = FutureRecord::to(&self.topic).key(id).payload(&payload);
            self.producer
                .send(record, WRITE_TIMEOUT)
                .await
                .map_err(|(error, _)| format!("cannot write check `{id}` again: {error}"))?;
        }
        Ok(())
    }

    /// Adds a new check at version 1.
    pub async fn create(
        &self,
        mut definition: CheckDefinition,
    ) -> Result<CheckDefinition, CatalogError> {
        if let Some(existing) = self.get(&definition.id) {
            return Err(CatalogError::AlreadyExists {
                id: definition.id,
                version: existing.version,
            });
        }
        definition.version = 1;
        if self.write(&definition.id, Some(&definition)).await? {
            return Ok(definition);
        }
        Err(CatalogError::AlreadyExists {
            version: self.get(&definition.id).map_or(0, |d| d.version),
            id: definition.id,
        })
    }

    /// Replaces a check whose current version is `expected`.
    pub async fn update(
        &self,
        mut definition: CheckDefinition,
        expected: u64,
    ) -> Result<CheckDefinition, CatalogError> {
        let current = self
            .get(&definition.id)
            .ok_or_else(|| CatalogError::NotFound(definition.id.clone()))?;
        let stale = |current: u64, id: String| CatalogError::Stale {
            id,
            current,
            expected,
        };
        if current.version != expected {
            return Err(stale(current.version, definition.id));
        }
        definition.version = expected + 1;
        if self.write(&definition.id, Some(&definition)).await? {
            return Ok(definition);
        }
        match self.get(&definition.id) {
            Some(now) => Err(stale(now.version, definition.id)),
            None => Err(CatalogError::NotFound(definition.id)),
        }
    }

    /// Pauses or resumes a check, whatever its version (retried if a change races).
    pub async fn set_paused(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<CheckDefinition, CatalogError> {
        for _ in 0..5 {
            let current = self
                .get(id)
                .ok_or_else(|| CatalogError::NotFound(id.to_owned()))?;
            if current.paused == paused {
                return Ok(current);
            }
            let version = current.version;
            let changed = CheckDefinition { paused, ..current };
            match self.update(changed, version).await {
                Err(CatalogError::Stale { .. }) => continue,
                other => return other,
            }
        }
        Err(kafka_error(
            &self.topic,
            "changed by others five times in a row: try again",
        ))
    }

    /// Deletes a check (at version `expected`, unless 0).
    pub async fn delete(&self, id: &str, expected: u64) -> Result<(), CatalogError> {
        let current = self
            .get(id)
            .ok_or_else(|| CatalogError::NotFound(id.to_owned()))?;
        if expected != 0 && current.version != expected {
            return Err(CatalogError::Stale {
                id: id.to_owned(),
                current: current.version,
                expected,
            });
        }
        self.write(id, None).await?;
        Ok(())
    }
}

/// Creates the checks topic (compacted, one partition) unless it exists.
async fn create_topic(config: &KafkaConfig) -> Result<(), CreateTopicError> {
    create_missing(
        &config.bootstrap_servers,
        &config.options,
        TopicSpec {
            names: &[&config.checks_topic],
            partitions: 1,
            replication_factor: config.replication_factor,
            min_insync_replicas: config.min_insync_replicas,
            compacted: true,
        },
        config.connect_timeout(),
    )
    .await?;
    Ok(())
}

/// Reads the topic in order and applies each record by the version rule.
struct Follower {
    consumer: StreamConsumer,
    instance: String,
    outcomes: Arc<Mutex<HashMap<String, Outcome>>>,
    view: watch::Sender<Arc<CatalogView>>,
}

impl Follower {
    async fn run(self, shutdown: CancellationToken) {
        let mut view = CatalogView::default();
        loop {
            let message = tokio::select! {
                message = self.consumer.recv() => message,
                () = shutdown.cancelled() => return,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "reading the checks topic failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let id = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let accepted = match message.payload() {
                None => {
                    view.checks.remove(&id);
                    true
                }
                Some(bytes) => match CheckDefinition::decode(bytes) {
                    Ok(definition) if definition.id == id => apply(&mut view.checks, definition),
                    Ok(_) | Err(_) => {
                        tracing::warn!(check_id = %id, offset = message.offset(), "record in the checks topic is not a definition of its key: ignored");
                        false
                    }
                },
            };
            if let Some(write_id) = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == WRITE_HEADER)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            }) && write_id.starts_with(&self.instance)
            {
                self.outcomes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(write_id, Outcome { accepted });
            }
            view.next_offset = message.offset() + 1;
            self.view.send_replace(Arc::new(view.successor()));
        }
    }
}

/// The version rule: one above the current version replaces it, equal to it repeats
/// it (a rewrite after a lost race), anything else is refused. The first record of an
/// id is taken whatever its version: a topic written again after its loss starts with
/// the versions the definitions had.
fn apply(checks: &mut BTreeMap<String, Arc<CheckDefinition>>, definition: CheckDefinition) -> bool {
    let current = checks.get(&definition.id);
    if definition.version >= 1 && current.is_none()
        || definition.version == current.map_or(0, |c| c.version) + 1
    {
        checks.insert(definition.id.clone(), Arc::new(definition));
        true
    } else {
        current.is_some_and(|c| **c == definition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(id: &str, version: u64, interval: u32) -> CheckDefinition {
        CheckDefinition {
            id: id.into(),
            version,
            interval_seconds: interval,
            ..Default::default()
        }
    }

    #[test]
    fn a_topic_written_again_keeps_the_versions() {
        let mut checks = BTreeMap::new();
        assert!(apply(&mut checks, def("a", 7, 5)));
        assert!(apply(&mut checks, def("a", 8, 5)));
        assert!(!apply(&mut checks, def("a", 8, 6)));
    }

    #[test]
    fn only_the_next_version_replaces_a_check() {
        let mut checks = BTreeMap::new();
        assert!(!apply(&mut checks, def("a", 0, 5)), "versions start at 1");
        assert!(apply(&mut checks, def("a", 1, 5)));
        assert!(!apply(&mut checks, def("a", 3, 5)), "no version skipped");
        // Two writers both saw version 1: the first in the log wins.
        assert!(apply(&mut checks, def("a", 2, 10)));
        assert!(!apply(&mut checks, def("a", 2, 20)), "the second one lost");
        assert_eq!(checks["a"].interval_seconds, 10);
        // The loser writes the winner again: accepted as a repeat, nothing changes.
        assert!(apply(&mut checks, def("a", 2, 10)));
        assert_eq!(checks["a"].version, 2);
    }
}
