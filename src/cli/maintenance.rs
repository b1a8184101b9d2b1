//! `fleetmon maintenance`: planned work on the writer's `Alerts` service. While a
//! window is active, notifications of the alerts it covers are held back.

use std::time::Duration;

use clap::Subcommand;
use fleetmon::pb::alerts_client::AlertsClient;
use fleetmon::pb::{
    CreateMaintenanceRequest, ListMaintenanceRequest, MaintenanceWindow, RemoveMaintenanceRequest,
};
use serde_json::{Value, json};

use super::table::{print_list, rfc3339};
use super::{Connection, call_error, parse_duration};

/// `fleetmon maintenance …`.
#[derive(Debug, Subcommand)]
pub(crate) enum MaintenanceCommand {
    /// Plan a window: one-off (--from, --until) or weekly (--weekly, --at, --for, --tz).
    Add {
        #[command(flatten)]
        connection: Connection,
        /// Alerts about this check id.
        #[arg(long = "check", default_value = "")]
        check_id: String,
        /// Alerts about this agent (its host, its own sites, or it as a location).
        #[arg(long = "agent", default_value = "")]
        agent_id: String,
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
        /// Why, for whoever reads the list.
        #[arg(long, default_value = "")]
        reason: String,
    },
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

/// A time given as RFC 3339.
fn parse_time(text: &str) -> Result<prost_types::Timestamp, String> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            format!("`{text}` is not an RFC 3339 time: write e.g. 2026-12-24T22:00:00Z")
        })?;
    Ok(prost_types::Timestamp {
        seconds: time.unix_timestamp(),
        nanos: 0,
    })
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
        "check_id": w.check_id,
        "agent_id": w.agent_id,
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
        MaintenanceCommand::Add {
            connection,
            check_id,
            agent_id,
            from,
            until,
            weekly,
            start_time,
            duration,
            time_zone,
            reason,
        } => {
            let weekly_given = !weekly.is_empty();
            let created = client(&connection)
                .await?
                .create_maintenance(CreateMaintenanceRequest {
                    check_id,
                    agent_id,
                    reason,
                    starts_at: from,
                    ends_at: until,
                    weekdays: weekly,
                    start_time: if weekly_given {
                        start_time
                    } else {
                        String::new()
                    },
                    duration_minutes: duration
                        .map(|d| u32::try_from(d.as_secs() / 60).unwrap_or(u32::MAX))
                        .unwrap_or_default(),
                    time_zone: if weekly_given {
                        time_zone
                    } else {
                        String::new()
                    },
                })
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
                &["ID", "CHECK", "AGENT", "WHEN", "NOW", "BY", "REASON"],
                |w| {
                    vec![
                        w.id.to_string(),
                        w.check_id.clone(),
                        w.agent_id.clone(),
                        schedule(w),
                        if w.active { "ACTIVE" } else { "planned" }.to_owned(),
                        w.created_by.clone(),
                        w.reason.clone(),
                    ]
                },
            )?;
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
