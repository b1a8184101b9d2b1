//! The fault suite: the real collector, writer and agents as processes, a real
//! Kafka-protocol broker and a real Postgres; one fault per test.
//!
//! Every agent numbers its samples `(stream_id, seq)` and logs, when it stops, the last
//! seq it gave and how many were still unacknowledged, and logs every run of seqs it
//! dropped because its outbox was full. After each scenario, for every agent and
//! stream: the seqs stored in Postgres are exactly `1..=last_seq` minus the reported
//! drops (a dropped sample may still have arrived when it was in flight at the cut),
//! no `(agent, stream, seq)` is stored twice, and the check rollups (minute, hour)
//! and host rollups (minute, hour, day) count every raw row. Each test prints one line of the table in docs/RELIABILITY.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleetmon::identity::Role;
use fleetmon::testkit::{
    KafkaCluster, PgCluster, PgSchema, TestPki, free_port, kafka_bootstrap, unique_name,
};
use fleetmon::testkit::{Processes, binary, eventually, wait_serving};

/// Sites each agent checks every second (plus one host sample a second).
const SITES_PER_AGENT: usize = 4;

/// One pipeline: collector, writers and agents as processes, sharing topics and a schema.
struct Rig {
    pki: TestPki,
    /// Configs, spools and every process's log: kept under the target directory
    /// (`faults/<scenario>-<hex>`) for reading after a failure.
    logs: LogDir,
    schema: PgSchema,
    kafka: String,
    /// Replicas of every topic the collector and writer create (3 on a cluster).
    replicas: i32,
    collector_port: u16,
    /// Every collector the agents are given (the first is `collector_port`).
    collector_ports: Vec<u16>,
    host_topic: String,
    site_topic: String,
    dead_letter_topic: String,
    group: String,
    /// Lines added to each writer's `[kafka]` (e.g. its `instance_id`).
    writer_kafka: String,
    /// Each writer's `session.timeout.ms` (short by default: a killed writer's
    /// partitions move on quickly).
    writer_session_ms: u32,
    site_port: u16,
    procs: Processes,
    agents: Vec<String>,
    /// `agent_silent` alerts once every row was stored (-1 before): the agents have
    /// stopped by then, and waiting for the rollups afterwards lets the writer call
    /// them silent, rightly.
    silent_when_stored: std::sync::atomic::AtomicI64,
}

/// A directory under the target directory, named after the test.
struct LogDir(PathBuf);

