//! PostgreSQL connections as every fleetmon process that reads or writes the database
//! makes them (the writer, the status page): TLS with libpq's `sslmode` meanings on
//! rustls, the settings' validation and hints for failed connections.
//!
//! - `disable`, `prefer` (the default; treated as `disable`): plaintext;
//! - `require`: encrypted; with `postgres.ca` the chain is verified (as libpq does when
//!   a root certificate is present), without it nothing is (logged as a warning);
//! - `verify-ca`: encrypted, the chain verified against `postgres.ca`, any host name;
//! - `verify-full`: encrypted, the chain and the host name verified.
//!
//! `postgres.cert` and `postgres.key` add a client certificate. tokio-postgres knows
//! only `disable`, `prefer` and `require`, so `verify-*` reach it as `require` and the
//! verification is this module's. Connection failures get a hint naming the setting.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::config::ConfigError;

/// The TLS settings of a `[postgres]` section: its URL (whose `sslmode` says what is
/// asked), the CA and the client certificate.
#[derive(Debug, Clone, Copy)]
pub struct PgTlsFiles<'a> {
    /// `postgres.url`.
    pub url: &'a str,
    /// `postgres.ca`.
    pub ca: Option<&'a Path>,
    /// `postgres.cert`.
    pub cert: Option<&'a Path>,
    /// `postgres.key`.
    pub key: Option<&'a Path>,
}

impl PgTlsFiles<'_> {
    /// Refuses settings that cannot work together, naming the field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (mode, _) = SslMode::of_url(self.url);
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && self.ca.is_none() {
            return Err(ConfigError::field(
                "postgres.ca",
                format!(
                    "is required by sslmode={} in postgres.url: set it to the CA bundle that signed the server's certificate",
                    mode.as_str()
                ),
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::field(
                if self.cert.is_some() {
                    "postgres.key"
                } else {
                    "postgres.cert"
                },
                "is missing: a client certificate needs both postgres.cert and postgres.key",
            ));
        }
        Ok(())
    }

    /// The mode the URL asks for and the connection settings tokio-postgres takes
    /// (`verify-*` as `require`, `prefer` as `disable`).
    pub fn config(&self) -> Result<(SslMode, tokio_postgres::Config), tokio_postgres::Error> {
        let (mode, url) = SslMode::of_url(self.url);
        let mut pg: tokio_postgres::Config = url.parse()?;
        if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        Ok((mode, pg))
    }
}

/// The server's message for a database error (tokio-postgres only says "db error").
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Whether `error` says PostgreSQL could not be reached or is not ready (no answer,
/// SQLSTATE class 08 connection, 53 resources, 57 operator intervention: starting or
/// shutting down), so waiting may cure it; a refusal (a user, password or database it
/// does not know) will not be.
pub fn is_unreachable(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_none_or(|db| matches!(&db.code().code()[..2], "08" | "53" | "57"))
}

/// Refuses a `postgres.schema` that is not a plain identifier (it is written into SQL).
pub fn validate_schema_name(schema: &str) -> Result<(), ConfigError> {
    let legal = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if schema.is_empty()
        || schema.len() > 63
        || !schema.chars().all(legal)
        || schema.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(ConfigError::field(
            "postgres.schema",
            format!(
                "`{schema}` is not a plain identifier: use 1-63 of [a-z0-9_], not starting with a digit"
            ),
        ));
    }
    Ok(())
}

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext (`disable`, `prefer`, or no `sslmode`).
    Disable,
    /// Encrypted; verified only when a CA is set.
    Require,
    /// Encrypted; the chain verified, not the host name.
    VerifyCa,
    /// Encrypted; the chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    /// The mode `url` names, and the URL tokio-postgres can parse (`verify-*` as `require`).
    pub fn of_url(url: &str) -> (SslMode, String) {
        for (text, mode) in [
            ("sslmode=verify-full", SslMode::VerifyFull),
            ("sslmode=verify-ca", SslMode::VerifyCa),
        ] {
            if url.contains(text) {
                return (mode, url.replace(text, "sslmode=require"));
            }
        }
        let mode = if url.contains("sslmode=require") {
            SslMode::Require
        } else {
            SslMode::Disable
        };
        (mode, url.to_owned())
    }

    /// As written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A verifier less strict than verify-full: with `chain`, a chain that verifies but
