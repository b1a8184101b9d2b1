//! Agent configuration: `agent.example.toml` documents every key.
//!
//! Loaded from TOML (`--config`), overridden by `FLEETMON_AGENT__SECTION__KEY`
//! variables and a few flags, then validated into typed settings. Sites can also come
//! from a plain `--sites-file` (`URL INTERVAL_SECONDS [REGEX]` per line).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetmon::config::ConfigError;
use fleetmon::telemetry::LogFormat;
use fleetmon::tls::ClientTlsFiles;
use serde::Deserialize;

use crate::pattern::{Pattern, Patterns};

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "FLEETMON_AGENT";

/// HTTP methods a site check may use.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// The agent's whole configuration as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where and how to reach the collector.
    #[serde(default)]
    pub collector: CollectorConfig,
    /// Seconds between host samples.
    #[serde(default = "default_host_interval")]
    pub host_interval_seconds: u64,
    /// Reported host name (default: the system's).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Prometheus `/metrics` listen address.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Log format: `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Outbox and sending.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Limits and defaults of the site prober.
    #[serde(default)]
    pub probes: ProbeDefaults,
    /// Websites to check, from this file (reported as local, beside central checks).
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
    /// This agent's labels, e.g. `{ location = "eu-west", role = "edge" }`: sent to the
    /// collector, shown by `fleetmon agents`, matched by central checks' label selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Central checks (the collector's `Checks` service).
    #[serde(default)]
    pub remote_checks: RemoteChecksConfig,
    /// Token enrollment at start, when `collector.cert` does not exist yet.
    #[serde(default)]
    pub enroll: Option<crate::enroll::EnrollConfig>,
}

/// Checks configured centrally and sent by the collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteChecksConfig {
    /// Run the checks the collector assigns to this agent; `false` refuses remote
    /// configuration (only `sites` run, and the collector is told so).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where the last applied set is kept, so an agent restarted while no collector
    /// answers goes on checking (default: `central-checks.pb` in `outbox.spool_dir`
    /// when that is set; otherwise none, and a restarted agent waits for a collector).
    #[serde(default)]
    pub cache_file: Option<PathBuf>,
}

impl Default for RemoteChecksConfig {
    fn default() -> Self {
        RemoteChecksConfig {
            enabled: true,
            cache_file: None,
        }
    }
}

/// The collector endpoint and this agent's TLS identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// `https://host:port` of the collector.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Several collectors instead of `endpoint`: the agent streams to one and, when it
    /// cannot reach it, fails over to the next (with backoff once all failed in a row).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// CA bundle the collector's certificate must chain to.
    #[serde(default = "default_ca")]
    pub ca: PathBuf,
    /// This agent's client certificate (`spiffe://fleetmon/agent/NAME`).
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    /// This agent's private key.
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// Name to verify the collector's certificate against (default: the endpoint host).
    #[serde(default)]
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
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Samples held in memory before the oldest are dropped.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// Directory where unacknowledged samples survive a restart (off when unset).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Samples per batch at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest wait before a non-full batch is sent, in milliseconds.
    #[serde(default = "default_batch_interval_ms")]
    pub batch_interval_ms: u64,
    /// Longest pause between reconnect attempts, in seconds.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u64,
}

/// Prober limits and per-site defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeDefaults {
    /// Checks running at the same time at most.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Default seconds between checks of a site.
    #[serde(default = "default_site_interval")]
    pub interval_seconds: u64,
    /// Default request timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// Default most body bytes read.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Longest matched text reported, in characters.
    #[serde(default = "default_max_match")]
    pub max_matched_chars: usize,
}

