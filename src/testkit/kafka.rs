//! Kafka for tests: the suite's broker, clusters of a test's own (Apache Kafka via
//! `scripts/kafka`), the tansu broker, and topic helpers.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;

use super::env::{KAFKA_ENV, TANSU_ENV, free_port, unique_name};
use super::pki::TestPki;
use super::process::{all_threads_stopped, signal};
use crate::pki::{self, LeafSpec};

/// The Kafka bootstrap servers every test of this process uses.
pub fn kafka_bootstrap() -> String {
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP
        .get_or_init(|| match std::env::var(KAFKA_ENV) {
            Ok(servers) if !servers.trim().is_empty() => servers,
            _ => {
                // Lives as long as the process; `--owner` stops it when the process exits.
                let cluster = KafkaCluster::start(1);
                let bootstrap = cluster.bootstrap().to_owned();
                std::mem::forget(cluster);
                bootstrap
            }
        })
        .clone()
}

/// `scripts/kafka COMMAND … --dir DIR`, which installs and runs Apache Kafka for tests,
/// benches and users; nodes it starts stop when this process exits.
fn kafka_script(args: &[&str], dir: &Path) -> Command {
    let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka"));
    command
        .args(args)
        .arg("--dir")
        .arg(dir)
        .args(["--owner", &std::process::id().to_string()])
        .args(["--heap", "384m"])
        .stdin(Stdio::null());
    command
}

/// An Apache Kafka cluster of its own for one test: 1 node, or 3 nodes whose topics
/// default to replication factor 3 and `min.insync.replicas=2` (`scripts/kafka`).
/// Every node is a combined KRaft controller and broker. Stopped on drop, and also when
/// the test process exits however it exits. Data and logs live in a directory under
/// the target directory, kept when the test fails.
#[derive(Debug)]
pub struct KafkaCluster {
    dir: PathBuf,
    bootstrap: String,
    nodes: usize,
}

