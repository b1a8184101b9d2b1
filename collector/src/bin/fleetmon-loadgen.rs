//! `fleetmon-loadgen`: simulates many agents streaming host samples to a collector.
//!
//! Every simulated agent has a certificate of its own (`spiffe://fleetmon/agent/PREFIX-N`,
//! issued at start from the CA in `--certs`, which needs `ca.pem` and `ca-key.pem`), its
//! own TLS connection and its own ingest stream, so the collector sees as many agents,
//! connections and Kafka keys as it would in a fleet. Each sends `--rate` samples per
//! second for `--seconds` as an agent's sender does (a sample at once when nothing sent
//! awaits its ack, else with the others due on the ack or at the next tick of
//! `--batch-interval-ms`), then waits (30 s at
//! most) for the last acknowledgements. The summary gives samples sent, acknowledged
//! and rejected, connection errors, and ack latency percentiles (batch sent → ack
//! covering it received). Each sample is stamped with the time it fell due, on a
//! sampling clock of the agent's own, so its wait for the next batch is counted in
//! end-to-end latency as an agent's would be. `--idle` opens the streams and holds them
//! without sending, to price idle connections.
//!
//! With `--collector` given more than once, agent N starts on collector N mod K and,
//! as an agent does, moves to the next collector when its stream fails, sending again
//! every sample not yet acknowledged (the writer stores each seq once). The summary
//! then also counts reconnections and the longest time an agent went without an ack.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use fleetmon::identity::Role;
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::pb::sample::Kind;
use fleetmon::pb::{HostSample, IngestAck, IngestBatch, Sample};
use fleetmon::pki::{CertificateAuthority, LeafSpec};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How long the simulated agents wait for their last acknowledgements.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Simulates N agents streaming host samples over mutual TLS and reports ack latency.
#[derive(Debug, Parser)]
#[command(name = "fleetmon-loadgen", version)]
struct Cli {
    /// A collector; give it several times to spread the agents over them, each moving
    /// to the next when its stream fails.
    #[arg(long = "collector", default_value = "https://127.0.0.1:7400")]
    collectors: Vec<String>,
    /// Directory with the CA (`ca.pem`, `ca-key.pem`) that issues the agents' certificates.
    #[arg(long, default_value = "certs")]
    certs: PathBuf,
    /// Name to verify the collector's certificate against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Samples per second per agent.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Samples due while a batch awaits its ack go out on its ack or on this tick, every
    /// this many milliseconds (as `outbox.batch_interval_ms`).
    #[arg(long, default_value_t = 1000)]
    batch_interval_ms: u64,
    /// Agent names are PREFIX-0, PREFIX-1, …; stream ids start with PREFIX-N-.
    #[arg(long, default_value = "loadgen")]
    prefix: String,
    /// Hold the streams open without sending anything for `--seconds` (to measure
    /// what idle connections cost the collector); logs when all are open.
    #[arg(long)]
    idle: bool,
    /// At most this many TLS handshakes and stream openings at once.
    #[arg(long, default_value_t = 200)]
    max_connecting: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// What one simulated agent saw.
#[derive(Debug, Default)]
struct AgentRun {
    /// The ingest stream was opened.
    opened: bool,
    sent: u64,
    acked: u64,
    rejected: u64,
    error: Option<String>,
    /// Ack latencies, microseconds, one per sample.
    latencies: Vec<u64>,
    /// Streams opened again after one failed.
    reconnects: u64,
    /// The longest time between acks while samples awaited one.
    longest_unacked: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.rate > 0.0 && cli.agents > 0,
        "--rate and --agents must be positive"
    );
    fleetmon::tls::install_crypto_provider();
    let ca = CertificateAuthority::load(&cli.certs)
        .with_context(|| format!("loading the CA from {}", cli.certs.display()))?;
    let mut endpoints = Vec::with_capacity(cli.agents);
    for n in 0..cli.agents {
        let issued = ca.issue(&LeafSpec::client(
            Role::Agent,
            &format!("{}-{n}", cli.prefix),
        ))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca.cert_pem()))
            .identity(Identity::from_pem(issued.cert_pem, issued.key_pem))
            .domain_name(cli.server_name.clone());
        // This agent's endpoint at each collector, its first one first.
        let mut own = Vec::with_capacity(cli.collectors.len());
        for k in 0..cli.collectors.len() {
            let collector = &cli.collectors[(n + k) % cli.collectors.len()];
            own.push(
                Endpoint::from_shared(collector.clone())?
                    .tls_config(tls.clone())?
                    .connect_timeout(Duration::from_secs(10)),
            );
        }
        endpoints.push(own);
    }
    let start = Instant::now();
    let wall_start = SystemTime::now();
    let send_until = start + Duration::from_secs(cli.seconds);
    let interval = Duration::from_millis(cli.batch_interval_ms.max(1));
    let opening = Opening {
        permits: Arc::new(Semaphore::new(cli.max_connecting.max(1))),
        open: Arc::new(AtomicUsize::new(0)),
        agents: cli.agents,
        idle: cli.idle,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (n, endpoint) in endpoints.into_iter().enumerate() {
        let stream_id = format!("{}-{n}-{}", cli.prefix, uuid::Uuid::new_v4());
        // Spread the agents' batch ticks over one interval, as a real fleet is.
        let offset = interval.mul_f64(n as f64 / cli.agents as f64);
        // and their sampling clocks independently of those ticks (golden-ratio spread).
        let phase = (n as f64 * 0.618_033_988_75).fract();
        let schedule = Schedule {
            rate: cli.rate,
            interval,
            first_tick: start + offset,
            wall_first_tick: wall_start + offset,
            phase,
            send_until,
        };
        tasks.spawn(simulate(opening.clone(), endpoint, stream_id, schedule));
    }
    let mut runs = Vec::with_capacity(cli.agents);
    while let Some(run) = tasks.join_next().await {
        runs.push(run.expect("agent task does not panic"));
    }
    let elapsed = start.elapsed();
    report(&cli, &runs, elapsed);
    let failed = runs.iter().filter(|r| r.error.is_some()).count();
    anyhow::ensure!(failed == 0, "{failed} simulated agents failed");
    Ok(())
}

