//! One check of one website with reqwest (rustls): status, timing, body rules and
//! the server certificate's expiry, turned into a `SiteCheck`.
//!
//! A check never fails as a call: every outcome, including DNS, connect, TLS and
//! timeout failures, is a `SiteCheck` with `ok = false`, a failure kind and a message.
//! The status code is kept whenever a response arrived.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fleetmon::pb::{CheckFailure, SiteCheck};
use fleetmon::samples::{bounds, truncate_text};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::check_result::{failed, millis, settle};
use crate::net_prober;
use fleetmon::checks::json_assertion;
use fleetmon::checks::pattern::Pattern;
use fleetmon::checks::{Probe, Site};

/// Why the prober could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ProberError(#[from] reqwest::Error);

/// HTTP clients for every combination of redirect and TLS settings the sites use;
/// a combination first seen in a central check gets its client then, kept for reuse.
#[derive(Debug, Clone)]
pub struct SiteProber {
    clients: Arc<Mutex<HashMap<(usize, bool), reqwest::Client>>>,
    /// Where client certificates named by gRPC checks are (`NAME.pem`, `NAME-key.pem`).
    client_certificates: Option<Arc<std::path::Path>>,
}

fn client(max_redirects: usize, verify_tls: bool) -> Result<reqwest::Client, reqwest::Error> {
    let redirects = if max_redirects == 0 {
        reqwest::redirect::Policy::none()
    } else {
        reqwest::redirect::Policy::limited(max_redirects)
    };
    reqwest::Client::builder()
        .user_agent(concat!("fleetmon-agent/", env!("CARGO_PKG_VERSION")))
        .redirect(redirects)
        .tls_danger_accept_invalid_certs(!verify_tls)
        .tls_info(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(2)
        .build()
}

impl SiteProber {
    /// Builds one client per distinct (redirects, TLS verification) pair in `sites`.
    pub fn new(sites: &[Site]) -> Result<Self, ProberError> {
        fleetmon::tls::install_crypto_provider();
        let mut clients = HashMap::new();
        for site in sites {
            let key = (site.max_redirects, site.verify_tls);
            if let std::collections::hash_map::Entry::Vacant(slot) = clients.entry(key) {
                slot.insert(client(key.0, key.1)?);
            }
        }
        Ok(SiteProber {
            clients: Arc::new(Mutex::new(clients)),
            client_certificates: None,
        })
    }

    /// Client certificates named by gRPC checks are read from `dir`.
    pub fn with_client_certificates(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.client_certificates = dir.map(Arc::from);
        self
    }

    /// The client for `site`'s settings, built the first time they are seen.
    fn client_for(&self, site: &Site) -> Result<reqwest::Client, reqwest::Error> {
        let key = (site.max_redirects, site.verify_tls);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let built = client(key.0, key.1)?;
        clients.insert(key, built.clone());
        Ok(built)
    }

    /// Checks `site` once. The texts the target controls are cut to what the collector
    /// accepts, so a hostile site still yields a result (and its outage a DOWN row).
    pub async fn check(&self, site: &Site) -> SiteCheck {
        let mut check = self.run(site).await;
        for text in [
            &mut check.final_url,
            &mut check.error_message,
            &mut check.matched_text,
        ] {
            truncate_text(text, bounds::TARGET_TEXT_BYTES);
        }
        check
    }

    async fn run(&self, site: &Site) -> SiteCheck {
        let mut check = match &site.probe {
            Probe::Http => return self.check_http(site).await,
            Probe::Tcp {
                address,
                send,
                expect,
            } => net_prober::tcp(site, address, send, expect.as_ref()).await,
            Probe::Dns { name, expected } => net_prober::dns(site, name, expected).await,
            Probe::Grpc {
                address,
                service,
                tls,
                ca_pem,
                expected_health,
                client_certificate,
            } => {
                let identity = client_certificate
                    .as_deref()
                    .map(|name| (self.client_certificates.as_deref(), name));
                let tls = tls.then_some(net_prober::GrpcTls {
                    ca_pem: ca_pem.as_deref(),
                    identity,
                });
                net_prober::grpc(site, address, service, tls, expected_health).await
            }
            Probe::Host(probe) => crate::host_prober::check(site, probe).await,
            Probe::WebSocket { send, expect } => {
                net_prober::websocket(site, send, expect.as_ref()).await
            }
            Probe::Icmp {
                host,
                count,
                interval,
                max_loss_percent,
            } => net_prober::icmp(site, host, *count, *interval, *max_loss_percent).await,
        };
        if check.ok
            && let Some((kind, message)) = assertion_failure(site, &check)
        {
            check.ok = false;
            check.failure = kind as i32;
            check.error_message = message;
        }
        check
    }

    async fn check_http(&self, site: &Site) -> SiteCheck {
        let client = match self.client_for(site) {
            Ok(client) => client,
            Err(error) => {
                return failed(
                    site,
                    SystemTime::now(),
                    Duration::ZERO,
                    CheckFailure::Other,
                    error.to_string(),
                );
            }
        };
        let checked_at = SystemTime::now();
        let started = Instant::now();
        let mut request = client
            .request(site.method.clone(), site.url.clone())
            .headers(site.headers.clone())
            .timeout(site.timeout);
        if let Some(body) = &site.body {
            request = request.body(body.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let (kind, message) = classify(&error);
                return failed(site, checked_at, started.elapsed(), kind, message);
            }
        };
        let mut check = failed(
            site,
            checked_at,
            Duration::ZERO,
            CheckFailure::Unspecified,
            String::new(),
        );
        check.time_to_first_byte_ms = Some(millis(started.elapsed()));
        let status = response.status().as_u16();
        check.status_code = Some(u32::from(status));
        check.final_url = response.url().to_string();
        check.tls_cert_not_after = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .and_then(not_after);

        let mut body = Vec::new();
        let mut failure = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > site.max_body_bytes {
                        failure = Some((
                            CheckFailure::BodyTooLarge,
                            format!("body is larger than {} bytes", site.max_body_bytes),
                        ));
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) => {
                    failure = Some(classify(&error));
                    break;
                }
            }
        }
        check.response_time_ms = millis(started.elapsed());
        check.body_bytes = body.len() as u64;

        let text = String::from_utf8_lossy(&body);
        if let Some(regex) = &site.regex {
            match regex.find(&text) {
                Some(found) => {
                    check.regex_matched = Some(true);
                    check.matched_text = found.chars().take(site.max_matched_chars).collect();
                }
                None => check.regex_matched = Some(false),
            }
        }
        if failure.is_none()
            && !site
                .expected_status
                .iter()
                .any(|range| range.contains(&status))
        {
            let expected: Vec<String> = site
                .expected_status
                .iter()
                .map(|r| {
                    if r.start() == r.end() {
                        r.start().to_string()
                    } else {
                        format!("{}-{}", r.start(), r.end())
                    }
                })
                .collect();
            failure = Some((
                CheckFailure::StatusMismatch,
                format!(
                    "status {status} is not in the expected {}",
                    expected.join(", ")
                ),
            ));
        }
        if failure.is_none() && check.regex_matched == Some(false) {
            let pattern = site.regex.as_ref().map(Pattern::as_str).unwrap_or_default();
            failure = Some((
                CheckFailure::RegexMismatch,
                format!("body does not match regex `{pattern}`"),
            ));
        }
        if failure.is_none()
            && let Some(absent) = &site.regex_absent
            && let Some(found) = absent.find(&text)
        {
            let shown: String = found.chars().take(site.max_matched_chars).collect();
            failure = Some((
                CheckFailure::RegexPresent,
                format!("body matches regex_absent `{}`: `{shown}`", absent.as_str()),
            ));
        }
        if failure.is_none()
            && !site.json.is_empty()
            && let Some(broken) = json_assertion::first_broken(&site.json, &body)
        {
            failure = Some((CheckFailure::JsonMismatch, broken));
        }
        if failure.is_none() {
            failure = assertion_failure(site, &check);
        }
        settle(&mut check, failure);
        check
    }
}

