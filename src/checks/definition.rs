//! Central checks: a `CheckDefinition` from the `Checks` service turned into a [`Site`]
//! the agent runs. The collector validates with the same function before it accepts a
//! definition, so an operator hears about a bad regex from the API, not from the fleet.

use std::collections::BTreeMap;
use std::time::Duration;

pub use super::error::DefinitionError;
use super::json_assertion::JsonRule;
use super::pattern::Patterns;
use super::site::{CheckRef, Probe, ProbeDefaults, Site, SiteConfig, StatusSpec};
use crate::config::ConfigError;
use crate::pb::{
    CheckDefinition, DnsCheck, GrpcCheck, HttpCheck, IcmpCheck, TcpCheck, WebSocketCheck,
    check_definition,
};

/// Longest check id.
pub const MAX_ID_LEN: usize = 63;

/// Checks that `id` is a slug: lowercase letters, digits and `-`, starting with a letter.
pub fn validate_id(id: &str) -> Result<(), DefinitionError> {
    let slug = id.len() <= MAX_ID_LEN
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if slug {
        Ok(())
    } else {
        Err(DefinitionError::new(
            "check.id",
            format!(
                "`{id}` is not a slug: use 1 to {MAX_ID_LEN} lowercase letters, digits and `-`, starting with a letter (e.g. `shop-home`)"
            ),
        ))
    }
}

/// The interval a definition asks for, with 0 meaning the default (a heartbeat's is
/// its period).
pub fn interval_seconds(definition: &CheckDefinition) -> u32 {
    if let Some(check_definition::Kind::Heartbeat(heartbeat)) = &definition.kind {
        return heartbeat.period_seconds;
    }
    match definition.interval_seconds {
        0 => crate::config::DEFAULT_CHECK_INTERVAL_SECONDS,
        seconds => seconds,
    }
}

/// How long after a run a location still counts as reporting its check: three
/// intervals (0: the default interval), at least 10 s. The quorum's rule
/// (writer/sql/check_tallies.sql) and what availability reports count as monitored
/// (check_days.covered) both use it.
pub fn reporting_window(interval_seconds: u32) -> std::time::Duration {
    let interval = match interval_seconds {
        0 => crate::config::DEFAULT_CHECK_INTERVAL_SECONDS,
        seconds => seconds,
    };
    std::time::Duration::from_secs((3 * u64::from(interval)).max(10))
}

/// What a definition checks: its kind (`http`, `tcp`, `dns`, `grpc`, `heartbeat`;
/// `unknown` without one) and its target as results show it (the URL, `tcp://address`,
/// `dns://name`, `heartbeat://id`).
pub fn kind_and_target(definition: &CheckDefinition) -> (&'static str, String) {
    match &definition.kind {
        Some(check_definition::Kind::Http(http)) => ("http", http.url.clone()),
        Some(check_definition::Kind::Tcp(tcp)) => ("tcp", format!("tcp://{}", tcp.address)),
        Some(check_definition::Kind::Dns(dns)) => ("dns", format!("dns://{}", dns.name)),
        Some(check_definition::Kind::Grpc(grpc)) => ("grpc", grpc_url(grpc)),
        Some(check_definition::Kind::Heartbeat(_)) => {
            ("heartbeat", format!("heartbeat://{}", definition.id))
        }
        Some(check_definition::Kind::Icmp(icmp)) => ("icmp", icmp_url(&icmp.host)),
        Some(check_definition::Kind::Websocket(ws)) => ("websocket", ws.url.clone()),
        Some(kind) => match super::host::kind_of(kind) {
            Some((kind, target, _)) => (kind, target),
            None => ("unknown", String::new()),
        },
        None => ("unknown", String::new()),
    }
}

/// What a definition without a kind is told.
const MISSING_KIND: &str = "is missing: set `http` (an HTTP or HTTPS request), `tcp` (a connection), `dns` (a lookup), `grpc` (a health check), `icmp` (a ping), `websocket` (an upgrade), `process`, `systemd`, `file` or `disk` (about the agent's own host), or `heartbeat` (a job pings it)";

