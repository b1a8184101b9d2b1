//! A central check as an operator writes it: the entries of a `checks.toml` for
//! `fleetmon checks apply`, the flags of `checks add` and `checks edit`, and the JSON of
//! `--json`. Converted to and from the wire `CheckDefinition`; the collector validates
//! it with [`super::site_from_definition`].

use std::collections::BTreeMap;

use super::DefinitionError;
use crate::pb::{
    Alerting, Assertions, Assignment, CheckDefinition, DiskCheck, DnsCheck, FileCheck, GrpcCheck,
    HeartbeatCheck, HttpCheck, IcmpCheck, JsonAssertion, ProcessCheck, SystemdCheck, TcpCheck,
    WebSocketCheck, check_definition,
};
use serde::{Deserialize, Serialize};

/// A file of checks for `fleetmon checks apply -f`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksFile {
    /// Every check the fleet should run.
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
}

/// One check: `id`, and `url` (kind `http`, the default), `address` (kind `tcp`) or
/// `name` (kind `dns`); every other field may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// A slug: lowercase letters, digits and `-`.
    pub id: String,
    /// `http`, `tcp`, `dns`, `grpc`, `icmp`, `websocket` or `heartbeat`.
    #[serde(default = "http_kind")]
    pub kind: String,
    /// http:// or https:// URL (kind `http`); ws:// or wss:// (kind `websocket`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// host:port (kinds `tcp` and `grpc`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The service whose health is asked (kind `grpc`; empty: the whole server).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// With `tls` (kind `grpc`): the CA (PEM) the server's certificate must chain to,
    /// instead of the system's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_pem: String,
    /// Over TLS (kind `grpc`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls: bool,
    /// The health that passes (kind `grpc`): SERVING (default), NOT_SERVING or UNKNOWN.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expected_health: String,
    /// With `tls` (kind `grpc`): the client certificate the agent presents, by name,
    /// from its `remote_checks.client_certificates_dir`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    /// Sent once connected (kind `tcp`; kind `websocket`: a text message).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub send: String,
    /// A pattern the first bytes received must match (kind `tcp`; kind `websocket`: the
    /// first message back).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expect: String,
    /// The name to resolve (kind `dns`); the process name, as `ps -e` shows it (kind
    /// `process`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Addresses the answer must include (kind `dns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_addresses: Vec<String>,
    /// The host pinged: a name, or an IPv4 or IPv6 address (kind `icmp`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Echo requests per run (kind `icmp`; default 3).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub count: u32,
    /// Milliseconds between two echo requests (kind `icmp`; default 200).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub interval_ms: u32,
    /// The most unanswered requests, in percent, of a passing run (kind `icmp`;
    /// default: one answer is enough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_loss_percent: Option<f64>,
    /// A pattern of the command line (kind `process`, instead of `name`: the process
    /// name as `ps -e` shows it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command_regex: String,
    /// The fewest matching processes that pass (kind `process`; default 1).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub min_instances: u32,
    /// The most matching processes that pass (kind `process`; default: no bound).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub max_instances: u32,
    /// Only processes of this user, a name or uid (kind `process`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// A systemd unit that must be active (kind `systemd`), e.g. `nginx.service`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// An absolute path (kind `file`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// The oldest the file's modification may be (kind `file`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub max_age_seconds: u64,
    /// The smallest the file may be (kind `file`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub min_size_bytes: u64,
    /// The largest the file may be (kind `file`; default: no bound).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub max_size_bytes: u64,
    /// An absolute path: the filesystem holding it (kind `disk`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mount_point: String,
    /// The most space in use, percent (kind `disk`).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub max_used_percent: f64,
    /// The most inodes in use, percent (kind `disk`).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub max_inodes_used_percent: f64,
    /// Seconds between two runs of the job (kind `heartbeat`).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub period_seconds: u32,
    /// Seconds a run may be late, or take once started (kind `heartbeat`).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub grace_seconds: u32,
    /// Instead of `period_seconds`: when the job runs, a crontab line's five fields
    /// (kind `heartbeat`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cron: String,
    /// The IANA time zone `cron` is read in (kind `heartbeat`; default UTC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    /// GET (default), HEAD, POST, PUT, DELETE, OPTIONS or PATCH (kind `http`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// Request headers (kind `http`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request headers whose values are secrets (kind `http`): stored encrypted, read
    /// back as `•••`. A value may name an environment variable, `${SHOP_TOKEN}`, read
    /// when the file is applied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_headers: BTreeMap<String, String>,
    /// Request body (kind `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `200`, `"200-299"`; default 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_status: Vec<StatusText>,
    /// A pattern the body must match; the matched text is reported (kind `http`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub regex: String,
    /// A pattern the body must not match (kind `http`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub regex_absent: String,
    /// Seconds between runs (default 60).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub interval_seconds: u32,
    /// Seconds before a run is abandoned (default 10).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub timeout_seconds: f64,
    /// Follow redirects (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,
    /// Most redirects followed (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_redirects: Option<u32>,
    /// Verify the server certificate (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_tls: Option<bool>,
    /// Most body bytes read (default the agent's `probes.max_body_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// A run slower than this fails (`slow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_time_ms: Option<f64>,
    /// An https run whose certificate expires within this many days fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tls_days_left: Option<u32>,
    /// Conditions on a JSON body: `{ path = "status", op = "==", value = "ok" }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<JsonSpec>,
    /// Run on every agent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all_agents: bool,
    /// Run on these agents by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// Run on the agents carrying every one of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Assigned but not run.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// Failed runs in a row that make one location DOWN (default 3).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub failure_threshold: u32,
    /// Passed runs in a row that make a DOWN location UP again (default 2).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub success_threshold: u32,
    /// DOWN locations that make the check DOWN (default: a majority).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub quorum: u32,
}

