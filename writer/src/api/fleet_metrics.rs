//! `/metrics/fleet` on the writer's metrics port: the fleet's current state in the
//! Prometheus text format, for the Prometheus (and Grafana) a site already runs.
//!
//! The writer serves it, not the collector: what it exports (check states decided
//! after the thresholds, each agent's latest host sample, open alerts, agents' labels)
//! is in PostgreSQL, the same from every writer, while a collector sees only the agents
//! connected to it. An answer is rendered from PostgreSQL at most every
//! `fleet_metrics.refresh_seconds`, however many scrapers ask, and holds at most
//! `fleet_metrics.max_series` series; the rest are counted, never silently lost.
//!
//! Series per agent: 9, plus 3 per filesystem and 2 per network interface; per check
//! and location: 3 (4 with a TLS certificate); per open alert: 1.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::api::error::ServiceError;
use crate::config::FleetMetricsConfig;

const FLEET_CHECKS: &str = include_str!("../../sql/fleet_checks.sql");
const FLEET_HOSTS: &str = include_str!("../../sql/fleet_hosts.sql");
const FLEET_ALERTS: &str = include_str!("../../sql/fleet_alerts.sql");

/// The families, in the order they are written: name, type and help.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "fleetmon_check_up",
        "gauge",
        "1 while the check passes at this location, 0 while it is DOWN there (after the failure and success thresholds).",
    ),
    (
        "fleetmon_check_duration_seconds",
        "gauge",
        "The response time of the latest result.",
    ),
    (
        "fleetmon_check_tls_not_after_seconds",
        "gauge",
        "When the server's certificate expires (Unix time).",
    ),
    (
        "fleetmon_check_last_result_timestamp_seconds",
        "gauge",
        "When the latest result was taken (Unix time).",
    ),
    (
        "fleetmon_node_cpu_usage_percent",
        "gauge",
        "CPU in use over the last sampling interval, percent of all cores.",
    ),
    ("fleetmon_node_load1", "gauge", "1-minute load average."),
    ("fleetmon_node_load5", "gauge", "5-minute load average."),
    ("fleetmon_node_load15", "gauge", "15-minute load average."),
    (
        "fleetmon_node_memory_total_bytes",
        "gauge",
        "Memory installed.",
    ),
    (
        "fleetmon_node_memory_available_bytes",
        "gauge",
        "Memory available for new work (MemAvailable).",
    ),
    ("fleetmon_node_processes", "gauge", "Processes on the host."),
    (
        "fleetmon_node_uptime_seconds",
        "gauge",
        "Seconds since the host booted.",
    ),
    (
        "fleetmon_node_filesystem_size_bytes",
        "gauge",
        "Filesystem size (df's Size).",
    ),
    (
        "fleetmon_node_filesystem_avail_bytes",
        "gauge",
        "Filesystem space available to unprivileged users (df's Avail).",
    ),
    (
        "fleetmon_node_filesystem_used_bytes",
        "gauge",
        "Filesystem space used (df's Used).",
    ),
    (
        "fleetmon_node_network_receive_bytes_total",
        "counter",
        "Bytes received on the interface since boot.",
    ),
    (
        "fleetmon_node_network_transmit_bytes_total",
        "counter",
        "Bytes sent on the interface since boot.",
    ),
    (
        "fleetmon_node_last_sample_timestamp_seconds",
        "gauge",
        "When the agent's latest host sample was taken (Unix time).",
    ),
    ("fleetmon_alert_open", "gauge", "1 for each open alert."),
    (
        "fleetmon_fleet_series_dropped",
        "gauge",
        "Series left out of this answer past fleet_metrics.max_series.",
    ),
    (
        "fleetmon_fleet_snapshot_timestamp_seconds",
        "gauge",
        "When this answer was rendered from PostgreSQL (Unix time).",
    ),
];

/// The names of the metric families `/metrics/fleet` serves (what dashboards may use).
pub fn family_names() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().map(|(name, _, _)| *name)
}

/// `/metrics/fleet`, rendered at most every `refresh`.
pub struct FleetMetrics {
    pool: deadpool_postgres::Pool,
    config: FleetMetricsConfig,
    snapshot: Mutex<Option<(Instant, Arc<String>)>>,
}

impl FleetMetrics {
    /// Answers from `pool` (the API pool: its queries have a time limit).
    pub fn new(pool: deadpool_postgres::Pool, config: FleetMetricsConfig) -> Self {
        FleetMetrics {
            pool,
            config,
            snapshot: Mutex::new(None),
        }
    }

