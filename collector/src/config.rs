//! Collector configuration: `collector.example.toml` documents every key.
//!
//! Loaded from TOML (`--config`), overridden by `FLEETMON_COLLECTOR__SECTION__KEY`
//! variables and a few flags, then validated into [`CollectorConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use fleetmon::config::ConfigError;
use fleetmon::telemetry::LogFormat;
use fleetmon::tls::ServerTlsFiles;
use serde::Deserialize;

/// Most distinct sites remembered per agent for `GetLatest`, unless configured
/// (`limits.max_latest_sites_per_agent`).
pub const MAX_LATEST_SITES_PER_AGENT: usize = 1_000;

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "FLEETMON_COLLECTOR";

/// The collector's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// gRPC listen address (Ingest for agents, Fleet for operators).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Log format: `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// At shutdown, how long open streams may wait for Kafka to acknowledge what they
    /// sent before they are closed (agents resend what was not acknowledged).
    #[serde(default = "default_shutdown_drain")]
    pub shutdown_drain_seconds: u64,
    /// Server certificate, key, client CA and optional CRL
    /// (default: `certs/collector.pem`, `certs/collector-key.pem`, `certs/ca.pem`).
    #[serde(default = "default_tls")]
    pub tls: ServerTlsFiles,
    /// Kafka connection and topics.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Limits on what a client may send.
    #[serde(default)]
    pub limits: Limits,
    /// Which labels select an agent into label-assigned checks.
    #[serde(default)]
    pub assignment: AssignmentConfig,
    /// Token enrollment of agents (off without this section).
    #[serde(default)]
    pub enrollment: Option<EnrollmentConfig>,
    /// The key secret check header values are sealed with (without it, a check with
    /// `secret_headers` is refused).
    #[serde(default)]
    pub check_secrets: Option<CheckSecretsConfig>,
    /// The heartbeat listener jobs ping (off without this section).
    #[serde(default)]
    pub heartbeat: Option<HeartbeatConfig>,
}

/// The heartbeat listener: HTTPS without client certificates, where jobs signal the
/// runs of heartbeat checks (`/ping/TOKEN`, `/start`, `/fail`, `/EXIT-CODE`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Where it listens.
    #[serde(default = "default_heartbeat_listen")]
    pub listen: SocketAddr,
    /// Bytes of a ping's body kept as its message (the rest is cut, said so).
    #[serde(default = "default_ping_body")]
    pub max_body_bytes: usize,
    /// Connections held at once (more wait to be accepted).
    #[serde(default = "default_enroll_connections")]
    pub max_connections: usize,
    /// Pings per minute from one source address (0: no limit).
    #[serde(default = "default_pings_per_address")]
    pub requests_per_minute_per_address: u32,
}

fn default_heartbeat_listen() -> SocketAddr {
    "0.0.0.0:7404".parse().expect("valid default")
}
fn default_ping_body() -> usize {
    10 * 1024
}
fn default_pings_per_address() -> u32 {
    600
}

/// The key every collector seals and opens secret check header values with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSecretsConfig {
    /// One base64 line of 32 random bytes, mode 0600 (`fleetmon certs new-secret-key`);
    /// the same file on every collector.
    pub key_file: std::path::PathBuf,
}

/// Which labels select an agent into label-assigned checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssignmentConfig {
    /// Whether the labels an agent reports about itself (`labels` in its config) select
    /// it into checks. Off: only the labels of the token it enrolled with do, so a
    /// compromised agent cannot label itself into checks meant for others (and receive
    /// their headers). On: reported labels are added to (and override) the token's,
    /// which is what agents with hand-issued certificates (no token) need to be
    /// selected by label at all.
    pub trust_agent_labels: bool,
}

/// Token enrollment: agents send a certificate request with a token to a listener of
/// its own (TLS without client certificates) and get a certificate signed by the
/// issuing CA, an intermediate under the fleet's root (`tls.client_ca`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// The enrollment listener (Enrollment service only).
    #[serde(default = "default_enroll_listen")]
    pub listen: SocketAddr,
    /// The issuing CA's certificate (PEM): signed by the root in `tls.client_ca`.
    pub issuing_ca: std::path::PathBuf,
    /// The issuing CA's private key (PEM). Every collector that enrolls holds a copy.
    pub issuing_ca_key: std::path::PathBuf,
    /// How long an agent certificate is valid; agents renew at two thirds of it.
    #[serde(default = "default_certificate_lifetime")]
    pub certificate_lifetime_seconds: u64,
    /// Connections the enrollment listener holds at once (more wait to be accepted).
    #[serde(default = "default_enroll_connections")]
    pub max_connections: usize,
    /// Enrollment requests per minute from one source address (0: no limit).
    #[serde(default = "default_per_address")]
    pub requests_per_minute_per_address: u32,
    /// Enrollment requests per minute naming one token (0: no limit).
    #[serde(default = "default_per_token")]
    pub requests_per_minute_per_token: u32,
}

