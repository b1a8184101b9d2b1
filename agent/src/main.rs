//! `fleetmon-agent`: CLI → config → tracing → [`fleetmon_agent::run`].

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use fleetmon::telemetry::{LogFormat, init_tracing};
use fleetmon_agent::AgentConfig;
use fleetmon_agent::config::parse_sites_file;

/// Samples this host and probes websites; streams both to the fleetmon collector.
#[derive(Debug, Parser)]
#[command(
    name = "fleetmon-agent",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// TOML config file (see agent/agent.example.toml).
    #[arg(long, env = "FLEETMON_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Extra sites in the plain format `URL INTERVAL_SECONDS [REGEX]`, one per line.
    #[arg(long, env = "FLEETMON_AGENT_SITES_FILE")]
    sites_file: Option<PathBuf>,
    /// Collector endpoint, e.g. https://collector.internal:7400, or several separated by
    /// commas to fail over between (overrides `collector.endpoint` and `collector.endpoints`).
    #[arg(long, env = "FLEETMON_COLLECTOR")]
    collector: Option<String>,
    /// This agent's client certificate (overrides `collector.cert`).
    #[arg(long, env = "FLEETMON_AGENT_CERT")]
    cert: Option<PathBuf>,
    /// This agent's private key (overrides `collector.key`).
    #[arg(long, env = "FLEETMON_AGENT_KEY")]
    key: Option<PathBuf>,
    /// CA bundle for the collector's certificate (overrides `collector.ca`).
    #[arg(long, env = "FLEETMON_AGENT_CA")]
    ca: Option<PathBuf>,
    /// Seconds between host samples (overrides `host_interval_seconds`).
    #[arg(long, env = "FLEETMON_AGENT_INTERVAL")]
    interval: Option<u64>,
    /// Spool directory (overrides `outbox.spool_dir`).
    #[arg(long, env = "FLEETMON_AGENT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Prometheus listen address (overrides `metrics_listen`).
    #[arg(long, env = "FLEETMON_AGENT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Log format (overrides `log_format`).
    #[arg(long, env = "FLEETMON_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// Get a certificate of this host's own with an enrollment token, then exit.
    Enroll(fleetmon_agent::enroll::EnrollArgs),
    /// Signal a heartbeat check over this agent's mutual TLS (a run succeeded, began,
    /// failed or ended with an exit code), then exit: for jobs on this host.
    Ping(fleetmon_agent::ping::PingArgs),
}

fn main() -> anyhow::Result<()> {
    // The agent waits on timers and sockets: one thread does it, and a host stays
    // lighter with one thread (and one allocator arena) than with one per core.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .context("cannot start the async runtime")?
        .block_on(agent_main())
}

async fn agent_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(AgentCommand::Enroll(args)) = &cli.command {
        fleetmon::tls::install_crypto_provider();
        let (files, labels) = fleetmon_agent::enroll::enroll(args).await?;
        println!(
            "enrolled: wrote {}, {} and {}",
            files.ca.display(),
            files.cert.display(),
            files.key.display()
        );
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
        labels.sort();
        println!("in the agent config:");
        if !labels.is_empty() {
            println!("labels = {{ {} }}", labels.join(", "));
        }
        println!(
            "[collector]\nca = {:?}\ncert = {:?}\nkey = {:?}",
            files.ca, files.cert, files.key
        );
        return Ok(());
    }
    if let Some(AgentCommand::Ping(args)) = &cli.command {
        fleetmon::tls::install_crypto_provider();
        let config = AgentConfig::parse(args.config.as_deref(), std::env::vars())?.validate()?;
        fleetmon_agent::ping::ping(&config.config.collector, args).await?;
        println!("{}: stored", args.check);
        return Ok(());
    }
    // Parse, apply flags, then validate once: a flag can fix a bad file value.
    let mut config = AgentConfig::parse(cli.config.as_deref(), std::env::vars())?;
    if let Some(path) = &cli.sites_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sites file {}", path.display()))?;
        config.sites.extend(parse_sites_file(path, &text)?);
    }
    if let Some(list) = cli.collector {
        let mut urls: Vec<String> = list.split(',').map(|u| u.trim().to_owned()).collect();
        if urls.len() == 1 {
            config.collector.endpoint = urls.remove(0);
            config.collector.endpoints.clear();
        } else {
            config.collector.endpoints = urls;
        }
    }
    if let Some(cert) = cli.cert {
        config.collector.cert = cert;
    }
    if let Some(key) = cli.key {
        config.collector.key = key;
    }
    if let Some(ca) = cli.ca {
        config.collector.ca = ca;
    }
    if let Some(seconds) = cli.interval {
        config.host_interval_seconds = seconds;
    }
    if let Some(dir) = cli.spool_dir {
        config.outbox.spool_dir = Some(dir);
    }
    if let Some(addr) = cli.metrics_listen {
        config.metrics_listen = addr;
    }
    if let Some(format) = cli.log_format {
        config.log_format = format;
    }
    let config = config.validate()?;
    init_tracing(config.config.log_format);
    fleetmon::tls::install_crypto_provider();

    let shutdown = fleetmon::shutdown::shutdown_token();
    fleetmon_agent::run(config, shutdown)
        .await
        .context("agent failed")
}