/// One JSON body assertion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSpec {
    /// `status`, `checks[0].state`.
    pub path: String,
    /// `==` (default), `!=`, `<`, `<=`, `>`, `>=`, `exists`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    /// JSON text (`200`, `"ok"`, `true`); a bare word is a string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

impl JsonSpec {
    /// Parses `PATH OP VALUE` as typed on the command line: `status == ok`,
    /// `queue.depth<100`, `checks[0] exists`.
    pub fn parse(text: &str) -> Result<JsonSpec, DefinitionError> {
        let text = text.trim();
        if let Some(path) = text.strip_suffix("exists") {
            return Ok(JsonSpec {
                path: path.trim().to_owned(),
                op: "exists".to_owned(),
                value: String::new(),
            });
        }
        ["==", "!=", "<=", ">=", "<", ">"]
            .iter()
            .find_map(|op| {
                text.split_once(op).map(|(path, value)| JsonSpec {
                    path: path.trim().to_owned(),
                    op: (*op).to_owned(),
                    value: value.trim().to_owned(),
                })
            })
            .ok_or_else(|| {
                DefinitionError::new(
                    "check.assertions.json",
                    format!("`{text}` is not PATH OP VALUE: write e.g. 'status == ok' or 'queue.depth < 100'"),
                )
            })
    }
}

/// A status code as a number or text (`"200-299"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusText {
    /// `200`.
    Code(u16),
    /// `"200-299"`.
    Text(String),
}

impl StatusText {
    fn text(&self) -> String {
        match self {
            StatusText::Code(code) => code.to_string(),
            StatusText::Text(text) => text.clone(),
        }
    }
}

fn http_kind() -> String {
    "http".to_owned()
}
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}
fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}
fn is_false(b: &bool) -> bool {
    !*b
}

impl CheckSpec {
    /// What the check looks at, as it shows in results: the URL, `tcp://address` or
    /// `dns://name`.
    pub fn target(&self) -> String {
        match self.kind.as_str() {
            "tcp" => format!("tcp://{}", self.address),
            "grpc" => super::definition::grpc_url(&GrpcCheck {
                address: self.address.clone(),
                service: self.service.clone(),
                tls: self.tls,
                ..Default::default()
            }),
            "dns" => format!("dns://{}", self.name),
            "heartbeat" => format!("heartbeat://{}", self.id),
            "icmp" => super::definition::icmp_url(&self.host),
            "process" | "systemd" | "file" | "disk" => self
                .to_definition()
                .ok()
                .and_then(|d| d.kind)
                .and_then(|kind| super::host::kind_of(&kind))
                .map(|(_, target, _)| target)
                .unwrap_or_default(),
            _ => self.url.clone(),
        }
    }

