//! Agent configuration: `agent.example.toml` documents every key.
//!
//! Loaded from TOML (`--config`), overridden by `FLEETMON_AGENT__SECTION__KEY`
//! variables and a few flags, then validated into typed settings. Sites can also come
//! from a plain `--sites-file` (`URL INTERVAL_SECONDS [REGEX]` per line).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetmon::config::ConfigError;
use fleetmon::telemetry::LogFormat;
use fleetmon::tls::ClientTlsFiles;
use serde::Deserialize;

use fleetmon::checks::pattern::Patterns;
use fleetmon::checks::{ProbeDefaults, Site, SiteConfig};

mod sites_file;

pub use sites_file::{SitesFileError, parse_sites_file};

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "FLEETMON_AGENT";

/// The agent's whole configuration as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Where and how to reach the collector.
    pub collector: CollectorConfig,
    /// Seconds between host samples.
    pub host_interval_seconds: u64,
    /// Reported host name (default: the system's).
    pub hostname: Option<String>,
    /// With each host sample, this many of the busiest processes by CPU and as many by
    /// resident memory (each process once); 0 reports none.
    pub processes: usize,
    /// Prometheus `/metrics` listen address.
    pub metrics_listen: SocketAddr,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Outbox and sending.
    pub outbox: OutboxConfig,
    /// Limits and defaults of the site prober.
    pub probes: ProbeDefaults,
    /// Websites to check, from this file (reported as local, beside central checks).
    pub sites: Vec<SiteConfig>,
    /// This agent's labels, e.g. `{ location = "eu-west", role = "edge" }`: sent to the
    /// collector, shown by `fleetmon agents`, matched by central checks' label selectors.
    pub labels: BTreeMap<String, String>,
    /// Central checks (the collector's `Checks` service).
    pub remote_checks: RemoteChecksConfig,
    /// Token enrollment at start, when `collector.cert` does not exist yet.
    pub enroll: Option<crate::enroll::EnrollConfig>,
}

/// Checks configured centrally and sent by the collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteChecksConfig {
    /// Run the checks the collector assigns to this agent; `false` refuses remote
    /// configuration (only `sites` run, and the collector is told so).
    pub enabled: bool,
    /// Where the last applied set is kept, so an agent restarted while no collector
    /// answers goes on checking (default: `central-checks.pb` in `outbox.spool_dir`
    /// when that is set; otherwise none, and a restarted agent waits for a collector).
    pub cache_file: Option<PathBuf>,
    /// Client certificates central gRPC checks may present, by name: `NAME.pem` (the
    /// certificate, with any intermediates) and `NAME-key.pem` here. None: a check that
    /// asks for one fails saying so. Central configuration names a certificate; only
    /// this host decides which exist, and their keys stay here.
    pub client_certificates_dir: Option<PathBuf>,
}

impl Default for RemoteChecksConfig {
    fn default() -> Self {
        RemoteChecksConfig {
            enabled: true,
            cache_file: None,
            client_certificates_dir: None,
        }
    }
}

/// The collector endpoint and this agent's TLS identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// `https://host:port` of the collector.
    pub endpoint: String,
    /// Several collectors instead of `endpoint`: the agent streams to one and, when it
    /// cannot reach it, fails over to the next (with backoff once all failed in a row).
    pub endpoints: Vec<String>,
    /// CA bundle the collector's certificate must chain to.
    pub ca: PathBuf,
    /// This agent's client certificate (`spiffe://fleetmon/agent/NAME`).
    pub cert: PathBuf,
    /// This agent's private key.
    pub key: PathBuf,
    /// Name to verify the collector's certificate against (default: the endpoint host).
    pub server_name: Option<String>,
}

impl CollectorConfig {
    /// The collectors to stream to, in order of preference.
    pub fn urls(&self) -> Vec<&str> {
        if self.endpoints.is_empty() {
            vec![self.endpoint.as_str()]
        } else {
            self.endpoints.iter().map(String::as_str).collect()
        }
    }

