//! What alert evaluation costs the writer, and how fast a failure becomes a webhook.
//!
//! 1. Throughput, alerts on against off, alternating over fresh topics and schemas
//!    (`FLEETMON_BENCH_REPEATS`, default 5): 10 000 central checks, each run by 3 of
//!    1 000 agents, 4 runs each one interval (60 s) apart (120 000 rows, 1 in 50 checks
//!    failing at two of its locations, so alerts open); rows/s from the first stored
//!    row to the last, and over the second half alone (runs 3 and 4: every pair has a
//!    stored state by then, where the first half makes 30 000; the second half
//!    refreshes each location's newest-run time once and opens the failing checks'
//!    alerts, in run 4).
//! 2. Latency: one writer with a webhook; 50 checks, each with three locations of
//!    which two fail three times; the quorum-completing failure is stamped when sent,
//!    and the time to its `opened` request at a real HTTP receiver is measured.
//!
//! Run: `cargo bench -p fleetmon-writer --bench alert_evaluation` (Kafka:
//! `FLEETMON_TEST_KAFKA` or an Apache Kafka node started here).

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{committed_rows, writer_config};
use fleetmon::pb::{SITE_CHECK_CONTENT_TYPE, SiteCheck};
use fleetmon::testkit::{
    PgSchema, Runs, TestPki, WebhookReceiver, bench_repeats, create_topic, kafka_bootstrap,
    unique_name,
};
use fleetmon_writer::config::WebhookConfig;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const CHECKS: u64 = 10_000;
const AGENTS: u64 = 1_000;
const LOCATIONS: u64 = 3;
const RUNS: u64 = 4;
const LATENCY_CHECKS: u64 = 50;

fn result(check: u64, agent: u64, seq: u64, ts: SystemTime, ok: bool) -> SiteCheck {
    SiteCheck {
        agent_id: format!("agent-{agent:04}"),
        stream_id: format!("stream-{agent:04}"),
        seq,
        checked_at: Some(prost_types::Timestamp::from(ts)),
        url: format!("https://site-{check}.example/"),
        method: "GET".into(),
        status_code: Some(if ok { 200 } else { 503 }),
        ok,
        failure: if ok {
            0
        } else {
            fleetmon::pb::CheckFailure::StatusMismatch as i32
        },
        error_message: if ok {
            String::new()
        } else {
            "unexpected status 503".into()
        },
        response_time_ms: 42.0,
        check_id: format!("check-{check:05}"),
        check_version: 1,
        ..Default::default()
    }
}

/// The load: every check at its three locations, run after run, one interval (60 s,
/// the default) apart, the last one 70 s ago.
fn load() -> Vec<SiteCheck> {
    let start = SystemTime::now() - Duration::from_secs(60 * (RUNS - 1) + 70);
    let mut seqs = vec![0u64; AGENTS as usize];
    let mut rows = Vec::new();
    for run in 0..RUNS {
        for check in 0..CHECKS {
            for location in 0..LOCATIONS {
                let agent = (check * LOCATIONS + location) % AGENTS;
                seqs[agent as usize] += 1;
                let failing = check % 50 == 0 && location < 2 && run > 0;
                rows.push(result(
                    check,
                    agent,
                    seqs[agent as usize],
                    start + Duration::from_secs(60 * run),
                    !failing,
                ));
            }
        }
    }
    rows
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Sends `rows` keyed by check id, as the collector does; waits for every delivery.
async fn produce(producer: &FutureProducer, topic: &str, rows: &[SiteCheck]) {
    for chunk in rows.chunks(20_000) {
        let payloads: Vec<Vec<u8>> = chunk.iter().map(|r| r.encode_to_vec()).collect();
        let sends = chunk.iter().zip(&payloads).map(|(row, payload)| {
            producer.send(
                FutureRecord::to(topic)
                    .key(&row.check_id)
                    .payload(payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "content-type",
                        value: Some(SITE_CHECK_CONTENT_TYPE),
                    })),
                Duration::from_secs(60),
            )
        });
        for delivered in futures::future::join_all(sends).await {
            delivered.expect("delivered");
        }
    }
}

