//! Charts over a month: raw host rows against host rollups, in one run.
//!
//! 100 agents × 30 days of a host sample every 10 s (25.9 million rows; change with
//! `FLEETMON_BENCH_AGENTS`, `FLEETMON_BENCH_DAYS`, `FLEETMON_BENCH_INTERVAL`) are
//! loaded once into a schema of their own (`fleetmon_bench_charts_<agents>x<days>x<interval>`,
//! kept for the next run; drop it to load again) with the writer's migrations and
//! partitions, and added up into rollups by the writer's backfill, the path rows
//! stored before the rollups take. Then, interleaved `FLEETMON_BENCH_REPEATS` times
//! (default 5), each chart is read with the History service's queries from raw rows
//! and from the rollups (the hour tier; a 3 h step):
//!
//! - one agent's 30-day chart (240 points);
//! - the whole fleet's CPU over 30 days (240 points, every agent averaged).
//!
//! Prints the milliseconds of each and the paired ratio raw / rollup (goal: rollups
//! ≥ 50× faster and ≤ 100 ms).
//!
//! Run: `cargo bench -p fleetmon-writer --bench host_charts` (PostgreSQL:
//! `FLEETMON_TEST_PG` or the local server).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use fleetmon::testkit::{Runs, bench_repeats, pg_checkpoint, pg_url};
use fleetmon_writer::config::PostgresConfig;
use fleetmon_writer::store::{PostgresSink, Tier, day_of, host_series_sql};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// Loads `agents` × `days` of samples every `interval` s ending at today's UTC
/// midnight, unless a completed load is there; then the rollups.
async fn load(sink: &PostgresSink, agents: u64, days: u64, interval: u64, end: i64) {
    let client = sink.queries().get().await.unwrap();
    let loaded: bool = client
        .query_one(
            "SELECT to_regclass('bench_loaded') IS NOT NULL AS loaded",
            &[],
        )
        .await
        .unwrap()
        .get("loaded");
    if loaded {
        eprintln!("==> reusing the loaded schema");
        return;
    }
    let first = end - days as i64 * 86_400;
    let all_days: BTreeSet<i64> = (0..days as i64).map(|d| first + d * 86_400).collect();
    sink.ensure_partitions(&all_days).await.unwrap();
    let started = Instant::now();
    for (n, day) in all_days.iter().enumerate() {
        let day_start = SystemTime::UNIX_EPOCH + Duration::from_secs(*day as u64);
        client
            .execute(
                "INSERT INTO host_samples (agent_id, stream_id, seq, ts, hostname, os_name, os_version, \
                 kernel_version, agent_version, cpu_usage_percent, load_average_1m, load_average_5m, \
                 load_average_15m, memory_total_bytes, memory_used_bytes, memory_available_bytes, \
                 swap_total_bytes, swap_used_bytes, disk_total_bytes, disk_used_bytes, network_rx_bytes, \
                 network_tx_bytes, network_rx_bytes_per_second, network_tx_bytes_per_second, \
                 process_count, uptime_seconds, cpu_cores, disks, interfaces, disk_available_bytes) \
                 SELECT 'agent-' || lpad(a::text, 4, '0'), 'stream-' || a, \
                   (extract(epoch FROM t)::bigint / $3::bigint) + 1, t, 'host-' || a, 'Debian GNU/Linux', '12', \
                   '6.1.0', '0.1.0', 50 + 40 * sin(extract(epoch FROM t) / 3600 + a), \
                   abs(sin(a + extract(epoch FROM t) / 600)) * 4, 1, 1, 8589934592, \
                   (2 + abs(sin(a + extract(epoch FROM t) / 7200)) * 4) * 1073741824, 4294967296, \
                   1073741824, 1048576, 107374182400, 42949672960, 0, 0, \
                   1000 + 500 * abs(sin(extract(epoch FROM t))), 800, 150 + a % 50, 86400, \
                   '[]', '[]', '[]', 53687091200 \
                 FROM generate_series(1, $1::int) a, \
                      generate_series($2::timestamptz, $2::timestamptz + interval '1 day' - make_interval(secs => $3::float8), \
                                      make_interval(secs => $3::float8)) t",
                &[&(agents as i32), &day_start, &(interval as f64)],
            )
            .await
            .unwrap();
        eprintln!(
            "==> loaded day {} of {days} ({:.0} s)",
            n + 1,
            started.elapsed().as_secs_f64()
        );
    }
    client
        .execute(
            "INSERT INTO host_rollup_backfill (day, cutoff) \
             SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date, now() FROM host_samples \
             ON CONFLICT (day) DO UPDATE SET done = false, cutoff = now()",
            &[],
        )
        .await
        .unwrap();
    let added = Instant::now();
    let added_days = sink.backfill_host_rollups().await.unwrap();
    eprintln!(
        "==> {added_days} days added up into rollups in {:.0} s",
        added.elapsed().as_secs_f64()
    );
    client.batch_execute("VACUUM ANALYZE").await.unwrap();
    client
        .batch_execute("CREATE TABLE bench_loaded ()")
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let agents = env_or("FLEETMON_BENCH_AGENTS", 100);
    let days = env_or("FLEETMON_BENCH_DAYS", 30);
    let interval = env_or("FLEETMON_BENCH_INTERVAL", 10);
    let repeats = bench_repeats();
    let url = pg_url();
    let schema = format!("fleetmon_bench_charts_{agents}x{days}x{interval}");
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await
        .unwrap();
    let config = PostgresConfig {
        url: url.clone(),
        schema: schema.clone(),
        query_timeout_seconds: 600,
        ..PostgresConfig::default()
    };
    let sink = PostgresSink::new(&config).unwrap();
    sink.migrate().await.unwrap();
    let end = day_of(SystemTime::now());
    load(&sink, agents, days, interval, end).await;
    pg_checkpoint(&url).await;

    let client = sink.queries().get().await.unwrap();
    let from = SystemTime::UNIX_EPOCH + Duration::from_secs((end - days as i64 * 86_400) as u64);
    let to = SystemTime::UNIX_EPOCH + Duration::from_secs(end as u64);
    let step = 3.0 * 3600.0;
    let agent = "agent-0001";
    // (name, fleet, tier)
    let charts = [
        ("one agent", false, None),
        ("one agent", false, Some(Tier::Hour)),
        ("fleet cpu", true, None),
        ("fleet cpu", true, Some(Tier::Hour)),
    ];
    let statements: Vec<_> = charts
        .iter()
        .map(|(_, fleet, tier)| host_series_sql(*tier, *fleet))
        .collect();
    let mut millis: Vec<Runs> = charts.iter().map(|_| Runs(Vec::new())).collect();
    let mut points = vec![0; charts.len()];
    for _ in 0..repeats {
        for (i, (_, fleet, _)) in charts.iter().enumerate() {
            let started = Instant::now();
            let rows = if *fleet {
                client.query(&statements[i], &[&from, &to, &step]).await
            } else {
                client
                    .query(&statements[i], &[&from, &to, &step, &agent])
                    .await
            }
            .unwrap();
            millis[i].0.push(started.elapsed().as_secs_f64() * 1000.0);
            points[i] = rows.len();
        }
    }
    println!(
        "\nhost charts over {days} days at a 3 h step, {agents} agents × a sample every {interval} s \
         ({} raw rows), {repeats} interleaved repeats (ms: median min–max)",
        agents * days * 86_400 / interval
    );
    for (i, (name, _, tier)) in charts.iter().enumerate() {
        let source = tier.map_or("raw", Tier::name);
        println!(
            "{name}, {source} ms  {:.1}  {}  ({} points)",
            millis[i].median(),
            millis[i].spread_to(1),
            points[i]
        );
    }
    for (name, raw, rollup) in [("one agent", 0, 1), ("fleet cpu", 2, 3)] {
        let ratio = millis[raw].paired_ratios(&millis[rollup]);
        println!(
            "ratio: {name} raw / rollup  {:.0}  {}",
            ratio.median(),
            ratio.spread()
        );
    }
}
