//! The development PKI: a CA, server certificates for the collector and writer, and
//! client certificates for agents and operators, all generated with rcgen.
//!
//! `fleetmon certs init` and `fleetmon certs issue-agent` are thin wrappers over
//! [`init`] and [`issue_client`]; tests use [`CertificateAuthority`] directly to mint
//! certificates with unusual properties (expired, foreign CA, no URI SAN).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose, GeneralSubtree,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints, PublicKeyData as _,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

pub use crate::identity::hex;
use crate::identity::{NameError, OperatorRole, Role, agent_uri, operator_uri, validate_name};

/// Name of the default operator certificate written by [`init`].
pub const DEFAULT_OPERATOR: &str = "admin";

/// Why a certificate could not be generated or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A target file exists and `--force` was not given.
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    /// The CA files needed to sign are missing.
    #[error("cannot read CA {path}: {source} (run: fleetmon certs init --dir {dir})")]
    MissingCa {
        /// The file that could not be read.
        path: PathBuf,
        /// The directory given.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An agent or operator name was refused.
    #[error("invalid {role} name: {source}")]
    BadName {
        /// Agent or operator.
        role: Role,
        /// What is wrong with it.
        source: NameError,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A certificate request that cannot be parsed or whose signature does not verify.
    #[error("the certificate request cannot be used: {0}")]
    BadRequest(String),
    /// rcgen refused the parameters (for example a SAN that is not a DNS name or IP).
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
    /// Serial number, for revocation.
    pub serial: Vec<u8>,
}

/// What to put into a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Subject common name (informational; identity comes from the SANs).
    pub common_name: String,
    /// DNS names and IP addresses (server certificates).
    pub host_sans: Vec<String>,
    /// URI SANs (client certificates carry their fleetmon identity here).
    pub uri_sans: Vec<String>,
    /// Usable for TLS servers.
    pub server_auth: bool,
    /// Usable for TLS clients.
    pub client_auth: bool,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A server certificate for the given DNS names / IP addresses, valid one year.
    pub fn server(common_name: &str, host_sans: Vec<String>) -> Self {
        Self::new(common_name, host_sans, Vec::new(), true, false)
    }

    /// A client certificate of an agent, or of an admin operator
    /// ([`LeafSpec::operator`] for another role), valid one year.
    /// Its common name, `<role> <name>`, is for people only (identity is the URI); the
    /// space keeps verifiers from reading a dotted name as a DNS name, which the
    /// issuing CA's name constraints exclude.
    pub fn client(role: Role, name: &str) -> Self {
        match role {
            Role::Agent => Self::new(
                &format!("agent {name}"),
                Vec::new(),
                vec![agent_uri(name)],
                false,
                true,
            ),
            Role::Operator => Self::operator(name, OperatorRole::Admin),
        }
    }

    /// A client certificate carrying `spiffe://fleetmon/operator/ROLE/NAME`, valid one
    /// year.
    pub fn operator(name: &str, role: OperatorRole) -> Self {
        Self::new(
            &format!("operator {name} ({role})"),
            Vec::new(),
            vec![operator_uri(role, name)],
            false,
            true,
        )
    }

    fn new(cn: &str, host: Vec<String>, uri: Vec<String>, server: bool, client: bool) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: cn.to_owned(),
            host_sans: host,
            uri_sans: uri,
            server_auth: server,
            client_auth: client,
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(365),
        }
    }
}

/// A certificate authority that can sign leaves and CRLs.
#[derive(Debug)]
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
}

