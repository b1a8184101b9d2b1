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
}

/// Kafka settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers` for librdkafka.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// Consumer group; writers in one group split the partitions between them.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Topic of host samples.
    #[serde(default = "default_host_topic")]
    pub host_samples_topic: String,
    /// Topic of site checks.
    #[serde(default = "default_site_topic")]
    pub site_checks_topic: String,
    /// The compacted topic of central check definitions, mirrored into the `checks` table.
    #[serde(default = "default_checks_topic")]
    pub checks_topic: String,
    /// Where records that cannot be decoded or stored go, with an `error` header.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Replicas of the dead-letter topic when the writer creates it at start.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Any other librdkafka property, passed through verbatim (TLS, SASL, tuning).
    #[serde(default, deserialize_with = "fleetmon::config::string_map")]
    pub options: BTreeMap<String, String>,
}

/// PostgreSQL settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, e.g. `postgres://fleetmon@db.internal:5432/fleetmon?sslmode=require`.
    #[serde(default = "default_pg_url")]
    pub url: String,
    /// Schema that holds every fleetmon table (created if missing).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Connections in the pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// CA bundle (PEM) to verify the server with when the URL asks for TLS
    /// (`sslmode=require`); without it the platform's web PKI roots are not used,
    /// so set it for any TLS connection.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Days of raw samples kept; older daily partitions are dropped.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Daily partitions created ahead of today.
    #[serde(default = "default_partitions_ahead_days")]
    pub partitions_ahead_days: u32,
}

/// Batching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Rows per Postgres transaction at most.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// How long the first row of a batch may wait for more, in milliseconds.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
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
fn default_bootstrap() -> String {
    fleetmon::config::DEFAULT_KAFKA.to_owned()
}
fn default_group() -> String {
    "fleetmon-writer".to_owned()
}
fn default_host_topic() -> String {
    fleetmon::config::DEFAULT_HOST_SAMPLES_TOPIC.to_owned()
}
fn default_site_topic() -> String {
    fleetmon::config::DEFAULT_SITE_CHECKS_TOPIC.to_owned()
}
fn default_checks_topic() -> String {
    fleetmon::config::DEFAULT_CHECKS_TOPIC.to_owned()
}
fn default_dead_letter_topic() -> String {
    "fleetmon.dead-letters".to_owned()
}
fn default_replication() -> i32 {
    1
}
fn default_pg_url() -> String {
    "postgres://postgres@127.0.0.1:5432/fleetmon".to_owned()
}
fn default_schema() -> String {
    "fleetmon".to_owned()
}
fn default_pool_size() -> usize {
    4
}
fn default_retention_days() -> u32 {
    30
}
fn default_partitions_ahead_days() -> u32 {
    3
}
fn default_max_rows() -> usize {
    10_000
}
fn default_linger_ms() -> u64 {
    250
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: default_bootstrap(),
            group_id: default_group(),
            host_samples_topic: default_host_topic(),
            site_checks_topic: default_site_topic(),
            checks_topic: default_checks_topic(),
            dead_letter_topic: default_dead_letter_topic(),
            replication_factor: default_replication(),
            options: BTreeMap::new(),
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: default_pg_url(),
            schema: default_schema(),
            pool_size: default_pool_size(),
            ca: None,
            retention_days: default_retention_days(),
            partitions_ahead_days: default_partitions_ahead_days(),
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: default_max_rows(),
            linger_ms: default_linger_ms(),
        }
    }
}

impl BatchConfig {
    /// The linger as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
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
        }
    }

    /// Loads the file and environment overrides, then validates.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let config: WriterConfig = fleetmon::config::load(path, ENV_PREFIX, env)?;
        config.validate()
    }

    /// Checks ranges and consistency; each error names the field and the fix.
    pub fn validate(self) -> Result<Self, ConfigError> {
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
        if self.postgres.pool_size == 0 {
            return Err(ConfigError::field(
                "postgres.pool_size",
                "must be at least 1",
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

#[cfg(test)]
mod tests {
    use super::*;

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
