//! `fleetmon alerts` and `fleetmon silence`: the writer's `Alerts` service.

use std::time::Duration;

use clap::Subcommand;
use fleetmon::pb::alerts_client::AlertsClient;
use fleetmon::pb::{
    Alert, CreateSilenceRequest, ExpireSilenceRequest, GetAlertRequest, ListAlertsRequest,
    ListSilencesRequest, Silence, TestChannelRequest,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::table::{ago, print_list, render, rfc3339};
use super::{Connection, call_error, parse_duration};

/// `fleetmon silence …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SilenceCommand {
    /// Hold back notifications of alerts about a check and/or an agent for a while.
    Add {
        #[command(flatten)]
        connection: Connection,
        /// Alerts about this check id.
        #[arg(long = "check", default_value = "")]
        check_id: String,
        /// Alerts about this agent (its host, or it as a location).
        #[arg(long = "agent", default_value = "")]
        agent_id: String,
        /// How long (90s, 15m, 1h, 7d).
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Duration,
        /// Why, for whoever reads the list.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The silences that have not ended.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// End a silence now.
    Rm {
        /// The silence id (from `fleetmon silence list`).
        id: u64,
        #[command(flatten)]
        connection: Connection,
    },
}

async fn client(conn: &Connection) -> anyhow::Result<AlertsClient<Channel>> {
    Ok(AlertsClient::new(
        fleetmon::tls::connect(&conn.writer, &conn.tls()).await?,
    ))
}

fn alert_json(alert: &Alert) -> Value {
    json!({
        "id": alert.id,
        "kind": alert.kind,
        "subject": alert.subject,
        "agent_id": alert.agent_id,
        "cause": alert.cause,
        "locations": alert.locations,
        "opened_at": rfc3339(alert.opened_at),
        "resolved_at": alert.resolved_at.map(|t| rfc3339(Some(t))),
        "last_notified_at": alert.last_notified_at.map(|t| rfc3339(Some(t))),
        "silenced": alert.silenced,
        "in_maintenance": alert.in_maintenance,
    })
}

fn silence_json(silence: &Silence) -> Value {
    json!({
        "id": silence.id,
        "check_id": silence.check_id,
        "agent_id": silence.agent_id,
        "reason": silence.reason,
        "created_by": silence.created_by,
        "created_at": rfc3339(silence.created_at),
        "ends_at": rfc3339(silence.ends_at),
    })
}

/// `fleetmon alerts [--open]`, or `fleetmon alerts show ID`.
pub(crate) async fn alerts(conn: &Connection, open: bool, show: Option<u64>) -> anyhow::Result<()> {
    let mut alerts = client(conn).await?;
    if let Some(id) = show {
        let response = alerts
            .get_alert(GetAlertRequest { id })
            .await
            .map_err(|s| call_error("Alerts/GetAlert", &conn.writer, s))?
            .into_inner();
        let alert = response.alert.unwrap_or_default();
        if conn.json {
            let timeline: Vec<Value> = response
                .timeline
                .iter()
                .map(|e| json!({"at": rfc3339(e.at), "event": e.event, "detail": e.detail, "locations": e.locations}))
                .collect();
            let notifications: Vec<Value> = response
                .notifications
                .iter()
                .map(|n| json!({
                    "channel": n.channel, "event": n.event, "delivery_key": n.delivery_key,
                    "attempts": n.attempts, "delivered_at": n.delivered_at.map(|t| rfc3339(Some(t))),
                    "silenced_by": (n.silenced_by != 0).then_some(n.silenced_by),
                    "held_by_window": (n.held_by_window != 0).then_some(n.held_by_window),
                    "last_error": n.last_error,
                }))
                .collect();
            let mut value = alert_json(&alert);
            value["timeline"] = Value::from(timeline);
            value["notifications"] = Value::from(notifications);
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
        println!(
            "alert {} · {} {} · {}",
            alert.id,
            alert.kind,
            alert.subject,
            state(&alert)
        );
        println!("{}", alert.cause);
        let rows: Vec<Vec<String>> = response
            .timeline
            .iter()
            .map(|e| vec![rfc3339(e.at), e.event.clone(), e.detail.clone()])
            .collect();
        print!("{}", render(&["AT", "EVENT", "DETAIL"], &rows));
        let rows: Vec<Vec<String>> = response
            .notifications
            .iter()
            .map(|n| {
                let outcome = if n.silenced_by != 0 {
                    format!("silenced by {}", n.silenced_by)
                } else if n.held_by_window != 0 {
                    format!("held by maintenance {}", n.held_by_window)
                } else if n.delivered_at.is_some() {
                    format!("delivered {}", ago(n.delivered_at))
                } else if n.last_error.is_empty() {
                    "pending".to_owned()
                } else {
                    format!("retrying: {}", n.last_error)
                };
                vec![
                    n.channel.clone(),
                    n.event.clone(),
                    n.attempts.to_string(),
                    outcome,
                ]
            })
            .collect();
        if !rows.is_empty() {
            print!(
                "{}",
                render(&["CHANNEL", "EVENT", "ATTEMPTS", "OUTCOME"], &rows)
            );
        }
        return Ok(());
    }
    let list = alerts
        .list_alerts(ListAlertsRequest {
            open_only: open,
            limit: 0,
        })
        .await
        .map_err(|s| call_error("Alerts/ListAlerts", &conn.writer, s))?
        .into_inner()
        .alerts;
    print_list(
        conn.json,
        &list,
        alert_json,
        if open { "no open alerts" } else { "no alerts" },
        &["ID", "STATE", "KIND", "SUBJECT", "OPENED", "CAUSE"],
        |a| {
            vec![
                a.id.to_string(),
                state(a),
                a.kind.clone(),
                a.subject.clone(),
                ago(a.opened_at),
                a.cause.clone(),
            ]
        },
    )
}

fn state(alert: &Alert) -> String {
    match (
        alert.resolved_at.is_some(),
        alert.silenced,
        alert.in_maintenance,
    ) {
        (true, _, _) => "resolved".to_owned(),
        (false, true, _) => "open (silenced)".to_owned(),
        (false, false, true) => "open (maintenance)".to_owned(),
        (false, false, false) => "open".to_owned(),
    }
}

/// `fleetmon silence add|list|rm`.
pub(crate) async fn silence(command: SilenceCommand) -> anyhow::Result<()> {
    match command {
        SilenceCommand::Add {
            connection,
            check_id,
            agent_id,
            duration,
            reason,
        } => {
            let created = client(&connection)
                .await?
                .create_silence(CreateSilenceRequest {
                    check_id,
                    agent_id,
                    reason,
                    duration_seconds: duration.as_secs(),
                })
                .await
                .map_err(|s| call_error("Alerts/CreateSilence", &connection.writer, s))?
                .into_inner();
            if connection.json {
                println!("{}", serde_json::to_string_pretty(&silence_json(&created))?);
            } else {
                println!("silence {} until {}", created.id, rfc3339(created.ends_at));
            }
        }
        SilenceCommand::List { connection } => {
            let list = client(&connection)
                .await?
                .list_silences(ListSilencesRequest {})
                .await
                .map_err(|s| call_error("Alerts/ListSilences", &connection.writer, s))?
                .into_inner()
                .silences;
            print_list(
                connection.json,
                &list,
                silence_json,
                "no silences",
                &["ID", "CHECK", "AGENT", "ENDS", "BY", "REASON"],
                |s| {
                    vec![
                        s.id.to_string(),
                        s.check_id.clone(),
                        s.agent_id.clone(),
                        rfc3339(s.ends_at),
                        s.created_by.clone(),
                        s.reason.clone(),
                    ]
                },
            )?;
        }
        SilenceCommand::Rm { id, connection } => {
            let ended = client(&connection)
                .await?
                .expire_silence(ExpireSilenceRequest { id })
                .await
                .map_err(|s| call_error("Alerts/ExpireSilence", &connection.writer, s))?
                .into_inner();
            println!("silence {} ended", ended.id);
        }
    }
    Ok(())
}

/// `fleetmon alerts test-channel NAME`: what the channel answered to a test alert.
pub(crate) async fn test_channel(conn: &Connection, name: String) -> anyhow::Result<()> {
    let tested = client(conn)
        .await?
        .test_channel(TestChannelRequest { channel: name })
        .await
        .map_err(|s| call_error("Alerts/TestChannel", &conn.writer, s))?
        .into_inner();
    if conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "channel": tested.channel, "kind": tested.kind,
                "delivered": tested.delivered, "answer": tested.answer,
            }))?
        );
    } else {
        println!(
            "channel {} ({}): {}",
            tested.channel, tested.kind, tested.answer
        );
    }
    if !tested.delivered {
        anyhow::bail!("channel {} did not accept the test", tested.channel);
    }
    Ok(())
}
