//! Alert state in PostgreSQL, changed inside the caller's transaction: the rows
//! stored by a batch move `check_state`, and the verdicts that move open or resolve
//! `alerts`, with an `alert_events` line and one `notifications` row per channel (the
//! outbox). Committed with the rows that caused them, before the Kafka offsets are
//! stored, so every transition happens exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use fleetmon::pb::CheckDefinition;
use futures::future::BoxFuture;
use prost::Message as _;
use tokio::sync::Notify;
use tokio_postgres::Statement;

use crate::alerts::rules::{
    CheckRun, LocationState, LocationTally, Tally, Thresholds, needs_storing,
};
use crate::config::{AlertsConfig, ChannelConfig};
use crate::consume::row_batch::{CheckRow, as_stored};
use crate::store::{AfterRows, AfterRowsOutcome, Failure, SinkError, stored_directly};

const AGENT_LABELS: &str = include_str!("../../sql/agent_labels.sql");
const CHECK_TALLIES: &str = include_str!("../../sql/check_tallies.sql");
const LOCATION_TALLIES: &str = include_str!("../../sql/location_tallies.sql");
const INSERT_CHECK_STATE: &str = include_str!("../../sql/insert_check_state.sql");
static INSERT_MISSING_CHECK_STATE: LazyLock<String> = LazyLock::new(|| {
    [
        INSERT_CHECK_STATE,
        include_str!("../../sql/check_state_conflict.sql"),
    ]
    .concat()
});
const UPDATE_CHECK_STATE: &str = include_str!("../../sql/update_check_state.sql");
const CHECK_DEFINITIONS: &str = include_str!("../../sql/check_definitions.sql");
const LOCATION_STATES: &str = include_str!("../../sql/location_states.sql");
const OPEN_ALERT_SUBJECTS: &str = include_str!("../../sql/open_alert_subjects.sql");
const OPEN_ALERTS_AMONG: &str = include_str!("../../sql/open_alerts_among.sql");
const RESOLVE_ALERT: &str = include_str!("../../sql/resolve_alert.sql");
const UPDATE_ALERT_LOCATIONS: &str = include_str!("../../sql/update_alert_locations.sql");
const OPEN_ALERT: &str = include_str!("../../sql/open_alert.sql");
const OUTAGE_ENDED: &str = include_str!("../../sql/outage_ended.sql");
const QUEUE_NOTIFICATIONS: &str = include_str!("../../sql/queue_notifications.sql");
const INSERT_ALERT_EVENTS: &str = include_str!("../../sql/insert_alert_events.sql");
const OPEN_CHECK_ALERTS: &str = include_str!("../../sql/open_check_alerts.sql");
const OUTAGE_BEGAN: &str = include_str!("../../sql/outage_began.sql");

/// `sql` prepared once per connection (the pool's statement cache), so that running it
/// is one round trip to PostgreSQL, not two.
async fn prepared(tx: &Transaction<'_>, sql: &str) -> Result<Statement, SinkError> {
    Ok(tx.prepare_cached(sql).await?)
}

/// The kinds of alert, as stored in `alerts.kind`.
pub use fleetmon::alert_kind as kind;

/// Where notifications go, by alert kind.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    routes: Vec<Route>,
}

/// One channel's share of the notifications.
#[derive(Debug, Clone)]
struct Route {
    /// The channel, with what it takes ([`ChannelConfig::takes`]).
    channel: ChannelConfig,
    /// Whether it is told of resolutions.
    resolved: bool,
}

/// What routes an alert: its kind, subject and agent (empty: about no single agent)
/// with the agent's labels.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    /// `alerts.kind`.
    pub kind: &'a str,
    /// `alerts.subject`.
    pub subject: &'a str,
    /// `alerts.agent_id`.
    pub agent_id: &'a str,
    /// The agent's labels (`agent_labels`), empty when it has none or there is no agent.
    pub labels: &'a BTreeMap<String, String>,
}