fn default_enroll_connections() -> usize {
    256
}
fn default_per_address() -> u32 {
    30
}
fn default_per_token() -> u32 {
    120
}

fn default_enroll_listen() -> SocketAddr {
    "0.0.0.0:7403".parse().expect("valid default")
}
fn default_certificate_lifetime() -> u64 {
    30 * 24 * 3600
}

/// Kafka settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers` for librdkafka.
    pub bootstrap_servers: String,
    /// Topic for host samples.
    pub host_samples_topic: String,
    /// Topic for site checks.
    pub site_checks_topic: String,
    /// The compacted topic of check definitions (created with one partition).
    pub checks_topic: String,
    /// The compacted topic of enrollment tokens (hashes only) and agent credentials,
    /// revocations among them (created with one partition).
    pub credentials_topic: String,
    /// The topic of the audit trail: operators' changes (created with one partition).
    pub audit_topic: String,
    /// Partitions of topics the collector creates (existing topics are left alone).
    pub partitions: i32,
    /// Replication factor of topics the collector creates.
    pub replication_factor: i32,
    /// `min.insync.replicas` of topics the collector creates (default: the broker's):
    /// with `acks=all`, a sample is acknowledged only once this many replicas have it.
    pub min_insync_replicas: Option<i32>,
    /// How long one try to reach the broker lasts, in seconds; at start-up the
    /// collector tries again until one answers.
    pub connect_timeout_seconds: u64,
    /// Producer `linger.ms`: a little waiting buys much larger, compressed batches.
    pub linger_ms: u32,
    /// TLS to the brokers (`security.protocol=SSL`, or `SASL_SSL` with `sasl`).
    pub tls: Option<fleetmon::config::KafkaTls>,
    /// SASL (over TLS) to the brokers.
    pub sasl: Option<fleetmon::config::KafkaSasl>,
    /// Any other librdkafka property, passed through verbatim (tuning, or what `tls` and
    /// `sasl` do not cover).
    #[serde(deserialize_with = "fleetmon::config::string_map")]
    pub options: BTreeMap<String, String>,
}

/// Limits on what a client may send.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted gRPC message, in bytes.
    pub max_message_bytes: usize,
    /// Most samples accepted in one batch.
    pub max_samples_per_batch: usize,
    /// Longest accepted string field, in bytes (URLs, names, messages).
    pub max_string_bytes: usize,
    /// Most entries in a list field (disks, interfaces, cores).
    pub max_list_len: usize,
    /// How far ahead of the collector's clock a sample's time may be, in seconds: an
    /// agent whose clock is further off is told so in the refusal. (`max_future_seconds`
    /// is the older name.)
    #[serde(alias = "max_future_seconds")]
    pub max_clock_skew_seconds: u64,
    /// How old a sample may be, in seconds: nothing is acknowledged that the writer
    /// would delete at once. Keep it at most the writer's `postgres.retention_days`
    /// (default 30 days, as that).
    pub max_sample_age_seconds: u64,
    /// Samples of one stream received but not yet confirmed by Kafka before the
    /// collector stops reading that stream (backpressure).
    pub max_in_flight_per_stream: usize,
    /// An ingest stream that sends no batch for this many seconds is closed
    /// (DEADLINE_EXCEEDED), so idle streams do not hold memory forever.
    pub idle_stream_seconds: u64,
    /// The shortest `interval_seconds` a central check may ask for.
    pub min_check_interval_seconds: u32,
    /// Distinct `stream_id`s one ingest call or stream may carry (an agent uses one
    /// per process start); samples of more are refused (`too_many_streams`).
    pub max_streams_per_session: usize,
    /// Sites (central checks and URLs) the live view keeps per agent; results of more
    /// are left out of it (still stored) and counted.
    pub max_latest_sites_per_agent: usize,
    /// An agent with no connection and no sample for this long leaves the live view
    /// (`fleetmon status`, the dashboard); its rows stay in PostgreSQL.
    pub forget_agents_after_seconds: u64,
    /// Concurrent gRPC calls (HTTP/2 streams) one connection may hold open.
    pub max_concurrent_streams_per_connection: u32,
    /// A control stream whose agent reports nothing for this many seconds is closed
    /// (DEADLINE_EXCEEDED); agents report every 60 s.
    pub idle_control_seconds: u64,
}

