//! Wiring: TLS listener, Kafka publisher, the gRPC services with their role checks,
//! health, reflection and the metrics endpoint, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetmon::server::{BindError, SHUTDOWN_GRACE, TaskFailed, Tasks, bind, bind_metrics};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;

use fleetmon::access::{Authorize, Caller, Rules};
use fleetmon::identity::OperatorRole;
use fleetmon::pb::checks_server::ChecksServer;
use fleetmon::pb::control_server::ControlServer;
use fleetmon::pb::credentials_server::CredentialsServer;
use fleetmon::pb::enrollment_server::EnrollmentServer;
use fleetmon::pb::fleet_server::FleetServer;
use fleetmon::pb::ingest_server::IngestServer;
use fleetmon::pb::renewal_server::RenewalServer;

use crate::audit_log::AuditLog;
use crate::check_catalog::{CatalogError, CheckCatalog};
use crate::checks_service::ChecksService;
use crate::config::CollectorConfig;
use crate::control_service::ControlService;
use crate::credentials::{CredentialStore, RequireAgent};
use crate::enrollment_service::{EnrollmentService, Issuer};
use crate::fleet_service::FleetService;
use crate::fleet_state::FleetState;
use crate::ingest_service::{IngestContext, IngestService};
use crate::kafka_publisher::{KafkaPublisher, PublishError};
use crate::metrics::CollectorMetrics;
use crate::status_codes::OversizeIsResourceExhausted;
use fleetmon::check_secrets::{CheckSecrets, SecretKey};

