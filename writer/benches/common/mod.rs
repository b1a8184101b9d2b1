//! Shared by the writer benchmarks: sample rows, the writer's configuration, a
//! producer that loads a topic, and readings from Postgres and `/metrics`.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, HostSample, SITE_CHECK_CONTENT_TYPE, SiteCheck};
use fleetmon::samples::Sample;
use fleetmon::testkit::{PgSchema, TestPki, kafka_bootstrap, unique_name};
use fleetmon_writer::WriterConfig;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// N host samples from 100 agents (one stream each), 10 ms apart, an hour ago.
pub fn samples(n: usize) -> Vec<HostSample> {
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
                available_bytes: 50 << 30,
            }],
            process_count: 150,
            uptime_seconds: 1000,
            ..Default::default()
        })
        .collect()
}

/// N site checks from 100 agents of 10 sites each (one stream per agent), 10 ms
/// apart, an hour ago; one in ten failed with a 503.
pub fn checks(n: usize) -> Vec<SiteCheck> {
    let start = SystemTime::now() - Duration::from_secs(3600);
    (0..n)
        .map(|i| {
            let ok = i % 10 != 0;
            SiteCheck {
                agent_id: format!("agent-{:03}", i % 100),
                stream_id: format!("stream-{:03}", i % 100),
                seq: (i / 100 + 1) as u64,
                checked_at: Some(prost_types::Timestamp::from(
                    start + Duration::from_millis(i as u64 * 10),
                )),
                url: format!("https://site-{}.example/", (i / 100) % 10),
                method: "GET".into(),
                status_code: Some(if ok { 200 } else { 503 }),
                ok,
                response_time_ms: (i % 500) as f64,
                time_to_first_byte_ms: Some((i % 200) as f64),
                body_bytes: 4096,
                final_url: format!("https://site-{}.example/", (i / 100) % 10),
                ..Default::default()
            }
        })
        .collect()
}

/// A writer on ephemeral ports reading `topic` into `schema` in a group of its own.
pub fn writer_config(pki: &TestPki, schema: &PgSchema, topic: &str) -> WriterConfig {
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

/// A counter from a Prometheus endpoint (0 when absent); `metric` may include labels.
pub fn scrape(addr: SocketAddr, metric: &str) -> u64 {
    fleetmon::testkit::metric_value(addr, metric).unwrap_or(0.0) as u64
}

/// Rows the writers serving `metrics` have committed into `table`, by their own
/// counters (bumped after each commit). Cheap to poll while a writer runs, where
/// `count(*)` on a fresh connection forks a backend and scans the table each time on
/// the cores being measured.
pub fn committed_rows(metrics: &[SocketAddr], table: &str) -> usize {
    let counter = format!("fleetmon_writer_rows_inserted_total{{table=\"{table}\"}}");
    metrics
        .iter()
        .map(|&addr| scrape(addr, &counter) as usize)
        .sum()
}

/// Rows in `host_samples`.
pub async fn count(schema: &PgSchema) -> i64 {
    count_in(schema, "host_samples").await
}

/// Rows in `table`.
pub async fn count_in(schema: &PgSchema, table: &str) -> i64 {
    schema
        .scalar(&format!("SELECT count(*) FROM {table}"))
        .await
}

/// Rows to load: `FLEETMON_BENCH_ROWS`, else `default`.
pub fn bench_rows(default: usize) -> usize {
    std::env::var("FLEETMON_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Produces every host sample (keyed by agent id, with the content-type header) and
/// waits until the broker has confirmed all of them.
pub async fn produce(bootstrap: &str, topic: &str, samples: &[HostSample]) {
    produce_as(bootstrap, topic, samples, HOST_SAMPLE_CONTENT_TYPE).await;
}

/// [`produce`] for site checks.
pub async fn produce_checks(bootstrap: &str, topic: &str, checks: &[SiteCheck]) {
    produce_as(bootstrap, topic, checks, SITE_CHECK_CONTENT_TYPE).await;
}

async fn produce_as<M: prost::Message + Sample>(
    bootstrap: &str,
    topic: &str,
    samples: &[M],
    content_type: &str,
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let payloads: Vec<Vec<u8>> = samples.iter().map(|s| s.encode_to_vec()).collect();
    let mut deliveries = Vec::with_capacity(samples.len());
    for (sample, payload) in samples.iter().zip(&payloads) {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(content_type),
        });
        let mut record = FutureRecord::to(topic)
            .key(sample.agent_id())
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
}