impl CertificateAuthority {
    /// A new self-signed CA, valid ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let params = ca_params(common_name, Duration::days(3650));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads a CA from its certificate and key files (PEM), e.g. the issuing CA.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| PkiError::MissingCa {
                path: path.to_owned(),
                dir: path.parent().unwrap_or(Path::new(".")).to_owned(),
                source,
            })
        };
        let ca = CertificateAuthority {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        };
        ca.issuer()?;
        Ok(ca)
    }

    /// Loads `ca.pem` and `ca-key.pem` from a certs directory.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| PkiError::MissingCa {
                path,
                dir: dir.to_owned(),
                source,
            })
        };
        let ca = CertificateAuthority {
            cert_pem: read("ca.pem")?,
            key_pem: read("ca-key.pem")?,
        };
        ca.issuer()?;
        Ok(ca)
    }

    /// The CA certificate (what peers trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }

    /// Signs a new leaf certificate with a fresh key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert, PkiError> {
        let (params, serial) = leaf_params(spec)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.to_bytes(),
        })
    }

    /// A CA under this one that signs leaves only (path length 0), valid five years:
    /// the issuing CA collectors hold to sign enrolled agents' requests.
    ///
    /// Its name constraints exclude every DNS name and IP address, so no verifier
    /// accepts a server certificate (collector, writer, Kafka, PostgreSQL) it signed.
    /// X.509 cannot limit URIs by path (and rustls refuses every URI under a URI
    /// constraint), so "agents only" is checked in code: a client certificate that is
    /// not an agent's must be issued by the root itself
    /// ([`crate::tls::server_config_with`]).
    pub fn issue_intermediate(&self, common_name: &str) -> Result<Self, PkiError> {
        let mut params = ca_params(common_name, Duration::days(5 * 365));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: Vec::new(),
            excluded_subtrees: vec![
                // The empty DNS name matches every DNS name.
                GeneralSubtree::DnsName(String::new()),
                GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
                GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
            ],
        });
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a PKCS#10 request (DER) as a client certificate for
    /// `spiffe://fleetmon/<role>/<name>`, valid for `lifetime` from now. Only the
    /// request's key is taken: its subject and extensions are not.
    pub fn sign_request(
        &self,
        csr_der: &[u8],
        role: Role,
        name: &str,
        lifetime: Duration,
    ) -> Result<SignedRequest, PkiError> {
        let request = CertificateSigningRequestParams::from_der(&csr_der.into())
            .map_err(|e| PkiError::BadRequest(e.to_string()))?;
        let mut spec = LeafSpec::client(role, name);
        let now = OffsetDateTime::now_utc();
        // Backdated a little for clock skew, never by much of a short lifetime (renewal
        // is due at two thirds of not_before..not_after).
        spec.not_before = now - (lifetime / 10_i32).min(Duration::minutes(5));
        spec.not_after = now + lifetime;
        let (params, serial) = leaf_params(&spec)?;
        let cert = params.signed_by(&request.public_key, &self.issuer()?)?;
        Ok(SignedRequest {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            serial: crate::identity::serial_hex(&serial.to_bytes()),
            not_after: spec.not_after,
            public_key_sha256: sha256_hex(&request.public_key.subject_public_key_info()),
        })
    }

    /// A CRL revoking the given serial numbers, valid for a week.
    pub fn crl_pem(&self, revoked_serials: &[Vec<u8>]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.pem()?)
    }
}

/// The parameters of a CA certificate valid for `validity` from five minutes ago.
fn ca_params(common_name: &str, validity: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "fleetmon");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params
}

/// The parameters of a leaf certificate as `spec` describes it, and its new serial.
fn leaf_params(spec: &LeafSpec) -> Result<(CertificateParams, SerialNumber), PkiError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, spec.common_name.as_str());
    params
        .distinguished_name
        .push(DnType::OrganizationName, "fleetmon");
    for host in &spec.host_sans {
        params.subject_alt_names.push(match host.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into()?),
        });
    }
    for uri in &spec.uri_sans {
        params
            .subject_alt_names
            .push(SanType::URI(uri.clone().try_into()?));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if spec.server_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if spec.client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    let serial = random_serial();
    params.serial_number = Some(serial.clone());
    Ok((params, serial))
}

/// A certificate request signed by a CA ([`CertificateAuthority::sign_request`]).
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// The new certificate, then the signing CA's (PEM).
    pub chain_pem: String,
    /// Its serial number, lower-case hex.
    pub serial: String,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// [`sha256_hex`] of the request's SubjectPublicKeyInfo.
    pub public_key_sha256: String,
}

