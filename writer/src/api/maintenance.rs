//! Maintenance windows in the `Alerts` service: planned work, one-off or weekly, during
//! which the notifications of the alerts a window covers are held back (the notifier
//! reads `maintenance_active`, written once in SQL). Created, listed and removed here,
//! each change recorded in the audit trail in its transaction.

use std::time::{Duration, SystemTime};

use fleetmon::audit::Author;
use fleetmon::pb::{CreateMaintenanceRequest, MaintenanceWindow};

use crate::api::error::ServiceError;

const CREATE_MAINTENANCE: &str = include_str!("../../sql/create_maintenance.sql");
const LIST_MAINTENANCE: &str = include_str!("../../sql/list_maintenance.sql");
const REMOVE_MAINTENANCE: &str = include_str!("../../sql/remove_maintenance.sql");
const TIME_ZONE_EXISTS: &str = include_str!("../../sql/time_zone_exists.sql");
const MAINTENANCE_WINDOW: &str = include_str!("../../sql/maintenance_window.sql");
const NAMED_MAINTENANCE: &str = include_str!("../../sql/named_maintenance.sql");

/// Longest one-off window.
pub const MAX_ONE_OFF: Duration = Duration::from_secs(31 * 24 * 3600);
/// Longest weekly window, in minutes (a week).
pub const MAX_WEEKLY_MINUTES: u32 = 7 * 24 * 60;

/// A window as the API shows it, from a row of `maintenance_windows_shown`.
pub fn window(row: &tokio_postgres::Row) -> MaintenanceWindow {
    let time = |column: &str| {
        row.get::<_, Option<SystemTime>>(column)
            .map(prost_types::Timestamp::from)
    };
    MaintenanceWindow {
        id: u64::try_from(row.get::<_, i64>("window_id")).unwrap_or_default(),
        check_id: row.get("check_id"),
        agent_id: row.get("agent_id"),
        reason: row.get("reason"),
        created_by: row.get("created_by"),
        created_at: time("created_at"),
        starts_at: time("starts_at"),
        ends_at: time("ends_at"),
        weekdays: row
            .get::<_, Option<Vec<i16>>>("weekdays")
            .unwrap_or_default()
            .into_iter()
            .map(|d| u32::try_from(d).unwrap_or_default())
            .collect(),
        start_time: row
            .get::<_, Option<String>>("start_hhmm")
            .unwrap_or_default(),
        duration_minutes: row
            .get::<_, Option<i64>>("duration_minutes")
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or_default(),
        time_zone: row
            .get::<_, Option<String>>("time_zone")
            .unwrap_or_default(),
        active: row.get("active"),
        name: row.get::<_, Option<String>>("name").unwrap_or_default(),
        labels: serde_json::from_value(row.get::<_, serde_json::Value>("labels"))
            .unwrap_or_default(),
    }
}

/// What a window's request asks for, checked: a one-off span or a weekly rule.
enum Schedule {
    OneOff(SystemTime, SystemTime),
    Weekly {
        weekdays: Vec<i16>,
        start_time: String,
        minutes: i32,
        time_zone: String,
    },
}

/// "HH:MM" with HH 00-23 and MM 00-59.
fn valid_time_of_day(text: &str) -> bool {
    let Some((hours, minutes)) = text.split_once(':') else {
        return false;
    };
    hours.len() == 2
        && minutes.len() == 2
        && hours.parse::<u8>().is_ok_and(|h| h < 24)
        && minutes.parse::<u8>().is_ok_and(|m| m < 60)
}

fn schedule(request: &CreateMaintenanceRequest) -> Result<Schedule, ServiceError> {
    let weekly = !request.weekdays.is_empty()
        || !request.start_time.is_empty()
        || request.duration_minutes != 0
        || !request.time_zone.is_empty();
    let to_time = |t: &prost_types::Timestamp| SystemTime::try_from(*t).ok();
    match (request.starts_at.as_ref(), request.ends_at.as_ref(), weekly) {
        (Some(starts), Some(ends), false) => {
            let (Some(starts), Some(ends)) = (to_time(starts), to_time(ends)) else {
                return Err(ServiceError::invalid(
                    "starts_at and ends_at must be times after 1970",
                ));
            };
            if ends <= starts {
                return Err(ServiceError::invalid("ends_at must be after starts_at"));
            }
            if ends <= SystemTime::now() {
                return Err(ServiceError::invalid(
                    "ends_at is in the past: the window would hold nothing back",
                ));
            }
            if ends.duration_since(starts).unwrap_or_default() > MAX_ONE_OFF {
                return Err(ServiceError::invalid(
                    "a one-off window lasts at most 31 days: use a weekly one for regular work",
                ));
            }
            Ok(Schedule::OneOff(starts, ends))
        }
        (None, None, true) => {
            if request.weekdays.is_empty() || request.weekdays.iter().any(|d| *d > 6) {
                return Err(ServiceError::invalid(
                    "weekdays must name at least one day, each 0 (Sunday) to 6 (Saturday)",
                ));
            }
            if !valid_time_of_day(&request.start_time) {
                return Err(ServiceError::invalid(format!(
                    "start_time `{}` is not a time of day: write HH:MM, e.g. 02:00",
                    request.start_time.chars().take(40).collect::<String>()
                )));
            }
            if request.duration_minutes == 0 || request.duration_minutes > MAX_WEEKLY_MINUTES {
                return Err(ServiceError::invalid(format!(
                    "duration_minutes must be from 1 to {MAX_WEEKLY_MINUTES} (a week)"
                )));
            }
            let mut weekdays: Vec<i16> = request.weekdays.iter().map(|d| *d as i16).collect();
            weekdays.sort_unstable();
            weekdays.dedup();
            Ok(Schedule::Weekly {
                weekdays,
                start_time: request.start_time.clone(),
                minutes: request.duration_minutes as i32,
                time_zone: request.time_zone.trim().to_owned(),
            })
        }
        _ => Err(ServiceError::invalid(
            "give either starts_at and ends_at (a one-off window) or weekdays, start_time, duration_minutes and time_zone (a weekly one)",
        )),
    }
}

