//! A compacted, single-partition Kafka topic used as a replicated map of versioned
//! records (key = the record's key, value = the record, a tombstone deletes), read whole
//! at start and followed, so every collector holds the same records and they outlive
//! collector restarts. The check configuration ([`crate::check_catalog`]) and the
//! enrollment credentials ([`crate::credentials`]) are two such maps.
//!
//! Changes are compare-and-set through the log. The topic has one partition, so every
//! collector applies the records in the same order, by one rule: a record is accepted
//! when its version is one above the current one (1 for a new key), repeated when
//! equal to it, and ignored otherwise. A writer learns whether its record won by
//! following the topic past it. Because compaction keeps only a key's last record, a
//! writer whose record lost writes the winner again, so the survivor is the winner.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::config::KafkaConfig;
use fleetmon::grpc::{GrpcError, NotServing};
use fleetmon::kafka_topics::{CreateTopicError, TopicSpec, create_missing, missing_topics};

/// A record of a [`CompactedLog`]: a protobuf message with a key and a version.
pub trait LogRecord: prost::Message + Default + Clone + PartialEq + Send + Sync + 'static {
    /// The `content-type` header of its records.
    const CONTENT_TYPE: &'static str;
    /// What one record is, in messages: "check", "credential".
    const KIND: &'static str;
    /// What readers derive from all records, built once per view when first needed.
    type Index: Send + Sync + 'static;
    /// Its key in the topic.
    fn key(&self) -> &str;
    /// Its version (1 for a new key).
    fn version(&self) -> u64;
    /// Sets its version.
    fn set_version(&mut self, version: u64);
    /// Builds the index of a view.
    fn index(records: &BTreeMap<String, Arc<Self>>) -> Self::Index;
}

/// How long a change may take to be written and read back.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Header naming the collector (and the write) a record came from.
const WRITE_HEADER: &str = "fleetmon-write";

/// Why a change was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No record has the key.
    #[error("{kind} `{id}` does not exist")]
    NotFound {
        /// What the log holds.
        kind: &'static str,
        /// The key.
        id: String,
    },
    /// Create with a key in use.
    #[error("{kind} `{id}` already exists (version {version}): choose another id, or update it")]
    AlreadyExists {
        /// What the log holds.
        kind: &'static str,
        /// The key.
        id: String,
        /// Its current version.
        version: u64,
    },
    /// The caller's version is not the current one.
    #[error(
        "{kind} `{id}` is at version {current}, not {expected}: get it again, then retry the change"
    )]
    Stale {
        /// What the log holds.
        kind: &'static str,
        /// The key.
        id: String,
        /// The version now.
        current: u64,
        /// The version the caller saw.
        expected: u64,
    },
    /// Kafka did not take or return the change in time.
    #[error("cannot store the change in Kafka topic {topic}: {reason}")]
    Kafka {
        /// The topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// The topic could not be created.
    #[error(transparent)]
    CreateTopic(#[from] CreateTopicError),
}

impl GrpcError for LogError {
    fn code(&self) -> Code {
        match self {
            LogError::NotFound { .. } => Code::NotFound,
            LogError::AlreadyExists { .. } => Code::AlreadyExists,
            LogError::Stale { .. } => Code::FailedPrecondition,
            LogError::Kafka { .. } | LogError::CreateTopic(_) => Code::Unavailable,
        }
    }
}

/// The records as of some point of the topic.
pub struct LogView<R: LogRecord> {
    /// Every record by key; shared, so that publishing a new view after each record
    /// copies pointers, not records.
    pub records: BTreeMap<String, Arc<R>>,
    /// The next offset to read: records before it are applied.
    pub next_offset: i64,
    /// How many views the follower published up to this one (0: the empty view it
    /// starts from). Records already fetched are applied together, so a burst of
    /// records makes few views.
    pub generation: u64,
    /// Built by the first reader that needs it.
    index: OnceLock<R::Index>,
}

impl<R: LogRecord> Default for LogView<R> {
    fn default() -> Self {
        LogView {
            records: BTreeMap::new(),
            next_offset: 0,
            generation: 0,
            index: OnceLock::new(),
        }
    }
}

impl<R: LogRecord> std::fmt::Debug for LogView<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogView")
            .field("records", &self.records.len())
            .field("next_offset", &self.next_offset)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl<R: LogRecord> LogView<R> {
    /// What readers derive from the records ([`LogRecord::index`]).
    pub fn index(&self) -> &R::Index {
        self.index.get_or_init(|| R::index(&self.records))
    }

    /// A view of the same records with no index yet (for the next change).
    fn successor(&self) -> Self {
        LogView {
            records: self.records.clone(),
            next_offset: self.next_offset,
            generation: self.generation,
            index: OnceLock::new(),
        }
    }
}

/// What happened to one of this collector's writes.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    accepted: bool,
}

