//! Writer configuration: `writer.example.toml` documents every key.
//!
//! Loaded from TOML (`--config`), overridden by `FLEETMON_WRITER__SECTION__KEY`
//! variables and a few flags, then validated.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fleetmon::config::ConfigError;
use fleetmon::telemetry::LogFormat;
use fleetmon::tls::ServerTlsFiles;
use serde::Deserialize;

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "FLEETMON_WRITER";

/// The writer's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// gRPC listen address of the History service.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Log format: `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Server certificate, key, client CA and optional CRL of the History service
    /// (default: `certs/writer.pem`, `certs/writer-key.pem`, `certs/ca.pem`).
    #[serde(default = "default_tls")]
    pub tls: ServerTlsFiles,
    /// Kafka consumer settings.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// PostgreSQL settings.
    #[serde(default)]
    pub postgres: PostgresConfig,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Alert rules and where notifications go.
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// Kafka settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers` for librdkafka.
    pub bootstrap_servers: String,
    /// Consumer group; writers in one group split the partitions between them.
    pub group_id: String,
    /// Topic of host samples.
    pub host_samples_topic: String,
    /// Topic of site checks.
    pub site_checks_topic: String,
    /// The compacted topic of central check definitions, mirrored into the `checks` table.
    pub checks_topic: String,
    /// The audit topic collectors publish operators' changes to (mirrored into
    /// `audit_log`).
    pub audit_topic: String,
    /// Where records that cannot be decoded or stored go, with an `error` header.
    pub dead_letter_topic: String,
    /// Replicas of the dead-letter topic when the writer creates it at start.
    pub replication_factor: i32,
    /// TLS to the brokers (`security.protocol=SSL`, or `SASL_SSL` with `sasl`).
    pub tls: Option<fleetmon::config::KafkaTls>,
    /// SASL (over TLS) to the brokers.
    pub sasl: Option<fleetmon::config::KafkaSasl>,
    /// Any other librdkafka property, passed through verbatim (tuning, or what `tls` and
    /// `sasl` do not cover).
    #[serde(deserialize_with = "fleetmon::config::string_map")]
    pub options: BTreeMap<String, String>,
}

/// PostgreSQL settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, e.g. `postgres://fleetmon@db.internal:5432/fleetmon?sslmode=require`.
    pub url: String,
    /// Schema that holds every fleetmon table (created if missing).
    pub schema: String,
    /// Connections that store batches (and run migrations and partition upkeep).
    pub pool_size: usize,
    /// Connections of the History and Alerts APIs, apart so that queries never take
    /// the connections batches need.
    pub query_pool_size: usize,
    /// Connections of background work: timed alert rules, the notifier, the checks
    /// mirror.
    pub background_pool_size: usize,
    /// Longest an API query may run (`statement_timeout`) before PostgreSQL cancels
    /// it and the caller gets DEADLINE_EXCEEDED-like UNAVAILABLE with the reason.
    pub query_timeout_seconds: u64,
    /// CA bundle (PEM) that signed the server's certificate: required by
    /// `sslmode=verify-ca` and `verify-full`; with `require` it turns on chain checks.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that ask for one (`clientcert=` in
    /// pg_hba.conf); with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key: Option<PathBuf>,
    /// Days of raw samples kept; older daily partitions are dropped.
    pub retention_days: u32,
    /// Daily partitions created ahead of today.
    pub partitions_ahead_days: u32,
}

/// Batching.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Rows per Postgres transaction at most.
    pub max_rows: usize,
    /// How long the first row of a batch may wait for more, in milliseconds.
    pub linger_ms: u64,
}

/// Alerts: host rules, reminders and notification channels. Check rules (thresholds,
/// quorum) are part of each check's definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Evaluate alert rules at all (every writer of a group must agree: each one
    /// decides for the partitions it holds).
    pub enabled: bool,
    /// Seconds between two evaluations of the rules decided by time (agent silent,
    /// host resources, certificates) and of reminders.
    pub evaluate_interval_seconds: u64,
    /// Minutes between reminders while an alert stays open; 0: no reminders.
    pub reminder_interval_minutes: u64,
    /// How long the notifier waits for more notifications before sending, in
    /// milliseconds, so a burst becomes one grouped delivery.
    pub group_wait_ms: u64,
    /// Thresholds of the host rules.
    pub rules: HostRules,
    /// Where notifications are sent.
    pub webhooks: Vec<WebhookConfig>,
}

/// The rules about hosts and certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostRules {
    /// An agent is silent after this many of its sampling intervals without data.
    pub agent_silent_intervals: u32,
    /// Disk use (all disks) above this percentage alerts.
    pub disk_percent: f64,
    /// Memory use above this percentage alerts.
    pub memory_percent: f64,
    /// CPU use above this percentage ...
    pub cpu_percent: f64,
    /// ... in every sample for this many minutes alerts.
    pub cpu_minutes: u32,
    /// A checked site's certificate expiring within this many days alerts.
    pub tls_days: u32,
    /// An agent whose clock is off from its collector's by more than this many seconds
    /// alerts (0: never). Keep it below the collector's `limits.max_clock_skew_seconds`
    /// (300), beyond which its samples are refused and it goes silent instead.
    pub clock_skew_seconds: u32,
}

