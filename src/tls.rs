//! TLS for every fleetmon gRPC connection: mutual TLS, rustls with the aws-lc-rs
//! provider everywhere (one crypto library in every binary).
//!
//! Servers use [`server_config`] + [`tls_incoming`] (a client certificate signed by the
//! configured CA is required, optional CRL); clients use [`connect`] with their own
//! identity. Every file error names the file and says what to do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::identity::{PeerIdentity, Role};

/// How long a client may take to finish the TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes a listener runs at once (established connections are not
/// counted): a flood of slow clients cannot hold unbounded memory.
pub const MAX_HANDSHAKES: usize = 1024;

/// Why TLS material could not be loaded or a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing of the expected kind.
    #[error(
        "cannot read {what} {path}: {reason} (generate dev certificates with: fleetmon certs init)"
    )]
    File {
        /// Which file it is (e.g. "client certificate").
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. an empty CA bundle or a bad CRL).
    #[error("invalid client CA or CRL: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The CA could not be fetched by its fingerprint (enrollment).
    #[error("cannot fetch the fleet's CA from {endpoint}: {reason}")]
    Pinned {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The endpoint URL is malformed or the connection failed.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
}

/// The crypto provider all fleetmon TLS uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs [`crypto_provider`] as the process default, for libraries (reqwest,
/// tonic's client) that build their own rustls configs. Safe to call repeatedly.
pub fn install_crypto_provider() {
    // An error only says a provider is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn pem_error(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the expected kind in it".into()
        }
        other => format!("not valid PEM: {other:?}"),
    }
}

/// Every certificate in a PEM file (a chain or a CA bundle).
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, pem_error(e)))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no certificate in it"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(what, path, pem_error(e)))
}

/// Every CRL in a PEM file.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| file_error("CRL", path, pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("CRL", path, pem_error(e)))
}

/// The first certificate of a PEM text (DER), if it holds one.
pub fn first_certificate(pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
}

/// The serial numbers ([`crate::identity::serial_hex`]) a CRL file revokes, from every
/// CRL in it. The file is the operator's (as for the handshake, whose CA checks the
/// CRL's signature); this is what connections opened before it listed them are
/// checked against.
pub fn crl_serials(path: &Path) -> Result<std::collections::HashSet<String>, TlsError> {
    use x509_parser::prelude::FromDer as _;
    let mut serials = std::collections::HashSet::new();
    for crl in read_crls(path)? {
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
                .map_err(|e| file_error("CRL", path, e))?;
        serials.extend(
            parsed
                .iter_revoked_certificates()
                .map(|revoked| crate::identity::serial_hex(revoked.raw_serial())),
        );
    }
    Ok(serials)
}

/// The serials `files.crl` revokes, reloaded as the handshake's CRL is; `None`
/// without a CRL. Must be called inside a Tokio runtime.
pub fn reloading_crl_serials(
    files: &ServerTlsFiles,
) -> Result<Option<Reloading<Arc<std::collections::HashSet<String>>>>, TlsError> {
    let Some(path) = files.crl.clone() else {
        return Ok(None);
    };
    let watched = path.clone();
    reloading(
        "crl",
        vec![path],
        Duration::from_secs(files.reload_interval_seconds),
        move || crl_serials(&watched).map(Arc::new),
    )
    .map(Some)
}

/// TLS files of a server that requires client certificates.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to (PEM).
    pub client_ca: PathBuf,
    /// Optional CRL file (PEM); revoked client certificates are refused.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Seconds between checks of the files above for changes (0: never). A valid
    /// replacement applies to new connections; a broken one is logged and ignored.
    #[serde(default = "default_reload_interval")]
    pub reload_interval_seconds: u64,
}

fn default_reload_interval() -> u64 {
    DEFAULT_RELOAD_INTERVAL.as_secs()
}

/// How often certificate, key, CA and CRL files are checked for changes by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

impl ServerTlsFiles {
    /// The conventional files of a `fleetmon certs init` directory for a server
    /// (`collector` or `writer`).
    pub fn from_certs_dir(dir: &Path, server: &str) -> Self {
        ServerTlsFiles {
            cert: dir.join(format!("{server}.pem")),
            key: dir.join(format!("{server}-key.pem")),
            client_ca: dir.join("ca.pem"),
            crl: None,
            reload_interval_seconds: default_reload_interval(),
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone(), self.client_ca.clone()];
        paths.extend(self.crl.clone());
        paths
    }
}

/// The current TLS configuration of a server or client; changes when its files do.
pub type Reloading<T> = tokio::sync::watch::Receiver<T>;

