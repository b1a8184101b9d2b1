//! The heartbeat listener: HTTPS without client certificates, where jobs signal the
//! runs of heartbeat checks with the check's token (`[heartbeat]` in the config).
//!
//! - `/ping/TOKEN` — a run succeeded; `/ping/TOKEN/start` — a run began (the next
//!   success on this collector measures its duration); `/ping/TOKEN/fail` — a run
//!   failed; `/ping/TOKEN/CODE` — a run ended with exit code CODE (0 succeeded).
//!   Any method (GET, HEAD, POST); a body, up to `max_body_bytes`, is kept as the
//!   run's message.
//! - Each signal becomes one site-check result of the check (location `ping`, method
//!   `PING`/`START`/`FAIL`/`EXIT`) published to the site checks topic, keyed by check id;
//!   the answer (200 `OK`) comes only once Kafka has it, so a job that saw `OK` lost
//!   nothing, and one that saw anything else (or nothing) may ping again.
//! - An unknown token is 404 and stores nothing; a malformed signal is 400; past
//!   `requests_per_minute_per_address`, 429.
//!
//! The writers decide the check's state by time (`heartbeat_missed`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetmon::checks::heartbeat::{self, Signal};
use fleetmon::pb::{CheckDefinition, CheckFailure, SiteCheck};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::HeartbeatConfig;
use crate::ingest_service::IngestContext;
use crate::kafka_publisher::{PublishError, delivery_result};
use crate::rate_limit::RateLimit;
use crate::validation::ValidSample;

/// The location heartbeat results carry.
pub const LOCATION: &str = "ping";

/// Longest a request may take to send its head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request may take from its head to its answer (body and Kafka included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one connection stays open.
const CONNECTION_AGE: Duration = Duration::from_secs(120);

/// What every request shares.
struct Listener {
    heartbeats: Arc<Heartbeats>,
    max_body_bytes: usize,
    per_address: RateLimit,
}

/// Heartbeat signals, from the HTTPS listener and from agents (`Control/Ping`), stored
/// as results of their check; shared.
#[derive(Debug)]
pub struct Heartbeats {
    ctx: Arc<IngestContext>,
    /// This process's stream of results: a random id and a counter.
    stream_id: String,
    seq: AtomicU64,
    /// When the current run of each check began (`/start`), by check id.
    started: Mutex<HashMap<String, Instant>>,
}

/// Serves `listener` with TLS `tls` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: fleetmon::tls::Reloading<Arc<rustls::ServerConfig>>,
    config: HeartbeatConfig,
    heartbeats: Arc<Heartbeats>,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    let shared = Arc::new(Listener {
        heartbeats,
        max_body_bytes: config.max_body_bytes,
        per_address: RateLimit::per_minute(config.requests_per_minute_per_address),
    });
    let router = axum::Router::new()
        .route("/ping/{token}", axum::routing::any(ping))
        .route("/ping/{token}/{signal}", axum::routing::any(ping_with))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: ping /ping/TOKEN, /ping/TOKEN/start, /ping/TOKEN/fail or /ping/TOKEN/EXIT-CODE\n",
            )
        })
        .with_state(shared);
    let mut incoming = Box::pin(fleetmon::tls::tls_incoming_capped(
        listener,
        tls,
        Some(config.max_connections),
    ));
    loop {
        let connection = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(error)) => {
                    tracing::warn!(%error, "heartbeat connection failed");
                    continue;
                }
                None => return Ok(()),
            },
            () = shutdown.cancelled() => return Ok(()),
        };
        let remote = tonic::transport::server::Connected::connect_info(&connection)
            .get_ref()
            .remote_addr();
        let service = router
            .clone()
            .layer(axum::Extension(Remote(remote)))
            .layer(axum::middleware::from_fn(request_deadline));
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(
                    hyper_util::rt::TokioIo::new(connection),
                    hyper_util::service::TowerToHyperService::new(service),
                );
            // A connection past its age is simply closed.
            if let Ok(Err(error)) = tokio::time::timeout(CONNECTION_AGE, served).await {
                tracing::debug!(%error, "heartbeat connection ended");
            }
        });
    }
}

/// Ends a request that takes longer than [`REQUEST_TIMEOUT`] with 408.
async fn request_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "the request took too long: the ping may not be stored; ping again\n",
        )
            .into_response(),
    }
}

/// The address a request came from.
#[derive(Debug, Clone, Copy)]
struct Remote(Option<SocketAddr>);

async fn ping(
    State(shared): State<Arc<Listener>>,
    axum::Extension(remote): axum::Extension<Remote>,
    Path(token): Path<String>,
    body: axum::body::Body,
) -> Response {
    signal(&shared, remote, &token, Some(Signal::Success), body).await
}

async fn ping_with(
    State(shared): State<Arc<Listener>>,
    axum::Extension(remote): axum::Extension<Remote>,
    Path((token, signal_name)): Path<(String, String)>,
    body: axum::body::Body,
) -> Response {
    signal(
        &shared,
        remote,
        &token,
        Signal::parse(Some(&signal_name)),
        body,
    )
    .await
}

