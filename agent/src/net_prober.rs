//! TCP, DNS, gRPC health and ICMP checks (central checks of kind `tcp`, `dns`, `grpc`
//! and `icmp`), turned into a `SiteCheck` like HTTP ones: `url` is `tcp://host:port`,
//! `dns://name`, `grpc://host:port/service` or `icmp://host`, the method `TCP`, `DNS`,
//! `GRPC` or `ICMP`, and every outcome, failures included, is a result.

use std::io::Read as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use fleetmon::pb::{CheckFailure, SiteCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::check_result::{millis, settle, skeleton};
use fleetmon::checks::Site;
use fleetmon::checks::pattern::Pattern;

/// Most bytes read while waiting for an expected banner.
const MAX_BANNER_BYTES: usize = 4096;

fn done(
    mut check: SiteCheck,
    started: Instant,
    failure: Option<(CheckFailure, String)>,
) -> SiteCheck {
    check.response_time_ms = millis(started.elapsed());
    settle(&mut check, failure);
    check
}

/// What came (`text`, shortened for the result) does not match `pattern`.
fn mismatch(site: &Site, text: &str, pattern: &Pattern) -> (CheckFailure, String) {
    let shown: String = text.chars().take(site.max_matched_chars).collect();
    (
        CheckFailure::RegexMismatch,
        format!(
            "received `{}` does not match `{}`",
            shown.escape_debug(),
            pattern.as_str()
        ),
    )
}

/// Resolves `host:port`, connects, sends `send`, and reads until `expect` matches.
pub(crate) async fn tcp(
    site: &Site,
    address: &str,
    send: &[u8],
    expect: Option<&Pattern>,
) -> SiteCheck {
    let started = Instant::now();
    let mut check = skeleton(site);
    check.regex = expect.map(|p| p.as_str().to_owned()).unwrap_or_default();
    let mut received = Vec::new();
    let run = async {
        let addresses: Vec<_> = match tokio::net::lookup_host(address).await {
            Ok(found) => found.collect(),
            Err(error) => {
                return Some((
                    CheckFailure::Dns,
                    format!("cannot resolve {address}: {error}"),
                ));
            }
        };
        let Some(target) = addresses.first() else {
            return Some((
                CheckFailure::Dns,
                format!("{address} resolves to no address"),
            ));
        };
        let mut stream = match tokio::net::TcpStream::connect(target).await {
            Ok(stream) => stream,
            Err(error) => {
                return Some((
                    CheckFailure::Connect,
                    format!("cannot connect to {target}: {error}"),
                ));
            }
        };
        check.time_to_first_byte_ms = Some(millis(started.elapsed()));
        check.final_url = format!("tcp://{target}");
        if !send.is_empty()
            && let Err(error) = stream.write_all(send).await
        {
            return Some((
                CheckFailure::Connect,
                format!("cannot send to {target}: {error}"),
            ));
        }
        let pattern = expect?;
        let mut buffer = [0u8; 1024];
        loop {
            let read = match stream.read(&mut buffer).await {
                Ok(read) => read,
                Err(error) => {
                    return Some((
                        CheckFailure::Connect,
                        format!("reading from {target} failed: {error}"),
                    ));
                }
            };
            received.extend_from_slice(&buffer[..read]);
            check.body_bytes = received.len() as u64;
            let text = String::from_utf8_lossy(&received);
            if let Some(found) = pattern.find(&text) {
                check.regex_matched = Some(true);
                check.matched_text = found.chars().take(site.max_matched_chars).collect();
                return None;
            }
            if read == 0 || received.len() >= MAX_BANNER_BYTES {
                check.regex_matched = Some(false);
                return Some(mismatch(site, &text, pattern));
            }
        }
    };
    let failure = match tokio::time::timeout(site.timeout, run).await {
        Ok(failure) => failure,
        Err(_) => match expect {
            // What came within the timeout is the answer, and it did not match.
            Some(pattern) if !received.is_empty() => {
                check.regex_matched = Some(false);
                check.body_bytes = received.len() as u64;
                Some(mismatch(site, &String::from_utf8_lossy(&received), pattern))
            }
            _ => Some((
                CheckFailure::Timeout,
                format!("no answer from {address} within {:?}", site.timeout),
            )),
        },
    };
    done(check, started, failure)
}

/// Resolves `name`; the answer must hold every one of `expected`.
pub(crate) async fn dns(site: &Site, name: &str, expected: &[IpAddr]) -> SiteCheck {
    let started = Instant::now();
    let mut check = skeleton(site);
    let lookup = tokio::net::lookup_host(format!("{name}:0"));
    let failure = match tokio::time::timeout(site.timeout, lookup).await {
        Err(_) => Some((
            CheckFailure::Timeout,
            format!("no answer for {name} within {:?}", site.timeout),
        )),
        Ok(Err(error)) => Some((CheckFailure::Dns, format!("cannot resolve {name}: {error}"))),
        Ok(Ok(found)) => {
            let mut addresses: Vec<IpAddr> = found.map(|a| a.ip()).collect();
            addresses.sort();
            addresses.dedup();
            let answer: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
            check.matched_text = answer.join(",");
            let missing: Vec<String> = expected
                .iter()
                .filter(|ip| !addresses.contains(ip))
                .map(IpAddr::to_string)
                .collect();
            (!missing.is_empty()).then(|| {
                (
                    CheckFailure::AnswerMismatch,
                    format!(
                        "{name} resolves to {} without {}",
                        if answer.is_empty() {
                            "nothing".to_owned()
                        } else {
                            answer.join(", ")
                        },
                        missing.join(", ")
                    ),
                )
            })
        }
    };
    done(check, started, failure)
}

/// How a gRPC check speaks TLS.
pub(crate) struct GrpcTls<'a> {
    /// The CA (PEM) to trust instead of the system's.
    pub(crate) ca_pem: Option<&'a str>,
    /// The client certificate to present: the agent's directory of them (if it has
    /// one) and the name.
    pub(crate) identity: Option<(Option<&'a Path>, &'a str)>,
}

