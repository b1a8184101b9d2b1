//! The `Ingest` gRPC service: agents' batches in, acknowledgements out.
//!
//! Each sample is validated alone, stamped with the certificate's agent id, published
//! to Kafka, and acknowledged only after Kafka's delivery report. A stream session
//! stops reading once `limits.max_in_flight_per_stream` samples are unconfirmed (so it
//! holds at most that plus the batch that crossed it), so a slow broker slows the agents
//! instead of filling memory.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::instrument;

use fleetmon::grpc::GrpcError;
use fleetmon::identity::{PeerIdentity, peer_identity};
use fleetmon::pb::ingest_server::Ingest;
use fleetmon::pb::{IngestAck, IngestBatch};
use fleetmon::samples::{Reason, SampleKind};

use crate::check_catalog::CatalogView;
use crate::config::Limits;
use crate::credentials::{Revocations, RevokedPeer};
use crate::fleet_state::FleetState;
use crate::kafka_publisher::{KafkaPublisher, PublishError, delivery_result};
use crate::metrics::{CollectorMetrics, KindLabel, ReasonLabel};
use crate::stream_acks::StreamAcks;
use crate::validation::{Rejection, ValidSample, validate};
use crate::vote_gate;
use rdkafka::producer::DeliveryFuture;

/// How far `sent` (the agent's clock) is ahead of `now` (the collector's), in
/// milliseconds, within ±100 years whatever the agent claims.
fn clock_offset_ms(sent: prost_types::Timestamp, now: SystemTime) -> i64 {
    const LIMIT_MS: i64 = 100 * 366 * 86_400 * 1000;
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    let sent = sent
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(sent.nanos.clamp(0, 999_999_999) / 1_000_000));
    sent.saturating_sub(now).clamp(-LIMIT_MS, LIMIT_MS)
}

/// Everything a session needs, shared by all connections.
#[derive(Debug)]
pub struct IngestContext {
    /// The Kafka producer.
    pub publisher: KafkaPublisher,
    /// The live fleet view.
    pub fleet: FleetState,
    /// Metrics.
    pub metrics: CollectorMetrics,
    /// Client limits.
    pub limits: Limits,
    /// Cancelled at shutdown: sessions stop reading, finish their acks and end.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown drain deadline passes: sessions still waiting for
    /// Kafka end at once with UNAVAILABLE; their agents send the rest again.
    pub abandon: CancellationToken,
    /// A session whose agent is revoked ends at once.
    pub revocations: Revocations,
    /// The check catalog as it stands: a result counts only for a check assigned to
    /// its agent ([`crate::vote_gate`]).
    pub checks: tokio::sync::watch::Receiver<Arc<CatalogView>>,
    /// Takes a hand-issued agent's name at its first connection: an agent that takes no
    /// central checks never opens a control stream. `None`: names are not recorded.
    pub claims: Option<crate::credentials::NameClaims>,
}

/// The service; cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestService {
    ctx: Arc<IngestContext>,
}

/// A batch's valid samples on their way to Kafka: resolves once Kafka reported on
/// each, awaiting the reports in the batch's order (one partition's come in order).
/// One future a batch, not one a sample, and no allocation of its own beyond the list
/// of reports: most agents send one sample a batch.
struct Delivery {
    samples: Vec<ValidSample>,
    reports: Vec<Report>,
    started: Instant,
    /// The first report not yet in.
    next: usize,
}

/// One sample's delivery report, awaited, then its result and how long after queueing
/// it came.
enum Report {
    Pending(DeliveryFuture),
    In(Result<(), PublishError>, Duration),
}

impl Report {
    /// A sample queued, or refused by the producer at once.
    fn queued(queued: Result<DeliveryFuture, PublishError>) -> Report {
        match queued {
            Ok(delivery) => Report::Pending(delivery),
            Err(error) => Report::In(Err(error), Duration::ZERO),
        }
    }

    /// Its result and latency. Once its [`Delivery`] resolved every report is in; one
    /// that is not would count as a delivery the producer gave up on.
    fn outcome(self) -> (Result<(), PublishError>, Duration) {
        match self {
            Report::In(result, latency) => (result, latency),
            Report::Pending(_) => (Err(PublishError::Canceled), Duration::ZERO),
        }
    }
}

/// What a [`Delivery`] resolves to: every report is in.
struct Reported {
    samples: Vec<ValidSample>,
    reports: Vec<Report>,
}

impl Future for Delivery {
    type Output = Reported;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reported> {
        let this = &mut *self;
        while let Some(report) = this.reports.get_mut(this.next) {
            if let Report::Pending(delivery) = report {
                let result = delivery_result(std::task::ready!(Pin::new(delivery).poll(cx)));
                *report = Report::In(result, this.started.elapsed());
            }
            this.next += 1;
        }
        Poll::Ready(Reported {
            samples: std::mem::take(&mut this.samples),
            reports: std::mem::take(&mut this.reports),
        })
    }
}

