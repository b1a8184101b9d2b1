//! Collector throughput against baselines measured in the same run:
//!
//! 1. a bare rdkafka producer with the collector's settings sending the same records
//!    to the same broker (the ceiling);
//! 2. samples streamed to the collector over mutual TLS, counted when acknowledged
//!    (that is, when Kafka confirmed them);
//! 3. the same ingest service over plaintext gRPC, to price TLS.
//!
//! Run: `cargo bench -p fleetmon-collector --bench collector_throughput` (samples:
//! `FLEETMON_BENCH_SAMPLES`, default 100000; Kafka: `FLEETMON_TEST_KAFKA` or an Apache
//! Kafka node started here).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fleetmon::identity::{PeerIdentity, Role};
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::pb::ingest_server::IngestServer;
use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, HostSample, IngestBatch, Sample, sample::Kind};
use fleetmon::testkit::{TestPki, kafka_bootstrap, unique_name};
use fleetmon_collector::CollectorConfig;
use fleetmon_collector::config::{KafkaConfig, Limits};
use fleetmon_collector::fleet_state::FleetState;
use fleetmon_collector::ingest_service::{IngestContext, IngestService};
use fleetmon_collector::kafka_publisher::{KafkaPublisher, producer_config};
use fleetmon_collector::metrics::CollectorMetrics;
use prost::Message as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};

const BATCH: usize = 500;

fn samples(n: usize) -> Vec<HostSample> {
    let now = prost_types::Timestamp::from(SystemTime::now());
    (1..=n)
        .map(|seq| HostSample {
            agent_id: "bench".into(),
            stream_id: "bench-stream".into(),
            seq: seq as u64,
            sampled_at: Some(now),
            hostname: "bench-host.example".into(),
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            kernel_version: "6.1.0".into(),
            cpu_usage_percent: (seq % 100) as f64,
            cpu_core_usage_percent: vec![1.0, 2.0],
            memory_total_bytes: 8 << 30,
            memory_used_bytes: 3 << 30,
            process_count: 150,
            ..Default::default()
        })
        .collect()
}

fn kafka(topic: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: kafka_bootstrap(),
        host_samples_topic: topic.to_owned(),
        site_checks_topic: format!("{topic}-sites"),
        partitions: 4,
        ..KafkaConfig::default()
    }
}

async fn bare_producer(samples: &[HostSample]) -> Duration {
    let config = kafka(&unique_name("fleetmon-bench-bare"));
    // Same topics and settings as the collector's.
    drop(KafkaPublisher::connect(&config).await.unwrap());
    let producer: FutureProducer = producer_config(&config).create().unwrap();
    let payloads: Vec<Vec<u8>> = samples.iter().map(|s| s.encode_to_vec()).collect();
    let started = Instant::now();
    let mut deliveries = Vec::new();
    for (sample, payload) in samples.iter().zip(&payloads) {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(HOST_SAMPLE_CONTENT_TYPE),
        });
        let mut record = FutureRecord::to(&config.host_samples_topic)
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
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => panic!("produce: {error}"),
            }
        }
    }
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
    started.elapsed()
}

/// Streams every sample in batches and waits until the last is acknowledged.
async fn stream_all(channel: Channel, samples: &[HostSample]) -> Duration {
    let batches: Vec<IngestBatch> = samples
        .chunks(BATCH)
        .map(|chunk| IngestBatch {
            samples: chunk
                .iter()
                .map(|s| Sample {
                    kind: Some(Kind::Host(s.clone())),
                })
                .collect(),
        })
        .collect();
    let last = samples.len() as u64;
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut acks = IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move {
        for batch in batches {
            if tx.send(batch).await.is_err() {
                return;
            }
        }
        // Keep the stream open until the acks are read.
        std::future::pending::<()>().await;
    });
    while let Some(ack) = acks.next().await {
        let ack = ack.unwrap();
        assert!(ack.rejected.is_empty(), "{:?}", ack.rejected);
        if ack.streams.iter().any(|s| s.acked_through_seq == last) {
            break;
        }
    }
    started.elapsed()
}

async fn collector_mtls(pki: &TestPki, samples: &[HostSample]) -> Duration {
    let mut config = CollectorConfig::new(pki.server("collector"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.kafka = kafka(&unique_name("fleetmon-bench-mtls"));
    let stop = CancellationToken::new();
    let running = fleetmon_collector::start(config, stop.clone())
        .await
        .unwrap();
    let files = pki.client(Role::Agent, "bench");
    let channel = fleetmon::tls::endpoint(&format!("https://{}", running.grpc_addr), &files)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let elapsed = stream_all(channel, samples).await;
    stop.cancel();
    elapsed
}

/// The same service over plaintext; the identity a certificate would give is injected.
async fn collector_plaintext(samples: &[HostSample]) -> Duration {
    let mut registry = prometheus_client::registry::Registry::default();
    let ctx = Arc::new(IngestContext {
        publisher: KafkaPublisher::connect(&kafka(&unique_name("fleetmon-bench-plain")))
            .await
            .unwrap(),
        fleet: FleetState::new(),
        metrics: CollectorMetrics::new(&mut registry),
        limits: Limits::default(),
        shutdown: CancellationToken::new(),
        abandon: CancellationToken::new(),
    });
    let identity = PeerIdentity {
        role: Role::Agent,
        name: "bench".into(),
        not_after: SystemTime::now() + Duration::from_secs(3600),
    };
    let service = IngestServer::with_interceptor(
        IngestService::new(ctx),
        move |mut request: tonic::Request<()>| {
            request.extensions_mut().insert(identity.clone());
            Ok(request)
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    stream_all(channel, samples).await
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    fleetmon::tls::install_crypto_provider();
    let n: usize = std::env::var("FLEETMON_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let samples = samples(n);
    let pki = TestPki::new();
    let bare = bare_producer(&samples).await;
    let mtls = collector_mtls(&pki, &samples).await;
    let plain = collector_plaintext(&samples).await;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "collector throughput, {n} host samples of {} bytes, batches of {BATCH}, same run (Kafka {})",
        samples[0].encoded_len(),
        kafka_bootstrap()
    );
    println!("{:<48} {:>12} {:>16}", "path", "samples/s", "ratio");
    println!(
        "{:<48} {:>12.0} {:>16}",
        "bare rdkafka producer, same settings (baseline)",
        rate(bare),
        "1.00"
    );
    println!(
        "{:<48} {:>12.0} {:>16.2}",
        "collector over mTLS, acked",
        rate(mtls),
        rate(mtls) / rate(bare)
    );
    println!(
        "{:<48} {:>12.0} {:>16.2}",
        "collector over plaintext, acked",
        rate(plain),
        rate(plain) / rate(bare)
    );
    println!(
        "{:<48} {:>12} {:>16.2}",
        "mTLS vs plaintext",
        "",
        rate(mtls) / rate(plain)
    );
}