/// Creates the window `request` asks for, by `author`, recorded in the audit trail.
pub async fn create(
    client: &mut deadpool_postgres::Object,
    author: &Author,
    request: CreateMaintenanceRequest,
) -> Result<MaintenanceWindow, ServiceError> {
    let (check_id, agent_id) = (request.check_id.trim(), request.agent_id.trim());
    crate::api::matcher::reason(&request.reason)?;
    crate::api::matcher::check(
        client,
        "a maintenance window",
        check_id,
        agent_id,
        Some(&request.labels),
    )
    .await?;
    let labels = serde_json::json!(request.labels);
    let name = request.name.trim();
    if !name.is_empty() {
        fleetmon::checks::validate_id(name).map_err(|_| {
            ServiceError::invalid(format!(
                "name `{}` is not a slug: use 1 to 63 lowercase letters, digits and `-`, starting with a letter (e.g. db-patching)",
                name.chars().take(80).collect::<String>()
            ))
        })?;
    } else if request.replace {
        return Err(ServiceError::invalid(
            "replace needs a name: it replaces the window of that name",
        ));
    }
    let schedule = schedule(&request)?;
    let operator = author.peer.name.clone();
    let (starts, ends, weekdays, start_time, minutes, time_zone) = match schedule {
        Schedule::OneOff(starts, ends) => (Some(starts), Some(ends), None, None, 0, None),
        Schedule::Weekly {
            weekdays,
            start_time,
            minutes,
            time_zone,
        } => {
            if client
                .query_opt(TIME_ZONE_EXISTS, &[&time_zone])
                .await?
                .is_none()
            {
                return Err(ServiceError::invalid(format!(
                    "time_zone `{}` is not a time zone: use an IANA name such as Europe/Berlin, America/New_York or UTC",
                    time_zone.chars().take(60).collect::<String>()
                )));
            }
            (
                None,
                None,
                Some(weekdays),
                Some(start_time),
                minutes,
                Some(time_zone),
            )
        }
    };
    let tx = client.transaction().await?;
    let name = (!name.is_empty()).then_some(name);
    if let Some(name) = name
        && let Some(existing) = tx.query_opt(NAMED_MAINTENANCE, &[&name]).await?
    {
        let existing: i64 = existing.get("window_id");
        if !request.replace {
            return Err(ServiceError::already_exists(format!(
                "maintenance window `{name}` exists (window {existing}): remove it first, or change it with fleetmon maintenance apply"
            )));
        }
        tx.execute(REMOVE_MAINTENANCE, &[&existing]).await?;
        let removed = window(&tx.query_one(MAINTENANCE_WINDOW, &[&existing]).await?);
        record(&tx, author, "maintenance.remove", &removed).await?;
    }
    let id: i64 = tx
        .query_one(
            CREATE_MAINTENANCE,
            &[
                &check_id,
                &agent_id,
                &request.reason,
                &operator,
                &starts,
                &ends,
                &weekdays,
                &start_time,
                &minutes,
                &time_zone,
                &name,
                &labels,
            ],
        )
        .await?
        .get("window_id");
    let created = window(&tx.query_one(MAINTENANCE_WINDOW, &[&id]).await?);
    record(&tx, author, "maintenance.create", &created).await?;
    tx.commit().await?;
    tracing::info!(%operator, id = created.id, check_id, agent_id, "maintenance window created");
    Ok(created)
}

/// The windows not removed and not over.
pub async fn list(
    client: &deadpool_postgres::Object,
) -> Result<Vec<MaintenanceWindow>, ServiceError> {
    Ok(client
        .query(LIST_MAINTENANCE, &[])
        .await?
        .iter()
        .map(window)
        .collect())
}

/// Removes window `id` now, by `author`, recorded in the audit trail.
pub async fn remove(
    client: &mut deadpool_postgres::Object,
    author: &Author,
    id: u64,
) -> Result<MaintenanceWindow, ServiceError> {
    let window_id = i64::try_from(id).ok().filter(|id| *id > 0).ok_or_else(|| {
        ServiceError::invalid("id must be a window id (fleetmon maintenance list)")
    })?;
    let tx = client.transaction().await?;
    tx.query_opt(REMOVE_MAINTENANCE, &[&window_id])
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("no maintenance window {window_id}")))?;
    let removed = window(&tx.query_one(MAINTENANCE_WINDOW, &[&window_id]).await?);
    record(&tx, author, "maintenance.remove", &removed).await?;
    tx.commit().await?;
    Ok(removed)
}

async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    author: &Author,
    action: &str,
    window: &MaintenanceWindow,
) -> Result<(), ServiceError> {
    let after = serde_json::json!({
        "id": window.id,
        "name": window.name,
        "check_id": window.check_id,
        "labels": window.labels,
        "agent_id": window.agent_id,
        "reason": window.reason,
        "starts_at": window.starts_at.map(|t| t.seconds),
        "ends_at": window.ends_at.map(|t| t.seconds),
        "weekdays": window.weekdays,
        "start_time": window.start_time,
        "duration_minutes": window.duration_minutes,
        "time_zone": window.time_zone,
    });
    let event = author.event(
        action,
        &format!("maintenance {}", window.id),
        None,
        Some(after),
    );
    crate::api::audit::insert(tx, &event).await?;
    Ok(())
}
