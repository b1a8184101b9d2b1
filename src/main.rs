//! `fleetmon`: the operator CLI (dev certificates now; fleet queries build on it).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    /// Issue an operator client certificate: DIR/operators/NAME.pem and NAME-key.pem.
    IssueOperator {
        /// Operator name: letters, digits, '.', '_' and '-'.
        name: String,
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
    let written = match cli.command {
        Command::Certs(CertsCommand::Init { dir, sans, force }) => pki::init(&dir, &sans, force),
        Command::Certs(CertsCommand::IssueAgent { name, dir, force }) => {
            pki::issue_client(&dir, Role::Agent, &name, force)
        }
        Command::Certs(CertsCommand::IssueOperator { name, dir, force }) => {
            pki::issue_client(&dir, Role::Operator, &name, force)
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
