//! The `DeadLetters` gRPC service: operators list and read what the writers could not
//! store, and send it back through the normal path once the cause is fixed.
//!
//! The dead-letter topic is the record: each call reads it with a consumer of its own
//! (no group, nothing committed) on a blocking thread. A replayed sample is produced to
//! the topic it came from and stored like any other, so at most once by its key.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tonic::{Request, Response, Status};
use tracing::instrument;

use fleetmon::pb::dead_letter::Sample as DecodedSample;
use fleetmon::pb::dead_letters_server::DeadLetters as DeadLettersApi;
use fleetmon::pb::{
    DeadLetter, DeadLetterRef, HOST_SAMPLE_CONTENT_TYPE, HostSample, ListDeadLettersRequest,
    ListDeadLettersResponse, ReplayDeadLettersRequest, ReplayDeadLettersResponse,
    SITE_CHECK_CONTENT_TYPE, SiteCheck,
};

use crate::api::error::ServiceError;
use crate::config::KafkaConfig;
use crate::consume::kafka_source::DeadLetters;

/// Dead letters `ListDeadLetters` returns when the request names no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most dead letters one call lists or replays.
pub const MAX_LIMIT: u32 = 1000;
/// How long a read of the topic waits for a broker.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// The service over the writer's Kafka settings and its dead-letter producer.
#[derive(Debug, Clone)]
pub struct DeadLetterService {
    config: Arc<KafkaConfig>,
    producer: Arc<DeadLetters>,
    /// Where replays are recorded (`audit_log`); none in tests without PostgreSQL.
    audit: Option<deadpool_postgres::Pool>,
}

/// A dead letter's place in the topic, as its id `PARTITION:OFFSET` names it.
fn parse_id(id: &str) -> Result<(i32, i64), ServiceError> {
    let parsed = id
        .split_once(':')
        .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
        .filter(|&(p, o): &(i32, i64)| p >= 0 && o >= 0);
    parsed.ok_or_else(|| {
        ServiceError::invalid(format!(
            "id `{id}` is not PARTITION:OFFSET (see `fleetmon dead-letters list`)"
        ))
    })
}

impl DeadLetterService {
    /// A service reading `config.dead_letter_topic` and replaying with `producer`.
    pub fn new(config: &KafkaConfig, producer: Arc<DeadLetters>) -> Self {
        DeadLetterService {
            config: Arc::new(config.clone()),
            producer,
            audit: None,
        }
    }

    /// Records every replay in `audit_log` through `pool`.
    pub fn audited_in(self, pool: deadpool_postgres::Pool) -> Self {
        DeadLetterService {
            audit: Some(pool),
            ..self
        }
    }