/// Loads `load()` now (an error here is returned: a process must not start with
/// broken TLS files), then every `interval` compares the bytes of `paths` with what
/// was loaded; when they changed, loads again. A good result replaces the current
/// value; a failing one is logged and the previous value stays in force. The
/// watching task ends when every receiver is gone. `interval` zero: never reload.
/// Must be called inside a Tokio runtime.
pub fn reloading<T, F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    interval: Duration,
    load: F,
) -> Result<Reloading<T>, TlsError>
where
    T: Send + Sync + 'static,
    F: Fn() -> Result<T, TlsError> + Send + 'static,
{
    let read = |paths: &[PathBuf]| -> Vec<Option<Vec<u8>>> {
        paths.iter().map(|p| std::fs::read(p).ok()).collect()
    };
    let mut loaded = read(&paths);
    let (tx, rx) = tokio::sync::watch::channel(load()?);
    if interval.is_zero() {
        // Receivers keep the value; `changed()` reports that no change will come.
        return Ok(rx);
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = tx.closed() => return,
            }
            let now = read(&paths);
            if now == loaded {
                continue;
            }
            loaded = now;
            match load() {
                Ok(value) => {
                    tx.send_replace(value);
                    tracing::info!(what, "TLS files changed: new connections use the new ones");
                }
                Err(error) => tracing::error!(
                    what,
                    %error,
                    "TLS files changed but cannot be used: the previous ones stay in force until they are fixed"
                ),
            }
        }
    });
    Ok(rx)
}

/// [`server_config`], reloaded when the files change (every
/// `files.reload_interval_seconds`). For [`tls_incoming`].
pub fn reloading_server_config(
    files: &ServerTlsFiles,
) -> Result<Reloading<Arc<ServerConfig>>, TlsError> {
    reloading_server_config_with(files, None)
}

/// Says whether a client certificate that chains to the CA is revoked all the same
/// (beyond the CRL file): a live list the server follows.
pub type RevocationCheck = Arc<dyn Fn(&PeerIdentity) -> bool + Send + Sync>;

/// [`reloading_server_config`] whose handshakes also refuse what `revoked` names.
pub fn reloading_server_config_with(
    files: &ServerTlsFiles,
    revoked: Option<RevocationCheck>,
) -> Result<Reloading<Arc<ServerConfig>>, TlsError> {
    let owned = files.clone();
    reloading(
        "server",
        files.paths(),
        Duration::from_secs(files.reload_interval_seconds),
        move || server_config_with(&owned, revoked.clone()),
    )
}

/// The same certificate without client authentication, for a listener where clients
/// have no certificate yet (enrollment). The chain served ends with the CA of
/// `files.client_ca`, so that a client holding only the CA's fingerprint can check it.
pub fn reloading_enrollment_config(
    files: &ServerTlsFiles,
) -> Result<Reloading<Arc<ServerConfig>>, TlsError> {
    reloading_without_client_auth(files, "enrollment", b"h2")
}

/// [`reloading_enrollment_config`] offering HTTP/1.1 instead of HTTP/2: a listener for
/// plain HTTPS clients (curl in a cron job) that present no certificate.
pub fn reloading_http1_config(
    files: &ServerTlsFiles,
    what: &'static str,
) -> Result<Reloading<Arc<ServerConfig>>, TlsError> {
    reloading_without_client_auth(files, what, b"http/1.1")
}

fn reloading_without_client_auth(
    files: &ServerTlsFiles,
    what: &'static str,
    alpn: &'static [u8],
) -> Result<Reloading<Arc<ServerConfig>>, TlsError> {
    let owned = files.clone();
    reloading(
        what,
        files.paths(),
        Duration::from_secs(files.reload_interval_seconds),
        move || {
            let mut chain = read_certs("server certificate", &owned.cert)?;
            chain.extend(read_certs("client CA", &owned.client_ca)?);
            let key = read_key("server key", &owned.key)?;
            let mut config = ServerConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config))
        },
    )
}

/// A rustls server config that requires a client certificate issued by
/// `files.client_ca` (and not revoked by `files.crl`), offering HTTP/2 only.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(files, None)
}