/// One website to check, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The URL (http or https).
    pub url: String,
    /// GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
    /// Accepted status codes: numbers and ranges like `"200-299"` (default 2xx).
    #[serde(default)]
    pub expected_status: Vec<StatusSpec>,
    /// A pattern the body must match; the matched text is reported.
    #[serde(default)]
    pub regex: Option<String>,
    /// A pattern the body must not match.
    #[serde(default)]
    pub regex_absent: Option<String>,
    /// Request timeout in seconds (default `probes.timeout_seconds`).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Seconds between checks (default `probes.interval_seconds`).
    #[serde(default)]
    pub interval_seconds: Option<u64>,
    /// Follow redirects.
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// Most redirects followed.
    #[serde(default = "default_max_redirects")]
    pub max_redirects: usize,
    /// Verify the server certificate (https).
    #[serde(default = "default_true")]
    pub verify_tls: bool,
    /// Most body bytes read (default `probes.max_body_bytes`).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
}

/// A status code or an inclusive range of them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StatusSpec {
    /// One code.
    Code(u16),
    /// `"200-299"` or `"404"`.
    Text(String),
}

fn default_endpoint() -> String {
    "https://127.0.0.1:7400".to_owned()
}
fn default_ca() -> PathBuf {
    PathBuf::from("certs/ca.pem")
}
fn default_cert() -> PathBuf {
    PathBuf::from("certs/agent.pem")
}
fn default_key() -> PathBuf {
    PathBuf::from("certs/agent-key.pem")
}
fn default_host_interval() -> u64 {
    10
}
fn default_metrics_listen() -> SocketAddr {
    "127.0.0.1:9402".parse().expect("valid default")
}
fn default_capacity() -> usize {
    100_000
}
fn default_batch_size() -> usize {
    500
}
fn default_batch_interval_ms() -> u64 {
    1000
}
fn default_max_backoff() -> u64 {
    30
}
fn default_max_concurrent() -> usize {
    64
}
fn default_site_interval() -> u64 {
    60
}
fn default_timeout() -> f64 {
    10.0
}
fn default_max_body() -> u64 {
    1024 * 1024
}
fn default_max_match() -> usize {
    256
}
fn default_method() -> String {
    "GET".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_max_redirects() -> usize {
    10
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            endpoint: default_endpoint(),
            endpoints: Vec::new(),
            ca: default_ca(),
            cert: default_cert(),
            key: default_key(),
            server_name: None,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            capacity: default_capacity(),
            spool_dir: None,
            batch_size: default_batch_size(),
            batch_interval_ms: default_batch_interval_ms(),
            max_backoff_seconds: default_max_backoff(),
        }
    }
}

impl Default for ProbeDefaults {
    fn default() -> Self {
        ProbeDefaults {
            max_concurrent: default_max_concurrent(),
            interval_seconds: default_site_interval(),
            timeout_seconds: default_timeout(),
            max_body_bytes: default_max_body(),
            max_matched_chars: default_max_match(),
        }
    }
}

impl SiteConfig {
    /// A GET check of `url` with every default.
    pub fn get(url: &str) -> Self {
        SiteConfig {
            url: url.to_owned(),
            method: default_method(),
            headers: BTreeMap::new(),
            body: None,
            expected_status: Vec::new(),
            regex: None,
            regex_absent: None,
            timeout_seconds: None,
            interval_seconds: None,
            follow_redirects: true,
            max_redirects: default_max_redirects(),
            verify_tls: true,
            max_body_bytes: None,
        }
    }
}

/// What a site check does; HTTP for every site of the config file, TCP and DNS for
/// central checks that ask for them.
#[derive(Debug, Clone)]
pub enum Probe {
    /// An HTTP request with the fields of [`Site`].
    Http,
    /// A TCP connection to `host:port`.
    Tcp {
        /// `host:port`.
        address: String,
        /// Bytes sent once connected.
        send: Vec<u8>,
        /// A pattern the first bytes received must match.
        expect: Option<Pattern>,
    },
    /// A name resolved with the system's resolver.
    Dns {
        /// The name.
        name: String,
        /// Addresses the answer must include.
        expected: Vec<std::net::IpAddr>,
    },
}

