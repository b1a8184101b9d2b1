//! The collector's ingest path against a real Kafka-protocol broker with real
//! certificates: identity, validation, limits and acknowledgements.

use std::time::Duration;

use fleetmon::identity::Role;
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::pb::sample::Kind;
use fleetmon::pb::{
    Assignment, CheckDefinition, CreateCheckRequest, HttpCheck, IngestAck, IngestBatch,
    ListAgentsRequest, SiteCheck, StreamAck, check_definition,
};
use fleetmon::testkit::{KafkaCluster, ServingStatus, kafka_bootstrap, tls_alert, wait_for_health};
use fleetmon_collector::testkit::*;
use tokio_stream::StreamExt;
use tonic::Code;

fn acked(ack: &IngestAck) -> Vec<(String, u64)> {
    ack.streams
        .iter()
        .map(
            |StreamAck {
                 stream_id,
                 acked_through_seq,
             }| (stream_id.clone(), *acked_through_seq),
        )
        .collect()
}

/// Creates central check `id` (HTTP, every 60 s) assigned to `agents` by name.
async fn assign(collector: &TestCollector, id: &str, agents: &[&str]) {
    collector
        .checks()
        .create_check(CreateCheckRequest {
            check: Some(CheckDefinition {
                id: id.to_owned(),
                interval_seconds: 60,
                timeout_seconds: 2.0,
                assignment: Some(Assignment {
                    agents: agents.iter().map(|a| (*a).to_owned()).collect(),
                    ..Default::default()
                }),
                kind: Some(check_definition::Kind::Http(HttpCheck {
                    url: format!("https://{id}.example/"),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .expect("create check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_id_comes_from_the_certificate_not_the_payload() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    assign(&collector, "shop", &["a1"]).await;
    let ack = collector
        .agent("a1")
        .push(batch([
            Kind::Host(host("s1", 1)),
            Kind::Site(site("s1", 2, "https://example.com/")),
            Kind::Site(SiteCheck {
                check_id: "shop".to_owned(),
                check_version: 1,
                ..site("s1", 3, "https://shop.example/")
            }),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked(&ack), [("s1".to_owned(), 3)]);
    assert!(ack.rejected.is_empty());

    let records = collector.host_records(1).await;
    let (key, sample) = &records[0];
    assert_eq!(key, "a1");
    assert_eq!(sample.agent_id, "a1", "payload claimed `evil`");
    assert_eq!(sample.hostname, "web-1.example", "reported hostname kept");
    assert_eq!((sample.stream_id.as_str(), sample.seq), ("s1", 1));
    // Keyed so that every location's result for one check shares a partition: a
    // central check by its id, a site of the agent's own config by its URL.
    let mut sites = collector.site_records(2).await;
    sites.sort_by_key(|(_, site)| site.seq);
    let keys: Vec<(&str, &str, &str)> = sites
        .iter()
        .map(|(key, site)| (key.as_str(), site.agent_id.as_str(), site.url.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("https://example.com/", "a1", "https://example.com/"),
            ("shop", "a1", "https://shop.example/")
        ]
    );
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_peers_never_reach_a_service() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let operator_on_ingest =
        IngestClient::new(collector.channel(&collector.pki.client(Role::Operator, "ops")))
            .push(hosts("s1", 1..=1))
            .await
            .unwrap_err();
    assert_eq!(operator_on_ingest.code(), Code::PermissionDenied);
    assert_eq!(
        operator_on_ingest.message(),
        "spiffe://fleetmon/operator/admin/ops may not call this service (it is for agent certificates only)"
    );

    let agent_on_fleet = fleetmon::pb::fleet_client::FleetClient::new(
        collector.channel(&collector.pki.client(Role::Agent, "a1")),
    )
    .list_agents(ListAgentsRequest::default())
    .await
    .unwrap_err();
    assert_eq!(agent_on_fleet.code(), Code::PermissionDenied);
    assert_eq!(
        agent_on_fleet.message(),
        "spiffe://fleetmon/agent/a1 may not call this service (it is for operator certificates only)"
    );

    let addr = collector.running.grpc_addr;
    let foreign = collector.pki.foreign_client(Role::Agent, "a1");
    assert_eq!(
        tls_alert(addr, &collector.pki, Some(&foreign)).await,
        "received fatal alert: UnknownCA"
    );
    assert_eq!(
        tls_alert(addr, &collector.pki, None).await,
        "received fatal alert: CertificateRequired"
    );
    let status = IngestClient::new(collector.channel(&foreign))
        .push(hosts("s1", 1..=1))
        .await
        .unwrap_err();
    // The handshake fails, so the call never reaches a service: the status comes
    // from the client's transport (the connection the server closed), not the server.
    assert!(
        std::error::Error::source(&status)
            .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some()),
        "{status:?}"
    );

    // Nothing of the above reached Kafka; a legitimate agent still gets through.
    collector
        .agent("a2")
        .push(hosts("s2", 1..=1))
        .await
        .unwrap();
    let records = collector.host_records(1).await;
    assert_eq!(records[0].0, "a2");
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_sample_is_rejected_alone() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let mut bad = host("s1", 3);
    bad.sampled_at = None;
    let mut future = host("s1", 4);
    future.sampled_at = Some(prost_types::Timestamp::from(
        std::time::SystemTime::now() + Duration::from_secs(3600),
    ));
    let ack = collector
        .agent("a1")
        .push(batch([
            Kind::Host(host("s1", 1)),
            Kind::Host(host("s1", 2)),
            Kind::Host(bad),
            Kind::Host(future),
            Kind::Host(host("s1", 5)),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked(&ack), [("s1".to_owned(), 5)]);
    let rejected: Vec<(u64, &str, &str)> = ack
        .rejected
        .iter()
        .map(|r| (r.seq, r.reason.as_str(), r.message.as_str()))
        .collect();
    // The offset is in whole seconds of both clocks: 3600, or 3599 when the
    // collector's second ticked after the sample was made.
    let skew = |ahead: u32| {
        format!(
            "sampled_at is {ahead} s ahead of the collector's clock; at most 300 s is allowed (limits.max_clock_skew_seconds): fix the agent's clock"
        )
    };
    assert_eq!(
        rejected[0],
        (3, "missing_timestamp", "sampled_at is missing")
    );
    assert_eq!(rejected[1].0, 4);
    assert_eq!(rejected[1].1, "timestamp_in_future");
    assert!(
        [skew(3599), skew(3600)].contains(&rejected[1].2.to_owned()),
        "{}",
        rejected[1].2
    );
    assert_eq!(rejected.len(), 2);
    assert_eq!(host_seqs(&collector, 3).await, [1, 2, 5]);
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_message_limits_answer_resource_exhausted_and_serving_goes_on() {
    let collector = TestCollector::start(&kafka_bootstrap(), |c| {
        c.limits.max_message_bytes = 64 * 1024;
        c.limits.max_samples_per_batch = 100;
    })
    .await;
    let mut agent = collector.agent("a1");

    let too_many = agent.push(hosts("s1", 1..=101)).await.unwrap_err();
    assert_eq!(too_many.code(), Code::ResourceExhausted);
    assert_eq!(
        too_many.message(),
        "batch holds 101 samples; the limit is 100 (limits.max_samples_per_batch)"
    );

    let mut huge = host("s1", 1);
    huge.hostname = "h".repeat(70 * 1024);
    let oversized = agent
        .push(batch([Kind::Host(huge.clone())]))
        .await
        .unwrap_err();
    assert_eq!(oversized.code(), Code::ResourceExhausted, "{oversized:?}");
    assert!(
        oversized.message().contains("message length too large"),
        "{oversized:?}"
    );

    // The same on a stream: the stream ends with the status.
    let outbound = tokio_stream::iter([batch([Kind::Host(huge)])]);
    let mut acks = agent.stream(outbound).await.unwrap().into_inner();
    let ended = acks.next().await.expect("a status").unwrap_err();
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");

    // The server keeps serving, this agent and others.
    let ack = agent.push(hosts("s1", 1..=3)).await.unwrap().into_inner();
    assert_eq!(acked(&ack), [("s1".to_owned(), 3)]);
    let ack = collector
        .agent("a2")
        .push(hosts("s2", 1..=1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked(&ack), [("s2".to_owned(), 1)]);
    collector.shutdown.cancel();
}

type Acks = tonic::Streaming<IngestAck>;

/// Opens an ingest stream for agent `a1`: a sender of batches and the acks.
async fn open_stream(collector: &TestCollector) -> (tokio::sync::mpsc::Sender<IngestBatch>, Acks) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let acks = collector
        .agent("a1")
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, acks)
}

/// Reads acks of stream `s1` until one covers `target`; acks must only move forward.
async fn wait_acked(acks: &mut Acks, mut through: u64, target: u64) -> u64 {
    while through < target {
        let ack = tokio::time::timeout(Duration::from_secs(60), acks.next())
            .await
            .expect("ack within 60 s")
            .expect("stream open")
            .unwrap();
        let (stream, seq) = acked(&ack).pop().expect("progress");
        assert_eq!(stream, "s1");
        assert!(seq > through, "acks only move forward");
        through = seq;
    }
    through
}

/// Opens a stream whose seqs 1..=10 Kafka confirmed, then freezes the broker and sends
/// 11..=20, which wait for it.
async fn ten_acked_then_ten_waiting(
    collector: &TestCollector,
    broker: &KafkaCluster,
) -> (tokio::sync::mpsc::Sender<IngestBatch>, Acks) {
    let (tx, mut acks) = open_stream(collector).await;
    tx.send(hosts("s1", 1..=10)).await.unwrap();
    wait_acked(&mut acks, 0, 10).await;
    broker.pause(1);
    tx.send(hosts("s1", 11..=20)).await.unwrap();
    (tx, acks)
}

async fn host_seqs(collector: &TestCollector, count: usize) -> Vec<u64> {
    let mut seqs: Vec<u64> = collector
        .host_records(count)
        .await
        .iter()
        .map(|(_, s)| s.seq)
        .collect();
    seqs.sort();
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_acks_follow_kafka_delivery() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let (tx, mut acks) = open_stream(&collector).await;
    let mut through = 0;
    for start in [1u64, 101, 201] {
        tx.send(hosts("s1", start..=start + 99)).await.unwrap();
        through = wait_acked(&mut acks, through, start + 99).await;
    }
    // Acked means readable: all 300 are in Kafka now, exactly once.
    assert_eq!(
        host_seqs(&collector, 300).await,
        (1..=300).collect::<Vec<_>>()
    );
    drop(tx);
    assert!(
        acks.next().await.is_none(),
        "stream ends cleanly after the agent closes it"
    );
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_stops_acks_and_nothing_is_lost() {
    let broker = KafkaCluster::start(1);
    let collector = TestCollector::start(broker.bootstrap(), |_| {}).await;
    let (tx, mut acks) = open_stream(&collector).await;
    tx.send(hosts("s1", 1..=50)).await.unwrap();
    let through = wait_acked(&mut acks, 0, 50).await;

    let (url, operator) = (collector.url(), collector.pki.client(Role::Operator, "ops"));
    let health = |status| {
        wait_for_health(
            &url,
            &operator,
            "fleetmon.v1.Ingest",
            status,
            Duration::from_secs(20),
        )
    };
    health(ServingStatus::Serving).await;

    broker.pause(1);
    tx.send(hosts("s1", 51..=100)).await.unwrap();
    let during = tokio::time::timeout(Duration::from_secs(3), acks.next()).await;
    assert!(
        during.is_err(),
        "no ack while the broker is stopped: {during:?}"
    );
    // Load balancers and `fleetmon status` see that this collector cannot deliver.
    health(ServingStatus::NotServing).await;
    broker.resume(1);
    health(ServingStatus::Serving).await;

    wait_acked(&mut acks, through, 100).await;
    assert_eq!(
        host_seqs(&collector, 100).await,
        (1..=100).collect::<Vec<_>>()
    );
    collector.shutdown.cancel();
}

/// A stream stops being read once `limits.max_in_flight_per_stream` of its samples wait
/// for Kafka: the batch that crosses the limit is taken whole, the next one waits in
/// the agent's connection, and everything is acknowledged once Kafka answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_its_in_flight_limit_is_not_read_until_kafka_confirms() {
    let broker = KafkaCluster::start(1);
    let collector = TestCollector::start(broker.bootstrap(), |config| {
        config.limits.max_in_flight_per_stream = 20;
    })
    .await;
    let received = r#"fleetmon_collector_samples_received_total{kind="host"}"#;
    let metrics = collector.running.metrics_addr;
    let (tx, mut acks) = open_stream(&collector).await;
    tx.send(hosts("s1", 1..=10)).await.unwrap();
    let through = wait_acked(&mut acks, 0, 10).await;

    broker.pause(1);
    // 15 waiting (under 20: the next batch is read), then 25 (over: reading stops).
    tx.send(hosts("s1", 11..=25)).await.unwrap();
    tx.send(hosts("s1", 26..=35)).await.unwrap();
    tx.send(hosts("s1", 36..=40)).await.unwrap();
    fleetmon::testkit::wait_for_metric(metrics, received, 35.0).await;
    // A non-event needs a window: the third batch stays unread while Kafka is frozen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fleetmon::testkit::metric_value(metrics, received),
        Some(35.0),
        "the collector read past its in-flight limit"
    );

    broker.resume(1);
    wait_acked(&mut acks, through, 40).await;
    assert_eq!(
        host_seqs(&collector, 40).await,
        (1..=40).collect::<Vec<_>>()
    );
    collector.shutdown.cancel();
}

/// Kafka does not confirm a sample (here its delivery times out while the broker is
/// frozen): the stream ends UNAVAILABLE naming the cause, nothing past the samples
/// Kafka confirmed is acknowledged, and the agent's resend on a new stream is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_kafka_does_not_confirm_ends_the_stream_unacknowledged() {
    let broker = KafkaCluster::start(1);
    let collector = TestCollector::start(broker.bootstrap(), |config| {
        config
            .kafka
            .options
            .insert("message.timeout.ms".to_owned(), "2000".to_owned());
    })
    .await;
    let (_tx, acks) = ten_acked_then_ten_waiting(&collector, &broker).await;
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(60), acks.collect())
        .await
        .expect("the stream ended once the deliveries timed out");
    broker.resume(1);
    let (last, before) = rest.split_last().expect("the stream ended with a status");
    assert!(
        before.is_empty(),
        "nothing past seq 10 was acknowledged: {before:?}"
    );
    let status = last.as_ref().expect_err("the stream ended with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with("kafka delivery failed: ")
            && status
                .message()
                .ends_with("; resend unacknowledged samples"),
        "{status:?}"
    );

    // The agent resends 11..=20 on a new stream once Kafka is back: acknowledged.
    let (tx, mut acks) = open_stream(&collector).await;
    tx.send(hosts("s1", 11..=20)).await.unwrap();
    wait_acked(&mut acks, 0, 20).await;
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_kafka_frozen_closes_waiting_streams_after_the_drain_deadline() {
    let broker = KafkaCluster::start(1);
    let collector = TestCollector::start(broker.bootstrap(), |config| {
        config.shutdown_drain_seconds = 2;
    })
    .await;
    let (_tx, acks) = ten_acked_then_ten_waiting(&collector, &broker).await;
    // The collector holds 11..=20 (received, waiting for Kafka) before the SIGTERM.
    fleetmon::testkit::wait_for_metric(
        collector.running.metrics_addr,
        r#"fleetmon_collector_samples_received_total{kind="host"}"#,
        20.0,
    )
    .await;

    // SIGTERM, as systemd sends it: the stream waits for acks that cannot come.
    collector.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(60), collector.running.task).await;
    broker.resume(1);
    let result = stopped.expect("the collector stopped despite the stream waiting for Kafka");
    result.unwrap().unwrap();
    // The stream ended without acknowledging 11..=20, telling the agent why; the agent
    // sends them again to a collector that is up.
    let rest: Vec<_> = acks.collect().await;
    let (last, before) = rest.split_last().expect("the stream ended with a status");
    assert!(before.iter().all(|ack| ack.is_ok()), "{rest:?}");
    let status = last.as_ref().expect_err("the stream ended with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "collector shutting down: samples not yet acknowledged were not delivered; send them again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_started_before_kafka_waits_for_it_then_serves() {
    fleetmon::tls::install_crypto_provider();
    let pki = fleetmon::testkit::TestPki::new();
    // Nothing answers Kafka's port yet: only a listener that hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = fleetmon_collector::CollectorConfig::new(pki.server("collector"));
    let grpc_port = fleetmon::testkit::free_port();
    config.listen = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.kafka.bootstrap_servers = format!("127.0.0.1:{port}");
    config.kafka.connect_timeout_seconds = 1;
    config.kafka.host_samples_topic = fleetmon::testkit::unique_name("late-kafka-host");
    config.kafka.site_checks_topic = fleetmon::testkit::unique_name("late-kafka-site");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let starting = tokio::spawn(fleetmon_collector::start(config, shutdown.clone()));

    // The collector tries, is hung up on, and tries again: it waits rather than exits.
    for _ in 0..2 {
        let (socket, _) = listener.accept().await.unwrap();
        drop(socket);
    }
    assert!(!starting.is_finished(), "the collector gave up waiting");
    // Meanwhile its port answers health checks: NOT_SERVING, as a whole and per service.
    let grpc = format!("https://127.0.0.1:{grpc_port}");
    let operator = pki.client(fleetmon::identity::Role::Operator, "ops");
    for service in ["", "fleetmon.v1.Ingest"] {
        fleetmon::testkit::wait_for_health(
            &grpc,
            &operator,
            service,
            fleetmon::testkit::ServingStatus::NotServing,
            Duration::from_secs(30),
        )
        .await;
    }

    // Kafka "comes up": the port now leads to the suite's broker (whose metadata
    // then names its own address).
    fleetmon::testkit::forward_to(listener, kafka_bootstrap());
    let running = starting
        .await
        .unwrap()
        .expect("the collector starts once Kafka answers");
    fleetmon::testkit::wait_for_health(
        &grpc,
        &operator,
        "",
        fleetmon::testkit::ServingStatus::Serving,
        Duration::from_secs(30),
    )
    .await;
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_collector_stopped_while_waiting_for_kafka_names_it() {
    fleetmon::tls::install_crypto_provider();
    let pki = fleetmon::testkit::TestPki::new();
    let port = fleetmon::testkit::free_port();
    let mut config = fleetmon_collector::CollectorConfig::new(pki.server("collector"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.kafka.bootstrap_servers = format!("127.0.0.1:{port}");
    config.kafka.connect_timeout_seconds = 1;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let starting = tokio::spawn(fleetmon_collector::start(config, shutdown.clone()));
    // Stopped (Ctrl-C, systemd) while it waits: the start ends naming the broker.
    shutdown.cancel();
    let error = starting.await.unwrap().unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot reach Kafka at 127.0.0.1:{port} within 1 s: "
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_for_unknown_or_unassigned_checks_are_refused_and_never_published() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    assign(&collector, "shop", &["eu-1", "us-1"]).await;
    let result = |seq, check_id: &str, version| {
        Kind::Site(SiteCheck {
            check_id: check_id.to_owned(),
            check_version: version,
            ok: true,
            ..site("s1", seq, "https://shop.example/")
        })
    };
    // An intruder votes UP for a check it was never given, for one that does not
    // exist, and claims a version never sent.
    let ack = collector
        .agent("intruder")
        .push(batch([
            result(1, "shop", 1),
            result(2, "ghost", 1),
            Kind::Host(host("s1", 3)),
        ]))
        .await
        .unwrap()
        .into_inner();
    let rejected: Vec<(u64, &str, &str)> = ack
        .rejected
        .iter()
        .map(|r| (r.seq, r.reason.as_str(), r.message.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [
            (
                1,
                "unassigned_check",
                "check `shop` is not assigned to agent `intruder`: its result counts nowhere"
            ),
            (
                2,
                "unknown_check",
                "check_id `ghost` names no check: a result counts only for a check assigned to its agent"
            ),
        ]
    );
    // Settled: the agent moves on (its host sample went through).
    assert_eq!(acked(&ack), [("s1".to_owned(), 3)]);
    let ack = collector
        .agent("eu-1")
        .push(batch([result(1, "shop", 9), result(2, "shop", 1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.rejected.len(), 1);
    assert_eq!(
        ack.rejected[0].message,
        "check_version 9 of check `shop` was never sent: its current version is 1"
    );

    // Only the assigned location's vote reached Kafka, so only it reaches the alert
    // state: two records were published in all, the intruder's host sample and it.
    let sites = collector.site_records(1).await;
    assert_eq!((sites[0].1.agent_id.as_str(), sites[0].1.seq), ("eu-1", 2));
    let metrics = fleetmon::testkit::metrics_text(collector.running.metrics_addr);
    assert!(
        metrics
            .lines()
            .any(|l| l == "fleetmon_collector_records_delivered_total 2"),
        "{metrics}"
    );
    for reason in ["unassigned_check", "unknown_check", "unknown_check_version"] {
        let line = format!("fleetmon_collector_samples_rejected_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    collector.shutdown.cancel();
}
