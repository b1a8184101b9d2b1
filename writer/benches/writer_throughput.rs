//! Writer throughput against a baseline measured in the same run:
//!
//! 1. raw binary COPY of N host rows straight into `host_samples` (same indexed,
//!    partitioned table, same Postgres) — the ceiling;
//! 2. the writer consuming the same N rows from Kafka into a fresh schema;
//! 3. the writer replaying all N again (a new consumer group): every row a duplicate.
//!
//! Run: `cargo bench -p fleetmon-writer --bench writer_throughput` (rows:
//! `FLEETMON_BENCH_ROWS`, default 200000; Kafka: `FLEETMON_TEST_KAFKA` or a tansu started here).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, HostSample};
use fleetmon::testkit::{PgSchema, TestPki, create_topic, kafka_bootstrap, unique_name};
use fleetmon_writer::WriterConfig;
use fleetmon_writer::postgres_sink::{PostgresSink, copy_hosts_into, day_of};
use fleetmon_writer::row_batch::{HostRow, decode_host};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

fn samples(n: usize) -> Vec<HostSample> {
    let start = SystemTime::now() - Duration::from_secs(3600);
    (0..n)
        .map(|i| HostSample {
            agent_id: format!("agent-{:03}", i % 100),
            stream_id: format!("stream-{:03}", i % 100),
            seq: (i / 100 + 1) as u64,
            sampled_at: Some(prost_types::Timestamp::from(
                start + Duration::from_millis(i as u64 * 10),
            )),
            hostname: format!("host-{:03}.example", i % 100),
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            kernel_version: "6.1.0".into(),
            agent_version: "0.1.0".into(),
            cpu_usage_percent: (i % 100) as f64,
            cpu_core_usage_percent: vec![1.0, 2.0],
            memory_total_bytes: 8 << 30,
            memory_used_bytes: 3 << 30,
            disks: vec![fleetmon::pb::DiskUsage {
                mount_point: "/".into(),
                device: "/dev/vda1".into(),
                file_system: "ext4".into(),
                total_bytes: 100 << 30,
                used_bytes: 40 << 30,
            }],
            process_count: 150,
            uptime_seconds: 1000,
            ..Default::default()
        })
        .collect()
}

fn writer_config(pki: &TestPki, schema: &PgSchema, topic: &str) -> WriterConfig {
    let mut config = WriterConfig::new(pki.server("writer"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.kafka.bootstrap_servers = kafka_bootstrap();
    config.kafka.group_id = unique_name("fleetmon-bench");
    config.kafka.host_samples_topic = topic.to_owned();
    config.kafka.site_checks_topic = format!("{topic}-sites");
    config.kafka.dead_letter_topic = format!("{topic}-dlq");
    config.postgres.url = schema.url().to_owned();
    config.postgres.schema = schema.name.clone();
    config
}

/// A counter from a Prometheus endpoint (0 when absent).
fn scrape(addr: SocketAddr, metric: &str) -> u64 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix(metric)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn count(schema: &PgSchema) -> i64 {
    schema
        .connect()
        .await
        .query_one("SELECT count(*) FROM host_samples", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    fleetmon::tls::install_crypto_provider();
    let n: usize = std::env::var("FLEETMON_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
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
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let payloads: Vec<Vec<u8>> = samples.iter().map(|s| s.encode_to_vec()).collect();
    let mut deliveries = Vec::with_capacity(n);
    for (sample, payload) in samples.iter().zip(&payloads) {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(HOST_SAMPLE_CONTENT_TYPE),
        });
        let mut record = FutureRecord::to(&topic)
            .key(&sample.agent_id)
            .payload(payload)
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    for d in deliveries.drain(..) {
                        d.await.unwrap().unwrap();
                    }
                }
                Err((error, _)) => panic!("produce: {error}"),
            }
        }
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
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
