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
    /// The fleet's state for Prometheus, on the metrics port at `/metrics/fleet`.
    #[serde(default)]
    pub fleet_metrics: FleetMetricsConfig,
}

/// `/metrics/fleet`: the fleet's current state in the Prometheus text format.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetMetricsConfig {
    /// Serve it (`false`: 404).
    pub enabled: bool,
    /// The most series one scrape returns; those past it are left out and counted in
    /// `fleetmon_fleet_series_dropped`.
    pub max_series: usize,
    /// The oldest a scrape's answer may be: it is rendered from PostgreSQL at most this
    /// often, however many scrapers ask.
    pub refresh_seconds: u64,
}

impl Default for FleetMetricsConfig {
    fn default() -> Self {
        FleetMetricsConfig {
            enabled: true,
            max_series: 100_000,
            refresh_seconds: 5,
        }
    }
}

/// Kafka settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers` for librdkafka.
    pub bootstrap_servers: String,
    /// Consumer group; writers in one group split the partitions between them.
    pub group_id: String,
    /// Static group membership (`group.instance.id`): a stable name, unique among the
    /// group's writers (the packaged unit uses the host name). A writer restarted
    /// under the same name takes its partitions back at once, where an unnamed one
    /// waits for its dead self's session to expire (`session.timeout.ms`, 45 s). A
    /// second writer under the same name fences the first, which stops saying so. A
    /// named writer stopped for good keeps its partitions until the session expires.
    pub instance_id: Option<String>,
    /// Topic of host samples.
    pub host_samples_topic: String,
    /// Topic of site checks.
    pub site_checks_topic: String,
    /// The compacted topic of central check definitions, mirrored into the `checks` table.
    pub checks_topic: String,
    /// The audit topic collectors publish operators' changes to (mirrored into
    /// `audit_log`).
    pub audit_topic: String,
    /// The collectors' credentials topic, whose agent records give each enrolled
    /// agent's labels (mirrored into `agent_labels`, for maintenance windows and
    /// channels that select by label).
    pub credentials_topic: String,
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
    /// Days of host rollups kept per tier (minute, hour, day buckets); older
    /// partitions are dropped.
    pub rollup_retention_days: RollupRetention,
    /// Daily partitions created ahead of today.
    pub partitions_ahead_days: u32,
    /// Host rollups (minute, hour and day buckets) are worked out from the stored rows
    /// about this long after them, and with 60 or more once their minute is over
    /// (docs/HOSTS.md; 0: in each batch's transaction, at the cost of the rollup rows
    /// of every batch). At most 3 600.
    pub host_rollup_delay_seconds: u64,
}

/// The longest `postgres.host_rollup_delay_seconds`.
pub const MAX_HOST_ROLLUP_DELAY_SECONDS: u64 = 3_600;

/// Days of rollups kept, per tier: host rollups, and the minute and hour buckets of
/// site rollups (availability reports and status pages read `check_days` and the
/// outages, kept for good).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollupRetention {
    /// Minute buckets (default 90 days).
    pub minute: u32,
    /// Hour buckets (default 2 years).
    pub hour: u32,
    /// Day buckets (default 10 years).
    pub day: u32,
}

impl Default for RollupRetention {
    fn default() -> Self {
        RollupRetention {
            minute: 90,
            hour: 730,
            day: 3650,
        }
    }
}

impl PostgresConfig {
    /// Its TLS settings.
    pub fn tls_files(&self) -> fleetmon::postgres::PgTlsFiles<'_> {
        fleetmon::postgres::PgTlsFiles {
            url: &self.url,
            ca: self.ca.as_deref(),
            cert: self.cert.as_deref(),
            key: self.key.as_deref(),
        }
    }

    /// How long each table's rows are kept.
    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention {
            raw_days: self.retention_days,
            minute_days: self.rollup_retention_days.minute,
            hour_days: self.rollup_retention_days.hour,
            day_days: self.rollup_retention_days.day,
        }
    }
}

/// Batching.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Rows per Postgres transaction at most.
    pub max_rows: usize,
    /// How long the first row of a batch may wait for more, in milliseconds (100).
    /// While a batch is being written the next one fills, so under load a batch
    /// holds about as long as its write takes, and a longer linger only adds latency
    /// (docs/BENCHMARKS.md, "A fleet under load").
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
    /// Webhooks notifications are sent to (channels of kind `webhook` or `slack`).
    pub webhooks: Vec<WebhookConfig>,
    /// Channels of every kind notifications are sent to.
    pub channels: Vec<ChannelConfig>,
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
    /// As the channel it is ([`ChannelConfig`]'s `Debug`, secrets hidden).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&ChannelConfig::from(self), f)
    }
}