async fn topics(bootstrap: &str) -> String {
    let topic = unique_name("fleetmon-alertbench");
    create_topic(bootstrap, &format!("{topic}-sites"), 8).await;
    for suffix in ["", "-dlq", "-checks"] {
        create_topic(bootstrap, &format!("{topic}{suffix}"), 1).await;
    }
    topic
}

fn config(
    pki: &TestPki,
    schema: &PgSchema,
    topic: &str,
    alerts: bool,
) -> fleetmon_writer::WriterConfig {
    let mut config = writer_config(pki, schema, topic);
    config.kafka.checks_topic = format!("{topic}-checks");
    config.alerts.enabled = alerts;
    config
}

/// Rows per second storing `rows` (already on `topic`) with alerts on or off: over all
/// of them, and over the second half (runs 3 and 4, once every pair has a stored state).
async fn throughput(pki: &TestPki, topic: &str, n: usize, alerts: bool) -> Rates {
    let schema = PgSchema::create().await;
    let stop = CancellationToken::new();
    let writer = fleetmon_writer::start(config(pki, &schema, topic, alerts), stop.clone())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, usize)> = None;
    let mut half: Option<(Instant, usize)> = None;
    loop {
        let stored = committed_rows(&[writer.metrics_addr], "site_checks");
        if stored > 0 && first.is_none() {
            first = Some((Instant::now(), stored));
        }
        if stored >= n / 2 && half.is_none() {
            half = Some((Instant::now(), stored));
        }
        if stored >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {stored} of {n} rows stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate_from = |(at, count): (Instant, usize)| (n - count) as f64 / at.elapsed().as_secs_f64();
    let rates = Rates {
        all: rate_from(first.unwrap()),
        known_pairs: rate_from(half.unwrap()),
    };
    assert_eq!(
        schema.scalar("SELECT count(*) FROM site_checks").await as usize,
        n,
        "rows in site_checks"
    );
    if alerts {
        let down = schema
            .scalar("SELECT count(DISTINCT subject) FROM alerts WHERE kind = 'check_down'")
            .await;
        assert_eq!(down, (CHECKS / 50) as i64, "every failing check alerted");
        let all = schema.scalar("SELECT count(*) FROM alerts").await;
        if all != down {
            let kinds = schema
                .connect()
                .await
                .query(
                    "SELECT kind || ' ' || count(*) || ' (' || count(resolved_at) || ' resolved)' \
                     FROM alerts GROUP BY kind ORDER BY kind",
                    &[],
                )
                .await
                .unwrap();
            let kinds: Vec<String> = kinds.iter().map(|r| r.get(0)).collect();
            eprintln!("  alerts by kind: {}", kinds.join(", "));
        }
    }
    stop.cancel();
    writer.task.await.unwrap().unwrap();
    rates
}

/// What [`throughput`] measures.
struct Rates {
    /// Rows per second, all runs.
    all: f64,
    /// Rows per second, the second half: runs 3 and 4.
    known_pairs: f64,
}

