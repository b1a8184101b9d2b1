//! Test harness (feature `testkit`, which the crate's tests and benches turn on): a
//! writer in-process with its own topics, consumer group and PostgreSQL schema, fed by
//! a real producer, and the samples its tests store.

use std::time::{Duration, SystemTime};

use crate::{RunningWriter, WriterConfig};
use fleetmon::identity::Role;
use fleetmon::pb::history_client::HistoryClient;
use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, HostSample, SITE_CHECK_CONTENT_TYPE, SiteCheck};
use fleetmon::testkit::{PgSchema, TestPki, create_topic, kafka_bootstrap, unique_name};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Topics, group and schema of one test, shared by the writers it starts.
pub struct Setup {
    /// The certificates of the writers and their clients.
    pub pki: TestPki,
    /// The schema every writer of this test stores into.
    pub schema: PgSchema,
    /// The writers' configuration (each start may tweak a copy).
    pub config: WriterConfig,
    producer: FutureProducer,
}

/// A writer running in this process.
pub struct TestWriter {
    /// Its addresses and tasks.
    pub running: RunningWriter,
    /// Cancelled to stop it.
    pub shutdown: CancellationToken,
}

impl TestWriter {
    /// Stops the writer and waits until it has written its last batch.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.task.await.unwrap().unwrap();
    }

    /// Waits until this writer has evaluated two more rounds of the timed alert rules
    /// than when called (`fleetmon_writer_alert_rounds_total`): the second began after
    /// the call, so it saw everything committed before it. A "nothing more happens"
    /// assertion made after this gave the rules their chance to act.
    pub async fn after_a_full_round(&self) {
        const ROUNDS: &str = "fleetmon_writer_alert_rounds_total";
        let addr = self.running.metrics_addr;
        let start = fleetmon::testkit::metric_value(addr, ROUNDS).unwrap_or(0.0);
        fleetmon::testkit::wait_for_metric(addr, ROUNDS, start + 2.0).await;
    }
}

impl Setup {
    /// Fresh topics, consumer group, schema and certificates.
    pub async fn new() -> Self {
        fleetmon::tls::install_crypto_provider();
        let bootstrap = kafka_bootstrap();
        let pki = TestPki::new();
        let schema = PgSchema::create().await;
        let mut config = WriterConfig::new(pki.server("writer"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.metrics_listen = "127.0.0.1:0".parse().unwrap();
        config.kafka.bootstrap_servers = bootstrap.clone();
        config.kafka.group_id = unique_name("fleetmon-test-writer");
        config.kafka.host_samples_topic = unique_name("fleetmon-test-host");
        config.kafka.site_checks_topic = unique_name("fleetmon-test-site");
        config.kafka.dead_letter_topic = unique_name("fleetmon-test-dlq");
        config.kafka.checks_topic = unique_name("fleetmon-test-checks");
        config.kafka.audit_topic = unique_name("fleetmon-test-audit");
        config.kafka.credentials_topic = unique_name("fleetmon-test-credentials");
        config.postgres.url = schema.url().to_owned();
        config.postgres.schema = schema.name.clone();
        config.batch.linger_ms = 50;
        // Hour and day host buckets in each batch's transaction, so a test reads them
        // with the rows (`host_rollups_fold_*` tests take the delayed way).
        config.postgres.host_rollup_delay_seconds = 0;
        // Tests restart writers in the same group right away: a member that did not get
        // to leave cleanly (a busy broker) then blocks the rebalance for the session
        // timeout (45 s by default); keep that short here.
        config
            .kafka
            .options
            .insert("session.timeout.ms".to_owned(), "6000".to_owned());
        for topic in [
            &config.kafka.host_samples_topic,
            &config.kafka.site_checks_topic,
            &config.kafka.dead_letter_topic,
        ] {
            create_topic(&bootstrap, topic, 3).await;
        }
        create_topic(&bootstrap, &config.kafka.checks_topic, 1).await;
        create_topic(&bootstrap, &config.kafka.credentials_topic, 1).await;
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        Setup {
            pki,
            schema,
            config,
            producer,
        }
    }

    /// Starts a writer with this set-up's configuration.
    pub async fn start_writer(&self) -> TestWriter {
        self.start_writer_with(|_| {}).await
    }

    /// Starts a writer with this set-up's configuration as `tweak` changes it.
    pub async fn start_writer_with(&self, tweak: impl FnOnce(&mut WriterConfig)) -> TestWriter {
        let mut config = self.config.clone();
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let running = crate::start(config, shutdown.clone())
            .await
            .expect("writer starts");
        TestWriter { running, shutdown }
    }

    /// Produces one record as it is, with `content_type` as its header if given.
    pub async fn produce_raw(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
        content_type: Option<&str>,
    ) {
        let mut record = FutureRecord::to(topic).key(key).payload(value);
        if let Some(content_type) = content_type {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(content_type),
            }));
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }

