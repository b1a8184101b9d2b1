//! The `agents` table: one row per agent, from every row of a batch. Host samples
//! and site checks both move `first_seen` and `last_seen`; the descriptive columns
//! come from the latest host sample, and only if it is later than the one they came
//! from before (`host_seen`), so checks never hold them back and a late redelivery
//! never rolls them back.

use std::time::SystemTime;

use deadpool_postgres::Transaction;
use fleetmon::pb::HostSample;
use foldhash::{HashMap, HashMapExt as _};

use super::SinkError;
use crate::consume::row_batch::{CheckRow, HostRow};

const UPSERT_AGENTS: &str = include_str!("../../sql/upsert_agents.sql");

/// What a batch says about one agent.
struct AgentSeen<'a> {
    first: SystemTime,
    last: SystemTime,
    /// Its latest host sample in the batch, if any.
    latest_host: Option<&'a HostRow>,
}

impl AgentSeen<'_> {
    fn widen(&mut self, ts: SystemTime) {
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
    }
}

/// Upserts one `agents` row per agent in the batch.
pub(super) async fn upsert_agents(
    tx: &Transaction<'_>,
    hosts: &[&HostRow],
    checks: &[&CheckRow],
) -> Result<(), SinkError> {
    let mut agents: HashMap<&str, AgentSeen<'_>> = HashMap::new();
    fn seen<'a, 'b>(
        agents: &'b mut HashMap<&'a str, AgentSeen<'a>>,
        agent_id: &'a str,
        ts: SystemTime,
    ) -> &'b mut AgentSeen<'a> {
        let seen = agents.entry(agent_id).or_insert(AgentSeen {
            first: ts,
            last: ts,
            latest_host: None,
        });
        seen.widen(ts);
        seen
    }
    for &row in hosts {
        let seen = seen(&mut agents, row.sample.agent_id.as_str(), row.ts);
        if seen.latest_host.is_none_or(|latest| row.ts >= latest.ts) {
            seen.latest_host = Some(row);
        }
    }
    // A heartbeat's signals come from jobs, not from an agent.
    for &row in checks
        .iter()
        .filter(|row| !fleetmon::checks::heartbeat::is_signal(&row.check.method))
    {
        seen(&mut agents, row.check.agent_id.as_str(), row.ts);
    }
    let ids: Vec<&str> = agents.keys().copied().collect();
    let host = |f: fn(&HostSample) -> &str| -> Vec<&str> {
        agents
            .values()
            .map(|seen| seen.latest_host.map_or("", |row| f(&row.sample)))
            .collect()
    };
    let hostnames = host(|s| s.hostname.as_str());
    let os_names = host(|s| s.os_name.as_str());
    let os_versions = host(|s| s.os_version.as_str());
    let agent_versions = host(|s| s.agent_version.as_str());
    let first: Vec<SystemTime> = agents.values().map(|seen| seen.first).collect();
    let last: Vec<SystemTime> = agents.values().map(|seen| seen.last).collect();
    let host_seen: Vec<Option<SystemTime>> = agents
        .values()
        .map(|seen| seen.latest_host.map(|row| row.ts))
        .collect();
    let intervals: Vec<i32> = agents
        .values()
        .map(|seen| {
            seen.latest_host.map_or(0, |row| {
                i32::try_from(row.sample.interval_seconds).unwrap_or(i32::MAX)
            })
        })
        .collect();
    let latest = |f: fn(&HostSample) -> Option<f64>| -> Vec<Option<f64>> {
        agents
            .values()
            .map(|seen| seen.latest_host.and_then(|row| f(&row.sample)))
            .collect()
    };
    let cpu = latest(|s| Some(s.cpu_usage_percent));
    let memory = latest(|s| {
        (s.memory_total_bytes > 0)
            .then(|| s.memory_used_bytes as f64 * 100.0 / s.memory_total_bytes as f64)
    });
    let disk = latest(fleetmon::samples::disk_used_percent);
    let clock_offsets: Vec<Option<i64>> = agents
        .values()
        .map(|seen| seen.latest_host.and_then(|row| row.sample.clock_offset_ms))
        .collect();
    let upsert = tx.prepare_cached(UPSERT_AGENTS).await?;
    tx.execute(
        &upsert,
        &[
            &ids,
            &hostnames,
            &os_names,
            &os_versions,
            &agent_versions,
            &first,
            &last,
            &host_seen,
            &intervals,
            &cpu,
            &memory,
            &disk,
            &clock_offsets,
        ],
    )
    .await?;
    Ok(())
}