impl Limits {
    /// [`Limits::idle_stream_seconds`] as a duration.
    pub fn idle_stream(&self) -> Duration {
        Duration::from_secs(self.idle_stream_seconds)
    }
}

fn default_listen() -> SocketAddr {
    "0.0.0.0:7400".parse().expect("valid default")
}
fn default_metrics_listen() -> SocketAddr {
    "127.0.0.1:9400".parse().expect("valid default")
}
fn default_tls() -> ServerTlsFiles {
    ServerTlsFiles::from_certs_dir(std::path::Path::new("certs"), "collector")
}
fn default_shutdown_drain() -> u64 {
    20
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: fleetmon::config::DEFAULT_KAFKA.to_owned(),
            host_samples_topic: fleetmon::config::DEFAULT_HOST_SAMPLES_TOPIC.to_owned(),
            site_checks_topic: fleetmon::config::DEFAULT_SITE_CHECKS_TOPIC.to_owned(),
            checks_topic: fleetmon::config::DEFAULT_CHECKS_TOPIC.to_owned(),
            audit_topic: fleetmon::config::DEFAULT_AUDIT_TOPIC.to_owned(),
            credentials_topic: fleetmon::config::DEFAULT_CREDENTIALS_TOPIC.to_owned(),
            partitions: 12,
            replication_factor: 1,
            min_insync_replicas: None,
            connect_timeout_seconds: 30,
            linger_ms: 20,
            options: BTreeMap::new(),
            tls: None,
            sasl: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            max_samples_per_batch: 10_000,
            max_string_bytes: 4096,
            max_list_len: 1024,
            max_clock_skew_seconds: 300,
            max_sample_age_seconds: 30 * 86_400,
            max_in_flight_per_stream: 20_000,
            idle_stream_seconds: 300,
            min_check_interval_seconds: 1,
            max_streams_per_session: 16,
            max_latest_sites_per_agent: MAX_LATEST_SITES_PER_AGENT,
            forget_agents_after_seconds: 7 * 86_400,
            max_concurrent_streams_per_connection: 64,
            idle_control_seconds: 300,
        }
    }
}

impl KafkaConfig {
    /// Start-up timeout for reaching the broker.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds)
    }
}

impl fleetmon::daemon::ServerConfig for CollectorConfig {
    const NAME: &'static str = "collector";
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn validate(self) -> Result<Self, ConfigError> {
        CollectorConfig::validate(self)
    }

    fn common_fields(&mut self) -> fleetmon::daemon::CommonFields<'_> {
        fleetmon::daemon::CommonFields {
            listen: &mut self.listen,
            metrics_listen: &mut self.metrics_listen,
            kafka_bootstrap_servers: &mut self.kafka.bootstrap_servers,
            log_format: &mut self.log_format,
        }
    }
}

impl CollectorConfig {
    /// A configuration with defaults for everything but the TLS files.
    pub fn new(tls: ServerTlsFiles) -> Self {
        CollectorConfig {
            listen: default_listen(),
            metrics_listen: default_metrics_listen(),
            log_format: LogFormat::default(),
            shutdown_drain_seconds: default_shutdown_drain(),
            tls,
            kafka: KafkaConfig::default(),
            limits: Limits::default(),
            assignment: AssignmentConfig::default(),
            enrollment: None,
            check_secrets: None,
            heartbeat: None,
        }
    }

