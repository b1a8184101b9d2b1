//! The alert rules decided by time rather than by an arriving row: an agent gone
//! silent, host resources, certificates about to expire, heartbeats missed, check alerts whose
//! locations stopped reporting, and reminders. Every `evaluate_interval_seconds`,
//! one writer at a time (a transaction-scoped advisory lock; the others skip that
//! round), in one transaction.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use fleetmon::checks::heartbeat::{self, Latest, Schedule};
use fleetmon::pb::CheckDefinition;
use prost::Message as _;

use crate::alerts::store::{self as alert_store, Candidate, Channels, Transitions, kind};
use crate::config::{AlertsConfig, HostRules};
use crate::store::Failure;
use crate::store::{PostgresSink, SinkError};

const TRY_ROUND_LOCK: &str = include_str!("../../sql/try_round_lock.sql");
const LOCK_CHECK_STATES: &str = include_str!("../../sql/lock_check_states.sql");
const SILENT_AGENTS: &str = include_str!("../../sql/silent_agents.sql");
const SKEWED_AGENTS: &str = include_str!("../../sql/skewed_agents.sql");
const FULL_DISKS: &str = include_str!("../../sql/full_disks.sql");
const FULL_MEMORY: &str = include_str!("../../sql/full_memory.sql");
const BUSY_CPUS: &str = include_str!("../../sql/busy_cpus.sql");
const EXPIRING_CERTIFICATES: &str = include_str!("../../sql/expiring_certificates.sql");
const MISSED_HEARTBEATS: &str = include_str!("../../sql/missed_heartbeats.sql");
const DUE_REMINDERS: &str = include_str!("../../sql/due_reminders.sql");

/// With the schema's hash, the advisory lock taken by the writer evaluating a round
/// (writers of other schemas in the same database evaluate their own).
const LOCK: i32 = 0x666c_6d6e; // "flmn"

/// Runs the rules until `shutdown`; a rule skipped for its data is counted in `skipped`,
/// each round evaluated to the end in `rounds`.
pub async fn run(
    sink: Arc<PostgresSink>,
    config: AlertsConfig,
    host_topic: String,
    wake: Arc<Notify>,
    skipped: Counter,
    rounds: Counter,
    shutdown: CancellationToken,
) {
    let channels = Channels::of(&config);
    let every = Duration::from_secs(config.evaluate_interval_seconds);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        match evaluate(&sink, &config, &host_topic, &channels, &skipped).await {
            Ok(Some(transitions)) => {
                rounds.inc();
                if transitions != Transitions::default() {
                    wake.notify_one();
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "alert rules not evaluated; retrying"),
        }
    }
}

/// One round; `None` when another writer holds the round. Agents are judged silent
/// only up to where the writers have stored `host_topic`.
pub async fn evaluate(
    sink: &PostgresSink,
    config: &AlertsConfig,
    host_topic: &str,
    channels: &Channels,
    skipped: &Counter,
) -> Result<Option<Transitions>, SinkError> {
    let mut client = sink.background().get().await?;
    let tx = client.transaction().await?;
    let mine: bool = tx.query_one(TRY_ROUND_LOCK, &[&LOCK]).await?.get("mine");
    if !mine {
        return Ok(None);
    }
    let rules = &config.rules;
    let mut transitions = Transitions::default();
    for kind in [
        kind::AGENT_SILENT,
        kind::DISK_FULL,
        kind::MEMORY_FULL,
        kind::CPU_BUSY,
        kind::TLS_EXPIRING,
        kind::CLOCK_SKEW,
        kind::HEARTBEAT_MISSED,
    ] {
        // Each rule under a savepoint: one that fails on the data (a value no
        // arithmetic of it can hold) is skipped this round, the others still decide.
        tx.batch_execute("SAVEPOINT timed_rule").await?;
        let decided = async {
            let candidates = match kind {
                kind::AGENT_SILENT => silent_agents(&tx, rules, host_topic).await?,
                kind::DISK_FULL => full(&tx, "disk", rules.disk_percent).await?,
                kind::MEMORY_FULL => full(&tx, "memory", rules.memory_percent).await?,
                kind::CPU_BUSY => busy_cpus(&tx, rules).await?,
                kind::CLOCK_SKEW => skewed_clocks(&tx, rules).await?,
                kind::HEARTBEAT_MISSED => missed_heartbeats(&tx).await?,
                _ => expiring_certificates(&tx, rules).await?,
            };
            alert_store::reconcile(&tx, kind, &candidates, channels).await
        }
        .await;
        match decided {
            Ok(made) => {
                tx.batch_execute("RELEASE SAVEPOINT timed_rule").await?;
                transitions += made;
            }
            Err(error) => match Failure::of(&error) {
                Failure::Data { sqlstate, message } => {
                    tracing::warn!(rule = kind, %sqlstate, %message, "alert rule failed on the data: skipped this round");
                    skipped.inc();
                    tx.batch_execute("ROLLBACK TO SAVEPOINT timed_rule").await?;
                }
                Failure::Availability => return Err(error),
            },
        }
    }
    // Check alerts whose locations stopped reporting (agents gone, check paused or
    // deleted) are decided again without waiting for a row that will not come.
    let open_checks = alert_store::open_subjects(&tx, kind::CHECK_DOWN).await?;
    if !open_checks.is_empty() {
        // A batch deciding these checks holds the state rows it changed until it
        // commits. Waiting for them here means the decision reads what that batch
        // committed: deciding from the state before it, and writing after it, reopened
        // an alert the batch had just resolved.
        let ids: Vec<&str> = open_checks.iter().map(String::as_str).collect();
        tx.execute(LOCK_CHECK_STATES, &[&ids]).await?;
        transitions += alert_store::decide_checks(&tx, &open_checks, channels).await?;
    }
    remind(&tx, config.reminder_interval_minutes, channels).await?;
    tx.commit().await?;
    Ok(Some(transitions))
}

