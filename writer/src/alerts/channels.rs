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

/// One HTTP POST to a channel: where, what, and the headers its API asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The address (it may hold a secret, e.g. Telegram's bot token: shown redacted).
    pub url: String,
    /// The JSON body.
    pub body: Value,
    /// Headers besides the channel's own `headers`.
    pub headers: Vec<(&'static str, String)>,
}

impl Outgoing {
    fn to(url: impl Into<String>, body: Value) -> Outgoing {
        Outgoing {
            url: url.into(),
            body,
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: String) -> Outgoing {
        self.headers.push((name, value));
        self
    }
}

/// The requests that carry `notifications` to `channel`, in order: one for most kinds;
/// one per notification where the API takes one event a request (PagerDuty,
/// Opsgenie); one per recipient where it takes one recipient (Telegram, ntfy,
/// Pushover).
pub fn requests(
    channel: &ChannelConfig,
    key: &str,
    notifications: &[Value],
    now: SystemTime,
) -> Vec<Outgoing> {
    let url = channel.endpoint();
    let base = url.trim_end_matches('/');
    let recipients = || channel.to.iter().filter(|t| !t.trim().is_empty());
    let urgency = Urgency::of(notifications);
    match channel.kind {
        ChannelKind::Webhook if !channel.body_template.is_empty() => {
            let count = notifications.len().to_string();
            let body = super::template::render(
                &channel.body_template,
                &[
                    ("title", &subject(notifications)),
                    ("text", &lines(notifications)),
                    ("count", &count),
                    ("key", key),
                    ("channel", &channel.name),
                ],
            );
            // Checked at start to be JSON with any values; kept as text otherwise.
            let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
            vec![Outgoing::to(url.clone(), body)]
        }
        ChannelKind::Webhook => vec![Outgoing::to(
            url.clone(),
            json!({
                "idempotency_key": key,
                "channel": channel.name,
                "notifications": notifications,
            }),
        )],
        ChannelKind::Slack => vec![Outgoing::to(
            url.clone(),
            json!({ "text": slack_text(notifications) }),
        )],
        ChannelKind::Alertmanager => {
            // The newest state of each alert once: a group may hold its opening and
            // its resolution.
            let alerts: BTreeMap<i64, &Value> = notifications
                .iter()
                .map(|n| (n["alert"]["id"].as_i64().unwrap_or_default(), &n["alert"]))
                .collect();
            vec![Outgoing::to(
                url.clone(),
                alertmanager_alerts(alerts.into_values(), channel, now),
            )]
        }
        ChannelKind::Pagerduty => notifications
            .iter()
            .map(|n| Outgoing::to(url.clone(), pagerduty_event(&channel.routing_key, n)))
            .collect(),
        // Mail is not a request ([`super::email`]).
        ChannelKind::Email => Vec::new(),
        ChannelKind::Discord => vec![Outgoing::to(
            url.clone(),
            // Causes hold text from monitored sites: no @everyone from them.
            json!({
                "content": cut(&slack_text(notifications), DISCORD_CHARS),
                "allowed_mentions": { "parse": [] },
            }),
        )],
        ChannelKind::Teams => vec![Outgoing::to(url.clone(), teams_card(notifications))],
        ChannelKind::Telegram => recipients()
            .map(|chat| {
                Outgoing::to(
                    format!("{base}/bot{}/sendMessage", channel.token),
                    json!({
                        "chat_id": chat,
                        "text": cut(&slack_text(notifications), TELEGRAM_CHARS),
                        "disable_web_page_preview": true,
                    }),
                )
            })
            .collect(),
        ChannelKind::Ntfy => recipients()
            .map(|topic| {
                let request = Outgoing::to(
                    base.to_owned(),
                    json!({
                        "topic": topic,
                        "title": subject(notifications),
                        "message": lines(notifications),
                        "priority": urgency.ntfy(),
                        "tags": [urgency.tag()],
                    }),
                );
                if channel.token.is_empty() {
                    request
                } else {
                    request.with("authorization", format!("Bearer {}", channel.token))
                }
            })
            .collect(),
        ChannelKind::Gotify => vec![
            Outgoing::to(
                format!("{base}/message"),
                json!({
                    "title": subject(notifications),
                    "message": lines(notifications),
                    "priority": urgency.gotify(),
                }),
            )
            .with("x-gotify-key", channel.token.clone()),
        ],
        ChannelKind::Pushover => recipients()
            .map(|user| {
                Outgoing::to(
                    url.clone(),
                    json!({
                        "token": channel.token,
                        "user": user,
                        "title": cut(&subject(notifications), PUSHOVER_TITLE_CHARS),
                        "message": cut(&lines(notifications), PUSHOVER_CHARS),
                        "priority": urgency.pushover(),
                    }),
                )
            })
            .collect(),
        ChannelKind::Opsgenie => notifications
            .iter()
            .map(|n| {
                opsgenie_request(base, n)
                    .with("authorization", format!("GenieKey {}", channel.token))
            })
            .collect(),
    }
}

/// Longest Discord message.
const DISCORD_CHARS: usize = 2000;
/// Longest Telegram message.
const TELEGRAM_CHARS: usize = 4096;
/// Longest Pushover message and title.
const PUSHOVER_CHARS: usize = 1024;
const PUSHOVER_TITLE_CHARS: usize = 250;
/// Longest Opsgenie alert message.
const OPSGENIE_MESSAGE_CHARS: usize = 130;

/// `text` cut to at most `max` characters, ending with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// How urgent a delivery is: its most severe opened (or reminded) alert; a delivery of
/// resolutions only is the least urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Urgency {
    Resolved,
    Warning,
    Error,
    Critical,
}

