//! `fleetmon-agent enroll`: this host gets a certificate of its own with a token.
//!
//! 1. The fleet's root CA is fetched from the collector's enrollment listener and
//!    trusted only if its SHA-256 is the fingerprint given (`fleetmon certs
//!    fingerprint` prints it): the token is never sent to a collector not of the fleet.
//! 2. A key pair is made here and written 0600; it never leaves the host.
//! 3. A certificate request with the token goes to `Enrollment/Enroll`; the answer is
//!    a certificate for `spiffe://fleetmon/agent/NAME` (and the issuing CA's).
//!
//! Renewal later ([`crate::renewal`]) uses the same files.

use std::path::{Path, PathBuf};

use fleetmon::pb::EnrollRequest;
use fleetmon::pb::enrollment_client::EnrollmentClient;

/// What to enroll with: the `enroll` command's flags, or `[enroll]` in the agent's
/// config (then the agent enrolls at start when its certificate file is missing).
#[derive(Debug, Clone, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfig {
    /// The collector's enrollment listener, e.g. https://collector.internal:7403.
    #[arg(long, env = "FLEETMON_ENROLL_COLLECTOR")]
    pub collector: String,
    /// The token from `fleetmon tokens create` (or `token_file`).
    #[arg(long, env = "FLEETMON_ENROLL_TOKEN", hide_env_values = true)]
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token.
    #[arg(long)]
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// SHA-256 of the fleet's root CA: `sha256:…` (`fleetmon certs fingerprint`).
    #[arg(long, env = "FLEETMON_ENROLL_CA_FINGERPRINT")]
    pub ca_fingerprint: String,
    /// The agent name (default: this host's name).
    #[arg(long)]
    #[serde(default)]
    pub name: Option<String>,
}

/// The `enroll` command: what to enroll with and where to write.
#[derive(Debug, Clone, clap::Args)]
pub struct EnrollArgs {
    /// What to enroll with.
    #[command(flatten)]
    pub settings: EnrollConfig,
    /// Where to write ca.pem, agent.pem and agent-key.pem.
    #[arg(long, default_value = "/var/lib/fleetmon-agent/tls")]
    pub dir: PathBuf,
}

/// The files an enrolled agent uses (`[collector]` ca, cert and key).
#[derive(Debug, Clone)]
pub struct EnrolledFiles {
    /// The fleet's root CA.
    pub ca: PathBuf,
    /// The agent's certificate chain.
    pub cert: PathBuf,
    /// The agent's private key.
    pub key: PathBuf,
}

impl EnrolledFiles {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        EnrolledFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("agent.pem"),
            key: dir.join("agent-key.pem"),
        }
    }
}

/// The host name, as the default agent name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Why enrolling failed, naming the file, setting or collector concerned.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// A file or folder could not be read, made or written.
    #[error("cannot {action} {}: {source}", .path.display())]
    File {
        /// `read`, `create`, `write` or `replace`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Neither or both of the token and the token file were given.
    #[error(
        "give the enrollment token (--token or enroll.token) or a file holding it (--token-file or enroll.token_file), not both"
    )]
    Token,
    /// The agent name is not one a certificate can carry.
    #[error("invalid agent name (--name): {0}")]
    Name(#[from] fleetmon::identity::NameError),
    /// Fetching the pinned CA or connecting over TLS failed.
    #[error(transparent)]
    Tls(#[from] fleetmon::tls::TlsError),
    /// The key or the certificate request could not be made.
    #[error(transparent)]
    Pki(#[from] fleetmon::pki::PkiError),
    /// The key and certificate could not be written together.
    #[error(transparent)]
    KeyPair(#[from] crate::key_pair::KeyPairError),
    /// The collector could not be reached.
    #[error("cannot connect to {collector}: {reason}")]
    Connect {
        /// The enrollment URL.
        collector: String,
        /// The transport error with its causes.
        reason: String,
    },
    /// The collector refused the request.
    #[error("enrollment refused by {collector}: {code:?}: {message}")]
    Refused {
        /// The enrollment URL.
        collector: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The collector's message.
        message: String,
    },
}

fn file_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EnrollError {
    let path = path.to_owned();
    move |source| EnrollError::File {
        action,
        path,
        source,
    }
}

/// `error` and its causes, as `a: b: c`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// Writes `contents` to `path` with `mode` through a temporary file and a rename, so
/// that a reader never sees half a file.
pub fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), EnrollError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(file_error("write", &tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_error("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(file_error("replace", path))
}

/// The labels a token gave.
pub type Labels = std::collections::HashMap<String, String>;

/// Enrolls into `dir` (the `enroll` command): the files written and the token's labels.
pub async fn enroll(args: &EnrollArgs) -> Result<(EnrolledFiles, Labels), EnrollError> {
    std::fs::create_dir_all(&args.dir).map_err(file_error("create", &args.dir))?;
    let files = EnrolledFiles::in_dir(&args.dir);
    let labels = enroll_into(&args.settings, &files).await?;
    Ok((files, labels))
}

/// Enrolls, writing the CA, the key and the certificate to `files`.
pub async fn enroll_into(
    settings: &EnrollConfig,
    files: &EnrolledFiles,
) -> Result<Labels, EnrollError> {
    let token = match (&settings.token, &settings.token_file) {
        (Some(token), None) => token.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(file_error("read the token file", path))?
        }
        _ => return Err(EnrollError::Token),
    };
    let name = settings.name.clone().unwrap_or_else(hostname);
    fleetmon::identity::validate_name(&name)?;
    let ca_pem =
        fleetmon::tls::fetch_pinned_ca(&settings.collector, &settings.ca_fingerprint).await?;
    let (csr_der, key_pem) = fleetmon::pki::certificate_request(&name)?;
    for path in [&files.key, &files.cert, &files.ca] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
        }
    }
    let channel = fleetmon::tls::server_only_endpoint(&settings.collector, &ca_pem)?
        .connect()
        .await
        .map_err(|error| EnrollError::Connect {
            collector: settings.collector.clone(),
            reason: with_causes(&error),
        })?;
    let issued = EnrollmentClient::new(channel)
        .enroll(EnrollRequest {
            token: token.trim().to_owned(),
            agent_name: name.clone(),
            csr_der,
        })
        .await
        .map_err(|status| EnrollError::Refused {
            collector: settings.collector.clone(),
            code: status.code(),
            message: status.message().to_owned(),
        })?
        .into_inner();
    // Only now, with the certificate in hand, is the key written: a refused or broken
    // request leaves the files as they were.
    write_atomic(&files.ca, &ca_pem, 0o644)?;
    crate::key_pair::replace(
        &files.key,
        &key_pem,
        &files.cert,
        &issued.certificate_chain_pem,
    )?;
    tracing::info!(agent = %name, cert = %files.cert.display(), serial = %issued.serial, "enrolled");
    Ok(issued.labels)
}