/// A site check ready to run: everything parsed and defaulted.
#[derive(Debug, Clone)]
pub struct Site {
    /// What the check does (HTTP unless a central check says otherwise).
    pub probe: Probe,
    /// The URL (`tcp://host:port` or `dns://name` for those probes).
    pub url: reqwest::Url,
    /// The method.
    pub method: reqwest::Method,
    /// Request headers.
    pub headers: reqwest::header::HeaderMap,
    /// Request body.
    pub body: Option<String>,
    /// Accepted status ranges.
    pub expected_status: Vec<RangeInclusive<u16>>,
    /// Must match.
    pub regex: Option<Pattern>,
    /// Must not match.
    pub regex_absent: Option<Pattern>,
    /// Request timeout.
    pub timeout: Duration,
    /// Time between checks.
    pub interval: Duration,
    /// Most redirects followed; 0 = do not follow.
    pub max_redirects: usize,
    /// Verify the server certificate.
    pub verify_tls: bool,
    /// Most body bytes read.
    pub max_body_bytes: u64,
    /// Longest matched text reported.
    pub max_matched_chars: usize,
    /// A run slower than this fails (`slow`); central checks only.
    pub max_response_time: Option<Duration>,
    /// An https run whose certificate expires within this many days fails
    /// (`tls_expiring`); central checks only.
    pub min_tls_days_left: Option<u32>,
    /// Conditions on a JSON body, all of which must hold (`json_mismatch`); central
    /// checks only.
    pub json: Vec<crate::json_assertion::JsonRule>,
    /// The central check this site is (`None`: from the agent's own config).
    pub check: Option<CheckRef>,
}

/// Which central check (and which version of it) a site runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRef {
    /// The check id.
    pub id: String,
    /// Its version.
    pub version: u64,
}

fn parse_status(field: &str, spec: &StatusSpec) -> Result<RangeInclusive<u16>, ConfigError> {
    let bad = |text: &str| {
        ConfigError::field(
            field,
            format!(
                "`{text}` is not a status code or range: write 200 or \"200-299\" (codes 100-999)"
            ),
        )
    };
    let code = |text: &str| {
        text.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=999).contains(c))
    };
    match spec {
        StatusSpec::Code(c) if (100..=999).contains(c) => Ok(*c..=*c),
        StatusSpec::Code(c) => Err(bad(&c.to_string())),
        StatusSpec::Text(text) => match text.split_once('-') {
            Some((low, high)) => match (code(low), code(high)) {
                (Some(low), Some(high)) if low <= high => Ok(low..=high),
                _ => Err(bad(text)),
            },
            None => code(text).map(|c| c..=c).ok_or_else(|| bad(text)),
        },
    }
}

impl Site {
    /// Parses and checks one site; `index` names it in errors (`sites[3].regex`).
    pub fn from_config(
        index: usize,
        site: &SiteConfig,
        defaults: &ProbeDefaults,
    ) -> Result<Site, ConfigError> {
        Site::from_config_sharing(
            &format!("sites[{index}]"),
            site,
            defaults,
            &mut Patterns::default(),
        )
    }

