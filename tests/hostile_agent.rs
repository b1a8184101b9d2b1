//! One hostile agent against the real collector and writer (in-process, real Kafka,
//! real PostgreSQL, real certificates) while a steady agent streams beside it.
//!
//! Every field of `HostSample` and `SiteCheck` is pushed at its extremes — min, max,
//! NaN, ±inf, far past and future, 0, empty, maximum-length and over-length strings,
//! every enum value and unknown ones — drawn by proptest from per-field strategies
//! rather than listed by hand. Each hostile sample is either refused with
//! INVALID_ARGUMENT-style rejection naming its field, or acknowledged and then stored or
//! quarantined with its reason; the steady agent's every sample is stored, the writer
//! never stops, and the partitions stay bounded.

use std::time::{Duration, Instant, SystemTime};

use fleetmon::identity::Role;
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::pb::sample::Kind;
use fleetmon::pb::{
    DiskUsage, HostSample, IngestBatch, NetworkInterface, ProcessUsage, Sample, SiteCheck,
};
use fleetmon::testkit::{PgSchema, TestPki, create_topic, kafka_bootstrap, unique_name};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio_util::sync::CancellationToken;

/// Hostile samples of each kind.
const SAMPLES: usize = 400;

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Mostly `benign`, now and then one of `extremes`: a sample holds a few extreme
/// fields, so that every rule (not only the first a sample breaks) is reached.
fn mostly<T: Clone + std::fmt::Debug + 'static>(
    benign: T,
    extremes: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![12 => Just(benign), 1 => extremes].boxed()
}

fn float() -> BoxedStrategy<f64> {
    mostly(12.5, extreme_float())
}

fn extreme_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(12.5),
        Just(100.0),
        Just(100.000_001),
        Just(-1.0),
        Just(1e6),
        Just(1e15),
        Just(1e300),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        any::<f64>(),
    ]
}

fn big() -> BoxedStrategy<u64> {
    mostly(1 << 30, extreme_big())
}

fn extreme_big() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(i64::MAX as u64),
        Just(i64::MAX as u64 + 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn small() -> BoxedStrategy<u32> {
    mostly(10, extreme_small())
}

fn extreme_small() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(86_400),
        Just(86_401),
        Just(i32::MAX as u32),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

fn timestamp() -> BoxedStrategy<Option<prost_types::Timestamp>> {
    let now = now_seconds();
    mostly(
        Some(prost_types::Timestamp {
            seconds: now - 60,
            nanos: 0,
        }),
        extreme_timestamp(now),
    )
}

fn extreme_timestamp(now: i64) -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let seconds = prop_oneof![
        Just(i64::MIN),
        Just(-62_135_596_801),
        Just(0),
        Just(946_684_799),
        Just(978_307_200),
        Just(now - 31 * 86_400),
        Just(now - 29 * 86_400),
        Just(now - 60),
        Just(now),
        Just(now + 299),
        Just(now + 301),
        Just(now + 3 * 86_400),
        Just(253_402_300_800),
        Just(9_224_318_102_400),
        Just(i64::MAX),
    ];
    let nanos = prop_oneof![
        Just(0),
        Just(999_999_999),
        Just(1_000_000_000),
        Just(-1),
        Just(i32::MAX)
    ];
    prop_oneof![
        1 => Just(None),
        6 => (seconds, nanos).prop_map(|(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos })),
    ]
}

fn text() -> BoxedStrategy<String> {
    mostly("web-1".to_owned(), extreme_text())
}

fn extreme_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("web-1".to_owned()),
        Just("x".repeat(4096)),
        Just("x".repeat(4097)),
        Just("é".repeat(2048)),
        Just("'; DROP TABLE host_samples; --".to_owned()),
        Just("\u{202e}evil\u{1f600}".to_owned()),
        Just("nul\0inside".to_owned()),
        Just("\\x00 \\\\ \" $1".to_owned()),
    ]
}

fn list_len() -> BoxedStrategy<usize> {
    mostly(
        2,
        prop_oneof![Just(0), Just(1), Just(4), Just(1024), Just(1025)],
    )
}

/// A process list: pids that may repeat, ranks that may lie, hostile texts.
fn processes() -> impl Strategy<Value = Vec<ProcessUsage>> {
    let process = (
        small(),
        text(),
        text(),
        float(),
        big(),
        timestamp(),
        small(),
        small(),
    )
        .prop_map(
            |(pid, name, command_line, cpu, resident, started_at, cpu_rank, memory_rank)| {
                ProcessUsage {
                    pid,
                    name,
                    user: "root".to_owned(),
                    command_line,
                    cpu_usage_percent: cpu,
                    resident_bytes: resident,
                    threads: 1,
                    started_at,
                    cpu_rank: cpu_rank % 4,
                    memory_rank: memory_rank % 4,
                }
            },
        );
    let listed = ProcessUsage {
        pid: 42,
        name: "nginx".to_owned(),
        user: "www-data".to_owned(),
        command_line: "nginx: worker process".to_owned(),
        cpu_usage_percent: 12.5,
        resident_bytes: 1 << 30,
        threads: 4,
        started_at: None,
        cpu_rank: 1,
        memory_rank: 1,
    };
    mostly(vec![listed], proptest::collection::vec(process, 0..4))
}