impl LogDir {
    fn new() -> Self {
        let test = std::thread::current()
            .name()
            .unwrap_or("faults")
            .replace("::", "-");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("faults")
            .join(unique_name(&test));
        std::fs::create_dir_all(&dir).unwrap();
        LogDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

/// What one agent may be started with.
#[derive(Default, Clone)]
struct AgentOptions {
    /// Outbox capacity (default: the agent's default).
    capacity: Option<usize>,
    /// Keep unacknowledged samples on disk here.
    spool: Option<PathBuf>,
}

impl Rig {
    async fn new(kafka: &str, pg_url: &str) -> Rig {
        let collector_port = free_port();
        Rig {
            pki: TestPki::new(),
            logs: LogDir::new(),
            schema: PgSchema::create_in(pg_url).await,
            kafka: kafka.to_owned(),
            replicas: 1,
            collector_port,
            collector_ports: vec![collector_port],
            host_topic: unique_name("faults-host"),
            site_topic: unique_name("faults-site"),
            dead_letter_topic: unique_name("faults-dlq"),
            group: unique_name("faults-writer"),
            writer_kafka: String::new(),
            writer_session_ms: 6000,
            site_port: local_site().await,
            procs: Processes::default(),
            agents: Vec::new(),
            silent_when_stored: std::sync::atomic::AtomicI64::new(-1),
        }
    }

    /// A rig on `cluster`: with 3 nodes, topics get 3 replicas and
    /// `min.insync.replicas=2`, so a sample is acknowledged only once two brokers have it.
    async fn on_cluster(cluster: &KafkaCluster) -> Rig {
        let mut rig = Rig::new(cluster.bootstrap(), &fleetmon::testkit::pg_url()).await;
        rig.replicas = if cluster.nodes() >= 3 { 3 } else { 1 };
        rig
    }

    fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.logs.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn start_collector(&mut self) {
        self.start_collector_as("collector", self.collector_port);
    }

    fn start_collector_as(&mut self, name: &str, port: u16) {
        let certs = self.pki.dir();
        let config = self.write_config(
            name,
            &format!(
                "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
                 [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n\
                 [kafka]\nbootstrap_servers = \"{kafka}\"\nhost_samples_topic = \"{host}\"\n\
                 site_checks_topic = \"{site}\"\npartitions = 4\nreplication_factor = {replicas}\n{min_isr}",
                replicas = self.replicas,
                min_isr = if self.replicas >= 3 { "min_insync_replicas = 2\n" } else { "" },
                cert = certs.join("collector.pem").display(),
                key = certs.join("collector-key.pem").display(),
                ca = certs.join("ca.pem").display(),
                kafka = self.kafka,
                host = self.host_topic,
                site = self.site_topic,
            ),
        );
        self.procs.spawn(
            name,
            self.logs.path(),
            Command::new(binary("fleetmon-collector"))
                .arg("--config")
                .arg(config),
        );
        self.procs.wait_port(name, port);
        wait_serving(port, &self.pki.client(Role::Operator, "ops"));
    }

    fn start_writer(&mut self, name: &str) {
        let certs = self.pki.dir();
        let port = free_port();
        let config = self.write_config(
            name,
            &format!(
                "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
                 [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n\
                 [kafka]\nbootstrap_servers = \"{kafka}\"\ngroup_id = \"{group}\"\n\
                 host_samples_topic = \"{host}\"\nsite_checks_topic = \"{site}\"\ndead_letter_topic = \"{dlq}\"\nreplication_factor = {replicas}\n{extra}\
                 [kafka.options]\n\"session.timeout.ms\" = {session}\n\"heartbeat.interval.ms\" = 1000\n\
                 [postgres]\nurl = \"{pg}\"\nschema = \"{schema}\"\nhost_rollup_delay_seconds = 1\n\
                 [batch]\nmax_rows = 500\nlinger_ms = 100\n",
                cert = certs.join("writer.pem").display(),
                key = certs.join("writer-key.pem").display(),
                ca = certs.join("ca.pem").display(),
                kafka = self.kafka,
                group = self.group,
                host = self.host_topic,
                site = self.site_topic,
                dlq = self.dead_letter_topic,
                replicas = self.replicas,
                extra = self.writer_kafka,
                session = self.writer_session_ms,
                pg = self.schema.url(),
                schema = self.schema.name,
            ),
        );
        self.procs.spawn(
            name,
            self.logs.path(),
            Command::new(binary("fleetmon-writer"))
                .arg("--config")
                .arg(config),
        );
        self.procs.wait_port(name, port);
        wait_serving(port, &self.pki.client(Role::Operator, "ops"));
    }

    fn start_agent(&mut self, name: &str, options: &AgentOptions) {
        let files = self.pki.client(Role::Agent, name);
        let mut text = format!(
            "host_interval_seconds = 1\nhostname = \"{name}.host\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             log_format = \"json\"\n\
             [collector]\nendpoints = [{endpoints}]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             [outbox]\nbatch_interval_ms = 200\nmax_backoff_seconds = 1\n",
            endpoints = self
                .collector_ports
                .iter()
                .map(|port| format!("\"https://127.0.0.1:{port}\""))
                .collect::<Vec<_>>()
                .join(", "),
            ca = files.ca.display(),
            cert = files.cert.display(),
            key = files.key.display(),
        );
        if let Some(capacity) = options.capacity {
            text.push_str(&format!("capacity = {capacity}\n"));
        }
        if let Some(spool) = &options.spool {
            text.push_str(&format!("spool_dir = \"{}\"\n", spool.display()));
        }
        for site in 0..SITES_PER_AGENT {
            text.push_str(&format!(
                "[[sites]]\nurl = \"http://127.0.0.1:{}/{name}/{site}\"\ninterval_seconds = 1\nregex = \"ok (\\\\w+)\"\n",
                self.site_port
            ));
        }
        let config = self.write_config(name, &text);
        self.procs.spawn(
            name,
            self.logs.path(),
            Command::new(binary("fleetmon-agent"))
                .arg("--config")
                .arg(config),
        );
        if !self.agents.iter().any(|a| a == name) {
            self.agents.push(name.to_owned());
        }
    }

    /// Collector, one writer and `agents` agents, and rows arriving.
    async fn start_all(&mut self, agents: &[&str], options: &AgentOptions) {
        self.start_collector();
        self.start_writer("writer");
        for agent in agents {
            self.start_agent(agent, options);
        }
        self.rows_arrive().await;
    }

    /// Waits until more rows than now are stored (the pipeline is flowing).
    async fn rows_arrive(&self) {
        let now = self.schema.scalar(STORED_ROWS).await;
        eventually(&self.schema, STORED_ROWS, "rows arrive", |n| n > now).await;
    }

    /// The end of every scenario, once the fault is over: rows flow again, traffic
    /// runs `seconds` more, the agents send what they hold and stop gracefully, then
    /// every sample is checked ([`Rig::verify`]).
    async fn recovered(&mut self, seconds: u64, scenario: &str) -> Tally {
        self.rows_arrive().await;
        hold(seconds).await;
        self.agents_caught_up().await;
        self.stop_agents();
        self.verify(scenario).await
    }

    /// Waits (30 s at most) until the process `name` logged `message` (its JSON log).
    async fn logged(&self, name: &str, message: &str) {
        let log = Processes::log(self.logs.path(), name);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|event| event["message"] == message)
        {
            assert!(
                Instant::now() < deadline,
                "{name} did not log `{message}` within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (60 s at most) until every agent has no more unacknowledged samples than
    /// two seconds' worth: after a fault the streams have caught up, so that a graceful
    /// stop (5 s of draining) ends with nothing unacknowledged. Read from each agent's
    /// `fleetmon_agent_queue_depth`, at the address its log names.
    async fn agents_caught_up(&self) {
        let backlog = 2 * (1 + SITES_PER_AGENT) as i64;
        let deadline = Instant::now() + Duration::from_secs(60);
        for agent in &self.agents {
            let log = Processes::log(self.logs.path(), agent);
            let Some(addr) = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|event| event["message"] == "agent running")
                .filter_map(|event| {
                    event["metrics_addr"]
                        .as_str()?
                        .parse::<std::net::SocketAddr>()
                        .ok()
                })
                .next_back()
            else {
                continue;
            };
            loop {
                let depth = std::net::TcpStream::connect(addr).ok().and_then(|_| {
                    fleetmon::testkit::metric_value(addr, "fleetmon_agent_queue_depth")
                        .map(|v| v as i64)
                });
                match depth {
                    Some(depth) if depth > backlog && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Some(depth) if depth > backlog => {
                        println!("{agent}: {depth} samples still unacknowledged after 60 s");
                        break;
                    }
                    _ => break,
                }
            }
        }
    }

    /// Stops every agent gracefully (they drain their outbox first).
    fn stop_agents(&mut self) {
        for agent in self.agents.clone() {
            self.procs.stop(&agent);
        }
    }

    /// Checks what the module documentation promises and returns the table line.
    async fn verify(&self, scenario: &str) -> Tally {
        let mut expected: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        let mut dropped: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        let mut tally = Tally::default();
        for agent in &self.agents {
            let report = AgentReport::read(&Processes::log(self.logs.path(), agent));
            for (stream, last_seq) in &report.last_seq {
                let key = (agent.clone(), stream.clone());
                let drops = report.dropped.get(stream).cloned().unwrap_or_default();
                tally.sent += last_seq;
                tally.dropped += drops.len() as u64;
                expected.insert(
                    key.clone(),
                    (1..=*last_seq).filter(|s| !drops.contains(s)).collect(),
                );
                dropped.insert(key, drops);
            }
        }
        let want: usize = expected.values().map(BTreeSet::len).sum();
        let stored = self.stored_when_settled(want).await;
        self.silent_when_stored.store(
            self.silent_alerts().await,
            std::sync::atomic::Ordering::Relaxed,
        );
        for (key, seqs) in &stored {
            let wanted = expected.get(key);
            assert!(
                wanted.is_some(),
                "{scenario}: rows of an unknown stream {key:?}"
            );
            for (seq, count) in seqs {
                if *count > 1 {
                    tally.duplicates += count - 1;
                }
                let known = wanted.is_some_and(|w| w.contains(seq))
                    || dropped.get(key).is_some_and(|d| d.contains(seq));
                assert!(known, "{scenario}: {key:?} seq {seq} stored but never sent");
                tally.stored += count;
            }
        }
        let mut lost = Vec::new();
        for (key, seqs) in &expected {
            let have = stored.get(key);
            for seq in seqs {
                if !have.is_some_and(|h| h.contains_key(seq)) {
                    lost.push((key.clone(), *seq));
                }
            }
        }
        tally.lost = lost.len() as u64;
        tally.delivered_despite_drop = tally.stored as i64 - want as i64 - tally.duplicates as i64;
        let rollups = self.rollup_mismatches().await;
        println!("{}", tally.line(scenario));
        assert!(lost.is_empty(), "{scenario}: lost {lost:?}");
        assert_eq!(tally.duplicates, 0, "{scenario}: duplicate rows");
        assert!(
            rollups.is_empty(),
            "{scenario}: rollups ≠ raw rows: {rollups:?}"
        );
        assert!(tally.sent > 0);
        tally
    }

    /// Stored `(agent, stream) → seq → rows`, once at least `want` rows are there and
    /// nothing changed for two seconds (or 90 s passed).
    async fn stored_when_settled(
        &self,
        want: usize,
    ) -> BTreeMap<(String, String), BTreeMap<u64, u64>> {
        let db = self.schema.connect().await;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = usize::MAX;
        let mut stable_since = Instant::now();
        loop {
            let rows = db
                .query(
                    "SELECT agent_id, stream_id, seq, count(*) FROM ( \
                       SELECT agent_id, stream_id, seq FROM host_samples \
                       UNION ALL SELECT agent_id, stream_id, seq FROM site_checks) s \
                     GROUP BY 1, 2, 3",
                    &[],
                )
                .await
                .unwrap();
            let total: usize = rows.iter().map(|r| r.get::<_, i64>(3) as usize).sum();
            if total != last {
                last = total;
                stable_since = Instant::now();
            }
            let settled = total >= want && stable_since.elapsed() >= Duration::from_secs(2);
            if settled || Instant::now() > deadline {
                let mut stored: BTreeMap<(String, String), BTreeMap<u64, u64>> = BTreeMap::new();
                for row in rows {
                    stored
                        .entry((row.get(0), row.get(1)))
                        .or_default()
                        .insert(row.get::<_, i64>(2) as u64, row.get::<_, i64>(3) as u64);
                }
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// No agent was called silent: the agents sampled all along, and what waited in
    /// Kafka while the writer was down proves it (the writer judges silence only up
    /// to what it stored).
    /// Checked as of when every row was stored, if [`Rig::verify`] ran.
    async fn no_agent_called_silent(&self) {
        let silent = match self
            .silent_when_stored
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            -1 => self.silent_alerts().await,
            counted => counted,
        };
        assert_eq!(
            silent, 0,
            "an agent was called silent while its samples waited in Kafka"
        );
    }

    async fn silent_alerts(&self) -> i64 {
        self.schema
            .scalar("SELECT count(*) FROM alerts WHERE kind = 'agent_silent'")
            .await
    }

    /// URLs whose check rollup counts, and agents whose host rollup counts, differ
    /// from their raw rows, per resolution.
    async fn rollup_mismatches(&self) -> Vec<(String, String, i64, i64)> {
        let db = self.schema.connect().await;
        // Host buckets are worked out up to a second after their rows here.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pending: i64 = db
                .query_one("SELECT count(*) FROM host_rollup_pending", &[])
                .await
                .unwrap()
                .get(0);
            assert!(
                pending == 0 || Instant::now() < deadline,
                "{pending} host rollup minutes still to fold after 60 s"
            );
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        db.query(
            "SELECT r.resolution, c.url, c.checks, coalesce(r.checks, 0)::bigint \
             FROM (SELECT url, count(*) AS checks FROM site_checks GROUP BY url) c \
             CROSS JOIN (VALUES ('minute'), ('hour')) v(resolution) \
             LEFT JOIN (SELECT url, resolution, sum(checks) AS checks FROM site_check_rollups GROUP BY 1, 2) r \
               ON r.url = c.url AND r.resolution = v.resolution \
             WHERE coalesce(r.checks, 0) <> c.checks \
             UNION ALL \
             SELECT v.resolution, h.agent_id, h.samples, coalesce(r.samples, 0)::bigint \
             FROM (SELECT agent_id, count(*) AS samples FROM host_samples GROUP BY agent_id) h \
             CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) v(resolution) \
             LEFT JOIN (SELECT agent_id, resolution, sum(samples) AS samples FROM host_rollups GROUP BY 1, 2) r \
               ON r.agent_id = h.agent_id AND r.resolution = v.resolution \
             WHERE coalesce(r.samples, 0) <> h.samples",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
    }
}

/// What an agent's JSON log says about its streams.
#[derive(Debug, Default)]
struct AgentReport {
    /// Stream id → last seq given (from `outbox closed`).
    last_seq: BTreeMap<String, u64>,
    /// Stream id → seqs reported dropped.
    dropped: BTreeMap<String, BTreeSet<u64>>,
}

impl AgentReport {
    fn read(log: &Path) -> AgentReport {
        let text = std::fs::read_to_string(log).unwrap();
        let mut report = AgentReport::default();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let stream = event["stream_id"].as_str().unwrap_or_default().to_owned();
            match event["message"].as_str() {
                Some("outbox closed") => {
                    assert_eq!(
                        event["unacknowledged"], 0,
                        "an agent stopped with unacknowledged samples: {line}"
                    );
                    let last = event["last_seq"].as_u64().unwrap();
                    let entry = report.last_seq.entry(stream).or_default();
                    *entry = (*entry).max(last);
                }
                Some("samples dropped: the outbox was full") => {
                    let first = event["first_seq"].as_u64().unwrap();
                    let last = event["last_seq"].as_u64().unwrap();
                    report
                        .dropped
                        .entry(stream)
                        .or_default()
                        .extend(first..=last);
                }
                _ => {}
            }
        }
        assert!(
            !report.last_seq.is_empty(),
            "{} has no `outbox closed` line:\n{text}",
            log.display()
        );
        report
    }
}

/// One line of the reliability table.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    dropped: u64,
    stored: u64,
    lost: u64,
    duplicates: u64,
    /// Reported dropped, yet stored: in flight when the link was cut.
    delivered_despite_drop: i64,
}

impl Tally {
    fn line(&self, scenario: &str) -> String {
        format!(
            "| {scenario} | sent {} | dropped (reported) {} | stored {} | lost {} | duplicates {} | dropped yet delivered {} |",
            self.sent,
            self.dropped,
            self.stored,
            self.lost,
            self.duplicates,
            self.delivered_despite_drop
        )
    }
}

/// The sites the agents check: every path answers `ok <path>`.
async fn local_site() -> u16 {
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        format!("ok {}", uri.path().replace('/', "_"))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A duration that is part of a fault scenario (how long a broker stays frozen, how
/// long traffic runs after a recovery before the agents stop): what it leads to is
/// then waited for as a fact (`rows_arrive`, `agents_caught_up`, `verify`).
async fn hold(seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

const AGENTS: [&str; 2] = ["fault-a1", "fault-a2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_killed_mid_stream_and_restarted() {
    let mut rig = Rig::new(&kafka_bootstrap(), &fleetmon::testkit::pg_url()).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    rig.procs.kill("writer");
    // Restarted within the dead member's session (6 s), as a supervisor would: the
    // new member's join rebalances the group and it gets every partition.
    hold(1).await;
    rig.start_writer("writer");
    rig.recovered(2, "writer SIGKILL, restarted").await;
    rig.no_agent_called_silent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_writer_killed_takes_its_partitions_back_at_once_and_a_twin_is_fenced() {
    let mut rig = Rig::new(&kafka_bootstrap(), &fleetmon::testkit::pg_url()).await;
    // A session far longer than the wait below: restarted after a SIGKILL, a writer
    // without a name would store nothing until its dead self's session expired.
    rig.writer_kafka = "instance_id = \"fault-writer-1\"\n".to_owned();
    rig.writer_session_ms = 120_000;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    rig.procs.kill("writer");
    let before = stored_rows(&rig).await;
    let restarted = Instant::now();
    rig.start_writer("writer");
    while stored_rows(&rig).await < before + 20 {
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "the restarted writer stored nothing within half its session: it waited for its dead self"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "named writer restarted after SIGKILL: storing again after {:.1} s (session 120 s)",
        restarted.elapsed().as_secs_f64()
    );
    // A second writer under the same name fences the first, which stops and says why.
    rig.start_writer("writer-twin");
    let log = Processes::log(rig.logs.path(), "writer");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("another writer joined the group with this kafka.instance_id")
    {
        assert!(
            Instant::now() < deadline,
            "the fenced writer did not say why within 60 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.recovered(2, "named writer SIGKILL, restarted; then fenced by a twin")
        .await;
    rig.no_agent_called_silent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_while_agents_stream() {
    let mut rig = Rig::new(&kafka_bootstrap(), &fleetmon::testkit::pg_url()).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    rig.procs.kill("collector");
    hold(3).await;
    rig.start_collector();
    rig.recovered(2, "collector SIGKILL, restarted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_paused_longer_than_linger_and_batch_interval() {
    // A broker of its own: freezing the suite's broker would stall every other test.
    let broker = KafkaCluster::start(1);
    let mut rig = Rig::on_cluster(&broker).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    // Frozen 8 s: far longer than the producer's linger (20 ms), the agents' batch
    // interval (200 ms) and the writer's session timeout (6 s).
    broker.pause(1);
    hold(8).await;
    broker.resume(1);
    rig.recovered(2, "broker SIGSTOP 8 s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_terminated_and_server_crashed() {
    // A server of its own: crashing the shared one would fail every other test.
    let cluster = PgCluster::start();
    let mut rig = Rig::new(&kafka_bootstrap(), &cluster.url()).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    let admin = rig.schema.connect().await;
    let terminated: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(terminated > 0, "the writer had connections to terminate");
    drop(admin);
    rig.rows_arrive().await;
    cluster.crash_and_restart();
    rig.recovered(
        2,
        "Postgres connections terminated, then server crash + restart",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_longer_than_its_queue_holds_reports_exactly_what_it_dropped() {
    let mut rig = Rig::new(&kafka_bootstrap(), &fleetmon::testkit::pg_url()).await;
    let small = AgentOptions {
        capacity: Some(10),
        spool: None,
    };
    rig.start_all(&["fault-small"], &small).await;
    rig.procs.kill("collector");
    // 5 samples a second for 6 s against room for 10.
    hold(6).await;
    rig.start_collector();
    let tally = rig
        .recovered(2, "agent cut off 6 s with room for 10 samples")
        .await;
    assert!(tally.dropped >= 10, "the outbox overflowed: {tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_agent_killed_while_the_collector_is_down_resends_everything() {
    let mut rig = Rig::new(&kafka_bootstrap(), &fleetmon::testkit::pg_url()).await;
    let spool = rig.logs.path().join("spool");
    let spooled = AgentOptions {
        capacity: None,
        spool: Some(spool),
    };
    rig.start_all(&["fault-spooled"], &spooled).await;
    rig.procs.kill("collector");
    hold(3).await;
    rig.procs.kill("fault-spooled");
    rig.start_agent("fault-spooled", &spooled);
    hold(2).await;
    rig.start_collector();
    let tally = rig
        .recovered(2, "spooled agent SIGKILL while the collector is down")
        .await;
    let report = AgentReport::read(&Processes::log(rig.logs.path(), "fault-spooled"));
    assert_eq!(
        report.last_seq.len(),
        1,
        "the restarted agent continued its stream"
    );
    assert_eq!(tally.dropped, 0);
}

/// The survivor must take the dead member's partitions once its session expires (6 s).
/// (tansu 0.6.0 never hands them over: docs/RELIABILITY.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_in_one_group_one_killed_during_the_rebalance() {
    let mut rig = Rig::new(&kafka_bootstrap(), &fleetmon::testkit::pg_url()).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    // The second member's join starts a rebalance; the first dies in the middle of it.
    rig.start_writer("writer-2");
    rig.logged("writer-2", "consuming").await;
    rig.procs.kill("writer");
    rig.rows_arrive().await;
    hold(8).await;
    rig.rows_arrive().await;
    rig.agents_caught_up().await;
    rig.stop_agents();
    rig.verify("two writers, one SIGKILL during the rebalance")
        .await;
}

/// Rows stored now (host samples and site checks).
const STORED_ROWS: &str =
    "SELECT (SELECT count(*) FROM host_samples) + (SELECT count(*) FROM site_checks)";

async fn stored_rows(rig: &Rig) -> i64 {
    rig.schema.scalar(STORED_ROWS).await
}

// On a 3-node cluster: every topic has 3 replicas and min.insync.replicas=2. One node
// may fail at any time; two down stop acknowledgements (agents buffer) until one returns.
// These tests run one at a time (.config/nextest.toml): three JVMs each.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_partition_leader_killed_while_agents_stream_then_restarted() {
    let cluster = KafkaCluster::start(3);
    let mut rig = Rig::on_cluster(&cluster).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    let leader = cluster.leader(&rig.host_topic, 0);
    cluster.kill(leader);
    // Two of three serve: leadership moves and samples keep flowing meanwhile.
    hold(2).await;
    rig.rows_arrive().await;
    cluster.restart(leader);
    let tally = rig
        .recovered(2, "3 brokers: partition leader SIGKILL, restarted")
        .await;
    assert_eq!(tally.dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_partition_leader_frozen_past_the_session_timeout() {
    let cluster = KafkaCluster::start(3);
    let mut rig = Rig::on_cluster(&cluster).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    let leader = cluster.leader(&rig.host_topic, 0);
    // Longer than the writer's session (6 s) and the brokers' own session with the
    // controller (9 s): the node is fenced and its partitions move.
    cluster.pause(leader);
    hold(12).await;
    cluster.resume(leader);
    let tally = rig
        .recovered(3, "3 brokers: partition leader SIGSTOP 12 s")
        .await;
    assert_eq!(tally.dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_brokers_down_stop_acknowledgements_until_one_returns() {
    let cluster = KafkaCluster::start(3);
    let mut rig = Rig::on_cluster(&cluster).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    cluster.kill(1);
    cluster.kill(2);
    // Nothing can reach two replicas: nothing is acknowledged, so nothing new is
    // stored; the agents keep what they sample.
    hold(5).await;
    let during = stored_rows(&rig).await;
    hold(5).await;
    assert_eq!(
        stored_rows(&rig).await,
        during,
        "rows stored while two of three brokers were down"
    );
    cluster.restart(1);
    rig.rows_arrive().await;
    cluster.restart(2);
    hold(2).await;
    rig.agents_caught_up().await;
    rig.stop_agents();
    let tally = rig
        .verify("3 brokers: two SIGKILL for 10 s, then back one by one")
        .await;
    assert_eq!(tally.dropped, 0, "the agents buffered the outage");
}

/// The last assignment a writer's log reports after `after`: when, and how many
/// partitions (the writer's whole assignment: the group rebalances eagerly).
fn last_assignment(
    log: &Path,
    after: time::OffsetDateTime,
) -> Option<(time::OffsetDateTime, usize)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["message"] == "partitions assigned")
        .filter_map(|entry| {
            let at = entry["timestamp"].as_str()?;
            let at =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .ok()?;
            let count = entry["partitions"].as_str()?.matches("faults-").count();
            Some((at, count))
        })
        .rfind(|(at, _)| *at > after)
}

/// Waits until `writer`'s log reports an assignment of `partitions` after `after`;
/// returns the seconds from `after` to it.
async fn assigned_all(
    rig: &Rig,
    writer: &str,
    partitions: usize,
    after: time::OffsetDateTime,
) -> f64 {
    let log = Processes::log(rig.logs.path(), writer);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((at, count)) = last_assignment(&log, after)
            && count == partitions
        {
            return (at - after).as_seconds_f64();
        }
        assert!(
            Instant::now() < deadline,
            "{writer} was not assigned all {partitions} partitions within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_stopped_cleanly_leaves_the_group_at_once() {
    let mut rig = Rig::new(&kafka_bootstrap(), &fleetmon::testkit::pg_url()).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    let joined = time::OffsetDateTime::now_utc();
    rig.start_writer("writer-2");
    let log = Processes::log(rig.logs.path(), "writer-2");
    eventually_true("writer-2 gets partitions", || {
        last_assignment(&log, joined).is_some_and(|(_, count)| count > 0)
    })
    .await;
    let stopped = time::OffsetDateTime::now_utc();
    rig.procs.stop("writer");
    let took = assigned_all(&rig, "writer-2", 8, stopped).await;
    println!("writer-2 took over all 8 partitions {took:.1} s after writer was stopped");
    // Without a LeaveGroup the survivor would wait for the session timeout (6 s).
    assert!(
        took < 6.0,
        "the stopped writer left the group at once: {took:.1} s"
    );
    rig.recovered(1, "two writers, one stopped with SIGTERM")
        .await;
}

/// Polls `condition` every 200 ms for up to 60 s.
async fn eventually_true(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_collectors_and_two_writers_lose_one_of_each() {
    let cluster = KafkaCluster::start(3);
    let mut rig = Rig::on_cluster(&cluster).await;
    let second = free_port();
    rig.collector_ports.push(second);
    rig.start_collector();
    rig.start_collector_as("collector-2", second);
    rig.start_writer("writer");
    rig.start_writer("writer-2");
    for agent in AGENTS {
        rig.start_agent(agent, &AgentOptions::default());
    }
    rig.rows_arrive().await;
    hold(2).await;

    // The agents streaming to the first collector fail over to the second.
    rig.procs.kill("collector");
    hold(2).await;
    rig.rows_arrive().await;

    // The surviving writer is assigned all 8 partitions once the dead one's session
    // (6 s) expires.
    let killed = time::OffsetDateTime::now_utc();
    rig.procs.kill("writer");
    let took = assigned_all(&rig, "writer-2", 8, killed).await;
    println!("writer-2 took over all 8 partitions {took:.1} s after writer was killed");
    let tally = rig
        .recovered(
            2,
            "3 brokers, 2 collectors, 2 writers: one collector, then one writer SIGKILL",
        )
        .await;
    assert_eq!(tally.dropped, 0);
}

/// Waits until the stored row count has not changed for `quiet`.
async fn rows_settle(rig: &Rig, quiet: Duration) -> i64 {
    let mut last = stored_rows(rig).await;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = stored_rows(rig).await;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return now;
        }
        assert!(Instant::now() < deadline, "rows never settled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_broker_replaced_by_an_empty_one_loses_nothing_unacknowledged() {
    let cluster = KafkaCluster::start(1);
    let mut rig = Rig::on_cluster(&cluster).await;
    rig.start_all(&AGENTS, &AgentOptions::default()).await;
    // Frozen agents keep what is not acknowledged; everything acknowledged gets stored
    // before the broker loses it.
    for agent in AGENTS {
        rig.procs.signal(agent, libc::SIGSTOP);
    }
    rows_settle(&rig, Duration::from_secs(3)).await;
    cluster.replace_with_empty();
    for agent in AGENTS {
        rig.procs.signal(agent, libc::SIGCONT);
    }
    // The collector creates its topics again and its producer delivers to the new broker;
    // the writer follows the new topics from their start.
    rig.rows_arrive().await;
    hold(3).await;
    rig.rows_arrive().await;
    rig.agents_caught_up().await;
    rig.stop_agents();
    let tally = rig
        .verify("1 broker replaced by an empty one (agents frozen meanwhile)")
        .await;
    assert_eq!(tally.dropped, 0);
}