/// One notification channel (`[[alerts.channels]]`). Its `Debug` hides the URL's path,
/// the header values and the routing key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The channel's name, unique among all channels, as stored with its notifications.
    pub name: String,
    /// What receives the notifications.
    pub kind: ChannelKind,
    /// `webhook`, `slack`: the address notifications are POSTed to; `alertmanager`: the
    /// Alertmanager's base address (alerts go to `/api/v2/alerts`); `pagerduty`: the
    /// Events API v2 address (default `https://events.pagerduty.com/v2/enqueue`).
    #[serde(default)]
    pub url: String,
    /// Also tell when an alert resolves (always, for `alertmanager` and `pagerduty`,
    /// which must hear of it to close theirs).
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Extra request headers (e.g. an `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The alert kinds sent here (e.g. `["disk_full", "memory_full"]`); empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The severities sent here (`critical`, `error`, `warning`); empty: every one.
    #[serde(default)]
    pub severities: Vec<String>,
    /// Only alerts whose subject (a check id, or an agent for host alerts) is one of
    /// these; `db-*` takes every subject starting with `db-`. Empty: every subject.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Only alerts about an agent whose labels (from the token it enrolled with)
    /// include every pair: `labels = { role = "db" }`. Empty: no label is asked for.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only alerts about one of these agents (a host's alerts, a location's); `db-*` by
    /// prefix. Empty: every agent, and alerts about no single agent (a check's).
    #[serde(default)]
    pub agents: Vec<String>,
    /// `pagerduty`: the integration's routing key (a secret).
    #[serde(default)]
    pub routing_key: String,
    /// `webhook`: the body to send instead of fleetmon's own JSON, a JSON text with
    /// placeholders filled in as JSON string content: `{{title}}` (e.g. `fleetmon:
    /// [opened] check_down shop`), `{{text}}` (one line per notification), `{{count}}`,
    /// `{{key}}` (the idempotency key) and `{{channel}}`; e.g.
    /// `{"text": "{{title}}\n{{text}}"}` for Mattermost or Google Chat.
    #[serde(default)]
    pub body_template: String,
    /// `telegram`: the bot token; `gotify`: the application token; `pushover`: the
    /// application token; `opsgenie`: the API key; `ntfy`: an access token, if the
    /// server asks for one (a secret).
    #[serde(default)]
    pub token: String,
    /// `alertmanager`: seconds between two sends of every open alert (Alertmanager ends
    /// an alert not sent again before its `endsAt`).
    #[serde(default = "default_resend_seconds")]
    pub resend_seconds: u64,
    /// `email`: the sender, e.g. `fleetmon <fleetmon@example.com>`.
    #[serde(default)]
    pub from: String,
    /// `email`: the recipients; `telegram`: chat ids; `ntfy`: topics; `pushover`: user
    /// or group keys.
    #[serde(default)]
    pub to: Vec<String>,
    /// `email`: how the SMTP connection is secured.
    #[serde(default)]
    pub smtp_tls: SmtpTls,
    /// `email`: the SMTP user, if the server asks for one.
    #[serde(default)]
    pub username: String,
    /// `email`: its password (a secret).
    #[serde(default)]
    pub password: String,
    /// `email`: a CA bundle (PEM) the SMTP server's certificate may chain to, besides
    /// the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// How an `email` channel secures its SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain at first, then `STARTTLS`, required (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No TLS at all: a relay on this machine only (127.0.0.0/8, ::1, localhost).
    None,
}

/// What a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// fleetmon's own JSON, POSTed with an `Idempotency-Key`.
    Webhook,
    /// A Slack-compatible incoming webhook (`{"text": …}`).
    Slack,
    /// Prometheus Alertmanager's `/api/v2/alerts`.
    Alertmanager,
    /// PagerDuty's Events API v2.
    Pagerduty,
    /// Mail over SMTP: one message a delivery.
    Email,
    /// A Discord channel's webhook.
    Discord,
    /// A Microsoft Teams channel's Workflows webhook (an Adaptive Card).
    Teams,
    /// A Telegram bot writing to the chats in `to`.
    Telegram,
    /// An ntfy server publishing to the topics in `to`.
    Ntfy,
    /// A Gotify server.
    Gotify,
    /// Pushover, to the user or group keys in `to`.
    Pushover,
    /// Opsgenie's Alert API: create, then close by alias.
    Opsgenie,
}

