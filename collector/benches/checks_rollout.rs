//! Central checks at fleet scale, on a real collector and Kafka:
//!
//! 1. collector memory per check: RSS before and after 10 000 definitions are created
//!    through the `Checks` API (no agent connected yet);
//! 2. rollout: 1 000 simulated agents (a certificate and a control stream each, labels
//!    `shard = 0..99`, so every check goes to 10 agents and every agent runs 100);
//!    then one check is changed at a time, and the time from the API call to every
//!    assigned agent having reported the new version applied is measured (p50/p99);
//! 3. the cost to a real agent of 1 000 checks applied at once: the agent's own
//!    conversion and scheduler, wall time and RSS.
//!
//! Run: `cargo bench -p fleetmon-collector --bench checks_rollout` (sizes:
//! `FLEETMON_BENCH_CHECKS` default 10000, `FLEETMON_BENCH_AGENTS` default 1000,
//! `FLEETMON_BENCH_CHANGES` default 50; Kafka: `FLEETMON_TEST_KAFKA` or an Apache Kafka
//! node started here).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetmon::identity::Role;
use fleetmon::pb::checks_client::ChecksClient;
use fleetmon::pb::control_client::ControlClient;
use fleetmon::pb::{
    AgentReport, AppliedCheck, Assignment, CheckDefinition, CreateCheckRequest, HttpCheck,
    UpdateCheckRequest, check_definition,
};
use fleetmon::testkit::{Runs, TestPki, kafka_bootstrap, unique_name};
use fleetmon_collector::CollectorConfig;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const SHARDS: usize = 100;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn check(id: usize, interval: u32) -> CheckDefinition {
    CheckDefinition {
        id: format!("c{id}"),
        interval_seconds: interval,
        assignment: Some(Assignment {
            labels: [("shard".to_owned(), (id % SHARDS).to_string())].into(),
            ..Default::default()
        }),
        kind: Some(check_definition::Kind::Http(HttpCheck {
            url: format!("https://site-{id}.example/health"),
            regex: "ok|healthy".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// What the simulated agents applied: (agent, check id) -> version.
type Applied = Arc<Mutex<HashMap<(usize, String), u64>>>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    fleetmon::tls::install_crypto_provider();
    let checks = env("FLEETMON_BENCH_CHECKS", 10_000);
    let agents = env("FLEETMON_BENCH_AGENTS", 1_000);
    let changes = env("FLEETMON_BENCH_CHANGES", 50);
    let pki = TestPki::new();
    let mut config = CollectorConfig::new(pki.server("collector"));
    // The simulated agents have hand-issued certificates: their labels select them.
    config.assignment.trust_agent_labels = true;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.kafka.bootstrap_servers = kafka_bootstrap();
    config.kafka.host_samples_topic = unique_name("fleetmon-bench-rollout-host");
    config.kafka.site_checks_topic = unique_name("fleetmon-bench-rollout-site");
    config.kafka.checks_topic = unique_name("fleetmon-bench-rollout-checks");
    let shutdown = CancellationToken::new();
    let running = fleetmon_collector::start(config, shutdown.clone())
        .await
        .expect("collector starts");
    let url = format!("https://{}", running.grpc_addr);
    let operator = fleetmon::tls::endpoint(&url, &pki.client(Role::Operator, "bench"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let api = ChecksClient::new(operator);

    // 1. Memory per check.
    let before = rss();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut creators = Vec::new();
    for _ in 0..32 {
        let (mut api, next) = (api.clone(), next.clone());
        creators.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id >= checks {
                    return;
                }
                api.create_check(CreateCheckRequest {
                    check: Some(check(id, 60)),
                })
                .await
                .expect("create check");
            }
        }));
    }
    for creator in creators {
        creator.await.unwrap();
    }
    let created_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = rss().saturating_sub(before);
    println!(
        "created {checks} checks in {:.1} s ({:.0}/s, 32 callers); collector RSS +{:.1} MiB = {:.0} bytes per check",
        created_in.as_secs_f64(),
        checks as f64 / created_in.as_secs_f64(),
        grown as f64 / 1048576.0,
        grown as f64 / checks as f64
    );

    // 2. Rollout to simulated agents.
    let applied: Applied = Arc::default();
    let progress = Arc::new(Notify::new());
    let connect_started = Instant::now();
    for agent in 0..agents {
        let files = pki.client(Role::Agent, &format!("sim-{agent}"));
        let channel = fleetmon::tls::endpoint(&url, &files)
            .unwrap()
            .connect()
            .await
            .expect("agent connects");
        let (applied, progress) = (applied.clone(), progress.clone());
        tokio::spawn(async move {
            let labels: std::collections::HashMap<String, String> =
                [("shard".to_owned(), (agent % SHARDS).to_string())].into();
            let (tx, rx) = mpsc::channel(4);
            tx.send(AgentReport {
                labels: labels.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            let mut sets = ControlClient::new(channel)
                .subscribe(ReceiverStream::new(rx))
                .await
                .expect("control stream")
                .into_inner();
            while let Ok(Some(set)) = sets.message().await {
                let report = AgentReport {
                    labels: labels.clone(),
                    applied_hash: set.hash.clone(),
                    checks: set
                        .checks
                        .iter()
                        .map(|c| AppliedCheck {
                            id: c.id.clone(),
                            version: c.version,
                            error: String::new(),
                        })
                        .collect(),
                    remote_disabled: false,
                };
                {
                    let mut applied = applied.lock().unwrap();
                    for c in &set.checks {
                        applied.insert((agent, c.id.clone()), c.version);
                    }
                }
                progress.notify_waiters();
                if tx.send(report).await.is_err() {
                    return;
                }
            }
        });
    }
    let expected = checks * agents / SHARDS;
    loop {
        let have = applied.lock().unwrap().len();
        if have >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{agents} agents connected and applied their {} checks each in {:.1} s",
        checks / SHARDS,
        connect_started.elapsed().as_secs_f64()
    );
    let mut latencies = Vec::new();
    for change in 0..changes {
        let id = (change * 7919) % checks;
        let mut definition = check(id, 30);
        definition.version = 0;
        let began = Instant::now();
        let updated = api
            .clone()
            .update_check(UpdateCheckRequest {
                check: Some(definition),
                expected_version: 1,
            })
            .await
            .expect("update")
            .into_inner();
        let version = updated.check.unwrap().version;
        let assigned: Vec<usize> = (0..agents).filter(|a| a % SHARDS == id % SHARDS).collect();
        let key = format!("c{id}");
        loop {
            let notified = progress.notified();
            let done = {
                let applied = applied.lock().unwrap();
                assigned
                    .iter()
                    .all(|a| applied.get(&(*a, key.clone())) == Some(&version))
            };
            if done {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
        latencies.push(began.elapsed());
    }
    latencies.sort();
    println!(
        "config change -> every assigned agent ({} each) applied, {changes} changes: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (goal p99 <= 2000 ms)",
        agents / SHARDS,
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0
    );
    // The same as a row `bench/agree` compares across runs: the median change, and
    // the fastest and slowest of them.
    let ms = Runs(latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect());
    println!("{:<48}  {:>10}  {:>14}", "path", "median ms", "min–max ms");
    println!(
        "{:<48}  {:>10.0}  {:>14}",
        "config change -> every assigned agent applied",
        ms.median(),
        ms.spread()
    );

    // 3. One real agent applying 1 000 checks at once.
    let definitions: Vec<CheckDefinition> = (0..1000)
        .map(|i| CheckDefinition {
            version: 1,
            ..check(i, 3600)
        })
        .collect();
    let before = rss();
    let began = Instant::now();
    let mut patterns = fleetmon::checks::pattern::Patterns::default();
    let defaults = fleetmon::checks::ProbeDefaults::default();
    let sites: Vec<_> = definitions
        .iter()
        .map(|d| fleetmon::checks::site_from_definition(d, &defaults, &mut patterns).unwrap())
        .collect();
    let stop = CancellationToken::new();
    let outbox = Arc::new(fleetmon_agent::outbox::Outbox::open(1000, None).unwrap());
    let metrics = Arc::new(fleetmon_agent::metrics::AgentMetrics::new(
        &mut prometheus_client::registry::Registry::default(),
    ));
    let mut scheduler = fleetmon_agent::check_scheduler::CheckScheduler::new(
        fleetmon_agent::site_prober::SiteProber::new(&[]).unwrap(),
        64,
        outbox,
        metrics,
        stop.clone(),
        tokio_util::task::TaskTracker::new(),
    );
    let result = scheduler.apply(sites);
    let took = began.elapsed();
    println!(
        "agent: 1000 checks converted and scheduled in {:.1} ms ({} started), RSS +{:.1} MiB",
        took.as_secs_f64() * 1000.0,
        result.started,
        rss().saturating_sub(before) as f64 / 1048576.0
    );
    stop.cancel();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running.task).await;
}
