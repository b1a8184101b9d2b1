//! Collector throughput against a baseline measured in the same run:
//!
//! 1. a bare rdkafka producer with the collector's settings sending the same records
//!    to the same broker: warm, and waiting on its oldest delivery when the queue is
//!    full (the tightest loop we can write; the ceiling);
//! 2. samples streamed to the collector over mutual TLS, counted when acknowledged
//!    (that is, when Kafka confirmed them);
//! 3. the same ingest service over plaintext gRPC, to price TLS;
//! 4. with `FLEETMON_BENCH_KAFKA_TLS=1`: the collector over mTLS whose Kafka client
//!    speaks TLS with a client certificate to the SSL listener of the same broker (a
//!    node started here with `scripts/kafka --tls`; every other path uses its
//!    plaintext listener), to price TLS to Kafka.
//!
//! Every path is set up and warmed once, then the three run interleaved (1 2 3 1 2 3 …)
//! `FLEETMON_BENCH_REPEATS` times (default 5). Each run is printed; ratios are of
//! medians, with the spread (min–max) beside them. A collector faster than the bare
//! producer it wraps means the baseline is loose: the bench says so instead of
//! printing it as a result.
//!
//! Run: `cargo bench -p fleetmon-collector --bench collector_throughput` (samples per
//! run: `FLEETMON_BENCH_SAMPLES`, default 500000; Kafka: `FLEETMON_TEST_KAFKA` or an
//! Apache Kafka node started here).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fleetmon::identity::{PeerIdentity, Role};
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::pb::ingest_server::IngestServer;
use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, HostSample, IngestBatch, Sample, sample::Kind};
use fleetmon::testkit::{KafkaCluster, Runs, TestPki, bench_repeats, kafka_bootstrap, unique_name};
use fleetmon_collector::CollectorConfig;
use fleetmon_collector::config::{KafkaConfig, Limits};
use fleetmon_collector::fleet_state::FleetState;
use fleetmon_collector::ingest_service::{IngestContext, IngestService};
use fleetmon_collector::kafka_publisher::{KafkaPublisher, producer_config};
use fleetmon_collector::metrics::CollectorMetrics;
use prost::Message as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};

const BATCH: usize = 500;