/// The site that runs `definition`; identical patterns are shared through `patterns`.
pub fn site_from_definition(
    definition: &CheckDefinition,
    defaults: &ProbeDefaults,
    patterns: &mut Patterns,
) -> Result<Site, DefinitionError> {
    validate_id(&definition.id)?;
    let timeout = definition.timeout_seconds;
    if !(timeout.is_finite() && (0.0..=3600.0).contains(&timeout)) {
        return Err(DefinitionError::new(
            "check.timeout_seconds",
            "must be between 0 (the default, 10 s) and 3600",
        ));
    }
    let http = match &definition.kind {
        Some(check_definition::Kind::Http(http)) => http,
        Some(check_definition::Kind::Tcp(tcp)) => {
            let site = tcp_site(tcp, definition, defaults, patterns)?;
            return with_assertions(site, definition);
        }
        Some(check_definition::Kind::Dns(dns)) => {
            let site = dns_site(dns, definition, defaults)?;
            return with_assertions(site, definition);
        }
        Some(check_definition::Kind::Grpc(grpc)) => {
            let site = grpc_site(grpc, definition, defaults)?;
            return with_assertions(site, definition);
        }
        Some(check_definition::Kind::Heartbeat(_)) => {
            return Err(DefinitionError::new(
                "check.kind",
                "is heartbeat: no agent runs it (jobs ping a collector's heartbeat listener)",
            ));
        }
        Some(check_definition::Kind::Icmp(icmp)) => {
            let site = icmp_site(icmp, definition, defaults)?;
            return with_assertions(site, definition);
        }
        Some(check_definition::Kind::Websocket(ws)) => {
            let site = websocket_site(ws, definition, defaults, patterns)?;
            return with_assertions(site, definition);
        }
        Some(
            kind @ (check_definition::Kind::Process(_)
            | check_definition::Kind::Systemd(_)
            | check_definition::Kind::File(_)
            | check_definition::Kind::Disk(_)),
        ) => {
            let probe = super::host::probe(kind, patterns).expect("a host kind")?;
            let (_, target, method) = super::host::kind_of(kind).expect("a host kind");
            let site = plain_site(Probe::Host(probe), &target, method, definition, defaults)?;
            return with_assertions(site, definition);
        }
        None => {
            return Err(DefinitionError::new("check.kind", MISSING_KIND));
        }
    };
    let optional = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let config = SiteConfig {
        url: http.url.clone(),
        method: if http.method.is_empty() {
            "GET".to_owned()
        } else {
            http.method.clone()
        },
        headers: request_headers(http)?,
        body: http.body.clone(),
        expected_status: http
            .expected_status
            .iter()
            .map(|s| StatusSpec::Text(s.clone()))
            .collect(),
        regex: optional(&http.regex),
        regex_absent: optional(&http.regex_absent),
        timeout_seconds: (timeout > 0.0).then_some(timeout),
        interval_seconds: Some(u64::from(interval_seconds(definition))),
        follow_redirects: http.follow_redirects.unwrap_or(true),
        max_redirects: http.max_redirects.map_or(10, |n| n as usize),
        verify_tls: http.verify_tls.unwrap_or(true),
        max_body_bytes: http.max_body_bytes,
    };
    let site =
        Site::from_config_sharing("check.http", &config, defaults, patterns).map_err(|error| {
            match error {
                ConfigError::Field { field, message } => DefinitionError { field, message },
                other => DefinitionError::new("check.http", other.to_string()),
            }
        })?;
    with_assertions(site, definition)
}

/// The headers an HTTP check sends: `headers` and `secret_headers` together, a name
/// in both refused. A secret value is never part of an error.
fn request_headers(http: &HttpCheck) -> Result<BTreeMap<String, String>, DefinitionError> {
    let mut headers: BTreeMap<String, String> = http
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, value) in &http.secret_headers {
        if http
            .headers
            .keys()
            .any(|plain| plain.eq_ignore_ascii_case(name))
        {
            return Err(DefinitionError::new(
                "check.http.secret_headers",
                format!(
                    "names `{name}`, which `check.http.headers` names too: keep it in one of them"
                ),
            ));
        }
        if value == crate::redact::SECRET {
            return Err(DefinitionError::new(
                "check.http.secret_headers",
                format!(
                    "`{name}` is `{}` (hidden): give its value (an update keeps a stored value sent as `{}`)",
                    crate::redact::SECRET,
                    crate::redact::SECRET
                ),
            ));
        }
        if http::header::HeaderValue::from_str(value).is_err() {
            return Err(DefinitionError::new(
                "check.http.secret_headers",
                format!("the value of `{name}` is not a valid header value (visible ASCII only)"),
            ));
        }
        headers.insert(name.clone(), value.clone());
    }
    Ok(headers)
}