    /// The wire definition (version 0: the collector assigns versions).
    pub fn to_definition(&self) -> Result<CheckDefinition, DefinitionError> {
        let kind = match self.kind.as_str() {
            "http" => check_definition::Kind::Http(HttpCheck {
                url: self.url.clone(),
                method: self.method.clone(),
                headers: self.headers.clone().into_iter().collect(),
                secret_headers: self.secret_headers.clone().into_iter().collect(),
                body: self.body.clone(),
                expected_status: self.expected_status.iter().map(StatusText::text).collect(),
                regex: self.regex.clone(),
                regex_absent: self.regex_absent.clone(),
                follow_redirects: self.follow_redirects,
                max_redirects: self.max_redirects,
                verify_tls: self.verify_tls,
                max_body_bytes: self.max_body_bytes,
            }),
            "tcp" => check_definition::Kind::Tcp(TcpCheck {
                address: self.address.clone(),
                send: self.send.clone(),
                expect: self.expect.clone(),
            }),
            "dns" => check_definition::Kind::Dns(DnsCheck {
                name: self.name.clone(),
                expected_addresses: self.expected_addresses.clone(),
            }),
            "grpc" => check_definition::Kind::Grpc(GrpcCheck {
                address: self.address.clone(),
                service: self.service.clone(),
                tls: self.tls,
                ca_pem: self.ca_pem.clone(),
                expected_health: self.expected_health.clone(),
                client_certificate: self.client_certificate.clone(),
            }),
            "process" => check_definition::Kind::Process(ProcessCheck {
                name: self.name.clone(),
                command_regex: self.command_regex.clone(),
                min_instances: self.min_instances,
                max_instances: self.max_instances,
                user: self.user.clone(),
            }),
            "systemd" => check_definition::Kind::Systemd(SystemdCheck {
                unit: self.unit.clone(),
            }),
            "file" => check_definition::Kind::File(FileCheck {
                path: self.path.clone(),
                max_age_seconds: self.max_age_seconds,
                min_size_bytes: self.min_size_bytes,
                max_size_bytes: self.max_size_bytes,
            }),
            "disk" => check_definition::Kind::Disk(DiskCheck {
                mount_point: self.mount_point.clone(),
                max_used_percent: self.max_used_percent,
                max_inodes_used_percent: self.max_inodes_used_percent,
            }),
            "websocket" => check_definition::Kind::Websocket(WebSocketCheck {
                url: self.url.clone(),
                send: self.send.clone(),
                expect: self.expect.clone(),
            }),
            "icmp" => check_definition::Kind::Icmp(IcmpCheck {
                host: self.host.clone(),
                count: self.count,
                interval_ms: self.interval_ms,
                max_loss_percent: self.max_loss_percent,
            }),
            "heartbeat" => check_definition::Kind::Heartbeat(HeartbeatCheck {
                period_seconds: self.period_seconds,
                grace_seconds: self.grace_seconds,
                token_sha256: String::new(),
                cron: self.cron.clone(),
                time_zone: self.time_zone.clone(),
            }),
            other => {
                return Err(DefinitionError::new(
                    "check.kind",
                    format!(
                        "of check `{}`: `{other}` is not one of http, tcp, dns, grpc, icmp, websocket, process, systemd, file, disk, heartbeat",
                        self.id
                    ),
                ));
            }
        };
        let assertions = (self.max_response_time_ms.is_some()
            || self.min_tls_days_left.is_some()
            || !self.json.is_empty())
        .then(|| Assertions {
            max_response_time_ms: self.max_response_time_ms,
            min_tls_days_left: self.min_tls_days_left,
            json: self
                .json
                .iter()
                .map(|j| JsonAssertion {
                    path: j.path.clone(),
                    op: j.op.clone(),
                    value: j.value.clone(),
                })
                .collect(),
        });
        Ok(CheckDefinition {
            id: self.id.clone(),
            version: 0,
            paused: self.paused,
            interval_seconds: self.interval_seconds,
            timeout_seconds: self.timeout_seconds,
            // A heartbeat's: the agents that may ping it (`fleetmon-agent ping`).
            assignment: Some(Assignment {
                all: self.all_agents,
                agents: self.agents.clone(),
                labels: self.labels.clone().into_iter().collect(),
            }),
            kind: Some(kind),
            assertions,
            alerting: (self.failure_threshold > 0 || self.success_threshold > 0 || self.quorum > 0)
                .then_some(Alerting {
                    failure_threshold: self.failure_threshold,
                    success_threshold: self.success_threshold,
                    quorum: self.quorum,
                }),
        })
    }
}

