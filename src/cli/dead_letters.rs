//! `fleetmon dead-letters`: the writer's `DeadLetters` service — what could not be
//! stored, why, and sending it back once the cause is fixed.

use std::time::{Duration, SystemTime};

use clap::Subcommand;
use fleetmon::pb::dead_letter::Sample;
use fleetmon::pb::dead_letters_client::DeadLettersClient;
use fleetmon::pb::{
    DeadLetter, DeadLetterRef, HostSample, ListDeadLettersRequest, ReplayDeadLettersRequest,
    SiteCheck,
};
use serde_json::{Value, json};

use super::table::{ago, render, rfc3339};
use super::{Connection, call_error, parse_duration};

/// `fleetmon dead-letters …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadLettersCommand {
    /// Dead letters, oldest first: id, when, reason, source, agent, seq and error.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Only those dead-lettered this recently (90s, 15m, 1h, 7d).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// Only those whose reason starts with this: a SQLSTATE (`23514`, `22`),
        /// `outside_window` or `undecodable`.
        #[arg(long, default_value = "")]
        reason: String,
        /// At most this many (the newest), up to 1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One dead letter: why, its headers and its sample as JSON where it decodes.
    Show {
        /// The id from `fleetmon dead-letters list` (PARTITION:OFFSET).
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Send dead letters back through the normal path (after fixing the cause); each
    /// sample is stored at most once.
    Replay {
        /// Ids from `fleetmon dead-letters list`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter that decodes as a sample.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Runs one `dead-letters` command.
pub(crate) async fn run(command: DeadLettersCommand) -> anyhow::Result<()> {
    match command {
        DeadLettersCommand::List {
            connection,
            since,
            reason,
            limit,
        } => list(&connection, since, reason, limit).await,
        DeadLettersCommand::Show { id, connection } => show(&connection, id).await,
        DeadLettersCommand::Replay {
            ids,
            all,
            connection,
        } => replay(&connection, ids, all).await,
    }
}

async fn client(conn: &Connection) -> anyhow::Result<DeadLettersClient<tonic::transport::Channel>> {
    Ok(DeadLettersClient::new(
        fleetmon::tls::connect(&conn.writer, &conn.tls()).await?,
    ))
}

async fn list(
    conn: &Connection,
    since: Option<Duration>,
    reason: String,
    limit: u32,
) -> anyhow::Result<()> {
    let response = client(conn)
        .await?
        .list_dead_letters(ListDeadLettersRequest {
            since: since.map(|s| (SystemTime::now() - s).into()),
            reason,
            limit,
        })
        .await
        .map_err(|s| call_error("DeadLetters/ListDeadLetters", &conn.writer, s))?
        .into_inner();
    if conn.json {
        let values: Vec<Value> = response.dead_letters.iter().map(letter_json).collect();
        println!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(());
    }
    if response.dead_letters.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = response
        .dead_letters
        .iter()
        .map(|l| {
            let mut error = l.error.clone();
            if error.len() > 80 {
                error = format!("{}…", error.chars().take(79).collect::<String>());
            }
            vec![
                l.id.clone(),
                ago(l.dead_at),
                l.reason.clone(),
                l.source_topic.clone(),
                l.agent_id.clone(),
                l.seq.to_string(),
                error,
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &["ID", "DEAD", "REASON", "SOURCE", "AGENT", "SEQ", "ERROR"],
            &rows
        )
    );
    if response.truncated {
        println!("(more match: the newest {} are shown)", rows.len());
    }
    Ok(())
}

async fn show(conn: &Connection, id: String) -> anyhow::Result<()> {
    let letter = client(conn)
        .await?
        .get_dead_letter(DeadLetterRef { id })
        .await
        .map_err(|s| call_error("DeadLetters/GetDeadLetter", &conn.writer, s))?
        .into_inner();
    println!("{}", serde_json::to_string_pretty(&letter_json(&letter))?);
    Ok(())
}

async fn replay(conn: &Connection, ids: Vec<String>, all: bool) -> anyhow::Result<()> {
    let response = client(conn)
        .await?
        .replay_dead_letters(ReplayDeadLettersRequest { ids, all })
        .await
        .map_err(|s| call_error("DeadLetters/ReplayDeadLetters", &conn.writer, s))?
        .into_inner();
    if conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"replayed": response.replayed, "skipped": response.skipped})
            )?
        );
        return Ok(());
    }
    println!("replayed {}", response.replayed);
    for skipped in &response.skipped {
        println!("skipped {skipped}");
    }
    Ok(())
}