    /// The TLS files as the shared TLS code wants them.
    pub fn tls(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: self.server_name.clone(),
        }
    }
}

/// Outbox and sender settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Samples held in memory before the oldest are dropped.
    pub capacity: usize,
    /// Encoded bytes held (in memory, and in the spool) before the oldest are dropped.
    pub max_bytes: u64,
    /// Directory where unacknowledged samples survive a restart (off when unset).
    pub spool_dir: Option<PathBuf>,
    /// Longest time spooled samples may wait for an fsync, in milliseconds (0: after
    /// every write): what a power cut can lose; a crash of the agent loses nothing.
    pub spool_sync_ms: u64,
    /// Samples per batch at most.
    pub batch_size: usize,
    /// Longest a sample waits for the acks of earlier batches before it is sent, in
    /// milliseconds (with none awaited it goes at once).
    pub batch_interval_ms: u64,
    /// Longest pause between reconnect attempts, in seconds.
    pub max_backoff_seconds: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            collector: CollectorConfig::default(),
            host_interval_seconds: 10,
            hostname: None,
            processes: 10,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9402)),
            log_format: LogFormat::default(),
            outbox: OutboxConfig::default(),
            probes: ProbeDefaults::default(),
            sites: Vec::new(),
            labels: BTreeMap::new(),
            remote_checks: RemoteChecksConfig::default(),
            enroll: None,
        }
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            endpoint: "https://127.0.0.1:7400".to_owned(),
            endpoints: Vec::new(),
            ca: PathBuf::from("certs/ca.pem"),
            cert: PathBuf::from("certs/agent.pem"),
            key: PathBuf::from("certs/agent-key.pem"),
            server_name: None,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            capacity: 100_000,
            max_bytes: 256 * 1024 * 1024,
            spool_dir: None,
            spool_sync_ms: 1000,
            batch_size: 500,
            batch_interval_ms: 1000,
            max_backoff_seconds: 30,
        }
    }
}

/// An [`AgentConfig`] that passed [`AgentConfig::validate`], with its sites parsed and
/// their patterns compiled: what the agent runs with.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The settings.
    pub config: AgentConfig,
    /// `config.sites`, parsed and defaulted; identical patterns compiled once.
    pub sites: Vec<Site>,
}

impl AgentConfig {
    /// Reads the file and the environment overrides, without validating: flags may
    /// still change values before [`AgentConfig::validate`].
    pub fn parse(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        fleetmon::config::load(path, ENV_PREFIX, env)
    }

    /// [`AgentConfig::parse`], then [`AgentConfig::validate`].
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ValidConfig, ConfigError> {
        Self::parse(path, env)?.validate()
    }