/// Most bytes of a client certificate or key file.
const MAX_IDENTITY_FILE: u64 = 64 * 1024;

/// The client certificate `name` from `dir`: `NAME.pem` and `NAME-key.pem`.
fn client_identity(
    dir: Option<&Path>,
    name: &str,
) -> Result<tonic::transport::Identity, (CheckFailure, String)> {
    let dir = dir.ok_or_else(|| {
        (
            CheckFailure::Tls,
            format!(
                "the check presents client certificate `{name}`, and this agent has no remote_checks.client_certificates_dir: set it to a directory holding {name}.pem and {name}-key.pem"
            ),
        )
    })?;
    let read = |file: String| {
        let path = dir.join(file);
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_IDENTITY_FILE + 1).read_to_end(&mut bytes))
            .map_err(|e| {
                (
                    CheckFailure::Tls,
                    format!("cannot read client certificate {}: {e}", path.display()),
                )
            })?;
        if bytes.len() as u64 > MAX_IDENTITY_FILE {
            return Err((
                CheckFailure::Tls,
                format!(
                    "client certificate {} is larger than {MAX_IDENTITY_FILE} bytes",
                    path.display()
                ),
            ));
        }
        Ok(bytes)
    };
    Ok(tonic::transport::Identity::from_pem(
        read(format!("{name}.pem"))?,
        read(format!("{name}-key.pem"))?,
    ))
}

