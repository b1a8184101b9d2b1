//! Mutual TLS and identity on a real tonic server on 127.0.0.1 with real certificates:
//! who gets through the handshake, and which role may call what.

use std::net::SocketAddr;

use fleetmon::access::{Authorize, Caller, Rules};
use fleetmon::identity::{IdentityError, OperatorRole, PeerIdentity, Role};
use fleetmon::pki::LeafSpec;
use fleetmon::testkit::{TestPki, tls_alert};
use fleetmon::tls::{self, ClientTlsFiles};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const AGENTS_ONLY: Rules = &[("/grpc.health.v1.Health/", Caller::Agent)];
const OPERATORS_ONLY: Rules = &[(
    "/grpc.health.v1.Health/",
    Caller::Operator(OperatorRole::Viewer),
)];

/// A health service behind mutual TLS that only `role` may call.
async fn start_server(pki: &TestPki, role: Role) -> SocketAddr {
    let rules = match role {
        Role::Agent => AGENTS_ONLY,
        Role::Operator => OPERATORS_ONLY,
    };
    let config = tls::reloading_server_config(&pki.server("collector")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = fleetmon::grpc::health_service().await;
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(Authorize(rules))
            .add_service(health)
            .serve_with_incoming(tls::tls_incoming(listener, config))
            .await
            .unwrap();
    });
    addr
}

async fn health_check(addr: SocketAddr, files: &ClientTlsFiles) -> Result<i32, tonic::Status> {
    let channel = tls::endpoint(&format!("https://{addr}"), files)
        .unwrap()
        .connect_lazy();
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
}

fn identity_of(files: &ClientTlsFiles) -> Result<PeerIdentity, IdentityError> {
    PeerIdentity::from_der(&CertificateDer::from_pem_file(&files.cert).unwrap())
}

#[tokio::test]
async fn operator_certificate_reaches_an_operator_service() {
    let pki = TestPki::new();
    let addr = start_server(&pki, Role::Operator).await;
    let operator = pki.client(Role::Operator, "alice");
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(health_check(addr, &operator).await.unwrap(), serving);
}

#[tokio::test]
async fn wrong_role_is_permission_denied() {
    let pki = TestPki::new();
    let operator_only = start_server(&pki, Role::Operator).await;
    let status = health_check(operator_only, &pki.client(Role::Agent, "a1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "spiffe://fleetmon/agent/a1 may not call this service (it is for operator certificates only)"
    );

    let agent_only = start_server(&pki, Role::Agent).await;
    let status = health_check(agent_only, &pki.client(Role::Operator, "alice"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "spiffe://fleetmon/operator/admin/alice may not call this service (it is for agent certificates only)"
    );
}

#[tokio::test]
async fn certificate_without_uri_san_is_unauthenticated() {
    let pki = TestPki::new();
    let addr = start_server(&pki, Role::Agent).await;
    let mut spec = LeafSpec::client(Role::Agent, "x");
    spec.uri_sans.clear();
    let files = pki.client_from("no-uri", &spec);
    assert_eq!(identity_of(&files), Err(IdentityError::NoUriSan));
    let status = health_check(addr, &files).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "client certificate has no URI SAN (expected spiffe://fleetmon/<agent|operator>/<name>)"
    );
}

#[tokio::test]
async fn certificate_with_a_foreign_uri_scheme_is_unauthenticated() {
    let pki = TestPki::new();
    let addr = start_server(&pki, Role::Agent).await;
    let mut spec = LeafSpec::client(Role::Agent, "x");
    spec.uri_sans = vec!["https://fleetmon/agent/x".to_owned()];
    let files = pki.client_from("https-uri", &spec);
    assert_eq!(
        identity_of(&files),
        Err(IdentityError::ForeignUri(
            "https://fleetmon/agent/x".to_owned()
        ))
    );
    let status = health_check(addr, &files).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "client certificate URI SAN `https://fleetmon/agent/x` is not a fleetmon identity \
         (expected spiffe://fleetmon/<agent|operator>/<name>)"
    );
}

#[tokio::test]
async fn identities_are_read_from_generated_certificates() {
    let pki = TestPki::new();
    let agent = identity_of(&pki.client(Role::Agent, "web-7")).unwrap();
    assert_eq!((agent.role, agent.name.as_str()), (Role::Agent, "web-7"));
    let operator = identity_of(&pki.client(Role::Operator, "ops")).unwrap();
    assert_eq!(
        (operator.role, operator.name.as_str()),
        (Role::Operator, "ops")
    );
    let mut spec = LeafSpec::client(Role::Agent, "x");
    spec.uri_sans = vec!["spiffe://fleetmon/admin/x".to_owned()];
    assert_eq!(
        identity_of(&pki.client_from("bad-role", &spec)),
        Err(IdentityError::UnknownRole(
            "spiffe://fleetmon/admin/x".to_owned()
        ))
    );
}

#[tokio::test]
async fn handshake_refuses_missing_and_foreign_certificates() {
    let pki = TestPki::new();
    let addr = start_server(&pki, Role::Agent).await;
    assert_eq!(
        tls_alert(addr, &pki, None).await,
        "received fatal alert: CertificateRequired"
    );
    let foreign = pki.foreign_client(Role::Agent, "a1");
    assert_eq!(
        tls_alert(addr, &pki, Some(&foreign)).await,
        "received fatal alert: UnknownCA"
    );
    // Through tonic the same peers never reach the service.
    let status = health_check(addr, &foreign).await.unwrap_err();
    assert!(
        format!("{status:?}").contains("received fatal alert: UnknownCA"),
        "{status:?}"
    );
    // The server keeps serving everyone else.
    health_check(addr, &pki.client(Role::Agent, "a2"))
        .await
        .unwrap();
}