    /// The exposition: the snapshot, or a new one when it is older than `refresh`.
    /// Scrapes that arrive while one is rendered wait for it and share it.
    pub async fn render(&self) -> Result<Arc<String>, ServiceError> {
        let mut snapshot = self.snapshot.lock().await;
        let refresh = Duration::from_secs(self.config.refresh_seconds);
        if let Some((at, text)) = snapshot.as_ref()
            && at.elapsed() < refresh
        {
            return Ok(text.clone());
        }
        let text = Arc::new(self.query().await?);
        *snapshot = Some((Instant::now(), text.clone()));
        Ok(text)
    }

    async fn query(&self) -> Result<String, ServiceError> {
        let client = self.pool.get().await?;
        let limit = i64::try_from(self.config.max_series).unwrap_or(i64::MAX);
        let checks = client.query(FLEET_CHECKS, &[&limit]).await?;
        let hosts = client.query(FLEET_HOSTS, &[&limit]).await?;
        let alerts = client.query(FLEET_ALERTS, &[&limit]).await?;
        let mut out = Exposition::new(self.config.max_series);
        for row in &checks {
            let key: &str = row.get("check_id");
            let location: &str = row.get("agent_id");
            // A site from an agent's own file is keyed `AGENT URL`: its URL names it.
            let check = fleetmon::samples::local_site_of(key).map_or(key, |(_, url)| url);
            let labels = [
                ("check", check),
                ("location", location),
                ("kind", row.get("kind")),
            ];
            let up = if row.get::<_, bool>("up") { 1.0 } else { 0.0 };
            out.add("fleetmon_check_up", &labels, up);
            if let Some(ms) = row.get::<_, Option<f64>>("response_time_ms") {
                out.add("fleetmon_check_duration_seconds", &labels[..2], ms / 1000.0);
            }
            if let Some(at) = row.get::<_, Option<f64>>("tls_not_after_seconds") {
                out.add("fleetmon_check_tls_not_after_seconds", &labels[..2], at);
            }
            out.add(
                "fleetmon_check_last_result_timestamp_seconds",
                &labels[..2],
                row.get("last_seconds"),
            );
        }
        for row in &hosts {
            host(&mut out, row);
        }
        for row in &alerts {
            let kind: &str = row.get("kind");
            out.add(
                "fleetmon_alert_open",
                &[
                    ("kind", kind),
                    ("subject", row.get("subject")),
                    ("agent", row.get("agent_id")),
                    ("severity", fleetmon::alert_kind::severity(kind)),
                ],
                1.0,
            );
        }
        Ok(out.finish())
    }
}

/// `GET /metrics/fleet`: the exposition, or 503 with the reason when PostgreSQL did not
/// answer (Prometheus marks the target down).
pub fn routes(metrics: FleetMetrics) -> axum::Router {
    let metrics = Arc::new(metrics);
    axum::Router::new().route(
        "/metrics/fleet",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                use axum::response::IntoResponse as _;
                match metrics.render().await {
                    Ok(text) => (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text.as_str().to_owned(),
                    )
                        .into_response(),
                    Err(error) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("cannot read the fleet's state: {error}\n"),
                    )
                        .into_response(),
                }
            }
        }),
    )
}