async fn silent_agents(
    tx: &deadpool_postgres::Transaction<'_>,
    rules: &HostRules,
    host_topic: &str,
) -> Result<Vec<Candidate>, SinkError> {
    let intervals = f64::from(rules.agent_silent_intervals);
    let rows = tx.query(SILENT_AGENTS, &[&intervals, &host_topic]).await?;
    let behind = rows
        .first()
        .map_or(0.0, |row| row.get::<_, f64>("behind_seconds"));
    let mut candidates: Vec<Candidate> = rows
        .iter()
        .filter_map(|row| {
            // The horizon's row without a silent agent has none.
            let agent: String = row.get::<_, Option<String>>("agent_id")?;
            let silent: f64 = row.get("silent_seconds");
            let interval: i32 = row.get("interval_seconds");
            Some(Candidate {
                kind: kind::AGENT_SILENT,
                subject: agent.clone(),
                agent_id: agent.clone(),
                cause: format!(
                    "agent {agent} has sent nothing for {silent:.0} s (it samples every {interval} s)"
                ),
                locations: Vec::new(),
            })
        })
        .collect();
    // While the writers are behind, what is stored cannot show an agent is back:
    // its open alert stays open until they catch up.
    if behind > STORED_SLACK_SECONDS {
        tracing::info!(
            behind_seconds = behind,
            "host samples are stored {behind:.0} s behind: agents are judged silent up to then"
        );
        let open = alert_store::open_subjects(tx, kind::AGENT_SILENT).await?;
        for subject in open {
            if candidates.iter().all(|c| c.subject != subject) {
                candidates.push(Candidate {
                    kind: kind::AGENT_SILENT,
                    agent_id: subject.clone(),
                    cause: String::new(),
                    subject,
                    locations: Vec::new(),
                });
            }
        }
    }
    Ok(candidates)
}

/// How far behind now the stored host samples may be and still count as caught up:
/// progress is read every 5 s (the consumer's statistics) and saved every 2 s.
const STORED_SLACK_SECONDS: f64 = 10.0;

/// Heartbeat checks whose job did not ping in time (by its period, or its cron schedule
/// in its time zone), or said it failed.
async fn missed_heartbeats(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Vec<Candidate>, SinkError> {
    let rows = tx.query(MISSED_HEARTBEATS, &[]).await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let check: String = row.get("check_id");
            let definition = CheckDefinition::decode(row.get::<_, &[u8]>("definition")).ok()?;
            let schedule = Schedule::of(heartbeat::of(&definition)?).ok()?;
            let grace = u32::try_from(row.get::<_, i32>("grace_seconds")).unwrap_or(0);
            let latest = Latest {
                method: row.get("last_method"),
                ok: row.get("last_ok"),
                message: row.get("last_message"),
                at: row.get("last_at"),
                success: row.get("success_at"),
            };
            let cause = heartbeat::missed(&check, &schedule, grace, &latest, row.get("now"))?;
            Some(Candidate {
                kind: kind::HEARTBEAT_MISSED,
                subject: check,
                agent_id: String::new(),
                cause,
                locations: Vec::new(),
            })
        })
        .collect())
}

