//! Writer scaling: 1, 2 and 4 writers in one consumer group storing the same N host
//! samples from an 8-partition topic into a fresh schema each, in the same run. Each
//! run's group settles on an empty topic of its own before the records are produced.
//! Prints rows/s (from the first stored row to the last, so the group join is left
//! out), the ratio against one writer, and for each writer the partitions it was
//! assigned and the rows it stored; each run's time starts at its first stored row.
//! The counts run interleaved (1 2 4 1 2 4 …) `FLEETMON_BENCH_REPEATS` times (default
//! 5); the table gives medians with min–max, and ratios of medians.
//!
//! Run: `cargo bench -p fleetmon-writer --bench writer_scaling` (rows:
//! `FLEETMON_BENCH_ROWS`, default 400000; writer counts: `FLEETMON_BENCH_WRITERS`,
//! default `1,2,4`; Kafka: `FLEETMON_TEST_KAFKA` or an Apache Kafka node started here).

mod common;

use std::time::{Duration, Instant};

use common::{bench_rows, committed_rows, count, produce, samples, writer_config};
use fleetmon::pb::HostSample;
use fleetmon::testkit::{
    PgSchema, Runs, TestPki, bench_repeats, create_topic, kafka_bootstrap, metrics_text,
    unique_name,
};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 8;
const DEADLINE: Duration = Duration::from_secs(300);

/// What one writer of a run did.
struct Member {
    partitions: Vec<i32>,
    rows: u64,
}

/// One run: how long from the first stored row to the last, and each writer's share.
struct Run {
    stored: usize,
    steady: Duration,
    members: Vec<Member>,
}

/// Partitions of `topic` with `fleetmon_writer_assigned_partitions … 1`, and rows stored.
fn member(body: &str, topic: &str) -> Member {
    let mut partitions = Vec::new();
    let mut rows = 0;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("fleetmon_writer_assigned_partitions{")
            && rest.contains(&format!("topic=\"{topic}\""))
            && rest.ends_with("} 1")
            && let Some(p) = rest
                .split("partition=\"")
                .nth(1)
                .and_then(|p| p.split('"').next())
        {
            partitions.push(p.parse().unwrap());
        }
        if let Some(v) =
            line.strip_prefix("fleetmon_writer_rows_inserted_total{table=\"host_samples\"} ")
        {
            rows = v.parse::<f64>().unwrap() as u64;
        }
    }
    partitions.sort_unstable();
    Member { partitions, rows }
}

/// A topic of its own for one run (with the companion topics the writer config names).
async fn fresh_topic(bootstrap: &str) -> String {
    let topic = unique_name("fleetmon-scaling-host");
    create_topic(bootstrap, &topic, PARTITIONS).await;
    for suffix in ["-sites", "-dlq"] {
        create_topic(bootstrap, &format!("{topic}{suffix}"), 1).await;
    }
    topic
}