/// The labels of `agent_id` (none for an empty id or an agent that did not enroll
/// with a token), read when some channel routes by label.
pub async fn agent_labels(
    tx: &Transaction<'_>,
    channels: &Channels,
    agent_id: &str,
) -> Result<BTreeMap<String, String>, SinkError> {
    if agent_id.is_empty() || !channels.route_by_labels() {
        return Ok(BTreeMap::new());
    }
    Ok(tx
        .query_opt(&prepared(tx, AGENT_LABELS).await?, &[&agent_id])
        .await?
        .and_then(|row| serde_json::from_value(row.get("labels")).ok())
        .unwrap_or_default())
}

impl Channels {
    /// The channels `alerts.webhooks` and `alerts.channels` configure.
    pub fn of(config: &AlertsConfig) -> Channels {
        Channels {
            routes: config
                .all_channels()
                .iter()
                .map(|channel| Route {
                    resolved: channel.tells_resolved(),
                    channel: channel.clone(),
                })
                .collect(),
        }
    }

    fn takes(route: &Route, alert: Routed<'_>) -> bool {
        route
            .channel
            .takes(alert.kind, alert.subject, alert.agent_id, alert.labels)
    }

    /// The channels told that `alert` opened (or is still open).
    pub fn for_alert(&self, alert: Routed<'_>) -> Vec<String> {
        self.routes
            .iter()
            .filter(|route| Self::takes(route, alert))
            .map(|route| route.channel.name.clone())
            .collect()
    }

    /// The channels told that `alert` resolved.
    pub fn resolved_for(&self, alert: Routed<'_>) -> Vec<String> {
        self.routes
            .iter()
            .filter(|route| route.resolved && Self::takes(route, alert))
            .map(|route| route.channel.name.clone())
            .collect()
    }

    /// Whether some channel selects by agent labels.
    pub fn route_by_labels(&self) -> bool {
        self.routes
            .iter()
            .any(|route| !route.channel.labels.is_empty())
    }

    /// Whether there is no channel at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The check alert rules in every batch's transaction, under a savepoint: rules that
/// fail on the batch's data are skipped (and counted) instead of failing its rows.
#[derive(Debug, Default)]
pub struct BatchRules {
    /// Where notifications go.
    pub channels: Channels,
    /// Woken after a commit that queued notifications.
    pub committed: Arc<Notify>,
}

impl AfterRows for BatchRules {
    fn run<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        results: &'a [&'a CheckRow],
    ) -> BoxFuture<'a, Result<AfterRowsOutcome, SinkError>> {
        Box::pin(async move {
            tx.batch_execute("SAVEPOINT alert_rules").await?;
            match evaluate_check_results(tx, results, &self.channels).await {
                Ok(transitions) => {
                    tx.batch_execute("RELEASE SAVEPOINT alert_rules").await?;
                    Ok(if transitions == Transitions::default() {
                        AfterRowsOutcome::Unchanged
                    } else {
                        AfterRowsOutcome::Changed
                    })
                }
                Err(error) => match Failure::of(&error) {
                    Failure::Data { sqlstate, message } => {
                        tracing::warn!(%sqlstate, %message, "alert rules failed on this batch's data: skipped, its rows are stored");
                        tx.batch_execute("ROLLBACK TO SAVEPOINT alert_rules")
                            .await?;
                        Ok(AfterRowsOutcome::Skipped)
                    }
                    Failure::Availability => Err(error),
                },
            }
        })
    }

    fn committed(&self) {
        self.committed.notify_one();
    }
}

/// The open alerts of one kind among some subjects, with what they say, read once for
/// a batch: the rules then write only where an alert opens, resolves or changes.
struct OpenAlerts(BTreeMap<String, (String, Vec<String>)>);

impl OpenAlerts {
    async fn among(tx: &Transaction<'_>, kind: &str, subjects: &[&str]) -> Result<Self, SinkError> {
        let rows = tx
            .query(&prepared(tx, OPEN_ALERTS_AMONG).await?, &[&kind, &subjects])
            .await?;
        Ok(OpenAlerts(
            rows.iter()
                .map(|row| (row.get("subject"), (row.get("cause"), row.get("locations"))))
                .collect(),
        ))
    }