/// Asks the gRPC server at `host:port` for the health of `service`
/// (grpc.health.v1.Health/Check): passes on `expected_health` (`SERVING`,
/// `NOT_SERVING` or `UNKNOWN`). Plaintext HTTP/2 without `tls`; with it, the server's
/// certificate chains to its `ca_pem` (else the system's CAs), and its client
/// certificate, if named, is presented.
pub(crate) async fn grpc(
    site: &Site,
    address: &str,
    service: &str,
    tls: Option<GrpcTls<'_>>,
    expected_health: &str,
) -> SiteCheck {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let started = Instant::now();
    let mut check = skeleton(site);
    let run = async {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| (CheckFailure::Connect, format!("{address}: {e}")))?;
        let endpoint = match tls {
            Some(tls) => {
                let mut config = match tls.ca_pem {
                    Some(pem) => tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                    None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
                };
                if let Some((dir, name)) = tls.identity {
                    config = config.identity(client_identity(dir, name)?);
                }
                endpoint
                    .tls_config(config)
                    .map_err(|e| (CheckFailure::Tls, format!("{address}: {e}")))?
            }
            None => endpoint,
        };
        let channel = endpoint.connect().await.map_err(|e| {
            let mut message = format!("cannot connect to {address}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            (CheckFailure::Connect, message)
        })?;
        check.time_to_first_byte_ms = Some(millis(started.elapsed()));
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await;
        let asked = if service.is_empty() {
            "the server".to_owned()
        } else {
            format!("service `{service}`")
        };
        match answer {
            Ok(response) => {
                let status = response.into_inner().status;
                let name = ServingStatus::try_from(status)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| format!("status {status}"));
                check.matched_text = name.clone();
                if name == expected_health {
                    Ok(())
                } else {
                    Err((
                        CheckFailure::StatusMismatch,
                        format!("health of {asked} is {name} (expected {expected_health})"),
                    ))
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => Err((
                CheckFailure::StatusMismatch,
                format!("the server does not know {asked} (NOT_FOUND)"),
            )),
            Err(status) => Err((
                CheckFailure::StatusMismatch,
                format!(
                    "Health/Check of {asked} answered {:?}: {}",
                    status.code(),
                    status.message()
                ),
            )),
        }
    };
    let failure = match tokio::time::timeout(site.timeout, run).await {
        Ok(outcome) => outcome.err(),
        Err(_) => Some((
            CheckFailure::Timeout,
            format!("no health answer from {address} within {:?}", site.timeout),
        )),
    };
    done(check, started, failure)
}

/// Pings `host` (an IPv4 or IPv6 address, or a name: its first IPv4 address, else its
/// first IPv6 one) `count` times, `interval` apart: passes when at most
/// `max_loss_percent` of the requests go unanswered (`None`: when one is answered).
/// The response time is the average round trip; the matched text sums the run up.
pub(crate) async fn icmp(
    site: &Site,
    host: &str,
    count: u32,
    interval: std::time::Duration,
    max_loss_percent: Option<f64>,
) -> SiteCheck {
    let started = Instant::now();
    let deadline = started + site.timeout;
    let mut check = skeleton(site);
    let target = match tokio::time::timeout(site.timeout, tokio::net::lookup_host((host, 0))).await
    {
        Err(_) => Err((
            CheckFailure::Timeout,
            format!("no answer for {host} within {:?}", site.timeout),
        )),
        Ok(Err(error)) => Err((CheckFailure::Dns, format!("cannot resolve {host}: {error}"))),
        Ok(Ok(found)) => {
            let found: Vec<IpAddr> = found.map(|a| a.ip()).collect();
            found
                .iter()
                .find(|ip| ip.is_ipv4())
                .or_else(|| found.first())
                .copied()
                .ok_or_else(|| (CheckFailure::Dns, format!("{host} resolves to no address")))
        }
    };
    let target = match target {
        Ok(target) => target,
        Err(failure) => return done(check, started, Some(failure)),
    };
    check.final_url = fleetmon::checks::definition::icmp_url(&target.to_string());
    let echoes =
        tokio::task::spawn_blocking(move || crate::icmp::echo(target, count, interval, deadline))
            .await;
    let echoes = match echoes {
        Ok(Ok(echoes)) => echoes,
        Ok(Err(error)) => {
            return done(
                check,
                started,
                Some((CheckFailure::Other, error.to_string())),
            );
        }
        Err(error) => {
            return done(
                check,
                started,
                Some((
                    CheckFailure::Other,
                    format!("the ping thread failed: {error}"),
                )),
            );
        }
    };
    check.matched_text = echoes.summary(count);
    let loss = echoes.loss_percent(count);
    let failure = if echoes.round_trips.is_empty() {
        let why = echoes
            .send_error
            .as_deref()
            .map(|e| format!(" (sending failed: {e})"))
            .unwrap_or_default();
        Some((
            CheckFailure::Timeout,
            format!("no echo reply from {host} ({target}): {count} of {count} requests lost{why}"),
        ))
    } else if let Some(limit) = max_loss_percent.filter(|limit| loss > *limit) {
        Some((
            CheckFailure::Other,
            format!(
                "{} of {count} requests to {host} lost ({loss:.0} %, above max_loss_percent {limit})",
                count as usize - echoes.round_trips.len()
            ),
        ))
    } else {
        None
    };
    let mut check = done(check, started, failure);
    if let Some((_, avg, _)) = echoes.min_avg_max() {
        check.response_time_ms = avg;
    }
    check
}

/// Upgrades `site.url` (ws:// or wss://) to a WebSocket, sends `send` as a text message
/// (when not empty) and, with `expect`, waits for a message that matches it.
pub(crate) async fn websocket(site: &Site, send: &str, expect: Option<&Pattern>) -> SiteCheck {
    let started = Instant::now();
    let mut check = skeleton(site);
    check.regex = expect.map(|p| p.as_str().to_owned()).unwrap_or_default();
    let url = site.url.clone();
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let run = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| {
                (
                    CheckFailure::Connect,
                    format!("cannot connect to {host}:{port}: {e}"),
                )
            })?;
        check.time_to_first_byte_ms = Some(millis(started.elapsed()));
        if url.scheme() == "wss" {
            let tls =
                wss_connector().map_err(|e| (CheckFailure::Tls, format!("system CAs: {e}")))?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| (CheckFailure::Tls, format!("{host}: {e}")))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| (CheckFailure::Tls, format!("TLS with {host}:{port}: {e}")))?;
            converse(&mut check, site, stream, send, expect).await
        } else {
            converse(&mut check, site, tcp, send, expect).await
        }
    };
    let failure = match tokio::time::timeout(site.timeout, run).await {
        Ok(outcome) => outcome.err(),
        Err(_) => Some((
            CheckFailure::Timeout,
            format!(
                "no {} from {url} within {:?}",
                if expect.is_some() {
                    "matching message"
                } else {
                    "upgrade"
                },
                site.timeout
            ),
        )),
    };
    done(check, started, failure)
}

