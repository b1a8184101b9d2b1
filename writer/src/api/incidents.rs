//! Incidents in the `Alerts` service: what status pages tell the public. A quorum
//! outage of a central check opens one by itself (a trigger on `alerts`, V22); here
//! operators list them, open others and add updates, each change recorded in the audit
//! trail in its transaction.

use std::time::{Duration, SystemTime};

use fleetmon::audit::Author;
use fleetmon::pb::{Incident, IncidentUpdate, OpenIncidentRequest, UpdateIncidentRequest};

use crate::api::error::ServiceError;

const LIST_INCIDENTS: &str = include_str!("../../sql/list_incidents.sql");
const INCIDENT: &str = include_str!("../../sql/incident.sql");
const OPEN_INCIDENT: &str = include_str!("../../sql/open_incident.sql");
const UPDATE_INCIDENT: &str = include_str!("../../sql/update_incident.sql");
const LOCK_INCIDENT: &str = include_str!("../../sql/lock_incident.sql");
const UNKNOWN_CHECKS: &str = include_str!("../../sql/unknown_checks.sql");

/// The statuses an incident goes through.
pub const STATUSES: [&str; 4] = ["investigating", "identified", "monitoring", "resolved"];
/// Longest title (characters).
const MAX_TITLE: usize = 200;
/// Longest update message (characters).
const MAX_MESSAGE: usize = 2000;
/// Most checks one incident names.
const MAX_CHECKS: usize = 100;
/// Resolved incidents listed by default: those of the last this many days.
const DEFAULT_RESOLVED_DAYS: u32 = 14;

/// An incident as the API shows it, from a row of `incidents_shown`.
pub fn incident(row: &tokio_postgres::Row) -> Incident {
    let time = |column: &str| {
        row.get::<_, Option<SystemTime>>(column)
            .map(prost_types::Timestamp::from)
    };
    let updates: Vec<serde_json::Value> =
        serde_json::from_value(row.get("updates")).unwrap_or_default();
    Incident {
        id: u64::try_from(row.get::<_, i64>("incident_id")).unwrap_or_default(),
        title: row.get("title"),
        check_ids: row.get("check_ids"),
        status: row.get("status"),
        alert_id: row
            .get::<_, Option<i64>>("alert_id")
            .and_then(|id| u64::try_from(id).ok())
            .unwrap_or_default(),
        opened_at: time("opened_at"),
        resolved_at: time("resolved_at"),
        opened_by: row.get("opened_by"),
        updates: updates
            .iter()
            .map(|u| IncidentUpdate {
                at: u["at"].as_f64().map(|seconds| {
                    prost_types::Timestamp::from(
                        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0)),
                    )
                }),
                status: u["status"].as_str().unwrap_or_default().to_owned(),
                message: u["message"].as_str().unwrap_or_default().to_owned(),
                author: u["author"].as_str().unwrap_or_default().to_owned(),
            })
            .collect(),
    }
}

/// Open incidents, and those resolved within `days` (0: 14), newest first.
pub async fn list(
    client: &deadpool_postgres::Object,
    days: u32,
) -> Result<Vec<Incident>, ServiceError> {
    let days = if days == 0 {
        DEFAULT_RESOLVED_DAYS
    } else {
        days.min(3650)
    };
    let since = SystemTime::now() - Duration::from_secs(u64::from(days) * 86_400);
    Ok(client
        .query(LIST_INCIDENTS, &[&since])
        .await?
        .iter()
        .map(incident)
        .collect())
}

/// Incident `id`, or NOT_FOUND naming it.
pub async fn get(client: &deadpool_postgres::Object, id: u64) -> Result<Incident, ServiceError> {
    let row = client
        .query_opt(INCIDENT, &[&i64::try_from(id).unwrap_or(i64::MAX)])
        .await?
        .ok_or_else(|| {
            ServiceError::not_found(format!(
                "no incident {id} (fleetmon incidents list shows them)"
            ))
        })?;
    Ok(incident(&row))
}

/// A status an operator may give, or why not.
fn status(status: &str, field: &str) -> Result<(), ServiceError> {
    if STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "{field} `{status}` is not one of {}",
            STATUSES.join(", ")
        )))
    }
}

