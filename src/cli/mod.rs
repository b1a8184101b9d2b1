//! The operator commands: `status`, `agents`, `sites`, `series`, `checks`, `alerts`,
//! `silence`, `dead-letters` and `dashboard`, each over
//! mutual TLS with an operator certificate, printing a table or (`--json`) JSON.

pub(crate) mod alerts;
pub(crate) mod audit;
pub(crate) mod checks;
pub(crate) mod credentials;
pub(crate) mod dashboard;
pub(crate) mod dead_letters;
pub(crate) mod incidents;
pub(crate) mod maintenance;
pub(crate) mod queries;
pub(crate) mod report;
pub(crate) mod status_page;
pub(crate) mod table;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fleetmon::tls::ClientTlsFiles;

/// `apply -f FILE [--dry-run] [--prune]`: make what a declarative TOML file lists so.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApplyArgs {
    /// The TOML file.
    #[arg(short = 'f', long = "file")]
    pub(crate) file: std::path::PathBuf,
    /// Print the changes only.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Also delete (remove) what the file no longer lists.
    #[arg(long)]
    pub(crate) prune: bool,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

/// Where the servers are and which operator certificate to use.
#[derive(Debug, Clone, Args)]
pub(crate) struct Connection {
    /// Collector (live fleet view).
    #[arg(
        long,
        default_value = "https://127.0.0.1:7400",
        env = "FLEETMON_COLLECTOR_URL"
    )]
    pub(crate) collector: String,
    /// Writer (stored history).
    #[arg(
        long,
        default_value = "https://127.0.0.1:7401",
        env = "FLEETMON_WRITER_URL"
    )]
    pub(crate) writer: String,
    /// Directory of `fleetmon certs init` (ca.pem, operator.pem, operator-key.pem).
    #[arg(long, default_value = "certs", env = "FLEETMON_CERTS_DIR")]
    pub(crate) certs: PathBuf,
    /// CA bundle (default: CERTS/ca.pem).
    #[arg(long, env = "FLEETMON_CA")]
    pub(crate) ca: Option<PathBuf>,
    /// Operator certificate (default: CERTS/operator.pem).
    #[arg(long, env = "FLEETMON_OPERATOR_CERT")]
    pub(crate) cert: Option<PathBuf>,
    /// Operator key (default: CERTS/operator-key.pem).
    #[arg(long, env = "FLEETMON_OPERATOR_KEY")]
    pub(crate) key: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

impl Connection {
    /// The operator's TLS files.
    pub(crate) fn tls(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.ca.clone().unwrap_or_else(|| self.certs.join("ca.pem")),
            cert: self
                .cert
                .clone()
                .unwrap_or_else(|| self.certs.join("operator.pem")),
            key: self
                .key
                .clone()
                .unwrap_or_else(|| self.certs.join("operator-key.pem")),
            server_name: None,
        }
    }
}

/// A failed call as `Service/Method on URL: CODE: message`.
pub(crate) fn call_error(call: &str, server: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{call} on {server}: {:?}: {}",
        status.code(),
        status.message()
    )
}

/// A `--since`/`--for`-style value that is not a positive duration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    /// Not a number with a known unit.
    #[error("`{0}` is not a duration: write e.g. 90s, 15m, 1h or 7d")]
    NotADuration(String),
    /// Zero of any unit.
    #[error("`{0}` is zero: give a positive duration")]
    Zero(String),
}

/// Parses `90s`, `15m`, `1h`, `7d` (or plain seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| DurationError::NotADuration(text.to_owned()))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        "d" => value * 86_400,
        _ => return Err(DurationError::NotADuration(text.to_owned())),
    };
    if seconds == 0 {
        return Err(DurationError::Zero(text.to_owned()));
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(
            parse_duration("1w").unwrap_err().to_string(),
            "`1w` is not a duration: write e.g. 90s, 15m, 1h or 7d"
        );
        assert_eq!(
            parse_duration("0m").unwrap_err().to_string(),
            "`0m` is zero: give a positive duration"
        );
    }
}