/// TLS for wss:// with the system's CAs, read once per agent run (not at every check).
fn wss_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static CONNECTOR: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // A CA the system lists but rustls cannot read is skipped, as browsers do.
                let _ = roots.add(cert);
            }
            let mut config =
                rustls::ClientConfig::builder_with_provider(fleetmon::tls::crypto_provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
                config,
            )))
        })
        .clone()
}

/// The upgrade, the message sent and the answer expected, on `stream`.
async fn converse<S>(
    check: &mut SiteCheck,
    site: &Site,
    stream: S,
    send: &str,
    expect: Option<&Pattern>,
) -> Result<(), (CheckFailure, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Error, Message};
    let url = site.url.as_str();
    let (mut socket, response) = match tokio_tungstenite::client_async(url, stream).await {
        Ok(upgraded) => upgraded,
        Err(Error::Http(response)) => {
            check.status_code = Some(u32::from(response.status().as_u16()));
            return Err((
                CheckFailure::StatusMismatch,
                format!(
                    "{url} answered {} instead of upgrading to a WebSocket (101)",
                    response.status()
                ),
            ));
        }
        Err(error) => {
            return Err((
                CheckFailure::Connect,
                format!("WebSocket handshake with {url} failed: {error}"),
            ));
        }
    };
    check.status_code = Some(u32::from(response.status().as_u16()));
    if !send.is_empty() {
        socket
            .send(Message::text(send))
            .await
            .map_err(|e| (CheckFailure::Connect, format!("cannot send to {url}: {e}")))?;
    }
    let outcome = match expect {
        None => Ok(()),
        Some(pattern) => loop {
            let text = match socket.next().await {
                Some(Ok(Message::Text(text))) => text.to_string(),
                Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => {
                    break Err((
                        CheckFailure::RegexMismatch,
                        format!("{url} closed the WebSocket before a message came"),
                    ));
                }
                Some(Err(error)) => {
                    break Err((
                        CheckFailure::Connect,
                        format!("reading from {url} failed: {error}"),
                    ));
                }
            };
            check.body_bytes = text.len() as u64;
            match pattern.find(&text) {
                Some(found) => {
                    check.regex_matched = Some(true);
                    check.matched_text = found.chars().take(site.max_matched_chars).collect();
                    break Ok(());
                }
                None => {
                    check.regex_matched = Some(false);
                    break Err(mismatch(site, &text, pattern));
                }
            }
        },
    };
    // A polite close; a server that already went is no failure of the check.
    let _ = socket.close(None).await;
    outcome
}