    fn is_open(&self, subject: &str) -> bool {
        self.0.contains_key(subject)
    }

    /// Whether `candidate`'s alert is open and says what it would ([`open`] would
    /// change nothing).
    fn says(&self, candidate: &Candidate) -> bool {
        self.0
            .get(&candidate.subject)
            .is_some_and(|(cause, locations)| {
                *cause == candidate.cause && *locations == candidate.locations
            })
    }
}

/// An alert that should be open.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// One of [`kind`].
    pub kind: &'static str,
    /// The check id or agent id.
    pub subject: String,
    /// The agent the alert is about, or empty.
    pub agent_id: String,
    /// Why, in words.
    pub cause: String,
    /// The locations involved.
    pub locations: Vec<String>,
}

/// How a check stands across its locations, as `check_tallies.sql` reads it.
#[derive(Debug, Clone, Default)]
struct CheckTally {
    tally: Tally,
    /// The DOWN locations.
    down_at: Vec<String>,
    /// When each DOWN location went DOWN, earliest first.
    down_since: Vec<SystemTime>,
    /// Their errors, one line.
    errors: String,
}

/// Transitions made by one call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transitions {
    /// Alerts opened.
    pub opened: u64,
    /// Alerts resolved.
    pub resolved: u64,
}

impl std::ops::AddAssign for Transitions {
    fn add_assign(&mut self, other: Self) {
        self.opened += other.opened;
        self.resolved += other.resolved;
    }
}

/// One alert's line in its timeline ([`record_all`]).
struct Line<'a> {
    /// `alerts.alert_id`.
    alert_id: i64,
    /// What the line says.
    detail: &'a str,
    /// The locations involved.
    locations: &'a [String],
    /// The channels to notify of it.
    channels: Vec<String>,
}

/// Adds an event line to an alert and, for each of `channels`, a notification.
pub async fn record(
    tx: &Transaction<'_>,
    alert_id: i64,
    event: &str,
    detail: &str,
    locations: &[String],
    channels: &[String],
) -> Result<(), SinkError> {
    let line = Line {
        alert_id,
        detail,
        locations,
        channels: channels.to_vec(),
    };
    record_all(tx, event, &[line]).await
}

/// Adds the line `event` to each alert of `lines` and its notifications: two
/// statements, however many lines.
async fn record_all(
    tx: &Transaction<'_>,
    event: &str,
    lines: &[Line<'_>],
) -> Result<(), SinkError> {
    if lines.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = lines.iter().map(|l| l.alert_id).collect();
    let details: Vec<&str> = lines.iter().map(|l| l.detail).collect();
    let locations: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::Value::from(l.locations.to_vec()))
        .collect();
    tx.execute(
        &prepared(tx, INSERT_ALERT_EVENTS).await?,
        &[&ids, &event, &details, &locations],
    )
    .await?;
    let (alerts, channels): (Vec<i64>, Vec<&str>) = lines
        .iter()
        .flat_map(|l| l.channels.iter().map(|c| (l.alert_id, c.as_str())))
        .unzip();
    if !alerts.is_empty() {
        tx.execute(
            &prepared(tx, QUEUE_NOTIFICATIONS).await?,
            &[&alerts, &channels, &event],
        )
        .await?;
    }
    Ok(())
}

/// The `opened` line of `candidate`'s alert `alert_id`, to the channels that take it
/// (logged here: every opening goes through this).
async fn opened_line<'a>(
    tx: &Transaction<'_>,
    alert_id: i64,
    candidate: &'a Candidate,
    channels: &Channels,
) -> Result<Line<'a>, SinkError> {
    let labels = agent_labels(tx, channels, &candidate.agent_id).await?;
    tracing::info!(alert_id, kind = candidate.kind, subject = %candidate.subject, cause = %candidate.cause, "alert opened");
    Ok(Line {
        alert_id,
        detail: &candidate.cause,
        locations: &candidate.locations,
        channels: channels.for_alert(Routed {
            kind: candidate.kind,
            subject: &candidate.subject,
            agent_id: &candidate.agent_id,
            labels: &labels,
        }),
    })
}

