//! Who is on the other end of a mutual-TLS connection.
//!
//! Every fleetmon client certificate carries one URI SAN: `spiffe://fleetmon/agent/NAME`
//! or `spiffe://fleetmon/operator/ROLE/NAME` (ROLE: viewer, editor or admin). The kind
//! and role decide which gRPC methods the peer may call ([`crate::access`]) and the name
//! becomes its identity (an agent's `agent_id`). An operator certificate made before
//! roles (`spiffe://fleetmon/operator/NAME`) is read as admin, with a logged
//! deprecation. The certificate chain itself was verified by rustls before anything
//! here runs.

use std::fmt;
use std::time::SystemTime;

use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Scheme and trust domain every fleetmon identity URI starts with.
pub const SPIFFE_PREFIX: &str = "spiffe://fleetmon/";

/// Longest accepted agent or operator name.
pub const MAX_NAME_LEN: usize = 64;

/// What a peer is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A host agent: may only call `Ingest`.
    Agent,
    /// A human or tool: may call the query services (`Fleet`, `History`).
    Operator,
}

impl Role {
    /// The path segment used in the identity URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
        }
    }
}

/// What an operator certificate lets its holder do; each role includes the ones
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum OperatorRole {
    /// Read: the fleet, history, alerts, checks.
    Viewer,
    /// Also change checks and silences.
    Editor,
    /// Also tokens, revocation, certificates.
    Admin,
}

impl OperatorRole {
    /// The path segment used in the identity URI.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Editor => "editor",
            OperatorRole::Admin => "admin",
        }
    }

    fn of(segment: &str) -> Option<Self> {
        match segment {
            "viewer" => Some(OperatorRole::Viewer),
            "editor" => Some(OperatorRole::Editor),
            "admin" => Some(OperatorRole::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verified identity of a peer, taken from its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// What the peer may do.
    pub role: Role,
    /// The agent or operator name (for agents: the `agent_id` stored with every sample).
    pub name: String,
    /// An operator's role (`None` for agents).
    pub operator_role: Option<OperatorRole>,
    /// The identity URI as the certificate carries it.
    pub uri: String,
    /// When the presented certificate expires.
    pub not_after: SystemTime,
    /// The presented certificate's serial number ([`serial_hex`]).
    pub serial: String,
}

/// Why no identity could be taken from a peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The connection carried no verified client certificate (plaintext or no mTLS).
    #[error("no client certificate was presented")]
    NoCertificate,
    /// The certificate bytes are not valid X.509.
    #[error("client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// The certificate has no URI subject alternative name at all.
    #[error("client certificate has no URI SAN (expected {SPIFFE_PREFIX}<agent|operator>/<name>)")]
    NoUriSan,
    /// The URI SAN is not a fleetmon identity.
    #[error(
        "client certificate URI SAN `{0}` is not a fleetmon identity (expected {SPIFFE_PREFIX}<agent|operator>/<name>)"
    )]
    ForeignUri(String),
    /// The URI names a role fleetmon does not know.
    #[error(
        "client certificate URI SAN `{0}` names an unknown role (expected agent/NAME or operator/viewer|editor|admin/NAME)"
    )]
    UnknownRole(String),
    /// The name part of the URI is not acceptable.
    #[error("client certificate URI SAN `{uri}`: {reason}")]
    BadName {
        /// The full URI.
        uri: String,
        /// What is wrong with the name.
        reason: NameError,
    },
}

/// Why an agent or operator name was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Empty string.
    #[error("name is empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("name `{0}` is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    /// Contains something other than letters, digits, `.`, `_` and `-`, or starts with `.`.
    #[error(
        "name `{0}` may only contain ASCII letters, digits, '.', '_' and '-', and may not start with '.'"
    )]
    BadCharacters(String),
}

/// A name that was refused, as errors and logs show it: at most [`MAX_NAME_LEN`]
/// characters, control and non-ASCII characters escaped, its length said when cut. A
/// 4 MB name sent to the enrollment listener is a short log line.
pub fn preview(name: &str) -> String {
    let shown: String = name
        .chars()
        .take(MAX_NAME_LEN)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().count() > MAX_NAME_LEN {
        format!("{shown}… ({} bytes)", name.len())
    } else {
        shown
    }
}

