//! Creating the Kafka topics fleetmon produces to (feature `kafka`): the collector's
//! sample topics and the writer's dead-letter topic. Partitions and the replication
//! factor come from each binary's config.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};

/// A topic could not be created (or verified to exist).
#[derive(Debug, thiserror::Error)]
#[error("cannot create Kafka topic {topic} on {bootstrap}: {reason}")]
pub struct CreateTopicError {
    /// The topic.
    pub topic: String,
    /// The bootstrap servers.
    pub bootstrap: String,
    /// The broker's (or client's) answer.
    pub reason: String,
}

/// Topics to create when missing, all with the same shape.
#[derive(Debug, Clone, Copy)]
pub struct TopicSpec<'a> {
    /// Topic names.
    pub names: &'a [&'a str],
    /// Partitions of each.
    pub partitions: i32,
    /// Replicas of each partition.
    pub replication_factor: i32,
    /// The topics' `min.insync.replicas` (`None`: the broker's default).
    pub min_insync_replicas: Option<i32>,
    /// `cleanup.policy=compact`: Kafka keeps the last record of each key for ever
    /// (the check configuration), instead of deleting by age.
    pub compacted: bool,
}

/// Creates whichever of `spec.names` do not exist yet and returns the names created.
/// An existing topic is left as it is, whatever its shape. `options` are the binary's
/// librdkafka pass-through options (TLS, SASL).
pub async fn create_missing(
    bootstrap: &str,
    options: &BTreeMap<String, String>,
    spec: TopicSpec<'_>,
    timeout: Duration,
) -> Result<Vec<String>, CreateTopicError> {
    let error = |topic: &str, reason: String| CreateTopicError {
        topic: topic.to_owned(),
        bootstrap: bootstrap.to_owned(),
        reason,
    };
    let first = spec.names.first().copied().unwrap_or_default();
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap, options)
        .create()
        .map_err(|e| error(first, e.to_string()))?;
    let min_isr = spec.min_insync_replicas.map(|n| n.to_string());
    let topics: Vec<NewTopic<'_>> = spec
        .names
        .iter()
        .map(|name| {
            let topic = NewTopic::new(
                name,
                spec.partitions,
                TopicReplication::Fixed(spec.replication_factor),
            );
            let topic = match &min_isr {
                Some(n) => topic.set("min.insync.replicas", n),
                None => topic,
            };
            if spec.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let admin_options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = match admin.create_topics(&topics, &admin_options).await {
        Ok(results) => results,
        Err(e) => {
            let mut reason = e.to_string();
            if let Some(cause) = diagnose(bootstrap, options, Duration::from_secs(5)).await {
                reason = format!("{reason}; {cause}");
            }
            return Err(error(first, reason));
        }
    };
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => {
                tracing::info!(%topic, partitions = spec.partitions, replication_factor = spec.replication_factor, "created kafka topic");
                created.push(topic);
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(error(&topic, code.to_string())),
        }
    }
    Ok(created)
}

/// For health probes: which of `topics` the cluster does not know, asked through
/// `producer`'s connections (one metadata request per topic, each within `timeout`).
/// An error means no broker answered.
pub async fn missing_topics(
    producer: &FutureProducer,
    topics: Vec<String>,
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        let mut missing = Vec::new();
        for topic in topics {
            let metadata = producer.client().fetch_metadata(Some(&topic), timeout)?;
            if metadata.topics().iter().any(|t| t.error().is_some()) {
                missing.push(topic);
            }
        }
        Ok(missing)
    })
    .await
    // The probe thread ended without an answer.
    .unwrap_or(Err(KafkaError::Canceled))
}

/// A librdkafka client config for `bootstrap` with every one of `options` (TLS, SASL,
/// tuning): the start of every Kafka client the collector and the writer make, so no
/// client misses the security settings.
pub fn client_config(
    bootstrap: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    client_config_tuned(bootstrap, &[], options)
}

/// As [`client_config`], with what this client prefers set first (`tuning`): an
/// operator's option of the same name wins.
pub fn client_config_tuned(
    bootstrap: &str,
    tuning: &[(&str, &str)],
    options: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", bootstrap);
    for (key, value) in tuning {
        client.set(*key, *value);
    }
    for (key, value) in options {
        client.set(key, value);
    }
    client
}

/// Records what librdkafka reports while a probe connects.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl rdkafka::client::ClientContext for Recorder {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{error}: {reason}"));
    }
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, _fac: &str, log: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(log.to_owned());
    }
}

impl rdkafka::consumer::ConsumerContext for Recorder {}

/// Why no broker at `bootstrap` answers with these `options`, in words naming the
/// setting to change, when the cause is one of the usual TLS or SASL mistakes.
pub async fn diagnose(
    bootstrap: &str,
    options: &BTreeMap<String, String>,
    timeout: Duration,
) -> Option<String> {
    let probe: rdkafka::consumer::BaseConsumer<Recorder> = client_config(bootstrap, options)
        .create_with_context(Recorder::default())
        .ok()?;
    let tls = options
        .get("security.protocol")
        .is_some_and(|p| p.contains("SSL"));
    tokio::task::spawn_blocking(move || {
        let fetched = rdkafka::consumer::Consumer::client(&probe).fetch_metadata(None, timeout);
        // Errors and logs reach the context when the client is polled.
        for _ in 0..5 {
            let _ = probe.poll(Duration::from_millis(20));
        }
        let seen = rdkafka::consumer::Consumer::context(&probe).0.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        if fetched.is_ok() {
            return None;
        }
        let hint = if seen.contains("SASL authentication") || seen.contains("Authentication failed") {
            "the brokers refused the SASL credentials: check kafka.sasl.username and kafka.sasl.password"
        } else if seen.contains("certificate verify failed") {
            "the brokers' certificate is not signed by kafka.tls.ca: set kafka.tls.ca to the CA that issued it"
        } else if tls && (seen.contains("certificate required") || seen.contains("alert bad certificate")) {
            "the brokers ask for a client certificate they trust: set kafka.tls.cert and kafka.tls.key"
        } else if !tls && (seen.contains("ApiVersion") || seen.contains("closed by peer") || seen.contains("Disconnected")) {
            "the brokers do not speak plaintext on this address (a TLS listener?): set kafka.tls (and kafka.sasl for SASL_SSL)"
        } else {
            // Whatever librdkafka said about TLS or SASL, word for word.
            return seen
                .lines()
                .find(|line| line.contains("SSL") || line.contains("SASL"))
                .map(|line| format!("the brokers' connection failed: {line}"));
        };
        Some(hint.to_owned())
    })
    .await
    .ok()
    .flatten()
}
