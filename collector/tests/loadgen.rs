//! `fleetmon-loadgen` against a real collector and broker: every simulated agent has
//! its own certificate, and every sample it reports acknowledged is in Kafka.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use fleetmon::pb::HostSample;
use fleetmon::testkit::{kafka_bootstrap, read_all};
use fleetmon_collector::testkit::*;
use prost::Message as _;
use rdkafka::Message as _;

/// Runs `fleetmon-loadgen ARGS` against `collector` with its PKI's certificates.
async fn loadgen(collector: &TestCollector, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetmon-loadgen"));
    command
        .args(["--collector", &collector.url(), "--certs"])
        .arg(collector.pki.dir())
        .args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// The JSON summary of a run that succeeded (else its output, in the panic).
fn succeeded(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_agents_are_acknowledged_and_every_sample_is_in_kafka() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let out = loadgen(
        &collector,
        &[
            "--agents",
            "20",
            "--rate",
            "5",
            "--seconds",
            "3",
            "--batch-interval-ms",
            "200",
            "--prefix",
            "lg",
            "--json",
        ],
    )
    .await;
    let summary = succeeded(&out);
    let sent = summary["sent"].as_u64().unwrap();
    assert!(sent >= 20 * 5 * 2, "{summary}");
    assert_eq!(summary["acked"], sent, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert!(summary["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    let records = read_all(
        &kafka_bootstrap(),
        &collector.config.kafka.host_samples_topic,
        sent as usize,
        Duration::from_secs(2),
    )
    .await;
    let mut agents = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for record in &records {
        let key = String::from_utf8(record.key().unwrap().to_vec()).unwrap();
        let sample = HostSample::decode(record.payload().unwrap()).unwrap();
        assert!(
            sample.stream_id.starts_with(&format!("{key}-")),
            "{key} {}",
            sample.stream_id
        );
        agents.insert(key);
        seen.insert((sample.stream_id, sample.seq));
    }
    assert_eq!(agents.len(), 20, "one Kafka key per simulated agent");
    assert_eq!(
        seen.len() as u64,
        sent,
        "every acknowledged sample is in Kafka"
    );
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_agents_hold_their_streams_open_without_sending() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let out = loadgen(
        &collector,
        &[
            "--agents",
            "10",
            "--idle",
            "--seconds",
            "2",
            "--max-connecting",
            "3",
            "--prefix",
            "idle",
            "--json",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("all 10 streams open"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["streams_opened"], 10, "{summary}");
    assert_eq!(summary["sent"], 0, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_move_to_the_next_collector_when_theirs_goes_away_and_lose_nothing() {
    // With no drain time, its streams end at once when it stops, as a crash ends them.
    let first = TestCollector::start(&kafka_bootstrap(), |config| {
        config.shutdown_drain_seconds = 0;
    })
    .await;
    // The same CA and topics: two collectors of one fleet.
    let second = TestCollector::start(&kafka_bootstrap(), |config| {
        config.tls = first.config.tls.clone();
        config.kafka = first.config.kafka.clone();
    })
    .await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetmon-loadgen"));
    command
        .args(["--collector", &first.url(), "--collector", &second.url()])
        .arg("--certs")
        .arg(first.pki.dir())
        .args(["--agents", "10", "--rate", "5", "--seconds", "10"])
        .args(["--batch-interval-ms", "200", "--prefix", "move", "--json"]);
    let run = tokio::task::spawn_blocking(move || command.output().unwrap());
    // Once the first has delivered samples, it goes away.
    fleetmon::testkit::wait_for_metric(
        first.running.metrics_addr,
        "fleetmon_collector_records_delivered_total",
        20.0,
    )
    .await;
    first.shutdown.cancel();

    let out = run.await.unwrap();
    let summary = succeeded(&out);
    let sent = summary["sent"].as_u64().unwrap();
    assert_eq!(summary["acked"], sent, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(
        summary["agents_reconnected"], 5,
        "the agents on the first collector, and only they, moved: {summary}"
    );
    let records = read_all(
        &kafka_bootstrap(),
        &second.config.kafka.host_samples_topic,
        sent as usize,
        Duration::from_secs(2),
    )
    .await;
    let seqs: BTreeSet<(String, u64)> = records
        .iter()
        .map(|record| {
            let sample = HostSample::decode(record.payload().unwrap()).unwrap();
            (sample.stream_id, sample.seq)
        })
        .collect();
    assert_eq!(
        seqs.len() as u64,
        sent,
        "every sample is in Kafka (some twice: sent again when their ack was lost)"
    );
    second.shutdown.cancel();
}