/// Why a push or a stream session ended with an error, with the gRPC code its caller
/// sees.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A batch above `limits.max_samples_per_batch`.
    #[error("batch holds {got} samples; the limit is {limit} (limits.max_samples_per_batch)")]
    BatchTooLarge {
        /// Samples in the batch.
        got: usize,
        /// The limit.
        limit: usize,
    },
    /// Kafka did not take a unary batch's sample: none of it is acknowledged.
    #[error("{0}; nothing from this batch is acknowledged, resend it")]
    BatchUndelivered(PublishError),
    /// Kafka did not take a streamed sample: the stream ends and the agent resends.
    #[error("{0}; resend unacknowledged samples")]
    StreamUndelivered(PublishError),
    /// No batch for `limits.idle_stream_seconds`.
    #[error(
        "no batch for {0} s (limits.idle_stream_seconds): stream closed; open a new one when there is something to send"
    )]
    Idle(u64),
    /// The shutdown drain deadline passed with deliveries outstanding.
    #[error(
        "collector shutting down: samples not yet acknowledged were not delivered; send them again"
    )]
    ShuttingDown,
    /// The agent's certificate was revoked.
    #[error(transparent)]
    Revoked(#[from] RevokedPeer),
    /// Reading the agent's stream failed (tonic's status).
    #[error("{}", .0.message())]
    Inbound(Status),
}

impl GrpcError for IngestError {
    fn code(&self) -> Code {
        match self {
            IngestError::BatchTooLarge { .. } => Code::ResourceExhausted,
            IngestError::BatchUndelivered(_)
            | IngestError::StreamUndelivered(_)
            | IngestError::ShuttingDown => Code::Unavailable,
            IngestError::Idle(_) => Code::DeadlineExceeded,
            IngestError::Revoked(error) => error.code(),
            // A message above the size limit is a resource limit, whatever code the
            // decoder chose (tonic says OUT_OF_RANGE only for that).
            IngestError::Inbound(status) if status.code() == Code::OutOfRange => {
                Code::ResourceExhausted
            }
            IngestError::Inbound(status) => status.code(),
        }
    }
}

fleetmon::status_from!(IngestError);

impl IngestService {
    /// A service over the shared context.
    pub fn new(ctx: Arc<IngestContext>) -> Self {
        IngestService { ctx }
    }

    /// Validates a batch: the valid samples in order, and the rejections.
    fn check_batch(
        &self,
        peer: &PeerIdentity,
        batch: IngestBatch,
    ) -> Result<(Vec<ValidSample>, Vec<Rejection>), IngestError> {
        let limits = &self.ctx.limits;
        if batch.samples.len() > limits.max_samples_per_batch {
            return Err(IngestError::BatchTooLarge {
                got: batch.samples.len(),
                limit: limits.max_samples_per_batch,
            });
        }
        self.ctx.fleet.received(&peer.name, batch.samples.len());
        let now = SystemTime::now();
        let clock_offset_ms = batch.sent_at.map(|sent| clock_offset_ms(sent, now));
        if let Some(offset) = clock_offset_ms {
            self.ctx.fleet.clock_offset(&peer.name, offset);
        }
        let checks = self.ctx.checks.borrow().clone();
        let admitted = |mut sample: ValidSample| {
            if let ValidSample::Host(host) = &mut sample {
                host.clock_offset_ms = clock_offset_ms;
            }
            if let ValidSample::Site(site) = &sample
                && let Err(v) =
                    vote_gate::admit(&checks, &self.ctx.fleet, &peer.name, site, Instant::now())
            {
                return Err(Rejection {
                    stream_id: site.stream_id.clone(),
                    seq: site.seq,
                    reason: v.reason,
                    message: v.message,
                });
            }
            Ok(sample)
        };
        let mut valid = Vec::with_capacity(batch.samples.len());
        let mut rejected = Vec::new();
        let mut hosts = 0;
        for sample in batch.samples {
            match validate(sample, &peer.name, limits, now).and_then(admitted) {
                Ok(sample) => {
                    hosts += u64::from(matches!(sample, ValidSample::Host(_)));
                    valid.push(sample);
                }
                Err(rejection) => {
                    self.count_rejected(&rejection);
                    tracing::debug!(agent_id = %peer.name, seq = rejection.seq, reason = rejection.reason.as_str(), "sample rejected");
                    rejected.push(rejection);
                }
            }
        }
        // Counted once a batch: a labelled counter is a map lookup.
        let sites = valid.len() as u64 - hosts;
        for (kind, count) in [(SampleKind::Host, hosts), (SampleKind::Site, sites)] {
            if count > 0 {
                self.ctx
                    .metrics
                    .samples_received
                    .get_or_create(&KindLabel { kind: kind.label() })
                    .inc_by(count);
            }
        }
        Ok((valid, rejected))
    }

