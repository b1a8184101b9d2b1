//! The one `main` of the fleetmon servers (collector and writer): flags over environment
//! overrides over the config file, validated once, then tracing, the TLS crypto provider,
//! the shutdown signal and the server's `run`.
//!
//! A server's `main.rs` declares its command line (the [`ServerFlags`] every server takes,
//! flattened, plus its own) and calls [`parse_flags`] then [`serve`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::telemetry::{LogFormat, init_tracing};

/// Flags every server takes. `--config`, `--listen` and `--metrics-listen` are also
/// read from `{PREFIX}_CONFIG`, `{PREFIX}_LISTEN` and `{PREFIX}_METRICS_LISTEN`
/// ([`ServerConfig::ENV_PREFIX`]); [`parse_flags`] attaches those names.
#[derive(Debug, clap::Args)]
pub struct ServerFlags {
    /// TOML config file (see the example config beside the binary's sources).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// gRPC listen address (overrides `listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Prometheus listen address (overrides `metrics_listen`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Kafka bootstrap servers (overrides `kafka.bootstrap_servers`).
    #[arg(long, env = "FLEETMON_KAFKA")]
    pub kafka: Option<String>,
    /// Log format (overrides `log_format`).
    #[arg(long, env = "FLEETMON_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The fields of a server's configuration that [`ServerFlags`] override.
pub struct CommonFields<'a> {
    /// `listen`.
    pub listen: &'a mut SocketAddr,
    /// `metrics_listen`.
    pub metrics_listen: &'a mut SocketAddr,
    /// `kafka.bootstrap_servers`.
    pub kafka_bootstrap_servers: &'a mut String,
    /// `log_format`.
    pub log_format: &'a mut LogFormat,
}

/// A server's configuration, as its `main` reads it.
pub trait ServerConfig: serde::de::DeserializeOwned {
    /// The server's name in errors, e.g. `writer`.
    const NAME: &'static str;
    /// Prefix of the server's environment: `FLEETMON_WRITER` reads config keys from
    /// `FLEETMON_WRITER__POSTGRES__URL` (see [`crate::config`]) and `--listen` from
    /// `FLEETMON_WRITER_LISTEN`.
    const ENV_PREFIX: &'static str;

    /// Checks ranges and consistency once every source is applied; each error names the
    /// field and the fix.
    fn validate(self) -> Result<Self, ConfigError>;

    /// Where [`ServerFlags`] write.
    fn common_fields(&mut self) -> CommonFields<'_>;

    /// Reads the file and the environment overrides, without validating: flags may
    /// still change values before [`ServerConfig::validate`].
    fn parse(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        crate::config::load(path, Self::ENV_PREFIX, env)
    }

    /// [`ServerConfig::parse`], then [`ServerConfig::validate`].
    fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::parse(path, env)?.validate()
    }
}

/// Parses the command line of a server whose config is `C`, with `C`'s environment
/// names on the common flags.
pub fn parse_flags<Cli, C>() -> Cli
where
    Cli: clap::Parser,
    C: ServerConfig,
{
    let prefix = C::ENV_PREFIX;
    let command = Cli::command()
        .mut_arg("config", |arg| arg.env(format!("{prefix}_CONFIG")))
        .mut_arg("listen", |arg| arg.env(format!("{prefix}_LISTEN")))
        .mut_arg("metrics_listen", |arg| {
            arg.env(format!("{prefix}_METRICS_LISTEN"))
        });
    let matches = command.get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    }
}

/// Reads the configuration (file, environment, then `flags` and `own_flags` over them),
/// validates it once — a flag can fix a bad file value — and runs the server until
/// SIGINT or SIGTERM.
pub async fn serve<C, E, Run>(
    flags: ServerFlags,
    own_flags: impl FnOnce(&mut C),
    run: impl FnOnce(C, CancellationToken) -> Run,
) -> anyhow::Result<()>
where
    C: ServerConfig,
    E: std::error::Error + Send + Sync + 'static,
    Run: Future<Output = Result<(), E>>,
{
    let mut config = C::parse(flags.config.as_deref(), std::env::vars())?;
    let fields = config.common_fields();
    if let Some(listen) = flags.listen {
        *fields.listen = listen;
    }
    if let Some(addr) = flags.metrics_listen {
        *fields.metrics_listen = addr;
    }
    if let Some(kafka) = flags.kafka {
        *fields.kafka_bootstrap_servers = kafka;
    }
    if let Some(format) = flags.log_format {
        *fields.log_format = format;
    }
    own_flags(&mut config);
    let mut config = config.validate()?;
    init_tracing(*config.common_fields().log_format);
    crate::tls::install_crypto_provider();
    let shutdown = crate::shutdown::shutdown_token();
    run(config, shutdown)
        .await
        .with_context(|| format!("{} failed", C::NAME))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerFlags,
    }

    #[test]
    fn common_flags_are_named_as_parse_flags_expects() {
        // parse_flags panics (clap debug assert) on an unknown id; name them here.
        let command = Cli::command();
        for id in ["config", "listen", "metrics_listen", "kafka", "log_format"] {
            assert!(
                command.get_arguments().any(|arg| arg.get_id() == id),
                "{id}"
            );
        }
    }
}
