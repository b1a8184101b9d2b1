//! `fleetmon-collector`: the command line, then [`fleetmon::daemon::serve`] runs
//! [`fleetmon_collector::run`].

use clap::Parser;
use fleetmon::daemon::{ServerFlags, parse_flags, serve};
use fleetmon_collector::CollectorConfig;

/// Receives agent samples over mutual-TLS gRPC and publishes them to Kafka.
#[derive(Debug, Parser)]
#[command(name = "fleetmon-collector", version)]
struct Cli {
    #[command(flatten)]
    server: ServerFlags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = parse_flags::<Cli, CollectorConfig>();
    serve(
        cli.server,
        |_: &mut CollectorConfig| {},
        fleetmon_collector::run,
    )
    .await
}