/// Opens the `check_down` alerts of `candidates` (each with when its outage began)
/// at once, those not open yet; one that met an open alert after all (another writer
/// opened it meanwhile) goes through [`open`] and updates it. Returns how many opened.
async fn open_checks(
    tx: &Transaction<'_>,
    candidates: &[(Candidate, SystemTime)],
    channels: &Channels,
) -> Result<u64, SinkError> {
    if candidates.is_empty() {
        return Ok(0);
    }
    let subjects: Vec<&str> = candidates.iter().map(|(c, _)| c.subject.as_str()).collect();
    let agents: Vec<&str> = candidates
        .iter()
        .map(|(c, _)| c.agent_id.as_str())
        .collect();
    let causes: Vec<&str> = candidates.iter().map(|(c, _)| c.cause.as_str()).collect();
    let locations: Vec<serde_json::Value> = candidates
        .iter()
        .map(|(c, _)| serde_json::Value::from(c.locations.clone()))
        .collect();
    let began: Vec<SystemTime> = candidates.iter().map(|(_, at)| *at).collect();
    let opened: BTreeMap<String, i64> = tx
        .query(
            &prepared(tx, OPEN_CHECK_ALERTS).await?,
            &[
                &kind::CHECK_DOWN,
                &subjects,
                &agents,
                &causes,
                &locations,
                &began,
            ],
        )
        .await?
        .iter()
        .map(|row| (row.get("subject"), row.get("alert_id")))
        .collect();
    let mut lines = Vec::with_capacity(opened.len());
    let mut count = opened.len() as u64;
    for (candidate, began) in candidates {
        let Some(&alert_id) = opened.get(&candidate.subject) else {
            if open(tx, candidate, channels).await? {
                count += 1;
                tx.execute(
                    &prepared(tx, OUTAGE_BEGAN).await?,
                    &[&candidate.subject, began],
                )
                .await?;
            }
            continue;
        };
        lines.push(opened_line(tx, alert_id, candidate, channels).await?);
    }
    record_all(tx, "opened", &lines).await?;
    Ok(count)
}

/// Opens `candidate` unless an alert of its kind and subject is open; if one is and
/// its locations or cause differ, updates them (an event, no notification). True
/// when opened.
pub async fn open(
    tx: &Transaction<'_>,
    candidate: &Candidate,
    channels: &Channels,
) -> Result<bool, SinkError> {
    let opened = tx
        .query_opt(
            &prepared(tx, OPEN_ALERT).await?,
            &[
                &candidate.kind,
                &candidate.subject,
                &candidate.agent_id,
                &candidate.cause,
                &candidate.locations,
            ],
        )
        .await?;
    if let Some(row) = opened {
        let line = opened_line(tx, row.get("alert_id"), candidate, channels).await?;
        record_all(tx, "opened", &[line]).await?;
        return Ok(true);
    }
    let changed = tx
        .query_opt(
            &prepared(tx, UPDATE_ALERT_LOCATIONS).await?,
            &[
                &candidate.kind,
                &candidate.subject,
                &candidate.locations,
                &candidate.cause,
            ],
        )
        .await?;
    if let Some(row) = changed {
        record(
            tx,
            row.get("alert_id"),
            "updated",
            &candidate.cause,
            &candidate.locations,
            &[],
        )
        .await?;
    }
    Ok(false)
}