impl KafkaCluster {
    /// Starts `nodes` (1 or 3) nodes on free ports and waits until each one serves.
    pub fn start(nodes: usize) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/kafka/tests")
            .join(unique_name("cluster"));
        let output = kafka_script(&["start", "--brokers", &nodes.to_string()], &dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka start");
        assert!(
            output.status.success(),
            "scripts/kafka start --brokers {nodes} failed (see {})",
            dir.display()
        );
        let bootstrap = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            !bootstrap.is_empty(),
            "scripts/kafka printed no bootstrap address"
        );
        KafkaCluster {
            dir,
            bootstrap,
            nodes,
        }
    }

    /// `host:port,...` to give librdkafka as `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// How many nodes the cluster has.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Node `node`'s (1-based) process id.
    pub fn pid(&self, node: usize) -> u32 {
        let path = self.dir.join(format!("node-{node}/pid"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .parse()
            .expect("pid file holds a number")
    }

    /// Kills node `node` at once (SIGKILL): no clean shutdown, its data stays on disk.
    pub fn kill(&self, node: usize) {
        signal(self.pid(node), libc::SIGKILL);
        let pid = libc::pid_t::try_from(self.pid(node)).expect("pid fits pid_t");
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: kill(pid, 0) only asks whether the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes node `node` (SIGSTOP): its connections stay open and nothing is answered.
    /// Returns once every thread of it is stopped: kill(2) returns before the signal has
    /// reached them all, and a busy JVM answers a request or two meanwhile.
    pub fn pause(&self, node: usize) {
        let pid = self.pid(node);
        signal(pid, libc::SIGSTOP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "node {node} did not stop within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Thaws a frozen node (SIGCONT).
    pub fn resume(&self, node: usize) {
        signal(self.pid(node), libc::SIGCONT);
    }

    /// Starts a killed node again with the data it had, and waits until it serves.
    pub fn restart(&self, node: usize) {
        let status = kafka_script(&["start-node", &node.to_string()], &self.dir)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/kafka start-node");
        assert!(status.success(), "scripts/kafka start-node {node} failed");
    }

    /// A one-node cluster that also listens with TLS: SSL requiring a client certificate
    /// from `pki`, and SASL_SSL with the SCRAM-SHA-512 user `user`:`password`
    /// (`scripts/kafka start --tls --scram`). The broker's certificate is issued by
    /// `pki`'s CA for 127.0.0.1.
    pub fn start_tls(pki: &TestPki, user: &str, password: &str) -> Self {
        let issued = pki
            .ca()
            .issue(&LeafSpec::server(
                "kafka-broker",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ))
            .expect("issue the broker certificate");
        pki::write_pair(pki.dir(), "kafka-broker", &issued.cert_pem, &issued.key_pem)
            .expect("write the broker certificate");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/kafka/tests")
            .join(unique_name("tls"));
        let tls = pki.dir().display().to_string();
        let scram = format!("{user}:{password}");
        let output = kafka_script(
            &["start", "--brokers", "1", "--tls", &tls, "--scram", &scram],
            &dir,
        )
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/kafka start --tls");
        assert!(output.status.success(), "scripts/kafka start --tls failed");
        KafkaCluster {
            bootstrap: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            dir,
            nodes: 1,
        }
    }

    /// The SSL listener (client certificate required) of a [`KafkaCluster::start_tls`] cluster.
    pub fn ssl_bootstrap(&self) -> String {
        std::fs::read_to_string(self.dir.join("bootstrap-ssl")).expect("a TLS cluster")
    }

    /// Its SASL_SSL listener (SCRAM-SHA-512).
    pub fn sasl_ssl_bootstrap(&self) -> String {
        std::fs::read_to_string(self.dir.join("bootstrap-sasl-ssl")).expect("a TLS cluster")
    }

    /// Replaces a one-node cluster with an empty one on the same address, as when a
    /// broker comes back without its disk: every topic, record and group offset is gone.
    pub fn replace_with_empty(&self) {
        assert_eq!(self.nodes, 1, "only a one-node cluster can be replaced");
        let port = self
            .bootstrap
            .rsplit(':')
            .next()
            .expect("bootstrap is host:port")
            .to_owned();
        let wiped = kafka_script(&["wipe"], &self.dir)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/kafka wipe");
        assert!(wiped.success(), "scripts/kafka wipe failed");
        let output = kafka_script(&["start", "--brokers", "1", "--port", &port], &self.dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka start");
        assert!(
            output.status.success(),
            "scripts/kafka start --port {port} failed"
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            self.bootstrap,
            "the empty broker listens where the old one did"
        );
    }

    /// The node (1-based id) leading `partition` of `topic` now.
    pub fn leader(&self, topic: &str, partition: i32) -> usize {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("create Kafka metadata client");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
        let leader = metadata.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .unwrap_or_else(|| panic!("{topic} has no partition {partition}"))
            .leader();
        usize::try_from(leader).unwrap_or_else(|_| panic!("{topic}/{partition} has no leader"))
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let _ = kafka_script(&["stop"], &self.dir)
            .stdout(Stdio::null())
            .status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Path of the tansu binary: `$FLEETMON_TANSU`, `tansu` on PATH, or `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var(TANSU_ENV) {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            let cargo = PathBuf::from(home).join(".cargo/bin/tansu");
            cargo.is_file().then_some(cargo)
        })
        .unwrap_or_else(|| {
            panic!("tansu not found: run scripts/test (it installs tansu) or set {TANSU_ENV}")
        })
}

/// A tansu broker process with in-memory storage (the quickstart's light broker), owned
/// by a test. Killed on drop.
#[derive(Debug)]
pub struct TansuBroker {
    child: Child,
    bootstrap: String,
}

impl TansuBroker {
    /// Starts a broker on a free port of 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", tansu_binary().display()));
        let broker = TansuBroker {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        let addr: SocketAddr = broker.bootstrap.parse().expect("bootstrap is an address");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu on {addr} not ready within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// `host:port` to give librdkafka as `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a topic with `partitions` partitions (replication 1) and waits for it.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("create Kafka admin client");
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .unwrap_or_else(|e| panic!("create topic {topic} on {bootstrap}: {e}"));
    for result in results {
        if let Err((name, code)) = result {
            assert!(
                code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "create topic {name}: {code}"
            );
        }
    }
}

/// Reads `topic` from the start until at least `min` records arrived and then none
/// for `quiet`: every record, duplicates included. Panics if `min` is not reached in 60 s.
pub async fn read_all(
    bootstrap: &str,
    topic: &str,
    min: usize,
    quiet: Duration,
) -> Vec<OwnedMessage> {
    let consumer = reader(bootstrap, topic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut messages = Vec::new();
    loop {
        let wait = if messages.len() < min {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            quiet
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(message)) => messages.push(message.detach()),
            Ok(Err(error)) => panic!("consume {topic}: {error}"),
            Err(_) if messages.len() >= min => return messages,
            Err(_) => panic!(
                "only {} of at least {min} records in {topic} within 60 s",
                messages.len()
            ),
        }
    }
}

fn reader(bootstrap: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("fleetmon-test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create Kafka consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads `count` records from the start of `topic` with a consumer group of its own,
/// or panics after `within`.
pub async fn read_topic(
    bootstrap: &str,
    topic: &str,
    count: usize,
    within: Duration,
) -> Vec<OwnedMessage> {
    let consumer = reader(bootstrap, topic);
    let deadline = tokio::time::Instant::now() + within;
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => messages.push(message.detach()),
            Ok(Err(error)) => panic!("consume {topic}: {error}"),
            Err(_) => panic!(
                "only {} of {count} records in {topic} within {within:?}",
                messages.len()
            ),
        }
    }
    messages
}