/// One webhook channel. Its `Debug` hides the URL's path and the header values.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The channel's name, unique, as stored with its notifications.
    pub name: String,
    /// `http://` or `https://` address the notifications are POSTed to.
    pub url: String,
    /// `json` (fleetmon's own payload) or `slack` (an incoming-webhook `text`).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Also tell when an alert resolves.
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Extra request headers (e.g. an `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|name| (name.as_str(), fleetmon::redact::HIDDEN))
            .collect();
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &fleetmon::redact::url(&self.url))
            .field("format", &self.format)
            .field("send_resolved", &self.send_resolved)
            .field("headers", &headers)
            .finish()
    }
}

/// The body of a webhook request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"idempotency_key", "notifications": [...]}`.
    #[default]
    Json,
    /// `{"text": ...}` for Slack-compatible incoming webhooks.
    Slack,
}

fn default_true() -> bool {
    true
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            evaluate_interval_seconds: 5,
            reminder_interval_minutes: 60,
            group_wait_ms: 100,
            rules: HostRules::default(),
            webhooks: Vec::new(),
        }
    }
}

impl Default for HostRules {
    fn default() -> Self {
        HostRules {
            agent_silent_intervals: 3,
            disk_percent: 90.0,
            memory_percent: 90.0,
            cpu_percent: 95.0,
            cpu_minutes: 5,
            tls_days: 14,
            clock_skew_seconds: 60,
        }
    }
}