/// names another host is accepted (`verify-ca`, or `require` with a CA); without it,
/// any certificate (`require` without a CA: encryption only). Handshake signatures are
/// always checked.
#[derive(Debug)]
struct Relaxed {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, crate::tls::TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::read_certs("postgres CA (postgres.ca)", ca)? {
        roots.add(cert).map_err(|e| crate::tls::TlsError::File {
            what: "postgres CA (postgres.ca)",
            path: ca.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The connector for `mode` with `files`' CA and client certificate.
pub fn connector(
    mode: SslMode,
    files: &PgTlsFiles<'_>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, crate::tls::TlsError> {
    let provider = crate::tls::crypto_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(crate::tls::TlsError::Rustls)?;
    let builder = match (mode, files.ca) {
        (SslMode::VerifyFull, Some(ca)) => builder.with_root_certificates(roots(ca)?),
        (SslMode::VerifyCa | SslMode::Require, Some(ca)) => {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| crate::tls::TlsError::File {
                what: "postgres CA (postgres.ca)",
                path: ca.to_owned(),
                reason: e.to_string(),
            })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Relaxed {
                    chain: Some(webpki),
                    provider,
                }))
        }
        (SslMode::Require, None) => {
            tracing::warn!(
                "PostgreSQL TLS without verifying the server (sslmode=require and no postgres.ca): set postgres.ca and use sslmode=verify-full"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Relaxed {
                    chain: None,
                    provider,
                }))
        }
        // Refused by the config's validation; plaintext never reaches the connector.
        (_, None) => builder.with_root_certificates(rustls::RootCertStore::empty()),
        (SslMode::Disable, Some(ca)) => builder.with_root_certificates(roots(ca)?),
    };
    let config = match (files.cert, files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                crate::tls::read_certs("postgres client certificate (postgres.cert)", cert)?,
                crate::tls::read_key("postgres client key (postgres.key)", key)?,
            )
            .map_err(crate::tls::TlsError::Rustls)?,
        _ => builder.with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// What to do about a failed connection, from its error text, or `None`.
pub fn hint(error: &str, mode: SslMode) -> Option<String> {
    let mode = mode.as_str();
    if error.contains("UnknownIssuer") || error.contains("BadSignature") {
        return Some(format!(
            "the server's certificate is not signed by a CA in postgres.ca: set postgres.ca to the CA that issued it (sslmode={mode})"
        ));
    }
    if error.contains("NotValidForName") || error.contains("not valid for name") {
        return Some(
            "the server's certificate does not name the host in postgres.url (sslmode=verify-full): connect by a name the certificate carries, or use sslmode=verify-ca".to_owned(),
        );
    }
    if error.contains("server does not support TLS") {
        return Some(format!(
            "the server does not accept TLS but postgres.url says sslmode={mode}: turn on ssl at the server, or set sslmode=disable"
        ));
    }
    if error.contains("no encryption") {
        return Some(
            "the server accepts only TLS connections: add sslmode=verify-full to postgres.url and set postgres.ca".to_owned(),
        );
    }
    if error.contains("certificate required") || error.contains("CertificateRequired") {
        return Some(
            "the server asks for a client certificate: set postgres.cert and postgres.key"
                .to_owned(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_reach_tokio_postgres_as_require() {
        assert_eq!(
            SslMode::of_url("postgres://u@db:5432/f?sslmode=verify-full"),
            (
                SslMode::VerifyFull,
                "postgres://u@db:5432/f?sslmode=require".to_owned()
            )
        );
        assert_eq!(
            SslMode::of_url("host=db sslmode=verify-ca").0,
            SslMode::VerifyCa
        );
        assert_eq!(
            SslMode::of_url("postgres://u@db/f?sslmode=require").0,
            SslMode::Require
        );
        assert_eq!(SslMode::of_url("postgres://u@db/f").0, SslMode::Disable);
    }
}
