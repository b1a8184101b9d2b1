//! `fleetmon-writer`: the command line, then [`fleetmon::daemon::serve`] runs
//! [`fleetmon_writer::run`].

use clap::Parser;
use fleetmon::daemon::{ServerFlags, parse_flags, serve};
use fleetmon_writer::WriterConfig;

/// Consumes fleetmon samples from Kafka and stores them in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "fleetmon-writer", version)]
struct Cli {
    #[command(flatten)]
    server: ServerFlags,
    /// PostgreSQL URL (overrides `postgres.url`). Its value is never shown in `--help`.
    #[arg(long, env = "FLEETMON_PG_URL", hide_env_values = true)]
    pg_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_flags::<Cli, WriterConfig>();
    let pg_url = cli.pg_url;
    let own_flags = |config: &mut WriterConfig| {
        if let Some(url) = pg_url {
            config.postgres.url = url;
        }
    };
    serve(cli.server, own_flags, fleetmon_writer::run).await
}