/// Checks an agent or operator name: 1–64 of `[A-Za-z0-9._-]`, not starting with `.`.
///
/// The same rule applies when a certificate is issued and when one is presented, so
/// a name is always safe as a file name, a Kafka key and a URI path segment.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(preview(name)));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.starts_with('.') || !name.chars().all(allowed) {
        return Err(NameError::BadCharacters(preview(name)));
    }
    Ok(())
}

impl PeerIdentity {
    /// The identity URI this peer's certificate carries.
    pub fn uri(&self) -> String {
        self.uri.clone()
    }

    /// Reads the identity from a DER-encoded (already verified) certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let not_after = SystemTime::from(cert.validity().not_after.to_datetime());
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        let Some(first) = uris.first() else {
            return Err(IdentityError::NoUriSan);
        };
        // A certificate may carry other URIs; the fleetmon one decides.
        let uri = uris
            .iter()
            .find(|u| u.starts_with(SPIFFE_PREFIX))
            .ok_or_else(|| IdentityError::ForeignUri((*first).to_owned()))?;
        let (role, operator_role, name) = parse_identity_uri(uri)?;
        Ok(PeerIdentity {
            role,
            name,
            operator_role,
            uri: (*uri).to_owned(),
            not_after,
            serial: serial_hex(cert.raw_serial()),
        })
    }

    /// Reads the identity of the peer that sent a gRPC request over mutual TLS.
    pub fn from_request<T>(request: &Request<T>) -> Result<Self, IdentityError> {
        let certs = request.peer_certs().ok_or(IdentityError::NoCertificate)?;
        let leaf = certs.first().ok_or(IdentityError::NoCertificate)?;
        Self::from_der(leaf.as_ref())
    }
}

/// The URI SAN of an agent: `spiffe://fleetmon/agent/NAME`.
pub fn agent_uri(name: &str) -> String {
    format!("{SPIFFE_PREFIX}agent/{name}")
}

/// The URI SAN of an operator: `spiffe://fleetmon/operator/ROLE/NAME`.
pub fn operator_uri(role: OperatorRole, name: &str) -> String {
    format!("{SPIFFE_PREFIX}operator/{role}/{name}")
}

fn parse_identity_uri(uri: &str) -> Result<(Role, Option<OperatorRole>, String), IdentityError> {
    let rest = uri
        .strip_prefix(SPIFFE_PREFIX)
        .ok_or_else(|| IdentityError::ForeignUri(uri.to_owned()))?;
    let (kind, rest) = rest
        .split_once('/')
        .ok_or_else(|| IdentityError::UnknownRole(uri.to_owned()))?;
    let (role, operator_role, name) = match (kind, rest.split_once('/')) {
        ("agent", _) => (Role::Agent, None, rest),
        ("operator", Some((segment, name))) => match OperatorRole::of(segment) {
            Some(level) => (Role::Operator, Some(level), name),
            None => return Err(IdentityError::UnknownRole(uri.to_owned())),
        },
        ("operator", None) => {
            deprecated_operator(uri);
            (Role::Operator, Some(OperatorRole::Admin), rest)
        }
        _ => return Err(IdentityError::UnknownRole(uri.to_owned())),
    };
    validate_name(name).map_err(|reason| IdentityError::BadName {
        uri: uri.to_owned(),
        reason,
    })?;
    Ok((role, operator_role, name.to_owned()))
}

/// Logs, once per URI (for the first thousand), that an operator certificate predates
/// roles and is read as admin.
fn deprecated_operator(uri: &str) {
    static WARNED: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
        std::sync::Mutex::new(None);
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    let warned = warned.get_or_insert_with(Default::default);
    if warned.len() < 1000 && warned.insert(uri.to_owned()) {
        tracing::warn!(
            %uri,
            "operator certificate without a role: read as admin; issue one with a role (fleetmon certs issue-operator NAME --role viewer|editor|admin)"
        );
    }
}

/// The identity [`crate::access::Authorize`] stored in a request.
pub fn peer_identity<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    request
        .extensions()
        .get::<PeerIdentity>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("request carries no verified peer identity"))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate serial number as fleetmon writes and compares it: lower-case hex of