    /// As [`Site::from_config`], taking patterns already compiled from `patterns`;
    /// errors name fields under `path` (`sites[3]`, `check.http`).
    pub fn from_config_sharing(
        path: &str,
        site: &SiteConfig,
        defaults: &ProbeDefaults,
        patterns: &mut Patterns,
    ) -> Result<Site, ConfigError> {
        let field = |name: &str| format!("{path}.{name}");
        let url = reqwest::Url::parse(&site.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ConfigError::field(
                    &field("url"),
                    format!("`{}` is not an http:// or https:// URL", site.url),
                )
            })?;
        let method_name = site.method.to_ascii_uppercase();
        if !METHODS.contains(&method_name.as_str()) {
            return Err(ConfigError::field(
                &field("method"),
                format!("`{}` is not one of {}", site.method, METHODS.join(", ")),
            ));
        }
        let method =
            reqwest::Method::from_bytes(method_name.as_bytes()).expect("listed methods are valid");
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &site.headers {
            let header_name =
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ConfigError::field(
                        &field("headers"),
                        format!("`{name}` is not a valid header name"),
                    )
                })?;
            let header_value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                ConfigError::field(
                    &field("headers"),
                    format!("the value of `{name}` is not a valid header value"),
                )
            })?;
            headers.insert(header_name, header_value);
        }
        let expected_status = if site.expected_status.is_empty() {
            vec![200..=299]
        } else {
            site.expected_status
                .iter()
                .map(|spec| parse_status(&field("expected_status"), spec))
                .collect::<Result<_, _>>()?
        };
        let mut compile = |name: &str, pattern: &Option<String>| {
            pattern
                .as_deref()
                .map(|p| {
                    patterns.get(p).map_err(|e| {
                        ConfigError::field(&field(name), format!("is not a valid regex: {e}"))
                    })
                })
                .transpose()
        };
        let timeout = site.timeout_seconds.unwrap_or(defaults.timeout_seconds);
        if !(timeout > 0.0 && timeout <= 3600.0) {
            return Err(ConfigError::field(
                &field("timeout_seconds"),
                "must be between 0 and 3600",
            ));
        }
        let interval = site.interval_seconds.unwrap_or(defaults.interval_seconds);
        if interval == 0 {
            return Err(ConfigError::field(
                &field("interval_seconds"),
                "must be at least 1",
            ));
        }
        Ok(Site {
            probe: Probe::Http,
            url,
            method,
            headers,
            body: site.body.clone(),
            expected_status,
            regex: compile("regex", &site.regex)?,
            regex_absent: compile("regex_absent", &site.regex_absent)?,
            timeout: Duration::from_secs_f64(timeout),
            interval: Duration::from_secs(interval),
            max_redirects: if site.follow_redirects {
                site.max_redirects
            } else {
                0
            },
            verify_tls: site.verify_tls,
            max_body_bytes: site.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_matched_chars: defaults.max_matched_chars,
            max_response_time: None,
            min_tls_days_left: None,
            json: Vec::new(),
            check: None,
        })
    }
}

/// Why a sites file was refused: names the file, the line and the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}:{line}: {message}")]
pub struct SitesFileError {
    /// The file.
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses the plain format earlier tools used: `URL INTERVAL_SECONDS [REGEX]` per
/// line; blank lines and lines starting with `#` are skipped; the regex is the rest
/// of the line (it may contain spaces).
pub fn parse_sites_file(path: &Path, text: &str) -> Result<Vec<SiteConfig>, SitesFileError> {
    let mut sites = Vec::new();
    // Checks each distinct pattern once, however many lines repeat it.
    let mut patterns = Patterns::default();
    for (index, raw) in text.lines().enumerate() {
        let error = |message: String| SitesFileError {
            path: path.display().to_string(),
            line: index + 1,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, char::is_whitespace);
        let url = parts.next().unwrap_or_default();
        let interval = parts.next().map(str::trim).unwrap_or_default();
        if interval.is_empty() {
            return Err(error(format!(
                "expected `URL INTERVAL_SECONDS [REGEX]`, found only `{url}`"
            )));
        }
        if reqwest::Url::parse(url).map(|u| matches!(u.scheme(), "http" | "https")) != Ok(true) {
            return Err(error(format!("`{url}` is not an http:// or https:// URL")));
        }
        let interval: u64 = match interval.parse() {
            Ok(seconds) if seconds > 0 => seconds,
            _ => {
                return Err(error(format!(
                    "interval `{interval}` is not a positive whole number of seconds"
                )));
            }
        };
        let regex = parts
            .next()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        if let Some(pattern) = &regex
            && let Err(e) = patterns.get(pattern)
        {
            return Err(error(format!("regex `{pattern}` is invalid: {e}")));
        }
        sites.push(SiteConfig {
            interval_seconds: Some(interval),
            regex,
            ..SiteConfig::get(url)
        });
    }
    Ok(sites)
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
        if !self.collector.endpoints.is_empty() && self.collector.endpoint != default_endpoint() {
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
    fn the_line_format_of_earlier_tools_is_read() {
        let text =
            "# checks\nhttps://a.example/ 30\n\nhttp://b.example/health 5 status: (ok|fine) now\n";
        let sites = parse_sites_file(Path::new("sites.txt"), text).unwrap();
        assert_eq!(sites.len(), 2);
        assert_eq!(
            (
                sites[0].url.as_str(),
                sites[0].interval_seconds,
                sites[0].regex.as_deref()
            ),
            ("https://a.example/", Some(30), None)
        );
        assert_eq!(sites[1].regex.as_deref(), Some("status: (ok|fine) now"));
        assert_eq!(sites[1].interval_seconds, Some(5));
    }

    #[test]
    fn a_bad_line_is_named() {
        let cases = [
            (
                "https://a.example/ 30\nftp://x 10\n",
                2,
                "`ftp://x` is not an http:// or https:// URL",
            ),
            (
                "https://a.example/\n",
                1,
                "expected `URL INTERVAL_SECONDS [REGEX]`, found only `https://a.example/`",
            ),
            (
                "\n\nhttps://a.example/ ten\n",
                3,
                "interval `ten` is not a positive whole number of seconds",
            ),
            (
                "https://a.example/ 0\n",
                1,
                "interval `0` is not a positive whole number of seconds",
            ),
        ];
        for (text, line, message) in cases {
            let error = parse_sites_file(Path::new("/etc/fleetmon/sites.txt"), text).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("/etc/fleetmon/sites.txt:{line}: {message}")
            );
        }
        let error =
            parse_sites_file(Path::new("s"), "https://a.example/ 5 (unclosed\n").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("s:1: regex `(unclosed` is invalid: "),
            "{error}"
        );
    }