    /// Checks ranges and parses the sites; each error names the field and the fix.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        if self.host_interval_seconds == 0 {
            return Err(ConfigError::field(
                "host_interval_seconds",
                "must be at least 1",
            ));
        }
        if self.processes > crate::processes::MAX_TOP {
            return Err(ConfigError::field(
                "processes",
                format!(
                    "is {}, at most {} (0 reports none)",
                    self.processes,
                    crate::processes::MAX_TOP
                ),
            ));
        }
        if !self.collector.endpoints.is_empty()
            && self.collector.endpoint != CollectorConfig::default().endpoint
        {
            return Err(ConfigError::field(
                "collector.endpoints",
                "and collector.endpoint are both set: list every collector in collector.endpoints and drop endpoint",
            ));
        }
        let field = if self.collector.endpoints.is_empty() {
            "collector.endpoint"
        } else {
            "collector.endpoints"
        };
        if let Some(url) = self
            .collector
            .urls()
            .into_iter()
            .find(|url| !url.starts_with("https://"))
        {
            return Err(ConfigError::field(
                field,
                format!("`{url}` must be an https:// URL (the collector only speaks mutual TLS)"),
            ));
        }
        if self.outbox.max_bytes < 64 * 1024 {
            return Err(ConfigError::field(
                "outbox.max_bytes",
                format!(
                    "is {}: hold at least 65536 bytes (one site check can be several KiB)",
                    self.outbox.max_bytes
                ),
            ));
        }
        if self.outbox.capacity == 0 || self.outbox.batch_size == 0 {
            return Err(ConfigError::field(
                "outbox.capacity",
                "and outbox.batch_size must be at least 1",
            ));
        }
        if self.probes.max_concurrent == 0 {
            return Err(ConfigError::field(
                "probes.max_concurrent",
                "must be at least 1",
            ));
        }
        let sites = self.sites()?;
        Ok(ValidConfig {
            config: self,
            sites,
        })
    }

    /// The sites, parsed and defaulted; identical patterns are compiled once and shared.
    fn sites(&self) -> Result<Vec<Site>, ConfigError> {
        let mut patterns = Patterns::default();
        self.sites
            .iter()
            .enumerate()
            .map(|(i, site)| {
                Site::from_config_sharing(&format!("sites[{i}]"), site, &self.probes, &mut patterns)
            })
            .collect()
    }

    /// Where the applied central checks are kept: `remote_checks.cache_file`, else
    /// `central-checks.pb` in the spool directory, else nowhere.
    pub fn checks_cache(&self) -> Option<PathBuf> {
        self.remote_checks.cache_file.clone().or_else(|| {
            self.outbox
                .spool_dir
                .as_ref()
                .map(|dir| dir.join("central-checks.pb"))
        })
    }

    /// Time between host samples.
    pub fn host_interval(&self) -> Duration {
        Duration::from_secs(self.host_interval_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.example.toml");
        let valid = AgentConfig::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(valid.sites.len(), valid.config.sites.len());
        assert!(!valid.sites.is_empty());
        assert_eq!(valid.config.host_interval_seconds, 10);
    }

    #[test]
    fn more_processes_than_a_list_may_hold_are_refused_by_name() {
        let error = AgentConfig::load(
            None,
            [("FLEETMON_AGENT__PROCESSES".to_owned(), "101".to_owned())],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid config: `processes` is 101, at most 100 (0 reports none)"
        );
        let none = AgentConfig::load(
            None,
            [("FLEETMON_AGENT__PROCESSES".to_owned(), "0".to_owned())],
        )
        .unwrap();
        assert_eq!(none.config.processes, 0);
    }

    #[test]
    fn the_checks_cache_defaults_to_the_spool_directory() {
        let mut config = AgentConfig::load(None, Vec::new()).unwrap().config;
        assert_eq!(config.checks_cache(), None);
        config.outbox.spool_dir = Some(PathBuf::from("/var/lib/fleetmon-agent"));
        assert_eq!(
            config.checks_cache(),
            Some(PathBuf::from("/var/lib/fleetmon-agent/central-checks.pb"))
        );
        config.remote_checks.cache_file = Some(PathBuf::from("/etc/checks.pb"));
        assert_eq!(config.checks_cache(), Some(PathBuf::from("/etc/checks.pb")));
    }

    #[test]
    fn several_collectors_are_listed_in_endpoints_only() {
        let load = |collector: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("agent.toml");
            std::fs::write(&path, format!("[collector]\n{collector}\n")).unwrap();
            AgentConfig::load(Some(&path), Vec::new())
                .map(|valid| valid.config)
                .map_err(|e| e.to_string())
        };
        let config = load(r#"endpoints = ["https://c1:7400", "https://c2:7400"]"#).unwrap();
        assert_eq!(
            config.collector.urls(),
            ["https://c1:7400", "https://c2:7400"]
        );
        assert_eq!(
            load(r#"endpoints = ["https://c1:7400", "http://c2:7400"]"#).unwrap_err(),
            "invalid config: `collector.endpoints` `http://c2:7400` must be an https:// URL (the collector only speaks mutual TLS)"
        );
        assert_eq!(
            load("endpoint = \"https://c0:7400\"\nendpoints = [\"https://c1:7400\"]").unwrap_err(),
            "invalid config: `collector.endpoints` and collector.endpoint are both set: list every collector in collector.endpoints and drop endpoint"
        );
    }
}
