//! Kafka → Postgres with a real broker and a real database: rows, duplicates,
//! replays, dead letters, migrations and recovery from lost connections.

use std::time::{Duration, SystemTime};

use fleetmon::identity::Role;
use fleetmon::pb::HostSample;
use fleetmon::testkit::{
    KafkaCluster, PgCluster, PgSchema, ServingStatus, read_topic, texts, wait_for_health,
};
use fleetmon_writer::testkit::*;
use prost::Message as _;
use rdkafka::Message as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_becomes_exactly_one_row_with_every_field() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    let t0 = seconds_ago(600);
    let hosts: Vec<_> = (1..=200)
        .map(|seq| host("a1", seq, t0 + Duration::from_secs(seq)))
        .collect();
    let checks: Vec<_> = (1..=50)
        .map(|seq| {
            check(
                "a1",
                1000 + seq,
                t0 + Duration::from_secs(seq),
                "https://x.example/",
                Some(200),
                true,
                10.0,
            )
        })
        .collect();
    setup.produce_hosts(&hosts).await;
    setup.produce_checks(&checks).await;
    setup
        .wait_for("SELECT count(*) FROM host_samples", 200)
        .await;
    setup.wait_for("SELECT count(*) FROM site_checks", 50).await;

    let db = setup.schema.connect().await;
    let row = db
        .query_one(
            "SELECT agent_id, stream_id, seq, ts, hostname, os_name, os_version, kernel_version, agent_version, \
             cpu_usage_percent, load_average_1m, load_average_5m, load_average_15m, memory_total_bytes, \
             memory_used_bytes, memory_available_bytes, swap_total_bytes, swap_used_bytes, disk_total_bytes, \
             disk_used_bytes, network_rx_bytes, network_tx_bytes, network_rx_bytes_per_second, \
             network_tx_bytes_per_second, process_count, uptime_seconds, cpu_cores, disks, interfaces, \
             disk_available_bytes FROM host_samples WHERE seq = 7",
            &[],
        )
        .await
        .unwrap();
    let expected = &hosts[6];
    // Its busiest processes, in a table of their own.
    let processes = db
        .query(
            "SELECT pid, name, username, command_line, cpu_usage_percent, resident_bytes, threads, \
             started_at, cpu_rank, memory_rank FROM host_processes WHERE seq = 7 ORDER BY pid DESC",
            &[],
        )
        .await
        .unwrap();
    let listed: Vec<String> = processes
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {:?} {} {} {} {:?} {:?} {:?}",
                p.get::<_, i64>("pid"),
                p.get::<_, String>("name"),
                p.get::<_, String>("username"),
                p.get::<_, String>("command_line"),
                p.get::<_, f64>("cpu_usage_percent"),
                p.get::<_, i64>("resident_bytes"),
                p.get::<_, i64>("threads"),
                p.get::<_, Option<SystemTime>>("started_at")
                    .map(|t| expected.sampled_at.unwrap().seconds
                        - prost_types::Timestamp::from(t).seconds),
                p.get::<_, Option<i32>>("cpu_rank"),
                p.get::<_, Option<i32>>("memory_rank"),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            "4242 postgres postgres \"postgres: checkpointer\" 150.5 2147483648 1 Some(3600) Some(1) Some(1)",
            "1 systemd root \"/sbin/init\" 0.5 12582912 1 None Some(2) None",
        ]
    );
    assert_eq!(row.get::<_, String>(0), "a1");
    assert_eq!(row.get::<_, String>(1), "stream-1");
    assert_eq!(row.get::<_, i64>(2), 7);
    let ts: SystemTime = row.get(3);
    assert_eq!(
        prost_types::Timestamp::from(ts),
        expected.sampled_at.unwrap()
    );
    assert_eq!(row.get::<_, String>(4), "a1.example");
    assert_eq!(row.get::<_, String>(5), "Debian GNU/Linux");
    assert_eq!(row.get::<_, String>(6), "12");
    assert_eq!(row.get::<_, String>(7), "6.1.0");
    assert_eq!(row.get::<_, String>(8), "0.1.0");
    assert_eq!(row.get::<_, f64>(9), 12.5);
    assert_eq!(
        (
            row.get::<_, f64>(10),
            row.get::<_, f64>(11),
            row.get::<_, f64>(12)
        ),
        (0.5, 0.25, 0.125)
    );
    let bytes: Vec<i64> = (13..22).map(|i| row.get::<_, i64>(i)).collect();
    assert_eq!(
        bytes,
        [
            8 << 30,
            3 << 30,
            5 << 30,
            1 << 30,
            1 << 20,
            100 << 30,
            40 << 30,
            1_000_000,
            2_000_000
        ]
    );
    assert_eq!(
        (row.get::<_, f64>(22), row.get::<_, f64>(23)),
        (1500.0, 2500.0)
    );
    assert_eq!(
        (row.get::<_, i32>(24), row.get::<_, i64>(25)),
        (123, 86_400)
    );
    assert_eq!(
        row.get::<_, serde_json::Value>(26),
        serde_json::json!([10.0, 15.0])
    );
    assert_eq!(
        row.get::<_, serde_json::Value>(27),
        serde_json::json!([{"mount_point": "/", "device": "/dev/vda1", "file_system": "ext4",
                            "total_bytes": 100u64 << 30, "used_bytes": 40u64 << 30,
                            "available_bytes": 50u64 << 30}])
    );
    assert_eq!(row.get::<_, Option<i64>>(29), Some(50 << 30));
    assert_eq!(
        row.get::<_, serde_json::Value>(28),
        serde_json::json!([{"name": "eth0", "rx_bytes": 1_000_000, "tx_bytes": 2_000_000,
                            "rx_bytes_per_second": 1500.0, "tx_bytes_per_second": 2500.0}])
    );

    let row = db
        .query_one(
            "SELECT url, method, status_code, ok, failure, error_message, response_time_ms, time_to_first_byte_ms, \
             regex, regex_matched, matched_text, body_bytes, final_url, tls_cert_not_after FROM site_checks WHERE seq = 1003",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "https://x.example/");
    assert_eq!(row.get::<_, String>(1), "GET");
    assert_eq!(row.get::<_, Option<i32>>(2), Some(200));
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, Option<String>>(4), None);
    assert_eq!(row.get::<_, String>(5), "");
    assert_eq!(
        (row.get::<_, f64>(6), row.get::<_, Option<f64>>(7)),
        (10.0, Some(5.0))
    );
    assert_eq!(row.get::<_, String>(8), "Welcome");
    assert_eq!(row.get::<_, Option<bool>>(9), Some(true));
    assert_eq!(row.get::<_, String>(10), "Welcome");
    assert_eq!(row.get::<_, i64>(11), 1234);
    assert_eq!(row.get::<_, String>(12), "https://x.example/");
    let not_after: SystemTime = row.get(13);
    assert_eq!(
        not_after,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)
    );

    let (hostname, first_seen, last_seen, disk_percent): (String, SystemTime, SystemTime, f64) = {
        let row = db
            .query_one(
                "SELECT hostname, first_seen, last_seen, disk_percent FROM agents WHERE agent_id = 'a1'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3))
    };
    assert_eq!(hostname, "a1.example");
    // As df's Use%: 40 GiB used of the 90 GiB not reserved for root.
    assert_eq!(disk_percent, 40.0 * 100.0 / 90.0);
    assert_eq!(first_seen, t0 + Duration::from_secs(1));
    assert_eq!(last_seen, t0 + Duration::from_secs(200));

    // The writer is the group's only member: it holds every partition of both topics.
    let metrics = fleetmon::testkit::metrics_text(writer.running.metrics_addr);
    for topic in [
        &setup.config.kafka.host_samples_topic,
        &setup.config.kafka.site_checks_topic,
    ] {
        for partition in 0..3 {
            let line = format!(
                "fleetmon_writer_assigned_partitions{{topic=\"{topic}\",partition=\"{partition}\"}} 1"
            );
            assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
        }
    }
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_repeated_within_a_batch_is_stored_and_counted_once() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    let t0 = SystemTime::now() - Duration::from_secs(300);
    let url = "https://y.example/";
    let failed = check(
        "a1",
        2,
        t0 + Duration::from_secs(2),
        url,
        Some(503),
        false,
        7.0,
    );
    // Sent together, well within one batch's linger: the repeats meet their first
    // copy in the batch, not in the table.
    setup
        .produce_checks(&[
            check(
                "a1",
                1,
                t0 + Duration::from_secs(1),
                url,
                Some(200),
                true,
                5.0,
            ),
            failed.clone(),
            failed,
        ])
        .await;
    let sample = host("a2", 1, t0);
    setup.produce_hosts(&[sample.clone(), sample]).await;
    setup.wait_for("SELECT count(*) FROM site_checks", 2).await;
    setup.wait_for("SELECT count(*) FROM host_samples", 1).await;
    writer.stop().await;
    assert_eq!(setup.scalar("SELECT count(*) FROM site_checks").await, 2);
    assert_eq!(setup.scalar("SELECT count(*) FROM host_samples").await, 1);
    let hour = "SELECT (sum(checks) * 1000 + sum(ok_checks))::bigint FROM site_check_rollups \
                WHERE resolution = 'hour'";
    assert_eq!(
        setup.scalar(hour).await,
        2_001,
        "rollups count each check once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_and_replay_store_nothing_twice() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    let t0 = SystemTime::now() - Duration::from_secs(300);
    let checks: Vec<_> = (1..=60)
        .map(|seq| {
            let ok = seq % 4 != 0;
            let status = if ok { 200 } else { 503 };
            check(
                "a1",
                seq,
                t0 + Duration::from_secs(seq),
                "https://y.example/",
                Some(status),
                ok,
                seq as f64,
            )
        })
        .collect();
    let hosts: Vec<_> = (1..=40)
        .map(|seq| host("a2", seq, t0 + Duration::from_secs(seq)))
        .collect();
    setup.produce_checks(&checks).await;
    setup.produce_hosts(&hosts).await;
    setup.wait_for("SELECT count(*) FROM site_checks", 60).await;
    setup
        .wait_for("SELECT count(*) FROM host_samples", 40)
        .await;
    let rollups = "SELECT (sum(checks) FILTER (WHERE resolution = 'minute') * 1000000 \
                   + sum(ok_checks) FILTER (WHERE resolution = 'hour'))::bigint FROM site_check_rollups";
    assert_eq!(setup.scalar(rollups).await, 60 * 1_000_000 + 45);
    // The check's days (every location together): results and passing ones.
    let days = "SELECT (sum(results) * 1000 + sum(ok_results))::bigint FROM check_days";
    assert_eq!(setup.scalar(days).await, 60 * 1000 + 45);

    // The same records delivered again (a producer retry, an agent resend).
    setup.produce_checks(&checks[10..30]).await;
    setup.produce_hosts(&hosts[..10]).await;
    // A marker record proves the duplicates before it were consumed.
    setup
        .produce_checks(&[check(
            "a1",
            61,
            t0 + Duration::from_secs(61),
            "https://y.example/",
            Some(200),
            true,
            1.0,
        )])
        .await;
    setup.wait_for("SELECT count(*) FROM site_checks", 61).await;
    writer.stop().await;
    assert_eq!(setup.scalar("SELECT count(*) FROM host_samples").await, 40);
    assert_eq!(
        setup.scalar("SELECT count(*) FROM host_processes").await,
        2 * 40,
        "a redelivered sample's processes are not stored again"
    );
    assert_eq!(setup.scalar(rollups).await, 61 * 1_000_000 + 46);
    assert_eq!(setup.scalar(days).await, 61 * 1000 + 46);

    // A writer whose offsets were never stored reads everything again.
    let replay = setup
        .start_writer_with(|c| {
            c.kafka.group_id = fleetmon::testkit::unique_name("fleetmon-test-replay")
        })
        .await;
    setup
        .produce_hosts(&[host("a2", 41, t0 + Duration::from_secs(41))])
        .await;
    setup
        .wait_for("SELECT count(*) FROM host_samples", 41)
        .await;
    setup.wait_for("SELECT count(*) FROM site_checks", 61).await;
    // The replay read every record stored before (40 host samples, 61 checks): each was
    // skipped as already stored.
    fleetmon::testkit::wait_for_metric(
        replay.running.metrics_addr,
        "fleetmon_writer_duplicates_skipped_total",
        101.0,
    )
    .await;
    replay.stop().await;
    assert_eq!(
        setup.scalar(rollups).await,
        61 * 1_000_000 + 46,
        "rollups not double-counted"
    );
    assert_eq!(
        setup.scalar(days).await,
        61 * 1000 + 46,
        "days not double-counted"
    );
    assert_eq!(
        setup.scalar("SELECT count(*) FROM host_processes").await,
        2 * 41,
        "replayed samples' processes not stored again"
    );
    assert_eq!(
        setup
            .scalar("SELECT (sum(checks) FILTER (WHERE resolution = 'hour'))::bigint FROM site_check_rollups")
            .await,
        61
    );
    let codes = setup.schema.connect().await;
    let counted: i64 = codes
        .query_one(
            "SELECT sum((status_codes->>'503')::bigint)::bigint FROM site_check_rollups WHERE resolution = 'hour'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 15);
}

/// Each rollup row as text, in key order: what `site_check_rollups` holds, or what
/// the stored checks add up to per UTC minute and hour, worked out here in SQL.
const STORED_ROLLUPS: &str = "SELECT format('%s %s %s %s/%s %s..%s sum %s %s', url, resolution, \
     bucket_start AT TIME ZONE 'UTC', checks, ok_checks, response_time_min_ms, \
     response_time_max_ms, response_time_sum_ms, status_codes) \
     FROM site_check_rollups ORDER BY url, resolution, bucket_start";
const ROLLUPS_OF_THE_ROWS: &str = "WITH b AS ( \
       SELECT url, r.resolution, date_trunc(r.resolution, ts, 'UTC') AS bucket_start, ok, \
              response_time_ms, coalesce(status_code::text, 'none') AS code \
       FROM site_checks CROSS JOIN (VALUES ('minute'), ('hour')) AS r(resolution)), \
     codes AS (SELECT url, resolution, bucket_start, jsonb_object_agg(code, n) AS status_codes \
       FROM (SELECT url, resolution, bucket_start, code, count(*) AS n FROM b GROUP BY 1, 2, 3, 4) c \
       GROUP BY 1, 2, 3) \
     SELECT format('%s %s %s %s/%s %s..%s sum %s %s', url, resolution, \
       bucket_start AT TIME ZONE 'UTC', count(*), count(*) FILTER (WHERE ok), \
       min(response_time_ms), max(response_time_ms), sum(response_time_ms), \
       min(status_codes::text)::jsonb) \
     FROM b JOIN codes USING (url, resolution, bucket_start) \
     GROUP BY url, resolution, bucket_start ORDER BY url, resolution, bucket_start";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_hold_what_the_stored_checks_add_up_to_per_utc_minute_and_hour() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    // Two sites over 100 minutes, across an hour boundary, some without a response.
    let hour = 3600;
    let start = seconds_ago(3 * hour);
    let start = start
        - Duration::from_secs(
            start
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                % hour,
        )
        + Duration::from_secs(hour - 50 * 60);
    let checks: Vec<_> = (1..=400u64)
        .map(|seq| {
            let (status, ok) = match seq % 7 {
                0 => (None, false),
                1 => (Some(503), false),
                _ => (Some(200), true),
            };
            let url = ["https://a.example/", "https://b.example/"][(seq % 2) as usize];
            let ts = start + Duration::from_secs(seq * 15);
            check("a1", seq, ts, url, status, ok, (seq % 37) as f64 + 0.5)
        })
        .collect();
    // In two deliveries, so that buckets the first one started, the second adds to.
    setup.produce_checks(&checks[..230]).await;
    setup
        .wait_for("SELECT count(*) FROM site_checks", 230)
        .await;
    setup.produce_checks(&checks[230..]).await;
    setup
        .wait_for("SELECT count(*) FROM site_checks", 400)
        .await;
    writer.stop().await;

    let db = connected_elsewhere(&setup).await;
    let stored = text_lines(&db, STORED_ROLLUPS).await;
    assert_eq!(stored, text_lines(&db, ROLLUPS_OF_THE_ROWS).await);
    // Site a in 101 minutes, b in 100 (15 s earlier), both in 2 hours; codes counted
    // apart, "none" included.
    assert_eq!(stored.len(), 101 + 100 + 2 * 2, "{stored:#?}");
    assert!(
        stored.iter().any(|line| line.contains(r#""none": "#)),
        "{stored:#?}"
    );
}

/// A connection to the test schema in a time zone far from UTC: rollup buckets are
/// UTC whatever the session's zone.
async fn connected_elsewhere(setup: &Setup) -> tokio_postgres::Client {
    let db = setup.schema.connect().await;
    db.batch_execute("SET TIME ZONE 'Asia/Kolkata'")
        .await
        .unwrap();
    db
}

/// The first column of each row `sql` returns, as text.
async fn text_lines(db: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    db.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

/// The gauges of `host_rollups`, as columns of `host_samples`.
const HOST_GAUGES: [&str; 9] = [
    "cpu_usage_percent",
    "load_average_1m",
    "memory_used_bytes",
    "memory_available_bytes",
    "swap_used_bytes",
    "disk_used_bytes",
    "network_rx_bytes_per_second",
    "network_tx_bytes_per_second",
    "process_count",
];

/// Each host rollup row as text in key order: what `host_rollups` holds (`stored`),
/// or what the stored samples add up to per UTC minute, hour and day, worked out
/// here in SQL.
fn host_rollup_lines(stored: bool) -> String {
    let figures: Vec<String> = HOST_GAUGES
        .iter()
        .flat_map(|g| {
            if stored {
                ["sum", "min", "max", "last"].map(|f| format!("{g}_{f}::text"))
            } else {
                [
                    format!("sum({g}::float8)::text"),
                    format!("min({g}::float8)::text"),
                    format!("max({g}::float8)::text"),
                    format!("((array_agg({g}::float8 ORDER BY ts DESC))[1])::text"),
                ]
            }
        })
        .collect();
    if stored {
        format!(
            "SELECT concat_ws(' ', agent_id, resolution, bucket_start, samples, last_ts, {}) \
             FROM host_rollups ORDER BY agent_id, resolution, bucket_start",
            figures.join(", ")
        )
    } else {
        let tiers = [("minute", 60), ("hour", 3600), ("day", 86_400)].map(|(name, secs)| {
            format!(
                "SELECT agent_id, '{name}' AS resolution, \
                 date_bin(interval '{secs} seconds', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket_start, \
                 concat_ws(' ', agent_id, '{name}', date_bin(interval '{secs} seconds', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'), \
                 count(*), max(ts), {}) AS line FROM host_samples GROUP BY 1, 2, 3",
                figures.join(", ")
            )
        });
        format!(
            "SELECT line FROM ({}) t ORDER BY agent_id, resolution, bucket_start",
            tiers.join(" UNION ALL ")
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rollups_hold_what_the_samples_add_up_to_through_a_crash_a_redelivery_and_a_backfill()
{
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    // Two agents every 20 s over 150 minutes, across hour boundaries.
    let start = seconds_ago(3 * 3600);
    let hosts = varied_host_samples(start);
    // The first part, then the writer dies without a goodbye (its offsets may or may
    // not be stored), and a new one in its group gets the rest and some again.
    setup.produce_hosts(&hosts[..400]).await;
    setup
        .wait_for("SELECT count(*) FROM host_samples", 400)
        .await;
    writer.running.task.abort();
    let writer = setup.start_writer().await;
    setup.produce_hosts(&hosts[400..]).await;
    setup.produce_hosts(&hosts[100..300]).await;
    setup
        .wait_for("SELECT count(*) FROM host_samples", 900)
        .await;
    // A marker after the redelivery proves it was read.
    setup
        .produce_hosts(&[host("h3", 1, start + Duration::from_secs(9500))])
        .await;
    setup
        .wait_for("SELECT count(*) FROM host_samples", 901)
        .await;
    writer.stop().await;

    let db = connected_elsewhere(&setup).await;
    let stored = text_lines(&db, &host_rollup_lines(true)).await;
    assert_eq!(stored, text_lines(&db, &host_rollup_lines(false)).await);
    // h1 and h2: 150 or 151 minutes each, 3 or 4 hours, 1 or 2 days; h3: one each.
    assert!(stored.len() >= 2 * 150 + 2 * 3 + 2 + 3, "{}", stored.len());

    // Rows stored before the rollups existed: the writer adds up each such day once.
    db.batch_execute(
        "TRUNCATE host_rollups; \
         INSERT INTO host_rollup_backfill (day, cutoff) \
         SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date, now() FROM host_samples \
         ON CONFLICT (day) DO UPDATE SET done = false, cutoff = now()",
    )
    .await
    .unwrap();
    let writer = setup.start_writer().await;
    setup
        .wait_for(
            "SELECT count(*) FROM host_rollup_backfill WHERE NOT done",
            0,
        )
        .await;
    writer.stop().await;
    assert_eq!(text_lines(&db, &host_rollup_lines(true)).await, stored);
}

/// Two agents every 20 s over 150 minutes from `start`, with figures that vary.
fn varied_host_samples(start: SystemTime) -> Vec<HostSample> {
    (1..=900u64)
        .map(|seq| {
            let agent = ["h1", "h2"][(seq % 2) as usize];
            let mut sample = host(agent, seq, start + Duration::from_secs(seq * 10));
            sample.cpu_usage_percent = (seq % 41) as f64 + 0.5;
            sample.load_average_1m = (seq % 7) as f64 * 0.25;
            sample.memory_used_bytes = (seq % 13) << 28;
            sample.network_rx_bytes_per_second = (seq % 5) as f64 * 1024.0;
            sample.process_count = 100 + (seq % 17) as u32;
            sample
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rollups_fold_hours_and_days_later_even_after_a_crash_and_for_a_late_sample() {
    let setup = Setup::new().await;
    let delayed = |config: &mut fleetmon_writer::WriterConfig| {
        config.postgres.host_rollup_delay_seconds = 10;
    };
    let writer = setup
        .start_writer_with(|config| config.postgres.host_rollup_delay_seconds = 3600)
        .await;
    let start = seconds_ago(3 * 3600);
    let hosts = varied_host_samples(start);
    setup.produce_hosts(&hosts).await;
    setup
        .wait_for("SELECT count(*) FROM host_samples", 900)
        .await;
    // Stored with their minute buckets; the hours and days wait for their marks, due
    // in half an hour or more. The writer dies with them.
    writer.running.task.abort();
    let db = connected_elsewhere(&setup).await;
    let marked: i64 = db
        .query_one("SELECT count(*) FROM host_rollup_pending", &[])
        .await
        .unwrap()
        .get(0);
    assert!(marked >= 2 * 3, "{marked} hours marked");
    let coarse: i64 = db
        .query_one(
            "SELECT count(*) FROM host_rollups WHERE resolution IN ('hour', 'day')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        coarse, 0,
        "hour and day buckets before their marks fell due"
    );

    // Another writer, with no sample left to write, folds what the first one marked
    // once it falls due (here at once, as if the half hour had passed).
    db.execute("UPDATE host_rollup_pending SET due = now()", &[])
        .await
        .unwrap();
    let writer = setup.start_writer_with(delayed).await;
    setup
        .wait_for("SELECT count(*) FROM host_rollup_pending", 0)
        .await;
    let expected = text_lines(&db, &host_rollup_lines(false)).await;
    assert_eq!(text_lines(&db, &host_rollup_lines(true)).await, expected);

    // A late sample into an hour folded long ago moves its hour and day again.
    let mut late = host("h1", 5000, start + Duration::from_secs(1805));
    late.cpu_usage_percent = 99.5;
    late.process_count = 4000;
    setup.produce_hosts(&[late]).await;
    setup
        .wait_for("SELECT count(*) FROM host_samples", 901)
        .await;
    setup
        .wait_for("SELECT count(*) FROM host_rollup_pending", 0)
        .await;
    // Once more into that hour, now that this writer's own mark of it was folded: the
    // writer must mark it again, not trust that its mark is still there.
    let mut later = host("h1", 5001, start + Duration::from_secs(1806));
    later.process_count = 4001;
    setup.produce_hosts(&[later]).await;
    setup
        .wait_for("SELECT count(*) FROM host_samples", 902)
        .await;
    setup
        .wait_for("SELECT count(*) FROM host_rollup_pending", 0)
        .await;
    writer.stop().await;
    let expected = text_lines(&db, &host_rollup_lines(false)).await;
    assert_eq!(text_lines(&db, &host_rollup_lines(true)).await, expected);
    let hour_max: f64 = db
        .query_one(
            "SELECT max(process_count_max) FROM host_rollups WHERE resolution = 'hour' AND agent_id = 'h1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hour_max, 4001.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_figures_follow_its_latest_host_sample_whatever_its_checks_say() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    let t0 = seconds_ago(600);
    let at = |secs| t0 + Duration::from_secs(secs);
    let sample = |seq, secs, cpu| HostSample {
        cpu_usage_percent: cpu,
        ..host("a1", seq, at(secs))
    };
    let agent = || async {
        let row = setup
            .schema
            .connect()
            .await
            .query_one(
                "SELECT cpu_percent, first_seen, last_seen, host_seen FROM agents WHERE agent_id = 'a1'",
                &[],
            )
            .await
            .unwrap();
        let times: (SystemTime, SystemTime, SystemTime) = (row.get(1), row.get(2), row.get(3));
        (row.get::<_, f64>(0), times)
    };
    setup.produce_hosts(&[sample(1, 100, 10.0)]).await;
    setup.wait_for("SELECT count(*) FROM host_samples", 1).await;
    // A check later than every host sample so far, stored before the next one.
    setup
        .produce_checks(&[check(
            "a1",
            2,
            at(200),
            "https://x.example/",
            Some(200),
            true,
            1.0,
        )])
        .await;
    setup.wait_for("SELECT count(*) FROM site_checks", 1).await;
    assert_eq!(agent().await, (10.0, (at(100), at(200), at(100))));

    // The next host sample is earlier than that check: it is still the latest host sample.
    setup.produce_hosts(&[sample(3, 150, 20.0)]).await;
    setup.wait_for("SELECT count(*) FROM host_samples", 2).await;
    assert_eq!(agent().await, (20.0, (at(100), at(200), at(150))));

    // A late redelivery of an older one widens first_seen and changes nothing else.
    setup.produce_hosts(&[sample(4, 50, 30.0)]).await;
    setup.wait_for("SELECT count(*) FROM host_samples", 3).await;
    assert_eq!(agent().await, (20.0, (at(50), at(200), at(150))));
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_to_dead_letters_and_its_neighbours_are_stored() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let topic = setup.config.kafka.host_samples_topic.clone();
    setup.produce_hosts(&[host("a1", 1, t0)]).await;
    setup
        .produce_raw(
            &topic,
            "a1",
            b"\x08\x96\x01 this is not protobuf \xff",
            None,
        )
        .await;
    setup
        .produce_hosts(&[host("a1", 2, t0 + Duration::from_secs(1))])
        .await;
    setup.wait_for("SELECT count(*) FROM host_samples", 2).await;

    let dead = read_topic(
        &setup.config.kafka.bootstrap_servers,
        &setup.config.kafka.dead_letter_topic,
        1,
        Duration::from_secs(30),
    )
    .await;
    let record = &dead[0];
    assert_eq!(record.key(), Some(&b"a1"[..]));
    assert_eq!(
        record.payload(),
        Some(&b"\x08\x96\x01 this is not protobuf \xff"[..])
    );
    let header = |name: &str| header(record, name);
    let error = header("error").expect("error header");
    assert!(
        error.starts_with("value is not a valid fleetmon.v1.HostSample: "),
        "{error}"
    );
    assert_eq!(header("source-topic").as_deref(), Some(topic.as_str()));
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_every_kept_day_gets_a_partition_and_no_other() {
    let setup = Setup::new().await;
    let tables =
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()";
    let first = setup.start_writer().await;
    first.stop().await;
    let before = setup.scalar(tables).await;
    let second = setup.start_writer().await;
    assert_eq!(
        setup.scalar(tables).await,
        before,
        "second start changed the schema"
    );
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sql")
        })
        .count() as i64;
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM refinery_schema_history")
            .await,
        migrations,
        "every migration in writer/migrations, each once"
    );

    // One from last week gets its partition. One ten days ahead and one for each of
    // 40 days of 2001 (a broken clock) would each need a partition that retention
    // drops at once: they go to the dead-letter topic and make none.
    let day = Duration::from_secs(86_400);
    let year_2001 = SystemTime::UNIX_EPOCH + Duration::from_secs(978_307_200);
    let mut samples = vec![
        host("a1", 1, SystemTime::now() + 10 * day),
        host("a1", 2, SystemTime::now() - 7 * day),
    ];
    samples.extend((0..40).map(|d| host("a1", 3 + d, year_2001 + (d as u32) * day)));
    setup.produce_hosts(&samples).await;
    setup.wait_for("SELECT count(*) FROM host_samples", 1).await;
    let dead = read_topic(
        &setup.config.kafka.bootstrap_servers,
        &setup.config.kafka.dead_letter_topic,
        41,
        Duration::from_secs(60),
    )
    .await;
    let errors: Vec<String> = dead
        .iter()
        .map(|record| header(record, "error").expect("error header"))
        .collect();
    for error in &errors {
        assert!(
            error.starts_with("outside the days this writer keeps: sampled_at is ")
                && error.ends_with(" (postgres.retention_days)"),
            "{error}"
        );
    }
    second.stop().await;
    // Yesterday .. 3 days ahead, plus last week's: per partitioned table.
    let partitions = setup
        .scalar(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = current_schema() AND p.relname = 'host_samples'",
        )
        .await;
    assert_eq!(partitions, 5 + 1);
    assert_eq!(setup.scalar("SELECT count(*) FROM host_samples").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_raw_days_and_site_rollups_and_keeps_check_days_and_outages() {
    let setup = Setup::new().await;
    setup.start_writer().await.stop().await;
    let sink = fleetmon_writer::store::PostgresSink::new(&setup.config.postgres).unwrap();
    let now = SystemTime::now();
    let day = 86_400;
    let today = fleetmon_writer::store::day_of(now);
    // A raw day past the 30 kept, and one within them.
    sink.ensure_partitions(&[today - 40 * day, today - 20 * day].into())
        .await
        .unwrap();
    setup
        .schema
        .connect()
        .await
        .batch_execute(
            "INSERT INTO site_check_rollups (url, resolution, bucket_start, checks, ok_checks,
                 response_time_min_ms, response_time_max_ms, response_time_sum_ms, status_codes)
             SELECT 'https://x.example/', r, now() - d * interval '1 day', 1, 1, 1, 1, 1, '{}'
             FROM (VALUES ('minute', 100), ('minute', 10), ('hour', 800), ('hour', 100)) v(r, d);
             INSERT INTO check_days (check_id, day, results, ok_results)
                 VALUES ('shop', '2001-01-01', 10, 9);
             INSERT INTO alerts (kind, subject, cause, opened_at, resolved_at, began_at, ended_at)
                 VALUES ('check_down', 'shop', 'down', '2001-01-01', '2001-01-02', '2001-01-01', '2001-01-02');",
        )
        .await
        .unwrap();
    let retention = setup.config.postgres.retention();
    let dropped = sink.maintain_partitions(&retention, 3, now).await.unwrap();
    let old_day = time::OffsetDateTime::from_unix_timestamp(today - 40 * day)
        .unwrap()
        .date();
    let suffix = format!(
        "_p{:04}{:02}{:02}",
        old_day.year(),
        u8::from(old_day.month()),
        old_day.day()
    );
    assert!(
        !dropped.is_empty() && dropped.iter().all(|name| name.ends_with(&suffix)),
        "only the day 40 days back goes: {dropped:?}"
    );
    // Minute buckets are kept 90 days, hour buckets two years; the days and the
    // outages that reports and status pages read are kept for good.
    let kept = texts(
        &setup.schema.connect().await,
        "SELECT resolution || ' ' || round(extract(epoch FROM now() - bucket_start) / 86400)
         FROM site_check_rollups ORDER BY resolution, bucket_start",
    )
    .await;
    assert_eq!(kept, ["hour 100", "minute 10"]);
    assert_eq!(setup.scalar("SELECT count(*) FROM check_days").await, 1);
    assert_eq!(setup.scalar("SELECT count(*) FROM alerts").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_postgres_connections_lose_and_duplicate_nothing() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    let admin = setup.schema.connect().await;
    let application = format!("fleetmon-writer:{}", setup.schema.name);
    let t0 = SystemTime::now() - Duration::from_secs(600);
    let mut terminated = 0;
    for round in 0..10u64 {
        let samples: Vec<_> = (1..=50)
            .map(|i| {
                let seq = round * 50 + i;
                host("a1", seq, t0 + Duration::from_millis(seq * 10))
            })
            .collect();
        setup.produce_hosts(&samples).await;
        let killed: i64 = admin
            .query_one(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1) t",
                &[&application],
            )
            .await
            .unwrap()
            .get(0);
        terminated += killed;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    setup
        .wait_for("SELECT count(*) FROM host_samples", 500)
        .await;
    assert_eq!(
        setup
            .scalar("SELECT count(DISTINCT seq) FROM host_samples")
            .await,
        500
    );
    assert!(terminated > 0, "the test must actually cut connections");
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_pause_consumption_and_lose_nothing() {
    let setup = Setup::new().await;
    let writer = setup
        .start_writer_with(|c| {
            c.batch.max_rows = 50;
            c.batch.linger_ms = 20;
        })
        .await;
    let t0 = seconds_ago(900);
    setup.produce_hosts(&[host("a1", 1, t0)]).await;
    setup.wait_for("SELECT count(*) FROM host_samples", 1).await;

    // Every insert fails while the table is away: the writer retries and pauses.
    let admin = setup.schema.connect().await;
    admin
        .batch_execute("ALTER TABLE host_samples RENAME TO host_samples_away")
        .await
        .unwrap();
    let samples: Vec<_> = (2..=600)
        .map(|seq| host("a1", seq, t0 + Duration::from_millis(seq * 10)))
        .collect();
    setup.produce_hosts(&samples).await;
    // The writer tried (and failed) twice before the check that nothing was stored.
    fleetmon::testkit::wait_for_metric(
        writer.running.metrics_addr,
        "fleetmon_writer_flush_failures_total",
        2.0,
    )
    .await;
    assert_eq!(
        setup.scalar("SELECT count(*) FROM host_samples_away").await,
        1,
        "nothing stored meanwhile"
    );
    admin
        .batch_execute("ALTER TABLE host_samples_away RENAME TO host_samples")
        .await
        .unwrap();

    setup
        .wait_for("SELECT count(*) FROM host_samples", 600)
        .await;
    assert_eq!(
        setup
            .scalar("SELECT count(DISTINCT seq) FROM host_samples")
            .await,
        600
    );
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_looking_long_and_unusual_strings_are_stored_verbatim() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let hostile = [
        "'); DROP TABLE host_samples; --",
        "\\\\'; SELECT pg_sleep(10); --",
        "$$ || (SELECT current_user) || $$",
        "\"quoted\" \\N \\. \t tab \r\n newline",
        "ünïcödé 日本語 🚀 \u{202e}rtl",
    ];
    let long = "x".repeat(4096);
    let mut hosts = Vec::new();
    let mut checks = Vec::new();
    for (i, text) in hostile.iter().chain([&long.as_str()]).enumerate() {
        let seq = i as u64 + 1;
        let mut h = host("a1", seq, t0 + Duration::from_secs(seq));
        h.hostname = (*text).to_owned();
        hosts.push(h);
        let mut c = check(
            "a1",
            100 + seq,
            t0 + Duration::from_secs(seq),
            &format!("https://x.example/{text}"),
            Some(200),
            true,
            5.0,
        );
        c.matched_text = (*text).to_owned();
        c.regex = (*text).to_owned();
        checks.push(c);
    }
    // A NUL cannot be stored in a Postgres text: that record alone is dead-lettered.
    let mut nul = host("a1", 50, t0);
    nul.hostname = "nul\0inside".to_owned();
    hosts.push(nul);
    setup.produce_hosts(&hosts).await;
    setup.produce_checks(&checks).await;
    setup
        .wait_for(
            "SELECT count(*) FROM host_samples",
            hostile.len() as i64 + 1,
        )
        .await;
    setup
        .wait_for("SELECT count(*) FROM site_checks", hostile.len() as i64 + 1)
        .await;
    let db = setup.schema.connect().await;
    for (i, text) in hostile.iter().chain([&long.as_str()]).enumerate() {
        let seq = i as i64 + 1;
        let stored: String = db
            .query_one("SELECT hostname FROM host_samples WHERE seq = $1", &[&seq])
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, *text);
        let row = db
            .query_one(
                "SELECT url, matched_text, regex FROM site_checks WHERE seq = $1",
                &[&(100 + seq)],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), format!("https://x.example/{text}"));
        assert_eq!(row.get::<_, String>(1), *text);
        assert_eq!(row.get::<_, String>(2), *text);
    }
    let dead = read_topic(
        &setup.config.kafka.bootstrap_servers,
        &setup.config.kafka.dead_letter_topic,
        1,
        Duration::from_secs(30),
    )
    .await;
    let error = header(&dead[0], "error").unwrap();
    assert!(error.contains("NUL"), "{error}");
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_kafka_or_postgres_is_down() {
    let broker = KafkaCluster::start(1);
    let postgres = PgCluster::start();
    let schema = PgSchema::create_in(&postgres.url()).await;
    let setup = Setup::new().await;
    let writer = setup
        .start_writer_with(|c| {
            c.kafka.bootstrap_servers = broker.bootstrap().to_owned();
            c.postgres.url = schema.url().to_owned();
            c.postgres.schema = schema.name.clone();
        })
        .await;
    let url = format!("https://{}", writer.running.grpc_addr);
    let operator = setup.pki.client(Role::Operator, "ops");
    let health = |status| {
        wait_for_health(
            &url,
            &operator,
            "fleetmon.v1.History",
            status,
            Duration::from_secs(20),
        )
    };
    health(ServingStatus::Serving).await;

    broker.pause(1);
    health(ServingStatus::NotServing).await;
    broker.resume(1);
    health(ServingStatus::Serving).await;

    postgres.crash();
    health(ServingStatus::NotServing).await;
    postgres.restart();
    health(ServingStatus::Serving).await;
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_postgresql_refuses_are_quarantined_with_their_sqlstate_and_the_rest_is_stored() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    // A rule of this database refuses one host name (SQLSTATE class 23), and a
    // certificate expiry past the year 294276 is beyond what timestamptz holds (22).
    setup
        .schema
        .connect()
        .await
        .batch_execute(
            "ALTER TABLE host_samples ADD CONSTRAINT no_poison CHECK (hostname <> 'poison.example')",
        )
        .await
        .unwrap();
    let t0 = seconds_ago(60);
    let mut hosts: Vec<HostSample> = (1..=5)
        .map(|seq| host("a1", seq, t0 + Duration::from_secs(seq)))
        .collect();
    hosts[2].hostname = "poison.example".to_owned();
    let mut checks: Vec<_> = (1..=3)
        .map(|seq| {
            check(
                "a2",
                seq,
                t0 + Duration::from_secs(seq),
                "https://shop.example/",
                Some(200),
                true,
                12.0,
            )
        })
        .collect();
    checks[1].tls_cert_not_after = Some(prost_types::Timestamp {
        seconds: 9_224_318_102_400,
        nanos: 0,
    });
    setup.produce_hosts(&hosts).await;
    setup.produce_checks(&checks).await;
    setup.wait_for("SELECT count(*) FROM host_samples", 4).await;
    setup.wait_for("SELECT count(*) FROM site_checks", 2).await;
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM host_samples WHERE seq = 3")
            .await,
        0
    );

    let dead = read_topic(
        &setup.config.kafka.bootstrap_servers,
        &setup.config.kafka.dead_letter_topic,
        2,
        Duration::from_secs(30),
    )
    .await;
    let mut quarantined: Vec<[String; 5]> = dead
        .iter()
        .map(|record| {
            let header =
                |name: &str| header(record, name).unwrap_or_else(|| panic!("no {name} header"));
            [
                header("sqlstate"),
                header("agent-id"),
                header("seq"),
                header("source-topic"),
                header("error"),
            ]
        })
        .collect();
    quarantined.sort();
    assert_eq!(
        quarantined,
        [
            [
                "22008".to_owned(),
                "a2".to_owned(),
                "2".to_owned(),
                setup.config.kafka.site_checks_topic.clone(),
                "timestamp out of range".to_owned(),
            ],
            [
                "23514".to_owned(),
                "a1".to_owned(),
                "3".to_owned(),
                setup.config.kafka.host_samples_topic.clone(),
                "new row for relation \"host_samples_p".to_owned()
                    + &quarantined[1][4]["new row for relation \"host_samples_p".len()..],
            ],
        ]
    );
    assert!(
        quarantined[1][4].ends_with("violates check constraint \"no_poison\""),
        "{}",
        quarantined[1][4]
    );
    // The quarantined record is the sample itself, to replay once the cause is fixed.
    let poison = dead
        .iter()
        .find_map(|r| HostSample::decode(r.payload()?).ok().filter(|s| s.seq == 3))
        .expect("the host sample in the dead-letter topic");
    assert_eq!(poison, hosts[2]);

    let metrics = fleetmon::testkit::metrics_text(writer.running.metrics_addr);
    for reason in ["22008", "23514"] {
        let line = format!("fleetmon_writer_records_quarantined_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    // Storage goes on.
    setup
        .produce_hosts(&[host("a1", 6, t0 + Duration::from_secs(6))])
        .await;
    setup.wait_for("SELECT count(*) FROM host_samples", 5).await;
    writer.stop().await;
}
