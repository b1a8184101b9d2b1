//! Protobuf samples through a real Kafka-protocol broker: published by the collector's
//! own `KafkaPublisher` (its producer settings, key and header), read back by the
//! writer's own group consumer, which stores offsets by hand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, HostSample};
use fleetmon::testkit::{kafka_bootstrap, unique_name};
use fleetmon_collector::kafka_publisher::{KafkaPublisher, delivery_result};
use fleetmon_collector::validation::ValidSample;
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Headers, Message};

fn sample(agent: &str, seq: u64) -> HostSample {
    HostSample {
        agent_id: agent.to_owned(),
        stream_id: "s-1".to_owned(),
        seq,
        sampled_at: Some(prost_types::Timestamp {
            seconds: 1_800_000_000 + seq as i64,
            nanos: 0,
        }),
        hostname: format!("{agent}.example"),
        cpu_usage_percent: seq as f64 / 10.0,
        memory_total_bytes: 8 << 30,
        cpu_core_usage_percent: vec![1.5, 2.5],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_round_trip_through_a_consumer_group() {
    let bootstrap = kafka_bootstrap();
    let topic = unique_name("fleetmon-test-roundtrip");
    let collector = fleetmon_collector::config::KafkaConfig {
        bootstrap_servers: bootstrap.clone(),
        host_samples_topic: topic.clone(),
        site_checks_topic: unique_name("fleetmon-test-roundtrip-sites"),
        partitions: 3,
        ..Default::default()
    };
    let publisher = KafkaPublisher::connect(&collector)
        .await
        .expect("publisher");
    let mut sent = BTreeMap::new();
    for seq in 1..=200u64 {
        let value = sample(&format!("agent-{}", seq % 4), seq);
        let delivery = publisher
            .publish(&ValidSample::Host(value.clone()))
            .await
            .expect("queued");
        delivery_result(delivery.await)
            .unwrap_or_else(|e| panic!("delivery of seq {seq} failed: {e}"));
        sent.insert(seq, value);
    }

    let writer = fleetmon_writer::config::KafkaConfig {
        bootstrap_servers: bootstrap,
        group_id: unique_name("fleetmon-test-group"),
        ..Default::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(fleetmon_writer::metrics::WriterMetrics::new(&mut registry));
    let (consumer, _revoked) =
        fleetmon_writer::consume::kafka_source::consumer(&writer, metrics, Default::default())
            .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");

    let mut received = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.len() < sent.len() {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {} records within 60 s",
                    received.len(),
                    sent.len()
                )
            })
            .expect("consume");
        let decoded = HostSample::decode(message.payload().expect("payload")).expect("protobuf");
        assert_eq!(
            message.key(),
            Some(decoded.agent_id.as_bytes()),
            "key is the agent id"
        );
        let header = message.headers().expect("headers").get(0);
        assert_eq!(header.key, "content-type");
        assert_eq!(header.value, Some(HOST_SAMPLE_CONTENT_TYPE.as_bytes()));
        consumer
            .store_offset_from_message(&message)
            .expect("store offset");
        assert!(
            received.insert(decoded.seq, decoded).is_none(),
            "no duplicates"
        );
    }
    assert_eq!(received, sent);
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit offsets");
}