/// The address of each kind of channel that has a public service, when `url` is empty.
pub fn default_url(kind: ChannelKind) -> Option<&'static str> {
    match kind {
        ChannelKind::Pagerduty => Some(PAGERDUTY_EVENTS_URL),
        ChannelKind::Telegram => Some("https://api.telegram.org"),
        ChannelKind::Ntfy => Some("https://ntfy.sh"),
        ChannelKind::Pushover => Some("https://api.pushover.net/1/messages.json"),
        ChannelKind::Opsgenie => Some("https://api.opsgenie.com"),
        _ => None,
    }
}

/// PagerDuty's Events API v2.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

fn default_resend_seconds() -> u64 {
    60
}

impl std::fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|name| (name.as_str(), fleetmon::redact::HIDDEN))
            .collect();
        f.debug_struct("ChannelConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &fleetmon::redact::url(&self.url))
            .field("send_resolved", &self.send_resolved)
            .field("headers", &headers)
            .field("kinds", &self.kinds)
            .field("severities", &self.severities)
            .field("subjects", &self.subjects)
            .field("agents", &self.agents)
            .field("labels", &self.labels)
            .field(
                "routing_key",
                &(!self.routing_key.is_empty()).then_some(fleetmon::redact::HIDDEN),
            )
            .field("resend_seconds", &self.resend_seconds)
            .field("body_template", &self.body_template)
            .field(
                "token",
                &(!self.token.is_empty()).then_some(fleetmon::redact::HIDDEN),
            )
            .field("from", &self.from)
            .field("to", &self.to)
            .field("smtp_tls", &self.smtp_tls)
            .field("username", &self.username)
            .field(
                "password",
                &(!self.password.is_empty()).then_some(fleetmon::redact::HIDDEN),
            )
            .field("ca", &self.ca)
            .finish()
    }
}

impl From<&WebhookConfig> for ChannelConfig {
    fn from(webhook: &WebhookConfig) -> Self {
        let kind = match webhook.format {
            WebhookFormat::Json => ChannelKind::Webhook,
            WebhookFormat::Slack => ChannelKind::Slack,
        };
        ChannelConfig {
            send_resolved: webhook.send_resolved,
            headers: webhook.headers.clone(),
            ..ChannelConfig::new(&webhook.name, kind, &webhook.url)
        }
    }
}

