//! Wiring: migrations, partitions, the consume-and-store pipeline, the History
//! service behind mutual TLS, and the metrics endpoint, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetmon::backoff::Backoff;
use fleetmon::server::{BindError, SHUTDOWN_GRACE, TaskFailed, Tasks, bind, bind_metrics};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

use fleetmon::access::{Authorize, Caller, Rules};
use fleetmon::grpc::NotServing;
use fleetmon::identity::OperatorRole;
use fleetmon::pb::alerts_server::AlertsServer;
use fleetmon::pb::audit_server::AuditServer;
use fleetmon::pb::dead_letters_server::DeadLettersServer;
use fleetmon::pb::history_server::HistoryServer;

use crate::alerts::notifier::Notifier;
use crate::alerts::sender::Sender;
use crate::alerts::store::{BatchRules, Channels};
use crate::alerts::timed_rules;
use crate::api::alerts::AlertsService;
use crate::api::audit::AuditService;
use crate::api::dead_letters::DeadLetterService;
use crate::api::fleet_metrics::{self, FleetMetrics};
use crate::api::history::HistoryService;
use crate::config::WriterConfig;
use crate::consume::kafka_source::{self, DeadLetters};
use crate::consume::pipeline::{Pipeline, PipelineError};
use crate::consume::progress::{self, Progress};
use crate::consume::topic_mirror::{self, Mirrors};
use crate::consume::{audit_mirror, check_mirror, label_mirror};
use crate::metrics::WriterMetrics;
use crate::store::{PostgresSink, Retention, SinkError};

/// How often partitions are created ahead and expired ones dropped.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// How long the writer waits at start for Kafka to create (or confirm) its dead-letter topic.
pub const DEAD_LETTER_TOPIC_TIMEOUT: Duration = Duration::from_secs(30);

/// Who may call what on the writer ([`fleetmon::access`]): operators only.
const ACCESS: Rules = &[
    (
        "/fleetmon.v1.History/",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Alerts/ListAlerts",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Alerts/GetAlert",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Alerts/ListSilences",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Alerts/ListMaintenance",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Alerts/ListIncidents",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Alerts/GetIncident",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.Alerts/",
        Caller::Operator(OperatorRole::Editor),
    ),
    (
        "/fleetmon.v1.DeadLetters/ListDeadLetters",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.DeadLetters/GetDeadLetter",
        Caller::Operator(OperatorRole::Viewer),
    ),
    (
        "/fleetmon.v1.DeadLetters/",
        Caller::Operator(OperatorRole::Editor),
    ),
    (
        "/fleetmon.v1.Audit/",
        Caller::Operator(OperatorRole::Viewer),
    ),
    ("/grpc.health.v1.Health/", Caller::AnyPeer),
    ("/grpc.reflection.v1.ServerReflection/", Caller::AnyPeer),
    (
        "/grpc.reflection.v1alpha.ServerReflection/",
        Caller::AnyPeer,
    ),
];

/// The gRPC services the writer serves (health and reflection name them).
pub const SERVICES: &[&str] = &[
    <HistoryServer<HistoryService> as NamedService>::NAME,
    <AlertsServer<AlertsService> as NamedService>::NAME,
    <DeadLettersServer<DeadLetterService> as NamedService>::NAME,
    <AuditServer<AuditService> as NamedService>::NAME,
];

