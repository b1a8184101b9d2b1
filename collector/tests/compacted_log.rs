//! A compacted log read in bulk, against Apache Kafka: records already fetched are
//! applied together and published as one view, so reading a topic costs work in
//! proportion to its records, not to their square (each view copies the map of keys).

use fleetmon::pb::CheckDefinition;
use fleetmon::testkit::{kafka_bootstrap, unique_name};
use fleetmon_collector::compacted_log::CompactedLog;
use fleetmon_collector::config::KafkaConfig;
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const RECORDS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_records_in_the_topic_are_read_in_a_few_views() {
    let config = KafkaConfig {
        bootstrap_servers: kafka_bootstrap(),
        checks_topic: unique_name("fleetmon-test-burst"),
        ..KafkaConfig::default()
    };
    let shutdown = CancellationToken::new();
    // Opening creates the topic; the records then go in behind this log's back.
    let first = CompactedLog::<CheckDefinition>::open_checks(&config, shutdown.clone())
        .await
        .unwrap();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .create()
        .unwrap();
    let deliveries: Vec<_> = (0..RECORDS)
        .map(|i| {
            let id = format!("check-{i:05}");
            let payload = CheckDefinition {
                id: id.clone(),
                version: 1,
                interval_seconds: 60,
                ..Default::default()
            }
            .encode_to_vec();
            let producer = producer.clone();
            let topic = config.checks_topic.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&id).payload(&payload),
                        std::time::Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(error, _)| error)
            }
        })
        .collect();
    for delivery in futures::future::join_all(deliveries).await {
        delivery.unwrap();
    }

    // A second log reads the whole topic from its start, every record already there.
    let second = CompactedLog::<CheckDefinition>::open_checks(&config, shutdown.clone())
        .await
        .unwrap();
    let view = second.view();
    assert_eq!(view.records.len(), RECORDS, "every record applied");
    assert!(
        view.generation <= (RECORDS / 100) as u64,
        "{RECORDS} records published as {} views: one a record would copy the map of keys each time",
        view.generation
    );
    // The first log followed the same records as they came, and holds them all too.
    let mut watch = first.watch();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        watch.wait_for(|view| view.records.len() == RECORDS),
    )
    .await
    .expect("the first log applied every record within 30 s")
    .unwrap();
    shutdown.cancel();
}
