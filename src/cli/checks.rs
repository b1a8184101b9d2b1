//! `fleetmon checks`: list, show, add, edit, rm, pause, resume and apply central checks
//! through the collector's `Checks` service.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use fleetmon::pb::checks_client::ChecksClient;
use fleetmon::pb::{
    CheckDefinition, CheckRef, CheckStatus, CreateCheckRequest, DeleteCheckRequest,
    ListChecksRequest, UpdateCheckRequest,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::table::{ago, render};
use super::{ApplyArgs, Connection};
use fleetmon::check_secrets::{has_secrets, masked};
use fleetmon::checks::heartbeat::Schedule;
use fleetmon::checks::spec::{CheckSpec, JsonSpec, StatusText, parse_file};

/// The `checks` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ChecksCommand {
    /// Every check with its state and how many selected agents applied it.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// One check: its definition and, per assigned agent, the version applied and the last result.
    Show {
        /// The check id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Create a check.
    Add {
        /// The check id (lowercase letters, digits, `-`).
        id: String,
        #[command(flatten)]
        fields: CheckFlags,
        #[command(flatten)]
        connection: Connection,
    },
    /// Change the given fields of a check; the others keep their values.
    Edit {
        /// The check id.
        id: String,
        #[command(flatten)]
        fields: CheckFlags,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete a check; every agent stops running it.
    Rm {
        /// The check id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Stop running a check everywhere, keeping its definition.
    Pause {
        /// The check id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Run a paused check again.
    Resume {
        /// The check id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// A heartbeat check's new ping token (the old one stops working at once).
    RotateToken {
        /// The check id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Make the checks what a file of `[[checks]]` entries says: prints the changes,
    /// then makes them (with --prune, deletes the checks it does not list).
    Apply(ApplyArgs),
}

/// Fields of a check as flags (`add` needs `--url`, `--address` or `--name`).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct CheckFlags {
    /// http:// or https:// URL: an HTTP check.
    #[arg(long, conflicts_with_all = ["address", "name", "grpc", "heartbeat"])]
    url: Option<String>,
    /// A ws:// or wss:// URL: a WebSocket check (the upgrade; with --send and --expect,
    /// a message and the answer expected).
    #[arg(long, value_name = "URL", conflicts_with_all = ["url", "address", "name", "grpc", "heartbeat", "icmp"])]
    websocket: Option<String>,
    /// A host to ping (a name, or an IPv4 or IPv6 address): an ICMP check.
    #[arg(long, value_name = "HOST", conflicts_with_all = ["address", "name", "grpc", "heartbeat"])]
    icmp: Option<String>,
    /// ICMP: echo requests per run (default 3).
    #[arg(long)]
    count: Option<u32>,
    /// ICMP: the most unanswered requests, in percent, of a passing run (default: one
    /// answer is enough).
    #[arg(long = "max-loss", value_name = "PERCENT")]
    max_loss_percent: Option<f64>,
    /// A heartbeat check: the job pings it every PERIOD (`90s`, `15m`, `1h`, `1d`);
    /// no agent runs it.
    #[arg(long, value_name = "PERIOD", value_parser = whole_seconds, conflicts_with_all = ["address", "name", "grpc", "cron"])]
    heartbeat: Option<u32>,
    /// A heartbeat check whose job runs at the times of a crontab line's five fields
    /// (`'30 2 * * *'`, `@daily`): due at the first of them after its last success.
    #[arg(long, value_name = "EXPRESSION", conflicts_with_all = ["address", "name", "grpc"])]
    cron: Option<String>,
    /// Heartbeat: the IANA time zone --cron is read in (`Europe/Berlin`; default UTC).
    #[arg(long = "time-zone", value_name = "ZONE")]
    time_zone: Option<String>,
    /// Heartbeat: how late a run may be, or how long a started run may take, before
    /// the check is DOWN (`5m`; default 0).
    #[arg(long, value_name = "GRACE", value_parser = whole_seconds)]
    grace: Option<u32>,
    /// host:port of a gRPC server: a health check (grpc.health.v1), passing on SERVING.
    #[arg(long, conflicts_with_all = ["address", "name"])]
    grpc: Option<String>,
    /// gRPC: the service whose health is asked (default: the whole server).
    #[arg(long)]
    service: Option<String>,
    /// gRPC: connect over TLS (the system's CAs verify the server).
    #[arg(long = "grpc-tls")]
    grpc_tls: bool,
    /// gRPC over TLS: a CA file (PEM) to verify the server with instead of the system's.
    #[arg(long = "grpc-ca", value_name = "FILE", requires = "grpc_tls")]
    grpc_ca: Option<std::path::PathBuf>,
    /// gRPC: the health that passes, SERVING (default), NOT_SERVING or UNKNOWN.
    #[arg(long = "expect-health", value_name = "STATUS")]
    expected_health: Option<String>,
    /// gRPC over TLS: present the agent's client certificate NAME (NAME.pem and
    /// NAME-key.pem in its remote_checks.client_certificates_dir).
    #[arg(long = "client-cert", value_name = "NAME", requires = "grpc_tls")]
    client_certificate: Option<String>,
    /// host:port: a TCP check.
    #[arg(long, conflicts_with = "name")]
    address: Option<String>,
    /// TCP: text sent once connected (escapes \r \n are understood).
    #[arg(long)]
    send: Option<String>,
    /// TCP: a pattern the first bytes received must match.
    #[arg(long)]
    expect: Option<String>,
    /// A host name to resolve: a DNS check.
    #[arg(long)]
    name: Option<String>,
    /// A process check on each selected agent's own host: processes with this name (as
    /// `ps -e` shows it) must run.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["url", "address", "name", "grpc", "heartbeat", "icmp", "websocket"])]
    process: Option<String>,
    /// A process check by command line instead: a pattern it must match.
    #[arg(long = "process-cmd", value_name = "REGEX", conflicts_with_all = ["url", "address", "name", "grpc", "heartbeat", "icmp", "websocket", "process"])]
    process_cmd: Option<String>,
    /// Process: the fewest that pass (default 1).
    #[arg(long = "min", value_name = "N")]
    min_instances: Option<u32>,
    /// Process: the most that pass (default: no bound).
    #[arg(long = "max", value_name = "N")]
    max_instances: Option<u32>,
    /// Process: only those of this user (a name or a uid).
    #[arg(long)]
    user: Option<String>,
    /// A systemd unit that must be active on each selected agent's host (nginx.service).
    #[arg(long, value_name = "UNIT", conflicts_with_all = ["url", "address", "name", "grpc", "heartbeat", "icmp", "websocket", "process", "process_cmd"])]
    systemd: Option<String>,
    /// A file on each selected agent's host that must exist (an absolute path).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["url", "address", "name", "grpc", "heartbeat", "icmp", "websocket", "process", "process_cmd", "systemd"])]
    file: Option<String>,
    /// File: the oldest its modification may be (`26h`, `2d`).
    #[arg(long = "max-age", value_name = "AGE", value_parser = whole_seconds)]
    max_age: Option<u32>,
    /// File: the smallest it may be, in bytes.
    #[arg(long = "min-size", value_name = "BYTES")]
    min_size: Option<u64>,
    /// File: the largest it may be, in bytes.
    #[arg(long = "max-size", value_name = "BYTES")]
    max_size: Option<u64>,
    /// A filesystem on each selected agent's host (its mount point) that must have room.
    #[arg(long, value_name = "MOUNT", conflicts_with_all = ["url", "address", "name", "grpc", "heartbeat", "icmp", "websocket", "process", "process_cmd", "systemd", "file"])]
    disk: Option<String>,
    /// Disk: the most space in use, percent.
    #[arg(long = "max-used", value_name = "PERCENT")]
    max_used: Option<f64>,
    /// Disk: the most inodes in use, percent.
    #[arg(long = "max-inodes-used", value_name = "PERCENT")]
    max_inodes_used: Option<f64>,
    /// DNS: addresses the answer must include, comma-separated.
    #[arg(long = "expect-address", value_delimiter = ',')]
    expected_addresses: Option<Vec<String>>,
    /// HTTP method (default GET).
    #[arg(long)]
    method: Option<String>,
    /// Seconds between runs (default 60).
    #[arg(long = "interval")]
    interval_seconds: Option<u32>,
    /// Seconds before a run is abandoned (default 10).
    #[arg(long = "timeout")]
    timeout_seconds: Option<f64>,
    /// Accepted status codes, comma-separated: 200,300-399 (default 2xx).
    #[arg(long = "expect-status", value_delimiter = ',')]
    expected_status: Option<Vec<String>>,
    /// A pattern the body must match.
    #[arg(long)]
    regex: Option<String>,
    /// A pattern the body must not match.
    #[arg(long)]
    regex_absent: Option<String>,
    /// Fail runs slower than this many milliseconds.
    #[arg(long = "max-response-ms")]
    max_response_time_ms: Option<f64>,
    /// A condition on a JSON body, repeatable: 'status == ok', 'queue.depth < 100'.
    #[arg(long = "assert-json", value_parser = JsonSpec::parse)]
    json_assertions: Vec<JsonSpec>,
    /// Fail https runs whose certificate expires within this many days.
    #[arg(long = "min-tls-days")]
    min_tls_days_left: Option<u32>,
    /// Failed runs in a row that make one location DOWN (default 3).
    #[arg(long)]
    failure_threshold: Option<u32>,
    /// Passed runs in a row that make a DOWN location UP again (default 2).
    #[arg(long)]
    success_threshold: Option<u32>,
    /// DOWN locations that make the check DOWN (default: a majority of them).
    #[arg(long)]
    quorum: Option<u32>,
    /// Run on every agent.
    #[arg(long = "all-agents")]
    all_agents: bool,
    /// Run on these agents, comma-separated.
    #[arg(long, value_delimiter = ',')]
    agents: Option<Vec<String>>,
    /// Run on agents with these labels: location=eu-west,role=edge.
    #[arg(long, value_delimiter = ',', value_parser = parse_label)]
    labels: Option<Vec<(String, String)>>,
}

/// A `--labels` item that is not `key=value`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a label: write key=value")]
pub(crate) struct LabelError(String);

pub(crate) fn parse_label(text: &str) -> Result<(String, String), LabelError> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| LabelError(text.to_owned()))
}

impl CheckFlags {
    /// `spec` with every given flag applied.
    fn apply_to(&self, mut spec: CheckSpec) -> anyhow::Result<CheckSpec> {
        if let Some(url) = &self.url {
            spec.kind = "http".to_owned();
            spec.url = url.clone();
        }
        if let Some(address) = &self.address {
            spec.kind = "tcp".to_owned();
            spec.address = address.clone();
        }
        if let Some(address) = &self.grpc {
            spec.kind = "grpc".to_owned();
            spec.address = address.clone();
        }
        if let Some(name) = &self.process {
            spec.kind = "process".to_owned();
            spec.name = name.clone();
            spec.command_regex.clear();
        }
        if let Some(regex) = &self.process_cmd {
            spec.kind = "process".to_owned();
            spec.command_regex = regex.clone();
            spec.name.clear();
        }
        if let Some(min) = self.min_instances {
            spec.min_instances = min;
        }
        if let Some(max) = self.max_instances {
            spec.max_instances = max;
        }
        if let Some(user) = &self.user {
            spec.user = user.clone();
        }
        if let Some(unit) = &self.systemd {
            spec.kind = "systemd".to_owned();
            spec.unit = unit.clone();
        }
        if let Some(path) = &self.file {
            spec.kind = "file".to_owned();
            spec.path = path.clone();
        }
        if let Some(age) = self.max_age {
            spec.max_age_seconds = u64::from(age);
        }
        if let Some(size) = self.min_size {
            spec.min_size_bytes = size;
        }
        if let Some(size) = self.max_size {
            spec.max_size_bytes = size;
        }
        if let Some(mount) = &self.disk {
            spec.kind = "disk".to_owned();
            spec.mount_point = mount.clone();
        }
        if let Some(percent) = self.max_used {
            spec.max_used_percent = percent;
        }
        if let Some(percent) = self.max_inodes_used {
            spec.max_inodes_used_percent = percent;
        }
        if let Some(url) = &self.websocket {
            spec.kind = "websocket".to_owned();
            spec.url = url.clone();
        }
        if let Some(host) = &self.icmp {
            spec.kind = "icmp".to_owned();
            spec.host = host.clone();
        }
        if let Some(count) = self.count {
            spec.count = count;
        }
        if self.max_loss_percent.is_some() {
            spec.max_loss_percent = self.max_loss_percent;
        }
        if let Some(period) = self.heartbeat {
            spec.kind = "heartbeat".to_owned();
            spec.period_seconds = period;
            spec.cron.clear();
            spec.time_zone.clear();
        }
        if let Some(cron) = &self.cron {
            spec.kind = "heartbeat".to_owned();
            spec.cron = cron.clone();
            spec.period_seconds = 0;
        }
        if let Some(zone) = &self.time_zone {
            spec.time_zone = zone.clone();
        }
        if let Some(grace) = self.grace {
            spec.grace_seconds = grace;
        }
        if let Some(service) = &self.service {
            spec.service = service.clone();
        }
        if self.grpc_tls {
            spec.tls = true;
        }
        if let Some(path) = &self.grpc_ca {
            spec.ca_pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --grpc-ca {}", path.display()))?;
        }
        if let Some(health) = &self.expected_health {
            spec.expected_health = health.to_ascii_uppercase();
        }
        if let Some(name) = &self.client_certificate {
            spec.client_certificate = name.clone();
        }
        if let Some(send) = &self.send {
            spec.send = send.replace("\\r", "\r").replace("\\n", "\n");
        }
        if let Some(expect) = &self.expect {
            spec.expect = expect.clone();
        }
        if let Some(name) = &self.name {
            spec.kind = "dns".to_owned();
            spec.name = name.clone();
        }
        if let Some(addresses) = &self.expected_addresses {
            spec.expected_addresses = addresses.clone();
        }
        if let Some(method) = &self.method {
            spec.method = method.clone();
        }
        if let Some(seconds) = self.interval_seconds {
            spec.interval_seconds = seconds;
        }
        if let Some(seconds) = self.timeout_seconds {
            spec.timeout_seconds = seconds;
        }
        if let Some(codes) = &self.expected_status {
            spec.expected_status = codes.iter().cloned().map(StatusText::Text).collect();
        }
        if let Some(regex) = &self.regex {
            spec.regex = regex.clone();
        }
        if let Some(regex) = &self.regex_absent {
            spec.regex_absent = regex.clone();
        }
        if self.max_response_time_ms.is_some() {
            spec.max_response_time_ms = self.max_response_time_ms;
        }
        if self.min_tls_days_left.is_some() {
            spec.min_tls_days_left = self.min_tls_days_left;
        }
        if !self.json_assertions.is_empty() {
            spec.json = self.json_assertions.clone();
        }
        if let Some(threshold) = self.failure_threshold {
            spec.failure_threshold = threshold;
        }
        if let Some(threshold) = self.success_threshold {
            spec.success_threshold = threshold;
        }
        if let Some(quorum) = self.quorum {
            spec.quorum = quorum;
        }
        if self.all_agents {
            spec.all_agents = true;
        }
        if let Some(agents) = &self.agents {
            spec.agents = agents.clone();
        }
        if let Some(labels) = &self.labels {
            spec.labels = labels.iter().cloned().collect::<BTreeMap<_, _>>();
        }
        Ok(spec)
    }
}

/// A duration flag (`90s`, `15m`, `1h`) in whole seconds.
fn whole_seconds(text: &str) -> Result<u32, String> {
    let duration = super::parse_duration(text).map_err(|e| e.to_string())?;
    u32::try_from(duration.as_secs()).map_err(|_| format!("`{text}` is too long"))
}

async fn client(conn: &Connection) -> anyhow::Result<ChecksClient<Channel>> {
    let channel = fleetmon::tls::connect(&conn.collector, &conn.tls()).await?;
    Ok(ChecksClient::new(channel))
}

/// A failed call as `Checks/Method on URL: CODE: message`.
fn call_error(method: &str, conn: &Connection, status: tonic::Status) -> anyhow::Error {
    super::call_error(&format!("Checks/{method}"), &conn.collector, status)
}

/// Runs one `checks` subcommand.
pub(crate) async fn run(command: ChecksCommand) -> anyhow::Result<()> {
    match command {
        ChecksCommand::List { connection } => list(&connection).await,
        ChecksCommand::Show { id, connection } => {
            let status = get(&connection, id).await?;
            print_status(&connection, &status);
            Ok(())
        }
        ChecksCommand::Add {
            id,
            fields,
            connection,
        } => {
            if fields.url.is_none()
                && fields.address.is_none()
                && fields.name.is_none()
                && fields.grpc.is_none()
                && fields.heartbeat.is_none()
                && fields.cron.is_none()
                && fields.icmp.is_none()
                && fields.process.is_none()
                && fields.process_cmd.is_none()
                && fields.systemd.is_none()
                && fields.file.is_none()
                && fields.disk.is_none()
                && fields.websocket.is_none()
            {
                bail!(
                    "checks add needs --url (an HTTP check), --address (TCP), --name (DNS), --grpc (a gRPC health check), --icmp HOST (a ping), --websocket URL, --process NAME, --process-cmd REGEX, --systemd UNIT, --file PATH or --disk MOUNT (about each agent's own host), or --heartbeat PERIOD or --cron EXPRESSION (a job pings it)"
                );
            }
            let spec = fields.apply_to(CheckSpec {
                id,
                kind: "http".to_owned(),
                ..CheckSpec::default()
            })?;
            let status = create(
                &connection,
                spec.to_definition().map_err(anyhow::Error::new)?,
            )
            .await?;
            print_status(&connection, &status);
            Ok(())
        }
        ChecksCommand::Edit {
            id,
            fields,
            connection,
        } => {
            let current = get(&connection, id)
                .await?
                .check
                .context("the collector answered without a definition")?;
            let spec = fields.apply_to(CheckSpec::from(&current))?;
            let status = update(
                &connection,
                spec.to_definition().map_err(anyhow::Error::new)?,
                current.version,
            )
            .await?;
            print_status(&connection, &status);
            Ok(())
        }
        ChecksCommand::Rm { id, connection } => {
            delete(&connection, id.clone()).await?;
            if connection.json {
                println!("{}", json!({ "deleted": id }));
            } else {
                println!("deleted {id}");
            }
            Ok(())
        }
        ChecksCommand::Pause { id, connection } => {
            let status = client(&connection)
                .await?
                .pause_check(CheckRef { id })
                .await
                .map_err(|s| call_error("PauseCheck", &connection, s))?
                .into_inner();
            print_status(&connection, &status);
            Ok(())
        }
        ChecksCommand::Resume { id, connection } => {
            let status = client(&connection)
                .await?
                .resume_check(CheckRef { id })
                .await
                .map_err(|s| call_error("ResumeCheck", &connection, s))?
                .into_inner();
            print_status(&connection, &status);
            Ok(())
        }
        ChecksCommand::RotateToken { id, connection } => {
            let status = client(&connection)
                .await?
                .rotate_ping_token(CheckRef { id })
                .await
                .map_err(|s| call_error("RotatePingToken", &connection, s))?
                .into_inner();
            print_status(&connection, &status);
            Ok(())
        }
        ChecksCommand::Apply(ApplyArgs {
            file,
            dry_run,
            prune,
            connection,
        }) => apply(&connection, &file, dry_run, prune).await,
    }
}

async fn get(conn: &Connection, id: String) -> anyhow::Result<CheckStatus> {
    Ok(client(conn)
        .await?
        .get_check(CheckRef { id })
        .await
        .map_err(|s| call_error("GetCheck", conn, s))?
        .into_inner())
}

async fn delete(conn: &Connection, id: String) -> anyhow::Result<()> {
    client(conn)
        .await?
        .delete_check(DeleteCheckRequest {
            id,
            expected_version: 0,
        })
        .await
        .map_err(|s| call_error("DeleteCheck", conn, s))?;
    Ok(())
}

async fn create(conn: &Connection, check: CheckDefinition) -> anyhow::Result<CheckStatus> {
    Ok(client(conn)
        .await?
        .create_check(CreateCheckRequest { check: Some(check) })
        .await
        .map_err(|s| call_error("CreateCheck", conn, s))?
        .into_inner())
}

async fn update(
    conn: &Connection,
    check: CheckDefinition,
    expected_version: u64,
) -> anyhow::Result<CheckStatus> {
    Ok(client(conn)
        .await?
        .update_check(UpdateCheckRequest {
            check: Some(check),
            expected_version,
        })
        .await
        .map_err(|s| call_error("UpdateCheck", conn, s))?
        .into_inner())
}

/// A new heartbeat's ping URL, said once, with how to get another; `None` when the
/// answer carries no ping token.
fn ping_url(status: &CheckStatus) -> Option<String> {
    let id = &status.check.as_ref()?.id;
    (!status.ping_token.is_empty()).then(|| {
        format!(
            "https://COLLECTOR:7404/ping/{}  (shown once: keep it; `fleetmon checks rotate-token {id}` makes a new one)",
            status.ping_token
        )
    })
}

fn target(check: &CheckDefinition) -> String {
    CheckSpec::from(check).target()
}

fn assignment(check: &CheckDefinition) -> String {
    let spec = CheckSpec::from(check);
    let mut parts = Vec::new();
    if spec.all_agents {
        parts.push("all".to_owned());
    }
    parts.extend(spec.agents);
    parts.extend(spec.labels.iter().map(|(k, v)| format!("{k}={v}")));
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(",")
    }
}

async fn list(conn: &Connection) -> anyhow::Result<()> {
    let checks = client(conn)
        .await?
        .list_checks(ListChecksRequest {})
        .await
        .map_err(|s| call_error("ListChecks", conn, s))?
        .into_inner()
        .checks;
    if conn.json {
        let list: Vec<Value> = checks.iter().map(status_json).collect();
        println!("{}", Value::Array(list));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = checks
        .iter()
        .filter_map(|status| {
            let check = status.check.as_ref()?;
            let applied = status
                .agents
                .iter()
                .filter(|a| a.applied_version == check.version && a.error.is_empty())
                .count();
            Some(vec![
                check.id.clone(),
                if check.paused { "paused" } else { "active" }.to_owned(),
                check.version.to_string(),
                every(check),
                target(check),
                assignment(check),
                format!("{applied}/{}", status.agents.len()),
            ])
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "CHECK", "STATE", "VERSION", "EVERY", "TARGET", "ASSIGNED", "APPLIED"
            ],
            &rows
        )
    );
    Ok(())
}

/// How often a check runs (`60 s`), or a heartbeat's job (`60 s`, `30 2 * * * Europe/Berlin`).
fn every(check: &CheckDefinition) -> String {
    match fleetmon::checks::heartbeat::of(check).map(Schedule::of) {
        Some(Ok(Schedule::Cron {
            expression,
            zone_name,
            ..
        })) => format!("{expression} {zone_name}"),
        _ => format!("{} s", fleetmon::checks::interval_seconds(check)),
    }
}

fn status_json(status: &CheckStatus) -> Value {
    let check = status.check.clone().unwrap_or_default();
    json!({
        "id": check.id,
        "version": check.version,
        "paused": check.paused,
        "definition": serde_json::to_value(CheckSpec::from(&check)).unwrap_or_default(),
        "note": status.note,
        "ping_token": (!status.ping_token.is_empty()).then_some(&status.ping_token),
        "agents": status.agents.iter().map(|a| json!({
            "agent_id": a.agent_id,
            "connected": a.connected,
            "applied_version": a.applied_version,
            "error": a.error,
            "last_result": a.last_result.as_ref().map(|r| json!({
                "ok": r.ok,
                "status_code": r.status_code,
                "response_time_ms": r.response_time_ms,
                "error_message": r.error_message,
                "checked_at": super::table::rfc3339(r.checked_at),
                "check_version": r.check_version,
            })),
        })).collect::<Vec<_>>(),
    })
}

fn print_status(conn: &Connection, status: &CheckStatus) {
    if conn.json {
        println!("{}", status_json(status));
        return;
    }
    let Some(check) = &status.check else {
        return;
    };
    println!(
        "check {}  version {}  {}  every {}",
        check.id,
        check.version,
        if check.paused { "PAUSED" } else { "active" },
        every(check)
    );
    println!("  target    {}", target(check));
    if let Some(beat) = fleetmon::checks::heartbeat::of(check) {
        let schedule = Schedule::of(beat).map_or_else(|e| e.to_string(), |s| s.to_string());
        println!("  heartbeat {schedule}, grace {} s", beat.grace_seconds);
        println!("  pinged by {} (fleetmon-agent ping)", assignment(check));
    } else {
        println!("  assigned  {}", assignment(check));
    }
    if let Some(url) = ping_url(status) {
        println!("  ping      {url}");
    }
    if !status.note.is_empty() {
        println!("  note      {}", status.note);
    }
    let rows: Vec<Vec<String>> = status
        .agents
        .iter()
        .map(|a| {
            let (result, when) = match &a.last_result {
                Some(r) if r.ok => (
                    format!(
                        "ok {} {:.0} ms",
                        r.status_code.unwrap_or(0),
                        r.response_time_ms
                    ),
                    ago(r.checked_at),
                ),
                Some(r) => (format!("FAIL {}", r.error_message), ago(r.checked_at)),
                None => ("-".to_owned(), "-".to_owned()),
            };
            vec![
                a.agent_id.clone(),
                if a.connected { "yes" } else { "no" }.to_owned(),
                if a.applied_version == 0 {
                    "-".to_owned()
                } else {
                    a.applied_version.to_string()
                },
                result,
                when,
                a.error.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print!(
            "{}",
            render(
                &[
                    "AGENT",
                    "CONNECTED",
                    "APPLIED",
                    "LAST RESULT",
                    "WHEN",
                    "ERROR"
                ],
                &rows
            )
        );
    }
}

/// What `apply` will do to one check.
#[derive(Debug, PartialEq)]
enum Change {
    Create(CheckDefinition),
    Update(CheckDefinition, u64),
    /// Equal but for secret header values, which only the collector can compare.
    Compare(CheckDefinition, u64),
    Delete(String),
}

async fn apply(
    conn: &Connection,
    file: &std::path::Path,
    dry_run: bool,
    prune: bool,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let wanted = parse_file(&file.display().to_string(), &text).map_err(anyhow::Error::new)?;
    let current: BTreeMap<String, CheckDefinition> = client(conn)
        .await?
        .list_checks(ListChecksRequest {})
        .await
        .map_err(|s| call_error("ListChecks", conn, s))?
        .into_inner()
        .checks
        .into_iter()
        .filter_map(|s| s.check)
        .map(|c| (c.id.clone(), c))
        .collect();
    let mut changes = Vec::new();
    for spec in &wanted {
        let definition = spec.to_definition().map_err(anyhow::Error::new)?;
        match current.get(&spec.id) {
            None => changes.push(Change::Create(definition)),
            Some(existing) => {
                let normalized = CheckSpec::from(existing)
                    .to_definition()
                    .map_err(anyhow::Error::new)?;
                if masked(normalized) != masked(definition.clone()) {
                    changes.push(Change::Update(definition, existing.version));
                } else if has_secrets(&definition) {
                    changes.push(Change::Compare(definition, existing.version));
                }
            }
        }
    }
    if prune {
        for id in current.keys() {
            if !wanted.iter().any(|w| &w.id == id) {
                changes.push(Change::Delete(id.clone()));
            }
        }
    }
    let unchanged = wanted.len()
        - changes
            .iter()
            .filter(|c| !matches!(c, Change::Delete(_)))
            .count();
    let compared = changes
        .iter()
        .filter(|c| matches!(c, Change::Compare(..)))
        .count();
    for change in &changes {
        match change {
            Change::Create(c) => println!("+ {} ({})", c.id, target(c)),
            Change::Update(c, _) => println!("~ {} ({})", c.id, target(c)),
            Change::Compare(c, _) => println!(
                "? {} ({}): secret header values, compared by the collector",
                c.id,
                target(c)
            ),
            Change::Delete(id) => println!("- {id}"),
        }
    }
    println!(
        "{} to create, {} to update, {} to delete, {unchanged} unchanged{}{}",
        changes
            .iter()
            .filter(|c| matches!(c, Change::Create(_)))
            .count(),
        changes
            .iter()
            .filter(|c| matches!(c, Change::Update(..)))
            .count(),
        changes
            .iter()
            .filter(|c| matches!(c, Change::Delete(_)))
            .count(),
        if compared > 0 {
            format!(", {compared} to compare")
        } else {
            String::new()
        },
        if dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    );
    if dry_run {
        return Ok(());
    }
    for change in changes {
        match change {
            Change::Create(c) => {
                let id = c.id.clone();
                if let Some(url) = ping_url(&create(conn, c).await?) {
                    println!("{id}: ping {url}");
                }
            }
            Change::Update(c, version) => {
                update(conn, c, version).await?;
            }
            Change::Compare(c, version) => {
                let id = c.id.clone();
                let now = update(conn, c, version)
                    .await?
                    .check
                    .map_or(version, |c| c.version);
                if now == version {
                    println!("= {id}: secret header values unchanged");
                } else {
                    println!("~ {id}: secret header values changed (version {now})");
                }
            }
            Change::Delete(id) => delete(conn, id).await?,
        }
    }
    Ok(())
}