/// Shared by the simulated agents while they connect.
#[derive(Clone)]
struct Opening {
    /// Bounds concurrent handshakes.
    permits: Arc<Semaphore>,
    /// Streams opened so far.
    open: Arc<AtomicUsize>,
    agents: usize,
    idle: bool,
}

impl Opening {
    fn opened(&self) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        if open == self.agents {
            eprintln!("all {open} streams open");
        }
    }
}

/// When one simulated agent samples and sends.
struct Schedule {
    /// Samples per second.
    rate: f64,
    /// Between batches.
    interval: Duration,
    /// The first batch tick, and the wall-clock time it stands for.
    first_tick: Instant,
    wall_first_tick: SystemTime,
    /// Samples fall due this fraction of a sample period after a batch tick.
    phase: f64,
    /// No sample falls due after this.
    send_until: Instant,
}

/// One batch sent and not yet acknowledged.
struct InFlight {
    first: u64,
    last: u64,
    /// When it was first sent: its ack latency counts from here, through any
    /// reconnection.
    sent: Instant,
    /// Its samples, with several collectors (empty with one: nothing is sent again).
    samples: Vec<Sample>,
}

/// An ingest stream opened at `endpoint`: its sending half and its acks.
async fn open(
    endpoint: &Endpoint,
) -> Result<(mpsc::Sender<IngestBatch>, Streaming<IngestAck>), String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let (tx, rx) = mpsc::channel::<IngestBatch>(16);
    let acks = IngestClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|status| format!("stream: {status}"))?
        .into_inner();
    Ok((tx, acks))
}

fn batch(samples: Vec<Sample>) -> IngestBatch {
    IngestBatch {
        samples,
        sent_at: Some(SystemTime::now().into()),
    }
}