/// Resolves the open alert of `kind` and `subject`, if any. True when resolved.
pub async fn resolve(
    tx: &Transaction<'_>,
    kind: &str,
    subject: &str,
    detail: &str,
    channels: &Channels,
) -> Result<bool, SinkError> {
    let resolved = tx
        .query_opt(&prepared(tx, RESOLVE_ALERT).await?, &[&kind, &subject])
        .await?;
    let Some(row) = resolved else {
        return Ok(false);
    };
    let id: i64 = row.get("alert_id");
    let agent_id: String = row.get("agent_id");
    let labels = agent_labels(tx, channels, &agent_id).await?;
    let alert = Routed {
        kind,
        subject,
        agent_id: &agent_id,
        labels: &labels,
    };
    record(
        tx,
        id,
        "resolved",
        detail,
        &[],
        &channels.resolved_for(alert),
    )
    .await?;
    tracing::info!(alert_id = id, kind, subject, "alert resolved");
    Ok(true)
}

/// Makes the open alerts of `kind` exactly `candidates`: opens the missing ones and
/// resolves the others.
pub async fn reconcile(
    tx: &Transaction<'_>,
    kind: &'static str,
    candidates: &[Candidate],
    channels: &Channels,
) -> Result<Transitions, SinkError> {
    let open_now = open_subjects(tx, kind).await?;
    let wanted: BTreeSet<&str> = candidates.iter().map(|c| c.subject.as_str()).collect();
    let mut transitions = Transitions::default();
    for candidate in candidates {
        if open(tx, candidate, channels).await? {
            transitions.opened += 1;
        }
    }
    for subject in open_now.iter().filter(|s| !wanted.contains(s.as_str())) {
        if resolve(tx, kind, subject, "the condition no longer holds", channels).await? {
            transitions.resolved += 1;
        }
    }
    Ok(transitions)
}

/// The subjects of the open alerts of `kind`.
pub async fn open_subjects(
    tx: &Transaction<'_>,
    kind: &str,
) -> Result<BTreeSet<String>, SinkError> {
    Ok(tx
        .query(&prepared(tx, OPEN_ALERT_SUBJECTS).await?, &[&kind])
        .await?
        .iter()
        .map(|row| row.get("subject"))
        .collect())
}

fn thresholds_of(rows: &[tokio_postgres::Row]) -> BTreeMap<String, Thresholds> {
    rows.iter()
        .map(|row| {
            let definition = CheckDefinition::decode(row.get::<_, &[u8]>("definition")).ok();
            (row.get("check_id"), Thresholds::of(definition.as_ref()))
        })
        .collect()
}

/// One result as the rules take it: its rule key ([`fleetmon::samples::alert_check_key`])
/// and location, the run, and the interval it gives (0: it does not say).
struct RuleInput {
    key: (String, String),
    run: CheckRun,
    interval: i32,
}

impl RuleInput {
    fn of(row: &CheckRow) -> Self {
        let check = &row.check;
        RuleInput {
            key: (
                fleetmon::samples::alert_check_key(check).into_owned(),
                check.agent_id.clone(),
            ),
            run: CheckRun {
                // As stored: whole microseconds.
                ts: as_stored(row.ts),
                ok: check.ok,
                failure: row.failure.map(str::to_owned),
                error_message: check.error_message.clone(),
                tls_cert_not_after: row.tls_cert_not_after.map(as_stored),
            },
            interval: i32::try_from(check.interval_seconds).unwrap_or(i32::MAX),
        }
    }
}

