//! The sender: one bidirectional stream to the collector, batches out, acks in.
//!
//! A sample goes out as soon as it is taken when nothing sent awaits its ack; else it
//! waits for those acks, for `batch_size` samples to gather, or for `batch_interval` at
//! most, and goes in one batch with the others that waited. So a quiet agent's samples
//! are not held back, and a busy one's gather into batches by themselves. Acked samples
//! leave the outbox; after any disconnect everything unacknowledged is sent again on a
//! new stream, reconnecting with exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use fleetmon::pb::IngestBatch;
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::tls::Reloading;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::metrics::AgentMetrics;
use crate::outbox::{Outbox, seq_of};

/// Batches sent but not yet acknowledged before the sender waits for acks.
pub const MAX_BATCHES_IN_FLIGHT: u64 = 8;

/// How long a stopping agent waits for the last acknowledgements.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Sender settings.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The collectors in order of preference, with mutual TLS configured; a new value
    /// (renewed certificate) makes the sender reconnect with it.
    pub endpoints: Reloading<Vec<Endpoint>>,
    /// Samples per batch at most.
    pub batch_size: usize,
    /// Longest a sample waits for the acks of earlier batches before it goes out.
    pub batch_interval: Duration,
    /// Longest pause between reconnect attempts.
    pub max_backoff: Duration,
}

/// Why a stream ended.
enum Ended {
    Shutdown,
    Disconnected(String),
    /// The TLS files changed: reconnect at once with the new ones.
    Renewed,
}

/// Runs until `shutdown`; then tries, for a few seconds, to get what is queued acked.
pub async fn run(
    config: SenderConfig,
    outbox: Arc<Outbox>,
    metrics: Arc<AgentMetrics>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut connected_before = false;
    let mut endpoints = config.endpoints.clone();
    // Which collector to try: the next one after each failure.
    let mut current = 0usize;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let (endpoint, count) = {
            let list = endpoints.borrow_and_update();
            (list[current % list.len()].clone(), list.len())
        };
        let channel = tokio::select! {
            channel = endpoint.connect() => channel,
            () = shutdown.cancelled() => return,
        };
        let ended = match channel {
            Ok(channel) => {
                if connected_before {
                    metrics.reconnects.inc();
                }
                connected_before = true;
                stream(
                    &config,
                    IngestClient::new(channel),
                    &outbox,
                    &metrics,
                    &shutdown,
                    &mut failures,
                    &mut endpoints,
                )
                .await
            }
            Err(error) => {
                metrics.connect_failures.inc();
                Ended::Disconnected(format!("cannot connect: {error}"))
            }
        };
        match ended {
            Ended::Shutdown => return,
            Ended::Renewed => {
                tracing::info!("TLS files renewed: reconnecting with them");
            }
            Ended::Disconnected(reason) => {
                failures = failures.saturating_add(1);
                current = (current + 1) % count;
                // The backoff grows with each round in which every collector failed.
                let rounds = failures.div_ceil(u32::try_from(count).unwrap_or(u32::MAX));
                let delay = backoff(rounds, config.max_backoff);
                tracing::warn!(collector = %endpoint.uri(), %reason, retry_in = ?delay, queued = outbox.len(), "collector unavailable");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Exponential backoff from 250 ms, capped, with jitter (50–100 % of the step).
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    fleetmon::backoff::Backoff::new(Duration::from_millis(250), cap)
        .jittered()
        .delay(failures)
}

async fn stream(
    config: &SenderConfig,
    mut client: IngestClient<tonic::transport::Channel>,
    outbox: &Outbox,
    metrics: &AgentMetrics,
    shutdown: &CancellationToken,
    failures: &mut u32,
    endpoints: &mut Reloading<Vec<Endpoint>>,
) -> Ended {
    let (tx, rx) = mpsc::channel::<IngestBatch>(4);
    let mut acks = match client.stream(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ended::Disconnected(format!("stream refused: {status}")),
    };
    let stream_id = outbox.stream_id();
    // Everything not yet acknowledged goes (again) on this stream.
    let mut sent_through = outbox.settled();
    let window = MAX_BATCHES_IN_FLIGHT * config.batch_size as u64;
    let mut tick = tokio::time::interval(config.batch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining: Option<tokio::time::Instant> = None;
    // False once the TLS files are no longer watched (reloading disabled).
    let mut watching = true;
    loop {
        // Send what is due: full batches always, a partial one on the tick, when
        // draining, or when nothing sent awaits its ack.
        let send_partial = tokio::select! {
            biased;
            () = shutdown.cancelled(), if draining.is_none() => {
                draining = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                true
            }
            () = async { tokio::time::sleep_until(draining.unwrap_or_else(tokio::time::Instant::now)).await }, if draining.is_some() => {
                tracing::info!(unacknowledged = outbox.len(), "stopping before every sample was acknowledged");
                return Ended::Shutdown;
            }
            ack = acks.message() => match ack {
                Ok(Some(ack)) => {
                    for rejection in &ack.rejected {
                        tracing::warn!(seq = rejection.seq, reason = %rejection.reason, message = %rejection.message, "collector rejected a sample");
                    }
                    for progress in ack.streams {
                        let removed = outbox.ack(&progress.stream_id, progress.acked_through_seq);
                        metrics.acked.inc_by(removed as u64);
                    }
                    metrics.queue_depth.set(outbox.len() as i64);
                    *failures = 0;
                    if draining.is_some() && outbox.count_after(0) == 0 {
                        return Ended::Shutdown;
                    }
                    false
                }
                Ok(None) => return Ended::Disconnected("collector closed the stream".to_owned()),
                Err(status) => return Ended::Disconnected(format!("stream failed: {status}")),
            },
            _ = tick.tick() => true,
            () = outbox.pushed() => false,
            changed = endpoints.changed(), if watching && draining.is_none() => {
                if changed.is_ok() {
                    return Ended::Renewed;
                }
                watching = false;
                false
            }
        };
        let send_partial = send_partial || sent_through <= outbox.settled();
        loop {
            if sent_through.saturating_sub(outbox.settled()) >= window {
                break;
            }
            let waiting = outbox.count_after(sent_through);
            if waiting == 0 || (waiting < config.batch_size && !send_partial) {
                break;
            }
            let samples = outbox.after(sent_through, config.batch_size);
            let Some(last) = samples.last().map(seq_of) else {
                break;
            };
            let batch = IngestBatch {
                samples,
                sent_at: Some(std::time::SystemTime::now().into()),
            };
            if tx.send(batch).await.is_err() {
                return Ended::Disconnected("stream closed while sending".to_owned());
            }
            sent_through = last;
            metrics.batches_sent.inc();
            tracing::trace!(%stream_id, sent_through, "batch sent");
        }
        if draining.is_some() && outbox.is_empty() {
            return Ended::Shutdown;
        }
    }
}