/// A message of 1 to [`MAX_MESSAGE`] characters, or why not.
fn message(message: &str) -> Result<(), ServiceError> {
    let chars = message.trim().chars().count();
    if chars == 0 || chars > MAX_MESSAGE {
        return Err(ServiceError::invalid(format!(
            "message must be 1 to {MAX_MESSAGE} characters (it is {chars})"
        )));
    }
    Ok(())
}

/// Opens an incident by hand with its first update.
pub async fn open(
    client: &mut deadpool_postgres::Object,
    author: &Author,
    request: OpenIncidentRequest,
) -> Result<Incident, ServiceError> {
    let title = request.title.trim();
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE || title.chars().any(char::is_control) {
        return Err(ServiceError::invalid(format!(
            "title must be 1 to {MAX_TITLE} characters without control characters"
        )));
    }
    let first = if request.status.is_empty() {
        "investigating"
    } else {
        request.status.as_str()
    };
    status(first, "status")?;
    if first == "resolved" {
        return Err(ServiceError::invalid(
            "status `resolved` opens nothing: open it as investigating, identified or monitoring, then resolve it",
        ));
    }
    message(&request.message)?;
    let mut checks = request.check_ids;
    checks.sort_unstable();
    checks.dedup();
    if checks.is_empty() || checks.len() > MAX_CHECKS {
        return Err(ServiceError::invalid(format!(
            "check_ids must name 1 to {MAX_CHECKS} checks"
        )));
    }
    let tx = client.transaction().await?;
    let unknown: Vec<String> = tx
        .query(UNKNOWN_CHECKS, &[&checks])
        .await?
        .iter()
        .map(|row| row.get("id"))
        .collect();
    if !unknown.is_empty() {
        return Err(ServiceError::invalid(format!(
            "check_ids names {}, which is not a check (`fleetmon checks list` shows them)",
            unknown.join(", ")
        )));
    }
    let operator = &author.peer.name;
    let id: i64 = tx
        .query_one(
            OPEN_INCIDENT,
            &[&title, &checks, &first, operator, &request.message.trim()],
        )
        .await?
        .get("incident_id");
    let opened = incident(&tx.query_one(INCIDENT, &[&id]).await?);
    record(&tx, author, "incidents.open", &opened).await?;
    tx.commit().await?;
    Ok(opened)
}

/// Adds an update to an incident not yet resolved.
pub async fn update(
    client: &mut deadpool_postgres::Object,
    author: &Author,
    request: UpdateIncidentRequest,
) -> Result<Incident, ServiceError> {
    let id = i64::try_from(request.id)
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ServiceError::invalid("id must be an incident id (fleetmon incidents)"))?;
    status(&request.status, "status")?;
    message(&request.message)?;
    let tx = client.transaction().await?;
    let resolved: Option<SystemTime> = tx
        .query_opt(LOCK_INCIDENT, &[&id])
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("no incident {id}")))?
        .get("resolved_at");
    if resolved.is_some() {
        return Err(ServiceError::failed_precondition(format!(
            "incident {id} is resolved: open a new one (fleetmon incidents open)"
        )));
    }
    tx.execute(
        UPDATE_INCIDENT,
        &[
            &id,
            &request.status,
            &request.message.trim(),
            &author.peer.name,
        ],
    )
    .await?;
    let updated = incident(&tx.query_one(INCIDENT, &[&id]).await?);
    record(&tx, author, "incidents.update", &updated).await?;
    tx.commit().await?;
    Ok(updated)
}

async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    author: &Author,
    action: &str,
    incident: &Incident,
) -> Result<(), ServiceError> {
    let last = incident.updates.last();
    let after = serde_json::json!({
        "id": incident.id,
        "title": incident.title,
        "check_ids": incident.check_ids,
        "status": incident.status,
        "message": last.map(|u| u.message.as_str()),
    });
    let event = author.event(
        action,
        &format!("incident {}", incident.id),
        None,
        Some(after),
    );
    crate::api::audit::insert(tx, &event).await?;
    Ok(())
}