/// The first of a central check's assertions that a passing response breaks.
fn assertion_failure(site: &Site, check: &SiteCheck) -> Option<(CheckFailure, String)> {
    if let Some(limit) = site.max_response_time
        && check.response_time_ms > millis(limit)
    {
        return Some((
            CheckFailure::Slow,
            format!(
                "response took {:.0} ms; the limit is {:.0} ms (assertions.max_response_time_ms)",
                check.response_time_ms,
                millis(limit)
            ),
        ));
    }
    if let (Some(days), Some(not_after)) = (site.min_tls_days_left, &check.tls_cert_not_after) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let left = (not_after.seconds - now).div_euclid(86_400);
        if left < i64::from(days) {
            return Some((
                CheckFailure::TlsExpiring,
                format!(
                    "the certificate expires in {left} days; at least {days} are required (assertions.min_tls_days_left)"
                ),
            ));
        }
    }
    None
}

/// The expiry of a DER certificate.
fn not_after(der: &[u8]) -> Option<prost_types::Timestamp> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(prost_types::Timestamp {
        seconds: cert.validity().not_after.timestamp(),
        nanos: 0,
    })
}

/// The failure kind of a request error and its full message (every cause).
pub fn classify(error: &reqwest::Error) -> (CheckFailure, String) {
    let mut message = error.to_string();
    let mut tls = false;
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        if cause.downcast_ref::<rustls::Error>().is_some()
            || cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            tls = true;
        }
        source = cause.source();
    }
    // rustls errors reach us as text when another layer wrapped them.
    let tls = tls
        || [
            "invalid peer certificate",
            "received fatal alert",
            "peer is incompatible",
            "tls handshake",
        ]
        .iter()
        .any(|needle| message.contains(needle));
    let kind = if error.is_timeout() {
        CheckFailure::Timeout
    } else if tls {
        CheckFailure::Tls
    } else if message.contains("dns error") || message.contains("failed to lookup address") {
        CheckFailure::Dns
    } else if error.is_connect() {
        CheckFailure::Connect
    } else {
        CheckFailure::Other
    };
    (kind, message)
}