fn host(stream_id: String) -> impl Strategy<Value = HostSample> {
    (
        (big(), timestamp(), text(), text(), text(), text(), text()),
        (float(), list_len(), float(), float(), float(), float()),
        (big(), big(), big(), big(), big(), big(), big()),
        (list_len(), big(), big(), float(), float(), list_len()),
        (small(), big(), small(), proptest::option::of(big())),
        processes(),
    )
        .prop_map(move |(identity, cpu, memory, disks, rest, processes)| {
            let (seq, sampled_at, hostname, os_name, os_version, kernel_version, agent_version) =
                identity;
            let (cpu_usage_percent, cores, core, load_1m, load_5m, load_15m) = cpu;
            let (mem_total, mem_used, mem_available, swap_total, swap_used, disk_total, disk_used) =
                memory;
            let (disk_count, rx, tx, rx_rate, tx_rate, interface_count) = disks;
            let (process_count, uptime_seconds, interval_seconds, disk_available_bytes) = rest;
            HostSample {
                agent_id: "claims-to-be-someone-else".to_owned(),
                stream_id: stream_id.clone(),
                seq,
                sampled_at,
                hostname,
                os_name,
                os_version,
                kernel_version,
                agent_version,
                cpu_usage_percent,
                cpu_core_usage_percent: vec![core; cores],
                load_average_1m: load_1m,
                load_average_5m: load_5m,
                load_average_15m: load_15m,
                memory_total_bytes: mem_total,
                memory_used_bytes: mem_used,
                memory_available_bytes: mem_available,
                swap_total_bytes: swap_total,
                swap_used_bytes: swap_used,
                disk_total_bytes: disk_total,
                disk_used_bytes: disk_used,
                disks: vec![
                    DiskUsage {
                        mount_point: "/".to_owned(),
                        device: "/dev/vda1".to_owned(),
                        file_system: "ext4".to_owned(),
                        total_bytes: disk_total,
                        used_bytes: disk_used,
                        available_bytes: mem_available,
                    };
                    disk_count
                ],
                network_rx_bytes: rx,
                network_tx_bytes: tx,
                network_rx_bytes_per_second: rx_rate,
                network_tx_bytes_per_second: tx_rate,
                interfaces: vec![
                    NetworkInterface {
                        name: "eth0".to_owned(),
                        rx_bytes: rx,
                        tx_bytes: tx,
                        rx_bytes_per_second: rx_rate,
                        tx_bytes_per_second: tx_rate,
                    };
                    interface_count
                ],
                process_count,
                uptime_seconds,
                interval_seconds,
                disk_available_bytes,
                // The collector's to set: whatever the agent claims is overwritten.
                clock_offset_ms: Some(i64::MIN),
                processes,
            }
        })
}

fn site(stream_id: String) -> impl Strategy<Value = SiteCheck> {
    let status = mostly(
        Some(200),
        proptest::option::of(prop_oneof![
            Just(0u32),
            Just(99),
            Just(100),
            Just(999),
            Just(1000),
            Just(u32::MAX)
        ]),
    );
    let failure = prop_oneof![4 => 0..=13i32, 1 => prop_oneof![Just(14), Just(-1), Just(i32::MAX)]];
    (
        (
            big(),
            timestamp(),
            text(),
            text(),
            status,
            any::<bool>(),
            failure,
        ),
        (text(), float(), proptest::option::of(float()), text()),
        (
            proptest::option::of(any::<bool>()),
            text(),
            big(),
            text(),
            timestamp(),
        ),
        (
            prop_oneof![4 => Just(String::new()), 1 => Just("ghost".to_owned())],
            big(),
            small(),
        ),
    )
        .prop_map(move |(head, timing, body, check)| {
            let (seq, checked_at, url, method, status_code, ok, failure) = head;
            let (error_message, response_time_ms, time_to_first_byte_ms, regex) = timing;
            let (regex_matched, matched_text, body_bytes, final_url, tls_cert_not_after) = body;
            let (check_id, check_version, interval_seconds) = check;
            SiteCheck {
                agent_id: "claims-to-be-someone-else".to_owned(),
                stream_id: stream_id.clone(),
                seq,
                checked_at,
                url,
                method,
                status_code,
                ok,
                failure,
                error_message,
                response_time_ms,
                time_to_first_byte_ms,
                regex,
                regex_matched,
                matched_text,
                body_bytes,
                final_url,
                tls_cert_not_after,
                check_id,
                check_version,
                interval_seconds,
            }
        })
}

