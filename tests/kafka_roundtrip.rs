//! Protobuf samples through a real Kafka-protocol broker with rdkafka: produced with
//! the producer settings the collector uses, read back by a consumer group that
//! stores offsets by hand, as the writer does.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, HostSample};
use fleetmon::testkit::{create_topic, kafka_bootstrap, unique_name};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

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
    create_topic(&bootstrap, &topic, 3).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut sent = BTreeMap::new();
    for seq in 1..=200u64 {
        let agent = format!("agent-{}", seq % 4);
        let value = sample(&agent, seq);
        let payload = value.encode_to_vec();
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(HOST_SAMPLE_CONTENT_TYPE),
        });
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&agent)
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("delivery of seq {seq} failed: {e}"));
        sent.insert(seq, value);
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", unique_name("fleetmon-test-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .create()
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
