//! What each operator command asks and prints.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use fleetmon::pb::fleet_client::FleetClient;
use fleetmon::pb::history_client::HistoryClient;
use fleetmon::pb::{
    GetLatestRequest, HostSeriesRequest, ListAgentsRequest, SiteAvailability,
    SiteAvailabilityRequest, TimeRange,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::Connection;
use super::table::{ago, bytes, labels, render, rfc3339};

async fn channel(url: &str, conn: &Connection) -> anyhow::Result<Channel> {
    Ok(fleetmon::tls::connect(url, &conn.tls()).await?)
}

fn since(ago: Duration) -> Option<TimeRange> {
    Some(TimeRange {
        start: Some(prost_types::Timestamp::from(SystemTime::now() - ago)),
        end: None,
    })
}

fn failure_name(code: i32) -> &'static str {
    fleetmon::check_failure::name_of(code).unwrap_or_default()
}

async fn availability(
    conn: &Connection,
    url: &str,
    window: Duration,
) -> anyhow::Result<Vec<SiteAvailability>> {
    let mut history = HistoryClient::new(channel(&conn.writer, conn).await?);
    every_site(&mut history, url, since(window))
        .await
        .with_context(|| format!("History/GetSiteAvailability on {}", conn.writer))
}

/// Availability of every site (or of `url`) over `range`, page after page.
pub(crate) async fn every_site(
    history: &mut HistoryClient<Channel>,
    url: &str,
    range: Option<TimeRange>,
) -> Result<Vec<SiteAvailability>, tonic::Status> {
    let (mut sites, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = history
            .get_site_availability(SiteAvailabilityRequest {
                url: url.to_owned(),
                range,
                page_token,
            })
            .await?
            .into_inner();
        sites.extend(page.sites);
        if page.next_page_token.is_empty() {
            return Ok(sites);
        }
        page_token = page.next_page_token;
    }
}

async fn list_agents(
    fleet: &mut FleetClient<Channel>,
    conn: &Connection,
) -> anyhow::Result<Vec<fleetmon::pb::AgentInfo>> {
    every_agent(fleet)
        .await
        .with_context(|| format!("Fleet/ListAgents on {}", conn.collector))
}

/// Every agent the collector knows, page after page.
pub(crate) async fn every_agent(
    fleet: &mut FleetClient<Channel>,
) -> Result<Vec<fleetmon::pb::AgentInfo>, tonic::Status> {
    let (mut agents, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = fleet
            .list_agents(ListAgentsRequest {
                page_token,
                page_size: 0,
            })
            .await?
            .into_inner();
        agents.extend(page.agents);
        if page.next_page_token.is_empty() {
            return Ok(agents);
        }
        page_token = page.next_page_token;
    }
}