    /// Checks ranges and consistency; each error names the field and the fix.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        fleetmon::config::add_kafka_security(
            self.kafka.tls.as_ref(),
            self.kafka.sasl.as_ref(),
            &mut self.kafka.options,
        )?;
        let kafka = &self.kafka;
        if kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::field(
                "kafka.bootstrap_servers",
                "is empty: set it to the broker list, e.g. \"127.0.0.1:9092\"",
            ));
        }
        for (field, topic) in [
            ("kafka.host_samples_topic", &kafka.host_samples_topic),
            ("kafka.site_checks_topic", &kafka.site_checks_topic),
            ("kafka.checks_topic", &kafka.checks_topic),
            ("kafka.audit_topic", &kafka.audit_topic),
            ("kafka.credentials_topic", &kafka.credentials_topic),
        ] {
            let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
                return Err(ConfigError::field(
                    field,
                    format!("`{topic}` is not a Kafka topic name: use 1-249 of [A-Za-z0-9._-]"),
                ));
            }
        }
        if kafka.host_samples_topic == kafka.site_checks_topic {
            return Err(ConfigError::field(
                "kafka.site_checks_topic",
                "must differ from kafka.host_samples_topic",
            ));
        }
        if kafka.checks_topic == kafka.host_samples_topic
            || kafka.checks_topic == kafka.site_checks_topic
        {
            return Err(ConfigError::field(
                "kafka.checks_topic",
                "must differ from both sample topics (it is compacted)",
            ));
        }
        if [
            &kafka.host_samples_topic,
            &kafka.site_checks_topic,
            &kafka.checks_topic,
        ]
        .contains(&&kafka.credentials_topic)
        {
            return Err(ConfigError::field(
                "kafka.credentials_topic",
                "must differ from the other topics (it is compacted)",
            ));
        }
        if kafka.partitions < 1 || kafka.replication_factor < 1 {
            return Err(ConfigError::field(
                "kafka.partitions",
                "and kafka.replication_factor must be at least 1",
            ));
        }
        if let Some(min_isr) = kafka.min_insync_replicas
            && !(1..=kafka.replication_factor).contains(&min_isr)
        {
            return Err(ConfigError::field(
                "kafka.min_insync_replicas",
                format!(
                    "is {min_isr}: use 1 to kafka.replication_factor ({}), or leave it out for the broker's default",
                    kafka.replication_factor
                ),
            ));
        }
        for key in ["enable.idempotence", "acks", "bootstrap.servers"] {
            if kafka.options.contains_key(key) {
                return Err(ConfigError::field(
                    &format!("kafka.options.\"{key}\""),
                    "is fixed by the collector (acks mean durable): remove it",
                ));
            }
        }
        if let Some(heartbeat) = &self.heartbeat {
            if heartbeat.max_body_bytes > 1024 * 1024 {
                return Err(ConfigError::field(
                    "heartbeat.max_body_bytes",
                    format!(
                        "is {}: keep at most 1048576 bytes of a ping's body",
                        heartbeat.max_body_bytes
                    ),
                ));
            }
            if heartbeat.max_connections == 0 {
                return Err(ConfigError::field(
                    "heartbeat.max_connections",
                    "must be at least 1",
                ));
            }
        }
        if let Some(enrollment) = &self.enrollment {
            if enrollment.certificate_lifetime_seconds < 10 {
                return Err(ConfigError::field(
                    "enrollment.certificate_lifetime_seconds",
                    "must be at least 10 (agents renew at two thirds of it)",
                ));
            }
            if enrollment.listen == self.listen {
                return Err(ConfigError::field(
                    "enrollment.listen",
                    "must differ from listen (that one requires client certificates)",
                ));
            }
        }
        let limits = &self.limits;
        if limits.max_message_bytes < 1024 {
            return Err(ConfigError::field(
                "limits.max_message_bytes",
                "must be at least 1024",
            ));
        }
        if limits.max_samples_per_batch == 0 || limits.max_in_flight_per_stream == 0 {
            return Err(ConfigError::field(
                "limits.max_samples_per_batch",
                "and limits.max_in_flight_per_stream must be at least 1",
            ));
        }
        if limits.idle_stream_seconds == 0 {
            return Err(ConfigError::field(
                "limits.idle_stream_seconds",
                "must be at least 1 (agents send a host sample every host_interval_seconds)",
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmon::daemon::ServerConfig as _;

    #[test]
    fn the_packaged_config_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/etc/collector.toml");
        let packaged = CollectorConfig::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(
            packaged.tls.client_ca,
            std::path::Path::new("/etc/fleetmon/tls/ca.pem")
        );
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("collector.example.toml");
        let example = CollectorConfig::load(Some(&path), Vec::new()).unwrap();
        let defaults = CollectorConfig::load(None, Vec::new()).unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn bad_values_name_the_field_and_the_fix() {
        let env = |k: &str, v: &str| vec![(format!("{ENV_PREFIX}__{k}"), v.to_owned())];
        let error = CollectorConfig::load(None, env("KAFKA__PARTITIONS", "0")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid config: `kafka.partitions` and kafka.replication_factor must be at least 1"
        );
        let error =
            CollectorConfig::load(None, env("KAFKA__HOST_SAMPLES_TOPIC", "bad topic")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid config: `kafka.host_samples_topic` `bad topic` is not a Kafka topic name: use 1-249 of [A-Za-z0-9._-]"
        );
        let error =
            CollectorConfig::load(None, env("HEARTBEAT__MAX_BODY_BYTES", "2000000")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid config: `heartbeat.max_body_bytes` is 2000000: keep at most 1048576 bytes of a ping's body"
        );
        let error = CollectorConfig::load(None, env("LIMITS__MAX_MESAGE_BYTES", "1")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown field `max_mesage_bytes`"),
            "{error}"
        );
    }
}