/// A site of a probe other than HTTP: its URL names what it checks; the HTTP fields
/// keep their defaults and go unused.
fn plain_site(
    probe: Probe,
    url: &str,
    method: &'static str,
    definition: &CheckDefinition,
    defaults: &ProbeDefaults,
) -> Result<Site, DefinitionError> {
    let url = url::Url::parse(url).map_err(|e| {
        DefinitionError::new("check.kind", format!("`{url}` does not form a URL: {e}"))
    })?;
    let timeout = if definition.timeout_seconds > 0.0 {
        definition.timeout_seconds
    } else {
        defaults.timeout_seconds
    };
    Ok(Site {
        probe,
        url,
        method: http::Method::from_bytes(method.as_bytes()).expect("TCP and DNS are tokens"),
        headers: http::header::HeaderMap::new(),
        body: None,
        expected_status: Vec::new(),
        regex: None,
        regex_absent: None,
        timeout: Duration::from_secs_f64(timeout),
        interval: Duration::from_secs(u64::from(interval_seconds(definition))),
        max_redirects: 0,
        verify_tls: true,
        max_body_bytes: defaults.max_body_bytes,
        max_matched_chars: defaults.max_matched_chars,
        max_response_time: None,
        min_tls_days_left: None,
        json: Vec::new(),
        check: None,
    })
}

/// What results of a gRPC check show as their URL: `grpc://host:port/service`
/// (`grpcs://` over TLS).
pub fn grpc_url(grpc: &GrpcCheck) -> String {
    let scheme = if grpc.tls { "grpcs" } else { "grpc" };
    format!("{scheme}://{}/{}", grpc.address, grpc.service)
}

/// Whether `address` is `host:port` with a port from 1.
fn host_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

