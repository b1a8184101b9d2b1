//! `fleetmon`: the operator CLI: dev certificates, and queries of the live fleet
//! (collector) and the stored history (writer) over mutual TLS.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cli::{Connection, parse_duration};
use fleetmon::identity::Role;
use fleetmon::pki;

#[derive(Debug, Parser)]
#[command(name = "fleetmon", version, about = "Operate a fleetmon pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the development PKI and client certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Live fleet: agents with CPU, memory and last seen; sites with state, status and uptime.
    Status {
        #[command(flatten)]
        connection: Connection,
        /// Refresh every SECONDS until Ctrl-C.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// Agents known to the collector.
    Agents {
        #[command(flatten)]
        connection: Connection,
    },
    /// Site availability from the stored history.
    Sites {
        #[command(flatten)]
        connection: Connection,
        /// How far back (90s, 15m, 1h, 7d).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        since: Duration,
        /// Only this URL.
        #[arg(long, default_value = "")]
        url: String,
    },
    /// Enrollment tokens: a new host enrolls with one (`fleetmon-agent enroll`).
    #[command(subcommand)]
    Tokens(cli::credentials::TokensCommand),
    /// Central checks: what the agents check, changed at runtime through the collector.
    #[command(subcommand)]
    Checks(Box<cli::checks::ChecksCommand>),
    /// Alerts decided by the writers, newest first; `show ID` for one with its timeline.
    Alerts {
        #[command(flatten)]
        connection: cli::Connection,
        /// Only the open ones.
        #[arg(long)]
        open: bool,
        #[command(subcommand)]
        show: Option<AlertsCommand>,
    },
    /// Changes operators made (checks, tokens, revocations, silences): who, when, from
    /// where, before and after; newest first.
    Audit {
        #[command(flatten)]
        connection: cli::Connection,
        /// How far back (90s, 15m, 1h, 7d).
        #[arg(long, default_value = "24h", value_parser = cli::parse_duration)]
        since: Duration,
        /// Only this operator's changes (certificate name).
        #[arg(long)]
        who: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Serve the web dashboard (live fleet, charts, checks, alerts) on 127.0.0.1:8080.
    Dashboard(Box<cli::dashboard::DashboardArgs>),
    /// Serve public status pages (read-only, no login) as `--config` publishes them.
    StatusPage(cli::status_page::StatusPageArgs),
    /// Incidents: what status pages tell the public (opened by quorum outages, or by
    /// hand), with your updates.
    #[command(subcommand)]
    Incidents(cli::incidents::IncidentsCommand),
    /// Reports to publish or sign: `report availability --from DATE --to DATE`.
    #[command(subcommand)]
    Report(cli::report::ReportCommand),
    /// Silences: hold back the notifications of matching alerts until they end.
    #[command(subcommand)]
    Silence(cli::alerts::SilenceCommand),
    /// Maintenance windows: planned work (one-off or weekly) during which the
    /// notifications of matching alerts are held back.
    #[command(subcommand)]
    Maintenance(cli::maintenance::MaintenanceCommand),
    /// Records the writers could not store (and why); replay them once the cause is fixed.
    #[command(subcommand)]
    DeadLetters(cli::dead_letters::DeadLettersCommand),
    /// Host metrics of one agent over time, averaged per step.
    Series {
        /// The agent id.
        agent: String,
        #[command(flatten)]
        connection: Connection,
        /// How far back (90s, 15m, 1h, 7d).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        since: Duration,
        /// Bucket size.
        #[arg(long, default_value = "1m", value_parser = parse_duration)]
        step: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// One alert with its timeline and notifications.
    Show {
        /// The alert id.
        id: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Send a test alert's opening and resolution to one channel now, and print what
    /// it answered (exits 1 when it refused).
    TestChannel {
        /// The channel's name in the writer's config.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Write a new CA, collector and writer server certificates and the `admin` operator certificate.
    Init {
        /// Directory to write into.
        #[arg(long, default_value = "certs", env = "FLEETMON_CERTS_DIR")]
        dir: PathBuf,
        /// Extra DNS name or IP address for the server certificates (repeatable).
        #[arg(long = "san", value_name = "NAME_OR_IP")]
        sans: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue an agent client certificate: DIR/agents/NAME.pem and NAME-key.pem.
    IssueAgent {
        /// Agent name: letters, digits, '.', '_' and '-'.
        name: String,
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long, default_value = "certs", env = "FLEETMON_CERTS_DIR")]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a server certificate (a Kafka broker, a PostgreSQL server): DIR/NAME.pem and NAME-key.pem.
    IssueServer {
        /// File name: letters, digits, '.', '_' and '-'.
        name: String,
        /// DNS name or IP address it serves (repeatable).
        #[arg(long = "san", value_name = "NAME_OR_IP", required = true)]
        sans: Vec<String>,
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long, default_value = "certs", env = "FLEETMON_CERTS_DIR")]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Revoke an agent (by name) or a certificate (by serial) on every collector: its
    /// streams close and its handshakes are refused.
    Revoke {
        /// The agent name.
        #[arg(required_unless_present = "serial", conflicts_with = "serial")]
        name: Option<String>,
        /// A certificate serial (hex), instead of a name.
        #[arg(long)]
        serial: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Record an agent certificate issued by hand, so that no enrollment takes its name
    /// while it is valid (one that has connected is recorded already).
    Register {
        /// The agent's certificate (PEM), e.g. certs/agents/web-1.pem.
        #[arg(long)]
        cert_file: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print the SHA-256 fingerprint of DIR/ca.pem, for `fleetmon-agent enroll --ca-fingerprint`.
    Fingerprint {
        /// Directory holding ca.pem.
        #[arg(long, default_value = "certs", env = "FLEETMON_CERTS_DIR")]
        dir: PathBuf,
    },
    /// Check the certificates in DIR: that the issuing CA can sign agents only (exits 1,
    /// saying how to replace it, when it could sign operators or servers).
    Check {
        /// Directory holding ca.pem and issuing-ca.pem.
        #[arg(long, default_value = "certs", env = "FLEETMON_CERTS_DIR")]
        dir: PathBuf,
    },
    /// Write a new issuing CA (DIR/issuing-ca.pem and its key) under DIR/ca.pem,
    /// constrained to sign agents only: the replacement `certs check` asks for.
    IssueIssuingCa {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long, default_value = "certs", env = "FLEETMON_CERTS_DIR")]
        dir: PathBuf,
        /// Overwrite an existing issuing CA.
        #[arg(long)]
        force: bool,
    },
    /// Write a new key for secret check header values, DIR/check-secrets.key (0600):
    /// give every collector the same file as `[check_secrets] key_file`.
    NewSecretKey {
        /// Directory to write into.
        #[arg(long, default_value = "certs", env = "FLEETMON_CERTS_DIR")]
        dir: PathBuf,
        /// Overwrite an existing key (values sealed with it no longer open).
        #[arg(long)]
        force: bool,
    },
    /// Issue an operator client certificate: DIR/operators/NAME.pem and NAME-key.pem.
    IssueOperator {
        /// Operator name: letters, digits, '.', '_' and '-'.
        name: String,
        /// What it may do: viewer (read), editor (also checks and silences), admin
        /// (also tokens, revocation, certificates).
        #[arg(long, value_enum)]
        role: fleetmon::identity::OperatorRole,
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long, default_value = "certs", env = "FLEETMON_CERTS_DIR")]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let query = match cli.command {
        Command::Certs(CertsCommand::Revoke {
            name,
            serial,
            connection,
        }) => Query::Revoke(connection, name, serial),
        Command::Certs(CertsCommand::Register {
            cert_file,
            connection,
        }) => Query::Register(connection, cert_file),
        Command::Certs(certs) => return certs_command(certs),
        Command::Tokens(command) => Query::Tokens(command),
        Command::Status { connection, watch } => {
            Query::Status(connection, watch.map(Duration::from_secs))
        }
        Command::Agents { connection } => Query::Agents(connection),
        Command::Sites {
            connection,
            since,
            url,
        } => Query::Sites(connection, since, url),
        Command::Series {
            agent,
            connection,
            since,
            step,
        } => Query::Series(connection, agent, since, step),
        Command::Checks(command) => Query::Checks(command),
        Command::Alerts {
            connection,
            open,
            show,
        } => match show {
            Some(AlertsCommand::Show { id, connection }) => {
                Query::Alerts(connection, open, Some(id))
            }
            Some(AlertsCommand::TestChannel { name, connection }) => {
                Query::TestChannel(connection, name)
            }
            None => Query::Alerts(connection, open, None),
        },
        Command::Silence(command) => Query::Silence(command),
        Command::Maintenance(command) => Query::Maintenance(command),
        Command::DeadLetters(command) => Query::DeadLetters(command),
        Command::Dashboard(args) => Query::Dashboard(args),
        Command::StatusPage(args) => Query::StatusPage(args),
        Command::Incidents(command) => Query::Incidents(command),
        Command::Report(command) => Query::Report(command),
        Command::Audit {
            connection,
            since,
            who,
            limit,
        } => Query::Audit(connection, since, who, limit),
    };
    // The status page serves the public: it gets every core.
    let runtime = match query {
        Query::StatusPage(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    fleetmon::tls::install_crypto_provider();
    let result = runtime.block_on(async move {
        match query {
            Query::Status(c, watch) => cli::queries::status(&c, watch).await,
            Query::Agents(c) => cli::queries::agents(&c).await,
            Query::Sites(c, since, url) => cli::queries::sites(&c, since, &url).await,
            Query::Series(c, agent, since, step) => {
                cli::queries::series(&c, &agent, since, step).await
            }
            Query::Checks(command) => cli::checks::run(*command).await,
            Query::Alerts(c, open, show) => cli::alerts::alerts(&c, open, show).await,
            Query::TestChannel(c, name) => cli::alerts::test_channel(&c, name).await,
            Query::Silence(command) => cli::alerts::silence(command).await,
            Query::Maintenance(command) => cli::maintenance::run(command).await,
            Query::DeadLetters(command) => cli::dead_letters::run(command).await,
            Query::Dashboard(args) => cli::dashboard::run(*args).await,
            Query::StatusPage(args) => cli::status_page::run(args).await,
            Query::Incidents(command) => cli::incidents::run(command).await,
            Query::Report(command) => cli::report::run(command).await,
            Query::Audit(c, since, who, limit) => cli::audit::audit(&c, since, who, limit).await,
            Query::Tokens(command) => cli::credentials::tokens(command).await,
            Query::Revoke(c, name, serial) => cli::credentials::revoke(&c, name, serial).await,
            Query::Register(c, file) => cli::credentials::register(&c, &file).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

enum Query {
    Status(Connection, Option<Duration>),
    Agents(Connection),
    Sites(Connection, Duration, String),
    Series(Connection, String, Duration, Duration),
    Checks(Box<cli::checks::ChecksCommand>),
    Alerts(Connection, bool, Option<u64>),
    TestChannel(Connection, String),
    Silence(cli::alerts::SilenceCommand),
    Maintenance(cli::maintenance::MaintenanceCommand),
    DeadLetters(cli::dead_letters::DeadLettersCommand),
    Dashboard(Box<cli::dashboard::DashboardArgs>),
    StatusPage(cli::status_page::StatusPageArgs),
    Incidents(cli::incidents::IncidentsCommand),
    Report(cli::report::ReportCommand),
    Audit(cli::Connection, Duration, Option<String>, u32),
    Tokens(cli::credentials::TokensCommand),
    Revoke(Connection, Option<String>, Option<String>),
    Register(Connection, PathBuf),
}

fn certs_command(command: CertsCommand) -> ExitCode {
    let written = match command {
        CertsCommand::Init { dir, sans, force } => pki::init(&dir, &sans, force),
        CertsCommand::IssueAgent { name, dir, force } => {
            pki::issue_client(&dir, Role::Agent, &name, force)
        }
        CertsCommand::IssueOperator {
            name,
            role,
            dir,
            force,
        } => pki::issue_operator(&dir, &name, role, force),
        CertsCommand::IssueServer {
            name,
            sans,
            dir,
            force,
        } => pki::issue_server(&dir, &name, &sans, force),
        CertsCommand::Fingerprint { dir } => {
            return match fleetmon::tls::read_certs("CA", &dir.join("ca.pem")) {
                Ok(certs) => {
                    println!("sha256:{}", pki::sha256_hex(certs[0].as_ref()));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        CertsCommand::Check { dir } => return check_certs(&dir),
        CertsCommand::IssueIssuingCa { dir, force } => pki::issue_issuing_ca(&dir, force),
        CertsCommand::NewSecretKey { dir, force } => {
            pki::new_secret_key(&dir, force).map(|path| vec![path])
        }
        CertsCommand::Revoke { .. } | CertsCommand::Register { .. } => {
            unreachable!("revoke and register are queries of the collector")
        }
    };
    match written {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `fleetmon certs check`: one line per finding, exit 1 when any is a problem.
fn check_certs(dir: &std::path::Path) -> ExitCode {
    let path = dir.join(format!("{}.pem", pki::ISSUING_CA));
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(error) => {
            eprintln!(
                "error: cannot read {}: {error} (a directory without enrollment has none; \
                 create one with: fleetmon certs issue-issuing-ca --dir {})",
                path.display(),
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let problems = pki::check_issuing_ca(&pem);
    if problems.is_empty() {
        println!(
            "ok: {} signs agents only (path length 0; no DNS name or IP address)",
            path.display()
        );
        return ExitCode::SUCCESS;
    }
    for problem in &problems {
        println!("problem: {}: {problem}", path.display());
    }
    println!(
        "A collector holding its key could mint certificates for servers (the writer, Kafka, \
         PostgreSQL). Replace it:\n  fleetmon certs issue-issuing-ca --dir {} --force\n\
         then copy issuing-ca.pem and issuing-ca-key.pem to every collector with [enrollment] \
         and restart them. Agents enrolled under the old one keep working and move to the \
         new one at their next renewal.",
        dir.display()
    );
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn every_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
