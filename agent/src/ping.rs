//! `fleetmon-agent ping CHECK`: a heartbeat check's signal sent over the agent's own
//! mutual TLS (`Control/Ping`), for jobs on hosts that already run an agent. The
//! collector stores it as it stores a ping to its HTTPS listener, with this agent's
//! name as the location, and answers once Kafka has it.

use fleetmon::pb::PingRequest;
use fleetmon::pb::control_client::ControlClient;

use crate::config::CollectorConfig;

/// What `fleetmon-agent ping` sends.
#[derive(Debug, Clone, clap::Args)]
pub struct PingArgs {
    /// The heartbeat check's id.
    pub check: String,
    /// A run began (the next success measures its duration).
    #[arg(long, conflicts_with_all = ["fail", "exit_code"])]
    pub start: bool,
    /// A run failed.
    #[arg(long, conflicts_with = "exit_code")]
    pub fail: bool,
    /// A run ended with this exit code (0: it succeeded).
    #[arg(long = "exit-code", value_name = "CODE")]
    pub exit_code: Option<u8>,
    /// What the job said, e.g. the tail of its log (at most 10 KiB).
    #[arg(long)]
    pub message: Option<String>,
    /// The agent's config file, for its collector and certificate.
    #[arg(long, env = "FLEETMON_AGENT_CONFIG")]
    pub config: Option<std::path::PathBuf>,
}

impl PingArgs {
    /// The signal as `Control/Ping` names it.
    fn signal(&self) -> String {
        match (self.start, self.fail, self.exit_code) {
            (true, ..) => "start".to_owned(),
            (_, true, _) => "fail".to_owned(),
            (_, _, Some(code)) => code.to_string(),
            _ => String::new(),
        }
    }
}

/// Why a ping was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// The TLS files could not be read.
    #[error(transparent)]
    Tls(#[from] fleetmon::tls::TlsError),
    /// No collector answered, or one refused the ping.
    #[error("Control/Ping on {url}: {code:?}: {message}")]
    Refused {
        /// The collector.
        url: String,
        /// The gRPC code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
}

/// Sends the ping to the first collector of `collector` that answers.
pub async fn ping(collector: &CollectorConfig, args: &PingArgs) -> Result<(), PingError> {
    let files = collector.tls();
    let request = PingRequest {
        check_id: args.check.clone(),
        signal: args.signal(),
        message: args.message.clone().unwrap_or_default(),
    };
    let mut last = None;
    for url in collector.urls() {
        let refused = |status: tonic::Status| PingError::Refused {
            url: url.to_owned(),
            code: status.code(),
            message: status.message().to_owned(),
        };
        let channel = match fleetmon::tls::endpoint(url, &files)?.connect().await {
            Ok(channel) => channel,
            Err(error) => {
                last = Some(refused(tonic::Status::unavailable(format!(
                    "cannot connect: {error}"
                ))));
                continue;
            }
        };
        match ControlClient::new(channel).ping(request.clone()).await {
            Ok(_) => return Ok(()),
            // Another collector may take it.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                last = Some(refused(status));
            }
            Err(status) => return Err(refused(status)),
        }
    }
    Err(last.unwrap_or_else(|| PingError::Refused {
        url: String::new(),
        code: tonic::Code::Unavailable,
        message: "no collector endpoint".to_owned(),
    }))
}