fn grpc_site(
    grpc: &GrpcCheck,
    definition: &CheckDefinition,
    defaults: &ProbeDefaults,
) -> Result<Site, DefinitionError> {
    if !host_port(&grpc.address) {
        return Err(DefinitionError::new(
            "check.grpc.address",
            format!(
                "`{}` is not host:port (e.g. api.example:443 or 127.0.0.1:50051)",
                grpc.address
            ),
        ));
    }
    let service_ok = grpc.service.len() <= 255
        && grpc
            .service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if !service_ok {
        return Err(DefinitionError::new(
            "check.grpc.service",
            format!(
                "`{}` is not a gRPC service name (letters, digits, `.`, `_`, `-`, `/`; e.g. grpc.health.v1.Health or my.pkg.Orders)",
                grpc.service.chars().take(80).collect::<String>()
            ),
        ));
    }
    let ca_pem = (!grpc.ca_pem.is_empty()).then(|| grpc.ca_pem.clone());
    if let Some(pem) = &ca_pem {
        if !grpc.tls {
            return Err(DefinitionError::new(
                "check.grpc.ca_pem",
                "is set without `tls`: set tls = true, or remove the CA",
            ));
        }
        if pem.len() > 64 * 1024 || crate::tls::first_certificate(pem).is_none() {
            return Err(DefinitionError::new(
                "check.grpc.ca_pem",
                "holds no PEM certificate (at most 64 KiB): paste the CA's -----BEGIN CERTIFICATE----- block",
            ));
        }
    }
    let expected_health = match grpc.expected_health.trim() {
        "" => "SERVING".to_owned(),
        known @ ("SERVING" | "NOT_SERVING" | "UNKNOWN") => known.to_owned(),
        other => {
            return Err(DefinitionError::new(
                "check.grpc.expected_health",
                format!(
                    "is `{}`: use SERVING (the default), NOT_SERVING or UNKNOWN",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    };
    let client_certificate = match grpc.client_certificate.trim() {
        "" => None,
        name => {
            if !grpc.tls {
                return Err(DefinitionError::new(
                    "check.grpc.client_certificate",
                    "is set without `tls`: set tls = true, or remove the client certificate",
                ));
            }
            validate_id(name).map_err(|_| {
                DefinitionError::new(
                    "check.grpc.client_certificate",
                    format!(
                        "`{}` is not a certificate name: use 1 to {MAX_ID_LEN} lowercase letters, digits and `-` (the agent reads NAME.pem and NAME-key.pem from its remote_checks.client_certificates_dir)",
                        name.chars().take(80).collect::<String>()
                    ),
                )
            })?;
            Some(name.to_owned())
        }
    };
    let probe = Probe::Grpc {
        address: grpc.address.clone(),
        service: grpc.service.clone(),
        tls: grpc.tls,
        ca_pem,
        expected_health,
        client_certificate,
    };
    plain_site(probe, &grpc_url(grpc), "GRPC", definition, defaults)
}

/// Most bytes a WebSocket check sends.
pub const MAX_WEBSOCKET_SEND: usize = 4096;

fn websocket_site(
    ws: &WebSocketCheck,
    definition: &CheckDefinition,
    defaults: &ProbeDefaults,
    patterns: &mut Patterns,
) -> Result<Site, DefinitionError> {
    let url_ok = url::Url::parse(&ws.url)
        .is_ok_and(|u| matches!(u.scheme(), "ws" | "wss") && u.host_str().is_some());
    if !url_ok {
        return Err(DefinitionError::new(
            "check.websocket.url",
            format!(
                "`{}` is not a ws:// or wss:// URL (e.g. wss://chat.example/socket)",
                ws.url.chars().take(200).collect::<String>()
            ),
        ));
    }
    if ws.send.len() > MAX_WEBSOCKET_SEND {
        return Err(DefinitionError::new(
            "check.websocket.send",
            format!(
                "is {} bytes: send at most {MAX_WEBSOCKET_SEND}",
                ws.send.len()
            ),
        ));
    }
    let expect = (!ws.expect.is_empty())
        .then(|| {
            patterns.get(&ws.expect).map_err(|e| {
                DefinitionError::new(
                    "check.websocket.expect",
                    format!("is not a valid regex: {e}"),
                )
            })
        })
        .transpose()?;
    let probe = Probe::WebSocket {
        send: ws.send.clone(),
        expect,
    };
    plain_site(probe, &ws.url, "WS", definition, defaults)
}

/// What results of an ICMP check of `host` show as their URL: `icmp://host`, an IPv6
/// address in brackets (`icmp://[2001:db8::1]`).
pub fn icmp_url(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => format!("icmp://[{ip}]"),
        Err(_) => format!("icmp://{host}"),
    }
}

/// Most echo requests in one run.
pub const MAX_ICMP_COUNT: u32 = 20;

fn icmp_site(
    icmp: &IcmpCheck,
    definition: &CheckDefinition,
    defaults: &ProbeDefaults,
) -> Result<Site, DefinitionError> {
    let host_ok = icmp.host.parse::<std::net::Ipv6Addr>().is_ok()
        || (!icmp.host.is_empty()
            && icmp.host.len() <= 253
            && icmp
                .host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c)));
    if !host_ok {
        return Err(DefinitionError::new(
            "check.icmp.host",
            format!(
                "`{}` is not a host name or an IPv4 or IPv6 address (e.g. gateway.example, 192.0.2.1 or 2001:db8::1)",
                icmp.host.chars().take(80).collect::<String>()
            ),
        ));
    }
    let count = if icmp.count == 0 { 3 } else { icmp.count };
    if count > MAX_ICMP_COUNT {
        return Err(DefinitionError::new(
            "check.icmp.count",
            format!("is {count}: send 1 to {MAX_ICMP_COUNT} echo requests per run"),
        ));
    }
    let interval_ms = if icmp.interval_ms == 0 {
        200
    } else {
        icmp.interval_ms
    };
    if !(10..=5000).contains(&interval_ms) {
        return Err(DefinitionError::new(
            "check.icmp.interval_ms",
            format!("is {interval_ms}: use 10 to 5000 ms between two requests"),
        ));
    }
    if let Some(loss) = icmp.max_loss_percent
        && !(0.0..=100.0).contains(&loss)
    {
        return Err(DefinitionError::new(
            "check.icmp.max_loss_percent",
            format!("is {loss}: use 0 to 100"),
        ));
    }
    let probe = Probe::Icmp {
        host: icmp.host.clone(),
        count,
        interval: Duration::from_millis(u64::from(interval_ms)),
        max_loss_percent: icmp.max_loss_percent,
    };
    plain_site(probe, &icmp_url(&icmp.host), "ICMP", definition, defaults)
}

fn tcp_site(
    tcp: &TcpCheck,
    definition: &CheckDefinition,
    defaults: &ProbeDefaults,
    patterns: &mut Patterns,
) -> Result<Site, DefinitionError> {
    if !host_port(&tcp.address) {
        return Err(DefinitionError::new(
            "check.tcp.address",
            format!(
                "`{}` is not host:port (e.g. db.example:5432 or [2001:db8::1]:22)",
                tcp.address
            ),
        ));
    }
    let expect = (!tcp.expect.is_empty())
        .then(|| {
            patterns.get(&tcp.expect).map_err(|e| {
                DefinitionError::new("check.tcp.expect", format!("is not a valid regex: {e}"))
            })
        })
        .transpose()?;
    let probe = Probe::Tcp {
        address: tcp.address.clone(),
        send: tcp.send.clone().into_bytes(),
        expect,
    };
    let url = format!("tcp://{}", tcp.address);
    plain_site(probe, &url, "TCP", definition, defaults)
}

fn dns_site(
    dns: &DnsCheck,
    definition: &CheckDefinition,
    defaults: &ProbeDefaults,
) -> Result<Site, DefinitionError> {
    let name = dns.name.trim_end_matches('.');
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(DefinitionError::new(
            "check.dns.name",
            format!(
                "`{}` is not a host name (letters, digits, `-` and dots)",
                dns.name
            ),
        ));
    }
    let expected = dns
        .expected_addresses
        .iter()
        .map(|text| {
            text.parse::<std::net::IpAddr>().map_err(|_| {
                DefinitionError::new(
                    "check.dns.expected_addresses",
                    format!("`{text}` is not an IPv4 or IPv6 address"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let probe = Probe::Dns {
        name: name.to_owned(),
        expected,
    };
    let url = format!("dns://{name}");
    plain_site(probe, &url, "DNS", definition, defaults)
}

/// Adds the definition's assertions to `site` and names the check on it.
fn with_assertions(mut site: Site, definition: &CheckDefinition) -> Result<Site, DefinitionError> {
    if let Some(assertions) = &definition.assertions {
        if let Some(ms) = assertions.max_response_time_ms {
            if !(ms.is_finite() && ms > 0.0) {
                return Err(DefinitionError::new(
                    "check.assertions.max_response_time_ms",
                    "must be a positive number of milliseconds",
                ));
            }
            site.max_response_time = Some(Duration::from_secs_f64(ms / 1000.0));
        }
        site.min_tls_days_left = assertions.min_tls_days_left;
        if !assertions.json.is_empty() && !matches!(site.probe, Probe::Http) {
            return Err(DefinitionError::new(
                "check.assertions.json",
                "applies to http checks only (a tcp or dns check has no body)",
            ));
        }
        site.json = assertions
            .json
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                JsonRule::parse(rule).map_err(|error| {
                    DefinitionError::new(&format!("check.assertions.json[{i}]"), error.to_string())
                })
            })
            .collect::<Result<_, _>>()?;
    }
    site.check = Some(CheckRef {
        id: definition.id.clone(),
        version: definition.version,
    });
    Ok(site)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::HttpCheck;

    fn http(url: &str) -> CheckDefinition {
        CheckDefinition {
            id: "shop-home".into(),
            version: 3,
            kind: Some(check_definition::Kind::Http(HttpCheck {
                url: url.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn error(definition: &CheckDefinition) -> String {
        site_from_definition(
            definition,
            &ProbeDefaults::default(),
            &mut Patterns::default(),
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn a_definition_becomes_a_site_that_names_its_check() {
        let mut definition = http("https://shop.example/health");
        definition.interval_seconds = 15;
        let site = site_from_definition(
            &definition,
            &ProbeDefaults::default(),
            &mut Patterns::default(),
        )
        .unwrap();
        assert_eq!(site.url.as_str(), "https://shop.example/health");
        assert_eq!(site.interval, std::time::Duration::from_secs(15));
        assert_eq!(site.expected_status, vec![200..=299]);
        assert_eq!(
            site.check,
            Some(CheckRef {
                id: "shop-home".into(),
                version: 3
            })
        );
    }

    #[test]
    fn bad_definitions_name_the_field_and_the_fix() {
        assert_eq!(
            error(&http("ftp://x")),
            "`check.http.url` `ftp://x` is not an http:// or https:// URL"
        );
        let mut no_kind = http("https://a.example/");
        no_kind.kind = None;
        assert_eq!(error(&no_kind), format!("`check.kind` {MISSING_KIND}"));
        let mut bad_id = http("https://a.example/");
        bad_id.id = "Shop Home".into();
        assert_eq!(
            error(&bad_id),
            "`check.id` `Shop Home` is not a slug: use 1 to 63 lowercase letters, digits and `-`, starting with a letter (e.g. `shop-home`)"
        );
        let mut bad_regex = http("https://a.example/");
        if let Some(check_definition::Kind::Http(h)) = &mut bad_regex.kind {
            h.regex = "(unclosed".into();
        }
        assert!(
            error(&bad_regex).starts_with("`check.http.regex` is not a valid regex: "),
            "{}",
            error(&bad_regex)
        );
    }
}