impl Urgency {
    fn of(notifications: &[Value]) -> Urgency {
        notifications
            .iter()
            .map(|n| {
                if n["event"] == "resolved" {
                    return Urgency::Resolved;
                }
                match fleetmon::alert_kind::severity(n["alert"]["kind"].as_str().unwrap_or("")) {
                    "critical" => Urgency::Critical,
                    "error" => Urgency::Error,
                    _ => Urgency::Warning,
                }
            })
            .max()
            .unwrap_or(Urgency::Resolved)
    }

    /// ntfy: 1 (min) to 5 (max).
    fn ntfy(self) -> u8 {
        match self {
            Urgency::Resolved => 2,
            Urgency::Warning => 3,
            Urgency::Error => 4,
            Urgency::Critical => 5,
        }
    }

    /// ntfy's tag, shown as an emoji.
    fn tag(self) -> &'static str {
        match self {
            Urgency::Resolved => "white_check_mark",
            Urgency::Warning => "warning",
            Urgency::Error | Urgency::Critical => "rotating_light",
        }
    }

    /// Gotify: 0 to 10; 8 and above alert loudly on Android.
    fn gotify(self) -> u8 {
        match self {
            Urgency::Resolved => 2,
            Urgency::Warning => 4,
            Urgency::Error => 6,
            Urgency::Critical => 8,
        }
    }

    /// Pushover: -1 quiet, 0 normal, 1 high (bypasses quiet hours).
    fn pushover(self) -> i8 {
        match self {
            Urgency::Resolved => -1,
            Urgency::Warning | Urgency::Error => 0,
            Urgency::Critical => 1,
        }
    }
}

/// `fleetmon: [opened] check_down shop` for one notification, `fleetmon: 3
/// notifications (2 opened, 1 resolved)` for more.
pub fn subject(notifications: &[Value]) -> String {
    if let [one] = notifications {
        let alert = &one["alert"];
        return format!(
            "fleetmon: [{}] {} {}",
            one["event"].as_str().unwrap_or_default(),
            alert["kind"].as_str().unwrap_or_default(),
            alert["subject"].as_str().unwrap_or_default()
        );
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for notification in notifications {
        *counts
            .entry(notification["event"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(event, n)| format!("{n} {event}"))
        .collect();
    format!(
        "fleetmon: {} notifications ({})",
        notifications.len(),
        counts.join(", ")
    )
}

/// The Slack text without its first line: one line per notification.
fn lines(notifications: &[Value]) -> String {
    let text = slack_text(notifications);
    text.split_once('\n')
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or(text)
}

/// A Teams Workflows message: one Adaptive Card with the subject and the lines.
fn teams_card(notifications: &[Value]) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    { "type": "TextBlock", "text": subject(notifications), "weight": "Bolder", "size": "Medium", "wrap": true },
                    { "type": "TextBlock", "text": lines(notifications), "wrap": true },
                ],
            },
        }],
    })
}

/// One Opsgenie Alert API call: create the alert (alias = the fleetmon alert, so a
/// repeat is the same alert) for an opening or a reminder, close it by alias for a
/// resolution.
fn opsgenie_request(base: &str, notification: &Value) -> Outgoing {
    let alert = &notification["alert"];
    let alias = format!("fleetmon-alert-{}", alert["id"]);
    let kind = alert["kind"].as_str().unwrap_or_default();
    let subject = alert["subject"].as_str().unwrap_or_default();
    let cause = alert["cause"].as_str().unwrap_or_default();
    if notification["event"] == "resolved" {
        return Outgoing::to(
            format!("{base}/v2/alerts/{alias}/close?identifierType=alias"),
            json!({ "source": "fleetmon", "note": cause }),
        );
    }
    let priority = match fleetmon::alert_kind::severity(kind) {
        "critical" => "P1",
        "error" => "P2",
        _ => "P3",
    };
    Outgoing::to(
        format!("{base}/v2/alerts"),
        json!({
            "message": cut(&format!("{kind} {subject}"), OPSGENIE_MESSAGE_CHARS),
            "alias": alias,
            "description": cause,
            "priority": priority,
            "source": "fleetmon",
            "entity": subject,
            "tags": ["fleetmon", kind],
            "details": {
                "event": notification["event"],
                "locations": alert["locations"],
                "agent": alert["agent_id"],
            },
        }),
    )
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