impl AlertsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.evaluate_interval_seconds == 0 {
            return Err(ConfigError::field(
                "alerts.evaluate_interval_seconds",
                "must be at least 1",
            ));
        }
        if self.rules.agent_silent_intervals == 0 {
            return Err(ConfigError::field(
                "alerts.rules.agent_silent_intervals",
                "must be at least 1",
            ));
        }
        for (field, value) in [
            ("disk_percent", self.rules.disk_percent),
            ("memory_percent", self.rules.memory_percent),
            ("cpu_percent", self.rules.cpu_percent),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(ConfigError::field(
                    &format!("alerts.rules.{field}"),
                    format!("{value} is not a percentage: use 0 to 100"),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, webhook) in self.webhooks.iter().enumerate() {
            let field = |name: &str| format!("alerts.webhooks[{i}].{name}");
            if webhook.name.trim().is_empty() {
                return Err(ConfigError::field(
                    &field("name"),
                    "is empty: name the channel",
                ));
            }
            if !names.insert(webhook.name.as_str()) {
                return Err(ConfigError::field(
                    &field("name"),
                    format!(
                        "`{}` is used by another webhook: names must be unique",
                        webhook.name
                    ),
                ));
            }
            if !(webhook.url.starts_with("http://") || webhook.url.starts_with("https://")) {
                return Err(ConfigError::field(
                    &field("url"),
                    format!(
                        "`{}` is not an http:// or https:// address",
                        fleetmon::redact::url(&webhook.url)
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn default_listen() -> SocketAddr {
    "0.0.0.0:7401".parse().expect("valid default")
}
fn default_metrics_listen() -> SocketAddr {
    "127.0.0.1:9401".parse().expect("valid default")
}
fn default_tls() -> ServerTlsFiles {
    ServerTlsFiles::from_certs_dir(std::path::Path::new("certs"), "writer")
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: fleetmon::config::DEFAULT_KAFKA.to_owned(),
            group_id: "fleetmon-writer".to_owned(),
            host_samples_topic: fleetmon::config::DEFAULT_HOST_SAMPLES_TOPIC.to_owned(),
            site_checks_topic: fleetmon::config::DEFAULT_SITE_CHECKS_TOPIC.to_owned(),
            checks_topic: fleetmon::config::DEFAULT_CHECKS_TOPIC.to_owned(),
            audit_topic: fleetmon::config::DEFAULT_AUDIT_TOPIC.to_owned(),
            dead_letter_topic: "fleetmon.dead-letters".to_owned(),
            replication_factor: 1,
            options: BTreeMap::new(),
            tls: None,
            sasl: None,
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://postgres@127.0.0.1:5432/fleetmon".to_owned(),
            schema: "fleetmon".to_owned(),
            pool_size: 4,
            query_pool_size: 4,
            background_pool_size: 2,
            query_timeout_seconds: 10,
            ca: None,
            cert: None,
            key: None,
            retention_days: 30,
            partitions_ahead_days: 3,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: 10_000,
            linger_ms: 250,
        }
    }
}

impl BatchConfig {
    /// The linger as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }
}

impl fleetmon::daemon::ServerConfig for WriterConfig {
    const NAME: &'static str = "writer";
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn validate(self) -> Result<Self, ConfigError> {
        WriterConfig::validate(self)
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

impl WriterConfig {
    /// A configuration with defaults for everything.
    pub fn new(tls: ServerTlsFiles) -> Self {
        WriterConfig {
            listen: default_listen(),
            metrics_listen: default_metrics_listen(),
            log_format: LogFormat::default(),
            tls,
            kafka: KafkaConfig::default(),
            postgres: PostgresConfig::default(),
            batch: BatchConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }

    /// Checks ranges and consistency; each error names the field and the fix.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        fleetmon::config::add_kafka_security(
            self.kafka.tls.as_ref(),
            self.kafka.sasl.as_ref(),
            &mut self.kafka.options,
        )?;
        let schema = &self.postgres.schema;
        let legal = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if schema.is_empty()
            || schema.len() > 63
            || !schema.chars().all(legal)
            || schema.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(ConfigError::field(
                "postgres.schema",
                format!(
                    "`{schema}` is not a plain identifier: use 1-63 of [a-z0-9_], not starting with a digit"
                ),
            ));
        }
        let (mode, _) = SslMode::of_url(&self.postgres.url);
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && self.postgres.ca.is_none() {
            return Err(ConfigError::field(
                "postgres.ca",
                format!(
                    "is required by sslmode={} in postgres.url: set it to the CA bundle that signed the server's certificate",
                    mode.as_str()
                ),
            ));
        }
        if self.postgres.cert.is_some() != self.postgres.key.is_some() {
            return Err(ConfigError::field(
                if self.postgres.cert.is_some() {
                    "postgres.key"
                } else {
                    "postgres.cert"
                },
                "is missing: a client certificate needs both postgres.cert and postgres.key",
            ));
        }
        for (field, size) in [
            ("postgres.pool_size", self.postgres.pool_size),
            ("postgres.query_pool_size", self.postgres.query_pool_size),
            (
                "postgres.background_pool_size",
                self.postgres.background_pool_size,
            ),
        ] {
            if size == 0 {
                return Err(ConfigError::field(field, "must be at least 1"));
            }
        }
        if self.postgres.query_timeout_seconds == 0 {
            return Err(ConfigError::field(
                "postgres.query_timeout_seconds",
                "must be at least 1: a query without a limit can hold a connection for good",
            ));
        }
        if self.postgres.retention_days == 0 {
            return Err(ConfigError::field(
                "postgres.retention_days",
                "must be at least 1",
            ));
        }
        if self.batch.max_rows == 0 {
            return Err(ConfigError::field("batch.max_rows", "must be at least 1"));
        }
        if self.kafka.replication_factor < 1 {
            return Err(ConfigError::field(
                "kafka.replication_factor",
                "must be at least 1 (the number of brokers that keep each dead letter)",
            ));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(ConfigError::field(
                "kafka.group_id",
                "is empty: set a consumer group name",
            ));
        }
        self.alerts.validate()?;
        for key in ["enable.auto.offset.store", "group.id", "bootstrap.servers"] {
            if self.kafka.options.contains_key(key) {
                return Err(ConfigError::field(
                    &format!("kafka.options.\"{key}\""),
                    "is fixed by the writer (offsets are stored only after the rows commit): remove it",
                ));
            }
        }
        Ok(self)
    }
}

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext (`disable`, `prefer`, or no `sslmode`).
    Disable,
    /// Encrypted; verified only when a CA is set.
    Require,
    /// Encrypted; the chain verified, not the host name.
    VerifyCa,
    /// Encrypted; the chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    /// The mode `url` names, and the URL tokio-postgres can parse (`verify-*` as `require`).
    pub fn of_url(url: &str) -> (SslMode, String) {
        for (text, mode) in [
            ("sslmode=verify-full", SslMode::VerifyFull),
            ("sslmode=verify-ca", SslMode::VerifyCa),
        ] {
            if url.contains(text) {
                return (mode, url.replace(text, "sslmode=require"));
            }
        }
        let mode = if url.contains("sslmode=require") {
            SslMode::Require
        } else {
            SslMode::Disable
        };
        (mode, url.to_owned())
    }

    /// As written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmon::daemon::ServerConfig as _;

    #[test]
    fn the_packaged_config_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/etc/writer.toml");
        let packaged = WriterConfig::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(
            packaged.tls.client_ca,
            std::path::Path::new("/etc/fleetmon/tls/ca.pem")
        );
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("writer.example.toml");
        let example = WriterConfig::load(Some(&path), Vec::new()).unwrap();
        let defaults = WriterConfig::load(None, Vec::new()).unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn bad_values_name_the_field_and_the_fix() {
        let env = |k: &str, v: &str| vec![(format!("{ENV_PREFIX}__{k}"), v.to_owned())];
        let error = WriterConfig::load(None, env("POSTGRES__SCHEMA", "Fleet-Mon")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid config: `postgres.schema` `Fleet-Mon` is not a plain identifier: use 1-63 of [a-z0-9_], not starting with a digit"
        );
        let error = WriterConfig::load(
            None,
            env("KAFKA__OPTIONS__enable.auto.offset.store", "true"),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid config: `kafka.options.\"enable.auto.offset.store\"` is fixed by the writer \
             (offsets are stored only after the rows commit): remove it"
        );
    }
}