/// Agents whose latest host sample, of the last 10 minutes, showed their clock off from
/// their collector's by more than `clock_skew_seconds`.
async fn skewed_clocks(
    tx: &deadpool_postgres::Transaction<'_>,
    rules: &HostRules,
) -> Result<Vec<Candidate>, SinkError> {
    if rules.clock_skew_seconds == 0 {
        return Ok(Vec::new());
    }
    let limit_ms = i64::from(rules.clock_skew_seconds) * 1000;
    let rows = tx.query(SKEWED_AGENTS, &[&limit_ms]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let agent: String = row.get("agent_id");
            let offset = row.get::<_, i64>("clock_offset_ms") as f64 / 1000.0;
            let side = if offset > 0.0 { "ahead of" } else { "behind" };
            Candidate {
                kind: kind::CLOCK_SKEW,
                subject: agent.clone(),
                agent_id: agent.clone(),
                cause: format!(
                    "the clock of {agent} is {:.0} s {side} its collector's (the limit is {} s; samples more than the collector's limits.max_clock_skew_seconds ahead are refused): fix its time sync",
                    offset.abs(),
                    rules.clock_skew_seconds
                ),
                locations: Vec::new(),
            }
        })
        .collect())
}

/// Agents whose latest sample shows `resource` (`disk` or `memory`) above `percent`.
async fn full(
    tx: &deadpool_postgres::Transaction<'_>,
    resource: &'static str,
    percent: f64,
) -> Result<Vec<Candidate>, SinkError> {
    let (sql, kind) = match resource {
        "disk" => (FULL_DISKS, kind::DISK_FULL),
        _ => (FULL_MEMORY, kind::MEMORY_FULL),
    };
    let rows = tx.query(sql, &[&percent]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let agent: String = row.get("agent_id");
            let used: f64 = row.get("used_percent");
            Candidate {
                kind,
                subject: agent.clone(),
                agent_id: agent.clone(),
                cause: format!(
                    "{resource} of {agent} is {used:.1} % used (the limit is {percent} %)"
                ),
                locations: Vec::new(),
            }
        })
        .collect())
}

/// Agents whose every sample of the last `cpu_minutes` is above `cpu_percent`.
/// Only agents whose latest sample is above it are read back.
async fn busy_cpus(
    tx: &deadpool_postgres::Transaction<'_>,
    rules: &HostRules,
) -> Result<Vec<Candidate>, SinkError> {
    let minutes = i32::try_from(rules.cpu_minutes).unwrap_or(i32::MAX);
    let rows = tx.query(BUSY_CPUS, &[&minutes, &rules.cpu_percent]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let agent: String = row.get("agent_id");
            let least: f64 = row.get("lowest_percent");
            Candidate {
                kind: kind::CPU_BUSY,
                subject: agent.clone(),
                agent_id: agent.clone(),
                cause: format!(
                    "CPU of {agent} has stayed above {} % for {} minutes (lowest {least:.1} %)",
                    rules.cpu_percent, rules.cpu_minutes
                ),
                locations: Vec::new(),
            }
        })
        .collect())
}

/// Checks whose certificate, as seen by any location in the last day,
/// expires within `tls_days`.
async fn expiring_certificates(
    tx: &deadpool_postgres::Transaction<'_>,
    rules: &HostRules,
) -> Result<Vec<Candidate>, SinkError> {
    let days = i32::try_from(rules.tls_days).unwrap_or(i32::MAX);
    let rows = tx.query(EXPIRING_CERTIFICATES, &[&days]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let check: String = row.get("check_id");
            let days_left: f64 = row.get("days_left");
            let named = alert_store::check_named(&check);
            Candidate {
                kind: kind::TLS_EXPIRING,
                subject: check.clone(),
                agent_id: String::new(),
                cause: if days_left < 0.0 {
                    format!("the certificate of {named} has expired")
                } else {
                    format!(
                        "the certificate of {named} expires in {days_left:.1} days (the limit is {} days)",
                        rules.tls_days
                    )
                },
                locations: row.get("seen_at"),
            }
        })
        .collect())
}

/// A reminder for every alert open longer than `minutes` since it opened or was last
/// reminded of.
async fn remind(
    tx: &deadpool_postgres::Transaction<'_>,
    minutes: u64,
    channels: &Channels,
) -> Result<(), SinkError> {
    if minutes == 0 || channels.is_empty() {
        return Ok(());
    }
    let minutes = i32::try_from(minutes).unwrap_or(i32::MAX);
    let due = tx.query(DUE_REMINDERS, &[&minutes]).await?;
    for row in &due {
        let cause: String = row.get("cause");
        let agent_id: &str = row.get("agent_id");
        let labels = alert_store::agent_labels(tx, channels, agent_id).await?;
        alert_store::record(
            tx,
            row.get("alert_id"),
            "reminder",
            &cause,
            &[],
            &channels.for_alert(alert_store::Routed {
                kind: row.get("kind"),
                subject: row.get("subject"),
                agent_id,
                labels: &labels,
            }),
        )
        .await?;
    }
    Ok(())
}
