//! One site check: as written in the config (`SiteConfig`), and ready to run
//! (`Site`, with patterns compiled and defaults applied).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::config::ConfigError;
use serde::Deserialize;

use super::json_assertion::JsonRule;
use super::pattern::{Pattern, Patterns};

/// HTTP methods a site check may use.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// Prober limits and per-site defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeDefaults {
    /// Checks running at the same time at most.
    pub max_concurrent: usize,
    /// Default seconds between checks of a site.
    pub interval_seconds: u64,
    /// Default request timeout in seconds.
    pub timeout_seconds: f64,
    /// Default most body bytes read.
    pub max_body_bytes: u64,
    /// Longest matched text reported, in characters.
    pub max_matched_chars: usize,
}

impl Default for ProbeDefaults {
    fn default() -> Self {
        ProbeDefaults {
            max_concurrent: 64,
            interval_seconds: 60,
            timeout_seconds: 10.0,
            max_body_bytes: 1024 * 1024,
            max_matched_chars: 256,
        }
    }
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

fn default_method() -> String {
    "GET".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_max_redirects() -> usize {
    10
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
    /// A gRPC health check of `host:port`.
    Grpc {
        /// `host:port`.
        address: String,
        /// The service asked about; empty: the whole server.
        service: String,
        /// Over TLS (the system's CAs), else plaintext HTTP/2.
        tls: bool,
        /// With `tls`: the CA (PEM) to trust instead of the system's.
        ca_pem: Option<String>,
        /// The health that passes: `SERVING`, `NOT_SERVING` or `UNKNOWN`.
        expected_health: String,
        /// With `tls`: the name of the client certificate to present, from the agent's
        /// `remote_checks.client_certificates_dir`.
        client_certificate: Option<String>,
    },
    /// A WebSocket upgrade at `url` (ws:// or wss://), a message sent and one expected.
    WebSocket {
        /// Sent as a text message once upgraded; empty: nothing.
        send: String,
        /// A pattern the first message back must match.
        expect: Option<Pattern>,
    },
    /// A check of the agent's own host: a process, a systemd unit, a file, a disk.
    Host(super::host::HostProbe),
    /// ICMP echo requests to a host (IPv4 or IPv6).
    Icmp {
        /// A name, or an IPv4 or IPv6 address.
        host: String,
        /// Requests per run.
        count: u32,
        /// Time between two requests.
        interval: std::time::Duration,
        /// The most unanswered requests, in percent, a passing run may have (`None`:
        /// one answer is enough).
        max_loss_percent: Option<f64>,
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
    pub url: url::Url,
    /// The method.
    pub method: http::Method,
    /// Request headers.
    pub headers: http::header::HeaderMap,
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
    pub json: Vec<JsonRule>,
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
        let url = url::Url::parse(&site.url)
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
            http::Method::from_bytes(method_name.as_bytes()).expect("listed methods are valid");
        let mut headers = http::header::HeaderMap::new();
        for (name, value) in &site.headers {
            let header_name =
                http::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ConfigError::field(
                        &field("headers"),
                        format!("`{name}` is not a valid header name"),
                    )
                })?;
            let header_value = http::header::HeaderValue::from_str(value).map_err(|_| {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
