//! fleetmon agent: measures its host and probes websites, and streams both to the
//! collector without ever silently losing a sample.
//!
//! [`host_sampler`] and [`site_prober`] measure; [`check_scheduler`] runs each site on
//! its schedule, the config's own and the central ones [`control`] receives from the
//! collector; [`outbox`] numbers and keeps every sample until acknowledged; [`sender`]
//! streams them over mutual TLS. [`run`] wires it.

pub mod check_result;
pub mod check_scheduler;
pub mod config;
pub mod control;
pub mod enroll;
pub mod host_prober;
pub mod host_sampler;
pub mod icmp;
pub mod key_pair;
pub mod metrics;
pub mod net_prober;
pub mod outbox;
pub mod ping;
pub mod processes;
pub mod renewal;
pub mod sender;
pub mod site_prober;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetmon::metrics_endpoint::MetricsServer;
use fleetmon::pb::HostSample;
use fleetmon::pb::sample::Kind;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use check_scheduler::CheckScheduler;
pub use config::{AgentConfig, ValidConfig};
use host_sampler::HostSampler;
use metrics::AgentMetrics;
use outbox::Outbox;
use site_prober::SiteProber;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] fleetmon::config::ConfigError),
    /// TLS files or endpoint.
    #[error(transparent)]
    Tls(#[from] fleetmon::tls::TlsError),
    /// The spool directory.
    #[error(transparent)]
    Spool(#[from] outbox::SpoolError),
    /// Host metrics.
    #[error(transparent)]
    Sampler(#[from] host_sampler::SamplerError),
    /// The HTTP client.
    #[error(transparent)]
    Prober(#[from] site_prober::ProberError),
    /// The metrics listener.
    #[error("{0}")]
    Metrics(std::io::Error),
    /// The key and certificate do not belong together, or cannot be recovered.
    #[error(transparent)]
    KeyPair(#[from] key_pair::KeyPairError),
    /// Enrollment at start (`[enroll]`).
    #[error("enrollment at start ([enroll]): {0}")]
    Enroll(#[from] enroll::EnrollError),
    /// A task of it panicked or was cancelled.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A started agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// The metrics address actually bound.
    pub metrics_addr: SocketAddr,
    /// The outbox (for inspection).
    pub outbox: Arc<Outbox>,
    /// Resolves when the agent has stopped.
    pub task: tokio::task::JoinHandle<()>,
}

/// Runs the agent until `shutdown`.
pub async fn run(config: ValidConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let running = start(config, shutdown).await?;
    running.task.await?;
    Ok(())
}

/// Starts sampling, probing and sending in the background.
pub async fn start(
    ValidConfig { config, sites }: ValidConfig,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    // A key and certificate replacement a crash interrupted is finished first; then
    // a pair that does not belong together is refused, naming the files.
    let (key, cert) = (&config.collector.key, &config.collector.cert);
    if key_pair::recover(key, cert)? {
        tracing::warn!(key = %key.display(), cert = %cert.display(), "finished a key and certificate replacement interrupted by a crash");
    }
    if let Some(settings) = &config.enroll
        && !cert.exists()
    {
        let files = enroll::EnrolledFiles {
            ca: config.collector.ca.clone(),
            cert: config.collector.cert.clone(),
            key: config.collector.key.clone(),
        };
        let labels = enroll::enroll_into(settings, &files)
            .await
            .map_err(AgentError::Enroll)?;
        tracing::info!(
            ?labels,
            "enrolled at start: the token's labels apply at the collector"
        );
    }
    if key.exists() && cert.exists() {
        key_pair::check(key, cert)?;
    }
    let urls: Vec<String> = config
        .collector
        .urls()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let files = config.collector.tls();
    let renewal_files = files.clone();
    let watched = vec![files.ca.clone(), files.cert.clone(), files.key.clone()];
    // A renewed certificate (or CA) is picked up without a restart: the sender
    // reconnects with it; a broken replacement is logged and the old one kept.
    let endpoint = fleetmon::tls::reloading(
        "agent",
        watched,
        fleetmon::tls::DEFAULT_RELOAD_INTERVAL,
        move || {
            urls.iter()
                .map(|url| {
                    Ok(fleetmon::tls::endpoint(url, &files)?
                        .http2_keep_alive_interval(Duration::from_secs(30))
                        .keep_alive_timeout(Duration::from_secs(20))
                        .keep_alive_while_idle(true))
                })
                .collect()
        },
    )?;
    let outbox = Arc::new(
        Outbox::open_synced(
            config.outbox.capacity,
            config.outbox.spool_dir.as_deref(),
            Duration::from_millis(config.outbox.spool_sync_ms),
        )?
        .with_max_bytes(config.outbox.max_bytes),
    );
    let mut registry = Registry::default();
    let metrics = Arc::new(AgentMetrics::new(&mut registry));
    let metrics_server = MetricsServer::bind(config.metrics_listen, Arc::new(registry))
        .await
        .map_err(AgentError::Metrics)?;
    let metrics_addr = metrics_server.local_addr().map_err(AgentError::Metrics)?;
    let sampler = HostSampler::new(config.hostname.clone())?.with_processes(config.processes);
    let prober = SiteProber::new(&sites)?
        .with_client_certificates(config.remote_checks.client_certificates_dir.clone());
    tracing::info!(
        collector = %config.collector.urls().join(","),
        hostname = sampler.hostname(),
        sites = sites.len(),
        stream_id = %outbox.stream_id(),
        %metrics_addr,
        "agent running"
    );

    let sender_config = sender::SenderConfig {
        endpoints: endpoint,
        batch_size: config.outbox.batch_size,
        batch_interval: Duration::from_millis(config.outbox.batch_interval_ms),
        max_backoff: Duration::from_secs(config.outbox.max_backoff_seconds),
    };
    let measuring = shutdown.child_token();
    let mut tasks = JoinSet::new();
    tasks.spawn(sample_host(
        sampler,
        config.host_interval(),
        outbox.clone(),
        metrics.clone(),
        measuring.clone(),
    ));
    let checks = TaskTracker::new();
    let mut scheduler = CheckScheduler::new(
        prober,
        config.probes.max_concurrent,
        outbox.clone(),
        metrics.clone(),
        measuring.clone(),
        checks.clone(),
    );
    scheduler.start_local(sites);
    let control = control::Control {
        endpoints: sender_config.endpoints.clone(),
        labels: config.labels.clone(),
        settings: config::RemoteChecksConfig {
            cache_file: config.checks_cache(),
            ..config.remote_checks.clone()
        },
        defaults: config.probes.clone(),
        max_backoff: sender_config.max_backoff,
    };
    tasks.spawn(control::run(control, scheduler, measuring.clone()));
    tasks.spawn(renewal::run(
        renewal_files,
        sender_config.endpoints.clone(),
        metrics.clone(),
        measuring.clone(),
    ));
    let sender_outbox = outbox.clone();
    let sender_outbox_report = outbox.clone();
    let task = tokio::spawn(async move {
        let metrics_task = tokio::spawn(metrics_server.serve(shutdown.clone()));
        // Measuring stops at once at `shutdown`; the sender drains only once no
        // sample can be queued any more, so none lands after its last batch.
        let sending = CancellationToken::new();
        let sender = tokio::spawn(sender::run(
            sender_config,
            sender_outbox,
            metrics,
            sending.clone(),
        ));
        shutdown.cancelled().await;
        measuring.cancel();
        while tasks.join_next().await.is_some() {}
        checks.close();
        checks.wait().await;
        sending.cancel();
        for (task, ended) in [
            ("sender", sender.await),
            ("metrics endpoint", metrics_task.await.map(drop)),
        ] {
            if let Err(error) = ended {
                tracing::error!(task, %error, "agent task failed");
            }
        }
        sender_outbox_report.flush().await;
        sender_outbox_report.report_on_stop();
        tracing::info!("agent stopped");
    });
    Ok(RunningAgent {
        metrics_addr,
        outbox,
        task,
    })
}

/// A host sample every `interval`, the first one interval after start (CPU usage
/// needs two readings).
async fn sample_host(
    sampler: HostSampler,
    interval: Duration,
    outbox: Arc<Outbox>,
    metrics: Arc<AgentMetrics>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let hostname = sampler.hostname().to_owned();
    let processes = sampler.processes();
    let mut sampler = Some(sampler);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        // Reading /proc takes milliseconds: keep it off the async workers.
        let mut owned = sampler.take().expect("sampler is returned after each use");
        let reading = tokio::task::spawn_blocking(move || {
            let sample = owned.sample();
            (owned, sample)
        })
        .await;
        let (returned, sample) = match reading {
            Ok(reading) => reading,
            Err(error) => {
                // The reading took the sampler with it: start a new one, whose first
                // reading is again not reported.
                tracing::error!(%error, "host sampling failed; starting the sampler again");
                match HostSampler::new(Some(hostname.clone())) {
                    Ok(fresh) => sampler = Some(fresh.with_processes(processes)),
                    Err(error) => {
                        tracing::error!(%error, "host sampling stops");
                        return;
                    }
                }
                continue;
            }
        };
        sampler = Some(returned);
        let sample = HostSample {
            interval_seconds: u32::try_from(interval.as_secs()).unwrap_or(u32::MAX),
            ..sample
        };
        outbox.push_counted(Kind::Host(sample), &metrics);
    }
}