/// A disk or an interface, as the JSONB columns hold them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Disk {
    mount_point: String,
    device: String,
    file_system: String,
    total_bytes: u64,
    used_bytes: u64,
    available_bytes: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Interface {
    name: String,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// One agent's host gauges, labelled `agent` and `label_KEY` for each of its labels.
fn host(out: &mut Exposition, row: &tokio_postgres::Row) {
    let agent: &str = row.get("agent_id");
    let agent_labels: std::collections::BTreeMap<String, String> =
        serde_json::from_value(row.get("labels")).unwrap_or_default();
    let names: Vec<String> = agent_labels.keys().map(|k| label_name(k)).collect();
    let mut labels: Vec<(&str, &str)> = vec![("agent", agent)];
    labels.extend(
        names
            .iter()
            .map(String::as_str)
            .zip(agent_labels.values().map(String::as_str)),
    );
    let number = |column: &str| row.get::<_, f64>(column);
    let whole = |column: &str| row.get::<_, i64>(column) as f64;
    out.add(
        "fleetmon_node_cpu_usage_percent",
        &labels,
        number("cpu_usage_percent"),
    );
    out.add("fleetmon_node_load1", &labels, number("load_average_1m"));
    out.add("fleetmon_node_load5", &labels, number("load_average_5m"));
    out.add("fleetmon_node_load15", &labels, number("load_average_15m"));
    out.add(
        "fleetmon_node_memory_total_bytes",
        &labels,
        whole("memory_total_bytes"),
    );
    out.add(
        "fleetmon_node_memory_available_bytes",
        &labels,
        whole("memory_available_bytes"),
    );
    out.add(
        "fleetmon_node_processes",
        &labels,
        f64::from(row.get::<_, i32>("process_count")),
    );
    out.add(
        "fleetmon_node_uptime_seconds",
        &labels,
        whole("uptime_seconds"),
    );
    out.add(
        "fleetmon_node_last_sample_timestamp_seconds",
        &labels,
        number("ts_seconds"),
    );
    let disks: Vec<Disk> = serde_json::from_value(row.get("disks")).unwrap_or_default();
    for disk in &disks {
        let mut with = labels.clone();
        with.extend([
            ("mountpoint", disk.mount_point.as_str()),
            ("device", disk.device.as_str()),
            ("fstype", disk.file_system.as_str()),
        ]);
        out.add(
            "fleetmon_node_filesystem_size_bytes",
            &with,
            disk.total_bytes as f64,
        );
        out.add(
            "fleetmon_node_filesystem_avail_bytes",
            &with,
            disk.available_bytes as f64,
        );
        out.add(
            "fleetmon_node_filesystem_used_bytes",
            &with,
            disk.used_bytes as f64,
        );
    }
    let interfaces: Vec<Interface> =
        serde_json::from_value(row.get("interfaces")).unwrap_or_default();
    for interface in &interfaces {
        let mut with = labels.clone();
        with.push(("device", interface.name.as_str()));
        out.add(
            "fleetmon_node_network_receive_bytes_total",
            &with,
            interface.rx_bytes as f64,
        );
        out.add(
            "fleetmon_node_network_transmit_bytes_total",
            &with,
            interface.tx_bytes as f64,
        );
    }
}

/// An agent label's key as a Prometheus label name: `label_` and the key with every
/// character outside `[A-Za-z0-9_]` made `_` (as kube-state-metrics does).
fn label_name(key: &str) -> String {
    let mut name = String::from("label_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    name
}

/// The text of one answer: each family's samples under its HELP and TYPE, at most
/// `budget` samples in all.
struct Exposition {
    families: Vec<String>,
    budget: usize,
    dropped: u64,
}

impl Exposition {
    fn new(budget: usize) -> Self {
        Exposition {
            families: vec![String::new(); FAMILIES.len()],
            budget,
            dropped: 0,
        }
    }

    /// One sample of the family `name` (one of [`FAMILIES`]); a value that is not
    /// finite is left out.
    fn add(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let Some(index) = FAMILIES.iter().position(|(family, _, _)| *family == name) else {
            debug_assert!(false, "{name} is not a family");
            return;
        };
        if !value.is_finite() {
            return;
        }
        if self.budget == 0 {
            self.dropped += 1;
            return;
        }
        self.budget -= 1;
        let lines = &mut self.families[index];
        lines.push_str(name);
        if !labels.is_empty() {
            lines.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    lines.push(',');
                }
                lines.push_str(&format!("{key}=\"{}\"", escape(value)));
            }
            lines.push('}');
        }
        lines.push_str(&format!(" {value}\n"));
    }

    fn finish(mut self) -> String {
        let dropped = self.dropped as f64;
        self.budget = usize::MAX;
        self.add("fleetmon_fleet_series_dropped", &[], dropped);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.add("fleetmon_fleet_snapshot_timestamp_seconds", &[], now);
        let mut text = String::new();
        for ((name, kind, help), lines) in FAMILIES.iter().zip(&self.families) {
            if lines.is_empty() {
                continue;
            }
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            text.push_str(lines);
        }
        text
    }
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_grouped_under_their_family_escaped_and_cut_at_the_budget() {
        let mut out = Exposition::new(2);
        out.add("fleetmon_check_up", &[("check", "a\"b\\c\nd")], 1.0);
        out.add("fleetmon_node_load1", &[("agent", "web-1")], 0.5);
        out.add("fleetmon_check_up", &[("check", "shop")], 0.0);
        out.add("fleetmon_node_load5", &[("agent", "web-1")], f64::NAN);
        let text = out.finish();
        assert!(
            text.starts_with(
                "# HELP fleetmon_check_up 1 while the check passes at this location, 0 while it is DOWN there (after the failure and success thresholds).\n\
                 # TYPE fleetmon_check_up gauge\n\
                 fleetmon_check_up{check=\"a\\\"b\\\\c\\nd\"} 1\n\
                 # HELP fleetmon_node_load1 1-minute load average.\n\
                 # TYPE fleetmon_node_load1 gauge\n\
                 fleetmon_node_load1{agent=\"web-1\"} 0.5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nfleetmon_fleet_series_dropped 1\n"),
            "{text}"
        );
        assert!(!text.contains("load5"), "{text}");
    }

    #[test]
    fn agent_label_keys_become_prometheus_label_names() {
        assert_eq!(label_name("role"), "label_role");
        assert_eq!(label_name("topology.zone/eu-1"), "label_topology_zone_eu_1");
    }
}