/// [`server_config`] that also refuses client certificates `revoked` names.
pub fn server_config_with(
    files: &ServerTlsFiles,
    revoked: Option<RevocationCheck>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let chain = read_certs("server certificate", &files.cert)?;
    let key = read_key("server key", &files.key)?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs("client CA", &files.client_ca)? {
        if crate::pki::check_issuing_ca(&pem_certificate(ca.as_ref())).is_empty() {
            return Err(file_error(
                "client CA",
                &files.client_ca,
                "it holds an issuing CA (one that signs agents only): list only the root CA \
                 (ca.pem); agents send the issuing CA with their own certificate",
            ));
        }
        roots
            .add(ca)
            .map_err(|e| file_error("client CA", &files.client_ca, e))?;
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl) = &files.crl {
        // A certificate whose issuer has no CRL in the file is not refused for that: a
        // CRL of the root must not lock out every agent the issuing CA enrolled. Serials
        // listed by any CRL in the file are refused whoever issued them
        // (`FleetmonClientVerifier` with `reloading_crl_serials`, on open connections too).
        verifier = verifier
            .with_crls(read_crls(crl)?)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let verifier = Arc::new(FleetmonClientVerifier {
        inner: verifier.build()?,
        revoked,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Why a client certificate that chains to the CA is still refused.
#[derive(Debug, thiserror::Error)]
enum ClientRefused {
    /// Only agent certificates may come from the issuing CA.
    #[error(
        "{0} is not an agent identity and was not issued by the root CA itself: \
         the issuing CA signs agents only"
    )]
    NotRootIssued(String),
}

/// The CA's checks (chain, validity, CRL), then fleetmon's own: a certificate that is
/// not an agent's must be issued by the root CA directly, never through the issuing
/// CA collectors hold (a collector's key must not mint operators); and none that a
/// [`RevocationCheck`] names.
struct FleetmonClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Option<RevocationCheck>,
}

impl std::fmt::Debug for FleetmonClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetmonClientVerifier")
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for FleetmonClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = PeerIdentity::from_der(end_entity);
        let agent = matches!(&identity, Ok(id) if id.role == Role::Agent);
        // With no intermediates, a chain can only end at a root: the leaf was issued
        // by it directly.
        if !agent
            && !intermediates.is_empty()
            && self.inner.verify_client_cert(end_entity, &[], now).is_err()
        {
            let who = identity.map_or_else(|e| e.to_string(), |id| id.uri());
            let refused = ClientRefused::NotRootIssued(who);
            tracing::warn!(reason = %refused, "client certificate refused");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(refused))),
            ));
        }
        if let (Some(revoked), Ok(identity)) = (&self.revoked, &identity)
            && revoked(identity)
        {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently, yielding
/// established streams for `tonic::transport::Server::serve_with_incoming*`.
///
/// A failed or slow handshake (no client certificate, unknown CA, revoked, …) is
/// logged with the peer address and dropped; it never delays other clients.
/// Each handshake uses the configuration current when the connection arrived.
/// At most [`MAX_HANDSHAKES`] are in progress at once.
/// The stream ends when the listener fails or the consumer is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    config: Reloading<Arc<ServerConfig>>,
) -> impl Stream<Item = Result<TlsConnection, std::io::Error>> {
    tls_incoming_capped(listener, config, None)
}

/// An established TLS connection, holding its place under its listener's cap (if any)
/// until it closes.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = <TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// [`tls_incoming`] holding at most `max_connections` established connections (and
/// their handshakes) at once: past it, accepting waits and new connections queue in
/// the kernel's backlog. For a listener open to clients without certificates.
pub fn tls_incoming_capped(
    listener: TcpListener,
    config: Reloading<Arc<ServerConfig>>,
    max_connections: Option<usize>,
) -> impl Stream<Item = Result<TlsConnection, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let connections = max_connections.map(|max| Arc::new(tokio::sync::Semaphore::new(max)));
    tokio::spawn(async move {
        loop {
            let place = match &connections {
                Some(connections) => tokio::select! {
                    place = connections.clone().acquire_owned() => place.ok(),
                    () = tx.closed() => return,
                },
                None => None,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Running out of file descriptors and similar: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // At most MAX_HANDSHAKES at once: past that, accepting waits and new
            // connections queue in the kernel's backlog instead of in memory.
            let permit = tokio::select! {
                permit = handshakes.clone().acquire_owned() => permit,
                () = tx.closed() => return,
            };
            let Ok(permit) = permit else { return };
            // Latency only: a socket that refuses it still works.
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config.borrow().clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let connection = TlsConnection {
                            stream,
                            _place: place,
                        };
                        // The server stopped accepting: the connection is dropped.
                        let _ = tx.send(Ok(connection)).await;
                    }
                    Ok(Err(error)) => tracing::warn!(%peer, %error, "tls handshake failed"),
                    Err(_) => tracing::warn!(%peer, "tls handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// TLS files of a client: its identity and the CA it trusts for the server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsFiles {
    /// CA bundle the server certificate must chain to (PEM).
    pub ca: PathBuf,
    /// This client's certificate (PEM).
    pub cert: PathBuf,
    /// This client's private key (PEM).
    pub key: PathBuf,
    /// Name to verify the server certificate against; defaults to the endpoint host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A tonic client TLS config with the client's identity. The files are read and
/// checked here, so a bad path is reported before any connection attempt.
pub fn client_tls_config(files: &ClientTlsFiles) -> Result<ClientTlsConfig, TlsError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| file_error(what, path, e))
    };
    read_certs("CA", &files.ca)?;
    read_certs("client certificate", &files.cert)?;
    read_key("client key", &files.key)?;
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("CA", &files.ca)?))
        .identity(Identity::from_pem(
            read("client certificate", &files.cert)?,
            read("client key", &files.key)?,
        ));
    if let Some(name) = &files.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

