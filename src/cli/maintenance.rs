//! `fleetmon maintenance`: planned work on the writer's `Alerts` service. While a
//! window is active, notifications of the alerts it covers are held back.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use fleetmon::pb::alerts_client::AlertsClient;
use fleetmon::pb::{
    CreateMaintenanceRequest, ListMaintenanceRequest, MaintenanceWindow, RemoveMaintenanceRequest,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::table::{print_list, rfc3339};
use super::{ApplyArgs, Connection, call_error, parse_duration};

/// `fleetmon maintenance …`.
#[derive(Debug, Subcommand)]
pub(crate) enum MaintenanceCommand {
    /// Plan a window: one-off (--from, --until) or weekly (--weekly, --at, --for, --tz).
    Add(Box<AddArgs>),
    /// Make the named windows match a file of `[[windows]]` entries: create those it
    /// adds, replace those it changes, leave the rest (with --prune, remove the named
    /// windows it no longer lists; windows without a name are never touched).
    Apply(ApplyArgs),
    /// The windows not removed and not over; ACTIVE ones hold notifications back now.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Remove a window now.
    Rm {
        /// The window id (from `fleetmon maintenance list`).
        id: u64,
        #[command(flatten)]
        connection: Connection,
    },
}

/// `maintenance add`: a window and where the writer is.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    #[command(flatten)]
    window: Window,
    #[command(flatten)]
    connection: Connection,
}

/// A window as an operator gives it, on `add`'s flags or in a file.
#[derive(Debug, Clone, Default, Args)]
struct Window {
    /// A name (a slug), unique among windows: what `apply` keys a file's windows by.
    #[arg(long, default_value = "")]
    name: String,
    /// Alerts about this check id.
    #[arg(long = "check", default_value = "")]
    check_id: String,
    /// Alerts about this agent (its host, its own sites, or it as a location).
    #[arg(long = "agent", default_value = "")]
    agent_id: String,
    /// Alerts about agents with these labels (from their enrollment tokens):
    /// role=db,location=eu-west.
    #[arg(long, value_delimiter = ',', value_parser = super::checks::parse_label)]
    labels: Vec<(String, String)>,
    /// Why, for whoever reads the list.
    #[arg(long, default_value = "")]
    reason: String,
    /// One-off: when it starts (RFC 3339, e.g. 2026-12-24T22:00:00Z).
    #[arg(long = "from", requires = "until", value_parser = parse_time)]
    from: Option<prost_types::Timestamp>,
    /// One-off: when it ends.
    #[arg(long = "until", requires = "from", value_parser = parse_time)]
    until: Option<prost_types::Timestamp>,
    /// Weekly: the days, comma-separated: sun,mon,tue,wed,thu,fri,sat.
    #[arg(long, value_delimiter = ',', value_parser = parse_weekday, conflicts_with = "from")]
    weekly: Vec<u32>,
    /// Weekly: the local time it starts, HH:MM.
    #[arg(long = "at", requires = "weekly", default_value = "")]
    start_time: String,
    /// Weekly: how long (30m, 2h; at most 7d).
    #[arg(long = "for", requires = "weekly", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Weekly: the time zone of --at (an IANA name: Europe/Berlin, UTC).
    #[arg(long = "tz", requires = "weekly", default_value = "UTC")]
    time_zone: String,
}

impl Window {
    /// The request that creates it (the weekly fields only for a weekly window).
    fn request(self) -> CreateMaintenanceRequest {
        let weekly = !self.weekly.is_empty();
        CreateMaintenanceRequest {
            name: self.name,
            check_id: self.check_id,
            agent_id: self.agent_id,
            labels: self.labels.into_iter().collect(),
            reason: self.reason,
            starts_at: self.from,
            ends_at: self.until,
            weekdays: self.weekly,
            start_time: if weekly {
                self.start_time
            } else {
                String::new()
            },
            duration_minutes: self
                .duration
                .map(|d| u32::try_from(d.as_secs() / 60).unwrap_or(u32::MAX))
                .unwrap_or_default(),
            time_zone: if weekly {
                self.time_zone
            } else {
                String::new()
            },
            replace: false,
        }
    }
}

/// A `[[windows]]` entry of a maintenance file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowEntry {
    name: String,
    #[serde(default)]
    check: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    weekly: Vec<String>,
    #[serde(default)]
    at: String,
    #[serde(default, rename = "for")]
    duration: Option<String>,
    #[serde(default = "utc")]
    time_zone: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowsFile {
    #[serde(default)]
    windows: Vec<WindowEntry>,
}