    #[test]
    fn a_regex_too_large_to_compile_safely_names_its_site() {
        let mut site = SiteConfig::get("https://a.example/");
        site.regex = Some("(\\w{100}){100}".into());
        let error = Site::from_config(2, &site, &ProbeDefaults::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("invalid config: `sites[2].regex` is not a valid regex: "),
            "{error}"
        );
        assert!(
            error.ends_with(
                "compiled regex exceeds size limit of 1048576 bytes: use a simpler pattern \
                 (fewer repetitions of large classes; `(?-u)` makes \\w, \\d and \\s ASCII \
                 only and much smaller)"
            ),
            "{error}"
        );
    }

    #[test]
    fn expected_status_takes_codes_and_ranges() {
        let defaults = ProbeDefaults::default();
        let mut site = SiteConfig::get("https://a.example/");
        site.expected_status = vec![StatusSpec::Code(200), StatusSpec::Text("300-399".into())];
        let parsed = Site::from_config(0, &site, &defaults).unwrap();
        assert_eq!(parsed.expected_status, vec![200..=200, 300..=399]);
        assert_eq!(
            Site::from_config(0, &SiteConfig::get("https://a.example/"), &defaults)
                .unwrap()
                .expected_status,
            vec![200..=299]
        );
        site.expected_status = vec![StatusSpec::Text("299-200".into())];
        assert_eq!(
            Site::from_config(4, &site, &defaults)
                .unwrap_err()
                .to_string(),
            "invalid config: `sites[4].expected_status` `299-200` is not a status code or range: write 200 or \"200-299\" (codes 100-999)"
        );
        let mut bad_method = SiteConfig::get("https://a.example/");
        bad_method.method = "FETCH".into();
        assert_eq!(
            Site::from_config(1, &bad_method, &defaults)
                .unwrap_err()
                .to_string(),
            "invalid config: `sites[1].method` `FETCH` is not one of GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"
        );
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.example.toml");
        let valid = AgentConfig::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(valid.sites.len(), valid.config.sites.len());
        assert!(!valid.sites.is_empty());
        assert_eq!(valid.config.host_interval_seconds, 10);
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