/// The field names a rejection may start with: every field of both messages.
const FIELDS: &[&str] = &[
    "stream_id",
    "seq",
    "sampled_at",
    "checked_at",
    "hostname",
    "os_name",
    "os_version",
    "kernel_version",
    "agent_version",
    "cpu_usage_percent",
    "cpu_core_usage_percent",
    "load_average_",
    "disks",
    "processes",
    "interfaces",
    "network_",
    "interval_seconds",
    "url",
    "method",
    "status_code",
    "failure",
    "error_message",
    "response_time_ms",
    "time_to_first_byte_ms",
    "regex",
    "matched_text",
    "final_url",
    "tls_cert_not_after",
    "check_id",
    "check_version",
];

struct Pipeline {
    pki: TestPki,
    schema: PgSchema,
    collector: fleetmon_collector::RunningCollector,
    writer: fleetmon_writer::RunningWriter,
    stop: CancellationToken,
}

impl Pipeline {
    async fn start() -> Self {
        fleetmon::tls::install_crypto_provider();
        let bootstrap = kafka_bootstrap();
        let pki = TestPki::new();
        let schema = PgSchema::create().await;
        let host_topic = unique_name("fleetmon-hostile-host");
        let site_topic = unique_name("fleetmon-hostile-site");
        let checks_topic = unique_name("fleetmon-hostile-checks");
        let dead_letter_topic = unique_name("fleetmon-hostile-dlq");
        for topic in [&host_topic, &site_topic, &dead_letter_topic] {
            create_topic(&bootstrap, topic, 3).await;
        }
        create_topic(&bootstrap, &checks_topic, 1).await;
        let stop = CancellationToken::new();

        let mut collector = fleetmon_collector::CollectorConfig::new(pki.server("collector"));
        collector.listen = "127.0.0.1:0".parse().unwrap();
        collector.metrics_listen = "127.0.0.1:0".parse().unwrap();
        collector.kafka.bootstrap_servers = bootstrap.clone();
        collector.kafka.host_samples_topic = host_topic.clone();
        collector.kafka.site_checks_topic = site_topic.clone();
        collector.kafka.checks_topic = checks_topic.clone();
        collector.kafka.credentials_topic = unique_name("fleetmon-hostile-credentials");
        collector.kafka.linger_ms = 5;
        let collector = fleetmon_collector::start(collector, stop.clone())
            .await
            .expect("collector starts");

        let mut writer = fleetmon_writer::WriterConfig::new(pki.server("writer"));
        writer.listen = "127.0.0.1:0".parse().unwrap();
        writer.metrics_listen = "127.0.0.1:0".parse().unwrap();
        writer.kafka.bootstrap_servers = bootstrap;
        writer.kafka.group_id = unique_name("fleetmon-hostile-writer");
        writer.kafka.host_samples_topic = host_topic;
        writer.kafka.site_checks_topic = site_topic;
        writer.kafka.checks_topic = checks_topic;
        writer.kafka.dead_letter_topic = dead_letter_topic;
        writer.postgres.url = schema.url().to_owned();
        writer.postgres.schema = schema.name.clone();
        writer.batch.linger_ms = 50;
        let writer = fleetmon_writer::start(writer, stop.clone())
            .await
            .expect("writer starts");
        Pipeline {
            pki,
            schema,
            collector,
            writer,
            stop,
        }
    }

    fn agent(&self, name: &str) -> IngestClient<tonic::transport::Channel> {
        let files = self.pki.client(Role::Agent, name);
        IngestClient::new(
            fleetmon::tls::endpoint(&format!("https://{}", self.collector.grpc_addr), &files)
                .unwrap()
                .connect_lazy(),
        )
    }

    async fn scalar(&self, sql: &str) -> i64 {
        self.schema.scalar(sql).await
    }
}

