//! The `agents` table: one row per agent, from the host rows of a batch.

use std::collections::HashMap;
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use fleetmon::pb::HostSample;

use super::SinkError;
use crate::row_batch::HostRow;

const UPSERT_AGENTS: &str = include_str!("../../sql/upsert_agents.sql");

/// What a batch says about one agent.
struct AgentSeen<'a> {
    first: SystemTime,
    latest: &'a HostRow,
}

/// Upserts one `agents` row per agent in the batch: first and last sample time, and
/// the descriptive columns of its latest sample.
pub(super) async fn upsert_agents(
    tx: &Transaction<'_>,
    hosts: &[&HostRow],
) -> Result<(), SinkError> {
    let mut agents: HashMap<&str, AgentSeen<'_>> = HashMap::new();
    for &row in hosts {
        agents
            .entry(row.sample.agent_id.as_str())
            .and_modify(|seen| {
                seen.first = seen.first.min(row.ts);
                if row.ts >= seen.latest.ts {
                    seen.latest = row;
                }
            })
            .or_insert(AgentSeen {
                first: row.ts,
                latest: row,
            });
    }
    let column = |f: fn(&HostSample) -> &str| -> Vec<&str> {
        agents.values().map(|seen| f(&seen.latest.sample)).collect()
    };
    let ids = column(|s| s.agent_id.as_str());
    let hostnames = column(|s| s.hostname.as_str());
    let os_names = column(|s| s.os_name.as_str());
    let os_versions = column(|s| s.os_version.as_str());
    let agent_versions = column(|s| s.agent_version.as_str());
    let first: Vec<SystemTime> = agents.values().map(|seen| seen.first).collect();
    let last: Vec<SystemTime> = agents.values().map(|seen| seen.latest.ts).collect();
    let intervals: Vec<i32> = agents
        .values()
        .map(|seen| i32::try_from(seen.latest.sample.interval_seconds).unwrap_or(i32::MAX))
        .collect();
    let latest = |f: fn(&HostSample) -> Option<f64>| -> Vec<Option<f64>> {
        agents.values().map(|seen| f(&seen.latest.sample)).collect()
    };
    let cpu = latest(|s| Some(s.cpu_usage_percent));
    let memory = latest(|s| {
        (s.memory_total_bytes > 0)
            .then(|| s.memory_used_bytes as f64 * 100.0 / s.memory_total_bytes as f64)
    });
    let disk = latest(fleetmon::samples::disk_used_percent);
    tx.execute(
        UPSERT_AGENTS,
        &[
            &ids,
            &hostnames,
            &os_names,
            &os_versions,
            &agent_versions,
            &first,
            &last,
            &intervals,
            &cpu,
            &memory,
            &disk,
        ],
    )
    .await?;
    Ok(())
}