impl ChannelConfig {
    /// Whether an alert of `kind` about `subject` (and agent `agent_id`, empty when it
    /// is about no single agent, whose labels are `labels`) goes to this channel.
    pub fn takes(
        &self,
        kind: &str,
        subject: &str,
        agent_id: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let matches = |patterns: &[String], name: &str| {
            patterns.is_empty()
                || patterns.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name == p,
                })
        };
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && (self.severities.is_empty()
                || self
                    .severities
                    .iter()
                    .any(|s| s == fleetmon::alert_kind::severity(kind)))
            && matches(&self.subjects, subject)
            && (self.agents.is_empty() || (!agent_id.is_empty() && matches(&self.agents, agent_id)))
            && fleetmon::labels::includes(&self.labels, |key| labels.get(key))
    }

    /// A channel `name` of `kind` at `url`, every other setting its default.
    pub fn new(name: &str, kind: ChannelKind, url: &str) -> Self {
        ChannelConfig {
            name: name.to_owned(),
            kind,
            url: url.to_owned(),
            send_resolved: true,
            headers: BTreeMap::new(),
            kinds: Vec::new(),
            severities: Vec::new(),
            subjects: Vec::new(),
            agents: Vec::new(),
            labels: BTreeMap::new(),
            routing_key: String::new(),
            body_template: String::new(),
            token: String::new(),
            resend_seconds: default_resend_seconds(),
            from: String::new(),
            to: Vec::new(),
            smtp_tls: SmtpTls::default(),
            username: String::new(),
            password: String::new(),
            ca: None,
        }
    }

    /// Where requests go: the configured URL, PagerDuty's by default, and
    /// Alertmanager's alerts endpoint under its base address.
    pub fn endpoint(&self) -> String {
        let base = match default_url(self.kind) {
            Some(default) if self.url.is_empty() => default,
            _ => &self.url,
        };
        match self.kind {
            ChannelKind::Alertmanager => format!("{}/api/v2/alerts", base.trim_end_matches('/')),
            _ => base.to_owned(),
        }
    }

    /// An `email` channel's SMTP server: its host and port, from `smtp://HOST[:PORT]`
    /// (the port by default 587 with STARTTLS, 465 with TLS, 25 without).
    pub fn smtp_server(&self) -> Option<(String, u16)> {
        let url = url::Url::parse(&self.url).ok()?;
        if url.scheme() != "smtp" || !url.username().is_empty() || url.path().len() > 1 {
            return None;
        }
        let host = url.host_str()?.trim_matches(['[', ']']).to_owned();
        let port = url.port().unwrap_or(match self.smtp_tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        });
        Some((host, port))
    }

    fn validate_email(&self, field: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let Some((host, _)) = self.smtp_server() else {
            return Err(ConfigError::field(
                &field("url"),
                format!(
                    "`{}` is not an SMTP server: write smtp://HOST or smtp://HOST:PORT (user and password go in `username` and `password`)",
                    fleetmon::redact::url(&self.url)
                ),
            ));
        };
        let local = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if self.smtp_tls == SmtpTls::None && !local {
            return Err(ConfigError::field(
                &field("smtp_tls"),
                format!(
                    "is `none`, and `{host}` is not this machine: mail and password would cross the network in clear; use `starttls` or `tls`"
                ),
            ));
        }
        let mailbox = |name: &str, text: &str| {
            text.parse::<lettre::message::Mailbox>().map(|_| ()).map_err(|e| {
                ConfigError::field(
                    &field(name),
                    format!("`{text}` is not a mail address ({e}): write `name <user@example.com>` or `user@example.com`"),
                )
            })
        };
        mailbox("from", &self.from)?;
        if self.to.is_empty() {
            return Err(ConfigError::field(
                &field("to"),
                "is empty: give at least one recipient",
            ));
        }
        for to in &self.to {
            mailbox("to", to)?;
        }
        Ok(())
    }

    /// Whether resolutions are sent.
    pub fn tells_resolved(&self) -> bool {
        self.send_resolved
            || matches!(
                self.kind,
                ChannelKind::Alertmanager | ChannelKind::Pagerduty
            )
    }

    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::field(
                &field("name"),
                "is empty: name the channel",
            ));
        }
        if self.kind == ChannelKind::Email {
            return self.validate_email(field);
        }
        let url = self.endpoint();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::field(
                &field("url"),
                format!(
                    "`{}` is not an http:// or https:// address",
                    fleetmon::redact::url(&self.url)
                ),
            ));
        }
        let needs_token = match self.kind {
            ChannelKind::Telegram => Some("the bot's token (from @BotFather)"),
            ChannelKind::Gotify => Some("the application's token"),
            ChannelKind::Pushover => Some("the application's API token"),
            ChannelKind::Opsgenie => Some("an API key of an API integration"),
            _ => None,
        };
        if let Some(what) = needs_token
            && self.token.trim().is_empty()
        {
            return Err(ConfigError::field(
                &field("token"),
                format!("is empty: give {what}"),
            ));
        }
        let needs_to = match self.kind {
            ChannelKind::Telegram => Some("the chat ids to write to"),
            ChannelKind::Ntfy => Some("the topics to publish to"),
            ChannelKind::Pushover => Some("the user or group keys to notify"),
            _ => None,
        };
        if let Some(what) = needs_to
            && self.to.iter().all(|t| t.trim().is_empty())
        {
            return Err(ConfigError::field(
                &field("to"),
                format!("is empty: give {what}"),
            ));
        }
        if !self.body_template.is_empty() {
            if self.kind != ChannelKind::Webhook {
                return Err(ConfigError::field(
                    &field("body_template"),
                    "is for channels of kind `webhook` only",
                ));
            }
            let sample = crate::alerts::template::render(
                &self.body_template,
                &[
                    ("title", "t"),
                    ("text", "x"),
                    ("count", "1"),
                    ("key", "k"),
                    ("channel", "c"),
                ],
            );
            if let Err(error) = serde_json::from_str::<serde_json::Value>(&sample) {
                return Err(ConfigError::field(
                    &field("body_template"),
                    format!(
                        "is not JSON once its placeholders are filled in ({error}): placeholders go inside JSON strings, e.g. {{\"text\": \"{{{{title}}}}\"}}"
                    ),
                ));
            }
        }
        if self.kind == ChannelKind::Pagerduty && self.routing_key.trim().is_empty() {
            return Err(ConfigError::field(
                &field("routing_key"),
                "is empty: give the routing key of the PagerDuty service's Events API v2 integration",
            ));
        }
        if let Some(unknown) = self
            .kinds
            .iter()
            .find(|kind| !fleetmon::alert_kind::ALL.contains(&kind.as_str()))
        {
            return Err(ConfigError::field(
                &field("kinds"),
                format!(
                    "`{unknown}` is not an alert kind: use some of {}",
                    fleetmon::alert_kind::ALL.join(", ")
                ),
            ));
        }
        if let Some(unknown) = self
            .severities
            .iter()
            .find(|s| !["critical", "error", "warning"].contains(&s.as_str()))
        {
            return Err(ConfigError::field(
                &field("severities"),
                format!("`{unknown}` is not a severity: use some of critical, error, warning"),
            ));
        }
        for (name, patterns) in [("subjects", &self.subjects), ("agents", &self.agents)] {
            if let Some(bad) = patterns
                .iter()
                .find(|p| p.is_empty() || p.len() > 200 || p.trim_end_matches('*').contains('*'))
            {
                return Err(ConfigError::field(
                    &field(name),
                    format!(
                        "`{bad}` is not a name or a prefix: write `shop` or `db-*` (one `*`, at the end)"
                    ),
                ));
            }
        }
        if let Some((key, _)) = fleetmon::labels::out_of_bounds(&self.labels) {
            return Err(ConfigError::field(
                &field("labels"),
                format!(
                    "`{key}` is not a label: a key is 1 to {} bytes, a value at most {}",
                    fleetmon::labels::MAX_KEY_BYTES,
                    fleetmon::labels::MAX_VALUE_BYTES
                ),
            ));
        }
        if self.kind == ChannelKind::Alertmanager && self.resend_seconds == 0 {
            return Err(ConfigError::field(
                &field("resend_seconds"),
                "must be at least 1: Alertmanager ends an alert that is not sent again",
            ));
        }
        Ok(())
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
            channels: Vec::new(),
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
        let sections = (self.webhooks.iter().map(ChannelConfig::from).enumerate())
            .map(|(i, c)| (format!("alerts.webhooks[{i}]"), c))
            .chain(
                self.channels
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("alerts.channels[{i}]"), c.clone())),
            );
        for (section, channel) in sections {
            let field = |name: &str| format!("{section}.{name}");
            channel.validate(&field)?;
            if !names.insert(channel.name.clone()) {
                return Err(ConfigError::field(
                    &field("name"),
                    format!(
                        "`{}` is used by another channel: names must be unique",
                        channel.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every channel: the webhooks, then `channels`.
    pub fn all_channels(&self) -> Vec<ChannelConfig> {
        self.webhooks
            .iter()
            .map(ChannelConfig::from)
            .chain(self.channels.iter().cloned())
            .collect()
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
            instance_id: None,
            host_samples_topic: fleetmon::config::DEFAULT_HOST_SAMPLES_TOPIC.to_owned(),
            site_checks_topic: fleetmon::config::DEFAULT_SITE_CHECKS_TOPIC.to_owned(),
            checks_topic: fleetmon::config::DEFAULT_CHECKS_TOPIC.to_owned(),
            audit_topic: fleetmon::config::DEFAULT_AUDIT_TOPIC.to_owned(),
            credentials_topic: fleetmon::config::DEFAULT_CREDENTIALS_TOPIC.to_owned(),
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
            rollup_retention_days: RollupRetention::default(),
            partitions_ahead_days: 3,
            host_rollup_delay_seconds: 60,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: 10_000,
            linger_ms: 100,
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
            fleet_metrics: FleetMetricsConfig::default(),
        }
    }

    /// Checks ranges and consistency; each error names the field and the fix.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        fleetmon::config::add_kafka_security(
            self.kafka.tls.as_ref(),
            self.kafka.sasl.as_ref(),
            &mut self.kafka.options,
        )?;
        fleetmon::postgres::validate_schema_name(&self.postgres.schema)?;
        self.postgres.tls_files().validate()?;
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
        if self.fleet_metrics.max_series == 0 || self.fleet_metrics.max_series > 10_000_000 {
            return Err(ConfigError::field(
                "fleet_metrics.max_series",
                "must be from 1 to 10000000 (set enabled = false to serve none)",
            ));
        }
        if self.fleet_metrics.refresh_seconds == 0 {
            return Err(ConfigError::field(
                "fleet_metrics.refresh_seconds",
                "must be at least 1: every scrape would query PostgreSQL",
            ));
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
        let tiers = self.postgres.rollup_retention_days;
        for (tier, days) in [
            ("minute", tiers.minute),
            ("hour", tiers.hour),
            ("day", tiers.day),
        ] {
            if days == 0 {
                return Err(ConfigError::field(
                    &format!("postgres.rollup_retention_days.{tier}"),
                    "must be at least 1",
                ));
            }
        }
        // Hour buckets are worked out from minute buckets, day buckets from hour
        // buckets: both must outlive the raw rows a late sample can still join.
        for (tier, days) in [("minute", tiers.minute), ("hour", tiers.hour)] {
            if days < self.postgres.retention_days {
                return Err(ConfigError::field(
                    &format!("postgres.rollup_retention_days.{tier}"),
                    format!(
                        "is {days}, below postgres.retention_days ({}): the coarser buckets are worked out from these, so keep them at least as long as the raw rows",
                        self.postgres.retention_days
                    ),
                ));
            }
        }
        if self.postgres.host_rollup_delay_seconds > MAX_HOST_ROLLUP_DELAY_SECONDS {
            return Err(ConfigError::field(
                "postgres.host_rollup_delay_seconds",
                format!(
                    "is {}, more than {MAX_HOST_ROLLUP_DELAY_SECONDS}: rollup charts would lag by as much; use 60 (or 0 to work them out in every batch)",
                    self.postgres.host_rollup_delay_seconds
                ),
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
        if let Some(id) = &self.kafka.instance_id
            && (id.trim().is_empty() || id.len() > 249)
        {
            return Err(ConfigError::field(
                "kafka.instance_id",
                "must be 1 to 249 characters (a name unique among the group's writers, e.g. the host name), or unset",
            ));
        }
        for key in [
            "enable.auto.offset.store",
            "group.id",
            "group.instance.id",
            "bootstrap.servers",
        ] {
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
    fn an_empty_instance_id_and_a_fixed_option_are_refused_by_name() {
        let load = |key: &str, value: &str| {
            WriterConfig::load(None, [(key.to_owned(), value.to_owned())])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            load("FLEETMON_WRITER__KAFKA__INSTANCE_ID", " "),
            "invalid config: `kafka.instance_id` must be 1 to 249 characters (a name unique among the group's writers, e.g. the host name), or unset"
        );
        assert!(
            load("FLEETMON_WRITER__KAFKA__OPTIONS__GROUP.INSTANCE.ID", "w1")
                .contains("kafka.options.\"group.instance.id\""),
        );
    }

    #[test]
    fn a_rollup_tier_kept_no_day_is_refused_by_name() {
        let error = WriterConfig::load(
            None,
            [(
                "FLEETMON_WRITER__POSTGRES__ROLLUP_RETENTION_DAYS__HOUR".to_owned(),
                "0".to_owned(),
            )],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid config: `postgres.rollup_retention_days.hour` must be at least 1"
        );
    }

    #[test]
    fn coarse_host_buckets_need_finer_ones_that_outlive_the_raw_rows() {
        let load = |vars: &[(&str, &str)]| {
            WriterConfig::load(
                None,
                vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            load(&[("FLEETMON_WRITER__POSTGRES__ROLLUP_RETENTION_DAYS__MINUTE", "7")]),
            Err("invalid config: `postgres.rollup_retention_days.minute` is 7, below postgres.retention_days (30): the coarser buckets are worked out from these, so keep them at least as long as the raw rows".to_owned())
        );
        assert_eq!(
            load(&[
                (
                    "FLEETMON_WRITER__POSTGRES__ROLLUP_RETENTION_DAYS__MINUTE",
                    "7"
                ),
                ("FLEETMON_WRITER__POSTGRES__RETENTION_DAYS", "7"),
            ]),
            Ok(())
        );
        assert_eq!(
            load(&[("FLEETMON_WRITER__POSTGRES__HOST_ROLLUP_DELAY_SECONDS", "86400")]),
            Err("invalid config: `postgres.host_rollup_delay_seconds` is 86400, more than 3600: rollup charts would lag by as much; use 60 (or 0 to work them out in every batch)".to_owned())
        );
    }

    #[test]
    fn channels_are_checked_with_the_field_named() {
        let load = |channels: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("writer.toml");
            std::fs::write(&path, channels).unwrap();
            WriterConfig::load(Some(&path), Vec::new()).map(|c| c.alerts.all_channels())
        };
        let error = |channels: &str| load(channels).unwrap_err().to_string();
        assert_eq!(
            error(
                "[[alerts.channels]]\nname = \"db\"\nkind = \"webhook\"\nurl = \"https://x.example/h\"\nkinds = [\"disk_ful\"]\n"
            ),
            "invalid config: `alerts.channels[0].kinds` `disk_ful` is not an alert kind: use some of check_down, location_unreachable, agent_silent, disk_full, memory_full, cpu_busy, tls_expiring, clock_skew, heartbeat_missed"
        );
        assert_eq!(
            error(
                "[[alerts.channels]]\nname = \"db\"\nkind = \"webhook\"\nurl = \"https://x.example/h\"\nseverities = [\"page\"]\n"
            ),
            "invalid config: `alerts.channels[0].severities` `page` is not a severity: use some of critical, error, warning"
        );
        assert_eq!(
            error(
                "[[alerts.channels]]\nname = \"db\"\nkind = \"webhook\"\nurl = \"https://x.example/h\"\nsubjects = [\"*-db\"]\n"
            ),
            "invalid config: `alerts.channels[0].subjects` `*-db` is not a name or a prefix: write `shop` or `db-*` (one `*`, at the end)"
        );
        assert_eq!(
            error("[[alerts.channels]]\nname = \"pd\"\nkind = \"pagerduty\"\n"),
            "invalid config: `alerts.channels[0].routing_key` is empty: give the routing key of the PagerDuty service's Events API v2 integration"
        );
        assert_eq!(
            error(
                "[[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://x.example/h\"\n\n[[alerts.channels]]\nname = \"ops\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n"
            ),
            "invalid config: `alerts.channels[0].name` `ops` is used by another channel: names must be unique"
        );
        assert_eq!(
            error(
                "[[alerts.channels]]\nname = \"mail\"\nkind = \"email\"\nurl = \"smtp://mail.example.com\"\nsmtp_tls = \"none\"\nfrom = \"f@example.com\"\nto = [\"o@example.com\"]\n"
            ),
            "invalid config: `alerts.channels[0].smtp_tls` is `none`, and `mail.example.com` is not this machine: mail and password would cross the network in clear; use `starttls` or `tls`"
        );
        assert_eq!(
            error(
                "[[alerts.channels]]\nname = \"mail\"\nkind = \"email\"\nurl = \"smtp://mail.example.com\"\nfrom = \"f@example.com\"\nto = [\"ops at example\"]\n"
            ),
            "invalid config: `alerts.channels[0].to` `ops at example` is not a mail address (Invalid input): write `name <user@example.com>` or `user@example.com`"
        );
        assert_eq!(
            error("[[alerts.channels]]\nname = \"tg\"\nkind = \"telegram\"\nto = [\"-100\"]\n"),
            "invalid config: `alerts.channels[0].token` is empty: give the bot's token (from @BotFather)"
        );
        assert_eq!(
            error("[[alerts.channels]]\nname = \"n\"\nkind = \"ntfy\"\n"),
            "invalid config: `alerts.channels[0].to` is empty: give the topics to publish to"
        );
        assert_eq!(
            error(
                "[[alerts.channels]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"https://x.example/h\"\nbody_template = '{\"text\": {{title}}}'\n"
            ),
            "invalid config: `alerts.channels[0].body_template` is not JSON once its placeholders are filled in (expected ident at line 1 column 11): placeholders go inside JSON strings, e.g. {\"text\": \"{{title}}\"}"
        );
        let channels = load(
            "[[alerts.channels]]\nname = \"pd\"\nkind = \"pagerduty\"\nrouting_key = \"R0UT1NG\"\n",
        )
        .unwrap();
        assert_eq!(channels[0].endpoint(), PAGERDUTY_EVENTS_URL);
        assert!(
            !format!("{:?}", channels[0]).contains("R0UT1NG"),
            "the routing key shows in the config's Debug"
        );
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