/// `n` samples of a stream of their own (each run is a new stream, seq from 1).
fn samples(n: usize) -> Vec<HostSample> {
    let now = prost_types::Timestamp::from(SystemTime::now());
    let stream_id = uuid::Uuid::new_v4().to_string();
    (1..=n)
        .map(|seq| HostSample {
            agent_id: "bench".into(),
            stream_id: stream_id.clone(),
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

/// The broker's plaintext address for every path but 4.
static BOOTSTRAP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn kafka(topic: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: BOOTSTRAP.get_or_init(kafka_bootstrap).clone(),
        host_samples_topic: topic.to_owned(),
        site_checks_topic: format!("{topic}-sites"),
        partitions: 4,
        ..KafkaConfig::default()
    }
}

/// The baseline: a warm producer with the collector's settings and topics.
struct BareProducer {
    producer: FutureProducer,
    topic: String,
}

impl BareProducer {
    async fn new() -> Self {
        let config = kafka(&unique_name("fleetmon-bench-bare"));
        // Same topics and settings as the collector's.
        drop(KafkaPublisher::connect(&config).await.unwrap());
        let producer: FutureProducer = producer_config(&config).create().unwrap();
        let bare = BareProducer {
            producer,
            topic: config.host_samples_topic,
        };
        bare.run(&samples(1_000)).await;
        bare
    }

    /// Produces every sample; on a full queue it waits for the oldest delivery, never
    /// sleeps. Returns when the last delivery is confirmed.
    async fn run(&self, samples: &[HostSample]) -> Duration {
        let payloads: Vec<Vec<u8>> = samples.iter().map(|s| s.encode_to_vec()).collect();
        let started = Instant::now();
        let mut deliveries: VecDeque<DeliveryFuture> = VecDeque::new();
        for (sample, payload) in samples.iter().zip(&payloads) {
            let headers = OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(HOST_SAMPLE_CONTENT_TYPE),
            });
            let mut record = FutureRecord::to(&self.topic)
                .key(&sample.agent_id)
                .payload(payload)
                .headers(headers);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push_back(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        let oldest = deliveries.pop_front().expect("a full queue holds records");
                        oldest.await.unwrap().unwrap();
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
}

/// Streams every sample in batches and waits until the last is acknowledged.
async fn stream_all(channel: Channel, samples: &[HostSample]) -> Duration {
    let batches: Vec<IngestBatch> = samples
        .chunks(BATCH)
        .map(|chunk| IngestBatch {
            sent_at: None,
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

/// A collector over mutual TLS, started once; the channel of an agent connected to it.
async fn collector_mtls(
    pki: &TestPki,
    kafka_tls: Option<&KafkaCluster>,
) -> (Channel, CancellationToken) {
    let mut config = CollectorConfig::new(pki.server("collector"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.kafka = kafka(&unique_name("fleetmon-bench-mtls"));
    config.kafka.checks_topic = unique_name("fleetmon-bench-checks");
    if let Some(cluster) = kafka_tls {
        let client = pki.client(Role::Operator, "kafka-bench");
        config.kafka.bootstrap_servers = cluster.ssl_bootstrap();
        config.kafka.tls = Some(fleetmon::config::KafkaTls {
            ca: Some(pki.dir().join("ca.pem")),
            cert: Some(client.cert),
            key: Some(client.key),
        });
        config = config.validate().expect("a valid TLS config");
    }
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
    (channel, stop)
}

/// The same ingest service over plaintext; the identity a certificate would give is
/// injected.
async fn collector_plaintext() -> Channel {
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
        revocations: fleetmon_collector::credentials::Revocations::none(),
        // An empty catalog: the bench's results name no central check.
        checks: tokio::sync::watch::channel(Arc::default()).1,
        claims: None,
    });
    let identity = PeerIdentity {
        role: Role::Agent,
        name: "bench".into(),
        operator_role: None,
        uri: fleetmon::identity::agent_uri("bench"),
        not_after: SystemTime::now() + Duration::from_secs(3600),
        serial: "01".into(),
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
    // As the collector's TLS listener does: without TCP_NODELAY each small ack waits
    // on Nagle's algorithm, and this path measured slower than the one with TLS.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|tcp| {
        let tcp = tcp?;
        tcp.set_nodelay(true)?;
        Ok::<_, std::io::Error>(tcp)
    });
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    fleetmon::tls::install_crypto_provider();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // 100 000 samples took the bare producer a quarter of a second, and its rate then
    // spread 2x between rounds: three runs of the bench disagreed on every ratio.
    let n = env("FLEETMON_BENCH_SAMPLES", 500_000);
    let repeats = bench_repeats();
    let pki = TestPki::new();
    let tls_cluster = std::env::var("FLEETMON_BENCH_KAFKA_TLS")
        .is_ok_and(|v| v == "1")
        .then(|| KafkaCluster::start_tls(&pki, "bench", "bench-password"));
    if let Some(cluster) = &tls_cluster {
        BOOTSTRAP.set(cluster.bootstrap().to_owned()).unwrap();
    }
    let bare = BareProducer::new().await;
    let (mtls, stop) = collector_mtls(&pki, None).await;
    let plain = collector_plaintext().await;
    let kafka_tls = match &tls_cluster {
        Some(cluster) => Some(collector_mtls(&pki, Some(cluster)).await),
        None => None,
    };
    // Warm every collector path (connections, producer, TLS session) like the baseline.
    stream_all(mtls.clone(), &samples(1_000)).await;
    stream_all(plain.clone(), &samples(1_000)).await;
    if let Some((channel, _)) = &kafka_tls {
        stream_all(channel.clone(), &samples(1_000)).await;
    }
    let mut tls_runs = Runs(Vec::new());
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let (mut bare_runs, mut mtls_runs, mut plain_runs) =
        (Runs(Vec::new()), Runs(Vec::new()), Runs(Vec::new()));
    println!(
        "collector throughput, {n} host samples of {} bytes per run, batches of {BATCH}, {repeats} interleaved runs (Kafka {})",
        samples(1)[0].encoded_len(),
        BOOTSTRAP.get_or_init(kafka_bootstrap)
    );
    for run in 1..=repeats {
        let b = rate(bare.run(&samples(n)).await);
        let m = rate(stream_all(mtls.clone(), &samples(n)).await);
        let p = rate(stream_all(plain.clone(), &samples(n)).await);
        println!("run {run}: bare {b:.0}/s, collector mTLS {m:.0}/s, collector plaintext {p:.0}/s");
        if let Some((channel, _)) = &kafka_tls {
            let t = rate(stream_all(channel.clone(), &samples(n)).await);
            println!("run {run}: collector mTLS, Kafka over TLS {t:.0}/s");
            tls_runs.0.push(t);
        }
        bare_runs.0.push(b);
        mtls_runs.0.push(m);
        plain_runs.0.push(p);
    }
    println!(
        "{:<48} {:>12} {:>16} {:>8}",
        "path", "median /s", "min–max /s", "ratio"
    );
    let line = |name: &str, runs: &Runs, ratio: String| {
        println!(
            "{:<48} {:>12.0} {:>16} {:>8}",
            name,
            runs.median(),
            runs.spread(),
            ratio
        );
    };
    line(
        "bare rdkafka producer, same settings (baseline)",
        &bare_runs,
        "1.00".into(),
    );
    let vs_bare = |runs: &Runs| runs.median() / bare_runs.median();
    line(
        "collector over mTLS, acked",
        &mtls_runs,
        format!("{:.2}", vs_bare(&mtls_runs)),
    );
    line(
        "collector over plaintext, acked",
        &plain_runs,
        format!("{:.2}", vs_bare(&plain_runs)),
    );
    println!(
        "{:<48} {:>12} {:>16} {:>8.2}",
        "mTLS vs plaintext",
        "",
        "",
        mtls_runs.median() / plain_runs.median()
    );
    if !tls_runs.0.is_empty() {
        line(
            "collector over mTLS, Kafka over TLS, acked",
            &tls_runs,
            format!("{:.2}", vs_bare(&tls_runs)),
        );
        println!(
            "{:<48} {:>12} {:>16} {:>8.2}  (goal >= 0.85)",
            "Kafka over TLS vs plaintext (collector mTLS)",
            "",
            "",
            tls_runs.median() / mtls_runs.median()
        );
    }
    println!("paired ratios (each run against the baseline run of its round): median, min–max");
    mtls_runs.print_paired_ratio(
        &bare_runs,
        "ratio: collector mTLS / bare producer (goal >= 0.8)",
    );
    plain_runs.print_paired_ratio(&bare_runs, "ratio: collector plaintext / bare producer");
    mtls_runs.print_paired_ratio(&plain_runs, "ratio: collector mTLS / plaintext");
    if !tls_runs.0.is_empty() {
        tls_runs.print_paired_ratio(&mtls_runs, "ratio: collector, Kafka over TLS / plaintext");
    }
    for (name, runs) in [("mTLS", &mtls_runs), ("plaintext", &plain_runs)] {
        if vs_bare(runs) > 1.0 {
            println!(
                "BENCH BUG: the collector over {name} beat the bare producer it wraps ({:.2}): the baseline is loose, this is not a result",
                vs_bare(runs)
            );
        }
    }
    stop.cancel();
    if let Some((_, stop)) = kafka_tls {
        stop.cancel();
    }
}