/// The latest samples of every agent, page after page.
pub(crate) async fn every_latest(
    fleet: &mut FleetClient<Channel>,
) -> Result<Vec<fleetmon::pb::AgentLatest>, tonic::Status> {
    let (mut latest, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = fleet
            .get_latest(GetLatestRequest {
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        latest.extend(page.agents);
        if page.next_page_token.is_empty() {
            return Ok(latest);
        }
        page_token = page.next_page_token;
    }
}

/// One rendering of the live fleet: agents and their latest host sample, sites and
/// their latest check, with uptime over the last hour from the writer when reachable.
pub(crate) async fn status_once(conn: &Connection) -> anyhow::Result<String> {
    let mut fleet = FleetClient::new(channel(&conn.collector, conn).await?);
    let agents = list_agents(&mut fleet, conn).await?;
    let latest = every_latest(&mut fleet)
        .await
        .with_context(|| format!("Fleet/GetLatest on {}", conn.collector))?;
    let (uptime, writer_note) = match availability(conn, "", Duration::from_secs(3600)).await {
        Ok(sites) => (
            sites
                .into_iter()
                .map(|s| (s.url.clone(), s.uptime_percent))
                .collect(),
            None,
        ),
        Err(error) => (
            HashMap::new(),
            Some(format!("uptime unavailable: {error:#}")),
        ),
    };
    let latest_of: HashMap<&str, &fleetmon::pb::AgentLatest> =
        latest.iter().map(|a| (a.agent_id.as_str(), a)).collect();

    let mut agent_rows = Vec::new();
    let mut agent_json = Vec::new();
    for agent in &agents {
        let host = latest_of
            .get(agent.agent_id.as_str())
            .and_then(|l| l.host.as_ref());
        let cpu = host
            .map(|h| format!("{:.1}%", h.cpu_usage_percent))
            .unwrap_or_else(|| "-".into());
        let memory = host
            .map(|h| {
                format!(
                    "{} / {}",
                    bytes(h.memory_used_bytes as f64),
                    bytes(h.memory_total_bytes as f64)
                )
            })
            .unwrap_or_else(|| "-".into());
        let disk_percent = host.and_then(fleetmon::samples::disk_used_percent);
        let disk = match (host, disk_percent) {
            (Some(h), Some(percent)) => format!(
                "{} / {} ({percent:.0}%)",
                bytes(h.disk_used_bytes as f64),
                bytes(h.disk_total_bytes as f64)
            ),
            _ => "-".into(),
        };
        agent_rows.push(vec![
            agent.agent_id.clone(),
            agent.hostname.clone(),
            if agent.connected { "yes" } else { "no" }.to_owned(),
            cpu,
            memory,
            disk,
            ago(agent.last_sample_at),
        ]);
        agent_json.push(json!({
            "agent_id": agent.agent_id,
            "hostname": agent.hostname,
            "connected": agent.connected,
            "cpu_usage_percent": host.map(|h| h.cpu_usage_percent),
            "memory_used_bytes": host.map(|h| h.memory_used_bytes),
            "memory_total_bytes": host.map(|h| h.memory_total_bytes),
            "disk_used_bytes": host.map(|h| h.disk_used_bytes),
            "disk_available_bytes": host.and_then(|h| h.disk_available_bytes),
            "disk_total_bytes": host.map(|h| h.disk_total_bytes),
            "disk_used_percent": disk_percent,
            "last_sample_at": rfc3339(agent.last_sample_at),
        }));
    }
    let mut site_rows = Vec::new();
    let mut site_json = Vec::new();
    for agent in &latest {
        for check in &agent.sites {
            let up = uptime.get(&check.url).copied();
            site_rows.push(vec![
                check.url.clone(),
                agent.agent_id.clone(),
                if check.ok {
                    "UP".to_owned()
                } else {
                    format!("DOWN {}", failure_name(check.failure))
                },
                check
                    .status_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                format!("{:.0} ms", check.response_time_ms),
                up.map(|u| format!("{u:.1}%")).unwrap_or_else(|| "-".into()),
                ago(check.checked_at),
            ]);
            site_json.push(json!({
                "url": check.url,
                "agent_id": agent.agent_id,
                "ok": check.ok,
                "failure": failure_name(check.failure),
                "status_code": check.status_code,
                "response_time_ms": check.response_time_ms,
                "uptime_percent_1h": up,
                "checked_at": rfc3339(check.checked_at),
            }));
        }
    }
    if conn.json {
        return Ok(json!({ "agents": agent_json, "sites": site_json }).to_string() + "\n");
    }
    let mut out = render(
        &[
            "AGENT",
            "HOST",
            "CONNECTED",
            "CPU",
            "MEMORY",
            "DISK",
            "LAST SEEN",
        ],
        &agent_rows,
    );
    out.push('\n');
    out.push_str(&render(
        &[
            "SITE",
            "AGENT",
            "STATE",
            "STATUS",
            "RESPONSE",
            "UPTIME 1h",
            "CHECKED",
        ],
        &site_rows,
    ));
    if let Some(note) = writer_note {
        out.push_str(&format!("\n({note})\n"));
    }
    Ok(out)
}

/// `fleetmon status [--watch SECONDS]`.
pub(crate) async fn status(conn: &Connection, watch: Option<Duration>) -> anyhow::Result<()> {
    let Some(every) = watch else {
        print!("{}", status_once(conn).await?);
        return Ok(());
    };
    loop {
        let screen = match status_once(conn).await {
            Ok(text) => text,
            Err(error) => format!("{error:#}\n"),
        };
        // Clear the screen, then draw.
        print!(
            "\x1b[2J\x1b[H{}\nrefreshing every {}s; Ctrl-C to quit\n",
            screen,
            every.as_secs()
        );
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `fleetmon agents`.
pub(crate) async fn agents(conn: &Connection) -> anyhow::Result<()> {
    let mut fleet = FleetClient::new(channel(&conn.collector, conn).await?);
    let mut agents = list_agents(&mut fleet, conn).await?;
    // Revoked agents are shown as such, also those this collector never saw.
    let revoked: std::collections::BTreeSet<String> = super::credentials::credentials(conn)
        .await
        .into_iter()
        .filter(|c| c.revoked && !c.name.is_empty())
        .map(|c| c.name)
        .collect();
    for name in &revoked {
        if !agents.iter().any(|a| &a.agent_id == name) {
            agents.push(fleetmon::pb::AgentInfo {
                agent_id: name.clone(),
                ..Default::default()
            });
        }
    }
    if conn.json {
        let list: Vec<Value> = agents
            .iter()
            .map(|a| {
                json!({
                    "agent_id": a.agent_id, "hostname": a.hostname, "remote_address": a.remote_address,
                    "connected": a.connected, "connected_since": rfc3339(a.connected_since),
                    "last_sample_at": rfc3339(a.last_sample_at), "samples_received": a.samples_received,
                    "client_cert_not_after": rfc3339(a.client_cert_not_after),
                    "labels": a.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "reported_labels": a.reported_labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "clock_offset_ms": a.clock_offset_ms,
                    "revoked": revoked.contains(&a.agent_id),
                })
            })
            .collect();
        println!("{}", Value::Array(list));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.agent_id.clone(),
                a.hostname.clone(),
                a.remote_address.clone(),
                if a.connected { "yes" } else { "no" }.to_owned(),
                a.samples_received.to_string(),
                ago(a.last_sample_at),
                rfc3339(a.client_cert_not_after),
                a.clock_offset_ms
                    .map_or("-".to_owned(), |ms| format!("{:+.1} s", ms as f64 / 1000.0)),
                labels(&a.labels),
                if revoked.contains(&a.agent_id) {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "AGENT",
                "HOST",
                "REMOTE",
                "CONNECTED",
                "SAMPLES",
                "LAST SAMPLE",
                "CERT EXPIRES",
                "CLOCK",
                "LABELS",
                "REVOKED"
            ],
            &rows
        )
    );
    Ok(())
}

/// `fleetmon sites --since 1h [--url URL]`.
pub(crate) async fn sites(conn: &Connection, window: Duration, url: &str) -> anyhow::Result<()> {
    let sites = availability(conn, url, window).await?;
    let ms = |v: Option<f64>| {
        v.map(|v| format!("{v:.0} ms"))
            .unwrap_or_else(|| "-".into())
    };
    if conn.json {
        let list: Vec<Value> = sites
            .iter()
            .map(|s| {
                json!({
                    "url": s.url, "checks": s.checks, "ok_checks": s.ok_checks, "uptime_percent": s.uptime_percent,
                    "response_time_min_ms": s.response_time_min_ms, "response_time_max_ms": s.response_time_max_ms,
                    "response_time_avg_ms": s.response_time_avg_ms, "response_time_p50_ms": s.response_time_p50_ms,
                    "response_time_p95_ms": s.response_time_p95_ms, "response_time_p99_ms": s.response_time_p99_ms,
                    "status_codes": s.status_codes, "source": s.source,
                })
            })
            .collect();
        println!("{}", Value::Array(list));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = sites
        .iter()
        .map(|s| {
            let mut codes: Vec<String> = s
                .status_codes
                .iter()
                .map(|(code, n)| format!("{code}:{n}"))
                .collect();
            codes.sort();
            vec![
                s.url.clone(),
                format!("{:.2}%", s.uptime_percent),
                s.checks.to_string(),
                ms(Some(s.response_time_avg_ms)),
                ms(s.response_time_p50_ms),
                ms(s.response_time_p95_ms),
                ms(s.response_time_p99_ms),
                codes.join(" "),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "SITE",
                "UPTIME",
                "CHECKS",
                "AVG",
                "P50",
                "P95",
                "P99",
                "STATUS CODES"
            ],
            &rows
        )
    );
    Ok(())
}

/// `fleetmon series AGENT --since 1h --step 1m`.
pub(crate) async fn series(
    conn: &Connection,
    agent: &str,
    window: Duration,
    step: Duration,
) -> anyhow::Result<()> {
    let mut history = HistoryClient::new(channel(&conn.writer, conn).await?);
    let series = history
        .get_host_series(HostSeriesRequest {
            agent_id: agent.to_owned(),
            range: since(window),
            step_seconds: u32::try_from(step.as_secs()).unwrap_or(u32::MAX),
        })
        .await
        .with_context(|| format!("History/GetHostSeries on {}", conn.writer))?
        .into_inner();
    if conn.json {
        let points: Vec<Value> = series
            .points
            .iter()
            .map(|p| {
                json!({
                    "bucket_start": rfc3339(p.bucket_start), "samples": p.samples,
                    "cpu_usage_percent": p.cpu_usage_percent, "load_average_1m": p.load_average_1m,
                    "memory_used_bytes": p.memory_used_bytes, "disk_used_bytes": p.disk_used_bytes,
                    "network_rx_bytes_per_second": p.network_rx_bytes_per_second,
                    "network_tx_bytes_per_second": p.network_tx_bytes_per_second,
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "agent_id": series.agent_id, "step_seconds": series.step_seconds, "points": points })
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = series
        .points
        .iter()
        .map(|p| {
            vec![
                rfc3339(p.bucket_start),
                p.samples.to_string(),
                format!("{:.1}%", p.cpu_usage_percent),
                format!("{:.2}", p.load_average_1m),
                bytes(p.memory_used_bytes),
                format!("{}/s", bytes(p.network_rx_bytes_per_second)),
                format!("{}/s", bytes(p.network_tx_bytes_per_second)),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &["BUCKET", "SAMPLES", "CPU", "LOAD 1m", "MEMORY", "RX", "TX"],
            &rows
        )
    );
    Ok(())
}