/// An endpoint (`https://host:port`) configured for mutual TLS; connect it with
/// `.connect().await` or `.connect_lazy()`.
pub fn endpoint(url: &str, files: &ClientTlsFiles) -> Result<Endpoint, TlsError> {
    install_crypto_provider();
    let connect_error = |source| TlsError::Connect {
        endpoint: url.to_owned(),
        source,
    };
    Endpoint::from_shared(url.to_owned())
        .map_err(connect_error)?
        .tls_config(client_tls_config(files)?)
        .map_err(connect_error)
        .map(|e| e.connect_timeout(Duration::from_secs(10)))
}

/// Connects to a fleetmon gRPC server over mutual TLS.
pub async fn connect(url: &str, files: &ClientTlsFiles) -> Result<Channel, TlsError> {
    endpoint(url, files)?
        .connect()
        .await
        .map_err(|source| TlsError::Connect {
            endpoint: url.to_owned(),
            source,
        })
}

/// Fetches the fleet's root CA from a collector's enrollment listener, trusting only
/// a CA whose SHA-256 (DER, hex, with or without `sha256:` and colons) is
/// `fingerprint`: the listener's chain must contain it, and the collector's
/// certificate must chain to it and name the host of `url`. What a host that has only
/// a token and the fingerprint uses before it has a CA of its own.
pub async fn fetch_pinned_ca(url: &str, fingerprint: &str) -> Result<String, TlsError> {
    let failed = |reason: String| TlsError::Pinned {
        endpoint: url.to_owned(),
        reason,
    };
    let wanted = fingerprint
        .trim()
        .trim_start_matches("sha256:")
        .replace(':', "")
        .to_ascii_lowercase();
    if wanted.len() != 64 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(failed(format!(
            "`{fingerprint}` is not a SHA-256 fingerprint: write sha256: and 64 hex digits (`fleetmon certs fingerprint` prints it)"
        )));
    }
    let uri: tonic::codegen::http::Uri =
        url.parse().map_err(|e| failed(format!("not a URL: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| failed("the URL has no host".into()))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| failed(format!("`{host}` is not a host name: {e}")))?;
    let provider = crypto_provider();
    let verifier = Arc::new(PinnedCa {
        wanted,
        provider: provider.clone(),
        found: std::sync::Mutex::new(None),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| failed("no answer in time".into()))?
        .map_err(|e| failed(e.to_string()))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let ca = verifier
        .found
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| failed("the handshake ended without a CA".into()))?;
    Ok(pem_certificate(ca.as_ref()))
}

/// A certificate (DER) as PEM.
pub fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Trusts the server's chain only through the one CA of the pinned fingerprint.
#[derive(Debug)]
struct PinnedCa {
    wanted: String,
    provider: Arc<CryptoProvider>,
    found: std::sync::Mutex<Option<CertificateDer<'static>>>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let fingerprints: Vec<String> = intermediates
            .iter()
            .map(|c| crate::pki::sha256_hex(c.as_ref()))
            .collect();
        if fingerprints.is_empty() {
            // The mutual-TLS port serves the collector's certificate alone.
            let host = match server_name {
                rustls_pki_types::ServerName::DnsName(name) => name.as_ref().to_owned(),
                other => other.to_str().into_owned(),
            };
            return Err(rustls::Error::General(format!(
                "the collector presented no CA, so this is not its enrollment listener (its mutual-TLS port serves none): enrollment is served on the listener `[enrollment] listen` names in the collector's config, port 7403 by default: --collector https://{host}:7403"
            )));
        }
        let Some(position) = fingerprints.iter().position(|f| *f == self.wanted) else {
            return Err(rustls::Error::General(format!(
                "no CA the collector presented has fingerprint sha256:{} (it presented {}): check --ca-fingerprint (`fleetmon certs fingerprint` prints the fleet's)",
                self.wanted,
                fingerprints
                    .iter()
                    .map(|f| format!("sha256:{f}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let anchor = intermediates[position].clone().into_owned();
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone())?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(anchor);
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client with no certificate of its own that trusts `ca_pem` (enrollment).
pub fn server_only_endpoint(url: &str, ca_pem: &str) -> Result<Endpoint, TlsError> {
    install_crypto_provider();
    let connect_error = |source| TlsError::Connect {
        endpoint: url.to_owned(),
        source,
    };
    Endpoint::from_shared(url.to_owned())
        .map_err(connect_error)?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .map_err(connect_error)
        .map(|e| e.connect_timeout(Duration::from_secs(10)))
}