/// The requests a maintenance file asks for, or what is wrong in it: the file, the
/// window and the field.
fn parse_file(path: &str, text: &str) -> anyhow::Result<Vec<CreateMaintenanceRequest>> {
    let file: WindowsFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let mut names = std::collections::BTreeSet::new();
    file.windows
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let at = if entry.name.is_empty() {
                format!("{path}: window {}", index + 1)
            } else {
                format!("{path}: window `{}`", entry.name)
            };
            if entry.name.is_empty() {
                bail!("{at}: `name` is missing: give each window a name (a slug), which apply keys it by");
            }
            if !names.insert(entry.name.clone()) {
                bail!("{at}: the name comes twice: give each window its own");
            }
            let time = |field: &str, text: &Option<String>| {
                text.as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{at}: `{field}` {e}"))
            };
            let weekly = entry
                .weekly
                .iter()
                .map(|day| parse_weekday(day))
                .collect::<Result<Vec<u32>, String>>()
                .map_err(|e| anyhow::anyhow!("{at}: `weekly` {e}"))?;
            let duration = entry
                .duration
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| anyhow::anyhow!("{at}: `for` {e}"))?;
            Ok(Window {
                name: entry.name.clone(),
                check_id: entry.check,
                agent_id: entry.agent,
                labels: entry.labels.into_iter().collect(),
                reason: entry.reason,
                from: time("from", &entry.from)?,
                until: time("until", &entry.until)?,
                weekly,
                start_time: entry.at,
                duration,
                time_zone: entry.time_zone,
            }
            .request())
        })
        .collect()
}

/// What an apply does: windows to create, to replace (changed), to remove (pruned),
/// and how many were unchanged or already over.
#[derive(Debug, Default)]
struct Plan {
    create: Vec<CreateMaintenanceRequest>,
    replace: Vec<CreateMaintenanceRequest>,
    remove: Vec<MaintenanceWindow>,
    unchanged: usize,
    over: Vec<String>,
}

/// Whether `window` is what `request` asks for.
fn same(window: &MaintenanceWindow, request: &CreateMaintenanceRequest) -> bool {
    let mut days = request.weekdays.clone();
    days.sort_unstable();
    days.dedup();
    let seconds = |t: Option<prost_types::Timestamp>| t.map(|t| t.seconds);
    window.check_id == request.check_id.trim()
        && window.agent_id == request.agent_id.trim()
        && window.labels == request.labels
        && window.reason == request.reason
        && seconds(window.starts_at) == seconds(request.starts_at)
        && seconds(window.ends_at) == seconds(request.ends_at)
        && window.weekdays == days
        && window.start_time == request.start_time
        && window.duration_minutes == request.duration_minutes
        && window.time_zone == request.time_zone.trim()
}

/// The changes that make the named windows of `current` what `wanted` lists. A
/// one-off window of the file that has ended is left out (the writer refuses windows
/// that hold nothing back) and said so.
fn plan(
    wanted: &[CreateMaintenanceRequest],
    current: &[MaintenanceWindow],
    prune: bool,
    now: SystemTime,
) -> Plan {
    let mut plan = Plan::default();
    for request in wanted {
        let existing = current.iter().find(|w| w.name == request.name);
        let ended = request
            .ends_at
            .and_then(|t| SystemTime::try_from(t).ok())
            .is_some_and(|end| end <= now);
        match existing {
            _ if ended => plan.over.push(request.name.clone()),
            Some(window) if same(window, request) => plan.unchanged += 1,
            Some(_) => plan.replace.push(CreateMaintenanceRequest {
                replace: true,
                ..request.clone()
            }),
            None => plan.create.push(request.clone()),
        }
    }
    if prune {
        plan.remove = current
            .iter()
            .filter(|w| !w.name.is_empty() && !wanted.iter().any(|r| r.name == w.name))
            .cloned()
            .collect();
    }
    plan
}

impl Plan {
    /// `+ name`, `~ name`, `- name` lines and the counts.
    fn describe(&self) -> String {
        let mut text = String::new();
        for request in &self.create {
            text.push_str(&format!("+ {}\n", request.name));
        }
        for request in &self.replace {
            text.push_str(&format!("~ {}\n", request.name));
        }
        for window in &self.remove {
            text.push_str(&format!("- {} (window {})\n", window.name, window.id));
        }
        for name in &self.over {
            text.push_str(&format!("  {name}: over, left out\n"));
        }
        text.push_str(&format!(
            "{} to create, {} to update, {} to remove, {} unchanged\n",
            self.create.len(),
            self.replace.len(),
            self.remove.len(),
            self.unchanged
        ));
        text
    }
}

/// A time given as RFC 3339.
fn parse_time(text: &str) -> Result<prost_types::Timestamp, String> {
    super::table::parse_time(text, false)
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A day of the week: its three-letter English name, 0 Sunday to 6 Saturday.
fn parse_weekday(text: &str) -> Result<u32, String> {
    let day = text.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| day.starts_with(d) && d.len() <= day.len())
        .map(|i| i as u32)
        .ok_or_else(|| format!("`{text}` is not a day: use sun, mon, tue, wed, thu, fri or sat"))
}