/// [`sha256_hex`] of the key in a PKCS#10 request (DER) whose signature verifies.
pub fn request_key_sha256(csr_der: &[u8]) -> Result<String, PkiError> {
    let request = CertificateSigningRequestParams::from_der(&csr_der.into())
        .map_err(|e| PkiError::BadRequest(e.to_string()))?;
    Ok(sha256_hex(&request.public_key.subject_public_key_info()))
}

/// A PKCS#10 request for a new key: (request DER, the key PEM). The subject names
/// `common_name`; the signer decides everything else.
pub fn certificate_request(common_name: &str) -> Result<(Vec<u8>, String), PkiError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let key = KeyPair::generate()?;
    let request = params.serialize_request(&key)?;
    Ok((request.der().to_vec(), key.serialize_pem()))
}

/// [`sha256_hex`] of a certificate's SubjectPublicKeyInfo (DER certificate): the key
/// an agent name belongs to, as enrollment records it.
pub fn certificate_key_sha256(cert_der: &[u8]) -> Result<String, PkiError> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| PkiError::BadRequest(format!("not an X.509 certificate: {e}")))?;
    Ok(sha256_hex(cert.public_key().raw))
}

/// Whether the private key `key_pem` belongs to the first certificate of `cert_pem`
/// (their public keys are the same); an error when either cannot be read.
pub fn key_matches_certificate(key_pem: &str, cert_pem: &str) -> Result<bool, PkiError> {
    let key = KeyPair::from_pem(key_pem)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| PkiError::BadRequest(format!("not a PEM certificate: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| PkiError::BadRequest(format!("not an X.509 certificate: {e}")))?;
    Ok(cert.public_key().raw == key.subject_public_key_info().as_slice())
}

/// Lower-case hex of the SHA-256 of `bytes` (certificate fingerprints, key and token hashes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

/// A positive 16-byte serial number, unique with overwhelming probability.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Writes the whole dev PKI into `dir`: the CA, `collector` and `writer` server
/// certificates (SANs `localhost`, `127.0.0.1` and `extra_sans`), the `operator`
/// client certificate for `spiffe://fleetmon/operator/admin/admin`, `issuing-ca`, the
/// intermediate collectors sign enrolled agents with, and `check-secrets.key`, the key
/// collectors seal secret check header values with. Returns the files written.
pub fn init(dir: &Path, extra_sans: &[String], force: bool) -> Result<Vec<PathBuf>, PkiError> {
    let stems = ["ca", "collector", "writer", "operator", ISSUING_CA];
    if !force {
        refuse_existing(&stems.map(|s| dir.to_owned().join(s)))?;
        let key = dir.join(crate::check_secrets::KEY_FILE);
        if key.exists() {
            return Err(PkiError::Exists(key));
        }
    }
    let ca = CertificateAuthority::generate("fleetmon dev CA")?;
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    sans.extend(extra_sans.iter().cloned());
    let collector = ca.issue(&LeafSpec::server("fleetmon collector", sans.clone()))?;
    let writer = ca.issue(&LeafSpec::server("fleetmon writer", sans))?;
    let operator = ca.issue(&LeafSpec::client(Role::Operator, DEFAULT_OPERATOR))?;
    let issuing = ca.issue_intermediate("fleetmon issuing CA")?;

    let mut written = Vec::new();
    written.extend(write_pair(dir, "ca", &ca.cert_pem, &ca.key_pem)?);
    written.extend(write_pair(
        dir,
        "collector",
        &collector.cert_pem,
        &collector.key_pem,
    )?);
    written.extend(write_pair(
        dir,
        "writer",
        &writer.cert_pem,
        &writer.key_pem,
    )?);
    written.extend(write_pair(
        dir,
        "operator",
        &operator.cert_pem,
        &operator.key_pem,
    )?);
    written.extend(write_pair(
        dir,
        ISSUING_CA,
        &issuing.cert_pem,
        &issuing.key_pem,
    )?);
    written.push(new_secret_key(dir, force)?);
    Ok(written)
}

/// Writes a new key for secret check header values, DIR/check-secrets.key (0600):
/// every collector's `[check_secrets] key_file`.
pub fn new_secret_key(dir: &Path, force: bool) -> Result<PathBuf, PkiError> {
    let path = dir.join(crate::check_secrets::KEY_FILE);
    if !force && path.exists() {
        return Err(PkiError::Exists(path));
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    crate::check_secrets::write_new_key(&path, force).map_err(|source| PkiError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// File stem of the issuing CA in a certificates directory.
pub const ISSUING_CA: &str = "issuing-ca";

/// Writes a new issuing CA (name-constrained, path length 0) signed by the CA in `dir`,
/// as DIR/issuing-ca.pem and its key: the replacement for one made before its
/// constraints existed ([`check_issuing_ca`]).
pub fn issue_issuing_ca(dir: &Path, force: bool) -> Result<Vec<PathBuf>, PkiError> {
    if !force {
        refuse_existing(&[dir.join(ISSUING_CA)])?;
    }
    let ca = CertificateAuthority::load(dir)?;
    let issuing = ca.issue_intermediate("fleetmon issuing CA")?;
    write_pair(dir, ISSUING_CA, &issuing.cert_pem, &issuing.key_pem)
}

/// What [`check_issuing_ca`] found wrong with an issuing CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuingCaProblem {
    /// The file is not a CA certificate that can be parsed.
    #[error("{0}")]
    Unreadable(String),
    /// No pathLenConstraint of 0: it could sign further CAs.
    #[error("it may sign other CAs (no path length 0)")]
    PathLength,
    /// Some DNS names or IP addresses are not excluded.
    #[error("it may sign server certificates: its name constraints do not exclude every {0}")]
    Unconstrained(&'static str),
}

/// Checks that the certificate (PEM) of an issuing CA is constrained as
/// [`CertificateAuthority::issue_intermediate`] makes it: path length 0 and every
/// DNS name and IP address excluded. Returns every problem found.
pub fn check_issuing_ca(cert_pem: &str) -> Vec<IssuingCaProblem> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let pem = match x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) {
        Ok((_, pem)) => pem,
        Err(error) => return vec![IssuingCaProblem::Unreadable(error.to_string())],
    };
    let tbs = match pem.parse_x509() {
        Ok(cert) => cert.tbs_certificate,
        Err(error) => return vec![IssuingCaProblem::Unreadable(error.to_string())],
    };
    let mut problems = Vec::new();
    let path_len_zero = tbs.extensions().iter().any(|ext| {
        matches!(ext.parsed_extension(), ParsedExtension::BasicConstraints(bc)
            if bc.ca && bc.path_len_constraint == Some(0))
    });
    if !path_len_zero {
        problems.push(IssuingCaProblem::PathLength);
    }
    let excluded: Vec<GeneralName<'_>> = tbs
        .extensions()
        .iter()
        .filter_map(|ext| match ext.parsed_extension() {
            ParsedExtension::NameConstraints(nc) => nc.excluded_subtrees.clone(),
            _ => None,
        })
        .flatten()
        .map(|subtree| subtree.base)
        .collect();
    let all_dns = excluded
        .iter()
        .any(|name| matches!(name, GeneralName::DNSName(name) if name.is_empty()));
    let all_ip = |len: usize| {
        excluded.iter().any(
            |name| matches!(name, GeneralName::IPAddress(net) if net.len() == len && net.iter().all(|b| *b == 0)),
        )
    };
    if !all_dns {
        problems.push(IssuingCaProblem::Unconstrained("DNS name"));
    }
    if !all_ip(8) || !all_ip(32) {
        problems.push(IssuingCaProblem::Unconstrained("IP address"));
    }
    problems
}

/// Issues a server certificate for `sans` (DNS names, IP addresses) as DIR/NAME.pem and
/// DIR/NAME-key.pem, e.g. for a Kafka broker or PostgreSQL server of the dev setup.
pub fn issue_server(
    dir: &Path,
    name: &str,
    sans: &[String],
    force: bool,
) -> Result<Vec<PathBuf>, PkiError> {
    validate_name(name).map_err(|source| PkiError::BadName {
        role: Role::Operator,
        source,
    })?;
    if !force {
        refuse_existing(&[dir.join(format!("{name}.pem"))])?;
    }
    let ca = CertificateAuthority::load(dir)?;
    let issued = ca.issue(&LeafSpec::server(name, sans.to_vec()))?;
    write_pair(dir, name, &issued.cert_pem, &issued.key_pem)
}

/// Issues a client certificate signed by the CA in `dir`: agents go to
/// `dir/agents/NAME.pem`, operators (admin; [`issue_operator`] for another role) to
/// `dir/operators/NAME.pem` (keys beside them).
pub fn issue_client(
    dir: &Path,
    role: Role,
    name: &str,
    force: bool,
) -> Result<Vec<PathBuf>, PkiError> {
    issue_client_as(dir, role, name, &LeafSpec::client(role, name), force)
}

/// Issues `dir/operators/NAME.pem` for `spiffe://fleetmon/operator/ROLE/NAME`.
pub fn issue_operator(
    dir: &Path,
    name: &str,
    role: OperatorRole,
    force: bool,
) -> Result<Vec<PathBuf>, PkiError> {
    issue_client_as(
        dir,
        Role::Operator,
        name,
        &LeafSpec::operator(name, role),
        force,
    )
}

fn issue_client_as(
    dir: &Path,
    role: Role,
    name: &str,
    spec: &LeafSpec,
    force: bool,
) -> Result<Vec<PathBuf>, PkiError> {
    validate_name(name).map_err(|source| PkiError::BadName { role, source })?;
    let sub = dir.join(format!("{role}s"));
    if !force {
        refuse_existing(&[sub.join(name)])?;
    }
    let ca = CertificateAuthority::load(dir)?;
    let issued = ca.issue(spec)?;
    write_pair(&sub, name, &issued.cert_pem, &issued.key_pem)
}

/// Paths of the certificate and key for a stem: `STEM.pem`, `STEM-key.pem`.
pub fn pair_paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}-key.pem")),
    )
}