async fn signal(
    shared: &Listener,
    remote: Remote,
    token: &str,
    signal: Option<Signal>,
    body: axum::body::Body,
) -> Response {
    let address = remote.0.map(|a| a.ip().to_string()).unwrap_or_default();
    if !shared.per_address.allow(&address) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many pings from this address (heartbeat.requests_per_minute_per_address): wait a minute\n",
        )
            .into_response();
    }
    let Some(signal) = signal else {
        return (
            StatusCode::BAD_REQUEST,
            "unknown signal: after the token use start, fail or an exit code 0-255 (or nothing, for a success)\n",
        )
            .into_response();
    };
    let Some(check) = shared.heartbeats.by_token(token) else {
        return (
            StatusCode::NOT_FOUND,
            "no heartbeat check has this token: copy the ping URL again (fleetmon checks rotate-token gives a new one)\n",
        )
            .into_response();
    };
    let message = read_message(body, shared.max_body_bytes).await;
    match shared
        .heartbeats
        .signal(&check, LOCATION, signal, message)
        .await
    {
        Ok(()) => (StatusCode::OK, "OK\n").into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not stored (Kafka did not take it): ping again\n",
        )
            .into_response(),
    }
}

/// The body as text, at most `limit` bytes of it (cut at a character boundary, said so).
async fn read_message(body: axum::body::Body, limit: usize) -> String {
    let mut kept = Vec::new();
    let mut cut = false;
    let mut frames = body.into_data_stream();
    while let Some(Ok(frame)) = frames.next().await {
        let room = limit.saturating_sub(kept.len());
        if frame.len() > room {
            kept.extend_from_slice(&frame[..room]);
            cut = true;
            break;
        }
        kept.extend_from_slice(&frame);
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if cut {
        // A cut inside a character shows as U+FFFD; drop it.
        while text.ends_with('\u{FFFD}') {
            text.pop();
        }
        text.push_str(" … (cut at heartbeat.max_body_bytes)");
    }
    text
}

impl Heartbeats {
    /// Signals stored through `ctx` (its publisher, metrics and check catalog).
    pub fn new(ctx: Arc<IngestContext>) -> Self {
        Heartbeats {
            ctx,
            stream_id: format!("heartbeat-{}", uuid::Uuid::new_v4()),
            seq: AtomicU64::new(0),
            started: Mutex::default(),
        }
    }

    /// The heartbeat check whose ping token is `token`.
    pub fn by_token(&self, token: &str) -> Option<Arc<CheckDefinition>> {
        let view = self.ctx.checks.borrow();
        view.index()
            .heartbeat(&heartbeat::token_sha256(token))
            .cloned()
    }

    /// Check `id` as the catalog holds it now.
    pub fn by_id(&self, id: &str) -> Option<Arc<CheckDefinition>> {
        self.ctx.checks.borrow().records.get(id).cloned()
    }

    /// Stores `signal` of `check`, from `location`, with the job's `message`; returns
    /// once Kafka has it.
    pub async fn signal(
        &self,
        check: &CheckDefinition,
        location: &str,
        signal: Signal,
        message: String,
    ) -> Result<(), PublishError> {
        self.ctx.metrics.heartbeats_received.inc();
        let result = self.result(check, location, signal, message);
        let delivered = match self.ctx.publisher.publish(&ValidSample::Site(result)).await {
            Ok(delivery) => delivery_result(delivery.await),
            Err(error) => Err(error),
        };
        if let Err(error) = &delivered {
            self.ctx.metrics.records_failed.inc();
            tracing::warn!(check_id = %check.id, %error, "heartbeat not delivered to Kafka");
        } else {
            self.ctx.metrics.records_delivered.inc();
        }
        delivered
    }

    /// The result a signal of `check` from `location` stores.
    fn result(
        &self,
        check: &CheckDefinition,
        location: &str,
        signal: Signal,
        message: String,
    ) -> SiteCheck {
        let now = SystemTime::now();
        let started = {
            let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
            match signal {
                Signal::Start => {
                    started.insert(check.id.clone(), Instant::now());
                    None
                }
                _ => started.remove(&check.id),
            }
        };
        let (status_code, error_message) = match signal {
            Signal::Exit(code) if code != 0 => {
                let said = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                };
                (Some(u32::from(code)), format!("exit code {code}{said}"))
            }
            Signal::Exit(code) => (Some(u32::from(code)), message),
            Signal::Fail if message.is_empty() => (None, "the job reported a failure".to_owned()),
            _ => (None, message),
        };
        SiteCheck {
            agent_id: location.to_owned(),
            stream_id: self.stream_id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            checked_at: Some(prost_types::Timestamp::from(now)),
            url: fleetmon::checks::kind_and_target(check).1,
            method: signal.method().to_owned(),
            status_code,
            ok: signal.ok(),
            failure: if signal.ok() {
                CheckFailure::Unspecified
            } else {
                CheckFailure::Other
            } as i32,
            error_message,
            response_time_ms: started
                .map(|at| at.elapsed().as_secs_f64() * 1000.0)
                .unwrap_or_default(),
            check_id: check.id.clone(),
            check_version: check.version,
            interval_seconds: fleetmon::checks::interval_seconds(check),
            ..SiteCheck::default()
        }
    }
}