/// its value with no leading zeros (`0` for zero). DER prefixes a `00` byte to a serial
/// whose top bit is set, and openssl prints it with or without: all are one serial.
pub fn serial_hex(raw: &[u8]) -> String {
    trim_serial(&hex(raw))
}

fn trim_serial(digits: &str) -> String {
    match digits.trim_start_matches('0') {
        "" => "0".to_owned(),
        value => value.to_owned(),
    }
}

/// A serial number that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a certificate serial: give its hex digits as openssl prints them, \
     e.g. 00:E3:5A:… or e35a…"
)]
pub struct SerialError(pub String);

/// Reads a serial as people copy it — hex digits in any case, optionally `0x`-prefixed
/// and `:`-separated (`openssl x509 -serial` and `-text`) — as [`serial_hex`] writes it.
/// At most 20 octets (RFC 5280), plus a sign byte.
pub fn parse_serial(text: &str) -> Result<String, SerialError> {
    let bad = || SerialError(text.chars().take(80).collect());
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let digits: String = body.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || digits.len() > 42 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(trim_serial(&digits.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_rule() {
        assert_eq!(validate_name("web-01.example_2"), Ok(()));
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(
            validate_name("a/b"),
            Err(NameError::BadCharacters(_))
        ));
        assert!(matches!(
            validate_name("a b"),
            Err(NameError::BadCharacters(_))
        ));
        assert!(matches!(
            validate_name(".."),
            Err(NameError::BadCharacters(_))
        ));
        assert_eq!(
            validate_name(&"x".repeat(4_000_000))
                .unwrap_err()
                .to_string(),
            format!(
                "name `{}… (4000000 bytes)` is longer than 64 characters",
                "x".repeat(64)
            )
        );
        assert_eq!(
            validate_name("a\nb").unwrap_err().to_string(),
            "name `a\\nb` may only contain ASCII letters, digits, '.', '_' and '-', and may not start with '.'"
        );
    }

    #[test]
    fn serials_compare_by_value_however_they_are_written() {
        assert_eq!(serial_hex(&[0x00, 0xe3, 0x5a]), "e35a");
        assert_eq!(serial_hex(&[0x0e, 0x01]), "e01");
        assert_eq!(serial_hex(&[0]), "0");
        for written in ["00:E3:5A", "e35a", "0xE35A", " 00e35a "] {
            assert_eq!(parse_serial(written), Ok("e35a".to_owned()), "{written}");
        }
        assert_eq!(
            parse_serial("xyz").unwrap_err().to_string(),
            "`xyz` is not a certificate serial: give its hex digits as openssl prints them, \
             e.g. 00:E3:5A:… or e35a…"
        );
        assert!(parse_serial("").is_err());
        assert!(parse_serial(&"a".repeat(43)).is_err());
    }

    #[test]
    fn identity_uris_parse_back() {
        assert_eq!(
            parse_identity_uri("spiffe://fleetmon/agent/web-1"),
            Ok((Role::Agent, None, "web-1".to_owned()))
        );
        assert_eq!(
            parse_identity_uri("spiffe://fleetmon/operator/viewer/vic"),
            Ok((Role::Operator, Some(OperatorRole::Viewer), "vic".to_owned()))
        );
        // Made before roles: read as admin.
        assert_eq!(
            parse_identity_uri("spiffe://fleetmon/operator/admin"),
            Ok((
                Role::Operator,
                Some(OperatorRole::Admin),
                "admin".to_owned()
            ))
        );
        assert_eq!(
            parse_identity_uri("spiffe://fleetmon/operator/root/x"),
            Err(IdentityError::UnknownRole(
                "spiffe://fleetmon/operator/root/x".to_owned()
            ))
        );
        assert_eq!(
            parse_identity_uri("spiffe://fleetmon/root/x"),
            Err(IdentityError::UnknownRole(
                "spiffe://fleetmon/root/x".to_owned()
            ))
        );
        assert!(matches!(
            parse_identity_uri("spiffe://fleetmon/agent/a/b"),
            Err(IdentityError::BadName { .. })
        ));
    }
}