impl From<&CheckDefinition> for CheckSpec {
    fn from(definition: &CheckDefinition) -> Self {
        let assignment = definition.assignment.clone().unwrap_or_default();
        let assertions = definition.assertions.clone().unwrap_or_default();
        let alerting = definition.alerting.unwrap_or_default();
        let mut spec = CheckSpec {
            failure_threshold: alerting.failure_threshold,
            success_threshold: alerting.success_threshold,
            quorum: alerting.quorum,
            id: definition.id.clone(),
            kind: http_kind(),
            paused: definition.paused,
            interval_seconds: definition.interval_seconds,
            timeout_seconds: definition.timeout_seconds,
            all_agents: assignment.all,
            agents: assignment.agents,
            labels: assignment.labels.into_iter().collect(),
            max_response_time_ms: assertions.max_response_time_ms,
            min_tls_days_left: assertions.min_tls_days_left,
            json: assertions
                .json
                .into_iter()
                .map(|j| JsonSpec {
                    path: j.path,
                    op: j.op,
                    value: j.value,
                })
                .collect(),
            ..CheckSpec::default()
        };
        match &definition.kind {
            Some(check_definition::Kind::Http(http)) => {
                spec.url = http.url.clone();
                spec.method = http.method.clone();
                spec.headers = http.headers.clone().into_iter().collect();
                spec.secret_headers = http.secret_headers.clone().into_iter().collect();
                spec.body = http.body.clone();
                spec.expected_status = http
                    .expected_status
                    .iter()
                    .map(|s| StatusText::Text(s.clone()))
                    .collect();
                spec.regex = http.regex.clone();
                spec.regex_absent = http.regex_absent.clone();
                spec.follow_redirects = http.follow_redirects;
                spec.max_redirects = http.max_redirects;
                spec.verify_tls = http.verify_tls;
                spec.max_body_bytes = http.max_body_bytes;
            }
            Some(check_definition::Kind::Tcp(tcp)) => {
                spec.kind = "tcp".to_owned();
                spec.address = tcp.address.clone();
                spec.send = tcp.send.clone();
                spec.expect = tcp.expect.clone();
            }
            Some(check_definition::Kind::Dns(dns)) => {
                spec.kind = "dns".to_owned();
                spec.name = dns.name.clone();
                spec.expected_addresses = dns.expected_addresses.clone();
            }
            Some(check_definition::Kind::Grpc(grpc)) => {
                spec.kind = "grpc".to_owned();
                spec.address = grpc.address.clone();
                spec.service = grpc.service.clone();
                spec.tls = grpc.tls;
                spec.ca_pem = grpc.ca_pem.clone();
                spec.expected_health = grpc.expected_health.clone();
                spec.client_certificate = grpc.client_certificate.clone();
            }
            Some(check_definition::Kind::Websocket(ws)) => {
                spec.kind = "websocket".to_owned();
                spec.url = ws.url.clone();
                spec.send = ws.send.clone();
                spec.expect = ws.expect.clone();
            }
            Some(check_definition::Kind::Icmp(icmp)) => {
                spec.kind = "icmp".to_owned();
                spec.host = icmp.host.clone();
                spec.count = icmp.count;
                spec.interval_ms = icmp.interval_ms;
                spec.max_loss_percent = icmp.max_loss_percent;
            }
            Some(check_definition::Kind::Heartbeat(heartbeat)) => {
                spec.kind = "heartbeat".to_owned();
                spec.period_seconds = heartbeat.period_seconds;
                spec.grace_seconds = heartbeat.grace_seconds;
                spec.cron = heartbeat.cron.clone();
                spec.time_zone = heartbeat.time_zone.clone();
            }
            Some(check_definition::Kind::Process(process)) => {
                spec.kind = "process".to_owned();
                spec.name = process.name.clone();
                spec.command_regex = process.command_regex.clone();
                spec.min_instances = process.min_instances;
                spec.max_instances = process.max_instances;
                spec.user = process.user.clone();
            }
            Some(check_definition::Kind::Systemd(systemd)) => {
                spec.kind = "systemd".to_owned();
                spec.unit = systemd.unit.clone();
            }
            Some(check_definition::Kind::File(file)) => {
                spec.kind = "file".to_owned();
                spec.path = file.path.clone();
                spec.max_age_seconds = file.max_age_seconds;
                spec.min_size_bytes = file.min_size_bytes;
                spec.max_size_bytes = file.max_size_bytes;
            }
            Some(check_definition::Kind::Disk(disk)) => {
                spec.kind = "disk".to_owned();
                spec.mount_point = disk.mount_point.clone();
                spec.max_used_percent = disk.max_used_percent;
                spec.max_inodes_used_percent = disk.max_inodes_used_percent;
            }
            None => spec.kind = "unknown".to_owned(),
        }
        spec
    }
}

/// A `checks.toml` that cannot be applied: the file and what is wrong in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ChecksFileError {
    /// The file.
    pub path: String,
    /// What is wrong, naming the check or the key.
    pub message: String,
}

