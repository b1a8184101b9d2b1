//! `fleetmon audit`: the operators' changes the writers hold, newest first.

use std::time::{Duration, SystemTime};

use fleetmon::pb::audit_client::AuditClient;
use fleetmon::pb::{AuditEvent, ListAuditEventsRequest};
use serde_json::{Value, json};

use super::table::{print_list, rfc3339};
use super::{Connection, call_error};

fn event_json(event: &AuditEvent) -> Value {
    let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    json!({
        "id": event.id,
        "at": rfc3339(event.at),
        "actor": event.actor,
        "actor_role": event.actor_role,
        "actor_uri": event.actor_uri,
        "remote_address": event.remote_address,
        "action": event.action,
        "subject": event.subject,
        "before": parsed(&event.before_json),
        "after": parsed(&event.after_json),
        "outcome": fleetmon::audit::outcome(event),
        "error": event.error,
    })
}

/// The ACTION cell: the action, and what became of it unless it was done.
fn action_cell(event: &AuditEvent) -> String {
    match fleetmon::audit::outcome(event) {
        fleetmon::audit::FAILED => format!("{} FAILED: {}", event.action, event.error),
        fleetmon::audit::REQUESTED => format!(
            "{} NOT CONFIRMED (its collector stopped before it could say; see the {} itself)",
            event.action, event.subject
        ),
        _ => event.action.clone(),
    }
}

/// `fleetmon audit [--since D] [--who NAME]`.
pub(crate) async fn audit(
    conn: &Connection,
    since: Duration,
    who: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let mut client = AuditClient::new(fleetmon::tls::connect(&conn.writer, &conn.tls()).await?);
    let events = client
        .list_audit_events(ListAuditEventsRequest {
            since: Some(prost_types::Timestamp::from(SystemTime::now() - since)),
            actor: who.unwrap_or_default(),
            limit,
        })
        .await
        .map_err(|s| call_error("Audit/ListAuditEvents", &conn.writer, s))?
        .into_inner()
        .events;
    print_list(
        conn.json,
        &events,
        event_json,
        "no changes recorded in that time",
        &["AT", "WHO", "ROLE", "ACTION", "SUBJECT", "FROM"],
        |e| {
            vec![
                rfc3339(e.at),
                e.actor.clone(),
                e.actor_role.clone(),
                action_cell(e),
                e.subject.clone(),
                e.remote_address.clone(),
            ]
        },
    )
}