fn window_json(w: &MaintenanceWindow) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "check_id": w.check_id,
        "agent_id": w.agent_id,
        "labels": w.labels,
        "reason": w.reason,
        "created_by": w.created_by,
        "starts_at": rfc3339(w.starts_at),
        "ends_at": rfc3339(w.ends_at),
        "weekdays": w.weekdays.iter().map(|d| DAYS.get(*d as usize).copied().unwrap_or("?")).collect::<Vec<_>>(),
        "start_time": w.start_time,
        "duration_minutes": w.duration_minutes,
        "time_zone": w.time_zone,
        "active": w.active,
    })
}

/// The agents a window covers: its agent, and/or its labels (`role=db`).
fn agents(w: &MaintenanceWindow) -> String {
    let mut labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let mut parts = vec![w.agent_id.clone()];
    parts.extend(labels);
    parts.retain(|p| !p.is_empty());
    parts.join(",")
}

/// When a window holds notifications back, in words.
fn schedule(w: &MaintenanceWindow) -> String {
    if w.weekdays.is_empty() {
        return format!("{} to {}", rfc3339(w.starts_at), rfc3339(w.ends_at));
    }
    let days: Vec<&str> = w
        .weekdays
        .iter()
        .map(|d| DAYS.get(*d as usize).copied().unwrap_or("?"))
        .collect();
    format!(
        "{} {} for {} min ({})",
        days.join(","),
        w.start_time,
        w.duration_minutes,
        w.time_zone
    )
}

/// `fleetmon maintenance add|list|rm`.
pub(crate) async fn run(command: MaintenanceCommand) -> anyhow::Result<()> {
    let client = |conn: &Connection| {
        let conn = conn.clone();
        async move {
            anyhow::Ok(AlertsClient::new(
                fleetmon::tls::connect(&conn.writer, &conn.tls()).await?,
            ))
        }
    };
    match command {
        MaintenanceCommand::Add(add) => {
            let AddArgs { window, connection } = *add;
            let request = window.request();
            let created = client(&connection)
                .await?
                .create_maintenance(request)
                .await
                .map_err(|s| call_error("Alerts/CreateMaintenance", &connection.writer, s))?
                .into_inner();
            if connection.json {
                println!("{}", serde_json::to_string_pretty(&window_json(&created))?);
            } else {
                println!(
                    "maintenance {}: {}{}",
                    created.id,
                    schedule(&created),
                    if created.active { ", active now" } else { "" }
                );
            }
        }
        MaintenanceCommand::List { connection } => {
            let list = client(&connection)
                .await?
                .list_maintenance(ListMaintenanceRequest {})
                .await
                .map_err(|s| call_error("Alerts/ListMaintenance", &connection.writer, s))?
                .into_inner()
                .windows;
            print_list(
                connection.json,
                &list,
                window_json,
                "no maintenance windows",
                &[
                    "ID", "NAME", "CHECK", "AGENT", "WHEN", "NOW", "BY", "REASON",
                ],
                |w| {
                    vec![
                        w.id.to_string(),
                        w.name.clone(),
                        w.check_id.clone(),
                        agents(w),
                        schedule(w),
                        if w.active { "ACTIVE" } else { "planned" }.to_owned(),
                        w.created_by.clone(),
                        w.reason.clone(),
                    ]
                },
            )?;
        }
        MaintenanceCommand::Apply(ApplyArgs {
            file,
            dry_run,
            prune,
            connection,
        }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let wanted = parse_file(&file.display().to_string(), &text)?;
            let mut alerts = client(&connection).await?;
            let current = alerts
                .list_maintenance(ListMaintenanceRequest {})
                .await
                .map_err(|s| call_error("Alerts/ListMaintenance", &connection.writer, s))?
                .into_inner()
                .windows;
            let plan = plan(&wanted, &current, prune, SystemTime::now());
            print!("{}", plan.describe());
            if dry_run {
                return Ok(());
            }
            for request in plan.create.into_iter().chain(plan.replace) {
                alerts
                    .create_maintenance(request)
                    .await
                    .map_err(|s| call_error("Alerts/CreateMaintenance", &connection.writer, s))?;
            }
            for window in plan.remove {
                alerts
                    .remove_maintenance(RemoveMaintenanceRequest { id: window.id })
                    .await
                    .map_err(|s| call_error("Alerts/RemoveMaintenance", &connection.writer, s))?;
            }
        }
        MaintenanceCommand::Rm { id, connection } => {
            let removed = client(&connection)
                .await?
                .remove_maintenance(RemoveMaintenanceRequest { id })
                .await
                .map_err(|s| call_error("Alerts/RemoveMaintenance", &connection.writer, s))?
                .into_inner();
            println!("maintenance {} removed", removed.id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_times_read_as_people_write_them() {
        assert_eq!(parse_weekday("Sun"), Ok(0));
        assert_eq!(parse_weekday("saturday"), Ok(6));
        assert_eq!(
            parse_weekday("funday"),
            Err("`funday` is not a day: use sun, mon, tue, wed, thu, fri or sat".to_owned())
        );
        assert_eq!(
            parse_time("2026-12-24T22:00:00Z").map(|t| t.seconds),
            Ok(1_798_149_600)
        );
        assert!(parse_time("24.12.2026").is_err());
    }
}