    fn consumer(config: &KafkaConfig) -> Result<BaseConsumer, KafkaError> {
        let mut client =
            fleetmon::kafka_topics::client_config(&config.bootstrap_servers, &config.options);
        client
            .set("group.id", "fleetmon-dead-letter-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        client.create()
    }

    /// Calls `each` with every record of the topic, partition by partition, oldest
    /// first; stops early when it returns false. Blocking.
    fn scan(
        config: &KafkaConfig,
        mut each: impl FnMut(OwnedMessage) -> bool,
    ) -> Result<(), KafkaError> {
        let topic = &config.dead_letter_topic;
        let consumer = Self::consumer(config)?;
        let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        for partition in partitions {
            let (low, high) = consumer.fetch_watermarks(topic, partition, KAFKA_TIMEOUT)?;
            if high <= low {
                continue;
            }
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            consumer.assign(&assignment)?;
            let mut next = low;
            while next < high {
                match consumer.poll(KAFKA_TIMEOUT) {
                    Some(Ok(message)) => {
                        next = message.offset() + 1;
                        if !each(message.detach()) {
                            return Ok(());
                        }
                    }
                    Some(Err(error)) => return Err(error),
                    None => return Err(KafkaError::NoMessageReceived),
                }
            }
        }
        Ok(())
    }

    /// The record at `id`. Blocking.
    fn fetch(config: &KafkaConfig, id: &str) -> Result<OwnedMessage, ServiceError> {
        let (partition, offset) = parse_id(id)?;
        let topic = &config.dead_letter_topic;
        let consumer = Self::consumer(config)?;
        let (low, high) = consumer.fetch_watermarks(topic, partition, KAFKA_TIMEOUT)?;
        if offset < low || offset >= high {
            return Err(ServiceError::not_found(format!(
                "no dead letter `{id}` (partition {partition} holds offsets {low} to {})",
                high - 1
            )));
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        consumer.assign(&assignment)?;
        match consumer.poll(KAFKA_TIMEOUT) {
            Some(Ok(message)) if message.offset() == offset => Ok(message.detach()),
            Some(Ok(_)) | None => Err(ServiceError::not_found(format!(
                "no dead letter `{id}` (compacted or deleted by retention)"
            ))),
            Some(Err(error)) => Err(error.into()),
        }
    }

    /// A record of the topic as the API shows it.
    fn dead_letter(&self, record: &OwnedMessage) -> DeadLetter {
        let mut letter = DeadLetter {
            id: format!("{}:{}", record.partition(), record.offset()),
            dead_at: record
                .timestamp()
                .to_millis()
                .map(|ms| (SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)).into()),
            value_bytes: record.payload().map_or(0, |p| p.len() as u64),
            ..Default::default()
        };
        if let Some(headers) = record.headers() {
            for header in headers.iter() {
                let value = header
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                letter.headers.insert(header.key.to_owned(), value);
            }
        }
        let header = |name: &str| letter.headers.get(name).cloned().unwrap_or_default();
        letter.reason = ["reason", "sqlstate"]
            .iter()
            .map(|name| header(name))
            .find(|r| !r.is_empty())
            .unwrap_or_else(|| "undecodable".to_owned());
        letter.error = header("error");
        letter.source_topic = header("source-topic");
        letter.source_partition = header("source-partition").parse().unwrap_or(-1);
        letter.agent_id = header("agent-id");
        letter.stream_id = header("stream-id");
        letter.seq = header("seq").parse().unwrap_or(0);
        letter.sample = self.decode(&letter.source_topic, record.payload());
        match &letter.sample {
            Some(DecodedSample::Host(s)) => {
                (letter.agent_id, letter.stream_id, letter.seq) =
                    (s.agent_id.clone(), s.stream_id.clone(), s.seq);
            }
            Some(DecodedSample::Site(s)) => {
                (letter.agent_id, letter.stream_id, letter.seq) =
                    (s.agent_id.clone(), s.stream_id.clone(), s.seq);
            }
            None => {}
        }
        letter
    }

    /// The sample a value of `topic` holds, where it decodes.
    fn decode(&self, topic: &str, payload: Option<&[u8]>) -> Option<DecodedSample> {
        let payload = payload?;
        if topic == self.config.host_samples_topic {
            HostSample::decode(payload).ok().map(DecodedSample::Host)
        } else if topic == self.config.site_checks_topic {
            SiteCheck::decode(payload).ok().map(DecodedSample::Site)
        } else {
            None
        }
    }

    /// Reads the topic on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&KafkaConfig) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || read(&config))
            .await
            .map_err(|e| {
                ServiceError::invalid(format!("reading the dead-letter topic failed: {e}"))
            })?
    }