    /// Writes a central check definition to the checks topic, as the collector does.
    pub async fn produce_definition(&self, definition: &fleetmon::pb::CheckDefinition) {
        self.produce_raw(
            &self.config.kafka.checks_topic,
            &definition.id,
            &definition.encode_to_vec(),
            None,
        )
        .await;
    }

    /// Writes `agent`'s credential, with `labels` (the token's), to the credentials
    /// topic, as a collector does at enrollment.
    pub async fn produce_credential(&self, agent: &str, labels: &[(&str, &str)]) {
        use fleetmon::pb::{AgentCredential, CredentialRecord, credential_record};
        let record = CredentialRecord {
            key: format!("agent/{agent}"),
            version: 1,
            record: Some(credential_record::Record::Agent(AgentCredential {
                name: agent.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            })),
        };
        self.produce_raw(
            &self.config.kafka.credentials_topic,
            &record.key,
            &record.encode_to_vec(),
            None,
        )
        .await;
    }

    /// Produces host samples to the host topic, keyed by agent.
    pub async fn produce_hosts(&self, samples: &[HostSample]) {
        for sample in samples {
            let topic = &self.config.kafka.host_samples_topic;
            self.produce_raw(
                topic,
                &sample.agent_id,
                &sample.encode_to_vec(),
                Some(HOST_SAMPLE_CONTENT_TYPE),
            )
            .await;
        }
    }

    /// Sends every check at once (in order within a partition) and waits for all.
    pub async fn produce_checks(&self, checks: &[SiteCheck]) {
        let topic = &self.config.kafka.site_checks_topic;
        let records: Vec<(String, Vec<u8>)> = checks
            .iter()
            .map(|check| {
                // Keyed as the collector keys them: by check id, else by URL.
                let key = if check.check_id.is_empty() {
                    &check.url
                } else {
                    &check.check_id
                };
                (key.clone(), check.encode_to_vec())
            })
            .collect();
        let sends = records
            .iter()
            .map(|(key, value)| self.produce_raw(topic, key, value, Some(SITE_CHECK_CONTENT_TYPE)));
        futures::future::join_all(sends).await;
    }

    /// Produces one step of a scripted sequence of central check runs (runs dated
    /// alike) and waits until they are stored: `stored` results of their checks before
    /// them. One step per batch, as in production where runs seconds apart never share
    /// one: the quorum is decided once per batch. Returns the count after them.
    pub async fn produce_step(&self, runs: &[SiteCheck], stored: i64) -> i64 {
        self.produce_checks(runs).await;
        let ids: Vec<String> = runs.iter().map(|r| format!("'{}'", r.check_id)).collect();
        let after = stored + runs.len() as i64;
        self.wait_for(
            &format!(
                "SELECT coalesce(sum(results), 0)::bigint FROM check_days WHERE check_id IN ({})",
                ids.join(",")
            ),
            after,
        )
        .await;
        after
    }

    /// One scalar from the test schema.
    pub async fn scalar(&self, sql: &str) -> i64 {
        self.schema.scalar(sql).await
    }