/// Draws `count` values of `strategy`, the `i`-th from `make(i)`, with a fixed seed.
fn draw<S: Strategy>(count: usize, make: impl Fn(usize) -> S) -> Vec<S::Value> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    (0..count)
        .map(|i| make(i).new_tree(&mut runner).unwrap().current())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_at_its_extremes_is_refused_by_name_or_stored_and_a_steady_agent_loses_nothing()
{
    let pipeline = Pipeline::start().await;
    let mut hostile = pipeline.agent("hostile");
    let mut steady = pipeline.agent("steady");
    let mut samples: Vec<Kind> = draw(SAMPLES, |i| host(format!("h{i}")))
        .into_iter()
        .map(Kind::Host)
        .collect();
    samples.extend(
        draw(SAMPLES, |i| site(format!("s{i}")))
            .into_iter()
            .map(Kind::Site),
    );

    let (mut accepted, mut refused) = (0i64, Vec::new());
    let mut steady_seq = 0u64;
    for chunk in samples.chunks(25) {
        let batch = IngestBatch {
            sent_at: Some(SystemTime::now().into()),
            samples: chunk
                .iter()
                .map(|kind| Sample {
                    kind: Some(kind.clone()),
                })
                .collect(),
        };
        let ack = hostile.push(batch).await.expect("the batch is answered");
        let ack = ack.into_inner();
        accepted += chunk.len() as i64 - ack.rejected.len() as i64;
        refused.extend(ack.rejected);
        // The steady agent streams beside it, one sample per hostile batch.
        steady_seq += 1;
        let sample = HostSample {
            stream_id: "steady-1".to_owned(),
            seq: steady_seq,
            sampled_at: Some(SystemTime::now().into()),
            hostname: "steady.example".to_owned(),
            cpu_usage_percent: 5.0,
            interval_seconds: 1,
            ..Default::default()
        };
        let ack = steady
            .push(IngestBatch {
                sent_at: Some(SystemTime::now().into()),
                samples: vec![Sample {
                    kind: Some(Kind::Host(sample)),
                }],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(ack.rejected.is_empty(), "{:?}", ack.rejected);
    }

    // Every refusal names the field it is about.
    for rejection in &refused {
        assert!(
            FIELDS.iter().any(|f| rejection.message.starts_with(f))
                || rejection.reason == "unknown_check",
            "a refusal that names no field: {rejection:?}"
        );
    }
    let reasons: std::collections::BTreeSet<&str> =
        refused.iter().map(|r| r.reason.as_str()).collect();
    for reason in [
        "invalid_number",
        "invalid_timestamp",
        "missing_timestamp",
        "timestamp_too_old",
        "timestamp_in_future",
        "string_too_long",
        "string_has_nul",
        "list_too_long",
        "invalid_status_code",
        "invalid_failure_kind",
    ] {
        assert!(
            reasons.contains(reason),
            "{reason} never drawn: {reasons:?}"
        );
    }
    assert!(
        accepted > 0,
        "every hostile sample was refused: a weak draw"
    );

    // What was acknowledged is stored or quarantined with its reason; nothing is lost
    // and the writer keeps going.
    // The steady agent's acknowledged samples are waited for too: its last ones may
    // be acknowledged and not yet stored when the hostile ones are.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (stored, dead) = loop {
        let stored = pipeline
            .scalar(
                "SELECT (SELECT count(*) FROM host_samples WHERE agent_id = 'hostile') \
                 + (SELECT count(*) FROM site_checks WHERE agent_id = 'hostile')",
            )
            .await;
        let dead = fleetmon::testkit::metric_value(
            pipeline.writer.metrics_addr,
            "fleetmon_writer_dead_letters_total",
        )
        .unwrap_or(0.0) as i64;
        let steady_stored = pipeline
            .scalar("SELECT count(DISTINCT seq) FROM host_samples WHERE agent_id = 'steady'")
            .await;
        if stored + dead == accepted && steady_stored == steady_seq as i64 {
            break (stored, dead);
        }
        assert!(
            Instant::now() < deadline,
            "{accepted} acknowledged, {stored} stored and {dead} dead-lettered; \
             steady: {steady_seq} acknowledged, {steady_stored} stored, after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(stored > 0);
    assert_eq!(
        dead, 0,
        "the collector acknowledged what the writer could not store"
    );
    // The clock offset it claimed (i64::MIN) was overwritten by the collector's measure.
    assert_eq!(
        pipeline
            .scalar(
                "SELECT count(*) FROM agents WHERE agent_id = 'hostile' \
                 AND clock_offset_ms BETWEEN -60000 AND 60000"
            )
            .await,
        1
    );

    // The partitions: yesterday to 3 days ahead, plus the days within retention that
    // the hostile samples were dated on (at most 30 more), per table.
    for table in ["host_samples", "site_checks"] {
        let partitions = pipeline
            .scalar(&format!(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
                 JOIN pg_namespace n ON n.oid = p.relnamespace \
                 WHERE n.nspname = current_schema() AND p.relname = '{table}'"
            ))
            .await;
        assert!(partitions <= 5 + 30, "{table}: {partitions} partitions");
    }
    pipeline.stop.cancel();
    pipeline.writer.task.await.unwrap().unwrap();
    pipeline.collector.task.await.unwrap().unwrap();
}