/// `checks.toml`'s checks, refusing a repeated id.
pub fn parse_file(path: &str, text: &str) -> Result<Vec<CheckSpec>, ChecksFileError> {
    parse_file_with(path, text, |name| std::env::var(name).ok())
}

/// [`parse_file`] reading `${NAME}` in `secret_headers` values from `env`.
pub fn parse_file_with(
    path: &str,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<CheckSpec>, ChecksFileError> {
    let error = |message: String| ChecksFileError {
        path: path.to_owned(),
        message,
    };
    let mut file: ChecksFile = toml::from_str(text).map_err(|e| error(e.to_string()))?;
    let mut seen = std::collections::BTreeSet::new();
    for check in &file.checks {
        if !seen.insert(check.id.as_str()) {
            return Err(error(format!("check `{}` is listed twice", check.id)));
        }
    }
    for check in &mut file.checks {
        for (name, value) in &mut check.secret_headers {
            *value = expand_env(value, &env).map_err(|variable| {
                error(format!(
                    "check `{}`: `secret_headers.{name}` names ${{{variable}}}, which is not set in the environment: export it, or write the value",
                    check.id
                ))
            })?;
        }
    }
    Ok(file.checks)
}

/// `text` with every `${NAME}` (letters, digits, `_`) replaced by `env`'s value;
/// `Err(NAME)` for the first one `env` does not hold.
fn expand_env(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(&rest[..start]);
        if valid {
            out.push_str(&env(name).ok_or_else(|| name.to_owned())?);
        } else {
            out.push_str(&rest[start..start + 3 + end]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_header_values_read_named_environment_variables() {
        let text = r#"
[[checks]]
id = "api"
url = "https://api.example/health"
secret_headers = { Authorization = "Bearer ${API_TOKEN}", X-Literal = "a${not valid}b" }
"#;
        let env = |name: &str| (name == "API_TOKEN").then(|| "s3cret".to_owned());
        let specs = parse_file_with("checks.toml", text, env).unwrap();
        assert_eq!(specs[0].secret_headers["Authorization"], "Bearer s3cret");
        assert_eq!(specs[0].secret_headers["X-Literal"], "a${not valid}b");
        let definition = specs[0].to_definition().unwrap();
        assert_eq!(CheckSpec::from(&definition), specs[0]);

        let error = parse_file_with("checks.toml", text, |_| None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "checks.toml: check `api`: `secret_headers.Authorization` names ${API_TOKEN}, which is not set in the environment: export it, or write the value"
        );
    }

    #[test]
    fn a_spec_survives_the_round_trip_through_the_wire() {
        let text = r#"
[[checks]]
id = "shop-home"
url = "https://shop.example/"
interval_seconds = 30
expected_status = [200, "300-399"]
regex = "Welcome"
labels = { location = "eu-west" }
max_response_time_ms = 800.0
"#;
        let specs = parse_file("checks.toml", text).unwrap();
        let definition = specs[0].to_definition().unwrap();
        let mut back = CheckSpec::from(&definition);
        assert_eq!(
            back.expected_status,
            [
                StatusText::Text("200".into()),
                StatusText::Text("300-399".into())
            ]
        );
        back.expected_status = specs[0].expected_status.clone();
        assert_eq!(back, specs[0]);
    }

    #[test]
    fn the_example_file_parses_and_converts() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/checks.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let specs = parse_file(path, &text).unwrap();
        assert_eq!(specs.len(), 8);
        for spec in &specs {
            let definition = spec.to_definition().unwrap();
            super::super::site_from_definition(
                &definition,
                &Default::default(),
                &mut Default::default(),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", spec.id));
        }
        assert_eq!(specs[2].target(), "tcp://bastion.example:22");
        assert_eq!(specs[4].target(), "process:nginx");
        assert_eq!(specs[5].target(), "file:///var/backups/db.dump");
    }

    #[test]
    fn a_bad_file_names_the_problem() {
        let twice = "[[checks]]\nid = \"a\"\nurl = \"https://a/\"\n[[checks]]\nid = \"a\"\nurl = \"https://b/\"\n";
        assert_eq!(
            parse_file("c.toml", twice).unwrap_err().to_string(),
            "c.toml: check `a` is listed twice"
        );
        let unknown = "[[checks]]\nid = \"a\"\nurl = \"https://a/\"\nintervall = 5\n";
        assert!(
            parse_file("c.toml", unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown field `intervall`"),
        );
    }
}