/// Moves the check states with the results this transaction inserted, then re-decides
/// the locations and checks whose states flipped.
pub async fn evaluate_check_results(
    tx: &Transaction<'_>,
    rows: &[&CheckRow],
    channels: &Channels,
) -> Result<Transitions, SinkError> {
    if rows.is_empty() {
        return Ok(Transitions::default());
    }
    let mut results: Vec<RuleInput> = rows.iter().map(|row| RuleInput::of(row)).collect();
    // Each location's runs in the order they ran.
    results.sort_by(|a, b| (&a.key, a.run.ts).cmp(&(&b.key, b.run.ts)));
    let check_ids: Vec<&str> = results
        .iter()
        .map(|r| r.key.0.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let thresholds = load_thresholds(tx, &check_ids).await?;
    let pairs: BTreeSet<&(String, String)> = results.iter().map(|r| &r.key).collect();
    let (pair_checks, pair_agents): (Vec<&str>, Vec<&str>) =
        pairs.iter().map(|(c, a)| (c.as_str(), a.as_str())).unzip();
    let mut states: BTreeMap<(String, String), LocationState> = tx
        .query(
            &prepared(tx, LOCATION_STATES).await?,
            &[&pair_checks, &pair_agents],
        )
        .await?
        .iter()
        .map(|row| {
            let state = LocationState {
                down: row.get("down"),
                consecutive_failures: row.get::<_, i32>("consecutive_failures").max(0) as u32,
                consecutive_successes: row.get::<_, i32>("consecutive_successes").max(0) as u32,
                last_ts: row.get("last_ts"),
                last_failure: row.get("last_failure"),
                last_error: row.get("last_error"),
                tls_cert_not_after: row.get("tls_cert_not_after"),
                changed_at: row.get("changed_at"),
            };
            ((row.get("check_id"), row.get("agent_id")), state)
        })
        .collect();

    let stored = states.clone();
    let mut intervals: BTreeMap<(String, String), i32> = BTreeMap::new();
    let mut flipped_checks = BTreeSet::new();
    let mut flipped_agents = BTreeSet::new();
    for RuleInput { key, run, interval } in results {
        if interval > 0 {
            intervals.insert(key.clone(), interval);
        }
        let rule = rule_for(&thresholds, &intervals, &key);
        let state = states
            .entry(key.clone())
            .or_insert_with(|| LocationState::new(run.ts));
        if state.apply(&run, rule) {
            flipped_checks.insert(key.0);
            flipped_agents.insert(key.1);
        }
    }
    states.retain(|key, state| {
        let refresh = rule_for(&thresholds, &intervals, key).refresh();
        needs_storing(stored.get(key), state, refresh)
    });
    let (known, new): (BTreeMap<_, _>, BTreeMap<_, _>) = states
        .into_iter()
        .partition(|(key, _)| stored.contains_key(key));
    store_states(tx, UPDATE_CHECK_STATE, &known, &intervals).await?;
    store_new_states(tx, &new, &intervals).await?;
    if flipped_checks.is_empty() {
        return Ok(Transitions::default());
    }

    let mut transitions = Transitions::default();
    let agents: Vec<&str> = flipped_agents.iter().map(String::as_str).collect();
    let unreachable = OpenAlerts::among(tx, kind::LOCATION_UNREACHABLE, &agents).await?;
    for row in tx
        .query(&prepared(tx, LOCATION_TALLIES).await?, &[&agents])
        .await?
    {
        let agent: String = row.get("agent_id");
        let tally = LocationTally {
            checks: row.get("checks"),
            down: row.get("down"),
            down_but_up_elsewhere: row.get("down_but_up_elsewhere"),
        };
        let down_checks: Vec<String> = row.get("down_checks");
        let changed = if tally.is_unreachable() {
            let candidate = Candidate {
                kind: kind::LOCATION_UNREACHABLE,
                subject: agent.clone(),
                agent_id: agent.clone(),
                cause: format!(
                    "location {agent} cannot reach its targets: {} of its {} checks fail there and pass elsewhere ({})",
                    tally.down,
                    tally.checks,
                    down_checks.join(", ")
                ),
                locations: vec![agent.clone()],
            };
            let opened = !unreachable.says(&candidate) && open(tx, &candidate, channels).await?;
            transitions.opened += u64::from(opened);
            opened
        } else {
            let resolved = unreachable.is_open(&agent)
                && resolve(
                    tx,
                    kind::LOCATION_UNREACHABLE,
                    &agent,
                    "its checks pass again, or fail elsewhere too",
                    channels,
                )
                .await?;
            transitions.resolved += u64::from(resolved);
            resolved
        };
        if changed {
            // The location's votes on its other checks count again, or no longer.
            flipped_checks.extend(down_checks);
        }
    }

    transitions += decide_checks(tx, &flipped_checks, channels).await?;
    Ok(transitions)
}

/// A check as alert causes name it: `check ID`, or `site URL at AGENT` for an agent's
/// own site ([`fleetmon::samples::alert_check_key`]).
pub fn check_named(key: &str) -> String {
    match fleetmon::samples::local_site_of(key) {
        Some((agent, url)) => format!("site {url} at {agent}"),
        None => format!("check {key}"),
    }
}

/// The rule of a check at a location: its definition's, or, without one (an agent's
/// own site), the defaults at the interval its results give.
fn rule_for(
    thresholds: &BTreeMap<String, Thresholds>,
    intervals: &BTreeMap<(String, String), i32>,
    key: &(String, String),
) -> Thresholds {
    match (thresholds.get(&key.0), intervals.get(key)) {
        (Some(rule), _) => *rule,
        (None, Some(&seconds)) => Thresholds {
            interval_seconds: u32::try_from(seconds).unwrap_or(1).max(1),
            ..Thresholds::default()
        },
        (None, None) => Thresholds::default(),
    }
}

async fn load_thresholds(
    tx: &Transaction<'_>,
    checks: &[&str],
) -> Result<BTreeMap<String, Thresholds>, SinkError> {
    Ok(thresholds_of(
        &tx.query(&prepared(tx, CHECK_DEFINITIONS).await?, &[&checks])
            .await?,
    ))
}

/// Opens or resolves the `check_down` alert of each of `checks` from how its
/// locations stand now.
pub async fn decide_checks(
    tx: &Transaction<'_>,
    checks: &BTreeSet<String>,
    channels: &Channels,
) -> Result<Transitions, SinkError> {
    let ids: Vec<&str> = checks.iter().map(String::as_str).collect();
    let thresholds = load_thresholds(tx, &ids).await?;
    let tallies: BTreeMap<String, CheckTally> = tx
        .query(&prepared(tx, CHECK_TALLIES).await?, &[&ids])
        .await?
        .iter()
        .map(|row| {
            let tally = CheckTally {
                tally: Tally {
                    reporting: row.get::<_, i64>("reporting") as usize,
                    down: row.get::<_, i64>("down") as usize,
                },
                down_at: row.get("down_at"),
                down_since: row.get("down_since"),
                errors: row.get("errors"),
            };
            (row.get("check_id"), tally)
        })
        .collect();
    let open_now = OpenAlerts::among(tx, kind::CHECK_DOWN, &ids).await?;
    let mut transitions = Transitions::default();
    let mut opening = Vec::new();
    for check in checks {
        let rule = thresholds.get(check).copied().unwrap_or_default();
        let CheckTally {
            tally,
            down_at,
            down_since,
            errors,
        } = tallies.get(check).cloned().unwrap_or_default();
        let quorum = rule.quorum_of(tally.reporting);
        // An agent's own site: `AGENT URL`, one location (fleetmon::samples::alert_check_key).
        let local = fleetmon::samples::local_site_of(check);
        if tally.is_down(rule) {
            let (agent_id, cause) = match local {
                Some((agent, url)) => (
                    agent.to_owned(),
                    format!(
                        "site {url} is down at {agent} ({} failed runs in a row): {}",
                        rule.failure,
                        errors
                            .strip_prefix(&format!("{agent}: "))
                            .unwrap_or(&errors)
                    ),
                ),
                None => (
                    String::new(),
                    format!(
                        "check {check} is down at {} of {} locations (quorum {quorum}): {errors}",
                        tally.down, tally.reporting
                    ),
                ),
            };
            let candidate = Candidate {
                kind: kind::CHECK_DOWN,
                subject: check.clone(),
                agent_id,
                cause,
                locations: down_at,
            };
            if open_now.is_open(check) {
                // Open already: its locations or cause may have changed.
                if !open_now.says(&candidate) {
                    open(tx, &candidate, channels).await?;
                }
            } else {
                // The outage began when the quorum-th location went DOWN.
                let began = down_since
                    .get(quorum.clamp(1, down_since.len().max(1)) - 1)
                    .copied()
                    .unwrap_or_else(SystemTime::now);
                opening.push((candidate, began));
            }
        } else if open_now.is_open(check) {
            let detail = match local {
                Some((agent, url)) if tally.reporting == 0 => format!(
                    "site {url} is no longer reported by {agent} (nothing for three of its intervals)"
                ),
                Some((agent, url)) => format!("site {url} is up again at {agent}"),
                None => format!(
                    "check {check} is down at {} of {} locations, below the quorum of {quorum}",
                    tally.down, tally.reporting
                ),
            };
            if resolve(tx, kind::CHECK_DOWN, check, &detail, channels).await? {
                transitions.resolved += 1;
                tx.execute(&prepared(tx, OUTAGE_ENDED).await?, &[check])
                    .await?;
            }
        }
    }
    transitions.opened += open_checks(tx, &opening, channels).await?;
    Ok(transitions)
}

/// Writes `states` that were not stored when the batch read them, each with the
/// interval its newest result gave (`intervals`; 0 when none did): inserted, or, should
/// one exist after all (another batch made it meanwhile), the missing ones inserted and
/// then all of them updated.
pub async fn store_new_states(
    tx: &Transaction<'_>,
    states: &BTreeMap<(String, String), LocationState>,
    intervals: &BTreeMap<(String, String), i32>,
) -> Result<(), SinkError> {
    if !stored_directly(tx, store_states(tx, INSERT_CHECK_STATE, states, intervals)).await? {
        store_states(tx, &INSERT_MISSING_CHECK_STATE, states, intervals).await?;
        store_states(tx, UPDATE_CHECK_STATE, states, intervals).await?;
    }
    Ok(())
}

/// Writes `states` with `statement` (`update_check_state.sql` for those stored
/// before, `insert_check_state.sql` for new ones), each with the interval its newest
/// result gave (`intervals`; 0 when none did, which keeps the stored one). Returns the
/// rows written.
async fn store_states(
    tx: &Transaction<'_>,
    statement: &str,
    states: &BTreeMap<(String, String), LocationState>,
    intervals: &BTreeMap<(String, String), i32>,
) -> Result<u64, SinkError> {
    if states.is_empty() {
        return Ok(0);
    }
    let count = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let checks: Vec<&str> = states.keys().map(|(c, _)| c.as_str()).collect();
    let agents: Vec<&str> = states.keys().map(|(_, a)| a.as_str()).collect();
    let down: Vec<bool> = states.values().map(|s| s.down).collect();
    let failures: Vec<i32> = states
        .values()
        .map(|s| count(s.consecutive_failures))
        .collect();
    let successes: Vec<i32> = states
        .values()
        .map(|s| count(s.consecutive_successes))
        .collect();
    let last_ts: Vec<SystemTime> = states.values().map(|s| s.last_ts).collect();
    let last_failure: Vec<Option<&str>> =
        states.values().map(|s| s.last_failure.as_deref()).collect();
    let last_error: Vec<&str> = states.values().map(|s| s.last_error.as_str()).collect();
    let tls: Vec<Option<SystemTime>> = states.values().map(|s| s.tls_cert_not_after).collect();
    let changed: Vec<SystemTime> = states.values().map(|s| s.changed_at).collect();
    let interval: Vec<i32> = states
        .keys()
        .map(|key| intervals.get(key).copied().unwrap_or(0))
        .collect();
    let written = tx
        .execute(
            &prepared(tx, statement).await?,
            &[
                &checks,
                &agents,
                &down,
                &failures,
                &successes,
                &last_ts,
                &last_failure,
                &last_error,
                &tls,
                &changed,
                &interval,
            ],
        )
        .await?;
    Ok(written)
}
