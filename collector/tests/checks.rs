//! Central checks end to end: the `Checks` API on a real collector and Kafka, real
//! agents in-process that receive their sets over the control stream, and a local
//! HTTP site they check. Results are watched through `Fleet/WatchLatest` and read from
//! the agents' outboxes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use fleetmon::identity::Role;
use fleetmon::pb::checks_client::ChecksClient;
use fleetmon::pb::sample::Kind;
use fleetmon::pb::{
    Alerting, Assignment, CheckDefinition, CheckRef, CheckStatus, CreateCheckRequest,
    DeleteCheckRequest, HttpCheck, ListChecksRequest, SiteCheck, UpdateCheckRequest,
    WatchLatestRequest, check_definition, watch_event,
};
use fleetmon::testkit::{TestPki, kafka_bootstrap};
use fleetmon_agent::RunningAgent;
use fleetmon_collector::testkit::TestCollector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

/// A site on 127.0.0.1 until the test ends, answering each request (read up to 4 KiB,
/// lower-cased) with what `answer` makes of it; its address.
async fn raw_site(answer: fn(&str) -> &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let read = socket.read(&mut buffer).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..read]).to_ascii_lowercase();
                // A client that went away needs no answer.
                let _ = socket.write_all(answer(&request)).await;
            });
        }
    });
    addr
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

/// A site answering `200 ok` to every request, until the test ends.
async fn local_site() -> String {
    format!("http://{}/health", raw_site(|_| OK).await)
}

struct Agent {
    running: RunningAgent,
    stop: CancellationToken,
}

impl Agent {
    /// An agent named `name` with `labels` (TOML inline table body), sending to
    /// `collectors`, keeping its central checks in `cache`.
    async fn start(
        pki: &TestPki,
        name: &str,
        labels: &str,
        collectors: &[String],
        cache: &Path,
    ) -> Agent {
        Agent::start_with(pki, name, labels, collectors, cache, true).await
    }

    /// As [`Agent::start`]; `remote` false refuses central checks.
    async fn start_with(
        pki: &TestPki,
        name: &str,
        labels: &str,
        collectors: &[String],
        cache: &Path,
        remote: bool,
    ) -> Agent {
        let files = pki.client(Role::Agent, name);
        let endpoints: Vec<String> = collectors.iter().map(|c| format!("{c:?}")).collect();
        let text = format!(
            r#"
host_interval_seconds = 3600
metrics_listen = "127.0.0.1:0"
labels = {{ {labels} }}

[collector]
endpoints = [{endpoints}]
ca = {ca:?}
cert = {cert:?}
key = {key:?}
server_name = "localhost"

[outbox]
batch_interval_ms = 100
max_backoff_seconds = 1

[remote_checks]
enabled = {remote}
cache_file = {cache:?}
client_certificates_dir = {client_certs:?}
"#,
            client_certs = client_certificates(cache),
            endpoints = endpoints.join(", "),
            ca = files.ca,
            cert = files.cert,
            key = files.key,
        );
        let path = cache.with_extension("toml");
        std::fs::write(&path, text).unwrap();
        let config = fleetmon_agent::AgentConfig::load(Some(&path), Vec::new()).unwrap();
        let stop = CancellationToken::new();
        let running = fleetmon_agent::start(config, stop.clone()).await.unwrap();
        Agent { running, stop }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.running.task.await.unwrap();
    }

    /// The results of `check_id` waiting in the outbox.
    fn queued(&self, check_id: &str) -> Vec<SiteCheck> {
        self.running
            .outbox
            .after(0, usize::MAX)
            .into_iter()
            .filter_map(|sample| match sample.kind {
                Some(Kind::Site(site)) if site.check_id == check_id => Some(site),
                _ => None,
            })
            .collect()
    }
}

/// A plain collector and agent `name` alone on it: (collector, the directory of the
/// agent's cache, agent, the watch of its results, an assignment that selects it).
async fn collector_with_lone_agent(
    name: &str,
) -> (TestCollector, tempfile::TempDir, Agent, Results, Assignment) {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, results, on_agent) = lone_agent(&collector, name, dir.path()).await;
    (collector, dir, agent, results, on_agent)
}

/// Agent `name` alone on `collector` (its cache in `dir`), the watch of its results and
/// an assignment that selects it by name.
async fn lone_agent(
    collector: &TestCollector,
    name: &str,
    dir: &Path,
) -> (Agent, Results, Assignment) {
    let cache = dir.join(format!("{name}.pb"));
    let agent = Agent::start(&collector.pki, name, "", &[collector.url()], &cache).await;
    let results = Results::watch(collector).await;
    let by_name = Assignment {
        agents: vec![name.into()],
        ..Default::default()
    };
    (agent, results, by_name)
}

/// The client certificates directory of the test agent whose cache is `cache`.
fn client_certificates(cache: &Path) -> PathBuf {
    cache.parent().unwrap().join("client-certs")
}