fn refuse_existing(stems: &[PathBuf]) -> Result<(), PkiError> {
    for stem in stems {
        let dir = stem.parent().unwrap_or(Path::new("."));
        let name = stem
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let (cert, key) = pair_paths(dir, name);
        for path in [cert, key] {
            if path.exists() {
                return Err(PkiError::Exists(path));
            }
        }
    }
    Ok(())
}

/// Writes `STEM.pem` (0644) and `STEM-key.pem` (0600), creating `dir` if needed.
pub fn write_pair(
    dir: &Path,
    stem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Vec<PathBuf>, PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let (cert, key) = pair_paths(dir, stem);
    write_file(&cert, cert_pem, 0o644)?;
    write_file(&key, key_pem, 0o600)?;
    Ok(vec![cert, key])
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let wrap = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(wrap)?;
    // `mode` only applies to new files; an overwritten key must not stay readable.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(wrap)?;
    file.write_all(contents.as_bytes()).map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_issuing_ca_is_constrained_and_an_old_one_is_reported() {
        let root = CertificateAuthority::generate("test root").unwrap();
        let issuing = root.issue_intermediate("test issuing").unwrap();
        assert_eq!(check_issuing_ca(issuing.cert_pem()), Vec::new());

        // As `issue_intermediate` made them before name constraints.
        let mut params = ca_params("old issuing", Duration::days(365));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let key = KeyPair::generate().unwrap();
        let old = params.signed_by(&key, &root.issuer().unwrap()).unwrap();
        assert_eq!(
            check_issuing_ca(&old.pem()),
            vec![
                IssuingCaProblem::Unconstrained("DNS name"),
                IssuingCaProblem::Unconstrained("IP address"),
            ]
        );
        assert_eq!(
            check_issuing_ca(root.cert_pem()),
            vec![
                IssuingCaProblem::PathLength,
                IssuingCaProblem::Unconstrained("DNS name"),
                IssuingCaProblem::Unconstrained("IP address"),
            ]
        );
        assert!(matches!(
            check_issuing_ca("not a certificate")[..],
            [IssuingCaProblem::Unreadable(_)]
        ));
    }
}