    fn count_rejected(&self, rejection: &Rejection) {
        self.ctx
            .metrics
            .samples_rejected
            .get_or_create(&ReasonLabel {
                reason: rejection.reason.as_str(),
            })
            .inc();
    }

    /// Settles the rejected samples in `acks` and returns the valid ones, except those
    /// of a stream beyond `limits.max_streams_per_session`, which join the rejected: so
    /// one connection's acknowledgement state stays bounded.
    fn take_streams(
        &self,
        acks: &mut StreamAcks,
        valid: Vec<ValidSample>,
        rejected: &mut Vec<Rejection>,
    ) -> Vec<ValidSample> {
        let max = self.ctx.limits.max_streams_per_session;
        let refuse = |stream_id: &str, seq| Rejection {
            stream_id: stream_id.to_owned(),
            seq,
            reason: Reason::TooManyStreams,
            message: format!(
                "stream_id `{stream_id}` would be stream {} of this connection; at most {max} (limits.max_streams_per_session): an agent uses one stream per start",
                max + 1
            ),
        };
        let mut over = Vec::new();
        for r in rejected.iter() {
            if acks.admits(&r.stream_id, max) {
                acks.settled(&r.stream_id, r.seq);
            }
        }
        let taken: Vec<ValidSample> = valid
            .into_iter()
            .filter_map(|sample| {
                if acks.admits(sample.stream_id(), max) {
                    acks.queued(sample.stream_id(), sample.seq());
                    Some(sample)
                } else {
                    over.push(refuse(sample.stream_id(), sample.seq()));
                    None
                }
            })
            .collect();
        for rejection in &over {
            self.count_rejected(rejection);
        }
        rejected.extend(over);
        taken
    }

    /// Queues a batch's samples to Kafka; the future resolves once each has its
    /// delivery report.
    async fn publish(&self, samples: Vec<ValidSample>) -> Delivery {
        let started = Instant::now();
        let reports = self
            .ctx
            .publisher
            .publish_all(&samples, Report::queued)
            .await;
        Delivery {
            samples,
            reports,
            started,
            next: 0,
        }
    }

    /// Counts a batch's delivery reports and acknowledges its samples in order, up to
    /// the first that Kafka did not take; those delivered go to the fleet state.
    fn settle(
        &self,
        peer: &PeerIdentity,
        acks: &mut StreamAcks,
        reported: Reported,
    ) -> Result<(), PublishError> {
        let metrics = &self.ctx.metrics;
        let Reported {
            mut samples,
            reports,
        } = reported;
        let mut failed = None;
        let outcomes = reports.into_iter().map(Report::outcome);
        for (at, (sample, (result, latency))) in samples.iter().zip(outcomes).enumerate() {
            metrics
                .delivery_latency_seconds
                .observe(latency.as_secs_f64());
            match result {
                Ok(()) => {
                    metrics.records_delivered.inc();
                    acks.delivered(sample.stream_id(), sample.seq());
                }
                Err(error) => {
                    metrics.records_failed.inc();
                    tracing::warn!(agent_id = %peer.name, stream_id = sample.stream_id(), seq = sample.seq(), %error, "kafka delivery failed");
                    failed = Some((at, error));
                    break;
                }
            }
        }
        match failed {
            Some((at, error)) => {
                samples.truncate(at);
                self.ctx.fleet.delivered(samples);
                Err(error)
            }
            None => {
                self.ctx.fleet.delivered(samples);
                Ok(())
            }
        }
    }

    /// One unary batch: answered when every valid sample is durable.
    async fn push(
        &self,
        peer: PeerIdentity,
        remote: Option<SocketAddr>,
        batch: IngestBatch,
    ) -> Result<IngestAck, IngestError> {
        self.ctx.fleet.connected(&peer, remote, false);
        let (valid, mut rejected) = self.check_batch(&peer, batch)?;
        let mut acks = StreamAcks::default();
        let valid = self.take_streams(&mut acks, valid, &mut rejected);
        let reported = self.publish(valid).await.await;
        self.settle(&peer, &mut acks, reported)
            .map_err(IngestError::BatchUndelivered)?;
        Ok(IngestAck {
            streams: acks.take_progress(),
            rejected: rejected.into_iter().map(Into::into).collect(),
        })
    }