    /// One text from the test schema (the first column of the one row `sql` returns).
    pub async fn text(&self, sql: &str) -> String {
        self.schema
            .connect()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Waits until `sql` returns `expected`, or panics after 60 s with the last value.
    pub async fn wait_for(&self, sql: &str, expected: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.scalar(sql).await;
            if value == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{sql}` is {value}, expected {expected} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A History client of `writer` with a certificate of `role`.
    pub fn history(&self, writer: &TestWriter, role: Role) -> HistoryClient<Channel> {
        let files = self.pki.client(role, "ops");
        let url = format!("https://{}", writer.running.grpc_addr);
        HistoryClient::new(
            fleetmon::tls::endpoint(&url, &files)
                .unwrap()
                .connect_lazy(),
        )
    }
}

/// A header of a record read back from a topic, as text.
pub fn header(record: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::{Headers as _, Message as _};
    record
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// `secs` seconds ago, on a whole second (Postgres keeps microseconds only).
pub fn seconds_ago(secs: u64) -> SystemTime {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(now - secs)
}

/// `t` as a protobuf timestamp.
pub fn at(t: SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(t))
}

/// A fully populated host sample.
pub fn host(agent: &str, seq: u64, ts: SystemTime) -> HostSample {
    HostSample {
        agent_id: agent.to_owned(),
        stream_id: "stream-1".to_owned(),
        seq,
        sampled_at: at(ts),
        hostname: format!("{agent}.example"),
        os_name: "Debian GNU/Linux".to_owned(),
        os_version: "12".to_owned(),
        kernel_version: "6.1.0".to_owned(),
        agent_version: "0.1.0".to_owned(),
        cpu_usage_percent: 12.5,
        cpu_core_usage_percent: vec![10.0, 15.0],
        load_average_1m: 0.5,
        load_average_5m: 0.25,
        load_average_15m: 0.125,
        memory_total_bytes: 8 << 30,
        memory_used_bytes: 3 << 30,
        memory_available_bytes: 5 << 30,
        swap_total_bytes: 1 << 30,
        swap_used_bytes: 1 << 20,
        disk_total_bytes: 100 << 30,
        disk_used_bytes: 40 << 30,
        disk_available_bytes: Some(50 << 30),
        disks: vec![fleetmon::pb::DiskUsage {
            mount_point: "/".to_owned(),
            device: "/dev/vda1".to_owned(),
            file_system: "ext4".to_owned(),
            total_bytes: 100 << 30,
            used_bytes: 40 << 30,
            available_bytes: 50 << 30,
        }],
        network_rx_bytes: 1_000_000,
        network_tx_bytes: 2_000_000,
        network_rx_bytes_per_second: 1500.0,
        network_tx_bytes_per_second: 2500.0,
        interfaces: vec![fleetmon::pb::NetworkInterface {
            name: "eth0".to_owned(),
            rx_bytes: 1_000_000,
            tx_bytes: 2_000_000,
            rx_bytes_per_second: 1500.0,
            tx_bytes_per_second: 2500.0,
        }],
        process_count: 123,
        uptime_seconds: 86_400,
        interval_seconds: 0,
        clock_offset_ms: None,
        processes: vec![
            fleetmon::pb::ProcessUsage {
                pid: 4242,
                name: "postgres".to_owned(),
                user: "postgres".to_owned(),
                command_line: "postgres: checkpointer".to_owned(),
                cpu_usage_percent: 150.5,
                resident_bytes: 2 << 30,
                threads: 1,
                started_at: at(ts - Duration::from_secs(3600)),
                cpu_rank: 1,
                memory_rank: 1,
            },
            fleetmon::pb::ProcessUsage {
                pid: 1,
                name: "systemd".to_owned(),
                user: "root".to_owned(),
                command_line: "/sbin/init".to_owned(),
                cpu_usage_percent: 0.5,
                resident_bytes: 12 << 20,
                threads: 1,
                started_at: None,
                cpu_rank: 2,
                memory_rank: 0,
            },
        ],
    }
}

/// Seqs unique within the test process ([`next_seq`]).
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A seq no other sample of this test process has (one stream per agent).
pub fn next_seq() -> u64 {
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One run of central check `check_id` (an https check of `https://ID.example/`) at
/// location `agent`, taken at `ts`: passing with 200 or failing with 503.
pub fn check_run(check_id: &str, agent: &str, ts: SystemTime, ok: bool) -> SiteCheck {
    let url = format!("https://{check_id}.example/");
    let mut row = check(
        agent,
        next_seq(),
        ts,
        &url,
        Some(if ok { 200 } else { 503 }),
        ok,
        20.0,
    );
    row.check_id = check_id.to_owned();
    row.check_version = 1;
    row
}

/// A central http check `id` run by every agent every `interval_seconds`, that a
/// scripted sequence decides at once: DOWN at a location on its first failure, UP on
/// its first success, DOWN as a check when two locations say so.
pub fn quorum_of_two(id: &str, interval_seconds: u32) -> fleetmon::pb::CheckDefinition {
    use fleetmon::pb::{Alerting, Assignment, CheckDefinition, HttpCheck, check_definition};
    CheckDefinition {
        id: id.to_owned(),
        version: 1,
        interval_seconds,
        assignment: Some(Assignment {
            all: true,
            ..Default::default()
        }),
        kind: Some(check_definition::Kind::Http(HttpCheck {
            url: format!("https://{id}.example/"),
            ..Default::default()
        })),
        alerting: Some(Alerting {
            failure_threshold: 1,
            success_threshold: 1,
            quorum: 2,
        }),
        ..Default::default()
    }
}

/// A site check with the given outcome.
pub fn check(
    agent: &str,
    seq: u64,
    ts: SystemTime,
    url: &str,
    status: Option<u32>,
    ok: bool,
    rt_ms: f64,
) -> SiteCheck {
    SiteCheck {
        agent_id: agent.to_owned(),
        stream_id: "stream-1".to_owned(),
        seq,
        checked_at: at(ts),
        url: url.to_owned(),
        method: "GET".to_owned(),
        status_code: status,
        ok,
        failure: if ok {
            0
        } else {
            fleetmon::pb::CheckFailure::StatusMismatch as i32
        },
        error_message: if ok {
            String::new()
        } else {
            "unexpected status".to_owned()
        },
        response_time_ms: rt_ms,
        time_to_first_byte_ms: Some(rt_ms / 2.0),
        regex: "Welcome".to_owned(),
        regex_matched: Some(ok),
        matched_text: if ok {
            "Welcome".to_owned()
        } else {
            String::new()
        },
        body_bytes: 1234,
        final_url: url.to_owned(),
        tls_cert_not_after: at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
        check_id: "shop-home".to_owned(),
        check_version: 2,
        interval_seconds: 0,
    }
}