    /// The dead letters matching `request`, oldest first.
    pub async fn list(
        &self,
        request: ListDeadLettersRequest,
    ) -> Result<ListDeadLettersResponse, ServiceError> {
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        } as usize;
        let since = request
            .since
            .map(SystemTime::try_from)
            .transpose()
            .map_err(|e| ServiceError::invalid(format!("since is not a time: {e}")))?;
        let this = self.clone();
        self.blocking(move |config| {
            let mut kept = VecDeque::with_capacity(limit);
            let mut truncated = false;
            Self::scan(config, |record| {
                let letter = this.dead_letter(&record);
                let recent = match (since, &letter.dead_at) {
                    (Some(since), Some(at)) => {
                        SystemTime::try_from(*at).is_ok_and(|at| at >= since)
                    }
                    _ => true,
                };
                if recent && letter.reason.starts_with(&request.reason) {
                    if kept.len() == limit {
                        kept.pop_front();
                        truncated = true;
                    }
                    kept.push_back(letter);
                }
                true
            })?;
            let mut dead_letters: Vec<DeadLetter> = kept.into();
            dead_letters.sort_by_key(|l| l.dead_at.map(|t| (t.seconds, t.nanos)));
            Ok(ListDeadLettersResponse {
                dead_letters,
                truncated,
            })
        })
        .await
    }

    /// One dead letter.
    pub async fn get(&self, id: String) -> Result<DeadLetter, ServiceError> {
        let this = self.clone();
        self.blocking(move |config| Ok(this.dead_letter(&Self::fetch(config, &id)?)))
            .await
    }

    /// Sends dead letters back to their topics: the ids named, or with `all` every one
    /// that decodes as a sample (at most [`MAX_LIMIT`] a call).
    pub async fn replay(
        &self,
        request: ReplayDeadLettersRequest,
    ) -> Result<ReplayDeadLettersResponse, ServiceError> {
        if !request.all && request.ids.is_empty() {
            return Err(ServiceError::invalid(
                "name the dead letters to replay (ids), or set all",
            ));
        }
        if request.ids.len() > MAX_LIMIT as usize {
            return Err(ServiceError::invalid(format!(
                "ids holds {} dead letters; at most {MAX_LIMIT} a call",
                request.ids.len()
            )));
        }
        let this = self.clone();
        let records: Vec<OwnedMessage> = self
            .blocking(move |config| {
                if !request.all {
                    return request
                        .ids
                        .iter()
                        .map(|id| Self::fetch(config, id))
                        .collect();
                }
                let mut records = Vec::new();
                Self::scan(config, |record| {
                    if this.dead_letter(&record).sample.is_some() {
                        records.push(record);
                    }
                    records.len() < MAX_LIMIT as usize
                })?;
                Ok(records)
            })
            .await?;
        let mut response = ReplayDeadLettersResponse::default();
        for record in &records {
            let letter = self.dead_letter(record);
            let content_type = match &letter.sample {
                Some(DecodedSample::Host(_)) => HOST_SAMPLE_CONTENT_TYPE,
                Some(DecodedSample::Site(_)) => SITE_CHECK_CONTENT_TYPE,
                None => {
                    response.skipped.push(format!(
                        "{}: not a sample of {} or {} (replaying it would dead-letter it again)",
                        letter.id, self.config.host_samples_topic, self.config.site_checks_topic
                    ));
                    continue;
                }
            };
            let (key, payload) = (
                record.key().unwrap_or_default(),
                record.payload().unwrap_or_default(),
            );
            self.producer
                .replay(&letter.source_topic, key, payload, content_type)
                .await?;
            tracing::info!(id = %letter.id, topic = %letter.source_topic, agent_id = %letter.agent_id, seq = letter.seq, "dead letter replayed");
            response.replayed += 1;
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl DeadLettersApi for DeadLetterService {
    #[instrument(skip_all)]
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }

    #[instrument(skip_all)]
    async fn get_dead_letter(
        &self,
        request: Request<DeadLetterRef>,
    ) -> Result<Response<DeadLetter>, Status> {
        Ok(Response::new(self.get(request.into_inner().id).await?))
    }

    #[instrument(skip_all)]
    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let author = fleetmon::audit::Author::of(&request)?;
        let request = request.into_inner();
        let subject = if request.all {
            "all".to_owned()
        } else {
            request.ids.join(", ")
        };
        let response = self.replay(request).await?;
        if let Some(pool) = &self.audit {
            let after = serde_json::json!({
                "replayed": response.replayed,
                "skipped": response.skipped,
            });
            let event = author.event("dead_letters.replay", &subject, None, Some(after));
            if let Err(error) = crate::api::audit::store(pool, &event).await {
                tracing::error!(%error, ?event, "cannot record a dead-letter replay in audit_log");
            }
        }
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_partition_and_offset() {
        assert_eq!(parse_id("0:42").unwrap(), (0, 42));
        assert_eq!(
            parse_id("42").unwrap_err().to_string(),
            "id `42` is not PARTITION:OFFSET (see `fleetmon dead-letters list`)"
        );
        assert!(parse_id("-1:3").is_err());
    }
}