/// Milliseconds from each quorum-completing failure's timestamp to its webhook request.
async fn latency(pki: &TestPki, bootstrap: &str) -> Vec<f64> {
    let topic = topics(bootstrap).await;
    let schema = PgSchema::create().await;
    let receiver = WebhookReceiver::start().await;
    let stop = CancellationToken::new();
    let mut writer_config = config(pki, &schema, &topic, true);
    writer_config.batch.linger_ms = 50;
    writer_config.alerts.webhooks = vec![WebhookConfig {
        name: "bench".into(),
        url: receiver.url(),
        format: Default::default(),
        send_resolved: false,
        headers: Default::default(),
    }];
    let writer = fleetmon_writer::start(writer_config, stop.clone())
        .await
        .unwrap();
    let producer = producer(bootstrap);
    let sites = format!("{topic}-sites");
    let base = SystemTime::now() - Duration::from_secs(30);
    let mut seq = 0;
    // Locations of their own per check: two agents failing every check would be two
    // unreachable locations, not 50 site outages.
    let mut next = |check: u64, location: u64, secs, ok| {
        seq += 1;
        let agent = check * LOCATIONS + location;
        result(check, agent, seq, base + Duration::from_secs(secs), ok)
    };
    let mut warmup = Vec::new();
    for check in 0..LATENCY_CHECKS {
        warmup.push(next(check, 0, 0, true));
        warmup.push(next(check, 1, 0, true));
        warmup.push(next(check, 2, 0, true));
        for secs in 1..=3 {
            warmup.push(next(check, 0, secs, false));
        }
        for secs in 1..=2 {
            warmup.push(next(check, 1, secs, false));
        }
    }
    produce(&producer, &sites, &warmup).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut sent = Vec::new();
    for check in 0..LATENCY_CHECKS {
        let mut last = next(check, 1, 3, false);
        let now = SystemTime::now();
        last.checked_at = Some(prost_types::Timestamp::from(now));
        produce(&producer, &sites, &[last]).await;
        sent.push((format!("check-{check:05}"), now));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    receiver
        .wait_until("every opened notification", |_| {
            receiver.delivered().len() as u64 == LATENCY_CHECKS
        })
        .await;
    let requests = receiver.requests();
    let mut latencies = Vec::new();
    for (check, at) in &sent {
        let request = requests
            .iter()
            .find(|r| {
                r.body["notifications"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n["alert"]["subject"] == check.as_str())
            })
            .expect("notified");
        latencies.push(
            request
                .received_at
                .duration_since(*at)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0,
        );
    }
    stop.cancel();
    writer.task.await.unwrap().unwrap();
    latencies
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    fleetmon::tls::install_crypto_provider();
    let pki = TestPki::new();
    let bootstrap = kafka_bootstrap();
    let repeats = bench_repeats();
    let rows = load();
    let n = rows.len();
    eprintln!("producing {n} check results once; each run reads them with a group of its own");
    let topic = topics(&bootstrap).await;
    produce(&producer(&bootstrap), &format!("{topic}-sites"), &rows).await;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let (mut on_known, mut off_known) = (Vec::new(), Vec::new());
    for round in 0..repeats {
        eprintln!("round {}/{repeats}", round + 1);
        let rates = throughput(&pki, &topic, n, false).await;
        off.push(rates.all);
        off_known.push(rates.known_pairs);
        let rates = throughput(&pki, &topic, n, true).await;
        on.push(rates.all);
        on_known.push(rates.known_pairs);
    }
    let (on, off) = (Runs(on), Runs(off));
    let (on_known, off_known) = (Runs(on_known), Runs(off_known));
    println!(
        "alert evaluation: {CHECKS} checks x {LOCATIONS} locations of {AGENTS} agents, {n} rows, {repeats} alternating runs"
    );
    println!(
        "  alerts off: {:.0} rows/s ({})",
        off.median(),
        off.spread()
    );
    println!("  alerts on:  {:.0} rows/s ({})", on.median(), on.spread());
    on.print_paired_ratio(
        &off,
        "ratio: alerts on / off, paired by round (goal >= 0.9)",
    );
    off_known.print_row("runs 3 and 4 only: alerts off, rows/s", 0);
    on_known.print_row("runs 3 and 4 only: alerts on, rows/s", 0);
    on_known.print_paired_ratio(
        &off_known,
        "ratio, runs 3 and 4 only (every pair's state stored before): alerts on / off",
    );
    let ratio = on.median() / off.median();
    println!(
        "  ratio on/off: {ratio:.2} (goal >= 0.9){}",
        if ratio < 0.9 { "  BELOW GOAL" } else { "" }
    );
    let latencies = latency(&pki, &bootstrap).await;
    println!(
        "failed check (quorum-completing, stamped when sent) -> webhook request, {} checks: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (goal p99 <= 1000 ms)",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
}