/// The map: a live view plus the means to change it. Cheap to clone.
pub struct CompactedLog<R: LogRecord> {
    producer: FutureProducer,
    topic: String,
    /// To create the topic again should the cluster lose it.
    config: KafkaConfig,
    /// Identifies this collector's writes in the record header.
    instance: String,
    view: watch::Receiver<Arc<LogView<R>>>,
    /// Outcomes of this collector's writes, by write id, until collected.
    outcomes: Arc<Mutex<HashMap<String, Outcome>>>,
}

impl<R: LogRecord> Clone for CompactedLog<R> {
    fn clone(&self) -> Self {
        CompactedLog {
            producer: self.producer.clone(),
            topic: self.topic.clone(),
            config: self.config.clone(),
            instance: self.instance.clone(),
            view: self.view.clone(),
            outcomes: self.outcomes.clone(),
        }
    }
}

impl<R: LogRecord> std::fmt::Debug for CompactedLog<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactedLog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

fn kafka_error(topic: &str, reason: impl std::fmt::Display) -> LogError {
    LogError::Kafka {
        topic: topic.to_owned(),
        reason: reason.to_string(),
    }
}

impl<R: LogRecord> CompactedLog<R> {
    /// Creates `topic` if missing, reads it to its end, and keeps following it until
    /// `shutdown`.
    pub async fn open(
        config: &KafkaConfig,
        topic: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, LogError> {
        let topic = topic.to_owned();
        create_topic(config, &topic).await?;
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
                format!("fleetmon-collector-{}-{}", R::KIND, uuid::Uuid::new_v4()),
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
            .map_err(|e| kafka_error(&topic, e))?
            .map_err(|e| kafka_error(&topic, e))?
            .1
        };
        let (view_tx, view_rx) = watch::channel(Arc::new(LogView::default()));
        let catalog = CompactedLog {
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
        tracing::info!(%topic, records = catalog.view.borrow().records.len(), kind = R::KIND, "compacted log loaded");
        Ok(catalog)
    }

    /// The records now.
    pub fn view(&self) -> Arc<LogView<R>> {
        self.view.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn watch(&self) -> watch::Receiver<Arc<LogView<R>>> {
        self.view.clone()
    }

    /// One record now.
    pub fn get(&self, id: &str) -> Option<R> {
        self.view.borrow().records.get(id).map(|c| (**c).clone())
    }

    /// Writes `value` (a record, or `None` to delete) for `id` and waits until the
    /// log has read it back; `true` when it was accepted.
    async fn write(&self, id: &str, value: Option<&R>) -> Result<bool, LogError> {
        let write_id = format!("{}/{}", self.instance, uuid::Uuid::new_v4());
        let payload = value.map(|record| record.encode_to_vec());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "content-type",
                value: Some(R::CONTENT_TYPE),
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
            tracing::warn!(key = id, kind = R::KIND, %error, "cannot write the winning record again");
        }
    }

    /// For the health service: a topic the cluster lost (a broker replaced by an empty
    /// one) is created again and every record this collector holds is written to it,
    /// so the configuration outlives the loss.
    pub async fn check(&self, timeout: Duration) -> Result<(), NotServing> {
        let missing = missing_topics(&self.producer, vec![self.topic.clone()], timeout)
            .await
            .map_err(|e| format!("Kafka does not answer: {e}"))?;
        if missing.is_empty() {
            return Ok(());
        }
        let view = self.view();
        tracing::warn!(topic = %self.topic, records = view.records.len(), kind = R::KIND, "topic missing: creating it again with the records held here");
        create_topic(&self.config, &self.topic)
            .await
            .map_err(|e| e.to_string())?;
        for (id, record) in &view.records {
            let payload = record.encode_to_vec();
            let record = FutureRecord::to(&self.topic).key(id).payload(&payload);
            self.producer
                .send(record, WRITE_TIMEOUT)
                .await
                .map_err(|(error, _)| format!("cannot write {} `{id}` again: {error}", R::KIND))?;
        }
        Ok(())
    }

    /// Adds a new record at version 1.
    pub async fn create(&self, mut record: R) -> Result<R, LogError> {
        let key = record.key().to_owned();
        let exists = |version| LogError::AlreadyExists {
            kind: R::KIND,
            id: key.clone(),
            version,
        };
        if let Some(existing) = self.get(&key) {
            return Err(exists(existing.version()));
        }
        record.set_version(1);
        if self.write(&key, Some(&record)).await? {
            return Ok(record);
        }
        Err(exists(self.get(&key).map_or(0, |r| r.version())))
    }

    /// Replaces a record whose current version is `expected`.
    pub async fn update(&self, mut record: R, expected: u64) -> Result<R, LogError> {
        let key = record.key().to_owned();
        let not_found = || LogError::NotFound {
            kind: R::KIND,
            id: key.clone(),
        };
        let stale = |current: u64| LogError::Stale {
            kind: R::KIND,
            id: key.clone(),
            current,
            expected,
        };
        let current = self.get(&key).ok_or_else(not_found)?;
        if current.version() != expected {
            return Err(stale(current.version()));
        }
        record.set_version(expected + 1);
        if self.write(&key, Some(&record)).await? {
            return Ok(record);
        }
        match self.get(&key) {
            Some(now) => Err(stale(now.version())),
            None => Err(not_found()),
        }
    }

    /// Changes a record with `change`, whatever its version (retried if a change
    /// races); `change` returns `None` when the record is already as wanted.
    pub async fn modify(&self, id: &str, change: impl Fn(&R) -> Option<R>) -> Result<R, LogError> {
        for _ in 0..5 {
            let current = self.get(id).ok_or_else(|| LogError::NotFound {
                kind: R::KIND,
                id: id.to_owned(),
            })?;
            let Some(changed) = change(&current) else {
                return Ok(current);
            };
            match self.update(changed, current.version()).await {
                Err(LogError::Stale { .. }) => continue,
                other => return other,
            }
        }
        Err(kafka_error(
            &self.topic,
            "changed by others five times in a row: try again",
        ))
    }

    /// Deletes a record (at version `expected`, unless 0).
    pub async fn delete(&self, id: &str, expected: u64) -> Result<(), LogError> {
        let current = self.get(id).ok_or_else(|| LogError::NotFound {
            kind: R::KIND,
            id: id.to_owned(),
        })?;
        if expected != 0 && current.version() != expected {
            return Err(LogError::Stale {
                kind: R::KIND,
                id: id.to_owned(),
                current: current.version(),
                expected,
            });
        }
        self.write(id, None).await?;
        Ok(())
    }
}

/// Creates `topic` (compacted, one partition) unless it exists.
async fn create_topic(config: &KafkaConfig, topic: &str) -> Result<(), CreateTopicError> {
    create_missing(
        &config.bootstrap_servers,
        &config.options,
        TopicSpec {
            names: &[topic],
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
struct Follower<R: LogRecord> {
    consumer: StreamConsumer,
    instance: String,
    outcomes: Arc<Mutex<HashMap<String, Outcome>>>,
    view: watch::Sender<Arc<LogView<R>>>,
}

/// Most records applied together before the view is published again.
const MOST_RECORDS_PER_VIEW: usize = 4096;

impl<R: LogRecord> Follower<R> {
    /// Applies records as they come and publishes the view after each run of records
    /// already fetched (at most [`MOST_RECORDS_PER_VIEW`]), not after each record: a
    /// new view copies the map of keys, so 10 000 agents connecting for the first time
    /// (a record each) copied it 10 000 times, work growing with the square of the
    /// fleet.
    async fn run(self, shutdown: CancellationToken) {
        let mut view = LogView::<R>::default();
        loop {
            let message = tokio::select! {
                message = self.consumer.recv() => message,
                () = shutdown.cancelled() => return,
            };
            match message {
                Ok(message) => self.take(&mut view, &message),
                Err(error) => {
                    Self::read_failed(&error);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            // `recv` only polls librdkafka's queue: a future dropped unready loses nothing.
            for _ in 1..MOST_RECORDS_PER_VIEW {
                match futures::FutureExt::now_or_never(self.consumer.recv()) {
                    Some(Ok(message)) => self.take(&mut view, &message),
                    Some(Err(error)) => {
                        Self::read_failed(&error);
                        break;
                    }
                    None => break,
                }
            }
            view.generation += 1;
            self.view.send_replace(Arc::new(view.successor()));
        }
    }

    fn read_failed(error: &rdkafka::error::KafkaError) {
        tracing::warn!(%error, kind = R::KIND, "reading a compacted topic failed; retrying");
    }

    /// Applies one record to `view` and notes the outcome of this collector's writes.
    fn take(&self, view: &mut LogView<R>, message: &rdkafka::message::BorrowedMessage<'_>) {
        let id = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let accepted = match message.payload() {
            None => {
                view.records.remove(&id);
                true
            }
            Some(bytes) => match R::decode(bytes) {
                Ok(record) if record.key() == id => apply(&mut view.records, record),
                Ok(_) | Err(_) => {
                    tracing::warn!(key = %id, kind = R::KIND, offset = message.offset(), "record is not one of its key: ignored");
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
    }
}

/// The version rule: one above the current version replaces it, equal to it repeats
/// it (a rewrite after a lost race), anything else is refused. The first record of a
/// key is taken whatever its version: a topic written again after its loss starts with
/// the versions the records had.
fn apply<R: LogRecord>(records: &mut BTreeMap<String, Arc<R>>, record: R) -> bool {
    let current = records.get(record.key());
    if record.version() >= 1 && current.is_none()
        || record.version() == current.map_or(0, |c| c.version()) + 1
    {
        records.insert(record.key().to_owned(), Arc::new(record));
        true
    } else {
        current.is_some_and(|c| **c == record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmon::pb::CheckDefinition;

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
