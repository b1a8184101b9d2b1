//! TLS probes: what a fleetmon server says to a given client certificate.

use std::net::SocketAddr;

use super::TestPki;
use crate::tls::ClientTlsFiles;

/// Connects to a fleetmon TLS server at `addr` with `client` (or no certificate),
/// trusting `pki`'s CA, and returns the error that ends the connection: for a refused
/// client that is the server's TLS alert, e.g. `received fatal alert: UnknownCA`.
/// Panics if the server accepts the client.
pub async fn tls_alert(addr: SocketAddr, pki: &TestPki, client: Option<&ClientTlsFiles>) -> String {
    handshake_refusal(addr, pki, client)
        .await
        .expect("the server refuses the client")
}

/// Like [`tls_alert`], but `None` when the server accepts the client.
pub async fn handshake_refusal(
    addr: SocketAddr,
    pki: &TestPki,
    client: Option<&ClientTlsFiles>,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tls_connector(pki, client, b"h2");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    // TLS 1.3: the client finishes first; the server's verdict arrives as an alert.
    let error = match connector.connect(name, tcp).await {
        Err(e) => e,
        Ok(mut stream) => {
            let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 64];
            match stream.read(&mut buf).await {
                Err(e) => e,
                Ok(_) => return None,
            }
        }
    };
    Some(error.to_string())
}

/// A TLS client trusting `pki`'s CA, with `client`'s certificate (or none), offering
/// the one application protocol `alpn` (`h2`, `http/1.1`).
pub fn tls_connector(
    pki: &TestPki,
    client: Option<&ClientTlsFiles>,
    alpn: &[u8],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in crate::tls::read_certs("CA", &pki.dir().join("ca.pem")).expect("read CA") {
        roots.add(ca).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(files) => builder
            .with_client_auth_cert(
                crate::tls::read_certs("client certificate", &files.cert).expect("read cert"),
                crate::tls::read_key("client key", &files.key).expect("read key"),
            )
            .expect("client auth config"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// The certificate the TLS server at `addr` presents now (DER), seen by a client with
/// `client`'s certificate that trusts `pki`'s CA.
pub async fn server_certificate(
    addr: SocketAddr,
    pki: &TestPki,
    client: &ClientTlsFiles,
) -> rustls_pki_types::CertificateDer<'static> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    let stream = tls_connector(pki, Some(client), b"h2")
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (_, session) = stream.get_ref();
    session.peer_certificates().expect("server certificate")[0].clone()
}