/// Why the writer could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// TLS files.
    #[error(transparent)]
    Tls(#[from] fleetmon::tls::TlsError),
    /// Postgres at start-up.
    #[error(transparent)]
    Postgres(#[from] SinkError),
    /// The dead-letter topic could not be created or verified.
    #[error(transparent)]
    Topic(#[from] fleetmon::kafka_topics::CreateTopicError),
    /// Kafka client creation.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The pipeline.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A channel's client could not be built.
    #[error(transparent)]
    Notifier(#[from] crate::alerts::sender::SenderError),
    /// A task of it panicked or failed (the gRPC server, the metrics endpoint…).
    #[error(transparent)]
    Task(#[from] TaskFailed),
    /// The task watching the others panicked.
    #[error("{0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A started writer: its bound addresses and the task running it.
#[derive(Debug)]
pub struct RunningWriter {
    /// The History gRPC address actually bound.
    pub grpc_addr: SocketAddr,
    /// The metrics address actually bound.
    pub metrics_addr: SocketAddr,
    /// Resolves when the writer has stopped (after its last batch).
    pub task: JoinHandle<Result<(), WriterError>>,
}

/// Runs the writer until `shutdown` is cancelled.
pub async fn run(config: WriterConfig, shutdown: CancellationToken) -> Result<(), WriterError> {
    let running = start(config, shutdown).await?;
    running.task.await?
}

/// Migrates the schema, prepares partitions, binds the listeners and starts the
/// pipeline and the servers in the background.
pub async fn start(
    config: WriterConfig,
    shutdown: CancellationToken,
) -> Result<RunningWriter, WriterError> {
    let tls = fleetmon::tls::reloading_server_config(&config.tls)?;
    let committed = Arc::new(tokio::sync::Notify::new());
    // Bound at once: while PostgreSQL is awaited, health answers NOT_SERVING there.
    let (listener, grpc_addr) = bind(config.listen).await?;
    let (listener, sink) = fleetmon::server::not_serving_until(
        listener,
        tls.clone(),
        SERVICES,
        "PostgreSQL",
        open_store_when_up(&config, committed.clone(), &shutdown),
    )
    .await?;
    let sink = sink?;

    let mut registry = Registry::default();
    let metrics = Arc::new(WriterMetrics::new(&mut registry));
    // Without it, the first record that cannot be stored would stop the writer for good.
    fleetmon::kafka_topics::create_missing(
        &config.kafka.bootstrap_servers,
        &config.kafka.options,
        fleetmon::kafka_topics::TopicSpec {
            names: &[&config.kafka.dead_letter_topic],
            partitions: 1,
            replication_factor: config.kafka.replication_factor,
            min_insync_replicas: None,
            compacted: false,
        },
        DEAD_LETTER_TOPIC_TIMEOUT,
    )
    .await?;
    let progress = Progress::default();
    let consumer = kafka_source::consumer(&config.kafka, metrics.clone(), progress.clone())?;
    let checks_consumer = topic_mirror::consumer(&config.kafka, &check_mirror::spec())?;
    let audit_consumer = topic_mirror::consumer(&config.kafka, &audit_mirror::spec())?;
    let labels_consumer = topic_mirror::consumer(&config.kafka, &label_mirror::spec())?;
    let dead_letters = Arc::new(DeadLetters::new(&config.kafka)?);
    let cluster = kafka_source::watch_cluster(dead_letters.clone(), shutdown.clone());
    let sender = Arc::new(Sender::new(&config.alerts)?);
    let notifier = Notifier::new(
        sink.background().clone(),
        sender.clone(),
        &config.alerts,
        committed.clone(),
    );
    let rules_skipped = metrics.alert_evaluations_skipped.clone();
    let rounds = metrics.alert_rounds.clone();
    let pipeline = Pipeline::new(
        &config.kafka,
        config.batch.clone(),
        consumer,
        sink.clone(),
        dead_letters.clone(),
        metrics,
        cluster.clone(),
    )
    .keeping(config.postgres.retention_days)
    .reporting_to(progress.clone());

    let (metrics_server, metrics_addr) = bind_metrics(config.metrics_listen, registry).await?;
    let metrics_server = if config.fleet_metrics.enabled {
        metrics_server.with_routes(fleet_metrics::routes(FleetMetrics::new(
            sink.queries().clone(),
            config.fleet_metrics.clone(),
        )))
    } else {
        metrics_server
    };

    let (health_reporter, health) = fleetmon::grpc::health_service().await;
    let health_task = watch_health(
        health_reporter,
        sink.clone(),
        dead_letters.clone(),
        pipeline.failing(),
        shutdown.clone(),
    );
    let (reflection_v1, reflection_v1alpha) = fleetmon::grpc::reflection_services(SERVICES);
    let router = fleetmon::server::grpc_builder()
        .layer(Authorize(ACCESS))
        .add_service(HistoryServer::new(HistoryService::new(sink.clone())))
        .add_service(AlertsServer::new(
            AlertsService::new(sink.clone()).sending_with(sender),
        ))
        .add_service(AuditServer::new(AuditService::new(sink.clone())))
        .add_service(DeadLettersServer::new(
            DeadLetterService::new(&config.kafka, dead_letters.clone())
                .audited_in(sink.background().clone()),
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let incoming = fleetmon::tls::tls_incoming(listener, tls);
    tracing::info!(%grpc_addr, %metrics_addr, kafka = %config.kafka.bootstrap_servers, schema = %config.postgres.schema, "writer running");

    let alerts = config.alerts.clone();
    let checks_kafka = config.kafka.clone();
    let retention = config.postgres.retention();
    let host_topic = config.kafka.host_samples_topic.clone();
    let ahead = config.postgres.partitions_ahead_days;
    let task = tokio::spawn(async move {
        let mut tasks = Tasks::new(shutdown.clone());
        let mirrors = Mirrors {
            config: checks_kafka,
            cluster,
            sink: sink.clone(),
            shutdown: shutdown.clone(),
        };
        tasks.spawn(
            "checks mirror",
            mirrors.follow(checks_consumer, check_mirror::spec()),
        );
        tasks.spawn(
            "audit mirror",
            mirrors.follow(audit_consumer, audit_mirror::spec()),
        );
        tasks.spawn(
            "labels mirror",
            mirrors.follow(labels_consumer, label_mirror::spec()),
        );
        if alerts.enabled {
            tasks.spawn(
                "timed alert rules",
                timed_rules::run(
                    sink.clone(),
                    alerts,
                    host_topic,
                    committed,
                    rules_skipped,
                    rounds,
                    shutdown.clone(),
                ),
            );
            tasks.spawn("notifier", notifier.run(shutdown.clone()));
        }
        tasks.spawn(
            "partition progress",
            progress::save(sink.background().clone(), progress, shutdown.clone()),
        );
        tasks.spawn(
            "host rollup folding",
            fold_host_rollups(sink.clone(), shutdown.clone()),
        );
        tasks.spawn(
            "partition maintenance",
            maintain(sink, retention, ahead, shutdown.clone()),
        );
        tasks.spawn_fallible("metrics endpoint", metrics_server.serve(shutdown.clone()));
        tasks.spawn("health", health_task);
        tasks.spawn_fallible(
            "grpc server",
            router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
        );
        let supervisor = tasks.supervise(SHUTDOWN_GRACE);
        let pipeline_result = pipeline.run(shutdown.clone()).await;
        // A pipeline error stops everything else too.
        shutdown.cancel();
        let tasks_result = supervisor.await;
        tracing::info!("writer stopped");
        pipeline_result?;
        Ok(tasks_result??)
    });
    Ok(RunningWriter {
        grpc_addr,
        metrics_addr,
        task,
    })
}

/// Reports the writer's health until `shutdown`: SERVING while Kafka and PostgreSQL
/// answer and batches are being stored.
fn watch_health(
    reporter: fleetmon::grpc::HealthReporter,
    sink: Arc<PostgresSink>,
    kafka: Arc<DeadLetters>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> {
    fleetmon::grpc::watch_health(
        reporter,
        SERVICES,
        move || {
            let (sink, kafka) = (sink.clone(), kafka.clone());
            let failing = failing.load(std::sync::atomic::Ordering::Relaxed);
            async move {
                kafka.check(fleetmon::grpc::HEALTH_PROBE_TIMEOUT).await?;
                sink.ping(fleetmon::grpc::HEALTH_PROBE_TIMEOUT).await?;
                if failing {
                    return Err(NotServing("batches are not being stored (PostgreSQL refuses them for want of a resource or connection); retrying".to_owned()));
                }
                Ok(())
            }
        },
        shutdown,
    )
}

/// Folds the minute marks of host partitions that no batch folds (see
/// `store::host_rollups`): those of agents gone quiet, or of a writer gone.
async fn fold_host_rollups(sink: Arc<PostgresSink>, shutdown: CancellationToken) {
    let every =
        (sink.host_rollup_delay() / 4).clamp(Duration::from_secs(1), Duration::from_secs(15));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        match sink.fold_idle_host_rollups().await {
            Ok(0) => {}
            Ok(minutes) => tracing::debug!(minutes, "host rollups of quiet partitions folded"),
            Err(error) => tracing::warn!(%error, "folding host rollups failed; trying again"),
        }
    }
}

async fn maintain(
    sink: Arc<PostgresSink>,
    retention: Retention,
    ahead: u32,
    shutdown: CancellationToken,
) {
    loop {
        // The host rows stored before the host rollups began (after an upgrade):
        // nothing once they are all added up.
        tokio::select! {
            result = sink.backfill_host_rollups() => if let Err(error) = result {
                tracing::warn!(%error, "adding up earlier host rows into rollups failed; retrying in an hour");
            },
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(error) = sink
            .maintain_partitions(&retention, ahead, SystemTime::now())
            .await
        {
            tracing::warn!(%error, "partition maintenance failed; retrying in an hour");
        }
    }
}

/// PostgreSQL ready for batches: migrated, today's partitions and those ahead made, the
/// alert rules run with every batch when alerts are on (waking `committed`).
/// How long the writer waits between tries while PostgreSQL is not up.
const WAIT_FOR_POSTGRES: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// [`open_store`], tried again while PostgreSQL is unreachable (the writer may start
/// before it), each wait logged with the address and the reason; a configuration
/// error, or `shutdown`, ends the wait.
async fn open_store_when_up(
    config: &WriterConfig,
    committed: Arc<tokio::sync::Notify>,
    shutdown: &CancellationToken,
) -> Result<Arc<PostgresSink>, WriterError> {
    let mut retries = WAIT_FOR_POSTGRES.retries();
    loop {
        match open_store(config, committed.clone()).await {
            Ok(sink) => return Ok(sink),
            Err(WriterError::Postgres(error)) if error.is_unreachable() => {
                let delay = retries.failed();
                tracing::warn!(
                    postgres = %fleetmon::redact::url(&config.postgres.url),
                    %error,
                    retry_in = ?delay,
                    "waiting for PostgreSQL: the writer serves once it answers"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Err(error.into()),
                }
            }
            Err(error) => return Err(error),
        }
    }
}

async fn open_store(
    config: &WriterConfig,
    committed: Arc<tokio::sync::Notify>,
) -> Result<Arc<PostgresSink>, WriterError> {
    let mut sink = PostgresSink::new(&config.postgres)?;
    if config.alerts.enabled {
        sink = sink.with_after_rows(BatchRules {
            channels: Channels::of(&config.alerts),
            committed,
        });
    }
    let sink = Arc::new(sink);
    sink.migrate().await?;
    sink.maintain_partitions(
        &config.postgres.retention(),
        config.postgres.partitions_ahead_days,
        SystemTime::now(),
    )
    .await?;
    Ok(sink)
}
