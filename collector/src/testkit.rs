//! Test harness (feature `testkit`, which the crate's tests and benches turn on): a
//! collector in-process on 127.0.0.1:0 with real certificates, talking to a real
//! Kafka-protocol broker, and the samples its tests send.

use std::time::{Duration, SystemTime};

use crate::{CollectorConfig, RunningCollector};
use fleetmon::identity::Role;
use fleetmon::pb::checks_client::ChecksClient;
use fleetmon::pb::fleet_client::FleetClient;
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::pb::{HostSample, IngestBatch, Sample, SiteCheck, sample::Kind};
use fleetmon::testkit::{TestPki, read_topic, unique_name};
use fleetmon::tls::ClientTlsFiles;
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A collector running in this process.
pub struct TestCollector {
    /// Its certificates and those of its clients.
    pub pki: TestPki,
    /// The configuration it started with.
    pub config: CollectorConfig,
    /// Its addresses and tasks.
    pub running: RunningCollector,
    /// Cancelled to stop it.
    pub shutdown: CancellationToken,
}

impl TestCollector {
    /// Starts one on 127.0.0.1 with topics of its own on `bootstrap`, configured as
    /// `tweak` changes the test defaults.
    pub async fn start(bootstrap: &str, tweak: impl FnOnce(&mut CollectorConfig)) -> Self {
        fleetmon::tls::install_crypto_provider();
        let pki = TestPki::new();
        let mut config = CollectorConfig::new(pki.server("collector"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.metrics_listen = "127.0.0.1:0".parse().unwrap();
        config.kafka.bootstrap_servers = bootstrap.to_owned();
        config.kafka.host_samples_topic = unique_name("fleetmon-test-host");
        config.kafka.site_checks_topic = unique_name("fleetmon-test-site");
        config.kafka.checks_topic = unique_name("fleetmon-test-checks");
        config.kafka.credentials_topic = unique_name("fleetmon-test-credentials");
        config.kafka.audit_topic = unique_name("fleetmon-test-audit");
        config.kafka.partitions = 3;
        config.kafka.connect_timeout_seconds = 20;
        config.kafka.linger_ms = 5;
        // The tests' agents have hand-issued certificates (no token): the labels in
        // their config are what selects them, as the collector documents for them.
        config.assignment.trust_agent_labels = true;
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let running = crate::start(config.clone(), shutdown.clone())
            .await
            .expect("collector starts");
        TestCollector {
            pki,
            config,
            running,
            shutdown,
        }
    }

    /// Its gRPC address as a URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.running.grpc_addr)
    }

    /// A channel to it presenting `files`.
    pub fn channel(&self, files: &ClientTlsFiles) -> Channel {
        fleetmon::tls::endpoint(&self.url(), files)
            .unwrap()
            .connect_lazy()
    }

    /// An ingest client presenting agent `name`'s certificate.
    pub fn agent(&self, name: &str) -> IngestClient<Channel> {
        IngestClient::new(self.channel(&self.pki.client(Role::Agent, name)))
    }

    /// A fleet client presenting an operator certificate.
    pub fn operator(&self) -> FleetClient<Channel> {
        FleetClient::new(self.channel(&self.pki.client(Role::Operator, "ops")))
    }

    /// A checks client presenting an operator certificate.
    pub fn checks(&self) -> ChecksClient<Channel> {
        ChecksClient::new(self.channel(&self.pki.client(Role::Operator, "ops")))
    }

    /// The first `count` records of the host topic.
    pub async fn host_records(&self, count: usize) -> Vec<(String, HostSample)> {
        self.records(&self.config.kafka.host_samples_topic, count)
            .await
    }

    /// The first `count` records of the site topic.
    pub async fn site_records(&self, count: usize) -> Vec<(String, SiteCheck)> {
        self.records(&self.config.kafka.site_checks_topic, count)
            .await
    }

    /// `count` records of `topic` as (key, decoded value).
    async fn records<M: prost::Message + Default>(
        &self,
        topic: &str,
        count: usize,
    ) -> Vec<(String, M)> {
        let bootstrap = &self.config.kafka.bootstrap_servers;
        decode(read_topic(bootstrap, topic, count, Duration::from_secs(60)).await)
    }
}

fn decode<M: prost::Message + Default>(messages: Vec<OwnedMessage>) -> Vec<(String, M)> {
    messages
        .into_iter()
        .map(|m| {
            let key = String::from_utf8(m.key().expect("key").to_vec()).unwrap();
            (
                key,
                M::decode(m.payload().expect("payload")).expect("protobuf value"),
            )
        })
        .collect()
}

/// Now, as a protobuf timestamp.
pub fn now() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(SystemTime::now()))
}

/// Host sample `seq` of `stream_id`, claiming agent `evil` (the collector stamps the
/// real one).
pub fn host(stream_id: &str, seq: u64) -> HostSample {
    HostSample {
        agent_id: "evil".to_owned(),
        stream_id: stream_id.to_owned(),
        seq,
        sampled_at: now(),
        hostname: "web-1.example".to_owned(),
        cpu_usage_percent: 42.5,
        memory_total_bytes: 8 << 30,
        ..Default::default()
    }
}

/// A passing site check `seq` of `stream_id` against `url`.
pub fn site(stream_id: &str, seq: u64, url: &str) -> SiteCheck {
    SiteCheck {
        stream_id: stream_id.to_owned(),
        seq,
        checked_at: now(),
        url: url.to_owned(),
        method: "GET".to_owned(),
        status_code: Some(200),
        ok: true,
        response_time_ms: 12.5,
        ..Default::default()
    }
}

/// A batch of `samples`.
pub fn batch(samples: impl IntoIterator<Item = Kind>) -> IngestBatch {
    IngestBatch {
        sent_at: None,
        samples: samples
            .into_iter()
            .map(|kind| Sample { kind: Some(kind) })
            .collect(),
    }
}

/// A batch of host samples `seqs` of `stream_id`.
pub fn hosts(stream_id: &str, seqs: std::ops::RangeInclusive<u64>) -> IngestBatch {
    batch(seqs.map(|seq| Kind::Host(host(stream_id, seq))))
}