fn http_check(id: &str, url: &str, interval: u32, assignment: Assignment) -> CheckDefinition {
    CheckDefinition {
        id: id.to_owned(),
        interval_seconds: interval,
        timeout_seconds: 2.0,
        assignment: Some(assignment),
        kind: Some(check_definition::Kind::Http(HttpCheck {
            url: url.to_owned(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn by_label(key: &str, value: &str) -> Assignment {
    Assignment {
        labels: [(key.to_owned(), value.to_owned())].into(),
        ..Default::default()
    }
}

async fn create(client: &mut ChecksClient<Channel>, check: CheckDefinition) -> CheckStatus {
    client
        .create_check(CreateCheckRequest { check: Some(check) })
        .await
        .expect("create check")
        .into_inner()
}

/// Waits until `agent` has applied `version` of `check_id`, as the API reports it.
async fn applied(client: &mut ChecksClient<Channel>, check_id: &str, agent: &str, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client
            .get_check(CheckRef {
                id: check_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        if status
            .agents
            .iter()
            .any(|a| a.agent_id == agent && a.applied_version == version && a.error.is_empty())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{agent} never applied {check_id} v{version}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Results of `check_id` as the collector acknowledges them, with their agent.
struct Results(tonic::Streaming<fleetmon::pb::WatchEvent>);

impl Results {
    async fn watch(collector: &TestCollector) -> Results {
        let stream = collector
            .operator()
            .watch_latest(WatchLatestRequest::default())
            .await
            .unwrap()
            .into_inner();
        Results(stream)
    }

    /// Asserts that `check_id` stops producing results: one already running may still
    /// arrive within 2 s; after that none for 3 s.
    async fn quiet(&mut self, check_id: &str, failure: &str) {
        let settle = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Some(wait) = settle.checked_duration_since(tokio::time::Instant::now()) {
            if self.next(check_id, wait).await.is_none() {
                break;
            }
        }
        assert!(
            self.next(check_id, Duration::from_secs(3)).await.is_none(),
            "{failure}"
        );
    }

    /// The next result of `check_id`, within 15 s.
    async fn expect(&mut self, check_id: &str) -> SiteCheck {
        self.next(check_id, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("no result of {check_id} within 15 s"))
    }

    /// The next result of `check_id` within `within`, if any.
    async fn next(&mut self, check_id: &str, within: Duration) -> Option<SiteCheck> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.0.message())
                .await
                .ok()?;
            if let Some(watch_event::Kind::Site(site)) = event.unwrap().and_then(|e| e.kind)
                && site.check_id == check_id
            {
                return Some(site);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_added_through_the_api_runs_on_the_selected_agents_and_follows_every_change() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let url = local_site().await;
    let collectors = [collector.url()];
    let edge = Agent::start(
        &collector.pki,
        "edge-1",
        r#"location = "eu-west""#,
        &collectors,
        &dir.path().join("edge.pb"),
    )
    .await;
    let core = Agent::start(
        &collector.pki,
        "core-1",
        r#"location = "us-east""#,
        &collectors,
        &dir.path().join("core.pb"),
    )
    .await;
    let mut api = collector.checks();
    let mut results = Results::watch(&collector).await;

    let created = create(
        &mut api,
        http_check("home", &url, 1, by_label("location", "eu-west")),
    )
    .await;
    assert_eq!(created.check.as_ref().unwrap().version, 1);
    applied(&mut api, "home", "edge-1", 1).await;
    let first = results.expect("home").await;
    assert_eq!(
        (
            first.agent_id.as_str(),
            first.ok,
            first.status_code,
            first.check_version
        ),
        ("edge-1", true, Some(200), 1)
    );
    let status = api
        .get_check(CheckRef { id: "home".into() })
        .await
        .unwrap()
        .into_inner();
    let agents: Vec<&str> = status.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(agents, ["edge-1"], "only the eu-west agent is assigned");
    assert!(status.agents[0].connected);
    assert_eq!(
        status.agents[0]
            .last_result
            .as_ref()
            .map(|r| r.check_id.as_str()),
        Some("home")
    );

    // Paused: the agent reports it no longer runs it, and no new results come.
    api.pause_check(CheckRef { id: "home".into() })
        .await
        .unwrap();
    applied(&mut api, "home", "edge-1", 0).await;
    results
        .quiet("home", "a paused check produced a result")
        .await;

    // Resumed: results again.
    let resumed = api
        .resume_check(CheckRef { id: "home".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.check.as_ref().unwrap().version, 3);
    assert!(
        results
            .next("home", Duration::from_secs(10))
            .await
            .is_some()
    );

    // Edited: every 3 s, followed by version 4.
    let mut edited = http_check("home", &url, 3, by_label("location", "eu-west"));
    edited.version = 99;
    let updated = api
        .update_check(UpdateCheckRequest {
            check: Some(edited),
            expected_version: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.check.as_ref().unwrap().version, 4);
    let mut times = Vec::new();
    while times.len() < 3 {
        let result = results.expect("home").await;
        if result.check_version == 4 {
            times.push(result.checked_at.unwrap().seconds);
        }
    }
    assert!(
        times[2] - times[1] >= 2,
        "the new 3 s interval is followed: {times:?}"
    );

    // Deleted: stops everywhere.
    api.delete_check(DeleteCheckRequest {
        id: "home".into(),
        expected_version: 0,
    })
    .await
    .unwrap();
    results
        .quiet("home", "a deleted check produced a result")
        .await;
    let error = api
        .get_check(CheckRef { id: "home".into() })
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        (Code::NotFound, "check `home` does not exist")
    );
    assert!(
        core.queued("home").is_empty(),
        "the us-east agent never ran it"
    );
    edge.stop().await;
    core.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_and_stale_versions_get_exact_statuses() {
    let collector = TestCollector::start(&kafka_bootstrap(), |c| {
        c.limits.min_check_interval_seconds = 10;
    })
    .await;
    let mut api = collector.checks();
    let url = "https://shop.example/";
    let everyone = Assignment {
        all: true,
        ..Default::default()
    };
    let with_http = |edit: fn(&mut HttpCheck)| {
        let mut check = http_check("shop", url, 30, everyone.clone());
        if let Some(check_definition::Kind::Http(http)) = &mut check.kind {
            edit(http);
        }
        check
    };
    let mut cases = vec![
        (
            with_http(|h| h.url = "not a url".into()),
            "invalid check: `check.http.url` `not a url` is not an http:// or https:// URL",
        ),
        (
            with_http(|h| h.regex = "(\\w{100}){100}".into()),
            "invalid check: `check.http.regex` is not a valid regex: compiled regex exceeds size limit of 1048576 bytes: use a simpler pattern (fewer repetitions of large classes; `(?-u)` makes \\w, \\d and \\s ASCII only and much smaller)",
        ),
        (
            with_http(|h| h.expected_status = vec!["2xx".into()]),
            "invalid check: `check.http.expected_status` `2xx` is not a status code or range: write 200 or \"200-299\" (codes 100-999)",
        ),
    ];
    let mut no_kind = http_check("shop", url, 30, everyone.clone());
    no_kind.kind = None;
    cases.push((
        no_kind,
        "invalid check: `check.kind` is missing: set `http` (an HTTP or HTTPS request), `tcp` (a connection), `dns` (a lookup), `grpc` (a health check), `icmp` (a ping), `websocket` (an upgrade), `process`, `systemd`, `file` or `disk` (about the agent's own host), or `heartbeat` (a job pings it)",
    ));
    cases.push((
        http_check("Shop!", url, 30, everyone.clone()),
        "invalid check: `check.id` `Shop!` is not a slug: use 1 to 63 lowercase letters, digits and `-`, starting with a letter (e.g. `shop-home`)",
    ));
    cases.push((
        http_check("shop", url, 5, everyone.clone()),
        "invalid check: `check.interval_seconds` is 5: the shortest interval this collector accepts is 10 s (limits.min_check_interval_seconds)",
    ));
    let two_agents = Assignment {
        agents: vec!["eu".into(), "us".into()],
        ..Default::default()
    };
    let mut quorum_too_high = http_check("shop", url, 30, two_agents);
    quorum_too_high.alerting = Some(Alerting {
        quorum: 3,
        ..Default::default()
    });
    cases.push((
        quorum_too_high,
        "invalid check: `check.alerting.quorum` is 3: the check runs on 2 agent(s), so that many can never agree; use at most 2 (0 for a majority)",
    ));
    let mut threshold_too_high = http_check("shop", url, 30, everyone.clone());
    threshold_too_high.alerting = Some(Alerting {
        failure_threshold: 1000,
        ..Default::default()
    });
    cases.push((
        threshold_too_high,
        "invalid check: `check.alerting.failure_threshold` is 1000: use 1 to 100 runs in a row (0 for the default)",
    ));
    for (check, message) in cases {
        let error = api
            .create_check(CreateCheckRequest { check: Some(check) })
            .await
            .unwrap_err();
        assert_eq!(
            (error.code(), error.message()),
            (Code::InvalidArgument, message)
        );
    }
    let bad_regex = with_http(|h| h.regex = "(unclosed".into());
    let error = api
        .create_check(CreateCheckRequest {
            check: Some(bad_regex),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().starts_with(
            "invalid check: `check.http.regex` is not a valid regex: regex parse error:"
        ),
        "{}",
        error.message()
    );

    // Nothing bad was stored; a good one is, and says that it selects nobody yet.
    assert!(
        api.list_checks(ListChecksRequest {})
            .await
            .unwrap()
            .into_inner()
            .checks
            .is_empty()
    );
    let created = create(
        &mut api,
        http_check("shop", url, 30, by_label("location", "mars")),
    )
    .await;
    assert_eq!(
        created.note,
        "the assignment selects no agent known to this collector yet"
    );
    let error = api
        .create_check(CreateCheckRequest {
            check: Some(http_check("shop", url, 60, everyone.clone())),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        (
            Code::AlreadyExists,
            "check `shop` already exists (version 1): choose another id, or update it"
        )
    );
    let update = |expected_version| UpdateCheckRequest {
        check: Some(http_check("shop", url, 60, everyone.clone())),
        expected_version,
    };
    api.update_check(update(1)).await.unwrap();
    let error = api.update_check(update(1)).await.unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        (
            Code::FailedPrecondition,
            "check `shop` is at version 2, not 1: get it again, then retry the change"
        )
    );
    let error = api
        .pause_check(CheckRef { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        (Code::NotFound, "check `nope` does not exist")
    );
    // Agents may not change checks.
    let mut as_agent =
        ChecksClient::new(collector.channel(&collector.pki.client(Role::Agent, "sneaky")));
    let error = as_agent
        .list_checks(ListChecksRequest {})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_through_one_collector_reaches_an_agent_on_another() {
    let first = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let topics = first.config.kafka.clone();
    let second = TestCollector::start(&kafka_bootstrap(), |c| c.kafka = topics).await;
    let dir = tempfile::tempdir().unwrap();
    let url = local_site().await;
    // The agent's certificate must chain to the second collector's CA.
    let (agent, mut results, by_name) = lone_agent(&second, "far-1", dir.path()).await;
    create(&mut first.checks(), http_check("far", &url, 1, by_name)).await;
    let result = results.expect("far").await;
    assert_eq!(result.agent_id, "far-1");
    applied(&mut second.checks(), "far", "far-1", 1).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_survive_a_collector_restart_and_a_restarted_agent_runs_its_cached_set() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let url = local_site().await;
    let cache = dir.path().join("cached.pb");
    let collectors = [collector.url()];
    let agent = Agent::start(&collector.pki, "cached-1", "", &collectors, &cache).await;
    let mut api = collector.checks();
    let everyone = Assignment {
        all: true,
        ..Default::default()
    };
    create(&mut api, http_check("cached", &url, 1, everyone)).await;
    applied(&mut api, "cached", "cached-1", 1).await;
    let config = collector.config.clone();
    collector.shutdown.cancel();
    collector.running.task.await.unwrap().unwrap();

    // With no collector, the agent goes on checking...
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.queued("cached").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the agent stopped checking when its collector went away"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and, restarted, runs what it applied last.
    agent.stop().await;
    let agent = Agent::start(&collector.pki, "cached-1", "", &collectors, &cache).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.queued("cached").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the restarted agent did not run its cached check"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The collector comes back on the same address with the definition from Kafka.
    let mut config = config;
    config.listen = collectors[0]
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = fleetmon_collector::start(config, shutdown.clone())
        .await
        .expect("collector starts again");
    let mut api = ChecksClient::new(
        fleetmon::tls::endpoint(&collectors[0], &collector.pki.client(Role::Operator, "ops"))
            .unwrap()
            .connect_lazy(),
    );
    let status = api
        .get_check(CheckRef {
            id: "cached".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.check.unwrap().version, 1, "the definition survived");
    applied(&mut api, "cached", "cached-1", 1).await;
    // Everything queued while the collector was down is delivered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.queued("cached").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agent.running.outbox.settled() > 0);
    agent.stop().await;
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_apply_one_check_reports_why_and_runs_the_rest() {
    use prost::Message as _;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let url = local_site().await;
    let agent = Agent::start(
        &collector.pki,
        "mixed-1",
        "",
        &[collector.url()],
        &dir.path().join("mixed.pb"),
    )
    .await;
    let everyone = Assignment {
        all: true,
        ..Default::default()
    };
    let mut api = collector.checks();
    create(&mut api, http_check("good", &url, 1, everyone.clone())).await;
    // A definition the API would refuse, written to the topic by another tool.
    let mut broken = http_check("broken", &url, 1, everyone);
    broken.version = 1;
    if let Some(check_definition::Kind::Http(http)) = &mut broken.kind {
        http.regex = "(unclosed".into();
    }
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&collector.config.kafka.checks_topic)
                .key("broken")
                .payload(&broken.encode_to_vec()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let status = api
            .get_check(CheckRef {
                id: "broken".into(),
            })
            .await
            .map(|r| r.into_inner());
        if let Ok(status) = status
            && let Some(agent) = status.agents.iter().find(|a| !a.error.is_empty())
        {
            break agent.error.clone();
        }
        assert!(Instant::now() < deadline, "no error reported for `broken`");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.starts_with("`check.http.regex` is not a valid regex: regex parse error:"),
        "{error}"
    );
    applied(&mut api, "good", "mixed-1", 1).await;
    let mut results = Results::watch(&collector).await;
    assert!(
        results
            .next("good", Duration::from_secs(10))
            .await
            .is_some(),
        "the good check still runs"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_dns_checks_run_on_agents_like_http_ones() {
    use fleetmon::pb::{DnsCheck, TcpCheck};
    let (collector, _dir, agent, mut results, on_agent) = collector_with_lone_agent("net-1").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"+OK fleetmon test server\r\n").await;
        }
    });
    let mut api = collector.checks();
    let mut tcp = http_check("banner", "", 1, on_agent.clone());
    tcp.kind = Some(check_definition::Kind::Tcp(TcpCheck {
        address: address.clone(),
        send: String::new(),
        expect: "^\\+OK".into(),
    }));
    create(&mut api, tcp).await;
    let mut dns = http_check("resolver", "", 1, on_agent);
    dns.kind = Some(check_definition::Kind::Dns(DnsCheck {
        name: "localhost".into(),
        expected_addresses: vec!["127.0.0.1".into()],
    }));
    create(&mut api, dns).await;
    let banner = results.expect("banner").await;
    assert_eq!(
        (banner.ok, banner.url.as_str(), banner.matched_text.as_str()),
        (true, format!("tcp://{address}").as_str(), "+OK")
    );
    let resolved = results.expect("resolver").await;
    assert!(resolved.ok, "{}", resolved.error_message);
    assert_eq!(resolved.url, "dns://localhost");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_refuses_remote_configuration_runs_only_its_own_sites() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let url = local_site().await;
    let collectors = [collector.url()];
    let refusing = Agent::start_with(
        &collector.pki,
        "local-only",
        "",
        &collectors,
        &dir.path().join("refusing.pb"),
        false,
    )
    .await;
    let willing = Agent::start(
        &collector.pki,
        "willing",
        "",
        &collectors,
        &dir.path().join("willing.pb"),
    )
    .await;
    let mut api = collector.checks();
    let everyone = Assignment {
        all: true,
        ..Default::default()
    };
    create(&mut api, http_check("everywhere", &url, 1, everyone)).await;
    applied(&mut api, "everywhere", "willing", 1).await;
    let status = api
        .get_check(CheckRef {
            id: "everywhere".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let agents: Vec<&str> = status.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(
        agents,
        ["willing"],
        "the refusing agent is not counted as assigned"
    );
    // The willing agent ran the check three times (1 s apart): the refusing one had
    // the same set for as long.
    let taken = r#"fleetmon_agent_samples_taken_total{kind="site"}"#;
    fleetmon::testkit::wait_for_metric(willing.running.metrics_addr, taken, 3.0).await;
    assert!(
        refusing.queued("everywhere").is_empty(),
        "it ran a central check"
    );
    assert_eq!(
        fleetmon::testkit::metric_value(refusing.running.metrics_addr, taken).unwrap_or(0.0),
        0.0,
        "it ran a central check"
    );
    refusing.stop().await;
    willing.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_an_agent_gives_itself_are_shown_but_select_nothing_unless_trusted() {
    let collector = TestCollector::start(&kafka_bootstrap(), |c| {
        c.assignment.trust_agent_labels = false;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = local_site().await;
    // A hand-issued certificate (no token, so no labels of its own) whose config
    // claims the location a check is meant for.
    let agent = Agent::start(
        &collector.pki,
        "self-labelled",
        r#"location = "eu-west""#,
        &[collector.url()],
        &dir.path().join("agent.pb"),
    )
    .await;
    let mut fleet = collector.operator();
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let agents = fleet
            .list_agents(fleetmon::pb::ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents;
        if let Some(listed) = agents.into_iter().find(|a| !a.reported_labels.is_empty()) {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's report never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed.agent_id, "self-labelled");
    assert_eq!(
        listed.reported_labels.get("location").map(String::as_str),
        Some("eu-west"),
        "shown"
    );
    assert!(listed.labels.is_empty(), "selects nothing: {listed:?}");

    let mut api = collector.checks();
    let mut results = Results::watch(&collector).await;
    create(
        &mut api,
        http_check("home", &url, 1, by_label("location", "eu-west")),
    )
    .await;
    let status = api
        .get_check(CheckRef { id: "home".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(status.agents.is_empty(), "{:?}", status.agents);
    results
        .quiet(
            "home",
            "an agent ran a check only its own labels selected it for",
        )
        .await;
    agent.stop().await;
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_stream_that_goes_quiet_is_closed_and_one_that_reports_is_kept() {
    let collector = TestCollector::start(&kafka_bootstrap(), |c| {
        c.limits.idle_control_seconds = 2;
    })
    .await;
    let files = collector.pki.client(Role::Agent, "quiet");
    let mut control = fleetmon::pb::control_client::ControlClient::new(collector.channel(&files));
    let (reports, rx) = tokio::sync::mpsc::channel(4);
    reports
        .send(fleetmon::pb::AgentReport::default())
        .await
        .unwrap();
    let started = Instant::now();
    let mut sets = control
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Reporting every second for four seconds keeps it open past the 2 s limit.
    let mut first_set = None;
    while started.elapsed() < Duration::from_secs(4) {
        tokio::select! {
            set = sets.message() => {
                let set = set.expect("still open while reporting");
                first_set.get_or_insert(set.expect("a set"));
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                reports.send(fleetmon::pb::AgentReport::default()).await.unwrap();
            }
        }
    }
    assert!(first_set.is_some(), "the set is sent when the stream opens");
    // Then silence: closed with a status that says why.
    let status = loop {
        match sets.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("closed without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(
        status.message(),
        "no report for 2 s (limits.idle_control_seconds): control stream closed; agents report every 60 s"
    );
    drop(reports);
    collector.shutdown.cancel();
}

/// The secret `Authorization` value of the secret-header tests.
const TOKEN: &str = "Bearer s3cret-token-7f3a";

/// A site answering 200 to requests carrying `Authorization:` [`TOKEN`] and 401 to
/// every other, until the test ends.
async fn site_requiring_the_token() -> String {
    let addr = raw_site(|request| {
        let wanted = format!("\r\nauthorization: {}\r\n", TOKEN.to_ascii_lowercase());
        if request.contains(&wanted) {
            OK
        } else {
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        }
    })
    .await;
    format!("http://{addr}/private")
}

fn with_secret_header(mut check: CheckDefinition, name: &str, value: &str) -> CheckDefinition {
    if let Some(check_definition::Kind::Http(http)) = &mut check.kind {
        http.secret_headers
            .insert(name.to_owned(), value.to_owned());
    }
    check
}

fn secret_header(status: &CheckStatus, name: &str) -> String {
    match &status.check.as_ref().unwrap().kind {
        Some(check_definition::Kind::Http(http)) => http.secret_headers[name].clone(),
        other => panic!("not an HTTP check: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_header_value_reaches_the_agent_only_and_is_kept_sealed() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = fleetmon::pki::new_secret_key(keys.path(), false).unwrap();
    let collector = TestCollector::start(&kafka_bootstrap(), |config| {
        config.check_secrets = Some(fleetmon_collector::config::CheckSecretsConfig {
            key_file: key_file.clone(),
        });
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = site_requiring_the_token().await;
    let (agent, mut results, _) = lone_agent(&collector, "edge-1", dir.path()).await;
    let mut api = collector.checks();
    let every_agent = Assignment {
        all: true,
        ..Default::default()
    };

    let check = with_secret_header(
        http_check("private", &url, 1, every_agent.clone()),
        "Authorization",
        TOKEN,
    );
    let created = create(&mut api, check).await;
    assert_eq!(secret_header(&created, "Authorization"), "•••");
    let first = results.expect("private").await;
    assert_eq!(
        (first.ok, first.status_code),
        (true, Some(200)),
        "{first:?}"
    );
    // The agent's cache of its set holds the value in clear: its user's only.
    let cache_mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(dir.path().join("edge-1.pb"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(cache_mode, 0o600);

    // The topic (which the writers copy into `checks`) holds the value sealed only.
    let records = fleetmon::testkit::read_topic(
        &kafka_bootstrap(),
        &collector.config.kafka.checks_topic,
        1,
        Duration::from_secs(30),
    )
    .await;
    let payload = rdkafka::Message::payload(&records[0]).unwrap();
    let text = String::from_utf8_lossy(payload);
    assert!(!text.contains("s3cret-token"), "{text}");
    assert!(text.contains("fleetmon-sealed:v1:"), "{text}");
    let fetched = api
        .get_check(CheckRef {
            id: "private".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(secret_header(&fetched, "Authorization"), "•••");

    // Sent back as `•••`, the value is kept: every 2 s, still authorized.
    let edited = with_secret_header(
        http_check("private", &url, 2, every_agent.clone()),
        "Authorization",
        "•••",
    );
    let updated = api
        .update_check(UpdateCheckRequest {
            check: Some(edited.clone()),
            expected_version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.check.as_ref().unwrap().version, 2);
    let result = loop {
        let result = results.expect("private").await;
        if result.check_version == 2 {
            break result;
        }
    };
    assert_eq!(
        (result.ok, result.status_code),
        (true, Some(200)),
        "{result:?}"
    );

    // The same definition again, whether kept (`•••`) or given in clear, is no change.
    for value in ["•••", TOKEN] {
        let same = with_secret_header(
            http_check("private", &url, 2, every_agent.clone()),
            "Authorization",
            value,
        );
        let unchanged = api
            .update_check(UpdateCheckRequest {
                check: Some(same),
                expected_version: 2,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unchanged.check.as_ref().unwrap().version, 2, "{value}");
    }

    // `•••` for a header the check does not have, and a credential among the plain
    // headers, are refused with the fix.
    let unknown = with_secret_header(edited.clone(), "X-Api-Key", "•••");
    let refused = api
        .update_check(UpdateCheckRequest {
            check: Some(unknown),
            expected_version: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "`check.http.secret_headers.X-Api-Key` is `•••` (keep the stored value), but check `private` has no stored value for it: give the value"
    );
    let mut plain = http_check("plain", &url, 1, every_agent);
    if let Some(check_definition::Kind::Http(http)) = &mut plain.kind {
        http.headers.insert("Authorization".into(), TOKEN.into());
    }
    let refused = api
        .create_check(CreateCheckRequest { check: Some(plain) })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "invalid check: `check.http.headers` names `Authorization`, a credential: move it to `check.http.secret_headers` (`secret_headers` in checks.toml), which is stored encrypted and shown as `•••`"
    );
    agent.stop().await;
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_without_a_key_refuses_secret_headers_and_says_how_to_give_one() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let check = with_secret_header(
        http_check(
            "private",
            "http://127.0.0.1:9/",
            60,
            Assignment {
                all: true,
                ..Default::default()
            },
        ),
        "Authorization",
        "Bearer x",
    );
    let refused = collector
        .checks()
        .create_check(CreateCheckRequest { check: Some(check) })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "`check.http.secret_headers` needs a key on the collector: set `[check_secrets] key_file` on every collector to one file (`fleetmon certs new-secret-key`)"
    );
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_check_passes_on_serving_and_names_any_other_health() {
    use fleetmon::pb::GrpcCheck;
    let (collector, _dir, agent, mut results, on_agent) = collector_with_lone_agent("grpc-1").await;
    // A real gRPC server with the standard health service, plaintext HTTP/2.
    let (reporter, health) = fleetmon::grpc::health_service().await;
    reporter
        .set_service_status("shop.Orders", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut api = collector.checks();
    let grpc = |id: &str, service: &str| {
        let mut check = http_check(id, "", 1, on_agent.clone());
        check.kind = Some(check_definition::Kind::Grpc(GrpcCheck {
            address: address.clone(),
            service: service.into(),
            ..Default::default()
        }));
        check
    };
    create(&mut api, grpc("orders", "shop.Orders")).await;
    create(&mut api, grpc("ghost", "shop.Ghost")).await;
    // A standby that must stay out of rotation: NOT_SERVING is what passes.
    reporter
        .set_service_status("shop.Standby", tonic_health::ServingStatus::NotServing)
        .await;
    let mut standby = grpc("standby", "shop.Standby");
    if let Some(check_definition::Kind::Grpc(grpc)) = &mut standby.kind {
        grpc.expected_health = "NOT_SERVING".into();
    }
    create(&mut api, standby.clone()).await;
    let passing = results.expect("standby").await;
    assert_eq!(
        (passing.ok, passing.matched_text.as_str()),
        (true, "NOT_SERVING"),
        "{}",
        passing.error_message
    );
    if let Some(check_definition::Kind::Grpc(grpc)) = &mut standby.kind {
        grpc.expected_health = "ASLEEP".into();
    }
    standby.id = "asleep".into();
    let error = api
        .create_check(CreateCheckRequest {
            check: Some(standby),
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "invalid check: `check.grpc.expected_health` is `ASLEEP`: use SERVING (the default), NOT_SERVING or UNKNOWN"
    );
    let serving = results.expect("orders").await;
    assert_eq!(
        (
            serving.ok,
            serving.url.as_str(),
            serving.method.as_str(),
            serving.matched_text.as_str()
        ),
        (
            true,
            format!("grpc://{address}/shop.Orders").as_str(),
            "GRPC",
            "SERVING"
        ),
        "{}",
        serving.error_message
    );
    let ghost = results.expect("ghost").await;
    assert!(!ghost.ok);
    assert_eq!(
        ghost.error_message,
        "the server does not know service `shop.Ghost` (NOT_FOUND)"
    );

    // The service stops serving: the next run says so.
    reporter
        .set_service_status("shop.Orders", tonic_health::ServingStatus::NotServing)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let result = results.expect("orders").await;
        if !result.ok {
            break result;
        }
        assert!(Instant::now() < deadline, "still passing: {result:?}");
    };
    assert_eq!(
        failed.error_message,
        "health of service `shop.Orders` is NOT_SERVING (expected SERVING)"
    );
    agent.stop().await;
    collector.shutdown.cancel();
}

/// An ICMP check pings 127.0.0.1 from a real agent: every request answered, the
/// average round trip as the response time, a summary as the matched text; a loss limit
/// below what a run lost fails it (the lost requests are proven in `agent/src/icmp.rs`,
/// in a network namespace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_icmp_check_pings_a_host_and_reports_replies_and_round_trips() {
    use fleetmon::pb::IcmpCheck;
    let (collector, _dir, agent, mut results, on_agent) = collector_with_lone_agent("icmp-1").await;
    let mut api = collector.checks();
    let mut check = http_check("gateway", "", 1, on_agent.clone());
    check.kind = Some(check_definition::Kind::Icmp(IcmpCheck {
        host: "127.0.0.1".into(),
        count: 3,
        interval_ms: 20,
        max_loss_percent: Some(0.0),
    }));
    create(&mut api, check).await;
    let result = results.expect("gateway").await;
    assert!(result.ok, "{}", result.error_message);
    assert_eq!(
        (result.url.as_str(), result.method.as_str()),
        ("icmp://127.0.0.1", "ICMP")
    );
    assert!(
        result
            .matched_text
            .starts_with("3/3 replies, loss 0 %, rtt min/avg/max "),
        "{}",
        result.matched_text
    );
    assert!(result.response_time_ms > 0.0 && result.response_time_ms < 1000.0);

    // IPv6 (ICMPv6 echo).
    let mut check = http_check("gateway6", "", 1, on_agent.clone());
    check.kind = Some(check_definition::Kind::Icmp(IcmpCheck {
        host: "::1".into(),
        count: 2,
        interval_ms: 20,
        max_loss_percent: Some(0.0),
    }));
    create(&mut api, check).await;
    let result = results.expect("gateway6").await;
    assert_eq!(
        (result.ok, result.url.as_str(), result.final_url.as_str()),
        (true, "icmp://[::1]", "icmp://[::1]"),
        "{}",
        result.error_message
    );
    assert!(
        result.matched_text.starts_with("2/2 replies, loss 0 %"),
        "{}",
        result.matched_text
    );

    // Bad definitions are refused naming the field.
    let mut bad = http_check("too-many", "", 1, on_agent);
    bad.kind = Some(check_definition::Kind::Icmp(IcmpCheck {
        host: "127.0.0.1".into(),
        count: 50,
        ..Default::default()
    }));
    let error = api
        .create_check(fleetmon::pb::CreateCheckRequest { check: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        (
            tonic::Code::InvalidArgument,
            "invalid check: `check.icmp.count` is 50: send 1 to 20 echo requests per run"
        )
    );
    drop(agent);
}

/// A WebSocket check against a server the test starts: the upgrade, a message sent and
/// the answer matched; an answer that does not match, and a server that will not
/// upgrade, fail saying what came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_check_upgrades_sends_and_matches_the_answer() {
    use fleetmon::pb::WebSocketCheck;
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let (collector, _dir, agent, mut results, on_agent) = collector_with_lone_agent("ws-1").await;
    // Answers each text message with "pong " and the message.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Text(text) = message {
                        let _ = socket.send(Message::text(format!("pong {text}"))).await;
                    }
                }
            });
        }
    });
    // An HTTP server that does not upgrade.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = plain.accept().await {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut request = [0u8; 1024];
            let _ = tcp.read(&mut request).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let mut api = collector.checks();
    let websocket = |id: &str, port: u16, expect: &str| {
        let mut check = http_check(id, "", 1, on_agent.clone());
        check.kind = Some(check_definition::Kind::Websocket(WebSocketCheck {
            url: format!("ws://127.0.0.1:{port}/live"),
            send: "ping".into(),
            expect: expect.into(),
        }));
        check
    };
    create(&mut api, websocket("live", ws_port, "^pong (\\w+)")).await;
    create(&mut api, websocket("wrong", ws_port, "^nope")).await;
    create(&mut api, websocket("plain", plain_port, "")).await;
    let live = results.expect("live").await;
    assert_eq!(
        (
            live.ok,
            live.method.as_str(),
            live.status_code,
            live.matched_text.as_str()
        ),
        (true, "WS", Some(101), "pong ping"),
        "{}",
        live.error_message
    );
    let wrong = results.expect("wrong").await;
    assert_eq!(
        (wrong.ok, wrong.error_message.as_str()),
        (false, "received `pong ping` does not match `^nope`")
    );
    let plain = results.expect("plain").await;
    assert_eq!(
        (plain.ok, plain.status_code, plain.error_message),
        (
            false,
            Some(404),
            format!(
                "ws://127.0.0.1:{plain_port}/live answered 404 Not Found instead of upgrading to a WebSocket (101)"
            )
        )
    );
    drop(agent);
}

/// A gRPC check over TLS to a server whose certificate comes from a private CA: with
/// that CA in the check it passes; with the system's CAs the handshake fails, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_check_over_tls_trusts_the_ca_it_is_given() {
    use fleetmon::pb::GrpcCheck;
    let (collector, _dir, agent, mut results, on_agent) =
        collector_with_lone_agent("grpc-tls").await;
    let port = tls_health_server(&collector.pki, None).await;
    let ca_pem = std::fs::read_to_string(collector.pki.dir().join("ca.pem")).unwrap();
    let mut api = collector.checks();
    let grpc = |id: &str, ca_pem: &str| {
        let mut check = http_check(id, "", 1, on_agent.clone());
        check.kind = Some(check_definition::Kind::Grpc(GrpcCheck {
            address: format!("localhost:{port}"),
            service: String::new(),
            tls: true,
            ca_pem: ca_pem.into(),
            ..Default::default()
        }));
        check
    };
    create(&mut api, grpc("private", &ca_pem)).await;
    create(&mut api, grpc("system", "")).await;
    let private = results.expect("private").await;
    assert_eq!(
        (private.ok, private.matched_text.as_str()),
        (true, "SERVING"),
        "{}",
        private.error_message
    );
    let system = results.expect("system").await;
    assert!(!system.ok);
    assert!(
        system
            .error_message
            .starts_with(&format!("cannot connect to localhost:{port}: ")),
        "{}",
        system.error_message
    );
    // A CA that is no certificate is refused naming the field.
    let error = api
        .create_check(fleetmon::pb::CreateCheckRequest {
            check: Some(grpc("broken", "not a pem")),
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "invalid check: `check.grpc.ca_pem` holds no PEM certificate (at most 64 KiB): paste the CA's -----BEGIN CERTIFICATE----- block"
    );
    agent.stop().await;
    collector.shutdown.cancel();
}

/// A gRPC server with the standard health service over TLS, on a port of 127.0.0.1
/// (its certificate, for `localhost`, from `pki`); with `client_ca`, it asks for a
/// client certificate signed by that CA.
async fn tls_health_server(pki: &TestPki, client_ca: Option<&str>) -> u16 {
    let (_reporter, health) = fleetmon::grpc::health_service().await;
    let files = pki.server("writer");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(&files.cert).unwrap(),
        std::fs::read(&files.key).unwrap(),
    );
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}

/// A gRPC server that asks for a client certificate: the check presents the one it
/// names from the agent's own directory, and passes; without one, or naming one the
/// agent does not have, it fails saying why. A name without TLS is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_check_presents_the_client_certificate_it_names_from_the_agents_directory() {
    use fleetmon::pb::GrpcCheck;
    let (collector, dir, agent, mut results, on_agent) =
        collector_with_lone_agent("grpc-mtls").await;
    let ca_pem = std::fs::read_to_string(collector.pki.dir().join("ca.pem")).unwrap();
    let port = tls_health_server(&collector.pki, Some(&ca_pem)).await;
    // The agent's host holds the certificate `orders`, signed by the server's client CA.
    let certs = client_certificates(&dir.path().join("grpc-mtls.pb"));
    std::fs::create_dir_all(&certs).unwrap();
    let client = collector.pki.client(Role::Operator, "orders-client");
    std::fs::copy(&client.cert, certs.join("orders.pem")).unwrap();
    std::fs::copy(&client.key, certs.join("orders-key.pem")).unwrap();

    let mut api = collector.checks();
    let grpc = |id: &str, tls: bool, client_certificate: &str| {
        let mut check = http_check(id, "", 1, on_agent.clone());
        check.kind = Some(check_definition::Kind::Grpc(GrpcCheck {
            address: format!("localhost:{port}"),
            tls,
            ca_pem: if tls { ca_pem.clone() } else { String::new() },
            client_certificate: client_certificate.into(),
            ..Default::default()
        }));
        check
    };
    create(&mut api, grpc("mutual", true, "orders")).await;
    create(&mut api, grpc("anonymous", true, "")).await;
    create(&mut api, grpc("stranger", true, "payments")).await;
    let mutual = results.expect("mutual").await;
    assert_eq!(
        (mutual.ok, mutual.matched_text.as_str()),
        (true, "SERVING"),
        "{}",
        mutual.error_message
    );
    let anonymous = results.expect("anonymous").await;
    assert!(
        !anonymous.ok,
        "a server asking for a client certificate let one without in"
    );
    let stranger = results.expect("stranger").await;
    assert_eq!(
        (stranger.ok, stranger.error_message.as_str()),
        (
            false,
            format!(
                "cannot read client certificate {}: No such file or directory (os error 2)",
                certs.join("payments.pem").display()
            )
            .as_str()
        )
    );
    for (check, message) in [
        (
            grpc("plain", false, "orders"),
            "invalid check: `check.grpc.client_certificate` is set without `tls`: set tls = true, or remove the client certificate",
        ),
        (
            grpc("odd", true, "../etc/key"),
            "invalid check: `check.grpc.client_certificate` `../etc/key` is not a certificate name: use 1 to 63 lowercase letters, digits and `-` (the agent reads NAME.pem and NAME-key.pem from its remote_checks.client_certificates_dir)",
        ),
    ] {
        let error = api
            .create_check(CreateCheckRequest { check: Some(check) })
            .await
            .unwrap_err();
        assert_eq!(error.message(), message);
    }
    agent.stop().await;
    collector.shutdown.cancel();
}

/// Host checks on a real agent, about its own host: a process that runs and then is
/// killed, a file older than allowed and one fresh enough, the root filesystem against
/// two limits, and a systemd unit (or, where systemd does not run the host, the result
/// that says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_checks_see_the_agents_own_processes_files_disks_and_units() {
    use fleetmon::pb::{DiskCheck, FileCheck, ProcessCheck, SystemdCheck};
    let (collector, dir, agent, mut results, on_agent) = collector_with_lone_agent("host-1").await;
    let mut api = collector.checks();
    let host_check = |id: &str, kind: check_definition::Kind| {
        let mut check = http_check(id, "", 1, on_agent.clone());
        check.kind = Some(kind);
        check
    };
    let mut job = std::process::Command::new("sleep")
        .arg("86397.25")
        .spawn()
        .expect("sleep");
    let old = dir.path().join("nightly.dump");
    std::fs::write(&old, vec![0u8; 2048]).unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let old = old.display().to_string();
    for check in [
        host_check(
            "job",
            check_definition::Kind::Process(ProcessCheck {
                command_regex: r"^sleep 86397\.25$".into(),
                ..Default::default()
            }),
        ),
        host_check(
            "stale-backup",
            check_definition::Kind::File(FileCheck {
                path: old.clone(),
                max_age_seconds: 3600,
                ..Default::default()
            }),
        ),
        host_check(
            "backup",
            check_definition::Kind::File(FileCheck {
                path: old.clone(),
                max_age_seconds: 3 * 3600,
                min_size_bytes: 1024,
                ..Default::default()
            }),
        ),
        host_check(
            "root-room",
            check_definition::Kind::Disk(DiskCheck {
                mount_point: "/".into(),
                max_used_percent: 100.0,
                ..Default::default()
            }),
        ),
        host_check(
            "root-tight",
            check_definition::Kind::Disk(DiskCheck {
                mount_point: "/".into(),
                max_used_percent: 0.001,
                ..Default::default()
            }),
        ),
        host_check(
            "journal",
            check_definition::Kind::Systemd(SystemdCheck {
                unit: "systemd-journald.service".into(),
            }),
        ),
    ] {
        create(&mut api, check).await;
    }
    let running = results.expect("job").await;
    assert_eq!(
        (running.ok, running.method.as_str(), running.url.as_str()),
        (true, "PROCESS", r"process:~^sleep 86397\.25$"),
        "{}",
        running.error_message
    );
    assert_eq!(
        running.matched_text,
        format!(
            r"1 process whose command line matches `^sleep 86397\.25$` (pid {})",
            job.id()
        )
    );
    let stale = results.expect("stale-backup").await;
    assert!(!stale.ok);
    assert!(
        stale
            .error_message
            .starts_with(&format!("{old} was modified 720"))
            && stale
                .error_message
                .ends_with(" s ago: at most 3600 s may have passed"),
        "{}",
        stale.error_message
    );
    let fresh = results.expect("backup").await;
    assert!(
        fresh.ok && fresh.matched_text.starts_with("2048 bytes, modified 720"),
        "{fresh:?}"
    );
    let room = results.expect("root-room").await;
    assert!(
        room.ok && room.matched_text.contains(" % used, "),
        "{room:?}"
    );
    let tight = results.expect("root-tight").await;
    assert!(
        !tight.ok
            && tight.error_message.starts_with("/ is ")
            && tight
                .error_message
                .ends_with(" % full: at most 0.001 % may be used"),
        "{}",
        tight.error_message
    );
    let journal = results.expect("journal").await;
    if std::path::Path::new("/run/systemd/system").is_dir() {
        assert!(journal.ok, "{}", journal.error_message);
        assert!(journal.matched_text.starts_with("active ("), "{journal:?}");
    } else {
        eprintln!("systemd does not run this host: the systemd check's failure is what is checked");
        assert_eq!(
            (journal.ok, journal.error_message.as_str()),
            (
                false,
                "systemd is not running on this host (no /run/systemd/system)"
            )
        );
    }

    // The job ends: the next run says none is left.
    job.kill().unwrap();
    job.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let gone = loop {
        let result = results.expect("job").await;
        if !result.ok {
            break result;
        }
        assert!(Instant::now() < deadline, "still running: {result:?}");
    };
    assert_eq!(
        gone.error_message,
        r"0 processes whose command line matches `^sleep 86397\.25$` run: at least 1 must"
    );
    // A path that climbs is refused at the API, naming the field.
    let error = api
        .create_check(CreateCheckRequest {
            check: Some(host_check(
                "shadow",
                check_definition::Kind::File(FileCheck {
                    path: "/tmp/../etc/shadow".into(),
                    ..Default::default()
                }),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "invalid check: `check.file.path` `/tmp/../etc/shadow` is not an absolute path without `..` (e.g. /var/backups/db.dump)"
    );
    agent.stop().await;
    collector.shutdown.cancel();
}