async fn simulate(
    opening: Opening,
    endpoints: Vec<Endpoint>,
    stream_id: String,
    schedule: Schedule,
) -> AgentRun {
    let Schedule {
        rate,
        interval,
        first_tick,
        wall_first_tick,
        phase,
        send_until,
    } = schedule;
    let mut run = AgentRun::default();
    let permit = opening.permits.acquire().await.expect("never closed");
    let (tx, mut acks) = match open(&endpoints[0]).await {
        Ok(stream) => stream,
        Err(error) => {
            run.error = Some(error);
            return run;
        }
    };
    drop(permit);
    run.opened = true;
    opening.opened();
    if opening.idle {
        tokio::select! {
            () = tokio::time::sleep_until(send_until.into()) => {}
            ended = acks.message() => {
                run.error = Some(format!("idle stream ended early: {ended:?}"));
            }
        }
        return run;
    }
    let per_sample = Duration::from_secs_f64(1.0 / rate);
    // Samples fall due `phase` of a sample period after the first batch tick: a
    // sampling clock of the agent's own, apart from its batch ticks.
    let mut next_sample = first_tick + per_sample.mul_f64(phase);
    let mut ticks = tokio::time::interval_at(first_tick.into(), interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Each unacknowledged batch, oldest first.
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // Since when the oldest unacknowledged sample has waited for an ack to progress.
    let mut waiting_since: Option<Instant> = None;
    let mut sending = true;
    let mut sender = Some(tx);
    let mut at = 0;
    let drain_until = send_until + DRAIN_TIMEOUT;
    loop {
        // As an agent's sender: what is due goes on the batch tick, and at once
        // whenever nothing sent awaits its ack.
        let mut send_due = false;
        let mut failure = tokio::select! {
            _ = ticks.tick(), if sending => {
                send_due = true;
                None
            }
            () = tokio::time::sleep_until(next_sample.into()), if sending && in_flight.is_empty() && next_sample < send_until => {
                send_due = true;
                None
            }
            ack = acks.message() => match ack {
                Ok(Some(ack)) => {
                    run.rejected += ack.rejected.len() as u64;
                    let through = ack.streams.iter().map(|s| s.acked_through_seq).max().unwrap_or(0);
                    let now = Instant::now();
                    let before = in_flight.len();
                    while let Some(batch) = in_flight.front() {
                        if batch.last > through {
                            break;
                        }
                        let micros = now.duration_since(batch.sent).as_micros() as u64;
                        run.latencies.extend(std::iter::repeat_n(micros, (batch.last - batch.first + 1) as usize));
                        in_flight.pop_front();
                    }
                    if in_flight.len() < before && let Some(since) = waiting_since {
                        run.longest_unacked = run.longest_unacked.max(now.duration_since(since));
                        waiting_since = (!in_flight.is_empty()).then_some(now);
                    }
                    run.acked = through.max(run.acked);
                    send_due = sending && in_flight.is_empty();
                    None
                }
                Ok(None) if !sending && in_flight.is_empty() => None,
                Ok(None) => Some("stream ended by the collector".to_owned()),
                Err(status) => Some(format!("stream ended: {status}")),
            },
            () = tokio::time::sleep_until(drain_until.into()) => {
                run.error = Some(format!("{} samples unacknowledged after the drain timeout", run.sent - run.acked));
                break;
            }
        };
        if send_due && failure.is_none() {
            let now = Instant::now();
            let first = run.sent + 1;
            let mut samples = Vec::new();
            while next_sample <= now && next_sample < send_until {
                run.sent += 1;
                // Stamped with when it was due, as an agent stamps a sample when it
                // takes it, not when its batch leaves.
                let sampled_at = wall_first_tick + next_sample.duration_since(first_tick);
                samples.push(sample(&stream_id, run.sent, sampled_at));
                next_sample += per_sample;
            }
            if !samples.is_empty() {
                waiting_since.get_or_insert(now);
                // Kept to send again only where there is another collector to send them to.
                let kept = if endpoints.len() > 1 {
                    samples.clone()
                } else {
                    Vec::new()
                };
                in_flight.push_back(InFlight {
                    first,
                    last: run.sent,
                    sent: now,
                    samples: kept,
                });
                if let Some(tx) = &sender
                    && tx.send(batch(samples)).await.is_err()
                {
                    failure = Some("stream closed while sending".to_owned());
                }
            }
            if now >= send_until {
                // Everything is sent: close our side, keep reading acks.
                sending = false;
                sender = None;
            }
        }
        if let Some(reason) = failure {
            if endpoints.len() == 1 {
                run.error = Some(reason);
                break;
            }
            // As an agent does: the next collector, and every unacknowledged sample again.
            match reconnect(&endpoints, &mut at, drain_until).await {
                Ok((tx, new_acks)) => {
                    run.reconnects += 1;
                    acks = new_acks;
                    for batch_in_flight in &in_flight {
                        if tx
                            .send(batch(batch_in_flight.samples.clone()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    sender = sending.then_some(tx);
                }
                Err(error) => {
                    run.error = Some(format!("{reason}; then {error}"));
                    break;
                }
            }
        }
        if !sending && in_flight.is_empty() {
            break;
        }
    }
    run
}

/// Opens a stream at the collectors after `at`, in turn, backing off from 100 ms to
/// 2 s between tries, until one answers or `until`.
async fn reconnect(
    endpoints: &[Endpoint],
    at: &mut usize,
    until: Instant,
) -> Result<(mpsc::Sender<IngestBatch>, Streaming<IngestAck>), String> {
    let mut backoff = Duration::from_millis(100);
    loop {
        *at = (*at + 1) % endpoints.len();
        tokio::time::sleep(backoff).await;
        match open(&endpoints[*at]).await {
            Ok(stream) => return Ok(stream),
            Err(error) if Instant::now() >= until => return Err(format!("no collector: {error}")),
            Err(_) => backoff = (backoff * 2).min(Duration::from_secs(2)),
        }
    }
}

fn sample(stream_id: &str, seq: u64, sampled_at: SystemTime) -> Sample {
    Sample {
        kind: Some(Kind::Host(HostSample {
            stream_id: stream_id.to_owned(),
            seq,
            sampled_at: Some(sampled_at.into()),
            hostname: "loadgen".to_owned(),
            os_name: "Linux".to_owned(),
            os_version: "loadgen".to_owned(),
            kernel_version: "6".to_owned(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            cpu_usage_percent: 12.5,
            load_average_1m: 0.5,
            load_average_5m: 0.4,
            load_average_15m: 0.3,
            memory_total_bytes: 8 << 30,
            memory_used_bytes: 3 << 30,
            memory_available_bytes: 5 << 30,
            process_count: 200,
            uptime_seconds: 86_400,
            ..Default::default()
        })),
    }
}

fn report(cli: &Cli, runs: &[AgentRun], elapsed: Duration) {
    let sent: u64 = runs.iter().map(|r| r.sent).sum();
    let acked: u64 = runs.iter().map(|r| r.acked).sum();
    let rejected: u64 = runs.iter().map(|r| r.rejected).sum();
    let reconnects: u64 = runs.iter().map(|r| r.reconnects).sum();
    let moved = runs.iter().filter(|r| r.reconnects > 0).count();
    let longest_unacked_ms = runs
        .iter()
        .map(|r| r.longest_unacked.as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    let opened = runs.iter().filter(|r| r.opened).count();
    let errors: Vec<&str> = runs.iter().filter_map(|r| r.error.as_deref()).collect();
    let mut latencies: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[at] as f64 / 1000.0
    };
    let (p50, p95, p99, max) = (pct(0.50), pct(0.95), pct(0.99), pct(1.0));
    let rate = acked as f64 / elapsed.as_secs_f64();
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "agents": cli.agents,
                "rate_per_agent": cli.rate,
                "seconds": cli.seconds,
                "batch_interval_ms": cli.batch_interval_ms,
                "idle": cli.idle,
                "streams_opened": opened,
                "sent": sent,
                "acked": acked,
                "rejected": rejected,
                "errors": errors.len(),
                "reconnects": reconnects,
                "agents_reconnected": moved,
                "longest_unacked_ms": longest_unacked_ms,
                "first_error": errors.first(),
                "elapsed_seconds": elapsed.as_secs_f64(),
                "acked_per_second": rate,
                "ack_latency_ms": {"p50": p50, "p95": p95, "p99": p99, "max": max},
            })
        );
    } else {
        println!(
            "agents {}  rate {}/s each  {} s  batch every {} ms",
            cli.agents, cli.rate, cli.seconds, cli.batch_interval_ms
        );
        println!(
            "streams opened {opened}{}",
            if cli.idle { " (idle)" } else { "" }
        );
        println!(
            "sent {sent}  acked {acked}  rejected {rejected}  errors {}  acked/s {rate:.0}",
            errors.len()
        );
        println!("ack latency ms: p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}  max {max:.1}");
        println!(
            "reconnects {reconnects} (by {moved} agents)  longest without an ack {longest_unacked_ms:.0} ms"
        );
        if let Some(first) = errors.first() {
            println!("first error: {first}");
        }
    }
}