/// Why the collector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// TLS files.
    #[error(transparent)]
    Tls(#[from] fleetmon::tls::TlsError),
    /// Kafka at start-up.
    #[error(transparent)]
    Kafka(#[from] PublishError),
    /// The audit topic at start-up.
    #[error(transparent)]
    Audit(#[from] crate::audit_log::AuditLogError),
    /// The checks or credentials topic at start-up.
    #[error(transparent)]
    Checks(#[from] CatalogError),
    /// The issuing CA of `[enrollment]`.
    #[error("[enrollment] issuing CA: {0}")]
    IssuingCa(#[from] fleetmon::pki::PkiError),
    /// The key of `[check_secrets]`.
    #[error("[check_secrets] {0}")]
    CheckSecrets(#[from] fleetmon::check_secrets::SecretsError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The gRPC server failed.
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// A task of it panicked or failed (the metrics endpoint, the enrollment listener…).
    #[error(transparent)]
    Task(#[from] TaskFailed),
    /// The task watching the others panicked.
    #[error("{0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The gRPC services the collector serves (health and reflection name them).
const SERVICES: &[&str] = &[
    <IngestServer<IngestService> as NamedService>::NAME,
    <ControlServer<ControlService> as NamedService>::NAME,
    <FleetServer<FleetService> as NamedService>::NAME,
    <ChecksServer<ChecksService> as NamedService>::NAME,
    <RenewalServer<EnrollmentService> as NamedService>::NAME,
    <CredentialsServer<EnrollmentService> as NamedService>::NAME,
];

/// Who may call what on the collector's mutual-TLS port ([`fleetmon::access`]).
const ACCESS: Rules = &[
    ("/fleetmon.v1.Ingest/", Caller::Agent),
    ("/fleetmon.v1.Control/", Caller::Agent),
    ("/fleetmon.v1.Renewal/", Caller::Agent),
    (
        "/fleetmon.v1.Fleet/",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Checks/ListChecks",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Checks/GetCheck",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Checks/",
        Caller::Operator(OperatorRole::Editor),
    ),
    (
        "/fleetmon.v1.Credentials/ListAgentCredentials",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Credentials/",
        Caller::Operator(OperatorRole::Admin),
    ),
    ("/grpc.health.v1.Health/", Caller::AnyPeer),
    ("/grpc.reflection.v1.ServerReflection/", Caller::AnyPeer),
    (
        "/grpc.reflection.v1alpha.ServerReflection/",
        Caller::AnyPeer,
    ),
];

/// A started collector: its bound addresses and the task serving them.
#[derive(Debug)]
pub struct RunningCollector {
    /// The gRPC address actually bound.
    pub grpc_addr: SocketAddr,
    /// The metrics address actually bound.
    pub metrics_addr: SocketAddr,
    /// The enrollment listener's address, with `[enrollment]`.
    pub enroll_addr: Option<SocketAddr>,
    /// The heartbeat listener's address, with `[heartbeat]`.
    pub heartbeat_addr: Option<SocketAddr>,
    /// Resolves when the collector has stopped.
    pub task: JoinHandle<Result<(), CollectorError>>,
}

/// Runs the collector until `shutdown` is cancelled.
pub async fn run(
    config: CollectorConfig,
    shutdown: CancellationToken,
) -> Result<(), CollectorError> {
    let running = start(config, shutdown).await?;
    running.task.await?
}

/// Connects to Kafka, binds both listeners and starts serving in the background.
pub async fn start(
    config: CollectorConfig,
    shutdown: CancellationToken,
) -> Result<RunningCollector, CollectorError> {
    // Bound at once: while Kafka is awaited, health answers NOT_SERVING there (over
    // the configured TLS; revocations are known once Kafka is).
    let (listener, grpc_addr) = bind(config.listen).await?;
    let (listener, publisher) = fleetmon::server::not_serving_until(
        listener,
        fleetmon::tls::reloading_server_config(&config.tls)?,
        SERVICES,
        "Kafka",
        KafkaPublisher::connect_when_up(&config.kafka, &shutdown),
    )
    .await?;
    let publisher = publisher?;
    let catalog = CheckCatalog::open_checks(&config.kafka, shutdown.clone()).await?;
    let credentials = CredentialStore::open_credentials(&config.kafka, shutdown.clone()).await?;
    let revocations = credentials.revocations(fleetmon::tls::reloading_crl_serials(&config.tls)?);
    let handshake_check = revocations.clone();
    let tls = fleetmon::tls::reloading_server_config_with(
        &config.tls,
        Some(Arc::new(move |peer| handshake_check.is_revoked(peer))),
    )?;
    let issuer = issuer(&config)?;
    let secrets = CheckSecrets::new(match &config.check_secrets {
        Some(secrets) => Some(SecretKey::load(&secrets.key_file)?),
        None => None,
    });
    if let Some(key_id) = secrets.key_id() {
        tracing::info!(key_id, "secret check header values sealed with this key");
    }
    let audit = AuditLog::open(&config.kafka).await?;
    let mut enrollment =
        EnrollmentService::new(credentials.clone(), issuer).audited_in(audit.clone());
    if let Some(limits) = &config.enrollment {
        enrollment = enrollment.limited(
            limits.requests_per_minute_per_address,
            limits.requests_per_minute_per_token,
        );
    }
    let enroll_listener = match &config.enrollment {
        Some(e) => Some(bind(e.listen).await?),
        None => None,
    };
    let enroll_addr = enroll_listener.as_ref().map(|(_, addr)| *addr);
    let heartbeat_listener = match &config.heartbeat {
        Some(h) => Some(bind(h.listen).await?),
        None => None,
    };
    let heartbeat_addr = heartbeat_listener.as_ref().map(|(_, addr)| *addr);

    let mut registry = Registry::default();
    let metrics = CollectorMetrics::new(&mut registry);
    let (metrics_server, metrics_addr) = bind_metrics(config.metrics_listen, registry).await?;

    let fleet = FleetState::with_limits(
        config.limits.max_latest_sites_per_agent,
        metrics.latest_sites_dropped.clone(),
    );
    let forgotten = metrics.agents_forgotten.clone();
    let watch_skipped = metrics.watch_events_skipped.clone();
    // Sessions stop reading at shutdown but keep acking what is in flight.
    let sessions_stop = shutdown.child_token();
    let abandon = CancellationToken::new();
    let ctx = Arc::new(IngestContext {
        publisher,
        fleet: fleet.clone(),
        metrics,
        limits: config.limits.clone(),
        shutdown: sessions_stop,
        abandon: abandon.clone(),
        revocations: revocations.clone(),
        checks: catalog.watch(),
        claims: Some(crate::credentials::NameClaims::new(credentials.clone())),
    });
    let heartbeats = Arc::new(crate::heartbeat::Heartbeats::new(ctx.clone()));
    let max_message = config.limits.max_message_bytes;
    let ingest =
        IngestServer::new(IngestService::new(ctx.clone())).max_decoding_message_size(max_message);
    let fleet_service = FleetServer::new(FleetService::new(fleet.clone(), watch_skipped));
    let checks_service = ChecksServer::new(
        ChecksService::new(
            catalog.clone(),
            fleet.clone(),
            config.limits.min_check_interval_seconds,
            secrets.clone(),
        )
        .audited_in(audit),
    );
    let fleet_view = fleet.clone();
    let control_service = ControlServer::new(
        ControlService::new(
            catalog.clone(),
            fleet,
            credentials.clone(),
            revocations.clone(),
            config.assignment.trust_agent_labels,
            Duration::from_secs(config.limits.idle_control_seconds),
            secrets,
        )
        .pinging(heartbeats.clone()),
    );
    let (health_reporter, health) = fleetmon::grpc::health_service().await;
    let health_task = watch_health(
        health_reporter,
        ctx.clone(),
        catalog.clone(),
        credentials.clone(),
        shutdown.clone(),
    );
    let (reflection_v1, reflection_v1alpha) = fleetmon::grpc::reflection_services(SERVICES);

    let router = fleetmon::server::grpc_builder()
        .max_concurrent_streams(Some(config.limits.max_concurrent_streams_per_connection))
        .layer(OversizeIsResourceExhausted)
        .layer(Authorize(ACCESS))
        .add_service(InterceptedService::new(
            ingest,
            RequireAgent(revocations.clone()),
        ))
        .add_service(InterceptedService::new(
            control_service,
            RequireAgent(revocations.clone()),
        ))
        .add_service(InterceptedService::new(
            RenewalServer::new(enrollment.clone()),
            RequireAgent(revocations.clone()),
        ))
        .add_service(CredentialsServer::new(enrollment.clone()))
        .add_service(fleet_service)
        .add_service(checks_service)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let incoming = fleetmon::tls::tls_incoming(listener, tls);
    tracing::info!(%grpc_addr, %metrics_addr, kafka = %config.kafka.bootstrap_servers, "collector listening");

    let enroll_serve = enroll_listener
        .map(|(listener, addr)| {
            tracing::info!(%addr, "enrollment listening");
            enrollment_server(&config, listener, enrollment, shutdown.clone())
        })
        .transpose()?;

    let forget_after = Duration::from_secs(config.limits.forget_agents_after_seconds);
    let mut tasks = Tasks::new(shutdown.clone());
    tasks.spawn_fallible("metrics endpoint", metrics_server.serve(shutdown.clone()));
    tasks.spawn("health", health_task);
    tasks.spawn(
        "forgetting idle agents",
        forget_idle_agents(fleet_view, forget_after, forgotten, shutdown.clone()),
    );
    if let Some(serve) = enroll_serve {
        tasks.spawn_fallible("enrollment listener", serve);
    }
    if let (Some((listener, addr)), Some(heartbeat)) = (heartbeat_listener, &config.heartbeat) {
        tracing::info!(%addr, "heartbeat listening");
        tasks.spawn_fallible(
            "heartbeat listener",
            crate::heartbeat::serve(
                listener,
                fleetmon::tls::reloading_http1_config(&config.tls, "heartbeat")?,
                heartbeat.clone(),
                heartbeats.clone(),
                shutdown.clone(),
            ),
        );
    }
    let supervisor = tasks.supervise(SHUTDOWN_GRACE);
    let task = tokio::spawn(serve_and_drain(
        router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
        Duration::from_secs(config.shutdown_drain_seconds),
        ctx,
        abandon,
        supervisor,
        shutdown,
    ));
    Ok(RunningCollector {
        grpc_addr,
        metrics_addr,
        enroll_addr,
        heartbeat_addr,
        task,
    })
}

/// The enrollment server on `listener`: server-authenticated TLS for hosts without
/// certificates, the Enrollment service only, small requests, short calls and short
/// connections.
fn enrollment_server(
    config: &CollectorConfig,
    listener: tokio::net::TcpListener,
    enrollment: EnrollmentService,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + use<>, CollectorError> {
    let limits = config
        .enrollment
        .as_ref()
        .expect("a listener means [enrollment]");
    let incoming = fleetmon::tls::tls_incoming_capped(
        listener,
        fleetmon::tls::reloading_enrollment_config(&config.tls)?,
        Some(limits.max_connections),
    );
    Ok(fleetmon::server::grpc_builder()
        .timeout(ENROLL_CALL_TIMEOUT)
        .max_connection_age(ENROLL_CONNECTION_AGE)
        .max_connection_age_grace(ENROLL_CALL_TIMEOUT)
        .http2_max_header_list_size(ENROLL_MAX_HEADERS)
        .max_concurrent_streams(Some(4))
        .add_service(
            EnrollmentServer::new(enrollment).max_decoding_message_size(ENROLL_MAX_REQUEST),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()))
}

/// Runs the agents' server until it ends; after `shutdown`, streams end once what they
/// sent is acknowledged, and with Kafka unreachable that never happens, so the drain has
/// a deadline (agents resend what was not acked). Then flushes the producer and waits
/// for the other tasks.
async fn serve_and_drain(
    serve: impl Future<Output = Result<(), tonic::transport::Error>>,
    drain: Duration,
    ctx: Arc<IngestContext>,
    abandon: CancellationToken,
    supervisor: JoinHandle<Result<(), TaskFailed>>,
    shutdown: CancellationToken,
) -> Result<(), CollectorError> {
    tokio::pin!(serve);
    let served = tokio::select! {
        served = &mut serve => served,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(seconds = drain.as_secs(), "drain deadline passed: ending the streams still waiting for Kafka");
            abandon.cancel();
            tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await.unwrap_or(Ok(()))
        }
    };
    // The server ending for any reason stops the tasks too.
    shutdown.cancel();
    ctx.publisher.flush(SHUTDOWN_GRACE).await;
    let tasks_result = supervisor.await;
    tracing::info!("collector stopped");
    served?;
    Ok(tasks_result??)
}

/// Every minute until `shutdown`, forgets agents the live view has not heard from for
/// `after` ([`FleetState::forget_idle`]).
async fn forget_idle_agents(
    fleet: FleetState,
    after: Duration,
    forgotten: prometheus_client::metrics::counter::Counter,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let gone = fleet.forget_idle(after, std::time::SystemTime::now());
        if gone > 0 {
            forgotten.inc_by(gone as u64);
            tracing::info!(
                agents = gone,
                "forgot agents unseen for {after:?} (their rows stay in PostgreSQL)"
            );
        }
    }
}

/// The longest an enrollment call may take.
const ENROLL_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Enrollment connections are closed after this long, busy or idle.
const ENROLL_CONNECTION_AGE: Duration = Duration::from_secs(30);
/// Header bytes an enrollment request may carry.
const ENROLL_MAX_HEADERS: u32 = 16 * 1024;
/// An enrollment request's size at most: a token, a name and a certificate request.
const ENROLL_MAX_REQUEST: usize = 64 * 1024;

/// The issuing CA and what it signs with, when `[enrollment]` is configured.
/// An issuing CA without its name constraints is used, with a warning: refusing it
/// would stop enrollment on upgrade, and servers refuse non-agent certificates it
/// signs anyway (`fleetmon::tls`); `fleetmon certs check` says how to replace it.
fn issuer(config: &CollectorConfig) -> Result<Option<Issuer>, CollectorError> {
    Ok(match &config.enrollment {
        Some(enrollment) => Some(Issuer {
            ca: {
                let ca = fleetmon::pki::CertificateAuthority::from_files(
                    &enrollment.issuing_ca,
                    &enrollment.issuing_ca_key,
                )?;
                for problem in fleetmon::pki::check_issuing_ca(ca.cert_pem()) {
                    tracing::warn!(
                        issuing_ca = %enrollment.issuing_ca.display(),
                        %problem,
                        "the issuing CA is not constrained: replace it (fleetmon certs check --dir DIR says how)"
                    );
                }
                ca
            },
            root_pem: std::fs::read_to_string(&config.tls.client_ca).map_err(|source| {
                fleetmon::pki::PkiError::MissingCa {
                    path: config.tls.client_ca.clone(),
                    dir: config
                        .tls
                        .client_ca
                        .parent()
                        .unwrap_or(std::path::Path::new("."))
                        .to_owned(),
                    source,
                }
            })?,
            lifetime: Duration::from_secs(enrollment.certificate_lifetime_seconds),
        }),
        None => None,
    })
}

/// The health of the collector and its services: SERVING while Kafka takes samples and
/// the checks and credentials topics answer (each lost topic is created again).
fn watch_health(
    reporter: fleetmon::grpc::HealthReporter,
    ctx: Arc<IngestContext>,
    catalog: CheckCatalog,
    credentials: CredentialStore,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    fleetmon::grpc::watch_health(
        reporter,
        SERVICES,
        move || {
            let (ctx, catalog, credentials) = (ctx.clone(), catalog.clone(), credentials.clone());
            async move {
                let timeout = fleetmon::grpc::HEALTH_PROBE_TIMEOUT;
                ctx.publisher.check(timeout).await?;
                catalog.check(timeout).await?;
                credentials.check(timeout).await
            }
        },
        shutdown,
    )
}