/// Starts `writers` in one group on an empty topic, waits until the group has settled
/// (every partition assigned, every writer holding some), and only then produces the
/// records: otherwise the first writer to join stores everything before a rebalance
/// hands partitions to the others.
async fn run(pki: &TestPki, bootstrap: &str, samples: &[HostSample], writers: usize) -> Run {
    let n = samples.len();
    let topic = &fresh_topic(bootstrap).await;
    let schema = PgSchema::create().await;
    let group = unique_name("fleetmon-scaling");
    let stop = CancellationToken::new();
    let mut running = Vec::new();
    for _ in 0..writers {
        let mut config = writer_config(pki, &schema, topic);
        config.kafka.group_id = group.clone();
        running.push(fleetmon_writer::start(config, stop.clone()).await.unwrap());
    }
    let settle_deadline = Instant::now() + DEADLINE;
    loop {
        let members: Vec<Member> = running
            .iter()
            .map(|w| member(&metrics_text(w.metrics_addr), topic))
            .collect();
        let assigned: usize = members.iter().map(|m| m.partitions.len()).sum();
        let busy = members.iter().filter(|m| !m.partitions.is_empty()).count();
        if assigned == PARTITIONS as usize && busy == writers.min(PARTITIONS as usize) {
            break;
        }
        assert!(
            Instant::now() < settle_deadline,
            "the group of {writers} did not settle: {assigned} partitions assigned, {busy} writers busy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(bootstrap, topic, samples).await;
    let started = Instant::now();
    let mut first_row: Option<(Instant, usize)> = None;
    let metrics: Vec<_> = running.iter().map(|w| w.metrics_addr).collect();
    let stored = loop {
        let stored = committed_rows(&metrics, "host_samples");
        if stored > 0 && first_row.is_none() {
            first_row = Some((Instant::now(), stored));
        }
        if stored >= n || started.elapsed() > DEADLINE {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let steady = match first_row {
        Some((at, first)) => at
            .elapsed()
            .mul_f64(stored as f64 / (stored - first).max(1) as f64),
        None => DEADLINE,
    };
    let members = running
        .iter()
        .map(|w| member(&metrics_text(w.metrics_addr), topic))
        .collect();
    stop.cancel();
    for w in running {
        w.task.await.unwrap().unwrap();
    }
    assert_eq!(
        count(&schema).await as usize,
        stored,
        "rows in host_samples"
    );
    Run {
        stored,
        steady,
        members,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    fleetmon::tls::install_crypto_provider();
    // 200 000 rows took 2–3 s with two or four writers: three runs of the bench then
    // disagreed on the 2-writer ratio; 400 000 gives each count a steadier stretch.
    let n = bench_rows(400_000);
    let counts: Vec<usize> = std::env::var("FLEETMON_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,2,4".to_owned())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("FLEETMON_BENCH_WRITERS: counts like 1,2,4")
        })
        .collect();
    let pki = TestPki::new();
    let bootstrap = kafka_bootstrap();
    let samples = samples(n);
    let repeats = bench_repeats();
    println!(
        "writer scaling, {n} host rows over {PARTITIONS} partitions, {repeats} interleaved rounds of {counts:?} writers (Postgres {}, Kafka {bootstrap})",
        fleetmon::testkit::pg_url()
    );
    let mut rates: Vec<Runs> = counts.iter().map(|_| Runs::default()).collect();
    for round in 1..=repeats {
        for (&writers, rates) in counts.iter().zip(&mut rates) {
            eprintln!(
                "round {round}: {writers} writer(s) in one group: settling, then producing {n} records into {PARTITIONS} partitions"
            );
            let r = run(&pki, &bootstrap, &samples, writers).await;
            let rate = r.stored as f64 / r.steady.as_secs_f64();
            let shares: Vec<String> = r
                .members
                .iter()
                .map(|m| format!("{:?} ({})", m.partitions, m.rows))
                .collect();
            println!(
                "round {round}: {writers} writer(s) {rate:.0} rows/s; per writer: partitions (rows stored) {}",
                shares.join("  ")
            );
            if r.stored < n {
                println!("        only {} of {n} rows within {DEADLINE:?}", r.stored);
            }
            rates.0.push(rate);
        }
    }
    println!(
        "{:>7} {:>12} {:>18} {:>8}",
        "writers", "median /s", "min–max /s", "ratio"
    );
    let base = rates[0].median();
    for (writers, runs) in counts.iter().zip(&rates) {
        println!(
            "{:>7} {:>12.0} {:>18} {:>8.2}",
            writers,
            runs.median(),
            runs.spread(),
            runs.median() / base
        );
    }
    println!("(ratios are of medians, against the first count)");
    for (writers, runs) in counts.iter().zip(&rates).skip(1) {
        runs.print_paired_ratio(
            &rates[0],
            &format!("ratio: {writers} writers / {}, paired by round", counts[0]),
        );
    }
}