fn letter_json(l: &DeadLetter) -> Value {
    json!({
        "id": l.id,
        "dead_at": rfc3339(l.dead_at),
        "reason": l.reason,
        "error": l.error,
        "source_topic": l.source_topic,
        "source_partition": l.source_partition,
        "agent_id": l.agent_id,
        "stream_id": l.stream_id,
        "seq": l.seq,
        "headers": l.headers.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "value_bytes": l.value_bytes,
        "sample": match &l.sample {
            Some(Sample::Host(h)) => host_json(h),
            Some(Sample::Site(s)) => site_json(s),
            None => Value::Null,
        },
    })
}

fn time(t: Option<prost_types::Timestamp>) -> Value {
    match t {
        Some(t) => json!({"seconds": t.seconds, "nanos": t.nanos}),
        None => Value::Null,
    }
}

/// Every field of a host sample, named as in the proto. Floats that JSON cannot hold
/// (NaN, infinity) come out as null.
fn host_json(h: &HostSample) -> Value {
    json!({
        "agent_id": h.agent_id, "stream_id": h.stream_id, "seq": h.seq,
        "sampled_at": time(h.sampled_at), "hostname": h.hostname, "os_name": h.os_name,
        "os_version": h.os_version, "kernel_version": h.kernel_version,
        "agent_version": h.agent_version, "cpu_usage_percent": h.cpu_usage_percent,
        "cpu_core_usage_percent": h.cpu_core_usage_percent,
        "load_average_1m": h.load_average_1m, "load_average_5m": h.load_average_5m,
        "load_average_15m": h.load_average_15m, "memory_total_bytes": h.memory_total_bytes,
        "memory_used_bytes": h.memory_used_bytes,
        "memory_available_bytes": h.memory_available_bytes,
        "swap_total_bytes": h.swap_total_bytes, "swap_used_bytes": h.swap_used_bytes,
        "disk_total_bytes": h.disk_total_bytes, "disk_used_bytes": h.disk_used_bytes,
        "disk_available_bytes": h.disk_available_bytes,
        "disks": h.disks.iter().map(|d| json!({
            "mount_point": d.mount_point, "device": d.device, "file_system": d.file_system,
            "total_bytes": d.total_bytes, "used_bytes": d.used_bytes,
            "available_bytes": d.available_bytes,
        })).collect::<Vec<_>>(),
        "network_rx_bytes": h.network_rx_bytes, "network_tx_bytes": h.network_tx_bytes,
        "network_rx_bytes_per_second": h.network_rx_bytes_per_second,
        "network_tx_bytes_per_second": h.network_tx_bytes_per_second,
        "interfaces": h.interfaces.iter().map(|i| json!({
            "name": i.name, "rx_bytes": i.rx_bytes, "tx_bytes": i.tx_bytes,
            "rx_bytes_per_second": i.rx_bytes_per_second,
            "tx_bytes_per_second": i.tx_bytes_per_second,
        })).collect::<Vec<_>>(),
        "process_count": h.process_count, "uptime_seconds": h.uptime_seconds,
        "interval_seconds": h.interval_seconds,
    })
}

/// Every field of a site check, named as in the proto.
fn site_json(s: &SiteCheck) -> Value {
    json!({
        "agent_id": s.agent_id, "stream_id": s.stream_id, "seq": s.seq,
        "checked_at": time(s.checked_at), "url": s.url, "method": s.method,
        "status_code": s.status_code, "ok": s.ok,
        "failure": fleetmon::check_failure::name_of(s.failure).unwrap_or_default(),
        "error_message": s.error_message, "response_time_ms": s.response_time_ms,
        "time_to_first_byte_ms": s.time_to_first_byte_ms, "regex": s.regex,
        "regex_matched": s.regex_matched, "matched_text": s.matched_text,
        "body_bytes": s.body_bytes, "final_url": s.final_url,
        "tls_cert_not_after": time(s.tls_cert_not_after), "check_id": s.check_id,
        "check_version": s.check_version,
    })
}