    /// The long-lived session of one agent stream.
    async fn run_session(
        self,
        peer: PeerIdentity,
        mut inbound: Streaming<IngestBatch>,
        acks_out: mpsc::Sender<Result<IngestAck, Status>>,
    ) {
        let max_in_flight = self.ctx.limits.max_in_flight_per_stream;
        let mut in_flight: FuturesUnordered<Delivery> = FuturesUnordered::new();
        // Samples in `in_flight`, bounded by `max_in_flight`.
        let mut in_flight_samples = 0;
        let mut acks = StreamAcks::default();
        let mut reading = true;
        let idle_limit = self.ctx.limits.idle_stream();
        let idle = tokio::time::sleep(idle_limit);
        tokio::pin!(idle);
        let revocations = self.ctx.revocations.clone();
        let revoked = revocations.revoked(&peer);
        tokio::pin!(revoked);
        let ending: Result<(), IngestError> = loop {
            if !reading && in_flight.is_empty() {
                break Ok(());
            }
            tokio::select! {
                message = inbound.next(), if reading && in_flight_samples < max_in_flight => match message {
                    Some(Ok(batch)) => {
                        idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                        let (valid, mut rejected) = match self.check_batch(&peer, batch) {
                            Ok(checked) => checked,
                            Err(status) => break Err(status),
                        };
                        let valid = self.take_streams(&mut acks, valid, &mut rejected);
                        if !valid.is_empty() {
                            in_flight_samples += valid.len();
                            let delivery = self.publish(valid).await;
                            in_flight.push(delivery);
                        }
                        if !rejected.is_empty() {
                            let ack = IngestAck {
                                streams: acks.take_progress(),
                                rejected: rejected.into_iter().map(Into::into).collect(),
                            };
                            if acks_out.send(Ok(ack)).await.is_err() {
                                break Ok(());
                            }
                        }
                    }
                    Some(Err(status)) => break Err(IngestError::Inbound(status)),
                    // The agent closed its side: finish what is in flight, then end.
                    None => reading = false,
                },
                Some(reported) = in_flight.next(), if !in_flight.is_empty() => {
                    // Settle every batch already reported, then send one ack; a sample
                    // Kafka did not take ends the stream, and the agent resends.
                    let mut next = Some(reported);
                    let mut failed = None;
                    while let Some(reported) = next {
                        in_flight_samples -= reported.samples.len();
                        if let Err(error) = self.settle(&peer, &mut acks, reported) {
                            failed = Some(error);
                            break;
                        }
                        next = in_flight.next().now_or_never().flatten();
                    }
                    if let Some(error) = failed {
                        break Err(IngestError::StreamUndelivered(error));
                    }
                    let streams = acks.take_progress();
                    if !streams.is_empty() && acks_out.send(Ok(IngestAck { streams, rejected: Vec::new() })).await.is_err() {
                        break Ok(());
                    }
                }
                () = &mut idle, if reading && in_flight.is_empty() => {
                    break Err(IngestError::Idle(idle_limit.as_secs()));
                }
                () = acks_out.closed() => break Ok(()),
                () = &mut revoked => break Err(RevokedPeer(peer.clone()).into()),
                () = self.ctx.shutdown.cancelled(), if reading => reading = false,
                () = self.ctx.abandon.cancelled() => break Err(IngestError::ShuttingDown),
            }
        };
        if let Err(error) = ending {
            let status = Status::from(error);
            tracing::info!(agent_id = %peer.name, code = ?status.code(), message = status.message(), "ingest stream ended with error");
            // The agent may be gone already: then there is no one to tell.
            let _ = acks_out.send(Err(status)).await;
        }
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<IngestAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = AckStream;

    #[instrument(skip_all)]
    async fn stream(
        &self,
        request: Request<Streaming<IngestBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let peer = peer_identity(&request)?;
        if let Some(claims) = &self.ctx.claims {
            claims.claim(&request, &peer);
        }
        let remote = request.remote_addr();
        let guard = self.ctx.fleet.connected(&peer, remote, true);
        self.ctx.metrics.connected_agents.inc();
        tracing::info!(agent_id = %peer.name, remote = ?remote, "ingest stream opened");
        let (tx, rx) = mpsc::channel(16);
        let session = self.clone();
        let inbound = request.into_inner();
        tokio::spawn(async move {
            let agent_id = peer.name.clone();
            session.clone().run_session(peer, inbound, tx).await;
            session.ctx.metrics.connected_agents.dec();
            drop(guard);
            tracing::info!(%agent_id, "ingest stream closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all)]
    async fn push(&self, request: Request<IngestBatch>) -> Result<Response<IngestAck>, Status> {
        let peer = peer_identity(&request)?;
        if let Some(claims) = &self.ctx.claims {
            claims.claim(&request, &peer);
        }
        let remote = request.remote_addr();
        Ok(Response::new(
            self.push(peer, remote, request.into_inner()).await?,
        ))
    }
}
