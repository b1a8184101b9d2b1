//! `fleetmon-writer`: CLI → config → tracing → [`fleetmon_writer::run`].

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use fleetmon::telemetry::{LogFormat, init_tracing};
use fleetmon_writer::WriterConfig;

/// Consumes fleetmon samples from Kafka and stores them in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "fleetmon-writer", version)]
struct Cli {
    /// TOML config file (see writer/writer.example.toml).
    #[arg(long, env = "FLEETMON_WRITER_CONFIG")]
    config: Option<PathBuf>,
    /// History gRPC listen address (overrides `listen`).
    #[arg(long, env = "FLEETMON_WRITER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Prometheus listen address (overrides `metrics_listen`).
    #[arg(long, env = "FLEETMON_WRITER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Kafka bootstrap servers (overrides `kafka.bootstrap_servers`).
    #[arg(long, env = "FLEETMON_KAFKA")]
    kafka: Option<String>,
    /// PostgreSQL URL (overrides `postgres.url`).
    #[arg(long, env = "FLEETMON_PG_URL")]
    pg_url: Option<String>,
    /// Log format (overrides `log_format`).
    #[arg(long, env = "FLEETMON_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Parse, apply flags, then validate once: a flag can fix a bad file value.
    let mut config = WriterConfig::parse(cli.config.as_deref(), std::env::vars())?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(addr) = cli.metrics_listen {
        config.metrics_listen = addr;
    }
    if let Some(kafka) = cli.kafka {
        config.kafka.bootstrap_servers = kafka;
    }
    if let Some(url) = cli.pg_url {
        config.postgres.url = url;
    }
    if let Some(format) = cli.log_format {
        config.log_format = format;
    }
    let config = config.validate()?;
    init_tracing(config.log_format);
    fleetmon::tls::install_crypto_provider();
    let shutdown = fleetmon::shutdown::shutdown_token();
    fleetmon_writer::run(config, shutdown)
        .await
        .context("writer failed")
}
