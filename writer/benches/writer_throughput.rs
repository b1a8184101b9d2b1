//! Writer throughput against a baseline measured in the same run:
//!
//! 1. raw binary COPY of N host rows straight into `host_samples` (same indexed,
//!    partitioned table, same Postgres) — the ceiling;
//! 2. the writer consuming the same N rows from Kafka into a fresh schema;
//! 3. the writer replaying all N again (a new consumer group): every row a duplicate.
//!
//! Run: `cargo bench -p fleetmon-writer --bench writer_throughput` (rows:
//! `FLEETMON_BENCH_ROWS`, default 200000; Kafka: `FLEETMON_TEST_KAFKA` or an Apache Kafka node started here).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{bench_rows, count, produce, samples, scrape, writer_config};
use fleetmon::testkit::{PgSchema, TestPki, create_topic, kafka_bootstrap, unique_name};
use fleetmon_writer::postgres_sink::{PostgresSink, copy_hosts_into, day_of};
use fleetmon_writer::row_batch::{HostRow, decode_host};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    fleetmon::tls::install_crypto_provider();
    let n = bench_rows();
    let samples = samples(n);
    let rows: Vec<HostRow> = samples
        .iter()
        .map(|s| decode_host(Some(&s.encode_to_vec()), None).unwrap())
        .collect();
    let days: BTreeSet<i64> = rows.iter().map(|r| day_of(r.ts)).collect();
    let pki = TestPki::new();

    // 1. Baseline: raw binary COPY into the same table.
    let raw_schema = PgSchema::create().await;
    let sink = PostgresSink::new(&writer_config(&pki, &raw_schema, "unused").postgres).unwrap();
    sink.migrate().await.unwrap();
    sink.ensure_partitions(&days).await.unwrap();
    let mut client = sink.pool().get().await.unwrap();
    let started = Instant::now();
    let tx = client.transaction().await.unwrap();
    for chunk in rows.chunks(10_000) {
        copy_hosts_into(&tx, "host_samples", chunk.iter())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let raw = started.elapsed();
    drop(client);

    eprintln!("raw COPY done in {raw:?}; producing {n} records");
    // The same rows into Kafka.
    let bootstrap = kafka_bootstrap();
    let topic = unique_name("fleetmon-bench-host");
    create_topic(&bootstrap, &topic, 4).await;
    produce(&bootstrap, &topic, &samples).await;
    for suffix in ["-sites", "-dlq"] {
        create_topic(&bootstrap, &format!("{topic}{suffix}"), 1).await;
    }

    eprintln!("produced; starting the writer");
    // 2. The writer, Kafka to Postgres.
    let schema = PgSchema::create().await;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let writer = fleetmon_writer::start(writer_config(&pki, &schema, &topic), stop.clone())
        .await
        .unwrap();
    // Steady state: rows stored after the first observation over the time they took
    // (leaves out the consumer group join and the first batch's linger).
    let mut first_row: Option<(Instant, usize)> = None;
    loop {
        let stored = count(&schema).await as usize;
        if stored > 0 && first_row.is_none() {
            first_row = Some((Instant::now(), stored));
        }
        if stored >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            panic!("writer stored only {stored} of {n} rows in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writer_total = started.elapsed();
    let (first_at, first_count) = first_row.unwrap();
    let writer_steady = first_at
        .elapsed()
        .mul_f64(n as f64 / (n - first_count).max(1) as f64);
    stop.cancel();
    writer.task.await.unwrap().unwrap();

    eprintln!("writer done; replaying");
    // 3. Replay: a new group reads everything again into the same schema.
    let stop = CancellationToken::new();
    let mut config = writer_config(&pki, &schema, &topic);
    config.kafka.group_id = unique_name("fleetmon-bench-replay");
    let started = Instant::now();
    let replay = fleetmon_writer::start(config, stop.clone()).await.unwrap();
    let mut first_dup: Option<(Instant, usize)> = None;
    loop {
        let skipped = scrape(
            replay.metrics_addr,
            "fleetmon_writer_duplicates_skipped_total",
        ) as usize;
        if skipped > 0 && first_dup.is_none() {
            first_dup = Some((Instant::now(), skipped));
        }
        if skipped >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            panic!("replay skipped only {skipped} of {n} rows in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replay_total = started.elapsed();
    let (first_at, first_count) = first_dup.unwrap();
    let replay_steady = first_at
        .elapsed()
        .mul_f64(n as f64 / (n - first_count).max(1) as f64);
    stop.cancel();
    replay.task.await.unwrap().unwrap();
    assert_eq!(count(&schema).await as usize, n, "replay added no rows");

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "writer throughput, {n} host rows, same run (Postgres {}, Kafka {bootstrap})",
        fleetmon::testkit::pg_url()
    );
    println!("{:<44} {:>12} {:>10}", "path", "rows/s", "ratio");
    println!(
        "{:<44} {:>12.0} {:>10}",
        "raw binary COPY into host_samples (baseline)",
        rate(raw),
        "1.00"
    );
    for (name, d) in [
        (
            "writer, steady state (after the first batch)",
            writer_steady,
        ),
        ("writer: start to last row (incl. group join)", writer_total),
    ] {
        println!(
            "{:<44} {:>12.0} {:>10.2}",
            name,
            rate(d),
            rate(d) / rate(raw)
        );
    }
    println!(
        "{:<44} {:>12.0} {:>10.2}",
        "replay, all duplicates, steady state",
        rate(replay_steady),
        rate(replay_steady) / rate(writer_steady)
    );
    println!(
        "{:<44} {:>12.0}",
        "replay: start to last (incl. group join)",
        rate(replay_total)
    );
    println!(
        "(replay ratio is against the fresh writer's steady state: > 1 means a replay is cheaper)"
    );
}
