//! Eager against cooperative-sticky assignment while a writer joins a busy group.
//!
//! Each run: two writers in one group on an 8-partition topic, a producer writing
//! host samples at a steady rate stamped with the time they were sent; after 4 s a
//! third writer joins, and 6 s later producing stops. For the samples sent from 1 s
//! before the join to 5 s after it: the time from sending to the row being visible
//! (`stored_at - ts`: p50, p99, max), and the longest time no row at all was
//! stored (the whole group standing still). The two strategies alternate, repeated
//! (`FLEETMON_BENCH_REPEATS`, default 5); medians with min–max.
//!
//! Run: `cargo bench -p fleetmon-writer --bench writer_rebalance` (Kafka:
//! `FLEETMON_TEST_KAFKA` or an Apache Kafka node started here; rate:
//! `FLEETMON_BENCH_RATE` samples/s, default 2000).

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::writer_config;
use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, HostSample};
use fleetmon::testkit::{PgSchema, Runs, TestPki, bench_repeats, create_topic, unique_name};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 8;
const JOIN_AFTER: Duration = Duration::from_secs(4);
const PRODUCE_FOR: Duration = Duration::from_secs(10);
const STRATEGIES: [&str; 2] = ["range,roundrobin", "cooperative-sticky"];

/// What one run measured, in milliseconds.
struct Measured {
    p50: f64,
    p99: f64,
    max: f64,
    stall: f64,
}

fn sample(i: u64) -> HostSample {
    HostSample {
        agent_id: format!("agent-{:03}", i % 200),
        stream_id: format!("stream-{:03}", i % 200),
        seq: i / 200 + 1,
        sampled_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        hostname: format!("host-{:03}", i % 200),
        cpu_usage_percent: 10.0,
        memory_total_bytes: 8 << 30,
        memory_used_bytes: 3 << 30,
        ..Default::default()
    }
}

/// Produces `rate` samples a second until `stop`, each stamped as it is sent.
async fn produce_steadily(bootstrap: String, topic: String, rate: u64, stop: CancellationToken) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate / 100).max(1);
    let mut i = 0u64;
    while !stop.is_cancelled() {
        tick.tick().await;
        for _ in 0..per_tick {
            let s = sample(i);
            i += 1;
            let payload = s.encode_to_vec();
            let record = FutureRecord::to(&topic)
                .key(&s.agent_id)
                .payload(&payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some(HOST_SAMPLE_CONTENT_TYPE),
                }));
            let _ = producer.send_result(record);
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30))
    })
    .await;
}

async fn run(pki: &TestPki, bootstrap: &str, strategy: &str, rate: u64) -> Measured {
    let topic = unique_name("fleetmon-rebalance-host");
    create_topic(bootstrap, &topic, PARTITIONS).await;
    for suffix in ["-sites", "-dlq"] {
        create_topic(bootstrap, &format!("{topic}{suffix}"), 1).await;
    }
    let schema = PgSchema::create().await;
    let group = unique_name("fleetmon-rebalance");
    let stop = CancellationToken::new();
    let config = || {
        let mut config = writer_config(pki, &schema, &topic);
        config.kafka.group_id = group.clone();
        config.batch.linger_ms = 50;
        for (key, value) in [
            ("partition.assignment.strategy", strategy),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
        ] {
            config.kafka.options.insert(key.into(), value.into());
        }
        config
    };
    let mut writers = Vec::new();
    for _ in 0..2 {
        writers.push(
            fleetmon_writer::start(config(), stop.clone())
                .await
                .unwrap(),
        );
    }
    // Both members in the group before the load starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let producing = CancellationToken::new();
    let producer = tokio::spawn(produce_steadily(
        bootstrap.to_owned(),
        topic.clone(),
        rate,
        producing.clone(),
    ));
    tokio::time::sleep(JOIN_AFTER).await;
    let joined_at = SystemTime::now();
    writers.push(
        fleetmon_writer::start(config(), stop.clone())
            .await
            .unwrap(),
    );
    tokio::time::sleep(PRODUCE_FOR - JOIN_AFTER).await;
    producing.cancel();
    producer.await.unwrap();
    // Everything sent is stored.
    let sent_deadline = Instant::now() + Duration::from_secs(60);
    let mut last = -1;
    loop {
        let now = schema.scalar("SELECT count(*) FROM host_samples").await;
        if now == last || Instant::now() > sent_deadline {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let client = schema.connect().await;
    let from = joined_at - Duration::from_secs(1);
    let to = joined_at + Duration::from_secs(5);
    let row = client
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), \
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), max(lag) \
             FROM (SELECT extract(epoch FROM stored_at - ts)::float8 * 1000 AS lag \
                   FROM host_samples WHERE ts >= $1 AND ts < $2) l",
            &[&from, &to],
        )
        .await
        .unwrap();
    let stall: f64 = client
        .query_one(
            "SELECT coalesce(max(gap), 0) FROM ( \
                 SELECT extract(epoch FROM s - lag(s) OVER (ORDER BY s))::float8 * 1000 AS gap \
                 FROM (SELECT DISTINCT stored_at AS s FROM host_samples \
                       WHERE stored_at >= $1 AND stored_at < $2) d) g",
            &[&from, &to],
        )
        .await
        .unwrap()
        .get::<_, Option<f64>>(0)
        .unwrap_or_default();
    stop.cancel();
    for w in writers {
        w.task.await.unwrap().unwrap();
    }
    let ms = |i| row.get::<_, Option<f64>>(i).unwrap_or_default();
    Measured {
        p50: ms(0),
        p99: ms(1),
        max: ms(2),
        stall,
    }
}

/// One figure of a run, by name in the printed rows.
type Figure = fn(&Measured) -> f64;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    fleetmon::tls::install_crypto_provider();
    let rate: u64 = std::env::var("FLEETMON_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let repeats = bench_repeats();
    let pki = TestPki::new();
    let bootstrap = fleetmon::testkit::kafka_bootstrap();
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(), Vec::new()];
    for round in 0..repeats {
        for (i, strategy) in STRATEGIES.iter().enumerate() {
            eprintln!("round {}/{repeats}: {strategy}", round + 1);
            results[i].push(run(&pki, &bootstrap, strategy, rate).await);
        }
    }
    println!(
        "a third writer joins two under {rate} samples/s over {PARTITIONS} partitions; samples sent from 1 s before the join to 5 s after; {repeats} alternating runs each"
    );
    println!(
        "{:<52} {:>8} {:>12}",
        "strategy: figure, ms", "median", "min–max"
    );
    let figures: [(&str, Figure); 4] = [
        ("sent→visible p50", |m| m.p50),
        ("sent→visible p99", |m| m.p99),
        ("sent→visible max", |m| m.max),
        ("longest no-row gap", |m| m.stall),
    ];
    for (strategy, runs) in STRATEGIES.iter().zip(&results) {
        for (figure, value) in figures {
            Runs(runs.iter().map(value).collect()).print_row(&format!("{strategy}: {figure}"), 0);
        }
    }
}
