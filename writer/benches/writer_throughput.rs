//! Writer throughput against a baseline measured in the same run:
//!
//! 1. raw binary COPY of N host rows straight into `host_samples` (same indexed,
//!    partitioned table, same Postgres) — the ceiling;
//! 2. the writer consuming the same N rows from Kafka into a fresh schema;
//! 3. the same two for N site checks into `site_checks` (the writer also keeps
//!    their minute and hour rollups and the agents' rows);
//! 4. the writer replaying all N again (a new consumer group): every row a duplicate;
//! 5. with `FLEETMON_BENCH_KAFKA_TLS=1`: the writer reading over SASL_SSL (SCRAM-SHA-512)
//!    from the same broker (a node started here with `scripts/kafka --tls`; every other
//!    path uses its plaintext listener), to price TLS to Kafka;
//! 6. with `FLEETMON_BENCH_PG_TLS=1`: the writer into a PostgreSQL server of its own
//!    that takes both plaintext and TLS, once under `sslmode=disable` and once under
//!    `verify-full`, alternating, to price TLS to Postgres.
//!
//! 1, 2 and 3 alternate `FLEETMON_BENCH_REPEATS` times (default 5), each run into a fresh
//! schema after a `CHECKPOINT` (so that no run pays for the page writes of the one
//! before); every run is printed and ratios are of medians, with the spread beside them.
//!
//! Run: `cargo bench -p fleetmon-writer --bench writer_throughput` (rows:
//! `FLEETMON_BENCH_ROWS`, default 200000; Kafka: `FLEETMON_TEST_KAFKA` or an Apache Kafka node started here).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{
    bench_rows, checks, committed_rows, count, count_in, produce, produce_checks, samples, scrape,
    writer_config,
};
use fleetmon::pki::LeafSpec;
use fleetmon::testkit::{
    KafkaCluster, PgCluster, PgSchema, Runs, TestPki, bench_repeats, create_topic, kafka_bootstrap,
    pg_checkpoint, unique_name,
};
use fleetmon_writer::consume::row_batch::{CheckRow, HostRow, decode_host, decode_site};
use fleetmon_writer::store::{PostgresSink, copy_checks_into, copy_hosts_into, day_of};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// The rows a raw COPY stores: host samples or site checks.
#[derive(Clone, Copy)]
enum Rows<'a> {
    Hosts(&'a [HostRow]),
    Checks(&'a [CheckRow]),
}

/// Raw binary COPY of `rows` into a fresh schema's `host_samples` or `site_checks`,
/// in one transaction.
async fn raw_copy(pki: &TestPki, rows: Rows<'_>, days: &BTreeSet<i64>) -> Duration {
    let schema = PgSchema::create().await;
    let sink = PostgresSink::new(&writer_config(pki, &schema, "unused").postgres).unwrap();
    sink.migrate().await.unwrap();
    sink.ensure_partitions(days).await.unwrap();
    let mut client = sink.background().get().await.unwrap();
    pg_checkpoint(schema.url()).await;
    let started = Instant::now();
    let tx = client.transaction().await.unwrap();
    match rows {
        Rows::Hosts(rows) => {
            for chunk in rows.chunks(10_000) {
                copy_hosts_into(&tx, "host_samples", chunk.iter())
                    .await
                    .unwrap();
            }
        }
        Rows::Checks(rows) => {
            for chunk in rows.chunks(10_000) {
                copy_checks_into(&tx, "site_checks", chunk.iter())
                    .await
                    .unwrap();
            }
        }
    }
    tx.commit().await.unwrap();
    started.elapsed()
}

/// A writer with a group of its own reading `topic` into `schema` (new, empty) until
/// `table` holds `n` rows, with `configure` applied last: (steady-state time scaled to
/// `n` rows, start to last row), and the schema.
async fn writer_run(
    pki: &TestPki,
    (topic, n, table): (&str, usize, &str),
    schema: PgSchema,
    configure: &(impl Fn(&mut fleetmon_writer::WriterConfig) + ?Sized),
) -> (Duration, Duration, PgSchema) {
    let stop = CancellationToken::new();
    let mut config = writer_config(pki, &schema, topic);
    config.kafka.group_id = unique_name("fleetmon-bench-writer");
    configure(&mut config);
    pg_checkpoint(&config.postgres.url).await;
    let started = Instant::now();
    let writer = fleetmon_writer::start(config, stop.clone()).await.unwrap();
    // Steady state: rows stored after the first observation over the time they took
    // (leaves out the consumer group join and the first batch's linger).
    let mut first_row: Option<(Instant, usize)> = None;
    loop {
        let stored = committed_rows(&[writer.metrics_addr], table);
        if stored > 0 && first_row.is_none() {
            first_row = Some((Instant::now(), stored));
        }
        if stored >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            panic!("writer stored only {stored} of {n} rows in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    let (first_at, first_count) = first_row.unwrap();
    let steady = first_at
        .elapsed()
        .mul_f64(n as f64 / (n - first_count).max(1) as f64);
    stop.cancel();
    writer.task.await.unwrap().unwrap();
    assert_eq!(
        count_in(&schema, table).await as usize,
        n,
        "rows in {table}"
    );
    (steady, total, schema)
}

/// A new group replaying all `n` records into `schema`, where every row exists:
/// steady-state time scaled to `n`.
async fn replay_run(
    pki: &TestPki,
    schema: &PgSchema,
    (bootstrap, topic): (&str, &str),
    n: usize,
) -> Duration {
    let stop = CancellationToken::new();
    let mut config = writer_config(pki, schema, topic);
    config.kafka.bootstrap_servers = bootstrap.to_owned();
    config.kafka.group_id = unique_name("fleetmon-bench-replay");
    let started = Instant::now();
    let replay = fleetmon_writer::start(config, stop.clone()).await.unwrap();
    let mut first_dup: Option<(Instant, usize)> = None;
    loop {
        let skipped = scrape(
            replay.metrics_addr,
            "fleetmon_writer_duplicates_skipped_total",
        ) as usize;
        if skipped > 0 && first_dup.is_none() {
            first_dup = Some((Instant::now(), skipped));
        }
        if skipped >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            panic!("replay skipped only {skipped} of {n} rows in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (first_at, first_count) = first_dup.unwrap();
    let steady = first_at
        .elapsed()
        .mul_f64(n as f64 / (n - first_count).max(1) as f64);
    stop.cancel();
    replay.task.await.unwrap().unwrap();
    assert_eq!(count(schema).await as usize, n, "replay added no rows");
    steady
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    fleetmon::tls::install_crypto_provider();
    let n = bench_rows(200_000);
    let repeats = bench_repeats();
    let samples = samples(n);
    let rows: Vec<HostRow> = samples
        .iter()
        .map(|s| decode_host(Some(&s.encode_to_vec()), None).unwrap())
        .collect();
    let checks = checks(n);
    let check_rows: Vec<CheckRow> = checks
        .iter()
        .map(|c| decode_site(Some(&c.encode_to_vec()), None).unwrap())
        .collect();
    let days: BTreeSet<i64> = rows
        .iter()
        .map(|r| day_of(r.ts))
        .chain(check_rows.iter().map(|r| day_of(r.ts)))
        .collect();
    let pki = TestPki::new();
    let tls_cluster = std::env::var("FLEETMON_BENCH_KAFKA_TLS")
        .is_ok_and(|v| v == "1")
        .then(|| KafkaCluster::start_tls(&pki, "bench", "bench-password"));

    // The rows into Kafka once; every writer run reads them all with a group of its own.
    let bootstrap = match &tls_cluster {
        Some(cluster) => cluster.bootstrap().to_owned(),
        None => kafka_bootstrap(),
    };
    let plaintext = |config: &mut fleetmon_writer::WriterConfig| {
        config.kafka.bootstrap_servers = bootstrap.clone();
    };
    let over_tls = |config: &mut fleetmon_writer::WriterConfig| {
        let cluster = tls_cluster.as_ref().expect("a TLS cluster");
        config.kafka.bootstrap_servers = cluster.sasl_ssl_bootstrap();
        config.kafka.tls = Some(fleetmon::config::KafkaTls {
            ca: Some(pki.dir().join("ca.pem")),
            ..Default::default()
        });
        config.kafka.sasl = Some(fleetmon::config::KafkaSasl {
            mechanism: "SCRAM-SHA-512".into(),
            username: "bench".into(),
            password: Some("bench-password".into()),
            password_file: None,
        });
        fleetmon::config::add_kafka_security(
            config.kafka.tls.as_ref(),
            config.kafka.sasl.as_ref(),
            &mut config.kafka.options,
        )
        .expect("a valid TLS config");
    };
    let mut tls_runs = Runs::default();
    // A server of its own for the Postgres TLS comparison: both runs on it, one without TLS.
    let pg_tls = std::env::var("FLEETMON_BENCH_PG_TLS")
        .is_ok_and(|v| v == "1")
        .then(|| {
            let issued = pki
                .ca()
                .issue(&LeafSpec::server("postgres", vec!["localhost".to_owned()]))
                .expect("issue the Postgres certificate");
            PgCluster::start_tls_or_plaintext(&issued.cert_pem, &issued.key_pem)
        });
    let pg_tls_url = |mode: &str| {
        let port = pg_tls.as_ref().expect("a TLS Postgres").port();
        format!("postgres://postgres@localhost:{port}/postgres?sslmode={mode}")
    };
    let pg_over_tls = |config: &mut fleetmon_writer::WriterConfig| {
        plaintext(config);
        config.postgres.url = pg_tls_url("verify-full");
        config.postgres.ca = Some(pki.dir().join("ca.pem"));
    };
    let (mut pg_plain_runs, mut pg_tls_runs) = (Runs::default(), Runs::default());
    let topic = unique_name("fleetmon-bench-host");
    create_topic(&bootstrap, &topic, 4).await;
    produce(&bootstrap, &topic, &samples).await;
    for suffix in ["-sites", "-dlq"] {
        create_topic(&bootstrap, &format!("{topic}{suffix}"), 1).await;
    }
    // The checks on a topic set of their own (its host topic stays empty).
    let check_topic = unique_name("fleetmon-bench-checks");
    create_topic(&bootstrap, &check_topic, 1).await;
    create_topic(&bootstrap, &format!("{check_topic}-sites"), 4).await;
    create_topic(&bootstrap, &format!("{check_topic}-dlq"), 1).await;
    produce_checks(&bootstrap, &format!("{check_topic}-sites"), &checks).await;
    // Warm both paths once (Postgres caches, the writer binary's first connections).
    raw_copy(&pki, Rows::Hosts(&rows[..rows.len().min(10_000)]), &days).await;
    raw_copy(&pki, Rows::Checks(&check_rows[..n.min(10_000)]), &days).await;

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let (mut raw, mut steady, mut total) = (Runs::default(), Runs::default(), Runs::default());
    let (mut raw_checks, mut steady_checks) = (Runs::default(), Runs::default());
    let mut last_schema = None;
    println!(
        "writer throughput, {n} host rows per run, {repeats} interleaved runs, each into a fresh schema (Postgres {}, Kafka {bootstrap})",
        fleetmon::testkit::pg_url()
    );
    for run in 1..=repeats {
        let r = rate(raw_copy(&pki, Rows::Hosts(&rows), &days).await);
        let (s, t, schema) = writer_run(
            &pki,
            (&topic, n, "host_samples"),
            PgSchema::create().await,
            &plaintext,
        )
        .await;
        let (s, t) = (rate(s), rate(t));
        println!(
            "run {run}: raw COPY {r:.0} rows/s, writer steady {s:.0} rows/s, writer start-to-last {t:.0} rows/s"
        );
        let rc = rate(raw_copy(&pki, Rows::Checks(&check_rows), &days).await);
        let (sc, _, _) = writer_run(
            &pki,
            (&check_topic, n, "site_checks"),
            PgSchema::create().await,
            &plaintext,
        )
        .await;
        let sc = rate(sc);
        println!("run {run}: site checks: raw COPY {rc:.0} rows/s, writer steady {sc:.0} rows/s");
        raw_checks.0.push(rc);
        steady_checks.0.push(sc);
        if tls_cluster.is_some() {
            let (tls, _, _) = writer_run(
                &pki,
                (&topic, n, "host_samples"),
                PgSchema::create().await,
                &over_tls,
            )
            .await;
            println!(
                "run {run}: writer over SASL_SSL, steady {:.0} rows/s",
                rate(tls)
            );
            tls_runs.0.push(rate(tls));
        }
        if pg_tls.is_some() {
            let plain_url = pg_tls_url("disable");
            let (plain, _, _) = writer_run(
                &pki,
                (&topic, n, "host_samples"),
                PgSchema::create_in(&plain_url).await,
                &plaintext,
            )
            .await;
            let (tls, _, _) = writer_run(
                &pki,
                (&topic, n, "host_samples"),
                PgSchema::create_in(&plain_url).await,
                &pg_over_tls,
            )
            .await;
            println!(
                "run {run}: writer to its own Postgres, steady: plaintext {:.0} rows/s, verify-full {:.0} rows/s",
                rate(plain),
                rate(tls)
            );
            pg_plain_runs.0.push(rate(plain));
            pg_tls_runs.0.push(rate(tls));
        }
        raw.0.push(r);
        steady.0.push(s);
        total.0.push(t);
        last_schema = Some(schema);
    }
    let schema = last_schema.expect("at least one run");
    let replay = rate(replay_run(&pki, &schema, (&bootstrap, &topic), n).await);

    println!(
        "{:<46} {:>12} {:>18} {:>8}",
        "path", "median /s", "min–max /s", "ratio"
    );
    let line = |name: &str, runs: &Runs, ratio: f64| {
        println!(
            "{:<46} {:>12.0} {:>18} {:>8.2}",
            name,
            runs.median(),
            runs.spread(),
            ratio
        );
    };
    line("raw binary COPY into host_samples (baseline)", &raw, 1.0);
    let vs_raw = |runs: &Runs| runs.median() / raw.median();
    line(
        "writer, steady state (after the first batch)",
        &steady,
        vs_raw(&steady),
    );
    line(
        "writer: start to last row (incl. group join)",
        &total,
        vs_raw(&total),
    );
    line(
        "raw binary COPY into site_checks (baseline)",
        &raw_checks,
        1.0,
    );
    line(
        "writer, site checks, steady state (goal >= 0.8)",
        &steady_checks,
        steady_checks.median() / raw_checks.median(),
    );
    println!(
        "{:<46} {:>12.0} {:>18} {:>8.2}",
        "replay, all duplicates, steady state (1 run)",
        replay,
        "",
        replay / steady.median()
    );
    println!(
        "(replay ratio is against the fresh writer's median steady state: > 1 means a replay is cheaper)"
    );
    if !tls_runs.0.is_empty() {
        line(
            "writer over SASL_SSL, steady state",
            &tls_runs,
            vs_raw(&tls_runs),
        );
        println!(
            "{:<46} {:>12} {:>18} {:>8.2}  (goal >= 0.85)",
            "Kafka over TLS vs plaintext (writer)",
            "",
            "",
            tls_runs.median() / steady.median()
        );
    }
    if !pg_tls_runs.0.is_empty() {
        line(
            "writer to own Postgres, plaintext, steady",
            &pg_plain_runs,
            vs_raw(&pg_plain_runs),
        );
        line(
            "writer to own Postgres, verify-full, steady",
            &pg_tls_runs,
            vs_raw(&pg_tls_runs),
        );
        println!(
            "{:<46} {:>12} {:>18} {:>8.2}  (goal >= 0.85)",
            "Postgres over TLS vs plaintext (writer)",
            "",
            "",
            pg_tls_runs.median() / pg_plain_runs.median()
        );
    }
    println!("paired ratios (each run against the baseline run of its round): median, min–max");
    steady.print_paired_ratio(&raw, "ratio: writer / raw COPY, host rows (goal >= 0.9)");
    steady_checks.print_paired_ratio(
        &raw_checks,
        "ratio: writer / raw COPY, site checks (goal >= 0.8)",
    );
    if !tls_runs.0.is_empty() {
        tls_runs.print_paired_ratio(&steady, "ratio: writer, Kafka SASL_SSL / plaintext");
    }
    if !pg_tls_runs.0.is_empty() {
        pg_tls_runs.print_paired_ratio(
            &pg_plain_runs,
            "ratio: writer, Postgres verify-full / plaintext",
        );
    }
    if steady_checks.median() > raw_checks.median() {
        println!(
            "BENCH BUG: the writer beat a raw COPY into site_checks ({:.2}): the baseline does more work than it should, this is not a result",
            steady_checks.median() / raw_checks.median()
        );
    }
    if vs_raw(&steady) > 1.0 {
        println!(
            "BENCH BUG: the writer beat a raw COPY into the same table ({:.2}): the baseline does more work than it should, this is not a result",
            vs_raw(&steady)
        );
    }
}
