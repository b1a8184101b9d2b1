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

use anyhow::Context as _;
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

/// Writes `contents` to `path` with `mode` through a temporary file and a rename, so
/// that a reader never sees half a file.
pub fn write_atomic(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// The labels a token gave.
pub type Labels = std::collections::HashMap<String, String>;

/// Enrolls into `dir` (the `enroll` command): the files written and the token's labels.
pub async fn enroll(args: &EnrollArgs) -> anyhow::Result<(EnrolledFiles, Labels)> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let files = EnrolledFiles::in_dir(&args.dir);
    let labels = enroll_into(&args.settings, &files).await?;
    Ok((files, labels))
}

/// Enrolls, writing the CA, the key and the certificate to `files`.
pub async fn enroll_into(settings: &EnrollConfig, files: &EnrolledFiles) -> anyhow::Result<Labels> {
    let token = match (&settings.token, &settings.token_file) {
        (Some(token), None) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
        _ => anyhow::bail!(
            "give the enrollment token (--token or enroll.token) or a file holding it (--token-file or enroll.token_file), not both"
        ),
    };
    let name = settings.name.clone().unwrap_or_else(hostname);
    fleetmon::identity::validate_name(&name).context("invalid agent name (--name)")?;
    let ca_pem =
        fleetmon::tls::fetch_pinned_ca(&settings.collector, &settings.ca_fingerprint).await?;
    let (csr_der, key_pem) = fleetmon::pki::certificate_request(&name)?;
    for path in [&files.key, &files.cert, &files.ca] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    write_atomic(&files.key, &key_pem, 0o600)?;
    let channel = fleetmon::tls::server_only_endpoint(&settings.collector, &ca_pem)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", settings.collector))?;
    let issued = EnrollmentClient::new(channel)
        .enroll(EnrollRequest {
            token: token.trim().to_owned(),
            agent_name: name.clone(),
            csr_der,
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "enrollment refused by {}: {:?}: {}",
                settings.collector,
                status.code(),
                status.message()
            )
        })?
        .into_inner();
    write_atomic(&files.ca, &ca_pem, 0o644)?;
    write_atomic(&files.cert, &issued.certificate_chain_pem, 0o644)?;
    tracing::info!(agent = %name, cert = %files.cert.display(), serial = %issued.serial, "enrolled");
    Ok(issued.labels)
}
