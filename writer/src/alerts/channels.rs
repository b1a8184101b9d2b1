//! What each kind of channel is sent: the request bodies built from the notifications
//! of one delivery (each `{"event", "alert": {…}}` as `notification_bodies.sql` makes
//! it). The outbox, grouping, retries and silences are the notifier's, shared by all.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::config::{ChannelConfig, ChannelKind};

/// Lines of a Slack message before "… and N more".
const SLACK_LINES: usize = 20;
/// Longest PagerDuty `payload.summary`.
const PAGERDUTY_SUMMARY_CHARS: usize = 1024;

/// The requests that carry `notifications` to `channel`, in order: one for most kinds,
/// one per notification for PagerDuty (its Events API takes one event a request).
pub fn requests(
    channel: &ChannelConfig,
    key: &str,
    notifications: &[Value],
    now: SystemTime,
) -> Vec<Value> {
    match channel.kind {
        ChannelKind::Webhook => vec![json!({
            "idempotency_key": key,
            "channel": channel.name,
            "notifications": notifications,
        })],
        ChannelKind::Slack => vec![json!({ "text": slack_text(notifications) })],
        ChannelKind::Alertmanager => {
            // The newest state of each alert once: a group may hold its opening and
            // its resolution.
            let alerts: BTreeMap<i64, &Value> = notifications
                .iter()
                .map(|n| (n["alert"]["id"].as_i64().unwrap_or_default(), &n["alert"]))
                .collect();
            vec![alertmanager_alerts(alerts.into_values(), channel, now)]
        }
        ChannelKind::Pagerduty => notifications
            .iter()
            .map(|n| pagerduty_event(&channel.routing_key, n))
            .collect(),
        // Mail is not a request ([`super::email`]).
        ChannelKind::Email => Vec::new(),
    }
}

/// One line per notification, at most [`SLACK_LINES`].
pub fn slack_text(notifications: &[Value]) -> String {
    let line = |n: &Value| {
        let alert = &n["alert"];
        format!(
            "• [{}] {} {}: {}",
            n["event"].as_str().unwrap_or_default(),
            alert["kind"].as_str().unwrap_or_default(),
            alert["subject"].as_str().unwrap_or_default(),
            alert["cause"].as_str().unwrap_or_default()
        )
    };
    let mut lines: Vec<String> = vec![match notifications.len() {
        1 => "fleetmon: 1 notification".to_owned(),
        n => format!("fleetmon: {n} notifications"),
    }];
    lines.extend(notifications.iter().take(SLACK_LINES).map(line));
    if notifications.len() > SLACK_LINES {
        lines.push(format!("… and {} more", notifications.len() - SLACK_LINES));
    }
    lines.join("\n")
}

/// RFC 3339 text of `time`.
fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The body of a POST to Alertmanager's `/api/v2/alerts`: each alert with labels that
/// stay the same while it is open (`alertname` = the kind, `subject`, `agent`,
/// `severity`, `fleetmon_alert_id`) and its cause and locations as annotations. An
/// open alert ends four resends from `now` unless sent again; a resolved one ended
/// when it resolved.
pub fn alertmanager_alerts<'a>(
    alerts: impl IntoIterator<Item = &'a Value>,
    channel: &ChannelConfig,
    now: SystemTime,
) -> Value {
    let expires = rfc3339(now + Duration::from_secs(4 * channel.resend_seconds));
    Value::Array(
        alerts
            .into_iter()
            .map(|alert| {
                let kind = alert["kind"].as_str().unwrap_or_default();
                let mut labels = json!({
                    "alertname": kind,
                    "subject": alert["subject"],
                    "severity": fleetmon::alert_kind::severity(kind),
                    "source": "fleetmon",
                    "fleetmon_alert_id": alert["id"].to_string(),
                });
                if let Some(agent) = alert["agent_id"].as_str().filter(|a| !a.is_empty()) {
                    labels["agent"] = agent.into();
                }
                let locations: Vec<&str> = alert["locations"]
                    .as_array()
                    .map(|l| l.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let ends = match alert["resolved_at"].as_str() {
                    Some(resolved) => resolved.to_owned(),
                    None => expires.clone(),
                };
                json!({
                    "labels": labels,
                    "annotations": {
                        "summary": alert["cause"],
                        "locations": locations.join(", "),
                    },
                    "startsAt": alert["opened_at"],
                    "endsAt": ends,
                })
            })
            .collect(),
    )
}

/// One PagerDuty Events API v2 event: `resolve` for a resolution, `trigger` for an
/// opening or a reminder (PagerDuty keeps one incident per `dedup_key`, the alert).
pub fn pagerduty_event(routing_key: &str, notification: &Value) -> Value {
    let alert = &notification["alert"];
    let dedup_key = format!("fleetmon-alert-{}", alert["id"]);
    if notification["event"] == "resolved" {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let kind = alert["kind"].as_str().unwrap_or_default();
    let subject = alert["subject"].as_str().unwrap_or_default();
    let agent = alert["agent_id"].as_str().unwrap_or_default();
    let summary: String = format!(
        "{kind} {subject}: {}",
        alert["cause"].as_str().unwrap_or_default()
    )
    .chars()
    .take(PAGERDUTY_SUMMARY_CHARS)
    .collect();
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "fleetmon",
        "payload": {
            "summary": summary,
            "source": if agent.is_empty() { subject } else { agent },
            "severity": fleetmon::alert_kind::severity(kind),
            "timestamp": alert["opened_at"],
            "component": subject,
            "class": kind,
            "custom_details": {
                "event": notification["event"],
                "locations": alert["locations"],
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_slack_message() {
        let notifications: Vec<Value> = (0..25)
            .map(|i| {
                json!({"event": "opened", "alert": {"kind": "check_down", "subject": format!("c{i}"), "cause": "down"}})
            })
            .collect();
        let text = slack_text(&notifications);
        assert!(text.starts_with("fleetmon: 25 notifications\n• [opened] check_down c0: down"));
        assert!(text.ends_with("… and 5 more"));
        assert_eq!(text.lines().count(), 22);
    }

    #[test]
    fn a_pagerduty_summary_is_cut_to_1024_characters() {
        let cause = "é".repeat(2000);
        let event = pagerduty_event(
            "key",
            &json!({"event": "opened", "alert": {"id": 7, "kind": "check_down", "subject": "shop", "agent_id": "", "cause": cause}}),
        );
        assert_eq!(
            event["payload"]["summary"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            1024
        );
        assert_eq!(event["payload"]["source"], "shop");
        assert_eq!(event["dedup_key"], "fleetmon-alert-7");
    }
}
